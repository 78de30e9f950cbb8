//! `ctpctl`: the command-line client of ctpd. Everything lives in [`ctp::client`]; this
//! binary only hands the command line over, so the logic stays testable as a library.
fn main() -> std::process::ExitCode {
    ctp::client::run(ctp::client::parse_args())
}
