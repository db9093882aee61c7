//! `cargo bench -p tug-apiserver --bench managed_fields`: the managedFields
//! bookkeeping of a pod's three writes in `tug bench scheduler` (the create,
//! the scheduler's binding, the kubelet's status), alone. Prints the mean
//! time of `fields::record_update` for each.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tug_apiserver::fields::record_update;

/// The server's allocator: this work is mostly small allocations.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn created() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pod-1", "namespace": "bench", "uid": "0b7c-1", "creationTimestamp": "2026-11-27T15:00:00Z",
                     "labels": {"app": "bench", "pod-template-hash": "5d8f"}},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                 "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                 "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}, "limits": {"cpu": "100m", "memory": "500Mi"}},
                                 "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                                 "imagePullPolicy": "IfNotPresent"}],
                 "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                 "serviceAccountName": "default", "securityContext": {}, "schedulerName": "default-scheduler",
                 "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority", "priority": 0,
                 "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                                 {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]},
        "status": {"phase": "Pending", "qosClass": "Guaranteed"}})
}

fn bound(mut p: Value) -> Value {
    p["spec"]["nodeName"] = json!("hollow-node-00042");
    p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-27T15:00:01Z"}]);
    p
}

fn running(mut p: Value) -> Value {
    let t = "2026-11-27T15:00:02Z";
    p["status"] = json!({"phase": "Running", "qosClass": "Guaranteed", "hostIP": "10.0.0.42", "hostIPs": [{"ip": "10.0.0.42"}],
        "podIP": "10.244.42.7", "podIPs": [{"ip": "10.244.42.7"}], "startTime": t,
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": t},
            {"type": "Initialized", "status": "True", "lastTransitionTime": t},
            {"type": "Ready", "status": "True", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-27T15:00:01Z"}],
        "containerStatuses": [{"name": "pause", "ready": true, "started": true, "restartCount": 0,
            "image": "registry.k8s.io/pause:3.10", "imageID": "registry.k8s.io/pause@sha256:ee6521f2",
            "containerID": "containerd://5f0c", "state": {"running": {"startedAt": t}}}]});
    p
}

/// Times `f` on fresh copies of `input` (copied before the clock starts).
fn time(what: &str, budget: Duration, input: &Value, mut f: impl FnMut(&mut Value)) {
    let mut total = Duration::ZERO;
    let mut n = 0u32;
    while total < budget {
        let mut copies: Vec<Value> = (0..256).map(|_| input.clone()).collect();
        let start = Instant::now();
        for o in &mut copies {
            f(o);
        }
        total += start.elapsed();
        n += copies.len() as u32;
    }
    let per = total / n;
    println!("| {what:<42} | {:>9.1} µs | {n:>8} |", per.as_secs_f64() * 1e6);
}

fn main() {
    // `cargo test --all-targets` runs this unoptimized, without `--bench`,
    // as a smoke test: keep that short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let budget = if quick { Duration::from_millis(50) } else { Duration::from_secs(2) };

    let mut c = created();
    record_update(&mut c, None, "bench", "v1", "Update", None);
    let mut b = bound(c.clone());
    record_update(&mut b, Some(&c), "tug-scheduler", "v1", "Update", None);
    let r = running(b.clone());
    assert!(b["metadata"]["managedFields"].as_array().is_some_and(|m| m.len() == 2), "{b}");

    println!("| write (record_update)                      | mean        | runs     |");
    println!("|--------------------------------------------|-------------|----------|");
    time("create (no old object)", budget, &created(), |o| {
        record_update(o, None, "bench", "v1", "Update", None);
    });
    time("binding (nodeName, PodScheduled)", budget, &bound(c.clone()), |o| {
        record_update(o, Some(&c), "tug-scheduler", "v1", "Update", None);
    });
    time("kubelet status (Running, 5 conditions)", budget, &r, |o| {
        record_update(o, Some(&b), "kubelet", "v1", "Update", Some("status"));
    });
}
