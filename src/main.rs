//! `kinbridge`: run a node, make the development PKI, run the demo federation, and send and
//! read referrals from a terminal. See `kinbridge --help`.

#![forbid(unsafe_code)]

mod cli;

/// mimalloc: the node allocates and frees many small buffers per message (protobuf, TLS
/// records, HTTP/2 frames) from several threads; see docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
