//! The Deployments of deploy/k8s start as written: `ctpd` runs with the container's command
//! and arguments (the image's ENTRYPOINT from deploy/Dockerfile where the manifest gives no
//! `command`), its environment (Secret values from the test), its config file (the ConfigMap's,
//! which must be a file of deploy/config/ verbatim, or the one the Dockerfile copies into the
//! image) and its ports, one process per replica, against a throwaway Postgres and a moto S3
//! server; every probe of the manifest then passes (grpc.health.v1 SERVING on the gRPC probe's
//! port, a connection on a `tcpSocket` probe's) and `/metrics` answers on the metrics port.
//!
//! What the test changes, and nothing else: the device (`--device cpu`, appended), the Postgres
//! URL and S3 credentials (the Secrets' values), the S3 endpoint and bucket in the config file
//! (the test server's), container paths (each volume becomes a temp dir of its own per replica,
//! the image's weights folder the test assets) and `0.0.0.0:<containerPort>` (becomes
//! `127.0.0.1:<free port>`, a port per replica).
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

use crate::moto;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The resources of a YAML file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            <Value as serde::Deserialize>::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The image as deploy/Dockerfile builds it: its ENTRYPOINT and the config files it copies
/// from deploy/config/ (container path → file here).
struct Image {
    entrypoint: Vec<String>,
    files: Vec<(String, PathBuf)>,
}

fn image() -> Image {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let mut entrypoint = None;
    let mut files = Vec::new();
    for line in text.lines() {
        if let Some(e) = line.strip_prefix("ENTRYPOINT ") {
            entrypoint = Some(serde_json::from_str(e).expect("ENTRYPOINT in exec form"));
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["COPY", from, to] = words[..] {
            if from.starts_with("deploy/config/") {
                files.push((to.to_string(), root().join(from)));
            }
        }
    }
    Image {
        entrypoint: entrypoint.expect("deploy/Dockerfile has an ENTRYPOINT"),
        files,
    }
}

/// Replaces container paths by host paths in one pass (the longest match first, only whole
/// paths: at the start of a word and followed by `/`, a quote, a space or the end).
fn map_paths(s: &str, map: &[(String, String)]) -> String {
    let mut map = map.to_vec();
    map.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    let mut out = String::new();
    let mut i = 0;
    'outer: while i < s.len() {
        let start_ok = i == 0 || s[..i].ends_with(|c: char| "\"' =".contains(c));
        if start_ok {
            for (from, to) in &map {
                let rest = &s[i..];
                if rest.starts_with(from.as_str())
                    && rest[from.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| "/\"' \n".contains(c))
                {
                    out.push_str(to);
                    i += from.len();
                    continue 'outer;
                }
            }
        }
        let c = s[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Replaces `0.0.0.0:<container port>` by `127.0.0.1:<host port>`.
fn map_ports(s: &str, ports: &BTreeMap<u16, u16>) -> String {
    ports.iter().fold(s.to_string(), |s, (c, h)| {
        s.replace(&format!("0.0.0.0:{c}"), &format!("127.0.0.1:{h}"))
    })
}

/// The test servers' side: what the Secrets hold, and where the bucket is.
struct Servers {
    secrets: BTreeMap<(String, String), String>,
    s3_endpoint: Option<String>,
    bucket: Option<String>,
}

/// One replica: the ctpd process and where its probes and metrics are.
struct Replica {
    child: Child,
    ports: BTreeMap<u16, u16>,
    log: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
    volumes: BTreeMap<String, PathBuf>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().unwrap()?;
        Some(format!("ctpd exited ({status}):\n{}", self.log()))
    }
}

/// The config file's text with the test server's S3 endpoint and bucket in place of the
/// configured ones (`url = "s3://<bucket>/<prefix>"` keeps its prefix).
fn point_at_test_s3(text: &str, servers: &Servers) -> String {
    let doc: toml::Table = text.parse().unwrap();
    let Some(storage) = doc.get("storage").and_then(|s| s.as_table()) else {
        return text.to_string();
    };
    let mut text = text.to_string();
    if let Some(url) = storage.get("url").and_then(|u| u.as_str()) {
        if let Some(rest) = url.strip_prefix("s3://") {
            let prefix = rest.split_once('/').map_or("", |(_, p)| p);
            let bucket = servers
                .bucket
                .as_deref()
                .expect("an s3:// config needs moto");
            let new = format!("s3://{bucket}/{prefix}");
            text = text.replace(&format!("{url:?}"), &format!("{new:?}"));
        }
    }
    if let Some(endpoint) = storage.get("endpoint").and_then(|u| u.as_str()) {
        let new = servers
            .s3_endpoint
            .as_deref()
            .expect("an endpoint needs moto");
        text = text.replace(&format!("{endpoint:?}"), &format!("{new:?}"));
    }
    text
}

/// Starts one replica of the Deployment in `file` as its pod spec says (see the module docs).
fn start_replica(file: &Path, servers: &Servers) -> Replica {
    let docs = documents(file);
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap_or_else(|| panic!("{}: no Deployment", file.display()));
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{}: one container", file.display());
    let c = &containers[0];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let image = image();
    let mut argv = match c.get("command") {
        Some(cmd) => strings(cmd),
        None => image.entrypoint.clone(),
    };
    argv.extend(strings(&c["args"]));
    assert_eq!(
        argv[0],
        "/usr/local/bin/ctpd",
        "{}: the container runs ctpd (where deploy/Dockerfile puts it)",
        file.display()
    );

    // Ports: every containerPort gets a free port here.
    let ports: BTreeMap<u16, u16> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["containerPort"].as_u64().unwrap() as u16, free_port()))
        .collect();

    // Paths: each volume a temp dir; the image's config files and weights.
    let mut dirs = Vec::new();
    let mut paths: Vec<(String, String)> = vec![(
        "/opt/ctp/assets/weights".into(),
        assets::weights().display().to_string(),
    )];
    let mut volumes = BTreeMap::new();
    let mut config_files = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap();
        let mount = m["mountPath"].as_str().unwrap();
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{}: no volume {name}", file.display()));
        let dir = tempfile::tempdir().unwrap();
        if let Some(cm) = volume.get("configMap") {
            let map = docs
                .iter()
                .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == cm["name"])
                .unwrap_or_else(|| panic!("{}: no ConfigMap {}", file.display(), cm["name"]));
            for (key, value) in map["data"].as_object().unwrap() {
                let value = value.as_str().unwrap();
                if key.ends_with(".toml") {
                    let from = std::fs::read_dir(root().join("deploy/config"))
                        .unwrap()
                        .map(|e| e.unwrap().path())
                        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t == value))
                        .unwrap_or_else(|| {
                            panic!(
                                "{}: ConfigMap key {key} is no file of deploy/config/ verbatim",
                                file.display()
                            )
                        });
                    config_files.push((dir.path().join(key), from));
                } else {
                    std::fs::write(dir.path().join(key), value).unwrap();
                }
            }
        } else {
            assert!(
                volume.get("emptyDir").is_some() || volume.get("persistentVolumeClaim").is_some(),
                "{}: volume {name}: only emptyDir, PVC and configMap volumes are modelled",
                file.display()
            );
        }
        volumes.insert(name.to_string(), dir.path().to_path_buf());
        paths.push((mount.to_string(), dir.path().display().to_string()));
        dirs.push(dir);
    }
    // The image's config files, where no volume hides them.
    let image_root = tempfile::tempdir().unwrap();
    for (to, from) in &image.files {
        if volumes_at(c)
            .iter()
            .any(|m| to.starts_with(&format!("{m}/")))
        {
            continue;
        }
        let here = image_root.path().join(to.trim_start_matches('/'));
        std::fs::create_dir_all(here.parent().unwrap()).unwrap();
        config_files.push((here.clone(), from.clone()));
        paths.push((to.clone(), here.display().to_string()));
    }
    dirs.push(image_root);
    // Every config file, from deploy/config/, pointed at the test servers and the paths here.
    for (here, from) in &config_files {
        let text = std::fs::read_to_string(from).unwrap();
        let text = map_ports(&point_at_test_s3(&text, servers), &ports);
        std::fs::write(here, map_paths(&text, &paths)).unwrap();
    }

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctpd"));
    let mut args: Vec<String> = argv[1..]
        .iter()
        .map(|a| map_paths(&map_ports(a, &ports), &paths))
        .collect();
    // The one override: the device.
    match args.iter().position(|a| a == "--device") {
        Some(i) => args[i + 1] = "cpu".into(),
        None => args.extend(["--device".into(), "cpu".into()]),
    }
    cmd.args(&args);
    // Only the manifest's environment reaches ctpd's settings and S3 client.
    for (k, _) in std::env::vars() {
        if k.starts_with("CTP__") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap();
        let value = if let Some(v) = e["value"].as_str() {
            map_paths(&map_ports(v, &ports), &paths)
        } else {
            let r = &e["valueFrom"]["secretKeyRef"];
            let key = (
                r["name"].as_str().unwrap().to_string(),
                r["key"].as_str().unwrap().to_string(),
            );
            servers
                .secrets
                .get(&key)
                .unwrap_or_else(|| panic!("{}: {name}: no test value for {key:?}", file.display()))
                .clone()
        };
        cmd.env(name, value);
    }
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("ctpd.log");
    dirs.push(log_dir);
    cmd.stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::File::create(log.with_extension("err")).unwrap(),
        ));
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting ctpd {args:?}: {e}"));
    Replica {
        child,
        ports,
        log: log.with_extension("err"),
        _dirs: dirs,
        volumes,
    }
}

/// grpc.health.v1 answers SERVING at `addr` (one call).
async fn serving(addr: &str) -> bool {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let Ok(channel) = tonic::transport::Endpoint::from_shared(addr.to_string())
        .unwrap()
        .connect()
        .await
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
}

/// Waits until every probe of the manifest's container passes on `r`, then checks `/metrics`.
async fn wait_probes(file: &Path, r: &mut Replica) {
    let docs = documents(file);
    let c = &docs.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"]
        ["containers"][0];
    let host = |p: &Value| -> u16 {
        let port = p["port"].as_u64().expect("probe ports are numbers") as u16;
        *r.ports
            .get(&port)
            .unwrap_or_else(|| panic!("{}: probe port {port} is no containerPort", file.display()))
    };
    let mut grpc = Vec::new();
    let mut tcp = Vec::new();
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let p = &c[probe];
        if let Some(g) = p.get("grpc") {
            assert!(
                g.get("service").is_none(),
                "{probe}: the whole server's health"
            );
            grpc.push(host(g));
        } else if let Some(t) = p.get("tcpSocket") {
            tcp.push(host(t));
        } else {
            assert!(
                p.is_null(),
                "{}: {probe}: only grpc and tcpSocket are modelled",
                file.display()
            );
        }
    }
    assert!(
        !grpc.is_empty(),
        "{}: no probe on grpc.health.v1",
        file.display()
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    for port in grpc {
        let addr = format!("http://127.0.0.1:{port}");
        while !serving(&addr).await {
            if let Some(why) = r.exited() {
                panic!("{}: {why}", file.display());
            }
            assert!(
                Instant::now() < deadline,
                "{}: {addr} never reported SERVING:\n{}",
                file.display(),
                r.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for port in tcp {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("{}: tcpSocket probe on {port}: {e}", file.display()));
    }
    for p in c["ports"].as_array().unwrap() {
        if p["name"] == "metrics" {
            let port = r.ports[&(p["containerPort"].as_u64().unwrap() as u16)];
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            assert!(
                body.starts_with("HTTP/1.1 200"),
                "/metrics on {port}: {body:.200}"
            );
        }
    }
}

/// The mount paths of the container `c`.
fn volumes_at(c: &Value) -> Vec<String> {
    c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["mountPath"].as_str().unwrap().to_string())
        .collect()
}

fn replicas(file: &Path) -> usize {
    let docs = documents(file);
    let d = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    d["spec"]["replicas"].as_u64().unwrap_or(1) as usize
}

/// The Deployment's replicas, each started as its pod spec says, all serving.
async fn start_deployment(rel: &str, servers: &Servers) -> Vec<Replica> {
    let file = root().join(rel);
    let mut all: Vec<Replica> = (0..replicas(&file))
        .map(|_| start_replica(&file, servers))
        .collect();
    for r in &mut all {
        wait_probes(&file, r).await;
    }
    all
}

fn non_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_storage_manifest_serves_on_postgres_and_s3() {
    if pg::skip_requested() {
        return;
    }
    let moto = moto::moto();
    let bucket = moto.bucket();
    let url = pg::PgServer::shared().fresh_database().await;
    let secrets = [
        (("ctpd-db", "url"), url.clone()),
        (("ctpd-s3", "access-key-id"), "testing".to_string()),
        (("ctpd-s3", "secret-access-key"), "testing".to_string()),
    ];
    let servers = Servers {
        secrets: secrets
            .into_iter()
            .map(|((s, k), v)| ((s.to_string(), k.to_string()), v))
            .collect(),
        s3_endpoint: Some(moto.endpoint()),
        bucket: Some(bucket),
    };
    let file = "deploy/k8s/object-storage/ctpd.yaml";
    let replicas = start_deployment(file, &servers).await;
    assert_eq!(replicas.len(), 3, "{file}: three replicas");
    // Each replica has a data dir of its own, on its emptyDir.
    for r in &replicas {
        assert!(
            non_empty(&r.volumes["data"]),
            "{file}: nothing in the data emptyDir"
        );
    }
    // Every replica answers RPCs on the shared database.
    for r in &replicas {
        let mut c = connect(&format!("http://127.0.0.1:{}", r.ports[&50051])).await;
        let tasks = c
            .list_tasks(ctp_api::pb::ListTasksRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(tasks.tasks.is_empty(), "{tasks:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_replica_manifest_serves_on_postgres() {
    if pg::skip_requested() {
        return;
    }
    let url = pg::PgServer::shared().fresh_database().await;
    let servers = Servers {
        secrets: [(("ctpd-db".to_string(), "url".to_string()), url)].into(),
        s3_endpoint: None,
        bucket: None,
    };
    let replicas = start_deployment("deploy/k8s/ctpd.yaml", &servers).await;
    assert_eq!(replicas.len(), 1);
    assert!(non_empty(&replicas[0].volumes["data"]));
}
