//! OpenAPI schemas of the served kinds, generated from k8s-openapi's type
//! descriptions, plus upstream's patch strategies (`x-kubernetes-patch-*`)
//! which k8s-openapi does not carry.
//!
//! One [`Schemas`] instance serves the OpenAPI documents, `fieldValidation`
//! (unknown-field detection) and the strategic-merge-patch engine.

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::resources::RESOURCES;

/// Upstream's `patchStrategy`/`patchMergeKey` struct tags, by definition and field.
/// (definition, field, strategy, merge key)
pub static PATCH_STRATEGIES: &[(&str, &str, &str, Option<&str>)] = &[
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "merge", None),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", Some("uid")),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", Some("ip")),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "merge", Some("topologyKey")),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", Some("name")),
    ("io.k8s.api.core.v1.Container", "ports", "merge", Some("containerPort")),
    ("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "merge", Some("mountPath")),
    ("io.k8s.api.core.v1.Container", "volumeDevices", "merge", Some("devicePath")),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports", "merge", Some("containerPort")),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", Some("name")),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", Some("mountPath")),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", Some("devicePath")),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", Some("ip")),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", Some("port")),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", Some("type")),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.ReplicationControllerStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", "merge", Some("name")),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", None),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions", "merge", Some("type")),
];

/// What strategic merge does with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchStrategy {
    pub merge: bool,
    pub retain_keys: bool,
    pub merge_key: Option<String>,
}

/// The definitions of every served kind and everything they reference.
pub struct Schemas {
    /// OpenAPI v3 component schemas by definition name.
    pub definitions: Map<String, Value>,
}

static SCHEMAS: OnceLock<Schemas> = OnceLock::new();

impl Schemas {
    /// The process-wide instance (generation takes a few milliseconds, once).
    pub fn get() -> &'static Schemas {
        SCHEMAS.get_or_init(Schemas::generate)
    }

    fn generate() -> Schemas {
        let mut generator = SchemaSettings::openapi3().into_generator();
        for r in RESOURCES {
            (r.schema)(&mut generator);
        }
        let mut definitions = generator.take_definitions(true);
        for (def, field, strategy, key) in PATCH_STRATEGIES {
            if let Some(prop) = definitions
                .get_mut(*def)
                .and_then(|d| d.get_mut("properties"))
                .and_then(|p| p.get_mut(*field))
                .and_then(Value::as_object_mut)
            {
                prop.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
                if let Some(k) = key {
                    prop.insert("x-kubernetes-patch-merge-key".into(), json!(k));
                }
            }
        }
        for r in RESOURCES {
            if let Some(d) = definitions.get_mut(r.definition).and_then(Value::as_object_mut) {
                let gvks = d
                    .entry("x-kubernetes-group-version-kind")
                    .or_insert_with(|| json!([]));
                if let Some(list) = gvks.as_array_mut() {
                    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
                    if !list.contains(&gvk) {
                        list.push(gvk);
                    }
                }
            }
        }
        Schemas { definitions }
    }

    pub fn definition(&self, name: &str) -> Option<&Value> {
        self.definitions.get(name)
    }

    /// Member `key` of a schema node. Schema nodes have a handful of
    /// members (`$ref`, `type`, `items`, `properties`, `description`, ...),
    /// and a map lookup hashes the key with SipHash first: scanning a few
    /// keys is cheaper. The lookups of every write's field walks went
    /// through here, and hashing was 4 % of the server's CPU.
    #[inline]
    pub fn attr<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
        let map = schema.as_object()?;
        if map.len() <= 8 {
            map.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
        } else {
            map.get(key)
        }
    }

    /// Follows `$ref` (directly or through a one-element `allOf`).
    pub fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let mut current = schema;
        for _ in 0..8 {
            let target = if let Some(r) = Self::attr(current, "$ref").and_then(Value::as_str) {
                r
            } else if let Some(r) = Self::attr(current, "allOf")
                .and_then(Value::as_array)
                .filter(|a| a.len() == 1)
                .and_then(|a| Self::attr(&a[0], "$ref"))
                .and_then(Value::as_str)
            {
                r
            } else {
                return current;
            };
            let name = target.rsplit('/').next().unwrap_or("");
            match self.definitions.get(name) {
                Some(d) => current = d,
                None => return current,
            }
        }
        current
    }

    /// The definition name a schema refers to, if any.
    pub fn ref_name<'a>(&self, schema: &'a Value) -> Option<&'a str> {
        let r = Self::attr(schema, "$ref").and_then(Value::as_str).or_else(|| {
            Self::attr(schema, "allOf")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|s| Self::attr(s, "$ref"))
                .and_then(Value::as_str)
        })?;
        r.rsplit('/').next()
    }

    /// The schema of property `field` of an object schema, resolved.
    pub fn property<'a>(&'a self, schema: &'a Value, field: &str) -> Option<&'a Value> {
        let schema = self.resolve(schema);
        if let Some(p) = Self::attr(schema, "properties").and_then(|p| p.get(field)) {
            return Some(p);
        }
        Self::attr(schema, "additionalProperties").filter(|a| a.is_object())
    }

    /// The strategic-merge strategy of `field` within an object schema.
    pub fn patch_strategy(&self, schema: &Value, field: &str) -> PatchStrategy {
        let schema = self.resolve(schema);
        let prop = Self::attr(schema, "properties").and_then(|p| p.get(field));
        let strategy = prop
            .and_then(|p| Self::attr(p, "x-kubernetes-patch-strategy"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let key = prop
            .and_then(|p| Self::attr(p, "x-kubernetes-patch-merge-key"))
            .and_then(Value::as_str)
            .map(String::from);
        PatchStrategy {
            merge: strategy.split(',').any(|s| s == "merge"),
            retain_keys: strategy.split(',').any(|s| s == "retainKeys"),
            merge_key: key,
        }
    }

    /// Is `schema` one whose fields are not declared (free-form maps, raw JSON,
    /// int-or-string, quantities)? Unknown-field checks stop there.
    fn is_open(&self, schema: &Value) -> bool {
        let s = self.resolve(schema);
        Self::attr(s, "properties").is_none() && Self::attr(s, "items").is_none()
    }

    /// The paths of fields in `obj` that the schema of `definition` does not
    /// declare, as upstream reports them for `fieldValidation` (`spec.foo`,
    /// `spec.containers[0].bar`).
    pub fn unknown_fields(&self, definition: &str, obj: &Value) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(def) = self.definition(definition) {
            self.walk_unknown(def, obj, &mut String::new(), &mut out);
        }
        out
    }

    /// `path` is one buffer, extended and cut back around each member: the
    /// walk visits every field of every object written, and nearly always
    /// finds nothing, so no path is formatted until a field is unknown.
    fn walk_unknown(&self, schema: &Value, value: &Value, path: &mut String, out: &mut Vec<String>) {
        let schema = self.resolve(schema);
        let len = path.len();
        match value {
            Value::Object(map) => {
                let props = Self::attr(schema, "properties").and_then(Value::as_object);
                let additional = Self::attr(schema, "additionalProperties").filter(|a| a.is_object());
                for (k, v) in map {
                    if len > 0 {
                        path.push('.');
                    }
                    path.push_str(k);
                    if let Some(p) = props.and_then(|p| p.get(k)) {
                        self.walk_unknown(p, v, path, out);
                    } else if let Some(a) = additional {
                        if !self.is_open(a) {
                            self.walk_unknown(a, v, path, out);
                        }
                    } else if props.is_some() {
                        out.push(path.clone());
                    }
                    path.truncate(len);
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = Self::attr(schema, "items") {
                    for (i, v) in items.iter().enumerate() {
                        use std::fmt::Write;
                        let _ = write!(path, "[{i}]");
                        self.walk_unknown(item_schema, v, path, out);
                        path.truncate(len);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_cover_every_kind_with_gvk() {
        let s = Schemas::get();
        for r in RESOURCES {
            let d = s.definition(r.definition).unwrap_or_else(|| panic!("{}", r.definition));
            let gvks = d["x-kubernetes-group-version-kind"].as_array().unwrap();
            assert!(gvks.iter().any(|g| g["kind"] == r.kind && g["version"] == r.version));
        }
    }

    #[test]
    fn patch_strategies_are_attached() {
        let s = Schemas::get();
        let spec = s.definition("io.k8s.api.core.v1.PodSpec").unwrap();
        let st = s.patch_strategy(spec, "containers");
        assert!(st.merge);
        assert_eq!(st.merge_key.as_deref(), Some("name"));
        let st = s.patch_strategy(spec, "tolerations");
        assert!(!st.merge);
    }

    #[test]
    fn unknown_fields_are_found_with_paths() {
        let s = Schemas::get();
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "x",
                     "resources": {"limits": {"cpu": "1"}}}]}
        });
        let unknown = s.unknown_fields("io.k8s.api.core.v1.Pod", &pod);
        assert_eq!(unknown, vec!["metadata.bogus", "spec.containers[0].imagePullPolicyy"]);
        // Paths are cut back after each member and item.
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod", "extra": true,
            "spec": {"containers": [{"name": "a", "x": 1, "ports": [{"containerPort": 1, "y": 2}]}, {"name": "b", "z": 3}],
                     "nodeName": "n", "w": 4}
        });
        assert_eq!(
            s.unknown_fields("io.k8s.api.core.v1.Pod", &pod),
            vec!["extra", "spec.containers[0].x", "spec.containers[0].ports[0].y", "spec.containers[1].z", "spec.w"]
        );
    }
}
