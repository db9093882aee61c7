//! Pod GC against the real `tug server` binary (build it first:
//! `cargo build -p tug`): orphans after the quarantine, terminating pods
//! nothing will finish, and terminated pods over the threshold.

use crate::support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{Cluster, eventually, obj};
use tug_controllers::ControllerConfig;

const WAIT: Duration = Duration::from_secs(30);
const QUARANTINE: Duration = Duration::from_secs(3);

fn config() -> ControllerConfig {
    ControllerConfig {
        pod_gc_period: Duration::from_millis(300),
        pod_gc_orphan_quarantine: QUARANTINE,
        terminated_pod_gc_threshold: 3,
        ..Default::default()
    }
}

struct Gc(tokio::task::JoinHandle<anyhow::Result<()>>);

impl Drop for Gc {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start(client: &Client) -> Gc {
    Gc(tokio::spawn(tug_controllers::pod_gc::run(
        client.clone(),
        config(),
    )))
}

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn create_node(client: &Client, name: &str, ready: &str, taints: Value) {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": name}, "spec": {"taints": taints}})),
        )
        .await
        .unwrap();
    let t = now();
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": t, "lastTransitionTime": t}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(status))
        .await
        .unwrap();
}

async fn create_pod(
    client: &Client,
    name: &str,
    node: Option<&str>,
    finalizer: bool,
    phase: &str,
) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut pod = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    if let Some(n) = node {
        pod["spec"]["nodeName"] = json!(n);
    }
    if finalizer {
        pod["metadata"]["finalizers"] = json!(["example.com/hold"]);
    }
    pods.create(&PostParams::default(), &obj(pod))
        .await
        .unwrap();
    let mut status = json!({"status": {"phase": phase}});
    if phase == "Failed" && name.starts_with("evicted") {
        status["status"]["reason"] = json!("Evicted");
    }
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap()
}

async fn release(client: &Client, name: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let _ = pods
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await;
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_after_quarantine_and_terminating_pods_nothing_will_finish() {
    let (_server, client) = Cluster::bare().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create_node(&client, "alive", "True", json!([])).await;
    create_node(&client, "dead", "False", json!([{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}])).await;

    // Orphans: bound to a Node that does not exist. One is held by a
    // finalizer so what pod GC did to it can be seen.
    create_pod(&client, "orphan", Some("ghost"), false, "Running").await;
    create_pod(&client, "orphan-held", Some("ghost"), true, "Running").await;
    // Its Node shows up during the quarantine: not an orphan.
    create_pod(&client, "late", Some("late-node"), false, "Running").await;
    create_pod(&client, "kept", Some("alive"), false, "Running").await;
    // Terminating on an out-of-service Node, and on a healthy one.
    create_pod(&client, "stuck", Some("dead"), false, "Running").await;
    create_pod(&client, "lingering", Some("alive"), false, "Running").await;
    // Terminating, never scheduled (held by a finalizer, else it would go at once).
    create_pod(&client, "unscheduled", None, true, "Pending").await;
    for p in ["stuck", "lingering", "unscheduled"] {
        pods.delete(p, &DeleteParams::default()).await.unwrap();
    }

    let _gc = start(&client);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    create_node(&client, "late-node", "True", json!([])).await;
    assert!(
        pods.get_opt("orphan").await.unwrap().is_some(),
        "orphans wait for the quarantine"
    );

    eventually(
        "the out-of-service node's terminating pod is force-deleted",
        WAIT,
        || async { pods.get_opt("stuck").await.unwrap().is_none().then_some(()) },
    )
    .await;
    let unscheduled = eventually(
        "the unscheduled terminating pod marked Failed",
        WAIT,
        || async {
            let p = pods.get("unscheduled").await.unwrap();
            (phase(&p) == "Failed").then_some(p)
        },
    )
    .await;
    assert_eq!(
        unscheduled.metadata.deletion_grace_period_seconds,
        Some(0),
        "force-deleted"
    );
    eventually("the orphan is deleted", WAIT, || async {
        pods.get_opt("orphan")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= QUARANTINE,
        "not before the quarantine: {:?}",
        started.elapsed()
    );
    let held = pods.get("orphan-held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(phase(&held), "Failed");
    let cond = held
        .status
        .unwrap()
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .expect("DisruptionTarget");
    assert_eq!(
        (
            cond.status.as_str(),
            cond.reason.as_deref(),
            cond.message.as_deref()
        ),
        (
            "True",
            Some("DeletionByPodGC"),
            Some("PodGC: node no longer exists")
        )
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    for p in ["late", "kept"] {
        let pod = pods.get(p).await.unwrap();
        assert!(
            pod.metadata.deletion_timestamp.is_none() && phase(&pod) == "Running",
            "{p} is left alone"
        );
    }
    let lingering = pods.get("lingering").await.unwrap();
    assert_eq!(
        phase(&lingering),
        "Running",
        "a terminating pod on a healthy node is its kubelet's business"
    );
    assert_ne!(lingering.metadata.deletion_grace_period_seconds, Some(0));
    release(&client, "orphan-held").await;
    release(&client, "unscheduled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_pods_over_the_threshold_go_evicted_first_then_oldest() {
    let (_server, client) = Cluster::bare().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create_node(&client, "n", "True", json!([])).await;
    // Five finished pods in creation order (ties broken by name), one
    // evicted (newest), and running ones that never count.
    for (i, name) in ["t0", "t1", "t2", "t3", "t4"].iter().enumerate() {
        create_pod(
            &client,
            name,
            Some("n"),
            false,
            if i % 2 == 0 { "Succeeded" } else { "Failed" },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    create_pod(&client, "evicted", Some("n"), false, "Failed").await;
    for name in ["r0", "r1", "r2", "r3"] {
        create_pod(&client, name, Some("n"), false, "Running").await;
    }

    let _gc = start(&client);
    let left = eventually("three terminated pods left", WAIT, || async {
        let names: BTreeSet<String> = pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|p| p.name_any())
            .collect();
        let terminated = names
            .iter()
            .filter(|n| n.starts_with('t') || *n == "evicted")
            .count();
        (terminated == 3).then_some(names)
    })
    .await;
    let want: BTreeSet<String> = ["t2", "t3", "t4", "r0", "r1", "r2", "r3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(left, want, "the evicted pod, then the two oldest went");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        7,
        "at the threshold nothing more goes"
    );
}
