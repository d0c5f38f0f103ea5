//! Loopback clients with a chosen source address (the attacker on 127.0.0.1, the legitimate
//! client on 127.0.0.2, so per-IP limits can tell them apart): one-shot HTTP/1.1 requests
//! (`Connection: close`, read to the end, chunked bodies decoded), an incremental reader for
//! streams (SSE) and WebSocket connects. Every wait has a deadline.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use realtime_client::core::wire::{self, Frame, Hello};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// Largest response read by [`request`] (the admin and poll answers are far smaller).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

pub fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what}: timed out"))
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// A TCP connection from `source` (port chosen by the kernel) to `target`, Nagle off.
pub async fn connect(source: IpAddr, target: SocketAddr) -> io::Result<TcpStream> {
    let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A whole HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The header block as text (shown in error messages).
    pub head: String,
    pub body: Vec<u8>,
}


/// The bytes of one HTTP/1.1 request (`Connection: close` unless `extra` says otherwise).
pub fn request_bytes(method: &str, target: SocketAddr, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    // The target's address as Host, unless the caller brings its own (the rebinding attack).
    if !extra.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        out.push_str(&format!("Host: {target}\r\n"));
    }
    if !extra.iter().any(|(name, _)| name.eq_ignore_ascii_case("connection")) {
        out.push_str("Connection: close\r\n");
    }
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request on a fresh connection from `source`, the response read to its end, within `limit`.
pub async fn request(
    source: IpAddr,
    target: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    limit: Duration,
) -> io::Result<Response> {
    timeout(limit, async {
        let mut stream = connect(source, target).await?;
        stream.write_all(&request_bytes(method, target, path, extra, body)).await?;
        let mut bytes = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..read]);
            if bytes.len() > MAX_RESPONSE_BYTES {
                return Err(invalid("response too large"));
            }
            // Some answers end without the server closing (keep-alive through a proxy): stop
            // once the declared body is complete.
            if let Some(response) = complete(&bytes)? {
                return Ok(response);
            }
        }
        parse(&bytes)
    })
    .await
    .map_err(|_| timed_out(&format!("{method} {path}")))?
}

/// The response if `bytes` already hold all of it (a Content-Length body or a final chunk).
fn complete(bytes: &[u8]) -> io::Result<Option<Response>> {
    let Some(head_end) = find(bytes, b"\r\n\r\n") else { return Ok(None) };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    if let Some(length) = head.lines().find_map(|line| line.strip_prefix("content-length:")) {
        let length: usize = length.trim().parse().map_err(|_| invalid("bad content-length"))?;
        if bytes.len() >= head_end + 4 + length {
            return parse(&bytes[..head_end + 4 + length]).map(Some);
        }
        return Ok(None);
    }
    if head.contains("transfer-encoding: chunked") && bytes.ends_with(b"0\r\n\r\n") {
        return parse(bytes).map(Some);
    }
    // No body at all (204, 304).
    if head.starts_with("http/1.1 204") || head.starts_with("http/1.1 304") {
        return parse(bytes).map(Some);
    }
    Ok(None)
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn parse(bytes: &[u8]) -> io::Result<Response> {
    let head_end = find(bytes, b"\r\n\r\n").ok_or_else(|| invalid("no response head"))?;
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("bad status line in {head:?}")))?;
    let raw = &bytes[head_end + 4..];
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(raw)? } else { raw.to_vec() };
    Ok(Response { status, head, body })
}

fn dechunk(mut raw: &[u8]) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(raw, b"\r\n") else { return Ok(body) };
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid("bad chunk size"))?;
        raw = &raw[line_end + 2..];
        if size == 0 || raw.len() < size {
            body.extend_from_slice(&raw[..size.min(raw.len())]);
            return Ok(body);
        }
        body.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or(&[]);
    }
}

/// A response read as it comes (an SSE stream): the bytes so far, searchable.
pub struct Stream {
    pub stream: TcpStream,
    pub seen: Vec<u8>,
    /// How far [`Stream::wait_for`] has consumed.
    consumed: usize,
}

impl Stream {
    /// Sends the request and returns without reading.
    pub async fn open(source: IpAddr, target: SocketAddr, path: &str, extra: &[(&str, &str)]) -> io::Result<Stream> {
        let mut stream = connect(source, target).await?;
        stream.write_all(&request_bytes("GET", target, path, extra, b"")).await?;
        Ok(Stream { stream, seen: Vec::new(), consumed: 0 })
    }

    /// Reads until `needle` appears after what earlier calls consumed; the time it appeared.
    pub async fn wait_for(&mut self, needle: &[u8], deadline: Instant) -> io::Result<Instant> {
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            if let Some(position) = find(&self.seen[self.consumed..], needle) {
                self.consumed += position + needle.len();
                return Ok(Instant::now());
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .map_err(|_| timed_out(&format!("waiting for {:?}", String::from_utf8_lossy(needle))))??;
            if read == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended"));
            }
            self.seen.extend_from_slice(&chunk[..read]);
        }
    }
}

pub type Ws = WebSocketStream<TcpStream>;

/// A WebSocket to `/realtime?{query}` from `source`.
pub async fn websocket(source: IpAddr, target: SocketAddr, query: &str, limit: Duration) -> io::Result<Ws> {
    timeout(limit, async {
        let stream = connect(source, target).await?;
        let url = format!("ws://{target}/realtime?{query}");
        let config = WebSocketConfig::default();
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .map_err(|error| io::Error::other(format!("websocket: {error}")))?;
        Ok(ws)
    })
    .await
    .map_err(|_| timed_out("websocket connect"))?
}

/// Decodes a batch of frames (poll bodies, WebSocket messages).
pub fn frames(bytes: &[u8]) -> io::Result<Vec<Frame>> {
    wire::decode_all(bytes, 64 << 20).map_err(|error| invalid(format!("frames: {error:?}")))
}

/// The hello at the start of `frames`.
pub fn hello_of(frames: &[Frame]) -> io::Result<Hello> {
    match frames.first() {
        Some(Frame::Hello(hello)) => Ok(hello.clone()),
        other => Err(invalid(format!("expected a hello first, got {other:?}"))),
    }
}

/// A parsed `/metrics` answer: the value of every `realtime_limit_trips_total{kind="K"}`.
pub fn limit_trips(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("realtime_limit_trips_total{kind=\"")?;
            let (kind, rest) = rest.split_once("\"}")?;
            Some((kind.to_owned(), rest.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert_eq!((plain.status, plain.body.as_slice()), (200, &b"hi"[..]));
        assert!(plain.head.contains("Content-Length: 2"));
        let chunked = parse(b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3\r\nyou\r\n0\r\n\r\n").unwrap();
        assert_eq!(chunked.body, b"hiyou");
        assert!(complete(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi").unwrap().is_none());
        assert_eq!(limit_trips("realtime_limit_trips_total{kind=\"sessions_per_ip\"} 3\n# x\n"), [("sessions_per_ip".to_owned(), 3.0)]);
    }
}
