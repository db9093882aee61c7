//! Test support shared by Tugboat's crates: real processes on loopback.
//!
//! - [`etcd::EtcdServer`]: a real etcd for the etcd backend.
//! - [`TugServer`]: the real `tug server` binary with its own data dir and
//!   port, optionally on an etcd, and [`TugServer::kubectl`] running the real
//!   `/usr/bin/kubectl` against it, and [`TugServer::client`], a kube client
//!   for it.
//! - [`node`]: the node agent's test image and registry
//!   ([`node::TestRegistry`]) and a guard removing what an agent left on
//!   the machine ([`node::NodeCleanup`]).
//!
//! Every process is killed and every directory removed on drop, also when
//! the test fails.

pub mod etcd;
pub mod node;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Which store a [`TugServer`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Etcd,
}

/// A running `tug server`.
pub struct TugServer {
    pub port: u16,
    pub data_dir: PathBuf,
    pub kubeconfig: PathBuf,
    binary: PathBuf,
    extra_args: Vec<String>,
    backend: Backend,
    child: Option<Child>,
    // Dropped after the server (field order), so etcd outlives it.
    etcd: Option<etcd::EtcdServer>,
    _dir: tempfile::TempDir,
}

impl TugServer {
    /// Starts `binary server` on a fresh data dir and waits until its
    /// kubeconfig is written and `/readyz` answers.
    pub fn start(binary: &Path, backend: Backend) -> TugServer {
        Self::start_with_args(binary, backend, &[])
    }

    /// Like [`TugServer::start`], with extra `tug server` flags (say
    /// `--disable-scheduler` for a test that runs its own).
    pub fn start_with_args(binary: &Path, backend: Backend, extra: &[&str]) -> TugServer {
        let dir = tempfile::Builder::new().prefix("tug-test-").tempdir().expect("temp dir");
        let etcd = match backend {
            Backend::Sqlite => None,
            Backend::Etcd => Some(etcd::EtcdServer::start(&dir.path().join("etcd"), false)),
        };
        let data_dir = dir.path().join("data");
        let mut server = TugServer {
            port: 0,
            kubeconfig: data_dir.join("kubeconfig.yaml"),
            data_dir,
            binary: binary.to_path_buf(),
            extra_args: extra.iter().map(|a| a.to_string()).collect(),
            backend,
            child: None,
            etcd,
            _dir: dir,
        };
        server.spawn_ready();
        server
    }

    fn spawn(&mut self) {
        self.port = free_port();
        let _ = std::fs::remove_file(&self.kubeconfig);
        std::fs::create_dir_all(&self.data_dir).expect("creating the data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the server log");
        let mut cmd = Command::new(&self.binary);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--https-listen-port", &self.port.to_string()])
            .args(["--bind-address", "127.0.0.1"])
            .arg("--disable-agent")
            .args(&self.extra_args)
            .env("TUG_LOG", std::env::var("TUG_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let Some(e) = &self.etcd {
            cmd.args(["--datastore-endpoint", &e.url]);
        }
        self.child = Some(cmd.spawn().expect("spawning tug server"));
    }

    /// Starts the process; a server that exits during startup (its port was
    /// taken between probing and binding) is retried on another port.
    fn spawn_ready(&mut self) {
        for attempt in 1..=3 {
            self.spawn();
            if self.wait_ready(Duration::from_secs(60)) {
                return;
            }
            assert!(attempt < 3, "tug server kept exiting during startup:\n{}", self.log());
        }
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.parent().expect("data dir has a parent").join("server.log")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `true` once ready, `false` if the process exited; panics on timeout.
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()).is_some() {
                self.child = None;
                return false;
            }
            if self.kubeconfig.exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.status.success() {
                    return true;
                }
            }
            assert!(Instant::now() < deadline, "tug server did not become ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// SIGKILLs the server (no clean shutdown), then starts it again on the
    /// same data dir and store.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.spawn_ready();
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs the real kubectl against this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("running kubectl")
    }

    /// A kubectl command to customise (stdin, env) before running.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_binary());
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.data_dir.parent().expect("parent"))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// A kube client from the server's admin kubeconfig.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("reading the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .expect("a client config from the kubeconfig");
        kube::Client::try_from(config).expect("a kube client from the server's kubeconfig")
    }
}

impl Drop for TugServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `tug` binary of this workspace, for crates other than `tug` (whose
/// tests use `env!("CARGO_BIN_EXE_tug")`): `TUG_BIN`, else
/// `tug` beside the test executable's `deps/` directory. `cargo test
/// --workspace` builds it before any test
/// runs; a lone `cargo test -p <crate>` needs `cargo build -p tug` first.
pub fn tug_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TUG_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in `<target>/<profile>/deps/`; the binary is
    // `<target>/<profile>/tug`.
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("<target>/<profile>/deps/<test>");
    let p = profile_dir.join("tug");
    assert!(p.exists(), "the tug binary is not at {}: run `cargo build -p tug` first (or set TUG_BIN)", p.display());
    p
}

/// The kubectl under test: `TUG_TEST_KUBECTL`, else `/usr/bin/kubectl`.
pub fn kubectl_binary() -> PathBuf {
    let p = std::env::var_os("TUG_TEST_KUBECTL").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/kubectl"));
    assert!(p.exists(), "kubectl not found at {} (set TUG_TEST_KUBECTL)", p.display());
    p
}
