//! The backend's batch publish to channels (PROTOCOL.md §8.9): `msg` frames that each name their
//! channel with `ch` (else the `channel` parameter's), published in order and all or nothing,
//! answered with the offsets each channel got; and the hostile batches refused whole.

mod common;

use common::{Server, WsClient};
use realtime_client::core::wire::{self, Carrier, ChannelMessage, Frame, Message, Payload, Position};
use realtime_server::Config;

async fn v2(server: &Server) -> WsClient {
    let mut client = WsClient::connect_v2(&server.ws_url("rt_conn=1")).await;
    client.hello().await;
    client
}

/// The next frame that is not an ack, ping or pong.
async fn ordered(client: &mut WsClient) -> Frame {
    loop {
        match client.frame().await {
            Frame::Ack { .. } | Frame::Ping { .. } | Frame::Pong { .. } => continue,
            other => return other,
        }
    }
}

async fn subscribe(client: &mut WsClient, seq: u64, channel: &str) -> Position {
    client.send_frames(&[Frame::Subscribe { seq, channel: channel.into(), since: None }], Carrier::Text).await;
    match ordered(client).await {
        Frame::Subscribed { position, .. } => position,
        other => panic!("expected subscribed, got {other:?}"),
    }
}

async fn channel_message(client: &mut WsClient) -> (String, u64, String) {
    match ordered(client).await {
        Frame::ChannelMessage(ChannelMessage { channel, position: Some(position), message: Message { payload: Payload::Text(text), .. } }) => {
            (channel, position.offset, text)
        }
        other => panic!("expected a text channel message, got {other:?}"),
    }
}

/// A `msg` frame naming `channel` (or none), as a backend writes it.
fn frame(channel: Option<&str>, text: &str) -> Frame {
    let message = Message { seq: 0, event: None, payload: Payload::Text(text.into()) };
    match channel {
        Some(channel) => Frame::ChannelMessage(ChannelMessage { channel: channel.into(), position: None, message }),
        None => Frame::Message(message),
    }
}

fn body(frames: &[Frame]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for frame in frames {
        wire::encode(frame, Carrier::Binary, &mut bytes);
    }
    bytes
}

async fn batch(server: &Server, query: &str, bytes: Vec<u8>) -> (u16, String) {
    let response = server.publish(query, "application/x-realtime-frames", bytes).await;
    (response.status().as_u16(), response.text().await.unwrap())
}

fn epoch(position: Position) -> String {
    let mut out = Vec::new();
    wire::push_epoch(&mut out, position.epoch);
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn each_frame_goes_to_its_channel_in_order_and_the_answer_names_every_channels_offsets() {
    let server = Server::default().await;
    let mut alice = v2(&server).await;
    let mut bob = v2(&server).await;
    let a = subscribe(&mut alice, 1, "a").await;
    let b = subscribe(&mut alice, 2, "b").await;
    subscribe(&mut bob, 1, "b").await;
    // One message before the batch: a's offsets in the batch start at 2.
    assert_eq!(server.publish("channel=a", "text/plain", "before").await.status(), 202);
    assert_eq!(channel_message(&mut alice).await, ("a".into(), 1, "before".into()));

    let frames = [frame(Some("a"), "m1"), frame(Some("b"), "m2"), frame(Some("a"), "m3"), frame(None, "m4"), frame(Some("b"), "m5")];
    let (status, text) = batch(&server, "channel=c", body(&frames)).await;
    assert_eq!(status, 202, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let c = server.state.registry.channels().position("c").expect("the batch created c");
    let expected = serde_json::json!({
        "channels": [
            {"channel": "a", "epoch": epoch(a), "first": 2, "last": 3},
            {"channel": "b", "epoch": epoch(b), "first": 1, "last": 2},
            {"channel": "c", "epoch": epoch(Position { epoch: c.epoch, offset: 0 }), "first": 1, "last": 1},
        ],
        // a: 2 messages × alice; b: 2 messages × alice and bob; c: nobody.
        "deliveries": 6,
    });
    assert_eq!(answer, expected);
    assert_eq!(c.offset, 1, "c keeps its message in its history");
    // Alice holds a and b: she gets their messages interleaved in the batch's order.
    for expected in [("a", 2, "m1"), ("b", 1, "m2"), ("a", 3, "m3"), ("b", 2, "m5")] {
        assert_eq!(channel_message(&mut alice).await, (expected.0.into(), expected.1, expected.2.into()));
    }
    for expected in [("b", 1, "m2"), ("b", 2, "m5")] {
        assert_eq!(channel_message(&mut bob).await, (expected.0.into(), expected.1, expected.2.into()));
    }
}

#[tokio::test]
async fn a_batch_with_one_bad_part_is_refused_whole_and_delivers_nothing() {
    let server = Server::start(Config { max_message_bytes: 1_000, ..Config::default() }).await;
    let mut alice = v2(&server).await;
    subscribe(&mut alice, 1, "a").await;
    let good = frame(Some("a"), "good");
    let with = |tail: &[u8]| [body(std::slice::from_ref(&good)), tail.to_vec()].concat();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("", with(b"msg s=1 ch=a$b k=t n=1\nx"), 400, "bad channel name"),
        ("", with(&[b"msg s=1 ch=".as_slice(), &[b'x'; 129], b" k=t n=1\nx"].concat()), 400, "bad channel name"),
        ("", body(&[good.clone(), frame(None, "where")]), 400, "needs the channel parameter"),
        ("room=a", body(std::slice::from_ref(&good)), 400, "channel form"),
        ("", with(b"msg s=1 ch=a o=5 ep=0000000000000001 k=t n=1\nx"), 400, "assigned by the server"),
        ("", with(b"ping t=1\n"), 400, "only msg frames"),
        ("", with(b"msg s=1 ch=a k=t n=9\nshort"), 400, "bad batch"),
        ("channel=a", with(&[b"msg s=1 k=t n=1001\n".as_slice(), &[b'x'; 1001]].concat()), 413, "larger than the server's max"),
    ];
    for (query, bytes, status, needle) in cases {
        let (got, text) = batch(&server, query, bytes).await;
        assert_eq!(got, status, "{query:?} answered {text:?}");
        assert!(text.contains(needle), "{text:?} should say {needle:?}");
    }
    // Nothing of any refused batch reached alice or the history.
    assert!(alice.sync(1).await.iter().all(|frame| matches!(frame, Frame::Ack { .. })));
    assert_eq!(server.state.registry.channels().position("a").unwrap().offset, 0);
    assert_eq!(server.state.registry.channels().len(), 1, "no channel was created");
}

#[tokio::test]
async fn hostile_batches_naming_thousands_of_channels_or_frames_are_refused_with_413() {
    let server = Server::default().await;
    let many_channels: Vec<Frame> = (0..10_000).map(|n| frame(Some(&format!("ch{n}")), "x")).collect();
    let (status, text) = batch(&server, "", body(&many_channels)).await;
    assert_eq!((status, text.as_str()), (413, "batch too large: at most 1000 channels"));
    // The limit itself passes: 1,000 channels in one batch, every one created.
    let (status, text) = batch(&server, "", body(&many_channels[..1_000])).await;
    assert_eq!(status, 202, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["channels"].as_array().unwrap().len(), 1_000);
    assert_eq!(answer["channels"][999], serde_json::json!({"channel": "ch999", "epoch": answer["channels"][999]["epoch"], "first": 1, "last": 1}));
    let created = server.state.registry.channels().len();
    assert_eq!(created, 1_000);
    let too_many_frames: Vec<Frame> = (0..10_001).map(|_| frame(None, "x")).collect();
    let (status, _) = batch(&server, "channel=one", body(&too_many_frames)).await;
    assert_eq!(status, 413);
    assert_eq!(server.state.registry.channels().len(), created, "nothing created by a refused batch");
}

#[tokio::test]
async fn a_batch_that_would_pass_the_channel_limit_creates_and_delivers_nothing() {
    let mut config = Config::default();
    config.channels.max_channels = 3;
    let server = Server::start(config).await;
    let mut alice = v2(&server).await;
    subscribe(&mut alice, 1, "a").await;
    // a exists; b, c and d would make four.
    let frames = [frame(Some("a"), "1"), frame(Some("b"), "2"), frame(Some("c"), "3"), frame(Some("d"), "4")];
    let response = server.publish("", "application/x-realtime-frames", body(&frames)).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.text().await.unwrap(), "too many channels");
    assert!(alice.sync(1).await.iter().all(|frame| matches!(frame, Frame::Ack { .. })), "a got nothing");
    assert_eq!(server.state.registry.channels().len(), 1);
    // Within the limit the same kind of batch passes.
    let (status, _) = batch(&server, "", body(&frames[..3])).await;
    assert_eq!(status, 202);
    assert_eq!(channel_message(&mut alice).await, ("a".into(), 1, "1".into()));
    // A single publish that would create a fourth channel is refused the same way, not a 202
    // without an offset.
    let response = server.publish("channel=d", "text/plain", "x").await;
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn over_the_replay_budget_a_batch_delivers_nothing() {
    let mut config = Config::default();
    config.limits.replay_budget_bytes = 100;
    config.limits.replay_budget_per_ip_bytes = Some(1 << 20);
    let server = Server::start(config).await;
    let mut alice = v2(&server).await;
    subscribe(&mut alice, 1, "a").await;
    // The first batch fits the check (the budget is passed by one publish at most) and fills it.
    let (status, _) = batch(&server, "", body(&[frame(Some("a"), &"x".repeat(200))])).await;
    assert_eq!(status, 202);
    assert_eq!(channel_message(&mut alice).await.1, 1);
    let (status, text) = batch(&server, "", body(&[frame(Some("a"), "1"), frame(Some("b"), "2")])).await;
    assert_eq!((status, text.as_str()), (503, "replay budget exhausted"));
    assert!(alice.sync(1).await.iter().all(|frame| matches!(frame, Frame::Ack { .. })));
    assert!(server.state.registry.channels().position("b").is_none());
}

#[tokio::test]
async fn concurrent_batches_to_one_channel_each_get_consecutive_offsets() {
    let server = Server::default().await;
    let mut alice = v2(&server).await;
    subscribe(&mut alice, 1, "hot").await;
    let batches = 6u64;
    let size = 50u64;
    let mut tasks = Vec::new();
    for task in 0..batches {
        let url = server.url("/realtime/publish");
        let frames: Vec<Frame> = (0..size).map(|n| frame(Some("hot"), &format!("{task}.{n}"))).collect();
        let bytes = body(&frames);
        tasks.push(tokio::spawn(async move {
            let response = reqwest::Client::new().post(url).header("content-type", "application/x-realtime-frames").body(bytes).send().await.unwrap();
            assert_eq!(response.status(), 202);
            let answer: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
            (task, answer["channels"][0]["first"].as_u64().unwrap(), answer["channels"][0]["last"].as_u64().unwrap())
        }));
    }
    // Client publishes to the same channel race the batches.
    for seq in 2..=21u64 {
        let publish = frame(Some("hot"), &format!("client.{seq}"));
        let Frame::ChannelMessage(mut message) = publish else { unreachable!() };
        message.message.seq = seq;
        alice.send_frames(&[Frame::ChannelMessage(message)], Carrier::Text).await;
    }
    let mut ranges = Vec::new();
    for task in tasks {
        let (task, first, last) = task.await.unwrap();
        assert_eq!(last - first + 1, size, "batch {task}: consecutive offsets");
        ranges.push((first, task));
    }
    // Alice sees every offset once, in order, and each batch's messages as one run.
    let total = batches * size + 20;
    let mut seen = Vec::new();
    for expected in 1..=total {
        let (_, offset, text) = channel_message(&mut alice).await;
        assert_eq!(offset, expected);
        seen.push(text);
    }
    for (first, task) in ranges {
        let run: Vec<String> = (0..size).map(|n| format!("{task}.{n}")).collect();
        assert_eq!(&seen[(first - 1) as usize..(first - 1 + size) as usize], run.as_slice(), "batch {task} not interleaved");
    }
}

#[tokio::test]
async fn a_member_that_does_not_read_is_cut_by_a_batch_and_the_answer_counts_only_real_deliveries() {
    let server = Server::start(Config { replay_max_messages: 100, ..Config::default() }).await;
    let mut reader = WsClient::connect_v2(&server.ws_url("room=hot&rt_conn=1")).await;
    reader.hello().await;
    // A polling member that never polls again: everything it is sent stays unsent.
    let frames = common::poll_v2(&server, "room=hot&rt_v=2&rt_conn=1").await;
    let Some(Frame::Hello(stalled)) = frames.first().cloned() else { panic!("expected hello") };
    let preload: Vec<Frame> = (0..60).map(|n| frame(None, &format!("pre{n}"))).collect();
    assert_eq!(batch(&server, "room=hot", body(&preload)).await, (202, "120".into()));
    // The reader reads and acknowledges all of it (s=1 is its room's subscribed).
    for _ in 0..61 {
        ordered(&mut reader).await;
    }
    reader.send_frames(&[Frame::Ack { seq: 61 }], Carrier::Text).await;
    reader.sync(1).await;
    // 60 more: the stalled member passes its 100 unsent at its 41st and is cut; the reader
    // holds at most 60 unsent and gets all of them.
    let frames: Vec<Frame> = (0..60).map(|n| frame(None, &format!("m{n}"))).collect();
    let (status, text) = batch(&server, "channel=hot", body(&frames)).await;
    assert_eq!(status, 202, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["deliveries"], 60 + 40, "the cut member's later messages are not counted: {answer}");
    assert_eq!((answer["channels"][0]["first"].as_u64(), answer["channels"][0]["last"].as_u64()), (Some(61), Some(120)));
    for n in 0..60 {
        assert_eq!(channel_message(&mut reader).await, ("hot".into(), 61 + n, format!("m{n}")));
    }
    assert_eq!(server.state.metrics.trips(realtime_server::metrics::LimitKind::replay_overflow), 1);
    // The cut member's next poll finds its session gone: a fresh one.
    let query = format!("room=hot&rt_v=2&rt_conn=1&rt_sid={}&rt_key={}&rt_last=1", stalled.session_id, stalled.secret);
    let Some(Frame::Hello(hello)) = common::poll_v2(&server, &query).await.first().cloned() else { panic!("expected hello") };
    assert!(!hello.resumed);
}

#[tokio::test]
async fn a_large_batch_holds_up_publishes_to_its_channels_only_not_subscribes_elsewhere() {
    use realtime_server::session::{ConnectRequest, TransportKind};
    let server = Server::default().await;
    // 200 members of `big` held in process (no transport: everything stays queued).
    let request = ConnectRequest { room: Some("big".into()), conn: 1, ..ConnectRequest::default() };
    let sessions: Vec<_> = (0..200).map(|_| server.state.registry.connect(&request, TransportKind::Poll, &server.state.config)).collect();
    assert_eq!(server.state.registry.room_size("big"), 200);
    let size = 5_000u64;
    let frames: Vec<Frame> = (0..size).map(|n| frame(None, &n.to_string())).collect();
    let bytes = body(&frames);
    let url = server.url("/realtime/publish?channel=big");
    let started = std::time::Instant::now();
    let publish = tokio::spawn(async move {
        reqwest::Client::new().post(url).header("content-type", "application/x-realtime-frames").body(bytes).send().await.unwrap().status()
    });
    common::eventually("the batch started", || server.state.registry.channels().position("big").is_some_and(|top| top.offset > 0)).await;
    // A subscribe to another channel is answered while the batch is still going.
    let mut client = v2(&server).await;
    subscribe(&mut client, 1, "elsewhere").await;
    let top = server.state.registry.channels().position("big").unwrap().offset;
    let answered = started.elapsed();
    assert_eq!(publish.await.unwrap(), 202);
    let total = started.elapsed();
    assert!(top < size, "the subscribe waited for the whole batch ({answered:?} of {total:?})");
    assert_eq!(server.state.registry.channels().position("big").unwrap().offset, size, "every message got its offset");
    drop(sessions);
}
