//! A real S3-compatible server for tests: moto (`moto_server`, installed and pinned by
//! `scripts/setup-moto.sh` into `$CTP_VENV`).
//!
//! [`moto()`] starts one server per test process on a free port and shares it between the
//! tests that run at the same time; the last [`Arc`] dropped kills it (a watcher process also
//! kills it if the test process dies without unwinding). Each test takes its own bucket with
//! [`Moto::bucket`]. moto keeps everything in memory; to simulate an outage, put the proxy of
//! `support/proxy.rs` in between and cut it, rather than killing moto.
//!
//! moto decides `If-None-Match: *` by a check and then a store without a lock, so on its
//! threaded server two racing create-only writes can both pass (seen with multipart
//! completions), which S3 never allows. The server therefore runs moto_server's own `main()`
//! through `moto_serial.py`, with the Python of `moto_server`'s venv, taking PUT, POST and
//! DELETE under one lock (reads stay concurrent): the races the tests run are then decided
//! atomically, as on S3.
//!
//! If `moto_server` is not found, the test fails (it is never skipped): run
//! `scripts/setup-moto.sh`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// A running moto server.
pub struct Moto {
    child: Child,
    watcher: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    log: PathBuf,
    shim: PathBuf,
}

static SHARED: Mutex<Weak<Moto>> = Mutex::new(Weak::new());

/// The moto server of this test process (started on first use).
pub fn moto() -> Arc<Moto> {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = shared.upgrade() {
        return m;
    }
    let m = Arc::new(Moto::start());
    *shared = Arc::downgrade(&m);
    m
}

/// `$CTP_VENV/bin/moto_server` (default venv `~/.cache/ctp/venv`), else `moto_server` on PATH.
pub fn moto_binary() -> Option<PathBuf> {
    let venv = std::env::var_os("CTP_VENV").map(PathBuf::from).or_else(|| {
        let cache = std::env::var_os("CTP_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ctp")))?;
        Some(cache.join("venv"))
    });
    let in_venv = venv
        .map(|v| v.join("bin/moto_server"))
        .filter(|p| p.is_file());
    in_venv.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    })
}

/// The Python that runs `moto_server` (its `#!` line), as a command and its arguments.
fn interpreter(bin: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(bin).unwrap_or_default();
    let shebang = text.lines().next().and_then(|l| l.strip_prefix("#!"));
    match shebang.map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>()) {
        Some(cmd) if !cmd.is_empty() => cmd,
        _ => vec![bin.with_file_name("python3").to_string_lossy().into_owned()],
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Moto {
    /// Starts a fresh server and waits until it answers.
    pub fn start() -> Moto {
        let bin = moto_binary().unwrap_or_else(|| {
            panic!(
                "moto_server not found in $CTP_VENV/bin or on PATH: run scripts/setup-moto.sh \
                 (it installs the pinned moto[s3,server] the S3 tests need)"
            )
        });
        let port = free_port();
        let log = std::env::temp_dir().join(format!("ctp-moto-{}-{port}.log", std::process::id()));
        let shim =
            std::env::temp_dir().join(format!("ctp-moto-serial-{}-{port}.py", std::process::id()));
        std::fs::write(&shim, include_str!("moto_serial.py")).unwrap();
        let python = interpreter(&bin);
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&python[0])
            .args(&python[1..])
            .arg(&shim)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", bin.display()));
        // If this process dies without unwinding, the watcher stops moto.
        let watcher = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {} 2>/dev/null; do sleep 1; done; kill {} 2>/dev/null",
                std::process::id(),
                child.id()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let mut m = Moto {
            child,
            watcher,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            shim,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = m.child.try_wait().unwrap() {
                panic!("moto_server exited with {status}: {}", m.log_text());
            }
            if m.request("GET", "/").is_ok_and(|s| s == 200) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer within 60 s: {}",
                m.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One unsigned HTTP/1.1 request (moto does not check signatures); the status code.
    pub fn request(&self, method: &str, path: &str) -> std::io::Result<u16> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        let text = String::from_utf8_lossy(&head);
        text.get(9..12)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {text:?}")))
    }

    /// Creates a new, empty bucket unique to this call.
    pub fn bucket(&self) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "ctp-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let status = self.request("PUT", &format!("/{name}")).unwrap();
        assert_eq!(status, 200, "creating bucket {name}: {}", self.log_text());
        name
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(w) = &mut self.watcher {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.shim);
    }
}
