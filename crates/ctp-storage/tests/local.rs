//! `file://` storage (the default): the object is the file in the data dir, laid out as before.
#[path = "support/common.rs"]
mod common;

use std::sync::Arc;

use common::{bytes, files_under, s3_config, sha, write, Dirs};
use ctp_storage::{PutOutcome, Storage, StorageConfig, StorageError};

#[tokio::test]
async fn the_layout_is_the_data_dir_layout() {
    let d = Dirs::new();
    let st = d.open(&StorageConfig::default());
    assert!(st.is_local());
    assert_eq!(st.cache_usage(), None);
    st.probe().await.unwrap();
    let bundle = bytes(1, 10_000);
    let keys = [
        format!("tasks/{}.bundle", sha(&bundle)),
        "versions/t1.3.safetensors".to_string(),
        "resume/t1.3.120.safetensors".to_string(),
    ];
    for (i, k) in keys.iter().enumerate() {
        let data = if i == 0 {
            bundle.clone()
        } else {
            bytes(i as u64 + 1, 5_000)
        };
        let src = write(&d.src(), &format!("f{i}"), &data);
        assert_eq!(
            st.put_file_create_only(k, &src, &sha(&data)).await.unwrap(),
            PutOutcome::Created
        );
        let path = d.data().join(k);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(st.local_path(k).unwrap(), Some(path.clone()));
        assert_eq!(st.fetch(k, &sha(&data)).await.unwrap(), path, "no copy");
    }
    let mut want: Vec<String> = keys.to_vec();
    want.sort();
    assert_eq!(
        files_under(&d.data()),
        want,
        "nothing else: no temp files, no cache"
    );
    assert!(files_under(&d.cache()).is_empty());
    let listed: Vec<String> = st
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, want);
    let listed: Vec<String> = st
        .list("versions/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, ["versions/t1.3.safetensors"]);
}

#[tokio::test]
async fn create_only_conflicts_corruption_and_staging() {
    let d = Dirs::new();
    let st = d.open(&StorageConfig::default());
    let key = "versions/t2.1.safetensors";
    let a = bytes(7, 20_000);
    let b = bytes(8, 20_000);
    let staged = st.staging_path(key).unwrap();
    assert_eq!(staged.parent(), Some(d.data().join("versions").as_path()));
    std::fs::write(&staged, &a).unwrap();
    assert_eq!(
        st.put_file_create_only(key, &staged, &sha(&a))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert!(!staged.exists(), "linked into place, not copied");
    let src_b = write(&d.src(), "b", &b);
    match st.put_file_create_only(key, &src_b, &sha(&b)).await {
        Err(StorageError::Conflict {
            key: k,
            existing,
            attempted,
        }) => {
            assert_eq!((k.as_str(), existing, attempted), (key, sha(&a), sha(&b)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read(d.data().join(key)).unwrap(),
        a,
        "never replaced"
    );
    let src_a = write(&d.src(), "a", &a);
    assert_eq!(
        st.put_file_create_only(key, &src_a, &sha(&a))
            .await
            .unwrap(),
        PutOutcome::AlreadyPresent
    );
    let e = st
        .put_file_create_only("versions/t2.2.safetensors", &src_a, &sha(&b))
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::Invalid(_)), "{e}");
    assert!(!d.data().join("versions/t2.2.safetensors").exists());

    // A file changed behind the store's back is never returned.
    std::fs::write(d.data().join(key), &b).unwrap();
    match st.fetch(key, &sha(&a)).await {
        Err(StorageError::Corrupt { key: k, found, .. }) => {
            assert_eq!((k.as_str(), found), (key, sha(&b)))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        st.fetch("versions/none.safetensors", &sha(&a)).await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        st.fetch("../etc/passwd", &sha(&a)).await,
        Err(StorageError::Invalid(_))
    ));
    assert!(matches!(
        st.put_file_create_only("/abs", &src_a, &sha(&a)).await,
        Err(StorageError::Invalid(_))
    ));

    assert_eq!(
        st.quarantine(key).await.unwrap(),
        "quarantine/versions/t2.1.safetensors"
    );
    assert!(d
        .data()
        .join("quarantine/versions/t2.1.safetensors")
        .exists());
    assert!(!d.data().join(key).exists());
    let leftovers: Vec<String> = files_under(&d.data())
        .into_iter()
        .filter(|f| f.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_racing_local_writers_one_winner() {
    for same in [false, true] {
        let d = Arc::new(Dirs::new());
        let key = "tasks/race.bundle";
        let mut writers = Vec::new();
        for i in 0..8u64 {
            let data = bytes(if same { 50 } else { 50 + i }, 100_000);
            let src = write(&d.src(), &format!("w{i}"), &data);
            let st = Storage::open(&StorageConfig::default(), &d.data(), &d.cache()).unwrap();
            writers.push(tokio::spawn(async move {
                st.put_file_create_only(key, &src, &sha(&data)).await
            }));
        }
        let mut results = Vec::new();
        for w in writers {
            results.push(w.await.unwrap());
        }
        let stored = std::fs::read(d.data().join(key)).unwrap();
        let created = results
            .iter()
            .filter(|r| matches!(r, Ok(PutOutcome::Created)))
            .count();
        assert_eq!(created, 1, "{results:?}");
        for r in &results {
            match r {
                Ok(_) if same => {}
                Ok(PutOutcome::Created) => {}
                Err(StorageError::Conflict { existing, .. }) if !same => {
                    assert_eq!(*existing, sha(&stored))
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_file_url_folder_works_like_the_data_dir() {
    let d = Dirs::new();
    let shared = d.tmp.path().join("nfs");
    let cfg = StorageConfig {
        url: Some(format!("file://{}", shared.display())),
        ..StorageConfig::default()
    };
    let st = d.open(&cfg);
    let data = bytes(9, 1000);
    let src = write(&d.src(), "x", &data);
    st.put_file_create_only("tasks/x.bundle", &src, &sha(&data))
        .await
        .unwrap();
    assert_eq!(files_under(&shared), ["tasks/x.bundle"]);
    assert!(files_under(&d.data()).is_empty());
}

#[test]
fn debug_shows_where_but_no_credentials() {
    let d = Dirs::new();
    let mut cfg = s3_config("http://127.0.0.1:9", "bkt", d.tmp.path());
    std::fs::write(
        cfg.credentials_file.as_ref().unwrap(),
        "access_key_id = \"AKIDSHOWNNOWHERE\"\nsecret_access_key = \"s3cr3t-value\"\n",
    )
    .unwrap();
    cfg.url = Some("s3://bkt/ctp".into());
    let st = d.open(&cfg);
    let shown = format!("{st:?} {}", st.describe());
    assert!(shown.contains("s3://bkt/ctp"), "{shown}");
    assert!(
        !shown.contains("AKIDSHOWNNOWHERE") && !shown.contains("s3cr3t"),
        "{shown}"
    );
    // A stray half of the AWS variables does not stop a file:// daemon.
    assert!(Storage::open(&StorageConfig::default(), &d.data(), &d.cache()).is_ok());
}
