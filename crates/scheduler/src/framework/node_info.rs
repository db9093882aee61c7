//! `PodInfo` (a pod with its parsed affinity terms and requests) and
//! `NodeInfo` (a node, the pods on it, what they request, the host ports
//! they use), as upstream's `framework/types.go`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint, WeightedPodAffinityTerm};

use crate::helpers::{self, Labels, Selector};
use crate::resources::{self, Resource};

/// A parsed pod (anti-)affinity term.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    pub namespaces: BTreeSet<String>,
    pub selector: Selector,
    pub topology_key: String,
    pub namespace_selector: Selector,
}

impl AffinityTerm {
    fn new(pod: &Pod, term: &PodAffinityTerm) -> Result<AffinityTerm, String> {
        let selector = Selector::from_label_selector(term.label_selector.as_ref())?;
        let namespace_selector = Selector::from_label_selector(term.namespace_selector.as_ref())?;
        let mut namespaces: BTreeSet<String> = BTreeSet::new();
        let listed = term.namespaces.as_deref().unwrap_or(&[]);
        if listed.is_empty() && term.namespace_selector.is_none() {
            namespaces.insert(helpers::pod_namespace(pod).to_string());
        } else {
            namespaces.extend(listed.iter().cloned());
        }
        Ok(AffinityTerm { namespaces, selector, topology_key: term.topology_key.clone(), namespace_selector })
    }

    /// Whether `pod` (in a namespace with labels `ns_labels`) matches the term.
    pub fn matches(&self, pod: &Pod, ns_labels: Option<&Labels>) -> bool {
        let ns = helpers::pod_namespace(pod);
        let empty = Labels::new();
        if self.namespaces.contains(ns) || self.namespace_selector.matches(ns_labels.unwrap_or(&empty)) {
            return self.selector.matches(helpers::pod_labels(pod));
        }
        false
    }
}

#[derive(Clone, Debug)]
pub struct WeightedAffinityTerm {
    pub term: AffinityTerm,
    pub weight: i32,
}

/// A host port a pod uses: (ip, protocol, port), sanitized.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

pub const DEFAULT_BIND_ALL_HOST_IP: &str = "0.0.0.0";

impl HostPort {
    pub fn new(ip: Option<&str>, protocol: Option<&str>, port: i32) -> HostPort {
        let ip = ip.filter(|s| !s.is_empty()).unwrap_or(DEFAULT_BIND_ALL_HOST_IP).to_string();
        let protocol = protocol.filter(|s| !s.is_empty()).unwrap_or("TCP").to_string();
        HostPort { ip, protocol, port }
    }
}

/// The host ports a pod asks for: its containers' and its restartable init
/// containers' ports with a hostPort.
pub fn pod_host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else { return Vec::new() };
    let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| p.host_port.filter(|hp| *hp > 0).map(|hp| HostPort::new(p.host_ip.as_deref(), p.protocol.as_deref(), hp)))
        .collect()
}

/// Upstream's `HostPortInfo`: ip → set of (protocol, port).
#[derive(Clone, Debug, Default)]
pub struct HostPortInfo {
    map: HashMap<String, HashMap<(String, i32), usize>>,
}

impl HostPortInfo {
    pub fn add(&mut self, hp: &HostPort) {
        *self.map.entry(hp.ip.clone()).or_default().entry((hp.protocol.clone(), hp.port)).or_insert(0) += 1;
    }

    pub fn remove(&mut self, hp: &HostPort) {
        if let Some(m) = self.map.get_mut(&hp.ip) {
            let key = (hp.protocol.clone(), hp.port);
            if let Some(n) = m.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&key);
                }
            }
            if m.is_empty() {
                self.map.remove(&hp.ip);
            }
        }
    }

    /// Upstream's `CheckConflict`: 0.0.0.0 conflicts with the same
    /// (protocol, port) on any IP.
    pub fn check_conflict(&self, hp: &HostPort) -> bool {
        if hp.port <= 0 {
            return false;
        }
        let key = (hp.protocol.clone(), hp.port);
        if hp.ip == DEFAULT_BIND_ALL_HOST_IP {
            return self.map.values().any(|m| m.contains_key(&key));
        }
        [DEFAULT_BIND_ALL_HOST_IP, hp.ip.as_str()].iter().any(|ip| self.map.get(*ip).map(|m| m.contains_key(&key)).unwrap_or(false))
    }

    pub fn len(&self) -> usize {
        self.map.values().map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A pod with what the scheduler derives from it, computed once.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub uid: String,
    pub priority: i32,
    pub required_affinity_terms: Vec<AffinityTerm>,
    pub required_anti_affinity_terms: Vec<AffinityTerm>,
    pub preferred_affinity_terms: Vec<WeightedAffinityTerm>,
    pub preferred_anti_affinity_terms: Vec<WeightedAffinityTerm>,
    /// Errors parsing the affinity terms (upstream's `NewPodInfo` error).
    pub parse_error: Option<String>,
    /// `PodRequests` (overhead included).
    pub requests: Resource,
    /// `PodRequests` with the scoring defaults for missing cpu/memory.
    pub non_zero_requests: Resource,
    pub host_ports: Vec<HostPort>,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let mut errors = Vec::new();
        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let required = |terms: Option<&Vec<PodAffinityTerm>>, errors: &mut Vec<String>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .filter_map(|t| AffinityTerm::new(&pod, t).map_err(|e| errors.push(e)).ok())
                .collect()
        };
        let preferred = |terms: Option<&Vec<WeightedPodAffinityTerm>>, errors: &mut Vec<String>| -> Vec<WeightedAffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .filter(|w| w.weight != 0)
                .filter_map(|w| AffinityTerm::new(&pod, &w.pod_affinity_term).map_err(|e| errors.push(e)).ok().map(|term| WeightedAffinityTerm { term, weight: w.weight }))
                .collect()
        };
        let required_affinity_terms = required(pa.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()), &mut errors);
        let required_anti_affinity_terms = required(paa.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()), &mut errors);
        let preferred_affinity_terms = preferred(pa.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()), &mut errors);
        let preferred_anti_affinity_terms = preferred(paa.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()), &mut errors);
        PodInfo {
            uid: helpers::pod_uid(&pod),
            priority: helpers::pod_priority(&pod),
            required_affinity_terms,
            required_anti_affinity_terms,
            preferred_affinity_terms,
            preferred_anti_affinity_terms,
            parse_error: if errors.is_empty() { None } else { Some(errors.join("; ")) },
            requests: resources::pod_requests(&pod, false),
            non_zero_requests: resources::pod_requests(&pod, true),
            host_ports: pod_host_ports(&pod),
            pod,
        }
    }

    pub fn from_pod(pod: Pod) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(Arc::new(pod)))
    }

    pub fn has_affinity(&self) -> bool {
        let affinity = self.pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        affinity.map(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some()).unwrap_or(false)
    }

    pub fn key(&self) -> String {
        helpers::pod_key(&self.pod)
    }
}

/// A node and everything scheduled on it.
///
/// `repr(C)` keeps the fields in this order: the ones every filter reads
/// for every node in every cycle come first, so that they share one or two
/// cache lines. A cycle visits hundreds of nodes that are cold in the cache
/// (the start rotates), and at 5,000 nodes those misses were most of the
/// filters' cost.
#[derive(Clone, Debug, Default)]
#[repr(C)]
pub struct NodeInfo {
    /// `spec.unschedulable` of the node, kept here because NodeUnschedulable
    /// asks it of every node in every cycle: reading it from the Node was
    /// that filter's whole cost (a cache miss per node).
    unschedulable: bool,
    /// `spec.taints` of the node, for the same reason: TaintToleration
    /// reads them for every node in every cycle, and following the Node to
    /// its spec was most of that filter's cost.
    taints: Box<[Taint]>,
    pub allocatable: Resource,
    pub requested: Resource,
    pub pods: Vec<Arc<PodInfo>>,
    pub non_zero_requested: Resource,
    node: Option<Arc<Node>>,
    name: Arc<str>,
    pub pods_with_affinity: Vec<Arc<PodInfo>>,
    pub pods_with_required_anti_affinity: Vec<Arc<PodInfo>>,
    pub used_ports: HostPortInfo,
}

impl NodeInfo {
    /// Asks the CPU to fetch the fields the filters read first (the front
    /// of the struct, through `pods`): called for a node a few places ahead
    /// in a cycle's walk, its cache misses overlap with the filtering of
    /// the nodes before it instead of stalling each in turn. (Plain loads
    /// do not do this: a missing load holds up everything after it.)
    #[inline]
    pub fn touch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let start = (self as *const NodeInfo).cast::<i8>();
            let end = std::mem::offset_of!(NodeInfo, pods) + std::mem::size_of::<Vec<Arc<PodInfo>>>();
            let mut offset = 0;
            while offset < end {
                // SAFETY: a prefetch is a hint. It never faults, whatever
                // the address, and changes nothing the program can see; the
                // addresses are inside `self` anyway.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
                offset += 64;
            }
            // SAFETY: as above; the last hot byte, in case `self` does not
            // start on a cache line.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(end - 1)) };
        }
    }

    pub fn new(node: Arc<Node>) -> NodeInfo {
        let mut ni = NodeInfo::default();
        ni.set_node(node);
        ni
    }

    /// A NodeInfo for pods whose node is not (yet) known.
    pub fn placeholder(name: &str) -> NodeInfo {
        NodeInfo { name: name.into(), ..Default::default() }
    }

    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if *self.name != *name {
            self.name = name.into();
        }
        self.allocatable = resources::node_allocatable(&node);
        self.unschedulable = helpers::node_unschedulable(&node);
        self.taints = helpers::node_taints(&node).into();
        self.node = Some(node);
    }

    /// The node's `spec.unschedulable` (cordoned).
    pub fn unschedulable(&self) -> bool {
        self.unschedulable
    }

    /// The node's `spec.taints`.
    pub fn taints(&self) -> &[Taint] {
        &self.taints
    }

    pub fn remove_node(&mut self) {
        self.node = None;
        self.unschedulable = false;
        self.taints = Box::default();
    }

    pub fn node_opt(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }

    /// The node. Snapshots only hold NodeInfos with a node.
    pub fn node(&self) -> &Node {
        self.node.as_deref().expect("NodeInfo without a node")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn labels(&self) -> &Labels {
        self.node.as_deref().map(helpers::node_labels).unwrap_or_else(|| helpers::labels_of(&None))
    }

    pub fn add_pod(&mut self, pi: Arc<PodInfo>) {
        self.requested.add(&pi.requests);
        self.non_zero_requested.add(&pi.non_zero_requests);
        for hp in &pi.host_ports {
            self.used_ports.add(hp);
        }
        if pi.has_affinity() {
            self.pods_with_affinity.push(pi.clone());
        }
        if !pi.required_anti_affinity_terms.is_empty() {
            self.pods_with_required_anti_affinity.push(pi.clone());
        }
        self.pods.push(pi);
    }

    /// Removes the pod with this UID; false if it is not here.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(idx) = self.pods.iter().position(|p| p.uid == uid) else { return false };
        let pi = self.pods.swap_remove(idx);
        self.pods_with_affinity.retain(|p| p.uid != uid);
        self.pods_with_required_anti_affinity.retain(|p| p.uid != uid);
        self.requested.sub(&pi.requests);
        self.non_zero_requested.sub(&pi.non_zero_requests);
        for hp in &pi.host_ports {
            self.used_ports.remove(hp);
        }
        true
    }

    pub fn has_pod(&self, uid: &str) -> bool {
        self.pods.iter().any(|p| p.uid == uid)
    }

    /// UIDs of the pods on the node.
    pub fn pod_uids(&self) -> HashSet<&str> {
        self.pods.iter().map(|p| p.uid.as_str()).collect()
    }
}
