//! NodeResourcesFit: the pod's requests (cpu, memory, ephemeral-storage,
//! extended resources; init containers by the max rule; overhead) plus the
//! pod count must fit the node's allocatable minus what its pods already
//! request (Filter). Scores with upstream's default LeastAllocated strategy.

use std::sync::Arc;

use crate::framework::{action, ClusterEvent, CycleState, EventResource, FilterPlugin, NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult, PreScorePlugin, ScorePlugin, Snapshot, Status, MAX_NODE_SCORE};
use crate::resources::{self, Resource};

pub const NAME: &str = "NodeResourcesFit";
const PRE_FILTER_KEY: &str = "PreFilterNodeResourcesFit";
const PRE_SCORE_KEY: &str = "PreScoreNodeResourcesFit";

/// A resource with its scoring weight.
#[derive(Clone, Debug)]
pub struct ResourceSpec {
    pub name: String,
    pub weight: i64,
}

/// Upstream's default scoring resources: cpu and memory, weight 1 each.
pub fn default_resources() -> Vec<ResourceSpec> {
    vec![ResourceSpec { name: resources::CPU.into(), weight: 1 }, ResourceSpec { name: resources::MEMORY.into(), weight: 1 }]
}

#[derive(Debug)]
pub struct NodeResourcesFit {
    pub resources: Vec<ResourceSpec>,
}

impl Default for NodeResourcesFit {
    fn default() -> Self {
        NodeResourcesFit { resources: default_resources() }
    }
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(EventResource::AssignedPod, action::DELETE | action::UPDATE_POD_SCALE_DOWN, "AssignedPod"),
            ClusterEvent::new(EventResource::Node, action::ADD | action::UPDATE_NODE_ALLOCATABLE, "Node"),
        ]
    }
}

#[derive(Clone)]
struct PreFilterState {
    requests: Resource,
}

/// One resource the pod lacks on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsufficientResource {
    pub resource_name: String,
    pub reason: String,
    pub requested: i64,
    pub used: i64,
    pub capacity: i64,
}

/// Upstream's `fitsRequest`.
pub fn fits_request(req: &Resource, node: &NodeInfo) -> Vec<InsufficientResource> {
    let mut out = Vec::new();
    let allowed = node.allocatable.allowed_pod_number;
    if node.pods.len() as i64 + 1 > allowed {
        out.push(InsufficientResource { resource_name: "pods".into(), reason: "Too many pods".into(), requested: 1, used: node.pods.len() as i64, capacity: allowed });
    }
    if req.is_zero_request() {
        return out;
    }
    let alloc = &node.allocatable;
    let used = &node.requested;
    let mut check = |name: &str, r: i64, a: i64, u: i64| {
        if r > 0 && r > a - u {
            out.push(InsufficientResource { resource_name: name.into(), reason: format!("Insufficient {name}"), requested: r, used: u, capacity: a });
        }
    };
    check(resources::CPU, req.milli_cpu, alloc.milli_cpu, used.milli_cpu);
    check(resources::MEMORY, req.memory, alloc.memory, used.memory);
    check(resources::EPHEMERAL_STORAGE, req.ephemeral_storage, alloc.ephemeral_storage, used.ephemeral_storage);
    for (name, q) in &req.scalar {
        if *q == 0 {
            continue;
        }
        let a = alloc.scalar.get(name).copied().unwrap_or(0);
        let u = used.scalar.get(name).copied().unwrap_or(0);
        if *q > a - u {
            out.push(InsufficientResource { resource_name: name.clone(), reason: format!("Insufficient {name}"), requested: *q, used: u, capacity: a });
        }
    }
    out
}

impl PreFilterPlugin for NodeResourcesFit {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, _snapshot: &Snapshot) -> (Option<PreFilterResult>, Status) {
        state.write(PRE_FILTER_KEY, PreFilterState { requests: pod.requests.clone() });
        (None, Status::success())
    }
}

impl FilterPlugin for NodeResourcesFit {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let req = state.read::<PreFilterState>(PRE_FILTER_KEY).map(|s| &s.requests).unwrap_or(&pod.requests);
        let insufficient = fits_request(req, node);
        if insufficient.is_empty() {
            Status::success()
        } else {
            Status::with_reasons(crate::framework::Code::Unschedulable, insufficient.into_iter().map(|i| i.reason).collect())
        }
    }
}

// ---------------------------------------------------------------------------
// Scoring (shared with NodeResourcesBalancedAllocation).

/// The pod's request of each resource; with `use_requested` false, cpu and
/// memory count the scoring defaults for containers without requests.
pub fn pod_request_list(pod: &PodInfo, specs: &[ResourceSpec], use_requested: bool) -> Vec<i64> {
    let r = if use_requested { &pod.requests } else { &pod.non_zero_requests };
    specs.iter().map(|s| r.get(&s.name)).collect()
}

/// Upstream's `calculateResourceAllocatableRequest`: (allocatable, requested incl. the pod).
fn allocatable_and_requested(node: &NodeInfo, name: &str, pod_request: i64, use_requested: bool) -> (i64, i64) {
    let requested = if use_requested { &node.requested } else { &node.non_zero_requested };
    if pod_request == 0 && resources::is_scalar_resource_name(name) {
        return (0, 0);
    }
    match name {
        resources::CPU => (node.allocatable.milli_cpu, requested.milli_cpu + pod_request),
        resources::MEMORY => (node.allocatable.memory, requested.memory + pod_request),
        resources::EPHEMERAL_STORAGE => (node.allocatable.ephemeral_storage, node.requested.ephemeral_storage + pod_request),
        other => match node.allocatable.scalar.get(other) {
            Some(a) => (*a, node.requested.scalar.get(other).copied().unwrap_or(0) + pod_request),
            None => (0, 0),
        },
    }
}

/// Score inputs for up to this many resources stay on the stack (the
/// default profile scores two, cpu and memory).
const INLINE_RESOURCES: usize = 8;

/// Calls `f` with the requested and allocatable vectors of a node (zeros
/// where allocatable is 0). Run for every scored node of every cycle, so
/// without allocating in the usual case.
pub fn with_resource_vectors<R>(
    node: &NodeInfo,
    specs: &[ResourceSpec],
    pod_requests: &[i64],
    use_requested: bool,
    f: impl FnOnce(&[i64], &[i64]) -> R,
) -> R {
    let fill = |requested: &mut [i64], allocatable: &mut [i64]| {
        for (i, s) in specs.iter().enumerate() {
            let (a, r) = allocatable_and_requested(node, &s.name, pod_requests[i], use_requested);
            if a == 0 {
                continue;
            }
            allocatable[i] = a;
            requested[i] = r;
        }
    };
    let n = specs.len();
    if n <= INLINE_RESOURCES {
        let (mut requested, mut allocatable) = ([0; INLINE_RESOURCES], [0; INLINE_RESOURCES]);
        fill(&mut requested[..n], &mut allocatable[..n]);
        f(&requested[..n], &allocatable[..n])
    } else {
        let (mut requested, mut allocatable) = (vec![0; n], vec![0; n]);
        fill(&mut requested, &mut allocatable);
        f(&requested, &allocatable)
    }
}

fn least_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// LeastAllocated: the weighted mean of free fractions, 0..100.
pub fn least_allocated_score(specs: &[ResourceSpec], requested: &[i64], allocatable: &[i64]) -> i64 {
    let mut node_score = 0;
    let mut weight_sum = 0;
    for i in 0..requested.len() {
        if allocatable[i] == 0 {
            continue;
        }
        node_score += least_requested_score(requested[i], allocatable[i]) * specs[i].weight;
        weight_sum += specs[i].weight;
    }
    if weight_sum == 0 { 0 } else { node_score / weight_sum }
}

#[derive(Clone)]
struct PreScoreState {
    pod_requests: Vec<i64>,
}

impl PreScorePlugin for NodeResourcesFit {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, _nodes: &[Arc<NodeInfo>], _snapshot: &Snapshot) -> Status {
        state.write(PRE_SCORE_KEY, PreScoreState { pod_requests: pod_request_list(pod, &self.resources, false) });
        Status::success()
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let computed;
        let reqs = match state.read::<PreScoreState>(PRE_SCORE_KEY) {
            Some(s) => &s.pod_requests,
            None => {
                computed = pod_request_list(pod, &self.resources, false);
                &computed
            }
        };
        Ok(with_resource_vectors(node, &self.resources, reqs, false, |requested, allocatable| {
            least_allocated_score(&self.resources, requested, allocatable)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::{NodeBuilder, PodBuilder};

    fn filter(pod: &PodInfo, node: &NodeInfo) -> Status {
        let mut state = CycleState::new();
        let (_, s) = NodeResourcesFit::default().pre_filter(&mut state, pod, &Snapshot::default());
        assert!(s.is_success());
        NodeResourcesFit::default().filter(&state, pod, node)
    }

    fn node_2cpu(pods: &[std::sync::Arc<PodInfo>]) -> NodeInfo {
        NodeBuilder::new("n").allocatable(&[("cpu", "2"), ("memory", "4Gi"), ("pods", "3"), ("ephemeral-storage", "10Gi"), ("example.com/gpu", "1")]).with_pods(pods)
    }

    #[test]
    fn cpu_and_memory() {
        let used = PodBuilder::new("u").node("n").container_req(&[("cpu", "1500m"), ("memory", "1Gi")]).info();
        let node = node_2cpu(&[used]);
        assert!(filter(&PodBuilder::new("p").container_req(&[("cpu", "500m")]).info(), &node).is_success());
        let st = filter(&PodBuilder::new("p").container_req(&[("cpu", "600m")]).info(), &node);
        assert_eq!(st.code, Code::Unschedulable);
        assert_eq!(st.reasons, vec!["Insufficient cpu"]);
        let st = filter(&PodBuilder::new("p").container_req(&[("cpu", "1"), ("memory", "4Gi")]).info(), &node);
        assert_eq!(st.reasons, vec!["Insufficient cpu", "Insufficient memory"]);
    }

    #[test]
    fn pods_count_ephemeral_storage_and_extended_resources() {
        let a = PodBuilder::new("a").node("n").container().info();
        let b = PodBuilder::new("b").node("n").container().info();
        let c = PodBuilder::new("c").node("n").container().info();
        let full = node_2cpu(&[a, b, c]);
        let st = filter(&PodBuilder::new("p").container().info(), &full);
        assert_eq!(st.reasons, vec!["Too many pods"]);

        let node = node_2cpu(&[]);
        let st = filter(&PodBuilder::new("p").container_req(&[("ephemeral-storage", "11Gi")]).info(), &node);
        assert_eq!(st.reasons, vec!["Insufficient ephemeral-storage"]);
        assert!(filter(&PodBuilder::new("p").container_req(&[("example.com/gpu", "1")]).info(), &node).is_success());
        let st = filter(&PodBuilder::new("p").container_req(&[("example.com/gpu", "2")]).info(), &node);
        assert_eq!(st.reasons, vec!["Insufficient example.com/gpu"]);
        let st = filter(&PodBuilder::new("p").container_req(&[("other.io/fpga", "1")]).info(), &node);
        assert_eq!(st.reasons, vec!["Insufficient other.io/fpga"]);
    }

    #[test]
    fn init_containers_max_rule_and_overhead() {
        let node = node_2cpu(&[]);
        // Init 2 cpu runs alone: max(500m, 2) = 2 fits exactly.
        let pod = PodBuilder::new("p").container_req(&[("cpu", "500m")]).init_container_req(&[("cpu", "2")], false).info();
        assert!(filter(&pod, &node).is_success());
        // With 100m overhead it no longer fits.
        let pod = PodBuilder::new("p").container_req(&[("cpu", "500m")]).init_container_req(&[("cpu", "2")], false).overhead(&[("cpu", "100m")]).info();
        assert_eq!(filter(&pod, &node).reasons, vec!["Insufficient cpu"]);
        // Two app containers sum: 1.5 + 1 > 2.
        let pod = PodBuilder::new("p").container_req(&[("cpu", "1500m")]).container_req(&[("cpu", "1")]).info();
        assert_eq!(filter(&pod, &node).reasons, vec!["Insufficient cpu"]);
    }

    #[test]
    fn least_allocated_prefers_emptier_nodes() {
        let plugin = NodeResourcesFit::default();
        let busy = PodBuilder::new("b").node("busy").container_req(&[("cpu", "3"), ("memory", "4Gi")]).info();
        let nodes = [
            std::sync::Arc::new(NodeBuilder::new("empty").with_pods(&[])),
            std::sync::Arc::new(NodeBuilder::new("busy").with_pods(&[busy])),
        ];
        let pod = PodBuilder::new("p").container_req(&[("cpu", "1"), ("memory", "2Gi")]).info();
        let mut state = CycleState::new();
        plugin.pre_score(&mut state, &pod, &nodes, &Snapshot::default());
        let empty = plugin.score(&state, &pod, &nodes[0]).unwrap();
        let busy = plugin.score(&state, &pod, &nodes[1]).unwrap();
        // empty: cpu (4-1)/4 = 75, mem (8-2)/8 = 75 → 75; busy: cpu 0, mem (8-6)/8 = 25 → 12.
        assert_eq!((empty, busy), (75, 12));
    }

    #[test]
    fn least_allocated_counts_default_requests_for_best_effort_pods() {
        let plugin = NodeResourcesFit::default();
        let node = std::sync::Arc::new(NodeBuilder::new("n").allocatable(&[("cpu", "1"), ("memory", "1000Mi"), ("pods", "10")]).info());
        let pod = PodBuilder::new("p").container().info();
        let state = CycleState::new();
        // cpu (1000-100)/1000 = 90; memory (1000-200)/1000 = 80 → 85.
        assert_eq!(plugin.score(&state, &pod, &node).unwrap(), 85);
    }
}
