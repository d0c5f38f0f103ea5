//! The real binary on SIGTERM: closes every transport and exits promptly.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{SseReader, WsClient};
use realtime_client::core::wire::{close_code, Frame};

#[tokio::test]
async fn sigterm_closes_everything_and_exits_promptly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_realtime-server"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address = line.trim().strip_prefix("listening on http://").expect("listening line").to_owned();

    let mut ws = WsClient::connect(&format!("ws://{address}/realtime?rt_conn=1")).await;
    ws.hello().await;
    let mut probe = WsClient::connect(&format!("ws://{address}/realtime?rt_conn=1&rt_probe=1")).await;
    probe.hello().await;
    let mut sse = SseReader::new(reqwest::get(format!("http://{address}/realtime/sse?rt_conn=1")).await.unwrap());
    sse.next_event().await;
    // (A held poll's going-away answer is tested in-process, where the test can see it is held.)
    let started = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    for client in [&mut ws, &mut probe] {
        let Frame::Close(close) = client.frame().await else { panic!("expected close") };
        assert_eq!(close.code, close_code::GOING_AWAY);
    }
    assert!(sse.rest().await.contains("close code=1001"));
    assert!(took < Duration::from_secs(1), "exit took {took:?}");
}
