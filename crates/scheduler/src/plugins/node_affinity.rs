//! NodeAffinity: `spec.nodeSelector` and required node affinity terms must
//! match (PreFilter + Filter); matching preferred terms add their weights
//! (PreScore + Score, normalized to 0..100).

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PreferredSchedulingTerm;

use crate::framework::{
    action, default_normalize_score, ClusterEvent, CycleState, EventResource, FilterPlugin, NodeInfo, NodeScore, Plugin, PodInfo, PreFilterPlugin,
    PreFilterResult, PreScorePlugin, ScorePlugin, Snapshot, Status, MAX_NODE_SCORE,
};
use crate::helpers::{self, RequiredNodeAffinity};

pub const NAME: &str = "NodeAffinity";
pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";
pub const ERR_REASON_CONFLICT: &str = "pod affinity terms conflict";
const PRE_FILTER_KEY: &str = "PreFilterNodeAffinity";
const PRE_SCORE_KEY: &str = "PreScoreNodeAffinity";

#[derive(Debug, Default)]
pub struct NodeAffinity;

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![ClusterEvent::new(EventResource::Node, action::ADD | action::UPDATE_NODE_LABEL, "Node")]
    }
}

#[derive(Clone)]
struct PreFilterState {
    required: RequiredNodeAffinity,
}

fn required_terms(pod: &PodInfo) -> Option<&Vec<k8s_openapi::api::core::v1::NodeSelectorTerm>> {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|ns| &ns.node_selector_terms)
}

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, _snapshot: &Snapshot) -> (Option<PreFilterResult>, Status) {
        let terms = required_terms(pod);
        let has_selector = pod.pod.spec.as_ref().and_then(|s| s.node_selector.as_ref()).is_some();
        if terms.is_none() && !has_selector {
            return (None, Status::skip());
        }
        state.write(PRE_FILTER_KEY, PreFilterState { required: RequiredNodeAffinity::from_pod(&pod.pod) });
        let Some(terms) = terms.filter(|t| !t.is_empty()) else { return (None, Status::success()) };
        // Affinity to specific nodes by metadata.name narrows the node set.
        let mut node_names: Option<BTreeSet<String>> = None;
        for t in terms {
            let mut term_names: Option<BTreeSet<String>> = None;
            for r in t.match_fields.iter().flatten() {
                if r.key == "metadata.name" && r.operator == "In" {
                    let s: BTreeSet<String> = r.values.iter().flatten().cloned().collect();
                    term_names = Some(match term_names {
                        None => s,
                        Some(prev) => prev.intersection(&s).cloned().collect(),
                    });
                }
            }
            let Some(term_names) = term_names else {
                // A term without a node name: every node is eligible (terms are ORed).
                return (None, Status::success());
            };
            node_names.get_or_insert_with(BTreeSet::new).extend(term_names);
        }
        match node_names {
            Some(n) if n.is_empty() => (None, Status::unresolvable(ERR_REASON_CONFLICT)),
            Some(n) => (Some(PreFilterResult { node_names: Some(n) }), Status::success()),
            None => (None, Status::success()),
        }
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let fallback;
        let required = match state.read::<PreFilterState>(PRE_FILTER_KEY) {
            Some(s) => &s.required,
            None => {
                fallback = RequiredNodeAffinity::from_pod(&pod.pod);
                &fallback
            }
        };
        if required.matches(node.node()) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_POD)
        }
    }
}

#[derive(Clone)]
struct PreScoreState {
    preferred: Vec<PreferredSchedulingTerm>,
}

fn preferred_terms(pod: &PodInfo) -> Vec<PreferredSchedulingTerm> {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.weight != 0)
        .collect()
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, nodes: &[Arc<NodeInfo>], _snapshot: &Snapshot) -> Status {
        if nodes.is_empty() {
            return Status::success();
        }
        let preferred = preferred_terms(pod);
        if preferred.is_empty() {
            return Status::skip();
        }
        state.write(PRE_SCORE_KEY, PreScoreState { preferred });
        Status::success()
    }
}

impl ScorePlugin for NodeAffinity {
    /// The sum of the weights of the preferred terms the node matches.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let owned;
        let preferred = match state.read::<PreScoreState>(PRE_SCORE_KEY) {
            Some(s) => &s.preferred,
            None => {
                owned = preferred_terms(pod);
                &owned
            }
        };
        let n = node.node();
        let labels = helpers::node_labels(n);
        let name = n.metadata.name.as_deref().unwrap_or("");
        Ok(preferred.iter().filter(|t| helpers::node_selector_term_matches(&t.preference, labels, name)).map(|t| i64::from(t.weight)).sum())
    }

    fn normalize_score(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        default_normalize_score(MAX_NODE_SCORE, false, scores);
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::{NodeBuilder, PodBuilder};

    fn run_filter(pod: &PodInfo, node: &NodeInfo) -> Status {
        let mut state = CycleState::new();
        let (_, s) = NodeAffinity.pre_filter(&mut state, pod, &Snapshot::default());
        if s.is_skip() {
            return Status::success();
        }
        assert!(s.is_success(), "{s}");
        NodeAffinity.filter(&state, pod, node)
    }

    #[test]
    fn node_selector() {
        let ssd = NodeBuilder::new("a").labels(&[("disk", "ssd")]).info();
        let hdd = NodeBuilder::new("b").labels(&[("disk", "hdd")]).info();
        let pod = PodBuilder::new("p").node_selector(&[("disk", "ssd")]).info();
        assert!(run_filter(&pod, &ssd).is_success());
        let st = run_filter(&pod, &hdd);
        assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(st.reasons, vec![ERR_REASON_POD]);
    }

    #[test]
    fn required_terms_are_ored_and_and_nodeselector() {
        let a = NodeBuilder::new("a").labels(&[("zone", "z1"), ("disk", "ssd")]).info();
        let b = NodeBuilder::new("b").labels(&[("zone", "z2")]).info();
        let c = NodeBuilder::new("c").labels(&[("zone", "z3")]).info();
        let pod = PodBuilder::new("p").node_affinity_in(&[&[("zone", "In", &["z1"])], &[("zone", "In", &["z2"])]]).info();
        assert!(run_filter(&pod, &a).is_success());
        assert!(run_filter(&pod, &b).is_success());
        assert!(!run_filter(&pod, &c).is_success());
        // nodeSelector AND affinity.
        let both = PodBuilder::new("p").node_selector(&[("disk", "ssd")]).node_affinity_in(&[&[("zone", "In", &["z1", "z2"])]]).info();
        assert!(run_filter(&both, &a).is_success());
        assert!(!run_filter(&both, &b).is_success());
        // NotIn / DoesNotExist.
        let not_in = PodBuilder::new("p").node_affinity_in(&[&[("zone", "NotIn", &["z1"]), ("disk", "DoesNotExist", &[])]]).info();
        assert!(!run_filter(&not_in, &a).is_success());
        assert!(run_filter(&not_in, &b).is_success());
    }

    #[test]
    fn pod_without_affinity_skips() {
        let mut state = CycleState::new();
        let (_, s) = NodeAffinity.pre_filter(&mut state, &PodBuilder::new("p").info(), &Snapshot::default());
        assert!(s.is_skip());
    }

    #[test]
    fn match_fields_narrow_nodes() {
        let pod: Arc<PodInfo> = {
            let mut v = PodBuilder::new("p").json();
            v["spec"]["affinity"] = serde_json::json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}
            ]}}});
            PodInfo::from_pod(serde_json::from_value(v).unwrap())
        };
        let mut state = CycleState::new();
        let (r, s) = NodeAffinity.pre_filter(&mut state, &pod, &Snapshot::default());
        assert!(s.is_success());
        assert_eq!(r.unwrap().node_names.unwrap(), ["n1".to_string(), "n2".to_string()].into());
        assert!(NodeAffinity.filter(&state, &pod, &NodeBuilder::new("n1").info()).is_success());
        assert!(!NodeAffinity.filter(&state, &pod, &NodeBuilder::new("n3").info()).is_success());
    }

    #[test]
    fn preferred_scores() {
        let nodes: Vec<Arc<NodeInfo>> = vec![
            Arc::new(NodeBuilder::new("none").info()),
            Arc::new(NodeBuilder::new("ssd").labels(&[("disk", "ssd")]).info()),
            Arc::new(NodeBuilder::new("both").labels(&[("disk", "ssd"), ("zone", "z1")]).info()),
        ];
        let pod = PodBuilder::new("p").node_affinity_preferred(&[(20, "disk", "In", &["ssd"]), (60, "zone", "In", &["z1"])]).info();
        let mut state = CycleState::new();
        assert!(NodeAffinity.pre_score(&mut state, &pod, &nodes, &Snapshot::default()).is_success());
        let mut scores: Vec<NodeScore> = nodes.iter().enumerate().map(|(index, n)| NodeScore { index, score: NodeAffinity.score(&state, &pod, n).unwrap() }).collect();
        assert_eq!(scores.iter().map(|s| s.score).collect::<Vec<_>>(), vec![0, 20, 80]);
        NodeAffinity.normalize_score(&state, &pod, &mut scores);
        assert_eq!(scores.iter().map(|s| s.score).collect::<Vec<_>>(), vec![0, 25, 100]);
        let mut st = CycleState::new();
        assert!(NodeAffinity.pre_score(&mut st, &PodBuilder::new("q").info(), &nodes, &Snapshot::default()).is_skip());
    }
}
