//! Test support: the real `tug server` binary on a free loopback port with
//! its own data dir, a kube client for it, and the controllers running
//! in-process against it. Everything is torn down on drop, also when the
//! test fails: the server is killed, the controllers aborted, the temp dir
//! removed.

#![allow(dead_code)]

pub mod workloads;

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tug_testkit::{Backend, TugServer};

fn init_tracing() {
    // Captured per test by the harness; shown when a test fails.
    let filter = std::env::var("TUG_TEST_LOG").unwrap_or_else(|_| "tug_controllers=debug".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// A running `tug server` (the shared test kit's); `client()` (the kit's
/// [`TugServer::client`]) gives a kube client for it.
/// It runs no controllers or scheduler of its own (see [`Server::start`]).
pub struct Server(TugServer);

impl std::ops::Deref for Server {
    type Target = TugServer;
    fn deref(&self) -> &TugServer {
        &self.0
    }
}

impl Server {
    /// Starts the server without its own controllers and scheduler (the
    /// tests run the controllers in-process; two instances would both act)
    /// and waits until it is ready.
    pub async fn start() -> Server {
        let _ = rustls::crypto::ring::default_provider().install_default();
        init_tracing();
        let server = tokio::task::spawn_blocking(|| {
            TugServer::start_with_args(
                &tug_testkit::tug_binary(),
                Backend::Sqlite,
                &["--disable-controller-manager", "--disable-scheduler"],
            )
        })
        .await
        .expect("starting tug server");
        Server(server)
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
    /// Starts a server and every controller (`tug_controllers::run_all_with`)
    /// against it, with long node grace periods: the workload tests' Nodes
    /// have no kubelet (no Lease, no heartbeat), and the node lifecycle
    /// controller would otherwise mark them Unknown, taint them unreachable
    /// and their pods not ready mid-test (40s, or 60s from creation for a
    /// Node that never reported Ready). The node tests use their own config.
    pub async fn start() -> Cluster {
        let server = Server::start().await;
        let client = server.client().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = tug_controllers::ControllerConfig {
            node_monitor_grace_period: Duration::from_secs(3600),
            node_startup_grace_period: Duration::from_secs(3600),
            ..Default::default()
        };
        let controllers = tokio::spawn(tug_controllers::run_all_with(server.client().await, config, stopped));
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
