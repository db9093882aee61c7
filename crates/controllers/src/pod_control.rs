//! What upstream's `pkg/controller/controller_utils.go` gives every
//! workload controller: creating pods from a template and deleting them
//! (with their events), expectations (so a burst of creates or deletes is
//! not repeated before the watch reports it), controller references, the
//! pod predicates (active, ready, available), the order in which a
//! controller deletes surplus pods, and an event recorder writing core/v1
//! Events as kube-controller-manager's does (`kubectl describe` reads them).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------
// Errors

/// The HTTP status of an API error.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

pub fn is_not_found(e: &kube::Error) -> bool {
    status_code(e) == Some(404)
}

pub fn is_conflict(e: &kube::Error) -> bool {
    status_code(e) == Some(409)
}

/// An error as upstream prints it in events and conditions: the API
/// server's message for API errors.
pub fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

/// Creates fail this way in a namespace being deleted; upstream ignores them.
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.details.as_ref().map(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")).unwrap_or(false)
                || s.message.contains("because it is being terminated")
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Controller references

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true))
}

/// A controller reference to `owner` (upstream's `metav1.NewControllerRef`).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// An object reference to `obj`, for events.
pub fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let m = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

/// Adopts `obj` (of resource `api`) for `owner`: a strategic merge patch
/// adding the controller reference, with the uid as a precondition, as
/// upstream's ControllerRefManager does.
pub async fn adopt<K, O>(api: &Api<K>, obj: &K, owner: &O) -> Result<K, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    O: Resource<DynamicType = ()>,
{
    let patch = json!({"metadata": {"ownerReferences": [controller_ref(owner)], "uid": obj.meta().uid}});
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Strategic(patch)).await
}

/// Releases `obj` from `owner`: removes the owner's reference.
pub async fn release<K>(api: &Api<K>, obj: &K, owner_uid: &str) -> Result<K, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}], "uid": obj.meta().uid}});
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Strategic(patch)).await
}

// ---------------------------------------------------------------------------
// Pod predicates

/// Neither finished nor being deleted (upstream's `IsPodActive`).
pub fn is_pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// The `Ready` condition's transition time if it is `True`.
pub fn pod_ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

pub fn is_pod_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` (upstream's `IsPodAvailable`).
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match pod_ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since + Duration::from_secs(min_ready_seconds as u64) < now,
    }
}

fn phase_ordinal(pod: &Pod) -> i32 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        // Upstream's map has no other phases; missing entries are 0.
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.annotations().get("controller.kubernetes.io/pod-deletion-cost").and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// (regular, sidecar) maximum container restarts.
fn max_restarts(pod: &Pod) -> (i32, i32) {
    let Some(status) = pod.status.as_ref() else { return (0, 0) };
    let regular = status.container_statuses.iter().flatten().map(|c| c.restart_count).max().unwrap_or(0);
    let sidecars: HashSet<&str> = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map(|ics| ics.iter().filter(|c| c.restart_policy.as_deref() == Some("Always")).map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let sidecar = status
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|c| sidecars.contains(c.name.as_str()))
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    (regular, sidecar)
}

fn creation(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Upstream's `afterOrZero`: a zero time sorts first, then newer first.
fn after_or_zero(a: Option<Timestamp>, b: Option<Timestamp>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => a.is_none(),
        (Some(a), Some(b)) => a > b,
    }
}

/// floor(log2(now - t in ns)), or -1 for t not in the past.
fn log_rank(t: Timestamp, now: Timestamp) -> i64 {
    let d = now.duration_since(t).as_nanos();
    if d > 0 { (d as f64).log2() as i64 } else { -1 }
}

/// Upstream's `ActivePodsWithRanks.Less` (with `LogarithmicScaleDown` and
/// `PodDeletionCost`, both on by default): `true` if `a` should be deleted
/// before `b`. `rank_*` counts the related active pods on the same node.
pub fn delete_before(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize, now: Timestamp) -> bool {
    let node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    let (na, nb) = (node(a), node(b));
    // 1. Unassigned < assigned.
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return na.is_empty();
    }
    // 2. Pending < Unknown < Running.
    if phase_ordinal(a) != phase_ordinal(b) {
        return phase_ordinal(a) < phase_ordinal(b);
    }
    // 3. Not ready < ready.
    let (ra, rb) = (is_pod_ready(a), is_pod_ready(b));
    if ra != rb {
        return !ra;
    }
    // 4. Lower deletion cost first.
    if deletion_cost(a) != deletion_cost(b) {
        return deletion_cost(a) < deletion_cost(b);
    }
    // 5. Doubled up < not doubled up.
    if rank_a != rank_b {
        return rank_a > rank_b;
    }
    let uid_less = || a.metadata.uid.as_deref().unwrap_or("") < b.metadata.uid.as_deref().unwrap_or("");
    // 6. Ready for a shorter time first (on a logarithmic scale).
    if ra && rb {
        let ta = pod_ready_since(a).flatten();
        let tb = pod_ready_since(b).flatten();
        if ta != tb {
            return match (ta, tb) {
                (Some(ta), Some(tb)) => {
                    let diff = log_rank(ta, now) - log_rank(tb, now);
                    if diff == 0 { uid_less() } else { diff < 0 }
                }
                _ => after_or_zero(ta, tb),
            };
        }
    }
    // 7. More restarts first.
    let (ma, mb) = (max_restarts(a), max_restarts(b));
    if ma.0 != mb.0 {
        return ma.0 > mb.0;
    }
    if ma.1 != mb.1 {
        return ma.1 > mb.1;
    }
    // 8. Newer first (on a logarithmic scale).
    let (ca, cb) = (creation(a), creation(b));
    if ca != cb {
        return match (ca, cb) {
            (Some(ca), Some(cb)) => {
                let diff = log_rank(ca, now) - log_rank(cb, now);
                if diff == 0 { uid_less() } else { diff < 0 }
            }
            _ => after_or_zero(ca, cb),
        };
    }
    false
}

/// The `diff` pods to delete first out of `pods` (upstream's
/// `getPodsToDelete`): ranked by [`delete_before`], where a pod's rank is
/// the number of active `related` pods on its node.
pub fn pods_to_delete(mut pods: Vec<Arc<Pod>>, related: &[Arc<Pod>], diff: usize) -> Vec<Arc<Pod>> {
    if diff < pods.len() {
        let mut on_node: HashMap<String, usize> = HashMap::new();
        for p in related.iter().filter(|p| is_pod_active(p)) {
            *on_node.entry(p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()).or_insert(0) += 1;
        }
        let rank = |p: &Pod| on_node.get(p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")).copied().unwrap_or(0);
        let now = Timestamp::now();
        pods.sort_by(|a, b| {
            if delete_before(a, rank(a), b, rank(b), now) {
                Ordering::Less
            } else if delete_before(b, rank(b), a, rank(a), now) {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        });
    }
    pods.truncate(diff);
    pods
}

// ---------------------------------------------------------------------------
// Expectations

/// How long expectations are trusted without being observed (upstream's
/// `ExpectationsTimeout`): a lost watch event costs at most this.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expectation {
    adds: i64,
    deletes: HashSet<String>,
    set_at: Instant,
}

/// Upstream's `UIDTrackingControllerExpectations`: per controller key, the
/// creations still to be seen by the watch (a count) and the deletions
/// (pod keys). A controller acts on its pods only when nothing is pending,
/// so a burst of creates is not repeated before the watch catches up.
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expectation>>,
}

impl Expectations {
    /// Whether `key`'s expectations are met (or expired, or never set).
    pub fn satisfied(&self, key: &str) -> bool {
        match self.inner.lock().expect("expectations lock").get(key) {
            None => true,
            Some(e) => (e.adds <= 0 && e.deletes.is_empty()) || e.set_at.elapsed() > EXPECTATIONS_TIMEOUT,
        }
    }

    pub fn expect_creations(&self, key: &str, n: usize) {
        self.inner
            .lock()
            .expect("expectations lock")
            .insert(key.to_string(), Expectation { adds: n as i64, deletes: HashSet::new(), set_at: Instant::now() });
    }

    pub fn expect_deletions(&self, key: &str, pod_keys: impl IntoIterator<Item = String>) {
        self.inner
            .lock()
            .expect("expectations lock")
            .insert(key.to_string(), Expectation { adds: 0, deletes: pod_keys.into_iter().collect(), set_at: Instant::now() });
    }

    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.inner.lock().expect("expectations lock").get_mut(key) {
            e.adds -= 1;
        }
    }

    pub fn deletion_observed(&self, key: &str, pod_key: &str) {
        if let Some(e) = self.inner.lock().expect("expectations lock").get_mut(key) {
            e.deletes.remove(pod_key);
        }
    }

    pub fn forget(&self, key: &str) {
        self.inner.lock().expect("expectations lock").remove(key);
    }
}

/// Upstream's `slowStartBatch`: calls `f` `count` times in batches of 1,
/// 2, 4, ... run concurrently, stopping after the first batch with a
/// failure. Returns the successes and the first error.
pub async fn slow_start_batch<E, F, Fut>(count: usize, initial: usize, f: F) -> (usize, Option<E>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut remaining = count;
    let mut successes = 0;
    let mut batch = remaining.min(initial.max(1));
    while batch > 0 {
        let results = futures::future::join_all((0..batch).map(|_| f())).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(()) => successes += 1,
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        if first_err.is_some() {
            return (successes, first_err);
        }
        remaining -= batch;
        batch = (2 * batch).min(remaining);
    }
    (successes, None)
}

// ---------------------------------------------------------------------------
// Events

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

struct PendingEvent {
    regarding: ObjectReference,
    type_: EventType,
    reason: String,
    message: String,
}

/// Records core/v1 Events from a component (`replicaset-controller`, ...),
/// as client-go's recorder does: in the background (never slowing a
/// reconcile), and an event identical to a recent one (same object, type,
/// reason and message) increments that one's `count` instead of creating
/// another.
#[derive(Clone)]
pub struct EventRecorder {
    tx: mpsc::UnboundedSender<PendingEvent>,
}

impl EventRecorder {
    /// Starts the writer task; it ends once every clone is dropped.
    pub fn new(client: Client, component: &'static str) -> EventRecorder {
        let (tx, mut rx) = mpsc::unbounded_channel::<PendingEvent>();
        tokio::spawn(async move {
            let mut seen: SeenEvents = HashMap::new();
            while let Some(ev) = rx.recv().await {
                seen.retain(|_, v| v.3.elapsed() < Duration::from_secs(600));
                write_event(&client, component, &mut seen, ev).await;
            }
        });
        EventRecorder { tx }
    }

    /// Records an event about `regarding`.
    pub fn event(&self, regarding: ObjectReference, type_: EventType, reason: &str, message: impl Into<String>) {
        let _ = self.tx.send(PendingEvent { regarding, type_, reason: reason.to_string(), message: message.into() });
    }
}

/// (object uid or name, type, reason, message) → (event namespace, event
/// name, count, last written).
type SeenEvents = HashMap<(String, EventType, String, String), (String, String, i32, Instant)>;

async fn write_event(client: &Client, component: &'static str, seen: &mut SeenEvents, ev: PendingEvent) {
    let ns = ev.regarding.namespace.clone().unwrap_or_else(|| "default".to_string());
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let who = ev.regarding.uid.clone().or_else(|| ev.regarding.name.clone()).unwrap_or_default();
    let key = (who, ev.type_, ev.reason.clone(), ev.message.clone());
    let now = Time(Timestamp::now());
    if let Some((ns, name, count, _)) = seen.get(&key).cloned() {
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"count": count + 1, "lastTimestamp": now});
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => {
                seen.insert(key, (ns, name, count + 1, Instant::now()));
                return;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::debug!(error = %e, event = %name, "could not update event");
                return;
            }
        }
    }
    let obj_name = ev.regarding.name.clone().unwrap_or_else(|| component.to_string());
    let name = format!("{obj_name}.{:x}", now.0.as_nanosecond());
    let event = Event {
        metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(ns.clone()), ..Default::default() },
        involved_object: ev.regarding,
        reason: Some(ev.reason),
        message: Some(ev.message),
        type_: Some(ev.type_.as_str().to_string()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        source: Some(EventSource { component: Some(component.to_string()), host: None }),
        reporting_component: Some(component.to_string()),
        reporting_instance: Some(String::new()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => {
            seen.insert(key, (ns, name, 1, Instant::now()));
        }
        Err(e) => tracing::debug!(error = %e, "could not record event"),
    }
}

// ---------------------------------------------------------------------------
// Pod control

/// Upstream's `RealPodControl`: creates pods from a controller's template
/// and deletes them, recording `SuccessfulCreate`/`FailedCreate`/
/// `SuccessfulDelete`/`FailedDelete` on the controller.
#[derive(Clone)]
pub struct PodControl {
    pub client: Client,
    pub recorder: EventRecorder,
}

/// The name prefix of a controller's pods: `<name>-` (upstream's
/// `getPodsPrefix`), unless that is not a valid pod name prefix.
pub fn pods_prefix(controller_name: &str) -> String {
    let prefix = format!("{controller_name}-");
    if prefix.len() <= 253 { prefix } else { controller_name.to_string() }
}

/// A pod from `template` for controller `owner_ref` (upstream's
/// `GetPodFromTemplate`): the template's labels, annotations, finalizers
/// and spec, `generateName` from the controller's name.
pub fn pod_from_template(template: &PodTemplateSpec, controller_name: &str, owner_ref: Option<OwnerReference>) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(pods_prefix(controller_name)),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: owner_ref.map(|r| vec![r]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

impl PodControl {
    pub fn new(client: Client, recorder: EventRecorder) -> Self {
        PodControl { client, recorder }
    }

    /// Creates one pod from `template` in `ns`, controlled by `owner`.
    pub async fn create_pod(&self, ns: &str, template: &PodTemplateSpec, owner: ObjectReference, owner_ref: OwnerReference) -> Result<Pod, kube::Error> {
        let pod = pod_from_template(template, owner.name.as_deref().unwrap_or_default(), Some(owner_ref));
        if pod.metadata.labels.as_ref().map(BTreeMap::is_empty).unwrap_or(true) {
            let status = kube::core::Status::failure("unable to create pods, no labels", "Invalid").with_code(422);
            return Err(kube::Error::Api(status.boxed()));
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        match api.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                tracing::debug!(namespace = ns, pod = %created.name_any(), controller = ?owner.name, "created pod");
                self.recorder.event(owner, EventType::Normal, "SuccessfulCreate", format!("Created pod: {}", created.name_any()));
                Ok(created)
            }
            Err(e) => {
                if !is_namespace_terminating(&e) {
                    self.recorder.event(owner, EventType::Warning, "FailedCreate", format!("Error creating: {}", error_message(&e)));
                }
                Err(e)
            }
        }
    }

    /// Deletes pod `name` in `ns` for controller `owner`.
    pub async fn delete_pod(&self, ns: &str, name: &str, owner: ObjectReference) -> Result<(), kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::debug!(namespace = ns, pod = name, controller = ?owner.name, "deleted pod");
                self.recorder.event(owner, EventType::Normal, "SuccessfulDelete", format!("Deleted pod: {name}"));
                Ok(())
            }
            Err(e) if is_not_found(&e) => Err(e),
            Err(e) => {
                self.recorder.event(owner, EventType::Warning, "FailedDelete", format!("Error deleting: {}", error_message(&e)));
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};

    fn pod(name: &str, node: &str, phase: &str, ready: Option<i64>, created_secs_ago: i64) -> Arc<Pod> {
        let now = Timestamp::now();
        let ago = |s: i64| Time(now - Duration::from_secs(s as u64));
        let conditions = ready.map(|r| vec![PodCondition { type_: "Ready".into(), status: "True".into(), last_transition_time: Some(ago(r)), ..Default::default() }]);
        Arc::new(Pod {
            metadata: ObjectMeta { name: Some(name.into()), uid: Some(name.into()), creation_timestamp: Some(ago(created_secs_ago)), ..Default::default() },
            spec: Some(PodSpec { node_name: (!node.is_empty()).then(|| node.to_string()), ..Default::default() }),
            status: Some(PodStatus { phase: Some(phase.into()), conditions, ..Default::default() }),
        })
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn deletes_unscheduled_then_pending_then_not_ready_then_newest() {
        let pods = vec![
            pod("ready-old", "n1", "Running", Some(5000), 6000),
            pod("ready-new", "n1", "Running", Some(2), 3),
            pod("not-ready", "n1", "Running", None, 7000),
            pod("pending", "n1", "Pending", None, 7000),
            pod("unscheduled", "", "Pending", None, 7000),
        ];
        let order = names(&pods_to_delete(pods.clone(), &[], 4));
        assert_eq!(order, ["unscheduled", "pending", "not-ready", "ready-new"]);
        assert_eq!(pods_to_delete(pods.clone(), &[], 5).len(), 5);
    }

    #[test]
    fn expectations_wait_for_observations() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 2);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        e.expect_deletions("ns/rs", ["ns/a".to_string(), "ns/b".to_string()]);
        e.deletion_observed("ns/rs", "ns/c");
        e.deletion_observed("ns/rs", "ns/a");
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "ns/b");
        assert!(e.satisfied("ns/rs"));
    }

    #[tokio::test]
    async fn slow_start_doubles_and_stops_at_the_first_failing_batch() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(10, 1, || {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { if n == 4 { Err("boom") } else { Ok(()) } }
        })
        .await;
        // Batches 1, 2, 4: the fifth call (in the third batch) fails.
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 7);
        assert_eq!(ok, 6);
        assert_eq!(err, Some("boom"));
    }
}
