//! What the wire table does not say: each field's JSON name, whether a zero
//! value of it is kept, how a message type maps to JSON when it is not a plain
//! object, and which message a (apiVersion, kind) is.
//!
//! JSON names: prost snake-cases the proto (= JSON) names, which cannot be
//! reversed (`podIPs` → `pod_i_ps`, `hostIP` → `host_ip`). The exact names are
//! recovered by matching against the OpenAPI property names of the same type
//! (k8s-openapi's schemas, as [`crate::schema`] generates them), comparing
//! with case and separators ignored. Types without an OpenAPI definition fall
//! back to the doc comment's first word (upstream comments start with the JSON
//! name), then to any OpenAPI property of that spelling, then to lowerCamelCase.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value};

use super::table::{Label, MESSAGES, RESOURCES as PB_RESOURCES, Ty};
use crate::resources::RESOURCES;

/// Messages whose JSON form is not an object of their fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Special {
    None,
    /// `metav1.Time` {seconds, nanos}: RFC 3339 with seconds precision.
    Time,
    /// `metav1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `metav1.Duration` {duration ns}: Go's duration string (`1h0m0s`).
    Duration,
    /// `resource.Quantity` {string}: the string.
    Quantity,
    /// `intstr.IntOrString` {type, intVal, strVal}: a number or a string.
    IntOrString,
    /// `runtime.RawExtension`, `metav1.FieldsV1`, apiextensions `JSON` {raw}:
    /// the embedded JSON document.
    RawJson,
    /// `ExtraValue`, `metav1.Verbs` {items}: a JSON array of strings.
    StringList,
    /// apiextensions `JSONSchemaPropsOrArray` {schema, jSONSchemas}.
    SchemaOrArray,
    /// apiextensions `JSONSchemaPropsOrBool` {allows, schema}.
    SchemaOrBool,
    /// apiextensions `JSONSchemaPropsOrStringArray` {schema, property}.
    SchemaOrStringArray,
}

pub(super) struct FieldInfo {
    pub json: String,
    /// Keep the field when it holds its type's zero value ("" / 0 / false).
    pub keep_zero: bool,
    /// An embedded Go struct (`json:",inline"`): its fields are the parent's.
    pub inline: bool,
}

/// Embedded structs of messages that may have no OpenAPI definition here
/// (beta versions): (message name or "", field). Those with a definition are
/// also recognised from it.
static INLINE_FIELDS: &[(&str, &str)] = &[
    ("", "local_object_reference"),
    ("", "volume_source"),
    ("", "persistent_volume_source"),
    ("", "ephemeral_container_common"),
    ("", "ingress_rule_value"),
    ("", "rule_with_operations"),
    ("", "device_configuration"),
    ("", "type_meta"),
    ("Probe", "handler"),
    ("RuleWithOperations", "rule"),
];

pub(super) struct Registry {
    pub fields: Vec<Vec<FieldInfo>>,
    pub special: Vec<Special>,
    by_path: HashMap<String, usize>,
    by_kind: HashMap<(String, String), usize>,
    /// apiVersion → k8s-pb module (`apps/v1` → `api.apps.v1`).
    modules: HashMap<String, &'static str>,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// Lower-case alphanumerics only: how names are compared across spellings.
pub(super) fn norm(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The OpenAPI definition name of a k8s-pb message path, normalized.
fn norm_definition(path: &str) -> String {
    norm(&format!("io.k8s.{path}"))
}

impl Registry {
    pub fn get() -> &'static Registry {
        REGISTRY.get_or_init(Registry::build)
    }

    fn build() -> Registry {
        let definitions = definitions();
        let mut defs_by_norm: HashMap<String, &Map<String, Value>> = HashMap::new();
        // normalized property → spelling, None when two spellings collide.
        let mut global: HashMap<String, Option<String>> = HashMap::new();
        for (name, def) in &definitions {
            let Some(def) = def.as_object() else { continue };
            defs_by_norm.insert(norm(name), def);
            if let Some(props) = def.get("properties").and_then(Value::as_object) {
                for p in props.keys() {
                    match global.get(&norm(p)) {
                        Some(Some(existing)) if existing != p => {
                            global.insert(norm(p), None);
                        }
                        Some(_) => {}
                        None => {
                            global.insert(norm(p), Some(p.clone()));
                        }
                    }
                }
            }
        }
        let keep: HashSet<(String, String)> = POINTER_FIELDS
            .iter()
            .flat_map(|(m, fs)| fs.iter().map(move |f| (norm(m), (*f).to_string())))
            .collect();

        let mut fields: Vec<Vec<FieldInfo>> = Vec::with_capacity(MESSAGES.len());
        let mut props_of: Vec<Option<&Map<String, Value>>> = Vec::with_capacity(MESSAGES.len());
        let mut required_of: Vec<Vec<&str>> = Vec::with_capacity(MESSAGES.len());
        let mut special = Vec::with_capacity(MESSAGES.len());
        let mut by_path = HashMap::new();
        for (i, msg) in MESSAGES.iter().enumerate() {
            by_path.insert(norm(msg.path), i);
            special.push(special_of(msg.path));
            let def = defs_by_norm.get(&norm_definition(msg.path)).copied();
            let props = def
                .and_then(|d| d.get("properties"))
                .and_then(Value::as_object);
            let required: Vec<&str> = def
                .and_then(|d| d.get("required"))
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            props_of.push(props);
            required_of.push(required.clone());
            let norm_msg = norm(msg.path);
            let infos = msg
                .fields
                .iter()
                .map(|f| {
                    let key = norm(f.name);
                    let json = props
                        .and_then(|p| p.keys().find(|k| norm(k) == key).cloned())
                        .or_else(|| global.get(&key).cloned().flatten())
                        .or_else(|| {
                            let doc = f.doc_word;
                            (doc.starts_with(|c: char| c.is_ascii_lowercase()) && norm(doc) == key)
                                .then(|| doc.to_string())
                        })
                        .unwrap_or_else(|| lower_camel(f.name));
                    let keep_zero = required.contains(&json.as_str())
                        || keep.contains(&(norm_msg.clone(), json.clone()));
                    let inline = INLINE_FIELDS
                        .iter()
                        .any(|(m, n)| *n == f.name && (m.is_empty() || *m == msg.name()));
                    FieldInfo {
                        json,
                        keep_zero,
                        inline,
                    }
                })
                .collect();
            fields.push(infos);
        }
        // Embedded structs recognised from the schema: a message field the
        // definition lacks, whose own fields the definition has.
        for (i, msg) in MESSAGES.iter().enumerate() {
            let Some(props) = props_of[i] else { continue };
            for (j, f) in msg.fields.iter().enumerate() {
                let Ty::Message(child) = f.ty else { continue };
                if f.label != Label::Optional || props.contains_key(&fields[i][j].json) {
                    continue;
                }
                if fields[child].iter().any(|c| props.contains_key(&c.json)) {
                    fields[i][j].inline = true;
                }
            }
        }
        // An embedded struct without a definition of its own (VolumeSource,
        // ProbeHandler): its fields are named in the parent's definition.
        for (i, msg) in MESSAGES.iter().enumerate() {
            let Some(props) = props_of[i] else { continue };
            for (j, f) in msg.fields.iter().enumerate() {
                let Ty::Message(child) = f.ty else { continue };
                if !fields[i][j].inline || props_of[child].is_some() {
                    continue;
                }
                for (k, cf) in MESSAGES[child].fields.iter().enumerate() {
                    let key = norm(cf.name);
                    if let Some(json) = props.keys().find(|p| norm(p) == key) {
                        let info = &mut fields[child][k];
                        info.keep_zero |= required_of[i].contains(&json.as_str());
                        info.json = json.clone();
                    }
                }
            }
        }

        let mut by_kind = HashMap::new();
        let mut modules = HashMap::new();
        for (api_version, kind, idx) in PB_RESOURCES {
            by_kind.insert((api_version.to_string(), kind.to_string()), *idx);
            modules
                .entry(api_version.to_string())
                .or_insert(MESSAGES[*idx].module());
        }
        Registry {
            fields,
            special,
            by_path,
            by_kind,
            modules,
        }
    }

    /// The message at a k8s-pb path (`api.core.v1.Pod`), any spelling.
    pub fn message(&self, path: &str) -> Option<usize> {
        self.by_path.get(&norm(path)).copied()
    }

    /// The message an object of (apiVersion, kind) is encoded as.
    pub fn message_for_kind(&self, api_version: &str, kind: &str) -> Option<usize> {
        if let Some(&i) = self
            .by_kind
            .get(&(api_version.to_string(), kind.to_string()))
        {
            return Some(i);
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let mut modules: Vec<String> = Vec::new();
        if let Some(m) = self.modules.get(api_version) {
            modules.push(m.to_string());
        }
        let first_label = group.split('.').next().unwrap_or("");
        modules.push(if group.is_empty() {
            format!("api.core.{version}")
        } else {
            format!("api.{first_label}.{version}")
        });
        // Options, Status, WatchEvent ... are registered in every group version.
        modules.push(format!("apimachinery.pkg.apis.meta.{version}"));
        modules.push("apimachinery.pkg.apis.meta.v1".to_string());
        modules
            .iter()
            .find_map(|m| self.message(&format!("{m}.{kind}")))
    }
}

fn special_of(path: &str) -> Special {
    let name = path.rsplit('.').next().unwrap_or(path);
    match path {
        "apimachinery.pkg.apis.meta.v1.Time" => Special::Time,
        "apimachinery.pkg.apis.meta.v1.MicroTime" => Special::MicroTime,
        "apimachinery.pkg.apis.meta.v1.Duration" => Special::Duration,
        "apimachinery.pkg.api.resource.Quantity"
        | "apimachinery.pkg.api.resource.QuantityValue" => Special::Quantity,
        "apimachinery.pkg.util.intstr.IntOrString" => Special::IntOrString,
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            Special::RawJson
        }
        "apimachinery.pkg.apis.meta.v1.Verbs" => Special::StringList,
        _ if path.starts_with("apiextensions_apiserver.") => match name {
            "Json" | "JSON" => Special::RawJson,
            "JsonSchemaPropsOrArray" | "JSONSchemaPropsOrArray" => Special::SchemaOrArray,
            "JsonSchemaPropsOrBool" | "JSONSchemaPropsOrBool" => Special::SchemaOrBool,
            "JsonSchemaPropsOrStringArray" | "JSONSchemaPropsOrStringArray" => {
                Special::SchemaOrStringArray
            }
            _ => Special::None,
        },
        _ if name == "ExtraValue"
            && MESSAGES.iter().any(|m| {
                m.path == path
                    && m.fields.len() == 1
                    && m.fields[0].label == Label::Repeated
                    && m.fields[0].ty == Ty::String
            }) =>
        {
            Special::StringList
        }
        _ => Special::None,
    }
}

/// `pod_i_ps` → `podIPs`: the fallback when no better name is known.
fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    for (i, part) in snake.split('_').filter(|p| !p.is_empty()).enumerate() {
        if i == 0 {
            out.push_str(part);
        } else {
            let mut chars = part.chars();
            if let Some(c) = chars.next() {
                out.push(c.to_ascii_uppercase());
                out.push_str(chars.as_str());
            }
        }
    }
    out
}

fn add<T: JsonSchema>(generator: &mut SchemaGenerator) {
    generator.subschema_for::<T>();
}

/// OpenAPI definitions of every served kind, plus the other kinds clients send
/// as request bodies (subresources, reviews) and the remaining GA kinds.
pub(super) fn definitions() -> Map<String, Value> {
    use k8s_openapi::api;
    let mut g = SchemaSettings::openapi3().into_generator();
    for r in RESOURCES {
        (r.schema)(&mut g);
    }
    add::<api::policy::v1::Eviction>(&mut g);
    add::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>(&mut g);
    add::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>(&mut g);
    add::<k8s_openapi::apimachinery::pkg::apis::meta::v1::WatchEvent<api::core::v1::Pod>>(&mut g);
    add::<api::autoscaling::v1::Scale>(&mut g);
    add::<api::core::v1::Binding>(&mut g);
    add::<api::core::v1::ComponentStatus>(&mut g);
    add::<api::authentication::v1::TokenRequest>(&mut g);
    add::<api::authentication::v1::TokenReview>(&mut g);
    add::<api::authentication::v1::SelfSubjectReview>(&mut g);
    add::<api::authorization::v1::SubjectAccessReview>(&mut g);
    add::<api::authorization::v1::SelfSubjectAccessReview>(&mut g);
    add::<api::authorization::v1::LocalSubjectAccessReview>(&mut g);
    add::<api::authorization::v1::SelfSubjectRulesReview>(&mut g);
    add::<api::certificates::v1::CertificateSigningRequest>(&mut g);
    add::<api::storage::v1::StorageClass>(&mut g);
    add::<api::storage::v1::CSIDriver>(&mut g);
    add::<api::storage::v1::CSINode>(&mut g);
    add::<api::storage::v1::CSIStorageCapacity>(&mut g);
    add::<api::storage::v1::VolumeAttachment>(&mut g);
    add::<api::node::v1::RuntimeClass>(&mut g);
    add::<api::networking::v1::IPAddress>(&mut g);
    add::<api::networking::v1::ServiceCIDR>(&mut g);
    add::<api::admissionregistration::v1::MutatingWebhookConfiguration>(&mut g);
    add::<api::admissionregistration::v1::ValidatingWebhookConfiguration>(&mut g);
    add::<api::admissionregistration::v1::ValidatingAdmissionPolicy>(&mut g);
    add::<api::admissionregistration::v1::ValidatingAdmissionPolicyBinding>(&mut g);
    add::<api::flowcontrol::v1::FlowSchema>(&mut g);
    add::<api::flowcontrol::v1::PriorityLevelConfiguration>(&mut g);
    add::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(&mut g);
    add::<k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService>(&mut g);
    g.take_definitions(true)
}

/// Go pointer fields of scalar type whose zero value means something other
/// than "unset" (`replicas: 0`, `automountServiceAccountToken: false`,
/// `storageClassName: ""`).
///
/// Upstream's protobuf encoder writes every non-pointer field, zero or not,
/// while its JSON encoder omits zero values of `omitempty` fields; the
/// protobuf message does not record which fields are pointers. So a zero
/// scalar is dropped unless the field is required in the OpenAPI schema
/// (`value: 0` of a PriorityClass) or listed here: dropping it makes the
/// server apply the same defaults as for a JSON body. Keyed by k8s-pb
/// message path; names are JSON names.
pub(super) static POINTER_FIELDS: &[(&str, &[&str])] = &[
    (
        "apimachinery.pkg.apis.meta.v1.ObjectMeta",
        &["deletionGracePeriodSeconds"],
    ),
    (
        "apimachinery.pkg.apis.meta.v1.ListMeta",
        &["remainingItemCount"],
    ),
    (
        "apimachinery.pkg.apis.meta.v1.DeleteOptions",
        &[
            "gracePeriodSeconds",
            "orphanDependents",
            "ignoreStoreReadErrorWithClusterBreakingPotential",
        ],
    ),
    (
        "apimachinery.pkg.apis.meta.v1.Preconditions",
        &["uid", "resourceVersion"],
    ),
    (
        "apimachinery.pkg.apis.meta.v1.OwnerReference",
        &["controller", "blockOwnerDeletion"],
    ),
    ("apimachinery.pkg.apis.meta.v1.PatchOptions", &["force"]),
    ("apimachinery.pkg.apis.meta.v1.ApplyOptions", &["force"]),
    (
        "api.core.v1.PodSpec",
        &[
            "terminationGracePeriodSeconds",
            "activeDeadlineSeconds",
            "automountServiceAccountToken",
            "shareProcessNamespace",
            "priority",
            "enableServiceLinks",
            "setHostnameAsFQDN",
            "hostUsers",
        ],
    ),
    (
        "api.core.v1.PodSecurityContext",
        &["runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup"],
    ),
    (
        "api.core.v1.SecurityContext",
        &[
            "privileged",
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "readOnlyRootFilesystem",
            "allowPrivilegeEscalation",
        ],
    ),
    (
        "api.core.v1.WindowsSecurityContextOptions",
        &["hostProcess"],
    ),
    ("api.core.v1.Probe", &["terminationGracePeriodSeconds"]),
    ("api.core.v1.Toleration", &["tolerationSeconds"]),
    ("api.core.v1.TopologySpreadConstraint", &["minDomains"]),
    (
        "api.core.v1.ConfigMapVolumeSource",
        &["defaultMode", "optional"],
    ),
    (
        "api.core.v1.SecretVolumeSource",
        &["defaultMode", "optional"],
    ),
    ("api.core.v1.ProjectedVolumeSource", &["defaultMode"]),
    ("api.core.v1.DownwardAPIVolumeSource", &["defaultMode"]),
    ("api.core.v1.KeyToPath", &["mode"]),
    ("api.core.v1.DownwardAPIVolumeFile", &["mode"]),
    ("api.core.v1.ConfigMapProjection", &["optional"]),
    ("api.core.v1.SecretProjection", &["optional"]),
    ("api.core.v1.ConfigMapKeySelector", &["optional"]),
    ("api.core.v1.SecretKeySelector", &["optional"]),
    ("api.core.v1.ConfigMapEnvSource", &["optional"]),
    ("api.core.v1.SecretEnvSource", &["optional"]),
    ("api.core.v1.FileKeySelector", &["optional"]),
    ("api.core.v1.ClusterTrustBundleProjection", &["optional"]),
    (
        "api.core.v1.ServiceAccountTokenProjection",
        &["expirationSeconds"],
    ),
    ("api.core.v1.CSIVolumeSource", &["readOnly"]),
    ("api.core.v1.AzureDiskVolumeSource", &["readOnly"]),
    (
        "api.core.v1.PersistentVolumeClaimSpec",
        &["storageClassName", "volumeAttributesClassName"],
    ),
    ("api.core.v1.ReplicationControllerSpec", &["replicas"]),
    (
        "api.core.v1.ServiceAccount",
        &["automountServiceAccountToken"],
    ),
    ("api.core.v1.Secret", &["immutable"]),
    ("api.core.v1.ConfigMap", &["immutable"]),
    (
        "api.core.v1.ServiceSpec",
        &["allocateLoadBalancerNodePorts"],
    ),
    ("api.core.v1.ClientIPConfig", &["timeoutSeconds"]),
    ("api.core.v1.ContainerStatus", &["started"]),
    (
        "api.apps.v1.DeploymentSpec",
        &[
            "replicas",
            "revisionHistoryLimit",
            "progressDeadlineSeconds",
        ],
    ),
    (
        "api.apps.v1.DeploymentStatus",
        &["collisionCount", "terminatingReplicas"],
    ),
    ("api.apps.v1.ReplicaSetSpec", &["replicas"]),
    ("api.apps.v1.ReplicaSetStatus", &["terminatingReplicas"]),
    ("api.apps.v1.DaemonSetSpec", &["revisionHistoryLimit"]),
    ("api.apps.v1.DaemonSetStatus", &["collisionCount"]),
    (
        "api.apps.v1.StatefulSetSpec",
        &["replicas", "revisionHistoryLimit"],
    ),
    ("api.apps.v1.StatefulSetStatus", &["collisionCount"]),
    (
        "api.apps.v1.RollingUpdateStatefulSetStrategy",
        &["partition"],
    ),
    (
        "api.batch.v1.JobSpec",
        &[
            "parallelism",
            "completions",
            "activeDeadlineSeconds",
            "backoffLimit",
            "backoffLimitPerIndex",
            "maxFailedIndexes",
            "manualSelector",
            "ttlSecondsAfterFinished",
            "suspend",
        ],
    ),
    ("api.batch.v1.JobStatus", &["ready", "terminating"]),
    (
        "api.batch.v1.CronJobSpec",
        &[
            "startingDeadlineSeconds",
            "suspend",
            "successfulJobsHistoryLimit",
            "failedJobsHistoryLimit",
        ],
    ),
    ("api.batch.v1.SuccessPolicyRule", &["succeededCount"]),
    (
        "api.autoscaling.v1.HorizontalPodAutoscalerSpec",
        &["minReplicas", "targetCPUUtilizationPercentage"],
    ),
    (
        "api.autoscaling.v1.HorizontalPodAutoscalerStatus",
        &["observedGeneration", "currentCPUUtilizationPercentage"],
    ),
    (
        "api.autoscaling.v2.HorizontalPodAutoscalerSpec",
        &["minReplicas"],
    ),
    (
        "api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        &["observedGeneration"],
    ),
    (
        "api.autoscaling.v2.HPAScalingRules",
        &["stabilizationWindowSeconds"],
    ),
    ("api.autoscaling.v2.MetricTarget", &["averageUtilization"]),
    (
        "api.autoscaling.v2.MetricValueStatus",
        &["averageUtilization"],
    ),
    (
        "api.authentication.v1.TokenRequestSpec",
        &["expirationSeconds"],
    ),
    (
        "api.certificates.v1.CertificateSigningRequestSpec",
        &["expirationSeconds"],
    ),
    (
        "api.coordination.v1.LeaseSpec",
        &["leaseDurationSeconds", "leaseTransitions"],
    ),
    (
        "api.discovery.v1.EndpointConditions",
        &["ready", "serving", "terminating"],
    ),
    ("api.discovery.v1.EndpointPort", &["port"]),
    ("api.networking.v1.NetworkPolicyPort", &["endPort"]),
    ("api.storage.v1.StorageClass", &["allowVolumeExpansion"]),
    (
        "api.storage.v1.CSIDriverSpec",
        &[
            "attachRequired",
            "podInfoOnMount",
            "storageCapacity",
            "requiresRepublish",
            "seLinuxMount",
            "nodeAllocatableUpdatePeriodSeconds",
            "serviceAccountTokenInSecrets",
        ],
    ),
    ("api.storage.v1.TokenRequest", &["expirationSeconds"]),
    ("api.storage.v1.VolumeNodeResources", &["count"]),
    (
        "api.admissionregistration.v1.MutatingWebhook",
        &["timeoutSeconds"],
    ),
    (
        "api.admissionregistration.v1.ValidatingWebhook",
        &["timeoutSeconds"],
    ),
    ("api.admissionregistration.v1.ServiceReference", &["port"]),
    (
        "api.flowcontrol.v1.LimitedPriorityLevelConfiguration",
        &[
            "nominalConcurrencyShares",
            "lendablePercent",
            "borrowingLimitPercent",
        ],
    ),
    (
        "api.flowcontrol.v1.ExemptPriorityLevelConfiguration",
        &["nominalConcurrencyShares", "lendablePercent"],
    ),
    (
        "apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps",
        &[
            "maximum",
            "minimum",
            "maxLength",
            "minLength",
            "maxItems",
            "minItems",
            "maxProperties",
            "minProperties",
            "multipleOf",
            "x-kubernetes-preserve-unknown-fields",
        ],
    ),
    (
        "kube_aggregator.pkg.apis.apiregistration.v1.ServiceReference",
        &["port"],
    ),
];
