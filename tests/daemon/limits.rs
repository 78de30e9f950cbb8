//! String length limits are the same on both backends and checked before anything is
//! stored: a too-long idempotency key, sample id or rollback reason is INVALID_ARGUMENT,
//! and a key at the limit works everywhere.
use ctp_api::pb;
use tonic::Code;

use crate::helpers::*;

async fn limits(db: Db) {
    let app = spawn_app_with(db, vec![("CTP__DISPATCH".into(), "false".into())]).await;
    let mut c = app.client.clone();

    let mut h = header("m", "t", 1);
    h.idempotency_key = Some("k".repeat(1 << 20));
    let err = submit(&mut c, h, shape_samples(0)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("header.idempotency_key is 1048576 bytes; the limit is 256"),
        "{}",
        err.message()
    );
    let mut samples = shape_samples(0);
    samples[2].id = "s".repeat(257);
    let err = submit(&mut c, header("m", "t", 1), samples)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("sample 2: id is 257 bytes"),
        "{}",
        err.message()
    );
    // Nothing was stored for either.
    let tasks = c
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert!(tasks.is_empty(), "{tasks:?}");
    let bundles = std::fs::read_dir(app.data_dir.join("tasks"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(bundles, 0, "no bundle left on disk");

    // At the limit, the same on both backends.
    let mut h = header("m", "t", 1);
    let key = "k".repeat(256);
    h.idempotency_key = Some(key.clone());
    let first = submit(&mut c, h.clone(), shape_samples(0)).await.unwrap();
    let again = submit(&mut c, h, shape_samples(0)).await.unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(first.idempotency_key.as_deref(), Some(key.as_str()));

    let err = c
        .rollback(pb::RollbackRequest {
            model: "m".into(),
            version: 1,
            expected_head: None,
            reason: "r".repeat(4097),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("reason is 4097 bytes"),
        "{}",
        err.message()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_sqlite() {
    limits(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_postgres() {
    if pg::skip_requested() {
        return;
    }
    limits(Db::Postgres).await;
}
