//! Compiles `proto/kinbridge/v1/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates prost message types, plus tonic service stubs when the `grpc` feature is on and
//! serde implementations in the protobuf JSON mapping when the `json` feature is on.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let files = [
        "kinbridge/v1/envelope.proto",
        "kinbridge/v1/referral.proto",
        "kinbridge/v1/peer.proto",
        "kinbridge/v1/local.proto",
        "kinbridge/v1/audit.proto",
        "kinbridge/v1/admin.proto",
        "kinbridge/v1/tracing.proto",
        "kinbridge/v1/reporting.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }
    let descriptors = protox::compile(files, [&proto_root])?;
    // The descriptor set itself, for gRPC server reflection.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("kinbridge_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    // The protobuf JSON mapping, for the JSON face and the CLI.
    if std::env::var_os("CARGO_FEATURE_JSON").is_some() {
        pbjson_build::Builder::new()
            .register_descriptors(&prost::Message::encode_to_vec(&descriptors))?
            .build(&[".kinbridge.v1"])?;
    }
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .compile_fds(descriptors)?;
    // The benchmark's baseline echo service, kept out of the protocol's descriptors.
    if std::env::var_os("CARGO_FEATURE_BENCH").is_some() {
        let echo = "kinbridge/bench/v1/echo.proto";
        println!("cargo:rerun-if-changed={}", proto_root.join(echo).display());
        tonic_prost_build::configure().compile_fds(protox::compile([echo], [&proto_root])?)?;
    }
    Ok(())
}
