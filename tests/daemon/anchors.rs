//! Issue #25 §2 through the daemon: an anchor suite is registered (checked like an upload,
//! names not reused), the head is evaluated on it right away, every new version gets results
//! (GetVersion, ListVersions, `ctpctl versions`), and the gate's max_anchor_drop refuses a
//! version that clearly loses on the suite (the interval in the reason, the same decision when
//! the same task runs again) while a version whose difference is noise passes.
use std::time::Duration;

use ctp_api::pb;
use tonic::Code;

use crate::helpers::shapes::COLORS;
use crate::helpers::*;

/// The first task's 16 squares (its train and eval samples), every split unset: a suite whose
/// captions match what the first version learned, so a later version can lose on it.
fn suite_samples() -> Vec<pb::Sample> {
    let mut s = shape_samples(0);
    for x in &mut s {
        x.split = pb::Split::Unspecified as i32;
    }
    s
}

/// The squares of the first task with every caption naming another colour: data that
/// conflicts with what the suite asks.
fn conflicting_squares() -> Vec<pb::Sample> {
    let mut s = shape_samples(0);
    for (i, x) in s.iter_mut().enumerate() {
        let (wrong, _) = COLORS[(i / 2 + 3) % COLORS.len()];
        let size = if i % 2 == 0 { "small" } else { "large" };
        x.caption = format!("a {size} {wrong} square").into_bytes();
    }
    s
}

fn suite_requests(
    model: &str,
    name: &str,
    samples: Vec<pb::Sample>,
) -> Vec<pb::RegisterAnchorSuiteRequest> {
    use pb::register_anchor_suite_request::Msg;
    let mut v = vec![pb::RegisterAnchorSuiteRequest {
        msg: Some(Msg::Header(pb::AnchorSuiteHeader {
            model: model.into(),
            name: name.into(),
            ..Default::default()
        })),
    }];
    for c in samples.chunks(7) {
        v.push(pb::RegisterAnchorSuiteRequest {
            msg: Some(Msg::Chunk(pb::SampleChunk {
                samples: c.to_vec(),
            })),
        });
    }
    v
}

fn with_lr(mut h: pb::TaskHeader, lr: f64) -> pb::TaskHeader {
    h.settings.as_mut().unwrap().learning_rate = Some(lr);
    h
}

async fn version(c: &mut Client, v: i64) -> pb::Version {
    c.get_version(pb::GetVersionRequest {
        model: "m".into(),
        version: Some(v),
    })
    .await
    .unwrap()
    .into_inner()
}

type Client =
    ctp_api::pb::continual_trainer_client::ContinualTrainerClient<tonic::transport::Channel>;

async fn run(c: &mut Client, h: pb::TaskHeader, samples: Vec<pb::Sample>) -> pb::Terminal {
    let t = submit(c, h, samples).await.unwrap();
    let t = terminal(&watch_all(c, &t.id, 0).await);
    assert_eq!(t.state, pb::TaskState::Succeeded as i32, "{}", t.error);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchor_suites_are_evaluated_and_gate_significant_drops() {
    let app = spawn_app(Db::Sqlite).await;
    let mut c = app.client.clone();
    run(&mut c, header("m", "squares", 40), shape_samples(0)).await;

    // Checked like an upload: a training split is refused naming the sample; nothing kept.
    let mut bad = suite_samples();
    bad[9].split = pb::Split::Train as i32;
    let e = c
        .register_anchor_suite(tokio_stream::iter(suite_requests("m", "held", bad)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("sample 9: split must be unset or SPLIT_EVAL"),
        "{}",
        e.message()
    );

    let s = c
        .register_anchor_suite(tokio_stream::iter(suite_requests(
            "m",
            "held",
            suite_samples(),
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((s.samples, s.baseline_version), (16, Some(1)));
    let again = c
        .register_anchor_suite(tokio_stream::iter(suite_requests(
            "m",
            "held",
            suite_samples(),
        )))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{}", again.message());
    let listed = c
        .list_anchor_suites(pb::ListAnchorSuitesRequest { model: "m".into() })
        .await
        .unwrap()
        .into_inner()
        .suites;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sha256, s.sha256);

    // The head gets its baseline in the background.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let v1 = loop {
        let v = version(&mut c, 1).await;
        if !v.anchors.is_empty() {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "no baseline for v1");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (v1.anchors[0].suite.as_str(), v1.anchors[0].samples),
        ("held", 16)
    );

    c.set_promotion_gate(pb::SetPromotionGateRequest {
        model: "m".into(),
        gate: Some(pb::PromotionGate {
            max_anchor_drop: Some(0.0),
            ..Default::default()
        }),
    })
    .await
    .unwrap();

    // Noise: a task whose learning rate barely moves the weights passes.
    let t = run(
        &mut c,
        with_lr(header("m", "discs", 1), 1e-7),
        shape_samples(1),
    )
    .await;
    assert_eq!(t.rejection_reason, None);
    let v2 = version(&mut c, 2).await;
    assert_eq!(v2.anchors.len(), 1);
    let (rm1, rm2) = (v1.anchors[0].rm, v2.anchors[0].rm);
    assert!((rm1 - rm2).abs() < 10.0, "v1 {rm1} v2 {rm2}");

    // Conflicting captions at a high learning rate: refused, with the interval.
    let conflict = || with_lr(header("m", "recoloured squares", 30), 5e-3);
    let t = run(&mut c, conflict(), conflicting_squares()).await;
    let v3 = version(&mut c, 3).await;
    let why = t.rejection_reason.unwrap_or_else(|| {
        panic!(
            "v3 should lose on the suite: v2 {:?}, v3 {:?}",
            v2.anchors[0], v3.anchors
        )
    });
    assert!(
        why.contains("anchor suite \"held\": mean Rm drop from the parent")
            && why.contains("(95 % interval")
            && why
                .contains("paired bootstrap over 16 samples, 1000 resamples) > max_anchor_drop 0"),
        "{why}"
    );
    assert_eq!(v3.state, pb::VersionState::Rejected as i32);
    assert!(v3.anchors[0].rm < v2.anchors[0].rm, "{v3:?}");
    // The same task again (same parent, seed and data): the same decision, word for word.
    let t = run(&mut c, conflict(), conflicting_squares()).await;
    assert_eq!(t.rejection_reason.as_deref(), Some(why.as_str()));

    // ctpctl shows a column per suite.
    let out = tokio::process::Command::new(bins::ctpctl())
        .args(["--addr", &app.addr, "versions", "--model", "m"])
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("ANCHOR held"), "{table}");
    assert!(
        table.contains(&format!("{:.1}", v2.anchors[0].rm)),
        "{table}"
    );
    let out = tokio::process::Command::new(bins::ctpctl())
        .args(["--addr", &app.addr, "anchors", "list", "--model", "m"])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("held"));
    app.stop().await;
}
