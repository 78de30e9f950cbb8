//! A `ctpd` child process for benchmarks that restart the daemon (`storage`): spawned on a
//! data dir with extra settings, stopped with SIGKILL or SIGTERM (which drains: the running
//! task is checkpointed and released), and waited for until it is SERVING or a task event comes.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ctp_api::pb;

use crate::service;

/// A `ctpd` child process; killed if dropped.
pub struct Ctpd {
    child: Child,
    pub addr: String,
}

impl Ctpd {
    /// `ctpd --device cpu` on `data`, listening on a free port, with `env` added to this
    /// process's environment; stdout and stderr (`RUST_LOG=info`) are appended to `log`.
    pub fn spawn(bin: &Path, data: &Path, env: &[(String, String)], log: &Path) -> Result<Ctpd> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(bin)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--device", "cpu"])
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Ctpd {
            child,
            addr: format!("http://127.0.0.1:{port}"),
        })
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the graceful exit (the drain checkpoints the running task).
    pub async fn terminate(mut self) -> Result<()> {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "ctpd exited with {status} after SIGTERM");
                return Ok(());
            }
            ensure!(t.elapsed() < Duration::from_secs(600), "ctpd did not drain");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Ctpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client once the daemon's grpc.health.v1 says SERVING (it accepts connections earlier,
/// while it recovers); polled every 20 ms, for at most 120 s.
pub async fn serving(
    addr: &str,
) -> Result<ctp_api::pb::continual_trainer_client::ContinualTrainerClient<tonic::transport::Channel>>
{
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};
    let mut health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(addr.to_string())?.connect_lazy(),
    );
    let t = Instant::now();
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status);
        if status.is_ok_and(|s| s == ServingStatus::Serving as i32) {
            return service::client(addr).await;
        }
        ensure!(
            t.elapsed() < Duration::from_secs(120),
            "ctpd at {addr} was not SERVING within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first event of `task` (stored ones included) that `pick` accepts.
pub async fn until(
    addr: &str,
    task: &str,
    pick: impl Fn(&pb::TaskEvent) -> bool,
) -> Result<pb::TaskEvent> {
    let mut c = service::client(addr).await?;
    let mut w = c
        .watch_task(pb::WatchTaskRequest {
            task_id: task.into(),
            after_seq: 0,
        })
        .await?
        .into_inner();
    while let Some(ev) = w.message().await? {
        if pick(&ev) {
            return Ok(ev);
        }
    }
    bail!("the watch stream of {task} ended")
}
