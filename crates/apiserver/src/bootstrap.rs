//! The objects every cluster has from its first start: the four system
//! namespaces, the built-in priority classes, and the `kubernetes` Service
//! with its Endpoints and EndpointSlice. Created through the same REST path
//! as any client's objects (admission, validation, allocation).

use std::collections::HashMap;

use serde_json::{json, Value};
use tug_api::resources::{self, ResourceType};

use crate::request::ResourceRequest;
use crate::rest::Ctx;

pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The field manager of the server's own writes.
const MANAGER: &str = "tug-bootstrap";

/// Creates what is missing; `advertise_address` (`host:port`) is where the
/// `kubernetes` Service's endpoints point.
pub async fn ensure_builtin_objects(ctx: &Ctx, advertise_address: &str) -> anyhow::Result<()> {
    let q = HashMap::new();
    let namespaces = resources::find("", "v1", "namespaces").expect("namespaces are served");
    for ns in SYSTEM_NAMESPACES {
        let rr = ResourceRequest { rt: namespaces, namespace: None, name: None, subresource: None };
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match ctx.create(&rr, obj, &q, "tug-bootstrap").await {
            Ok(_) => tracing::info!(namespace = ns, "created system namespace"),
            Err(e) if e.code == 409 => {}
            Err(e) => anyhow::bail!("creating namespace {ns}: {e}"),
        }
    }
    // Upstream's built-in priority classes.
    let classes = resources::find("scheduling.k8s.io", "v1", "priorityclasses").expect("priorityclasses are served");
    for (name, value, description) in [
        ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
        ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
    ] {
        let rr = ResourceRequest { rt: classes, namespace: None, name: None, subresource: None };
        let obj = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": value, "description": description});
        match ctx.create(&rr, obj, &q, "tug-bootstrap").await {
            Ok(_) => tracing::info!(class = name, "created system priority class"),
            Err(e) if e.code == 409 => {}
            Err(e) => anyhow::bail!("creating priority class {name}: {e}"),
        }
    }
    let (host, port) = advertise_address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_start_matches('[').trim_end_matches(']'), p.parse::<u16>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("the advertise address {advertise_address:?} is not host:port"))?;
    let services = resources::find("", "v1", "services").expect("services are served");
    let rr = ResourceRequest { rt: services, namespace: Some("default".into()), name: None, subresource: None };
    // Upstream's `CreateOrUpdateMasterServiceIfNeeded`: the ports follow the
    // server's secure port.
    let ports = json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]);
    match ctx.get(&rr, "kubernetes").await {
        Ok(current) => {
            if current.body.pointer("/spec/ports") != Some(&ports) {
                let mut svc = current.body;
                svc["spec"]["ports"] = ports;
                write_ignoring_conflicts(ctx.update(&rr, "kubernetes", svc, &q, MANAGER).await, "updating the kubernetes service ports")?;
            }
        }
        Err(e) if e.code == 404 => {
            let svc = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": ctx.alloc.first_ip().to_string(), "ports": ports}
            });
            if write_ignoring_conflicts(ctx.create(&rr, svc, &q, MANAGER).await, "creating the kubernetes service")? {
                tracing::info!("created the kubernetes service");
            }
        }
        Err(e) => anyhow::bail!("reading the kubernetes service: {e}"),
    }
    ensure_kubernetes_endpoints(ctx, host, port).await
}

/// Upstream's `EndpointsAdapter.Sync` for the selectorless `kubernetes`
/// Service: an Endpoints (labelled `endpointslice.kubernetes.io/skip-mirror`
/// so the mirroring controller leaves it alone) and an EndpointSlice
/// (labelled only `kubernetes.io/service-name`, so the EndpointSlice
/// controller leaves it alone) listing this server's address and secure
/// port `https`. Written when missing or different.
async fn ensure_kubernetes_endpoints(ctx: &Ctx, ip: &str, port: u16) -> anyhow::Result<()> {
    let ports = json!([{"name": "https", "port": port, "protocol": "TCP"}]);
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": ports}]
    });
    let rt = resources::find("", "v1", "endpoints").expect("endpoints are served");
    ensure_object(ctx, rt, endpoints, &["subsets"]).await?;
    let address_type = if ip.parse::<std::net::Ipv6Addr>().is_ok() { "IPv6" } else { "IPv4" };
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": address_type,
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": ports
    });
    let rt = resources::find("discovery.k8s.io", "v1", "endpointslices").expect("endpointslices are served");
    ensure_object(ctx, rt, slice, &["addressType", "endpoints", "ports"]).await
}

/// Creates `desired` in `default`, or sets the stored object's labels and
/// `fields` to `desired`'s where they differ. A stored EndpointSlice of
/// another address type (immutable upstream) is replaced.
async fn ensure_object(ctx: &Ctx, rt: &'static ResourceType, desired: Value, fields: &[&str]) -> anyhow::Result<()> {
    let q = HashMap::new();
    let rr = ResourceRequest { rt, namespace: Some("default".into()), name: None, subresource: None };
    let name = tug_api::meta::name(&desired).to_string();
    let what = format!("{} default/{name}", rt.kind);
    let current = match ctx.get(&rr, &name).await {
        Ok(r) => Some(r.body),
        Err(e) if e.code == 404 => None,
        Err(e) => anyhow::bail!("reading {what}: {e}"),
    };
    let current = match current {
        Some(c) if c.get("addressType").is_some() && c.get("addressType") != desired.get("addressType") => {
            write_ignoring_conflicts(ctx.delete(&rr, &name, &json!({}), &q).await, &format!("deleting {what}"))?;
            None
        }
        c => c,
    };
    match current {
        None => {
            if write_ignoring_conflicts(ctx.create(&rr, desired, &q, MANAGER).await, &format!("creating {what}"))? {
                tracing::info!(object = %what, "created");
            }
        }
        Some(current) => {
            let mut updated = current.clone();
            updated["metadata"]["labels"] = desired["metadata"]["labels"].clone();
            for f in fields {
                updated[*f] = desired[*f].clone();
            }
            if updated != current {
                tracing::warn!(object = %what, "resetting to this server's address and port");
                write_ignoring_conflicts(ctx.update(&rr, &name, updated, &q, MANAGER).await, &format!("updating {what}"))?;
            }
        }
    }
    Ok(())
}

/// `Ok(true)` for a write, `Ok(false)` for a conflict (another writer got
/// there first, as when two servers start together), an error otherwise.
fn write_ignoring_conflicts<T>(r: Result<T, tug_api::ApiError>, what: &str) -> anyhow::Result<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.code == 409 => Ok(false),
        Err(e) => anyhow::bail!("{what}: {e}"),
    }
}
