//! What a session writes and reads back: version checkpoints and mid-task resume checkpoints
//! (the version contents plus AdamW moments, step, and the drift gate's state).
use std::path::Path;

use tch::Tensor;

use super::Session;
use crate::trainer::checkpoint;
use crate::trainer::momentum::GateState;
use crate::trainer::probe::{self, ProbeSet};
use crate::trainer::TrainerError;

impl Session {
    pub(super) fn meta(&self) -> serde_json::Value {
        serde_json::json!({
            "model": self.model_cfg,
            "train": self.cfg,
            "task_index": self.task_index,
            "step": self.step,
            "total_steps": self.total_steps,
            "gate": self.gate.as_ref().map(|g| g.state.clone()),
            "adam_t": self.opt.t,
            "precision": self.opts.precision,
        })
    }

    fn model_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .online
            .named()
            .into_iter()
            .map(|(n, t)| (format!("online.{n}"), t))
            .collect();
        if let Some(m) = &self.momentum {
            out.extend(
                m.named()
                    .into_iter()
                    .map(|(n, t)| (format!("momentum.{n}"), t)),
            );
        }
        out.push(("queue.image".into(), self.queue.image.shallow_clone()));
        out.push(("queue.text".into(), self.queue.text.shallow_clone()));
        out.push(("queue.ptr".into(), Tensor::from_slice(&[self.queue.ptr])));
        out
    }

    /// The version checkpoint: online + momentum weights, queue, config, and (with `probe`)
    /// the probe set with the online model's embeddings of it (`trainer::probe`).
    pub fn save_version(
        &mut self,
        path: &Path,
        probe: Option<&ProbeSet>,
    ) -> Result<String, TrainerError> {
        let mut tensors = self.model_tensors();
        let mut meta = self.meta();
        if let Some(set) = probe {
            let (t, m) = probe::embed(&mut self.online, set)?;
            tensors.extend(t);
            meta["probe"] = m;
        }
        checkpoint::save(path, &tensors, &meta)
    }

    /// A mid-task resume checkpoint: the version contents plus optimizer moments and progress.
    pub fn save_resume(&self, path: &Path) -> Result<String, TrainerError> {
        let mut t = self.model_tensors();
        for (i, (m, v)) in self
            .opt
            .exp_avg
            .iter()
            .zip(&self.opt.exp_avg_sq)
            .enumerate()
        {
            t.push((format!("adam.m.{i:05}"), m.shallow_clone()));
            t.push((format!("adam.v.{i:05}"), v.shallow_clone()));
        }
        checkpoint::save(path, &t, &self.meta())
    }

    pub(super) fn restore(&mut self, path: &Path) -> Result<(), TrainerError> {
        let ck = checkpoint::load(path, None)?;
        let bad = |what: &str| {
            TrainerError::Checkpoint(format!("resume checkpoint {}: {what}", path.display()))
        };
        if ck.meta["train"] != serde_json::to_value(&self.cfg).expect("config serialises") {
            return Err(bad("it was written with different training settings"));
        }
        if ck.meta["task_index"].as_i64() != Some(self.task_index) {
            return Err(bad("it belongs to another task position"));
        }
        // Checkpoints from before precision was recorded ran in fp32.
        let written = ck.meta["precision"].as_str().unwrap_or("fp32");
        if written != self.opts.precision.as_str() {
            return Err(bad(&format!(
                "it was written under {written} precision and this engine runs {}; \
                 restart with engine.precision = \"{written}\" to continue it",
                self.opts.precision.as_str()
            )));
        }
        let missing = self
            .online
            .load_named(&ck.with_prefix("online."), "")
            .map_err(TrainerError::Checkpoint)?;
        if !missing.is_empty() {
            return Err(bad("online weights incomplete"));
        }
        if let Some(m) = self.momentum.as_mut() {
            let missing = m
                .load_named(&ck.with_prefix("momentum."), "")
                .map_err(TrainerError::Checkpoint)?;
            if !missing.is_empty() {
                return Err(bad("momentum weights incomplete"));
            }
        }
        let dev = self.online.device();
        let _guard = tch::no_grad_guard();
        self.queue
            .image
            .copy_(&ck.get("queue.image")?.to_device(dev));
        self.queue.text.copy_(&ck.get("queue.text")?.to_device(dev));
        self.queue.ptr = ck.get("queue.ptr")?.int64_value(&[]);
        for i in 0..self.opt.params.len() {
            self.opt.exp_avg[i].copy_(&ck.get(&format!("adam.m.{i:05}"))?.to_device(dev));
            self.opt.exp_avg_sq[i].copy_(&ck.get(&format!("adam.v.{i:05}"))?.to_device(dev));
        }
        self.opt.t = ck.meta["adam_t"].as_i64().ok_or_else(|| bad("no adam_t"))?;
        self.step = ck.meta["step"].as_i64().ok_or_else(|| bad("no step"))?;
        if let Some(g) = self.gate.as_mut() {
            g.state = serde_json::from_value::<GateState>(ck.meta["gate"].clone())
                .map_err(|e| bad(&e.to_string()))?;
        }
        self.resumed_from = Some(self.step);
        Ok(())
    }
}
