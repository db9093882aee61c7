//! The disruption controller and the eviction subresource against the real
//! `tug server` binary (build it first: `cargo build -p tug`), with a fake
//! kubelet making pods ready. Each test has its own server.

use crate::support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::workloads::{FakeKubelet, Fate, events_for, patch_retrying, status_for};
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

fn pdb(name: &str, app: &str, budget: serde_json::Value) -> PodDisruptionBudget {
    let mut spec = json!({"selector": {"matchLabels": {"app": app}}});
    for (k, v) in budget.as_object().unwrap() {
        spec[k] = v.clone();
    }
    obj(json!({"metadata": {"name": name}, "spec": spec}))
}

/// (expectedPods, desiredHealthy, currentHealthy, disruptionsAllowed).
fn numbers(p: &PodDisruptionBudget) -> (i32, i32, i32, i32) {
    let s = p.status.clone().unwrap_or_default();
    (s.expected_pods, s.desired_healthy, s.current_healthy, s.disruptions_allowed)
}

/// Waits until the PDB's status has these numbers and is up to date.
async fn wait_numbers(api: &Api<PodDisruptionBudget>, name: &str, want: (i32, i32, i32, i32)) -> PodDisruptionBudget {
    let mut last = None;
    let what = format!("PDB {name} to report (expected, desired, current, allowed) = {want:?}");
    let r = tokio::time::timeout(WAIT, async {
        loop {
            let p = api.get(name).await.unwrap();
            let fresh = p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation;
            if fresh && numbers(&p) == want {
                return p;
            }
            last = Some(numbers(&p));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    r.unwrap_or_else(|_| panic!("timed out waiting for {what}; last seen {last:?}"))
}

fn condition(p: &PodDisruptionBudget) -> (String, String) {
    let c = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionAllowed"))
        .expect("a DisruptionAllowed condition");
    (c.status.clone(), c.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdb_status_follows_min_available_and_max_unavailable() {
    let c = Cluster::start().await;
    namespace(&c.client, "pdb").await;
    // Pods are ready until the flag is cleared; later ones stay not ready.
    let ready = Arc::new(AtomicBool::new(true));
    let r = ready.clone();
    let _kubelet = FakeKubelet::start(c.client.clone(), "pdb", move |_| if r.load(Ordering::SeqCst) { Fate::Ready } else { Fate::NotReady });
    let pp = PostParams::default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "pdb");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.client.clone(), "pdb");
    rs_api.create(&pp, &replica_set("web", 4, "web")).await.unwrap();
    pdbs.create(&pp, &pdb("int", "web", json!({"minAvailable": 2}))).await.unwrap();
    pdbs.create(&pp, &pdb("pct", "web", json!({"minAvailable": "60%"}))).await.unwrap();
    pdbs.create(&pp, &pdb("max", "web", json!({"maxUnavailable": 1}))).await.unwrap();
    pdbs.create(&pp, &pdb("maxpct", "web", json!({"maxUnavailable": "50%"}))).await.unwrap();

    let int = wait_numbers(&pdbs, "int", (4, 2, 4, 2)).await;
    assert_eq!(condition(&int), ("True".into(), "SufficientPods".into()));
    assert_eq!(int.status.as_ref().unwrap().observed_generation, Some(1));
    // 60% of the ReplicaSet's 4, rounded up.
    wait_numbers(&pdbs, "pct", (4, 3, 4, 1)).await;
    wait_numbers(&pdbs, "max", (4, 3, 4, 1)).await;
    wait_numbers(&pdbs, "maxpct", (4, 2, 4, 2)).await;

    // Two more pods that never become ready: percentages and maxUnavailable
    // follow the ReplicaSet's scale, an integer minAvailable the pod count.
    ready.store(false, Ordering::SeqCst);
    patch_retrying(&rs_api, "web", Patch::Merge(json!({"spec": {"replicas": 6}}))).await;
    wait_numbers(&pdbs, "int", (6, 2, 4, 2)).await;
    let pct = wait_numbers(&pdbs, "pct", (6, 4, 4, 0)).await;
    assert_eq!(condition(&pct), ("False".into(), "InsufficientPods".into()));
    wait_numbers(&pdbs, "max", (6, 5, 4, 0)).await;
    wait_numbers(&pdbs, "maxpct", (6, 3, 4, 1)).await;

    // A spec change is observed (a new generation).
    let p = patch_retrying(&pdbs, "int", Patch::Merge(json!({"spec": {"minAvailable": 4}}))).await;
    assert_eq!(p.metadata.generation, Some(2));
    let int = wait_numbers(&pdbs, "int", (6, 4, 4, 0)).await;
    assert_eq!(int.status.as_ref().unwrap().observed_generation, Some(2));
    assert_eq!(condition(&int), ("False".into(), "InsufficientPods".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdb_counts_deployment_scale_and_flags_unmanaged_pods() {
    let c = Cluster::start().await;
    namespace(&c.client, "dep").await;
    let _kubelet = FakeKubelet::start(c.client.clone(), "dep", |_| Fate::Ready);
    let pp = PostParams::default();
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), "dep");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.client.clone(), "dep");
    deploys
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "api"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}})),
        )
        .await
        .unwrap();
    // Pods of a Deployment's ReplicaSet: the Deployment's scale counts.
    pdbs.create(&pp, &pdb("api", "api", json!({"maxUnavailable": "34%"}))).await.unwrap();
    let p = wait_numbers(&pdbs, "api", (3, 1, 3, 2)).await;
    assert_eq!(condition(&p), ("True".into(), "SufficientPods".into()));

    // A bare pod under a percentage: it adds nothing to the expected count
    // (so nothing may be disrupted), and the PDB gets a warning.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "dep");
    pods.create(&pp, &obj(json!({"metadata": {"name": "solo", "labels": {"app": "solo"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}})))
        .await
        .unwrap();
    pdbs.create(&pp, &pdb("solo", "solo", json!({"minAvailable": "50%"}))).await.unwrap();
    wait_numbers(&pdbs, "solo", (0, 0, 1, 0)).await;
    let events = eventually("an UnmanagedPods event", WAIT, || async {
        let e = events_for(&c.client, "dep", "PodDisruptionBudget", "solo").await;
        e.iter().any(|(t, r, _)| t == "Warning" && r == "UnmanagedPods").then_some(e)
    })
    .await;
    assert!(events.iter().any(|(_, _, m)| m.contains("To account for these pods please set \".spec.minAvailable\"")), "{events:?}");
}

async fn client_without_retries(c: &Cluster) -> Client {
    let kc = kube::config::Kubeconfig::read_from(&c.server.kubeconfig).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("client config");
    config.default_retry = false;
    Client::try_from(config).expect("a client")
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_spends_the_budget_and_is_refused_at_zero() {
    let c = Cluster::start().await;
    namespace(&c.client, "evict").await;
    // The first three pods become ready; replacements stay Pending.
    let ready: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    let _kubelet = FakeKubelet::start(c.client.clone(), "evict", move |p| {
        let mut ready = ready.lock().unwrap();
        let uid = p.uid().unwrap_or_default();
        if ready.contains(&uid) || ready.len() < 3 {
            ready.insert(uid);
            Fate::Ready
        } else {
            Fate::Leave
        }
    });
    let pp = PostParams::default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "evict");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.client.clone(), "evict");
    // kube-rs retries 429s by default (for minutes); the refusals are the point here.
    let pods: Api<Pod> = Api::namespaced(client_without_retries(&c).await, "evict");
    rs_api.create(&pp, &replica_set("web", 3, "web")).await.unwrap();
    pdbs.create(&pp, &pdb("budget", "web", json!({"minAvailable": 2}))).await.unwrap();
    wait_numbers(&pdbs, "budget", (3, 2, 3, 1)).await;

    let mut running: Vec<String> = pods.list(&ListParams::default()).await.unwrap().items.iter().map(|p| p.name_any()).collect();
    running.sort();
    assert_eq!(running.len(), 3);
    let ep = EvictParams::default();
    pods.evict(&running[0], &ep).await.expect("the budget allows one eviction");
    // The budget was spent by the eviction itself, before the controller
    // noticed anything: the next one is refused.
    let err = api_error(pods.evict(&running[1], &ep).await.expect_err("a second eviction must be refused"));
    assert_eq!((err.code, err.reason.as_str()), (429, "TooManyRequests"), "{err:?}");
    assert_eq!(err.message, "Cannot evict pod as it would violate the pod's disruption budget.");
    let causes = err.details.map(|d| d.causes).unwrap_or_default();
    assert!(
        causes.iter().any(|c| c.reason == "DisruptionBudget" && c.message.starts_with("The disruption budget budget needs 2 healthy pods and has ")),
        "{causes:?}"
    );
    assert!(pods.get_opt(&running[1]).await.unwrap().is_some_and(|p| p.metadata.deletion_timestamp.is_none()), "the refused pod is left alone");
    let gone = pods.get_opt(&running[0]).await.unwrap();
    assert!(gone.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "the evicted pod is deleted");

    // The replacement stays Pending: two healthy, nothing to spare.
    let p = wait_numbers(&pdbs, "budget", (3, 2, 2, 0)).await;
    assert_eq!(condition(&p), ("False".into(), "InsufficientPods".into()));
    assert!(pods.evict(&running[2], &ep).await.is_err(), "still refused");
    // A pending pod disrupts nothing: it may always be evicted.
    let pending = eventually("a pending replacement pod", WAIT, || async {
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|p| p.metadata.deletion_timestamp.is_none() && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"))
    })
    .await;
    pods.evict(&pending.name_any(), &ep).await.expect("evicting a pending pod needs no budget");

    // A replacement becomes ready: one disruption allowed again.
    let replacement = eventually("another pending replacement", WAIT, || async {
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|p| p.metadata.deletion_timestamp.is_none() && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"))
    })
    .await;
    pods.patch_status(&replacement.name_any(), &PatchParams::default(), &Patch::Merge(status_for(&replacement, Fate::Ready).unwrap())).await.unwrap();
    wait_numbers(&pdbs, "budget", (3, 2, 3, 1)).await;
    pods.evict(&running[1], &ep).await.expect("the budget allows one eviction again");
    let after = pdbs.get("budget").await.unwrap();
    assert!(after.status.as_ref().unwrap().disruptions_allowed == 0, "the eviction took the allowed disruption: {:?}", after.status);

    // Two budgets over one pod: upstream's eviction refuses to choose.
    pdbs.create(&pp, &pdb("second", "web", json!({"maxUnavailable": 3}))).await.unwrap();
    let err = api_error(pods.evict(&running[2], &ep).await.expect_err("two PDBs"));
    assert_eq!(err.code, 500);
    assert_eq!(err.message, "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.");
    pdbs.delete("second", &DeleteParams::default()).await.unwrap();
}
