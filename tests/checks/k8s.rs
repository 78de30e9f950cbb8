//! Every manifest under deploy/k8s is valid Kubernetes: `kubernetes-validate --strict` (pinned
//! and installed into `$CTP_VENV` by scripts/setup-k8s-validate.sh; it bundles the schemas and
//! runs offline) accepts every resource, with no unknown field, against the oldest and the newest
//! Kubernetes version we support. A resource it has no schema for fails too (the tool itself
//! only warns). A ConfigMap that carries a ctpd config file carries one of deploy/config/
//! verbatim, so the file the daemon tests start with is the one the cluster gets.
use std::path::{Path, PathBuf};
use std::process::Command;

use ctp::config::{Overrides, Settings};

/// The Kubernetes versions the manifests must validate against: the oldest supported (native
/// gRPC probes are GA since 1.27) and the newest the pinned tool knows.
const VERSIONS: [&str; 2] = ["1.30", "1.37"];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every `.yaml`/`.yml` file under deploy/k8s, sorted.
fn manifests() -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap().map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    let mut all = Vec::new();
    walk(&deploy().join("k8s"), &mut all);
    all.sort();
    assert!(all.len() >= 3, "no manifests found: {all:?}");
    all
}

/// The resources (non-empty YAML documents) of one file.
fn documents(path: &Path) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

/// `$CTP_VENV/bin/kubernetes-validate` (default venv `~/.cache/ctp/venv`), else on PATH.
fn validator() -> PathBuf {
    let venv = std::env::var_os("CTP_VENV").map(PathBuf::from).or_else(|| {
        let cache = std::env::var_os("CTP_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ctp")))?;
        Some(cache.join("venv"))
    });
    venv.map(|v| v.join("bin/kubernetes-validate"))
        .filter(|p| p.is_file())
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join("kubernetes-validate"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "kubernetes-validate not found in $CTP_VENV/bin or on PATH: run \
                 scripts/setup-k8s-validate.sh (scripts/test.sh does)"
            )
        })
}

#[test]
fn every_manifest_validates_strictly_against_the_kubernetes_schemas() {
    let tool = validator();
    let files = manifests();
    for version in VERSIONS {
        let out = Command::new(&tool)
            .args(["--strict", "-k", version])
            .args(&files)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kubernetes-validate --strict -k {version} failed ({}):\n{text}",
            out.status
        );
        // The tool only warns about a kind it has no schema for: that is a failure here.
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("INFO ") || !l.contains(" passed for resource "))
            .collect();
        assert!(
            bad.is_empty(),
            "kubernetes-validate --strict -k {version}:\n{}",
            bad.join("\n")
        );
        for f in &files {
            let passed = text
                .lines()
                .filter(|l| l.starts_with(&format!("INFO {} passed ", f.display())))
                .count();
            assert_eq!(
                passed,
                documents(f).len(),
                "{}: not every resource was validated against {version}:\n{text}",
                f.display()
            );
        }
    }
}

#[test]
fn config_maps_carry_a_deploy_config_file_verbatim() {
    let mut seen = 0;
    for f in manifests() {
        for doc in documents(&f) {
            if doc["kind"].as_str() != Some("ConfigMap") {
                continue;
            }
            let data = doc["data"].as_mapping().cloned().unwrap_or_default();
            for (key, value) in data {
                let (key, value) = (key.as_str().unwrap(), value.as_str().unwrap());
                if !key.ends_with(".toml") {
                    continue;
                }
                let same = std::fs::read_dir(deploy().join("config"))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t == value))
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: ConfigMap key {key} is no file of deploy/config/ verbatim",
                            f.display()
                        )
                    });
                Settings::load(Some(&same), vec![], &Overrides::default())
                    .unwrap_or_else(|e| panic!("{}: {e}", same.display()));
                seen += 1;
            }
        }
    }
    assert!(seen >= 1, "no ConfigMap carries a ctpd config file");
}
