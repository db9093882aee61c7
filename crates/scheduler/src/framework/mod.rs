//! The scheduling framework: plugin interfaces at upstream's extension
//! points (QueueSort, PreFilter, Filter, PostFilter, PreScore, Score with
//! NormalizeScore, Bind), the `Framework` that runs them, and the types they
//! exchange.

pub mod cycle_state;
pub mod node_info;
pub mod runtime;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

pub use cycle_state::CycleState;
pub use node_info::{NodeInfo, PodInfo};
pub use runtime::Framework;
pub use snapshot::Snapshot;

use k8s_openapi::api::core::v1::Pod;

/// Highest score a Score plugin may return after normalization.
pub const MAX_NODE_SCORE: i64 = 100;
pub const MIN_NODE_SCORE: i64 = 0;

/// Outcome code of a plugin call (upstream's `framework.Code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    Success,
    Error,
    /// The pod does not fit now; preemption may help.
    Unschedulable,
    /// The pod does not fit and preemption cannot help.
    UnschedulableAndUnresolvable,
    /// The plugin has nothing to do for this pod at this extension point.
    Skip,
}

/// A plugin's verdict with its reasons (upstream's `framework.Status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    /// The plugin that produced a failure.
    pub plugin: &'static str,
}

impl Status {
    pub fn success() -> Status {
        Status { code: Code::Success, reasons: Vec::new(), plugin: "" }
    }
    pub fn new(code: Code, reason: impl Into<String>) -> Status {
        Status { code, reasons: vec![reason.into()], plugin: "" }
    }
    pub fn with_reasons(code: Code, reasons: Vec<String>) -> Status {
        Status { code, reasons, plugin: "" }
    }
    pub fn unschedulable(reason: impl Into<String>) -> Status {
        Status::new(Code::Unschedulable, reason)
    }
    pub fn unresolvable(reason: impl Into<String>) -> Status {
        Status::new(Code::UnschedulableAndUnresolvable, reason)
    }
    pub fn error(reason: impl Into<String>) -> Status {
        Status::new(Code::Error, reason)
    }
    pub fn skip() -> Status {
        Status { code: Code::Skip, reasons: Vec::new(), plugin: "" }
    }
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }
    /// Unschedulable or UnschedulableAndUnresolvable.
    pub fn is_rejected(&self) -> bool {
        matches!(self.code, Code::Unschedulable | Code::UnschedulableAndUnresolvable)
    }
    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }
    pub fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = plugin;
        self
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message())
    }
}

/// What PreFilter may narrow the node set to (`None`: all nodes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreFilterResult {
    pub node_names: Option<BTreeSet<String>>,
}

impl PreFilterResult {
    pub fn all_nodes(&self) -> bool {
        self.node_names.is_none()
    }

    pub fn merge(self, other: PreFilterResult) -> PreFilterResult {
        match (self.node_names, other.node_names) {
            (None, x) | (x, None) => PreFilterResult { node_names: x },
            (Some(a), Some(b)) => PreFilterResult { node_names: Some(a.intersection(&b).cloned().collect()) },
        }
    }
}

/// What PostFilter (preemption) decided.
#[derive(Clone, Debug, Default)]
pub struct PostFilterResult {
    /// `Some("")` clears the pod's nominated node; `Some(node)` nominates it.
    pub nominated_node_name: Option<String>,
    /// Pods to delete so the preemptor fits on the nominated node.
    pub victims: Vec<Arc<PodInfo>>,
    /// Lower-priority pods nominated to the same node whose nomination is cleared.
    pub nominations_to_clear: Vec<Arc<PodInfo>>,
}

/// A node's score.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeScore {
    /// The node's position in the list being scored. Upstream carries the
    /// name; no plugin here needs it, and reaching it cost a cache miss per
    /// node per cycle.
    pub index: usize,
    pub score: i64,
}

/// Per-node totals of weighted scores. Upstream also keeps each plugin's
/// score per node, for extenders and logs; nothing here reads them, and a
/// list per feasible node per cycle was a fifth of scoring's cost.
#[derive(Clone, Debug)]
pub struct NodePluginScores {
    /// The node's position in the list that was scored.
    pub index: usize,
    pub total: i64,
}

/// Why each rejected node was rejected; nodes not listed get
/// `absent_status` (upstream's `NodeToStatus`).
#[derive(Clone, Debug)]
pub struct NodeToStatus {
    pub statuses: HashMap<String, Status>,
    pub absent_status: Status,
}

impl Default for NodeToStatus {
    fn default() -> Self {
        NodeToStatus { statuses: HashMap::new(), absent_status: Status::unresolvable("") }
    }
}

impl NodeToStatus {
    pub fn get(&self, node: &str) -> &Status {
        self.statuses.get(node).unwrap_or(&self.absent_status)
    }
    pub fn set(&mut self, node: &str, status: Status) {
        self.statuses.insert(node.to_string(), status);
    }
    pub fn len(&self) -> usize {
        self.statuses.len()
    }
    pub fn is_empty(&self) -> bool {
        self.statuses.is_empty()
    }
}

/// Why a pod did not fit (upstream's `framework.Diagnosis`).
#[derive(Clone, Debug, Default)]
pub struct Diagnosis {
    pub node_to_status: NodeToStatus,
    pub unschedulable_plugins: BTreeSet<&'static str>,
    pub pre_filter_msg: String,
    pub post_filter_msg: String,
}

/// No node fits (upstream's `framework.FitError`); renders upstream's
/// message, e.g. `0/3 nodes are available: 3 Insufficient cpu.`.
#[derive(Clone, Debug)]
pub struct FitError {
    pub num_all_nodes: usize,
    pub diagnosis: Diagnosis,
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut msg = format!("0/{} nodes are available:", self.num_all_nodes);
        let d = &self.diagnosis;
        if !d.pre_filter_msg.is_empty() {
            msg.push_str(&format!(" {}.", d.pre_filter_msg));
        } else {
            let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
            for status in d.node_to_status.statuses.values() {
                for r in &status.reasons {
                    *reasons.entry(r.clone()).or_insert(0) += 1;
                }
            }
            let present = d.node_to_status.len();
            if present < self.num_all_nodes {
                for r in &d.node_to_status.absent_status.reasons {
                    if !r.is_empty() {
                        *reasons.entry(r.clone()).or_insert(0) += self.num_all_nodes - present;
                    }
                }
            }
            // Upstream sorts the "count reason" strings themselves.
            let mut histogram: Vec<String> = reasons.into_iter().map(|(r, n)| format!("{n} {r}")).collect();
            histogram.sort();
            if !histogram.is_empty() {
                msg.push_str(&format!(" {}.", histogram.join(", ")));
            }
        }
        if !d.post_filter_msg.is_empty() {
            // Upstream appends it as is: it ends with its own period.
            msg.push(' ');
            msg.push_str(&d.post_filter_msg);
        }
        f.write_str(&msg)
    }
}

/// A pod in the scheduling queue (upstream's `QueuedPodInfo`).
#[derive(Clone, Debug)]
pub struct QueuedPodInfo {
    pub pod_info: Arc<PodInfo>,
    /// When the pod was (re)added to the queue.
    pub timestamp: Instant,
    /// Scheduling attempts so far.
    pub attempts: u32,
    pub initial_attempt_timestamp: Option<Instant>,
    /// Plugins that rejected the pod in its last attempt.
    pub unschedulable_plugins: BTreeSet<&'static str>,
    /// Held back by scheduling gates.
    pub gated: bool,
    /// Insertion sequence, the last tiebreak of the queue order.
    pub seq: u64,
}

impl QueuedPodInfo {
    pub fn new(pod_info: Arc<PodInfo>, now: Instant) -> QueuedPodInfo {
        QueuedPodInfo { pod_info, timestamp: now, attempts: 0, initial_attempt_timestamp: None, unschedulable_plugins: BTreeSet::new(), gated: false, seq: 0 }
    }
    pub fn pod(&self) -> &Pod {
        &self.pod_info.pod
    }
}

/// The kinds of cluster changes that can make unschedulable pods
/// schedulable; plugins register the ones they care about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventResource {
    Node,
    AssignedPod,
    UnscheduledPod,
    PersistentVolumeClaim,
    PersistentVolume,
    /// Matches every plugin (timeouts, forced moves).
    WildCard,
}

pub mod action {
    pub const ADD: u32 = 1;
    pub const DELETE: u32 = 1 << 1;
    pub const UPDATE_NODE_ALLOCATABLE: u32 = 1 << 2;
    pub const UPDATE_NODE_LABEL: u32 = 1 << 3;
    pub const UPDATE_NODE_TAINT: u32 = 1 << 4;
    pub const UPDATE_NODE_CONDITION: u32 = 1 << 5;
    pub const UPDATE_NODE_UNSCHEDULABLE: u32 = 1 << 6;
    pub const UPDATE_POD_LABEL: u32 = 1 << 7;
    pub const UPDATE_POD_SCALE_DOWN: u32 = 1 << 8;
    pub const UPDATE_POD_TOLERATIONS: u32 = 1 << 9;
    pub const UPDATE: u32 = UPDATE_NODE_ALLOCATABLE | UPDATE_NODE_LABEL | UPDATE_NODE_TAINT | UPDATE_NODE_CONDITION | UPDATE_NODE_UNSCHEDULABLE | UPDATE_POD_LABEL | UPDATE_POD_SCALE_DOWN | UPDATE_POD_TOLERATIONS;
    pub const ALL: u32 = ADD | DELETE | UPDATE;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClusterEvent {
    pub resource: EventResource,
    pub action: u32,
    pub label: &'static str,
}

impl ClusterEvent {
    pub const fn new(resource: EventResource, action: u32, label: &'static str) -> ClusterEvent {
        ClusterEvent { resource, action, label }
    }
    /// Whether a registered interest covers this event.
    pub fn matches(&self, registered: &ClusterEvent) -> bool {
        self.resource == EventResource::WildCard || (self.resource == registered.resource && self.action & registered.action != 0)
    }
}

pub const EVENT_NODE_ADD: ClusterEvent = ClusterEvent::new(EventResource::Node, action::ADD, "NodeAdd");
pub const EVENT_ASSIGNED_POD_ADD: ClusterEvent = ClusterEvent::new(EventResource::AssignedPod, action::ADD, "AssignedPodAdd");
pub const EVENT_ASSIGNED_POD_DELETE: ClusterEvent = ClusterEvent::new(EventResource::AssignedPod, action::DELETE, "AssignedPodDelete");
pub const EVENT_UNSCHEDULABLE_TIMEOUT: ClusterEvent = ClusterEvent::new(EventResource::WildCard, action::ALL, "UnschedulableTimeout");
pub const EVENT_FORCE_ACTIVATE: ClusterEvent = ClusterEvent::new(EventResource::WildCard, action::ALL, "ForceActivate");

// ---------------------------------------------------------------------------
// Plugin interfaces.

pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Cluster events after which a pod this plugin rejected may fit.
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        Vec::new()
    }
}

/// Orders the active queue.
pub trait QueueSortPlugin: Plugin {
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool;
}

/// Computes per-cycle state; may reject the pod outright or narrow the nodes.
pub trait PreFilterPlugin: Plugin {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) -> (Option<PreFilterResult>, Status);
    /// Keeps the PreFilter state right when `pod_to_add` is assumed on
    /// `node` (nominated pods, preemption's reprieves).
    fn add_pod(&self, _state: &mut CycleState, _pod: &PodInfo, _pod_to_add: &PodInfo, _node: &NodeInfo) -> Status {
        Status::success()
    }
    /// Keeps the PreFilter state right when `pod_to_remove` leaves `node`
    /// (preemption's victims).
    fn remove_pod(&self, _state: &mut CycleState, _pod: &PodInfo, _pod_to_remove: &PodInfo, _node: &NodeInfo) -> Status {
        Status::success()
    }
}

/// Says whether the pod can run on one node.
pub trait FilterPlugin: Plugin {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// What PostFilter gets to look at.
pub struct PostFilterContext<'a> {
    pub framework: &'a Framework,
    pub snapshot: &'a Snapshot,
    pub nominated: &'a NominatedPods,
}

/// Runs when no node fits (preemption).
pub trait PostFilterPlugin: Plugin {
    fn post_filter(&self, ctx: &PostFilterContext<'_>, state: &CycleState, pod: &PodInfo, statuses: &NodeToStatus) -> (Option<PostFilterResult>, Status);
}

/// Computes state for scoring from the feasible nodes.
pub trait PreScorePlugin: Plugin {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, nodes: &[Arc<NodeInfo>], snapshot: &Snapshot) -> Status;
}

/// Ranks feasible nodes.
pub trait ScorePlugin: Plugin {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status>;
    /// Maps raw scores into [0, MAX_NODE_SCORE]; the default leaves them.
    fn normalize_score(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [NodeScore]) -> Status {
        Status::success()
    }
}

/// Binds a pod to a node through the API.
#[async_trait::async_trait]
pub trait BindPlugin: Plugin {
    async fn bind(&self, pod: &Pod, node_name: &str) -> Status;
}

/// Pods nominated to nodes (by preemption), per node.
#[derive(Clone, Debug, Default)]
pub struct NominatedPods {
    pub by_node: HashMap<String, Vec<Arc<PodInfo>>>,
}

impl NominatedPods {
    pub fn for_node(&self, node: &str) -> &[Arc<PodInfo>] {
        self.by_node.get(node).map(|v| v.as_slice()).unwrap_or(&[])
    }
}

/// Upstream's `DefaultNormalizeScore`: scales to [0, max] by the highest
/// score, optionally reversed.
pub fn default_normalize_score(max_priority: i64, reverse: bool, scores: &mut [NodeScore]) {
    let max_count = scores.iter().map(|s| s.score).max().unwrap_or(0).max(0);
    if max_count == 0 {
        if reverse {
            for s in scores.iter_mut() {
                s.score = max_priority;
            }
        }
        return;
    }
    for s in scores.iter_mut() {
        let mut score = max_priority * s.score / max_count;
        if reverse {
            score = max_priority - score;
        }
        s.score = score;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_error_message_counts_and_sorts_reasons() {
        let mut d = Diagnosis::default();
        d.node_to_status.set("a", Status::with_reasons(Code::Unschedulable, vec!["Insufficient cpu".into(), "Insufficient memory".into()]));
        d.node_to_status.set("b", Status::unschedulable("Insufficient cpu"));
        d.node_to_status.set("c", Status::unresolvable("node(s) had untolerated taint {dedicated: gpu}"));
        let e = FitError { num_all_nodes: 3, diagnosis: d };
        assert_eq!(
            e.to_string(),
            "0/3 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu."
        );
    }

    #[test]
    fn fit_error_message_with_prefilter_and_postfilter() {
        let mut d = Diagnosis {
            pre_filter_msg: "node(s) didn't satisfy plugin NodeAffinity".into(),
            post_filter_msg: "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.".into(),
            ..Default::default()
        };
        d.node_to_status.absent_status = Status::unresolvable("node(s) didn't satisfy plugin NodeAffinity");
        let e = FitError { num_all_nodes: 2, diagnosis: d };
        assert_eq!(
            e.to_string(),
            "0/2 nodes are available: node(s) didn't satisfy plugin NodeAffinity. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn fit_error_counts_absent_nodes() {
        let mut d = Diagnosis::default();
        d.node_to_status.set("a", Status::unschedulable("Insufficient cpu"));
        d.node_to_status.absent_status = Status::unresolvable("Preemption is not helpful for scheduling");
        let e = FitError { num_all_nodes: 3, diagnosis: d };
        assert_eq!(e.to_string(), "0/3 nodes are available: 1 Insufficient cpu, 2 Preemption is not helpful for scheduling.");
    }

    #[test]
    fn normalize() {
        let mut s = vec![NodeScore { index: 0, score: 2 }, NodeScore { index: 1, score: 4 }, NodeScore { index: 2, score: 0 }];
        default_normalize_score(100, false, &mut s);
        assert_eq!(s.iter().map(|x| x.score).collect::<Vec<_>>(), vec![50, 100, 0]);
        default_normalize_score(100, true, &mut s);
        assert_eq!(s.iter().map(|x| x.score).collect::<Vec<_>>(), vec![50, 0, 100]);
    }
}
