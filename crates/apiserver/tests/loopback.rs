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

async fn start(dir: &std::path::Path) -> tug_apiserver::ApiServer {
    let store = tug_store::open("", dir).await.expect("store");
    let sans = tug_pki::ServingSans::for_host("10.43.0.1".parse().unwrap(), "cluster.local", &[]);
    let pki = tug_pki::ClusterPki::load_or_create(&dir.join("tls"), &sans).expect("pki");
    let config = tug_apiserver::Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        service_cidr: "10.43.0.0/16".into(),
        cluster_cidr: "10.42.0.0/16".into(),
        cluster_domain: "cluster.local".into(),
        advertise_address: "127.0.0.1:6443".into(),
        node_token: None,
    };
    tug_apiserver::ApiServer::start(config, store, &pki).await.expect("server")
}

fn admin() -> PeerIdentity {
    PeerIdentity { user: tug_pki::ADMIN_USER.into(), groups: vec![tug_pki::ADMIN_GROUP.into()] }
}

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
    let mut second = pod.clone();
    second.metadata.name = Some("q".into());
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match pods.create(&PostParams::default(), &second).await {
                Err(kube::Error::Api(s)) if s.code == 403 => return s,
                // The cache may not have seen the deletion yet.
                Ok(_) => panic!("created a pod in a terminating namespace"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("refused within 10 s");
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
