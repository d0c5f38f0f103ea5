//! `fault-proxy --listen 127.0.0.1:0 --control 127.0.0.1:0 --upstream 127.0.0.1:PORT`
//! `fault-proxy --listen 127.0.0.1:0 --control 127.0.0.1:0 --spawn-upstream -- CMD [ARGS...]`
//!
//! Prints `proxy listening on http://ADDR` and `control listening on http://ADDR` once both
//! ports are bound, then serves until SIGTERM or SIGINT.
//!
//! With `--spawn-upstream`, runs CMD (which must take `--listen ADDR` and print
//! `listening on http://ADDR` on stdout once bound) and proxies to it; prints a third line,
//! `upstream listening on http://ADDR`. `POST /restart-upstream` on the control port crashes
//! and restarts it on the same port. The child is killed when the proxy exits, however it
//! exits (see `supervisor`).

use std::net::SocketAddr;
use std::process::ExitCode;

use fault_proxy::{Config, FaultProxy};

const USAGE: &str = "usage: fault-proxy [--listen 127.0.0.1:0] [--control 127.0.0.1:0] [--max-connections 1024] \
(--upstream 127.0.0.1:PORT | --spawn-upstream -- CMD [ARGS...])";

fn parse_args() -> Result<Config, String> {
    let mut args = std::env::args().skip(1);
    let mut upstream: Option<SocketAddr> = None;
    let mut spawn = false;
    let mut config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        if flag == "--spawn-upstream" {
            spawn = true;
            continue;
        }
        if flag == "--" {
            let command: Vec<_> = args.by_ref().map(Into::into).collect();
            if command.is_empty() {
                return Err(format!("-- needs a command\n{USAGE}"));
            }
            config.spawn_upstream = Some(command);
            break;
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
    match (upstream, spawn, config.spawn_upstream.is_some()) {
        (Some(addr), false, false) => config.upstream = addr,
        (None, true, true) => {}
        (None, false, false) => return Err(format!("--upstream or --spawn-upstream is required\n{USAGE}")),
        (Some(_), true, _) => return Err(format!("--upstream and --spawn-upstream exclude each other\n{USAGE}")),
        (_, true, false) => return Err(format!("--spawn-upstream needs -- CMD [ARGS...] at the end\n{USAGE}")),
        (_, false, true) => return Err(format!("-- CMD is only for --spawn-upstream\n{USAGE}")),
    }
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
    let spawned = config.spawn_upstream.is_some();
    let proxy = match FaultProxy::start(config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fault-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The signal handlers go in before the addresses are printed: whoever reads them may send
    // SIGTERM at once, and an uninstalled handler would let it kill the process unclean.
    #[cfg(unix)]
    let mut signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    // Rust's stdout is line-buffered even into a pipe or file, so each line lands at once.
    println!("proxy listening on http://{}", proxy.proxy_addr);
    println!("control listening on http://{}", proxy.control_addr);
    if spawned {
        println!("upstream listening on http://{}", proxy.upstream_addr);
    }
    #[cfg(unix)]
    wait_for_signal(&mut signals).await;
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    proxy.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(unix)]
async fn wait_for_signal(signals: &mut (Option<tokio::signal::unix::Signal>, Option<tokio::signal::unix::Signal>)) {
    match signals {
        (Some(term), Some(interrupt)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
        (Some(one), None) | (None, Some(one)) => {
            one.recv().await;
        }
        (None, None) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
