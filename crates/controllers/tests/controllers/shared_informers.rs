//! The shared informer factory against the real `tug server` binary (build
//! it first: `cargo build -p tug`): one store per type for every handler,
//! late handlers replayed, dropped handlers gone.

use crate::support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::{Cluster, eventually, obj};
use tug_controllers::informer::{Change, SharedInformers};

const WAIT: Duration = Duration::from_secs(20);

type Seen = Arc<Mutex<BTreeSet<String>>>;

fn recorder(seen: &Seen) -> impl FnMut(Change<ConfigMap>) + Send + 'static {
    let seen = seen.clone();
    move |change| {
        if let Change::Added(cm) = change {
            seen.lock().unwrap().insert(cm.metadata.name.clone().unwrap_or_default());
        }
    }
}

async fn has(seen: &Seen, name: &str) -> bool {
    seen.lock().unwrap().contains(name)
}

#[tokio::test]
async fn handlers_share_one_store_late_ones_get_a_replay_and_dropped_ones_stop() {
    let (server, client) = Cluster::bare().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    cms.create(&pp, &obj(json!({"metadata": {"name": "before"}}))).await.unwrap();

    let informers = SharedInformers::new(client.clone());
    let first = informers.get::<ConfigMap>();
    let early: Seen = Default::default();
    let early_task = tokio::spawn(first.clone().run("configmaps", recorder(&early)));
    eventually("the early handler sees the existing object", WAIT, || async { has(&early, "before").await.then_some(()) }).await;

    // A second `get` is the same informer: its store already holds the object.
    let second = informers.get::<ConfigMap>();
    assert!(
        second.store().state().iter().any(|c| c.metadata.name.as_deref() == Some("before")),
        "a second get shares the first one's (already synced) store"
    );

    // A handler that joins after the list is replayed what the store holds.
    let late: Seen = Default::default();
    let late_task = tokio::spawn(second.run("configmaps", recorder(&late)));
    eventually("the late handler is replayed the existing object", WAIT, || async { has(&late, "before").await.then_some(()) }).await;

    cms.create(&pp, &obj(json!({"metadata": {"name": "after"}}))).await.unwrap();
    eventually("both handlers see a new object", WAIT, || async {
        (has(&early, "after").await && has(&late, "after").await).then_some(())
    })
    .await;

    // Dropping a handler's future unregisters it; the other keeps going.
    late_task.abort();
    let _ = late_task.await;
    cms.create(&pp, &obj(json!({"metadata": {"name": "last"}}))).await.unwrap();
    eventually("the remaining handler sees the next object", WAIT, || async { has(&early, "last").await.then_some(()) }).await;
    assert!(!has(&late, "last").await, "a dropped handler must not be called any more");
    early_task.abort();
    drop(server);
}

/// Each change carries the object the store holds at that moment (the same
/// `Arc`, not a copy of it), the previous version with an update, and the
/// watch's final state with a delete, which the store no longer holds.
#[tokio::test]
async fn changes_carry_the_stores_own_objects() {
    let (server, client) = Cluster::bare().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    // Listed, not watched: the first list's objects are the store's too.
    cms.create(&pp, &obj(json!({"metadata": {"name": "x"}, "data": {"v": "0"}}))).await.unwrap();
    let informers = SharedInformers::new(client.clone());
    let informer = informers.get::<ConfigMap>();
    let store = informer.store();
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let log = seen.clone();
    let task = tokio::spawn(informer.run("configmaps", move |change| {
        let data = |cm: &ConfigMap| cm.data.as_ref().and_then(|d| d.get("v").cloned()).unwrap_or_default();
        let name = |cm: &ConfigMap| cm.metadata.name.clone().unwrap_or_default();
        if !matches!(&change, Change::Added(cm) | Change::Updated(_, cm) | Change::Deleted(cm) if name(cm) == "x") {
            return;
        }
        let stored = tug_controllers::informer::get(&store, "default/x");
        let line = match change {
            Change::Added(new) => format!("added {} shared={}", data(&new), stored.is_some_and(|s| Arc::ptr_eq(&s, &new))),
            Change::Updated(old, new) => {
                format!("updated {}->{} shared={}", data(&old), data(&new), stored.is_some_and(|s| Arc::ptr_eq(&s, &new)))
            }
            Change::Deleted(last) => format!("deleted {} stored={}", data(&last), stored.is_some()),
        };
        log.lock().unwrap().push(line);
    }));
    eventually("the listed object", WAIT, || async { (seen.lock().unwrap().len() == 1).then_some(()) }).await;
    cms.delete("x", &Default::default()).await.unwrap();
    eventually("its delete", WAIT, || async { (seen.lock().unwrap().len() == 2).then_some(()) }).await;
    cms.create(&pp, &obj(json!({"metadata": {"name": "x"}, "data": {"v": "1"}}))).await.unwrap();
    eventually("the add", WAIT, || async { (seen.lock().unwrap().len() == 3).then_some(()) }).await;
    let mut cm = cms.get("x").await.unwrap();
    cm.data = Some([("v".to_string(), "2".to_string())].into());
    cms.replace("x", &pp, &cm).await.unwrap();
    eventually("the update", WAIT, || async { (seen.lock().unwrap().len() == 4).then_some(()) }).await;
    cms.delete("x", &Default::default()).await.unwrap();
    eventually("the delete", WAIT, || async { (seen.lock().unwrap().len() == 5).then_some(()) }).await;
    assert_eq!(
        *seen.lock().unwrap(),
        ["added 0 shared=true", "deleted 0 stored=false", "added 1 shared=true", "updated 1->2 shared=true", "deleted 2 stored=false"]
    );
    task.abort();
    drop(server);
}

/// The namespace index follows the store: adds, updates (the new version)
/// and deletes, each namespace apart.
#[tokio::test]
async fn the_namespace_index_follows_the_store() {
    use k8s_openapi::api::core::v1::Namespace;
    let (server, client) = Cluster::bare().await;
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone()).create(&pp, &obj(json!({"metadata": {"name": "other"}}))).await.unwrap();
    let (here, there): (Api<ConfigMap>, Api<ConfigMap>) =
        (Api::namespaced(client.clone(), "default"), Api::namespaced(client.clone(), "other"));
    here.create(&pp, &obj(json!({"metadata": {"name": "a"}, "data": {"v": "1"}}))).await.unwrap();
    let informers = SharedInformers::new(client.clone());
    let informer = informers.get::<ConfigMap>();
    let index = informer.indexed();
    let task = tokio::spawn(informer.run("configmaps", |_| {}));
    let names = |ns: &str| {
        let mut v: Vec<String> = index
            .in_namespace(ns)
            .iter()
            .filter(|c| c.metadata.name.as_deref() != Some("kube-root-ca.crt"))
            .map(|c| format!("{}={}", c.metadata.name.clone().unwrap_or_default(), c.data.as_ref().and_then(|d| d.get("v").cloned()).unwrap_or_default()))
            .collect();
        v.sort();
        v
    };
    eventually("the listed object", WAIT, || async { (names("default") == ["a=1"]).then_some(()) }).await;
    there.create(&pp, &obj(json!({"metadata": {"name": "b"}, "data": {"v": "1"}}))).await.unwrap();
    here.create(&pp, &obj(json!({"metadata": {"name": "c"}, "data": {"v": "1"}}))).await.unwrap();
    let mut a = here.get("a").await.unwrap();
    a.data = Some([("v".to_string(), "2".to_string())].into());
    here.replace("a", &pp, &a).await.unwrap();
    eventually("adds and the update", WAIT, || async { (names("default") == ["a=2", "c=1"] && names("other") == ["b=1"]).then_some(()) }).await;
    there.delete("b", &Default::default()).await.unwrap();
    here.delete("c", &Default::default()).await.unwrap();
    eventually("the deletes", WAIT, || async { (names("default") == ["a=2"] && names("other").is_empty()).then_some(()) }).await;
    assert!(index.in_namespace("nowhere").is_empty());
    // The store agrees with the index.
    assert_eq!(index.state().iter().filter(|c| c.metadata.name.as_deref() == Some("a")).count(), 1);
    task.abort();
    drop(server);
}
