//! The Endpoints and EndpointSlice controllers against the real `tug server`
//! binary (build it first: `cargo build -p tug`). The tests play kubelet:
//! they create pods bound to a Node (whose Lease they renew, so the node
//! lifecycle controller leaves it alone) and write pod IPs and readiness
//! through `pods/status`. Each test has its own server.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{Cluster, code, eventually, obj};
use tug_controllers::endpoints::{Config, LAST_CHANGE_TRIGGER_TIME};
use tug_controllers::endpointslice::{CONTROLLER_NAME, LABEL_MANAGED_BY, LABEL_SERVICE_NAME};

const WAIT: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(3);

async fn namespace(client: &Client, name: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(&PostParams::default(), &obj(json!({"metadata": {"name": name}}))).await.unwrap();
}

/// A Node in zone `zone` whose Lease is renewed until the returned task is
/// dropped (the node lifecycle controller would otherwise mark it Unknown
/// and its pods not ready after the startup grace period).
struct FakeNode(tokio::task::JoinHandle<()>);

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

async fn fake_node(client: &Client, name: &str, zone: &str) -> FakeNode {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.create(&PostParams::default(), &obj(json!({"metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}}))).await.unwrap();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({"metadata": {"name": name}, "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now()}});
    leases.create(&PostParams::default(), &obj(lease)).await.unwrap();
    let name = name.to_string();
    FakeNode(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let _ = leases.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"renewTime": now()}}))).await;
        }
    }))
}

/// A pod labelled `app` on `node` with these container ports.
fn pod(name: &str, app: &str, node: &str, ports: Value) -> Pod {
    obj(json!({"metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx:1", "ports": ports}]}}))
}

/// What a kubelet reports: running with `ip`, ready or not.
async fn set_status(api: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let flag = if ready { "True" } else { "False" };
    let t = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": [
        {"type": "Initialized", "status": "True", "lastTransitionTime": t},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": t},
        {"type": "Ready", "status": flag, "lastTransitionTime": t},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": t}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
}

/// An Endpoints as `ports → (ready IPs, not-ready IPs)`, ports as `name:port`.
type Summary = BTreeMap<Vec<String>, (Vec<String>, Vec<String>)>;

fn summary(ep: &Endpoints) -> Summary {
    ep.subsets
        .iter()
        .flatten()
        .map(|s| {
            let ports = s.ports.iter().flatten().map(|p| format!("{}:{}", p.name.clone().unwrap_or_default(), p.port)).collect();
            let ips = |v: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| v.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>();
            (ports, (ips(&s.addresses), ips(&s.not_ready_addresses)))
        })
        .collect()
}

fn expect(entries: &[(&[&str], &[&str], &[&str])]) -> Summary {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    entries.iter().map(|(p, r, n)| (v(p), (v(r), v(n)))).collect()
}

/// Waits for the Endpoints `name` to read `want`; returns it.
async fn endpoints_become(api: &Api<Endpoints>, name: &str, want: &Summary) -> Endpoints {
    let mut last = None;
    let r = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Some(ep)) = api.get_opt(name).await {
                if summary(&ep) == *want {
                    return ep;
                }
                last = Some(summary(&ep));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    r.unwrap_or_else(|_| panic!("endpoints {name} never became {want:?}; last {last:?}"))
}

async fn slices_of(api: &Api<EndpointSlice>, svc: &str) -> Vec<EndpointSlice> {
    api.list(&ListParams::default().labels(&format!("{LABEL_SERVICE_NAME}={svc}"))).await.unwrap().items
}

/// Every endpoint of the slices: pod name → (IPs, ready, serving,
/// terminating, ports `name:port`).
type SliceSummary = BTreeMap<String, (Vec<String>, bool, bool, bool, Vec<String>)>;

fn slice_summary(slices: &[EndpointSlice]) -> SliceSummary {
    let mut out = BTreeMap::new();
    for s in slices {
        let mut ports: Vec<String> = s.ports.iter().flatten().map(|p| format!("{}:{}", p.name.clone().unwrap_or_default(), p.port.unwrap_or(0))).collect();
        ports.sort();
        for e in &s.endpoints {
            let c = e.conditions.clone().unwrap_or_default();
            let pod = e.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
            let prev = out.insert(
                pod.clone(),
                (e.addresses.clone(), c.ready.unwrap_or(false), c.serving.unwrap_or(false), c.terminating.unwrap_or(false), ports.clone()),
            );
            assert!(prev.is_none(), "pod {pod} is listed twice: {slices:#?}");
        }
    }
    out
}

async fn slices_become(api: &Api<EndpointSlice>, svc: &str, want: &SliceSummary) -> Vec<EndpointSlice> {
    let mut last = None;
    let r = tokio::time::timeout(WAIT, async {
        loop {
            let slices = slices_of(api, svc).await;
            let s = slice_summary(&slices);
            if s == *want {
                return slices;
            }
            last = Some(s);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    r.unwrap_or_else(|_| panic!("slices of {svc} never became {want:#?}; last {last:#?}"))
}

fn ep(ip: &str, ready: bool, serving: bool, terminating: bool, ports: &[&str]) -> (Vec<String>, bool, bool, bool, Vec<String>) {
    (vec![ip.to_string()], ready, serving, terminating, ports.iter().map(|p| p.to_string()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_follow_pods_readiness_ports_and_deletion() {
    let c = Cluster::start().await;
    namespace(&c.client, "ep").await;
    let _node = fake_node(&c.client, "n1", "zone-a").await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "ep");
    let svcs: Api<Service> = Api::namespaced(c.client.clone(), "ep");
    let eps: Api<Endpoints> = Api::namespaced(c.client.clone(), "ep");
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "ep");
    let pp = PostParams::default();

    let http = json!([{"name": "http", "containerPort": 8080}]);
    pods.create(&pp, &pod("a", "web", "n1", http.clone())).await.unwrap();
    pods.create(&pp, &pod("b", "web", "n1", http.clone())).await.unwrap();
    // No container port named http: only behind the metrics port.
    pods.create(&pp, &pod("c", "web", "n1", json!([]))).await.unwrap();
    // Another app's pod, and one of ours without an IP yet.
    pods.create(&pp, &pod("other", "db", "n1", http.clone())).await.unwrap();
    pods.create(&pp, &pod("pending", "web", "n1", http.clone())).await.unwrap();
    set_status(&pods, "a", "10.42.0.1", true).await;
    set_status(&pods, "b", "10.42.0.2", false).await;
    set_status(&pods, "c", "10.42.0.3", true).await;
    set_status(&pods, "other", "10.42.0.4", true).await;

    let svc = svcs
        .create(&pp, &obj(json!({"metadata": {"name": "web", "labels": {"team": "a"}}, "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"}, {"name": "metrics", "port": 9090, "targetPort": 9090}]}})))
        .await
        .unwrap();

    // Endpoints: per port, the ready and not-ready addresses.
    let want = expect(&[
        (&["http:8080"], &["10.42.0.1"], &["10.42.0.2"]),
        (&["metrics:9090"], &["10.42.0.1", "10.42.0.3"], &["10.42.0.2"]),
    ]);
    let e = endpoints_become(&eps, "web", &want).await;
    assert_eq!(e.labels().get("team").map(String::as_str), Some("a"), "the Service's labels: {:?}", e.labels());
    assert!(!e.labels().contains_key("service.kubernetes.io/headless"));
    assert!(e.annotations().contains_key(LAST_CHANGE_TRIGGER_TIME), "{:?}", e.annotations());
    let addr = e.subsets.as_ref().unwrap().iter().flat_map(|s| s.addresses.iter().flatten()).find(|a| a.ip == "10.42.0.1").unwrap();
    assert_eq!(addr.node_name.as_deref(), Some("n1"));
    let r = addr.target_ref.as_ref().unwrap();
    let a = pods.get("a").await.unwrap();
    assert_eq!((r.kind.as_deref(), r.name.as_deref(), r.namespace.as_deref(), r.uid.as_deref()), (Some("Pod"), Some("a"), Some("ep"), a.uid().as_deref()));

    // EndpointSlices: one per port set (c lacks the named port).
    let both = ["http:8080", "metrics:9090"];
    let want_slices: SliceSummary = [
        ("a".to_string(), ep("10.42.0.1", true, true, false, &both)),
        ("b".to_string(), ep("10.42.0.2", false, false, false, &both)),
        ("c".to_string(), ep("10.42.0.3", true, true, false, &["metrics:9090"])),
    ]
    .into();
    let got = slices_become(&slices, "web", &want_slices).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    for s in &got {
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.metadata.generate_name.as_deref(), Some("web-"));
        assert!(s.name_any().starts_with("web-"), "{}", s.name_any());
        assert_eq!(s.labels().get(LABEL_MANAGED_BY).map(String::as_str), Some(CONTROLLER_NAME));
        assert_eq!(s.labels().get("team").map(String::as_str), Some("a"));
        let owner = s.owner_references().first().expect("an owner reference");
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str(), owner.controller), ("Service", "web", svc.uid().unwrap().as_str(), Some(true)));
        for e in &s.endpoints {
            assert_eq!(e.node_name.as_deref(), Some("n1"));
            assert_eq!(e.zone.as_deref(), Some("zone-a"), "the node's zone");
            assert_eq!(e.target_ref.as_ref().unwrap().kind.as_deref(), Some("Pod"));
        }
        assert!(s.annotations().contains_key(LAST_CHANGE_TRIGGER_TIME));
    }

    // Nothing changed: nothing is written (a Service update syncs both).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ep_rv = eps.get("web").await.unwrap().resource_version();
    let slice_rvs: BTreeSet<_> = slices_of(&slices, "web").await.iter().map(|s| s.resource_version()).collect();
    svcs.patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"touched": "yes"}}}))).await.unwrap();
    pods.patch("a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"touched": "yes"}}}))).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    assert_eq!(eps.get("web").await.unwrap().resource_version(), ep_rv, "no-op syncs write nothing");
    let after: BTreeSet<_> = slices_of(&slices, "web").await.iter().map(|s| s.resource_version()).collect();
    assert_eq!(after, slice_rvs, "no-op syncs write no slices");

    // Readiness flips: a is not ready any more, b is.
    set_status(&pods, "a", "10.42.0.1", false).await;
    set_status(&pods, "b", "10.42.0.2", true).await;
    let want = expect(&[
        (&["http:8080"], &["10.42.0.2"], &["10.42.0.1"]),
        (&["metrics:9090"], &["10.42.0.2", "10.42.0.3"], &["10.42.0.1"]),
    ]);
    endpoints_become(&eps, "web", &want).await;
    let want_slices: SliceSummary = [
        ("a".to_string(), ep("10.42.0.1", false, false, false, &both)),
        ("b".to_string(), ep("10.42.0.2", true, true, false, &both)),
        ("c".to_string(), ep("10.42.0.3", true, true, false, &["metrics:9090"])),
    ]
    .into();
    slices_become(&slices, "web", &want_slices).await;

    // A pod being deleted (bound, so it waits for its kubelet) leaves the
    // Endpoints at once; its slice endpoint stays, terminating, not ready
    // but still serving.
    pods.delete("b", &DeleteParams::default()).await.unwrap();
    assert!(pods.get("b").await.unwrap().metadata.deletion_timestamp.is_some());
    let want = expect(&[(&["http:8080"], &[], &["10.42.0.1"]), (&["metrics:9090"], &["10.42.0.3"], &["10.42.0.1"])]);
    endpoints_become(&eps, "web", &want).await;
    let want_slices: SliceSummary = [
        ("a".to_string(), ep("10.42.0.1", false, false, false, &both)),
        ("b".to_string(), ep("10.42.0.2", false, true, true, &both)),
        ("c".to_string(), ep("10.42.0.3", true, true, false, &["metrics:9090"])),
    ]
    .into();
    slices_become(&slices, "web", &want_slices).await;

    // Gone for good: out of the slices too; c's slice goes with c.
    pods.delete("b", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    pods.delete("c", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    let want = expect(&[(&["http:8080", "metrics:9090"], &[], &["10.42.0.1"])]);
    endpoints_become(&eps, "web", &want).await;
    let want_slices: SliceSummary = [("a".to_string(), ep("10.42.0.1", false, false, false, &both))].into();
    let got = slices_become(&slices, "web", &want_slices).await;
    assert_eq!(got.len(), 1, "the emptied slice is deleted: {got:#?}");

    // The pending pod gets its IP: in, not ready.
    set_status(&pods, "pending", "10.42.0.5", false).await;
    let want = expect(&[(&["http:8080", "metrics:9090"], &[], &["10.42.0.1", "10.42.0.5"])]);
    endpoints_become(&eps, "web", &want).await;

    // A pod that stops matching the selector leaves; a deleted Endpoints is recreated.
    pods.patch("pending", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": "moved"}}}))).await.unwrap();
    let want = expect(&[(&["http:8080", "metrics:9090"], &[], &["10.42.0.1"])]);
    let old = endpoints_become(&eps, "web", &want).await;
    eps.delete("web", &DeleteParams::default()).await.unwrap();
    let new = endpoints_become(&eps, "web", &want).await;
    assert_ne!(new.uid(), old.uid(), "recreated");

    // Deleting the Service deletes its Endpoints (this controller) and its
    // slices (the garbage collector, through the owner reference).
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("the service's endpoints and slices are deleted", WAIT, || async {
        let ep_gone = matches!(eps.get("web").await, Err(e) if code(&e) == Some(404));
        (ep_gone && slices_of(&slices, "web").await.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectorless_headless_and_publish_not_ready_services() {
    let c = Cluster::start().await;
    namespace(&c.client, "svc").await;
    let _node = fake_node(&c.client, "n1", "zone-b").await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "svc");
    let svcs: Api<Service> = Api::namespaced(c.client.clone(), "svc");
    let eps: Api<Endpoints> = Api::namespaced(c.client.clone(), "svc");
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "svc");
    let pp = PostParams::default();

    // A Service without a selector, with hand-made Endpoints.
    svcs.create(&pp, &obj(json!({"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}}))).await.unwrap();
    let manual = eps
        .create(&pp, &obj(json!({"metadata": {"name": "manual"}, "subsets": [{"addresses": [{"ip": "192.168.1.1"}], "ports": [{"port": 80}]}]})))
        .await
        .unwrap();

    let mut p: Pod = pod("ready", "db", "n1", json!([]));
    p.spec.as_mut().unwrap().hostname = Some("db-0".into());
    p.spec.as_mut().unwrap().subdomain = Some("db".into());
    pods.create(&pp, &p).await.unwrap();
    pods.create(&pp, &pod("unready", "db", "n1", json!([]))).await.unwrap();
    pods.create(&pp, &pod("leaving", "db", "n1", json!([]))).await.unwrap();
    pods.create(&pp, &pod("done", "db", "n1", json!([]))).await.unwrap();
    set_status(&pods, "ready", "10.42.1.1", true).await;
    set_status(&pods, "unready", "10.42.1.2", false).await;
    set_status(&pods, "leaving", "10.42.1.3", true).await;
    set_status(&pods, "done", "10.42.1.4", true).await;
    pods.patch_status("done", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Succeeded"}}))).await.unwrap();
    pods.delete("leaving", &DeleteParams::default()).await.unwrap();

    // Headless without ports: addresses without ports, the headless label,
    // and the hostname of the pod whose subdomain names the Service.
    svcs.create(&pp, &obj(json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "selector": {"app": "db"}}}))).await.unwrap();
    let e = endpoints_become(&eps, "db", &expect(&[(&[], &["10.42.1.1"], &["10.42.1.2"])])).await;
    assert_eq!(e.labels().get("service.kubernetes.io/headless").map(String::as_str), Some(""));
    let addr = e.subsets.as_ref().unwrap()[0].addresses.as_ref().unwrap()[0].clone();
    assert_eq!(addr.hostname.as_deref(), Some("db-0"));
    let got = slices_become(
        &slices,
        "db",
        &[
            ("ready".to_string(), ep("10.42.1.1", true, true, false, &[])),
            ("unready".to_string(), ep("10.42.1.2", false, false, false, &[])),
            ("leaving".to_string(), ep("10.42.1.3", false, true, true, &[])),
        ]
        .into(),
    )
    .await;
    assert!(got.iter().all(|s| s.labels().get("service.kubernetes.io/headless").map(String::as_str) == Some("")));
    let hostnames: Vec<_> = got.iter().flat_map(|s| s.endpoints.iter()).filter_map(|e| e.hostname.clone()).collect();
    assert_eq!(hostnames, ["db-0"]);

    // publishNotReadyAddresses: every pod with an IP is a ready address,
    // even one being deleted; a finished pod still is not.
    svcs.create(&pp, &obj(json!({"metadata": {"name": "peers"}, "spec": {"publishNotReadyAddresses": true, "selector": {"app": "db"},
        "ports": [{"name": "gossip", "port": 7000}]}})))
        .await
        .unwrap();
    endpoints_become(&eps, "peers", &expect(&[(&["gossip:7000"], &["10.42.1.1", "10.42.1.2", "10.42.1.3"], &[])])).await;
    slices_become(
        &slices,
        "peers",
        &[
            ("ready".to_string(), ep("10.42.1.1", true, true, false, &["gossip:7000"])),
            ("unready".to_string(), ep("10.42.1.2", true, false, false, &["gossip:7000"])),
            ("leaving".to_string(), ep("10.42.1.3", true, true, true, &["gossip:7000"])),
        ]
        .into(),
    )
    .await;

    // A Service whose pods have no IPs yet keeps one empty placeholder slice.
    svcs.create(&pp, &obj(json!({"metadata": {"name": "nobody"}, "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]}}))).await.unwrap();
    let placeholder = eventually("a placeholder slice", WAIT, || async {
        let s = slices_of(&slices, "nobody").await;
        (s.len() == 1).then(|| s.into_iter().next().unwrap())
    })
    .await;
    assert!(placeholder.endpoints.is_empty());
    assert!(placeholder.ports.as_ref().is_none_or(Vec::is_empty));
    let e = eventually("empty endpoints", WAIT, || async { eps.get_opt("nobody").await.unwrap() }).await;
    assert!(e.subsets.as_ref().is_none_or(Vec::is_empty), "{e:?}");

    // The selector-less Service was left alone all along, even once synced again.
    svcs.patch("manual", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}}))).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    let now = eps.get("manual").await.unwrap();
    assert_eq!(now.resource_version(), manual.resource_version(), "hand-made endpoints are not rewritten: {now:?}");
    assert!(slices_of(&slices, "manual").await.is_empty(), "no slices for a Service without a selector");
    // The placeholder is kept (relabelled with its Service), not deleted and recreated.
    svcs.patch("nobody", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"tier": "x"}}}))).await.unwrap();
    let s = eventually("the placeholder follows the service's labels", WAIT, || async {
        let s = slices_of(&slices, "nobody").await;
        s.iter().all(|s| s.labels().get("tier").map(String::as_str) == Some("x")).then_some(s)
    })
    .await;
    assert_eq!(s.iter().map(|s| s.uid()).collect::<Vec<_>>(), [placeholder.uid()]);

    // Deleting a selector-less Service deletes its Endpoints too (upstream).
    svcs.delete("manual", &DeleteParams::default()).await.unwrap();
    eventually("the manual endpoints are deleted", WAIT, || async { matches!(eps.get("manual").await, Err(e) if code(&e) == Some(404)).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_hold_at_most_max_endpoints_each() {
    let (server, client) = support::Cluster::bare().await;
    let config = Config { max_endpoints_per_slice: 3, ..Config::default() };
    let ctl = tokio::spawn(tug_controllers::endpoints::run_with(server.client().await, config));
    namespace(&client, "many").await;
    let _node = fake_node(&client, "n1", "zone-c").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "many");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "many");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "many");
    let pp = PostParams::default();
    let check = |slices: &[EndpointSlice], n: usize| {
        assert!(slices.iter().all(|s| s.endpoints.len() <= 3), "at most 3 per slice: {slices:#?}");
        assert_eq!(slices.len(), n.div_ceil(3), "as few slices as fit: {slices:#?}");
    };
    let want = |names: &[usize]| -> SliceSummary {
        names.iter().map(|i| (format!("p{i}"), ep(&format!("10.42.2.{i}"), true, true, false, &[":80"]))).collect()
    };
    for i in 0..7 {
        pods.create(&pp, &pod(&format!("p{i}"), "web", "n1", json!([]))).await.unwrap();
        set_status(&pods, &format!("p{i}"), &format!("10.42.2.{i}"), true).await;
    }
    // The Service comes last: its first sync sees all seven.
    svcs.create(&pp, &obj(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))).await.unwrap();
    let got = slices_become(&slices, "web", &want(&[0, 1, 2, 3, 4, 5, 6])).await;
    check(&got, 7);

    // Two leave, two come: the freed places are reused, no slice overflows.
    for i in [0, 1] {
        pods.delete(&format!("p{i}"), &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    }
    for i in [7, 8] {
        pods.create(&pp, &pod(&format!("p{i}"), "web", "n1", json!([]))).await.unwrap();
        set_status(&pods, &format!("p{i}"), &format!("10.42.2.{i}"), true).await;
    }
    let got = slices_become(&slices, "web", &want(&[2, 3, 4, 5, 6, 7, 8])).await;
    check(&got, 7);
    tokio::time::sleep(SETTLE).await;
    let got = slices_of(&slices, "web").await;
    assert_eq!(slice_summary(&got), want(&[2, 3, 4, 5, 6, 7, 8]), "and it stays so");
    check(&got, 7);
    ctl.abort();
}
