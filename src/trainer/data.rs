//! A task's samples as tensors, tokenisation, data order and MLM masking.
use std::path::Path;

use tch::{Device, Kind, Tensor};
use tokenizers::Tokenizer;

use super::{Sample, TrainerError};

/// BERT special ids of the uncased WordPiece vocabulary MiniLM uses.
pub const PAD: i64 = 0;
pub const CLS: i64 = 101;
pub const MASK: i64 = 103;

/// The WordPiece tokenizer from all-MiniLM-L6-v2's `tokenizer.json`, with its built-in fixed
/// padding removed (padding is done per batch with an attention mask).
pub struct TextTokenizer {
    tok: Tokenizer,
    pub vocab: i64,
}

impl TextTokenizer {
    pub fn load(weights_dir: &Path) -> Result<TextTokenizer, TrainerError> {
        let path = weights_dir.join("minilm").join("tokenizer.json");
        let mut tok = Tokenizer::from_file(&path).map_err(|e| {
            TrainerError::Assets(format!(
                "cannot load {} ({e}); run scripts/setup-data.sh",
                path.display()
            ))
        })?;
        tok.with_padding(None);
        let vocab = tok.get_vocab_size(true) as i64;
        Ok(TextTokenizer { tok, vocab })
    }

    /// Token ids and attention mask, truncated to `max_len` (keeping [SEP]) and zero-padded.
    pub fn encode(&self, texts: &[String], max_len: i64) -> Result<(Tensor, Tensor), TrainerError> {
        let n = texts.len() as i64;
        let mut ids = vec![PAD; (n * max_len) as usize];
        let mut mask = vec![0i64; (n * max_len) as usize];
        for (i, t) in texts.iter().enumerate() {
            let enc = self
                .tok
                .encode(t.as_str(), true)
                .map_err(|e| TrainerError::Input(format!("caption {i}: {e}")))?;
            let toks = enc.get_ids();
            let keep = toks.len().min(max_len as usize);
            for (j, &id) in toks[..keep].iter().enumerate() {
                ids[i * max_len as usize + j] = id as i64;
                mask[i * max_len as usize + j] = 1;
            }
            if toks.len() > keep {
                ids[i * max_len as usize + keep - 1] = *toks.last().unwrap() as i64;
                // keep [SEP]
            }
        }
        Ok((
            Tensor::from_slice(&ids).view([n, max_len]),
            Tensor::from_slice(&mask).view([n, max_len]),
        ))
    }
}

/// A task's samples, tokenised once and kept as compact tensors (u8 pixels) on the device:
/// the input pipeline decodes and tokenises once per task, so a step only gathers rows on the
/// device. The host keeps the token ids and lengths too, so that masking and trimming a batch
/// never wait for the device.
pub struct TaskTensors {
    pub pixels: Tensor,
    pub ids: Tensor,
    pub mask: Tensor,
    pub size: i64,
    /// Token ids on the host (the same tensor as `ids` on a CPU engine).
    host_ids: Tensor,
    /// Tokens per row (attention-mask sum), on the host.
    lens: Vec<i64>,
}

/// One batch: model inputs on the device, and its token ids on the host (for MLM masking).
pub struct Batch {
    pub images: Tensor,
    pub ids: Tensor,
    pub mask: Tensor,
    pub host_ids: Tensor,
}

/// `t` on `device`; from the host through pinned memory with a non-blocking copy, so the host
/// does not wait for the device's queue (a pageable copy would synchronise).
pub fn upload(t: &Tensor, device: Device) -> Tensor {
    if t.device() == device {
        return t.shallow_clone();
    }
    match device {
        // `_pin_memory`: `pin_memory(device)` warns on every call that its argument is deprecated.
        Device::Cuda(_) => t
            .internal_pin_memory(device)
            .to_device_(device, t.kind(), true, false),
        _ => t.to_device(device),
    }
}

impl TaskTensors {
    pub fn build(
        samples: &[Sample],
        size: i64,
        max_len: i64,
        tok: &TextTokenizer,
        device: Device,
    ) -> Result<TaskTensors, TrainerError> {
        let px = (size * size * 3) as usize;
        let mut pixels = Vec::with_capacity(samples.len() * px);
        for (i, s) in samples.iter().enumerate() {
            if s.pixels.len() != px {
                return Err(TrainerError::Input(format!(
                    "sample {i}: {} pixel bytes, expected {size}x{size}x3 = {px}",
                    s.pixels.len()
                )));
            }
            pixels.extend_from_slice(&s.pixels);
        }
        let captions: Vec<String> = samples.iter().map(|s| s.caption.clone()).collect();
        let (ids, mask) = tok.encode(&captions, max_len)?;
        let lens = Vec::<i64>::try_from(&mask.sum_dim_intlist(1, false, Kind::Int64))?;
        Ok(TaskTensors {
            pixels: Tensor::from_slice(&pixels)
                .view([samples.len() as i64, size, size, 3])
                .to_device(device),
            ids: ids.to_device(device),
            mask: mask.to_device(device),
            size,
            host_ids: ids,
            lens,
        })
    }

    pub fn len(&self) -> i64 {
        self.pixels.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows `idx` (a host tensor) as model inputs, text trimmed to the longest caption.
    /// Nothing here waits for the device.
    pub fn batch(&self, idx: &Tensor) -> Batch {
        let rows = Vec::<i64>::try_from(&idx.to_device(Device::Cpu)).unwrap_or_default();
        let len = rows
            .iter()
            .map(|&r| self.lens.get(r as usize).copied().unwrap_or(0))
            .max()
            .unwrap_or(0)
            .max(1);
        let host_idx = idx.to_device(Device::Cpu);
        let idx = upload(&host_idx, self.pixels.device());
        let pix = self.pixels.index_select(0, &idx);
        let images = pix
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float)
            .g_sub_scalar(127.0)
            .g_div_scalar(128.0);
        let trim = |t: &Tensor, i: &Tensor| t.index_select(0, i).narrow(1, 0, len).contiguous();
        let ids = trim(&self.ids, &idx);
        let host_ids = if self.host_ids.device() == self.ids.device() {
            ids.shallow_clone()
        } else {
            trim(&self.host_ids, &host_idx)
        };
        Batch {
            images,
            ids,
            mask: trim(&self.mask, &idx),
            host_ids,
        }
    }
}

/// SplitMix64: a tiny, portable generator so data order depends only on (seed, epoch).
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Mixes values into one seed (for per-epoch orders and per-step libtorch seeds).
pub fn mix(parts: &[u64]) -> u64 {
    let mut r = SplitMix::new(0x5EED);
    parts.iter().fold(0u64, |acc, &p| {
        r.0 ^= p.wrapping_add(acc);
        r.next_u64()
    })
}

/// Sample order of one epoch: a Fisher–Yates shuffle seeded by (seed, task, epoch).
pub fn epoch_order(n: i64, seed: u64, task_index: i64, epoch: i64) -> Vec<i64> {
    let mut rng = SplitMix::new(mix(&[seed, task_index as u64, epoch as u64]));
    let mut v: Vec<i64> = (0..n).collect();
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Steps per epoch: full batches only (drop_last, as the paper), at least one.
pub fn steps_per_epoch(n: i64, batch: i64) -> i64 {
    (n / batch).max(1)
}

/// BERT masking (docs/method.md, "Masked language modelling"): each token with prob `p` unless [PAD]/[CLS]; of those 80% → [MASK],
/// 10% → random id, 10% unchanged. Returns (masked ids, flat positions of masked tokens, their
/// labels). Uses libtorch's RNG (seeded per step by the caller).
pub fn mask_tokens(ids: &Tensor, p: f64, vocab: i64) -> (Tensor, Tensor, Tensor) {
    let probs = ids.ones_like().to_kind(Kind::Float) * p;
    let mut chosen = probs.bernoulli().to_kind(Kind::Bool);
    chosen = chosen.logical_and(&ids.ne(PAD)).logical_and(&ids.ne(CLS));
    let replace = (ids.ones_like().to_kind(Kind::Float) * 0.8)
        .bernoulli()
        .to_kind(Kind::Bool)
        .logical_and(&chosen);
    let random = (ids.ones_like().to_kind(Kind::Float) * 0.5)
        .bernoulli()
        .to_kind(Kind::Bool)
        .logical_and(&chosen)
        .logical_and(&replace.logical_not());
    let rand_ids = Tensor::randint(vocab, ids.size(), (Kind::Int64, ids.device()));
    let masked = ids.where_self(&replace.logical_not(), &ids.full_like(MASK));
    let masked = rand_ids.where_self(&random, &masked);
    let positions = chosen.reshape([-1]).nonzero().reshape([-1]);
    let labels = ids.reshape([-1]).index_select(0, &positions);
    (masked, positions, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_deterministic_permutation() {
        let a = epoch_order(50, 7, 1, 2);
        assert_eq!(a, epoch_order(50, 7, 1, 2));
        assert_ne!(a, epoch_order(50, 7, 1, 3));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn masking_never_touches_pad_or_cls_and_rates_are_right() {
        tch::manual_seed(0);
        let row: Vec<i64> = [CLS]
            .into_iter()
            .chain(2000..2030)
            .chain([102, PAD, PAD])
            .collect();
        let ids = Tensor::from_slice(&row).view([1, -1]).repeat([2000, 1]);
        let (masked, pos, labels) = mask_tokens(&ids, 0.15, 30522);
        let flat_ids = ids.view([-1]);
        let at = flat_ids.index_select(0, &pos);
        assert!(at.ne(PAD).all().int64_value(&[]) == 1 && at.ne(CLS).all().int64_value(&[]) == 1);
        assert!(labels.equal(&at));
        let eligible = 2000.0 * 31.0;
        let rate = pos.size()[0] as f64 / eligible;
        assert!((rate - 0.15).abs() < 0.01, "mask rate {rate}");
        let to_mask = masked
            .view([-1])
            .index_select(0, &pos)
            .eq(MASK)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!((to_mask - 0.8).abs() < 0.02, "[MASK] share {to_mask}");
        // Unchosen positions keep their ids.
        let same = masked
            .eq_tensor(&ids)
            .to_kind(Kind::Int64)
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert!(same >= ids.numel() as i64 - pos.size()[0]);
    }
}
