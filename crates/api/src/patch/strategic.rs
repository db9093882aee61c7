//! Strategic merge patch, as `kubectl apply`, `kubectl edit` and
//! `kubectl patch` (the default type) send it.
//!
//! Like a JSON merge patch, except that lists whose field carries
//! `x-kubernetes-patch-strategy: merge` are merged element by element (by
//! `x-kubernetes-patch-merge-key` for lists of objects, as a set for lists of
//! scalars), and the directives `$patch`, `$retainKeys`,
//! `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>` apply.

use serde_json::{Map, Value};

/// The schema of fields the schemas do not describe.
static NULL: Value = Value::Null;

use crate::schema::Schemas;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER_PREFIX: &str = "$setElementOrder/";
const DELETE_PRIMITIVE_PREFIX: &str = "$deleteFromPrimitiveList/";

/// Applies `patch` to `original`, whose type is the OpenAPI definition
/// `definition` (`io.k8s.api.core.v1.Pod`). Unknown definitions merge like a
/// JSON merge patch (lists replaced), which is upstream's behaviour for
/// fields without a patch strategy.
pub fn apply(original: &Value, patch: &Value, definition: &str) -> Result<Value, String> {
    let schemas = Schemas::get();
    let schema = schemas.definition(definition).unwrap_or(&NULL);
    let Value::Object(patch_map) = patch else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    let original_map = original.as_object().cloned().unwrap_or_default();
    match merge_map(original_map, patch_map, schema, schemas)? {
        Some(m) => Ok(Value::Object(m)),
        None => Ok(Value::Object(Map::new())),
    }
}

/// Merges a patch map into an original map; `None` when the patch deletes it.
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    schema: &Value,
    schemas: &Schemas,
) -> Result<Option<Map<String, Value>>, String> {
    match patch.get(DIRECTIVE).and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove(DIRECTIVE);
            strip_directives(&mut replaced);
            return Ok(Some(replaced));
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("Unknown patch type: {other}")),
    }

    let retain_keys: Option<Vec<String>> = match patch.get(RETAIN_KEYS) {
        Some(Value::Array(keys)) => Some(keys.iter().filter_map(|k| k.as_str().map(String::from)).collect()),
        Some(_) => return Err("$retainKeys must be a list of strings".into()),
        None => None,
    };

    for (key, patch_value) in patch {
        if key == DIRECTIVE || key == RETAIN_KEYS || key.starts_with(SET_ORDER_PREFIX) {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_PRIMITIVE_PREFIX) {
            let Value::Array(to_delete) = patch_value else {
                return Err(format!("{key} must be a list"));
            };
            if let Some(Value::Array(items)) = original.get_mut(field) {
                items.retain(|v| !to_delete.contains(v));
            }
            continue;
        }
        if patch_value.is_null() {
            original.remove(key);
            continue;
        }
        let child_schema = schemas.property(schema, key).unwrap_or(&NULL);
        let merged = match (original.remove(key), patch_value) {
            (Some(Value::Object(orig_child)), Value::Object(patch_child)) => {
                merge_map(orig_child, patch_child, child_schema, schemas)?.map(Value::Object)
            }
            (None, Value::Object(patch_child)) => {
                merge_map(Map::new(), patch_child, child_schema, schemas)?.map(Value::Object)
            }
            (orig, Value::Array(patch_items)) => {
                let strategy = schemas.patch_strategy(schema, key);
                if strategy.merge {
                    let orig_items = match orig {
                        Some(Value::Array(a)) => a,
                        _ => Vec::new(),
                    };
                    let item_schema = Schemas::attr(schemas.resolve(child_schema), "items").unwrap_or(&NULL);
                    Some(Value::Array(merge_list(
                        orig_items,
                        patch_items,
                        strategy.merge_key.as_deref(),
                        item_schema,
                        schemas,
                    )?))
                } else {
                    Some(Value::Array(replace_list(patch_items)?))
                }
            }
            (_, other) => Some(other.clone()),
        };
        if let Some(v) = merged {
            original.insert(key.clone(), v);
        }
    }

    // `$setElementOrder/<field>` fixes the order of a merged list.
    for (key, order) in patch {
        if let Some(field) = key.strip_prefix(SET_ORDER_PREFIX) {
            let Value::Array(order) = order else {
                return Err(format!("{key} must be a list"));
            };
            let merge_key = schemas.patch_strategy(schema, field).merge_key;
            if let Some(Value::Array(items)) = original.get_mut(field) {
                reorder(items, order, merge_key.as_deref());
            }
        }
    }

    if let Some(keep) = retain_keys {
        original.retain(|k, _| keep.iter().any(|r| r == k));
    }
    Ok(Some(original))
}

/// A replaced list still loses directive-only elements such as `{"$patch": "replace"}`.
fn replace_list(patch_items: &[Value]) -> Result<Vec<Value>, String> {
    Ok(patch_items
        .iter()
        .filter(|v| !is_directive_only(v))
        .cloned()
        .map(|mut v| {
            if let Value::Object(m) = &mut v {
                strip_directives(m);
            }
            v
        })
        .collect())
}

fn is_directive_only(v: &Value) -> bool {
    v.as_object()
        .map(|m| m.len() == 1 && m.contains_key(DIRECTIVE))
        .unwrap_or(false)
}

fn strip_directives(m: &mut Map<String, Value>) {
    m.retain(|k, _| !(k == DIRECTIVE || k == RETAIN_KEYS || k.starts_with(SET_ORDER_PREFIX) || k.starts_with(DELETE_PRIMITIVE_PREFIX)));
    for v in m.values_mut() {
        match v {
            Value::Object(child) => strip_directives(child),
            Value::Array(items) => {
                items.retain(|i| !is_directive_only(i));
                for i in items {
                    if let Value::Object(child) = i {
                        strip_directives(child);
                    }
                }
            }
            _ => {}
        }
    }
}

fn merge_list(
    mut original: Vec<Value>,
    patch: &[Value],
    merge_key: Option<&str>,
    item_schema: &Value,
    schemas: &Schemas,
) -> Result<Vec<Value>, String> {
    // A `{"$patch": "replace"}` element replaces the whole list.
    if patch
        .iter()
        .any(|v| v.get(DIRECTIVE).and_then(Value::as_str) == Some("replace") && is_directive_only(v))
    {
        return replace_list(patch);
    }
    let Some(merge_key) = merge_key else {
        // A merging list of scalars is a set: add what is missing.
        for item in patch {
            if item.is_object() {
                return Err("merging a list of objects needs a patch merge key".into());
            }
            if !original.contains(item) {
                original.push(item.clone());
            }
        }
        return Ok(original);
    };
    for item in patch {
        let Value::Object(patch_item) = item else {
            return Err(format!("elements of a list merged by {merge_key} must be objects"));
        };
        let Some(key_value) = patch_item.get(merge_key) else {
            if patch_item.get(DIRECTIVE).is_some() {
                continue;
            }
            return Err(format!("map: {item} does not contain declared merge key: {merge_key}"));
        };
        let position = original.iter().position(|o| o.get(merge_key) == Some(key_value));
        match patch_item.get(DIRECTIVE).and_then(Value::as_str) {
            Some("delete") => {
                original.retain(|o| o.get(merge_key) != Some(key_value));
            }
            _ => match position {
                Some(i) => {
                    let orig_item = original[i].as_object().cloned().unwrap_or_default();
                    match merge_map(orig_item, patch_item, item_schema, schemas)? {
                        Some(m) => original[i] = Value::Object(m),
                        None => {
                            original.remove(i);
                        }
                    }
                }
                None => {
                    if let Some(m) = merge_map(Map::new(), patch_item, item_schema, schemas)? {
                        original.push(Value::Object(m));
                    }
                }
            },
        }
    }
    Ok(original)
}

/// Orders `items` as `order` names them (by merge key, or by value for
/// scalars); items the order does not name keep their relative place after.
fn reorder(items: &mut Vec<Value>, order: &[Value], merge_key: Option<&str>) {
    let id = |v: &Value| -> Value {
        match merge_key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let mut ordered = Vec::with_capacity(items.len());
    let mut rest: Vec<Value> = std::mem::take(items);
    for o in order {
        let want = match merge_key {
            Some(k) => o.get(k).cloned().unwrap_or(Value::Null),
            None => o.clone(),
        };
        if let Some(i) = rest.iter().position(|v| id(v) == want) {
            ordered.push(rest.remove(i));
        }
    }
    ordered.extend(rest);
    *items = ordered;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const POD: &str = "io.k8s.api.core.v1.Pod";
    const DEPLOY: &str = "io.k8s.api.apps.v1.Deployment";

    fn pod() -> Value {
        json!({
            "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {
                "containers": [
                    {"name": "a", "image": "busybox:1", "env": [{"name": "E1", "value": "1"}]},
                    {"name": "b", "image": "busybox:2"}
                ],
                "tolerations": [{"key": "k1"}]
            }
        })
    }

    #[test]
    fn containers_merge_by_name() {
        let p = json!({"spec": {"containers": [{"name": "b", "image": "busybox:3"}]}});
        let out = apply(&pod(), &p, POD).unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], "busybox:1");
        assert_eq!(out["spec"]["containers"][1]["image"], "busybox:3");
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn nested_env_merges_and_new_elements_append() {
        let p = json!({"spec": {"containers": [
            {"name": "a", "env": [{"name": "E2", "value": "2"}]},
            {"name": "c", "image": "new"}
        ]}});
        let out = apply(&pod(), &p, POD).unwrap();
        assert_eq!(out["spec"]["containers"][0]["env"], json!([{"name": "E1", "value": "1"}, {"name": "E2", "value": "2"}]));
        assert_eq!(out["spec"]["containers"][2]["name"], "c");
    }

    #[test]
    fn delete_directive_and_null() {
        let p = json!({"metadata": {"labels": {"a": null}}, "spec": {"containers": [{"name": "a", "$patch": "delete"}]}});
        let out = apply(&pod(), &p, POD).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({}));
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(out["spec"]["containers"][0]["name"], "b");
    }

    #[test]
    fn lists_without_strategy_are_replaced() {
        let p = json!({"spec": {"tolerations": [{"key": "k2"}]}});
        let out = apply(&pod(), &p, POD).unwrap();
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "k2"}]));
    }

    #[test]
    fn primitive_merge_list_unions_and_delete_from_primitive_list() {
        let p = json!({"metadata": {"finalizers": ["y", "x"]}});
        let out = apply(&pod(), &p, POD).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        let p = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}});
        let out = apply(&out, &p, POD).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["y"]));
    }

    #[test]
    fn replace_directive_on_list_and_map() {
        let p = json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "z", "image": "i"}]}});
        let out = apply(&pod(), &p, POD).unwrap();
        assert_eq!(out["spec"]["containers"], json!([{"name": "z", "image": "i"}]));
        let p = json!({"metadata": {"labels": {"$patch": "replace", "b": "2"}}});
        let out = apply(&pod(), &p, POD).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
    }

    #[test]
    fn set_element_order() {
        let p = json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                                "containers": [{"name": "a", "image": "x"}]}});
        let out = apply(&pod(), &p, POD).unwrap();
        assert_eq!(out["spec"]["containers"][0]["name"], "b");
        assert_eq!(out["spec"]["containers"][1]["image"], "x");
    }

    #[test]
    fn retain_keys_on_deployment_strategy() {
        let d = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let p = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = apply(&d, &p, DEPLOY).unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn missing_merge_key_is_an_error() {
        let p = json!({"spec": {"containers": [{"image": "x"}]}});
        assert!(apply(&pod(), &p, POD).is_err());
    }

    #[test]
    fn template_containers_in_deployments_merge() {
        let d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}}}});
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "2"}]}}}});
        let out = apply(&d, &p, DEPLOY).unwrap();
        assert_eq!(out["spec"]["template"]["spec"]["containers"][1]["image"], "2");
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["image"], "1");
    }
}
