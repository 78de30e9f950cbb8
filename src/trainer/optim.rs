//! AdamW over plain tensors (state can be saved, unlike tch's optimizers) and the paper's
//! per-step cosine schedule (docs/method.md, "Optimisation").
//!
//! Parameters, moments and (after the first step) gradients live in flat buffers
//! ([`super::flat`]), so one update is about ten kernels over all parameters.
use tch::Tensor;

use super::flat;

/// Elements per AdamW chunk on a CPU (1 MiB of float32 per buffer, cache-resident).
const CPU_CHUNK: i64 = 1 << 18;

/// Decoupled-weight-decay Adam, numerically the same update as `torch.optim.AdamW`.
pub struct AdamW {
    /// The parameters: views into [`AdamW::flat`].
    pub params: Vec<Tensor>,
    /// Moments, one view per parameter into a flat buffer each.
    pub exp_avg: Vec<Tensor>,
    pub exp_avg_sq: Vec<Tensor>,
    pub t: i64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    /// All parameters as one contiguous buffer.
    pub flat: Tensor,
    m_flat: Tensor,
    v_flat: Tensor,
    /// All gradients as one buffer; the parameters' `.grad` are views into it, so backward
    /// accumulates straight into it.
    grad_flat: Option<Tensor>,
}

impl AdamW {
    /// Takes `params` (float32, one device) and makes them views into one flat buffer.
    pub fn new(params: Vec<Tensor>, betas: (f64, f64), eps: f64, weight_decay: f64) -> AdamW {
        let _guard = tch::no_grad_guard();
        let flat = flat::flatten(&params);
        let m_flat = flat.zeros_like();
        let v_flat = flat.zeros_like();
        AdamW {
            exp_avg: flat::views(&m_flat, &params),
            exp_avg_sq: flat::views(&v_flat, &params),
            params,
            t: 0,
            betas,
            eps,
            weight_decay,
            flat,
            m_flat,
            v_flat,
            grad_flat: None,
        }
    }

    pub fn zero_grad(&mut self) {
        match &mut self.grad_flat {
            Some(g) => {
                let _ = g.zero_();
            }
            None => {
                for p in &mut self.params {
                    p.zero_grad();
                }
            }
        }
    }

    /// The flat gradient, gathering the gradients into it (and aliasing them to it) when
    /// they are not views of it yet. `None` if a parameter has no gradient.
    fn flat_grad(&mut self) -> Option<Tensor> {
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).collect();
        if grads.iter().any(|g| !g.defined()) {
            self.grad_flat = None;
            return None;
        }
        if let Some(g) = &self.grad_flat {
            if flat::is_flat_view(g, &grads) {
                return Some(g.shallow_clone());
            }
        }
        let g = flat::flatten(&grads);
        self.grad_flat = Some(g.shallow_clone());
        Some(g)
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left alone.
    pub fn step(&mut self, lr: f64) {
        let _guard = tch::no_grad_guard();
        self.t += 1;
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2_sqrt = (1.0 - b2.powi(self.t as i32)).sqrt();
        let (decay, eps) = (1.0 - lr * self.weight_decay, self.eps);
        let grad = self.flat_grad();
        let update = |p: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor| {
            let (mut p, mut m, mut v) = (p.shallow_clone(), m.shallow_clone(), v.shallow_clone());
            let _ = p.g_mul_scalar_(decay);
            let _ = m.lerp_(g, 1.0 - b1);
            let _ = v.g_mul_scalar_(b2);
            let _ = v.g_add_(&(g.square() * (1.0 - b2)));
            let denom = v.sqrt().g_div_scalar(bc2_sqrt).g_add_scalar(eps);
            let _ = p.addcdiv_(&m, &denom.g_mul_scalar(-bc1 / lr));
        };
        if let Some(g) = grad {
            // One pass over all parameters on a GPU; on a CPU in cache-sized chunks, so the
            // ~10 elementwise ops of a chunk run out of cache instead of streaming the whole
            // buffer ten times.
            let n = self.flat.numel() as i64;
            let chunk = if self.flat.device().is_cuda() {
                n
            } else {
                CPU_CHUNK
            };
            let mut off = 0;
            while off < n {
                let len = chunk.min(n - off);
                let part = |t: &Tensor| t.narrow(0, off, len);
                update(
                    &part(&self.flat),
                    &part(&self.m_flat),
                    &part(&self.v_flat),
                    &part(&g),
                );
                off += len;
            }
            return;
        }
        for ((p, m), v) in self.params.iter().zip(&self.exp_avg).zip(&self.exp_avg_sq) {
            let g = p.grad();
            if g.defined() {
                update(p, m, v, &g);
            }
        }
    }
}

/// lr_k = min + ½(max − min)(1 + cos(π k / K)), k = 0…K−1 (restarts every task, no warmup).
pub fn cosine_lr(k: i64, total: i64, max: f64, min: f64) -> f64 {
    let total = total.max(1) as f64;
    min + 0.5 * (max - min) * (1.0 + (std::f64::consts::PI * k as f64 / total).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn cosine_endpoints() {
        assert!((cosine_lr(0, 10, 1e-4, 1e-6) - 1e-4).abs() < 1e-12);
        assert!((cosine_lr(5, 10, 1e-4, 1e-6) - (1e-6 + 0.5 * (1e-4 - 1e-6))).abs() < 1e-12);
        assert!(cosine_lr(9, 10, 1e-4, 1e-6) > 1e-6);
    }

    /// Three AdamW steps on f(p) = Σ p²·c against the closed-form torch.optim.AdamW recurrence.
    #[test]
    fn matches_the_adamw_recurrence() {
        let p = Tensor::from_slice(&[1.0f32, -2.0, 0.5]).set_requires_grad(true);
        let c = Tensor::from_slice(&[1.0f32, 3.0, -1.0]);
        let mut opt = AdamW::new(vec![p.shallow_clone()], (0.9, 0.999), 1e-8, 0.05);
        let (mut pv, mut m, mut v) = (vec![1.0f64, -2.0, 0.5], [0.0f64; 3], [0.0f64; 3]);
        let cv = [1.0f64, 3.0, -1.0];
        for t in 1..=3 {
            opt.zero_grad();
            (&p * &p * &c).sum(Kind::Float).backward();
            opt.step(0.1);
            for i in 0..3 {
                let g = 2.0 * pv[i] * cv[i];
                pv[i] *= 1.0 - 0.1 * 0.05;
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let mhat = m[i] / (1.0 - 0.9f64.powi(t));
                let vhat = v[i] / (1.0 - 0.999f64.powi(t));
                pv[i] -= 0.1 * mhat / (vhat.sqrt() + 1e-8);
            }
        }
        let got = Vec::<f32>::try_from(&p.detach().to_device(Device::Cpu)).unwrap();
        for i in 0..3 {
            assert!(
                (got[i] as f64 - pv[i]).abs() < 1e-5,
                "{i}: {} vs {}",
                got[i],
                pv[i]
            );
        }
    }

    /// The flat update over several tensors follows the per-tensor AdamW recurrence, and a
    /// parameter without a gradient is left alone (per-tensor fallback).
    #[test]
    fn flat_update_equals_per_tensor_update() {
        tch::manual_seed(5);
        let mk = || {
            vec![
                Tensor::randn([4, 3], (Kind::Float, Device::Cpu)),
                Tensor::randn([7], (Kind::Float, Device::Cpu)),
            ]
        };
        let init = mk();
        let c = mk();
        let run = |with_second: bool| {
            let ps: Vec<Tensor> = init
                .iter()
                .map(|t| t.copy().set_requires_grad(true))
                .collect();
            let mut opt = AdamW::new(
                ps.iter().map(|p| p.shallow_clone()).collect(),
                (0.9, 0.99),
                1e-8,
                0.05,
            );
            for _ in 0..3 {
                opt.zero_grad();
                let mut loss = (&ps[0] * &ps[0] * &c[0]).sum(Kind::Float);
                if with_second {
                    loss += (&ps[1] * &c[1]).sum(Kind::Float);
                }
                loss.backward();
                opt.step(0.01);
            }
            ps.iter().map(|p| p.detach().copy()).collect::<Vec<_>>()
        };
        let flat = run(true);
        // Reference: the same recurrence written per tensor.
        let mut want: Vec<Tensor> = init.iter().map(|t| t.copy()).collect();
        let (mut m, mut v): (Vec<Tensor>, Vec<Tensor>) = (
            want.iter().map(|t| t.zeros_like()).collect(),
            want.iter().map(|t| t.zeros_like()).collect(),
        );
        for t in 1..=3 {
            let grads = [&want[0] * &c[0] * 2.0, c[1].copy()];
            for i in 0..2 {
                want[i] = &want[i] * (1.0 - 0.01 * 0.05);
                m[i] = &m[i] * 0.9 + &grads[i] * 0.1;
                v[i] = &v[i] * 0.99 + grads[i].square() * 0.01;
                let mhat = &m[i] / (1.0 - 0.9f64.powi(t));
                let vhat = &v[i] / (1.0 - 0.99f64.powi(t));
                want[i] = &want[i] - mhat / (vhat.sqrt() + 1e-8) * 0.01;
            }
        }
        for (a, b) in flat.iter().zip(&want) {
            let d = (a - b).abs().max().double_value(&[]);
            assert!(d < 1e-6, "flat AdamW differs by {d}");
        }
        let partial = run(false);
        assert!(
            partial[1].equal(&init[1]),
            "a parameter without gradient moved"
        );
        assert!(!partial[0].equal(&init[0]));
    }
}
