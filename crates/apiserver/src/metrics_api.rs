//! `metrics.k8s.io/v1beta1`: what `kubectl top` and autoscalers read.
//!
//! Upstream serves this group from metrics-server, an aggregated API that
//! scrapes every kubelet. Tugboat has no aggregation layer, so the API
//! server answers it itself, the way metrics-server does: it asks the
//! kubelets of the nodes concerned for `/stats/summary` (in parallel, each
//! bounded by a timeout, a node that does not answer is left out) and turns
//! the node's and the pods' CPU rate and memory working set into NodeMetrics
//! and PodMetrics. Hollow nodes have no kubelet server and are skipped.
//! Nothing is stored: every read is fresh.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};
use tug_api::selectors::{FieldSelector, LabelSelector};
use tug_api::ApiError;

use crate::http::{error_response, json_response};
use crate::kubelet::Kubelets;
use crate::rest::Ctx;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
const API_VERSION: &str = "metrics.k8s.io/v1beta1";
/// Label of hollow (simulated) nodes, which serve no kubelet API.
const HOLLOW_LABEL: &str = "tugboat.io/hollow";

/// The group's resources: (plural, singular, kind, namespaced).
const RESOURCES: [(&str, &str, &str, bool); 2] = [("nodes", "", "NodeMetrics", false), ("pods", "", "PodMetrics", true)];

/// When this server last read each node's summary: the interval a CPU rate
/// covers (the kubelet computes it between consecutive reads).
#[derive(Default)]
pub struct ReadTimes(Mutex<HashMap<String, Instant>>);

impl ReadTimes {
    /// Records a read of `node` now and returns the window since the last one.
    fn window(&self, node: &str) -> Duration {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let w = m.get(node).map(|t| now - *t).filter(|w| *w < Duration::from_secs(300));
        m.insert(node.to_string(), now);
        // The kubelet's own first-read gap when there was no earlier read.
        w.unwrap_or(Duration::from_millis(250))
    }
}

/// `/apis` entry of the group.
pub fn group_json() -> Value {
    let v = json!({"groupVersion": API_VERSION, "version": VERSION});
    json!({"name": GROUP, "versions": [v.clone()], "preferredVersion": v})
}

/// The group's item of aggregated discovery (`apidiscovery.k8s.io/v2`).
pub fn aggregated_item() -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|(plural, singular, kind, namespaced)| {
            json!({
                "resource": plural,
                "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
                "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": singular,
                "verbs": ["get", "list"],
            })
        })
        .collect();
    json!({"metadata": {"name": GROUP, "creationTimestamp": null}, "versions": [{"version": VERSION, "resources": resources, "freshness": "Current"}]})
}

fn resource_list() -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|(plural, singular, kind, namespaced)| json!({"name": plural, "singularName": singular, "namespaced": namespaced, "kind": kind, "verbs": ["get", "list"]}))
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": API_VERSION, "resources": resources})
}

/// What a request under `/apis/metrics.k8s.io` asks for.
#[derive(Debug, PartialEq)]
enum Target {
    Group,
    ResourceList,
    Nodes(Option<String>),
    Pods { namespace: Option<String>, name: Option<String> },
}

fn parse(rest: &str) -> Option<Target> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    Some(match segs.as_slice() {
        [] => Target::Group,
        [VERSION] => Target::ResourceList,
        [VERSION, "nodes"] => Target::Nodes(None),
        [VERSION, "nodes", n] => Target::Nodes(Some(n.to_string())),
        [VERSION, "pods"] => Target::Pods { namespace: None, name: None },
        [VERSION, "namespaces", ns, "pods"] => Target::Pods { namespace: Some(ns.to_string()), name: None },
        [VERSION, "namespaces", ns, "pods", n] => Target::Pods { namespace: Some(ns.to_string()), name: Some(n.to_string()) },
        _ => return None,
    })
}

/// Serves a request whose path starts with `/apis/metrics.k8s.io`; returns
/// the response, and the verb and resource for request metrics.
pub async fn serve(
    ctx: &Ctx,
    kubelets: &Kubelets,
    reads: &ReadTimes,
    method: &Method,
    rest: &str,
    query: &[(String, String)],
) -> (Response<Body>, &'static str, &'static str) {
    let Some(target) = parse(rest) else {
        return (error_response(&ApiError::not_found(GROUP, "", rest.trim_start_matches('/'))), "get", "");
    };
    if method != Method::GET {
        let e = ApiError::new(405, "MethodNotAllowed", format!("the server does not allow this method on the requested resource ({method} {GROUP})"));
        return (error_response(&e), "", "");
    }
    let q = |k: &str| query.iter().find(|(qk, _)| qk == k).map(|(_, v)| v.as_str()).unwrap_or("");
    let selectors = LabelSelector::parse(q("labelSelector"))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))
        .and_then(|l| FieldSelector::parse(q("fieldSelector")).map(|f| (l, f)).map_err(ApiError::bad_request));
    let (labels, fields) = match selectors {
        Ok(s) => s,
        Err(e) => return (error_response(&e), "list", ""),
    };
    match target {
        Target::Group => {
            let mut doc = group_json();
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            (json_response(StatusCode::OK, "application/json", &doc), "get", "discovery")
        }
        Target::ResourceList => (json_response(StatusCode::OK, "application/json", &resource_list()), "get", "discovery"),
        Target::Nodes(name) => {
            let r = node_metrics(ctx, kubelets, reads, name.as_deref(), &labels, &fields).await;
            (reply(r, "NodeMetricsList", name.is_some()), if name.is_some() { "get" } else { "list" }, "nodes.metrics.k8s.io")
        }
        Target::Pods { namespace, name } => {
            let r = pod_metrics(ctx, kubelets, reads, namespace.as_deref(), name.as_deref(), &labels, &fields).await;
            (reply(r, "PodMetricsList", name.is_some()), if name.is_some() { "get" } else { "list" }, "pods.metrics.k8s.io")
        }
    }
}

fn reply(items: Result<Vec<Value>, ApiError>, list_kind: &str, single: bool) -> Response<Body> {
    match items {
        Ok(mut items) if single => json_response(StatusCode::OK, "application/json", &items.remove(0)),
        Ok(items) => json_response(StatusCode::OK, "application/json", &json!({"kind": list_kind, "apiVersion": API_VERSION, "metadata": {}, "items": items})),
        Err(e) => error_response(&e),
    }
}

/// A CPU rate in nanocores as a canonical quantity ("250m", "1", "1234n").
pub fn cpu_quantity(nano_cores: u64) -> String {
    match nano_cores {
        0 => "0".into(),
        n if n % 1_000_000_000 == 0 => format!("{}", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}u", n / 1_000),
        n => format!("{n}n"),
    }
}

/// Bytes as a canonical binary quantity ("64Mi", "1234Ki", "1000").
pub fn memory_quantity(bytes: u64) -> String {
    for (suffix, unit) in [("Ei", 1u64 << 60), ("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes > 0 && bytes % unit == 0 {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

fn window_string(w: Duration) -> String {
    format!("{:.3}s", w.as_secs_f64())
}

/// The summaries of `nodes` (in parallel; nodes that fail are left out).
async fn summaries(ctx: &Ctx, kubelets: &Kubelets, reads: &ReadTimes, nodes: Vec<String>) -> Vec<(String, Value, Duration)> {
    let reads_of = nodes.iter().map(|n| async move {
        let r = crate::kubelet::stats_summary(ctx, kubelets, n).await;
        (n.clone(), r)
    });
    let mut out = Vec::new();
    for (node, r) in futures::future::join_all(reads_of).await {
        match r {
            Ok(summary) => {
                let w = reads.window(&node);
                out.push((node, summary, w));
            }
            Err(e) => tracing::debug!(%node, error = %e.message, "no resource usage from this node"),
        }
    }
    out
}

fn nodes_prefix() -> Result<(&'static tug_api::resources::ResourceType, String), ApiError> {
    let rt = tug_api::resources::find("", "v1", "nodes").ok_or_else(|| ApiError::internal("nodes are not served"))?;
    Ok((rt, rt.key_prefix()))
}

/// Nodes with a kubelet to ask: not hollow.
fn has_kubelet(node: &Value) -> bool {
    node.pointer("/metadata/labels").and_then(|l| l.get(HOLLOW_LABEL)).is_none()
}

fn meta_field(obj: &Value) -> impl Fn(&str) -> Option<String> + '_ {
    move |f: &str| match f {
        "metadata.name" => obj.pointer("/metadata/name").and_then(Value::as_str).map(String::from),
        "metadata.namespace" => Some(obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string()),
        _ => None,
    }
}

async fn node_metrics(ctx: &Ctx, kubelets: &Kubelets, reads: &ReadTimes, name: Option<&str>, labels: &LabelSelector, fields: &FieldSelector) -> Result<Vec<Value>, ApiError> {
    let (rt, prefix) = nodes_prefix()?;
    let nodes: Vec<Value> = match name {
        Some(n) => ctx.cache.get(&rt.key(None, n)).await.map(|c| vec![c.object.as_ref().clone()]).unwrap_or_default(),
        None => ctx.cache.entries(&prefix).await.0.iter().map(|e| e.value()).collect(),
    };
    let nodes: Vec<Value> =
        nodes.into_iter().filter(|n| has_kubelet(n) && labels.matches_object(n) && fields.matches(meta_field(n))).collect();
    let by_name: HashMap<String, &Value> = nodes.iter().filter_map(|n| Some((n.pointer("/metadata/name")?.as_str()?.to_string(), n))).collect();
    let mut items = Vec::new();
    for (node, summary, window) in summaries(ctx, kubelets, reads, by_name.keys().cloned().collect()).await {
        let cpu = &summary["node"]["cpu"];
        let mem = &summary["node"]["memory"];
        let (Some(nano_cores), Some(working_set)) = (cpu["usageNanoCores"].as_u64(), mem["workingSetBytes"].as_u64()) else { continue };
        let labels = by_name.get(&node).and_then(|n| n.pointer("/metadata/labels")).cloned().unwrap_or(json!({}));
        items.push(json!({
            "kind": "NodeMetrics",
            "apiVersion": API_VERSION,
            "metadata": {"name": node, "creationTimestamp": tug_api::meta::now_rfc3339(), "labels": labels},
            "timestamp": cpu["time"],
            "window": window_string(window),
            "usage": {"cpu": cpu_quantity(nano_cores), "memory": memory_quantity(working_set)},
        }));
    }
    items.sort_by(|a, b| a["metadata"]["name"].as_str().cmp(&b["metadata"]["name"].as_str()));
    if let (Some(n), true) = (name, items.is_empty()) {
        return Err(ApiError::not_found(GROUP, "nodes", n));
    }
    Ok(items)
}

async fn pod_metrics(
    ctx: &Ctx,
    kubelets: &Kubelets,
    reads: &ReadTimes,
    namespace: Option<&str>,
    name: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Result<Vec<Value>, ApiError> {
    let rt = tug_api::resources::find("", "v1", "pods").ok_or_else(|| ApiError::internal("pods are not served"))?;
    let pods: Vec<Value> = match (namespace, name) {
        (Some(ns), Some(n)) => ctx.cache.get(&rt.key(Some(ns), n)).await.map(|c| vec![c.object.as_ref().clone()]).unwrap_or_default(),
        (Some(ns), None) => ctx.cache.entries(&format!("{}{}/", rt.key_prefix(), ns)).await.0.iter().map(|e| e.value()).collect(),
        _ => ctx.cache.entries(&rt.key_prefix()).await.0.iter().map(|e| e.value()).collect(),
    };
    // The pods asked for, by UID, and the nodes they run on.
    let pods: HashMap<String, Value> = pods
        .into_iter()
        .filter(|p| labels.matches_object(p) && fields.matches(meta_field(p)))
        .filter_map(|p| Some((p.pointer("/metadata/uid")?.as_str()?.to_string(), p)))
        .collect();
    let nodes: HashSet<String> = pods.values().filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str)).map(String::from).collect();
    let (node_rt, _) = nodes_prefix()?;
    let mut asked = Vec::new();
    for n in nodes {
        if let Some(node) = ctx.cache.get(&node_rt.key(None, &n)).await
            && has_kubelet(&node.object)
        {
            asked.push(n);
        }
    }
    let mut items = Vec::new();
    for (_, summary, window) in summaries(ctx, kubelets, reads, asked).await {
        for sp in summary["pods"].as_array().into_iter().flatten() {
            let uid = sp["podRef"]["uid"].as_str().unwrap_or("");
            let Some(pod) = pods.get(uid) else { continue };
            let mut containers = Vec::new();
            let mut complete = true;
            for c in sp["containers"].as_array().into_iter().flatten() {
                match (c["cpu"]["usageNanoCores"].as_u64(), c["memory"]["workingSetBytes"].as_u64()) {
                    (Some(cpu), Some(mem)) => containers.push(json!({"name": c["name"], "usage": {"cpu": cpu_quantity(cpu), "memory": memory_quantity(mem)}})),
                    // As metrics-server: a pod with a container lacking a figure is left out.
                    _ => complete = false,
                }
            }
            if !complete || containers.is_empty() {
                continue;
            }
            items.push(json!({
                "kind": "PodMetrics",
                "apiVersion": API_VERSION,
                "metadata": {
                    "name": pod.pointer("/metadata/name"),
                    "namespace": pod.pointer("/metadata/namespace"),
                    "creationTimestamp": tug_api::meta::now_rfc3339(),
                    "labels": pod.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                },
                "timestamp": sp["cpu"]["time"],
                "window": window_string(window),
                "containers": containers,
            }));
        }
    }
    items.sort_by_key(|i| (i["metadata"]["namespace"].as_str().map(String::from), i["metadata"]["name"].as_str().map(String::from)));
    if let (Some(n), true) = (name, items.is_empty()) {
        return Err(ApiError::not_found(GROUP, "pods", &format!("{}/{n}", namespace.unwrap_or_default())));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(1_500), "1500n");
        assert_eq!(cpu_quantity(3_000), "3u");
        assert_eq!(cpu_quantity(1_234_567), "1234567n");
        assert_eq!(memory_quantity(64 << 20), "64Mi");
        assert_eq!(memory_quantity(1234 * 1024), "1234Ki");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(memory_quantity(0), "0");
    }

    #[test]
    fn paths() {
        assert_eq!(parse(""), Some(Target::Group));
        assert_eq!(parse("/v1beta1"), Some(Target::ResourceList));
        assert_eq!(parse("/v1beta1/nodes/n1"), Some(Target::Nodes(Some("n1".into()))));
        assert_eq!(parse("/v1beta1/namespaces/d/pods"), Some(Target::Pods { namespace: Some("d".into()), name: None }));
        assert_eq!(parse("/v1beta1/namespaces/d/pods/p"), Some(Target::Pods { namespace: Some("d".into()), name: Some("p".into()) }));
        assert_eq!(parse("/v1beta1/services"), None);
        assert_eq!(parse("/v1/nodes"), None);
    }
}
