//! Memory under attack at a bounded size, through the binary's accept loop: a publish stored once
//! for every member, the global replay budget (publishes get 503, client sends are refused, memory
//! stays under the budget plus one publish), an SSE client that never reads (cut within bounded
//! time, its memory freed), and large fan-outs that must not stall small requests.

mod common;

use std::time::{Duration, Instant};

use realtime_client::core::wire::{self, close_code, Carrier, Frame, Retry};
use realtime_server::limits::{LimitConfig, ENTRY_BYTES};
use realtime_server::metrics::LimitKind;
use realtime_server::session::{ConnectRequest, Stop, TransportKind};
use realtime_server::channel::{ChannelConfig, HistoryLimits};
use realtime_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{eventually, http_from, start_edge, text_msg, ws_from, Server, LIMIT};

/// Channel settings whose histories hold messages for `max_age` only (other bounds default).
fn history_for(max_age: Duration) -> ChannelConfig {
    ChannelConfig { history: HistoryLimits { max_age, ..HistoryLimits::default() }, ..ChannelConfig::default() }
}

async fn poll_member(server: &Server, from: &str, room: &str) -> realtime_client::core::wire::Hello {
    let response = http_from(from).get(server.url(&format!("/realtime/poll?room={room}"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    match wire::decode_all(&response.bytes().await.unwrap(), 1 << 24).unwrap().into_iter().next() {
        Some(Frame::Hello(hello)) => hello,
        other => panic!("expected hello, got {other:?}"),
    }
}

#[tokio::test]
async fn the_replay_budget_holds_each_payload_once_and_refuses_past_it() {
    let limits = LimitConfig {
        replay_budget_bytes: 100_000,
        // The global refusal is the last resort: lift the per-IP share to reach it.
        replay_budget_per_ip_bytes: Some(1 << 30),
        rate_slowdown: Duration::from_millis(300),
        retry_after: Duration::from_secs(2),
        ..LimitConfig::default()
    };
    // The channel's history holds every payload too (v2): a 3 s age bound keeps it for the
    // whole fill-and-refuse part below, and lets it go afterwards so the final check (every
    // byte given back) can hold once the members end.
    let channels = history_for(Duration::from_secs(3));
    let server = start_edge(Config { limits, channels, ..Config::default() }).await;
    let members = [poll_member(&server, "127.0.0.30", "budget").await, poll_member(&server, "127.0.0.31", "budget").await];
    // Each member's first ordered frame, its room channel's `subscribed` (s=1), is buffered
    // unacked: one entry each.
    let subscribed = 2 * ENTRY_BYTES;
    assert_eq!(server.state.registry.replay_bytes(), subscribed);
    let payload = "x".repeat(10_000);
    let response = server.publish("room=budget", "text/plain", payload.clone()).await;
    assert_eq!(response.status(), 202);
    // Stored once for both members and the history: the payload once, plus one entry per
    // member and one in the channel's history.
    let one_publish = 10_000 + 3 * ENTRY_BYTES;
    assert_eq!(server.state.registry.replay_bytes(), subscribed + one_publish);
    let mut refused = None;
    for _ in 0..20 {
        let response = server.publish("room=budget", "text/plain", payload.clone()).await;
        if response.status() != 202 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("the budget refuses publishes");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "2");
    assert!(server.state.metrics.trips(LimitKind::replay_budget) >= 1);
    let held = server.state.registry.replay_bytes();
    assert!(held > 100_000 && held <= 100_000 + one_publish, "the budget plus one publish at most: {held}");
    assert!(server.state.metrics.encode().contains(&format!("realtime_replay_bytes {held}")));
    // A client message would go into replay buffers too: slowed, then refused with a retry.
    let mut sender = ws_from("127.0.0.32", &server, "room=budget").await;
    let sender_hello = sender.hello().await;
    sender.send_frames(&[text_msg(1, "more")], Carrier::Text).await;
    let close = loop {
        match sender.frame().await {
            Frame::Close(close) => break close,
            _ => continue,
        }
    };
    assert_eq!((close.code, close.reason.as_str(), close.retry), (close_code::LIMIT_EXCEEDED, "server busy", Retry::AfterMs(2_000)));
    assert!(!server.state.registry.get(&members[0].session_id).unwrap().is_ended(), "nobody else's session ends");
    // Ended sessions give their bytes back at once, and publishing works again.
    // The refused sender's session lives on for a resume, holding its unacked `subscribed`
    // entry (v2): it ends too, so every holder is gone.
    for id in members.iter().map(|member| &member.session_id).chain([&sender_hello.session_id]) {
        server.state.registry.get(id).unwrap().end(Stop::Silent);
    }
    // (The history's copies go by its age bound, the payloads with their last holder.)
    eventually("every replay byte is given back", || server.state.registry.replay_bytes() == 0).await;
    assert_eq!(server.publish("room=budget", "text/plain", "again").await.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_pass_the_budget_by_one_publish_at_most() {
    let limits = LimitConfig {
        replay_budget_bytes: 100_000,
        replay_budget_per_ip_bytes: Some(1 << 30),
        // Every fan-out goes to a blocking thread: each publish awaits between its check and
        // its charges, so the publishes overlap.
        fanout_blocking_threshold: 1,
        ..LimitConfig::default()
    };
    let server = start_edge(Config { limits, ..Config::default() }).await;
    let members = [poll_member(&server, "127.0.0.33", "rush").await, poll_member(&server, "127.0.0.34", "rush").await];
    // The members' `subscribed` frames (s=1, unacked) are buffered: one entry each.
    let before = server.state.registry.replay_bytes();
    assert_eq!(before, 2 * ENTRY_BYTES);
    // A publish in flight (its bytes reserved, not yet stored) counts at once: nothing else
    // passes the check meanwhile.
    let in_flight = server.state.reserve_publish("rush", &[(None, wire::Payload::Text("i".repeat(200_000)))]);
    let in_flight = in_flight.expect("under the budget: reserved");
    assert!(server.state.reserve_publish("rush", &[(None, wire::Payload::Text(String::new()))]).is_none());
    assert_eq!(server.publish("room=rush", "text/plain", "late").await.status(), 503);
    drop(in_flight);
    assert_eq!(server.state.registry.replay_bytes(), before, "a reservation is given back whole");
    let payload = "r".repeat(10_000);
    let client = reqwest::Client::new();
    let publishes: Vec<_> = (0..40)
        .map(|_| {
            let request = client.post(server.url("/realtime/publish?room=rush")).header("content-type", "text/plain").body(payload.clone());
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for publish in publishes {
        statuses.push(publish.await.unwrap());
    }
    assert!(statuses.iter().all(|status| *status == 202 || *status == 503), "{statuses:?}");
    assert!(statuses.contains(&503), "the budget refused some: {statuses:?}");
    let held = server.state.registry.replay_bytes();
    // One publish: the payload once, an entry per member and one in the channel's history.
    assert!(held <= 100_000 + 10_000 + 3 * ENTRY_BYTES, "the budget plus one publish at most: {held}");
    assert!(!server.state.registry.get(&members[0].session_id).unwrap().is_ended());
}

#[tokio::test]
async fn one_ip_over_its_replay_share_overflows_its_own_sessions_not_everyone() {
    let limits = LimitConfig {
        replay_budget_bytes: 800_000,
        replay_budget_per_ip_bytes: Some(50_000),
        rate_slowdown: Duration::from_millis(300),
        ..LimitConfig::default()
    };
    // Each room's history holds one message: with the default (1 MiB each) the four histories
    // alone would fill the global budget, which is not what this test is about; one message
    // each still counts (4 × (10_000 + ENTRY_BYTES)) in the bound checked below.
    let channels = ChannelConfig { history: HistoryLimits { max_messages: 1, ..HistoryLimits::default() }, ..ChannelConfig::default() };
    let server = start_edge(Config { replay_max_bytes: 300_000, limits, channels, ..Config::default() }).await;
    // One address, four sessions each alone in a room, none reading: 4 × 250 KB, each under its
    // session's bound, would hold more than the global budget and refuse everyone.
    let hog = "127.0.0.50";
    for index in 0..4 {
        poll_member(&server, hog, &format!("hog{index}")).await;
    }
    let payload = "h".repeat(10_000);
    for _ in 0..25 {
        for index in 0..4 {
            let response = server.publish(&format!("room=hog{index}"), "text/plain", payload.clone()).await;
            assert_eq!(response.status(), 202, "the hog's own sessions overflow; publishes are not refused");
        }
    }
    assert!(server.state.metrics.trips(LimitKind::replay_overflow) >= 1);
    assert_eq!(server.state.metrics.trips(LimitKind::replay_budget), 0);
    assert!(server.state.ip_limits.replay_bytes_of(hog.parse().unwrap()) <= 50_000);
    // The hog's share (50_000, which counts its entries at ENTRY_BYTES plus their size, as the
    // global budget does) plus the four one-message histories: about 90_300, against the 1 MB
    // the hog would hold without its share.
    let held = server.state.registry.replay_bytes();
    assert!(held <= 50_000 + 4 * (10_000 + ENTRY_BYTES), "{held}");
    // Another address's session can still send (and gets its message back), publishes succeed.
    let mut sender = ws_from("127.0.0.51", &server, "room=fair").await;
    sender.hello().await;
    sender.send_frames(&[text_msg(1, "still served")], Carrier::Text).await;
    assert_eq!(sender.message().await.payload, wire::Payload::Text("still served".into()));
    assert_eq!(server.publish("room=fair", "text/plain", "published").await.status(), 202);
    assert_eq!(sender.message().await.payload, wire::Payload::Text("published".into()));
}

#[tokio::test]
async fn an_sse_client_that_never_reads_is_cut_and_its_memory_freed() {
    let mut config = Config {
        replay_max_bytes: 64 << 20,
        replay_max_messages: 100_000,
        resume_window: Duration::from_millis(500),
        limits: LimitConfig { stream_write_timeout: Duration::from_millis(300), ..LimitConfig::default() },
        // Zero history age: the channel's history lets go of the payloads at the next sweep,
        // so once the session is dropped nothing holds them (the default would keep 1 MiB).
        channels: history_for(Duration::ZERO),
        ..Config::default()
    };
    config.edge.write_timeout = Duration::from_secs(3);
    config.edge.idle_timeout = Duration::from_millis(500);
    let server = start_edge(config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.40:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    let request = format!("GET /realtime/sse?room=slow HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    stream.write_all(request.as_bytes()).await.unwrap();
    eventually("the stream is attached", || server.state.registry.room_size("slow") == 1).await;
    // Publish until the stream's writes stall past the deadline (bounded by LIMIT).
    let payload = "y".repeat(64 * 1024);
    let started = Instant::now();
    while server.state.metrics.trips(LimitKind::slow_consumer) == 0 {
        assert!(started.elapsed() < LIMIT, "never cut");
        assert_eq!(server.publish("room=slow", "text/plain", payload.clone()).await.status(), 202);
    }
    assert_eq!(server.state.metrics.trips(LimitKind::slow_consumer), 1);
    assert!(server.state.metrics.encode().contains("realtime_slow_consumer_cuts_total 1"));
    let ip = "127.0.0.40".parse().unwrap();
    eventually("the cut stream is no longer live", || *server.state.live_transports().borrow() == 0).await;
    assert_eq!(server.state.ip_limits.streams_of(ip), 0);
    // While it may still resume, what it holds is bounded by the replay limits; then it goes.
    // (Plus what the channel's history may hold until its next sweep: its byte bound.)
    assert!(server.state.registry.replay_bytes() <= (64 << 20) + 100_000 * ENTRY_BYTES + HistoryLimits::default().max_bytes);
    eventually("the session is dropped", || server.state.registry.is_empty()).await;
    eventually("every replay byte is given back", || server.state.registry.replay_bytes() == 0).await;
    assert_eq!(server.state.ip_limits.sessions_of(ip), 0);
    // The connection goes too: the edge's write deadline cuts it, or, once what was in flight
    // has drained, its idle timeout.
    let mut buffer = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(LIMIT, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    });
    closed.await.expect("the connection is closed");
}

/// How long a probe poll takes, worst of those made while `busy` is not done.
async fn worst_latency_while(server: &Server, busy: &[tokio::task::JoinHandle<u16>]) -> Duration {
    let client = reqwest::Client::new();
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    while busy.iter().any(|task| !task.is_finished()) || probes < 3 {
        let started = Instant::now();
        let response = client.get(server.url("/realtime/poll?rt_probe=1")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        worst = worst.max(started.elapsed());
        probes += 1;
    }
    worst
}

async fn fan_out_run(threshold: usize) -> (Duration, Duration, u64) {
    let limits = LimitConfig { fanout_blocking_threshold: threshold, ..LimitConfig::default() };
    let server = start_edge(Config { limits, ..Config::default() }).await;
    let request = ConnectRequest { room: Some(String::from("big")), ..ConnectRequest::default() };
    for _ in 0..200 {
        server.state.registry.connect(&request, TransportKind::Poll, &server.state.config);
    }
    let mut batch = Vec::new();
    for seq in 1..=2_000 {
        wire::encode(&text_msg(seq, "fan"), Carrier::Binary, &mut batch);
    }
    let started = Instant::now();
    let mut publishes = Vec::new();
    for _ in 0..2 {
        let url = server.url("/realtime/publish?room=big");
        let body = batch.clone();
        publishes.push(tokio::spawn(async move {
            let response = reqwest::Client::new().post(url).header("content-type", "application/x-realtime-frames").body(body);
            response.send().await.unwrap().status().as_u16()
        }));
    }
    let worst = worst_latency_while(&server, &publishes).await;
    for publish in publishes {
        assert_eq!(publish.await.unwrap(), 202);
    }
    let blocking = server.state.blocking_fan_outs.load(std::sync::atomic::Ordering::Relaxed);
    (worst, started.elapsed(), blocking)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_fan_outs_leave_the_workers_serving() {
    // Run inline (threshold usize::MAX), the same fan-outs held both workers: probes waited
    // about 950 ms in a debug build, nearly as long as the fan-outs took; offloaded, the worst
    // probe took about 20 ms. A relative bound, so a loaded machine (slower everything) holds.
    let (worst, took, blocking) = fan_out_run(4_096).await;
    assert_eq!(blocking, 2, "both fan-outs ran on a blocking thread");
    assert!(took > Duration::from_millis(100), "the fan-outs are large enough to matter: {took:?}");
    assert!(worst < took / 2, "a small request waited {worst:?} of the fan-outs' {took:?}");
}

#[tokio::test]
async fn blocking_fan_outs_are_bounded_publishes_get_503_and_client_batches_wait() {
    let limits = LimitConfig { fanout_blocking_threshold: 1, retry_after: Duration::from_secs(2), ..LimitConfig::default() };
    let server = start_edge(Config { limits, ..Config::default() }).await;
    poll_member(&server, "127.0.0.35", "permits").await;
    let mut sender = ws_from("127.0.0.36", &server, "room=permits").await;
    sender.hello().await;
    // Every permit taken, as by long fan-outs in progress.
    let permits = server.state.fanout_permits.available_permits();
    assert!(permits >= 2);
    let held = server.state.fanout_permits.acquire_many(permits as u32).await.unwrap();
    // A client batch (2 deliveries > 1) waits for a permit; a publish gives up after its bound.
    sender.send_frames(&[text_msg(1, "waits")], Carrier::Text).await;
    let started = Instant::now();
    let refused = server.publish("room=permits", "text/plain", "refused").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "2");
    assert!(started.elapsed() >= Duration::from_millis(1_500), "the publish waited for a permit first");
    assert_eq!(server.state.blocking_fan_outs.load(std::sync::atomic::Ordering::Relaxed), 0, "nothing ran without a permit");
    drop(held);
    // The waiting client batch goes out, and publishes work again.
    assert_eq!(sender.message().await.payload, wire::Payload::Text("waits".into()));
    assert_eq!(server.publish("room=permits", "text/plain", "again").await.status(), 202);
    assert_eq!(sender.message().await.payload, wire::Payload::Text("again".into()));
}

#[tokio::test]
async fn a_batch_accepted_before_its_transport_is_cut_is_still_delivered() {
    // The sender's batch is accepted (its seq counts as received: a retry would be deduped),
    // then waits for a fan-out permit; meanwhile its transport is cut, which aborts the reader
    // that carried it. The message must still reach the room, once.
    let limits = LimitConfig { fanout_blocking_threshold: 1, ..LimitConfig::default() };
    let server = start_edge(Config { limits, ..Config::default() }).await;
    let mut member = ws_from("127.0.0.37", &server, "room=cut").await;
    member.hello().await;
    let mut sender = ws_from("127.0.0.38", &server, "room=cut").await;
    let hello = sender.hello().await;
    let session = server.state.registry.get(&hello.session_id).unwrap();
    let permits = server.state.fanout_permits.available_permits();
    let held = server.state.fanout_permits.acquire_many(permits as u32).await.unwrap();
    sender.send_frames(&[text_msg(1, "accepted")], Carrier::Text).await;
    eventually("the batch holds the session's upstream", || session.upstream.try_lock().is_err()).await;
    assert!(session.kick().is_some(), "the sender's WebSocket is cut");
    eventually("only the member's transport is live", || *server.state.live_transports().borrow() == 1).await;
    drop(held);
    assert_eq!(member.message().await.payload, wire::Payload::Text("accepted".into()));
    // Once: the next thing the member gets is a later publish, not the same message again.
    assert_eq!(server.publish("room=cut", "text/plain", "after").await.status(), 202);
    assert_eq!(member.message().await.payload, wire::Payload::Text("after".into()));
}

#[tokio::test]
async fn a_websocket_that_never_reads_is_cut_and_its_socket_closed() {
    let config = Config {
        replay_max_bytes: 64 << 20,
        replay_max_messages: 100_000,
        limits: LimitConfig { stream_write_timeout: Duration::from_millis(300), ..LimitConfig::default() },
        ..Config::default()
    };
    let server = start_edge(config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.41:0".parse().unwrap()).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let connect = tokio_tungstenite::client_async(server.ws_url("room=stalled"), tokio_tungstenite::MaybeTlsStream::Plain(stream));
    let (ws, _) = tokio::time::timeout(LIMIT, connect).await.unwrap().unwrap();
    let mut client = common::WsClient::from_stream(ws);
    client.hello().await;
    // From here on the client reads nothing.
    let payload = "z".repeat(64 * 1024);
    let started = Instant::now();
    while server.state.metrics.trips(LimitKind::slow_consumer) == 0 {
        assert!(started.elapsed() < LIMIT, "never cut");
        assert_eq!(server.publish("room=stalled", "text/plain", payload.clone()).await.status(), 202);
    }
    eventually("the cut WebSocket is no longer live", || *server.state.live_transports().borrow() == 0).await;
    assert_eq!(server.state.ip_limits.streams_of("127.0.0.41".parse().unwrap()), 0);
    // Its socket was dropped with it: what was in flight drains, then the stream ends.
    let ended = tokio::time::timeout(LIMIT, async {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = client.ws.next().await {}
    });
    ended.await.expect("the socket is closed");
}

#[tokio::test]
async fn a_stalled_stream_whose_session_overflows_is_cut_at_once() {
    // The write deadline is far away: only the overflow can cut this stream within the test.
    let config = Config {
        replay_max_bytes: 1 << 20,
        limits: LimitConfig { stream_write_timeout: Duration::from_secs(600), ..LimitConfig::default() },
        // Zero history age: the history's copies of the payloads go at the next sweep, so the
        // last check sees the ended session's bytes given back (not 1 MiB kept for recovery).
        channels: history_for(Duration::ZERO),
        ..Config::default()
    };
    let server = start_edge(config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.42:0".parse().unwrap()).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let connect = tokio_tungstenite::client_async(server.ws_url("room=overflow"), tokio_tungstenite::MaybeTlsStream::Plain(stream));
    let (ws, _) = tokio::time::timeout(LIMIT, connect).await.unwrap().unwrap();
    let mut client = common::WsClient::from_stream(ws);
    client.hello().await;
    let payload = "o".repeat(64 * 1024);
    let started = Instant::now();
    while server.state.metrics.trips(LimitKind::replay_overflow) == 0 {
        assert!(started.elapsed() < LIMIT, "never overflowed");
        assert_eq!(server.publish("room=overflow", "text/plain", payload.clone()).await.status(), 202);
    }
    eventually("the stalled stream is cut", || *server.state.live_transports().borrow() == 0).await;
    assert_eq!(server.state.metrics.trips(LimitKind::slow_consumer), 0, "cut by the overflow, not the deadline");
    eventually("the ended session's replay bytes are given back", || server.state.registry.replay_bytes() == 0).await;
}
