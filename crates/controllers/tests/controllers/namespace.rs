//! The namespace controller against the real `tug server` binary (build it
//! first: `cargo build -p tug`). Each test has its own server.

use crate::support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{Cluster, code, eventually, obj};

const WAIT: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(3);

async fn create_namespace(c: &Cluster, name: &str) {
    let nss: Api<Namespace> = Api::all(c.client.clone());
    nss.create(&PostParams::default(), &obj(json!({"metadata": {"name": name}}))).await.unwrap();
}

async fn fill(c: &Cluster, ns: &str) {
    let pp = PostParams::default();
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), ns);
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), ns);
    for i in 0..3 {
        cms.create(&pp, &obj(json!({"metadata": {"name": format!("cm-{i}")}, "data": {"k": "v"}}))).await.unwrap();
        secrets.create(&pp, &obj(json!({"metadata": {"name": format!("secret-{i}")}, "stringData": {"k": "v"}}))).await.unwrap();
    }
    let labels = json!({"app": "web"});
    let deploy = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    deploys.create(&pp, &obj(deploy)).await.unwrap();
}

/// Objects of the three kinds left in `ns`.
async fn content(c: &Cluster, ns: &str) -> usize {
    let lp = ListParams::default();
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), ns);
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), ns);
    cms.list(&lp).await.unwrap().items.len() + secrets.list(&lp).await.unwrap().items.len() + deploys.list(&lp).await.unwrap().items.len()
}

async fn namespace_gone(nss: &Api<Namespace>, name: &str) -> Option<()> {
    match nss.get(name).await {
        Err(e) if code(&e) == Some(404) => Some(()),
        Err(e) => panic!("GET namespace {name}: {e}"),
        Ok(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_removes_its_content_then_the_namespace() {
    let c = Cluster::start().await;
    let nss: Api<Namespace> = Api::all(c.client.clone());
    create_namespace(&c, "doomed").await;
    create_namespace(&c, "bystander").await;
    fill(&c, "doomed").await;
    fill(&c, "bystander").await;
    assert_eq!(content(&c, "doomed").await, 7);

    // A live namespace is left alone.
    tokio::time::sleep(SETTLE).await;
    assert_eq!(content(&c, "doomed").await, 7, "content of a namespace not being deleted was touched");

    nss.delete("doomed", &DeleteParams::default()).await.unwrap();
    eventually("the namespace is deleted (GET returns 404)", WAIT, || namespace_gone(&nss, "doomed")).await;
    assert_eq!(content(&c, "doomed").await, 0, "content is removed before the namespace");
    assert_eq!(content(&c, "bystander").await, 7, "other namespaces keep their content");
    assert!(nss.get_opt("bystander").await.unwrap().is_some());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_waits_for_content_with_finalizers() {
    let c = Cluster::start().await;
    let nss: Api<Namespace> = Api::all(c.client.clone());
    create_namespace(&c, "held").await;
    fill(&c, "held").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "held");
    let held = json!({"metadata": {"name": "held-cm", "finalizers": ["example.com/hold"]}, "data": {"k": "v"}});
    cms.create(&PostParams::default(), &obj(held)).await.unwrap();

    nss.delete("held", &DeleteParams::default()).await.unwrap();
    eventually("everything without a finalizer is deleted", WAIT, || async { (content(&c, "held").await == 1).then_some(()) }).await;
    let lingering = cms.get("held-cm").await.unwrap();
    assert!(lingering.metadata.deletion_timestamp.is_some(), "the object with a finalizer was asked to go");

    // The namespace waits, Terminating, with its finalizer on.
    tokio::time::sleep(SETTLE).await;
    let ns = nss.get("held").await.expect("the namespace waits for its content");
    assert_eq!(ns.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Terminating"));
    let fins = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
    assert_eq!(fins, ["kubernetes"], "the finalizer stays while content remains");

    // Release the object: the namespace goes.
    cms.patch("held-cm", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    eventually("the namespace is deleted once its content is gone", WAIT, || namespace_gone(&nss, "held")).await;
    c.shutdown().await;
}

/// Upstream reports deletion progress in the Namespace's conditions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_namespace_reports_conditions() {
    let c = Cluster::start().await;
    let nss: Api<Namespace> = Api::all(c.client.clone());
    create_namespace(&c, "cond").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "cond");
    let held = json!({"metadata": {"name": "held-cm", "finalizers": ["example.com/hold"]}, "data": {"k": "v"}});
    cms.create(&PostParams::default(), &obj(held)).await.unwrap();
    nss.delete("cond", &DeleteParams::default()).await.unwrap();
    let ns = eventually("the namespace reports remaining content in its conditions", WAIT, || async {
        let ns = nss.get("cond").await.unwrap();
        let conds = ns.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        conds.iter().any(|c| c.type_ == "NamespaceContentRemaining" && c.status == "True").then_some(ns)
    })
    .await;
    let conds = ns.status.and_then(|s| s.conditions).unwrap_or_default();
    let get = |t: &str| conds.iter().find(|c| c.type_ == t).unwrap_or_else(|| panic!("no {t} condition: {conds:?}")).clone();
    let remaining = get("NamespaceContentRemaining");
    assert_eq!(remaining.reason.as_deref(), Some("SomeResourcesRemain"));
    assert_eq!(remaining.message.as_deref(), Some("Some resources are remaining: configmaps. has 1 resource instances"));
    let fins = get("NamespaceFinalizersRemaining");
    assert_eq!(fins.status, "True");
    assert_eq!(fins.message.as_deref(), Some("Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"));
    assert_eq!(get("NamespaceDeletionContentFailure").status, "False");
    assert_eq!(get("NamespaceDeletionDiscoveryFailure").status, "False");
    cms.patch("held-cm", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    eventually("the namespace goes", WAIT, || namespace_gone(&nss, "cond")).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_controller_runs_on_its_own() {
    let (server, client) = Cluster::bare().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(&PostParams::default(), &obj(json!({"metadata": {"name": "solo"}}))).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "solo");
    cms.create(&PostParams::default(), &obj(json!({"metadata": {"name": "x"}}))).await.unwrap();
    nss.delete("solo", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ns = nss.get("solo").await.expect("without the controller the namespace stays");
    assert!(ns.metadata.deletion_timestamp.is_some());
    let ctl = tokio::spawn(tug_controllers::namespace::run(server.client().await));
    eventually("the namespace is deleted", WAIT, || namespace_gone(&nss, "solo")).await;
    assert!(cms.get_opt("x").await.unwrap().is_none());
    ctl.abort();
}
