//! Protocol v3 (PROTOCOL.md §9) over real sockets: the session and the credential travel in
//! frames, never in a URL, on every transport; the SSE bind; the authentication hook (a test
//! authenticator: `user:<subject>[:<ms until expiry>]`), principal binding, `f`, in-band
//! refresh and expiry.

mod common;

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use common::{parse_event, Server, SseReader, WsClient, LIMIT};
use realtime_client::core::wire::{
    self, close_code, Carrier, ChannelMessage, Close, Credential, Frame, Hello, HelloAuth, Message, Payload, Resume, Retry,
    SessionFrame,
};
use realtime_server::v3::auth::{Authenticator, AuthHook, Principal, Refusal};
use realtime_server::Config;
use tokio_tungstenite::tungstenite;

/// `user:<subject>` verifies as that subject; `user:<subject>:<ms>:<channels>:<publish>` also
/// expires `ms` from now (empty: never) and carries the claims (comma-separated patterns);
/// anything else, or no credential, is refused (4005); `user:banned` is forbidden (4001).
struct TestAuth;

impl Authenticator for TestAuth {
    fn verify(&self, credential: Option<&str>) -> Result<Option<Principal>, Refusal> {
        let credential = credential.ok_or(Refusal::credential("credential missing"))?;
        let mut parts = credential.split(':');
        let (Some("user"), Some(subject)) = (parts.next(), parts.next()) else {
            return Err(Refusal::credential("credential does not verify"));
        };
        if subject == "banned" {
            return Err(Refusal::forbidden("principal refused"));
        }
        let expires_at = match parts.next() {
            None | Some("") => None,
            Some(ms) => Some(SystemTime::now() + Duration::from_millis(ms.parse().map_err(|_| Refusal::credential("bad expiry"))?)),
        };
        let patterns = |part: Option<&str>| part.map(|list| list.split(',').map(str::to_owned).collect());
        let mut principal = Principal::new(subject.replace("%20", " "), expires_at);
        principal.channels = patterns(parts.next());
        principal.publish = patterns(parts.next());
        Ok(Some(principal))
    }
}

fn authenticated() -> Config {
    Config { authenticator: AuthHook::new(TestAuth), ..Config::default() }
}

/// Every URL a test sent, to check that no secret was in any of them.
struct Urls {
    server_addr: std::net::SocketAddr,
    sent: Mutex<Vec<String>>,
}

impl Urls {
    fn new(server: &Server) -> Self {
        Urls { server_addr: server.addr, sent: Mutex::new(Vec::new()) }
    }

    fn http(&self, path_and_query: &str) -> String {
        self.record(format!("http://{}{path_and_query}", self.server_addr))
    }

    fn ws(&self, query: &str) -> String {
        self.record(format!("ws://{}/realtime?{query}", self.server_addr))
    }

    fn record(&self, url: String) -> String {
        self.sent.lock().unwrap().push(url.clone());
        url
    }

    /// No URL sent holds any of `secrets` (session ids, keys, credentials, stream ids) or names
    /// a session credential parameter.
    fn assert_clean(&self, secrets: &[&str]) {
        let sent = self.sent.lock().unwrap();
        assert!(!sent.is_empty());
        for url in sent.iter() {
            assert!(!url.contains("rt_sid") && !url.contains("rt_key") && !url.contains("rt_last"), "{url}");
            for secret in secrets {
                assert!(!url.contains(secret), "a secret in {url}");
            }
        }
    }
}

fn encode(frames: &[Frame]) -> String {
    let mut bytes = Vec::new();
    for frame in frames {
        wire::encode(frame, Carrier::Text, &mut bytes);
    }
    String::from_utf8(bytes).unwrap()
}

fn fresh() -> Frame {
    Frame::Session(SessionFrame::default())
}

fn resume(hello: &Hello, last: u64) -> Frame {
    Frame::Session(SessionFrame { resume: Some(Resume { session_id: hello.session_id.clone(), secret: hello.secret.clone(), last }), stream: None })
}

fn token(credential: &str) -> Frame {
    Frame::Token(Credential(credential.to_owned()))
}

fn text(seq: u64, text: &str) -> Frame {
    Frame::Message(Message { seq, event: None, payload: Payload::Text(text.into()) })
}

/// The hello of a v3 connect, and what it adds.
fn split_hello(frame: Frame) -> (Hello, HelloAuth) {
    match frame {
        Frame::Hello(hello) => (hello, HelloAuth::default()),
        Frame::AuthHello(hello, auth) => (hello, auth),
        other => panic!("expected hello, got {other:?}"),
    }
}

/// A channel message's text, its seq and its `f`, for any frame that is one.
fn message_of(frame: &Frame) -> Option<(u64, String, Option<String>)> {
    let (message, subject) = match frame {
        Frame::ChannelMessage(ChannelMessage { message, .. }) | Frame::Message(message) => (message, None),
        Frame::Attributed { subject, message: ChannelMessage { message, .. } } => (message, Some(subject.clone())),
        _ => return None,
    };
    let Payload::Text(body) = &message.payload else { return None };
    Some((message.seq, body.clone(), subject))
}

async fn post(url: String, body: String) -> reqwest::Response {
    reqwest::Client::new().post(url).header("content-type", "text/plain").body(body).send().await.unwrap()
}

async fn post_frames(url: String, body: String) -> Vec<Frame> {
    let response = tokio::time::timeout(LIMIT * 4, post(url, body)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-realtime-frames");
    wire::decode_all(&response.bytes().await.unwrap(), 1 << 24).unwrap()
}

/// A v3 WebSocket that sent `opening` as its first message.
async fn ws_open(urls: &Urls, query: &str, opening: &[Frame]) -> WsClient {
    let mut client = WsClient::connect_v2(&urls.ws(query)).await;
    client.send_raw_text(&encode(opening)).await;
    client
}

/// The frames up to the pong of a ping (everything the server queued before it).
async fn sync(client: &mut WsClient, time: u64) -> Vec<Frame> {
    client.sync(time).await
}

/// Reads frames until one is a message (skipping acks, pings, pongs and channel frames).
async fn next_message(client: &mut WsClient) -> (u64, String, Option<String>) {
    loop {
        let frame = client.frame().await;
        if let Some(message) = message_of(&frame) {
            return message;
        }
        assert!(!matches!(frame, Frame::Close(_)), "closed: {frame:?}");
    }
}

/// Reads until the connection closes: the close frame it got (then the WebSocket close, which
/// sets `client.closed`).
async fn closed(client: &mut WsClient) -> Close {
    loop {
        match client.next().await {
            Some((Frame::Close(close), _)) => {
                while client.next().await.is_some() {}
                return close;
            }
            Some(_) => continue,
            None => panic!("ended without a close frame"),
        }
    }
}

#[tokio::test]
async fn websocket_connects_resumes_and_delivers_each_way_once_with_no_secret_in_urls() {
    let server = Server::default().await;
    let urls = Urls::new(&server);
    let mut client = ws_open(&urls, "rt_v=3&rt_conn=1&room=w3", &[fresh()]).await;
    let (hello, auth) = split_hello(client.frame().await);
    assert_eq!((hello.version, hello.resumed, auth), (3, false, HelloAuth::default()));
    // Upstream: one message, echoed to the room (the sender included) and acked.
    client.send_frames(&[text(1, "up")], Carrier::Text).await;
    let (seq, body, from) = next_message(&mut client).await;
    assert_eq!((body.as_str(), from), ("up", None));
    // Downstream while connected, then one while disconnected.
    assert_eq!(server.publish("room=w3", "text/plain", "down").await.status(), 202);
    let (seq2, body, _) = next_message(&mut client).await;
    assert_eq!((seq2, body.as_str()), (seq + 1, "down"));
    client.send_frames(&[Frame::Ack { seq: seq2 }], Carrier::Text).await;
    sync(&mut client, 1).await;
    drop(client);
    common::eventually("detached", || *server.state.live_transports().borrow() == 0).await;
    assert_eq!(server.publish("room=w3", "text/plain", "missed").await.status(), 202);

    let mut client = ws_open(&urls, "rt_v=3&rt_conn=2&room=w3", &[resume(&hello, seq2)]).await;
    let (again, _) = split_hello(client.frame().await);
    assert_eq!((again.session_id.as_str(), again.resumed, again.ack), (hello.session_id.as_str(), true, 1));
    let (seq3, body, _) = next_message(&mut client).await;
    assert_eq!((seq3, body.as_str()), (seq2 + 1, "missed"));
    // Exactly once: the resend of the client's message is a duplicate, nothing comes twice.
    client.send_frames(&[text(1, "up")], Carrier::Text).await;
    let rest = sync(&mut client, 2).await;
    assert!(rest.iter().all(|frame| message_of(frame).is_none()), "{rest:?}");
    urls.assert_clean(&[&hello.session_id, &hello.secret]);
}

#[tokio::test]
async fn sse_binds_by_post_and_resumes_with_no_secret_in_urls() {
    let server = Server::default().await;
    let urls = Urls::new(&server);
    let response = reqwest::get(urls.http("/realtime/sse?rt_v=3&rt_conn=1&room=s3")).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut reader = SseReader::new(response);
    let (kind, _, data) = parse_event(&reader.next_event().await);
    assert_eq!(kind, "pending");
    let (Frame::Pending { stream }, _) = wire::decode(data.as_bytes(), 1024).unwrap() else { panic!("{data}") };
    assert_eq!(stream.len(), 22, "128 bits, base64url");
    let bind = Frame::Session(SessionFrame { resume: None, stream: Some(stream.clone()) });
    assert_eq!(post(urls.http("/realtime/bind?rt_v=3&rt_conn=1"), encode(&[bind])).await.status(), 204);
    let (kind, _, data) = parse_event(&reader.next_event().await);
    assert_eq!(kind, "hello");
    let (hello, _) = split_hello(wire::decode(data.as_bytes(), 1024).unwrap().0);
    assert_eq!((hello.version, hello.resumed), (3, false));
    // Upstream by upload: `session sid key`, then the batch.
    let upload = encode(&[resume(&hello, 0), text(1, "up")]);
    assert_eq!(post(urls.http("/realtime/send?rt_v=3&rt_conn=1"), upload.clone()).await.status(), 204);
    assert_eq!(server.publish("room=s3", "text/plain", "down").await.status(), 202);
    let mut got = Vec::new();
    let mut last = 0;
    while got.len() < 2 {
        let (_, _, data) = parse_event(&reader.next_event().await);
        let frame = wire::decode(data.as_bytes(), 1024).unwrap().0;
        if let Some((seq, body, _)) = message_of(&frame) {
            got.push(body);
            last = seq;
        }
    }
    assert_eq!(got, ["up", "down"]);
    drop(reader);
    common::eventually("detached", || *server.state.live_transports().borrow() == 0).await;
    // The resend is a duplicate; the resume gets nothing twice.
    assert_eq!(post(urls.http("/realtime/send?rt_v=3&rt_conn=1"), upload).await.status(), 204);
    let mut reader = SseReader::new(reqwest::get(urls.http("/realtime/sse?rt_v=3&rt_conn=2&room=s3")).await.unwrap());
    let (_, _, data) = parse_event(&reader.next_event().await);
    let (Frame::Pending { stream: second }, _) = wire::decode(data.as_bytes(), 1024).unwrap() else { panic!("{data}") };
    let bind = Frame::Session(SessionFrame { stream: Some(second.clone()), ..match resume(&hello, last) { Frame::Session(session) => session, _ => unreachable!() } });
    assert_eq!(post(urls.http("/realtime/bind?rt_v=3&rt_conn=2"), encode(&[bind])).await.status(), 204);
    let (_, _, data) = parse_event(&reader.next_event().await);
    let (again, _) = split_hello(wire::decode(data.as_bytes(), 1024).unwrap().0);
    assert_eq!((again.session_id.as_str(), again.resumed, again.ack), (hello.session_id.as_str(), true, 1));
    assert_eq!(server.publish("room=s3", "text/plain", "after").await.status(), 202);
    loop {
        let (_, _, data) = parse_event(&reader.next_event().await);
        if let Some((seq, body, _)) = message_of(&wire::decode(data.as_bytes(), 1024).unwrap().0) {
            assert_eq!((seq, body.as_str()), (last + 1, "after"), "nothing before it came again");
            break;
        }
    }
    urls.assert_clean(&[&hello.session_id, &hello.secret, &stream, &second]);
}

#[tokio::test]
async fn long_polls_carry_the_session_in_their_body() {
    let server = Server::default().await;
    let urls = Urls::new(&server);
    let frames = post_frames(urls.http("/realtime/poll?rt_v=3&rt_conn=1&room=p3"), encode(&[fresh()])).await;
    let (hello, _) = split_hello(frames[0].clone());
    assert_eq!((hello.version, hello.resumed), (3, false));
    let mut last = frames.iter().filter_map(Frame::ordered_seq).max().unwrap_or(0);
    let upload = encode(&[resume(&hello, 0), text(1, "up")]);
    assert_eq!(post(urls.http("/realtime/send?rt_v=3&rt_conn=1"), upload).await.status(), 204);
    assert_eq!(server.publish("room=p3", "text/plain", "down").await.status(), 202);
    let mut got = Vec::new();
    while got.len() < 2 {
        let frames = post_frames(urls.http("/realtime/poll?rt_v=3&rt_conn=1&room=p3"), encode(&[resume(&hello, last)])).await;
        for frame in &frames {
            if let Some((seq, body, _)) = message_of(frame) {
                assert!(seq > last);
                got.push(body);
            }
        }
        last = frames.iter().filter_map(Frame::ordered_seq).max().unwrap_or(last);
    }
    assert_eq!(got, ["up", "down"]);
    // A resume from another connection number: hello resumed=1, nothing replayed twice.
    assert_eq!(server.publish("room=p3", "text/plain", "again").await.status(), 202);
    let frames = post_frames(urls.http("/realtime/poll?rt_v=3&rt_conn=2&room=p3"), encode(&[resume(&hello, last)])).await;
    let (again, _) = split_hello(frames[0].clone());
    assert!(again.resumed);
    let bodies: Vec<String> = frames.iter().filter_map(message_of).map(|(_, body, _)| body).collect();
    assert_eq!(bodies, ["again"]);
    // A body that does not start with `session` is a protocol error, in-protocol.
    let frames = post_frames(urls.http("/realtime/poll?rt_v=3&rt_conn=3&room=p3"), encode(&[text(1, "x")])).await;
    assert!(matches!(&frames[..], [Frame::Close(Close { code: close_code::PROTOCOL_ERROR, .. })]), "{frames:?}");
    urls.assert_clean(&[&hello.session_id, &hello.secret]);
}

#[tokio::test]
async fn a_stream_binds_once_and_a_racing_bind_gets_404() {
    let server = Server::default().await;
    let mut reader = SseReader::new(reqwest::get(server.url("/realtime/sse?rt_v=3&rt_conn=1")).await.unwrap());
    let (_, _, data) = parse_event(&reader.next_event().await);
    let (Frame::Pending { stream }, _) = wire::decode(data.as_bytes(), 1024).unwrap() else { panic!("{data}") };
    let body = encode(&[Frame::Session(SessionFrame { resume: None, stream: Some(stream) })]);
    let url = server.url("/realtime/bind?rt_v=3&rt_conn=1");
    let (first, second) = tokio::join!(post(url.clone(), body.clone()), post(url.clone(), body.clone()));
    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [204, 404]);
    assert_eq!(post(url.clone(), body).await.status(), 404);
    let (kind, _, _) = parse_event(&reader.next_event().await);
    assert_eq!(kind, "hello", "one hello on the stream");
    // An unknown stream and malformed binds.
    let unknown = encode(&[Frame::Session(SessionFrame { resume: None, stream: Some("nope".into()) })]);
    assert_eq!(post(url.clone(), unknown).await.status(), 404);
    assert_eq!(post(url.clone(), encode(&[fresh()])).await.status(), 400, "no stream");
    assert_eq!(post(url.clone(), "garbage\n".into()).await.status(), 400);
    assert_eq!(post(url.clone(), encode(&[text(1, "x")])).await.status(), 400);
}

#[tokio::test]
async fn an_unbound_stream_ends_after_ten_seconds_and_counts_against_the_ip_stream_cap() {
    let mut config = Config::default();
    config.limits.max_streams_per_ip = 1;
    let server = common::start_edge(config).await;
    let started = std::time::Instant::now();
    let mut reader = SseReader::new(reqwest::get(server.url("/realtime/sse?rt_v=3&rt_conn=1")).await.unwrap());
    let (kind, _, _) = parse_event(&reader.next_event().await);
    assert_eq!(kind, "pending");
    let second = reqwest::get(server.url("/realtime/sse?rt_v=3&rt_conn=2")).await.unwrap();
    assert_eq!(second.status(), 503, "the pending stream holds the IP's one stream slot");
    // (The reader gives up after 10 s of silence: wait most of the bind window first.)
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (kind, _, data) = parse_event(&reader.next_event().await);
    assert_eq!(kind, "close");
    let (Frame::Close(close), _) = wire::decode(data.as_bytes(), 1024).unwrap() else { panic!("{data}") };
    assert_eq!((close.code, close.retry), (4005, Retry::AfterMs(0)));
    assert!(started.elapsed() >= Duration::from_secs(9), "{:?}", started.elapsed());
    assert_eq!(reader.rest().await, "", "the stream ended after the close");
    assert!(server.state.v3.streams.is_empty());
    common::eventually("the slot is free", || *server.state.live_transports().borrow() == 0).await;
    let third = reqwest::get(server.url("/realtime/sse?rt_v=3&rt_conn=3")).await.unwrap();
    assert_eq!(third.status(), 200);
}

#[tokio::test]
async fn a_first_websocket_message_must_be_session_and_small() {
    let server = Server::default().await;
    let mut client = WsClient::connect_v2(&server.ws_url("rt_v=3&rt_conn=1")).await;
    client.send_raw_text(&encode(&[text(1, "hi")])).await;
    assert_eq!(closed(&mut client).await.code, close_code::PROTOCOL_ERROR);
    assert_eq!(client.closed.as_ref().map(|closed| closed.0), Some(4000));

    let mut client = WsClient::connect_v2(&server.ws_url("rt_v=3&rt_conn=1")).await;
    client.send_raw_text("not a frame").await;
    assert_eq!(closed(&mut client).await.code, close_code::PROTOCOL_ERROR);

    let mut client = WsClient::connect_v2(&server.ws_url("rt_v=3&rt_conn=1")).await;
    let oversized = encode(&[fresh(), token(&"t".repeat(8192)), Frame::Ping { time: 1 }, token(&"t".repeat(8192))]);
    assert!(oversized.len() > 16 * 1024);
    client.send_raw_text(&oversized).await;
    assert_eq!(closed(&mut client).await.code, close_code::LIMIT_EXCEEDED);
    assert_eq!(client.closed.as_ref().map(|closed| closed.0), Some(4003));
    assert!(server.state.registry.is_empty(), "no session was made");
}

#[tokio::test]
async fn a_silent_websocket_is_dropped_after_ten_seconds() {
    let server = Server::default().await;
    let mut client = WsClient::connect_v2(&server.ws_url("rt_v=3&rt_conn=1")).await;
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(15), futures_util::StreamExt::next(&mut client.ws)).await.expect("dropped within 15 s");
    assert!(!matches!(ended, Some(Ok(tungstenite::Message::Text(_) | tungstenite::Message::Binary(_)))), "{ended:?}");
    assert!(started.elapsed() >= Duration::from_secs(9));
    assert!(server.state.registry.is_empty());
}

#[tokio::test]
async fn a_v3_request_with_session_credentials_in_its_query_is_refused() {
    let server = Server::default().await;
    for query in ["rt_v=3&rt_conn=1&rt_sid=abc&rt_key=def", "rt_v=3&rt_key=def", "rt_v=3&rt_sid=abc"] {
        match tokio_tungstenite::connect_async(server.ws_url(query)).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
            other => panic!("expected 400, got {:?}", other.map(|_| ())),
        }
        assert_eq!(reqwest::get(server.url(&format!("/realtime/sse?{query}"))).await.unwrap().status(), 400);
        assert_eq!(post(server.url(&format!("/realtime/poll?{query}")), encode(&[fresh()])).await.status(), 400);
        assert_eq!(post(server.url(&format!("/realtime/send?{query}")), encode(&[fresh()])).await.status(), 400);
        assert_eq!(post(server.url(&format!("/realtime/bind?{query}")), encode(&[fresh()])).await.status(), 400);
    }
    // v2 is unchanged (rt_sid and rt_key in the query there).
    let mut client = WsClient::connect_v2(&server.ws_url("rt_v=2&rt_conn=1")).await;
    assert_eq!(client.hello().await.version, 2);
}

#[tokio::test]
async fn probes_need_no_frame_and_say_v3() {
    let server = Server::default().await;
    let frames = post_frames(server.url("/realtime/poll?rt_v=3&rt_conn=1&rt_probe=1"), String::new()).await;
    assert!(matches!(&frames[..], [Frame::Hello(hello)] if hello.version == 3 && !hello.resumed), "{frames:?}");
    let mut client = WsClient::connect_v2(&server.ws_url("rt_v=3&rt_conn=1&rt_probe=1")).await;
    assert_eq!(client.hello().await.version, 3);
    assert!(server.state.registry.is_empty());
}

#[tokio::test]
async fn a_session_belongs_to_its_principal_and_messages_carry_it_as_f() {
    let server = Server::start(authenticated()).await;
    let urls = Urls::new(&server);
    let mut alice = ws_open(&urls, "rt_v=3&rt_conn=1&room=auth", &[fresh(), token("user:alice")]).await;
    let (alice_hello, auth) = split_hello(alice.frame().await);
    assert_eq!(auth, HelloAuth { expires_in_ms: None, subject: Some("alice".into()) });
    let mut bob = ws_open(&urls, "rt_v=3&rt_conn=1&room=auth", &[fresh(), token("user:bob%20b")]).await;
    let (_, auth) = split_hello(bob.frame().await);
    assert_eq!(auth.subject.as_deref(), Some("bob b"), "percent-encoded on the wire");
    sync(&mut alice, 1).await;
    sync(&mut bob, 1).await;
    // Alice's publish reaches Bob as hers, whatever `f` she put on it.
    alice.send_raw_text("msg s=1 ch=auth f=mallory k=t n=2\nhi").await;
    let (_, body, from) = next_message(&mut bob).await;
    assert_eq!((body.as_str(), from.as_deref()), ("hi", Some("alice")));
    // A room message (no `ch`) too.
    alice.send_raw_text("msg s=2 f=mallory k=t n=3\nhi2").await;
    let (_, body, from) = next_message(&mut bob).await;
    assert_eq!((body.as_str(), from.as_deref()), ("hi2", Some("alice")));
    // A backend publish has no `f`.
    assert_eq!(server.publish("room=auth", "text/plain", "backend").await.status(), 202);
    let (_, body, from) = next_message(&mut bob).await;
    assert_eq!((body.as_str(), from), ("backend", None));

    // No credential, a bad one, a refused principal.
    let mut anonymous = ws_open(&urls, "rt_v=3&rt_conn=1&room=auth", &[fresh()]).await;
    let close = closed(&mut anonymous).await;
    assert_eq!((close.code, close.retry), (4005, Retry::AfterMs(0)));
    let mut forged = ws_open(&urls, "rt_v=3&rt_conn=1&room=auth", &[fresh(), token("forged")]).await;
    assert_eq!(closed(&mut forged).await.code, 4005);
    let mut banned = ws_open(&urls, "rt_v=3&rt_conn=1&room=auth", &[fresh(), token("user:banned")]).await;
    let close = closed(&mut banned).await;
    assert_eq!((close.code, close.retry), (close_code::UNAUTHORIZED, Retry::Never));
    // A v2 request cannot carry a credential: refused while authentication is configured.
    let mut v2 = WsClient::connect_v2(&server.ws_url("rt_v=2&rt_conn=1&room=auth")).await;
    assert_eq!(closed(&mut v2).await.code, close_code::UNSUPPORTED_VERSION);
    let polled = tokio::time::timeout(LIMIT, reqwest::get(server.url("/realtime/poll?rt_v=2&rt_conn=1&room=auth"))).await.unwrap().unwrap();
    let frames = wire::decode_all(&polled.bytes().await.unwrap(), 1 << 20).unwrap();
    assert!(matches!(&frames[..], [Frame::Close(Close { code: close_code::UNSUPPORTED_VERSION, .. })]), "{frames:?}");
    let mut reader = SseReader::new(reqwest::get(server.url("/realtime/sse?rt_v=2&rt_conn=1&room=auth")).await.unwrap());
    let (kind, _, data) = parse_event(&reader.next_event().await);
    assert!(kind == "close" && data.starts_with("close code=4002"), "{kind} {data}");
    assert_eq!(post(server.url("/realtime/send?rt_v=2&rt_conn=1&rt_sid=a&rt_key=b"), String::new()).await.status(), 400);

    // Bob resuming Alice's session (he has her key) gets a fresh session of his own; hers ends.
    let mut thief = ws_open(&urls, "rt_v=3&rt_conn=7&room=auth", &[resume(&alice_hello, 0), token("user:bob")]).await;
    let (stolen, auth) = split_hello(thief.frame().await);
    assert!(!stolen.resumed);
    assert_ne!(stolen.session_id, alice_hello.session_id);
    assert_eq!(auth.subject.as_deref(), Some("bob"));
    let frames = sync(&mut thief, 9).await;
    assert!(frames.iter().all(|frame| message_of(frame).is_none()), "nothing of Alice's session: {frames:?}");
    common::eventually("alice's session ended", || server.state.registry.get(&alice_hello.session_id).is_none_or(|session| session.is_ended())).await;
    urls.assert_clean(&[&alice_hello.session_id, &alice_hello.secret, "user:"]);
}

#[tokio::test]
async fn an_in_band_token_refreshes_and_another_principal_is_refused() {
    let server = Server::start(authenticated()).await;
    let mut client = ws_open(&Urls::new(&server), "rt_v=3&rt_conn=1&room=r", &[fresh(), token("user:carol:2500")]).await;
    let (hello, auth) = split_hello(client.frame().await);
    let exp = auth.expires_in_ms.expect("exp on hello");
    assert!(exp > 1000 && exp <= 2500, "{exp}");
    client.send_frames(&[token("user:carol:60000")], Carrier::Text).await;
    let frames = sync(&mut client, 1).await;
    let authed = frames.iter().find_map(|frame| match frame {
        Frame::Authed { expires_in_ms } => Some(*expires_in_ms),
        _ => None,
    });
    let exp = authed.expect("authed").expect("exp on authed");
    assert!(exp > 50_000 && exp <= 60_000, "{exp}");
    // Past the first credential's expiry the connection lives on.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    sync(&mut client, 2).await;
    // An upload can refresh too (the authed goes on the connection).
    let upload = encode(&[resume(&hello, 0), token("user:carol:90000")]);
    assert_eq!(post(server.url("/realtime/send?rt_v=3&rt_conn=1"), upload).await.status(), 204);
    let authed = loop {
        if let Frame::Authed { expires_in_ms } = client.frame().await {
            break expires_in_ms;
        }
    };
    assert!(authed.is_some_and(|exp| exp > 80_000));
    // A refresh naming someone else closes the connection (4005); the session stays resumable.
    client.send_frames(&[token("user:dave")], Carrier::Text).await;
    let close = closed(&mut client).await;
    assert_eq!(close.code, 4005);
    let mut back = ws_open(&Urls::new(&server), "rt_v=3&rt_conn=2&room=r", &[resume(&hello, 1), token("user:carol")]).await;
    assert!(split_hello(back.frame().await).0.resumed);
}

#[tokio::test]
async fn an_expired_credential_closes_the_connection_and_the_session_resumes() {
    let server = Server::start(authenticated()).await;
    let started = std::time::Instant::now();
    let mut client = ws_open(&Urls::new(&server), "rt_v=3&rt_conn=1&room=x", &[fresh(), token("user:erin:1200")]).await;
    let (hello, _) = split_hello(client.frame().await);
    let close = closed(&mut client).await;
    assert_eq!((close.code, close.retry, close.reason.as_str()), (4005, Retry::AfterMs(0), "token expired"));
    assert!(started.elapsed() >= Duration::from_millis(1200));
    assert_eq!(client.closed.as_ref().map(|closed| closed.0), Some(4005));
    let mut client = ws_open(&Urls::new(&server), "rt_v=3&rt_conn=2&room=x", &[resume(&hello, 1), token("user:erin")]).await;
    let (again, auth) = split_hello(client.frame().await);
    assert!(again.resumed);
    assert_eq!(auth.expires_in_ms, None);

    // A poll held past the expiry is answered with the close.
    let frames = post_frames(server.url("/realtime/poll?rt_v=3&rt_conn=1&room=x"), encode(&[fresh(), token("user:erin:1200")])).await;
    let (polled, _) = split_hello(frames[0].clone());
    let last = frames.iter().filter_map(Frame::ordered_seq).max().unwrap_or(0);
    let frames = post_frames(server.url("/realtime/poll?rt_v=3&rt_conn=1&room=x"), encode(&[resume(&polled, last)])).await;
    assert!(matches!(&frames[..], [Frame::Close(Close { code: 4005, .. })]), "{frames:?}");
}

#[tokio::test]
async fn sse_bind_refusals_go_on_the_stream() {
    let server = Server::start(authenticated()).await;
    let mut reader = SseReader::new(reqwest::get(server.url("/realtime/sse?rt_v=3&rt_conn=1")).await.unwrap());
    let (_, _, data) = parse_event(&reader.next_event().await);
    let (Frame::Pending { stream }, _) = wire::decode(data.as_bytes(), 1024).unwrap() else { panic!("{data}") };
    let body = encode(&[Frame::Session(SessionFrame { resume: None, stream: Some(stream) }), token("forged")]);
    assert_eq!(post(server.url("/realtime/bind?rt_v=3&rt_conn=1"), body).await.status(), 204);
    let (kind, _, data) = parse_event(&reader.next_event().await);
    assert_eq!(kind, "close");
    assert!(data.starts_with("close code=4005"), "{data}");
    assert!(server.state.registry.is_empty());
}

#[tokio::test]
async fn the_credential_claims_limit_channels_and_publishes() {
    let server = Server::start(authenticated()).await;
    let mut client = ws_open(&Urls::new(&server), "rt_v=3&rt_conn=1&room=lobby", &[fresh(), token("user:fay::lobby,news*:news*")]).await;
    split_hello(client.frame().await);
    let subscribe = |seq: u64, channel: &str| Frame::Subscribe { seq, channel: channel.into(), since: None };
    client.send_frames(&[subscribe(1, "news:a"), subscribe(2, "secret")], Carrier::Text).await;
    let frames = sync(&mut client, 1).await;
    assert!(frames.iter().any(|frame| matches!(frame, Frame::Subscribed { channel, .. } if channel == "news:a")), "{frames:?}");
    assert!(
        frames.iter().any(|frame| matches!(frame, Frame::Unsubscribed { channel, close, .. } if channel == "secret" && close.code == 4013)),
        "{frames:?}"
    );
    // Publishing: `news*` only (the room is not in the `publish` claim).
    client.send_raw_text("msg s=3 k=t n=1\nx").await;
    client.send_raw_text("msg s=4 ch=news:a k=t n=1\ny").await;
    let frames = sync(&mut client, 2).await;
    assert!(frames.iter().any(|frame| matches!(frame, Frame::Nack { reply_to: 3, close, .. } if close.code == 4013)), "{frames:?}");
    let delivered: Vec<_> = frames.iter().filter_map(message_of).map(|(_, body, from)| (body, from)).collect();
    assert_eq!(delivered, [("y".to_owned(), Some("fay".to_owned()))]);
    // A refresh whose claims no longer allow `news:a` ends that subscription.
    client.send_frames(&[token("user:fay::lobby:news*")], Carrier::Text).await;
    let frames = sync(&mut client, 3).await;
    assert!(frames.iter().any(|frame| matches!(frame, Frame::Authed { .. })), "{frames:?}");
    assert!(
        frames.iter().any(|frame| matches!(frame, Frame::Unsubscribed { channel, close, reply_to: None, .. } if channel == "news:a" && close.code == 4013)),
        "{frames:?}"
    );
    // A room the claim does not allow is left at once.
    let mut other = ws_open(&Urls::new(&server), "rt_v=3&rt_conn=1&room=closed", &[fresh(), token("user:gus::news*")]).await;
    split_hello(other.frame().await);
    let frames = sync(&mut other, 1).await;
    assert!(
        frames.iter().any(|frame| matches!(frame, Frame::Unsubscribed { channel, close, .. } if channel == "closed" && close.code == 4013)),
        "{frames:?}"
    );
}

/// Captures what the server logs at info level on this test's thread (its runtime's thread).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn no_credential_key_or_stream_id_reaches_the_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_ansi(false).with_writer(captured.clone()).finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let server = Server::start(authenticated()).await;
    let urls = Urls::new(&server);
    let secret_token = "user:henry:60000:lobby,news*:news*";
    let mut client = ws_open(&urls, "rt_v=3&rt_conn=1&room=lobby", &[fresh(), token(secret_token)]).await;
    let (hello, _) = split_hello(client.frame().await);
    client.send_frames(&[token("user:henry:70000"), text(1, "x")], Carrier::Text).await;
    sync(&mut client, 1).await;
    client.send_frames(&[token("user:mallory:1")], Carrier::Text).await;
    closed(&mut client).await;
    let mut refused = ws_open(&urls, "rt_v=3&rt_conn=2", &[fresh(), token("forged-credential")]).await;
    closed(&mut refused).await;
    let mut reader = SseReader::new(reqwest::get(urls.http("/realtime/sse?rt_v=3&rt_conn=3&room=lobby")).await.unwrap());
    let (_, _, data) = parse_event(&reader.next_event().await);
    let (Frame::Pending { stream }, _) = wire::decode(data.as_bytes(), 1024).unwrap() else { panic!("{data}") };
    let bind = Frame::Session(SessionFrame { stream: Some(stream.clone()), ..match resume(&hello, 0) { Frame::Session(session) => session, _ => unreachable!() } });
    assert_eq!(post(urls.http("/realtime/bind?rt_v=3&rt_conn=3"), encode(&[bind, token(secret_token)])).await.status(), 204);
    reader.next_event().await;
    let upload = encode(&[resume(&hello, 0), token("user:henry:80000"), text(2, "y")]);
    assert_eq!(post(urls.http("/realtime/send?rt_v=3&rt_conn=3"), upload).await.status(), 204);
    let upload = encode(&[resume(&hello, 0), token("not-a-valid-one")]);
    assert_eq!(post(urls.http("/realtime/send?rt_v=3&rt_conn=3"), upload).await.status(), 401);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("attached") && logs.contains("credential refused"), "the capture works: {logs}");
    for secret in [secret_token, "user:", "forged-credential", "not-a-valid-one", &hello.session_id, &hello.secret, &stream] {
        assert!(!logs.contains(secret), "{secret:?} in the logs:\n{logs}");
    }
}

/// Review finding 1: the room of a connect (`room=`, recovering from `rt_since`) is a subscribe
/// like any other: a credential whose `channels` claim does not cover it gets `unsubscribed
/// code=4013` and nothing of the channel, neither its epoch nor its history, on every transport.
#[tokio::test]
async fn a_room_join_is_checked_against_the_channels_claim_before_anything_is_replayed() {
    let server = Server::start(authenticated()).await;
    let urls = Urls::new(&server);
    for text in ["top secret 1", "top secret 2"] {
        assert_eq!(server.publish("channel=vault", "text/plain", text).await.status(), 202);
    }
    // The epoch, as an allowed subscriber sees it (the attacker's first probe leaked it).
    let mut owner = ws_open(&urls, "rt_v=3&rt_conn=1&room=vault", &[fresh(), token("user:owner::vault")]).await;
    split_hello(owner.frame().await);
    let frames = sync(&mut owner, 1).await;
    let epoch = frames
        .iter()
        .find_map(|frame| match frame {
            Frame::Subscribed { channel, position, .. } if channel == "vault" => Some(position.epoch),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the owner is subscribed: {frames:?}"));
    let since = format!("{epoch:016x}.0");
    let refused = |frames: &[Frame]| {
        assert!(
            frames.iter().any(|frame| matches!(frame, Frame::Unsubscribed { channel, close, .. } if channel == "vault" && close.code == 4013)),
            "{frames:?}"
        );
        assert!(!frames.iter().any(|frame| matches!(frame, Frame::Subscribed { .. } | Frame::Gap { .. })), "{frames:?}");
        assert!(frames.iter().all(|frame| message_of(frame).is_none()), "history leaked: {frames:?}");
    };
    for query in ["rt_v=3&rt_conn=1&room=vault".to_owned(), format!("rt_v=3&rt_conn=1&room=vault&rt_since={since}")] {
        // A long poll: its answer is everything the session had queued.
        let frames = post_frames(urls.http(&format!("/realtime/poll?{query}")), encode(&[fresh(), token("user:eve::public")])).await;
        split_hello(frames[0].clone());
        refused(&frames);
        // A WebSocket.
        let mut eve = ws_open(&urls, &query, &[fresh(), token("user:eve::public")]).await;
        split_hello(eve.frame().await);
        refused(&sync(&mut eve, 1).await);
        // A later publish does not reach her either.
        assert_eq!(server.publish("channel=vault", "text/plain", "top secret 3").await.status(), 202);
        let later = sync(&mut eve, 2).await;
        assert!(later.iter().all(|frame| message_of(frame).is_none() && !matches!(frame, Frame::Subscribed { .. })), "{later:?}");
    }
    assert_eq!(server.state.registry.room_size("vault"), 1, "only the owner is a member");
}

/// Review finding 5: a resume by another principal (who has the key) is a failed resume: the
/// old session ends only once the fresh one is certain, with 4004, leaving the registry and its
/// channels at once; one refused by a limit ends nothing.
#[tokio::test]
async fn a_resume_by_another_principal_replaces_the_session_only_once_admitted() {
    let server = Server::start(Config { max_sessions: 1, ..authenticated() }).await;
    let urls = Urls::new(&server);
    let mut alice = ws_open(&urls, "rt_v=3&rt_conn=1&room=r5", &[fresh(), token("user:alice")]).await;
    let (hello, _) = split_hello(alice.frame().await);
    sync(&mut alice, 1).await;
    // The server is full: Bob's attempt is refused by the limit, and Alice keeps her session.
    let mut bob = ws_open(&urls, "rt_v=3&rt_conn=2&room=r5", &[resume(&hello, 0), token("user:bob")]).await;
    assert_eq!(closed(&mut bob).await.code, close_code::LIMIT_EXCEEDED);
    let frames = sync(&mut alice, 2).await;
    assert!(!frames.iter().any(|frame| matches!(frame, Frame::Close(_))), "{frames:?}");
    assert!(server.state.registry.get(&hello.session_id).is_some_and(|session| !session.is_ended()));
    assert_eq!(server.state.registry.room_size("r5"), 1);
}

/// With room for the fresh session, the old one gets 4004 and is gone by the new hello.
#[tokio::test]
async fn a_resume_by_another_principal_ends_the_old_session_with_4004() {
    let server = Server::start(authenticated()).await;
    let urls = Urls::new(&server);
    let mut alice = ws_open(&urls, "rt_v=3&rt_conn=1&room=r5", &[fresh(), token("user:alice")]).await;
    let (hello, _) = split_hello(alice.frame().await);
    sync(&mut alice, 1).await;
    let mut bob = ws_open(&urls, "rt_v=3&rt_conn=2&room=r5", &[resume(&hello, 0), token("user:bob")]).await;
    let (fresh_hello, _) = split_hello(bob.frame().await);
    assert!(!fresh_hello.resumed);
    assert!(server.state.registry.get(&hello.session_id).is_none(), "left the registry at once");
    assert_eq!(server.state.registry.room_size("r5"), 1, "and its channels: only Bob is in the room");
    assert_eq!(closed(&mut alice).await.code, close_code::REPLACED);
}

/// [`TestAuth`], counting the credentials it was asked to verify.
struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Authenticator for Counting {
    fn verify(&self, credential: Option<&str>) -> Result<Option<Principal>, Refusal> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        TestAuth.verify(credential)
    }
}

fn counting(limits: realtime_server::limits::LimitConfig) -> (Config, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (Config { authenticator: AuthHook::new(Counting(count.clone())), limits, ..Config::default() }, count)
}

fn verified(count: &std::sync::atomic::AtomicUsize) -> usize {
    count.load(std::sync::atomic::Ordering::SeqCst)
}

/// Review finding 2: a batch holds at most one `token` (more is 4000 before any is verified),
/// and a `token` is charged to the session's rate before its signature is checked.
#[tokio::test]
async fn in_band_tokens_are_one_per_batch_and_charged_to_the_rate_before_they_are_verified() {
    let limits = realtime_server::limits::LimitConfig {
        messages_per_sec: 1,
        messages_burst: 2,
        rate_slowdown: Duration::from_millis(50),
        ..Default::default()
    };
    let (config, count) = counting(limits);
    let server = Server::start(config).await;
    let urls = Urls::new(&server);
    // Many tokens in one batch: refused, none verified.
    let mut client = ws_open(&urls, "rt_v=3&rt_conn=1&room=t2", &[fresh(), token("user:tom")]).await;
    split_hello(client.frame().await);
    assert_eq!(verified(&count), 1);
    let many: Vec<Frame> = (0..50).map(|_| token("user:tom")).collect();
    client.send_frames(&many, Carrier::Text).await;
    assert_eq!(closed(&mut client).await.code, close_code::PROTOCOL_ERROR);
    assert_eq!(verified(&count), 1, "no token of the batch was verified");
    // One token a batch, over the rate: the batch past the burst is refused unverified.
    let mut client = ws_open(&urls, "rt_v=3&rt_conn=1&room=t2", &[fresh(), token("user:tom")]).await;
    split_hello(client.frame().await);
    for _ in 0..4 {
        client.send_frames(&[token("user:tom")], Carrier::Text).await;
    }
    assert_eq!(closed(&mut client).await.code, close_code::LIMIT_EXCEEDED);
    assert_eq!(verified(&count), 2 + 2, "the connect and the two tokens of the burst");
}

/// Review finding 2, before authentication: connect credentials are counted per IP before
/// their signature is checked; over the rate a connect is refused unverified.
#[tokio::test]
async fn connect_credentials_are_limited_per_ip_before_they_are_verified() {
    let limits = realtime_server::limits::LimitConfig { credential_attempts_per_sec: 1, credential_attempts_burst: 3, ..Default::default() };
    let (config, count) = counting(limits);
    let server = Server::start(config).await;
    let urls = Urls::new(&server);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = post(urls.http("/realtime/poll?rt_v=3&rt_conn=1&room=t2"), encode(&[fresh(), token("forged")])).await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 503, 503, 503]);
    assert_eq!(verified(&count), 3);
    assert_eq!(server.state.metrics.trips(realtime_server::metrics::LimitKind::credential_rate), 3);
}

/// Review finding 3: a v3 WebSocket may buffer up to the batch limit until its first message
/// (axum's WebSocket cannot raise a small first limit afterwards), so few may wait at once, per
/// client IP and in total; over either cap the connection is closed 4003 before anything is read.
#[tokio::test]
async fn few_websockets_may_wait_for_their_first_message_per_ip_and_in_total() {
    let limits = realtime_server::limits::LimitConfig { max_first_message_waits_per_ip: 2, max_first_message_waits: 3, ..Default::default() };
    let server = common::start_edge(Config { limits, ..Config::default() }).await;
    let waiting = || server.state.v3.first_message_waits.len();
    let query = "rt_v=3&rt_conn=1&room=w3";
    let mut first = common::ws_from("127.0.0.2", &server, query).await;
    let _second = common::ws_from("127.0.0.2", &server, query).await;
    common::eventually("two waiting", || waiting() == 2).await;
    let mut third = common::ws_from("127.0.0.2", &server, query).await;
    assert_eq!(closed(&mut third).await.code, close_code::LIMIT_EXCEEDED, "per IP");
    let _other = common::ws_from("127.0.0.3", &server, query).await;
    common::eventually("three waiting", || waiting() == 3).await;
    let mut late = common::ws_from("127.0.0.4", &server, query).await;
    assert_eq!(closed(&mut late).await.code, close_code::LIMIT_EXCEEDED, "in total");
    // A first message frees its slot at once.
    first.send_raw_text(&encode(&[fresh()])).await;
    split_hello(first.frame().await);
    common::eventually("two waiting", || waiting() == 2).await;
    let mut again = common::ws_from("127.0.0.4", &server, query).await;
    again.send_raw_text(&encode(&[fresh()])).await;
    split_hello(again.frame().await);
    assert_eq!(server.state.metrics.trips(realtime_server::metrics::LimitKind::first_message_waits), 2);
}

/// Review finding 4: event streams waiting for their bind are capped per client IP (and in
/// total, checked and inserted under one lock), so a few addresses cannot fill the table that
/// every v3 SSE connect needs a place in.
#[tokio::test]
async fn pending_event_streams_are_capped_per_ip() {
    let limits = realtime_server::limits::LimitConfig { max_pending_streams_per_ip: 2, ..Default::default() };
    let server = common::start_edge(Config { limits, ..Config::default() }).await;
    let open = |from: &'static str| {
        let url = server.url("/realtime/sse?rt_v=3&rt_conn=1&room=s4");
        async move { common::http_from(from).get(url).send().await.unwrap() }
    };
    let pending_id = |mut reader: SseReader| async move {
        let (kind, _, data) = parse_event(&reader.next_event().await);
        assert_eq!(kind, "pending");
        let (Frame::Pending { stream }, _) = wire::decode(data.as_bytes(), 1024).unwrap() else { panic!("{data}") };
        (stream, reader)
    };
    let (first, _first_reader) = pending_id(SseReader::new(open("127.0.0.2").await)).await;
    let (_, _second_reader) = pending_id(SseReader::new(open("127.0.0.2").await)).await;
    assert_eq!(open("127.0.0.2").await.status(), 503, "the IP's pending cap");
    let (_, _other_reader) = pending_id(SseReader::new(open("127.0.0.3").await)).await;
    assert_eq!(server.state.v3.streams.len(), 3);
    // A bind frees its place.
    let bind = Frame::Session(SessionFrame { resume: None, stream: Some(first) });
    assert_eq!(post(server.url("/realtime/bind?rt_v=3&rt_conn=1"), encode(&[bind])).await.status(), 204);
    let (_, _third_reader) = pending_id(SseReader::new(open("127.0.0.2").await)).await;
    assert_eq!(server.state.metrics.trips(realtime_server::metrics::LimitKind::pending_streams_per_ip), 1);
}

/// Review finding 9: what may be printed with `{:?}` (a log line, a panic message) names no
/// session id, session key, stream id or credential.
#[test]
fn debug_output_names_no_session_secret_stream_id_or_credential() {
    let secrets = ["SID0123456789abcdefgh", "KEY0123456789abcdefgh", "STREAM0123456789abcde", "CREDENTIAL-0123456789"];
    let resume = Resume { session_id: secrets[0].into(), secret: secrets[1].into(), last: 7 };
    let session = SessionFrame { resume: Some(resume), stream: Some(secrets[2].into()) };
    let opening = realtime_server::v3::Opening { session: session.clone(), credential: Some(Credential(secrets[3].into())) };
    let request = realtime_server::session::ConnectRequest {
        room: Some("r".into()),
        conn: 1,
        resume: Some(realtime_server::session::ResumeRequest { session_id: secrets[0].into(), key: secrets[1].into(), last: 7 }),
        since: None,
    };
    for printed in [format!("{session:?}"), format!("{opening:?}"), format!("{request:?}"), format!("{:?}", Frame::Session(session.clone()))] {
        for secret in secrets {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains('7') || printed.contains("Opening"), "{printed}");
    }
}

/// Review finding 8: a refresh cannot go back to an older credential (one that expires before
/// the session's), whose claims may be broader than the current ones.
#[tokio::test]
async fn a_refresh_with_an_older_credential_is_refused() {
    let server = Server::start(authenticated()).await;
    let urls = Urls::new(&server);
    let mut client = ws_open(&urls, "rt_v=3&rt_conn=1&room=r8", &[fresh(), token("user:hal:60000:r8")]).await;
    split_hello(client.frame().await);
    // A newer one is taken.
    client.send_frames(&[token("user:hal:120000:r8")], Carrier::Text).await;
    let frames = sync(&mut client, 1).await;
    assert!(frames.iter().any(|frame| matches!(frame, Frame::Authed { .. })), "{frames:?}");
    // An older one with broader claims is refused, and grants nothing.
    client.send_frames(&[token("user:hal:30000:*")], Carrier::Text).await;
    let close = closed(&mut client).await;
    assert_eq!(close.code, 4005, "{close:?}");
}
