//! The ServiceAccounts controller (upstream's
//! `pkg/controller/serviceaccount/serviceaccounts_controller.go`): every
//! active Namespace has a `default` ServiceAccount.
//!
//! A Namespace is synced when it is added or updated, and when one of its
//! ServiceAccounts is deleted: each account the controller ensures
//! ([`Config::service_accounts`], upstream's `ServiceAccountsControllerOptions`:
//! just `default`) that is not in the cache is created (one that exists
//! already is fine). Namespaces that are not `Active` (Terminating: being
//! emptied by the namespace controller) are left alone, and creates refused
//! because the Namespace is being deleted are dropped, as upstream.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tokio::task::JoinSet;

use crate::informer::{Change, SharedInformers};
use crate::kit;
use crate::pod_control::{error_message, is_namespace_terminating, status_code};
use crate::queue::{self, Backoff, Queue};

#[derive(Clone, Debug)]
pub struct Config {
    /// The ServiceAccounts every active Namespace gets.
    pub service_accounts: Vec<String>,
    /// Namespaces synced at once (upstream runs one worker).
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { service_accounts: vec!["default".into()], workers: 1 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating serviceaccounts in namespace {0}: {1}")]
    Create(String, String),
}

struct Controller {
    client: Client,
    config: Config,
    namespaces: Store<Namespace>,
    accounts: Store<ServiceAccount>,
    queue: Queue<String>,
}

/// Runs the ServiceAccounts controller with the default [`Config`].
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with(client, Config::default()).await
}

/// Runs the ServiceAccounts controller until its informers stop.
pub async fn run_with(client: Client, config: Config) -> anyhow::Result<()> {
    run_shared(client.clone(), config, SharedInformers::new(client)).await
}

/// [`run_with`] on the process's shared informers.
pub async fn run_shared(client: Client, config: Config, informers: SharedInformers) -> anyhow::Result<()> {
    let (queue, workers) = queue::queue::<String>(Backoff::CONTROLLER);
    let ns_inf = informers.get::<Namespace>();
    let sa_inf = informers.get::<ServiceAccount>();
    let ctl = Arc::new(Controller { client, config, namespaces: ns_inf.store(), accounts: sa_inf.store(), queue: queue.clone() });
    let mut tasks = JoinSet::new();
    let c = ctl.clone();
    tasks.spawn(ns_inf.run("namespaces", move |change| match change {
        Change::Added(ns) | Change::Updated(_, ns) => c.queue.add(ns.name_any()),
        Change::Deleted(_) => {}
    }));
    let c = ctl.clone();
    tasks.spawn(sa_inf.run("serviceaccounts", move |change| {
        // Upstream reacts to deletions only: a deleted account comes back.
        if let Change::Deleted(sa) = change
            && let Some(ns) = sa.namespace()
        {
            c.queue.add(ns);
        }
    }));
    let _ = tokio::join!(ctl.namespaces.wait_until_ready(), ctl.accounts.wait_until_ready());
    tracing::info!("serviceaccount controller synced");
    let n = ctl.config.workers;
    let c = ctl.clone();
    tasks.spawn(kit::run_workers("serviceaccount", queue, workers, n, move |ns: String| {
        let c = c.clone();
        async move { c.sync(&ns).await }
    }));
    let _ = tasks.join_next().await;
    anyhow::bail!("serviceaccount controller stopped")
}

impl Controller {
    /// Upstream's `syncNamespace`.
    async fn sync(&self, name: &str) -> Result<Option<Duration>, Error> {
        let Some(ns) = self.namespaces.get(&ObjectRef::new(name)) else { return Ok(None) };
        let phase = ns.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
        if phase != "Active" || ns.metadata.deletion_timestamp.is_some() {
            // Nothing is created in a namespace that is not active.
            return Ok(None);
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), name);
        let mut failures = Vec::new();
        for sa_name in &self.config.service_accounts {
            if self.accounts.get(&ObjectRef::new(sa_name).within(name)).is_some() {
                continue;
            }
            let sa = ServiceAccount {
                metadata: ObjectMeta { name: Some(sa_name.clone()), namespace: Some(name.to_string()), ..Default::default() },
                ..Default::default()
            };
            match api.create(&PostParams::default(), &sa).await {
                Ok(_) => tracing::debug!(namespace = name, serviceaccount = %sa_name, "created serviceaccount"),
                // The cache was behind: it exists.
                Err(e) if status_code(&e) == Some(409) => {}
                Err(e) if is_namespace_terminating(&e) => {}
                Err(e) => failures.push(format!("{sa_name}: {}", error_message(&e))),
            }
        }
        if failures.is_empty() { Ok(None) } else { Err(Error::Create(name.to_string(), failures.join("; "))) }
    }
}
