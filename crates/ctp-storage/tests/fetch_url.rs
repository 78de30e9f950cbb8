//! Task data by reference: brace patterns, the allow-list, and fetching with a size limit.
#[path = "support/common.rs"]
mod common;
#[path = "support/moto.rs"]
mod moto;

use common::{bytes, s3_config, sha, write, Dirs};
use ctp_storage::{expand_braces, StorageConfig, StorageError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_in_the_bucket_by_pattern() {
    let moto = moto::moto();
    let bucket = moto.bucket();
    let d = Dirs::new();
    let st = d.open(&s3_config(&moto.endpoint(), &bucket, d.tmp.path()));
    let mut want = Vec::new();
    for i in 0..3u64 {
        let data = bytes(20 + i, 4000 + i as usize);
        let src = write(&d.src(), &format!("s{i}"), &data);
        st.put_file_create_only(&format!("emoji/shard-{i:03}.tar"), &src, &sha(&data))
            .await
            .unwrap();
        want.push(data);
    }
    let urls = expand_braces(&format!("s3://{bucket}/ctp/emoji/shard-{{000..002}}.tar")).unwrap();
    let dest = d.tmp.path().join("fetched");
    std::fs::create_dir_all(&dest).unwrap();
    for (url, data) in urls.iter().zip(&want) {
        let got = st.fetch_url(url, &dest, 1 << 20).await.unwrap();
        assert_eq!(&got.url, url);
        assert_eq!(
            (got.sha256.clone(), got.size),
            (sha(data), data.len() as u64)
        );
        assert!(got.etag.is_some());
        assert_eq!(&std::fs::read(&got.local_path).unwrap(), data);
        assert!(got.local_path.starts_with(&dest));
    }
    // Over the limit: refused, nothing left behind.
    let e = st.fetch_url(&urls[0], &dest, 100).await.unwrap_err();
    assert!(
        matches!(e, StorageError::TooLarge { limit: 100, .. }),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 3);
    // Another bucket is not allowed by default; a missing shard is named.
    moto.bucket();
    let e = st
        .fetch_url("s3://elsewhere/emoji/shard-000.tar", &dest, 1 << 20)
        .await
        .unwrap_err();
    assert!(
        matches!(e, StorageError::NotAllowed { ref url } if url == "s3://elsewhere/emoji/shard-000.tar"),
        "{e}"
    );
    let missing = format!("s3://{bucket}/ctp/emoji/shard-009.tar");
    let e = st.fetch_url(&missing, &dest, 1 << 20).await.unwrap_err();
    assert!(
        matches!(e, StorageError::NotFound { ref key } if *key == missing),
        "{e}"
    );
}

/// A tiny HTTP/1.1 server: `/data.tar` (with ETag and length), `/unsized.tar` (no length,
/// closed at the end), `/in` (redirects to /data.tar), `/out` (redirects off the list),
/// anything else 404.
async fn http_server(data: Vec<u8>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let data = data.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let head = match path.as_str() {
                    "/data.tar" => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n", data.len()),
                    "/unsized.tar" => "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_string(),
                    "/in" => format!("HTTP/1.1 302 Found\r\nLocation: http://{addr}/data.tar\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                    "/out" => "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                    _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                };
                let _ = s.write_all(head.as_bytes()).await;
                if path == "/data.tar" || path == "/unsized.tar" {
                    let _ = s.write_all(&data).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_only_where_allow_listed_redirects_checked_and_size_limited_while_streaming() {
    let d = Dirs::new();
    let data = bytes(30, 200_000);
    let addr = http_server(data.clone()).await;
    let url = format!("http://{addr}/data.tar");
    let dest = d.tmp.path().join("fetched");
    std::fs::create_dir_all(&dest).unwrap();

    let closed = d.open(&StorageConfig::default());
    let e = closed.fetch_url(&url, &dest, 1 << 20).await.unwrap_err();
    assert!(matches!(e, StorageError::NotAllowed { .. }), "{e}");

    let cfg = StorageConfig {
        allow_urls: vec![format!("http://{addr}/")],
        ..StorageConfig::default()
    };
    let open = d.open(&cfg);
    let got = open.fetch_url(&url, &dest, 1 << 20).await.unwrap();
    assert_eq!(
        (got.sha256, got.size, got.etag.as_deref()),
        (sha(&data), data.len() as u64, Some("\"v1\""))
    );
    // Refused up front (Content-Length), and while streaming (no length announced).
    let e = open.fetch_url(&url, &dest, 1000).await.unwrap_err();
    assert!(
        matches!(e, StorageError::TooLarge { limit: 1000, .. }),
        "{e}"
    );
    let e = open
        .fetch_url(&format!("http://{addr}/unsized.tar"), &dest, 150_000)
        .await
        .unwrap_err();
    assert!(
        matches!(e, StorageError::TooLarge { limit: 150_000, .. }),
        "{e}"
    );
    let e = open
        .fetch_url(&format!("http://{addr}/none.tar"), &dest, 1000)
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::NotFound { .. }), "{e}");
    // Redirects are followed only within the allow-list.
    let got = open
        .fetch_url(&format!("http://{addr}/in"), &dest, 1 << 20)
        .await
        .unwrap();
    assert_eq!(got.size, data.len() as u64);
    let e = open
        .fetch_url(&format!("http://{addr}/out"), &dest, 1 << 20)
        .await
        .unwrap_err();
    assert!(
        matches!(e, StorageError::Invalid(ref m) if m.contains("outside storage.allow_urls")),
        "{e}"
    );
    let names: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "failed fetches leave no files: {names:?}");
}

#[tokio::test]
async fn file_urls_and_symlink_escapes() {
    let d = Dirs::new();
    let shards = d.tmp.path().join("shards");
    let secret = d.tmp.path().join("secret");
    std::fs::create_dir_all(&shards).unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    let data = bytes(40, 3000);
    write(&shards, "a.tar", &data);
    write(&secret, "key.pem", b"private");
    std::os::unix::fs::symlink(secret.join("key.pem"), shards.join("link.tar")).unwrap();
    let cfg = StorageConfig {
        allow_urls: vec![format!("file://{}/", shards.display())],
        ..StorageConfig::default()
    };
    let st = d.open(&cfg);
    let dest = d.tmp.path().join("fetched");
    std::fs::create_dir_all(&dest).unwrap();
    let got = st
        .fetch_url(
            &format!("file://{}/a.tar", shards.display()),
            &dest,
            1 << 20,
        )
        .await
        .unwrap();
    assert_eq!((got.sha256, got.etag), (sha(&data), None));
    for url in [
        format!("file://{}/link.tar", shards.display()),
        format!("file://{}/../secret/key.pem", shards.display()),
    ] {
        let e = st.fetch_url(&url, &dest, 1 << 20).await.unwrap_err();
        assert!(
            matches!(e, StorageError::NotAllowed { url: ref u } if *u == url),
            "{url}: {e}"
        );
    }
    let e = st
        .fetch_url(&format!("file://{}/a.tar", shards.display()), &dest, 10)
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::TooLarge { .. }), "{e}");
}
