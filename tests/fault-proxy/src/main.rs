//! `fault-proxy --listen 127.0.0.1:0 --control 127.0.0.1:0 --upstream 127.0.0.1:PORT`
//!
//! Prints `proxy listening on http://ADDR` and `control listening on http://ADDR` once both
//! ports are bound, then serves until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::process::ExitCode;

use fault_proxy::{Config, FaultProxy};

const USAGE: &str = "usage: fault-proxy [--listen 127.0.0.1:0] [--control 127.0.0.1:0] --upstream 127.0.0.1:PORT [--max-connections 1024]";

fn parse_args() -> Result<Config, String> {
    let mut args = std::env::args().skip(1);
    let mut upstream: Option<SocketAddr> = None;
    let mut config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let addr = || value.parse::<SocketAddr>().map_err(|e| format!("{flag} {value}: {e}"));
        match flag.as_str() {
            "--listen" => config.listen = addr()?,
            "--control" => config.control = addr()?,
            "--upstream" => upstream = Some(addr()?),
            "--max-connections" => {
                config.max_live_connections = value.parse().map_err(|e| format!("{flag} {value}: {e}"))?;
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    config.upstream = upstream.ok_or_else(|| format!("--upstream is required\n{USAGE}"))?;
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fault-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let proxy = match FaultProxy::start(config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fault-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Rust's stdout is line-buffered even into a pipe or file, so each line lands at once.
    println!("proxy listening on http://{}", proxy.proxy_addr);
    println!("control listening on http://{}", proxy.control_addr);
    wait_for_signal().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
