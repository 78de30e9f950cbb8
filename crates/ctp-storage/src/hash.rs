//! Hashing files and streams while they are copied.
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{Result, StorageError};

const BUF: usize = 1 << 20;

/// The sha256 (lower-case hex) of `data`.
pub(crate) fn hash_bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The sha256 (lower-case hex) and size of a local file.
pub(crate) fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut n = 0u64;
    loop {
        let got = f.read(&mut buf)?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        n += got as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// [`hash_file`] off the async threads.
pub(crate) async fn hash_file_async(path: &Path) -> Result<(String, u64)> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || hash_file(&p).map_err(|e| StorageError::io(&p, e)))
        .await
        .map_err(|e| StorageError::io(path, std::io::Error::other(e)))?
}

/// Copies `src` to the new file `dst` (which must not exist), hashing it, and syncs `dst`.
/// Stops with [`StorageError::TooLarge`] (naming `what`) before `limit` bytes are crossed.
pub(crate) fn copy_hashing(
    src: &Path,
    dst: &Path,
    limit: Option<(u64, &str)>,
) -> Result<(String, u64)> {
    let mut from = File::open(src).map_err(|e| StorageError::io(src, e))?;
    let mut to = File::options()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| StorageError::io(dst, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut n = 0u64;
    loop {
        let got = from.read(&mut buf).map_err(|e| StorageError::io(src, e))?;
        if got == 0 {
            break;
        }
        n += got as u64;
        if let Some((max, what)) = limit {
            if n > max {
                return Err(StorageError::TooLarge {
                    what: what.to_string(),
                    limit: max,
                });
            }
        }
        h.update(&buf[..got]);
        to.write_all(&buf[..got])
            .map_err(|e| StorageError::io(dst, e))?;
    }
    to.sync_all().map_err(|e| StorageError::io(dst, e))?;
    Ok((hex::encode(h.finalize()), n))
}

/// Why streaming into a file stopped early.
pub(crate) enum StreamError<E> {
    /// The source failed (mapped by the caller).
    Source(E),
    /// Writing the file failed, or the limit was crossed.
    Local(StorageError),
}

/// Writes a byte stream to the new file `dst`, hashing it, and returns (sha256, size).
/// Stops with [`StorageError::TooLarge`] before more than `limit` bytes are written.
pub(crate) async fn stream_to_file<S, E>(
    mut stream: S,
    dst: &Path,
    limit: Option<(u64, &str)>,
) -> std::result::Result<(String, u64), StreamError<E>>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
{
    let local = |e| StreamError::Local(StorageError::io(dst, e));
    let mut f = tokio::fs::File::options()
        .write(true)
        .create_new(true)
        .open(dst)
        .await
        .map_err(local)?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| StreamError::Source(e))?;
        n += chunk.len() as u64;
        if let Some((max, what)) = limit {
            if n > max {
                return Err(StreamError::Local(StorageError::TooLarge {
                    what: what.to_string(),
                    limit: max,
                }));
            }
        }
        h.update(&chunk);
        f.write_all(&chunk).await.map_err(local)?;
    }
    f.flush().await.map_err(local)?;
    Ok((hex::encode(h.finalize()), n))
}

/// Syncs a directory so a rename or link in it survives a crash (best effort: some
/// filesystems refuse to open directories).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_hashes_and_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a");
        std::fs::write(&src, b"abc").unwrap();
        let (h, n) = copy_hashing(&src, &dir.path().join("b"), None).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash_file(&dir.path().join("b")).unwrap(), (h, 3));
        let e = copy_hashing(&src, &dir.path().join("c"), Some((2, "u"))).unwrap_err();
        assert!(matches!(e, StorageError::TooLarge { limit: 2, .. }), "{e}");
    }
}
