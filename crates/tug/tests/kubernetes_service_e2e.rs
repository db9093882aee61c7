//! End to end: the `default/kubernetes` Service's Endpoints and
//! EndpointSlice, which the API server keeps itself (upstream's
//! `EndpointsAdapter`). The real `tug server` with its controllers, read
//! and written through kube-rs.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use tug_testkit::{Backend, TugServer};

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// The `default/kubernetes` object of kind `K`.
async fn get_kubernetes<K>(client: &Client, log: &dyn Fn() -> String) -> K
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), "default")
        .get_opt("kubernetes")
        .await
        .unwrap_or_else(|e| panic!("reading {} default/kubernetes: {e}", K::kind(&())))
        .unwrap_or_else(|| panic!("no {} default/kubernetes; server log:\n{}", K::kind(&()), log()))
}

/// Checks the three objects point at `port` on 127.0.0.1 (the address a
/// server bound to 127.0.0.1 advertises); returns the slice.
async fn check_points_at(client: &Client, port: u16, log: &dyn Fn() -> String) -> EndpointSlice {
    let svc: Service = get_kubernetes(client, log).await;
    let svc_ports = svc.spec.and_then(|s| s.ports).unwrap_or_default();
    assert_eq!(svc_ports.len(), 1, "{svc_ports:?}");
    assert_eq!(svc_ports[0].port, 443);
    assert_eq!(svc_ports[0].target_port, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port.into())));

    let ep: Endpoints = get_kubernetes(client, log).await;
    assert_eq!(ep.metadata.labels, labels(&[("endpointslice.kubernetes.io/skip-mirror", "true")]));
    let subsets = ep.subsets.unwrap_or_default();
    assert_eq!(subsets.len(), 1, "{subsets:?}");
    let ips: Vec<&str> = subsets[0].addresses.iter().flatten().map(|a| a.ip.as_str()).collect();
    assert_eq!(ips, ["127.0.0.1"]);
    assert!(subsets[0].not_ready_addresses.as_ref().map(Vec::is_empty).unwrap_or(true));
    let ports = subsets[0].ports.clone().unwrap_or_default();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!((ports[0].name.as_deref(), ports[0].port, ports[0].protocol.as_deref()), (Some("https"), i32::from(port), Some("TCP")));

    let slice: EndpointSlice = get_kubernetes(client, log).await;
    assert_eq!(slice.metadata.labels, labels(&[("kubernetes.io/service-name", "kubernetes")]));
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(slice.endpoints.len(), 1, "{:?}", slice.endpoints);
    assert_eq!(slice.endpoints[0].addresses, ["127.0.0.1"]);
    assert_eq!(slice.endpoints[0].conditions.as_ref().and_then(|c| c.ready), Some(true));
    let ports = slice.ports.clone().unwrap_or_default();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!((ports[0].name.as_deref(), ports[0].port, ports[0].protocol.as_deref()), (Some("https"), Some(i32::from(port)), Some("TCP")));
    slice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_keeps_the_kubernetes_endpoints() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = tokio::task::spawn_blocking(|| TugServer::start(env!("CARGO_BIN_EXE_tug").as_ref(), Backend::Sqlite))
        .await
        .expect("starting tug server");
    let client = s.client().await;
    let slice = check_points_at(&client, s.port, &|| s.log()).await;
    assert_eq!(slice.metadata.generation, Some(1), "an EndpointSlice starts at generation 1");

    // The Endpoints and EndpointSlice controllers (running in the server)
    // leave a selectorless Service's objects alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = check_points_at(&client, s.port, &|| s.log()).await;
    assert_eq!(again.metadata.resource_version, slice.metadata.resource_version, "nobody rewrote the slice");

    // Generation: labels count for an EndpointSlice, annotations do not.
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "default");
    let pp = PatchParams::default();
    let relabeled = slices
        .patch("kubernetes", &pp, &Patch::Merge(json!({"metadata": {"labels": {"extra": "x"}}})))
        .await
        .expect("labelling the slice");
    assert_eq!(relabeled.metadata.generation, Some(2));
    let annotated = slices
        .patch("kubernetes", &pp, &Patch::Merge(json!({"metadata": {"annotations": {"note": "x"}}})))
        .await
        .expect("annotating the slice");
    assert_eq!(annotated.metadata.generation, Some(2));

    // A restart (on another port) resets all three to the new port, and
    // the slice's labels to upstream's.
    let mut s = s;
    let s = tokio::task::spawn_blocking(move || {
        s.kill_and_restart();
        s
    })
    .await
    .expect("restarting tug server");
    let client = s.client().await;
    let slice = check_points_at(&client, s.port, &|| s.log()).await;
    assert_eq!(slice.metadata.generation, Some(3), "the reset is one more change");
}
