//! Conversion between the versions that share one storage: HPAs are stored
//! as autoscaling/v2 and served as v1 too; Events are stored as core/v1 and
//! served as events.k8s.io/v1 too. As upstream, one object is visible
//! through every version that serves its resource.

use serde_json::{json, Map, Value};

use crate::resources::ResourceType;

/// The stored form of an object written through `rt`.
pub fn to_storage(rt: &ResourceType, obj: Value) -> Value {
    match (rt.group, rt.version, rt.kind) {
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => hpa_v1_to_v2(obj),
        ("events.k8s.io", "v1", "Event") => event_new_to_core(obj),
        _ => obj,
    }
}

/// The object as `rt` serves it, from its stored form.
pub fn from_storage(rt: &ResourceType, obj: Value) -> Value {
    match (rt.group, rt.version, rt.kind) {
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => hpa_v2_to_v1(obj),
        ("events.k8s.io", "v1", "Event") => event_core_to_new(obj),
        _ => obj,
    }
}

/// Does `rt` serve objects stored in another version?
pub fn converts(rt: &ResourceType) -> bool {
    matches!(
        (rt.group, rt.version, rt.kind),
        ("autoscaling", "v1", "HorizontalPodAutoscaler") | ("events.k8s.io", "v1", "Event")
    )
}

fn take(m: &mut Map<String, Value>, k: &str) -> Option<Value> {
    m.remove(k).filter(|v| !v.is_null())
}

fn hpa_v1_to_v2(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v2");
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(cpu) = take(spec, "targetCPUUtilizationPercentage") {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}]),
            );
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        if let Some(cpu) = take(status, "currentCPUUtilizationPercentage") {
            status.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}]),
            );
        }
    }
    obj
}

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource" && m["resource"]["name"] == "cpu"
}

fn hpa_v2_to_v1(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v1");
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let metrics = take(spec, "metrics").and_then(|m| m.as_array().cloned()).unwrap_or_default();
        spec.remove("behavior");
        if let Some(cpu) = metrics
            .iter()
            .find(|m| is_cpu_utilization(m) && m["resource"]["target"]["type"] == "Utilization")
            .and_then(|m| m["resource"]["target"]["averageUtilization"].as_i64())
        {
            spec.insert("targetCPUUtilizationPercentage".into(), json!(cpu));
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let current = take(status, "currentMetrics").and_then(|m| m.as_array().cloned()).unwrap_or_default();
        status.remove("conditions");
        if let Some(cpu) = current
            .iter()
            .find(|m| is_cpu_utilization(m))
            .and_then(|m| m["resource"]["current"]["averageUtilization"].as_i64())
        {
            status.insert("currentCPUUtilizationPercentage".into(), json!(cpu));
        }
    }
    obj
}

/// events.k8s.io/v1 field ↔ core/v1 field.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn event_new_to_core(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("v1");
    if let Some(m) = obj.as_object_mut() {
        for (new, core) in EVENT_FIELDS {
            if let Some(v) = take(m, new) {
                m.insert((*core).into(), v);
            }
        }
        if let Some(source) = take(m, "deprecatedSource") {
            m.insert("source".into(), source);
        }
    }
    obj
}

fn event_core_to_new(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("events.k8s.io/v1");
    if let Some(m) = obj.as_object_mut() {
        for (new, core) in EVENT_FIELDS {
            if let Some(v) = take(m, core) {
                m.insert((*new).into(), v);
            }
        }
        if let Some(source) = take(m, "source") {
            m.insert("deprecatedSource".into(), source);
        }
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn hpa_round_trips_through_v2() {
        let v1 = find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let obj = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "spec": {"minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70,
                     "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}}});
        let stored = to_storage(v1, obj.clone());
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70);
        assert_eq!(from_storage(v1, stored), obj);
    }

    #[test]
    fn events_round_trip_through_core() {
        let new = find("events.k8s.io", "v1", "events").unwrap();
        let obj = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "note": "hi",
            "regarding": {"kind": "Pod", "name": "p"}, "reason": "Started", "deprecatedCount": 2});
        let stored = to_storage(new, obj.clone());
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["message"], "hi");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(from_storage(new, stored), obj);
    }
}
