//! Tugboat's controllers.
//!
//! Every controller here talks to the cluster only through the API server,
//! with the kube-rs client, so it can run in the `tug server` process or on
//! another machine alike. Each follows kube-runtime's model: a **watcher**
//! (LIST + WATCH with backoff) feeds a **reflector** (an in-memory view rebuilt
//! from the watch after every restart), which feeds a **controller** (a
//! deduplicating, delaying work queue whose workers reconcile one key at a
//! time and retry failures with backoff).
//!
//! - [`garbage_collector`]: upstream's `pkg/controller/garbagecollector`:
//!   deletes objects whose owners are gone, and carries out the `orphan` and
//!   `foregroundDeletion` finalizers.
//! - [`namespace`]: upstream's `pkg/controller/namespace`: empties a
//!   Namespace being deleted, then removes its `kubernetes` finalizer.
//! - [`replicaset`]: upstream's `pkg/controller/replicaset`: keeps the pods
//!   of ReplicaSets and ReplicationControllers at their replica counts.
//! - [`deployment`]: upstream's `pkg/controller/deployment`: rolling and
//!   recreate rollouts through ReplicaSets, revisions, pause, progress
//!   deadlines, and Tugboat's automatic rollback.
//! - [`job`]: upstream's `pkg/controller/job` (and `ttlafterfinished`):
//!   pods up to parallelism until completions, NonIndexed and Indexed,
//!   backoff limit, deadline, suspend, tracking finalizers, TTL.
//! - [`cronjob`]: upstream's `pkg/controller/cronjob`: Jobs on a cron
//!   schedule in a time zone, concurrency policies, history limits.
//! - [`daemonset`]: upstream's `pkg/controller/daemon`: a pod per eligible
//!   node, rolling updates with maxUnavailable/maxSurge, OnDelete.
//! - [`statefulset`]: upstream's `pkg/controller/statefulset`: ordinal pods,
//!   ordered or parallel, PVCs from claim templates, partitioned updates.
//! - [`revision`]: ControllerRevisions for DaemonSets and StatefulSets;
//!   [`kit`]: what those four share beyond [`pod_control`] and [`informer`].
//! - [`node_lifecycle`]: upstream's `pkg/controller/nodelifecycle` and
//!   `tainteviction`: Nodes whose Lease goes stale become Unknown and
//!   tainted, their pods not ready, and pods not tolerating a Node's
//!   `NoExecute` taints are evicted (not while every Node is down).
//! - [`node_ipam`]: upstream's `pkg/controller/nodeipam`: a pod CIDR per
//!   Node out of the cluster CIDR.
//! - [`pod_gc`]: upstream's `pkg/controller/podgc`: force-deletes orphaned,
//!   unscheduled terminating and surplus terminated pods.
//! - [`endpoints`]: upstream's `pkg/controller/endpoint`: an Endpoints per
//!   Service with a selector (ready and not-ready pod addresses, target
//!   ports resolved per pod); it also runs [`endpointslice`], upstream's
//!   `pkg/controller/endpointslice` (discovery.k8s.io/v1 EndpointSlices,
//!   up to 100 endpoints each), over the same pod and Service watches.
//! - [`serviceaccount`]: upstream's `pkg/controller/serviceaccount`: a
//!   `default` ServiceAccount in every active Namespace.
//! - [`disruption`]: upstream's `pkg/controller/disruption`: the status of
//!   PodDisruptionBudgets (healthy, desired and expected pods, disruptions
//!   allowed), which the API server's eviction subresource spends.
//! - [`resourcequota`]: upstream's `pkg/controller/resourcequota`:
//!   ResourceQuota `status.hard` and `status.used`, recounted on deletions
//!   and every five minutes (the API server's admission charges creates).
//! - [`persistentvolume`]: upstream's `pkg/controller/volume/persistentvolume`
//!   (`persistentvolume-binder`): binds claims to the smallest fitting
//!   statically provisioned PersistentVolume, releases volumes whose claim
//!   is deleted.
//!
//! [`run_all`] runs them together until a shutdown signal;
//! [`run_all_with`] with a [`ControllerConfig`] (kube-controller-manager's
//! flags); [`run_all_elected`] only while holding the
//! `kube-system/kube-controller-manager` Lease ([`leader`], shared with the
//! scheduler), so that of several controller managers one acts at a time.

pub mod config;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod discovery;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod garbage_collector;
pub mod informer;
pub mod job;
pub mod kit;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod persistentvolume;
pub mod pod_control;
pub mod pod_gc;
pub mod queue;
pub mod replicaset;
pub mod resourcequota;
pub mod revision;
pub mod serviceaccount;
pub mod statefulset;

use std::future::Future;

use anyhow::Context;

pub use config::ControllerConfig;
pub use tug_leader as leader;

/// The controller manager's Lease in `kube-system` (upstream's name).
pub const LEASE_NAME: &str = "kube-controller-manager";

/// Runs every controller concurrently until `shutdown` completes.
///
/// Returns `Ok(())` on shutdown. The controllers retry API failures on their
/// own, so an `Err` means one of them could not go on at all; the others are
/// stopped then too (dropping a controller aborts its tasks).
pub async fn run_all(client: kube::Client, shutdown: impl Future) -> anyhow::Result<()> {
    run_all_with(client, ControllerConfig::default(), shutdown).await
}

/// [`run_all`] with `config` instead of the defaults.
pub async fn run_all_with(client: kube::Client, config: ControllerConfig, shutdown: impl Future) -> anyhow::Result<()> {
    tracing::info!("starting controllers");
    // One watch and one store per resource type for all controllers.
    let informers = informer::SharedInformers::new(client.clone());
    let gc = garbage_collector::run(client.clone());
    let ns = namespace::run(client.clone());
    let rs = replicaset::run_shared(client.clone(), informers.clone());
    let deploy = deployment::run_shared(client.clone(), informers.clone());
    let job = job::run_shared(client.clone(), Default::default(), informers.clone());
    let cronjob = cronjob::run_shared(client.clone(), Default::default(), informers.clone());
    let daemonset = daemonset::run_shared(client.clone(), Default::default(), informers.clone());
    let statefulset = statefulset::run_shared(client.clone(), Default::default(), informers.clone());
    let node_lifecycle = node_lifecycle::run_shared(client.clone(), config.clone(), informers.clone());
    let node_ipam = node_ipam::run_shared(client.clone(), config.clone(), informers.clone());
    let pod_gc = pod_gc::run_shared(client.clone(), config.clone(), informers.clone());
    let endpoints = endpoints::run_shared(client.clone(), Default::default(), informers.clone());
    let serviceaccount = serviceaccount::run_shared(client.clone(), Default::default(), informers.clone());
    let disruption = disruption::run_shared(client.clone(), Default::default(), informers.clone());
    let resourcequota = resourcequota::run_shared(client.clone(), Default::default(), informers.clone());
    let pv_binder = persistentvolume::run_shared(client.clone(), Default::default(), informers.clone());
    tokio::select! {
        _ = shutdown => {
            tracing::info!("controllers shutting down");
            Ok(())
        }
        r = gc => r.context("garbage collector stopped"),
        r = ns => r.context("namespace controller stopped"),
        r = rs => r.context("replicaset controller stopped"),
        r = deploy => r.context("deployment controller stopped"),
        r = job => r.context("job controller stopped"),
        r = cronjob => r.context("cronjob controller stopped"),
        r = daemonset => r.context("daemonset controller stopped"),
        r = statefulset => r.context("statefulset controller stopped"),
        r = node_lifecycle => r.context("node lifecycle controller stopped"),
        r = node_ipam => r.context("node IPAM controller stopped"),
        r = pod_gc => r.context("pod GC controller stopped"),
        r = endpoints => r.context("endpoints and endpointslice controllers stopped"),
        r = serviceaccount => r.context("serviceaccount controller stopped"),
        r = disruption => r.context("disruption controller stopped"),
        r = resourcequota => r.context("resource quota controller stopped"),
        r = pv_binder => r.context("persistentvolume-binder controller stopped"),
    }
}

/// Leader election for the controller manager: the [`LEASE_NAME`] Lease
/// under `identity` (see [`leader::default_identity`]), upstream's timings.
pub fn leader_election(identity: &str) -> leader::LeaderElectionConfig {
    leader::LeaderElectionConfig::new(LEASE_NAME, identity)
}

/// [`run_all_with`], but only while holding the lease `election` names:
/// campaigns until it leads, runs every controller while it renews, stops
/// them all if the lease is lost (and campaigns again), and gives the lease
/// up on shutdown. Two controller managers never act at once.
pub async fn run_all_elected(
    client: kube::Client,
    config: ControllerConfig,
    election: leader::LeaderElectionConfig,
    shutdown: impl Future,
) -> anyhow::Result<()> {
    tracing::info!(lease = %election.name, identity = %election.identity, "controller manager: campaigning for leadership");
    leader::run_elected(client.clone(), election, shutdown, || run_all_with(client.clone(), config.clone(), std::future::pending::<()>())).await
}
