//! [`Outgoing`]: a frame on its way from a session to its transport.

use std::sync::Arc;

use realtime_client::core::wire::{self, Carrier, ChannelMessage, Frame, Message, Payload, Position};

use crate::limits::SharedMessage;

/// A frame on its way to a transport: a message stays the shared copy of its publish until it
/// is encoded, so a broadcast to many members never copies its payload per member.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Frame(Frame),
    /// A message, with its channel and position (v2: every message a session gets has one,
    /// except those pushed by [`Session::push_message`], which tests use).
    Message { seq: u64, channel: Option<(Arc<str>, Position)>, message: Arc<SharedMessage> },
}

impl From<Frame> for Outgoing {
    fn from(frame: Frame) -> Self {
        Outgoing::Frame(frame)
    }
}

impl Outgoing {
    /// An owned frame (copies a shared payload: for tests and rare paths only).
    pub fn into_frame(self) -> Frame {
        match self {
            Outgoing::Frame(frame) => frame,
            Outgoing::Message { seq, channel, message } => {
                let message_frame = Message { seq, event: message.event.clone(), payload: message.payload.clone() };
                match channel {
                    Some((channel, position)) => {
                        let channel_message = ChannelMessage { channel: channel.to_string(), position: Some(position), message: message_frame };
                        match &message.from {
                            Some(from) => Frame::Attributed { subject: from.to_string(), message: channel_message },
                            None => Frame::ChannelMessage(channel_message),
                        }
                    }
                    None => Frame::Message(message_frame),
                }
            }
        }
    }

    pub fn encode(&self, carrier: Carrier, out: &mut Vec<u8>) {
        match self {
            Outgoing::Frame(frame) => wire::encode(frame, carrier, out),
            Outgoing::Message { seq, channel, message } => wire::encode_attributed_message(
                *seq,
                channel.as_ref().map(|(channel, position)| (&**channel, Some(*position))),
                message.from.as_deref(),
                message.event.as_deref(),
                &message.payload,
                carrier,
                out,
            ),
        }
    }

    /// Whether this is a message with a binary payload.
    pub fn is_binary(&self) -> bool {
        match self {
            Outgoing::Frame(Frame::Message(message) | Frame::ChannelMessage(ChannelMessage { message, .. })) => {
                matches!(message.payload, Payload::Binary(_))
            }
            Outgoing::Message { message, .. } => matches!(message.payload, Payload::Binary(_)),
            Outgoing::Frame(_) => false,
        }
    }

    /// The seq of an ordered frame (a message or a channel frame).
    pub fn message_seq(&self) -> Option<u64> {
        match self {
            Outgoing::Frame(frame) => frame.ordered_seq(),
            Outgoing::Message { seq, .. } => Some(*seq),
        }
    }
}

