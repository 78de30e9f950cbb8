//! `ctpctl`: the command-line client of ctpd. Everything lives in [`ctp_client`]; this
//! binary only hands the command line over, so the logic stays testable as a library.
//! It links no libtorch (`tests/no_libtorch.rs`).
fn main() -> std::process::ExitCode {
    ctp_client::run(ctp_client::parse_args())
}
