//! The promotion gate (issue #10): after a new version is evaluated, the model's policy
//! decides whether it becomes the head. A refused version is still committed and listed.
use crate::metrics::anchor::{decode_hits, paired_bootstrap_drop, suite_seed, DEFAULT_RESAMPLES};
use crate::store::{AnchorEval, EvalScope, GatePolicy, NewVersion, VersionRow};

/// Why `new` violates `policy`, or `None` if it passes. Every violated bound is named.
/// `parent_anchors` and `new_anchors` are the two versions' results on the model's anchor
/// suites (for `max_anchor_drop`).
pub(super) fn check(
    policy: &GatePolicy,
    new: &NewVersion,
    parent: Option<&VersionRow>,
    parent_anchors: &[AnchorEval],
    new_anchors: &[AnchorEval],
) -> Option<String> {
    let mut why = Vec::new();
    if let (Some(max), Some(_)) = (policy.max_anchor_drop, parent) {
        let resamples = policy.anchor_resamples.unwrap_or(DEFAULT_RESAMPLES);
        why.extend(anchor_drops(max, resamples, parent_anchors, new_anchors));
    }
    if let (Some(max), Some(avg)) = (policy.max_avg_forgetting, new.average_forgetting) {
        if avg > max {
            why.push(format!(
                "average forgetting {avg:.2} > max_avg_forgetting {max}"
            ));
        }
    }
    if let Some(min) = policy.min_union_rm {
        let union = new.evals.iter().find(|e| e.scope == EvalScope::Union);
        match union {
            Some(u) if u.rm < min => {
                why.push(format!("union Rm {:.2} < min_union_rm {min}", u.rm));
            }
            None => why.push("no union evaluation to check min_union_rm against".into()),
            Some(_) => {}
        }
    }
    if let (Some(max), Some(drop)) = (policy.max_rm_drop, parent.and_then(|p| rm_drop(p, new))) {
        if drop > max {
            why.push(format!(
                "mean Rm drop from the parent on its tasks {drop:.2} > max_rm_drop {max}"
            ));
        }
    }
    (!why.is_empty()).then(|| format!("promotion gate: {}", why.join("; ")))
}

/// The anchor suites on which the drop of mean Rm from the parent is significantly above
/// `max`: the lower bound of the paired bootstrap's 95 % interval exceeds it. Suites are
/// checked in the new version's order; a suite the parent has no result on is skipped (the
/// worker evaluates the parent first, so that happens only if that evaluation was lost).
fn anchor_drops(
    max: f64,
    resamples: u32,
    parent: &[AnchorEval],
    new: &[AnchorEval],
) -> Vec<String> {
    let mut why = Vec::new();
    for n in new {
        let Some(p) = parent.iter().find(|p| p.suite == n.suite) else {
            continue;
        };
        let pair = decode_hits(&p.hits).and_then(|ph| {
            let nh = decode_hits(&n.hits)?;
            paired_bootstrap_drop(&ph, &nh, resamples, suite_seed(&n.suite))
        });
        match pair {
            Ok(d) if d.lo > max => why.push(format!(
                "anchor suite {:?}: mean Rm drop from the parent {:.2} (95 % interval {:.2} to {:.2}, \
                 paired bootstrap over {} samples, {} resamples) > max_anchor_drop {max}",
                n.suite, d.mean, d.lo, d.hi, d.samples, d.resamples
            )),
            Ok(_) => {}
            Err(e) => why.push(format!(
                "anchor suite {:?}: cannot compare with the parent for max_anchor_drop: {e}",
                n.suite
            )),
        }
    }
    why
}

/// Mean over the parent's tasks of (parent's Rm − new version's Rm); `None` without tasks.
fn rm_drop(parent: &VersionRow, new: &NewVersion) -> Option<f64> {
    let drops: Vec<f64> = parent
        .task_evals()
        .filter_map(|p| {
            new.evals
                .iter()
                .find(|e| e.scope == EvalScope::Task && e.task_id == p.task_id)
                .map(|e| p.rm - e.rm)
        })
        .collect();
    (!drops.is_empty()).then(|| drops.iter().sum::<f64>() / drops.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EvalRow;

    fn eval(scope: EvalScope, task: &str, rm: f64) -> EvalRow {
        EvalRow {
            scope,
            task_id: task.into(),
            task_name: task.into(),
            tr1: rm,
            tr5: rm,
            tr10: rm,
            ir1: rm,
            ir5: rm,
            ir10: rm,
            rm,
        }
    }

    fn new_version(avg: Option<f64>, evals: Vec<EvalRow>) -> NewVersion {
        NewVersion {
            parent: Some(1),
            checkpoint_path: "x".into(),
            sha256: "y".into(),
            momentum_syncs: 0,
            momentum_steps: 0,
            bwt: None,
            average_forgetting: avg,
            rejection: None,
            evals,
            forgetting: Vec::new(),
            device: "cpu".into(),
            precision: "fp32".into(),
        }
    }

    fn parent(evals: Vec<EvalRow>) -> VersionRow {
        VersionRow {
            model: "m".into(),
            version: 1,
            parent: None,
            task_id: "a".into(),
            task_name: "a".into(),
            checkpoint_path: "x".into(),
            sha256: "y".into(),
            created_at: chrono::Utc::now(),
            momentum_syncs: 0,
            momentum_steps: 0,
            bwt: None,
            average_forgetting: None,
            rejected_reason: None,
            device: "cpu".into(),
            precision: "fp32".into(),
            evals,
            forgetting: Vec::new(),
            is_head: true,
            anchors: Vec::new(),
        }
    }

    #[test]
    fn empty_policy_passes_everything() {
        let v = new_version(Some(90.0), vec![eval(EvalScope::Union, "", 0.0)]);
        assert_eq!(check(&GatePolicy::default(), &v, None, &[], &[]), None);
    }

    #[test]
    fn each_bound_rejects_only_when_violated_and_is_named() {
        let p = parent(vec![
            eval(EvalScope::Task, "a", 50.0),
            eval(EvalScope::Task, "b", 40.0),
        ]);
        // Drops: a 50→30 (20), b 40→40 (0): mean 10. Union 35. Average forgetting 12.
        let v = new_version(
            Some(12.0),
            vec![
                eval(EvalScope::Task, "a", 30.0),
                eval(EvalScope::Task, "b", 40.0),
                eval(EvalScope::Task, "c", 60.0),
                eval(EvalScope::Union, "", 35.0),
            ],
        );
        let gate = |f: Option<f64>, u: Option<f64>, d: Option<f64>| GatePolicy {
            max_avg_forgetting: f,
            min_union_rm: u,
            max_rm_drop: d,
            ..GatePolicy::default()
        };
        assert_eq!(
            check(
                &gate(Some(12.0), Some(35.0), Some(10.0)),
                &v,
                Some(&p),
                &[],
                &[]
            ),
            None
        );
        let r = check(&gate(Some(11.9), None, None), &v, Some(&p), &[], &[]).unwrap();
        assert!(
            r.contains("max_avg_forgetting 11.9") && r.contains("12.00"),
            "{r}"
        );
        let r = check(&gate(None, Some(35.1), None), &v, Some(&p), &[], &[]).unwrap();
        assert!(r.contains("union Rm 35.00 < min_union_rm 35.1"), "{r}");
        let r = check(&gate(None, None, Some(9.9)), &v, Some(&p), &[], &[]).unwrap();
        assert!(r.contains("drop from the parent on its tasks 10.00"), "{r}");
        let r = check(
            &gate(Some(1.0), Some(99.0), Some(1.0)),
            &v,
            Some(&p),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(r.matches("; ").count(), 2, "{r}");
    }

    #[test]
    fn roots_pass_the_relative_bounds() {
        let v = new_version(None, vec![eval(EvalScope::Task, "a", 10.0)]);
        let g = GatePolicy {
            max_avg_forgetting: Some(0.0),
            max_rm_drop: Some(0.0),
            min_union_rm: None,
            max_anchor_drop: Some(0.0),
            anchor_resamples: None,
        };
        assert_eq!(check(&g, &v, None, &[], &[]), None);
    }

    fn anchor(suite: &str, hits: &[u8]) -> AnchorEval {
        let scores: f64 = hits
            .iter()
            .map(|&h| crate::metrics::anchor::sample_score(h))
            .sum();
        let rm = scores / hits.len() as f64;
        AnchorEval {
            suite: suite.into(),
            samples: hits.len() as i64,
            tr1: rm,
            tr5: rm,
            tr10: rm,
            ir1: rm,
            ir5: rm,
            ir10: rm,
            rm,
            hits: crate::metrics::anchor::encode_hits(hits),
        }
    }

    #[test]
    fn a_significant_anchor_drop_is_refused_with_its_interval_and_noise_passes() {
        let p = parent(vec![eval(EvalScope::Task, "a", 50.0)]);
        let v = new_version(None, vec![eval(EvalScope::Task, "a", 50.0)]);
        let g = GatePolicy {
            max_anchor_drop: Some(5.0),
            ..GatePolicy::default()
        };
        // Parent: every hit on 120 samples. "lost": the child misses everything on half of
        // them (drop 50). "noisy": the child flips one hit bit on every 8th sample either way.
        let base = vec![0x3f_u8; 120];
        let lost: Vec<u8> = (0..120)
            .map(|i| if i % 2 == 0 { 0 } else { 0x3f })
            .collect();
        let mixed: Vec<u8> = (0..120)
            .map(|i| if i % 4 == 0 { 0x15 } else { 0x3f })
            .collect();
        let noisy: Vec<u8> = mixed
            .iter()
            .enumerate()
            .map(|(i, &h)| if i % 8 == 1 { h ^ 1 } else { h })
            .collect();
        let parents = [anchor("held", &base), anchor("mix", &mixed)];
        let children = [anchor("held", &lost), anchor("mix", &noisy)];
        let r = check(&g, &v, Some(&p), &parents, &children).unwrap();
        assert!(
            r.contains("anchor suite \"held\": mean Rm drop from the parent 50.00 (95 % interval"),
            "{r}"
        );
        assert!(r.contains("1000 resamples) > max_anchor_drop 5"), "{r}");
        assert!(!r.contains("\"mix\""), "noise on \"mix\" must pass: {r}");
        assert_eq!(check(&g, &v, Some(&p), &parents, &children), Some(r));
        // The same drop below the bound, and roots, pass.
        let lenient = GatePolicy {
            max_anchor_drop: Some(60.0),
            ..GatePolicy::default()
        };
        assert_eq!(check(&lenient, &v, Some(&p), &parents, &children), None);
        assert_eq!(check(&g, &v, None, &[], &children), None);
    }
}
