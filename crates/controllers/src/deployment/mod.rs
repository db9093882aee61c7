//! The Deployment controller (upstream's `pkg/controller/deployment`).
//!
//! A Deployment owns ReplicaSets named `<deployment>-<pod-template-hash>`,
//! one per distinct pod template; the hash (of the template and the
//! `collisionCount`) is also a label on the RS's selector and template, so
//! the sets never select each other's pods. The RS whose template equals
//! the Deployment's is the *new* one; the others are *old*.
//!
//! - **RollingUpdate**: the new RS is scaled up while the total stays
//!   within `replicas + maxSurge` (percentages round up), old ones are
//!   scaled down while the available pods stay at least
//!   `replicas - maxUnavailable` (percentages round down); unhealthy old
//!   replicas go first. An RS's available pods count at most up to its
//!   size: one just scaled down still reports the pods being deleted.
//! - **Recreate**: old RSs are scaled to 0 and their pods must be gone
//!   before the new RS is created and scaled up.
//! - Revisions: each RS carries `deployment.kubernetes.io/revision`; the
//!   new RS gets max(old)+1, so going back to an old template (what
//!   `kubectl rollout undo` does) reuses that RS with the next revision and
//!   keeps its older ones in `revision-history`. `desired-replicas` and
//!   `max-replicas` record the size the RS was scaled for, for proportional
//!   scaling when the Deployment is resized mid-rollout.
//! - `spec.paused`: only scaling, no rollout; old RSs beyond
//!   `revisionHistoryLimit` with no replicas are deleted.
//! - Status and conditions as upstream, so that `kubectl rollout status`
//!   reads them alike: `Available` (`MinimumReplicasAvailable` or not) and
//!   `Progressing` (`NewReplicaSetCreated`, `FoundNewReplicaSet`,
//!   `ReplicaSetUpdated`, `NewReplicaSetAvailable`,
//!   `ProgressDeadlineExceeded` after `progressDeadlineSeconds` without
//!   progress, `DeploymentPaused`/`DeploymentResumed`).
//! - **Automatic rollback** (Tugboat's): a Deployment annotated
//!   `tugboat.io/auto-rollback: "true"` whose new revision fails (its
//!   progress deadline passes, or a container of one of its pods restarts
//!   `tugboat.io/auto-rollback-restarts` times, default 3, or is in
//!   `CrashLoopBackOff`) gets the template of the last revision that
//!   completed (`tugboat.io/last-good-revision`) back, as `kubectl rollout
//!   undo` would do, once per failed revision, with a Warning event
//!   `AutoRollback`.
//!
//! How: informers for Deployments, ReplicaSets and pods; handlers map RS
//! and pod changes to their Deployment's key; workers sync one Deployment
//! at a time, retrying failures (conflicts with a newer object, mostly)
//! with backoff.

pub mod util;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::informer::{self, Change, IndexedStore, SharedInformers};
use crate::pod_control::{self, EventRecorder, EventType};
use crate::queue::{self, Backoff, Queue};
use util::*;

/// Deployments synced at once (upstream's `--concurrent-deployment-syncs`).
pub const WORKERS: usize = 5;
const COMPONENT: &str = "deployment-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Api { message: String, conflict: bool },
    #[error("{0}")]
    Other(String),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Api { message: pod_control::error_message(&e), conflict: pod_control::is_conflict(&e) }
    }
}

/// Runs the Deployment controller until one of its tasks ends (they do not
/// on their own: watch failures are retried).
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_shared(client.clone(), SharedInformers::new(client)).await
}

/// [`run`] on the process's shared informers.
pub async fn run_shared(client: Client, informers: SharedInformers) -> anyhow::Result<()> {
    let deployments = informers.get::<Deployment>();
    let rss = informers.get::<ReplicaSet>();
    let pods = informers.get::<Pod>();
    let (queue, workers) = queue::queue::<String>(Backoff::CONTROLLER);
    let ctl = Arc::new(DeploymentController {
        recorder: EventRecorder::new(client.clone(), COMPONENT),
        client,
        deployments: deployments.store(),
        rss: rss.store(),
        pods: pods.indexed(),
        queue,
    });
    let d_task = {
        let ctl = ctl.clone();
        deployments.run("deployments", move |c| ctl.on_deployment(&c))
    };
    let rs_task = {
        let ctl = ctl.clone();
        rss.run("replicasets", move |c| ctl.on_rs(&c))
    };
    let pod_task = {
        let ctl = ctl.clone();
        pods.run("pods", move |c| ctl.on_pod(&c))
    };
    let work = {
        let ctl = ctl.clone();
        async move {
            let _ = ctl.deployments.wait_until_ready().await;
            let _ = ctl.rss.wait_until_ready().await;
            let _ = ctl.pods.wait_until_ready().await;
            tracing::debug!("deployment caches synced");
            workers
                .run(WORKERS, move |key| {
                    let ctl = ctl.clone();
                    async move { ctl.process(key).await }
                })
                .await
        }
    };
    tokio::select! {
        _ = d_task => anyhow::bail!("deployment controller: deployment watch ended"),
        _ = rs_task => anyhow::bail!("deployment controller: replicaset watch ended"),
        _ = pod_task => anyhow::bail!("deployment controller: pod watch ended"),
        _ = work => anyhow::bail!("deployment controller workers ended"),
    }
}

pub struct DeploymentController {
    client: Client,
    deployments: Store<Deployment>,
    rss: Store<ReplicaSet>,
    pods: IndexedStore<Pod>,
    queue: Queue<String>,
    recorder: EventRecorder,
}

fn selector_of(d: &Deployment) -> Option<&LabelSelector> {
    d.spec.as_ref().map(|s| &s.selector)
}

fn selects_everything(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().map(BTreeMap::is_empty).unwrap_or(true) && sel.match_expressions.as_ref().map(Vec::is_empty).unwrap_or(true)
}

fn labels_of(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// Restart counts and waiting reasons of a pod's containers: what the
/// crash-loop check reads.
fn crash_signature(pod: &Pod) -> Vec<(i32, Option<String>)> {
    let Some(s) = pod.status.as_ref() else { return Vec::new() };
    s.init_container_statuses
        .iter()
        .flatten()
        .chain(s.container_statuses.iter().flatten())
        .map(|c| (c.restart_count, c.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.clone())))
        .collect()
}

impl DeploymentController {
    fn d_api(&self, ns: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn rs_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn event(&self, d: &Deployment, type_: EventType, reason: &str, message: String) {
        self.recorder.event(pod_control::object_ref(d), type_, reason, message);
    }

    // ---- event handlers ----

    fn on_deployment(&self, c: &Change<Deployment>) {
        let d = match c {
            Change::Added(d) | Change::Updated(_, d) | Change::Deleted(d) => d,
        };
        self.queue.add(informer::key_of(&**d));
    }

    /// The Deployment an RS's controller reference names, if it exists.
    fn deployment_for_rs(&self, rs: &ReplicaSet) -> Option<Arc<Deployment>> {
        let r = pod_control::controller_of(&rs.metadata)?;
        if r.kind != "Deployment" || crate::discovery::group_of(&r.api_version) != "apps" {
            return None;
        }
        let ns = rs.metadata.namespace.as_deref()?;
        let d = informer::get(&self.deployments, &format!("{ns}/{}", r.name))?;
        (d.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(d)
    }

    /// Deployments whose selector matches an orphan RS.
    fn deployments_matching(&self, rs: &ReplicaSet) -> Vec<Arc<Deployment>> {
        let labels = labels_of(&rs.metadata);
        if labels.is_empty() {
            return Vec::new();
        }
        self.deployments
            .state()
            .into_iter()
            .filter(|d| d.metadata.namespace == rs.metadata.namespace)
            .filter(|d| match selector_of(d) {
                Some(sel) if !selects_everything(sel) => Selector::try_from(sel.clone()).map(|s| s.matches(&labels)).unwrap_or(false),
                _ => false,
            })
            .collect()
    }

    fn enqueue(&self, d: &Deployment) {
        self.queue.add(informer::key_of(d));
    }

    fn on_rs(&self, c: &Change<ReplicaSet>) {
        match c {
            Change::Added(rs) => {
                if rs.metadata.deletion_timestamp.is_some() || pod_control::controller_of(&rs.metadata).is_some() {
                    if let Some(d) = self.deployment_for_rs(rs) {
                        self.enqueue(&d);
                    }
                    return;
                }
                for d in self.deployments_matching(rs) {
                    self.enqueue(&d);
                }
            }
            Change::Updated(old, cur) => {
                if old.metadata.resource_version == cur.metadata.resource_version {
                    return;
                }
                let old_ref = pod_control::controller_of(&old.metadata);
                let cur_ref = pod_control::controller_of(&cur.metadata);
                let ref_changed = old_ref != cur_ref;
                if ref_changed
                    && old_ref.is_some()
                    && let Some(d) = self.deployment_for_rs(old)
                {
                    self.enqueue(&d);
                }
                if cur_ref.is_some() {
                    if let Some(d) = self.deployment_for_rs(cur) {
                        self.enqueue(&d);
                    }
                    return;
                }
                if ref_changed || old.metadata.labels != cur.metadata.labels {
                    for d in self.deployments_matching(cur) {
                        self.enqueue(&d);
                    }
                }
            }
            Change::Deleted(rs) => {
                if let Some(d) = self.deployment_for_rs(rs) {
                    self.enqueue(&d);
                }
            }
        }
    }

    fn deployment_for_pod(&self, pod: &Pod) -> Option<Arc<Deployment>> {
        let r = pod_control::controller_of(&pod.metadata)?;
        if r.kind != "ReplicaSet" {
            return None;
        }
        let ns = pod.metadata.namespace.as_deref()?;
        let rs = informer::get(&self.rss, &format!("{ns}/{}", r.name))?;
        if rs.metadata.uid.as_deref() != Some(r.uid.as_str()) {
            return None;
        }
        self.deployment_for_rs(&rs)
    }

    fn on_pod(&self, c: &Change<Pod>) {
        match c {
            // Recreate waits for old pods to be gone.
            Change::Deleted(pod) => {
                if let Some(d) = self.deployment_for_pod(pod)
                    && strategy_type(&d) == "Recreate"
                {
                    self.enqueue(&d);
                }
            }
            // Automatic rollback watches for crash loops.
            Change::Updated(old, cur) => {
                if crash_signature(old) != crash_signature(cur)
                    && let Some(d) = self.deployment_for_pod(cur)
                    && auto_rollback_enabled(&d)
                {
                    self.enqueue(&d);
                }
            }
            Change::Added(pod) => {
                if crash_signature(pod).iter().any(|(r, w)| *r > 0 || w.is_some())
                    && let Some(d) = self.deployment_for_pod(pod)
                    && auto_rollback_enabled(&d)
                {
                    self.enqueue(&d);
                }
            }
        }
    }

    // ---- sync ----

    async fn process(&self, key: String) {
        match self.sync(&key).await {
            Ok(()) => self.queue.forget(&key),
            Err(e) => {
                match &e {
                    // A newer object than the cache's: the watch brings it shortly.
                    Error::Api { conflict: true, .. } => tracing::debug!(key = %key, error = %e, "deployment sync conflicted; retrying"),
                    _ => tracing::warn!(key = %key, error = %e, "deployment sync failed; will retry"),
                }
                self.queue.add_rate_limited(key);
            }
        }
    }

    /// Upstream's `syncDeployment`.
    pub async fn sync(&self, key: &str) -> Result<(), Error> {
        let Some(cached) = informer::get(&self.deployments, key) else {
            tracing::trace!(key, "deployment gone");
            return Ok(());
        };
        let mut d = (*cached).clone();
        let Some(selector) = selector_of(&d).cloned() else { return Ok(()) };
        if selects_everything(&selector) {
            self.event(&d, EventType::Warning, "SelectingAll", "This deployment is selecting all pods. A non-empty selector is required.".into());
            let status = d.status.get_or_insert_with(Default::default);
            if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
                status.observed_generation = d.metadata.generation;
                self.update_status(&mut d).await?;
            }
            return Ok(());
        }
        let mut rs_list = self.claim_replica_sets(&d, &selector).await?;
        if d.metadata.deletion_timestamp.is_some() {
            return self.sync_status_only(&mut d, &mut rs_list).await;
        }
        self.check_paused_conditions(&mut d).await?;
        if is_paused(&d) {
            return self.sync_scale(&mut d, &mut rs_list).await;
        }
        if self.is_scaling_event(&mut d, &mut rs_list).await? {
            self.sync_scale(&mut d, &mut rs_list).await?;
        } else if strategy_type(&d) == "Recreate" {
            self.rollout_recreate(&mut d, &mut rs_list).await?;
        } else {
            self.rollout_rolling(&mut d, &mut rs_list).await?;
        }
        self.auto_rollback(&mut d, &rs_list).await
    }

    /// Upstream's `getReplicaSetsForDeployment`: the RSs this Deployment
    /// controls after adopting matching orphans and releasing RSs that no
    /// longer match.
    async fn claim_replica_sets(&self, d: &Deployment, selector: &LabelSelector) -> Result<Vec<ReplicaSet>, Error> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let sel = Selector::try_from(selector.clone()).map_err(|e| Error::Other(format!("invalid selector: {e}")))?;
        let deleting = d.metadata.deletion_timestamp.is_some();
        let api = self.rs_api(&ns);
        let mut claimed = Vec::new();
        let mut err = None;
        let mut can_adopt: Option<bool> = None;
        let candidates: Vec<Arc<ReplicaSet>> =
            self.rss.state().into_iter().filter(|rs| rs.metadata.namespace.as_deref() == Some(ns.as_str())).collect();
        for rs in candidates {
            let matches = sel.matches(&labels_of(&rs.metadata));
            match pod_control::controller_of(&rs.metadata) {
                Some(r) if r.uid != uid => {}
                Some(_) if matches => claimed.push((*rs).clone()),
                Some(_) => {
                    if deleting {
                        continue;
                    }
                    tracing::info!(deployment = %d.name_any(), replicaset = %rs.name_any(), "releasing replica set that no longer matches");
                    match pod_control::release(&api, &*rs, &uid).await {
                        Ok(_) => {}
                        Err(e) if pod_control::is_not_found(&e) => {}
                        Err(e) => err = Some(e.into()),
                    }
                }
                None => {
                    if deleting || !matches || rs.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if can_adopt.is_none() {
                        can_adopt = Some(match self.d_api(&ns).get_opt(&d.name_any()).await? {
                            Some(fresh) => fresh.metadata.uid.as_deref() == Some(uid.as_str()) && fresh.metadata.deletion_timestamp.is_none(),
                            None => false,
                        });
                    }
                    if can_adopt != Some(true) {
                        continue;
                    }
                    tracing::info!(deployment = %d.name_any(), replicaset = %rs.name_any(), "adopting orphan replica set");
                    match pod_control::adopt(&api, &*rs, d).await {
                        Ok(adopted) => claimed.push(adopted),
                        Err(e) if pod_control::is_not_found(&e) => {}
                        Err(e) => err = Some(e.into()),
                    }
                }
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(claimed),
        }
    }

    /// Pods of the given RSs, by RS uid (upstream's `getPodMapForDeployment`).
    fn pod_map(&self, d: &Deployment, rs_list: &[ReplicaSet]) -> HashMap<String, Vec<Arc<Pod>>> {
        let mut map: HashMap<String, Vec<Arc<Pod>>> = rs_list.iter().filter_map(|rs| rs.metadata.uid.clone()).map(|u| (u, Vec::new())).collect();
        let sel = selector_of(d).and_then(|s| Selector::try_from(s.clone()).ok());
        for pod in self.pods.in_namespace(d.metadata.namespace.as_deref().unwrap_or_default()) {
            if !sel.as_ref().map(|s| s.matches(&labels_of(&pod.metadata))).unwrap_or(false) {
                continue;
            }
            if let Some(r) = pod_control::controller_of(&pod.metadata)
                && let Some(v) = map.get_mut(&r.uid)
            {
                v.push(pod.clone());
            }
        }
        map
    }

    // ---- writes ----

    /// Writes `d.status` through the status subresource; `d` becomes what
    /// the server returned.
    async fn update_status(&self, d: &mut Deployment) -> Result<(), Error> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let updated = self.d_api(&ns).replace_status(&d.name_any(), &PostParams::default(), d).await?;
        *d = updated;
        Ok(())
    }

    /// Sets the Deployment's revision annotation. Written to the object
    /// itself: `deployments/status` of a Tugboat server keeps metadata (see
    /// the crate's tests), where upstream's lets annotations through.
    async fn set_deployment_revision(&self, d: &mut Deployment, revision: &str) -> Result<(), Error> {
        if annotation(&d.metadata, REVISION_ANNOTATION) == Some(revision) {
            return Ok(());
        }
        self.patch_annotations(d, json!({ REVISION_ANNOTATION: revision })).await
    }

    /// A merge patch of the Deployment's annotations; `d` takes the new
    /// metadata. If the spec changed meanwhile the sync restarts.
    async fn patch_annotations(&self, d: &mut Deployment, annotations: serde_json::Value) -> Result<(), Error> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let mut patch = json!({"metadata": {"annotations": annotations}});
        // The resourceVersion makes it conditional: no write over a newer object.
        patch["metadata"]["resourceVersion"] = json!(d.metadata.resource_version);
        let updated = self.d_api(&ns).patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
        if updated.metadata.generation != d.metadata.generation {
            return Err(Error::Other("the deployment changed during its sync".into()));
        }
        d.metadata = updated.metadata;
        Ok(())
    }

    fn replace_in(rs_list: &mut Vec<ReplicaSet>, rs: &ReplicaSet) {
        match rs_list.iter_mut().find(|r| r.metadata.uid == rs.metadata.uid) {
            Some(slot) => *slot = rs.clone(),
            None => rs_list.push(rs.clone()),
        }
    }

    /// Upstream's `getAllReplicaSetsAndSyncRevision`: the new RS (created
    /// if `create` and missing) and the old ones.
    async fn get_all_and_sync_revision(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), Error> {
        let new_uid = find_new_rs(d, rs_list).and_then(|rs| rs.metadata.uid.clone());
        let old: Vec<ReplicaSet> = rs_list.iter().filter(|rs| new_uid.is_none() || rs.metadata.uid != new_uid).cloned().collect();
        let new_rs = self.get_new_rs(d, rs_list, &old, create).await?;
        Ok((new_rs, old))
    }

    /// Upstream's `getNewReplicaSet`.
    async fn get_new_rs(&self, d: &mut Deployment, rs_list: &mut Vec<ReplicaSet>, old: &[ReplicaSet], create: bool) -> Result<Option<ReplicaSet>, Error> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let new_revision = max_revision(old) + 1;
        if let Some(existing) = find_new_rs(d, rs_list).cloned() {
            let mut copy = existing.clone();
            let annotations_updated = set_new_rs_annotations(d, &mut copy, new_revision, true);
            let min_ready = min_ready_seconds(d);
            let min_ready_update = copy.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0) != min_ready;
            if annotations_updated || min_ready_update {
                copy.spec.get_or_insert_with(Default::default).min_ready_seconds = Some(min_ready);
                let updated = self.rs_api(&ns).replace(&copy.name_any(), &PostParams::default(), &copy).await?;
                Self::replace_in(rs_list, &updated);
                return Ok(Some(updated));
            }
            let revision = annotation(&copy.metadata, REVISION_ANNOTATION).unwrap_or("").to_string();
            self.set_deployment_revision(d, &revision).await?;
            let has_progressing = d.status.as_ref().and_then(|s| get_condition(s, "Progressing")).is_some();
            if has_progress_deadline(d) && !has_progressing {
                let msg = format!("Found new replica set {:?}", copy.name_any());
                set_condition(d.status.get_or_insert_with(Default::default), new_condition("Progressing", "True", FOUND_NEW_RS_REASON, msg));
                self.update_status(d).await?;
            }
            return Ok(Some(copy));
        }
        if !create {
            return Ok(None);
        }

        let spec = d.spec.clone().unwrap_or_default();
        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&spec.template, collision_count);
        let mut template = spec.template.clone();
        template.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(BTreeMap::new).insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector.match_labels.get_or_insert_with(BTreeMap::new).insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", d.name_any());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                owner_references: Some(vec![pod_control::controller_ref(d)]),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec { replicas: Some(0), min_ready_seconds: Some(spec.min_ready_seconds.unwrap_or(0)), selector, template: Some(template) }),
            status: None,
        };
        let mut all = old.to_vec();
        all.push(rs.clone());
        let replicas = new_rs_new_replicas(d, &all, &rs);
        set_rs_replicas(&mut rs, replicas);
        set_new_rs_annotations(d, &mut rs, new_revision, false);

        let api = self.rs_api(&ns);
        let mut already_exists = false;
        let created = match api.create(&PostParams::default(), &rs).await {
            Ok(created) => created,
            Err(kube::Error::Api(s)) if s.reason == "AlreadyExists" => {
                already_exists = true;
                let existing = api.get_opt(&name).await?;
                match existing {
                    Some(existing)
                        if pod_control::controller_of(&existing.metadata).map(|r| Some(&r.uid) == d.metadata.uid.as_ref()).unwrap_or(false)
                            && existing.spec.as_ref().and_then(|s| s.template.as_ref()).map(|t| equal_ignore_hash(t, &spec.template)).unwrap_or(false) =>
                    {
                        existing
                    }
                    _ => {
                        // A hash collision: another template hashed to this
                        // name. Count it, which changes the hash, and retry.
                        let status = d.status.get_or_insert_with(Default::default);
                        let before = status.collision_count.unwrap_or(0);
                        status.collision_count = Some(before + 1);
                        self.update_status(d).await?;
                        tracing::info!(deployment = %d.name_any(), collision_count = before + 1, "hash collision; bumped collisionCount");
                        return Err(Error::Other(format!("replica set {name:?} exists with another template (hash collision)")));
                    }
                }
            }
            Err(e) if pod_control::is_namespace_terminating(&e) => return Err(e.into()),
            Err(e) => {
                let msg = format!("Failed to create new replica set {name:?}: {}", pod_control::error_message(&e));
                if has_progress_deadline(d) {
                    set_condition(d.status.get_or_insert_with(Default::default), new_condition("Progressing", "False", FAILED_RS_CREATE_REASON, msg.clone()));
                    let _ = self.update_status(d).await;
                }
                self.event(d, EventType::Warning, FAILED_RS_CREATE_REASON, msg);
                return Err(e.into());
            }
        };
        if !already_exists && replicas > 0 {
            self.event(d, EventType::Normal, "ScalingReplicaSet", format!("Scaled up replica set {} from 0 to {replicas}", created.name_any()));
        }
        Self::replace_in(rs_list, &created);
        self.set_deployment_revision(d, &new_revision.to_string()).await?;
        if !already_exists && has_progress_deadline(d) {
            let msg = format!("Created new replica set {:?}", created.name_any());
            set_condition(d.status.get_or_insert_with(Default::default), new_condition("Progressing", "True", NEW_RS_NEW_REASON, msg));
            self.update_status(d).await?;
        }
        Ok(Some(created))
    }

    /// Upstream's `scaleReplicaSetAndRecordEvent`.
    async fn scale_and_record(&self, d: &Deployment, rs: &ReplicaSet, new_scale: i32) -> Result<(bool, ReplicaSet), Error> {
        if rs_replicas(rs) == new_scale {
            return Ok((false, rs.clone()));
        }
        self.scale_rs(d, rs, new_scale).await
    }

    /// Upstream's `scaleReplicaSet`: the size and the replica annotations.
    async fn scale_rs(&self, d: &Deployment, rs: &ReplicaSet, new_scale: i32) -> Result<(bool, ReplicaSet), Error> {
        let size_changes = rs_replicas(rs) != new_scale;
        let (desired, max) = (replicas(d), replicas(d) + max_surge(d));
        if !size_changes && !replicas_annotations_need_update(rs, desired, max) {
            return Ok((false, rs.clone()));
        }
        let old_scale = rs_replicas(rs);
        let mut copy = rs.clone();
        set_rs_replicas(&mut copy, new_scale);
        set_replicas_annotations(&mut copy, desired, max);
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let updated = self.rs_api(&ns).replace(&rs.name_any(), &PostParams::default(), &copy).await?;
        if size_changes {
            let dir = if old_scale < new_scale { "up" } else { "down" };
            tracing::debug!(deployment = %d.name_any(), replicaset = %rs.name_any(), from = old_scale, to = new_scale, "scaled replica set");
            self.event(d, EventType::Normal, "ScalingReplicaSet", format!("Scaled {dir} replica set {} from {old_scale} to {new_scale}", rs.name_any()));
        }
        Ok((size_changes, updated))
    }

    // ---- rolling update ----

    /// Upstream's `rolloutRolling`.
    async fn rollout_rolling(&self, d: &mut Deployment, rs_list: &mut Vec<ReplicaSet>) -> Result<(), Error> {
        let (new_rs, old) = self.get_all_and_sync_revision(d, rs_list, true).await?;
        let Some(new_rs) = new_rs else { return Err(Error::Other("no new replica set".into())) };
        let mut all = old.clone();
        all.push(new_rs.clone());
        if self.reconcile_new_rs(d, &all, &new_rs).await? {
            return self.sync_rollout_status(d, &all, Some(&new_rs)).await;
        }
        if self.reconcile_old_rss(d, &all, filter_active(&old), &new_rs).await? {
            return self.sync_rollout_status(d, &all, Some(&new_rs)).await;
        }
        if deployment_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup_deployment(d, &old).await?;
        }
        self.sync_rollout_status(d, &all, Some(&new_rs)).await
    }

    async fn reconcile_new_rs(&self, d: &Deployment, all: &[ReplicaSet], new_rs: &ReplicaSet) -> Result<bool, Error> {
        let want = replicas(d);
        if rs_replicas(new_rs) == want {
            return Ok(false);
        }
        if rs_replicas(new_rs) > want {
            return Ok(self.scale_and_record(d, new_rs, want).await?.0);
        }
        let n = new_rs_new_replicas(d, all, new_rs);
        Ok(self.scale_and_record(d, new_rs, n).await?.0)
    }

    /// Upstream's `reconcileOldReplicaSets` (the decisions are
    /// [`max_old_scale_down`], [`unhealthy_cleanup_sizes`] and
    /// [`rolling_scale_down_sizes`]).
    async fn reconcile_old_rss(&self, d: &Deployment, all: &[ReplicaSet], old: Vec<ReplicaSet>, new_rs: &ReplicaSet) -> Result<bool, Error> {
        if replica_count(&old) == 0 {
            return Ok(false);
        }
        let max_scaled_down = max_old_scale_down(d, all, new_rs);
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // Unhealthy old replicas first: removing them costs no availability.
        let (old, cleaned) = self.cleanup_unhealthy(d, old, max_scaled_down).await?;
        let mut all = old.clone();
        all.push(new_rs.clone());
        let scaled = self.scale_down_old_for_rolling(d, &all, old).await?;
        Ok(cleaned + scaled > 0)
    }

    /// Upstream's `cleanupUnhealthyReplicas`: the old RSs, oldest first,
    /// as written, and how many replicas were removed.
    async fn cleanup_unhealthy(&self, d: &Deployment, mut old: Vec<ReplicaSet>, max_cleanup: i32) -> Result<(Vec<ReplicaSet>, i32), Error> {
        sort_by_creation(&mut old);
        let (sizes, total) = unhealthy_cleanup_sizes(&old, max_cleanup);
        for (slot, size) in old.iter_mut().zip(sizes) {
            if size != rs_replicas(slot) {
                let (_, updated) = self.scale_and_record(d, slot, size).await?;
                *slot = updated;
            }
        }
        Ok((old, total))
    }

    /// Upstream's `scaleDownOldReplicaSetsForRollingUpdate`.
    async fn scale_down_old_for_rolling(&self, d: &Deployment, all: &[ReplicaSet], mut old: Vec<ReplicaSet>) -> Result<i32, Error> {
        sort_by_creation(&mut old);
        let (sizes, total) = rolling_scale_down_sizes(d, all, &old);
        if total > 0 {
            tracing::debug!(
                deployment = %d.name_any(),
                available = available_count(all),
                available_within_spec = available_count_within_spec(all),
                scaling_down = total,
                "old replica sets have replicas available beyond the minimum"
            );
        }
        for (target, size) in old.iter().zip(sizes) {
            if size != rs_replicas(target) {
                self.scale_and_record(d, target, size).await?;
            }
        }
        Ok(total)
    }

    // ---- recreate ----

    /// Upstream's `rolloutRecreate`.
    async fn rollout_recreate(&self, d: &mut Deployment, rs_list: &mut Vec<ReplicaSet>) -> Result<(), Error> {
        // No new RS yet: it is created only once the old pods are gone.
        let (mut new_rs, mut old) = self.get_all_and_sync_revision(d, rs_list, false).await?;
        let mut all = old.clone();
        all.extend(new_rs.clone());
        let mut scaled_down = false;
        for rs in filter_active(&old) {
            if self.scale_and_record(d, &rs, 0).await?.0 {
                scaled_down = true;
            }
        }
        if scaled_down {
            return self.sync_rollout_status(d, &all, new_rs.as_ref()).await;
        }
        let pod_map = self.pod_map(d, rs_list);
        if old_pods_running(new_rs.as_ref(), &old, &pod_map) {
            return self.sync_rollout_status(d, &all, new_rs.as_ref()).await;
        }
        if new_rs.is_none() {
            let (n, o) = self.get_all_and_sync_revision(d, rs_list, true).await?;
            new_rs = n;
            old = o;
            all = old.clone();
            all.extend(new_rs.clone());
        }
        if let Some(n) = &new_rs {
            self.scale_and_record(d, n, replicas(d)).await?;
        }
        if deployment_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup_deployment(d, &old).await?;
        }
        self.sync_rollout_status(d, &all, new_rs.as_ref()).await
    }

    // ---- scaling and pausing ----

    /// Upstream's `isScalingEvent`: an active RS was sized for another
    /// replica count than the Deployment's.
    async fn is_scaling_event(&self, d: &mut Deployment, rs_list: &mut Vec<ReplicaSet>) -> Result<bool, Error> {
        let (new_rs, old) = self.get_all_and_sync_revision(d, rs_list, false).await?;
        let mut all = old;
        all.extend(new_rs);
        Ok(filter_active(&all).iter().any(|rs| {
            annotation(&rs.metadata, DESIRED_REPLICAS_ANNOTATION).and_then(|v| v.parse::<i32>().ok()).map(|desired| desired != replicas(d)).unwrap_or(false)
        }))
    }

    /// Upstream's `sync`: scaling (and cleanup when paused), no rollout.
    async fn sync_scale(&self, d: &mut Deployment, rs_list: &mut Vec<ReplicaSet>) -> Result<(), Error> {
        let (new_rs, old) = self.get_all_and_sync_revision(d, rs_list, false).await?;
        self.scale(d, new_rs.as_ref(), &old).await?;
        if is_paused(d) {
            self.cleanup_deployment(d, &old).await?;
        }
        // The status reads the sizes the scale just wrote.
        let mut all: Vec<ReplicaSet> = old.iter().map(|rs| self.fresher(rs)).collect();
        let new_rs = new_rs.map(|rs| self.fresher(&rs));
        all.extend(new_rs.clone());
        self.sync_deployment_status(d, &all, new_rs.as_ref()).await
    }

    /// The cached RS if it is newer than `rs`.
    fn fresher(&self, rs: &ReplicaSet) -> ReplicaSet {
        let key = informer::key_of(rs);
        match informer::get(&self.rss, &key) {
            Some(c) if c.metadata.uid == rs.metadata.uid => {
                let rv = |r: &ReplicaSet| r.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                if rv(&c) > rv(rs) { (*c).clone() } else { rs.clone() }
            }
            _ => rs.clone(),
        }
    }

    /// Upstream's `scale`: resizes the RSs to a new replica count, in
    /// proportion to their sizes during a rolling update.
    async fn scale(&self, d: &Deployment, new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Result<(), Error> {
        if let Some(target) = find_active_or_latest(new_rs, old) {
            if rs_replicas(&target) == replicas(d) {
                return Ok(());
            }
            self.scale_and_record(d, &target, replicas(d)).await?;
            return Ok(());
        }
        if is_saturated(d, new_rs) {
            for rs in filter_active(old) {
                self.scale_and_record(d, &rs, 0).await?;
            }
            return Ok(());
        }
        if !is_rolling_update(d) {
            return Ok(());
        }
        let mut all = old.to_vec();
        all.extend(new_rs.cloned());
        let mut all = filter_active(&all);
        let current = replica_count(&all);
        let allowed = if replicas(d) > 0 { replicas(d) + max_surge(d) } else { 0 };
        let to_add = allowed - current;
        let by_creation = |a: &ReplicaSet, b: &ReplicaSet| creation(a).cmp(&creation(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name));
        if to_add > 0 {
            // Largest first, newer first among equals.
            all.sort_by(|a, b| rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| by_creation(b, a)));
        } else if to_add < 0 {
            // Largest first, older first among equals.
            all.sort_by(|a, b| rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| by_creation(a, b)));
        }
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::with_capacity(all.len());
        for rs in &all {
            if to_add != 0 {
                let p = proportion(rs, d, to_add, added);
                sizes.push(rs_replicas(rs) + p);
                added += p;
            } else {
                sizes.push(rs_replicas(rs));
            }
        }
        for (i, rs) in all.iter().enumerate() {
            if i == 0 && to_add != 0 {
                sizes[0] = (sizes[0] + to_add - added).max(0);
            }
            self.scale_rs(d, rs, sizes[i]).await?;
        }
        Ok(())
    }

    /// Upstream's `checkPausedConditions`.
    async fn check_paused_conditions(&self, d: &mut Deployment) -> Result<(), Error> {
        if !has_progress_deadline(d) {
            return Ok(());
        }
        let status = d.status.clone().unwrap_or_default();
        let cond = get_condition(&status, "Progressing");
        if cond.and_then(|c| c.reason.as_deref()) == Some(TIMED_OUT_REASON) {
            return Ok(());
        }
        let paused_cond = cond.and_then(|c| c.reason.as_deref()) == Some(PAUSED_REASON);
        let new = if is_paused(d) && !paused_cond {
            new_condition("Progressing", "Unknown", PAUSED_REASON, "Deployment is paused".into())
        } else if !is_paused(d) && paused_cond {
            new_condition("Progressing", "Unknown", RESUMED_REASON, "Deployment is resumed".into())
        } else {
            return Ok(());
        };
        set_condition(d.status.get_or_insert_with(Default::default), new);
        self.update_status(d).await
    }

    /// Upstream's `cleanupDeployment`: deletes the oldest RSs beyond
    /// `revisionHistoryLimit` that have no replicas.
    async fn cleanup_deployment(&self, d: &Deployment, old: &[ReplicaSet]) -> Result<(), Error> {
        let Some(limit) = revision_history_limit(d) else { return Ok(()) };
        let mut cleanable: Vec<ReplicaSet> = old.iter().filter(|rs| rs.metadata.deletion_timestamp.is_none()).cloned().collect();
        let diff = cleanable.len() as i64 - limit as i64;
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| {
            revision(a).cmp(&revision(b)).then_with(|| creation(a).cmp(&creation(b))).then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        for rs in cleanable.iter().take(diff as usize) {
            let observed = rs.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
            if rs_status_replicas(rs) != 0 || rs_replicas(rs) != 0 || rs.metadata.generation.unwrap_or(0) > observed || rs.metadata.deletion_timestamp.is_some() {
                continue;
            }
            tracing::debug!(deployment = %d.name_any(), replicaset = %rs.name_any(), "deleting old replica set beyond the revision history limit");
            let ns = rs.metadata.namespace.clone().unwrap_or_default();
            match self.rs_api(&ns).delete(&rs.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if pod_control::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    // ---- status ----

    async fn sync_status_only(&self, d: &mut Deployment, rs_list: &mut Vec<ReplicaSet>) -> Result<(), Error> {
        let (new_rs, old) = self.get_all_and_sync_revision(d, rs_list, false).await?;
        let mut all = old;
        all.extend(new_rs.clone());
        self.sync_deployment_status(d, &all, new_rs.as_ref()).await
    }

    /// Upstream's `syncDeploymentStatus`.
    async fn sync_deployment_status(&self, d: &mut Deployment, all: &[ReplicaSet], new_rs: Option<&ReplicaSet>) -> Result<(), Error> {
        let status = calculate_status(all, new_rs, d);
        if status_equal(&d.status.clone().unwrap_or_default(), &status) {
            return Ok(());
        }
        d.status = Some(status);
        self.update_status(d).await
    }

    /// Upstream's `syncRolloutStatus`: the status with the `Progressing`
    /// condition estimated against the progress deadline.
    async fn sync_rollout_status(&self, d: &mut Deployment, all: &[ReplicaSet], new_rs: Option<&ReplicaSet>) -> Result<(), Error> {
        let mut status = calculate_status(all, new_rs, d);
        if !has_progress_deadline(d) {
            remove_condition(&mut status, "Progressing");
        }
        let old_status = d.status.clone().unwrap_or_default();
        let current = get_condition(&old_status, "Progressing").cloned();
        let is_complete = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE_REASON);
        if has_progress_deadline(d) && !is_complete {
            let subject = |what: &str| match new_rs {
                Some(rs) => format!("ReplicaSet {:?} {what}", rs.name_any()),
                None => format!("Deployment {:?} {what}", d.name_any()),
            };
            if deployment_complete(d, &status) {
                set_condition(&mut status, new_condition("Progressing", "True", NEW_RS_AVAILABLE_REASON, subject("has successfully progressed.")));
            } else if deployment_progressing(d, &status) {
                let mut cond = new_condition("Progressing", "True", RS_UPDATED_REASON, subject("is progressing."));
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        cond.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, cond);
            } else if deployment_timed_out(d, &status, Timestamp::now()) {
                set_condition(&mut status, new_condition("Progressing", "False", TIMED_OUT_REASON, subject("has timed out progressing.")));
            }
        }
        match replica_failure(all, new_rs) {
            Some(c) => set_condition(&mut status, c),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        if status_equal(&old_status, &status) {
            self.requeue_stuck(d, &status);
            return Ok(());
        }
        d.status = Some(status);
        self.update_status(d).await
    }

    /// Upstream's `requeueStuckDeployment`: looks again when the progress
    /// deadline would pass.
    fn requeue_stuck(&self, d: &Deployment, status: &DeploymentStatus) {
        let Some(deadline) = progress_deadline(d) else { return };
        let old = d.status.clone().unwrap_or_default();
        let Some(cur) = get_condition(&old, "Progressing") else { return };
        if deployment_complete(d, status) || cur.reason.as_deref() == Some(TIMED_OUT_REASON) {
            return;
        }
        let Some(updated) = cur.last_update_time.as_ref() else { return };
        let due = updated.0 + Duration::from_secs(deadline.max(0) as u64);
        let after = due.duration_since(Timestamp::now());
        let key = informer::key_of(d);
        if after.as_secs() < 1 {
            self.queue.add_rate_limited(key);
        } else {
            let after = Duration::from_secs(after.as_secs() as u64) + Duration::from_millis(after.subsec_millis().max(0) as u64);
            self.queue.add_after(key, after + Duration::from_secs(1));
        }
    }

    // ---- automatic rollback ----

    /// Tugboat's automatic rollback (see the module docs). Also records
    /// the last revision that completed.
    async fn auto_rollback(&self, d: &mut Deployment, rs_list: &[ReplicaSet]) -> Result<(), Error> {
        if !auto_rollback_enabled(d) || is_paused(d) {
            return Ok(());
        }
        let Some(new_rs) = find_new_rs(d, rs_list).cloned() else { return Ok(()) };
        let rev = revision(&new_rs);
        if rev == 0 {
            return Ok(());
        }
        let last_good: Option<i64> = annotation(&d.metadata, LAST_GOOD_REVISION_ANNOTATION).and_then(|v| v.parse().ok());
        let status = d.status.clone().unwrap_or_default();
        if deployment_complete(d, &status) && rs_replicas(&new_rs) == replicas(d) {
            if last_good != Some(rev) {
                tracing::info!(deployment = %d.name_any(), revision = rev, "revision completed; recording it as the last good one");
                self.patch_annotations(d, json!({ LAST_GOOD_REVISION_ANNOTATION: rev.to_string() })).await?;
            }
            return Ok(());
        }
        if last_good == Some(rev) {
            // This revision completed before: a later failure is not a failed rollout.
            return Ok(());
        }
        if annotation(&d.metadata, ROLLED_BACK_FROM_ANNOTATION).and_then(|v| v.parse::<i64>().ok()) == Some(rev) {
            return Ok(());
        }
        let Some(why) = self.rollout_failure(d, &new_rs) else { return Ok(()) };
        let Some(good) = last_good else {
            tracing::warn!(deployment = %d.name_any(), revision = rev, reason = %why, "rollout failed but no revision completed before; not rolling back");
            return Ok(());
        };
        let target = rs_list
            .iter()
            .filter(|rs| rs.metadata.uid != new_rs.metadata.uid)
            .find(|rs| revision(rs) == good || revision_history(rs).contains(&good));
        let Some(target) = target else {
            // The last good revision is the failing RS itself (rolled back to
            // before, failing now), or it was pruned: nothing to go back to.
            tracing::warn!(deployment = %d.name_any(), revision = rev, last_good = good, reason = %why, "rollout failed but the last good revision is not available; not rolling back");
            return Ok(());
        };
        let Some(template) = target.spec.as_ref().and_then(|s| s.template.as_ref()) else { return Ok(()) };

        // What `kubectl rollout undo` does: the old RS's template (without
        // the hash label) and annotations back into the Deployment.
        let mut updated = d.clone();
        updated.metadata.managed_fields = None;
        if let Some(spec) = updated.spec.as_mut() {
            spec.template = strip_hash(template);
        }
        let annotations = updated.metadata.annotations.get_or_insert_with(BTreeMap::new);
        for (k, v) in target.metadata.annotations.iter().flatten() {
            if !skip_copy_annotation(k) && k != AUTO_ROLLBACK_ANNOTATION && k != AUTO_ROLLBACK_RESTARTS_ANNOTATION {
                annotations.insert(k.clone(), v.clone());
            }
        }
        annotations.insert(ROLLED_BACK_FROM_ANNOTATION.into(), rev.to_string());
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let replaced = self.d_api(&ns).replace(&d.name_any(), &PostParams::default(), &updated).await?;
        let message = format!("Rolled back from revision {rev} to revision {good} (replica set {}): {why}", target.name_any());
        tracing::warn!(deployment = %d.name_any(), "{message}");
        self.event(&replaced, EventType::Warning, "AutoRollback", message);
        *d = replaced;
        Ok(())
    }

    /// Why the new RS's rollout failed, if it did.
    fn rollout_failure(&self, d: &Deployment, new_rs: &ReplicaSet) -> Option<String> {
        let status = d.status.clone().unwrap_or_default();
        if let Some(c) = get_condition(&status, "Progressing") {
            let names_new_rs = c.message.as_deref().map(|m| m.contains(&format!("{:?}", new_rs.name_any()))).unwrap_or(false);
            if c.status == "False" && c.reason.as_deref() == Some(TIMED_OUT_REASON) && names_new_rs {
                return Some(format!("progress deadline exceeded ({})", c.message.clone().unwrap_or_default()));
            }
        }
        let threshold = annotation(&d.metadata, AUTO_ROLLBACK_RESTARTS_ANNOTATION)
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_AUTO_ROLLBACK_RESTARTS);
        let uid = new_rs.metadata.uid.as_deref()?;
        for pod in self.pods.in_namespace(new_rs.metadata.namespace.as_deref().unwrap_or_default()) {
            if !pod_control::is_pod_active(&pod) {
                continue;
            }
            if pod_control::controller_of(&pod.metadata).map(|r| r.uid != uid).unwrap_or(true) {
                continue;
            }
            let Some(s) = pod.status.as_ref() else { continue };
            for c in s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten()) {
                let waiting = c.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.as_deref());
                if c.restart_count >= threshold || waiting == Some("CrashLoopBackOff") {
                    return Some(format!(
                        "container {} of pod {} is crash-looping ({} restarts{})",
                        c.name,
                        pod.name_any(),
                        c.restart_count,
                        waiting.map(|w| format!(", {w}")).unwrap_or_default()
                    ));
                }
            }
        }
        None
    }
}

pub fn auto_rollback_enabled(d: &Deployment) -> bool {
    annotation(&d.metadata, AUTO_ROLLBACK_ANNOTATION) == Some("true")
}

/// Upstream's `oldPodsRunning`: old RSs still report pods, or pods of
/// theirs are not finished.
fn old_pods_running(new_rs: Option<&ReplicaSet>, old: &[ReplicaSet], pod_map: &HashMap<String, Vec<Arc<Pod>>>) -> bool {
    if actual_replica_count(old) > 0 {
        return true;
    }
    let new_uid = new_rs.and_then(|rs| rs.metadata.uid.clone());
    pod_map.iter().any(|(uid, pods)| {
        Some(uid) != new_uid.as_ref()
            && pods.iter().any(|p| !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed" | "Succeeded")))
    })
}

/// Upstream's `getReplicaFailures`: the new RS's `ReplicaFailure`
/// condition, else any old one's, as a Deployment condition.
fn replica_failure(all: &[ReplicaSet], new_rs: Option<&ReplicaSet>) -> Option<DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        rs.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "ReplicaFailure")).map(|c| {
            DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            }
        })
    };
    new_rs.and_then(failure).or_else(|| all.iter().find_map(failure))
}
