//! `cargo bench -p tug-scheduler`: the scheduling algorithm alone (Filter
//! and Score over a snapshot, upstream's default plugins), the part of the
//! end-to-end `tug bench scheduler` that no API server touches. Prints the
//! mean time per scheduling cycle at 100, 1,000 and 5,000 nodes that hold
//! 10 of upstream's default pods each (100m CPU, 500Mi), for upstream's
//! pod-default pod.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;
use tug_scheduler::algorithm::schedule_pod;
use tug_scheduler::framework::{CycleState, NodeInfo, NominatedPods, PodInfo, Snapshot};
use tug_scheduler::plugins::default_framework_without_binder;

fn node(i: usize) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i:05}"), "labels": {"kubernetes.io/hostname": format!("node-{i:05}")}},
        "status": {"allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"}, "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"}},
    }))
    .expect("node")
}

fn pod(name: &str, node: Option<&str>) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "bench", "uid": format!("uid-{name}")},
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "pause", "image": "registry.k8s.io/pause:3.10", "ports": [{"containerPort": 80}],
                "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}, "limits": {"cpu": "100m", "memory": "500Mi"}},
            }],
        },
    }))
    .expect("pod")
}

fn snapshot(nodes: usize, pods_per_node: usize) -> Snapshot {
    Snapshot::from_nodes(
        (0..nodes)
            .map(|i| {
                let mut ni = NodeInfo::new(Arc::new(node(i)));
                for j in 0..pods_per_node {
                    let name = format!("p-{i}-{j}");
                    ni.add_pod(Arc::new(PodInfo::new(Arc::new(pod(&name, Some(ni.name()))))));
                }
                ni
            })
            .collect(),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // too, unoptimized and without it, as a smoke test: keep that short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let budget = if quick { Duration::from_millis(50) } else { Duration::from_secs(2) };
    let fwk = default_framework_without_binder(None);
    let incoming = Arc::new(PodInfo::new(Arc::new(pod("incoming", None))));
    let nominated = NominatedPods::default();
    println!("| nodes | cycles | mean per cycle | cycles/s (one core) |");
    println!("|------:|-------:|---------------:|--------------------:|");
    for nodes in [100, 1_000, 5_000] {
        let snap = snapshot(nodes, 10);
        let mut start = 0;
        let mut cycle = || {
            let r = schedule_pod(&fwk, &mut CycleState::new(), &incoming, &snap, &nominated, &mut start).expect("schedulable");
            std::hint::black_box(r);
        };
        for _ in 0..20 {
            cycle();
        }
        let (t0, mut n) = (Instant::now(), 0u32);
        while t0.elapsed() < budget {
            cycle();
            n += 1;
        }
        let per = t0.elapsed() / n;
        println!("| {nodes} | {n} | {:.1} µs | {:.0} |", per.as_secs_f64() * 1e6, 1.0 / per.as_secs_f64());
    }
}
