//! Server-side printing: `meta.k8s.io/v1` `Table` responses for
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! Column definitions and cell contents follow upstream's printers
//! (`k8s.io/kubernetes/pkg/printers/internalversion/printers.go`). Like upstream's
//! `TableConvertor`, which generates with `Wide: true`, every row carries the cells of all
//! columns, including the priority-1 ("-o wide") ones; clients hide those themselves.
//! Kinds served by upstream's default table convertor (Role, ClusterRole, LimitRange,
//! CustomResourceDefinition) get `Name` / `Created At`; unknown kinds (custom resources)
//! get `Name` / `Age`.

use crate::selectors::LabelSelector;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

/// The `includeObject` query parameter of a Table request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// Rows carry `"object": null`.
    None,
    /// Rows carry a `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// Rows carry the full object.
    Object,
}

impl IncludeObject {
    /// Parses the query parameter value; empty means the default (`Metadata`).
    pub fn parse(s: &str) -> Option<IncludeObject> {
        match s {
            "None" => Some(IncludeObject::None),
            "" | "Metadata" => Some(IncludeObject::Metadata),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

/// Builds the `Table` for `objects` of `kind`. `metadata` is left empty for the caller to
/// fill (`resourceVersion`, `continue`, ...).
pub fn table_for<O: std::borrow::Borrow<Value>>(
    kind: &str,
    objects: &[O],
    now: Timestamp,
    include_object: IncludeObject,
) -> Value {
    let printer = printer(kind);
    let ctx = Ctx { now };
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let obj: &Value = obj.borrow();
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array((printer.cells)(obj, &ctx)));
            if kind == "Pod"
                && let Some(conditions) = pod_row_conditions(obj)
            {
                row.insert("conditions".into(), conditions);
            }
            row.insert("object".into(), row_object(obj, include_object));
            Value::Object(row)
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": column_definitions(kind),
        "rows": rows,
    })
}

/// The `columnDefinitions` of a kind's Table.
pub fn column_definitions(kind: &str) -> Vec<Value> {
    printer(kind)
        .columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect()
}

fn row_object(obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

// ---------------------------------------------------------------------------
// Durations (k8s.io/apimachinery/pkg/util/duration)
// ---------------------------------------------------------------------------

/// Upstream `duration.HumanDuration`: ~2-3 significant figures.
pub fn human_duration(d: SignedDuration) -> String {
    // Tolerate up to (but excluding) 2s of clock skew as "now".
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Upstream `duration.ShortHumanDuration`: one unit only.
pub fn short_human_duration(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        "<invalid>".into()
    } else if seconds < 0 {
        "0s".into()
    } else if seconds < 60 {
        format!("{seconds}s")
    } else if seconds < 3600 {
        format!("{}m", seconds / 60)
    } else if seconds < 24 * 3600 {
        format!("{}h", seconds / 3600)
    } else if seconds < 365 * 24 * 3600 {
        format!("{}d", seconds / (24 * 3600))
    } else {
        format!("{}y", seconds / (365 * 24 * 3600))
    }
}

struct Ctx {
    now: Timestamp,
}

impl Ctx {
    /// Upstream `translateTimestampSince`.
    fn since(&self, t: Option<Timestamp>) -> String {
        match t {
            Some(t) => human_duration(self.now.duration_since(t)),
            None => "<unknown>".into(),
        }
    }

    fn age(&self, obj: &Value) -> Value {
        Value::String(self.since(timestamp(obj, "/metadata/creationTimestamp")))
    }
}

// ---------------------------------------------------------------------------
// Columns
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Column {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
}

/// A default (priority 0) column.
const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 0,
    }
}

/// A column shown only with `-o wide` (priority 1).
const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 1,
    }
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";
const SELECTOR_DESC: &str = "A label query over pods that should match the replica count. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";

const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    description: NAME_DESC,
    priority: 0,
};
const AGE: Column = col("Age", "string", AGE_DESC);
const W_CONTAINERS: Column = wide("Containers", "string", CONTAINERS_DESC);
const W_IMAGES: Column = wide("Images", "string", IMAGES_DESC);
const W_SELECTOR: Column = wide("Selector", "string", SELECTOR_DESC);

type CellsFn = fn(&Value, &Ctx) -> Vec<Value>;

struct Printer {
    columns: &'static [Column],
    cells: CellsFn,
}

const fn p(columns: &'static [Column], cells: CellsFn) -> Printer {
    Printer { columns, cells }
}

fn printer(kind: &str) -> Printer {
    match kind {
        "Pod" => p(POD_COLUMNS, pod_cells),
        "PodTemplate" => p(POD_TEMPLATE_COLUMNS, pod_template_cells),
        "Node" => p(NODE_COLUMNS, node_cells),
        "Namespace" => p(NAMESPACE_COLUMNS, namespace_cells),
        "Service" => p(SERVICE_COLUMNS, service_cells),
        "Endpoints" => p(ENDPOINTS_COLUMNS, endpoints_cells),
        "ConfigMap" => p(CONFIGMAP_COLUMNS, configmap_cells),
        "Secret" => p(SECRET_COLUMNS, secret_cells),
        "ServiceAccount" => p(SERVICE_ACCOUNT_COLUMNS, service_account_cells),
        "Event" => p(EVENT_COLUMNS, event_cells),
        "PersistentVolume" => p(PV_COLUMNS, pv_cells),
        "PersistentVolumeClaim" => p(PVC_COLUMNS, pvc_cells),
        "ResourceQuota" => p(RESOURCE_QUOTA_COLUMNS, resource_quota_cells),
        "ComponentStatus" => p(COMPONENT_STATUS_COLUMNS, component_status_cells),
        "Deployment" => p(DEPLOYMENT_COLUMNS, deployment_cells),
        "ReplicaSet" => p(REPLICA_SET_COLUMNS, replica_set_cells),
        "ReplicationController" => p(REPLICATION_CONTROLLER_COLUMNS, replication_controller_cells),
        "DaemonSet" => p(DAEMON_SET_COLUMNS, daemon_set_cells),
        "StatefulSet" => p(STATEFUL_SET_COLUMNS, stateful_set_cells),
        "ControllerRevision" => p(CONTROLLER_REVISION_COLUMNS, controller_revision_cells),
        "Job" => p(JOB_COLUMNS, job_cells),
        "CronJob" => p(CRON_JOB_COLUMNS, cron_job_cells),
        "HorizontalPodAutoscaler" => p(HPA_COLUMNS, hpa_cells),
        "Lease" => p(LEASE_COLUMNS, lease_cells),
        "LeaseCandidate" => p(LEASE_CANDIDATE_COLUMNS, lease_candidate_cells),
        "EndpointSlice" => p(ENDPOINT_SLICE_COLUMNS, endpoint_slice_cells),
        "Ingress" => p(INGRESS_COLUMNS, ingress_cells),
        "IngressClass" => p(INGRESS_CLASS_COLUMNS, ingress_class_cells),
        "NetworkPolicy" => p(NETWORK_POLICY_COLUMNS, network_policy_cells),
        "ServiceCIDR" => p(SERVICE_CIDR_COLUMNS, service_cidr_cells),
        "PodDisruptionBudget" => p(PDB_COLUMNS, pdb_cells),
        "PriorityClass" => p(PRIORITY_CLASS_COLUMNS, priority_class_cells),
        "RuntimeClass" => p(RUNTIME_CLASS_COLUMNS, runtime_class_cells),
        "RoleBinding" | "ClusterRoleBinding" => p(ROLE_BINDING_COLUMNS, role_binding_cells),
        "CertificateSigningRequest" => p(CSR_COLUMNS, csr_cells),
        "ClusterTrustBundle" => p(CLUSTER_TRUST_BUNDLE_COLUMNS, cluster_trust_bundle_cells),
        "StorageClass" => p(STORAGE_CLASS_COLUMNS, storage_class_cells),
        "VolumeAttributesClass" => p(VAC_COLUMNS, vac_cells),
        "VolumeAttachment" => p(VOLUME_ATTACHMENT_COLUMNS, volume_attachment_cells),
        "CSINode" => p(CSI_NODE_COLUMNS, csi_node_cells),
        "CSIDriver" => p(CSI_DRIVER_COLUMNS, csi_driver_cells),
        "CSIStorageCapacity" => p(CSI_STORAGE_CAPACITY_COLUMNS, csi_storage_capacity_cells),
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            p(WEBHOOK_COLUMNS, webhook_cells)
        }
        "ValidatingAdmissionPolicy" => p(VAP_COLUMNS, vap_cells),
        "MutatingAdmissionPolicy" => p(MAP_COLUMNS, map_cells),
        "ValidatingAdmissionPolicyBinding" | "MutatingAdmissionPolicyBinding" => {
            p(POLICY_BINDING_COLUMNS, policy_binding_cells)
        }
        "FlowSchema" => p(FLOW_SCHEMA_COLUMNS, flow_schema_cells),
        "PriorityLevelConfiguration" => p(PLC_COLUMNS, plc_cells),
        "ResourceClaim" => p(RESOURCE_CLAIM_COLUMNS, resource_claim_cells),
        "ResourceSlice" => p(RESOURCE_SLICE_COLUMNS, resource_slice_cells),
        "APIService" => p(API_SERVICE_COLUMNS, api_service_cells),
        // Upstream's rest.DefaultTableConvertor.
        "Role" | "ClusterRole" | "LimitRange" | "CustomResourceDefinition" => {
            p(CREATED_AT_COLUMNS, created_at_cells)
        }
        _ => p(DEFAULT_COLUMNS, default_cells),
    }
}

// ---------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------

fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    v.pointer(pointer).filter(|v| !v.is_null())
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    at(v, pointer).and_then(Value::as_str).unwrap_or("")
}

fn opt_s<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    at(v, pointer).and_then(Value::as_str)
}

fn int(v: &Value, pointer: &str) -> i64 {
    at(v, pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn int_or(v: &Value, pointer: &str, default: i64) -> i64 {
    at(v, pointer).and_then(Value::as_i64).unwrap_or(default)
}

fn boolean(v: &Value, pointer: &str) -> bool {
    at(v, pointer).and_then(Value::as_bool).unwrap_or(false)
}

fn list<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    at(v, pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn map<'a>(v: &'a Value, pointer: &str) -> Option<&'a Map<String, Value>> {
    at(v, pointer).and_then(Value::as_object)
}

fn map_len(v: &Value, pointer: &str) -> usize {
    map(v, pointer).map_or(0, Map::len)
}

fn timestamp(v: &Value, pointer: &str) -> Option<Timestamp> {
    opt_s(v, pointer).and_then(|t| t.parse().ok())
}

fn annotation<'a>(obj: &'a Value, key: &str) -> &'a str {
    map(obj, "/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// A Quantity or IntOrString as printed by Go's `String()`.
fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A Quantity field; a missing one prints as the zero Quantity, `0`.
fn quantity(v: &Value, pointer: &str) -> String {
    at(v, pointer).map_or_else(|| "0".to_string(), scalar_string)
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.into()
    }
}

fn name(obj: &Value) -> Value {
    Value::String(s(obj, "/metadata/name").to_string())
}

fn str_cell(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// Upstream `labels.FormatLabels`.
fn format_labels(labels: Option<&Map<String, Value>>) -> String {
    let mut parts: Vec<String> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", scalar_string(v)))
        .collect();
    parts.sort();
    or_none(&parts.join(","))
}

/// Upstream `metav1.FormatLabelSelector`; a missing selector is `labels.Nothing()`.
fn format_label_selector(sel: Option<&Value>) -> String {
    match LabelSelector::from_label_selector_json(sel.unwrap_or(&Value::Null)) {
        Ok(s) => or_none(&s.to_string()),
        Err(_) => "<error>".into(),
    }
}

/// Upstream `layoutContainerCells`.
fn container_cells(containers: &[Value]) -> [Value; 2] {
    let names: Vec<&str> = containers.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "/image")).collect();
    [str_cell(names.join(",")), str_cell(images.join(","))]
}

/// Status of the first condition of `ty`, if any.
fn condition<'a>(obj: &'a Value, pointer: &str, ty: &str) -> Option<&'a Value> {
    list(obj, pointer).iter().find(|c| s(c, "/type") == ty)
}

fn condition_true(obj: &Value, pointer: &str, ty: &str) -> bool {
    condition(obj, pointer, ty).is_some_and(|c| s(c, "/status") == "True")
}

fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `list` joined with `,` plus ` + N more...` (upstream `listWithMoreString`).
fn list_with_more(items: Vec<String>, max: usize) -> String {
    let count = items.len();
    if count > max {
        format!("{} + {} more...", items[..max].join(","), count - max)
    } else if count == 0 {
        "<unset>".into()
    } else {
        items.join(",")
    }
}

/// Upstream `loadBalancerStatusStringer` with `wide` (the server always prints wide).
fn load_balancer_status(ingress: &[Value]) -> String {
    let mut result: Vec<&str> = ingress
        .iter()
        .filter_map(|i| {
            opt_s(i, "/ip")
                .filter(|s| !s.is_empty())
                .or(opt_s(i, "/hostname"))
        })
        .filter(|s| !s.is_empty())
        .collect();
    result.sort();
    result.dedup();
    result.join(",")
}

// ---------------------------------------------------------------------------
// Default convertors
// ---------------------------------------------------------------------------

const DEFAULT_COLUMNS: &[Column] = &[NAME, AGE];

fn default_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![name(obj), ctx.age(obj)]
}

const CREATED_AT_COLUMNS: &[Column] = &[NAME, col("Created At", "date", AGE_DESC)];

fn created_at_cells(obj: &Value, _: &Ctx) -> Vec<Value> {
    let created = timestamp(obj, "/metadata/creationTimestamp").map_or_else(
        || "0001-01-01T00:00:00Z".to_string(),
        |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    vec![name(obj), str_cell(created)]
}

// ---------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------

const POD_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    col(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide(
        "IP",
        "string",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    ),
    wide(
        "Node",
        "string",
        "NodeName indicates in which node this pod is scheduled.",
    ),
    wide(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
    ),
    wide(
        "Readiness Gates",
        "string",
        "If specified, all readiness gates will be evaluated for pod readiness.",
    ),
];

fn pod_row_conditions(pod: &Value) -> Option<Value> {
    let (reason, message) = match s(pod, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}

fn later(acc: &mut Option<Timestamp>, t: Option<Timestamp>) {
    if let Some(t) = t
        && acc.is_none_or(|a| a < t)
    {
        *acc = Some(t);
    }
}

/// Upstream `printPod`.
fn pod_cells(pod: &Value, ctx: &Ctx) -> Vec<Value> {
    let init_specs = list(pod, "/spec/initContainers");
    let restartable = |c: &Value| s(c, "/restartPolicy") == "Always";
    let is_restartable_init = |name: &str| {
        init_specs
            .iter()
            .any(|c| s(c, "/name") == name && restartable(c))
    };

    let total =
        list(pod, "/spec/containers").len() + init_specs.iter().filter(|c| restartable(c)).count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut restartable_restarts = 0;
    let mut last_restart = None;
    let mut last_restartable_restart = None;

    let phase = s(pod, "/status/phase");
    let mut reason = match s(pod, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if list(pod, "/status/conditions")
        .iter()
        .any(|c| s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }

    let mut initializing = false;
    for (i, c) in list(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        restarts += int(c, "/restartCount");
        let finished = timestamp(c, "/lastState/terminated/finishedAt");
        later(&mut last_restart, finished);
        let sidecar = is_restartable_init(s(c, "/name"));
        if sidecar {
            restartable_restarts += int(c, "/restartCount");
            later(&mut last_restartable_restart, finished);
        }
        let terminated = at(c, "/state/terminated");
        let waiting_reason = s(c, "/state/waiting/reason");
        if terminated.is_some_and(|t| int(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && boolean(c, "/started") {
            if boolean(c, "/ready") {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(t) = terminated {
            match s(t, "/reason") {
                "" if int(t, "/signal") != 0 => format!("Init:Signal:{}", int(t, "/signal")),
                "" => format!("Init:ExitCode:{}", int(t, "/exitCode")),
                r => format!("Init:{r}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{}/{}", i, init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "/status/conditions", "Initialized") {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for c in list(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(c, "/restartCount");
            later(
                &mut last_restart,
                timestamp(c, "/lastState/terminated/finishedAt"),
            );
            let waiting_reason = s(c, "/state/waiting/reason");
            let terminated = at(c, "/state/terminated");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                reason = match s(t, "/reason") {
                    "" if int(t, "/signal") != 0 => format!("Signal:{}", int(t, "/signal")),
                    "" => format!("ExitCode:{}", int(t, "/exitCode")),
                    r => r.to_string(),
                };
            } else if boolean(c, "/ready") && at(c, "/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        // A pod reporting Completed while a container still runs is Running/NotReady.
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "/status/conditions", "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    if at(pod, "/metadata/deletionTimestamp").is_some() {
        if s(pod, "/status/reason") == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", ctx.since(Some(t))),
        _ => restarts.to_string(),
    };

    let pod_ip = match s(pod, "/status/podIPs/0/ip") {
        "" => s(pod, "/status/podIP"),
        ip => ip,
    };
    let gates = list(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| condition_true(pod, "/status/conditions", s(g, "/conditionType")))
            .count();
        format!("{true_count}/{}", gates.len())
    };

    vec![
        name(pod),
        str_cell(format!("{ready}/{total}")),
        str_cell(reason),
        str_cell(restarts_cell),
        ctx.age(pod),
        str_cell(or_none(pod_ip)),
        str_cell(or_none(s(pod, "/spec/nodeName"))),
        str_cell(or_none(s(pod, "/status/nominatedNodeName"))),
        str_cell(readiness_gates),
    ]
}

const POD_TEMPLATE_COLUMNS: &[Column] = &[
    NAME,
    col("Containers", "string", CONTAINERS_DESC),
    col("Images", "string", IMAGES_DESC),
    col("Pod Labels", "string", "The labels for the pod template."),
];

fn pod_template_cells(obj: &Value, _: &Ctx) -> Vec<Value> {
    let [names, images] = container_cells(list(obj, "/template/spec/containers"));
    vec![
        name(obj),
        names,
        images,
        str_cell(format_labels(map(obj, "/template/metadata/labels"))),
    ]
}

// ---------------------------------------------------------------------------
// Core cluster objects
// ---------------------------------------------------------------------------

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide(
        "Internal-IP",
        "string",
        "List of addresses reachable to the node.",
    ),
    wide(
        "External-IP",
        "string",
        "List of addresses reachable to the node.",
    ),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

fn node_cells(node: &Value, ctx: &Ctx) -> Vec<Value> {
    let mut status = match condition(node, "/status/conditions", "Ready") {
        Some(c) if s(c, "/status") == "True" => vec!["Ready"],
        Some(_) => vec!["NotReady"],
        None => vec!["Unknown"],
    };
    if boolean(node, "/spec/unschedulable") {
        status.push("SchedulingDisabled");
    }
    let mut roles: Vec<String> = Vec::new();
    for (k, v) in map(node, "/metadata/labels").into_iter().flatten() {
        if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.push(role.to_string());
            }
        } else if k == "kubernetes.io/role" && v.as_str().is_some_and(|v| !v.is_empty()) {
            roles.push(scalar_string(v));
        }
    }
    roles.sort();
    roles.dedup();
    let address = |ty: &str| {
        list(node, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == ty)
            .map_or_else(|| "<none>".to_string(), |a| s(a, "/address").to_string())
    };
    let info = |field: &str| match s(node, &format!("/status/nodeInfo/{field}")) {
        "" => "<unknown>".to_string(),
        v => v.to_string(),
    };
    vec![
        name(node),
        str_cell(status.join(",")),
        str_cell(or_none(&roles.join(","))),
        ctx.age(node),
        str_cell(s(node, "/status/nodeInfo/kubeletVersion")),
        str_cell(address("InternalIP")),
        str_cell(address("ExternalIP")),
        str_cell(info("osImage")),
        str_cell(info("kernelVersion")),
        str_cell(info("containerRuntimeVersion")),
    ]
}

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the namespace"),
    AGE,
];

fn namespace_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![name(obj), str_cell(s(obj, "/status/phase")), ctx.age(obj)]
}

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "type determines how the Service is exposed.",
    ),
    col(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service and is usually assigned randomly.",
    ),
    col(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
    ),
    col(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service.",
    ),
    AGE,
    wide(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector.",
    ),
];

fn service_external_ip(svc: &Value) -> String {
    let external_ips: Vec<&str> = list(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match s(svc, "/spec/type") {
        "ClusterIP" | "NodePort" => or_none(&external_ips.join(",")),
        "LoadBalancer" => {
            let lb = load_balancer_status(list(svc, "/status/loadBalancer/ingress"));
            if !external_ips.is_empty() {
                let mut all: Vec<&str> = if lb.is_empty() {
                    vec![]
                } else {
                    lb.split(',').collect()
                };
                all.extend(external_ips);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".into()
            }
        }
        "ExternalName" => s(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    }
}

/// Upstream `makePortString`.
fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = list(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = opt_s(p, "/protocol").unwrap_or("TCP");
            match int(p, "/nodePort") {
                n if n > 0 => format!("{}:{n}/{protocol}", int(p, "/port")),
                _ => format!("{}/{protocol}", int(p, "/port")),
            }
        })
        .collect();
    or_none(&ports.join(","))
}

fn service_cells(svc: &Value, ctx: &Ctx) -> Vec<Value> {
    let cluster_ip = opt_s(svc, "/spec/clusterIPs/0")
        .or(opt_s(svc, "/spec/clusterIP"))
        .filter(|s| !s.is_empty())
        .unwrap_or("<none>");
    vec![
        name(svc),
        str_cell(s(svc, "/spec/type")),
        str_cell(cluster_ip),
        str_cell(service_external_ip(svc)),
        str_cell(service_ports(svc)),
        ctx.age(svc),
        str_cell(format_labels(map(svc, "/spec/selector"))),
    ]
}

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets.",
    ),
    AGE,
];

/// Upstream `formatEndpoints` (all ports).
fn format_endpoints(ep: &Value) -> String {
    let subsets = list(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let mut items: Vec<String> = Vec::new();
    let mut count = 0;
    let mut more = false;
    for ss in subsets {
        let addresses = list(ss, "/addresses");
        let ports = list(ss, "/ports");
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for a in addresses {
                if items.len() == MAX {
                    more = true;
                    break;
                }
                items.push(s(a, "/ip").to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if items.len() == MAX {
                    more = true;
                    break;
                }
                items.push(join_host_port(s(a, "/ip"), &int(port, "/port").to_string()));
            }
        }
    }
    if more {
        format!("{} + {} more...", items.join(","), count - MAX)
    } else {
        items.join(",")
    }
}

fn endpoints_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![name(obj), str_cell(format_endpoints(obj)), ctx.age(obj)]
}

const CONFIGMAP_COLUMNS: &[Column] = &[
    NAME,
    col("Data", "string", "Data contains the configuration data."),
    AGE,
];

fn configmap_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    let n = map_len(obj, "/data") + map_len(obj, "/binaryData");
    vec![name(obj), json!(n), ctx.age(obj)]
}

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data.",
    ),
    col("Data", "string", "Data contains the secret data."),
    AGE,
];

fn secret_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![
        name(obj),
        str_cell(s(obj, "/type")),
        json!(map_len(obj, "/data")),
        ctx.age(obj),
    ]
}

const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Secrets",
        "string",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
    ),
    AGE,
];

fn service_account_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![name(obj), json!(list(obj, "/secrets").len()), ctx.age(obj)]
}

const EVENT_COLUMNS: &[Column] = &[
    col(
        "Last Seen",
        "string",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    col(
        "Type",
        "string",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    col(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    col("Object", "string", "The object that this event is about."),
    wide(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
    ),
    wide(
        "Source",
        "string",
        "The component reporting this event. Should be a short machine understandable string.",
    ),
    col(
        "Message",
        "string",
        "A human-readable description of the status of this operation.",
    ),
    wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    wide(
        "Count",
        "string",
        "The number of times this event has occurred.",
    ),
    Column {
        name: "Name",
        ty: "string",
        format: "name",
        description: NAME_DESC,
        priority: 1,
    },
];

/// Upstream `printEvent`; also reads events.k8s.io/v1 objects (`regarding`, `note`,
/// `deprecated*`).
fn event_cells(ev: &Value, ctx: &Ctx) -> Vec<Value> {
    let either = |a: &str, b: &str| at(ev, a).or_else(|| at(ev, b));
    let first_ts = timestamp(ev, "/firstTimestamp").or(timestamp(ev, "/deprecatedFirstTimestamp"));
    let first = match first_ts {
        Some(t) => ctx.since(Some(t)),
        None => ctx.since(timestamp(ev, "/eventTime")),
    };
    let mut last =
        match timestamp(ev, "/lastTimestamp").or(timestamp(ev, "/deprecatedLastTimestamp")) {
            Some(t) => ctx.since(Some(t)),
            None => first.clone(),
        };
    let mut count = either("/count", "/deprecatedCount")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(series) = at(ev, "/series") {
        last = ctx.since(timestamp(series, "/lastObservedTime"));
        count = int(series, "/count");
    } else if count == 0 {
        count = 1; // singleton events in the new API have no count
    }
    let null = Value::Null;
    let involved = either("/involvedObject", "/regarding").unwrap_or(&null);
    let kind = s(involved, "/kind").to_lowercase();
    let target = match s(involved, "/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let source = either("/source", "/deprecatedSource").unwrap_or(&null);
    let component = match s(source, "/component") {
        "" => opt_s(ev, "/reportingComponent")
            .or(opt_s(ev, "/reportingController"))
            .unwrap_or(""),
        c => c,
    };
    let instance = match s(source, "/host") {
        "" => s(ev, "/reportingInstance"),
        h => h,
    };
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    let message = either("/message", "/note")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    vec![
        str_cell(last),
        str_cell(s(ev, "/type")),
        str_cell(s(ev, "/reason")),
        str_cell(target),
        str_cell(s(involved, "/fieldPath")),
        str_cell(source),
        str_cell(message),
        str_cell(first),
        json!(count),
        name(ev),
    ]
}

// ---------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------

/// Upstream `helper.GetAccessModesAsString`.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The beta storage-class annotation wins over `spec.storageClassName`.
fn storage_class(obj: &Value) -> String {
    match annotation(obj, "volume.beta.kubernetes.io/storage-class") {
        "" => s(obj, "/spec/storageClassName").to_string(),
        a => a.to_string(),
    }
}

fn phase_or_terminating(obj: &Value) -> String {
    if at(obj, "/metadata/deletionTimestamp").is_some() {
        "Terminating".into()
    } else {
        s(obj, "/status/phase").into()
    }
}

fn unset_or(obj: &Value, pointer: &str) -> String {
    opt_s(obj, pointer).unwrap_or("<unset>").to_string()
}

const PV_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Capacity",
        "string",
        "capacity is the description of the persistent volume's resources and capacity.",
    ),
    col(
        "Access Modes",
        "string",
        "accessModes contains all ways the volume can be mounted.",
    ),
    col(
        "Reclaim Policy",
        "string",
        "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
    ),
    col(
        "Status",
        "string",
        "phase indicates if a volume is available, bound to a claim, or released by a claim.",
    ),
    col(
        "Claim",
        "string",
        "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
    ),
    col("StorageClass", "string", "StorageClass of the pv"),
    col(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pv",
    ),
    col(
        "Reason",
        "string",
        "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
    ),
];

fn pv_cells(pv: &Value, ctx: &Ctx) -> Vec<Value> {
    let claim = match at(pv, "/spec/claimRef") {
        Some(c) => format!("{}/{}", s(c, "/namespace"), s(c, "/name")),
        None => String::new(),
    };
    vec![
        name(pv),
        str_cell(quantity(pv, "/spec/capacity/storage")),
        str_cell(access_modes(list(pv, "/spec/accessModes"))),
        str_cell(s(pv, "/spec/persistentVolumeReclaimPolicy")),
        str_cell(phase_or_terminating(pv)),
        str_cell(claim),
        str_cell(storage_class(pv)),
        str_cell(unset_or(pv, "/spec/volumeAttributesClassName")),
        str_cell(s(pv, "/status/reason")),
        ctx.age(pv),
        str_cell(unset_or(pv, "/spec/volumeMode")),
    ]
}

const PVC_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Status",
        "string",
        "phase represents the current phase of PersistentVolumeClaim.",
    ),
    col(
        "Volume",
        "string",
        "volumeName is the binding reference to the PersistentVolume backing this claim.",
    ),
    col(
        "Capacity",
        "string",
        "capacity represents the actual resources of the underlying volume.",
    ),
    col(
        "Access Modes",
        "string",
        "accessModes contains the actual access modes the volume backing the PVC has.",
    ),
    col("StorageClass", "string", "StorageClass of the pvc"),
    col(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pvc",
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines what type of volume is required by the claim.",
    ),
];

fn pvc_cells(pvc: &Value, ctx: &Ctx) -> Vec<Value> {
    let volume = s(pvc, "/spec/volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(pvc, "/status/capacity/storage"),
            access_modes(list(pvc, "/status/accessModes")),
        )
    };
    vec![
        name(pvc),
        str_cell(phase_or_terminating(pvc)),
        str_cell(volume),
        str_cell(capacity),
        str_cell(modes),
        str_cell(storage_class(pvc)),
        str_cell(unset_or(pvc, "/spec/volumeAttributesClassName")),
        ctx.age(pvc),
        str_cell(unset_or(pvc, "/spec/volumeMode")),
    ]
}

const STORAGE_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Provisioner",
        "string",
        "provisioner indicates the type of the provisioner.",
    ),
    col(
        "ReclaimPolicy",
        "string",
        "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class.",
    ),
    col(
        "VolumeBindingMode",
        "string",
        "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.",
    ),
    col(
        "AllowVolumeExpansion",
        "string",
        "allowVolumeExpansion shows whether the storage class allow volume expand.",
    ),
    AGE,
];

fn storage_class_cells(sc: &Value, ctx: &Ctx) -> Vec<Value> {
    let is_default = annotation(sc, "storageclass.kubernetes.io/is-default-class") == "true"
        || annotation(sc, "storageclass.beta.kubernetes.io/is-default-class") == "true";
    let mut display = s(sc, "/metadata/name").to_string();
    if is_default {
        display.push_str(" (default)");
    }
    vec![
        str_cell(display),
        str_cell(s(sc, "/provisioner")),
        str_cell(opt_s(sc, "/reclaimPolicy").unwrap_or("Delete")),
        str_cell(opt_s(sc, "/volumeBindingMode").unwrap_or("Immediate")),
        json!(boolean(sc, "/allowVolumeExpansion")),
        ctx.age(sc),
    ]
}

const VAC_COLUMNS: &[Column] = &[
    NAME,
    col("DriverName", "string", "Name of the CSI driver"),
    AGE,
];

fn vac_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![name(obj), str_cell(s(obj, "/driverName")), ctx.age(obj)]
}

const VOLUME_ATTACHMENT_COLUMNS: &[Column] = &[
    NAME,
    Column {
        name: "Attacher",
        ty: "string",
        format: "name",
        description: "attacher indicates the name of the volume driver that MUST handle this request.",
        priority: 0,
    },
    col(
        "PV",
        "string",
        "persistentVolumeName represents the name of the persistent volume to attach.",
    ),
    col(
        "Node",
        "string",
        "nodeName represents the node that the volume should be attached to.",
    ),
    col(
        "Attached",
        "boolean",
        "attached indicates the volume is successfully attached.",
    ),
    AGE,
];

fn volume_attachment_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![
        name(obj),
        str_cell(s(obj, "/spec/attacher")),
        str_cell(s(obj, "/spec/source/persistentVolumeName")),
        str_cell(s(obj, "/spec/nodeName")),
        json!(boolean(obj, "/status/attached")),
        ctx.age(obj),
    ]
}

const CSI_NODE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Drivers",
        "integer",
        "Drivers indicates the number of CSI drivers registered on the node",
    ),
    AGE,
];

fn csi_node_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![
        name(obj),
        json!(list(obj, "/spec/drivers").len()),
        ctx.age(obj),
    ]
}

const CSI_DRIVER_COLUMNS: &[Column] = &[
    NAME,
    col(
        "AttachRequired",
        "boolean",
        "attachRequired indicates this CSI volume driver requires an attach operation.",
    ),
    col(
        "PodInfoOnMount",
        "boolean",
        "podInfoOnMount indicates this CSI volume driver requires additional pod information during mount operations.",
    ),
    col(
        "StorageCapacity",
        "boolean",
        "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity.",
    ),
    col(
        "TokenRequests",
        "string",
        "tokenRequests indicates the CSI driver needs pods' service account tokens it is mounting volume for.",
    ),
    col(
        "RequiresRepublish",
        "boolean",
        "requiresRepublish indicates the CSI driver wants NodePublishVolume being periodically called.",
    ),
    col(
        "Modes",
        "string",
        "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports.",
    ),
    AGE,
];

fn csi_driver_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    let tokens = match at(obj, "/spec/tokenRequests").and_then(Value::as_array) {
        Some(t) => t
            .iter()
            .map(|t| s(t, "/audience"))
            .collect::<Vec<_>>()
            .join(","),
        None => "<unset>".into(),
    };
    let modes: Vec<&str> = list(obj, "/spec/volumeLifecycleModes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    vec![
        name(obj),
        json!(
            at(obj, "/spec/attachRequired")
                .and_then(Value::as_bool)
                .unwrap_or(true)
        ),
        json!(boolean(obj, "/spec/podInfoOnMount")),
        json!(boolean(obj, "/spec/storageCapacity")),
        str_cell(tokens),
        json!(boolean(obj, "/spec/requiresRepublish")),
        str_cell(or_none(&modes.join(","))),
        ctx.age(obj),
    ]
}

const CSI_STORAGE_CAPACITY_COLUMNS: &[Column] = &[
    NAME,
    col(
        "StorageClassName",
        "string",
        "storageClassName represents the name of the StorageClass that the reported capacity applies to.",
    ),
    col(
        "Capacity",
        "string",
        "capacity is the value reported by the CSI driver in its GetCapacityResponse.",
    ),
];

fn csi_storage_capacity_cells(obj: &Value, _: &Ctx) -> Vec<Value> {
    let capacity = at(obj, "/capacity").map_or_else(|| "<unset>".to_string(), scalar_string);
    vec![
        name(obj),
        str_cell(s(obj, "/storageClassName")),
        str_cell(capacity),
    ]
}

const RESOURCE_QUOTA_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Request",
        "string",
        "Request represents a minimum amount of cpu/memory that a container may consume.",
    ),
    col(
        "Limit",
        "string",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
    ),
    AGE,
];

fn resource_quota_cells(rq: &Value, ctx: &Ctx) -> Vec<Value> {
    let mut resources: Vec<&String> = map(rq, "/status/hard")
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .collect();
    resources.sort();
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    for r in resources {
        let used = map(rq, "/status/used")
            .and_then(|m| m.get(r))
            .map_or_else(|| "0".into(), scalar_string);
        let hard = map(rq, "/status/hard")
            .and_then(|m| m.get(r))
            .map_or_else(|| "0".into(), scalar_string);
        let entry = format!("{r}: {used}/{hard}");
        let pieces: Vec<&str> = r.split('.').collect();
        if pieces.len() > 1 && pieces[0] == "limits" {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    vec![
        name(rq),
        str_cell(requests.join(", ")),
        str_cell(limits.join(", ")),
        ctx.age(rq),
    ]
}

const COMPONENT_STATUS_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the component conditions"),
    col("Message", "string", "Message of the component conditions"),
    col("Error", "string", "Error of the component conditions"),
];

fn component_status_cells(obj: &Value, _: &Ctx) -> Vec<Value> {
    let (status, message, error) = match condition(obj, "/conditions", "Healthy") {
        Some(c) => (
            if s(c, "/status") == "True" {
                "Healthy"
            } else {
                "Unhealthy"
            },
            s(c, "/message"),
            s(c, "/error"),
        ),
        None => ("Unknown", "", ""),
    };
    vec![
        name(obj),
        str_cell(status),
        str_cell(message),
        str_cell(error),
    ]
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "string",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    col(
        "Available",
        "string",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    W_CONTAINERS,
    W_IMAGES,
    W_SELECTOR,
];

fn deployment_cells(d: &Value, ctx: &Ctx) -> Vec<Value> {
    let selector = match LabelSelector::from_label_selector_json(
        at(d, "/spec/selector").unwrap_or(&Value::Null),
    ) {
        Ok(sel) => sel.to_string(),
        Err(_) => "<invalid>".into(),
    };
    let [names, images] = container_cells(list(d, "/spec/template/spec/containers"));
    vec![
        name(d),
        str_cell(format!(
            "{}/{}",
            int(d, "/status/readyReplicas"),
            int_or(d, "/spec/replicas", 1)
        )),
        json!(int(d, "/status/updatedReplicas")),
        json!(int(d, "/status/availableReplicas")),
        ctx.age(d),
        names,
        images,
        str_cell(selector),
    ]
}

const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired pods.",
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of replicas.",
    ),
    col(
        "Ready",
        "integer",
        "The number of ready replicas for this replica set.",
    ),
    AGE,
    W_CONTAINERS,
    W_IMAGES,
    W_SELECTOR,
];

fn replica_set_cells(rs: &Value, ctx: &Ctx) -> Vec<Value> {
    let [names, images] = container_cells(list(rs, "/spec/template/spec/containers"));
    vec![
        name(rs),
        json!(int_or(rs, "/spec/replicas", 1)),
        json!(int(rs, "/status/replicas")),
        json!(int(rs, "/status/readyReplicas")),
        ctx.age(rs),
        names,
        images,
        str_cell(format_label_selector(at(rs, "/spec/selector"))),
    ]
}

const REPLICATION_CONTROLLER_COLUMNS: &[Column] = REPLICA_SET_COLUMNS;

fn replication_controller_cells(rc: &Value, ctx: &Ctx) -> Vec<Value> {
    let [names, images] = container_cells(list(rc, "/spec/template/spec/containers"));
    vec![
        name(rc),
        json!(int_or(rc, "/spec/replicas", 1)),
        json!(int(rc, "/status/replicas")),
        json!(int(rc, "/status/readyReplicas")),
        ctx.age(rc),
        names,
        images,
        str_cell(format_labels(map(rc, "/spec/selector"))),
    ]
}

const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "The total number of nodes that should be running the daemon pod.",
    ),
    col(
        "Current",
        "integer",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
    ),
    col(
        "Ready",
        "integer",
        "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
    ),
    col(
        "Up-to-date",
        "integer",
        "The total number of nodes that are running updated daemon pod",
    ),
    col(
        "Available",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
    ),
    col(
        "Node Selector",
        "string",
        "NodeSelector is a selector which must be true for the pod to fit on a node.",
    ),
    AGE,
    W_CONTAINERS,
    W_IMAGES,
    W_SELECTOR,
];

fn daemon_set_cells(ds: &Value, ctx: &Ctx) -> Vec<Value> {
    let [names, images] = container_cells(list(ds, "/spec/template/spec/containers"));
    vec![
        name(ds),
        json!(int(ds, "/status/desiredNumberScheduled")),
        json!(int(ds, "/status/currentNumberScheduled")),
        json!(int(ds, "/status/numberReady")),
        json!(int(ds, "/status/updatedNumberScheduled")),
        json!(int(ds, "/status/numberAvailable")),
        str_cell(format_labels(map(ds, "/spec/template/spec/nodeSelector"))),
        ctx.age(ds),
        names,
        images,
        str_cell(format_label_selector(at(ds, "/spec/selector"))),
    ]
}

const STATEFUL_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    AGE,
    W_CONTAINERS,
    W_IMAGES,
];

fn stateful_set_cells(ss: &Value, ctx: &Ctx) -> Vec<Value> {
    let [names, images] = container_cells(list(ss, "/spec/template/spec/containers"));
    vec![
        name(ss),
        str_cell(format!(
            "{}/{}",
            int(ss, "/status/readyReplicas"),
            int_or(ss, "/spec/replicas", 1)
        )),
        ctx.age(ss),
        names,
        images,
    ]
}

const CONTROLLER_REVISION_COLUMNS: &[Column] = &[
    NAME,
    col("Controller", "string", "Controller of the object"),
    col(
        "Revision",
        "string",
        "Revision indicates the revision of the state represented by Data.",
    ),
    AGE,
];

fn controller_revision_cells(cr: &Value, ctx: &Ctx) -> Vec<Value> {
    let controller = list(cr, "/metadata/ownerReferences")
        .iter()
        .find(|r| boolean(r, "/controller"))
        .map_or_else(
            || "<none>".to_string(),
            |r| {
                let group = s(r, "/apiVersion").rsplit_once('/').map_or("", |(g, _)| g);
                let kind = s(r, "/kind");
                match (kind, group) {
                    ("", "") => s(r, "/name").to_string(),
                    (k, "") => format!("{}/{}", k.to_lowercase(), s(r, "/name")),
                    (k, g) => format!(
                        "{}.{}/{}",
                        k.to_lowercase(),
                        g.to_lowercase(),
                        s(r, "/name")
                    ),
                }
            },
        );
    vec![
        name(cr),
        str_cell(controller),
        json!(int(cr, "/revision")),
        ctx.age(cr),
    ]
}

const JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
    ),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    W_CONTAINERS,
    W_IMAGES,
    W_SELECTOR,
];

fn job_cells(job: &Value, ctx: &Ctx) -> Vec<Value> {
    let succeeded = int(job, "/status/succeeded");
    let completions = match at(job, "/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int_or(job, "/spec/parallelism", 1) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        timestamp(job, "/status/startTime"),
        timestamp(job, "/status/completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(ctx.now.duration_since(start)),
        (Some(start), Some(end)) => human_duration(end.duration_since(start)),
    };
    let has = |ty: &str| condition_true(job, "/status/conditions", ty);
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if at(job, "/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let [names, images] = container_cells(list(job, "/spec/template/spec/containers"));
    vec![
        name(job),
        str_cell(status),
        str_cell(completions),
        str_cell(duration),
        ctx.age(job),
        names,
        images,
        str_cell(format_label_selector(at(job, "/spec/selector"))),
    ]
}

const CRON_JOB_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Schedule",
        "string",
        "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
    ),
    col(
        "Timezone",
        "string",
        "The time zone name for the given schedule.",
    ),
    col(
        "Suspend",
        "boolean",
        "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.",
    ),
    col(
        "Active",
        "integer",
        "A list of pointers to currently running jobs.",
    ),
    col(
        "Last Schedule",
        "string",
        "Information when was the last time the job was successfully scheduled.",
    ),
    AGE,
    W_CONTAINERS,
    W_IMAGES,
    W_SELECTOR,
];

fn cron_job_cells(cj: &Value, ctx: &Ctx) -> Vec<Value> {
    let suspend = match at(cj, "/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let last_schedule = match timestamp(cj, "/status/lastScheduleTime") {
        Some(t) => ctx.since(Some(t)),
        None => "<none>".into(),
    };
    let [names, images] =
        container_cells(list(cj, "/spec/jobTemplate/spec/template/spec/containers"));
    vec![
        name(cj),
        str_cell(s(cj, "/spec/schedule")),
        str_cell(opt_s(cj, "/spec/timeZone").unwrap_or("<none>")),
        str_cell(suspend),
        json!(list(cj, "/status/active").len()),
        str_cell(last_schedule),
        ctx.age(cj),
        names,
        images,
        str_cell(format_label_selector(at(
            cj,
            "/spec/jobTemplate/spec/selector",
        ))),
    ]
}

const HPA_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Reference",
        "string",
        "reference to scaled resource; horizontal pod autoscaler will learn the current resource consumption and will set the desired number of pods by using its Scale subresource.",
    ),
    col(
        "Targets",
        "string",
        "metrics contains the specifications for which to use to calculate the desired replica count.",
    ),
    col(
        "MinPods",
        "string",
        "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
    ),
    col(
        "MaxPods",
        "string",
        "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
    ),
    col(
        "Replicas",
        "string",
        "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.",
    ),
    AGE,
];

/// The metric specs and statuses in autoscaling/v2 form (autoscaling/v1's CPU target is
/// converted the way upstream's conversion does).
fn hpa_metrics_v2(hpa: &Value) -> (Vec<Value>, Vec<Value>) {
    if let Some(specs) = at(hpa, "/spec/metrics").and_then(Value::as_array) {
        return (specs.clone(), list(hpa, "/status/currentMetrics").to_vec());
    }
    let mut specs = Vec::new();
    let mut statuses = Vec::new();
    if let Some(target) = at(hpa, "/spec/targetCPUUtilizationPercentage") {
        specs.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": target}}}));
        if let Some(current) = at(hpa, "/status/currentCPUUtilizationPercentage") {
            statuses.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": current}}}));
        }
    }
    (specs, statuses)
}

/// Upstream `formatHPAMetrics`.
fn format_hpa_metrics(hpa: &Value) -> String {
    let (specs, statuses) = hpa_metrics_v2(hpa);
    if specs.is_empty() {
        return "<none>".into();
    }
    let unknown = || "<unknown>".to_string();
    let q = |v: &Value, p: &str| at(v, p).map(scalar_string);
    let mut items = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        // The status entry for this metric, when it has the member for this source type.
        let current = |member: &str, field: &str| {
            status
                .and_then(|st| at(st, &format!("/{member}")))
                .map(|m| q(m, &format!("/current/{field}")))
        };
        let item = match s(spec, "/type") {
            ty @ ("External" | "Object") => {
                let member = if ty == "External" {
                    "external"
                } else {
                    "object"
                };
                match q(spec, &format!("/{member}/target/averageValue")) {
                    Some(target) => {
                        let cur = current(member, "averageValue")
                            .flatten()
                            .unwrap_or_else(unknown);
                        format!("{cur}/{target} (avg)")
                    }
                    None => {
                        let cur = current(member, "value")
                            .map_or_else(unknown, |v| v.unwrap_or_else(|| "0".into()));
                        let target = q(spec, &format!("/{member}/target/value"))
                            .unwrap_or_else(|| "0".into());
                        format!("{cur}/{target}")
                    }
                }
            }
            "Pods" => {
                let cur = current("pods", "averageValue")
                    .map_or_else(unknown, |v| v.unwrap_or_else(|| "0".into()));
                let target = q(spec, "/pods/target/averageValue").unwrap_or_else(|| "0".into());
                format!("{cur}/{target}")
            }
            ty @ ("Resource" | "ContainerResource") => {
                let member = if ty == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let resource = s(spec, &format!("/{member}/name"));
                match q(spec, &format!("/{member}/target/averageValue")) {
                    Some(target) => {
                        let cur = current(member, "averageValue")
                            .map_or_else(unknown, |v| v.unwrap_or_else(|| "0".into()));
                        format!("{resource}: {cur}/{target}")
                    }
                    None => {
                        let cur = current(member, "averageUtilization")
                            .flatten()
                            .map_or_else(unknown, |u| format!("{u}%"));
                        let target = q(spec, &format!("/{member}/target/averageUtilization"))
                            .map_or_else(|| "<auto>".to_string(), |u| format!("{u}%"));
                        format!("{resource}: {cur}/{target}")
                    }
                }
            }
            _ => "<unknown type>".into(),
        };
        items.push(item);
    }
    const MAX: usize = 2;
    if items.len() > MAX {
        format!(
            "{} + {} more...",
            items[..MAX].join(", "),
            items.len() - MAX
        )
    } else {
        items.join(", ")
    }
}

fn hpa_cells(hpa: &Value, ctx: &Ctx) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        s(hpa, "/spec/scaleTargetRef/kind"),
        s(hpa, "/spec/scaleTargetRef/name")
    );
    let min_pods =
        at(hpa, "/spec/minReplicas").map_or_else(|| "<unset>".to_string(), scalar_string);
    vec![
        name(hpa),
        str_cell(reference),
        str_cell(format_hpa_metrics(hpa)),
        str_cell(min_pods),
        json!(int(hpa, "/spec/maxReplicas")),
        json!(int(hpa, "/status/currentReplicas")),
        ctx.age(hpa),
    ]
}

const PDB_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
    ),
    col(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
    ),
    col(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
    ),
    AGE,
];

fn pdb_cells(pdb: &Value, ctx: &Ctx) -> Vec<Value> {
    let int_or_string = |p: &str| at(pdb, p).map_or_else(|| "N/A".to_string(), scalar_string);
    vec![
        name(pdb),
        str_cell(int_or_string("/spec/minAvailable")),
        str_cell(int_or_string("/spec/maxUnavailable")),
        json!(int(pdb, "/status/disruptionsAllowed")),
        ctx.age(pdb),
    ]
}

const PRIORITY_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Value",
        "integer",
        "value represents the integer value of this priority class.",
    ),
    col(
        "Global-Default",
        "boolean",
        "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class.",
    ),
    AGE,
    col(
        "PreemptionPolicy",
        "string",
        "preemptionPolicy is the Policy for preempting pods with lower priority.",
    ),
];

fn priority_class_cells(pc: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![
        name(pc),
        json!(int(pc, "/value")),
        json!(boolean(pc, "/globalDefault")),
        ctx.age(pc),
        str_cell(s(pc, "/preemptionPolicy")),
    ]
}

const RUNTIME_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Handler",
        "string",
        "handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class.",
    ),
    AGE,
];

fn runtime_class_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![name(obj), str_cell(s(obj, "/handler")), ctx.age(obj)]
}

// ---------------------------------------------------------------------------
// Networking and discovery
// ---------------------------------------------------------------------------

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];

fn lease_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![
        name(obj),
        str_cell(s(obj, "/spec/holderIdentity")),
        ctx.age(obj),
    ]
}

const LEASE_CANDIDATE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "LeaseName",
        "string",
        "LeaseName is the name of the lease for which this candidate is contending.",
    ),
    col(
        "BinaryVersion",
        "string",
        "BinaryVersion is the binary version.",
    ),
    col(
        "EmulationVersion",
        "string",
        "EmulationVersion is the emulation version.",
    ),
    AGE,
];

fn lease_candidate_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![
        name(obj),
        str_cell(s(obj, "/spec/leaseName")),
        str_cell(s(obj, "/spec/binaryVersion")),
        str_cell(s(obj, "/spec/emulationVersion")),
        ctx.age(obj),
    ]
}

const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice.",
    ),
    col(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    col(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

fn endpoint_slice_cells(es: &Value, ctx: &Ctx) -> Vec<Value> {
    let ports: Vec<String> = list(es, "/ports")
        .iter()
        .map(|p| match (at(p, "/port"), opt_s(p, "/name")) {
            (Some(port), _) => scalar_string(port),
            (None, Some(n)) => n.to_string(),
            (None, None) => "*".to_string(),
        })
        .collect();
    let addresses: Vec<String> = list(es, "/endpoints")
        .iter()
        .flat_map(|e| list(e, "/addresses"))
        .map(scalar_string)
        .collect();
    vec![
        name(es),
        str_cell(s(es, "/addressType")),
        str_cell(list_with_more(ports, 3)),
        str_cell(list_with_more(addresses, 3)),
        ctx.age(es),
    ]
}

const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    col(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    col(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    col("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

fn ingress_cells(ing: &Value, ctx: &Ctx) -> Vec<Value> {
    let rules = list(ing, "/spec/rules");
    const MAX: usize = 3;
    let hosts: Vec<&str> = rules
        .iter()
        .map(|r| s(r, "/host"))
        .filter(|h| !h.is_empty())
        .take(MAX)
        .collect();
    let hosts = if hosts.is_empty() {
        "*".to_string()
    } else if rules.len() > MAX {
        format!("{} + {} more...", hosts.join(","), rules.len() - MAX)
    } else {
        hosts.join(",")
    };
    let ports = if list(ing, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(ing),
        str_cell(opt_s(ing, "/spec/ingressClassName").unwrap_or("<none>")),
        str_cell(hosts),
        str_cell(load_balancer_status(list(
            ing,
            "/status/loadBalancer/ingress",
        ))),
        str_cell(ports),
        ctx.age(ing),
    ]
}

const INGRESS_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Controller",
        "string",
        "Controller that is responsible for handling this class",
    ),
    col(
        "Parameters",
        "string",
        "A reference to a resource with additional parameters",
    ),
    AGE,
];

fn ingress_class_cells(ic: &Value, ctx: &Ctx) -> Vec<Value> {
    let parameters = match at(ic, "/spec/parameters") {
        Some(p) => {
            let mut out = s(p, "/kind").to_string();
            if let Some(group) = opt_s(p, "/apiGroup") {
                out = format!("{out}.{group}");
            }
            format!("{out}/{}", s(p, "/name"))
        }
        None => "<none>".into(),
    };
    vec![
        name(ic),
        str_cell(s(ic, "/spec/controller")),
        str_cell(parameters),
        ctx.age(ic),
    ]
}

const NETWORK_POLICY_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Pod-Selector",
        "string",
        "podSelector selects the pods to which this NetworkPolicy object applies.",
    ),
    AGE,
];

fn network_policy_cells(np: &Value, ctx: &Ctx) -> Vec<Value> {
    // podSelector is not a pointer upstream: absent means the empty selector.
    let empty = json!({});
    let selector = at(np, "/spec/podSelector").unwrap_or(&empty);
    vec![
        name(np),
        str_cell(format_label_selector(Some(selector))),
        ctx.age(np),
    ]
}

const SERVICE_CIDR_COLUMNS: &[Column] = &[
    NAME,
    col(
        "CIDRs",
        "string",
        "CIDRs defines the IP blocks in CIDR notation from which to assign service cluster IPs.",
    ),
    AGE,
];

fn service_cidr_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    let cidrs: Vec<&str> = list(obj, "/spec/cidrs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    vec![name(obj), str_cell(cidrs.join(",")), ctx.age(obj)]
}

const API_SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Service",
        "string",
        "The reference to the service that hosts this API endpoint.",
    ),
    col("Available", "string", "Whether this service is available."),
    AGE,
];

fn api_service_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    let service = match at(obj, "/spec/service") {
        Some(svc) => format!("{}/{}", s(svc, "/namespace"), s(svc, "/name")),
        None => "Local".into(),
    };
    let available = match condition(obj, "/status/conditions", "Available") {
        Some(c) if s(c, "/status") == "True" => "True".to_string(),
        Some(c) => match s(c, "/reason") {
            "" => s(c, "/status").to_string(),
            r => format!("{} ({r})", s(c, "/status")),
        },
        None => "Unknown".into(),
    };
    vec![
        name(obj),
        str_cell(service),
        str_cell(available),
        ctx.age(obj),
    ]
}

// ---------------------------------------------------------------------------
// RBAC, certificates, admission, flow control, DRA
// ---------------------------------------------------------------------------

const ROLE_BINDING_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Role",
        "string",
        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.",
    ),
    AGE,
    wide("Users", "string", "Users in the roleBinding"),
    wide("Groups", "string", "Groups in the roleBinding"),
    wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the roleBinding",
    ),
];

fn role_binding_cells(rb: &Value, ctx: &Ctx) -> Vec<Value> {
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for subject in list(rb, "/subjects") {
        match s(subject, "/kind") {
            "ServiceAccount" => sas.push(format!(
                "{}/{}",
                s(subject, "/namespace"),
                s(subject, "/name")
            )),
            "User" => users.push(s(subject, "/name").to_string()),
            "Group" => groups.push(s(subject, "/name").to_string()),
            _ => {}
        }
    }
    vec![
        name(rb),
        str_cell(format!(
            "{}/{}",
            s(rb, "/roleRef/kind"),
            s(rb, "/roleRef/name")
        )),
        ctx.age(rb),
        str_cell(users.join(", ")),
        str_cell(groups.join(", ")),
        str_cell(sas.join(", ")),
    ]
}

const CSR_COLUMNS: &[Column] = &[
    NAME,
    AGE,
    col(
        "SignerName",
        "string",
        "signerName indicates the requested signer, and is a qualified name.",
    ),
    col(
        "Requestor",
        "string",
        "request contains an x509 certificate signing request encoded in a \"CERTIFICATE REQUEST\" PEM block.",
    ),
    col(
        "RequestedDuration",
        "string",
        "expirationSeconds is the requested duration of validity of the issued certificate.",
    ),
    col(
        "Condition",
        "string",
        "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\".",
    ),
];

fn csr_cells(csr: &Value, ctx: &Ctx) -> Vec<Value> {
    let has = |ty: &str| condition(csr, "/status/conditions", ty).is_some();
    let mut status = if has("Denied") {
        "Denied"
    } else if has("Approved") {
        "Approved"
    } else {
        "Pending"
    }
    .to_string();
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !s(csr, "/status/certificate").is_empty() {
        status.push_str(",Issued");
    }
    let requested = match at(csr, "/spec/expirationSeconds").and_then(Value::as_i64) {
        Some(secs) => human_duration(SignedDuration::from_secs(secs)),
        None => "<none>".into(),
    };
    vec![
        name(csr),
        ctx.age(csr),
        str_cell(or_none(s(csr, "/spec/signerName"))),
        str_cell(s(csr, "/spec/username")),
        str_cell(requested),
        str_cell(status),
    ]
}

const CLUSTER_TRUST_BUNDLE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "SignerName",
        "string",
        "signerName indicates the associated signer, if any.",
    ),
];

fn cluster_trust_bundle_cells(obj: &Value, _: &Ctx) -> Vec<Value> {
    vec![name(obj), str_cell(or_none(s(obj, "/spec/signerName")))]
}

const WEBHOOK_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Webhooks",
        "integer",
        "Webhooks indicates the number of webhooks registered in this configuration",
    ),
    AGE,
];

fn webhook_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![name(obj), json!(list(obj, "/webhooks").len()), ctx.age(obj)]
}

const PARAM_KIND_DESC: &str =
    "ParamKind specifies the kind of resources used to parameterize this policy";

const VAP_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Validations",
        "integer",
        "Validations indicates the number of validation rules defined in this configuration",
    ),
    col("ParamKind", "string", PARAM_KIND_DESC),
    AGE,
];

const MAP_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Mutations",
        "integer",
        "Mutation indicates the number of mutations rules defined in this configuration",
    ),
    col("ParamKind", "string", PARAM_KIND_DESC),
    AGE,
];

fn param_kind(obj: &Value) -> String {
    match at(obj, "/spec/paramKind") {
        Some(pk) => format!("{}/{}", s(pk, "/apiVersion"), s(pk, "/kind")),
        None => "<unset>".into(),
    }
}

fn vap_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![
        name(obj),
        json!(list(obj, "/spec/validations").len()),
        str_cell(param_kind(obj)),
        ctx.age(obj),
    ]
}

fn map_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![
        name(obj),
        json!(list(obj, "/spec/mutations").len()),
        str_cell(param_kind(obj)),
        ctx.age(obj),
    ]
}

const POLICY_BINDING_COLUMNS: &[Column] = &[
    NAME,
    col(
        "PolicyName",
        "string",
        "PolicyName indicates the policy definition which the policy binding binded to",
    ),
    col(
        "ParamRef",
        "string",
        "ParamRef indicates the param resource which sets the configration param",
    ),
    AGE,
];

fn policy_binding_cells(obj: &Value, ctx: &Ctx) -> Vec<Value> {
    let param = match at(obj, "/spec/paramRef") {
        Some(pr) => match (s(pr, "/name"), s(pr, "/namespace")) {
            ("", _) => match at(pr, "/selector") {
                Some(sel) => match LabelSelector::from_label_selector_json(sel) {
                    Ok(sel) => sel.to_string(),
                    Err(_) => "<unset>".into(),
                },
                None => "<unset>".into(),
            },
            (n, "") => format!("*/{n}"),
            (n, ns) => format!("{ns}/{n}"),
        },
        None => "<unset>".into(),
    };
    vec![
        name(obj),
        str_cell(s(obj, "/spec/policyName")),
        str_cell(param),
        ctx.age(obj),
    ]
}

const FLOW_SCHEMA_COLUMNS: &[Column] = &[
    NAME,
    col(
        "PriorityLevel",
        "string",
        "`name` is the name of the priority level configuration being referenced",
    ),
    col(
        "MatchingPrecedence",
        "string",
        "`matchingPrecedence` is used to choose among the FlowSchemas that match a given request.",
    ),
    col(
        "DistinguisherMethod",
        "string",
        "`distinguisherMethod` defines how to compute the flow distinguisher for requests that match this schema.",
    ),
    AGE,
    col(
        "MissingPL",
        "string",
        "references a broken or non-existent PriorityLevelConfiguration",
    ),
];

fn flow_schema_cells(fs: &Value, ctx: &Ctx) -> Vec<Value> {
    let missing = condition(fs, "/status/conditions", "Dangling").map_or("?", |c| s(c, "/status"));
    vec![
        name(fs),
        str_cell(s(fs, "/spec/priorityLevelConfiguration/name")),
        json!(int(fs, "/spec/matchingPrecedence")),
        str_cell(opt_s(fs, "/spec/distinguisherMethod/type").unwrap_or("<none>")),
        ctx.age(fs),
        str_cell(missing),
    ]
}

const PLC_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "`type` indicates whether this priority level is subject to limitation on request execution.",
    ),
    col(
        "NominalConcurrencyShares",
        "string",
        "`nominalConcurrencyShares` (NCS) contributes to the computation of the NominalConcurrencyLimit (NominalCL) of this level.",
    ),
    col(
        "Queues",
        "string",
        "`queues` is the number of queues for this priority level.",
    ),
    col(
        "HandSize",
        "string",
        "`handSize` is a small positive number that configures the shuffle sharding of requests into queues.",
    ),
    col(
        "QueueLengthLimit",
        "string",
        "`queueLengthLimit` is the maximum number of requests allowed to be waiting in a given queue of this priority level at a time.",
    ),
    AGE,
];

fn plc_cells(plc: &Value, ctx: &Ctx) -> Vec<Value> {
    let none = || str_cell("<none>");
    let (mut ncs, mut queues, mut hand, mut qll) = (none(), none(), none(), none());
    if let Some(limited) = at(plc, "/spec/limited") {
        ncs = json!(int(limited, "/nominalConcurrencyShares"));
        if let Some(q) = at(limited, "/limitResponse/queuing") {
            queues = json!(int(q, "/queues"));
            hand = json!(int(q, "/handSize"));
            qll = json!(int(q, "/queueLengthLimit"));
        }
    }
    vec![
        name(plc),
        str_cell(s(plc, "/spec/type")),
        ncs,
        queues,
        hand,
        qll,
        ctx.age(plc),
    ]
}

const RESOURCE_CLAIM_COLUMNS: &[Column] = &[
    NAME,
    col(
        "State",
        "string",
        "A summary of the current state (allocated, pending, reserved, etc.).",
    ),
    AGE,
];

fn resource_claim_cells(rc: &Value, ctx: &Ctx) -> Vec<Value> {
    let deleted = at(rc, "/metadata/deletionTimestamp").is_some();
    let mut states = Vec::new();
    if deleted {
        states.push("deleted");
    }
    if at(rc, "/status/allocation").is_none() {
        if !deleted {
            states.push("pending");
        }
    } else {
        states.push("allocated");
        if !list(rc, "/status/reservedFor").is_empty() {
            states.push("reserved");
        }
    }
    vec![name(rc), str_cell(states.join(",")), ctx.age(rc)]
}

const RESOURCE_SLICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Node",
        "string",
        "NodeName identifies the node which provides the resources in this pool.",
    ),
    col(
        "Driver",
        "string",
        "Driver identifies the DRA driver providing the capacity information.",
    ),
    col("Pool", "string", "Name is used to identify the pool."),
    AGE,
];

fn resource_slice_cells(rs: &Value, ctx: &Ctx) -> Vec<Value> {
    vec![
        name(rs),
        str_cell(s(rs, "/spec/nodeName")),
        str_cell(s(rs, "/spec/driver")),
        str_cell(s(rs, "/spec/pool/name")),
        ctx.age(rs),
    ]
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2025-01-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn ago(secs: i64) -> String {
        let t = now().checked_sub(SignedDuration::from_secs(secs)).unwrap();
        t.to_string()
    }

    fn table(kind: &str, obj: Value) -> Value {
        table_for(kind, &[obj], now(), IncludeObject::Metadata)
    }

    fn cells(kind: &str, obj: Value) -> Vec<Value> {
        table(kind, obj)["rows"][0]["cells"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn column_names(kind: &str) -> Vec<String> {
        column_definitions(kind)
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn cell_by_name(kind: &str, obj: Value, column: &str) -> Value {
        let idx = column_names(kind).iter().position(|c| c == column).unwrap();
        cells(kind, obj)[idx].clone()
    }

    fn pod(status: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "creationTimestamp": ago(300)},
            "spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"}]},
            "status": status,
        })
    }

    fn pod_status(p: Value) -> String {
        cell_by_name("Pod", p, "Status")
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn human_duration_boundaries() {
        let h = |secs: i64| human_duration(SignedDuration::from_secs(secs));
        assert_eq!(human_duration(SignedDuration::from_millis(-1500)), "0s");
        assert_eq!(h(-1), "0s");
        assert_eq!(h(-2), "<invalid>");
        assert_eq!(h(0), "0s");
        assert_eq!(h(59), "59s");
        assert_eq!(h(119), "119s");
        assert_eq!(h(120), "2m");
        assert_eq!(h(330), "5m30s");
        assert_eq!(h(599), "9m59s");
        assert_eq!(h(600), "10m");
        assert_eq!(h(3 * 3600 - 1), "179m");
        assert_eq!(h(3 * 3600), "3h");
        assert_eq!(h(3 * 3600 + 25 * 60), "3h25m");
        assert_eq!(h(8 * 3600), "8h");
        assert_eq!(h(47 * 3600 + 3599), "47h");
        assert_eq!(h(48 * 3600), "2d");
        assert_eq!(h(50 * 3600), "2d2h");
        assert_eq!(h(8 * 86400 - 1), "7d23h");
        assert_eq!(h(8 * 86400), "8d");
        assert_eq!(h(2 * 365 * 86400 - 1), "729d");
        assert_eq!(h(2 * 365 * 86400), "2y");
        assert_eq!(h(2 * 365 * 86400 + 10 * 86400), "2y10d");
        assert_eq!(h(8 * 365 * 86400), "8y");

        let sh = |secs: i64| short_human_duration(SignedDuration::from_secs(secs));
        assert_eq!(sh(-2), "<invalid>");
        assert_eq!(sh(59), "59s");
        assert_eq!(sh(60), "1m");
        assert_eq!(sh(3600), "1h");
        assert_eq!(sh(86400 * 3), "3d");
        assert_eq!(sh(86400 * 400), "1y");
    }

    #[test]
    fn table_shape_and_include_object() {
        let p = pod(json!({"phase": "Running"}));
        let t = table("Pod", p.clone());
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"], json!({}));
        let cols = t["columnDefinitions"].as_array().unwrap();
        assert_eq!(
            cols[0],
            json!({"name": "Name", "type": "string", "format": "name",
            "description": NAME_DESC, "priority": 0})
        );
        let row = &t["rows"][0];
        assert_eq!(row["cells"].as_array().unwrap().len(), cols.len());
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(row["object"]["metadata"]["namespace"], "default");
        assert!(row.get("conditions").is_none());

        let full = table_for(
            "Pod",
            std::slice::from_ref(&p),
            now(),
            IncludeObject::Object,
        );
        assert_eq!(full["rows"][0]["object"], p);
        let none = table_for("Pod", &[p], now(), IncludeObject::None);
        assert_eq!(none["rows"][0]["object"], Value::Null);
        assert_eq!(IncludeObject::parse(""), Some(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
        assert_eq!(IncludeObject::parse("bogus"), None);
    }

    #[test]
    fn every_printer_fills_every_column() {
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": ago(10)}});
        for kind in [
            "Pod",
            "PodTemplate",
            "Node",
            "Namespace",
            "Service",
            "Endpoints",
            "ConfigMap",
            "Secret",
            "ServiceAccount",
            "Event",
            "PersistentVolume",
            "PersistentVolumeClaim",
            "ResourceQuota",
            "ComponentStatus",
            "Deployment",
            "ReplicaSet",
            "ReplicationController",
            "DaemonSet",
            "StatefulSet",
            "ControllerRevision",
            "Job",
            "CronJob",
            "HorizontalPodAutoscaler",
            "Lease",
            "LeaseCandidate",
            "EndpointSlice",
            "Ingress",
            "IngressClass",
            "NetworkPolicy",
            "ServiceCIDR",
            "PodDisruptionBudget",
            "PriorityClass",
            "RuntimeClass",
            "RoleBinding",
            "ClusterRoleBinding",
            "CertificateSigningRequest",
            "ClusterTrustBundle",
            "StorageClass",
            "VolumeAttributesClass",
            "VolumeAttachment",
            "CSINode",
            "CSIDriver",
            "CSIStorageCapacity",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
            "ValidatingAdmissionPolicy",
            "MutatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "FlowSchema",
            "PriorityLevelConfiguration",
            "ResourceClaim",
            "ResourceSlice",
            "APIService",
            "Role",
            "ClusterRole",
            "LimitRange",
            "Widget",
        ] {
            assert_eq!(
                cells(kind, obj.clone()).len(),
                column_definitions(kind).len(),
                "{kind}: cells vs columns"
            );
        }
        assert_eq!(column_names("Widget"), ["Name", "Age"]);
        assert_eq!(cells("Widget", obj.clone()), vec![json!("x"), json!("10s")]);
        assert_eq!(column_names("Role"), ["Name", "Created At"]);
        let role = json!({"metadata": {"name": "r", "creationTimestamp": "2024-05-06T07:08:09Z"}});
        assert_eq!(cells("Role", role)[1], "2024-05-06T07:08:09Z");
        assert_eq!(
            cells("Widget", json!({"metadata": {"name": "x"}}))[1],
            "<unknown>"
        );
    }

    #[test]
    fn pod_columns_and_wide_priority() {
        assert_eq!(
            column_names("Pod"),
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        let prio: Vec<i64> = column_definitions("Pod")
            .iter()
            .map(|c| c["priority"].as_i64().unwrap())
            .collect();
        assert_eq!(prio, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
        for kind in ["Deployment", "ReplicaSet", "DaemonSet", "Job", "CronJob"] {
            for c in column_definitions(kind) {
                let wide = matches!(
                    c["name"].as_str().unwrap(),
                    "Containers" | "Images" | "Selector"
                );
                assert_eq!(
                    c["priority"],
                    if wide { 1 } else { 0 },
                    "{kind} {}",
                    c["name"]
                );
            }
        }
        let node_wide: Vec<String> = column_definitions("Node")
            .iter()
            .filter(|c| c["priority"] == 1)
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            node_wide,
            [
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
        assert_eq!(
            column_names("Event"),
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
    }

    #[test]
    fn pod_running_and_ready_counts() {
        let running = |ready: bool| json!({"name": "a", "ready": ready, "restartCount": 0, "state": {"running": {"startedAt": ago(100)}}});
        let p = pod(json!({
            "phase": "Running",
            "podIPs": [{"ip": "10.1.0.4"}],
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [running(true), running(false)],
        }));
        let c = cells("Pod", p);
        assert_eq!(c[0], "p");
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "0");
        assert_eq!(c[4], "5m");
        assert_eq!(c[5], "10.1.0.4");
        assert_eq!(c[6], "<none>");
        assert_eq!(c[7], "<none>");
        assert_eq!(c[8], "<none>");
    }

    #[test]
    fn pod_crash_loop_and_restarts() {
        let p = pod(json!({
            "phase": "Running",
            "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 3,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}}},
                {"name": "b", "ready": true, "restartCount": 1,
                 "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 0, "finishedAt": ago(3600)}}},
            ],
        }));
        let c = cells("Pod", p);
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "4 (5m ago)");
    }

    #[test]
    fn pod_terminated_reasons() {
        let term = |t: Value| {
            pod(json!({"phase": "Failed", "containerStatuses": [
            {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": t}}]}))
        };
        assert_eq!(
            pod_status(term(json!({"exitCode": 137, "reason": "OOMKilled"}))),
            "OOMKilled"
        );
        assert_eq!(pod_status(term(json!({"exitCode": 2}))), "ExitCode:2");
        assert_eq!(
            pod_status(term(json!({"exitCode": 0, "signal": 9}))),
            "Signal:9"
        );
        // Completed pod, and its row condition
        let done = term(json!({"exitCode": 0, "reason": "Completed"}));
        let mut done_obj = done.clone();
        done_obj["status"]["phase"] = json!("Succeeded");
        assert_eq!(pod_status(done_obj.clone()), "Completed");
        let t = table("Pod", done_obj);
        assert_eq!(t["rows"][0]["conditions"][0]["type"], "Completed");
        assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Succeeded");
        // status.reason wins over the phase
        assert_eq!(
            pod_status(pod(json!({"phase": "Failed", "reason": "Evicted"}))),
            "Evicted"
        );
        assert_eq!(pod_status(pod(json!({"phase": "Pending"}))), "Pending");
    }

    #[test]
    fn pod_completed_but_running_container() {
        let p = |ready_cond: &str| {
            pod(json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": ready_cond}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                    {"name": "b", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                ],
            }))
        };
        // reversed iteration: "a" (running) is visited last, after "b" set Completed
        assert_eq!(pod_status(p("True")), "Running");
        assert_eq!(pod_status(p("False")), "NotReady");
    }

    #[test]
    fn pod_init_containers() {
        let mut p = pod(json!({
            "phase": "Pending",
            "initContainerStatuses": [{"name": "init", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}}}],
            "containerStatuses": [{"name": "a", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}}}],
        }));
        p["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
        assert_eq!(pod_status(p.clone()), "Init:0/1");

        let mut crash = p.clone();
        crash["status"]["initContainerStatuses"][0]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert_eq!(pod_status(crash), "Init:CrashLoopBackOff");

        let mut err = p.clone();
        err["status"]["initContainerStatuses"][0]["state"] =
            json!({"terminated": {"exitCode": 1, "reason": "Error"}});
        assert_eq!(pod_status(err.clone()), "Init:Error");
        err["status"]["initContainerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 3}});
        assert_eq!(pod_status(err), "Init:ExitCode:3");

        // a finished init container lets the main containers decide
        let mut done = p.clone();
        done["status"]["initContainerStatuses"][0]["state"] =
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
        done["status"]["containerStatuses"][0]["state"] =
            json!({"waiting": {"reason": "ContainerCreating"}});
        assert_eq!(pod_status(done), "ContainerCreating");

        // a started sidecar (restartable init container) counts as a container
        let mut sidecar = p;
        sidecar["spec"]["initContainers"][0]["restartPolicy"] = json!("Always");
        sidecar["status"]["initContainerStatuses"][0] = json!({"name": "init", "ready": true, "started": true,
            "restartCount": 2, "state": {"running": {}}});
        sidecar["status"]["phase"] = json!("Running");
        sidecar["status"]["containerStatuses"] =
            json!([{"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}}]);
        let c = cells("Pod", sidecar);
        assert_eq!(c[1], "2/3");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "2");
    }

    #[test]
    fn pod_terminating_and_unknown() {
        let mut p = pod(json!({"phase": "Running"}));
        p["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(pod_status(p.clone()), "Terminating");
        let mut lost = p.clone();
        lost["status"]["reason"] = json!("NodeLost");
        assert_eq!(pod_status(lost), "Unknown");
        let mut succeeded = p;
        succeeded["status"]["phase"] = json!("Succeeded");
        assert_eq!(pod_status(succeeded), "Succeeded");
    }

    #[test]
    fn pod_wide_cells() {
        let mut p = pod(
            json!({"phase": "Running", "podIP": "10.0.0.9", "nominatedNodeName": "n2",
            "conditions": [{"type": "example.com/gate", "status": "True"}]}),
        );
        p["spec"]["nodeName"] = json!("n1");
        p["spec"]["readinessGates"] =
            json!([{"conditionType": "example.com/gate"}, {"conditionType": "other"}]);
        let c = cells("Pod", p);
        assert_eq!(
            &c[5..],
            &[json!("10.0.0.9"), json!("n1"), json!("n2"), json!("1/2")]
        );
    }

    #[test]
    fn service_ports_and_external_ips() {
        let svc = |spec: Value, status: Value| json!({"metadata": {"name": "s", "creationTimestamp": ago(60)}, "spec": spec, "status": status});
        let np = svc(
            json!({"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
            "selector": {"app": "web", "tier": "a"}}),
            json!({}),
        );
        let c = cells("Service", np);
        assert_eq!(
            c,
            vec![
                json!("s"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("60s"),
                json!("app=web,tier=a")
            ]
        );

        let lb_pending = svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.0.0.1", "ports": []}),
            json!({}),
        );
        let c = cells("Service", lb_pending);
        assert_eq!(c[3], "<pending>");
        assert_eq!(c[4], "<none>");
        assert_eq!(c[6], "<none>");
        let lb = svc(
            json!({"type": "LoadBalancer", "externalIPs": ["5.6.7.8"]}),
            json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb.example.com"}]}}),
        );
        assert_eq!(cells("Service", lb)[3], "1.2.3.4,lb.example.com,5.6.7.8");
        let headless = svc(
            json!({"type": "ClusterIP", "clusterIP": "None", "externalIPs": ["9.9.9.9"]}),
            json!({}),
        );
        let c = cells("Service", headless);
        assert_eq!(c[2], "None");
        assert_eq!(c[3], "9.9.9.9");
        let ext = svc(
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            json!({}),
        );
        let c = cells("Service", ext);
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "db.example.com");
    }

    #[test]
    fn deployment_ready_column() {
        let d = json!({"metadata": {"name": "web", "creationTimestamp": ago(7200)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1"}, {"name": "side", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(
            column_names("Deployment"),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let c = cells("Deployment", d);
        assert_eq!(
            c,
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("120m"),
                json!("nginx,side"),
                json!("nginx:1,busybox"),
                json!("app=web")
            ]
        );
        let empty = json!({"metadata": {"name": "x"}, "spec": {"replicas": 0}});
        let c = cells("Deployment", empty);
        assert_eq!(c[1], "0/0");
        assert_eq!(c[7], "");
    }

    #[test]
    fn workload_printers() {
        let rs = json!({"metadata": {"name": "rs"}, "spec": {"replicas": 2,
            "selector": {"matchLabels": {"app": "a"}, "matchExpressions": [{"key": "t", "operator": "Exists"}]}},
            "status": {"replicas": 2, "readyReplicas": 1}});
        let c = cells("ReplicaSet", rs);
        assert_eq!(&c[1..4], &[json!(2), json!(2), json!(1)]);
        assert_eq!(c[7], "app=a,t");

        let ss = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
        assert_eq!(cells("StatefulSet", ss)[1], "3/3");

        let ds = json!({"metadata": {"name": "ds"}, "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                "updatedNumberScheduled": 3, "numberAvailable": 2}});
        let c = cells("DaemonSet", ds);
        assert_eq!(
            &c[1..7],
            &[
                json!(3),
                json!(3),
                json!(2),
                json!(3),
                json!(2),
                json!("kubernetes.io/os=linux")
            ]
        );
        assert_eq!(c[10], "<none>");

        let job = json!({"metadata": {"name": "j"}, "spec": {"completions": 1, "parallelism": 1},
            "status": {"succeeded": 1, "startTime": ago(100), "completionTime": ago(40),
                "conditions": [{"type": "Complete", "status": "True"}]}});
        let c = cells("Job", job);
        assert_eq!(&c[1..4], &[json!("Complete"), json!("1/1"), json!("60s")]);
        let running = json!({"metadata": {"name": "j"}, "spec": {"parallelism": 2}, "status": {"startTime": ago(30)}});
        let c = cells("Job", running);
        assert_eq!(
            &c[1..4],
            &[json!("Running"), json!("0/1 of 2"), json!("30s")]
        );

        let cj = json!({"metadata": {"name": "c"}, "spec": {"schedule": "*/5 * * * *", "suspend": false},
            "status": {"active": [{}], "lastScheduleTime": ago(120)}});
        let c = cells("CronJob", cj);
        assert_eq!(
            &c[1..6],
            &[
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("2m")
            ]
        );

        let cr = json!({"metadata": {"name": "web-7d9", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]}, "revision": 2});
        let c = cells("ControllerRevision", cr);
        assert_eq!(&c[1..3], &[json!("statefulset.apps/web"), json!(2)]);
    }

    #[test]
    fn node_printer() {
        let node = json!({"metadata": {"name": "n1", "creationTimestamp": ago(86400 * 3),
                "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian", "kernelVersion": "6.1",
                    "containerRuntimeVersion": "containerd://2.0"}}});
        let c = cells("Node", node);
        assert_eq!(
            c,
            vec![
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker"),
                json!("3d"),
                json!("v1.33.0"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian"),
                json!("6.1"),
                json!("containerd://2.0")
            ]
        );
        let bare = cells("Node", json!({"metadata": {"name": "n2"}}));
        assert_eq!(&bare[1..3], &[json!("Unknown"), json!("<none>")]);
        assert_eq!(bare[7], "<unknown>");
    }

    #[test]
    fn endpoints_and_slices() {
        let ep = json!({"metadata": {"name": "e"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}, {"ip": "10.0.0.4"}],
             "ports": [{"port": 80}]}]});
        assert_eq!(
            cells("Endpoints", ep)[1],
            "10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 1 more..."
        );
        assert_eq!(
            cells("Endpoints", json!({"metadata": {"name": "e"}}))[1],
            "<none>"
        );
        let es = json!({"metadata": {"name": "s"}, "addressType": "IPv4",
            "ports": [{"port": 80, "name": "http"}, {"name": "x"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        let c = cells("EndpointSlice", es);
        assert_eq!(
            &c[1..4],
            &[json!("IPv4"), json!("80,x"), json!("10.0.0.1,10.0.0.2")]
        );
        assert_eq!(
            cells("EndpointSlice", json!({"metadata": {"name": "s"}}))[3],
            "<unset>"
        );
    }

    #[test]
    fn events_printer() {
        let ev = json!({"metadata": {"name": "p.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{a}"},
            "reason": "Pulled", "type": "Normal", "message": " pulled image \n",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(60), "count": 3});
        let c = cells("Event", ev);
        assert_eq!(
            c,
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/p"),
                json!("spec.containers{a}"),
                json!("kubelet, n1"),
                json!("pulled image"),
                json!("10m"),
                json!(3),
                json!("p.1")
            ]
        );
        let new_api = json!({"apiVersion": "events.k8s.io/v1", "metadata": {"name": "x"},
            "regarding": {"kind": "Node", "name": "n1"}, "note": "hello", "reason": "R", "type": "Warning",
            "eventTime": ago(5), "reportingController": "ctrl", "reportingInstance": "i"});
        let c = cells("Event", new_api);
        assert_eq!(c[0], "5s");
        assert_eq!(c[3], "node/n1");
        assert_eq!(c[5], "ctrl, i");
        assert_eq!(c[6], "hello");
        assert_eq!(c[8], 1);
    }

    #[test]
    fn storage_printers() {
        let pv = json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": "ns", "name": "c"}, "storageClassName": "fast", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"}});
        let c = cells("PersistentVolume", pv);
        assert_eq!(
            &c[1..9],
            &[
                json!("10Gi"),
                json!("RWO,RWX"),
                json!("Retain"),
                json!("Bound"),
                json!("ns/c"),
                json!("fast"),
                json!("<unset>"),
                json!("")
            ]
        );
        assert_eq!(c[10], "Filesystem");
        let pvc = json!({"metadata": {"name": "c"}, "spec": {"volumeName": "pv1", "storageClassName": "fast"},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOncePod"]}});
        let c = cells("PersistentVolumeClaim", pvc);
        assert_eq!(
            &c[1..7],
            &[
                json!("Bound"),
                json!("pv1"),
                json!("10Gi"),
                json!("RWOP"),
                json!("fast"),
                json!("<unset>")
            ]
        );
        let sc = json!({"metadata": {"name": "std", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "p"});
        let c = cells("StorageClass", sc);
        assert_eq!(
            &c[..5],
            &[
                json!("std (default)"),
                json!("p"),
                json!("Delete"),
                json!("Immediate"),
                json!(false)
            ]
        );
    }

    #[test]
    fn misc_printers() {
        let cm = json!({"metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}});
        assert_eq!(cells("ConfigMap", cm)[1], 3);
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "MQ=="}});
        assert_eq!(&cells("Secret", secret)[1..3], &[json!("Opaque"), json!(1)]);
        assert_eq!(column_names("ServiceAccount"), ["Name", "Secrets", "Age"]);
        let sa = json!({"metadata": {"name": "default"}});
        assert_eq!(cells("ServiceAccount", sa)[1], 0);
        let rb = json!({"metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                {"kind": "ServiceAccount", "namespace": "ns", "name": "sa"}, {"kind": "User", "name": "bob"}]});
        let c = cells("RoleBinding", rb);
        assert_eq!(c[1], "ClusterRole/view");
        assert_eq!(
            &c[3..],
            &[json!("alice, bob"), json!("devs"), json!("ns/sa")]
        );
        let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            &cells("PodDisruptionBudget", pdb)[1..4],
            &[json!("50%"), json!("N/A"), json!(1)]
        );
        let np = json!({"metadata": {"name": "np"}, "spec": {}});
        assert_eq!(cells("NetworkPolicy", np)[1], "<none>");
        let ing = json!({"metadata": {"name": "i"}, "spec": {"ingressClassName": "nginx",
            "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}], "tls": [{}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "1.1.1.1"}]}}});
        assert_eq!(
            &cells("Ingress", ing)[1..5],
            &[
                json!("nginx"),
                json!("a.example.com,b.example.com"),
                json!("1.1.1.1"),
                json!("80, 443")
            ]
        );
        let hpa = json!({"metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 5, "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}}]},
            "status": {"currentReplicas": 2, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45, "averageValue": "90m"}}}]}});
        let c = cells("HorizontalPodAutoscaler", hpa);
        assert_eq!(
            &c[1..6],
            &[
                json!("Deployment/web"),
                json!("cpu: 45%/80%, <unknown>/10 + 1 more..."),
                json!("1"),
                json!(5),
                json!(2)
            ]
        );
        let quota = json!({"metadata": {"name": "q"}, "status": {
            "hard": {"requests.cpu": "1", "limits.memory": "1Gi", "pods": "10"},
            "used": {"requests.cpu": "500m", "pods": "3"}}});
        assert_eq!(
            &cells("ResourceQuota", quota)[1..3],
            &[
                json!("pods: 3/10, requests.cpu: 500m/1"),
                json!("limits.memory: 0/1Gi")
            ]
        );
        let csr = json!({"metadata": {"name": "c"}, "spec": {"signerName": "kubernetes.io/kubelet-serving",
            "username": "system:node:n1", "expirationSeconds": 86400},
            "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "LS0t"}});
        assert_eq!(
            &cells("CertificateSigningRequest", csr)[2..],
            &[
                json!("kubernetes.io/kubelet-serving"),
                json!("system:node:n1"),
                json!("24h"),
                json!("Approved,Issued")
            ]
        );
    }
}
