//! The scheduler against a real `tug server`: Nodes are plain API objects,
//! the scheduler runs in-process and talks to the server only through
//! kube-rs. Needs `cargo build -p tug` first.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;
use support::{condition, pod, Cluster};
use tug_scheduler::SchedulerConfig;

const UPSTREAM_NO_VICTIMS: &str = "preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_by_resources_and_reports_insufficient_cpu() {
    let c = Cluster::start().await;
    for n in ["node-a", "node-b", "node-c"] {
        c.create_node(n, "2", "4Gi", json!({}), json!([])).await;
    }
    let sched = c.start_scheduler(SchedulerConfig::default());
    for i in 0..6 {
        c.create_pod(pod(&format!("p{i}"), "1")).await;
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        let node = c.wait_bound(&format!("p{i}")).await;
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(per_node, [("node-a".to_string(), 2), ("node-b".to_string(), 2), ("node-c".to_string(), 2)].into());

    // The seventh does not fit anywhere.
    c.create_pod(pod("p6", "1")).await;
    let msg = c.wait_event("p6", "FailedScheduling").await;
    assert_eq!(msg, format!("0/3 nodes are available: 3 Insufficient cpu. {UPSTREAM_NO_VICTIMS}"));
    let p6 = c.wait_for("p6's PodScheduled condition", Duration::from_secs(10), || async {
        c.get_pod("p6").await.filter(|p| condition(p, "PodScheduled").is_some())
    })
    .await;
    assert_eq!(c.node_of("p6").await, None);
    let (status, reason, message) = condition(&p6, "PodScheduled").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Unschedulable"));
    assert_eq!(message, msg);
    let ev = &c.events_for("p6", "FailedScheduling").await[0];
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.involved_object.kind.as_deref(), Some("Pod"));
    assert_eq!(ev.involved_object.uid, p6.metadata.uid);

    // Bound pods got a Scheduled event and a PodScheduled=True condition.
    let node0 = c.node_of("p0").await.unwrap();
    assert_eq!(c.wait_event("p0", "Scheduled").await, format!("Successfully assigned default/p0 to {node0}"));
    let p0 = c.get_pod("p0").await.unwrap();
    assert_eq!(condition(&p0, "PodScheduled").map(|c| c.0), Some("True".into()));
    assert_eq!(sched.scheduled(), 6);

    // Deleting a bound pod frees a slot: the pending pod moves and binds.
    c.pods().delete("p0", &DeleteParams::default()).await.expect("delete p0");
    assert_eq!(c.wait_bound("p6").await, node0);
    // The binding flipped PodScheduled to True (upstream clears reason and message).
    let p6 = c.get_pod("p6").await.unwrap();
    assert_eq!(condition(&p6, "PodScheduled"), Some(("True".into(), String::new(), String::new())));
    sched.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selector_and_taints() {
    let c = Cluster::start().await;
    c.create_node("ssd", "4", "8Gi", json!({"disk": "ssd"}), json!([])).await;
    c.create_node("gpu", "4", "8Gi", json!({"disk": "ssd", "gpu": "true"}), json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])).await;
    c.create_node("plain", "4", "8Gi", json!({}), json!([])).await;
    let _sched = c.start_scheduler(SchedulerConfig::default());

    // nodeSelector disk=ssd: the tainted gpu node is excluded, so always "ssd".
    for i in 0..4 {
        let mut p = pod(&format!("ssd-{i}"), "100m");
        p["spec"]["nodeSelector"] = json!({"disk": "ssd"});
        c.create_pod(p).await;
    }
    for i in 0..4 {
        assert_eq!(c.wait_bound(&format!("ssd-{i}")).await, "ssd");
    }

    // Tolerating the taint and selecting gpu=true: the gpu node.
    let mut p = pod("trainer", "100m");
    p["spec"]["nodeSelector"] = json!({"gpu": "true"});
    p["spec"]["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
    c.create_pod(p).await;
    assert_eq!(c.wait_bound("trainer").await, "gpu");

    // Selecting gpu=true without the toleration: nowhere.
    let mut p = pod("intruder", "100m");
    p["spec"]["nodeSelector"] = json!({"gpu": "true"});
    c.create_pod(p).await;
    let msg = c.wait_event("intruder", "FailedScheduling").await;
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    assert_eq!(c.node_of("intruder").await, None);

    // Required node affinity (In over two values) picks among matching nodes only.
    let mut p = pod("affine", "100m");
    p["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["plain", "gpu"]}]}
    ]}}});
    c.create_pod(p).await;
    assert_eq!(c.wait_bound("affine").await, "plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_affinity_spreads_pods() {
    let c = Cluster::start().await;
    for n in ["n1", "n2", "n3"] {
        c.create_node(n, "8", "16Gi", json!({}), json!([])).await;
    }
    let _sched = c.start_scheduler(SchedulerConfig::default());
    let web = |name: &str| {
        let mut p = pod(name, "100m");
        p["metadata"]["labels"] = json!({"app": "web"});
        p["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
        ]}});
        p
    };
    for i in 0..3 {
        c.create_pod(web(&format!("web-{i}"))).await;
    }
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(c.wait_bound(&format!("web-{i}")).await);
    }
    nodes.sort();
    assert_eq!(nodes, vec!["n1", "n2", "n3"], "one web pod per node");

    c.create_pod(web("web-3")).await;
    let msg = c.wait_event("web-3", "FailedScheduling").await;
    assert_eq!(msg, format!("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. {UPSTREAM_NO_VICTIMS}"));

    // A plain pod matching the label but without anti-affinity of its own is
    // still kept away by the existing pods' anti-affinity.
    let mut p = pod("web-plain", "100m");
    p["metadata"]["labels"] = json!({"app": "web"});
    c.create_pod(p).await;
    let msg = c.wait_event("web-plain", "FailedScheduling").await;
    assert!(msg.starts_with("0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules."), "{msg}");

    // Topology spread (DoNotSchedule, maxSkew 1 over hostname) keeps "db" pods even.
    for i in 0..6 {
        let mut p = pod(&format!("db-{i}"), "100m");
        p["metadata"]["labels"] = json!({"app": "db"});
        p["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "db"}}}]);
        c.create_pod(p).await;
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        *per_node.entry(c.wait_bound(&format!("db-{i}")).await).or_default() += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{per_node:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pod_is_scheduled_when_a_node_is_added() {
    let c = Cluster::start().await;
    c.create_node("small", "1", "2Gi", json!({}), json!([])).await;
    let _sched = c.start_scheduler(SchedulerConfig::default());
    c.create_pod(pod("big", "2")).await;
    let msg = c.wait_event("big", "FailedScheduling").await;
    assert!(msg.starts_with("0/1 nodes are available: 1 Insufficient cpu."), "{msg}");
    // Let it settle in the unschedulable pods (past its backoff), so only the
    // node event can bring it back before the 5-minute flush.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.node_of("big").await, None);
    c.create_node("large", "4", "8Gi", json!({}), json!([])).await;
    let node = c
        .wait_for("big to be bound after the node was added", Duration::from_secs(10), || async { c.node_of("big").await })
        .await;
    assert_eq!(node, "large");

    // A cordoned node is skipped; uncordoning it (a node update) moves the pod.
    let mut p = pod("cordon-test", "3");
    p["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "spare"});
    c.create_node("spare", "4", "8Gi", json!({}), json!([])).await;
    c.nodes()
        .patch("spare", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(json!({"spec": {"unschedulable": true}})))
        .await
        .expect("cordon");
    // Node and pod watches are separate streams: let the cordon arrive first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.create_pod(p).await;
    let msg = c.wait_event("cordon-test", "FailedScheduling").await;
    assert!(msg.starts_with("0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector."), "{msg}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.nodes()
        .patch("spare", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(json!({"spec": {"unschedulable": false}})))
        .await
        .expect("uncordon");
    assert_eq!(c.wait_bound("cordon-test").await, "spare");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_pod_preempts_lower_priority_pod() {
    let c = Cluster::start().await;
    c.create_node("only", "2", "4Gi", json!({}), json!([])).await;
    let sched = c.start_scheduler(SchedulerConfig::default());
    let mut low = pod("low", "1500m");
    low["spec"]["priority"] = json!(10);
    c.create_pod(low).await;
    assert_eq!(c.wait_bound("low").await, "only");
    let low_uid = c.get_pod("low").await.unwrap().metadata.uid;

    // Same priority cannot preempt.
    let mut peer = pod("peer", "1500m");
    peer["spec"]["priority"] = json!(10);
    c.create_pod(peer).await;
    let msg = c.wait_event("peer", "FailedScheduling").await;
    assert_eq!(msg, "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.");

    let mut high = pod("high", "1");
    high["spec"]["priority"] = json!(1000);
    c.create_pod(high).await;
    // The victim is deleted (grace 0 and no kubelet: gone at once) ...
    c.wait_for("low to be preempted", Duration::from_secs(30), || async {
        match c.get_pod("low").await {
            None => Some(()),
            Some(p) if p.metadata.uid != low_uid => Some(()),
            _ => None,
        }
    })
    .await;
    // ... and the preemptor lands on the freed node.
    assert_eq!(c.wait_bound("high").await, "only");
    let preempted = c.wait_event("low", "Preempted").await;
    assert!(preempted.starts_with("Preempted by pod ") && preempted.ends_with(" on node only"), "{preempted}");
    assert!(sched.metrics.preemption_attempts.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(c.node_of("peer").await, None, "the equal-priority pod still does not fit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemptor_waits_for_graceful_victims_on_its_nominated_node() {
    let c = Cluster::start().await;
    c.create_node("only", "2", "4Gi", json!({}), json!([])).await;
    let _sched = c.start_scheduler(SchedulerConfig::default());
    let mut low = pod("low", "2");
    low["spec"]["priority"] = json!(0);
    low["spec"]["terminationGracePeriodSeconds"] = json!(30);
    c.create_pod(low).await;
    c.wait_bound("low").await;

    let mut high = pod("high", "1");
    high["spec"]["priority"] = json!(100);
    c.create_pod(high).await;
    // Without a kubelet the victim stays terminating; the preemptor is nominated.
    let high_pod = c
        .wait_for("high to be nominated", Duration::from_secs(30), || async {
            c.get_pod("high").await.filter(|p| p.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()) == Some("only"))
        })
        .await;
    assert_eq!(high_pod.spec.as_ref().unwrap().node_name, None);
    let low_pod = c.get_pod("low").await.expect("victim still there");
    assert!(low_pod.metadata.deletion_timestamp.is_some(), "victim is being deleted");
    let (status, reason, _) = condition(&low_pod, "DisruptionTarget").expect("DisruptionTarget condition on the victim");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "PreemptionByScheduler"));
    // The strategic merge patch added the condition next to PodScheduled (merge key "type").
    assert_eq!(condition(&low_pod, "PodScheduled").map(|c| c.0), Some("True".into()));
    // The preemptor's PodScheduled=False condition carries upstream's message.
    let (_, reason, message) = condition(&high_pod, "PodScheduled").expect("PodScheduled on the preemptor");
    assert_eq!(reason, "Unschedulable");
    assert_eq!(message, "0/1 nodes are available: 1 Insufficient cpu.");

    // The kubelet would now finish the pod: force it away.
    c.pods().delete("low", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.expect("force delete");
    assert_eq!(c.wait_bound("high").await, "only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_pods_for_this_scheduler_name_are_scheduled() {
    let c = Cluster::start().await;
    c.create_node("n", "4", "8Gi", json!({}), json!([])).await;
    let _sched = c.start_scheduler(SchedulerConfig::default());
    let mut other = pod("other", "100m");
    other["spec"]["schedulerName"] = json!("someone-else");
    c.create_pod(other).await;
    c.create_pod(pod("mine", "100m")).await;
    c.wait_bound("mine").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.node_of("other").await, None);
    assert!(c.events_for("other", "FailedScheduling").await.is_empty());

    // A second scheduler with that name picks it up.
    let config = SchedulerConfig { scheduler_name: "someone-else".into(), ..Default::default() };
    let _second = c.start_scheduler(config);
    assert_eq!(c.wait_bound("other").await, "n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_lets_one_scheduler_bind() {
    let c = Cluster::start().await;
    for n in ["n1", "n2"] {
        c.create_node(n, "8", "16Gi", json!({}), json!([])).await;
    }
    let fast = |id: &str| {
        let mut cfg = SchedulerConfig::with_leader_election(id);
        let le = cfg.leader_election.as_mut().unwrap();
        le.lease_duration = Duration::from_secs(4);
        le.renew_deadline = Duration::from_secs(3);
        le.retry_period = Duration::from_millis(500);
        cfg
    };
    let a = c.start_scheduler(fast("sched-a"));
    // Let a win the lease first.
    c.wait_for("sched-a to lead", Duration::from_secs(20), || async { a.is_leader().then_some(()) }).await;
    let b = c.start_scheduler(fast("sched-b"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!b.is_leader(), "the second scheduler must not lead while the first renews");

    for i in 0..10 {
        c.create_pod(pod(&format!("p{i}"), "100m")).await;
    }
    for i in 0..10 {
        c.wait_bound(&format!("p{i}")).await;
    }
    assert_eq!((a.scheduled(), b.scheduled()), (10, 0), "only the leader binds");
    let lease: k8s_openapi::api::coordination::v1::Lease =
        Api::namespaced(c.client.clone(), "kube-system").get("tug-scheduler").await.expect("the lease exists");
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("sched-a"));
    assert_eq!(spec.lease_duration_seconds, Some(4));

    // The leader crashes (no release): b takes over after the lease expires.
    a.kill();
    c.wait_for("sched-b to take over", Duration::from_secs(20), || async { b.is_leader().then_some(()) }).await;
    for i in 10..15 {
        c.create_pod(pod(&format!("p{i}"), "100m")).await;
    }
    for i in 10..15 {
        c.wait_bound(&format!("p{i}")).await;
    }
    assert_eq!(b.scheduled(), 5);
    let lease: k8s_openapi::api::coordination::v1::Lease = Api::namespaced(c.client.clone(), "kube-system").get("tug-scheduler").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("sched-b"));
    assert_eq!(spec.lease_transitions, Some(1));

    // A graceful stop releases the lease.
    b.stop().await.expect("clean stop");
    let lease: k8s_openapi::api::coordination::v1::Lease = Api::namespaced(c.client.clone(), "kube-system").get("tug-scheduler").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_that_loses_its_lease_stops_binding() {
    let c = Cluster::start().await;
    c.create_node("n1", "8", "16Gi", json!({}), json!([])).await;
    let mut cfg = SchedulerConfig::with_leader_election("victim");
    {
        let le = cfg.leader_election.as_mut().unwrap();
        le.lease_duration = Duration::from_secs(4);
        le.renew_deadline = Duration::from_secs(2);
        le.retry_period = Duration::from_millis(300);
    }
    let a = c.start_scheduler(cfg);
    c.wait_for("victim to lead", Duration::from_secs(20), || async { a.is_leader().then_some(()) }).await;
    // Someone else grabs the lease (CAS through the API, as another candidate would).
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(c.client.clone(), "kube-system");
    let mut taken = false;
    for _ in 0..20 {
        let mut lease = leases.get("tug-scheduler").await.unwrap();
        let spec = lease.spec.as_mut().unwrap();
        spec.holder_identity = Some("usurper".into());
        spec.lease_duration_seconds = Some(3600);
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now()));
        // A conflict means the leader renewed in between: read again.
        if leases.replace("tug-scheduler", &Default::default(), &lease).await.is_ok() {
            taken = true;
            break;
        }
    }
    assert!(taken, "could not take the lease");
    c.wait_for("victim to step down", Duration::from_secs(10), || async { (!a.is_leader()).then_some(()) }).await;
    c.create_pod(pod("orphan", "100m")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.node_of("orphan").await, None, "a scheduler without the lease must not bind");
    assert_eq!(a.scheduled(), 0);
    // Listing works and nothing was bound behind our back.
    let pods: Vec<Pod> = c.pods().list(&ListParams::default()).await.unwrap().items;
    assert!(pods.iter().all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_wait_for_bound_claims_and_follow_local_volume_affinity() {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let c = Cluster::start().await;
    c.create_node("node-a", "2", "4Gi", json!({"zone": "a"}), json!([])).await;
    c.create_node("node-b", "2", "4Gi", json!({"zone": "b"}), json!([])).await;
    let _sched = c.start_scheduler(SchedulerConfig::default());
    let mut p = pod("db", "100m");
    p["spec"]["volumes"] = json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]);
    c.create_pod(p).await;

    // The claim does not exist.
    let msg = c.wait_event("db", "FailedScheduling").await;
    assert!(msg.starts_with("0/2 nodes are available: persistentvolumeclaim \"data\" not found."), "{msg}");

    // It exists but nothing binds it (the server's binder finds no volume).
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    let claim = json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "local", "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    pvcs.create(&Default::default(), &serde_json::from_value(claim).unwrap()).await.expect("create claim");
    c.wait_for("the unbound-claim message", Duration::from_secs(30), || async {
        c.events_for("db", "FailedScheduling")
            .await
            .into_iter()
            .filter_map(|e| e.message)
            .find(|m| m.starts_with("0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims."))
    })
    .await;
    assert_eq!(c.node_of("db").await, None);

    // A local volume on zone b: bound to the claim, it takes the pod there.
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    let pv = json!({
        "metadata": {"name": "local-b"},
        "spec": {
            "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "local",
            "local": {"path": "/mnt/disks/b"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}},
        },
    });
    pvs.create(&Default::default(), &serde_json::from_value(pv).unwrap()).await.expect("create volume");
    assert_eq!(c.wait_bound("db").await, "node-b");

    // A second pod on the same claim goes to node-b too, even when asked
    // to avoid it: node-a is a volume node affinity conflict.
    let mut p = pod("db-2", "100m");
    p["spec"]["volumes"] = json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]);
    p["spec"]["nodeSelector"] = json!({"zone": "a"});
    c.create_pod(p).await;
    let msg = c.wait_event("db-2", "FailedScheduling").await;
    assert!(
        msg.starts_with("0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had volume node affinity conflict."),
        "{msg}"
    );
}
