//! PodTopologySpread: `topologySpreadConstraints`. DoNotSchedule
//! constraints filter (matching pods in the node's domain + self − global
//! minimum ≤ maxSkew); ScheduleAnyway constraints score (fewer matching
//! pods in the node's domain score higher).
//!
//! Not implemented: the system default constraints upstream derives from
//! Services/ReplicaSets/StatefulSets selecting the pod.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, TopologySpreadConstraint};

use crate::framework::{
    action, ClusterEvent, CycleState, EventResource, FilterPlugin, NodeInfo, NodeScore, Plugin, PodInfo, PreFilterPlugin, PreFilterResult, PreScorePlugin,
    ScorePlugin, Snapshot, Status, MAX_NODE_SCORE,
};
use crate::helpers::{self, Labels, Op, RequiredNodeAffinity, Requirement, Selector};

pub const NAME: &str = "PodTopologySpread";
pub const ERR_REASON_CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_REASON_NODE_LABEL_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints (missing required label)";
const PRE_FILTER_KEY: &str = "PreFilterPodTopologySpread";
const PRE_SCORE_KEY: &str = "PreScorePodTopologySpread";
const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";

#[derive(Debug, Default)]
pub struct PodTopologySpread;

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(EventResource::AssignedPod, action::ALL, "AssignedPod"),
            ClusterEvent::new(EventResource::Node, action::ADD | action::DELETE | action::UPDATE_NODE_LABEL | action::UPDATE_NODE_TAINT, "Node"),
        ]
    }
}

#[derive(Clone, Debug)]
struct Constraint {
    max_skew: i32,
    topology_key: String,
    selector: Selector,
    min_domains: i32,
    honor_node_affinity: bool,
    honor_node_taints: bool,
}

impl Constraint {
    fn match_node_inclusion_policies(&self, pod: &Pod, node: &Node, required: &RequiredNodeAffinity) -> bool {
        if self.honor_node_affinity && !required.matches(node) {
            return false;
        }
        if self.honor_node_taints {
            let f = |t: &k8s_openapi::api::core::v1::Taint| t.effect == "NoSchedule" || t.effect == "NoExecute";
            if helpers::find_matching_untolerated_taint(helpers::node_taints(node), helpers::pod_tolerations(pod), f).is_some() {
                return false;
            }
        }
        true
    }
}

fn constraints_of(pod: &Pod, when: &str) -> Result<Vec<Constraint>, String> {
    let pod_labels = helpers::pod_labels(pod);
    let mut out = Vec::new();
    for c in pod.spec.as_ref().and_then(|s| s.topology_spread_constraints.as_ref()).into_iter().flatten() {
        if c.when_unsatisfiable != when {
            continue;
        }
        out.push(constraint(c, pod_labels)?);
    }
    Ok(out)
}

fn constraint(c: &TopologySpreadConstraint, pod_labels: &Labels) -> Result<Constraint, String> {
    let mut selector = Selector::from_label_selector(c.label_selector.as_ref())?;
    let keys = c.match_label_keys.as_deref().unwrap_or(&[]);
    let extra: Vec<Requirement> = keys
        .iter()
        .filter_map(|k| pod_labels.get(k).map(|v| Requirement { key: k.clone(), op: Op::In, values: vec![v.clone()] }))
        .collect();
    if !extra.is_empty() {
        // Upstream's mergeLabelSetWithSelector: a selector from the set plus
        // the existing requirements (none for a nil selector).
        let mut merged = Selector::Requirements(extra);
        if let Selector::Requirements(reqs) = selector {
            for r in reqs {
                merged.add(r);
            }
        }
        selector = merged;
    }
    Ok(Constraint {
        max_skew: c.max_skew,
        topology_key: c.topology_key.clone(),
        selector,
        min_domains: c.min_domains.unwrap_or(1),
        honor_node_affinity: c.node_affinity_policy.as_deref().unwrap_or("Honor") == "Honor",
        honor_node_taints: c.node_taints_policy.as_deref().unwrap_or("Ignore") == "Honor",
    })
}

fn node_labels_match_constraints(labels: &Labels, constraints: &[Constraint]) -> bool {
    constraints.iter().all(|c| labels.contains_key(&c.topology_key))
}

/// Pods in `ns` matching `selector`, not being deleted. An "everything"
/// selector counts nothing, as upstream's `selector.Empty()` check does.
fn count_pods_match_selector(pods: &[Arc<PodInfo>], selector: &Selector, ns: &str) -> i64 {
    if selector.is_empty() {
        return 0;
    }
    pods.iter()
        .filter(|p| !helpers::is_terminating(&p.pod) && helpers::pod_namespace(&p.pod) == ns && selector.matches(helpers::pod_labels(&p.pod)))
        .count() as i64
}

/// The two domains with the fewest matching pods.
#[derive(Clone, Debug)]
struct CriticalPaths([(String, i64); 2]);

impl CriticalPaths {
    fn new() -> CriticalPaths {
        CriticalPaths([(String::new(), i64::from(i32::MAX)), (String::new(), i64::from(i32::MAX))])
    }
    fn update(&mut self, tp_val: &str, num: i64) {
        let p = &mut self.0;
        let i = if tp_val == p[0].0 {
            Some(0)
        } else if tp_val == p[1].0 {
            Some(1)
        } else {
            None
        };
        match i {
            Some(i) => {
                p[i].1 = num;
                if p[0].1 > p[1].1 {
                    p.swap(0, 1);
                }
            }
            None => {
                if num < p[0].1 {
                    p[1] = p[0].clone();
                    p[0] = (tp_val.to_string(), num);
                } else if num < p[1].1 {
                    p[1] = (tp_val.to_string(), num);
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
struct PreFilterState {
    constraints: Vec<Constraint>,
    critical_paths: Vec<CriticalPaths>,
    tp_value_to_match_num: Vec<HashMap<String, i64>>,
}

impl PreFilterState {
    fn min_match_num(&self, i: usize, min_domains: i32) -> i64 {
        let mut min = self.critical_paths[i].0[0].1;
        if (self.tp_value_to_match_num[i].len() as i64) < i64::from(min_domains) {
            min = 0;
        }
        min
    }

    fn update_with_pod(&mut self, to_update: &PodInfo, preemptor: &Pod, node: &NodeInfo, delta: i64) {
        let Some(n) = node.node_opt() else { return };
        if helpers::pod_namespace(&to_update.pod) != helpers::pod_namespace(preemptor) {
            return;
        }
        let labels = helpers::node_labels(n);
        if !node_labels_match_constraints(labels, &self.constraints) {
            return;
        }
        let required = RequiredNodeAffinity::from_pod(preemptor);
        let pod_labels = helpers::pod_labels(&to_update.pod);
        for i in 0..self.constraints.len() {
            let c = &self.constraints[i];
            if !c.selector.matches(pod_labels) || !c.match_node_inclusion_policies(preemptor, n, &required) {
                continue;
            }
            let v = labels[&c.topology_key].clone();
            let e = self.tp_value_to_match_num[i].entry(v.clone()).or_insert(0);
            *e += delta;
            let num = *e;
            self.critical_paths[i].update(&v, num);
        }
    }
}

fn cal_pre_filter_state(pod: &Pod, snapshot: &Snapshot) -> Result<PreFilterState, String> {
    let constraints = constraints_of(pod, "DoNotSchedule")?;
    let mut s = PreFilterState {
        critical_paths: Vec::new(),
        tp_value_to_match_num: vec![HashMap::new(); constraints.len()],
        constraints,
    };
    if s.constraints.is_empty() {
        return Ok(s);
    }
    let required = RequiredNodeAffinity::from_pod(pod);
    let ns = helpers::pod_namespace(pod);
    for ni in &snapshot.node_infos {
        let node = ni.node();
        let labels = helpers::node_labels(node);
        if !node_labels_match_constraints(labels, &s.constraints) {
            continue;
        }
        for (i, c) in s.constraints.iter().enumerate() {
            if !c.match_node_inclusion_policies(pod, node, &required) {
                continue;
            }
            let count = count_pods_match_selector(&ni.pods, &c.selector, ns);
            *s.tp_value_to_match_num[i].entry(labels[&c.topology_key].clone()).or_insert(0) += count;
        }
    }
    for i in 0..s.constraints.len() {
        let mut cp = CriticalPaths::new();
        for (v, n) in &s.tp_value_to_match_num[i] {
            cp.update(v, *n);
        }
        s.critical_paths.push(cp);
    }
    Ok(s)
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) -> (Option<PreFilterResult>, Status) {
        match cal_pre_filter_state(&pod.pod, snapshot) {
            Err(e) => (None, Status::error(e)),
            Ok(s) if s.constraints.is_empty() => (None, Status::skip()),
            Ok(s) => {
                state.write(PRE_FILTER_KEY, s);
                (None, Status::success())
            }
        }
    }

    fn add_pod(&self, state: &mut CycleState, pod: &PodInfo, to_add: &PodInfo, node: &NodeInfo) -> Status {
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            s.update_with_pod(to_add, &pod.pod, node, 1);
        }
        Status::success()
    }

    fn remove_pod(&self, state: &mut CycleState, pod: &PodInfo, to_remove: &PodInfo, node: &NodeInfo) -> Status {
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            s.update_with_pod(to_remove, &pod.pod, node, -1);
        }
        Status::success()
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_KEY) else {
            return Status::error("reading PreFilter state of PodTopologySpread: not found");
        };
        let labels = helpers::node_labels(node.node());
        let pod_labels = helpers::pod_labels(&pod.pod);
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(tp_val) = labels.get(&c.topology_key) else {
                return Status::unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH);
            };
            let min = s.min_match_num(i, c.min_domains);
            let self_match = i64::from(c.selector.matches(pod_labels));
            let match_num = s.tp_value_to_match_num[i].get(tp_val).copied().unwrap_or(0);
            if match_num + self_match - min > i64::from(c.max_skew) {
                return Status::unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH);
            }
        }
        Status::success()
    }
}

// ---------------------------------------------------------------------------
// Scoring.

#[derive(Clone, Debug)]
struct PreScoreState {
    constraints: Vec<Constraint>,
    ignored_nodes: BTreeSet<String>,
    /// The same nodes by position in the scored list (what NormalizeScore sees).
    ignored_positions: BTreeSet<usize>,
    /// (topology key, value) → matching pods, for non-hostname keys.
    topology_pair_to_pod_counts: HashMap<(String, String), i64>,
    topology_normalizing_weight: Vec<f64>,
}

fn topology_normalizing_weight(size: usize) -> f64 {
    ((size + 2) as f64).ln()
}

fn score_for_count(cnt: i64, max_skew: i32, weight: f64) -> f64 {
    cnt as f64 * weight + f64::from(max_skew - 1)
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, nodes: &[Arc<NodeInfo>], snapshot: &Snapshot) -> Status {
        if nodes.is_empty() || snapshot.num_nodes() == 0 {
            return Status::skip();
        }
        let constraints = match constraints_of(&pod.pod, "ScheduleAnyway") {
            Ok(c) => c,
            Err(e) => return Status::error(e),
        };
        if constraints.is_empty() {
            return Status::skip();
        }
        let mut s = PreScoreState { constraints, ignored_nodes: BTreeSet::new(), ignored_positions: BTreeSet::new(), topology_pair_to_pod_counts: HashMap::new(), topology_normalizing_weight: Vec::new() };
        let mut topo_size = vec![0usize; s.constraints.len()];
        for (position, ni) in nodes.iter().enumerate() {
            let labels = helpers::node_labels(ni.node());
            if !node_labels_match_constraints(labels, &s.constraints) {
                s.ignored_nodes.insert(ni.name().to_string());
                s.ignored_positions.insert(position);
                continue;
            }
            for (i, c) in s.constraints.iter().enumerate() {
                if c.topology_key == LABEL_HOSTNAME {
                    continue;
                }
                let pair = (c.topology_key.clone(), labels[&c.topology_key].clone());
                if let std::collections::hash_map::Entry::Vacant(e) = s.topology_pair_to_pod_counts.entry(pair) {
                    e.insert(0);
                    topo_size[i] += 1;
                }
            }
        }
        for (i, c) in s.constraints.iter().enumerate() {
            let size = if c.topology_key == LABEL_HOSTNAME { nodes.len() - s.ignored_nodes.len() } else { topo_size[i] };
            s.topology_normalizing_weight.push(topology_normalizing_weight(size));
        }
        let required = RequiredNodeAffinity::from_pod(&pod.pod);
        let ns = helpers::pod_namespace(&pod.pod);
        for ni in &snapshot.node_infos {
            let node = ni.node();
            let labels = helpers::node_labels(node);
            if !node_labels_match_constraints(labels, &s.constraints) {
                continue;
            }
            for c in &s.constraints {
                if !c.match_node_inclusion_policies(&pod.pod, node, &required) {
                    continue;
                }
                let pair = (c.topology_key.clone(), labels[&c.topology_key].clone());
                if let Some(cnt) = s.topology_pair_to_pod_counts.get_mut(&pair) {
                    *cnt += count_pods_match_selector(&ni.pods, &c.selector, ns);
                }
            }
        }
        state.write(PRE_SCORE_KEY, s);
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<PreScoreState>(PRE_SCORE_KEY) else {
            return Err(Status::error("reading PreScore state of PodTopologySpread: not found"));
        };
        if s.ignored_nodes.contains(node.name()) {
            return Ok(0);
        }
        let labels = helpers::node_labels(node.node());
        let ns = helpers::pod_namespace(&pod.pod);
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            if let Some(v) = labels.get(&c.topology_key) {
                let cnt = if c.topology_key == LABEL_HOSTNAME {
                    count_pods_match_selector(&node.pods, &c.selector, ns)
                } else {
                    s.topology_pair_to_pod_counts.get(&(c.topology_key.clone(), v.clone())).copied().unwrap_or(0)
                };
                score += score_for_count(cnt, c.max_skew, s.topology_normalizing_weight[i]);
            }
        }
        Ok(score.round() as i64)
    }

    fn normalize_score(&self, state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        let Some(s) = state.read::<PreScoreState>(PRE_SCORE_KEY) else { return Status::success() };
        let mut min = i64::MAX;
        let mut max = 0;
        for sc in scores.iter() {
            if s.ignored_positions.contains(&sc.index) {
                continue;
            }
            min = min.min(sc.score);
            max = max.max(sc.score);
        }
        for sc in scores.iter_mut() {
            if s.ignored_positions.contains(&sc.index) {
                sc.score = 0;
                continue;
            }
            if max == 0 {
                sc.score = MAX_NODE_SCORE;
                continue;
            }
            sc.score = MAX_NODE_SCORE * (max + min - sc.score) / max;
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::{NodeBuilder, PodBuilder};

    fn zone_node(name: &str, zone: &str, pods: &[Arc<PodInfo>]) -> NodeInfo {
        NodeBuilder::new(name).labels(&[("zone", zone)]).with_pods(pods)
    }

    fn web(name: &str, node: &str) -> Arc<PodInfo> {
        PodBuilder::new(name).node(node).labels(&[("app", "web")]).info()
    }

    fn filter_all(pod: &Arc<PodInfo>, snapshot: &Snapshot) -> Vec<Status> {
        let mut state = CycleState::new();
        let (_, s) = PodTopologySpread.pre_filter(&mut state, pod, snapshot);
        assert!(s.is_success(), "{s}");
        snapshot.node_infos.iter().map(|n| PodTopologySpread.filter(&state, pod, n)).collect()
    }

    #[test]
    fn max_skew_across_zones() {
        // zone a: 2 web pods, zone b: 0.
        let snapshot = Snapshot::from_nodes(vec![zone_node("a1", "a", &[web("w1", "a1"), web("w2", "a1")]), zone_node("b1", "b", &[])]);
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).spread(1, "zone", "DoNotSchedule", &[("app", "web")]).info();
        let st = filter_all(&pod, &snapshot);
        assert_eq!(st[0].code, Code::Unschedulable);
        assert_eq!(st[0].reasons, vec![ERR_REASON_CONSTRAINTS_NOT_MATCH]);
        assert!(st[1].is_success());
        // maxSkew 3 tolerates 2 + 1 - 0.
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).spread(3, "zone", "DoNotSchedule", &[("app", "web")]).info();
        assert!(filter_all(&pod, &snapshot).iter().all(|s| s.is_success()));
    }

    #[test]
    fn pods_not_matching_selector_or_in_other_namespaces_do_not_count() {
        let other = PodBuilder::new("o").node("a1").labels(&[("app", "db")]).info();
        let elsewhere = PodBuilder::new("e").namespace("other").node("a1").labels(&[("app", "web")]).info();
        let terminating = PodBuilder::new("t").node("a1").labels(&[("app", "web")]).terminating().info();
        let snapshot = Snapshot::from_nodes(vec![zone_node("a1", "a", &[other, elsewhere, terminating]), zone_node("b1", "b", &[])]);
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).spread(1, "zone", "DoNotSchedule", &[("app", "web")]).info();
        assert!(filter_all(&pod, &snapshot).iter().all(|s| s.is_success()));
    }

    #[test]
    fn node_without_topology_key_is_unresolvable() {
        let snapshot = Snapshot::from_nodes(vec![zone_node("a1", "a", &[]), NodeBuilder::new("nolabel").info()]);
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).spread(1, "zone", "DoNotSchedule", &[("app", "web")]).info();
        let st = filter_all(&pod, &snapshot);
        assert!(st[0].is_success());
        assert_eq!(st[1].code, Code::UnschedulableAndUnresolvable);
        assert_eq!(st[1].reasons, vec![ERR_REASON_NODE_LABEL_NOT_MATCH]);
    }

    #[test]
    fn min_domains_treats_global_minimum_as_zero() {
        // Only one zone exists but minDomains 2: the minimum counts as 0, so
        // one more pod in zone a (1 + 1 - 0 > 1) is rejected.
        let snapshot = Snapshot::from_nodes(vec![zone_node("a1", "a", &[web("w1", "a1")])]);
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).spread(1, "zone", "DoNotSchedule", &[("app", "web")]).min_domains(2).info();
        assert!(!filter_all(&pod, &snapshot)[0].is_success());
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).spread(1, "zone", "DoNotSchedule", &[("app", "web")]).info();
        assert!(filter_all(&pod, &snapshot)[0].is_success());
    }

    #[test]
    fn nodes_excluded_by_node_affinity_do_not_count() {
        // Zone b is excluded by the pod's nodeSelector, so its 0 is not the minimum.
        let snapshot = Snapshot::from_nodes(vec![
            NodeBuilder::new("a1").labels(&[("zone", "a"), ("pool", "x")]).with_pods(&[web("w1", "a1")]),
            NodeBuilder::new("c1").labels(&[("zone", "c"), ("pool", "x")]).with_pods(&[web("w2", "c1")]),
            NodeBuilder::new("b1").labels(&[("zone", "b")]).info(),
        ]);
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).node_selector(&[("pool", "x")]).spread(1, "zone", "DoNotSchedule", &[("app", "web")]).info();
        let st = filter_all(&pod, &snapshot);
        assert!(st[0].is_success() && st[1].is_success());
    }

    #[test]
    fn add_and_remove_pod_update_counts() {
        let snapshot = Snapshot::from_nodes(vec![zone_node("a1", "a", &[web("w1", "a1")]), zone_node("b1", "b", &[])]);
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).spread(1, "zone", "DoNotSchedule", &[("app", "web")]).info();
        let mut state = CycleState::new();
        PodTopologySpread.pre_filter(&mut state, &pod, &snapshot);
        let b1 = &snapshot.node_infos[1];
        // Pretend another web pod lands on b1: a1 becomes feasible (1+1-1 <= 1)... and b1 too.
        let extra = web("w3", "b1");
        PodTopologySpread.add_pod(&mut state, &pod, &extra, b1);
        assert!(PodTopologySpread.filter(&state, &pod, &snapshot.node_infos[0]).is_success());
        // Remove the pod on a1: a1 has 0, b1 has 1.
        PodTopologySpread.remove_pod(&mut state, &pod, &snapshot.node_infos[0].pods[0], &snapshot.node_infos[0]);
        assert!(PodTopologySpread.filter(&state, &pod, &snapshot.node_infos[0]).is_success());
    }

    #[test]
    fn score_prefers_less_crowded_domains() {
        let snapshot = Snapshot::from_nodes(vec![
            zone_node("a1", "a", &[web("w1", "a1"), web("w2", "a1")]),
            zone_node("b1", "b", &[web("w3", "b1")]),
            zone_node("c1", "c", &[]),
        ]);
        let pod = PodBuilder::new("p").labels(&[("app", "web")]).spread(1, "zone", "ScheduleAnyway", &[("app", "web")]).info();
        let mut state = CycleState::new();
        assert!(PodTopologySpread.pre_score(&mut state, &pod, &snapshot.node_infos, &snapshot).is_success());
        let mut scores: Vec<NodeScore> =
            snapshot.node_infos.iter().enumerate().map(|(index, n)| NodeScore { index, score: PodTopologySpread.score(&state, &pod, n).unwrap() }).collect();
        PodTopologySpread.normalize_score(&state, &pod, &mut scores);
        let s: Vec<i64> = scores.iter().map(|s| s.score).collect();
        assert!(s[2] > s[1] && s[1] > s[0], "{s:?}");
        assert_eq!(s[2], 100);
        // DoNotSchedule-only pods skip scoring.
        let hard = PodBuilder::new("h").labels(&[("app", "web")]).spread(1, "zone", "DoNotSchedule", &[("app", "web")]).info();
        assert!(PodTopologySpread.pre_score(&mut CycleState::new(), &hard, &snapshot.node_infos, &snapshot).is_skip());
    }
}
