//! A client on long polling upgrades to WebSocket (the reported "migration resets the session"):
//! it polls, its background probe (`rt_probe=1`) proves the WebSocket rung, and a migrating
//! WebSocket resumes the session while the poll connection is still attached, with a poll held.
//! These are the server's v2 paths (the session in the URL); the client's own `Endpoint` speaks
//! v3 since issue 14 (no secret in any URL), so the v2 URLs are built here, as the v2 client
//! built them, until v2 is removed from the server.
//!
//! The migrating WebSocket's URL carries the `rt_last` delivered when it was opened; the poll
//! connection stays active until the new hello and keeps polling, and each poll's `rt_last` acks
//! what was delivered since. So the server can see a poll ack *newer* than the resume's
//! `rt_last`. That is not a gap (the client has everything it acked), and the resume must
//! succeed with the same session, nothing lost or doubled.

mod common;

use common::{poll, Server, WsClient, LIMIT};
use realtime_client::core::endpoint::TransportKind;
use realtime_client::core::wire::{self, close_code, Frame, Hello, Message, Payload};

const ROOM: &str = "up";

/// What a v2 connect URL carried.
#[derive(Clone, Copy)]
struct ConnectParams<'a> {
    conn: u32,
    resume: Option<(&'a str, &'a str, u64)>,
    probe: bool,
}

/// The v2 client's URLs: `http://host/realtime[/poll]?room=…&rt_v=2&rt_conn=N[&rt_sid&rt_key&rt_last]`.
struct Endpoint {
    http: String,
}

impl Endpoint {
    fn connect_url(&self, kind: TransportKind, params: ConnectParams<'_>) -> String {
        let (location, query) = self.http.split_once('?').unwrap();
        let mut url = match kind {
            TransportKind::WebSocket => format!("{}?{query}", location.replacen("http://", "ws://", 1)),
            TransportKind::Sse => format!("{location}/sse?{query}"),
            TransportKind::LongPolling => format!("{location}/poll?{query}"),
        };
        url.push_str(&format!("&rt_v=2&rt_conn={}", params.conn));
        if let Some((sid, key, last)) = params.resume {
            url.push_str(&format!("&rt_sid={sid}&rt_key={key}&rt_last={last}"));
        }
        if params.probe {
            url.push_str("&rt_probe=1");
        }
        url
    }

    fn poll_url(&self, conn: u32, sid: &str, key: &str, last: u64) -> String {
        self.connect_url(TransportKind::LongPolling, ConnectParams { conn, resume: Some((sid, key, last)), probe: false })
    }
}

fn endpoint(server: &Server) -> Endpoint {
    Endpoint { http: server.url(&format!("/realtime?room={ROOM}")) }
}

/// The query string of a client-built URL (the helpers add scheme, host and path themselves).
fn query_of(url: &str) -> &str {
    url.split_once('?').map(|(_, query)| query).unwrap()
}

fn text(frame: &Frame) -> (u64, &str) {
    match frame {
        Frame::Message(Message { seq, payload: Payload::Text(text), .. })
        | Frame::ChannelMessage(wire::ChannelMessage { message: Message { seq, payload: Payload::Text(text), .. }, .. }) => (*seq, text),
        other => panic!("expected a text msg, got {other:?}"),
    }
}

async fn publish(server: &Server, body: &'static str) {
    let response = server.publish(&format!("room={ROOM}"), "text/plain", body).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.text().await.unwrap(), "1", "one session in the room");
}

async fn wait_live(server: &Server, count: usize) {
    let mut live = server.state.live_transports();
    tokio::time::timeout(LIMIT, live.wait_for(|live| *live == count))
        .await
        .unwrap_or_else(|_| panic!("live transports never became {count}"))
        .unwrap();
}

/// A poll on connection 1, sent now; its answer (decoded) when the task ends.
fn spawn_poll(endpoint: &Endpoint, hello: &Hello, last: u64) -> tokio::task::JoinHandle<Vec<Frame>> {
    let url = endpoint.poll_url(1, &hello.session_id, &hello.secret, last);
    tokio::spawn(async move {
        let body = reqwest::get(url).await.unwrap().bytes().await.unwrap();
        wire::decode_all(&body, 1 << 20).unwrap()
    })
}

/// A poll on connection 1 that the server holds (no other poll may be outstanding).
async fn held_poll(server: &Server, endpoint: &Endpoint, hello: &Hello, last: u64) -> tokio::task::JoinHandle<Vec<Frame>> {
    assert_eq!(*server.state.live_transports().borrow(), 0, "another poll is still outstanding");
    let held = spawn_poll(endpoint, hello, last);
    wait_live(server, 1).await;
    held
}

async fn answer(poll: tokio::task::JoinHandle<Vec<Frame>>) -> Vec<Frame> {
    tokio::time::timeout(LIMIT, poll).await.expect("the poll must be answered").unwrap()
}

/// First poll (fresh session), two msgs, the poll that delivers them, then the ack poll, held.
async fn polling_session(server: &Server, endpoint: &Endpoint) -> (Hello, tokio::task::JoinHandle<Vec<Frame>>) {
    let fresh = endpoint.connect_url(TransportKind::LongPolling, ConnectParams { conn: 1, resume: None, probe: false });
    let frames = poll(server, query_of(&fresh)).await;
    let [Frame::Hello(hello)] = &frames[..] else { panic!("expected the hello alone, got {frames:?}") };
    assert!(!hello.resumed);
    let hello = hello.clone();
    publish(server, "one").await;
    publish(server, "two").await;
    let frames = poll(server, query_of(&endpoint.poll_url(1, &hello.session_id, &hello.secret, 0))).await;
    assert_eq!(frames.iter().map(text).collect::<Vec<_>>(), [(2, "one"), (3, "two")]);
    let held = held_poll(server, endpoint, &hello, 3).await; // acks 1-2
    (hello, held)
}

/// The background probe of the WebSocket rung: a hello of no session, then closed.
async fn probe_websocket(server: &Server, endpoint: &Endpoint) {
    let url = endpoint.connect_url(TransportKind::WebSocket, ConnectParams { conn: 2, resume: None, probe: true });
    let mut probe = WsClient::connect(&url).await;
    assert!(!probe.hello().await.resumed);
    probe.ws.close(None).await.unwrap();
    assert!(probe.next().await.is_none());
    assert_eq!(server.state.registry.len(), 1, "a probe creates no session");
}

fn migrating_url(endpoint: &Endpoint, hello: &Hello, last_delivered: u64) -> String {
    let resume = Some((hello.session_id.as_str(), hello.secret.as_str(), last_delivered));
    endpoint.connect_url(TransportKind::WebSocket, ConnectParams { conn: 3, resume, probe: false })
}

fn assert_replaced(frames: &[Frame]) {
    assert!(matches!(frames, [Frame::Close(close)] if close.code == close_code::REPLACED), "expected close 4004, got {frames:?}");
}

#[tokio::test]
async fn websocket_resumes_a_session_attached_over_long_polling_with_a_held_poll() {
    let server = Server::default().await;
    let endpoint = endpoint(&server);
    let (hello, held) = polling_session(&server, &endpoint).await;
    probe_websocket(&server, &endpoint).await;

    let url = migrating_url(&endpoint, &hello, 3);
    assert!(url.contains("&rt_v=2&rt_conn=3&rt_sid=") && url.contains("&rt_last=3"), "{url}");
    let mut ws = WsClient::connect(&url).await;
    let resumed = ws.hello().await;
    assert!(resumed.resumed, "the WebSocket must resume the polling session");
    assert_eq!(resumed.session_id, hello.session_id);
    assert_replaced(&answer(held).await);
    assert!(ws.sync(1).await.is_empty(), "1-2 were acked: nothing to replay");
    publish(&server, "three").await;
    assert_eq!(text(&Frame::Message(ws.message().await)), (4, "three"));
    assert!(ws.sync(2).await.is_empty(), "nothing doubled");
    assert_eq!(server.state.registry.len(), 1, "still one session");
}

#[tokio::test]
async fn websocket_resumes_when_the_poll_acked_past_its_rt_last_during_the_handshake() {
    let server = Server::default().await;
    let endpoint = endpoint(&server);
    let (hello, held) = polling_session(&server, &endpoint).await;
    probe_websocket(&server, &endpoint).await;

    // The probe proved the rung: the client opens the migrating WebSocket now, with rt_last=2.
    let url = migrating_url(&endpoint, &hello, 3);
    // While its handshake is on the way, msg 3 answers the held poll, the client delivers it, and
    // (the poll connection is still the active one) polls again with rt_last=3: an ack of 3.
    publish(&server, "three").await;
    assert_eq!(answer(held).await.iter().map(text).collect::<Vec<_>>(), [(4, "three")]);
    let held = held_poll(&server, &endpoint, &hello, 4).await;
    // Now the upgrade request reaches the server, with the rt_last of its URL.
    let mut ws = WsClient::connect(&url).await;
    let resumed = ws.hello().await;
    assert!(resumed.resumed, "an rt_last below the client's own later ack is no gap: resume, not a fresh session");
    assert_eq!(resumed.session_id, hello.session_id);
    assert_replaced(&answer(held).await);
    // The client has 1-3; 3 was acked, so nothing is replayed, and the next msg comes once.
    assert!(ws.sync(1).await.is_empty(), "3 was acked by the poll: no replay");
    publish(&server, "four").await;
    assert_eq!(text(&Frame::Message(ws.message().await)), (5, "four"));
    assert!(ws.sync(2).await.is_empty(), "nothing doubled");
    assert_eq!(server.state.registry.len(), 1, "still one session");
}

#[tokio::test]
async fn a_late_poll_below_an_earlier_ack_does_not_end_the_session() {
    // The same rule on a continuing poll: a poll request that reaches the server after a newer
    // one (say an aborted one on another TCP connection) carries an older rt_last. The client
    // has everything up to its newest ack, so this is no gap either.
    let server = Server::default().await;
    let endpoint = endpoint(&server);
    let (hello, held) = polling_session(&server, &endpoint).await; // acked 2, held
    publish(&server, "three").await;
    assert_eq!(answer(held).await.iter().map(text).collect::<Vec<_>>(), [(4, "three")]);
    let current = held_poll(&server, &endpoint, &hello, 4).await; // acks 3
    let late = spawn_poll(&endpoint, &hello, 3); // the late one, rt_last=2
    // The late poll supersedes the current one (answered empty), as any newer poll would.
    let superseded = answer(current).await;
    assert!(superseded.is_empty(), "the session must survive a late poll; the held poll got {superseded:?}");
    // The client polls again (rt_last=3), which supersedes the late one; the session is alive.
    let current = spawn_poll(&endpoint, &hello, 4);
    let late = answer(late).await;
    assert!(late.is_empty(), "the late poll is superseded, not closed: {late:?}");
    publish(&server, "four").await;
    assert_eq!(answer(current).await.iter().map(text).collect::<Vec<_>>(), [(5, "four")]);
    assert_eq!(server.state.registry.len(), 1, "still one session");
}
