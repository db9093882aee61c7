//! What a hollow kubelet knows of a pod ([`PodView`], small enough to keep
//! for 150k pods) and the pod status patches it writes, shaped like a real
//! kubelet's (so controllers, endpoints and `kubectl` see ordinary pods).

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::node::fake_hex;
use crate::{EXIT_CODE_ANNOTATION, RUN_SECONDS_ANNOTATION, time_string};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl Phase {
    pub fn terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// The simulated command of every container: exit with `code` after `run`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Exit {
    pub code: i32,
    pub run: Duration,
}

/// Where the (lock-stepped) containers are, from the first container's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunState {
    /// No status for every container yet: not started by a kubelet.
    NotStarted,
    Running { since: Timestamp },
    /// Crash-loop back-off after an exit.
    Waiting { last_started: Timestamp, last_finished: Timestamp },
    Terminated,
}

#[derive(Clone, Debug)]
pub(crate) struct Container {
    pub name: String,
    pub image: String,
    /// An init container with `restartPolicy: Always` (a sidecar): keeps running.
    pub sidecar: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: Option<u64>,
    pub node: usize,
    pub containers: Vec<Container>,
    pub init_containers: Vec<Container>,
    pub host_network: bool,
    pub restart_policy: RestartPolicy,
    pub exit: Option<Exit>,
    /// `deletionGracePeriodSeconds` once the pod is terminating.
    pub deletion_grace: Option<i64>,
    pub phase: Phase,
    pub pod_ip: Option<Ipv4Addr>,
    pub start_time: Option<Timestamp>,
    pub scheduled_at: Option<Timestamp>,
    pub run: RunState,
    pub restart_count: i32,
    /// The pod's `Ready` and `ContainersReady` conditions are `True`. Someone
    /// else (the node controller's `MarkPodsNotReady`) may set them `False`
    /// while the containers run; the kubelet then posts them `True` again.
    pub ready: bool,
    pub containers_ready: bool,
}

fn parse_exit(annotations: Option<&std::collections::BTreeMap<String, String>>) -> Option<Exit> {
    let a = annotations?;
    let code = a.get(EXIT_CODE_ANNOTATION)?.trim().parse::<i32>().ok()?;
    let run = a
        .get(RUN_SECONDS_ANNOTATION)
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::ZERO);
    Some(Exit { code, run })
}

impl PodView {
    pub fn from_pod(pod: &Pod, node: usize) -> PodView {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let containers: Vec<Container> = spec
            .map(|s| s.containers.iter().map(|c| Container { name: c.name.clone(), image: c.image.clone().unwrap_or_default(), sidecar: false }).collect())
            .unwrap_or_default();
        let init_containers = spec
            .and_then(|s| s.init_containers.as_ref())
            .map(|v| {
                v.iter()
                    .map(|c| Container {
                        name: c.name.clone(),
                        image: c.image.clone().unwrap_or_default(),
                        sidecar: c.restart_policy.as_deref() == Some("Always"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let phase = match status.and_then(|s| s.phase.as_deref()) {
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            Some("Unknown") => Phase::Unknown,
            _ => Phase::Pending,
        };
        let statuses = status.and_then(|s| s.container_statuses.as_ref());
        let complete = statuses.map(|st| containers.iter().all(|c| st.iter().any(|s| s.name == c.name))).unwrap_or(false) && !containers.is_empty();
        let first = statuses.and_then(|st| st.iter().find(|s| Some(&s.name) == containers.first().map(|c| &c.name)));
        let run = match first.filter(|_| complete) {
            None => RunState::NotStarted,
            Some(cs) => {
                let state = cs.state.as_ref();
                if let Some(r) = state.and_then(|s| s.running.as_ref()) {
                    let since = r.started_at.as_ref().map(|t| t.0).or(status.and_then(|s| s.start_time.as_ref()).map(|t| t.0)).unwrap_or_else(Timestamp::now);
                    RunState::Running { since }
                } else if state.and_then(|s| s.terminated.as_ref()).is_some() {
                    RunState::Terminated
                } else if let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
                    let last_finished = t.finished_at.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
                    RunState::Waiting { last_started: t.started_at.as_ref().map(|t| t.0).unwrap_or(last_finished), last_finished }
                } else {
                    RunState::NotStarted
                }
            }
        };
        let condition_true = |t: &str| {
            status.and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == t && c.status == "True"))
        };
        PodView {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.as_deref().and_then(|rv| rv.parse().ok()),
            node,
            containers,
            init_containers,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            restart_policy: match spec.and_then(|s| s.restart_policy.as_deref()) {
                Some("Never") => RestartPolicy::Never,
                Some("OnFailure") => RestartPolicy::OnFailure,
                _ => RestartPolicy::Always,
            },
            exit: parse_exit(meta.annotations.as_ref()),
            deletion_grace: meta.deletion_timestamp.as_ref().map(|_| meta.deletion_grace_period_seconds.unwrap_or(0)),
            phase,
            pod_ip: status.and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok()),
            start_time: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
            scheduled_at: status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled" && c.status == "True"))
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0),
            run,
            restart_count: first.map(|c| c.restart_count).unwrap_or(0),
            ready: condition_true("Ready"),
            containers_ready: condition_true("ContainersReady"),
        }
    }

    /// Set Running by a kubelet already (ours, before a restart, or now).
    pub fn started(&self) -> bool {
        self.phase == Phase::Running && self.pod_ip.is_some() && self.run != RunState::NotStarted
    }

    /// Whether an exit ends the pod (else the kubelet restarts the containers).
    pub fn exit_is_terminal(&self, code: i32) -> bool {
        match self.restart_policy {
            RestartPolicy::Never => true,
            RestartPolicy::OnFailure => code == 0,
            RestartPolicy::Always => false,
        }
    }
}

/// Crash-loop back-off before restart number `restarts` (upstream: 10s,
/// doubling, at most 5 minutes).
pub(crate) fn backoff(base: Duration, restarts: i32) -> Duration {
    let doublings = (restarts.max(1) - 1).min(16) as u32;
    base.saturating_mul(1u32 << doublings).min(Duration::from_secs(300))
}

fn container_id(uid: &str, name: &str, restarts: i32) -> String {
    format!("hollow://{}", fake_hex(&format!("{uid}/{name}/{restarts}"), 64))
}

fn image_id(image: &str) -> String {
    if image.contains("@sha256:") {
        return image.to_string();
    }
    // Strip a tag (a ':' after the last '/'; one before it is a registry port).
    let repo = match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    };
    format!("{repo}@sha256:{}", fake_hex(image, 64))
}

fn cond(t: &str, status: bool, at: &str, reason: Option<&str>, message: Option<String>) -> Value {
    let mut c = json!({"type": t, "status": if status { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": at});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

fn running_status(v: &PodView, c: &Container, started_at: &str, restarts: i32, last: Value) -> Value {
    let mut s = json!({
        "name": c.name, "image": c.image, "imageID": image_id(&c.image),
        "containerID": container_id(&v.uid, &c.name, restarts),
        "state": {"running": {"startedAt": started_at}},
        "lastState": null,
        "ready": true, "started": true, "restartCount": restarts,
    });
    // Moved in (`json!` would copy it), in its place.
    s["lastState"] = last;
    s
}

fn terminated(v: &PodView, c: &Container, code: i32, started: &str, finished: &str, restarts: i32) -> Value {
    json!({"terminated": {
        "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
        "startedAt": started, "finishedAt": finished,
        "containerID": container_id(&v.uid, &c.name, restarts),
    }})
}

fn init_statuses(v: &PodView, now: &str, sidecars_exit: bool) -> Value {
    Value::Array(
        v.init_containers
            .iter()
            .map(|c| {
                if c.sidecar && !sidecars_exit {
                    running_status(v, c, now, 0, json!({}))
                } else {
                    // Ran to completion before the app containers started
                    // (or, for a sidecar, stopped with the pod).
                    json!({
                        "name": c.name, "image": c.image, "imageID": image_id(&c.image),
                        "containerID": container_id(&v.uid, &c.name, 0),
                        "state": terminated(v, c, 0, now, now, 0),
                        "lastState": {}, "ready": !c.sidecar, "started": false, "restartCount": 0,
                    })
                }
            })
            .collect(),
    )
}

/// The kubelet's first status of a pod: sandbox up, init containers done,
/// every container running and ready.
pub(crate) fn start_patch(v: &PodView, host_ip: Ipv4Addr, pod_ip: Ipv4Addr, now: Timestamp) -> Value {
    let now = time_string(now);
    let start = v.start_time.map(time_string).unwrap_or_else(|| now.clone());
    let scheduled = v.scheduled_at.map(time_string).unwrap_or_else(|| now.clone());
    let (host_ip, pod_ip) = (Value::String(host_ip.to_string()), Value::String(pod_ip.to_string()));
    // Built by moving values in: `json!` would copy every `Value` it is
    // given (the conditions, the container statuses), and this runs for
    // every pod a hollow node starts.
    let mut status = Map::new();
    status.insert("phase".into(), "Running".into());
    status.insert(
        "conditions".into(),
        Value::Array(vec![
            cond("PodReadyToStartContainers", true, &now, None, None),
            cond("Initialized", true, &now, None, None),
            cond("Ready", true, &now, None, None),
            cond("ContainersReady", true, &now, None, None),
            cond("PodScheduled", true, &scheduled, None, None),
        ]),
    );
    status.insert("hostIP".into(), host_ip.clone());
    status.insert("hostIPs".into(), Value::Array(vec![ip_entry(host_ip)]));
    status.insert("podIP".into(), pod_ip.clone());
    status.insert("podIPs".into(), Value::Array(vec![ip_entry(pod_ip)]));
    status.insert("startTime".into(), start.into());
    status.insert(
        "containerStatuses".into(),
        Value::Array(v.containers.iter().map(|c| running_status(v, c, &now, 0, Value::Object(Map::new()))).collect()),
    );
    if !v.init_containers.is_empty() {
        status.insert("initContainerStatuses".into(), init_statuses(v, &now, false));
    }
    // The uid makes the patch apply to this pod only, not to a pod
    // recreated under the same name (upstream's status manager does the same).
    status_patch(&v.uid, Value::Object(status))
}

fn ip_entry(ip: Value) -> Value {
    let mut m = Map::new();
    m.insert("ip".into(), ip);
    Value::Object(m)
}

/// `{"metadata": {"uid": uid}, "status": status}`, with `status` moved in.
fn status_patch(uid: &str, status: Value) -> Value {
    let mut patch = json!({"metadata": {"uid": uid}});
    patch["status"] = status;
    patch
}

/// All containers exited with `code` and the pod is done (Succeeded for 0,
/// else Failed).
pub(crate) fn finish_patch(v: &PodView, code: i32, since: Timestamp, now: Timestamp) -> Value {
    let (now, since) = (time_string(now), time_string(since));
    let mut status = json!({
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [
            cond("PodReadyToStartContainers", false, &now, None, None),
            cond("Ready", false, &now, Some("PodCompleted"), None),
            cond("ContainersReady", false, &now, Some("PodCompleted"), None),
        ],
        "containerStatuses": v.containers.iter().map(|c| json!({
            "name": c.name, "image": c.image, "imageID": image_id(&c.image),
            "containerID": container_id(&v.uid, &c.name, v.restart_count),
            "state": terminated(v, c, code, &since, &now, v.restart_count),
            "lastState": {}, "ready": false, "started": false, "restartCount": v.restart_count,
        })).collect::<Vec<_>>(),
    });
    if v.init_containers.iter().any(|c| c.sidecar) {
        status["initContainerStatuses"] = init_statuses(v, &now, true);
    }
    status_patch(&v.uid, status)
}

/// All containers exited with `code` and will be restarted after a back-off
/// (restartPolicy Always, or OnFailure with a non-zero code).
pub(crate) fn crash_patch(v: &PodView, code: i32, since: Timestamp, now: Timestamp, backoff: Duration) -> Value {
    let (now, since) = (time_string(now), time_string(since));
    let restarts = v.restart_count + 1;
    let names: Vec<&str> = v.containers.iter().map(|c| c.name.as_str()).collect();
    let unready = format!("containers with unready status: [{}]", names.join(" "));
    status_patch(&v.uid, json!({
        "phase": "Running",
        "conditions": [
            cond("Ready", false, &now, Some("ContainersNotReady"), Some(unready.clone())),
            cond("ContainersReady", false, &now, Some("ContainersNotReady"), Some(unready)),
        ],
        "containerStatuses": v.containers.iter().map(|c| json!({
            "name": c.name, "image": c.image, "imageID": image_id(&c.image),
            "containerID": container_id(&v.uid, &c.name, v.restart_count),
            "state": {"waiting": {
                "reason": "CrashLoopBackOff",
                "message": format!("back-off {}s restarting failed container={} pod={}_{}({})", backoff.as_secs(), c.name, v.name, v.namespace, v.uid),
            }},
            "lastState": terminated(v, c, code, &since, &now, v.restart_count),
            "ready": false, "started": false, "restartCount": restarts,
        })).collect::<Vec<_>>(),
    }))
}

/// The back-off is over: the containers run again.
pub(crate) fn restart_patch(v: &PodView, code: i32, last_started: Timestamp, last_finished: Timestamp, now: Timestamp) -> Value {
    let now = time_string(now);
    let (ls, lf) = (time_string(last_started), time_string(last_finished));
    status_patch(&v.uid, json!({
        "phase": "Running",
        "conditions": [
            cond("Ready", true, &now, None, None),
            cond("ContainersReady", true, &now, None, None),
        ],
        "containerStatuses": v.containers.iter().map(|c| {
            running_status(v, c, &now, v.restart_count, terminated(v, c, code, &ls, &lf, v.restart_count - 1))
        }).collect::<Vec<_>>(),
    }))
}

/// The containers run (and are ready) but the pod's conditions say otherwise
/// (set by someone else): post the conditions that are not `True` again, each
/// with a fresh transition time.
pub(crate) fn ready_patch(v: &PodView, now: Timestamp) -> Value {
    let now = time_string(now);
    let mut conditions = Vec::new();
    if !v.ready {
        conditions.push(cond("Ready", true, &now, None, None));
    }
    if !v.containers_ready {
        conditions.push(cond("ContainersReady", true, &now, None, None));
    }
    let mut status = Map::new();
    status.insert("conditions".into(), Value::Array(conditions));
    status_patch(&v.uid, Value::Object(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn view_of_a_fresh_bound_pod() {
        let p = pod(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": "42",
                          "annotations": {EXIT_CODE_ANNOTATION: "3", RUN_SECONDS_ANNOTATION: "1.5"}},
            "spec": {"nodeName": "n", "restartPolicy": "Never",
                     "initContainers": [{"name": "i", "image": "busybox"}, {"name": "s", "image": "envoy", "restartPolicy": "Always"}],
                     "containers": [{"name": "a", "image": "nginx:1.25"}]},
            "status": {"phase": "Pending"}
        }));
        let v = PodView::from_pod(&p, 7);
        assert_eq!(v.node, 7);
        assert_eq!(v.resource_version, Some(42));
        assert_eq!(v.exit, Some(Exit { code: 3, run: Duration::from_millis(1500) }));
        assert_eq!(v.restart_policy, RestartPolicy::Never);
        assert!(v.init_containers[1].sidecar && !v.init_containers[0].sidecar);
        assert!(!v.started());
        assert!(v.exit_is_terminal(3));
    }

    #[test]
    fn start_patch_reads_back_as_started() {
        let p = pod(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"nodeName": "n", "containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"}]},
        }));
        let v = PodView::from_pod(&p, 0);
        let now = Timestamp::now();
        let patch = start_patch(&v, Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 201, 0, 2), now);
        let mut merged = serde_json::to_value(&p).unwrap();
        merged["status"] = patch["status"].clone();
        let v2 = PodView::from_pod(&pod(merged), 0);
        assert!(v2.started(), "{v2:?}");
        assert_eq!(v2.pod_ip, Some(Ipv4Addr::new(10, 201, 0, 2)));
        assert!(matches!(v2.run, RunState::Running { .. }));
        let cs = patch["status"]["containerStatuses"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert!(cs[0]["containerID"].as_str().unwrap().starts_with("hollow://"));
        assert_eq!(cs[1]["imageID"].as_str().unwrap().split('@').next(), Some("redis"));
    }

    #[test]
    fn ready_patch_restores_only_what_was_changed() {
        let p = pod(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"nodeName": "n", "containers": [{"name": "a", "image": "nginx"}]},
        }));
        let now = Timestamp::now();
        let mut obj = serde_json::to_value(&p).unwrap();
        obj["status"] = start_patch(&PodView::from_pod(&p, 0), Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2), now)["status"].clone();
        let v = PodView::from_pod(&pod(obj.clone()), 0);
        assert!(v.ready && v.containers_ready, "{v:?}");
        // The node controller's MarkPodsNotReady: Ready False only.
        for c in obj["status"]["conditions"].as_array_mut().unwrap() {
            if c["type"] == "Ready" {
                c["status"] = json!("False");
            }
        }
        let v = PodView::from_pod(&pod(obj), 0);
        assert!(!v.ready && v.containers_ready && v.started(), "{v:?}");
        let patch = ready_patch(&v, now);
        let conds = patch["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 1, "{patch}");
        assert_eq!((&conds[0]["type"], &conds[0]["status"]), (&json!("Ready"), &json!("True")));
        assert_eq!(patch["metadata"]["uid"], "u1");
    }

    #[test]
    fn crash_then_restart_round_trip() {
        let p = pod(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"nodeName": "n", "containers": [{"name": "a", "image": "nginx"}]},
        }));
        let mut v = PodView::from_pod(&p, 0);
        let t0 = Timestamp::now();
        let mut obj = serde_json::to_value(&p).unwrap();
        obj["status"] = start_patch(&v, Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2), t0)["status"].clone();
        v = PodView::from_pod(&pod(obj.clone()), 0);
        obj["status"]["containerStatuses"] = crash_patch(&v, 1, t0, t0, Duration::from_secs(10))["status"]["containerStatuses"].clone();
        v = PodView::from_pod(&pod(obj.clone()), 0);
        assert!(matches!(v.run, RunState::Waiting { .. }), "{v:?}");
        assert_eq!(v.restart_count, 1);
        obj["status"]["containerStatuses"] = restart_patch(&v, 1, t0, t0, t0)["status"]["containerStatuses"].clone();
        v = PodView::from_pod(&pod(obj), 0);
        assert!(matches!(v.run, RunState::Running { .. }));
        assert_eq!(v.restart_count, 1);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_secs(10);
        assert_eq!(backoff(b, 1), Duration::from_secs(10));
        assert_eq!(backoff(b, 2), Duration::from_secs(20));
        assert_eq!(backoff(b, 10), Duration::from_secs(300));
    }

    #[test]
    fn image_ids() {
        assert!(image_id("nginx:1.25").starts_with("nginx@sha256:"));
        assert!(image_id("localhost:5000/app").starts_with("localhost:5000/app@sha256:"));
        assert_eq!(image_id("a@sha256:00"), "a@sha256:00");
    }
}
