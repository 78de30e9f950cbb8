//! Checkpoint files: safetensors, written atomically (temp file, fsync, rename, fsync dir),
//! identified by their sha256. JSON metadata travels inside the file as a u8 tensor named
//! [`META`], so a checkpoint is one self-describing file.
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tch::{Device, Tensor};

use super::TrainerError;

pub const META: &str = "__meta__";

/// Writes `tensors` plus `meta` to `path` atomically and returns the file's sha256 (hex).
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    meta: &serde_json::Value,
) -> Result<String, TrainerError> {
    let dir = path
        .parent()
        .ok_or_else(|| TrainerError::io(path, "checkpoint path has no parent directory"))?;
    fs::create_dir_all(dir).map_err(|e| TrainerError::io(dir, e))?;
    let meta_bytes = serde_json::to_vec(meta).expect("JSON values always serialise");
    let meta_t = Tensor::from_slice(&meta_bytes);
    let mut named: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    named.push((META.to_string(), meta_t));
    let tmp = tmp_path(path);
    // Whatever fails (a full disk, typically), the temp file must not stay behind.
    let written = write_tmp(&named, &tmp).and_then(|sha| {
        fs::rename(&tmp, path).map_err(|e| TrainerError::io(path, e))?;
        Ok(sha)
    });
    let sha = match written {
        Ok(sha) => sha,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| TrainerError::io(dir, e))?;
    Ok(sha)
}

/// Writes and fsyncs the temp file; returns its sha256.
fn write_tmp(named: &[(String, Tensor)], tmp: &Path) -> Result<String, TrainerError> {
    Tensor::write_safetensors(named, tmp).map_err(|e| TrainerError::io(tmp, e))?;
    let mut f = File::options()
        .read(true)
        .write(true)
        .open(tmp)
        .map_err(|e| TrainerError::io(tmp, e))?;
    f.sync_all().map_err(|e| TrainerError::io(tmp, e))?;
    sha256_reader(&mut f).map_err(|e| TrainerError::io(tmp, e))
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

fn sha256_reader(r: &mut impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// sha256 (hex) of a file.
pub fn sha256_file(path: &Path) -> Result<String, TrainerError> {
    let mut f = File::open(path).map_err(|e| TrainerError::io(path, e))?;
    sha256_reader(&mut f).map_err(|e| TrainerError::io(path, e))
}

/// A loaded checkpoint: tensors by name (on the CPU) and the metadata.
#[derive(Debug)]
pub struct Loaded {
    pub tensors: HashMap<String, Tensor>,
    pub meta: serde_json::Value,
}

impl Loaded {
    /// The tensors whose names start with `prefix`, with the prefix removed, sorted by name.
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .tensors
            .iter()
            .filter_map(|(n, t)| {
                n.strip_prefix(prefix)
                    .map(|s| (s.to_string(), t.shallow_clone()))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn get(&self, name: &str) -> Result<&Tensor, TrainerError> {
        self.tensors
            .get(name)
            .ok_or_else(|| TrainerError::Checkpoint(format!("checkpoint lacks tensor {name}")))
    }
}

/// Reads a checkpoint; if `expected_sha256` is given the file must match it.
pub fn load(path: &Path, expected_sha256: Option<&str>) -> Result<Loaded, TrainerError> {
    if let Some(want) = expected_sha256 {
        let got = sha256_file(path)?;
        if got != want {
            return Err(TrainerError::Checkpoint(format!(
                "{}: sha256 is {got}, expected {want} (file corrupt or replaced)",
                path.display()
            )));
        }
    }
    let list = Tensor::read_safetensors(path).map_err(|e| {
        TrainerError::Checkpoint(format!(
            "{}: not a readable safetensors file: {e}",
            path.display()
        ))
    })?;
    let mut tensors: HashMap<String, Tensor> = list.into_iter().collect();
    let meta_t = tensors
        .remove(META)
        .ok_or_else(|| TrainerError::Checkpoint(format!("{}: no {META} entry", path.display())))?;
    let bytes =
        Vec::<u8>::try_from(&meta_t).map_err(|e| TrainerError::Checkpoint(e.to_string()))?;
    let meta = serde_json::from_slice(&bytes)
        .map_err(|e| TrainerError::Checkpoint(format!("{}: bad metadata: {e}", path.display())))?;
    Ok(Loaded { tensors, meta })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_hash_check() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.safetensors");
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let sha = save(
            &p,
            &[("a.b".into(), t.shallow_clone())],
            &serde_json::json!({"k": 1}),
        )
        .unwrap();
        assert_eq!(sha, sha256_file(&p).unwrap());
        let l = load(&p, Some(&sha)).unwrap();
        assert_eq!(l.meta["k"], 1);
        assert!(l.get("a.b").unwrap().equal(&t));
        // No temp file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A corrupted file is refused by hash, then by format.
        fs::write(&p, b"garbage").unwrap();
        assert!(load(&p, Some(&sha))
            .unwrap_err()
            .to_string()
            .contains("sha256"));
        assert!(load(&p, None).is_err());
    }
}
