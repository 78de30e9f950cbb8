//! Listing and managing tasks and versions: `tasks`, `cancel`, `versions`, `rollback`.
use serde_json::{json, Value};

use super::args::{RollbackArgs, StateArg, TasksArgs};
use super::conn::Client;
use super::error::CliResult;
use super::output::{num, print_json, state_name, table, task_json, time, version_json};
use super::report::data::{task_columns, UNION_RM_NOTE};
use ctp_api::json::priority_name;
use ctp_api::pb;

/// Page size for listings; the daemon caps it at 1000.
const PAGE: u32 = 500;

fn state_pb(s: StateArg) -> pb::TaskState {
    match s {
        StateArg::Queued => pb::TaskState::Queued,
        StateArg::Running => pb::TaskState::Running,
        StateArg::Succeeded => pb::TaskState::Succeeded,
        StateArg::Failed => pb::TaskState::Failed,
        StateArg::Cancelled => pb::TaskState::Cancelled,
    }
}

/// Every task matching the filters, following `next_page_token` to the end.
pub async fn list_tasks(
    client: &mut Client,
    model: Option<String>,
    state: pb::TaskState,
) -> CliResult<Vec<pb::Task>> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_tasks(pb::ListTasksRequest {
                model: model.clone(),
                state: state as i32,
                page_size: PAGE,
                page_token: token,
            })
            .await?
            .into_inner();
        out.extend(page.tasks);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// Every version of `model`, oldest first.
pub async fn list_versions(client: &mut Client, model: &str) -> CliResult<Vec<pb::Version>> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_versions(pb::ListVersionsRequest {
                model: model.to_string(),
                page_size: PAGE,
                page_token: token,
            })
            .await?
            .into_inner();
        out.extend(page.versions);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

fn progress_cell(t: &pb::Task) -> String {
    match &t.progress {
        Some(p) if p.total_steps > 0 => format!("{}/{} ({:.0}%)", p.step, p.total_steps, p.percent),
        _ => "-".into(),
    }
}

/// The `tasks` table.
pub fn tasks_table(tasks: &[pb::Task]) -> String {
    let header = [
        "ID",
        "MODEL",
        "NAME",
        "STATE",
        "PRIORITY",
        "PROGRESS",
        "VERSION",
        "TRAIN/EVAL",
        "CREATED",
    ]
    .map(String::from);
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let mut state = state_name(t.state);
            if t.cancel_requested && !super::output::is_terminal(t.state) {
                state.push_str(" (cancelling)");
            }
            vec![
                t.id.clone(),
                t.model.clone(),
                t.name.clone(),
                state,
                match t.preemptions {
                    0 => priority_name(t.priority).to_string(),
                    n => format!("{} (preempted {n}x)", priority_name(t.priority)),
                },
                progress_cell(t),
                t.produced_version
                    .map(|v| v.to_string())
                    .unwrap_or("-".into()),
                format!("{}/{}", t.n_train, t.n_eval),
                time(&t.created_at),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// `ctpctl tasks`.
pub async fn tasks(client: &mut Client, args: &TasksArgs, json: bool) -> CliResult {
    let state = args
        .state
        .map(state_pb)
        .unwrap_or(pb::TaskState::Unspecified);
    let list = list_tasks(client, args.model.clone(), state).await?;
    if json {
        print_json(&Value::Array(list.iter().map(task_json).collect()));
    } else if list.is_empty() {
        eprintln!("no tasks");
    } else {
        println!("{}", tasks_table(&list));
    }
    Ok(())
}

/// `ctpctl cancel`.
pub async fn cancel(client: &mut Client, task_id: &str, json: bool) -> CliResult {
    let task = client
        .cancel_task(pb::CancelTaskRequest {
            task_id: task_id.to_string(),
        })
        .await?
        .into_inner();
    if json {
        print_json(&task_json(&task));
    } else if task.cancel_requested && !super::output::is_terminal(task.state) {
        println!(
            "task {}: cancel requested; it stops at the next step",
            task.id
        );
    } else {
        println!("task {}: {}", task.id, state_name(task.state));
    }
    Ok(())
}

fn rejected(v: &pb::Version) -> bool {
    v.state == pb::VersionState::Rejected as i32
}

/// The `versions` table: one column per task seen on any lineage (`T1..Tn`, with a legend
/// below, since task names are long), blank where a version never saw that task. Columns are
/// in [`task_columns`] order, the same as the report's.
pub fn versions_table(versions: &[pb::Version]) -> String {
    let tasks = task_columns(versions);
    let mut header: Vec<String> = ["VERSION", "PARENT", "TASK"].map(String::from).to_vec();
    header.extend((1..=tasks.len()).map(|i| format!("Rm T{i}")));
    let suites = super::anchors::anchor_columns(versions);
    header.extend(suites.iter().map(|s| format!("ANCHOR {s}")));
    header.extend(["UNION Rm", "AVG FORGET", "BWT", "SYNCS/STEPS", "GATE"].map(String::from));
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            let mut row = vec![
                format!("{}{}", v.version, if v.is_head { " *" } else { "" }),
                v.parent.map(|p| p.to_string()).unwrap_or("-".into()),
                v.task_name.clone(),
            ];
            for (id, _) in &tasks {
                let rm = v.evals.iter().find(|e| e.task_id == *id).map(|e| e.rm);
                row.push(rm.map(|x| format!("{x:.1}")).unwrap_or_default());
            }
            for s in &suites {
                row.push(num(super::anchors::anchor_rm(v, s), 1));
            }
            row.push(num(v.union_eval.as_ref().map(|e| e.rm), 1));
            row.push(num(v.average_forgetting, 2));
            row.push(num(v.bwt, 2));
            row.push(format!("{}/{}", v.momentum_syncs, v.momentum_steps));
            row.push(if rejected(v) { "REJECTED" } else { "" }.into());
            row
        })
        .collect();
    let mut out = table(&header, &rows);
    out.push_str("\n\n* = head\n");
    out.push_str(UNION_RM_NOTE);
    for v in versions.iter().filter(|v| rejected(v)) {
        out.push_str(&format!(
            "\nversion {} REJECTED: {}",
            v.version, v.rejection_reason
        ));
    }
    for (i, (id, name)) in tasks.iter().enumerate() {
        out.push_str(&format!("\nT{}: {name} ({id})", i + 1));
    }
    out
}

/// `ctpctl versions`.
pub async fn versions(client: &mut Client, model: &str, json: bool) -> CliResult {
    let list = list_versions(client, model).await?;
    if json {
        print_json(&Value::Array(list.iter().map(version_json).collect()));
    } else if list.is_empty() {
        eprintln!("model {model} has no versions yet");
    } else {
        println!("{}", versions_table(&list));
    }
    Ok(())
}

/// `ctpctl rollback`.
pub async fn rollback(client: &mut Client, args: &RollbackArgs, json: bool) -> CliResult {
    let resp = client
        .rollback(pb::RollbackRequest {
            model: args.model.clone(),
            version: args.to,
            expected_head: args.expected_head,
            reason: args.reason.clone(),
        })
        .await?
        .into_inner();
    let change = resp.change.unwrap_or_default();
    if json {
        print_json(&json!({
            "head": resp.head.as_ref().map(version_json),
            "change": {
                "from": change.from, "to": change.to, "at": time(&change.at),
                "who": change.who, "reason": change.reason,
            },
        }));
    } else {
        let from = change.from.map(|v| v.to_string()).unwrap_or("none".into());
        println!(
            "{}: head moved from version {from} to {}",
            args.model, change.to
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(id: &str, rm: f64) -> pb::TaskEval {
        pb::TaskEval {
            task_id: id.into(),
            task_name: format!("name-{id}"),
            rm,
            ..Default::default()
        }
    }

    #[test]
    fn versions_table_has_task_columns_and_head_marker() {
        let v1 = pb::Version {
            version: 1,
            task_name: "smileys".into(),
            evals: vec![eval("a", 50.0)],
            union_eval: Some(eval("a", 50.0)),
            momentum_syncs: 3,
            momentum_steps: 10,
            ..Default::default()
        };
        let v2 = pb::Version {
            version: 2,
            parent: Some(1),
            task_name: "people".into(),
            evals: vec![eval("a", 40.0), eval("b", 60.0)],
            union_eval: Some(eval("b", 45.5)),
            average_forgetting: Some(10.0),
            bwt: Some(10.0),
            is_head: true,
            ..Default::default()
        };
        let v3 = pb::Version {
            version: 3,
            parent: Some(2),
            task_name: "flags".into(),
            state: pb::VersionState::Rejected as i32,
            rejection_reason: "promotion gate: union Rm 4.00 < min_union_rm 10".into(),
            ..Default::default()
        };
        let t = versions_table(&[v1, v2, v3]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("VERSION  PARENT  TASK"), "{t}");
        assert!(
            lines[0].contains("Rm T1  Rm T2  UNION Rm  AVG FORGET  BWT"),
            "{t}"
        );
        assert!(
            lines[0].ends_with("SYNCS/STEPS  GATE") && lines[1].trim_end().ends_with("3/10"),
            "{t}"
        );
        assert!(
            lines[3].starts_with("3 ") && lines[3].ends_with("REJECTED"),
            "{t}"
        );
        assert!(
            t.contains("version 3 REJECTED: promotion gate: union Rm 4.00 < min_union_rm 10"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("1        -       smileys  50.0"),
            "{t}"
        );
        assert!(
            lines[2].starts_with("2 *      1       people   40.0   60.0   45.5"),
            "{t}"
        );
        assert!(t.contains("T2: name-b (b)"), "{t}");
    }

    /// The demo's case: version 2 (task b, bad lr) was rolled back, version 3 retrained b from
    /// version 1. The table and the report name the same task T2: the one on the head's
    /// lineage (b2), not the first by version number (b1).
    #[test]
    fn versions_table_and_report_share_one_column_order() {
        let v = |n: i64, parent: Option<i64>, evals: Vec<pb::TaskEval>, head: bool| pb::Version {
            version: n,
            parent,
            task_name: format!("task{n}"),
            evals,
            is_head: head,
            ..Default::default()
        };
        let vs = vec![
            v(1, None, vec![eval("a", 50.0)], false),
            v(2, Some(1), vec![eval("a", 1.0), eval("b1", 2.0)], false),
            v(3, Some(1), vec![eval("a", 40.0), eval("b2", 60.0)], true),
        ];
        let ids: Vec<String> = task_columns(&vs).into_iter().map(|c| c.0).collect();
        assert_eq!(ids, ["a", "b2", "b1"]);
        let (ordered, lineage_len) = crate::report::data::lineage_order(vs.clone());
        let report = crate::report::data::ReportData {
            versions: ordered,
            lineage_len,
            ..Default::default()
        };
        assert_eq!(report.columns(), task_columns(&vs));
        let t = versions_table(&vs);
        assert!(
            t.contains("T2: name-b2 (b2)") && t.contains("T3: name-b1 (b1)"),
            "{t}"
        );
        // Row 3 (version 3) has its b2 score under T2.
        let row3 = t.lines().find(|l| l.starts_with("3 *")).unwrap();
        assert!(row3.contains("40.0   60.0"), "{t}");
        assert!(t.contains("UNION Rm = "), "{t}");
    }

    #[test]
    fn tasks_table_rows() {
        let t = pb::Task {
            id: "id1".into(),
            model: "m".into(),
            name: "n".into(),
            state: pb::TaskState::Running as i32,
            cancel_requested: true,
            priority: pb::TaskPriority::High as i32,
            preemptions: 2,
            progress: Some(pb::Progress {
                step: 5,
                total_steps: 10,
                percent: 50.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        let out = tasks_table(&[t]);
        assert!(
            out.contains("RUNNING (cancelling)  high (preempted 2x)  5/10 (50%)"),
            "{out}"
        );
    }
}
