//! Quotas per caller (issue #26 §2): how many tasks it may have queued or running, how many
//! bytes of task data it may keep stored, and how many training seconds it may use in any 24
//! hours. A caller is a token's name; without tokens there is one caller, `anonymous`, with
//! `auth.anonymous_quota`. Usage comes from the store ([`Usage`]); this module only judges.
use serde::Serialize;

use crate::config::Quota;

/// The one caller there is without tokens.
pub const ANONYMOUS: &str = "anonymous";

/// What a caller uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Its tasks that are QUEUED or RUNNING.
    pub queued_tasks: u64,
    /// Bytes of its tasks' stored bundles.
    pub stored_bytes: u64,
    /// Training seconds charged to it in the last 24 hours.
    pub training_seconds_day: f64,
}

/// A submission over one of the caller's quotas: names the quota, the use and the limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("quota {quota} of caller {caller:?} exceeded: {detail}")]
pub struct Exceeded {
    pub caller: String,
    /// `max_queued_tasks`, `max_stored_bytes` or `max_training_seconds_per_day`.
    pub quota: &'static str,
    pub detail: String,
    /// The use the submission would have reached, and the limit (for webhooks and metrics).
    pub used: f64,
    pub limit: f64,
}

fn exceeded(caller: &str, quota: &'static str, detail: String, used: f64, limit: f64) -> Exceeded {
    Exceeded {
        caller: caller.to_owned(),
        quota,
        detail,
        used,
        limit,
    }
}

/// Whether `caller` may submit one more task of `bytes` (0 before the upload is known).
///
/// # Errors
/// The first quota the submission would cross.
pub fn check_submit(caller: &str, q: &Quota, u: &Usage, bytes: u64) -> Result<(), Exceeded> {
    if let Some(max) = q.max_queued_tasks {
        if u.queued_tasks + 1 > max {
            return Err(exceeded(
                caller,
                "max_queued_tasks",
                format!(
                    "{} tasks queued or running, the limit is {max}",
                    u.queued_tasks
                ),
                u.queued_tasks as f64,
                max as f64,
            ));
        }
    }
    if let Some(max) = q.max_training_seconds_per_day {
        if u.training_seconds_day >= max {
            return Err(exceeded(
                caller,
                "max_training_seconds_per_day",
                format!(
                    "{:.1} training seconds used in the last 24 h, the limit is {max}",
                    u.training_seconds_day
                ),
                u.training_seconds_day,
                max,
            ));
        }
    }
    check_bytes(caller, q, u, bytes, None)
}

/// Whether `bytes` more of task data fit the caller's byte quota; `sample` names the sample
/// that would cross it while an upload streams.
///
/// # Errors
/// `max_stored_bytes` would be crossed.
pub fn check_bytes(
    caller: &str,
    q: &Quota,
    u: &Usage,
    bytes: u64,
    sample: Option<usize>,
) -> Result<(), Exceeded> {
    let Some(max) = q.max_stored_bytes else {
        return Ok(());
    };
    let total = u.stored_bytes.saturating_add(bytes);
    if total <= max {
        return Ok(());
    }
    let at = sample.map_or(String::new(), |n| {
        format!("sample {n} brings this upload to ")
    });
    Err(exceeded(
        caller,
        "max_stored_bytes",
        format!(
            "{at}{bytes} bytes on top of {} stored = {total}, the limit is {max}; nothing of \
             this upload was kept",
            u.stored_bytes
        ),
        total as f64,
        max as f64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_quota_names_itself_the_use_and_the_limit() {
        let q = Quota {
            max_queued_tasks: Some(2),
            max_stored_bytes: Some(1000),
            max_training_seconds_per_day: Some(60.0),
        };
        let ok = Usage {
            queued_tasks: 1,
            stored_bytes: 400,
            training_seconds_day: 59.0,
        };
        assert_eq!(check_submit("t", &q, &ok, 600), Ok(()));
        let e = check_submit(
            "t",
            &q,
            &Usage {
                queued_tasks: 2,
                ..ok
            },
            0,
        )
        .unwrap_err();
        assert_eq!(e.quota, "max_queued_tasks");
        assert_eq!(
            e.to_string(),
            "quota max_queued_tasks of caller \"t\" exceeded: 2 tasks queued or running, the limit is 2"
        );
        let e = check_submit("t", &q, &ok, 601).unwrap_err();
        assert_eq!(
            (e.quota, e.used, e.limit),
            ("max_stored_bytes", 1001.0, 1000.0)
        );
        let e = check_bytes("t", &q, &ok, 700, Some(7)).unwrap_err();
        assert!(
            e.detail
                .starts_with("sample 7 brings this upload to 700 bytes on top of 400"),
            "{e}"
        );
        let e = check_submit(
            "t",
            &q,
            &Usage {
                training_seconds_day: 60.0,
                ..ok
            },
            0,
        )
        .unwrap_err();
        assert_eq!(e.quota, "max_training_seconds_per_day");
        assert_eq!(
            check_submit(
                "t",
                &Quota::default(),
                &Usage {
                    queued_tasks: 99,
                    ..ok
                },
                1 << 40
            ),
            Ok(())
        );
    }
}
