//! The default plugins, a file each, and upstream's default profile.

pub mod balanced_allocation;
pub mod default_binder;
pub mod default_preemption;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod queue_sort;
pub mod taint_toleration;
pub mod volume_binding;

use std::sync::Arc;

use crate::framework::Framework;

/// Upstream's default profile without a binder (tests, simulations):
/// Filter order NodeUnschedulable, NodeName, TaintToleration, NodeAffinity,
/// NodePorts, NodeResourcesFit, VolumeBinding, PodTopologySpread,
/// InterPodAffinity; Score
/// weights TaintToleration 3, NodeAffinity 2, NodeResourcesFit 1,
/// PodTopologySpread 2, InterPodAffinity 2, BalancedAllocation 1.
pub fn default_framework_without_binder(percentage_of_nodes_to_score: Option<u32>) -> Framework {
    default_framework_with_volumes(percentage_of_nodes_to_score, Default::default())
}

/// [`default_framework_without_binder`] whose VolumeBinding reads `volumes`
/// (the scheduler's PVC and PV watches fill them).
pub fn default_framework_with_volumes(percentage_of_nodes_to_score: Option<u32>, volumes: Arc<volume_binding::VolumeListers>) -> Framework {
    let node_unschedulable = Arc::new(node_unschedulable::NodeUnschedulable);
    let node_name = Arc::new(node_name::NodeName);
    let taint_toleration = Arc::new(taint_toleration::TaintToleration);
    let node_affinity = Arc::new(node_affinity::NodeAffinity);
    let node_ports = Arc::new(node_ports::NodePorts);
    let fit = Arc::new(node_resources_fit::NodeResourcesFit::default());
    let volume_binding = Arc::new(volume_binding::VolumeBinding::new(volumes));
    let spread = Arc::new(pod_topology_spread::PodTopologySpread);
    let ipa = Arc::new(inter_pod_affinity::InterPodAffinity::default());
    let balanced = Arc::new(balanced_allocation::BalancedAllocation::default());
    let preemption = Arc::new(default_preemption::DefaultPreemption::default());

    let mut f = Framework::new("default-scheduler", Arc::new(queue_sort::PrioritySort))
        .with_pre_filter(node_affinity.clone())
        .with_pre_filter(fit.clone())
        .with_pre_filter(volume_binding.clone())
        .with_pre_filter(spread.clone())
        .with_pre_filter(ipa.clone())
        .with_filter(node_unschedulable)
        .with_filter(node_name)
        .with_filter(taint_toleration.clone())
        .with_filter(node_affinity.clone())
        .with_filter(node_ports)
        .with_filter(fit.clone())
        .with_filter(volume_binding)
        .with_filter(spread.clone())
        .with_filter(ipa.clone())
        .with_post_filter(preemption)
        .with_pre_score(taint_toleration.clone())
        .with_pre_score(node_affinity.clone())
        .with_pre_score(fit.clone())
        .with_pre_score(spread.clone())
        .with_pre_score(ipa.clone())
        .with_pre_score(balanced.clone())
        .with_score(taint_toleration, 3)
        .with_score(node_affinity, 2)
        .with_score(fit, 1)
        .with_score(spread, 2)
        .with_score(ipa, 2)
        .with_score(balanced, 1);
    f.percentage_of_nodes_to_score = percentage_of_nodes_to_score;
    f
}

/// The default profile binding through the API with `client`.
pub fn default_framework(client: kube::Client, percentage_of_nodes_to_score: Option<u32>) -> Framework {
    default_framework_with(client, percentage_of_nodes_to_score, Default::default())
}

/// [`default_framework`] whose VolumeBinding reads `volumes`.
pub fn default_framework_with(client: kube::Client, percentage_of_nodes_to_score: Option<u32>, volumes: Arc<volume_binding::VolumeListers>) -> Framework {
    default_framework_with_volumes(percentage_of_nodes_to_score, volumes).with_bind(Arc::new(default_binder::DefaultBinder::new(client)))
}
