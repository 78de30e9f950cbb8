//! Control-plane benchmarks against an in-process daemon:
//! - `load`: while a `small` task trains, N clients poll `GetTask` and hold `WatchTask`
//!   streams; GetTask latency percentiles and the training throughput with and without them.
//! - `ingest`: `SubmitTask` throughput (samples/s, MB/s) for 64 px PNGs and 224 px JPEGs.
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ctp::app::Application;
use ctp::config::{Overrides, Settings};
use ctp_api::pb::{self, continual_trainer_client::ContinualTrainerClient};
use tonic::transport::Channel;

/// An in-process `ctpd` (SQLite), port 0, on a temp data dir or a kept one.
pub struct Daemon {
    pub addr: String,
    stop: tokio::sync::oneshot::Sender<()>,
    join: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Daemon {
    /// A daemon on `data_dir`, which outlives it: a later daemon on the same folder finds
    /// its tasks, versions and mid-task checkpoints, as a restarted `ctpd` would.
    pub async fn start_in(
        data_dir: &std::path::Path,
        env: Vec<(String, String)>,
    ) -> Result<Daemon> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        daemon_in(data_dir.to_path_buf(), None, env).await
    }

    /// Graceful shutdown; waits for the daemon to exit.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.join.await?.context("daemon")
    }
}

async fn daemon(env: Vec<(String, String)>) -> Result<Daemon> {
    let dir = tempfile::tempdir()?;
    daemon_in(dir.path().to_path_buf(), Some(dir), env).await
}

async fn daemon_in(
    data_dir: std::path::PathBuf,
    temp: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
) -> Result<Daemon> {
    let flags = Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(data_dir),
        ..Default::default()
    };
    let settings = Settings::load(None, env, &flags).map_err(anyhow::Error::msg)?;
    let app = Application::build(settings).await?;
    let addr = format!("http://{}", app.grpc_addr());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(Daemon {
        addr,
        stop,
        join,
        _dir: temp,
    })
}

pub async fn client(addr: &str) -> Result<ContinualTrainerClient<Channel>> {
    Ok(ContinualTrainerClient::connect(addr.to_string())
        .await?
        .max_encoding_message_size(256 << 20)
        .max_decoding_message_size(256 << 20))
}

fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

/// A smooth-ish image (gradients + noise) encoded as PNG or JPEG.
fn encoded(size: u32, seed: u32, jpeg: bool) -> Vec<u8> {
    let n = noise((size * size * 3) as usize, seed);
    let px: Vec<u8> = n
        .iter()
        .enumerate()
        .map(|(i, v)| ((i as u32 / 3 % size) as u8).wrapping_add(v / 8))
        .collect();
    let img = image::RgbImage::from_raw(size, size, px).expect("sized buffer");
    let mut out = std::io::Cursor::new(Vec::new());
    let fmt = if jpeg {
        image::ImageFormat::Jpeg
    } else {
        image::ImageFormat::Png
    };
    img.write_to(&mut out, fmt).expect("encoding to memory");
    out.into_inner()
}

pub(crate) fn samples(n: usize, size: u32, jpeg: bool) -> Vec<pb::Sample> {
    (0..n)
        .map(|i| pb::Sample {
            image: encoded(size, i as u32, jpeg),
            caption: format!("sample {i}: a smiling face with a red hat").into_bytes(),
            id: String::new(),
            split: if i % 5 == 0 {
                pb::Split::Eval
            } else {
                pb::Split::Train
            } as i32,
        })
        .collect()
}

pub(crate) fn header(model: &str, epochs: u32) -> pb::TaskHeader {
    pb::TaskHeader {
        model: model.into(),
        preset: "small".into(),
        task_name: "bench".into(),
        settings: Some(pb::TrainSettings {
            epochs: Some(epochs),
            batch_size: Some(32),
            ..Default::default()
        }),
        eval_split: Some(pb::EvalSplit {
            kind: Some(pb::eval_split::Kind::PerSample(pb::PerSampleSplit {})),
        }),
        ..Default::default()
    }
}

pub(crate) async fn submit(
    c: &mut ContinualTrainerClient<Channel>,
    h: pb::TaskHeader,
    s: Vec<pb::Sample>,
    chunk: usize,
) -> Result<pb::Task> {
    use pb::submit_task_request::Msg;
    let mut reqs = vec![pb::SubmitTaskRequest {
        msg: Some(Msg::Header(h)),
    }];
    for c in s.chunks(chunk) {
        reqs.push(pb::SubmitTaskRequest {
            msg: Some(Msg::Chunk(pb::SampleChunk {
                samples: c.to_vec(),
            })),
        });
    }
    Ok(c.submit_task(tokio_stream::iter(reqs)).await?.into_inner())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Training samples/s over `window` from the task's step count.
async fn throughput(
    c: &mut ContinualTrainerClient<Channel>,
    task: &str,
    window: Duration,
) -> Result<f64> {
    let step = |t: pb::Task| t.progress.map_or(0, |p| p.step);
    let s0 = step(
        c.get_task(pb::GetTaskRequest {
            task_id: task.into(),
        })
        .await?
        .into_inner(),
    );
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let s1 = step(
        c.get_task(pb::GetTaskRequest {
            task_id: task.into(),
        })
        .await?
        .into_inner(),
    );
    Ok((s1 - s0) as f64 * 32.0 / t0.elapsed().as_secs_f64())
}

pub async fn load(clients: &[usize], seconds: u64, interval_ms: u64) -> Result<String> {
    let d = daemon(vec![("CTP__ENGINE__DEVICE".into(), "cpu".into())]).await?;
    let mut c = client(&d.addr).await?;
    let task = submit(&mut c, header("load", 1000), samples(160, 64, false), 64).await?;
    let window = Duration::from_secs(seconds);
    tokio::time::sleep(Duration::from_secs(8)).await; // warm-up: model load and first steps
    let mut out = format!("Each client holds a WatchTask stream and calls GetTask every {interval_ms} ms; client and daemon share the machine's cores.\n\n");
    out.push_str("| clients | GetTask p50 ms | GetTask p99 ms | calls | training samples/s | vs no clients |\n|---|---|---|---|---|---|\n");
    let base = throughput(&mut c, &task.id, window).await?;
    out.push_str(&format!("| 0 | - | - | 0 | {base:.1} | 1.00 |\n"));
    for &n in clients {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut handles = Vec::new();
        for _ in 0..n {
            let (addr, id, stop) = (d.addr.clone(), task.id.clone(), stop.clone());
            handles.push(tokio::spawn(async move {
                let mut c = client(&addr).await?;
                let mut watch = c
                    .watch_task(pb::WatchTaskRequest {
                        task_id: id.clone(),
                        after_seq: 0,
                    })
                    .await?
                    .into_inner();
                tokio::spawn(async move { while let Ok(Some(_)) = watch.message().await {} });
                let mut lat = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    c.get_task(pb::GetTaskRequest {
                        task_id: id.clone(),
                    })
                    .await?;
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                    tokio::time::sleep(Duration::from_millis(interval_ms)).await;
                }
                anyhow::Ok(lat)
            }));
        }
        let sps = throughput(&mut c, &task.id, window).await?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut lat = Vec::new();
        for h in handles {
            lat.extend(h.await??);
        }
        lat.sort_by(|a, b| a.partial_cmp(b).expect("latencies are finite"));
        out.push_str(&format!(
            "| {n} | {:.2} | {:.2} | {} | {sps:.1} | {:.2} |\n",
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat.len(),
            sps / base
        ));
    }
    c.cancel_task(pb::CancelTaskRequest {
        task_id: task.id.clone(),
    })
    .await?;
    d.stop().await?;
    Ok(out)
}

pub async fn ingest(n_png: usize, n_jpeg: usize) -> Result<String> {
    // dispatch = false: tasks are only accepted and stored, so training does not compete.
    let d = daemon(vec![("CTP__DISPATCH".into(), "false".into())]).await?;
    let mut c = client(&d.addr).await?;
    let mut out = String::from(
        "| images | samples | MB | seconds | samples/s | MB/s |\n|---|---|---|---|---|---|\n",
    );
    for (name, s) in [
        ("64 px PNG", samples(n_png, 64, false)),
        ("224 px JPEG", samples(n_jpeg, 224, true)),
    ] {
        let mb = s
            .iter()
            .map(|x| x.image.len() + x.caption.len())
            .sum::<usize>() as f64
            / 1e6;
        let n = s.len();
        let t = Instant::now();
        submit(&mut c, header(&format!("ingest-{}", name.len()), 1), s, 64).await?;
        let secs = t.elapsed().as_secs_f64();
        out.push_str(&format!(
            "| {name} | {n} | {mb:.1} | {secs:.2} | {:.0} | {:.1} |\n",
            n as f64 / secs,
            mb / secs
        ));
    }
    d.stop().await?;
    Ok(out)
}
