//! Mixed precision by explicit casts at the matmul/conv boundaries (what autocast would do, in
//! bfloat16, which tch 0.24's autocast cannot select): weights stay float32 and are cast per
//! use; linear, conv and attention run in the compute kind; LayerNorm, the residual stream,
//! features and losses stay float32. With `Kind::Float` every helper is the plain fp32 op.
//!
//! Under `engine.bf16_weight_cache` a model's [`Compute`] carries a cache of its weights
//! already cast (refreshed once per optimizer step by the session, `CtpModel::refresh_casts`
//! and `CtpModel::cache_flat`), and every helper takes the cached copy instead of casting again.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tch::{nn, Kind, Tensor};

/// Weights cast to the compute kind, by the data pointer of their float32 original.
type CastMap = HashMap<usize, Tensor>;

/// How one model computes: the kind of its matmuls, convolutions and attention, and the
/// optional cache of weights already cast to that kind. Cloning shares the cache.
#[derive(Clone)]
pub struct Compute {
    pub kind: Kind,
    cache: Option<Arc<Mutex<CastMap>>>,
}

impl std::fmt::Debug for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compute")
            .field("kind", &self.kind)
            .field("cached", &self.cached())
            .finish()
    }
}

impl Compute {
    /// Casts at every use (no cache).
    pub fn new(kind: Kind) -> Compute {
        Compute { kind, cache: None }
    }

    /// With an (empty) cache of cast weights; casts at every use until it is filled.
    pub fn cached_kind(kind: Kind) -> Compute {
        Compute {
            kind,
            cache: Some(Arc::new(Mutex::new(HashMap::new()))),
        }
    }

    fn map(&self) -> Option<std::sync::MutexGuard<'_, CastMap>> {
        self.cache
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// How many weights the cache holds (0 without a cache).
    pub fn cached(&self) -> usize {
        self.map().map_or(0, |m| m.len())
    }

    /// Whether this model keeps a cache of cast weights (and computes in a lower kind).
    pub fn caches(&self) -> bool {
        self.cache.is_some() && self.kind != Kind::Float
    }

    /// Replaces the cache's entries: `pairs` of (float32 weight, its cast copy).
    pub fn fill(&self, pairs: impl IntoIterator<Item = (Tensor, Tensor)>) {
        if let Some(mut m) = self.map() {
            m.clear();
            m.extend(pairs.into_iter().map(|(w, c)| (w.data_ptr() as usize, c)));
        }
    }

    /// Empties the cache (its copies are stale once the weights change).
    pub fn clear(&self) {
        if let Some(mut m) = self.map() {
            m.clear();
        }
    }

    /// `w` in the compute kind: the cached copy when there is one, else a cast.
    pub fn weight(&self, w: &Tensor) -> Tensor {
        if w.kind() == self.kind {
            return w.shallow_clone();
        }
        if let Some(m) = self.map() {
            if let Some(c) = m.get(&(w.data_ptr() as usize)) {
                return c.shallow_clone();
            }
        }
        w.to_kind(self.kind)
    }
}

fn cast(t: &Tensor, k: Kind) -> Tensor {
    if t.kind() == k {
        t.shallow_clone()
    } else {
        t.to_kind(k)
    }
}

/// Appends a linear layer's weight and bias (the tensors [`linear`] casts).
pub fn push_linear(out: &mut Vec<Tensor>, l: &nn::Linear) {
    out.push(l.ws.shallow_clone());
    out.extend(l.bs.as_ref().map(|b| b.shallow_clone()));
}

/// Appends a convolution's weight and bias (the tensors [`conv2d`] casts).
pub fn push_conv(out: &mut Vec<Tensor>, c: &nn::Conv2D) {
    out.push(c.ws.shallow_clone());
    out.extend(c.bs.as_ref().map(|b| b.shallow_clone()));
}

/// `x · Wᵀ + b` in `c`'s kind.
pub fn linear(x: &Tensor, l: &nn::Linear, c: &Compute) -> Tensor {
    let k = c.kind;
    if k == Kind::Float {
        return x.apply(l);
    }
    cast(x, k).linear(&c.weight(&l.ws), l.bs.as_ref().map(|b| c.weight(b)))
}

/// 2-D convolution (no padding; groups inferred from the weight) in `cm`'s kind.
pub fn conv2d(x: &Tensor, c: &nn::Conv2D, stride: i64, cm: &Compute) -> Tensor {
    let k = cm.kind;
    if k == Kind::Float {
        return x.apply(c);
    }
    let groups = x.size()[1] / c.ws.size()[1];
    cast(x, k).conv2d(
        &cm.weight(&c.ws),
        c.bs.as_ref().map(|b| cm.weight(b)),
        [stride, stride],
        [0, 0],
        [1, 1],
        groups,
    )
}

/// `a · b` in `k` (`b` already cast is not cast again).
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

/// `x` [N, C, H, W] with channels-last strides (NHWC in memory, same logical shape). tch 0.24
/// has no `memory_format` argument; this is what `x.contiguous(memory_format=
/// torch.channels_last)` does.
pub fn channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Whether `x` [N, C, H, W] is laid out channels-last.
pub fn is_channels_last(x: &Tensor) -> bool {
    let (size, stride) = (x.size(), x.stride());
    size.len() == 4 && stride[1] == 1 && stride[3] == size[1] && stride[2] == size[1] * size[3]
}
