//! NodeUnschedulable: cordoned nodes (`spec.unschedulable`) only take pods
//! tolerating the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use k8s_openapi::api::core::v1::Taint;

use crate::framework::{action, ClusterEvent, CycleState, EventResource, FilterPlugin, NodeInfo, Plugin, PodInfo, Status};
use crate::helpers;

pub const NAME: &str = "NodeUnschedulable";
pub const ERR_REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

#[derive(Debug, Default)]
pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(EventResource::Node, action::ADD | action::UPDATE_NODE_UNSCHEDULABLE | action::UPDATE_NODE_TAINT, "Node"),
            ClusterEvent::new(EventResource::UnscheduledPod, action::UPDATE_POD_TOLERATIONS, "UnscheduledPodUpdate"),
        ]
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.unschedulable() {
            return Status::success();
        }
        let taint = Taint { key: TAINT_NODE_UNSCHEDULABLE.into(), effect: "NoSchedule".into(), value: None, time_added: None };
        if helpers::tolerations_tolerate_taint(helpers::pod_tolerations(&pod.pod), &taint) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_UNSCHEDULABLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::{NodeBuilder, PodBuilder};

    #[test]
    fn filter() {
        let s = CycleState::new();
        let cordoned = NodeBuilder::new("n1").unschedulable().info();
        let open = NodeBuilder::new("n2").info();
        let pod = PodBuilder::new("p").info();
        assert!(NodeUnschedulable.filter(&s, &pod, &open).is_success());
        let st = NodeUnschedulable.filter(&s, &pod, &cordoned);
        assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(st.reasons, vec![ERR_REASON_UNSCHEDULABLE]);
        let tolerating = PodBuilder::new("t").toleration(TAINT_NODE_UNSCHEDULABLE, "Exists", "", "NoSchedule").info();
        assert!(NodeUnschedulable.filter(&s, &tolerating, &cordoned).is_success());
        // A NoExecute toleration does not tolerate the NoSchedule taint.
        let wrong_effect = PodBuilder::new("w").toleration(TAINT_NODE_UNSCHEDULABLE, "Exists", "", "NoExecute").info();
        assert!(!NodeUnschedulable.filter(&s, &wrong_effect, &cordoned).is_success());
        // Tolerate-everything tolerates it.
        let all = PodBuilder::new("a").toleration("", "Exists", "", "").info();
        assert!(NodeUnschedulable.filter(&s, &all, &cordoned).is_success());
    }
}
