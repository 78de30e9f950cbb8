//! Create-only races against a real S3-compatible server (moto; `scripts/setup-moto.sh`):
//! 8 writers of one key, each with its own storage handle (as 8 daemons would).
#[path = "support/common.rs"]
mod common;
#[path = "support/moto.rs"]
mod moto;

use std::sync::Arc;

use common::{bytes, s3_config, sha, write, Dirs};
use ctp_storage::{PutOutcome, Storage, StorageError};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::ObjectStoreExt;

/// 8 writers of one key at once, each with its own storage handle (as 8 daemons would).
async fn race(
    moto: &moto::Moto,
    threshold: u64,
    size: usize,
    same: bool,
) -> (Vec<Result<PutOutcome, StorageError>>, Vec<u8>, String) {
    let bucket = moto.bucket();
    let d = Arc::new(Dirs::new());
    let mut cfg = s3_config(&moto.endpoint(), &bucket, d.tmp.path());
    cfg.multipart_threshold_bytes = threshold;
    let key = "tasks/race.bundle";
    let mut writers = Vec::new();
    for i in 0..8u64 {
        let data = bytes(if same { 100 } else { 100 + i }, size);
        let src = write(&d.src(), &format!("w{i}"), &data);
        let st = Storage::open(&cfg, &d.data(), &d.cache().join(format!("c{i}"))).unwrap();
        writers.push(tokio::spawn(async move {
            st.put_file_create_only(key, &src, &sha(&data)).await
        }));
    }
    let mut results = Vec::new();
    for w in writers {
        results.push(w.await.unwrap());
    }
    let raw = AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_endpoint(moto.endpoint())
        .with_region("us-east-1")
        .with_allow_http(true)
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();
    let stored = raw
        .get(&StorePath::from("ctp/tasks/race.bundle"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    (results, stored, key.to_string())
}

fn check_race(results: &[Result<PutOutcome, StorageError>], stored: &[u8], key: &str, same: bool) {
    let created = results
        .iter()
        .filter(|r| matches!(r, Ok(PutOutcome::Created)))
        .count();
    assert_eq!(created, 1, "{results:?}");
    for r in results {
        match r {
            Ok(PutOutcome::Created) => {}
            Ok(PutOutcome::AlreadyPresent) if same => {}
            Err(StorageError::Conflict {
                key: k,
                existing,
                attempted,
            }) if !same => {
                assert_eq!(k, key);
                assert_eq!(*existing, sha(stored));
                assert_ne!(attempted, existing);
            }
            other => panic!("same content: {same}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_racing_writers_of_one_key_one_winner() {
    let moto = moto::moto();
    for same in [false, true] {
        let (results, stored, key) = race(&moto, 64 << 20, 200_000, same).await;
        check_race(&results, &stored, &key, same);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_racing_multipart_writers_of_one_key_one_winner() {
    let moto = moto::moto();
    for same in [false, true] {
        let (results, stored, key) = race(&moto, 1 << 20, 3 << 20, same).await;
        check_race(&results, &stored, &key, same);
    }
}
