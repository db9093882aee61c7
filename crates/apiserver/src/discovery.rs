//! Discovery documents, legacy (`/api`, `/apis`, `/apis/{g}/{v}`) and
//! aggregated (`apidiscovery.k8s.io/v2`, what kubectl 1.32 asks for first).

use serde_json::{json, Value};
use tug_api::resources::{groups, ResourceType, RESOURCES};

/// Verbs and response kind of a subresource: (verbs, group, version, kind).
fn subresource_info(rt: &ResourceType, sub: &str) -> (&'static [&'static str], &'static str, &'static str, &'static str) {
    match sub {
        "status" | "ephemeralcontainers" => (&["get", "patch", "update"], "", "", ""),
        "scale" => (&["get", "patch", "update"], "autoscaling", "v1", "Scale"),
        "binding" => (&["create"], "", "v1", "Binding"),
        "eviction" => (&["create"], "policy", "v1", "Eviction"),
        "log" => (&["get"], "", "v1", "Pod"),
        "exec" | "attach" | "portforward" => (&["create", "get"], "", "v1", "PodExecOptions"),
        "proxy" => (&["create", "delete", "get", "patch", "update"], "", "", ""),
        "finalize" => (&["update"], "", "", ""),
        "token" => (&["create"], "authentication.k8s.io", "v1", "TokenRequest"),
        _ => {
            let _ = rt;
            (&["get"], "", "", "")
        }
    }
}

fn sub_kind(rt: &ResourceType, sub: &str) -> (&'static [&'static str], String, String, String) {
    let (verbs, g, v, k) = subresource_info(rt, sub);
    if k.is_empty() {
        (verbs, rt.group.into(), rt.version.into(), rt.kind.into())
    } else {
        (verbs, g.into(), v.into(), k.into())
    }
}

/// `/api`
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn group_json(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0].clone()})
}

/// `/apis`
pub fn group_list() -> Value {
    let mut groups: Vec<Value> = groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    groups.push(crate::metrics_api::group_json());
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`
pub fn group(name: &str) -> Option<Value> {
    let (g, vs) = groups().into_iter().find(|(g, _)| *g == name && !g.is_empty())?;
    let mut doc = group_json(g, &vs);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `/api/v1`, `/apis/{group}/{version}`
pub fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for rt in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let mut main = json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": rt.verbs(),
        });
        if !rt.short_names.is_empty() {
            main["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            main["categories"] = json!(rt.categories);
        }
        resources.push(main);
        for sub in rt.subresources {
            let (verbs, g, v, k) = sub_kind(rt, sub);
            let mut entry = json!({
                "name": format!("{}/{}", rt.plural, sub),
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": k,
                "verbs": verbs,
            });
            if g != rt.group || v != rt.version {
                if !g.is_empty() {
                    entry["group"] = json!(g);
                }
                entry["version"] = json!(v);
            }
            resources.push(entry);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

/// The aggregated discovery document for `/api` (`core = true`) or `/apis`.
pub fn aggregated(core: bool) -> Value {
    let mut items = Vec::new();
    for (g, versions) in groups() {
        if g.is_empty() != core {
            continue;
        }
        let mut vs = Vec::new();
        for v in versions {
            let mut resources = Vec::new();
            for rt in RESOURCES.iter().filter(|r| r.group == g && r.version == v) {
                let subs: Vec<Value> = rt
                    .subresources
                    .iter()
                    .map(|sub| {
                        let (verbs, sg, sv, sk) = sub_kind(rt, sub);
                        json!({"subresource": sub, "responseKind": {"group": sg, "version": sv, "kind": sk}, "verbs": verbs})
                    })
                    .collect();
                let mut r = json!({
                    "resource": rt.plural,
                    "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                    "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": rt.singular,
                    "verbs": rt.verbs(),
                });
                if !rt.short_names.is_empty() {
                    r["shortNames"] = json!(rt.short_names);
                }
                if !rt.categories.is_empty() {
                    r["categories"] = json!(rt.categories);
                }
                if !subs.is_empty() {
                    r["subresources"] = Value::Array(subs);
                }
                resources.push(r);
            }
            vs.push(json!({"version": v, "resources": resources, "freshness": "Current"}));
        }
        items.push(json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": vs}));
    }
    if !core {
        items.push(crate::metrics_api::aggregated_item());
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// The media type of aggregated discovery responses.
pub const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
pub const AGGREGATED_V2BETA1: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Which aggregated discovery version an `Accept` header asks for, if any
/// (the first one listed wins, as upstream negotiates).
pub fn wants_aggregated(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("g=apidiscovery.k8s.io") && p.contains("as=APIGroupDiscoveryList") {
            if p.contains("v=v2beta1") {
                return Some(AGGREGATED_V2BETA1);
            }
            if p.contains("v=v2") {
                return Some(AGGREGATED_V2);
            }
        }
        if p.starts_with("application/json") && !p.contains("as=") {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_covers_apps_with_scale() {
        let doc = aggregated(false);
        let apps = doc["items"].as_array().unwrap().iter().find(|i| i["metadata"]["name"] == "apps").unwrap();
        let deploy = apps["versions"][0]["resources"].as_array().unwrap().iter().find(|r| r["resource"] == "deployments").unwrap();
        assert_eq!(deploy["scope"], "Namespaced");
        assert!(deploy["subresources"].as_array().unwrap().iter().any(|s| s["subresource"] == "scale" && s["responseKind"]["kind"] == "Scale"));
        let core = aggregated(true);
        assert_eq!(core["items"][0]["metadata"]["name"], "");
    }

    #[test]
    fn negotiation() {
        assert_eq!(wants_aggregated("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"), Some(AGGREGATED_V2));
        assert_eq!(wants_aggregated("application/json, */*"), None);
    }
}
