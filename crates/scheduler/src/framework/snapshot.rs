//! `Snapshot`: the cache's nodes frozen for one scheduling cycle.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::node_info::NodeInfo;
use crate::helpers::Labels;

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Nodes in the cache's order (zones interleaved); only NodeInfos with a node.
    pub node_infos: Vec<Arc<NodeInfo>>,
    index: Arc<HashMap<String, usize>>,
    /// Indices of nodes with pods that have (anti-)affinity.
    have_pods_with_affinity: Vec<usize>,
    /// Indices of nodes with pods that have required anti-affinity.
    have_pods_with_required_anti_affinity: Vec<usize>,
    /// Labels per namespace, for namespaceSelector in affinity terms.
    pub namespace_labels: Arc<BTreeMap<String, Labels>>,
}

impl Snapshot {
    pub fn new(node_infos: Vec<Arc<NodeInfo>>, namespace_labels: Arc<BTreeMap<String, Labels>>) -> Snapshot {
        let node_infos: Vec<Arc<NodeInfo>> = node_infos.into_iter().filter(|n| n.node_opt().is_some()).collect();
        let index = node_infos.iter().enumerate().map(|(i, n)| (n.name().to_string(), i)).collect();
        Snapshot::from_parts(node_infos, Arc::new(index), namespace_labels)
    }

    /// A snapshot from nodes that all have a node object and their index
    /// by name (the cache keeps both, so a snapshot costs pointer copies).
    pub fn from_parts(node_infos: Vec<Arc<NodeInfo>>, index: Arc<HashMap<String, usize>>, namespace_labels: Arc<BTreeMap<String, Labels>>) -> Snapshot {
        debug_assert_eq!(node_infos.len(), index.len());
        let mut s = Snapshot { namespace_labels, index, ..Default::default() };
        for (i, n) in node_infos.iter().enumerate() {
            if !n.pods_with_affinity.is_empty() {
                s.have_pods_with_affinity.push(i);
            }
            if !n.pods_with_required_anti_affinity.is_empty() {
                s.have_pods_with_required_anti_affinity.push(i);
            }
        }
        s.node_infos = node_infos;
        s
    }

    /// A snapshot of plain NodeInfos (tests, tools).
    pub fn from_nodes(nodes: Vec<NodeInfo>) -> Snapshot {
        Snapshot::new(nodes.into_iter().map(Arc::new).collect(), Arc::new(BTreeMap::new()))
    }

    pub fn with_namespaces(mut self, ns: BTreeMap<String, Labels>) -> Snapshot {
        self.namespace_labels = Arc::new(ns);
        self
    }

    pub fn num_nodes(&self) -> usize {
        self.node_infos.len()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.index.get(name).map(|i| &self.node_infos[*i])
    }

    pub fn have_pods_with_affinity(&self) -> impl Iterator<Item = &Arc<NodeInfo>> {
        self.have_pods_with_affinity.iter().map(|i| &self.node_infos[*i])
    }

    pub fn have_pods_with_required_anti_affinity(&self) -> impl Iterator<Item = &Arc<NodeInfo>> {
        self.have_pods_with_required_anti_affinity.iter().map(|i| &self.node_infos[*i])
    }

    pub fn namespace_labels(&self, ns: &str) -> Option<&Labels> {
        self.namespace_labels.get(ns)
    }
}
