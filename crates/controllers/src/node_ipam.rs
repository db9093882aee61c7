//! Node IPAM (upstream's `pkg/controller/nodeipam` with its default
//! `RangeAllocator`): every Node gets a pod subnet of the cluster CIDR.
//!
//! The cluster CIDR (`--cluster-cidr`, IPv4) is cut into subnets of
//! `--node-cidr-mask-size` bits (24 by default: 256 nodes in a /16). A Node
//! without `spec.podCIDR` gets the next free subnet, searching round-robin
//! from the last one handed out, written to `spec.podCIDR` and
//! `spec.podCIDRs` (a merge patch carrying the Node's resourceVersion, so a
//! Node changed meanwhile is looked at again rather than overwritten). A
//! Node that already has one (set by an earlier run, or by hand) keeps it
//! and its subnet is marked used. The map of used subnets lives only in
//! memory: it is rebuilt from the Nodes' `spec.podCIDRs` before anything is
//! handed out, so a restart never hands out a subnet twice. A deleted Node's
//! subnet is free again.
//!
//! When the range is exhausted the Node stays without a subnet and gets a
//! `CIDRNotAvailable` event, once (upstream retries it with backoff); it is
//! looked at again when a Node's deletion frees a subnet. (Hollow nodes
//! without one use their own fake ranges: a /16 holds 256 nodes.) IPv6 and
//! dual-stack cluster CIDRs are not supported; a Node carrying only IPv6
//! subnets is left alone.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinSet;

use crate::config::ControllerConfig;
use crate::informer::{self, Change, SharedInformers};
use crate::kit;
use crate::pod_control::{self, EventRecorder, EventType};
use crate::queue::{self, Backoff, Queue};

/// The event source, as upstream's range allocator names itself.
pub const COMPONENT: &str = "cidrAllocator";

/// An IPv4 network, its address masked to the prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    base: u32,
    prefix: u8,
}

impl Ipv4Net {
    /// Parses `a.b.c.d/n` (host bits are masked off, as Go's `ParseCIDR` does).
    pub fn parse(s: &str) -> Result<Ipv4Net, String> {
        let (addr, len) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (no prefix length)"))?;
        let ip: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 CIDR"))?;
        let prefix: u8 = len
            .parse()
            .map_err(|_| format!("{s:?} has an invalid prefix length"))?;
        if prefix > 32 {
            return Err(format!("{s:?} has an invalid prefix length"));
        }
        Ok(Ipv4Net {
            base: u32::from(ip) & mask(prefix),
            prefix,
        })
    }

    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The last address of the network.
    fn last(&self) -> u32 {
        self.base | !mask(self.prefix)
    }

    /// Whether `other` lies entirely inside this network.
    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        other.prefix >= self.prefix && (other.base & mask(self.prefix)) == self.base
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

/// Upstream's `cidrset.CidrSet` with the per-node bookkeeping of the range
/// allocator: which subnet (or run of subnets, for a Node given a larger
/// network by hand) each Node holds.
#[derive(Debug)]
pub struct Allocator {
    cluster: Ipv4Net,
    node_prefix: u8,
    /// Number of subnets.
    count: u32,
    /// Subnet index → the Node holding it.
    owners: HashMap<u32, String>,
    /// Node → (first subnet index, number of subnets).
    by_node: HashMap<String, (u32, u32)>,
    /// Where the next search starts (upstream's `nextCandidate`).
    next: u32,
}

impl Allocator {
    /// Upstream refuses more than 2^16 subnets per cluster CIDR.
    pub const MAX_SUBNET_BITS: u8 = 16;

    pub fn new(cluster_cidr: &str, node_prefix: u8) -> Result<Allocator, String> {
        let cluster = Ipv4Net::parse(cluster_cidr)?;
        if node_prefix < cluster.prefix || node_prefix > 32 {
            return Err(format!(
                "node CIDR mask size {node_prefix} must be within {}..=32 for cluster CIDR {cluster}",
                cluster.prefix
            ));
        }
        let bits = node_prefix - cluster.prefix;
        if bits > Self::MAX_SUBNET_BITS {
            return Err(format!(
                "node CIDR mask size {node_prefix} cuts {cluster} into more than 2^{} subnets",
                Self::MAX_SUBNET_BITS
            ));
        }
        Ok(Allocator {
            cluster,
            node_prefix,
            count: 1u32 << bits,
            owners: HashMap::new(),
            by_node: HashMap::new(),
            next: 0,
        })
    }

    pub fn cluster(&self) -> Ipv4Net {
        self.cluster
    }

    /// How many subnets the range holds, and how many are in use.
    pub fn capacity(&self) -> (u32, usize) {
        (self.count, self.owners.len())
    }

    fn subnet(&self, idx: u32) -> Ipv4Net {
        let size = 1u64 << (32 - self.node_prefix as u32);
        Ipv4Net {
            base: (self.cluster.base as u64 + idx as u64 * size) as u32,
            prefix: self.node_prefix,
        }
    }

    /// The subnets `net` covers: (first index, count), if it is inside the
    /// cluster CIDR.
    fn span(&self, net: &Ipv4Net) -> Option<(u32, u32)> {
        if !self.cluster.contains_net(net) {
            return None;
        }
        let shift = 32 - self.node_prefix as u32;
        let first = (net.base - self.cluster.base) >> shift;
        let last = (net.last() - self.cluster.base) >> shift;
        Some((first, last - first + 1))
    }

    /// The network `node` holds (its first subnet, or the whole run).
    pub fn allocated(&self, node: &str) -> Option<Ipv4Net> {
        let &(first, n) = self.by_node.get(node)?;
        let mut net = self.subnet(first);
        // A run of 2^k subnets is one network k bits shorter.
        net.prefix -= n.trailing_zeros() as u8;
        Some(net)
    }

    /// Marks `net` as `node`'s (upstream's `occupyCIDRs`), releasing what
    /// the node held before if that was something else. Fails, marking
    /// nothing, if `net` is outside the cluster CIDR or overlaps another
    /// Node's subnet.
    pub fn occupy(&mut self, node: &str, net: Ipv4Net) -> Result<(), String> {
        let Some((first, n)) = self.span(&net) else {
            return Err(format!(
                "{net} is not inside the cluster CIDR {}",
                self.cluster
            ));
        };
        if self.by_node.get(node) == Some(&(first, n)) {
            return Ok(());
        }
        if let Some(other) =
            (first..first + n).find_map(|i| self.owners.get(&i).filter(|o| o.as_str() != node))
        {
            return Err(format!("{net} overlaps the pod CIDR of node {other}"));
        }
        self.release(node);
        for i in first..first + n {
            self.owners.insert(i, node.to_string());
        }
        self.by_node.insert(node.to_string(), (first, n));
        Ok(())
    }

    /// The subnet `node` holds, or the next free one, now held by it
    /// (upstream's `AllocateNext`); `None` when the range is full.
    pub fn allocate(&mut self, node: &str) -> Option<Ipv4Net> {
        if let Some(net) = self.allocated(node) {
            return Some(net);
        }
        let idx = (0..self.count)
            .map(|k| (self.next + k) % self.count)
            .find(|i| !self.owners.contains_key(i))?;
        self.owners.insert(idx, node.to_string());
        self.by_node.insert(node.to_string(), (idx, 1));
        self.next = (idx + 1) % self.count;
        Some(self.subnet(idx))
    }

    /// Frees what `node` holds (upstream's `ReleaseCIDR`).
    pub fn release(&mut self, node: &str) -> Option<Ipv4Net> {
        let net = self.allocated(node)?;
        let (first, n) = self.by_node.remove(node)?;
        for i in first..first + n {
            self.owners.remove(&i);
        }
        Some(net)
    }
}

/// `spec.podCIDRs`, or `spec.podCIDR` on its own.
pub fn pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    match spec.pod_cidrs.as_ref().filter(|v| !v.is_empty()) {
        Some(v) => v.clone(),
        None => spec
            .pod_cidr
            .iter()
            .filter(|c| !c.is_empty())
            .cloned()
            .collect(),
    }
}

fn ipv4_cidr(node: &Node) -> Option<Ipv4Net> {
    pod_cidrs(node).iter().find_map(|c| Ipv4Net::parse(c).ok())
}

struct Controller {
    client: Client,
    nodes: Store<Node>,
    alloc: Mutex<Allocator>,
    queue: Queue<String>,
    recorder: EventRecorder,
    /// Nodes that found the range full: looked at again when a subnet is
    /// freed, not retried with backoff (thousands of hollow nodes in a /16
    /// would otherwise keep the controller and the event stream busy).
    waiting: Mutex<HashSet<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}: {1}")]
pub struct Error(&'static str, #[source] kube::Error);

/// Runs node IPAM until its informer stops. With an empty
/// `config.cluster_cidr` it does nothing (and never returns); an invalid one
/// is an error.
pub async fn run(client: Client, config: ControllerConfig) -> anyhow::Result<()> {
    run_shared(client.clone(), config, SharedInformers::new(client)).await
}

/// [`run`] on the process's shared informers.
pub async fn run_shared(client: Client, config: ControllerConfig, informers: SharedInformers) -> anyhow::Result<()> {
    if config.cluster_cidr.trim().is_empty() {
        tracing::info!("node IPAM disabled: no cluster CIDR");
        return std::future::pending().await;
    }
    let alloc = Allocator::new(&config.cluster_cidr, config.node_cidr_mask_size)
        .map_err(|e| anyhow::anyhow!("node IPAM: {e}"))?;
    let (queue, workers) = queue::queue::<String>(Backoff::CONTROLLER);
    let node_inf = informers.get::<Node>();
    let ctl = Arc::new(Controller {
        recorder: EventRecorder::new(client.clone(), COMPONENT),
        client,
        nodes: node_inf.store(),
        alloc: Mutex::new(alloc),
        queue: queue.clone(),
        waiting: Mutex::new(HashSet::new()),
    });
    let mut tasks = JoinSet::new();
    let c = ctl.clone();
    tasks.spawn(node_inf.run("nodes", move |ch| c.on_node(ch)));
    let _ = ctl.nodes.wait_until_ready().await;
    ctl.rebuild();
    let c = ctl.clone();
    tasks.spawn(kit::run_workers(
        "node-ipam",
        queue,
        workers,
        4,
        move |name: String| {
            let c = c.clone();
            async move { c.sync(&name).await }
        },
    ));
    let _ = tasks.join_next().await;
    anyhow::bail!("node IPAM stopped")
}

impl Controller {
    fn on_node(&self, change: Change<Node>) {
        match change {
            Change::Added(n) | Change::Deleted(n) => self.queue.add(n.name_any()),
            Change::Updated(old, new) => {
                if pod_cidrs(&new) != pod_cidrs(&old) {
                    self.queue.add(new.name_any());
                }
            }
        }
    }

    /// Marks the subnets of every Node as used (upstream's allocator does
    /// this from a full list before it starts).
    fn rebuild(&self) {
        let mut alloc = self.alloc.lock().expect("allocator lock");
        let mut n = 0;
        for node in self.nodes.state() {
            let Some(net) = ipv4_cidr(&node) else {
                continue;
            };
            match alloc.occupy(&node.name_any(), net) {
                Ok(()) => n += 1,
                Err(e) => {
                    tracing::warn!(node = %node.name_any(), error = %e, "pod CIDR not tracked")
                }
            }
        }
        let (total, _) = alloc.capacity();
        tracing::info!(cluster_cidr = %alloc.cluster(), used = n, subnets = total, "node IPAM synced");
    }

    async fn sync(&self, name: &str) -> Result<Option<Duration>, Error> {
        let Some(node) = informer::get(&self.nodes, name) else {
            // Lock order: allocator, then waiting list.
            let mut alloc = self.alloc.lock().expect("allocator lock");
            let mut waiting = self.waiting.lock().expect("waiting lock");
            waiting.remove(name);
            if let Some(net) = alloc.release(name) {
                tracing::info!(node = name, cidr = %net, "released the pod CIDR of a deleted node");
                // Nodes that found the range full get another chance.
                for n in waiting.iter() {
                    self.queue.add(n.clone());
                }
            }
            return Ok(None);
        };
        if !pod_cidrs(&node).is_empty() {
            self.waiting.lock().expect("waiting lock").remove(name);
            if let Some(net) = ipv4_cidr(&node)
                && let Err(e) = self.alloc.lock().expect("allocator lock").occupy(name, net)
            {
                tracing::warn!(node = name, error = %e, "pod CIDR not tracked");
            }
            return Ok(None);
        }
        let (allocated, newly_waiting, cluster) = {
            let mut alloc = self.alloc.lock().expect("allocator lock");
            let net = alloc.allocate(name);
            // Joins the waiting list under the allocator lock, so a release
            // cannot slip in between and miss it.
            let newly = net.is_none()
                && self
                    .waiting
                    .lock()
                    .expect("waiting lock")
                    .insert(name.to_string());
            (net, newly, alloc.cluster())
        };
        let Some(net) = allocated else {
            if newly_waiting {
                tracing::warn!(node = name, cluster_cidr = %cluster, "no pod CIDR left for the node");
                self.node_event(&node, "CIDRNotAvailable");
            }
            return Ok(None);
        };
        self.waiting.lock().expect("waiting lock").remove(name);
        let api: Api<Node> = Api::all(self.client.clone());
        let cidr = net.to_string();
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {
                tracing::debug!(node = name, cidr = %net, "assigned pod CIDR");
                Ok(None)
            }
            // Deleted meanwhile: the delete event frees the subnet.
            Err(e) if pod_control::is_not_found(&e) => Ok(None),
            // Changed meanwhile: look again at the newer Node (the
            // subnet stays reserved for it until then).
            Err(e) if pod_control::is_conflict(&e) => Err(Error("assigning the pod CIDR", e)),
            Err(e) => {
                self.node_event(&node, "CIDRAssignmentFailed");
                Err(Error("assigning the pod CIDR", e))
            }
        }
    }

    /// Upstream's `RecordNodeStatusChange`.
    fn node_event(&self, node: &Node, status: &str) {
        let name = node.name_any();
        self.recorder.event(
            pod_control::object_ref(node),
            EventType::Normal,
            status,
            format!("Node {name} status is now: {status}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let n = Ipv4Net::parse("10.42.3.7/16").unwrap();
        assert_eq!(n.to_string(), "10.42.0.0/16");
        assert!(Ipv4Net::parse("10.42.0.0").is_err());
        assert!(Ipv4Net::parse("fd00::/64").is_err());
        assert!(Ipv4Net::parse("10.0.0.0/33").is_err());
        assert!(n.contains_net(&Ipv4Net::parse("10.42.255.0/24").unwrap()));
        assert!(!n.contains_net(&Ipv4Net::parse("10.43.0.0/24").unwrap()));
        assert!(!n.contains_net(&Ipv4Net::parse("10.0.0.0/8").unwrap()));
    }

    #[test]
    fn allocates_every_subnet_once_then_reports_full() {
        let mut a = Allocator::new("10.42.0.0/22", 24).unwrap();
        let got: Vec<String> = (0..4)
            .map(|i| a.allocate(&format!("n{i}")).unwrap().to_string())
            .collect();
        assert_eq!(
            got,
            [
                "10.42.0.0/24",
                "10.42.1.0/24",
                "10.42.2.0/24",
                "10.42.3.0/24"
            ]
        );
        assert_eq!(a.allocate("n4"), None);
        assert_eq!(
            a.allocate("n1").unwrap().to_string(),
            "10.42.1.0/24",
            "a node keeps what it holds"
        );
        assert_eq!(a.release("n1").unwrap().to_string(), "10.42.1.0/24");
        assert_eq!(a.allocate("n4").unwrap().to_string(), "10.42.1.0/24");
        assert_eq!(a.capacity(), (4, 4));
    }

    #[test]
    fn search_is_round_robin() {
        let mut a = Allocator::new("10.42.0.0/16", 24).unwrap();
        assert_eq!(a.allocate("a").unwrap().to_string(), "10.42.0.0/24");
        assert_eq!(a.allocate("b").unwrap().to_string(), "10.42.1.0/24");
        a.release("a");
        assert_eq!(
            a.allocate("c").unwrap().to_string(),
            "10.42.2.0/24",
            "a freed subnet is not handed out again at once"
        );
    }

    #[test]
    fn occupy_tracks_existing_cidrs_and_refuses_overlaps() {
        let mut a = Allocator::new("10.42.0.0/16", 24).unwrap();
        a.occupy("old", Ipv4Net::parse("10.42.0.0/24").unwrap())
            .unwrap();
        a.occupy("big", Ipv4Net::parse("10.42.2.0/23").unwrap())
            .unwrap();
        assert_eq!(a.allocated("big").unwrap().to_string(), "10.42.2.0/23");
        assert!(
            a.occupy("other", Ipv4Net::parse("10.42.3.0/24").unwrap())
                .is_err()
        );
        assert!(
            a.occupy("outside", Ipv4Net::parse("10.99.0.0/24").unwrap())
                .is_err()
        );
        let got: Vec<String> = (0..2)
            .map(|i| a.allocate(&format!("new{i}")).unwrap().to_string())
            .collect();
        assert_eq!(got, ["10.42.1.0/24", "10.42.4.0/24"]);
        // A node whose CIDR changed gives up the old one.
        a.occupy("old", Ipv4Net::parse("10.42.9.0/24").unwrap())
            .unwrap();
        a.occupy("x", Ipv4Net::parse("10.42.0.0/24").unwrap())
            .unwrap();
    }

    #[test]
    fn rejects_bad_masks() {
        assert!(Allocator::new("10.42.0.0/16", 8).is_err());
        assert!(
            Allocator::new("10.0.0.0/8", 25).is_err(),
            "more than 2^16 subnets"
        );
        assert!(Allocator::new("10.42.0.0/16", 24).is_ok());
    }
}
