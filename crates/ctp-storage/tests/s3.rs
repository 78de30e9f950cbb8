//! ctp-storage against a real S3-compatible server (moto; `scripts/setup-moto.sh`).
#[path = "support/common.rs"]
mod common;
#[path = "support/moto.rs"]
mod moto;
#[path = "support/proxy.rs"]
mod proxy;

use futures_util::StreamExt;

use common::{bytes, files_under, s3_config, sha, write, Dirs};
use ctp_storage::{PutOutcome, StorageError};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// A raw client on the bucket, to plant objects behind the crate's back.
fn raw(endpoint: &str, bucket: &str) -> impl ObjectStore {
    AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_region("us-east-1")
        .with_allow_http(true)
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip_through_the_cache_cold_then_warm_and_after_a_restart() {
    let moto = moto::moto();
    let bucket = moto.bucket();
    let d = Dirs::new();
    let proxy = proxy::Proxy::start(moto.addr).await;
    let cfg = s3_config(&proxy.url(), &bucket, d.tmp.path());
    let st = d.open(&cfg);
    assert!(!st.is_local());
    assert_eq!(st.local_path("versions/t.1.safetensors").unwrap(), None);
    st.probe().await.unwrap();

    let data = bytes(1, 300_000);
    let src = write(&d.src(), "v.safetensors", &data);
    let key = "versions/t.1.safetensors";
    assert_eq!(
        st.put_file_create_only(key, &src, &sha(&data))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        st.put_file_create_only(key, &src, &sha(&data))
            .await
            .unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert!(src.exists(), "a caller's file is left alone");

    let cold = st.fetch(key, &sha(&data)).await.unwrap();
    assert!(cold.starts_with(d.cache()), "{}", cold.display());
    assert_eq!(std::fs::read(&cold).unwrap(), data);
    assert_eq!(st.cache_usage().unwrap().files, 1);

    // Warm: served from the cache, even while the store is unreachable.
    proxy.cut().await;
    assert_eq!(st.fetch(key, &sha(&data)).await.unwrap(), cold);
    // After a restart the cache is scanned, re-verified once, and still used.
    let again = d.open(&cfg);
    assert_eq!(again.cache_usage().unwrap().bytes, data.len() as u64);
    assert_eq!(again.fetch(key, &sha(&data)).await.unwrap(), cold);
    proxy.restore().await;

    let listed = st.list("versions").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].key.as_str(), listed[0].size),
        (key, data.len() as u64)
    );
    // The data dir holds nothing: objects live in the bucket, copies in the cache.
    assert!(
        files_under(&d.data()).is_empty(),
        "{:?}",
        files_under(&d.data())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_files_go_multipart_and_stay_create_only() {
    let moto = moto::moto();
    let bucket = moto.bucket();
    let d = Dirs::new();
    let mut cfg = s3_config(&moto.endpoint(), &bucket, d.tmp.path());
    cfg.multipart_threshold_bytes = 1 << 20;
    let st = d.open(&cfg);
    let data = bytes(2, 9 << 20); // two parts of 8 MiB and 1 MiB
    let key = "resume/t.1.40.safetensors";
    let staged = st.staging_path(key).unwrap();
    assert!(
        staged.starts_with(d.cache().join("staging")),
        "{}",
        staged.display()
    );
    std::fs::write(&staged, &data).unwrap();
    assert_eq!(
        st.put_file_create_only(key, &staged, &sha(&data))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert!(!staged.exists(), "a staging path is consumed");
    let other = write(&d.src(), "other", &bytes(3, 2 << 20));
    match st
        .put_file_create_only(key, &other, &sha(&bytes(3, 2 << 20)))
        .await
    {
        Err(StorageError::Conflict {
            key: k,
            existing,
            attempted,
        }) => {
            assert_eq!(
                (k.as_str(), existing, attempted),
                (key, sha(&data), sha(&bytes(3, 2 << 20)))
            );
        }
        other => panic!("{other:?}"),
    }
    let p = st.fetch(key, &sha(&data)).await.unwrap();
    assert_eq!(std::fs::read(p).unwrap(), data);
    // No staging object is left or listed.
    let all: Vec<String> = st
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(all, [key]);
    let raw = raw(&moto.endpoint(), &bucket);
    let staging = raw
        .list(Some(&StorePath::from("ctp/.staging")))
        .collect::<Vec<_>>()
        .await;
    assert!(staging.is_empty(), "{staging:?}");
    // A file whose bytes differ from the hash it is written under is refused.
    let e = st
        .put_file_create_only("resume/t.1.41.safetensors", &other, &sha(&data))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StorageError::Invalid(ref m) if m.contains("resume/t.1.41.safetensors")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_object_is_detected_and_never_returned() {
    let moto = moto::moto();
    let bucket = moto.bucket();
    let d = Dirs::new();
    let st = d.open(&s3_config(&moto.endpoint(), &bucket, d.tmp.path()));
    let good = bytes(4, 100_000);
    let mut bad = good.clone();
    bad[50_000] ^= 1;
    let raw = raw(&moto.endpoint(), &bucket);
    raw.put(
        &StorePath::from("ctp/versions/c.1.safetensors"),
        PutPayload::from(bad.clone()),
    )
    .await
    .unwrap();
    match st.fetch("versions/c.1.safetensors", &sha(&good)).await {
        Err(StorageError::Corrupt {
            key,
            expected,
            found,
        }) => {
            assert_eq!(
                (key.as_str(), expected, found),
                ("versions/c.1.safetensors", sha(&good), sha(&bad))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(st.cache_usage().unwrap().files, 0);
    assert!(
        files_under(&d.cache().join("objects")).is_empty(),
        "{:?}",
        files_under(&d.cache())
    );
    match st.fetch("versions/none.1.safetensors", &sha(&good)).await {
        Err(StorageError::NotFound { key }) => assert_eq!(key, "versions/none.1.safetensors"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_gives_unavailable_and_recovers_after_restore() {
    let moto = moto::moto();
    let bucket = moto.bucket();
    let d = Dirs::new();
    let proxy = proxy::Proxy::start(moto.addr).await;
    let st = d.open(&s3_config(&proxy.url(), &bucket, d.tmp.path()));
    let data = bytes(5, 50_000);
    let src = write(&d.src(), "b", &data);
    let key = "tasks/outage.bundle";
    st.put_file_create_only(key, &src, &sha(&data))
        .await
        .unwrap();

    proxy.cut().await;
    let e = st.probe().await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    let e = st.fetch(key, &sha(&data)).await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(e.to_string().contains(key), "{e}");
    let e = st
        .put_file_create_only("tasks/outage2.bundle", &src, &sha(&data))
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(st.list("tasks").await.unwrap_err().is_unavailable());
    assert_eq!(
        st.cache_usage().unwrap().files,
        0,
        "a failed download leaves nothing"
    );

    proxy.restore().await;
    st.probe().await.unwrap();
    let p = st.fetch(key, &sha(&data)).await.unwrap();
    assert_eq!(std::fs::read(p).unwrap(), data);
    assert_eq!(
        st.put_file_create_only("tasks/outage2.bundle", &src, &sha(&data))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    // A bucket that does not exist fails the probe too (NOT_SERVING, not a silent success).
    let missing = Dirs::new();
    let st = missing.open(&s3_config(
        &moto.endpoint(),
        "no-such-bucket",
        missing.tmp.path(),
    ));
    let e = st.probe().await;
    assert!(matches!(e, Err(StorageError::NotFound { .. })), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lru_eviction_respects_the_limit() {
    let moto = moto::moto();
    let bucket = moto.bucket();
    let d = Dirs::new();
    let mut cfg = s3_config(&moto.endpoint(), &bucket, d.tmp.path());
    cfg.cache_max_bytes = 250_000;
    let st = d.open(&cfg);
    let objs: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!("versions/l.{i}.safetensors"),
                bytes(10 + i, 100_000),
            )
        })
        .collect();
    for (i, (k, data)) in objs.iter().enumerate() {
        let src = write(&d.src(), &format!("l{i}"), data);
        st.put_file_create_only(k, &src, &sha(data)).await.unwrap();
    }
    let fetch = |i: usize| {
        let st = st.clone();
        let (k, data) = objs[i].clone();
        async move { st.fetch(&k, &sha(&data)).await.unwrap() }
    };
    let p0 = fetch(0).await;
    let p1 = fetch(1).await;
    fetch(0).await; // 0 is now more recent than 1
    let p2 = fetch(2).await;
    let usage = st.cache_usage().unwrap();
    assert!(usage.bytes <= 250_000, "{usage:?}");
    assert_eq!(usage.files, 2);
    assert!(
        p0.exists() && p2.exists() && !p1.exists(),
        "1 was least recently used"
    );
    let p1 = fetch(1).await; // refetched; evicts 0
    assert!(p1.exists() && p2.exists() && !p0.exists());
    assert!(st.cache_usage().unwrap().bytes <= 250_000);
    // A restart keeps the same files within the limit.
    let again = d.open(&cfg);
    assert_eq!(again.cache_usage().unwrap(), st.cache_usage().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_fetches_of_one_key_share_a_verified_file_and_quarantine_moves() {
    let moto = moto::moto();
    let bucket = moto.bucket();
    let d = Dirs::new();
    let st = d.open(&s3_config(&moto.endpoint(), &bucket, d.tmp.path()));
    let data = bytes(6, 2 << 20);
    let src = write(&d.src(), "q", &data);
    let key = "tasks/q.bundle";
    st.put_file_create_only(key, &src, &sha(&data))
        .await
        .unwrap();
    let fetches: Vec<_> = (0..8)
        .map(|_| {
            let st = st.clone();
            let h = sha(&data);
            tokio::spawn(async move { st.fetch(key, &h).await.unwrap() })
        })
        .collect();
    let mut paths = Vec::new();
    for f in fetches {
        paths.push(f.await.unwrap());
    }
    assert!(paths.iter().all(|p| *p == paths[0]));
    assert_eq!(std::fs::read(&paths[0]).unwrap(), data);
    assert_eq!(files_under(&d.cache().join("objects")), [sha(&data)]);

    assert_eq!(
        st.quarantine(key).await.unwrap(),
        "quarantine/tasks/q.bundle"
    );
    assert!(st.head(key).await.unwrap().is_none());
    st.put_file_create_only(key, &src, &sha(&data))
        .await
        .unwrap();
    assert_eq!(
        st.quarantine(key).await.unwrap(),
        "quarantine/tasks/q.bundle.1"
    );
    let keys: Vec<String> = st
        .list("quarantine")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(
        keys,
        ["quarantine/tasks/q.bundle", "quarantine/tasks/q.bundle.1"]
    );
    assert!(matches!(
        st.quarantine(key).await,
        Err(StorageError::NotFound { .. })
    ));
}
