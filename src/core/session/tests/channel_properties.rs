//! Property test of channels against a simulated v2 server (one session, WebSocket): random
//! subscribes, unsubscribes, publishes (the client's and a backend's), cuts, lost uploads and
//! expired sessions (resets), with simulated time. Per channel the app gets every message once
//! and in order, a skip only as a `Gap`, nothing after it unsubscribed; once the network is
//! left alone, every channel it holds catches up with the server.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::core::wire::{ChannelMessage, Position, Retry};

const ROOM: &str = "lobby";
const NAMES: [&str; 3] = ["a", "b", ROOM];
/// Messages a channel's history keeps: a reset after more is recovered with a gap.
const HISTORY: u64 = 4;

#[derive(Debug, Clone)]
enum Step {
    Subscribe(u8, bool),
    Unsubscribe(u8),
    Publish(u8),
    Backend(u8),
    Deliver(u8),
    Upload,
    Cut,
    Expire,
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (any::<u8>(), any::<bool>()).prop_map(|(index, since)| Step::Subscribe(index, since)),
        1 => any::<u8>().prop_map(Step::Unsubscribe),
        3 => any::<u8>().prop_map(Step::Publish),
        3 => any::<u8>().prop_map(Step::Backend),
        4 => (1u8..6).prop_map(Step::Deliver),
        3 => Just(Step::Upload),
        1 => Just(Step::Cut),
        1 => Just(Step::Expire),
        2 => (0u64..1_500).prop_map(Step::Advance),
    ]
}

const EPOCH: u64 = 0x0c1d_2e3f_4051_6273;

#[derive(Default)]
struct Server {
    /// Channel tops (one epoch each).
    tops: BTreeMap<String, u64>,
    sessions: u64,
    /// The live session: its ordered frames (seq = index + 1), client seqs received, members.
    out: Vec<Frame>,
    received: u64,
    members: BTreeSet<String>,
    alive: bool,
    /// The attached connection and the highest seq sent on it.
    conn: Option<(ConnId, u64)>,
    ack_owed: bool,
}

impl Server {
    fn publish(&mut self, channel: &str, body: String) {
        let top = self.tops.entry(channel.into()).or_insert(0);
        *top += 1;
        let offset = *top;
        if self.alive && self.members.contains(channel) {
            let seq = self.out.len() as u64 + 1;
            self.out.push(Frame::ChannelMessage(ChannelMessage {
                channel: channel.into(),
                position: Some(Position { epoch: EPOCH, offset }),
                message: Message { seq, event: None, payload: Payload::Text(body) },
            }));
        }
    }

    fn push(&mut self, frame: impl FnOnce(u64) -> Frame) {
        let seq = self.out.len() as u64 + 1;
        self.out.push(frame(seq));
    }

    /// Joins `channel`, answering as §8.4 says.
    fn join(&mut self, channel: &str, since: Option<Position>, reply_to: Option<u64>) {
        self.members.insert(channel.into());
        let top = *self.tops.entry(channel.into()).or_insert(0);
        let first = top.saturating_sub(HISTORY) + 1;
        let position = Position { epoch: EPOCH, offset: top };
        match since {
            Some(since) if since.epoch == EPOCH && since.offset <= top && since.offset + 1 >= first => {
                self.push(|seq| Frame::Subscribed { seq, channel: channel.into(), position, recovered: true, reply_to });
                for offset in since.offset + 1..=top {
                    self.push(|seq| {
                        Frame::ChannelMessage(ChannelMessage {
                            channel: channel.into(),
                            position: Some(Position { epoch: EPOCH, offset }),
                            message: Message { seq, event: None, payload: Payload::Text(format!("{channel}{offset}")) },
                        })
                    });
                }
            }
            Some(since) => {
                self.push(|seq| Frame::Subscribed { seq, channel: channel.into(), position, recovered: false, reply_to });
                let from = if since.epoch == EPOCH && since.offset <= top { since.offset + 1 } else { 0 };
                self.push(|seq| Frame::Gap { seq, channel: channel.into(), epoch: EPOCH, from, to: top });
            }
            None => self.push(|seq| Frame::Subscribed { seq, channel: channel.into(), position, recovered: false, reply_to }),
        }
    }

    /// A connect request: hello (delivered at once), then the replay waits for `Deliver`.
    /// `opening`: the WebSocket's first message (PROTOCOL.md §9.3).
    fn connect(&mut self, conn: ConnId, url: &str, opening: &[u8]) -> Frame {
        let params: BTreeMap<&str, &str> =
            url.split_once('?').map_or("", |(_, query)| query).split('&').filter_map(|pair| pair.split_once('=')).collect();
        assert!(!params.contains_key("rt_sid") && !params.contains_key("rt_key"), "no secret in a URL: {url}");
        let resume = match wire::decode_all(opening, 1 << 20).unwrap().first() {
            Some(Frame::Session(session)) => session.resume.clone(),
            other => panic!("the first message must be a session frame: {other:?}"),
        };
        let last = resume.as_ref().map(|resume| resume.last);
        let resumed = self.alive
            && resume.as_ref().map(|resume| resume.session_id.as_str()) == Some(self.sid().as_str())
            && last.is_some_and(|last| last <= self.out.len() as u64);
        if resumed {
            self.conn = Some((conn, last.unwrap_or(0)));
        } else {
            self.sessions += 1;
            self.alive = true;
            self.out.clear();
            self.received = 0;
            self.members.clear();
            self.conn = Some((conn, 0));
            let since = params.get("rt_since").map(|since| {
                let (epoch, offset) = since.split_once('.').unwrap();
                Position { epoch: u64::from_str_radix(epoch, 16).unwrap(), offset: offset.parse().unwrap() }
            });
            self.join(ROOM, since, None);
        }
        self.ack_owed = false;
        Frame::Hello(Hello {
            version: 3,
            session_id: self.sid(),
            secret: "k".into(),
            heartbeat_ms: 10_000,
            max_body_bytes: 1 << 20,
            ack: if resumed { self.received } else { 0 },
            resumed,
        })
    }

    fn sid(&self) -> String {
        format!("s{}", self.sessions)
    }

    /// Frames from the client.
    fn upload(&mut self, data: &[u8]) -> Result<(), TestCaseError> {
        for frame in wire::decode_all(data, 1 << 20).unwrap() {
            let Some(seq) = frame.ordered_seq() else { continue };
            if seq <= self.received {
                self.ack_owed = true;
                continue;
            }
            prop_assert_eq!(seq, self.received + 1, "client seq gap");
            self.received = seq;
            self.ack_owed = true;
            match frame {
                Frame::Subscribe { channel, since, .. } => {
                    prop_assert!(!self.members.contains(&channel), "subscribe to a held channel {}", channel);
                    self.join(&channel, since, Some(seq));
                }
                Frame::Unsubscribe { channel, .. } => {
                    self.members.remove(&channel);
                    let close = Close { code: 1000, reason: String::new(), retry: Retry::Default };
                    self.push(|s| Frame::Unsubscribed { seq: s, channel, reply_to: Some(seq), close });
                }
                Frame::Message(message) => self.publish(ROOM, payload_text(&message.payload)),
                Frame::ChannelMessage(message) => self.publish(&message.channel, payload_text(&message.message.payload)),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        Ok(())
    }

    /// Up to `count` ordered frames not yet sent on the connection, then an ack if owed.
    fn deliver(&mut self, count: usize) -> Option<(ConnId, Vec<Frame>)> {
        let (conn, sent) = self.conn?;
        let start = usize::try_from(sent).unwrap();
        let mut frames: Vec<Frame> = self.out.iter().skip(start).take(count).cloned().collect();
        self.conn = Some((conn, sent + frames.len() as u64));
        if std::mem::take(&mut self.ack_owed) {
            frames.push(Frame::Ack { seq: self.received });
        }
        Some((conn, frames))
    }
}

fn payload_text(payload: &Payload) -> String {
    match payload {
        Payload::Text(text) => text.clone(),
        _ => String::new(),
    }
}

/// What the app saw, per channel.
#[derive(Default)]
struct Checker {
    /// Channels the app holds: the last offset delivered once subscribed (None: no answer yet).
    held: BTreeMap<String, Option<u64>>,
    /// A subscription that took effect past the app's position without a replay: the `gap`
    /// that must come next (else messages were lost silently).
    owed: BTreeMap<String, (u64, u64)>,
}

impl Checker {
    fn record(&mut self, events: &[Event]) -> Result<(), TestCaseError> {
        for event in events {
            match event {
                Event::Subscribed { channel, recovered, position } => {
                    let Some(last) = self.held.get_mut(channel) else {
                        return Err(TestCaseError::fail(format!("subscribed to {channel} not held")));
                    };
                    prop_assert!(!self.owed.contains_key(channel), "{} lost messages silently", channel);
                    match *last {
                        Some(known) if !*recovered && position.offset > known => {
                            self.owed.insert(channel.clone(), (known + 1, position.offset));
                        }
                        _ => {}
                    }
                    if !*recovered || last.is_none() {
                        *last = Some(position.offset);
                    }
                }
                Event::ChannelMessage { channel, position, .. } => {
                    let Some(Some(last)) = self.held.get_mut(channel) else {
                        return Err(TestCaseError::fail(format!("message of {channel} not held or not subscribed")));
                    };
                    prop_assert!(!self.owed.contains_key(channel), "{} lost messages silently", channel);
                    prop_assert_eq!(position.offset, *last + 1, "{} out of order", channel);
                    *last = position.offset;
                }
                Event::Gap { channel, from, to, .. } => {
                    let Some(Some(last)) = self.held.get_mut(channel) else {
                        return Err(TestCaseError::fail(format!("gap of {channel} not held")));
                    };
                    // A skip in the stream, or a recovery's gap that ends at its `subscribed` top.
                    prop_assert!(*from == *last + 1 || *from == 0 || *to == *last, "gap {}..{} after {}", from, to, last);
                    if let Some((owed_from, owed_to)) = self.owed.remove(channel) {
                        prop_assert!(*from == owed_from || *from == 0, "gap {}..{} for {}..{}", from, to, owed_from, owed_to);
                        prop_assert_eq!(*to, owed_to);
                    }
                    *last = (*to).max(*last);
                }
                Event::Unsubscribed { channel, .. } => {
                    self.owed.remove(channel);
                    self.held.remove(channel);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

struct World {
    session: Session,
    server: Server,
    checker: Checker,
    now: Millis,
    uploads: Vec<Vec<u8>>,
}

impl World {
    /// The end of a task: flush, carry out effects (a connect is answered by the server's
    /// hello at once), check the events.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        loop {
            if self.session.poll_flush() {
                self.session.handle_flush(self.now);
            }
            let mut any = false;
            while let Some(effect) = self.session.poll_effect() {
                any = true;
                match effect {
                    Effect::Open { conn, url, body, .. } => {
                        let hello = self.server.connect(conn, &url, &body);
                        self.uploads.clear();
                        self.session.handle_input(self.now, Input::Opened { conn });
                        let bytes = wire::encode_to_vec(&hello, Carrier::Binary);
                        self.session.handle_input(self.now, Input::Data { conn, bytes });
                    }
                    Effect::Transmit { conn, data, .. } if self.server.conn.is_some_and(|(live, _)| live == conn) => {
                        self.uploads.push(data)
                    }
                    Effect::Close { conn } if self.server.conn.is_some_and(|(live, _)| live == conn) => self.server.conn = None,
                    _ => {}
                }
            }
            let events: Vec<Event> = std::iter::from_fn(|| self.session.poll_event()).collect();
            self.checker.record(&events)?;
            if !any {
                return Ok(());
            }
        }
    }

    fn upload(&mut self) -> Result<(), TestCaseError> {
        for data in std::mem::take(&mut self.uploads) {
            self.server.upload(&data)?;
        }
        Ok(())
    }

    fn deliver(&mut self, count: usize) {
        if let Some((conn, frames)) = self.server.deliver(count) {
            let mut bytes = Vec::new();
            for frame in &frames {
                wire::encode(frame, Carrier::Binary, &mut bytes);
            }
            if !bytes.is_empty() {
                self.session.handle_input(self.now, Input::Data { conn, bytes });
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.session.handle_timeout(self.now);
    }
}

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let url = "http://127.0.0.1:8080/realtime?room=lobby";
    let config = SessionConfig { transports: vec![TransportKind::WebSocket], room: Some(ROOM.into()), ..SessionConfig::default() };
    let mut w = World {
        session: Session::new(Endpoint::parse(url).unwrap(), config),
        server: Server::default(),
        checker: Checker::default(),
        now: 1_000,
        uploads: Vec::new(),
    };
    w.checker.held.insert(ROOM.into(), None);
    w.session.connect(w.now);
    w.settle()?;
    let mut published = 0u64;
    for step in steps {
        match step {
            Step::Subscribe(index, with_since) => {
                let name = NAMES[usize::from(*index) % NAMES.len()];
                let top = w.server.tops.get(name).copied().unwrap_or(0);
                let since = with_since.then_some(Position { epoch: EPOCH, offset: top.saturating_sub(2) });
                if w.session.subscribe(w.now, name, since) == Ok(true) {
                    prop_assert!(!w.checker.held.contains_key(name));
                    w.checker.held.insert(name.into(), since.map(|since| since.offset));
                }
            }
            Step::Unsubscribe(index) => {
                let name = NAMES[usize::from(*index) % NAMES.len()];
                let held = w.session.unsubscribe(w.now, name);
                prop_assert_eq!(held, w.checker.held.contains_key(name));
            }
            Step::Publish(index) => {
                published += 1;
                let name = NAMES[usize::from(*index) % NAMES.len()];
                let channel = (name != ROOM).then_some(name);
                w.session.publish(w.now, channel, None, Payload::Text(format!("p{published}"))).unwrap();
            }
            Step::Backend(index) => {
                published += 1;
                w.server.publish(NAMES[usize::from(*index) % NAMES.len()], format!("b{published}"));
            }
            Step::Deliver(count) => w.deliver(usize::from(*count)),
            Step::Upload => w.upload()?,
            Step::Cut => {
                w.uploads.clear();
                if let Some((conn, _)) = w.server.conn.take() {
                    w.session.handle_input(w.now, Input::Closed { conn, reason: "cut".into() });
                }
            }
            Step::Expire => {
                w.server.alive = false;
                w.uploads.clear();
                if let Some((conn, _)) = w.server.conn.take() {
                    w.session.handle_input(w.now, Input::Closed { conn, reason: "cut".into() });
                }
            }
            Step::Advance(ms) => w.advance(*ms),
        }
        w.settle()?;
    }
    // The network is left alone: everything held catches up with the server.
    for _ in 0..200 {
        w.advance(500);
        w.settle()?;
        w.upload()?;
        w.settle()?;
        w.deliver(usize::MAX);
        w.settle()?;
    }
    prop_assert!(w.checker.owed.is_empty(), "gaps never told: {:?}", w.checker.owed);
    for (channel, last) in &w.checker.held {
        let top = w.server.tops.get(channel).copied().unwrap_or(0);
        prop_assert_eq!(*last, Some(top), "{} did not catch up", channel);
        prop_assert!(w.server.members.contains(channel), "{} not a member on the server", channel);
    }
    for channel in &w.server.members {
        prop_assert!(w.checker.held.contains_key(channel), "server still has {} subscribed", channel);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn channels_deliver_once_in_order_and_nothing_after_unsubscribe(steps in proptest::collection::vec(step(), 0..80)) {
        run(&steps)?;
    }
}
