//! OpenAPI v2 and v3 documents generated from the resource table and the
//! k8s-openapi schemas. kubectl reads v3 for `explain`, for apply's patch
//! metadata, and to learn that the server validates fields itself (the
//! `fieldValidation` parameter on each PATCH operation).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use tug_api::resources::{groups, ResourceType, RESOURCES};
use tug_api::schema::Schemas;

pub struct OpenApiDocs {
    /// `/openapi/v3` index.
    pub index: Value,
    /// Per group-version path (`api/v1`, `apis/apps/v1`): (hash, serialized doc).
    pub group_versions: BTreeMap<String, (String, bytes::Bytes)>,
    /// `/openapi/v2`, serialized.
    pub v2: bytes::Bytes,
}

static DOCS: OnceLock<OpenApiDocs> = OnceLock::new();

pub fn docs() -> &'static OpenApiDocs {
    DOCS.get_or_init(build)
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

fn param(name: &str, location: &str, description: &str) -> Value {
    json!({"name": name, "in": location, "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn gvk_ext(rt: &ResourceType) -> Value {
    json!({"group": rt.group, "version": rt.version, "kind": rt.kind})
}

fn json_content(def: &str) -> Value {
    json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{def}")}}})
}

/// Paths for one resource: collection and item, with the operations and
/// parameters kubectl checks.
fn resource_paths(rt: &ResourceType, paths: &mut Map<String, Value>) {
    let base = if rt.group.is_empty() { format!("/api/{}", rt.version) } else { format!("/apis/{}/{}", rt.group, rt.version) };
    let collection = if rt.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", rt.plural)
    } else {
        format!("{base}/{}", rt.plural)
    };
    let item = format!("{collection}/{{name}}");
    let write_params = vec![
        param("dryRun", "query", "When present, indicates that modifications should not be persisted."),
        param("fieldManager", "query", "fieldManager is a name associated with the actor or entity that is making these changes."),
        param("fieldValidation", "query", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn or Strict."),
    ];
    let mut patch_params = write_params.clone();
    patch_params.push(param("force", "query", "Force is going to \"force\" Apply requests."));
    let ext = gvk_ext(rt);
    let ok = |def: &str| json!({"200": {"description": "OK", "content": json_content(def)}});
    let mut path_params = vec![param("pretty", "query", "If 'true', then the output is pretty printed.")];
    if rt.namespaced {
        path_params.push(json!({"name": "namespace", "in": "path", "required": true, "description": "object name and auth scope, such as for teams and projects", "schema": {"type": "string", "uniqueItems": true}}));
    }
    paths.insert(
        collection.clone(),
        json!({
            "get": {"operationId": format!("list{}", rt.kind), "x-kubernetes-action": "list", "x-kubernetes-group-version-kind": ext, "responses": ok(rt.definition)},
            "post": {"operationId": format!("create{}", rt.kind), "x-kubernetes-action": "post", "x-kubernetes-group-version-kind": ext,
                     "parameters": write_params, "requestBody": {"content": json_content(rt.definition), "required": true}, "responses": ok(rt.definition)},
            "parameters": path_params.clone(),
        }),
    );
    let mut item_params = path_params;
    item_params.push(json!({"name": "name", "in": "path", "required": true, "description": "name of the object", "schema": {"type": "string", "uniqueItems": true}}));
    paths.insert(
        item,
        json!({
            "get": {"operationId": format!("read{}", rt.kind), "x-kubernetes-action": "get", "x-kubernetes-group-version-kind": ext, "responses": ok(rt.definition)},
            "put": {"operationId": format!("replace{}", rt.kind), "x-kubernetes-action": "put", "x-kubernetes-group-version-kind": ext,
                    "parameters": write_params, "requestBody": {"content": json_content(rt.definition), "required": true}, "responses": ok(rt.definition)},
            "patch": {"operationId": format!("patch{}", rt.kind), "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": ext,
                      "parameters": patch_params,
                      "requestBody": {"content": {
                          "application/json-patch+json": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}},
                          "application/merge-patch+json": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}},
                          "application/strategic-merge-patch+json": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}},
                          "application/apply-patch+yaml": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}}
                      }, "required": true},
                      "responses": ok(rt.definition)},
            "delete": {"operationId": format!("delete{}", rt.kind), "x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": ext,
                       "parameters": [param("dryRun", "query", "When present, indicates that modifications should not be persisted."),
                                      param("gracePeriodSeconds", "query", "The duration in seconds before the object should be deleted."),
                                      param("propagationPolicy", "query", "Whether and how garbage collection will be performed.")],
                       "responses": ok(rt.definition)},
            "parameters": item_params,
        }),
    );
}

/// Definitions reachable from `roots` through `$ref`.
fn reachable(defs: &Map<String, Value>, roots: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<String> = roots.into_iter().collect();
    while let Some(name) = stack.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(d) = defs.get(&name) {
            collect_refs(d, &mut stack);
        }
    }
    seen
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "$ref" {
                    if let Some(s) = child.as_str() {
                        out.push(s.rsplit('/').next().unwrap_or("").to_string());
                    }
                } else {
                    collect_refs(child, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

fn hash_hex(bytes: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016X}{:016X}", h.finish(), bytes.len())
}

fn build() -> OpenApiDocs {
    let schemas = Schemas::get();
    let mut defs = schemas.definitions.clone();
    defs.entry("io.k8s.apimachinery.pkg.apis.meta.v1.Patch").or_insert_with(|| {
        json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"})
    });
    let mut group_versions = BTreeMap::new();
    let mut index_paths = Map::new();
    for (g, versions) in groups() {
        for v in versions {
            let mut paths = Map::new();
            let mut roots = vec!["io.k8s.apimachinery.pkg.apis.meta.v1.Patch".to_string()];
            for rt in RESOURCES.iter().filter(|r| r.group == g && r.version == v) {
                resource_paths(rt, &mut paths);
                roots.push(rt.definition.to_string());
            }
            let components: Map<String, Value> = reachable(&defs, roots)
                .into_iter()
                .filter_map(|n| defs.get(&n).map(|d| (n.clone(), d.clone())))
                .collect();
            let doc = json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": "v1.32.0"},
                "paths": paths,
                "components": {"schemas": components},
            });
            let bytes = serde_json::to_vec(&doc).expect("serializable");
            let hash = hash_hex(&bytes);
            let path = gv_path(g, v);
            index_paths.insert(path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}));
            group_versions.insert(path, (hash, bytes::Bytes::from(bytes)));
        }
    }
    // v2: the same definitions with v2 references.
    let v2_defs = serde_json::to_string(&defs)
        .expect("serializable")
        .replace("#/components/schemas/", "#/definitions/");
    let v2_defs: Value = serde_json::from_str(&v2_defs).expect("round trip");
    let v2 = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": {},
        "definitions": v2_defs,
    });
    OpenApiDocs {
        index: json!({"paths": index_paths}),
        group_versions,
        v2: bytes::Bytes::from(serde_json::to_vec(&v2).expect("serializable")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_docs_advertise_field_validation_on_patch() {
        let d = docs();
        let (_, apps) = &d.group_versions["apis/apps/v1"];
        let doc: Value = serde_json::from_slice(apps).unwrap();
        let p = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(p["parameters"].as_array().unwrap().iter().any(|x| x["name"] == "fieldValidation"));
        assert!(doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"].is_object());
        assert!(d.index["paths"]["api/v1"]["serverRelativeURL"].as_str().unwrap().starts_with("/openapi/v3/api/v1?hash="));
    }
}
