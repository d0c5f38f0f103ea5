//! Counters and gauges for `GET /metrics` (Prometheus text format, the `prometheus-client` crate),
//! and [`Metrics::trip`], which every limit calls when it refuses something: the trip is counted
//! by kind and logged, at most once per kind every [`LOG_EVERY`] (an attacker who trips a limit a
//! million times must not also flood the log).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How often one kind of limit trip is logged at most.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The enum [`LimitKind`] and the list [`ALL_LIMIT_KINDS`] of every variant in order, from one
/// list of names, so a new kind cannot be left out of the list.
macro_rules! limit_kinds {
    ($($kind:ident),+ $(,)?) => {
        /// Every limit that can trip, as it appears in the `kind` label.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
        #[allow(non_camel_case_types)]
        pub enum LimitKind {
            $($kind),+
        }

        /// Every [`LimitKind`], in order: each gets its series at 0 from the start, so a scrape
        /// shows every limit and `rate()` has a baseline before the first trip.
        pub const ALL_LIMIT_KINDS: [LimitKind; LIMIT_KINDS] = [$(LimitKind::$kind),+];

        pub const LIMIT_KINDS: usize = [$(stringify!($kind)),+].len();
    };
}

limit_kinds! {
    sessions_total,
    sessions_per_ip,
    streams_per_ip,
    connections_total,
    connections_per_ip,
    new_session_rate,
    credential_rate,
    first_message_waits,
    pending_streams_per_ip,
    message_rate,
    byte_rate,
    frames_per_batch,
    control_queue,
    replay_budget,
    replay_overflow,
    channels_total,
    channel_tombstones,
    slow_consumer,
    header_timeout,
    idle_timeout,
    handshake_timeout,
    handshake_slots,
    write_timeout,
    file_descriptors,
    host_refused,
    origin_refused,
    admin_refused,
    publish_refused,
    panic,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LimitLabels {
    pub kind: LimitKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TransportLabel {
    websocket,
    sse,
    poll,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: TransportLabel,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    pub limit_trips: Family<LimitLabels, Counter>,
    /// Sessions held (set by the registry).
    pub sessions: Gauge,
    /// Live transports by kind (streams and held polls).
    pub transports: Family<TransportLabels, Gauge>,
    /// Client messages accepted (after dedupe) and messages queued to sessions.
    pub messages_in: Counter,
    pub messages_out: Counter,
    /// Bytes held in replay buffers (set by the replay budget).
    pub replay_bytes: Gauge,
    /// Streams cut because their writes stalled or their unsent queue passed its bound.
    pub slow_consumer_cuts: Counter,
    /// Open TCP connections (set by the accept loop).
    pub connections: Gauge,
    last_logged: Mutex<[Option<Instant>; LIMIT_KINDS]>,
    unlogged: [AtomicU64; LIMIT_KINDS],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("realtime");
        let limit_trips = Family::<LimitLabels, Counter>::default();
        for kind in ALL_LIMIT_KINDS {
            let _ = limit_trips.get_or_create(&LimitLabels { kind });
        }
        registry.register("limit_trips", "Requests or connections refused or cut by a limit, by kind", limit_trips.clone());
        let sessions = Gauge::default();
        registry.register("sessions", "Sessions held", sessions.clone());
        let transports = Family::<TransportLabels, Gauge>::default();
        for transport in [TransportLabel::websocket, TransportLabel::sse, TransportLabel::poll] {
            let _ = transports.get_or_create(&TransportLabels { transport });
        }
        registry.register("transports", "Live transports (streams and held polls) by kind", transports.clone());
        let messages_in = Counter::default();
        registry.register("messages_in", "Client messages accepted", messages_in.clone());
        let messages_out = Counter::default();
        registry.register("messages_out", "Messages queued to sessions", messages_out.clone());
        let replay_bytes = Gauge::default();
        registry.register("replay_bytes", "Bytes held in replay buffers", replay_bytes.clone());
        let slow_consumer_cuts = Counter::default();
        registry.register("slow_consumer_cuts", "Streams cut for not reading", slow_consumer_cuts.clone());
        let connections = Gauge::default();
        registry.register("connections", "Open TCP connections", connections.clone());
        Metrics {
            registry,
            limit_trips,
            sessions,
            transports,
            messages_in,
            messages_out,
            replay_bytes,
            slow_consumer_cuts,
            connections,
            last_logged: Mutex::new([None; LIMIT_KINDS]),
            unlogged: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Metrics {
    /// A limit refused something: count it, and log it unless this kind was logged recently.
    pub fn trip(&self, kind: LimitKind) {
        self.limit_trips.get_or_create(&LimitLabels { kind }).inc();
        let index = kind as usize;
        let now = Instant::now();
        let mut last_logged = crate::session::lock(&self.last_logged);
        let due = last_logged[index].is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if !due {
            self.unlogged[index].fetch_add(1, Ordering::Relaxed);
            return;
        }
        last_logged[index] = Some(now);
        drop(last_logged);
        let suppressed = self.unlogged[index].swap(0, Ordering::Relaxed);
        tracing::warn!(limit = ?kind, suppressed, "limit tripped");
    }

    /// How often `kind` tripped so far.
    /// [`Self::trip`] `count` times (logged once at most).
    pub fn trip_many(&self, kind: LimitKind, count: u64) {
        if count == 0 {
            return;
        }
        self.limit_trips.get_or_create(&LimitLabels { kind }).inc_by(count - 1);
        self.trip(kind);
    }

    pub fn trips(&self, kind: LimitKind) -> u64 {
        self.limit_trips.get_or_create(&LimitLabels { kind }).get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_are_counted_and_exported() {
        let metrics = Metrics::default();
        metrics.trip(LimitKind::sessions_per_ip);
        metrics.trip(LimitKind::sessions_per_ip);
        assert_eq!(metrics.trips(LimitKind::sessions_per_ip), 2);
        assert_eq!(metrics.trips(LimitKind::byte_rate), 0);
        let text = metrics.encode();
        assert!(text.contains("realtime_limit_trips_total{kind=\"sessions_per_ip\"} 2"), "{text}");
        // Every kind is exported from the start, in declaration order.
        assert!(text.contains("realtime_limit_trips_total{kind=\"panic\"} 0"), "{text}");
        for (index, kind) in ALL_LIMIT_KINDS.iter().enumerate() {
            assert_eq!(*kind as usize, index);
        }
    }
}
