//! The few Socket.IO v5 / Engine.IO v4 packets a WebSocket-only client needs, as text frames.
//!
//! Engine.IO v4 over a WebSocket from the start (`GET /socket.io/?EIO=4&transport=websocket`):
//! every WebSocket text message is one Engine.IO packet, its first character the packet type
//! (`0` open, `1` close, `2` ping, `3` pong, `4` message). A Socket.IO packet rides in an
//! Engine.IO message: `40` connects to the main namespace (the server answers `40{"sid":..}`
//! or `44{..}` on refusal), `42[...]` is an event. The server pings (`2`) every pingInterval
//! (25 s by default) and the client answers `3`. Spec: socket.io-protocol v5 and
//! engine.io-protocol v4 (the socket.io repository's docs).

/// What the load generator makes of one text message from a Socket.IO server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// Engine.IO open (`0{...}`): the handshake; the client answers with a namespace connect.
    Open,
    /// Socket.IO connect acknowledged (`40` or `40{...}`).
    Connected,
    /// Socket.IO connect refused (`44{...}`).
    ConnectError,
    /// Engine.IO ping (`2`): answer [`PONG`].
    Ping,
    /// A Socket.IO event (`42[...]`, any namespace-less event).
    Event,
    /// Engine.IO close (`1`).
    Close,
    /// Anything else (pong, noop, acks, binary placeholders): ignored.
    Other,
}

/// The namespace connect the client sends after the open packet.
pub const CONNECT: &str = "40";
/// The answer to a server ping.
pub const PONG: &str = "3";

/// Classifies one Engine.IO text packet.
pub fn classify(text: &str) -> Packet {
    let bytes = text.as_bytes();
    match bytes {
        [b'0', ..] => Packet::Open,
        [b'1', ..] => Packet::Close,
        [b'2'] => Packet::Ping,
        [b'4', b'0', ..] => Packet::Connected,
        [b'4', b'4', ..] => Packet::ConnectError,
        [b'4', b'2', b'[', ..] => Packet::Event,
        _ => Packet::Other,
    }
}

/// The WebSocket URL of a Socket.IO server's default path, with the room as a query parameter.
pub fn url(address: &str, room: &str) -> String {
    format!("ws://{address}/socket.io/?EIO=4&transport=websocket&room={room}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_handshake_and_heartbeat() {
        assert_eq!(
            classify(r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#),
            Packet::Open
        );
        assert_eq!(classify(r#"40{"sid":"def"}"#), Packet::Connected);
        assert_eq!(classify("40"), Packet::Connected);
        assert_eq!(classify(r#"44{"message":"refused"}"#), Packet::ConnectError);
        assert_eq!(classify("2"), Packet::Ping);
        assert_eq!(classify("1"), Packet::Close);
        assert_eq!(classify("3"), Packet::Other);
        assert_eq!(classify("2probe"), Packet::Other);
    }

    #[test]
    fn classifies_events_and_not_other_socketio_packets() {
        assert_eq!(classify(r#"42["msg",{"i":1}]"#), Packet::Event);
        assert_eq!(classify(r#"43["ack"]"#), Packet::Other);
        assert_eq!(classify("41"), Packet::Other);
        assert_eq!(classify(""), Packet::Other);
    }

    #[test]
    fn url_names_the_default_path_and_the_room() {
        assert_eq!(url("127.0.0.1:9", "fanout"), "ws://127.0.0.1:9/socket.io/?EIO=4&transport=websocket&room=fanout");
    }
}
