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
        let mut s = Snapshot { namespace_labels, index, node_infos, ..Default::default() };
        s.index_affinity();
        s
    }

    /// Brings this snapshot up to the cache's nodes, given in the same
    /// order with the same `index`: only entries whose `Arc` changed are
    /// replaced (the cache copies a NodeInfo on write while a snapshot
    /// shares it, so a changed node always has a new pointer). Returns
    /// false, touching nothing, when the order or index differ.
    pub fn refresh_from(&mut self, node_infos: &[Arc<NodeInfo>], index: &Arc<HashMap<String, usize>>, namespace_labels: &Arc<BTreeMap<String, Labels>>) -> bool {
        if !Arc::ptr_eq(&self.index, index) || self.node_infos.len() != node_infos.len() {
            return false;
        }
        let mut affinity_changed = false;
        for (mine, theirs) in self.node_infos.iter_mut().zip(node_infos) {
            if !Arc::ptr_eq(mine, theirs) {
                affinity_changed |= mine.pods_with_affinity.is_empty() != theirs.pods_with_affinity.is_empty()
                    || mine.pods_with_required_anti_affinity.is_empty() != theirs.pods_with_required_anti_affinity.is_empty();
                *mine = theirs.clone();
            }
        }
        if affinity_changed {
            self.index_affinity();
        }
        if !Arc::ptr_eq(&self.namespace_labels, namespace_labels) {
            self.namespace_labels = namespace_labels.clone();
        }
        true
    }

    fn index_affinity(&mut self) {
        self.have_pods_with_affinity.clear();
        self.have_pods_with_required_anti_affinity.clear();
        for (i, n) in self.node_infos.iter().enumerate() {
            if !n.pods_with_affinity.is_empty() {
                self.have_pods_with_affinity.push(i);
            }
            if !n.pods_with_required_anti_affinity.is_empty() {
                self.have_pods_with_required_anti_affinity.push(i);
            }
        }
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
