//! The data dir's layout, and the one place that turns paths into database strings and back.
//!
//! The database never stores an absolute path: a file under the data dir is recorded relative
//! to it (`tasks/<sha256>.bundle`, `versions/<task id>.safetensors`, `resume/<task id>.safetensors`),
//! so the same data dir works whether it is spelled `d`, `./d` or `/srv/x/d`, and after it is
//! moved or restored from a backup at another path. Rows written by older versions hold absolute
//! paths; [`DataDir::resolve`] maps those into the current data dir by their layout suffix.
//!
//! File names are made only from ids ctpd generates (task ids, content hashes), never from
//! user text such as model names.
use std::path::{Component, Path, PathBuf};

mod lock;
pub use lock::{DataDirLock, LockError, Ownership, LOCK_FILE};

/// The sub-folders ctpd writes, each holding files that rows refer to.
pub const SUBDIRS: [&str; 3] = ["tasks", "versions", "resume"];
/// Where startup cleanup moves unreferenced files instead of deleting them.
pub const QUARANTINE: &str = "quarantine";

/// The data dir, as an absolute path fixed at startup.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Creates the data dir if needed and fixes its absolute, canonical spelling.
    ///
    /// # Errors
    /// If the folder cannot be created or resolved.
    pub fn open(path: &Path) -> std::io::Result<DataDir> {
        std::fs::create_dir_all(path)?;
        Ok(DataDir {
            root: std::fs::canonicalize(path)?,
        })
    }

    /// The absolute root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A task's data bundle of the given content hash.
    pub fn bundle(&self, sha256: &str) -> PathBuf {
        self.root.join("tasks").join(format!("{sha256}.bundle"))
    }

    /// The checkpoint of the version a task produces.
    pub fn version_checkpoint(&self, task_id: &str) -> PathBuf {
        self.root
            .join("versions")
            .join(format!("{task_id}.safetensors"))
    }

    /// The resume checkpoint of a task in progress.
    pub fn resume_checkpoint(&self, task_id: &str) -> PathBuf {
        self.root
            .join("resume")
            .join(format!("{task_id}.safetensors"))
    }

    /// The string a row stores for `path`: relative to the data dir when it lies inside it
    /// (always, for files ctpd writes), else the path as given.
    pub fn to_stored(&self, path: &Path) -> String {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        rel.to_string_lossy().into_owned()
    }

    /// The file a stored string names in this data dir. Relative strings are joined to the
    /// root. An absolute string (rows of older versions) that does not exist is mapped by its
    /// layout suffix (`…/tasks/x.bundle` → `<root>/tasks/x.bundle`), so a moved data dir works.
    pub fn resolve(&self, stored: &str) -> PathBuf {
        let p = Path::new(stored);
        if p.is_relative() {
            return self.root.join(p);
        }
        if p.starts_with(&self.root) || p.exists() {
            return p.to_path_buf();
        }
        self.layout_suffix(p)
            .map(|rel| self.root.join(rel))
            .unwrap_or_else(|| p.to_path_buf())
    }

    /// The part of `p` from the last ctpd sub-folder on, if it has one and no `..`.
    fn layout_suffix(&self, p: &Path) -> Option<PathBuf> {
        let parts: Vec<Component> = p.components().collect();
        let at = parts
            .iter()
            .rposition(|c| matches!(c, Component::Normal(n) if SUBDIRS.iter().any(|s| n == s)))?;
        let rel: PathBuf = parts[at..].iter().collect();
        rel.components()
            .all(|c| matches!(c, Component::Normal(_)))
            .then_some(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_paths_are_relative_and_resolve_under_any_spelling() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open(&tmp.path().join("d")).unwrap();
        let bundle = d.bundle("ab12");
        assert_eq!(d.to_stored(&bundle), "tasks/ab12.bundle");
        // The same folder reached through a different spelling.
        let again = DataDir::open(&tmp.path().join("d/../d/.")).unwrap();
        assert_eq!(again.resolve("tasks/ab12.bundle"), bundle);
        assert_eq!(
            d.to_stored(&d.version_checkpoint("t1")),
            "versions/t1.safetensors"
        );
    }

    #[test]
    fn legacy_absolute_rows_follow_a_moved_data_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::open(&tmp.path().join("moved")).unwrap();
        let old = "/srv/old/place/versions/m/t1.safetensors";
        assert_eq!(d.resolve(old), d.root().join("versions/m/t1.safetensors"));
        // Inside the current root (or existing elsewhere) stays as written.
        let inside = d.root().join("tasks/x.bundle");
        assert_eq!(d.resolve(&inside.to_string_lossy()), inside);
        // No layout folder: nothing to map, kept as is.
        assert_eq!(
            d.resolve("/elsewhere/file"),
            PathBuf::from("/elsewhere/file")
        );
    }
}
