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
//!
//! [`run_all`] runs them together until a shutdown signal.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod discovery;
pub mod garbage_collector;
pub mod informer;
pub mod job;
pub mod kit;
pub mod namespace;
pub mod pod_control;
pub mod queue;
pub mod replicaset;
pub mod revision;
pub mod statefulset;

use std::future::Future;

use anyhow::Context;

/// Runs every controller concurrently until `shutdown` completes.
///
/// Returns `Ok(())` on shutdown. The controllers retry API failures on their
/// own, so an `Err` means one of them could not go on at all; the others are
/// stopped then too (dropping a controller aborts its tasks).
pub async fn run_all(client: kube::Client, shutdown: impl Future) -> anyhow::Result<()> {
    tracing::info!("starting controllers: garbage-collector, namespace");
    let gc = garbage_collector::run(client.clone());
    let ns = namespace::run(client.clone());
    let rs = replicaset::run(client.clone());
    let deploy = deployment::run(client.clone());
    let job = job::run(client.clone());
    let cronjob = cronjob::run(client.clone());
    let daemonset = daemonset::run(client.clone());
    let statefulset = statefulset::run(client.clone());
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
    }
}
