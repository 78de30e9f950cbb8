//! Every bad-input case gets INVALID_ARGUMENT naming the sample and reason, and a rejected
//! upload leaves nothing behind.
use ctp_api::pb;
use tonic::Code;

use crate::helpers::*;

async fn expect_invalid(app: &TestApp, h: pb::TaskHeader, samples: Vec<pb::Sample>, needle: &str) {
    let mut c = app.client.clone();
    let err = submit(&mut c, h, samples).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{needle}: {err:?}");
    assert!(
        err.message().contains(needle),
        "expected {needle:?} in {:?}",
        err.message()
    );
}

async fn bad_inputs(db: Db) {
    let app = spawn_app_with(
        db,
        vec![
            ("CTP__LIMITS__MAX_IMAGE_SIDE".into(), "64".into()),
            ("CTP__LIMITS__MAX_STEPS_PER_TASK".into(), "50".into()),
        ],
    )
    .await;
    let good = shape_samples(0);
    let with = |i: usize, f: &dyn Fn(&mut pb::Sample)| {
        let mut s = good.clone();
        f(&mut s[i]);
        s
    };
    expect_invalid(
        &app,
        header("m", "t", 1),
        with(3, &|s| s.image = b"not an image".to_vec()),
        "sample 3: image format is not supported",
    )
    .await;
    expect_invalid(
        &app,
        header("m", "t", 1),
        with(4, &|s| s.image.truncate(40)),
        "sample 4: image could not be decoded",
    )
    .await;
    let big = png(&vec![0u8; 100 * 10 * 3], 100, 10);
    expect_invalid(
        &app,
        header("m", "t", 1),
        with(5, &|s| s.image = big.clone()),
        "sample 5: image is 100x10 pixels",
    )
    .await;
    expect_invalid(
        &app,
        header("m", "t", 1),
        with(6, &|s| s.caption = b"   ".to_vec()),
        "sample 6: caption is empty",
    )
    .await;
    expect_invalid(
        &app,
        header("m", "t", 1),
        with(7, &|s| s.caption = vec![b'a'; 5000]),
        "sample 7: caption is 5000 bytes",
    )
    .await;
    expect_invalid(
        &app,
        header("m", "t", 1),
        with(8, &|s| s.caption = vec![b'o', 0xff, 0xfe]),
        "sample 8: caption is not valid UTF-8",
    )
    .await;
    expect_invalid(
        &app,
        header("m", "t", 1),
        with(9, &|s| s.split = pb::Split::Unspecified as i32),
        "sample 9: split",
    )
    .await;
    expect_invalid(
        &app,
        header("m", "t", 1),
        with(10, &|s| s.id = "blue-small".into()),
        "sample 10: id \"blue-small\" repeats",
    )
    .await;
    let mut h = header("m", "t", 1);
    h.preset = "huge".into();
    expect_invalid(&app, h, good.clone(), "unknown model preset \"huge\"").await;
    expect_invalid(&app, header("m", "t", 1), vec![], "zero samples").await;
    let all_train: Vec<pb::Sample> = good
        .iter()
        .cloned()
        .map(|mut s| {
            s.split = pb::Split::Train as i32;
            s
        })
        .collect();
    expect_invalid(&app, header("m", "t", 1), all_train, "no eval samples").await;
    let mut h = header("m", "t", 1);
    h.settings.as_mut().unwrap().batch_size = Some(1);
    expect_invalid(&app, h, good.clone(), "batch_size").await;
    // Every numeric setting has an upper bound (`epochs = -1` over the wire is 4294967295).
    let with_settings = |f: &dyn Fn(&mut pb::TrainSettings)| {
        let mut h = header("m", "t", 1);
        f(h.settings.as_mut().unwrap());
        h
    };
    type Case<'a> = (&'a dyn Fn(&mut pb::TrainSettings), &'a str);
    let cases: [Case; 7] = [
        (
            &|s| s.epochs = Some(u32::MAX),
            "settings.epochs is 4294967295; the maximum is 10000",
        ),
        (
            &|s| s.batch_size = Some(1 << 20),
            "settings.batch_size is 1048576; the maximum is 65536",
        ),
        (
            &|s| s.drift_check_every = Some(u32::MAX),
            "settings.drift_check_every",
        ),
        (&|s| s.learning_rate = Some(1e9), "settings.learning_rate"),
        (
            &|s| s.queue_size = Some(0),
            "settings: queue_size must be >= 1 (got 0)",
        ),
        (
            &|s| s.queue_size = Some(u32::MAX),
            "settings.queue_size is 4294967295; the maximum is 1048576",
        ),
        (
            &|s| {
                s.loss_weights = Some(pb::LossWeights {
                    mlm: Some(1e12),
                    ..Default::default()
                })
            },
            "settings.loss_weights",
        ),
    ];
    for (f, needle) in cases {
        expect_invalid(&app, with_settings(f), good.clone(), needle).await;
    }
    // 10 training samples at batch 5 for 30 epochs = 60 steps > limits.max_steps_per_task (50).
    expect_invalid(
        &app,
        header("m", "t", 30),
        good.clone(),
        "is 60 steps; the limit is 50",
    )
    .await;
    // Model names never become paths: `.`/`..` and separators are refused.
    for name in ["..", ".", "a/b", ".hidden", "", &"x".repeat(129)] {
        let mut h = header("m", "t", 1);
        h.model = name.to_string();
        expect_invalid(&app, h, good.clone(), "header.model").await;
    }
    let mut h = header("m", "t", 1);
    h.expected_samples = Some(99);
    expect_invalid(&app, h, good.clone(), "expected_samples is 99 but 16").await;
    // A stream that does not start with a header.
    let mut c = app.client.clone();
    let mut reqs = requests(header("m", "t", 1), good.clone(), 5);
    reqs.remove(0);
    let err = c.submit_task(tokio_stream::iter(reqs)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err
        .message()
        .contains("first SubmitTask message must be a header"));

    // Nothing was accepted, nothing was left on disk.
    let tasks = c
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert!(tasks.is_empty(), "{tasks:?}");
    let leftovers: Vec<_> = std::fs::read_dir(app.data_dir.join("tasks"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Unknown ids are NOT_FOUND.
    let err = c
        .get_task(pb::GetTaskRequest {
            task_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .get_version(pb::GetVersionRequest {
            model: "nope".into(),
            version: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // An accepted task is untouched by later rejections.
    let ok = submit(&mut c, header("m", "t", 1), good.clone())
        .await
        .unwrap();
    expect_invalid(
        &app,
        header("m", "t2", 1),
        with(2, &|s| s.image = vec![]),
        "sample 2: image is empty",
    )
    .await;
    let t = c
        .get_task(pb::GetTaskRequest {
            task_id: ok.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((t.n_train, t.n_eval), (10, 6));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_sqlite() {
    bad_inputs(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_postgres() {
    if pg::skip_requested() {
        return;
    }
    bad_inputs(Db::Postgres).await;
}
