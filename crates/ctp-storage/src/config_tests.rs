use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";

#[test]
fn debug_never_shows_secrets() {
    let c = Credentials {
        access_key_id: KEY_ID.into(),
        secret_access_key: SECRET.into(),
        session_token: Some("tok-secret".into()),
    };
    let shown = format!("{c:?} {c:#?}");
    for s in [SECRET, KEY_ID, "tok-secret"] {
        assert!(!shown.contains(s), "{shown}");
    }
    assert!(shown.contains("<redacted>"));
    let cfg = StorageConfig {
        url: Some("s3://user:pa55word@bucket/p".into()),
        endpoint: Some("http://admin:hunter2@127.0.0.1:9000".into()),
        allow_urls: vec!["https://u:pw@data.example/x/".into()],
        credentials_file: Some("/etc/ctp/s3.toml".into()),
        ..StorageConfig::default()
    };
    let shown = format!("{cfg:?}");
    for s in ["pa55word", "hunter2", "admin", "u:pw"] {
        assert!(!shown.contains(s), "{shown}");
    }
    assert!(
        shown.contains("127.0.0.1:9000") && shown.contains("/etc/ctp/s3.toml"),
        "{shown}"
    );
}

#[test]
fn credentials_files_in_toml_and_aws_ini_form() {
    let toml = format!("# ctp\naccess_key_id = \"{KEY_ID}\"\nsecret_access_key = '{SECRET}'\n");
    let c = Credentials::parse(&toml).unwrap();
    assert_eq!(
        (c.access_key_id.as_str(), c.secret_access_key.as_str()),
        (KEY_ID, SECRET)
    );
    assert_eq!(c.session_token, None);
    let ini = format!(
        "[other]\naws_access_key_id = nope\n\n[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\naws_session_token = t\n"
    );
    let c = Credentials::parse(&ini).unwrap();
    assert_eq!(c.access_key_id, KEY_ID);
    assert_eq!(c.session_token.as_deref(), Some("t"));
    let e = Credentials::parse(&format!("access_key_id = x\n{SECRET}\n")).unwrap_err();
    assert!(e.contains("line 2") && !e.contains(SECRET), "{e}");
    assert!(Credentials::parse("access_key_id = x")
        .unwrap_err()
        .contains("secret_access_key"));
}

#[test]
fn defaults_mean_the_data_dir() {
    let cfg = StorageConfig::default();
    assert!(cfg.path_style && !cfg.allow_http());
    assert_eq!(cfg.cache_max_bytes, 10 << 30);
    let loc = cfg.location(Path::new("/srv/ctp")).unwrap();
    assert_eq!(loc, Location::File("/srv/ctp".into()));
    let parsed: StorageConfig = toml::from_str("").unwrap();
    assert_eq!(parsed, cfg);
    let parsed: StorageConfig = toml::from_str(
        "url = \"s3://b1/p\"\nendpoint = \"http://127.0.0.1:9\"\ncache_max_bytes = 5",
    )
    .unwrap();
    assert_eq!(
        (
            parsed.url.as_deref(),
            parsed.cache_max_bytes,
            parsed.path_style
        ),
        (Some("s3://b1/p"), 5, true)
    );
    let e = toml::from_str::<StorageConfig>("bucket = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn urls_and_endpoints_are_checked_precisely() {
    let with = |url: &str, ep: Option<&str>| StorageConfig {
        url: Some(url.into()),
        endpoint: ep.map(Into::into),
        ..StorageConfig::default()
    };
    let d = Path::new("/d");
    assert_eq!(
        with("s3://bkt/a/b/", Some("http://127.0.0.1:9000"))
            .location(d)
            .unwrap(),
        Location::S3 {
            bucket: "bkt".into(),
            prefix: "a/b".into()
        }
    );
    assert!(with("s3://bkt", Some("http://127.0.0.1:9000")).allow_http());
    assert!(!with("s3://bkt", Some("https://s3.example")).allow_http());
    assert_eq!(
        with("file:///mnt/x", None).location(d).unwrap(),
        Location::File("/mnt/x".into())
    );
    assert!(with("file:///mnt/x", Some("http://127.0.0.1:9000"))
        .location(d)
        .is_ok());
    let cases = [
        (with("gs://bkt", None), "unsupported scheme"),
        (with("s3://B_k", None), "not a valid bucket name"),
        (with("s3://bkt/../x", None), "'..' segments"),
        (with("s3://bkt/a/%2E%2e/x", None), "'..' segments"),
        (
            with("s3://k:secret@bkt/x", None),
            "must not hold credentials",
        ),
        (with("s3://bkt", Some("ftp://h")), "http:// or https://"),
        (
            StorageConfig {
                endpoint: Some("localhost:9000".into()),
                ..StorageConfig::default()
            },
            "http:// or https://",
        ),
    ];
    for (cfg, want) in cases {
        let e = cfg.location(d).unwrap_err().to_string();
        assert!(e.contains(want), "{cfg:?}: {e}");
        assert!(!e.contains("secret"), "{e}");
    }
}
