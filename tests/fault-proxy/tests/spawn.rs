//! `--spawn-upstream` and `POST /restart-upstream`, with the crate's helper upstream
//! (`fault-proxy-test-upstream`: `GET /pid` says which process answered, `GET /hold` stays
//! open): traffic passes, a restart is a new process on the same port, live connections are
//! cut, a start that fails is retried, and no child outlives the proxy however it ends.
//! Timeouts are upper bounds.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fault_proxy::{Config, FaultProxy};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(10);
const HELPER: &str = env!("CARGO_BIN_EXE_fault-proxy-test-upstream");

fn helper_command(extra: &[&str]) -> Vec<String> {
    let mut v = vec![HELPER.to_owned(), "--listen".to_owned(), "127.0.0.1:0".to_owned()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// One request on its own connection; (status, body).
async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    timeout(BOUND, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).await.unwrap();
        let status = response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{response:?}"));
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    })
    .await
    .expect("request within bound")
}

async fn control_json(addr: SocketAddr, method: &str, path: &str) -> Value {
    let (status, body) = request(addr, method, path).await;
    assert_eq!(status, 200, "{method} {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// A connection through the proxy that stays open: `GET /hold` answered `held`, or (with
/// `websocket=hang`) an upgrade that is never answered and never reaches the upstream.
async fn open_held(proxy: SocketAddr, websocket: bool) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    if websocket {
        s.write_all(b"GET /realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
        return s;
    }
    s.write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"held\n") {
        let n = timeout(BOUND, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before `held`: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    s
}

/// Reads until EOF (what is left is discarded); fails if the connection stays open.
async fn assert_closed(mut s: TcpStream, what: &str) {
    let mut buf = [0u8; 1024];
    let ended = timeout(BOUND, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "{what}: still open {BOUND:?} after the restart");
}

/// Dead: gone, or a zombie nobody has reaped yet (a container's pid 1 may not reap).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
    }
}

fn wait_dead(pid: u32, what: &str) {
    let deadline = Instant::now() + BOUND;
    while !is_dead(pid) {
        assert!(Instant::now() < deadline, "{what}: upstream pid {pid} still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pid_of(v: &Value, key: &str) -> u32 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}")) as u32
}

#[tokio::test]
async fn restart_gives_a_new_process_on_the_same_port_and_cuts_live_connections() {
    let proxy = FaultProxy::start(Config::spawning(helper_command(&[]))).await.unwrap();
    let first_pid = proxy.upstream_pid().expect("a spawned upstream");
    assert!(proxy.upstream_addr.ip().is_loopback() && proxy.upstream_addr.port() != 0);

    // Traffic passes, to the spawned process.
    assert_eq!(request(proxy.proxy_addr, "GET", "/pid").await, (200, first_pid.to_string()));
    let up = control_json(proxy.control_addr, "GET", "/upstream").await;
    assert_eq!(up["spawned"], true);
    assert_eq!(pid_of(&up, "pid"), first_pid);
    assert_eq!(up["upstream"], format!("http://{}", proxy.upstream_addr));
    assert_eq!(up["restarts"], 0);

    // Two live connections: one relayed to the upstream, one the upstream never saw.
    let relayed = open_held(proxy.proxy_addr, false).await;
    control_json(proxy.control_addr, "POST", "/mode?websocket=hang").await;
    let hanging = open_held(proxy.proxy_addr, true).await;
    let deadline = Instant::now() + BOUND;
    while proxy.stats()["websocket"]["live"] != 1 {
        assert!(Instant::now() < deadline, "hanging upgrade not registered: {}", proxy.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let restarted = control_json(proxy.control_addr, "POST", "/restart-upstream").await;
    assert_eq!(restarted["restarted"], true);
    assert_eq!(restarted["upstream"], format!("http://{}", proxy.upstream_addr), "same address");
    assert_eq!(pid_of(&restarted, "old_pid"), first_pid);
    let second_pid = pid_of(&restarted, "pid");
    assert_ne!(second_pid, first_pid, "a new process");
    assert!(is_dead(first_pid), "the old process is gone when the restart answers");
    // The hanging upgrade had no upstream to lose: only the cut can have ended it.
    assert!(restarted["cut"].as_u64().unwrap() >= 1, "{restarted}");
    assert_closed(hanging, "hanging websocket").await;
    assert_closed(relayed, "relayed /hold").await;
    assert_eq!(proxy.stats()["websocket"]["cut"], 1, "{}", proxy.stats());

    // The new process answers on the same port, directly and through the proxy.
    control_json(proxy.control_addr, "POST", "/reset").await;
    assert_eq!(request(proxy.upstream_addr, "GET", "/pid").await, (200, second_pid.to_string()));
    assert_eq!(request(proxy.proxy_addr, "GET", "/pid").await, (200, second_pid.to_string()));
    let up = control_json(proxy.control_addr, "GET", "/upstream").await;
    assert_eq!((pid_of(&up, "pid"), up["restarts"].as_u64()), (second_pid, Some(1)));

    // Shutting down kills and reaps the child.
    proxy.shutdown().await;
    assert!(is_dead(second_pid));
}

#[tokio::test]
async fn a_restart_retries_a_command_that_exits_before_listening() {
    let marker = std::env::temp_dir().join(format!("fault-proxy-exit-once-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let command = helper_command(&["--exit-if-exists", marker.to_str().unwrap()]);
    let proxy = FaultProxy::start(Config::spawning(command)).await.unwrap();
    let first_pid = proxy.upstream_pid().unwrap();
    // The next start exits at once (as if the port were not free yet); the one after binds.
    std::fs::write(&marker, b"").unwrap();
    let restarted = proxy.restart_upstream().await.unwrap().expect("spawn mode");
    assert!(!marker.exists(), "the failing start ran");
    let pid = pid_of(&restarted, "pid");
    assert_ne!(pid, first_pid);
    assert_eq!(request(proxy.proxy_addr, "GET", "/pid").await, (200, pid.to_string()));
    proxy.shutdown().await;
}

#[tokio::test]
async fn restart_without_spawn_mode_is_409_and_bad_commands_fail_to_start() {
    let proxy = FaultProxy::start(Config::new("127.0.0.1:9".parse().unwrap())).await.unwrap();
    let (status, body) = request(proxy.control_addr, "POST", "/restart-upstream").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(control_json(proxy.control_addr, "GET", "/upstream").await["spawned"], false);
    assert_eq!(request(proxy.control_addr, "GET", "/restart-upstream").await.0, 405);

    let no_listen = Config::spawning([HELPER]);
    let e = FaultProxy::start(no_listen).await.err().expect("no --listen");
    assert!(e.to_string().contains("--listen"), "{e}");
    let missing = Config::spawning(["/nonexistent/upstream", "--listen", "127.0.0.1:0"]);
    assert!(FaultProxy::start(missing).await.is_err());
    let silent_exit = Config::spawning(["/bin/sh", "-c", "exit 0", "--listen", "127.0.0.1:0"]);
    let e = FaultProxy::start(silent_exit).await.err().expect("exits without listening");
    assert!(e.to_string().contains("exited before"), "{e}");
}

/// The binary in spawn mode; returns it with its three addresses. Its stderr is collected
/// by a thread into the returned receiver.
fn spawn_binary() -> (Child, [SocketAddr; 3], std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fault-proxy"))
        .args(["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--spawn-upstream", "--"])
        .args(helper_command(&[]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = |prefix: &str| -> SocketAddr {
        let line = lines.next().expect("a line").unwrap();
        line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line:?} should start with {prefix:?}")).parse().unwrap()
    };
    let addrs = [addr("proxy listening on http://"), addr("control listening on http://"), addr("upstream listening on http://")];
    (child, addrs, rx)
}

fn kill(pid: u32, signal: &str) {
    assert!(Command::new("kill").args([signal, &pid.to_string()]).status().unwrap().success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the proxy did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn the_binary_prints_the_upstream_forwards_its_stderr_and_leaves_no_orphan() {
    // SIGTERM: the proxy kills the child and exits cleanly.
    let (mut proxy, [data, control, upstream], stderr) = spawn_binary();
    let pid: u32 = request(upstream, "GET", "/pid").await.1.parse().unwrap();
    assert_eq!(request(data, "GET", "/pid").await, (200, pid.to_string()));
    let restarted = control_json(control, "POST", "/restart-upstream").await;
    assert_eq!(restarted["upstream"], format!("http://{upstream}"));
    let new_pid = pid_of(&restarted, "pid");
    wait_dead(pid, "restarted");
    // The child's stderr reaches the proxy's, for both processes.
    let deadline = Instant::now() + BOUND;
    let mut seen = Vec::new();
    for want in [pid, new_pid] {
        let line = format!("test-upstream: pid {want} starting");
        while !seen.contains(&line) {
            let left = deadline.saturating_duration_since(Instant::now());
            seen.push(stderr.recv_timeout(left).unwrap_or_else(|_| panic!("no {line:?} on the proxy's stderr; got {seen:?}")));
        }
    }
    kill(proxy.id(), "-TERM");
    assert!(wait_exit(&mut proxy).success());
    assert!(is_dead(new_pid), "the child outlived a SIGTERMed proxy");

    // SIGKILL: the proxy cannot clean up; PR_SET_PDEATHSIG takes the child along.
    let (mut proxy, [_, _, upstream], _stderr) = spawn_binary();
    let pid: u32 = request(upstream, "GET", "/pid").await.1.parse().unwrap();
    kill(proxy.id(), "-KILL");
    wait_exit(&mut proxy);
    wait_dead(pid, "after SIGKILL of the proxy");
}
