//! Drift-gated compatible momentum (docs/method.md, "Drift-gated momentum sync").
//!
//! The paper moves the momentum model θc toward its target every step. ctp checks drift every
//! `check_every` steps and syncs only when drift ≥ threshold, applying the decay accumulated
//! since the last sync in one pass: θc ← m^k·θc + (1 − m^k)·T, where k counts the per-step
//! updates the paper would have made. Task 0: T = θ, m = m0. Task ≥ 1: T = α·θ_{t−1} + (1−α)·θ.
//! With threshold 0 and `check_every` 1, k = 1 at every step: exactly the paper's update.
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::config::MomentumConfig;

/// One momentum sync, as recorded for users and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub task_index: i64,
    /// 0-based step within the task at which the sync ran (before that step's momentum forward).
    pub step: i64,
    /// Per-step updates folded into this sync.
    pub k: i64,
    pub drift: f64,
    pub threshold: f64,
    pub duration_ms: f64,
}

/// State of the gate; saved in mid-task checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateState {
    /// Per-step updates already applied in this task (the paper would have applied `step + 1`
    /// by the momentum forward of `step`).
    pub applied: i64,
    pub syncs: Vec<SyncRecord>,
    pub last_drift: f64,
    pub checks: i64,
}

/// Flat parameter buffers the gate works on ([`super::flat`]), aligned by sorted name.
pub struct GateParams<'a> {
    pub online: &'a Tensor,
    pub momentum: &'a Tensor,
    /// θ_{t−1}; `None` for task 0.
    pub reference: Option<&'a Tensor>,
}

pub struct DriftGate {
    pub cfg: MomentumConfig,
    pub task_index: i64,
    pub state: GateState,
    /// ‖θc‖₂, cached between syncs (θc only changes when the gate syncs).
    momentum_norm: Option<Tensor>,
}

impl DriftGate {
    pub fn new(cfg: MomentumConfig, task_index: i64) -> DriftGate {
        DriftGate {
            cfg,
            task_index,
            state: GateState::default(),
            momentum_norm: None,
        }
    }

    fn decay(&self) -> f64 {
        if self.task_index == 0 {
            self.cfg.m0
        } else {
            self.cfg.m
        }
    }

    /// Whether `step` is a drift-check step.
    pub fn is_check_step(&self, step: i64) -> bool {
        (step + 1) % self.cfg.check_every == 0
    }

    /// Relative parameter distance ‖θ − θc‖₂ / ‖θc‖₂ over all synced parameters, as a scalar
    /// tensor on the device (reading it is the caller's choice: it waits for the device).
    /// One pass over θ and θc; ‖θc‖₂ is reused until the next sync.
    pub fn param_drift(&mut self, p: &GateParams) -> Tensor {
        let _guard = tch::no_grad_guard();
        let base = self
            .momentum_norm
            .get_or_insert_with(|| p.momentum.norm().to_kind(Kind::Float))
            .shallow_clone();
        p.online.dist(p.momentum).to_kind(Kind::Float) / base.clamp_min(1e-12)
    }

    /// Fills in the drift of the check at `step` once its value is known (the caller deferred
    /// reading it because threshold 0 syncs regardless).
    pub fn record_drift(&mut self, step: i64, drift: f64) {
        self.state.last_drift = drift;
        if let Some(rec) = self.state.syncs.last_mut().filter(|r| r.step == step) {
            rec.drift = drift;
        }
    }

    /// Runs the check for `step` with an already-measured drift; syncs if it crosses the
    /// threshold (NaN: not read yet, which only threshold 0 may pass, and always syncs).
    /// Returns the record of a sync, if one happened.
    pub fn check(&mut self, step: i64, drift: f64, p: &GateParams) -> Option<SyncRecord> {
        self.state.checks += 1;
        self.state.last_drift = drift;
        if drift < self.cfg.threshold {
            return None;
        }
        let k = step + 1 - self.state.applied;
        if k <= 0 {
            return None;
        }
        let started = Instant::now();
        self.sync(k, p);
        self.state.applied = step + 1;
        let rec = SyncRecord {
            task_index: self.task_index,
            step,
            k,
            drift,
            threshold: self.cfg.threshold,
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
        };
        self.state.syncs.push(rec.clone());
        Some(rec)
    }

    /// θc ← m^k·θc + (1 − m^k)·T, as one or two in-place `lerp_` passes (no temporaries).
    ///
    /// Task ≥ 1 expands to θc ← m^k·θc + a·θ_{t−1} + b·θ with a = (1−m^k)α, b = (1−m^k)(1−α):
    /// lerp toward θ_{t−1} with w1 = 1 − m^k/(1−b), then toward θ with w2 = b.
    fn sync(&mut self, k: i64, p: &GateParams) {
        let _guard = tch::no_grad_guard();
        let mk = self.decay().powi(k as i32);
        let mut m = p.momentum.shallow_clone();
        match p.reference {
            Some(r) => {
                let b = (1.0 - mk) * (1.0 - self.cfg.alpha);
                let _ = m.lerp_(r, 1.0 - mk / (1.0 - b));
                let _ = m.lerp_(p.online, b);
            }
            None => {
                let _ = m.lerp_(p.online, 1.0 - mk);
            }
        }
        self.momentum_norm = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::flat;
    use tch::Device;

    /// Two tensors as views into one flat buffer: (views, buffer).
    fn params(seed: i64) -> (Vec<Tensor>, Tensor) {
        tch::manual_seed(seed);
        let v = vec![
            Tensor::randn([7, 3], (Kind::Float, Device::Cpu)),
            Tensor::randn([5], (Kind::Float, Device::Cpu)),
        ];
        let buf = flat::flatten(&v);
        (v, buf)
    }

    fn deep(v: &[Tensor]) -> (Vec<Tensor>, Tensor) {
        let c: Vec<Tensor> = v.iter().map(|t| t.copy()).collect();
        let buf = flat::flatten(&c);
        (c, buf)
    }

    fn max_abs_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs().max().double_value(&[]))
            .fold(0.0, f64::max)
    }

    /// Threshold 0, check every step: the gate reproduces the paper's per-step update
    /// θc ← 0.9·θc + 0.05·θ + 0.05·θ_{t−1} over several steps while θ keeps moving.
    #[test]
    fn threshold_zero_equals_the_papers_per_step_update() {
        let (reference, reference_buf) = params(1);
        let (online, online_buf) = params(2);
        let (gated, gated_buf) = deep(&reference); // θc reset to θ_{t−1} at task start
        let (paper, _) = deep(&reference);
        let mut gate = DriftGate::new(
            MomentumConfig {
                threshold: 0.0,
                check_every: 1,
                ..Default::default()
            },
            1,
        );
        for step in 0..6 {
            for (i, o) in online.iter().enumerate() {
                let moved =
                    o + Tensor::randn(o.size(), (Kind::Float, Device::Cpu)) * 0.1 * (i + 1) as f64;
                o.shallow_clone().copy_(&moved);
            }
            let gp = GateParams {
                online: &online_buf,
                momentum: &gated_buf,
                reference: Some(&reference_buf),
            };
            let d = gate.param_drift(&gp).double_value(&[]);
            let rec = gate.check(step, d, &gp).expect("threshold 0 always syncs");
            assert_eq!(rec.k, 1);
            for ((m, o), r) in paper.iter().zip(&online).zip(&reference) {
                let next = m * 0.9 + o * 0.05 + r * 0.05;
                m.shallow_clone().copy_(&next);
            }
            assert!(
                max_abs_diff(&gated, &paper) < 1e-6,
                "step {step}: {}",
                max_abs_diff(&gated, &paper)
            );
        }
        assert_eq!(gate.state.syncs.len(), 6);
    }

    /// Task 0 targets θ itself with m0; a skipped stretch is folded in as m^k.
    #[test]
    fn skipped_steps_accumulate_decay() {
        let (online, online_buf) = params(3);
        let (momentum, momentum_buf) = deep(&params(4).0);
        let (start, _) = deep(&momentum);
        let mut gate = DriftGate::new(
            MomentumConfig {
                threshold: 1e9,
                check_every: 1,
                ..Default::default()
            },
            0,
        );
        let gp = GateParams {
            online: &online_buf,
            momentum: &momentum_buf,
            reference: None,
        };
        assert!(gate.check(0, 0.5, &gp).is_none());
        assert!(gate.check(1, 0.5, &gp).is_none());
        gate.cfg.threshold = 0.1;
        let rec = gate.check(2, 0.5, &gp).unwrap();
        assert_eq!(rec.k, 3);
        let mk = 0.995f64.powi(3);
        let expected: Vec<Tensor> = start
            .iter()
            .zip(&online)
            .map(|(m, o)| m * mk + o * (1.0 - mk))
            .collect();
        assert!(max_abs_diff(&momentum, &expected) < 1e-6);
        // With a constant target, one sync of k steps equals k per-step updates.
        let mut per_step = deep(&start).0;
        for _ in 0..3 {
            per_step = per_step
                .iter()
                .zip(&online)
                .map(|(m, o)| m * 0.995 + o * 0.005)
                .collect();
        }
        assert!(max_abs_diff(&momentum, &per_step) < 1e-6);
    }

    #[test]
    fn drift_is_relative_distance_and_follows_syncs() {
        let a = Tensor::from_slice(&[3.0f32, 4.0]);
        let b = Tensor::from_slice(&[0.0f32, 0.0]);
        let c = Tensor::from_slice(&[6.0f32, 8.0]);
        let mut gate = DriftGate::new(MomentumConfig::default(), 0);
        let gp = GateParams {
            online: &c,
            momentum: &a,
            reference: None,
        };
        assert!((gate.param_drift(&gp).double_value(&[]) - 1.0).abs() < 1e-6);
        // A sync moves θc; the cached ‖θc‖ must follow: θc = 0.995·(3,4) + 0.005·(6,8)
        // = 1.005·(3,4) and θ = 2·(3,4).
        gate.check(0, 1.0, &gp).unwrap();
        let want = (2.0 - 1.005) / 1.005f64;
        let got = gate.param_drift(&gp).double_value(&[]);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let gp = GateParams {
            online: &a,
            momentum: &b,
            reference: None,
        };
        let mut fresh = DriftGate::new(MomentumConfig::default(), 0);
        assert!(
            fresh.param_drift(&gp).double_value(&[]) > 1e6,
            "zero momentum norm is guarded, not NaN"
        );
    }
}
