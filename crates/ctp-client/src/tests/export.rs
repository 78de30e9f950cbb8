//! `ctpctl export` against the mock: files land only when every one matches the manifest.
use std::sync::Arc;

use super::mock::{serve, Mock};
use super::{cli, execute_owned};
use crate::error;

#[tokio::test]
async fn export_writes_a_complete_folder_or_nothing() {
    let addr = serve(Arc::new(Mock::default())).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m-3");
    let run = |model: &str, out: &std::path::Path| {
        execute_owned(cli(
            &addr,
            &[
                "--json",
                "export",
                "--model",
                model,
                "--out",
                out.to_str().unwrap(),
            ],
        ))
    };
    assert_eq!(run("m", &out).await.unwrap(), error::EXIT_OK);
    assert_eq!(
        std::fs::read(out.join("weights.safetensors")).unwrap(),
        b"0123456789"
    );
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), b"{}");
    // Nothing else next to it: the temp folder was renamed.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // An occupied --out is refused before anything is asked.
    let e = run("m", &out).await.unwrap_err();
    assert_eq!(e.exit_code(), error::EXIT_LOCAL);

    // A file whose bytes do not match the manifest: no folder, no temp folder.
    let bad = dir.path().join("bad");
    let e = run("tampered", &bad).await.unwrap_err();
    assert_eq!(e.exit_code(), error::EXIT_LOCAL);
    assert!(e.to_string().contains("weights.safetensors"), "{e}");
    assert!(!bad.exists());
    let e = run("nope", &bad).await.unwrap_err();
    assert_eq!(e.exit_code(), error::EXIT_REJECTED);
    assert!(e.to_string().starts_with("NOT_FOUND"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
