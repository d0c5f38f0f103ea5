//! Trace tests of one session on one rung: connect, messages both ways, acks, reconnects and
//! resumes, liveness, server advice, the outbox limits.

use super::*;

#[test]
fn connect_open_message_close_trace() {
    let mut h = Harness::new(ws_only());
    assert_eq!(h.session.state(), State::Idle);
    let conn = h.open();
    let events = h.events();
    assert_eq!(
        events,
        vec![
            Event::State(State::Connecting),
            Event::State(State::Open),
            Event::Transport { from: None, to: TransportKind::WebSocket, cause: TransportCause::Connected, reason: "connected".into() },
            Event::Open { session_id: "s1".into(), transport: TransportKind::WebSocket, resumed: false },
        ]
    );
    assert_eq!(h.session.transport(), Some(TransportKind::WebSocket));
    assert_eq!(h.session.session_id(), Some("s1"));
    // The RTT probe goes out right after the hello.
    assert_eq!(transmitted(&h.effects()), vec![Frame::Ping { time: 1_000 }]);
    h.now += 7;
    h.data(conn, &[Frame::Pong { time: 1_000 }]);
    assert_eq!(h.session.stats().rtt_ms, Some(7));

    // An outgoing message is transmitted at once and delivered on ack.
    let id = h.session.send(h.now, Some("chat".into()), Payload::Json("{}".into())).unwrap();
    let effects = h.effects();
    assert_eq!(
        transmitted(&effects),
        vec![Frame::Message(Message { seq: 1, event: Some("chat".into()), payload: Payload::Json("{}".into()) })]
    );
    assert!(matches!(effects[0], Effect::Transmit { binary: false, .. }));
    h.data(conn, &[Frame::Ack { seq: 1 }]);
    assert_eq!(h.events(), vec![Event::Delivered { up_to_id: id }]);

    // Incoming messages are delivered and acked after the ack delay, once.
    h.data(conn, &[text(1, "a"), text(2, "b"), text(2, "b")]);
    let events = h.events();
    assert_eq!(events.len(), 2);
    assert!(h.effects().is_empty(), "ack is debounced");
    h.run_until(h.now + 20);
    assert_eq!(transmitted(&h.effects()), vec![Frame::Ack { seq: 2 }]);

    // close() says goodbye, tears down, and nothing fires afterwards.
    h.session.close(h.now);
    let effects = h.effects();
    assert!(matches!(transmitted(&effects).as_slice(), [Frame::Close(Close { code: 1000, .. })]));
    assert_eq!(effects.last(), Some(&Effect::Close { conn }));
    assert_eq!(
        h.events(),
        vec![Event::State(State::Closed), Event::Closed { code: 1000, reason: "client closed".into(), cause: ErrorCode::Closed }]
    );
    h.data(conn, &[text(3, "late")]);
    assert!(h.events().is_empty());
    assert_eq!(h.session.send(h.now, None, Payload::Text("x".into())), Err(SendError::Closed));
}

#[test]
fn binary_payloads_ask_for_a_binary_carrier() {
    let mut h = Harness::new(ws_only());
    h.open();
    h.effects();
    h.session.send(h.now, None, Payload::Binary(vec![0, 255])).unwrap();
    assert!(matches!(h.effects().as_slice(), [Effect::Transmit { binary: true, .. }]));
}

#[test]
fn lost_connection_reconnects_with_jittered_backoff_and_resumes() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.data(conn, &[text(1, "a")]);
    // Two messages: the first reaches the server and is acked, the second is lost in flight.
    let first = h.session.send(h.now, None, Payload::Text("one".into())).unwrap();
    let second = h.session.send(h.now, None, Payload::Text("two".into())).unwrap();
    h.data(conn, &[Frame::Ack { seq: 1 }]);
    h.events();
    h.effects();

    h.session.handle_input(h.now, Input::Closed { conn, reason: "socket closed (1006)".into() });
    let effects = h.effects();
    assert_eq!(effects, vec![Effect::Close { conn }]);
    let events = h.events();
    let delay = match events.as_slice() {
        [Event::State(State::Reconnecting), Event::Reconnecting { attempt: 1, delay_ms, reason }] => {
            assert_eq!(reason, "socket closed (1006)");
            *delay_ms
        }
        other => panic!("{other:?}"),
    };
    assert!(delay <= 500);
    assert_eq!(h.session.transport(), None);

    // Nothing before the delay; then a resume request naming the last delivered seq.
    let reconnect_at = h.now + delay;
    assert_eq!(h.session.poll_timeout(), Some(reconnect_at));
    h.advance_to(reconnect_at);
    let conn2 = match h.effects().as_slice() {
        [Effect::Open { conn, url, body, .. }] => {
            assert!(url.ends_with("rt_conn=2"), "no secret in the URL: {url}");
            assert_eq!(body, b"session sid=s1 key=secret last=1\n");
            *conn
        }
        other => panic!("{other:?}"),
    };
    // The late close of the old socket is ignored.
    h.session.handle_input(h.now, Input::Closed { conn, reason: "late".into() });
    assert!(h.events().is_empty());

    // The server resumed, had message 1; message 2 goes again, and replays are deduplicated.
    h.data(conn2, &[hello("s1", 1, true), text(1, "a"), text(2, "b")]);
    let events = h.events();
    assert!(events.contains(&Event::Open { session_id: "s1".into(), transport: TransportKind::WebSocket, resumed: true }));
    let messages: Vec<_> = events.iter().filter(|event| matches!(event, Event::Message { .. })).collect();
    assert_eq!(messages.len(), 1, "seq 1 was already delivered");
    assert!(!events.iter().any(|event| matches!(event, Event::Transport { .. })), "same transport: no event");
    let frames = transmitted(&h.effects());
    let resent: Vec<_> = frames.iter().filter(|frame| matches!(frame, Frame::Message(_))).collect();
    assert_eq!(resent, vec![&text(2, "two")]);
    assert!(first < second);
}

#[test]
fn refused_resume_emits_one_reset_and_rejects_only_what_may_have_arrived() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.data(conn, &[text(1, "a")]);
    let in_flight = h.session.send(h.now, None, Payload::Text("maybe".into())).unwrap();
    h.effects();
    h.session.handle_input(h.now, Input::Closed { conn, reason: "gone".into() });
    let queued = h.session.send(h.now, None, Payload::Text("queued".into())).unwrap();
    h.events();
    h.run_until(h.now + 600);
    let conn2 = match h.effects().as_slice() {
        [.., Effect::Open { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    h.data(conn2, &[hello("s2", 0, false), text(1, "fresh")]);
    let events = h.events();
    let resets = events.iter().filter(|event| matches!(event, Event::Reset { .. })).count();
    assert_eq!(resets, 1);
    assert!(events.contains(&Event::SendFailed {
        id: in_flight,
        code: ErrorCode::Reset,
        reason: "session reset: the message may not have been delivered"
    }));
    assert!(events.iter().any(|event| matches!(event, Event::Message { seq: 1, .. })), "fresh seq 1 delivered");
    // The queued message is renumbered from 1 on the fresh session.
    let frames = transmitted(&h.effects());
    let resent: Vec<_> = frames.iter().filter(|frame| matches!(frame, Frame::Message(_))).collect();
    assert_eq!(resent, vec![&text(1, "queued")]);
    h.data(conn2, &[Frame::Ack { seq: 1 }]);
    assert!(h.events().contains(&Event::Delivered { up_to_id: queued }));
}

#[test]
fn malformed_frames_are_protocol_errors_that_reconnect() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.events();
    h.effects();
    h.session.handle_input(h.now, Input::Data { conn, bytes: b"msg s=1 k=t n=99\nshort".to_vec() });
    let events = h.events();
    assert_eq!(events[0], Event::Error { code: ErrorCode::Protocol, message: "protocol error: frame truncated".into() });
    assert!(matches!(events.last(), Some(Event::Reconnecting { .. })));
    assert_eq!(h.effects(), vec![Effect::Close { conn }]);
}

#[test]
fn frames_before_hello_and_gaps_are_protocol_errors() {
    let mut h = Harness::new(ws_only());
    h.session.connect(h.now);
    let conn = match h.effects().as_slice() {
        [Effect::Open { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    h.data(conn, &[text(1, "early")]);
    assert!(h.events().contains(&Event::Error { code: ErrorCode::Protocol, message: "protocol error: expected hello as the first frame".into() }));

    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.events();
    h.data(conn, &[text(2, "skipped one")]);
    assert!(h.events().contains(&Event::Error { code: ErrorCode::Protocol, message: "protocol error: gap in server sequence numbers".into() }));
}

#[test]
fn connect_timeout_without_hello_retries() {
    let mut h = Harness::new(SessionConfig { connect_timeout_ms: 3_000, ..ws_only() });
    h.session.connect(h.now);
    let conn = match h.effects().as_slice() {
        [Effect::Open { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    h.session.handle_input(h.now, Input::Opened { conn }); // Accepted, then silent.
    assert_eq!(h.session.poll_timeout(), Some(4_000));
    h.advance_to(4_000);
    assert_eq!(h.effects(), vec![Effect::Close { conn }]);
    assert!(h.events().iter().any(|event| matches!(
        event,
        Event::Reconnecting { reason, .. } if reason == "websocket failed: connect timeout: no hello from the server"
    )));
}

#[test]
fn heartbeat_pings_when_idle_and_declares_a_silent_connection_dead() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.effects();
    h.events();
    // Idle for one interval: a ping goes out.
    h.run_until(1_000 + 10_000);
    assert_eq!(transmitted(&h.effects()), vec![Frame::Ping { time: 11_000 }]);
    // Nothing from the server for 1.5 intervals: dead, replaced.
    h.run_until(1_000 + 15_000);
    assert!(h.effects().contains(&Effect::Close { conn }));
    assert!(h.events().iter().any(|event| matches!(
        event,
        Event::Reconnecting { reason, .. } if reason.starts_with("heartbeat timeout")
    )));
}

#[test]
fn traffic_keeps_the_connection_alive() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    for step in 1..=10 {
        h.run_until(1_000 + step * 9_000);
        h.data(conn, &[Frame::Ping { time: h.now }]);
    }
    assert_eq!(h.session.state(), State::Open);
}

#[test]
fn server_close_advice_is_honoured() {
    // retry=no: closed for good.
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.events();
    h.data(conn, &[Frame::Close(Close { code: 4001, reason: "bad token".into(), retry: Retry::Never })]);
    let events = h.events();
    assert_eq!(events[0], Event::Error { code: ErrorCode::Unauthorized, message: "server refused the session: bad token".into() });
    assert_eq!(events.last(), Some(&Event::Closed { code: 4001, reason: "bad token".into(), cause: ErrorCode::Unauthorized }));
    assert_eq!(h.session.state(), State::Closed);
    assert_eq!(h.session.poll_timeout(), None);

    // retry=N: reconnect not before N ms, plus at most the backoff's jitter for this attempt.
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.events();
    h.data(conn, &[Frame::Close(Close { code: 1001, reason: "restart".into(), retry: Retry::AfterMs(1234) })]);
    let delays: Vec<u64> = h
        .events()
        .iter()
        .filter_map(|event| match event {
            Event::Reconnecting { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    let [delay] = delays[..] else { panic!("one reconnect expected, got {delays:?}") };
    assert!((1234..=1234 + 500).contains(&delay), "delay {delay}");
}

#[test]
fn reconnect_false_closes_on_first_loss_and_max_attempts_gives_up() {
    let mut h = Harness::new(SessionConfig { reconnect: None, ..ws_only() });
    let conn = h.open();
    h.session.handle_input(h.now, Input::Closed { conn, reason: "gone".into() });
    assert_eq!(h.session.state(), State::Closed);

    let config = SessionConfig {
        reconnect: Some(BackoffConfig { max_attempts: Some(2), ..BackoffConfig::default() }),
        ..ws_only()
    };
    let mut h = Harness::new(config);
    h.session.connect(h.now);
    for _ in 0..3 {
        let conn = match h.effects().as_slice() {
            [.., Effect::Open { conn, .. }] => *conn,
            other => panic!("{other:?}"),
        };
        h.session.handle_input(h.now, Input::Closed { conn, reason: "refused".into() });
        h.run_until(h.now + 2_000);
    }
    assert_eq!(h.session.state(), State::Closed);
    let events = h.events();
    assert!(events.iter().any(|event| matches!(event, Event::Closed { code: 1006, cause: ErrorCode::RetriesExhausted, .. })));
    let errors = events.iter().filter(|event| matches!(event, Event::Error { code: ErrorCode::RetriesExhausted, .. })).count();
    assert_eq!(errors, 1, "one error says why the client stopped");
}

#[test]
fn the_attempt_counter_resets_only_after_a_stable_connection() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.session.handle_input(h.now, Input::Closed { conn, reason: "x".into() });
    h.run_until(h.now + 1_000);
    let conn = match h.effects().as_slice() {
        [.., Effect::Open { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    h.data(conn, &[hello("s1", 0, true)]);
    // Dropped again at once: attempt 2.
    h.session.handle_input(h.now, Input::Closed { conn, reason: "x".into() });
    assert!(h.events().iter().any(|event| matches!(event, Event::Reconnecting { attempt: 2, .. })));
    h.run_until(h.now + 2_000);
    let conn = match h.effects().as_slice() {
        [.., Effect::Open { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    h.data(conn, &[hello("s1", 0, true)]);
    // Up for longer than stable_after_ms: the next loss is attempt 1 again.
    for step in 1..=3 {
        h.run_until(h.now + 2_000);
        h.data(conn, &[Frame::Ping { time: step }]);
    }
    h.events();
    h.session.handle_input(h.now, Input::Closed { conn, reason: "x".into() });
    assert!(h.events().iter().any(|event| matches!(event, Event::Reconnecting { attempt: 1, .. })));
}

#[test]
fn outbox_limits_are_enforced_with_clear_errors() {
    let config = SessionConfig { outbox_max_messages: 2, outbox_max_bytes: 10, ..ws_only() };
    let mut h = Harness::new(config);
    // Queued while idle: allowed up to the limits.
    h.session.send(h.now, None, Payload::Text("12345".into())).unwrap();
    assert_eq!(h.session.send(h.now, None, Payload::Text("123456".into())), Err(SendError::OutboxFull));
    h.session.send(h.now, None, Payload::Text("1".into())).unwrap();
    assert_eq!(h.session.send(h.now, None, Payload::Text("1".into())), Err(SendError::OutboxFull));
    assert_eq!(h.session.send(h.now, Some("bad name".into()), Payload::Text("1".into())), Err(SendError::BadEventName));
    // Hello lowers the size limit to 1024 bytes.
    h.open();
    let big = Payload::Binary(vec![0; 1025]);
    assert_eq!(h.session.send(h.now, None, big), Err(SendError::TooLarge));
}

#[test]
fn close_rejects_pending_messages() {
    let mut h = Harness::new(ws_only());
    h.open();
    let id = h.session.send(h.now, None, Payload::Text("x".into())).unwrap();
    h.events();
    h.session.close(h.now);
    assert!(h.events().contains(&Event::SendFailed { id, code: ErrorCode::Closed, reason: "client closed" }));
    assert_eq!(h.session.outbox_len(), 0);
}

// --- The ladder ----------------------------------------------------------------------
