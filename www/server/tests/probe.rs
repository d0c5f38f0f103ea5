//! Probes (`rt_probe=1`) over real sockets: a hello of no session, then held open.

mod common;

use std::time::{Duration, Instant};

use common::{parse_event, poll, Server, SseReader, WsClient, LIMIT};
use realtime_client::core::wire::{self, close_code, is_valid_token, Frame, Hello, Retry};
use realtime_server::Config;
use tokio_tungstenite::tungstenite;

fn check_probe_hello(hello: &Hello, server: &Server) {
    assert_eq!(hello.version, wire::PROTOCOL_VERSION);
    assert!(is_valid_token(&hello.session_id) && is_valid_token(&hello.secret));
    assert_eq!((hello.ack, hello.resumed), (0, false));
    assert_eq!(hello.heartbeat_ms, server.state.config.heartbeat_ms);
    assert!(server.state.registry.get(&hello.session_id).is_none(), "the probe sid names no session");
}

async fn wait_live(server: &Server, count: usize) {
    let mut live = server.state.live_transports();
    tokio::time::timeout(LIMIT, live.wait_for(|live| *live == count)).await.unwrap().unwrap();
}

#[tokio::test]
async fn websocket_probe_gets_hello_then_nothing_until_the_hold_ends() {
    let hold = Duration::from_millis(400);
    let server = Server::start(Config { probe_hold: hold, ..Config::default() }).await;
    let mut member = WsClient::connect(&server.ws_url("room=p&rt_conn=1")).await;
    member.hello().await;
    assert_eq!(server.state.registry.len(), 1);

    let started = Instant::now();
    let mut probe = WsClient::connect(&server.ws_url("room=p&rt_v=2&rt_conn=2&rt_probe=1")).await;
    let hello = probe.hello().await;
    check_probe_hello(&hello, &server);
    assert_eq!(server.state.registry.len(), 1, "a probe creates no session");
    // It joined no room: a publish reaches the one real session only.
    assert_eq!(server.publish("room=p", "text/plain", "x").await.text().await.unwrap(), "1");
    member.message().await;

    // Nothing after the hello but the close at the end of the hold (never right after the hello).
    let frame = probe.frame().await;
    assert!(started.elapsed() >= hold, "closed after {:?}", started.elapsed());
    let Frame::Close(close) = frame else { panic!("expected close, got {frame:?}") };
    assert_eq!((close.code, close.retry), (close_code::NORMAL, Retry::Never));
    assert!(probe.next().await.is_none());
    assert_eq!(probe.closed.as_ref().map(|closed| closed.0), Some(close_code::NORMAL));
    assert_eq!(server.state.registry.len(), 1);
}

#[tokio::test]
async fn websocket_probe_ends_when_the_client_closes() {
    let server = Server::default().await;
    let mut probe = WsClient::connect(&server.ws_url("rt_conn=1&rt_probe=1")).await;
    check_probe_hello(&probe.hello().await, &server);
    wait_live(&server, 1).await;
    assert_eq!(server.state.probe_count(), 1);
    probe.ws.close(None).await.unwrap();
    assert!(probe.next().await.is_none());
    wait_live(&server, 0).await;
    assert_eq!(server.state.probe_count(), 0);
    assert!(server.state.registry.is_empty());
}

#[tokio::test]
async fn sse_probe_gets_hello_and_the_stream_stays_open() {
    let server = Server::start(Config { sse_keepalive: Duration::from_millis(100), ..Config::default() }).await;
    let mut response = reqwest::get(server.url("/realtime/sse?room=p&rt_v=2&rt_conn=1&rt_probe=1")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // The hello event comes first, alone.
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(LIMIT, response.chunk()).await.unwrap().unwrap().expect("stream open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let (event, rest) = text.split_once("\n\n").unwrap();
    let (kind, _, data) = parse_event(event);
    assert_eq!(kind, "hello");
    let Frame::Hello(hello) = wire::decode(data.as_bytes(), 1 << 20).unwrap().0 else { panic!("expected hello") };
    check_probe_hello(&hello, &server);
    assert!(server.state.registry.is_empty());

    // Held for well over several keep-alive periods: only `: ka` comments, no event, no end.
    let mut rest = rest.to_owned();
    let open_until = tokio::time::Instant::now() + Duration::from_millis(600);
    while let Ok(chunk) = tokio::time::timeout_at(open_until, response.chunk()).await {
        let chunk = chunk.unwrap().expect("a probe stream must stay open");
        rest.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(rest.contains(": ka\n\n"), "{rest:?}");
    assert!(rest.split("\n\n").all(|block| block.is_empty() || block == ": ka"), "{rest:?}");
    assert_eq!(server.state.probe_count(), 1);
}

#[tokio::test]
async fn sse_probe_just_ends_after_the_hold() {
    let server = Server::start(Config { probe_hold: Duration::from_millis(200), ..Config::default() }).await;
    let response = reqwest::get(server.url("/realtime/sse?rt_conn=1&rt_probe=1")).await.unwrap();
    let mut reader = SseReader::new(response);
    let (kind, _, _) = parse_event(&reader.next_event().await);
    assert_eq!(kind, "hello");
    let body = tokio::time::timeout(LIMIT, reader.rest()).await.unwrap();
    assert!(body.lines().all(|line| line.is_empty() || line.starts_with(':')), "no event after the hello: {body:?}");
    wait_live(&server, 0).await;
    assert_eq!(server.state.probe_count(), 0);
}

#[tokio::test]
async fn poll_probe_answers_hello_at_once() {
    let server = Server::default().await;
    let frames = poll(&server, "room=p&rt_v=2&rt_conn=1&rt_probe=1").await;
    let [Frame::Hello(hello)] = &frames[..] else { panic!("expected only a hello, got {frames:?}") };
    check_probe_hello(hello, &server);
    assert!(server.state.registry.is_empty());
    assert_eq!(server.state.probe_count(), 0);
}

#[tokio::test]
async fn probes_are_limited_and_validated() {
    let server = Server::start(Config { max_probes: 1, ..Config::default() }).await;
    let mut held = WsClient::connect(&server.ws_url("rt_conn=1&rt_probe=1")).await;
    held.hello().await;
    match tokio_tungstenite::connect_async(server.ws_url("rt_conn=2&rt_probe=1")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    for path in ["/realtime/sse?rt_conn=2&rt_probe=1", "/realtime/poll?rt_conn=2&rt_probe=1"] {
        assert_eq!(reqwest::get(server.url(path)).await.unwrap().status(), 503, "{path}");
    }
    // Real sessions are not probes: they still connect.
    let mut session = WsClient::connect(&server.ws_url("rt_conn=3")).await;
    assert!(!session.hello().await.resumed);

    held.ws.close(None).await.unwrap();
    assert!(held.next().await.is_none());
    wait_live(&server, 1).await; // Only the real session is left.
    assert_eq!(poll(&server, "rt_conn=2&rt_probe=1").await.len(), 1);

    for path in ["/realtime/poll?rt_probe=yes", "/realtime/sse?rt_probe=2", "/realtime/poll?rt_probe=1&room=a%20b"] {
        assert_eq!(reqwest::get(server.url(path)).await.unwrap().status(), 400, "{path}");
    }
}

#[tokio::test]
async fn shutdown_closes_a_held_probe() {
    let server = Server::default().await;
    let mut probe = WsClient::connect(&server.ws_url("rt_conn=1&rt_probe=1")).await;
    probe.hello().await;
    wait_live(&server, 1).await;
    server.state.begin_shutdown();
    let Frame::Close(close) = probe.frame().await else { panic!("expected close") };
    assert_eq!(close.code, close_code::GOING_AWAY);
    wait_live(&server, 0).await;
}
