//! The connection edge under attack, each attack at a bounded size through a real listener
//! (`edge::serve` on 127.0.0.1:0, or the binary under a lowered descriptor limit): slowloris,
//! idle sockets and keep-alives, a client that never reads, one IP at its connection cap, idle
//! sockets past `RLIMIT_NOFILE`, silent TLS sockets, DNS rebinding (Host), a foreign origin,
//! path tricks on the static directory, and a panicking handler. Each test asserts the safe
//! outcome and that a legitimate client is still served.
#![cfg(unix)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use realtime_client::core::wire::{self, Frame, Retry};
use realtime_server::metrics::LimitKind;
use realtime_server::{app, edge, AppState, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use common::LIMIT;

/// A server on `edge::serve` (the binary's accept loop) serving `router`.
async fn start_router(state: Arc<AppState>, router: Router, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(edge::serve(listener, tls, router, state, std::future::pending(), Duration::from_secs(1)));
    addr
}

async fn start(config: Config) -> (SocketAddr, Arc<AppState>) {
    let state = AppState::new(config);
    let addr = start_router(state.clone(), app(state.clone()), None).await;
    (addr, state)
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.0/8 is all loopback).
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads until EOF or error; how long that took, or None if the socket stayed open past `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// One HTTP/1.1 request on a fresh socket from `from`; the status and the whole response text.
async fn raw_request(from: &str, addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = connect_from(from, addr).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(LIMIT, stream.read_to_end(&mut response)).await.expect("response within the limit");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, text)
}

fn get_request(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// Polls `condition` every 20 ms until it holds or `LIMIT` passes.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn edge_config(edit: impl FnOnce(&mut edge::EdgeConfig)) -> Config {
    let mut config = Config::default();
    edit(&mut config.edge);
    config
}

#[tokio::test]
async fn slowloris_is_closed_by_the_header_timeout() {
    let (addr, state) = start(edge_config(|edge| {
        edge.header_timeout = Duration::from_millis(800);
        edge.idle_timeout = Duration::from_secs(30);
    }))
    .await;
    let mut stream = connect_from("127.0.0.1", addr).await;
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // One header line every 300 ms (10 s in the attack; scaled to the timeout).
    let started = Instant::now();
    let mut closed = false;
    for line in 0..20 {
        if stream.write_all(format!("X-Slow-{line}: 1\r\n").as_bytes()).await.is_err() {
            closed = true;
            break;
        }
        if closed_within(&mut stream, Duration::from_millis(300)).await.is_some() {
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(closed, "the slowloris socket was still open after {took:?}");
    assert!(took < Duration::from_secs(3), "closed after {took:?}, timeout 800 ms");
    assert!(state.metrics.trips(LimitKind::header_timeout) >= 1);
}

#[tokio::test]
async fn idle_sockets_and_keep_alives_are_closed_but_streams_are_not() {
    let (addr, state) = start(edge_config(|edge| edge.idle_timeout = Duration::from_millis(700))).await;
    // A fresh socket that sends nothing.
    let mut silent = connect_from("127.0.0.1", addr).await;
    let took = closed_within(&mut silent, Duration::from_secs(5)).await.expect("silent socket closed");
    assert!(took >= Duration::from_millis(600) && took < Duration::from_secs(3), "{took:?}");
    // An idle keep-alive after a full response.
    let mut keep_alive = connect_from("127.0.0.1", addr).await;
    keep_alive.write_all(b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut first = [0u8; 12];
    keep_alive.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let took = closed_within(&mut keep_alive, Duration::from_secs(5)).await.expect("idle keep-alive closed");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(state.metrics.trips(LimitKind::idle_timeout) >= 2);
    // An event stream with nothing to say for 2 s (three idle timeouts) is not idle.
    let mut stream = connect_from("127.0.0.1", addr).await;
    stream.write_all(get_request("/realtime/sse?rt_conn=1", "127.0.0.1").as_bytes()).await.unwrap();
    assert_eq!(closed_within(&mut stream, Duration::from_secs(2)).await, None, "the SSE stream was cut as idle");
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_by_the_write_deadline() {
    let (addr, state) = start(edge_config(|edge| {
        edge.write_timeout = Duration::from_millis(500);
        edge.idle_timeout = Duration::from_secs(30);
    }))
    .await;
    // A small receive buffer: the server's writes stall after a few hundred KB, not megabytes.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(addr).await.unwrap();
    reader.write_all(get_request("/realtime/sse?rt_conn=1&room=w", "127.0.0.1").as_bytes()).await.unwrap();
    eventually("the stream attached", || state.metrics.connections.get() == 1 && state.registry.len() == 1).await;
    let client = reqwest::Client::new();
    let payload = "x".repeat(128 * 1024);
    let url = format!("http://{addr}/realtime/publish?room=w");
    let deadline = Instant::now() + LIMIT;
    // At most 48 × 128 KiB (6 MiB) published, stopping as soon as the deadline cut the stream.
    for _ in 0..48 {
        if state.metrics.trips(LimitKind::write_timeout) > 0 {
            break;
        }
        let response = client.post(&url).header("content-type", "text/plain").body(payload.clone()).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while state.metrics.trips(LimitKind::write_timeout) == 0 {
        assert!(Instant::now() < deadline, "no write timeout");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its connection (and the buffers behind it) is gone; the server serves others.
    eventually("the stalled connection dropped", || state.metrics.connections.get() == 0).await;
    let (status, _) = raw_request("127.0.0.2", addr, &get_request("/", "127.0.0.1")).await;
    assert_eq!(status, 200);
    drop(reader);
}

#[tokio::test]
async fn one_ip_at_its_connection_cap_does_not_lock_out_another() {
    let (addr, state) = start(edge_config(|edge| {
        edge.max_connections_per_ip = 20;
        edge.idle_timeout = Duration::from_secs(30);
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from("127.0.0.1", addr).await);
    }
    eventually("20 connections held", || state.metrics.connections.get() == 20).await;
    let mut over = connect_from("127.0.0.1", addr).await;
    let took = closed_within(&mut over, Duration::from_secs(2)).await.expect("the 21st socket is closed");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(state.metrics.trips(LimitKind::connections_per_ip) >= 1);
    let started = Instant::now();
    let (status, _) = raw_request("127.0.0.2", addr, &get_request("/", "127.0.0.1")).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    drop(held);
}

/// The binary with `RLIMIT_NOFILE` set to 1,024 (soft and hard), killed on drop.
struct LimitedServer {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_limited(args: &[&str]) -> LimitedServer {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_realtime-server"));
    command.args(["--listen", "127.0.0.1:0"]).args(args).env("RUST_LOG", "error").stdout(std::process::Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on http://").expect("listening line").parse().unwrap();
    LimitedServer { child, addr }
}

#[tokio::test]
async fn idle_sockets_past_the_descriptor_limit_do_not_lock_out_a_client() {
    // The attack: 1,074 idle sockets against `ulimit -n 1024`. The per-IP cap is lifted so
    // the total cap (1,024 minus the reserve) and its idle eviction are what holds.
    let server = start_limited(&["--max-connections-per-ip", "100000", "--idle-timeout-ms", "60000"]);
    let mut idle = Vec::new();
    for _ in 0..1074 {
        match TcpStream::connect(server.addr).await {
            Ok(stream) => idle.push(stream),
            Err(error) => panic!("connect failed: {error}"),
        }
    }
    for attempt in 0..3 {
        let started = Instant::now();
        let (status, _) = raw_request("127.0.0.2", server.addr, &get_request("/", "127.0.0.1")).await;
        assert_eq!(status, 200, "attempt {attempt}");
        assert!(started.elapsed() < Duration::from_secs(2), "attempt {attempt}: {:?}", started.elapsed());
    }
    drop(idle);
}

mod insecure {
    use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio_rustls::rustls::{DigitallySignedStruct, Error, SignatureScheme};

    /// Accepts any certificate: the test measures handshake latency, not trust.
    #[derive(Debug)]
    pub struct AnyCertificate;

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            tokio_rustls::rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
        }
    }
}

#[tokio::test]
async fn silent_tls_sockets_from_one_ip_do_not_delay_another_handshake() {
    use tokio_rustls::rustls::{self, ClientConfig};
    let state = AppState::new(edge_config(|edge| edge.idle_timeout = Duration::from_secs(30)));
    let identity = realtime_server::tls::Identity::self_signed().unwrap();
    let acceptor = realtime_server::tls::acceptor(identity.server_config().unwrap());
    let addr = start_router(state.clone(), app(state.clone()), Some(acceptor)).await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(connect_from("127.0.0.1", addr).await);
    }
    eventually("handshake slots tripped", || state.metrics.trips(LimitKind::handshake_slots) > 0).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(insecure::AnyCertificate))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let started = Instant::now();
    let tcp = connect_from("127.0.0.2", addr).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(LIMIT, connector.connect(name, tcp)).await.unwrap().unwrap();
    let handshake = started.elapsed();
    assert!(handshake < Duration::from_secs(1), "handshake took {handshake:?} beside 300 silent sockets");
    tls.write_all(get_request("/", "localhost").as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(LIMIT, tls.read_to_end(&mut response)).await.unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&response));
    drop(silent);
}

#[tokio::test]
async fn dns_rebinding_host_is_refused_everywhere() {
    let (addr, state) = start(Config::default()).await;
    let publish = "POST /realtime/publish?room=r HTTP/1.1\r\nHost: evil.example\r\nOrigin: http://evil.example\r\n\
                   Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
    let (status, text) = raw_request("127.0.0.1", addr, publish).await;
    assert_eq!(status, 403, "{text}");
    let upgrade = "GET /realtime?rt_conn=1 HTTP/1.1\r\nHost: evil.example:8080\r\nOrigin: http://evil.example:8080\r\n\
                   Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let mut stream = connect_from("127.0.0.1", addr).await;
    stream.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(&head, b"HTTP/1.1 403", "the WebSocket must not upgrade");
    assert_eq!(raw_request("127.0.0.1", addr, &get_request("/", "evil.example")).await.0, 403);
    assert_eq!(raw_request("127.0.0.1", addr, &get_request("/realtime/sse?rt_conn=1", "evil.example")).await.0, 403);
    assert!(state.metrics.trips(LimitKind::host_refused) >= 4);
    assert_eq!(state.registry.len(), 0, "no session was created");
    // Loopback names on any port pass; so does a host the operator allows.
    for host in ["localhost:1234", "127.0.0.1", "[::1]:80", "LocalHost"] {
        assert_eq!(raw_request("127.0.0.1", addr, &get_request("/", host)).await.0, 200, "{host}");
    }
    let (addr, _) = start(edge_config(|edge| edge.allowed_hosts = vec!["dev.example".into()])).await;
    assert_eq!(raw_request("127.0.0.1", addr, &get_request("/", "dev.example:8080")).await.0, 200);
    assert_eq!(raw_request("127.0.0.1", addr, &get_request("/", "evil.example")).await.0, 403);
}

/// The frames of a poll response body, or of an SSE body's `data:` lines.
fn frames_in(text: &str) -> Vec<Frame> {
    let body = &text[text.find("\r\n\r\n").map_or(0, |end| end + 4)..];
    if body.starts_with("event:") {
        // SSE: the first data line is the frame header, the rest the payload (here: the reason).
        let data: Vec<&str> = body.lines().filter_map(|line| line.strip_prefix("data: ")).collect();
        return wire::decode_all(data.join("\n").as_bytes(), 4096).unwrap_or_default();
    }
    wire::decode_all(body.as_bytes(), 4096).unwrap_or_default()
}

#[tokio::test]
async fn behind_a_proxy_the_origin_is_judged_the_same_on_every_endpoint() {
    // nginx's default `proxy_set_header Host $proxy_host`: Host is the upstream address.
    let (addr, state) = start(Config::default()).await;
    let host = addr.to_string();
    let stream_get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nReferer: https://app.example/chat\r\nSec-Fetch-Site: same-origin\r\nConnection: close\r\n\r\n")
    };
    // The event stream (no Origin, as Chromium sends it) is refused in-protocol, with the reason.
    let (status, text) = raw_request("127.0.0.1", addr, &stream_get("/realtime/sse?rt_conn=1")).await;
    assert_eq!(status, 200);
    let frames = frames_in(&text);
    let [Frame::Close(close)] = &frames[..] else { panic!("expected one close: {text}") };
    assert_eq!((close.code, close.reason.as_str(), close.retry), (4001, "origin not allowed", Retry::Never));
    let (_, text) = raw_request("127.0.0.1", addr, &stream_get("/realtime/poll?rt_conn=1")).await;
    assert!(matches!(&frames_in(&text)[..], [Frame::Close(close)] if close.reason == "origin not allowed"), "{text}");
    let post = format!(
        "POST /realtime/publish?room=r HTTP/1.1\r\nHost: {host}\r\nOrigin: https://app.example\r\n\
         Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    );
    let (status, text) = raw_request("127.0.0.1", addr, &post).await;
    assert_eq!(status, 403);
    assert!(text.ends_with("origin not allowed"), "{text}");
    assert!(state.metrics.trips(LimitKind::origin_refused) >= 3);
    assert_eq!(state.registry.len(), 0);

    // Named public origin: the same requests are same-origin everywhere.
    let (addr, _) = start(edge_config(|edge| edge.public_origins = vec!["https://app.example".into()])).await;
    let host = addr.to_string();
    let sse = format!("GET /realtime/sse?rt_conn=1 HTTP/1.1\r\nHost: {host}\r\nReferer: https://app.example/chat\r\n\r\n");
    let mut stream = connect_from("127.0.0.1", addr).await;
    stream.write_all(sse.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("event: hello") {
        assert!(seen.len() < 16 * 1024, "no hello: {}", String::from_utf8_lossy(&seen));
        let read = tokio::time::timeout(LIMIT, stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(read > 0, "stream ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..read]);
    }
    let post = post.replace(addr_of(&post), &host);
    let (status, text) = raw_request("127.0.0.1", addr, &post).await;
    assert!(status == 200 || status == 202, "{text}");

    // A trusted proxy's X-Forwarded-Host/Proto, and only a trusted proxy's.
    let mut config = Config { trusted_proxies: realtime_server::client_ip::TrustedProxies::parse(&["127.0.0.1"]).unwrap(), ..Config::default() };
    config.edge.allowed_hosts = vec!["app.example".into()];
    let (addr, _) = start(config).await;
    let forwarded = format!(
        "POST /realtime/publish?room=r HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://app.example\r\nX-Forwarded-Host: app.example\r\n\
         X-Forwarded-Proto: https\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    );
    let (status, text) = raw_request("127.0.0.1", addr, &forwarded).await;
    assert!(status == 200 || status == 202, "{text}");
    let (status, _) = raw_request("127.0.0.2", addr, &forwarded).await;
    assert_eq!(status, 403, "an untrusted peer's X-Forwarded-Host is ignored");
}

/// The Host value in a raw request.
fn addr_of(request: &str) -> &str {
    request.split("Host: ").nth(1).and_then(|rest| rest.split("\r\n").next()).unwrap_or("")
}

#[tokio::test]
async fn static_path_tricks_answer_404() {
    let (addr, _) = start(Config::default()).await;
    assert_eq!(raw_request("127.0.0.1", addr, &get_request("/", "127.0.0.1")).await.0, 200);
    assert_eq!(raw_request("127.0.0.1", addr, &get_request("/demo.js", "127.0.0.1")).await.0, 200);
    for path in [
        "/%73erver/src/main.rs",
        "//server/src/main.rs",
        "/./server/src/main.rs",
        "/server%2Fsrc%2Fmain.rs",
        "/server/src/main.rs",
        "/server/Cargo.toml",
        "/..%2f..%2fCargo.toml",
        "/..%2F..%2FCargo.toml",
        "/pkg/../../Cargo.toml",
        "/pkg/..%2f..%2fCargo.toml",
        "/%2e%2e/server/Cargo.toml",
        "/../server/Cargo.toml",
        "/PROTOCOL.md",
        "/%2e%2e/PROTOCOL.md",
        "/.%2e/.%2e/Cargo.toml",
        "/%252e%252e/Cargo.toml",
        "/index.html%00.js",
        "/..\\server\\Cargo.toml",
    ] {
        let (status, text) = raw_request("127.0.0.1", addr, &get_request(path, "127.0.0.1")).await;
        assert_eq!(status, 404, "{path}: {text}");
        assert!(!text.contains("[package]") && !text.contains("fn main"), "{path} leaked a source file");
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_server_carries_on() {
    let state = AppState::new(Config::default());
    let router = Router::new()
        .route("/boom", get(|| async {
            let _text: &'static str = panic!("handler bug (expected in this test)");
            #[allow(unreachable_code)]
            _text
        }))
        .route("/ok", get(|| async { "ok" }));
    let addr = start_router(state.clone(), edge::catch_panics(router, state.clone()), None).await;
    let (status, _) = raw_request("127.0.0.1", addr, &get_request("/boom", "127.0.0.1")).await;
    assert_eq!(status, 500);
    assert_eq!(state.metrics.trips(LimitKind::panic), 1);
    let (status, text) = raw_request("127.0.0.1", addr, &get_request("/ok", "127.0.0.1")).await;
    assert_eq!(status, 200);
    assert!(text.ends_with("ok"));
    // The real app has the layer too: a request that panics there is a 500, not an abort.
    let (addr, app_state) = start(Config::default()).await;
    assert_eq!(raw_request("127.0.0.1", addr, &get_request("/", "127.0.0.1")).await.0, 200);
    assert_eq!(app_state.metrics.trips(LimitKind::panic), 0);
}
