//! Trace tests of the transport ladder: the raced fallback, the remembered rung, serialised
//! uploads, background probes and migration, wake signals and suspend, batching.

use super::*;

#[test]
fn a_refused_websocket_costs_nothing_sse_starts_at_once() {
    let mut h = Harness::new(SessionConfig::default());
    h.session.connect(h.now);
    let [(ws, TransportKind::WebSocket, _)] = opened(&h.effects())[..] else { panic!() };
    h.now += 3;
    h.session.handle_input(h.now, Input::Closed { conn: ws, reason: "websocket closed (code 1006)".into() });
    let effects = h.effects();
    assert_eq!(effects[0], Effect::Close { conn: ws });
    let [(sse, TransportKind::Sse, ref url)] = opened(&effects)[..] else { panic!("{effects:?}") };
    assert_eq!(url, "http://127.0.0.1:8080/realtime/sse?room=lobby&rt_v=3&rt_conn=2");
    h.data(sse, &[hello("s1", 0, false)]);
    let events = h.events();
    assert_eq!(
        transport_events(&events),
        vec![(None, TransportKind::Sse, "fallback: websocket failed: websocket closed (code 1006)".into())]
    );
    assert_eq!(h.session.transport(), Some(TransportKind::Sse));
    assert_eq!(h.session.stats().fallbacks, 1);
    assert!(!events.iter().any(|event| matches!(event, Event::Reconnecting { .. })), "no backoff between rungs");
}

#[test]
fn a_blackholed_websocket_and_sse_lead_to_long_polling_within_two_head_starts() {
    // Blackholed: no transport ever opens, so each rung waits out the whole head start.
    let mut h = Harness::new(SessionConfig::default());
    h.session.connect(h.now);
    h.effects();
    h.run_until(1_299);
    assert!(h.effects().is_empty(), "nothing raced before the head start");
    h.run_until(1_300);
    let [(_, TransportKind::Sse, _)] = opened(&h.effects())[..] else { panic!() };
    h.run_until(1_600);
    let [(poll, TransportKind::LongPolling, ref url)] = opened(&h.effects())[..] else { panic!() };
    assert!(url.starts_with("http://127.0.0.1:8080/realtime/poll?room=lobby&rt_v=3&rt_conn=3"));
    h.now = 1_605;
    h.data(poll, &[hello("s1", 0, false), text(1, "first")]);
    assert_eq!(h.session.transport(), Some(TransportKind::LongPolling));
    let effects = h.effects();
    assert_eq!(effects.iter().filter(|effect| matches!(effect, Effect::Close { .. })).count(), 2);
    // The next poll goes out at once and acknowledges what was delivered.
    let polls: Vec<(&str, &[u8])> = effects.iter().filter_map(|effect| match effect {
        Effect::Poll { url, body, .. } => Some((url.as_str(), body.as_slice())),
        _ => None,
    }).collect();
    assert_eq!(polls, vec![("http://127.0.0.1:8080/realtime/poll?room=lobby&rt_v=3&rt_conn=3", &b"session sid=s1 key=secret last=1\n"[..])]);
    assert!(h.events().iter().any(|event| matches!(event, Event::Message { seq: 1, .. })));
}

#[test]
fn every_rung_failing_backs_off_then_retries_from_the_top() {
    let mut h = Harness::new(SessionConfig::default());
    h.session.connect(h.now);
    for _ in 0..3 {
        let [(conn, ..)] = opened(&h.effects())[..] else { panic!() };
        h.session.handle_input(h.now, Input::Closed { conn, reason: "refused".into() });
    }
    let events = h.events();
    assert!(matches!(
        events.last(),
        Some(Event::Reconnecting { attempt: 1, reason, .. }) if reason == "long-polling failed: refused"
    ));
    h.run_until(h.now + 500);
    assert!(matches!(opened(&h.effects())[..], [(_, TransportKind::WebSocket, _)]));
}

#[test]
fn a_reconnect_starts_on_the_rung_that_worked() {
    let mut h = Harness::new(SessionConfig::default());
    h.session.connect(h.now);
    let [(ws, ..)] = opened(&h.effects())[..] else { panic!() };
    h.session.handle_input(h.now, Input::Closed { conn: ws, reason: "refused".into() });
    let [(sse, ..)] = opened(&h.effects())[..] else { panic!() };
    h.data(sse, &[hello("s1", 0, false)]);
    h.session.handle_input(h.now, Input::Closed { conn: sse, reason: "stream broke".into() });
    h.run_until(h.now + 500);
    let effects = h.effects();
    assert!(matches!(opened(&effects)[..], [(_, TransportKind::Sse, _)]), "{effects:?}");
}

#[test]
fn the_remembered_rung_from_an_earlier_page_is_tried_first() {
    let config = SessionConfig { initial_transport: Some(TransportKind::LongPolling), ..SessionConfig::default() };
    let mut h = Harness::new(config);
    h.session.connect(h.now);
    let [(poll, TransportKind::LongPolling, _)] = opened(&h.effects())[..] else { panic!() };
    h.data(poll, &[hello("s1", 0, false)]);
    assert_eq!(
        transport_events(&h.events()),
        vec![(None, TransportKind::LongPolling, "remembered: this transport worked last time".into())]
    );
    assert_eq!(h.session.stats().fallbacks, 0, "nothing failed");
    // Still on a lower rung: the better one gets probed.
    h.run_until(1_000 + 2_000);
    assert!(matches!(opened(&h.effects())[..], [(_, TransportKind::WebSocket, _)]));
}

#[test]
fn upstream_posts_are_serialised_one_at_a_time() {
    let mut h = Harness::new(SessionConfig { transports: vec![TransportKind::Sse], ..SessionConfig::default() });
    h.session.connect(h.now);
    let [(sse, ..)] = opened(&h.effects())[..] else { panic!() };
    h.data(sse, &[hello("s1", 0, false)]);
    let effects = h.effects();
    assert_eq!(posted(&effects), vec![Frame::Ping { time: 1_000 }]);
    let Effect::Post { url, .. } = effects.iter().find(|effect| matches!(effect, Effect::Post { .. })).unwrap() else { panic!() };
    assert_eq!(url, "http://127.0.0.1:8080/realtime/send?room=lobby&rt_v=3&rt_conn=1");
    h.session.send(h.now, None, Payload::Binary(vec![1, 2, 3])).unwrap();
    h.session.send(h.now, None, Payload::Text("b".into())).unwrap();
    assert!(posted(&h.effects()).is_empty(), "a POST is in flight");
    h.session.handle_input(h.now, Input::Posted { conn: sse });
    assert_eq!(
        posted(&h.effects()),
        vec![
            Frame::Message(Message { seq: 1, event: None, payload: Payload::Binary(vec![1, 2, 3]) }),
            text(2, "b"),
        ]
    );
    // A failed POST is a failed connection.
    h.session.handle_input(h.now, Input::Closed { conn: sse, reason: "upload failed: HTTP 500".into() });
    assert_eq!(h.session.state(), State::Reconnecting);
}

#[test]
fn a_probe_proves_the_better_rung_then_the_session_migrates_without_loss_or_double() {
    let mut h = Harness::new(SessionConfig::default());
    let sse = on_sse_after_fallback(&mut h);
    h.data(sse, &[text(1, "a"), text(2, "b")]);
    let unacked = h.session.send(h.now, None, Payload::Text("up".into())).unwrap();
    // The task ends: its flush posts the message, with the ack that was due.
    h.effects();
    h.events();
    // The probe comes within the first upgrade delay (1 to 2 s).
    let probe_at = h.session.poll_timeout().unwrap();
    assert!((1_000 + 1_000..=1_000 + 2_000).contains(&probe_at), "probe at {probe_at}");
    h.run_until(1_000 + 2_000);
    let effects = h.effects();
    let [(probe, TransportKind::WebSocket, ref url)] = opened(&effects)[..] else { panic!("{effects:?} {probe_at}") };
    assert!(url.ends_with("rt_probe=1") && !url.contains("sid="), "{url}");
    assert_eq!(h.session.transport(), Some(TransportKind::Sse), "nothing moves before the proof");

    // The probe says hello: it is dropped and the session resumes on the WebSocket.
    h.data(probe, &[hello("throwaway", 0, false)]);
    let effects = h.effects();
    assert!(effects.contains(&Effect::Close { conn: probe }));
    let [(migrating, TransportKind::WebSocket, ref url)] = opened(&effects)[..] else { panic!() };
    assert!(url.ends_with("session sid=s1 key=secret last=2"), "{url}");

    // The old stream still delivers until the server moves the session.
    h.data(sse, &[text(3, "c")]);
    h.data(migrating, &[hello("s1", 0, true), text(3, "c"), text(4, "d")]);
    let events = h.events();
    assert_eq!(
        transport_events(&events),
        vec![(Some(TransportKind::Sse), TransportKind::WebSocket, "upgrade: the better transport works again".into())]
    );
    assert!(!events.iter().any(|event| matches!(event, Event::Open { .. } | Event::Reset { .. })));
    assert_eq!(h.session.transport(), Some(TransportKind::WebSocket));
    assert_eq!(h.session.stats().upgrades, 1);
    // The unacked message goes again on the new transport.
    let frames = transmitted(&h.effects());
    assert!(frames.contains(&text(1, "up")), "{frames:?}");
    // Late frames on the draining stream are deduplicated, then its close drops it.
    h.data(sse, &[text(4, "d"), Frame::Close(Close { code: 4004, reason: "replaced".into(), retry: Retry::Default })]);
    assert_eq!(h.session.connection_count(), 1);
    h.data(migrating, &[text(5, "e"), Frame::Ack { seq: 1 }]);
    let events = h.events();
    assert!(events.contains(&Event::Delivered { up_to_id: unacked }));
    assert_eq!(h.session.state(), State::Open);
    assert_eq!(h.session.stats().messages_in, 5, "a b c d e, each once");
}

#[test]
fn a_failed_probe_backs_off_and_the_session_stays_put() {
    let mut h = Harness::new(SessionConfig::default());
    let sse = on_sse_after_fallback(&mut h);
    let mut probes = Vec::new();
    let mut last = h.now;
    for _ in 0..4 {
        let at = h.session.poll_timeout().unwrap();
        h.run_until(at);
        // Heartbeat pings may come first; wait for the probe.
        let mut found = opened(&h.effects());
        while found.is_empty() {
            h.data(sse, &[Frame::Ping { time: h.now }]);
            let at = h.session.poll_timeout().unwrap();
            h.run_until(at);
            found = opened(&h.effects());
        }
        let (probe, kind, _) = found[0].clone();
        assert_eq!(kind, TransportKind::WebSocket);
        probes.push(h.now - last);
        h.session.handle_input(h.now, Input::Closed { conn: probe, reason: "refused".into() });
        last = h.now;
        h.data(sse, &[Frame::Ping { time: h.now }]);
    }
    assert_eq!(h.session.transport(), Some(TransportKind::Sse));
    assert_eq!(h.session.state(), State::Open);
    assert!(probes[3] > probes[0], "probes back off: {probes:?}");
}

#[test]
fn a_migration_the_server_cannot_resume_is_a_reset_and_the_old_stream_is_dropped() {
    let mut h = Harness::new(SessionConfig::default());
    let sse = on_sse_after_fallback(&mut h);
    h.run_until(1_000 + 2_000);
    let [(probe, ..)] = opened(&h.effects())[..] else { panic!() };
    h.data(probe, &[hello("x", 0, false)]);
    let [(migrating, ..)] = opened(&h.effects())[..] else { panic!() };
    h.data(migrating, &[hello("s2", 0, false)]);
    let events = h.events();
    assert_eq!(events.iter().filter(|event| matches!(event, Event::Reset { .. })).count(), 1);
    assert!(h.effects().contains(&Effect::Close { conn: sse }));
    assert_eq!(h.session.session_id(), Some("s2"));
}

#[test]
fn no_probe_on_the_best_rung_or_when_upgrades_are_off() {
    let mut h = Harness::new(SessionConfig { upgrade: None, ..SessionConfig::default() });
    let sse = on_sse_after_fallback(&mut h);
    let mut seen = Vec::new();
    for step in 1..=20 {
        h.run_until(1_000 + step * 10_000);
        h.data(sse, &[Frame::Ping { time: h.now }]);
        // The server answers every upload (the pongs), or the upload timeout would fire.
        for effect in h.effects() {
            if let Effect::Post { conn, .. } = effect {
                h.session.handle_input(h.now, Input::Posted { conn });
            }
            seen.push(effect);
        }
    }
    assert_eq!(h.session.state(), State::Open);
    assert!(opened(&seen).is_empty(), "no probe when upgrades are off");

    let mut h = Harness::new(SessionConfig::default());
    let conn = h.open_default_websocket();
    for step in 1..=20 {
        h.run_until(1_000 + step * 10_000);
        h.data(conn, &[Frame::Ping { time: h.now }]);
    }
    assert!(opened(&h.effects()).is_empty(), "no probe on the best rung");
}

#[test]
fn the_old_stream_closing_before_the_new_hello_is_a_handover_not_a_loss() {
    let mut h = Harness::new(SessionConfig::default());
    let sse = on_sse_after_fallback(&mut h);
    h.data(sse, &[text(1, "a")]);
    h.run_until(1_000 + 2_000);
    let [(probe, ..)] = opened(&h.effects())[..] else { panic!() };
    h.data(probe, &[hello("x", 0, false)]);
    let [(migrating, ..)] = opened(&h.effects())[..] else { panic!() };
    // The server retires the old stream first (its close frame says retry=no) ...
    h.data(sse, &[text(2, "b"), Frame::Close(Close { code: 4004, reason: "replaced".into(), retry: Retry::Never })]);
    assert_eq!(h.session.state(), State::Open);
    assert_eq!(h.session.transport(), None, "between transports");
    let queued = h.session.send(h.now, None, Payload::Text("meanwhile".into())).unwrap();
    assert!(transmitted(&h.effects()).is_empty() && posted(&h.effects()).is_empty());
    // ... then the new connection says hello and replays from what was delivered.
    h.data(migrating, &[hello("s1", 0, true), text(2, "b"), text(3, "c")]);
    let events = h.events();
    let seqs: Vec<u64> = events.iter().filter_map(|event| match event {
        Event::Message { seq, .. } => Some(*seq),
        _ => None,
    }).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(
        transport_events(&events),
        vec![(Some(TransportKind::Sse), TransportKind::WebSocket, "upgrade: the better transport works again".into())]
    );
    assert!(transmitted(&h.effects()).contains(&text(1, "meanwhile")));
    h.data(migrating, &[Frame::Ack { seq: 1 }]);
    assert!(h.events().contains(&Event::Delivered { up_to_id: queued }));
}

#[test]
fn a_racing_connection_retired_by_the_server_is_dropped_without_a_protocol_error() {
    let mut h = Harness::new(SessionConfig::default());
    h.session.connect(h.now);
    let [(ws, ..)] = opened(&h.effects())[..] else { panic!() };
    h.data(ws, &[Frame::Close(Close { code: 4004, reason: "replaced".into(), retry: Retry::Never })]);
    let events = h.events();
    assert!(!events.iter().any(|event| matches!(event, Event::Error { message, .. } if message.starts_with("protocol"))));
    assert_eq!(h.session.state(), State::Connecting);
}

// --- Liveness and the page lifecycle -------------------------------------------------

#[test]
fn a_late_timer_checks_before_it_declares_the_connection_dead() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.effects();
    h.events();
    // The tab was frozen for a minute: the first thing that runs is the timer.
    h.now = 61_000;
    h.session.handle_timeout(h.now);
    assert_eq!(h.session.state(), State::Open, "throttling alone is no disconnect");
    assert_eq!(transmitted(&h.effects()), vec![Frame::Ping { time: 61_000 }]);
    // The socket had data waiting: it arrives, and the connection lives on.
    h.data(conn, &[Frame::Pong { time: 61_000 }]);
    h.run_until(61_000 + 9_000);
    assert_eq!(h.session.state(), State::Open);

    // Frozen again, and this time the connection really is dead: found within the grace.
    h.now = 200_000;
    h.session.handle_timeout(h.now);
    assert_eq!(h.session.state(), State::Open);
    h.run_until(200_000 + 5_000);
    assert_eq!(h.session.state(), State::Reconnecting);
    assert!(h.events().iter().any(|event| matches!(
        event,
        Event::Reconnecting { reason, .. } if reason == "liveness check failed: no answer from the server"
    )));
}

#[test]
fn offline_makes_the_connection_suspect_and_a_silent_one_is_replaced() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.effects();
    h.now += 100;
    h.session.handle_wake(h.now, Wake::Offline);
    h.session.handle_wake(h.now, Wake::Offline);
    assert_eq!(transmitted(&h.effects()), vec![Frame::Ping { time: h.now }], "one check for two signals");
    h.run_until(h.now + 5_000);
    assert!(h.effects().contains(&Effect::Close { conn }));
    assert_eq!(h.session.state(), State::Reconnecting);
}

#[test]
fn online_or_visible_while_waiting_to_reconnect_tries_at_once_and_coalesces() {
    let mut h = Harness::new(SessionConfig {
        reconnect: Some(BackoffConfig { initial_delay_ms: 30_000, ..BackoffConfig::default() }),
        ..ws_only()
    });
    let conn = h.open();
    h.session.handle_input(h.now, Input::Closed { conn, reason: "network changed".into() });
    h.effects();
    h.now += 50;
    h.session.handle_wake(h.now, Wake::Online);
    h.session.handle_wake(h.now, Wake::Visible);
    h.session.handle_wake(h.now, Wake::ClockJump);
    let opens = opened(&h.effects());
    assert_eq!(opens.len(), 1, "three signals, one attempt: {opens:?}");
    assert!(opens[0].2.contains("session sid=s1"), "it resumes");
}

#[test]
fn pagehide_suspends_and_pageshow_resumes_the_same_session() {
    let mut h = Harness::new(ws_only());
    let conn = h.open();
    h.data(conn, &[text(1, "a")]);
    h.events();
    h.effects();
    h.session.suspend(h.now);
    assert_eq!(h.effects(), vec![Effect::Close { conn }]);
    assert_eq!(h.session.poll_timeout(), None, "nothing runs while hidden");
    h.now += 60_000;
    h.session.handle_wake(h.now, Wake::PageShow);
    let opens = opened(&h.effects());
    assert!(opens[0].2.ends_with("session sid=s1 key=secret last=1"), "{opens:?}");
}

#[test]
fn a_refusal_stops_the_retries_with_an_error_and_a_close() {
    let mut h = Harness::new(SessionConfig { transports: vec![TransportKind::LongPolling], ..SessionConfig::default() });
    h.session.connect(h.now);
    let [(poll, ..)] = opened(&h.effects())[..] else { panic!() };
    h.session.handle_input(h.now, Input::Refused { conn: poll, reason: "poll failed: HTTP 401".into() });
    let events = h.events();
    assert!(events.contains(&Event::Error { code: ErrorCode::Unauthorized, message: "server refused the client: poll failed: HTTP 401".into() }));
    assert_eq!(events.last(), Some(&Event::Closed { code: 4001, reason: "poll failed: HTTP 401".into(), cause: ErrorCode::Unauthorized }));
    assert_eq!(h.session.poll_timeout(), None);
}

#[test]
fn batches_stay_within_the_batch_limit_and_keep_order() {
    let mut h = Harness::new(SessionConfig { transports: vec![TransportKind::Sse], ..SessionConfig::default() });
    h.session.connect(h.now);
    let [(sse, ..)] = opened(&h.effects())[..] else { panic!() };
    let mut first_hello = hello("s1", 0, false);
    if let Frame::Hello(hello) = &mut first_hello {
        hello.max_body_bytes = 1 << 20;
    }
    h.data(sse, &[first_hello]);
    h.session.handle_input(h.now, Input::Posted { conn: sse });
    h.effects();
    for index in 0..100 {
        h.session.send(h.now, None, Payload::Binary(vec![index as u8; 2_000])).unwrap();
    }
    let mut seqs = Vec::new();
    for _ in 0..10 {
        for effect in h.effects() {
            if let Effect::Post { body, .. } = effect {
                assert!(body.len() <= MAX_BATCH_BYTES, "{} bytes", body.len());
                for frame in wire::decode_all(&body, 1 << 20).unwrap() {
                    if let Frame::Message(message) = frame {
                        seqs.push(message.seq);
                    }
                }
            }
        }
        h.session.handle_input(h.now, Input::Posted { conn: sse });
    }
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
}
