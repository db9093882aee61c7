//! The patch engines behind PATCH: JSON patch (RFC 6902), JSON merge patch
//! (RFC 7386) and strategic merge patch (Kubernetes').

pub mod strategic;

use serde_json::Value;

/// The four PATCH content types upstream accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// RFC 6902 on a copy of `original`.
pub fn apply_json_patch(original: &Value, patch: &Value) -> Result<Value, String> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| e.to_string())?;
    Ok(doc)
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn apply_merge_patch(original: &Value, patch: &Value) -> Result<Value, String> {
    if !patch.is_object() {
        return Err("a merge patch must be a JSON object".into());
    }
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_ops() {
        let o = json!({"a": {"b": 1}, "l": [1, 2]});
        let p = json!([{"op": "replace", "path": "/a/b", "value": 2}, {"op": "add", "path": "/l/-", "value": 3}]);
        assert_eq!(apply_json_patch(&o, &p).unwrap(), json!({"a": {"b": 2}, "l": [1, 2, 3]}));
        let bad = json!([{"op": "test", "path": "/a/b", "value": 9}]);
        assert!(apply_json_patch(&o, &bad).is_err());
    }

    #[test]
    fn merge_patch_deletes_with_null_and_replaces_lists() {
        let o = json!({"a": 1, "b": {"c": 1, "d": 2}, "l": [1, 2]});
        let p = json!({"a": null, "b": {"d": 3}, "l": [9]});
        assert_eq!(apply_merge_patch(&o, &p).unwrap(), json!({"b": {"c": 1, "d": 3}, "l": [9]}));
    }

    #[test]
    fn content_types() {
        assert_eq!(PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"), Some(PatchType::Strategic));
        assert_eq!(PatchType::from_content_type("text/plain"), None);
    }
}
