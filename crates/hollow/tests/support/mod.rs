//! Test support: a real `tug server` (through tug-testkit) and a kube client for it.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use kube::Client;

pub use tug_testkit::tug_binary;

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Shown for failing tests only (captured by the harness).
    let filter = std::env::var("TUG_TEST_LOG").unwrap_or_else(|_| "tug_hollow=info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

pub struct Cluster {
    pub server: tug_testkit::TugServer,
    pub client: Client,
}

impl Cluster {
    pub async fn start() -> Cluster {
        init();
        let bin = tug_binary();
        // No controllers: these tests look at what the hollow kubelets alone
        // write (request counters, fallback pod ranges without node IPAM) and
        // play the node controller themselves where they need it.
        let server = tokio::task::spawn_blocking(move || {
            tug_testkit::TugServer::start_with_args(&bin, tug_testkit::Backend::Sqlite, &["--disable-controller-manager"])
        })
        .await
        .expect("starting tug server");
        let client = server.client().await;
        Cluster { server, client }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` and the
/// last value seen after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() > deadline {
                    panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fast configuration for tests: short intervals so renewals are observable.
pub fn fast_config(nodes: usize) -> tug_hollow::HollowConfig {
    tug_hollow::HollowConfig {
        nodes,
        renew_interval: Duration::from_secs(1),
        status_interval: Duration::from_secs(5),
        restart_backoff: Duration::from_secs(1),
        ..Default::default()
    }
}

/// VmRSS of this process in KiB.
pub fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Successful (2xx) requests the server counted for `verb` on `resource`
/// (`apiserver_request_total` from `/metrics`, read with kubectl).
pub fn requests(server: &tug_testkit::TugServer, verb: &str, resource: &str) -> u64 {
    let out = server.kubectl(&["get", "--raw", "/metrics"]);
    assert!(out.status.success(), "kubectl get --raw /metrics: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let (v, r) = (format!("verb=\"{verb}\""), format!("resource=\"{resource}\""));
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains(&v) && l.contains(&r) && l.contains("code=\"2"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
