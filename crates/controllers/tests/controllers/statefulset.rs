//! The StatefulSet controller against the real `tug server` binary (build
//! it first: `cargo build -p tug`). The tests play kubelet, marking pods
//! Running and Ready.

use crate::support;
use crate::workloads;

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{Cluster, eventually, obj};
use workloads::{events_for, is_ready, mark_ready, pods};

const WAIT: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_millis(1200);

fn statefulset(name: &str, replicas: i32, extra_spec: serde_json::Value) -> StatefulSet {
    let mut spec = json!({"replicas": replicas, "serviceName": "nginx", "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]}}});
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    obj(json!({"metadata": {"name": name}, "spec": spec}))
}

async fn get(client: &Client, name: &str) -> StatefulSet {
    Api::<StatefulSet>::namespaced(client.clone(), "default").get(name).await.unwrap()
}

/// Pod names of the set, live or terminating.
async fn names(client: &Client, app: &str) -> Vec<String> {
    pods(client, "default", &format!("app={app}")).await.into_iter().map(|p| p.name_any()).collect()
}

async fn pod(client: &Client, name: &str) -> Pod {
    Api::<Pod>::namespaced(client.clone(), "default").get(name).await.unwrap()
}

fn rev(p: &Pod) -> String {
    p.labels().get("controller-revision-hash").cloned().unwrap_or_default()
}

async fn wait_names(client: &Client, app: &str, want: &[&str]) {
    eventually(&format!("pods {want:?}"), WAIT, || async { (names(client, app).await == want).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_creation_claims_and_reverse_scale_down() {
    let c = Cluster::start().await;
    let sts = statefulset("web", 3, json!({"volumeClaimTemplates": [{"metadata": {"name": "www"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}));
    let api: Api<StatefulSet> = Api::namespaced(c.client.clone(), "default");
    api.create(&PostParams::default(), &sts).await.unwrap();

    // One at a time: web-1 only once web-0 is Running and Ready.
    for (i, expected) in [vec!["web-0"], vec!["web-0", "web-1"], vec!["web-0", "web-1", "web-2"]].into_iter().enumerate() {
        wait_names(&c.client, "web", &expected).await;
        tokio::time::sleep(SETTLE).await;
        assert_eq!(names(&c.client, "web").await, expected, "no pod before its predecessor is ready");
        let name = format!("web-{i}");
        let p = pod(&c.client, &name).await;
        assert_eq!(p.labels().get("statefulset.kubernetes.io/pod-name"), Some(&name));
        assert_eq!(p.labels().get("apps.kubernetes.io/pod-index"), Some(&i.to_string()));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(name.as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let claim = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "www").expect("the claim volume");
        assert_eq!(claim.persistent_volume_claim.as_ref().unwrap().claim_name, format!("www-web-{i}"));
        Api::<PersistentVolumeClaim>::namespaced(c.client.clone(), "default").get(&format!("www-web-{i}")).await.expect("the PVC exists");
        mark_ready(&c.client, "default", &name).await;
    }
    let s = eventually("all ready", WAIT, || async {
        let s = get(&c.client, "web").await;
        (s.status.as_ref().unwrap().ready_replicas == Some(3)).then_some(s)
    })
    .await;
    let st = s.status.clone().unwrap();
    assert_eq!(st.replicas, 3);
    assert_eq!(st.observed_generation, s.metadata.generation);
    assert_eq!(st.current_revision, st.update_revision);
    assert_eq!(st.current_replicas, Some(3));
    assert_eq!(st.updated_replicas, Some(3));
    let hash = rev(&pod(&c.client, "web-0").await);
    assert_eq!(st.update_revision.as_deref(), Some(hash.as_str()), "pods carry the revision name as their hash label");

    // Scale down in reverse: web-1 waits while web-2 is still terminating.
    let pods_api: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    pods_api.patch("web-2", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": ["test/hold"]}}))).await.unwrap();
    api.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}}))).await.unwrap();
    eventually("web-2 terminating", WAIT, || async { pod(&c.client, "web-2").await.metadata.deletion_timestamp.is_some().then_some(()) }).await;
    tokio::time::sleep(SETTLE).await;
    assert!(pod(&c.client, "web-1").await.metadata.deletion_timestamp.is_none(), "web-1 stays until web-2 is gone");
    pods_api.patch("web-2", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    wait_names(&c.client, "web", &["web-0"]).await;
    // The claims stay (Retain).
    let pvcs: Vec<String> = Api::<PersistentVolumeClaim>::namespaced(c.client.clone(), "default")
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    for claim in ["www-web-0", "www-web-1", "www-web-2"] {
        assert!(pvcs.contains(&claim.to_string()), "{claim} retained: {pvcs:?}");
    }
    eventually("status follows", WAIT, || async { (get(&c.client, "web").await.status.unwrap().replicas == 1).then_some(()) }).await;
    let events = eventually("the deletion events", WAIT, || async {
        let ev = events_for(&c.client, "default", "web").await;
        ev.iter().any(|(_, m)| m == "delete Pod web-1 in StatefulSet web successful").then_some(ev)
    })
    .await;
    for e in [
        ("SuccessfulCreate", "create Pod web-0 in StatefulSet web successful"),
        ("SuccessfulCreate", "create Claim www-web-0 Pod web-0 in StatefulSet web success"),
        ("SuccessfulDelete", "delete Pod web-2 in StatefulSet web successful"),
        ("SuccessfulDelete", "delete Pod web-1 in StatefulSet web successful"),
    ] {
        assert!(events.contains(&(e.0.to_string(), e.1.to_string())), "event {e:?} in {events:?}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_rolling_update_from_the_highest_ordinal() {
    let c = Cluster::start().await;
    let api: Api<StatefulSet> = Api::namespaced(c.client.clone(), "default");
    api.create(&PostParams::default(), &statefulset("db", 3, json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}})))
        .await
        .unwrap();
    for i in 0..3 {
        let name = format!("db-{i}");
        eventually(&name, WAIT, || async { names(&c.client, "db").await.contains(&name).then_some(()) }).await;
        mark_ready(&c.client, "default", &name).await;
    }
    eventually("all ready", WAIT, || async { (get(&c.client, "db").await.status.unwrap().ready_replicas == Some(3)).then_some(()) }).await;
    let old = rev(&pod(&c.client, "db-0").await);

    api.patch("db", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:2"}]}}}})))
        .await
        .unwrap();
    // db-2 first.
    let new = eventually("db-2 recreated at the update revision", WAIT, || async {
        let ps = pods(&c.client, "default", "app=db").await;
        ps.iter().find(|p| p.name_any() == "db-2" && rev(p) != old).map(rev)
    })
    .await;
    let s = get(&c.client, "db").await;
    assert_eq!(s.status.as_ref().unwrap().update_revision.as_deref(), Some(new.as_str()));
    tokio::time::sleep(SETTLE).await;
    assert_eq!(rev(&pod(&c.client, "db-1").await), old, "db-1 waits until db-2 is ready again");
    assert_eq!(pod(&c.client, "db-2").await.spec.unwrap().containers[0].image.as_deref(), Some("nginx:2"));
    mark_ready(&c.client, "default", "db-2").await;
    eventually("db-1 updated next", WAIT, || async {
        let p = Api::<Pod>::namespaced(c.client.clone(), "default").get_opt("db-1").await.unwrap()?;
        (rev(&p) == new).then_some(())
    })
    .await;
    mark_ready(&c.client, "default", "db-1").await;
    let s = eventually("partitioned roll out complete", WAIT, || async {
        let s = get(&c.client, "db").await;
        let st = s.status.clone().unwrap();
        (st.updated_replicas == Some(2) && st.ready_replicas == Some(3) && st.observed_generation == s.metadata.generation).then_some(s)
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    let p0 = pod(&c.client, "db-0").await;
    assert_eq!(rev(&p0), old, "ordinals below the partition keep the current revision");
    assert!(is_ready(&p0) && p0.metadata.deletion_timestamp.is_none());
    let st = s.status.unwrap();
    assert_eq!(st.current_revision.as_deref(), Some(old.as_str()), "the current revision stays while db-0 is old");
    assert_eq!(st.current_replicas, Some(1));
    let (ok, out) = workloads::kubectl(&c.server, &["rollout", "status", "sts/db", "--timeout=20s"]).await;
    assert!(ok && out.contains("partitioned roll out complete: 2 new pods have been updated"), "kubectl rollout status: {out}");

    // Partition 0: db-0 too; then everything is at the new revision.
    api.patch("db", &PatchParams::default(), &Patch::Merge(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}))).await.unwrap();
    eventually("db-0 updated", WAIT, || async {
        let p = Api::<Pod>::namespaced(c.client.clone(), "default").get_opt("db-0").await.unwrap()?;
        (rev(&p) == new).then_some(())
    })
    .await;
    mark_ready(&c.client, "default", "db-0").await;
    let st = eventually("rolling update complete", WAIT, || async {
        let st = get(&c.client, "db").await.status.unwrap();
        (st.current_revision.as_deref() == Some(new.as_str()) && st.current_replicas == Some(3)).then_some(st)
    })
    .await;
    assert_eq!(st.update_revision.as_deref(), Some(new.as_str()));
    let (ok, out) = workloads::kubectl(&c.server, &["rollout", "status", "sts/db", "--timeout=20s"]).await;
    assert!(ok && out.contains("partitioned roll out complete: 3 new pods have been updated"), "kubectl rollout status: {out}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_management_creates_all_and_recreates_failed_pods() {
    let c = Cluster::start().await;
    let api: Api<StatefulSet> = Api::namespaced(c.client.clone(), "default");
    api.create(&PostParams::default(), &statefulset("par", 3, json!({"podManagementPolicy": "Parallel"}))).await.unwrap();
    wait_names(&c.client, "par", &["par-0", "par-1", "par-2"]).await;
    // A failed pod is deleted and recreated under the same name.
    let uid = pod(&c.client, "par-1").await.uid();
    workloads::mark_terminated(&c.client, "default", "par-1", false).await;
    eventually("par-1 recreated", WAIT, || async {
        let p = Api::<Pod>::namespaced(c.client.clone(), "default").get_opt("par-1").await.unwrap()?;
        (p.uid() != uid).then_some(())
    })
    .await;
    let events = eventually("RecreatingFailedPod", WAIT, || async {
        let ev = events_for(&c.client, "default", "par").await;
        ev.iter().any(|(r, _)| r == "RecreatingFailedPod").then_some(ev)
    })
    .await;
    assert!(events.contains(&("RecreatingFailedPod".into(), "StatefulSet default/par is recreating failed Pod par-1".into())), "{events:?}");
    c.shutdown().await;
}
