//! NodePorts: a pod's hostPorts must be free on the node.

use crate::framework::{action, ClusterEvent, CycleState, EventResource, FilterPlugin, NodeInfo, Plugin, PodInfo, Status};

pub const NAME: &str = "NodePorts";
pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

#[derive(Debug, Default)]
pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            ClusterEvent::new(EventResource::AssignedPod, action::DELETE, "AssignedPodDelete"),
            ClusterEvent::new(EventResource::Node, action::ADD, "NodeAdd"),
        ]
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if pod.host_ports.iter().any(|hp| node.used_ports.check_conflict(hp)) {
            Status::unschedulable(ERR_REASON)
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::{NodeBuilder, PodBuilder};

    #[test]
    fn host_port_conflicts() {
        let s = CycleState::new();
        let existing = PodBuilder::new("e").node("n").host_port(8080, "TCP", "").info();
        let node = NodeBuilder::new("n").with_pods(&[existing]);
        let same = PodBuilder::new("p").host_port(8080, "TCP", "").info();
        let st = NodePorts.filter(&s, &same, &node);
        assert_eq!(st.code, Code::Unschedulable);
        assert_eq!(st.reasons, vec![ERR_REASON]);
        // Other protocol, other port: free.
        assert!(NodePorts.filter(&s, &PodBuilder::new("p").host_port(8080, "UDP", "").info(), &node).is_success());
        assert!(NodePorts.filter(&s, &PodBuilder::new("p").host_port(8081, "TCP", "").info(), &node).is_success());
        // A specific IP conflicts with 0.0.0.0.
        assert!(!NodePorts.filter(&s, &PodBuilder::new("p").host_port(8080, "TCP", "10.0.0.1").info(), &node).is_success());
        // No host ports: always fits.
        assert!(NodePorts.filter(&s, &PodBuilder::new("p").container().info(), &node).is_success());
    }

    #[test]
    fn specific_ips_only_conflict_with_themselves_and_wildcard() {
        let s = CycleState::new();
        let existing = PodBuilder::new("e").node("n").host_port(80, "TCP", "10.0.0.1").info();
        let node = NodeBuilder::new("n").with_pods(&[existing]);
        assert!(NodePorts.filter(&s, &PodBuilder::new("p").host_port(80, "TCP", "10.0.0.2").info(), &node).is_success());
        assert!(!NodePorts.filter(&s, &PodBuilder::new("p").host_port(80, "TCP", "10.0.0.1").info(), &node).is_success());
        assert!(!NodePorts.filter(&s, &PodBuilder::new("p").host_port(80, "TCP", "").info(), &node).is_success());
    }
}
