//! Peak GPU memory of the bench process.
use std::process::Command;

/// Peak GPU memory of this process, polled from NVML through `nvidia-smi` (tch does not expose
/// the CUDA caching allocator's statistics). Includes the CUDA context (~0.5 GiB).
pub struct GpuPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<f64>>,
}

pub const SOURCE: &str = "nvidia-smi --query-compute-apps (NVML, includes the CUDA context)";

impl GpuPeak {
    pub fn start() -> GpuPeak {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let pid = std::process::id().to_string();
        let thread = std::thread::spawn(move || {
            let mut peak: Option<f64> = None;
            loop {
                let done = flag.load(std::sync::atomic::Ordering::SeqCst);
                let out = Command::new("nvidia-smi")
                    .args([
                        "--query-compute-apps=pid,used_memory",
                        "--format=csv,noheader,nounits",
                    ])
                    .output()
                    .ok()?;
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let mut f = line.split(',').map(str::trim);
                    if f.next() == Some(pid.as_str()) {
                        if let Some(mib) = f.next().and_then(|m| m.parse::<f64>().ok()) {
                            peak = Some(peak.map_or(mib, |p: f64| p.max(mib)));
                        }
                    }
                }
                if done {
                    return peak;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
        GpuPeak { stop, thread }
    }

    pub fn finish(self) -> Option<f64> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().ok().flatten()
    }
}
