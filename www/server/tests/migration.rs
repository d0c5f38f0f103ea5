//! A session moving to another transport while the old one is still attached, over real
//! sockets: the old one gets close 4004 and nothing after, the new one hello (resumed=1) and the
//! msgs after `rt_last` in order, nothing published during the switch is lost.

mod common;

use common::{parse_event, poll, text_msg, Server, SseReader, WsClient, LIMIT};
use realtime_client::core::wire::{self, close_code, Carrier, Frame, Hello, Message, Payload, Retry};

/// The SSE side of a test: decoded frames, None once the stream ended.
struct Sse {
    reader: SseReader,
}

impl Sse {
    async fn open(server: &Server, query: &str) -> Sse {
        let response = reqwest::get(server.url(&format!("/realtime/sse?{query}"))).await.unwrap();
        assert_eq!(response.status(), 200);
        Sse { reader: SseReader::new(response) }
    }

    /// The next frame in the v1 view (`common::v1_view`: the room's subscribed left out).
    async fn frame(&mut self) -> Frame {
        loop {
            let (kind, _, data) = parse_event(&self.reader.next_event().await);
            let (frame, _) = wire::decode(data.as_bytes(), 1 << 20).unwrap();
            let expected = match &frame {
                Frame::ChannelMessage(_) => "msg",
                Frame::Subscribed { .. } => "subscribed",
                other => common_type(other),
            };
            assert_eq!(kind, expected);
            if let Some(frame) = common::v1_view(frame) {
                return frame;
            }
        }
    }

    async fn hello(&mut self) -> Hello {
        match self.frame().await {
            Frame::Hello(hello) => hello,
            other => panic!("expected hello, got {other:?}"),
        }
    }

    /// Whatever is left until the stream ends: must be nothing but keep-alive comments.
    async fn assert_ends_silently(&mut self) {
        let rest = tokio::time::timeout(LIMIT, self.reader.rest()).await.expect("the old stream must end");
        assert!(rest.lines().all(|line| line.is_empty() || line.starts_with(':')), "frames after the close: {rest:?}");
    }
}

fn common_type(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello(_) => "hello",
        Frame::Message(_) => "msg",
        Frame::Ack { .. } => "ack",
        Frame::Ping { .. } => "ping",
        Frame::Pong { .. } => "pong",
        Frame::Close(_) => "close",
        _ => "channel frame",
    }
}

fn resume_query(room: &str, conn: u32, hello: &Hello, last: u64) -> String {
    format!("room={room}&rt_v=2&rt_conn={conn}&rt_sid={}&rt_key={}&rt_last={last}", hello.session_id, hello.secret)
}

fn text(message: &Message) -> &str {
    match &message.payload {
        Payload::Text(text) => text,
        other => panic!("expected text, got {other:?}"),
    }
}

fn assert_replaced(frame: Frame) {
    match frame {
        Frame::Close(close) => assert_eq!((close.code, close.retry), (close_code::REPLACED, Retry::Never)),
        other => panic!("expected close 4004, got {other:?}"),
    }
}

async fn send(server: &Server, query: &str, frames: &[Frame]) -> reqwest::StatusCode {
    let mut body = Vec::new();
    for frame in frames {
        wire::encode(frame, Carrier::Text, &mut body);
    }
    let response = reqwest::Client::new()
        .post(server.url(&format!("/realtime/send?{query}")))
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    response.status()
}

async fn wait_live(server: &Server, count: usize) {
    let mut live = server.state.live_transports();
    tokio::time::timeout(LIMIT, live.wait_for(|live| *live == count)).await.unwrap().unwrap();
}

#[tokio::test]
async fn sse_to_websocket_old_gets_4004_new_gets_exactly_the_rest() {
    let server = Server::default().await;
    let mut old = Sse::open(&server, "room=m&rt_v=2&rt_conn=1").await;
    let hello = old.hello().await;
    for text in ["one", "two", "three"] {
        server.publish("room=m", "text/plain", text).await;
    }
    // The client delivered seq 1 only when it decided to move; 2 and 3 were still in flight.
    for seq in 2..=4 {
        let Frame::Message(message) = old.frame().await else { panic!("expected msg") };
        assert_eq!(message.seq, seq);
    }

    let mut new = WsClient::connect(&server.ws_url(&resume_query("m", 2, &hello, 2))).await;
    let resumed = new.hello().await;
    assert!(resumed.resumed);
    assert_eq!(resumed.session_id, hello.session_id);
    assert_replaced(old.frame().await);
    old.assert_ends_silently().await;

    let replay: Vec<(u64, String)> = new
        .sync(1)
        .await
        .into_iter()
        .map(|frame| match frame {
            Frame::Message(message) => (message.seq, text(&message).to_owned()),
            other => panic!("expected only the replay, got {other:?}"),
        })
        .collect();
    assert_eq!(replay, [(3, "two".to_owned()), (4, "three".to_owned())], "exactly the msgs after rt_last, in order");
    server.publish("room=m", "text/plain", "four").await;
    assert_eq!(new.message().await.seq, 5);
    assert_eq!(server.state.registry.len(), 1);
}

#[tokio::test]
async fn websocket_to_websocket_old_gets_4004_then_the_socket_closes() {
    let server = Server::default().await;
    let mut old = WsClient::connect(&server.ws_url("room=m&rt_conn=1")).await;
    let hello = old.hello().await;
    let mut new = WsClient::connect(&server.ws_url(&resume_query("m", 2, &hello, 0))).await;
    assert!(new.hello().await.resumed);
    assert_replaced(old.frame().await);
    assert!(old.next().await.is_none(), "nothing after the close frame");
    assert_eq!(old.closed.as_ref().map(|closed| closed.0), Some(close_code::REPLACED));
}

/// Messages published while the client moves from SSE to WebSocket: each transport carries
/// increasing seqs without gaps, the old one stops at its 4004, the new one starts right after
/// the client's `rt_last`, and together they hold every message. A seq can travel on both (sent
/// on the old after the client chose `rt_last`); the client drops the second copy by seq, so each
/// is delivered exactly once.
#[tokio::test]
async fn messages_published_during_the_switch_arrive_exactly_once() {
    const TOTAL: u64 = 200;
    let server = Server::default().await;
    let mut old = Sse::open(&server, "room=s&rt_conn=1").await;
    let hello = old.hello().await;
    let publisher = {
        let url = server.url("/realtime/publish?room=s");
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for n in 1..=TOTAL {
                let response = client.post(&url).header("content-type", "text/plain").body(n.to_string()).send().await.unwrap();
                assert_eq!(response.status(), 202);
            }
        })
    };
    // Deliver a few on the old stream, then move while the publisher is still going.
    // Seq 1 was the room channel's subscribed: message n has seq n + 1.
    let mut delivered = 1;
    let mut before_move = Vec::new();
    while delivered < 6 {
        let Frame::Message(message) = old.frame().await else { panic!("expected msg") };
        assert_eq!(message.seq, delivered + 1);
        delivered = message.seq;
        before_move.push(message.seq);
    }
    let mut new = WsClient::connect(&server.ws_url(&resume_query("s", 2, &hello, delivered))).await;
    assert!(new.hello().await.resumed);

    let mut old_seqs = Vec::new();
    loop {
        match old.frame().await {
            Frame::Message(message) => {
                assert_eq!(message.seq, delivered + old_seqs.len() as u64 + 1, "old stream in order, no gap");
                assert_eq!(text(&message), (message.seq - 1).to_string());
                old_seqs.push(message.seq);
            }
            frame => {
                assert_replaced(frame);
                break;
            }
        }
    }
    old.assert_ends_silently().await;
    publisher.await.unwrap();

    let mut new_seqs = Vec::new();
    while new_seqs.len() < (TOTAL + 1 - delivered) as usize {
        let message = new.message().await;
        assert_eq!(message.seq, delivered + new_seqs.len() as u64 + 1, "new transport: the msgs after rt_last, in order");
        assert_eq!(text(&message), (message.seq - 1).to_string());
        new_seqs.push(message.seq);
    }
    assert!(new.sync(9).await.is_empty(), "nothing more");
    // What a client makes of everything that arrived, in arrival order: it delivers the next
    // seq, drops one it already has, and a later one would be a gap. Every published message
    // must come out exactly once, in order.
    let mut out = Vec::new();
    for seq in before_move.into_iter().chain(old_seqs).chain(new_seqs) {
        let last = out.last().copied().unwrap_or(1);
        assert!(seq <= last + 1, "seq {seq} after {last}: a gap");
        if seq == last + 1 {
            out.push(seq);
        }
    }
    assert_eq!(out, (2..=TOTAL + 1).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_held_poll_is_answered_at_once_when_the_session_moves() {
    let server = Server::default().await;
    let hello = match &poll(&server, "room=h&rt_conn=1").await[..] {
        [Frame::Hello(hello)] => hello.clone(),
        other => panic!("expected hello, got {other:?}"),
    };
    let held = {
        let url = server.url(&format!("/realtime/poll?{}", resume_query("h", 1, &hello, 1)));
        tokio::spawn(async move { reqwest::get(url).await.unwrap().bytes().await.unwrap() })
    };
    wait_live(&server, 1).await; // The poll is held.
    let mut new = WsClient::connect(&server.ws_url(&resume_query("h", 2, &hello, 0))).await;
    assert!(new.hello().await.resumed);
    let body = tokio::time::timeout(LIMIT, held).await.expect("held poll answered at once").unwrap();
    let frames = wire::decode_all(&body, 1 << 20).unwrap();
    let [frame] = <[Frame; 1]>::try_from(frames).expect("exactly the close");
    assert_replaced(frame);
    // A later poll from the replaced connection does not attach either.
    let frames = poll(&server, &resume_query("h", 1, &hello, 0)).await;
    assert!(matches!(&frames[..], [Frame::Close(close)] if close.code == close_code::REPLACED));
    assert!(new.sync(1).await.is_empty(), "the new transport was not disturbed");
}

#[tokio::test]
async fn a_send_from_the_replaced_connection_is_still_accepted() {
    let server = Server::default().await;
    let mut old = Sse::open(&server, "room=u&rt_conn=1").await;
    let hello = old.hello().await;
    let mut new = WsClient::connect(&server.ws_url(&resume_query("u", 2, &hello, 0))).await;
    assert!(new.hello().await.resumed);
    assert_replaced(old.frame().await);

    // A POST the client had in flight on the old connection arrives after the move.
    let old_send = format!("room=u&rt_v=2&rt_conn=1&rt_sid={}&rt_key={}", hello.session_id, hello.secret);
    assert_eq!(send(&server, &old_send, &[text_msg(1, "in flight")]).await, 204);
    let mut got = new.sync(1).await;
    got.retain(|frame| !matches!(frame, Frame::Ping { .. }));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&Frame::Ack { seq: 1 }));
    assert!(got.iter().any(|frame| matches!(frame, Frame::Message(message) if text(message) == "in flight")));
    // The client resends it after the move: a duplicate, acked but not broadcast again.
    new.send_frames(&[text_msg(1, "in flight")], Carrier::Text).await;
    assert_eq!(new.sync(2).await, [Frame::Ack { seq: 1 }]);
    // The key still has to be right.
    let wrong_key = format!("room=u&rt_conn=1&rt_sid={}&rt_key=wrongkey", hello.session_id);
    assert_eq!(send(&server, &wrong_key, &[text_msg(2, "x")]).await, 403);

    // Attaching transports from the replaced connection are refused with 4004.
    let mut again = Sse::open(&server, &resume_query("u", 1, &hello, 0)).await;
    assert_replaced(again.frame().await);
    again.assert_ends_silently().await;
    let mut again = WsClient::connect(&server.ws_url(&resume_query("u", 1, &hello, 0))).await;
    assert_replaced(again.frame().await);
    assert!(new.sync(3).await.is_empty(), "the new transport was not disturbed");
}
