//! The session layer under attack, each attack at a bounded size through the binary's accept loop
//! (`edge::serve`, so every request has its client IP), with small limits set through `Config`:
//! one IP at its session, stream and new-session caps, a flooding room member, oversized batches,
//! ping floods and request numbers at `u64::MAX`. Each test asserts the refusal (status or close
//! code, retry advice, the trip counted) and that other clients and sessions are still served.
//! Memory attacks (replay budget, shared payloads, slow consumers, fan-out) are in
//! `security_memory.rs`.

mod common;

use std::time::Duration;

use realtime_client::core::wire::{self, close_code, Carrier, Close, Frame, Hello, Retry};
use realtime_server::limits::LimitConfig;
use realtime_server::metrics::LimitKind;
use realtime_server::Config;

use common::{eventually, http_from, start_edge, text_msg, ws_from, Server, LIMIT};

fn config(limits: LimitConfig) -> Config {
    Config { limits: LimitConfig { retry_after: Duration::from_secs(2), ..limits }, ..Config::default() }
}

/// `GET /realtime/poll?query` from `from`: the status, the Retry-After header and the frames.
async fn poll_from(from: &str, server: &Server, query: &str) -> (u16, Option<String>, Vec<Frame>) {
    let request = http_from(from).get(server.url(&format!("/realtime/poll?{query}"))).send();
    let response = tokio::time::timeout(LIMIT, request).await.unwrap().unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|value| value.to_str().unwrap().to_owned());
    let body = response.bytes().await.unwrap();
    let frames = if status == 200 { wire::decode_all(&body, 1 << 24).unwrap() } else { Vec::new() };
    (status, retry_after, frames)
}

/// A fresh poll session from `from` in `room`: its hello.
async fn poll_session(from: &str, server: &Server, room: &str) -> Hello {
    let (status, _, frames) = poll_from(from, server, &format!("room={room}")).await;
    assert_eq!(status, 200);
    match frames.into_iter().next() {
        Some(Frame::Hello(hello)) => hello,
        other => panic!("expected hello, got {other:?}"),
    }
}

/// The close a refused WebSocket gets before any hello.
async fn refused_ws(from: &str, server: &Server, query: &str) -> Close {
    let mut client = ws_from(from, server, query).await;
    match client.frame().await {
        Frame::Close(close) => {
            assert!(client.next().await.is_none());
            assert_eq!(client.closed.as_ref().map(|closed| closed.0), Some(close.code), "the WebSocket close carries the code");
            close
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A refusal a client backs off from: 4003 with the configured retry (never `retry=no`).
fn assert_back_off(close: &Close) {
    assert_eq!(close.code, close_code::LIMIT_EXCEEDED, "{close:?}");
    assert_eq!(close.retry, Retry::AfterMs(2_000), "{close:?}");
}

#[tokio::test]
async fn one_ip_at_its_session_cap_is_refused_while_others_are_served() {
    let server = start_edge(config(LimitConfig { max_sessions_per_ip: 3, ..LimitConfig::default() })).await;
    for _ in 0..3 {
        poll_session("127.0.0.2", &server, "capped").await;
    }
    let (status, retry_after, _) = poll_from("127.0.0.2", &server, "room=capped").await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("2")));
    let sse = http_from("127.0.0.2").get(server.url("/realtime/sse?room=capped")).send().await.unwrap();
    assert_eq!(sse.status(), 503);
    assert_eq!(sse.headers()["retry-after"], "2");
    assert_back_off(&refused_ws("127.0.0.2", &server, "room=capped").await);
    assert_eq!(server.state.metrics.trips(LimitKind::sessions_per_ip), 3);
    assert_eq!(server.state.ip_limits.sessions_of("127.0.0.2".parse().unwrap()), 3);
    // Another address is served as usual.
    let mut other = ws_from("127.0.0.3", &server, "room=capped").await;
    other.hello().await;
    assert_eq!(server.state.registry.len(), 4);
}

#[tokio::test]
async fn new_sessions_per_ip_are_rate_limited() {
    let limits = LimitConfig { new_sessions_per_sec: 1, new_sessions_burst: 5, ..LimitConfig::default() };
    let server = start_edge(config(limits)).await;
    for _ in 0..5 {
        poll_session("127.0.0.4", &server, "rate").await;
    }
    let (status, retry_after, _) = poll_from("127.0.0.4", &server, "room=rate").await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("2")));
    assert_back_off(&refused_ws("127.0.0.4", &server, "room=rate").await);
    assert!(server.state.metrics.trips(LimitKind::new_session_rate) >= 2);
    poll_session("127.0.0.5", &server, "rate").await;
    assert_eq!(server.state.ip_limits.sessions_of("127.0.0.5".parse().unwrap()), 1, "another address is not limited");
}

#[tokio::test]
async fn one_ip_at_its_stream_cap_is_refused_while_others_stream() {
    let server = start_edge(config(LimitConfig { max_streams_per_ip: 2, ..LimitConfig::default() })).await;
    let client = http_from("127.0.0.6");
    let mut held = Vec::new();
    for _ in 0..2 {
        let response = client.get(server.url("/realtime/sse?room=streams")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        held.push(common::SseReader::new(response));
    }
    for reader in &mut held {
        assert!(reader.next_event().await.starts_with("event: hello"));
    }
    let refused = client.get(server.url("/realtime/sse?room=streams")).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "2");
    assert_back_off(&refused_ws("127.0.0.6", &server, "room=streams").await);
    assert_eq!(server.state.metrics.trips(LimitKind::streams_per_ip), 2);
    let mut other = ws_from("127.0.0.7", &server, "room=streams").await;
    other.hello().await;
    // A stream that ends gives its slot back.
    drop(held.pop());
    let ip = "127.0.0.6".parse().unwrap();
    eventually("the ended stream's slot is back", || server.state.ip_limits.streams_of(ip) == 1).await;
    let again = client.get(server.url("/realtime/sse?room=streams")).send().await.unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn a_flooding_member_is_slowed_then_refused_before_idle_members_overflow() {
    let limits = LimitConfig {
        messages_per_sec: 50,
        messages_burst: 100,
        rate_slowdown: Duration::from_millis(1_000),
        ..LimitConfig::default()
    };
    let server = start_edge(Config { replay_max_messages: 500, ..config(limits) }).await;
    // Idle members: sessions that do not poll, so every message stays unsent in their buffers.
    let mut members = Vec::new();
    for index in 0..5 {
        members.push(poll_session(&format!("127.0.1.{index}"), &server, "flood").await);
    }
    let mut flooder = ws_from("127.0.0.8", &server, "room=flood").await;
    flooder.hello().await;
    // 2,000 messages in 100 WebSocket messages, as fast as the socket takes them.
    let started = std::time::Instant::now();
    for batch in 0..100u64 {
        let frames: Vec<Frame> = (1..=20).map(|index| text_msg(batch * 20 + index, "flood")).collect();
        flooder.send_frames(&frames, Carrier::Text).await;
    }
    let close = loop {
        match flooder.frame().await {
            Frame::Close(close) => break close,
            _ => continue,
        }
    };
    assert_back_off(&close);
    assert_eq!(close.reason, "rate limit exceeded");
    assert!(started.elapsed() < Duration::from_secs(5), "refused after the slowdown, not later");
    assert!(server.state.metrics.trips(LimitKind::message_rate) >= 1);
    // Burst plus the rate over the slowdown got through: far below the members' replay bound.
    for member in &members {
        let session = server.state.registry.get(&member.session_id).expect("member kept");
        assert!(!session.is_ended(), "an idle member survives the flood");
    }
    assert_eq!(server.state.metrics.trips(LimitKind::replay_overflow), 0);
    let (status, _, frames) = poll_from("127.0.1.0", &server, &format!(
        "room=flood&rt_sid={}&rt_key={}&rt_last=0&rt_conn=1",
        members[0].session_id, members[0].secret
    ))
    .await;
    assert_eq!(status, 200);
    let delivered = frames.iter().filter(|frame| matches!(frame, Frame::Message(_) | Frame::ChannelMessage(_))).count();
    assert!((100..=200).contains(&delivered), "burst 100 + 50/s for 1 s, got {delivered}");
}

#[tokio::test]
async fn an_upload_over_its_rate_gets_429_and_the_session_lives_on() {
    let limits = LimitConfig { messages_per_sec: 10, messages_burst: 10, rate_slowdown: Duration::from_millis(300), ..LimitConfig::default() };
    let server = start_edge(config(limits)).await;
    let hello = poll_session("127.0.0.9", &server, "uploads").await;
    let url = server.url(&format!("/realtime/send?rt_sid={}&rt_key={}", hello.session_id, hello.secret));
    let client = http_from("127.0.0.9");
    let mut seq = 0;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let mut body = Vec::new();
        for _ in 0..10 {
            seq += 1;
            wire::encode(&text_msg(seq, "up"), Carrier::Text, &mut body);
        }
        let response = client.post(&url).body(body).send().await.unwrap();
        let status = response.status().as_u16();
        statuses.push(status);
        if status == 429 {
            assert_eq!(response.headers()["retry-after"], "2");
            break;
        }
    }
    assert_eq!(statuses.first(), Some(&204), "the burst passes: {statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "then slowed, then refused: {statuses:?}");
    assert!(server.state.metrics.trips(LimitKind::message_rate) >= 1);
    let session = server.state.registry.get(&hello.session_id).unwrap();
    assert!(!session.is_ended(), "a refused upload does not end the session");
    // The refused batch was not processed: sent again as one message, at once, it passes (it
    // waits for its token, the refusal does not stick).
    let body = wire::encode_to_vec(&text_msg(seq - 9, "up"), Carrier::Text);
    assert_eq!(client.post(&url).body(body).send().await.unwrap().status(), 204, "served again after the 429");
}

#[tokio::test]
async fn a_post_larger_than_burst_plus_slowdown_is_paced_then_accepted() {
    // Default rates (200/s, burst 1,000), a 1 s slowdown: 1,500 tiny messages in one POST are
    // more than could pass within the slowdown; paced at the rate, they are accepted.
    let server = start_edge(config(LimitConfig { rate_slowdown: Duration::from_millis(1_000), ..LimitConfig::default() })).await;
    let hello = poll_session("127.0.0.14", &server, "big-post").await;
    let url = server.url(&format!("/realtime/send?rt_sid={}&rt_key={}", hello.session_id, hello.secret));
    let mut body = Vec::new();
    for seq in 1..=1_500 {
        wire::encode(&text_msg(seq, "t"), Carrier::Text, &mut body);
    }
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(LIMIT, http_from("127.0.0.14").post(&url).body(body).send()).await.unwrap().unwrap();
    assert_eq!(response.status(), 204);
    assert!(started.elapsed() >= Duration::from_millis(2_000), "paced at the rate: {:?}", started.elapsed());
    assert_eq!(server.state.metrics.messages_in.get(), 1_500);
}

#[tokio::test]
async fn a_second_concurrent_send_of_one_session_gets_429_at_once() {
    // 2/s, burst 1: the second POST waits for its token, holding the session's upstream.
    let limits = LimitConfig { messages_per_sec: 2, messages_burst: 1, ..LimitConfig::default() };
    let server = start_edge(config(limits)).await;
    let hello = poll_session("127.0.0.13", &server, "serial").await;
    let url = server.url(&format!("/realtime/send?rt_sid={}&rt_key={}", hello.session_id, hello.secret));
    let client = http_from("127.0.0.13");
    let send = |seq: u64| client.post(&url).body(wire::encode_to_vec(&text_msg(seq, "one"), Carrier::Text)).send();
    assert_eq!(send(1).await.unwrap().status(), 204);
    let parked = tokio::spawn(send(2));
    let session = server.state.registry.get(&hello.session_id).unwrap();
    eventually("the second send holds the session", || session.upstream.try_lock().is_err()).await;
    let refused = send(3).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "2");
    assert_eq!(parked.await.unwrap().unwrap().status(), 204, "the parked send goes through");
    assert_eq!(send(3).await.unwrap().status(), 204, "then the next one");
}

#[tokio::test]
async fn batches_over_the_frame_cap_are_refused() {
    let server = start_edge(config(LimitConfig { max_frames_per_batch: 100, ..LimitConfig::default() })).await;
    let pings: Vec<Frame> = (0..101).map(|time| Frame::Ping { time }).collect();
    let mut client = ws_from("127.0.0.10", &server, "room=batch").await;
    client.hello().await;
    client.send_frames(&pings, Carrier::Text).await;
    let close = loop {
        match client.frame().await {
            Frame::Close(close) => break close,
            _ => continue,
        }
    };
    assert_eq!((close.code, close.reason.as_str()), (close_code::LIMIT_EXCEEDED, "too many frames in one batch"));
    let hello = poll_session("127.0.0.10", &server, "batch").await;
    let mut body = Vec::new();
    for frame in &pings {
        wire::encode(frame, Carrier::Text, &mut body);
    }
    let url = server.url(&format!("/realtime/send?rt_sid={}&rt_key={}", hello.session_id, hello.secret));
    let response = http_from("127.0.0.10").post(&url).body(body).send().await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(server.state.metrics.trips(LimitKind::frames_per_batch), 2);
}

#[tokio::test]
async fn a_batch_of_pings_gets_one_pong_and_the_control_queue_is_bounded() {
    let server = start_edge(config(LimitConfig { max_control_frames: 4, ..LimitConfig::default() })).await;
    let mut client = ws_from("127.0.0.11", &server, "room=pings").await;
    client.hello().await;
    let pings: Vec<Frame> = (1..=100).map(|time| Frame::Ping { time }).collect();
    client.send_frames(&pings, Carrier::Text).await;
    let before = client.sync(1_000).await;
    assert_eq!(before, vec![Frame::Pong { time: 100 }], "one pong, for the latest ping");
    // Uploads with pings while no poll is held: the queue keeps the newest 4.
    let hello = poll_session("127.0.0.11", &server, "pings").await;
    let url = server.url(&format!("/realtime/send?rt_sid={}&rt_key={}", hello.session_id, hello.secret));
    let http = http_from("127.0.0.11");
    for time in 1..=10 {
        let body = wire::encode_to_vec(&Frame::Ping { time }, Carrier::Text);
        assert_eq!(http.post(&url).body(body).send().await.unwrap().status(), 204);
    }
    let query = format!("room=pings&rt_sid={}&rt_key={}&rt_last=0&rt_conn=0", hello.session_id, hello.secret);
    let (status, _, frames) = poll_from("127.0.0.11", &server, &query).await;
    assert_eq!(status, 200);
    let pongs: Vec<u64> = frames.iter().filter_map(|frame| match frame { Frame::Pong { time } => Some(*time), _ => None }).collect();
    assert_eq!(pongs, vec![7, 8, 9, 10]);
    assert_eq!(server.state.metrics.trips(LimitKind::control_queue), 6);
}

#[tokio::test]
async fn request_numbers_at_u64_max_do_not_overflow() {
    let server = start_edge(Config { poll_hold: Duration::from_millis(100), ..Config::default() }).await;
    let hello = poll_session("127.0.0.12", &server, "max").await;
    let max = u64::MAX;
    // A poll on the attached connection, a resume on another, and a WebSocket resume.
    for conn in [0, 1] {
        let query = format!("room=max&rt_sid={}&rt_key={}&rt_last={max}&rt_conn={conn}", hello.session_id, hello.secret);
        let (status, _, _) = poll_from("127.0.0.12", &server, &query).await;
        assert_eq!(status, 200);
    }
    let query = format!("room=max&rt_sid={}&rt_key={}&rt_last={max}&rt_conn=5", hello.session_id, hello.secret);
    let mut client = ws_from("127.0.0.12", &server, &query).await;
    let fresh = client.hello().await;
    assert!(!fresh.resumed, "a resume from beyond the last seq gets a fresh session");
    client.send_frames(&[text_msg(max, "last")], Carrier::Text).await;
    match client.frame().await {
        Frame::Close(close) => assert_eq!((close.code, close.reason.as_str()), (close_code::PROTOCOL_ERROR, "sequence gap")),
        other => panic!("expected the gap close, got {other:?}"),
    }
    // The server is still serving.
    poll_session("127.0.0.12", &server, "max").await;
}
