//! Query parameters of realtime requests (`room`, `rt_v`, `rt_conn`, `rt_sid`, `rt_key`,
//! `rt_last`). The user's own parameters pass through and are ignored, except `room`.

use realtime_client::core::wire::{is_valid_token, PROTOCOL_VERSION};

use crate::session::{ConnectRequest, ResumeRequest};

/// The room used when the query names none.
pub const DEFAULT_ROOM: &str = "lobby";

/// Parsed realtime query parameters.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// `rt_v`; absent means 1.
    pub version: Option<String>,
    pub room: Option<String>,
    pub conn: Option<String>,
    pub session_id: Option<String>,
    pub key: Option<String>,
    pub last: Option<String>,
    pub event: Option<String>,
    /// `rt_probe`: `1` asks for a probe (hello, no session, held open).
    pub probe: Option<String>,
    /// `rt_since`: the room channel's position to recover from.
    pub since: Option<String>,
    /// `channel`: the channel of a backend publish (PROTOCOL §8.9).
    pub channel: Option<String>,
}

/// Why a query was refused (HTTP 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    /// `rt_v` names a version this server does not speak.
    UnsupportedVersion,
    Bad(&'static str),
}

impl ParamError {
    pub fn as_str(&self) -> &'static str {
        match self {
            ParamError::UnsupportedVersion => "unsupported protocol version",
            ParamError::Bad(message) => message,
        }
    }
}

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        let mut params = Params::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match &*key {
                "rt_v" => &mut params.version,
                "room" => &mut params.room,
                "rt_conn" => &mut params.conn,
                "rt_sid" => &mut params.session_id,
                "rt_key" => &mut params.key,
                "rt_last" => &mut params.last,
                "event" => &mut params.event,
                "rt_probe" => &mut params.probe,
                "rt_since" => &mut params.since,
                "channel" => &mut params.channel,
                _ => continue,
            };
            // The first occurrence wins, so a user parameter cannot be overridden by appending.
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        params
    }

    /// Checks `rt_v`.
    pub fn check_version(&self) -> Result<(), ParamError> {
        match self.version.as_deref() {
            // Absent: a hand-made request (curl); every client of ours names its version, and a
            // v1 client (which always sent rt_v=1) is refused (PROTOCOL.md §8.8).
            None => Ok(()),
            Some(version) if version == PROTOCOL_VERSION.to_string() => Ok(()),
            Some(_) => Err(ParamError::UnsupportedVersion),
        }
    }

    /// Whether this is a probe (`rt_probe=1`); `rt_probe=0` or absent is not; anything else is
    /// refused.
    pub fn is_probe(&self) -> Result<bool, ParamError> {
        match self.probe.as_deref() {
            None | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(_) => Err(ParamError::Bad("bad rt_probe: expected 1")),
        }
    }

    /// The room, validated: 1-64 characters of `[A-Za-z0-9_.:-]`.
    /// None without `room=`: a v2 session without a room has no room channel (PROTOCOL §8.11
    /// item 13). (`DEFAULT_ROOM` is what a v1 session would have had.)
    pub fn room(&self) -> Result<Option<String>, ParamError> {
        let Some(room) = self.room.as_deref() else { return Ok(None) };
        if is_valid_room(room) {
            Ok(Some(room.to_owned()))
        } else {
            Err(ParamError::Bad("bad room name: 1-64 characters of A-Z a-z 0-9 _ . : -"))
        }
    }

    pub fn conn(&self) -> Result<u32, ParamError> {
        match self.conn.as_deref() {
            None => Ok(0),
            Some(conn) => conn.parse().map_err(|_| ParamError::Bad("bad rt_conn: expected a u32")),
        }
    }

    /// The resume request, if `rt_sid` is present (then `rt_key` and `rt_last` are required).
    pub fn resume(&self) -> Result<Option<ResumeRequest>, ParamError> {
        let Some(session_id) = self.session_id.clone() else { return Ok(None) };
        let key = self.key.clone().ok_or(ParamError::Bad("rt_sid without rt_key"))?;
        if !is_valid_token(&session_id) || !is_valid_token(&key) {
            return Err(ParamError::Bad("bad rt_sid or rt_key"));
        }
        let last = match self.last.as_deref() {
            None => 0,
            Some(last) => last.parse().map_err(|_| ParamError::Bad("bad rt_last: expected a u64"))?,
        };
        Ok(Some(ResumeRequest { session_id, key, last }))
    }

    /// Everything a connect needs, validated.
    pub fn connect_request(&self) -> Result<ConnectRequest, ParamError> {
        self.check_version()?;
        Ok(ConnectRequest { room: self.room()?, conn: self.conn()?, resume: self.resume()?, since: self.since()? })
    }

    /// `rt_since=<ep>.<o>`, the client's position in its room channel (PROTOCOL §8.5).
    pub fn since(&self) -> Result<Option<realtime_client::core::wire::Position>, ParamError> {
        let Some(text) = self.since.as_deref() else { return Ok(None) };
        match crate::channel::parse_since(text) {
            Some(position) => Ok(Some(realtime_client::core::wire::Position { epoch: position.epoch, offset: position.offset })),
            None => Err(ParamError::Bad("bad rt_since: expected <16 hex digits>.<offset>")),
        }
    }
}

pub fn is_valid_room(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= 64
        && room.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"_.:-".contains(&byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let params = Params::parse(Some("room=a%3Ab&rt_v=2&rt_conn=7&rt_sid=abc&rt_key=def&rt_last=3&x=y"));
        let request = params.connect_request().unwrap();
        assert_eq!(request.room.as_deref(), Some("a:b"));
        assert_eq!(request.conn, 7);
        let resume = request.resume.unwrap();
        assert_eq!((resume.session_id.as_str(), resume.key.as_str(), resume.last), ("abc", "def", 3));
        assert_eq!(Params::parse(None).room().unwrap(), None);
        assert!(Params::parse(Some("room=a/b")).room().is_err());
        assert!(Params::parse(Some("room=")).room().is_err());
        assert_eq!(Params::parse(Some("rt_v=2")).check_version(), Ok(()));
        assert_eq!(Params::parse(Some("rt_v=1")).check_version(), Err(ParamError::UnsupportedVersion));
        assert_eq!(Params::parse(None).check_version(), Ok(()));
        assert!(Params::parse(Some("rt_conn=-1")).conn().is_err());
        assert!(Params::parse(Some("rt_sid=abc")).resume().is_err());
        assert_eq!(Params::parse(Some("rt_probe=1")).is_probe(), Ok(true));
        assert_eq!(Params::parse(None).is_probe(), Ok(false));
        assert!(Params::parse(Some("rt_probe=yes")).is_probe().is_err());
    }
}
