//! Engine behaviour on the `tiny` preset: exact resume, a 3-task continual run with its accuracy
//! matrix and forgetting, drift-gated syncs, cancellation, bf16 training, replay.
//!
//! The other tests that run libtorch inside the test process (`golden_losses`, `pretrained`)
//! or check how the binaries load it (`cuda`) are modules of this one test binary: every
//! test binary links libtorch, so fewer binaries link faster (docs/results.md, "Build and
//! test time").
#[path = "../support/assets.rs"]
mod assets;
#[path = "../support/shapes.rs"]
mod shapes;

mod cuda;
mod golden_losses;
mod pretrained;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use ctp::metrics::{self, LineageRow};
use ctp::trainer::checkpoint;
use ctp::trainer::{
    Control, EngineConfig, EvalSet, Method, ModelConfig, Preset, ReplayPool, Sample, TrainConfig,
    TrainEvent, TrainOutcome, TrainRequest, TrainerHandle, VersionRef,
};

/// libtorch's CPU random generator and its thread count are process-wide. Engines take turns
/// among themselves (one command at a time), but `golden_losses` and `pretrained` call tch
/// directly: they hold this lock alone and the engine tests share it, so no test draws from
/// the generator while another relies on its seeded stream (as when each file was its own
/// test binary).
static TORCH: RwLock<()> = RwLock::new(());

/// For a test that trains through engines (they take turns among themselves).
fn torch_shared() -> RwLockReadGuard<'static, ()> {
    TORCH.read().unwrap_or_else(|p| p.into_inner())
}

/// For a test that calls tch itself.
fn torch_alone() -> RwLockWriteGuard<'static, ()> {
    TORCH.write().unwrap_or_else(|p| p.into_inner())
}

/// 16 synthetic pairs of one shape (task t): 8 colours × 2 sizes on white, 32×32.
fn task_samples(t: usize) -> Vec<Sample> {
    shapes::variants(t)
        .into_iter()
        .map(|(_, _, pixels, caption)| Sample { pixels, caption })
        .collect()
}

fn engine_with(precision: &str) -> TrainerHandle {
    TrainerHandle::start(EngineConfig {
        device: "cpu".into(),
        threads: 2,
        weights_dir: assets::weights(),
        precision: precision.into(),
        ..Default::default()
    })
    .unwrap()
}

fn engine() -> TrainerHandle {
    engine_with("auto")
}

fn request(
    dir: &Path,
    name: &str,
    task: usize,
    task_index: i64,
    parent: Option<VersionRef>,
    train: TrainConfig,
) -> TrainRequest {
    TrainRequest {
        model: ModelConfig::preset(Preset::Tiny),
        train,
        task_index,
        parent,
        resume: None,
        samples: task_samples(task),
        replay: Vec::new(),
        probe: Vec::new(),
        out_version: dir.join(format!("{name}.safetensors")),
        resume_path: dir.join(format!("{name}.resume.safetensors")),
        control: Control::new_flag(),
    }
}

fn cfg(epochs: i64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 8,
        lr: 1e-3,
        queue_size: 12,
        ..Default::default()
    }
}

fn run(h: &TrainerHandle, req: TrainRequest) -> (TrainOutcome, Vec<TrainEvent>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let out = h.train_blocking(req, tx).unwrap();
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (out, events)
}

fn completed(o: &TrainOutcome) -> VersionRef {
    match o {
        TrainOutcome::Completed {
            version_path,
            sha256,
            ..
        } => VersionRef {
            path: version_path.clone(),
            sha256: sha256.clone(),
        },
        other => panic!("expected completion, got {other:?}"),
    }
}

/// Train N steps straight; separately resume from the N/2 checkpoint in a fresh engine: the
/// final weights (online, momentum, queue) are bitwise identical on CPU.
#[test]
fn resume_from_mid_task_checkpoint_is_exact() {
    let _torch = torch_shared();
    let dir = tempfile::tempdir().unwrap();
    let h = engine();
    let (o, _) = run(&h, request(dir.path(), "v1", 0, 0, None, cfg(1)));
    let v1 = completed(&o);
    // Task 1 (reference model, topology preservation, drift gate all active): 4 steps.
    let mut c = cfg(2);
    c.checkpoint_every = 2;
    c.momentum.threshold = 0.001;
    let (straight, events) = run(
        &h,
        request(dir.path(), "straight", 1, 1, Some(v1.clone()), c.clone()),
    );
    let straight = completed(&straight);
    assert!(events
        .iter()
        .any(|e| matches!(e, TrainEvent::Checkpoint { step: 2, .. })));
    drop(h);

    let mid = dir.path().join("mid.safetensors");
    std::fs::copy(dir.path().join("straight.resume.safetensors"), &mid).unwrap();
    let fresh = engine();
    let mut req = request(dir.path(), "resumed", 1, 1, Some(v1), c);
    req.resume = Some(mid);
    let (o, events) = run(&fresh, req);
    assert!(
        matches!(
            events[0],
            TrainEvent::Started {
                resumed_from: Some(2),
                ..
            }
        ),
        "{:?}",
        events[0]
    );
    let steps: Vec<i64> = events
        .iter()
        .filter_map(|e| {
            if let TrainEvent::Step(p) = e {
                Some(p.step)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(steps, vec![3, 4], "only the second half ran");
    let resumed = completed(&o);

    let a = checkpoint::load(&straight.path, Some(&straight.sha256)).unwrap();
    let b = checkpoint::load(&resumed.path, Some(&resumed.sha256)).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, t) in &a.tensors {
        assert!(t.equal(&b.tensors[name]), "{name} differs after resume");
    }
}

/// Three tasks in sequence with CTP; every version evaluated on all seen tasks gives a full
/// lower-triangular accuracy matrix, and forgetting/BWT come out of the metric functions.
#[test]
fn three_task_continual_run_produces_accuracy_matrix_and_forgetting() {
    let _torch = torch_shared();
    let dir = tempfile::tempdir().unwrap();
    let h = engine();
    let model = ModelConfig::preset(Preset::Tiny);
    let mut parent: Option<VersionRef> = None;
    let mut lineage: Vec<LineageRow> = Vec::new();
    for t in 0..3usize {
        let (o, events) = run(
            &h,
            request(
                dir.path(),
                &format!("v{t}"),
                t,
                t as i64,
                parent.clone(),
                cfg(20),
            ),
        );
        let losses: Vec<f64> = events
            .iter()
            .filter_map(|e| {
                if let TrainEvent::Step(p) = e {
                    Some(p.losses["total"])
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(losses.len(), 40);
        let (first, last) = (losses[0], losses[36..].iter().sum::<f64>() / 4.0);
        assert!(
            last < first,
            "task {t}: loss did not go down ({first} → {last})"
        );
        if let TrainOutcome::Completed {
            syncs,
            momentum_steps,
            ..
        } = &o
        {
            assert_eq!(
                syncs.len() as i64,
                *momentum_steps,
                "threshold 0 syncs every step"
            );
            assert!(syncs.iter().all(|s| s.k == 1));
        }
        let v = completed(&o);
        let sets: Vec<EvalSet> = (0..=t)
            .map(|j| EvalSet {
                task_id: j as i64,
                samples: task_samples(j),
            })
            .collect();
        let report = h.evaluate_blocking(model.clone(), v.clone(), sets).unwrap();
        assert_eq!(report.per_task.len(), t + 1);
        let union = report.union.unwrap();
        assert!((0.0..=100.0).contains(&union.rm));
        let rm: BTreeMap<i64, f64> = report
            .per_task
            .iter()
            .map(|e| (e.task_id, e.retrieval.rm))
            .collect();
        lineage.push(LineageRow {
            version: t as i64 + 1,
            task: t as i64,
            rm,
        });
        parent = Some(v);
    }
    // Full lower-triangular matrix.
    for (i, row) in lineage.iter().enumerate() {
        assert_eq!(
            row.rm.keys().copied().collect::<Vec<_>>(),
            (0..=i as i64).collect::<Vec<_>>()
        );
    }
    let f = metrics::forgetting_max(&lineage);
    assert_eq!(f.per_task.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    let expected0 = lineage[0].rm[&0].max(lineage[1].rm[&0]) - lineage[2].rm[&0];
    assert!((f.per_task[&0] - expected0).abs() < 1e-9);
    assert!(f.average.is_some());
    assert!(metrics::bwt_paper(&lineage).is_some());
    // Every version retrieves its tasks better than chance (Rm = 33.3 for 16 candidates:
    // R@1/5/10 = 6.25/31.25/62.5).
    eprintln!(
        "accuracy matrix: {:?}",
        lineage.iter().map(|r| &r.rm).collect::<Vec<_>>()
    );
    for row in &lineage {
        assert!(
            row.rm.values().all(|&rm| rm > 100.0 / 3.0 + 5.0),
            "{:?}",
            row.rm
        );
    }
}

/// A high drift threshold skips syncs; the sync records say when and with which k.
#[test]
fn drift_gate_skips_syncs_and_cancel_stops_at_a_step_boundary() {
    let _torch = torch_shared();
    let dir = tempfile::tempdir().unwrap();
    let h = engine();
    let mut c = cfg(4);
    c.momentum.threshold = 1e9;
    let (o, _) = run(&h, request(dir.path(), "gated", 0, 0, None, c));
    if let TrainOutcome::Completed {
        syncs,
        momentum_steps,
        ..
    } = o
    {
        assert_eq!(momentum_steps, 8);
        assert!(syncs.is_empty());
    } else {
        panic!("not completed");
    }
    let mut c = cfg(4);
    c.momentum.threshold = 0.0;
    c.momentum.check_every = 3;
    let (o, _) = run(&h, request(dir.path(), "every3", 0, 0, None, c));
    if let TrainOutcome::Completed { syncs, .. } = o {
        assert_eq!(
            syncs.iter().map(|s| (s.step, s.k)).collect::<Vec<_>>(),
            vec![(2, 3), (5, 3)]
        );
    }
    let req = request(dir.path(), "cancelled", 0, 0, None, cfg(4));
    req.control.store(Control::CANCEL, Ordering::SeqCst);
    let (o, _) = run(&h, req);
    assert_eq!(o, TrainOutcome::Cancelled { step: 0 });
    assert!(!dir.path().join("cancelled.safetensors").exists());
    // SeqFT runs without a momentum model.
    let mut c = cfg(1);
    c.method = Method::SeqFt;
    let (o, events) = run(&h, request(dir.path(), "seqft", 0, 0, None, c));
    assert!(matches!(
        o,
        TrainOutcome::Completed {
            momentum_steps: 0,
            ..
        }
    ));
    assert!(events.iter().all(|e| !matches!(e, TrainEvent::Sync(_))));
}

fn losses_by_step(events: &[TrainEvent], term: &str) -> Vec<f64> {
    events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step(p) => Some(p.losses[term]),
            _ => None,
        })
        .collect()
}

/// bf16 (matmuls, convs and attention in bfloat16, the rest fp32) trains the tiny preset like
/// fp32 does: the MLM loss falls and every step's total loss stays within 2% of the fp32 run's
/// (and is not identical to it: the bf16 path really runs). The version records its precision,
/// keeps float32 master weights, and its resume checkpoint is not continued under fp32. `auto`
/// on a CPU engine is fp32.
#[test]
fn bf16_tiny_run_trains_like_fp32_and_records_its_precision() {
    let _torch = torch_shared();
    let dir = tempfile::tempdir().unwrap();
    let bf16 = engine_with("bf16");
    let fp32 = engine();
    assert_eq!(
        (bf16.precision.as_str(), fp32.precision.as_str()),
        ("bf16", "fp32")
    );
    let mut c = cfg(8);
    c.lr = 3e-3;
    c.checkpoint_every = 4;
    let (o, events) = run(&bf16, request(dir.path(), "b", 0, 0, None, c.clone()));
    let v = completed(&o);
    let (_, events32) = run(&fp32, request(dir.path(), "f", 0, 0, None, c.clone()));
    let mlm = losses_by_step(&events, "mlm");
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&mlm[..4]), mean(&mlm[12..]));
    assert!(
        last < 0.85 * first,
        "bf16 MLM did not fall: {first} -> {last}"
    );
    let (t16, t32) = (
        losses_by_step(&events, "total"),
        losses_by_step(&events32, "total"),
    );
    assert_eq!(t16.len(), 16);
    for (i, (a, b)) in t16.iter().zip(&t32).enumerate() {
        assert!(
            (a - b).abs() <= 0.02 * b.abs(),
            "step {i}: bf16 {a} vs fp32 {b}"
        );
    }
    assert_ne!(t16, t32, "the bf16 run computed exactly the fp32 losses");
    let ck = checkpoint::load(&v.path, Some(&v.sha256)).unwrap();
    assert_eq!(ck.meta["precision"], "bf16");
    assert!(ck.tensors.values().all(|t| t.kind() != tch::Kind::BFloat16));
    let mut req = request(dir.path(), "again", 0, 0, None, c);
    req.resume = Some(dir.path().join("b.resume.safetensors"));
    let err = fp32
        .train_blocking(req, tokio::sync::mpsc::unbounded_channel().0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bf16") && err.contains("fp32"), "{err}");
}

/// `engine.bf16_weight_cache` (issue #27): with bf16 copies of the weights cast once per
/// optimizer step (online) and after each sync (momentum, reference), a task ≥ 1 run of the
/// tiny preset (all three models, a sync every step) stays within 2% of fp32 at every step,
/// as plain bf16 does, and resuming it mid-task refills the momentum model's copies. Each
/// outcome names the precision it trained in.
#[test]
fn bf16_weight_cache_tiny_run_stays_within_2_percent_of_fp32() {
    let _torch = torch_shared();
    let dir = tempfile::tempdir().unwrap();
    let start = |precision: &str, cache: bool| {
        TrainerHandle::start(EngineConfig {
            device: "cpu".into(),
            threads: 2,
            weights_dir: assets::weights(),
            precision: precision.into(),
            bf16_weight_cache: cache,
            ..Default::default()
        })
        .unwrap()
    };
    let (cached, fp32) = (start("bf16", true), start("fp32", true));
    let mut c = cfg(4);
    c.lr = 3e-3;
    c.checkpoint_every = 4;
    let parent = completed(&run(&fp32, request(dir.path(), "p", 0, 0, None, c.clone())).0);
    let task1 = |h: &TrainerHandle, name: &str| {
        run(
            h,
            request(dir.path(), name, 1, 1, Some(parent.clone()), c.clone()),
        )
    };
    let (o16, e16) = task1(&cached, "c");
    let (o32, e32) = task1(&fp32, "f");
    for (o, want) in [(&o16, "bf16"), (&o32, "fp32")] {
        match o {
            TrainOutcome::Completed { precision, .. } => assert_eq!(precision, want),
            other => panic!("expected completion, got {other:?}"),
        }
    }
    let (t16, t32) = (losses_by_step(&e16, "total"), losses_by_step(&e32, "total"));
    assert_eq!(t16.len(), 8);
    for (i, (a, b)) in t16.iter().zip(&t32).enumerate() {
        assert!(
            (a - b).abs() <= 0.02 * b.abs(),
            "step {i}: cached bf16 {a} vs fp32 {b}"
        );
    }
    assert_ne!(
        t16, t32,
        "the cached bf16 run computed exactly the fp32 losses"
    );
    assert!(
        losses_by_step(&e16, "tp_cross").len() == 8,
        "task 1 runs every CTP term"
    );
    // Resume the cached run from its step-4 checkpoint: the remaining steps repeat exactly.
    let mut req = request(dir.path(), "c2", 1, 1, Some(parent.clone()), c.clone());
    req.resume = Some(dir.path().join("c.resume.safetensors"));
    let (_, resumed) = run(&cached, req);
    assert_eq!(losses_by_step(&resumed, "total"), t16[4..].to_vec());
}

/// Experience replay (issue #10): replayed samples change training, and a task resumed from a
/// mid-task checkpoint replays exactly what an uninterrupted one does (bitwise on CPU).
#[test]
fn replay_is_used_and_exact_across_resume() {
    let _torch = torch_shared();
    let dir = tempfile::tempdir().unwrap();
    let h = engine();
    let v1 = completed(&run(&h, request(dir.path(), "v1", 0, 0, None, cfg(1))).0);
    let mut c = cfg(2);
    c.checkpoint_every = 2;
    let with_replay = |name: &str, per_batch: usize| {
        let mut r = request(dir.path(), name, 1, 1, Some(v1.clone()), c.clone());
        r.replay = vec![ReplayPool {
            samples: task_samples(0),
            per_batch,
        }];
        r
    };
    let plain = completed(&run(&h, with_replay("plain", 0)).0);
    let straight = completed(&run(&h, with_replay("straight", 3)).0);
    let load = |v: &VersionRef| checkpoint::load(&v.path, Some(&v.sha256)).unwrap();
    let same = |a: &VersionRef, b: &VersionRef| {
        let (a, b) = (load(a), load(b));
        a.tensors.len() == b.tensors.len() && a.tensors.iter().all(|(n, t)| t.equal(&b.tensors[n]))
    };
    assert!(
        !same(&plain, &straight),
        "replayed samples must change the weights"
    );
    drop(h);
    let mid = dir.path().join("mid.safetensors");
    std::fs::copy(dir.path().join("straight.resume.safetensors"), &mid).unwrap();
    let mut req = with_replay("resumed", 3);
    req.resume = Some(mid);
    let (o, events) = run(&engine(), req);
    assert!(
        matches!(
            events[0],
            TrainEvent::Started {
                resumed_from: Some(2),
                ..
            }
        ),
        "{:?}",
        events[0]
    );
    assert!(
        same(&straight, &completed(&o)),
        "a resumed task replays the same samples"
    );
}
