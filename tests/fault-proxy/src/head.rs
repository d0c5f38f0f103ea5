//! HTTP/1.x request and response heads: bounded reading, parsing, the rewrite sent upstream,
//! small canned responses, and the loopback-origin rule shared by both ports.
//!
//! Invariant: no head longer than `MAX_HEAD_BYTES` is ever buffered.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest request (or upstream response) head accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;

/// A parsed request head. Header names keep their spelling; lookups ignore case.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug)]
pub enum HeadError {
    /// The peer closed before sending anything: not an error worth an answer.
    Empty,
    TooLarge,
    Malformed,
    Io(io::Error),
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Path without the query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    /// `Upgrade: websocket` (a token list, case-insensitive).
    pub fn is_websocket_upgrade(&self) -> bool {
        self.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("upgrade")
                && std::str::from_utf8(v)
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("websocket")))
        })
    }

    /// The Origin header when it is a loopback origin (see [`is_loopback_origin`]).
    pub fn loopback_origin(&self) -> Option<&str> {
        self.header("origin").filter(|o| is_loopback_origin(o))
    }

    /// The head sent upstream: the same request line and headers, minus Connection,
    /// Keep-Alive and Proxy-Connection, plus `Connection: close` (or `Connection: Upgrade`
    /// for a WebSocket upgrade). Closing after one exchange keeps one browser request per
    /// TCP connection, so the class decided from the first head holds for the whole connection.
    pub fn rewrite_for_upstream(&self, websocket: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(if self.minor_version == 0 { b" HTTP/1.0\r\n" } else { b" HTTP/1.1\r\n" });
        for (name, value) in &self.headers {
            let hop_by_hop = ["connection", "keep-alive", "proxy-connection"]
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h));
            if hop_by_hop {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(if websocket { b"Connection: Upgrade\r\n" } else { b"Connection: close\r\n" });
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Reads one request head. Returns it and the bytes read past it (the start of a body, or
/// the first WebSocket frames), which belong to the same stream and must be relayed.
pub async fn read_request_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<(RequestHead, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = r.read(&mut chunk).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(if buf.is_empty() { HeadError::Empty } else { HeadError::Malformed });
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                if len > MAX_HEAD_BYTES {
                    return Err(HeadError::TooLarge);
                }
                let head = RequestHead {
                    method: req.method.unwrap_or_default().to_owned(),
                    target: req.path.unwrap_or_default().to_owned(),
                    minor_version: req.version.unwrap_or(1),
                    headers: req.headers.iter().map(|h| (h.name.to_owned(), h.value.to_vec())).collect(),
                };
                let rest = buf[len..].to_vec();
                return Ok((head, rest));
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Malformed),
        }
    }
}

/// Length of the response head at the start of `buf` (through the blank line), if complete.
pub fn response_head_len(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Status code of a response head (`HTTP/1.1 101 ...`).
pub fn response_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    line.split(' ').nth(1)?.parse().ok()
}

/// `http://127.0.0.1[:port]` or `http://localhost[:port]`, exactly (no path, no userinfo).
pub fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("http://") else {
        return false;
    };
    let (host, port) = match rest.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let host_ok = host == "127.0.0.1" || host.eq_ignore_ascii_case("localhost");
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// A complete `Connection: close` response. `origin` (a loopback origin) is echoed in
/// `Access-Control-Allow-Origin` so a browser test can read the status of a refusal.
pub fn simple_response(status: u16, reason: &str, content_type: &str, body: &str, origin: Option<&str>, extra: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(origin) = origin {
        out.push_str("Access-Control-Allow-Origin: ");
        out.push_str(origin);
        out.push_str("\r\nVary: Origin\r\n");
    }
    out.push_str(extra);
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins() {
        assert!(is_loopback_origin("http://127.0.0.1:8000"));
        assert!(is_loopback_origin("http://localhost:1"));
        assert!(is_loopback_origin("http://localhost"));
        assert!(!is_loopback_origin("https://127.0.0.1:8000"));
        assert!(!is_loopback_origin("http://127.0.0.1.evil.example"));
        assert!(!is_loopback_origin("http://127.0.0.1:80/x"));
        assert!(!is_loopback_origin("http://127.0.0.1:"));
        assert!(!is_loopback_origin("null"));
    }

    #[tokio::test]
    async fn rewrite_drops_hop_by_hop_and_forces_close() {
        let raw = b"GET /realtime/poll?a=1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nrest";
        let (head, rest) = read_request_head(&mut &raw[..]).await.unwrap();
        assert_eq!(rest, b"rest");
        assert_eq!(head.path(), "/realtime/poll");
        let out = String::from_utf8(head.rewrite_for_upstream(false)).unwrap();
        assert_eq!(out, "GET /realtime/poll?a=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let raw = b"GET /realtime HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n";
        let (head, _) = read_request_head(&mut &raw[..]).await.unwrap();
        assert!(head.is_websocket_upgrade());
        let out = String::from_utf8(head.rewrite_for_upstream(true)).unwrap();
        assert_eq!(out, "GET /realtime HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n");
    }

    #[tokio::test]
    async fn oversized_and_malformed_heads() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES + 10));
        big.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(read_request_head(&mut &big[..]).await, Err(HeadError::TooLarge)));
        assert!(matches!(read_request_head(&mut &b"\x00\x01 nope\r\n\r\n"[..]).await, Err(HeadError::Malformed)));
        assert!(matches!(read_request_head(&mut &b""[..]).await, Err(HeadError::Empty)));
        assert!(matches!(read_request_head(&mut &b"GET / HT"[..]).await, Err(HeadError::Malformed)));
    }
}
