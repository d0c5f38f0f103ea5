//! The connection edge: accepting sockets and serving HTTP on them, with the limits that protect
//! the process (connections per IP and in total, file descriptors, timeouts).
//!
//! (Scaffolding: the edge limits land here.)

use crate::Config;

/// Edge limits (see [`EdgeFlags`]).
#[derive(Debug, Clone, Default)]
pub struct EdgeConfig {}

/// Command-line flags of the edge limits.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EdgeFlags {}

impl EdgeFlags {
    pub fn apply(&self, _config: &mut Config) -> Result<(), String> {
        Ok(())
    }
}

/// Plain TCP with Nagle off: frames are small and latency matters (Nagle also held a WebSocket
/// close back until the socket was already reset).
pub struct NoDelayListener(pub tokio::net::TcpListener);

impl axum::serve::Listener for NoDelayListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, address) = axum::serve::Listener::accept(&mut self.0).await;
        let _ = stream.set_nodelay(true);
        (stream, address)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}
