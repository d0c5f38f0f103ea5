//! `--demo-feed CHANNEL`: the server publishes a `tick` to the channel once per second, through
//! its own publish path (offsets count up by one, the history keeps them), and stops with the
//! server.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Server, WsClient, LIMIT};
use realtime_client::core::wire::{Carrier, ChannelMessage, Frame, Payload, Position};
use realtime_server::Config;

/// The next frame that is not an ack, ping or pong.
async fn ordered(client: &mut WsClient) -> Frame {
    loop {
        match client.frame().await {
            Frame::Ack { .. } | Frame::Ping { .. } | Frame::Pong { .. } => continue,
            other => return other,
        }
    }
}

/// Subscribes `client` to `channel` and returns the position the `subscribed` answer names.
async fn subscribe(client: &mut WsClient, channel: &str) -> Position {
    client.send_frames(&[Frame::Subscribe { seq: 1, channel: channel.into(), since: None }], Carrier::Text).await;
    match ordered(client).await {
        Frame::Subscribed { channel: name, position, .. } => {
            assert_eq!(name, channel);
            position
        }
        other => panic!("expected subscribed, got {other:?}"),
    }
}

/// The next `count` ticks of `channel`: each at the offset after the one before (starting after
/// `start`), in `start`'s epoch, the named event `tick` with a JSON payload whose `tick` counts
/// up by one. Returns their `tick` numbers.
async fn consecutive_ticks(client: &mut WsClient, channel: &str, start: Position, count: u64) -> Vec<u64> {
    let mut ticks = Vec::new();
    for expected in start.offset + 1..=start.offset + count {
        let Frame::ChannelMessage(ChannelMessage { channel: name, position: Some(position), message }) = ordered(client).await else {
            panic!("expected a channel message");
        };
        assert_eq!(name, channel);
        assert_eq!(position, Position { epoch: start.epoch, offset: expected }, "offsets follow each other");
        assert_eq!(message.event.as_deref(), Some("tick"));
        let Payload::Json(json) = message.payload else { panic!("a tick is JSON") };
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(value["unixMs"].as_u64().is_some_and(|ms| ms > 1_600_000_000_000), "{json}");
        assert!(value["sessions"].as_u64().is_some_and(|sessions| sessions >= 1), "{json}");
        ticks.push(value["tick"].as_u64().expect("tick number"));
    }
    assert!(ticks.windows(2).all(|pair| pair[1] == pair[0] + 1), "tick numbers {ticks:?}");
    ticks
}

/// Kills the server when the test ends, a failed assertion included (a leaked server would hold
/// the test's output pipe open).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_flag_publishes_a_tick_per_second_at_consecutive_offsets() {
    let child = Command::new(env!("CARGO_BIN_EXE_realtime-server"))
        .args(["--listen", "127.0.0.1:0", "--demo-feed", "clock"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address = line.trim().strip_prefix("listening on http://").expect("listening line").to_owned();

    let mut client = WsClient::connect_v2(&format!("ws://{address}/realtime?rt_conn=1")).await;
    client.hello().await;
    let start = subscribe(&mut client, "clock").await;
    let started = tokio::time::Instant::now();
    let ticks = consecutive_ticks(&mut client, "clock", start, 3).await;
    let took = started.elapsed();
    // Nothing else publishes to the channel, and the first tick created it: tick N is at offset N.
    assert_eq!(ticks[0], start.offset + 1, "tick N is at offset N");
    // Three ticks a second apart: about two periods between the first and the last.
    assert!(took >= Duration::from_millis(1_900) && took < Duration::from_secs(4), "three ticks took {took:?}");
}

#[tokio::test]
async fn the_feed_stops_at_shutdown() {
    let server = Server::start(Config::default()).await;
    let feed = realtime_server::demo_feed::spawn(&server.state, "feed:fast".into(), Duration::from_millis(20));
    let mut client = WsClient::connect_v2(&server.ws_url("rt_conn=1")).await;
    client.hello().await;
    let start = subscribe(&mut client, "feed:fast").await;
    consecutive_ticks(&mut client, "feed:fast", start, 5).await;
    server.state.begin_shutdown();
    tokio::time::timeout(LIMIT, feed).await.expect("the feed ended at shutdown").unwrap();
}

#[test]
fn a_bad_channel_name_is_refused_at_start() {
    let status = Command::new(env!("CARGO_BIN_EXE_realtime-server"))
        .args(["--listen", "127.0.0.1:0", "--demo-feed", "no spaces"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}
