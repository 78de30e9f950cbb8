//! The accuracy matrix of a lineage of model versions, read as forgetting and backward
//! transfer.
//!
//! Versions form a tree: every task trains a child of some version, and a rollback
//! starts a branch. Forgetting only makes sense along one chain of training, so every
//! function here takes a *lineage*, root first and the version being judged last. Row
//! `u` of the lineage holds `Rm(u, j)` for each task `j` it was evaluated on: one row of
//! the classic continual-learning accuracy matrix.
//!
//! Each function only uses the scores that are present; a missing cell is never read as
//! zero, because "not evaluated" and "retrieves nothing" are different facts. Scores are
//! expected to be finite (they come out of [`retrieval()`](super::retrieval()), which refuses
//! NaN).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One evaluated version on its lineage: which tasks it had seen and Rm on each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineageRow {
    /// The model version this row describes.
    pub version: i64,
    /// The task whose training produced this version.
    pub task: i64,
    /// `Rm` (percent) of this version on each task it was evaluated on, keyed by task id.
    pub rm: BTreeMap<i64, f64>,
}

/// Max-based forgetting of the newest version of a lineage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Forgetting {
    /// `f_j` for every earlier task `j` that could be scored.
    pub per_task: BTreeMap<i64, f64>,
    /// Mean of `per_task`; `None` when it is empty, as for a root version.
    pub average: Option<f64>,
}

/// Max-based forgetting of the last row of `lineage` (the current version `v`).
///
/// For every task `j` in `v`'s row other than `v`'s own task,
/// `f_j = max_u Rm(u, j) − Rm(v, j)` over the *earlier* rows `u` that have a score for
/// `j` (Chaudhry et al. 2018, as in PyCIL and FACIL). Measuring against the best score
/// ever reached, rather than the score right after learning, also counts knowledge that
/// later tasks improved and then lost again.
///
/// `f_j` is **not** clipped at zero: a negative value means `v` is better on `j` than any
/// earlier version was, and clipping would hide that backward transfer. Tasks with no
/// earlier score are left out (`v`'s own task always is: it has nothing to forget yet).
/// An empty lineage or a lone root yields an empty map and no average.
pub fn forgetting_max(lineage: &[LineageRow]) -> Forgetting {
    let Some((current, earlier)) = lineage.split_last() else {
        return Forgetting::default();
    };
    let per_task: BTreeMap<i64, f64> = current
        .rm
        .iter()
        .filter(|&(&task, _)| task != current.task)
        .filter_map(|(&task, &now)| {
            let best = earlier
                .iter()
                .filter_map(|row| row.rm.get(&task).copied())
                .reduce(f64::max)?;
            Some((task, best - now))
        })
        .collect();
    let average = mean(per_task.values().copied());
    Forgetting { per_task, average }
}

/// Backward transfer as the CTP paper reports it, **positive = forgetting**:
/// `(1 / (T − 1)) Σ_j [Rm(row_j, j) − Rm(v, j)]`.
///
/// `v` is the last row, and `j` runs over the tasks learned by earlier rows, `row_j`
/// being the first row whose `task` is `j` — the diagonal of the accuracy matrix minus
/// its last row. A task `v` itself retrained is skipped, as in [`forgetting_max`]. The
/// divisor is the number of tasks actually scored, which is `T − 1` when every earlier
/// row learned a distinct task and was evaluated on it. `None` when no task can be
/// scored, in particular for an empty lineage or a lone root.
pub fn bwt_paper(lineage: &[LineageRow]) -> Option<f64> {
    mean(
        learned_then_now(lineage)
            .into_iter()
            .map(|(learned, now)| learned - now),
    )
}

/// Backward transfer as Lopez-Paz & Ranzato (GEM, 2017) define it, **negative =
/// forgetting**: `(1 / (T − 1)) Σ_j [Rm(v, j) − Rm(row_j, j)]`.
///
/// The same cells as [`bwt_paper`] with the opposite sign, so it always equals
/// `-bwt_paper`. Both exist because readers of CL papers expect one or the other, and a
/// report should say which one it shows rather than flip signs silently.
pub fn bwt_gem(lineage: &[LineageRow]) -> Option<f64> {
    mean(
        learned_then_now(lineage)
            .into_iter()
            .map(|(learned, now)| now - learned),
    )
}

/// Mean `Rm` over the tasks in `row`: the "average accuracy" of continual learning.
/// `None` for a row with no scores.
pub fn average_accuracy(row: &LineageRow) -> Option<f64> {
    mean(row.rm.values().copied())
}

/// For each task learned before the last row (but not retrained by it), in lineage order:
/// its score right after it was first learned and its score in the last row. Tasks
/// missing either score are skipped.
fn learned_then_now(lineage: &[LineageRow]) -> Vec<(f64, f64)> {
    let Some((current, earlier)) = lineage.split_last() else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    earlier
        .iter()
        .filter(|row| row.task != current.task && seen.insert(row.task))
        .filter_map(|row| Some((*row.rm.get(&row.task)?, *current.rm.get(&row.task)?)))
        .collect()
}

/// Arithmetic mean, `None` for no values (rather than the NaN of `0 / 0`).
fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values
        .into_iter()
        .fold((0.0, 0usize), |(sum, count), v| (sum + v, count + 1));
    (count > 0).then(|| sum / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: i64, task: i64, rm: &[(i64, f64)]) -> LineageRow {
        LineageRow {
            version,
            task,
            rm: rm.iter().copied().collect(),
        }
    }

    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-9,
            "expected {expected}, got {actual}"
        );
    }

    /// Lower-triangular accuracy matrix, one task per version, steady forgetting:
    ///
    /// | version | task | Rm(·,1) | Rm(·,2) | Rm(·,3) |
    /// |---------|------|---------|---------|---------|
    /// | 1       | 1    | 80      |         |         |
    /// | 2       | 2    | 70      | 90      |         |
    /// | 3       | 3    | 60      | 85      | 75      |
    fn triangle() -> Vec<LineageRow> {
        vec![
            row(1, 1, &[(1, 80.0)]),
            row(2, 2, &[(1, 70.0), (2, 90.0)]),
            row(3, 3, &[(1, 60.0), (2, 85.0), (3, 75.0)]),
        ]
    }

    #[test]
    fn forgetting_on_triangle() {
        // f_1 = max(80, 70) − 60 = 20; f_2 = 90 − 85 = 5; average = 12.5.
        let f = forgetting_max(&triangle());
        assert_eq!(f.per_task, BTreeMap::from([(1, 20.0), (2, 5.0)]));
        assert_close(f.average.unwrap(), 12.5);
    }

    #[test]
    fn forgetting_on_triangle_prefix() {
        // Judging version 2: f_1 = 80 − 70 = 10.
        let f = forgetting_max(&triangle()[..2]);
        assert_eq!(f.per_task, BTreeMap::from([(1, 10.0)]));
        assert_eq!(f.average, Some(10.0));
    }

    #[test]
    fn bwt_on_triangle() {
        // Diagonal minus last row: ((80 − 60) + (90 − 85)) / 2 = 12.5.
        assert_close(bwt_paper(&triangle()).unwrap(), 12.5);
        assert_close(bwt_gem(&triangle()).unwrap(), -12.5);
    }

    #[test]
    fn average_accuracy_on_triangle() {
        let rows = triangle();
        assert_eq!(average_accuracy(&rows[0]), Some(80.0));
        assert_close(average_accuracy(&rows[2]).unwrap(), 220.0 / 3.0); // (60+85+75)/3
    }

    #[test]
    fn max_based_differs_from_first_based() {
        // Task 2 improved task 1 (50 → 70), task 3 lost part of that gain (→ 60):
        //
        // | version | task | Rm(·,1) | Rm(·,2) | Rm(·,3) |
        // | 1       | 1    | 50      |         |         |
        // | 2       | 2    | 70      | 80      |         |
        // | 3       | 3    | 60      | 80      | 90      |
        let rows = vec![
            row(1, 1, &[(1, 50.0)]),
            row(2, 2, &[(1, 70.0), (2, 80.0)]),
            row(3, 3, &[(1, 60.0), (2, 80.0), (3, 90.0)]),
        ];
        // Max-based: f_1 = 70 − 60 = 10, f_2 = 80 − 80 = 0; average 5.
        let f = forgetting_max(&rows);
        assert_eq!(f.per_task, BTreeMap::from([(1, 10.0), (2, 0.0)]));
        assert_eq!(f.average, Some(5.0));
        // First-based (paper BWT): ((50 − 60) + (80 − 80)) / 2 = −5, i.e. net gain.
        assert_eq!(bwt_paper(&rows), Some(-5.0));
        assert_eq!(bwt_gem(&rows), Some(5.0));
    }

    #[test]
    fn improvement_is_negative_forgetting_not_clipped() {
        // f_1 = 40 − 55 = −15.
        let rows = vec![row(1, 1, &[(1, 40.0)]), row(2, 2, &[(1, 55.0), (2, 70.0)])];
        let f = forgetting_max(&rows);
        assert_eq!(f.per_task, BTreeMap::from([(1, -15.0)]));
        assert_eq!(f.average, Some(-15.0));
        assert_eq!(bwt_paper(&rows), Some(-15.0));
    }

    #[test]
    fn empty_lineage_has_no_metrics() {
        assert_eq!(forgetting_max(&[]), Forgetting::default());
        assert_eq!(bwt_paper(&[]), None);
        assert_eq!(bwt_gem(&[]), None);
    }

    #[test]
    fn root_version_has_no_forgetting() {
        let rows = vec![row(1, 1, &[(1, 80.0)])];
        let f = forgetting_max(&rows);
        assert!(f.per_task.is_empty());
        assert_eq!(f.average, None);
        assert_eq!(bwt_paper(&rows), None);
        assert_eq!(bwt_gem(&rows), None);
    }

    #[test]
    fn empty_row_has_no_average_accuracy() {
        assert_eq!(average_accuracy(&row(1, 1, &[])), None);
    }

    #[test]
    fn missing_cells_are_skipped_not_zero() {
        // Version 3 was not evaluated on task 1, and reports task 4, which no earlier
        // version saw. Only task 2 can be scored: 90 − 85 = 5 for both metrics.
        let rows = vec![
            row(1, 1, &[(1, 80.0)]),
            row(2, 2, &[(1, 70.0), (2, 90.0)]),
            row(3, 3, &[(2, 85.0), (3, 75.0), (4, 10.0)]),
        ];
        let f = forgetting_max(&rows);
        assert_eq!(f.per_task, BTreeMap::from([(2, 5.0)]));
        assert_eq!(f.average, Some(5.0));
        assert_eq!(bwt_paper(&rows), Some(5.0));
        assert_eq!(bwt_gem(&rows), Some(-5.0));
    }

    #[test]
    fn branch_lineage_with_gaps_in_versions() {
        // A rollback: version 4 was trained from version 1, so its lineage skips 2 and 3.
        let rows = vec![row(1, 1, &[(1, 80.0)]), row(4, 5, &[(1, 78.0), (5, 60.0)])];
        assert_eq!(forgetting_max(&rows).average, Some(2.0));
        assert_eq!(bwt_paper(&rows), Some(2.0));
    }

    #[test]
    fn retrained_task_is_not_forgetting() {
        // Version 3 trains task 1 again; only task 2 is judged: 90 − 70 = 20.
        let rows = vec![
            row(1, 1, &[(1, 80.0)]),
            row(2, 2, &[(1, 60.0), (2, 90.0)]),
            row(3, 1, &[(1, 85.0), (2, 70.0)]),
        ];
        assert_eq!(forgetting_max(&rows).per_task, BTreeMap::from([(2, 20.0)]));
        assert_eq!(bwt_paper(&rows), Some(20.0));
    }

    #[test]
    fn paper_bwt_uses_first_learning_row() {
        // Task 1 trained twice (80, then 90) before task 2; now 70.
        // First-learned diagonal: 80 − 70 = 10. Max-based: 90 − 70 = 20.
        let rows = vec![
            row(1, 1, &[(1, 80.0)]),
            row(2, 1, &[(1, 90.0)]),
            row(3, 2, &[(1, 70.0), (2, 88.0)]),
        ];
        assert_eq!(bwt_paper(&rows), Some(10.0));
        assert_eq!(forgetting_max(&rows).per_task, BTreeMap::from([(1, 20.0)]));
    }

    #[test]
    fn gem_is_minus_paper() {
        let rows = triangle();
        for len in 1..=rows.len() {
            let paper = bwt_paper(&rows[..len]);
            assert_eq!(bwt_gem(&rows[..len]), paper.map(|b| -b));
        }
    }

    #[test]
    fn serde_round_trip() {
        let rows = triangle();
        let json = serde_json::to_string(&rows).unwrap();
        let back: Vec<LineageRow> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rows);
        let f = forgetting_max(&rows);
        let back: Forgetting = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }
}
