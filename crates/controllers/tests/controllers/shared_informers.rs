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
