//! `POST /realtime/kick` (`--allow-kick`, test and demo only) over real sockets: the current
//! transport breaks off without a goodbye (a WebSocket's TCP connection ends without a close
//! frame, an SSE stream just ends, a held poll is aborted) and the session resumes with every
//! message published meanwhile. Off by default (403); 404 for an unknown session. Every kick
//! here carries the admin token (tests/admin.rs: what happens without it).

mod common;

use common::{parse_event, poll, Server, SseReader, WsClient, LIMIT};
use futures_util::StreamExt;
use realtime_client::core::wire::{self, Frame, Hello, Message, Payload};
use realtime_server::admin::AdminConfig;
use realtime_server::Config;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::Error as WsError;

/// Kick is an admin endpoint: it needs this token as well as `--allow-kick`.
const ADMIN_TOKEN: &str = "kick-test-admin-token";

fn kick_config() -> Config {
    Config { allow_kick: true, admin: AdminConfig::with_token(ADMIN_TOKEN).expect("a valid admin token"), ..Config::default() }
}

async fn kick(server: &Server, query: &str, origin: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(server.url(&format!("/realtime/kick?{query}")))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    tokio::time::timeout(LIMIT, request.send()).await.expect("kick answered").unwrap()
}

async fn publish_text(server: &Server, room: &str, text: &'static str) {
    let response = server.publish(&format!("room={room}"), "text/plain", text).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.text().await.unwrap(), "1", "the detached session is still in the room");
}

fn resume_query(room: &str, conn: u32, hello: &Hello, last: u64) -> String {
    format!("room={room}&rt_v=2&rt_conn={conn}&rt_sid={}&rt_key={}&rt_last={last}", hello.session_id, hello.secret)
}

fn text(message: &Message) -> &str {
    match &message.payload {
        Payload::Text(text) => text,
        other => panic!("expected text, got {other:?}"),
    }
}

/// Waits until the number of live transports is `count`.
async fn wait_live(server: &Server, count: usize) {
    let mut live = server.state.live_transports();
    tokio::time::timeout(LIMIT, live.wait_for(|live| *live == count))
        .await
        .unwrap_or_else(|_| panic!("live transports never became {count}"))
        .unwrap();
}

#[tokio::test]
async fn kicked_websocket_ends_without_close_frame_and_resumes_with_what_was_published() {
    let server = Server::start(kick_config()).await;
    let mut client = WsClient::connect(&server.ws_url("room=kick&rt_v=2&rt_conn=1")).await;
    let hello = client.hello().await;
    assert!(!hello.resumed);
    publish_text(&server, "kick", "before").await;
    let first = client.message().await;
    assert_eq!((first.seq, text(&first)), (2, "before"));

    let response = kick(&server, &format!("sid={}", hello.session_id), None).await;
    assert_eq!(response.status(), 204);

    // The very next thing on the socket is its end: no close frame, no data (tungstenite reports
    // a TCP end without a closing handshake as this protocol error).
    let end = tokio::time::timeout(LIMIT, client.ws.next()).await.expect("the kicked socket must end");
    match end {
        Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {}
        other => panic!("expected the connection to end without a close frame, got {other:?}"),
    }
    wait_live(&server, 0).await;

    publish_text(&server, "kick", "during 1").await;
    publish_text(&server, "kick", "during 2").await;
    let mut resumed = WsClient::connect(&server.ws_url(&resume_query("kick", 2, &hello, 2))).await;
    let again = resumed.hello().await;
    assert!(again.resumed, "the kicked session must stay resumable");
    assert_eq!(again.session_id, hello.session_id);
    let second = resumed.message().await;
    let third = resumed.message().await;
    assert_eq!((second.seq, text(&second)), (3, "during 1"));
    assert_eq!((third.seq, text(&third)), (4, "during 2"));
}

#[tokio::test]
async fn kicked_sse_stream_ends_and_resumes() {
    let server = Server::start(kick_config()).await;
    let response = reqwest::get(server.url("/realtime/sse?room=kick&rt_v=2&rt_conn=1")).await.unwrap();
    let mut reader = SseReader::new(response);
    let (kind, _, data) = parse_event(&reader.next_event().await);
    assert_eq!(kind, "hello");
    let Frame::Hello(hello) = wire::decode(data.as_bytes(), 1 << 20).unwrap().0 else { panic!("expected hello") };
    assert_eq!(parse_event(&reader.next_event().await).0, "subscribed", "the room channel's s=1");

    assert_eq!(kick(&server, &format!("sid={}", hello.session_id), None).await.status(), 204);
    let rest = tokio::time::timeout(LIMIT, reader.rest()).await.expect("the kicked stream must end");
    assert!(rest.lines().all(|line| line.is_empty() || line.starts_with(':')), "events after the kick: {rest:?}");
    wait_live(&server, 0).await;

    publish_text(&server, "kick", "during").await;
    let frames = poll(&server, &resume_query("kick", 2, &hello, 0)).await;
    match frames.as_slice() {
        [Frame::Hello(again), Frame::Message(message)] => {
            assert!(again.resumed);
            assert_eq!((message.seq, text(message)), (2, "during"));
        }
        other => panic!("expected hello (resumed) and the message, got {other:?}"),
    }
}

#[tokio::test]
async fn kicked_poll_is_aborted_and_resumes() {
    let server = Server::start(kick_config()).await;
    let frames = poll(&server, "room=kick&rt_v=2&rt_conn=1").await;
    let [Frame::Hello(hello)] = frames.as_slice() else { panic!("expected a hello, got {frames:?}") };
    let hello = hello.clone();

    // A held poll on the attached connection; the kick must break it, not answer it.
    let held_url = server.url(&format!("/realtime/poll?{}", resume_query("kick", 1, &hello, 1)));
    let held = tokio::spawn(async move {
        let response = reqwest::get(held_url).await?;
        response.bytes().await
    });
    wait_live(&server, 1).await;
    assert_eq!(kick(&server, &format!("sid={}", hello.session_id), None).await.status(), 204);
    let outcome = tokio::time::timeout(LIMIT, held).await.expect("the held poll must end").unwrap();
    assert!(outcome.is_err(), "a kicked poll must fail like a broken network, got {outcome:?}");

    publish_text(&server, "kick", "during").await;
    let frames = poll(&server, &resume_query("kick", 2, &hello, 0)).await;
    match frames.as_slice() {
        [Frame::Hello(again), Frame::Message(message)] => {
            assert!(again.resumed);
            assert_eq!((message.seq, text(message)), (2, "during"));
        }
        other => panic!("expected hello (resumed) and the message, got {other:?}"),
    }
}

#[tokio::test]
async fn kick_is_off_by_default() {
    // Even with the admin token: kick is its own switch.
    let server = Server::start(Config { admin: AdminConfig::with_token(ADMIN_TOKEN).expect("a valid admin token"), ..Config::default() }).await;
    let mut client = WsClient::connect(&server.ws_url("room=kick&rt_v=2&rt_conn=1")).await;
    let hello = client.hello().await;
    let response = kick(&server, &format!("sid={}", hello.session_id), None).await;
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("--allow-kick"));
    // Still connected: a message still arrives.
    publish_text(&server, "kick", "still here").await;
    assert_eq!(text(&client.message().await), "still here");
}

#[tokio::test]
async fn kick_answers_for_unknown_missing_and_detached_sessions() {
    let server = Server::start(kick_config()).await;
    assert_eq!(kick(&server, "sid=AAAAAAAAAAAAAAAAAAAAAA", None).await.status(), 404);
    assert_eq!(kick(&server, "", None).await.status(), 400);

    let mut client = WsClient::connect(&server.ws_url("room=kick&rt_v=2&rt_conn=1")).await;
    let hello = client.hello().await;
    assert_eq!(kick(&server, &format!("sid={}", hello.session_id), None).await.status(), 204);
    wait_live(&server, 0).await;
    // Kicked already: nothing is attached to break off, but the session is still there.
    assert_eq!(kick(&server, &format!("sid={}", hello.session_id), None).await.status(), 409);
}

#[tokio::test]
async fn kick_follows_the_origin_rules() {
    let config = Config { allowed_origins: vec!["https://app.example".into()], ..kick_config() };
    let server = Server::start(config).await;
    let mut client = WsClient::connect(&server.ws_url("room=kick&rt_v=2&rt_conn=1")).await;
    let hello = client.hello().await;
    let query = format!("sid={}", hello.session_id);
    assert_eq!(kick(&server, &query, Some("https://evil.example")).await.status(), 403);
    let response = kick(&server, &query, Some("https://app.example")).await;
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["access-control-allow-origin"], "https://app.example");
}
