//! The DaemonSet controller against the real `tug server` binary (build it
//! first: `cargo build -p tug`). The tests create Node objects and play
//! kubelet (marking pods Running and Ready).

use crate::support;
use crate::workloads;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{Cluster, eventually, obj};
use workloads::{create_node, events_for, is_ready, mark_ready, pods};

const WAIT: Duration = Duration::from_secs(30);

fn daemonset(name: &str, extra_spec: serde_json::Value) -> DaemonSet {
    let mut spec = json!({"selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}}});
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    obj(json!({"metadata": {"name": name}, "spec": spec}))
}

async fn get(client: &Client, name: &str) -> DaemonSet {
    Api::<DaemonSet>::namespaced(client.clone(), "default").get(name).await.unwrap()
}

fn target(p: &Pod) -> String {
    let terms = &p.spec.as_ref().unwrap().affinity.as_ref().unwrap().node_affinity.as_ref().unwrap()
        .required_during_scheduling_ignored_during_execution.as_ref().unwrap().node_selector_terms;
    assert_eq!(terms.len(), 1);
    let f = &terms[0].match_fields.as_ref().expect("matchFields")[0];
    assert_eq!((f.key.as_str(), f.operator.as_str()), ("metadata.name", "In"));
    f.values.as_ref().unwrap()[0].clone()
}

/// The live (not deleted) pods of the DaemonSet, as (node, pod).
async fn placed(client: &Client, app: &str) -> Vec<(String, Pod)> {
    let mut v: Vec<(String, Pod)> =
        pods(client, "default", &format!("app={app}")).await.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| (target(&p), p)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn nodes_of(v: &[(String, Pod)]) -> Vec<String> {
    v.iter().map(|(n, _)| n.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_per_eligible_node_following_the_nodes() {
    let c = Cluster::start().await;
    create_node(&c.client, "n1", json!({"role": "worker"}), json!([])).await;
    create_node(&c.client, "n2", json!({"role": "worker"}), json!([])).await;
    create_node(&c.client, "n3", json!({"role": "worker"}), json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])).await;
    create_node(&c.client, "other", json!({"role": "edge"}), json!([])).await;
    let api: Api<DaemonSet> = Api::namespaced(c.client.clone(), "default");
    let mut ds = daemonset("agent", json!({}));
    ds.spec.as_mut().unwrap().template.spec.as_mut().unwrap().node_selector = Some([("role".to_string(), "worker".to_string())].into());
    api.create(&PostParams::default(), &ds).await.unwrap();

    let v = eventually("pods on n1 and n2", WAIT, || async {
        let v = placed(&c.client, "agent").await;
        (v.len() >= 2).then_some(v)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v2 = placed(&c.client, "agent").await;
    assert_eq!(nodes_of(&v2), ["n1", "n2"], "exactly one pod per eligible node: not on the tainted n3 nor on the unselected node");
    assert_eq!(nodes_of(&v), nodes_of(&v2));
    let (_, pod) = &v2[0];
    assert!(pod.spec.as_ref().unwrap().node_name.is_none(), "the scheduler binds, not the controller");
    let tolerations = pod.spec.as_ref().unwrap().tolerations.clone().unwrap_or_default();
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable", "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure", "node.kubernetes.io/pid-pressure", "node.kubernetes.io/unschedulable"] {
        assert!(tolerations.iter().any(|t| t.key.as_deref() == Some(key) && t.operator.as_deref() == Some("Exists")), "default toleration {key}");
    }
    let hash = pod.labels().get("controller-revision-hash").cloned().expect("revision hash label");
    let revs: Api<ControllerRevision> = Api::namespaced(c.client.clone(), "default");
    let rev = revs.get(&format!("agent-{hash}")).await.expect("the ControllerRevision named after the hash");
    assert_eq!(rev.revision, 1);
    assert_eq!(rev.owner_references()[0].name, "agent");

    // A new eligible node gets a pod; a removed one loses it.
    create_node(&c.client, "n4", json!({"role": "worker"}), json!([])).await;
    eventually("a pod on the new node", WAIT, || async { (nodes_of(&placed(&c.client, "agent").await) == ["n1", "n2", "n4"]).then_some(()) }).await;
    Api::<Node>::all(c.client.clone()).delete("n4", &DeleteParams::default()).await.unwrap();
    eventually("the removed node's pod goes", WAIT, || async { (nodes_of(&placed(&c.client, "agent").await) == ["n1", "n2"]).then_some(()) }).await;

    // Status, as `kubectl rollout status` reads it.
    let st = eventually("the status counts two nodes", WAIT, || async {
        let st = get(&c.client, "agent").await.status.unwrap_or_default();
        (st.desired_number_scheduled == 2).then_some(st)
    })
    .await;
    assert_eq!((st.desired_number_scheduled, st.current_number_scheduled, st.number_ready), (2, 2, 0));
    assert!(st.number_available.unwrap_or(0) < st.desired_number_scheduled, "not rolled out until ready");
    for (_, p) in placed(&c.client, "agent").await {
        mark_ready(&c.client, "default", &p.name_any()).await;
    }
    let st = eventually("all ready and available", WAIT, || async {
        let d = get(&c.client, "agent").await;
        let st = d.status.clone().unwrap();
        (st.number_ready == 2 && st.number_available == Some(2) && st.observed_generation == d.metadata.generation).then_some(st)
    })
    .await;
    assert_eq!(st.updated_number_scheduled, Some(2));
    assert_eq!(st.number_misscheduled, 0);
    // Tainting a node with NoExecute evicts; the status counts what is left.
    let nodes: Api<Node> = Api::all(c.client.clone());
    nodes.patch("n2", &PatchParams::default(), &Patch::Merge(json!({"spec": {"taints": [{"key": "gone", "effect": "NoExecute"}]}}))).await.unwrap();
    eventually("the pod on the NoExecute-tainted node goes", WAIT, || async { (nodes_of(&placed(&c.client, "agent").await) == ["n1"]).then_some(()) }).await;
    let events = events_for(&c.client, "default", "agent").await;
    assert!(events.iter().any(|(r, m)| r == "SuccessfulCreate" && m.starts_with("Created pod: agent-")), "{events:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_replaces_one_node_at_a_time_then_on_delete_waits() {
    let c = Cluster::start().await;
    for n in ["n1", "n2", "n3"] {
        create_node(&c.client, n, json!({}), json!([])).await;
    }
    let api: Api<DaemonSet> = Api::namespaced(c.client.clone(), "default");
    api.create(&PostParams::default(), &daemonset("roll", json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}}))).await.unwrap();
    let v = eventually("three pods", WAIT, || async {
        let v = placed(&c.client, "roll").await;
        (v.len() == 3).then_some(v)
    })
    .await;
    let old_hash = v[0].1.labels()["controller-revision-hash"].clone();
    for (_, p) in &v {
        mark_ready(&c.client, "default", &p.name_any()).await;
    }
    eventually("rolled out", WAIT, || async { (get(&c.client, "roll").await.status.unwrap().number_available == Some(3)).then_some(()) }).await;

    api.patch("roll", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "agent:2"}]}}}})))
        .await
        .unwrap();
    let mut updated_nodes = std::collections::BTreeSet::new();
    while updated_nodes.len() < 3 {
        let v = eventually("progress of the rolling update", WAIT, || async {
            let v = placed(&c.client, "roll").await;
            let new: Vec<&(String, Pod)> = v.iter().filter(|(_, p)| p.labels()["controller-revision-hash"] != old_hash).collect();
            new.iter().any(|(n, p)| !updated_nodes.contains(n) && !is_ready(p)).then_some(v.clone())
        })
        .await;
        // maxUnavailable 1: at most one node without a ready pod.
        let ready_nodes: std::collections::BTreeSet<&String> = v.iter().filter(|(_, p)| is_ready(p)).map(|(n, _)| n).collect();
        assert!(ready_nodes.len() >= 2, "at most one node unavailable during the update: {:?}", v.iter().map(|(n, p)| (n, p.name_any(), is_ready(p))).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let v = placed(&c.client, "roll").await;
        let unready: Vec<&(String, Pod)> = v.iter().filter(|(_, p)| !is_ready(p)).collect();
        assert_eq!(unready.len(), 1, "one pod replaced at a time: {:?}", v.iter().map(|(n, p)| (n, p.name_any(), is_ready(p))).collect::<Vec<_>>());
        let (node, p) = unready[0];
        assert_ne!(p.labels()["controller-revision-hash"], old_hash);
        assert_eq!(p.spec.as_ref().unwrap().containers[0].image.as_deref(), Some("agent:2"));
        mark_ready(&c.client, "default", &p.name_any()).await;
        updated_nodes.insert(node.clone());
    }
    let d = eventually("the update rolled out", WAIT, || async {
        let d = get(&c.client, "roll").await;
        let st = d.status.clone().unwrap();
        (st.updated_number_scheduled == Some(3) && st.number_available == Some(3) && st.observed_generation == d.metadata.generation).then_some(d)
    })
    .await;
    assert_eq!(d.status.unwrap().desired_number_scheduled, 3);
    let (ok, out) = workloads::kubectl(&c.server, &["rollout", "status", "ds/roll", "--timeout=20s"]).await;
    assert!(ok && out.contains("daemon set \"roll\" successfully rolled out"), "kubectl rollout status: {out}");
    let revs = Api::<ControllerRevision>::namespaced(c.client.clone(), "default").list(&ListParams::default()).await.unwrap().items;
    let mut numbers: Vec<i64> = revs.iter().filter(|r| r.name_any().starts_with("roll-")).map(|r| r.revision).collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2], "old revision kept for history, new one numbered 2");

    // OnDelete: a template change waits for pods to be deleted.
    api.patch("roll", &PatchParams::default(), &Patch::Merge(json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null},
        "template": {"spec": {"containers": [{"name": "agent", "image": "agent:3"}]}}}})))
        .await
        .unwrap();
    eventually("the change observed", WAIT, || async {
        let d = get(&c.client, "roll").await;
        (d.status.clone().unwrap().observed_generation == d.metadata.generation).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v = placed(&c.client, "roll").await;
    assert!(v.iter().all(|(_, p)| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("agent:2")), "OnDelete replaces nothing by itself");
    assert_eq!(get(&c.client, "roll").await.status.unwrap().updated_number_scheduled.unwrap_or(0), 0);
    let (node, p) = &v[0];
    Api::<Pod>::namespaced(c.client.clone(), "default").delete(&p.name_any(), &DeleteParams::default()).await.unwrap();
    let v = eventually("a new pod for the deleted one", WAIT, || async {
        let v = placed(&c.client, "roll").await;
        v.iter().any(|(n, p)| n == node && p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("agent:3")).then_some(v)
    })
    .await;
    assert_eq!(v.iter().filter(|(_, p)| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("agent:2")).count(), 2);
    c.shutdown().await;
}
