//! The ReplicaSet and ReplicationController controllers (upstream's
//! `pkg/controller/replicaset`, whose ReplicationController controller is
//! the same code over the older kind).
//!
//! For each set: the active pods it controls (not finished, not being
//! deleted) are counted against `spec.replicas`; missing ones are created
//! from the template (`generateName: <set>-`, a controller reference with
//! `blockOwnerDeletion`), in slow-start batches of 1, 2, 4, ...; surplus ones
//! are deleted, unscheduled, pending and not-ready pods first, then the
//! most recently ready and the newest ([`pod_control::pods_to_delete`]).
//! Orphan pods matching the selector are adopted, owned pods that stopped
//! matching are released. Expectations keep a burst of creates or deletes
//! from being repeated before the watch reports it.
//!
//! The status subresource carries `replicas`, `fullyLabeledReplicas`,
//! `readyReplicas`, `availableReplicas` (ready for `minReadySeconds`),
//! `observedGeneration`, and a `ReplicaFailure` condition while creating
//! or deleting pods fails. Events: `SuccessfulCreate`, `FailedCreate`,
//! `SuccessfulDelete`, `FailedDelete`, as upstream.
//!
//! How: one informer for pods shared by both controllers, one per set kind;
//! their handlers record what the expectations wait for and queue set keys;
//! workers reconcile one set at a time and retry failures with backoff.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{
    Pod, PodTemplateSpec, ReplicationController, ReplicationControllerCondition, ReplicationControllerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::discovery::group_of;
use crate::informer::{self, Change, IndexedStore, SharedInformers};
use crate::pod_control::{self, EventRecorder, Expectations, PodControl};
use crate::queue::{self, Backoff, Queue};

/// At most this many pods are created or deleted per sync (upstream's
/// `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;
/// Sets reconciled at once per kind (upstream's `--concurrent-replicaset-syncs`).
pub const WORKERS: usize = 5;

/// The status fields the controller owns, common to both kinds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SetStatus {
    pub replicas: i32,
    pub fully_labeled_replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub observed_generation: i64,
    pub conditions: Vec<SetCondition>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SetCondition {
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition_time: Option<Time>,
}

/// What the controller needs of a ReplicaSet or a ReplicationController.
pub trait ReplicatedSet:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The event source and log name (upstream's component names).
    const COMPONENT: &'static str;
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    /// `Ok(None)`: selects nothing.
    fn pod_selector(&self) -> Result<Option<Selector>, String>;
    fn pod_template(&self) -> Option<&PodTemplateSpec>;
    fn set_status(&self) -> SetStatus;
    fn put_set_status(&mut self, s: &SetStatus);
}

impl ReplicatedSet for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }
    fn pod_selector(&self) -> Result<Option<Selector>, String> {
        match self.spec.as_ref().map(|s| s.selector.clone()) {
            None => Ok(None),
            Some(sel) => Selector::try_from(sel).map(Some).map_err(|e| e.to_string()),
        }
    }
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }
    fn set_status(&self) -> SetStatus {
        let s = self.status.clone().unwrap_or_default();
        SetStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: s.ready_replicas.unwrap_or(0),
            available_replicas: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
            conditions: s
                .conditions
                .unwrap_or_default()
                .into_iter()
                .map(|c| SetCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    last_transition_time: c.last_transition_time,
                })
                .collect(),
        }
    }
    fn put_set_status(&mut self, n: &SetStatus) {
        let s = self.status.get_or_insert_with(ReplicaSetStatus::default);
        s.replicas = n.replicas;
        // Zeros are omitted, as upstream's `omitempty` does.
        s.fully_labeled_replicas = nonzero(n.fully_labeled_replicas);
        s.ready_replicas = nonzero(n.ready_replicas);
        s.available_replicas = nonzero(n.available_replicas);
        s.observed_generation = (n.observed_generation != 0).then_some(n.observed_generation);
        s.conditions = (!n.conditions.is_empty()).then(|| {
            n.conditions
                .iter()
                .map(|c| ReplicaSetCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                })
                .collect()
        });
    }
}

impl ReplicatedSet for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }
    fn pod_selector(&self) -> Result<Option<Selector>, String> {
        // A ReplicationController selects by equality on a label map; an
        // empty one is refused by validation, and selects nothing here.
        match self.spec.as_ref().and_then(|s| s.selector.clone()) {
            Some(m) if !m.is_empty() => Ok(Some(m.into_iter().collect())),
            _ => Ok(None),
        }
    }
    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }
    fn set_status(&self) -> SetStatus {
        let s = self.status.clone().unwrap_or_default();
        SetStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: s.ready_replicas.unwrap_or(0),
            available_replicas: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
            conditions: s
                .conditions
                .unwrap_or_default()
                .into_iter()
                .map(|c| SetCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    last_transition_time: c.last_transition_time,
                })
                .collect(),
        }
    }
    fn put_set_status(&mut self, n: &SetStatus) {
        let s = self.status.get_or_insert_with(ReplicationControllerStatus::default);
        s.replicas = n.replicas;
        // Zeros are omitted, as upstream's `omitempty` does.
        s.fully_labeled_replicas = nonzero(n.fully_labeled_replicas);
        s.ready_replicas = nonzero(n.ready_replicas);
        s.available_replicas = nonzero(n.available_replicas);
        s.observed_generation = (n.observed_generation != 0).then_some(n.observed_generation);
        s.conditions = (!n.conditions.is_empty()).then(|| {
            n.conditions
                .iter()
                .map(|c| ReplicationControllerCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                })
                .collect()
        });
    }
}

fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// Runs the ReplicaSet and ReplicationController controllers until one of
/// their tasks ends (they do not on their own: watch failures are retried).
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_shared(client.clone(), SharedInformers::new(client)).await
}

/// [`run`] on the process's shared informers.
pub async fn run_shared(client: Client, informers: SharedInformers) -> anyhow::Result<()> {
    let pods = informers.get::<Pod>();
    let rss = informers.get::<ReplicaSet>();
    let rcs = informers.get::<ReplicationController>();
    let (rs_ctl, rs_workers) = SetController::<ReplicaSet>::new(client.clone(), rss.store(), pods.indexed());
    let (rc_ctl, rc_workers) = SetController::<ReplicationController>::new(client, rcs.store(), pods.indexed());

    let (pod_store, rs_store, rc_store) = (pods.store(), rss.store(), rcs.store());
    let pods_task = {
        let (rs_ctl, rc_ctl) = (rs_ctl.clone(), rc_ctl.clone());
        pods.run("pods", move |change| {
            rs_ctl.on_pod(&change);
            rc_ctl.on_pod(&change);
        })
    };
    let rs_task = {
        let ctl = rs_ctl.clone();
        rss.run("replicasets", move |change| ctl.on_set(&change))
    };
    let rc_task = {
        let ctl = rc_ctl.clone();
        rcs.run("replicationcontrollers", move |change| ctl.on_set(&change))
    };
    let workers = async move {
        // Upstream's WaitForCacheSync: act only on complete views.
        let _ = pod_store.wait_until_ready().await;
        let _ = rs_store.wait_until_ready().await;
        let _ = rc_store.wait_until_ready().await;
        tracing::debug!("replicaset and replicationcontroller caches synced");
        let rs = {
            let ctl = rs_ctl.clone();
            rs_workers.run(WORKERS, move |key| {
                let ctl = ctl.clone();
                async move { ctl.process(key).await }
            })
        };
        let rc = {
            let ctl = rc_ctl.clone();
            rc_workers.run(WORKERS, move |key| {
                let ctl = ctl.clone();
                async move { ctl.process(key).await }
            })
        };
        tokio::join!(rs, rc);
    };
    tokio::select! {
        _ = pods_task => anyhow::bail!("replicaset controller: pod watch ended"),
        _ = rs_task => anyhow::bail!("replicaset controller: replicaset watch ended"),
        _ = rc_task => anyhow::bail!("replicationcontroller controller: watch ended"),
        _ = workers => anyhow::bail!("replicaset controller workers ended"),
    }
}

/// One controller over sets of kind `K`.
pub struct SetController<K: ReplicatedSet> {
    client: Client,
    sets: Store<K>,
    pods: IndexedStore<Pod>,
    expectations: Expectations,
    pod_control: PodControl,
    queue: Queue<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Api { message: String, conflict: bool },
    #[error("{0}")]
    Other(String),
    #[error("invalid selector: {0}")]
    Selector(String),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Api { message: pod_control::error_message(&e), conflict: pod_control::is_conflict(&e) }
    }
}

impl<K: ReplicatedSet> SetController<K> {
    pub fn new(client: Client, sets: Store<K>, pods: IndexedStore<Pod>) -> (Arc<Self>, queue::Workers<String>) {
        let (queue, workers) = queue::queue::<String>(Backoff::CONTROLLER);
        let recorder = EventRecorder::new(client.clone(), K::COMPONENT);
        let ctl = SetController {
            pod_control: PodControl::new(client.clone(), recorder),
            client,
            sets,
            pods,
            expectations: Expectations::default(),
            queue,
        };
        (Arc::new(ctl), workers)
    }

    fn api(&self, ns: &str) -> Api<K> {
        Api::namespaced(self.client.clone(), ns)
    }

    // ---- event handlers (upstream's add/update/delete funcs) ----

    pub fn on_set(&self, change: &Change<K>) {
        match change {
            Change::Added(s) => self.queue.add(informer::key_of(&**s)),
            Change::Updated(_, s) => self.queue.add(informer::key_of(&**s)),
            Change::Deleted(s) => {
                let key = informer::key_of(&**s);
                self.expectations.forget(&key);
                self.queue.add(key);
            }
        }
    }

    /// The set `pod`'s controller reference names, if it is one of ours.
    fn resolve_controller(&self, pod: &Pod) -> Option<Arc<K>> {
        let r = pod_control::controller_of(&pod.metadata)?;
        if r.kind != K::kind(&()) || group_of(&r.api_version) != K::group(&()) {
            return None;
        }
        let ns = pod.metadata.namespace.as_deref()?;
        let set = informer::get(&self.sets, &format!("{ns}/{}", r.name))?;
        (set.meta().uid.as_deref() == Some(r.uid.as_str())).then_some(set)
    }

    /// Sets in `pod`'s namespace whose selector matches it (for orphans).
    fn matching_sets(&self, pod: &Pod) -> Vec<Arc<K>> {
        let ns = pod.metadata.namespace.clone();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if labels.is_empty() {
            return Vec::new();
        }
        self.sets
            .state()
            .into_iter()
            .filter(|s| s.meta().namespace == ns)
            .filter(|s| matches!(s.pod_selector(), Ok(Some(sel)) if sel.matches(&labels)))
            .collect()
    }

    fn pod_deleted(&self, pod: &Pod) {
        if let Some(set) = self.resolve_controller(pod) {
            let key = informer::key_of(&*set);
            self.expectations.deletion_observed(&key, &informer::key_of(pod));
            self.queue.add(key);
        }
    }

    pub fn on_pod(&self, change: &Change<Pod>) {
        match change {
            Change::Added(pod) => {
                if pod.metadata.deletion_timestamp.is_some() {
                    // Seen first while already being deleted (after a
                    // restart): not a creation to observe.
                    self.pod_deleted(pod);
                    return;
                }
                if pod_control::controller_of(&pod.metadata).is_some() {
                    if let Some(set) = self.resolve_controller(pod) {
                        let key = informer::key_of(&*set);
                        self.expectations.creation_observed(&key);
                        self.queue.add(key);
                    }
                    return;
                }
                for set in self.matching_sets(pod) {
                    self.queue.add(informer::key_of(&*set));
                }
            }
            Change::Updated(old, cur) => {
                if old.metadata.resource_version == cur.metadata.resource_version {
                    return;
                }
                let labels_changed = old.metadata.labels != cur.metadata.labels;
                if cur.metadata.deletion_timestamp.is_some() {
                    // A graceful delete: the pod stops counting now.
                    self.pod_deleted(cur);
                    if labels_changed {
                        self.pod_deleted(old);
                    }
                    return;
                }
                let old_ref = pod_control::controller_of(&old.metadata);
                let cur_ref = pod_control::controller_of(&cur.metadata);
                let ref_changed = old_ref != cur_ref;
                if ref_changed
                    && old_ref.is_some()
                    && let Some(set) = self.resolve_controller(old)
                {
                    self.queue.add(informer::key_of(&*set));
                }
                if cur_ref.is_some() {
                    if let Some(set) = self.resolve_controller(cur) {
                        let key = informer::key_of(&*set);
                        let min_ready = set.min_ready_seconds();
                        if min_ready > 0 && !pod_control::is_pod_ready(old) && pod_control::is_pod_ready(cur) {
                            // Available only after minReadySeconds: look again then.
                            self.queue.add_after(key.clone(), Duration::from_secs(min_ready as u64 + 1));
                        }
                        self.queue.add(key);
                    }
                    return;
                }
                if labels_changed || ref_changed {
                    for set in self.matching_sets(cur) {
                        self.queue.add(informer::key_of(&*set));
                    }
                }
            }
            Change::Deleted(pod) => self.pod_deleted(pod),
        }
    }

    // ---- reconcile ----

    async fn process(&self, key: String) {
        match self.sync(&key).await {
            Ok(()) => self.queue.forget(&key),
            Err(e) => {
                match &e {
                    // A newer object than the cache's: the watch brings it shortly.
                    Error::Api { conflict: true, .. } => tracing::debug!(controller = K::COMPONENT, key = %key, error = %e, "sync conflicted; retrying"),
                    _ => tracing::warn!(controller = K::COMPONENT, key = %key, error = %e, "sync failed; will retry"),
                }
                self.queue.add_rate_limited(key);
            }
        }
    }

    /// Pods in `ns` (from the cache).
    fn pods_in(&self, ns: &str) -> Vec<Arc<Pod>> {
        self.pods.in_namespace(ns)
    }

    /// Upstream's `syncReplicaSet`.
    pub async fn sync(&self, key: &str) -> Result<(), Error> {
        let Some(set) = informer::get(&self.sets, key) else {
            tracing::trace!(controller = K::COMPONENT, key, "set gone");
            self.expectations.forget(key);
            return Ok(());
        };
        let ns = set.meta().namespace.clone().unwrap_or_default();
        let needs_sync = self.expectations.satisfied(key);
        let selector = set.pod_selector().map_err(Error::Selector)?;
        let active: Vec<Arc<Pod>> = self.pods_in(&ns).into_iter().filter(|p| pod_control::is_pod_active(p)).collect();
        let (pods, claim_err) = self.claim_pods(&set, selector.as_ref(), active).await;
        if let Some(e) = claim_err {
            return Err(e);
        }
        let mut manage_err = None;
        if needs_sync
            && set.meta().deletion_timestamp.is_none()
            && let Err(e) = self.manage_replicas(&set, key, &pods).await
        {
            manage_err = Some(e);
        }
        let status = calculate_status(&*set, &pods, manage_err.as_ref().map(|e| e.to_string()), Timestamp::now());
        let updated = self.update_status(&set, status).await?;
        if manage_err.is_none() {
            let s = updated.set_status();
            let min_ready = updated.min_ready_seconds();
            if min_ready > 0 && s.ready_replicas == updated.replicas() && s.available_replicas != updated.replicas() {
                self.queue.add_after(key.to_string(), Duration::from_secs(min_ready as u64));
            }
        }
        match manage_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Upstream's `ClaimPods`: the pods this set controls after adopting
    /// matching orphans and releasing owned pods that stopped matching.
    async fn claim_pods(&self, set: &K, selector: Option<&Selector>, pods: Vec<Arc<Pod>>) -> (Vec<Arc<Pod>>, Option<Error>) {
        let uid = set.meta().uid.clone().unwrap_or_default();
        let ns = set.meta().namespace.clone().unwrap_or_default();
        let set_deleting = set.meta().deletion_timestamp.is_some();
        let matches = |p: &Pod| match selector {
            Some(sel) => sel.matches(&p.metadata.labels.clone().unwrap_or_default()),
            None => false,
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let mut claimed = Vec::new();
        let mut err = None;
        let mut can_adopt: Option<bool> = None;
        for pod in pods {
            match pod_control::controller_of(&pod.metadata) {
                Some(r) if r.uid != uid => {}
                Some(_) if matches(&pod) => claimed.push(pod),
                Some(_) => {
                    if set_deleting {
                        continue;
                    }
                    tracing::info!(controller = K::COMPONENT, set = %set.name_any(), pod = %pod.name_any(), "releasing pod that no longer matches the selector");
                    match pod_control::release(&api, &pod, &uid).await {
                        Ok(_) => {}
                        Err(e) if pod_control::is_not_found(&e) => {}
                        Err(e) => err = Some(e.into()),
                    }
                }
                None => {
                    if set_deleting || !matches(&pod) || pod.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    // Upstream rechecks the owner with a live read once
                    // before adopting: a set being deleted must not adopt.
                    if can_adopt.is_none() {
                        can_adopt = Some(match self.api(&ns).get_opt(&set.name_any()).await {
                            Ok(Some(fresh)) => fresh.meta().uid.as_deref() == Some(uid.as_str()) && fresh.meta().deletion_timestamp.is_none(),
                            Ok(None) => false,
                            Err(e) => {
                                err = Some(e.into());
                                false
                            }
                        });
                    }
                    if can_adopt != Some(true) {
                        continue;
                    }
                    tracing::info!(controller = K::COMPONENT, set = %set.name_any(), pod = %pod.name_any(), "adopting orphan pod");
                    match pod_control::adopt(&api, &*pod, set).await {
                        Ok(p) => claimed.push(Arc::new(p)),
                        Err(e) if pod_control::is_not_found(&e) => {}
                        Err(e) => err = Some(e.into()),
                    }
                }
            }
        }
        (claimed, err)
    }

    /// Upstream's `manageReplicas`.
    async fn manage_replicas(&self, set: &K, key: &str, pods: &[Arc<Pod>]) -> Result<(), Error> {
        let want = set.replicas().max(0) as usize;
        let ns = set.meta().namespace.clone().unwrap_or_default();
        let owner = pod_control::object_ref(set);
        if pods.len() < want {
            let diff = (want - pods.len()).min(BURST_REPLICAS);
            let Some(template) = set.pod_template() else {
                return Err(Error::Other("the set has no pod template".into()));
            };
            self.expectations.expect_creations(key, diff);
            tracing::debug!(controller = K::COMPONENT, set = %key, need = want, creating = diff, "too few replicas");
            let controller_ref = pod_control::controller_ref(set);
            let (created, err) = pod_control::slow_start_batch(diff, 1, || {
                let owner = owner.clone();
                let controller_ref = controller_ref.clone();
                let ns = ns.clone();
                async move {
                    match self.pod_control.create_pod(&ns, template, owner, controller_ref).await {
                        Ok(_) => Ok(()),
                        // Every create fails in a terminating namespace; nothing to do.
                        Err(e) if pod_control::is_namespace_terminating(&e) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            })
            .await;
            // Creates never attempted or failed are not going to be observed.
            for _ in created..diff {
                self.expectations.creation_observed(key);
            }
            if let Some(e) = err {
                return Err(e.into());
            }
        } else if pods.len() > want {
            let diff = (pods.len() - want).min(BURST_REPLICAS);
            tracing::debug!(controller = K::COMPONENT, set = %key, need = want, deleting = diff, "too many replicas");
            let related = self.related_pods(set, pods);
            let doomed = pod_control::pods_to_delete(pods.to_vec(), &related, diff);
            self.expectations.expect_deletions(key, doomed.iter().map(|p| informer::key_of(&**p)));
            let results = futures::future::join_all(doomed.iter().map(|p| {
                let owner = owner.clone();
                let ns = ns.clone();
                async move { (p, self.pod_control.delete_pod(&ns, &p.name_any(), owner).await) }
            }))
            .await;
            let mut first_err = None;
            for (pod, r) in results {
                if let Err(e) = r {
                    // Not going to be observed.
                    self.expectations.deletion_observed(key, &informer::key_of(&**pod));
                    if !pod_control::is_not_found(&e) && first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Upstream's `getIndirectlyRelatedPods`: the pods of every set with
    /// the same controller as `set` (its Deployment's other ReplicaSets),
    /// used to spread deletions across nodes.
    fn related_pods(&self, set: &K, own: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
        let Some(owner) = pod_control::controller_of(set.meta()) else { return own.to_vec() };
        let ns = set.meta().namespace.clone();
        let sibling_uids: Vec<String> = self
            .sets
            .state()
            .into_iter()
            .filter(|s| s.meta().namespace == ns)
            .filter(|s| pod_control::controller_of(s.meta()).map(|r| r.uid == owner.uid).unwrap_or(false))
            .filter_map(|s| s.meta().uid.clone())
            .collect();
        self.pods_in(ns.as_deref().unwrap_or_default())
            .into_iter()
            .filter(|p| pod_control::controller_of(&p.metadata).map(|r| sibling_uids.contains(&r.uid)).unwrap_or(false))
            .collect()
    }

    /// Upstream's `updateReplicaSetStatus`: writes the status if it
    /// changed, re-reading once on a conflict.
    async fn update_status(&self, set: &Arc<K>, status: SetStatus) -> Result<Arc<K>, Error> {
        let current = set.set_status();
        let generation = set.meta().generation.unwrap_or(0);
        if current.replicas == status.replicas
            && current.fully_labeled_replicas == status.fully_labeled_replicas
            && current.ready_replicas == status.ready_replicas
            && current.available_replicas == status.available_replicas
            && current.observed_generation == generation
            && current.conditions == status.conditions
        {
            return Ok(set.clone());
        }
        let mut status = status;
        status.observed_generation = generation;
        let ns = set.meta().namespace.clone().unwrap_or_default();
        let api = self.api(&ns);
        let mut obj = (**set).clone();
        for attempt in 0..2 {
            obj.put_set_status(&status);
            match api.replace_status(&obj.name_any(), &PostParams::default(), &obj).await {
                Ok(updated) => return Ok(Arc::new(updated)),
                Err(e) if pod_control::is_not_found(&e) => return Ok(set.clone()),
                Err(e) if attempt == 0 && pod_control::is_conflict(&e) => match api.get_opt(&obj.name_any()).await? {
                    Some(fresh) => obj = fresh,
                    None => return Ok(set.clone()),
                },
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Other("status update kept conflicting".into()))
    }
}

/// Upstream's `calculateStatus`: counts over the set's active pods, and
/// the `ReplicaFailure` condition from the last create/delete error.
pub fn calculate_status<K: ReplicatedSet>(set: &K, pods: &[Arc<Pod>], manage_err: Option<String>, now: Timestamp) -> SetStatus {
    let mut status = set.set_status();
    let template_labels: BTreeMap<String, String> =
        set.pod_template().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
    let min_ready = set.min_ready_seconds();
    let (mut fully_labeled, mut ready, mut available) = (0, 0, 0);
    for pod in pods {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if template_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            fully_labeled += 1;
        }
        if pod_control::is_pod_ready(pod) {
            ready += 1;
            if pod_control::is_pod_available(pod, min_ready, now) {
                available += 1;
            }
        }
    }
    let failure = status.conditions.iter().position(|c| c.type_ == "ReplicaFailure");
    match (&manage_err, failure) {
        (Some(msg), None) => {
            let diff = pods.len() as i64 - set.replicas() as i64;
            let reason = if diff < 0 {
                "FailedCreate"
            } else if diff > 0 {
                "FailedDelete"
            } else {
                ""
            };
            status.conditions.push(SetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(msg.clone()),
                last_transition_time: Some(Time(now)),
            });
        }
        (None, Some(i)) => {
            status.conditions.remove(i);
        }
        _ => {}
    }
    status.replicas = pods.len() as i32;
    status.fully_labeled_replicas = fully_labeled;
    status.ready_replicas = ready;
    status.available_replicas = available;
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;

    fn rs(min_ready: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "generation": 2},
            "spec": {"replicas": 3, "minReadySeconds": min_ready, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", "tier": "fe"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap()
    }

    fn pod(labels: &[(&str, &str)], ready_secs_ago: Option<u64>) -> Arc<Pod> {
        let now = Timestamp::now();
        Arc::new(Pod {
            metadata: ObjectMeta {
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                conditions: ready_secs_ago.map(|s| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(now - Duration::from_secs(s))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn status_counts_labels_readiness_and_availability() {
        let pods = vec![
            pod(&[("app", "web"), ("tier", "fe")], Some(60)),
            pod(&[("app", "web"), ("tier", "fe")], Some(1)),
            pod(&[("app", "web")], None),
        ];
        let s = calculate_status(&rs(10), &pods, None, Timestamp::now());
        assert_eq!((s.replicas, s.fully_labeled_replicas, s.ready_replicas, s.available_replicas), (3, 2, 2, 1));
        let s = calculate_status(&rs(0), &pods, None, Timestamp::now());
        assert_eq!(s.available_replicas, 2);
    }

    #[test]
    fn replica_failure_condition_comes_and_goes() {
        let mut set = rs(0);
        let s = calculate_status(&set, &[], Some("quota exceeded".into()), Timestamp::now());
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].reason.as_deref(), Some("FailedCreate"));
        set.put_set_status(&s);
        let again = calculate_status(&set, &[], Some("other".into()), Timestamp::now());
        assert_eq!(again.conditions[0].message.as_deref(), Some("quota exceeded"), "an existing failure is kept as is");
        let cleared = calculate_status(&set, &[], None, Timestamp::now());
        assert!(cleared.conditions.is_empty());
    }

    #[test]
    fn replication_controller_selects_by_equality() {
        let rc: ReplicationController = serde_json::from_value(json!({
            "metadata": {"name": "rc"}, "spec": {"selector": {"app": "x"}}
        }))
        .unwrap();
        let sel = rc.pod_selector().unwrap().unwrap();
        assert!(sel.matches(&[("app".to_string(), "x".to_string()), ("b".into(), "c".into())].into_iter().collect()));
        assert!(!sel.matches(&[("app".to_string(), "y".to_string())].into_iter().collect()));
    }
}
