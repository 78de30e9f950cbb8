//! `embed`, `search` and `health`: reading a version's embeddings, and a liveness probe.
use std::path::{Path, PathBuf};

use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::args::{EmbedArgs, HealthArgs, SearchArgs};
use super::conn::{Client, Connection};
use super::error::{CliError, CliResult, EXIT_OK, EXIT_UNAVAILABLE};
use super::output::print_json;
use ctp_api::pb;

/// Most images per Embed call in `search`, so a large folder streams through in bounded
/// memory.
const SEARCH_BATCH: usize = 64;
/// Most image bytes per Embed call, well below the daemon's message limit (32 MiB default).
const SEARCH_BATCH_BYTES: usize = 16 << 20;

fn read_file(path: &Path) -> CliResult<Vec<u8>> {
    std::fs::read(path).map_err(|e| CliError::local(format!("{}: {e}", path.display())))
}

fn vector(values: &[f32]) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:.6}")).collect();
    format!("[{}]", parts.join(", "))
}

/// `ctpctl embed`.
pub async fn embed(client: &mut Client, args: &EmbedArgs, json: bool) -> CliResult {
    if args.images.is_empty() && args.texts.is_empty() {
        return Err(CliError::local("give at least one --image or --text"));
    }
    let images = args
        .images
        .iter()
        .map(|p| read_file(p))
        .collect::<CliResult<Vec<_>>>()?;
    let resp = client
        .embed(pb::EmbedRequest {
            model: args.model.clone(),
            version: args.version,
            images,
            texts: args.texts.clone(),
        })
        .await?
        .into_inner();
    if json {
        let images: Vec<_> = args
            .images
            .iter()
            .zip(&resp.image_embeddings)
            .map(|(p, e)| json!({"image": p.display().to_string(), "embedding": e.values}))
            .collect();
        let texts: Vec<_> = args
            .texts
            .iter()
            .zip(&resp.text_embeddings)
            .map(|(t, e)| json!({"text": t, "embedding": e.values}))
            .collect();
        print_json(&json!({"version": resp.version, "dim": resp.dim,
                           "images": images, "texts": texts}));
        return Ok(());
    }
    eprintln!("version {}, dim {}", resp.version, resp.dim);
    for (p, e) in args.images.iter().zip(&resp.image_embeddings) {
        println!("image {}\t{}", p.display(), vector(&e.values));
    }
    for (t, e) in args.texts.iter().zip(&resp.text_embeddings) {
        println!("text {t:?}\t{}", vector(&e.values));
    }
    Ok(())
}

/// Image files directly in `dir`, sorted by name.
pub fn image_files(dir: &Path) -> CliResult<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| CliError::local(format!("{}: {e}", dir.display())))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                })
        })
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(CliError::local(format!(
            "{}: no .png/.jpg/.jpeg images",
            dir.display()
        )));
    }
    Ok(out)
}

/// Cosine similarity (the daemon L2-normalises, but a zero vector must not divide by 0).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Indices and scores of the `k` best candidates, best first (ties by index, so stable).
pub fn top_k(query: &[f32], candidates: &[Vec<f32>], k: usize) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (i, cosine(query, c)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

/// `ctpctl search`.
pub async fn search(client: &mut Client, args: &SearchArgs, json: bool) -> CliResult {
    let files = image_files(&args.dir)?;
    let query = client
        .embed(pb::EmbedRequest {
            model: args.model.clone(),
            version: args.version,
            images: vec![],
            texts: vec![args.query.clone()],
        })
        .await?
        .into_inner();
    // Pin the version the query used, so a head moving mid-search cannot mix versions.
    let version = Some(query.version);
    let q = query
        .text_embeddings
        .first()
        .map(|e| e.values.clone())
        .ok_or_else(|| CliError::local("daemon returned no text embedding"))?;
    let mut vectors = Vec::with_capacity(files.len());
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut pending_bytes = 0;
    for (i, path) in files.iter().enumerate() {
        let image = read_file(path)?;
        pending_bytes += image.len();
        pending.push(image);
        let last = i + 1 == files.len();
        if last || pending.len() >= SEARCH_BATCH || pending_bytes >= SEARCH_BATCH_BYTES {
            let resp = client
                .embed(pb::EmbedRequest {
                    model: args.model.clone(),
                    version,
                    images: std::mem::take(&mut pending),
                    texts: vec![],
                })
                .await?
                .into_inner();
            vectors.extend(resp.image_embeddings.into_iter().map(|e| e.values));
            pending_bytes = 0;
        }
    }
    if vectors.len() != files.len() {
        return Err(CliError::local(format!(
            "daemon returned {} image embeddings for {} images",
            vectors.len(),
            files.len()
        )));
    }
    let best = top_k(&q, &vectors, args.top_k);
    if json {
        let results: Vec<_> = best
            .iter()
            .map(|(i, s)| json!({"image": files[*i].display().to_string(), "score": s}))
            .collect();
        print_json(&json!({"version": query.version, "query": args.query, "results": results}));
    } else {
        eprintln!("version {}, {} images", query.version, files.len());
        for (rank, (i, s)) in best.iter().enumerate() {
            println!("{:>3}  {s:.4}  {}", rank + 1, files[*i].display());
        }
    }
    Ok(())
}

/// `ctpctl health`: exit 0 when SERVING, 3 otherwise (also when unreachable).
pub async fn health(conn: &Connection, args: &HealthArgs, json: bool) -> CliResult<u8> {
    let mut client = HealthClient::with_interceptor(conn.channel.clone(), conn.auth.clone());
    let resp = client
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await?
        .into_inner();
    let status = ServingStatus::try_from(resp.status).unwrap_or(ServingStatus::Unknown);
    // Details (engine, storage); a daemon older than GetServerInfo answers without them.
    let info = ctp_api::pb::continual_trainer_client::ContinualTrainerClient::with_interceptor(
        conn.channel.clone(),
        conn.auth.clone(),
    )
    .get_server_info(ctp_api::pb::GetServerInfoRequest {})
    .await
    .map(|r| r.into_inner())
    .ok();
    if json {
        let details = info.as_ref().map(|i| {
            json!({"version": i.version, "device": i.device, "precision": i.precision,
                   "precision_rule": i.precision_rule,
                   "backend": i.backend, "storage_problem": i.storage_problem})
        });
        print_json(&json!({"addr": conn.addr, "service": args.service,
                           "status": status.as_str_name(), "server": details}));
    } else {
        match &info {
            Some(i) => {
                println!(
                    "{}: {} (ctpd {}, {} {}, {})",
                    conn.addr,
                    status.as_str_name(),
                    i.version,
                    i.device,
                    i.precision,
                    i.backend
                );
                if !i.precision_rule.is_empty() {
                    println!("precision: {}", i.precision_rule);
                }
                if !i.storage_problem.is_empty() {
                    println!("storage: {}", i.storage_problem);
                }
            }
            None => println!("{}: {}", conn.addr, status.as_str_name()),
        }
    }
    Ok(if status == ServingStatus::Serving {
        EXIT_OK
    } else {
        EXIT_UNAVAILABLE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking() {
        let q = [1.0, 0.0];
        let c = vec![
            vec![0.0, 1.0],
            vec![2.0, 0.1],
            vec![1.0, 0.0],
            vec![0.0, 0.0],
        ];
        let best = top_k(&q, &c, 2);
        assert_eq!(best.iter().map(|b| b.0).collect::<Vec<_>>(), vec![2, 1]);
        assert!((best[0].1 - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&q, &c[3]), 0.0);
    }

    #[test]
    fn image_files_filters_and_sorts() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.PNG", "a.jpg", "notes.txt", "c.jpeg"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let names: Vec<String> = image_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.jpg", "b.PNG", "c.jpeg"]);
        let empty = tempfile::tempdir().unwrap();
        assert!(image_files(empty.path()).is_err());
    }
}
