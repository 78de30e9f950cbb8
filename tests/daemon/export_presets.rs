//! Issue #25 §1, verified export beyond `tiny`: the `small` preset (EfficientNet-Lite0 +
//! MiniLM, pretrained weights from scripts/setup-data.sh) converts to ONNX and safetensors;
//! the `base` preset (ViT-B/16 + BERT-base, random initial weights with the real shapes)
//! converts to safetensors and its PyTorch module reproduces the daemon's embeddings; a
//! version from before probes were stored (the upgrade fixture of commit 49a029a) exports
//! with its probe computed on demand.
use std::path::Path;

use ctp_api::pb;

use crate::export::{copy_dir, ctpctl_export, json, python_ok, train};
use crate::helpers::*;

fn check_architecture(dir: &Path, preset: &str, vision: &str, dim: u64) {
    let config = json(&dir.join("config.json"));
    assert_eq!(config["preset"], preset);
    assert_eq!(config["vision"]["kind"], vision);
    assert_eq!(config["embed_dim"], dim);
    let probe = json(&dir.join("probe.json"));
    assert_eq!(probe["source"], "stored");
    assert_eq!(
        probe["samples"][0]["image_embedding"]
            .as_array()
            .unwrap()
            .len() as u64,
        dim
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_exports_to_onnx_and_safetensors() {
    let app = spawn_app(Db::Sqlite).await;
    let v = train(&app, "sm", "small", "shapes-2", shape_samples(2)).await;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("download");
    let m = ctpctl_export(&app.addr, "sm", Some(v), &d).await;
    assert_eq!(m["preset"], "small");
    check_architecture(&d, "small", "efficientnet-lite0", 256);
    let config = json(&d.join("config.json"));
    assert_eq!(
        config["text"]["pool"].as_str().unwrap().split(':').next(),
        Some("mean")
    );
    python_ok(&d, "onnx", &tmp.path().join("onnx"));
    python_ok(&d, "safetensors", &tmp.path().join("st"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_shapes_export_and_verify_in_pytorch() {
    let app = spawn_app(Db::Sqlite).await;
    let mut c = app.client.clone();
    let mut h = header("bs", "shapes-3", 1);
    h.preset = "base".into();
    let s = h.settings.as_mut().unwrap();
    // One step, no momentum model: the checkpoint is the online model alone (~0.9 GB).
    s.batch_size = Some(10);
    s.method = pb::Method::Seqft as i32;
    let task = submit(&mut c, h, shape_samples(3)).await.unwrap();
    let t = terminal(&watch_all(&mut c, &task.id, 0).await);
    assert_eq!(t.state, pb::TaskState::Succeeded as i32, "{t:?}");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("download");
    ctpctl_export(&app.addr, "bs", None, &d).await;
    check_architecture(&d, "base", "vit", 256);
    let config = json(&d.join("config.json"));
    assert_eq!(config["architecture"]["vit_width"], 768);
    assert_eq!(config["architecture"]["hidden"], 768);
    assert_eq!(config["preprocessing"]["image_size"], 224);
    // ONNX at this size is left to the user (docs/export.md); the PyTorch module is checked.
    python_ok(&d, "safetensors", &tmp.path().join("st"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_from_before_stored_probes_exports_with_a_computed_probe() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade/49a029a");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    copy_dir(&fixture.join("data"), &dir);
    let weights = format!("{:?}", fixture.join("weights").display().to_string());
    let env = vec![("CTP__ENGINE__WEIGHTS_DIR".to_string(), weights)];
    let app = spawn_app_in(String::new(), &dir, env).await;
    let d = tmp.path().join("v1");
    let m = ctpctl_export(&app.addr, "m", Some(1), &d).await;
    assert_eq!(m["probe_source"], "computed");
    let probe = json(&d.join("probe.json"));
    assert_eq!(probe["source"], "computed");
    assert_eq!(
        probe["samples"].as_array().unwrap().len(),
        6,
        "the task's 6 eval samples"
    );
    // Computed again for a second export: the same embeddings.
    let again = ctpctl_export(&app.addr, "m", Some(1), &tmp.path().join("again")).await;
    let sha = |m: &serde_json::Value| m["files"][5]["sha256"].clone();
    assert_eq!(sha(&m), sha(&again));
    python_ok(&d, "safetensors", &tmp.path().join("st"));
    app.stop().await;
}
