//! `tug`: one binary for the whole cluster. This file only parses flags and
//! wires components together; each lives in its own crate.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod bench;

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
    /// Run the controllers (garbage collector, namespace) against a cluster.
    ControllerManager {
        /// Kubeconfig of the cluster to manage.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
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
    /// Do not run the node agent in this process (it arrives with the kubelet).
    #[arg(long)]
    disable_agent: bool,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    disable_scheduler: bool,
    /// Do not run the controllers in this process.
    #[arg(long)]
    disable_controller_manager: bool,
    /// Also run this many hollow nodes (simulated kubelets) in this process.
    #[arg(long, default_value_t = 0)]
    hollow_nodes: usize,
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
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
        Command::ControllerManager { kubeconfig } => {
            init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async {
                let client = client_from_kubeconfig(&kubeconfig).await?;
                tug_controllers::run_all(client, shutdown_signal()).await
            })
        }
        Command::Bench(args) => {
            init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(bench::run(args))
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TUG_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("TUG_LOG_FORMAT").map(|f| f == "json").unwrap_or(false);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
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
    let store = tug_store::open(&args.datastore_endpoint, &args.data_dir)
        .await
        .context("opening the datastore")?;
    let _compactor = tug_store::spawn_compactor(&store, Duration::from_secs(300), 100_000);
    let bind = SocketAddr::new(args.bind_address, args.https_listen_port);
    let advertise_host = if args.bind_address.is_unspecified() { "127.0.0.1".to_string() } else { args.bind_address.to_string() };
    let config = tug_apiserver::Config {
        bind,
        service_cidr: args.service_cidr.clone(),
        cluster_cidr: args.cluster_cidr.clone(),
        cluster_domain: args.cluster_domain.clone(),
        advertise_address: format!("{advertise_host}:{}", args.https_listen_port),
    };
    let server = tug_apiserver::ApiServer::start(config, Arc::clone(&store), &pki).await?;
    let port = server.local_addr.port();
    let url = format!("https://{advertise_host}:{port}");
    let kubeconfig_path = args.write_kubeconfig.clone().unwrap_or_else(|| args.data_dir.join("kubeconfig.yaml"));
    tug_pki::write_kubeconfig(&kubeconfig_path, &pki.admin_kubeconfig(&url, "default"))?;
    tracing::info!(kubeconfig = %kubeconfig_path.display(), %url, "tug server ready");
    if !args.disable_agent {
        tracing::warn!("the node agent is not built yet; running the control plane only (as with --disable-agent)");
    }
    // The controllers are clients like any other: they reach the API server
    // over HTTPS with a kubeconfig, even in the same process.
    let client = client_from_kubeconfig(&kubeconfig_path).await?;
    let controllers = if args.disable_controller_manager {
        tokio::spawn(async {
            shutdown_signal().await;
            Ok(())
        })
    } else {
        tokio::spawn(tug_controllers::run_all(client.clone(), shutdown_signal()))
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

/// The scheduler's configuration: leader election under a per-process
/// identity, so that two servers sharing one store never both schedule.
fn scheduler_config() -> tug_scheduler::SchedulerConfig {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let identity = format!("{}_{}", host.trim(), std::process::id());
    tug_scheduler::SchedulerConfig::with_leader_election(&identity)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn client_from_kubeconfig(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}
