//! Hollow nodes against a real `tug server`: registration, leases, the pod
//! lifecycle, pausing a node, and adoption after a restart.
//!
//! Needs the binary: `cargo build -p tug` first.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{Cluster, fast_config, wait_for};
use tug_hollow::HollowCluster;

const T: Duration = Duration::from_secs(30);

fn in_cidr(ip: &str, net: [u8; 4], prefix: u32) -> bool {
    let ip: Ipv4Addr = ip.parse().unwrap_or_else(|_| panic!("{ip} is not an IPv4 address"));
    let mask = u32::MAX << (32 - prefix);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn condition(node: &Node, t: &str) -> Option<(String, Option<String>)> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == t).map(|c| (c.status.clone(), c.reason.clone()))
}

fn node_ready(node: &Node) -> bool {
    condition(node, "Ready").map(|(s, _)| s == "True").unwrap_or(false)
}

async fn renew_times(leases: &Api<Lease>) -> HashMap<String, k8s_openapi::jiff::Timestamp> {
    leases
        .list(&ListParams::default())
        .await
        .expect("listing leases")
        .items
        .into_iter()
        .filter_map(|l| Some((l.metadata.name.clone()?, l.spec?.renew_time?.0)))
        .collect()
}

fn pod(name: &str, node: &str, annotations: serde_json::Value, restart_policy: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "nodeName": node,
            "restartPolicy": restart_policy,
            "initContainers": [{"name": "init", "image": "busybox:1.36"}],
            "containers": [{"name": "app", "image": "nginx:1.25"}, {"name": "side", "image": "redis"}],
        }
    }))
    .expect("a valid pod")
}

async fn wait_phase(pods: &Api<Pod>, name: &str, phase: &str) -> Pod {
    wait_for(&format!("pod {name} {phase}"), T, || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        let got = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        if got == phase { Ok(p) } else { Err(format!("phase {got:?}: {:?}", p.status)) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_ready_and_leases_renew() {
    let c = Cluster::start().await;
    let hollow = HollowCluster::start(c.client.clone(), fast_config(20)).await.expect("hollow nodes start");
    let nodes: Api<Node> = Api::all(c.client.clone());
    let list = nodes.list(&ListParams::default().labels("tugboat.io/hollow=true")).await.unwrap().items;
    assert_eq!(list.len(), 20, "all 20 nodes registered");
    let mut ips = std::collections::HashSet::new();
    for n in &list {
        let name = n.metadata.name.clone().unwrap();
        assert!(name.starts_with("hollow-node-"), "{name}");
        let labels = n.metadata.labels.clone().unwrap_or_default();
        for (k, v) in [
            ("kubernetes.io/hostname", name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
            ("node.kubernetes.io/instance-type", "hollow"),
            ("tugboat.io/hollow", "true"),
        ] {
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k} on {name}");
        }
        let st = n.status.as_ref().expect("status");
        for r in [&st.capacity, &st.allocatable] {
            let r = r.as_ref().expect("capacity and allocatable");
            assert_eq!(r["cpu"].0, "4");
            assert_eq!(r["memory"].0, "16Gi");
            assert_eq!(r["pods"].0, "110");
            assert!(r.contains_key("ephemeral-storage"));
        }
        let addr = st.addresses.as_ref().unwrap().iter().find(|a| a.type_ == "InternalIP").expect("an InternalIP").address.clone();
        assert!(in_cidr(&addr, [10, 200, 0, 0], 16), "{addr} in 10.200.0.0/16");
        assert!(ips.insert(addr.clone()), "InternalIP {addr} is unique");
        let info = st.node_info.as_ref().expect("nodeInfo");
        assert_eq!(info.kubelet_version, "v1.32.0-hollow");
        assert_eq!(info.container_runtime_version, "hollow://1.0");
        assert_eq!((info.operating_system.as_str(), info.architecture.as_str()), ("linux", "amd64"));
        assert!(!info.os_image.is_empty() && !info.kernel_version.is_empty());
        assert_eq!(condition(n, "Ready"), Some(("True".into(), Some("KubeletReady".into()))), "{name}");
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(condition(n, t).map(|c| c.0), Some("False".into()), "{t} on {name}");
        }
    }

    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let first = renew_times(&leases).await;
    assert_eq!(first.len(), 20, "a lease per node: {:?}", first.keys());
    let l = leases.get("hollow-node-7").await.unwrap();
    let spec = l.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("hollow-node-7"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let node7 = nodes.get("hollow-node-7").await.unwrap();
    let owner = &l.metadata.owner_references.as_ref().expect("owned by the node")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", "hollow-node-7"));
    assert_eq!(Some(&owner.uid), node7.metadata.uid.as_ref());

    // Renewed every second: after a few seconds every lease moved on.
    wait_for("every lease renewed", Duration::from_secs(10), || async {
        let now = renew_times(&leases).await;
        let stale: Vec<_> = first.iter().filter(|(k, t)| now.get(*k).is_none_or(|n| n <= t)).map(|(k, _)| k.clone()).collect();
        if stale.is_empty() { Ok(()) } else { Err(format!("not renewed: {stale:?}")) }
    })
    .await;
    let stats = hollow.stats();
    assert!(stats.lease_renewals >= 40, "{stats:?}");
    assert_eq!(stats.lease_failures, 0, "{stats:?}");
    assert_eq!(stats.nodes_registered, 20);

    // Heartbeats in the node status (every 5s here) move lastHeartbeatTime.
    let hb = |n: &Node| {
        n.status.as_ref().unwrap().conditions.as_ref().unwrap().iter().find(|c| c.type_ == "Ready").unwrap().last_heartbeat_time.clone().unwrap().0
    };
    let before = hb(&node7);
    let beat = wait_for("a node status heartbeat", Duration::from_secs(15), || async {
        let n = nodes.get("hollow-node-7").await.map_err(|e| e.to_string())?;
        if hb(&n) > before && node_ready(&n) { Ok(n) } else { Err(format!("{:?}", hb(&n))) }
    })
    .await;
    assert!(node_ready(&beat));
    // Status goes through the status subresource, as a kubelet's does, and
    // leases are renewed by update: the server's request counters say so.
    let status_patches = support::requests(&c.server, "patch", "nodes/status");
    assert!(status_patches > 20, "registration and heartbeats: {status_patches}");
    assert_eq!(support::requests(&c.server, "patch", "nodes"), 0, "status written to the main resource");
    assert_eq!(support::requests(&c.server, "update", "nodes"), 0, "status written to the main resource");
    assert!(support::requests(&c.server, "update", "leases") >= 40);
    hollow.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_get_addresses_and_are_deleted() {
    let c = Cluster::start().await;
    let hollow = HollowCluster::start(c.client.clone(), fast_config(4)).await.expect("hollow nodes start");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let nodes: Api<Node> = Api::all(c.client.clone());
    let pp = PostParams::default();

    pods.create(&pp, &pod("web", "hollow-node-3", json!({}), "Always")).await.unwrap();
    let p = wait_phase(&pods, "web", "Running").await;
    let st = p.status.clone().unwrap();
    let node3 = nodes.get("hollow-node-3").await.unwrap();
    let node_ip = node3.status.unwrap().addresses.unwrap().into_iter().find(|a| a.type_ == "InternalIP").unwrap().address;
    assert_eq!(st.host_ip.as_deref(), Some(node_ip.as_str()));
    let ip = st.pod_ip.clone().expect("a pod IP");
    // No podCIDR on the node: the per-node fake range 10.201.<index>.0/24.
    assert!(in_cidr(&ip, [10, 201, 3, 0], 24), "{ip} in 10.201.3.0/24");
    assert_eq!(st.pod_ips.as_ref().map(|v| v.iter().map(|i| i.ip.clone()).collect::<Vec<_>>()), Some(vec![ip.clone()]));
    assert!(st.start_time.is_some());
    let conds: BTreeMap<_, _> = st.conditions.clone().unwrap().into_iter().map(|c| (c.type_, c.status)).collect();
    for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(conds.get(t).map(String::as_str), Some("True"), "{t}: {conds:?}");
    }
    let cs = st.container_statuses.clone().unwrap();
    assert_eq!(cs.len(), 2);
    for s in &cs {
        assert!(s.ready && s.started == Some(true) && s.restart_count == 0, "{s:?}");
        assert!(s.state.as_ref().unwrap().running.as_ref().unwrap().started_at.is_some());
        assert!(s.container_id.as_deref().unwrap().starts_with("hollow://"), "{s:?}");
        assert!(!s.image_id.is_empty() && !s.image.is_empty());
    }
    let init = st.init_container_statuses.clone().unwrap();
    let term = init[0].state.as_ref().unwrap().terminated.as_ref().expect("init container terminated");
    assert_eq!((term.exit_code, term.reason.as_deref()), (0, Some("Completed")));

    // A second pod on the same node gets another address of the range.
    pods.create(&pp, &pod("web2", "hollow-node-3", json!({}), "Always")).await.unwrap();
    let ip2 = wait_phase(&pods, "web2", "Running").await.status.unwrap().pod_ip.unwrap();
    assert!(in_cidr(&ip2, [10, 201, 3, 0], 24) && ip2 != ip, "{ip2} vs {ip}");

    // With spec.podCIDR set on the Node (node IPAM's job), addresses come from it.
    nodes.patch("hollow-node-1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"podCIDR": "10.42.7.0/24", "podCIDRs": ["10.42.7.0/24"]}}))).await.unwrap();
    // The node watch delivers the CIDR asynchronously (milliseconds).
    tokio::time::sleep(Duration::from_secs(1)).await;
    pods.create(&pp, &pod("cidr", "hollow-node-1", json!({}), "Always")).await.unwrap();
    let ip3 = wait_phase(&pods, "cidr", "Running").await.status.unwrap().pod_ip.unwrap();
    assert!(in_cidr(&ip3, [10, 42, 7, 0], 24), "{ip3} in the node's podCIDR 10.42.7.0/24");

    // Graceful delete (default 30s grace): the hollow kubelet finishes it
    // within its 1s cap, as a kubelet does after stopping the containers.
    let started = std::time::Instant::now();
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    let p = pods.get_opt("web").await.unwrap();
    if let Some(p) = p {
        assert!(p.metadata.deletion_timestamp.is_some(), "bound pod is terminating, not gone at once");
    }
    wait_for("pod web deleted", T, || async {
        match pods.get_opt("web").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(p) => Err(format!("still there: deletionTimestamp {:?}", p.metadata.deletion_timestamp)),
        }
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(10), "deleted in {:?}, far below the 30s grace", started.elapsed());
    // Other pods are left alone.
    assert!(pods.get_opt("web2").await.unwrap().is_some());
    let stats = hollow.stats();
    assert_eq!((stats.pods_started, stats.pods_deleted), (3, 1), "{stats:?}");
    assert_eq!(support::requests(&c.server, "patch", "pods/status"), 3, "one status write per started pod");
    assert_eq!(support::requests(&c.server, "patch", "pods"), 0);
    hollow.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_annotation_completes_pods() {
    let c = Cluster::start().await;
    let hollow = HollowCluster::start(c.client.clone(), fast_config(2)).await.expect("hollow nodes start");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pp = PostParams::default();
    let exit = |code: &str, secs: &str| json!({"tugboat.io/hollow-exit-code": code, "tugboat.io/hollow-run-seconds": secs});

    pods.create(&pp, &pod("ok", "hollow-node-0", exit("0", "0"), "Never")).await.unwrap();
    pods.create(&pp, &pod("bad", "hollow-node-1", exit("3", "0"), "Never")).await.unwrap();
    pods.create(&pp, &pod("slow", "hollow-node-0", exit("0", "3"), "OnFailure")).await.unwrap();
    pods.create(&pp, &pod("crash", "hollow-node-1", exit("1", "0"), "OnFailure")).await.unwrap();

    let ok = wait_phase(&pods, "ok", "Succeeded").await;
    for s in ok.status.unwrap().container_statuses.unwrap() {
        let t = s.state.unwrap().terminated.expect("terminated");
        assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
        assert!(!s.ready);
    }
    let bad = wait_phase(&pods, "bad", "Failed").await;
    for s in bad.status.unwrap().container_statuses.unwrap() {
        let t = s.state.unwrap().terminated.expect("terminated");
        assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    }

    // Runs for ~3s first.
    let slow = wait_phase(&pods, "slow", "Running").await;
    let started = slow.status.unwrap().start_time.unwrap().0;
    let done = wait_phase(&pods, "slow", "Succeeded").await;
    let cs = &done.status.unwrap().container_statuses.unwrap()[0];
    let finished = cs.state.as_ref().unwrap().terminated.as_ref().unwrap().finished_at.clone().unwrap().0;
    let ran = finished.duration_since(started).as_secs_f64();
    assert!((2.0..=8.0).contains(&ran), "ran {ran}s, expected about 3s");

    // OnFailure with a non-zero code: the kubelet restarts the containers
    // (crash loop with back-off) instead of failing the pod.
    let crashed = wait_for("restartCount >= 2", T, || async {
        let p = pods.get("crash").await.map_err(|e| e.to_string())?;
        let st = p.status.clone().unwrap_or_default();
        let rc = st.container_statuses.as_ref().and_then(|c| c.first()).map(|c| c.restart_count).unwrap_or(0);
        if rc >= 2 { Ok(p) } else { Err(format!("{:?}", st)) }
    })
    .await;
    let st = crashed.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"), "a restarting pod stays Running");
    let last = st.container_statuses.unwrap()[0].last_state.clone().unwrap().terminated.expect("lastState.terminated");
    assert_eq!(last.exit_code, 1);
    hollow.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_node_stops_its_lease_only() {
    let c = Cluster::start().await;
    let hollow = HollowCluster::start(c.client.clone(), fast_config(5)).await.expect("hollow nodes start");
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    assert!(hollow.pause_node("hollow-node-2"));
    assert!(!hollow.pause_node("no-such-node"));
    assert_eq!(hollow.is_paused("hollow-node-2"), Some(true));
    // Let a renewal that may have been in flight land, then watch for 3.5s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = renew_times(&leases).await;
    pods.create(&PostParams::default(), &pod("stuck", "hollow-node-2", json!({}), "Always")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let after = renew_times(&leases).await;
    for (name, t) in &before {
        if name == "hollow-node-2" {
            assert_eq!(after[name], *t, "the paused node's lease was renewed");
        } else {
            assert!(after[name] > *t, "{name} stopped renewing ({t} -> {})", after[name]);
        }
    }
    // A hung kubelet does not start pods either.
    let p = pods.get("stuck").await.unwrap();
    assert_ne!(p.status.and_then(|s| s.phase).as_deref(), Some("Running"));

    // What the node controller does to a node whose lease went stale: Ready
    // Unknown. A hung kubelet leaves it so.
    let nodes: Api<Node> = Api::all(c.client.clone());
    let unknown = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": "2020-01-01T00:00:00Z", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}});
    let marked_unknown = k8s_openapi::jiff::Timestamp::now();
    nodes.patch_status("hollow-node-2", &PatchParams::default(), &Patch::Strategic(unknown)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(condition(&nodes.get("hollow-node-2").await.unwrap(), "Ready").map(|c| c.0).as_deref(), Some("Unknown"));

    // Resumed: renews at once, reports Ready again and catches up on its pod.
    assert!(hollow.resume_node("hollow-node-2"));
    let ready = wait_for("the resumed node Ready again", Duration::from_secs(5), || async {
        let n = nodes.get("hollow-node-2").await.map_err(|e| e.to_string())?;
        if node_ready(&n) { Ok(n) } else { Err(format!("{:?}", condition(&n, "Ready"))) }
    })
    .await;
    let c_ready = ready.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(c_ready.reason.as_deref(), Some("KubeletReady"));
    let transition = c_ready.last_transition_time.unwrap().0;
    assert!(transition.as_second() >= marked_unknown.as_second(), "Ready again transitions anew: {transition} < {marked_unknown}");
    wait_for("the resumed node's lease renewed", Duration::from_secs(5), || async {
        let now = renew_times(&leases).await;
        if now["hollow-node-2"] > before["hollow-node-2"] { Ok(()) } else { Err("not yet".to_string()) }
    })
    .await;
    wait_phase(&pods, "stuck", "Running").await;
    hollow.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_process_adopts_its_pods() {
    let c = Cluster::start().await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pp = PostParams::default();
    let hollow = HollowCluster::start(c.client.clone(), fast_config(1)).await.expect("hollow nodes start");
    pods.create(&pp, &pod("a", "hollow-node-0", json!({}), "Always")).await.unwrap();
    pods.create(&pp, &pod("b", "hollow-node-0", json!({}), "Always")).await.unwrap();
    let ip_a = wait_phase(&pods, "a", "Running").await.status.unwrap().pod_ip.unwrap();
    let ip_b = wait_phase(&pods, "b", "Running").await.status.unwrap().pod_ip.unwrap();
    let rv_a = pods.get("a").await.unwrap().metadata.resource_version;
    hollow.shutdown().await;

    // While no kubelet runs: one pod is deleted (stays terminating), one is added.
    pods.delete("b", &DeleteParams::default()).await.unwrap();
    pods.create(&pp, &pod("c", "hollow-node-0", json!({}), "Always")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pods.get("b").await.unwrap().metadata.deletion_timestamp.is_some(), "b waits for a kubelet");

    let hollow = HollowCluster::start(c.client.clone(), fast_config(1)).await.expect("hollow nodes restart");
    let ip_c = wait_phase(&pods, "c", "Running").await.status.unwrap().pod_ip.unwrap();
    assert_ne!(ip_c, ip_a, "the adopted pod's address is not handed out again");
    wait_for("terminating pod b finished by the restarted node", T, || async {
        match pods.get_opt("b").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    // The running pod was adopted as is: no rewrite of its status.
    let a = pods.get("a").await.unwrap();
    assert_eq!(a.metadata.resource_version, rv_a, "adopted pod a was rewritten");
    assert_eq!(a.status.unwrap().pod_ip.as_deref(), Some(ip_a.as_str()));
    let _ = ip_b;
    let nodes: Api<Node> = Api::all(c.client.clone());
    assert!(node_ready(&nodes.get("hollow-node-0").await.unwrap()));
    hollow.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_when_shutdown_completes() {
    let c = Cluster::start().await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tug_hollow::run(c.client.clone(), fast_config(3), async move {
        let _ = rx.await;
    }));
    let nodes: Api<Node> = Api::all(c.client.clone());
    wait_for("3 ready nodes", T, || async {
        let l = nodes.list(&ListParams::default().labels("tugboat.io/hollow=true")).await.map_err(|e| e.to_string())?;
        let ready = l.items.iter().filter(|n| node_ready(n)).count();
        if ready == 3 { Ok(()) } else { Err(format!("{ready} ready")) }
    })
    .await;
    tx.send(()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), task).await.expect("run stops on shutdown").expect("no panic");
    r.expect("run returns Ok");
    // And a bad configuration is an error, not a hang.
    let bad = tug_hollow::HollowConfig { nodes: 0, ..Default::default() };
    assert!(tug_hollow::run(c.client.clone(), bad, std::future::pending::<()>()).await.is_err());
}

fn pod_ready(p: &Pod) -> Option<(String, k8s_openapi::jiff::Timestamp)> {
    let c = p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.last_transition_time.as_ref()?.0))
}

/// What the node controller's `MarkPodsNotReady` writes.
async fn mark_not_ready(pods: &Api<Pod>, name: &str) -> k8s_openapi::jiff::Timestamp {
    let p = pods.get(name).await.unwrap();
    let at = k8s_openapi::jiff::Timestamp::now();
    let patch = json!({"metadata": {"uid": p.metadata.uid},
        "status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
    at
}

async fn wait_pod_ready_since(pods: &Api<Pod>, name: &str, since: k8s_openapi::jiff::Timestamp) {
    wait_for(&format!("pod {name} Ready again"), Duration::from_secs(10), || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        match pod_ready(&p) {
            Some((s, t)) if s == "True" && t.as_second() >= since.as_second() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_marked_not_ready_by_the_node_controller_are_ready_again() {
    let c = Cluster::start().await;
    let hollow = HollowCluster::start(c.client.clone(), fast_config(2)).await.expect("hollow nodes start");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pp = PostParams::default();
    pods.create(&pp, &pod("a", "hollow-node-0", json!({}), "Always")).await.unwrap();
    pods.create(&pp, &pod("b", "hollow-node-0", json!({}), "Always")).await.unwrap();
    pods.create(&pp, &pod("live", "hollow-node-1", json!({}), "Always")).await.unwrap();
    for name in ["a", "b", "live"] {
        let p = wait_phase(&pods, name, "Running").await;
        assert_eq!(pod_ready(&p).map(|r| r.0).as_deref(), Some("True"), "{name}");
    }

    // The node hangs; the node controller marks its pods not ready. A hung
    // kubelet leaves them so.
    assert!(hollow.pause_node("hollow-node-0"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for name in ["a", "b"] {
        mark_not_ready(&pods, name).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in ["a", "b"] {
        let p = pods.get(name).await.unwrap();
        assert_eq!(pod_ready(&p).map(|r| r.0).as_deref(), Some("False"), "{name} while its node is paused");
    }

    // Resumed: the kubelet reports its running pods ready again, as a real
    // kubelet's status manager reconciles its status with the API's.
    let resumed = k8s_openapi::jiff::Timestamp::now();
    assert!(hollow.resume_node("hollow-node-0"));
    for name in ["a", "b"] {
        wait_pod_ready_since(&pods, name, resumed).await;
        let st = pods.get(name).await.unwrap().status.unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let conds: BTreeMap<_, _> = st.conditions.unwrap().into_iter().map(|c| (c.type_, c.status)).collect();
        assert_eq!(conds.get("ContainersReady").map(String::as_str), Some("True"), "{conds:?}");
    }

    // And on a live node, whoever sets Ready False is corrected at once.
    let marked = mark_not_ready(&pods, "live").await;
    wait_pod_ready_since(&pods, "live", marked).await;
    let stats = hollow.stats();
    assert_eq!(stats.pods_started, 3, "no container restarted: {stats:?}");
    hollow.shutdown().await;
}
