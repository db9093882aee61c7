//! `cargo bench -p tug-apiserver --bench request_path`: the API server's
//! CPU for each of a pod's three writes in `tug bench scheduler` (the
//! create, the scheduler's binding, the kubelet's status patch), through
//! the whole request path (routing, admission, the watch cache's copy,
//! managedFields, the SQLite store, watch fan-out) but without TLS, the
//! scheduler or other processes: in one process, so that its CPU time is
//! the server's alone.
//!
//! Prints, for each write, the process CPU time per request (user +
//! system, all threads: the store writer and the watch cache included)
//! and the rate; then the same for the three writes made one after the
//! other for each pod (per pod, and pods per second). CPU per request moves much less than the end-to-end
//! bench's rate on these shared machines; still, compare builds in
//! alternating runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use tug_apiserver::loopback::Loopback;

#[path = "../tests/support/mod.rs"]
mod support;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Pods per round; each round is three phases of this many requests.
const PODS: usize = 3000;
/// Rounds, each in a namespace of its own; the summary is their median.
/// `REQUEST_PATH_ROUNDS` overrides it.
const ROUNDS: usize = 7;

/// Pods per round and rounds. `cargo test --all-targets` runs this
/// unoptimized, without `--bench`, as a smoke test: a few pods, one round.
fn sizes() -> (usize, usize) {
    if !std::env::args().any(|a| a == "--bench") {
        return (50, 1);
    }
    (PODS, std::env::var("REQUEST_PATH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(ROUNDS))
}
/// Requests in flight, about what the bench's clients keep.
const IN_FLIGHT: usize = 32;
/// Pod watchers, as in `tug bench scheduler`: the scheduler, the hollow
/// kubelets and the bench itself.
const WATCHERS: usize = 3;

fn pod(name: &str) -> Bytes {
    // The bench's pod (`tug bench scheduler`).
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"containers":[{{"name":"pause","image":"registry.k8s.io/pause:3.10","ports":[{{"containerPort":80}}],"resources":{{"limits":{{"cpu":"100m","memory":"500Mi"}},"requests":{{"cpu":"100m","memory":"500Mi"}}}}}}]}}}}"#
    ))
}

fn binding(name: &str, i: usize) -> Bytes {
    Bytes::from(json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": format!("hollow-node-{:05}", i % 5000)}}).to_string())
}

/// A hollow kubelet's first status of a running pod (`podstatus::start_patch`).
fn running(uid: &str, i: usize) -> Bytes {
    let t = "2026-11-27T15:00:02Z";
    let cond = |ty: &str| json!({"type": ty, "status": "True", "lastProbeTime": null, "lastTransitionTime": t});
    Bytes::from(json!({"metadata": {"uid": uid}, "status": {
        "phase": "Running",
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
        "hostIP": "10.200.0.1", "hostIPs": [{"ip": "10.200.0.1"}],
        "podIP": format!("10.201.{}.{}", i / 250, i % 250 + 2), "podIPs": [{"ip": format!("10.201.{}.{}", i / 250, i % 250 + 2)}],
        "startTime": t,
        "containerStatuses": [{"name": "pause", "image": "registry.k8s.io/pause:3.10", "imageID": "registry.k8s.io/pause@sha256:ee6521f2",
            "containerID": format!("containerd://{uid}-pause-0"), "state": {"running": {"startedAt": t}}, "lastState": {},
            "ready": true, "started": true, "restartCount": 0}]}}).to_string())
}

/// User plus system CPU time of this process, all threads.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // In USER_HZ, which Linux fixes at 100 for /proc.
    Duration::from_millis(ticks * 10)
}

async fn send(lb: &Loopback, method: Method, uri: &str, content_type: &str, body: Bytes) -> (u16, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .header("user-agent", "request-path-bench")
        .body(Body::from(body))
        .unwrap();
    let resp = lb.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// Runs `op(i)` for every pod index, `IN_FLIGHT` at a time; returns the
/// CPU time and wall time it took.
async fn phase<F, Fut>(pods: usize, op: F) -> (Duration, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let cpu0 = cpu_time();
    let start = Instant::now();
    futures::stream::iter(0..pods).map(&op).buffer_unordered(IN_FLIGHT).collect::<Vec<()>>().await;
    (cpu_time() - cpu0, start.elapsed())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let server = support::start(dir.path()).await;
    let lb = Loopback::new(Arc::clone(&server.server), support::admin());

    println!("| round | write | CPU per request | requests/s |");
    println!("|---|---|---|---|");
    let mut cpu_per_request: [Vec<f64>; 4] = Default::default();
    let (pods_per_round, rounds) = sizes();
    for round in 0..rounds {
        let ns = format!("bench-{round}");
        let (code, body) = send(&lb, Method::POST, "/api/v1/namespaces", "application/json", Bytes::from(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}).to_string())).await;
        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
        // The watchers read every event to the end, as clients do.
        let mut watchers = Vec::new();
        for _ in 0..WATCHERS {
            let req = Request::builder().uri(format!("/api/v1/namespaces/{ns}/pods?watch=true")).body(Body::empty()).unwrap();
            let resp = lb.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut body = resp.into_body().into_data_stream();
            watchers.push(tokio::spawn(async move {
                let mut bytes = 0usize;
                while let Some(Ok(chunk)) = body.next().await {
                    bytes += chunk.len();
                }
                bytes
            }));
        }
        let uids: Vec<std::sync::Mutex<String>> = (0..pods_per_round).map(|_| Default::default()).collect();
        let pods = format!("/api/v1/namespaces/{ns}/pods");
        let create = phase(pods_per_round, |i| {
            let (lb, pods, uids) = (&lb, &pods, &uids);
            async move {
                let (code, body) = send(lb, Method::POST, pods, "application/json", pod(&format!("pod-{i}"))).await;
                assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
                let v: Value = serde_json::from_slice(&body).unwrap();
                *uids[i].lock().unwrap() = v["metadata"]["uid"].as_str().unwrap().to_string();
            }
        })
        .await;
        let bind = phase(pods_per_round, |i| {
            let (lb, pods) = (&lb, &pods);
            async move {
                let name = format!("pod-{i}");
                let (code, body) = send(lb, Method::POST, &format!("{pods}/{name}/binding"), "application/json", binding(&name, i)).await;
                assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
            }
        })
        .await;
        let status = phase(pods_per_round, |i| {
            let (lb, pods, uids) = (&lb, &pods, &uids);
            async move {
                let uid = uids[i].lock().unwrap().clone();
                let (code, body) = send(lb, Method::PATCH, &format!("{pods}/pod-{i}/status"), "application/strategic-merge-patch+json", running(&uid, i)).await;
                assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
            }
        })
        .await;
        // The same three writes one pod after the other, as the scheduler
        // and a kubelet make them: each write starts from the version the
        // one before it just wrote.
        let piped = phase(pods_per_round, |i| {
            let (lb, pods) = (&lb, &pods);
            async move {
                let name = format!("piped-{i}");
                let (code, body) = send(lb, Method::POST, pods, "application/json", pod(&name)).await;
                assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
                let v: Value = serde_json::from_slice(&body).unwrap();
                let uid = v["metadata"]["uid"].as_str().unwrap().to_string();
                let (code, body) = send(lb, Method::POST, &format!("{pods}/{name}/binding"), "application/json", binding(&name, i)).await;
                assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
                let (code, body) = send(lb, Method::PATCH, &format!("{pods}/{name}/status"), "application/strategic-merge-patch+json", running(&uid, i)).await;
                assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
            }
        })
        .await;
        for (i, (what, (cpu, wall))) in WRITES.into_iter().zip([create, bind, status, piped]).enumerate() {
            let us = cpu.as_secs_f64() * 1e6 / pods_per_round as f64;
            cpu_per_request[i].push(us);
            println!("| {round} | {what} | {us:.0} µs | {:.0}/s |", pods_per_round as f64 / wall.as_secs_f64());
        }
        for w in watchers {
            w.abort();
        }
    }
    println!();
    if rounds == 0 {
        return;
    }
    println!("| write | CPU per request, median of {rounds} rounds | range |");
    println!("|---|---|---|");
    let mut total = 0.0;
    for (i, (what, mut v)) in WRITES.into_iter().zip(cpu_per_request).enumerate() {
        v.sort_by(f64::total_cmp);
        if i < 3 {
            total += v[v.len() / 2];
        }
        println!("| {what} | {:.0} µs | {:.0}-{:.0} µs |", v[v.len() / 2], v[0], v[v.len() - 1]);
        if i == 2 {
            println!("| **the three, each in a phase of its own** | **{total:.0} µs** | |");
        }
    }
}

/// What each line measures; the last, the three writes of one pod in a row.
const WRITES: [&str; 4] = ["create", "binding", "status patch", "**the three, in a row per pod**"];
