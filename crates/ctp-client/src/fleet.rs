//! Sharing a fleet: `ctpctl priority TASK LEVEL` (admin: a queued task's priority) and
//! `ctpctl quota` (the caller's quotas and use).
use serde_json::json;

use super::args::PriorityArgs;
use super::conn::Client;
use super::error::CliResult;
use super::output::{print_json, state_name, task_json};
use ctp_api::json::priority_name;
use ctp_api::pb;

/// `ctpctl priority TASK low|normal|high`.
pub async fn priority(client: &mut Client, a: &PriorityArgs, json: bool) -> CliResult {
    let task = client
        .set_task_priority(pb::SetTaskPriorityRequest {
            task_id: a.task_id.clone(),
            priority: a.priority.to_pb() as i32,
        })
        .await?
        .into_inner();
    if json {
        print_json(&task_json(&task));
    } else {
        println!(
            "task {}: {}, priority {}",
            task.id,
            state_name(task.state),
            priority_name(task.priority)
        );
    }
    Ok(())
}

/// `ctpctl quota`.
pub async fn quota(client: &mut Client, json: bool) -> CliResult {
    let q = client.get_quota(pb::GetQuotaRequest {}).await?.into_inner();
    if json {
        let item = |i: &Option<pb::QuotaItem>| {
            let i = (*i).unwrap_or_default();
            json!({"used": i.used, "limit": i.limit})
        };
        print_json(&json!({
            "caller": q.caller,
            "queued_tasks": item(&q.queued_tasks),
            "stored_bytes": item(&q.stored_bytes),
            "training_seconds_per_day": item(&q.training_seconds_per_day),
        }));
    } else {
        print!("{}", describe(&q));
    }
    Ok(())
}

/// One line per quota: `name: used / limit`.
pub fn describe(q: &pb::QuotaUsage) -> String {
    let mut s = format!("caller {}\n", q.caller);
    for (name, item, unit) in [
        ("queued or running tasks", &q.queued_tasks, ""),
        ("stored task data", &q.stored_bytes, " bytes"),
        (
            "training in the last 24 h",
            &q.training_seconds_per_day,
            " s",
        ),
    ] {
        let i = (*item).unwrap_or_default();
        let limit = i
            .limit
            .map_or("unlimited".to_string(), |l| format!("{l}{unit}"));
        s.push_str(&format!("{name}: {}{unit} of {limit}\n", i.used));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_says_use_and_limit_per_quota() {
        let q = pb::QuotaUsage {
            caller: "team-a".into(),
            queued_tasks: Some(pb::QuotaItem {
                used: 2.0,
                limit: Some(3.0),
            }),
            stored_bytes: Some(pb::QuotaItem {
                used: 100.0,
                limit: None,
            }),
            training_seconds_per_day: None,
        };
        assert_eq!(
            describe(&q),
            "caller team-a\nqueued or running tasks: 2 of 3\nstored task data: 100 bytes of \
             unlimited\ntraining in the last 24 h: 0 s of unlimited\n"
        );
    }
}
