//! Shared test helpers: where the installed assets and torch's Python live.
#![allow(dead_code)]
use std::path::PathBuf;

fn cache() -> PathBuf {
    std::env::var("CTP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/ctp"))
}

/// The assets folder installed by `scripts/setup-data.sh`; panics with the fix if missing.
pub fn assets() -> PathBuf {
    let dir = std::env::var("CTP_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache().join("assets"));
    assert!(
        dir.join("weights/minilm/tokenizer.json").exists(),
        "assets missing in {}: run scripts/setup-data.sh (the README's test command does)",
        dir.display()
    );
    dir
}

pub fn weights() -> PathBuf {
    assets().join("weights")
}

/// Python with torch 2.11 + safetensors (installed by scripts/setup-torch.sh).
pub fn python() -> PathBuf {
    let p = std::env::var("CTP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache().join("venv/bin/python"));
    assert!(
        p.exists(),
        "{} missing: run scripts/setup-torch.sh",
        p.display()
    );
    p
}
