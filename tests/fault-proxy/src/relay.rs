//! Data path: accept, classify, and relay one connection with the faults of its modes.
//!
//! One task per connection owns the four socket halves for the connection's whole life; the
//! two directions are futures that only borrow them. Dropping those futures therefore stops
//! relaying without closing anything, which is how a blackhole keeps sockets open. Every
//! deliberate close is `close_gracefully`: shut down both write halves (FIN), then read and
//! discard what the peers still send for a bounded time, because closing a socket with unread
//! input makes the kernel send RST instead, and a browser may then drop data it already got.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::head::{read_request_head, response_head_len, response_status, simple_response, HeadError, RequestHead, MAX_HEAD_BYTES};
use crate::mode::{Class, Mode};
use crate::{Ctl, Shared};

/// Largest response held back by SSE `buffer` mode; past it the connection is closed.
pub const MAX_BUFFERED_RESPONSE_BYTES: usize = 8 << 20;
/// How long a closing connection may take to read the peers' remaining input.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const BUF_BYTES: usize = 16 * 1024;

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, permits: Arc<Semaphore>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Typically EMFILE: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let shared = shared.clone();
                tokio::spawn(serve(shared, stream, permit));
            }
            Err(_) => {
                shared.stats.over_limit.fetch_add(1, Ordering::Relaxed);
                let (r, w) = stream.into_split();
                let body = "fault-proxy: too many live connections\n";
                tokio::spawn(reply_and_close(r, w, simple_response(503, "Service Unavailable", "text/plain", body, None, "")));
            }
        }
    }
}

fn classify(head: &RequestHead) -> Class {
    if head.is_websocket_upgrade() {
        return Class::WebSocket;
    }
    match head.path() {
        "/realtime/sse" => Class::Sse,
        "/realtime/poll" => Class::Poll,
        _ => Class::Http,
    }
}

/// Upstream → browser treatment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    Forward,
    /// Hold everything until upstream closes (SSE `buffer`).
    Buffer,
    /// Forward the response head only, then discard (WebSocket `silent`); a non-101 answer is
    /// forwarded whole, as there is no connection to silence.
    SilentAfterHead,
    Discard,
}

struct Streams {
    cr: OwnedReadHalf,
    cw: OwnedWriteHalf,
    up: Option<(OwnedReadHalf, OwnedWriteHalf)>,
}

async fn serve(shared: Arc<Shared>, client: TcpStream, permit: OwnedSemaphorePermit) {
    let (mut cr, cw) = client.into_split();
    let (head, rest) = match read_request_head(&mut cr).await {
        Ok(x) => x,
        Err(HeadError::Empty | HeadError::Io(_)) => return,
        Err(e) => {
            shared.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            let response = match e {
                HeadError::TooLarge => simple_response(431, "Request Header Fields Too Large", "text/plain", "fault-proxy: request head too large\n", None, ""),
                _ => simple_response(400, "Bad Request", "text/plain", "fault-proxy: malformed request head\n", None, ""),
            };
            reply_and_close(cr, cw, response).await;
            return;
        }
    };
    let class = classify(&head);
    let modes = shared.modes();
    let (_registration, ctl) = shared.register(class);
    // Declared after the registration so it is released first: once a connection no longer
    // counts as live, its slot is free.
    let _permit = permit;
    let cut_after = modes.cut_after_bytes;
    let down = match modes.get(class) {
        Mode::Refuse => {
            shared.class_stats(class).refused.fetch_add(1, Ordering::Relaxed);
            let body = format!("fault-proxy: {} refused\n", class.name());
            let response = simple_response(503, "Service Unavailable", "text/plain", &body, head.loopback_origin(), "X-Fault-Proxy: refuse\r\n");
            reply_and_close(cr, cw, response).await;
            return;
        }
        Mode::Forbid => {
            shared.class_stats(class).refused.fetch_add(1, Ordering::Relaxed);
            let response = simple_response(403, "Forbidden", "text/plain", "origin not allowed", head.loopback_origin(), "X-Fault-Proxy: forbid\r\n");
            reply_and_close(cr, cw, response).await;
            return;
        }
        Mode::Hang => {
            // Never contact upstream; keep reading (and dropping) so a client that gives up
            // ends the connection.
            let streams = Streams { cr, cw, up: None };
            relay(&shared, class, streams, false, Down::Discard, cut_after, ctl).await;
            return;
        }
        Mode::Silent => Down::SilentAfterHead,
        Mode::Buffer => Down::Buffer,
        Mode::Pass => Down::Forward,
    };

    let upstream = match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(shared.upstream)).await {
        Ok(Ok(s)) => s,
        _ => {
            shared.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
            let response = simple_response(502, "Bad Gateway", "text/plain", "fault-proxy: upstream unreachable\n", head.loopback_origin(), "");
            reply_and_close(cr, cw, response).await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let (ur, mut uw) = upstream.into_split();
    let mut first = head.rewrite_for_upstream(class == Class::WebSocket);
    first.extend_from_slice(&rest);
    if uw.write_all(&first).await.is_err() {
        shared.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
        close_gracefully(Streams { cr, cw, up: Some((ur, uw)) }).await;
        return;
    }
    let streams = Streams { cr, cw, up: Some((ur, uw)) };
    let forward_up = down != Down::SilentAfterHead;
    relay(&shared, class, streams, forward_up, down, cut_after, ctl).await;
}

/// How the relay loop ended.
enum End {
    /// Both directions finished, or the client left a connection that is not forwarded.
    Done,
    /// `cut_after_bytes` reached or `/cut`.
    Cut,
    Blackhole,
    Failed,
}

/// Relays until both directions end, the byte budget runs out, or the control port says
/// otherwise. `forward_up`: whether browser → upstream bytes are forwarded (else discarded,
/// and the browser closing ends the connection).
async fn relay(shared: &Shared, class: Class, mut s: Streams, forward_up: bool, down: Down, cut_after: Option<u64>, mut ctl: watch::Receiver<Ctl>) {
    let end = {
        let Streams { cr, cw, up } = &mut s;
        let (ur, uw) = match up {
            Some((r, w)) => (Some(r), Some(w)),
            None => (None, None),
        };
        let up_fut = pump_up(cr, if forward_up { uw } else { None });
        let down_fut = async move {
            match ur {
                Some(ur) => pump_down(ur, cw, down, cut_after).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(up_fut, down_fut);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            if up_done && down_done {
                break End::Done;
            }
            tokio::select! {
                r = &mut up_fut, if !up_done => match r {
                    Ok(()) if forward_up => up_done = true,
                    Ok(()) => break End::Done,
                    Err(_) => break End::Failed,
                },
                r = &mut down_fut, if !down_done => match r {
                    Ok(DownEnd::Finished) => down_done = true,
                    Ok(DownEnd::LimitReached) => break End::Cut,
                    Err(_) => break End::Failed,
                },
                changed = ctl.changed() => {
                    if changed.is_err() {
                        break End::Failed;
                    }
                    match *ctl.borrow_and_update() {
                        Ctl::Cut => break End::Cut,
                        Ctl::Blackhole => break End::Blackhole,
                        Ctl::Relay | Ctl::Release => {}
                    }
                }
            }
        }
        // The direction futures (and their borrows of the sockets) are dropped here.
    };
    let cut = match end {
        End::Cut => true,
        End::Blackhole => loop {
            // Nothing is read or written now; the sockets stay open until told otherwise.
            if ctl.changed().await.is_err() {
                break false;
            }
            match *ctl.borrow_and_update() {
                Ctl::Cut => break true,
                Ctl::Release => break false,
                Ctl::Relay | Ctl::Blackhole => {}
            }
        },
        End::Done | End::Failed => false,
    };
    if cut {
        shared.class_stats(class).cut.fetch_add(1, Ordering::Relaxed);
    }
    close_gracefully(s).await;
}

async fn pump_up(r: &mut OwnedReadHalf, mut w: Option<&mut OwnedWriteHalf>) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_BYTES];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            if let Some(w) = w.as_deref_mut() {
                let _ = w.shutdown().await;
            }
            return Ok(());
        }
        if let Some(w) = w.as_deref_mut() {
            w.write_all(&buf[..n]).await?;
        }
    }
}

enum DownEnd {
    /// Upstream closed; the browser side was shut down too unless the mode discards.
    Finished,
    /// `cut_after_bytes` reached: the caller closes both sides.
    LimitReached,
}

/// Downstream bytes written so far against `cut_after_bytes`.
struct Budget {
    sent: u64,
    limit: Option<u64>,
}

impl Budget {
    /// Writes as much of `data` as the limit allows; true once the limit is reached. With a
    /// limit of 0 the first downstream bytes trigger the cut: the request reached upstream,
    /// no byte of the answer reaches the browser.
    async fn write(&mut self, w: &mut OwnedWriteHalf, data: &[u8]) -> io::Result<bool> {
        if data.is_empty() {
            return Ok(false);
        }
        let allowed = match self.limit {
            None => data.len(),
            Some(limit) => usize::try_from(limit.saturating_sub(self.sent)).unwrap_or(usize::MAX).min(data.len()),
        };
        w.write_all(&data[..allowed]).await?;
        self.sent += allowed as u64;
        Ok(self.limit.is_some_and(|limit| self.sent >= limit))
    }
}

async fn pump_down(r: &mut OwnedReadHalf, w: &mut OwnedWriteHalf, mut policy: Down, cut_after: Option<u64>) -> io::Result<DownEnd> {
    let mut budget = Budget { sent: 0, limit: cut_after };
    let mut held: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; BUF_BYTES];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            if policy == Down::Discard {
                return Ok(DownEnd::Finished);
            }
            // Buffer: the whole response, now. SilentAfterHead: upstream closed before its
            // head was complete; pass on what came.
            if budget.write(w, &held).await? {
                return Ok(DownEnd::LimitReached);
            }
            let _ = w.shutdown().await;
            return Ok(DownEnd::Finished);
        }
        let data = &buf[..n];
        match policy {
            Down::Forward => {
                if budget.write(w, data).await? {
                    return Ok(DownEnd::LimitReached);
                }
            }
            Down::Buffer => {
                if held.len() + n > MAX_BUFFERED_RESPONSE_BYTES {
                    return Err(io::Error::other("buffered response over the limit"));
                }
                held.extend_from_slice(data);
            }
            Down::Discard => {}
            Down::SilentAfterHead => {
                held.extend_from_slice(data);
                let Some(len) = response_head_len(&held) else {
                    if held.len() > MAX_HEAD_BYTES {
                        return Err(io::Error::other("upstream response head too large"));
                    }
                    continue;
                };
                if budget.write(w, &held[..len]).await? {
                    return Ok(DownEnd::LimitReached);
                }
                if response_status(&held[..len]) == Some(101) {
                    // Frames that came with the head are dropped like all later ones.
                    policy = Down::Discard;
                } else {
                    if budget.write(w, &held[len..]).await? {
                        return Ok(DownEnd::LimitReached);
                    }
                    policy = Down::Forward;
                }
                held = Vec::new();
            }
        }
    }
}

/// Writes a complete response, then closes like every other connection (the control port too).
pub(crate) async fn reply_and_close(cr: OwnedReadHalf, mut cw: OwnedWriteHalf, response: Vec<u8>) {
    let _ = cw.write_all(&response).await;
    close_gracefully(Streams { cr, cw, up: None }).await;
}

/// FIN on both sides, then drain the peers' input for at most `DRAIN_TIMEOUT` in a detached
/// task (so the connection no longer counts as live) before the sockets are dropped.
async fn close_gracefully(s: Streams) {
    let Streams { mut cr, mut cw, mut up } = s;
    let _ = cw.shutdown().await;
    if let Some((_, uw)) = up.as_mut() {
        let _ = uw.shutdown().await;
    }
    tokio::spawn(async move {
        let drain_up = async {
            if let Some((ur, _)) = up.as_mut() {
                drain(ur).await;
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async { tokio::join!(drain(&mut cr), drain_up) }).await;
        drop((cr, cw, up));
    });
}

async fn drain(r: &mut OwnedReadHalf) {
    let mut buf = vec![0u8; BUF_BYTES];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}
