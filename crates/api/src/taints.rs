//! Taints and tolerations with upstream's semantics, shared by the
//! scheduler and the controllers.

use k8s_openapi::api::core::v1::{Taint, Toleration};

/// Upstream's `Toleration.ToleratesTaint`: an empty effect matches every
/// effect, an empty key with `Exists` matches every taint, and `Equal` (or
/// an empty operator) compares values.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn toleration(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn tolerations() {
        let taint: Taint = serde_json::from_value(json!({"key": "k", "value": "v", "effect": "NoSchedule"})).unwrap();
        assert!(tolerates(&toleration(json!({"key": "k", "value": "v"})), &taint), "an empty operator is Equal");
        assert!(tolerates(&toleration(json!({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"})), &taint));
        assert!(!tolerates(&toleration(json!({"key": "k", "operator": "Equal", "value": "w"})), &taint));
        assert!(!tolerates(&toleration(json!({"key": "k", "value": "w"})), &taint));
        assert!(!tolerates(&toleration(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})), &taint));
        assert!(tolerates(&toleration(json!({"operator": "Exists"})), &taint), "empty key with Exists tolerates everything");
        assert!(!tolerates(&toleration(json!({"key": "other", "operator": "Exists"})), &taint));
        assert!(!tolerates(&toleration(json!({"key": "k", "operator": "Bogus"})), &taint));
    }
}
