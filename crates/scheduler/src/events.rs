//! What the scheduler writes besides bindings: core/v1 Events
//! (FailedScheduling, Scheduled, Preempted), the PodScheduled condition and
//! `status.nominatedNodeName` through `pods/status`, victims' deletions.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::Client;
use serde_json::json;

use crate::helpers;

/// Upstream's event note limit.
pub const NOTE_LENGTH_LIMIT: usize = 1024;

/// Truncates a message to the event note limit with "...".
pub fn truncate_message(msg: &str) -> String {
    if msg.chars().count() <= NOTE_LENGTH_LIMIT {
        return msg.to_string();
    }
    let mut s: String = msg.chars().take(NOTE_LENGTH_LIMIT - 3).collect();
    s.push_str("...");
    s
}

/// (pod UID, reason, message).
type EventKey = (String, String, String);

/// Records core/v1 Events about pods; a repeat of the same (pod, reason,
/// message) bumps the existing event's count instead of creating another.
pub struct EventRecorder {
    client: Client,
    component: String,
    instance: String,
    seen: Mutex<HashMap<EventKey, (String, i32)>>,
}

impl EventRecorder {
    pub fn new(client: Client, component: &str, instance: &str) -> EventRecorder {
        EventRecorder { client, component: component.to_string(), instance: instance.to_string(), seen: Mutex::new(HashMap::new()) }
    }

    /// Records the event in the background.
    pub fn record(self: &std::sync::Arc<Self>, pod: &Pod, type_: &str, reason: &str, action: &str, message: &str) {
        let this = self.clone();
        // Only the reference goes along, not a copy of the whole pod.
        let object = ObjectReference {
            kind: Some("Pod".into()),
            api_version: Some("v1".into()),
            namespace: Some(helpers::pod_namespace(pod).to_string()),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..Default::default()
        };
        let uid = helpers::pod_uid(pod);
        let (type_, reason, action, message) = (type_.to_string(), reason.to_string(), action.to_string(), truncate_message(message));
        tokio::spawn(async move {
            if let Err(e) = this.write(object.clone(), uid, &type_, &reason, &action, &message).await {
                let key = format!("{}/{}", object.namespace.as_deref().unwrap_or(""), object.name.as_deref().unwrap_or(""));
                tracing::warn!(pod = %key, reason, error = %e, "could not record event");
            }
        });
    }

    async fn write(&self, object: ObjectReference, uid: String, type_: &str, reason: &str, action: &str, message: &str) -> Result<(), kube::Error> {
        let ns = object.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let key = (uid, reason.to_string(), message.to_string());
        let now = jiff::Timestamp::now();
        let existing = self.seen.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        if let Some((name, count)) = existing {
            let patch = json!({"count": count + 1, "lastTimestamp": Time(now)});
            if api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
                self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (name, count + 1));
                return Ok(());
            }
        }
        let name = format!("{}.{:x}", object.name.as_deref().unwrap_or_default(), now.as_nanosecond());
        let ev = Event {
            metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(ns), ..Default::default() },
            involved_object: object,
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.to_string()),
            source: Some(EventSource { component: Some(self.component.clone()), host: None }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            action: Some(action.to_string()),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &ev).await?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 4096 {
            seen.clear();
        }
        seen.insert(key, (name, 1));
        Ok(())
    }
}

/// The PodScheduled condition (and nominated node) the scheduler sets.
#[derive(Clone, Debug)]
pub struct SchedulingCondition {
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// Whether `pod` already carries this PodScheduled condition.
pub fn condition_is_current(pod: &Pod, c: &SchedulingCondition) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|x| x.type_ == "PodScheduled"))
        .map(|x| x.status == c.status && x.reason.as_deref().unwrap_or("") == c.reason && x.message.as_deref().unwrap_or("") == c.message)
        .unwrap_or(false)
}

/// Upstream's `updatePod`: patches `pods/status` with the PodScheduled
/// condition and, when `nominated` is given and differs, the nominated
/// node ("" clears it). Does nothing if nothing changes.
pub async fn update_pod_status(client: &Client, pod: &Pod, cond: &SchedulingCondition, nominated: Option<&str>) -> Result<bool, kube::Error> {
    let current_nnn = helpers::nominated_node_name(pod);
    let nnn_update = nominated.filter(|n| *n != current_nnn);
    if condition_is_current(pod, cond) && nnn_update.is_none() {
        return Ok(false);
    }
    let old = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|x| x.type_ == "PodScheduled"));
    let transition = match old {
        Some(o) if o.status == cond.status => o.last_transition_time.clone().unwrap_or(Time(jiff::Timestamp::now())),
        _ => Time(jiff::Timestamp::now()),
    };
    let mut status = json!({
        "conditions": [{
            "type": "PodScheduled",
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "lastProbeTime": null,
            "lastTransitionTime": transition,
        }]
    });
    if let Some(n) = nnn_update {
        status["nominatedNodeName"] = if n.is_empty() { serde_json::Value::Null } else { json!(n) };
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), helpers::pod_namespace(pod));
    api.patch_status(helpers::pod_name(pod), &PatchParams::default(), &Patch::Strategic(json!({ "status": status }))).await?;
    Ok(true)
}

/// Clears a pod's `status.nominatedNodeName`.
pub async fn clear_nominated_node_name(client: &Client, pod: &Pod) -> Result<(), kube::Error> {
    if helpers::nominated_node_name(pod).is_empty() {
        return Ok(());
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), helpers::pod_namespace(pod));
    api.patch_status(helpers::pod_name(pod), &PatchParams::default(), &Patch::Merge(json!({"status": {"nominatedNodeName": null}}))).await?;
    Ok(())
}

/// Preempts a victim: a DisruptionTarget condition, then a DELETE with
/// the pod's own grace period, guarded by its UID.
pub async fn preempt_victim(client: &Client, victim: &Pod, profile: &str) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), helpers::pod_namespace(victim));
    let name = helpers::pod_name(victim);
    let cond = json!({"status": {"conditions": [{
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "PreemptionByScheduler",
        "message": format!("{profile}: preempting to accommodate a higher priority pod"),
        "lastTransitionTime": Time(jiff::Timestamp::now()),
    }]}});
    match api.patch_status(name, &PatchParams::default(), &Patch::Strategic(cond)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    }
    let dp = DeleteParams { preconditions: Some(Preconditions { uid: victim.metadata.uid.clone(), resource_version: None }), ..Default::default() };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::PodBuilder;

    #[test]
    fn truncation() {
        assert_eq!(truncate_message("short"), "short");
        let long = "x".repeat(2000);
        let t = truncate_message(&long);
        assert_eq!(t.chars().count(), NOTE_LENGTH_LIMIT);
        assert!(t.ends_with("..."));
    }

    #[test]
    fn condition_currency() {
        let mut v = PodBuilder::new("p").json();
        v["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "m"}]);
        let pod: Pod = serde_json::from_value(v).unwrap();
        let c = SchedulingCondition { status: "False".into(), reason: "Unschedulable".into(), message: "m".into() };
        assert!(condition_is_current(&pod, &c));
        assert!(!condition_is_current(&pod, &SchedulingCondition { message: "other".into(), ..c }));
    }
}
