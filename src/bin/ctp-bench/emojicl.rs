//! `ctp-bench emojicl`: the continual-learning quality benchmark, through the daemon.
//!
//! Starts an in-process `ctpd` (SQLite in a temp dir), builds EmojiCL from the installed
//! registry packages, and for every method trains the nine tasks in order as one model
//! (`SubmitTask` + `WatchTask`), then reads the accuracy matrix, forgetting and BWT back with
//! `ListVersions`. Joint trains one task on the union; its per-task Rm comes from `Embed` on each
//! task's eval split, scored with the same metric function the daemon uses.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ctp::api::pb::{self, continual_trainer_client::ContinualTrainerClient};
use ctp::datasets::emojicl;
use serde::Serialize;
use tonic::transport::Channel;

/// One benchmark configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Method {
    pub name: String,
    #[serde(serialize_with = "debug_str")]
    pub method: pb::Method,
    #[serde(serialize_with = "debug_str")]
    pub bn: pb::BnPolicy,
    pub threshold: f64,
    pub joint: bool,
    /// Topology-preservation weight (both terms); 1 = the paper's code.
    pub tp_weight: f64,
    /// MLM and MLM-distillation weight; 1 = the paper's code.
    pub mlm_weight: f64,
    /// Weight of the momentum terms (queue ITC and MLM distillation, times `mlm_weight` for the
    /// latter); 1 = the paper's code.
    pub momentum_weight: f64,
}

fn debug_str<T: std::fmt::Debug, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:?}"))
}

pub struct Protocol {
    pub preset: String,
    pub max_train: usize,
    pub max_eval: usize,
    pub epochs: u32,
    pub batch: u32,
    pub lr: f64,
    pub seed: u64,
    pub tasks: Vec<usize>,
    pub device: String,
    pub check_every: u32,
}

#[derive(Debug, Serialize)]
pub struct MethodResult {
    pub method: Method,
    pub tasks: Vec<String>,
    /// matrix[v][j]: Rm on task j after training through task v (None = not seen yet).
    pub matrix: Vec<Vec<Option<f64>>>,
    pub final_rm: Vec<f64>,
    pub final_mean_rm: f64,
    pub average_forgetting: Option<f64>,
    pub bwt: Option<f64>,
    pub momentum_syncs: u64,
    pub momentum_steps: u64,
    pub wall_seconds: f64,
}

fn sample(s: &emojicl::SampleRef) -> Result<pb::Sample> {
    Ok(pb::Sample {
        image: std::fs::read(&s.image).with_context(|| format!("reading {}", s.image.display()))?,
        caption: s.caption.clone().into_bytes(),
        id: s.id.clone(),
        split: match s.split {
            ctp::datasets::Split::Train => pb::Split::Train,
            ctp::datasets::Split::Eval => pb::Split::Eval,
        } as i32,
    })
}

async fn submit_and_wait(
    c: &mut ContinualTrainerClient<Channel>,
    header: pb::TaskHeader,
    samples: Vec<pb::Sample>,
) -> Result<i64> {
    use pb::submit_task_request::Msg;
    let mut reqs = vec![pb::SubmitTaskRequest {
        msg: Some(Msg::Header(header)),
    }];
    for chunk in samples.chunks(256) {
        reqs.push(pb::SubmitTaskRequest {
            msg: Some(Msg::Chunk(pb::SampleChunk {
                samples: chunk.to_vec(),
            })),
        });
    }
    let task = c.submit_task(tokio_stream::iter(reqs)).await?.into_inner();
    let mut stream = c
        .watch_task(pb::WatchTaskRequest {
            task_id: task.id.clone(),
            after_seq: 0,
        })
        .await?
        .into_inner();
    while let Some(ev) = stream.message().await? {
        if let Some(pb::task_event::Event::Terminal(t)) = ev.event {
            if t.state != pb::TaskState::Succeeded as i32 {
                bail!(
                    "task {} ended {:?}: {}",
                    task.name,
                    pb::TaskState::try_from(t.state),
                    t.error
                );
            }
            return t.produced_version.context("no version");
        }
    }
    bail!("watch stream ended early")
}

fn header(model: &str, name: &str, m: &Method, p: &Protocol) -> pb::TaskHeader {
    pb::TaskHeader {
        model: model.into(),
        preset: p.preset.clone(),
        task_name: name.into(),
        settings: Some(pb::TrainSettings {
            epochs: Some(p.epochs),
            batch_size: Some(p.batch),
            learning_rate: Some(p.lr),
            drift_threshold: Some(m.threshold),
            drift_check_every: Some(p.check_every),
            method: m.method as i32,
            bn_policy: Some(m.bn as i32),
            loss_weights: Some(pb::LossWeights {
                tp_cross: Some(m.tp_weight),
                tp_intra: Some(m.tp_weight),
                mlm: Some(m.mlm_weight),
                mlm_distill: Some(m.mlm_weight * m.momentum_weight),
                itc_queue: Some(m.momentum_weight),
                ..Default::default()
            }),
        }),
        eval_split: Some(pb::EvalSplit {
            kind: Some(pb::eval_split::Kind::PerSample(pb::PerSampleSplit {})),
        }),
        seed: p.seed,
        ..Default::default()
    }
}

/// Rm of `version` on one task's eval split, via the Embed RPC.
async fn embed_rm(
    c: &mut ContinualTrainerClient<Channel>,
    model: &str,
    version: i64,
    eval: &[pb::Sample],
) -> Result<f64> {
    let r = c
        .embed(pb::EmbedRequest {
            model: model.into(),
            version: Some(version),
            images: eval.iter().map(|s| s.image.clone()).collect(),
            texts: eval
                .iter()
                .map(|s| String::from_utf8_lossy(&s.caption).into_owned())
                .collect(),
        })
        .await?
        .into_inner();
    let n = eval.len();
    let mut sim = vec![0f32; n * n];
    for (i, a) in r.image_embeddings.iter().enumerate() {
        for (j, b) in r.text_embeddings.iter().enumerate() {
            sim[i * n + j] = a.values.iter().zip(&b.values).map(|(x, y)| x * y).sum();
        }
    }
    Ok(ctp::metrics::retrieval(&sim, n)?.rm)
}

pub async fn run(
    methods: Vec<Method>,
    p: Protocol,
    out_dir: &Path,
    ctpctl: Option<PathBuf>,
) -> Result<Vec<MethodResult>> {
    let opts = emojicl::Options {
        tasks: p.tasks.clone(),
        max_train: Some(p.max_train),
        max_eval: Some(p.max_eval),
        seed: p.seed,
        ..Default::default()
    };
    let tasks = emojicl::build(&emojicl::default_node_modules(), &opts)?;
    let data: Vec<(String, Vec<pb::Sample>, Vec<pb::Sample>)> = tasks
        .iter()
        .map(|t| {
            Ok((
                t.name.clone(),
                t.train.iter().map(sample).collect::<Result<_>>()?,
                t.eval.iter().map(sample).collect::<Result<_>>()?,
            ))
        })
        .collect::<Result<_>>()?;
    let env = vec![
        ("CTP__ENGINE__DEVICE".to_string(), p.device.clone()),
        (
            "CTP__TRAINING__CHECKPOINT_EVERY".to_string(),
            "100000".to_string(),
        ),
    ];
    let daemon = super::service::Daemon::start(env).await?;
    let addr = daemon.addr.clone();
    let mut c = super::service::client(&addr).await?;
    let mut results = Vec::new();
    for m in methods {
        let started = Instant::now();
        let model = m
            .name
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-");
        let names: Vec<String> = data.iter().map(|d| d.0.clone()).collect();
        let result = if m.joint {
            let train: Vec<pb::Sample> = data.iter().flat_map(|d| d.1.iter().cloned()).collect();
            let eval: Vec<pb::Sample> = data.iter().flat_map(|d| d.2.iter().cloned()).collect();
            let mut all = train;
            all.extend(eval);
            for (i, s) in all.iter_mut().enumerate() {
                s.id = format!("{i}-{}", s.id);
            }
            let v = submit_and_wait(&mut c, header(&model, "all nine tasks", &m, &p), all).await?;
            let mut final_rm = Vec::new();
            for d in &data {
                final_rm.push(embed_rm(&mut c, &model, v, &d.2).await?);
            }
            let mean = final_rm.iter().sum::<f64>() / final_rm.len() as f64;
            MethodResult {
                matrix: vec![final_rm.iter().map(|&x| Some(x)).collect()],
                final_mean_rm: mean,
                final_rm,
                average_forgetting: None,
                bwt: None,
                momentum_syncs: 0,
                momentum_steps: 0,
                wall_seconds: 0.0,
                tasks: names,
                method: m.clone(),
            }
        } else {
            let mut last = 0;
            for (name, train, eval) in &data {
                let mut samples = train.clone();
                samples.extend(eval.iter().cloned());
                last = submit_and_wait(&mut c, header(&model, name, &m, &p), samples).await?;
                eprintln!(
                    "  {}: {name} -> v{last} ({:.0}s)",
                    m.name,
                    started.elapsed().as_secs_f64()
                );
            }
            let versions = c
                .list_versions(pb::ListVersionsRequest {
                    model: model.clone(),
                    page_size: 100,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .versions;
            let matrix: Vec<Vec<Option<f64>>> = versions
                .iter()
                .map(|v| {
                    (0..data.len())
                        .map(|j| v.evals.get(j).map(|e| e.rm))
                        .collect()
                })
                .collect();
            let fin = versions
                .iter()
                .find(|v| v.version == last)
                .context("final version")?;
            let final_rm: Vec<f64> = fin.evals.iter().map(|e| e.rm).collect();
            MethodResult {
                final_mean_rm: final_rm.iter().sum::<f64>() / final_rm.len() as f64,
                final_rm,
                average_forgetting: fin.average_forgetting,
                bwt: fin.bwt,
                momentum_syncs: versions.iter().map(|v| v.momentum_syncs).sum(),
                momentum_steps: versions.iter().map(|v| v.momentum_steps).sum(),
                matrix,
                wall_seconds: 0.0,
                tasks: names,
                method: m.clone(),
            }
        };
        let mut result = result;
        result.wall_seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "{}: final mean Rm {:.2}, forgetting {:?}, {:.0}s",
            m.name, result.final_mean_rm, result.average_forgetting, result.wall_seconds
        );
        if let Some(bin) = &ctpctl {
            let report = out_dir.join("reports").join(&model);
            let status = std::process::Command::new(bin)
                .args(["--addr", &addr, "report", "--model", &model, "--out"])
                .arg(&report)
                .stdout(std::process::Stdio::null())
                .status();
            if !status.map(|s| s.success()).unwrap_or(false) {
                eprintln!("  (report for {model} failed)");
            }
        }
        results.push(result);
    }
    daemon.stop().await?;
    Ok(results)
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1}"))
}

/// The Markdown summary (main table, then each accuracy matrix).
pub fn markdown(results: &[MethodResult], machine: &str, protocol: &str) -> String {
    let mut s = format!("# EmojiCL results\n\n{machine}\n\nProtocol: {protocol}\n\n");
    s.push_str("| method | final mean Rm | avg forgetting | BWT (paper, + = forgetting) | momentum syncs / steps | skipped | wall s |\n|---|---|---|---|---|---|---|\n");
    for r in results {
        let skipped = if r.momentum_steps > 0 {
            format!(
                "{:.0}%",
                100.0 * (1.0 - r.momentum_syncs as f64 / r.momentum_steps as f64)
            )
        } else {
            "-".into()
        };
        s.push_str(&format!(
            "| {} | {:.2} | {} | {} | {}/{} | {} | {:.0} |\n",
            r.method.name,
            r.final_mean_rm,
            r.average_forgetting
                .map_or("-".into(), |x| format!("{x:.2}")),
            r.bwt.map_or("-".into(), |x| format!("{x:.2}")),
            r.momentum_syncs,
            r.momentum_steps,
            skipped,
            r.wall_seconds
        ));
    }
    for r in results {
        s.push_str(&format!("\n## {} — accuracy matrix (Rm; row = after task, column = task)\n\n| after \\ task | {} |\n|---|{}\n", r.method.name, r.tasks.join(" | "), "---|".repeat(r.tasks.len())));
        for (i, row) in r.matrix.iter().enumerate() {
            let label = if r.method.joint {
                "joint".to_string()
            } else {
                r.tasks[i].clone()
            };
            s.push_str(&format!(
                "| {label} | {} |\n",
                row.iter().map(|v| fmt(*v)).collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    s
}
