//! The file side of verify: what is on disk (and in the bucket) against what the rows
//! reference. The listing is taken *before* the rows are read, so on a running daemon a file
//! whose row commits meanwhile counts as referenced (files are written before their rows).
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{Report, Verifier};
use crate::datadir::{QUARANTINE, SUBDIRS};
use crate::store::StoreError;

/// Files in the data dir's subdirectories and keys in the bucket, as found before the rows
/// were read.
/// Per bucket prefix, its keys or why they could not be listed.
type PrefixKeys = Vec<(&'static str, Result<Vec<String>, String>)>;

pub(super) struct Listing {
    files: Vec<PathBuf>,
    /// `None` without object storage; per prefix, the keys or why they could not be listed.
    objects: Option<PrefixKeys>,
}

fn is_resume_point(stored: &str) -> bool {
    stored.contains("/resume/") || stored.starts_with("resume/")
}

impl Verifier<'_> {
    pub(super) async fn listing(&self) -> Listing {
        let files = SUBDIRS
            .iter()
            .flat_map(|sub| walk(&self.data.root().join(sub)))
            .collect();
        let objects = if self.objects.is_local() {
            None
        } else {
            let mut per_prefix = Vec::new();
            for prefix in SUBDIRS {
                let listed = self.objects.storage().list(prefix).await;
                per_prefix.push((
                    prefix,
                    listed
                        .map(|l| l.into_iter().map(|o| o.key).collect())
                        .map_err(|e| e.to_string()),
                ));
            }
            Some(per_prefix)
        };
        Listing { files, objects }
    }

    /// Resume points exist; unreferenced and temp files are listed (and quarantined on
    /// `repair`).
    pub(super) async fn files(
        &self,
        listing: Listing,
        referenced: &[String],
        repair: bool,
        r: &mut Report,
    ) -> Result<(), StoreError> {
        let mut missing = Vec::new();
        for stored in referenced.iter().filter(|s| is_resume_point(s)) {
            r.resume_points += 1;
            if !self.objects.exists(stored).await.unwrap_or(false) {
                missing.push(stored.clone());
            }
        }
        if !missing.is_empty() {
            // A task that ended meanwhile drops its resume point with its reference: only
            // one that is still referenced is missing.
            let now: HashSet<String> = self.store.referenced_files().await?.into_iter().collect();
            for m in missing.into_iter().filter(|m| now.contains(m)) {
                r.problems.push(format!("resume checkpoint {m} is missing"));
            }
        }
        let keep: HashSet<PathBuf> = referenced.iter().map(|s| self.data.resolve(s)).collect();
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        for path in listing.files.into_iter().filter(|p| !keep.contains(p)) {
            let rel = self.data.to_stored(&path);
            let is_tmp = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"));
            if is_tmp {
                r.temp_files.push(rel.clone());
            } else {
                r.unreferenced.push(rel.clone());
            }
            if repair {
                let to = self.data.root().join(QUARANTINE).join(&stamp).join(&rel);
                let moved = to
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::rename(&path, &to));
                match moved {
                    Ok(()) => r.quarantined.push(self.data.to_stored(&to)),
                    Err(e) => r.problems.push(format!("quarantining {rel}: {e}")),
                }
            }
        }
        let Some(objects) = listing.objects else {
            return Ok(());
        };
        let keys: HashSet<&str> = referenced.iter().map(String::as_str).collect();
        for (prefix, listed) in objects {
            let listed = match listed {
                Ok(l) => l,
                Err(e) => {
                    r.problems
                        .push(format!("listing {prefix}/ in the bucket: {e}"));
                    continue;
                }
            };
            for key in listed.into_iter().filter(|k| !keys.contains(k.as_str())) {
                if repair {
                    match self.objects.storage().quarantine(&key).await {
                        Ok(to) => r.quarantined.push(to),
                        Err(e) => r.problems.push(format!("quarantining {key}: {e}")),
                    }
                }
                r.unreferenced.push(key);
            }
        }
        Ok(())
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
