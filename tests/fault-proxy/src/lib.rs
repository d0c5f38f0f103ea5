//! Test-only fault proxy: sits between the browser tests and the reference server and
//! injects real network failures (refused, hanging or silent WebSocket upgrades, buffered
//! event streams, cuts at byte N, blackholes). A browser test cannot start processes, so
//! `.ci/browser-tests.sh` starts the `fault-proxy` binary beside the server and the tests
//! switch its modes over HTTP on the control port (see `control`).
//!
//! Data path (`relay`): one task per TCP connection. It reads the request head, classifies
//! the connection (websocket / sse / poll / http), rewrites the head with `Connection: close`
//! so that every browser request gets its own connection, then relays bytes with the faults of
//! the modes current at classification time. Live connections are registered here so that
//! `/cut` and `/blackhole` can reach them through a per-connection `watch` channel.
//!
//! `Config::spawn_upstream` (`--spawn-upstream -- CMD...`): the proxy runs its upstream itself
//! (`supervisor`) and `POST /restart-upstream` crashes and restarts it on the same port.
//!
//! Invariants: everything binds loopback only; at most `max_live_connections` data
//! connections are served at once (more get a 503); heads are bounded (`head::MAX_HEAD_BYTES`).

mod control;
pub mod head;
pub mod mode;
mod relay;
mod supervisor;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

pub use mode::{Class, Mode, Modes};
pub use supervisor::{REBIND_WINDOW, UPSTREAM_START_TIMEOUT};

use supervisor::Supervisor;

/// Default bound on live data connections.
pub const MAX_LIVE_CONNECTIONS: usize = 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub control: SocketAddr,
    /// Ignored when `spawn_upstream` is set.
    pub upstream: SocketAddr,
    pub max_live_connections: usize,
    /// Program and arguments of an upstream the proxy runs itself; it must take `--listen ADDR`
    /// (or `--listen=ADDR`) and print `listening on http://ADDR` on stdout once bound.
    pub spawn_upstream: Option<Vec<OsString>>,
}

impl Config {
    /// Both ports on `127.0.0.1:0`.
    pub fn new(upstream: SocketAddr) -> Config {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Config { listen: any, control: any, upstream, max_live_connections: MAX_LIVE_CONNECTIONS, spawn_upstream: None }
    }

    /// Both ports on `127.0.0.1:0`, upstream run by the proxy (`--spawn-upstream -- CMD...`).
    pub fn spawning<S: Into<OsString>>(command: impl IntoIterator<Item = S>) -> Config {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Config { spawn_upstream: Some(command.into_iter().map(Into::into).collect()), ..Config::new(any) }
    }
}

/// What the control port tells a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctl {
    Relay,
    /// Stop relaying both ways, keep both sockets open.
    Blackhole,
    /// Close both sides now (FIN).
    Cut,
    /// End a blackholed connection (`/reset-connections`).
    Release,
}

struct Entry {
    class: Class,
    ctl: watch::Sender<Ctl>,
}

#[derive(Default)]
struct ClassStats {
    accepted: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    blackholed: AtomicU64,
}

#[derive(Default)]
struct Stats {
    per_class: [ClassStats; 4],
    bad_requests: AtomicU64,
    over_limit: AtomicU64,
    upstream_errors: AtomicU64,
}

pub(crate) struct Shared {
    upstream: SocketAddr,
    modes: Mutex<Modes>,
    conns: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    stats: Stats,
    /// Present with `--spawn-upstream`; the lock serializes restarts.
    supervisor: Option<tokio::sync::Mutex<Supervisor>>,
    /// The spawned upstream's pid (0: none running) and restart count, readable without the lock.
    upstream_pid: AtomicU32,
    upstream_restarts: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A live data connection; dropping it unregisters the connection.
pub(crate) struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.shared.conns).remove(&self.id);
    }
}

impl Shared {
    fn register(self: &Arc<Self>, class: Class) -> (Registration, watch::Receiver<Ctl>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(Ctl::Relay);
        lock(&self.conns).insert(id, Entry { class, ctl: tx });
        self.class_stats(class).accepted.fetch_add(1, Ordering::Relaxed);
        (Registration { shared: self.clone(), id }, rx)
    }

    fn class_stats(&self, class: Class) -> &ClassStats {
        &self.stats.per_class[class.index()]
    }

    fn modes(&self) -> Modes {
        *lock(&self.modes)
    }

    /// Sends `to` to every live connection whose state is one of `from`; returns how many.
    fn signal(&self, from: &[Ctl], to: Ctl) -> usize {
        let conns = lock(&self.conns);
        let mut n = 0;
        for entry in conns.values() {
            let current = *entry.ctl.borrow(); // released before send_replace takes the lock
            if from.contains(&current) {
                entry.ctl.send_replace(to);
                if to == Ctl::Blackhole {
                    self.class_stats(entry.class).blackholed.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }
        n
    }

    /// `GET /upstream`.
    fn upstream_json(&self) -> Value {
        let pid = self.upstream_pid.load(Ordering::Relaxed);
        json!({
            "spawned": self.supervisor.is_some(),
            "upstream": format!("http://{}", self.upstream),
            "pid": if pid == 0 { None } else { Some(pid) },
            "restarts": self.upstream_restarts.load(Ordering::Relaxed),
        })
    }

    /// `POST /restart-upstream`: SIGKILL the spawned upstream (a crash), reap it, cut every
    /// live connection, start the command again on the same address. `Ok(None)`: the proxy
    /// does not run its upstream.
    async fn restart_upstream(&self) -> io::Result<Option<Value>> {
        let Some(supervisor) = &self.supervisor else {
            return Ok(None);
        };
        let mut sup = supervisor.lock().await;
        let old_pid = sup.pid;
        sup.kill().await;
        self.upstream_pid.store(0, Ordering::Relaxed);
        let cut = self.signal(&[Ctl::Relay, Ctl::Blackhole], Ctl::Cut);
        let addr = sup.respawn().await?;
        self.upstream_pid.store(sup.pid.unwrap_or(0), Ordering::Relaxed);
        self.upstream_restarts.store(sup.restarts, Ordering::Relaxed);
        Ok(Some(json!({
            "restarted": true,
            "upstream": format!("http://{addr}"),
            "pid": sup.pid,
            "old_pid": old_pid,
            "cut": cut,
        })))
    }

    fn stats_json(&self) -> Value {
        let mut live = [0u64; 4];
        for entry in lock(&self.conns).values() {
            live[entry.class.index()] += 1;
        }
        let mut v = json!({
            "bad_requests": self.stats.bad_requests.load(Ordering::Relaxed),
            "over_limit": self.stats.over_limit.load(Ordering::Relaxed),
            "upstream_errors": self.stats.upstream_errors.load(Ordering::Relaxed),
        });
        for class in Class::ALL {
            let s = self.class_stats(class);
            v[class.name()] = json!({
                "accepted": s.accepted.load(Ordering::Relaxed),
                "refused": s.refused.load(Ordering::Relaxed),
                "cut": s.cut.load(Ordering::Relaxed),
                "blackholed": s.blackholed.load(Ordering::Relaxed),
                "live": live[class.index()],
            });
        }
        v
    }
}

/// A running proxy. Dropping it stops accepting on both ports and cuts live connections.
pub struct FaultProxy {
    pub proxy_addr: SocketAddr,
    pub control_addr: SocketAddr,
    /// `config.upstream`, or the spawned upstream's address.
    pub upstream_addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl FaultProxy {
    /// Binds both ports (loopback addresses only) and starts serving; with `spawn_upstream`,
    /// first starts the upstream and waits for its `listening on` line.
    pub async fn start(config: Config) -> io::Result<FaultProxy> {
        for (what, addr) in [("listen", config.listen), ("control", config.control)] {
            if !addr.ip().is_loopback() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{what} address {addr} is not loopback")));
            }
        }
        let supervisor = match config.spawn_upstream {
            Some(command) => Some(Supervisor::start(command).await?),
            None => None,
        };
        // On error the supervisor is dropped, which kills the child.
        let upstream = supervisor.as_ref().map_or(config.upstream, |s| s.addr);
        if !upstream.ip().is_loopback() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("upstream address {upstream} is not loopback")));
        }
        let data = TcpListener::bind(config.listen).await?;
        let control = TcpListener::bind(config.control).await?;
        let shared = Arc::new(Shared {
            upstream,
            modes: Mutex::new(Modes::default()),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            stats: Stats::default(),
            upstream_pid: AtomicU32::new(supervisor.as_ref().and_then(|s| s.pid).unwrap_or(0)),
            upstream_restarts: AtomicU64::new(0),
            supervisor: supervisor.map(tokio::sync::Mutex::new),
        });
        let permits = Arc::new(Semaphore::new(config.max_live_connections));
        let proxy_addr = data.local_addr()?;
        let control_addr = control.local_addr()?;
        let tasks = vec![
            tokio::spawn(relay::accept_loop(data, shared.clone(), permits)),
            tokio::spawn(control::accept_loop(control, shared.clone())),
        ];
        Ok(FaultProxy { proxy_addr, control_addr, upstream_addr: upstream, shared, tasks })
    }

    /// The spawned upstream's pid, if the proxy runs one and it is up.
    pub fn upstream_pid(&self) -> Option<u32> {
        Some(self.shared.upstream_pid.load(Ordering::Relaxed)).filter(|&pid| pid != 0)
    }

    /// The same as `POST /restart-upstream`; `Ok(None)` without `spawn_upstream`.
    pub async fn restart_upstream(&self) -> io::Result<Option<Value>> {
        self.shared.restart_upstream().await
    }

    /// Stops serving and kills and reaps the spawned upstream (a restart in progress finishes
    /// first).
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(supervisor) = &self.shared.supervisor {
            supervisor.lock().await.kill().await;
            self.shared.upstream_pid.store(0, Ordering::Relaxed);
        }
        // Drop cuts the live connections.
    }

    /// The current modes (the same as `GET /mode` answers).
    pub fn modes(&self) -> Modes {
        self.shared.modes()
    }

    /// The same JSON as `GET /stats`.
    pub fn stats(&self) -> Value {
        self.shared.stats_json()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.shared.signal(&[Ctl::Relay, Ctl::Blackhole, Ctl::Release], Ctl::Cut);
        // Killed now rather than when the last task lets go of `shared`. A restart holding the
        // lock finishes on its own; the child it starts dies with the supervisor (kill_on_drop,
        // process group) or, in the binary, with the process (PR_SET_PDEATHSIG).
        if let Some(supervisor) = &self.shared.supervisor {
            if let Ok(mut sup) = supervisor.try_lock() {
                sup.kill_now();
            }
        }
    }
}
