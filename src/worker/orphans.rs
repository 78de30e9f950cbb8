//! Startup cleanup of files a crash left behind.
use std::path::{Path, PathBuf};

use crate::app::AppState;
use crate::store::StoreError;

/// Deletes files under the data dir that no row references (left by a crash), and temp files.
pub async fn clean_orphans(state: &AppState) -> Result<usize, StoreError> {
    let referenced: std::collections::HashSet<PathBuf> = state
        .store
        .referenced_files()
        .await?
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let mut removed = 0;
    for sub in ["tasks", "versions", "resume"] {
        let root = state.settings.data_dir.join(sub);
        for path in walk(&root) {
            let is_tmp = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"));
            if (is_tmp || !referenced.contains(&path)) && std::fs::remove_file(&path).is_ok() {
                removed += 1;
                tracing::info!(path = %path.display(), "Removed orphaned file");
            }
        }
    }
    Ok(removed)
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
