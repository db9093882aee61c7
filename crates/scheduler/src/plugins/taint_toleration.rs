//! TaintToleration: a node's NoSchedule/NoExecute taints must be tolerated
//! (Filter); fewer untolerated PreferNoSchedule taints score higher.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Toleration;

use crate::framework::{
    action, default_normalize_score, ClusterEvent, CycleState, EventResource, FilterPlugin, NodeInfo, NodeScore, Plugin, PodInfo, PreScorePlugin,
    ScorePlugin, Snapshot, Status, MAX_NODE_SCORE,
};
use crate::helpers;

pub const NAME: &str = "TaintToleration";
const PRE_SCORE_KEY: &str = "PreScoreTaintToleration";

#[derive(Debug, Default)]
pub struct TaintToleration;

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(EventResource::Node, action::ADD | action::UPDATE_NODE_TAINT, "Node"),
            ClusterEvent::new(EventResource::UnscheduledPod, action::UPDATE_POD_TOLERATIONS, "UnscheduledPodUpdate"),
        ]
    }
}

impl FilterPlugin for TaintToleration {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let taints = node.taints();
        let filter = |t: &k8s_openapi::api::core::v1::Taint| t.effect == "NoSchedule" || t.effect == "NoExecute";
        match helpers::find_matching_untolerated_taint(taints, helpers::pod_tolerations(&pod.pod), filter) {
            None => Status::success(),
            Some(t) => Status::unresolvable(format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or(""))),
        }
    }
}

#[derive(Clone)]
struct PreScoreState {
    tolerations_prefer_no_schedule: Vec<Toleration>,
}

impl PreScorePlugin for TaintToleration {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, nodes: &[Arc<NodeInfo>], _snapshot: &Snapshot) -> Status {
        if nodes.is_empty() {
            return Status::skip();
        }
        let tolerations = helpers::pod_tolerations(&pod.pod)
            .iter()
            .filter(|t| matches!(t.effect.as_deref().unwrap_or(""), "" | "PreferNoSchedule"))
            .cloned()
            .collect();
        state.write(PRE_SCORE_KEY, PreScoreState { tolerations_prefer_no_schedule: tolerations });
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    /// The number of PreferNoSchedule taints the pod does not tolerate.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let owned;
        let tolerations: &[Toleration] = match state.read::<PreScoreState>(PRE_SCORE_KEY) {
            Some(s) => &s.tolerations_prefer_no_schedule,
            None => {
                owned = helpers::pod_tolerations(&pod.pod).iter().filter(|t| matches!(t.effect.as_deref().unwrap_or(""), "" | "PreferNoSchedule")).cloned().collect::<Vec<_>>();
                &owned
            }
        };
        let count = node.taints()
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule" && !helpers::tolerations_tolerate_taint(tolerations, t))
            .count();
        Ok(count as i64)
    }

    fn normalize_score(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        default_normalize_score(MAX_NODE_SCORE, true, scores);
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::{NodeBuilder, PodBuilder};

    #[test]
    fn filter_rejects_untolerated_no_schedule_and_no_execute() {
        let s = CycleState::new();
        let node = NodeBuilder::new("n").taint("dedicated", "gpu", "NoSchedule").info();
        let st = TaintToleration.filter(&s, &PodBuilder::new("p").info(), &node);
        assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(st.reasons, vec!["node(s) had untolerated taint {dedicated: gpu}"]);

        let tolerating = PodBuilder::new("p").toleration("dedicated", "Equal", "gpu", "NoSchedule").info();
        assert!(TaintToleration.filter(&s, &tolerating, &node).is_success());
        let wrong_value = PodBuilder::new("p").toleration("dedicated", "Equal", "cpu", "NoSchedule").info();
        assert!(!TaintToleration.filter(&s, &wrong_value, &node).is_success());

        let no_exec = NodeBuilder::new("n").taint("maint", "", "NoExecute").info();
        let st = TaintToleration.filter(&s, &PodBuilder::new("p").info(), &no_exec);
        assert_eq!(st.reasons, vec!["node(s) had untolerated taint {maint: }"]);
        let exists = PodBuilder::new("p").toleration("maint", "Exists", "", "").info();
        assert!(TaintToleration.filter(&s, &exists, &no_exec).is_success());

        // PreferNoSchedule never filters.
        let soft = NodeBuilder::new("n").taint("soft", "x", "PreferNoSchedule").info();
        assert!(TaintToleration.filter(&s, &PodBuilder::new("p").info(), &soft).is_success());
    }

    #[test]
    fn score_prefers_fewer_untolerated_prefer_no_schedule_taints() {
        let nodes: Vec<Arc<NodeInfo>> = vec![
            Arc::new(NodeBuilder::new("clean").info()),
            Arc::new(NodeBuilder::new("one").taint("a", "1", "PreferNoSchedule").info()),
            Arc::new(NodeBuilder::new("two").taint("a", "1", "PreferNoSchedule").taint("b", "1", "PreferNoSchedule").info()),
            Arc::new(NodeBuilder::new("tolerated").taint("c", "1", "PreferNoSchedule").info()),
        ];
        let pod = PodBuilder::new("p").toleration("c", "Exists", "", "PreferNoSchedule").info();
        let mut state = CycleState::new();
        assert!(TaintToleration.pre_score(&mut state, &pod, &nodes, &Snapshot::default()).is_success());
        let mut scores: Vec<NodeScore> = nodes.iter().enumerate().map(|(index, n)| NodeScore { index, score: TaintToleration.score(&state, &pod, n).unwrap() }).collect();
        TaintToleration.normalize_score(&state, &pod, &mut scores);
        let got: Vec<i64> = scores.iter().map(|s| s.score).collect();
        assert_eq!(got, vec![100, 50, 0, 100]);
    }
}
