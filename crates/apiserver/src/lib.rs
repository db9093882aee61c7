//! The Tugboat API server: HTTPS, authentication by client certificate,
//! discovery and OpenAPI, generic REST storage over the revisioned store,
//! and LIST/WATCH served from an in-memory watch cache.
//!
//! Request path: [`tls`] accepts and identifies the peer → [`http::Server`]
//! authenticates, routes and asks the [`authz::Authorizer`] → [`rest::Ctx`] runs admission, validation and
//! the store write → [`cache::WatchCache`] sees the change through the store
//! watch and fans it out to watchers.

pub mod alloc;
pub mod authz;
pub mod bootstrap;
pub mod cache;
pub mod discovery;
pub mod fields;
pub mod http;
pub mod join;
pub mod kubelet;
pub mod loopback;
pub mod metrics;
pub mod metrics_api;
pub mod openapi;
pub mod output;
pub mod quota;
pub mod request;
pub mod rest;
pub mod tls;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use tug_pki::ClusterPki;
use tug_store::Store;

/// What `tug server` passes in.
#[derive(Clone, Debug)]
pub struct Config {
    pub bind: SocketAddr,
    pub service_cidr: String,
    pub cluster_cidr: String,
    pub cluster_domain: String,
    /// The address clients are told to use (`host:port`).
    pub advertise_address: String,
    /// The node join token: its password buys a kubelet client certificate
    /// (`join.rs`). `None`: agents cannot join with a token.
    pub node_token: Option<tug_pki::NodeToken>,
}

/// A running API server.
pub struct ApiServer {
    pub server: Arc<http::Server>,
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Starts the watch cache, bootstraps the cluster's built-in objects
    /// and listens for HTTPS.
    pub async fn start(config: Config, store: Arc<dyn Store>, pki: &ClusterPki) -> anyhow::Result<ApiServer> {
        let cache = cache::WatchCache::start(store.clone()).await?;
        let alloc = alloc::Allocator::new(store.clone(), &config.service_cidr)?;
        let server = Arc::new(http::Server {
            ctx: rest::Ctx { store, cache, alloc },
            authorizer: Box::new(authz::AlwaysAllow),
            server_address: config.advertise_address.clone(),
            metrics: metrics::Metrics::default(),
            kubelets: kubelet::Kubelets::new(pki, config.node_token.clone())?,
            metric_reads: Default::default(),
        });
        bootstrap::ensure_builtin_objects(&server.ctx, &config.advertise_address).await?;
        let listener = tokio::net::TcpListener::bind(config.bind).await?;
        let local_addr = listener.local_addr()?;
        let task = tokio::spawn(tls::serve(listener, pki.server_tls_config(), server.clone()));
        tracing::info!(%local_addr, "API server listening");
        Ok(ApiServer { server, local_addr, task })
    }

    /// Runs until the listener fails.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?;
        Ok(())
    }
}
