//! The connection table: every transport connection the session holds, with its role.
//!
//! Connections play roles. While connecting, *candidates* race down the ladder; the first to
//! deliver the server's hello becomes *active*. On a lower rung a *probe* re-tests a better one;
//! once it works, a *migrating* connection resumes the session there and the old active one
//! becomes *draining* (read, never written, until the server closes it or a deadline passes).
//!
//! Invariants: at most one connection is active; ids are never reused within a session, so an
//! input naming an id the table no longer holds is a late event from an abandoned transport.

use crate::prelude::*;
use crate::core::endpoint::{ConnectParams, TransportKind};
use crate::core::session::limits::after;
use crate::core::session::{ConnId, Effect, Session};
use crate::core::wire::Resume;
use crate::core::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Racing to become active while connecting.
    Candidate,
    /// The connection the session reads and writes.
    Active,
    /// A throwaway connection testing a better rung.
    Probe,
    /// Resuming the session on a proven better rung.
    Migrating,
    /// Replaced by a migration: read until the server closes it, never written.
    Draining,
}

/// What a new connection asks of the server in its connect URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attach {
    /// Attach to the session we hold (if any), resuming after the last delivered message.
    Resume,
    /// Only say hello: the server creates no session and attaches nothing (a probe).
    HelloOnly,
}

pub(super) struct Connection {
    pub(super) id: ConnId,
    pub(super) kind: TransportKind,
    pub(super) role: Role,
    /// What its connect URL asked of the server.
    pub(super) attach: Attach,
    /// The `rt_last` its connect URL presented, if it asked to resume our session: the server
    /// treats it as an ack of everything up to there once the resume succeeds.
    pub(super) presented_last: Option<u64>,
    /// The session its opening frames name (kept for an SSE bind, PROTOCOL.md §9.3).
    pub(super) resume: Option<crate::core::wire::Resume>,
    /// An SSE connection's `pending` arrived and its bind went out.
    pub(super) bound: bool,
    /// Whether the server's hello arrived on it.
    pub(super) established: bool,
    /// When it was opened: the time to its transport-level open is at least one round trip.
    pub(super) opened_at: Millis,
    /// Connect deadline before the hello; drain deadline while draining.
    pub(super) deadline: Option<Millis>,
    pub(super) last_received: Millis,
    pub(super) last_sent: Millis,
    pub(super) post_in_flight: bool,
    /// When the POST in flight counts as hung.
    pub(super) post_deadline: Option<Millis>,
}

/// The connections of one session, in the order they were opened.
#[derive(Default)]
pub(super) struct Conns {
    next_id: u32,
    list: Vec<Connection>,
}

impl Conns {
    pub(super) fn get(&self, id: ConnId) -> Option<&Connection> {
        self.list.iter().find(|conn| conn.id == id)
    }

    pub(super) fn get_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        self.list.iter_mut().find(|conn| conn.id == id)
    }

    pub(super) fn active(&self) -> Option<&Connection> {
        self.list.iter().find(|conn| conn.role == Role::Active)
    }

    pub(super) fn active_mut(&mut self) -> Option<&mut Connection> {
        self.list.iter_mut().find(|conn| conn.role == Role::Active)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.list.iter()
    }

    pub(super) fn any(&self, role: Role) -> bool {
        self.list.iter().any(|conn| conn.role == role)
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn next_id(&mut self) -> ConnId {
        self.next_id = self.next_id.wrapping_add(1);
        ConnId(self.next_id)
    }

    fn remove(&mut self, id: ConnId) -> bool {
        let before = self.list.len();
        self.list.retain(|conn| conn.id != id);
        self.list.len() != before
    }

    fn take_all(&mut self) -> Vec<Connection> {
        core::mem::take(&mut self.list)
    }
}

impl Session {
    pub(super) fn conn(&self, id: ConnId) -> Option<&Connection> {
        self.conns.get(id)
    }

    pub(super) fn conn_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        self.conns.get_mut(id)
    }

    pub(super) fn active(&self) -> Option<&Connection> {
        self.conns.active()
    }

    /// Opens a connection of `kind` in `role` and arms its connect deadline.
    pub(super) fn open_conn(&mut self, now: Millis, kind: TransportKind, role: Role, attach: Attach) -> ConnId {
        let id = self.conns.next_id();
        let resume = match attach {
            Attach::Resume => self.ids.as_ref().map(|ids| Resume {
                session_id: ids.id.clone(),
                secret: ids.secret.clone(),
                last: self.inbox.last_delivered,
            }),
            Attach::HelloOnly => None,
        };
        let presented_last = resume.as_ref().map(|resume| resume.last);
        let probe = attach == Attach::HelloOnly;
        let mut url = self.endpoint.connect_url(kind, ConnectParams { conn: id.0, probe });
        self.push_room_since(&mut url);
        // A probe carries no frame; an event stream's session goes in its bind.
        let body = if probe || kind == TransportKind::Sse { Vec::new() } else { self.opening(resume.clone(), None) };
        self.effects.push(Effect::Open { conn: id, kind, url, body });
        self.conns.list.push(Connection {
            id,
            kind,
            role,
            attach,
            presented_last,
            resume,
            bound: false,
            established: false,
            opened_at: now,
            deadline: Some(after(now, self.config.connect_timeout_ms)),
            last_received: now,
            last_sent: now,
            post_in_flight: false,
            post_deadline: None,
        });
        id
    }

    /// Closes and forgets a connection.
    pub(super) fn drop_conn(&mut self, id: ConnId) {
        if self.conns.remove(id) {
            self.effects.push(Effect::Close { conn: id });
        }
    }

    /// Closes every connection; whatever was batched for the active one is void.
    pub(super) fn drop_all_conns(&mut self) {
        for conn in self.conns.take_all() {
            self.effects.push(Effect::Close { conn: conn.id });
        }
        self.batch.clear();
    }
}
