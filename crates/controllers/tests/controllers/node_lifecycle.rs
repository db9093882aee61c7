//! The node lifecycle controller (with taint eviction) against the real
//! `tug server` binary (build it first: `cargo build -p tug`). The tests
//! play kubelet: they create Nodes and their Leases, renew the Leases,
//! post node and pod status, and stop renewing to make a Node go silent.
//! Short grace periods keep them quick.

use crate::support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{Cluster, Server, eventually, obj};
use tug_controllers::ControllerConfig;

const WAIT: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(3);

fn config() -> ControllerConfig {
    ControllerConfig {
        node_monitor_period: Duration::from_millis(250),
        node_monitor_grace_period: GRACE,
        node_startup_grace_period: GRACE,
        ..Default::default()
    }
}

/// A server with only the node lifecycle controller running against it.
struct Env {
    _server: Server,
    client: Client,
    controller: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

async fn start() -> Env {
    let (server, client) = Cluster::bare().await;
    let controller = tokio::spawn(tug_controllers::node_lifecycle::run(
        client.clone(),
        config(),
    ));
    Env {
        _server: server,
        client,
        controller,
    }
}

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn micro_now() -> String {
    Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Kubelet conditions with Ready as given, heartbeat now.
fn conditions(ready: &str) -> Value {
    let t = now();
    let reason = if ready == "True" {
        "KubeletReady"
    } else {
        "KubeletNotReady"
    };
    json!([
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "lastHeartbeatTime": t, "lastTransitionTime": t},
        {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "lastHeartbeatTime": t, "lastTransitionTime": t},
        {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "lastHeartbeatTime": t, "lastTransitionTime": t},
        {"type": "Ready", "status": ready, "reason": reason, "lastHeartbeatTime": t, "lastTransitionTime": t},
    ])
}

/// Registers a Node (Ready) and its Lease, as a kubelet does.
async fn register(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})),
        )
        .await
        .unwrap();
    post_status(client, name, "True").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({"metadata": {"name": name}, "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_now()}});
    leases
        .create(&PostParams::default(), &obj(lease))
        .await
        .unwrap();
}

/// Posts the kubelet conditions (a fresh heartbeat).
async fn post_status(client: &Client, name: &str, ready: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": conditions(ready)}})),
        )
        .await
        .unwrap();
}

/// Renews the Leases of `names` every 300ms, all in one go, until dropped.
struct Renewer(tokio::task::JoinHandle<()>);

impl Drop for Renewer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn renew(client: &Client, names: &[&str]) -> Renewer {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    Renewer(tokio::spawn(async move {
        loop {
            for n in &names {
                let _ = leases
                    .patch(
                        n,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"renewTime": micro_now()}})),
                    )
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }))
}

/// A pod bound to `node` with the given tolerations, Running and Ready.
async fn running_pod(client: &Client, ns: &str, name: &str, node: &str, tolerations: Value) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = json!({"metadata": {"name": name}, "spec": {"nodeName": node, "tolerations": tolerations,
        "containers": [{"name": "c", "image": "nginx:1"}]}});
    pods.create(&PostParams::default(), &obj(pod))
        .await
        .unwrap();
    let t = now();
    let status = json!({"status": {"phase": "Running", "podIP": "10.42.0.9", "conditions": [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
        {"type": "Ready", "status": "True", "lastTransitionTime": t},
    ]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap()
}

fn condition<'a>(node: &'a Node, t: &str) -> Option<&'a k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
}

fn taint_keys(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect()
}

fn pod_ready(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

fn toleration(key: &str, effect: &str, seconds: Option<i64>) -> Value {
    let mut t = json!({"key": key, "operator": "Exists", "effect": effect});
    if let Some(s) = seconds {
        t["tolerationSeconds"] = json!(s);
    }
    t
}

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NOT_READY: &str = "node.kubernetes.io/not-ready";

async fn events(client: &Client, ns: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut v: Vec<_> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            (
                e.involved_object.name.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_goes_unknown_is_tainted_and_its_pods_evicted_by_toleration() {
    let env = start().await;
    let c = &env.client;
    for n in ["n1", "n2", "n3"] {
        register(c, n).await;
    }
    let n1_renewer = renew(c, &["n1"]);
    let _others = renew(c, &["n2", "n3"]);
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");

    // "short" tolerates unreachable for 2s; "forever" without a limit;
    // "default" gets the API server's 300s; "intolerant" has NoExecute
    // tolerations of both keys (so no default one is added) that match
    // another value only, and must go at once. "elsewhere" runs on a
    // healthy node.
    running_pod(
        c,
        "default",
        "short",
        "n1",
        json!([toleration(UNREACHABLE, "NoExecute", Some(2))]),
    )
    .await;
    running_pod(
        c,
        "default",
        "forever",
        "n1",
        json!([toleration(UNREACHABLE, "NoExecute", None)]),
    )
    .await;
    running_pod(c, "default", "default", "n1", json!([])).await;
    running_pod(
        c,
        "default",
        "intolerant",
        "n1",
        json!([
            {"key": UNREACHABLE, "operator": "Equal", "value": "never", "effect": "NoExecute"},
            {"key": NOT_READY, "operator": "Equal", "value": "never", "effect": "NoExecute"},
        ]),
    )
    .await;
    running_pod(c, "default", "elsewhere", "n2", json!([])).await;
    let default = pods.get("default").await.unwrap();
    let defaults: Vec<_> = default
        .spec
        .unwrap()
        .tolerations
        .unwrap()
        .into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.toleration_seconds))
        .collect();
    assert!(
        defaults.contains(&(UNREACHABLE.to_string(), Some(300))),
        "the API server added the default toleration: {defaults:?}"
    );

    // Leases renewed: the nodes stay Ready well past the grace period
    // although their status heartbeat never moves.
    tokio::time::sleep(GRACE + Duration::from_secs(1)).await;
    for n in ["n1", "n2", "n3"] {
        let node = nodes.get(n).await.unwrap();
        assert_eq!(
            condition(&node, "Ready").unwrap().status,
            "True",
            "{n} is renewing its lease"
        );
        assert!(taint_keys(&node).is_empty(), "{n}: {:?}", taint_keys(&node));
    }

    // n1's kubelet goes silent.
    drop(n1_renewer);
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        condition(&nodes.get("n1").await.unwrap(), "Ready")
            .unwrap()
            .status,
        "True",
        "still within the grace period"
    );
    let n1 = eventually("n1 Ready Unknown with unreachable taints", WAIT, || async {
        let n = nodes.get("n1").await.unwrap();
        let keys = taint_keys(&n);
        (condition(&n, "Ready").unwrap().status == "Unknown"
            && keys.contains(&format!("{UNREACHABLE}:NoSchedule"))
            && keys.contains(&format!("{UNREACHABLE}:NoExecute")))
        .then_some(n)
    })
    .await;
    let tainted = Instant::now();
    assert!(
        stopped.elapsed() >= GRACE - Duration::from_millis(500),
        "marked after the grace period, not before: {:?}",
        stopped.elapsed()
    );
    let ready = condition(&n1, "Ready").unwrap();
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(condition(&n1, t).unwrap().status, "Unknown", "{t}");
    }
    let no_exec = n1
        .spec
        .as_ref()
        .unwrap()
        .taints
        .as_ref()
        .unwrap()
        .iter()
        .find(|t| t.effect == "NoExecute")
        .unwrap();
    assert!(
        no_exec.time_added.is_some(),
        "NoExecute taints carry timeAdded"
    );
    for n in ["n2", "n3"] {
        assert!(
            taint_keys(&nodes.get(n).await.unwrap()).is_empty(),
            "{n} stays healthy"
        );
    }

    // Pods on n1 are marked not ready; the one on n2 is not.
    eventually("pods on n1 not ready", WAIT, || async {
        let all = ["short", "forever", "default"];
        let mut ok = true;
        for p in all {
            if let Some(pod) = pods.get_opt(p).await.unwrap() {
                ok &= pod_ready(&pod).as_deref() == Some("False")
                    || pod.metadata.deletion_timestamp.is_some();
            }
        }
        ok.then_some(())
    })
    .await;
    assert_eq!(
        pod_ready(&pods.get("elsewhere").await.unwrap()).as_deref(),
        Some("True")
    );

    // The intolerant pod goes at once, "short" after ~2s (nothing finishes
    // the graceful deletion: they stay Terminating).
    let gone = |p: Pod| p.metadata.deletion_timestamp.is_some();
    eventually(
        "the intolerant pod is deleted",
        Duration::from_secs(5),
        || async {
            pods.get("intolerant")
                .await
                .ok()
                .filter(|p| gone(p.clone()))
        },
    )
    .await;
    let short = eventually("the 2s pod is deleted", WAIT, || async {
        pods.get("short").await.ok().filter(|p| gone(p.clone()))
    })
    .await;
    assert!(
        tainted.elapsed() >= Duration::from_millis(1500),
        "tolerationSeconds were honoured: deleted {:?} after the taint",
        tainted.elapsed()
    );
    let cond = short
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .expect("a DisruptionTarget condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_deref()),
        ("True", Some("DeletionByTaintManager"))
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    for p in ["forever", "default", "elsewhere"] {
        assert!(
            pods.get(p)
                .await
                .unwrap()
                .metadata
                .deletion_timestamp
                .is_none(),
            "{p} is kept"
        );
    }
    let evs = events(c, "default").await;
    assert!(
        evs.contains(&(
            "short".into(),
            "TaintManagerEviction".into(),
            "Marking for deletion Pod default/short".into()
        )),
        "{evs:#?}"
    );
    assert!(
        evs.iter()
            .any(|(o, r, m)| o == "forever" && r == "NodeNotReady" && m == "Node is not ready"),
        "{evs:#?}"
    );
    assert!(
        evs.iter().any(|(o, r, m)| o == "n1"
            && r == "NodeNotReady"
            && m == "Node n1 status is now: NodeNotReady"),
        "{evs:#?}"
    );

    // The kubelet is back: lease renewed, Ready posted. The taints go and
    // the 300s deletion of "default" is cancelled.
    let _n1_back = renew(c, &["n1"]);
    post_status(c, "n1", "True").await;
    let n1 = eventually("n1's taints removed", WAIT, || async {
        let n = nodes.get("n1").await.unwrap();
        taint_keys(&n).is_empty().then_some(n)
    })
    .await;
    assert_eq!(condition(&n1, "Ready").unwrap().status, "True");
    eventually(
        "the pending deletion of 'default' is cancelled",
        WAIT,
        || async {
            let evs = events(c, "default").await;
            evs.contains(&(
                "default".into(),
                "TaintManagerEviction".into(),
                "Cancelling deletion of Pod default/default".into(),
            ))
            .then_some(())
        },
    )
    .await;
    tokio::time::sleep(GRACE).await;
    assert_eq!(
        condition(&nodes.get("n1").await.unwrap(), "Ready")
            .unwrap()
            .status,
        "True",
        "renewing again keeps it Ready"
    );
    assert!(
        pods.get("default")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_conditions_and_cordon_become_taints() {
    let env = start().await;
    let c = &env.client;
    for n in ["a", "b"] {
        register(c, n).await;
    }
    let _renewer = renew(c, &["a", "b"]);
    let nodes: Api<Node> = Api::all(c.clone());

    // The kubelet itself says not ready: not-ready taints, not unreachable.
    post_status(c, "a", "False").await;
    let a = eventually("a tainted not-ready", WAIT, || async {
        let n = nodes.get("a").await.unwrap();
        let keys = taint_keys(&n);
        (keys.contains(&format!("{NOT_READY}:NoSchedule"))
            && keys.contains(&format!("{NOT_READY}:NoExecute")))
        .then_some(n)
    })
    .await;
    assert!(
        !taint_keys(&a).iter().any(|k| k.starts_with(UNREACHABLE)),
        "{:?}",
        taint_keys(&a)
    );
    assert_eq!(
        condition(&a, "Ready").unwrap().reason.as_deref(),
        Some("KubeletNotReady"),
        "the kubelet's condition is left alone"
    );

    // Cordoned, with a taint of the administrator's own: unschedulable
    // taint added, the foreign taint kept.
    // (A merge patch replaces the whole list: keep the controller's taints.)
    let mut taints: Vec<Value> = a
        .spec
        .unwrap()
        .taints
        .unwrap()
        .iter()
        .map(|t| serde_json::to_value(t).unwrap())
        .collect();
    taints.push(json!({"key": "example.com/owner", "value": "me", "effect": "NoSchedule"}));
    nodes
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true, "taints": taints}})),
        )
        .await
        .unwrap();
    eventually("unschedulable taint added", WAIT, || async {
        let keys = taint_keys(&nodes.get("a").await.unwrap());
        keys.contains(&"node.kubernetes.io/unschedulable:NoSchedule".to_string())
            .then_some(())
    })
    .await;

    // Ready again and uncordoned: only the foreign taint remains.
    post_status(c, "a", "True").await;
    nodes
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": null}})),
        )
        .await
        .unwrap();
    let a = eventually("only the foreign taint left", WAIT, || async {
        let n = nodes.get("a").await.unwrap();
        (taint_keys(&n) == ["example.com/owner:NoSchedule"]).then_some(n)
    })
    .await;
    assert_eq!(
        a.spec.unwrap().taints.unwrap()[0].value.as_deref(),
        Some("me")
    );
    assert!(taint_keys(&nodes.get("b").await.unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_evictions_while_every_node_is_down() {
    let env = start().await;
    let c = &env.client;
    for n in ["d1", "d2"] {
        register(c, n).await;
    }
    let renewer = renew(c, &["d1", "d2"]);
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    running_pod(
        c,
        "default",
        "p1",
        "d1",
        json!([toleration(UNREACHABLE, "NoExecute", Some(2))]),
    )
    .await;
    running_pod(
        c,
        "default",
        "p2",
        "d2",
        json!([toleration(UNREACHABLE, "NoExecute", Some(2))]),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Both go silent at once (the control plane's network, say).
    drop(renewer);
    eventually("both nodes Unknown and unschedulable", WAIT, || async {
        let mut ok = true;
        for n in ["d1", "d2"] {
            let node = nodes.get(n).await.unwrap();
            ok &= condition(&node, "Ready").unwrap().status == "Unknown"
                && taint_keys(&node).contains(&format!("{UNREACHABLE}:NoSchedule"));
        }
        ok.then_some(())
    })
    .await;
    // Longer than the tolerations: nobody is evicted, no NoExecute taint stays.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for n in ["d1", "d2"] {
        let keys = taint_keys(&nodes.get(n).await.unwrap());
        assert!(
            !keys.contains(&format!("{UNREACHABLE}:NoExecute")),
            "{n}: {keys:?}"
        );
    }
    for p in ["p1", "p2"] {
        let pod = pods.get(p).await.unwrap();
        assert!(
            pod.metadata.deletion_timestamp.is_none(),
            "{p} was evicted in full disruption"
        );
        assert_eq!(
            pod_ready(&pod).as_deref(),
            Some("False"),
            "{p} is marked not ready all the same"
        );
    }

    // d1 comes back: evictions resume for d2 only.
    let _d1 = renew(c, &["d1"]);
    post_status(c, "d1", "True").await;
    eventually("d2 tainted NoExecute", WAIT, || async {
        taint_keys(&nodes.get("d2").await.unwrap())
            .contains(&format!("{UNREACHABLE}:NoExecute"))
            .then_some(())
    })
    .await;
    eventually("p2 evicted", WAIT, || async {
        pods.get("p2")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
            .then_some(())
    })
    .await;
    let d1 = nodes.get("d1").await.unwrap();
    assert!(taint_keys(&d1).is_empty(), "{:?}", taint_keys(&d1));
    assert!(
        pods.get("p1")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none(),
        "p1's node is healthy again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_that_never_reported_gets_unknown_after_the_startup_grace() {
    let env = start().await;
    let c = &env.client;
    let nodes: Api<Node> = Api::all(c.clone());
    // Two healthy nodes, so that this is not full disruption.
    for n in ["h1", "h2"] {
        register(c, n).await;
    }
    let _renewer = renew(c, &["h1", "h2"]);
    nodes
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "mute"}})),
        )
        .await
        .unwrap();
    let mute = eventually("conditions Unknown, never updated", WAIT, || async {
        let n = nodes.get("mute").await.unwrap();
        condition(&n, "Ready")
            .filter(|c| c.status == "Unknown")
            .is_some()
            .then_some(n)
    })
    .await;
    let ready = condition(&mute, "Ready").unwrap();
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusNeverUpdated"));
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet never posted node status.")
    );
    assert_eq!(
        ready.last_heartbeat_time, mute.metadata.creation_timestamp,
        "heartbeat: the creation time"
    );
    eventually("unreachable taints", WAIT, || async {
        let keys = taint_keys(&nodes.get("mute").await.unwrap());
        (keys.contains(&format!("{UNREACHABLE}:NoSchedule"))
            && keys.contains(&format!("{UNREACHABLE}:NoExecute")))
        .then_some(())
    })
    .await;
}
