//! The node agent (`tug agent`): a kubelet that runs real containers.
//!
//! Like upstream's kubelet it talks to the cluster only through the API
//! server, and to the machine only through a CRI runtime and CNI:
//! - [`containerd`]: Tugboat's own containerd (generated configuration
//!   under the data dir, supervised child process), unless an existing CRI
//!   socket is given (`--container-runtime-endpoint`);
//! - [`cri`]: the CRI v1 client (RuntimeService, ImageService);
//! - [`cni`]: the bridge + host-local + portmap configuration for the node's
//!   podCIDR, which the runtime applies to every sandbox;
//! - [`node`]: registers the Node, posts its status and renews its Lease,
//!   waits for `spec.podCIDR` (from the node IPAM controller) or falls back
//!   to a configured one;
//! - [`pod_sync`]: one worker per pod bound to the node: images, sandbox,
//!   init and app containers, restarts with back-off, status, deletion;
//!   [`podstatus`] computes the status, [`spec`] turns a pod spec into CRI
//!   configurations, [`probes`] runs liveness/readiness/startup probes,
//!   [`volumes`] sets up emptyDir, hostPath, configMap, secret, downwardAPI
//!   and projected volumes (updated in place), [`hooks`] runs postStart and
//!   preStop hooks and kills containers within their grace period,
//!   [`credentials`] turns imagePullSecrets into CRI pull auth;
//! - [`server`]: the kubelet's HTTPS server (port 10250, serving certificate
//!   signed by the cluster CA, only CA-signed clients in `system:masters`):
//!   `/healthz`, `/pods`, `/containerLogs` ([`logs`], from the CRI log
//!   files), and `/exec`, `/attach`, `/portForward`, which get a URL on the
//!   runtime's streaming server (CRI Exec, Attach, PortForward) and proxy
//!   the client's upgrade request there byte for byte.
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> anyhow::Result<()> {
//! let config = tug_kubelet::AgentConfig::new("/var/lib/tugboat", "node-1");
//! tug_kubelet::run(client, config, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod cni;
pub mod containerd;
pub mod credentials;
pub mod cri;
pub mod events;
pub mod hooks;
pub mod logs;
pub mod machine;
pub mod node;
pub mod pod_sync;
pub mod podstatus;
pub mod probes;
pub mod quantity;
pub mod server;
pub mod spec;
pub mod stats;
pub mod volumes;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "kubelet";
/// The kubelet version the Node reports.
pub const KUBELET_VERSION: &str = "v1.33.0-tugboat";
/// The pause image when none is configured (what scripts/test-image.sh serves).
pub const DEFAULT_PAUSE_IMAGE: &str = "127.0.0.1:5000/busybox:pause";

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The Node's name (default: the hostname).
    pub node_name: String,
    /// The Node's InternalIP (default: the first address of an interface that is up).
    pub node_ip: Option<IpAddr>,
    /// The data dir; the agent keeps its state in `<data-dir>/agent`.
    pub data_dir: PathBuf,
    /// An existing CRI socket; `None` starts Tugboat's own containerd.
    pub container_runtime_endpoint: Option<String>,
    /// The pod sandbox image (containerd's `sandbox_image`).
    pub pause_image: String,
    /// k3s-format `registries.yaml` (default `<data-dir>/registries.yaml`).
    pub private_registry: Option<PathBuf>,
    /// podCIDR to use when the Node has none after `pod_cidr_wait`
    /// (standalone operation without a node IPAM controller).
    pub pod_cidr: Option<String>,
    pub pod_cidr_wait: Duration,
    /// Name of the CNI bridge.
    pub cni_bridge: String,
    /// cgroup parent of every pod (`<cgroup_root>/pod<uid>`).
    pub cgroup_root: String,
    /// Pod log directory root (upstream: /var/log/pods).
    pub pod_log_dir: PathBuf,
    /// Extra Node labels.
    pub node_labels: BTreeMap<String, String>,
    pub max_pods: u32,
    /// Cluster DNS servers for pods with dnsPolicy ClusterFirst (empty: the host's resolvers).
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// Lease renewal period (upstream 10 s) and duration (40 s).
    pub lease_renew_interval: Duration,
    pub lease_duration_seconds: i32,
    /// How often the Node status is posted even when nothing changed.
    pub node_status_report_interval: Duration,
    /// First crash-loop / image-pull back-off (upstream 10 s, doubling to 5 min).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often the runtime is relisted for container state changes (upstream's PLEG: 1 s).
    pub relist_interval: Duration,
    /// Hard eviction thresholds: below them the node reports MemoryPressure
    /// or DiskPressure (`--kubelet-arg eviction-hard=...`).
    pub eviction_hard: EvictionHard,
    /// The kubelet server's address and port (upstream's `--address`,
    /// `--port`: 0.0.0.0:10250); the port is reported in the Node's
    /// `status.daemonEndpoints.kubeletEndpoint`.
    pub kubelet_address: IpAddr,
    pub kubelet_port: u16,
}

/// A free-resource threshold: an absolute amount or a share of the total.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    Bytes(u64),
    Percent(f64),
}

impl Threshold {
    /// `100Mi`, `5%`.
    pub fn parse(s: &str) -> anyhow::Result<Threshold> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            return Ok(Threshold::Percent(
                p.parse().with_context(|| format!("threshold {s:?}"))?,
            ));
        }
        let v = quantity::value(s).with_context(|| format!("threshold {s:?}"))?;
        Ok(Threshold::Bytes(v.max(0) as u64))
    }

    /// The threshold in bytes for a resource of `total` bytes.
    pub fn bytes_of(&self, total: u64) -> u64 {
        match *self {
            Threshold::Bytes(b) => b,
            Threshold::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

/// upstream's `--eviction-hard` signals the node conditions read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvictionHard {
    /// `memory.available` (upstream default 100Mi).
    pub memory: Threshold,
    /// `nodefs.available` of the data dir's filesystem. Upstream's default
    /// is 10%; build machines with a large shared filesystem routinely show
    /// less than that free while holding gigabytes, so the default here is
    /// an absolute 512Mi.
    pub nodefs: Threshold,
}

impl Default for EvictionHard {
    fn default() -> Self {
        EvictionHard {
            memory: Threshold::Bytes(100 << 20),
            nodefs: Threshold::Bytes(512 << 20),
        }
    }
}

impl EvictionHard {
    /// Applies `memory.available<100Mi,nodefs.available<10%` (other signals are ignored).
    pub fn apply(&mut self, spec: &str) -> anyhow::Result<()> {
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (signal, value) = part
                .split_once('<')
                .with_context(|| format!("eviction threshold {part:?}: expected SIGNAL<VALUE"))?;
            match signal.trim() {
                "memory.available" => self.memory = Threshold::parse(value)?,
                "nodefs.available" => self.nodefs = Threshold::parse(value)?,
                other => tracing::warn!(signal = other, "eviction signal not supported; ignored"),
            }
        }
        Ok(())
    }
}

impl AgentConfig {
    pub fn new(data_dir: impl Into<PathBuf>, node_name: &str) -> AgentConfig {
        let data_dir = data_dir.into();
        AgentConfig {
            node_name: node_name.to_string(),
            node_ip: None,
            pod_log_dir: data_dir.join("agent/pod-logs"),
            data_dir,
            container_runtime_endpoint: None,
            pause_image: DEFAULT_PAUSE_IMAGE.into(),
            private_registry: None,
            pod_cidr: None,
            pod_cidr_wait: Duration::from_secs(5),
            cni_bridge: "tug0".into(),
            cgroup_root: "/kubepods".into(),
            node_labels: BTreeMap::new(),
            max_pods: 110,
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
            lease_renew_interval: Duration::from_secs(10),
            lease_duration_seconds: 40,
            node_status_report_interval: Duration::from_secs(60),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            relist_interval: Duration::from_secs(1),
            eviction_hard: EvictionHard::default(),
            kubelet_address: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            kubelet_port: 10250,
        }
    }

    /// `<data-dir>/agent`.
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }

    /// Per-pod directories (hosts file, termination logs): `<agent>/pods/<uid>`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.agent_dir().join("pods").join(uid)
    }
}

/// What every part of the agent shares.
pub struct Agent {
    pub config: AgentConfig,
    pub client: kube::Client,
    pub cri: cri::Cri,
    pub registries: containerd::Registries,
    pub node_ip: IpAddr,
    /// The podCIDR in use (set once the network is configured).
    pub pod_cidr: std::sync::Mutex<Option<String>>,
    pub runtime_version: String,
    /// Earlier CPU readings, for the rates of `/stats/summary`.
    pub stats: stats::Sampler,
    /// The agent's events (pods' `Created`, `Started`, `Killing`, ...).
    pub events: events::EventQueue,
}

/// Runs the agent until `shutdown` resolves. Pods keep running after it
/// returns (their shims outlive containerd); a restarted agent adopts them.
pub async fn run(
    client: kube::Client,
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let agent_dir = config.agent_dir();
    std::fs::create_dir_all(&agent_dir)
        .with_context(|| format!("creating {}", agent_dir.display()))?;
    std::fs::create_dir_all(&config.pod_log_dir)?;
    let registries_file = config
        .private_registry
        .clone()
        .unwrap_or_else(|| config.data_dir.join("registries.yaml"));
    let registries = containerd::Registries::load(&registries_file)?;

    let (containerd, endpoint) = match &config.container_runtime_endpoint {
        Some(ep) => (None, ep.clone()),
        None => {
            let paths = containerd::ContainerdPaths::under(&agent_dir);
            let c = containerd::Containerd::start(paths, &config.pause_image, &registries).await?;
            let ep = c.endpoint();
            (Some(c), ep)
        }
    };
    let result = run_with_runtime(
        client,
        config,
        registries,
        &endpoint,
        containerd.as_ref().map(|c| c.paths.cni_conf_dir.clone()),
        shutdown,
    )
    .await;
    if let Some(c) = containerd {
        c.stop().await;
    }
    result
}

async fn run_with_runtime(
    client: kube::Client,
    config: AgentConfig,
    registries: containerd::Registries,
    endpoint: &str,
    cni_conf_dir: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (cri, version) = cri::Cri::connect(endpoint, Duration::from_secs(60)).await?;
    let runtime_version = format!("{}://{}", version.runtime_name, version.runtime_version);
    tracing::info!(%endpoint, runtime = %runtime_version, "CRI runtime connected");
    let node_ip = config.node_ip.unwrap_or_else(machine::default_ip);
    let events = events::EventQueue::start(client.clone(), &config.node_name);
    let agent = Arc::new(Agent {
        config,
        client,
        events,
        cri,
        registries,
        node_ip,
        pod_cidr: std::sync::Mutex::new(None),
        runtime_version,
        stats: stats::Sampler::default(),
    });
    let listener = server::bind(&agent.config).await?;
    let node_uid = node::register(&agent).await?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(server::run(agent.clone(), listener));
    tasks.spawn(node::run_lease(agent.clone(), node_uid));
    tasks.spawn(node::run_status(agent.clone()));
    // The network: the Node's podCIDR (or the fallback) into the CNI config.
    let conf_dir = cni_conf_dir.unwrap_or_else(|| PathBuf::from("/etc/cni/net.d"));
    let net_agent = agent.clone();
    // Finishes once the network is configured (the other tasks run forever).
    let network = tokio::spawn(async move {
        match node::wait_pod_cidr(&net_agent).await {
            Ok(cidr) => {
                let c = cni::CniConfig {
                    bridge: net_agent.config.cni_bridge.clone(),
                    pod_cidr: cidr.clone(),
                    ipam_data_dir: net_agent.config.agent_dir().join("cni/networks"),
                    mtu: 0,
                };
                if let Err(e) = cni::write(&conf_dir, &c) {
                    tracing::error!(error = %e, "writing the CNI configuration failed");
                    return;
                }
                // Without it pods still reach the node and each other, not
                // beyond: worth a warning, not a dead agent.
                if let Err(e) = cni::install_masquerade(&c) {
                    tracing::warn!(error = %format!("{e:#}"), "pods' traffic leaving the node is not masqueraded");
                }
                tracing::info!(pod_cidr = %cidr, bridge = %c.bridge, conf_dir = %conf_dir.display(), "pod network configured");
                *net_agent.pod_cidr.lock().expect("pod cidr lock") = Some(cidr);
                node::kick_status();
            }
            Err(e) => tracing::error!(error = %e, "no podCIDR for this node"),
        }
    });
    tasks.spawn(pod_sync::run(agent.clone()));
    tokio::select! {
        _ = shutdown => {
            tracing::info!("agent shutting down; pods keep running");
        }
        Some(r) = tasks.join_next() => {
            tasks.abort_all();
            network.abort();
            r.context("agent task panicked")?;
            anyhow::bail!("an agent task stopped unexpectedly");
        }
    }
    tasks.abort_all();
    network.abort();
    Ok(())
}

/// The time string Kubernetes uses (RFC 3339, seconds).
pub(crate) fn time_string(t: k8s_openapi::jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// HTTP status code of a kube API error, if it is one.
pub(crate) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Removes a directory tree, ignoring "not found".
pub(crate) fn remove_dir(p: &Path) {
    if let Err(e) = std::fs::remove_dir_all(p)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %p.display(), error = %e, "removing a directory failed");
    }
}

impl AgentConfig {
    /// Applies one `--kubelet-arg KEY=VALUE` (kubelet flag names, without
    /// dashes): `cgroup-root`, `max-pods`, `pod-cidr`, `cluster-dns`,
    /// `cluster-domain`, `eviction-hard`, `node-labels`,
    /// `node-status-report-frequency` (seconds), `port` and `address` (the
    /// kubelet server's).
    pub fn apply_kubelet_arg(&mut self, arg: &str) -> anyhow::Result<()> {
        let arg = arg.trim_start_matches('-');
        let (k, v) = arg
            .split_once('=')
            .with_context(|| format!("--kubelet-arg {arg:?}: expected KEY=VALUE"))?;
        match k {
            "cgroup-root" => self.cgroup_root = v.to_string(),
            "max-pods" => self.max_pods = v.parse().with_context(|| format!("max-pods {v:?}"))?,
            "pod-cidr" => self.pod_cidr = Some(v.to_string()),
            "cluster-dns" => {
                self.cluster_dns = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            "cluster-domain" => self.cluster_domain = v.to_string(),
            "port" => self.kubelet_port = v.parse().with_context(|| format!("port {v:?}"))?,
            "address" => self.kubelet_address = v.parse().with_context(|| format!("address {v:?}"))?,
            "eviction-hard" => self.eviction_hard.apply(v)?,
            "node-labels" => {
                for kv in v.split(',').filter(|s| !s.is_empty()) {
                    let (lk, lv) = kv.split_once('=').unwrap_or((kv, ""));
                    self.node_labels.insert(lk.to_string(), lv.to_string());
                }
            }
            "node-status-report-frequency" => {
                self.node_status_report_interval = Duration::from_secs(
                    v.trim_end_matches('s')
                        .parse()
                        .with_context(|| format!("{k} {v:?}"))?,
                )
            }
            other => anyhow::bail!("--kubelet-arg {other} is not supported"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_args() {
        let mut c = AgentConfig::new("/d", "n");
        c.apply_kubelet_arg(
            "eviction-hard=memory.available<200Mi,nodefs.available<10%,imagefs.available<15%",
        )
        .unwrap();
        assert_eq!(c.eviction_hard.memory, Threshold::Bytes(200 << 20));
        assert_eq!(c.eviction_hard.nodefs.bytes_of(1000), 100);
        c.apply_kubelet_arg("--max-pods=20").unwrap();
        assert_eq!(c.max_pods, 20);
        c.apply_kubelet_arg("node-labels=a=b,c=d").unwrap();
        assert_eq!(c.node_labels["c"], "d");
        c.apply_kubelet_arg("port=10350").unwrap();
        c.apply_kubelet_arg("address=127.0.0.1").unwrap();
        assert_eq!((c.kubelet_address.to_string(), c.kubelet_port), ("127.0.0.1".to_string(), 10350));
        assert!(c.apply_kubelet_arg("port=x").is_err());
        assert!(c.apply_kubelet_arg("bogus=1").is_err());
        assert!(c.apply_kubelet_arg("novalue").is_err());
    }
}
