//! The node lifecycle controller (upstream's `pkg/controller/nodelifecycle`)
//! and taint-based eviction (upstream's `pkg/controller/tainteviction`).
//!
//! **Health.** Every `node_monitor_period` (5s) the controller looks at
//! every Node. A Node is heard from when its Lease in `kube-node-lease` is
//! renewed or its Ready condition's `lastHeartbeatTime` moves; the time is
//! when the controller *noticed* (its own clock, as upstream: the kubelet's
//! clock may be off). A Node not heard from for `node_monitor_grace_period`
//! (40s; `node_startup_grace_period`, 60s from creation, while it never
//! posted a Ready condition) gets its kubelet conditions (Ready,
//! MemoryPressure, DiskPressure, PIDPressure) set `Unknown`, reason
//! `NodeStatusUnknown`, message "Kubelet stopped posting node status." (or
//! `NodeStatusNeverUpdated`, "Kubelet never posted node status."). The
//! write carries the Node's resourceVersion, so a kubelet reporting at the
//! same moment wins and the Node is looked at again. When a Node's Ready
//! condition leaves `True`, a `NodeNotReady` event is recorded; pods on a
//! Node whose Ready condition is not `True` get their own Ready condition
//! set `False` (upstream's `MarkPodsNotReady`), with a `NodeNotReady` event.
//!
//! **Taints.** Conditions become taints (upstream's `TaintNodesByCondition`
//! and taint-based evictions): Ready `False` → `node.kubernetes.io/not-ready`,
//! Ready `Unknown` → `node.kubernetes.io/unreachable`, each as `NoSchedule`
//! and `NoExecute`; `MemoryPressure`/`DiskPressure`/`PIDPressure`/
//! `NetworkUnavailable` `True` → the matching `NoSchedule` taint;
//! `spec.unschedulable` → `node.kubernetes.io/unschedulable:NoSchedule`.
//! They go once the condition does (the kubelet reporting Ready again).
//!
//! **Full disruption.** When every Node is not Ready at once, it is more
//! likely the control plane's network than every machine, and evicting
//! everything would make it worse. Upstream then stops evictions
//! ("master disruption mode"); so does this: no Node carries the `NoExecute`
//! not-ready/unreachable taints while every Node is not Ready (those present
//! are removed), and when a Node is Ready again every Node gets a fresh
//! grace period. Upstream's per-zone rate limits (`--node-eviction-rate`,
//! partial disruption in large zones) are left out: tainting is immediate.
//!
//! **Taint eviction.** A pod on a Node with `NoExecute` taints it does not
//! tolerate is deleted at once; if it tolerates them all, it is deleted
//! after the smallest `tolerationSeconds` of the tolerations used (counted
//! from when the controller first saw it so), or never if none has one. The
//! API server gives every pod 300s tolerations of `not-ready` and
//! `unreachable` (upstream's DefaultTolerationSeconds admission). Before the
//! delete the pod gets a `DisruptionTarget` condition
//! (`DeletionByTaintManager`) and a `TaintManagerEviction` event ("Marking
//! for deletion Pod ns/name"); a scheduled deletion cancelled (the taint
//! went away) gets "Cancelling deletion of Pod ns/name". The delete is
//! graceful: on an unreachable Node the pod stays Terminating until its
//! kubelet returns (or the Node is deleted, or marked out of service, and
//! pod GC force-deletes it), while its controller replaces it elsewhere.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::config::ControllerConfig;
use crate::informer::{Change, Informer, SharedInformers};
use crate::kit::selector::tolerates;
use crate::kit::{self, Key};
use crate::pod_control::{self, EventRecorder, EventType};
use crate::queue::{self, Backoff, Queue};

/// The node lifecycle controller's event source (upstream's).
pub const COMPONENT: &str = "node-controller";
/// The taint eviction controller's event source (upstream's).
pub const EVICTION_COMPONENT: &str = "taint-eviction-controller";
/// Where kubelets renew their Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
/// Set by an administrator on a Node that is gone for good: pod GC then
/// force-deletes its terminating pods.
pub const TAINT_OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// The conditions a kubelet owns, set Unknown when it goes silent.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Upstream's `nodeConditionToTaintKeyStatusMap`: (condition, status, NoSchedule taint).
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", TAINT_NOT_READY),
    ("Ready", "Unknown", TAINT_UNREACHABLE),
    ("MemoryPressure", "True", TAINT_MEMORY_PRESSURE),
    ("DiskPressure", "True", TAINT_DISK_PRESSURE),
    ("PIDPressure", "True", TAINT_PID_PRESSURE),
    ("NetworkUnavailable", "True", TAINT_NETWORK_UNAVAILABLE),
];

/// Status writes and taint patches in flight at once.
const CONCURRENCY: usize = 16;
/// Attempts at a Node write that keeps conflicting (upstream's `nodeStatusUpdateRetry`).
const RETRIES: usize = 5;
/// Pods evicted at once.
const EVICTION_WORKERS: usize = 8;

// ---------------------------------------------------------------------------
// Node helpers

pub fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The Ready condition's status, if the Node has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// Upstream's `IsNodeReady`: the Ready condition is `True`.
pub fn is_node_ready(node: &Node) -> bool {
    ready_status(node) == Some("True")
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

/// The Node's `NoExecute` taints.
pub fn no_execute_taints(node: &Node) -> Vec<Taint> {
    taints(node)
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .cloned()
        .collect()
}

fn is_managed(t: &Taint) -> bool {
    match t.effect.as_str() {
        "NoSchedule" => {
            t.key == TAINT_UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == t.key)
        }
        "NoExecute" => t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE,
        _ => false,
    }
}

/// The (key, effect) pairs of the taints this controller wants on `node`.
pub fn wanted_taints(node: &Node, disrupted: bool) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for (cond, status, key) in CONDITION_TAINTS {
        if condition(node, cond).map(|c| c.status.as_str()) == Some(status) {
            out.push((key, "NoSchedule"));
        }
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        out.push((TAINT_UNSCHEDULABLE, "NoSchedule"));
    }
    if !disrupted {
        match ready_status(node) {
            Some("False") => out.push((TAINT_NOT_READY, "NoExecute")),
            Some("Unknown") => out.push((TAINT_UNREACHABLE, "NoExecute")),
            _ => {}
        }
    }
    out
}

/// The Node's taints with the managed ones made to match
/// [`wanted_taints`]: others are kept as they are, in their order; wanted
/// ones already there keep their `timeAdded`; new ones are appended
/// (`NoExecute` ones with `timeAdded: now`). `None` if nothing changes.
pub fn reconcile_taints(node: &Node, disrupted: bool, now: Timestamp) -> Option<Vec<Taint>> {
    let wanted = wanted_taints(node, disrupted);
    let current = taints(node);
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !is_managed(t) || wanted.iter().any(|(k, e)| t.key == *k && t.effect == *e))
        .cloned()
        .collect();
    for (key, effect) in &wanted {
        if !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            out.push(Taint {
                key: key.to_string(),
                effect: effect.to_string(),
                value: None,
                time_added: (*effect == "NoExecute").then_some(Time(now)),
            });
        }
    }
    (out != current).then_some(out)
}

/// Upstream's `GetMatchingTolerations`: whether every taint is tolerated,
/// and by which tolerations (the first matching one per taint).
pub fn matching_tolerations<'a>(
    taints: &[Taint],
    tolerations: &'a [Toleration],
) -> (bool, Vec<&'a Toleration>) {
    let mut used = Vec::new();
    for taint in taints {
        match tolerations.iter().find(|t| tolerates(t, taint)) {
            Some(t) => used.push(t),
            None => return (false, Vec::new()),
        }
    }
    (true, used)
}

/// Upstream's `getMinTolerationTime`: the smallest `tolerationSeconds`
/// (0 for none used, or for a non-positive one); `None` for forever.
pub fn min_toleration_time(used: &[&Toleration]) -> Option<Duration> {
    if used.is_empty() {
        return Some(Duration::ZERO);
    }
    used.iter()
        .filter_map(|t| t.toleration_seconds)
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .min()
}

fn pod_node(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn pod_tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

fn time_string(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

// ---------------------------------------------------------------------------
// Health bookkeeping

/// What the controller last saw of a Node (upstream's `nodeHealthData`).
#[derive(Clone, Debug)]
pub struct Health {
    /// When the Node was last heard from, by the controller's clock.
    pub probe: Timestamp,
    /// The Ready condition last saved: (status, lastHeartbeatTime); `None`
    /// if the Node had none.
    saved_ready: Option<(String, Option<Timestamp>)>,
    /// The Lease renewTime last seen.
    lease_renew: Option<Timestamp>,
}

fn saved(c: Option<&NodeCondition>) -> Option<(String, Option<Timestamp>)> {
    c.map(|c| {
        (
            c.status.clone(),
            c.last_heartbeat_time.as_ref().map(|t| t.0),
        )
    })
}

/// Updates what the controller knows of `node` with what it sees now (its
/// Ready condition, its Lease) and returns the grace period that applies
/// (upstream's first half of `tryUpdateNodeHealth`).
pub fn observe(
    health: &mut Option<Health>,
    node: &Node,
    lease: Option<&Lease>,
    config: &ControllerConfig,
    now: Timestamp,
) -> Duration {
    let current = condition(node, "Ready");
    let grace = if current.is_none() {
        config.node_startup_grace_period
    } else {
        config.node_monitor_grace_period
    };
    match health {
        None => {
            // A Node that never reported counts from its creation; one the
            // controller just learned of (a restart) from now.
            let probe = match current {
                None => node
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or(now),
                Some(_) => now,
            };
            *health = Some(Health {
                probe,
                saved_ready: saved(current),
                lease_renew: None,
            });
        }
        Some(h) => {
            let seen = saved(current);
            let changed = match (&h.saved_ready, &seen) {
                (None, None) => false,
                (Some(_), None) | (None, Some(_)) => true,
                (Some((_, a)), Some((_, b))) => a != b,
            };
            if changed {
                h.probe = now;
                h.saved_ready = seen;
            }
        }
    }
    let h = health.as_mut().expect("set above");
    if let Some(renew) = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0)
        && h.lease_renew.is_none_or(|saved| saved < renew)
    {
        h.lease_renew = Some(renew);
        h.probe = now;
    }
    grace
}

/// The kubelet conditions set Unknown, as upstream's node controller does
/// for a Node it has not heard from; `false` if that changes nothing.
pub fn mark_unknown(node: &mut Node, now: Timestamp) -> bool {
    let created = node.metadata.creation_timestamp.clone();
    let status = node.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: created.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed
}

// ---------------------------------------------------------------------------
// The controller

struct Shared {
    client: Client,
    config: ControllerConfig,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    recorder: EventRecorder,
}

/// What the monitor loop keeps between passes.
#[derive(Default)]
struct MonitorState {
    health: HashMap<String, Health>,
    /// Every Node is not Ready: no NoExecute taints.
    disrupted: bool,
}

/// Runs the node lifecycle and taint eviction controllers until one of
/// their informers stops.
pub async fn run(client: Client, config: ControllerConfig) -> anyhow::Result<()> {
    run_shared(client.clone(), config, SharedInformers::new(client)).await
}

/// [`run`] on the process's shared informers.
pub async fn run_shared(client: Client, config: ControllerConfig, informers: SharedInformers) -> anyhow::Result<()> {
    let node_inf = informers.get::<Node>();
    let lease_inf = Informer::new(
        Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
        watcher::Config::default(),
    );
    let pod_inf = informers.get::<Pod>();
    let shared = Arc::new(Shared {
        recorder: EventRecorder::new(client.clone(), COMPONENT),
        client: client.clone(),
        config,
        nodes: node_inf.store(),
        leases: lease_inf.store(),
        pods: pod_inf.store(),
    });
    let (queue, workers) = queue::queue::<Key>(Backoff::CONTROLLER);
    let eviction = Arc::new(Eviction {
        client: client.clone(),
        nodes: node_inf.store(),
        pods: pod_inf.store(),
        queue: queue.clone(),
        scheduled: Mutex::new(HashMap::new()),
        by_node: Mutex::new(HashMap::new()),
        recorder: EventRecorder::new(client, EVICTION_COMPONENT),
    });
    let kick = Arc::new(Notify::new());

    let mut tasks = JoinSet::new();
    {
        let (ev, kick) = (eviction.clone(), kick.clone());
        tasks.spawn(node_inf.run("nodes", move |ch| {
            if node_change_matters(&ch) {
                kick.notify_one();
            }
            ev.on_node(&ch);
        }));
    }
    tasks.spawn(lease_inf.run("leases", |_| {}));
    {
        let ev = eviction.clone();
        tasks.spawn(pod_inf.run("pods", move |ch| ev.on_pod(&ch)));
    }
    let _ = tokio::join!(
        shared.nodes.wait_until_ready(),
        shared.leases.wait_until_ready(),
        shared.pods.wait_until_ready()
    );
    tracing::info!(
        grace_period = ?shared.config.node_monitor_grace_period,
        monitor_period = ?shared.config.node_monitor_period,
        "node lifecycle controller synced"
    );
    eviction.enqueue_all();
    {
        let ev = eviction.clone();
        tasks.spawn(kit::run_workers(
            "taint-eviction",
            queue,
            workers,
            EVICTION_WORKERS,
            move |key: Key| {
                let ev = ev.clone();
                async move { ev.sync(&key).await }
            },
        ));
    }
    tasks.spawn(async move {
        let mut state = MonitorState::default();
        loop {
            shared.monitor(&mut state).await;
            tokio::select! {
                _ = tokio::time::sleep(shared.config.node_monitor_period) => {}
                _ = kick.notified() => {}
            }
        }
    });
    let _ = tasks.join_next().await;
    anyhow::bail!("node lifecycle controller stopped")
}

/// A Node change that can change what the controller does (conditions,
/// unschedulable, coming or going), as opposed to a heartbeat.
fn node_change_matters(ch: &Change<Node>) -> bool {
    fn signature(n: &Node) -> (bool, Vec<(String, String)>) {
        let mut conds: Vec<(String, String)> = n
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .map(|c| (c.type_.clone(), c.status.clone()))
            .collect();
        conds.sort();
        (
            n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            conds,
        )
    }
    match ch {
        Change::Added(_) | Change::Deleted(_) => true,
        Change::Updated(old, new) => signature(old) != signature(new),
    }
}

/// One Node after the health step of a pass.
struct Observed {
    node: Arc<Node>,
    health: Option<Health>,
    /// The Ready status before the pass and after it.
    before: Option<String>,
    after: Option<String>,
}

impl Shared {
    fn lease(&self, node: &str) -> Option<Arc<Lease>> {
        self.leases
            .get(&ObjectRef::new(node).within(LEASE_NAMESPACE))
    }

    /// One pass over every Node (upstream's `monitorNodeHealth`).
    async fn monitor(&self, state: &mut MonitorState) {
        let nodes = self.nodes.state();
        let mut health = std::mem::take(&mut state.health);
        let work: Vec<(Arc<Node>, Option<Health>)> = nodes
            .into_iter()
            .map(|n| {
                let h = health.remove(&n.name_any());
                (n, h)
            })
            .collect();
        let observed: Vec<Observed> = futures::stream::iter(work)
            .map(|(node, h)| self.update_health(node, h))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let now = Timestamp::now();

        for o in &observed {
            if o.before.as_deref() == Some("True") && o.after.as_deref() != Some("True") {
                let name = o.node.name_any();
                tracing::info!(node = %name, ready = ?o.after, "node is not ready");
                self.recorder.event(
                    pod_control::object_ref(&*o.node),
                    EventType::Normal,
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                );
            }
        }

        // Full disruption: every Node not Ready.
        let all_down =
            !observed.is_empty() && observed.iter().all(|o| o.after.as_deref() != Some("True"));
        let mut observed = observed;
        if all_down && !state.disrupted {
            tracing::warn!(
                nodes = observed.len(),
                "every node is not ready: entering full disruption mode, no taint-based evictions"
            );
            state.disrupted = true;
        } else if !all_down && state.disrupted {
            tracing::info!("a node is ready again: leaving full disruption mode");
            state.disrupted = false;
            // Every Node gets a fresh grace period.
            for o in &mut observed {
                if let Some(h) = o.health.as_mut() {
                    h.probe = now;
                }
            }
        }
        let disrupted = state.disrupted;

        futures::stream::iter(
            observed
                .iter()
                .filter(|o| reconcile_taints(&o.node, disrupted, now).is_some()),
        )
        .for_each_concurrent(CONCURRENCY, |o| {
            self.update_taints(o.node.clone(), disrupted)
        })
        .await;

        // Pods of Nodes that are not Ready are not ready either.
        let not_ready: HashSet<String> = observed
            .iter()
            .filter(|o| o.after.as_deref().is_some_and(|s| s != "True"))
            .map(|o| o.node.name_any())
            .collect();
        if !not_ready.is_empty() {
            let pods: Vec<Arc<Pod>> = self
                .pods
                .state()
                .into_iter()
                .filter(|p| not_ready.contains(pod_node(p)) && pod_control::is_pod_ready(p))
                .collect();
            futures::stream::iter(pods)
                .for_each_concurrent(CONCURRENCY, |p| self.mark_pod_not_ready(p))
                .await;
        }

        state.health = observed
            .into_iter()
            .filter_map(|o| o.health.map(|h| (o.node.name_any(), h)))
            .collect();
    }

    /// Upstream's `tryUpdateNodeHealth`, retried with a fresh read on conflict.
    async fn update_health(&self, node: Arc<Node>, mut health: Option<Health>) -> Observed {
        let name = node.name_any();
        let before = ready_status(&node).map(String::from);
        let api: Api<Node> = Api::all(self.client.clone());
        let mut node = node;
        for attempt in 0..RETRIES {
            let now = Timestamp::now();
            let lease = self.lease(&name);
            let grace = observe(&mut health, &node, lease.as_deref(), &self.config, now);
            let probe = health.as_ref().map(|h| h.probe).unwrap_or(now);
            let stale =
                now > probe + SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
            if !stale {
                break;
            }
            if ready_status(&node) == Some("Unknown") {
                // Upstream writes only when the Ready condition changes.
                break;
            }
            let mut updated = (*node).clone();
            mark_unknown(&mut updated, now);
            updated.metadata.managed_fields = None;
            match api
                .replace_status(&name, &PostParams::default(), &updated)
                .await
            {
                Ok(n) => {
                    tracing::info!(node = %name, silent_secs = now.duration_since(probe).as_secs(), "node stopped posting status; conditions set to Unknown");
                    if let Some(h) = health.as_mut() {
                        h.saved_ready = saved(condition(&n, "Ready"));
                    }
                    node = Arc::new(n);
                    break;
                }
                Err(e) if pod_control::is_not_found(&e) => break,
                Err(e) if pod_control::is_conflict(&e) && attempt + 1 < RETRIES => {
                    match api.get_opt(&name).await {
                        Ok(Some(fresh)) => node = Arc::new(fresh),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(node = %name, error = %e, "reading node to retry its health update");
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(node = %name, error = %pod_control::error_message(&e), "could not update node health");
                    break;
                }
            }
        }
        let after = ready_status(&node).map(String::from);
        Observed {
            node,
            health,
            before,
            after,
        }
    }

    /// Makes the Node's managed taints match its conditions; re-reads and
    /// retries on conflict.
    async fn update_taints(&self, node: Arc<Node>, disrupted: bool) {
        let name = node.name_any();
        let api: Api<Node> = Api::all(self.client.clone());
        let mut node = node;
        for _ in 0..RETRIES {
            let Some(new) = reconcile_taints(&node, disrupted, Timestamp::now()) else {
                return;
            };
            let patch = json!({
                "metadata": {"resourceVersion": node.resource_version()},
                "spec": {"taints": if new.is_empty() { serde_json::Value::Null } else { json!(new) }},
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => {
                    let keys: Vec<String> = new
                        .iter()
                        .filter(|t| is_managed(t))
                        .map(|t| format!("{}:{}", t.key, t.effect))
                        .collect();
                    tracing::info!(node = %name, taints = ?keys, "node taints updated");
                    return;
                }
                Err(e) if pod_control::is_not_found(&e) => return,
                Err(e) if pod_control::is_conflict(&e) => match api.get_opt(&name).await {
                    Ok(Some(fresh)) => node = Arc::new(fresh),
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(node = %name, error = %e, "reading node to retry its taints");
                        return;
                    }
                },
                Err(e) => {
                    tracing::warn!(node = %name, error = %pod_control::error_message(&e), "could not update node taints");
                    return;
                }
            }
        }
    }

    /// Upstream's `MarkPodsNotReady` for one pod: Ready `False`.
    async fn mark_pod_not_ready(&self, pod: Arc<Pod>) {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let patch = json!({
            "metadata": {"uid": pod.uid()},
            "status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": time_string(Timestamp::now())}]},
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %name, namespace = %ns, node = pod_node(&pod), "pod marked not ready: its node is not ready");
                self.recorder.event(
                    pod_control::object_ref(&*pod),
                    EventType::Warning,
                    "NodeNotReady",
                    "Node is not ready",
                );
            }
            Err(e) if pod_control::is_not_found(&e) || pod_control::is_conflict(&e) => {}
            Err(e) => {
                tracing::warn!(pod = %name, namespace = %ns, error = %pod_control::error_message(&e), "could not mark pod not ready")
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Taint eviction

struct Eviction {
    client: Client,
    nodes: Store<Node>,
    pods: Store<Pod>,
    queue: Queue<Key>,
    /// Pods whose deletion is scheduled → since when they have been
    /// tolerating the Node's NoExecute taints.
    scheduled: Mutex<HashMap<Key, Timestamp>>,
    /// Node → the pods bound to it (upstream's `spec.nodeName` index), so
    /// a taint change does not scan every pod.
    by_node: Mutex<HashMap<String, HashSet<Key>>>,
    recorder: EventRecorder,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}: {1}")]
pub struct EvictionError(&'static str, #[source] kube::Error);

impl Eviction {
    fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(&ObjectRef::new(name))
    }

    fn enqueue_node_pods(&self, node: &str) {
        if let Some(keys) = self.by_node.lock().expect("index lock").get(node) {
            for k in keys {
                self.queue.add(k.clone());
            }
        }
    }

    fn index(&self, node: &str, key: &Key, add: bool) {
        let mut idx = self.by_node.lock().expect("index lock");
        if add {
            idx.entry(node.to_string()).or_default().insert(key.clone());
        } else if let Some(keys) = idx.get_mut(node) {
            keys.remove(key);
            if keys.is_empty() {
                idx.remove(node);
            }
        }
    }

    /// Every pod on a Node with NoExecute taints (after the caches synced).
    fn enqueue_all(&self) {
        let tainted: HashSet<String> = self
            .nodes
            .state()
            .iter()
            .filter(|n| !no_execute_taints(n).is_empty())
            .map(|n| n.name_any())
            .collect();
        for p in self
            .pods
            .state()
            .iter()
            .filter(|p| tainted.contains(pod_node(p)))
        {
            self.queue.add(Key::of(&**p));
        }
    }

    fn on_node(&self, ch: &Change<Node>) {
        match ch {
            Change::Added(n) | Change::Deleted(n) => {
                if !no_execute_taints(n).is_empty() {
                    self.enqueue_node_pods(&n.name_any());
                }
            }
            Change::Updated(old, new) => {
                if no_execute_taints(old) != no_execute_taints(new) {
                    self.enqueue_node_pods(&new.name_any());
                }
            }
        }
    }

    fn on_pod(&self, ch: &Change<Pod>) {
        match ch {
            Change::Added(p) => {
                self.index(pod_node(p), &Key::of(&**p), true);
                if self
                    .node(pod_node(p))
                    .is_some_and(|n| !no_execute_taints(&n).is_empty())
                {
                    self.queue.add(Key::of(&**p));
                }
            }
            Change::Updated(old, new) => {
                if pod_node(old) != pod_node(new) {
                    self.index(pod_node(old), &Key::of(&**old), false);
                    self.index(pod_node(new), &Key::of(&**new), true);
                }
                if pod_node(old) != pod_node(new)
                    || pod_tolerations(old) != pod_tolerations(new)
                    || old.metadata.deletion_timestamp.is_none()
                        && new.metadata.deletion_timestamp.is_some()
                {
                    self.queue.add(Key::of(&**new));
                }
            }
            Change::Deleted(p) => {
                self.index(pod_node(p), &Key::of(&**p), false);
                self.scheduled
                    .lock()
                    .expect("eviction lock")
                    .remove(&Key::of(&**p));
            }
        }
    }

    /// Cancels a scheduled deletion, with upstream's event.
    fn cancel(&self, key: &Key, pod: Option<&Pod>) {
        let was = self
            .scheduled
            .lock()
            .expect("eviction lock")
            .remove(key)
            .is_some();
        if was && let Some(pod) = pod {
            tracing::info!(pod = %key, "cancelling taint-based deletion");
            self.recorder.event(
                pod_control::object_ref(pod),
                EventType::Normal,
                "TaintManagerEviction",
                format!("Cancelling deletion of Pod {key}"),
            );
        }
    }

    /// Upstream's `processPodOnNode`, level-triggered: decides from the
    /// pod and its Node as they are now, and requeues itself for a
    /// deletion due later.
    async fn sync(&self, key: &Key) -> Result<Option<Duration>, EvictionError> {
        let Some(pod) = self.pods.get(&key.obj_ref()) else {
            self.cancel(key, None);
            return Ok(None);
        };
        if pod.metadata.deletion_timestamp.is_some() {
            self.scheduled.lock().expect("eviction lock").remove(key);
            return Ok(None);
        }
        let Some(node) = self.node(pod_node(&pod)) else {
            self.cancel(key, None);
            return Ok(None);
        };
        let taints = no_execute_taints(&node);
        if taints.is_empty() {
            self.cancel(key, Some(&pod));
            return Ok(None);
        }
        let (all, used) = matching_tolerations(&taints, pod_tolerations(&pod));
        let now = Timestamp::now();
        if all {
            let Some(wait) = min_toleration_time(&used) else {
                self.cancel(key, Some(&pod));
                return Ok(None);
            };
            let since = *self
                .scheduled
                .lock()
                .expect("eviction lock")
                .entry(key.clone())
                .or_insert(now);
            let due = since + SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX);
            if now < due {
                return Ok(Some(kit::until(now, due)));
            }
        } else {
            tracing::info!(pod = %key, node = %node.name_any(), "pod does not tolerate the node's NoExecute taints");
        }
        self.evict(key, &pod).await?;
        self.scheduled.lock().expect("eviction lock").remove(key);
        Ok(None)
    }

    /// Upstream's `addConditionAndDeletePod` (with the event first).
    async fn evict(&self, key: &Key, pod: &Pod) -> Result<(), EvictionError> {
        tracing::info!(pod = %key, node = pod_node(pod), "deleting pod for NoExecute taints");
        self.recorder.event(
            pod_control::object_ref(pod),
            EventType::Normal,
            "TaintManagerEviction",
            format!("Marking for deletion Pod {key}"),
        );
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let uid = pod.uid();
        let has_condition = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "DisruptionTarget"
                        && c.status == "True"
                        && c.reason.as_deref() == Some("DeletionByTaintManager")
                })
            });
        if !has_condition {
            let patch = json!({
                "metadata": {"uid": uid},
                "status": {"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                    "message": "Taint manager: deleting due to NoExecute taint", "lastTransitionTime": time_string(Timestamp::now())}]},
            });
            match api
                .patch_status(&key.name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                Ok(_) => {}
                Err(e) if pod_control::is_not_found(&e) || pod_control::is_conflict(&e) => {
                    return Ok(());
                }
                Err(e) => return Err(EvictionError("adding the DisruptionTarget condition", e)),
            }
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&key.name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if pod_control::is_not_found(&e) || pod_control::is_conflict(&e) => Ok(()),
            Err(e) => Err(EvictionError("deleting the pod", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn node(v: Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn ready(status: &str) -> Value {
        json!({"type": "Ready", "status": status, "lastHeartbeatTime": "2024-01-01T00:00:00Z", "lastTransitionTime": "2024-01-01T00:00:00Z"})
    }

    fn keys(t: &[Taint]) -> Vec<String> {
        t.iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    #[test]
    fn conditions_become_taints() {
        let now = Timestamp::now();
        let n = node(
            json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true, "taints": [{"key": "mine", "effect": "NoSchedule"}]},
            "status": {"conditions": [ready("Unknown"), {"type": "DiskPressure", "status": "True"}]}}),
        );
        let t = reconcile_taints(&n, false, now).unwrap();
        assert_eq!(
            keys(&t),
            [
                "mine:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/disk-pressure:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        assert!(
            t.iter()
                .find(|t| t.effect == "NoExecute")
                .unwrap()
                .time_added
                .is_some()
        );
        assert!(
            t.iter()
                .find(|t| t.key == TAINT_UNSCHEDULABLE)
                .unwrap()
                .time_added
                .is_none()
        );
        let disrupted = reconcile_taints(&n, true, now).unwrap();
        assert!(
            !keys(&disrupted).contains(&"node.kubernetes.io/unreachable:NoExecute".to_string()),
            "no NoExecute taints in full disruption"
        );

        // Reconciled: nothing more to do. Ready False swaps unreachable for not-ready.
        let mut n2 = n.clone();
        n2.spec.as_mut().unwrap().taints = Some(t);
        assert_eq!(reconcile_taints(&n2, false, now), None);
        n2.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        let t2 = reconcile_taints(&n2, false, now).unwrap();
        assert!(keys(&t2).contains(&"node.kubernetes.io/not-ready:NoExecute".to_string()));
        assert!(
            !keys(&t2)
                .iter()
                .any(|k| k.starts_with("node.kubernetes.io/unreachable")),
            "{t2:?}"
        );
        // Ready again, schedulable: only the foreign taint stays.
        n2.status.as_mut().unwrap().conditions =
            Some(vec![serde_json::from_value(ready("True")).unwrap()]);
        n2.spec.as_mut().unwrap().unschedulable = None;
        assert_eq!(
            keys(&reconcile_taints(&n2, false, now).unwrap()),
            ["mine:NoSchedule"]
        );
    }

    #[test]
    fn tolerations_and_their_time() {
        let taints: Vec<Taint> =
            serde_json::from_value(json!([{"key": TAINT_UNREACHABLE, "effect": "NoExecute"}]))
                .unwrap();
        let tol = |v: Value| serde_json::from_value::<Vec<Toleration>>(v).unwrap();
        let none = tol(json!([]));
        assert!(!matching_tolerations(&taints, &none).0);
        let two = tol(
            json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}]),
        );
        let (all, used) = matching_tolerations(&taints, &two);
        assert!(all);
        assert_eq!(min_toleration_time(&used), Some(Duration::from_secs(2)));
        let forever = tol(json!([{"key": TAINT_UNREACHABLE, "operator": "Exists"}]));
        let (_, used) = matching_tolerations(&taints, &forever);
        assert_eq!(min_toleration_time(&used), None);
        let negative = tol(json!([{"operator": "Exists", "tolerationSeconds": -5}]));
        let (_, used) = matching_tolerations(&taints, &negative);
        assert_eq!(min_toleration_time(&used), Some(Duration::ZERO));
    }

    #[test]
    fn health_follows_heartbeats_and_leases() {
        let config = ControllerConfig::default();
        let t0 = Timestamp::now();
        let n = node(
            json!({"metadata": {"name": "n", "creationTimestamp": "2020-01-01T00:00:00Z"}, "status": {"conditions": [ready("True")]}}),
        );
        let mut h = None;
        assert_eq!(
            observe(&mut h, &n, None, &config, t0),
            config.node_monitor_grace_period
        );
        assert_eq!(h.as_ref().unwrap().probe, t0, "first seen: heard from now");
        let t1 = t0 + SignedDuration::from_secs(10);
        observe(&mut h, &n, None, &config, t1);
        assert_eq!(h.as_ref().unwrap().probe, t0, "same heartbeat: nothing new");
        let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {"renewTime": "2024-01-01T00:00:05.000000Z"}})).unwrap();
        observe(&mut h, &n, Some(&lease), &config, t1);
        assert_eq!(
            h.as_ref().unwrap().probe,
            t1,
            "a lease renewal is a sign of life"
        );
        let t2 = t1 + SignedDuration::from_secs(10);
        observe(&mut h, &n, Some(&lease), &config, t2);
        assert_eq!(h.as_ref().unwrap().probe, t1, "the same renewal is not");

        // Never reported: the startup grace, from creation.
        let fresh =
            node(json!({"metadata": {"name": "m", "creationTimestamp": "2020-01-01T00:00:00Z"}}));
        let mut h = None;
        assert_eq!(
            observe(&mut h, &fresh, None, &config, t0),
            config.node_startup_grace_period
        );
        assert_eq!(h.unwrap().probe.to_string(), "2020-01-01T00:00:00Z");
    }

    #[test]
    fn unknown_conditions_as_upstream_writes_them() {
        let now = Timestamp::now();
        let mut n = node(
            json!({"metadata": {"name": "n", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "status": {"conditions": [ready("True"), {"type": "MemoryPressure", "status": "False"}, {"type": "NetworkUnavailable", "status": "False"}]}}),
        );
        assert!(mark_unknown(&mut n, now));
        let r = condition(&n, "Ready").unwrap();
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref(), r.message.as_deref()),
            (
                "Unknown",
                Some("NodeStatusUnknown"),
                Some("Kubelet stopped posting node status.")
            )
        );
        assert_eq!(r.last_transition_time.as_ref().unwrap().0, now);
        assert_eq!(
            r.last_heartbeat_time.as_ref().unwrap().0.to_string(),
            "2024-01-01T00:00:00Z",
            "the heartbeat stays the kubelet's"
        );
        assert_eq!(
            condition(&n, "DiskPressure").unwrap().reason.as_deref(),
            Some("NodeStatusNeverUpdated")
        );
        assert_eq!(
            condition(&n, "NetworkUnavailable").unwrap().status,
            "False",
            "not a kubelet condition"
        );
        assert!(!mark_unknown(&mut n, now), "already Unknown");
    }
}
