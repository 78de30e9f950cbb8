//! `ctpctl export --model M [--version V] --out DIR`: downloads a version with everything
//! needed to use it elsewhere (the daemon's ExportVersion stream: weights, config.json,
//! tokenizer, model card, probe set; docs/export.md). Every file is checked against the
//! manifest's size and sha256, written into a temp folder next to DIR, and the folder is
//! renamed to DIR only when all of them match, so DIR is either complete or absent.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::conn::Client;
use super::error::{CliError, CliResult};
use super::output::print_json;
use ctp_api::pb;
use pb::export_version_chunk::Part;

/// `export` arguments.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Model name.
    #[arg(long)]
    pub model: String,
    /// Version to export (default: the head).
    #[arg(long)]
    pub version: Option<i64>,
    /// Folder to create (it must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
}

/// A file being received.
struct Receiving {
    file: std::fs::File,
    hasher: Sha256,
    written: u64,
    want: pb::ExportFile,
}

/// File names the daemon may send: plain names, never paths.
fn safe_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with('.')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Refuses an `--out` that exists and is not an empty folder; returns the temp folder to
/// write into (same parent, so the final rename stays on one file system).
fn temp_dir_for(out: &Path) -> CliResult<PathBuf> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(CliError::local(format!(
                "--out {}: exists and is not an empty folder",
                out.display()
            )));
        }
    }
    let name = out
        .file_name()
        .ok_or_else(|| CliError::local(format!("--out {}: names no folder", out.display())))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .map_err(|e| CliError::local(format!("{}: {e}", parent.display())))?;
    let tmp = parent.join(format!(
        ".{}.export-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| CliError::local(format!("{}: {e}", tmp.display())))?;
    Ok(tmp)
}

/// Downloads into `tmp`; returns the manifest.
async fn receive(
    client: &mut Client,
    a: &ExportArgs,
    tmp: &Path,
    json: bool,
) -> CliResult<pb::ExportManifest> {
    let mut stream = client
        .export_version(pb::ExportVersionRequest {
            model: a.model.clone(),
            version: a.version,
        })
        .await?
        .into_inner();
    let manifest = match stream.message().await? {
        Some(pb::ExportVersionChunk {
            part: Some(Part::Manifest(m)),
        }) => m,
        _ => {
            return Err(CliError::local(
                "the export stream did not start with a manifest",
            ))
        }
    };
    let mut files: BTreeMap<String, Receiving> = BTreeMap::new();
    for f in &manifest.files {
        if !safe_name(&f.name) || files.contains_key(&f.name) {
            return Err(CliError::local(format!(
                "the manifest names {:?}, not a plain, unique file name",
                f.name
            )));
        }
        let path = tmp.join(&f.name);
        let file = std::fs::File::create(&path)
            .map_err(|e| CliError::local(format!("{}: {e}", path.display())))?;
        files.insert(
            f.name.clone(),
            Receiving {
                file,
                hasher: Sha256::new(),
                written: 0,
                want: f.clone(),
            },
        );
    }
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    let mut got = 0u64;
    let mut last_note = 0u64;
    while let Some(msg) = stream.message().await? {
        let Some(Part::Chunk(c)) = msg.part else {
            return Err(CliError::local("a second manifest in the export stream"));
        };
        let r = files.get_mut(&c.name).ok_or_else(|| {
            CliError::local(format!("a chunk of {:?}, not in the manifest", c.name))
        })?;
        if c.offset != r.written || r.written + c.data.len() as u64 > r.want.size {
            return Err(CliError::local(format!(
                "{}: a chunk at offset {} of {} bytes does not continue the {} bytes received \
                 (of {})",
                c.name,
                c.offset,
                c.data.len(),
                r.written,
                r.want.size
            )));
        }
        r.file
            .write_all(&c.data)
            .map_err(|e| CliError::local(format!("{}: {e}", c.name)))?;
        r.hasher.update(&c.data);
        r.written += c.data.len() as u64;
        got += c.data.len() as u64;
        if !json && got - last_note >= 64 << 20 {
            eprintln!("received {} of {} MiB", got >> 20, total >> 20);
            last_note = got;
        }
    }
    for (name, r) in files {
        let sha = hex::encode(r.hasher.finalize());
        if r.written != r.want.size || sha != r.want.sha256 {
            return Err(CliError::local(format!(
                "{name}: received {} bytes with sha256 {sha}; the manifest says {} bytes, {}",
                r.written, r.want.size, r.want.sha256
            )));
        }
        r.file
            .sync_all()
            .map_err(|e| CliError::local(format!("{name}: {e}")))?;
    }
    Ok(manifest)
}

pub async fn export(client: &mut Client, a: &ExportArgs, json: bool) -> CliResult {
    let tmp = temp_dir_for(&a.out)?;
    let manifest = match receive(client, a, &tmp, json).await {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    // An empty --out was allowed: rename replaces an empty directory.
    if let Err(e) = std::fs::rename(&tmp, &a.out) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(CliError::local(format!("{}: {e}", a.out.display())));
    }
    if json {
        print_json(&json!({
            "model": manifest.model,
            "version": manifest.version,
            "preset": manifest.preset,
            "out": a.out.display().to_string(),
            "probe_source": manifest.probe_source,
            "files": manifest.files.iter().map(|f| json!({
                "name": f.name, "size": f.size, "sha256": f.sha256, "description": f.description,
            })).collect::<Vec<_>>(),
        }));
    } else {
        for f in &manifest.files {
            println!(
                "{:<20} {:>12}  {}  {}",
                f.name, f.size, f.sha256, f.description
            );
        }
        eprintln!(
            "exported {} version {} ({}, probe {}) to {}",
            manifest.model,
            manifest.version,
            manifest.preset,
            manifest.probe_source,
            a.out.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_and_fresh_folders() {
        for ok in ["weights.safetensors", "model_card.md", "a-b_c.json"] {
            assert!(safe_name(ok), "{ok}");
        }
        for bad in ["", "../x", "a/b", ".hidden", "x\\y", "é"] {
            assert!(!safe_name(bad), "{bad}");
        }
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("exp");
        let tmp = temp_dir_for(&out).unwrap();
        assert!(tmp.is_dir() && tmp.parent() == Some(d.path()));
        std::fs::create_dir(&out).unwrap();
        assert!(temp_dir_for(&out).is_ok(), "an empty folder is allowed");
        std::fs::write(out.join("x"), b"1").unwrap();
        let e = temp_dir_for(&out).unwrap_err().to_string();
        assert!(e.contains("not an empty folder"), "{e}");
    }
}
