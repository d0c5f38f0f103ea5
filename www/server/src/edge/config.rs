//! The edge's settings and their command-line flags: defaults, what each limit protects, and the
//! checks of `apply`.

use std::time::Duration;

use crate::Config;

/// Edge limits (see [`EdgeFlags`] for what each protects and its default).
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// File descriptors kept free below `RLIMIT_NOFILE` (listener, static files, logs, runtime).
    pub fd_reserve: usize,
    pub tls_handshake_timeout: Duration,
    pub max_handshakes: usize,
    pub max_handshakes_per_ip: usize,
    /// Host names (lowercase, no port) accepted besides the loopback names (see [`crate::cors`]).
    pub allowed_hosts: Vec<String>,
    /// This server's public origins (`https://app.example`), same-origin on every endpoint.
    pub public_origins: Vec<String>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(15),
            max_connections: 20_000,
            max_connections_per_ip: 256,
            fd_reserve: 64,
            tls_handshake_timeout: Duration::from_secs(10),
            max_handshakes: 256,
            max_handshakes_per_ip: 16,
            allowed_hosts: Vec::new(),
            public_origins: Vec::new(),
        }
    }
}

/// Command-line flags of the edge limits.
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeFlags {
    /// Longest time for an HTTP/1.1 request head to arrive whole, in ms (default 10,000).
    /// Protects against slowloris: a client dribbling header lines to hold a connection.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub header_timeout_ms: u64,
    /// A connection with no request in flight (a silent new socket, a keep-alive between
    /// requests) is closed after this many ms (default 10,000). Streams, held polls and
    /// WebSockets are never idle. Protects descriptors and memory from idle sockets.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub idle_timeout_ms: u64,
    /// A socket write that makes no progress for this many ms fails its connection (default
    /// 15,000). Protects memory from clients that stop reading.
    #[arg(long, default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub write_timeout_ms: u64,
    /// Most open connections in total (default 20,000), further lowered to the file-descriptor
    /// limit minus a reserve of 64; at the cap the oldest idle connection makes room.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_connections: u64,
    /// Most open connections from one client IP (default 256; a trusted proxy is exempt).
    /// Protects every other client from one address holding all connections.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_connections_per_ip: u64,
    /// Longest a TLS handshake may take, in ms (default 10,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub tls_handshake_timeout_ms: u64,
    /// Most TLS handshakes in progress from one IP (default 16; 256 in total). Protects other
    /// clients' handshakes from a flood of silent sockets.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_handshakes_per_ip: u64,
    /// A Host name (no port) accepted besides the loopback names (repeatable). On a loopback
    /// listener any other Host gets 403 (DNS rebinding); elsewhere, once one is given, only these
    /// hosts (and those of --public-origin) are served. Default: none.
    #[arg(long = "allowed-host", value_name = "HOST")]
    pub allowed_hosts: Vec<String>,
    /// This server's public origin as browsers see it, e.g. https://app.example behind a reverse
    /// proxy (repeatable): same-origin on every endpoint, and its host is an allowed host.
    #[arg(long = "public-origin", value_name = "ORIGIN")]
    pub public_origins: Vec<String>,
}

impl EdgeFlags {
    pub fn apply(&self, config: &mut Config) -> Result<(), String> {
        let edge = &mut config.edge;
        edge.header_timeout = Duration::from_millis(self.header_timeout_ms);
        edge.idle_timeout = Duration::from_millis(self.idle_timeout_ms);
        edge.write_timeout = Duration::from_millis(self.write_timeout_ms);
        edge.max_connections = usize::try_from(self.max_connections).unwrap_or(usize::MAX);
        edge.max_connections_per_ip = usize::try_from(self.max_connections_per_ip).unwrap_or(usize::MAX);
        edge.tls_handshake_timeout = Duration::from_millis(self.tls_handshake_timeout_ms);
        edge.max_handshakes_per_ip = usize::try_from(self.max_handshakes_per_ip).unwrap_or(usize::MAX);
        for host in &self.allowed_hosts {
            let host = host.trim().to_ascii_lowercase();
            if host.is_empty() || host.contains(['/', ' ']) {
                return Err(format!("--allowed-host {host:?} must be a host name without scheme or path"));
            }
            edge.allowed_hosts.push(host);
        }
        for origin in &self.public_origins {
            let origin = origin.trim().to_ascii_lowercase();
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && origin.split_once("://").is_some_and(|(_, authority)| !authority.is_empty() && !authority.contains('/'));
            if !valid {
                return Err(format!("--public-origin {origin:?} must look like https://host[:port], without a path"));
            }
            edge.public_origins.push(origin);
        }
        Ok(())
    }
}
