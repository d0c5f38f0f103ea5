//! `soak proxy-check --proxy ADDR --direct ADDR`: the realtime transports through a reverse proxy
//! (.ci/proxy-tests.sh runs it once per proxy). Checks, each with a deadline:
//! - a WebSocket upgrade through the proxy reaches the hello, and a ping comes back as a pong;
//! - an SSE stream through the proxy gets its hello, then each of several messages published
//!   (directly to the server, so only the proxy's delay is measured) after the stream opened
//!   arrives within [`SSE_LIMIT`] (measured from the publish request to the event's bytes);
//! - a long poll through the proxy: a hello, then a held poll answered by a later publish, and a
//!   `POST /realtime/send` (204) whose message comes back in the next poll with its ack.
//!
//! Prints one line per check with the figures; exits non-zero at the first failure.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use realtime_client::core::wire::{self, Carrier, ChannelMessage, Frame, Message as WireMessage, Payload};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::net::{self, Stream};

/// The bound on an SSE event through a proxy (haproxy without `option http-no-delay`
/// held each event about 200 ms).
pub const SSE_LIMIT: Duration = Duration::from_millis(100);
const STEP: Duration = Duration::from_secs(10);
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub async fn run(proxy: SocketAddr, direct: SocketAddr) -> io::Result<()> {
    let tag = format!("{}", std::process::id());
    websocket(proxy, &tag).await?;
    sse(proxy, direct, &tag).await?;
    long_poll(proxy, direct, &tag).await?;
    Ok(())
}

fn fail(message: String) -> io::Error {
    io::Error::other(message)
}

async fn publish(direct: SocketAddr, room: &str, text: &str) -> io::Result<()> {
    let path = format!("/realtime/publish?room={room}");
    let response =
        net::request(LOCAL, direct, "POST", &path, &[("Content-Type", "text/plain")], text.as_bytes(), STEP).await?;
    if response.status != 202 {
        return Err(fail(format!("publish answered {}", response.status)));
    }
    Ok(())
}

async fn websocket(proxy: SocketAddr, tag: &str) -> io::Result<()> {
    let started = Instant::now();
    let mut ws = net::websocket(LOCAL, proxy, &format!("room=proxy-ws-{tag}&rt_v=2&rt_conn=1"), STEP).await?;
    let first = tokio::time::timeout(STEP, ws.next()).await.map_err(|_| net::timed_out("websocket hello"))?;
    let bytes = match first {
        Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
        Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
        other => return Err(fail(format!("websocket: expected the hello, got {other:?}"))),
    };
    let hello = net::hello_of(&net::frames(&bytes)?)?;
    let hello_ms = started.elapsed().as_secs_f64() * 1e3;
    let sent = Instant::now();
    ws.send(Message::Text(String::from_utf8_lossy(&wire::encode_to_vec(&Frame::Ping { time: 7 }, Carrier::Text)).into_owned().into()))
        .await
        .map_err(|error| fail(format!("websocket send: {error}")))?;
    loop {
        let next = tokio::time::timeout(STEP, ws.next()).await.map_err(|_| net::timed_out("websocket pong"))?;
        let bytes = match next {
            Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
            Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
            Some(Ok(_)) => continue,
            other => return Err(fail(format!("websocket: expected a pong, got {other:?}"))),
        };
        if net::frames(&bytes)?.iter().any(|frame| *frame == Frame::Pong { time: 7 }) {
            break;
        }
    }
    println!(
        "proxy-check: websocket upgrade -> hello in {hello_ms:.1} ms (session {}…), ping -> pong in {:.1} ms",
        hello.session_id.get(..4).unwrap_or(""),
        sent.elapsed().as_secs_f64() * 1e3
    );
    let _ = ws.close(None).await;
    Ok(())
}

async fn sse(proxy: SocketAddr, direct: SocketAddr, tag: &str) -> io::Result<()> {
    let room = format!("proxy-sse-{tag}");
    let mut stream = Stream::open(LOCAL, proxy, &format!("/realtime/sse?room={room}&rt_v=2&rt_conn=1"), &[]).await?;
    stream.wait_for(b"event: hello", Instant::now() + STEP).await?;
    let mut worst = Duration::ZERO;
    let mut figures = Vec::new();
    for round in 0..5 {
        let text = format!("sse-event-{tag}-{round}");
        let sent = Instant::now();
        publish(direct, &room, &text).await?;
        let arrived = stream.wait_for(text.as_bytes(), sent + STEP).await?;
        let took = arrived - sent;
        worst = worst.max(took);
        figures.push(format!("{:.1}", took.as_secs_f64() * 1e3));
    }
    println!("proxy-check: sse events published after the stream opened arrived in [{}] ms (limit {} ms)", figures.join(", "), SSE_LIMIT.as_millis());
    if worst > SSE_LIMIT {
        return Err(fail(format!("sse: an event took {:.1} ms through the proxy (limit {} ms)", worst.as_secs_f64() * 1e3, SSE_LIMIT.as_millis())));
    }
    Ok(())
}

async fn poll(proxy: SocketAddr, query: &str) -> io::Result<Vec<Frame>> {
    // A held poll lasts up to the server's hold (25 s by default): the step limit plus that.
    let response = net::request(LOCAL, proxy, "GET", &format!("/realtime/poll?{query}"), &[], b"", STEP * 4).await?;
    if response.status != 200 {
        return Err(fail(format!("poll answered {} ({}): {}", response.status, response.head, String::from_utf8_lossy(&response.body))));
    }
    net::frames(&response.body)
}

/// The text of a message frame (of the room channel, or plain) with server seq `seq`.
fn text_at(frame: &Frame, seq: u64) -> Option<&str> {
    let message = match frame {
        Frame::Message(message) | Frame::ChannelMessage(ChannelMessage { message, .. }) => message,
        _ => return None,
    };
    match &message.payload {
        Payload::Text(text) if message.seq == seq => Some(text),
        _ => None,
    }
}

async fn long_poll(proxy: SocketAddr, direct: SocketAddr, tag: &str) -> io::Result<()> {
    let room = format!("proxy-poll-{tag}");
    let base = format!("room={room}&rt_v=2&rt_conn=1");
    let hello = net::hello_of(&poll(proxy, &base).await?)?;
    let session = format!("{base}&rt_sid={}&rt_key={}", hello.session_id, hello.secret);

    // A held poll, answered by a publish made while it waits (if the publish wins the race, the
    // poll gets the message at once: the same outcome).
    // The room channel's `subscribed` is the session's first ordered frame (s=1), answered at once.
    let first = poll(proxy, &format!("{session}&rt_last=0")).await?;
    if !first.iter().any(|frame| matches!(frame, Frame::Subscribed { seq: 1, .. })) {
        return Err(fail(format!("the first poll lacks the room's subscribed: {first:?}")));
    }
    let held_query = format!("{session}&rt_last=1");
    let held = tokio::spawn(async move { poll(proxy, &held_query).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let published = Instant::now();
    publish(direct, &room, "held-poll-message").await?;
    let frames = held.await.map_err(|error| fail(format!("poll task: {error}")))??;
    let answered = published.elapsed();
    let got = frames.iter().any(|frame| text_at(frame, 2) == Some("held-poll-message"));
    if !got {
        return Err(fail(format!("held poll: expected the published message, got {frames:?}")));
    }

    // An upload, then the next poll brings its echo (the room includes the sender) and the ack.
    let mut body = Vec::new();
    wire::encode(&Frame::Message(WireMessage { seq: 1, event: None, payload: Payload::Text("uploaded".into()) }), Carrier::Text, &mut body);
    let sent = net::request(LOCAL, proxy, "POST", &format!("/realtime/send?{session}"), &[("Content-Type", "text/plain")], &body, STEP).await?;
    if sent.status != 204 {
        return Err(fail(format!("POST /realtime/send answered {}: {}", sent.status, String::from_utf8_lossy(&sent.body))));
    }
    let frames = poll(proxy, &format!("{session}&rt_last=2")).await?;
    let echoed = frames.iter().any(|frame| text_at(frame, 3) == Some("uploaded"));
    let acked = frames.iter().any(|frame| matches!(frame, Frame::Ack { seq: 1 }));
    if !echoed || !acked {
        return Err(fail(format!("after POST /realtime/send the next poll lacks the echo or the ack: {frames:?}")));
    }
    println!(
        "proxy-check: long poll -> hello; held poll answered {:.1} ms after the publish; POST /realtime/send 204, echo and ack in the next poll",
        answered.as_secs_f64() * 1e3
    );
    Ok(())
}
