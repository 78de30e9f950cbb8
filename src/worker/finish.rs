//! Finishing a task: evaluate the new version on its lineage and on the model's anchor suites,
//! compute forgetting and BWT, commit everything in one transaction, announce the terminal
//! event.
use std::collections::BTreeMap;
use std::sync::Arc;

use super::lease::Fence;
use super::{load_split, RunError};
use crate::metrics::{self, LineageRow};
use crate::state::AppState;
use crate::store::{EvalRow, EvalScope, NewVersion, TaskRow, TaskState, VersionRow};
use crate::task::{StoredEvent, TaskSettings};
use crate::trainer::{EvalSet, VersionRef};

fn eval_row(scope: EvalScope, task_id: &str, task_name: &str, r: &metrics::Retrieval) -> EvalRow {
    EvalRow {
        scope,
        task_id: task_id.into(),
        task_name: task_name.into(),
        tr1: r.tr1,
        tr5: r.tr5,
        tr10: r.tr10,
        ir1: r.ir1,
        ir5: r.ir5,
        ir10: r.ir10,
        rm: r.rm,
    }
}

/// Evaluates the new version on every task of its lineage, computes forgetting and BWT against
/// the ancestors' rows, and commits the version.
#[allow(clippy::too_many_arguments)]
pub(super) async fn finish(
    state: &Arc<AppState>,
    fence: &Fence,
    task: &TaskRow,
    settings: &TaskSettings,
    lineage: &[VersionRow],
    parent: Option<&VersionRow>,
    version: VersionRef,
    syncs: i64,
    momentum_steps: i64,
) -> Result<(), RunError> {
    let model_cfg = settings.model_config();
    let size = model_cfg.image_size as u32;
    // Tasks seen by the new version: each ancestor's task in order, then this one.
    let mut seen: Vec<(String, String, String)> = Vec::new(); // (task id, name, bundle path)
    for v in lineage {
        let t = fence
            .call("reading a lineage task", || {
                state.store.get_task(&v.task_id)
            })
            .await?;
        seen.push((t.id, t.name, t.data_dir));
    }
    seen.push((task.id.clone(), task.name.clone(), task.data_dir.clone()));
    let mut sets = Vec::new();
    for (i, (_, _, path)) in seen.iter().enumerate() {
        let samples = load_split(state, fence, path, true, size).await?;
        sets.push(EvalSet {
            task_id: i as i64,
            samples,
        });
    }
    let report = state
        .engine
        .evaluate(model_cfg.clone(), version.clone(), sets)
        .await?;
    let anchors =
        super::anchors::for_new_version(state, fence, &task.model, &model_cfg, &version, parent)
            .await?;
    let mut evals: Vec<EvalRow> = report
        .per_task
        .iter()
        .map(|e| {
            let (id, name, _) = &seen[e.task_id as usize];
            eval_row(EvalScope::Task, id, name, &e.retrieval)
        })
        .collect();
    if let Some(u) = &report.union {
        evals.push(eval_row(EvalScope::Union, "", "union of seen tasks", u));
    }
    // Accuracy-matrix rows of the lineage, tasks indexed by their position in `seen`.
    let index: BTreeMap<&str, i64> = seen
        .iter()
        .enumerate()
        .map(|(i, (id, _, _))| (id.as_str(), i as i64))
        .collect();
    let row_of = |v: i64, t: i64, ev: &mut dyn Iterator<Item = &EvalRow>| LineageRow {
        version: v,
        task: t,
        rm: ev
            .filter_map(|e| index.get(e.task_id.as_str()).map(|&i| (i, e.rm)))
            .collect(),
    };
    let mut rows: Vec<LineageRow> = lineage
        .iter()
        .enumerate()
        .map(|(i, v)| row_of(v.version, i as i64, &mut v.task_evals()))
        .collect();
    rows.push(row_of(
        i64::MAX,
        seen.len() as i64 - 1,
        &mut evals.iter().filter(|e| e.scope == EvalScope::Task),
    ));
    let f = metrics::forgetting_max(&rows);
    let forgetting = f
        .per_task
        .iter()
        .map(|(i, v)| (seen[*i as usize].0.clone(), *v))
        .collect();
    let mut new = NewVersion {
        parent: parent.map(|p| p.version),
        checkpoint_path: state.data.to_stored(&version.path),
        sha256: version.sha256.clone(),
        momentum_syncs: syncs,
        momentum_steps,
        bwt: metrics::bwt_paper(&rows),
        average_forgetting: f.average,
        rejection: None,
        evals,
        forgetting,
        device: state.engine.device.clone(),
        precision: state.engine.precision_for(settings.preset.as_str()),
    };
    // Where every daemon can read it (object storage) before the row names it.
    fence
        .objects("storing the version checkpoint", || {
            state.objects.publish(&version.path, &new.sha256)
        })
        .await?;
    let policy = state.store.gate(&task.model).await?;
    new.rejection = super::gate::check(&policy, &new, parent, &anchors.parent, &anchors.new);
    let (local, sha) = (version.path.clone(), version.sha256.clone());
    let v = fence.finish(new).await?;
    state.objects.drop_local_copy(&local, &sha);
    // Idempotent and outside the commit: if this fails (or the daemon dies first), the next
    // version evaluates this one on the suites it lacks (`anchors::for_new_version`).
    if let Err(e) = state
        .store
        .record_anchor_results(&task.model, v.version, &anchors.new)
        .await
    {
        tracing::warn!(task_id = %task.id, version = v.version, error.message = %e,
            "Storing the version's anchor results failed");
    }
    if let Some(avg) = v.average_forgetting {
        state.metrics.observe_forgetting(avg);
    }
    let ev = StoredEvent::Terminal {
        state: TaskState::Succeeded.as_str().into(),
        error: String::new(),
        produced_version: Some(v.version),
        rejection: v.rejected_reason.clone(),
    };
    fence.emit(ev).await?;
    match &v.rejected_reason {
        None => tracing::info!(task_id = %task.id, version = v.version, "Task succeeded"),
        Some(why) => tracing::warn!(
            task_id = %task.id,
            version = v.version,
            reason = %why,
            "Task succeeded; the promotion gate rejected its version"
        ),
    }
    Ok(())
}
