//! What the workload tests play in place of a kubelet and a scheduler:
//! Nodes created directly, pods marked Running and Ready or terminated
//! through `pods/status`, and listing helpers.

#![allow(dead_code)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

fn now() -> String {
    Timestamp::now().to_string()
}

fn container_names(pod: &Pod) -> Vec<String> {
    pod.spec.as_ref().map(|s| s.containers.iter().map(|c| c.name.clone()).collect()).unwrap_or_default()
}

/// Marks a pod Running with every container ready and the Ready
/// condition True (what a kubelet reports for a started, ready pod).
pub async fn mark_ready(client: &Client, ns: &str, name: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods.get(name).await.expect("pod to mark ready");
    let t = now();
    let statuses: Vec<_> = container_names(&pod)
        .into_iter()
        .map(|c| json!({"name": c, "image": "img", "imageID": "", "ready": true, "started": true, "restartCount": 0,
            "state": {"running": {"startedAt": t}}}))
        .collect();
    let patch = json!({"status": {"phase": "Running", "startTime": t, "containerStatuses": statuses, "conditions": [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
        {"type": "Initialized", "status": "True", "lastTransitionTime": t},
        {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
        {"type": "Ready", "status": "True", "lastTransitionTime": t}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("marking pod ready");
}

/// Marks a pod terminated: Succeeded (exit code 0) or Failed (exit code 1).
pub async fn mark_terminated(client: &Client, ns: &str, name: &str, succeeded: bool) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods.get(name).await.expect("pod to terminate");
    let t = now();
    let code = if succeeded { 0 } else { 1 };
    let reason = if succeeded { "Completed" } else { "Error" };
    let statuses: Vec<_> = container_names(&pod)
        .into_iter()
        .map(|c| json!({"name": c, "image": "img", "imageID": "", "ready": false, "started": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": t, "finishedAt": t}}}))
        .collect();
    let phase = if succeeded { "Succeeded" } else { "Failed" };
    let patch = json!({"status": {"phase": phase, "containerStatuses": statuses, "conditions": [
        {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": t}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("marking pod terminated");
}

/// Pods in `ns` matching `selector` (a label selector string), by name.
pub async fn pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut v = api.list(&ListParams::default().labels(selector)).await.expect("listing pods").items;
    v.sort_by_key(|p| p.name_any());
    v
}

pub fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Not terminated and not being deleted.
pub fn is_active(p: &Pod) -> bool {
    !matches!(phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none()
}

pub fn is_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).map(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")).unwrap_or(false)
}

/// Creates a Node with these labels and taints (JSON list).
pub async fn create_node(client: &Client, name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.expect("creating node")
}

/// `reason: message` of the core/v1 Events about object `name` in `ns`.
pub async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await.expect("listing events").items;
    list.into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

pub fn labels(p: &Pod) -> BTreeMap<String, String> {
    p.metadata.labels.clone().unwrap_or_default()
}

/// Runs the real kubectl against the test server: (success, stdout+stderr).
pub async fn kubectl(server: &crate::support::Server, args: &[&str]) -> (bool, String) {
    let mut cmd = server.kubectl_cmd(args);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.expect("kubectl task").expect("running kubectl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
