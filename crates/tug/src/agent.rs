//! The node agent's command line, shared by `tug agent`, `tug server` (its
//! in-process agent) and `tug-agent`, the agent-only binary: flags in k3s's
//! names, joining with the node token, and the process plumbing (logs,
//! signals, the client) that every `tug` command also uses.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// `tug agent`'s own flags (k3s's names). Credentials come from the node
/// token (`--server` and `--token`, as k3s agents join) or a kubeconfig.
#[derive(clap::Args, Clone)]
pub struct AgentArgs {
    /// The API server's URL, `https://HOST:6443`: the server to join with
    /// `--token`, or overriding the kubeconfig's.
    #[arg(long, env = "TUG_URL")]
    pub server: Option<String>,
    /// The node token, from the server's `<data-dir>/server/node-token`
    /// (`K10<CA hash>::node:<password>`): join the cluster with it.
    #[arg(long, env = "TUG_TOKEN", requires = "server", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the node token.
    #[arg(long, env = "TUG_TOKEN_FILE", requires = "server", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Kubeconfig with the agent's credentials (instead of a token).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Where the agent keeps its state (`<data-dir>/agent`).
    #[arg(long, default_value = "/var/lib/tugboat")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub agent: AgentFlags,
}

/// The node agent's flags, shared by `tug agent` and `tug server`.
#[derive(clap::Args, Clone)]
pub struct AgentFlags {
    /// The Node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The Node's InternalIP (default: the first address of an interface that is up).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Use this CRI socket instead of starting Tugboat's own containerd.
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,
    /// The pod sandbox image.
    #[arg(long, default_value = tug_kubelet::DEFAULT_PAUSE_IMAGE)]
    pub pause_image: String,
    /// Registry configuration in k3s's registries.yaml format (default `<data-dir>/registries.yaml`).
    #[arg(long)]
    pub private_registry: Option<PathBuf>,
    /// Extra Node labels, `KEY=VALUE`.
    #[arg(long = "node-label")]
    pub node_labels: Vec<String>,
    /// Kubelet settings, `KEY=VALUE`: cgroup-root, max-pods, pod-cidr
    /// (used when the Node gets none from the cluster), cluster-dns,
    /// cluster-domain, eviction-hard, node-labels, port and address (of the
    /// kubelet's HTTPS server, default 0.0.0.0:10250).
    #[arg(long = "kubelet-arg")]
    pub kubelet_args: Vec<String>,
    /// Name of the CNI bridge.
    #[arg(long, default_value = "tug0")]
    pub cni_bridge: String,
}

impl AgentFlags {
    pub fn config(&self, data_dir: &std::path::Path) -> anyhow::Result<tug_kubelet::AgentConfig> {
        let name = self.node_name.clone().unwrap_or_else(tug_kubelet::machine::hostname);
        let mut c = tug_kubelet::AgentConfig::new(data_dir, &name);
        c.node_ip = self.node_ip;
        c.container_runtime_endpoint = self.container_runtime_endpoint.clone();
        c.pause_image = self.pause_image.clone();
        c.private_registry = self.private_registry.clone();
        c.cni_bridge = self.cni_bridge.clone();
        for l in &self.node_labels {
            c.apply_kubelet_arg(&format!("node-labels={l}"))?;
        }
        for a in &self.kubelet_args {
            c.apply_kubelet_arg(a)?;
        }
        Ok(c)
    }
}

/// Runs the node agent until SIGTERM or Ctrl-C: joins the cluster with the
/// node token (or reads a kubeconfig), then runs the kubelet.
/// `kubeconfig_flag`: `--kubeconfig` was given on the command line (not
/// through `$KUBECONFIG`, which a token overrides).
pub fn run(args: AgentArgs, kubeconfig_flag: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let config = args.agent.config(&args.data_dir)?;
        let token = match (&args.token, &args.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => Some(std::fs::read_to_string(f).with_context(|| format!("reading --token-file {}", f.display()))?),
            (None, None) => None,
        };
        let client = match (token, &args.kubeconfig) {
            (Some(_), Some(_)) if kubeconfig_flag => anyhow::bail!("--token and --kubeconfig are alternatives: give one"),
            (Some(token), _) => {
                let server = args.server.as_deref().context("--token needs --server")?;
                let path = crate::join::kubeconfig_path(&args.data_dir);
                join_cluster(server, &token, &config.node_name, &path).await?;
                client_from_kubeconfig(&path).await?
            }
            (None, Some(kubeconfig)) => agent_client(kubeconfig, args.server.as_deref()).await?,
            (None, None) => anyhow::bail!("tug agent needs --server and --token (or TUG_URL and TUG_TOKEN), or --kubeconfig"),
        };
        tug_kubelet::run(client, config, shutdown_signal()).await
    })
}

pub fn init_tracing() {
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


/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Joins the cluster at `server` with the node token, writing the agent's
/// kubeconfig at `path` (or keeping a still-good one). Waits for a server
/// that cannot be reached yet; a refused token or a CA that does not match
/// it is final.
async fn join_cluster(server: &str, token: &str, node_name: &str, path: &std::path::Path) -> anyhow::Result<()> {
    loop {
        match crate::join::bootstrap(server, token, node_name, path).await {
            Ok(_) => return Ok(()),
            Err(crate::join::JoinError::Unavailable(e)) => {
                tracing::warn!(error = format!("{e:#}"), "cannot join the cluster yet; retrying in 5s");
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("joining the cluster at {server}"))),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown_signal() => anyhow::bail!("interrupted while joining the cluster"),
        }
    }
}

/// The agent's client: the kubeconfig's credentials, at `--server` if given.
async fn agent_client(path: &std::path::Path, server: Option<&str>) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    if let Some(url) = server {
        config.cluster_url = url.parse().with_context(|| format!("--server {url}"))?;
    }
    Ok(kube::Client::try_from(config)?)
}

pub async fn client_from_kubeconfig(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}
