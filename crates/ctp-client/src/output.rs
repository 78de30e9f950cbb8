//! Rendering API messages for people (short state names, times, tables) and for `--json`.
//!
//! The JSON form of API messages lives in [`ctp_api::json`], shared with the dashboard.
use serde_json::Value;

pub use ctp_api::json::{
    eval_json, event_json, is_terminal, progress_json, settings_json, state_name, task_json, time,
    version_json,
};

/// Formats an optional number with `digits` decimals, or `-`.
pub fn num(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// Left-aligned text table with a header row; columns sized to their widest cell.
pub fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate().take(cols) {
            if i + 1 == cols {
                s.push_str(cell);
            } else {
                let pad = width[i] - cell.chars().count();
                s.push_str(cell);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header);
    for row in rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

/// Prints JSON to stdout (pretty for single objects: people read `--json` too).
pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values serialize")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctp_api::pb;

    #[test]
    fn names_times_tables() {
        assert_eq!(state_name(pb::TaskState::Succeeded as i32), "SUCCEEDED");
        assert_eq!(state_name(42), "STATE_42");
        assert!(is_terminal(pb::TaskState::Cancelled as i32));
        assert!(!is_terminal(pb::TaskState::Running as i32));
        let ts = Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        });
        assert_eq!(time(&ts), "2023-11-14T22:13:20Z");
        let t = table(
            &["A".into(), "BB".into()],
            &[vec!["xxx".into(), "y".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y");
        let ev = pb::TaskEvent {
            seq: 3,
            time: None,
            event: Some(pb::task_event::Event::Log(pb::Log {
                message: "hi".into(),
            })),
        };
        assert_eq!(event_json(&ev)["log"]["message"], "hi");
        assert_eq!(event_json(&ev)["type"], "log");
    }
}
