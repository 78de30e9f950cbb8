//! One task's training run: the CTP step (docs/method.md, "One training step") in a resumable loop.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::checkpoint;
use super::config::{DriftMetric, Method, ModelConfig, TrainConfig};
use super::data::{self, TaskTensors};
use super::losses;
use super::model::CtpModel;
use super::momentum::{DriftGate, GateParams};
use super::optim::{cosine_lr, AdamW};
use super::probe::ProbeSet;
use super::queue::FeatureQueue;
use super::replay::ReplayPlan;
use super::{
    Control, StepProgress, StepTimes, TrainEvent, TrainOutcome, TrainRequest, TrainerError,
};

mod parts;
mod persist;

pub(crate) use parts::RunOptions;
use parts::{configure, feature_drift, frozen_copy, named_params, read_scalars, sync_device};

/// Loss terms, per-part timings and the momentum sync (if any) of one step.
type StepOutput = (BTreeMap<String, f64>, StepTimes, Option<super::SyncRecord>);

/// Everything a run holds; dropped at the end of the task.
pub(crate) struct Session {
    pub online: CtpModel,
    momentum: Option<CtpModel>,
    reference: Option<CtpModel>,
    pub queue: FeatureQueue,
    opt: AdamW,
    gate: Option<DriftGate>,
    data: TaskTensors,
    probe: Option<(Tensor, Tensor, Tensor)>,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    task_index: i64,
    vocab: i64,
    pub step: i64,
    pub total_steps: i64,
    spe: i64,
    /// Flat buffers of the trainable parameters ([`flat`]), aligned by sorted name.
    online_flat: Tensor,
    momentum_flat: Option<Tensor>,
    reference_flat: Option<Tensor>,
    /// The momentum model's weights cast to the compute kind (`bf16_weight_cache`): its
    /// cast cache serves views of it; refreshed after every sync.
    momentum_low: Option<Tensor>,
    opts: RunOptions,
    order_cache: Option<(i64, Vec<i64>)>,
    /// The task's own samples are rows `0..n_task` of `data`; replay pools follow.
    n_task: i64,
    replay: ReplayPlan,
    samples_seen: i64,
    resumed_from: Option<i64>,
}

impl Session {
    /// Builds the three models (online, compatible momentum, reference θ_{t−1}) for a task.
    pub fn start(
        req: &TrainRequest,
        data: TaskTensors,
        vocab: i64,
        device: Device,
        weights: &Path,
        opts: &RunOptions,
    ) -> Result<Session, TrainerError> {
        let cfg = req.train.clone();
        cfg.validate().map_err(TrainerError::Input)?;
        tch::manual_seed(data::mix(&[cfg.seed, req.task_index as u64, u64::MAX]) as i64);
        let mut online = CtpModel::new(&req.model, vocab, device);
        configure(&mut online, opts);
        let mut queue = FeatureQueue::new(cfg.queue_size, req.model.embed_dim, device);
        match &req.parent {
            Some(parent) => {
                let ck = checkpoint::load(&parent.path, Some(&parent.sha256))?;
                let missing = online
                    .load_named(&ck.with_prefix("online."), "")
                    .map_err(TrainerError::Checkpoint)?;
                if !missing.is_empty() {
                    return Err(TrainerError::Checkpoint(format!(
                        "parent version lacks {missing:?}"
                    )));
                }
                // The queue carries over (never reset between tasks: docs/method.md, "Feature queue"), resized to this
                // task's queue_size by keeping its newest rows.
                queue.carry_over(
                    ck.get("queue.image")?,
                    ck.get("queue.text")?,
                    ck.get("queue.ptr")?.int64_value(&[]),
                );
            }
            None if opts.random_weights => {}
            None => online
                .load_pretrained(weights)
                .map_err(TrainerError::Assets)?,
        }
        let names: Vec<String> = online.trainable().into_iter().map(|(n, _)| n).collect();
        // AdamW makes the online parameters views into one flat buffer.
        let opt = AdamW::new(
            named_params(&online, &names),
            cfg.betas,
            cfg.eps,
            cfg.weight_decay,
        );
        let online_flat = opt.flat.shallow_clone();
        let ctp = cfg.method == Method::Ctp;
        type Copy = (Option<CtpModel>, Option<Tensor>, Option<Tensor>);
        let copy = |on: bool| -> Result<Copy, TrainerError> {
            if !on {
                return Ok((None, None, None));
            }
            let (m, buf, low) = frozen_copy(&online, &online_flat, &names, vocab, opts)?;
            Ok((Some(m), Some(buf), low))
        };
        let (momentum, momentum_flat, momentum_low) = copy(ctp)?;
        // The reference model never changes: its cast cache (views of the buffer) is filled once.
        let (reference, reference_flat, _) = copy(ctp && req.task_index > 0)?;
        let n_task = req.samples.len() as i64;
        let spe = data::steps_per_epoch(n_task, cfg.batch_size);
        let gate = ctp.then(|| {
            let mut m = cfg.momentum.clone();
            m.m0 = m.task0_coefficient(spe * cfg.epochs);
            DriftGate::new(m, req.task_index)
        });
        let probe = (ctp && cfg.momentum.metric == DriftMetric::Feature).then(|| {
            let n = n_task.min(cfg.batch_size);
            let b = data.batch(&Tensor::arange(n, (Kind::Int64, Device::Cpu)));
            (b.images, b.ids, b.mask)
        });
        let mut s = Session {
            online,
            momentum,
            reference,
            queue,
            opt,
            gate,
            data,
            probe,
            total_steps: spe * cfg.epochs,
            spe,
            cfg,
            model_cfg: req.model.clone(),
            task_index: req.task_index,
            vocab,
            step: 0,
            online_flat,
            momentum_flat,
            reference_flat,
            momentum_low,
            opts: *opts,
            order_cache: None,
            n_task,
            replay: ReplayPlan::new(req.samples.len(), &req.replay),
            samples_seen: 0,
            resumed_from: None,
        };
        if let Some(resume) = &req.resume {
            s.restore(resume)?;
            s.refresh_momentum_casts();
        }
        Ok(s)
    }

    /// Recasts the momentum model's cached weights after its weights changed (one kernel).
    fn refresh_momentum_casts(&mut self) {
        if let (Some(low), Some(flat)) = (self.momentum_low.as_mut(), self.momentum_flat.as_ref()) {
            let _guard = tch::no_grad_guard();
            low.copy_(flat);
        }
    }

    fn batch_indices(&mut self, step: i64) -> Tensor {
        let (epoch, within) = (step / self.spe, step % self.spe);
        if self.order_cache.as_ref().map(|c| c.0) != Some(epoch) {
            let order = data::epoch_order(self.n_task, self.cfg.seed, self.task_index, epoch);
            self.order_cache = Some((epoch, order));
        }
        let order = &self.order_cache.as_ref().expect("just filled").1;
        let b = self.cfg.batch_size.min(self.n_task) as usize;
        let start = within as usize * b;
        let mut rows = order[start..start + b].to_vec();
        rows.extend(self.replay.draw(self.cfg.seed, self.task_index, step));
        Tensor::from_slice(&rows)
    }

    /// Runs one step; returns the loss terms and timings. The host waits for the device once,
    /// to read every loss term (and a deferred drift) as one stacked tensor, unless profiling.
    pub fn train_step(&mut self) -> Result<StepOutput, TrainerError> {
        let step = self.step;
        let dev = self.online.device();
        let started = Instant::now();
        let idx = self.batch_indices(step);
        let data::Batch {
            images,
            ids,
            mask,
            host_ids,
        } = self.data.batch(&idx);
        tch::manual_seed(data::mix(&[self.cfg.seed, self.task_index as u64, step as u64]) as i64);
        let w = self.cfg.weights.clone();
        let temp = self.cfg.temp;
        let mut times = StepTimes::default();
        let profile = self.opts.profile;
        let mut t = Instant::now();
        let mut lap = |slot: &mut f64| {
            if profile {
                sync_device(dev);
                *slot += t.elapsed().as_secs_f64() * 1e3;
                t = Instant::now();
            }
        };

        // Under `bf16_weight_cache`: every weight cast once for this step (no-op otherwise).
        self.online.refresh_casts();
        let f = self.online.features(&images, &ids, &mask, true);
        // Masked on the host (the device's queue keeps running), then copied without waiting.
        let (masked, positions, labels) =
            data::mask_tokens(&host_ids, self.cfg.mlm_prob, self.vocab);
        let (masked, positions, labels) = (
            data::upload(&masked, dev),
            data::upload(&positions, dev),
            data::upload(&labels, dev),
        );
        let z = self
            .online
            .mlm_logits(&masked, &mask, &f.img_tokens, &positions, true);
        let l_ita = losses::itc(&f.img, &f.txt, temp);
        let l_mlm = losses::mlm(&z, &labels);
        let mut total = &l_ita * w.ita + &l_mlm * w.mlm;
        // Scalars read back together at the end of the step, by name.
        let mut terms: Vec<(&str, Tensor)> = Vec::new();
        lap(&mut times.forward_ms);
        let mut sync = None;
        let mut deferred_drift = None;
        if let (Some(gate), Some(mom), Some(mflat)) = (
            self.gate.as_mut(),
            self.momentum.as_ref(),
            self.momentum_flat.as_ref(),
        ) {
            if gate.is_check_step(step) {
                let gp = GateParams {
                    online: &self.online_flat,
                    momentum: mflat,
                    reference: self.reference_flat.as_ref(),
                };
                let drift = match &self.probe {
                    Some((pi, pt, pm)) => {
                        tch::no_grad(|| feature_drift(&self.online, mom, pi, pt, pm))
                    }
                    None => gate.param_drift(&gp),
                };
                // Threshold 0 syncs whatever the drift: its value waits for the step's read-back.
                let value = if gate.cfg.threshold > 0.0 {
                    drift.double_value(&[])
                } else {
                    deferred_drift = Some(drift);
                    f64::NAN
                };
                lap(&mut times.drift_ms);
                sync = gate.check(step, value, &gp);
                if sync.is_some() {
                    if let Some(low) = self.momentum_low.as_mut() {
                        let _guard = tch::no_grad_guard();
                        low.copy_(mflat);
                    }
                }
                lap(&mut times.sync_ms);
            }
            let (fm, zm) = tch::no_grad(|| {
                let fm = mom.features(&images, &ids, &mask, false);
                let zm = mom.mlm_logits(&masked, &mask, &fm.img_tokens, &positions, false);
                (fm, zm)
            });
            let l_q = losses::queue_itc(
                &f.img,
                &f.txt,
                &fm.img,
                &fm.txt,
                &self.queue.image,
                &self.queue.text,
                temp,
            );
            let l_dis = losses::mlm_distill(&z, &zm, self.cfg.distill_temp);
            self.queue.enqueue(&fm.img, &fm.txt);
            total = total + &l_q * w.ita_queue + &l_dis * w.mlm_distill;
            terms.push(("itc_queue", l_q));
            terms.push(("mlm_distill", l_dis));
            lap(&mut times.momentum_ms);
        }
        if let Some(reference) = &self.reference {
            let (vr, wr) = tch::no_grad(|| {
                let fr = reference.features(&images, &ids, &mask, false);
                (fr.img, fr.txt)
            });
            let l_c = losses::tp_cross(&f.img, &f.txt, &vr, &wr, temp);
            let l_s = losses::tp_intra(&f.img, &f.txt, &vr, &wr, temp);
            total = total + &l_c * w.tp_cross + &l_s * w.tp_intra;
            terms.push(("tp_cross", l_c));
            terms.push(("tp_intra", l_s));
            lap(&mut times.topology_ms);
        }
        self.opt.zero_grad();
        total.backward();
        lap(&mut times.backward_ms);
        let lr = cosine_lr(step, self.total_steps, self.cfg.lr, self.cfg.min_lr);
        self.opt.step(lr);
        // The weights changed: this step's casts are stale.
        self.online.clear_casts();
        lap(&mut times.optimizer_ms);
        terms.push(("itc", l_ita));
        terms.push(("mlm", l_mlm));
        terms.push(("total", total));
        if let Some(d) = deferred_drift {
            terms.push(("drift", d));
        }
        let values = read_scalars(terms.iter().map(|(_, t)| t))?;
        let mut out: BTreeMap<String, f64> = terms
            .iter()
            .zip(&values)
            .map(|((name, _), v)| (name.to_string(), *v))
            .collect();
        if let Some(d) = out.remove("drift") {
            if let Some(gate) = self.gate.as_mut() {
                gate.record_drift(step, d);
            }
            if let Some(rec) = sync.as_mut() {
                rec.drift = d;
            }
        }
        let total_v = out["total"];
        if !total_v.is_finite() {
            return Err(TrainerError::Input(format!(
                "loss became {total_v} at step {step}; lower the learning rate"
            )));
        }
        out.insert("lr".to_string(), lr);
        self.samples_seen += idx.size()[0];
        self.step += 1;
        times.step_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok((out, times, sync))
    }

    /// The drift measured at the latest check of this task, if there was one.
    pub fn drift(&self) -> Option<f64> {
        self.gate
            .as_ref()
            .filter(|g| g.state.checks > 0)
            .map(|g| g.state.last_drift)
            .filter(|d| d.is_finite())
    }

    pub fn syncs(&self) -> &[super::SyncRecord] {
        self.gate
            .as_ref()
            .map(|g| g.state.syncs.as_slice())
            .unwrap_or(&[])
    }

    /// Runs steps until the task ends or `control` asks to stop.
    pub fn run(
        &mut self,
        req: &TrainRequest,
        probe: Option<&ProbeSet>,
        emit: &dyn Fn(TrainEvent),
    ) -> Result<TrainOutcome, TrainerError> {
        emit(TrainEvent::Started {
            total_steps: self.total_steps,
            resumed_from: self.resumed_from,
        });
        let started = Instant::now();
        let first = self.step;
        while self.step < self.total_steps {
            match req.control.load(Ordering::SeqCst) {
                Control::CANCEL => return Ok(TrainOutcome::Cancelled { step: self.step }),
                Control::PAUSE => {
                    let sha = self.save_resume(&req.resume_path)?;
                    emit(TrainEvent::Checkpoint {
                        step: self.step,
                        path: req.resume_path.clone(),
                        sha256: sha,
                    });
                    return Ok(TrainOutcome::Paused {
                        step: self.step,
                        resume_path: req.resume_path.clone(),
                    });
                }
                Control::HOLD => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                }
                _ => {}
            }
            let (losses, times, sync) = self.train_step()?;
            if let Some(s) = sync {
                emit(TrainEvent::Sync(s));
            }
            let elapsed = started.elapsed().as_secs_f64().max(1e-9);
            let done = self.step - first;
            emit(TrainEvent::Step(StepProgress {
                step: self.step,
                total_steps: self.total_steps,
                epoch: (self.step - 1) / self.spe,
                losses,
                samples_per_sec: self.samples_seen as f64 / elapsed,
                eta_seconds: (self.total_steps - self.step) as f64 * elapsed / done as f64,
                syncs: self.syncs().len() as i64,
                drift: self.drift(),
                times,
            }));
            let every = self.cfg.checkpoint_every;
            if every > 0 && self.step % every == 0 && self.step < self.total_steps {
                let sha = self.save_resume(&req.resume_path)?;
                emit(TrainEvent::Checkpoint {
                    step: self.step,
                    path: req.resume_path.clone(),
                    sha256: sha,
                });
            }
        }
        let sha256 = self.save_version(&req.out_version, probe)?;
        Ok(TrainOutcome::Completed {
            version_path: req.out_version.clone(),
            sha256,
            steps: self.total_steps,
            momentum_steps: if self.momentum.is_some() {
                self.total_steps
            } else {
                0
            },
            syncs: self.syncs().to_vec(),
            resumed_from: self.resumed_from,
            precision: self.opts.precision.as_str().to_string(),
        })
    }
}
