//! realtime-server: the reference server of wire protocol v1 (see `www/PROTOCOL.md`).
//!
//! Bird's-eye view: [`app`] builds the axum router. Realtime endpoints live under `/realtime`
//! behind the [`cors`] origin check; `/` and `/pkg/` serve the demo files from a directory holding
//! nothing else. [`edge`] accepts connections (timeouts, connection caps, write deadlines) and
//! every request passes the Host check ([`cors::check_host`]) and a catch-panic layer. Transports
//! ([`ws`], [`sse`], [`poll`]) attach to sessions in the [`session::Registry`] and run the
//! shared [`writer`] loop; upstream frames go through `Session::handle_client_frames`, and
//! accepted messages are broadcast to the sender's room. [`tls`] serves all of it over HTTPS
//! (HTTP/2 and HTTP/1.1 by ALPN); [`stats`] counts the HTTP version of realtime requests.
//!
//! Invariants: the resume secret and query strings are never logged; every limit is explicit
//! in [`Config`]; no `unwrap` on anything a client controls.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use realtime_client::core::wire::{self, MAX_HEADER_BYTES};
use tokio::sync::watch;
use tower_http::services::ServeDir;

pub mod admin;
pub mod auth;
pub mod channel;
pub mod client_ip;
pub mod cors;
pub mod demo_feed;
pub mod edge;
pub mod kick;
pub mod limits;
pub mod metrics;
pub mod params;
pub mod poll;
pub mod probe;
pub mod publish;
pub mod session;
pub mod sse;
pub mod stats;
pub mod tls;
pub mod v3;
pub mod writer;
pub mod ws;

/// Server configuration: every limit in one place.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory served at `/` (and its `pkg/` at `/pkg/`); it must hold only public files.
    pub static_dir: PathBuf,
    /// Origins allowed to use the realtime endpoints cross-origin (exact match).
    pub allowed_origins: Vec<String>,
    /// TEST ONLY: allow any origin whose host is 127.0.0.1, localhost or [::1], any port.
    pub allow_loopback_origins: bool,
    /// Server heartbeat: a ping after this long without sending; WebSocket idle limit is twice it.
    pub heartbeat_ms: u64,
    /// Largest message payload, in bytes.
    pub max_message_bytes: usize,
    /// How long a session without a transport is kept for a resume.
    pub resume_window: Duration,
    /// Longest a poll is held without anything to send; the heartbeat interval caps it
    /// (`poll::poll_hold_for`).
    pub poll_hold: Duration,
    /// SSE keep-alive comment after this much silence.
    pub sse_keepalive: Duration,
    /// Most sessions at once; beyond it connects get 503 (or close 4003 on a WebSocket).
    pub max_sessions: usize,
    /// Replay buffer bounds per session.
    pub replay_max_messages: usize,
    pub replay_max_bytes: usize,
    pub replay_max_age: Duration,
    /// Most probes (`rt_probe=1`) held at once; beyond it probes get 503.
    pub max_probes: usize,
    /// Longest a probe is held open.
    pub probe_hold: Duration,
    /// TEST AND DEMO ONLY: `POST /realtime/kick` breaks off a session's transport (see [`kick`]).
    pub allow_kick: bool,
    /// Proxies whose `X-Forwarded-For` names the client (see [`client_ip`]); none by default.
    pub trusted_proxies: client_ip::TrustedProxies,
    /// Connection limits and timeouts ([`edge`]).
    pub edge: edge::EdgeConfig,
    /// Session and rate limits ([`limits`]).
    pub limits: limits::LimitConfig,
    /// The admin surface ([`admin`]).
    pub admin: admin::AdminConfig,
    /// Channel limits and history bounds ([`channel`]).
    pub channels: channel::ChannelConfig,
    /// Channels a client may publish to (`--client-publish`): exact names or prefixes ending in
    /// `*`; `none` allows none. Default `*`.
    pub client_publish: Vec<String>,
    /// Tokens, the publish key, the demo sign-in ([`auth`]).
    pub auth: auth::AuthConfig,
    /// Protocol v3: who verifies credentials ([`v3::auth`]); open (no authentication) by default.
    pub authenticator: v3::auth::AuthHook,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            static_dir: default_static_dir(),
            allowed_origins: Vec::new(),
            allow_loopback_origins: false,
            heartbeat_ms: 25_000,
            max_message_bytes: wire::DEFAULT_MAX_BODY_BYTES,
            resume_window: Duration::from_millis(60_000),
            poll_hold: Duration::from_secs(25),
            sse_keepalive: Duration::from_secs(15),
            max_sessions: 10_000,
            replay_max_messages: 10_000,
            replay_max_bytes: 8 << 20,
            replay_max_age: Duration::from_secs(300),
            max_probes: 1_000,
            probe_hold: Duration::from_secs(30),
            allow_kick: false,
            trusted_proxies: client_ip::TrustedProxies::default(),
            edge: edge::EdgeConfig::default(),
            limits: limits::LimitConfig::default(),
            admin: admin::AdminConfig::default(),
            channels: channel::ChannelConfig::default(),
            client_publish: vec![String::from("*")],
            auth: auth::AuthConfig::default(),
            authenticator: v3::auth::AuthHook::default(),
        }
    }
}

impl Config {
    /// Largest request body or WebSocket message: a batch may carry one base64 payload of the
    /// maximum size plus headroom for headers and small frames.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_message_bytes + self.max_message_bytes / 3 + 64 * MAX_HEADER_BYTES
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}

/// The demo directory `www/public` (the demo page and its `pkg/`, nothing else), found from this
/// crate's directory so any cwd works.
pub fn default_static_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("public")
}

/// Shared server state.
pub struct AppState {
    pub config: Config,
    pub registry: session::Registry,
    shutdown: watch::Sender<bool>,
    /// Number of live transports (WebSocket, SSE, held polls), for draining at shutdown.
    live: watch::Sender<usize>,
    /// Number of probes being answered or held.
    probes: AtomicUsize,
    /// Realtime requests per endpoint and HTTP version (`GET /realtime/stats`).
    pub http_versions: stats::HttpVersions,
    /// Everything `GET /metrics` exports, and the count of every limit trip.
    pub metrics: metrics::Metrics,
    /// Sessions and streams per client IP, and the new-session rate per IP ([`limits`]).
    pub ip_limits: limits::IpLimits,
    /// Blocking fan-outs running at once: one per core (at least 2), so they cannot take every
    /// blocking thread (which static files share) or queue without bound.
    pub fanout_permits: Arc<tokio::sync::Semaphore>,
    /// Fan-outs that ran on a blocking thread.
    pub blocking_fan_outs: std::sync::atomic::AtomicU64,
    /// Protocol v3: event streams waiting for their bind.
    pub v3: v3::V3State,
}

/// Longest a publish waits for a blocking fan-out permit before it gets 503.
pub const PUBLISH_FANOUT_WAIT: Duration = Duration::from_secs(2);

/// No blocking fan-out permit came within [`PUBLISH_FANOUT_WAIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanOutBusy;

impl AppState {
    /// Creates the state and starts the session sweeper (needs a tokio runtime).
    pub fn new(mut config: Config) -> Arc<Self> {
        // Configured JWT keys verify the v3 connects, unless a test chose its own authenticator.
        if let (true, Some(verifier)) = (config.authenticator.is_open(), &config.auth.verifier) {
            config.authenticator = v3::auth::AuthHook::new(auth::connect::JwtAuthenticator(verifier.clone()));
        }
        let metrics = metrics::Metrics::default();
        let budget = Arc::new(limits::ReplayBudget::new(metrics.replay_bytes.clone()));
        // A freed channel's tombstone lasts its history's age bound plus the resume window
        // (PROTOCOL §8.11 item 5).
        let mut channels = config.channels;
        channels.tombstone_lifetime = channels.history.max_age.saturating_add(config.resume_window);
        let state = Arc::new(AppState {
            ip_limits: limits::IpLimits::new(&config.limits),
            config,
            registry: session::Registry::new(budget, channels),
            shutdown: watch::channel(false).0,
            live: watch::channel(0).0,
            probes: AtomicUsize::new(0),
            http_versions: stats::HttpVersions::default(),
            metrics,
            fanout_permits: Arc::new(tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, usize::from).max(2))),
            blocking_fan_outs: std::sync::atomic::AtomicU64::new(0),
            v3: v3::V3State::default(),
        });
        let weak = Arc::downgrade(&state);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(state) = weak.upgrade() else { return };
                let dropped = state.registry.sweep(&state.config);
                v3::expire_credentials(&state);
                // Keeps the keyed limiter's memory bounded by the IPs of the last burst window.
                state.ip_limits.prune();
                state.metrics.trip_many(metrics::LimitKind::channel_tombstones, state.registry.channels().take_evicted_tombstones());
                state.metrics.sessions.set(i64::try_from(state.registry.len()).unwrap_or(i64::MAX));
                if dropped > 0 {
                    tracing::debug!(dropped, remaining = state.registry.len(), "sessions dropped");
                }
            }
        });
        state
    }

    /// Asks every transport to send `close code=1001 retry=1000` and end.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutdown_receiver(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Resolves once shutdown has begun.
    pub async fn shutting_down(receiver: &mut watch::Receiver<bool>) {
        loop {
            let stopping = *receiver.borrow_and_update();
            if stopping {
                return;
            }
            if receiver.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Waits until no transport is live, at most `limit`.
    pub async fn drain(&self, limit: Duration) {
        let mut live = self.live.subscribe();
        let _ = tokio::time::timeout(limit, live.wait_for(|count| *count == 0)).await;
    }

    /// Watches the number of live transports (streams and held polls); tests wait on it.
    pub fn live_transports(&self) -> watch::Receiver<usize> {
        self.live.subscribe()
    }

    /// Counts a probe until the guard drops; None when `max_probes` are already running.
    pub fn probe_guard(self: &Arc<Self>) -> Option<ProbeGuard> {
        let limit = self.config.max_probes;
        self.probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| (count < limit).then_some(count + 1))
            .ok()
            .map(|_| ProbeGuard { state: self.clone() })
    }

    /// Probes being answered or held now.
    pub fn probe_count(&self) -> usize {
        self.probes.load(Ordering::Acquire)
    }

    /// Connects under the total and per-IP session caps and the new-session rate of `ip`.
    pub fn connect(&self, request: &session::ConnectRequest, kind: session::TransportKind, ip: client_ip::ClientIp) -> session::Connect {
        self.connect_as(request, kind, ip, session::Owner::V2)
    }

    /// [`Self::connect`] by `owner` (a v3 connect's verified principal).
    pub fn connect_as(&self, request: &session::ConnectRequest, kind: session::TransportKind, ip: client_ip::ClientIp, owner: session::Owner<'_>) -> session::Connect {
        self.registry.connect_admitted(request, kind, &self.config, owner, || {
            self.ip_limits.admit_session(ip.0, &self.config.limits).map(Some)
        })
    }

    /// Counts a live stream or held poll of `ip`; None (the trip counted) over its cap.
    pub fn stream_slot(&self, ip: client_ip::ClientIp) -> Option<limits::StreamSlot> {
        match self.ip_limits.admit_stream(ip.0, &self.config.limits) {
            Ok(slot) => Some(slot),
            Err(kind) => {
                self.metrics.trip(kind);
                None
            }
        }
    }

    /// Publishes a backend's messages in order, each to the channel `channels[index]`, all or
    /// nothing (creating missing channels when `create`, see [`session::Registry::publish_batch`]).
    /// A fan-out of more member deliveries than `fanout_blocking_threshold` runs on a blocking
    /// thread, so the runtime workers keep serving, once it has one of the `fanout_permits`:
    /// Err when none came within [`PUBLISH_FANOUT_WAIT`] (the caller answers 503, nothing was
    /// delivered).
    pub async fn publish_fan_out(
        self: &Arc<Self>,
        channels: Vec<String>,
        messages: Vec<(usize, Option<String>, realtime_client::core::wire::Payload)>,
        create: bool,
    ) -> Result<session::Delivery, FanOutBusy> {
        if messages.is_empty() {
            return Ok(session::Delivery::default());
        }
        let sizes: Vec<usize> = channels.iter().map(|name| self.registry.room_size(name)).collect();
        let deliveries = messages.iter().map(|(index, ..)| sizes.get(*index).copied().unwrap_or(0)).fold(0usize, usize::saturating_add);
        let state = self.clone();
        self.run_fan_out(deliveries, Some(PUBLISH_FANOUT_WAIT), move || {
            let names: Vec<&str> = channels.iter().map(String::as_str).collect();
            state.registry.publish_batch(&names, None, messages, create, &state.config)
        })
        .await
    }

    /// Runs `work` (a fan-out of about `deliveries` member deliveries) inline, or on a blocking
    /// thread with a permit when it is large (see [`Self::publish_fan_out`]), and counts it.
    async fn run_fan_out(
        self: &Arc<Self>,
        deliveries: usize,
        permit_within: Option<Duration>,
        work: impl FnOnce() -> session::Delivery + Send + 'static,
    ) -> Result<session::Delivery, FanOutBusy> {
        let delivered = if deliveries > self.config.limits.fanout_blocking_threshold {
            let permit = match permit_within {
                Some(within) => tokio::time::timeout(within, self.fanout_permits.clone().acquire_owned()).await.map_err(|_| FanOutBusy)?,
                None => self.fanout_permits.clone().acquire_owned().await,
            };
            // The semaphore is never closed; without a permit, run inline rather than drop a batch.
            // The permit goes into the blocking task: it bounds running fan-outs even when the
            // request awaiting one goes away.
            let permit = permit.ok();
            self.blocking_fan_outs.fetch_add(1, Ordering::Relaxed);
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                work()
            })
            .await
            .unwrap_or_default()
        } else {
            work()
        };
        self.metrics.messages_out.inc_by(delivered.delivered as u64);
        // A member whose unsent messages passed the replay bounds was ended (it does not read).
        for _ in 0..delivered.overflowed {
            self.metrics.trip(metrics::LimitKind::replay_overflow);
            self.metrics.slow_consumer_cuts.inc();
        }
        Ok(delivered)
    }

    /// Applies a client batch to `session` and runs its channel actions (publishes, subscribes,
    /// unsubscribes, refusals) in order, in a task of its own that holds `serial` (the session's
    /// upstream lock) to the end. The request that carried the batch may go away at any point (a
    /// POST's client disconnects, a WebSocket reader is aborted): once `handle_client_frames` has
    /// accepted a frame, its seq counts as received and a retry is deduped, so its action must
    /// still run, and before the session's next batch runs (order per sender). Returns the
    /// outcome without its actions.
    pub async fn apply_client_batch(
        self: &Arc<Self>,
        session: Arc<session::Session>,
        frames: Vec<realtime_client::core::wire::Frame>,
        serial: tokio::sync::OwnedMutexGuard<()>,
    ) -> session::Upstream {
        let state = self.clone();
        let task = tokio::spawn(async move {
            let _serial = serial;
            let mut outcome = session.handle_client_frames(frames);
            if outcome.control_dropped {
                state.metrics.trip(metrics::LimitKind::control_queue);
            }
            let actions = std::mem::take(&mut outcome.actions);
            let mut deliveries = 0usize;
            let mut published = 0u64;
            for action in &actions {
                if let session::Action::Publish { channel, .. } = action {
                    published += 1;
                    deliveries = deliveries.saturating_add(state.registry.room_size(channel));
                }
            }
            state.metrics.messages_in.inc_by(published);
            let runner = state.clone();
            let _ = state
                .run_fan_out(deliveries, None, move || runner.registry.apply_actions(&session, actions, &runner.config))
                .await;
            outcome
        });
        // A panic in the task was caught by tokio: the batch is lost for this request, which
        // answers as if nothing came of it (the session's own state is consistent).
        task.await.unwrap_or_default()
    }

    /// Reserves what publishing `messages` to `room` will store (each payload once, an entry per
    /// member) against the replay budget, atomically; None over the budget. Held across the
    /// fan-out, so concurrent publishes pass the budget by one publish at most.
    pub fn reserve_publish(&self, room: &str, messages: &[(Option<String>, realtime_client::core::wire::Payload)]) -> Option<limits::Reservation> {
        let sizes = self.entry_bytes(&[room]);
        let bytes = messages
            .iter()
            .map(|(event, payload)| Self::message_bytes(event, payload, sizes.first().copied().unwrap_or(0)))
            .fold(0usize, usize::saturating_add);
        self.registry.budget().reserve(bytes, self.config.limits.replay_budget_bytes)
    }

    /// [`Self::reserve_publish`] for a batch whose messages name their channel by index into
    /// `channels`: the whole batch is reserved before any offset is assigned (PROTOCOL §8.11
    /// item 12).
    pub fn reserve_batch(&self, channels: &[&str], messages: &[(usize, Option<String>, realtime_client::core::wire::Payload)]) -> Option<limits::Reservation> {
        let sizes = self.entry_bytes(channels);
        let bytes = messages
            .iter()
            .map(|(index, event, payload)| Self::message_bytes(event, payload, sizes.get(*index).copied().unwrap_or(0)))
            .fold(0usize, usize::saturating_add);
        self.registry.budget().reserve(bytes, self.config.limits.replay_budget_bytes)
    }

    /// The entry bytes one message to each channel adds: one per member, and one in the history.
    fn entry_bytes(&self, channels: &[&str]) -> Vec<usize> {
        channels.iter().map(|name| self.registry.room_size(name).saturating_add(1).saturating_mul(limits::ENTRY_BYTES)).collect()
    }

    fn message_bytes(event: &Option<String>, payload: &realtime_client::core::wire::Payload, entries: usize) -> usize {
        payload.len().saturating_add(event.as_ref().map_or(0, String::len)).saturating_add(entries)
    }

    /// Whether the replay buffers together hold more than the global budget.
    pub fn over_replay_budget(&self) -> bool {
        self.registry.replay_bytes() > self.config.limits.replay_budget_bytes
    }

    /// Counts a live transport until the guard drops.
    pub fn live_guard(self: &Arc<Self>) -> LiveGuard {
        self.live.send_modify(|count| *count += 1);
        LiveGuard { state: self.clone() }
    }
}

/// Keeps a transport counted as live.
pub struct LiveGuard {
    state: Arc<AppState>,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.state.live.send_modify(|count| *count = count.saturating_sub(1));
    }
}

/// Keeps a probe counted until it drops.
pub struct ProbeGuard {
    state: Arc<AppState>,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.state.probes.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A refusal by a limit: `status` (503 or 429) with `Retry-After`, the trip counted.
pub fn refusal(state: &AppState, kind: metrics::LimitKind, status: StatusCode, message: &str) -> Response {
    state.metrics.trip(kind);
    busy(state, status, message)
}

/// `status` with `Retry-After` (the trip already counted).
pub fn busy(state: &AppState, status: StatusCode, message: &str) -> Response {
    let mut response = text_error(status, message);
    if let Ok(value) = axum::http::HeaderValue::from_str(&state.config.limits.retry_after_secs().to_string()) {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

/// A plain-text error response.
pub fn text_error(status: StatusCode, message: &str) -> Response {
    (status, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], message.to_owned()).into_response()
}

/// The whole application: realtime endpoints under `/realtime`, static files elsewhere.
pub fn app(state: Arc<AppState>) -> Router {
    let batch_limit = state.config.max_batch_bytes();
    // The admin routes (token required, see [`admin`]) live here unless `--admin-listen` moves them.
    let (admin_realtime, admin_metrics) = admin::routes(state.clone());
    let admin_here = state.config.admin.listen.is_none();
    let realtime = Router::new()
        .route("/realtime", any(v3::ws::handle))
        .route("/realtime/sse", get(v3::sse::handle))
        .route("/realtime/poll", get(v3::poll::handle_get_poll).post(v3::poll::handle_poll).layer(DefaultBodyLimit::max(v3::poll::POLL_BODY_BYTES)))
        .route("/realtime/bind", post(v3::sse::handle_bind).layer(DefaultBodyLimit::max(v3::sse::BIND_BODY_BYTES)))
        .route("/realtime/send", post(v3::poll::handle_send).layer(DefaultBodyLimit::max(batch_limit)))
        // Behind the publish key; on `--publish-listen` instead when given.
        .merge(auth::publish_key::main_routes(&state))
        .merge(auth::demo::routes(&state))
        .merge(if admin_here { admin_realtime } else { Router::new() })
        .layer(axum::middleware::from_fn_with_state(state.clone(), cors::check_origin))
        .layer(axum::middleware::from_fn_with_state(state.clone(), stats::record))
        .layer(axum::middleware::from_fn_with_state(state.clone(), client_ip::resolve))
        .with_state(state.clone());
    // The static directory holds only the demo and the package (www/public by default), so no
    // path trick can reach anything else: ServeDir decodes the path once and refuses `..`.
    let static_dir = state.config.static_dir.clone();
    let site = Router::new().merge(realtime)
        .merge(if admin_here { admin_metrics } else { Router::new() })
        .fallback_service(ServeDir::new(static_dir));
    // Outermost: the Host check (DNS rebinding) before anything, and panics caught everywhere.
    edge::catch_panics(site, state.clone())
        .layer(axum::middleware::from_fn_with_state(state, cors::check_host))
}
