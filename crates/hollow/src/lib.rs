//! Hollow nodes: simulated kubelets for scale runs (upstream's kubemark and
//! kwok play the same part).
//!
//! A hollow node does everything the control plane can see a kubelet do,
//! through the API server only, and nothing else: it registers a Node,
//! renews its Lease, posts node status, and moves the pods bound to it
//! through their lifecycle (Running with IPs and container statuses,
//! completion, graceful deletion). No container runs; no address it
//! publishes is ever contacted.
//!
//! Thousands of nodes share one process and one [`kube::Client`], so every
//! per-node activity is multiplexed:
//! - one pod watch for all nodes (`spec.nodeName!=`), dispatched by
//!   `spec.nodeName` (a watch per node, like a real kubelet's, would be
//!   thousands of server-side watchers and connections);
//! - one Node watch (label `tugboat.io/hollow=true`) for pod CIDRs and for
//!   the node controller marking a node not ready;
//! - one task renewing all leases and one posting all node statuses, each
//!   spreading its nodes evenly over its interval with a bounded number of
//!   requests in flight (`pace.rs`).
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> anyhow::Result<()> {
//! let config = tug_hollow::HollowConfig { nodes: 1000, ..Default::default() };
//! tug_hollow::run(client, config, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! The caller installs a rustls crypto provider (the `tug` binary does).

mod ipam;
mod lease;
mod node;
mod pace;
mod pods;
mod podstatus;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::stream::{self, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub use ipam::MAX_NODE_INDEX;

/// Label every hollow node carries (and the node watch selects on).
pub const HOLLOW_LABEL: &str = "tugboat.io/hollow";
/// Pod annotation: the exit code all containers of the pod exit with.
pub const EXIT_CODE_ANNOTATION: &str = "tugboat.io/hollow-exit-code";
/// Pod annotation: seconds the containers run before exiting (default 0).
pub const RUN_SECONDS_ANNOTATION: &str = "tugboat.io/hollow-run-seconds";
/// The field manager of every write.
pub const FIELD_MANAGER: &str = "hollow-kubelet";
/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// What to simulate.
#[derive(Clone, Debug)]
pub struct HollowConfig {
    /// How many nodes this process runs.
    pub nodes: usize,
    /// Node names are `<name_prefix><index>`.
    pub name_prefix: String,
    /// Index of the first node, so several processes can share a cluster
    /// with disjoint names and address ranges (`first_index + nodes` must
    /// not exceed [`MAX_NODE_INDEX`]).
    pub first_index: usize,
    /// Capacity (= allocatable) of each node, as Kubernetes quantities.
    pub cpu: String,
    pub memory: String,
    pub ephemeral_storage: String,
    pub pods: u32,
    /// Extra node labels (on top of hostname/os/arch/instance-type/hollow).
    pub extra_labels: BTreeMap<String, String>,
    /// `spec.leaseDurationSeconds` of each node lease.
    pub lease_duration_seconds: i32,
    /// How often each lease is renewed (upstream: 10s, a quarter of the duration).
    pub renew_interval: Duration,
    /// How often each node posts its status (heartbeat in the conditions)
    /// when nothing changed: upstream's `nodeStatusReportFrequency`, 5
    /// minutes by default since node Leases carry the heartbeat (1.17).
    /// A change (conditions overridden by someone else) is posted at once.
    pub status_interval: Duration,
    /// Upper bound on the wait between a pod's deletionTimestamp and the
    /// final delete (a real kubelet waits for containers to stop, up to the
    /// grace period; here nothing runs, so only a token wait).
    pub deletion_grace_cap: Duration,
    /// First crash-loop back-off of a restarting container (upstream 10s,
    /// doubling up to 5 minutes).
    pub restart_backoff: Duration,
    /// Requests in flight while registering nodes.
    pub register_concurrency: usize,
    /// Requests in flight renewing leases.
    pub lease_concurrency: usize,
    /// Requests in flight posting node status.
    pub status_concurrency: usize,
    /// Requests in flight writing pod status and deleting pods.
    pub pod_concurrency: usize,
}

impl Default for HollowConfig {
    fn default() -> Self {
        HollowConfig {
            nodes: 1,
            name_prefix: "hollow-node-".into(),
            first_index: 0,
            cpu: "4".into(),
            memory: "16Gi".into(),
            ephemeral_storage: "100Gi".into(),
            pods: 110,
            extra_labels: BTreeMap::new(),
            lease_duration_seconds: 40,
            renew_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(300),
            deletion_grace_cap: Duration::from_secs(1),
            restart_backoff: Duration::from_secs(10),
            register_concurrency: 32,
            lease_concurrency: 16,
            status_concurrency: 8,
            pod_concurrency: 32,
        }
    }
}

impl HollowConfig {
    /// The name of the `i`-th node of this process (0-based).
    pub fn node_name(&self, i: usize) -> String {
        format!("{}{}", self.name_prefix, self.first_index + i)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.nodes == 0 {
            bail!("nodes must be at least 1");
        }
        if self.first_index + self.nodes > MAX_NODE_INDEX {
            bail!("first_index + nodes must be at most {MAX_NODE_INDEX} (one fake /24 of pod addresses per node)");
        }
        if self.pods == 0 || self.pods > 253 {
            bail!("pods must be within 1..=253 (the fallback pod range of a node is a /24)");
        }
        if self.lease_duration_seconds <= 0 {
            bail!("lease_duration_seconds must be positive");
        }
        if self.renew_interval.is_zero() || self.status_interval.is_zero() {
            bail!("renew_interval and status_interval must be positive");
        }
        if self.name_prefix.is_empty() {
            bail!("name_prefix must not be empty");
        }
        Ok(())
    }
}

/// What every task knows about one node.
pub(crate) struct NodeShared {
    pub name: String,
    pub internal_ip: std::net::Ipv4Addr,
    pub fallback_cidr: ipam::Cidr,
    /// A hung kubelet: no lease, no status, no pod work.
    paused: AtomicBool,
    /// The Node was deleted from the API. Like a real kubelet, a hollow node
    /// does not re-register by itself; it stops renewing and posting.
    gone: AtomicBool,
    /// The node controller (or anyone) set a condition we own to something
    /// else: the next heartbeat sets it back with a fresh transition time.
    conditions_overridden: AtomicBool,
    /// `spec.podCIDR` (IPv4) as last seen on the Node.
    pod_cidr: Mutex<Option<ipam::Cidr>>,
    /// The Node's uid, for the lease's owner reference.
    uid: Mutex<Option<String>>,
}

impl NodeShared {
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }
    pub fn pod_cidr(&self) -> ipam::Cidr {
        self.pod_cidr.lock().expect("pod cidr lock").unwrap_or(self.fallback_cidr)
    }
    pub fn uid(&self) -> Option<String> {
        self.uid.lock().expect("uid lock").clone()
    }
}

pub(crate) struct Shared {
    pub config: HollowConfig,
    pub nodes: Vec<NodeShared>,
    pub by_name: HashMap<String, usize>,
    pub stats: Stats,
}

/// Counters, also useful as a cheap progress report.
#[derive(Default)]
pub(crate) struct Stats {
    pub nodes_registered: AtomicU64,
    pub lease_renewals: AtomicU64,
    pub lease_failures: AtomicU64,
    pub status_updates: AtomicU64,
    pub status_failures: AtomicU64,
    pub pods_started: AtomicU64,
    pub pods_exited: AtomicU64,
    pub pods_deleted: AtomicU64,
    pub pod_write_failures: AtomicU64,
    pub pods_tracked: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HollowStats {
    pub nodes_registered: u64,
    pub lease_renewals: u64,
    pub lease_failures: u64,
    pub status_updates: u64,
    pub status_failures: u64,
    /// Pods set Running (including container restarts after a crash loop back-off).
    pub pods_started: u64,
    /// Container exits simulated (`tugboat.io/hollow-exit-code`).
    pub pods_exited: u64,
    /// Final deletes of terminating pods.
    pub pods_deleted: u64,
    pub pod_write_failures: u64,
    /// Pods bound to these nodes that the process currently knows.
    pub pods_tracked: u64,
}

/// Messages to the pod manager from outside its watch.
pub(crate) enum PodControl {
    /// A node was resumed: re-evaluate its pods.
    Resume(usize),
}

/// A running set of hollow nodes. Dropping it stops them (the Node objects
/// stay, as when kubelets stop; a new process adopts them).
pub struct HollowCluster {
    shared: Arc<Shared>,
    tasks: JoinSet<anyhow::Result<()>>,
    lease_kick: mpsc::UnboundedSender<usize>,
    status_kick: mpsc::UnboundedSender<usize>,
    pod_control: mpsc::UnboundedSender<PodControl>,
}

impl HollowCluster {
    /// Registers every node (Node, status, Lease), then starts the lease,
    /// status, node-watch and pod tasks. Returns once all nodes are
    /// registered; registration retries transient errors until it succeeds.
    pub async fn start(client: kube::Client, config: HollowConfig) -> anyhow::Result<HollowCluster> {
        config.validate()?;
        let mut nodes = Vec::with_capacity(config.nodes);
        let mut by_name = HashMap::with_capacity(config.nodes);
        for i in 0..config.nodes {
            let name = config.node_name(i);
            let g = config.first_index + i;
            by_name.insert(name.clone(), i);
            nodes.push(NodeShared {
                name,
                internal_ip: ipam::node_ip(g),
                fallback_cidr: ipam::fallback_pod_cidr(g),
                paused: AtomicBool::new(false),
                gone: AtomicBool::new(false),
                conditions_overridden: AtomicBool::new(false),
                pod_cidr: Mutex::new(None),
                uid: Mutex::new(None),
            });
        }
        let shared = Arc::new(Shared { config, nodes, by_name, stats: Stats::default() });
        let n = shared.nodes.len();
        let started = std::time::Instant::now();
        tracing::info!(nodes = n, prefix = %shared.config.name_prefix, first_index = shared.config.first_index, "registering hollow nodes");

        // Registration: bounded concurrency; each node retries on its own.
        let registered: Vec<(usize, anyhow::Result<node::Registered>)> = stream::iter(0..n)
            .map(|i| {
                let client = client.clone();
                let shared = shared.clone();
                async move { (i, node::register_with_retries(&client, &shared, i).await) }
            })
            .buffer_unordered(shared.config.register_concurrency.max(1))
            .collect()
            .await;
        let mut leases = vec![None; n];
        let mut statuses = Vec::with_capacity(n);
        statuses.resize_with(n, node::HeartbeatState::default);
        for (i, r) in registered {
            let r = r.with_context(|| format!("registering {}", shared.nodes[i].name))?;
            leases[i] = r.lease;
            statuses[i] = r.heartbeat;
        }
        tracing::info!(nodes = n, elapsed_ms = started.elapsed().as_millis() as u64, "hollow nodes registered");

        let (lease_kick, lease_rx) = mpsc::unbounded_channel();
        let (status_kick, status_rx) = mpsc::unbounded_channel();
        let (pod_control, pod_rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        {
            let (client, shared) = (client.clone(), shared.clone());
            tasks.spawn(async move {
                lease::run(client, shared, leases, lease_rx).await;
                bail!("lease loop ended")
            });
        }
        {
            let (client, shared) = (client.clone(), shared.clone());
            tasks.spawn(async move {
                node::run_heartbeats(client, shared, statuses, status_rx).await;
                bail!("node status loop ended")
            });
        }
        {
            let (client, shared, kick) = (client.clone(), shared.clone(), status_kick.clone());
            tasks.spawn(async move {
                node::watch_nodes(client, shared, kick).await;
                bail!("node watch ended")
            });
        }
        {
            let (client, shared) = (client.clone(), shared.clone());
            tasks.spawn(async move {
                pods::run(client, shared, pod_rx).await;
                bail!("pod manager ended")
            });
        }
        Ok(HollowCluster { shared, tasks, lease_kick, status_kick, pod_control })
    }

    /// The names of the nodes, in index order.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.shared.nodes.iter().map(|n| n.name.as_str())
    }

    /// Simulates a hung kubelet on `name`: its lease is no longer renewed,
    /// its status no longer posted and its pods no longer acted on, so the
    /// node controller sees it go stale. `false` if no such hollow node.
    pub fn pause_node(&self, name: &str) -> bool {
        let Some(&i) = self.shared.by_name.get(name) else { return false };
        if !self.shared.nodes[i].paused.swap(true, Ordering::Relaxed) {
            tracing::info!(node = name, "paused");
        }
        true
    }

    /// Undoes [`pause_node`](Self::pause_node): renews the lease and posts
    /// status at once, then catches up on its pods.
    pub fn resume_node(&self, name: &str) -> bool {
        let Some(&i) = self.shared.by_name.get(name) else { return false };
        if self.shared.nodes[i].paused.swap(false, Ordering::Relaxed) {
            tracing::info!(node = name, "resumed");
            let _ = self.lease_kick.send(i);
            let _ = self.status_kick.send(i);
            let _ = self.pod_control.send(PodControl::Resume(i));
        }
        true
    }

    pub fn is_paused(&self, name: &str) -> Option<bool> {
        self.shared.by_name.get(name).map(|&i| self.shared.nodes[i].is_paused())
    }

    pub fn stats(&self) -> HollowStats {
        let s = &self.shared.stats;
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HollowStats {
            nodes_registered: l(&s.nodes_registered),
            lease_renewals: l(&s.lease_renewals),
            lease_failures: l(&s.lease_failures),
            status_updates: l(&s.status_updates),
            status_failures: l(&s.status_failures),
            pods_started: l(&s.pods_started),
            pods_exited: l(&s.pods_exited),
            pods_deleted: l(&s.pods_deleted),
            pod_write_failures: l(&s.pod_write_failures),
            pods_tracked: l(&s.pods_tracked),
        }
    }

    /// Waits until a background task stops, which only happens on a bug
    /// (the loops retry errors forever); the error says which.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        match self.tasks.join_next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(anyhow::Error::new(e).context("hollow task panicked")),
            None => Ok(()),
        }
    }

    /// Stops every task. Requests in flight are abandoned; nothing is
    /// deregistered (a kubelet that stops leaves its Node behind too).
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
        tracing::info!(nodes = self.shared.nodes.len(), "hollow nodes stopped");
    }
}

/// Runs `config.nodes` hollow nodes against the cluster `client` talks to
/// until `shutdown` completes (or a background task fails).
pub async fn run(client: kube::Client, config: HollowConfig, shutdown: impl Future) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let mut cluster = tokio::select! {
        c = HollowCluster::start(client, config) => c?,
        _ = &mut shutdown => return Ok(()),
    };
    let result = tokio::select! {
        r = cluster.wait() => r,
        _ = &mut shutdown => Ok(()),
    };
    cluster.shutdown().await;
    result
}

/// `now` as a Kubernetes `Time` string (RFC 3339, whole seconds, UTC).
pub(crate) fn time_string(t: k8s_openapi::jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `fut` bounded by `limit`: a request stuck on a dead connection must not
/// hold one of the few request slots (and a node's heartbeat) for the
/// client's 295s read timeout. Upstream's kubelet bounds its heartbeat
/// client the same way.
pub(crate) async fn bounded<T>(limit: Duration, fut: impl Future<Output = Result<T, kube::Error>>) -> Result<T, kube::Error> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(kube::Error::Service(format!("request timed out after {limit:?}").into())),
    }
}

/// Timeout of lease and node status requests.
pub(crate) fn heartbeat_timeout(config: &HollowConfig) -> Duration {
    config.renew_interval.max(Duration::from_secs(10))
}

/// Timeout of pod status writes and deletes.
pub(crate) const POD_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The API error code of a kube error, if the server answered.
pub(crate) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
