//! `ctpctl` against a live daemon: submit (JSONL and WebDataset) with --wait, versions, watch,
//! rollback (and its ABORTED exit code), report with PNGs, health, and an unreachable daemon.
use std::path::Path;
use std::process::Output;

use crate::helpers::*;

async fn ctpctl(addr: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(bins::ctpctl())
        .arg("--addr")
        .arg(addr)
        .args(args)
        .output()
        .await
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A JSONL manifest with images in a folder (shape 0, with splits).
fn write_jsonl(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut lines = String::new();
    for (i, s) in shape_samples(0).into_iter().enumerate() {
        let rel = format!("images/{i}.png");
        std::fs::write(dir.join(&rel), &s.image).unwrap();
        let split = if s.split == ctp_api::pb::Split::Eval as i32 {
            "eval"
        } else {
            "train"
        };
        let caption = String::from_utf8(s.caption).unwrap();
        lines.push_str(
            &serde_json::json!({"image": rel, "caption": caption, "split": split}).to_string(),
        );
        lines.push('\n');
    }
    let path = dir.join("task.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

/// A WebDataset shard (key.png + key.txt) of shape 1, no splits.
fn write_shard(path: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (i, s) in shape_samples(1).into_iter().enumerate() {
        for (ext, data) in [("png", s.image.clone()), ("txt", s.caption.clone())] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("{i:04}.{ext}"), &data[..])
                .unwrap();
        }
    }
    b.finish().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctpctl_drives_a_live_daemon() {
    let app = spawn_app(Db::Sqlite).await;
    let addr = app.addr.clone();
    let dir = tempfile::tempdir().unwrap();
    let common = [
        "--preset",
        "tiny",
        "--epochs",
        "2",
        "--batch-size",
        "5",
        "--wait",
    ];

    let jsonl = write_jsonl(&dir.path().join("a"));
    let mut args = vec!["submit", "--model", "m", "--name", "squares"];
    args.extend(common);
    args.push(jsonl.to_str().unwrap());
    let out = ok(&ctpctl(&addr, &args).await);
    let first_id = out
        .lines()
        .find(|l| l.len() == 36 && l.matches('-').count() == 4)
        .expect("task id printed")
        .to_string();

    let shard = dir.path().join("b.tar");
    write_shard(&shard);
    let mut args = vec![
        "submit",
        "--model",
        "m",
        "--name",
        "discs",
        "--eval-fraction",
        "0.3",
    ];
    args.extend(common);
    args.push(shard.to_str().unwrap());
    ok(&ctpctl(&addr, &args).await);

    let json = ok(&ctpctl(&addr, &["--json", "versions", "--model", "m"]).await);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let list = v
        .as_array()
        .cloned()
        .or_else(|| v["versions"].as_array().cloned())
        .unwrap();
    assert_eq!(list.len(), 2, "{json}");
    let table = ok(&ctpctl(&addr, &["versions", "--model", "m"]).await);
    assert!(
        table.contains("squares") && table.contains("discs"),
        "{table}"
    );

    // Watching a finished task replays it and exits 0.
    ok(&ctpctl(&addr, &["watch", &first_id]).await);
    ok(&ctpctl(&addr, &["tasks", "--model", "m"]).await);
    ok(&ctpctl(&addr, &["health"]).await);

    // Rollback: a stale expected head is ABORTED (exit 2, one clear line), then the real one.
    let stale = ctpctl(
        &addr,
        &[
            "rollback",
            "--model",
            "m",
            "--to",
            "1",
            "--expected-head",
            "5",
        ],
    )
    .await;
    assert_eq!(stale.status.code(), Some(2));
    let err = String::from_utf8_lossy(&stale.stderr);
    assert!(err.contains("ABORTED"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    ok(&ctpctl(
        &addr,
        &[
            "rollback",
            "--model",
            "m",
            "--to",
            "1",
            "--expected-head",
            "2",
            "--reason",
            "test",
        ],
    )
    .await);
    let json = ok(&ctpctl(&addr, &["--json", "versions", "--model", "m"]).await);
    assert!(
        json.contains("\"is_head\": true") || json.contains("\"is_head\":true"),
        "{json}"
    );

    // The report: HTML plus PNGs that are real PNG files.
    let report = dir.path().join("report");
    ok(&ctpctl(
        &addr,
        &["report", "--model", "m", "--out", report.to_str().unwrap()],
    )
    .await);
    assert!(std::fs::read_to_string(report.join("index.html"))
        .unwrap()
        .contains("<html"));
    for png in ["accuracy.png", "forgetting.png", "syncs.png", "losses.png"] {
        let bytes = std::fs::read(report.join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png}");
        image::load_from_memory(&bytes).unwrap_or_else(|e| panic!("{png} does not decode: {e}"));
    }

    // Unknown task: server rejection exit code; dead daemon: unavailable exit code.
    let missing = ctpctl(&addr, &["watch", "00000000-0000-0000-0000-000000000000"]).await;
    assert_eq!(
        missing.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    app.stop().await;
    let dead = ctpctl(&addr, &["health"]).await;
    assert_eq!(dead.status.code(), Some(3));
}
