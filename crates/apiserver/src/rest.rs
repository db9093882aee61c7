//! Generic REST storage: one implementation of create, get, list, update,
//! patch, delete and the common subresources, driven by the resource table.
//!
//! Every write goes decode → admission (defaults, allocations) → validation
//! → store compare-and-swap. Nothing is written unless all of it passed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use tug_api::patch::{self, PatchType};
use tug_api::resources::ResourceType;
use tug_api::schema::Schemas;
use tug_api::selectors::{self, FieldSelector, LabelSelector};
use tug_api::status::Cause;
use tug_api::{convert, defaults, meta, validation, ApiError};
use tug_store::{ListOptions, Revision, Store, StoreError};

use crate::alloc::{AllocError, Allocator};
use crate::cache::WatchCache;
use crate::fields;
use crate::request::ResourceRequest;

/// Largest accepted request body, as upstream (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// How long a consistent read waits for the watch cache to catch up.
const CACHE_WAIT: Duration = Duration::from_secs(3);
/// Conflicting PATCHes are retried this often before giving up.
const PATCH_RETRIES: usize = 8;

/// What admission reads of an object it only looks up: whether it is being
/// deleted. Parsed straight from the cached JSON, skipping everything else.
#[derive(serde::Deserialize)]
struct ObjectHead {
    #[serde(default)]
    metadata: HeadMeta,
}

#[derive(serde::Deserialize, Default)]
struct HeadMeta {
    #[serde(rename = "deletionTimestamp", default)]
    deletion_timestamp: Option<serde::de::IgnoredAny>,
}

impl ObjectHead {
    fn terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
}

/// A PriorityClass as the Priority admission reads the cluster's default.
#[derive(serde::Deserialize)]
struct ClassHead {
    #[serde(rename = "globalDefault", default)]
    global_default: bool,
}

pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub cache: Arc<WatchCache>,
    pub alloc: Allocator,
}

/// The result of a REST call: status, body and warnings. A LIST carries its
/// items in `list` (and `Null` in `body`).
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub warnings: Vec<String>,
    pub list: Option<ListBody>,
}

/// A list response whose items are the watch cache's shared objects: it is
/// serialized straight from them, never copied into one big `Value` (a
/// 100,000-object LIST used to deep-copy every object first).
pub struct ListBody {
    pub kind: String,
    pub api_version: String,
    pub metadata: Value,
    pub items: Vec<ListItem>,
}

/// One item of a LIST: straight from the watch cache (served as its JSON
/// text, never parsed), or decoded (read from the store, or converted).
pub enum ListItem {
    Cached(Arc<crate::cache::Entry>),
    Decoded(Arc<Value>),
}

impl ListItem {
    pub fn to_value(&self) -> Value {
        match self {
            ListItem::Cached(e) => e.value(),
            ListItem::Decoded(v) => (**v).clone(),
        }
    }

    pub fn into_value(self) -> Value {
        match self {
            ListItem::Cached(e) => e.value(),
            ListItem::Decoded(v) => Arc::unwrap_or_clone(v),
        }
    }
}

impl ListBody {
    /// The list as JSON, the one encoding of it: each cached item's text is
    /// copied in as it is (neither parsed nor checked again).
    pub fn to_json(&self) -> Vec<u8> {
        let cached: usize = self.items.iter().map(|i| if let ListItem::Cached(e) = i { e.bytes().len() + 1 } else { 0 }).sum();
        let mut out = Vec::with_capacity(cached + 4096);
        let head = serde_json::json!({"kind": self.kind, "apiVersion": self.api_version, "metadata": self.metadata});
        serde_json::to_writer(&mut out, &head).expect("JSON values serialize");
        // Reopen the head object for the items member.
        out.pop();
        out.extend_from_slice(b",\"items\":[");
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match item {
                ListItem::Cached(e) => out.extend_from_slice(e.bytes()),
                ListItem::Decoded(v) => serde_json::to_writer(&mut out, &**v).expect("JSON values serialize"),
            }
        }
        out.extend_from_slice(b"]}");
        out
    }
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply { status: StatusCode::OK, body, warnings: Vec::new(), list: None }
    }
    fn with(status: StatusCode, body: Value) -> Reply {
        Reply { status, body, warnings: Vec::new(), list: None }
    }
    fn list(list: ListBody) -> Reply {
        Reply { status: StatusCode::OK, body: Value::Null, warnings: Vec::new(), list: Some(list) }
    }
}

type Query = HashMap<String, String>;

fn store_err(rt: &ResourceType, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists(_) => ApiError::already_exists(rt.group, rt.plural, name),
        StoreError::NotFound(_) => ApiError::not_found(rt.group, rt.plural, name),
        StoreError::Conflict { .. } => ApiError::stale(rt.group, rt.plural, name),
        StoreError::Compacted { requested, compacted } => {
            ApiError::gone(format!("too old resource version: {requested} ({compacted})"))
        }
        StoreError::FutureRevision(r) => {
            let mut e = ApiError::timeout(format!("Too large resource version: {r}, current: unknown"));
            e.retry_after_seconds = Some(1);
            e
        }
        StoreError::Backend(m) => ApiError::internal(m),
    }
}

/// Parses a request body as JSON or YAML (by content type, falling back to
/// sniffing), with the size limit.
pub fn decode_body(body: &Bytes, content_type: &str) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large("the server has received too large of a request body"));
    }
    let base = content_type.split(';').next().unwrap_or("").trim();
    if base.eq_ignore_ascii_case(tug_api::protobuf::CONTENT_TYPE) {
        return tug_api::protobuf::decode(body)
            .map_err(|e| ApiError::bad_request(format!("unable to decode protobuf body: {e}")));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let is_yaml = ct.ends_with("yaml") || (!ct.ends_with("json") && !body.trim_ascii_start().starts_with(b"{") && !body.trim_ascii_start().starts_with(b"["));
    if is_yaml {
        let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the request body is not valid UTF-8"))?;
        serde_saphyr::from_str::<Value>(text).map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("json: {e}")))
    }
}

/// What a stored object looks like: the storage version, and no
/// resourceVersion (the revision is the version).
fn encode_for_store(rt: &ResourceType, obj: &Value) -> Vec<u8> {
    // The common case needs no copy: the stored version is the served one,
    // and the resourceVersion (which the store's revision replaces) is left
    // out while serializing. Sized for a typical pod, not grown from empty.
    if !convert::converts(rt) {
        let mut out = Vec::with_capacity(4096);
        serde_json::to_writer(&mut out, &StoredForm(obj)).expect("JSON values serialize");
        return out;
    }
    let mut o = convert::to_storage(rt, obj.clone());
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&o).expect("JSON values serialize")
}

/// An object as the store keeps it: without `metadata.resourceVersion`.
struct StoredForm<'a>(&'a Value);

impl serde::Serialize for StoredForm<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(members) = self.0 else { return self.0.serialize(s) };
        let mut map = s.serialize_map(Some(members.len()))?;
        for (k, v) in members {
            match v {
                Value::Object(meta) if k == "metadata" => map.serialize_entry(k, &WithoutResourceVersion(meta))?,
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

struct WithoutResourceVersion<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for WithoutResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let kept = self.0.iter().filter(|(k, _)| *k != "resourceVersion");
        let mut map = s.serialize_map(Some(kept.clone().count()))?;
        for (k, v) in kept {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

fn with_revision(mut obj: Value, rev: Revision) -> Value {
    meta::metadata_mut(&mut obj).insert("resourceVersion".into(), json!(rev.to_string()));
    obj
}

fn is_dry_run(q: &Query) -> bool {
    q.get("dryRun").map(|v| v == "All").unwrap_or(false)
}

/// Whether an update leaves the object as it was, apart from what every
/// write changes: the resourceVersion and the managedFields timestamps
/// (ownership changes count, timestamps alone do not). Compared in place:
/// cloning both objects to strip those fields cost two copies of every
/// object on every write.
fn same_but_volatile(old: &Value, new: &Value) -> bool {
    same_members(old, new, None, |k, o, n| match k {
        "metadata" => same_members(o, n, Some("resourceVersion"), |k, o, n| match (k, o.as_array(), n.as_array()) {
            ("managedFields", Some(o), Some(n)) => {
                o.len() == n.len() && o.iter().zip(n).all(|(a, b)| same_members(a, b, Some("time"), |_, a, b| a == b))
            }
            _ => o == n,
        }),
        _ => o == n,
    })
}

/// Whether two JSON objects have the same members, `skipped` aside, each
/// pair equal by `same` (anything but two objects: plain equality).
fn same_members(old: &Value, new: &Value, skipped: Option<&str>, same: impl Fn(&str, &Value, &Value) -> bool) -> bool {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else { return old == new };
    let kept = |k: &String| Some(k.as_str()) != skipped;
    old.keys().filter(|k| kept(k)).count() == new.keys().filter(|k| kept(k)).count()
        && old.iter().filter(|(k, _)| kept(k)).all(|(k, o)| new.get(k).is_some_and(|n| same(k, o, n)))
}

/// Kinds whose `metadata.generation` upstream tracks (spec changes bump it).
fn tracks_generation(rt: &ResourceType) -> bool {
    matches!(
        (rt.group, rt.kind),
        ("apps", _)
            | ("batch", _)
            | ("", "ReplicationController")
            | ("autoscaling", _)
            | ("policy", _)
            | ("networking.k8s.io", "Ingress" | "NetworkPolicy")
            | ("discovery.k8s.io", "EndpointSlice")
    )
}

/// Kinds upstream lets PUT create.
fn allows_create_on_update(rt: &ResourceType) -> bool {
    matches!((rt.group, rt.kind), ("", "Endpoints" | "Event") | ("events.k8s.io", "Event") | ("coordination.k8s.io", "Lease"))
}

/// The part of an object that counts as "spec" for generation: everything
/// but metadata and status.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

/// Whether an update bumps `metadata.generation`: any change outside
/// metadata and status; for an EndpointSlice (it has no status) also a
/// change of its labels, as upstream's `endpointSliceStrategy`.
fn bumps_generation(rt: &ResourceType, old: &Value, new: &Value) -> bool {
    if spec_part(old) != spec_part(new) {
        return true;
    }
    // Semantic equality: no labels and empty labels are the same.
    let labels = |o: &Value| o.pointer("/metadata/labels").and_then(Value::as_object).filter(|l| !l.is_empty()).cloned();
    (rt.group, rt.kind) == ("discovery.k8s.io", "EndpointSlice") && labels(old) != labels(new)
}

impl Ctx {
    pub fn key(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> String {
        rt.key(ns, name)
    }

    /// The newest stored version of an object.
    async fn read(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<(Value, Revision), ApiError> {
        let key = rt.key(ns, name);
        let kv = self.store.get(&key).await.map_err(|e| store_err(rt, name, e))?;
        let kv = kv.ok_or_else(|| ApiError::not_found(rt.group, rt.plural, name))?;
        let obj = crate::cache::decode_stored(&kv.value, kv.mod_revision)
            .ok_or_else(|| ApiError::internal(format!("stored object {key} is not valid JSON")))?;
        Ok((convert::from_storage(rt, obj), kv.mod_revision))
    }

    pub async fn get(&self, rr: &ResourceRequest, name: &str) -> Result<Reply, ApiError> {
        let (obj, _) = self.read(rr.rt, rr.namespace.as_deref(), name).await?;
        Ok(Reply::ok(obj))
    }

    /// Checks that the request's namespace exists and is not being deleted (NamespaceLifecycle).
    async fn check_namespace(&self, rt: &ResourceType, ns: Option<&str>, creating: bool) -> Result<(), ApiError> {
        let Some(ns) = ns.filter(|_| rt.namespaced) else { return Ok(()) };
        let key = format!("/registry/namespaces/{ns}");
        // Only whether it is being deleted matters: read that one field
        // rather than parse the namespace on every create.
        let terminating = match self.cache.entry(&key).await {
            Some(entry) => entry.parse::<ObjectHead>().map(|h| h.terminating()),
            None => self
                .store
                .get(&key)
                .await
                .map_err(|e| store_err(rt, ns, e))?
                .and_then(|kv| serde_json::from_slice::<ObjectHead>(&kv.value).ok())
                .map(|h| h.terminating()),
        };
        let Some(terminating) = terminating else {
            return Err(ApiError::not_found("", "namespaces", ns));
        };
        if creating && terminating {
            let mut e = ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ));
            e.kind = "namespaces".into();
            e.name = ns.into();
            return Err(e);
        }
        Ok(())
    }

    /// Applies `fieldValidation`: unknown fields are an error (Strict), a
    /// warning (Warn, the default) or ignored; either way they are dropped.
    fn check_fields(&self, rt: &ResourceType, obj: &mut Value, q: &Query, warnings: &mut Vec<String>) -> Result<(), ApiError> {
        let unknown = Schemas::get().unknown_fields(rt.definition, obj);
        if unknown.is_empty() {
            return Ok(());
        }
        let mode = q.get("fieldValidation").map(String::as_str).unwrap_or("Warn");
        match mode {
            "Strict" => {
                let msgs: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
                Err(ApiError::bad_request(format!("strict decoding error: {}", msgs.join(", "))))
            }
            "Ignore" | "Warn" => {
                if mode == "Warn" {
                    warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
                }
                for f in &unknown {
                    fields::remove_path(obj, f);
                }
                Ok(())
            }
            other => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }

    /// Checks `apiVersion`/`kind` of a body against the URL.
    fn check_type(&self, rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
        let Some(m) = obj.as_object_mut() else {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        };
        let want = rt.api_version();
        match m.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != want => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({want})"
                )))
            }
            _ => {}
        }
        match m.get("kind").and_then(Value::as_str) {
            Some(k) if k != rt.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rt.kind
                )))
            }
            _ => {}
        }
        m.insert("apiVersion".into(), json!(want));
        m.insert("kind".into(), json!(rt.kind));
        Ok(())
    }

    fn check_namespace_field(&self, rt: &ResourceType, obj: &mut Value, ns: Option<&str>) -> Result<(), ApiError> {
        let m = meta::metadata_mut(obj);
        if !rt.namespaced {
            m.remove("namespace");
            return Ok(());
        }
        let ns = ns.ok_or_else(|| ApiError::bad_request("a namespace is required for this resource"))?;
        match m.get("namespace").and_then(Value::as_str) {
            Some(body_ns) if !body_ns.is_empty() && body_ns != ns => Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => {
                m.insert("namespace".into(), json!(ns));
                Ok(())
            }
        }
    }

    pub async fn create(&self, rr: &ResourceRequest, body: Value, q: &Query, manager: &str) -> Result<Reply, ApiError> {
        let rt = rr.rt;
        let mut obj = body;
        let mut warnings = Vec::new();
        self.check_type(rt, &mut obj)?;
        self.check_fields(rt, &mut obj, q, &mut warnings)?;
        self.check_namespace_field(rt, &mut obj, rr.namespace.as_deref())?;
        {
            let m = meta::metadata_mut(&mut obj);
            let has_name = m.get("name").and_then(Value::as_str).map(|s| !s.is_empty()).unwrap_or(false);
            if !has_name {
                if let Some(prefix) = m.get("generateName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                    let n = meta::generate_name(prefix);
                    m.insert("name".into(), json!(n));
                }
            }
        }
        let name = meta::name(&obj).to_string();
        if rt.kind != "Namespace" {
            self.check_namespace(rt, rr.namespace.as_deref(), true).await?;
        }
        {
            let m = meta::metadata_mut(&mut obj);
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("selfLink");
            if tracks_generation(rt) {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        if rt.has_status() && !matches!(rt.kind, "Namespace" | "PersistentVolume" | "PersistentVolumeClaim" | "Node" | "Service") {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        admit_create(rt, &mut obj);
        if rt.group == "apps" && rt.kind == "DaemonSet" {
            set_annotation(&mut obj, DAEMONSET_TEMPLATE_GENERATION, "1");
        }
        if rt.group.is_empty() && rt.kind == "Pod" {
            self.admit_priority(&mut obj).await?;
        }
        defaults::apply_defaults(rt.group, rt.kind, &mut obj);
        validation::validate(rt, &obj)?;
        crate::quota::admit_create(self, rt, rr.namespace.as_deref(), &obj, is_dry_run(q)).await?;
        let allocated = self.allocate_service(rt, &mut obj, None).await?;
        fields::record_update(&mut obj, None, manager, &rt.api_version(), "Update", None);
        if is_dry_run(q) {
            self.release_allocations(&allocated).await;
            return Ok(Reply { status: StatusCode::CREATED, body: obj, warnings, list: None });
        }
        let key = rt.key(rr.namespace.as_deref(), &name);
        match self.store.create(&key, encode_for_store(rt, &obj)).await {
            Ok(rev) => Ok(Reply { status: StatusCode::CREATED, body: with_revision(obj, rev), warnings, list: None }),
            Err(e) => {
                self.release_allocations(&allocated).await;
                Err(store_err(rt, &name, e))
            }
        }
    }

    /// Upstream's Priority admission: `priorityClassName` (or the global
    /// default class) resolves to `spec.priority` and `preemptionPolicy`.
    async fn admit_priority(&self, pod: &mut Value) -> Result<(), ApiError> {
        let classes_rt = tug_api::resources::find("scheduling.k8s.io", "v1", "priorityclasses").expect("served");
        let wanted = pod.pointer("/spec/priorityClassName").and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
        let class = match &wanted {
            // Read from the store, not the cache: a class created just before must be found.
            Some(name) => match self.read(classes_rt, None, name).await.ok() {
                Some((c, _)) => Some(Arc::new(c)),
                None => {
                    let mut e = ApiError::forbidden(format!(
                        "pods \"{}\" is forbidden: no PriorityClass with name {name} was found",
                        meta::name(pod)
                    ));
                    e.kind = "pods".into();
                    e.name = meta::name(pod).into();
                    return Err(e);
                }
            },
            None => {
                // Every pod without a class asks: parse only the class that
                // is the default, not every class.
                let (classes, _) = self.cache.entries(&classes_rt.key_prefix()).await;
                classes.iter().find(|c| c.parse::<ClassHead>().is_some_and(|h| h.global_default)).map(|c| Arc::new(c.value()))
            }
        };
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
        match class {
            Some(c) => {
                let value = c.get("value").and_then(Value::as_i64).unwrap_or(0);
                if let Some(p) = spec.get("priority").and_then(Value::as_i64) {
                    if p != value {
                        return Err(ApiError::forbidden(format!(
                            "the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
                        )));
                    }
                }
                spec.insert("priority".into(), json!(value));
                if wanted.is_none() {
                    spec.insert("priorityClassName".into(), json!(meta::name(&c)));
                }
                let policy = c.get("preemptionPolicy").cloned().unwrap_or(json!("PreemptLowerPriority"));
                spec.insert("preemptionPolicy".into(), policy);
            }
            None => {
                spec.entry("priority").or_insert(json!(0));
            }
        }
        Ok(())
    }

    /// Allocates cluster IP and node ports for a Service being created or
    /// changed; returns what was newly claimed so a failed write can return it.
    async fn allocate_service(&self, rt: &ResourceType, obj: &mut Value, old: Option<&Value>) -> Result<Vec<Allocation>, ApiError> {
        if !(rt.group.is_empty() && rt.kind == "Service") {
            return Ok(Vec::new());
        }
        let name = meta::name(obj).to_string();
        let owner = format!("{}/{}", meta::namespace(obj).unwrap_or(""), name);
        let mut claimed = Vec::new();
        let svc_type = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
        let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).and_then(Value::as_str).map(String::from);
        let requested = obj.pointer("/spec/clusterIP").and_then(Value::as_str).map(String::from);
        let result: Result<(), ApiError> = async {
            if svc_type != "ExternalName" {
                match (&old_ip, requested.as_deref()) {
                    (Some(old), None | Some("")) => {
                        obj["spec"]["clusterIP"] = json!(old);
                    }
                    (Some(old), Some(new)) if old != new => {
                        return Err(ApiError::invalid(rt.group, rt.kind, &name, vec![Cause::invalid("spec.clusterIPs[0]", &json!(new), "may not change once set")]));
                    }
                    (Some(_), Some(_)) => {}
                    (None, Some("None")) => {}
                    (None, req) => {
                        let ip = self
                            .alloc
                            .allocate_ip(req.filter(|s| !s.is_empty()), &owner)
                            .await
                            .map_err(|e| alloc_err(rt, &name, "spec.clusterIPs", req.unwrap_or(""), e))?;
                        claimed.push(Allocation::Ip(ip.clone()));
                        obj["spec"]["clusterIP"] = json!(ip);
                    }
                }
                if let Some(ip) = obj.pointer("/spec/clusterIP").cloned() {
                    obj["spec"]["clusterIPs"] = json!([ip]);
                }
            }
            if svc_type == "NodePort" || svc_type == "LoadBalancer" {
                let old_ports: Vec<(i64, String, i64)> = old
                    .and_then(|o| o.pointer("/spec/ports"))
                    .and_then(Value::as_array)
                    .map(|ps| {
                        ps.iter()
                            .map(|p| {
                                (
                                    p.get("port").and_then(Value::as_i64).unwrap_or(0),
                                    p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string(),
                                    p.get("nodePort").and_then(Value::as_i64).unwrap_or(0),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                    for (i, p) in ports.iter_mut().enumerate() {
                        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string();
                        let want = p.get("nodePort").and_then(Value::as_i64).filter(|n| *n != 0);
                        let previous = old_ports.iter().find(|(op, opr, np)| *op == port && *opr == proto && *np != 0).map(|x| x.2);
                        let np = match (want, previous) {
                            (None, Some(prev)) => prev,
                            (Some(w), Some(prev)) if w == prev => prev,
                            (w, _) => {
                                let got = self
                                    .alloc
                                    .allocate_port(w.map(|x| x as u16), &owner)
                                    .await
                                    .map_err(|e| alloc_err(rt, &name, &format!("spec.ports[{i}].nodePort"), &w.unwrap_or(0).to_string(), e))?;
                                claimed.push(Allocation::Port(got));
                                got as i64
                            }
                        };
                        p["nodePort"] = json!(np);
                    }
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(claimed),
            Err(e) => {
                self.release_allocations(&claimed).await;
                Err(e)
            }
        }
    }

    async fn release_allocations(&self, allocations: &[Allocation]) {
        for a in allocations {
            match a {
                Allocation::Ip(ip) => self.alloc.release_ip(ip).await,
                Allocation::Port(p) => self.alloc.release_port(*p).await,
            }
        }
    }

    /// Returns a deleted Service's IP and ports to the pool.
    async fn release_service(&self, rt: &ResourceType, obj: &Value) {
        if !(rt.group.is_empty() && rt.kind == "Service") {
            return;
        }
        if let Some(ip) = obj.pointer("/spec/clusterIP").and_then(Value::as_str).filter(|ip| *ip != "None" && !ip.is_empty()) {
            self.alloc.release_ip(ip).await;
        }
        if let Some(ports) = obj.pointer("/spec/ports").and_then(Value::as_array) {
            for p in ports {
                if let Some(np) = p.get("nodePort").and_then(Value::as_u64) {
                    self.alloc.release_port(np as u16).await;
                }
            }
        }
    }

    /// PUT of the main resource or the `status` subresource.
    pub async fn update(&self, rr: &ResourceRequest, name: &str, body: Value, q: &Query, manager: &str) -> Result<Reply, ApiError> {
        let rt = rr.rt;
        let mut obj = body;
        let mut warnings = Vec::new();
        self.check_type(rt, &mut obj)?;
        self.check_fields(rt, &mut obj, q, &mut warnings)?;
        self.check_namespace_field(rt, &mut obj, rr.namespace.as_deref())?;
        match meta::meta_str(&obj, "name") {
            Some(n) if n == name => {}
            Some(n) if !n.is_empty() => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
            _ => {
                meta::metadata_mut(&mut obj).insert("name".into(), json!(name));
            }
        }
        let expected: Option<Revision> = match meta::resource_version(&obj) {
            None | Some("") => None,
            Some(rv) => Some(rv.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
            })?),
        };
        // As upstream's cacher under GuaranteedUpdate: the first attempt
        // updates the watch cache's copy, saving a store read. It may be
        // stale, so only a write it lands (a compare-and-swap on its
        // revision) is trusted: a copy older than the resourceVersion the
        // client names, an error, or an update that changes nothing is
        // redone on the store's version.
        if let Some((old, old_rev)) = self.read_cached(rt, rr.namespace.as_deref(), name).await
            && expected.is_none_or(|exp| exp == old_rev)
            && let Ok(reply) = self.update_on(rr, name, old, old_rev, expected, obj.clone(), q, manager).await
            && meta::resource_version(&reply.body).is_some_and(|rv| rv != old_rev.to_string())
        {
            return Ok(Reply { warnings: [warnings, reply.warnings].concat(), ..reply });
        }
        let current = match self.read(rt, rr.namespace.as_deref(), name).await {
            Ok(c) => Some(c),
            Err(e) if e.code == 404 && allows_create_on_update(rt) && rr.subresource.is_none() => None,
            Err(e) => return Err(e),
        };
        let Some((old, old_rev)) = current else {
            return self.create(rr, obj, q, manager).await;
        };
        let reply = self.update_on(rr, name, old, old_rev, expected, obj, q, manager).await?;
        Ok(Reply { warnings: [warnings, reply.warnings].concat(), ..reply })
    }

    /// A PUT's update of `old`, read at `old_rev`: the client's
    /// preconditions (resourceVersion and uid), then the write.
    #[allow(clippy::too_many_arguments)]
    async fn update_on(
        &self,
        rr: &ResourceRequest,
        name: &str,
        old: Value,
        old_rev: Revision,
        expected: Option<Revision>,
        obj: Value,
        q: &Query,
        manager: &str,
    ) -> Result<Reply, ApiError> {
        let rt = rr.rt;
        if let Some(exp) = expected {
            if exp != old_rev {
                return Err(ApiError::stale(rt.group, rt.plural, name));
            }
        }
        // A uid in a PUT body is a precondition, as upstream.
        let old_uid = old.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
        if let Some(uid) = meta::meta_str(&obj, "uid").filter(|u| !u.is_empty() && *u != old_uid) {
            return Err(ApiError::conflict(rt.group, rt.plural, name, &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
            )));
        }
        self.write_update(rr, name, old, old_rev, obj, q, manager, "Update").await
    }

    /// Turns a proposed new object into a stored one: keeps what the client
    /// may not change, applies the subresource split, defaults, validates,
    /// and writes with compare-and-swap against `old_rev`.
    #[allow(clippy::too_many_arguments)]
    async fn write_update(
        &self,
        rr: &ResourceRequest,
        name: &str,
        old: Value,
        old_rev: Revision,
        mut obj: Value,
        q: &Query,
        manager: &str,
        operation: &str,
    ) -> Result<Reply, ApiError> {
        let rt = rr.rt;
        let sub = rr.subresource.as_deref();
        // Status split: the main resource can't change status; `status` can change only status.
        match sub {
            Some("status") => {
                // The old object with the new status, in the old member
                // order. As upstream's ResetObjectMetaForStatus: a status
                // write changes no metadata (labels, annotations, finalizers,
                // owners).
                // The uid is kept: it is the precondition that makes a
                // kubelet's status for a pod miss a pod recreated under
                // its name (checked below).
                let mut proposed = match std::mem::take(&mut obj) {
                    Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                };
                let mut new_status = proposed.swap_remove("status");
                let uid = proposed.get("metadata").and_then(|m| m.get("uid")).cloned();
                let mut merged = serde_json::Map::new();
                if let Some(members) = old.as_object() {
                    for (k, v) in members {
                        if k == "status" {
                            if let Some(s) = new_status.take() {
                                merged.insert(k.clone(), s);
                            }
                            continue;
                        }
                        // The proposal's member when it is the old one (a
                        // patch's spec is): a comparison, not a copy.
                        let kept = match proposed.swap_remove(k.as_str()) {
                            Some(p) if p == *v => p,
                            _ => v.clone(),
                        };
                        merged.insert(k.clone(), kept);
                    }
                }
                if let Some(s) = new_status {
                    merged.insert("status".into(), s);
                }
                if !merged.contains_key("metadata") {
                    merged.insert("metadata".into(), Value::Null);
                }
                obj = Value::Object(merged);
                if let Some(uid) = uid {
                    meta::metadata_mut(&mut obj).insert("uid".into(), uid);
                }
            }
            Some("finalize") if rt.kind == "Namespace" => {
                let finalizers = obj.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
                let mut merged = old.clone();
                merged["spec"]["finalizers"] = finalizers;
                obj = merged;
            }
            _ => {
                if rt.has_status() {
                    match old.get("status") {
                        Some(s) => obj["status"] = s.clone(),
                        None => {
                            if let Some(m) = obj.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
            }
        }
        // The uid never changes (a patch that tries is invalid).
        let old_uid = old.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
        if let Some(uid) = obj.pointer("/metadata/uid").filter(|u| u.as_str().map(|s| !s.is_empty()).unwrap_or(false) && **u != old_uid) {
            return Err(ApiError::invalid(rt.group, rt.kind, name, vec![Cause::invalid("metadata.uid", uid, "field is immutable")]));
        }
        // Server-owned metadata.
        {
            let empty = serde_json::Map::new();
            let old_meta = old.get("metadata").and_then(Value::as_object).unwrap_or(&empty);
            let m = meta::metadata_mut(&mut obj);
            for f in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "namespace"] {
                match old_meta.get(f) {
                    Some(v) => {
                        m.insert(f.into(), v.clone());
                    }
                    None => {
                        m.remove(f);
                    }
                }
            }
            m.insert("name".into(), json!(name));
            if !m.contains_key("managedFields") {
                if let Some(mf) = old_meta.get("managedFields") {
                    m.insert("managedFields".into(), mf.clone());
                }
            }
        }
        defaults::apply_defaults(rt.group, rt.kind, &mut obj);
        if rt.kind == "Namespace" && obj.pointer("/metadata/deletionTimestamp").is_some() {
            // A namespace being deleted stays Terminating whatever a status write says.
            obj["status"]["phase"] = json!("Terminating");
        }
        if sub == Some("status") {
            validation::validate_status(rt, &obj)?;
        } else {
            validation::validate(rt, &obj)?;
        }
        check_immutable(rt, &old, &obj)?;
        if tracks_generation(rt) && bumps_generation(rt, &old, &obj) {
            let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
            meta::metadata_mut(&mut obj).insert("generation".into(), json!(g + 1));
            if rt.group == "apps" && rt.kind == "DaemonSet" && old.pointer("/spec/template") != obj.pointer("/spec/template") {
                set_annotation(&mut obj, DAEMONSET_TEMPLATE_GENERATION, &(g + 1).to_string());
            }
        }
        let allocated = self.allocate_service(rt, &mut obj, Some(&old)).await?;
        let recorded_sub = sub.filter(|s| *s == "status" || *s == "scale");
        fields::record_update(&mut obj, Some(&old), manager, &rt.api_version(), operation, recorded_sub);
        // A no-op write changes nothing, not even the resourceVersion.
        if same_but_volatile(&old, &obj) {
            self.release_allocations(&allocated).await;
            return Ok(Reply::ok(old));
        }
        if is_dry_run(q) {
            self.release_allocations(&allocated).await;
            return Ok(Reply::ok(with_revision(obj, old_rev)));
        }
        let key = rt.key(rr.namespace.as_deref(), name);
        // The last finalizer removed from an object being deleted deletes it.
        if obj.pointer("/metadata/deletionTimestamp").is_some() && meta::finalizers(&obj).is_empty() && !(rt.kind == "Namespace" && has_spec_finalizers(&obj)) {
            let is_pending_pod = rt.kind == "Pod" && rt.group.is_empty() && pod_needs_kubelet(&obj);
            if !is_pending_pod {
                return match self.store.delete(&key, Some(old_rev)).await {
                    Ok((rev, _)) => {
                        self.release_service(rt, &obj).await;
                        Ok(Reply::ok(with_revision(obj, rev)))
                    }
                    Err(e) => Err(store_err(rt, name, e)),
                };
            }
        }
        match self.store.update(&key, encode_for_store(rt, &obj), old_rev).await {
            Ok(rev) => Ok(Reply::ok(with_revision(obj, rev))),
            Err(e) => {
                self.release_allocations(&allocated).await;
                Err(store_err(rt, name, e))
            }
        }
    }

    /// PATCH of the main resource or a subresource; retried on conflicts
    /// unless the patch itself names a resourceVersion.
    pub async fn patch(
        &self,
        rr: &ResourceRequest,
        name: &str,
        patch_type: PatchType,
        body: &Bytes,
        q: &Query,
        manager: &str,
    ) -> Result<Reply, ApiError> {
        let rt = rr.rt;
        let patch_doc = match patch_type {
            PatchType::Apply => decode_body(body, "application/yaml")?,
            _ => decode_body(body, "application/json")?,
        };
        if patch_type == PatchType::Apply {
            return self.apply(rr, name, patch_doc, q, manager).await;
        }
        // Only a resourceVersion the patch itself names is a precondition;
        // otherwise conflicts with concurrent writers are retried here, as upstream.
        let precondition = patch_resource_version(patch_type, &patch_doc);
        // As upstream's GuaranteedUpdate given the watch cache's object: the
        // first attempt patches the cached version, saving a store read.
        // It may be stale, so only a write it lands is trusted: an error, or
        // a patch that changes nothing, is redone on the store's version.
        // (With a precondition a stale version would fail it: store only.)
        let mut try_cache = precondition.is_none();
        let mut last_err = None;
        for _ in 0..PATCH_RETRIES {
            let (old, old_rev, from_cache) = self.read_for_write(rt, rr.namespace.as_deref(), name, std::mem::take(&mut try_cache)).await?;
            match self.patch_once(rr, name, patch_type, &patch_doc, precondition.as_deref(), old, old_rev, q, manager).await {
                Ok((_, false)) | Err(_) if from_cache => continue,
                Ok((r, _)) => return Ok(r),
                Err(e) if e.code == 409 && e.reason == "Conflict" && precondition.is_none() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| ApiError::stale(rt.group, rt.plural, name)))
    }

    /// The version a write starts from: the watch cache's when `try_cache`
    /// and it has one (then `true`), else the store's.
    async fn read_for_write(&self, rt: &ResourceType, ns: Option<&str>, name: &str, try_cache: bool) -> Result<(Value, Revision, bool), ApiError> {
        if try_cache && let Some((old, rev)) = self.read_cached(rt, ns, name).await {
            return Ok((old, rev, true));
        }
        let (old, rev) = self.read(rt, ns, name).await?;
        Ok((old, rev, false))
    }

    /// The newest version of an object the watch cache has, as [`Ctx::read`]
    /// returns it from the store.
    async fn read_cached(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Option<(Value, Revision)> {
        let cached = self.cache.get(&rt.key(ns, name)).await?;
        Some((convert::from_storage(rt, Arc::unwrap_or_clone(cached.object)), cached.revision))
    }

    /// One attempt of a PATCH on `old`: the reply, and whether it wrote
    /// (a no-op or a dry run did not).
    #[allow(clippy::too_many_arguments)]
    async fn patch_once(
        &self,
        rr: &ResourceRequest,
        name: &str,
        patch_type: PatchType,
        patch_doc: &Value,
        precondition: Option<&str>,
        old: Value,
        old_rev: Revision,
        q: &Query,
        manager: &str,
    ) -> Result<(Reply, bool), ApiError> {
        let rt = rr.rt;
        // Patches read the base and build a new object: the old one is
        // borrowed, not copied (it is needed whole for the update).
        let scale;
        let base = if rr.subresource.as_deref() == Some("scale") {
            scale = scale_of(rt, &old);
            &scale
        } else {
            &old
        };
        let patched = match patch_type {
            PatchType::Json => patch::apply_json_patch(base, patch_doc),
            PatchType::Merge => patch::apply_merge_patch(base, patch_doc),
            PatchType::Strategic => {
                let def = if rr.subresource.as_deref() == Some("scale") { "io.k8s.api.autoscaling.v1.Scale" } else { rt.definition };
                patch::strategic::apply(base, patch_doc, def)
            }
            PatchType::Apply => unreachable!("handled by the caller"),
        };
        let mut new = patched.map_err(|e| {
            let mut err = ApiError::invalid(rt.group, rt.kind, name, vec![]);
            err.message = e.clone();
            if patch_type == PatchType::Json { err } else { ApiError::bad_request(e) }
        })?;
        if let Some(rv) = precondition {
            if rv != old_rev.to_string() {
                return Err(ApiError::stale(rt.group, rt.plural, name));
            }
        }
        if rr.subresource.as_deref() == Some("scale") {
            new = apply_scale(rt, &old, &new)?;
        }
        let mut warnings = Vec::new();
        // A stored object has no unknown fields (every write drops or
        // refuses them), so a merge or strategic patch brings in only the
        // unknown fields the patch itself holds: when it holds none, the
        // patched object is not walked again. (A strategic patch's
        // directives, `$patch` and the like, count as unknown here and so
        // take the full check.)
        let patch_is_known = matches!(patch_type, PatchType::Merge | PatchType::Strategic)
            && rr.subresource.as_deref() != Some("scale")
            && Schemas::get().unknown_fields(rt.definition, patch_doc).is_empty();
        if !patch_is_known {
            self.check_fields(rt, &mut new, q, &mut warnings)?;
        }
        meta::metadata_mut(&mut new).insert("resourceVersion".into(), json!(old_rev.to_string()));
        let mut r = self.write_update(rr, name, old, old_rev, new, q, manager, "Update").await?;
        let wrote = meta::resource_version(&r.body).is_some_and(|rv| rv != old_rev.to_string());
        if rr.subresource.as_deref() == Some("scale") {
            r.body = scale_of(rt, &r.body);
        }
        r.warnings.extend(warnings);
        Ok((r, wrote))
    }

    /// Server-side apply (`application/apply-patch+yaml`).
    async fn apply(&self, rr: &ResourceRequest, name: &str, config: Value, q: &Query, manager: &str) -> Result<Reply, ApiError> {
        let rt = rr.rt;
        if q.get("fieldManager").map(|s| s.is_empty()).unwrap_or(true) {
            return Err(ApiError::bad_request("PATCH request for server-side apply must specify a field manager (fieldManager query parameter)"));
        }
        let force = q.get("force").map(|v| v == "true").unwrap_or(false);
        let mut config = config;
        self.check_type(rt, &mut config)?;
        if meta::meta_str(&config, "name").map(|n| n != name).unwrap_or(true) {
            return Err(ApiError::bad_request(format!("the name of the object ({}) does not match the name on the URL ({name})", meta::name(&config))));
        }
        let mut warnings = Vec::new();
        self.check_fields(rt, &mut config, q, &mut warnings)?;
        for _ in 0..PATCH_RETRIES {
            let current = match self.read(rt, rr.namespace.as_deref(), name).await {
                Ok(c) => Some(c),
                Err(e) if e.code == 404 => None,
                Err(e) => return Err(e),
            };
            let Some((old, old_rev)) = current else {
                let mut obj = config.clone();
                fields::record_apply(&mut obj, None, &config, manager, &rt.api_version(), force)
                    .map_err(|conflicts| fields::conflict_error(rt, name, conflicts))?;
                let mut r = self.create(rr, obj, q, manager).await?;
                r.warnings.extend(warnings);
                return Ok(r);
            };
            let mut merged = fields::merge_applied(&old, &config, manager, rt.definition);
            fields::record_apply(&mut merged, Some(&old), &config, manager, &rt.api_version(), force)
                .map_err(|conflicts| fields::conflict_error(rt, name, conflicts))?;
            match self.write_update(rr, name, old, old_rev, merged, q, manager, "Apply").await {
                Ok(mut r) => {
                    r.warnings.extend(warnings);
                    return Ok(r);
                }
                Err(e) if e.code == 409 && e.reason == "Conflict" => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::stale(rt.group, rt.plural, name))
    }

    pub async fn get_scale(&self, rr: &ResourceRequest, name: &str) -> Result<Reply, ApiError> {
        let (obj, _) = self.read(rr.rt, rr.namespace.as_deref(), name).await?;
        Ok(Reply::ok(scale_of(rr.rt, &obj)))
    }

    pub async fn put_scale(&self, rr: &ResourceRequest, name: &str, body: Value, q: &Query, manager: &str) -> Result<Reply, ApiError> {
        let (old, old_rev) = self.read(rr.rt, rr.namespace.as_deref(), name).await?;
        if let Some(rv) = meta::resource_version(&body).filter(|r| !r.is_empty()) {
            if rv != old_rev.to_string() {
                return Err(ApiError::stale(rr.rt.group, rr.rt.plural, name));
            }
        }
        let new = apply_scale(rr.rt, &old, &body)?;
        let mut r = self.write_update(rr, name, old, old_rev, new, q, manager, "Update").await?;
        r.body = scale_of(rr.rt, &r.body);
        Ok(r)
    }

    /// DELETE of one object, with grace periods, preconditions, finalizers
    /// and propagation policy.
    pub async fn delete(&self, rr: &ResourceRequest, name: &str, options: &Value, q: &Query) -> Result<Reply, ApiError> {
        let rt = rr.rt;
        let grace_param: Option<i64> = q
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse().ok())
            .or_else(|| options.get("gracePeriodSeconds").and_then(Value::as_i64));
        let propagation = q
            .get("propagationPolicy")
            .cloned()
            .or_else(|| options.get("propagationPolicy").and_then(Value::as_str).map(String::from))
            .or_else(|| options.get("orphanDependents").and_then(Value::as_bool).map(|o| if o { "Orphan".into() } else { "Background".into() }));
        let dry_run = is_dry_run(q) || options.get("dryRun").and_then(Value::as_array).map(|a| a.iter().any(|v| v == "All")).unwrap_or(false);
        for _ in 0..PATCH_RETRIES {
            let (old, old_rev) = self.read(rt, rr.namespace.as_deref(), name).await?;
            if let Some(uid) = options.pointer("/preconditions/uid").and_then(Value::as_str) {
                if old.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
                    return Err(ApiError::conflict(rt.group, rt.plural, name, &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("")
                    )));
                }
            }
            if let Some(rv) = options.pointer("/preconditions/resourceVersion").and_then(Value::as_str) {
                if rv != old_rev.to_string() {
                    return Err(ApiError::conflict(rt.group, rt.plural, name, &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {old_rev}"
                    )));
                }
            }
            let mut new = old.clone();
            let mut finalizers = meta::finalizers(&old);
            match propagation.as_deref() {
                Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => finalizers.push("orphan".into()),
                Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => finalizers.push("foregroundDeletion".into()),
                Some("Orphan" | "Foreground" | "Background") | None => {}
                Some(other) => {
                    return Err(ApiError::invalid(rt.group, rt.kind, name, vec![Cause::not_supported("propagationPolicy", &json!(other), &["Foreground", "Background", "Orphan"])]));
                }
            }
            let grace = if rt.group.is_empty() && rt.kind == "Pod" {
                let spec_grace = old.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30);
                let g = grace_param.unwrap_or(spec_grace).max(0);
                if pod_needs_kubelet(&old) { g } else { 0 }
            } else {
                0
            };
            let namespace_pending = rt.kind == "Namespace" && has_spec_finalizers(&old);
            if finalizers.is_empty() && grace == 0 && !namespace_pending {
                if dry_run {
                    return Ok(Reply::ok(old));
                }
                let key = rt.key(rr.namespace.as_deref(), name);
                return match self.store.delete(&key, Some(old_rev)).await {
                    Ok((rev, _)) => {
                        self.release_service(rt, &old).await;
                        Ok(Reply::ok(with_revision(old, rev)))
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => Err(store_err(rt, name, e)),
                };
            }
            // Graceful or finalized deletion: mark, and let the owner finish.
            {
                let m = meta::metadata_mut(&mut new);
                let existing_grace = m.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
                if m.get("deletionTimestamp").is_none() || existing_grace.map(|e| grace < e).unwrap_or(false) {
                    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
                    m.insert("deletionTimestamp".into(), json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                if !finalizers.is_empty() {
                    m.insert("finalizers".into(), json!(finalizers));
                }
            }
            if rt.kind == "Namespace" {
                new["status"]["phase"] = json!("Terminating");
            }
            if new == old {
                return Ok(Reply::with(StatusCode::ACCEPTED, old));
            }
            if dry_run {
                return Ok(Reply::with(StatusCode::ACCEPTED, new));
            }
            let key = rt.key(rr.namespace.as_deref(), name);
            return match self.store.update(&key, encode_for_store(rt, &new), old_rev).await {
                Ok(rev) => Ok(Reply::with(StatusCode::ACCEPTED, with_revision(new, rev))),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => Err(store_err(rt, name, e)),
            };
        }
        Err(ApiError::stale(rt.group, rt.plural, name))
    }

    /// DELETE of a collection: every matching object, one by one.
    pub async fn delete_collection(&self, rr: &ResourceRequest, options: &Value, q: &Query) -> Result<Reply, ApiError> {
        let listed = self.list_objects(rr, q).await?;
        let mut deleted = Vec::new();
        for obj in listed.0 {
            let name = meta::name(&obj).to_string();
            let scoped = ResourceRequest { rt: rr.rt, namespace: meta::namespace(&obj).map(String::from), name: Some(name.clone()), subresource: None };
            match self.delete(&scoped, &name, options, q).await {
                Ok(r) => deleted.push(r.body),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Reply::list(self.list_body(rr.rt, deleted.into_iter().map(|d| ListItem::Decoded(Arc::new(d))).collect(), self.cache.revision(), None, None)))
    }

    /// POST pods/{name}/binding: assigns a node, once.
    pub async fn bind(&self, rr: &ResourceRequest, name: &str, body: Value) -> Result<Reply, ApiError> {
        let rt = rr.rt;
        let node = body.pointer("/target/name").and_then(Value::as_str).unwrap_or("").to_string();
        if let Some(n) = meta::meta_str(&body, "name").filter(|n| !n.is_empty() && *n != name) {
            return Err(ApiError::bad_request(format!("name in URL does not match name in Binding object: {name} != {n}")));
        }
        if node.is_empty() {
            return Err(ApiError::invalid("", "Binding", name, vec![Cause::required("target.name")]));
        }
        // The first attempt binds the watch cache's copy, as PATCH and PUT
        // do; only a write it lands is trusted, anything else is redone on
        // the store's version.
        let mut try_cache = true;
        for _ in 0..PATCH_RETRIES {
            let (old, old_rev, from_cache) = self.read_for_write(rt, rr.namespace.as_deref(), name, std::mem::take(&mut try_cache)).await?;
            match self.bind_once(rr, name, &body, &node, old, old_rev).await {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => continue,
                Err(_) if from_cache => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::stale(rt.group, rt.plural, name))
    }

    /// One attempt of a binding on `old`: the reply, or `None` when the
    /// pod changed since `old_rev` (compare-and-swap failed).
    async fn bind_once(&self, rr: &ResourceRequest, name: &str, body: &Value, node: &str, old: Value, old_rev: Revision) -> Result<Option<Reply>, ApiError> {
        let rt = rr.rt;
        let old_uid = old.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
        if let Some(uid) = meta::meta_str(body, "uid").filter(|u| !u.is_empty() && *u != old_uid) {
            return Err(ApiError::conflict(rt.group, rt.plural, name, &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
            )));
        }
        if let Some(rv) = meta::resource_version(body).filter(|r| !r.is_empty() && *r != old_rev.to_string()) {
            return Err(ApiError::conflict(rt.group, rt.plural, name, &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {old_rev}"
            )));
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict(rt.group, rt.plural, name, "pod is being deleted, cannot be assigned to a host"));
        }
        if let Some(existing) = old.pointer("/spec/nodeName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            return Err(ApiError::conflict(rt.group, rt.plural, name, &format!("pod {name} is already assigned to node \"{existing}\"")));
        }
        let mut new = old;
        new["spec"]["nodeName"] = json!(node);
        set_condition(&mut new, "PodScheduled", "True", None);
        let key = rt.key(rr.namespace.as_deref(), name);
        match self.store.update(&key, encode_for_store(rt, &new), old_rev).await {
            Ok(_) => Ok(Some(Reply::with(StatusCode::CREATED, tug_api::status::success_status()))),
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(store_err(rt, name, e)),
        }
    }

    /// POST pods/{name}/eviction: a delete that respects PodDisruptionBudgets
    /// (upstream's EvictionREST). A pod that is pending, finished or being
    /// deleted is deleted at once. Otherwise the one PDB selecting it (more
    /// is a 500) must allow a disruption: `disruptionsAllowed` is taken down
    /// by one and the pod recorded in `disruptedPods`, by compare-and-swap,
    /// before the delete; at 0 the answer is 429. A pod that is not ready
    /// costs nothing when the budget is met anyway (or the PDB's
    /// `unhealthyPodEvictionPolicy` is `AlwaysAllow`).
    pub async fn evict(&self, rr: &ResourceRequest, name: &str, body: Value, q: &Query) -> Result<Reply, ApiError> {
        const MAX_DISRUPTED_PODS: usize = 2000;
        let rt = rr.rt;
        if let Some(n) = meta::meta_str(&body, "name").filter(|n| !n.is_empty() && *n != name) {
            return Err(ApiError::bad_request(format!("name in URL does not match name in Eviction object: {name} != {n}")));
        }
        let ns = rr.namespace.clone().unwrap_or_default();
        let mut options = body.get("deleteOptions").cloned().filter(Value::is_object).unwrap_or(json!({}));
        let dry_run = is_dry_run(q) || options.get("dryRun").and_then(Value::as_array).map(|a| a.iter().any(|v| v == "All")).unwrap_or(false);
        let rv_given = options.pointer("/preconditions/resourceVersion").is_some();
        let too_many = |retry: Option<u32>, cause: String| {
            let mut e = ApiError::new(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.");
            e.retry_after_seconds = retry;
            e.causes = vec![Cause::new("DisruptionBudget", "", cause)];
            e
        };
        let pdb_rt = tug_api::resources::find("policy", "v1", "poddisruptionbudgets").ok_or_else(|| ApiError::internal("poddisruptionbudgets are not served"))?;
        let mut pod = Value::Null;
        let mut pod_rev = 0;
        for attempt in 0..PATCH_RETRIES {
            (pod, pod_rev) = self.read(rt, rr.namespace.as_deref(), name).await?;
            let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
            let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
            if !(matches!(phase, "Succeeded" | "Failed" | "Pending") || deleting) {
                break;
            }
            // It disrupts nothing; a pending pod is deleted only as read, so
            // that it cannot have become ready meanwhile.
            let mut o = options.clone();
            if phase == "Pending" && !deleting && !rv_given {
                o["preconditions"]["resourceVersion"] = json!(pod_rev.to_string());
            }
            match self.delete(rr, name, &o, q).await {
                Err(e) if e.code == 409 && !rv_given && attempt + 1 < PATCH_RETRIES => continue,
                Err(e) => return Err(e),
                Ok(_) => return Ok(Reply::with(StatusCode::CREATED, tug_api::status::success_status())),
            }
        }
        // A consistent read, as upstream's eviction lists the budgets through
        // the API: a budget created just before must count (two budgets make
        // the eviction fail), even when the cache lags behind the store.
        let now = self.store.current_revision().await.map_err(|e| store_err(pdb_rt, "", e))?;
        self.wait_for_cache(now).await?;
        let (pdbs, _) = self.cache.list(&format!("{}{ns}/", pdb_rt.key_prefix())).await;
        let matching: Vec<Arc<Value>> = pdbs
            .into_iter()
            .filter(|pdb| {
                let Some(Ok(sel)) = pdb.pointer("/spec/selector").map(LabelSelector::from_label_selector_json) else { return false };
                // Upstream's eviction treats an empty PDB selector as matching nothing.
                !sel.is_empty() && sel.matches(meta::labels(&pod))
            })
            .collect();
        if matching.len() > 1 {
            return Ok(Reply::with(StatusCode::INTERNAL_SERVER_ERROR, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.", "code": 500})));
        }
        if let Some(cached) = matching.first() {
            let pdb_name = meta::name(cached).to_string();
            let int = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0);
            let ready = pod.pointer("/status/conditions").and_then(Value::as_array).map(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")).unwrap_or(false);
            let always_allow = cached.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str) == Some("AlwaysAllow");
            let (current, desired) = (int(cached, "/status/currentHealthy"), int(cached, "/status/desiredHealthy"));
            if !ready && (always_allow || (current >= desired && desired > 0)) {
                // Not counted as healthy: evicting it costs the budget
                // nothing, as long as it does not become ready meanwhile.
                if !rv_given {
                    options["preconditions"]["resourceVersion"] = json!(pod_rev.to_string());
                }
                return match self.delete(rr, name, &options, q).await {
                    Err(e) if e.code == 409 && !rv_given => {
                        Err(too_many(Some(10), format!("The disruption budget {pdb_name} is still being processed by the server.")))
                    }
                    Err(e) => Err(e),
                    Ok(_) => Ok(Reply::with(StatusCode::CREATED, tug_api::status::success_status())),
                };
            }
            let mut decremented = false;
            for _ in 0..PATCH_RETRIES {
                let (mut pdb, pdb_rev) = self.read(pdb_rt, Some(&ns), &pdb_name).await?;
                if int(&pdb, "/status/observedGeneration") < int(&pdb, "/metadata/generation") {
                    return Err(too_many(Some(10), format!("The disruption budget {pdb_name} is still being processed by the server.")));
                }
                let allowed = int(&pdb, "/status/disruptionsAllowed");
                let forbidden = |why: &str| {
                    let mut e = ApiError::forbidden(format!("poddisruptionbudgets.policy \"{pdb_name}\" is forbidden: {why}"));
                    (e.group, e.kind, e.name) = ("policy".into(), "poddisruptionbudgets".into(), pdb_name.clone());
                    e
                };
                if allowed < 0 {
                    return Err(forbidden("pdb disruptions allowed is negative"));
                }
                if pdb.pointer("/status/disruptedPods").and_then(Value::as_object).map(|m| m.len()).unwrap_or(0) > MAX_DISRUPTED_PODS {
                    return Err(forbidden("DisruptedPods map too big - too many evictions not confirmed by PDB controller"));
                }
                if allowed == 0 {
                    return Err(too_many(None, format!(
                        "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                        int(&pdb, "/status/desiredHealthy"),
                        int(&pdb, "/status/currentHealthy")
                    )));
                }
                if dry_run {
                    decremented = true;
                    break;
                }
                let status = &mut pdb["status"];
                status["disruptionsAllowed"] = json!(allowed - 1);
                if !status.get("disruptedPods").map(Value::is_object).unwrap_or(false) {
                    status["disruptedPods"] = json!({});
                }
                status["disruptedPods"][name] = json!(meta::now_rfc3339());
                if allowed == 1 {
                    // Upstream's UpdateDisruptionAllowedCondition.
                    let observed = status.get("observedGeneration").cloned().unwrap_or(json!(0));
                    if !status.get("conditions").map(Value::is_array).unwrap_or(false) {
                        status["conditions"] = json!([]);
                    }
                    let conds = status["conditions"].as_array_mut().expect("an array");
                    let mut cond = json!({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods", "message": "",
                        "observedGeneration": observed, "lastTransitionTime": meta::now_rfc3339()});
                    match conds.iter_mut().find(|c| c["type"] == "DisruptionAllowed") {
                        Some(c) => {
                            if c["status"] == "False" {
                                cond["lastTransitionTime"] = c["lastTransitionTime"].clone();
                            }
                            *c = cond;
                        }
                        None => conds.push(cond),
                    }
                }
                match self.store.update(&pdb_rt.key(Some(&ns), &pdb_name), encode_for_store(pdb_rt, &pdb), pdb_rev).await {
                    Ok(_) => {
                        decremented = true;
                        break;
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_err(pdb_rt, &pdb_name, e)),
                }
            }
            if !decremented {
                return Err(ApiError::timeout(format!("couldn't update PodDisruptionBudget \"{pdb_name}\" due to conflicts")));
            }
        }
        self.delete(rr, name, &options, q).await?;
        Ok(Reply::with(StatusCode::CREATED, tug_api::status::success_status()))
    }

    /// LIST: objects matching the request's namespace and selectors.
    pub async fn list(&self, rr: &ResourceRequest, q: &Query) -> Result<Reply, ApiError> {
        let (mut items, rev, cont, remaining) = self.list_page(rr, q).await?;
        if convert::converts(rr.rt) {
            items = items.into_iter().map(|o| ListItem::Decoded(Arc::new(convert::from_storage(rr.rt, o.into_value())))).collect();
        }
        Ok(Reply::list(self.list_body(rr.rt, items, rev, cont, remaining)))
    }

    fn list_body(&self, rt: &ResourceType, items: Vec<ListItem>, rev: Revision, cont: Option<String>, remaining: Option<i64>) -> ListBody {
        let mut metadata = json!({"resourceVersion": rev.to_string()});
        if let Some(c) = cont {
            metadata["continue"] = json!(c);
        }
        if let Some(r) = remaining {
            metadata["remainingItemCount"] = json!(r);
        }
        ListBody { kind: format!("{}List", rt.kind), api_version: rt.api_version(), metadata, items }
    }

    async fn list_objects(&self, rr: &ResourceRequest, q: &Query) -> Result<(Vec<Arc<Value>>, Revision), ApiError> {
        let mut all = Query::new();
        for k in ["labelSelector", "fieldSelector"] {
            if let Some(v) = q.get(k) {
                all.insert(k.into(), v.clone());
            }
        }
        let (items, rev, _, _) = self.list_page(rr, &all).await?;
        Ok((items.into_iter().map(|i| match i {
            ListItem::Cached(e) => Arc::new(e.value()),
            ListItem::Decoded(v) => v,
        }).collect(), rev))
    }

    /// One page of a LIST, following upstream's resourceVersion rules:
    /// unset = consistent read (the cache waits until it has the store's
    /// newest revision); `0` = whatever the cache has; `N` = not older than N
    /// (or exactly N with `resourceVersionMatch=Exact`, read from the store);
    /// `limit` with a consistent read, and `continue`, page through the store.
    async fn list_page(&self, rr: &ResourceRequest, q: &Query) -> Result<(Vec<ListItem>, Revision, Option<String>, Option<i64>), ApiError> {
        let rt = rr.rt;
        let filter = Filter::from_query(rt, q)?;
        let limit: Option<usize> = q.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0);
        let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
        let rv_match = q.get("resourceVersionMatch").map(String::as_str).unwrap_or("");
        let prefix = match (&rr.namespace, rt.namespaced) {
            (Some(ns), true) => format!("{}{}/", rt.key_prefix(), ns),
            _ => rt.key_prefix(),
        };
        if let Some(token) = q.get("continue").filter(|c| !c.is_empty()) {
            let (start_after, rev) = decode_continue(token)?;
            return self.list_from_store(rt, &prefix, &filter, limit, Some(start_after), Some(rev)).await;
        }
        match (rv, rv_match) {
            (_, m) if !m.is_empty() && !matches!(m, "Exact" | "NotOlderThan") => {
                Err(ApiError::bad_request(format!("resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\"")))
            }
            ("", m) if !m.is_empty() => Err(ApiError::bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")),
            (rv, "Exact") => {
                let r: Revision = rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
                self.list_from_store(rt, &prefix, &filter, limit, None, Some(r)).await
            }
            ("", _) if limit.is_some() => self.list_from_store(rt, &prefix, &filter, limit, None, None).await,
            _ => {
                let wanted: Revision = match rv {
                    "" => self.store.current_revision().await.map_err(|e| store_err(rt, "", e))?,
                    "0" => 0,
                    other => other.parse().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {other:?}")))?,
                };
                self.wait_for_cache(wanted).await?;
                let node = filter.node_name();
                let (items, rev) = match (rt.kind, node) {
                    ("Pod", Some(n)) if rt.group.is_empty() => self.cache.pods_on_node(&prefix, &n).await,
                    _ => self.cache.entries(&prefix).await,
                };
                let items = items.into_iter().filter(|e| filter.matches_entry(e)).map(ListItem::Cached).collect();
                Ok((items, rev, None, None))
            }
        }
    }

    /// Waits (up to `CACHE_WAIT`) until the watch cache has applied
    /// `revision`; a reader that then reads the cache sees every write up to it.
    async fn wait_for_cache(&self, revision: Revision) -> Result<(), ApiError> {
        if revision > self.cache.revision() && !self.cache.wait_for(revision, CACHE_WAIT).await {
            let mut e = ApiError::timeout(format!("Too large resource version: {revision}, current: {}", self.cache.revision()));
            e.retry_after_seconds = Some(1);
            return Err(e);
        }
        Ok(())
    }

    async fn list_from_store(
        &self,
        rt: &ResourceType,
        prefix: &str,
        filter: &Filter,
        limit: Option<usize>,
        start_after: Option<String>,
        revision: Option<Revision>,
    ) -> Result<(Vec<ListItem>, Revision, Option<String>, Option<i64>), ApiError> {
        let mut out = Vec::new();
        let mut start = start_after;
        let mut rev = revision;
        loop {
            let want = limit.map(|l| l - out.len());
            let page = self
                .store
                .list(prefix, ListOptions { revision: rev, limit: want.map(|w| w.max(1)), start_after: start.clone() })
                .await
                .map_err(|e| store_err(rt, "", e))?;
            rev = Some(page.revision);
            let mut last_key = None;
            for kv in &page.items {
                last_key = Some(kv.key.clone());
                if let Some(obj) = crate::cache::decode_stored(&kv.value, kv.mod_revision) {
                    if filter.matches(&obj) {
                        out.push(ListItem::Decoded(Arc::new(obj)));
                    }
                }
            }
            let full = limit.map(|l| out.len() >= l).unwrap_or(false);
            if !page.more {
                return Ok((out, page.revision, None, None));
            }
            if full {
                let token = encode_continue(last_key.as_deref().unwrap_or(""), page.revision);
                return Ok((out, page.revision, Some(token), None));
            }
            start = last_key;
        }
    }
}

/// Upstream's DaemonSet strategy records the generation of the template here
/// (pods get it as their `pod-template-generation` label).
const DAEMONSET_TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    let m = meta::metadata_mut(obj);
    if !m.get("annotations").map(Value::is_object).unwrap_or(false) {
        m.insert("annotations".into(), json!({}));
    }
    m["annotations"].as_object_mut().expect("object").insert(key.into(), json!(value));
}

/// The resourceVersion a patch document sets, if any.
fn patch_resource_version(patch_type: PatchType, doc: &Value) -> Option<String> {
    match patch_type {
        PatchType::Json => doc.as_array()?.iter().find_map(|op| {
            (op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion")
                && matches!(op.get("op").and_then(Value::as_str), Some("add" | "replace")))
            .then(|| op.get("value").and_then(Value::as_str).map(String::from))
            .flatten()
        }),
        _ => doc.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(String::from),
    }
}

fn has_spec_finalizers(obj: &Value) -> bool {
    obj.pointer("/spec/finalizers").and_then(Value::as_array).map(|a| !a.is_empty()).unwrap_or(false)
}

/// A pod that a kubelet must stop before it can go: bound and not finished.
fn pod_needs_kubelet(pod: &Value) -> bool {
    let bound = pod.pointer("/spec/nodeName").and_then(Value::as_str).map(|s| !s.is_empty()).unwrap_or(false);
    let terminal = matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"));
    bound && !terminal
}

#[derive(Debug)]
enum Allocation {
    Ip(String),
    Port(u16),
}

fn alloc_err(rt: &ResourceType, name: &str, field: &str, value: &str, e: AllocError) -> ApiError {
    match e {
        AllocError::Store(s) => store_err(rt, name, s),
        other => ApiError::invalid(rt.group, rt.kind, name, vec![Cause::invalid(field, &json!(value), &other.to_string())]),
    }
}

/// Upstream's Job strategy: unless `manualSelector`, the selector is
/// generated from the Job's uid and the template labelled to match.
fn generate_job_selector(obj: &mut Value) {
    let manual = obj.pointer("/spec/manualSelector").and_then(Value::as_bool).unwrap_or(false);
    if manual || obj.pointer("/spec/selector").map(|s| !s.is_null()).unwrap_or(false) {
        return;
    }
    let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string();
    let name = meta::name(obj).to_string();
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    spec.insert("selector".into(), json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}));
    let template = spec.entry("template").or_insert_with(|| json!({}));
    if !template.get("metadata").map(Value::is_object).unwrap_or(false) {
        template["metadata"] = json!({});
    }
    let labels = template["metadata"].as_object_mut().expect("object").entry("labels").or_insert_with(|| json!({}));
    if let Some(l) = labels.as_object_mut() {
        l.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
        l.insert("batch.kubernetes.io/job-name".into(), json!(name));
        l.insert("controller-uid".into(), json!(uid));
        l.insert("job-name".into(), json!(name));
    }
}

/// Admission on create: the mutations upstream's default admission plugins make.
fn admit_create(rt: &ResourceType, obj: &mut Value) {
    if rt.group == "batch" && rt.kind == "Job" {
        generate_job_selector(obj);
        return;
    }
    if !(rt.group.is_empty() && rt.kind == "Pod") {
        return;
    }
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    // ServiceAccount admission.
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(sa));
    spec.insert("serviceAccount".into(), json!(sa));
    spec.entry("enableServiceLinks").or_insert(json!(true));
    spec.entry("preemptionPolicy").or_insert(json!("PreemptLowerPriority"));
    // DefaultTolerationSeconds admission.
    let tolerations = spec.entry("tolerations").or_insert(json!([]));
    if tolerations.is_null() {
        *tolerations = json!([]);
    }
    if let Some(list) = tolerations.as_array_mut() {
        for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
            if !tolerates_no_execute(list, key) {
                list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
    obj["status"] = json!({"phase": "Pending", "qosClass": qos});
}

/// Upstream's DefaultTolerationSeconds check: a toleration for `key` (or
/// for every key: empty key) whose effect is `NoExecute` or empty (every
/// effect) already tolerates the taint, so no default is added.
fn tolerates_no_execute(tolerations: &[Value], key: &str) -> bool {
    let empty = |v: Option<&Value>| v.and_then(Value::as_str).is_none_or(str::is_empty);
    tolerations.iter().any(|t| {
        let k = t.get("key");
        let key_matches = empty(k) || k.and_then(Value::as_str) == Some(key);
        let effect_matches = empty(t.get("effect")) || t.get("effect").and_then(Value::as_str) == Some("NoExecute");
        key_matches && effect_matches
    })
}

/// Upstream's QoS class of a pod spec.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|f| spec.get(*f).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        if requests.map(|r| !r.is_empty()).unwrap_or(false) || limits.map(|l| !l.is_empty()).unwrap_or(false) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(res));
            let request = requests.and_then(|r| r.get(res)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

pub fn set_condition(obj: &mut Value, ctype: &str, status: &str, reason: Option<&str>) {
    let now = meta::now_rfc3339();
    if !obj.get("status").map(Value::is_object).unwrap_or(false) {
        obj["status"] = json!({});
    }
    let conds = obj["status"].as_object_mut().expect("object").entry("conditions").or_insert(json!([]));
    let Some(list) = conds.as_array_mut() else { return };
    let mut cond = json!({"type": ctype, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(r) = reason {
        cond["reason"] = json!(r);
    }
    match list.iter_mut().find(|c| c.get("type") == Some(&json!(ctype))) {
        Some(existing) => *existing = cond,
        None => list.push(cond),
    }
}

/// Fields upstream forbids changing after creation.
fn check_immutable(rt: &ResourceType, old: &Value, new: &Value) -> Result<(), ApiError> {
    let name = meta::name(new);
    let immutable = |path: &str, field: &str| -> Result<(), ApiError> {
        let (o, n) = (old.pointer(path), new.pointer(path));
        if o.is_some() && o != n {
            return Err(ApiError::invalid(rt.group, rt.kind, name, vec![Cause::invalid(field, n.unwrap_or(&Value::Null), "field is immutable")]));
        }
        Ok(())
    };
    match (rt.group, rt.kind) {
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet") => immutable("/spec/selector", "spec.selector")?,
        ("batch", "Job") => {
            immutable("/spec/selector", "spec.selector")?;
            immutable("/spec/template", "spec.template")?;
            // Only Indexed Jobs may change completions (with parallelism).
            if new.pointer("/spec/completionMode").and_then(Value::as_str) != Some("Indexed") {
                immutable("/spec/completions", "spec.completions")?;
            }
        }
        // A status write (most pod writes) leaves the spec as it was:
        // nothing to compare field by field, nor to copy for it.
        ("", "Pod") if old.get("spec") == new.get("spec") => {}
        ("", "Pod") => {
            // Only images, activeDeadlineSeconds and added tolerations may change.
            let strip = |v: &Value| {
                let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
                for f in ["containers", "initContainers"] {
                    if let Some(list) = s.get_mut(f).and_then(Value::as_array_mut) {
                        for c in list {
                            if let Some(m) = c.as_object_mut() {
                                m.remove("image");
                            }
                        }
                    }
                }
                if let Some(m) = s.as_object_mut() {
                    m.remove("activeDeadlineSeconds");
                    m.remove("tolerations");
                    m.remove("nodeName");
                }
                s
            };
            if strip(old) != strip(new) {
                return Err(ApiError::invalid(rt.group, rt.kind, name, vec![Cause::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                )]));
            }
            let old_node = old.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
            let new_node = new.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
            if !old_node.is_empty() && old_node != new_node {
                return Err(ApiError::invalid(rt.group, rt.kind, name, vec![Cause::invalid("spec.nodeName", &json!(new_node), "field is immutable")]));
            }
        }
        ("", "ConfigMap" | "Secret") => {
            if old.get("immutable") == Some(&json!(true)) {
                for f in ["/data", "/binaryData"] {
                    immutable(f, &f[1..])?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The `autoscaling/v1` Scale of a scalable object.
pub fn scale_of(rt: &ResourceType, obj: &Value) -> Value {
    let selector = match obj.pointer("/spec/selector") {
        Some(sel) if rt.kind == "ReplicationController" => {
            let s = sel.as_object().map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")).unwrap_or_default();
            s
        }
        Some(sel) => LabelSelector::from_label_selector_json(sel).map(|s| s.to_string()).unwrap_or_default(),
        None => String::new(),
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj.pointer("/metadata/name"),
            "namespace": obj.pointer("/metadata/namespace"),
            "uid": obj.pointer("/metadata/uid"),
            "resourceVersion": obj.pointer("/metadata/resourceVersion"),
            "creationTimestamp": obj.pointer("/metadata/creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

/// The object with `spec.replicas` taken from a Scale.
fn apply_scale(rt: &ResourceType, old: &Value, scale: &Value) -> Result<Value, ApiError> {
    let replicas = scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid("autoscaling", "Scale", meta::name(old), vec![Cause::invalid("spec.replicas", &json!(replicas), "must be greater than or equal to 0")]));
    }
    let _ = rt;
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(replicas);
    Ok(new)
}

fn encode_continue(key: &str, rev: Revision) -> String {
    use base64::Engine;
    let token = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": key});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(String, Revision), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid: invalid continue token");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    let rev = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    Ok((start.to_string(), rev))
}

/// Label and field selectors of a LIST or WATCH.
pub struct Filter {
    kind: &'static str,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    pub fn from_query(rt: &ResourceType, q: &Query) -> Result<Filter, ApiError> {
        let labels = match q.get("labelSelector").filter(|s| !s.is_empty()) {
            Some(s) => Some(LabelSelector::parse(s).map_err(ApiError::bad_request)?),
            None => None,
        };
        let fields = match q.get("fieldSelector").filter(|s| !s.is_empty()) {
            Some(s) => {
                let f = FieldSelector::parse(s).map_err(ApiError::bad_request)?;
                f.check_supported(rt.kind).map_err(ApiError::bad_request)?;
                Some(f)
            }
            None => None,
        };
        Ok(Filter { kind: rt.kind, labels, fields })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(l) = &self.labels {
            if !l.matches(meta::labels(obj)) {
                return false;
            }
        }
        if let Some(f) = &self.fields {
            if !f.matches(|field| selectors::field_value(self.kind, obj, field)) {
                return false;
            }
        }
        true
    }

    /// [`matches`](Self::matches) on a cached entry, without parsing it.
    pub fn matches_entry(&self, e: &crate::cache::Entry) -> bool {
        if let Some(l) = &self.labels {
            if !l.matches(e.selectable.labels()) {
                return false;
            }
        }
        if let Some(f) = &self.fields {
            if !f.matches(|field| Some(e.selectable.field(field))) {
                return false;
            }
        }
        true
    }

    /// `spec.nodeName=X` when the field selector pins one node (the kubelet's query).
    pub fn node_name(&self) -> Option<String> {
        self.fields.as_ref()?.requires_exact_match("spec.nodeName").map(String::from)
    }
}

pub fn field_manager(q: &Query, headers: &HeaderMap) -> String {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    // Upstream derives the manager from the user agent's program name.
    headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored form is the object without its resourceVersion, member
    /// order kept, whether or not it had one.
    #[test]
    fn stored_form_drops_only_the_resource_version() {
        let pods = tug_api::resources::find("", "v1", "pods").unwrap();
        let with_rv = json!({"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7", "uid": "u"}, "spec": {"x": 1}});
        let without = json!({"kind": "Pod", "metadata": {"name": "p", "uid": "u"}, "spec": {"x": 1}});
        let want = br#"{"kind":"Pod","metadata":{"name":"p","uid":"u"},"spec":{"x":1}}"#;
        assert_eq!(encode_for_store(pods, &with_rv), want);
        assert_eq!(encode_for_store(pods, &without), want);
        let odd = json!({"kind": "Pod", "metadata": "text", "resourceVersion": "1"});
        assert_eq!(encode_for_store(pods, &odd), serde_json::to_vec(&odd).unwrap());
    }

    /// The no-op check ignores the resourceVersion and managedFields times,
    /// and nothing else.
    #[test]
    fn same_but_volatile_ignores_only_rv_and_field_times() {
        let old = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "resourceVersion": "5", "labels": {"a": "1"},
                "managedFields": [{"manager": "m", "operation": "Update", "time": "2026-01-01T00:00:00Z", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"nodeName": "n1"},
        });
        let mut same = old.clone();
        same["metadata"]["resourceVersion"] = json!("9");
        same["metadata"]["managedFields"][0]["time"] = json!("2026-02-02T00:00:00Z");
        assert!(same_but_volatile(&old, &same));
        let mut no_rv = old.clone();
        no_rv["metadata"].as_object_mut().unwrap().remove("resourceVersion");
        assert!(same_but_volatile(&old, &no_rv));
        for change in [
            |o: &mut Value| o["spec"]["nodeName"] = json!("n2"),
            |o: &mut Value| o["metadata"]["labels"]["b"] = json!("2"),
            |o: &mut Value| o["metadata"]["managedFields"][0]["manager"] = json!("other"),
            |o: &mut Value| o["metadata"]["managedFields"][0]["fieldsV1"] = json!({}),
            |o: &mut Value| o["metadata"]["managedFields"].as_array_mut().unwrap().push(json!({"manager": "x"})),
            |o: &mut Value| { o["metadata"]["managedFields"][0].as_object_mut().unwrap().remove("time"); o["metadata"]["managedFields"][0]["subresource"] = json!("status"); },
            |o: &mut Value| o["status"] = json!({}),
            |o: &mut Value| { o["metadata"].as_object_mut().unwrap().remove("resourceVersion"); o["metadata"]["uid"] = json!("u"); },
        ] {
            let mut changed = old.clone();
            change(&mut changed);
            assert!(!same_but_volatile(&old, &changed), "{changed}");
            assert!(!same_but_volatile(&changed, &old), "{changed}");
        }
    }

    /// A plain-JSON list copies its cached items' text: it must be the list
    /// of the items' values, byte for byte as serializing that encodes it,
    /// for cached, decoded and no items.
    #[test]
    fn list_json_is_the_serialized_list() {
        let pod = |name: &str| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "resourceVersion": "7", "labels": {"a": "b\"c"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running"}});
        let stored = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "s", "namespace": "n"}, "spec": {}})).unwrap();
        let from_store = crate::cache::Entry::from_stored("Pod", &stored, 9).expect("parses");
        let lists = [
            vec![],
            vec![ListItem::Cached(Arc::new(crate::cache::Entry::new("Pod", &pod("a"), 7)))],
            vec![
                ListItem::Decoded(Arc::new(pod("b"))),
                ListItem::Cached(Arc::new(from_store)),
                ListItem::Cached(Arc::new(crate::cache::Entry::new("Pod", &pod("c"), 7))),
                ListItem::Decoded(Arc::new(pod("d"))),
            ],
        ];
        for items in lists {
            let n = items.len();
            let values: Vec<Value> = items.iter().map(ListItem::to_value).collect();
            let list = ListBody { kind: "PodList".into(), api_version: "v1".into(), metadata: json!({"resourceVersion": "9", "continue": "x"}), items };
            let expected = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "9", "continue": "x"}, "items": values});
            assert_eq!(String::from_utf8(list.to_json()).unwrap(), serde_json::to_string(&expected).unwrap(), "{n} items");
        }
    }

    /// The cache filters its compact entries; they must select exactly what
    /// the objects themselves select.
    #[test]
    fn cached_entries_match_selectors_as_their_objects_do() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "prod", "labels": {"app": "web", "tier": "front"}},
            "spec": {"nodeName": "n1", "restartPolicy": "Always", "serviceAccount": "legacy", "hostNetwork": true},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.42.0.7"}], "podIP": "10.42.0.7"}});
        let unbound = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p2", "namespace": "prod"}, "spec": {}});
        let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "prod"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "prod"}, "reason": "Scheduled", "type": "Normal",
            "source": {"component": "default-scheduler"}});
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "labels": {}}, "type": "Opaque"});
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"unschedulable": true}});
        let cases: &[(&str, &str, &[&Value])] = &[
            ("", "pods", &[&pod, &unbound]),
            ("", "events", &[&event]),
            ("", "secrets", &[&secret]),
            ("", "nodes", &[&node]),
        ];
        let labels = ["", "app=web", "app!=web", "tier in (front,back)", "!app", "app", "tier notin (front)"];
        let fields = [
            "", "metadata.name=web-1", "metadata.namespace!=prod", "spec.nodeName=n1", "spec.nodeName=", "spec.nodeName!=",
            "status.phase=Running", "status.podIP=10.42.0.7", "spec.serviceAccountName=legacy", "spec.hostNetwork=true",
            "involvedObject.name=web-1", "reason=Scheduled", "source=default-scheduler", "type=Opaque", "spec.unschedulable=true",
        ];
        let mut compared = 0;
        for (group, plural, objects) in cases {
            let rt = tug_api::resources::find(group, "v1", plural).expect("served");
            for l in labels {
                for f in fields {
                    let q: Query = [("labelSelector".to_string(), l.to_string()), ("fieldSelector".to_string(), f.to_string())].into();
                    let Ok(filter) = Filter::from_query(rt, &q) else { continue };
                    for obj in *objects {
                        let entry = crate::cache::Entry::new(rt.kind, obj, 1);
                        assert_eq!(filter.matches(obj), filter.matches_entry(&entry), "{plural} {l:?} {f:?} on {obj}");
                        compared += 1;
                    }
                }
            }
        }
        assert!(compared > 100, "only {compared} comparisons: selectors rejected");
    }

    #[test]
    fn endpoint_slices_track_generation_on_any_change_but_metadata() {
        let rt = tug_api::resources::find("discovery.k8s.io", "v1", "endpointslices").expect("endpointslices are served");
        assert!(tracks_generation(rt));
        let old = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "s", "generation": 1, "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.42.0.5"]}], "ports": [{"port": 80}]});
        let changed = |f: &dyn Fn(&mut Value)| {
            let mut new = old.clone();
            f(&mut new);
            bumps_generation(rt, &old, &new)
        };
        assert!(!changed(&|_| {}));
        assert!(changed(&|o| o["endpoints"][0]["addresses"][0] = json!("10.42.0.6")));
        assert!(changed(&|o| o["ports"][0]["port"] = json!(81)));
        assert!(changed(&|o| o["metadata"]["labels"]["extra"] = json!("x")), "labels count for EndpointSlices");
        assert!(!changed(&|o| o["metadata"]["annotations"] = json!({"a": "b"})), "other metadata does not");
        let unlabeled = json!({"metadata": {"name": "s"}, "addressType": "IPv4"});
        let mut empty = unlabeled.clone();
        empty["metadata"]["labels"] = json!({});
        assert!(!bumps_generation(rt, &unlabeled, &empty), "no labels and empty labels are equal");
        // Other kinds: labels are metadata only.
        let deployments = tug_api::resources::find("apps", "v1", "deployments").expect("deployments are served");
        let mut relabeled = old.clone();
        relabeled["metadata"]["labels"]["extra"] = json!("x");
        assert!(!bumps_generation(deployments, &old, &relabeled));
    }

    #[test]
    fn default_toleration_seconds_unless_already_tolerated_for_no_execute() {
        let pods = tug_api::resources::find("", "v1", "pods").expect("pods are served");
        let admitted = |tolerations: Value| {
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "x"}], "tolerations": tolerations}});
            admit_create(pods, &mut pod);
            pod["spec"]["tolerations"].as_array().expect("tolerations").clone()
        };
        let defaulted = |list: &[Value], key: &str| {
            list.iter().filter(|t| t["key"] == key).any(|t| {
                t["tolerationSeconds"] == 300 && t["effect"] == "NoExecute" && t["operator"] == "Exists"
            })
        };
        let (nr, ur) = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable");

        // None, or absent: both defaults.
        for input in [json!([]), Value::Null] {
            let l = admitted(input);
            assert!(defaulted(&l, nr) && defaulted(&l, ur) && l.len() == 2, "{l:?}");
        }
        let mut bare = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}});
        admit_create(pods, &mut bare);
        assert_eq!(bare["spec"]["tolerations"].as_array().map(Vec::len), Some(2));

        // A NoSchedule toleration of not-ready does not tolerate NoExecute:
        // the default is added next to it.
        let l = admitted(json!([{"key": nr, "operator": "Exists", "effect": "NoSchedule"}]));
        assert_eq!(l.len(), 3, "{l:?}");
        assert!(defaulted(&l, nr) && defaulted(&l, ur));

        // NoExecute, or any effect (empty), for the key: kept as is, no default.
        let own = json!({"key": nr, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60});
        let l = admitted(json!([own.clone()]));
        assert_eq!(l, vec![own, l[1].clone()]);
        assert!(!defaulted(&l, nr) && defaulted(&l, ur), "{l:?}");
        let l = admitted(json!([{"key": ur, "operator": "Exists"}]));
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(defaulted(&l, nr) && !defaulted(&l, ur), "{l:?}");
        let l = admitted(json!([{"key": ur, "operator": "Exists", "effect": ""}]));
        assert!(defaulted(&l, nr) && !defaulted(&l, ur), "{l:?}");

        // Empty key with operator Exists tolerates every key: for NoExecute
        // or every effect it covers both; for NoSchedule only, neither.
        for t in [json!({"operator": "Exists"}), json!({"key": "", "operator": "Exists", "effect": "NoExecute"})] {
            assert_eq!(admitted(json!([t.clone()])), vec![t]);
        }
        let l = admitted(json!([{"operator": "Exists", "effect": "NoSchedule"}]));
        assert!(defaulted(&l, nr) && defaulted(&l, ur) && l.len() == 3, "{l:?}");

        // Other keys do not count.
        let l = admitted(json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoExecute"}]));
        assert!(defaulted(&l, nr) && defaulted(&l, ur) && l.len() == 3, "{l:?}");
    }
}
