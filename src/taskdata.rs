//! Task data on disk: one content-addressed bundle per task, `<data_dir>/tasks/<sha256>.bundle`,
//! written (temp file, fsync, rename, fsync dir) before the task row commits.
//!
//! Format (little-endian): `CTPB1\n`, then per sample: u32 id length + id, u32 caption length +
//! caption (UTF-8), u8 split (0 train, 1 eval), u32 image length + encoded image bytes.
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const MAGIC: &[u8] = b"CTPB1\n";

/// The content hash a bundle's stored path names (`tasks/<sha256>.bundle`), if it does.
pub fn bundle_sha(stored: &str) -> Option<String> {
    let name = std::path::Path::new(stored).file_name()?.to_str()?;
    let sha = name.strip_suffix(".bundle")?;
    (sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit())).then(|| sha.to_owned())
}

/// One accepted sample, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSample {
    pub id: String,
    pub caption: String,
    pub eval: bool,
    pub image: Vec<u8>,
}

/// Streams samples into a temp file; [`finish`](Self::finish) makes it durable under its hash.
/// Dropping an unfinished writer, or one whose `finish` failed (a full disk), deletes the temp
/// file, so a rejected upload leaves nothing.
pub struct BundleWriter {
    dir: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    hasher: Sha256,
    /// Set once the temp file has been renamed into place.
    renamed: bool,
    pub n_train: usize,
    pub n_eval: usize,
}

impl BundleWriter {
    pub fn create(data_dir: &Path) -> std::io::Result<BundleWriter> {
        let dir = data_dir.join("tasks");
        fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".upload-{}.tmp", uuid::Uuid::new_v4()));
        let mut w = BundleWriter {
            out: Some(BufWriter::new(File::create(&tmp)?)),
            dir,
            tmp,
            hasher: Sha256::new(),
            renamed: false,
            n_train: 0,
            n_eval: 0,
        };
        w.write(MAGIC)?;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hasher.update(b);
        self.out
            .as_mut()
            .expect("writer is open until finish")
            .write_all(b)
    }

    fn write_field(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.write(&(b.len() as u32).to_le_bytes())?;
        self.write(b)
    }

    pub fn append(&mut self, s: &StoredSample) -> std::io::Result<()> {
        self.write_field(s.id.as_bytes())?;
        self.write_field(s.caption.as_bytes())?;
        self.write(&[u8::from(s.eval)])?;
        self.write_field(&s.image)?;
        if s.eval {
            self.n_eval += 1;
        } else {
            self.n_train += 1;
        }
        Ok(())
    }

    /// Fsyncs and renames the bundle to `<sha256>.bundle`; returns (path, sha256).
    pub fn finish(mut self) -> std::io::Result<(PathBuf, String)> {
        let out = self.out.take().expect("finish runs once");
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let sha = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let path = self.dir.join(format!("{sha}.bundle"));
        fs::rename(&self.tmp, &path)?;
        self.renamed = true;
        File::open(&self.dir)?.sync_all()?;
        Ok((path, sha))
    }
}

impl Drop for BundleWriter {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn read_u32(r: &mut impl Read) -> std::io::Result<Option<u32>> {
    let mut b = [0u8; 4];
    match r.read_exact(&mut b) {
        Ok(()) => Ok(Some(u32::from_le_bytes(b))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_field(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let n = read_u32(r)?.ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated bundle")
    })?;
    let mut v = vec![0u8; n as usize];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// Reads a bundle back, checking its hash against its file name.
pub fn read_bundle(path: &Path) -> std::io::Result<Vec<StoredSample>> {
    let bad = |m: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {m}", path.display()),
        )
    };
    let bytes = fs::read(path)?;
    let want = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if hex::encode(Sha256::digest(&bytes)) != want {
        return Err(bad("content does not match its sha256 name (corrupt)"));
    }
    let mut r = BufReader::new(&bytes[..]);
    let mut magic = [0u8; 6];
    r.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(bad("not a ctp task bundle"));
    }
    let mut out = Vec::new();
    while let Some(n) = read_u32(&mut r)? {
        let mut id = vec![0u8; n as usize];
        r.read_exact(&mut id)?;
        let caption = read_field(&mut r)?;
        let mut split = [0u8; 1];
        r.read_exact(&mut split)?;
        let image = read_field(&mut r)?;
        out.push(StoredSample {
            id: String::from_utf8(id).map_err(|_| bad("id is not UTF-8"))?,
            caption: String::from_utf8(caption).map_err(|_| bad("caption is not UTF-8"))?,
            eval: split[0] == 1,
            image,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unfinished_uploads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let samples: Vec<StoredSample> = (0..3)
            .map(|i| StoredSample {
                id: format!("s{i}"),
                caption: format!("cap é {i}"),
                eval: i == 2,
                image: vec![i as u8; 10 + i],
            })
            .collect();
        let mut w = BundleWriter::create(dir.path()).unwrap();
        for s in &samples {
            w.append(s).unwrap();
        }
        assert_eq!((w.n_train, w.n_eval), (2, 1));
        let (path, sha) = w.finish().unwrap();
        assert!(path.ends_with(format!("{sha}.bundle")));
        assert_eq!(read_bundle(&path).unwrap(), samples);

        let mut w = BundleWriter::create(dir.path()).unwrap();
        w.append(&samples[0]).unwrap();
        drop(w);
        let names: Vec<_> = fs::read_dir(dir.path().join("tasks"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");

        let mut bytes = fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(read_bundle(&path)
            .unwrap_err()
            .to_string()
            .contains("corrupt"));
    }
}
