//! The proxy's modes and control API over real sockets, against a tiny axum upstream:
//! a WebSocket that greets then echoes at /realtime, an SSE stream at /realtime/sse that says
//! `data: hello` and then forwards what the test broadcasts until `__end__`, a poll, a POST,
//! a 10,000-byte body at /big and a header echo at /headers.
//!
//! Timeouts are upper bounds, except `QUIET`: "nothing arrives" can only be shown over a
//! window, and each such check comes after the upstream is known to have sent (a counter or
//! a positive control on the same path).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use fault_proxy::{Config, FaultProxy};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Semaphore};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

const BOUND: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(300);
const BIG_LEN: usize = 10_000;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Clone)]
struct Up {
    /// Upgrades that reached the upstream.
    ws_upgrades: Arc<AtomicUsize>,
    /// Greetings the upstream has written to its WebSocket.
    ws_hellos: Arc<AtomicUsize>,
    /// Plain HTTP requests (poll, send, big, headers, sse) that reached the upstream.
    requests: Arc<AtomicUsize>,
    sse_tx: broadcast::Sender<String>,
    /// Pushed to every upstream WebSocket as text.
    ws_push_tx: broadcast::Sender<String>,
    /// Pushes the upstream has written to its WebSockets.
    ws_pushes: Arc<AtomicUsize>,
    /// One permit per SSE stream that has subscribed to `sse_tx`.
    sse_started: Arc<Semaphore>,
}

async fn start_upstream() -> (SocketAddr, Up) {
    let up = Up {
        ws_upgrades: Arc::default(),
        ws_hellos: Arc::default(),
        requests: Arc::default(),
        sse_tx: broadcast::channel(64).0,
        ws_push_tx: broadcast::channel(64).0,
        ws_pushes: Arc::default(),
        sse_started: Arc::new(Semaphore::new(0)),
    };
    let app = Router::new()
        .route("/realtime", get(ws_handler))
        .route("/realtime/sse", get(sse_handler))
        .route("/realtime/poll", get(|State(up): State<Up>| async move { up.hit("poll-ok".to_owned()) }))
        .route("/realtime/send", post(|State(up): State<Up>, body: String| async move { up.hit(format!("got {body}")) }))
        .route("/big", get(|State(up): State<Up>| async move { up.hit(big_body()) }))
        .route(
            "/headers",
            get(|State(up): State<Up>, headers: HeaderMap| async move {
                let connection = headers.get("connection").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                up.hit(connection)
            }),
        )
        .with_state(up.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, up)
}

impl Up {
    fn hit(&self, body: String) -> String {
        self.requests.fetch_add(1, Ordering::SeqCst);
        body
    }
}

fn big_body() -> String {
    (0..BIG_LEN).map(|i| char::from(b'0' + (i % 10) as u8)).collect()
}

async fn ws_handler(State(up): State<Up>, ws: WebSocketUpgrade) -> Response {
    up.ws_upgrades.fetch_add(1, Ordering::SeqCst);
    ws.on_upgrade(move |socket| ws_echo(socket, up))
}

async fn ws_echo(mut socket: WebSocket, up: Up) {
    let mut pushes = up.ws_push_tx.subscribe();
    if socket.send(AxMessage::Text("hello".into())).await.is_err() {
        return;
    }
    up.ws_hellos.fetch_add(1, Ordering::SeqCst);
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(msg @ (AxMessage::Text(_) | AxMessage::Binary(_)))) => {
                    if socket.send(msg).await.is_err() {
                        return;
                    }
                }
                Some(Ok(AxMessage::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            Ok(text) = pushes.recv() => {
                if socket.send(AxMessage::Text(text.into())).await.is_err() {
                    return;
                }
                up.ws_pushes.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

async fn sse_handler(State(up): State<Up>) -> impl IntoResponse {
    up.requests.fetch_add(1, Ordering::SeqCst);
    let rx = up.sse_tx.subscribe();
    up.sse_started.add_permits(1);
    let first = futures_util::stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b"data: hello\n\n")) });
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(m) if m != "__end__" => Some((Ok::<_, Infallible>(Bytes::from(format!("data: {m}\n\n"))), rx)),
            _ => None,
        }
    });
    ([("content-type", "text/event-stream"), ("cache-control", "no-cache")], Body::from_stream(first.chain(rest)))
}

async fn setup() -> (FaultProxy, Up) {
    let (upstream, up) = start_upstream().await;
    let proxy = FaultProxy::start(Config::new(upstream)).await.unwrap();
    (proxy, up)
}

// ---- raw HTTP helpers -------------------------------------------------------------------

/// One request on its own connection, read to EOF (bounded).
async fn raw(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    timeout(BOUND, s.read_to_end(&mut out)).await.expect("response not finished in time").expect("read failed (RST?)");
    out
}

fn split_response(bytes: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

async fn control_with(proxy: &FaultProxy, method: &str, target: &str, extra_headers: &str) -> (u16, String, String) {
    let req = format!("{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n{extra_headers}\r\n");
    split_response(&raw(proxy.control_addr, &req).await)
}

/// A control call that must succeed; returns its JSON.
async fn control(proxy: &FaultProxy, method: &str, target: &str) -> Value {
    let (status, _, body) = control_with(proxy, method, target, "").await;
    assert_eq!(status, 200, "{method} {target}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// Opens a request and reads until `needle` has arrived (bounded); returns the stream.
async fn open_until(addr: SocketAddr, request: &str, needle: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    read_until(&mut s, needle).await;
    s
}

async fn read_until(s: &mut TcpStream, needle: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = timeout(BOUND, s.read(&mut buf)).await.unwrap_or_else(|_| panic!("no {needle:?} in time")).unwrap();
        assert!(n > 0, "EOF before {needle:?}; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Nothing arrives and the connection is not closed during `QUIET`.
async fn assert_quiet(s: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    match timeout(QUIET, s.read(&mut buf)).await {
        Err(_) => {}
        Ok(Ok(0)) => panic!("the connection was closed"),
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Ok(Err(e)) => panic!("read error: {e}"),
    }
}

/// The peer closes with FIN (a clean EOF, not a reset) within `BOUND`.
async fn assert_eof(s: &mut TcpStream) {
    let mut rest = Vec::new();
    timeout(BOUND, s.read_to_end(&mut rest)).await.expect("not closed in time").expect("reset instead of FIN");
}

const WS_UPGRADE: &str = "GET /realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

async fn ws_connect(proxy: &FaultProxy) -> Result<Ws, WsError> {
    timeout(BOUND, connect_async(format!("ws://{}/realtime", proxy.proxy_addr))).await.expect("handshake not finished in time").map(|(ws, _)| ws)
}

async fn ws_next_text(ws: &mut Ws) -> String {
    loop {
        let msg = timeout(BOUND, ws.next()).await.expect("no message in time").expect("stream ended").unwrap();
        if let Message::Text(t) = msg {
            return t.to_string();
        }
    }
}

/// An echoing, greeting WebSocket through the proxy.
async fn ws_open_and_greeted(proxy: &FaultProxy) -> Ws {
    let mut ws = ws_connect(proxy).await.unwrap();
    assert_eq!(ws_next_text(&mut ws).await, "hello");
    ws
}

async fn ws_assert_echo(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.unwrap();
    assert_eq!(ws_next_text(ws).await, text);
}

async fn ws_assert_quiet(ws: &mut Ws) {
    if let Ok(msg) = timeout(QUIET, ws.next()).await {
        panic!("expected silence, got {msg:?}");
    }
}

async fn ws_assert_closed(ws: &mut Ws) {
    loop {
        match timeout(BOUND, ws.next()).await.expect("not closed in time") {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
            Some(Ok(_)) => {}
        }
    }
}

/// Waits (bounded) until `f` holds; for counters that settle after a connection task ends.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    timeout(BOUND, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} did not happen in time"));
}

// ---- tests ------------------------------------------------------------------------------

#[tokio::test]
async fn pass_relays_every_class() {
    let (proxy, up) = setup().await;
    let (status, _, body) = split_response(&raw(proxy.proxy_addr, &get_req("/realtime/poll?room=a")).await);
    assert_eq!((status, body.as_str()), (200, "poll-ok"));
    let send = "POST /realtime/send HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc";
    let (status, _, body) = split_response(&raw(proxy.proxy_addr, send).await);
    assert_eq!((status, body.as_str()), (200, "got abc"));

    let mut ws = ws_open_and_greeted(&proxy).await;
    ws_assert_echo(&mut ws, "ping-1").await;
    ws.send(Message::Binary(vec![7u8; 70_000].into())).await.unwrap();
    let echoed = timeout(BOUND, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_data().len(), 70_000);

    // The event stream flows while the upstream keeps it open.
    let mut sse = open_until(proxy.proxy_addr, &get_req("/realtime/sse"), "data: hello\n\n").await;
    up.sse_tx.send("more".into()).unwrap();
    read_until(&mut sse, "data: more\n\n").await;

    let stats = proxy.stats();
    for (class, n) in [("websocket", 1), ("sse", 1), ("poll", 1), ("http", 1)] {
        assert_eq!(stats[class]["accepted"], n, "{class}: {stats}");
    }
    assert_eq!(stats["websocket"]["live"], 1);
    assert_eq!(stats["sse"]["live"], 1);
}

#[tokio::test]
async fn requests_go_upstream_with_connection_close() {
    let (proxy, _up) = setup().await;
    let req = "GET /headers HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n";
    // `raw` reads to EOF: the connection ends after one response although the client asked
    // for keep-alive.
    let (status, _, body) = split_response(&raw(proxy.proxy_addr, req).await);
    assert_eq!((status, body.as_str()), (200, "close"));
}

#[tokio::test]
async fn websocket_refuse_answers_503_without_contacting_upstream() {
    let (proxy, up) = setup().await;
    control(&proxy, "POST", "/mode?websocket=refuse").await;
    match ws_connect(&proxy).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 503),
        other => panic!("expected a 503, got {other:?}"),
    }
    assert_eq!(up.ws_upgrades.load(Ordering::SeqCst), 0);
    assert_eq!(proxy.stats()["websocket"]["refused"], 1);
}

#[tokio::test]
async fn websocket_hang_never_answers_and_keeps_the_socket_open() {
    let (proxy, up) = setup().await;
    control(&proxy, "POST", "/mode?websocket=hang").await;
    let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(WS_UPGRADE.as_bytes()).await.unwrap();
    eventually("the upgrade to be classified", || proxy.stats()["websocket"]["live"] == 1).await;
    assert_quiet(&mut s).await;
    assert_eq!(up.ws_upgrades.load(Ordering::SeqCst), 0);
    // Still open: /cut finds it and closes it.
    assert_eq!(control(&proxy, "POST", "/cut").await, json!({"cut": 1}));
    assert_eq!(proxy.stats()["websocket"]["cut"], 1);
    assert_eq!(proxy.stats()["websocket"]["accepted"], 1);
    assert_eof(&mut s).await;
}

#[tokio::test]
async fn websocket_silent_gives_101_then_no_frames() {
    let (proxy, up) = setup().await;
    control(&proxy, "POST", "/mode?websocket=silent").await;
    let mut ws = ws_connect(&proxy).await.expect("the 101 must come through");
    assert_eq!(up.ws_upgrades.load(Ordering::SeqCst), 1);
    // The upstream has sent its greeting; it must not arrive.
    eventually("the upstream greeting", || up.ws_hellos.load(Ordering::SeqCst) == 1).await;
    ws_assert_quiet(&mut ws).await;
    // A frame sent well after the 101 (not in the same segment) is dropped too.
    up.ws_push_tx.send("pushed".into()).unwrap();
    eventually("the upstream push", || up.ws_pushes.load(Ordering::SeqCst) == 1).await;
    ws_assert_quiet(&mut ws).await;
    // Nor is anything relayed upstream (no echo), and the socket stays open.
    ws.send(Message::Text("anyone?".into())).await.unwrap();
    ws_assert_quiet(&mut ws).await;
    assert_eq!(proxy.stats()["websocket"]["live"], 1);
}

#[tokio::test]
async fn sse_buffer_holds_the_whole_response_until_upstream_closes() {
    let (proxy, up) = setup().await;
    control(&proxy, "POST", "/mode?sse=buffer").await;
    let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(get_req("/realtime/sse").as_bytes()).await.unwrap();
    timeout(BOUND, up.sse_started.acquire()).await.expect("stream never reached upstream").unwrap().forget();
    up.sse_tx.send("one".into()).unwrap();
    // Neither the head nor any event while the stream is open.
    assert_quiet(&mut s).await;
    up.sse_tx.send("__end__".into()).unwrap();
    let mut all = Vec::new();
    timeout(BOUND, s.read_to_end(&mut all)).await.expect("not delivered in time").unwrap();
    let all = String::from_utf8_lossy(&all);
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
    let hello = all.find("data: hello\n\n").expect("hello missing");
    let one = all.find("data: one\n\n").expect("one missing");
    assert!(hello < one);
}

#[tokio::test]
async fn refuse_answers_503_for_sse_poll_and_http_without_contacting_upstream() {
    let (proxy, up) = setup().await;
    let modes = control(&proxy, "POST", "/mode?sse=refuse&poll=refuse&http=refuse").await;
    assert_eq!(modes, json!({"websocket": "pass", "sse": "refuse", "poll": "refuse", "http": "refuse", "cut_after_bytes": null}));
    for path in ["/realtime/sse", "/realtime/poll?room=x", "/realtime/publish?room=x"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nOrigin: http://127.0.0.1:9999\r\n\r\n");
        let (status, head, _) = split_response(&raw(proxy.proxy_addr, &req).await);
        assert_eq!(status, 503, "{path}");
        // Readable by a cross-origin test page.
        assert!(head.contains("Access-Control-Allow-Origin: http://127.0.0.1:9999"), "{head}");
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 0);
    let stats = proxy.stats();
    for class in ["sse", "poll", "http"] {
        assert_eq!(stats[class]["refused"], 1, "{class}");
    }
    // The WebSocket class is unaffected.
    ws_open_and_greeted(&proxy).await;
}

#[tokio::test]
async fn cut_after_bytes_closes_after_exactly_n_downstream_bytes() {
    let (proxy, up) = setup().await;
    // Created before the cut is set: never cut.
    let mut before = ws_open_and_greeted(&proxy).await;

    control(&proxy, "POST", "/mode?cut_after_bytes=1000").await;
    let cut = raw(proxy.proxy_addr, &get_req("/big")).await; // reads to a clean EOF
    assert_eq!(cut.len(), 1000);
    assert!(cut.starts_with(b"HTTP/1.1 200"));
    assert_eq!(proxy.stats()["http"]["cut"], 1);

    let long = "x".repeat(5000);
    ws_assert_echo(&mut before, &long).await;

    // 0: the request reaches upstream, no byte of the answer comes back.
    control(&proxy, "POST", "/mode?cut_after_bytes=0").await;
    let requests = up.requests.load(Ordering::SeqCst);
    let send = "POST /realtime/send HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
    assert_eq!(raw(proxy.proxy_addr, send).await, b"");
    assert_eq!(up.requests.load(Ordering::SeqCst), requests + 1);

    control(&proxy, "POST", "/mode?cut_after_bytes=none").await;
    let (status, _, body) = split_response(&raw(proxy.proxy_addr, &get_req("/big")).await);
    assert_eq!((status, body.len()), (200, BIG_LEN));
}

#[tokio::test]
async fn cut_after_bytes_cuts_a_websocket_mid_frame() {
    let (proxy, _up) = setup().await;
    // The 101 head, then 3 bytes of the 7-byte greeting frame (2 header bytes + "hello").
    let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(WS_UPGRADE.as_bytes()).await.unwrap();
    let whole = read_until(&mut s, "hello").await;
    let head_len = whole.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(whole.len(), head_len + 7);
    drop(s);

    control(&proxy, "POST", &format!("/mode?cut_after_bytes={}", head_len + 3)).await;
    let mut s = TcpStream::connect(proxy.proxy_addr).await.unwrap();
    s.write_all(WS_UPGRADE.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    timeout(BOUND, s.read_to_end(&mut got)).await.expect("not cut in time").expect("reset instead of FIN");
    assert_eq!(got, whole[..head_len + 3]);
}

#[tokio::test]
async fn control_cut_closes_live_connections() {
    let (proxy, _up) = setup().await;
    let mut ws = ws_open_and_greeted(&proxy).await;
    let mut sse = open_until(proxy.proxy_addr, &get_req("/realtime/sse"), "data: hello\n\n").await;
    assert_eq!(control(&proxy, "POST", "/cut").await, json!({"cut": 2}));
    assert_eof(&mut sse).await;
    ws_assert_closed(&mut ws).await;
    eventually("no live connections", || proxy.stats()["websocket"]["live"] == 0 && proxy.stats()["sse"]["live"] == 0).await;
    // A cut is not a mode: new connections pass.
    let mut ws = ws_open_and_greeted(&proxy).await;
    ws_assert_echo(&mut ws, "again").await;
}

#[tokio::test]
async fn blackhole_stops_relaying_without_closing_until_reset_connections() {
    let (proxy, up) = setup().await;
    let mut ws = ws_open_and_greeted(&proxy).await;
    let mut sse = open_until(proxy.proxy_addr, &get_req("/realtime/sse"), "data: hello\n\n").await;
    assert_eq!(control(&proxy, "POST", "/blackhole").await, json!({"blackholed": 2}));

    up.sse_tx.send("lost".into()).unwrap();
    assert_quiet(&mut sse).await;
    ws.send(Message::Text("into the void".into())).await.unwrap();
    ws_assert_quiet(&mut ws).await;
    let stats = proxy.stats();
    assert_eq!((stats["sse"]["blackholed"].clone(), stats["sse"]["live"].clone()), (json!(1), json!(1)));
    assert_eq!(stats["websocket"]["blackholed"], 1);

    // New connections are unaffected.
    let mut ws2 = ws_open_and_greeted(&proxy).await;
    ws_assert_echo(&mut ws2, "fine").await;
    let mut sse2 = open_until(proxy.proxy_addr, &get_req("/realtime/sse"), "data: hello\n\n").await;
    up.sse_tx.send("fresh".into()).unwrap();
    read_until(&mut sse2, "data: fresh\n\n").await;

    assert_eq!(control(&proxy, "POST", "/reset-connections").await, json!({"released": 2}));
    assert_eof(&mut sse).await;
    ws_assert_closed(&mut ws).await;
    ws_assert_echo(&mut ws2, "still fine").await;
}

#[tokio::test]
async fn mode_switches_apply_to_new_connections_only() {
    let (proxy, _up) = setup().await;
    let mut a = ws_open_and_greeted(&proxy).await;
    let modes = control(&proxy, "POST", "/mode?websocket=refuse").await;
    assert_eq!(modes["websocket"], "refuse");
    ws_assert_echo(&mut a, "a still works").await;
    assert!(matches!(ws_connect(&proxy).await, Err(WsError::Http(r)) if r.status() == 503));
    let modes = control(&proxy, "POST", "/reset").await;
    assert_eq!(modes, json!({"websocket": "pass", "sse": "pass", "poll": "pass", "http": "pass", "cut_after_bytes": null}));
    let mut c = ws_open_and_greeted(&proxy).await;
    ws_assert_echo(&mut c, "c works").await;
    ws_assert_echo(&mut a, "a too").await;
}

#[tokio::test]
async fn control_mode_api_validates_and_reports() {
    let (proxy, _up) = setup().await;
    let modes = control(&proxy, "POST", "/mode?websocket=silent&cut_after_bytes=500").await;
    assert_eq!(modes, json!({"websocket": "silent", "sse": "pass", "poll": "pass", "http": "pass", "cut_after_bytes": 500}));
    let modes = control(&proxy, "POST", "/mode?sse=buffer").await;
    assert_eq!((modes["websocket"].as_str(), modes["sse"].as_str()), (Some("silent"), Some("buffer")));

    for bad in ["/mode?sse=hang", "/mode?nope=1", "/mode?cut_after_bytes=lots", "/mode?poll=refuse&http=bogus"] {
        let (status, _, body) = control_with(&proxy, "POST", bad, "").await;
        assert_eq!(status, 400, "{bad}");
        assert!(!body.is_empty());
    }
    // Nothing changed, not even the valid half of the last one.
    let modes = control(&proxy, "GET", "/mode").await;
    assert_eq!(modes, json!({"websocket": "silent", "sse": "buffer", "poll": "pass", "http": "pass", "cut_after_bytes": 500}));
    assert_eq!(control(&proxy, "POST", "/mode?cut_after_bytes=none").await["cut_after_bytes"], Value::Null);

    assert_eq!(control_with(&proxy, "GET", "/reset", "").await.0, 405);
    assert_eq!(control_with(&proxy, "POST", "/nothing", "").await.0, 404);
    let stats = control(&proxy, "GET", "/stats").await;
    for class in ["websocket", "sse", "poll", "http"] {
        for counter in ["accepted", "refused", "cut", "blackholed", "live"] {
            assert!(stats[class][counter].is_u64(), "{class}.{counter} in {stats}");
        }
    }
}

#[tokio::test]
async fn control_answers_cors_for_loopback_origins_only() {
    let (proxy, _up) = setup().await;
    let preflight = "Origin: http://127.0.0.1:4567\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n";
    let (status, head, _) = control_with(&proxy, "OPTIONS", "/mode?websocket=refuse", preflight).await;
    assert_eq!(status, 204);
    assert!(head.contains("Access-Control-Allow-Origin: http://127.0.0.1:4567"), "{head}");
    assert!(head.contains("Access-Control-Allow-Methods: POST, GET"), "{head}");
    assert!(head.contains("Access-Control-Allow-Headers: content-type"), "{head}");
    // A preflight changes nothing.
    assert_eq!(control(&proxy, "GET", "/mode").await["websocket"], "pass");

    let (status, head, _) = control_with(&proxy, "POST", "/reset", "Origin: http://localhost:9\r\n").await;
    assert_eq!(status, 200);
    assert!(head.contains("Access-Control-Allow-Origin: http://localhost:9"), "{head}");

    let (status, head, _) = control_with(&proxy, "POST", "/mode?websocket=refuse", "Origin: http://example.com\r\n").await;
    assert_eq!(status, 403);
    assert!(!head.contains("Access-Control-Allow-Origin"), "{head}");
    assert_eq!(control(&proxy, "GET", "/mode").await["websocket"], "pass");
}

#[tokio::test]
async fn bad_request_head_gets_400() {
    let (proxy, up) = setup().await;
    let (status, _, _) = split_response(&raw(proxy.proxy_addr, "\u{1}garbage\r\n\r\n").await);
    assert_eq!(status, 400);
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    let (status, _, _) = split_response(&raw(proxy.proxy_addr, &huge).await);
    assert_eq!(status, 431);
    assert_eq!(proxy.stats()["bad_requests"], 2);
    assert_eq!(up.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn live_connections_are_bounded() {
    let (upstream, _up) = start_upstream().await;
    let proxy = FaultProxy::start(Config { max_live_connections: 1, ..Config::new(upstream) }).await.unwrap();
    let mut ws = ws_open_and_greeted(&proxy).await;
    let (status, _, body) = split_response(&raw(proxy.proxy_addr, &get_req("/realtime/poll")).await);
    assert_eq!(status, 503, "{body}");
    assert_eq!(proxy.stats()["over_limit"], 1);
    ws.close(None).await.unwrap();
    ws_assert_closed(&mut ws).await;
    // The browser→server half stays open until the client lets go of its socket.
    drop(ws);
    eventually("the slot to be freed", || proxy.stats()["websocket"]["live"] == 0).await;
    let (status, _, _) = split_response(&raw(proxy.proxy_addr, &get_req("/realtime/poll")).await);
    assert_eq!(status, 200);
}

#[tokio::test]
async fn non_loopback_addresses_are_rejected() {
    let (upstream, _up) = start_upstream().await;
    let config = Config { listen: "0.0.0.0:0".parse().unwrap(), ..Config::new(upstream) };
    assert!(FaultProxy::start(config).await.is_err());
}

