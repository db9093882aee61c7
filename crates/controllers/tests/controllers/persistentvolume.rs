//! The PersistentVolume binder against the real `tug server` binary (build
//! it first: `cargo build -p tug`). Each test has its own server.

use crate::support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use support::{Cluster, eventually, obj};

const WAIT: Duration = Duration::from_secs(30);

fn pv(name: &str, size: &str, modes: &[&str], class: Option<&str>, labels: Value, policy: &str) -> PersistentVolume {
    let mut v = json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": modes,
            "persistentVolumeReclaimPolicy": policy,
            "hostPath": {"path": format!("/tmp/tug-pv-test/{name}")},
        },
    });
    if let Some(c) = class {
        v["spec"]["storageClassName"] = json!(c);
    }
    obj(v)
}

fn pvc(name: &str, size: &str, modes: &[&str], extra: Value) -> PersistentVolumeClaim {
    let mut v = json!({
        "metadata": {"name": name},
        "spec": {"accessModes": modes, "resources": {"requests": {"storage": size}}},
    });
    if let Some(m) = extra.as_object() {
        for (k, x) in m {
            v["spec"][k] = x.clone();
        }
    }
    obj(v)
}

fn phase_of_claim(c: &PersistentVolumeClaim) -> &str {
    c.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn phase_of_volume(v: &PersistentVolume) -> &str {
    v.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Waits until the claim is Bound and returns the volume's name.
async fn bound(claims: &Api<PersistentVolumeClaim>, name: &str) -> String {
    let c = eventually(&format!("claim {name} is bound"), WAIT, || async {
        claims.get(name).await.ok().filter(|c| phase_of_claim(c) == "Bound")
    })
    .await;
    c.spec.and_then(|s| s.volume_name).expect("a bound claim names its volume")
}

async fn events_of(client: &kube::Client, name: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_bind_to_the_smallest_fitting_volume() {
    let c = Cluster::start().await;
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    let pp = PostParams::default();
    for v in [
        pv("small", "1Gi", &["ReadWriteOnce"], None, json!({}), "Retain"),
        pv("medium", "5Gi", &["ReadWriteOnce", "ReadOnlyMany"], None, json!({}), "Retain"),
        pv("large", "10Gi", &["ReadWriteOnce"], None, json!({}), "Retain"),
        pv("shared", "2Gi", &["ReadWriteMany"], None, json!({}), "Retain"),
        pv("fast", "3Gi", &["ReadWriteOnce"], Some("fast"), json!({}), "Retain"),
        pv("gold", "6Gi", &["ReadWriteOnce"], None, json!({"tier": "gold"}), "Retain"),
    ] {
        pvs.create(&pp, &v).await.unwrap();
    }

    // 2Gi RWO: small is too small, shared has no RWO, fast has a class;
    // of medium (5Gi), gold (6Gi) and large (10Gi) the smallest wins.
    claims.create(&pp, &pvc("a", "2Gi", &["ReadWriteOnce"], json!({}))).await.unwrap();
    assert_eq!(bound(&claims, "a").await, "medium");
    let a = claims.get("a").await.unwrap();
    let ann = a.annotations();
    assert_eq!(ann.get("pv.kubernetes.io/bind-completed").map(String::as_str), Some("yes"));
    assert_eq!(ann.get("pv.kubernetes.io/bound-by-controller").map(String::as_str), Some("yes"));
    let st = a.status.clone().unwrap();
    assert_eq!(st.capacity.unwrap()["storage"].0, "5Gi", "the claim's capacity is the volume's");
    assert_eq!(st.access_modes.unwrap(), ["ReadWriteOnce", "ReadOnlyMany"]);
    let medium = eventually("medium is Bound", WAIT, || async { pvs.get("medium").await.ok().filter(|v| phase_of_volume(v) == "Bound") }).await;
    let r = medium.spec.unwrap().claim_ref.expect("claimRef");
    assert_eq!(r.kind.as_deref(), Some("PersistentVolumeClaim"));
    assert_eq!(r.api_version.as_deref(), Some("v1"));
    assert_eq!(r.namespace.as_deref(), Some("default"));
    assert_eq!(r.name.as_deref(), Some("a"));
    assert_eq!(r.uid, a.metadata.uid);
    assert!(r.resource_version.as_deref().is_some_and(|v| !v.is_empty()));

    // Access modes: only shared offers ReadWriteMany.
    claims.create(&pp, &pvc("b", "1Gi", &["ReadWriteMany"], json!({}))).await.unwrap();
    assert_eq!(bound(&claims, "b").await, "shared");
    // The class must match.
    claims.create(&pp, &pvc("c", "1Gi", &["ReadWriteOnce"], json!({"storageClassName": "fast"}))).await.unwrap();
    assert_eq!(bound(&claims, "c").await, "fast");
    // The selector must match the volume's labels (small would be smaller).
    claims.create(&pp, &pvc("d", "1Gi", &["ReadWriteOnce"], json!({"selector": {"matchLabels": {"tier": "gold"}}}))).await.unwrap();
    assert_eq!(bound(&claims, "d").await, "gold");
    // Without a selector, the smallest.
    claims.create(&pp, &pvc("e", "1Gi", &["ReadWriteOnce"], json!({}))).await.unwrap();
    assert_eq!(bound(&claims, "e").await, "small");

    // Nothing fits: Pending, with upstream's event.
    claims.create(&pp, &pvc("huge", "100Gi", &["ReadWriteOnce"], json!({}))).await.unwrap();
    claims.create(&pp, &pvc("classless", "1Gi", &["ReadWriteOnce"], json!({"storageClassName": "slow"}))).await.unwrap();
    eventually("a FailedBinding event on huge", WAIT, || async {
        events_of(&c.client, "huge")
            .await
            .into_iter()
            .any(|(r, m)| r == "FailedBinding" && m == "no persistent volumes available for this claim and no storage class is set")
            .then_some(())
    })
    .await;
    let huge = claims.get("huge").await.unwrap();
    assert_eq!(phase_of_claim(&huge), "Pending");
    assert!(huge.spec.unwrap().volume_name.is_none());
    assert_eq!(phase_of_claim(&claims.get("classless").await.unwrap()), "Pending");
    // large is still Available: nothing took it.
    assert_eq!(phase_of_volume(&pvs.get("large").await.unwrap()), "Available");

    // A volume that fits, created later, is bound to the waiting claim.
    pvs.create(&pp, &pv("big", "200Gi", &["ReadWriteOnce"], None, json!({}), "Retain")).await.unwrap();
    assert_eq!(bound(&claims, "huge").await, "big");
    assert_eq!(phase_of_claim(&claims.get("classless").await.unwrap()), "Pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_naming_a_volume_and_release_on_claim_deletion() {
    let c = Cluster::start().await;
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    let pp = PostParams::default();
    pvs.create(&pp, &pv("tiny", "1Gi", &["ReadWriteOnce"], None, json!({}), "Retain")).await.unwrap();
    pvs.create(&pp, &pv("exact", "10Gi", &["ReadWriteOnce"], None, json!({}), "Retain")).await.unwrap();
    pvs.create(&pp, &pv("doomed", "1Gi", &["ReadWriteMany"], None, json!({}), "Delete")).await.unwrap();

    // A claim naming a volume gets exactly that one, not the smallest.
    claims.create(&pp, &pvc("named", "1Gi", &["ReadWriteOnce"], json!({"volumeName": "exact"}))).await.unwrap();
    assert_eq!(bound(&claims, "named").await, "exact");
    let named = claims.get("named").await.unwrap();
    assert_eq!(named.annotations().get("pv.kubernetes.io/bind-completed").map(String::as_str), Some("yes"));
    assert!(!named.annotations().contains_key("pv.kubernetes.io/bound-by-controller"), "the user chose the volume");
    assert_eq!(named.status.unwrap().capacity.unwrap()["storage"].0, "10Gi");
    assert_eq!(phase_of_volume(&pvs.get("tiny").await.unwrap()), "Available");

    // A claim naming a volume that does not fit stays Pending.
    claims.create(&pp, &pvc("misfit", "5Gi", &["ReadWriteOnce"], json!({"volumeName": "tiny"}))).await.unwrap();
    eventually("a VolumeMismatch event on misfit", WAIT, || async {
        events_of(&c.client, "misfit")
            .await
            .into_iter()
            .any(|(r, m)| r == "VolumeMismatch" && m == "Cannot bind to requested volume \"tiny\": requested PV is too small")
            .then_some(())
    })
    .await;
    assert_eq!(phase_of_claim(&claims.get("misfit").await.unwrap()), "Pending");
    assert_eq!(phase_of_volume(&pvs.get("tiny").await.unwrap()), "Available");
    // A claim naming a volume bound to another claim stays Pending too.
    claims.create(&pp, &pvc("latecomer", "1Gi", &["ReadWriteOnce"], json!({"volumeName": "exact"}))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(phase_of_claim(&claims.get("latecomer").await.unwrap()), "Pending");
    let exact = pvs.get("exact").await.unwrap();
    assert_eq!(exact.spec.unwrap().claim_ref.unwrap().name.as_deref(), Some("named"));

    // The claim deleted, its volume is Released (Retain: the claimRef stays,
    // nothing else binds it).
    claims.delete("named", &DeleteParams::default()).await.unwrap();
    let exact = eventually("exact is Released", WAIT, || async { pvs.get("exact").await.ok().filter(|v| phase_of_volume(v) == "Released") }).await;
    assert_eq!(exact.spec.unwrap().claim_ref.unwrap().name.as_deref(), Some("named"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(phase_of_claim(&claims.get("latecomer").await.unwrap()), "Pending", "a Released volume is not bound again");

    // Delete policy: hostPath volumes have no deleter; they are Released too.
    claims.create(&pp, &pvc("rwx", "1Gi", &["ReadWriteMany"], json!({}))).await.unwrap();
    assert_eq!(bound(&claims, "rwx").await, "doomed");
    claims.delete("rwx", &DeleteParams::default()).await.unwrap();
    eventually("doomed is Released", WAIT, || async { pvs.get("doomed").await.ok().filter(|v| phase_of_volume(v) == "Released") }).await;

    // Clearing the claimRef makes a Released volume Available again, and a
    // waiting claim takes it.
    let mut exact = pvs.get("exact").await.unwrap();
    exact.spec.as_mut().unwrap().claim_ref = None;
    pvs.replace("exact", &pp, &exact).await.unwrap();
    assert_eq!(bound(&claims, "latecomer").await, "exact");
    assert_eq!(claims.get("latecomer").await.unwrap().uid(), pvs.get("exact").await.unwrap().spec.unwrap().claim_ref.unwrap().uid);
}
