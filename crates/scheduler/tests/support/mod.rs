//! Test support: a real `tug server` (through tug-testkit), a kube client
//! for it, Nodes created through the API (no kubelet: plain objects with
//! allocatable and a Ready condition set through the status subresource),
//! and the scheduler running in-process.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tug_scheduler::SchedulerConfig;
use tug_testkit::{Backend, TugServer};

pub use tug_testkit::tug_binary;

fn init_tracing() {
    let filter = std::env::var("TUG_TEST_LOG").unwrap_or_else(|_| "tug_scheduler=debug".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

pub struct Cluster {
    pub server: TugServer,
    pub client: Client,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        init_tracing();
        let bin = tug_binary();
        // The server's own scheduler would compete with the one under test.
        // The test nodes have no Lease and no kubelet heartbeat: a long grace
        // period keeps the node lifecycle controller from marking them
        // Unknown (and tainting them unreachable) mid-test.
        let args = ["--disable-scheduler", "--node-monitor-grace-period", "1h"];
        let server = tokio::task::spawn_blocking(move || TugServer::start_with_args(&bin, Backend::Sqlite, &args))
            .await
            .expect("starting tug server");
        let client = server.client().await;
        Cluster { server, client }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// A node with allocatable = capacity = the given resources, a Ready
    /// condition, optional labels and taints.
    pub async fn create_node(&self, name: &str, cpu: &str, memory: &str, labels: Value, taints: Value) -> Node {
        let mut all_labels = json!({"kubernetes.io/hostname": name});
        if let Some(m) = labels.as_object() {
            for (k, v) in m {
                all_labels[k] = v.clone();
            }
        }
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": all_labels},
            "spec": {"taints": taints},
        }))
        .expect("node");
        let nodes = self.nodes();
        nodes.create(&PostParams::default(), &node).await.unwrap_or_else(|e| panic!("creating node {name}: {e}"));
        let resources = json!({"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"});
        let now = jiff::Timestamp::now().to_string();
        let status = json!({"status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test node", "lastHeartbeatTime": now, "lastTransitionTime": now}]
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| panic!("setting the status of node {name}: {e}"))
    }

    pub async fn create_pod(&self, pod: Value) -> Pod {
        let pod: Pod = serde_json::from_value(pod).expect("pod");
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        Api::<Pod>::namespaced(self.client.clone(), &ns).create(&PostParams::default(), &pod).await.unwrap_or_else(|e| panic!("creating pod {name}: {e}"))
    }

    pub async fn get_pod(&self, name: &str) -> Option<Pod> {
        self.pods().get_opt(name).await.expect("get pod")
    }

    pub async fn node_of(&self, name: &str) -> Option<String> {
        self.get_pod(name).await.and_then(|p| p.spec.and_then(|s| s.node_name)).filter(|n| !n.is_empty())
    }

    /// Waits until `f` returns Some, polling every 100ms.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, timeout: Duration, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_bound(&self, name: &str) -> String {
        self.wait_for(&format!("pod {name} to be bound"), Duration::from_secs(30), || async { self.node_of(name).await }).await
    }

    /// Events about the pod with this reason.
    pub async fn events_for(&self, pod: &str, reason: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let list = events.list(&ListParams::default()).await.expect("list events");
        list.items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(pod) && e.reason.as_deref() == Some(reason))
            .collect()
    }

    /// Waits for an event about `pod` with `reason` and returns its message.
    pub async fn wait_event(&self, pod: &str, reason: &str) -> String {
        self.wait_for(&format!("a {reason} event for {pod}"), Duration::from_secs(30), || async {
            self.events_for(pod, reason).await.into_iter().next().and_then(|e| e.message)
        })
        .await
    }

    /// Starts a scheduler in-process; it stops when the handle drops.
    pub fn start_scheduler(&self, config: SchedulerConfig) -> SchedulerHandle {
        let (tx, rx) = oneshot::channel::<()>();
        let metrics = config.metrics.clone();
        let client = self.client.clone();
        let task = tokio::spawn(async move {
            tug_scheduler::run(client, config, async move {
                let _ = rx.await;
            })
            .await
        });
        SchedulerHandle { stop: Some(tx), task: Some(task), metrics }
    }
}

pub struct SchedulerHandle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub metrics: Arc<tug_scheduler::Metrics>,
}

impl SchedulerHandle {
    /// Graceful stop (releases the lease); returns run()'s result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("task");
        tokio::time::timeout(Duration::from_secs(20), task).await.expect("scheduler stops within 20s").expect("scheduler task")
    }

    /// Kills the scheduler without releasing anything (a crash).
    pub fn kill(mut self) {
        self.stop.take();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub fn scheduled(&self) -> u64 {
        self.metrics.scheduled.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_leader(&self) -> bool {
        self.metrics.is_leader.load(std::sync::atomic::Ordering::Relaxed) == 1
    }
}

impl Drop for SchedulerHandle {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A pod with one container requesting `cpu` (and 64Mi).
pub fn pod(name: &str, cpu: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"test": "scheduler"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]
        }
    })
}

pub fn condition(pod: &Pod, type_: &str) -> Option<(String, String, String)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
}
