//! `kinbridge`: run a node, make the development PKI, run the demo federation, and send and
//! read referrals from a terminal. See `kinbridge --help`.

#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
