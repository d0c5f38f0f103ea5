//! Channels (PROTOCOL.md §8): subscribe and its answer, the drop rule, unsubscribe, nack,
//! resume and reset recovery, the room channel and a server's retry.

use super::*;
use crate::core::wire::{ChannelMessage, Position, Retry};

const EP: u64 = 0x9f86_d081_8884_7d65;

fn at(offset: u64) -> Position {
    Position { epoch: EP, offset }
}

fn chan_msg(seq: u64, channel: &str, position: Position, body: &str) -> Frame {
    Frame::ChannelMessage(ChannelMessage {
        channel: channel.into(),
        position: Some(position),
        message: Message { seq, event: None, payload: Payload::Text(body.into()) },
    })
}

fn subscribed(seq: u64, channel: &str, position: Position, recovered: bool, reply_to: Option<u64>) -> Frame {
    Frame::Subscribed { seq, channel: channel.into(), position, recovered, reply_to }
}

fn close(code: u16, retry: Retry, reason: &str) -> Close {
    Close { code, reason: reason.into(), retry }
}

/// The channel messages among `events`: (channel, offset, body).
fn delivered(events: &[Event]) -> Vec<(String, u64, String)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::ChannelMessage { channel, position, payload: Payload::Text(body), .. } => {
                Some((channel.clone(), position.offset, body.clone()))
            }
            _ => None,
        })
        .collect()
}

fn gaps(events: &[Event]) -> Vec<(u64, u64)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Gap { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

/// The ordered frames the client sent (acks and pings left out).
fn ordered(effects: &[Effect]) -> Vec<Frame> {
    transmitted(effects).into_iter().filter(|frame| frame.ordered_seq().is_some()).collect()
}

/// The connection drops; the next round opens a connection: (its id, its url).
fn cut(h: &mut Harness, conn: ConnId) -> (ConnId, String) {
    h.session.handle_input(h.now, Input::Closed { conn, reason: "cut".into() });
    h.events();
    for _ in 0..600 {
        h.run_until(h.now + 100);
        if let [.., (conn, _, url)] = opened(&h.effects()).as_slice() {
            return (*conn, url.clone());
        }
    }
    panic!("no reconnect")
}

/// Opens, subscribes to `prices` and has the server answer at offset 57.
fn subscribed_to_prices(h: &mut Harness) -> ConnId {
    let conn = h.open();
    h.effects();
    assert_eq!(h.session.subscribe(h.now, "prices", None), Ok(true));
    assert_eq!(ordered(&h.effects()), vec![Frame::Subscribe { seq: 1, channel: "prices".into(), since: None }]);
    h.data(conn, &[subscribed(1, "prices", at(57), false, Some(1))]);
    conn
}

#[test]
fn subscribe_answer_and_messages_with_the_drop_rule() {
    let mut h = Harness::new(ws_only());
    let conn = subscribed_to_prices(&mut h);
    assert_eq!(h.session.subscribe(h.now, "prices", None), Ok(false));
    assert_eq!(h.session.subscribe(h.now, "bad$", None), Err(SendError::BadChannel));
    assert!(h.session.is_subscribed("prices"));
    let events = h.events();
    assert!(events.contains(&Event::Subscribed { channel: "prices".into(), recovered: false, position: at(57) }));
    assert_eq!(h.session.position("prices"), Some(at(57)));

    // 58 delivered, a double dropped, a skip told once as a gap and then delivered.
    h.data(conn, &[chan_msg(2, "prices", at(58), "a"), chan_msg(3, "prices", at(58), "again"), chan_msg(4, "prices", at(61), "b")]);
    let events = h.events();
    assert_eq!(delivered(&events), vec![("prices".into(), 58, "a".into()), ("prices".into(), 61, "b".into())]);
    assert_eq!(gaps(&events), vec![(59, 60)]);
    assert_eq!(h.session.position("prices"), Some(at(61)));
    // A new epoch at offset 1 (offsets ran out) is no gap; elsewhere it is `from: 0`.
    let next = Position { epoch: 7, offset: 1 };
    h.data(conn, &[chan_msg(5, "prices", next, "c"), chan_msg(6, "prices", Position { epoch: 8, offset: 3 }, "d")]);
    let events = h.events();
    assert_eq!(delivered(&events).len(), 2);
    assert_eq!(gaps(&events), vec![(0, 2)]);

    // Publishing: to a channel, and to the room (there is none here).
    let id = h.session.publish(h.now, Some("prices"), None, Payload::Text("p".into())).unwrap();
    assert_eq!(h.session.publish(h.now, None, None, Payload::Text("p".into())), Err(SendError::NoRoom));
    assert_eq!(h.session.publish(h.now, Some(""), None, Payload::Text("p".into())), Err(SendError::BadChannel));
    assert_eq!(
        ordered(&h.effects()),
        vec![Frame::ChannelMessage(ChannelMessage {
            channel: "prices".into(),
            position: None,
            message: Message { seq: 2, event: None, payload: Payload::Text("p".into()) },
        })]
    );
    h.data(conn, &[Frame::Ack { seq: 2 }]);
    assert!(h.events().contains(&Event::Delivered { up_to_id: id }));
}

#[test]
fn unsubscribe_drops_messages_in_flight_and_before_a_new_answer() {
    let mut h = Harness::new(ws_only());
    let conn = subscribed_to_prices(&mut h);
    h.events();
    assert!(h.session.unsubscribe(h.now, "prices"));
    assert!(!h.session.unsubscribe(h.now, "prices"));
    assert_eq!(
        h.events(),
        vec![Event::Unsubscribed { channel: "prices".into(), code: ErrorCode::Unsubscribed, reason: "unsubscribed by the app".into() }]
    );
    assert_eq!(ordered(&h.effects()), vec![Frame::Unsubscribe { seq: 2, channel: "prices".into() }]);
    // In flight: dropped; the server's answer: nothing more.
    h.data(conn, &[chan_msg(2, "prices", at(58), "late")]);
    h.data(conn, &[Frame::Unsubscribed { seq: 3, channel: "prices".into(), reply_to: Some(2), close: close(1000, Retry::Default, "") }]);
    assert!(h.events().is_empty());
    assert!(!h.session.is_subscribed("prices"));

    // Subscribing again: what arrives before the new answer is the old subscription's.
    assert_eq!(h.session.subscribe(h.now, "prices", None), Ok(true));
    assert_eq!(ordered(&h.effects()), vec![Frame::Subscribe { seq: 3, channel: "prices".into(), since: None }]);
    h.data(conn, &[chan_msg(4, "prices", at(59), "old"), subscribed(5, "prices", at(60), false, Some(3)), chan_msg(6, "prices", at(61), "new")]);
    let events = h.events();
    assert_eq!(delivered(&events), vec![("prices".into(), 61, "new".into())]);
    assert_eq!(ErrorCode::Unsubscribed.as_str(), "unsubscribed");
}

#[test]
fn reset_resubscribes_with_the_position_before_renumbered_publishes() {
    let mut h = Harness::new(ws_only());
    let conn = subscribed_to_prices(&mut h);
    h.data(conn, &[chan_msg(2, "prices", at(58), "a"), chan_msg(3, "prices", at(59), "b"), chan_msg(4, "prices", at(60), "c")]);
    h.events();
    let (conn2, _) = cut(&mut h, conn);
    let queued = h.session.publish(h.now, Some("prices"), None, Payload::Text("q".into())).unwrap();
    h.data(conn2, &[hello("s2", 0, false)]);
    assert!(h.events().iter().any(|event| matches!(event, Event::Reset { .. })));
    let frames = ordered(&h.effects());
    assert_eq!(frames[0], Frame::Subscribe { seq: 1, channel: "prices".into(), since: Some(at(60)) });
    assert!(matches!(&frames[1], Frame::ChannelMessage(ChannelMessage { message: Message { seq: 2, .. }, .. })));
    assert_eq!(frames.len(), 2);

    // rec=1: the replay is delivered once (a replayed seq is dropped by the session).
    let replay = [subscribed(1, "prices", at(62), true, Some(1)), chan_msg(2, "prices", at(61), "d"), chan_msg(3, "prices", at(62), "e")];
    h.data(conn2, &replay);
    h.data(conn2, &replay);
    let events = h.events();
    assert!(events.contains(&Event::Subscribed { channel: "prices".into(), recovered: true, position: at(62) }));
    assert_eq!(delivered(&events), vec![("prices".into(), 61, "d".into()), ("prices".into(), 62, "e".into())]);
    assert!(gaps(&events).is_empty());
    h.data(conn2, &[Frame::Ack { seq: 2 }]);
    assert!(h.events().contains(&Event::Delivered { up_to_id: queued }));

    // Another reset the history does not cover: one gap, then the present.
    let (conn3, _) = cut(&mut h, conn2);
    h.data(conn3, &[hello("s3", 0, false)]);
    assert_eq!(ordered(&h.effects()), vec![Frame::Subscribe { seq: 1, channel: "prices".into(), since: Some(at(62)) }]);
    h.data(
        conn3,
        &[
            subscribed(1, "prices", at(250), false, Some(1)),
            Frame::Gap { seq: 2, channel: "prices".into(), epoch: EP, from: 63, to: 250 },
            chan_msg(3, "prices", at(251), "now"),
        ],
    );
    let events = h.events();
    assert_eq!(gaps(&events), vec![(63, 250)]);
    assert_eq!(delivered(&events), vec![("prices".into(), 251, "now".into())]);
}

#[test]
fn a_nack_fails_that_publish_at_once() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.effects();
    h.events();
    let refused = h.session.publish(h.now, Some("admin:audit"), None, Payload::Text("x".into())).unwrap();
    let fine = h.session.publish(h.now, Some("chat"), None, Payload::Text("y".into())).unwrap();
    assert_eq!(ordered(&h.effects()).len(), 2);
    h.data(
        conn,
        &[
            Frame::Nack { seq: 1, channel: "admin:audit".into(), reply_to: 1, close: close(4013, Retry::Default, "not allowed") },
            Frame::Ack { seq: 2 },
        ],
    );
    let events = h.events();
    assert_eq!(
        events,
        vec![
            Event::SendFailed { id: refused, code: ErrorCode::Forbidden, reason: "the server refused the publish" },
            Event::Delivered { up_to_id: fine },
        ]
    );
    assert_eq!(h.session.outbox_len(), 0);
}

#[test]
fn resume_resends_an_unacked_subscribe_exactly_once() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.effects();
    h.session.subscribe(h.now, "prices", Some(at(10))).unwrap();
    assert_eq!(ordered(&h.effects()).len(), 1);
    let (conn2, url) = cut(&mut h, conn);
    assert!(url.contains("session sid=s1"), "{url}");
    h.data(conn2, &[hello("s1", 0, true)]);
    assert_eq!(ordered(&h.effects()), vec![Frame::Subscribe { seq: 1, channel: "prices".into(), since: Some(at(10)) }]);
    h.data(conn2, &[Frame::Ack { seq: 1 }, subscribed(1, "prices", at(10), true, Some(1))]);
    assert!(ordered(&h.effects()).is_empty());
    assert!(h.events().contains(&Event::Subscribed { channel: "prices".into(), recovered: true, position: at(10) }));
    assert_eq!(h.session.outbox_len(), 0);
}

#[test]
fn the_room_channel_is_recovered_through_rt_since() {
    let mut h = Harness::new(SessionConfig { room: Some("lobby".into()), ..ws_only() });
    let conn = h.open();
    h.effects();
    h.data(conn, &[subscribed(1, "lobby", at(4), false, None), chan_msg(2, "lobby", at(5), "hi")]);
    let events = h.events();
    assert!(events.contains(&Event::Subscribed { channel: "lobby".into(), recovered: false, position: at(4) }));
    assert_eq!(delivered(&events), vec![("lobby".into(), 5, "hi".into())]);
    let id = h.session.publish(h.now, None, None, Payload::Text("me".into())).unwrap();
    assert_eq!(ordered(&h.effects()), vec![text(1, "me")]);
    h.data(conn, &[Frame::Ack { seq: 1 }]);
    assert!(h.events().contains(&Event::Delivered { up_to_id: id }));

    let (conn2, url) = cut(&mut h, conn);
    assert!(url.contains("&rt_since=9f86d08188847d65.5 "), "{url}");
    // A fresh session holds the room already: no subscribe for it.
    h.data(conn2, &[hello("s2", 0, false)]);
    assert!(ordered(&h.effects()).is_empty());
    h.data(conn2, &[subscribed(1, "lobby", at(6), true, None), chan_msg(2, "lobby", at(6), "missed")]);
    assert_eq!(delivered(&h.events()), vec![("lobby".into(), 6, "missed".into())]);

    // Unsubscribed by the app: after the next reset the first frame unsubscribes it.
    assert!(h.session.unsubscribe(h.now, "lobby"));
    h.effects();
    let (conn3, _) = cut(&mut h, conn2);
    h.data(conn3, &[hello("s3", 0, false)]);
    assert_eq!(ordered(&h.effects()), vec![Frame::Unsubscribe { seq: 1, channel: "lobby".into() }]);
    h.data(conn3, &[subscribed(1, "lobby", at(9), false, None), chan_msg(2, "lobby", at(10), "dropped")]);
    assert!(delivered(&h.events()).is_empty());
}

#[test]
fn a_server_retry_resubscribes_after_the_delay_and_a_refusal_ends_it() {
    let mut h = Harness::new(ws_only());
    let conn = subscribed_to_prices(&mut h);
    h.data(conn, &[chan_msg(2, "prices", at(58), "a")]);
    h.events();
    h.data(conn, &[Frame::Unsubscribed { seq: 3, channel: "prices".into(), reply_to: None, close: close(4014, Retry::AfterMs(1_000), "closing") }]);
    assert_eq!(
        h.events(),
        vec![Event::SubscriptionError { channel: "prices".into(), code: ErrorCode::ChannelClosed, message: "closing".into() }]
    );
    assert!(h.session.is_subscribed("prices"));
    h.run_until(h.now + 999);
    assert!(ordered(&h.effects()).is_empty());
    h.run_until(h.now + 1);
    assert_eq!(ordered(&h.effects()), vec![Frame::Subscribe { seq: 2, channel: "prices".into(), since: Some(at(58)) }]);
    // Refused for good: the subscription ends with the code.
    h.data(conn, &[Frame::Unsubscribed { seq: 4, channel: "prices".into(), reply_to: Some(2), close: close(4011, Retry::Never, "too many") }]);
    assert_eq!(
        h.events(),
        vec![Event::Unsubscribed { channel: "prices".into(), code: ErrorCode::TooManyChannels, reason: "too many".into() }]
    );
    assert!(!h.session.is_subscribed("prices"));

    // close() ends every subscription.
    h.session.subscribe(h.now, "other", None).unwrap();
    h.session.close(h.now);
    assert!(!h.session.is_subscribed("other"));
    assert_eq!(h.session.subscribe(h.now, "other", None), Err(SendError::Closed));
}

#[test]
fn a_subscribe_renumbered_behind_a_refused_oversize_message_still_matches_its_answer() {
    let mut h = Harness::new(ws_only());
    h.session.publish(h.now, Some("big"), None, Payload::Text("x".repeat(2_000))).unwrap();
    h.session.subscribe(h.now, "prices", None).unwrap();
    let conn = h.open(); // Its hello says 1024 bytes at most.
    assert_eq!(ordered(&h.effects()), vec![Frame::Subscribe { seq: 1, channel: "prices".into(), since: None }]);
    h.data(conn, &[subscribed(1, "prices", at(3), false, Some(1))]);
    assert!(h.events().contains(&Event::Subscribed { channel: "prices".into(), recovered: false, position: at(3) }));
}

#[test]
fn a_server_retry_survives_a_lost_connection() {
    let mut h = Harness::new(ws_only());
    let conn = subscribed_to_prices(&mut h);
    h.data(conn, &[Frame::Unsubscribed { seq: 2, channel: "prices".into(), reply_to: None, close: close(4012, Retry::AfterMs(5_000), "slow down") }]);
    assert!(h.events().contains(&Event::SubscriptionError { channel: "prices".into(), code: ErrorCode::RateLimited, message: "slow down".into() }));
    let (conn2, _) = cut(&mut h, conn);
    h.data(conn2, &[hello("s1", 1, true)]);
    h.effects();
    h.run_until(h.now + 5_000);
    assert_eq!(ordered(&h.effects()), vec![Frame::Subscribe { seq: 2, channel: "prices".into(), since: Some(at(57)) }]);
}

#[test]
fn answers_match_their_requests_and_a_server_unsubscribe_waits_for_a_pending_one() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.effects();
    h.session.subscribe(h.now, "prices", None).unwrap();
    h.effects();
    h.events();
    // Server-initiated while our subscribe is pending: the answer to the request decides.
    h.data(conn, &[Frame::Unsubscribed { seq: 1, channel: "prices".into(), reply_to: None, close: close(4014, Retry::Never, "closed") }]);
    assert!(h.events().is_empty());
    assert!(h.session.is_subscribed("prices"));
    // An answer naming another request is superseded; the right one counts.
    h.data(conn, &[subscribed(2, "prices", at(1), false, Some(7)), subscribed(3, "prices", at(2), false, Some(1))]);
    assert_eq!(h.events(), vec![Event::Subscribed { channel: "prices".into(), recovered: false, position: at(2) }]);
    // Taken effect: a server-initiated end counts now.
    h.data(conn, &[Frame::Unsubscribed { seq: 4, channel: "prices".into(), reply_to: None, close: close(4014, Retry::Never, "closed") }]);
    assert_eq!(
        h.events(),
        vec![Event::Unsubscribed { channel: "prices".into(), code: ErrorCode::ChannelClosed, reason: "closed".into() }]
    );
    assert_eq!(ErrorCode::from_channel_code(4010).as_str(), "bad-channel");
    assert_eq!(ErrorCode::from_channel_code(4013).as_str(), "forbidden");
}

#[test]
fn a_reset_between_a_recoverys_subscribed_and_its_gap_still_tells_the_gap() {
    let mut h = Harness::new(ws_only());
    let conn = subscribed_to_prices(&mut h);
    h.data(conn, &[chan_msg(2, "prices", at(58), "a")]);
    h.events();
    // A reset the history does not cover: the answer arrives, the session ends before its gap.
    let (conn2, _) = cut(&mut h, conn);
    h.data(conn2, &[hello("s2", 0, false)]);
    assert_eq!(ordered(&h.effects()), vec![Frame::Subscribe { seq: 1, channel: "prices".into(), since: Some(at(58)) }]);
    h.data(conn2, &[subscribed(1, "prices", at(250), false, Some(1))]);
    let events = h.events();
    assert!(events.contains(&Event::Subscribed { channel: "prices".into(), recovered: false, position: at(250) }));
    assert!(gaps(&events).is_empty());
    let (conn3, _) = cut(&mut h, conn2);
    h.data(conn3, &[hello("s3", 0, false)]);
    // The promised gap is told once, and the fresh session recovers from its end.
    assert_eq!(gaps(&h.events()), vec![(59, 250)]);
    assert_eq!(ordered(&h.effects()), vec![Frame::Subscribe { seq: 1, channel: "prices".into(), since: Some(at(250)) }]);
    h.data(conn3, &[subscribed(1, "prices", at(251), true, Some(1)), chan_msg(2, "prices", at(251), "b")]);
    let events = h.events();
    assert!(gaps(&events).is_empty());
    assert_eq!(delivered(&events), vec![("prices".into(), 251, "b".into())]);

    // When the gap does come (here after a resume), it is told once, from the server.
    let (conn4, _) = cut(&mut h, conn3);
    h.data(conn4, &[hello("s4", 0, false)]);
    h.effects();
    h.data(conn4, &[subscribed(1, "prices", Position { epoch: 5, offset: 3 }, false, Some(1))]);
    let (conn5, _) = cut(&mut h, conn4);
    h.data(conn5, &[hello("s4", 1, true), Frame::Gap { seq: 2, channel: "prices".into(), epoch: 5, from: 0, to: 3 }]);
    assert_eq!(gaps(&h.events()), vec![(0, 3)]);
    let (conn6, _) = cut(&mut h, conn5);
    h.data(conn6, &[hello("s5", 0, false)]);
    assert!(gaps(&h.events()).is_empty());
}
