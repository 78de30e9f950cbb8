//! A real, throwaway PostgreSQL server for integration tests — no Docker, no shared
//! database, nothing to set up by hand.
//!
//! The server is a fresh cluster (`initdb`) in a temporary directory, reachable only
//! through a Unix socket in that directory (`listen_addresses = ''`), so parallel test
//! binaries never collide on a port. Durability is switched off (`fsync`,
//! `synchronous_commit`, `full_page_writes`) because the data is thrown away.
//!
//! # Usage
//! ```ignore
//! #[path = "support/postgres.rs"]
//! mod pg;
//!
//! #[tokio::test]
//! async fn works_on_postgres() {
//!     if pg::skip_requested() {
//!         return;
//!     }
//!     // One server per test binary, one fresh database per test:
//!     let url = pg::PgServer::shared().fresh_database().await;
//!     let store = ctp::store::Store::connect(&url).await.unwrap();
//!     // ...
//! }
//! ```
//! A test that needs its own server (e.g. to stop it mid-test) uses
//! `PgServer::start()`; dropping the value stops the server and deletes its files.
//!
//! # Requirements
//! PostgreSQL server binaries: `$CTP_PG_BINDIR`, else `pg_config --bindir`, else the
//! newest `/usr/lib/postgresql/*/bin`. `initdb` refuses to run as root, so when the
//! tests run as root the server runs as the existing `postgres` OS user (the one the
//! Debian `postgresql` package creates); the harness never creates users. Set
//! `CTP_SKIP_POSTGRES_TESTS=1` to skip Postgres tests where no server is installed.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{chown, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};

/// The port number only names the socket file (`.s.PGSQL.<port>`) inside the private
/// socket directory; no TCP port is opened.
const PORT: u16 = 5432;

/// How long the server may take to accept connections after it starts.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// True if `CTP_SKIP_POSTGRES_TESTS=1`: Postgres tests should return early.
pub fn skip_requested() -> bool {
    std::env::var("CTP_SKIP_POSTGRES_TESTS").is_ok_and(|v| v == "1")
}

/// A running PostgreSQL server with a trust-authenticated `postgres` superuser.
pub struct PgServer {
    /// Temporary directory holding `data/` (the cluster), the socket and `server.log`;
    /// deleted on drop.
    dir: tempfile::TempDir,
    /// The postmaster.
    child: Child,
    /// The server binaries used.
    bindir: PathBuf,
}

impl PgServer {
    /// The server shared by all tests of this test binary, started on first use.
    ///
    /// A `static` is never dropped, so a small watchdog process stops the server and
    /// deletes its directory once the test process has exited.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            let server = PgServer::start().expect("starting the test PostgreSQL server");
            server.spawn_watchdog();
            server
        })
    }

    /// Initialises a new cluster in a temporary directory and starts a server on it.
    ///
    /// # Errors
    /// Fails if the binaries are missing, `initdb` fails, or the server is not ready in
    /// time (the server log is included in the error).
    pub fn start() -> std::io::Result<PgServer> {
        let bindir = find_bindir()?;
        let run_as = server_user()?;
        let dir = tempfile::Builder::new().prefix("ctp-pg-").tempdir()?;
        if let Some((uid, gid)) = run_as {
            chown(dir.path(), Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        let init = as_user(Command::new(bindir.join("initdb")), run_as, dir.path())
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .arg("-D")
            .arg(&data)
            .stdin(Stdio::null())
            .output()?;
        if !init.status.success() {
            return Err(other(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&init.stdout),
                String::from_utf8_lossy(&init.stderr)
            )));
        }
        fs::File::create(dir.path().join("server.log"))?;
        if let Some((uid, gid)) = run_as {
            chown(dir.path().join("server.log"), Some(uid), Some(gid))?;
        }
        let child = spawn_server(&bindir, run_as, dir.path())?;
        let server = PgServer { dir, child, bindir };
        server.wait_ready()?;
        Ok(server)
    }

    /// Stops the server with a fast shutdown (what `pg_ctl stop -m fast` sends: SIGINT,
    /// which disconnects every client) and waits until it has exited.
    pub fn stop_fast(&mut self) -> std::io::Result<()> {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts the stopped server again on the same cluster and socket, and waits until
    /// it accepts connections. `stop_fast` then `start_again` is `pg_ctl restart -m fast`.
    pub fn start_again(&mut self) -> std::io::Result<()> {
        self.child = spawn_server(&self.bindir, server_user()?, self.dir.path())?;
        self.wait_ready()
    }

    /// Directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// URL of database `db` as the `postgres` superuser, over the Unix socket.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@localhost/{db}?host={}&port={PORT}",
            self.socket_dir().display()
        )
    }

    /// Creates an empty database with a unique name and returns its URL, so tests
    /// sharing the server never see each other's rows.
    pub async fn fresh_database(&self) -> String {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connecting to the test server's postgres database");
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .expect("CREATE DATABASE");
        admin.close().await.ok();
        self.url(&name)
    }

    /// Polls `pg_isready` until the server accepts connections.
    fn wait_ready(&self) -> std::io::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let ready = Command::new(self.bindir.join("pg_isready"))
                .arg("-h")
                .arg(self.socket_dir())
                .args(["-p", &PORT.to_string(), "-q"])
                .status()?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log =
                    fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                return Err(other(format!("PostgreSQL did not start:\n{log}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts a detached shell that, once this process is gone, stops the server (fast
    /// shutdown) and removes its directory. It is deliberately never waited for: it must
    /// outlive this process.
    #[allow(clippy::zombie_processes)]
    fn spawn_watchdog(&self) {
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -INT {pg} 2>/dev/null; \
             sleep 3; kill -KILL {pg} 2>/dev/null; rm -rf '{dir}'",
            me = std::process::id(),
            pg = self.child.id(),
            dir = self.dir.path().display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the PostgreSQL watchdog");
    }
}

impl Drop for PgServer {
    /// Fast shutdown (SIGINT: disconnect clients, no checkpoint wait), then SIGKILL if
    /// the server is still up after a few seconds.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `postgres` on the cluster in `dir/data`, its socket in `dir`, appending to
/// `dir/server.log`.
fn spawn_server(bindir: &Path, run_as: Option<(u32, u32)>, dir: &Path) -> std::io::Result<Child> {
    let log = fs::OpenOptions::new()
        .append(true)
        .open(dir.join("server.log"))?;
    as_user(Command::new(bindir.join("postgres")), run_as, dir)
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-k")
        .arg(dir)
        .args(["-p", &PORT.to_string()])
        .args(["-c", "listen_addresses="])
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

/// Where the server binaries are (see the module docs).
fn find_bindir() -> std::io::Result<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("CTP_PG_BINDIR").map(PathBuf::from) {
        return if has_initdb(&dir) {
            Ok(dir)
        } else {
            Err(other(format!(
                "no initdb in CTP_PG_BINDIR={}",
                dir.display()
            )))
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return Ok(dir);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_initdb(dir))
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, dir)| dir).ok_or_else(|| {
        other(
            "PostgreSQL server binaries not found: install postgresql, set CTP_PG_BINDIR, \
             or set CTP_SKIP_POSTGRES_TESTS=1"
                .into(),
        )
    })
}

/// `None` when not root (run the server as ourselves); as root, the uid and gid of the
/// `postgres` OS user, because `initdb` and `postgres` refuse to run as root.
fn server_user() -> std::io::Result<Option<(u32, u32)>> {
    // The owner of /proc/self is this process' effective uid (no unsafe libc call).
    if fs::metadata("/proc/self")?.uid() != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres") && f.len() > 3)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            other(
                "tests run as root, and initdb refuses root, but there is no `postgres` OS \
                 user to run the server as; run the tests as a normal user or install the \
                 postgresql package (which creates it)"
                    .into(),
            )
        })
}

/// Makes `cmd` run as `user` (uid, gid) if given, in `cwd` (a directory that user can
/// enter: the caller's working directory may be closed to it).
fn as_user(mut cmd: Command, user: Option<(u32, u32)>, cwd: &Path) -> Command {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd.current_dir(cwd);
    cmd
}

fn other(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}
