//! `ctpd --data-dir D verify` (issue #24 §2) on a stopped daemon's data dir: sound after real tasks; each
//! kind of damage is named (a version file changed, a version file gone, a bundle cut short,
//! a head that points nowhere), exit status 1; stray and temp files are listed, and
//! `--repair` quarantines them without deleting anything. A running owner makes it refuse.
use std::path::Path;
use std::process::Command;

use ctp_api::pb;

use crate::helpers::*;

/// `ctpd verify [extra]` on `dir`: (exit code, stdout + stderr).
fn verify(dir: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ctpd"))
        .args(["--device", "cpu", "--data-dir"])
        .arg(dir)
        .arg("verify")
        .args(extra)
        .env("CTP__ENGINE__THREADS", "1")
        .env(
            "CTP__ENGINE__WEIGHTS_DIR",
            format!("{:?}", assets::weights().display().to_string()),
        )
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn only_file(dir: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_a_sound_data_dir_and_names_each_kind_of_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let app = spawn_app_in(String::new(), &dir, vec![]).await;
    let mut c = connect(&app.addr).await;
    for (i, name) in ["a", "b"].iter().enumerate() {
        let t = submit(&mut c, header("m", name, 1), shape_samples(i))
            .await
            .unwrap();
        let end = terminal(&watch_all(&mut c, &t.id, 0).await);
        assert_eq!(end.state, pb::TaskState::Succeeded as i32, "{}", end.error);
    }
    // While the owner runs, verify refuses rather than race it.
    let (code, text) = verify(&dir, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("in use by another ctpd"), "{text}");
    app.stop().await;

    let (code, text) = verify(&dir, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("2 versions, 2 tasks") && text.contains("sound"),
        "{text}"
    );

    // Strays are listed, not problems; --repair quarantines them and deletes nothing.
    std::fs::write(dir.join("versions/stray.safetensors"), b"x").unwrap();
    std::fs::write(dir.join("tasks/.upload-cut.tmp"), b"x").unwrap();
    let (code, text) = verify(&dir, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("unreferenced: versions/stray.safetensors"),
        "{text}"
    );
    assert!(text.contains("temp file: tasks/.upload-cut.tmp"), "{text}");
    let (code, text) = verify(&dir, &["--repair"]);
    assert_eq!(code, 0, "{text}");
    assert!(!dir.join("versions/stray.safetensors").exists());
    let quarantined: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("quarantined: "))
        .map(String::from)
        .collect();
    assert_eq!(quarantined.len(), 2, "{text}");
    for q in &quarantined {
        assert!(dir.join(q).is_file(), "{q} kept in quarantine");
    }

    // A version file changed by one byte.
    let version = only_file(&dir.join("versions"));
    let good = std::fs::read(&version).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&version, &bad).unwrap();
    let (code, text) = verify(&dir, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("version m/") && text.contains("sha256"),
        "{text}"
    );
    // … and gone.
    std::fs::remove_file(&version).unwrap();
    let (code, text) = verify(&dir, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is missing"), "{text}");
    std::fs::write(&version, &good).unwrap();

    // A bundle cut short.
    let bundle = only_file(&dir.join("tasks"));
    let full = std::fs::read(&bundle).unwrap();
    std::fs::write(&bundle, &full[..full.len() / 2]).unwrap();
    let (code, text) = verify(&dir, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("does not decode"), "{text}");
    std::fs::write(&bundle, &full).unwrap();

    // A head that points nowhere (a hand-edited database).
    let url = format!("sqlite://{}", dir.join("ctp.sqlite").display());
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("UPDATE models SET head_version = 99 WHERE name = 'm'")
        .execute(&mut db)
        .await
        .unwrap();
    drop(db);
    let (code, text) = verify(&dir, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("model m: head 99 does not exist"), "{text}");
}

/// `ctpctl verify` against the running daemon: the exit status and all it printed.
async fn verify_online(addr: &str, extra: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(bins::ctpctl())
        .args(["--addr", addr, "verify"])
        .args(extra)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Issue #24 §2 "the same check through a running daemon": `ctpctl verify` while a task
/// trains (its resume point and in-flight files are no problem), with the weights loaded,
/// and a damaged version file named with exit status 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctpctl_verify_checks_a_running_daemon_and_names_damage() {
    const CHECKPOINT_EVERY: u64 = 4;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let env = vec![(
        "CTP__TRAINING__CHECKPOINT_EVERY".to_string(),
        CHECKPOINT_EVERY.to_string(),
    )];
    let app = spawn_app_in(String::new(), &dir, env).await;
    let mut c = connect(&app.addr).await;
    let t = submit(&mut c, header("m", "a", 1), shape_samples(0))
        .await
        .unwrap();
    let end = terminal(&watch_all(&mut c, &t.id, 0).await);
    assert_eq!(end.state, pb::TaskState::Succeeded as i32, "{}", end.error);

    // A long task past its first resume checkpoint (events arrive in order).
    let long = submit(&mut c, header("m", "long", 5000), shape_samples(1))
        .await
        .unwrap();
    let mut s = c
        .watch_task(pb::WatchTaskRequest {
            task_id: long.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(ev) = s.message().await.unwrap() {
        if matches!(ev.event, Some(pb::task_event::Event::Progress(ref p)) if p.step > CHECKPOINT_EVERY)
        {
            break;
        }
    }
    let (code, text) = verify_online(&app.addr, &[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("1 versions, 2 tasks, 1 resume points: sound"),
        "{text}"
    );
    c.cancel_task(pb::CancelTaskRequest {
        task_id: long.id.clone(),
    })
    .await
    .unwrap();
    terminal(&watch_all(&mut c, &long.id, 0).await);

    std::fs::write(dir.join("versions/stray.safetensors"), b"x").unwrap();
    let (code, text) = verify_online(&app.addr, &["--load-weights"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("(weights loaded): sound"), "{text}");
    assert!(
        text.contains("unreferenced: versions/stray.safetensors"),
        "{text}"
    );
    std::fs::remove_file(dir.join("versions/stray.safetensors")).unwrap();

    // One byte of the version file changed: named, exit 6, and nothing was moved.
    let version = only_file(&dir.join("versions"));
    let mut bad = std::fs::read(&version).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&version, &bad).unwrap();
    let (code, text) = verify_online(&app.addr, &[]).await;
    assert_eq!(code, 6, "{text}");
    assert!(
        text.contains("problem: version m/1") && text.contains("sha256"),
        "{text}"
    );
    assert!(version.is_file());
    app.stop().await;
}
