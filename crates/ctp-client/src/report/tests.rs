//! Report rendering from synthetic data: no daemon needed.
use super::*;
use ctp_api::pb::task_event::Event;

fn eval(id: &str, rm: f64) -> pb::TaskEval {
    pb::TaskEval {
        task_id: id.into(),
        task_name: format!("task <{id}>"),
        rm,
        ..Default::default()
    }
}

fn version(n: i64, parent: Option<i64>, evals: Vec<pb::TaskEval>, head: bool) -> pb::Version {
    pb::Version {
        model: "emoji".into(),
        version: n,
        parent,
        task_id: format!("t{n}"),
        task_name: format!("task <t{n}>"),
        union_eval: evals.last().cloned(),
        evals,
        is_head: head,
        average_forgetting: parent.map(|_| 3.5),
        bwt: parent.map(|_| 2.0),
        momentum_syncs: 4,
        momentum_steps: 20,
        ..Default::default()
    }
}

fn events(total: u64) -> Vec<pb::TaskEvent> {
    let mut out = vec![pb::TaskEvent {
        seq: 0,
        time: None,
        event: Some(Event::Snapshot(pb::Task::default())),
    }];
    for step in 1..=total {
        let mut p = pb::Progress {
            step,
            total_steps: total,
            ..Default::default()
        };
        p.losses.insert("total".into(), 3.0 / step as f64);
        p.losses.insert("itc".into(), 2.0 / step as f64);
        out.push(pb::TaskEvent {
            seq: step,
            time: None,
            event: Some(Event::Progress(p)),
        });
        if step % 4 == 0 {
            out.push(pb::TaskEvent {
                seq: step,
                time: None,
                event: Some(Event::Sync(pb::MomentumSync {
                    step,
                    k: 4,
                    drift: 0.01 * step as f64,
                    threshold: 0.02,
                    duration_ms: 1.0,
                })),
            });
        }
    }
    out
}

/// Three versions; v3 was trained from v1 after a rollback, leaving v2 off the lineage.
fn sample_data() -> ReportData {
    let mut rejected = version(2, Some(1), vec![eval("t1", 40.0), eval("t2", 70.0)], false);
    rejected.state = pb::VersionState::Rejected as i32;
    rejected.rejection_reason =
        "promotion gate: average forgetting 40.00 > max_avg_forgetting 20".into();
    let vs = vec![
        rejected,
        version(1, None, vec![eval("t1", 80.0)], false),
        version(3, Some(1), vec![eval("t1", 75.0), eval("t3", 65.0)], true),
    ];
    let (versions, lineage_len) = data::lineage_order(vs);
    let histories = versions
        .iter()
        .map(|v| {
            let mut h = TaskHistory::from_events(&v.task_id, &v.task_name, &events(12));
            h.version = Some(v.version);
            h
        })
        .collect();
    ReportData {
        model: "emoji".into(),
        generated_at: "2026-01-01T00:00:00Z".into(),
        versions,
        lineage_len,
        histories,
        other_tasks: vec![pb::Task {
            id: "t9".into(),
            name: "broken".into(),
            state: pb::TaskState::Failed as i32,
            error: "NaN loss".into(),
            ..Default::default()
        }],
    }
}

#[test]
fn lineage_order_and_matrix() {
    let d = sample_data();
    let order: Vec<i64> = d.versions.iter().map(|v| v.version).collect();
    assert_eq!(order, vec![1, 3, 2]);
    assert_eq!(d.lineage_len, 2);
    assert_eq!(d.row_labels(), vec!["v1", "v3*", "v2†✗"]);
    let cols: Vec<String> = d.columns().into_iter().map(|c| c.0).collect();
    assert_eq!(cols, vec!["t1", "t3", "t2"]);
    assert_eq!(
        d.matrix(),
        vec![
            vec![Some(80.0), None, None],
            vec![Some(75.0), Some(65.0), None],
            vec![Some(40.0), None, Some(70.0)],
        ]
    );
    let offsets: Vec<u64> = d.lineage_histories().iter().map(|(s, _)| *s).collect();
    assert_eq!(offsets, vec![0, 12]);
    assert_eq!(d.loss_terms(), vec!["total", "itc"]);
}

#[test]
fn history_from_events_dedups_resumed_steps() {
    let mut evs = events(8);
    // A resumed task replays step 5 with new values.
    let mut p = pb::Progress {
        step: 5,
        total_steps: 8,
        ..Default::default()
    };
    p.losses.insert("total".into(), 9.0);
    evs.push(pb::TaskEvent {
        seq: 99,
        time: None,
        event: Some(Event::Progress(p)),
    });
    evs.push(pb::TaskEvent {
        seq: 100,
        time: None,
        event: Some(Event::Terminal(pb::Terminal {
            state: pb::TaskState::Succeeded as i32,
            error: String::new(),
            produced_version: Some(4),
            rejection_reason: None,
        })),
    });
    let h = TaskHistory::from_events("t", "n", &evs);
    assert_eq!(h.progress.len(), 8);
    assert_eq!(h.progress[4].losses["total"], 9.0);
    assert_eq!(h.syncs.len(), 2);
    assert_eq!((h.total_steps, h.version), (8, Some(4)));
}

fn check_output(dir: &Path, written: &Written) {
    assert!(written.errors.is_empty(), "{:?}", written.errors);
    assert_eq!(written.charts.len(), 4);
    for name in CHART_FILES {
        let img = image::open(dir.join(name)).expect("chart is a readable PNG");
        assert!(img.width() > 50 && img.height() > 50);
    }
    let page = std::fs::read_to_string(&written.index).unwrap();
    for name in CHART_FILES {
        assert!(
            page.contains(&format!("src=\"{name}\"")),
            "{name} not linked"
        );
    }
    assert!(page.contains(">80.0</td>") && page.contains(">65.0</td>"));
    assert!(page.contains("task &lt;t3&gt;"), "names are escaped");
    assert!(page.contains("NaN loss"));
    assert!(
        page.contains("REJECTED: promotion gate: average forgetting 40.00"),
        "gate outcome shown"
    );
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<script"));
}

#[test]
fn renders_report_without_font() {
    let dir = tempfile::tempdir().unwrap();
    let written = write(&sample_data(), dir.path(), false).unwrap();
    check_output(dir.path(), &written);
    assert!(written.font.is_none());
    let page = std::fs::read_to_string(&written.index).unwrap();
    assert!(page.contains("No TrueType font was found"));
}

#[test]
fn renders_report_with_font_when_available() {
    let dir = tempfile::tempdir().unwrap();
    let written = write(&sample_data(), dir.path(), true).unwrap();
    check_output(dir.path(), &written);
    // With a font the heatmap carries annotations, so it differs from the unlabeled one.
    if written.font.is_some() {
        let plain = tempfile::tempdir().unwrap();
        write(&sample_data(), plain.path(), false).unwrap();
        let a = std::fs::read(dir.path().join("accuracy.png")).unwrap();
        let b = std::fs::read(plain.path().join("accuracy.png")).unwrap();
        assert_ne!(a, b);
    }
}

#[test]
fn renders_empty_histories() {
    let mut d = sample_data();
    for h in &mut d.histories {
        h.progress.clear();
        h.syncs.clear();
        h.total_steps = 0;
    }
    let dir = tempfile::tempdir().unwrap();
    let written = write(&d, dir.path(), false).unwrap();
    assert!(written.errors.is_empty(), "{:?}", written.errors);
}

#[test]
fn the_same_charts_render_as_svg_for_the_dashboard() {
    let data = sample_data();
    let text = font::init().is_some();
    for chart in charts::Chart::ALL {
        let svg = chart.svg(&data, text).unwrap();
        assert!(svg.starts_with("<svg"), "{}: {}", chart.name(), &svg[..40]);
        let (w, _) = chart.size(&data, text);
        assert!(svg.contains(&format!("width=\"{w}\"")), "{}", chart.name());
    }
    if text {
        let heatmap = charts::Chart::Heatmap.svg(&data, true).unwrap();
        assert!(heatmap.contains("<text"), "labels stay text in SVG");
    }
}
