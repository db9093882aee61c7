//! The garbage collector against the real `tug server` binary (build it
//! first: `cargo build -p tug`). Each test has its own server.

use crate::support;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::ResourceExt;
use serde_json::json;
use support::{Cluster, eventually, obj, owner_ref};

const WAIT: Duration = Duration::from_secs(30);
/// How long "stays" is checked for: several times what collection takes.
const SETTLE: Duration = Duration::from_secs(3);

fn cm(name: &str, owners: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>) -> ConfigMap {
    obj(json!({"metadata": {"name": name, "ownerReferences": owners}, "data": {"k": "v"}}))
}

async fn gone<K>(api: &Api<K>, name: &str) -> Option<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(None) => Some(()),
        Ok(Some(_)) => None,
        Err(e) => panic!("GET {name}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_cascade_deletes_dependents_of_deleted_owners() {
    let c = Cluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let pp = PostParams::default();
    let owner = cms.create(&pp, &cm("owner", vec![])).await.unwrap();
    let keeper = cms.create(&pp, &cm("keeper", vec![])).await.unwrap();
    cms.create(&pp, &cm("dependent", vec![owner_ref(&owner, false)])).await.unwrap();
    cms.create(&pp, &cm("kept", vec![owner_ref(&keeper, false)])).await.unwrap();
    // Two owners, one of which goes: the object stays, minus that reference.
    cms.create(&pp, &cm("two-owners", vec![owner_ref(&owner, false), owner_ref(&keeper, false)])).await.unwrap();

    // Live owners keep their dependents.
    tokio::time::sleep(SETTLE).await;
    for n in ["dependent", "kept", "two-owners"] {
        assert!(cms.get_opt(n).await.unwrap().is_some(), "{n} was collected although its owner exists:\n{}", c.server.log());
    }

    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually("the dependent of the deleted owner is collected", WAIT, || gone(&cms, "dependent")).await;
    let two = eventually("the reference to the deleted owner is removed", WAIT, || async {
        let o = cms.get("two-owners").await.unwrap();
        (o.owner_references().len() == 1).then_some(o)
    })
    .await;
    assert_eq!(two.owner_references()[0].uid, keeper.uid().unwrap());
    tokio::time::sleep(SETTLE).await;
    assert!(cms.get_opt("kept").await.unwrap().is_some(), "an object whose owner lives was collected");
    assert!(cms.get_opt("two-owners").await.unwrap().is_some(), "an object with a live owner left was collected");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_with_another_uid_or_never_existing_counts_as_gone() {
    let c = Cluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let pp = PostParams::default();
    // An owner deleted and recreated under the same name has a new uid: the
    // old reference is dangling.
    let first = cms.create(&pp, &cm("reborn", vec![])).await.unwrap();
    let stale_ref = owner_ref(&first, false);
    cms.delete("reborn", &DeleteParams::default()).await.unwrap();
    let second = cms.create(&pp, &cm("reborn", vec![])).await.unwrap();
    assert_ne!(first.uid(), second.uid());
    cms.create(&pp, &cm("orphan-of-old", vec![stale_ref])).await.unwrap();
    // A reference to a name that never existed.
    let mut phantom = owner_ref(&second, false);
    phantom.name = "never-was".into();
    phantom.uid = "00000000-0000-0000-0000-000000000001".into();
    cms.create(&pp, &cm("orphan-of-phantom", vec![phantom])).await.unwrap();
    // A reference to a live owner, same name, same uid: stays.
    cms.create(&pp, &cm("child-of-new", vec![owner_ref(&second, false)])).await.unwrap();

    eventually("a dependent of an owner with another uid is collected", WAIT, || gone(&cms, "orphan-of-old")).await;
    eventually("a dependent of an owner that never existed is collected", WAIT, || gone(&cms, "orphan-of-phantom")).await;
    tokio::time::sleep(SETTLE).await;
    assert!(cms.get_opt("child-of-new").await.unwrap().is_some(), "the dependent of the live owner was collected");
    assert!(cms.get_opt("reborn").await.unwrap().is_some());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_propagation_keeps_dependents_and_drops_the_reference() {
    let c = Cluster::start().await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let pp = PostParams::default();
    let labels = json!({"app": "web"});
    let template = json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let deploy: Deployment = obj(json!({"metadata": {"name": "web"}, "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}}));
    let deploy = deploys.create(&pp, &deploy).await.unwrap();
    let rs: ReplicaSet = obj(json!({
        "metadata": {"name": "web-abc", "labels": labels, "ownerReferences": [owner_ref(&deploy, true)]},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}
    }));
    rss.create(&pp, &rs).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    assert!(rss.get_opt("web-abc").await.unwrap().is_some(), "the ReplicaSet was collected while its Deployment exists");

    let dp = DeleteParams { propagation_policy: Some(kube::api::PropagationPolicy::Orphan), ..DeleteParams::default() };
    deploys.delete("web", &dp).await.unwrap();
    eventually("the Deployment deleted with Orphan disappears", WAIT, || gone(&deploys, "web")).await;
    let rs = rss.get_opt("web-abc").await.unwrap().expect("the orphaned ReplicaSet remains");
    assert!(rs.owner_references().is_empty(), "the reference to the deleted Deployment is removed: {:?}", rs.owner_references());
    assert!(rs.metadata.deletion_timestamp.is_none());
    tokio::time::sleep(SETTLE).await;
    assert!(rss.get_opt("web-abc").await.unwrap().is_some(), "the orphan was collected later on");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletes_dependents_first() {
    let c = Cluster::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let pp = PostParams::default();
    let owner = cms.create(&pp, &cm("fg-owner", vec![])).await.unwrap();
    // The blocking dependent holds a finalizer of ours, so that the test can
    // see the owner wait for it.
    let mut blocker = cm("fg-blocker", vec![owner_ref(&owner, true)]);
    blocker.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    let blocker = cms.create(&pp, &blocker).await.unwrap();
    // Its own dependent: the foreground deletion cascades through it.
    cms.create(&pp, &cm("fg-grandchild", vec![owner_ref(&blocker, true)])).await.unwrap();
    // A non-blocking dependent is deleted too, but not waited for.
    cms.create(&pp, &cm("fg-nonblocking", vec![owner_ref(&owner, false)])).await.unwrap();
    tokio::time::sleep(SETTLE).await;

    // Record the order of deletions as the API server reports them.
    let mut events = Box::pin(watcher::watcher(cms.clone(), watcher::Config::default()));
    loop {
        if let Some(Ok(Event::InitDone)) = events.next().await {
            break;
        }
    }
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let recorder = {
        let order = order.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                if let Ok(Event::Delete(o)) = ev {
                    order.lock().unwrap().push(o.name_any());
                }
            }
        })
    };

    let dp = DeleteParams { propagation_policy: Some(kube::api::PropagationPolicy::Foreground), ..DeleteParams::default() };
    cms.delete("fg-owner", &dp).await.unwrap();
    eventually("the non-blocking dependent and the grandchild are deleted", WAIT, || async {
        (gone(&cms, "fg-nonblocking").await.is_some() && gone(&cms, "fg-grandchild").await.is_some()).then_some(())
    })
    .await;
    let blocker_now = eventually("the blocking dependent is being deleted", WAIT, || async {
        cms.get("fg-blocker").await.ok().filter(|b| b.metadata.deletion_timestamp.is_some())
    })
    .await;
    assert_eq!(blocker_now.uid(), blocker.uid());
    // The owner waits for its blocking dependent, with the finalizer on.
    tokio::time::sleep(SETTLE).await;
    let owner_now = cms.get_opt("fg-owner").await.unwrap().expect("the owner waits while a blocking dependent remains");
    assert!(owner_now.metadata.deletion_timestamp.is_some());
    assert!(owner_now.finalizers().iter().any(|f| f == "foregroundDeletion"), "{:?}", owner_now.finalizers());

    // Release the blocker: it goes, then the owner.
    let release = json!({"metadata": {"finalizers": null}});
    cms.patch("fg-blocker", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    eventually("the owner is deleted after its blocking dependent", WAIT, || gone(&cms, "fg-owner")).await;
    assert!(gone(&cms, "fg-blocker").await.is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    recorder.abort();
    let order = order.lock().unwrap().clone();
    let pos = |n: &str| order.iter().position(|x| x == n).unwrap_or_else(|| panic!("no DELETED event for {n}: {order:?}"));
    assert!(pos("fg-grandchild") < pos("fg-blocker"), "grandchild before its owner: {order:?}");
    assert!(pos("fg-blocker") < pos("fg-owner"), "dependent before its owner: {order:?}");
    assert!(pos("fg-nonblocking") < pos("fg-owner"), "{order:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scoped_owners() {
    let c = Cluster::start().await;
    let roles: Api<ClusterRole> = Api::all(c.client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(c.client.clone());
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let pp = PostParams::default();
    let role = roles.create(&pp, &obj(json!({"metadata": {"name": "gc-owner"}, "rules": []}))).await.unwrap();
    let binding: ClusterRoleBinding = obj(json!({
        "metadata": {"name": "gc-binding", "ownerReferences": [owner_ref(&role, false)]},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gc-owner"},
        "subjects": [{"kind": "User", "name": "someone", "apiGroup": "rbac.authorization.k8s.io"}]
    }));
    bindings.create(&pp, &binding).await.unwrap();
    // A namespaced dependent may have a cluster-scoped owner.
    cms.create(&pp, &cm("owned-by-clusterrole", vec![owner_ref(&role, false)])).await.unwrap();
    // A cluster-scoped dependent naming a namespaced owner is invalid; the
    // collector leaves it alone (upstream reports it and does not retry).
    let ns_owner = cms.create(&pp, &cm("namespaced-owner", vec![])).await.unwrap();
    let invalid: ClusterRole = obj(json!({"metadata": {"name": "invalid-ref", "ownerReferences": [owner_ref(&ns_owner, false)]}, "rules": []}));
    roles.create(&pp, &invalid).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    assert!(bindings.get_opt("gc-binding").await.unwrap().is_some());
    assert!(cms.get_opt("owned-by-clusterrole").await.unwrap().is_some());

    roles.delete("gc-owner", &DeleteParams::default()).await.unwrap();
    eventually("the cluster-scoped dependent is collected", WAIT, || gone(&bindings, "gc-binding")).await;
    eventually("the namespaced dependent of a cluster-scoped owner is collected", WAIT, || gone(&cms, "owned-by-clusterrole")).await;
    tokio::time::sleep(SETTLE).await;
    assert!(roles.get_opt("invalid-ref").await.unwrap().is_some(), "a cluster-scoped object with a namespaced owner must not be collected");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collects_what_was_left_while_it_was_not_running() {
    // Objects orphaned before the collector starts are found from its
    // initial lists, and the collector also runs on its own.
    let (server, client) = Cluster::bare().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let owner = cms.create(&pp, &cm("early-owner", vec![])).await.unwrap();
    cms.create(&pp, &cm("early-dependent", vec![owner_ref(&owner, false)])).await.unwrap();
    cms.delete("early-owner", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cms.get_opt("early-dependent").await.unwrap().is_some(), "nothing collects without a collector");

    let gc = tokio::spawn(tug_controllers::garbage_collector::run(server.client().await));
    eventually("a dependent orphaned before the collector started is collected", WAIT, || gone(&cms, "early-dependent")).await;
    gc.abort();
}
