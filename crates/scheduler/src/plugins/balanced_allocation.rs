//! NodeResourcesBalancedAllocation: prefers nodes whose cpu and memory
//! utilization (with the pod) are close to each other.

use std::sync::Arc;

use super::node_resources_fit::{default_resources, pod_request_list, with_resource_vectors, ResourceSpec};
use crate::framework::{CycleState, NodeInfo, Plugin, PodInfo, PreScorePlugin, ScorePlugin, Snapshot, Status, MAX_NODE_SCORE};

pub const NAME: &str = "NodeResourcesBalancedAllocation";
const PRE_SCORE_KEY: &str = "PreScoreNodeResourcesBalancedAllocation";

#[derive(Debug)]
pub struct BalancedAllocation {
    pub resources: Vec<ResourceSpec>,
}

impl Default for BalancedAllocation {
    fn default() -> Self {
        BalancedAllocation { resources: default_resources() }
    }
}

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }
}

#[derive(Clone)]
struct PreScoreState {
    pod_requests: Vec<i64>,
}

impl PreScorePlugin for BalancedAllocation {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, _nodes: &[Arc<NodeInfo>], _snapshot: &Snapshot) -> Status {
        let reqs = pod_request_list(pod, &self.resources, true);
        if reqs.iter().all(|r| *r == 0) {
            // A best-effort pod does not change any node's balance.
            return Status::skip();
        }
        state.write(PRE_SCORE_KEY, PreScoreState { pod_requests: reqs });
        Status::success()
    }
}

/// Upstream's `balancedResourceScorer`: (1 - std of the utilization
/// fractions) × 100.
pub fn balanced_resource_score(requested: &[i64], allocatable: &[i64]) -> i64 {
    // Two passes over the inputs instead of a vector of fractions: this
    // runs for every scored node of every cycle.
    let fractions = || {
        (0..requested.len()).filter(|&i| allocatable[i] != 0).map(|i| (requested[i] as f64 / allocatable[i] as f64).min(1.0))
    };
    let (mut n, mut total, mut first_two) = (0usize, 0.0, [0.0; 2]);
    for f in fractions() {
        if n < 2 {
            first_two[n] = f;
        }
        n += 1;
        total += f;
    }
    let std = match n {
        2 => ((first_two[0] - first_two[1]) / 2.0).abs(),
        n if n > 2 => {
            let mean = total / n as f64;
            (fractions().map(|f| (f - mean) * (f - mean)).sum::<f64>() / n as f64).sqrt()
        }
        _ => 0.0,
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

impl ScorePlugin for BalancedAllocation {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let computed;
        let reqs = match state.read::<PreScoreState>(PRE_SCORE_KEY) {
            Some(s) => &s.pod_requests,
            None => {
                computed = pod_request_list(pod, &self.resources, true);
                &computed
            }
        };
        Ok(with_resource_vectors(node, &self.resources, reqs, true, balanced_resource_score))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{NodeBuilder, PodBuilder};

    #[test]
    fn prefers_balanced_utilization() {
        let plugin = BalancedAllocation::default();
        // Node a already uses lots of cpu, node b lots of memory: a pod
        // heavy on memory balances a better.
        let cpu_heavy = PodBuilder::new("x").node("a").container_req(&[("cpu", "3"), ("memory", "1Gi")]).info();
        let mem_heavy = PodBuilder::new("y").node("b").container_req(&[("cpu", "1"), ("memory", "6Gi")]).info();
        let a = Arc::new(NodeBuilder::new("a").with_pods(&[cpu_heavy]));
        let b = Arc::new(NodeBuilder::new("b").with_pods(&[mem_heavy]));
        let pod = PodBuilder::new("p").container_req(&[("cpu", "100m"), ("memory", "4Gi")]).info();
        let mut state = CycleState::new();
        assert!(plugin.pre_score(&mut state, &pod, &[a.clone(), b.clone()], &Snapshot::default()).is_success());
        let sa = plugin.score(&state, &pod, &a).unwrap();
        let sb = plugin.score(&state, &pod, &b).unwrap();
        // a: cpu 3.1/4 = .775, mem 5/8 = .625 → 1 - .075 = 92; b: cpu 1.1/4=.275, mem 1.0 → 1 - .3625 = 63.
        assert_eq!((sa, sb), (92, 63));
    }

    #[test]
    fn best_effort_pods_skip() {
        let mut state = CycleState::new();
        let pod = PodBuilder::new("p").container().info();
        assert!(BalancedAllocation::default().pre_score(&mut state, &pod, &[], &Snapshot::default()).is_skip());
    }

    #[test]
    fn scorer_math() {
        assert_eq!(balanced_resource_score(&[5, 5], &[10, 10]), 100);
        assert_eq!(balanced_resource_score(&[10, 0], &[10, 10]), 50);
        assert_eq!(balanced_resource_score(&[20, 0], &[10, 10]), 50); // fractions capped at 1
        assert_eq!(balanced_resource_score(&[1, 0], &[10, 0]), 100); // one resource: std 0
    }
}
