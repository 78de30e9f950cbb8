//! Every CTP loss term as a pure function of tensors (docs/method.md, "Losses").
//!
//! Rows are the batch's samples; one process means the "global" batch is the local batch. τ is
//! fixed. All functions return a scalar tensor that carries gradients to whichever inputs do.
use tch::{Kind, Reduction, Tensor};

/// Value that masks a self-similarity *before* division by τ (so exp underflows to exactly 0).
pub const SELF_MASK: f64 = -1000.0;

fn targets(n: i64, like: &Tensor) -> Tensor {
    Tensor::arange(n, (Kind::Int64, like.device()))
}

fn ce(logits: &Tensor, target: &Tensor) -> Tensor {
    logits.cross_entropy_loss::<Tensor>(target, None, Reduction::Mean, -100, 0.0)
}

/// In-batch image–text contrastive loss (docs/method.md, "In-batch contrastive loss"): ½[CE(v·wᵀ/τ, i) + CE(w·vᵀ/τ, i)].
pub fn itc(v: &Tensor, w: &Tensor, temp: f64) -> Tensor {
    let y = targets(v.size()[0], v);
    let s = v.matmul(&w.tr()) / temp;
    (ce(&s, &y) + ce(&s.tr(), &y)) * 0.5
}

/// Momentum-queue contrastive loss (docs/method.md, "Momentum queue contrastive loss"): current queries against [momentum keys; queue] with
/// one-hot targets on the sample's own momentum key. Queues are [Q, E] (one key per row).
pub fn queue_itc(
    v: &Tensor,
    w: &Tensor,
    v_m: &Tensor,
    w_m: &Tensor,
    img_queue: &Tensor,
    txt_queue: &Tensor,
    temp: f64,
) -> Tensor {
    let y = targets(v.size()[0], v);
    let keys_t = Tensor::cat(&[w_m, txt_queue], 0);
    let keys_v = Tensor::cat(&[v_m, img_queue], 0);
    let i2t = v.matmul(&keys_t.tr()) / temp;
    let t2i = w.matmul(&keys_v.tr()) / temp;
    (ce(&i2t, &y) + ce(&t2i, &y)) * 0.5
}

/// Masked-language-model cross-entropy over the selected (masked) positions.
pub fn mlm(logits: &Tensor, labels: &Tensor) -> Tensor {
    if logits.size()[0] == 0 {
        return logits.sum(Kind::Float) * 0.0;
    }
    ce(logits, labels)
}

/// MLM distillation (docs/method.md, "MLM distillation"): mean over masked positions of −Σ softmax(z_m/T)·log_softmax(z/T).
pub fn mlm_distill(z: &Tensor, z_m: &Tensor, t: f64) -> Tensor {
    if z.size()[0] == 0 {
        return z.sum(Kind::Float) * 0.0;
    }
    let p = (z_m / t).softmax(-1, Kind::Float);
    let logq = (z / t).log_softmax(-1, Kind::Float);
    -(p * logq)
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float)
}

/// KL(P_teacher ‖ P_student) with batch-mean reduction, both given as logits (already ÷τ).
/// Equals PyTorch's `KLDivLoss(reduction='batchmean')(log_softmax(student), softmax(teacher))`;
/// zero-probability teacher entries contribute exactly 0 (ATen uses xlogy).
pub fn kl_batchmean(teacher: &Tensor, student: &Tensor) -> Tensor {
    let rows = student.size()[0] as f64;
    let logq = student.log_softmax(-1, Kind::Float);
    let p = teacher.softmax(-1, Kind::Float);
    logq.kl_div(&p, Reduction::Sum, false) / rows
}

/// Sets the diagonal (each sample's similarity with itself) to [`SELF_MASK`].
fn mask_self(s: &Tensor) -> Tensor {
    let idx = targets(s.size()[0], s).unsqueeze(1);
    s.scatter_value(1, &idx, SELF_MASK)
}

/// Cross-modal topology preservation L_c (docs/method.md, "Topology preservation"): ½[KL(i2t_ref‖i2t) + KL(t2i_ref‖t2i)], all ÷τ.
pub fn tp_cross(v: &Tensor, w: &Tensor, v_ref: &Tensor, w_ref: &Tensor, temp: f64) -> Tensor {
    let s = v.matmul(&w.tr());
    let r = v_ref.matmul(&w_ref.tr());
    (kl_batchmean(&(&r / temp), &(&s / temp)) + kl_batchmean(&(r.tr() / temp), &(s.tr() / temp)))
        * 0.5
}

/// Intra-modal topology preservation L_s (docs/method.md, "Topology preservation"): ½[KL(i2i_ref‖i2i) + KL(t2t_ref‖t2t)], self
/// entries set to −1000 before ÷τ on both sides.
pub fn tp_intra(v: &Tensor, w: &Tensor, v_ref: &Tensor, w_ref: &Tensor, temp: f64) -> Tensor {
    let sim = |a: &Tensor| mask_self(&a.matmul(&a.tr())) / temp;
    (kl_batchmean(&sim(v_ref), &sim(v)) + kl_batchmean(&sim(w_ref), &sim(w))) * 0.5
}
