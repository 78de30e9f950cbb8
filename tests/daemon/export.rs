//! Issue #25 §1, verified export: `ctpctl export` downloads a version (weights, config.json,
//! tokenizer, model card, probe set) with every file checked by sha256; the probe's embeddings
//! are the daemon's own (stored at commit, or computed on demand for a version from before);
//! the Python client's exporter (`python -m ctp_client.export`) converts the download to ONNX
//! and to safetensors + a PyTorch module and verifies each against the probe, and refuses,
//! writing nothing, when a probe embedding or a weight was tampered with.
use std::path::{Path, PathBuf};

use ctp_api::pb;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::*;

const FILES: [&str; 6] = [
    "weights.safetensors",
    "config.json",
    "tokenizer.json",
    "model_card.md",
    "model_card.json",
    "probe.json",
];

pub(crate) async fn ctpctl_export(
    addr: &str,
    model: &str,
    version: Option<i64>,
    out: &Path,
) -> Value {
    let mut args = vec![
        "--addr".to_string(),
        addr.to_string(),
        "--json".into(),
        "export".into(),
        "--model".into(),
        model.into(),
        "--out".into(),
        out.display().to_string(),
    ];
    if let Some(v) = version {
        args.extend(["--version".into(), v.to_string()]);
    }
    let o = tokio::process::Command::new(bins::ctpctl())
        .args(&args)
        .output()
        .await
        .unwrap();
    assert!(
        o.status.success(),
        "ctpctl export failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

pub(crate) fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn sha256(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// Trains one task of `samples` on `model` and returns the produced version.
pub(crate) async fn train(
    app: &TestApp,
    model: &str,
    preset: &str,
    name: &str,
    samples: Vec<pb::Sample>,
) -> i64 {
    let mut c = app.client.clone();
    let mut h = header(model, name, 1);
    h.preset = preset.into();
    let task = submit(&mut c, h, samples).await.unwrap();
    let t = terminal(&watch_all(&mut c, &task.id, 0).await);
    assert_eq!(t.state, pb::TaskState::Succeeded as i32, "{t:?}");
    t.produced_version.unwrap()
}

/// The download is complete and consistent with what the daemon reports.
fn check_download(dir: &Path, manifest: &Value, v: &pb::Version, lineage: usize) {
    let names: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, FILES);
    for f in manifest["files"].as_array().unwrap() {
        let p = dir.join(f["name"].as_str().unwrap());
        assert_eq!(sha256(&p), f["sha256"].as_str().unwrap(), "{}", p.display());
    }
    // The weights are the version's checkpoint, byte for byte.
    assert_eq!(sha256(&dir.join(FILES[0])), v.checkpoint_sha256);
    let card = json(&dir.join("model_card.json"));
    assert_eq!(card["version"], v.version);
    assert_eq!(card["checkpoint_sha256"], v.checkpoint_sha256.as_str());
    assert_eq!(card["device"], "cpu");
    assert_eq!(card["precision"], "fp32");
    assert_eq!(card["lineage"].as_array().unwrap().len(), lineage);
    assert_eq!(
        card["accuracy_matrix"]["rows"].as_array().unwrap().len(),
        lineage
    );
    assert!(card["anchors"].is_null(), "anchor results are added later");
    assert!(card["lineage"][0]["settings"]["epochs"].is_number());
    let rm = card["evaluation"]["per_task"][lineage - 1]["rm"]
        .as_f64()
        .unwrap();
    let own = v.evals.last().unwrap().rm;
    assert!((rm - own).abs() < 1e-9, "card Rm {rm} vs GetVersion {own}");
    let md = std::fs::read_to_string(dir.join("model_card.md")).unwrap();
    for needle in [
        &v.checkpoint_sha256[..],
        "Accuracy matrix",
        "Anchor results",
        "Lineage",
    ] {
        assert!(md.contains(needle), "model_card.md lacks {needle}");
    }
    let config = json(&dir.join("config.json"));
    assert_eq!(config["weights"]["sha256"], v.checkpoint_sha256.as_str());
    assert!(config["preprocessing"]["image_size"].is_number());
}

/// The probe's embeddings are what Embed returns for the same images and captions.
async fn probe_matches_embed(app: &TestApp, model: &str, dir: &Path) {
    let probe = json(&dir.join("probe.json"));
    let size = probe["image_size"].as_u64().unwrap() as u32;
    let samples = probe["samples"].as_array().unwrap();
    assert!(!samples.is_empty() && samples.len() <= 8);
    let mut images = Vec::new();
    let mut texts = Vec::new();
    for s in samples {
        let px = base64_decode(s["pixels_base64"].as_str().unwrap());
        assert_eq!(px.len(), (size * size * 3) as usize);
        images.push(png(&px, size, size));
        texts.push(s["caption"].as_str().unwrap().to_string());
    }
    let mut c = app.client.clone();
    let e = c
        .embed(pb::EmbedRequest {
            model: model.into(),
            version: Some(probe["version"].as_i64().unwrap()),
            images,
            texts,
        })
        .await
        .unwrap()
        .into_inner();
    let cos = |a: &[f32], b: &Value| {
        let b: Vec<f32> = b
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
    };
    for (i, s) in samples.iter().enumerate() {
        let ci = cos(&e.image_embeddings[i].values, &s["image_embedding"]);
        let ct = cos(&e.text_embeddings[i].values, &s["text_embedding"]);
        assert!(ci > 0.99999 && ct > 0.99999, "sample {i}: cos {ci} / {ct}");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    for q in s.as_bytes().chunks(4) {
        let pad = q.iter().filter(|&&c| c == b'=').count();
        let n = q.iter().fold(0u32, |acc, &c| {
            (acc << 6) | if c == b'=' { 0 } else { u32::from(val(c)) }
        });
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

/// `python -m ctp_client.export` with the package from the source tree; returns its output.
pub(crate) fn python_export(from: &Path, format: &str, out: &Path) -> std::process::Output {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python/src");
    std::process::Command::new(assets::python())
        .args(["-m", "ctp_client.export", "--from"])
        .arg(from)
        .args(["--format", format, "--out"])
        .arg(out)
        .env("PYTHONPATH", src)
        .output()
        .unwrap()
}

pub(crate) fn python_ok(from: &Path, format: &str, out: &Path) -> Value {
    let o = python_export(from, format, out);
    assert!(
        o.status.success(),
        "ctp_client.export --format {format} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let report = json(&out.join("verification.json"));
    assert_eq!(report["passed"], true, "{report}");
    assert!(report["min_cosine"].as_f64().unwrap() >= 0.9999, "{report}");
    report
}

pub(crate) fn copy_dir(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    to.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctpctl_exports_a_version_that_converts_and_verifies() {
    let app = spawn_app(Db::Sqlite).await;
    let v1 = train(&app, "exp", "tiny", "shapes-0", shape_samples(0)).await;
    let v2 = train(&app, "exp", "tiny", "shapes-1", shape_samples(1)).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut c = app.client.clone();
    let get = |v: i64| pb::GetVersionRequest {
        model: "exp".into(),
        version: Some(v),
    };
    let version2 = c.get_version(get(v2)).await.unwrap().into_inner();

    // The head (version 2), its lineage of two, and version 1 by number.
    let d2 = tmp.path().join("v2");
    let m = ctpctl_export(&app.addr, "exp", None, &d2).await;
    assert_eq!(m["version"], v2);
    assert_eq!(m["probe_source"], "stored");
    check_download(&d2, &m, &version2, 2);
    let card = json(&d2.join("model_card.json"));
    assert_eq!(card["forgetting"]["per_task"].as_array().unwrap().len(), 1);
    assert!(card["bwt"].is_number());
    assert_eq!(card["accuracy_matrix"]["rows"][0]["rm"][1], Value::Null);
    probe_matches_embed(&app, "exp", &d2).await;
    python_round_trip(&d2, tmp.path());
    let d1 = tmp.path().join("v1");
    let m = ctpctl_export(&app.addr, "exp", Some(v1), &d1).await;
    let version1 = c.get_version(get(v1)).await.unwrap().into_inner();
    check_download(&d1, &m, &version1, 1);

    // Unknown model or version: NOT_FOUND (exit 2), and no folder.
    for (model, v) in [("nope", None), ("exp", Some(99))] {
        let out = tmp.path().join("missing");
        let mut cmd = tokio::process::Command::new(bins::ctpctl());
        cmd.args(["--addr", &app.addr, "export", "--model", model, "--out"])
            .arg(&out);
        if let Some(v) = v {
            cmd.args(["--version", &v.to_string()]);
        }
        let o = cmd.output().await.unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("NOT_FOUND"), "{stderr}");
        assert!(!out.exists());
    }
    app.stop().await;
}

/// Both formats convert and verify; a tampered probe embedding or weight fails the export,
/// and nothing is written (no OUT, no temp folder next to it).
fn python_round_trip(download: &Path, tmp: &Path) {
    let onnx = tmp.join("onnx");
    let r = python_ok(download, "onnx", &onnx);
    assert!(
        r["runtime"].as_str().unwrap().starts_with("onnxruntime"),
        "{r}"
    );
    for f in [
        "image_encoder.onnx",
        "text_encoder.onnx",
        "preprocessing.json",
        "tokenizer.json",
    ] {
        assert!(onnx.join(f).is_file(), "{f}");
    }
    let st = tmp.join("st");
    python_ok(download, "safetensors", &st);
    for f in [
        "model.safetensors",
        "config.json",
        "ctp_torch.py",
        "model_card.md",
    ] {
        assert!(st.join(f).is_file(), "{f}");
    }

    let refused = |from: &Path, needle: &str| {
        let scratch = tempfile::tempdir_in(tmp).unwrap();
        let out = scratch.path().join("out");
        for format in ["safetensors", "onnx"] {
            let o = python_export(from, format, &out);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{format}: {stderr}");
            assert!(stderr.contains(needle), "{format}: {stderr}");
            assert_eq!(
                std::fs::read_dir(scratch.path()).unwrap().count(),
                0,
                "{format}: wrote something"
            );
        }
    };
    // One probe embedding changed (two of its values swapped).
    let probe_dir = copy_dir(download, &tmp.join("tampered-probe"));
    let mut probe = json(&probe_dir.join("probe.json"));
    let e = probe["samples"][1]["image_embedding"]
        .as_array_mut()
        .unwrap();
    let big = (0..e.len())
        .max_by(|&a, &b| {
            e[a].as_f64()
                .unwrap()
                .abs()
                .total_cmp(&e[b].as_f64().unwrap().abs())
        })
        .unwrap();
    let n = e.len();
    e.swap(big, (big + 1) % n);
    std::fs::write(probe_dir.join("probe.json"), probe.to_string()).unwrap();
    refused(&probe_dir, "sample 1");

    // A weight changed: refused by sha256; with the recorded sha256 forged to match, by the
    // probe check.
    let weights_dir = copy_dir(download, &tmp.join("tampered-weights"));
    let w = weights_dir.join("weights.safetensors");
    scale_tensor(&w, "online.vision_proj.weight", -1.0);
    refused(&weights_dir, "sha256");
    let mut config = json(&weights_dir.join("config.json"));
    config["weights"]["sha256"] = sha256(&w).into();
    std::fs::write(weights_dir.join("config.json"), config.to_string()).unwrap();
    refused(&weights_dir, "does not reproduce");
}

/// Multiplies one f32 tensor of a safetensors file by `k`, in place.
fn scale_tensor(path: &Path, name: &str, k: f32) {
    let mut b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let off = &header[name]["data_offsets"];
    let (lo, hi) = (
        off[0].as_u64().unwrap() as usize,
        off[1].as_u64().unwrap() as usize,
    );
    for c in b[8 + n + lo..8 + n + hi].chunks_exact_mut(4) {
        let x = f32::from_le_bytes(c.try_into().unwrap()) * k;
        c.copy_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}
