//! A real etcd on free loopback ports, for tests that need the etcd backend.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::free_port;

/// Overrides where the etcd binary is looked for.
pub const ETCD_BIN_ENV: &str = "TUG_TEST_ETCD";

/// The etcd binary. Panics (failing the test, never skipping it) when there
/// is none: the etcd half of the conformance suite needs a real etcd.
pub fn etcd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os(ETCD_BIN_ENV) {
        let p = PathBuf::from(p);
        assert!(p.exists(), "{ETCD_BIN_ENV}={} does not exist", p.display());
        return p;
    }
    let mut candidates = vec![PathBuf::from("/usr/bin/etcd")];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("etcd")));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "etcd binary not found (looked at /usr/bin/etcd and $PATH): the etcd conformance \
             tests need a real etcd 3.4+. Install it with `apt-get install -y etcd-server` \
             or point {ETCD_BIN_ENV} at an etcd binary."
            )
        })
}

/// Runs etcd under a tiny shell watchdog that kills it (and optionally
/// removes its directory) as soon as our end of its stdin pipe closes —
/// on drop, on a panicking test, and even when this test process exits or is
/// killed, so no etcd outlives the tests (also for the shared, never-dropped
/// server in a `static`).
const WATCHDOG: &str = r#"
"$0" "$@" </dev/null >>"$ETCD_LOG" 2>&1 &
pid=$!
echo "$pid"
read _ignored
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
if [ -n "$ETCD_RMDIR" ]; then rm -rf "$ETCD_RMDIR"; fi
"#;

/// A running etcd on free loopback ports.
pub struct EtcdServer {
    pub url: String,
    pub dir: PathBuf,
    watchdog: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
}

enum StartError {
    Died(String),
    Timeout(String),
}

impl EtcdServer {
    /// Starts etcd with its data in `dir/data` and its log in `dir/etcd.log`.
    /// With `remove_dir`, `dir` is deleted once etcd is stopped.
    pub fn start(dir: &Path, remove_dir: bool) -> EtcdServer {
        let bin = etcd_binary();
        let mut last = String::new();
        for attempt in 1..=3 {
            std::fs::create_dir_all(dir).expect("creating etcd dir");
            let server = Self::spawn(&bin, dir, remove_dir);
            match server.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return server,
                Err(StartError::Died(log)) | Err(StartError::Timeout(log)) if attempt < 3 => {
                    // Most likely a port grabbed by someone else in between.
                    eprintln!("etcd failed to start (attempt {attempt}), retrying:\n{log}");
                    last = log;
                    drop(server);
                }
                Err(StartError::Died(log)) => panic!("etcd exited during startup:\n{log}"),
                Err(StartError::Timeout(log)) => panic!("etcd did not become healthy:\n{log}"),
            }
        }
        panic!("etcd failed to start:\n{last}")
    }

    fn spawn(bin: &Path, dir: &Path, remove_dir: bool) -> EtcdServer {
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let data = dir.join("data");
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(bin)
            .args(["--name", "default"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &url])
            .args(["--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .env("ETCD_LOG", dir.join("etcd.log"))
            .env(
                "ETCD_RMDIR",
                if remove_dir {
                    dir.as_os_str()
                } else {
                    "".as_ref()
                },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning sh for etcd");
        let stdin = watchdog.stdin.take();
        let mut line = String::new();
        BufReader::new(watchdog.stdout.take().expect("watchdog stdout"))
            .read_line(&mut line)
            .expect("reading etcd pid");
        let pid = line.trim().parse().expect("etcd pid from watchdog");
        EtcdServer {
            url,
            dir: dir.to_path_buf(),
            watchdog,
            stdin,
            pid,
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            // The state follows the parenthesised command name.
            Ok(stat) => !stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                .unwrap_or(true),
            Err(_) => false,
        }
    }

    fn healthy(&self) -> bool {
        let addr: SocketAddr = match self.url.trim_start_matches("http://").parse() {
            Ok(a) => a,
            Err(_) => return false,
        };
        let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        if conn
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut body = String::new();
        let _ = conn.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.healthy() {
                return Ok(());
            }
            if !self.alive() {
                return Err(StartError::Died(self.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(StartError::Timeout(self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // EOF on the watchdog's stdin: it kills etcd, reaps it, cleans up.
        self.stdin.take();
        let _ = self.watchdog.wait();
    }
}

/// The etcd shared by all tests of this binary that do not compact
/// (compaction is global to an etcd). Started on first use; stopped and its
/// directory removed by the watchdog when the test process exits.
pub fn shared_etcd() -> &'static EtcdServer {
    static SHARED: OnceLock<EtcdServer> = OnceLock::new();
    SHARED.get_or_init(|| {
        // Fail on a missing binary before creating a directory nobody removes.
        etcd_binary();
        let dir = tempfile::Builder::new()
            .prefix("tug-etcd-shared-")
            .tempdir()
            .expect("temp dir")
            .keep();
        EtcdServer::start(&dir, true)
    })
}

