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
//!
//! [`run_all`] runs them together until a shutdown signal.

pub mod discovery;
pub mod garbage_collector;
pub mod namespace;
pub mod queue;

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
    let ns = namespace::run(client);
    tokio::select! {
        _ = shutdown => {
            tracing::info!("controllers shutting down");
            Ok(())
        }
        r = gc => r.context("garbage collector stopped"),
        r = ns => r.context("namespace controller stopped"),
    }
}
