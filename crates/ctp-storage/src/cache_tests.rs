use super::*;

#[test]
fn lru_evicts_the_least_recently_used_within_the_limit() {
    let mut ix = CacheIndex::new(100);
    ix.insert("a", 40, true);
    ix.insert("b", 40, true);
    assert_eq!(ix.touch("a"), Some(true));
    ix.insert("c", 40, true);
    assert_eq!(ix.evict(Some("c"), |_| false), ["b"]);
    assert_eq!(
        ix.usage(),
        CacheUsage {
            bytes: 80,
            files: 2,
            max_bytes: 100
        }
    );
    // Busy entries and the one to keep survive even past the limit.
    ix.insert("d", 90, true);
    assert_eq!(ix.evict(Some("d"), |k| k == "a"), ["c"]);
    assert_eq!(ix.usage().bytes, 130);
    assert_eq!(ix.evict(Some("d"), |_| false), ["a"]);
    assert_eq!(ix.touch("a"), None);
    // One entry larger than the limit stays: it was just fetched.
    ix.insert("huge", 500, true);
    assert_eq!(ix.evict(Some("huge"), |_| false), ["d"]);
    assert_eq!(
        ix.usage(),
        CacheUsage {
            bytes: 500,
            files: 1,
            max_bytes: 100
        }
    );
}

#[test]
fn reopening_keeps_recency_from_mtimes_and_drops_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    let old = "a".repeat(64);
    let new = "b".repeat(64);
    std::fs::write(objects.join(&old), [0u8; 60]).unwrap();
    std::fs::write(objects.join(&new), [0u8; 60]).unwrap();
    std::fs::write(objects.join(format!(".{new}.1-2-3.tmp")), b"partial").unwrap();
    let t = SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::open(objects.join(&old))
        .unwrap()
        .set_modified(t)
        .unwrap();
    let cache = Cache::open(dir.path(), 100).unwrap();
    assert_eq!(
        cache.usage(),
        CacheUsage {
            bytes: 60,
            files: 1,
            max_bytes: 100
        }
    );
    assert!(!objects.join(&old).exists() && objects.join(&new).exists());
    assert_eq!(std::fs::read_dir(&objects).unwrap().count(), 1);
}

fn filled(data: &[u8], expected_size: u64) -> Filled {
    Filled {
        sha256: crate::hash::hash_bytes(data),
        size: data.len() as u64,
        expected_size,
    }
}

/// A fill that writes `results[n]` on its n-th call (or fails as the entry says).
async fn run_fills(
    cache: &Cache,
    sha: &str,
    results: Vec<Result<Vec<u8>>>,
) -> (Result<PathBuf>, usize) {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(results.into_iter());
    let got = cache
        .get_or_fill("k/x", sha, |tmp| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = results.lock().unwrap().next().expect("no more fills");
            async move {
                let data = next?;
                std::fs::write(&tmp, &data).unwrap();
                // Announce the full size: a short write is a truncated download.
                Ok(filled(&data, 1000))
            }
        })
        .await;
    (got, calls.into_inner())
}

#[tokio::test]
async fn a_bad_or_short_download_is_refetched_once_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 1 << 20).unwrap();
    let good = vec![7u8; 1000];
    let sha = crate::hash::hash_bytes(&good);
    let mut bad = good.clone();
    bad[3] = 0;
    // Wrong bytes once, then right: healed, one file.
    let (p, calls) = run_fills(&cache, &sha, vec![Ok(bad.clone()), Ok(good.clone())]).await;
    assert_eq!(
        (std::fs::read(p.unwrap()).unwrap(), calls),
        (good.clone(), 2)
    );
    // Warm: no fill at all.
    assert_eq!(run_fills(&cache, &sha, vec![]).await.1, 0);

    let other = vec![8u8; 1000];
    let sha2 = crate::hash::hash_bytes(&other);
    let (e, calls) = run_fills(
        &cache,
        &sha2,
        vec![Ok(other[..600].to_vec()), Ok(other[..10].to_vec())],
    )
    .await;
    match e {
        Err(StorageError::Corrupt { key, found, .. }) => {
            assert_eq!(key, "k/x");
            assert!(
                found.contains("truncated") && found.contains("10 of 1000"),
                "{found}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(calls, 2);
    let (e, calls) = run_fills(&cache, &sha2, vec![Ok(bad.clone()), Ok(bad.clone())]).await;
    assert!(
        matches!(e, Err(StorageError::Corrupt { ref found, .. }) if *found == crate::hash::hash_bytes(&bad)),
        "{e:?}"
    );
    assert_eq!(calls, 2);
    let down = || StorageError::Unavailable {
        op: "get",
        key: "k/x".into(),
        message: "cut".into(),
    };
    let (e, calls) = run_fills(&cache, &sha2, vec![Err(down()), Err(down())]).await;
    assert!(e.unwrap_err().is_unavailable());
    assert_eq!(calls, 2);
    let (e, calls) = run_fills(
        &cache,
        &sha2,
        vec![Err(StorageError::NotFound { key: "k/x".into() })],
    )
    .await;
    assert!(matches!(e, Err(StorageError::NotFound { .. })));
    assert_eq!(calls, 1);
    // Only the good file is there: no bad or temp file was kept.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("objects"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from(&sha)]);
}

/// A file this daemon just put is adopted (moved, not copied) as its object's cached copy:
/// the next fetch needs no fill.
#[tokio::test]
async fn an_adopted_file_is_a_hit_without_a_fill() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(&dir.path().join("cache"), 1 << 20).unwrap();
    let data = vec![5u8; 3000];
    let sha = crate::hash::hash_bytes(&data);
    let written = dir.path().join("published.bundle");
    std::fs::write(&written, &data).unwrap();
    let at = cache.adopt(&written, &sha).unwrap();
    assert!(!written.exists(), "moved, not copied");
    assert_eq!(std::fs::read(&at).unwrap(), data);
    assert_eq!(cache.usage().bytes, 3000);
    let (p, calls) = run_fills(&cache, &sha, vec![]).await;
    assert_eq!((p.unwrap(), calls), (at, 0));
}
