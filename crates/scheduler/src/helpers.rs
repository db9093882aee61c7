//! Shared helpers on API objects: label selectors, node selectors,
//! tolerations and pod accessors, with upstream's semantics.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

static EMPTY_LABELS: Labels = BTreeMap::new();

/// The labels of an object's metadata (empty if none).
pub fn labels_of(labels: &Option<Labels>) -> &Labels {
    labels.as_ref().unwrap_or(&EMPTY_LABELS)
}

pub fn node_labels(node: &Node) -> &Labels {
    labels_of(&node.metadata.labels)
}

pub fn pod_labels(pod: &Pod) -> &Labels {
    labels_of(&pod.metadata.labels)
}

/// Operator of a label requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self.op {
            Op::In => labels.get(&self.key).map(|v| self.values.iter().any(|x| x == v)).unwrap_or(false),
            Op::NotIn => labels.get(&self.key).map(|v| !self.values.iter().any(|x| x == v)).unwrap_or(true),
            Op::Exists => labels.contains_key(&self.key),
            Op::DoesNotExist => !labels.contains_key(&self.key),
        }
    }
}

/// A parsed label selector: upstream's `labels.Selector` as produced by
/// `metav1.LabelSelectorAsSelector` (a nil selector selects nothing, an
/// empty one everything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Nothing,
    Requirements(Vec<Requirement>),
}

impl Selector {
    pub fn everything() -> Selector {
        Selector::Requirements(Vec::new())
    }

    /// `metav1.LabelSelectorAsSelector`.
    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Result<Selector, String> {
        let Some(sel) = sel else { return Ok(Selector::Nothing) };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement { key: k.clone(), op: Op::In, values: vec![v.clone()] });
        }
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            if matches!(op, Op::In | Op::NotIn) && values.is_empty() {
                return Err(format!("for 'in', 'notin' operators, values set can't be empty (key {})", e.key));
            }
            if matches!(op, Op::Exists | Op::DoesNotExist) && !values.is_empty() {
                return Err(format!("values set must be empty for exists and does not exist (key {})", e.key));
            }
            reqs.push(Requirement { key: e.key.clone(), op, values });
        }
        Ok(Selector::Requirements(reqs))
    }

    /// Like `from_label_selector`, but an invalid selector selects nothing.
    pub fn from_label_selector_lossy(sel: Option<&LabelSelector>) -> Selector {
        Selector::from_label_selector(sel).unwrap_or(Selector::Nothing)
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Selector::Nothing => false,
            Selector::Requirements(reqs) => reqs.iter().all(|r| r.matches(labels)),
        }
    }

    /// `labels.Selector.Empty()`: true for the selector that selects everything.
    pub fn is_empty(&self) -> bool {
        matches!(self, Selector::Requirements(r) if r.is_empty())
    }

    pub fn add(&mut self, r: Requirement) {
        if let Selector::Requirements(reqs) = self {
            reqs.push(r);
        }
    }
}

// ---------------------------------------------------------------------------
// Node selectors (node affinity, nodeSelector).

fn node_requirement_matches(req: &NodeSelectorRequirement, labels: &Labels) -> Result<bool, ()> {
    let values = req.values.as_deref().unwrap_or(&[]);
    match req.operator.as_str() {
        "In" => {
            if values.is_empty() {
                return Err(());
            }
            Ok(labels.get(&req.key).map(|v| values.iter().any(|x| x == v)).unwrap_or(false))
        }
        "NotIn" => {
            if values.is_empty() {
                return Err(());
            }
            Ok(labels.get(&req.key).map(|v| !values.iter().any(|x| x == v)).unwrap_or(true))
        }
        "Exists" => {
            if !values.is_empty() {
                return Err(());
            }
            Ok(labels.contains_key(&req.key))
        }
        "DoesNotExist" => {
            if !values.is_empty() {
                return Err(());
            }
            Ok(!labels.contains_key(&req.key))
        }
        op @ ("Gt" | "Lt") => {
            if values.len() != 1 {
                return Err(());
            }
            let bound: i64 = values[0].parse().map_err(|_| ())?;
            let Some(v) = labels.get(&req.key) else { return Ok(false) };
            let Ok(v) = v.parse::<i64>() else { return Ok(false) };
            Ok(if op == "Gt" { v > bound } else { v < bound })
        }
        _ => Err(()),
    }
}

fn field_requirement_matches(req: &NodeSelectorRequirement, node_name: &str) -> Result<bool, ()> {
    if req.key != "metadata.name" {
        return Err(());
    }
    let values = req.values.as_deref().unwrap_or(&[]);
    match req.operator.as_str() {
        "In" if values.len() == 1 => Ok(values[0] == node_name),
        "NotIn" if values.len() == 1 => Ok(values[0] != node_name),
        _ => Err(()),
    }
}

/// One node selector term: its label expressions and field expressions are
/// ANDed; an empty term matches nothing; an invalid one matches nothing.
pub fn node_selector_term_matches(term: &NodeSelectorTerm, labels: &Labels, node_name: &str) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    for r in exprs {
        match node_requirement_matches(r, labels) {
            Ok(true) => {}
            _ => return false,
        }
    }
    for r in fields {
        match field_requirement_matches(r, node_name) {
            Ok(true) => {}
            _ => return false,
        }
    }
    true
}

/// Node selector terms are ORed.
pub fn node_selector_terms_match(terms: &[NodeSelectorTerm], node: &Node) -> bool {
    let labels = node_labels(node);
    let name = node.metadata.name.as_deref().unwrap_or("");
    terms.iter().any(|t| node_selector_term_matches(t, labels, name))
}

/// Upstream's `nodeaffinity.RequiredNodeAffinity`: the pod's nodeSelector
/// and its required node affinity terms, both of which must match.
#[derive(Clone, Debug, Default)]
pub struct RequiredNodeAffinity {
    node_selector: Option<Labels>,
    terms: Option<Vec<NodeSelectorTerm>>,
}

impl RequiredNodeAffinity {
    pub fn from_pod(pod: &Pod) -> RequiredNodeAffinity {
        let spec = pod.spec.as_ref();
        let node_selector = spec.and_then(|s| s.node_selector.clone()).filter(|m| !m.is_empty());
        let terms = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref())
            .map(|ns| ns.node_selector_terms.clone());
        RequiredNodeAffinity { node_selector, terms }
    }

    pub fn is_empty(&self) -> bool {
        self.node_selector.is_none() && self.terms.is_none()
    }

    pub fn matches(&self, node: &Node) -> bool {
        if let Some(sel) = &self.node_selector {
            let labels = node_labels(node);
            if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                return false;
            }
        }
        if let Some(terms) = &self.terms {
            return node_selector_terms_match(terms, node);
        }
        true
    }
}

// ---------------------------------------------------------------------------
// Taints and tolerations.

pub fn tolerations_tolerate_taint(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tug_api::taints::tolerates(t, taint))
}

/// The first taint passing `filter` that no toleration tolerates.
pub fn find_matching_untolerated_taint<'a>(taints: &'a [Taint], tolerations: &[Toleration], filter: impl Fn(&Taint) -> bool) -> Option<&'a Taint> {
    taints.iter().filter(|t| filter(t)).find(|t| !tolerations_tolerate_taint(tolerations, t))
}

pub fn node_taints(node: &Node) -> &[Taint] {
    node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[])
}

/// The node's `spec.unschedulable` (cordoned).
pub fn node_unschedulable(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
}

pub fn pod_tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or(&[])
}

// ---------------------------------------------------------------------------
// Pods.

pub fn pod_priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

pub fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

pub fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

/// `namespace/name`.
pub fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod_namespace(pod), pod_name(pod))
}

/// The pod's UID (its key if it has none, as in constructed test pods).
pub fn pod_uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().filter(|u| !u.is_empty()).unwrap_or_else(|| pod_key(pod))
}

pub fn pod_node_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

pub fn is_assigned(pod: &Pod) -> bool {
    !pod_node_name(pod).is_empty()
}

pub fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

pub fn nominated_node_name(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).unwrap_or("")
}

pub fn scheduler_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).filter(|s| !s.is_empty()).unwrap_or("default-scheduler")
}

/// `status.startTime`, if the kubelet set one.
pub fn pod_start_time(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0)
}

/// Upstream's `MoreImportantPod`: higher priority first, then the pod that
/// started earlier (a pod that has not started counts as starting now).
pub fn more_important_pod(a: &Pod, b: &Pod) -> bool {
    let (pa, pb) = (pod_priority(a), pod_priority(b));
    if pa != pb {
        return pa > pb;
    }
    let now = jiff::Timestamp::now();
    pod_start_time(a).unwrap_or(now) < pod_start_time(b).unwrap_or(now)
}

/// Upstream's `podTerminatingByPreemption`: being deleted, with a
/// DisruptionTarget condition set by the scheduler's preemption.
pub fn terminating_by_preemption(pod: &Pod) -> bool {
    is_terminating(pod)
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| cs.iter().any(|c| c.type_ == "DisruptionTarget" && c.status == "True" && c.reason.as_deref() == Some("PreemptionByScheduler")))
            .unwrap_or(false)
}

/// Drops from a pod what no scheduling plugin reads, before the scheduler
/// keeps it (upstream's informers run a transform on every object for the
/// same reason). Kept whole, a Deployment's pod is 16.8 KB of k8s-openapi
/// structs here, most of it its projected service-account volume (5.5 KB),
/// its container statuses (3 KB) and its volume mounts: the scheduler held
/// 2.2 GB at 150,000 pods.
///
/// Kept: the metadata but annotations and managedFields; the spec but the
/// volumes that name no claim and the containers' command, environment,
/// mounts, probes, hooks and security context (their names, images, ports,
/// resources and restart policy stay); the status but the container
/// statuses. Safe because the scheduler never writes back a pod it holds:
/// its writes are bindings, patches built from scratch and deletes by uid.
pub fn trim_for_scheduling(pod: &mut Pod) {
    pod.metadata.annotations = None;
    pod.metadata.managed_fields = None;
    if let Some(spec) = pod.spec.as_mut() {
        if let Some(volumes) = spec.volumes.as_mut() {
            volumes.retain(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
            if volumes.is_empty() {
                spec.volumes = None;
            } else {
                volumes.shrink_to_fit();
            }
        }
        for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
            c.command = None;
            c.args = None;
            c.env = None;
            c.env_from = None;
            c.volume_mounts = None;
            c.volume_devices = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
            c.lifecycle = None;
            c.security_context = None;
            c.termination_message_path = None;
            c.working_dir = None;
        }
        // Ephemeral containers have no resources and no ports.
        spec.ephemeral_containers = None;
    }
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use std::sync::Arc;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// A Deployment's pod as the watch delivers it, with a claim, a host
    /// port, affinity and a nomination besides the usual volumes, mounts and
    /// statuses: trimmed, every input of scheduling is as before, and what
    /// no plugin reads is gone.
    #[test]
    fn trimming_keeps_every_scheduling_input() {
        let full: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "ns", "uid": "u1", "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-28T00:00:00Z"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs", "controller": true}]},
            "spec": {
                "volumes": [
                    {"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-1"}},
                    {"name": "cache", "emptyDir": {}}],
                "initContainers": [{"name": "init", "image": "busybox", "command": ["true"], "restartPolicy": "Always",
                    "resources": {"requests": {"cpu": "200m"}}}],
                "containers": [{"name": "web", "image": "nginx", "command": ["nginx"], "args": ["-g"],
                    "env": [{"name": "A", "value": "1"}], "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"port": 80}},
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}],
                "nodeSelector": {"disk": "ssd"},
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}},
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"app": "web"}}}],
                "overhead": {"cpu": "10m"},
                "priority": 100, "schedulerName": "default-scheduler", "nodeName": "n1"},
            "status": {"phase": "Running", "nominatedNodeName": "n2", "startTime": "2026-11-28T00:00:01Z",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "web", "image": "nginx", "imageID": "", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-11-28T00:00:01Z"}}}]}
        }))
        .unwrap();
        let mut trimmed = full.clone();
        trim_for_scheduling(&mut trimmed);

        let (a, b) = (crate::framework::PodInfo::new(Arc::new(full.clone())), crate::framework::PodInfo::new(Arc::new(trimmed.clone())));
        assert_eq!((a.requests.clone(), a.non_zero_requests.clone(), a.host_ports.clone()), (b.requests.clone(), b.non_zero_requests.clone(), b.host_ports.clone()));
        assert_eq!(a.required_anti_affinity_terms.len(), 1);
        assert_eq!(b.required_anti_affinity_terms.len(), 1);
        assert_eq!((a.priority, a.uid.as_str()), (b.priority, b.uid.as_str()));
        let (fs, ts) = (full.spec.as_ref().unwrap(), trimmed.spec.as_ref().unwrap());
        assert_eq!((&fs.node_selector, &fs.affinity, &fs.tolerations), (&ts.node_selector, &ts.affinity, &ts.tolerations));
        assert_eq!((&fs.topology_spread_constraints, &fs.overhead, &fs.node_name), (&ts.topology_spread_constraints, &ts.overhead, &ts.node_name));
        assert_eq!((scheduler_name(&full), pod_key(&full)), (scheduler_name(&trimmed), pod_key(&trimmed)));
        assert_eq!((&full.metadata.labels, &full.metadata.owner_references), (&trimmed.metadata.labels, &trimmed.metadata.owner_references));
        let (c, tc) = (&fs.containers[0], &ts.containers[0]);
        assert_eq!((&c.name, &c.image, &c.ports, &c.resources), (&tc.name, &tc.image, &tc.ports, &tc.resources));
        assert_eq!(ts.init_containers.as_ref().unwrap()[0].restart_policy.as_deref(), Some("Always"));
        let claims: Vec<_> = ts.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert_eq!(claims, ["data"]);
        let (st, tst) = (full.status.as_ref().unwrap(), trimmed.status.as_ref().unwrap());
        assert_eq!((&st.phase, &st.nominated_node_name, &st.start_time, &st.conditions), (&tst.phase, &tst.nominated_node_name, &tst.start_time, &tst.conditions));

        assert_eq!(trimmed.metadata.annotations, None);
        assert_eq!((&tc.command, &tc.args, &tc.env, &tc.volume_mounts, &tc.readiness_probe), (&None, &None, &None, &None, &None));
        assert_eq!(ts.init_containers.as_ref().unwrap()[0].command, None);
        assert_eq!(tst.container_statuses, None);
        // And it did shrink: what is gone is most of the pod.
        let size = |p: &Pod| serde_json::to_string(p).unwrap().len();
        assert!(size(&trimmed) < size(&full) * 3 / 4, "{} of {} bytes", size(&trimmed), size(&full));
    }

    #[test]
    fn label_selector_semantics() {
        assert!(!Selector::from_label_selector(None).unwrap().matches(&labels(&[])));
        let empty = Selector::from_label_selector(Some(&LabelSelector::default())).unwrap();
        assert!(empty.is_empty() && empty.matches(&labels(&[("a", "b")])));
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement { key: "tier".into(), operator: "NotIn".into(), values: Some(vec!["db".into()]) }]),
        };
        let s = Selector::from_label_selector(Some(&sel)).unwrap();
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "api")])));
        let bad = LabelSelector { match_expressions: Some(vec![LabelSelectorRequirement { key: "k".into(), operator: "Foo".into(), values: None }]), ..Default::default() };
        assert!(Selector::from_label_selector(Some(&bad)).is_err());
    }

    #[test]
    fn node_selector_operators() {
        let l = labels(&[("zone", "a"), ("cores", "8")]);
        let req = |key: &str, op: &str, vals: &[&str]| NodeSelectorRequirement { key: key.into(), operator: op.into(), values: if vals.is_empty() { None } else { Some(vals.iter().map(|s| s.to_string()).collect()) } };
        let term = |reqs: Vec<NodeSelectorRequirement>| NodeSelectorTerm { match_expressions: Some(reqs), match_fields: None };
        assert!(node_selector_term_matches(&term(vec![req("zone", "In", &["a", "b"])]), &l, "n"));
        assert!(!node_selector_term_matches(&term(vec![req("zone", "NotIn", &["a"])]), &l, "n"));
        assert!(node_selector_term_matches(&term(vec![req("cores", "Gt", &["4"])]), &l, "n"));
        assert!(!node_selector_term_matches(&term(vec![req("cores", "Lt", &["4"])]), &l, "n"));
        assert!(node_selector_term_matches(&term(vec![req("gpu", "DoesNotExist", &[])]), &l, "n"));
        // Invalid requirement: the term matches nothing.
        assert!(!node_selector_term_matches(&term(vec![req("zone", "In", &[])]), &l, "n"));
        // Empty term matches nothing.
        assert!(!node_selector_term_matches(&NodeSelectorTerm::default(), &l, "n"));
        let fields = NodeSelectorTerm { match_expressions: None, match_fields: Some(vec![req("metadata.name", "In", &["n"])]) };
        assert!(node_selector_term_matches(&fields, &l, "n"));
        assert!(!node_selector_term_matches(&fields, &l, "m"));
    }
}
