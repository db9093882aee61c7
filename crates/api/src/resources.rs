//! The resource table: the single place a kind is declared.

use k8s_openapi::api;
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// One served resource (a group/version/resource triple) and what the server
/// needs to know about it.
#[derive(Debug)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural, the path segment (`pods`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources beyond the main resource (`status`, `scale`, ...).
    pub subresources: &'static [&'static str],
    /// Fully qualified OpenAPI definition name (`io.k8s.api.core.v1.Pod`).
    pub definition: &'static str,
    /// Adds this kind's schema (and its dependencies) to a generator.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// Decodes JSON as the typed object, to report type errors as upstream does.
    pub decode: fn(&serde_json::Value) -> Result<(), String>,
    /// Where the same objects are stored when several versions serve one
    /// resource (autoscaling v1/v2 HPAs): the storage resource key.
    pub storage_group: &'static str,
}

impl ResourceType {
    /// `v1` for the core group, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// Has a `status` whose writes go through the status subresource only.
    pub fn has_status(&self) -> bool {
        self.has_subresource("status")
    }

    /// The storage key prefix, as upstream lays out etcd: `/registry/pods/`,
    /// `/registry/apps/deployments/` (core and a few legacy groups omit the group).
    pub fn key_prefix(&self) -> String {
        if self.storage_group.is_empty() {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.storage_group, self.plural)
        }
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{}/{}", self.key_prefix(), ns, name),
            _ => format!("{}{}", self.key_prefix(), name),
        }
    }

    /// Verbs for discovery.
    pub fn verbs(&self) -> &'static [&'static str] {
        &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    }
}

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

fn decode_as<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<(), String> {
    T::deserialize(value).map(|_| ()).map_err(|e| e.to_string())
}

/// Maps an API group to the package segment of its OpenAPI definition names.
macro_rules! definition_group {
    ("") => { "core" };
    ("apps") => { "apps" };
    ("batch") => { "batch" };
    ("autoscaling") => { "autoscaling" };
    ("coordination.k8s.io") => { "coordination" };
    ("discovery.k8s.io") => { "discovery" };
    ("events.k8s.io") => { "events" };
    ("networking.k8s.io") => { "networking" };
    ("policy") => { "policy" };
    ("scheduling.k8s.io") => { "scheduling" };
    ("rbac.authorization.k8s.io") => { "rbac" };
}

macro_rules! resource {
    ($group:tt, $version:literal, $kind:literal, $plural:literal, $singular:literal, $namespaced:literal,
     $ty:ty, short: [$($short:expr),*], cat: [$($cat:expr),*], sub: [$($sub:expr),*]) => {
        resource!($group, $version, $kind, $plural, $singular, $namespaced, $ty,
            short: [$($short),*], cat: [$($cat),*], sub: [$($sub),*], store: $group)
    };
    ($group:tt, $version:literal, $kind:literal, $plural:literal, $singular:literal, $namespaced:literal,
     $ty:ty, short: [$($short:expr),*], cat: [$($cat:expr),*], sub: [$($sub:expr),*], store: $store:tt) => {
        ResourceType {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            subresources: &[$($sub),*],
            definition: concat!(
                "io.k8s.api.",
                definition_group!($group),
                ".",
                $version,
                ".",
                $kind
            ),
            schema: schema_of::<$ty>,
            decode: decode_as::<$ty>,
            storage_group: $store,
        }
    };
}

/// Every resource served, in discovery order.
pub static RESOURCES: &[ResourceType] = &[
    // core/v1
    resource!("", "v1", "Namespace", "namespaces", "namespace", false, api::core::v1::Namespace,
        short: ["ns"], cat: [], sub: ["status", "finalize"]),
    resource!("", "v1", "Pod", "pods", "pod", true, api::core::v1::Pod,
        short: ["po"], cat: ["all"], sub: ["status", "binding", "eviction", "log", "exec", "attach", "portforward", "ephemeralcontainers"]),
    resource!("", "v1", "Service", "services", "service", true, api::core::v1::Service,
        short: ["svc"], cat: ["all"], sub: ["status", "proxy"]),
    resource!("", "v1", "Endpoints", "endpoints", "endpoints", true, api::core::v1::Endpoints,
        short: ["ep"], cat: [], sub: []),
    resource!("", "v1", "ConfigMap", "configmaps", "configmap", true, api::core::v1::ConfigMap,
        short: ["cm"], cat: [], sub: []),
    resource!("", "v1", "Secret", "secrets", "secret", true, api::core::v1::Secret,
        short: [], cat: [], sub: []),
    resource!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, api::core::v1::ServiceAccount,
        short: ["sa"], cat: [], sub: ["token"]),
    resource!("", "v1", "Node", "nodes", "node", false, api::core::v1::Node,
        short: ["no"], cat: [], sub: ["status", "proxy"]),
    resource!("", "v1", "Event", "events", "event", true, api::core::v1::Event,
        short: ["ev"], cat: [], sub: []),
    resource!("", "v1", "PodTemplate", "podtemplates", "podtemplate", true, api::core::v1::PodTemplate,
        short: [], cat: [], sub: []),
    resource!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", true, api::core::v1::ReplicationController,
        short: ["rc"], cat: ["all"], sub: ["status", "scale"]),
    resource!("", "v1", "LimitRange", "limitranges", "limitrange", true, api::core::v1::LimitRange,
        short: ["limits"], cat: [], sub: []),
    resource!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", true, api::core::v1::ResourceQuota,
        short: ["quota"], cat: [], sub: ["status"]),
    resource!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", false, api::core::v1::PersistentVolume,
        short: ["pv"], cat: [], sub: ["status"]),
    resource!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true, api::core::v1::PersistentVolumeClaim,
        short: ["pvc"], cat: [], sub: ["status"]),
    // apps/v1
    resource!("apps", "v1", "Deployment", "deployments", "deployment", true, api::apps::v1::Deployment,
        short: ["deploy"], cat: ["all"], sub: ["status", "scale"]),
    resource!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, api::apps::v1::ReplicaSet,
        short: ["rs"], cat: ["all"], sub: ["status", "scale"]),
    resource!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, api::apps::v1::DaemonSet,
        short: ["ds"], cat: ["all"], sub: ["status"]),
    resource!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, api::apps::v1::StatefulSet,
        short: ["sts"], cat: ["all"], sub: ["status", "scale"]),
    resource!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true, api::apps::v1::ControllerRevision,
        short: [], cat: [], sub: []),
    // batch/v1
    resource!("batch", "v1", "Job", "jobs", "job", true, api::batch::v1::Job,
        short: [], cat: ["all"], sub: ["status"]),
    resource!("batch", "v1", "CronJob", "cronjobs", "cronjob", true, api::batch::v1::CronJob,
        short: ["cj"], cat: ["all"], sub: ["status"]),
    // autoscaling: v2 is the storage version; v1 objects are converted.
    resource!("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", true, api::autoscaling::v2::HorizontalPodAutoscaler,
        short: ["hpa"], cat: ["all"], sub: ["status"]),
    resource!("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", true, api::autoscaling::v1::HorizontalPodAutoscaler,
        short: ["hpa"], cat: ["all"], sub: ["status"]),
    // coordination.k8s.io/v1
    resource!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, api::coordination::v1::Lease,
        short: [], cat: [], sub: [], store: ""),
    // discovery.k8s.io/v1
    resource!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, api::discovery::v1::EndpointSlice,
        short: [], cat: [], sub: []),
    // events.k8s.io/v1: the same objects as core/v1 Events (crate::convert)
    resource!("events.k8s.io", "v1", "Event", "events", "event", true, api::events::v1::Event,
        short: ["ev"], cat: [], sub: [], store: ""),
    // networking.k8s.io/v1
    resource!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true, api::networking::v1::Ingress,
        short: ["ing"], cat: [], sub: ["status"]),
    resource!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", false, api::networking::v1::IngressClass,
        short: [], cat: [], sub: []),
    resource!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", true, api::networking::v1::NetworkPolicy,
        short: ["netpol"], cat: [], sub: []),
    // policy/v1
    resource!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", true, api::policy::v1::PodDisruptionBudget,
        short: ["pdb"], cat: [], sub: ["status"]),
    // scheduling.k8s.io/v1
    resource!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", false, api::scheduling::v1::PriorityClass,
        short: ["pc"], cat: [], sub: []),
    // rbac.authorization.k8s.io/v1 (stored now, enforced later)
    resource!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, api::rbac::v1::Role,
        short: [], cat: [], sub: []),
    resource!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", true, api::rbac::v1::RoleBinding,
        short: [], cat: [], sub: []),
    resource!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", false, api::rbac::v1::ClusterRole,
        short: [], cat: [], sub: []),
    resource!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", false, api::rbac::v1::ClusterRoleBinding,
        short: [], cat: [], sub: []),
];

/// Groups in discovery order, each with its versions (preferred first).
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version);
                }
            }
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// Whether `group/version` is served (what [`groups`] lists, without
/// building the list: this is asked on every request).
pub fn serves(group: &str, version: &str) -> bool {
    RESOURCES.iter().any(|r| r.group == group && r.version == version)
}

/// The resource served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of a kind, for objects that name their `apiVersion` and `kind`.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    let (group, version) = split_api_version(api_version);
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_upstream_layout() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("default"), "web"), "/registry/pods/default/web");
        let deploy = find("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.key(Some("ns"), "d"), "/registry/apps/deployments/ns/d");
        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(None, "n1"), "/registry/nodes/n1");
        assert_eq!(deploy.definition, "io.k8s.api.apps.v1.Deployment");
    }

    #[test]
    fn hpa_versions_share_storage() {
        let v1 = find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let v2 = find("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
        assert_eq!(v1.key(Some("a"), "b"), v2.key(Some("a"), "b"));
        assert_eq!(groups().iter().find(|(g, _)| *g == "autoscaling").unwrap().1, vec!["v2", "v1"]);
        for (g, vs) in groups() {
            assert!(vs.iter().all(|v| serves(g, v)), "{g}");
        }
        assert!(!serves("apps", "v2") && !serves("nope", "v1"));
    }
}
