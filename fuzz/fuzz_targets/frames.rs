//! Whatever bytes arrive as a WebSocket message, text or binary: decoding a client frame (what
//! an edge does) or a server frame (what an SDK does) answers a frame or an error, never a
//! panic; and a frame that decodes survives encoding and decoding again in either codec.

#![no_main]

use libfuzzer_sys::fuzz_target;
use parley_proto::Codec;
use parley_proto::Frame;
use parley_proto::v1;

fn round_trips<M>(frame: &Frame)
where
    M: prost::Message + Default + serde::Serialize + serde::de::DeserializeOwned + PartialEq,
{
    let Ok(decoded) = Codec::decode::<M>(frame) else {
        return;
    };
    for codec in [Codec::Proto, Codec::Json] {
        let again: M = Codec::decode(&codec.encode(&decoded))
            .unwrap_or_else(|error| panic!("{codec:?} cannot read back what it wrote: {error}"));
        assert!(again == decoded, "{codec:?} changed the frame");
    }
}

fuzz_target!(|data: &[u8]| {
    let binary = Frame::Binary(data.to_vec().into());
    round_trips::<v1::ClientFrame>(&binary);
    round_trips::<v1::ServerFrame>(&binary);
    if let Ok(text) = std::str::from_utf8(data) {
        let text = Frame::Text(text.into());
        round_trips::<v1::ClientFrame>(&text);
        round_trips::<v1::ServerFrame>(&text);
    }
});
