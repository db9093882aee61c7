//! The DaemonSet controller (upstream's `pkg/controller/daemon`).
//!
//! - One pod per eligible node: the template's `nodeSelector` and required
//!   node affinity match the node, and its tolerations (plus upstream's
//!   default DaemonSet tolerations: `not-ready` and `unreachable`
//!   NoExecute, `disk-pressure`, `memory-pressure`, `pid-pressure`,
//!   `unschedulable` NoSchedule, and `network-unavailable` for host
//!   networking) tolerate its NoSchedule and NoExecute taints. A pod on a
//!   node it should leave is deleted, failed pods are replaced (with
//!   backoff), surplus pods on a node are pruned.
//! - Pods are not bound by the controller: each gets a required node
//!   affinity on `metadata.name` In [node] (matchFields), upstream's way,
//!   and the scheduler places it.
//! - ControllerRevisions hold each template (`<ds>-<hash>`); pods carry
//!   `controller-revision-hash` (and `pod-template-generation` when the
//!   DaemonSet has the generation annotation).
//! - Updates: RollingUpdate replaces old pods within `maxUnavailable`, or
//!   surges up to `maxSurge` new pods before removing old ones; OnDelete
//!   waits for pods to be deleted.
//! - Status (`desiredNumberScheduled`, `currentNumberScheduled`,
//!   `numberReady`, `numberAvailable`, `numberUnavailable`,
//!   `updatedNumberScheduled`, `numberMisscheduled`, `observedGeneration`)
//!   is what `kubectl rollout status ds/x` reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, PodTemplateSpec, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::task::JoinSet;

use crate::informer::{Change, IndexedStore, SharedInformers};
use crate::kit::pods::{available_at, creation};
use crate::kit::selector::{Selector, pod_spec_fits_node, selects_all, untolerated_taint};
use crate::kit::{self, Clock, Key};
use crate::pod_control::{
    EventRecorder, EventType, Expectations, PodControl, controller_of, controller_ref, is_conflict, is_not_found, is_pod_available, is_pod_ready,
    object_ref, slow_start_batch,
};
use crate::queue::{self, Backoff, Queue};
use crate::revision::{self, CONTROLLER_REVISION_HASH_LABEL};

/// The annotation with the template generation (older DaemonSets).
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";
/// The pod label with the template generation.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// Upstream's `BurstReplicas`: pods created or deleted per sync at most.
const BURST_REPLICAS: usize = 250;
/// Upstream's failed-pod backoff: 1s doubling up to 15 minutes.
const FAILED_POD_BACKOFF_BASE: Duration = Duration::from_secs(1);
const FAILED_POD_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

#[derive(Clone)]
pub struct Config {
    /// DaemonSets synced at once (upstream `--concurrent-daemonset-syncs`: 2).
    pub workers: usize,
    pub clock: Clock,
}

impl Default for Config {
    fn default() -> Self {
        Config { workers: 2, clock: kit::system_clock() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Api(&'static str, #[source] kube::Error),
    #[error("invalid selector: {0}")]
    Selector(String),
    #[error("{0}")]
    Other(String),
}

struct Controller {
    client: Client,
    config: Config,
    daemonsets: Store<DaemonSet>,
    pods: IndexedStore<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    queue: Queue<Key>,
    /// Keyed by `namespace/name`.
    expectations: Expectations,
    pod_control: PodControl,
    recorder: EventRecorder,
    /// Failed-pod replacement backoff per `<ds uid>/<generation>/<node>`:
    /// (current delay, last update).
    failed_backoff: Mutex<HashMap<String, (Duration, Instant)>>,
}

/// Runs the DaemonSet controller with the default [`Config`].
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with(client, Config::default()).await
}

/// Runs the DaemonSet controller until its informers stop.
pub async fn run_with(client: Client, config: Config) -> anyhow::Result<()> {
    run_shared(client.clone(), config, SharedInformers::new(client)).await
}

/// [`run_with`] on the process's shared informers.
pub async fn run_shared(client: Client, config: Config, informers: SharedInformers) -> anyhow::Result<()> {
    let (queue, workers) = queue::queue::<Key>(Backoff::CONTROLLER);
    let ds_inf = informers.get::<DaemonSet>();
    let pod_inf = informers.get::<Pod>();
    let node_inf = informers.get::<Node>();
    let rev_inf = informers.get::<ControllerRevision>();
    let recorder = EventRecorder::new(client.clone(), "daemonset-controller");
    let ctl = Arc::new(Controller {
        client: client.clone(),
        config,
        daemonsets: ds_inf.store(),
        pods: pod_inf.indexed(),
        nodes: node_inf.store(),
        revisions: rev_inf.store(),
        queue: queue.clone(),
        expectations: Expectations::default(),
        pod_control: PodControl::new(client, recorder.clone()),
        recorder,
        failed_backoff: Mutex::new(HashMap::new()),
    });
    let mut tasks = JoinSet::new();
    let c = ctl.clone();
    tasks.spawn(ds_inf.run("daemonsets", move |ch| c.on_daemonset(ch)));
    let c = ctl.clone();
    tasks.spawn(pod_inf.run("pods", move |ch| c.on_pod(ch)));
    let c = ctl.clone();
    tasks.spawn(node_inf.run("nodes", move |ch| c.on_node(ch)));
    tasks.spawn(rev_inf.run("controllerrevisions", |_| {}));
    let _ = tokio::join!(
        ctl.daemonsets.wait_until_ready(),
        ctl.pods.wait_until_ready(),
        ctl.nodes.wait_until_ready(),
        ctl.revisions.wait_until_ready()
    );
    tracing::info!("daemonset controller synced");
    ctl.enqueue_all();
    let n = ctl.config.workers;
    let c = ctl.clone();
    tasks.spawn(kit::run_workers("daemonset", queue, workers, n, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    }));
    let _ = tasks.join_next().await;
    anyhow::bail!("daemonset controller stopped")
}

/// Upstream's `GetScaledValueFromIntOrPercent`.
pub fn scaled_value(v: Option<&IntOrString>, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        None => Ok(0),
        Some(IntOrString::Int(i)) => Ok(*i),
        Some(IntOrString::String(s)) => {
            let p: f64 = s.strip_suffix('%').and_then(|p| p.parse().ok()).ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let x = p * total as f64 / 100.0;
            Ok(if round_up { x.ceil() } else { x.floor() } as i32)
        }
    }
}

fn spec(ds: &DaemonSet) -> k8s_openapi::api::apps::v1::DaemonSetSpec {
    ds.spec.clone().unwrap_or_default()
}

fn is_rolling_update(ds: &DaemonSet) -> bool {
    ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate"
}

fn min_ready_seconds(ds: &DaemonSet) -> i32 {
    ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

/// Upstream's `GetTemplateGeneration`: the generation annotation, if any.
fn template_generation(ds: &DaemonSet) -> Option<i64> {
    ds.annotations().get(TEMPLATE_GENERATION_ANNOTATION).and_then(|v| v.parse().ok())
}

/// Upstream's `AddOrUpdateDaemonPodTolerations`.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let t = Toleration { key: Some(key.into()), operator: Some("Exists".into()), effect: Some(effect.into()), value: None, toleration_seconds: None };
        // Upstream's AddOrUpdateTolerationInPodSpec: same key, operator,
        // value and effect is replaced, else appended.
        let same = |x: &Toleration| {
            x.key.as_deref().unwrap_or("") == key
                && x.operator.as_deref().unwrap_or("Equal") == "Exists"
                && x.value.as_deref().unwrap_or("").is_empty()
                && x.effect.as_deref().unwrap_or("") == effect
        };
        match tolerations.iter_mut().find(|x| same(x)) {
            Some(existing) => *existing = t,
            None => tolerations.push(t),
        }
    }
}

/// The pod a DaemonSet would run on `node` (upstream's `NewPod`), for the
/// scheduling predicates.
fn new_pod_spec(ds: &DaemonSet, node: &str) -> PodSpec {
    let mut s = spec(ds).template.spec.unwrap_or_default();
    s.node_name = Some(node.to_string());
    add_daemon_tolerations(&mut s);
    s
}

/// Upstream's `NodeShouldRunDaemonPod`: (should run, should continue running).
pub fn node_should_run(node: &Node, ds: &DaemonSet) -> (bool, bool) {
    let name = node.metadata.name.clone().unwrap_or_default();
    let pod_spec = new_pod_spec(ds, &name);
    if let Some(n) = spec(ds).template.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty())
        && n != name {
            return (false, false);
        }
    if !pod_spec_fits_node(&pod_spec, node) {
        return (false, false);
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let tolerations = pod_spec.tolerations.clone().unwrap_or_default();
    if untolerated_taint(&taints, &tolerations, |t| t.effect == "NoSchedule" || t.effect == "NoExecute").is_some() {
        // Scheduled pods stay if they tolerate the NoExecute taints.
        let untolerated_no_execute = untolerated_taint(&taints, &tolerations, |t| t.effect == "NoExecute").is_some();
        return (false, !untolerated_no_execute);
    }
    (true, true)
}

/// Upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`: the required node
/// affinity becomes exactly `metadata.name In [node]`.
pub fn replace_node_name_affinity(affinity: Option<Affinity>, node: &str) -> Affinity {
    let req = NodeSelectorRequirement { key: "metadata.name".into(), operator: "In".into(), values: Some(vec![node.to_string()]) };
    let term = NodeSelectorTerm { match_fields: Some(vec![req]), match_expressions: None };
    let mut a = affinity.unwrap_or_default();
    let na = a.node_affinity.get_or_insert_with(NodeAffinity::default);
    match na.required_during_scheduling_ignored_during_execution.as_mut() {
        Some(ns) => ns.node_selector_terms = vec![term],
        None => na.required_during_scheduling_ignored_during_execution = Some(NodeSelector { node_selector_terms: vec![term] }),
    }
    a
}

/// Upstream's `GetTargetNodeName`: the pod's node, or the one its node
/// affinity names.
pub fn target_node(pod: &Pod) -> Option<String> {
    let s = pod.spec.as_ref()?;
    if let Some(n) = s.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &s.affinity.as_ref()?.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()?.node_selector_terms;
    for t in terms {
        for f in t.match_fields.iter().flatten() {
            if f.key == "metadata.name" && f.operator == "In"
                && let Some([v]) = f.values.as_deref() {
                    return Some(v.clone());
                }
        }
    }
    None
}

/// Upstream's `IsPodUpdated`: the revision hash or template generation matches.
fn is_pod_updated(pod: &Pod, hash: &str, generation: Option<i64>) -> bool {
    let labels = pod.labels();
    let gen_matches = generation.map(|g| labels.get(TEMPLATE_GENERATION_LABEL) == Some(&g.to_string())).unwrap_or(false);
    let hash_matches = !hash.is_empty() && labels.get(CONTROLLER_REVISION_HASH_LABEL).map(String::as_str) == Some(hash);
    hash_matches || gen_matches
}

/// Upstream's `podByCreationTimestampAndPhase`: scheduled first, then older.
fn by_creation_and_phase(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    let scheduled = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).map(|n| !n.is_empty()).unwrap_or(false);
    scheduled(b).cmp(&scheduled(a)).then_with(|| creation(a).cmp(&creation(b))).then_with(|| a.name_any().cmp(&b.name_any()))
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn pod_key(p: &Pod) -> String {
    Key::of(p).to_string()
}

impl Controller {
    fn now(&self) -> Timestamp {
        (self.config.clock)()
    }

    fn event(&self, ds: &DaemonSet, t: EventType, reason: &str, msg: impl Into<String>) {
        self.recorder.event(object_ref(ds), t, reason, msg);
    }

    fn enqueue_all(&self) {
        for ds in self.daemonsets.state() {
            self.queue.add(Key::of(&*ds));
        }
    }

    fn on_daemonset(&self, change: Change<DaemonSet>) {
        match change {
            Change::Added(ds) | Change::Updated(_, ds) => self.queue.add(Key::of(&*ds)),
            Change::Deleted(ds) => {
                self.expectations.forget(&Key::of(&*ds).to_string());
                self.queue.add(Key::of(&*ds));
            }
        }
    }

    fn ds_for(&self, pod: &Pod) -> Option<Arc<DaemonSet>> {
        let r = controller_of(&pod.metadata)?;
        if r.kind != "DaemonSet" || r.api_version != "apps/v1" {
            return None;
        }
        let ds = self.daemonsets.get(&Key::new(pod.namespace().unwrap_or_default(), &r.name).obj_ref())?;
        (ds.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(ds)
    }

    fn matching_daemonsets(&self, pod: &Pod) -> Vec<Arc<DaemonSet>> {
        let ns = pod.namespace();
        self.daemonsets
            .state()
            .into_iter()
            .filter(|d| d.namespace() == ns)
            .filter(|d| Selector::parse(d.spec.as_ref().map(|s| &s.selector)).map(|s| s.matches(pod.metadata.labels.as_ref())).unwrap_or(false))
            .collect()
    }

    fn on_pod(&self, change: Change<Pod>) {
        match change {
            Change::Added(pod) => {
                if pod.metadata.deletion_timestamp.is_some() {
                    return self.pod_deleted(&pod);
                }
                match self.ds_for(&pod) {
                    Some(ds) => {
                        let key = Key::of(&*ds);
                        self.expectations.creation_observed(&key.to_string());
                        self.queue.add(key);
                    }
                    None if controller_of(&pod.metadata).is_none() => {
                        for ds in self.matching_daemonsets(&pod) {
                            self.queue.add(Key::of(&*ds));
                        }
                    }
                    None => {}
                }
            }
            Change::Updated(old, new) => {
                if new.metadata.deletion_timestamp.is_some() {
                    return self.pod_deleted(&new);
                }
                let (o, n) = (controller_of(&old.metadata).map(|r| r.uid.clone()), controller_of(&new.metadata).map(|r| r.uid.clone()));
                if o != n
                    && let Some(ds) = self.ds_for(&old) {
                        self.queue.add(Key::of(&*ds));
                    }
                match self.ds_for(&new) {
                    Some(ds) => self.queue.add(Key::of(&*ds)),
                    None if n.is_none() && (old.metadata.labels != new.metadata.labels || o != n) => {
                        for ds in self.matching_daemonsets(&new) {
                            self.queue.add(Key::of(&*ds));
                        }
                    }
                    None => {}
                }
            }
            Change::Deleted(pod) => self.pod_deleted(&pod),
        }
    }

    fn pod_deleted(&self, pod: &Pod) {
        if let Some(ds) = self.ds_for(pod) {
            let key = Key::of(&*ds);
            self.expectations.deletion_observed(&key.to_string(), &pod_key(pod));
            self.queue.add(key);
        }
    }

    fn on_node(&self, change: Change<Node>) {
        match change {
            Change::Added(_) | Change::Deleted(_) => self.enqueue_all(),
            Change::Updated(old, new) => {
                // Upstream's shouldIgnoreNodeUpdate: only labels, taints and
                // schedulability change which nodes run daemon pods.
                let taints = |n: &Node| n.spec.as_ref().and_then(|s| s.taints.clone());
                let unsched = |n: &Node| n.spec.as_ref().and_then(|s| s.unschedulable);
                if old.metadata.labels != new.metadata.labels || taints(&old) != taints(&new) || unsched(&old) != unsched(&new) {
                    self.enqueue_all();
                }
            }
        }
    }

    /// The DaemonSet's pods (claimed: adopted or released as the selector
    /// says), grouped by the node they run on or are meant for.
    async fn node_to_daemon_pods(&self, ds: &DaemonSet) -> Result<BTreeMap<String, Vec<Arc<Pod>>>, Error> {
        let selector = Selector::parse(ds.spec.as_ref().map(|s| &s.selector)).map_err(Error::Selector)?;
        let ns = ds.namespace();
        let candidates: Vec<Arc<Pod>> = self.pods.in_namespace(ns.as_deref().unwrap_or_default());
        let pods = kit::claim::claim(&self.client, ds, &selector, candidates, |_| true, None).await.map_err(|e| Error::Api("claiming pods", e))?;
        let mut map: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in pods {
            // Terminal pods being deleted are the kubelet's or pod GC's business.
            if matches!(phase(&p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Some(n) = target_node(&p) {
                map.entry(n).or_default().push(p);
            }
        }
        Ok(map)
    }

    fn nodes(&self) -> Vec<Arc<Node>> {
        let mut n = self.nodes.state();
        n.sort_by_key(|n| n.name_any());
        n
    }

    async fn sync(&self, key: &Key) -> Result<Option<Duration>, Error> {
        let Some(ds) = self.daemonsets.get(&key.obj_ref()) else {
            self.expectations.forget(&key.to_string());
            return Ok(None);
        };
        let ds: DaemonSet = (*ds).clone();
        if selects_all(ds.spec.as_ref().map(|s| &s.selector)) {
            self.event(&ds, EventType::Warning, "SelectingAll", "This daemon set is selecting all pods. A non-empty selector is required.");
            return Ok(None);
        }
        // Being deleted: its revisions may be going; do nothing.
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let (cur, old) = self.construct_history(&ds).await?;
        let hash = revision::hash_label(&cur).unwrap_or_default().to_string();
        let nodes = self.nodes();
        let mut requeue: Option<Duration> = None;
        if !self.expectations.satisfied(&key.to_string()) {
            // Only the status; the generation is not observed yet.
            self.update_status(&ds, &nodes, &hash, false, &mut requeue).await?;
            return Ok(requeue);
        }
        let manage = self.manage(&ds, &nodes, &hash, &mut requeue).await;
        let mut result = manage;
        if result.is_ok() && self.expectations.satisfied(&key.to_string()) && is_rolling_update(&ds) {
            result = self.rolling_update(&ds, &nodes, &hash, &mut requeue).await;
        }
        if result.is_ok() {
            result = self.cleanup_history(&ds, &old).await;
        }
        let status = self.update_status(&ds, &nodes, &hash, true, &mut requeue).await;
        result?;
        status?;
        Ok(requeue)
    }

    /// Upstream's `constructHistory`: the current revision (created if
    /// missing, renumbered if older than the others) and the old ones.
    async fn construct_history(&self, ds: &DaemonSet) -> Result<(ControllerRevision, Vec<Arc<ControllerRevision>>), Error> {
        let ns = ds.namespace().unwrap_or_default();
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &ns);
        let selector = Selector::parse(ds.spec.as_ref().map(|s| &s.selector)).map_err(Error::Selector)?;
        let candidates: Vec<Arc<ControllerRevision>> = self.revisions.state().into_iter().filter(|r| r.namespace().as_deref() == Some(ns.as_str())).collect();
        let histories = kit::claim::claim(&self.client, ds, &selector, candidates, |_| true, None).await.map_err(|e| Error::Api("claiming revisions", e))?;
        let wanted = revision::template_patch(&spec(ds).template);
        let mut current: Vec<Arc<ControllerRevision>> = Vec::new();
        let mut old: Vec<Arc<ControllerRevision>> = Vec::new();
        for mut h in histories {
            if revision::hash_label(&h).is_none() {
                // Label old revisions with their name (upstream does too).
                let mut upd = (*h).clone();
                let name = upd.name_any();
                upd.metadata.labels.get_or_insert_with(BTreeMap::new).insert(CONTROLLER_REVISION_HASH_LABEL.into(), name);
                upd.metadata.managed_fields = None;
                h = Arc::new(api.replace(&upd.name_any(), &PostParams::default(), &upd).await.map_err(|e| Error::Api("labelling revision", e))?);
            }
            if revision::canonical(&revision::data(&h)) == wanted {
                current.push(h);
            } else {
                old.push(h);
            }
        }
        let next = revision::max_revision(&old) + 1;
        let cur = if current.is_empty() {
            self.snapshot(ds, &api, next).await?
        } else {
            // Keep the newest duplicate; move pods off the others.
            current.sort_by(|a, b| revision::by_revision(a, b));
            let keep = current.pop().expect("not empty");
            for dup in current {
                self.dedup(ds, &keep, &dup, &api).await?;
            }
            if keep.revision < next {
                revision::update_revision_number(&api, &keep, next).await.map_err(|e| Error::Api("renumbering revision", e))?
            } else {
                (*keep).clone()
            }
        };
        Ok((cur, old))
    }

    /// Relabels the pods of a duplicate revision to `keep`'s hash and
    /// deletes the duplicate (upstream's `dedupCurHistories`).
    async fn dedup(&self, ds: &DaemonSet, keep: &ControllerRevision, dup: &ControllerRevision, api: &Api<ControllerRevision>) -> Result<(), Error> {
        let keep_hash = revision::hash_label(keep).unwrap_or_default().to_string();
        let dup_hash = revision::hash_label(dup).unwrap_or_default().to_string();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ds.namespace().unwrap_or_default());
        for p in self.pods.in_namespace(ds.metadata.namespace.as_deref().unwrap_or_default()) {
            if p.labels().get(CONTROLLER_REVISION_HASH_LABEL) == Some(&dup_hash) {
                let patch = serde_json::json!({"metadata": {"labels": {CONTROLLER_REVISION_HASH_LABEL: keep_hash}}});
                pods.patch(&p.name_any(), &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
                    .await
                    .map_err(|e| Error::Api("relabelling pod", e))?;
            }
        }
        match api.delete(&dup.name_any(), &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::Api("deleting duplicate revision", e)),
        }
    }

    /// Upstream's `snapshot`: a new revision `<ds>-<hash>` of the template;
    /// a name taken by a different template bumps `status.collisionCount`.
    async fn snapshot(&self, ds: &DaemonSet, api: &Api<ControllerRevision>, number: i64) -> Result<ControllerRevision, Error> {
        let collision = ds.status.as_ref().and_then(|s| s.collision_count);
        let s = spec(ds);
        let hash = revision::compute_hash(&s.template, collision);
        let name = revision::revision_name(&ds.name_any(), &hash);
        let mut labels = s.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.clone());
        let rev = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: ds.namespace(),
                labels: Some(labels),
                annotations: ds.metadata.annotations.clone(),
                owner_references: Some(vec![controller_ref(ds)]),
                ..Default::default()
            },
            data: revision::raw(revision::template_patch(&s.template)),
            revision: number,
        };
        match api.create(&PostParams::default(), &rev).await {
            Ok(r) => Ok(r),
            Err(e) if revision::is_already_exists(&e) => {
                let existing = api.get(&name).await.map_err(|e| Error::Api("reading revision", e))?;
                if revision::equal_data(&existing, &rev) {
                    return Ok(existing);
                }
                // A hash collision: bump the count (on a fresh DaemonSet).
                let dss: Api<DaemonSet> = Api::namespaced(self.client.clone(), &ds.namespace().unwrap_or_default());
                let mut fresh = dss.get_status(&ds.name_any()).await.map_err(|e| Error::Api("reading daemonset", e))?;
                let fresh_count = fresh.status.as_ref().and_then(|s| s.collision_count);
                if fresh_count != collision {
                    return Err(Error::Other(format!("found a stale collision count ({collision:?}, expected {fresh_count:?}) of DaemonSet {:?}; will retry", ds.name_any())));
                }
                let st = fresh.status.get_or_insert_with(Default::default);
                st.collision_count = Some(collision.unwrap_or(0) + 1);
                fresh.metadata.managed_fields = None;
                dss.replace_status(&ds.name_any(), &PostParams::default(), &fresh).await.map_err(|e| Error::Api("bumping collision count", e))?;
                Err(Error::Other(format!("hash collision for DaemonSet {:?}: bumped collisionCount", ds.name_any())))
            }
            Err(e) => Err(Error::Api("creating revision", e)),
        }
    }

    /// Upstream's `manage`: which nodes need a pod, which pods must go.
    async fn manage(&self, ds: &DaemonSet, nodes: &[Arc<Node>], hash: &str, requeue: &mut Option<Duration>) -> Result<(), Error> {
        let node_pods = self.node_to_daemon_pods(ds).await?;
        let mut need: Vec<String> = Vec::new();
        let mut delete: Vec<Arc<Pod>> = Vec::new();
        for node in nodes {
            let (n, d) = self.pods_should_be_on_node(node, &node_pods, ds, hash, requeue);
            need.extend(n);
            delete.extend(d);
        }
        // Unscheduled pods meant for nodes that do not exist any more.
        for (node, pods) in &node_pods {
            if nodes.iter().any(|n| &n.name_any() == node) {
                continue;
            }
            for p in pods {
                let unscheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).map(|n| n.is_empty()).unwrap_or(true);
                if unscheduled && p.metadata.deletion_timestamp.is_none() {
                    delete.push(p.clone());
                }
            }
        }
        self.sync_nodes(ds, delete, need, hash).await
    }

    /// Upstream's `podsShouldBeOnNode`: (nodes needing a pod, pods to delete).
    fn pods_should_be_on_node(
        &self,
        node: &Node,
        node_pods: &BTreeMap<String, Vec<Arc<Pod>>>,
        ds: &DaemonSet,
        hash: &str,
        requeue: &mut Option<Duration>,
    ) -> (Vec<String>, Vec<Arc<Pod>>) {
        let name = node.name_any();
        let (should_run, should_continue) = node_should_run(node, ds);
        let pods = node_pods.get(&name);
        let mut need = Vec::new();
        let mut delete = Vec::new();
        let allows_surge = self.max_surge_configured(ds);
        match pods {
            None if should_run => need.push(name.clone()),
            Some(pods) if should_continue => {
                let mut running: Vec<Arc<Pod>> = Vec::new();
                for p in pods {
                    if p.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    match phase(p) {
                        "Failed" => {
                            // Fighting a kubelet that rejects pods: back off.
                            let bkey = format!("{}/{}/{}", ds.uid().unwrap_or_default(), ds.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0), name);
                            let mut b = self.failed_backoff.lock().expect("lock");
                            if let Some((delay, at)) = b.get(&bkey).copied()
                                && at.elapsed() < delay {
                                    let left = delay - at.elapsed();
                                    *requeue = Some(requeue.map_or(left, |r| r.min(left)));
                                    continue;
                                }
                            let next = match b.get(&bkey) {
                                Some((d, at)) if at.elapsed() < FAILED_POD_BACKOFF_MAX * 2 => (*d * 2).min(FAILED_POD_BACKOFF_MAX),
                                _ => FAILED_POD_BACKOFF_BASE,
                            };
                            b.insert(bkey, (next, Instant::now()));
                            drop(b);
                            self.event(
                                ds,
                                EventType::Warning,
                                "FailedDaemonPod",
                                format!("Found failed daemon pod {}/{} on node {name}, will try to kill it", p.namespace().unwrap_or_default(), p.name_any()),
                            );
                            delete.push(p.clone());
                        }
                        "Succeeded" => {
                            self.event(
                                ds,
                                EventType::Normal,
                                "SucceededDaemonPod",
                                format!("Found succeeded daemon pod {}/{} on node {name}, will try to delete it", p.namespace().unwrap_or_default(), p.name_any()),
                            );
                            delete.push(p.clone());
                        }
                        _ => running.push(p.clone()),
                    }
                }
                running.sort_by(|a, b| by_creation_and_phase(a, b));
                if !allows_surge {
                    // More than one: all but the oldest go.
                    delete.extend(running.iter().skip(1).cloned());
                } else if running.len() <= 1 {
                    if running.is_empty() && should_run {
                        need.push(name.clone());
                    }
                } else {
                    // Surging: keep the oldest new pod and, while it is not
                    // available, the oldest old one.
                    let generation = template_generation(ds);
                    let (mut oldest_new, mut oldest_old): (Option<Arc<Pod>>, Option<Arc<Pod>>) = (None, None);
                    for p in &running {
                        if is_pod_updated(p, hash, generation) {
                            if oldest_new.is_none() {
                                oldest_new = Some(p.clone());
                                continue;
                            }
                        } else if oldest_old.is_none() {
                            oldest_old = Some(p.clone());
                            continue;
                        }
                        delete.push(p.clone());
                    }
                    if let (Some(new), Some(old)) = (oldest_new, oldest_old)
                        && (!is_pod_ready(&old) || is_pod_available(&new, min_ready_seconds(ds), self.now())) {
                            delete.push(old);
                        }
                }
            }
            Some(pods) if !should_continue => {
                delete.extend(pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).cloned());
            }
            _ => {}
        }
        (need, delete)
    }

    fn max_surge_configured(&self, ds: &DaemonSet) -> bool {
        if !is_rolling_update(ds) {
            return false;
        }
        let ru = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.rolling_update.as_ref());
        // Upstream's AllowsSurge: a non-zero maxSurge (of any total).
        scaled_value(ru.and_then(|r| r.max_surge.as_ref()), 1, true).map(|v| v != 0).unwrap_or(false)
    }

    /// Upstream's `syncNodes`: deletes, then creates pods for nodes (at most
    /// `BURST_REPLICAS` of each per sync, creations in slow-start batches).
    async fn sync_nodes(&self, ds: &DaemonSet, mut delete: Vec<Arc<Pod>>, mut need: Vec<String>, hash: &str) -> Result<(), Error> {
        let key = Key::of(ds).to_string();
        let ns = ds.namespace().unwrap_or_default();
        delete.truncate(BURST_REPLICAS);
        need.truncate(BURST_REPLICAS);
        let mut first_err: Option<Error> = None;
        if !delete.is_empty() {
            self.expectations.expect_deletions(&key, delete.iter().map(|p| pod_key(p)));
            let results = futures::future::join_all(delete.iter().map(|p| {
                let ns = ns.clone();
                async move { (p, self.pod_control.delete_pod(&ns, &p.name_any(), object_ref(ds)).await) }
            }))
            .await;
            for (p, r) in results {
                if let Err(e) = r {
                    self.expectations.deletion_observed(&key, &pod_key(p));
                    if !is_not_found(&e) {
                        first_err.get_or_insert(Error::Api("deleting pod", e));
                    }
                }
            }
        }
        if need.is_empty() {
            return first_err.map_or(Ok(()), Err);
        }
        tracing::debug!(daemonset = %key, nodes = ?need, "creating daemon pods");
        self.expectations.expect_creations(&key, need.len());
        let template = self.pod_template(ds, hash);
        let next = AtomicUsize::new(0);
        let cref = controller_ref(ds);
        let (_, err) = slow_start_batch(need.len(), 1, || {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let mut t = template.clone();
            if let Some(s) = t.spec.as_mut() {
                s.affinity = Some(replace_node_name_affinity(s.affinity.take(), &need[i]));
            }
            let ns = ns.clone();
            let cref = cref.clone();
            let key = &key;
            async move {
                match self.pod_control.create_pod(&ns, &t, object_ref(ds), cref).await {
                    Ok(_) => Ok(()),
                    Err(e) if crate::pod_control::is_namespace_terminating(&e) => {
                        self.expectations.creation_observed(key);
                        Ok(())
                    }
                    Err(e) => {
                        self.expectations.creation_observed(key);
                        Err(e)
                    }
                }
            }
        })
        .await;
        // Creations never attempted will not be observed.
        for _ in next.load(Ordering::SeqCst).min(need.len())..need.len() {
            self.expectations.creation_observed(&key);
        }
        if let Some(e) = err {
            first_err.get_or_insert(Error::Api("creating pod", e));
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Upstream's `CreatePodTemplate`: default tolerations, the template
    /// generation and revision hash labels.
    fn pod_template(&self, ds: &DaemonSet, hash: &str) -> PodTemplateSpec {
        let mut t = spec(ds).template;
        if let Some(s) = t.spec.as_mut() {
            add_daemon_tolerations(s);
        }
        let labels = t.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(BTreeMap::new);
        if let Some(g) = template_generation(ds) {
            labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.to_string());
        }
        if !hash.is_empty() {
            labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.to_string());
        }
        t
    }

    /// Upstream's `updatedDesiredNodeCounts`: (maxSurge, maxUnavailable,
    /// desired), with nodes that should run a pod but have none added to
    /// `node_pods` (empty).
    fn desired_counts(&self, ds: &DaemonSet, nodes: &[Arc<Node>], node_pods: &mut BTreeMap<String, Vec<Arc<Pod>>>) -> (i32, i32, i32) {
        let mut desired = 0;
        for n in nodes {
            if node_should_run(n, ds).0 {
                desired += 1;
                node_pods.entry(n.name_any()).or_default();
            }
        }
        let ru = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.rolling_update.as_ref());
        let (mut unavailable, surge) = if is_rolling_update(ds) {
            (
                scaled_value(ru.and_then(|r| r.max_unavailable.as_ref()), desired, true).unwrap_or(1),
                scaled_value(ru.and_then(|r| r.max_surge.as_ref()), desired, true).unwrap_or(0),
            )
        } else {
            (0, 0)
        };
        if desired > 0 && unavailable == 0 && surge == 0 {
            unavailable = 1;
        }
        (surge, unavailable, desired)
    }

    /// Upstream's `rollingUpdate`.
    async fn rolling_update(&self, ds: &DaemonSet, nodes: &[Arc<Node>], hash: &str, requeue: &mut Option<Duration>) -> Result<(), Error> {
        let mut node_pods = self.node_to_daemon_pods(ds).await?;
        let (max_surge, max_unavailable, desired) = self.desired_counts(ds, nodes, &mut node_pods);
        let now = self.now();
        let mrs = min_ready_seconds(ds);
        let generation = template_generation(ds);
        let available = |p: &Pod| is_pod_available(p, mrs, now);
        // At most one new and one old live pod per node, else the manage
        // loop prunes first.
        let find = |pods: &[Arc<Pod>]| -> Option<NewAndOld> {
            let (mut new, mut old) = (None, None);
            for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
                if is_pod_updated(p, hash, generation) {
                    if new.is_some() {
                        return None;
                    }
                    new = Some(p.clone());
                } else {
                    if old.is_some() {
                        return None;
                    }
                    old = Some(p.clone());
                }
            }
            Some((new, old))
        };
        for pods in node_pods.values() {
            for p in pods {
                if !available(p) && mrs > 0
                    && let Some(at) = available_at(p, mrs) {
                        let d = kit::until(now, at) + Duration::from_millis(100);
                        *requeue = Some(requeue.map_or(d, |r| r.min(d)));
                    }
            }
        }
        if max_surge == 0 {
            let mut num_unavailable = 0;
            let mut allowed: Vec<Arc<Pod>> = Vec::new();
            let mut candidates: Vec<Arc<Pod>> = Vec::new();
            for (node, pods) in &node_pods {
                let Some((new, old)) = find(pods) else {
                    tracing::debug!(daemonset = %ds.name_any(), node = %node, "excess pods on node; the manage loop prunes them first");
                    num_unavailable += 1;
                    continue;
                };
                match (new, old) {
                    (None, None) | (Some(_), Some(_)) => num_unavailable += 1,
                    (Some(new), None) => {
                        if !available(&new) {
                            num_unavailable += 1;
                        }
                    }
                    (None, Some(old)) => {
                        if !available(&old) {
                            allowed.push(old);
                            num_unavailable += 1;
                        } else if num_unavailable < max_unavailable {
                            candidates.push(old);
                        }
                    }
                }
            }
            let remaining = (max_unavailable - num_unavailable).max(0).min(candidates.len() as i32) as usize;
            tracing::debug!(daemonset = %ds.name_any(), replacements = allowed.len(), max_unavailable, num_unavailable, candidates = candidates.len(), "rolling update");
            allowed.extend(candidates.into_iter().take(remaining));
            return self.sync_nodes(ds, allowed, Vec::new(), hash).await;
        }
        // Surging: new pods first, old ones go once their replacement is available.
        let mut old_to_delete: Vec<Arc<Pod>> = Vec::new();
        let mut should_not_run: Vec<Arc<Pod>> = Vec::new();
        let mut candidate_nodes: Vec<String> = Vec::new();
        let mut allowed_nodes: Vec<String> = Vec::new();
        let (mut num_surge, mut num_available) = (0, 0);
        for (node_name, pods) in &node_pods {
            let Some((new, old)) = find(pods) else {
                num_surge += 1;
                continue;
            };
            match (&old, &new) {
                (Some(o), _) if available(o) => num_available += 1,
                (None, Some(n)) if available(n) => num_available += 1,
                _ => {}
            }
            let node = nodes.iter().find(|n| &n.name_any() == node_name);
            let runs_here = node.map(|n| node_should_run(n, ds).0).unwrap_or(false);
            match (old, new) {
                (None, _) => {}
                (Some(old), None) => {
                    if !available(&old) {
                        if !runs_here {
                            old_to_delete.push(old);
                            continue;
                        }
                        allowed_nodes.push(node_name.clone());
                    } else {
                        if !runs_here {
                            should_not_run.push(old);
                            continue;
                        }
                        if num_surge >= max_surge {
                            continue;
                        }
                        candidate_nodes.push(node_name.clone());
                    }
                }
                (Some(old), Some(new)) => {
                    if !available(&new) {
                        num_surge += 1;
                        continue;
                    }
                    old_to_delete.push(old);
                }
            }
        }
        let deletable = (num_available - desired).max(0).min(should_not_run.len() as i32) as usize;
        old_to_delete.extend(should_not_run.into_iter().take(deletable));
        let remaining = (max_surge - num_surge).max(0).min(candidate_nodes.len() as i32) as usize;
        allowed_nodes.extend(candidate_nodes.into_iter().take(remaining));
        self.sync_nodes(ds, old_to_delete, allowed_nodes, hash).await
    }

    /// Upstream's `cleanupHistory`: old revisions beyond
    /// `revisionHistoryLimit` that no pod uses go, oldest first.
    async fn cleanup_history(&self, ds: &DaemonSet, old: &[Arc<ControllerRevision>]) -> Result<(), Error> {
        let limit = ds.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0) as usize;
        if old.len() <= limit {
            return Ok(());
        }
        let mut to_kill = old.len() - limit;
        let node_pods = self.node_to_daemon_pods(ds).await?;
        let live: std::collections::HashSet<String> =
            node_pods.values().flatten().filter_map(|p| p.labels().get(CONTROLLER_REVISION_HASH_LABEL).cloned()).collect();
        let mut old = old.to_vec();
        revision::sort_revisions(&mut old);
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &ds.namespace().unwrap_or_default());
        for h in old {
            if to_kill == 0 {
                break;
            }
            if revision::hash_label(&h).map(|x| live.contains(x)).unwrap_or(false) {
                continue;
            }
            match api.delete(&h.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::Api("deleting old revision", e)),
            }
            to_kill -= 1;
        }
        Ok(())
    }

    /// Upstream's `updateDaemonSetStatus` / `storeDaemonSetStatus`.
    async fn update_status(&self, ds: &DaemonSet, nodes: &[Arc<Node>], hash: &str, observe: bool, requeue: &mut Option<Duration>) -> Result<(), Error> {
        let node_pods = self.node_to_daemon_pods(ds).await?;
        let now = self.now();
        let mrs = min_ready_seconds(ds);
        let generation = template_generation(ds);
        let (mut desired, mut current, mut misscheduled, mut ready, mut updated, mut available) = (0, 0, 0, 0, 0, 0);
        for node in nodes {
            let (should_run, _) = node_should_run(node, ds);
            let pods = node_pods.get(&node.name_any()).filter(|p| !p.is_empty());
            if should_run {
                desired += 1;
                let Some(pods) = pods else { continue };
                current += 1;
                let mut pods = pods.clone();
                pods.sort_by(|a, b| by_creation_and_phase(a, b));
                let p = &pods[0];
                if is_pod_ready(p) {
                    ready += 1;
                    if is_pod_available(p, mrs, now) {
                        available += 1;
                    }
                }
                if is_pod_updated(p, hash, generation) {
                    updated += 1;
                }
            } else if pods.is_some() {
                misscheduled += 1;
            }
        }
        let mut status = ds.status.clone().unwrap_or_default();
        let before = status.clone();
        status.desired_number_scheduled = desired;
        status.current_number_scheduled = current;
        status.number_misscheduled = misscheduled;
        status.number_ready = ready;
        status.updated_number_scheduled = Some(updated);
        status.number_available = Some(available);
        status.number_unavailable = Some(desired - available);
        if observe {
            status.observed_generation = ds.metadata.generation;
        }
        if mrs > 0 && ready != available {
            let d = Duration::from_secs(mrs as u64);
            *requeue = Some(requeue.map_or(d, |r| r.min(d)));
        }
        if normalized(&status) == normalized(&before) {
            return Ok(());
        }
        let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &ds.namespace().unwrap_or_default());
        let mut body = ds.clone();
        body.metadata.managed_fields = None;
        body.status = Some(status.clone());
        match api.replace_status(&ds.name_any(), &PostParams::default(), &body).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => {
                // Once more on a fresh read (upstream's StatusUpdateRetries).
                let mut fresh = api.get_status(&ds.name_any()).await.map_err(|e| Error::Api("reading daemonset", e))?;
                let kept = fresh.status.clone().unwrap_or_default();
                fresh.status = Some(DaemonSetStatus {
                    collision_count: kept.collision_count,
                    conditions: kept.conditions,
                    observed_generation: if observe { ds.metadata.generation } else { kept.observed_generation },
                    ..status
                });
                fresh.metadata.managed_fields = None;
                api.replace_status(&ds.name_any(), &PostParams::default(), &fresh).await.map(|_| ()).map_err(|e| Error::Api("updating daemonset status", e))
            }
            Err(e) => Err(Error::Api("updating daemonset status", e)),
        }
    }
}

/// The (new, old) live pod on a node (upstream's `findUpdatedPodsOnNode`).
type NewAndOld = (Option<Arc<Pod>>, Option<Arc<Pod>>);

/// Status as Go serializes it (`omitempty` on the optional counters).
fn normalized(s: &DaemonSetStatus) -> DaemonSetStatus {
    let mut s = s.clone();
    for v in [&mut s.number_available, &mut s.number_unavailable, &mut s.updated_number_scheduled] {
        if *v == Some(0) {
            *v = None;
        }
    }
    if s.observed_generation == Some(0) {
        s.observed_generation = None;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds(template_spec: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({"metadata": {"name": "d", "namespace": "default"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": template_spec}}})).unwrap()
    }

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}})).unwrap()
    }

    #[test]
    fn eligibility_follows_selectors_and_taints() {
        let plain = ds(json!({"containers": [{"name": "c", "image": "i"}]}));
        assert_eq!(node_should_run(&node("n", json!({}), json!([])), &plain), (true, true));
        let tainted = node("n", json!({}), json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]));
        assert_eq!(node_should_run(&tainted, &plain), (false, true), "a NoSchedule taint keeps running pods");
        let evicting = node("n", json!({}), json!([{"key": "dedicated", "value": "x", "effect": "NoExecute"}]));
        assert_eq!(node_should_run(&evicting, &plain), (false, false));
        // The default tolerations cover node problems.
        let not_ready = node("n", json!({}), json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}, {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"}]));
        assert_eq!(node_should_run(&not_ready, &plain), (true, true));
        let tolerating = ds(json!({"containers": [{"name": "c", "image": "i"}], "tolerations": [{"key": "dedicated", "operator": "Exists"}]}));
        assert_eq!(node_should_run(&tainted, &tolerating), (true, true));
        let selective = ds(json!({"containers": [{"name": "c", "image": "i"}], "nodeSelector": {"disk": "ssd"}}));
        assert_eq!(node_should_run(&node("n", json!({"disk": "hdd"}), json!([])), &selective), (false, false));
        assert_eq!(node_should_run(&node("n", json!({"disk": "ssd"}), json!([])), &selective), (true, true));
    }

    #[test]
    fn node_affinity_is_replaced_by_the_node_name() {
        let a: Affinity = serde_json::from_value(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}},
            "podAntiAffinity": {}})).unwrap();
        let r = replace_node_name_affinity(Some(a), "n1");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}, "podAntiAffinity": {}})
        );
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "affinity": r}})).unwrap();
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));
    }

    #[test]
    fn default_tolerations_are_added_once() {
        let mut s: PodSpec = serde_json::from_value(json!({"containers": [], "hostNetwork": true,
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}]})).unwrap();
        add_daemon_tolerations(&mut s);
        add_daemon_tolerations(&mut s);
        let keys: Vec<String> = s.tolerations.unwrap().into_iter().map(|t| t.key.unwrap()).collect();
        assert_eq!(keys.len(), 7, "{keys:?}");
        assert!(keys.contains(&"node.kubernetes.io/network-unavailable".to_string()));
    }

    #[test]
    fn scaled_values() {
        assert_eq!(scaled_value(Some(&IntOrString::String("25%".into())), 3, true), Ok(1));
        assert_eq!(scaled_value(Some(&IntOrString::String("50%".into())), 3, false), Ok(1));
        assert_eq!(scaled_value(Some(&IntOrString::Int(2)), 3, true), Ok(2));
        assert_eq!(scaled_value(None, 3, true), Ok(0));
        assert!(scaled_value(Some(&IntOrString::String("x".into())), 3, true).is_err());
    }
}
