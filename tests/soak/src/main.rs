//! `soak`: the attack harness of `make soak` and the transport checks of `.ci/proxy-tests.sh`.
//!
//! ```text
//! soak run --server-bin PATH        every attack of the issue at full size, one after another, each
//!                                   against a fresh release server on 127.0.0.1 (see soak.rs)
//! soak proxy-check --proxy ADDR --direct ADDR   WebSocket, SSE promptness, long poll and send
//!                                   through a reverse proxy (see proxy_check.rs)
//! soak free-ports N                 N free loopback ports, one per line (for proxy configs)
//! ```
//!
//! Only loopback addresses are used; every loop and wait is bounded.

mod net;
mod proxy_check;
mod soak;

use std::net::SocketAddr;
use std::process::ExitCode;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|arg| arg == name).and_then(|index| args.get(index + 1)).cloned()
}

fn loopback(text: Option<String>, name: &str) -> Result<SocketAddr, String> {
    let text = text.ok_or_else(|| format!("{name} ADDR is required"))?;
    let address: SocketAddr = text.parse().map_err(|_| format!("{name} {text:?} is not an address"))?;
    if !address.ip().is_loopback() {
        return Err(format!("{name} {address}: loopback addresses only"));
    }
    Ok(address)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("proxy-check") => match (loopback(arg(&args, "--proxy"), "--proxy"), loopback(arg(&args, "--direct"), "--direct")) {
            (Ok(proxy), Ok(direct)) => proxy_check::run(proxy, direct).await.map_err(|error| error.to_string()),
            (Err(error), _) | (_, Err(error)) => Err(error),
        },
        Some("free-ports") => {
            let count: usize = args.get(1).and_then(|text| text.parse().ok()).unwrap_or(1).min(64);
            // Bound together so no two are the same; released on return (a tiny reuse race,
            // acceptable for test configs on loopback).
            let listeners: Vec<std::net::TcpListener> =
                (0..count).filter_map(|_| std::net::TcpListener::bind("127.0.0.1:0").ok()).collect();
            for listener in &listeners {
                if let Ok(address) = listener.local_addr() {
                    println!("{}", address.port());
                }
            }
            Ok(())
        }
        Some("run") => match arg(&args, "--server-bin") {
            Some(server_bin) => soak::run(&server_bin).await.map_err(|error| error.to_string()),
            None => Err("--server-bin PATH is required".into()),
        },
        _ => Err("usage: soak run --server-bin PATH | soak proxy-check --proxy ADDR --direct ADDR | soak free-ports N".into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("soak: {error}");
            ExitCode::FAILURE
        }
    }
}
