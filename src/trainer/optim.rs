//! AdamW over plain tensors (state can be saved, unlike tch's optimizers) and the paper's
//! per-step cosine schedule (ctp-method.md §3, §B.5).
use tch::Tensor;

/// Decoupled-weight-decay Adam, numerically the same update as `torch.optim.AdamW`.
pub struct AdamW {
    pub params: Vec<Tensor>,
    pub exp_avg: Vec<Tensor>,
    pub exp_avg_sq: Vec<Tensor>,
    pub t: i64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamW {
    pub fn new(params: Vec<Tensor>, betas: (f64, f64), eps: f64, weight_decay: f64) -> AdamW {
        let _guard = tch::no_grad_guard();
        let exp_avg = params.iter().map(|p| p.zeros_like()).collect();
        let exp_avg_sq = params.iter().map(|p| p.zeros_like()).collect();
        AdamW {
            params,
            exp_avg,
            exp_avg_sq,
            t: 0,
            betas,
            eps,
            weight_decay,
        }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left alone.
    pub fn step(&mut self, lr: f64) {
        let _guard = tch::no_grad_guard();
        self.t += 1;
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2_sqrt = (1.0 - b2.powi(self.t as i32)).sqrt();
        for ((p, m), v) in self.params.iter().zip(&self.exp_avg).zip(&self.exp_avg_sq) {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let (mut p, mut m, mut v) = (p.shallow_clone(), m.shallow_clone(), v.shallow_clone());
            let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
            let _ = m.lerp_(&g, 1.0 - b1);
            let _ = v.g_mul_scalar_(b2);
            let _ = v.g_add_(&(g.square() * (1.0 - b2)));
            let denom = v.sqrt().g_div_scalar(bc2_sqrt).g_add_scalar(self.eps);
            let _ = p.addcdiv_(&m, &denom.g_mul_scalar(-bc1 / lr));
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
}
