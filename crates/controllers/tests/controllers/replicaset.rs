//! The ReplicaSet and ReplicationController controllers against the real
//! `tug server` binary (build it first: `cargo build -p tug`), with a fake
//! kubelet making pods run. Each test has its own server.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, ReplicationController};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::workloads::{Fate, FakeKubelet, events_for, patch_retrying, status_for};
use support::{Cluster, eventually, obj};

const WAIT: Duration = Duration::from_secs(30);

async fn namespace(client: &Client, name: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(&PostParams::default(), &obj(json!({"metadata": {"name": name}}))).await.unwrap();
}

fn replica_set(name: &str, replicas: i32, app: &str) -> ReplicaSet {
    obj(json!({"metadata": {"name": name}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
        "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}}))
}

/// Active pods (not being deleted) in the namespace.
async fn pods(api: &Api<Pod>) -> Vec<Pod> {
    api.list(&ListParams::default()).await.unwrap().items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
}

fn controlled_by(pod: &Pod, uid: &str) -> bool {
    pod.owner_references().iter().any(|r| r.uid == uid && r.controller == Some(true) && r.block_owner_deletion == Some(true))
}

fn names(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_set_creates_adopts_releases_and_scales_down_not_ready_first() {
    let c = Cluster::start().await;
    namespace(&c.client, "rs").await;
    let _kubelet = FakeKubelet::start(c.client.clone(), "rs", |_| Fate::Ready);
    let pod_api: Api<Pod> = Api::namespaced(c.client.clone(), "rs");
    let rs_api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "rs");
    let pp = PostParams::default();

    // An orphan matching the selector is adopted instead of a new pod.
    let orphan = json!({"metadata": {"name": "orphan", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}});
    pod_api.create(&pp, &obj(orphan)).await.unwrap();
    // A pod of another app is left alone.
    let other = json!({"metadata": {"name": "other", "labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "db"}]}});
    pod_api.create(&pp, &obj(other)).await.unwrap();

    let rs = rs_api.create(&pp, &replica_set("web", 3, "web")).await.unwrap();
    let uid = rs.uid().unwrap();
    let rs = eventually("the ReplicaSet reports 3 ready, available replicas", WAIT, || async {
        let rs = rs_api.get("web").await.unwrap();
        let s = rs.status.clone().unwrap_or_default();
        (s.replicas == 3 && s.ready_replicas == Some(3) && s.available_replicas == Some(3) && s.fully_labeled_replicas == Some(3)).then_some(rs)
    })
    .await;
    assert_eq!(rs.status.as_ref().unwrap().observed_generation, rs.metadata.generation);
    let all = pods(&pod_api).await;
    let owned: Vec<Pod> = all.iter().filter(|p| controlled_by(p, &uid)).cloned().collect();
    assert_eq!(owned.len(), 3, "three pods with a controller reference (controller, blockOwnerDeletion): {all:#?}");
    assert!(owned.iter().any(|p| p.name_any() == "orphan"), "the orphan was adopted");
    for p in owned.iter().filter(|p| p.name_any() != "orphan") {
        assert!(p.name_any().starts_with("web-"), "generateName <rs>-: {}", p.name_any());
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(p.labels().get("app").map(String::as_str), Some("web"));
    }
    let other = pod_api.get("other").await.unwrap();
    assert!(other.owner_references().is_empty(), "a pod not matching the selector is not adopted");
    // Expectations: the burst was not repeated while the watch caught up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pods(&pod_api).await.len(), 4, "exactly two pods were created (plus the orphan and the other app's)");

    // Scale up, make one of the older pods not ready, and scale down
    // again: the not-ready pod goes first, then the most recently ready.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    patch_retrying(&rs_api, "web", Patch::Merge(json!({"spec": {"replicas": 5}}))).await;
    eventually("5 ready replicas", WAIT, || async {
        let s = rs_api.get("web").await.unwrap().status.unwrap_or_default();
        (s.replicas == 5 && s.ready_replicas == Some(5)).then_some(())
    })
    .await;
    let newer: BTreeSet<String> = names(&pods(&pod_api).await.into_iter().filter(|p| controlled_by(p, &uid)).collect::<Vec<_>>())
        .difference(&names(&owned))
        .cloned()
        .collect();
    assert_eq!(newer.len(), 2);
    let victim = owned.iter().map(|p| p.name_any()).find(|n| n != "orphan").unwrap();
    let not_ready = status_for(&pod_api.get(&victim).await.unwrap(), Fate::NotReady).unwrap();
    pod_api.patch_status(&victim, &PatchParams::default(), &Patch::Merge(not_ready)).await.unwrap();
    eventually("4 of 5 ready", WAIT, || async {
        let s = rs_api.get("web").await.unwrap().status.unwrap_or_default();
        (s.replicas == 5 && s.ready_replicas == Some(4)).then_some(())
    })
    .await;
    patch_retrying(&rs_api, "web", Patch::Merge(json!({"spec": {"replicas": 3}}))).await;
    let kept = eventually("3 replicas again", WAIT, || async {
        let all: Vec<Pod> = pods(&pod_api).await.into_iter().filter(|p| controlled_by(p, &uid)).collect();
        let s = rs_api.get("web").await.unwrap().status.unwrap_or_default();
        (all.len() == 3 && s.replicas == 3).then_some(all)
    })
    .await;
    let kept = names(&kept);
    assert!(!kept.contains(&victim), "the not-ready pod was deleted first: kept {kept:?}");
    assert!(kept.contains("orphan"), "{kept:?}");
    assert_eq!(kept.intersection(&newer).count(), 1, "then one of the most recently ready: kept {kept:?}, newer {newer:?}");

    // A pod whose labels stop matching is released and replaced.
    patch_retrying(&pod_api, "orphan", Patch::Merge(json!({"metadata": {"labels": {"app": "gone"}}}))).await;
    eventually("the released pod loses its controller reference and is replaced", WAIT, || async {
        let released = pod_api.get("orphan").await.unwrap();
        let owned = pods(&pod_api).await.into_iter().filter(|p| controlled_by(p, &uid)).count();
        (released.owner_references().is_empty() && owned == 3).then_some(())
    })
    .await;

    let events = events_for(&c.client, "rs", "ReplicaSet", "web").await;
    assert!(events.iter().any(|(t, r, m)| t == "Normal" && r == "SuccessfulCreate" && m.starts_with("Created pod: web-")), "{events:#?}");
    assert!(events.iter().any(|(t, r, m)| t == "Normal" && r == "SuccessfulDelete" && m.starts_with("Deleted pod: web-")), "{events:#?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_controller_min_ready_seconds_and_create_failures() {
    let c = Cluster::start().await;
    namespace(&c.client, "rc").await;
    let _kubelet = FakeKubelet::start(c.client.clone(), "rc", |_| Fate::Ready);
    let pod_api: Api<Pod> = Api::namespaced(c.client.clone(), "rc");
    let rcs: Api<ReplicationController> = Api::namespaced(c.client.clone(), "rc");
    let rc = json!({"metadata": {"name": "legacy"}, "spec": {"replicas": 2, "selector": {"app": "legacy"},
        "template": {"metadata": {"labels": {"app": "legacy"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}});
    let rc = rcs.create(&PostParams::default(), &obj(rc)).await.unwrap();
    let uid = rc.uid().unwrap();
    eventually("the ReplicationController has 2 ready replicas", WAIT, || async {
        let s = rcs.get("legacy").await.unwrap().status.unwrap_or_default();
        (s.replicas == 2 && s.ready_replicas == Some(2) && s.available_replicas == Some(2)).then_some(())
    })
    .await;
    let owned: Vec<Pod> = pods(&pod_api).await.into_iter().filter(|p| controlled_by(p, &uid)).collect();
    assert_eq!(owned.len(), 2);
    assert_eq!(owned[0].owner_references()[0].kind, "ReplicationController");
    assert_eq!(owned[0].owner_references()[0].api_version, "v1");
    patch_retrying(&rcs, "legacy", Patch::Merge(json!({"spec": {"replicas": 0}}))).await;
    eventually("scaled to zero", WAIT, || async {
        let s = rcs.get("legacy").await.unwrap().status.unwrap_or_default();
        (s.replicas == 0 && pods(&pod_api).await.is_empty()).then_some(())
    })
    .await;

    // minReadySeconds: ready pods count as available only after it.
    let rs_api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "rc");
    let mut patient = replica_set("patient", 2, "patient");
    patient.spec.as_mut().unwrap().min_ready_seconds = Some(3);
    rs_api.create(&PostParams::default(), &patient).await.unwrap();
    let s = eventually("2 ready replicas", WAIT, || async {
        let s = rs_api.get("patient").await.unwrap().status.unwrap_or_default();
        (s.ready_replicas == Some(2)).then_some(s)
    })
    .await;
    assert_eq!(s.available_replicas.unwrap_or(0), 0, "not available before minReadySeconds: {s:?}");
    eventually("available after minReadySeconds", WAIT, || async {
        let s = rs_api.get("patient").await.unwrap().status.unwrap_or_default();
        (s.available_replicas == Some(2)).then_some(())
    })
    .await;

    // Pods the API server refuses: a ReplicaFailure condition and
    // FailedCreate events, until the template is fixed.
    let mut bad = replica_set("bad", 2, "bad");
    bad.spec.as_mut().unwrap().template.as_mut().unwrap().spec.as_mut().unwrap().priority_class_name = Some("no-such-class".into());
    rs_api.create(&PostParams::default(), &bad).await.unwrap();
    let rs = eventually("a ReplicaFailure condition", WAIT, || async {
        let rs = rs_api.get("bad").await.unwrap();
        let conds = rs.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        conds.iter().any(|c| c.type_ == "ReplicaFailure" && c.status == "True").then_some(rs)
    })
    .await;
    let cond = rs.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "ReplicaFailure").unwrap();
    assert_eq!(cond.reason.as_deref(), Some("FailedCreate"));
    assert!(cond.message.as_deref().unwrap_or("").contains("no-such-class"), "{cond:?}");
    let events = events_for(&c.client, "rc", "ReplicaSet", "bad").await;
    assert!(events.iter().any(|(t, r, m)| t == "Warning" && r == "FailedCreate" && m.starts_with("Error creating: ")), "{events:#?}");
    patch_retrying(&rs_api, "bad", Patch::Merge(json!({"spec": {"template": {"spec": {"priorityClassName": null}}}}))).await;
    eventually("the condition clears once pods can be created", WAIT, || async {
        let s = rs_api.get("bad").await.unwrap().status.unwrap_or_default();
        (s.replicas == 2 && s.conditions.unwrap_or_default().is_empty()).then_some(())
    })
    .await;
    c.shutdown().await;
}
