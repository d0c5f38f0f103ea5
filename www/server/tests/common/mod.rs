//! Test helpers: a server on 127.0.0.1:0 and small protocol clients over real sockets.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use realtime_client::core::wire::{self, Carrier, Frame, Hello, Message as WireMessage, Payload};
use realtime_server::{app, AppState, Config};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for anything a test waits for; never a way to let a race settle.
pub const LIMIT: Duration = Duration::from_secs(10);

pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
}

impl Server {
    pub async fn start(config: Config) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AppState::new(config);
        let router = app(state.clone());
        // As in main.rs: no Nagle delay.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Server { addr, state }
    }

    pub async fn default() -> Server {
        Server::start(Config::default()).await
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/realtime?{}", self.addr, query)
    }

    pub async fn publish(&self, query: &str, content_type: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url(&format!("/realtime/publish?{query}")))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Decoded frames not yet consumed, with whether their WebSocket message was binary.
    queue: VecDeque<(Frame, bool)>,
    pub closed: Option<(u16, String)>,
    /// Shows frames as the v1 tests expect them ([`v1_view`]); channel tests turn it off.
    pub v1: bool,
}

impl WsClient {
    /// A v1-view client; a URL without `room=` gets `room=lobby` (the room a session had
    /// before channels: v2 sessions without `room=` have no room channel).
    pub async fn connect(url: &str) -> WsClient {
        let url = with_room(url);
        let url = url.as_str();
        let (ws, _) = tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(url)).await.unwrap().unwrap();
        WsClient { ws, queue: VecDeque::new(), closed: None, v1: true }
    }

    /// A client that sees every frame as the server sent it (channel tests).
    pub async fn connect_v2(url: &str) -> WsClient {
        let (ws, _) = tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(url)).await.unwrap().unwrap();
        WsClient { ws, queue: VecDeque::new(), closed: None, v1: false }
    }

    /// The next frame from the server, or None once the socket closed.
    pub async fn next(&mut self) -> Option<(Frame, bool)> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            let message = tokio::time::timeout(LIMIT, self.ws.next()).await.expect("server silent for too long");
            let (bytes, binary) = match message {
                Some(Ok(Message::Text(text))) => (text.as_str().as_bytes().to_vec(), false),
                Some(Ok(Message::Binary(bytes))) => (bytes.to_vec(), true),
                Some(Ok(Message::Close(frame))) => {
                    self.closed = frame.map(|frame| (u16::from(frame.code), frame.reason.to_string()));
                    return None;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            };
            let frames = wire::decode_all(&bytes, 1 << 24).expect("server frames decode");
            assert!(!frames.is_empty(), "a websocket message carries at least one frame");
            let v1 = self.v1;
            self.queue.extend(frames.into_iter().filter_map(|frame| if v1 { v1_view(frame) } else { Some(frame) }).map(|frame| (frame, binary)));
        }
    }

    pub async fn frame(&mut self) -> Frame {
        self.next().await.expect("connection open").0
    }

    pub async fn hello(&mut self) -> Hello {
        match self.frame().await {
            Frame::Hello(hello) => hello,
            other => panic!("expected hello, got {other:?}"),
        }
    }

    /// The next msg frame, skipping acks, pings and pongs.
    pub async fn message(&mut self) -> WireMessage {
        loop {
            match self.frame().await {
                Frame::Message(message) => return message,
                Frame::Ack { .. } | Frame::Ping { .. } | Frame::Pong { .. } => continue,
                other => panic!("expected msg, got {other:?}"),
            }
        }
    }

    pub async fn send_frames(&mut self, frames: &[Frame], carrier: Carrier) {
        let mut bytes = Vec::new();
        for frame in frames {
            wire::encode(frame, carrier, &mut bytes);
        }
        let message = match carrier {
            Carrier::Binary => Message::Binary(bytes.into()),
            _ => Message::Text(String::from_utf8(bytes).unwrap().into()),
        };
        self.ws.send(message).await.unwrap();
    }

    pub async fn send_raw_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_owned().into())).await.unwrap();
    }

    /// Round trip a ping: every frame the server queued before it has been received.
    pub async fn sync(&mut self, time: u64) -> Vec<Frame> {
        self.send_frames(&[Frame::Ping { time }], Carrier::Text).await;
        let mut before = Vec::new();
        loop {
            match self.frame().await {
                Frame::Pong { time: echoed } if echoed == time => return before,
                other => before.push(other),
            }
        }
    }
}

pub fn text_msg(seq: u64, text: &str) -> Frame {
    Frame::Message(WireMessage { seq, event: None, payload: Payload::Text(text.into()) })
}

/// Reads an HTTP response body chunk by chunk, split into SSE events.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> SseReader {
        SseReader { response, buffer: String::new() }
    }

    /// The next event's raw text (without the blank line), skipping comment-only blocks.
    pub async fn next_event(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                if event.lines().all(|line| line.starts_with(':')) {
                    continue;
                }
                return event;
            }
            let chunk = tokio::time::timeout(LIMIT, self.response.chunk()).await.expect("sse silent").unwrap();
            let chunk = chunk.expect("sse stream ended");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

impl SseReader {
    /// Everything left in the stream until it ends (waits for the end).
    pub async fn rest(&mut self) -> String {
        let mut text = std::mem::take(&mut self.buffer);
        while let Some(chunk) = self.response.chunk().await.unwrap() {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        text
    }
}

/// Decodes an SSE event the way a browser's EventSource does: (event type, id, data).
pub fn parse_event(event: &str) -> (String, Option<String>, String) {
    let mut kind = String::from("message");
    let mut id = None;
    let mut data: Vec<&str> = Vec::new();
    for line in event.split('\n') {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => kind = value.to_owned(),
            "id" => id = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    (kind, id, data.join("\n"))
}

pub async fn poll(server: &Server, query: &str) -> Vec<Frame> {
    let query = with_room(query);
    let response = tokio::time::timeout(LIMIT * 4, reqwest::get(server.url(&format!("/realtime/poll?{query}"))))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-realtime-frames");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body = response.bytes().await.unwrap();
    wire::decode_all(&body, 1 << 24).unwrap().into_iter().filter_map(v1_view).collect()
}

/// [`poll`] without the v1 view: every frame as the server sent it.
pub async fn poll_v2(server: &Server, query: &str) -> Vec<Frame> {
    let response = tokio::time::timeout(LIMIT * 4, reqwest::get(server.url(&format!("/realtime/poll?{query}"))))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    wire::decode_all(&body, 1 << 24).unwrap()
}

impl WsClient {
    /// A client over an already upgraded stream (e.g. one bound to a chosen source address).
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> WsClient {
        WsClient { ws, queue: VecDeque::new(), closed: None, v1: true }
    }
}

/// `url` (or a query) with `room=lobby` added when it names no room.
pub fn with_room(url: &str) -> String {
    if url.contains("room=") || url.contains("rt_probe=") {
        url.to_owned()
    } else if url.contains("://") && !url.contains('?') {
        format!("{url}?room=lobby")
    } else {
        format!("{url}&room=lobby")
    }
}

/// A server frame as the tests written for rooms (before channels) expect it: a channel message
/// is a plain `msg`, and a room channel's own `subscribed` (no `for=`) is left out. Its seq still
/// counts: a test that resumes from a seq it computes must count it.
pub fn v1_view(frame: Frame) -> Option<Frame> {
    match frame {
        Frame::ChannelMessage(wire::ChannelMessage { message, .. }) => Some(Frame::Message(message)),
        Frame::Subscribed { reply_to: None, .. } => None,
        other => Some(other),
    }
}

/// Polls `condition` every 20 ms until it holds or `LIMIT` passes.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + LIMIT;
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server on `edge::serve` (the binary's accept loop), so requests carry their client IP.
pub async fn start_edge(config: Config) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::new(config);
    let router = app(state.clone());
    tokio::spawn(realtime_server::edge::serve(listener, None, router, state.clone(), std::future::pending(), Duration::from_secs(1)));
    Server { addr, state }
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.0/8 is all loopback).
pub async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A WebSocket to `server` from the loopback address `from`.
pub async fn ws_from(from: &str, server: &Server, query: &str) -> WsClient {
    let stream = connect_from(from, server.addr).await;
    let connect = tokio_tungstenite::client_async(server.ws_url(query), MaybeTlsStream::Plain(stream));
    let (ws, _) = tokio::time::timeout(LIMIT, connect).await.unwrap().unwrap();
    WsClient::from_stream(ws)
}

/// An HTTP client whose connections come from the loopback address `from`.
pub fn http_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(from.parse::<std::net::IpAddr>().unwrap()).build().unwrap()
}
