//! NodeName: a pod asking for a node by `spec.nodeName` only fits there.

use crate::framework::{action, ClusterEvent, CycleState, EventResource, FilterPlugin, NodeInfo, Plugin, PodInfo, Status};
use crate::helpers;

pub const NAME: &str = "NodeName";
pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

#[derive(Debug, Default)]
pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![ClusterEvent::new(EventResource::Node, action::ADD, "NodeAdd")]
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let wanted = helpers::pod_node_name(&pod.pod);
        if wanted.is_empty() || wanted == node.name() {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON)
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
        let node = NodeBuilder::new("n1").info();
        let s = CycleState::new();
        assert!(NodeName.filter(&s, &PodBuilder::new("p").info(), &node).is_success());
        assert!(NodeName.filter(&s, &PodBuilder::new("p").node("n1").info(), &node).is_success());
        let st = NodeName.filter(&s, &PodBuilder::new("p").node("n2").info(), &node);
        assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(st.reasons, vec![ERR_REASON]);
    }
}
