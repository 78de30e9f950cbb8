//! `ctp-bench emojicl`: the continual-learning quality benchmark, through the daemon.
//!
//! Starts an in-process `ctpd` (SQLite in a temp dir), builds EmojiCL from the installed
//! registry packages, and runs one *cell* per (method, seed): the nine tasks in order as one
//! model (`SubmitTask` + `WatchTask`), then the accuracy matrix, forgetting and BWT read back
//! with `ListVersions`. Joint trains one task on the union; its per-task Rm comes from `Embed`
//! on each task's eval split, scored with the same metric function the daemon uses.
//!
//! Every finished cell is written to its own file with every knob (module `cells`), and cells
//! whose file already exists with the same knobs are skipped, so the table can be built over
//! several runs. The summary is rebuilt from whatever cells exist.
//!
//! A cell in progress is resumable too: its daemon runs on a kept folder under `--work-dir`
//! (named by the cell's knobs, device and results folder), every task is submitted with an
//! idempotency key, and the daemon writes mid-task checkpoints. A killed run started again
//! finds the finished tasks' versions, the interrupted task resumes from its last checkpoint
//! (exactly: `tests/engine/main.rs`, `tests/daemon/crash.rs`), and only the rest trains. The
//! folder is deleted once the cell file is written.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ctp_api::pb::{self, continual_trainer_client::ContinualTrainerClient};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::cells::{self, Cell, Knobs};
use super::emojicl_rpc::{
    build_anchor, build_data, embed_rm, register_anchor, submit_and_wait, TaskData,
};
use super::protocol::{AnchorTrack, Method, MethodResult, Protocol, PAPER_QUEUE_SIZE};

/// Where and how the cells run (recorded, not part of a cell's identity).
pub struct Runtime {
    pub device: String,
    pub precision: String,
    pub threads: i32,
    pub seeds: Vec<u64>,
    pub ctpctl: Option<PathBuf>,
    /// Where cells in progress keep their daemon's data (see the module docs).
    pub work_dir: PathBuf,
    /// The daemon's `training.checkpoint_every` (0 = no mid-task checkpoints; a killed cell
    /// then restarts its interrupted task from the beginning).
    pub checkpoint_every: u32,
}

fn header(
    model: &str,
    name: &str,
    m: &Method,
    p: &Protocol,
    seed: u64,
    first: bool,
) -> pb::TaskHeader {
    let momentum = if first && m.task0_plain {
        0.0
    } else {
        m.momentum_weight
    };
    pb::TaskHeader {
        model: model.into(),
        preset: p.preset.clone(),
        task_name: name.into(),
        settings: Some(pb::TrainSettings {
            epochs: Some(p.epochs),
            batch_size: Some(p.batch),
            learning_rate: Some(p.lr),
            drift_threshold: Some(m.threshold),
            drift_check_every: Some(m.check_every.unwrap_or(p.check_every)),
            method: m.pb_method() as i32,
            bn_policy: Some(m.pb_bn() as i32),
            loss_weights: Some(pb::LossWeights {
                tp_cross: Some(m.tp_weight),
                tp_intra: Some(m.tp_weight),
                mlm: Some(m.mlm_weight),
                mlm_distill: Some(m.mlm_weight * momentum),
                itc_queue: Some(momentum),
                ..Default::default()
            }),
            momentum_reference_steps: m.momentum_reference_steps,
            queue_size: Some(m.queue_size.unwrap_or(PAPER_QUEUE_SIZE) as u32),
            replay: (m.replay_per_task > 0 || m.replay_fraction > 0.0).then(|| pb::Replay {
                samples_per_task: (m.replay_per_task > 0).then_some(m.replay_per_task),
                batch_fraction: (m.replay_fraction > 0.0).then_some(m.replay_fraction),
            }),
        }),
        eval_split: Some(pb::EvalSplit {
            kind: Some(pb::eval_split::Kind::PerSample(pb::PerSampleSplit {})),
        }),
        seed,
        idempotency_key: Some(format!("emojicl/{model}/{name}")),
        ..Default::default()
    }
}

/// Runs every missing (seed, method) cell — seeds outer, methods in the given order — writing
/// each to `cells_dir` as it finishes. Returns how many cells ran.
pub async fn run(
    methods: &[Method],
    p: &Protocol,
    rt: &Runtime,
    cells_dir: &Path,
    out_dir: &Path,
) -> Result<usize> {
    let todo: Vec<(u64, &Method)> = rt
        .seeds
        .iter()
        .flat_map(|&s| methods.iter().map(move |m| (s, m)))
        .filter(|(s, m)| !cells::is_done(cells_dir, &Knobs::new(p, m, *s)))
        .collect::<Vec<_>>();
    for (s, m) in &todo {
        cells::check_no_conflict(cells_dir, &Knobs::new(p, m, *s))?;
    }
    if todo.is_empty() {
        return Ok(0);
    }
    let mut env = vec![
        ("CTP__ENGINE__DEVICE".to_string(), rt.device.clone()),
        ("CTP__ENGINE__PRECISION".to_string(), rt.precision.clone()),
        (
            "CTP__TRAINING__CHECKPOINT_EVERY".to_string(),
            match rt.checkpoint_every {
                0 => "100000".to_string(),
                n => n.to_string(),
            },
        ),
    ];
    if rt.threads > 0 {
        env.push(("CTP__ENGINE__THREADS".into(), rt.threads.to_string()));
    }
    let mut data: Option<(u64, TaskData)> = None;
    let anchor = build_anchor(p)?;
    for (seed, m) in &todo {
        let knobs = Knobs::new(p, m, *seed);
        let work = WorkDir::open(rt, cells_dir, &knobs)?;
        let daemon = super::service::Daemon::start_in(&work.daemon_dir(), env.clone()).await?;
        let addr = daemon.addr.clone();
        let mut c = super::service::client(&addr).await?;
        if data.as_ref().map(|d| d.0) != Some(*seed) {
            data = Some((*seed, build_data(p, *seed)?));
        }
        let d = &data.as_ref().context("data")?.1;
        let model = format!("{}-seed{seed}", m.slug());
        match work.progress.runs {
            1 => eprintln!("cell {} seed {seed}: starting", m.name),
            n => eprintln!(
                "cell {} seed {seed}: resuming in {} (run {n}, {:.0}s done)",
                m.name,
                work.dir.display(),
                work.progress.seconds
            ),
        }
        if !anchor.is_empty() {
            register_anchor(&mut c, &model, &p.preset, &anchor).await?;
        }
        let mut result = run_cell(&mut c, &model, m, p, *seed, d, &work).await?;
        if !anchor.is_empty() {
            result.anchor = Some(anchor_track(&mut c, &model, anchor.len()).await?);
        }
        eprintln!(
            "cell {} seed {seed}: final mean Rm {:.2}, forgetting {:?}, {:.0}s",
            m.name, result.final_mean_rm, result.average_forgetting, result.wall_seconds
        );
        if let Some(a) = &result.anchor {
            eprintln!("  anchor suite Rm by version: {:?}", a.rm);
        }
        if let Some(bin) = &rt.ctpctl {
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
        cells::write(
            cells_dir,
            &Cell {
                knobs,
                device: rt.device.clone(),
                precision: rt.precision.clone(),
                threads: rt.threads,
                machine: super::machine(),
                finished_at: chrono::Utc::now().to_rfc3339(),
                result,
            },
        )?;
        daemon.stop().await?;
        work.remove()?;
    }
    Ok(todo.len())
}

/// A cell's kept folder: the daemon's data dir plus `cell.json` (what the folder is for) and
/// `progress.json` (runs that started, this one included; seconds up to the last finished
/// task).
struct WorkDir {
    dir: PathBuf,
    progress: Progress,
    started: Instant,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    runs: u32,
    seconds: f64,
}

impl WorkDir {
    fn open(rt: &Runtime, cells_dir: &Path, knobs: &Knobs) -> Result<WorkDir> {
        use sha2::{Digest, Sha256};
        let out = std::fs::canonicalize(cells_dir).unwrap_or_else(|_| cells_dir.to_path_buf());
        let identity = serde_json::json!({
            "knobs": knobs,
            "device": rt.device,
            "precision": rt.precision,
            "cells": out,
        });
        let text = serde_json::to_string_pretty(&identity)?;
        let hash = format!("{:x}", Sha256::digest(text.as_bytes()));
        let dir = rt.work_dir.join(format!(
            "{}--seed{}--{}",
            knobs.method.slug(),
            knobs.seed,
            &hash[..12]
        ));
        let id_file = dir.join("cell.json");
        if id_file.exists() {
            let old = std::fs::read_to_string(&id_file)
                .with_context(|| format!("reading {}", id_file.display()))?;
            if old != text {
                bail!(
                    "{} belongs to another cell; delete the folder to start over",
                    dir.display()
                );
            }
        } else {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(&id_file, &text)?;
        }
        let mut progress = match std::fs::read_to_string(dir.join("progress.json")) {
            Ok(t) => serde_json::from_str(&t).context("progress.json")?,
            Err(_) => Progress::default(),
        };
        progress.runs += 1;
        let mut work = WorkDir {
            dir,
            progress,
            started: Instant::now(),
        };
        work.save()?;
        work.started = Instant::now();
        Ok(work)
    }

    fn daemon_dir(&self) -> PathBuf {
        self.dir.join("daemon")
    }

    /// Seconds of this and earlier runs.
    fn seconds(&self) -> f64 {
        self.progress.seconds + self.started.elapsed().as_secs_f64()
    }

    /// Records a finished task (atomically: temp file, then rename).
    fn save(&self) -> Result<()> {
        let p = Progress {
            runs: self.progress.runs,
            seconds: self.seconds(),
        };
        let tmp = self.dir.join("progress.json.tmp");
        std::fs::write(&tmp, serde_json::to_string(&p)?)?;
        std::fs::rename(&tmp, self.dir.join("progress.json"))?;
        Ok(())
    }

    fn remove(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))
    }
}

async fn run_cell(
    c: &mut ContinualTrainerClient<Channel>,
    model: &str,
    m: &Method,
    p: &Protocol,
    seed: u64,
    data: &TaskData,
    work: &WorkDir,
) -> Result<MethodResult> {
    let names: Vec<String> = data.iter().map(|d| d.0.clone()).collect();
    if m.joint {
        let mut all: Vec<pb::Sample> = data.iter().flat_map(|d| d.1.iter().cloned()).collect();
        all.extend(data.iter().flat_map(|d| d.2.iter().cloned()));
        for (i, s) in all.iter_mut().enumerate() {
            s.id = format!("{i}-{}", s.id);
        }
        let h = header(model, "all tasks", m, p, seed, true);
        let (v, steps, n) = submit_and_wait(c, h, all).await?;
        let mut final_rm = Vec::new();
        for d in data {
            final_rm.push(embed_rm(c, model, v, &d.2).await?);
        }
        return Ok(MethodResult {
            matrix: vec![final_rm.iter().map(|&x| Some(x)).collect()],
            final_mean_rm: final_rm.iter().sum::<f64>() / final_rm.len() as f64,
            final_rm,
            average_forgetting: None,
            bwt: None,
            momentum_syncs: 0,
            momentum_steps: 0,
            steps_per_task: vec![steps],
            n_train: vec![n],
            wall_seconds: work.seconds(),
            runs: work.progress.runs,
            tasks: names,
            anchor: None,
        });
    }
    let mut last = 0;
    let (mut steps_per_task, mut n_train) = (Vec::new(), Vec::new());
    for (i, (name, train, eval)) in data.iter().enumerate() {
        let mut samples = train.clone();
        samples.extend(eval.iter().cloned());
        let h = header(model, name, m, p, seed, i == 0);
        let (v, steps, n) = submit_and_wait(c, h, samples).await?;
        last = v;
        steps_per_task.push(steps);
        n_train.push(n);
        work.save()?;
        eprintln!(
            "  {} seed {seed}: {name} -> v{last}, {steps} steps ({:.0}s)",
            m.name,
            work.seconds()
        );
    }
    let versions = versions_of(c, model).await?;
    let matrix = versions
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
    Ok(MethodResult {
        final_mean_rm: final_rm.iter().sum::<f64>() / final_rm.len() as f64,
        final_rm,
        average_forgetting: fin.average_forgetting,
        bwt: fin.bwt,
        momentum_syncs: versions.iter().map(|v| v.momentum_syncs).sum(),
        momentum_steps: versions.iter().map(|v| v.momentum_steps).sum(),
        matrix,
        steps_per_task,
        n_train,
        wall_seconds: work.seconds(),
        runs: work.progress.runs,
        tasks: names,
        anchor: None,
    })
}

/// Every version of `model` (a cell makes at most nine, far below one page).
async fn versions_of(
    c: &mut ContinualTrainerClient<Channel>,
    model: &str,
) -> Result<Vec<pb::Version>> {
    Ok(c.list_versions(pb::ListVersionsRequest {
        model: model.into(),
        page_size: 100,
        ..Default::default()
    })
    .await?
    .into_inner()
    .versions)
}

/// Rm on the anchor suite of every version of `model`, oldest first (the lineage: a cell's
/// versions are one chain, and Joint has one version).
async fn anchor_track(
    c: &mut ContinualTrainerClient<Channel>,
    model: &str,
    samples: usize,
) -> Result<AnchorTrack> {
    let mut versions = versions_of(c, model).await?;
    versions.sort_by_key(|v| v.version);
    let suite = ctp_datasets::emojicl::ANCHOR_SUITE;
    Ok(AnchorTrack {
        suite: suite.into(),
        samples: samples as u64,
        rm: versions
            .iter()
            .map(|v| v.anchors.iter().find(|a| a.suite == suite).map(|a| a.rm))
            .collect(),
    })
}
