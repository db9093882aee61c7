//! ResourceQuota accounting, shared by the API server's quota admission and
//! the resource quota controller so that both charge an object the same
//! (upstream's `pkg/quota/v1`: the evaluators of `evaluator/core` and the
//! resource-list arithmetic of `resources.go`).
//!
//! - [`Amount`]: a resource quantity with upstream's arithmetic and
//!   canonical formatting (`300m`, `192Mi`, `1k`), so `status.used` reads
//!   as upstream's does.
//! - [`matching_resources`] and [`usage`]: what an object of a resource
//!   consumes. Pods: `pods`, `count/pods`, `cpu`/`memory`/
//!   `ephemeral-storage` and their `requests.`/`limits.` forms, hugepages
//!   and extended resources (`requests.<name>`); a pod that finished or
//!   outlived its deletion grace period consumes only `count/pods`.
//!   Services: `services`, `services.nodeports`, `services.loadbalancers`.
//!   PersistentVolumeClaims: `persistentvolumeclaims`, `requests.storage`,
//!   and the `<class>.storageclass.storage.k8s.io/` forms. Everything:
//!   `count/<resource>[.<group>]`, and the legacy names `configmaps`,
//!   `secrets`, `replicationcontrollers`, `resourcequotas`.
//! - Scopes ([`quota_matches`]): `Terminating`, `NotTerminating`,
//!   `BestEffort`, `NotBestEffort`, `PriorityClass`,
//!   `CrossNamespacePodAffinity`, from `spec.scopes` or `spec.scopeSelector`.
//!   A quota with scopes only ever matches pods, as upstream.
//! - [`pod_constraints`]: a quota on cpu or memory requires every container
//!   to state it (`must specify ...`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{Container, PersistentVolumeClaim, Pod, ResourceQuota, ScopedResourceSelectorRequirement, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Quantities

/// How an amount prints, as upstream's `resource.Format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    DecimalSI,
    BinarySI,
    DecimalExponent,
}

/// A resource quantity in billionths (upstream keeps arbitrary precision;
/// nothing a quota counts is finer than `1n`), with its print format.
#[derive(Clone, Copy, Debug)]
pub struct Amount {
    nano: i128,
    format: Format,
}

const NANO: i128 = 1_000_000_000;

impl PartialEq for Amount {
    /// Semantic equality (`1Ki` == `1024`), as upstream's `quota.Equals`.
    fn eq(&self, other: &Self) -> bool {
        self.nano == other.nano
    }
}

impl Eq for Amount {}

impl PartialOrd for Amount {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Amount {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.nano.cmp(&other.nano)
    }
}

impl Amount {
    /// Zero, printed in `format` ("0").
    pub fn zero() -> Amount {
        Amount { nano: 0, format: Format::DecimalSI }
    }

    /// A count (`resource.NewQuantity(n, DecimalSI)`).
    pub fn count(n: i64) -> Amount {
        Amount { nano: i128::from(n) * NANO, format: Format::DecimalSI }
    }

    /// Parses a quantity string (`100m`, `1.5Gi`, `2e3`). `None` if invalid.
    pub fn parse(s: &str) -> Option<Amount> {
        let s = s.trim();
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut negative = false;
        if let Some(&c) = bytes.first()
            && (c == b'+' || c == b'-')
        {
            negative = c == b'-';
            i = 1;
        }
        let mut mantissa: i128 = 0;
        let mut frac_digits: i32 = 0;
        let (mut digits, mut dot) = (0, false);
        while i < bytes.len() {
            let c = bytes[i];
            if c.is_ascii_digit() {
                digits += 1;
                mantissa = mantissa.checked_mul(10)?.checked_add(i128::from(c - b'0'))?;
                if dot {
                    frac_digits += 1;
                }
            } else if c == b'.' && !dot {
                dot = true;
            } else {
                break;
            }
            i += 1;
        }
        if digits == 0 {
            return None;
        }
        let suffix = &s[i..];
        let (exp10, exp2, format): (i32, u32, Format) = match suffix {
            "" => (0, 0, Format::DecimalSI),
            "n" => (-9, 0, Format::DecimalSI),
            "u" => (-6, 0, Format::DecimalSI),
            "m" => (-3, 0, Format::DecimalSI),
            "k" => (3, 0, Format::DecimalSI),
            "M" => (6, 0, Format::DecimalSI),
            "G" => (9, 0, Format::DecimalSI),
            "T" => (12, 0, Format::DecimalSI),
            "P" => (15, 0, Format::DecimalSI),
            "E" => (18, 0, Format::DecimalSI),
            "Ki" => (0, 10, Format::BinarySI),
            "Mi" => (0, 20, Format::BinarySI),
            "Gi" => (0, 30, Format::BinarySI),
            "Ti" => (0, 40, Format::BinarySI),
            "Pi" => (0, 50, Format::BinarySI),
            "Ei" => (0, 60, Format::BinarySI),
            other if other.starts_with('e') || other.starts_with('E') => (other[1..].parse::<i32>().ok()?, 0, Format::DecimalExponent),
            _ => return None,
        };
        let mut v = mantissa.checked_mul(1i128 << exp2)?;
        let e10 = exp10 - frac_digits + 9;
        if e10 >= 0 {
            v = v.checked_mul(10i128.checked_pow(e10 as u32)?)?;
        } else {
            let div = 10i128.checked_pow((-e10) as u32)?;
            // Finer than a billionth: round up, as upstream's scaled values do.
            v = (v + div - 1) / div;
        }
        Some(Amount { nano: if negative { -v } else { v }, format })
    }

    /// A k8s-openapi quantity (`None` if it does not parse).
    pub fn of(q: &Quantity) -> Option<Amount> {
        Amount::parse(&q.0)
    }

    pub fn to_quantity(&self) -> Quantity {
        Quantity(self.to_string())
    }

    pub fn is_zero(&self) -> bool {
        self.nano == 0
    }

    pub fn is_negative(&self) -> bool {
        self.nano < 0
    }

    /// `Quantity.Add`: the sum keeps this amount's format, or takes the
    /// other's when this one is zero.
    pub fn add(&self, other: &Amount) -> Amount {
        let format = if self.nano == 0 { other.format } else { self.format };
        Amount { nano: self.nano.saturating_add(other.nano), format }
    }

    pub fn sub(&self, other: &Amount) -> Amount {
        let format = if self.nano == 0 { other.format } else { self.format };
        Amount { nano: self.nano.saturating_sub(other.nano), format }
    }

    /// The value in whole units, rounded up (`Quantity.Value()`).
    pub fn value(&self) -> i128 {
        if self.nano >= 0 { (self.nano + NANO - 1) / NANO } else { self.nano / NANO }
    }
}

const DECIMAL_SUFFIXES: [(i32, &str); 10] = [(18, "E"), (15, "P"), (12, "T"), (9, "G"), (6, "M"), (3, "k"), (0, ""), (-3, "m"), (-6, "u"), (-9, "n")];
const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

impl fmt::Display for Amount {
    /// Upstream's canonical form: the largest suffix that keeps the number
    /// an integer (`1500m` → `1500m`, `2000m` → `2`, `1000` → `1k`, `1536Mi`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nano == 0 {
            return f.write_str("0");
        }
        let sign = if self.nano < 0 { "-" } else { "" };
        let abs = self.nano.unsigned_abs();
        if self.format == Format::BinarySI && abs.is_multiple_of(NANO as u128) && abs / (NANO as u128) >= 1024 {
            let mut m = abs / NANO as u128;
            let mut e = 0;
            while e < 6 && m.is_multiple_of(1024) {
                m /= 1024;
                e += 1;
            }
            return write!(f, "{sign}{m}{}", BINARY_SUFFIXES[e]);
        }
        for (exp, suffix) in DECIMAL_SUFFIXES {
            let div = 10u128.pow((exp + 9) as u32);
            if abs.is_multiple_of(div) {
                let m = abs / div;
                return match self.format {
                    Format::DecimalExponent if exp != 0 => write!(f, "{sign}{m}e{exp}"),
                    Format::DecimalExponent => write!(f, "{sign}{m}"),
                    _ => write!(f, "{sign}{m}{suffix}"),
                };
            }
        }
        unreachable!("every amount is a whole number of billionths")
    }
}

/// A resource list (`status.used`, `status.hard`, an object's usage).
pub type Usage = BTreeMap<String, Amount>;

/// A resource list from the API (quantities that do not parse are left out).
pub fn usage_of(list: Option<&BTreeMap<String, Quantity>>) -> Usage {
    list.map(|l| l.iter().filter_map(|(k, q)| Some((k.clone(), Amount::of(q)?))).collect()).unwrap_or_default()
}

/// The API form of a resource list.
pub fn to_list(u: &Usage) -> BTreeMap<String, Quantity> {
    u.iter().map(|(k, v)| (k.clone(), v.to_quantity())).collect()
}

/// `quota.Add`.
pub fn add(a: &Usage, b: &Usage) -> Usage {
    let mut out = a.clone();
    for (k, v) in b {
        let sum = match out.get(k) {
            Some(x) => x.add(v),
            None => *v,
        };
        out.insert(k.clone(), sum);
    }
    out
}

/// `quota.Subtract`.
pub fn subtract(a: &Usage, b: &Usage) -> Usage {
    let mut out = a.clone();
    for (k, v) in b {
        let diff = match out.get(k) {
            Some(x) => x.sub(v),
            None => Amount::zero().sub(v),
        };
        out.insert(k.clone(), diff);
    }
    out
}

/// `quota.Mask`: only the named resources.
pub fn mask<'a>(u: &Usage, names: impl IntoIterator<Item = &'a String>) -> Usage {
    names.into_iter().filter_map(|n| Some((n.clone(), *u.get(n)?))).collect()
}

/// `quota.Equals`: the same resources with semantically equal amounts.
pub fn equals(a: &Usage, b: &Usage) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
}

/// `quota.LessThanOrEqual`: whether every resource of `a` that `b` limits
/// is within it; the resources that are not.
pub fn less_than_or_equal(a: &Usage, b: &Usage) -> (bool, Vec<String>) {
    let exceeded: Vec<String> = b.iter().filter(|(k, limit)| a.get(*k).map(|v| v > limit).unwrap_or(false)).map(|(k, _)| k.clone()).collect();
    (exceeded.is_empty(), exceeded)
}

/// `name=value,...` sorted by name, as upstream's admission messages print.
pub fn pretty_print(u: &Usage) -> String {
    u.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

// ---------------------------------------------------------------------------
// Evaluators: which resource names an object of a resource consumes.

/// `count/<resource>` for the core group, `count/<resource>.<group>` otherwise.
pub fn object_count_name(group: &str, resource: &str) -> String {
    if group.is_empty() { format!("count/{resource}") } else { format!("count/{resource}.{group}") }
}

/// The group and resource a `count/` name counts (`count/deployments.apps`
/// → (`apps`, `deployments`)); `None` for other names.
pub fn parse_object_count_name(name: &str) -> Option<(String, String)> {
    let gr = name.strip_prefix("count/")?;
    if gr.is_empty() {
        return None;
    }
    Some(match gr.split_once('.') {
        Some((resource, group)) => (group.to_string(), resource.to_string()),
        None => (String::new(), gr.to_string()),
    })
}

/// The pre-`count/` names of core objects counted by number only.
fn legacy_count_alias(group: &str, resource: &str) -> Option<&'static str> {
    if !group.is_empty() {
        return None;
    }
    match resource {
        "configmaps" => Some("configmaps"),
        "secrets" => Some("secrets"),
        "replicationcontrollers" => Some("replicationcontrollers"),
        "resourcequotas" => Some("resourcequotas"),
        _ => None,
    }
}

const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// Upstream's `IsExtendedResourceName`: outside `kubernetes.io/`, with a domain.
fn is_extended_resource_name(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.") && !name.starts_with("count/")
}

fn is_pod_resource(name: &str) -> bool {
    const POD_RESOURCES: [&str; 11] = [
        "pods",
        "count/pods",
        "cpu",
        "memory",
        "ephemeral-storage",
        "requests.cpu",
        "requests.memory",
        "requests.ephemeral-storage",
        "limits.cpu",
        "limits.memory",
        "limits.ephemeral-storage",
    ];
    POD_RESOURCES.contains(&name)
        || name.starts_with("hugepages-")
        || name.starts_with("requests.hugepages-")
        || name.strip_prefix("requests.").map(is_extended_resource_name).unwrap_or(false)
}

/// Upstream's `Evaluator.MatchingResources`: those of `names` that an
/// object of `group`/`resource` can consume.
pub fn matching_resources<'a>(group: &str, resource: &str, names: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let count = object_count_name(group, resource);
    let alias = legacy_count_alias(group, resource);
    names
        .into_iter()
        .filter(|n| {
            if **n == count || Some(n.as_str()) == alias {
                return true;
            }
            match (group, resource) {
                ("", "pods") => is_pod_resource(n),
                ("", "services") => matches!(n.as_str(), "services" | "services.nodeports" | "services.loadbalancers"),
                ("", "persistentvolumeclaims") => {
                    matches!(n.as_str(), "persistentvolumeclaims" | "requests.storage")
                        || n.split_once(STORAGE_CLASS_SUFFIX).map(|(_, r)| r == "requests.storage" || r == "persistentvolumeclaims").unwrap_or(false)
                }
                _ => false,
            }
        })
        .cloned()
        .collect()
}

/// Whether upstream has a dedicated evaluator for the resource, whose usage
/// depends on the object's content (the others count objects).
pub fn is_content_evaluated(group: &str, resource: &str) -> bool {
    group.is_empty() && matches!(resource, "pods" | "services" | "persistentvolumeclaims")
}

/// What one object consumes (upstream's `Evaluator.Usage`); `now` decides
/// whether a pod past its deletion grace period still counts.
pub fn usage(group: &str, resource: &str, obj: &Value, now: Timestamp) -> Result<Usage, String> {
    match (group, resource) {
        ("", "pods") => Ok(pod_usage(&serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?, now)),
        ("", "services") => Ok(service_usage(&serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?)),
        ("", "persistentvolumeclaims") => Ok(pvc_usage(&serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?)),
        _ => Ok(object_count_usage(group, resource)),
    }
}

/// An object counted by number only: its `count/` name and legacy alias.
pub fn object_count_usage(group: &str, resource: &str) -> Usage {
    let mut u = Usage::new();
    u.insert(object_count_name(group, resource), Amount::count(1));
    if let Some(alias) = legacy_count_alias(group, resource) {
        u.insert(alias.to_string(), Amount::count(1));
    }
    u
}

/// Upstream's `QuotaV1Pod`: whether a pod's compute resources count (it has
/// not finished, and has not outlived its deletion grace period).
pub fn pod_counts_for_compute(pod: &Pod, now: Timestamp) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" {
        return false;
    }
    if let (Some(ts), Some(grace)) = (&pod.metadata.deletion_timestamp, pod.metadata.deletion_grace_period_seconds)
        && now > ts.0 + SignedDuration::from_secs(grace)
    {
        return false;
    }
    true
}

fn container_list(c: &Container, limits: bool) -> Usage {
    let r = c.resources.as_ref();
    usage_of(if limits { r.and_then(|r| r.limits.as_ref()) } else { r.and_then(|r| r.requests.as_ref()) })
}

fn max_of(a: &Usage, b: &Usage) -> Usage {
    let mut out = a.clone();
    for (k, v) in b {
        match out.get(k) {
            Some(x) if x >= v => {}
            _ => {
                out.insert(k.clone(), *v);
            }
        }
    }
    out
}

/// Upstream's `resourcehelper.PodRequests`/`PodLimits`: the containers'
/// sum, at least each init container's (sidecars, `restartPolicy: Always`,
/// add to both), plus the pod overhead.
fn pod_resources(pod: &Pod, limits: bool) -> Usage {
    let Some(spec) = pod.spec.as_ref() else { return Usage::new() };
    let mut reqs = Usage::new();
    for c in &spec.containers {
        reqs = add(&reqs, &container_list(c, limits));
    }
    let mut sidecars = Usage::new();
    let mut init_max = Usage::new();
    for c in spec.init_containers.as_deref().unwrap_or(&[]) {
        let own = container_list(c, limits);
        let effective = if c.restart_policy.as_deref() == Some("Always") {
            reqs = add(&reqs, &own);
            sidecars = add(&sidecars, &own);
            sidecars.clone()
        } else {
            add(&own, &sidecars)
        };
        init_max = max_of(&init_max, &effective);
    }
    let mut out = max_of(&reqs, &init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        for (k, v) in usage_of(Some(overhead)) {
            if !limits || out.contains_key(&k) {
                let sum = out.get(&k).map(|x| x.add(&v)).unwrap_or(v);
                out.insert(k, sum);
            }
        }
    }
    out
}

/// Upstream's `podComputeUsageHelper`: the quota names for requests and limits.
fn compute_usage(requests: &Usage, limits: &Usage) -> Usage {
    let mut out = Usage::new();
    out.insert("pods".into(), Amount::count(1));
    for res in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(r) = requests.get(res) {
            out.insert(res.into(), *r);
            out.insert(format!("requests.{res}"), *r);
        }
        if let Some(l) = limits.get(res) {
            out.insert(format!("limits.{res}"), *l);
        }
    }
    for (name, r) in requests {
        if name.starts_with("hugepages-") {
            out.insert(name.clone(), *r);
            out.insert(format!("requests.{name}"), *r);
        } else if is_extended_resource_name(name) {
            out.insert(format!("requests.{name}"), *r);
        }
    }
    out
}

/// What a pod consumes: always `count/pods`; the rest while it runs.
pub fn pod_usage(pod: &Pod, now: Timestamp) -> Usage {
    let mut out = Usage::new();
    out.insert("count/pods".into(), Amount::count(1));
    if !pod_counts_for_compute(pod, now) {
        return out;
    }
    add(&out, &compute_usage(&pod_resources(pod, false), &pod_resources(pod, true)))
}

/// What a Service consumes: node ports for NodePort and LoadBalancer
/// services (those with a node port when `allocateLoadBalancerNodePorts`
/// is false), one load balancer for LoadBalancer services.
pub fn service_usage(svc: &Service) -> Usage {
    let mut out = Usage::new();
    out.insert("count/services".into(), Amount::count(1));
    out.insert("services".into(), Amount::count(1));
    out.insert("services.loadbalancers".into(), Amount::zero());
    out.insert("services.nodeports".into(), Amount::zero());
    let spec = svc.spec.clone().unwrap_or_default();
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    match spec.type_.as_deref() {
        Some("NodePort") => {
            out.insert("services.nodeports".into(), Amount::count(ports.len() as i64));
        }
        Some("LoadBalancer") => {
            let n = if spec.allocate_load_balancer_node_ports == Some(false) {
                ports.iter().filter(|p| p.node_port.unwrap_or(0) != 0).count()
            } else {
                ports.len()
            };
            out.insert("services.nodeports".into(), Amount::count(n as i64));
            out.insert("services.loadbalancers".into(), Amount::count(1));
        }
        _ => {}
    }
    out
}

/// What a PersistentVolumeClaim consumes: itself and its storage request
/// (the larger of the request and what a resize already allocated), also
/// under its storage class.
pub fn pvc_usage(pvc: &PersistentVolumeClaim) -> Usage {
    let mut out = Usage::new();
    out.insert("count/persistentvolumeclaims".into(), Amount::count(1));
    out.insert("persistentvolumeclaims".into(), Amount::count(1));
    let spec = pvc.spec.clone().unwrap_or_default();
    let class = spec
        .storage_class_name
        .clone()
        .or_else(|| pvc.metadata.annotations.as_ref().and_then(|a| a.get("volume.beta.kubernetes.io/storage-class").cloned()))
        .filter(|c| !c.is_empty());
    if let Some(c) = &class {
        out.insert(format!("{c}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"), Amount::count(1));
    }
    let requested = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).and_then(Amount::of);
    let allocated = pvc.status.as_ref().and_then(|s| s.allocated_resources.as_ref()).and_then(|r| r.get("storage")).and_then(Amount::of);
    let storage = match (requested, allocated) {
        (Some(r), Some(a)) => Some(r.max(a)),
        (r, a) => r.or(a),
    };
    if let Some(s) = storage {
        out.insert("requests.storage".into(), s);
        if let Some(c) = &class {
            out.insert(format!("{c}{STORAGE_CLASS_SUFFIX}requests.storage"), s);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Scopes

/// A quota's scopes as selector requirements: `spec.scopes` (each an
/// `Exists`) and `spec.scopeSelector.matchExpressions`.
pub fn scope_selectors(quota: &ResourceQuota) -> Vec<ScopedResourceSelectorRequirement> {
    let spec = quota.spec.clone().unwrap_or_default();
    let mut out: Vec<ScopedResourceSelectorRequirement> = spec
        .scopes
        .unwrap_or_default()
        .into_iter()
        .map(|s| ScopedResourceSelectorRequirement { scope_name: s, operator: "Exists".into(), values: None })
        .collect();
    if let Some(sel) = spec.scope_selector {
        out.extend(sel.match_expressions.unwrap_or_default());
    }
    out
}

fn is_best_effort(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return true };
    spec.containers.iter().chain(spec.init_containers.as_deref().unwrap_or(&[])).all(|c| {
        let r = c.resources.as_ref();
        let has = |l: Option<&BTreeMap<String, Quantity>>| {
            l.map(|l| ["cpu", "memory"].iter().any(|k| l.get(*k).and_then(Amount::of).map(|a| !a.is_zero()).unwrap_or(false))).unwrap_or(false)
        };
        !has(r.and_then(|r| r.requests.as_ref())) && !has(r.and_then(|r| r.limits.as_ref()))
    })
}

fn uses_cross_namespace_affinity(pod: &Pod) -> bool {
    let Some(aff) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else { return false };
    let mut terms = Vec::new();
    if let Some(a) = &aff.pod_affinity {
        terms.extend(a.required_during_scheduling_ignored_during_execution.clone().unwrap_or_default());
        terms.extend(a.preferred_during_scheduling_ignored_during_execution.clone().unwrap_or_default().into_iter().map(|w| w.pod_affinity_term));
    }
    if let Some(a) = &aff.pod_anti_affinity {
        terms.extend(a.required_during_scheduling_ignored_during_execution.clone().unwrap_or_default());
        terms.extend(a.preferred_during_scheduling_ignored_during_execution.clone().unwrap_or_default().into_iter().map(|w| w.pod_affinity_term));
    }
    terms.iter().any(|t| t.namespace_selector.is_some() || t.namespaces.as_ref().map(|n| !n.is_empty()).unwrap_or(false))
}

/// Upstream's `podMatchesScopeFunc`.
pub fn pod_matches_scope(sel: &ScopedResourceSelectorRequirement, pod: &Pod) -> bool {
    let spec = pod.spec.clone().unwrap_or_default();
    let terminating = spec.active_deadline_seconds.map(|d| d >= 0).unwrap_or(false);
    match sel.scope_name.as_str() {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => is_best_effort(pod),
        "NotBestEffort" => !is_best_effort(pod),
        "PriorityClass" => {
            let class = spec.priority_class_name.unwrap_or_default();
            let values = sel.values.as_deref().unwrap_or(&[]);
            match sel.operator.as_str() {
                "Exists" => !class.is_empty(),
                "In" => values.contains(&class),
                "NotIn" => !values.contains(&class),
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => uses_cross_namespace_affinity(pod),
        _ => false,
    }
}

/// Upstream's `Evaluator.Matches`: the quota limits something an object of
/// `group`/`resource` consumes (among `hard`: `status.hard` at admission,
/// `spec.hard` in the controller), and the object is in every scope. Only
/// pods have scopes; `pod` is the object when it is one.
pub fn quota_matches(quota: &ResourceQuota, hard: &BTreeMap<String, Quantity>, group: &str, resource: &str, pod: Option<&Pod>) -> bool {
    if matching_resources(group, resource, hard.keys()).is_empty() {
        return false;
    }
    scope_selectors(quota).iter().all(|s| match pod {
        Some(p) if group.is_empty() && resource == "pods" => pod_matches_scope(s, p),
        _ => false,
    })
}

/// Upstream's pod `Constraints`: if a quota limits cpu or memory (requests
/// or limits), every container must state it.
pub fn pod_constraints(required: &[String], pod: &Pod) -> Result<(), String> {
    const VALIDATED: [&str; 6] = ["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];
    let required: BTreeSet<&str> = required.iter().map(String::as_str).filter(|r| VALIDATED.contains(r)).collect();
    if required.is_empty() {
        return Ok(());
    }
    let Some(spec) = pod.spec.as_ref() else { return Ok(()) };
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for c in spec.containers.iter().chain(spec.init_containers.as_deref().unwrap_or(&[])) {
        let has = compute_usage(&container_list(c, false), &container_list(c, true));
        for r in &required {
            if !has.contains_key(*r) {
                missing.entry(r).or_default().insert(c.name.clone());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing.iter().map(|(r, names)| format!("{r} for: {}", names.iter().cloned().collect::<Vec<_>>().join(","))).collect();
    Err(format!("must specify {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn a(s: &str) -> Amount {
        Amount::parse(s).unwrap_or_else(|| panic!("{s} parses"))
    }

    #[test]
    fn amounts_print_canonically() {
        for (input, want) in [
            ("100m", "100m"),
            ("0.5", "500m"),
            ("2000m", "2"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("128Mi", "128Mi"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("1e3", "1e3"),
            ("0", "0"),
            ("1.5Gi", "1536Mi"),
        ] {
            assert_eq!(a(input).to_string(), want, "{input}");
        }
        assert_eq!(a("100m").add(&a("200m")).to_string(), "300m");
        assert_eq!(a("128Mi").add(&a("64Mi")).to_string(), "192Mi");
        assert_eq!(Amount::zero().add(&a("64Mi")).to_string(), "64Mi", "zero takes the other's format");
        assert_eq!(a("1Ki"), a("1024"));
        assert!(Amount::parse("1x").is_none() && Amount::parse("").is_none() && Amount::parse("m").is_none());
    }

    #[test]
    fn pod_usage_counts_requests_limits_and_init_containers() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "init", "image": "i", "resources": {"requests": {"cpu": "2"}}}],
            "containers": [
                {"name": "a", "image": "i", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}},
                {"name": "b", "image": "i", "resources": {"requests": {"cpu": "200m", "memory": "64Mi", "example.com/gpu": "1"}}}]}}))
        .unwrap();
        let u = pod_usage(&pod, Timestamp::now());
        assert_eq!(u["pods"].to_string(), "1");
        assert_eq!(u["count/pods"].to_string(), "1");
        assert_eq!(u["requests.cpu"].to_string(), "2", "the init container's larger request wins");
        assert_eq!(u["requests.memory"].to_string(), "192Mi");
        assert_eq!(u["limits.memory"].to_string(), "256Mi");
        assert_eq!(u["requests.example.com/gpu"].to_string(), "1");
        assert!(!u.contains_key("limits.cpu"));
        let mut done = pod.clone();
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        assert_eq!(pod_usage(&done, Timestamp::now()).keys().collect::<Vec<_>>(), ["count/pods"], "terminal pods only count as objects");
    }

    #[test]
    fn matching_and_scopes() {
        let names: Vec<String> = [
            "pods",
            "count/deployments.apps",
            "services.nodeports",
            "configmaps",
            "requests.storage",
            "gold.storageclass.storage.k8s.io/requests.storage",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(matching_resources("", "pods", &names), ["pods"]);
        assert_eq!(matching_resources("apps", "deployments", &names), ["count/deployments.apps"]);
        assert_eq!(matching_resources("", "services", &names), ["services.nodeports"]);
        assert_eq!(matching_resources("", "configmaps", &names), ["configmaps"]);
        assert_eq!(
            matching_resources("", "persistentvolumeclaims", &names),
            ["requests.storage", "gold.storageclass.storage.k8s.io/requests.storage"]
        );
        assert_eq!(parse_object_count_name("count/deployments.apps"), Some(("apps".into(), "deployments".into())));
        assert_eq!(parse_object_count_name("count/secrets"), Some(("".into(), "secrets".into())));

        let quota: ResourceQuota =
            serde_json::from_value(json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2"}, "scopes": ["BestEffort"]}})).unwrap();
        let hard = quota.spec.clone().unwrap().hard.unwrap();
        let best: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "image": "i"}]}})).unwrap();
        let burst: Pod =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}]}})).unwrap();
        assert!(quota_matches(&quota, &hard, "", "pods", Some(&best)));
        assert!(!quota_matches(&quota, &hard, "", "pods", Some(&burst)));
        let svc_quota: ResourceQuota = serde_json::from_value(json!({"spec": {"hard": {"services": "2"}, "scopes": ["NotTerminating"]}})).unwrap();
        let svc_hard = svc_quota.spec.clone().unwrap().hard.unwrap();
        assert!(!quota_matches(&svc_quota, &svc_hard, "", "services", None), "scoped quotas only match pods");
    }

    #[test]
    fn services_and_constraints() {
        let svc: Service = serde_json::from_value(json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}})).unwrap();
        let u = service_usage(&svc);
        assert_eq!(
            (u["services"].to_string(), u["services.nodeports"].to_string(), u["services.loadbalancers"].to_string()),
            ("1".into(), "2".into(), "0".into())
        );
        let pod: Pod = serde_json::from_value(json!({"spec": {"containers": [
            {"name": "a", "image": "i", "resources": {"requests": {"cpu": "1"}}}, {"name": "b", "image": "i"}]}}))
        .unwrap();
        assert_eq!(pod_constraints(&["requests.cpu".into(), "pods".into()], &pod), Err("must specify requests.cpu for: b".into()));
        assert_eq!(pod_constraints(&["limits.memory".into(), "cpu".into()], &pod), Err("must specify cpu for: b; limits.memory for: a,b".into()));
        assert!(pod_constraints(&["pods".into()], &pod).is_ok());
    }

    #[test]
    fn arithmetic_and_printing() {
        let used: Usage = [("pods".to_string(), Amount::count(2))].into();
        let hard: Usage = [("pods".to_string(), Amount::count(2)), ("services".to_string(), Amount::count(1))].into();
        let req: Usage = [("pods".to_string(), Amount::count(1))].into();
        let new = add(&used, &req);
        assert_eq!(less_than_or_equal(&new, &hard), (false, vec!["pods".to_string()]));
        assert!(less_than_or_equal(&used, &hard).0);
        assert_eq!(pretty_print(&hard), "pods=2,services=1");
        assert!(equals(&mask(&hard, &["pods".to_string()]), &used));
        assert_eq!(subtract(&used, &req)["pods"].to_string(), "1");
    }
}
