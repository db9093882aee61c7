//! One scheduling decision on a snapshot: PreFilter, Filter (the nominated
//! node first, then as many nodes as `percentageOfNodesToScore` asks for,
//! starting where the last cycle stopped), PreScore, Score, and a random
//! pick among the best — upstream's `schedulePod`.

use std::sync::Arc;

use rand::Rng;

use crate::framework::{CycleState, Diagnosis, FitError, Framework, NodeInfo, NodePluginScores, NominatedPods, PodInfo, Snapshot, Status};
use crate::helpers;

/// Upstream's `minFeasibleNodesToFind`.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// Upstream's `minFeasibleNodesPercentageToFind`.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

#[derive(Clone, Debug)]
pub struct ScheduleResult {
    pub suggested_host: String,
    pub evaluated_nodes: usize,
    pub feasible_nodes: usize,
}

#[derive(Debug)]
pub enum ScheduleError {
    /// The cluster has no nodes.
    NoNodesAvailable,
    /// No node fits.
    Fit(Box<FitError>),
    /// A plugin failed.
    Internal(Status),
}

pub const NO_NODES_AVAILABLE_MSG: &str = "no nodes available to schedule pods";

/// How many feasible nodes to find before scoring: all of a small
/// cluster; else `percentage` (adaptive: 50 − nodes/125, at least 5%) of
/// the nodes, but at least 100.
pub fn num_feasible_nodes_to_find(percentage: Option<u32>, num_all_nodes: usize) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all_nodes;
    }
    let mut pct = percentage.unwrap_or(0) as usize;
    if pct == 0 {
        pct = 50usize.saturating_sub(num_all_nodes / 125).max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND);
    }
    let n = num_all_nodes * pct.min(100) / 100;
    n.max(MIN_FEASIBLE_NODES_TO_FIND)
}

pub fn schedule_pod(
    fwk: &Framework,
    state: &mut CycleState,
    pod: &Arc<PodInfo>,
    snapshot: &Snapshot,
    nominated: &NominatedPods,
    next_start_node_index: &mut usize,
) -> Result<ScheduleResult, ScheduleError> {
    if snapshot.num_nodes() == 0 {
        return Err(ScheduleError::NoNodesAvailable);
    }
    let (feasible, diagnosis) = find_nodes_that_fit(fwk, state, pod, snapshot, nominated, next_start_node_index)?;
    if feasible.is_empty() {
        return Err(ScheduleError::Fit(Box::new(FitError { num_all_nodes: snapshot.num_nodes(), diagnosis })));
    }
    let evaluated = feasible.len() + diagnosis.node_to_status.len();
    if feasible.len() == 1 {
        return Ok(ScheduleResult { suggested_host: feasible[0].name().to_string(), evaluated_nodes: evaluated, feasible_nodes: 1 });
    }
    let scores = prioritize_nodes(fwk, state, pod, &feasible, snapshot)?;
    let host = select_host(&scores).ok_or_else(|| ScheduleError::Internal(Status::error("empty priorityList")))?;
    let host = feasible[host].name().to_string();
    Ok(ScheduleResult { suggested_host: host, evaluated_nodes: evaluated, feasible_nodes: feasible.len() })
}

/// How many nodes ahead of the one being filtered [`NodeInfo::touch`]
/// reaches: far enough for a miss to memory to complete meanwhile.
const LOOK_AHEAD: usize = 8;

/// PreFilter + Filter: the feasible nodes and why the others were not.
pub fn find_nodes_that_fit(
    fwk: &Framework,
    state: &mut CycleState,
    pod: &Arc<PodInfo>,
    snapshot: &Snapshot,
    nominated: &NominatedPods,
    next_start_node_index: &mut usize,
) -> Result<(Vec<Arc<NodeInfo>>, Diagnosis), ScheduleError> {
    let mut diagnosis = Diagnosis::default();
    let (pre_res, s, rejectors) = fwk.run_pre_filter(state, pod, snapshot);
    diagnosis.unschedulable_plugins = rejectors;
    if !s.is_success() {
        if !s.is_rejected() {
            return Err(ScheduleError::Internal(s));
        }
        diagnosis.pre_filter_msg = s.message();
        diagnosis.node_to_status.absent_status = s;
        return Ok((Vec::new(), diagnosis));
    }

    // A pod nominated by preemption tries its node first.
    let nnn = helpers::nominated_node_name(&pod.pod);
    if !nnn.is_empty() {
        let allowed = pre_res.as_ref().and_then(|r| r.node_names.as_ref()).map(|n| n.contains(nnn)).unwrap_or(true);
        if let (true, Some(ni)) = (allowed, snapshot.get(nnn)) {
            let s = fwk.run_filter_with_nominated(state, pod, ni, nominated);
            if s.is_success() {
                return Ok((vec![ni.clone()], diagnosis));
            }
            if !s.is_rejected() {
                return Err(ScheduleError::Internal(s));
            }
        }
    }

    // The nodes a PreFilter narrowed it to, or all of them (walked in
    // place: no list of 5,000 pointers per cycle).
    let listed: Option<Vec<&Arc<NodeInfo>>> = pre_res.as_ref().and_then(|r| r.node_names.as_ref()).map(|names| {
        diagnosis.node_to_status.absent_status = Status::unresolvable("node is filtered out by the prefilter result");
        names.iter().filter_map(|n| snapshot.get(n)).collect()
    });
    let len = listed.as_ref().map_or(snapshot.node_infos.len(), Vec::len);
    let node_at = |i: usize| -> &Arc<NodeInfo> {
        match &listed {
            Some(l) => l[i % len],
            None => &snapshot.node_infos[i % len],
        }
    };
    if len == 0 {
        return Ok((Vec::new(), diagnosis));
    }
    let to_find = num_feasible_nodes_to_find(fwk.percentage_of_nodes_to_score, len);
    let mut feasible: Vec<Arc<NodeInfo>> = Vec::new();
    let start = *next_start_node_index % len;
    let mut processed = 0;
    if !fwk.has_filter_plugins() {
        for i in 0..to_find.min(len) {
            feasible.push(node_at(start + i).clone());
        }
        processed = feasible.len();
    } else {
        for i in 0..len {
            let ni = node_at(start + i);
            if i + LOOK_AHEAD < len {
                node_at(start + i + LOOK_AHEAD).touch();
            }
            processed += 1;
            let s = fwk.run_filter_with_nominated(state, pod, ni, nominated);
            if s.is_success() {
                feasible.push(ni.clone());
                if feasible.len() >= to_find {
                    break;
                }
            } else if s.is_rejected() {
                if !s.plugin.is_empty() {
                    diagnosis.unschedulable_plugins.insert(s.plugin);
                }
                diagnosis.node_to_status.set(ni.name(), s);
            } else {
                return Err(ScheduleError::Internal(s));
            }
        }
    }
    *next_start_node_index = (start + processed) % len;
    Ok((feasible, diagnosis))
}

/// PreScore + Score: the weighted total per feasible node.
pub fn prioritize_nodes(fwk: &Framework, state: &mut CycleState, pod: &Arc<PodInfo>, nodes: &[Arc<NodeInfo>], snapshot: &Snapshot) -> Result<Vec<NodePluginScores>, ScheduleError> {
    if !fwk.has_score_plugins() {
        return Ok((0..nodes.len()).map(|index| NodePluginScores { index, total: 1 }).collect());
    }
    let s = fwk.run_pre_score(state, pod, nodes, snapshot);
    if !s.is_success() {
        return Err(ScheduleError::Internal(s));
    }
    fwk.run_score(state, pod, nodes).map_err(ScheduleError::Internal)
}

/// The position of the highest total; ties broken uniformly at random
/// (reservoir sampling).
pub fn select_host(scores: &[NodePluginScores]) -> Option<usize> {
    let mut rng = rand::rng();
    let mut best: Option<&NodePluginScores> = None;
    let mut ties = 0u32;
    for s in scores {
        match best {
            None => {
                best = Some(s);
                ties = 1;
            }
            Some(b) if s.total > b.total => {
                best = Some(s);
                ties = 1;
            }
            Some(b) if s.total == b.total => {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = Some(s);
                }
            }
            _ => {}
        }
    }
    best.map(|b| b.index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::default_framework_without_binder;
    use crate::testing::{NodeBuilder, PodBuilder};

    #[test]
    fn feasible_nodes_to_find() {
        assert_eq!(num_feasible_nodes_to_find(None, 50), 50);
        assert_eq!(num_feasible_nodes_to_find(None, 99), 99);
        // 100 nodes: 50 - 0 = 50% → 50, raised to 100.
        assert_eq!(num_feasible_nodes_to_find(None, 100), 100);
        // 1000 nodes: 50 - 8 = 42% → 420.
        assert_eq!(num_feasible_nodes_to_find(None, 1000), 420);
        // 5000 nodes: 50 - 40 = 10% → 500.
        assert_eq!(num_feasible_nodes_to_find(None, 5000), 500);
        // 6000 nodes: 50 - 48 = 2% → floor 5% → 300.
        assert_eq!(num_feasible_nodes_to_find(None, 6000), 300);
        assert_eq!(num_feasible_nodes_to_find(Some(100), 1000), 1000);
        assert_eq!(num_feasible_nodes_to_find(Some(1), 1000), 100);
    }

    fn cluster(n: usize) -> Snapshot {
        Snapshot::from_nodes((0..n).map(|i| NodeBuilder::new(&format!("n{i:04}")).info()).collect())
    }

    #[test]
    fn stops_filtering_once_enough_nodes_fit_and_rotates() {
        let fwk = default_framework_without_binder(None);
        let snapshot = cluster(1000);
        let pod = PodBuilder::new("p").container_req(&[("cpu", "100m")]).info();
        let mut start = 0;
        let r = schedule_pod(&fwk, &mut CycleState::new(), &pod, &snapshot, &NominatedPods::default(), &mut start).unwrap();
        assert_eq!(r.feasible_nodes, 420);
        assert_eq!(r.evaluated_nodes, 420);
        assert_eq!(start, 420);
        let r = schedule_pod(&fwk, &mut CycleState::new(), &pod, &snapshot, &NominatedPods::default(), &mut start).unwrap();
        assert_eq!(r.feasible_nodes, 420);
        assert_eq!(start, 840);
        schedule_pod(&fwk, &mut CycleState::new(), &pod, &snapshot, &NominatedPods::default(), &mut start).unwrap();
        assert_eq!(start, (840 + 420) % 1000);
    }

    #[test]
    fn fit_error_aggregates_reasons() {
        let fwk = default_framework_without_binder(None);
        let full = |name: &str| {
            let p = PodBuilder::new(&format!("{name}-x")).node(name).container_req(&[("cpu", "2")]).info();
            NodeBuilder::new(name).allocatable(&[("cpu", "2"), ("memory", "4Gi"), ("pods", "10")]).with_pods(&[p])
        };
        let snapshot = Snapshot::from_nodes(vec![full("a"), full("b"), NodeBuilder::new("c").taint("gpu", "true", "NoSchedule").info()]);
        let pod = PodBuilder::new("p").container_req(&[("cpu", "1")]).info();
        let mut start = 0;
        match schedule_pod(&fwk, &mut CycleState::new(), &pod, &snapshot, &NominatedPods::default(), &mut start) {
            Err(ScheduleError::Fit(fe)) => {
                assert_eq!(fe.to_string(), "0/3 nodes are available: 1 node(s) had untolerated taint {gpu: true}, 2 Insufficient cpu.");
                assert_eq!(fe.diagnosis.unschedulable_plugins, ["NodeResourcesFit", "TaintToleration"].into());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_nodes() {
        let fwk = default_framework_without_binder(None);
        let pod = PodBuilder::new("p").info();
        let r = schedule_pod(&fwk, &mut CycleState::new(), &pod, &Snapshot::default(), &NominatedPods::default(), &mut 0);
        assert!(matches!(r, Err(ScheduleError::NoNodesAvailable)));
    }

    #[test]
    fn picks_least_allocated_node() {
        let fwk = default_framework_without_binder(None);
        let busy = PodBuilder::new("b").node("busy").container_req(&[("cpu", "3"), ("memory", "6Gi")]).info();
        let snapshot = Snapshot::from_nodes(vec![NodeBuilder::new("busy").with_pods(&[busy]), NodeBuilder::new("idle").info()]);
        let pod = PodBuilder::new("p").container_req(&[("cpu", "500m"), ("memory", "1Gi")]).info();
        for _ in 0..10 {
            let r = schedule_pod(&fwk, &mut CycleState::new(), &pod, &snapshot, &NominatedPods::default(), &mut 0).unwrap();
            assert_eq!(r.suggested_host, "idle");
        }
    }

    #[test]
    fn taint_toleration_weight_beats_resources() {
        // idle has a PreferNoSchedule taint (score 0×3 vs 100×3), busy is fuller.
        let fwk = default_framework_without_binder(None);
        let busy = PodBuilder::new("b").node("busy").container_req(&[("cpu", "1"), ("memory", "2Gi")]).info();
        let snapshot = Snapshot::from_nodes(vec![NodeBuilder::new("busy").with_pods(&[busy]), NodeBuilder::new("idle").taint("soft", "x", "PreferNoSchedule").info()]);
        let pod = PodBuilder::new("p").container_req(&[("cpu", "500m"), ("memory", "1Gi")]).info();
        let r = schedule_pod(&fwk, &mut CycleState::new(), &pod, &snapshot, &NominatedPods::default(), &mut 0).unwrap();
        assert_eq!(r.suggested_host, "busy");
    }

    #[test]
    fn nominated_pods_of_higher_priority_reserve_room() {
        let fwk = default_framework_without_binder(None);
        let snapshot = Snapshot::from_nodes(vec![NodeBuilder::new("n").allocatable(&[("cpu", "2"), ("memory", "4Gi"), ("pods", "10")]).info()]);
        let mut nominated = NominatedPods::default();
        nominated.by_node.insert("n".into(), vec![PodBuilder::new("vip").priority(100).container_req(&[("cpu", "2")]).info()]);
        let low = PodBuilder::new("low").priority(0).container_req(&[("cpu", "1")]).info();
        match schedule_pod(&fwk, &mut CycleState::new(), &low, &snapshot, &nominated, &mut 0) {
            Err(ScheduleError::Fit(fe)) => assert_eq!(fe.to_string(), "0/1 nodes are available: 1 Insufficient cpu."),
            other => panic!("{other:?}"),
        }
        // A higher-priority pod ignores lower-priority nominations.
        let high = PodBuilder::new("high").priority(1000).container_req(&[("cpu", "1")]).info();
        assert!(schedule_pod(&fwk, &mut CycleState::new(), &high, &snapshot, &nominated, &mut 0).is_ok());
    }

    #[test]
    fn prefilter_rejection_message() {
        let fwk = default_framework_without_binder(None);
        let snapshot = cluster(2);
        let mut v = PodBuilder::new("p").json();
        v["spec"]["affinity"] = serde_json::json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["x"]}, {"key": "metadata.name", "operator": "In", "values": ["y"]}]}
        ]}}});
        let pod = PodInfo::from_pod(serde_json::from_value(v).unwrap());
        match schedule_pod(&fwk, &mut CycleState::new(), &pod, &snapshot, &NominatedPods::default(), &mut 0) {
            Err(ScheduleError::Fit(fe)) => assert_eq!(fe.to_string(), "0/2 nodes are available: pod affinity terms conflict."),
            other => panic!("{other:?}"),
        }
    }
}
