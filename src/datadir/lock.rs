//! One owner per data dir (issue #24): an advisory `flock` on `<data dir>/.ctpd.lock`, held for
//! the daemon's life and released by the kernel when the process ends, however it ends.
//!
//! - A single-owner daemon (SQLite, the default) takes it **exclusively**: a second daemon on the
//!   same data dir refuses to start with one line naming the data dir and the holder.
//! - Daemons that share a data dir on purpose (several on one Postgres) take it **shared**:
//!   they start side by side, but a single-owner daemon cannot start among them, nor they
//!   beside one.
//!
//! The holder's identity (pid, host, start time) is written into the lock file by each
//! exclusive holder and read back for the refusal message. Because the kernel drops the lock
//! when its process dies, a crash never leaves a lock that needs a human: the next daemon
//! takes it. On a network filesystem the server releases the lock of a client that has
//! gone away when that client's lease expires (NFSv4: typically 90 s); until then the
//! refusal names the dead holder and the operator waits or checks that host.
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// The lock file's name in the data dir.
pub const LOCK_FILE: &str = ".ctpd.lock";

/// How the data dir is owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// This daemon alone (SQLite, or any single-host setup).
    Exclusive,
    /// Shared with peers that use the same database (Postgres).
    Shared,
}

/// A held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
    pub ownership: Ownership,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("data dir {dir} is in use by another ctpd ({holder}); stop it first, or give this daemon its own data dir")]
    Held { dir: String, holder: String },
    #[error("locking data dir {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// This process as a lock holder: `pid 123 on host db-1 since 2026-12-04T20:59:04Z`.
fn identity() -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    format!(
        "pid {} on host {host} since {}",
        std::process::id(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

impl DataDirLock {
    /// Takes the data dir's lock without waiting.
    ///
    /// # Errors
    /// [`LockError::Held`] naming the holder when another daemon holds it in a conflicting
    /// mode; [`LockError::Io`] if the lock file cannot be opened.
    pub fn acquire(root: &Path, ownership: Ownership) -> Result<DataDirLock, LockError> {
        let path = root.join(LOCK_FILE);
        let dir = root.display().to_string();
        let io = |source| LockError::Io {
            dir: dir.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let op = match ownership {
            Ownership::Exclusive => FlockOperation::NonBlockingLockExclusive,
            Ownership::Shared => FlockOperation::NonBlockingLockShared,
        };
        if let Err(e) = flock(&file, op) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim() {
                    "" => "daemons sharing it with a Postgres database".to_string(),
                    t => t.to_string(),
                };
                return Err(LockError::Held { dir, holder });
            }
            return Err(io(e.into()));
        }
        let me = match ownership {
            Ownership::Exclusive => identity(),
            // Shared holders leave the file empty: none of them is *the* holder.
            Ownership::Shared => String::new(),
        };
        if ownership == Ownership::Exclusive || file.metadata().map_err(io)?.len() > 0 {
            file.set_len(0).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            file.write_all(me.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok(DataDirLock {
            _file: file,
            path,
            ownership,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_refuses_a_second_owner_and_names_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(tmp.path(), Ownership::Exclusive).unwrap();
        let e = DataDirLock::acquire(tmp.path(), Ownership::Exclusive)
            .unwrap_err()
            .to_string();
        let pid = format!("pid {}", std::process::id());
        assert!(e.contains(&tmp.path().display().to_string()), "{e}");
        assert!(
            e.contains(&pid) && e.contains("on host") && e.contains("since"),
            "{e}"
        );
        assert!(DataDirLock::acquire(tmp.path(), Ownership::Shared).is_err());
        drop(first);
        // Released: the next daemon takes it without anyone removing a file.
        DataDirLock::acquire(tmp.path(), Ownership::Exclusive).unwrap();
    }

    #[test]
    fn shared_owners_coexist_and_keep_a_single_owner_out() {
        let tmp = tempfile::tempdir().unwrap();
        let a = DataDirLock::acquire(tmp.path(), Ownership::Shared).unwrap();
        let b = DataDirLock::acquire(tmp.path(), Ownership::Shared).unwrap();
        let e = DataDirLock::acquire(tmp.path(), Ownership::Exclusive)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sharing it with a Postgres database"), "{e}");
        drop((a, b));
        DataDirLock::acquire(tmp.path(), Ownership::Exclusive).unwrap();
    }
}
