//! The resource quota controller and the API server's quota admission
//! against the real `tug server` binary (build it first: `cargo build -p
//! tug`). Each test has its own server.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{Cluster, obj};

const WAIT: Duration = Duration::from_secs(30);

async fn namespace(client: &Client, name: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(&PostParams::default(), &obj(json!({"metadata": {"name": name}}))).await.unwrap();
}

fn pod(name: &str, resources: Value) -> Pod {
    obj(json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "nginx:1", "resources": resources}]}}))
}

fn used(q: &ResourceQuota) -> BTreeMap<String, String> {
    q.status.as_ref().and_then(|s| s.used.clone()).unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
}

/// Waits until the quota's `status.used` has these entries (and maybe others).
async fn wait_used(api: &Api<ResourceQuota>, name: &str, want: &[(&str, &str)]) -> ResourceQuota {
    let mut last = BTreeMap::new();
    let r = tokio::time::timeout(WAIT, async {
        loop {
            let q = api.get(name).await.unwrap();
            last = used(&q);
            if want.iter().all(|(k, v)| last.get(*k).map(String::as_str) == Some(*v)) {
                return q;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    r.unwrap_or_else(|_| panic!("timed out waiting for quota {name} to use {want:?}; last seen {last:?}"))
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_status_counts_what_the_namespace_uses() {
    let c = Cluster::start().await;
    namespace(&c.client, "rq").await;
    let pp = PostParams::default();
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "rq");
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "rq");
    // Objects from before the quota are counted by its first sync.
    cms.create(&pp, &obj(json!({"metadata": {"name": "early"}, "data": {"k": "v"}}))).await.unwrap();
    secrets.create(&pp, &obj(json!({"metadata": {"name": "early"}, "stringData": {"k": "v"}}))).await.unwrap();
    let quotas: Api<ResourceQuota> = Api::namespaced(c.client.clone(), "rq");
    let hard = json!({
        "pods": "10", "requests.cpu": "2", "requests.memory": "1Gi", "limits.memory": "2Gi",
        "services": "5", "services.nodeports": "4", "services.loadbalancers": "1",
        "configmaps": "5", "count/configmaps": "5", "secrets": "5", "persistentvolumeclaims": "3", "requests.storage": "10Gi",
        "count/deployments.apps": "2", "replicationcontrollers": "2", "resourcequotas": "2",
    });
    quotas.create(&pp, &obj(json!({"metadata": {"name": "compute"}, "spec": {"hard": hard}}))).await.unwrap();
    let q =
        wait_used(&quotas, "compute", &[("pods", "0"), ("configmaps", "1"), ("count/configmaps", "1"), ("secrets", "1"), ("resourcequotas", "1")])
            .await;
    let status_hard: BTreeMap<String, String> = q.status.clone().unwrap().hard.unwrap().into_iter().map(|(k, v)| (k, v.0)).collect();
    let spec_hard: BTreeMap<String, String> = serde_json::from_value(hard).unwrap();
    assert_eq!(status_hard, spec_hard, "status.hard mirrors spec.hard");
    assert_eq!(used(&q).keys().collect::<Vec<_>>(), status_hard.keys().collect::<Vec<_>>(), "every limited resource has a usage");
    assert_eq!(used(&q)["requests.cpu"], "0");

    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "rq");
    pods.create(&pp, &pod("a", json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}))).await.unwrap();
    // A quota on cpu and memory makes every container state them.
    let err = api_error(pods.create(&pp, &pod("b", json!({"requests": {"cpu": "200m", "memory": "64Mi"}}))).await.expect_err("no memory limit"));
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(err.message, "pods \"b\" is forbidden: failed quota: compute: must specify limits.memory for: c");
    pods.create(&pp, &pod("b", json!({"requests": {"cpu": "200m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}}))).await.unwrap();
    let svcs: Api<Service> = Api::namespaced(c.client.clone(), "rq");
    svcs.create(&pp, &obj(json!({"metadata": {"name": "plain"}, "spec": {"ports": [{"port": 80}], "selector": {"app": "x"}}}))).await.unwrap();
    svcs.create(
        &pp,
        &obj(json!({"metadata": {"name": "np"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "b"}]}})),
    )
    .await
    .unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "rq");
    pvcs.create(
        &pp,
        &obj(json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})),
    )
    .await
    .unwrap();
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), "rq");
    deploys
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "d"}, "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})),
        )
        .await
        .unwrap();
    cms.create(&pp, &obj(json!({"metadata": {"name": "late"}}))).await.unwrap();
    let want = [
        ("pods", "2"),
        ("requests.cpu", "300m"),
        ("requests.memory", "192Mi"),
        ("limits.memory", "320Mi"),
        ("services", "2"),
        ("services.nodeports", "2"),
        ("services.loadbalancers", "0"),
        ("persistentvolumeclaims", "1"),
        ("requests.storage", "1Gi"),
        ("count/deployments.apps", "1"),
        ("configmaps", "2"),
        ("count/configmaps", "2"),
    ];
    wait_used(&quotas, "compute", &want).await;

    // Replenishment: a finished pod stops counting, deleted objects too.
    pods.patch_status("a", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Succeeded"}}))).await.unwrap();
    wait_used(&quotas, "compute", &[("pods", "1"), ("requests.cpu", "200m"), ("requests.memory", "64Mi"), ("limits.memory", "64Mi")]).await;
    svcs.delete("np", &DeleteParams::default()).await.unwrap();
    cms.delete("early", &DeleteParams::default()).await.unwrap();
    deploys.delete("d", &DeleteParams::default()).await.unwrap();
    wait_used(&quotas, "compute", &[("services", "1"), ("services.nodeports", "0"), ("configmaps", "1"), ("count/deployments.apps", "0")]).await;

    // A new limit is picked up.
    quotas.patch("compute", &PatchParams::default(), &Patch::Merge(json!({"spec": {"hard": {"count/secrets": "9"}}}))).await.unwrap();
    let q = wait_used(&quotas, "compute", &[("count/secrets", "1")]).await;
    assert_eq!(q.status.unwrap().hard.unwrap()["count/secrets"].0, "9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_what_exceeds_a_quota() {
    let c = Cluster::start().await;
    namespace(&c.client, "adm").await;
    let pp = PostParams::default();
    let quotas: Api<ResourceQuota> = Api::namespaced(c.client.clone(), "adm");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "adm");
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "adm");
    quotas.create(&pp, &obj(json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2", "count/configmaps": "1"}}}))).await.unwrap();
    wait_used(&quotas, "q", &[("pods", "0"), ("count/configmaps", "0")]).await;

    pods.create(&pp, &pod("p1", json!({}))).await.unwrap();
    pods.create(&pp, &pod("p2", json!({}))).await.unwrap();
    // Admission charged the quota itself, in the same request.
    let q = quotas.get("q").await.unwrap();
    assert_eq!(used(&q)["pods"], "2");
    let err = api_error(pods.create(&pp, &pod("p3", json!({}))).await.expect_err("over the quota"));
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"), "{err:?}");
    assert_eq!(err.message, "pods \"p3\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2");
    assert!(pods.get_opt("p3").await.unwrap().is_none());
    // A dry run is judged the same, and charges nothing.
    let dry = PostParams { dry_run: true, ..Default::default() };
    assert_eq!(api_error(pods.create(&dry, &pod("p3", json!({}))).await.unwrap_err()).code, 403);

    cms.create(&pp, &obj(json!({"metadata": {"name": "one"}}))).await.unwrap();
    let err = api_error(cms.create(&pp, &obj(json!({"metadata": {"name": "two"}}))).await.expect_err("one configmap only"));
    assert_eq!(
        err.message,
        "configmaps \"two\" is forbidden: exceeded quota: q, requested: count/configmaps=1, used: count/configmaps=1, limited: count/configmaps=1"
    );

    // A deleted pod frees its share once the controller recounts.
    pods.delete("p1", &DeleteParams::default()).await.unwrap();
    wait_used(&quotas, "q", &[("pods", "1")]).await;
    pods.create(&pp, &pod("p3", json!({}))).await.expect("room again after the recount");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_never_exceed_a_quota() {
    let c = Cluster::start().await;
    namespace(&c.client, "race").await;
    let pp = PostParams::default();
    let quotas: Api<ResourceQuota> = Api::namespaced(c.client.clone(), "race");
    quotas.create(&pp, &obj(json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "3"}}}))).await.unwrap();
    wait_used(&quotas, "q", &[("pods", "0")]).await;

    let attempts = 12;
    let results = futures::future::join_all((0..attempts).map(|i| {
        let pods: Api<Pod> = Api::namespaced(c.client.clone(), "race");
        async move { pods.create(&PostParams::default(), &pod(&format!("p{i}"), json!({}))).await }
    }))
    .await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    for r in results.into_iter().filter_map(Result::err) {
        let e = api_error(r);
        assert_eq!(e.code, 403, "every refusal is the quota's: {e:?}");
        assert!(e.message.contains("exceeded quota: q, requested: pods=1, used: pods=3, limited: pods=3"), "{}", e.message);
    }
    assert_eq!(created, 3, "exactly the quota's worth of pods is admitted");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "race");
    assert_eq!(pods.list(&ListParams::default()).await.unwrap().items.len(), 3);
    assert_eq!(used(&quotas.get("q").await.unwrap())["pods"], "3");
    // The controller's recount (a new limit triggers one) agrees.
    quotas.patch("q", &PatchParams::default(), &Patch::Merge(json!({"spec": {"hard": {"pods": "4"}}}))).await.unwrap();
    let q = tokio::time::timeout(WAIT, async {
        loop {
            let q = quotas.get("q").await.unwrap();
            if q.status.as_ref().and_then(|s| s.hard.as_ref()).map(|h| h["pods"].0 == "4").unwrap_or(false) {
                return q;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the controller picks up the new limit");
    assert_eq!(used(&q)["pods"], "3", "{:?}", q.status);
}
