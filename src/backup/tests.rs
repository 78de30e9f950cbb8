//! The file side of backups and restores, without a daemon: what happens when a referenced
//! file is gone, replaced or damaged, and what a restore refuses. The whole path through a
//! running daemon is `tests/daemon/backup.rs`.
use std::collections::BTreeMap;
use std::fs;

use super::manifest::{hash_file, FileEntry, Manifest, DATABASE, FORMAT, MANIFEST};
use super::restore::{restore, RestoreError};
use super::*;

fn refs(files: &[(&str, Option<&str>)]) -> SnapshotRefs {
    SnapshotRefs {
        schema_version: 1,
        files: files
            .iter()
            .map(|(p, s)| (p.to_string(), s.map(str::to_string)))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// A resume checkpoint the worker replaced between the database copy and the open asks for
/// another copy; any other missing file is named; a path leaving the data dir is refused.
#[test]
fn a_replaced_resume_checkpoint_asks_for_another_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(&tmp.path().join("d")).unwrap();
    fs::create_dir_all(data.root().join("tasks")).unwrap();
    fs::write(data.root().join("tasks/a.bundle"), b"bundle").unwrap();

    let open = open_all(&data, &refs(&[("tasks/a.bundle", None)])).unwrap();
    assert_eq!(open.map(|o| o.len()), Some(1));
    let gone = refs(&[("tasks/a.bundle", None), ("resume/t.1.3.safetensors", None)]);
    assert!(
        open_all(&data, &gone).unwrap().is_none(),
        "copy the database again"
    );
    let missing = refs(&[("versions/t.1.safetensors", Some("ab"))]);
    let e = open_all(&data, &missing).unwrap_err();
    assert!(matches!(e, BackupError::Missing { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("versions/t.1.safetensors is referenced by the database but missing"),
        "{e}"
    );
    let e = open_all(&data, &refs(&[("../elsewhere", None)])).unwrap_err();
    assert!(matches!(e, BackupError::Outside(_)), "{e:?}");
}

/// A checkpoint whose bytes differ from its recorded sha256 fails the copy, naming both.
#[test]
fn a_checkpoint_that_differs_from_its_row_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(&tmp.path().join("d")).unwrap();
    fs::create_dir_all(data.root().join("versions")).unwrap();
    let file = data.root().join("versions/t.1.safetensors");
    fs::write(&file, b"weights").unwrap();
    let (sha, _) = hash_file(&file).unwrap();
    let target = tmp.path().join("b");
    let good = refs(&[("versions/t.1.safetensors", Some(&sha))]);
    let open = open_all(&data, &good).unwrap().unwrap();
    let copied = copy_files(&data, &target, open, &good).unwrap();
    assert_eq!(copied[0].sha256, sha);
    assert_eq!(
        fs::read(target.join("versions/t.1.safetensors")).unwrap(),
        b"weights"
    );

    let wrong = "0".repeat(64);
    let bad = refs(&[("versions/t.1.safetensors", Some(&wrong))]);
    let open = open_all(&data, &bad).unwrap().unwrap();
    let e = copy_files(&data, &tmp.path().join("c"), open, &bad).unwrap_err();
    assert!(matches!(e, BackupError::Corrupt { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&sha) && msg.contains(&wrong) && msg.contains("t.1.safetensors"),
        "{msg}"
    );
}

/// A backup folder by hand: a database and one file, with their manifest.
fn snapshot(dir: &Path) -> Manifest {
    fs::create_dir_all(dir.join("versions")).unwrap();
    fs::write(dir.join(DATABASE), b"db").unwrap();
    fs::write(dir.join("versions/v.safetensors"), b"weights").unwrap();
    let entry = |path: &str| {
        let (sha256, bytes) = hash_file(&dir.join(path)).unwrap();
        FileEntry {
            path: path.into(),
            sha256,
            bytes,
        }
    };
    let m = Manifest {
        format: FORMAT,
        ctpd_version: "0.1.0".into(),
        backend: "sqlite".into(),
        schema_version: 1,
        created_at: "2026-12-05T00:00:00Z".into(),
        database: entry(DATABASE),
        files: vec![entry("versions/v.safetensors")],
    };
    write_manifest(dir, &m).unwrap();
    m
}

#[test]
fn restore_checks_every_file_and_leaves_nothing_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let mut m = snapshot(&snap);

    let done = restore(&snap, &tmp.path().join("ok")).unwrap();
    assert_eq!(done.manifest, m);
    assert_eq!(
        fs::read(tmp.path().join("ok/versions/v.safetensors")).unwrap(),
        b"weights"
    );
    assert_eq!(
        fs::read(tmp.path().join("ok").join(DATABASE)).unwrap(),
        b"db"
    );

    // Into a non-empty directory: refused, untouched.
    let e = restore(&snap, &tmp.path().join("ok")).unwrap_err();
    assert!(matches!(e, RestoreError::TargetNotEmpty(_)), "{e:?}");

    // A damaged file: named with both hashes, and the target is left empty.
    fs::write(snap.join("versions/v.safetensors"), b"weightz").unwrap();
    let target = tmp.path().join("damaged");
    let e = restore(&snap, &target).unwrap_err();
    assert!(matches!(e, RestoreError::Mismatch { .. }), "{e:?}");
    assert!(
        e.to_string().contains("v.safetensors") && e.to_string().contains(&m.files[0].sha256),
        "{e}"
    );
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0);

    // A manifest naming a path outside the backup, one from a newer ctpd, and none at all.
    m.files[0].path = "../v.safetensors".into();
    write_manifest(&snap, &m).unwrap();
    let e = restore(&snap, &tmp.path().join("x")).unwrap_err();
    assert!(e.to_string().contains("unsafe path"), "{e}");
    m.files[0].path = "versions/v.safetensors".into();
    m.schema_version = i64::MAX;
    write_manifest(&snap, &m).unwrap();
    let e = restore(&snap, &tmp.path().join("x")).unwrap_err();
    assert!(matches!(e, RestoreError::SchemaTooNew { .. }), "{e:?}");
    fs::remove_file(snap.join(MANIFEST)).unwrap();
    let e = restore(&snap, &tmp.path().join("x")).unwrap_err();
    assert!(
        e.to_string().contains("is not a finished ctpd backup"),
        "{e}"
    );
    assert!(
        !tmp.path().join("x").exists(),
        "refused before creating anything"
    );
}

/// With `s3://` object storage the files are not in the data dir: refused before anything is
/// written, naming the storage and the tools.
#[tokio::test]
async fn object_storage_is_refused_naming_the_tools() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(&tmp.path().join("d")).unwrap();
    let url = format!("sqlite://{}?mode=rwc", data.root().join(DATABASE).display());
    let store = Store::connect(&url).await.unwrap();
    let target = tmp.path().join("b");
    let e = backup(&store, &data, Some("s3://bucket/ctp"), &target)
        .await
        .unwrap_err();
    assert!(matches!(e, BackupError::ObjectStorage(_)), "{e:?}");
    assert!(
        e.to_string().contains("s3://bucket/ctp") && e.to_string().contains("VACUUM INTO"),
        "{e}"
    );
    assert!(!target.exists());
    // Without it, the same store backs up.
    let done = backup(&store, &data, None, &target).await.unwrap();
    assert_eq!(done.manifest.files, vec![]);
    assert_eq!(
        done.manifest.schema_version,
        store.schema_version().await.unwrap()
    );
    store.close().await;
}
