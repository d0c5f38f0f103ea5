//! A held long poll carries no pings, and the client declares its transport dead after
//! 1.5 × `hb` without traffic: the server answers a held poll after at most
//! min(25 s, heartbeat), with an empty batch when it has nothing.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{poll, Server};
use realtime_client::core::wire::{Frame, Hello};
use realtime_server::poll::poll_hold_for;
use realtime_server::Config;

fn hello_of(frames: &[Frame]) -> Hello {
    match frames.first() {
        Some(Frame::Hello(hello)) => hello.clone(),
        other => panic!("expected hello first, got {other:?}"),
    }
}

/// Attaches a poll session, then times one held poll on it; returns (hello, frames, elapsed).
async fn held_poll(server: &Server) -> (Hello, Vec<Frame>, Duration) {
    let hello = hello_of(&poll(server, "rt_conn=1").await);
    let query = format!("rt_conn=1&rt_sid={}&rt_key={}&rt_last=1", hello.session_id, hello.secret);
    let started = Instant::now();
    let frames = poll(server, &query).await;
    (hello, frames, started.elapsed())
}

#[test]
fn hold_is_the_smaller_of_poll_hold_and_heartbeat() {
    let default = Config::default();
    assert_eq!(poll_hold_for(&default), Duration::from_secs(25));
    let short = Config { heartbeat_ms: 1_000, ..Config::default() };
    assert_eq!(poll_hold_for(&short), Duration::from_secs(1));
    let long = Config { heartbeat_ms: 60_000, ..Config::default() };
    assert_eq!(poll_hold_for(&long), Duration::from_secs(25));
}

#[tokio::test]
async fn a_held_poll_is_answered_empty_after_one_heartbeat() {
    // poll_hold stays at its 25 s default: only the heartbeat can end the hold this early.
    let config = Config { heartbeat_ms: 400, ..Config::default() };
    assert_eq!(config.poll_hold, Duration::from_secs(25));
    let server = Server::start(config).await;
    let (hello, frames, took) = held_poll(&server).await;
    assert_eq!(hello.heartbeat_ms, 400);
    assert!(frames.is_empty(), "nothing to send: an empty batch, got {frames:?}");
    // Held for the heartbeat (not answered at once), and answered well before the client's
    // 1.5 × hb dead-connection limit would be the only bound that matters (generous for CI).
    assert!(took >= Duration::from_millis(380), "answered after {took:?}, before one heartbeat");
    assert!(took < Duration::from_secs(5), "held {took:?}, far beyond the 400 ms heartbeat");
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_with_a_short_heartbeat_ms_holds_polls_for_one_heartbeat() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_realtime-server"))
        .args(["--listen", "127.0.0.1:0", "--heartbeat-ms", "700"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let address = line.trim().strip_prefix("listening on http://").expect("listening line").parse().unwrap();
    // The helpers only need the address; this Server's state is unused.
    let server = Server { addr: address, state: realtime_server::AppState::new(Config::default()) };
    let (hello, frames, took) = held_poll(&server).await;
    assert_eq!(hello.heartbeat_ms, 700);
    assert!(frames.is_empty(), "{frames:?}");
    assert!(took >= Duration::from_millis(650), "answered after {took:?}");
    assert!(took < Duration::from_secs(5), "held {took:?} with --heartbeat-ms 700");
    drop(child);
}
