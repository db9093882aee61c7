//! InterPodAffinity: required pod affinity and anti-affinity of the
//! incoming pod, and the required anti-affinity of pods already running
//! (Filter); preferred terms of both sides score (Score).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::framework::node_info::{AffinityTerm, WeightedAffinityTerm};
use crate::framework::{
    action, ClusterEvent, CycleState, EventResource, FilterPlugin, NodeInfo, NodeScore, Plugin, PodInfo, PreFilterPlugin, PreFilterResult, PreScorePlugin,
    ScorePlugin, Snapshot, Status, MAX_NODE_SCORE,
};
use crate::helpers::{self, Labels, Selector};

pub const NAME: &str = "InterPodAffinity";
pub const ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_REASON_AFFINITY_RULES_NOT_MATCH: &str = "node(s) didn't match pod affinity rules";
pub const ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH: &str = "node(s) didn't match pod anti-affinity rules";
const PRE_FILTER_KEY: &str = "PreFilterInterPodAffinity";
const PRE_SCORE_KEY: &str = "PreScoreInterPodAffinity";

/// Upstream's default `hardPodAffinityWeight`.
pub const DEFAULT_HARD_POD_AFFINITY_WEIGHT: i32 = 1;

#[derive(Debug)]
pub struct InterPodAffinity {
    pub hard_pod_affinity_weight: i32,
}

impl Default for InterPodAffinity {
    fn default() -> Self {
        InterPodAffinity { hard_pod_affinity_weight: DEFAULT_HARD_POD_AFFINITY_WEIGHT }
    }
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(EventResource::AssignedPod, action::ALL, "AssignedPod"),
            ClusterEvent::new(EventResource::Node, action::ADD | action::UPDATE_NODE_LABEL, "Node"),
        ]
    }
}

type TopologyPair = (String, String);
type TopologyCounts = HashMap<TopologyPair, i64>;

fn update_count(m: &mut TopologyCounts, node_labels: &Labels, tk: &str, value: i64) {
    if let Some(tv) = node_labels.get(tk) {
        let key = (tk.to_string(), tv.clone());
        let e = m.entry(key.clone()).or_insert(0);
        *e += value;
        if *e == 0 {
            m.remove(&key);
        }
    }
}

fn update_with_anti_affinity_terms(m: &mut TopologyCounts, terms: &[AffinityTerm], pod: &Pod, ns_labels: Option<&Labels>, node_labels: &Labels, value: i64) {
    for t in terms {
        if t.matches(pod, ns_labels) {
            update_count(m, node_labels, &t.topology_key, value);
        }
    }
}

fn pod_matches_all_affinity_terms(terms: &[AffinityTerm], pod: &Pod) -> bool {
    !terms.is_empty() && terms.iter().all(|t| t.matches(pod, None))
}

fn update_with_affinity_terms(m: &mut TopologyCounts, terms: &[AffinityTerm], pod: &Pod, node_labels: &Labels, value: i64) {
    if pod_matches_all_affinity_terms(terms, pod) {
        for t in terms {
            update_count(m, node_labels, &t.topology_key, value);
        }
    }
}

/// Unrolls a term's namespaceSelector into its namespaces (the incoming
/// pod's terms), so matching needs no namespace labels afterwards.
fn merge_namespaces(term: &mut AffinityTerm, snapshot: &Snapshot) {
    if term.namespace_selector.is_empty() {
        return;
    }
    for (ns, labels) in snapshot.namespace_labels.iter() {
        if term.namespace_selector.matches(labels) {
            term.namespaces.insert(ns.clone());
        }
    }
    term.namespace_selector = Selector::Nothing;
}

#[derive(Clone, Debug)]
struct PreFilterState {
    pod: Arc<Pod>,
    required_affinity_terms: Vec<AffinityTerm>,
    required_anti_affinity_terms: Vec<AffinityTerm>,
    /// Topology pairs where existing pods' anti-affinity matches the incoming pod.
    existing_anti_affinity_counts: TopologyCounts,
    /// Topology pairs with pods matching all the incoming pod's affinity terms.
    affinity_counts: TopologyCounts,
    /// Topology pairs with pods matching the incoming pod's anti-affinity terms.
    anti_affinity_counts: TopologyCounts,
    namespace_labels: Option<Labels>,
}

impl PreFilterState {
    fn update_with_pod(&mut self, other: &PodInfo, node: &NodeInfo, multiplier: i64) {
        let Some(n) = node.node_opt() else { return };
        let labels = helpers::node_labels(n);
        update_with_anti_affinity_terms(&mut self.existing_anti_affinity_counts, &other.required_anti_affinity_terms, &self.pod, self.namespace_labels.as_ref(), labels, multiplier);
        update_with_affinity_terms(&mut self.affinity_counts, &self.required_affinity_terms, &other.pod, labels, multiplier);
        update_with_anti_affinity_terms(&mut self.anti_affinity_counts, &self.required_anti_affinity_terms, &other.pod, None, labels, multiplier);
    }
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) -> (Option<PreFilterResult>, Status) {
        if let Some(e) = &pod.parse_error {
            return (None, Status::unresolvable(format!("parsing pod: {e}")));
        }
        let mut s = PreFilterState {
            pod: pod.pod.clone(),
            required_affinity_terms: pod.required_affinity_terms.clone(),
            required_anti_affinity_terms: pod.required_anti_affinity_terms.clone(),
            existing_anti_affinity_counts: HashMap::new(),
            affinity_counts: HashMap::new(),
            anti_affinity_counts: HashMap::new(),
            namespace_labels: snapshot.namespace_labels(helpers::pod_namespace(&pod.pod)).cloned(),
        };
        for t in s.required_affinity_terms.iter_mut().chain(s.required_anti_affinity_terms.iter_mut()) {
            merge_namespaces(t, snapshot);
        }
        for ni in snapshot.have_pods_with_required_anti_affinity() {
            let labels = helpers::node_labels(ni.node());
            for existing in &ni.pods_with_required_anti_affinity {
                update_with_anti_affinity_terms(&mut s.existing_anti_affinity_counts, &existing.required_anti_affinity_terms, &pod.pod, s.namespace_labels.as_ref(), labels, 1);
            }
        }
        if !s.required_affinity_terms.is_empty() || !s.required_anti_affinity_terms.is_empty() {
            for ni in &snapshot.node_infos {
                let labels = helpers::node_labels(ni.node());
                for existing in &ni.pods {
                    update_with_affinity_terms(&mut s.affinity_counts, &s.required_affinity_terms, &existing.pod, labels, 1);
                    update_with_anti_affinity_terms(&mut s.anti_affinity_counts, &s.required_anti_affinity_terms, &existing.pod, None, labels, 1);
                }
            }
        }
        if s.existing_anti_affinity_counts.is_empty() && s.required_affinity_terms.is_empty() && s.required_anti_affinity_terms.is_empty() {
            return (None, Status::skip());
        }
        state.write(PRE_FILTER_KEY, s);
        (None, Status::success())
    }

    fn add_pod(&self, state: &mut CycleState, _pod: &PodInfo, to_add: &PodInfo, node: &NodeInfo) -> Status {
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            s.update_with_pod(to_add, node, 1);
        }
        Status::success()
    }

    fn remove_pod(&self, state: &mut CycleState, _pod: &PodInfo, to_remove: &PodInfo, node: &NodeInfo) -> Status {
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            s.update_with_pod(to_remove, node, -1);
        }
        Status::success()
    }
}

fn satisfy_existing_pods_anti_affinity(s: &PreFilterState, labels: &Labels) -> bool {
    if s.existing_anti_affinity_counts.is_empty() {
        return true;
    }
    !labels.iter().any(|(k, v)| s.existing_anti_affinity_counts.get(&(k.clone(), v.clone())).copied().unwrap_or(0) > 0)
}

fn satisfy_pod_anti_affinity(s: &PreFilterState, labels: &Labels) -> bool {
    if s.anti_affinity_counts.is_empty() {
        return true;
    }
    for t in &s.required_anti_affinity_terms {
        if let Some(v) = labels.get(&t.topology_key)
            && s.anti_affinity_counts.get(&(t.topology_key.clone(), v.clone())).copied().unwrap_or(0) > 0 {
                return false;
            }
    }
    true
}

fn satisfy_pod_affinity(s: &PreFilterState, labels: &Labels) -> bool {
    let mut pods_exist = true;
    for t in &s.required_affinity_terms {
        match labels.get(&t.topology_key) {
            Some(v) => {
                if s.affinity_counts.get(&(t.topology_key.clone(), v.clone())).copied().unwrap_or(0) <= 0 {
                    pods_exist = false;
                }
            }
            // All topology labels must exist on the node.
            None => return false,
        }
    }
    if !pods_exist {
        // The first pod of a group with affinity to itself: allowed if no
        // pod matches anywhere and the pod matches its own terms.
        return s.affinity_counts.is_empty() && pod_matches_all_affinity_terms(&s.required_affinity_terms, &s.pod);
    }
    true
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_KEY) else {
            return Status::error("reading PreFilter state of InterPodAffinity: not found");
        };
        let labels = helpers::node_labels(node.node());
        if !satisfy_pod_affinity(s, labels) {
            return Status::unresolvable(ERR_REASON_AFFINITY_RULES_NOT_MATCH);
        }
        if !satisfy_pod_anti_affinity(s, labels) {
            return Status::unschedulable(ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH);
        }
        if !satisfy_existing_pods_anti_affinity(s, labels) {
            return Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH);
        }
        Status::success()
    }
}

// ---------------------------------------------------------------------------
// Scoring.

/// topology key → value → score.
type ScoreMap = HashMap<String, HashMap<String, i64>>;

fn process_term(m: &mut ScoreMap, term: &AffinityTerm, weight: i32, pod: &Pod, ns_labels: Option<&Labels>, node_labels: &Labels, multiplier: i32) {
    if term.matches(pod, ns_labels)
        && let Some(v) = node_labels.get(&term.topology_key) {
            *m.entry(term.topology_key.clone()).or_default().entry(v.clone()).or_insert(0) += i64::from(weight * multiplier);
        }
}

fn process_terms(m: &mut ScoreMap, terms: &[WeightedAffinityTerm], pod: &Pod, ns_labels: Option<&Labels>, node_labels: &Labels, multiplier: i32) {
    for t in terms {
        process_term(m, &t.term, t.weight, pod, ns_labels, node_labels, multiplier);
    }
}

#[derive(Clone, Debug)]
struct PreScoreState {
    topology_score: ScoreMap,
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, nodes: &[Arc<NodeInfo>], snapshot: &Snapshot) -> Status {
        if nodes.is_empty() {
            return Status::skip();
        }
        let has_constraints = !pod.preferred_affinity_terms.is_empty() || !pod.preferred_anti_affinity_terms.is_empty();
        let mut preferred_affinity = pod.preferred_affinity_terms.clone();
        let mut preferred_anti_affinity = pod.preferred_anti_affinity_terms.clone();
        for t in preferred_affinity.iter_mut().chain(preferred_anti_affinity.iter_mut()) {
            merge_namespaces(&mut t.term, snapshot);
        }
        let ns_labels = snapshot.namespace_labels(helpers::pod_namespace(&pod.pod));
        let mut score = ScoreMap::new();
        let mut process_node = |ni: &Arc<NodeInfo>| {
            let labels = helpers::node_labels(ni.node());
            if labels.is_empty() {
                return;
            }
            let pods = if has_constraints { &ni.pods } else { &ni.pods_with_affinity };
            for existing in pods {
                process_terms(&mut score, &preferred_affinity, &existing.pod, None, labels, 1);
                process_terms(&mut score, &preferred_anti_affinity, &existing.pod, None, labels, -1);
                if self.hard_pod_affinity_weight > 0 {
                    for t in &existing.required_affinity_terms {
                        process_term(&mut score, t, self.hard_pod_affinity_weight, &pod.pod, ns_labels, labels, 1);
                    }
                }
                process_terms(&mut score, &existing.preferred_affinity_terms, &pod.pod, ns_labels, labels, 1);
                process_terms(&mut score, &existing.preferred_anti_affinity_terms, &pod.pod, ns_labels, labels, -1);
            }
        };
        if has_constraints {
            snapshot.node_infos.iter().for_each(&mut process_node);
        } else {
            snapshot.have_pods_with_affinity().for_each(&mut process_node);
        }
        score.retain(|_, m| {
            m.retain(|_, v| *v != 0);
            !m.is_empty()
        });
        if score.is_empty() {
            return Status::skip();
        }
        state.write(PRE_SCORE_KEY, PreScoreState { topology_score: score });
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<PreScoreState>(PRE_SCORE_KEY) else {
            return Err(Status::error("reading PreScore state of InterPodAffinity: not found"));
        };
        let labels = helpers::node_labels(node.node());
        Ok(s.topology_score.iter().filter_map(|(k, values)| labels.get(k).and_then(|v| values.get(v))).sum())
    }

    fn normalize_score(&self, state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        let Some(s) = state.read::<PreScoreState>(PRE_SCORE_KEY) else { return Status::success() };
        if s.topology_score.is_empty() {
            return Status::success();
        }
        let min = scores.iter().map(|s| s.score).min().unwrap_or(0);
        let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
        let diff = max - min;
        for sc in scores.iter_mut() {
            let f = if diff > 0 { MAX_NODE_SCORE as f64 * ((sc.score - min) as f64 / diff as f64) } else { 0.0 };
            sc.score = f as i64;
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::{NodeBuilder, PodBuilder};
    use std::collections::BTreeMap;

    fn filter_all(pod: &Arc<PodInfo>, snapshot: &Snapshot) -> Vec<Status> {
        let plugin = InterPodAffinity::default();
        let mut state = CycleState::new();
        let (_, s) = plugin.pre_filter(&mut state, pod, snapshot);
        if s.is_skip() {
            return snapshot.node_infos.iter().map(|_| Status::success()).collect();
        }
        assert!(s.is_success(), "{s}");
        snapshot.node_infos.iter().map(|n| plugin.filter(&state, pod, n)).collect()
    }

    fn node(name: &str, zone: &str, pods: &[Arc<PodInfo>]) -> NodeInfo {
        NodeBuilder::new(name).labels(&[("zone", zone)]).with_pods(pods)
    }

    #[test]
    fn required_affinity() {
        let db = PodBuilder::new("db").node("a1").labels(&[("app", "db")]).info();
        let snapshot = Snapshot::from_nodes(vec![node("a1", "a", &[db]), node("a2", "a", &[]), node("b1", "b", &[])]);
        let pod = PodBuilder::new("p").pod_affinity(&[("app", "db")], "zone").info();
        let st = filter_all(&pod, &snapshot);
        assert!(st[0].is_success() && st[1].is_success(), "{st:?}");
        assert_eq!(st[2].code, Code::UnschedulableAndUnresolvable);
        assert_eq!(st[2].reasons, vec![ERR_REASON_AFFINITY_RULES_NOT_MATCH]);
        // A node without the topology label never satisfies affinity.
        let snapshot = Snapshot::from_nodes(vec![NodeBuilder::new("x").info()]);
        let st = filter_all(&pod, &snapshot);
        assert!(!st[0].is_success());
    }

    #[test]
    fn first_pod_with_affinity_to_itself_is_allowed() {
        let snapshot = Snapshot::from_nodes(vec![node("a1", "a", &[])]);
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).pod_affinity(&[("app", "web")], "zone").info();
        assert!(filter_all(&pod, &snapshot)[0].is_success());
        // Not matching its own term: rejected.
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).pod_affinity(&[("app", "db")], "zone").info();
        assert!(!filter_all(&pod, &snapshot)[0].is_success());
    }

    #[test]
    fn required_anti_affinity() {
        let web = PodBuilder::new("w").node("a1").labels(&[("app", "web")]).info();
        let snapshot = Snapshot::from_nodes(vec![node("a1", "a", &[web]), node("a2", "a", &[]), node("b1", "b", &[])]);
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).pod_anti_affinity(&[("app", "web")], "kubernetes.io/hostname").info();
        let st = filter_all(&pod, &snapshot);
        assert_eq!(st[0].code, Code::Unschedulable);
        assert_eq!(st[0].reasons, vec![ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH]);
        assert!(st[1].is_success() && st[2].is_success());
        // By zone: the whole zone a is excluded.
        let pod = PodBuilder::new("p").pod_anti_affinity(&[("app", "web")], "zone").info();
        let st = filter_all(&pod, &snapshot);
        assert!(!st[0].is_success() && !st[1].is_success() && st[2].is_success());
    }

    #[test]
    fn existing_pods_anti_affinity() {
        let lonely = PodBuilder::new("l").node("a1").labels(&[("app", "lonely")]).pod_anti_affinity(&[("app", "web")], "zone").info();
        let snapshot = Snapshot::from_nodes(vec![node("a1", "a", &[lonely]), node("a2", "a", &[]), node("b1", "b", &[])]);
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).info();
        let st = filter_all(&pod, &snapshot);
        assert_eq!(st[0].reasons, vec![ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH]);
        assert_eq!(st[1].reasons, vec![ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH]);
        assert!(st[2].is_success());
        // Pods the term does not select are unaffected.
        let other = PodBuilder::new("o").labels(&[("app", "api")]).info();
        assert!(filter_all(&other, &snapshot).iter().all(|s| s.is_success()));
    }

    #[test]
    fn namespaces_and_namespace_selector() {
        let web_prod = PodBuilder::new("w").namespace("prod").node("a1").labels(&[("app", "web")]).info();
        let mut ns = BTreeMap::new();
        ns.insert("prod".to_string(), [("env".to_string(), "prod".to_string())].into());
        ns.insert("default".to_string(), Labels::new());
        let snapshot = Snapshot::from_nodes(vec![node("a1", "a", &[web_prod]), node("b1", "b", &[])]).with_namespaces(ns);
        // Same-namespace term (default): the prod pod does not count.
        let pod = PodBuilder::new("p").pod_anti_affinity(&[("app", "web")], "zone").info();
        assert!(filter_all(&pod, &snapshot).iter().all(|s| s.is_success()));
        // namespaceSelector env=prod: it does.
        let mut v = PodBuilder::new("p").pod_anti_affinity(&[("app", "web")], "zone").json();
        v["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["namespaceSelector"] = serde_json::json!({"matchLabels": {"env": "prod"}});
        let pod = PodInfo::from_pod(serde_json::from_value(v).unwrap());
        let st = filter_all(&pod, &snapshot);
        assert!(!st[0].is_success() && st[1].is_success());
    }

    #[test]
    fn add_pod_extension_counts_nominated_pods() {
        let snapshot = Snapshot::from_nodes(vec![node("a1", "a", &[]), node("b1", "b", &[])]);
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).pod_anti_affinity(&[("app", "web")], "zone").info();
        let plugin = InterPodAffinity::default();
        let mut state = CycleState::new();
        let (_, s) = plugin.pre_filter(&mut state, &pod, &snapshot);
        assert!(s.is_success());
        let other = PodBuilder::new("o").labels(&[("app", "web")]).node("a1").info();
        plugin.add_pod(&mut state, &pod, &other, &snapshot.node_infos[0]);
        assert!(!plugin.filter(&state, &pod, &snapshot.node_infos[0]).is_success());
        plugin.remove_pod(&mut state, &pod, &other, &snapshot.node_infos[0]);
        assert!(plugin.filter(&state, &pod, &snapshot.node_infos[0]).is_success());
    }

    #[test]
    fn preferred_scores() {
        let db = PodBuilder::new("db").node("a1").labels(&[("app", "db")]).info();
        let web = PodBuilder::new("web").node("b1").labels(&[("app", "web")]).info();
        let snapshot = Snapshot::from_nodes(vec![node("a1", "a", &[db]), node("b1", "b", &[web]), node("c1", "c", &[])]);
        let pod = PodBuilder::new("p").preferred_pod_affinity(10, &[("app", "db")], "zone").preferred_pod_anti_affinity(5, &[("app", "web")], "zone").info();
        let plugin = InterPodAffinity::default();
        let mut state = CycleState::new();
        assert!(plugin.pre_score(&mut state, &pod, &snapshot.node_infos, &snapshot).is_success());
        let mut scores: Vec<NodeScore> = snapshot.node_infos.iter().enumerate().map(|(index, n)| NodeScore { index, score: plugin.score(&state, &pod, n).unwrap() }).collect();
        assert_eq!(scores.iter().map(|s| s.score).collect::<Vec<_>>(), vec![10, -5, 0]);
        plugin.normalize_score(&state, &pod, &mut scores);
        assert_eq!(scores.iter().map(|s| s.score).collect::<Vec<_>>(), vec![100, 0, 33]);
    }

    #[test]
    fn existing_pods_preferred_terms_score() {
        // An existing pod preferring pods like the incoming one nearby.
        let friendly = PodBuilder::new("f").node("a1").preferred_pod_affinity(8, &[("app", "web")], "zone").info();
        let snapshot = Snapshot::from_nodes(vec![node("a1", "a", &[friendly]), node("b1", "b", &[])]);
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).info();
        let plugin = InterPodAffinity::default();
        let mut state = CycleState::new();
        assert!(plugin.pre_score(&mut state, &pod, &snapshot.node_infos, &snapshot).is_success());
        let a = plugin.score(&state, &pod, &snapshot.node_infos[0]).unwrap();
        let b = plugin.score(&state, &pod, &snapshot.node_infos[1]).unwrap();
        assert_eq!((a, b), (8, 0));
        // A pod nobody cares about skips scoring.
        let plain = PodBuilder::new("q").labels(&[("app", "api")]).info();
        assert!(plugin.pre_score(&mut CycleState::new(), &plain, &snapshot.node_infos, &snapshot).is_skip());
    }
}
