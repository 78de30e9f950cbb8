//! Cleanup of files a crash left behind: at startup, and every [`SWEEP_EVERY`] while running.
//!
//! Temp files (`.name.tmp`, written before an atomic rename) are deleted. A finished file that no
//! row references is never deleted: it is moved to `<data dir>/quarantine/<time>/…`, where an
//! operator can restore or remove it. A referenced file is never touched, however the data dir
//! was spelled when the row was written.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::datadir::{DataDir, QUARANTINE, SUBDIRS};
use crate::state::AppState;
use crate::store::{Backend, StoreError};

/// What one cleanup did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Temp files deleted.
    pub removed_tmp: usize,
    /// Unreferenced files moved to the quarantine folder.
    pub quarantined: usize,
}

/// How often a running daemon sweeps temp files left by a killed writer.
pub const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// How old a file must be before a sweep that may race a live writer touches it. Writers
/// append to a temp file continuously, so one this old has no writer left.
fn grace(state: &AppState) -> Duration {
    Duration::from_secs(600.max(4 * state.settings.lease_seconds))
}

/// What a sweep may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Startup: temp files and unreferenced finished files.
    Startup,
    /// While running: only temp files, and only those older than the grace period (this
    /// daemon's own uploads and checkpoints are in flight).
    Periodic,
}

/// Cleans the data dir of `state` against the rows of its store.
pub async fn clean_orphans(state: &AppState, sweep: Sweep) -> Result<Cleanup, StoreError> {
    let referenced = state.store.referenced_files().await?;
    let data = state.data.clone();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    // With SQLite the data dir is this daemon's alone (its lock says so) and nothing is in
    // flight at startup. Daemons sharing one Postgres may share the data dir: a peer's upload
    // in flight is young and not yet referenced, so only files older than a grace period are
    // touched; so does every periodic sweep.
    let min_age = match (state.store.backend(), sweep) {
        (Backend::Sqlite, Sweep::Startup) => Duration::ZERO,
        _ => grace(state),
    };
    let tmp_only = sweep == Sweep::Periodic;
    let refs = referenced.clone();
    let mut done =
        tokio::task::spawn_blocking(move || clean(&data, &refs, &stamp, min_age, tmp_only))
            .await
            .unwrap_or_default();
    // The bucket is shared by daemons on other hosts: always the grace period. An outage
    // only postpones the sweep.
    match state.objects.sweep_bucket(&referenced, grace(state)).await {
        Ok(b) => done.quarantined += b.quarantined,
        Err(e) => {
            tracing::warn!(error.message = %e, "Sweeping object storage failed; it is retried later")
        }
    }
    Ok(done)
}

/// Sweeps temp files every [`SWEEP_EVERY`] until shutdown.
pub async fn sweep_forever(state: std::sync::Arc<AppState>) {
    let mut shutdown = state.hub.shutdown_signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        match clean_orphans(&state, Sweep::Periodic).await {
            Ok(c) if c.removed_tmp > 0 => {
                tracing::info!(removed_tmp = c.removed_tmp, "Periodic sweep")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error.message = %crate::errors::error_chain(&e), "Periodic sweep failed; retrying later")
            }
        }
    }
}

/// Deletes temp files and (unless `tmp_only`) quarantines unreferenced files under `data`.
/// Files modified less than `min_age` ago are left alone.
pub fn clean(
    data: &DataDir,
    referenced: &[String],
    stamp: &str,
    min_age: Duration,
    tmp_only: bool,
) -> Cleanup {
    let keep: HashSet<PathBuf> = referenced.iter().map(|r| data.resolve(r)).collect();
    let mut done = Cleanup::default();
    for sub in SUBDIRS {
        for path in walk(&data.root().join(sub)) {
            let young = || {
                std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_none_or(|age| age < min_age)
            };
            if keep.contains(&path) || (!min_age.is_zero() && young()) {
                continue;
            }
            let is_tmp = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"));
            if is_tmp {
                if std::fs::remove_file(&path).is_ok() {
                    done.removed_tmp += 1;
                    tracing::info!(path = %path.display(), "Removed temp file");
                }
                continue;
            }
            if tmp_only {
                continue;
            }
            let rel = path.strip_prefix(data.root()).unwrap_or(&path);
            let to = data.root().join(QUARANTINE).join(stamp).join(rel);
            let moved = to
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::rename(&path, &to));
            match moved {
                Ok(()) => {
                    done.quarantined += 1;
                    tracing::warn!(path = %path.display(), to = %to.display(), "Quarantined unreferenced file");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error.message = %e, "Could not quarantine unreferenced file; left in place")
                }
            }
        }
    }
    done
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn referenced_files_survive_any_spelling_and_orphans_are_quarantined() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(&tmp.path().join("d")).unwrap();
        let bundle = data.bundle("aa");
        let version = data.version_checkpoint("t1");
        let legacy = data.root().join("versions/m/t0.safetensors");
        let orphan = data.bundle("bb");
        let temp = data.root().join("tasks/.upload-1.tmp");
        for p in [&bundle, &version, &legacy, &orphan, &temp] {
            touch(p);
        }
        let referenced = vec![
            "tasks/aa.bundle".to_string(),
            version.to_string_lossy().into_owned(),
            // Written by an older ctpd while the data dir lived elsewhere.
            "/old/home/d/versions/m/t0.safetensors".to_string(),
        ];
        // A grace period protects everything young.
        let nothing = clean(&data, &[], "T", Duration::from_secs(3600), false);
        assert_eq!(nothing, Cleanup::default());
        // A periodic sweep removes temp files only: the orphan waits for a startup.
        let orphan_copy = data.bundle("cc");
        touch(&orphan_copy);
        let temp2 = data.root().join("resume/.t1.3.safetensors.9.tmp");
        touch(&temp2);
        let periodic = clean(&data, &referenced, "T", Duration::ZERO, true);
        assert_eq!(
            periodic,
            Cleanup {
                removed_tmp: 2,
                quarantined: 0
            }
        );
        assert!(orphan_copy.exists() && !temp2.exists());
        std::fs::remove_file(&orphan_copy).unwrap();
        touch(&temp);
        let done = clean(&data, &referenced, "T", Duration::ZERO, false);
        assert_eq!(
            done,
            Cleanup {
                removed_tmp: 1,
                quarantined: 1
            }
        );
        for p in [&bundle, &version, &legacy] {
            assert!(p.exists(), "{} was touched", p.display());
        }
        assert!(!orphan.exists() && !temp.exists());
        assert!(data.root().join("quarantine/T/tasks/bb.bundle").exists());
    }
}
