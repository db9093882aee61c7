//! Client-side pieces shared by the components that watch the API server
//! (the scheduler, the hollow kubelets).
//!
//! [`LeanPod`]: a Pod decoded without `metadata.managedFields`. Upstream's
//! informers drop managedFields after decoding (a transform function);
//! here they are never built. Each managedFields entry holds a `fieldsV1`
//! tree that k8s-openapi decodes into a `serde_json::Value`, and a pod that
//! a scheduler bound and a kubelet started carries three of them: on the
//! scheduler bench their decoding was half of the scheduler's pod-watch
//! decoding, for fields nobody reads.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::Deserialize;

/// A Pod whose `metadata.managedFields` was skipped while decoding (it is
/// always `None`). Deserializes from a Pod's JSON, and is a
/// [`kube::Resource`] for `Api`, watchers and writes whose reply is a pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeanPod(pub Pod);

impl LeanPod {
    pub fn into_inner(self) -> Pod {
        self.0
    }
}

/// ObjectMeta's members but managedFields (skipped unparsed, as any
/// unknown member). `lean_meta_covers_object_meta` fails to compile when
/// k8s-openapi's ObjectMeta gains a field this does not carry.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct LeanMeta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

impl From<LeanMeta> for ObjectMeta {
    fn from(m: LeanMeta) -> ObjectMeta {
        ObjectMeta {
            annotations: m.annotations,
            creation_timestamp: m.creation_timestamp,
            deletion_grace_period_seconds: m.deletion_grace_period_seconds,
            deletion_timestamp: m.deletion_timestamp,
            finalizers: m.finalizers,
            generate_name: m.generate_name,
            generation: m.generation,
            labels: m.labels,
            managed_fields: None,
            name: m.name,
            namespace: m.namespace,
            owner_references: m.owner_references,
            resource_version: m.resource_version,
            self_link: m.self_link,
            uid: m.uid,
        }
    }
}

impl<'de> Deserialize<'de> for LeanPod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Repr {
            #[serde(default)]
            metadata: LeanMeta,
            spec: Option<PodSpec>,
            status: Option<PodStatus>,
        }
        let r = Repr::deserialize(d)?;
        Ok(LeanPod(Pod { metadata: r.metadata.into(), spec: r.spec, status: r.status }))
    }
}

impl kube::Resource for LeanPod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        <Pod as k8s_openapi::Resource>::KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        <Pod as k8s_openapi::Resource>::GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        <Pod as k8s_openapi::Resource>::VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use serde_json::json;

    /// Every ObjectMeta field but managedFields survives the lean decode.
    /// Built without `..Default::default()`: a new field in k8s-openapi is
    /// a compile error here, not a field silently dropped.
    #[test]
    fn lean_meta_covers_object_meta() {
        let time = Time("2026-11-27T10:00:00Z".parse().unwrap());
        let meta = ObjectMeta {
            annotations: Some([("a".to_string(), "1".to_string())].into()),
            creation_timestamp: Some(time.clone()),
            deletion_grace_period_seconds: Some(30),
            deletion_timestamp: Some(time.clone()),
            finalizers: Some(vec!["f".into()]),
            generate_name: Some("web-".into()),
            generation: Some(3),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            managed_fields: Some(vec![ManagedFieldsEntry {
                api_version: Some("v1".into()),
                fields_type: Some("FieldsV1".into()),
                fields_v1: Some(FieldsV1(json!({"f:status": {"f:phase": {}}}))),
                manager: Some("kubelet".into()),
                operation: Some("Update".into()),
                subresource: Some("status".into()),
                time: Some(time),
            }]),
            name: Some("web-1".into()),
            namespace: Some("ns".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "web".into(),
                uid: "u-rs".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            resource_version: Some("42".into()),
            self_link: Some("/api/v1/namespaces/ns/pods/web-1".into()),
            uid: Some("u-1".into()),
        };
        let pod = Pod {
            metadata: meta,
            spec: Some(PodSpec { node_name: Some("n1".into()), ..Default::default() }),
            status: Some(PodStatus { phase: Some("Running".into()), ..Default::default() }),
        };
        let json = serde_json::to_string(&pod).unwrap();
        let lean: LeanPod = serde_json::from_str(&json).unwrap();
        let mut want = pod.clone();
        want.metadata.managed_fields = None;
        assert_eq!(lean.0, want);
        // And the full decode of the same text did keep them.
        let full: Pod = serde_json::from_str(&json).unwrap();
        assert!(full.metadata.managed_fields.is_some());
    }

    /// A watch event's pod as the server sends it: apiVersion and kind,
    /// null members, no status yet.
    #[test]
    fn decodes_served_pods() {
        let text = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "labels": null, "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        })
        .to_string();
        let lean: LeanPod = serde_json::from_str(&text).unwrap();
        let full: Pod = serde_json::from_str(&text).unwrap();
        assert_eq!(lean.0.metadata.name.as_deref(), Some("p"));
        assert_eq!(lean.0.metadata.labels, None);
        assert_eq!(lean.0.spec, full.spec);
        assert_eq!(lean.0.status, None);
        assert_eq!(<LeanPod as kube::Resource>::url_path(&(), Some("d")), "/api/v1/namespaces/d/pods");
    }
}
