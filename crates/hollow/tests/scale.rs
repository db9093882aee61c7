//! Scale smoke test: 500 hollow nodes in this process against a real
//! `tug server`, all Ready, with the process's memory per node printed.
//!
//! Needs the binary: `cargo build -p tug` first. Run with `--nocapture` to
//! see the figures.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use support::{Cluster, rss_kib, wait_for};
use tug_hollow::{HollowCluster, HollowConfig};

/// 500 by default; `HOLLOW_SCALE_NODES` overrides it for a bigger manual run.
fn nodes() -> usize {
    std::env::var("HOLLOW_SCALE_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(500)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_nodes_register_ready() {
    let n = nodes();
    let c = Cluster::start().await;
    let rss_before = rss_kib();
    let started = Instant::now();
    let config = HollowConfig { nodes: n, renew_interval: Duration::from_secs(10), status_interval: Duration::from_secs(60), ..Default::default() };
    let hollow = tokio::time::timeout(Duration::from_secs(180), HollowCluster::start(c.client.clone(), config))
        .await
        .expect("the nodes register within 3 minutes")
        .expect("hollow nodes start");
    let registered_in = started.elapsed();
    let rss_registered = rss_kib();
    // Steady state (watches listed, every lease renewed once more on
    // average) before this test's own lists allocate anything.
    wait_for("a second round of lease renewals", Duration::from_secs(90), || async {
        let s = hollow.stats();
        if s.lease_renewals >= 2 * n as u64 { Ok(()) } else { Err(format!("{s:?}")) }
    })
    .await;
    let rss_after = rss_kib();

    let nodes: Api<Node> = Api::all(c.client.clone());
    wait_for("every node Ready", Duration::from_secs(60), || async {
        let l = nodes.list(&ListParams::default().labels("tugboat.io/hollow=true")).await.map_err(|e| e.to_string())?;
        let ready = l
            .items
            .iter()
            .filter(|node| {
                node.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready == n { Ok(()) } else { Err(format!("{ready}/{} ready", l.items.len())) }
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    assert_eq!(leases.list(&ListParams::default()).await.unwrap().items.len(), n);

    // A pod on the last node runs: the shared pod watch serves all nodes.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let last = format!("hollow-node-{}", n - 1);
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "probe"}, "spec": {"nodeName": last, "containers": [{"name": "a", "image": "x"}]}})).unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    wait_for("probe Running", Duration::from_secs(30), || async {
        let p = pods.get("probe").await.map_err(|e| e.to_string())?;
        let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
        if phase == "Running" { Ok(()) } else { Err(phase) }
    })
    .await;

    let stats = hollow.stats();
    assert_eq!(stats.lease_failures, 0, "{stats:?}");
    println!(
        "hollow scale: {n} nodes registered (all Ready) in {:.1}s; \
         test process RSS {:.1} MiB before, {:.1} MiB after registration, {:.1} MiB after a renew interval ({:.1} KiB/node incl. client and runtime, {:.1} KiB/node added); stats {stats:?}",
        registered_in.as_secs_f64(),
        rss_before as f64 / 1024.0,
        rss_registered as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_after as f64 / n as f64,
        rss_after.saturating_sub(rss_before) as f64 / n as f64,
    );
    hollow.shutdown().await;
}
