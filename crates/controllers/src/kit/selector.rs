//! Label selectors, node selectors and taints, with upstream's semantics.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelector, NodeSelectorRequirement, Pod, PodSpec, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector as KubeSelector, SelectorExt};
pub use tug_api::taints::tolerates;

/// A parsed label selector. Upstream's `LabelSelectorAsSelector`: a
/// missing selector selects nothing, an empty one everything.
#[derive(Clone, Debug)]
pub enum Selector {
    Nothing,
    Match(KubeSelector),
}

impl Selector {
    pub fn parse(sel: Option<&LabelSelector>) -> Result<Selector, String> {
        match sel {
            None => Ok(Selector::Nothing),
            Some(s) => KubeSelector::try_from(s.clone()).map(Selector::Match).map_err(|e| e.to_string()),
        }
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        match self {
            Selector::Nothing => false,
            Selector::Match(s) => {
                let empty = BTreeMap::new();
                s.matches(labels.unwrap_or(&empty))
            }
        }
    }
}

/// Whether `sel` is the empty selector `{}` (selects everything), which
/// the workload controllers refuse to act on.
pub fn selects_all(sel: Option<&LabelSelector>) -> bool {
    match sel {
        Some(s) => s.match_labels.as_ref().map(|m| m.is_empty()).unwrap_or(true) && s.match_expressions.as_ref().map(|m| m.is_empty()).unwrap_or(true),
        None => false,
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.map(|v| values.iter().any(|x| x == v)).unwrap_or(false),
        "NotIn" => value.map(|v| !values.iter().any(|x| x == v)).unwrap_or(true),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, values) else { return false };
            let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else { return false };
            if r.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

/// Upstream's `nodeaffinity.NodeSelector.Match`: the terms are ORed; a
/// term's expressions (on labels) and fields (`metadata.name`) are ANDed;
/// an empty term matches nothing.
pub fn node_selector_matches(ns: &NodeSelector, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or("");
    ns.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
        let fields = term.match_fields.as_deref().unwrap_or(&[]);
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
            && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
    })
}

/// Upstream's `GetRequiredNodeAffinity(pod).Match(node)`: the pod's
/// `nodeSelector` and its required node affinity both match.
pub fn pod_spec_fits_node(spec: &PodSpec, node: &Node) -> bool {
    if let Some(sel) = &spec.node_selector {
        let labels = node.metadata.labels.clone().unwrap_or_default();
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    match spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref()) {
        Some(required) => node_selector_matches(required, node),
        None => true,
    }
}

/// The first taint among those `applies` selects that no toleration
/// tolerates (upstream's `FindMatchingUntoleratedTaint`).
pub fn untolerated_taint<'a>(taints: &'a [Taint], tolerations: &[Toleration], applies: impl Fn(&Taint) -> bool) -> Option<&'a Taint> {
    taints.iter().filter(|t| applies(t)).find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

/// `pod`'s labels, or an empty map.
pub fn labels_of(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    #[test]
    fn selectors_follow_upstream_nil_and_empty_semantics() {
        assert!(!Selector::parse(None).unwrap().matches(None));
        let empty = LabelSelector::default();
        assert!(Selector::parse(Some(&empty)).unwrap().matches(None));
        assert!(selects_all(Some(&empty)));
        let s: LabelSelector = serde_json::from_value(json!({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["x"]}]})).unwrap();
        let sel = Selector::parse(Some(&s)).unwrap();
        let l = |v: serde_json::Value| serde_json::from_value::<BTreeMap<String, String>>(v).unwrap();
        assert!(sel.matches(Some(&l(json!({"a": "1"})))));
        assert!(!sel.matches(Some(&l(json!({"a": "1", "b": "x"})))));
        assert!(!sel.matches(Some(&l(json!({"a": "2"})))));
    }

    #[test]
    fn node_affinity_terms_and_fields() {
        let n = node("n1", json!({"zone": "a", "cores": "8"}));
        let ns = |v: serde_json::Value| serde_json::from_value::<NodeSelector>(v).unwrap();
        assert!(node_selector_matches(&ns(json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]})), &n));
        assert!(!node_selector_matches(&ns(json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]})), &n));
        assert!(node_selector_matches(&ns(json!({"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
            {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}, {"key": "gpu", "operator": "DoesNotExist"}]}]})), &n));
        assert!(!node_selector_matches(&ns(json!({"nodeSelectorTerms": [{}]})), &n), "an empty term matches nothing");
        let spec: PodSpec = serde_json::from_value(json!({"containers": [], "nodeSelector": {"zone": "b"}})).unwrap();
        assert!(!pod_spec_fits_node(&spec, &n));
    }

    #[test]
    fn untolerated_taints() {
        let taint: Taint = serde_json::from_value(json!({"key": "k", "value": "v", "effect": "NoSchedule"})).unwrap();
        let taints = vec![taint.clone()];
        let t: Toleration = serde_json::from_value(json!({"key": "k", "operator": "Exists"})).unwrap();
        assert!(untolerated_taint(&taints, &[t], |_| true).is_none());
        assert!(untolerated_taint(&taints, &[], |_| true).is_some());
        assert!(untolerated_taint(&taints, &[], |t| t.effect == "NoExecute").is_none());
    }
}
