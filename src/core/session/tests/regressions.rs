//! One trace per defect found in review, each failing on the code before its fix.

use super::*;

fn hello_with(session_id: &str, heartbeat_ms: u64, max_body_bytes: u64, ack: u64, resumed: bool) -> Frame {
    Frame::Hello(Hello {
        version: 3,
        session_id: session_id.into(),
        secret: "secret".into(),
        heartbeat_ms,
        max_body_bytes,
        ack,
        resumed,
    })
}

fn close(code: u16, retry: Retry) -> Frame {
    Frame::Close(Close { code, reason: "because".into(), retry })
}

fn reconnect_delays(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Reconnecting { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect()
}

fn answer_posts(h: &mut Harness, effects: &[Effect]) {
    for effect in effects {
        if let Effect::Post { conn, .. } = effect {
            h.session.handle_input(h.now, Input::Posted { conn: *conn });
        }
    }
}

/// Fires deadlines one at a time until a connection opens (at most `limit` ms from now).
fn run_until_opened(h: &mut Harness, limit: Millis) -> Vec<Effect> {
    let until = h.now + limit;
    let mut effects = Vec::new();
    while let Some(at) = h.session.poll_timeout().filter(|&at| at <= until) {
        h.advance_to(at.max(h.now));
        effects.extend(h.effects());
        if !opened(&effects).is_empty() {
            return effects;
        }
    }
    panic!("nothing opened within {limit} ms");
}

fn posted_frames(effects: &[Effect]) -> Vec<Frame> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Post { body, .. } => Some(wire::decode_all(body, 1 << 20).unwrap()),
            _ => None,
        })
        .flatten()
        .collect()
}

// --- 3. Server advice before the hello ------------------------------------------------------

#[test]
fn a_refusal_before_the_hello_ends_the_client_instead_of_falling_back() {
    for (code, retry, cause) in [
        (close_code::UNAUTHORIZED, Retry::Never, ErrorCode::Unauthorized),
        (close_code::UNSUPPORTED_VERSION, Retry::Never, ErrorCode::UnsupportedVersion),
        // 4001 ends the client whatever its retry says.
        (close_code::UNAUTHORIZED, Retry::AfterMs(10), ErrorCode::Unauthorized),
        // retry=no ends it whatever the code.
        (close_code::LIMIT_EXCEEDED, Retry::Never, ErrorCode::ServerClosed),
        (1013, Retry::Never, ErrorCode::ServerClosed),
    ] {
        let mut h = Harness::new(SessionConfig::default());
        h.session.connect(h.now);
        let [(ws, ..)] = opened(&h.effects())[..] else { panic!() };
        h.events();
        h.data(ws, &[close(code, retry)]);
        let events = h.events();
        let errors: Vec<&Event> = events.iter().filter(|event| matches!(event, Event::Error { .. })).collect();
        assert_eq!(errors.len(), 1, "{code}: one error, got {events:?}");
        assert!(matches!(errors[0], Event::Error { code, .. } if *code == cause), "{code}: {errors:?}");
        assert_eq!(events.last(), Some(&Event::Closed { code, reason: "because".into(), cause }), "{code}");
        assert!(reconnect_delays(&events).is_empty(), "{code}: no retry");
        assert!(opened(&h.effects()).is_empty(), "{code}: no other rung is tried");
        assert_eq!(h.session.state(), State::Closed);
        assert_eq!(h.session.poll_timeout(), None);
    }
}

#[test]
fn retry_advice_before_the_hello_ends_the_round_and_waits() {
    let mut h = Harness::new(SessionConfig::default());
    h.session.connect(h.now);
    let [(ws, ..)] = opened(&h.effects())[..] else { panic!() };
    h.run_until(h.now + 300);
    let [(sse, TransportKind::Sse, _)] = opened(&h.effects())[..] else { panic!() };
    h.events();
    // The server is up but busy: come back in 5 s. Another rung of the same server would only
    // be told the same, so the round ends.
    h.data(ws, &[close(close_code::LIMIT_EXCEEDED, Retry::AfterMs(5_000))]);
    let effects = h.effects();
    assert!(effects.contains(&Effect::Close { conn: sse }), "the racing rung is dropped too");
    let [delay] = reconnect_delays(&h.events())[..] else { panic!() };
    assert!(delay >= 5_000, "not before the advice: {delay}");
    assert!(opened(&effects).is_empty());
    assert_eq!(h.session.connection_count(), 0);
}

// --- 4. Two raced connections both resuming ---------------------------------------------------

/// An open session s1 over WebSocket that lost its connection, with the reconnect round's
/// WebSocket candidate open and silent and SSE racing beside it.
fn reconnect_race(h: &mut Harness) -> (ConnId, ConnId) {
    let conn = h.open_default_websocket();
    h.session.handle_input(h.now, Input::Closed { conn, reason: "cut".into() });
    let [(ws, TransportKind::WebSocket, ref ws_url)] = opened(&run_until_opened(h, 1_000))[..] else { panic!() };
    assert!(ws_url.contains("session sid=s1"), "the first candidate resumes: {ws_url}");
    let [(sse, TransportKind::Sse, ref sse_url)] = opened(&run_until_opened(h, 300))[..] else { panic!() };
    assert!(!sse_url.contains("sid="), "only one connection of a round presents the resume: {sse_url}");
    assert!(sse_url.contains("rt_probe=1"), "{sse_url}");
    h.events();
    (ws, sse)
}

#[test]
fn a_raced_rung_that_wins_resumes_alone() {
    let mut h = Harness::new(SessionConfig::default());
    let (ws, sse) = reconnect_race(&mut h);
    h.data(sse, &[hello_with("probe", 10_000, 1024, 0, false)]);
    let effects = h.effects();
    assert!(effects.contains(&Effect::Close { conn: ws }), "the resuming WebSocket is closed first");
    assert!(effects.contains(&Effect::Close { conn: sse }));
    let [(resume, TransportKind::Sse, ref url)] = opened(&effects)[..] else { panic!("{effects:?}") };
    assert!(!url.contains("sid="), "{url}");
    // The stream waits for its bind, which names the session.
    h.data(resume, &[Frame::Pending { stream: "st".into() }]);
    let bind = h.effects();
    assert!(matches!(&bind[..], [Effect::Post { body, .. }] if body.starts_with(b"session stream=st sid=s1 ")), "{bind:?}");
    assert_eq!(h.session.state(), State::Reconnecting, "not open on a probe's hello");
    h.data(resume, &[hello("s1", 0, true)]);
    let events = h.events();
    assert!(!events.iter().any(|event| matches!(event, Event::Reset { .. })), "{events:?}");
    assert!(events.contains(&Event::Open { session_id: "s1".into(), transport: TransportKind::Sse, resumed: true }));
    assert_eq!(h.session.connection_count(), 1);
}

#[test]
fn the_resuming_candidate_that_answers_first_wins_and_the_raced_one_is_closed() {
    let mut h = Harness::new(SessionConfig::default());
    let (ws, sse) = reconnect_race(&mut h);
    h.data(ws, &[hello("s1", 0, true)]);
    assert!(h.effects().contains(&Effect::Close { conn: sse }));
    assert_eq!(h.session.transport(), Some(TransportKind::WebSocket));
    assert!(h.events().contains(&Event::Open { session_id: "s1".into(), transport: TransportKind::WebSocket, resumed: true }));
}

// --- 5. Open with no connection ---------------------------------------------------------------

#[test]
fn a_hello_acknowledging_what_was_never_sent_does_not_open() {
    for reconnect in [None, Some(BackoffConfig::default())] {
        let mut h = Harness::new(SessionConfig { reconnect, ..ws_only() });
        h.session.connect(h.now);
        let [(ws, ..)] = opened(&h.effects())[..] else { panic!() };
        h.data(ws, &[hello("s1", 5, false)]);
        let events = h.events();
        assert!(!events.contains(&Event::State(State::Open)), "{events:?}");
        assert!(!events.iter().any(|event| matches!(event, Event::Open { .. })), "{events:?}");
        assert!(events.iter().any(|event| matches!(event, Event::Error { code: ErrorCode::Protocol, .. })));
        let expected = if reconnect.is_some() { State::Reconnecting } else { State::Closed };
        assert_eq!(h.session.state(), expected);
        assert_eq!(h.session.poll_timeout().is_some(), reconnect.is_some(), "a retry is scheduled, or nothing is left");
    }
}

// --- 6. Hostile numbers -----------------------------------------------------------------------

#[test]
fn a_one_millisecond_heartbeat_is_clamped() {
    let mut h = Harness::new(ws_only());
    h.session.connect(h.now);
    let [(ws, ..)] = opened(&h.effects())[..] else { panic!() };
    h.data(ws, &[hello_with("s1", 1, 1024, 0, false)]);
    h.effects();
    let start = h.now;
    let mut pings = 0;
    while h.now < start + 10_000 {
        let Some(at) = h.session.poll_timeout() else { break };
        h.advance_to(at);
        // The server answers, so the connection stays alive.
        h.data(ws, &[Frame::Ack { seq: 0 }]);
        pings += transmitted(&h.effects()).iter().filter(|frame| matches!(frame, Frame::Ping { .. })).count();
    }
    assert!(pings <= 10 + 1, "{pings} pings in 10 s (at most one per {MIN_HEARTBEAT_MS} ms)");
}

#[test]
fn huge_numbers_from_the_server_neither_overflow_nor_spin() {
    for heartbeat in [u64::MAX, u64::MAX / 2, 1 << 31, 0] {
        let mut h = Harness::new(ws_only());
        h.session.connect(h.now);
        let [(ws, ..)] = opened(&h.effects())[..] else { panic!() };
        h.data(ws, &[hello_with("s1", heartbeat, u64::MAX, 0, false)]);
        let next = h.session.poll_timeout().unwrap();
        assert!(next > h.now && next <= h.now + MAX_HEARTBEAT_MS * 2, "hb {heartbeat}: next deadline {next}");
        h.data(ws, &[close(1001, Retry::AfterMs(u64::MAX))]);
        let [delay] = reconnect_delays(&h.events())[..] else { panic!() };
        assert!((MAX_RETRY_MS..=MAX_RETRY_MS + 500).contains(&delay), "retry clamped: {delay}");
        let next = h.session.poll_timeout().unwrap();
        assert!(next > h.now && next < u64::MAX / 2);
    }
}

// --- 8. An upload that hangs ------------------------------------------------------------------

#[test]
fn a_hung_upload_replaces_the_connection_and_the_resume_sends_it_again() {
    let mut h = Harness::new(SessionConfig::default());
    let sse = on_sse_after_fallback(&mut h);
    let id = h.session.send(h.now, None, Payload::Text("stuck".into())).unwrap();
    let frames = posted_frames(&h.effects());
    assert!(frames.iter().any(|frame| matches!(frame, Frame::Message(Message { seq: 1, .. }))));
    // The POST is never answered; the event stream stays busy, so only the upload deadline can
    // notice.
    let start = h.now;
    while h.session.state() == State::Open && h.now < start + 60_000 {
        h.run_until(h.now + 2_000);
        h.data(sse, &[Frame::Ping { time: h.now }]);
        h.effects();
    }
    let waited = h.now - start;
    assert_eq!(h.session.state(), State::Reconnecting, "still open after {waited} ms");
    assert!(waited <= 20_000 + 2_000, "upload timeout is 2 heartbeats (20 s here): took {waited} ms");
    let events = h.events();
    assert!(events.iter().any(|event| matches!(event, Event::Reconnecting { reason, .. } if reason.contains("upload timeout"))));
    // The resume sends the message again, with its sequence number.
    let effects = run_until_opened(&mut h, 60_000);
    let [(resume, TransportKind::Sse, ref url)] = opened(&effects)[..] else { panic!("{effects:?}") };
    assert!(!url.contains("sid="), "an event stream's session goes in its bind: {url}");
    h.data(resume, &[Frame::Pending { stream: "st".into() }]);
    let bind = h.effects();
    assert!(matches!(&bind[..], [Effect::Post { url, body, .. }] if url.contains("/bind?") && body.starts_with(b"session stream=st sid=s1 key=secret")), "{bind:?}");
    h.session.handle_input(h.now, Input::Posted { conn: resume });
    h.data(resume, &[hello("s1", 0, true)]);
    let frames = posted_frames(&h.effects());
    let resent: Vec<&Frame> = frames.iter().filter(|frame| matches!(frame, Frame::Message(_))).collect();
    assert_eq!(resent, vec![&Frame::Message(Message { seq: 1, event: None, payload: Payload::Text("stuck".into()) })]);
    assert!(!h.events().iter().any(|event| matches!(event, Event::SendFailed { id: failed, .. } if *failed == id)));
}

// --- 9. An oversize message queued before the hello -------------------------------------------

#[test]
fn a_message_queued_before_the_hello_over_the_servers_limit_is_refused_once() {
    let mut h = Harness::new(ws_only());
    let small = h.session.send(h.now, None, Payload::Text("a".into())).unwrap();
    // Within the default limit, over the 1024 bytes the hello will announce.
    let big = h.session.send(h.now, None, Payload::Text("x".repeat(2_000))).unwrap();
    let after = h.session.send(h.now, None, Payload::Text("b".into())).unwrap();
    h.session.connect(h.now);
    let [(ws, ..)] = opened(&h.effects())[..] else { panic!() };
    h.data(ws, &[hello("s1", 0, false)]);
    let events = h.events();
    assert!(events.contains(&Event::SendFailed { id: big, code: ErrorCode::TooLarge, reason: SendError::TooLarge.as_str() }));
    let messages: Vec<Frame> = transmitted(&h.effects()).into_iter().filter(|frame| matches!(frame, Frame::Message(_))).collect();
    assert_eq!(messages, vec![text(1, "a"), text(2, "b")], "the rest go on, numbered without a gap");
    h.data(ws, &[Frame::Ack { seq: 2 }]);
    assert!(h.events().contains(&Event::Delivered { up_to_id: after }));
    assert!(small < after);
    assert_eq!(h.session.outbox_len(), 0);
}

// --- 10. Acks marked sent before they are sent ------------------------------------------------

#[test]
fn an_ack_dropped_with_its_batch_is_sent_on_the_next_connection() {
    let mut h = Harness::new(SessionConfig::default());
    let sse = on_sse_after_fallback(&mut h);
    // An upload is in flight, so the ack that comes due waits in the batch.
    h.session.send(h.now, None, Payload::Text("up".into())).unwrap();
    h.effects();
    h.run_until(h.now + 2_000);
    let [(probe, TransportKind::WebSocket, _)] = opened(&h.effects())[..] else { panic!() };
    h.data(probe, &[hello("probe", 0, false)]);
    let [(migrating, TransportKind::WebSocket, ref url)] = opened(&h.effects())[..] else { panic!() };
    assert!(url.contains("last=0"));
    // Messages arrive on the old stream after the migration presented rt_last=0.
    h.data(sse, &[text(1, "a"), text(2, "b")]);
    h.run_until(h.now + 300);
    assert!(posted_frames(&h.effects()).is_empty(), "the ack waits behind the upload in flight");
    // The new connection takes over; the batch holding the ack is dropped with the old one.
    h.data(migrating, &[hello("s1", 0, true)]);
    h.run_until(h.now + 1_000);
    let frames = transmitted(&h.effects());
    assert!(frames.contains(&Frame::Ack { seq: 2 }), "the ack is owed on the new connection: {frames:?}");
}

// --- 11. A thundering herd after a restart ----------------------------------------------------

#[test]
fn retry_advice_is_spread_over_a_thousand_clients() {
    let mut delays = Vec::new();
    for seed in 1..=1_000u64 {
        let mut h = Harness::new(SessionConfig { jitter_seed: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), ..ws_only() });
        let conn = h.open();
        h.events();
        h.data(conn, &[close(close_code::GOING_AWAY, Retry::AfterMs(1_000))]);
        let [delay] = reconnect_delays(&h.events())[..] else { panic!() };
        delays.push(delay);
    }
    assert!(delays.iter().all(|&delay| (1_000..=1_500).contains(&delay)), "not before the advice, within the jitter");
    let mut per_ms = std::collections::HashMap::new();
    for delay in &delays {
        *per_ms.entry(*delay).or_insert(0) += 1;
    }
    let busiest = per_ms.values().max().copied().unwrap_or(0);
    assert!(busiest <= 12, "{busiest} of 1,000 clients come back in the same millisecond");
    assert!(per_ms.len() >= 300, "only {} distinct delays", per_ms.len());
}

// --- Found in review ---------------------------------------------------------------------------

#[test]
fn a_liveness_check_of_the_replaced_connection_does_not_kill_the_new_one() {
    let mut h = Harness::new(SessionConfig::default());
    let sse = on_sse_after_fallback(&mut h);
    h.session.handle_wake(h.now, Wake::Visible);
    let check_started = h.now;
    let effects = run_until_opened(&mut h, 3_000);
    let [(probe, TransportKind::WebSocket, _)] = opened(&effects)[..] else { panic!("{effects:?}") };
    answer_posts(&mut h, &effects);
    h.data(probe, &[hello("probe", 0, false)]);
    let [(migrating, ..)] = opened(&h.effects())[..] else { panic!() };
    h.data(migrating, &[hello("s1", 0, true)]);
    h.effects();
    assert_eq!(h.session.transport(), Some(TransportKind::WebSocket));
    // The old stream's check would have expired within its grace; the new connection is alive
    // (its heartbeat is 10 s, so silence for less than 15 s is not a loss).
    h.run_until(check_started + 9_000);
    let events = h.events();
    assert!(!events.iter().any(|event| matches!(event, Event::Reconnecting { .. })), "{events:?}");
    assert_eq!(h.session.state(), State::Open);
    let _ = sse;
}

#[test]
fn a_smaller_limit_after_a_resume_never_reuses_a_transmitted_seq() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    let a = h.session.send(h.now, None, Payload::Text("a".repeat(100))).unwrap();
    let b = h.session.send(h.now, None, Payload::Text("b".repeat(1_000))).unwrap();
    let c = h.session.send(h.now, None, Payload::Text("c".into())).unwrap();
    h.effects();
    h.events();
    h.session.handle_input(h.now, Input::Closed { conn, reason: "cut".into() });
    let effects = run_until_opened(&mut h, 2_000);
    let [(resume, ..)] = opened(&effects)[..] else { panic!() };
    // The resumed session now accepts at most 500 bytes; all three went out before.
    h.data(resume, &[hello_with("s1", 10_000, 500, 0, true)]);
    let frames: Vec<Frame> = transmitted(&h.effects()).into_iter().filter(|frame| matches!(frame, Frame::Message(_))).collect();
    let seqs: Vec<(u64, usize)> = frames
        .iter()
        .filter_map(|frame| match frame {
            Frame::Message(Message { seq, payload, .. }) => Some((*seq, payload.len())),
            _ => None,
        })
        .collect();
    // Each seq still names the message it named before (the server may hold it already).
    assert_eq!(seqs, vec![(1, 100), (2, 1_000), (3, 1)]);
    assert!(!h.events().iter().any(|event| matches!(event, Event::SendFailed { .. })));
    assert!(a < b && b < c);
}

#[test]
fn a_probe_answered_by_another_protocol_version_only_fails_the_probe() {
    let mut h = Harness::new(SessionConfig::default());
    on_sse_after_fallback(&mut h);
    let effects = run_until_opened(&mut h, 3_000);
    let [(probe, TransportKind::WebSocket, _)] = opened(&effects)[..] else { panic!() };
    h.events();
    h.data(probe, &[Frame::Hello(Hello {
        version: 3,
        session_id: "x".into(),
        secret: "y".into(),
        heartbeat_ms: 10_000,
        max_body_bytes: 1024,
        ack: 0,
        resumed: false,
    })]);
    assert_eq!(h.session.state(), State::Open, "the session stays on its rung");
    assert_eq!(h.session.transport(), Some(TransportKind::Sse));
    assert!(!h.events().iter().any(|event| matches!(event, Event::Closed { .. })));
}
