//! Binaries of other workspace packages. `CARGO_BIN_EXE_*` only names the binaries of the
//! package under test (ctp: ctpd); `ctpctl` lives in `crates/ctpctl`, so it is built here once
//! per test process with `cargo build --bin ctpd --bin ctpctl` (a no-op when it is up to date,
//! and never stale after an edit of the client) and found next to this test's `deps/`.
//! `--bin ctpd` too: with the daemon's package in the build, cargo gives every dependency the
//! features `cargo test` gave it, so nothing is compiled twice (`--bin ctpctl` alone resolved
//! ~30 host-side units, prost-build and tempfile among them, with other features).
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
        cmd.args(["build", "--quiet", "--bin", "ctpd", "--bin", "ctpctl"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // The environment cargo gives a test process (this package's CARGO_PKG_*, OUT_DIR, …)
        // is not a build's: passed on, it makes the nested build see changed inputs and
        // recompile what the outer `cargo test` just built.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            let cargo_set = (k.starts_with("CARGO_")
                && !["CARGO_HOME", "CARGO_TARGET_DIR"].contains(&k.as_ref())
                && !k.starts_with("CARGO_BUILD_")
                && !k.starts_with("CARGO_NET_")
                && !k.starts_with("CARGO_REGISTR")
                && !k.starts_with("CARGO_TERM_"))
                || k == "OUT_DIR";
            if cargo_set {
                cmd.env_remove(&key);
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("running cargo build --bin ctpd --bin ctpctl");
        assert!(
            status.success(),
            "cargo build --bin ctpd --bin ctpctl failed"
        );
        let bin = profile_dir.join("ctpctl");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}
