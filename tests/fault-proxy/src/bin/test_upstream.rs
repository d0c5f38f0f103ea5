//! `fault-proxy-test-upstream --listen ADDR [--exit-if-exists PATH]`: a tiny HTTP upstream
//! for the `--spawn-upstream` tests (the crate's own tests only; the browser tests use
//! realtime-server). Prints `listening on http://ADDR` like realtime-server and a line with
//! its pid on stderr, then serves, one request per connection:
//! - `GET /pid`: its process id;
//! - `GET /hold`: a response head and `held\n`, then nothing, never closing by itself;
//! - anything else: `ok`.
//!
//! `--exit-if-exists PATH`: when PATH exists at start, remove it and exit 3 before binding,
//! as a server does whose port is not free yet (tests the restart's retry).

use std::net::SocketAddr;
use std::process::ExitCode;

use fault_proxy::head::read_request_head;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut listen: Option<SocketAddr> = None;
    let mut exit_if_exists = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next();
        match (flag.as_str(), value) {
            ("--listen", Some(v)) => listen = v.parse().ok(),
            ("--exit-if-exists", Some(v)) => exit_if_exists = Some(v),
            _ => {
                eprintln!("usage: fault-proxy-test-upstream --listen ADDR [--exit-if-exists PATH]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(listen) = listen else {
        eprintln!("test-upstream: --listen ADDR is required");
        return ExitCode::from(2);
    };
    if let Some(path) = exit_if_exists {
        if std::fs::remove_file(&path).is_ok() {
            eprintln!("test-upstream: {path} existed: exiting as if {listen} were taken");
            return ExitCode::from(3);
        }
    }
    // tokio's bind sets SO_REUSEADDR, as realtime-server's does.
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("test-upstream: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    let addr = listener.local_addr().expect("local_addr");
    eprintln!("test-upstream: pid {} starting", std::process::id());
    println!("listening on http://{addr}");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let (mut r, mut w) = stream.into_split();
            let Ok((head, _)) = read_request_head(&mut r).await else { return };
            let body = match head.path() {
                "/pid" => std::process::id().to_string(),
                "/hold" => {
                    let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nheld\n").await;
                    // Until the peer leaves.
                    let mut buf = [0u8; 1024];
                    while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
                    return;
                }
                _ => "ok".to_owned(),
            };
            let response = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = w.write_all(response.as_bytes()).await;
            let _ = w.shutdown().await;
            let mut buf = [0u8; 1024];
            while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
        });
    }
}
