//! Pod phase helpers and upstream's `controller.ActivePods` order, beyond
//! what [`crate::pod_control`] provides.

use std::cmp::Ordering;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::pod_control::{controller_of, is_pod_ready};

/// Whether the object's controller is the owner with this uid.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).map(|r| r.uid == uid).unwrap_or(false)
}

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Succeeded or Failed.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// When a ready pod becomes available after `min_ready_seconds` (to look
/// again then), if it is ready.
pub fn available_at(pod: &Pod, min_ready_seconds: i32) -> Option<Timestamp> {
    let c = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(c.last_transition_time.as_ref()?.0 + SignedDuration::from_secs(min_ready_seconds as i64))
}

pub fn creation(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Upstream's `controller.ActivePods` order (what the Job controller
/// deletes first): unassigned before assigned, Pending < Unknown < Running,
/// not ready before ready, newer before older.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    let (na, nb) = (node(a), node(b));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() { Ordering::Less } else { Ordering::Greater };
    }
    let rank = |p: &Pod| match phase(p) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    match rank(a).cmp(&rank(b)) {
        Ordering::Equal => {}
        o => return o,
    }
    match (is_pod_ready(a), is_pod_ready(b)) {
        (false, true) => return Ordering::Less,
        (true, false) => return Ordering::Greater,
        _ => {}
    }
    match (creation(a), creation(b)) {
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x),
        (None, None) => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn active_pods_order() {
        let p = |v: serde_json::Value| serde_json::from_value::<Pod>(v).unwrap();
        let now = Timestamp::now();
        let old = (now - SignedDuration::from_secs(100)).to_string();
        let new = now.to_string();
        let running_ready = p(json!({"metadata": {"name": "a", "creationTimestamp": old}, "spec": {"containers": [], "nodeName": "n"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}));
        let running = p(json!({"metadata": {"name": "b", "creationTimestamp": old}, "spec": {"containers": [], "nodeName": "n"}, "status": {"phase": "Running"}}));
        let pending = p(json!({"metadata": {"name": "c", "creationTimestamp": new}, "spec": {"containers": [], "nodeName": "n"}, "status": {"phase": "Pending"}}));
        let unassigned = p(json!({"metadata": {"name": "d", "creationTimestamp": old}, "spec": {"containers": []}, "status": {"phase": "Pending"}}));
        let mut v = [running_ready, running, pending, unassigned];
        v.sort_by(deletion_order);
        let names: Vec<_> = v.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, ["d", "c", "b", "a"]);
    }
}
