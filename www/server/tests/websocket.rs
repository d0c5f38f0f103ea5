//! WebSocket transport, rooms, publish, resume and origin checks over real sockets.

mod common;

use common::{text_msg, Server, WsClient};
use realtime_client::core::wire::{close_code, is_valid_token, Carrier, Frame, Message, Payload, Retry};
use realtime_server::Config;
use tokio_tungstenite::tungstenite;

#[tokio::test]
async fn hello_has_valid_fields() {
    let server = Server::default().await;
    let mut client = WsClient::connect(&server.ws_url("room=lobby&rt_v=2&rt_conn=1")).await;
    let (frame, binary) = client.next().await.unwrap();
    assert!(!binary, "hello travels in a text message");
    let Frame::Hello(hello) = frame else { panic!("first frame must be hello, got {frame:?}") };
    assert_eq!(hello.version, 2);
    assert!(is_valid_token(&hello.session_id) && hello.session_id.len() >= 20);
    assert!(is_valid_token(&hello.secret) && hello.secret.len() >= 20);
    assert_ne!(hello.session_id, hello.secret);
    assert_eq!(hello.heartbeat_ms, 25_000);
    assert_eq!(hello.max_body_bytes, 1 << 20);
    assert_eq!(hello.ack, 0);
    assert!(!hello.resumed);
}

#[tokio::test]
async fn every_kind_comes_back_to_the_sender_and_is_acked() {
    let server = Server::default().await;
    let mut client = WsClient::connect(&server.ws_url("rt_v=2&rt_conn=1")).await;
    client.hello().await;
    let json = Frame::Message(Message { seq: 2, event: Some("ticker".into()), payload: Payload::Json("{\"p\":1}".into()) });
    let binary = Frame::Message(Message { seq: 3, event: None, payload: Payload::Binary(vec![0, 1, 255]) });
    client.send_frames(&[text_msg(1, "hi\r\nthere")], Carrier::Text).await;
    client.send_frames(&[json], Carrier::Text).await;
    // Binary payload inside a text message (base64) and raw inside a binary message.
    client.send_frames(std::slice::from_ref(&binary), Carrier::Text).await;
    let binary_raw = Frame::Message(Message { seq: 4, event: Some("blob".into()), payload: Payload::Binary(vec![9; 10]) });
    client.send_frames(&[binary_raw], Carrier::Binary).await;

    let mut messages = Vec::new();
    let mut highest_ack = 0;
    while messages.len() < 4 || highest_ack < 4 {
        match client.next().await.unwrap() {
            (Frame::Message(message), binary) => {
                // A batch holding a binary payload must ride in a binary WebSocket message.
                if matches!(message.payload, Payload::Binary(_)) {
                    assert!(binary, "binary payload in a text websocket message");
                }
                messages.push(message);
            }
            (Frame::Ack { seq }, _) => {
                assert!(seq >= highest_ack, "acks are cumulative");
                highest_ack = seq;
            }
            (other, _) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(highest_ack, 4);
    let seqs: Vec<u64> = messages.iter().map(|message| message.seq).collect();
    assert_eq!(seqs, [2, 3, 4, 5], "server seqs start at 1 per session (1: the room's subscribed)");
    assert_eq!(messages[0].payload, Payload::Text("hi\r\nthere".into()));
    assert_eq!(messages[0].event, None);
    assert_eq!(messages[1].payload, Payload::Json("{\"p\":1}".into()));
    assert_eq!(messages[1].event.as_deref(), Some("ticker"));
    assert_eq!(messages[2].payload, Payload::Binary(vec![0, 1, 255]));
    assert_eq!(messages[3].payload, Payload::Binary(vec![9; 10]));
    assert_eq!(messages[3].event.as_deref(), Some("blob"));
}

#[tokio::test]
async fn duplicates_are_acked_not_rebroadcast_and_gaps_are_errors() {
    let server = Server::default().await;
    let mut client = WsClient::connect(&server.ws_url("rt_conn=1")).await;
    client.hello().await;
    client.send_frames(&[text_msg(1, "once"), text_msg(1, "once")], Carrier::Text).await;
    client.send_frames(&[text_msg(1, "once")], Carrier::Text).await;
    let frames = client.sync(77).await;
    let echoes = frames.iter().filter(|frame| matches!(frame, Frame::Message(_))).count();
    assert_eq!(echoes, 1, "{frames:?}");
    assert!(frames.contains(&Frame::Ack { seq: 1 }));
    client.send_frames(&[text_msg(3, "gap")], Carrier::Text).await;
    loop {
        match client.next().await {
            Some((Frame::Close(close), _)) => {
                assert_eq!(close.code, close_code::PROTOCOL_ERROR);
                assert_eq!(close.reason, "sequence gap");
                break;
            }
            Some(_) => continue,
            None => panic!("closed without a close frame"),
        }
    }
    assert!(client.next().await.is_none());
    assert_eq!(client.closed.as_ref().map(|closed| closed.0), Some(close_code::PROTOCOL_ERROR));
}

#[tokio::test]
async fn rooms_isolate_sessions() {
    let server = Server::default().await;
    let mut alice = WsClient::connect(&server.ws_url("room=one&rt_conn=1")).await;
    let mut bob = WsClient::connect(&server.ws_url("room=one&rt_conn=1")).await;
    let mut carol = WsClient::connect(&server.ws_url("room=two&rt_conn=1")).await;
    alice.hello().await;
    bob.hello().await;
    carol.hello().await;
    alice.send_frames(&[text_msg(1, "from alice")], Carrier::Text).await;
    bob.send_frames(&[text_msg(1, "from bob")], Carrier::Text).await;
    let mut alice_got = vec![alice.message().await.payload, alice.message().await.payload];
    let mut bob_got = vec![bob.message().await.payload, bob.message().await.payload];
    alice_got.sort_by_key(|payload| format!("{payload:?}"));
    bob_got.sort_by_key(|payload| format!("{payload:?}"));
    let expected = vec![Payload::Text("from alice".into()), Payload::Text("from bob".into())];
    assert_eq!(alice_got, expected);
    assert_eq!(bob_got, expected);
    // Both broadcasts finished (each sender saw its own); carol's first message is the marker.
    let response = server.publish("room=two", "text/plain", "marker").await;
    assert_eq!(response.status(), 202);
    let first = carol.message().await;
    assert_eq!(first.payload, Payload::Text("marker".into()));
    assert_eq!(first.seq, 2, "after the room channel's subscribed");
}

#[tokio::test]
async fn malformed_frame_gets_protocol_error_close() {
    let server = Server::default().await;
    let mut client = WsClient::connect(&server.ws_url("rt_conn=1")).await;
    client.hello().await;
    client.send_raw_text("bogus s=1\n").await;
    let frame = client.frame().await;
    let Frame::Close(close) = frame else { panic!("expected close, got {frame:?}") };
    assert_eq!(close.code, 4000);
    assert_eq!(close.reason, "unknown frame type");
    assert!(client.next().await.is_none(), "the connection ends after the close frame");
    assert_eq!(client.closed, Some((4000, "unknown frame type".into())));
}

#[tokio::test]
async fn oversized_message_gets_limit_close() {
    let server = Server::start(Config { max_message_bytes: 16, ..Config::default() }).await;
    let mut client = WsClient::connect(&server.ws_url("rt_conn=1")).await;
    assert_eq!(client.hello().await.max_body_bytes, 16);
    client.send_frames(&[text_msg(1, "this is longer than sixteen bytes")], Carrier::Text).await;
    let Frame::Close(close) = client.frame().await else { panic!("expected close") };
    assert_eq!(close.code, close_code::LIMIT_EXCEEDED);
}

#[tokio::test]
async fn unsupported_version_is_refused_for_good() {
    let server = Server::default().await;
    let mut client = WsClient::connect(&server.ws_url("rt_v=9&rt_conn=1")).await;
    let Frame::Close(close) = client.frame().await else { panic!("expected close") };
    assert_eq!(close.code, close_code::UNSUPPORTED_VERSION);
    assert_eq!(close.retry, Retry::Never);
}

#[tokio::test]
async fn publish_reaches_websocket_and_bad_publish_is_refused() {
    let server = Server::start(Config { max_message_bytes: 64, ..Config::default() }).await;
    let mut client = WsClient::connect(&server.ws_url("room=news&rt_conn=1")).await;
    client.hello().await;
    let response = server.publish("room=news&event=headline", "application/json; charset=utf-8", "{\"a\":[1,2]}").await;
    assert_eq!(response.status(), 202);
    let message = client.message().await;
    assert_eq!(message.event.as_deref(), Some("headline"));
    assert_eq!(message.payload, Payload::Json("{\"a\":[1,2]}".into()));
    let response = server.publish("room=news", "application/octet-stream", vec![1u8, 2, 3]).await;
    assert_eq!(response.status(), 202);
    let (frame, binary) = client.next().await.unwrap();
    assert!(binary);
    assert!(matches!(frame, Frame::Message(Message { payload: Payload::Binary(ref bytes), .. }) if bytes == &[1, 2, 3]));

    for (query, content_type, body, status) in [
        ("room=news", "application/json", "{nope", 400u16),
        ("room=news", "image/png", "x", 415),
        ("room=news&event=bad%20name", "text/plain", "x", 400),
        ("room=bad/room", "text/plain", "x", 400),
        ("", "text/plain", "x", 400),
        ("room=news", "text/plain", &"x".repeat(65), 413),
    ] {
        let response = server.publish(query, content_type, body.to_owned()).await;
        assert_eq!(response.status().as_u16(), status, "{query} {content_type}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        assert!(!response.text().await.unwrap().is_empty(), "errors carry a message");
    }
}

#[tokio::test]
async fn resume_replays_exactly_the_unacked_messages() {
    let server = Server::default().await;
    let mut first = WsClient::connect(&server.ws_url("room=r&rt_v=2&rt_conn=1")).await;
    let hello = first.hello().await;
    for text in ["one", "two", "three"] {
        assert_eq!(server.publish("room=r", "text/plain", text).await.status(), 202);
    }
    for seq in 2..=4 {
        assert_eq!(first.message().await.seq, seq);
    }
    first.send_frames(&[Frame::Ack { seq: 2 }], Carrier::Text).await;
    first.sync(1).await; // The ack was processed.
    drop(first); // The connection drops without a close frame.
    assert_eq!(server.publish("room=r", "text/plain", "four").await.status(), 202);

    let query = format!("room=r&rt_v=2&rt_conn=2&rt_sid={}&rt_key={}&rt_last=2", hello.session_id, hello.secret);
    let mut second = WsClient::connect(&server.ws_url(&query)).await;
    let resumed = second.hello().await;
    assert!(resumed.resumed);
    assert_eq!(resumed.session_id, hello.session_id);
    let replayed: Vec<(u64, Payload)> = second
        .sync(2)
        .await
        .into_iter()
        .map(|frame| match frame {
            Frame::Message(message) => (message.seq, message.payload),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        replayed,
        vec![
            (3, Payload::Text("two".into())),
            (4, Payload::Text("three".into())),
            (5, Payload::Text("four".into()))
        ]
    );

    // A resume while attached replaces the old transport with close 4004.
    let query = format!("room=r&rt_conn=3&rt_sid={}&rt_key={}&rt_last=5", hello.session_id, hello.secret);
    let mut third = WsClient::connect(&server.ws_url(&query)).await;
    assert!(third.hello().await.resumed);
    let Frame::Close(close) = second.frame().await else { panic!("expected close") };
    assert_eq!(close.code, close_code::REPLACED);
    assert!(third.sync(3).await.is_empty(), "nothing left to replay");
}

#[tokio::test]
async fn bad_key_or_unknown_session_gets_a_fresh_session() {
    let server = Server::default().await;
    let mut first = WsClient::connect(&server.ws_url("rt_conn=1")).await;
    let hello = first.hello().await;
    let query = format!("rt_conn=2&rt_sid={}&rt_key=wrongkey&rt_last=0", hello.session_id);
    let mut wrong_key = WsClient::connect(&server.ws_url(&query)).await;
    let fresh = wrong_key.hello().await;
    assert!(!fresh.resumed);
    assert_ne!(fresh.session_id, hello.session_id);
    let mut unknown = WsClient::connect(&server.ws_url("rt_conn=2&rt_sid=nosuchsession&rt_key=abc&rt_last=0")).await;
    let fresh = unknown.hello().await;
    assert!(!fresh.resumed);
    assert_ne!(fresh.session_id, "nosuchsession");
    // The original connection was not disturbed.
    assert!(first.sync(5).await.is_empty());
}

#[tokio::test]
async fn resume_from_beyond_the_last_sent_message_is_refused() {
    let server = Server::default().await;
    let mut first = WsClient::connect(&server.ws_url("room=r&rt_conn=1")).await;
    let hello = first.hello().await;
    for text in ["one", "two"] {
        assert_eq!(server.publish("room=r", "text/plain", text).await.status(), 202);
    }
    assert_eq!(first.message().await.seq, 2);
    assert_eq!(first.message().await.seq, 3);
    first.send_frames(&[Frame::Ack { seq: 3 }], Carrier::Text).await;
    first.sync(1).await;
    // rt_last beyond what was sent (2) cannot be honoured: a fresh session, no partial replay.
    let query = format!("room=r&rt_conn=2&rt_sid={}&rt_key={}&rt_last=9", hello.session_id, hello.secret);
    let mut second = WsClient::connect(&server.ws_url(&query)).await;
    let refused = second.hello().await;
    assert!(!refused.resumed);
    assert_ne!(refused.session_id, hello.session_id);
    // The request had the right key: the fresh session replaces the one it named (PROTOCOL §4,
    // §8.11 item 10), whose connection gets 4004.
    let Frame::Close(close) = first.frame().await else { panic!("expected close") };
    assert_eq!((close.code, close.retry), (close_code::REPLACED, Retry::Never));
    assert!(server.state.registry.get(&hello.session_id).is_none());
}

/// Resume query of `hello`'s session from `rt_last=last` on connection `conn`, room `r`.
fn resume_query(conn: u32, hello: &realtime_client::core::wire::Hello, last: u64) -> String {
    format!("room=r&rt_v=2&rt_conn={conn}&rt_sid={}&rt_key={}&rt_last={last}", hello.session_id, hello.secret)
}

#[tokio::test]
async fn resume_with_an_rt_last_below_its_own_later_ack_replays_after_the_ack() {
    // A client picks a new connection's rt_last when it opens it; its old connection may ack
    // more before the new request arrives (here: ack 3 on the old socket, resume with rt_last=1).
    // Acks are cumulative, so the client has 1-3: no gap, the resume succeeds and replays from 4.
    // (A refusal here reset every migration that raced with an ack: upgrade_from_polling.rs.)
    let server = Server::default().await;
    let mut first = WsClient::connect(&server.ws_url("room=r&rt_v=2&rt_conn=1")).await;
    let hello = first.hello().await;
    for text in ["one", "two", "three", "four"] {
        assert_eq!(server.publish("room=r", "text/plain", text).await.status(), 202);
    }
    for seq in 2..=5 {
        assert_eq!(first.message().await.seq, seq);
    }
    first.send_frames(&[Frame::Ack { seq: 4 }], Carrier::Text).await;
    first.sync(1).await; // The ack was processed: the buffer holds seq 4 only.

    let mut resumed = WsClient::connect(&server.ws_url(&resume_query(2, &hello, 1))).await;
    let again = resumed.hello().await;
    assert!(again.resumed, "rt_last=1 is below the client's own ack of 3: resume");
    assert_eq!(again.session_id, hello.session_id);
    let replayed = resumed.sync(2).await;
    assert!(
        matches!(&replayed[..], [Frame::Message(Message { seq: 5, payload: Payload::Text(text), .. })] if text == "four"),
        "exactly the msg after the ack: {replayed:?}"
    );
    let Frame::Close(close) = first.frame().await else { panic!("expected close") };
    assert_eq!(close.code, close_code::REPLACED);
    assert_eq!(server.state.registry.len(), 1);
}

#[tokio::test]
async fn resume_from_before_a_message_trimmed_by_the_replay_limit_is_refused() {
    // A replay buffer of 2 messages: the third publish trims sent msg 1 before the client acked
    // it. From then on the session cannot promise a gapless replay, so no resume is accepted,
    // neither from before the trimmed message nor (the session stopped being resumable) after.
    let server = Server::start(Config { replay_max_messages: 2, ..Config::default() }).await;
    let mut first = WsClient::connect(&server.ws_url("room=r&rt_v=2&rt_conn=1")).await;
    let hello = first.hello().await;
    for (seq, text) in [(2, "one"), (3, "two")] {
        assert_eq!(server.publish("room=r", "text/plain", text).await.status(), 202);
        assert_eq!(first.message().await.seq, seq); // Sent, so it may be trimmed.
    }
    assert_eq!(server.publish("room=r", "text/plain", "three").await.text().await.unwrap(), "1");
    assert_eq!(first.message().await.seq, 4);

    let mut too_old = WsClient::connect(&server.ws_url(&resume_query(2, &hello, 0))).await;
    let refused = too_old.hello().await;
    assert!(!refused.resumed, "msg 1 was trimmed: rt_last=0 cannot be replayed without a gap");
    assert_ne!(refused.session_id, hello.session_id);
    assert!(too_old.sync(2).await.is_empty(), "a refused resume replays nothing");

    let mut latest = WsClient::connect(&server.ws_url(&resume_query(3, &hello, 3))).await;
    let refused = latest.hello().await;
    assert!(!refused.resumed, "a session that lost a sent, unacked message is no longer resumable");
    assert_ne!(refused.session_id, hello.session_id);
}

#[tokio::test]
async fn origins_are_checked() {
    let config = Config { allowed_origins: vec!["https://app.example".into()], ..Config::default() };
    let server = Server::start(config).await;
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(server.ws_url("rt_conn=1")).unwrap();
    request.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    // Refused in-protocol, where the client reads it: upgraded, then `close code=4001 retry=no`
    // "origin not allowed" and the WebSocket close with the same code and reason (no session).
    let (mut refused, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let Some(Ok(tungstenite::Message::Text(text))) = futures_util::StreamExt::next(&mut refused).await else { panic!("expected a frame") };
    let frames = realtime_client::core::wire::decode_all(text.as_bytes(), 4096).unwrap();
    let [Frame::Close(close)] = &frames[..] else { panic!("expected close, got {frames:?}") };
    assert_eq!((close.code, close.reason.as_str(), close.retry), (4001, "origin not allowed", Retry::Never));
    let Some(Ok(tungstenite::Message::Close(Some(frame)))) = futures_util::StreamExt::next(&mut refused).await else { panic!("expected a close") };
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4001, "origin not allowed"));
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(server.ws_url("rt_conn=1")).unwrap();
    request.headers_mut().insert("origin", "https://app.example".parse().unwrap());
    let (ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    drop(ws);

    let client = reqwest::Client::new();
    let preflight = client
        .request(reqwest::Method::OPTIONS, server.url("/realtime/send?rt_conn=1"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.example");
    assert!(preflight.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert_eq!(preflight.headers()["vary"], "Origin");
    let refused = client
        .request(reqwest::Method::OPTIONS, server.url("/realtime/send"))
        .header("origin", "http://127.0.0.1:4000")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
}

#[tokio::test]
async fn loopback_origins_only_when_enabled() {
    let server = Server::start(Config { allow_loopback_origins: true, ..Config::default() }).await;
    let response = reqwest::Client::new()
        .get(server.url("/realtime/poll?rt_conn=1"))
        .header("origin", "http://localhost:41234")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "http://localhost:41234");
}

#[tokio::test]
async fn shutdown_sends_going_away() {
    let server = Server::default().await;
    let mut client = WsClient::connect(&server.ws_url("rt_conn=1")).await;
    client.hello().await;
    server.state.begin_shutdown();
    let Frame::Close(close) = client.frame().await else { panic!("expected close") };
    assert_eq!(close.code, close_code::GOING_AWAY);
    assert_eq!(close.retry, Retry::AfterMs(1000));
}

#[tokio::test]
async fn heartbeat_pings_and_idle_clients_are_dropped() {
    let server = Server::start(Config { heartbeat_ms: 100, ..Config::default() }).await;
    let mut client = WsClient::connect(&server.ws_url("rt_conn=1")).await;
    assert_eq!(client.hello().await.heartbeat_ms, 100);
    assert!(matches!(client.frame().await, Frame::Ping { .. }), "a ping after hb of silence");
    // The client never answers: after 2 × hb without traffic the server drops the socket.
    loop {
        match client.next().await {
            Some((Frame::Ping { .. }, _)) => continue,
            Some((other, _)) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
}

#[tokio::test]
async fn oversized_websocket_message_gets_limit_close() {
    // Over the WebSocket message limit (max + max/3 + 64 KiB), not just over `max`: tungstenite
    // refuses it while reading, and the server must still answer with close 4003.
    let server = Server::start(Config { max_message_bytes: 16, ..Config::default() }).await;
    let mut client = WsClient::connect(&server.ws_url("rt_conn=1")).await;
    client.hello().await;
    client.send_raw_text(&"x".repeat(server.state.config.max_batch_bytes() + 1)).await;
    let Frame::Close(close) = client.frame().await else { panic!("expected close") };
    assert_eq!((close.code, close.reason.as_str()), (close_code::LIMIT_EXCEEDED, "message too large"));
    assert!(client.next().await.is_none());
    assert_eq!(client.closed.as_ref().map(|closed| closed.0), Some(close_code::LIMIT_EXCEEDED));
}

#[tokio::test]
async fn a_batch_publish_delivers_every_message_in_order_and_a_bad_batch_publishes_nothing() {
    let server = Server::start(Config::default()).await;
    let mut client = WsClient::connect(&server.ws_url("room=burst&rt_conn=1")).await;
    client.hello().await;
    let mut batch = Vec::new();
    for n in 1..=300u64 {
        let event = (n % 3 == 0).then(|| "tick".to_owned());
        let frame = Frame::Message(Message { seq: 0, event, payload: Payload::Text(format!("m{n}")) });
        realtime_client::core::wire::encode(&frame, Carrier::Binary, &mut batch);
    }
    let response = server.publish("room=burst", "application/x-realtime-frames", batch).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.text().await.unwrap(), "300", "300 messages to one session");
    for n in 1..=300u64 {
        let message = client.message().await;
        assert_eq!(message.seq, n + 1);
        assert_eq!(message.payload, Payload::Text(format!("m{n}")));
        assert_eq!(message.event.as_deref(), (n % 3 == 0).then_some("tick"));
    }

    // A batch that does not decode, or holds anything but msg frames, publishes nothing.
    let mut bad = Vec::new();
    realtime_client::core::wire::encode(&text_msg(1, "first"), Carrier::Binary, &mut bad);
    bad.extend_from_slice(b"msg s=1 k=t n=99\nshort");
    let response = server.publish("room=burst", "application/x-realtime-frames", bad).await;
    assert_eq!(response.status(), 400);
    let mut control = Vec::new();
    realtime_client::core::wire::encode(&Frame::Ping { time: 1 }, Carrier::Binary, &mut control);
    let response = server.publish("room=burst", "application/x-realtime-frames", control).await;
    assert_eq!(response.status(), 400);
    let response = server.publish("room=burst", "text/plain", "after").await;
    assert_eq!(response.status(), 202);
    assert_eq!(client.message().await.payload, Payload::Text("after".into()), "nothing from the bad batches");
}
