//! Anchor suites and a version's results on them (issue #25 §2) as `ctp.v1` messages.
use ctp_api::pb;

use super::timestamp;
use crate::store::{AnchorEval, AnchorSuite};

/// A registered suite; `baseline` only in RegisterAnchorSuite's reply.
pub fn anchor_suite_to_pb(s: &AnchorSuite, baseline: Option<i64>) -> pb::AnchorSuite {
    pb::AnchorSuite {
        model: s.model.clone(),
        name: s.name.clone(),
        samples: s.samples as u64,
        sha256: s.sha256.clone(),
        created_at: Some(timestamp(s.created_at)),
        created_by: s.created_by.clone(),
        baseline_version: baseline,
    }
}

/// A version's result on one suite (the per-sample hits stay in the database).
pub fn anchor_eval_to_pb(a: &AnchorEval) -> pb::AnchorEval {
    pb::AnchorEval {
        suite: a.suite.clone(),
        samples: a.samples as u64,
        tr1: a.tr1,
        tr5: a.tr5,
        tr10: a.tr10,
        ir1: a.ir1,
        ir5: a.ir5,
        ir10: a.ir10,
        rm: a.rm,
    }
}
