//! The ServiceAccounts controller against the real `tug server` binary
//! (build it first: `cargo build -p tug`). Each test has its own server.

use crate::support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use support::{Cluster, code, eventually, obj};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_active_namespace_gets_a_default_service_account() {
    let c = Cluster::start().await;
    // The namespaces the server made at bootstrap.
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let sas: Api<ServiceAccount> = Api::namespaced(c.client.clone(), ns);
        eventually(&format!("a default serviceaccount in {ns}"), WAIT, || async { sas.get_opt("default").await.unwrap() }).await;
    }

    // A new namespace gets one; only that one.
    let nss: Api<Namespace> = Api::all(c.client.clone());
    nss.create(&PostParams::default(), &obj(json!({"metadata": {"name": "team-a"}}))).await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "team-a");
    let first = eventually("a default serviceaccount in team-a", WAIT, || async { sas.get_opt("default").await.unwrap() }).await;
    let names: Vec<String> = sas.list(&Default::default()).await.unwrap().items.iter().map(|s| s.name_any()).collect();
    assert_eq!(names, ["default"]);

    // Deleted, it comes back (a new object).
    sas.delete("default", &DeleteParams::default()).await.unwrap();
    let second = eventually("the default serviceaccount is recreated", WAIT, || async {
        sas.get_opt("default").await.unwrap().filter(|s| s.uid() != first.uid())
    })
    .await;
    assert_ne!(second.uid(), first.uid());

    // Other accounts are the users' business: one deleted stays deleted.
    sas.create(&PostParams::default(), &obj(json!({"metadata": {"name": "builder"}}))).await.unwrap();
    sas.delete("builder", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(matches!(sas.get("builder").await, Err(e) if code(&e) == Some(404)), "only the default account is ensured");

    // A namespace being deleted gets nothing recreated: its deletion (the
    // namespace controller empties it) goes through.
    nss.delete("team-a", &DeleteParams::default()).await.unwrap();
    eventually("team-a is deleted", Duration::from_secs(60), || async { matches!(nss.get("team-a").await, Err(e) if code(&e) == Some(404)).then_some(()) }).await;
}
