//! `ctpctl anchors add|list`: a model's anchor suites (issue #25 §2, docs/anchors.md), and the
//! suite columns the `versions` table and the report share.
use serde_json::{json, Value};

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::args::ModelArg;
use super::conn::Client;
use super::error::{CliError, CliResult};
use super::output::{print_json, table, time};
use super::submit::{to_pb, Chunker};
use ctp_api::pb;
use ctp_datasets as datasets;

/// `anchors` subcommands.
#[derive(Debug, Subcommand)]
pub enum AnchorsCommand {
    /// Register a suite (admin scope): every sample of PATH (a .tar, a folder of .tar shards,
    /// or a .jsonl, as for submit), whatever split it states. Names are never reused.
    Add(AnchorsAddArgs),
    /// List a model's suites.
    List(ModelArg),
}

/// `anchors add` arguments.
#[derive(Debug, Clone, Args)]
pub struct AnchorsAddArgs {
    /// Model name.
    #[arg(long)]
    pub model: String,
    /// Suite name, unique per model.
    pub name: String,
    /// Dataset: a .tar, a folder of .tar shards, or a .jsonl manifest.
    pub path: PathBuf,
    /// The model's preset, to create a model that has no task yet.
    #[arg(long)]
    pub preset: Option<String>,
    /// Target size of one upload message in bytes.
    #[arg(long, default_value_t = 4 << 20, hide = true)]
    pub chunk_bytes: usize,
}

/// Every suite name any of `versions` has a result on, in first-seen order (a column each).
pub fn anchor_columns(versions: &[pb::Version]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for a in versions.iter().flat_map(|v| &v.anchors) {
        if !names.contains(&a.suite) {
            names.push(a.suite.clone());
        }
    }
    names
}

/// `version`'s Rm on `suite`, if it has a result there.
pub fn anchor_rm(v: &pb::Version, suite: &str) -> Option<f64> {
    v.anchors.iter().find(|a| a.suite == suite).map(|a| a.rm)
}

fn suite_json(s: &pb::AnchorSuite) -> Value {
    json!({
        "model": s.model, "name": s.name, "samples": s.samples, "sha256": s.sha256,
        "created_at": time(&s.created_at), "created_by": s.created_by,
        "baseline_version": s.baseline_version,
    })
}

/// Every sample of the dataset at `path`, whatever split it states, as upload messages.
fn requests(a: &AnchorsAddArgs) -> CliResult<Vec<pb::RegisterAnchorSuiteRequest>> {
    use pb::register_anchor_suite_request::Msg;
    let source = datasets::detect(&a.path)?;
    let mut samples = Vec::new();
    datasets::visit(&source, &mut |s| {
        samples.push(to_pb(s, false));
        std::ops::ControlFlow::Continue(())
    })?;
    let header = pb::AnchorSuiteHeader {
        model: a.model.clone(),
        name: a.name.clone(),
        expected_samples: Some(samples.len() as u64),
        preset: a.preset.clone().unwrap_or_default(),
    };
    let mut out = vec![pb::RegisterAnchorSuiteRequest {
        msg: Some(Msg::Header(header)),
    }];
    let mut chunker = Chunker::new(a.chunk_bytes);
    let wrap = |c| pb::RegisterAnchorSuiteRequest {
        msg: Some(Msg::Chunk(c)),
    };
    for s in samples {
        out.extend(chunker.push(s).map(wrap));
    }
    out.extend(chunker.finish().map(wrap));
    Ok(out)
}

/// `ctpctl anchors …`.
pub async fn anchors(client: &mut Client, cmd: &AnchorsCommand, json: bool) -> CliResult {
    match cmd {
        AnchorsCommand::Add(a) => {
            let args = a.clone();
            let reqs = tokio::task::spawn_blocking(move || requests(&args))
                .await
                .map_err(|e| CliError::local(format!("dataset reader crashed: {e}")))??;
            let s = client
                .register_anchor_suite(tokio_stream::iter(reqs))
                .await?
                .into_inner();
            if json {
                print_json(&suite_json(&s));
            } else {
                let baseline = match s.baseline_version {
                    Some(v) => format!("; version {v} (the head) is being evaluated on it"),
                    None => String::new(),
                };
                println!(
                    "{}: anchor suite {} registered ({} samples){baseline}",
                    s.model, s.name, s.samples
                );
            }
        }
        AnchorsCommand::List(m) => {
            let list = client
                .list_anchor_suites(pb::ListAnchorSuitesRequest {
                    model: m.model.clone(),
                })
                .await?
                .into_inner()
                .suites;
            if json {
                print_json(&Value::Array(list.iter().map(suite_json).collect()));
            } else if list.is_empty() {
                eprintln!("model {} has no anchor suites", m.model);
            } else {
                let header = ["NAME", "SAMPLES", "SHA256", "CREATED", "BY"].map(String::from);
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.samples.to_string(),
                            s.sha256.chars().take(12).collect(),
                            time(&s.created_at),
                            s.created_by.clone(),
                        ]
                    })
                    .collect();
                println!("{}", table(&header, &rows));
            }
        }
    }
    Ok(())
}
