//! DefaultPreemption (PostFilter): when no node fits, find a node where
//! removing lower-priority pods lets the pod fit — fewest PDB violations,
//! lowest highest-victim priority, lowest priority sum, fewest victims,
//! latest start — and nominate it. The scheduler then deletes the victims
//! and patches `status.nominatedNodeName`.
//!
//! PodDisruptionBudgets are not consulted (every victim counts as
//! non-violating).

use std::sync::Arc;

use rand::Rng;

use crate::framework::{
    CycleState, Diagnosis, FitError, NodeInfo, NodeToStatus, Plugin, PodInfo, PostFilterContext, PostFilterPlugin, PostFilterResult, Status,
};
use crate::framework::Code;
use crate::helpers;

pub const NAME: &str = "DefaultPreemption";
pub const MSG_NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const MSG_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

#[derive(Debug)]
pub struct DefaultPreemption {
    /// Upstream's `minCandidateNodesPercentage` (10).
    pub min_candidate_nodes_percentage: usize,
    /// Upstream's `minCandidateNodesAbsolute` (100).
    pub min_candidate_nodes_absolute: usize,
    /// Start the dry run at a random node (upstream); tests turn it off.
    pub random_offset: bool,
}

impl Default for DefaultPreemption {
    fn default() -> Self {
        DefaultPreemption { min_candidate_nodes_percentage: 10, min_candidate_nodes_absolute: 100, random_offset: true }
    }
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// A node where preemption works, with its victims (most important first).
#[derive(Clone, Debug)]
pub struct Candidate {
    pub name: String,
    pub victims: Vec<Arc<PodInfo>>,
    pub num_pdb_violations: i64,
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(&self, ctx: &PostFilterContext<'_>, state: &CycleState, pod: &PodInfo, statuses: &NodeToStatus) -> (Option<PostFilterResult>, Status) {
        let (r, s) = self.preempt(ctx, state, pod, statuses);
        let msg = s.message();
        if msg.is_empty() {
            (r, s)
        } else {
            (r, Status::new(s.code, format!("preemption: {msg}")))
        }
    }
}

impl DefaultPreemption {
    pub fn preempt(&self, ctx: &PostFilterContext<'_>, state: &CycleState, pod: &PodInfo, statuses: &NodeToStatus) -> (Option<PostFilterResult>, Status) {
        // 1) Is the pod eligible to preempt?
        let nominated = helpers::nominated_node_name(&pod.pod);
        if let Err(msg) = self.pod_eligible_to_preempt_others(ctx, pod, if nominated.is_empty() { None } else { Some(statuses.get(nominated)) }) {
            return (None, Status::unschedulable(msg));
        }
        // 2) Candidates.
        let (candidates, node_statuses) = self.find_candidates(ctx, state, pod, statuses);
        if candidates.is_empty() {
            let mut d = Diagnosis { node_to_status: node_statuses, ..Default::default() };
            d.node_to_status.absent_status = Status::unresolvable(MSG_NOT_HELPFUL);
            let fit = FitError { num_all_nodes: ctx.snapshot.num_nodes(), diagnosis: d };
            return (Some(PostFilterResult { nominated_node_name: Some(String::new()), ..Default::default() }), Status::unschedulable(fit.to_string()));
        }
        // 3) The best candidate.
        let best = select_candidate(&candidates);
        // 4) Lower-priority pods nominated to that node lose their nomination.
        let to_clear: Vec<Arc<PodInfo>> = ctx.nominated.for_node(&best.name).iter().filter(|p| p.uid != pod.uid && p.priority < pod.priority).cloned().collect();
        (
            Some(PostFilterResult { nominated_node_name: Some(best.name.clone()), victims: best.victims.clone(), nominations_to_clear: to_clear }),
            Status::success(),
        )
    }

    /// Upstream's `PodEligibleToPreemptOthers`.
    fn pod_eligible_to_preempt_others(&self, ctx: &PostFilterContext<'_>, pod: &PodInfo, nominated_status: Option<&Status>) -> Result<(), String> {
        if pod.pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
            return Err("not eligible due to preemptionPolicy=Never.".into());
        }
        let nominated = helpers::nominated_node_name(&pod.pod);
        if !nominated.is_empty() {
            // The nominated node became unresolvable: preempt again.
            if nominated_status.map(|s| s.code == Code::UnschedulableAndUnresolvable).unwrap_or(false) {
                return Ok(());
            }
            if let Some(ni) = ctx.snapshot.get(nominated)
                && ni.pods.iter().any(|p| p.priority < pod.priority && helpers::terminating_by_preemption(&p.pod)) {
                    return Err("not eligible due to a terminating pod on the nominated node.".into());
                }
        }
        Ok(())
    }

    fn num_candidates(&self, num_nodes: usize) -> usize {
        let n = (num_nodes * self.min_candidate_nodes_percentage / 100).max(self.min_candidate_nodes_absolute);
        n.min(num_nodes)
    }

    /// Nodes where preemption might help, dry-run: the candidates and the
    /// statuses of the nodes that are not.
    pub fn find_candidates(&self, ctx: &PostFilterContext<'_>, state: &CycleState, pod: &PodInfo, statuses: &NodeToStatus) -> (Vec<Candidate>, NodeToStatus) {
        let mut unresolvable = NodeToStatus::default();
        let mut potential: Vec<&Arc<NodeInfo>> = Vec::new();
        for ni in &ctx.snapshot.node_infos {
            if statuses.get(ni.name()).code == Code::UnschedulableAndUnresolvable {
                unresolvable.set(ni.name(), Status::unresolvable(MSG_NOT_HELPFUL));
            } else {
                potential.push(ni);
            }
        }
        if potential.is_empty() {
            return (Vec::new(), unresolvable);
        }
        let num_candidates = self.num_candidates(potential.len());
        let offset = if self.random_offset { rand::rng().random_range(0..potential.len()) } else { 0 };
        let mut node_statuses = NodeToStatus::default();
        let mut non_violating = Vec::new();
        let mut violating = Vec::new();
        for i in 0..potential.len() {
            let ni = potential[(offset + i) % potential.len()];
            let mut node_copy = (**ni).clone();
            let mut state_copy = state.clone();
            let (victims, num_violating, status) = self.select_victims_on_node(ctx, &mut state_copy, pod, &mut node_copy);
            if status.is_success() && !victims.is_empty() {
                let c = Candidate { name: ni.name().to_string(), victims, num_pdb_violations: num_violating };
                if num_violating == 0 {
                    non_violating.push(c);
                } else {
                    violating.push(c);
                }
                if !non_violating.is_empty() && non_violating.len() + violating.len() >= num_candidates {
                    break;
                }
                continue;
            }
            let status = if status.is_success() { Status::error(format!("expected at least one victim pod on node {:?}", ni.name())) } else { status };
            node_statuses.set(ni.name(), status);
        }
        non_violating.extend(violating);
        (non_violating, node_statuses)
    }

    /// Upstream's `SelectVictimsOnNode`: remove every lower-priority pod; if
    /// the pod then fits, reprieve victims (most important first) while it
    /// still fits.
    pub fn select_victims_on_node(&self, ctx: &PostFilterContext<'_>, state: &mut CycleState, pod: &PodInfo, node: &mut NodeInfo) -> (Vec<Arc<PodInfo>>, i64, Status) {
        let fwk = ctx.framework;
        let mut potential: Vec<Arc<PodInfo>> = node.pods.iter().filter(|p| p.priority < pod.priority).cloned().collect();
        for p in &potential {
            node.remove_pod(&p.uid);
            let s = fwk.run_pre_filter_remove_pod(state, pod, p, node);
            if !s.is_success() {
                return (Vec::new(), 0, s);
            }
        }
        if potential.is_empty() {
            return (Vec::new(), 0, Status::unresolvable(MSG_NO_VICTIMS));
        }
        let s = fwk.run_filter_with_nominated(state, pod, node, ctx.nominated);
        if !s.is_success() {
            return (Vec::new(), 0, s);
        }
        potential.sort_by(|a, b| {
            if helpers::more_important_pod(&a.pod, &b.pod) {
                std::cmp::Ordering::Less
            } else if helpers::more_important_pod(&b.pod, &a.pod) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        let mut victims = Vec::new();
        for p in potential {
            node.add_pod(p.clone());
            let s = fwk.run_pre_filter_add_pod(state, pod, &p, node);
            if !s.is_success() {
                return (Vec::new(), 0, s);
            }
            let fits = fwk.run_filter_with_nominated(state, pod, node, ctx.nominated).is_success();
            if !fits {
                node.remove_pod(&p.uid);
                let s = fwk.run_pre_filter_remove_pod(state, pod, &p, node);
                if !s.is_success() {
                    return (Vec::new(), 0, s);
                }
                victims.push(p);
            }
        }
        (victims, 0, Status::success())
    }
}

/// Upstream's `pickOneNodeForPreemption`.
pub fn select_candidate(candidates: &[Candidate]) -> &Candidate {
    let now = jiff::Timestamp::now();
    let earliest_start_of_highest = |c: &Candidate| -> i128 {
        let Some(first) = c.victims.first() else { return i128::MIN };
        let highest = first.priority;
        c.victims
            .iter()
            .filter(|v| v.priority == highest)
            .map(|v| helpers::pod_start_time(&v.pod).unwrap_or(now).as_nanosecond())
            .min()
            .unwrap_or(i128::MIN)
    };
    let score_fns: [&dyn Fn(&Candidate) -> i128; 5] = [
        &|c| -i128::from(c.num_pdb_violations),
        &|c| -i128::from(c.victims.first().map(|v| v.priority).unwrap_or(0)),
        &|c| -c.victims.iter().map(|v| i128::from(v.priority) + i128::from(i32::MAX) + 1).sum::<i128>(),
        &|c| -(c.victims.len() as i128),
        &earliest_start_of_highest,
    ];
    let mut all: Vec<&Candidate> = candidates.iter().collect();
    for f in score_fns {
        let mut selected = Vec::new();
        let mut max = i128::MIN;
        for c in &all {
            let s = f(c);
            if s > max {
                max = s;
                selected.clear();
            }
            if s == max {
                selected.push(*c);
            }
        }
        if selected.len() == 1 {
            return selected[0];
        }
        all = selected;
    }
    all[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm;
    use crate::framework::{NominatedPods, Snapshot};
    use crate::plugins::default_framework_without_binder;
    use crate::testing::{NodeBuilder, PodBuilder};

    fn node_2cpu(name: &str, pods: &[Arc<PodInfo>]) -> NodeInfo {
        NodeBuilder::new(name).allocatable(&[("cpu", "2"), ("memory", "4Gi"), ("pods", "10")]).with_pods(pods)
    }

    fn cpu_pod(name: &str, node: &str, cpu: &str, prio: i32) -> Arc<PodInfo> {
        PodBuilder::new(name).node(node).priority(prio).container_req(&[("cpu", cpu)]).info()
    }

    /// Runs the scheduling algorithm and, on a fit error, PostFilter.
    fn run(snapshot: &Snapshot, pod: &Arc<PodInfo>) -> (Option<PostFilterResult>, Status) {
        let fwk = default_framework_without_binder(None);
        let nominated = NominatedPods::default();
        let mut state = CycleState::new();
        let mut start = 0;
        match algorithm::schedule_pod(&fwk, &mut state, pod, snapshot, &nominated, &mut start) {
            Err(algorithm::ScheduleError::Fit(fe)) => fwk.run_post_filter(snapshot, &nominated, &state, pod, &fe.diagnosis.node_to_status),
            other => panic!("expected a fit error, got {other:?}"),
        }
    }

    #[test]
    fn preempts_lowest_priority_on_the_cheapest_node() {
        let snapshot = Snapshot::from_nodes(vec![
            node_2cpu("n1", &[cpu_pod("a", "n1", "2", 10)]),
            node_2cpu("n2", &[cpu_pod("b", "n2", "1", 5), cpu_pod("c", "n2", "1", 5)]),
            node_2cpu("n3", &[cpu_pod("d", "n3", "1", 1), cpu_pod("e", "n3", "1", 100)]),
        ]);
        let pod = PodBuilder::new("p").priority(50).container_req(&[("cpu", "1")]).info();
        let (r, s) = run(&snapshot, &pod);
        assert!(s.is_success(), "{s}");
        let r = r.unwrap();
        // n3 needs one victim of priority 1; n2 one of priority 5; n1 one of 10.
        assert_eq!(r.nominated_node_name.as_deref(), Some("n3"));
        assert_eq!(r.victims.iter().map(|v| v.pod.metadata.name.clone().unwrap()).collect::<Vec<_>>(), vec!["d"]);
    }

    #[test]
    fn fewest_victims_and_reprieve() {
        let snapshot = Snapshot::from_nodes(vec![
            node_2cpu("n1", &[cpu_pod("a", "n1", "500m", 1), cpu_pod("b", "n1", "500m", 1), cpu_pod("c", "n1", "1", 1)]),
            node_2cpu("n2", &[cpu_pod("d", "n2", "1", 1), cpu_pod("e", "n2", "1", 1)]),
        ]);
        let pod = PodBuilder::new("p").priority(50).container_req(&[("cpu", "1")]).info();
        let (r, s) = run(&snapshot, &pod);
        assert!(s.is_success(), "{s}");
        let r = r.unwrap();
        // Same highest priority; n1's minimal victim set is {c} (1 pod,
        // sum equal to n2's single victim) — ties on every criterion pick
        // either; both need exactly one victim.
        assert_eq!(r.victims.len(), 1);
    }

    #[test]
    fn no_victims_message() {
        let snapshot = Snapshot::from_nodes(vec![
            node_2cpu("n1", &[cpu_pod("a", "n1", "2", 100)]),
            node_2cpu("n2", &[cpu_pod("b", "n2", "2", 100)]),
            node_2cpu("n3", &[cpu_pod("c", "n3", "2", 100)]),
        ]);
        let pod = PodBuilder::new("p").priority(0).container_req(&[("cpu", "1")]).info();
        let (r, s) = run(&snapshot, &pod);
        assert_eq!(s.code, Code::Unschedulable);
        assert_eq!(s.message(), "preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.");
        assert_eq!(r.unwrap().nominated_node_name.as_deref(), Some(""));
    }

    #[test]
    fn unresolvable_nodes_are_not_helpful() {
        let snapshot = Snapshot::from_nodes(vec![
            NodeBuilder::new("t1").taint("k", "v", "NoSchedule").info(),
            node_2cpu("n1", &[cpu_pod("a", "n1", "2", 100)]),
        ]);
        let pod = PodBuilder::new("p").priority(10).container_req(&[("cpu", "1")]).info();
        let (_, s) = run(&snapshot, &pod);
        assert_eq!(s.message(), "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling.");
    }

    #[test]
    fn victims_not_enough_reports_filter_reason() {
        // Removing the low-priority pod still leaves too little cpu.
        let snapshot = Snapshot::from_nodes(vec![node_2cpu("n1", &[cpu_pod("a", "n1", "1500m", 100), cpu_pod("b", "n1", "500m", 0)])]);
        let pod = PodBuilder::new("p").priority(10).container_req(&[("cpu", "1")]).info();
        let (_, s) = run(&snapshot, &pod);
        assert_eq!(s.message(), "preemption: 0/1 nodes are available: 1 Insufficient cpu.");
    }

    #[test]
    fn preemption_policy_never() {
        let snapshot = Snapshot::from_nodes(vec![node_2cpu("n1", &[cpu_pod("a", "n1", "2", 0)])]);
        let pod = PodBuilder::new("p").priority(10).preemption_policy("Never").container_req(&[("cpu", "1")]).info();
        let (r, s) = run(&snapshot, &pod);
        assert!(r.is_none());
        assert_eq!(s.message(), "preemption: not eligible due to preemptionPolicy=Never.");
    }

    #[test]
    fn waits_for_terminating_victims_on_nominated_node() {
        let snapshot = Snapshot::from_nodes(vec![node_2cpu("n1", &[PodBuilder::new("a").node("n1").priority(0).container_req(&[("cpu", "2")]).preempted().info()])]);
        let pod = PodBuilder::new("p").priority(10).nominated("n1").container_req(&[("cpu", "1")]).info();
        let (_, s) = run(&snapshot, &pod);
        assert_eq!(s.message(), "preemption: not eligible due to a terminating pod on the nominated node.");
    }

    #[test]
    fn pick_one_node_criteria() {
        let v = |name: &str, prio: i32, start: Option<&str>| {
            let mut b = PodBuilder::new(name).priority(prio);
            if let Some(s) = start {
                b = b.start_time(s);
            }
            b.info()
        };
        let c = |name: &str, victims: Vec<Arc<PodInfo>>| Candidate { name: name.into(), victims, num_pdb_violations: 0 };
        // Lowest highest priority wins.
        let cs = vec![c("a", vec![v("1", 10, None)]), c("b", vec![v("2", 5, None), v("3", 5, None)])];
        assert_eq!(select_candidate(&cs).name, "b");
        // Then the lowest sum.
        let cs = vec![c("a", vec![v("1", 5, None), v("2", 5, None)]), c("b", vec![v("3", 5, None), v("4", 1, None)])];
        assert_eq!(select_candidate(&cs).name, "b");
        // Then fewest pods (sum with offsets makes fewer pods smaller).
        let cs = vec![c("a", vec![v("1", 5, None), v("2", 0, None)]), c("b", vec![v("3", 5, None)])];
        assert_eq!(select_candidate(&cs).name, "b");
        // Then the latest start time of the highest-priority victims.
        let cs = vec![c("a", vec![v("1", 5, Some("2024-01-01T00:00:00Z"))]), c("b", vec![v("2", 5, Some("2024-06-01T00:00:00Z"))])];
        assert_eq!(select_candidate(&cs).name, "b");
        // PDB violations first.
        let mut x = c("a", vec![v("1", 0, None)]);
        x.num_pdb_violations = 1;
        let cs = vec![x, c("b", vec![v("2", 100, None)])];
        assert_eq!(select_candidate(&cs).name, "b");
    }
}
