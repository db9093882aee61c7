//! The objects every cluster has from its first start: the four system
//! namespaces and the `kubernetes` Service. Created through the same REST
//! path as any client's objects (admission, validation, allocation).

use std::collections::HashMap;

use serde_json::json;
use tug_api::resources;

use crate::request::ResourceRequest;
use crate::rest::Ctx;

pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

pub async fn ensure_builtin_objects(ctx: &Ctx) -> anyhow::Result<()> {
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
    let services = resources::find("", "v1", "services").expect("services are served");
    let rr = ResourceRequest { rt: services, namespace: Some("default".into()), name: None, subresource: None };
    if ctx.get(&rr, "kubernetes").await.is_ok() {
        return Ok(());
    }
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": ctx.alloc.first_ip().to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}
    });
    match ctx.create(&rr, svc, &q, "tug-bootstrap").await {
        Ok(_) => tracing::info!("created the kubernetes service"),
        Err(e) if e.code == 409 => {}
        Err(e) => anyhow::bail!("creating the kubernetes service: {e}"),
    }
    Ok(())
}
