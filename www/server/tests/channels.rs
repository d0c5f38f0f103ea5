//! Channels (PROTOCOL.md §8) over WebSockets: subscribe and publish fan-out with offsets,
//! recovery from history, gaps, unsubscribe, refusals, the room channel and the backend's
//! `?channel=` answer.

mod common;

use common::{Server, WsClient};
use realtime_client::core::wire::{close_code, Carrier, ChannelMessage, Frame, Message, Payload, Position};
use realtime_server::Config;

/// The next frame that is not an ack, ping or pong.
async fn ordered(client: &mut WsClient) -> Frame {
    loop {
        match client.frame().await {
            Frame::Ack { .. } | Frame::Ping { .. } | Frame::Pong { .. } => continue,
            other => return other,
        }
    }
}

async fn v2(server: &Server, query: &str) -> WsClient {
    let mut client = WsClient::connect_v2(&server.ws_url(query)).await;
    client.hello().await;
    client
}

fn subscribe(seq: u64, channel: &str, since: Option<Position>) -> Frame {
    Frame::Subscribe { seq, channel: channel.into(), since }
}

fn publish(seq: u64, channel: &str, text: &str) -> Frame {
    Frame::ChannelMessage(ChannelMessage {
        channel: channel.into(),
        position: None,
        message: Message { seq, event: None, payload: Payload::Text(text.into()) },
    })
}

/// Subscribes and returns the `subscribed` position.
async fn subscribed(client: &mut WsClient, seq: u64, channel: &str, since: Option<Position>) -> (Position, bool) {
    client.send_frames(&[subscribe(seq, channel, since)], Carrier::Text).await;
    match ordered(client).await {
        Frame::Subscribed { channel: name, position, recovered, reply_to, .. } => {
            assert_eq!(name, channel);
            assert_eq!(reply_to, Some(seq), "the answer names its request");
            (position, recovered)
        }
        other => panic!("expected subscribed, got {other:?}"),
    }
}

async fn channel_message(client: &mut WsClient) -> (String, Position, Payload) {
    match ordered(client).await {
        Frame::ChannelMessage(ChannelMessage { channel, position: Some(position), message }) => (channel, position, message.payload),
        other => panic!("expected a channel message, got {other:?}"),
    }
}

async fn backend_publish(server: &Server, channel: &str, text: &str) -> serde_json::Value {
    let response = server.publish(&format!("channel={channel}"), "text/plain", text.to_owned()).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["content-type"], "application/json");
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

fn text(value: &str) -> Payload {
    Payload::Text(value.into())
}

#[tokio::test]
async fn a_room_session_starts_subscribed_to_its_room_channel() {
    let server = Server::default().await;
    let mut client = WsClient::connect_v2(&server.ws_url("room=hall&rt_conn=1")).await;
    client.hello().await;
    let Frame::Subscribed { seq: 1, channel, position, recovered: false, reply_to: None } = client.frame().await else {
        panic!("the first ordered frame is the room's subscribed");
    };
    assert_eq!((channel.as_str(), position.offset), ("hall", 0));
    assert_eq!(server.publish("room=hall", "text/plain", "hi").await.text().await.unwrap(), "1");
    let (name, at, payload) = channel_message(&mut client).await;
    assert_eq!((name.as_str(), at, payload), ("hall", Position { epoch: position.epoch, offset: 1 }, text("hi")));
    // A msg without ch publishes to the room; the publisher is a member, so it gets it back.
    client.send_frames(&[common::text_msg(1, "mine")], Carrier::Text).await;
    let (_, at, payload) = channel_message(&mut client).await;
    assert_eq!((at.offset, payload), (2, text("mine")));
}

#[tokio::test]
async fn a_msg_without_ch_in_a_session_without_room_is_a_protocol_error() {
    let server = Server::default().await;
    let mut client = v2(&server, "rt_conn=1").await;
    client.send_frames(&[common::text_msg(1, "where")], Carrier::Text).await;
    let Frame::Close(close) = ordered(&mut client).await else { panic!("expected close") };
    assert_eq!(close.code, close_code::PROTOCOL_ERROR);
}

#[tokio::test]
async fn subscribers_get_every_publish_once_with_offsets_increasing_by_one() {
    let server = Server::default().await;
    let mut alice = v2(&server, "rt_conn=1").await;
    let mut bob = v2(&server, "rt_conn=1").await;
    let (start, recovered) = subscribed(&mut alice, 1, "news", None).await;
    assert!(!recovered);
    assert_eq!(start.offset, 0);
    let (same, _) = subscribed(&mut bob, 1, "news", None).await;
    assert_eq!(same, start);
    let answer = backend_publish(&server, "news", "one").await;
    assert_eq!(answer["channel"], "news");
    assert_eq!(answer["offset"], 1);
    assert_eq!(answer["sessions"], 2);
    let mut epoch = Vec::new();
    realtime_client::core::wire::push_epoch(&mut epoch, start.epoch);
    assert_eq!(answer["epoch"], String::from_utf8(epoch).unwrap());
    alice.send_frames(&[publish(2, "news", "two")], Carrier::Text).await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(channel_message(client).await, ("news".into(), Position { epoch: start.epoch, offset: 1 }, text("one")));
        assert_eq!(channel_message(client).await, ("news".into(), Position { epoch: start.epoch, offset: 2 }, text("two")));
    }
}

#[tokio::test]
async fn a_client_publish_to_a_missing_channel_reaches_nobody_and_creates_nothing() {
    let server = Server::default().await;
    let mut client = v2(&server, "rt_conn=1").await;
    client.send_frames(&[publish(1, "nowhere", "x")], Carrier::Text).await;
    assert!(client.sync(7).await.iter().all(|frame| matches!(frame, Frame::Ack { seq: 1 })));
    assert!(server.state.registry.channels().position("nowhere").is_none());
}

#[tokio::test]
async fn a_fresh_session_recovers_from_history_or_is_told_the_gap() {
    let server = Server::default().await;
    for text in ["one", "two", "three"] {
        backend_publish(&server, "feed", text).await;
    }
    let top = server.state.registry.channels().position("feed").unwrap();
    let top = Position { epoch: top.epoch, offset: top.offset };
    assert_eq!(top.offset, 3);
    // Replay: the history holds everything after offset 1.
    let mut client = v2(&server, "rt_conn=1").await;
    let (position, recovered) = subscribed(&mut client, 1, "feed", Some(Position { epoch: top.epoch, offset: 1 })).await;
    assert!(recovered, "rec=1");
    assert_eq!(position, top);
    assert_eq!(channel_message(&mut client).await.2, text("two"));
    assert_eq!(channel_message(&mut client).await.2, text("three"));
    // Another epoch: subscribed rec=0, then one gap from 0 to the top.
    let mut other = v2(&server, "rt_conn=1").await;
    let (_, recovered) = subscribed(&mut other, 1, "feed", Some(Position { epoch: top.epoch ^ 1, offset: 1 })).await;
    assert!(!recovered);
    let Frame::Gap { channel, epoch, from, to, .. } = ordered(&mut other).await else { panic!("expected gap") };
    assert_eq!((channel.as_str(), epoch, from, to), ("feed", top.epoch, 0, 3));
}

#[tokio::test]
async fn a_gap_when_the_history_no_longer_covers_the_position() {
    let mut config = Config::default();
    config.channels.history.max_messages = 2;
    let server = Server::start(config).await;
    for text in ["one", "two", "three", "four"] {
        backend_publish(&server, "feed", text).await;
    }
    let top = server.state.registry.channels().position("feed").unwrap();
    let mut client = v2(&server, "rt_conn=1").await;
    let (position, recovered) = subscribed(&mut client, 1, "feed", Some(Position { epoch: top.epoch, offset: 1 })).await;
    assert!(!recovered);
    assert_eq!(position.offset, 4);
    let Frame::Gap { from, to, .. } = ordered(&mut client).await else { panic!("expected gap") };
    assert_eq!((from, to), (2, 4), "never a partial replay");
}

#[tokio::test]
async fn unsubscribe_is_answered_and_stops_delivery() {
    let server = Server::default().await;
    let mut client = v2(&server, "rt_conn=1").await;
    subscribed(&mut client, 1, "news", None).await;
    client.send_frames(&[Frame::Unsubscribe { seq: 2, channel: "news".into() }], Carrier::Text).await;
    let Frame::Unsubscribed { channel, reply_to, close, .. } = ordered(&mut client).await else { panic!("expected unsubscribed") };
    assert_eq!((channel.as_str(), reply_to, close.code), ("news", Some(2), 1000));
    assert_eq!(backend_publish(&server, "news", "late").await["sessions"], 0);
    assert!(client.sync(3).await.iter().all(|frame| matches!(frame, Frame::Ack { .. })), "nothing of news arrives");
}

#[tokio::test]
async fn refusals_carry_their_codes_and_a_repeated_subscribe_is_a_protocol_error() {
    let config = Config { client_publish: vec![String::from("open:*")], ..Config::default() };
    let server = Server::start(config).await;
    let mut client = v2(&server, "rt_conn=1").await;
    // (A bad channel name does not get past the wire codec: a malformed frame, close 4000.)
    client.send_frames(&[subscribe(1, "free", None)], Carrier::Text).await;
    assert!(matches!(ordered(&mut client).await, Frame::Subscribed { reply_to: Some(1), .. }));
    // A publish the policy refuses: its nack comes before the ack that covers it.
    client.send_frames(&[publish(2, "closed:x", "no")], Carrier::Text).await;
    let frames = client.sync(9).await;
    let nack = frames.iter().position(|frame| matches!(frame, Frame::Nack { reply_to: 2, close, .. } if close.code == 4013));
    let ack = frames.iter().position(|frame| matches!(frame, Frame::Ack { seq: 2 }));
    assert!(nack.is_some() && ack.is_some() && nack < ack, "nack then ack: {frames:?}");
    subscribed(&mut client, 3, "open:a", None).await;
    client.send_frames(&[subscribe(4, "open:a", None)], Carrier::Text).await;
    let Frame::Close(close) = ordered(&mut client).await else { panic!("expected close") };
    assert_eq!(close.code, close_code::PROTOCOL_ERROR);
}

#[tokio::test]
async fn too_many_channels_for_one_session_is_refused_with_4011() {
    let mut config = Config::default();
    config.channels.max_channels_per_session = 2;
    let server = Server::start(config).await;
    let mut client = v2(&server, "rt_conn=1").await;
    subscribed(&mut client, 1, "a", None).await;
    subscribed(&mut client, 2, "b", None).await;
    client.send_frames(&[subscribe(3, "c", None)], Carrier::Text).await;
    let Frame::Unsubscribed { reply_to, close, .. } = ordered(&mut client).await else { panic!("expected unsubscribed") };
    assert_eq!((reply_to, close.code), (Some(3), 4011));
}

#[tokio::test]
async fn rt_since_recovers_the_room_channel_of_a_fresh_session() {
    let server = Server::default().await;
    for text in ["one", "two", "three"] {
        assert_eq!(server.publish("channel=hall", "text/plain", text).await.status(), 202);
    }
    let top = server.state.registry.channels().position("hall").unwrap();
    let mut epoch = Vec::new();
    realtime_client::core::wire::push_epoch(&mut epoch, top.epoch);
    let since = format!("{}.1", String::from_utf8(epoch).unwrap());
    let mut client = WsClient::connect_v2(&server.ws_url(&format!("room=hall&rt_conn=1&rt_since={since}"))).await;
    client.hello().await;
    let Frame::Subscribed { seq: 1, channel, position, recovered: true, reply_to: None } = client.frame().await else {
        panic!("the room channel recovered: rec=1");
    };
    assert_eq!((channel.as_str(), position.offset), ("hall", 3));
    assert_eq!(channel_message(&mut client).await.2, text("two"));
    assert_eq!(channel_message(&mut client).await.2, text("three"));
    // A malformed rt_since is a bad parameter.
    let response = reqwest::get(server.url("/realtime/poll?room=hall&rt_v=2&rt_conn=1&rt_since=nothex.1")).await.unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn a_hellos_ack_never_covers_a_publish_whose_nack_the_client_has_not_acknowledged() {
    let config = Config { client_publish: vec![String::from("open:*")], ..Config::default() };
    let server = Server::start(config).await;
    let mut client = WsClient::connect_v2(&server.ws_url("rt_conn=1")).await;
    let hello = client.hello().await;
    // Publish 2 is refused (its nack is server seq 1); 1 and 3 are accepted (they reach nobody).
    client.send_frames(&[publish(1, "open:a", "yes"), publish(2, "closed:x", "no"), publish(3, "open:b", "yes")], Carrier::Text).await;
    let frames = client.sync(1).await;
    assert!(frames.iter().any(|frame| matches!(frame, Frame::Nack { seq: 1, reply_to: 2, .. })), "{frames:?}");
    assert!(frames.iter().any(|frame| matches!(frame, Frame::Ack { seq: 3 })), "the live ack covers all three: {frames:?}");
    // The connection is lost before the client acknowledged the nack: the resume's hello says
    // ack=1, not 3, and the nack is replayed after it.
    drop(client);
    let resume = |conn: u32, last: u64| format!("rt_conn={conn}&rt_sid={}&rt_key={}&rt_last={last}", hello.session_id, hello.secret);
    let mut again = WsClient::connect_v2(&server.ws_url(&resume(2, 0))).await;
    let resumed = again.hello().await;
    assert!(resumed.resumed);
    assert_eq!(resumed.ack, 1, "below the refused publish 2");
    assert!(matches!(again.frame().await, Frame::Nack { seq: 1, reply_to: 2, .. }), "the nack is replayed");
    // The client resends 2 and 3: duplicates, acknowledged, not refused or published again.
    again.send_frames(&[publish(2, "closed:x", "no"), publish(3, "open:b", "yes")], Carrier::Text).await;
    let frames = again.sync(2).await;
    assert_eq!(frames, vec![Frame::Ack { seq: 3 }], "no second nack");
    // Once the nack is acknowledged (rt_last=1), a hello covers everything received.
    drop(again);
    let mut third = WsClient::connect_v2(&server.ws_url(&resume(3, 1))).await;
    assert_eq!(third.hello().await.ack, 3);
}

#[tokio::test]
async fn a_recovery_larger_than_the_sessions_replay_bounds_is_a_gap_and_the_session_lives() {
    // Bytes: three messages of 1,000 bytes (+ 64 each, + 64 for the subscribed) pass 3,000;
    // count: four entries pass 3 in the other server.
    for (config, label) in [
        (Config { replay_max_bytes: 3_000, ..Config::default() }, "bytes"),
        (Config { replay_max_messages: 3, ..Config::default() }, "count"),
    ] {
        let server = Server::start(config).await;
        for _ in 0..3 {
            backend_publish(&server, "feed", &"x".repeat(1_000)).await;
        }
        let top = server.state.registry.channels().position("feed").unwrap();
        let mut client = v2(&server, "rt_conn=1").await;
        let (position, recovered) = subscribed(&mut client, 1, "feed", Some(Position { epoch: top.epoch, offset: 0 })).await;
        assert!(!recovered, "{label}: rec=0");
        assert_eq!(position.offset, 3);
        let Frame::Gap { from, to, .. } = ordered(&mut client).await else { panic!("{label}: expected gap") };
        assert_eq!((from, to), (1, 3), "{label}: case 2, never a partial replay");
        // The fresh session lives: the next publish reaches it.
        assert_eq!(backend_publish(&server, "feed", "live").await["sessions"], 1, "{label}");
        assert_eq!(channel_message(&mut client).await, ("feed".into(), Position { epoch: top.epoch, offset: 4 }, text("live")));
        // A recovery that fits is replayed (the one message after offset 3).
        let mut small = v2(&server, "rt_conn=1").await;
        let (_, recovered) = subscribed(&mut small, 1, "feed", Some(Position { epoch: top.epoch, offset: 3 })).await;
        assert!(recovered, "{label}: a replay that fits is a replay");
        assert_eq!(channel_message(&mut small).await.2, text("live"));
    }
}

#[tokio::test]
async fn a_quiet_channel_freed_and_subscribed_again_at_its_top_recovers_in_the_same_epoch() {
    let mut config = Config::default();
    config.channels.history.max_age = std::time::Duration::from_millis(100);
    let server = Server::start(config).await;
    let mut first = v2(&server, "rt_conn=1").await;
    let (start, _) = subscribed(&mut first, 1, "quiet", None).await;
    for text in ["one", "two"] {
        backend_publish(&server, "quiet", text).await;
    }
    assert_eq!(channel_message(&mut first).await.1.offset, 1);
    let (_, last, _) = channel_message(&mut first).await;
    first.send_frames(&[Frame::Unsubscribe { seq: 2, channel: "quiet".into() }], Carrier::Text).await;
    assert!(matches!(ordered(&mut first).await, Frame::Unsubscribed { .. }));
    // No subscriber, and the history ages out: the sweeper frees the channel.
    common::eventually("quiet freed", || server.state.registry.channels().position("quiet").is_none()).await;
    assert_eq!(server.state.registry.channels().tombstones(), 1);
    // A page that stored its position subscribes again (decision 5): rec=1, no replay, no gap.
    let mut later = v2(&server, "rt_conn=1").await;
    let (position, recovered) = subscribed(&mut later, 1, "quiet", Some(last)).await;
    assert!(recovered, "revived from the tombstone");
    assert_eq!(position, Position { epoch: start.epoch, offset: 2 });
    assert_eq!(backend_publish(&server, "quiet", "three").await["offset"], 3);
    assert_eq!(channel_message(&mut later).await, ("quiet".into(), Position { epoch: start.epoch, offset: 3 }, text("three")));
}

#[tokio::test]
async fn a_bad_channel_name_is_a_malformed_frame_not_a_4010_refusal() {
    let server = Server::default().await;
    // WebSocket: close 4000 with the codec's reason; nothing was subscribed or published.
    for raw in ["subscribe s=1 ch=price$\n", "msg s=1 ch=a$b k=t n=1\nx", "unsubscribe s=1 ch=\n"] {
        let mut client = v2(&server, "rt_conn=1").await;
        client.send_raw_text(raw).await;
        let Frame::Close(close) = ordered(&mut client).await else { panic!("expected close for {raw:?}") };
        assert_eq!((close.code, close.reason.as_str()), (close_code::PROTOCOL_ERROR, "bad channel name"), "{raw:?}");
    }
    assert!(server.state.registry.channels().is_empty());
    // POST /send: 400 with the same reason.
    let frames = common::poll_v2(&server, "rt_v=2&rt_conn=1").await;
    let Some(Frame::Hello(hello)) = frames.first() else { panic!("expected hello") };
    let url = server.url(&format!("/realtime/send?rt_v=2&rt_conn=1&rt_sid={}&rt_key={}", hello.session_id, hello.secret));
    let response = reqwest::Client::new().post(url).header("content-type", "text/plain").body("subscribe s=1 ch=price$\n").send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("bad channel name"));
}

#[tokio::test]
async fn a_client_re_establishing_all_its_subscriptions_is_never_rate_refused_and_then_4012_applies() {
    let server = Server::default().await;
    let mut client = v2(&server, "rt_conn=1").await;
    // The per-session limit in one burst (PROTOCOL §8.11 item 7).
    let all: Vec<Frame> = (1..=128).map(|n| subscribe(n, &format!("c{n}"), None)).collect();
    client.send_frames(&all, Carrier::Text).await;
    let mut answers = Vec::new();
    while answers.len() < 128 {
        match ordered(&mut client).await {
            Frame::Subscribed { reply_to, .. } => answers.push(reply_to),
            other => panic!("a subscribe of the burst was refused: {other:?}"),
        }
    }
    assert_eq!(answers, (1..=128).map(Some).collect::<Vec<_>>());
    // The bucket is (nearly) empty now: 40 unsubscribes and 40 new subscribes at once pass the
    // rate (it refills 20 a second): some are refused with 4012 and retry advice.
    let churn: Vec<Frame> = (1..=40).map(|n| Frame::Unsubscribe { seq: 128 + n, channel: format!("c{n}") }).collect();
    client.send_frames(&churn, Carrier::Text).await;
    let again: Vec<Frame> = (1..=40).map(|n| subscribe(168 + n, &format!("again{n}"), None)).collect();
    client.send_frames(&again, Carrier::Text).await;
    let (mut accepted, mut refused) = (0, Vec::new());
    while accepted + refused.len() < 40 {
        match ordered(&mut client).await {
            Frame::Subscribed { .. } => accepted += 1,
            Frame::Unsubscribed { close, .. } if close.code == 1000 => {}
            Frame::Unsubscribed { close, .. } => refused.push((close.code, close.retry)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(!refused.is_empty() && accepted < 40, "{accepted} accepted");
    assert!(refused.iter().all(|refusal| *refusal == (4012, realtime_client::core::wire::Retry::AfterMs(1_000))), "{refused:?}");
}
