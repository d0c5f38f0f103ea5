//! `realtime-server`: parses flags, binds, prints `listening on http://ADDR` (or, with TLS,
//! `spki sha256 <BASE64>` and then `listening on https://ADDR`), serves until SIGINT/SIGTERM, then
//! sends every transport `close code=1001 retry=1000` and exits.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use realtime_server::tls::Identity;
use realtime_server::{app, default_static_dir, AppState, Config};

/// Reference server for realtime-client (wire protocol v1, see www/PROTOCOL.md).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Flags {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory served at / (its pkg/ at /pkg/): it must hold only public files (the demo and
    /// the wasm package); default: the repository's www/public.
    #[arg(long)]
    static_dir: Option<PathBuf>,
    /// An origin allowed to use /realtime cross-origin, exact match (repeatable).
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// TEST ONLY: allow any origin on 127.0.0.1, localhost or [::1], any port.
    #[arg(long)]
    allow_loopback_origins: bool,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 25_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    heartbeat_ms: u64,
    /// Largest message payload in bytes.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..=(64 << 20)))]
    max_message_bytes: u64,
    /// How long a session without a transport is kept for a resume, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    resume_window_ms: u64,
    /// Most sessions held at once; a connection over it gets 503.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_sessions: u64,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with this PEM certificate chain, leaf first.
    #[arg(long, value_name = "PEM", requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert", conflicts_with = "tls_self_signed")]
    tls_key: Option<PathBuf>,
    /// DEVELOPMENT: serve HTTPS with a certificate for 127.0.0.1 and localhost generated at start;
    /// its fingerprint is printed as `spki sha256 <BASE64>` (for Chromium's
    /// --ignore-certificate-errors-spki-list).
    #[arg(long)]
    tls_self_signed: bool,
    /// TEST AND DEMO ONLY: enable POST /realtime/kick?sid=ID, which breaks off a session's
    /// transport (no secret needed); off by default.
    #[arg(long)]
    allow_kick: bool,
    /// Channels a client may publish to (repeatable): an exact name, or a prefix ending in `*`;
    /// `none` allows none. Default: `*` (every channel). A refused publish gets `nack` 4013.
    #[arg(long = "client-publish", value_name = "PATTERN")]
    client_publish: Vec<String>,
    /// Most messages a channel's history keeps (PROTOCOL §8.7).
    #[arg(long, default_value_t = 1_000)]
    channel_history_messages: usize,
    /// Most bytes a channel's history keeps.
    #[arg(long, default_value_t = 1 << 20)]
    channel_history_bytes: usize,
    /// Longest a message stays in a channel's history, in ms.
    #[arg(long, default_value_t = 300_000)]
    channel_history_age_ms: u64,
    /// A proxy (an address, or a network like 10.0.0.0/8) whose X-Forwarded-For header names the
    /// client address for per-IP limits (repeatable); without it the TCP peer is the client.
    #[arg(long = "trusted-proxy", value_name = "IP|CIDR")]
    trusted_proxies: Vec<realtime_server::client_ip::ProxyNet>,
    /// DEMO ONLY: publish a clock tick (event `tick`) to this channel once per second; off by default.
    #[arg(long, value_name = "CHANNEL")]
    demo_feed: Option<String>,
    #[command(flatten)]
    edge: realtime_server::edge::EdgeFlags,
    #[command(flatten)]
    limits: realtime_server::limits::LimitFlags,
    #[command(flatten)]
    admin: realtime_server::admin::AdminFlags,
    #[command(flatten)]
    auth: realtime_server::auth::AuthFlags,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
    // RUST_LOG (default info), with dependencies' byte dumps kept out at every level.
    realtime_server::auth::logs::init();
    for origin in &flags.allow_origins {
        if !origin.starts_with("http://") && !origin.starts_with("https://") || origin.ends_with('/') {
            eprintln!("error: --allow-origin {origin:?} must look like http://host[:port], without a path");
            return std::process::ExitCode::from(2);
        }
    }
    if let Some(channel) = flags.demo_feed.as_deref().filter(|channel| !realtime_client::core::wire::is_valid_channel_name(channel)) {
        eprintln!("error: --demo-feed {channel:?} is not a channel name (1-128 characters of A-Z a-z 0-9 _ . : / -)");
        return std::process::ExitCode::from(2);
    }
    let static_dir = flags.static_dir.unwrap_or_else(default_static_dir);
    if !static_dir.is_dir() {
        eprintln!("error: --static-dir {} is not a directory", static_dir.display());
        return std::process::ExitCode::from(2);
    }
    let mut config = Config {
        static_dir,
        allowed_origins: flags.allow_origins,
        allow_loopback_origins: flags.allow_loopback_origins,
        heartbeat_ms: flags.heartbeat_ms,
        max_message_bytes: flags.max_message_bytes as usize,
        resume_window: Duration::from_millis(flags.resume_window_ms),
        max_sessions: flags.max_sessions as usize,
        allow_kick: flags.allow_kick,
        trusted_proxies: realtime_server::client_ip::TrustedProxies(flags.trusted_proxies),
        ..Config::default()
    };
    if !flags.client_publish.is_empty() {
        config.client_publish = flags.client_publish;
    }
    config.channels.history.max_messages = flags.channel_history_messages;
    config.channels.history.max_bytes = flags.channel_history_bytes;
    config.channels.history.max_age = Duration::from_millis(flags.channel_history_age_ms);
    for applied in [flags.edge.apply(&mut config), flags.limits.apply(&mut config), flags.admin.apply(&mut config)] {
        if let Err(error) = applied {
            eprintln!("error: {error}");
            return std::process::ExitCode::from(2);
        }
    }
    // After the admin token (the publish key must differ from it); then the startup rule.
    let env = |name: &str| std::env::var_os(name);
    let auth_rule = flags.auth.apply(&mut config, &env).and_then(|()| realtime_server::auth::startup_rule(flags.listen, &config));
    match auth_rule {
        Ok(Some(notice)) => eprintln!("{notice}"),
        Ok(None) => {}
        Err(error) => {
            eprintln!("error: {error}");
            return std::process::ExitCode::from(2);
        }
    }
    if config.allow_loopback_origins {
        tracing::warn!("--allow-loopback-origins is on: any 127.0.0.1/localhost page may connect (test only)");
    }
    if config.allow_kick {
        tracing::warn!("--allow-kick is on: POST /realtime/kick can break any session's connection (test and demo only)");
    }
    let identity = match (&flags.tls_cert, &flags.tls_key) {
        (Some(cert), Some(key)) => Some(Identity::from_pem_files(cert, key)),
        _ if flags.tls_self_signed => Some(Identity::self_signed()),
        _ => None,
    };
    let tls = match identity.map(|identity| identity.and_then(|identity| Ok((identity.server_config()?, identity)))) {
        None => None,
        Some(Ok(tls)) => Some(tls),
        Some(Err(error)) => {
            eprintln!("error: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match bind(flags.listen) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {}: {error}", flags.listen);
            return std::process::ExitCode::from(1);
        }
    };
    let address = match listener.local_addr() {
        Ok(address) => address,
        Err(error) => {
            eprintln!("error: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    let state = AppState::new(config);
    if let Err(error) = realtime_server::admin::spawn_listener(state.clone()).await {
        eprintln!("error: cannot listen on --admin-listen: {error}");
        return std::process::ExitCode::from(1);
    }
    if let Err(error) = realtime_server::auth::publish_key::spawn_listener(state.clone()).await {
        eprintln!("error: cannot listen on --publish-listen: {error}");
        return std::process::ExitCode::from(1);
    }
    if let Some(channel) = flags.demo_feed {
        realtime_server::demo_feed::spawn(&state, channel, realtime_server::demo_feed::PERIOD);
    }
    let shutdown = shutdown_signal();
    let acceptor = match tls {
        None => {
            println!("listening on http://{address}");
            None
        }
        Some((server_config, identity)) => {
            println!("spki sha256 {}", identity.spki_sha256);
            println!("listening on https://{address}");
            Some(realtime_server::tls::acceptor(server_config))
        }
    };
    let _ = std::io::stdout().flush();
    // Serves until a signal; then every transport gets its going-away close
    // (`state.begin_shutdown()`) and the connections finish their responses.
    let drain = Duration::from_secs(5);
    realtime_server::edge::serve(listener, acceptor, app(state.clone()), state.clone(), shutdown, drain).await;
    // Upgraded WebSockets are not tracked by the HTTP server: wait for them to send their close.
    state.drain(Duration::from_secs(5)).await;
    std::process::ExitCode::SUCCESS
}

/// Registers the signal handlers at once, before the address is printed (a supervisor may
/// signal as soon as it reads it, and an unregistered SIGTERM kills the process unclean), and
/// returns the future that waits for SIGINT or SIGTERM.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (mut terminate, mut interrupt) = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let terminate = async {
                match terminate.as_mut() {
                    Some(signal) => drop(signal.recv().await),
                    None => std::future::pending::<()>().await,
                }
            };
            let interrupt = async {
                match interrupt.as_mut() {
                    Some(signal) => drop(signal.recv().await),
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = terminate => {}
                _ = interrupt => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Binds with a listen backlog of 4,096: std's default of 128 overflows when a restarted server
/// meets a reconnect storm (each dropped SYN costs a client a 1 s retransmit). SO_REUSEADDR lets
/// a restarted server rebind while old connections sit in TIME_WAIT.
fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(4096)
}
