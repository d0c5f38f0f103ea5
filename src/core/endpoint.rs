//! The server endpoint: parsing the user's URL and deriving each transport's request URL.
//!
//! The user gives one `http(s)://host/base?query` URL. Every transport request keeps the user's
//! query string (it usually carries the room or an auth token) and adds the protocol's own
//! `rt_*` parameters. WebSocket uses `ws(s)://host/base`, SSE `…/base/sse`, long polling
//! `…/base/poll`, and upstream POSTs `…/base/send`.

use crate::prelude::*;
use crate::core::wire;

/// The three transports, in the default order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// A WebSocket.
    WebSocket,
    /// Server-Sent Events down, fetch POSTs up.
    Sse,
    /// fetch long polling down, fetch POSTs up.
    LongPolling,
}

impl TransportKind {
    /// The name used in the JS API.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::Sse => "sse",
            TransportKind::LongPolling => "long-polling",
        }
    }

    /// Parses a JS API name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "websocket" => Some(TransportKind::WebSocket),
            "sse" => Some(TransportKind::Sse),
            "long-polling" => Some(TransportKind::LongPolling),
            _ => None,
        }
    }

    /// All transports, best first.
    pub const ALL: [TransportKind; 3] = [TransportKind::WebSocket, TransportKind::Sse, TransportKind::LongPolling];
}

/// A parsed `http(s)` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    secure: bool,
    /// `host[:port]/path` without scheme, query or fragment; no trailing slash.
    authority_and_path: String,
    /// The user's query string without the `?`, possibly empty.
    query: String,
}

/// Why a URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointError {
    /// Not `http://` or `https://`.
    NotHttp,
    /// No host after the scheme.
    NoHost,
    /// The user's query already uses a reserved `rt_` parameter.
    ReservedParameter,
}

impl EndpointError {
    /// A lowercase, human message.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointError::NotHttp => "url must start with http:// or https://",
            EndpointError::NoHost => "url has no host",
            EndpointError::ReservedParameter => "url query must not use parameters starting with rt_",
        }
    }
}

/// The parameters a connection request carries in its URL: nothing secret (PROTOCOL.md §9.1);
/// the session and the credential travel in the request's frames.
#[derive(Debug, Clone, Copy)]
pub struct ConnectParams {
    /// The client's connection number.
    pub conn: u32,
    /// A probe: the server answers with a hello and holds the connection, but creates no
    /// session (the client only wants to know whether the rung works).
    pub probe: bool,
}

impl Endpoint {
    /// Parses and checks the user's URL.
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        // What the URL parser strips (C0 controls and space), and the Unicode spaces a paste
        // brings along, matched by hand: `str::trim` ships the Unicode tables.
        let url = url.trim_matches(|c: char| c <= ' ' || matches!(c, '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{feff}'));
        let (secure, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
            (false, rest)
        } else {
            return Err(EndpointError::NotHttp);
        };
        let (rest, _fragment) = split_at_byte(rest, b'#');
        let (location, query) = split_at_byte(rest, b'?');
        if location.is_empty() || location.starts_with('/') {
            return Err(EndpointError::NoHost);
        }
        if query.as_bytes().split(|&byte| byte == b'&').any(|pair| pair.starts_with(b"rt_")) {
            return Err(EndpointError::ReservedParameter);
        }
        Ok(Endpoint {
            secure,
            authority_and_path: location.trim_end_matches('/').to_owned(),
            query: query.to_owned(),
        })
    }

    /// The URL that opens a connection of `kind`.
    pub fn connect_url(&self, kind: TransportKind, params: ConnectParams) -> String {
        let (scheme, suffix) = match (kind, self.secure) {
            (TransportKind::WebSocket, false) => ("ws://", ""),
            (TransportKind::WebSocket, true) => ("wss://", ""),
            (TransportKind::Sse, secure) => (http_scheme(secure), "/sse"),
            (TransportKind::LongPolling, secure) => (http_scheme(secure), "/poll"),
        };
        let mut url = self.request_url(scheme, suffix, params.conn);
        if params.probe {
            push_text_param(&mut url, "rt_probe", "1");
        }
        url
    }

    /// The URL of the long polls after the first, of connection `conn` (POSTs; the session
    /// travels in the body).
    pub fn poll_url(&self, conn: u32) -> String {
        self.request_url(http_scheme(self.secure), "/poll", conn)
    }

    /// The URL of upstream POSTs (SSE and long polling).
    pub fn send_url(&self, conn: u32) -> String {
        self.request_url(http_scheme(self.secure), "/send", conn)
    }

    /// The URL of the POST that binds an SSE stream to its session (PROTOCOL.md §9.3).
    pub fn bind_url(&self, conn: u32) -> String {
        self.request_url(http_scheme(self.secure), "/bind", conn)
    }

    fn request_url(&self, scheme: &str, suffix: &str, conn: u32) -> String {
        let mut url = self.base(scheme, suffix);
        push_param(&mut url, "rt_v", wire::PROTOCOL_V3.into());
        push_param(&mut url, "rt_conn", conn.into());
        url
    }

    fn base(&self, scheme: &str, suffix: &str) -> String {
        let mut url = String::with_capacity(scheme.len() + self.authority_and_path.len() + self.query.len() + 96);
        url.push_str(scheme);
        url.push_str(&self.authority_and_path);
        url.push_str(suffix);
        url.push('?');
        if !self.query.is_empty() {
            url.push_str(&self.query);
            url.push('&');
        }
        url
    }
}

fn http_scheme(secure: bool) -> &'static str {
    if secure {
        "https://"
    } else {
        "http://"
    }
}

/// `text` before and after the first `byte` (an ASCII one), or all of it and "". By bytes, not
/// `split_once`: str searching ships slicing panics (and the formatter they keep).
pub fn split_at_byte(text: &str, byte: u8) -> (&str, &str) {
    match text.bytes().position(|candidate| candidate == byte) {
        // An ASCII byte is a character boundary on both sides: `get` always succeeds.
        Some(index) => (text.get(..index).unwrap_or(text), text.get(index + 1..).unwrap_or("")),
        None => (text, ""),
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

fn push_text_param(url: &mut String, name: &str, value: &str) {
    if !url.ends_with('?') && !url.ends_with('&') {
        url.push('&');
    }
    url.push_str(name);
    url.push('=');
    // Only numbers and fixed words: no escaping needed.
    url.push_str(value);
}

fn push_param(url: &mut String, name: &str, value: u64) {
    let mut digits = Vec::with_capacity(20);
    wire::push_decimal(&mut digits, value);
    // push_decimal only writes ASCII digits.
    push_text_param(url, name, core::str::from_utf8(&digits).unwrap_or("0"));
}

#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests {
    use super::*;

    #[test]
    fn surrounding_whitespace_is_trimmed_as_str_trim_would() {
        let plain = Endpoint::parse("https://h.example/rt").unwrap();
        for padded in ["\u{a0}https://h.example/rt\u{3000}", " \t\nhttps://h.example/rt\u{2028}\u{feff}", "\u{2003}https://h.example/rt\u{85}"] {
            let endpoint = Endpoint::parse(padded).unwrap();
            assert_eq!((endpoint.secure, endpoint.authority_and_path.as_str()), (plain.secure, plain.authority_and_path.as_str()), "{padded:?}");
        }
        // Whatever str::trim strips, this strips too.
        for c in (0..=0x10ffff_u32).filter_map(char::from_u32).filter(|c| c.is_whitespace()) {
            let padded = format!("{c}https://h.example/rt{c}");
            assert_eq!(Endpoint::parse(&padded).unwrap().authority_and_path, "h.example/rt", "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn urls_keep_the_user_query_on_every_transport_and_carry_no_secret() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8080/realtime?room=lobby#x").unwrap();
        assert_eq!(
            endpoint.connect_url(TransportKind::WebSocket, ConnectParams { conn: 3, probe: false }),
            "ws://127.0.0.1:8080/realtime?room=lobby&rt_v=3&rt_conn=3"
        );
        assert_eq!(
            endpoint.connect_url(TransportKind::Sse, ConnectParams { conn: 4, probe: false }),
            "http://127.0.0.1:8080/realtime/sse?room=lobby&rt_v=3&rt_conn=4"
        );
        assert_eq!(endpoint.poll_url(5), "http://127.0.0.1:8080/realtime/poll?room=lobby&rt_v=3&rt_conn=5");
        assert_eq!(endpoint.send_url(5), "http://127.0.0.1:8080/realtime/send?room=lobby&rt_v=3&rt_conn=5");
        assert_eq!(endpoint.bind_url(6), "http://127.0.0.1:8080/realtime/bind?room=lobby&rt_v=3&rt_conn=6");
    }

    #[test]
    fn secure_and_queryless_urls() {
        let endpoint = Endpoint::parse("HTTPS://example.com/rt/").unwrap();
        assert_eq!(
            endpoint.connect_url(TransportKind::WebSocket, ConnectParams { conn: 1, probe: true }),
            "wss://example.com/rt?rt_v=3&rt_conn=1&rt_probe=1"
        );
        assert_eq!(
            endpoint.connect_url(TransportKind::LongPolling, ConnectParams { conn: 1, probe: true }),
            "https://example.com/rt/poll?rt_v=3&rt_conn=1&rt_probe=1"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        assert_eq!(Endpoint::parse("ws://x/realtime"), Err(EndpointError::NotHttp));
        assert_eq!(Endpoint::parse("ftp://x"), Err(EndpointError::NotHttp));
        assert_eq!(Endpoint::parse("realtime"), Err(EndpointError::NotHttp));
        assert_eq!(Endpoint::parse("http://"), Err(EndpointError::NoHost));
        assert_eq!(Endpoint::parse("http:///path"), Err(EndpointError::NoHost));
        assert_eq!(Endpoint::parse("http://x/r?rt_sid=1"), Err(EndpointError::ReservedParameter));
    }

    #[test]
    fn transport_names_round_trip() {
        for kind in TransportKind::ALL {
            assert_eq!(TransportKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(TransportKind::from_name("ws"), None);
    }
}
