//! Property test: random sequences of inputs, hostile server frames (channel frames too) and numbers included, with
//! simulated time. Whatever happens: no panic, no deadline at or before `now` after
//! `handle_timeout`, and every `send()` settled exactly once by the time the client is closed.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::core::wire::{ChannelMessage, Position};

#[derive(Debug, Clone)]
enum Step {
    /// Time passes; the due timers fire.
    Advance(u64),
    /// The app sends a message of this many bytes.
    Send(u16),
    /// A frame (or raw bytes) arrives on the n-th connection ever opened (retired ones too).
    Frame(u8, HostileFrame),
    Garbage(u8, Vec<u8>),
    Opened(u8),
    Posted(u8),
    Closed(u8),
    Refused(u8),
    Wake(u8),
    Suspend,
    /// Closes and connects again (a new life for the client).
    Restart,
    /// The app subscribes to, unsubscribes from or publishes to one of a few channels.
    Subscribe(u8),
    Unsubscribe(u8),
    Publish(u8),
}

const CHANNELS: [&str; 3] = ["a", "b", "lobby"];

#[derive(Debug, Clone)]
enum HostileFrame {
    Hello { version: u32, heartbeat_ms: u64, max_body_bytes: u64, ack: u64, resumed: bool, same_id: bool },
    Message { seq: u64, len: u16 },
    Ack(u64),
    Ping(u64),
    Pong(u64),
    Close { code: u16, retry: Retry },
    Channel { seq: u64, channel: u8, kind: u8, a: u64, b: u64, retry: Retry },
}

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..4, 0u64..70_000, Just(u64::MAX), Just(u64::MAX - 1), Just(1u64 << 31), Just(1u64 << 32), any::<u64>()]
}

fn hostile_frame() -> impl Strategy<Value = HostileFrame> {
    prop_oneof![
        (prop_oneof![Just(1u32), any::<u32>()], number(), number(), number(), any::<bool>(), any::<bool>()).prop_map(
            |(version, heartbeat_ms, max_body_bytes, ack, resumed, same_id)| HostileFrame::Hello {
                version,
                heartbeat_ms,
                max_body_bytes,
                ack,
                resumed,
                same_id
            }
        ),
        (number(), 0u16..2_000).prop_map(|(seq, len)| HostileFrame::Message { seq, len }),
        number().prop_map(HostileFrame::Ack),
        number().prop_map(HostileFrame::Ping),
        number().prop_map(HostileFrame::Pong),
        (
            prop_oneof![Just(1000u16), Just(1001), Just(4000), Just(4001), Just(4002), Just(4003), Just(4004), any::<u16>()],
            prop_oneof![Just(Retry::Default), Just(Retry::Never), number().prop_map(Retry::AfterMs)]
        )
            .prop_map(|(code, retry)| HostileFrame::Close { code, retry }),
        (number(), any::<u8>(), 0u8..5, number(), number(), prop_oneof![Just(Retry::Default), Just(Retry::Never), number().prop_map(Retry::AfterMs)])
            .prop_map(|(seq, channel, kind, a, b, retry)| HostileFrame::Channel { seq, channel, kind, a, b, retry }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop_oneof![0u64..50, 0u64..2_000, 0u64..70_000].prop_map(Step::Advance),
        3 => (0u16..1_500).prop_map(Step::Send),
        8 => (any::<u8>(), hostile_frame()).prop_map(|(conn, frame)| Step::Frame(conn, frame)),
        1 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(conn, bytes)| Step::Garbage(conn, bytes)),
        1 => any::<u8>().prop_map(Step::Opened),
        2 => any::<u8>().prop_map(Step::Posted),
        2 => any::<u8>().prop_map(Step::Closed),
        1 => any::<u8>().prop_map(Step::Refused),
        1 => (0u8..5).prop_map(Step::Wake),
        1 => Just(Step::Suspend),
        1 => Just(Step::Restart),
        1 => any::<u8>().prop_map(Step::Subscribe),
        1 => any::<u8>().prop_map(Step::Unsubscribe),
        1 => any::<u8>().prop_map(Step::Publish),
    ]
}

fn encode(frame: &HostileFrame, now: Millis) -> Frame {
    match frame.clone() {
        HostileFrame::Hello { version, heartbeat_ms, max_body_bytes, ack, resumed, same_id } => Frame::Hello(Hello {
            version,
            session_id: if same_id { "s1".into() } else { "s2".into() },
            secret: "secret".into(),
            heartbeat_ms,
            max_body_bytes,
            ack,
            resumed,
        }),
        HostileFrame::Message { seq, len } => {
            Frame::Message(Message { seq, event: None, payload: Payload::Text("m".repeat(usize::from(len))) })
        }
        HostileFrame::Ack(seq) => Frame::Ack { seq },
        HostileFrame::Ping(time) => Frame::Ping { time },
        HostileFrame::Pong(time) => Frame::Pong { time: time.min(now.saturating_add(time % 3)) },
        HostileFrame::Close { code, retry } => Frame::Close(Close { code, reason: "hostile".into(), retry }),
        HostileFrame::Channel { seq, channel, kind, a, b, retry } => {
            let channel = String::from(CHANNELS[usize::from(channel) % CHANNELS.len()]);
            let position = Position { epoch: a % 3, offset: b };
            let close = Close { code: [1000, 4010, 4011, 4012, 4013, 4014][(a % 6) as usize], reason: "x".into(), retry };
            match kind {
                0 => Frame::ChannelMessage(ChannelMessage {
                    channel,
                    position: Some(position),
                    message: Message { seq, event: None, payload: Payload::Text("m".into()) },
                }),
                1 => Frame::Subscribed { seq, channel, position, recovered: b % 2 == 0, reply_to: (a % 4 != 0).then_some(a % 8) },
                2 => Frame::Unsubscribed { seq, channel, reply_to: (b % 3 != 0).then_some(b % 8), close },
                3 => Frame::Gap { seq, channel, epoch: a % 3, from: a, to: b },
                _ => Frame::Nack { seq, channel, reply_to: b % 8, close },
            }
        }
    }
}

/// Tracks every send until it settles.
#[derive(Default)]
struct Ledger {
    sent: Vec<u64>,
    failed: HashSet<u64>,
    delivered_up_to: u64,
}

impl Ledger {
    fn record(&mut self, events: &[Event]) -> Result<(), TestCaseError> {
        for event in events {
            match event {
                Event::SendFailed { id, .. } => {
                    prop_assert!(self.failed.insert(*id), "SendFailed twice for {}", id);
                    prop_assert!(*id > self.delivered_up_to, "{} failed after it was delivered", id);
                }
                Event::Delivered { up_to_id } => {
                    prop_assert!(*up_to_id > self.delivered_up_to, "Delivered went backwards");
                    prop_assert!(!self.failed.contains(up_to_id), "{} delivered after it failed", up_to_id);
                    self.delivered_up_to = *up_to_id;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn run(steps: &[Step], seed: u64) -> Result<(), TestCaseError> {
    let config = SessionConfig { jitter_seed: seed, room: Some("lobby".into()), ..SessionConfig::default() };
    let mut session = Session::new(Endpoint::parse(URL).unwrap(), config);
    let mut now: Millis = 1_000;
    let mut conns: Vec<ConnId> = Vec::new();
    let mut ledger = Ledger::default();
    session.connect(now);
    for step in steps {
        match step {
            Step::Advance(ms) => {
                now += ms;
                session.handle_timeout(now);
                if let Some(next) = session.poll_timeout() {
                    prop_assert!(next > now, "deadline {} not past now {} after handle_timeout", next, now);
                }
            }
            Step::Send(len) => {
                if let Ok(id) = session.send(now, None, Payload::Text("s".repeat(usize::from(*len)))) {
                    ledger.sent.push(id);
                }
            }
            Step::Frame(..) | Step::Garbage(..) if conns.is_empty() => {}
            Step::Frame(index, frame) => {
                let conn = conns[usize::from(*index) % conns.len()];
                let mut bytes = Vec::new();
                wire::encode(&encode(frame, now), Carrier::Binary, &mut bytes);
                session.handle_input(now, Input::Data { conn, bytes });
            }
            Step::Garbage(index, bytes) => {
                let conn = conns[usize::from(*index) % conns.len()];
                session.handle_input(now, Input::Data { conn, bytes: bytes.clone() });
            }
            Step::Opened(index) | Step::Posted(index) | Step::Closed(index) | Step::Refused(index) if !conns.is_empty() => {
                let conn = conns[usize::from(*index) % conns.len()];
                let input = match step {
                    Step::Opened(_) => Input::Opened { conn },
                    Step::Posted(_) => Input::Posted { conn },
                    Step::Closed(_) => Input::Closed { conn, reason: "cut".into() },
                    _ => Input::Refused { conn, reason: "HTTP 403".into() },
                };
                session.handle_input(now, input);
            }
            Step::Opened(_) | Step::Posted(_) | Step::Closed(_) | Step::Refused(_) => {}
            Step::Wake(kind) => {
                let wake = [Wake::Offline, Wake::Online, Wake::Visible, Wake::PageShow, Wake::ClockJump][usize::from(*kind)];
                session.handle_wake(now, wake);
            }
            Step::Suspend => session.suspend(now),
            Step::Restart => {
                session.close(now);
                session.connect(now);
            }
            Step::Subscribe(index) => {
                let _ = session.subscribe(now, CHANNELS[usize::from(*index) % CHANNELS.len()], None);
            }
            Step::Unsubscribe(index) => {
                session.unsubscribe(now, CHANNELS[usize::from(*index) % CHANNELS.len()]);
            }
            Step::Publish(index) => {
                let channel = CHANNELS[usize::from(*index) % CHANNELS.len()];
                if let Ok(id) = session.publish(now, (channel != "lobby").then_some(channel), None, Payload::Text("p".into())) {
                    ledger.sent.push(id);
                }
            }
        }
        // The end of the task: the flush the sends asked for, as the driver's microtask.
        if session.poll_flush() {
            session.handle_flush(now);
        }
        while let Some(effect) = session.poll_effect() {
            if let Effect::Open { conn, .. } = effect {
                conns.push(conn);
            }
        }
        let events: Vec<Event> = std::iter::from_fn(|| session.poll_event()).collect();
        ledger.record(&events)?;
    }
    session.close(now);
    let events: Vec<Event> = std::iter::from_fn(|| session.poll_event()).collect();
    ledger.record(&events)?;
    prop_assert_eq!(session.state(), State::Closed);
    prop_assert_eq!(session.poll_timeout(), None);
    prop_assert_eq!(session.outbox_len(), 0);
    for id in &ledger.sent {
        prop_assert!(
            ledger.failed.contains(id) || *id <= ledger.delivered_up_to,
            "send {} never settled (delivered up to {})",
            id,
            ledger.delivered_up_to
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn hostile_inputs_never_panic_spin_or_leave_a_send_unsettled(
        steps in proptest::collection::vec(step(), 0..120),
        seed in any::<u64>(),
    ) {
        run(&steps, seed)?;
    }
}
