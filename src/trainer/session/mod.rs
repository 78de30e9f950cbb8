//! One task's training run: the CTP step (ctp-method.md §2.7) in a resumable loop.
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
use super::queue::FeatureQueue;
use super::{
    Control, StepProgress, StepTimes, TrainEvent, TrainOutcome, TrainRequest, TrainerError,
};

mod persist;

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
    online_params: Vec<Tensor>,
    momentum_params: Vec<Tensor>,
    reference_params: Vec<Tensor>,
    order_cache: Option<(i64, Vec<i64>)>,
    samples_seen: i64,
    resumed_from: Option<i64>,
}

fn named_params(m: &CtpModel, names: &[String]) -> Vec<Tensor> {
    let map = m.var_map();
    names.iter().map(|n| map[n].shallow_clone()).collect()
}

fn sync_device(d: Device) {
    if let Device::Cuda(i) = d {
        tch::Cuda::synchronize(i as i64);
    }
}

impl Session {
    /// Builds the three models (online, compatible momentum, reference θ_{t−1}) for a task.
    pub fn start(
        req: &TrainRequest,
        data: TaskTensors,
        vocab: i64,
        device: Device,
        weights: &Path,
    ) -> Result<Session, TrainerError> {
        let cfg = req.train.clone();
        cfg.validate().map_err(TrainerError::Input)?;
        tch::manual_seed(data::mix(&[cfg.seed, req.task_index as u64, u64::MAX]) as i64);
        let mut online = CtpModel::new(&req.model, vocab, device);
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
                // The queue carries over (§3: never reset between tasks). A changed queue_size
                // starts a fresh random queue instead.
                let qi = ck.get("queue.image")?;
                if qi.size()[0] == cfg.queue_size {
                    queue.image = qi.to_device(device);
                    queue.text = ck.get("queue.text")?.to_device(device);
                    queue.ptr = ck.get("queue.ptr")?.int64_value(&[]);
                }
            }
            None => online
                .load_pretrained(weights)
                .map_err(TrainerError::Assets)?,
        }
        let names: Vec<String> = online.trainable().into_iter().map(|(n, _)| n).collect();
        let online_params = named_params(&online, &names);
        let ctp = cfg.method == Method::Ctp;
        let clone_frozen = |src: &CtpModel| -> Result<CtpModel, TrainerError> {
            let mut m = CtpModel::new(&req.model, vocab, device);
            m.copy_from(src).map_err(TrainerError::Torch)?;
            m.freeze();
            Ok(m)
        };
        let momentum = if ctp {
            Some(clone_frozen(&online)?)
        } else {
            None
        };
        let reference = if ctp && req.task_index > 0 {
            Some(clone_frozen(&online)?)
        } else {
            None
        };
        let momentum_params = momentum
            .as_ref()
            .map(|m| named_params(m, &names))
            .unwrap_or_default();
        let reference_params = reference
            .as_ref()
            .map(|m| named_params(m, &names))
            .unwrap_or_default();
        let spe = data::steps_per_epoch(data.len(), cfg.batch_size);
        let opt = AdamW::new(
            online_params.iter().map(|t| t.shallow_clone()).collect(),
            cfg.betas,
            cfg.eps,
            cfg.weight_decay,
        );
        let gate = ctp.then(|| DriftGate::new(cfg.momentum.clone(), req.task_index));
        let probe = (ctp && cfg.momentum.metric == DriftMetric::Feature).then(|| {
            let n = data.len().min(cfg.batch_size);
            data.batch(&Tensor::arange(n, (Kind::Int64, Device::Cpu)))
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
            online_params,
            momentum_params,
            reference_params,
            order_cache: None,
            samples_seen: 0,
            resumed_from: None,
        };
        if let Some(resume) = &req.resume {
            s.restore(resume)?;
        }
        Ok(s)
    }

    fn batch_indices(&mut self, step: i64) -> Tensor {
        let (epoch, within) = (step / self.spe, step % self.spe);
        if self.order_cache.as_ref().map(|c| c.0) != Some(epoch) {
            let order = data::epoch_order(self.data.len(), self.cfg.seed, self.task_index, epoch);
            self.order_cache = Some((epoch, order));
        }
        let order = &self.order_cache.as_ref().expect("just filled").1;
        let b = self.cfg.batch_size.min(self.data.len()) as usize;
        let start = within as usize * b;
        Tensor::from_slice(&order[start..start + b])
    }

    /// Runs one step; returns the loss terms and timings.
    pub fn train_step(&mut self) -> Result<StepOutput, TrainerError> {
        let step = self.step;
        let dev = self.online.device();
        let idx = self.batch_indices(step);
        let (images, ids, mask) = self.data.batch(&idx);
        tch::manual_seed(data::mix(&[self.cfg.seed, self.task_index as u64, step as u64]) as i64);
        let w = self.cfg.weights.clone();
        let temp = self.cfg.temp;
        let mut times = StepTimes::default();
        let mut t = Instant::now();
        let mut lap = |slot: &mut f64| {
            sync_device(dev);
            *slot += t.elapsed().as_secs_f64() * 1e3;
            t = Instant::now();
        };

        let f = self.online.features(&images, &ids, &mask, true);
        let (masked, positions, labels) = data::mask_tokens(&ids, self.cfg.mlm_prob, self.vocab);
        let z = self
            .online
            .mlm_logits(&masked, &mask, &f.img_tokens, &positions, true);
        let l_ita = losses::itc(&f.img, &f.txt, temp);
        let l_mlm = losses::mlm(&z, &labels);
        let mut total = &l_ita * w.ita + &l_mlm * w.mlm;
        let mut terms = BTreeMap::new();
        lap(&mut times.forward_ms);
        let mut sync = None;
        if let (Some(gate), Some(mom)) = (self.gate.as_mut(), self.momentum.as_ref()) {
            if gate.is_check_step(step) {
                let gp = GateParams {
                    online: &self.online_params,
                    momentum: &self.momentum_params,
                    reference: self
                        .reference
                        .as_ref()
                        .map(|_| self.reference_params.as_slice()),
                };
                let drift = match &self.probe {
                    Some((pi, pt, pm)) => {
                        tch::no_grad(|| feature_drift(&self.online, mom, pi, pt, pm))
                    }
                    None => DriftGate::param_drift(&gp),
                };
                lap(&mut times.drift_ms);
                sync = gate.check(step, drift, &gp);
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
            terms.insert("itc_queue".to_string(), l_q.double_value(&[]));
            terms.insert("mlm_distill".to_string(), l_dis.double_value(&[]));
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
            terms.insert("tp_cross".to_string(), l_c.double_value(&[]));
            terms.insert("tp_intra".to_string(), l_s.double_value(&[]));
            lap(&mut times.topology_ms);
        }
        self.opt.zero_grad();
        total.backward();
        lap(&mut times.backward_ms);
        let lr = cosine_lr(step, self.total_steps, self.cfg.lr, self.cfg.min_lr);
        self.opt.step(lr);
        lap(&mut times.optimizer_ms);
        let total_v = total.double_value(&[]);
        if !total_v.is_finite() {
            return Err(TrainerError::Input(format!(
                "loss became {total_v} at step {step}; lower the learning rate"
            )));
        }
        terms.insert("itc".to_string(), l_ita.double_value(&[]));
        terms.insert("mlm".to_string(), l_mlm.double_value(&[]));
        terms.insert("total".to_string(), total_v);
        terms.insert("lr".to_string(), lr);
        self.samples_seen += idx.size()[0];
        self.step += 1;
        Ok((terms, times, sync))
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
        let sha256 = self.save_version(&req.out_version)?;
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
        })
    }
}

/// 1 − mean cosine between online and momentum features on the probe batch.
fn feature_drift(
    online: &CtpModel,
    mom: &CtpModel,
    images: &Tensor,
    ids: &Tensor,
    mask: &Tensor,
) -> f64 {
    let a = online.features(images, ids, mask, false);
    let b = mom.features(images, ids, mask, false);
    let cos = ((&a.img * &b.img)
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float)
        + (&a.txt * &b.txt)
            .sum_dim_intlist(-1, false, Kind::Float)
            .mean(Kind::Float))
        * 0.5;
    1.0 - cos.double_value(&[])
}
