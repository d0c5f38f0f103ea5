//! A failed resume (PROTOCOL.md §4, §8.11 item 10): a fresh session made on a request that
//! named an existing session with its right key ends that session (its transport gets 4004, it
//! leaves its channels at once); a wrong key disturbs nothing.

mod common;

use common::{Server, WsClient};
use realtime_client::core::wire::{close_code, Carrier, Frame, Hello, Retry};

async fn connect(server: &Server, query: &str) -> (WsClient, Hello) {
    let mut client = WsClient::connect_v2(&server.ws_url(query)).await;
    let hello = client.hello().await;
    (client, hello)
}

/// A session in room `hall` that also holds channel `x`; every frame it was sent is read.
async fn session_with_channels(server: &Server) -> (WsClient, Hello) {
    let (mut client, hello) = connect(server, "room=hall&rt_conn=1").await;
    client.send_frames(&[Frame::Subscribe { seq: 1, channel: "x".into(), since: None }], Carrier::Text).await;
    client.sync(1).await;
    assert_eq!(server.state.registry.channels().subscribers("x"), 1);
    (client, hello)
}

fn resume_query(hello: &Hello, room: &str, conn: u32, last: u64) -> String {
    format!("room={room}&rt_conn={conn}&rt_sid={}&rt_key={}&rt_last={last}", hello.session_id, hello.secret)
}

/// The close the old transport gets, skipping what was queued before it.
async fn close_of(client: &mut WsClient) -> Option<(u16, Retry)> {
    while let Some((frame, _)) = client.next().await {
        if let Frame::Close(close) = frame {
            return Some((close.code, close.retry));
        }
    }
    None
}

#[tokio::test]
async fn a_fresh_session_made_on_a_failed_resume_ends_the_session_it_named() {
    let server = Server::default().await;
    let (mut old, hello) = session_with_channels(&server).await;
    // rt_last past the last seq sent (2: the room's subscribed and x's): not resumable.
    let (_new, fresh) = connect(&server, &resume_query(&hello, "hall", 2, 999)).await;
    assert!(!fresh.resumed);
    assert_ne!(fresh.session_id, hello.session_id);
    assert_eq!(close_of(&mut old).await, Some((close_code::REPLACED, Retry::Never)));
    assert!(server.state.registry.get(&hello.session_id).is_none(), "the old session is gone at once");
    assert_eq!(server.state.registry.channels().subscribers("x"), 0, "it left x (the fresh session does not hold it)");
    assert_eq!(server.state.registry.room_size("hall"), 1, "only the fresh session holds the room");
    assert!(server.state.registry.channels().position("x").is_none(), "x had nothing else: freed");
    // The named session cannot be resumed any more: the right key now gets a fresh one too.
    let (_again, hello_again) = connect(&server, &resume_query(&hello, "hall", 3, 0)).await;
    assert!(!hello_again.resumed);
}

#[tokio::test]
async fn a_right_key_naming_another_room_ends_the_old_session_too() {
    let server = Server::default().await;
    let (mut old, hello) = session_with_channels(&server).await;
    let (_new, fresh) = connect(&server, &resume_query(&hello, "elsewhere", 2, 2)).await;
    assert!(!fresh.resumed);
    assert_eq!(close_of(&mut old).await, Some((close_code::REPLACED, Retry::Never)));
    assert_eq!(server.state.registry.room_size("hall"), 0);
    assert_eq!(server.state.registry.room_size("elsewhere"), 1);
}

#[tokio::test]
async fn a_wrong_key_gets_a_fresh_session_and_leaves_the_named_one_alone() {
    let server = Server::default().await;
    let (mut old, hello) = session_with_channels(&server).await;
    let forged = format!("room=hall&rt_conn=2&rt_sid={}&rt_key=AAAAAAAAAAAAAAAAAAAAAA&rt_last=999", hello.session_id);
    let (_attacker, fresh) = connect(&server, &forged).await;
    assert!(!fresh.resumed);
    assert!(server.state.registry.get(&hello.session_id).is_some());
    assert_eq!(server.state.registry.channels().subscribers("x"), 1);
    // The old transport still works, and the session still resumes with its key.
    assert_eq!(server.publish("channel=x", "text/plain", "still here").await.status(), 202);
    assert!(old.sync(2).await.iter().any(|frame| matches!(frame, Frame::ChannelMessage(_))));
    let (_resumed, again) = connect(&server, &resume_query(&hello, "hall", 3, 3)).await;
    assert!(again.resumed, "the wrong key disturbed nothing");
}

#[tokio::test]
async fn a_failed_resume_refused_by_a_limit_does_not_end_the_named_session() {
    let server = Server::start(realtime_server::Config { max_sessions: 1, ..realtime_server::Config::default() }).await;
    let (_old, hello) = session_with_channels(&server).await;
    let response = reqwest::get(server.url(&format!("/realtime/poll?{}", resume_query(&hello, "hall", 2, 999)))).await.unwrap();
    assert_eq!(response.status(), 503, "the server is full: no fresh session is made");
    assert!(server.state.registry.get(&hello.session_id).is_some_and(|session| !session.is_ended()));
}

#[tokio::test]
async fn racing_resumes_with_the_right_key_leave_no_half_of_the_old_session() {
    for _ in 0..20 {
        let server = Server::default().await;
        let (mut old, hello) = session_with_channels(&server).await;
        // A good resume (rt_last=2) and a failing one (rt_last=999) race.
        let (good_url, bad_url) = (server.ws_url(&resume_query(&hello, "hall", 2, 2)), server.ws_url(&resume_query(&hello, "hall", 3, 999)));
        let (mut good, mut bad) = tokio::join!(WsClient::connect_v2(&good_url), WsClient::connect_v2(&bad_url));
        let (good_hello, bad_hello) = (good.hello().await, bad.hello().await);
        assert!(!bad_hello.resumed);
        assert!(close_of(&mut old).await.is_some_and(|(code, _)| code == close_code::REPLACED));
        if good_hello.resumed {
            // It resumed first; the failing resume then ended the session under it.
            assert_eq!(close_of(&mut good).await, Some((close_code::REPLACED, Retry::Never)));
        }
        assert!(server.state.registry.get(&hello.session_id).is_none());
        assert_eq!(server.state.registry.channels().subscribers("x"), 0);
    }
}
