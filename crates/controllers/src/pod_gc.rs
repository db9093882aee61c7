//! Pod garbage collection (upstream's `pkg/controller/podgc`).
//!
//! Every `pod_gc_period` (20s upstream) it looks at all pods and Nodes and
//! force-deletes (grace period 0, as upstream; with the pod's uid as a
//! precondition, so a pod recreated under the same name is never hit):
//! - **terminated** pods (Succeeded or Failed) beyond
//!   `--terminated-pod-gc-threshold`: evicted ones first, then the oldest;
//! - **terminating** pods on a Node that is not Ready and carries the
//!   `node.kubernetes.io/out-of-service` taint (the kubelet there is gone
//!   for good, so nothing would finish their graceful deletion);
//! - **orphaned** pods, bound to a Node that does not exist: the Node must
//!   be missing for the quarantine time (40s upstream), and a fresh GET
//!   must confirm it, before its pods go; they get a `DisruptionTarget`
//!   condition (`DeletionByPodGC`);
//! - **unscheduled terminating** pods (being deleted, never bound: no
//!   kubelet will finish their deletion).
//!
//! A pod not yet in a terminal phase is marked `Failed` first, so that
//! whoever watches it (a Job, say) sees it fail rather than vanish.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::config::ControllerConfig;
use crate::informer::SharedInformers;
use crate::kit::pods::{is_terminal, is_terminating};
use crate::node_lifecycle::{TAINT_OUT_OF_SERVICE, is_node_ready};
use crate::pod_control;

/// Deletes issued at once.
const CONCURRENCY: usize = 16;

/// Why a pod is collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Terminated,
    TerminatingOutOfService,
    Orphaned,
    TerminatingUnscheduled,
}

/// Runs pod GC until its informers stop.
pub async fn run(client: Client, config: ControllerConfig) -> anyhow::Result<()> {
    run_shared(client.clone(), config, SharedInformers::new(client)).await
}

/// [`run`] on the process's shared informers.
pub async fn run_shared(client: Client, config: ControllerConfig, informers: SharedInformers) -> anyhow::Result<()> {
    let pod_inf = informers.get::<Pod>();
    let node_inf = informers.get::<Node>();
    let mut gc = PodGc {
        client,
        config,
        pods: pod_inf.store(),
        nodes: node_inf.store(),
        quarantine: HashMap::new(),
    };
    let mut tasks = JoinSet::new();
    tasks.spawn(pod_inf.run("pods", |_| {}));
    tasks.spawn(node_inf.run("nodes", |_| {}));
    let looping = async move {
        let _ = tokio::join!(gc.pods.wait_until_ready(), gc.nodes.wait_until_ready());
        tracing::info!(
            threshold = gc.config.terminated_pod_gc_threshold,
            "pod GC synced"
        );
        loop {
            gc.gc().await;
            tokio::time::sleep(gc.config.pod_gc_period).await;
        }
    };
    tokio::select! {
        _ = tasks.join_next() => anyhow::bail!("pod GC: a watch ended"),
        _ = looping => anyhow::bail!("pod GC loop ended"),
    }
}

struct PodGc {
    client: Client,
    config: ControllerConfig,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Missing Node → when its absence was first noticed.
    quarantine: HashMap<String, Instant>,
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// Upstream's `eviction.PodIsEvicted`.
fn is_evicted(pod: &Pod) -> bool {
    let s = pod.status.as_ref();
    s.and_then(|s| s.phase.as_deref()) == Some("Failed")
        && s.and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

/// Upstream's `byEvictionAndCreationTimestamp`: evicted pods first, then
/// the oldest, then by name.
pub fn gc_order(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    is_evicted(b)
        .cmp(&is_evicted(a))
        .then_with(|| {
            a.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
        })
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

/// The terminated pods to delete so that at most `threshold` remain.
pub fn terminated_to_delete(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    let mut terminated: Vec<Arc<Pod>> = pods.iter().filter(|p| is_terminal(p)).cloned().collect();
    if threshold == 0 || terminated.len() <= threshold {
        return Vec::new();
    }
    let n = terminated.len() - threshold;
    terminated.sort_by(|a, b| gc_order(a, b));
    terminated.truncate(n);
    terminated
}

impl PodGc {
    /// One round, in upstream's order.
    async fn gc(&mut self) {
        let pods = self.pods.state();
        let nodes: HashMap<String, Arc<Node>> = self
            .nodes
            .state()
            .into_iter()
            .map(|n| (n.name_any(), n))
            .collect();
        let mut doomed: Vec<(Arc<Pod>, Reason)> = Vec::new();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let mut add = |p: Arc<Pod>, r: Reason, doomed: &mut Vec<(Arc<Pod>, Reason)>| {
            if seen.insert((p.namespace().unwrap_or_default(), p.name_any())) {
                doomed.push((p, r));
            }
        };
        for p in terminated_to_delete(&pods, self.config.terminated_pod_gc_threshold) {
            add(p, Reason::Terminated, &mut doomed);
        }
        let mut out_of_service: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| is_terminating(p))
            .filter(|p| {
                nodes
                    .get(node_name(p))
                    .map(|n| {
                        !is_node_ready(n) && taints_of(n).any(|t| t.key == TAINT_OUT_OF_SERVICE)
                    })
                    .unwrap_or(false)
            })
            .cloned()
            .collect();
        out_of_service.sort_by(|a, b| gc_order(a, b));
        for p in out_of_service {
            add(p, Reason::TerminatingOutOfService, &mut doomed);
        }
        for n in self.deleted_nodes(&pods, &nodes).await {
            for p in pods.iter().filter(|p| node_name(p) == n) {
                add(p.clone(), Reason::Orphaned, &mut doomed);
            }
        }
        for p in pods
            .iter()
            .filter(|p| is_terminating(p) && node_name(p).is_empty())
        {
            add(p.clone(), Reason::TerminatingUnscheduled, &mut doomed);
        }
        if doomed.is_empty() {
            return;
        }
        tracing::info!(pods = doomed.len(), "pod GC force-deleting pods");
        let client = self.client.clone();
        futures::stream::iter(doomed)
            .for_each_concurrent(CONCURRENCY, |(pod, reason)| {
                let client = client.clone();
                async move {
                    if let Err(e) = mark_failed_and_delete(&client, &pod, reason).await {
                        tracing::warn!(pod = %pod.name_any(), namespace = ?pod.namespace(), ?reason, error = %pod_control::error_message(&e), "pod GC could not delete pod");
                    }
                }
            })
            .await;
    }

    /// Nodes that pods are bound to but that have been missing for the
    /// quarantine time, confirmed by a GET (upstream's `gcOrphaned` with
    /// `discoverDeletedNodes`).
    async fn deleted_nodes(
        &mut self,
        pods: &[Arc<Pod>],
        nodes: &HashMap<String, Arc<Node>>,
    ) -> Vec<String> {
        let now = Instant::now();
        let missing: HashSet<&str> = pods
            .iter()
            .map(|p| node_name(p))
            .filter(|n| !n.is_empty() && !nodes.contains_key(*n))
            .collect();
        self.quarantine.retain(|n, _| missing.contains(n.as_str()));
        for n in &missing {
            self.quarantine.entry(n.to_string()).or_insert(now);
        }
        let due: Vec<String> = self
            .quarantine
            .iter()
            .filter(|(_, since)| {
                now.duration_since(**since) >= self.config.pod_gc_orphan_quarantine
            })
            .map(|(n, _)| n.clone())
            .collect();
        let api: Api<Node> = Api::all(self.client.clone());
        let mut deleted = Vec::new();
        for n in due {
            match api.get_opt(&n).await {
                Ok(None) => deleted.push(n),
                // Back (or the watch is behind): not an orphan's node.
                Ok(Some(_)) => {
                    self.quarantine.remove(&n);
                }
                Err(e) => {
                    tracing::warn!(node = %n, error = %e, "pod GC could not check whether a node exists")
                }
            }
        }
        deleted
    }
}

fn taints_of(node: &Node) -> impl Iterator<Item = &k8s_openapi::api::core::v1::Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
}

/// Upstream's `markFailedAndDeletePodWithCondition`: a pod not yet
/// terminal is set `Failed` (with a `DisruptionTarget` condition for
/// orphans), then deleted with grace period 0.
async fn mark_failed_and_delete(
    client: &Client,
    pod: &Pod,
    reason: Reason,
) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.uid();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    tracing::info!(pod = %name, namespace = %ns, ?reason, "pod GC force-deleting pod");
    if !is_terminal(pod) {
        let mut status = json!({"phase": "Failed"});
        if reason == Reason::Orphaned {
            status["conditions"] = json!([{
                "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                "message": "PodGC: node no longer exists", "lastTransitionTime": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            }]);
        }
        let patch: Value = json!({"metadata": {"uid": uid}, "status": status});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(_) => {}
            Err(e) if pod_control::is_not_found(&e) => return Ok(()),
            // Another pod of the same name: not ours to touch.
            Err(e) if pod_control::is_conflict(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if pod_control::is_not_found(&e) || pod_control::is_conflict(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, created: &str, phase: &str, reason: Option<&str>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
                "spec": {"containers": []},
                "status": {"phase": phase, "reason": reason},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn terminated_over_threshold_evicted_then_oldest() {
        let pods = vec![
            pod("new", "2024-01-03T00:00:00Z", "Succeeded", None),
            pod("old", "2024-01-01T00:00:00Z", "Failed", None),
            pod("running", "2023-01-01T00:00:00Z", "Running", None),
            pod("evicted", "2024-01-04T00:00:00Z", "Failed", Some("Evicted")),
            pod("mid-b", "2024-01-02T00:00:00Z", "Succeeded", None),
            pod("mid-a", "2024-01-02T00:00:00Z", "Succeeded", None),
        ];
        let names = |v: Vec<Arc<Pod>>| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(
            names(terminated_to_delete(&pods, 2)),
            ["evicted", "old", "mid-a"]
        );
        assert!(terminated_to_delete(&pods, 5).is_empty());
        assert!(
            terminated_to_delete(&pods, 0).is_empty(),
            "0 keeps everything"
        );
    }
}
