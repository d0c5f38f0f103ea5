//! Connection classes and the fault modes set over the control port.
//!
//! Invariant: a class only ever holds a mode that is valid for it (`Mode::valid_for`);
//! `Modes::apply_query` validates every pair before changing anything.

use serde_json::{json, Value};

/// What a connection is, decided once from its first request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    WebSocket,
    Sse,
    Poll,
    Http,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::WebSocket, Class::Sse, Class::Poll, Class::Http];

    pub fn name(self) -> &'static str {
        match self {
            Class::WebSocket => "websocket",
            Class::Sse => "sse",
            Class::Poll => "poll",
            Class::Http => "http",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    fn from_name(name: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Pass,
    /// 503 and close, upstream never contacted.
    Refuse,
    /// WebSocket only: read the request, never answer, keep the socket open.
    Hang,
    /// WebSocket only: relay the upgrade and its 101, then pass nothing either way.
    Silent,
    /// SSE only: hold the whole response until upstream closes, then write it at once.
    Buffer,
    /// Plain HTTP (upstream POSTs) only: 403 "origin not allowed", as the server answers a page
    /// it judges foreign (a proxy that rewrites Host makes a same-origin page look so).
    Forbid,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pass => "pass",
            Mode::Refuse => "refuse",
            Mode::Hang => "hang",
            Mode::Silent => "silent",
            Mode::Buffer => "buffer",
            Mode::Forbid => "forbid",
        }
    }

    fn valid_for(class: Class) -> &'static [Mode] {
        match class {
            Class::WebSocket => &[Mode::Pass, Mode::Refuse, Mode::Hang, Mode::Silent],
            Class::Sse => &[Mode::Pass, Mode::Refuse, Mode::Buffer],
            Class::Poll => &[Mode::Pass, Mode::Refuse],
            Class::Http => &[Mode::Pass, Mode::Refuse, Mode::Forbid],
        }
    }
}

/// The current fault settings. New connections copy them when they are classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Modes {
    per_class: [Mode; 4],
    /// Close every connection created while this is set after this many downstream bytes.
    pub cut_after_bytes: Option<u64>,
}

impl Modes {
    pub fn get(&self, class: Class) -> Mode {
        self.per_class[class.index()]
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({ "cut_after_bytes": self.cut_after_bytes });
        for class in Class::ALL {
            v[class.name()] = json!(self.get(class).name());
        }
        v
    }

    /// Applies `websocket=refuse&cut_after_bytes=500...`: only the keys given change, and
    /// nothing changes when any pair is invalid (the error says which).
    pub fn apply_query(&mut self, query: &str) -> Result<(), String> {
        let mut next = *self;
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if seen.iter().any(|k| *k == key) {
                return Err(format!("key {key} given twice"));
            }
            seen.push(key.to_string());
            if key == "cut_after_bytes" {
                next.cut_after_bytes = match &*value {
                    "none" => None,
                    n => Some(n.parse().map_err(|_| format!("cut_after_bytes must be a byte count or none, not {n:?}"))?),
                };
                continue;
            }
            let Some(class) = Class::from_name(&key) else {
                return Err(format!("unknown key {key:?} (websocket, sse, poll, http, cut_after_bytes)"));
            };
            let allowed = Mode::valid_for(class);
            let Some(mode) = allowed.iter().copied().find(|m| m.name() == value) else {
                let names: Vec<&str> = allowed.iter().map(|m| m.name()).collect();
                return Err(format!("{key} cannot be {value:?} (one of {})", names.join(", ")));
            };
            next.per_class[class.index()] = mode;
        }
        *self = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_query_sets_only_given_keys_and_is_all_or_nothing() {
        let mut m = Modes::default();
        m.apply_query("websocket=silent&cut_after_bytes=500").unwrap();
        assert_eq!(m.get(Class::WebSocket), Mode::Silent);
        assert_eq!(m.get(Class::Sse), Mode::Pass);
        assert_eq!(m.cut_after_bytes, Some(500));
        m.apply_query("sse=buffer").unwrap();
        assert_eq!(m.get(Class::WebSocket), Mode::Silent);
        assert_eq!(m.get(Class::Sse), Mode::Buffer);
        let before = m;
        assert!(m.apply_query("poll=refuse&sse=hang").unwrap_err().contains("sse cannot be"));
        assert!(m.apply_query("poll=forbid").unwrap_err().contains("poll cannot be"));
        assert!(m.apply_query("bogus=1").unwrap_err().contains("unknown key"));
        assert!(m.apply_query("cut_after_bytes=-1").is_err());
        assert!(m.apply_query("http=refuse&http=pass").unwrap_err().contains("twice"));
        assert_eq!(m, before);
        m.apply_query("http=forbid").unwrap();
        assert_eq!(m.get(Class::Http), Mode::Forbid);
        m.apply_query("http=pass").unwrap();
        m.apply_query("cut_after_bytes=none").unwrap();
        assert_eq!(m.cut_after_bytes, None);
        assert_eq!(
            m.to_json(),
            json!({"websocket": "silent", "sse": "buffer", "poll": "pass", "http": "pass", "cut_after_bytes": null})
        );
    }
}
