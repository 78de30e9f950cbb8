//! `cargo test` and `cargo build --bin ctpd --bin ctpctl` (scripts/demo.sh, tests/support/bins.rs)
//! compile every shared dependency with the same features, so the build after the tests reuses
//! what they compiled. Cargo turns on the dev-dependencies' features only in builds with tests:
//! one that adds a feature to a crate the daemon also uses makes that crate, and everything
//! built on it, a second unit (fantoccini's syn `fold` alone recompiled every proc-macro and
//! all they expand in). The root Cargo.toml gives the normal build those features; this test
//! names any that are missing (docs/results.md, "Build and test time").
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Every package of the workspace's graph over `edges` (`cargo tree --edges`), by name and
/// version, with the features cargo resolves for it.
fn features(edges: &str) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--workspace", "--offline", "--prefix", "none"])
        .args(["--format", "{p}|{f}", "--edges", edges])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree --edges {edges}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((package, list)) = line.trim_end_matches(" (*)").rsplit_once('|') else {
            continue;
        };
        // "name vX.Y.Z", without " (proc-macro)" or a path.
        let package = package.split(" (").next().unwrap_or(package).to_string();
        all.entry(package)
            .or_default()
            .extend(list.split(',').filter(|f| !f.is_empty()).map(String::from));
    }
    all
}

#[test]
fn dev_dependencies_turn_on_no_feature_the_normal_build_lacks() {
    let normal = features("normal,build");
    let with_dev = features("normal,build,dev");
    assert!(normal.keys().any(|p| p.starts_with("tokio ")), "{normal:?}");
    let missing: Vec<String> = normal
        .iter()
        .filter_map(|(package, have)| {
            let added: Vec<&str> = with_dev
                .get(package)?
                .difference(have)
                .map(String::as_str)
                .collect();
            (!added.is_empty()).then(|| format!("{package}: {}", added.join(", ")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "dev-dependencies turn on features the normal build lacks, so the build after the \
         tests compiles these crates and all built on them again; add the features to the root \
         Cargo.toml ([dependencies], or [build-dependencies] for proc-macro crates such as \
         syn):\n{}",
        missing.join("\n")
    );
}
