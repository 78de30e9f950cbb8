//! Binaries of other workspace packages. `CARGO_BIN_EXE_*` only names the binaries of the
//! package under test (ctp: ctpd, ctp-bench); `ctpctl` lives in `crates/ctpctl`, so it is
//! built here once per test process with `cargo build --bin ctpctl` (a no-op when it is up to
//! date, and never stale after an edit of the client) and found next to this test's `deps/`.
//! No `-p ctpctl`: building it with the whole workspace selected keeps the dependencies'
//! features the same as `cargo test`'s, so nothing is compiled twice.
use std::path::PathBuf;
use std::sync::OnceLock;

/// Path of the `ctpctl` binary of this build (same target dir and profile as the test).
#[allow(dead_code)]
pub fn ctpctl() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // <target>/<profile>/deps/<test>-<hash> → <target>/<profile>
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("test executable lives in <target>/<profile>/deps");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--quiet", "--bin", "ctpctl"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build --bin ctpctl");
        assert!(status.success(), "cargo build --bin ctpctl failed");
        let bin = profile_dir.join("ctpctl");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}
