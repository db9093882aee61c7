//! ControllerRevisions, as the DaemonSet and StatefulSet controllers keep
//! them (upstream's `pkg/controller/history` and the DaemonSet's own
//! history code).
//!
//! A revision's `data` is upstream's patch that restores the pod template:
//! `{"spec":{"template":{...,"$patch":"replace"}}}`, serialized like Go's
//! `encoding/json` marshals a `map[string]interface{}` (keys sorted at
//! every level), so equal templates give byte-equal data. Revisions are
//! labelled `controller-revision-hash`, which the owner's pods carry too.
//!
//! Hashes: upstream hashes Go's printed structs (DaemonSets) or the data
//! bytes (StatefulSets) with FNV-32; Tugboat hashes canonical JSON with the
//! same functions and encodes the number as upstream's `SafeEncodeString`,
//! so names look alike (`web-5d8c7b9f6`) and are stable across restarts,
//! but are not the same strings upstream would produce.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, PostParams};
use serde_json::{Map, Value};

use crate::pod_control::is_conflict;

/// The label with a revision's hash, on revisions and on pods.
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";

const FNV32_OFFSET: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;

/// FNV-1a, 32 bits (Go's `fnv.New32a`).
pub fn fnv32a(data: &[u8], mut h: u32) -> u32 {
    for b in data {
        h ^= *b as u32;
        h = h.wrapping_mul(FNV32_PRIME);
    }
    h
}

/// FNV-1, 32 bits (Go's `fnv.New32`).
pub fn fnv32(data: &[u8], mut h: u32) -> u32 {
    for b in data {
        h = h.wrapping_mul(FNV32_PRIME);
        h ^= *b as u32;
    }
    h
}

/// Upstream's `rand.SafeEncodeString`.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes().map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char).collect()
}

/// Sorts object keys at every level (Go's marshalling of maps).
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, canonical(v))).collect();
            let mut out = Map::new();
            for (k, v) in sorted {
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Go's `json.Marshal` of a decoded document: sorted keys, compact, and
/// `<`, `>`, `&`, U+2028, U+2029 escaped as Go does.
pub fn go_json(v: &Value) -> Vec<u8> {
    let s = serde_json::to_string(&canonical(v)).unwrap_or_default();
    s.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026").replace('\u{2028}', "\\u2028").replace('\u{2029}', "\\u2029").into_bytes()
}

fn template_json(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(m) = t.as_object_mut() {
        // Go writes a template's zero creation time as null.
        let meta = m.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.entry("creationTimestamp").or_insert(Value::Null);
        }
    }
    t
}

/// Upstream's `getPatch` for DaemonSets and StatefulSets: the patch that
/// replaces `spec.template` with this one.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = template_json(template);
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), Value::String("replace".into()));
    }
    canonical(&serde_json::json!({"spec": {"template": t}}))
}

/// Upstream's `controller.ComputeHash` (the DaemonSet's revision hash, and
/// the Deployment's `pod-template-hash`): FNV-32a of the template, then the
/// collision count's little-endian bytes.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = go_json(&template_json(template));
    let mut h = fnv32a(&json, FNV32_OFFSET);
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(c as u32).to_le_bytes());
        h = fnv32a(&bytes, h);
    }
    safe_encode(&h.to_string())
}

/// Upstream's `history.HashControllerRevision`: FNV-32 of the data, then
/// the collision count in decimal.
pub fn hash_revision_data(data: &Value, probe: Option<i32>) -> String {
    let mut h = fnv32(&go_json(data), FNV32_OFFSET);
    if let Some(p) = probe {
        h = fnv32(p.to_string().as_bytes(), h);
    }
    safe_encode(&h.to_string())
}

/// Upstream's `ControllerRevisionName`.
pub fn revision_name(prefix: &str, hash: &str) -> String {
    let prefix = if prefix.len() > 223 { &prefix[..223] } else { prefix };
    format!("{prefix}-{hash}")
}

pub fn data(rev: &ControllerRevision) -> Value {
    rev.data.as_ref().map(|d| d.0.clone()).unwrap_or(Value::Null)
}

pub fn raw(v: Value) -> Option<RawExtension> {
    Some(RawExtension(v))
}

/// The pod template a revision restores (upstream's `ApplyRevision`: the
/// patch replaces `spec.template`).
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = data(rev).pointer("/spec/template")?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// Same data (upstream's `EqualRevision` without numeric legacy hashes:
/// the data bytes, here canonical JSON).
pub fn equal_data(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    canonical(&data(a)) == canonical(&data(b))
}

pub fn hash_label(rev: &ControllerRevision) -> Option<&str> {
    rev.metadata.labels.as_ref()?.get(CONTROLLER_REVISION_HASH_LABEL).map(String::as_str)
}

/// Upstream's `byRevision`: by revision number, then creation, then name.
pub fn by_revision(a: &ControllerRevision, b: &ControllerRevision) -> Ordering {
    a.revision
        .cmp(&b.revision)
        .then_with(|| a.metadata.creation_timestamp.as_ref().map(|t| t.0).cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0)))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

pub fn sort_revisions(revs: &mut [Arc<ControllerRevision>]) {
    revs.sort_by(|a, b| by_revision(a, b));
}

pub fn max_revision(revs: &[Arc<ControllerRevision>]) -> i64 {
    revs.iter().map(|r| r.revision).max().unwrap_or(0)
}

/// Upstream's `nextRevision` (of sorted revisions).
pub fn next_revision(revs: &[Arc<ControllerRevision>]) -> i64 {
    revs.last().map(|r| r.revision + 1).unwrap_or(1)
}

/// Upstream's `history.CreateControllerRevision`: creates `rev` named
/// `<parent>-<hash>`; on a name taken by different data, bumps
/// `collision_count` and tries the next hash. An existing revision with
/// the same data is returned as is.
pub async fn create_revision(
    api: &Api<ControllerRevision>,
    parent: &str,
    rev: &ControllerRevision,
    collision_count: &mut i32,
) -> Result<ControllerRevision, kube::Error> {
    let mut clone = rev.clone();
    loop {
        let hash = hash_revision_data(&data(rev), Some(*collision_count));
        clone.metadata.name = Some(revision_name(parent, &hash));
        match api.create(&PostParams::default(), &clone).await {
            Ok(c) => return Ok(c),
            Err(e) if is_already_exists(&e) => {
                let existing = api.get(clone.metadata.name.as_deref().unwrap_or_default()).await?;
                if equal_data(&existing, &clone) {
                    return Ok(existing);
                }
                *collision_count += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A create found the name taken (409 AlreadyExists, not an update
/// Conflict).
pub fn is_already_exists(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 && s.reason != "Conflict",
        _ => false,
    }
}

/// Upstream's `UpdateControllerRevision`: sets `revision`, re-reading on
/// conflicts.
pub async fn update_revision_number(api: &Api<ControllerRevision>, rev: &ControllerRevision, revision: i64) -> Result<ControllerRevision, kube::Error> {
    let mut clone = rev.clone();
    for _ in 0..5 {
        if clone.revision == revision {
            return Ok(clone);
        }
        clone.revision = revision;
        clone.metadata.managed_fields = None;
        match api.replace(clone.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &clone).await {
            Ok(r) => return Ok(r),
            Err(e) if is_conflict(&e) => {
                clone = api.get(clone.metadata.name.as_deref().unwrap_or_default()).await?;
            }
            Err(e) => return Err(e),
        }
    }
    api.get(rev.metadata.name.as_deref().unwrap_or_default()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}})).unwrap()
    }

    #[test]
    fn fnv_matches_go() {
        // Go: fnv.New32a().Write([]byte("hello")) = 0x4f9f2cab; fnv.New32() = 0xb6fa7167.
        assert_eq!(fnv32a(b"hello", FNV32_OFFSET), 0x4f9f_2cab);
        assert_eq!(fnv32(b"hello", FNV32_OFFSET), 0xb6fa_7167);
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn patch_is_go_json_with_sorted_keys() {
        let p = template_patch(&template("nginx:1"));
        let s = String::from_utf8(go_json(&p)).unwrap();
        assert_eq!(
            s,
            r#"{"spec":{"template":{"$patch":"replace","metadata":{"creationTimestamp":null,"labels":{"app":"web"}},"spec":{"containers":[{"image":"nginx:1","name":"c"}]}}}}"#
        );
        let rev = ControllerRevision { data: raw(p), ..Default::default() };
        assert_eq!(template_of(&rev).unwrap().spec.unwrap().containers[0].image.as_deref(), Some("nginx:1"));
        assert_eq!(String::from_utf8(go_json(&json!({"a": "<&>"}))).unwrap(), r#"{"a":"\u003c\u0026\u003e"}"#);
    }

    #[test]
    fn hashes_are_stable_and_differ_by_template_and_collision_count() {
        let a = compute_hash(&template("nginx:1"), None);
        assert_eq!(a, compute_hash(&template("nginx:1"), None));
        assert_ne!(a, compute_hash(&template("nginx:2"), None));
        assert_ne!(a, compute_hash(&template("nginx:1"), Some(1)));
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        let d = template_patch(&template("nginx:1"));
        assert_ne!(hash_revision_data(&d, Some(0)), hash_revision_data(&d, Some(1)));
        assert_eq!(revision_name("web", "abc"), "web-abc");
    }
}
