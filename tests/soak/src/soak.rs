//! `soak run`: every attack of the issue at full size, one after another, each against a fresh
//! release server on 127.0.0.1 (so each peak RSS, `VmHWM`, and each refusal count belongs to one
//! attack), started with production defaults plus `SOAK_SERVER_FLAGS` and an admin token (to read
//! `/metrics`). During each attack a legitimate client on another loopback address (127.0.0.2)
//! keeps a WebSocket doing ping round trips every 50 ms and opens a new session by long poll every
//! 250 ms; its p99 latencies and failures are reported beside the attack.
//!
//! The attacks, in order: 10,000 sessions and 5,000 SSE streams from one IP; 100 POSTs of 163k
//! pings to a session without transport and the same pings from a WebSocket that never reads; a
//! 170 KB batch publish to 1,000 idle sessions, 5 publishes of 1 MiB to 300, two concurrent batch
//! publishes; 12,000 messages into a room with 10 idle members (are they still resumable?); 20 SSE
//! clients that never read; 1,074 idle sockets against `ulimit -n 1024`; slowloris and idle
//! keep-alive sockets; DNS rebinding (Host and Origin `evil.example`); the static path tricks; and
//! 5,000 WebSocket sessions in rooms of 100 sending every 5 s and acking, for 60 s.
//!
//! Environment: `SOAK_SCALE` (0 < x <= 1, default 1: multiplies every count), `SOAK_TRAFFIC_SECS`
//! (default 60: the traffic phase), `SOAK_SERVER_FLAGS` (extra server flags, split on
//! whitespace), `SOAK_ONLY` (comma-separated parts of attack titles: only those attacks run, e.g.
//! `SOAK_ONLY=traffic,SSE`), `SOAK_SERVER_NOFILE` (the server's `ulimit -n`, default 65536; the idle-socket
//! attack always uses 1024, as in the issue). The attacker's own descriptor limit is raised by
//! .ci/soak.sh. Every loop is bounded by a count and every wait by a deadline.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use realtime_client::core::wire::{self, Carrier, Frame, Message as WireMessage, Payload};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::net::{self, Stream};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const LEGIT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const ADMIN: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// What one legitimate operation may take before it counts as failed (and as this long).
const LEGIT_LIMIT: Duration = Duration::from_secs(5);
const STEP: Duration = Duration::from_secs(20);

struct Settings {
    server_bin: String,
    scale: f64,
    traffic: Duration,
    flags: Vec<String>,
    /// `SOAK_ONLY`: the attacks whose title contains one of these run (all when empty).
    only: Vec<String>,
    nofile: u64,
    token: String,
}

impl Settings {
    /// `full` scaled, at least 1.
    fn n(&self, full: usize) -> usize {
        ((full as f64 * self.scale).ceil() as usize).max(1)
    }
}

struct Server {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
}

impl Server {
    async fn start(settings: &Settings, nofile: u64, extra: &[&str], log: &std::path::Path) -> io::Result<Server> {
        let log_file = std::fs::File::create(log)?;
        // An attack's own flag gives way to the same flag in SOAK_SERVER_FLAGS (clap refuses a
        // flag given twice).
        let extra: Vec<&str> = extra
            .chunks(2)
            .filter(|pair| !settings.flags.iter().any(|flag| flag == pair[0]))
            .flatten()
            .copied()
            .collect();
        // `ulimit -n` for the server alone, then exec: the PID is the server's.
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            // (At most the hard limit, where raising it is not permitted.)
            .arg("ulimit -n \"$1\" 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; shift; exec \"$@\"")
            .arg("sh")
            .arg(nofile.to_string())
            .arg(&settings.server_bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(&extra)
            .args(&settings.flags)
            .env("REALTIME_ADMIN_TOKEN", &settings.token)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or_else(|| io::Error::other("server exited at once"))?;
        let stdout = child.stdout.take().ok_or_else(|| io::Error::other("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = timeout(STEP, async {
            // At most a few lines before `listening on` (an admin listener's, a certificate's).
            for _ in 0..8 {
                let Some(line) = lines.next_line().await? else { break };
                if let Some(address) = line.strip_prefix("listening on http://") {
                    return address.trim().parse::<SocketAddr>().map_err(|_| io::Error::other(format!("bad address {line:?}")));
                }
            }
            Err(io::Error::other(format!("the server printed no `listening on` line (log: {})", log.display())))
        })
        .await
        .map_err(|_| net::timed_out("server start"))??;
        // Keep draining stdout so the server never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server { child, pid, addr })
    }

    /// (VmHWM, VmRSS) in MiB.
    fn memory(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    async fn trips(&self, token: &str) -> String {
        let bearer = format!("Bearer {token}");
        match net::request(ADMIN, self.addr, "GET", "/metrics", &[("Authorization", &bearer)], b"", STEP).await {
            Ok(response) if response.status == 200 => {
                let trips: Vec<String> = net::limit_trips(&String::from_utf8_lossy(&response.body))
                    .into_iter()
                    .filter(|(_, count)| *count > 0.0)
                    .map(|(kind, count)| format!("{kind}={count}"))
                    .collect();
                if trips.is_empty() { "none".into() } else { trips.join(" ") }
            }
            Ok(response) => format!("(metrics: HTTP {})", response.status),
            Err(error) => format!("(metrics: {error})"),
        }
    }

    async fn stop(mut self) {
        let _ = tokio::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().await;
        if timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// Latency samples in ms and failures.
#[derive(Default)]
struct Samples {
    ms: Mutex<Vec<f64>>,
    failures: AtomicU64,
}

impl Samples {
    fn push(&self, ms: f64) {
        if let Ok(mut samples) = self.ms.lock() {
            samples.push(ms);
        }
    }
    fn fail(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.push(LEGIT_LIMIT.as_secs_f64() * 1e3);
    }
    fn p99(&self) -> String {
        let mut samples = self.ms.lock().map(|samples| samples.clone()).unwrap_or_default();
        if samples.is_empty() {
            return "-".into();
        }
        samples.sort_by(f64::total_cmp);
        let index = ((samples.len() as f64 * 0.99).ceil() as usize).clamp(1, samples.len()) - 1;
        format!("{:.1}", samples[index])
    }
}

fn text_frame(frame: &Frame) -> Message {
    Message::Text(String::from_utf8_lossy(&wire::encode_to_vec(frame, Carrier::Text)).into_owned().into())
}

fn message_bytes(message: &Message) -> Option<Vec<u8>> {
    match message {
        Message::Text(text) => Some(text.as_bytes().to_vec()),
        Message::Binary(bytes) => Some(bytes.to_vec()),
        _ => None,
    }
}

/// The legitimate client until `stop`: WebSocket round trips (reconnecting when cut) and new
/// sessions by poll.
fn legit(addr: SocketAddr, room: String, stop: watch::Receiver<bool>, ws: Arc<Samples>, connect: Arc<Samples>) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let mut stopped = stop.clone();
    tasks.spawn(async move {
        let mut time = 0u64;
        'outer: while !*stopped.borrow() {
            let Ok(mut socket) = net::websocket(LEGIT, addr, &format!("room={room}&rt_v=2&rt_conn=1"), LEGIT_LIMIT).await else {
                ws.fail();
                if timeout(Duration::from_millis(250), stopped.changed()).await.is_ok() { break }
                continue;
            };
            let mut last_seq = 0;
            loop {
                if *stopped.borrow() {
                    break 'outer;
                }
                time += 1;
                let sent = Instant::now();
                if socket.send(text_frame(&Frame::Ping { time })).await.is_err() {
                    ws.fail();
                    continue 'outer;
                }
                let answered = timeout(LEGIT_LIMIT, async {
                    while let Some(Ok(message)) = socket.next().await {
                        let Some(bytes) = message_bytes(&message) else { continue };
                        let Ok(frames) = net::frames(&bytes) else { return false };
                        let mut pong = false;
                        for frame in frames {
                            match frame {
                                Frame::Pong { time: echoed } if echoed == time => pong = true,
                                Frame::Message(message) => last_seq = message.seq,
                                Frame::Ping { time } => {
                                    let _ = socket.send(text_frame(&Frame::Pong { time })).await;
                                }
                                Frame::Close(_) => return false,
                                _ => {}
                            }
                        }
                        if last_seq > 0 {
                            let _ = socket.send(text_frame(&Frame::Ack { seq: last_seq })).await;
                        }
                        if pong {
                            return true;
                        }
                    }
                    false
                })
                .await;
                match answered {
                    Ok(true) => ws.push(sent.elapsed().as_secs_f64() * 1e3),
                    _ => {
                        ws.fail();
                        continue 'outer;
                    }
                }
                if timeout(Duration::from_millis(50), stopped.changed()).await.is_ok() {
                    break 'outer;
                }
            }
        }
    });
    let mut stopped = stop;
    tasks.spawn(async move {
        let mut index = 0u64;
        while !*stopped.borrow() {
            index += 1;
            let started = Instant::now();
            let path = format!("/realtime/poll?room=legit-new-{index}&rt_v=2&rt_conn=1");
            match net::request(LEGIT, addr, "GET", &path, &[], b"", LEGIT_LIMIT).await {
                Ok(response) if response.status == 200 => connect.push(started.elapsed().as_secs_f64() * 1e3),
                _ => connect.fail(),
            }
            if timeout(Duration::from_millis(250), stopped.changed()).await.is_ok() {
                break;
            }
        }
    });
    tasks
}

/// Runs `count` jobs, at most `concurrency` at once; returns their outcomes.
async fn many<T, F, Fut>(count: usize, concurrency: usize, job: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for index in 0..count {
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let future = job(index);
        tasks.spawn(async move {
            let outcome = future.await;
            drop(permit);
            outcome
        });
    }
    let mut outcomes = Vec::with_capacity(count);
    while let Some(outcome) = tasks.join_next().await {
        if let Ok(outcome) = outcome {
            outcomes.push(outcome);
        }
    }
    outcomes
}

/// Statuses counted: "200×9990 503×10".
fn tally(statuses: &[u16]) -> String {
    let mut counts: std::collections::BTreeMap<u16, usize> = Default::default();
    for status in statuses {
        *counts.entry(*status).or_default() += 1;
    }
    counts.iter().map(|(status, count)| if *status == 0 { format!("error×{count}") } else { format!("{status}×{count}") }).collect::<Vec<_>>().join(" ")
}

async fn new_session(addr: SocketAddr, room: &str) -> io::Result<wire::Hello> {
    let response = net::request(ATTACKER, addr, "GET", &format!("/realtime/poll?room={room}&rt_v=2&rt_conn=1"), &[], b"", STEP).await?;
    if response.status != 200 {
        return Err(io::Error::other(format!("HTTP {}", response.status)));
    }
    net::hello_of(&net::frames(&response.body)?)
}

/// `count` idle sessions (a hello by poll, then no transport) in `room`.
async fn idle_sessions(addr: SocketAddr, room: &str, count: usize) -> Vec<wire::Hello> {
    let room = room.to_owned();
    many(count, 64, |_| {
        let room = room.clone();
        async move { new_session(addr, &room).await.ok() }
    })
    .await
    .into_iter()
    .flatten()
    .collect()
}

/// A batch of small `msg` frames of about `bytes` in all.
fn small_frames_batch(bytes: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(bytes + 200);
    let payload = "x".repeat(100);
    let mut seq = 0;
    while body.len() < bytes {
        seq += 1;
        wire::encode(&Frame::Message(WireMessage { seq, event: None, payload: Payload::Text(payload.clone()) }), Carrier::Binary, &mut body);
    }
    body
}

fn pings(count: usize) -> Vec<u8> {
    b"ping t=1\n".repeat(count)
}

/// Pings per request: as many as fit a default batch limit (1 MiB payload as base64 plus frame
/// headers: 1,463,637 bytes), the issue's 163k at most.
const PINGS_PER_BATCH: usize = 162_600;

async fn publish(addr: SocketAddr, room: &str, content_type: &str, body: &[u8]) -> u16 {
    let path = format!("/realtime/publish?room={room}");
    net::request(ATTACKER, addr, "POST", &path, &[("Content-Type", content_type)], body, Duration::from_secs(60))
        .await
        .map_or(0, |response| response.status)
}

#[derive(Clone, Copy, Debug)]
enum Attack {
    Sessions,
    SseStreams,
    PongPosts,
    PongWebSocket,
    BatchFanout,
    BigPublishes,
    ConcurrentBatches,
    RoomFlood,
    SlowSse,
    IdleSockets,
    Slowloris,
    Rebinding,
    StaticPaths,
    Traffic,
}

const ATTACKS: [Attack; 14] = [
    Attack::Sessions,
    Attack::SseStreams,
    Attack::PongPosts,
    Attack::PongWebSocket,
    Attack::BatchFanout,
    Attack::BigPublishes,
    Attack::ConcurrentBatches,
    Attack::RoomFlood,
    Attack::SlowSse,
    Attack::IdleSockets,
    Attack::Slowloris,
    Attack::Rebinding,
    Attack::StaticPaths,
    Attack::Traffic,
];

impl Attack {
    fn title(self, settings: &Settings) -> String {
        match self {
            Attack::Sessions => format!("{} sessions, one IP, distinct rooms", settings.n(10_000)),
            Attack::SseStreams => format!("{} SSE streams, one IP", settings.n(5_000)),
            Attack::PongPosts => format!("{} POSTs of {}k pings, no transport", settings.n(100), PINGS_PER_BATCH / 1000),
            Attack::PongWebSocket => format!("WebSocket: {} messages of {}k pings, never reads", settings.n(100), PINGS_PER_BATCH / 1000),
            Attack::BatchFanout => format!("170 KB batch publish to {} idle sessions", settings.n(1_000)),
            Attack::BigPublishes => format!("{} publishes of 1 MiB to {} idle sessions", settings.n(5), settings.n(300)),
            Attack::ConcurrentBatches => format!("2 concurrent 170 KB batch publishes, {} sessions", settings.n(1_000)),
            Attack::RoomFlood => format!("{} messages into a room with 10 idle members", settings.n(12_000)),
            Attack::SlowSse => format!("20 non-reading SSE clients, {} × 100 KB published", settings.n(200)),
            Attack::IdleSockets => format!("{} idle sockets, server ulimit -n 1024", settings.n(1_074)),
            Attack::Slowloris => format!("slowloris {} + idle keep-alive {}", settings.n(300), settings.n(300)),
            Attack::Rebinding => "DNS rebinding: Host and Origin evil.example".into(),
            Attack::StaticPaths => "static path tricks".into(),
            Attack::Traffic => format!("{} sessions with traffic for {} s", settings.n(5_000), settings.traffic.as_secs()),
        }
    }

    /// Server flags of this attack alone, before `SOAK_SERVER_FLAGS`. The traffic phase is 5,000
    /// users, not one attacker: they all come from 127.0.0.1 here, so the per-IP limits (which
    /// would refuse all but about 100 of them) are lifted to measure load, as 5,000 addresses
    /// would see it. The total caps and every per-session limit stay at their defaults.
    fn server_flags(self) -> &'static [&'static str] {
        match self {
            Attack::Traffic => &[
                "--max-sessions-per-ip", "100000", "--max-streams-per-ip", "100000", "--new-sessions-per-sec", "100000",
                "--new-sessions-burst", "100000", "--max-connections-per-ip", "100000",
                "--replay-budget-per-ip-bytes", "1073741824",
            ],
            _ => &[],
        }
    }

    fn room(self) -> &'static str {
        match self {
            Attack::RoomFlood => "flooded",
            _ => "legit",
        }
    }

    /// Runs the attack; returns what it observed.
    async fn run(self, settings: &Settings, addr: SocketAddr) -> String {
        match self {
            Attack::Sessions => {
                let count = settings.n(10_000);
                let started = Instant::now();
                let statuses = many(count, 64, |index| async move {
                    let path = format!("/realtime/poll?room=attack-{index}&rt_v=2&rt_conn=1");
                    net::request(ATTACKER, addr, "GET", &path, &[], b"", STEP).await.map_or(0, |response| response.status)
                })
                .await;
                let took = started.elapsed();
                sleep(Duration::from_secs(3)).await;
                format!("{} in {:.1} s, then held 3 s", tally(&statuses), took.as_secs_f64())
            }
            Attack::SseStreams => {
                let count = settings.n(5_000);
                let streams = many(count, 256, |_| async move {
                    let mut stream = Stream::open(ATTACKER, addr, "/realtime/sse?room=sse-flood&rt_v=2&rt_conn=1", &[]).await.ok()?;
                    stream.wait_for(b"event: hello", Instant::now() + STEP).await.ok()?;
                    Some(stream)
                })
                .await;
                let open = streams.iter().filter(|stream| stream.is_some()).count();
                sleep(Duration::from_secs(3)).await;
                format!("{open}/{count} streams opened (held 3 s)")
            }
            Attack::PongPosts => {
                let Ok(hello) = new_session(addr, "pong-posts").await else { return "no session".into() };
                let path = format!("/realtime/send?room=pong-posts&rt_v=2&rt_conn=1&rt_sid={}&rt_key={}", hello.session_id, hello.secret);
                let body = Arc::new(pings(PINGS_PER_BATCH));
                let started = Instant::now();
                let statuses = many(settings.n(100), 10, |_| {
                    let (path, body) = (path.clone(), body.clone());
                    async move {
                        net::request(ATTACKER, addr, "POST", &path, &[("Content-Type", "text/plain")], &body, Duration::from_secs(60))
                            .await
                            .map_or(0, |response| response.status)
                    }
                })
                .await;
                format!("{} in {:.1} s", tally(&statuses), started.elapsed().as_secs_f64())
            }
            Attack::PongWebSocket => {
                let Ok(mut socket) = net::websocket(ATTACKER, addr, "room=pong-ws&rt_v=2&rt_conn=1", STEP).await else {
                    return "no websocket".into();
                };
                let text: String = String::from_utf8_lossy(&pings(PINGS_PER_BATCH)).into_owned();
                let started = Instant::now();
                let deadline = started + Duration::from_secs(20);
                let mut sent = 0;
                let mut ended = "";
                for _ in 0..settings.n(100) {
                    match tokio::time::timeout_at(deadline, socket.send(Message::Text(text.clone().into()))).await {
                        Ok(Ok(())) => sent += 1,
                        Ok(Err(_)) => {
                            ended = ", then the server closed it";
                            break;
                        }
                        Err(_) => {
                            ended = ", then sending blocked (20 s deadline)";
                            break;
                        }
                    }
                }
                format!("{sent} messages sent in {:.1} s{ended}", started.elapsed().as_secs_f64())
            }
            Attack::BatchFanout | Attack::ConcurrentBatches => {
                let count = settings.n(1_000);
                let sessions = idle_sessions(addr, "fanout", count).await;
                let body = Arc::new(small_frames_batch(170 * 1024));
                let publishes = if matches!(self, Attack::BatchFanout) { 1 } else { 2 };
                let started = Instant::now();
                let outcomes = many(publishes, 2, |_| {
                    let body = body.clone();
                    async move {
                        let started = Instant::now();
                        (publish(addr, "fanout", "application/x-realtime-frames", &body).await, started.elapsed())
                    }
                })
                .await;
                let statuses: Vec<u16> = outcomes.iter().map(|(status, _)| *status).collect();
                let slowest = outcomes.iter().map(|(_, took)| *took).max().unwrap_or_default();
                sleep(Duration::from_secs(2)).await;
                format!(
                    "{} idle sessions; publish {} ({} bytes of {} frames), slowest {:.1} s; total {:.1} s",
                    sessions.len(),
                    tally(&statuses),
                    body.len(),
                    net::frames(&body).map_or(0, |frames| frames.len()),
                    slowest.as_secs_f64(),
                    started.elapsed().as_secs_f64()
                )
            }
            Attack::BigPublishes => {
                let sessions = idle_sessions(addr, "big", settings.n(300)).await;
                let body = vec![b'z'; 1 << 20];
                let started = Instant::now();
                let mut statuses = Vec::new();
                for _ in 0..settings.n(5) {
                    statuses.push(publish(addr, "big", "text/plain", &body).await);
                }
                let took = started.elapsed();
                sleep(Duration::from_secs(2)).await;
                format!("{} idle sessions; publishes {} in {:.1} s", sessions.len(), tally(&statuses), took.as_secs_f64())
            }
            Attack::RoomFlood => {
                let members = idle_sessions(addr, "flooded", 10).await;
                let Ok(socket) = net::websocket(ATTACKER, addr, "room=flooded&rt_v=2&rt_conn=1", STEP).await else {
                    return "no websocket".into();
                };
                let (mut sink, mut stream) = socket.split();
                // Drain what the server sends the attacker, so only the members' fate is measured.
                let drain = tokio::spawn(async move { while let Ok(Some(Ok(_))) = timeout(STEP, stream.next()).await {} });
                let total = settings.n(12_000);
                let started = Instant::now();
                let mut seq = 0u64;
                let mut refused = "";
                while seq < total as u64 {
                    let mut batch = Vec::new();
                    for _ in 0..100.min(total as u64 - seq) {
                        seq += 1;
                        wire::encode(&Frame::Message(WireMessage { seq, event: None, payload: Payload::Text(format!("flood {seq}")) }), Carrier::Text, &mut batch);
                    }
                    let text = String::from_utf8_lossy(&batch).into_owned();
                    if !matches!(timeout(STEP, sink.send(Message::Text(text.into()))).await, Ok(Ok(()))) {
                        refused = " (then the server closed or stalled the socket)";
                        break;
                    }
                }
                let took = started.elapsed();
                sleep(Duration::from_secs(2)).await;
                drain.abort();
                let mut resumable = 0;
                for member in &members {
                    let path = format!(
                        "/realtime/poll?room=flooded&rt_v=2&rt_conn=2&rt_sid={}&rt_key={}&rt_last=0",
                        member.session_id, member.secret
                    );
                    if let Ok(response) = net::request(LEGIT, addr, "GET", &path, &[], b"", STEP).await {
                        if let Ok(hello) = net::frames(&response.body).and_then(|frames| net::hello_of(&frames)) {
                            resumable += usize::from(hello.resumed);
                        }
                    }
                }
                format!("{seq} sent in {:.1} s{refused}; idle members still resumable: {resumable}/{}", took.as_secs_f64(), members.len())
            }
            Attack::SlowSse => {
                let mut streams = Vec::new();
                for _ in 0..20 {
                    if let Ok(mut stream) = Stream::open(ATTACKER, addr, "/realtime/sse?room=slow&rt_v=2&rt_conn=1", &[]).await {
                        if stream.wait_for(b"event: hello", Instant::now() + STEP).await.is_ok() {
                            streams.push(stream);
                        }
                    }
                }
                let body = Arc::new(vec![b'y'; 100 * 1024]);
                let statuses = many(settings.n(200), 4, |_| {
                    let body = body.clone();
                    async move { publish(addr, "slow", "text/plain", &body).await }
                })
                .await;
                sleep(Duration::from_secs(5)).await;
                // Still open: a read would block (no EOF, no reset).
                let mut open = 0;
                for stream in &mut streams {
                    let mut byte = [0u8; 1];
                    if let Ok(Ok(read)) = timeout(Duration::from_millis(1), stream.stream.read(&mut byte)).await {
                        open += usize::from(read > 0);
                    } else {
                        open += 1;
                    }
                }
                format!("{} streams; publishes {}; 5 s later {open}/{} streams still open", streams.len(), tally(&statuses), streams.len())
            }
            Attack::IdleSockets => {
                let count = settings.n(1_074);
                let sockets = many(count, 128, |_| async move { net::connect(ATTACKER, addr).await.ok() }).await;
                let mut sockets: Vec<_> = sockets.into_iter().flatten().collect();
                let connected = sockets.len();
                sleep(Duration::from_secs(10)).await;
                let open = still_open(&mut sockets).await;
                format!("{connected}/{count} connected; after 10 s {open} still open")
            }
            Attack::Slowloris => {
                let count = settings.n(300);
                let mut slow: Vec<_> = many(count, 128, |_| async move {
                    let mut socket = net::connect(ATTACKER, addr).await.ok()?;
                    socket.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.ok()?;
                    Some(socket)
                })
                .await
                .into_iter()
                .flatten()
                .collect();
                let mut idle: Vec<_> = many(settings.n(300), 128, |_| async move {
                    let mut socket = net::connect(ATTACKER, addr).await.ok()?;
                    let request = format!("GET /realtime/poll?room=ka&rt_v=2&rt_conn=1 HTTP/1.1\r\nHost: {addr}\r\n\r\n");
                    socket.write_all(request.as_bytes()).await.ok()?;
                    let mut buffer = vec![0u8; 4096];
                    let _ = timeout(STEP, socket.read(&mut buffer)).await;
                    Some(socket)
                })
                .await
                .into_iter()
                .flatten()
                .collect();
                // One header line every 10 s, for 40 s.
                for round in 0..4 {
                    sleep(Duration::from_secs(10)).await;
                    for socket in &mut slow {
                        let _ = socket.write_all(format!("X-Slow-{round}: 1\r\n").as_bytes()).await;
                    }
                }
                let slow_open = still_open(&mut slow).await;
                let idle_open = still_open(&mut idle).await;
                format!("after 40 s: slowloris {slow_open}/{} still open, idle keep-alive {idle_open}/{} still open", slow.len(), idle.len())
            }
            Attack::Rebinding => {
                let evil = [("Host", "evil.example"), ("Origin", "http://evil.example")];
                let mut headers = evil.to_vec();
                headers.push(("Content-Type", "text/plain"));
                let publish = net::request(ATTACKER, addr, "POST", "/realtime/publish?room=r", &headers, b"hi", STEP).await.map_or(0, |r| r.status);
                let mut upgrade = evil.to_vec();
                upgrade.extend([("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]);
                let ws = match Stream::open(ATTACKER, addr, "/realtime?room=r&rt_v=2&rt_conn=1", &upgrade).await {
                    Ok(mut stream) => match stream.wait_for(b"\r\n", Instant::now() + STEP).await {
                        Ok(_) => String::from_utf8_lossy(&stream.seen).split(' ').nth(1).unwrap_or("?").to_owned(),
                        Err(error) => error.to_string(),
                    },
                    Err(error) => error.to_string(),
                };
                let sse = net::request(ATTACKER, addr, "GET", "/realtime/poll?room=r&rt_v=2&rt_conn=1", &evil[..1], b"", STEP).await.map_or(0, |r| r.status);
                format!("publish {publish}, WebSocket upgrade {ws}, poll with Host only {sse}")
            }
            Attack::StaticPaths => {
                let paths = [
                    "/server/src/main.rs",
                    "/%73erver/src/main.rs",
                    "//server/src/main.rs",
                    "/./server/src/main.rs",
                    "/server%2Fsrc%2Fmain.rs",
                    "/pkg/../server/src/main.rs",
                    "/pkg/%2e%2e/server/src/main.rs",
                    "/%2e/server/Cargo.toml",
                    "/server/Cargo.toml",
                ];
                let mut outcomes = Vec::new();
                let mut leaks = 0;
                for path in paths {
                    let response = net::request(ATTACKER, addr, "GET", path, &[], b"", STEP).await;
                    let (status, leaked) = response.map_or((0, false), |r| {
                        let body = String::from_utf8_lossy(&r.body);
                        (r.status, body.contains("fn main") || body.contains("[package]"))
                    });
                    leaks += usize::from(leaked);
                    outcomes.push(format!("{path} {status}{}", if leaked { " LEAK" } else { "" }));
                }
                format!("{leaks} of {} served source: {}", paths.len(), outcomes.join(", "))
            }
            Attack::Traffic => traffic(settings, addr).await,
        }
    }
}

/// How many of `sockets` the server has not closed (a read neither ends nor fails at once).
async fn still_open(sockets: &mut [tokio::net::TcpStream]) -> usize {
    let mut open = 0;
    for socket in sockets {
        let mut buffer = vec![0u8; 4096];
        // Drain what is there (an answer); EOF or a reset means closed.
        let mut closed = false;
        for _ in 0..16 {
            match timeout(Duration::from_millis(2), socket.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
        open += usize::from(!closed);
    }
    open
}

/// Sessions in rooms of 100, each sending a message every 5 s (staggered) and acking what it gets.
async fn traffic(settings: &Settings, addr: SocketAddr) -> String {
    let count = settings.n(5_000);
    let duration = settings.traffic;
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let connect_permits = Arc::new(Semaphore::new(128));
    let mut tasks = JoinSet::new();
    for index in 0..count {
        let (sent, received, failed, mut stopped, permits) = (sent.clone(), received.clone(), failed.clone(), stopped.clone(), connect_permits.clone());
        tasks.spawn(async move {
            let socket = {
                let _permit = permits.acquire_owned().await;
                net::websocket(ATTACKER, addr, &format!("room=traffic-{}&rt_v=2&rt_conn=1", index / 100), STEP).await
            };
            let Ok(socket) = socket else {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let (mut sink, mut stream) = socket.split();
            let mut seq = 0u64;
            let mut tick = tokio::time::interval_at(Instant::now() + Duration::from_millis((index as u64 * 7) % 5_000), Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tick.tick() => {
                        seq += 1;
                        let frame = Frame::Message(WireMessage { seq, event: None, payload: Payload::Text(format!("traffic {index} {seq}")) });
                        if sink.send(text_frame(&frame)).await.is_err() { failed.fetch_add(1, Ordering::Relaxed); break; }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    message = stream.next() => {
                        let Some(Ok(message)) = message else { failed.fetch_add(1, Ordering::Relaxed); break };
                        let Some(bytes) = message_bytes(&message) else { continue };
                        let mut last = 0;
                        for frame in net::frames(&bytes).unwrap_or_default() {
                            match frame {
                                Frame::Message(message) => { received.fetch_add(1, Ordering::Relaxed); last = message.seq; }
                                Frame::Ping { time } => { let _ = sink.send(text_frame(&Frame::Pong { time })).await; }
                                _ => {}
                            }
                        }
                        if last > 0 { let _ = sink.send(text_frame(&Frame::Ack { seq: last })).await; }
                    }
                }
            }
        });
    }
    sleep(duration).await;
    let _ = stop.send(true);
    let _ = timeout(STEP, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    drop(stopped);
    format!(
        "{} sent, {} delivered, {} sessions failed or cut",
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    )
}

fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact_sync(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

trait ReadExactSync {
    fn read_exact_sync(&mut self, buffer: &mut [u8]) -> io::Result<()>;
}

impl ReadExactSync for std::fs::File {
    fn read_exact_sync(&mut self, buffer: &mut [u8]) -> io::Result<()> {
        std::io::Read::read_exact(self, buffer)
    }
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|text| text.trim().parse().ok()).unwrap_or(default)
}

pub async fn run(server_bin: &str) -> io::Result<()> {
    let settings = Settings {
        server_bin: server_bin.to_owned(),
        scale: env_number("SOAK_SCALE", 1.0f64).clamp(0.0001, 1.0),
        traffic: Duration::from_secs(env_number("SOAK_TRAFFIC_SECS", 60u64).clamp(1, 600)),
        flags: std::env::var("SOAK_SERVER_FLAGS").unwrap_or_default().split_whitespace().map(str::to_owned).collect(),
        nofile: env_number("SOAK_SERVER_NOFILE", 65_536u64),
        only: std::env::var("SOAK_ONLY").unwrap_or_default().split(',').map(str::trim).filter(|only| !only.is_empty()).map(str::to_owned).collect(),
        token: random_token()?,
    };
    let logs = std::env::temp_dir().join(format!("realtime-soak-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    println!(
        "soak: server {} {} (scale {}, ulimit -n {}); attacker 127.0.0.1, legitimate client 127.0.0.2; logs in {}",
        settings.server_bin,
        settings.flags.join(" "),
        settings.scale,
        settings.nofile,
        logs.display()
    );
    println!("| attack | server peak RSS (MiB) | refused (limit trips) | legit p99 ping / new session (ms), failures | outcome |");
    println!("|---|---|---|---|---|");
    for (index, attack) in ATTACKS.into_iter().enumerate() {
        let nofile = if matches!(attack, Attack::IdleSockets) { 1024 } else { settings.nofile };
        let log = logs.join(format!("{index:02}-{attack:?}.log"));
        if !settings.only.is_empty() && !settings.only.iter().any(|only| attack.title(&settings).contains(only.as_str())) {
            continue;
        }
        let server = match Server::start(&settings, nofile, attack.server_flags(), &log).await {
            Ok(server) => server,
            Err(error) => {
                println!("| {} | - | - | - | server did not start: {error} |", attack.title(&settings));
                continue;
            }
        };
        let (baseline, _) = server.memory();
        let (stop, stopped) = watch::channel(false);
        let ws = Arc::new(Samples::default());
        let connect = Arc::new(Samples::default());
        let mut legit_tasks = legit(server.addr, attack.room().to_owned(), stopped.clone(), ws.clone(), connect.clone());
        // Let the legitimate client connect before the attack starts.
        sleep(Duration::from_millis(500)).await;
        let peak_rss = Arc::new(Mutex::new(0.0f64));
        let sampler = {
            let (pid, peak_rss, mut stopped) = (server.pid, peak_rss.clone(), stopped.clone());
            tokio::spawn(async move {
                loop {
                    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                    let rss = status.lines().find_map(|line| line.strip_prefix("VmRSS:")).and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0;
                    if let Ok(mut peak) = peak_rss.lock() {
                        *peak = peak.max(rss);
                    }
                    if timeout(Duration::from_millis(20), stopped.changed()).await.is_ok() {
                        break;
                    }
                }
            })
        };
        let started = Instant::now();
        let outcome = match timeout(Duration::from_secs(300), attack.run(&settings, server.addr)).await {
            Ok(outcome) => outcome,
            Err(_) => "attack cut at 300 s".into(),
        };
        let _ = stop.send(true);
        let _ = timeout(STEP, async { while legit_tasks.join_next().await.is_some() {} }).await;
        legit_tasks.abort_all();
        let _ = sampler.await;
        let (hwm, rss) = server.memory();
        let sampled = peak_rss.lock().map(|peak| *peak).unwrap_or(0.0);
        let trips = server.trips(&settings.token).await;
        let alive = server.child.id().is_some();
        println!(
            "| {} | {:.0} (VmHWM; sampled VmRSS max {:.0}, start {:.0}, end {:.0}) | {} | {} / {}, {} failed | {}; {:.0} s{} |",
            attack.title(&settings),
            hwm,
            sampled,
            baseline,
            rss,
            trips,
            ws.p99(),
            connect.p99(),
            ws.failures.load(Ordering::Relaxed) + connect.failures.load(Ordering::Relaxed),
            outcome,
            started.elapsed().as_secs_f64(),
            if alive { "" } else { "; THE SERVER DIED" }
        );
        drop(stopped);
        server.stop().await;
    }
    Ok(())
}
