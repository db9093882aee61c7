//! Upstream API behaviour the scheduler relies on: Priority admission
//! resolving `priorityClassName`, and `pods/binding` preconditions.

mod support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use serde_json::{json, Value};
use support::{pod, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_class_name_sets_spec_priority() {
    let c = Cluster::start().await;
    let pcs: kube::Api<k8s_openapi::api::scheduling::v1::PriorityClass> = kube::Api::all(c.client.clone());
    let pc = serde_json::from_value(json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000})).unwrap();
    pcs.create(&PostParams::default(), &pc).await.expect("create PriorityClass");
    let mut p = pod("classy", "100m");
    p["spec"]["priorityClassName"] = json!("high");
    let created = c.create_pod(p).await;
    assert_eq!(created.spec.unwrap().priority, Some(1000), "spec.priority from the PriorityClass");

    let mut p = pod("unknown-class", "100m");
    p["spec"]["priorityClassName"] = json!("nope");
    let p: Pod = serde_json::from_value(p).unwrap();
    match c.pods().create(&PostParams::default(), &p).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("expected 403 Forbidden for an unknown PriorityClass, got {other:?}"),
    }
    // Upstream creates the two system classes at startup.
    for name in ["system-cluster-critical", "system-node-critical"] {
        assert!(pcs.get_opt(name).await.unwrap().is_some(), "{name} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_checks_preconditions_and_name() {
    let c = Cluster::start().await;
    c.create_pod(pod("b1", "100m")).await;
    let wrong_uid = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b1", "uid": "not-the-pods-uid"}, "target": {"kind": "Node", "name": "n1"}});
    match c.pods().create_subresource::<_, Value>("binding", "b1", &PostParams::default(), &wrong_uid).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("expected 409 Conflict for a UID precondition mismatch, got {other:?}"),
    }
    assert_eq!(c.node_of("b1").await, None);

    let other_name = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "other"}, "target": {"kind": "Node", "name": "n1"}});
    match c.pods().create_subresource::<_, Value>("binding", "b1", &PostParams::default(), &other_name).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 400, "{s:?}"),
        other => panic!("expected 400 BadRequest (name in URL does not match name in Binding object), got {other:?}"),
    }
    assert_eq!(c.node_of("b1").await, None);
}
