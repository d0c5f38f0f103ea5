//! The connection edge: accepting sockets and serving HTTP on them, with the limits that protect
//! the process rather than a session. [`serve`] is the accept loop (plain TCP or TLS) on hyper's
//! HTTP/1.1 + HTTP/2 connection builder, the same one `axum::serve` uses (WebSocket upgrades and
//! RFC 8441 extended CONNECT keep working), with:
//!
//! - a cap on connections per client IP and in total; the total is also kept below the process's
//!   file-descriptor limit (`RLIMIT_NOFILE` minus a reserve). At the total cap the oldest idle
//!   connection is closed to make room, so a flood of idle sockets cannot lock a client out; an
//!   accept that fails for lack of descriptors backs off briefly instead of spinning;
//! - a header read timeout (HTTP/1.1: a request head must arrive whole within it; slowloris);
//! - an idle timeout: a connection with no request in flight (a fresh socket that sends nothing,
//!   a keep-alive between requests) is closed after it. Held polls, SSE streams and WebSockets
//!   are requests in flight (or upgraded connections), so they are never idle;
//! - a deadline on every write, in the IO wrapper [`EdgeIo`]: a write that makes no progress for
//!   longer than it fails the connection, so a client that stops reading frees its buffers;
//! - TLS: a handshake timeout and handshake slots per IP and in total, taken after accept, so
//!   silent sockets from one address never delay another client's handshake.
//!
//! Invariants: every connection holds one [`ConnGuard`] (per-IP and total counts, the
//! `connections` gauge) from accept until its socket is dropped, including after a WebSocket
//! upgrade; each limit refusal is counted with [`crate::metrics::Metrics::trip`]; nothing here
//! panics on anything a client sends.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::client_ip::PeerAddr;
use crate::metrics::LimitKind;
use crate::AppState;

mod config;

pub use config::{EdgeConfig, EdgeFlags};


/// The local address a connection arrived on (a request extension set by [`serve`]); the host
/// check applies to connections that arrived on a loopback address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// The soft `RLIMIT_NOFILE`, first raised to the hard limit (the soft default of 1,024 is far
/// below what a server needs, and raising it needs no privilege). None where unknown.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            // SAFETY: setrlimit only reads the struct.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        Some(limit.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The total connection cap: the configured one, lowered to the descriptor limit minus the reserve.
pub fn connection_cap(config: &EdgeConfig, fd_limit: Option<u64>) -> usize {
    match fd_limit {
        Some(limit) => {
            let usable = usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(config.fd_reserve).max(1);
            config.max_connections.min(usable)
        }
        None => config.max_connections,
    }
}

/// Counts shared by every connection of one listener.
struct Edge {
    state: Arc<AppState>,
    cap: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    handshakes: Mutex<HashMap<IpAddr, usize>>,
    handshakes_total: AtomicUsize,
    /// Connections with no request in flight, oldest first (by when they went idle).
    idle: Mutex<BTreeMap<u64, Weak<Activity>>>,
    idle_sequence: AtomicU64,
}

/// One connection's place in the counts, released when the socket is dropped.
pub struct ConnGuard {
    edge: Arc<Edge>,
    ip: Option<IpAddr>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.edge.total.fetch_sub(1, Ordering::AcqRel);
        self.edge.state.metrics.connections.dec();
        if let Some(ip) = self.ip {
            let mut per_ip = crate::session::lock(&self.edge.per_ip);
            if let Some(count) = per_ip.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// A TLS handshake slot of one IP, released when the handshake ends.
struct HandshakeSlot {
    edge: Arc<Edge>,
    ip: IpAddr,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.edge.handshakes_total.fetch_sub(1, Ordering::AcqRel);
        let mut handshakes = crate::session::lock(&self.edge.handshakes);
        if let Some(count) = handshakes.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                handshakes.remove(&self.ip);
            }
        }
    }
}

/// Whether a connection has requests in flight, and since when it has had none.
struct Activity {
    edge: Weak<Edge>,
    in_flight: AtomicUsize,
    /// Set by an h2 extended CONNECT: the connection carries a WebSocket whose stream outlives
    /// the request's response, so it never counts as idle again.
    tunnel: std::sync::atomic::AtomicBool,
    /// Key in `Edge::idle` while idle.
    idle_key: Mutex<Option<u64>>,
    idle_since: Mutex<Option<Instant>>,
    changed: Notify,
    evict: Notify,
}

impl Activity {
    fn new(edge: &Arc<Edge>) -> Arc<Activity> {
        let activity = Arc::new(Activity {
            edge: Arc::downgrade(edge),
            in_flight: AtomicUsize::new(0),
            tunnel: std::sync::atomic::AtomicBool::new(false),
            idle_key: Mutex::new(None),
            idle_since: Mutex::new(None),
            changed: Notify::new(),
            evict: Notify::new(),
        });
        activity.went_idle();
        activity
    }

    fn went_idle(self: &Arc<Self>) {
        if self.tunnel.load(Ordering::Acquire) {
            return;
        }
        *crate::session::lock(&self.idle_since) = Some(Instant::now());
        if let Some(edge) = self.edge.upgrade() {
            let key = edge.idle_sequence.fetch_add(1, Ordering::Relaxed);
            crate::session::lock(&edge.idle).insert(key, Arc::downgrade(self));
            *crate::session::lock(&self.idle_key) = Some(key);
        }
        self.changed.notify_one();
    }

    fn leave_idle_set(&self) {
        let key = crate::session::lock(&self.idle_key).take();
        if let (Some(key), Some(edge)) = (key, self.edge.upgrade()) {
            crate::session::lock(&edge.idle).remove(&key);
        }
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            *crate::session::lock(&self.idle_since) = None;
            self.leave_idle_set();
        }
        RequestGuard { activity: self.clone() }
    }

    fn idle_since(&self) -> Option<Instant> {
        *crate::session::lock(&self.idle_since)
    }

    /// Resolves once the connection has had no request in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            match self.idle_since() {
                Some(since) => {
                    tokio::time::sleep_until(since + timeout).await;
                    if self.idle_since() == Some(since) {
                        return;
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        self.leave_idle_set();
    }
}

/// Keeps a request counted as in flight until its response body is finished or dropped.
struct RequestGuard {
    activity: Arc<Activity>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.activity.went_idle();
        }
    }
}

/// A response body that keeps its request in flight while it streams (SSE).
struct GuardedBody {
    body: Body,
    _guard: RequestGuard,
}

impl hyper::body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The socket under HTTP (and under TLS): a deadline on every write, and the connection's
/// [`ConnGuard`], so the counts hold for as long as the socket exists (also once upgraded).
pub struct EdgeIo<T> {
    inner: T,
    write_timeout: Duration,
    /// Armed when a write returns Pending; a write that completes disarms it.
    stalled: Option<Pin<Box<Sleep>>>,
    state: Arc<AppState>,
    _guard: ConnGuard,
}

impl<T> EdgeIo<T> {
    /// Ready(error) once a pending write has made no progress for the write timeout.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.write_timeout;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.state.metrics.trip(LimitKind::write_timeout);
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "write stalled past the write timeout"))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn after_write<R>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match result {
            Poll::Pending => match self.check_deadline(cx) {
                Poll::Ready(error) => Poll::Ready(Err(error)),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for EdgeIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for EdgeIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.after_write(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.after_write(cx, result)
    }
}

/// Is this accept error a shortage of file descriptors (or kernel memory for sockets)?
fn is_resource_shortage(error: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
    }
    #[cfg(not(unix))]
    {
        let _ = error;
        false
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` resolves; then stops
/// accepting, calls `state.begin_shutdown()`, lets open connections finish their responses (an
/// idle one closes at once) and returns once they are gone or after `drain` at the latest.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) {
    let fd_limit = raise_fd_limit();
    let cap = connection_cap(&state.config.edge, fd_limit);
    tracing::debug!(cap, ?fd_limit, "connection cap");
    let edge = Arc::new(Edge {
        state: state.clone(),
        cap,
        total: AtomicUsize::new(0),
        per_ip: Mutex::new(HashMap::new()),
        handshakes: Mutex::new(HashMap::new()),
        handshakes_total: AtomicUsize::new(0),
        idle: Mutex::new(BTreeMap::new()),
        idle_sequence: AtomicU64::new(0),
    });
    let local = listener.local_addr().ok();
    // Connection tasks hold a receiver; the sender's `closed()` tells when all are gone.
    let (stop, stopped) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_resource_shortage(&error) => {
                // Out of descriptors: free an idle connection and wait a moment instead of
                // spinning on an accept that fails at once.
                state.metrics.trip(LimitKind::file_descriptors);
                evict_oldest_idle(&edge);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            // Per-connection errors (the peer reset before accept): nothing to wait for.
            Err(_) => continue,
        };
        let Some(guard) = admit(&edge, peer.ip()) else { continue };
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().ok().or(local);
        let io = EdgeIo {
            inner: tcp,
            write_timeout: state.config.edge.write_timeout,
            stalled: None,
            state: state.clone(),
            _guard: guard,
        };
        let edge = edge.clone();
        let router = router.clone();
        let tls = tls.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let activity = Activity::new(&edge);
            let info = ConnInfo { peer, local, router, activity };
            match tls {
                None => serve_connection(&edge, io, info, stopped).await,
                Some(acceptor) => {
                    let Some(slot) = handshake_slot(&edge, peer.ip()) else { return };
                    let timeout = edge.state.config.edge.tls_handshake_timeout;
                    let handshake = tokio::time::timeout(timeout, acceptor.accept(io)).await;
                    drop(slot);
                    match handshake {
                        Ok(Ok(stream)) => serve_connection(&edge, stream, info, stopped).await,
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => edge.state.metrics.trip(LimitKind::handshake_timeout),
                    }
                }
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down");
    state.begin_shutdown();
    let _ = stop.send(true);
    drop(stopped);
    let _ = tokio::time::timeout(drain, stop.closed()).await;
}

/// Takes a connection slot for a new socket from `ip`, or refuses it (the socket is dropped).
fn admit(edge: &Arc<Edge>, ip: IpAddr) -> Option<ConnGuard> {
    let config = &edge.state.config;
    let ip = crate::client_ip::canonical(ip);
    // A trusted proxy carries many clients: only the total cap applies to it. Others count by
    // the key every per-IP limit uses (an IPv6 client per /64: one host holds a whole /64).
    let counted_ip = (!config.trusted_proxies.contains(&ip)).then_some(crate::limits::ip_key(ip));
    if let Some(ip) = counted_ip {
        let mut per_ip = crate::session::lock(&edge.per_ip);
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= config.edge.max_connections_per_ip {
            drop(per_ip);
            edge.state.metrics.trip(LimitKind::connections_per_ip);
            return None;
        }
        *count += 1;
    }
    let previous = edge.total.fetch_add(1, Ordering::AcqRel);
    edge.state.metrics.connections.inc();
    let guard = ConnGuard { edge: edge.clone(), ip: counted_ip };
    if previous >= edge.cap {
        // At the cap: the oldest idle connection makes room; with none idle, refuse this one.
        edge.state.metrics.trip(LimitKind::connections_total);
        if !evict_oldest_idle(edge) {
            return None;
        }
    }
    Some(guard)
}

/// Closes the connection that has been idle longest; false if none is idle.
fn evict_oldest_idle(edge: &Edge) -> bool {
    loop {
        let oldest = crate::session::lock(&edge.idle).pop_first();
        match oldest {
            None => return false,
            Some((_, activity)) => {
                if let Some(activity) = activity.upgrade() {
                    *crate::session::lock(&activity.idle_key) = None;
                    activity.evict.notify_one();
                    return true;
                }
            }
        }
    }
}

fn handshake_slot(edge: &Arc<Edge>, ip: IpAddr) -> Option<HandshakeSlot> {
    // Canonical first (a dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d, whose /64
    // would be every IPv4 client at once), then the per-IP key.
    let ip = crate::limits::ip_key(crate::client_ip::canonical(ip));
    let config = &edge.state.config.edge;
    let mut handshakes = crate::session::lock(&edge.handshakes);
    let count = handshakes.entry(ip).or_insert(0);
    let refused = *count >= config.max_handshakes_per_ip
        || edge.handshakes_total.load(Ordering::Acquire) >= config.max_handshakes;
    if refused {
        if *count == 0 {
            handshakes.remove(&ip);
        }
        drop(handshakes);
        edge.state.metrics.trip(LimitKind::handshake_slots);
        return None;
    }
    *count += 1;
    edge.handshakes_total.fetch_add(1, Ordering::AcqRel);
    Some(HandshakeSlot { edge: edge.clone(), ip })
}

struct ConnInfo {
    peer: SocketAddr,
    local: Option<SocketAddr>,
    router: Router,
    activity: Arc<Activity>,
}

/// Serves HTTP/1.1 or HTTP/2 on one connection until it ends, idles out, is evicted or the
/// server stops (then gracefully: the response in progress finishes).
async fn serve_connection<I>(edge: &Arc<Edge>, io: I, info: ConnInfo, mut stopped: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ConnInfo { peer, local, router, activity } = info;
    let config = &edge.state.config.edge;
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let guard = service_activity.begin();
        // An h2 extended CONNECT carries a WebSocket past its response (see `Activity::tunnel`).
        if request.method() == Method::CONNECT {
            service_activity.tunnel.store(true, Ordering::Release);
        }
        request.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
        if let Some(local) = local {
            request.extensions_mut().insert(LocalAddr(local));
        }
        let mut router = router.clone();
        async move {
            let response = tower_service::Service::call(&mut router, request.map(Body::new)).await;
            response.map(|response: Response<Body>| response.map(|body| GuardedBody { body, _guard: guard }))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(config.header_timeout);
    // CONNECT protocol: WebSocket over HTTP/2 (RFC 8441).
    builder.http2().timer(TokioTimer::new()).enable_connect_protocol();
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let idle = activity.idle_for(config.idle_timeout);
    let mut idle = std::pin::pin!(idle);
    let mut stopping = *stopped.borrow();
    if stopping {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    let timed_out = error.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout);
                    if timed_out {
                        edge.state.metrics.trip(LimitKind::header_timeout);
                    } else {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                }
                return;
            }
            changed = stopped.changed(), if !stopping => {
                stopping = true;
                if changed.is_err() || *stopped.borrow() {
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = &mut idle => {
                edge.state.metrics.trip(LimitKind::idle_timeout);
                return;
            }
            () = activity.evict.notified() => {
                // At the connection cap and idle longest (see `admit`).
                return;
            }
        }
    }
}

/// Wraps `router` so a panicking handler answers 500 for its request alone (counted as
/// `LimitKind::panic`); the process (built with `panic = "unwind"`) and every other request
/// carry on.
pub fn catch_panics(router: Router, state: Arc<AppState>) -> Router {
    router.layer(tower_http::catch_panic::CatchPanicLayer::custom(move |_panic: Box<dyn std::any::Any + Send>| {
        state.metrics.trip(LimitKind::panic);
        crate::text_error(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_stays_below_the_descriptor_limit() {
        let config = EdgeConfig { max_connections: 20_000, fd_reserve: 64, ..EdgeConfig::default() };
        assert_eq!(connection_cap(&config, Some(1024)), 960);
        assert_eq!(connection_cap(&config, Some(1_000_000)), 20_000);
        assert_eq!(connection_cap(&config, Some(10)), 1);
        assert_eq!(connection_cap(&config, None), 20_000);
    }
}
