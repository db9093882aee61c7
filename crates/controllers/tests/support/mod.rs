//! Test support: the real `tug server` binary on a free loopback port with
//! its own data dir, a kube client for it, and the controllers running
//! in-process against it. Everything is torn down on drop, also when the
//! test fails: the server is killed, the controllers aborted, the temp dir
//! removed.

#![allow(dead_code)]

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The `tug` binary under test: `TUG_BIN`, else `<target>/debug/tug` of
/// this workspace (build it first with `cargo build -p tug`).
pub fn tug_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TUG_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let p = target.join("debug").join("tug");
    assert!(p.exists(), "the tug binary is not at {}: run `cargo build -p tug` first (or set TUG_BIN)", p.display());
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

fn init_tracing() {
    // Captured per test by the harness; shown when a test fails.
    let filter = std::env::var("TUG_TEST_LOG").unwrap_or_else(|_| "tug_controllers=debug".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// A running `tug server`.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub kubeconfig: PathBuf,
    log: PathBuf,
    // Last: removed after the process is killed.
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server and waits until its kubeconfig exists and `/readyz` answers.
    pub async fn start() -> Server {
        let _ = rustls::crypto::ring::default_provider().install_default();
        init_tracing();
        let dir = tempfile::Builder::new().prefix("tug-controllers-test-").tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let mut server = Server { child: None, port: 0, kubeconfig: data_dir.join("kubeconfig.yaml"), log: dir.path().join("server.log"), _dir: dir };
        // A port can be taken between probing and binding: a server that
        // exits during startup is retried on another port.
        for _ in 0..3 {
            server.spawn(&data_dir);
            match server.wait_ready(Duration::from_secs(60)).await {
                Ok(()) => return server,
                Err(true) => {
                    server.kill();
                    let _ = std::fs::remove_file(&server.kubeconfig);
                }
                Err(false) => panic!("tug server did not become ready in 60s:\n{}", server.log()),
            }
        }
        panic!("tug server kept exiting during startup:\n{}", server.log());
    }

    fn spawn(&mut self, data_dir: &std::path::Path) {
        self.port = free_port();
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("server log");
        let child = Command::new(tug_binary())
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--https-listen-port", &self.port.to_string()])
            .args(["--bind-address", "127.0.0.1"])
            .arg("--disable-agent")
            .env("TUG_LOG", std::env::var("TUG_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawning tug server");
        self.child = Some(child);
    }

    /// `Err(true)` if the process exited, `Err(false)` on timeout.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    return Err(true);
                }
            }
            if self.kubeconfig.exists() {
                if let Ok(client) = self.try_client().await {
                    let req = http::Request::get("/readyz").body(Vec::new()).expect("request");
                    if let Ok(body) = client.request_text(req).await {
                        if body.trim() == "ok" {
                            return Ok(());
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_client(&self) -> anyhow::Result<Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// A client from the server's admin kubeconfig.
    pub async fn client(&self) -> Client {
        self.try_client().await.expect("a client from the server's kubeconfig")
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server with the controllers running against it.
pub struct Cluster {
    pub server: Server,
    pub client: Client,
    controllers: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Cluster {
    /// Starts a server and `tug_controllers::run_all` against it.
    pub async fn start() -> Cluster {
        let server = Server::start().await;
        let client = server.client().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let controllers = tokio::spawn(tug_controllers::run_all(server.client().await, stopped));
        Cluster { server, client, controllers, stop: Some(stop) }
    }

    /// Starts a server without controllers (to start one on its own).
    pub async fn bare() -> (Server, Client) {
        let server = Server::start().await;
        let client = server.client().await;
        (server, client)
    }

    /// Stops the controllers through their shutdown future and checks they
    /// stopped cleanly.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().expect("not stopped yet").send(());
        let r = tokio::time::timeout(Duration::from_secs(10), &mut self.controllers).await;
        match r {
            Ok(Ok(Ok(()))) => {}
            other => panic!("controllers did not shut down cleanly: {other:?}"),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.controllers.abort();
    }
}

/// Polls `f` every 100ms until it returns `Some`, or panics after `timeout`
/// with `what` and `context()` (e.g. the server log).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A typed object from JSON (test fixtures read better as JSON).
pub fn obj<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

/// An owner reference to `owner` (which must have been created, for its uid).
pub fn owner_ref<K: kube::Resource<DynamicType = ()>>(owner: &K, block: bool) -> OwnerReference {
    let meta = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().expect("named"),
        uid: meta.uid.clone().expect("created, so it has a uid"),
        controller: Some(true),
        block_owner_deletion: Some(block),
    }
}

/// The API status code of a kube error, if it is an API error.
pub fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
