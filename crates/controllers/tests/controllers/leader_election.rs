//! Leader election of the controller manager against the real `tug server`
//! binary (build it first: `cargo build -p tug`): of several controller
//! managers, only the holder of `kube-system/kube-controller-manager` runs
//! controllers, and another takes over when it dies.

use crate::support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PostParams};
use serde_json::json;
use support::workloads::patch_retrying;
use support::{Cluster, eventually, obj};
use tug_controllers::leader::{LeaderElectionConfig, LeaderElector};

const WAIT: Duration = Duration::from_secs(30);

/// Upstream's timings scaled down so that a takeover takes seconds.
fn fast(identity: &str) -> LeaderElectionConfig {
    let mut le = tug_controllers::leader_election(identity);
    le.lease_duration = Duration::from_secs(4);
    le.renew_deadline = Duration::from_secs(3);
    le.retry_period = Duration::from_millis(500);
    le
}

/// A controller manager in this process; aborted (a crash: the lease is
/// not released) when dropped.
struct Manager {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Manager {
    fn start(client: Client, identity: &str) -> Manager {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(tug_controllers::run_all_elected(client, Default::default(), fast(identity), stopped));
        Manager { task, stop: Some(stop) }
    }

    /// A clean shutdown (which gives the lease up).
    async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        match tokio::time::timeout(Duration::from_secs(10), &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("the controller manager did not stop cleanly: {other:?}"),
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    leases.get_opt(tug_controllers::LEASE_NAME).await.unwrap().and_then(|l| l.spec.and_then(|s| s.holder_identity))
}

async fn pod_count(pods: &Api<Pod>) -> usize {
    pods.list(&ListParams::default()).await.unwrap().items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).count()
}

/// Watches the pod count for `d`, failing if it ever exceeds `max`.
async fn never_more_than(pods: &Api<Pod>, max: usize, d: Duration) {
    let deadline = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < deadline {
        let n = pod_count(pods).await;
        assert!(n <= max, "{n} pods: more than one controller manager acted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_runs_controllers() {
    let (server, client) = Cluster::bare().await;
    let pp = PostParams::default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // Someone else holds the lease (and keeps renewing it).
    let mut squatter = LeaderElector::new(client.clone(), fast("squatter"));
    squatter.acquire().await;
    let squatting = tokio::spawn(async move {
        squatter.renew_until_lost().await;
        panic!("the squatter lost its lease");
    });
    let b = Manager::start(server.client().await, "manager-b");
    rs_api
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}})),
        )
        .await
        .unwrap();
    never_more_than(&pods, 0, Duration::from_secs(3)).await;
    assert_eq!(holder(&client).await.as_deref(), Some("squatter"), "a candidate must not run controllers without the lease");

    // The holder dies without releasing: B takes over once the lease expires.
    squatting.abort();
    eventually("manager-b to take the lease", WAIT, || async { (holder(&client).await.as_deref() == Some("manager-b")).then_some(()) }).await;
    eventually("manager-b's ReplicaSet controller to create 2 pods", WAIT, || async { (pod_count(&pods).await == 2).then_some(()) }).await;

    // A second manager waits while B renews.
    let a = Manager::start(server.client().await, "manager-a");
    never_more_than(&pods, 2, Duration::from_secs(3)).await;
    assert_eq!(holder(&client).await.as_deref(), Some("manager-b"));

    // B crashes: A takes over and acts.
    drop(b);
    eventually("manager-a to take the lease", WAIT, || async { (holder(&client).await.as_deref() == Some("manager-a")).then_some(()) }).await;
    patch_retrying(&rs_api, "web", Patch::Merge(json!({"spec": {"replicas": 3}}))).await;
    eventually("manager-a to scale the ReplicaSet up", WAIT, || async { (pod_count(&pods).await == 3).then_some(()) }).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let spec = leases.get(tug_controllers::LEASE_NAME).await.unwrap().spec.unwrap();
    assert_eq!(spec.lease_transitions, Some(2), "squatter → manager-b → manager-a");
    assert_eq!(spec.lease_duration_seconds, Some(4));

    // A clean stop hands the lease back.
    a.stop().await;
    assert_eq!(holder(&client).await, None);
}
