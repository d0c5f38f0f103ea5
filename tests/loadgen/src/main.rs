//! `loadgen`: the load generator of `.ci/bench-server.sh`. It drives a reference server (wire
//! protocol v1) or a socket.io 4 server (Engine.IO v4 over WebSocket) with many WebSocket
//! sessions, the same way for both, and prints one JSON object with what it measured.
//!
//! ```text
//! loadgen idle   --protocol realtime|socketio --addr 127.0.0.1:PORT --server-pid PID
//!                [--sessions 10000] [--room idle] [--gc-path PATH] [--connect-concurrency 256]
//!                [--settle-ms 3000] [--timeout-s 120]
//! loadgen fanout --protocol realtime|socketio --addr 127.0.0.1:PORT
//!                [--sessions 1000] [--messages 1000] [--publishers 8] [--batch 1] [--room fanout]
//!                [--connect-concurrency 256] [--timeout-s 120]
//! ```
//!
//! - `idle`: reads the server's RSS (`VmRSS` in /proc/PID/status), opens `--sessions` sessions,
//!   waits until each is ready (realtime: the hello arrived; socket.io: the namespace connect was
//!   answered) or failed, lets the server settle, reads the RSS again and checks how many
//!   sessions are still open: memory per idle session and sessions held. `--gc-path` is POSTed
//!   before each reading (the socket.io server's full GC; see tests/bench-server).
//! - `fanout`: opens `--sessions` sessions in one room, then `--publishers` keep-alive HTTP
//!   connections POST `--messages` messages, one request per message (realtime:
//!   `/realtime/publish?room=R`, socket.io: `/bench/publish?room=R`, which runs
//!   `io.to(R).emit`), and counts at the sessions until every session has every message: the
//!   rate is deliveries (sessions × messages) over the time from the first publish to the last
//!   delivery. `--batch N` puts N messages in each request instead (realtime: the server's
//!   batch publish, `msg` frames as `application/x-realtime-frames`; socket.io:
//!   `/bench/publish-batch?room=R`, a JSON array, one `io.to(R).emit` per element).
//!
//! Everything is bounded: handshakes 30 s each, the run `--timeout-s`; only loopback addresses
//! are accepted.

mod http;
mod session;
mod socketio;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use realtime_client::core::wire::{self, Carrier, Frame, Message, Payload};
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};

use crate::session::{Counters, Plan, Protocol};

/// A ~100-byte JSON chat message, the same body for both servers; `{i}` numbers it.
fn message_body(index: u64) -> Vec<u8> {
    format!(r#"{{"i":{index},"user":"loadgen","text":"fan-out benchmark message with a body of about one hundred bytes"}}"#).into_bytes()
}

/// The content type and body of one publish request carrying the messages `indexes`: one JSON
/// message, or a batch (realtime: `msg` frames, the server's batch publish; socket.io: a JSON
/// array for the bench server's `/bench/publish-batch`).
fn publish_request(protocol: Protocol, batched: bool, indexes: std::ops::Range<u64>) -> (&'static str, Vec<u8>) {
    if !batched {
        return ("application/json", message_body(indexes.start));
    }
    let mut body = Vec::new();
    match protocol {
        Protocol::Realtime => {
            for index in indexes {
                let json = String::from_utf8(message_body(index)).unwrap_or_default();
                // The server numbers what it publishes itself; a frame's `s` only has to be valid.
                let frame = Frame::Message(Message { seq: index + 1, event: None, payload: Payload::Json(json) });
                wire::encode(&frame, Carrier::Binary, &mut body);
            }
            ("application/x-realtime-frames", body)
        }
        Protocol::SocketIo => {
            body.push(b'[');
            for index in indexes {
                if body.len() > 1 {
                    body.push(b',');
                }
                body.extend_from_slice(&message_body(index));
            }
            body.push(b']');
            ("application/json", body)
        }
    }
}

#[derive(Debug)]
struct Args {
    mode: String,
    protocol: Protocol,
    address: SocketAddr,
    sessions: usize,
    room: String,
    server_pid: Option<u32>,
    gc_path: Option<String>,
    connect_concurrency: usize,
    settle: Duration,
    timeout: Duration,
    messages: u64,
    publishers: usize,
    batch: u64,
}

fn usage() -> &'static str {
    "usage: loadgen idle|fanout --protocol realtime|socketio --addr 127.0.0.1:PORT [--server-pid PID] [--sessions N] \
     [--messages N] [--publishers N] [--batch N] [--room NAME] [--gc-path PATH] [--connect-concurrency N] [--settle-ms MS] [--timeout-s S]"
}

fn parse_args(mut raw: impl Iterator<Item = String>) -> Result<Args, String> {
    let mode = raw.next().ok_or("missing mode")?;
    if mode != "idle" && mode != "fanout" {
        return Err(format!("unknown mode {mode:?}"));
    }
    let idle = mode == "idle";
    let mut args = Args {
        protocol: Protocol::Realtime,
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
        sessions: if idle { 10_000 } else { 1_000 },
        room: mode.clone(),
        server_pid: None,
        gc_path: None,
        connect_concurrency: 256,
        settle: Duration::from_millis(3_000),
        timeout: Duration::from_secs(120),
        messages: 1_000,
        publishers: 8,
        batch: 1,
        mode,
    };
    let mut protocol = None;
    let mut address = None;
    while let Some(flag) = raw.next() {
        let value = raw.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|_| format!("{flag}: not a number: {value:?}"));
        match flag.as_str() {
            "--protocol" => protocol = Some(Protocol::parse(&value).ok_or_else(|| format!("unknown protocol {value:?}"))?),
            "--addr" => address = Some(value.parse::<SocketAddr>().map_err(|_| format!("--addr: not IP:PORT: {value:?}"))?),
            "--sessions" => args.sessions = number()? as usize,
            "--room" => args.room = value,
            "--server-pid" => args.server_pid = Some(number()? as u32),
            "--gc-path" => args.gc_path = Some(value),
            "--connect-concurrency" => args.connect_concurrency = number()?.max(1) as usize,
            "--settle-ms" => args.settle = Duration::from_millis(number()?),
            "--timeout-s" => args.timeout = Duration::from_secs(number()?.max(1)),
            "--messages" => args.messages = number()?,
            "--publishers" => args.publishers = number()?.max(1) as usize,
            "--batch" => args.batch = number()?.max(1),
            _ => return Err(format!("unknown flag {flag:?}")),
        }
    }
    args.protocol = protocol.ok_or("--protocol is required")?;
    args.address = address.ok_or("--addr is required")?;
    // This is a load generator: it only ever targets this machine.
    if !args.address.ip().is_loopback() {
        return Err(format!("--addr must be a loopback address, got {}", args.address));
    }
    if args.sessions == 0 {
        return Err("--sessions must be at least 1".to_owned());
    }
    if idle && args.server_pid.is_none() {
        return Err("idle needs --server-pid (whose RSS is measured)".to_owned());
    }
    if !idle && args.messages == 0 {
        return Err("--messages must be at least 1".to_owned());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("loadgen: {error}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let result = if args.mode == "idle" { idle(&args).await } else { fanout(&args).await };
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The sessions of a run and the means to stop them.
struct Fleet {
    counters: Arc<Counters>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Fleet {
    /// Starts `args.sessions` sessions (at most `connect_concurrency` handshakes at once) and
    /// waits until every one is ready or failed, at most `args.timeout`.
    async fn open(args: &Args, expect_messages: u64, deadline: Instant) -> Result<(Fleet, Duration), String> {
        let address = args.address.to_string();
        let plan = Arc::new(Plan {
            protocol: args.protocol,
            url: args.protocol.url(&address, &args.room),
            sessions: args.sessions,
            expect_messages,
        });
        let counters = Arc::new(Counters::default());
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let handshakes = Arc::new(Semaphore::new(args.connect_concurrency));
        let mut tasks = JoinSet::new();
        let started = Instant::now();
        // Spawning waits for a handshake slot, so sessions start in order and at a bounded rate.
        for _ in 0..args.sessions {
            let permit = tokio::select! {
                permit = handshakes.clone().acquire_owned() => permit.map_err(|_| "semaphore closed")?,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            tasks.spawn(session::run(plan.clone(), counters.clone(), permit, shutdown_receiver.clone()));
        }
        let mut fleet = Fleet { counters, shutdown, tasks };
        loop {
            let settled = fleet.counters.ready.load(Ordering::Acquire) + fleet.counters.failed.load(Ordering::Acquire);
            if settled >= args.sessions {
                break;
            }
            if Instant::now() >= deadline {
                fleet.stop().await;
                return Err(format!(
                    "only {settled} of {} sessions settled before the timeout (ready {}, failed {}): {:?}",
                    args.sessions,
                    fleet.counters.ready.load(Ordering::Acquire),
                    fleet.counters.failed.load(Ordering::Acquire),
                    fleet.counters.errors()
                ));
            }
            tokio::select! {
                _ = fleet.counters.settled.notified() => {}
                _ = sleep(Duration::from_millis(100)) => {}
            }
        }
        let elapsed = started.elapsed();
        eprintln!(
            "loadgen: {} {} sessions ready, {} failed in {:.2} s",
            args.protocol.as_str(),
            fleet.counters.ready.load(Ordering::Acquire),
            fleet.counters.failed.load(Ordering::Acquire),
            elapsed.as_secs_f64()
        );
        Ok((fleet, elapsed))
    }

    /// Ends every session (dropping its socket) and waits for the tasks, at most 10 s.
    async fn stop(&mut self) {
        self.shutdown.send_replace(true);
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.tasks.abort_all();
        }
    }
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|error| format!("/proc/{pid}/status: {error}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| format!("/proc/{pid}/status has no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

async fn collect_garbage(args: &Args) -> Result<(), String> {
    let Some(path) = &args.gc_path else { return Ok(()) };
    let mut connection = http::Connection::open(args.address).await.map_err(|error| format!("gc: {error}"))?;
    let response = connection.post(path, "text/plain", b"").await.map_err(|error| format!("gc: {error}"))?;
    if response.status / 100 != 2 {
        return Err(format!("gc: POST {path} answered {}: {}", response.status, String::from_utf8_lossy(&response.body)));
    }
    // Let the allocator hand back what the collection freed.
    sleep(Duration::from_millis(200)).await;
    Ok(())
}

async fn idle(args: &Args) -> Result<serde_json::Value, String> {
    let pid = args.server_pid.ok_or("no --server-pid")?;
    let deadline = Instant::now() + args.timeout;
    collect_garbage(args).await?;
    let (rss_before, _) = memory_kib(pid)?;
    let (mut fleet, connect_time) = Fleet::open(args, 0, deadline).await?;
    sleep(args.settle).await;
    collect_garbage(args).await?;
    let (rss_after, hwm) = memory_kib(pid)?;
    let counters = fleet.counters.clone();
    let ready = counters.ready.load(Ordering::Acquire);
    let held = ready - counters.lost.load(Ordering::Acquire);
    fleet.stop().await;
    let per_session = if held > 0 { (rss_after.saturating_sub(rss_before) * 1024) as f64 / held as f64 } else { 0.0 };
    Ok(json!({
        "mode": "idle",
        "protocol": args.protocol.as_str(),
        "sessions_requested": args.sessions,
        "ready": ready,
        "failed": counters.failed.load(Ordering::Acquire),
        "held": held,
        "connect_seconds": connect_time.as_secs_f64(),
        "connects_per_second": ready as f64 / connect_time.as_secs_f64().max(1e-9),
        "settle_ms": args.settle.as_millis() as u64,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_peak_kib": hwm,
        "rss_per_session_bytes": per_session.round(),
        "pongs_sent": counters.pongs_sent.load(Ordering::Relaxed),
        "errors": counters.errors(),
    }))
}

async fn fanout(args: &Args) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + args.timeout;
    let (mut fleet, connect_time) = Fleet::open(args, args.messages, deadline).await?;
    let counters = fleet.counters.clone();
    let ready = counters.ready.load(Ordering::Acquire);
    if ready < args.sessions {
        fleet.stop().await;
        return Err(format!("{} of {} sessions failed: {:?}", args.sessions - ready, args.sessions, counters.errors()));
    }
    sleep(Duration::from_millis(500)).await;
    let path = match (args.protocol, args.batch > 1) {
        (Protocol::Realtime, _) => format!("/realtime/publish?room={}", args.room),
        (Protocol::SocketIo, false) => format!("/bench/publish?room={}", args.room),
        (Protocol::SocketIo, true) => format!("/bench/publish-batch?room={}", args.room),
    };
    let next_index = Arc::new(AtomicU64::new(0));
    let publish_errors = Arc::new(AtomicU64::new(0));
    let reach_mismatches = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut publishers = JoinSet::new();
    for _ in 0..args.publishers {
        let (next_index, publish_errors, reach_mismatches) = (next_index.clone(), publish_errors.clone(), reach_mismatches.clone());
        let (address, path, messages, sessions, batch, protocol) =
            (args.address, path.clone(), args.messages, args.sessions, args.batch, args.protocol);
        publishers.spawn(async move {
            let mut connection = http::Connection::open(address).await.map_err(|error| format!("publish connect: {error}"))?;
            loop {
                let first = next_index.fetch_add(batch, Ordering::Relaxed);
                if first >= messages {
                    return Ok::<(), String>(());
                }
                let indexes = first..(first + batch).min(messages);
                let count = indexes.end - indexes.start;
                let (content_type, body) = publish_request(protocol, batch > 1, indexes);
                let response = connection.post(&path, content_type, &body).await.map_err(|error| format!("publish: {error}"))?;
                // Both servers answer with the number of deliveries the request made.
                if response.status != 202 {
                    publish_errors.fetch_add(1, Ordering::Relaxed);
                } else if String::from_utf8_lossy(&response.body).trim() != (sessions as u64 * count).to_string() {
                    reach_mismatches.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let mut publisher_failure = None;
    let publish_done = tokio::time::timeout_at(deadline, async {
        while let Some(joined) = publishers.join_next().await {
            if let Ok(Err(error)) = joined {
                publisher_failure.get_or_insert(error);
            }
        }
    })
    .await;
    let publish_time = started.elapsed();
    let all_arrived = tokio::select! {
        _ = counters.all_complete.notified() => true,
        _ = tokio::time::sleep_until(deadline) => false,
    };
    let completed_at = *counters.completed_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let elapsed = completed_at.map_or_else(|| started.elapsed(), |at| at.duration_since(started));
    let received = counters.received.load(Ordering::Acquire);
    let lost = counters.lost.load(Ordering::Acquire);
    fleet.stop().await;
    publishers.abort_all();
    let expected = args.sessions as u64 * args.messages;
    if let Some(error) = publisher_failure {
        return Err(error);
    }
    if publish_done.is_err() || !all_arrived {
        return Err(format!(
            "timed out after {:.1} s: {received} of {expected} deliveries, publishing {}, sessions lost {lost}: {:?}",
            started.elapsed().as_secs_f64(),
            if publish_done.is_err() { "unfinished" } else { "done" },
            counters.errors()
        ));
    }
    Ok(json!({
        "mode": "fanout",
        "protocol": args.protocol.as_str(),
        "sessions": args.sessions,
        "messages": args.messages,
        "publishers": args.publishers,
        "batch": args.batch,
        "message_bytes": message_body(0).len(),
        "connect_seconds": connect_time.as_secs_f64(),
        "deliveries_expected": expected,
        "deliveries": received,
        "seconds": elapsed.as_secs_f64(),
        "deliveries_per_second": received as f64 / elapsed.as_secs_f64().max(1e-9),
        "publish_seconds": publish_time.as_secs_f64(),
        "publishes_per_second": args.messages as f64 / publish_time.as_secs_f64().max(1e-9),
        "publish_requests": args.messages.div_ceil(args.batch),
        "publish_errors": publish_errors.load(Ordering::Relaxed),
        "publish_reach_mismatches": reach_mismatches.load(Ordering::Relaxed),
        "out_of_order": counters.out_of_order.load(Ordering::Relaxed),
        "sessions_lost": lost,
        "errors": counters.errors(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Args, String> {
        parse_args(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn parses_an_idle_run_with_defaults() {
        let args = parse("idle --protocol socketio --addr 127.0.0.1:9 --server-pid 42 --gc-path /bench/gc").unwrap();
        assert_eq!(args.protocol, Protocol::SocketIo);
        assert_eq!(args.sessions, 10_000);
        assert_eq!(args.server_pid, Some(42));
        assert_eq!(args.room, "idle");
    }

    #[test]
    fn refuses_addresses_off_this_machine_and_missing_flags() {
        assert!(parse("fanout --protocol realtime --addr 10.0.0.1:80").unwrap_err().contains("loopback"));
        assert!(parse("idle --protocol realtime --addr 127.0.0.1:9").unwrap_err().contains("--server-pid"));
        assert!(parse("fanout --addr 127.0.0.1:9").unwrap_err().contains("--protocol"));
        assert!(parse("soak --protocol realtime --addr 127.0.0.1:9").is_err());
    }

    #[test]
    fn batches_carry_every_message_once_in_order() {
        let (content_type, body) = publish_request(Protocol::Realtime, true, 5..8);
        assert_eq!(content_type, "application/x-realtime-frames");
        let frames = wire::decode_all(&body, wire::DEFAULT_MAX_BODY_BYTES).unwrap();
        let indexes: Vec<serde_json::Value> = frames
            .iter()
            .map(|frame| match frame {
                Frame::Message(Message { payload: Payload::Json(json), .. }) => serde_json::from_str::<serde_json::Value>(json).unwrap()["i"].clone(),
                other => panic!("not a JSON msg: {other:?}"),
            })
            .collect();
        assert_eq!(indexes, [5, 6, 7]);
        let (content_type, body) = publish_request(Protocol::SocketIo, true, 5..8);
        assert_eq!(content_type, "application/json");
        let array: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(array.iter().map(|message| message["i"].as_u64().unwrap()).collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(publish_request(Protocol::Realtime, false, 9..10).1, message_body(9));
    }

    #[test]
    fn message_body_is_json_of_about_a_hundred_bytes() {
        let body = message_body(123);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["i"], 123);
        assert!((90..=120).contains(&body.len()), "{}", body.len());
    }
}
