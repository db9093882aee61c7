//! `tug`: one binary for the whole cluster. This file only parses flags and
//! wires components together; each lives in its own crate.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tug::agent::{client_from_kubeconfig, init_tracing, shutdown_signal};

mod bench;

/// mimalloc instead of glibc malloc: the API server's work is mostly small,
/// short-lived JSON allocations spread over tokio's worker threads, where
/// glibc's arena locking and chunk consolidation showed up at the top of the
/// create-path profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tug", version, about = "Tugboat: a Kubernetes-compatible cluster in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane (API server and store).
    Server(ServerArgs),
    /// Run the node agent (a kubelet with containerd, runc and CNI) against a cluster.
    Agent(tug::agent::AgentArgs),
    /// Run the system kubectl against this server's kubeconfig.
    Kubectl {
        /// Data dir whose kubeconfig to use.
        #[arg(long, env = "TUG_DATA_DIR", default_value = "/var/lib/tugboat")]
        data_dir: PathBuf,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run N simulated kubelets (hollow nodes) against a cluster, for scale runs.
    Hollow {
        /// How many nodes.
        #[arg(long)]
        nodes: usize,
        /// Kubeconfig of the cluster to join.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
        /// Node names are `<prefix><index>`.
        #[arg(long, default_value = "hollow-node-")]
        name_prefix: String,
        /// First index, so several processes can share one cluster.
        #[arg(long, default_value_t = 0)]
        first_index: usize,
        #[arg(long, default_value = "4")]
        cpu: String,
        #[arg(long, default_value = "16Gi")]
        memory: String,
    },
    /// Run the scheduler against a cluster (with leader election).
    Scheduler {
        /// Kubeconfig of the cluster to schedule for.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
    },
    /// Run the controllers against a cluster (with leader election).
    ControllerManager {
        /// Kubeconfig of the cluster to manage.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
        /// Pod addresses of the cluster: each node gets a subnet of it
        /// (empty: no node IPAM).
        #[arg(long, default_value = "10.42.0.0/16")]
        cluster_cidr: String,
        #[command(flatten)]
        controllers: ControllerFlags,
    },
    /// Benchmarks that print a table (`tug bench api`).
    Bench(bench::BenchArgs),
}

#[derive(clap::Args, Clone)]
struct ServerArgs {
    /// Where state, certificates and the kubeconfig live.
    #[arg(long, default_value = "/var/lib/tugboat")]
    data_dir: PathBuf,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    https_listen_port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Empty: embedded SQLite under the data dir. `http://host:2379[,...]`: etcd.
    #[arg(long, default_value = "")]
    datastore_endpoint: String,
    /// Where to write the admin kubeconfig (default `<data-dir>/kubeconfig.yaml`).
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: String,
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Extra names or IPs for the serving certificate.
    #[arg(long)]
    tls_san: Vec<String>,
    /// Do not run the node agent in this process.
    #[arg(long)]
    disable_agent: bool,
    /// Run the node agent in this process (needs root, containerd and runc).
    /// Off by default for now, so the control-plane test suites run
    /// without containerd.
    #[arg(long, env = "TUG_ENABLE_AGENT")]
    enable_agent: bool,
    #[command(flatten)]
    agent: tug::agent::AgentFlags,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    disable_scheduler: bool,
    /// Do not run the controllers in this process.
    #[arg(long)]
    disable_controller_manager: bool,
    /// Also run this many hollow nodes (simulated kubelets) in this process.
    #[arg(long, default_value_t = 0)]
    hollow_nodes: usize,
    #[command(flatten)]
    controllers: ControllerFlags,
}

/// kube-controller-manager's flags that Tugboat's controllers read
/// (durations as Go writes them: `40s`, `500ms`, `1m`).
#[derive(clap::Args, Clone)]
struct ControllerFlags {
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// How often the node lifecycle controller checks every node.
    #[arg(long, default_value = "5s", value_parser = tug_controllers::config::parse_duration)]
    node_monitor_period: Duration,
    /// How long a node may go without renewing its lease (or posting
    /// status) before it is marked Unknown and tainted unreachable.
    #[arg(long, default_value = "40s", value_parser = tug_controllers::config::parse_duration)]
    node_monitor_grace_period: Duration,
    /// Terminated pods kept before pod GC deletes the oldest (0: all kept).
    #[arg(long, default_value_t = 12500)]
    terminated_pod_gc_threshold: usize,
}

impl ControllerFlags {
    fn config(&self, cluster_cidr: &str) -> tug_controllers::ControllerConfig {
        tug_controllers::ControllerConfig {
            cluster_cidr: cluster_cidr.to_string(),
            node_cidr_mask_size: self.node_cidr_mask_size,
            node_monitor_period: self.node_monitor_period,
            node_monitor_grace_period: self.node_monitor_grace_period,
            terminated_pod_gc_threshold: self.terminated_pod_gc_threshold,
            ..Default::default()
        }
    }
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `--kubeconfig` on the command line, not from $KUBECONFIG (which a
    // token overrides).
    let kubeconfig_flag = matches
        .subcommand_matches("agent")
        .is_some_and(|m| m.value_source("kubeconfig") == Some(ValueSource::CommandLine));
    match cli.command {
        Command::Kubectl { data_dir, args } => {
            let kubeconfig = data_dir.join("kubeconfig.yaml");
            let status = std::process::Command::new("kubectl")
                .env("KUBECONFIG", &kubeconfig)
                .args(&args)
                .status()
                .context("running kubectl")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Command::Server(args) => {
            init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(run_server(args))
        }
        Command::Agent(args) => {
            init_tracing();
            tug::agent::run(args, kubeconfig_flag)
        }
        Command::Hollow { nodes, kubeconfig, name_prefix, first_index, cpu, memory } => {
            init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async {
                let client = client_from_kubeconfig(&kubeconfig).await?;
                let config = tug_hollow::HollowConfig { nodes, name_prefix, first_index, cpu, memory, ..Default::default() };
                tug_hollow::run(client, config, shutdown_signal()).await
            })
        }
        Command::Scheduler { kubeconfig } => {
            init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async {
                let client = client_from_kubeconfig(&kubeconfig).await?;
                tug_scheduler::run(client, scheduler_config(), shutdown_signal()).await
            })
        }
        Command::ControllerManager { kubeconfig, cluster_cidr, controllers } => {
            init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async {
                let client = client_from_kubeconfig(&kubeconfig).await?;
                tug_controllers::run_all_elected(client, controllers.config(&cluster_cidr), controller_election(), shutdown_signal()).await
            })
        }
        Command::Bench(args) => {
            init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(bench::run(args))
        }
    }
}

/// Parses `10.43.0.0/16` and returns its first usable address.
fn first_service_ip(cidr: &str) -> anyhow::Result<IpAddr> {
    let (addr, _) = cidr.split_once('/').context("service CIDR needs a prefix length")?;
    let ip: std::net::Ipv4Addr = addr.parse().context("service CIDR must be IPv4")?;
    Ok(IpAddr::V4(std::net::Ipv4Addr::from(u32::from(ip) + 1)))
}

async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let service_ip = first_service_ip(&args.service_cidr)?;
    let mut sans = tug_pki::ServingSans::for_host(service_ip, &args.cluster_domain, &args.tls_san);
    if !args.bind_address.is_unspecified() {
        sans.push_ip(args.bind_address);
    }
    let pki = tug_pki::ClusterPki::load_or_create(&args.data_dir.join("tls"), &sans)?;
    // What agents join with (`tug agent --server URL --token T`), as k3s's
    // `server/node-token`: created once, kept across restarts.
    let node_token_path = args.data_dir.join("server").join("node-token");
    let node_token = tug_pki::NodeToken::load_or_create(&node_token_path, pki.ca_cert_pem())?;
    let store = tug_store::open(&args.datastore_endpoint, &args.data_dir)
        .await
        .context("opening the datastore")?;
    let bind = SocketAddr::new(args.bind_address, args.https_listen_port);
    let advertise_host = if args.bind_address.is_unspecified() { "127.0.0.1".to_string() } else { args.bind_address.to_string() };
    let config = tug_apiserver::Config {
        bind,
        service_cidr: args.service_cidr.clone(),
        cluster_cidr: args.cluster_cidr.clone(),
        cluster_domain: args.cluster_domain.clone(),
        advertise_address: format!("{advertise_host}:{}", args.https_listen_port),
        node_token: Some(node_token),
    };
    let server = tug_apiserver::ApiServer::start(config, Arc::clone(&store), &pki).await?;
    // Never compact history the watch cache has not read yet: a cache that
    // lags (a burst on two busy cores) must catch up, not start over.
    let cache = Arc::clone(&server.server.ctx.cache);
    let _compactor = tug_store::spawn_compactor_below(&store, Duration::from_secs(300), 100_000, move || cache.revision());
    let port = server.local_addr.port();
    let url = format!("https://{advertise_host}:{port}");
    let kubeconfig_path = args.write_kubeconfig.clone().unwrap_or_else(|| args.data_dir.join("kubeconfig.yaml"));
    tug_pki::write_kubeconfig(&kubeconfig_path, &pki.admin_kubeconfig(&url, "default"))?;
    tracing::info!(kubeconfig = %kubeconfig_path.display(), node_token = %node_token_path.display(), %url, "tug server ready");
    let run_agent = !args.disable_agent
        && args.enable_agent
        && (args.agent.container_runtime_endpoint.is_some() || tug_kubelet::containerd::installed());
    if run_agent {
        let agent_client = client_from_kubeconfig(&kubeconfig_path).await?;
        let config = args.agent.config(&args.data_dir)?;
        tokio::spawn(async move {
            if let Err(e) = tug_kubelet::run(agent_client, config, shutdown_signal()).await {
                tracing::error!(error = format!("{e:#}"), "node agent stopped");
            }
        });
    } else if !args.disable_agent {
        tracing::info!("node agent not started in this process (it needs --enable-agent and containerd); run `tug agent` or pass --enable-agent");
    }
    // The controllers and the scheduler are clients like any other (kube-rs's
    // Client, through authorization, admission and the watch cache), but in
    // this process their requests skip TLS, HTTP/2 and the socket: the
    // loopback transport hands them to the server directly.
    let loopback = tug_apiserver::loopback::Loopback::new(
        Arc::clone(&server.server),
        tug_pki::PeerIdentity { user: tug_pki::ADMIN_USER.into(), groups: vec![tug_pki::ADMIN_GROUP.into()] },
    );
    let client = kube::Client::new(loopback, "default");
    let controllers = if args.disable_controller_manager {
        tokio::spawn(async {
            shutdown_signal().await;
            Ok(())
        })
    } else {
        let config = args.controllers.config(&args.cluster_cidr);
        tokio::spawn(tug_controllers::run_all_elected(client.clone(), config, controller_election(), shutdown_signal()))
    };
    if !args.disable_scheduler {
        let scheduler_client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = tug_scheduler::run(scheduler_client, scheduler_config(), shutdown_signal()).await {
                tracing::error!(error = %e, "scheduler stopped");
            }
        });
    }
    if args.hollow_nodes > 0 {
        let config = tug_hollow::HollowConfig { nodes: args.hollow_nodes, ..Default::default() };
        tokio::spawn(async move {
            if let Err(e) = tug_hollow::run(client, config, shutdown_signal()).await {
                tracing::error!(error = %e, "hollow nodes stopped");
            }
        });
    }
    tokio::select! {
        r = server.wait() => r,
        r = controllers => {
            r??;
            tracing::info!("shutting down");
            Ok(())
        }
    }
}

/// The controller manager's leader election: the
/// `kube-system/kube-controller-manager` Lease under a per-process identity
/// (host name and a random suffix), so that of several controller managers
/// sharing one store only one acts at a time.
fn controller_election() -> tug_controllers::leader::LeaderElectionConfig {
    tug_controllers::leader_election(&tug_controllers::leader::default_identity())
}

/// The scheduler's configuration: leader election under a per-process
/// identity, so that two servers sharing one store never both schedule.
fn scheduler_config() -> tug_scheduler::SchedulerConfig {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let identity = format!("{}_{}", host.trim(), std::process::id());
    tug_scheduler::SchedulerConfig::with_leader_election(&identity)
}
