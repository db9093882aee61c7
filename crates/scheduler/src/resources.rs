//! Resource quantities and a pod's resource requests, as upstream's
//! `framework.Resource` and `component-helpers/resource.PodRequests` compute
//! them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// Default request of a container without a cpu request, for scoring only
/// (upstream's `DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Default request of a container without a memory request, for scoring
/// only (upstream's `DefaultMemoryRequest`, 200Mi).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// A parsed quantity scaled by `10^scale` and rounded up, saturating at the
/// bounds of i64. `None` if the string is not a valid quantity.
fn parse_scaled(s: &str, scale: i32) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if bytes[0] == b'+' || bytes[0] == b'-' {
        negative = bytes[0] == b'-';
        i = 1;
    }
    let mut mantissa: i128 = 0;
    let mut frac_digits: i32 = 0;
    let mut seen_digit = false;
    let mut seen_dot = false;
    let mut dropped: i32 = 0; // digits beyond i128's precision (integer part)
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_digit() {
            seen_digit = true;
            if mantissa < 10_i128.pow(30) {
                mantissa = mantissa * 10 + i128::from(c - b'0');
                if seen_dot {
                    frac_digits += 1;
                }
            } else if !seen_dot {
                dropped += 1;
            }
        } else if c == b'.' && !seen_dot {
            seen_dot = true;
        } else {
            break;
        }
        i += 1;
    }
    if !seen_digit {
        return None;
    }
    let suffix = &s[i..];
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other if other.starts_with('e') || other.starts_with('E') => (other[1..].parse::<i32>().ok()?, 0),
        _ => return None,
    };
    let e10 = exp10 - frac_digits + dropped + scale;
    let mut v: i128 = mantissa;
    v = v.checked_mul(1_i128 << exp2).unwrap_or(i128::MAX);
    if e10 >= 0 {
        for _ in 0..e10 {
            v = v.checked_mul(10).unwrap_or(i128::MAX);
            if v == i128::MAX {
                break;
            }
        }
    } else {
        let mut div: i128 = 1;
        for _ in 0..(-e10) {
            div = match div.checked_mul(10) {
                Some(d) => d,
                None => return Some(if mantissa == 0 || negative { 0 } else { 1 }),
            };
        }
        // Round up (away from zero), as Quantity.Value()/MilliValue() do.
        v = (v + div - 1) / div;
    }
    let v = v.min(i128::from(i64::MAX));
    let v = v as i64;
    Some(if negative { -v } else { v })
}

/// `Quantity.Value()`: the value rounded up to an integer. Invalid quantities are 0.
pub fn quantity_value(q: &Quantity) -> i64 {
    parse_scaled(&q.0, 0).unwrap_or(0)
}

/// `Quantity.MilliValue()`: the value in thousandths, rounded up.
pub fn quantity_milli_value(q: &Quantity) -> i64 {
    parse_scaled(&q.0, 3).unwrap_or(0)
}

/// Parses a quantity string (for tests and validation).
pub fn parse_quantity(s: &str) -> Option<i64> {
    parse_scaled(s, 0)
}

/// Upstream's `IsScalarResourceName`: extended, hugepages, prefixed native
/// and attachable-volume resources.
pub fn is_scalar_resource_name(name: &str) -> bool {
    is_extended_resource_name(name)
        || name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
        || (name.contains('/') && name.contains("kubernetes.io/"))
}

/// Upstream's `IsExtendedResourceName`: a domain-prefixed name outside
/// `kubernetes.io/`, not a quota `requests.` name.
pub fn is_extended_resource_name(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// Upstream's `framework.Resource`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)] // the scalars every filter reads first, together (see NodeInfo)
pub struct Resource {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pod_number: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resource {
    /// A resource list (`status.allocatable`, container requests) in
    /// canonical units: cpu in millicores, everything else as values.
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resource {
        let mut r = Resource::default();
        if let Some(list) = list {
            for (name, q) in list {
                r.add_quantity(name, q);
            }
        }
        r
    }

    fn add_quantity(&mut self, name: &str, q: &Quantity) {
        match name {
            CPU => self.milli_cpu += quantity_milli_value(q),
            MEMORY => self.memory += quantity_value(q),
            EPHEMERAL_STORAGE => self.ephemeral_storage += quantity_value(q),
            PODS => self.allowed_pod_number += quantity_value(q),
            other if is_scalar_resource_name(other) => *self.scalar.entry(other.to_string()).or_insert(0) += quantity_value(q),
            _ => {}
        }
    }

    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.allowed_pod_number += other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) += v;
        }
    }

    pub fn sub(&mut self, other: &Resource) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.allowed_pod_number -= other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// Element-wise maximum.
    pub fn set_max(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.allowed_pod_number = self.allowed_pod_number.max(other.allowed_pod_number);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    /// The amount of a named resource (0 if absent).
    pub fn get(&self, name: &str) -> i64 {
        match name {
            CPU => self.milli_cpu,
            MEMORY => self.memory,
            EPHEMERAL_STORAGE => self.ephemeral_storage,
            PODS => self.allowed_pod_number,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }

    pub fn is_zero_request(&self) -> bool {
        self.milli_cpu == 0 && self.memory == 0 && self.ephemeral_storage == 0 && self.scalar.values().all(|v| *v == 0)
    }
}

/// A node's allocatable resources.
pub fn node_allocatable(node: &Node) -> Resource {
    Resource::from_list(node.status.as_ref().and_then(|s| s.allocatable.as_ref()))
}

fn container_requests(c: &Container, non_missing: bool) -> Resource {
    let mut r = Resource::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
    if non_missing {
        let reqs = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        if !reqs.map(|m| m.contains_key(CPU)).unwrap_or(false) {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !reqs.map(|m| m.contains_key(MEMORY)).unwrap_or(false) {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

fn is_restartable_init(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Upstream's `PodRequests`: the sum of the app containers' requests,
/// restartable (sidecar) init containers added, the max rule for init
/// containers, plus the pod overhead. With `non_missing`, containers
/// without cpu/memory requests count the scoring defaults (100m, 200Mi).
pub fn pod_requests(pod: &Pod, non_missing: bool) -> Resource {
    let Some(spec) = pod.spec.as_ref() else { return Resource::default() };
    let mut reqs = Resource::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_missing));
    }
    let mut restartable = Resource::default();
    let mut init_max = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let creqs = container_requests(c, non_missing);
        let use_reqs = if is_restartable_init(c) {
            reqs.add(&creqs);
            restartable.add(&creqs);
            restartable.clone()
        } else {
            let mut tmp = creqs;
            tmp.add(&restartable);
            tmp
        };
        init_max.set_max(&use_reqs);
    }
    reqs.set_max(&init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        reqs.add(&Resource::from_list(Some(overhead)));
    }
    reqs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::PodBuilder;

    #[test]
    fn quantities() {
        assert_eq!(parse_scaled("1", 3), Some(1000));
        assert_eq!(parse_scaled("100m", 3), Some(100));
        assert_eq!(parse_scaled("0.5", 3), Some(500));
        assert_eq!(parse_scaled("1.5", 0), Some(2));
        assert_eq!(parse_scaled("1Ki", 0), Some(1024));
        assert_eq!(parse_scaled("1Gi", 0), Some(1 << 30));
        assert_eq!(parse_scaled("2G", 0), Some(2_000_000_000));
        assert_eq!(parse_scaled("1e3", 0), Some(1000));
        assert_eq!(parse_scaled("1E3", 0), Some(1000));
        assert_eq!(parse_scaled("1m", 0), Some(1));
        assert_eq!(parse_scaled("1u", 3), Some(1));
        assert_eq!(parse_scaled("250n", 3), Some(1));
        assert_eq!(parse_scaled("abc", 0), None);
        assert_eq!(parse_scaled("1Zi", 0), None);
        assert_eq!(parse_scaled("100Ei", 0), Some(i64::MAX));
    }

    #[test]
    fn pod_requests_sum_containers_max_init_and_overhead() {
        let pod = PodBuilder::new("p")
            .container_req(&[("cpu", "100m"), ("memory", "100Mi")])
            .container_req(&[("cpu", "200m")])
            .init_container_req(&[("cpu", "500m"), ("memory", "50Mi")], false)
            .overhead(&[("cpu", "10m")])
            .build();
        let r = pod_requests(&pod, false);
        assert_eq!(r.milli_cpu, 510);
        assert_eq!(r.memory, 100 * 1024 * 1024);
        let nz = pod_requests(&pod, true);
        // The second container has no memory request: 200Mi by default.
        assert_eq!(nz.memory, 300 * 1024 * 1024);
    }

    #[test]
    fn sidecar_init_containers_accumulate() {
        let pod = PodBuilder::new("p")
            .container_req(&[("cpu", "100m")])
            .init_container_req(&[("cpu", "200m")], true)
            .init_container_req(&[("cpu", "250m")], false)
            .build();
        // app 100 + sidecar 200 = 300; the init container runs next to the
        // sidecar: 250 + 200 = 450 > 300.
        assert_eq!(pod_requests(&pod, false).milli_cpu, 450);
    }
}
