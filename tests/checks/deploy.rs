//! deploy/ stays consistent with the real daemon: config files load with the real settings
//! schema (unknown keys are errors), every `--flag` used exists in `ctpd --help`, and every
//! `CTP__…` variable names a real setting.
use std::path::Path;

use ctp::config::{Overrides, Settings};

fn deploy() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy().join(rel)).unwrap()
}

const FILES: [&str; 5] = [
    "Dockerfile",
    "compose.yaml",
    "k8s/ctpd.yaml",
    "k8s/object-storage/ctpd.yaml",
    "ctpd.service",
];

#[test]
fn config_files_load_with_the_real_schema() {
    for f in [
        "config/ctpd.example.toml",
        "config/ctpd.production.toml",
        "config/ctpd-object-storage.toml",
    ] {
        Settings::load(Some(&deploy().join(f)), vec![], &Overrides::default())
            .unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    // The example documents the defaults.
    let example = Settings::load(
        Some(&deploy().join("config/ctpd.example.toml")),
        vec![],
        &Overrides::default(),
    )
    .unwrap();
    let mut defaults = Settings::default();
    defaults.engine.weights_dir = example.engine.weights_dir.clone();
    assert_eq!(
        example, defaults,
        "ctpd.example.toml drifted from the compiled-in defaults"
    );
}

#[test]
fn every_flag_used_in_deploy_exists() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_ctpd"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for f in FILES {
        // Comments may quote other tools' command lines.
        let text: String = read(f)
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        for flag in text
            .split(|c: char| c.is_whitespace() || "\"',[]".contains(c))
            .filter(|t| {
                t.starts_with("--") && t.chars().nth(2).is_some_and(|c| c.is_ascii_alphabetic())
            })
        {
            if f == "Dockerfile"
                && [
                    "--no-install-recommends",
                    "--no-cache-dir",
                    "--release",
                    "--bin",
                    "--break-system-packages",
                    "--no-deps",
                    "--target",
                    "--from=build",
                    "--from=weights",
                ]
                .contains(&flag)
            {
                continue; // apt/pip/cargo/docker flags, not ctpd's
            }
            if f == "compose.yaml" && flag == "--addr" {
                continue; // ctpctl's
            }
            assert!(
                help.contains(flag),
                "{f} uses {flag}, which ctpd does not accept"
            );
        }
    }
}

#[test]
fn every_environment_override_names_a_real_setting() {
    for f in FILES {
        let text = read(f);
        for (i, _) in text.match_indices("CTP__") {
            let key: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let value = if key.ends_with("DATABASE_URL") {
                "postgres://u:p@h/db"
            } else {
                "cuda"
            };
            let env = vec![(key.clone(), value.to_string())];
            Settings::load(None, env, &Overrides::default())
                .unwrap_or_else(|e| panic!("{f}: {key}: {e}"));
        }
    }
}
