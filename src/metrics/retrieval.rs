//! Cross-modal retrieval recall from an image × text similarity matrix.

use serde::{Deserialize, Serialize};

use super::MetricsError;

/// Recall@K in both retrieval directions, in percent (0..=100), and their mean.
///
/// These are the numbers CTP reports for every evaluation set: TR ("text retrieval",
/// image → text) and IR ("image retrieval", text → image) at K = 1, 5, 10.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Retrieval {
    /// Image → text recall@1.
    pub tr1: f64,
    /// Image → text recall@5.
    pub tr5: f64,
    /// Image → text recall@10.
    pub tr10: f64,
    /// Text → image recall@1.
    pub ir1: f64,
    /// Text → image recall@5.
    pub ir5: f64,
    /// Text → image recall@10.
    pub ir10: f64,
    /// `r_mean` of the CTP paper: the mean of the TR mean and the IR mean, which equals
    /// the mean of all six recalls.
    pub rm: f64,
}

/// Recall@K of paired retrieval over `n` image-text pairs.
///
/// `sim` is the row-major `n × n` similarity matrix: row `i` is image `i`, column `j` is
/// text `j`, and image `i` belongs with text `i`. TR@K is the share of images whose own
/// text ranks within the top K of their row; IR@K is the share of texts whose own image
/// ranks within the top K of their column.
///
/// # Ties
///
/// The rank of the true partner is `1 +` the number of *other* candidates scoring
/// **greater than or equal to** it, i.e. every tie is resolved against the model.
/// Exact ties in float similarities are the signature of collapsed embeddings (for
/// instance every feature the same vector): counting only strictly greater scores would
/// grade such a model 100%, and breaking ties by index would make the score depend on
/// the order of the evaluation split. The pessimistic rank does neither.
///
/// # Errors
///
/// [`MetricsError::Empty`] for `n == 0` (no recall is defined),
/// [`MetricsError::ShapeMismatch`] if `sim.len() != n * n`, and
/// [`MetricsError::NotANumber`] for the first NaN in row-major order, since a NaN has no
/// place in a ranking. Infinities are ordinary scores.
pub fn retrieval(sim: &[f32], n: usize) -> Result<Retrieval, MetricsError> {
    let (row_beaten, col_beaten) = beaten(sim, n)?;
    let (tr1, tr5, tr10) = recalls(&row_beaten);
    let (ir1, ir5, ir10) = recalls(&col_beaten);
    let rm = ((tr1 + tr5 + tr10) / 3.0 + (ir1 + ir5 + ir10) / 3.0) / 2.0;
    Ok(Retrieval {
        tr1,
        tr5,
        tr10,
        ir1,
        ir5,
        ir10,
        rm,
    })
}

/// For each image (row) and each text (column), how many other candidates tie or beat its
/// true partner (rank − 1), with the checks and errors of [`retrieval()`].
pub(super) fn beaten(sim: &[f32], n: usize) -> Result<(Vec<usize>, Vec<usize>), MetricsError> {
    if n == 0 {
        return Err(MetricsError::Empty);
    }
    if n.checked_mul(n) != Some(sim.len()) {
        return Err(MetricsError::ShapeMismatch { len: sim.len(), n });
    }
    if let Some(at) = sim.iter().position(|s| s.is_nan()) {
        return Err(MetricsError::NotANumber {
            row: at / n,
            col: at % n,
        });
    }

    let own: Vec<f32> = (0..n).map(|i| sim[i * n + i]).collect();
    // Candidates that tie or beat the true partner, per image (its row) and per text
    // (its column). Both are counted in one row-major pass so that a large matrix is
    // never walked column by column.
    let mut row_beaten = vec![0usize; n];
    let mut col_beaten = vec![0usize; n];
    for (i, row) in sim.chunks_exact(n).enumerate() {
        for (j, &s) in row.iter().enumerate() {
            if i == j {
                continue;
            }
            if s >= own[i] {
                row_beaten[i] += 1;
            }
            if s >= own[j] {
                col_beaten[j] += 1;
            }
        }
    }

    Ok((row_beaten, col_beaten))
}

/// Recall@1, @5 and @10 in percent, from how many candidates beat each true partner.
fn recalls(beaten: &[usize]) -> (f64, f64, f64) {
    let at = |k: usize| {
        // rank = 1 + beaten, so "rank <= k" is "beaten < k".
        let hits = beaten.iter().filter(|&&b| b < k).count();
        100.0 * hits as f64 / beaten.len() as f64
    };
    (at(1), at(5), at(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-9,
            "expected {expected}, got {actual}"
        );
    }

    fn transpose(sim: &[f32], n: usize) -> Vec<f32> {
        (0..n * n).map(|at| sim[(at % n) * n + at / n]).collect()
    }

    /// 12 pairs with diagonal `d_i = 10 (i + 1)`, so `d` grows with `i`. Row `i` gets
    /// distractors only in columns `j > i`, valued in `[d_i, d_j)`: they tie or beat image
    /// `i`'s own text but stay below text `j`'s own image, so every column is clean and
    /// each row's rank is `1 + #distractors`:
    ///
    /// | row  | distractors         | rank | hit @1 @5 @10 |
    /// |------|---------------------|------|---------------|
    /// | 0    | cols 1..=10 (> d_0) | 11   | - - -         |
    /// | 1    | cols 2..=10 (> d_1) | 10   | - - x         |
    /// | 2    | cols 3..=7 (= d_2)  | 6    | - - x         |
    /// | 3    | cols 4..=7 (> d_3)  | 5    | - x x         |
    /// | 4    | col 5 (> d_4)       | 2    | - x x         |
    /// | 5-11 | none                | 1    | x x x         |
    ///
    /// TR@1 = 7/12, TR@5 = 9/12, TR@10 = 11/12; IR@K = 100.
    fn staircase() -> Vec<f32> {
        let n = 12;
        let d = |i: usize| 10.0 * (i as f32 + 1.0);
        let mut sim = vec![-1.0; n * n];
        for i in 0..n {
            sim[i * n + i] = d(i);
        }
        let mut distract = |i: usize, cols: std::ops::RangeInclusive<usize>, value: f32| {
            for j in cols {
                sim[i * n + j] = value;
            }
        };
        distract(0, 1..=10, d(0) + 1.0);
        distract(1, 2..=10, d(1) + 1.0);
        distract(2, 3..=7, d(2)); // exact ties count against the model
        distract(3, 4..=7, d(3) + 1.0);
        distract(4, 5..=5, d(4) + 1.0);
        sim
    }

    #[test]
    fn identity_matrix_is_perfect() {
        let sim = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let r = retrieval(&sim, 3).unwrap();
        for v in [r.tr1, r.tr5, r.tr10, r.ir1, r.ir5, r.ir10, r.rm] {
            assert_close(v, 100.0);
        }
    }

    #[test]
    fn staircase_ranks_images_by_hand() {
        let r = retrieval(&staircase(), 12).unwrap();
        assert_close(r.tr1, 700.0 / 12.0); // 58.33
        assert_close(r.tr5, 75.0);
        assert_close(r.tr10, 1100.0 / 12.0); // 91.67
        assert_close(r.ir1, 100.0);
        assert_close(r.ir5, 100.0);
        assert_close(r.ir10, 100.0);
        // TR mean = (7 + 9 + 11) / 36 * 100 = 75; IR mean = 100; Rm = (75 + 100) / 2.
        assert_close(r.rm, 87.5);
    }

    #[test]
    fn transposing_swaps_directions() {
        let sim = staircase();
        let r = retrieval(&sim, 12).unwrap();
        let t = retrieval(&transpose(&sim, 12), 12).unwrap();
        assert_eq!((t.tr1, t.tr5, t.tr10), (r.ir1, r.ir5, r.ir10));
        assert_eq!((t.ir1, t.ir5, t.ir10), (r.tr1, r.tr5, r.tr10));
        assert_close(t.rm, r.rm);
    }

    #[test]
    fn partner_ranked_last_scores_zero() {
        // Diagonal -1 under off-diagonal 0: every partner has rank 12 > 10.
        let n = 12;
        let sim: Vec<f32> = (0..n * n)
            .map(|at| if at / n == at % n { -1.0 } else { 0.0 })
            .collect();
        let r = retrieval(&sim, n).unwrap();
        assert_eq!(r.tr10, 0.0);
        assert_eq!(r.ir10, 0.0);
        assert_eq!(r.rm, 0.0);
    }

    #[test]
    fn collapsed_model_gets_no_credit_for_ties() {
        // All scores equal: every partner ties with n - 1 others, so its rank is n.
        let r = retrieval(&[0.3; 144], 12).unwrap();
        assert_eq!(r.rm, 0.0);
        // With 3 pairs the rank is 3: a miss at 1, a hit at 5 and 10.
        let r = retrieval(&[0.3; 9], 3).unwrap();
        assert_eq!((r.tr1, r.tr5, r.tr10), (0.0, 100.0, 100.0));
        assert_eq!((r.ir1, r.ir5, r.ir10), (0.0, 100.0, 100.0));
        assert_close(r.rm, 200.0 / 3.0);
    }

    #[test]
    fn one_row_tie_only_hurts_that_row() {
        // Image 0 ties text 1 with its own text; text 1's own image still wins column 1.
        // TR: image 0 rank 2, image 1 rank 1. IR: text 0 rank 1 (0.2 < 0.5), text 1 rank 1.
        let sim = [0.5, 0.5, 0.2, 0.9];
        let r = retrieval(&sim, 2).unwrap();
        assert_eq!((r.tr1, r.tr5), (50.0, 100.0));
        assert_eq!((r.ir1, r.ir5), (100.0, 100.0));
    }

    #[test]
    fn infinities_are_ordinary_scores() {
        let inf = f32::INFINITY;
        let sim = [inf, -inf, -inf, inf];
        assert_eq!(retrieval(&sim, 2).unwrap().rm, 100.0);
    }

    #[test]
    fn single_pair_is_always_found() {
        assert_eq!(retrieval(&[-3.0], 1).unwrap().rm, 100.0);
    }

    #[test]
    fn zero_pairs_is_an_error() {
        assert_eq!(retrieval(&[], 0), Err(MetricsError::Empty));
    }

    #[test]
    fn wrong_length_is_an_error() {
        assert_eq!(
            retrieval(&[0.0; 5], 2),
            Err(MetricsError::ShapeMismatch { len: 5, n: 2 })
        );
        // n * n overflows usize: still an error, not a panic.
        assert_eq!(
            retrieval(&[0.0; 4], usize::MAX),
            Err(MetricsError::ShapeMismatch {
                len: 4,
                n: usize::MAX
            })
        );
    }

    #[test]
    fn nan_is_an_error_with_its_position() {
        let sim = [1.0, 0.0, f32::NAN, 1.0];
        assert_eq!(
            retrieval(&sim, 2),
            Err(MetricsError::NotANumber { row: 1, col: 0 })
        );
    }

    #[test]
    fn error_messages_are_readable() {
        let e = MetricsError::ShapeMismatch { len: 5, n: 2 };
        assert_eq!(
            e.to_string(),
            "similarity matrix has 5 entries; 2 pairs need 2x2"
        );
    }

    #[test]
    fn serde_round_trip() {
        let r = retrieval(&staircase(), 12).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"tr10\""));
        let back: Retrieval = serde_json::from_str(&json).unwrap();
        // serde_json parses floats to within one ulp unless `float_roundtrip` is on.
        let fields = |r: Retrieval| [r.tr1, r.tr5, r.tr10, r.ir1, r.ir5, r.ir10, r.rm];
        for (got, want) in fields(back).into_iter().zip(fields(r)) {
            assert_close(got, want);
        }
    }
}
