//! Protocol v3's credentials (PROTOCOL.md §9): opening frames on each transport, the token
//! source asked before every connect round, the in-band refresh, and the refusals.

use super::*;
use crate::core::wire::{close_code, ChannelMessage, Close, HelloAuth, Position, Retry};

fn with_token(transports: Vec<TransportKind>) -> SessionConfig {
    SessionConfig { transports, token_source: true, ..SessionConfig::default() }
}

fn auth_hello(session_id: &str, resumed: bool, exp: Option<u64>) -> Frame {
    let Frame::Hello(hello) = hello(session_id, 0, resumed) else { unreachable!() };
    Frame::AuthHello(hello, HelloAuth { expires_in_ms: exp, subject: Some("alice".into()) })
}

fn refused(code: u16, retry: Retry) -> Frame {
    Frame::Close(Close { code, reason: "token expired".into(), retry })
}

fn need_token(effects: &[Effect]) -> usize {
    effects.iter().filter(|effect| **effect == Effect::NeedToken).count()
}

fn errors(events: &[Event]) -> Vec<(ErrorCode, String)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Error { code, message } => Some((*code, message.clone())),
            _ => None,
        })
        .collect()
}

/// Runs the clock timer by timer until the token source is asked (the next round's ask, after a
/// backoff): the effects up to and including that ask. Stopping at the ask keeps it answerable
/// (an ask left unanswered for its deadline fails, and the round after asks again).
fn until_asked(h: &mut Harness) -> Vec<Effect> {
    let limit = h.now + 120_000;
    let mut seen = Vec::new();
    while let Some(at) = h.session.poll_timeout().filter(|&at| at <= limit) {
        h.run_until(at.max(h.now));
        seen.extend(h.effects());
        if need_token(&seen) > 0 {
            break;
        }
    }
    seen
}

/// connect() on the one rung `kind`; the source answers `token`; returns the Open effect.
fn connect_with(h: &mut Harness, token: &str) -> (ConnId, String, Vec<u8>) {
    h.session.connect(h.now);
    let effects = h.effects();
    assert_eq!(effects, vec![Effect::NeedToken], "nothing opens before the credential");
    h.session.handle_input(h.now, Input::TokenReady(Some(wire::Credential(token.into()))));
    match h.effects().as_slice() {
        [Effect::Open { conn, url, body, .. }] => (*conn, url.clone(), body.clone()),
        other => panic!("{other:?}"),
    }
}

/// Runs the clock to `until` with the server saying something every second (a silent server
/// would be declared dead, and the reconnect would ask for a token of its own).
fn live_until(h: &mut Harness, conn: ConnId, until: Millis) {
    while h.now + 1_000 < until {
        let next = h.now + 1_000;
        h.run_until(next);
        h.data(conn, &[Frame::Ping { time: next }]);
    }
    h.run_until(until);
}

/// An open WebSocket session whose credential expires in `exp` ms.
fn open_ws(h: &mut Harness, exp: Option<u64>) -> ConnId {
    let (conn, ..) = connect_with(h, "tok-1");
    h.session.handle_input(h.now, Input::Opened { conn });
    h.data(conn, &[auth_hello("s1", false, exp)]);
    h.effects();
    h.events();
    conn
}

#[test]
fn the_websockets_first_message_is_session_and_token_and_the_url_holds_no_secret() {
    let mut h = Harness::new(with_token(vec![TransportKind::WebSocket]));
    let (conn, url, body) = connect_with(&mut h, "tok-1");
    assert_eq!(url, "ws://127.0.0.1:8080/realtime?room=lobby&rt_v=3&rt_conn=1");
    assert_eq!(body, b"session\ntoken n=5\ntok-1");
    h.session.handle_input(h.now, Input::Opened { conn });
    h.data(conn, &[auth_hello("s1", false, None)]);
    assert_eq!(h.session.state(), State::Open);
    // A lost connection: the next round asks again, and resumes with the new credential.
    h.session.handle_input(h.now, Input::Closed { conn, reason: "cut".into() });
    h.effects();
    let effects = until_asked(&mut h);
    assert_eq!(need_token(&effects), 1, "{effects:?}");
    assert!(opened(&effects).is_empty(), "the round waits for the credential");
    h.session.handle_input(h.now, Input::TokenReady(Some(wire::Credential("tok-2".into()))));
    let [(_, _, ref opening)] = opened(&h.effects())[..] else { panic!() };
    assert!(opening.ends_with("rt_conn=2 session sid=s1 key=secret last=0\ntoken n=5\ntok-2"), "{opening}");
}

#[test]
fn without_a_token_source_nothing_is_asked_and_no_token_frame_is_sent() {
    let mut h = Harness::new(ws_only());
    h.session.connect(h.now);
    let effects = h.effects();
    assert!(matches!(&effects[..], [Effect::Open { body, .. }] if body == b"session\n"), "{effects:?}");
}

#[test]
fn polls_are_posts_whose_body_names_the_session_and_the_attach_carries_the_token() {
    let mut h = Harness::new(with_token(vec![TransportKind::LongPolling]));
    let (conn, url, body) = connect_with(&mut h, "tok-1");
    assert_eq!(url, "http://127.0.0.1:8080/realtime/poll?room=lobby&rt_v=3&rt_conn=1");
    assert_eq!(body, b"session\ntoken n=5\ntok-1");
    h.data(conn, &[auth_hello("s1", false, None), text(1, "a")]);
    let effects = h.effects();
    let polls: Vec<(&str, &[u8])> = effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Poll { url, body, .. } => Some((url.as_str(), body.as_slice())),
            _ => None,
        })
        .collect();
    assert_eq!(polls, vec![("http://127.0.0.1:8080/realtime/poll?room=lobby&rt_v=3&rt_conn=1", &b"session sid=s1 key=secret last=1\n"[..])]);
    // Uploads start with the session, no `last`, and their URL holds no secret either.
    let post = effects.iter().find_map(|effect| match effect {
        Effect::Post { url, body, .. } => Some((url.clone(), body.clone())),
        _ => None,
    });
    let (url, body) = post.expect("the RTT ping is uploaded");
    assert_eq!(url, "http://127.0.0.1:8080/realtime/send?room=lobby&rt_v=3&rt_conn=1");
    assert!(body.starts_with(b"session sid=s1 key=secret\n"), "{}", String::from_utf8_lossy(&body));
}

#[test]
fn an_event_stream_binds_on_pending_and_its_hello_comes_on_the_stream() {
    let mut h = Harness::new(with_token(vec![TransportKind::Sse]));
    let (conn, url, body) = connect_with(&mut h, "tok-1");
    assert_eq!(url, "http://127.0.0.1:8080/realtime/sse?room=lobby&rt_v=3&rt_conn=1");
    assert!(body.is_empty());
    h.session.handle_input(h.now, Input::Opened { conn });
    h.data(conn, &[Frame::Pending { stream: "abc".into() }]);
    let effects = h.effects();
    let [Effect::Post { conn: bound, url, body }] = &effects[..] else { panic!("{effects:?}") };
    assert_eq!((*bound, url.as_str()), (conn, "http://127.0.0.1:8080/realtime/bind?room=lobby&rt_v=3&rt_conn=1"));
    assert_eq!(body, b"session stream=abc\ntoken n=5\ntok-1");
    // The hello may beat the bind's answer: uploads wait for that answer.
    h.data(conn, &[auth_hello("s1", false, None)]);
    assert_eq!(h.session.state(), State::Open);
    assert!(posted(&h.effects()).is_empty(), "no upload before the bind is answered");
    h.session.handle_input(h.now, Input::Posted { conn });
    assert_eq!(posted(&h.effects()), vec![Frame::Ping { time: h.now }]);
}

#[test]
fn a_second_pending_is_a_protocol_error_and_a_refused_bind_fails_the_attempt() {
    let mut h = Harness::new(with_token(vec![TransportKind::Sse]));
    let (conn, ..) = connect_with(&mut h, "tok-1");
    h.data(conn, &[Frame::Pending { stream: "abc".into() }]);
    h.effects();
    h.data(conn, &[Frame::Pending { stream: "abc".into() }]);
    assert!(h.effects().contains(&Effect::Close { conn }));
    assert!(errors(&h.events()).iter().any(|(code, _)| *code == ErrorCode::Protocol));
    assert_eq!(h.session.state(), State::Reconnecting);

    // The next attempt: the bind is answered 404 (the adapter reports the POST failed).
    assert_eq!(need_token(&until_asked(&mut h)), 1);
    h.session.handle_input(h.now, Input::TokenReady(Some(wire::Credential("tok-2".into()))));
    let [(conn, ..)] = opened(&h.effects())[..] else { panic!() };
    h.data(conn, &[Frame::Pending { stream: "def".into() }]);
    let bind = h.effects();
    assert!(matches!(&bind[..], [Effect::Post { body, .. }] if body.ends_with(b"tok-2")), "a new credential: {bind:?}");
    h.session.handle_input(h.now, Input::Closed { conn, reason: "upload failed: HTTP 404".into() });
    assert!(h.effects().contains(&Effect::Close { conn }));
    assert_eq!(h.session.state(), State::Reconnecting);
}

#[test]
fn a_bind_answered_after_its_connection_lost_the_race_is_ignored() {
    let mut h = Harness::new(with_token(vec![TransportKind::Sse, TransportKind::LongPolling]));
    let (sse, ..) = connect_with(&mut h, "tok-1");
    h.data(sse, &[Frame::Pending { stream: "abc".into() }]);
    h.effects();
    h.run_until(h.now + 300);
    let [(poll, TransportKind::LongPolling, ref opening)] = opened(&h.effects())[..] else { panic!() };
    assert!(opening.ends_with("\ntoken n=5\ntok-1"), "the round's candidates share its credential: {opening}");
    h.data(poll, &[auth_hello("s1", false, None)]);
    assert!(h.effects().contains(&Effect::Close { conn: sse }));
    h.session.handle_input(h.now, Input::Posted { conn: sse });
    h.data(sse, &[auth_hello("s2", false, None)]);
    assert_eq!(h.session.session_id(), Some("s1"));
    assert_eq!(h.session.transport(), Some(TransportKind::LongPolling));
}

#[test]
fn the_refresh_goes_out_ahead_of_expiry_and_authed_reschedules_it() {
    let mut h = Harness::new(with_token(vec![TransportKind::WebSocket]));
    let start = h.now;
    let conn = open_ws(&mut h, Some(60_000));
    // exp - min(30 s, exp / 3) = 40 s.
    live_until(&mut h, conn, start + 39_999);
    assert_eq!(need_token(&h.effects()), 0);
    h.run_until(start + 40_000);
    assert_eq!(need_token(&h.effects()), 1);
    h.session.handle_input(h.now, Input::TokenReady(Some(wire::Credential("tok-2".into()))));
    assert_eq!(transmitted(&h.effects()), vec![Frame::Token(wire::Credential("tok-2".into()))]);
    h.data(conn, &[Frame::Authed { expires_in_ms: Some(120_000) }]);
    // 120 s - 30 s.
    let at = h.now;
    live_until(&mut h, conn, at + 89_999);
    assert_eq!(need_token(&h.effects()), 0);
    h.run_until(at + 90_000);
    assert_eq!(need_token(&h.effects()), 1);
    assert_eq!(h.session.state(), State::Open);
}

#[test]
fn over_http_the_refresh_rides_in_the_next_upload() {
    let mut h = Harness::new(with_token(vec![TransportKind::LongPolling]));
    let (conn, ..) = connect_with(&mut h, "tok-1");
    h.data(conn, &[auth_hello("s1", false, Some(9_000))]);
    h.effects();
    h.session.handle_input(h.now, Input::Posted { conn });
    h.run_until(h.now + 6_000);
    assert_eq!(need_token(&h.effects()), 1);
    h.session.handle_input(h.now, Input::TokenReady(Some(wire::Credential("tok-2".into()))));
    let frames = posted(&h.effects());
    assert!(frames.contains(&Frame::Token(wire::Credential("tok-2".into()))), "{frames:?}");
}

#[test]
fn a_failed_refresh_retries_with_backoff_until_expiry_then_stops() {
    let mut h = Harness::new(with_token(vec![TransportKind::WebSocket]));
    let start = h.now;
    let conn = open_ws(&mut h, Some(9_000));
    live_until(&mut h, conn, start + 6_000);
    assert_eq!(need_token(&h.effects()), 1);
    h.session.handle_input(h.now, Input::TokenFailed { reason: "offline".into() });
    assert!(errors(&h.events()).iter().any(|(code, message)| *code == ErrorCode::Unauthorized && message.contains("offline")));
    // The first retry 1 s later; the second would come 2 s after that, at the expiry: none.
    live_until(&mut h, conn, start + 6_999);
    assert_eq!(need_token(&h.effects()), 0);
    h.run_until(start + 7_000);
    assert_eq!(need_token(&h.effects()), 1);
    h.session.handle_input(h.now, Input::TokenFailed { reason: "offline".into() });
    live_until(&mut h, conn, start + 9_500);
    assert_eq!(need_token(&h.effects()), 0);
    assert_eq!(h.session.state(), State::Open, "the server ends it at expiry, not the client");
}

#[test]
fn an_authed_without_a_refresh_and_an_answer_nobody_waits_for_change_nothing_else() {
    let mut h = Harness::new(with_token(vec![TransportKind::WebSocket]));
    let conn = open_ws(&mut h, None);
    let until = h.now + 30_000;
    live_until(&mut h, conn, until);
    assert_eq!(need_token(&h.effects()), 0, "no refresh without exp");
    h.data(conn, &[Frame::Authed { expires_in_ms: Some(3_000) }]);
    h.session.handle_input(h.now, Input::TokenReady(Some(wire::Credential("stray".into()))));
    h.session.handle_input(h.now, Input::TokenFailed { reason: "stray".into() });
    assert!(transmitted(&h.effects()).is_empty());
    assert!(h.events().is_empty());
    h.run_until(h.now + 2_000);
    assert_eq!(need_token(&h.effects()), 1, "the authed's exp scheduled a refresh");
}

#[test]
fn exp_zero_refreshes_at_once_without_spinning_and_a_huge_exp_never_overflows() {
    let mut h = Harness::new(with_token(vec![TransportKind::WebSocket]));
    let conn = open_ws(&mut h, Some(0));
    let at = h.session.poll_timeout().unwrap();
    assert!(at > h.now && at <= h.now + 1, "{at}");
    h.run_until(h.now + 1);
    assert_eq!(need_token(&h.effects()), 1);
    let until = h.now + 1_000;
    live_until(&mut h, conn, until);
    assert_eq!(need_token(&h.effects()), 0, "one ask until it is answered");
    h.session.handle_input(h.now, Input::TokenReady(Some(wire::Credential("tok-2".into()))));
    h.effects();
    h.data(conn, &[Frame::Authed { expires_in_ms: Some(u64::MAX) }]);
    let until = h.now + 100_000;
    live_until(&mut h, conn, until);
    assert_eq!(need_token(&h.effects()), 0);
    assert_eq!(h.session.state(), State::Open);
}

#[test]
fn a_refused_credential_reconnects_at_once_once_then_with_backoff() {
    let mut h = Harness::new(with_token(vec![TransportKind::WebSocket]));
    let conn = open_ws(&mut h, Some(60_000));
    h.data(conn, &[refused(4005, Retry::AfterMs(0))]);
    let events = h.events();
    assert!(errors(&events).iter().any(|(code, _)| *code == ErrorCode::Unauthorized), "{events:?}");
    assert!(events.iter().any(|event| matches!(event, Event::Reconnecting { delay_ms: 0, .. })), "{events:?}");
    assert!(!events.iter().any(|event| matches!(event, Event::Closed { .. })));
    let effects = h.effects();
    assert!(effects.contains(&Effect::Close { conn }));
    assert_eq!(need_token(&effects), 1, "a new credential at once: {effects:?}");
    h.session.handle_input(h.now, Input::TokenReady(Some(wire::Credential("tok-2".into()))));
    let [(conn, ..)] = opened(&h.effects())[..] else { panic!() };
    // Refused again before the hello: now the backoff.
    h.data(conn, &[refused(4005, Retry::AfterMs(0))]);
    let events = h.events();
    assert_eq!(errors(&events).len(), 1);
    let delay = events.iter().find_map(|event| match event {
        Event::Reconnecting { delay_ms, .. } => Some(*delay_ms),
        _ => None,
    });
    assert!(delay.is_some_and(|delay| delay >= 1), "{events:?}");
    assert_eq!(need_token(&h.effects()), 0);
    assert_eq!(need_token(&until_asked(&mut h)), 1);
    h.session.handle_input(h.now, Input::TokenReady(Some(wire::Credential("tok-3".into()))));
    let [(conn, ..)] = opened(&h.effects())[..] else { panic!() };
    h.data(conn, &[auth_hello("s1", true, Some(60_000))]);
    assert_eq!(h.session.state(), State::Open);
}

#[test]
fn a_refused_principal_ends_the_client() {
    let mut h = Harness::new(with_token(vec![TransportKind::WebSocket]));
    let (conn, ..) = connect_with(&mut h, "tok-1");
    h.data(conn, &[refused(close_code::UNAUTHORIZED, Retry::Never)]);
    let events = h.events();
    assert!(errors(&events).iter().any(|(code, _)| *code == ErrorCode::Unauthorized));
    assert!(events.iter().any(|event| matches!(event, Event::Closed { cause: ErrorCode::Unauthorized, .. })));
    assert_eq!(h.session.state(), State::Closed);
    assert_eq!(need_token(&h.effects()), 0);
}

#[test]
fn a_failing_token_source_at_connect_backs_off_and_asks_again() {
    let mut h = Harness::new(with_token(vec![TransportKind::WebSocket]));
    h.session.connect(h.now);
    assert_eq!(need_token(&h.effects()), 1);
    h.session.handle_input(h.now, Input::TokenFailed { reason: "no session cookie".into() });
    let events = h.events();
    assert!(errors(&events).iter().any(|(code, message)| *code == ErrorCode::Unauthorized && message.contains("no session cookie")));
    assert!(events.iter().any(|event| matches!(event, Event::Reconnecting { .. })));
    assert!(h.effects().is_empty());
    assert_eq!(need_token(&until_asked(&mut h)), 1);
}

#[test]
fn a_message_names_its_verified_sender() {
    let mut h = Harness::new(SessionConfig { room: Some("lobby".into()), ..ws_only() });
    let conn = h.open();
    h.effects();
    let message = ChannelMessage {
        channel: "lobby".into(),
        position: Some(Position { epoch: 7, offset: 1 }),
        message: Message { seq: 2, event: None, payload: Payload::Text("hi".into()) },
    };
    h.data(conn, &[
        Frame::Subscribed { seq: 1, channel: "lobby".into(), position: Position { epoch: 7, offset: 0 }, recovered: false, reply_to: None },
        Frame::Attributed { subject: "alice smith".into(), message },
    ]);
    let from: Vec<Option<String>> = h
        .events()
        .into_iter()
        .filter_map(|event| match event {
            Event::ChannelMessage { from, .. } => Some(from),
            _ => None,
        })
        .collect();
    assert_eq!(from, vec![Some("alice smith".to_owned())]);
}

#[test]
fn a_token_source_that_never_answers_fails_after_its_deadline_and_is_asked_again() {
    use crate::core::session::auth::TOKEN_ASK_TIMEOUT_MS;
    let mut h = Harness::new(with_token(vec![TransportKind::WebSocket]));
    h.session.connect(h.now);
    assert_eq!(need_token(&h.effects()), 1);
    let asked = h.now;
    // Silence up to just before the deadline: still connecting, nothing opened, no error.
    h.run_until(asked + TOKEN_ASK_TIMEOUT_MS - 1);
    assert!(h.effects().is_empty());
    assert!(errors(&h.events()).is_empty());
    // At the deadline the ask fails like a source that threw: an error, then the backoff.
    h.run_until(asked + TOKEN_ASK_TIMEOUT_MS);
    let events = h.events();
    assert!(errors(&events).iter().any(|(code, message)| *code == ErrorCode::Unauthorized && message.contains("no answer in time")));
    assert!(events.iter().any(|event| matches!(event, Event::Reconnecting { .. })));
    // The late answer of the first ask is nobody's: it opens nothing.
    h.session.handle_input(h.now, Input::TokenReady(Some(wire::Credential("late".into()))));
    assert!(opened(&h.effects()).is_empty());
    // The next round asks again, and its answer opens the connection.
    assert_eq!(need_token(&until_asked(&mut h)), 1);
    h.session.handle_input(h.now, Input::TokenReady(Some(wire::Credential("fresh".into()))));
    assert_eq!(opened(&h.effects()).len(), 1);
}

#[test]
fn a_refresh_whose_source_never_answers_is_asked_again_before_expiry() {
    use crate::core::session::auth::TOKEN_ASK_TIMEOUT_MS;
    let mut h = Harness::new(with_token(vec![TransportKind::WebSocket]));
    let conn = open_ws(&mut h, Some(300_000));
    let opened_at = h.now;
    // The refresh is asked 30 s ahead of expiry; the source stays silent past its deadline.
    live_until(&mut h, conn, opened_at + 270_000);
    assert_eq!(need_token(&h.effects()), 1);
    live_until(&mut h, conn, opened_at + 270_000 + TOKEN_ASK_TIMEOUT_MS);
    assert!(errors(&h.events()).iter().any(|(_, message)| message.contains("no answer in time")));
    // The retry (1 s later, still before the expiry) asks again.
    live_until(&mut h, conn, opened_at + 270_000 + TOKEN_ASK_TIMEOUT_MS + 1_000);
    assert_eq!(need_token(&h.effects()), 1);
}
