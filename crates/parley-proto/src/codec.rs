//! Frame encoding: protobuf in binary WebSocket frames, the proto3 JSON mapping in text frames.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// WebSocket subprotocol for protobuf-encoded binary frames.
pub const SUBPROTOCOL_PROTO: &str = "parley.v1.proto";
/// WebSocket subprotocol for proto3-JSON text frames. The default when a client names none.
pub const SUBPROTOCOL_JSON: &str = "parley.v1.json";

/// Which of the two encodings a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    Json,
    Proto,
}

/// One encoded frame, ready for a WebSocket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Text(Utf8),
    Binary(Bytes),
}

/// UTF-8 text in shared bytes: cloning it for another connection copies nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Utf8(Bytes);

impl Utf8 {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("Utf8 holds UTF-8 by construction")
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl From<String> for Utf8 {
    fn from(text: String) -> Self {
        Utf8(Bytes::from(text))
    }
}

impl From<&str> for Utf8 {
    fn from(text: &str) -> Self {
        Utf8(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl TryFrom<Bytes> for Utf8 {
    type Error = std::str::Utf8Error;

    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Utf8(bytes))
    }
}

/// A frame that does not decode as the expected message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid json frame: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid protobuf frame: {0}")]
    Proto(#[from] prost::DecodeError),
    /// A protobuf frame with an enum value this build does not know: it means nothing here and
    /// has no JSON form.
    #[error("invalid protobuf frame: {0}")]
    UnknownValue(serde_json::Error),
}

impl Codec {
    /// Picks the codec for a negotiated subprotocol; JSON when none was negotiated.
    pub fn from_subprotocol(subprotocol: Option<&str>) -> Codec {
        match subprotocol {
            Some(SUBPROTOCOL_PROTO) => Codec::Proto,
            _ => Codec::Json,
        }
    }

    pub fn subprotocol(self) -> &'static str {
        match self {
            Codec::Json => SUBPROTOCOL_JSON,
            Codec::Proto => SUBPROTOCOL_PROTO,
        }
    }

    pub fn encode<M: prost::Message + Serialize>(self, message: &M) -> Frame {
        match self {
            Codec::Json => Frame::Text(
                serde_json::to_string(message)
                    .expect("generated messages always serialize")
                    .into(),
            ),
            Codec::Proto => Frame::Binary(Bytes::from(message.encode_to_vec())),
        }
    }

    /// Decodes a frame by its own kind: a peer may send either kind whatever was negotiated.
    pub fn decode<M: prost::Message + Default + Serialize + DeserializeOwned>(
        frame: &Frame,
    ) -> Result<M, DecodeError> {
        match frame {
            Frame::Text(text) => Ok(serde_json::from_str(text.as_str())?),
            Frame::Binary(bytes) => {
                let message = M::decode(bytes.clone())?;
                // Only an unknown enum value fails to serialize; refused here, every decoded
                // frame can go on in either codec.
                serde_json::to_writer(std::io::sink(), &message)
                    .map_err(DecodeError::UnknownValue)?;
                Ok(message)
            }
        }
    }
}

/// A server frame encoded at most once per codec, however many connections it goes to: fan-out
/// serializes a message once, not once per recipient.
#[derive(Debug)]
pub struct SharedFrame {
    frame: crate::v1::ServerFrame,
    json: std::sync::OnceLock<Frame>,
    proto: std::sync::OnceLock<Frame>,
    /// The W3C `traceparent` of the span that made the frame, when its message is traced: the
    /// edge that writes it continues the trace. Never sent to clients.
    trace: Option<String>,
}

impl SharedFrame {
    pub fn new(frame: crate::v1::ServerFrame) -> Self {
        SharedFrame {
            frame,
            json: std::sync::OnceLock::new(),
            proto: std::sync::OnceLock::new(),
            trace: None,
        }
    }

    /// The frame of a traced message (`traceparent` of its owner's span).
    pub fn with_trace(mut self, trace: Option<String>) -> Self {
        self.trace = trace;
        self
    }

    pub fn trace(&self) -> Option<&str> {
        self.trace.as_deref()
    }

    pub fn event(event: crate::v1::event::Kind) -> Self {
        SharedFrame::new(crate::v1::ServerFrame {
            kind: Some(crate::v1::server_frame::Kind::Event(crate::v1::Event {
                kind: Some(event),
            })),
        })
    }

    pub fn message(&self) -> &crate::v1::ServerFrame {
        &self.frame
    }

    pub fn encoded(&self, codec: Codec) -> &Frame {
        let cell = match codec {
            Codec::Json => &self.json,
            Codec::Proto => &self.proto,
        };
        cell.get_or_init(|| codec.encode(&self.frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    fn login_frame() -> v1::ClientFrame {
        v1::ClientFrame {
            kind: Some(v1::client_frame::Kind::Request(v1::Request {
                id: 7,
                op: Some(v1::request::Op::Login(v1::LoginRequest {
                    app_id: "a".repeat(32),
                    uid: "alice".into(),
                    token: String::new(),
                })),
            })),
        }
    }

    #[test]
    fn both_codecs_round_trip() {
        for codec in [Codec::Json, Codec::Proto] {
            let frame = codec.encode(&login_frame());
            let decoded: v1::ClientFrame = Codec::decode(&frame).unwrap();
            assert_eq!(decoded, login_frame());
        }
    }

    #[test]
    fn json_uses_the_proto3_mapping() {
        let Frame::Text(text) = Codec::Json.encode(&login_frame()) else {
            panic!("json codec must produce text");
        };
        let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        // uint64 is a string in proto3 JSON; field names are lowerCamelCase.
        assert_eq!(value["request"]["id"], "7");
        assert_eq!(value["request"]["login"]["appId"], "a".repeat(32));
    }

    #[test]
    fn an_unknown_enum_value_is_refused_where_the_frame_is_read() {
        let frame = v1::ServerFrame {
            kind: Some(v1::server_frame::Kind::Event(v1::Event {
                kind: Some(v1::event::Kind::PeersOnlineStatusChanged(
                    v1::PeersOnlineStatusChanged {
                        status: [("alice".to_owned(), 48)].into_iter().collect(),
                    },
                )),
            })),
        };
        let binary = Codec::Proto.encode(&frame);
        assert!(matches!(
            Codec::decode::<v1::ServerFrame>(&binary),
            Err(DecodeError::UnknownValue(_))
        ));
        // What the fuzzer found: a client frame that decoded, then could not be written as JSON.
        let found = Frame::Binary(Bytes::from_static(
            b"\x0a\x12\x08\x08\x08\x08\x08\x08\x08\x08\x12\x08\x08\x08\x08\x08\x08\x08\x08000000551615",
        ));
        if let Ok(decoded) = Codec::decode::<v1::ClientFrame>(&found) {
            let again: v1::ClientFrame = Codec::decode(&Codec::Json.encode(&decoded)).unwrap();
            assert_eq!(again, decoded);
        }
        if let Ok(decoded) = Codec::decode::<v1::ServerFrame>(&found) {
            let again: v1::ServerFrame = Codec::decode(&Codec::Json.encode(&decoded)).unwrap();
            assert_eq!(again, decoded);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let text = Frame::Text("{not json".into());
        assert!(Codec::decode::<v1::ClientFrame>(&text).is_err());
        let binary = Frame::Binary(Bytes::from_static(&[0xff, 0xff, 0xff]));
        assert!(Codec::decode::<v1::ClientFrame>(&binary).is_err());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::v1;

    proptest! {
        /// No byte string or text panics the decoder (the edge reads both straight off the network).
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), text in "\\PC{0,256}") {
            let _ = Codec::decode::<v1::ClientFrame>(&Frame::Binary(Bytes::from(bytes)));
            let _ = Codec::decode::<v1::ClientFrame>(&Frame::Text(text.into()));
        }

        /// Any peer message survives both encodings unchanged.
        #[test]
        fn messages_round_trip(id in any::<u64>(), peer in "[a-z]{1,64}", text in "\\PC{1,200}", raw in proptest::collection::vec(any::<u8>(), 1..200)) {
            for content in [v1::message_body::Content::Text(text.clone()), v1::message_body::Content::Raw(raw.clone().into())] {
                let frame = v1::ClientFrame {
                    kind: Some(v1::client_frame::Kind::Request(v1::Request {
                        id,
                        op: Some(v1::request::Op::SendMessageToPeer(v1::SendMessageToPeerRequest {
                            peer_id: peer.clone(),
                            message: Some(v1::MessageBody { content: Some(content), description: String::new() }),
                            ..Default::default()
                        })),
                    })),
                };
                for codec in [Codec::Json, Codec::Proto] {
                    let decoded: v1::ClientFrame = Codec::decode(&codec.encode(&frame)).unwrap();
                    prop_assert_eq!(&decoded, &frame);
                }
            }
        }
    }
}
