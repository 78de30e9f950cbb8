//! CUDA readiness, checked without a GPU: the binaries keep libtorch's CUDA libraries as
//! NEEDED (else libtorch never registers CUDA), `--device cuda` without a usable GPU fails at
//! startup with one line naming the cause, and `--device auto` reports its choice (device and
//! precision) in the startup log and in /metrics.
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::assets;

const CTPD: &str = env!("CARGO_BIN_EXE_ctpd");

fn torch_lib() -> PathBuf {
    let out = Command::new(assets::python())
        .args([
            "-c",
            "import torch,os;print(os.path.join(os.path.dirname(torch.__file__),'lib'))",
        ])
        .output()
        .expect("running the torch venv's python");
    assert!(out.status.success(), "python cannot import torch");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn ctpd_keeps_libtorch_cuda_needed_when_torch_ships_it() {
    let lib = torch_lib();
    let needed = ["libtorch_cuda.so", "libc10_cuda.so"];
    if !needed.iter().all(|n| lib.join(n).exists()) {
        eprintln!(
            "skipped: {} has no CUDA libraries (CPU-only torch)",
            lib.display()
        );
        return;
    }
    let out = match Command::new("readelf").args(["-d", CTPD]).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: readelf is not installed (binutils)");
            return;
        }
        Err(e) => panic!("readelf: {e}"),
    };
    assert!(out.status.success(), "readelf -d {CTPD} failed");
    let dynamic = String::from_utf8_lossy(&out.stdout);
    for n in needed {
        assert!(
            dynamic
                .lines()
                .any(|l| l.contains("(NEEDED)") && l.contains(&format!("[{n}]"))),
            "{n} is not NEEDED by ctpd:\n{dynamic}"
        );
    }
}

fn ctpd(dir: &std::path::Path, extra: &[&str]) -> Command {
    let mut c = Command::new(CTPD);
    c.args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env("CTP_ASSETS", assets::assets())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn device_cuda_without_a_usable_gpu_fails_at_startup_with_one_line() {
    if tch::Cuda::is_available() {
        eprintln!("skipped: this machine has a usable GPU");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = ctpd(dir.path(), &["--device", "cuda"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ctpd --device cuda kept running without a GPU");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "exit status {status}");
    let err = strip_ansi(&err);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("ctpd: ") && last.contains("device \"cuda\"") && last.contains("CUDA"),
        "the last line should name the cause: {err}"
    );
    assert!(!err.contains("backtrace"), "{err}");
}

#[test]
fn device_auto_reports_device_and_precision_in_log_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let mut child = ctpd(
        dir.path(),
        &["--device", "auto", "--metrics-listen", &metrics],
    )
    .spawn()
    .unwrap();
    let (device, precision) = if tch::Cuda::is_available() {
        // `auto` resolves per preset on CUDA (small fp32+TF32, base bf16): the engine reports
        // the setting, each version the precision it used.
        ("cuda:0", "auto")
    } else {
        ("cpu", "fp32")
    };
    // The log goes to stdout (tracing's default writer).
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log = String::new();
    while !log.contains("ctpd serving") {
        match lines.next() {
            Some(Ok(l)) => log.push_str(&(strip_ansi(&l) + "\n")),
            _ => break,
        }
    }
    let scrape = (|| {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&metrics).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    })()
    .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        log.contains(&format!("device={device}"))
            && log.contains(&format!("precision={precision}")),
        "startup log lacks the device/precision: {log}"
    );
    let want = format!("ctp_engine_info{{device=\"{device}\",precision=\"{precision}\"}} 1");
    assert!(scrape.contains(&want), "/metrics lacks {want}: {scrape}");
}
