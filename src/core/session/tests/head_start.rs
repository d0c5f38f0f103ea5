//! Trace tests of the head start: a rung whose transport opened but said no hello is raced
//! early; a working one still wins; a blackholed one keeps the whole head start; slow networks,
//! remembered rungs and hostile timing of `Opened`.

use super::*;

/// connect() with the default ladder; returns the WebSocket candidate (opened at 1,000).
fn connect_default(h: &mut Harness) -> ConnId {
    h.session.connect(h.now);
    let [(ws, TransportKind::WebSocket, _)] = opened(&h.effects())[..] else { panic!() };
    ws
}

fn opened_at(h: &mut Harness, at: Millis, conn: ConnId) {
    h.now = at;
    h.session.handle_input(at, Input::Opened { conn });
}

#[test]
fn an_accepted_then_silent_websocket_races_sse_once_silent_as_long_as_opening_took() {
    let mut h = Harness::new(SessionConfig::default());
    let ws = connect_default(&mut h);
    opened_at(&mut h, 1_004, ws); // Upgraded after 4 ms on loopback, then silence.
    assert_eq!(h.session.poll_timeout(), Some(1_104), "4 ms to open, clamped up to the 100 ms floor");
    h.run_until(1_103);
    assert!(h.effects().is_empty());
    h.run_until(1_104);
    let [(sse, TransportKind::Sse, _)] = opened(&h.effects())[..] else { panic!() };
    assert_eq!(h.session.connection_count(), 2, "raced, not replaced");
    assert_eq!(h.session.poll_timeout(), Some(1_404), "the next rung gets the whole head start again");
    h.now = 1_110;
    h.data(sse, &[hello("s1", 0, false)]);
    assert_eq!(h.effects().iter().filter(|effect| **effect == Effect::Close { conn: ws }).count(), 1, "loser closed");
    assert_eq!(
        transport_events(&h.events()),
        vec![(None, TransportKind::Sse, "fallback: a better transport gave no hello in time".into())]
    );
    // Both hellos arrive: the loser's late one is ignored.
    h.data(ws, &[hello("s-other", 0, false)]);
    assert_eq!(h.session.session_id(), Some("s1"));
    assert_eq!(h.session.transport(), Some(TransportKind::Sse));
    assert_eq!(h.session.connection_count(), 1);
}

#[test]
fn the_grace_is_the_time_opening_took_clamped_to_100_ms_and_the_head_start() {
    // (ms from open to `Opened`, when SSE is raced). Never later than the 300 ms head start.
    for (took, race_at) in [(0, 1_100), (4, 1_104), (60, 1_160), (120, 1_240), (150, 1_300), (180, 1_300), (299, 1_300)] {
        let mut h = Harness::new(SessionConfig::default());
        let ws = connect_default(&mut h);
        opened_at(&mut h, 1_000 + took, ws);
        assert_eq!(h.session.poll_timeout(), Some(race_at), "opened after {took} ms");
        h.run_until(race_at);
        assert!(matches!(opened(&h.effects())[..], [(_, TransportKind::Sse, _)]), "opened after {took} ms");
    }
}

#[test]
fn a_working_websocket_still_wins_alone_and_stays_on_the_top_rung() {
    // The hello right behind the upgrade, and one 95 ms late (a busy server): no race either way.
    for hello_at in [1_005, 1_099] {
        let mut h = Harness::new(SessionConfig::default());
        let ws = connect_default(&mut h);
        opened_at(&mut h, 1_004, ws);
        h.now = hello_at;
        h.data(ws, &[hello("s1", 0, false)]);
        assert_eq!(h.session.transport(), Some(TransportKind::WebSocket));
        assert_eq!(transport_events(&h.events()), vec![(None, TransportKind::WebSocket, "connected".into())]);
        let mut seen = h.effects();
        for step in 1..=6 {
            h.run_until(1_000 + step * 10_000);
            h.data(ws, &[Frame::Ping { time: h.now }]);
            seen.extend(h.effects());
        }
        assert!(opened(&seen).is_empty(), "no other rung opened, no probe on the top rung");
        assert_eq!(h.session.transport(), Some(TransportKind::WebSocket));
        assert_eq!(h.session.stats().fallbacks, 0);
    }
}

#[test]
fn a_websocket_hello_later_than_the_grace_still_wins_the_race_it_started() {
    // 50 ms round trips: TCP and the upgrade take 100 ms, so SSE is raced 100 ms after the open.
    // The hello comes 150 ms after it, before SSE (which needs the same two round trips) can.
    let mut h = Harness::new(SessionConfig::default());
    let ws = connect_default(&mut h);
    opened_at(&mut h, 1_100, ws);
    h.run_until(1_200);
    let [(sse, TransportKind::Sse, _)] = opened(&h.effects())[..] else { panic!() };
    h.now = 1_250;
    h.data(ws, &[hello("s1", 0, false)]);
    assert!(h.effects().contains(&Effect::Close { conn: sse }), "the raced rung is closed");
    assert_eq!(h.session.transport(), Some(TransportKind::WebSocket));
    assert_eq!(transport_events(&h.events()), vec![(None, TransportKind::WebSocket, "connected".into())]);
    assert_eq!(h.session.stats().fallbacks, 0);
    // SSE's hello, on its way meanwhile, is ignored.
    h.session.handle_input(h.now, Input::Opened { conn: sse });
    h.data(sse, &[hello("s-other", 0, false)]);
    assert_eq!(h.session.session_id(), Some("s1"));
    assert_eq!(h.session.connection_count(), 1);
}

#[test]
fn on_a_200_ms_round_trip_network_the_head_start_is_as_before_and_the_websocket_wins() {
    let mut h = Harness::new(SessionConfig::default());
    let ws = connect_default(&mut h);
    h.run_until(1_299);
    assert!(h.effects().is_empty());
    h.run_until(1_300);
    let [(sse, TransportKind::Sse, _)] = opened(&h.effects())[..] else { panic!() };
    // The upgrade comes back after two round trips; an older candidate's open does not pull the
    // third rung forward.
    opened_at(&mut h, 1_400, ws);
    assert_eq!(h.session.poll_timeout(), Some(1_600));
    h.now = 1_401;
    h.data(ws, &[hello("s1", 0, false)]);
    assert!(h.effects().contains(&Effect::Close { conn: sse }));
    assert_eq!(h.session.transport(), Some(TransportKind::WebSocket));
    assert_eq!(h.session.stats().fallbacks, 0);
    h.run_until(1_600);
    assert!(opened(&h.effects()).is_empty(), "long polling never opened");
}

#[test]
fn a_refused_websocket_after_its_open_still_costs_nothing() {
    let mut h = Harness::new(SessionConfig::default());
    let ws = connect_default(&mut h);
    opened_at(&mut h, 1_004, ws);
    h.now = 1_006;
    h.session.handle_input(h.now, Input::Closed { conn: ws, reason: "websocket closed (code 1006)".into() });
    let [(sse, TransportKind::Sse, _)] = opened(&h.effects())[..] else { panic!() };
    assert_eq!(h.session.poll_timeout(), Some(1_306), "the next rung gets the whole head start");
    h.data(sse, &[hello("s1", 0, false)]);
    assert_eq!(h.session.transport(), Some(TransportKind::Sse));
}

#[test]
fn a_blackholed_websocket_that_never_opens_keeps_the_whole_head_start() {
    let mut h = Harness::new(SessionConfig::default());
    connect_default(&mut h);
    assert_eq!(h.session.poll_timeout(), Some(1_300));
    h.run_until(1_299);
    assert!(h.effects().is_empty());
    h.run_until(1_300);
    assert!(matches!(opened(&h.effects())[..], [(_, TransportKind::Sse, _)]));
}

#[test]
fn an_event_stream_that_opens_and_stays_silent_races_long_polling_early() {
    // A proxy that passes the stream's headers and buffers its events.
    let mut h = Harness::new(SessionConfig::default());
    let ws = connect_default(&mut h);
    h.now = 1_002;
    h.session.handle_input(h.now, Input::Closed { conn: ws, reason: "refused".into() });
    let [(sse, TransportKind::Sse, _)] = opened(&h.effects())[..] else { panic!() };
    opened_at(&mut h, 1_005, sse);
    assert_eq!(h.session.poll_timeout(), Some(1_105));
    h.run_until(1_105);
    let [(poll, TransportKind::LongPolling, _)] = opened(&h.effects())[..] else { panic!() };
    h.data(poll, &[hello("s1", 0, false)]);
    assert_eq!(h.session.transport(), Some(TransportKind::LongPolling));
    assert_eq!(h.session.connection_count(), 1);
}

#[test]
fn a_remembered_rung_that_works_opens_alone_and_one_that_opens_silent_races_the_top_rung() {
    let remembered = || SessionConfig { initial_transport: Some(TransportKind::Sse), ..SessionConfig::default() };
    let mut h = Harness::new(remembered());
    h.session.connect(h.now);
    let [(sse, TransportKind::Sse, _)] = opened(&h.effects())[..] else { panic!() };
    opened_at(&mut h, 1_003, sse);
    h.now = 1_004;
    h.data(sse, &[hello("s1", 0, false)]);
    assert_eq!(
        transport_events(&h.events()),
        vec![(None, TransportKind::Sse, "remembered: this transport worked last time".into())]
    );
    assert_eq!(h.session.connection_count(), 1);
    assert!(h.session.poll_timeout().is_some_and(|at| at >= 2_000), "next: the probe, after 1-2 s");

    let mut h = Harness::new(remembered());
    h.session.connect(h.now);
    let [(sse, TransportKind::Sse, _)] = opened(&h.effects())[..] else { panic!() };
    opened_at(&mut h, 1_003, sse);
    h.run_until(1_103);
    let [(ws, TransportKind::WebSocket, _)] = opened(&h.effects())[..] else { panic!() };
    h.data(ws, &[hello("s1", 0, false)]);
    assert_eq!(h.session.transport(), Some(TransportKind::WebSocket));
    assert!(h.effects().contains(&Effect::Close { conn: sse }));
}

#[test]
fn hostile_opens_change_nothing_they_should_not() {
    // Twice: the second, later one does not postpone the race.
    let mut h = Harness::new(SessionConfig::default());
    let ws = connect_default(&mut h);
    opened_at(&mut h, 1_004, ws);
    opened_at(&mut h, 1_090, ws);
    assert_eq!(h.session.poll_timeout(), Some(1_104));

    // After the hello, and from a connection already dropped: no timer, no connection.
    let mut h = Harness::new(SessionConfig::default());
    let ws = connect_default(&mut h);
    h.data(ws, &[hello("s1", 0, false)]);
    let before = h.session.poll_timeout();
    opened_at(&mut h, 1_004, ws);
    assert_eq!(h.session.poll_timeout(), before);
    h.session.handle_input(h.now, Input::Closed { conn: ws, reason: "gone".into() });
    h.effects();
    let before = h.session.poll_timeout();
    opened_at(&mut h, 1_005, ws);
    assert_eq!(h.session.poll_timeout(), before);
    assert!(h.effects().is_empty());

    // From the clock's past (an adapter whose clock stepped back): the 100 ms floor.
    let mut h = Harness::new(SessionConfig::default());
    let ws = connect_default(&mut h);
    opened_at(&mut h, 990, ws);
    assert_eq!(h.session.poll_timeout(), Some(1_090));

    // Minutes late (a frozen tab whose timer has not run yet): the head start's deadline stands
    // and fires at once, without spinning.
    let mut h = Harness::new(SessionConfig::default());
    let ws = connect_default(&mut h);
    opened_at(&mut h, 121_000, ws);
    assert_eq!(h.session.poll_timeout(), Some(1_300));
    h.advance_to(121_000);
    assert!(matches!(opened(&h.effects())[..], [(_, TransportKind::Sse, _)]));

    // On the last rung nothing is left to race.
    let mut h = Harness::new(SessionConfig { transports: vec![TransportKind::WebSocket], ..SessionConfig::default() });
    let ws = connect_default(&mut h);
    opened_at(&mut h, 1_004, ws);
    assert_eq!(h.session.poll_timeout(), Some(6_000), "only the connect timeout");
}
