//! One simulated client: connects, completes the handshake of its protocol, then stays until the
//! run ends, answering heartbeats and counting the messages it receives.
//!
//! Both protocols are driven the same way (one tokio task per WebSocket, the same WebSocket
//! stack and buffer sizes), so the only difference between the two servers' runs is the server
//! and its protocol:
//! - realtime (wire protocol v1): the hello must come first; `ping` gets a `pong`; every `msg`
//!   must carry the next seq (checked, exactly once and in order); received messages are acked
//!   cumulatively after 20 ms, as the browser client does on a WebSocket (the server keeps each
//!   message in its replay buffer until acked, so a client that never acked would make the
//!   server do work a real one does not cause).
//! - socket.io: Engine.IO open, `40` connect and its answer; `2` gets `3`; every `42[...]` event
//!   counts as one message (socket.io has no acks or sequence numbers by default).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use realtime_client::core::wire::{self, Carrier, Frame};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::socketio::{self, Packet};

/// How long one connection may take from TCP connect to a usable session.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The browser client's ack debounce on a WebSocket (README: "20 ms on a WebSocket").
const ACK_DELAY: Duration = Duration::from_millis(20);
/// Largest incoming frame body the realtime decoder accepts (the server's default `max`).
const MAX_BODY_BYTES: usize = wire::DEFAULT_MAX_BODY_BYTES;
/// First error messages kept for the report.
const KEPT_ERRORS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The reference server: `ws://ADDR/realtime?room=R&rt_v=2&rt_conn=1`.
    Realtime,
    /// A socket.io 4 server: `ws://ADDR/socket.io/?EIO=4&transport=websocket&room=R`.
    SocketIo,
}

impl Protocol {
    pub fn parse(name: &str) -> Option<Protocol> {
        match name {
            "realtime" => Some(Protocol::Realtime),
            "socketio" => Some(Protocol::SocketIo),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Realtime => "realtime",
            Protocol::SocketIo => "socketio",
        }
    }

    pub fn url(self, address: &str, room: &str) -> String {
        match self {
            // rt_conn numbers the connections of one client instance; each session here is its
            // own client with one connection.
            Protocol::Realtime => format!("ws://{address}/realtime?room={room}&rt_v=2&rt_conn=1"),
            Protocol::SocketIo => socketio::url(address, room),
        }
    }
}

/// What every session of a run does.
#[derive(Debug)]
pub struct Plan {
    pub protocol: Protocol,
    pub url: String,
    /// Sessions in the run (for the completion count).
    pub sessions: usize,
    /// Messages each session must receive to be complete; 0 for an idle run.
    pub expect_messages: u64,
}

/// Counters shared by every session of a run.
#[derive(Debug, Default)]
pub struct Counters {
    /// Sessions whose handshake finished.
    pub ready: AtomicUsize,
    /// Sessions that never became ready.
    pub failed: AtomicUsize,
    /// Ready sessions that the server closed or that broke before the run ended.
    pub lost: AtomicUsize,
    /// Heartbeat answers sent (pong frames / `3` packets).
    pub pongs_sent: AtomicU64,
    /// Application messages received, all sessions.
    pub received: AtomicU64,
    /// Realtime messages whose seq was not the next one (must stay 0).
    pub out_of_order: AtomicU64,
    /// Sessions that received `expect_messages` messages.
    pub complete: AtomicUsize,
    /// When the last session completed.
    pub completed_at: Mutex<Option<Instant>>,
    /// Notified when every session has completed.
    pub all_complete: Notify,
    /// Notified whenever a session becomes ready or fails.
    pub settled: Notify,
    errors: Mutex<Vec<String>>,
}

impl Counters {
    fn note_error(&self, error: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if errors.len() < KEPT_ERRORS {
            errors.push(error);
        }
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn count_message(&self, plan: &Plan, received_here: u64) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if plan.expect_messages > 0 && received_here == plan.expect_messages {
            let complete = self.complete.fetch_add(1, Ordering::AcqRel) + 1;
            if complete == plan.sessions {
                *self.completed_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
                self.all_complete.notify_one();
            }
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Runs one session until `shutdown` turns true. `permit` bounds concurrent handshakes and is
/// released once this session is ready.
pub async fn run(plan: Arc<Plan>, counters: Arc<Counters>, permit: OwnedSemaphorePermit, mut shutdown: watch::Receiver<bool>) {
    let socket = match timeout(HANDSHAKE_TIMEOUT, handshake(&plan)).await {
        Ok(Ok(socket)) => socket,
        Ok(Err(error)) => return fail(&counters, error),
        Err(_) => return fail(&counters, "handshake timed out".to_owned()),
    };
    drop(permit);
    counters.ready.fetch_add(1, Ordering::AcqRel);
    counters.settled.notify_one();
    let ended_by_server = match plan.protocol {
        Protocol::Realtime => realtime_loop(&plan, &counters, socket, &mut shutdown).await,
        Protocol::SocketIo => socketio_loop(&plan, &counters, socket, &mut shutdown).await,
    };
    if let Err(error) = ended_by_server {
        counters.lost.fetch_add(1, Ordering::AcqRel);
        counters.note_error(error);
    }
}

fn fail(counters: &Counters, error: String) {
    counters.failed.fetch_add(1, Ordering::AcqRel);
    counters.note_error(error);
    counters.settled.notify_one();
}

async fn handshake(plan: &Plan) -> Result<Socket, String> {
    // A small read buffer: the load generator holds thousands of sockets and reads small frames.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(plan.url.as_str(), Some(config), true)
        .await
        .map_err(|error| format!("connect: {error}"))?;
    match plan.protocol {
        Protocol::Realtime => {
            let bytes = next_payload(&mut socket).await?;
            match wire::decode(&bytes, MAX_BODY_BYTES) {
                Ok((Frame::Hello(_), _)) => Ok(socket),
                Ok((frame, _)) => Err(format!("expected hello, got {frame:?}")),
                Err(error) => Err(format!("bad first frame: {}", error.as_str())),
            }
        }
        Protocol::SocketIo => {
            let open = next_payload(&mut socket).await?;
            if socketio::classify(&String::from_utf8_lossy(&open)) != Packet::Open {
                return Err(format!("expected an Engine.IO open packet, got {:?}", String::from_utf8_lossy(&open)));
            }
            socket.send(Message::text(socketio::CONNECT)).await.map_err(|error| format!("send connect: {error}"))?;
            loop {
                let packet = next_payload(&mut socket).await?;
                match socketio::classify(&String::from_utf8_lossy(&packet)) {
                    Packet::Connected => return Ok(socket),
                    Packet::ConnectError => return Err(format!("connect refused: {}", String::from_utf8_lossy(&packet))),
                    Packet::Close => return Err("closed during the handshake".to_owned()),
                    _ => {}
                }
            }
        }
    }
}

/// The next text or binary message's bytes.
async fn next_payload(socket: &mut Socket) -> Result<Vec<u8>, String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_bytes().to_vec()),
            Some(Ok(Message::Binary(bytes))) => return Ok(bytes.to_vec()),
            Some(Ok(Message::Close(frame))) => return Err(format!("closed by the server: {frame:?}")),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(format!("read: {error}")),
            None => return Err("connection ended".to_owned()),
        }
    }
}

/// Ok when the run ended it, Err when the server or the network did first.
async fn realtime_loop(plan: &Plan, counters: &Counters, socket: Socket, shutdown: &mut watch::Receiver<bool>) -> Result<(), String> {
    let (mut sink, mut stream) = socket.split();
    let mut last_seq = 0u64;
    let mut acked_seq = 0u64;
    let mut ack_at: Option<Instant> = None;
    let mut received_here = 0u64;
    loop {
        let message = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = sleep_until(ack_at.unwrap_or_else(Instant::now)), if ack_at.is_some() => {
                ack_at = None;
                acked_seq = last_seq;
                let ack = wire::encode_to_vec(&Frame::Ack { seq: acked_seq }, Carrier::Text);
                send_text(&mut sink, ack).await?;
                continue;
            }
            message = stream.next() => message,
        };
        let bytes = match message {
            Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
            Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
            Some(Ok(Message::Close(frame))) => return Err(format!("closed by the server: {frame:?}")),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(format!("read: {error}")),
            None => return Err("connection ended".to_owned()),
        };
        let frames = wire::decode_all(&bytes, MAX_BODY_BYTES).map_err(|error| format!("bad frame: {}", error.as_str()))?;
        let mut replies = Vec::new();
        for frame in frames {
            let message = match frame {
                Frame::Message(message) => Some(message),
                Frame::ChannelMessage(channel_message) => Some(channel_message.message),
                other => {
                    // A channel control frame (the room's `subscribed`) takes a seq, not a count.
                    if let Some(seq) = other.ordered_seq() {
                        last_seq = last_seq.max(seq);
                    }
                    match other {
                        Frame::Ping { time } => {
                            wire::encode(&Frame::Pong { time }, Carrier::Text, &mut replies);
                            counters.pongs_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Frame::Close(close) => return Err(format!("close frame {} {}", close.code, close.reason)),
                        Frame::Hello(_) => return Err("a second hello".to_owned()),
                        _ => {}
                    }
                    None
                }
            };
            match message {
                Some(message) => {
                    if message.seq != last_seq + 1 {
                        counters.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    last_seq = last_seq.max(message.seq);
                    received_here += 1;
                    counters.count_message(plan, received_here);
                }
                None => {}
            }
        }
        if last_seq > acked_seq && ack_at.is_none() {
            ack_at = Some(Instant::now() + ACK_DELAY);
        }
        if !replies.is_empty() {
            send_text(&mut sink, replies).await?;
        }
    }
}

async fn send_text<S>(sink: &mut S, bytes: Vec<u8>) -> Result<(), String>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    // Frames encoded with the text carrier are UTF-8 (binary payloads would go as base64).
    let text = String::from_utf8(bytes).map_err(|_| "encoded frame is not utf-8".to_owned())?;
    sink.send(Message::text(text)).await.map_err(|error| format!("send: {error}"))
}

async fn socketio_loop(plan: &Plan, counters: &Counters, socket: Socket, shutdown: &mut watch::Receiver<bool>) -> Result<(), String> {
    let (mut sink, mut stream) = socket.split();
    let mut received_here = 0u64;
    loop {
        let message = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            message = stream.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => return Err(format!("closed by the server: {frame:?}")),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(format!("read: {error}")),
            None => return Err("connection ended".to_owned()),
        };
        match socketio::classify(text.as_str()) {
            Packet::Event => {
                received_here += 1;
                counters.count_message(plan, received_here);
            }
            Packet::Ping => {
                sink.send(Message::text(socketio::PONG)).await.map_err(|error| format!("send: {error}"))?;
                counters.pongs_sent.fetch_add(1, Ordering::Relaxed);
            }
            Packet::Close => return Err("Engine.IO close packet".to_owned()),
            _ => {}
        }
    }
}
