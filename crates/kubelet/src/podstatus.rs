//! The pod status a kubelet reports, computed from what the runtime shows
//! (upstream's `generateAPIPodStatus` and `getPhase`): phase, conditions,
//! container statuses with state, lastState, restartCount, exit codes and
//! reasons, IPs, start time and QoS class. Pure.

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::spec::{pod_spec, qos_class};
use crate::time_string;

/// A container's state in the runtime (CRI ContainerState).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Created,
    Running,
    Exited,
    Unknown,
}

impl RunState {
    pub fn from_cri(s: i32) -> RunState {
        match s {
            0 => RunState::Created,
            1 => RunState::Running,
            2 => RunState::Exited,
            _ => RunState::Unknown,
        }
    }
}

/// One container instance as the runtime reports it.
#[derive(Clone, Debug)]
pub struct Instance {
    pub id: String,
    pub attempt: u32,
    pub state: RunState,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// Nanoseconds since the epoch (0: unknown).
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub image_ref: String,
    /// The spec's image when the container was created (a changed image
    /// restarts the container).
    pub spec_image: Option<String>,
}

/// What the worker knows about one container of the spec.
#[derive(Clone, Debug, Default)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    /// The newest instance, and the one before it.
    pub current: Option<Instance>,
    pub previous: Option<Instance>,
    /// Why it is not running, when the worker knows better than the
    /// runtime (ErrImagePull, ImagePullBackOff, CrashLoopBackOff, ...).
    pub waiting: Option<(String, String)>,
    /// Probe results of a running container: readiness (`None`: no
    /// readiness probe, ready while running) and startup (`None`: no
    /// startup probe, started while running).
    pub ready: Option<bool>,
    pub started: Option<bool>,
}

impl ContainerView {
    pub fn running(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|i| i.state == RunState::Running)
    }

    /// Running, started and ready by its probes.
    pub fn is_ready(&self) -> bool {
        self.running() && self.ready.unwrap_or(true) && self.started.unwrap_or(true)
    }
}

/// Everything the status is computed from.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub init: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    /// The sandbox is up with its network.
    pub sandbox_ready: bool,
    /// An init container failed and will not be restarted (restartPolicy Never).
    pub init_failed: bool,
}

fn ts(ns: i64) -> Option<String> {
    if ns <= 0 {
        return None;
    }
    Timestamp::from_nanosecond(ns as i128).ok().map(time_string)
}

pub fn container_id(id: &str) -> String {
    format!("containerd://{id}")
}

fn terminated(i: &Instance) -> Value {
    let reason = if !i.reason.is_empty() {
        i.reason.clone()
    } else if i.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    let mut t = json!({
        "exitCode": i.exit_code,
        "reason": reason,
        "startedAt": ts(i.started_at),
        "finishedAt": ts(i.finished_at),
        "containerID": container_id(&i.id),
    });
    if !i.message.is_empty() {
        t["message"] = json!(i.message);
    }
    json!({"terminated": t})
}

fn waiting(reason: &str, message: &str) -> Value {
    if message.is_empty() {
        json!({"waiting": {"reason": reason}})
    } else {
        json!({"waiting": {"reason": reason, "message": message}})
    }
}

/// One entry of containerStatuses / initContainerStatuses.
pub fn container_status(v: &ContainerView, default_waiting: &str) -> Value {
    let (state, last) = match &v.current {
        Some(i) if i.state == RunState::Running => (
            json!({"running": {"startedAt": ts(i.started_at)}}),
            v.previous.as_ref().map(terminated),
        ),
        Some(i) if i.state == RunState::Exited => match &v.waiting {
            Some((r, m)) => (waiting(r, m), Some(terminated(i))),
            None => (terminated(i), v.previous.as_ref().map(terminated)),
        },
        Some(_) => {
            let (r, m) = v
                .waiting
                .clone()
                .unwrap_or_else(|| ("ContainerCreating".into(), String::new()));
            (waiting(&r, &m), v.previous.as_ref().map(terminated))
        }
        None => {
            let (r, m) = v
                .waiting
                .clone()
                .unwrap_or_else(|| (default_waiting.into(), String::new()));
            (waiting(&r, &m), v.previous.as_ref().map(terminated))
        }
    };
    let running = v
        .current
        .as_ref()
        .is_some_and(|i| i.state == RunState::Running);
    let mut s = json!({
        "name": v.name,
        "image": v.image,
        "imageID": v.current.as_ref().map(|i| i.image_ref.clone()).unwrap_or_default(),
        "state": state,
        "lastState": last.unwrap_or_else(|| json!({})),
        "ready": v.is_ready(),
        "started": running && v.started.unwrap_or(true),
        "restartCount": v.current.as_ref().map(|i| i.attempt).unwrap_or(0),
    });
    if let Some(i) = &v.current {
        s["containerID"] = json!(container_id(&i.id));
    }
    s
}

fn succeeded(v: &ContainerView) -> bool {
    v.current
        .as_ref()
        .is_some_and(|i| i.state == RunState::Exited && i.exit_code == 0)
        && v.waiting.is_none()
}

/// Whether every init container has completed.
pub fn initialized(o: &Observed) -> bool {
    o.init.iter().all(succeeded)
}

/// Upstream's getPhase.
pub fn phase(pod: &Pod, o: &Observed) -> &'static str {
    let policy = pod_spec(pod).restart_policy.as_deref().unwrap_or("Always");
    if o.init_failed {
        return "Failed";
    }
    if !initialized(o) {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut ok) = (0, 0, 0, 0);
    for c in &o.containers {
        match &c.current {
            Some(i) if i.state == RunState::Running => running += 1,
            Some(i) if i.state == RunState::Exited => {
                stopped += 1;
                if i.exit_code == 0 {
                    ok += 1;
                }
            }
            _ if c.previous.is_some() => stopped += 1,
            _ => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if policy == "Always" {
            "Running"
        } else if stopped == ok {
            "Succeeded"
        } else if policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

/// The full status to write (through the status subresource).
pub fn pod_status(pod: &Pod, o: &Observed, now: Timestamp) -> Value {
    let now_s = time_string(now);
    let existing: PodStatus = pod.status.clone().unwrap_or_default();
    let phase = phase(pod, o);
    let terminal = phase == "Succeeded" || phase == "Failed";
    let init_done = initialized(o);
    let unready: Vec<&str> = o
        .containers
        .iter()
        .filter(|c| !c.is_ready())
        .map(|c| c.name.as_str())
        .collect();
    let incomplete: Vec<&str> = o
        .init
        .iter()
        .filter(|c| !succeeded(c))
        .map(|c| c.name.as_str())
        .collect();
    let transition = |t: &str, status: &str| -> String {
        existing
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t && c.status == status)
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| time_string(t.0))
            .unwrap_or_else(|| now_s.clone())
    };
    let cond = |t: &str, ok: bool, reason: Option<&str>, message: Option<String>| -> Value {
        let status = if ok { "True" } else { "False" };
        let mut c = json!({"type": t, "status": status, "lastProbeTime": null, "lastTransitionTime": transition(t, status)});
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        if let Some(m) = message {
            c["message"] = json!(m);
        }
        c
    };
    let ready = unready.is_empty() && init_done && !terminal;
    let (ready_reason, ready_msg) = if terminal {
        (Some("PodCompleted"), None)
    } else if ready {
        (None, None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let mut conditions = vec![
        cond("PodReadyToStartContainers", o.sandbox_ready, None, None),
        if init_done {
            cond(
                "Initialized",
                true,
                if terminal && !o.init.is_empty() {
                    Some("PodCompleted")
                } else {
                    None
                },
                None,
            )
        } else {
            cond(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                )),
            )
        },
        cond("Ready", ready, ready_reason, ready_msg.clone()),
        cond("ContainersReady", ready, ready_reason, ready_msg),
    ];
    // Conditions owned by others (PodScheduled, DisruptionTarget, readiness
    // gates) are carried over as they are.
    for c in existing.conditions.iter().flatten() {
        if ![
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
        ]
        .contains(&c.type_.as_str())
        {
            conditions.push(serde_json::to_value(c).unwrap_or(Value::Null));
        }
    }
    if !existing
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "PodScheduled")
    {
        conditions.push(cond("PodScheduled", true, None, None));
    }
    let init_default = "PodInitializing";
    let app_default = if init_done {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let start = existing
        .start_time
        .as_ref()
        .map(|t| time_string(t.0))
        .unwrap_or_else(|| now_s.clone());
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": o.host_ip,
        "hostIPs": [{"ip": o.host_ip}],
        "startTime": start,
        "qosClass": qos_class(pod),
        "containerStatuses": o.containers.iter().map(|c| container_status(c, app_default)).collect::<Vec<_>>(),
    });
    if !o.init.is_empty() {
        status["initContainerStatuses"] = o
            .init
            .iter()
            .map(|c| container_status(c, init_default))
            .collect();
    }
    match &o.pod_ip {
        Some(ip) if !ip.is_empty() => {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        _ => {
            // Keep an IP reported earlier (a stopped sandbox keeps its pod's
            // IP in the status, as upstream).
            if let Some(ip) = &existing.pod_ip {
                status["podIP"] = json!(ip);
                status["podIPs"] = json!([{"ip": ip}]);
            }
        }
    }
    status
}

/// Whether two statuses differ in anything but heartbeat-like noise.
pub fn same(a: &Value, b: &Value) -> bool {
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "a", "image": "busybox"}]},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]},
        }))
        .unwrap()
    }

    fn inst(state: RunState, attempt: u32, code: i32) -> Instance {
        Instance {
            id: format!("id{attempt}"),
            attempt,
            state,
            exit_code: code,
            reason: String::new(),
            message: String::new(),
            created_at: 1_700_000_000_000_000_000,
            started_at: 1_700_000_000_000_000_000,
            finished_at: if state == RunState::Exited {
                1_700_000_001_000_000_000
            } else {
                0
            },
            image_ref: "sha256:abc".into(),
            spec_image: None,
        }
    }

    fn view(
        current: Option<Instance>,
        previous: Option<Instance>,
        waiting: Option<(&str, &str)>,
    ) -> ContainerView {
        ContainerView {
            name: "a".into(),
            image: "busybox".into(),
            current,
            previous,
            waiting: waiting.map(|(a, b)| (a.to_string(), b.to_string())),
            ready: None,
            started: None,
        }
    }

    fn observed(c: ContainerView) -> Observed {
        Observed {
            containers: vec![c],
            pod_ip: Some("10.1.0.5".into()),
            host_ip: "192.0.2.2".into(),
            sandbox_ready: true,
            ..Default::default()
        }
    }

    #[test]
    fn running_pod() {
        let p = pod("Always");
        let s = pod_status(
            &p,
            &observed(view(Some(inst(RunState::Running, 0, 0)), None, None)),
            Timestamp::now(),
        );
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.1.0.5");
        assert_eq!(s["qosClass"], "BestEffort");
        let conds = s["conditions"].as_array().unwrap();
        let get = |t: &str| conds.iter().find(|c| c["type"] == t).unwrap().clone();
        assert_eq!(get("Ready")["status"], "True");
        assert_eq!(get("ContainersReady")["status"], "True");
        assert_eq!(get("Initialized")["status"], "True");
        assert_eq!(
            get("PodScheduled")["lastTransitionTime"],
            "2024-01-01T00:00:00Z"
        );
        let cs = &s["containerStatuses"][0];
        assert_eq!(cs["ready"], true);
        assert_eq!(cs["containerID"], "containerd://id0");
        assert!(cs["state"]["running"]["startedAt"].is_string());
    }

    #[test]
    fn readiness_probe_gates_ready() {
        let p = pod("Always");
        let mut v = view(Some(inst(RunState::Running, 0, 0)), None, None);
        v.ready = Some(false);
        let s = pod_status(&p, &observed(v), Timestamp::now());
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["containerStatuses"][0]["ready"], false);
        assert_eq!(s["containerStatuses"][0]["started"], true);
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone();
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["message"], "containers with unready status: [a]");
    }

    #[test]
    fn crash_loop() {
        let p = pod("Always");
        let v = view(
            Some(inst(RunState::Exited, 1, 1)),
            Some(inst(RunState::Exited, 0, 1)),
            Some(("CrashLoopBackOff", "back-off 10s")),
        );
        let s = pod_status(&p, &observed(v), Timestamp::now());
        assert_eq!(s["phase"], "Running");
        let cs = &s["containerStatuses"][0];
        assert_eq!(cs["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
        assert_eq!(cs["restartCount"], 1);
    }

    #[test]
    fn phases() {
        let done = |code| observed(view(Some(inst(RunState::Exited, 0, code)), None, None));
        assert_eq!(phase(&pod("Never"), &done(0)), "Succeeded");
        assert_eq!(phase(&pod("Never"), &done(2)), "Failed");
        assert_eq!(phase(&pod("OnFailure"), &done(0)), "Succeeded");
        assert_eq!(phase(&pod("OnFailure"), &done(2)), "Running");
        assert_eq!(phase(&pod("Always"), &done(0)), "Running");
        assert_eq!(
            phase(
                &pod("Always"),
                &observed(view(None, None, Some(("ErrImagePull", "x"))))
            ),
            "Pending"
        );
        let mut o = done(0);
        o.init = vec![view(None, None, None)];
        assert_eq!(phase(&pod("Always"), &o), "Pending");
    }

    #[test]
    fn oom_killed_and_image_pull_back_off() {
        let mut i = inst(RunState::Exited, 0, 137);
        i.reason = "OOMKilled".into();
        let s = container_status(&view(Some(i), None, None), "ContainerCreating");
        assert_eq!(s["state"]["terminated"]["reason"], "OOMKilled");
        let s = container_status(
            &view(
                None,
                None,
                Some(("ImagePullBackOff", "Back-off pulling image")),
            ),
            "ContainerCreating",
        );
        assert_eq!(s["state"]["waiting"]["reason"], "ImagePullBackOff");
        assert_eq!(s["restartCount"], 0);
        assert_eq!(s["ready"], false);
    }
}
