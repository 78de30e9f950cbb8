//! Per-sample retrieval outcomes of an anchor suite and the paired bootstrap of the anchor
//! gate (issue #25 §2, docs/anchors.md). Pure Rust: no libtorch, no randomness from outside.
//!
//! Sample `i` of a suite is image `i` with caption `i`. Its *hits* are six bits: whether its
//! caption ranks within the top 1/5/10 of its image's row (TR@1/5/10) and whether its image
//! ranks within the top 1/5/10 of its caption's column (IR@1/5/10), with the tie rule of
//! [`super::retrieval()`]. Its *score* is `100 × hits / 6`, so the mean score over the suite is
//! exactly the suite's Rm.

use super::retrieval::beaten;
use super::MetricsError;

/// The six hit bits, in storage order.
pub const HIT_BITS: [&str; 6] = ["tr1", "tr5", "tr10", "ir1", "ir5", "ir10"];

/// Per-sample hits of paired retrieval over `n` pairs (`sim` as for [`super::retrieval()`]):
/// bit 0..2 = TR@1/5/10, bit 3..5 = IR@1/5/10.
///
/// # Errors
/// Those of [`super::retrieval()`].
pub fn sample_hits(sim: &[f32], n: usize) -> Result<Vec<u8>, MetricsError> {
    let (rows, cols) = beaten(sim, n)?;
    let bits = |b: usize| u8::from(b < 1) | u8::from(b < 5) << 1 | u8::from(b < 10) << 2;
    Ok(rows
        .iter()
        .zip(&cols)
        .map(|(&r, &c)| bits(r) | bits(c) << 3)
        .collect())
}

/// A sample's score in Rm points: 100 × (hits set) / 6.
pub fn sample_score(hits: u8) -> f64 {
    100.0 * f64::from((hits & 0x3f).count_ones()) / 6.0
}

/// Hits as stored: one printable character per sample, `'0' + hits` (`'0'..='o'`).
pub fn encode_hits(hits: &[u8]) -> String {
    hits.iter()
        .map(|&h| char::from(b'0' + (h & 0x3f)))
        .collect()
}

/// Reads [`encode_hits`]'s text back.
///
/// # Errors
/// [`PairError::BadHits`] naming the first character outside `'0'..='o'`.
pub fn decode_hits(text: &str) -> Result<Vec<u8>, PairError> {
    text.bytes()
        .enumerate()
        .map(|(i, b)| match b {
            b'0'..=b'o' => Ok(b - b'0'),
            _ => Err(PairError::BadHits { at: i }),
        })
        .collect()
}

/// Why two suites' outcomes cannot be compared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PairError {
    /// Parent and child were scored on different numbers of samples.
    #[error("parent has {parent} per-sample results and the new version {child}")]
    LengthMismatch { parent: usize, child: usize },
    /// Nothing to resample.
    #[error("no samples")]
    Empty,
    /// Stored hits that are not `'0'..='o'`.
    #[error("stored hits have a bad character at sample {at}")]
    BadHits { at: usize },
    /// Zero resamples.
    #[error("resamples must be at least 1")]
    NoResamples,
}

/// The drop of mean Rm from parent to child on one suite, with its bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropInterval {
    /// Parent's Rm − child's Rm on the suite (Rm points; positive = the child is worse).
    pub mean: f64,
    /// 2.5th percentile of the resampled mean drops.
    pub lo: f64,
    /// 97.5th percentile.
    pub hi: f64,
    /// Samples of the suite.
    pub samples: usize,
    /// Bootstrap resamples drawn.
    pub resamples: u32,
}

/// Default number of bootstrap resamples.
pub const DEFAULT_RESAMPLES: u32 = 1000;

/// SplitMix64: a small, well-mixed generator; the same seed gives the same stream everywhere.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for any suite).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// The bootstrap seed of a suite: FNV-1a of its name, so each suite's decision is
/// reproducible and independent of the others' (and of the order they are checked in).
pub fn suite_seed(suite: &str) -> u64 {
    suite.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Paired bootstrap of the mean drop `score(parent_i) − score(child_i)` over the suite's
/// samples: `resamples` times, draw `n` sample indices with replacement (the same indices
/// for parent and child: the pairing), and take the mean drop; the interval is the 2.5th
/// and 97.5th percentile of those means (percentile method, nearest rank).
///
/// # Errors
/// [`PairError`] when the two sides differ in length, are empty, or `resamples` is 0.
pub fn paired_bootstrap_drop(
    parent: &[u8],
    child: &[u8],
    resamples: u32,
    seed: u64,
) -> Result<DropInterval, PairError> {
    if parent.len() != child.len() {
        return Err(PairError::LengthMismatch {
            parent: parent.len(),
            child: child.len(),
        });
    }
    let n = parent.len();
    if n == 0 {
        return Err(PairError::Empty);
    }
    if resamples == 0 {
        return Err(PairError::NoResamples);
    }
    let drops: Vec<f64> = parent
        .iter()
        .zip(child)
        .map(|(&p, &c)| sample_score(p) - sample_score(c))
        .collect();
    let mean = drops.iter().sum::<f64>() / n as f64;
    let mut rng = SplitMix64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| drops[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * f64::from(resamples)).ceil() as usize).clamp(1, means.len()) - 1];
    Ok(DropInterval {
        mean,
        lo: at(0.025),
        hi: at(0.975),
        samples: n,
        resamples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of hit patterns for tests.
    fn patterns(n: usize, seed: u64) -> Vec<u8> {
        let mut r = SplitMix64(seed);
        (0..n).map(|_| (r.next() & 0x3f) as u8).collect()
    }

    #[test]
    fn hits_follow_the_ranks_and_average_to_rm() {
        // 12 pairs: row i's own caption (100 + i) is tied by the first i captions of its row,
        // so its rank is i + 1 (ties count against the model).
        let n = 12;
        let mut sim = vec![0.0f32; n * n];
        for i in 0..n {
            sim[i * n + i] = 100.0 + i as f32;
        }
        // Row i: beaten by the first i columns (scores 100 + i, a tie counts against).
        for i in 0..n {
            for j in 0..i {
                sim[i * n + j] = 100.0 + i as f32;
            }
        }
        let hits = sample_hits(&sim, n).unwrap();
        let r = crate::metrics::retrieval(&sim, n).unwrap();
        let mean = hits.iter().map(|&h| sample_score(h)).sum::<f64>() / n as f64;
        assert!((mean - r.rm).abs() < 1e-9, "{mean} vs {}", r.rm);
        assert_eq!(hits[0] & 0b111, 0b111, "rank 1: every TR hit");
        assert_eq!(hits[3] & 0b111, 0b110, "rank 4: TR@5, TR@10");
        assert_eq!(hits[7] & 0b111, 0b100, "rank 8: TR@10 only");
        assert_eq!(hits[11] & 0b111, 0, "rank 12: no TR hit");
        assert_eq!(decode_hits(&encode_hits(&hits)).unwrap(), hits);
        assert_eq!(decode_hits("0o!"), Err(PairError::BadHits { at: 2 }));
    }

    #[test]
    fn the_same_seed_gives_the_same_interval() {
        let (p, c) = (patterns(200, 1), patterns(200, 2));
        let a = paired_bootstrap_drop(&p, &c, 1000, suite_seed("s")).unwrap();
        let b = paired_bootstrap_drop(&p, &c, 1000, suite_seed("s")).unwrap();
        assert_eq!(a, b);
        let other = paired_bootstrap_drop(&p, &c, 1000, suite_seed("t")).unwrap();
        assert_eq!(a.mean, other.mean);
        assert_ne!((a.lo, a.hi), (other.lo, other.hi));
        assert!(a.lo <= a.mean && a.mean <= a.hi, "{a:?}");
    }

    #[test]
    fn a_clear_drop_has_its_whole_interval_above_zero() {
        // The child loses every hit on 40 % of 250 samples: a drop of 40 × (mean score).
        let p = vec![0x3f; 250];
        let c: Vec<u8> = (0..250).map(|i| if i % 5 < 2 { 0 } else { 0x3f }).collect();
        let d = paired_bootstrap_drop(&p, &c, 1000, 7).unwrap();
        assert!((d.mean - 40.0).abs() < 1e-9, "{d:?}");
        assert!(d.lo > 30.0 && d.hi < 50.0, "{d:?}");
    }

    #[test]
    fn noise_has_an_interval_around_zero() {
        // Child = parent with a few hits flipped either way: the difference is noise.
        let p = patterns(300, 3);
        let c: Vec<u8> = p
            .iter()
            .enumerate()
            .map(|(i, &h)| match i % 10 {
                0 => h ^ 0b000_001,
                5 => h ^ 0b001_000,
                _ => h,
            })
            .collect();
        let d = paired_bootstrap_drop(&p, &c, 1000, 11).unwrap();
        assert!(d.mean.abs() < 2.0, "{d:?}");
        assert!(d.lo < 0.0 && d.hi > 0.0, "{d:?}");
    }

    #[test]
    fn unequal_or_empty_inputs_are_refused() {
        assert_eq!(
            paired_bootstrap_drop(&[1, 2], &[1], 10, 0),
            Err(PairError::LengthMismatch {
                parent: 2,
                child: 1
            })
        );
        assert_eq!(
            paired_bootstrap_drop(&[], &[], 10, 0),
            Err(PairError::Empty)
        );
        assert_eq!(
            paired_bootstrap_drop(&[1], &[1], 0, 0),
            Err(PairError::NoResamples)
        );
    }
}
