//! kinbridge protocol v1: the types generated from `proto/kinbridge/v1/`.
//!
//! Without features this crate holds only the prost message types, so the domain core can
//! decode signed header bytes without depending on tonic. The `grpc` feature adds the tonic
//! client and server stubs for `PeerService` and `LocalService`; the `json` feature adds serde
//! implementations in the protobuf JSON mapping.

#![forbid(unsafe_code)]

/// Package `kinbridge.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/kinbridge.v1.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/kinbridge.v1.serde.rs"));
}

/// Package `kinbridge.bench.v1`: the end-to-end benchmark's baseline echo (not the protocol).
#[cfg(feature = "bench")]
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod bench {
    /// Package `kinbridge.bench.v1`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/kinbridge.bench.v1.rs"));
    }
}

/// The encoded `FileDescriptorSet` of every kinbridge proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kinbridge_descriptor.bin"));
