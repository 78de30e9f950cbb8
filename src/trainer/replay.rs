//! Experience replay (issue #10): training samples of earlier lineage tasks mixed into every
//! batch. The worker chooses the pools (never from a rolled-back branch); the engine appends
//! them after the task's own samples and each step draws its replayed rows as a pure function
//! of (seed, task, step), so a resumed task replays exactly what an uninterrupted one would.
use std::borrow::Cow;

use super::data::{mix, SplitMix};
use super::Sample;

/// The training samples of one earlier task and how many of them each batch replays.
#[derive(Debug, Clone)]
pub struct ReplayPool {
    pub samples: Vec<Sample>,
    pub per_batch: usize,
}

/// Where the pools sit in the task's tensors: rows `start .. start + len` of the combined set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayPlan {
    pools: Vec<(usize, usize, usize)>,
}

/// Distinguishes replay draws from every other use of [`mix`].
const SALT: u64 = 0x5EED_0F2E_71A7;

fn used(pools: &[ReplayPool]) -> impl Iterator<Item = &ReplayPool> {
    pools
        .iter()
        .filter(|p| !p.samples.is_empty() && p.per_batch > 0)
}

/// The task's samples followed by every used pool's (what the engine turns into tensors).
pub fn combine<'a>(task: &'a [Sample], pools: &[ReplayPool]) -> Cow<'a, [Sample]> {
    if used(pools).next().is_none() {
        return Cow::Borrowed(task);
    }
    let mut all = task.to_vec();
    for p in used(pools) {
        all.extend(p.samples.iter().cloned());
    }
    Cow::Owned(all)
}

impl ReplayPlan {
    /// Where each used pool starts in [`combine`]'s output, for a task of `n_task` samples.
    pub fn new(n_task: usize, pools: &[ReplayPool]) -> ReplayPlan {
        let mut start = n_task;
        let mut plan = ReplayPlan::default();
        for p in used(pools) {
            plan.pools
                .push((start, p.samples.len(), p.per_batch.min(p.samples.len())));
            start += p.samples.len();
        }
        plan
    }

    /// Replayed rows per batch.
    pub fn per_batch(&self) -> usize {
        self.pools.iter().map(|p| p.2).sum()
    }

    /// The replayed rows of one step: from each pool, `per_batch` distinct rows chosen by a
    /// partial Fisher–Yates shuffle seeded by (seed, task, step, pool).
    pub fn draw(&self, seed: u64, task_index: i64, step: i64) -> Vec<i64> {
        let mut out = Vec::with_capacity(self.per_batch());
        for (i, &(start, len, k)) in self.pools.iter().enumerate() {
            let mut rng =
                SplitMix::new(mix(&[SALT, seed, task_index as u64, step as u64, i as u64]));
            let mut idx: Vec<usize> = (0..len).collect();
            for j in 0..k {
                let r = j + (rng.next_u64() % (len - j) as u64) as usize;
                idx.swap(j, r);
                out.push((start + idx[j]) as i64);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(tag: &str, n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                pixels: vec![i as u8],
                caption: format!("{tag}{i}"),
            })
            .collect()
    }

    #[test]
    fn no_pools_borrows_the_task() {
        let task = samples("t", 3);
        let all = combine(&task, &[]);
        let plan = ReplayPlan::new(task.len(), &[]);
        assert!(matches!(all, Cow::Borrowed(_)));
        assert_eq!(plan.per_batch(), 0);
        assert!(plan.draw(1, 1, 0).is_empty());
    }

    #[test]
    fn draws_are_distinct_within_each_pool_and_depend_only_on_seed_and_step() {
        let task = samples("t", 4);
        let pools = [
            ReplayPool {
                samples: samples("a", 10),
                per_batch: 3,
            },
            ReplayPool {
                samples: samples("b", 2),
                per_batch: 5,
            }, // capped at the pool size
        ];
        let all = combine(&task, &pools);
        let plan = ReplayPlan::new(task.len(), &pools);
        assert_eq!(all.len(), 16);
        assert_eq!(plan.per_batch(), 5);
        let d = plan.draw(7, 2, 11);
        assert_eq!(d, plan.draw(7, 2, 11));
        assert_ne!(
            (0..20).map(|s| plan.draw(7, 2, s)).collect::<Vec<_>>(),
            (0..20).map(|s| plan.draw(8, 2, s)).collect::<Vec<_>>()
        );
        let (a, b) = d.split_at(3);
        assert!(a.iter().all(|&r| (4..14).contains(&r)), "{a:?}");
        let mut b = b.to_vec();
        b.sort_unstable();
        assert_eq!(b, vec![14, 15]);
        let mut a = a.to_vec();
        a.sort_unstable();
        a.dedup();
        assert_eq!(a.len(), 3);
        // Over many steps every row of pool a gets replayed.
        let mut seen = [false; 10];
        for s in 0..200 {
            for r in &plan.draw(7, 2, s)[..3] {
                seen[(*r - 4) as usize] = true;
            }
        }
        assert!(seen.iter().all(|&x| x));
    }
}
