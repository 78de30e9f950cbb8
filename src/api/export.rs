//! ExportVersion: the manifest, then each file's bytes in order, in chunks of at most
//! [`CHUNK`] bytes. The checkpoint is read from disk as it is sent and hashed on the way: if
//! its bytes no longer match the version's recorded sha256, the stream ends with
//! FAILED_PRECONDITION after the last chunk (the client, which checks every file against
//! the manifest, keeps nothing). A client that disconnects only ends its stream.
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::Status;

use ctp_api::pb;
use pb::export_version_chunk::Part;

use super::convert;
use super::status::ApiError;
use crate::export::{Content, Export};
use crate::state::AppState;

/// Bytes per chunk (well below the default 4 MiB message limit).
pub const CHUNK: usize = 1 << 20;

type Tx = mpsc::Sender<Result<pb::ExportVersionChunk, Status>>;

/// Assembles the export (errors before the first message are the RPC's status) and starts
/// the task that streams it.
pub async fn export(
    state: Arc<AppState>,
    model: String,
    version: Option<i64>,
) -> Result<mpsc::Receiver<Result<pb::ExportVersionChunk, Status>>, ApiError> {
    let ex = crate::export::prepare(&state, &model, version).await?;
    tracing::info!(model = %ex.model, version = ex.version, probe = ex.probe_source,
        bytes = ex.files.iter().map(|f| f.size).sum::<u64>(), "Export started");
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        if let Err(e) = send_all(ex, &tx).await {
            let _ = tx.send(Err(e.into())).await;
        }
    });
    Ok(rx)
}

/// `Ok(false)` when the client has gone.
async fn send(tx: &Tx, part: Part) -> bool {
    tx.send(Ok(pb::ExportVersionChunk { part: Some(part) }))
        .await
        .is_ok()
}

async fn send_all(ex: Export, tx: &Tx) -> Result<(), ApiError> {
    if !send(tx, Part::Manifest(convert::manifest_to_pb(&ex))).await {
        return Ok(());
    }
    for f in ex.files {
        let piece = |offset: usize, data: Vec<u8>| {
            Part::Chunk(pb::ExportFileChunk {
                name: f.name.into(),
                offset: offset as u64,
                data,
            })
        };
        match f.content {
            Content::Bytes(b) => {
                for (i, c) in b.chunks(CHUNK).enumerate() {
                    if !send(tx, piece(i * CHUNK, c.to_vec())).await {
                        return Ok(());
                    }
                }
            }
            Content::File(path) => {
                let unreadable = |e: std::io::Error| {
                    ApiError::FailedPrecondition(format!(
                        "{} of {}/{}: {}: {e}",
                        f.name,
                        ex.model,
                        ex.version,
                        path.display()
                    ))
                };
                let mut file = tokio::fs::File::open(&path).await.map_err(unreadable)?;
                let mut hasher = Sha256::new();
                let mut offset = 0usize;
                loop {
                    let mut buf = vec![0u8; CHUNK];
                    let mut n = 0;
                    while n < CHUNK {
                        let got = file.read(&mut buf[n..]).await.map_err(unreadable)?;
                        if got == 0 {
                            break;
                        }
                        n += got;
                    }
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    hasher.update(&buf);
                    if !send(tx, piece(offset, buf)).await {
                        return Ok(());
                    }
                    offset += n;
                }
                let sha = hex::encode(hasher.finalize());
                if sha != f.sha256 || offset as u64 != f.size {
                    return Err(ApiError::FailedPrecondition(format!(
                        "version {}/{}: the checkpoint's bytes as sent ({offset} bytes, sha256 \
                         {sha}) do not match its recorded sha256 {} (file corrupt or replaced)",
                        ex.model, ex.version, f.sha256
                    )));
                }
            }
        }
    }
    Ok(())
}
