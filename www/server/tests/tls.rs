//! The real binary over TLS: ALPN picks h2 (SSE, polls and WebSocket by extended CONNECT all run
//! over it) or http/1.1; the printed `spki sha256` is the certificate's; bad certificate files
//! give clear errors; SIGTERM still closes every stream and exits.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use futures_util::StreamExt;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

const LIMIT: Duration = Duration::from_secs(10);

/// The server process, killed on drop.
/// The admin token of the servers started here (GET /realtime/stats needs it).
const ADMIN_TOKEN: &str = "tls-test-admin-token";

struct Server {
    child: Child,
    address: String,
    spki: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary with `args` and reads `spki sha256 ...` and `listening on https://...`.
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_realtime-server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            // The stats below are behind the admin token.
            .env("REALTIME_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let spki_line = lines.next().unwrap().unwrap();
        let spki = spki_line.strip_prefix("spki sha256 ").unwrap_or_else(|| panic!("{spki_line:?}")).to_owned();
        let listening = lines.next().unwrap().unwrap();
        let address = listening.strip_prefix("listening on https://").unwrap_or_else(|| panic!("{listening:?}")).to_owned();
        Server { child, address, spki }
    }
}

/// A certificate for 127.0.0.1 made here (independently of the server), in PEM files.
struct Files {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
    /// base64 SHA-256 of the key's SubjectPublicKeyInfo, as rcgen encodes it.
    spki: String,
}

impl Files {
    fn new(name: &str) -> Files {
        use rcgen::PublicKeyData;
        let dir = std::env::temp_dir().join(format!("realtime-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, &generated.signing_key.subject_public_key_info());
        let spki = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        Files { dir, cert, key, der: generated.cert.der().clone(), spki }
    }

    fn args(&self) -> [&str; 4] {
        ["--tls-cert", self.cert.to_str().unwrap(), "--tls-key", self.key.to_str().unwrap()]
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS connection to `address` that trusts `root` only, offering `alpn`.
async fn connect(address: &str, root: &CertificateDer<'static>, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    connect_with(address, config, alpn).await
}

async fn connect_with(address: &str, mut config: ClientConfig, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    let tcp = TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(LIMIT, TlsConnector::from(Arc::new(config)).connect(name, tcp)).await.unwrap().unwrap()
}

fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

fn get(path: &str) -> Request<Body> {
    Request::builder().uri(format!("https://127.0.0.1{path}")).body(Body::empty()).unwrap()
}

/// Reads the body until it contains `needle` (bodies here may never end), at most LIMIT.
async fn read_until(response: Response<hyper::body::Incoming>, needle: &str) -> String {
    let mut body = Body::new(response.into_body()).into_data_stream();
    let mut text = String::new();
    tokio::time::timeout(LIMIT, async {
        while !text.contains(needle) {
            let Some(chunk) = body.next().await else { break };
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in {text:?}"));
    assert!(text.contains(needle), "no {needle:?} in {text:?}");
    text
}

async fn stats(sender: &mut hyper::client::conn::http2::SendRequest<Body>) -> String {
    let mut request = get("/realtime/stats");
    request.headers_mut().insert("authorization", format!("Bearer {ADMIN_TOKEN}").parse().unwrap());
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    read_until(response, "}}").await
}

#[tokio::test]
async fn h2_by_alpn_carries_sse_polls_and_websocket_by_extended_connect() {
    let files = Files::new("h2");
    let server = Server::start(&files.args());
    let tls = connect(&server.address, &files.der, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(tls)).await.unwrap();
    // The server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) arrive before its first response.
    let mut connection = Box::pin(connection);
    tokio::select! {
        counted = stats(&mut sender) => assert!(counted.contains(r#""sse":{"http1":0,"http2":0}"#), "{counted}"),
        ended = &mut connection => panic!("connection ended: {ended:?}"),
    }
    assert!(connection.is_extended_connect_protocol_enabled(), "no SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441)");
    tokio::spawn(connection);

    // An event stream and a poll, at once, on the one connection.
    let sse = sender.send_request(get("/realtime/sse?room=a&rt_conn=1")).await.unwrap();
    assert_eq!((sse.status(), sse.version()), (StatusCode::OK, Version::HTTP_2));
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let stream = tokio::spawn(read_until(sse, "event: hello"));
    let poll = sender.send_request(get("/realtime/poll?room=b&rt_conn=1")).await.unwrap();
    assert_eq!((poll.status(), poll.version()), (StatusCode::OK, Version::HTTP_2));
    let answer = read_until(poll, "hello v=2").await;
    assert!(answer.starts_with("hello v=2 "), "the poll's answer starts with the hello: {answer:?}");
    assert!(stream.await.unwrap().contains("data: hello v=2"));

    // A WebSocket as a stream of the same connection (RFC 8441).
    let request = Request::builder()
        .method(Method::CONNECT)
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .uri("https://127.0.0.1/realtime?room=c&rt_conn=1")
        .header("sec-websocket-version", "13")
        .body(Body::empty())
        .unwrap();
    let mut response = sender.send_request(request).await.unwrap();
    assert_eq!((response.status(), response.version()), (StatusCode::OK, Version::HTTP_2));
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let first = tokio::time::timeout(LIMIT, socket.next()).await.unwrap().unwrap().unwrap();
    assert!(first.to_text().unwrap().starts_with("hello v=2"), "{first:?}");

    let counted = stats(&mut sender).await;
    for endpoint in ["websocket", "sse", "poll"] {
        assert!(counted.contains(&format!(r#""{endpoint}":{{"http1":0,"http2":1}}"#)), "{endpoint}: {counted}");
    }
}

#[tokio::test]
async fn http1_by_alpn_or_without_alpn_still_works() {
    let files = Files::new("h1");
    let server = Server::start(&files.args());
    for offered in [&[&b"http/1.1"[..]][..], &[]] {
        let tls = connect(&server.address, &files.der, offered).await;
        assert_eq!(alpn(&tls).as_deref(), offered.first().copied());
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        let poll = sender.send_request(get("/realtime/poll?room=d&rt_conn=1")).await.unwrap();
        assert_eq!((poll.status(), poll.version()), (StatusCode::OK, Version::HTTP_11));
        read_until(poll, "hello v=2").await;
    }
}

/// Accepts any certificate and keeps the one presented (only to read its fingerprint).
#[derive(Debug)]
struct Recording(Mutex<Option<CertificateDer<'static>>>, Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, signature, &self.1.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, signature, &self.1.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn the_printed_fingerprint_is_the_certificates_spki_sha256() {
    // Files made here: the printed line equals rcgen's own SPKI of the key.
    let files = Files::new("spki");
    let server = Server::start(&files.args());
    assert_eq!(server.spki, files.spki);

    // The generated certificate: the one the server presents has the printed SPKI, it names
    // 127.0.0.1 and localhost, and it is trusted as a root for both names.
    let server = Server::start(&["--tls-self-signed"]);
    let recording = Arc::new(Recording(Mutex::new(None), provider()));
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(recording.clone())
        .with_no_client_auth();
    let _ = connect_with(&server.address, config, &[b"h2"]).await;
    let presented = recording.0.lock().unwrap().clone().expect("a certificate");
    assert_eq!(realtime_server::tls::spki_sha256(&presented).as_deref(), Some(server.spki.as_str()));
    assert_eq!(server.spki.len(), 44, "base64 of 32 bytes");
    let tls = connect(&server.address, &presented, &[b"h2"]).await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"h2"[..]));
}

/// Runs the binary with `args`, expecting it to refuse them: (exit code, stderr). Kills it and
/// fails if it is still running after LIMIT.
fn start_failure(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_realtime-server"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} were accepted: the server is running");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.stdout.is_empty(), "printed {:?}", String::from_utf8_lossy(&output.stdout));
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn bad_certificate_files_are_clear_errors() {
    let files = Files::new("bad");
    let missing = files.dir.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let (code, stderr) = start_failure(&["--tls-cert", missing, "--tls-key", files.key.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains(&format!("error: --tls-cert {missing}: No such file or directory")), "{stderr}");

    // A key file where the certificate should be: no CERTIFICATE block.
    let (code, stderr) = start_failure(&["--tls-cert", files.key.to_str().unwrap(), "--tls-key", files.key.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no PEM CERTIFICATE block"), "{stderr}");

    // A key that is not the certificate's.
    let other = Files::new("other");
    let (code, stderr) = start_failure(&["--tls-cert", files.cert.to_str().unwrap(), "--tls-key", other.key.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("do not make a usable pair"), "{stderr}");

    // One without the other, or both ways at once.
    assert_eq!(start_failure(&["--tls-cert", files.cert.to_str().unwrap()]).0, 2);
    assert_eq!(start_failure(&["--tls-self-signed", "--tls-key", files.key.to_str().unwrap()]).0, 2);
}

#[tokio::test]
async fn sigterm_over_tls_closes_the_streams_and_exits() {
    let files = Files::new("term");
    let mut server = Server::start(&files.args());
    let tls = connect(&server.address, &files.der, &[b"h2"]).await;
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    let sse = sender.send_request(get("/realtime/sse?room=e&rt_conn=1")).await.unwrap();
    let mut body = Body::new(sse.into_body()).into_data_stream();
    let mut text = String::new();
    while !text.contains("event: hello") {
        let chunk = tokio::time::timeout(LIMIT, body.next()).await.unwrap().unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap().success());
    // The stream ends, with the going-away close as its last event.
    tokio::time::timeout(LIMIT, async {
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the stream ended");
    assert!(text.contains("close code=1001"), "{text}");
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait();
        (status, server)
    })
    .await
    .unwrap()
    .0
    .unwrap();
    assert!(status.success(), "{status:?}");
}
