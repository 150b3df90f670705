//! Every frame in docs/protocol.md's example session is a real frame: it decodes, and encodes back
//! to the same JSON. A doc that drifts from the schema fails here.

use parley_proto::Codec;
use parley_proto::Frame;
use parley_proto::v1;

#[test]
fn example_frames_in_the_protocol_doc_decode_and_round_trip() {
    let doc = include_str!("../../../docs/protocol.md");
    let mut checked = 0;
    for line in doc.lines() {
        let (json, is_client) = if let Some(json) = line.strip_prefix("> ") {
            (json, true)
        } else if let Some(json) = line.strip_prefix("< ") {
            (json, false)
        } else {
            continue;
        };
        let frame = Frame::Text(json.replace('…', "").into());
        let expected: serde_json::Value = serde_json::from_str(&json.replace('…', "")).unwrap();
        let encoded = if is_client {
            let decoded: v1::ClientFrame =
                Codec::decode(&frame).unwrap_or_else(|error| panic!("{line}: {error}"));
            Codec::Json.encode(&decoded)
        } else {
            let decoded: v1::ServerFrame =
                Codec::decode(&frame).unwrap_or_else(|error| panic!("{line}: {error}"));
            Codec::Json.encode(&decoded)
        };
        let Frame::Text(encoded) = encoded else {
            unreachable!()
        };
        let actual: serde_json::Value = serde_json::from_str(encoded.as_str()).unwrap();
        assert_eq!(actual, expected, "{line}");
        checked += 1;
    }
    assert!(
        checked >= 20,
        "the example session has frames ({checked} found)"
    );
}
