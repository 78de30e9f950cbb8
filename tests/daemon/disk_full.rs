//! A full disk, for real: the data dir lives on a small tmpfs. A version checkpoint that does
//! not fit must not wedge the daemon: no temp file stays, health turns NOT_SERVING, uploads
//! answer RESOURCE_EXHAUSTED naming the data dir, the task is held (not lost, not stuck without
//! a word), and once the filesystem grows the same task completes and health is SERVING again.
//!
//! Mounting needs root (CAP_SYS_ADMIN); elsewhere the test says so and skips.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::helpers::*;
use ctp_api::pb;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// A tmpfs of `mib` MiB at a new folder; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    fn resize(&self, mib: u32) {
        let s = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(s.success(), "remount failed");
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                out.extend(tmp_files(&p));
            } else if name.ends_with(".tmp") && !name.starts_with(".health-probe") {
                out.push(p);
            }
        }
    }
    out
}

async fn health(addr: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status()
}

/// Polls health every 250 ms, at most `tries` times; true once it reports `want`.
async fn wait_health(addr: &str, want: ServingStatus, tries: u32) -> bool {
    for _ in 0..tries {
        if health(addr).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

async fn task_state(app: &TestApp, id: &str) -> pb::Task {
    app.client
        .clone()
        .get_task(pb::GetTaskRequest { task_id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_the_task_and_recovers_by_itself() {
    let Some(fs) = Tmpfs::mount(28) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)");
        return;
    };
    let data = fs.path().join("d");
    let app = spawn_app_in(String::new(), &data, vec![]).await;
    let mut c = app.client.clone();
    // The first version (~18 MiB) fits; the second does not.
    let t1 = submit(&mut c, header("m", "t1", 1), shape_samples(0))
        .await
        .unwrap();
    let end = terminal(&watch_all(&mut c, &t1.id, 0).await);
    assert_eq!(end.state, pb::TaskState::Succeeded as i32, "{end:?}");
    let t2 = submit(&mut c, header("m", "t2", 1), shape_samples(1))
        .await
        .unwrap();

    // The daemon notices: NOT_SERVING, the task is held with a log line, no temp file stays.
    assert!(
        wait_health(&app.addr, ServingStatus::NotServing, 240).await,
        "health never reported NOT_SERVING on a full disk"
    );
    let t = task_state(&app, &t2.id).await;
    assert_eq!(
        t.state,
        pb::TaskState::Running as i32,
        "held, not failed: {t:?}"
    );
    let leftovers = tmp_files(fs.path());
    assert!(leftovers.is_empty(), "temp files stayed: {leftovers:?}");

    // An upload that cannot fit is RESOURCE_EXHAUSTED naming the data dir.
    let filler = fs.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 64 << 20]); // fills whatever is left
    let err = submit(&mut c, header("m", "t3", 1), shape_samples(2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("data dir"), "{}", err.message());
    std::fs::remove_file(&filler).unwrap();
    assert!(tmp_files(fs.path()).is_empty());

    // Space returns: the same task completes, health recovers, nothing restarted.
    fs.resize(96);
    let end = terminal(&watch_all(&mut c, &t2.id, 0).await);
    assert_eq!(end.state, pb::TaskState::Succeeded as i32, "{end:?}");
    assert_eq!(end.produced_version, Some(2));
    assert!(
        wait_health(&app.addr, ServingStatus::Serving, 40).await,
        "health stayed NOT_SERVING after space returned"
    );
    let t3 = submit(&mut c, header("m", "t3", 1), shape_samples(2))
        .await
        .unwrap();
    let end = terminal(&watch_all(&mut c, &t3.id, 0).await);
    assert_eq!(end.state, pb::TaskState::Succeeded as i32, "{end:?}");
    app.stop().await;
}
