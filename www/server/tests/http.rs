//! SSE, long polling and POST /send over real sockets.

mod common;

use common::{parse_event, poll, text_msg, Server, SseReader, LIMIT};
use realtime_client::core::wire::{self, close_code, Carrier, Close, Frame, Hello, Message, Payload, Retry};
use realtime_server::Config;

fn hello_of(frames: &[Frame]) -> Hello {
    match frames.first() {
        Some(Frame::Hello(hello)) => hello.clone(),
        other => panic!("expected hello first, got {other:?}"),
    }
}

fn batch(frames: &[Frame]) -> String {
    let mut bytes = Vec::new();
    for frame in frames {
        wire::encode(frame, Carrier::Text, &mut bytes);
    }
    String::from_utf8(bytes).unwrap()
}

/// Waits until `count` transports are live (a held poll counts), so a test knows a poll is held.
async fn wait_live(server: &Server, count: usize) {
    let mut live = server.state.live_transports();
    tokio::time::timeout(LIMIT, live.wait_for(|live| *live == count)).await.unwrap().unwrap();
}

async fn send(server: &Server, query: &str, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url(&format!("/realtime/send?{query}")))
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sse_delivers_hello_then_published_messages_as_events() {
    let server = Server::default().await;
    let response = reqwest::get(server.url("/realtime/sse?room=feed&rt_v=2&rt_conn=1")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut reader = SseReader::new(response);

    let (kind, id, data) = parse_event(&reader.next_event().await);
    assert_eq!((kind.as_str(), id), ("hello", None));
    let (frame, used) = wire::decode(data.as_bytes(), 1 << 20).unwrap();
    assert_eq!(used, data.len(), "one frame per event");
    let Frame::Hello(hello) = frame else { panic!("expected hello") };
    assert!(!hello.resumed);
    // The room channel's subscribed is the first ordered frame (PROTOCOL §8.5).
    let (kind, id, data) = parse_event(&reader.next_event().await);
    assert_eq!((kind.as_str(), id.as_deref()), ("subscribed", Some("1")));
    let (Frame::Subscribed { seq: 1, channel, position, recovered: false, reply_to: None }, _) = wire::decode(data.as_bytes(), 1 << 20).unwrap() else {
        panic!("expected subscribed: {data:?}");
    };
    assert_eq!((channel.as_str(), position.offset), ("feed", 0));
    let mut ep = Vec::new();
    wire::push_epoch(&mut ep, position.epoch);
    let ep = String::from_utf8(ep).unwrap();

    let status = server.publish("room=feed&event=note", "text/plain", "line one\nline two\r\nend").await.status();
    assert_eq!(status, 202);
    let raw = reader.next_event().await;
    assert!(raw.starts_with(&format!("event: msg\nid: 2\ndata: msg s=2 ch=feed o=1 ep={ep} k=t e=note b64 n=")), "{raw:?}");
    assert!(!raw.contains('\r'));
    let (kind, id, data) = parse_event(&raw);
    assert_eq!((kind.as_str(), id.as_deref()), ("msg", Some("2")));
    let (frame, _) = wire::decode(data.as_bytes(), 1 << 20).unwrap();
    assert_eq!(
        frame,
        Frame::ChannelMessage(wire::ChannelMessage {
            channel: "feed".into(),
            position: Some(wire::Position { epoch: position.epoch, offset: 1 }),
            message: Message { seq: 2, event: Some("note".into()), payload: Payload::Text("line one\nline two\r\nend".into()) },
        })
    );

    // A multi-line text without CR is split over several data lines.
    server.publish("room=feed", "text/plain", "a\nb").await;
    let raw = reader.next_event().await;
    assert_eq!(raw, format!("event: msg\nid: 3\ndata: msg s=3 ch=feed o=2 ep={ep} k=t n=3\ndata: a\ndata: b"));

    // Upstream via POST /send reaches the SSE stream (the sender is in the room) with an ack.
    let query = format!("room=feed&rt_v=2&rt_conn=1&rt_sid={}&rt_key={}", hello.session_id, hello.secret);
    let response = send(&server, &query, batch(&[text_msg(1, "up")])).await;
    assert_eq!(response.status(), 204);
    let mut saw_ack = false;
    let mut saw_echo = false;
    while !(saw_ack && saw_echo) {
        let (kind, _, data) = parse_event(&reader.next_event().await);
        let (frame, _) = wire::decode(data.as_bytes(), 1 << 20).unwrap();
        match (kind.as_str(), frame) {
            ("ack", Frame::Ack { seq: 1 }) => saw_ack = true,
            ("msg", Frame::ChannelMessage(wire::ChannelMessage { message, .. })) => {
                assert_eq!(message.payload, Payload::Text("up".into()));
                saw_echo = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn poll_attaches_holds_and_carries_upstream() {
    let server = Server::default().await;
    let frames = poll(&server, "room=p&rt_v=2&rt_conn=1").await;
    assert_eq!(frames.len(), 1);
    let hello = hello_of(&frames);
    let session = format!("room=p&rt_v=2&rt_conn=1&rt_sid={}&rt_key={}", hello.session_id, hello.secret);

    // A held poll answers as soon as a message is published.
    let held = {
        let url = server.url(&format!("/realtime/poll?{session}&rt_last=1"));
        tokio::spawn(async move { reqwest::get(url).await.unwrap().bytes().await.unwrap() })
    };
    wait_live(&server, 1).await;
    assert_eq!(server.publish("room=p", "application/json", "{\"n\":1}").await.status(), 202);
    let body = tokio::time::timeout(LIMIT, held).await.unwrap().unwrap();
    let frames = wire::decode_all(&body, 1 << 20).unwrap();
    let frames: Vec<Frame> = frames.into_iter().filter_map(common::v1_view).collect();
    assert_eq!(frames, vec![Frame::Message(Message { seq: 2, event: None, payload: Payload::Json("{\"n\":1}".into()) })]);

    // Upstream: the message is echoed to the sender and acked.
    let response = send(&server, &session, batch(&[text_msg(1, "hello server")])).await;
    assert_eq!(response.status(), 204);
    let mut got = Vec::new();
    let mut last = 2;
    while !(got.iter().any(|frame| matches!(frame, Frame::Ack { seq: 1 })) && got.iter().any(|frame| matches!(frame, Frame::Message(_))))
    {
        let frames = poll(&server, &format!("{session}&rt_last={last}")).await;
        for frame in &frames {
            if let Frame::Message(message) = frame {
                last = message.seq;
            }
        }
        got.extend(frames);
    }
    assert!(got.contains(&Frame::Message(Message { seq: 3, event: None, payload: Payload::Text("hello server".into()) })));

    // rt_last is a cumulative ack: a lost response is re-sent by the next poll with the old rt_last.
    server.publish("room=p", "text/plain", "again").await;
    let first_try = poll(&server, &format!("{session}&rt_last=3")).await;
    let retry = poll(&server, &format!("{session}&rt_last=3")).await;
    assert_eq!(first_try, retry);
    assert!(matches!(&first_try[..], [Frame::Message(Message { seq: 4, .. })]));
}

#[tokio::test]
async fn a_new_poll_supersedes_the_held_one() {
    let server = Server::default().await;
    let hello = hello_of(&poll(&server, "rt_conn=1").await);
    let session = format!("room=lobby&rt_conn=1&rt_sid={}&rt_key={}&rt_last=1", hello.session_id, hello.secret);
    let url = server.url(&format!("/realtime/poll?{session}"));
    let first = tokio::spawn(async move { reqwest::get(url).await.unwrap().bytes().await.unwrap() });
    wait_live(&server, 1).await;
    let url = server.url(&format!("/realtime/poll?{session}"));
    let _second = tokio::spawn(async move { reqwest::get(url).await.unwrap().bytes().await.unwrap() });
    let body = tokio::time::timeout(LIMIT, first).await.unwrap().unwrap();
    assert!(body.is_empty(), "a superseded poll is answered with an empty body");
}

#[tokio::test]
async fn held_poll_is_held_for_poll_hold_then_answered_empty() {
    use std::time::Duration;
    use tokio::time::Instant;
    // poll_hold is the bound here (the heartbeat stays at its 25 s default).
    let hold = Duration::from_millis(600);
    let server = Server::start(Config { poll_hold: hold, ..Config::default() }).await;
    assert_eq!(realtime_server::poll::poll_hold_for(&server.state.config), hold);
    let hello = hello_of(&poll(&server, "rt_conn=1").await);
    let query = format!("room=lobby&rt_conn=1&rt_sid={}&rt_key={}&rt_last=1", hello.session_id, hello.secret);
    let started = Instant::now();
    let mut held = tokio::spawn({
        let url = server.url(&format!("/realtime/poll?{query}"));
        async move {
            let response = reqwest::get(url).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = response.bytes().await.unwrap();
            (Instant::now(), body)
        }
    });
    // Not answered during the first half of the hold.
    assert!(tokio::time::timeout(hold / 2, &mut held).await.is_err(), "the poll was answered before half the hold");
    wait_live(&server, 1).await; // And it is held on the server, not stuck in the client.
    let (answered, body) = tokio::time::timeout(LIMIT, held).await.expect("answered after the hold").unwrap();
    let took = answered - started;
    // The server starts its timer after the request arrived: never shorter than the hold
    // (a few ms of tolerance for timer rounding).
    assert!(took >= hold - Duration::from_millis(5), "answered after {took:?}, before the {hold:?} hold");
    assert!(took < hold + Duration::from_secs(5), "held {took:?}, far beyond the {hold:?} hold");
    let frames = wire::decode_all(&body, 1 << 20).unwrap();
    assert!(frames.is_empty(), "nothing to send: an empty answer, got {frames:?}");
    wait_live(&server, 0).await;
}

#[tokio::test]
async fn poll_on_a_new_conn_resumes_with_replay() {
    let server = Server::default().await;
    let hello = hello_of(&poll(&server, "room=q&rt_conn=1").await);
    server.publish("room=q", "text/plain", "one").await;
    server.publish("room=q", "text/plain", "two").await;
    let query = format!("room=q&rt_conn=2&rt_sid={}&rt_key={}&rt_last=2", hello.session_id, hello.secret);
    let frames = poll(&server, &query).await;
    let resumed = hello_of(&frames);
    assert!(resumed.resumed);
    assert_eq!(frames[1..], [Frame::Message(Message { seq: 3, event: None, payload: Payload::Text("two".into()) })]);
    // The replaced conn may not attach again.
    let query = format!("room=q&rt_conn=1&rt_sid={}&rt_key={}&rt_last=1", hello.session_id, hello.secret);
    let frames = poll(&server, &query).await;
    assert!(matches!(&frames[..], [Frame::Close(close)] if close.code == close_code::REPLACED));
}

#[tokio::test]
async fn send_errors() {
    let server = Server::default().await;
    let hello = hello_of(&poll(&server, "rt_conn=1").await);
    let good = batch(&[text_msg(1, "x")]);
    let response = send(&server, &format!("rt_conn=1&rt_sid=unknownsession&rt_key={}", hello.secret), good.clone()).await;
    assert_eq!(response.status(), 404);
    assert!(!response.text().await.unwrap().is_empty());
    let response = send(&server, &format!("rt_conn=1&rt_sid={}&rt_key=wrong", hello.session_id), good).await;
    assert_eq!(response.status(), 403);
    let session = format!("rt_conn=1&rt_sid={}&rt_key={}", hello.session_id, hello.secret);
    let response = send(&server, &session, "msg s=1 k=q\n".into()).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.text().await.unwrap(), "bad payload kind");
    // The session's connection got the protocol-error close; the session is gone.
    let frames = poll(&server, &format!("{session}&rt_last=0")).await;
    assert!(!hello_of(&frames).resumed, "a fresh session after the protocol error");
}

#[tokio::test]
async fn sse_and_poll_refuse_bad_parameters() {
    let server = Server::default().await;
    for path in ["/realtime/poll?room=no%20spaces", "/realtime/sse?rt_conn=x"] {
        let response = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        assert!(!response.text().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn an_unsupported_version_on_sse_and_poll_is_refused_in_protocol_for_good() {
    // A bare 400 would look like a failed rung to a client, which would retry for ever; the
    // close frame says stop, as on a WebSocket.
    let server = Server::default().await;
    let refusal = Frame::Close(Close {
        code: close_code::UNSUPPORTED_VERSION,
        reason: "unsupported protocol version".into(),
        retry: Retry::Never,
    });
    // v1 (the version before channels) and a future version alike.
    assert_eq!(poll(&server, "rt_v=3&rt_conn=1").await, vec![refusal.clone()]);
    assert_eq!(poll(&server, "rt_v=1&rt_conn=1").await, vec![refusal.clone()]);
    let response = reqwest::get(server.url("/realtime/sse?rt_v=1&rt_conn=1")).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut reader = SseReader::new(response);
    let (_, _, data) = parse_event(&reader.next_event().await);
    let frames = wire::decode_all(data.as_bytes(), 1 << 20).unwrap();
    assert_eq!(frames, vec![refusal]);
    assert_eq!(server.state.registry.len(), 0, "no session was created");
}

#[tokio::test]
async fn static_files_are_served() {
    let directory = std::env::temp_dir().join(format!("realtime-server-static-{}", std::process::id()));
    std::fs::create_dir_all(directory.join("pkg")).unwrap();
    std::fs::write(directory.join("index.html"), "<p>demo</p>").unwrap();
    std::fs::write(directory.join("pkg/x.js"), "export {}").unwrap();
    let server = Server::start(Config { static_dir: directory.clone(), ..Config::default() }).await;
    assert_eq!(reqwest::get(server.url("/")).await.unwrap().text().await.unwrap(), "<p>demo</p>");
    assert_eq!(reqwest::get(server.url("/pkg/x.js")).await.unwrap().text().await.unwrap(), "export {}");
    assert_eq!(reqwest::get(server.url("/server/Cargo.toml")).await.unwrap().status(), 404);
    let _ = std::fs::remove_dir_all(directory);
}

#[tokio::test]
async fn shutdown_answers_a_held_poll_with_going_away() {
    let server = Server::default().await;
    let hello = hello_of(&poll(&server, "rt_conn=1").await);
    let url = server.url(&format!("/realtime/poll?room=lobby&rt_conn=1&rt_sid={}&rt_key={}&rt_last=1", hello.session_id, hello.secret));
    let held = tokio::spawn(async move { reqwest::get(url).await.unwrap().bytes().await.unwrap() });
    wait_live(&server, 1).await;
    server.state.begin_shutdown();
    let body = tokio::time::timeout(LIMIT, held).await.unwrap().unwrap();
    let frames = wire::decode_all(&body, 1 << 20).unwrap();
    assert!(matches!(&frames[..], [Frame::Close(close)] if close.code == close_code::GOING_AWAY), "{frames:?}");
}
