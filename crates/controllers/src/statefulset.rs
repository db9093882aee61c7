//! The StatefulSet controller (upstream's `pkg/controller/statefulset`).
//!
//! - Pods `<set>-<ordinal>` for ordinals `start..start+replicas`
//!   (`spec.ordinals.start`, 0 by default), labelled
//!   `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`,
//!   with `hostname: <pod>` and `subdomain: <serviceName>`.
//! - `OrderedReady` (default): one pod at a time, each created only once
//!   all lower ordinals are Running and Ready (and available for
//!   `minReadySeconds`); scale-down deletes the highest ordinal first, one
//!   at a time. `Parallel`: all at once.
//! - `volumeClaimTemplates`: PVCs `<claim>-<set>-<ordinal>` are created
//!   before each pod (which mounts them) and kept afterwards
//!   (`persistentVolumeClaimRetentionPolicy` Retain).
//! - ControllerRevisions: `status.currentRevision` and
//!   `status.updateRevision`, pods labelled `controller-revision-hash`.
//!   RollingUpdate replaces pods from the highest ordinal down to
//!   `partition`, one at a time, each after the one above is Running and
//!   Ready; lower ordinals keep (and are recreated at) the current
//!   revision. OnDelete replaces nothing itself.
//! - Failed or succeeded pods are recreated (RecreatingFailedPod /
//!   RecreatingTerminatedPod).
//! - Events as upstream: `create Pod web-0 in StatefulSet web successful`,
//!   `create Claim www-web-0 Pod web-0 in StatefulSet web success`,
//!   `delete Pod web-2 in StatefulSet web successful`.
//! - Status `replicas`, `readyReplicas`, `availableReplicas`,
//!   `currentReplicas`, `updatedReplicas`, `observedGeneration`,
//!   `collisionCount`: what `kubectl rollout status sts/x` reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::task::JoinSet;

use crate::informer::{Change, IndexedStore, SharedInformers};
use crate::kit::pods::{is_controlled_by, is_terminating, phase};
use crate::kit::selector::Selector;
use crate::kit::{self, Clock, Key};
use crate::pod_control::{EventRecorder, EventType, controller_of, controller_ref, error_message, is_conflict, is_not_found, is_pod_available, is_pod_ready, object_ref, pod_from_template};
use crate::queue::{self, Backoff, Queue};
use crate::revision::{self, CONTROLLER_REVISION_HASH_LABEL};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

#[derive(Clone)]
pub struct Config {
    /// StatefulSets synced at once (upstream `--concurrent-statefulset-syncs`: 5).
    pub workers: usize,
    pub clock: Clock,
}

impl Default for Config {
    fn default() -> Self {
        Config { workers: 5, clock: kit::system_clock() }
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
    sets: Store<StatefulSet>,
    pods: IndexedStore<Pod>,
    revisions: Store<ControllerRevision>,
    queue: Queue<Key>,
    recorder: EventRecorder,
}

/// Runs the StatefulSet controller with the default [`Config`].
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with(client, Config::default()).await
}

/// Runs the StatefulSet controller until its informers stop.
pub async fn run_with(client: Client, config: Config) -> anyhow::Result<()> {
    run_shared(client.clone(), config, SharedInformers::new(client)).await
}

/// [`run_with`] on the process's shared informers.
pub async fn run_shared(client: Client, config: Config, informers: SharedInformers) -> anyhow::Result<()> {
    let (queue, workers) = queue::queue::<Key>(Backoff::CONTROLLER);
    let set_inf = informers.get::<StatefulSet>();
    let pod_inf = informers.get::<Pod>();
    let rev_inf = informers.get::<ControllerRevision>();
    let ctl = Arc::new(Controller {
        recorder: EventRecorder::new(client.clone(), "statefulset-controller"),
        client,
        config,
        sets: set_inf.store(),
        pods: pod_inf.indexed(),
        revisions: rev_inf.store(),
        queue: queue.clone(),
    });
    let mut tasks = JoinSet::new();
    let c = ctl.clone();
    tasks.spawn(set_inf.run("statefulsets", move |ch| c.on_set(ch)));
    let c = ctl.clone();
    tasks.spawn(pod_inf.run("pods", move |ch| c.on_pod(ch)));
    tasks.spawn(rev_inf.run("controllerrevisions", |_| {}));
    let _ = tokio::join!(ctl.sets.wait_until_ready(), ctl.pods.wait_until_ready(), ctl.revisions.wait_until_ready());
    tracing::info!("statefulset controller synced");
    for s in ctl.sets.state() {
        queue.add(Key::of(&*s));
    }
    let n = ctl.config.workers;
    let c = ctl.clone();
    tasks.spawn(kit::run_workers("statefulset", queue, workers, n, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    }));
    let _ = tasks.join_next().await;
    anyhow::bail!("statefulset controller stopped")
}

/// Upstream's `getParentNameAndOrdinal`: `web-3` → (`web`, 3).
pub fn parent_and_ordinal(pod_name: &str) -> Option<(&str, i32)> {
    let (parent, ord) = pod_name.rsplit_once('-')?;
    if ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ord.parse().ok()?))
}

fn ordinal(pod: &Pod) -> Option<i32> {
    parent_and_ordinal(pod.metadata.name.as_deref().unwrap_or("")).map(|(_, o)| o)
}

fn spec(set: &StatefulSet) -> k8s_openapi::api::apps::v1::StatefulSetSpec {
    set.spec.clone().unwrap_or_default()
}

fn replicas(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.ordinals.as_ref()).and_then(|o| o.start).unwrap_or(0)
}

fn min_ready_seconds(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

fn strategy_type(set: &StatefulSet) -> String {
    set.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.type_.clone()).unwrap_or_else(|| "RollingUpdate".into())
}

fn partition(set: &StatefulSet) -> Option<i32> {
    let ru = set.spec.as_ref()?.update_strategy.as_ref()?.rolling_update.as_ref()?;
    Some(ru.partition.unwrap_or(0))
}

fn pod_name(set: &StatefulSet, ord: i32) -> String {
    format!("{}-{ord}", set.name_any())
}

/// Upstream's `getPersistentVolumeClaimName`.
pub fn claim_name(set: &StatefulSet, claim: &PersistentVolumeClaim, ord: i32) -> String {
    format!("{}-{}-{ord}", claim.metadata.name.as_deref().unwrap_or(""), set.name_any())
}

fn is_member_of(set: &StatefulSet, pod: &Pod) -> bool {
    parent_and_ordinal(pod.metadata.name.as_deref().unwrap_or("")).map(|(p, _)| p == set.name_any()).unwrap_or(false)
}

fn revision_of(pod: &Pod) -> String {
    pod.labels().get(CONTROLLER_REVISION_HASH_LABEL).cloned().unwrap_or_default()
}

/// `phase != ""`: the API server has it.
fn is_created(pod: &Pod) -> bool {
    !phase(pod).is_empty()
}

fn is_running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_pod_ready(pod)
}

fn is_healthy(pod: &Pod) -> bool {
    is_running_and_ready(pod) && !is_terminating(pod)
}

/// Upstream's `getPersistentVolumeClaims`: the claims of ordinal `ord`,
/// by template name.
fn claims_for(set: &StatefulSet, ord: i32) -> Vec<(String, PersistentVolumeClaim)> {
    let s = spec(set);
    let match_labels = s.selector.match_labels.clone().unwrap_or_default();
    s.volume_claim_templates
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            let template_name = t.metadata.name.clone().unwrap_or_default();
            let mut c = t.clone();
            c.metadata = ObjectMeta {
                name: Some(claim_name(set, &t, ord)),
                namespace: set.namespace(),
                labels: Some({
                    let mut l = t.metadata.labels.clone().unwrap_or_default();
                    l.extend(match_labels.clone());
                    l
                }),
                annotations: t.metadata.annotations.clone(),
                ..Default::default()
            };
            c.status = None;
            (template_name, c)
        })
        .collect()
}

/// Upstream's `updateStorage`: a volume per claim template, the pod's other
/// volumes kept.
fn update_storage(set: &StatefulSet, pod: &mut Pod, ord: i32) {
    let claims = claims_for(set, ord);
    let Some(s) = pod.spec.as_mut() else { return };
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(name, c)| Volume {
            name: name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: c.metadata.name.clone().unwrap_or_default(), read_only: Some(false) }),
            ..Default::default()
        })
        .collect();
    for v in s.volumes.take().unwrap_or_default() {
        if !claims.iter().any(|(n, _)| *n == v.name) {
            volumes.push(v);
        }
    }
    s.volumes = (!volumes.is_empty()).then_some(volumes);
}

/// Upstream's `updateIdentity`: name, namespace and the identity labels.
fn update_identity(set: &StatefulSet, pod: &mut Pod, ord: i32) {
    pod.metadata.name = Some(pod_name(set, ord));
    pod.metadata.namespace = set.namespace();
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), pod_name(set, ord));
    labels.insert(POD_INDEX_LABEL.into(), ord.to_string());
}

fn identity_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let Some((parent, ord)) = parent_and_ordinal(pod.metadata.name.as_deref().unwrap_or("")) else { return false };
    parent == set.name_any()
        && pod.metadata.namespace == set.namespace()
        && pod.labels().get(POD_NAME_LABEL).map(String::as_str) == pod.metadata.name.as_deref()
        && pod.metadata.name.as_deref() == Some(pod_name(set, ord).as_str())
}

fn storage_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let Some(ord) = ordinal(pod) else { return false };
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
    for t in spec(set).volume_claim_templates.unwrap_or_default() {
        let name = t.metadata.name.clone().unwrap_or_default();
        let ok = volumes
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name == claim_name(set, &t, ord))
            .unwrap_or(false);
        if !ok {
            return false;
        }
    }
    true
}

/// Upstream's `newStatefulSetPod` for `template` (a revision's).
fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, ord: i32, revision: &str) -> Pod {
    let mut pod = pod_from_template(template, &set.name_any(), Some(controller_ref(set)));
    pod.metadata.generate_name = None;
    update_identity(set, &mut pod, ord);
    if let Some(s) = pod.spec.as_mut() {
        s.hostname = Some(pod_name(set, ord));
        s.subdomain = spec(set).service_name.filter(|n| !n.is_empty());
    }
    update_storage(set, &mut pod, ord);
    pod.metadata.labels.get_or_insert_with(BTreeMap::new).insert(CONTROLLER_REVISION_HASH_LABEL.into(), revision.to_string());
    pod
}

/// The revisions as upstream's `updateStatefulSet` sees them.
struct Revisions {
    current: ControllerRevision,
    update: ControllerRevision,
    current_template: PodTemplateSpec,
    update_template: PodTemplateSpec,
    collision_count: i32,
}

fn current_name(r: &Revisions) -> &str {
    r.current.metadata.name.as_deref().unwrap_or("")
}

fn update_name(r: &Revisions) -> &str {
    r.update.metadata.name.as_deref().unwrap_or("")
}

/// Upstream's `newVersionedStatefulSetPod`: ordinals below the partition
/// (or below `currentReplicas` without a rolling update config) stay at
/// the current revision.
fn new_versioned_pod(set: &StatefulSet, revs: &Revisions, ord: i32) -> Pod {
    let start = start_ordinal(set);
    let current_replicas = set.status.as_ref().and_then(|s| s.current_replicas).unwrap_or(0);
    let rolling = strategy_type(set) == "RollingUpdate";
    let ru = set.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.rolling_update.as_ref());
    let at_current = (rolling && ru.is_none() && ord < start + current_replicas) || (ru.is_some() && ord < start + partition(set).unwrap_or(0));
    if at_current {
        new_pod(set, &revs.current_template, ord, current_name(revs))
    } else {
        new_pod(set, &revs.update_template, ord, update_name(revs))
    }
}

/// Upstream's `computeReplicaStatus`, summed over `lists`.
fn compute_status(status: &mut StatefulSetStatus, mrs: i32, revs: &Revisions, lists: &[&[Option<Pod>]], now: Timestamp) {
    let (mut replicas, mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0, 0);
    for list in lists {
        for p in list.iter().flatten() {
            if is_created(p) {
                replicas += 1;
            }
            if is_running_and_ready(p) {
                ready += 1;
                if is_pod_available(p, mrs, now) {
                    available += 1;
                }
            }
            if is_created(p) && !is_terminating(p) {
                let r = revision_of(p);
                if r == current_name(revs) {
                    current += 1;
                }
                if r == update_name(revs) {
                    updated += 1;
                }
            }
        }
    }
    status.replicas = replicas;
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status.current_replicas = Some(current);
    status.updated_replicas = Some(updated);
}

impl Controller {
    fn now(&self) -> Timestamp {
        (self.config.clock)()
    }

    fn event(&self, set: &StatefulSet, t: EventType, reason: &str, msg: impl Into<String>) {
        self.recorder.event(object_ref(set), t, reason, msg);
    }

    /// Upstream's `recordPodEvent`.
    fn pod_event(&self, verb: &str, set: &StatefulSet, pod: &str, err: Option<&kube::Error>) {
        let title = format!("{}{}", verb[..1].to_uppercase(), &verb[1..]);
        match err {
            None => self.event(set, EventType::Normal, &format!("Successful{title}"), format!("{verb} Pod {pod} in StatefulSet {} successful", set.name_any())),
            Some(e) => self.event(
                set,
                EventType::Warning,
                &format!("Failed{title}"),
                format!("{verb} Pod {pod} in StatefulSet {} failed error: {}", set.name_any(), error_message(e)),
            ),
        }
    }

    /// Upstream's `recordClaimEvent`.
    fn claim_event(&self, verb: &str, set: &StatefulSet, pod: &str, claim: &str, err: Option<&kube::Error>) {
        let title = format!("{}{}", verb[..1].to_uppercase(), &verb[1..]);
        match err {
            None => self.event(
                set,
                EventType::Normal,
                &format!("Successful{title}"),
                format!("{verb} Claim {claim} Pod {pod} in StatefulSet {} success", set.name_any()),
            ),
            Some(e) => self.event(
                set,
                EventType::Warning,
                &format!("Failed{title}"),
                format!("{verb} Claim {claim} for Pod {pod} in StatefulSet {} failed error: {}", set.name_any(), error_message(e)),
            ),
        }
    }

    fn on_set(&self, change: Change<StatefulSet>) {
        match change {
            Change::Added(s) | Change::Updated(_, s) | Change::Deleted(s) => self.queue.add(Key::of(&*s)),
        }
    }

    fn set_for(&self, pod: &Pod) -> Option<Arc<StatefulSet>> {
        let r = controller_of(&pod.metadata)?;
        if r.kind != "StatefulSet" || r.api_version != "apps/v1" {
            return None;
        }
        let s = self.sets.get(&Key::new(pod.namespace().unwrap_or_default(), &r.name).obj_ref())?;
        (s.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(s)
    }

    fn matching_sets(&self, pod: &Pod) -> Vec<Arc<StatefulSet>> {
        let ns = pod.namespace();
        self.sets
            .state()
            .into_iter()
            .filter(|s| s.namespace() == ns)
            .filter(|s| Selector::parse(s.spec.as_ref().map(|x| &x.selector)).map(|sel| sel.matches(pod.metadata.labels.as_ref())).unwrap_or(false))
            .collect()
    }

    fn on_pod(&self, change: Change<Pod>) {
        let (old, new) = match change {
            Change::Added(p) => (None, p),
            Change::Updated(o, n) => (Some(o), n),
            Change::Deleted(p) => {
                if let Some(s) = self.set_for(&p) {
                    self.queue.add(Key::of(&*s));
                }
                return;
            }
        };
        if let Some(old) = &old
            && controller_of(&old.metadata).map(|r| &r.uid) != controller_of(&new.metadata).map(|r| &r.uid)
                && let Some(s) = self.set_for(old) {
                    self.queue.add(Key::of(&*s));
                }
        match self.set_for(&new) {
            Some(s) => self.queue.add(Key::of(&*s)),
            None if controller_of(&new.metadata).is_none()
                && (old.as_ref().map(|o| o.metadata.labels != new.metadata.labels).unwrap_or(true) || old.as_ref().map(|o| controller_of(&o.metadata).is_some()).unwrap_or(false)) => {
                    for s in self.matching_sets(&new) {
                        self.queue.add(Key::of(&*s));
                    }
                }
            None => {}
        }
    }

    async fn sync(&self, key: &Key) -> Result<Option<Duration>, Error> {
        let Some(set) = self.sets.get(&key.obj_ref()) else { return Ok(None) };
        let set: StatefulSet = (*set).clone();
        let selector = Selector::parse(set.spec.as_ref().map(|s| &s.selector)).map_err(Error::Selector)?;
        let ns = key.namespace.clone();
        // Orphan revisions are adopted (upstream's adoptOrphanRevisions).
        let candidates: Vec<Arc<ControllerRevision>> = self.revisions.state().into_iter().filter(|r| r.namespace().as_deref() == Some(ns.as_str())).collect();
        let revisions = kit::claim::claim(&self.client, &set, &selector, candidates, |_| true, None).await.map_err(|e| Error::Api("adopting revisions", e))?;
        let pod_candidates: Vec<Arc<Pod>> = self.pods.in_namespace(&ns);
        let pods = kit::claim::claim(&self.client, &set, &selector, pod_candidates, |p| is_member_of(&set, p), None)
            .await
            .map_err(|e| Error::Api("claiming pods", e))?;
        let uid = set.uid().unwrap_or_default();
        let mut revisions: Vec<Arc<ControllerRevision>> = revisions.into_iter().filter(|r| is_controlled_by(&r.metadata, &uid)).collect();
        revision::sort_revisions(&mut revisions);
        let pods: Vec<Pod> = pods.iter().map(|p| (**p).clone()).collect();
        let (status, result) = self.update_stateful_set(&set, &pods, &revisions).await;
        let mut requeue = None;
        if let Some(st) = &status {
            let mrs = min_ready_seconds(&set);
            if mrs > 0 && st.available_replicas.unwrap_or(0) != replicas(&set) {
                requeue = Some(Duration::from_secs(mrs as u64));
            }
        }
        result?;
        Ok(requeue)
    }

    /// Upstream's `UpdateStatefulSet` + `performUpdate`: revisions, pods,
    /// status, history.
    async fn update_stateful_set(&self, set: &StatefulSet, pods: &[Pod], revisions: &[Arc<ControllerRevision>]) -> (Option<StatefulSetStatus>, Result<(), Error>) {
        let revs = match self.get_revisions(set, revisions).await {
            Ok(r) => r,
            Err(e) => return (None, Err(e)),
        };
        let (status, result) = self.update_pods(set, &revs, pods).await;
        let status_result = self.update_status(set, status.clone()).await;
        let history = self.truncate_history(set, pods, revisions, &revs).await;
        (Some(status), result.and(status_result).and(history))
    }

    /// Upstream's `getStatefulSetRevisions`.
    async fn get_revisions(&self, set: &StatefulSet, revisions: &[Arc<ControllerRevision>]) -> Result<Revisions, Error> {
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &set.namespace().unwrap_or_default());
        let mut collision_count = set.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
        let s = spec(set);
        let data = revision::template_patch(&s.template);
        let mut labels = s.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        let hash = revision::hash_revision_data(&data, Some(collision_count));
        labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.clone());
        let wanted = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(revision::revision_name(&set.name_any(), &hash)),
                namespace: set.namespace(),
                labels: Some(labels),
                annotations: set.metadata.annotations.clone(),
                owner_references: Some(vec![controller_ref(set)]),
                ..Default::default()
            },
            data: revision::raw(data),
            revision: revision::next_revision(revisions),
        };
        let equal: Vec<&Arc<ControllerRevision>> = revisions.iter().filter(|r| revision::equal_data(r, &wanted)).collect();
        let update = match (equal.last(), revisions.last()) {
            // The latest revision is this template: unchanged.
            (Some(eq), Some(last)) if revision::equal_data(last, eq) => (**last).clone(),
            // An older revision is this template: a rollback, renumbered.
            (Some(eq), _) => revision::update_revision_number(&api, eq, wanted.revision).await.map_err(|e| Error::Api("renumbering revision", e))?,
            (None, _) => revision::create_revision(&api, &set.name_any(), &wanted, &mut collision_count).await.map_err(|e| Error::Api("creating revision", e))?,
        };
        let current_name = set.status.as_ref().and_then(|s| s.current_revision.clone()).unwrap_or_default();
        let current = revisions.iter().find(|r| r.metadata.name.as_deref() == Some(current_name.as_str())).map(|r| (**r).clone()).unwrap_or_else(|| update.clone());
        let update_template = revision::template_of(&update).unwrap_or_else(|| s.template.clone());
        let current_template = revision::template_of(&current).unwrap_or_else(|| update_template.clone());
        Ok(Revisions { current, update, current_template, update_template, collision_count })
    }

    /// Upstream's `updateStatefulSet`: creates, repairs, deletes and updates
    /// pods; returns the status to record.
    async fn update_pods(&self, set: &StatefulSet, revs: &Revisions, pods: &[Pod]) -> (StatefulSetStatus, Result<(), Error>) {
        let now = self.now();
        let mrs = min_ready_seconds(set);
        let mut status = StatefulSetStatus {
            observed_generation: set.metadata.generation,
            current_revision: Some(current_name(revs).to_string()),
            update_revision: Some(update_name(revs).to_string()),
            collision_count: Some(revs.collision_count),
            conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
            ..Default::default()
        };
        let start = start_ordinal(set);
        let n = replicas(set);
        let mut replicas_v: Vec<Option<Pod>> = vec![None; n as usize];
        let mut condemned: Vec<Option<Pod>> = Vec::new();
        for p in pods {
            match ordinal(p) {
                Some(o) if o >= start && o < start + n => replicas_v[(o - start) as usize] = Some(p.clone()),
                Some(_) => condemned.push(Some(p.clone())),
                None => {}
            }
        }
        compute_status(&mut status, mrs, revs, &[&replicas_v, &condemned], now);
        for (i, slot) in replicas_v.iter_mut().enumerate() {
            if slot.is_none() {
                *slot = Some(new_versioned_pod(set, revs, start + i as i32));
            }
        }
        // Highest ordinal first.
        condemned.sort_by_key(|p| std::cmp::Reverse(p.as_ref().and_then(ordinal).unwrap_or(-1)));
        let first_unhealthy: Option<String> = replicas_v
            .iter()
            .flatten()
            .find(|p| !is_healthy(p))
            .or_else(|| condemned.iter().rev().flatten().find(|p| !is_healthy(p)))
            .map(|p| p.name_any());
        if let Some(u) = &first_unhealthy {
            tracing::debug!(statefulset = %set.name_any(), pod = %u, "statefulset has unhealthy pods");
        }
        if set.metadata.deletion_timestamp.is_some() {
            return (status, Ok(()));
        }
        let monotonic = spec(set).pod_management_policy.as_deref() != Some("Parallel");

        // Each replica: recreate failed ones, create missing ones, repair identity.
        let mut first_err: Option<Error> = None;
        for i in 0..replicas_v.len() {
            match self.process_replica(set, revs, monotonic, &mut replicas_v, i, start).await {
                Ok(exit) if exit && monotonic => {
                    compute_status(&mut status, mrs, revs, &[&replicas_v, &condemned], now);
                    return (status, Ok(()));
                }
                Ok(_) => {}
                Err(e) => {
                    compute_status(&mut status, mrs, revs, &[&replicas_v, &condemned], now);
                    if monotonic {
                        return (status, Err(e));
                    }
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            compute_status(&mut status, mrs, revs, &[&replicas_v, &condemned], now);
            return (status, Err(e));
        }
        // Scale down: highest ordinal first, each only when its
        // predecessors are healthy (in order mode).
        for i in 0..condemned.len() {
            let Some(p) = condemned[i].clone() else { continue };
            if is_terminating(&p) {
                if monotonic {
                    tracing::debug!(statefulset = %set.name_any(), pod = %p.name_any(), "waiting for pod to terminate prior to scale down");
                    compute_status(&mut status, mrs, revs, &[&replicas_v, &condemned], now);
                    return (status, Ok(()));
                }
                continue;
            }
            let is_first_unhealthy = first_unhealthy.as_deref() == Some(p.name_any().as_str());
            if monotonic && !is_first_unhealthy && (!is_running_and_ready(&p) || !is_pod_available(&p, mrs, now)) {
                tracing::debug!(statefulset = %set.name_any(), pod = %p.name_any(), "waiting for pod to be running, ready and available prior to scale down");
                compute_status(&mut status, mrs, revs, &[&replicas_v, &condemned], now);
                return (status, Ok(()));
            }
            tracing::info!(statefulset = %set.name_any(), pod = %p.name_any(), "pod of statefulset is terminating for scale down");
            let r = self.delete_pod(set, &p).await;
            if monotonic || r.is_err() {
                compute_status(&mut status, mrs, revs, &[&replicas_v, &condemned], now);
                return (status, r);
            }
        }
        compute_status(&mut status, mrs, revs, &[&replicas_v, &condemned], now);
        if strategy_type(set) == "OnDelete" {
            return (status, Ok(()));
        }
        // Rolling update: the highest ordinal not at the update revision
        // goes; wait for each replacement to be healthy.
        let update_min = partition(set).unwrap_or(0).max(0) as usize;
        for target in (update_min..replicas_v.len()).rev() {
            let Some(p) = replicas_v[target].clone() else { continue };
            if revision_of(&p) != update_name(revs) && !is_terminating(&p) {
                tracing::info!(statefulset = %set.name_any(), pod = %p.name_any(), "pod of statefulset is terminating for update");
                let r = self.delete_pod(set, &p).await;
                if let Some(c) = status.current_replicas.as_mut() {
                    *c -= 1;
                }
                return (status, r);
            }
            if !is_healthy(&p) {
                tracing::debug!(statefulset = %set.name_any(), pod = %p.name_any(), "waiting for pod to update");
                return (status, Ok(()));
            }
        }
        (status, Ok(()))
    }

    /// Upstream's `processReplica`: `Ok(true)` means "stop here" (in order mode).
    async fn process_replica(&self, set: &StatefulSet, revs: &Revisions, monotonic: bool, replicas_v: &mut [Option<Pod>], i: usize, start: i32) -> Result<bool, Error> {
        let mut pod = replicas_v[i].clone().expect("filled");
        let ord = start + i as i32;
        if matches!(phase(&pod), "Failed" | "Succeeded") {
            if phase(&pod) == "Failed" {
                self.event(
                    set,
                    EventType::Warning,
                    "RecreatingFailedPod",
                    format!("StatefulSet {}/{} is recreating failed Pod {}", set.namespace().unwrap_or_default(), set.name_any(), pod.name_any()),
                );
            } else {
                self.event(
                    set,
                    EventType::Normal,
                    "RecreatingTerminatedPod",
                    format!("StatefulSet {}/{} is recreating terminated Pod {}", set.namespace().unwrap_or_default(), set.name_any(), pod.name_any()),
                );
            }
            self.delete_pod(set, &pod).await?;
            pod = new_versioned_pod(set, revs, ord);
            replicas_v[i] = Some(pod.clone());
        }
        if !is_created(&pod) {
            self.create_pod(set, &pod).await?;
            if monotonic {
                return Ok(true);
            }
        }
        if phase(&pod) == "Pending" {
            // PVCs deleted since the pod was created come back.
            self.create_claims(set, &pod, ord).await?;
        }
        if monotonic && !is_running_and_ready(&pod) {
            tracing::debug!(statefulset = %set.name_any(), pod = %pod.name_any(), "waiting for pod to be running and ready");
            return Ok(true);
        }
        if monotonic && !is_pod_available(&pod, min_ready_seconds(set), self.now()) {
            tracing::debug!(statefulset = %set.name_any(), pod = %pod.name_any(), "waiting for pod to be available");
            return Ok(true);
        }
        if !is_created(&pod) || (identity_matches(set, &pod) && storage_matches(set, &pod)) {
            return Ok(false);
        }
        self.update_pod(set, pod, ord).await?;
        Ok(false)
    }

    /// Upstream's `createPersistentVolumeClaims`: creates the missing claims
    /// of ordinal `ord`.
    async fn create_claims(&self, set: &StatefulSet, pod: &Pod, ord: i32) -> Result<(), Error> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &set.namespace().unwrap_or_default());
        let mut errors = Vec::new();
        for (_, claim) in claims_for(set, ord) {
            let name = claim.metadata.name.clone().unwrap_or_default();
            match api.get_opt(&name).await {
                Ok(None) => match api.create(&PostParams::default(), &claim).await {
                    Ok(_) => self.claim_event("create", set, &pod.name_any(), &name, None),
                    Err(e) if revision::is_already_exists(&e) => {}
                    Err(e) => {
                        self.claim_event("create", set, &pod.name_any(), &name, Some(&e));
                        errors.push(format!("failed to create PVC {name}: {}", error_message(&e)));
                    }
                },
                Ok(Some(existing)) => {
                    if existing.metadata.deletion_timestamp.is_some() {
                        errors.push(format!("pvc {name} is being deleted"));
                    }
                }
                Err(e) => {
                    self.claim_event("create", set, &pod.name_any(), &name, Some(&e));
                    errors.push(format!("failed to retrieve PVC {name}: {}", error_message(&e)));
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(Error::Other(errors.join("; "))) }
    }

    /// Upstream's `CreateStatefulPod`: claims first, then the pod.
    async fn create_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<(), Error> {
        let ord = ordinal(pod).unwrap_or(0);
        if let Err(e) = self.create_claims(set, pod, ord).await {
            self.event(set, EventType::Warning, "FailedCreate", format!("create Pod {} in StatefulSet {} failed error: {e}", pod.name_any(), set.name_any()));
            return Err(e);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &set.namespace().unwrap_or_default());
        match api.create(&PostParams::default(), pod).await {
            Ok(_) => {
                tracing::info!(statefulset = %set.name_any(), pod = %pod.name_any(), "created pod");
                self.pod_event("create", set, &pod.name_any(), None);
                Ok(())
            }
            // Already there (a stale cache): no event.
            Err(e) if revision::is_already_exists(&e) => Err(Error::Api("creating pod", e)),
            Err(e) => {
                self.pod_event("create", set, &pod.name_any(), Some(&e));
                Err(Error::Api("creating pod", e))
            }
        }
    }

    async fn delete_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<(), Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &set.namespace().unwrap_or_default());
        match api.delete(&pod.name_any(), &DeleteParams::default()).await {
            Ok(_) => {
                self.pod_event("delete", set, &pod.name_any(), None);
                Ok(())
            }
            Err(e) => {
                self.pod_event("delete", set, &pod.name_any(), Some(&e));
                if is_not_found(&e) { Ok(()) } else { Err(Error::Api("deleting pod", e)) }
            }
        }
    }

    /// Upstream's `UpdateStatefulPod`: restores identity and storage.
    async fn update_pod(&self, set: &StatefulSet, mut pod: Pod, ord: i32) -> Result<(), Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &set.namespace().unwrap_or_default());
        for _ in 0..5 {
            let mut consistent = true;
            if !identity_matches(set, &pod) {
                update_identity(set, &mut pod, ord);
                consistent = false;
            }
            if !storage_matches(set, &pod) {
                update_storage(set, &mut pod, ord);
                consistent = false;
                if let Err(e) = self.create_claims(set, &pod, ord).await {
                    self.event(set, EventType::Warning, "FailedUpdate", format!("update Pod {} in StatefulSet {} failed error: {e}", pod.name_any(), set.name_any()));
                    return Err(e);
                }
            }
            if consistent {
                return Ok(());
            }
            pod.metadata.managed_fields = None;
            match api.replace(&pod.name_any(), &PostParams::default(), &pod).await {
                Ok(_) => {
                    self.pod_event("update", set, &pod.name_any(), None);
                    return Ok(());
                }
                Err(e) if is_conflict(&e) => {
                    pod = api.get(&pod.name_any()).await.map_err(|e| Error::Api("reading pod", e))?;
                }
                Err(e) => {
                    self.pod_event("update", set, &pod.name_any(), Some(&e));
                    return Err(Error::Api("updating pod", e));
                }
            }
        }
        Err(Error::Other(format!("updating pod {}: still conflicting", pod.name_any())))
    }

    /// Upstream's `updateStatefulSetStatus`: completes a finished rolling
    /// update, and writes the status if it changed.
    async fn update_status(&self, set: &StatefulSet, mut status: StatefulSetStatus) -> Result<(), Error> {
        if strategy_type(set) == "RollingUpdate"
            && status.updated_replicas.unwrap_or(0) == status.replicas
            && status.ready_replicas.unwrap_or(0) == status.replicas
        {
            status.current_replicas = status.updated_replicas;
            status.current_revision = status.update_revision.clone();
        }
        let old = set.status.clone().unwrap_or_default();
        if normalized(&status) == normalized(&old) {
            return Ok(());
        }
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &set.namespace().unwrap_or_default());
        let mut body = set.clone();
        for _ in 0..5 {
            body.metadata.managed_fields = None;
            body.status = Some(status.clone());
            match api.replace_status(&set.name_any(), &PostParams::default(), &body).await {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => {
                    body = api.get_status(&set.name_any()).await.map_err(|e| Error::Api("reading statefulset", e))?;
                }
                Err(e) => return Err(Error::Api("updating statefulset status", e)),
            }
        }
        Err(Error::Other("updating statefulset status: still conflicting".into()))
    }

    /// Upstream's `truncateHistory`: revisions no pod uses, beyond
    /// `revisionHistoryLimit`, oldest first.
    async fn truncate_history(&self, set: &StatefulSet, pods: &[Pod], revisions: &[Arc<ControllerRevision>], revs: &Revisions) -> Result<(), Error> {
        let mut live: std::collections::HashSet<String> = pods.iter().map(revision_of).collect();
        live.insert(current_name(revs).to_string());
        live.insert(update_name(revs).to_string());
        let history: Vec<&Arc<ControllerRevision>> = revisions.iter().filter(|r| !live.contains(r.metadata.name.as_deref().unwrap_or(""))).collect();
        let limit = set.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0) as usize;
        if history.len() <= limit {
            return Ok(());
        }
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &set.namespace().unwrap_or_default());
        for r in &history[..history.len() - limit] {
            match api.delete(&r.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::Api("deleting old revision", e)),
            }
        }
        Ok(())
    }
}

/// The status as Go serializes it (`omitempty` counters).
fn normalized(s: &StatefulSetStatus) -> StatefulSetStatus {
    let mut s = s.clone();
    for v in [&mut s.ready_replicas, &mut s.available_replicas, &mut s.current_replicas, &mut s.updated_replicas] {
        if *v == Some(0) {
            *v = None;
        }
    }
    if s.collision_count == Some(0) {
        s.collision_count = None;
    }
    for r in [&mut s.current_revision, &mut s.update_revision] {
        if r.as_deref() == Some("") {
            *r = None;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set() -> StatefulSet {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"replicas": 3, "serviceName": "nginx", "selector": {"matchLabels": {"app": "nginx"}},
                "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}],
                    "volumes": [{"name": "config", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}}))
        .unwrap()
    }

    #[test]
    fn ordinals_from_names() {
        assert_eq!(parent_and_ordinal("web-0"), Some(("web", 0)));
        assert_eq!(parent_and_ordinal("my-web-12"), Some(("my-web", 12)));
        assert_eq!(parent_and_ordinal("web"), None);
        assert_eq!(parent_and_ordinal("web-x1"), None);
    }

    #[test]
    fn pods_have_identity_and_storage() {
        let s = set();
        let t = s.spec.as_ref().unwrap().template.clone();
        let p = new_pod(&s, &t, 2, "web-abc");
        assert_eq!(p.name_any(), "web-2");
        assert_eq!(p.labels().get(POD_NAME_LABEL).map(String::as_str), Some("web-2"));
        assert_eq!(p.labels().get(POD_INDEX_LABEL).map(String::as_str), Some("2"));
        assert_eq!(p.labels().get(CONTROLLER_REVISION_HASH_LABEL).map(String::as_str), Some("web-abc"));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let vols = spec.volumes.as_ref().unwrap();
        assert_eq!(vols[0].name, "www");
        assert_eq!(vols[0].persistent_volume_claim.as_ref().unwrap().claim_name, "www-web-2");
        assert_eq!(vols[1].name, "config", "other volumes are kept");
        assert!(identity_matches(&s, &Pod { metadata: ObjectMeta { namespace: Some("default".into()), ..p.metadata.clone() }, ..p.clone() }));
        assert!(storage_matches(&s, &p));
        let claims = claims_for(&s, 2);
        assert_eq!(claims[0].1.metadata.name.as_deref(), Some("www-web-2"));
        assert_eq!(claims[0].1.metadata.labels.as_ref().unwrap().get("app").map(String::as_str), Some("nginx"), "the selector's labels");
    }
}
