//! Mixed precision by explicit casts at the matmul/conv boundaries (what autocast would do, in
//! bfloat16, which tch 0.24's autocast cannot select): weights stay float32 and are cast per
//! use; linear, conv and attention run in the compute kind; LayerNorm, the residual stream,
//! features and losses stay float32. With `Kind::Float` every helper is the plain fp32 op.
use tch::{nn, Kind, Tensor};

fn cast(t: &Tensor, k: Kind) -> Tensor {
    if t.kind() == k {
        t.shallow_clone()
    } else {
        t.to_kind(k)
    }
}

/// `x · Wᵀ + b` in `k`.
pub fn linear(x: &Tensor, l: &nn::Linear, k: Kind) -> Tensor {
    if k == Kind::Float {
        return x.apply(l);
    }
    cast(x, k).linear(&l.ws.to_kind(k), l.bs.as_ref().map(|b| b.to_kind(k)))
}

/// 2-D convolution (no padding; groups inferred from the weight) in `k`.
pub fn conv2d(x: &Tensor, c: &nn::Conv2D, stride: i64, k: Kind) -> Tensor {
    if k == Kind::Float {
        return x.apply(c);
    }
    let groups = x.size()[1] / c.ws.size()[1];
    cast(x, k).conv2d(
        &c.ws.to_kind(k),
        c.bs.as_ref().map(|b| b.to_kind(k)),
        [stride, stride],
        [0, 0],
        [1, 1],
        groups,
    )
}

/// `a · b` in `k`.
pub fn matmul(a: &Tensor, b: &Tensor, k: Kind) -> Tensor {
    if k == Kind::Float {
        return a.matmul(b);
    }
    cast(a, k).matmul(&cast(b, k))
}

/// LayerNorm in float32 (a lower-precision input is widened first).
pub fn layer_norm(x: &Tensor, ln: &nn::LayerNorm) -> Tensor {
    cast(x, Kind::Float).apply(ln)
}

/// `x` as float32 (features and logits leave the model in float32).
pub fn fp32(x: Tensor) -> Tensor {
    if x.kind() == Kind::Float {
        x
    } else {
        x.to_kind(Kind::Float)
    }
}
