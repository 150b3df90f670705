//! Compiles proto/ with protox (pure Rust), so a fresh machine needs no system `protoc`.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        proto_root.join("parley/v1/client.proto"),
        proto_root.join("parley/cluster/v1/cluster.proto"),
        proto_root.join("parley/cluster/v1/meta.proto"),
        proto_root.join("parley/server/v1/server.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&proto_root])?;
    let descriptor_bytes = descriptors.encode_to_vec();

    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(descriptors)?;
    // The client protocol's JSON mapping: the clients' JSON codec, and owner calls between nodes
    // (which carry client messages inside, ADR 0008).
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        // An unknown operation then decodes with its request id intact, so the reply can name it.
        .ignore_unknown_fields()
        .build(&[".parley.v1"])?;
    Ok(())
}
