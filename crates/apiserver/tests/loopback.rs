//! The in-process transport: a kube-rs client over [`Loopback`] reaches the
//! same request path as a client over HTTPS (identity, admission, the store,
//! the watch cache) and watches stream through it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use tug_apiserver::loopback::Loopback;
use tug_pki::PeerIdentity;

mod support;

use support::{admin, start, start_on};

#[tokio::test]
async fn a_kube_client_over_loopback_writes_reads_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = kube::Client::new(Loopback::new(Arc::clone(&server.server), admin()), "default");

    // Discovery-free typed calls: create, then read back what the server made of it.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "lb"}})).unwrap()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "lb");
    let mut watch = pods.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    let created = pods.create(&PostParams { field_manager: Some("loopback-test".into()), ..Default::default() }, &pod).await.unwrap();
    // Admission and defaulting ran: uid, resourceVersion, defaults, ownership.
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.resource_version.is_some());
    assert_eq!(created.spec.as_ref().unwrap().restart_policy.as_deref(), Some("Always"));
    let managers: Vec<_> = created.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    assert_eq!(managers, ["loopback-test"]);

    // The watch streams through the transport.
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("a watch event").unwrap().unwrap();
    match event {
        WatchEvent::Added(p) => assert_eq!(p.metadata.uid, created.metadata.uid),
        other => panic!("expected ADDED, got {other:?}"),
    }

    // Errors come back as the Status they are: a second create conflicts.
    match pods.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "AlreadyExists");
        }
        other => panic!("expected 409 AlreadyExists, got {other:?}"),
    }

    // The namespace lifecycle admission reads the namespace through the
    // cache: creating in a missing namespace is 404, in a terminating one 403.
    let missing: Api<Pod> = Api::namespaced(client.clone(), "nope");
    match missing.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404, "{s:?}"),
        other => panic!("expected 404, got {other:?}"),
    }
    namespaces.delete("lb", &Default::default()).await.unwrap();
    // Namespace lifecycle reads the watch cache (upstream: an informer), so
    // a create may pass until the cache has seen the deletion.
    let now = server.server.ctx.store.current_revision().await.unwrap();
    assert!(server.server.ctx.cache.wait_for(now, Duration::from_secs(10)).await);
    let mut second = pod.clone();
    second.metadata.name = Some("q".into());
    let refused = match pods.create(&PostParams::default(), &second).await {
        Err(kube::Error::Api(s)) => s,
        other => panic!("a create in a terminating namespace gave {other:?}"),
    };
    assert_eq!(refused.code, 403, "{refused:?}");
    assert!(refused.message.contains("being terminated"), "{}", refused.message);
}

/// The identity given to the transport is the one requests carry: with no
/// certificate to read, the server must not fall back to anonymous.
#[tokio::test]
async fn requests_carry_the_transports_identity() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let user = PeerIdentity { user: "system:kube-scheduler".into(), groups: vec![] };
    let client = kube::Client::new(Loopback::new(Arc::clone(&server.server), user), "default");
    // An anonymous request would get 401 before reaching the resource.
    let namespaces: Api<Namespace> = Api::all(client);
    let list = namespaces.list(&Default::default()).await.expect("authenticated");
    assert!(list.items.iter().any(|n| n.metadata.name.as_deref() == Some("default")));
}

/// A PATCH first tries the watch cache's copy of the object, which may lag
/// the store. A patch that changes nothing on a stale copy must not be
/// answered as a no-op: it is redone on the store's version. Writes go
/// straight to the store here, so the cache is often behind when the patch
/// arrives; every round must end with the patched value stored.
#[tokio::test]
async fn a_patch_on_a_stale_cached_copy_is_redone_on_the_store() {
    use kube::api::{Patch, PatchParams};
    use k8s_openapi::api::core::v1::ConfigMap;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = kube::Client::new(Loopback::new(Arc::clone(&server.server), admin()), "default");
    let maps: Api<ConfigMap> = Api::namespaced(client, "default");
    maps.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "cm"}, "data": {"v": "0"}})).unwrap()).await.unwrap();
    let store = Arc::clone(&server.server.ctx.store);
    let key = "/registry/configmaps/default/cm";
    let mut stale_rounds = 0;
    for round in 1..=200 {
        // Someone else sets v=other, straight in the store...
        let kv = store.get(key).await.unwrap().unwrap();
        let mut obj: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        obj["data"]["v"] = json!("other");
        store.update(key, serde_json::to_vec(&obj).unwrap(), kv.mod_revision).await.unwrap();
        if server.server.ctx.cache.revision() < kv.mod_revision + 1 {
            stale_rounds += 1;
        }
        // ...and the patch sets v back to what the cache may still show.
        let want = if round % 2 == 0 { "0".to_string() } else { format!("r{round}") };
        let patched = maps.patch("cm", &PatchParams::default(), &Patch::Merge(json!({"data": {"v": want}}))).await.unwrap();
        assert_eq!(patched.data.as_ref().unwrap()["v"], want, "round {round}");
        let stored: serde_json::Value = serde_json::from_slice(&store.get(key).await.unwrap().unwrap().value).unwrap();
        assert_eq!(stored["data"]["v"], want, "round {round}: the reply said patched, the store disagrees");
        // Next round's cached copy holds this value: the patch to "other"'s
        // successor is then a no-op on the cache.
        let _ = maps.patch("cm", &PatchParams::default(), &Patch::Merge(json!({"data": {"v": "0"}}))).await.unwrap();
    }
    eprintln!("{stale_rounds} of 200 rounds patched while the cache was behind");
}

/// A store whose watch, and so the watch cache following it, can be held
/// back: writes land, the cache does not see them until the gate opens.
struct GatedStore {
    inner: Arc<dyn tug_store::Store>,
    open: tokio::sync::watch::Sender<bool>,
}

#[async_trait::async_trait]
impl tug_store::Store for GatedStore {
    async fn get(&self, key: &str) -> tug_store::Result<Option<tug_store::KeyValue>> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str, opts: tug_store::ListOptions) -> tug_store::Result<tug_store::ListResult> {
        self.inner.list(prefix, opts).await
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> tug_store::Result<i64> {
        self.inner.create(key, value).await
    }
    async fn update(&self, key: &str, value: Vec<u8>, expected: i64) -> tug_store::Result<i64> {
        self.inner.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Option<i64>) -> tug_store::Result<(i64, tug_store::KeyValue)> {
        self.inner.delete(key, expected).await
    }
    async fn watch(&self, prefix: &str, after: i64) -> tug_store::Result<tug_store::EventStream> {
        let stream = self.inner.watch(prefix, after).await?;
        let open = self.open.subscribe();
        Ok(Box::pin(stream.then(move |ev| {
            let mut open = open.clone();
            async move {
                let _ = open.wait_for(|o| *o).await;
                ev
            }
        })))
    }
    async fn current_revision(&self) -> tug_store::Result<i64> {
        self.inner.current_revision().await
    }
    async fn compact(&self, revision: i64) -> tug_store::Result<()> {
        self.inner.compact(revision).await
    }
    async fn compacted_revision(&self) -> tug_store::Result<i64> {
        self.inner.compacted_revision().await
    }
}

/// A server on a [`GatedStore`], the gate open.
async fn start_gated(dir: &std::path::Path) -> (tug_apiserver::ApiServer, Arc<GatedStore>) {
    let inner = tug_store::open("", dir).await.expect("store");
    let (open, _) = tokio::sync::watch::channel(true);
    let gated = Arc::new(GatedStore { inner, open });
    (start_on(dir, gated.clone()).await, gated)
}

/// A PUT, like a PATCH, first updates the watch cache's copy. With the
/// cache held back while the store is written behind its back: a PUT naming
/// the resourceVersion the client read must fail with 409 even when it
/// changes nothing on the cached copy, and a PUT naming none must land what
/// it sends, even when that equals the cached copy.
#[tokio::test]
async fn a_put_on_a_stale_cached_copy_is_redone_on_the_store() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let dir = tempfile::tempdir().unwrap();
    let (server, gated) = start_gated(dir.path()).await;
    let inner = Arc::clone(&gated.inner);
    let client = kube::Client::new(Loopback::new(Arc::clone(&server.server), admin()), "default");
    let maps: Api<ConfigMap> = Api::namespaced(client, "default");
    maps.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "cm"}, "data": {"v": "0"}})).unwrap()).await.unwrap();
    let key = "/registry/configmaps/default/cm";
    let cache = &server.server.ctx.cache;
    for round in 1..=20 {
        let read = maps.get("cm").await.unwrap();
        assert!(cache.wait_for(inner.current_revision().await.unwrap(), Duration::from_secs(10)).await);
        // Someone else changes it, and the cache does not see it.
        gated.open.send_replace(false);
        let kv = inner.get(key).await.unwrap().unwrap();
        let mut obj: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        obj["data"]["v"] = json!(format!("other{round}"));
        inner.update(key, serde_json::to_vec(&obj).unwrap(), kv.mod_revision).await.unwrap();
        assert!(cache.revision() < kv.mod_revision + 1, "round {round}: the cache is behind");
        // The client's read is out of date: unchanged or not, 409.
        match maps.replace("cm", &PostParams::default(), &read).await {
            Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"), "round {round}"),
            other => panic!("round {round}: a PUT with an outdated resourceVersion gave {other:?}"),
        }
        // Without a resourceVersion it lands, though it equals the cached copy.
        let mut unconditional = read.clone();
        unconditional.metadata.resource_version = None;
        let put = maps.replace("cm", &PostParams::default(), &unconditional).await.unwrap();
        assert_eq!(put.data.as_ref().unwrap()["v"], read.data.as_ref().unwrap()["v"], "round {round}");
        let stored: serde_json::Value = serde_json::from_slice(&inner.get(key).await.unwrap().unwrap().value).unwrap();
        assert_eq!(stored["data"]["v"], json!(read.data.as_ref().unwrap()["v"]), "round {round}: the reply said replaced, the store disagrees");
        gated.open.send_replace(true);
    }
}

/// A binding first tries the watch cache's copy too. Here the pod was
/// deleted and made again behind the cache's back: the cached copy has the
/// old uid, so the binding's uid precondition fails on it, and must then be
/// checked against the store, where it holds.
#[tokio::test]
async fn a_binding_refused_by_a_stale_cached_copy_is_redone_on_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (server, gated) = start_gated(dir.path()).await;
    let inner = Arc::clone(&gated.inner);
    let client = kube::Client::new(Loopback::new(Arc::clone(&server.server), admin()), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let key = "/registry/pods/default/p";
    assert!(server.server.ctx.cache.wait_for(inner.current_revision().await.unwrap(), Duration::from_secs(10)).await);

    // Deleted and made again with a new uid, unseen by the cache.
    gated.open.send_replace(false);
    let kv = inner.get(key).await.unwrap().unwrap();
    let mut again: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
    let first_uid = again["metadata"]["uid"].clone();
    inner.delete(key, Some(kv.mod_revision)).await.unwrap();
    again["metadata"]["uid"] = json!("second-uid");
    inner.create(key, serde_json::to_vec(&again).unwrap()).await.unwrap();
    assert_eq!(server.server.ctx.cache.get(key).await.unwrap().object["metadata"]["uid"], first_uid);

    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p", "uid": "second-uid"}, "target": {"kind": "Node", "name": "n1"}});
    pods.create_subresource::<serde_json::Value, serde_json::Value>("binding", "p", &PostParams::default(), &binding)
        .await
        .expect("the binding's uid matches the stored pod");
    let stored: serde_json::Value = serde_json::from_slice(&inner.get(key).await.unwrap().unwrap().value).unwrap();
    assert_eq!(stored["spec"]["nodeName"], json!("n1"));
    assert_eq!(stored["metadata"]["uid"], json!("second-uid"));
    gated.open.send_replace(true);
}

/// Unknown fields a patch brings in are refused (Strict) or dropped (the
/// default, Warn), whether the patch is a merge patch, a strategic one, or
/// a strategic one with directives; fields already stored stay.
#[tokio::test]
async fn unknown_fields_in_a_patch_are_refused_or_dropped() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Patch, PatchParams, ValidationDirective};
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = kube::Client::new(Loopback::new(Arc::clone(&server.server), admin()), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let strict = PatchParams::default().validation(ValidationDirective::Strict);
    let patches = [
        Patch::Merge(json!({"metadata": {"labels": {"b": "2"}}, "spec": {"bogus": 1}})),
        Patch::Strategic(json!({"spec": {"containers": [{"name": "c", "bogus": 1}]}})),
        Patch::Strategic(json!({"spec": {"$setElementOrder/containers": [{"name": "c"}], "containers": [{"name": "c", "bogus": 1}]}})),
    ];
    for p in &patches {
        match pods.patch("p", &strict, p).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 400, "{e:?}");
                assert!(e.message.contains("unknown field"), "{}", e.message);
            }
            other => panic!("{p:?} under Strict gave {other:?}"),
        }
    }
    for p in &patches {
        let patched: serde_json::Value = serde_json::to_value(pods.patch("p", &PatchParams::default(), p).await.unwrap()).unwrap();
        assert!(patched["spec"].get("bogus").is_none(), "{p:?}: {patched}");
        assert!(patched["spec"]["containers"][0].get("bogus").is_none(), "{p:?}: {patched}");
        assert_eq!(patched["spec"]["containers"][0]["image"], json!("busybox"));
    }
    // Known fields only: the patch lands.
    let patched = pods.patch("p", &strict, &Patch::Merge(json!({"metadata": {"labels": {"c": "3"}}}))).await.unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["c"], "3");
    let maps: Api<ConfigMap> = Api::namespaced(client, "default");
    maps.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "cm"}, "data": {"v": "0"}})).unwrap()).await.unwrap();
    match maps.patch("cm", &strict, &Patch::Merge(json!({"bogus": {"x": 1}}))).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 400, "{e:?}"),
        other => panic!("a top-level unknown field gave {other:?}"),
    }
}
