//! Trace tests of sends batched across calls: the sends of one task wait for the flush at its
//! end (`poll_flush`, then `handle_flush`) and go out as one WebSocket message or one POST;
//! a full batch goes at once; acks stay per message.

use super::*;

fn message(seq: u64, body: &str) -> Frame {
    text(seq, body)
}

/// How many `Transmit`/`Post` effects there are.
fn carriers(effects: &[Effect]) -> usize {
    effects.iter().filter(|effect| matches!(effect, Effect::Transmit { .. } | Effect::Post { .. })).count()
}

/// Open on the one rung `kind` (SSE or long polling); the RTT ping's POST is answered.
fn open_http(kind: TransportKind) -> (Harness, ConnId) {
    let mut h = Harness::new(SessionConfig { transports: vec![kind], ..SessionConfig::default() });
    h.session.connect(h.now);
    let [(conn, ..)] = opened(&h.effects())[..] else { panic!() };
    h.data(conn, &[hello("s1", 0, false)]);
    assert_eq!(posted(&h.effects()), vec![Frame::Ping { time: 1_000 }]);
    h.session.handle_input(h.now, Input::Posted { conn });
    h.events();
    assert!(h.effects().iter().all(|effect| !matches!(effect, Effect::Post { .. })));
    (h, conn)
}

#[test]
fn sends_of_one_task_go_in_one_websocket_message_after_the_flush() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.effects();
    h.events();
    let ids: Vec<u64> = ["a", "b", "c"].iter().map(|body| h.session.send(h.now, None, Payload::Text((*body).into())).unwrap()).collect();
    assert!(h.pending_effects().is_empty(), "nothing goes out before the task ends");
    assert!(h.session.poll_flush(), "the adapter is told to flush");
    assert!(!h.session.poll_flush(), "once per pending batch");
    h.session.send(h.now, None, Payload::Text("d".into())).unwrap();
    assert!(!h.session.poll_flush(), "a send joining a scheduled batch asks for nothing more");
    h.session.handle_flush(h.now);
    let effects = h.pending_effects();
    assert_eq!(carriers(&effects), 1);
    assert_eq!(transmitted(&effects), vec![message(1, "a"), message(2, "b"), message(3, "c"), message(4, "d")]);
    // A spurious flush does nothing.
    h.session.handle_flush(h.now);
    assert!(h.pending_effects().is_empty());
    // Acks stay per message.
    h.data(conn, &[Frame::Ack { seq: 2 }]);
    assert_eq!(h.events(), vec![Event::Delivered { up_to_id: ids[1] }]);
    h.data(conn, &[Frame::Ack { seq: 4 }]);
    assert_eq!(h.session.outbox_len(), 0);
    // The next task's sends make the next batch and ask for a flush again.
    h.session.send(h.now, None, Payload::Text("e".into())).unwrap();
    assert!(h.session.poll_flush());
    h.session.handle_flush(h.now);
    assert_eq!(transmitted(&h.pending_effects()), vec![message(5, "e")]);
}

#[test]
fn a_full_batch_goes_at_once_and_the_rest_waits_for_the_flush() {
    let mut h = Harness::new(ws_only());
    h.open();
    h.effects();
    let body = "x".repeat(1_000);
    for _ in 0..100 {
        h.session.send(h.now, None, Payload::Text(body.clone())).unwrap();
    }
    let early = h.pending_effects();
    assert_eq!(carriers(&early), 1, "one full batch before the task ends");
    let Some(Effect::Transmit { data, .. }) = early.first() else { panic!("{early:?}") };
    let bound = wire::message_size_bound(None, &Payload::Text(body.clone()), Carrier::Binary);
    assert!(data.len() <= MAX_BATCH_BYTES, "{} bytes", data.len());
    // Full by the size bounds: the next message would not have fitted.
    assert_eq!(transmitted(&early).len(), MAX_BATCH_BYTES / bound, "{} bytes", data.len());
    let late = h.effects();
    assert_eq!(carriers(&late), 1);
    let seqs: Vec<u64> = transmitted(&early)
        .into_iter()
        .chain(transmitted(&late))
        .map(|frame| match frame {
            Frame::Message(message) => message.seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
}

#[test]
fn a_message_that_fills_a_batch_by_itself_goes_at_once() {
    let mut h = Harness::new(ws_only());
    h.session.connect(h.now);
    let [(conn, ..)] = opened(&h.effects())[..] else { panic!() };
    let mut big_hello = hello("s1", 0, false);
    if let Frame::Hello(hello) = &mut big_hello {
        hello.max_body_bytes = 1 << 20;
    }
    h.data(conn, &[big_hello]);
    h.effects();
    h.session.send(h.now, None, Payload::Text("small".into())).unwrap();
    h.session.send(h.now, None, Payload::Text("y".repeat(MAX_BATCH_BYTES))).unwrap();
    let effects = h.pending_effects();
    assert_eq!(carriers(&effects), 2, "the small batch, then the big message, each at once");
    assert_eq!(transmitted(&effects).len(), 2);
    assert!(h.effects().is_empty(), "nothing was left for the flush");
}

#[test]
fn over_http_the_sends_of_a_task_make_one_post_and_those_during_it_the_next() {
    for kind in [TransportKind::Sse, TransportKind::LongPolling] {
        let (mut h, conn) = open_http(kind);
        h.session.send(h.now, None, Payload::Text("a".into())).unwrap();
        h.session.send(h.now, Some("chat".into()), Payload::Json("{}".into())).unwrap();
        assert!(h.pending_effects().is_empty(), "{kind:?}: nothing goes out before the task ends");
        let effects = h.effects();
        assert_eq!(carriers(&effects), 1, "{kind:?}");
        assert_eq!(
            posted(&effects),
            vec![message(1, "a"), Frame::Message(Message { seq: 2, event: Some("chat".into()), payload: Payload::Json("{}".into()) })]
        );
        // While that POST is in flight, later tasks' sends wait, all for the next POST.
        for body in ["b", "c"] {
            h.session.send(h.now, None, Payload::Text(body.into())).unwrap();
            assert!(!h.session.poll_flush(), "{kind:?}: no flush while a POST is in flight");
            assert!(h.effects().is_empty());
        }
        h.session.send(h.now, None, Payload::Text("d".into())).unwrap();
        h.session.handle_input(h.now, Input::Posted { conn });
        let effects = h.pending_effects();
        assert_eq!(carriers(&effects), 1, "{kind:?}: the answer sends the rest at once");
        assert_eq!(posted(&effects), vec![message(3, "b"), message(4, "c"), message(5, "d")]);
    }
}

#[test]
fn sends_then_close_in_the_same_task_go_out_with_the_goodbye() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.effects();
    h.events();
    let first = h.session.send(h.now, None, Payload::Text("a".into())).unwrap();
    let second = h.session.send(h.now, None, Payload::Text("b".into())).unwrap();
    h.session.close(h.now);
    // The flush the sends asked for comes after close: it finds nothing to do.
    let effects = h.effects();
    assert_eq!(carriers(&effects), 1, "one message: the sends, then the goodbye");
    let frames = transmitted(&effects);
    assert!(matches!(frames.as_slice(), [_, _, Frame::Close(Close { code: 1000, .. })]), "{frames:?}");
    assert_eq!(frames.get(..2), Some(&[message(1, "a"), message(2, "b")][..]));
    assert_eq!(effects.last(), Some(&Effect::Close { conn }));
    // As before batching: pending sends reject at close, whatever went out.
    let failed: Vec<u64> = h
        .events()
        .iter()
        .filter_map(|event| match event {
            Event::SendFailed { id, code: ErrorCode::Closed, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![first, second]);
}

#[test]
fn sends_while_not_connected_go_with_the_hello_without_a_flush() {
    let mut h = Harness::new(ws_only());
    let first = h.session.send(h.now, None, Payload::Text("early".into())).unwrap();
    h.session.send(h.now, None, Payload::Text("later".into())).unwrap();
    assert!(!h.session.poll_flush(), "nothing to write to: the hello pumps them");
    assert!(h.pending_effects().is_empty());
    h.session.connect(h.now);
    let [(conn, ..)] = opened(&h.pending_effects())[..] else { panic!() };
    h.data(conn, &[hello("s1", 0, false)]);
    let effects = h.pending_effects();
    assert_eq!(carriers(&effects), 1);
    assert_eq!(transmitted(&effects), vec![Frame::Ping { time: 1_000 }, message(1, "early"), message(2, "later")]);
    assert!(!h.session.poll_flush());
    h.data(conn, &[Frame::Ack { seq: 1 }]);
    assert!(h.events().contains(&Event::Delivered { up_to_id: first }));
    assert_eq!(h.session.outbox_len(), 1);
}

#[test]
fn a_lost_connection_with_sends_waiting_for_the_flush_sends_them_after_the_resume() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.effects();
    h.session.send(h.now, None, Payload::Text("a".into())).unwrap();
    h.session.handle_input(h.now, Input::Closed { conn, reason: "cut".into() });
    // The flush finds no connection; the message was never handed over.
    assert!(transmitted(&h.effects()).is_empty());
    let conn2 = loop {
        let at = h.session.poll_timeout().expect("a reconnect is scheduled");
        h.advance_to(at);
        if let [(conn2, ..)] = opened(&h.effects())[..] {
            break conn2;
        }
    };
    h.data(conn2, &[hello("s1", 0, true)]);
    assert_eq!(transmitted(&h.effects()), vec![Frame::Ping { time: h.now }, message(1, "a")]);
}

#[test]
fn at_most_max_in_flight_messages_go_unacknowledged_and_acks_send_the_rest() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.effects();
    let total = MAX_IN_FLIGHT as u64 + 500;
    for _ in 0..total {
        h.session.send(h.now, None, Payload::Text("m".into())).unwrap();
    }
    let seqs = |effects: &[Effect]| -> Vec<u64> {
        transmitted(effects)
            .into_iter()
            .filter_map(|frame| match frame {
                Frame::Message(message) => Some(message.seq),
                _ => None,
            })
            .collect()
    };
    assert_eq!(seqs(&h.effects()), (1..=MAX_IN_FLIGHT as u64).collect::<Vec<u64>>(), "a window's worth goes");
    // An ack of 300 lets 300 more go, in the same step.
    h.data(conn, &[Frame::Ack { seq: 300 }]);
    let next = seqs(&h.pending_effects());
    assert_eq!(next, (MAX_IN_FLIGHT as u64 + 1..=MAX_IN_FLIGHT as u64 + 300).collect::<Vec<u64>>());
    h.data(conn, &[Frame::Ack { seq: total - 200 }]);
    assert_eq!(seqs(&h.pending_effects()), (MAX_IN_FLIGHT as u64 + 301..=total).collect::<Vec<u64>>());
    h.data(conn, &[Frame::Ack { seq: total }]);
    assert_eq!(h.session.outbox_len(), 0);
}

#[test]
fn over_http_the_window_is_the_one_post_in_flight() {
    let (mut h, conn) = open_http(TransportKind::Sse);
    let total = MAX_IN_FLIGHT as u64 + 500;
    for _ in 0..total {
        h.session.send(h.now, None, Payload::Text("m".into())).unwrap();
    }
    let mut seqs = Vec::new();
    while (seqs.len() as u64) < total {
        let effects = h.effects();
        assert_eq!(carriers(&effects), 1, "each answer sends the next POST, acked or not");
        seqs.extend(posted(&effects).into_iter().filter_map(|frame| match frame {
            Frame::Message(message) => Some(message.seq),
            _ => None,
        }));
        h.session.handle_input(h.now, Input::Posted { conn });
    }
    assert_eq!(seqs, (1..=total).collect::<Vec<u64>>());
}
