//! The Job controller (upstream's `pkg/controller/job`, as of 1.32/1.33),
//! with the TTL-after-finished controller (`pkg/controller/ttlafterfinished`)
//! folded in.
//!
//! - **Selector**: a Job without `spec.selector` (and without
//!   `manualSelector: true`) gets upstream's generated one first, in one
//!   update: `batch.kubernetes.io/controller-uid: <uid>`, and the template
//!   labels `batch.kubernetes.io/controller-uid`, `controller-uid`,
//!   `batch.kubernetes.io/job-name`, `job-name` (what upstream's API
//!   strategy does on create, which the API server does not do yet).
//! - **Pods**: up to `parallelism` active, never more than the completions
//!   left; NonIndexed pods are named `<job>-<random>`, Indexed ones
//!   `<job>-<index>-<random>` with the `batch.kubernetes.io/job-completion-index`
//!   annotation and label, hostname `<job>-<index>` and a
//!   `JOB_COMPLETION_INDEX` env var in every container. Every pod carries
//!   the `batch.kubernetes.io/job-tracking` finalizer until it is counted.
//! - **Counting**: finished pods go to `status.uncountedTerminatedPods`
//!   first, then lose their finalizer, then move to `succeeded`/`failed`
//!   (or `completedIndexes`), so a crash never counts a pod twice or never.
//! - **Failure**: more failures than `backoffLimit` → `FailureTarget`, then
//!   `Failed` (reason BackoffLimitExceeded); past `activeDeadlineSeconds` →
//!   DeadlineExceeded. Failed pods are replaced after an exponential
//!   backoff: 10s doubling, at most 6 minutes.
//! - **Success**: `completions` successes (or one, without completions) →
//!   `SuccessCriteriaMet`, then `Complete` with `completionTime`, once no
//!   pod is left terminating (1.31+'s delayed terminal conditions).
//! - **Suspend** deletes the active pods and sets `Suspended`; resuming
//!   resets `startTime`.
//! - **TTL**: a finished Job with `ttlSecondsAfterFinished` is deleted that
//!   long after it finished (Foreground propagation with a UID
//!   precondition, as upstream's TTL controller does).
//! - **Events** as upstream: SuccessfulCreate `Created pod: <pod>`,
//!   SuccessfulDelete, Completed `Job completed`, BackoffLimitExceeded
//!   `Job has reached the specified backoff limit`, DeadlineExceeded,
//!   Suspended/Resumed.

pub mod indexes;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::core::params::Preconditions;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinSet;

use crate::informer::{Change, IndexedStore, SharedInformers};
use crate::kit::pods::{self, is_terminating, phase};
use crate::kit::selector::Selector;
use crate::kit::{self, Clock, Key};
use crate::pod_control::{
    EventRecorder, EventType, Expectations, controller_of, controller_ref, error_message, is_conflict, is_namespace_terminating, is_not_found,
    is_pod_active as is_active, is_pod_ready as is_ready, object_ref, pod_from_template, slow_start_batch,
};
use crate::queue::{self, Backoff, Queue};

/// The finalizer that keeps a pod until the Job counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";
/// The controller that manages Jobs without `spec.managedBy` (or naming it).
pub const CONTROLLER_NAME: &str = "kubernetes.io/job-controller";

/// Upstream's `SlowStartInitialBatchSize`.
const SLOW_START_INITIAL_BATCH: usize = 1;
/// Upstream's `MaxPodCreateDeletePerSync`.
const MAX_POD_CREATE_DELETE_PER_SYNC: usize = 500;
/// Upstream's `MaxUncountedPods`: flush before the status grows too big.
const MAX_UNCOUNTED_PODS: usize = 500;

/// Tunables; [`Config::default`] is upstream's.
#[derive(Clone)]
pub struct Config {
    /// Jobs synced at once (upstream `--concurrent-job-syncs`: 5).
    pub workers: usize,
    /// First delay before replacing a failed pod (`DefaultJobPodFailureBackOff`: 10s).
    pub pod_failure_backoff: Duration,
    /// Longest such delay (`MaxJobPodFailureBackOff`: 6 minutes).
    pub max_pod_failure_backoff: Duration,
    pub clock: Clock,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 5,
            pod_failure_backoff: Duration::from_secs(10),
            max_pod_failure_backoff: Duration::from_secs(360),
            clock: kit::system_clock(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Api(&'static str, #[source] kube::Error),
    #[error("invalid selector: {0}")]
    Selector(String),
}

fn api_err(what: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |e| Error::Api(what, e)
}

/// What the queue holds: a Job to sync, or a pod whose tracking finalizer
/// may have to go because its Job is gone or finished (upstream's orphan
/// queue).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Item {
    Job(Key),
    OrphanPod(Key),
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Job(k) => write!(f, "job {k}"),
            Item::OrphanPod(k) => write!(f, "pod {k}"),
        }
    }
}

/// Failures since the last success, for the pod-replacement backoff.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct BackoffRecord {
    failures_after_last_success: u32,
    last_failure: Option<Timestamp>,
}

struct Controller {
    client: Client,
    config: Config,
    jobs: Store<Job>,
    pods: IndexedStore<Pod>,
    queue: Queue<Item>,
    /// Keyed by `namespace/name`.
    expectations: Expectations,
    /// Pods whose finalizer removal was issued but not yet observed, per Job.
    finalizer_expectations: Mutex<HashMap<Key, HashSet<String>>>,
    backoff: Mutex<HashMap<Key, BackoffRecord>>,
    /// Jobs (by uid) whose selector the server would not let us extend.
    selector_rejected: Mutex<HashSet<String>>,
    recorder: EventRecorder,
}

/// Runs the Job controller with the default [`Config`].
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with(client, Config::default()).await
}

/// Runs the Job controller until its informers stop (they retry failures
/// on their own, so only if the client is dropped).
pub async fn run_with(client: Client, config: Config) -> anyhow::Result<()> {
    run_shared(client.clone(), config, SharedInformers::new(client)).await
}

/// [`run_with`] on the process's shared informers.
pub async fn run_shared(client: Client, config: Config, informers: SharedInformers) -> anyhow::Result<()> {
    let (queue, workers) = queue::queue::<Item>(Backoff::CONTROLLER);
    let recorder = EventRecorder::new(client.clone(), "job-controller");
    let job_informer = informers.get::<Job>();
    let pod_informer = informers.get::<Pod>();
    let (jobs, pods) = (job_informer.store(), pod_informer.indexed());
    let controller = Arc::new(Controller {
        client: client.clone(),
        config,
        jobs: jobs.clone(),
        pods: pods.clone(),
        queue: queue.clone(),
        expectations: Expectations::default(),
        finalizer_expectations: Mutex::new(HashMap::new()),
        backoff: Mutex::new(HashMap::new()),
        selector_rejected: Mutex::new(HashSet::new()),
        recorder,
    });
    let mut tasks = JoinSet::new();
    let c = controller.clone();
    tasks.spawn(job_informer.run("jobs", move |ch| c.on_job(ch)));
    let c = controller.clone();
    tasks.spawn(pod_informer.run("pods", move |ch| c.on_pod(ch)));
    let (_, _) = tokio::join!(jobs.wait_until_ready(), pods.wait_until_ready());
    tracing::info!("job controller synced");
    // Everything listed before the handlers were wired in.
    for job in jobs.state() {
        queue.add(Item::Job(Key::of(&*job)));
    }
    let workers_n = controller.config.workers;
    let c = controller.clone();
    tasks.spawn(kit::run_workers("job", queue, workers, workers_n, move |item| {
        let c = c.clone();
        async move {
            match item {
                Item::Job(key) => c.sync_job(&key).await,
                Item::OrphanPod(key) => c.sync_orphan_pod(&key).await.map(|()| None),
            }
        }
    }));
    let _ = tasks.join_next().await;
    anyhow::bail!("job controller stopped")
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata.finalizers.as_deref().unwrap_or(&[]).iter().any(|f| f == TRACKING_FINALIZER)
}

fn is_job_controller_ref(r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference) -> bool {
    r.kind == "Job" && r.api_version == "batch/v1"
}

fn spec(job: &Job) -> k8s_openapi::api::batch::v1::JobSpec {
    job.spec.clone().unwrap_or_default()
}

fn condition_true<'a>(conds: &'a [JobCondition], type_: &str) -> Option<&'a JobCondition> {
    conds.iter().find(|c| c.type_ == type_ && c.status == "True")
}

/// Upstream's `IsJobFinished`: Complete or Failed is True.
pub fn is_finished(job: &Job) -> bool {
    finished_condition(job).is_some()
}

/// The Complete or Failed condition, if True.
pub fn finished_condition(job: &Job) -> Option<&JobCondition> {
    let conds = job.status.as_ref()?.conditions.as_deref()?;
    conds.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn is_indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

fn is_suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
}

/// `spec.podReplacementPolicy: Failed` (or a pod failure policy): only
/// failed pods are replaced, and terminating ones are not counted failed.
fn only_replace_failed_pods(job: &Job) -> bool {
    let s = spec(job);
    s.pod_replacement_policy.as_deref() == Some("Failed") || s.pod_failure_policy.is_some()
}

/// Upstream's `isPodFailed`.
fn is_pod_failed(pod: &Pod, job: &Job) -> bool {
    if only_replace_failed_pods(job) {
        return phase(pod) == "Failed";
    }
    phase(pod) == "Failed" || (is_terminating(pod) && phase(pod) != "Succeeded")
}

fn completion_index(pod: &Pod) -> Option<i32> {
    pod.metadata.annotations.as_ref()?.get(COMPLETION_INDEX_ANNOTATION)?.parse::<i32>().ok().filter(|i| *i >= 0)
}

fn new_condition(type_: &str, status: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: (!reason.is_empty()).then(|| reason.to_string()),
        message: (!message.is_empty()).then(|| message.to_string()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream's `ensureJobConditionStatus`: updates (or adds, unless False)
/// the condition; returns whether anything changed.
fn ensure_condition(conds: &mut Vec<JobCondition>, type_: &str, status: &str, reason: &str, message: &str, now: Timestamp) -> bool {
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status || c.reason.as_deref().unwrap_or("") != reason || c.message.as_deref().unwrap_or("") != message {
            *c = new_condition(type_, status, reason, message, now);
            return true;
        }
        return false;
    }
    if status != "False" {
        conds.push(new_condition(type_, status, reason, message, now));
        return true;
    }
    false
}

/// When a finished pod finished: its containers' latest `finishedAt`, else
/// the Ready=False transition, else its deletion time, else its creation.
fn finish_time(pod: &Pod) -> Timestamp {
    let status = pod.status.clone().unwrap_or_default();
    let mut latest: Option<Timestamp> = None;
    let mut all_terminated = true;
    for cs in status.container_statuses.iter().flatten() {
        match cs.state.as_ref().and_then(|s| s.terminated.as_ref()).and_then(|t| t.finished_at.as_ref()) {
            Some(t) => latest = Some(latest.map_or(t.0, |l| l.max(t.0))),
            None => all_terminated = false,
        }
    }
    if all_terminated
        && let Some(t) = latest {
            return t;
        }
    if let Some(t) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref())
    {
        return t.0;
    }
    if let Some(t) = &pod.metadata.deletion_timestamp {
        return t.0;
    }
    pods::creation(pod).unwrap_or_else(Timestamp::now)
}

impl BackoffRecord {
    /// Upstream's `newBackoffRecord`: folds in the pods that finished since.
    fn next(self, new_succeeded: &[Arc<Pod>], new_failed: &[Arc<Pod>]) -> BackoffRecord {
        let mut r = self;
        if new_succeeded.is_empty() {
            if new_failed.is_empty() {
                return r;
            }
            r.failures_after_last_success += new_failed.len() as u32;
            let last = new_failed.iter().map(|p| finish_time(p)).max();
            r.last_failure = match (r.last_failure, last) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            return r;
        }
        r = BackoffRecord::default();
        let last_success = new_succeeded.iter().map(|p| finish_time(p)).max().expect("not empty");
        let mut failed: Vec<Timestamp> = new_failed.iter().map(|p| finish_time(p)).collect();
        failed.sort();
        for t in failed.iter().rev() {
            if *t <= last_success {
                break;
            }
            if r.last_failure.is_none() {
                r.last_failure = Some(*t);
            }
            r.failures_after_last_success += 1;
        }
        r
    }

    /// Upstream's `getRemainingTimeForFailuresCount`.
    fn remaining(&self, now: Timestamp, base: Duration, max: Duration) -> Duration {
        if self.failures_after_last_success == 0 {
            return Duration::ZERO;
        }
        let Some(last) = self.last_failure else { return Duration::ZERO };
        let mut backoff = base;
        for _ in 1..self.failures_after_last_success {
            backoff *= 2;
            if backoff >= max {
                backoff = max;
                break;
            }
        }
        let elapsed = now.duration_since(last);
        let elapsed = if elapsed.is_negative() { Duration::ZERO } else { elapsed.unsigned_abs() };
        backoff.saturating_sub(elapsed)
    }
}

/// Upstream's `generateSelector`, applied to a copy of `job`.
pub fn with_generated_selector(job: &Job) -> Job {
    let mut job = job.clone();
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    let spec = job.spec.get_or_insert_with(Default::default);
    let labels = spec.template.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(BTreeMap::new);
    for l in [LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL] {
        labels.entry(l.to_string()).or_insert_with(|| name.clone());
    }
    for l in [LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL] {
        labels.entry(l.to_string()).or_insert_with(|| uid.clone());
    }
    let sel = spec.selector.get_or_insert_with(LabelSelector::default);
    sel.match_labels.get_or_insert_with(BTreeMap::new).entry(CONTROLLER_UID_LABEL.to_string()).or_insert(uid);
    job
}

/// Everything one sync computes about a Job (upstream's `syncJobCtx`).
struct SyncCtx {
    job: Job,
    pods: Vec<Arc<Pod>>,
    active_pods: Vec<Arc<Pod>>,
    expected_rm: HashSet<String>,
    uncounted_succeeded: HashSet<String>,
    uncounted_failed: HashSet<String>,
    succeeded: i32,
    failed: i32,
    ready: i32,
    terminating: i32,
    finished: Option<JobCondition>,
    prev_succeeded_indexes: BTreeSet<i32>,
    succeeded_indexes: BTreeSet<i32>,
    backoff: BackoffRecord,
    requeue: Option<Duration>,
}

impl SyncCtx {
    fn requeue_after(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }
}

impl Controller {
    fn now(&self) -> Timestamp {
        (self.config.clock)()
    }

    fn job_for(&self, namespace: &str, r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference) -> Option<Arc<Job>> {
        if !is_job_controller_ref(r) {
            return None;
        }
        let job = self.jobs.get(&Key::new(namespace, &r.name).obj_ref())?;
        (job.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(job)
    }

    fn enqueue(&self, job: &Job) {
        self.queue.add(Item::Job(Key::of(job)));
    }

    fn enqueue_orphan(&self, pod: &Pod) {
        self.queue.add(Item::OrphanPod(Key::of(pod)));
    }

    fn finalizer_removal_observed(&self, key: &Key, uid: &str) {
        let mut fe = self.finalizer_expectations.lock().expect("lock");
        if let Some(set) = fe.get_mut(key) {
            set.remove(uid);
            if set.is_empty() {
                fe.remove(key);
            }
        }
    }

    fn on_job(&self, change: Change<Job>) {
        match change {
            Change::Added(new) | Change::Updated(_, new) => self.enqueue(&new),
            Change::Deleted(job) => {
                // Its pods' finalizers must go now (upstream's cleanupPodFinalizers).
                let uid = job.metadata.uid.clone().unwrap_or_default();
                self.selector_rejected.lock().expect("lock").remove(&uid);
                let ns = job.namespace().unwrap_or_default();
                for pod in self.pods.in_namespace(&ns) {
                    if pods::is_controlled_by(&pod.metadata, &uid) && has_finalizer(&pod) {
                        self.enqueue_orphan(&pod);
                    }
                }
                self.enqueue(&job);
            }
        }
    }

    /// Jobs in the pod's namespace whose selector matches it (for adoption).
    fn jobs_matching(&self, pod: &Pod) -> Vec<Arc<Job>> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        self.jobs
            .state()
            .into_iter()
            .filter(|j| j.metadata.namespace.as_deref() == Some(ns))
            .filter(|j| Selector::parse(j.spec.as_ref().and_then(|s| s.selector.as_ref())).map(|s| s.matches(pod.metadata.labels.as_ref())).unwrap_or(false))
            .collect()
    }

    fn on_pod(&self, change: Change<Pod>) {
        let (old, new) = match change {
            Change::Added(new) => (None, new),
            Change::Updated(old, new) => (Some(old), new),
            Change::Deleted(pod) => return self.pod_deleted(&pod, true),
        };
        if new.metadata.deletion_timestamp.is_some() {
            // Being deleted: replacements need not wait for the end.
            if let Some(old) = &old
                && controller_of(&old.metadata).map(|r| &r.uid) != controller_of(&new.metadata).map(|r| &r.uid) {
                    self.pod_deleted(old, false);
                }
            self.pod_deleted(&new, false);
            return;
        }
        let ns = new.metadata.namespace.clone().unwrap_or_default();
        if let Some(old) = &old {
            let old_ref = controller_of(&old.metadata);
            if old_ref.map(|r| &r.uid) != controller_of(&new.metadata).map(|r| &r.uid)
                && let Some(job) = old_ref.and_then(|r| self.job_for(&ns, r)) {
                    self.enqueue(&job);
                }
        }
        match controller_of(&new.metadata) {
            Some(r) => match self.job_for(&ns, r) {
                Some(job) => {
                    let key = Key::of(&*job);
                    if old.is_none() {
                        self.expectations.creation_observed(&key.to_string());
                    }
                    if !has_finalizer(&new) {
                        self.finalizer_removal_observed(&key, new.metadata.uid.as_deref().unwrap_or(""));
                    }
                    if is_finished(&job) && has_finalizer(&new) {
                        self.enqueue_orphan(&new);
                    }
                    self.enqueue(&job);
                }
                None => {
                    if has_finalizer(&new) && is_job_controller_ref(r) {
                        self.enqueue_orphan(&new);
                    }
                }
            },
            None => {
                if has_finalizer(&new) {
                    self.enqueue_orphan(&new);
                }
                let labels_changed = old.as_ref().map(|o| o.metadata.labels != new.metadata.labels).unwrap_or(true);
                if labels_changed {
                    for job in self.jobs_matching(&new) {
                        self.enqueue(&job);
                    }
                }
            }
        }
    }

    /// Upstream's `deletePod(pod, final)`.
    fn pod_deleted(&self, pod: &Pod, fin: bool) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let Some(r) = controller_of(&pod.metadata) else {
            if has_finalizer(pod) {
                self.enqueue_orphan(pod);
            }
            return;
        };
        if !is_job_controller_ref(r) {
            return;
        }
        let job = match self.job_for(&ns, r) {
            Some(j) if !is_finished(&j) => j,
            _ => {
                if has_finalizer(pod) {
                    self.enqueue_orphan(pod);
                }
                return;
            }
        };
        let key = Key::of(&*job);
        self.expectations.deletion_observed(&key.to_string(), &Key::of(pod).to_string());
        if fin || !has_finalizer(pod) {
            self.finalizer_removal_observed(&key, pod.metadata.uid.as_deref().unwrap_or(""));
        }
        self.enqueue(&job);
    }

    /// Removes the tracking finalizer from a pod whose Job is gone or
    /// finished (upstream's `syncOrphanPod`).
    async fn sync_orphan_pod(&self, key: &Key) -> Result<(), Error> {
        let Some(pod) = self.pods.get(&key.obj_ref()) else { return Ok(()) };
        if !has_finalizer(&pod) {
            return Ok(());
        }
        if let Some(r) = controller_of(&pod.metadata) {
            if !is_job_controller_ref(r) {
                return Ok(());
            }
            if let Some(job) = self.job_for(&key.namespace, r)
                && !is_finished(&job) {
                    // Adopted or still running: the Job's sync counts it.
                    return Ok(());
                }
        }
        match self.remove_finalizer(&pod).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(Error::Api("removing tracking finalizer from orphan pod", e)),
        }
    }

    async fn remove_finalizer(&self, pod: &Pod) -> Result<(), kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}});
        api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await.map(|_| ())
    }

    fn forget(&self, key: &Key) {
        self.expectations.forget(&key.to_string());
        self.finalizer_expectations.lock().expect("lock").remove(key);
        self.backoff.lock().expect("lock").remove(key);
    }

    async fn sync_job(&self, key: &Key) -> Result<Option<Duration>, Error> {
        let Some(job) = self.jobs.get(&key.obj_ref()) else {
            self.forget(key);
            return Ok(None);
        };
        let job: Job = (*job).clone();
        if let Some(m) = job.spec.as_ref().and_then(|s| s.managed_by.as_deref())
            && m != CONTROLLER_NAME {
                return Ok(None);
            }
        let s = spec(&job);
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let generated = s.selector.as_ref().and_then(|l| l.match_labels.as_ref()).map(|m| m.contains_key(CONTROLLER_UID_LABEL)).unwrap_or(false);
        if s.manual_selector != Some(true) && !generated && !self.selector_rejected.lock().expect("lock").contains(&uid)
            && self.generate_selector(&job).await? {
                // The updated Job comes back through the watch.
                return Ok(None);
            }
        if s.selector.is_none() {
            return Ok(None);
        }
        if is_finished(&job) {
            self.backoff.lock().expect("lock").remove(key);
            // Finalizers of pods left over (e.g. after a restart) go now.
            let uid = job.metadata.uid.clone().unwrap_or_default();
            for pod in self.pods.in_namespace(&key.namespace) {
                if pods::is_controlled_by(&pod.metadata, &uid) && has_finalizer(&pod) {
                    self.enqueue_orphan(&pod);
                }
            }
            return self.process_ttl(&job).await;
        }
        let selector = Selector::parse(s.selector.as_ref()).map_err(Error::Selector)?;
        let satisfied = self.expectations.satisfied(&key.to_string());
        let candidates: Vec<Arc<Pod>> = self.pods.in_namespace(&key.namespace);
        let claimed = kit::claim::claim(&self.client, &job, &selector, candidates, |_| true, Some(TRACKING_FINALIZER))
            .await
            .map_err(api_err("claiming pods"))?;
        let now = self.now();
        let expected_rm = self.finalizer_expectations.lock().expect("lock").get(key).cloned().unwrap_or_default();
        let status = job.status.clone().unwrap_or_default();
        let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut ctx = SyncCtx {
            active_pods: claimed.iter().filter(|p| is_active(p)).cloned().collect(),
            pods: claimed,
            expected_rm,
            uncounted_succeeded: uncounted.succeeded.unwrap_or_default().into_iter().collect(),
            uncounted_failed: uncounted.failed.unwrap_or_default().into_iter().collect(),
            succeeded: 0,
            failed: 0,
            ready: 0,
            terminating: 0,
            finished: None,
            prev_succeeded_indexes: BTreeSet::new(),
            succeeded_indexes: BTreeSet::new(),
            backoff: BackoffRecord::default(),
            requeue: None,
            job,
        };
        ctx.ready = ctx.active_pods.iter().filter(|p| is_ready(p)).count() as i32;
        ctx.terminating = ctx.pods.iter().filter(|p| !pods::is_terminal(p) && is_terminating(p)).count() as i32;
        let mut active = ctx.active_pods.len() as i32;
        let new_succeeded = self.new_finished_pods(&ctx, true);
        let new_failed = self.new_finished_pods(&ctx, false);
        ctx.succeeded = status.succeeded.unwrap_or(0) + new_succeeded.len() as i32 + ctx.uncounted_succeeded.len() as i32;
        ctx.failed = status.failed.unwrap_or(0) + new_failed.len() as i32 + ctx.uncounted_failed.len() as i32;

        if ctx.job.status.as_ref().and_then(|s| s.start_time.as_ref()).is_none() && !is_suspended(&ctx.job) {
            ctx.job.status.get_or_insert_with(Default::default).start_time = Some(Time(now));
        }
        let prev_backoff = self.backoff.lock().expect("lock").get(key).copied().unwrap_or_default();
        ctx.backoff = prev_backoff.next(&new_succeeded, &new_failed);

        let conds = ctx.job.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let backoff_limit = s.backoff_limit.unwrap_or(6);
        ctx.finished = condition_true(&conds, "SuccessCriteriaMet").cloned();
        if ctx.finished.is_none()
            && let Some(target) = condition_true(&conds, "FailureTarget") {
                ctx.finished = Some(new_condition(
                    "Failed",
                    "True",
                    target.reason.as_deref().unwrap_or(""),
                    target.message.as_deref().unwrap_or(""),
                    now,
                ));
            }
        if ctx.finished.is_none() {
            if ctx.failed > backoff_limit || past_backoff_limit_on_failure(&ctx.job, &ctx.pods) {
                ctx.finished = Some(new_condition("FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now));
            } else if past_active_deadline(&ctx.job, now) {
                ctx.finished = Some(new_condition("FailureTarget", "True", "DeadlineExceeded", "Job was active longer than specified deadline", now));
            } else if let (Some(ads), false) = (s.active_deadline_seconds, is_suspended(&ctx.job)) {
                let start = ctx.job.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).unwrap_or(now);
                let left = kit::until(now, start + SignedDuration::from_secs(ads));
                tracing::debug!(job = %key, next_sync_in = ?left, "job has activeDeadlineSeconds; will sync again");
                ctx.requeue_after(left);
            }
        }
        if is_indexed(&ctx.job) {
            let completions = s.completions.unwrap_or(0);
            ctx.prev_succeeded_indexes =
                indexes::parse(ctx.job.status.as_ref().and_then(|s| s.completed_indexes.as_deref()).unwrap_or(""), completions);
            ctx.succeeded_indexes = ctx.prev_succeeded_indexes.clone();
            for p in &ctx.pods {
                if phase(p) == "Succeeded" && has_finalizer(p) && !ctx.expected_rm.contains(p.metadata.uid.as_deref().unwrap_or(""))
                    && let Some(ix) = completion_index(p).filter(|i| *i < completions) {
                        ctx.succeeded_indexes.insert(ix);
                    }
            }
            if ctx.finished.is_none()
                && let Some(msg) = match_success_policy(&s, completions, &ctx.succeeded_indexes) {
                    ctx.finished = Some(new_condition("SuccessCriteriaMet", "True", "SuccessPolicy", &msg, now));
                }
        }

        let mut manage_err = None;
        if ctx.finished.is_some() {
            let (deleted_ready, deleted, err) = self.delete_active_pods(&ctx.job, &ctx.active_pods).await;
            if deleted != active || !satisfied {
                // Pods may remain, or the cache may lag: finish next time.
                ctx.finished = None;
            }
            active -= deleted;
            ctx.ready -= deleted_ready;
            manage_err = err;
        } else {
            let mut manage_called = false;
            if satisfied && ctx.job.metadata.deletion_timestamp.is_none() {
                match self.manage_job(key, &mut ctx, now).await {
                    Ok(a) => active = a,
                    Err((a, e)) => {
                        active = a;
                        manage_err = Some(e);
                    }
                }
                manage_called = true;
            }
            let complete = match s.completions {
                None => ctx.succeeded > 0 && active == 0,
                Some(c) => ctx.succeeded >= c && active == 0,
            };
            if complete {
                ctx.finished = Some(new_condition("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods", now));
            } else if manage_called {
                let suspended = is_suspended(&ctx.job);
                let st = ctx.job.status.get_or_insert_with(Default::default);
                let conds = st.conditions.get_or_insert_with(Vec::new);
                if suspended {
                    if ensure_condition(conds, "Suspended", "True", "JobSuspended", "Job suspended", now) {
                        self.event(&ctx.job, EventType::Normal, "Suspended", "Job suspended");
                    }
                } else if ensure_condition(conds, "Suspended", "False", "JobResumed", "Job resumed", now) {
                    // activeDeadlineSeconds counts from the resumption.
                    st.start_time = Some(Time(now));
                    self.event(&ctx.job, EventType::Normal, "Resumed", "Job resumed");
                }
            }
        }
        {
            let st = ctx.job.status.get_or_insert_with(Default::default);
            st.active = Some(active);
            st.ready = Some(ctx.ready);
            st.terminating = Some(ctx.terminating);
        }
        self.track_status_and_remove_finalizers(key, &mut ctx, &status).await?;
        if let Some(e) = manage_err {
            return Err(e);
        }
        Ok(ctx.requeue)
    }

    /// Pods with the finalizer that finished since they were last counted
    /// (upstream's `getNewFinishedPods`).
    fn new_finished_pods(&self, ctx: &SyncCtx, succeeded: bool) -> Vec<Arc<Pod>> {
        let completions = ctx.job.spec.as_ref().and_then(|s| s.completions).unwrap_or(0);
        let uncounted = if succeeded { &ctx.uncounted_succeeded } else { &ctx.uncounted_failed };
        ctx.pods
            .iter()
            .filter(|p| {
                let uid = p.metadata.uid.as_deref().unwrap_or("");
                if !has_finalizer(p) || uncounted.contains(uid) || ctx.expected_rm.contains(uid) {
                    return false;
                }
                if is_indexed(&ctx.job) && completion_index(p).filter(|i| *i < completions).is_none() {
                    return false;
                }
                if succeeded { phase(p) == "Succeeded" } else { is_pod_failed(p, &ctx.job) }
            })
            .cloned()
            .collect()
    }

    /// Upstream's API strategy (`generateSelector`) done in a first update:
    /// adds the controller-uid selector and the template labels. `false` if
    /// the server refused (a user-set selector it keeps immutable): the Job
    /// then runs with the selector it has.
    async fn generate_selector(&self, job: &Job) -> Result<bool, Error> {
        let updated = with_generated_selector(job);
        let api: Api<Job> = Api::namespaced(self.client.clone(), job.metadata.namespace.as_deref().unwrap_or_default());
        let mut body = updated;
        body.metadata.managed_fields = None;
        body.status = None;
        tracing::debug!(job = %job.name_any(), "setting the generated selector");
        match api.replace(&job.name_any(), &PostParams::default(), &body).await {
            Ok(_) => Ok(true),
            // A newer Job is on its way through the watch; it is synced then.
            Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(true),
            Err(e) if crate::pod_control::status_code(&e) == Some(422) => {
                tracing::info!(job = %job.name_any(), error = %error_message(&e), "could not add the generated selector; using the job's own");
                self.selector_rejected.lock().expect("lock").insert(job.metadata.uid.clone().unwrap_or_default());
                Ok(false)
            }
            Err(e) => Err(Error::Api("setting the generated selector", e)),
        }
    }

    /// Deletes a finished Job once its TTL expired (upstream's
    /// `ttlafterfinished` controller); otherwise says when to look again.
    async fn process_ttl(&self, job: &Job) -> Result<Option<Duration>, Error> {
        let Some(left) = ttl_left(job, self.now()) else { return Ok(None) };
        if !left.is_zero() {
            return Ok(Some(left));
        }
        // The cache may be stale: check the TTL on a fresh read.
        let api: Api<Job> = Api::namespaced(self.client.clone(), job.metadata.namespace.as_deref().unwrap_or_default());
        let fresh = match api.get_opt(&job.name_any()).await.map_err(api_err("reading job for TTL"))? {
            Some(f) => f,
            None => return Ok(None),
        };
        match ttl_left(&fresh, self.now()) {
            None => return Ok(None),
            Some(left) if !left.is_zero() => return Ok(Some(left)),
            Some(_) => {}
        }
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(Preconditions { uid: fresh.metadata.uid.clone(), resource_version: None }),
            ..DeleteParams::default()
        };
        tracing::info!(job = %job.name_any(), namespace = ?job.metadata.namespace, "cleaning up finished job (ttlSecondsAfterFinished)");
        match api.delete(&fresh.name_any(), &dp).await {
            Ok(_) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(Error::Api("deleting job after its TTL", e)),
        }
    }

    fn event(&self, job: &Job, type_: EventType, reason: &str, message: impl Into<String>) {
        self.recorder.event(object_ref(job), type_, reason, message);
    }

    /// Creates `pod` for `job` (upstream's `CreatePodsWithGenerateName`):
    /// SuccessfulCreate `Created pod: <name>` or FailedCreate `Error
    /// creating: <err>`.
    async fn create_pod(&self, job: &Job, ns: &str, pod: &Pod) -> Result<Pod, kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        match api.create(&PostParams::default(), pod).await {
            Ok(created) => {
                tracing::debug!(job = %job.name_any(), pod = %created.name_any(), "created pod");
                self.event(job, EventType::Normal, "SuccessfulCreate", format!("Created pod: {}", created.name_any()));
                Ok(created)
            }
            Err(e) => {
                if !is_namespace_terminating(&e) {
                    self.event(job, EventType::Warning, "FailedCreate", format!("Error creating: {}", error_message(&e)));
                }
                Err(e)
            }
        }
    }

    /// Deletes pod `name` of `job`: SuccessfulDelete `Deleted pod: <name>`
    /// or FailedDelete (a pod already gone is a 404, without event).
    async fn delete_pod(&self, job: &Job, ns: &str, name: &str) -> Result<(), kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                self.event(job, EventType::Normal, "SuccessfulDelete", format!("Deleted pod: {name}"));
                Ok(())
            }
            Err(e) if is_not_found(&e) => Err(e),
            Err(e) => {
                self.event(job, EventType::Warning, "FailedDelete", format!("Error deleting: {}", error_message(&e)));
                Err(e)
            }
        }
    }

    /// Deletes the active pods, keeping their finalizers: the status
    /// tracking counts them as failed and removes those (upstream's
    /// `deleteActivePods`). Returns (ready deleted, deleted, error).
    async fn delete_active_pods(&self, job: &Job, active: &[Arc<Pod>]) -> (i32, i32, Option<Error>) {
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let mut futs: FuturesUnordered<_> = active
            .iter()
            .map(|p| {
                let p = p.clone();
                let ns = ns.clone();
                async move { (is_ready(&p), self.delete_pod(job, &ns, &p.name_any()).await) }
            })
            .collect();
        let (mut ready, mut deleted, mut err) = (0, 0, None);
        while let Some((was_ready, r)) = futs.next().await {
            match r {
                Ok(()) => deleted += 1,
                Err(e) if is_not_found(&e) => deleted += 1,
                Err(e) => {
                    err.get_or_insert(Error::Api("deleting active pods", e));
                }
            }
            if was_ready {
                ready += 1;
            }
        }
        (ready, deleted, err)
    }

    /// Removes the finalizer, then deletes (upstream's `deleteJobPods`): pods
    /// deleted to scale down or suspend are not counted as failed.
    async fn delete_job_pods(&self, key: &Key, job: &Job, doomed: &[Arc<Pod>]) -> (i32, i32, Option<Error>) {
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let mut futs: FuturesUnordered<_> = doomed
            .iter()
            .map(|p| {
                let p = p.clone();
                let ns = ns.clone();
                let pod_key = Key::of(&*p).to_string();
                async move {
                    if has_finalizer(&p)
                        && let Err(e) = self.remove_finalizer(&p).await {
                            return (is_ready(&p), Err(e));
                        }
                    (is_ready(&p), self.delete_pod(job, &ns, &p.name_any()).await)
                }
                .map(move |(ready, r)| (pod_key, ready, r))
            })
            .collect();
        let (mut ready, mut deleted, mut err) = (0, 0, None);
        while let Some((pod_key, was_ready, r)) = futs.next().await {
            match r {
                Ok(()) => {
                    deleted += 1;
                    if was_ready {
                        ready += 1;
                    }
                }
                Err(e) => {
                    // This deletion will never be observed.
                    self.expectations.deletion_observed(&key.to_string(), &pod_key);
                    if !is_not_found(&e) {
                        err.get_or_insert(Error::Api("deleting pods", e));
                    }
                }
            }
        }
        (ready, deleted, err)
    }

    /// Creates or deletes pods so `active` matches what the Job wants
    /// (upstream's `manageJob`). Returns the new active count.
    async fn manage_job(&self, key: &Key, ctx: &mut SyncCtx, now: Timestamp) -> Result<i32, (i32, Error)> {
        let job = ctx.job.clone();
        let s = spec(&job);
        let mut active = ctx.active_pods.len() as i32;
        let parallelism = s.parallelism.unwrap_or(1).max(0);
        if is_suspended(&job) {
            tracing::debug!(job = %key, active, "deleting all active pods of suspended job");
            let doomed = active_pods_for_removal(&job, &ctx.active_pods, ctx.active_pods.len());
            self.expectations.expect_deletions(&key.to_string(), doomed.iter().map(|p| Key::of(&**p).to_string()));
            let (removed_ready, removed, err) = self.delete_job_pods(key, &job, &doomed).await;
            active -= removed;
            ctx.ready -= removed_ready;
            return match err {
                Some(e) => Err((active, e)),
                None => Ok(active),
            };
        }
        let want_active = match s.completions {
            None => {
                if ctx.succeeded > 0 {
                    active
                } else {
                    parallelism
                }
            }
            Some(c) => (c - ctx.succeeded).clamp(0, parallelism),
        };
        let rm_at_least = (active - want_active).max(0) as usize;
        let mut doomed = active_pods_for_removal(&job, &ctx.active_pods, rm_at_least);
        doomed.truncate(MAX_POD_CREATE_DELETE_PER_SYNC);
        if !doomed.is_empty() {
            tracing::debug!(job = %key, deleting = doomed.len(), target = want_active, "too many pods running for job");
            self.expectations.expect_deletions(&key.to_string(), doomed.iter().map(|p| Key::of(&**p).to_string()));
            let (removed_ready, removed, err) = self.delete_job_pods(key, &job, &doomed).await;
            active -= removed;
            ctx.ready -= removed_ready;
            return match err {
                Some(e) => Err((active, e)),
                None => Ok(active),
            };
        }
        let terminating = if only_replace_failed_pods(&job) { ctx.terminating } else { 0 };
        let mut diff = want_active - terminating - active;
        if diff <= 0 {
            return Ok(active);
        }
        let remaining = ctx.backoff.remaining(now, self.config.pod_failure_backoff, self.config.max_pod_failure_backoff);
        if !remaining.is_zero() {
            tracing::debug!(job = %key, wait = ?remaining, "pod failure backoff: not creating pods yet");
            ctx.requeue_after(remaining);
            return Ok(active);
        }
        diff = diff.min(MAX_POD_CREATE_DELETE_PER_SYNC as i32);
        let completions = s.completions.unwrap_or(0);
        let mut indexes_to_add: Vec<i32> = Vec::new();
        if is_indexed(&job) {
            indexes_to_add = first_pending_indexes(ctx, diff as usize, completions);
            diff = indexes_to_add.len() as i32;
        }
        if diff <= 0 {
            return Ok(active);
        }
        tracing::debug!(job = %key, need = want_active, creating = diff, "too few pods running");
        let exp_key = key.to_string();
        self.expectations.expect_creations(&exp_key, diff as usize);
        let mut template = s.template.clone();
        if is_indexed(&job) {
            add_completion_index_env(&mut template);
        }
        {
            let fins = template.metadata.get_or_insert_with(Default::default).finalizers.get_or_insert_with(Vec::new);
            if !fins.iter().any(|f| f == TRACKING_FINALIZER) {
                fins.push(TRACKING_FINALIZER.to_string());
            }
        }
        let job_name = job.name_any();
        let ns = key.namespace.clone();
        let cref = controller_ref(&job);
        let n = diff as usize;
        let next = AtomicUsize::new(0);
        let (created, err) = slow_start_batch(n, SLOW_START_INITIAL_BATCH, || {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let mut pod = pod_from_template(&template, &job_name, Some(cref.clone()));
            if let Some(ix) = indexes_to_add.get(i).copied() {
                pod.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(COMPLETION_INDEX_ANNOTATION.into(), ix.to_string());
                pod.metadata.labels.get_or_insert_with(BTreeMap::new).insert(COMPLETION_INDEX_ANNOTATION.into(), ix.to_string());
                if let Some(spec) = pod.spec.as_mut() {
                    spec.hostname = Some(format!("{job_name}-{ix}"));
                }
                pod.metadata.generate_name = Some(generate_name_with_index(&job_name, ix));
            }
            let job = &job;
            let ns = ns.clone();
            let exp_key = &exp_key;
            async move {
                match self.create_pod(job, &ns, &pod).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_namespace_terminating(&e) => {
                        self.expectations.creation_observed(exp_key);
                        Ok(())
                    }
                    Err(e) => {
                        self.expectations.creation_observed(exp_key);
                        Err(e)
                    }
                }
            }
        })
        .await;
        // Creations never attempted will never be observed either.
        for _ in next.load(Ordering::SeqCst).min(n)..n {
            self.expectations.creation_observed(&exp_key);
        }
        active += created as i32;
        match err {
            Some(e) => Err((active, Error::Api("creating pods", e))),
            None => Ok(active),
        }
    }

    /// Counts finished pods and removes their finalizers, in upstream's
    /// crash-safe order, then marks the Job finished when it is
    /// (upstream's `trackJobStatusAndRemoveFinalizers`).
    async fn track_status_and_remove_finalizers(&self, key: &Key, ctx: &mut SyncCtx, original: &JobStatus) -> Result<(), Error> {
        let s = spec(&ctx.job);
        let indexed = is_indexed(&ctx.job);
        let completions = s.completions.unwrap_or(0);
        let mut uncounted_succeeded: Vec<String> = ctx.uncounted_succeeded.iter().cloned().collect();
        let mut uncounted_failed: Vec<String> = ctx.uncounted_failed.iter().cloned().collect();
        // Keep the existing order of the uncounted lists.
        if let Some(u) = original.uncounted_terminated_pods.as_ref() {
            uncounted_succeeded = u.succeeded.clone().unwrap_or_default();
            uncounted_failed = u.failed.clone().unwrap_or_default();
        }
        let mut uids_with_finalizer: HashSet<String> = ctx
            .pods
            .iter()
            .filter(|p| has_finalizer(p) && !ctx.expected_rm.contains(p.metadata.uid.as_deref().unwrap_or("")))
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        {
            let st = ctx.job.status.get_or_insert_with(Default::default);
            clean_uncounted(st, &mut uncounted_succeeded, &mut uncounted_failed, &uids_with_finalizer);
        }
        let mut to_remove: Vec<Arc<Pod>> = Vec::new();
        let mut new_succeeded_indexes: Vec<i32> = Vec::new();
        let mut reached_max = false;
        let finishing_as_failure = ctx.finished.as_ref().map(|c| c.type_ != "SuccessCriteriaMet" && c.type_ != "Complete").unwrap_or(false);
        for p in &ctx.pods {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            if !has_finalizer(p) || ctx.expected_rm.contains(&uid) {
                continue;
            }
            let consider_failed = is_pod_failed(p, &ctx.job);
            let pod_finished = pods::is_terminal(p);
            // Upstream's canRemoveFinalizer.
            if !(pod_finished || consider_failed || ctx.finished.is_some()) {
                continue;
            }
            if phase(p) == "Succeeded" && !uncounted_failed.contains(&uid) {
                if indexed {
                    if let Some(ix) = completion_index(p).filter(|i| *i < completions)
                        && !ctx.prev_succeeded_indexes.contains(&ix) {
                            new_succeeded_indexes.push(ix);
                        }
                } else if !uncounted_succeeded.contains(&uid) {
                    uncounted_succeeded.push(uid.clone());
                }
            } else if consider_failed || finishing_as_failure {
                let valid_index = !indexed || completion_index(p).filter(|i| *i < completions).is_some();
                if !uncounted_failed.contains(&uid) && valid_index {
                    uncounted_failed.push(uid.clone());
                }
            }
            to_remove.push(p.clone());
            if new_succeeded_indexes.len() + uncounted_succeeded.len() + uncounted_failed.len() >= MAX_UNCOUNTED_PODS {
                reached_max = true;
                break;
            }
        }
        {
            let st = ctx.job.status.get_or_insert_with(Default::default);
            if indexed {
                let mut all = ctx.prev_succeeded_indexes.clone();
                all.extend(new_succeeded_indexes.iter().copied());
                st.completed_indexes = Some(indexes::format(&all));
                st.succeeded = Some(all.len() as i32);
                ctx.succeeded_indexes = all;
            }
            st.uncounted_terminated_pods =
                Some(UncountedTerminatedPods { succeeded: Some(uncounted_succeeded.clone()), failed: Some(uncounted_failed.clone()) });
        }
        let now = self.now();
        // The interim condition goes in before any finalizer is removed.
        if let Some(fc) = ctx.finished.clone() {
            let st = ctx.job.status.get_or_insert_with(Default::default);
            let conds = st.conditions.get_or_insert_with(Vec::new);
            let reason = fc.reason.clone().unwrap_or_default();
            let message = fc.message.clone().unwrap_or_default();
            if fc.type_ == "FailureTarget" {
                if condition_true(conds, "FailureTarget").is_none() {
                    conds.push(fc.clone());
                }
                ctx.finished = Some(new_condition("Failed", "True", &reason, &message, now));
            } else if fc.type_ == "SuccessCriteriaMet" {
                if condition_true(conds, "SuccessCriteriaMet").is_none() {
                    conds.push(fc.clone());
                }
                ctx.finished = Some(new_condition("Complete", "True", &reason, &message, now));
            }
        }
        // Step 1: what is about to be counted is written down first.
        if normalized(ctx.job.status.as_ref()) != normalized(Some(original)) {
            ctx.job = self.update_status(&ctx.job).await?;
        }
        self.backoff.lock().expect("lock").insert(key.clone(), ctx.backoff);
        let written = normalized(ctx.job.status.as_ref());
        // Step 2: finalizers go.
        let mut rm_err = None;
        if !to_remove.is_empty() {
            {
                let mut fe = self.finalizer_expectations.lock().expect("lock");
                let set = fe.entry(key.clone()).or_default();
                for p in &to_remove {
                    set.insert(p.metadata.uid.clone().unwrap_or_default());
                }
            }
            let mut futs: FuturesUnordered<_> = to_remove
                .iter()
                .map(|p| async move {
                    let r = self.remove_finalizer(p).await;
                    (p.metadata.uid.clone().unwrap_or_default(), r)
                })
                .collect();
            while let Some((uid, r)) = futs.next().await {
                match r {
                    Ok(()) => {
                        uids_with_finalizer.remove(&uid);
                    }
                    Err(e) => {
                        self.finalizer_removal_observed(key, &uid);
                        if is_not_found(&e) {
                            uids_with_finalizer.remove(&uid);
                        } else {
                            rm_err.get_or_insert(Error::Api("removing tracking finalizers", e));
                        }
                    }
                }
            }
        }
        // Step 3: what lost its finalizer moves to the counters.
        {
            let st = ctx.job.status.get_or_insert_with(Default::default);
            let u = st.uncounted_terminated_pods.clone().unwrap_or_default();
            let mut us = u.succeeded.unwrap_or_default();
            let mut uf = u.failed.unwrap_or_default();
            clean_uncounted(st, &mut us, &mut uf, &uids_with_finalizer);
            st.uncounted_terminated_pods = Some(UncountedTerminatedPods { succeeded: Some(us), failed: Some(uf) });
        }
        let finished = !reached_max && rm_err.is_none() && self.enact_finished(ctx);
        if normalized(ctx.job.status.as_ref()) != written {
            ctx.job = self.update_status(&ctx.job).await?;
            if finished {
                self.record_finished(&ctx.job, ctx.finished.as_ref().expect("finished"));
            }
        }
        if reached_max {
            ctx.requeue_after(Duration::ZERO);
        }
        match rm_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Upstream's `enactJobFinished`: the final condition, once nothing is
    /// left uncounted or terminating.
    fn enact_finished(&self, ctx: &mut SyncCtx) -> bool {
        let Some(fc) = ctx.finished.clone() else { return false };
        let st = ctx.job.status.get_or_insert_with(Default::default);
        let uncounted = st.uncounted_terminated_pods.clone().unwrap_or_default();
        if uncounted.succeeded.unwrap_or_default().len() + uncounted.failed.unwrap_or_default().len() > 0 {
            return false;
        }
        if ctx.terminating > 0 {
            tracing::debug!(job = %ctx.job.name_any(), terminating = ctx.terminating, "delaying the terminal condition until pods are gone");
            return false;
        }
        let now = self.now();
        let conds = st.conditions.get_or_insert_with(Vec::new);
        ensure_condition(conds, &fc.type_, &fc.status, fc.reason.as_deref().unwrap_or(""), fc.message.as_deref().unwrap_or(""), now);
        if fc.type_ == "Complete" {
            st.completion_time = Some(Time(now));
        }
        true
    }

    fn record_finished(&self, job: &Job, fc: &JobCondition) {
        if fc.type_ == "Complete" {
            let s = spec(job);
            let succeeded = job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0);
            if s.completions.map(|c| succeeded > c).unwrap_or(false) {
                self.event(job, EventType::Warning, "TooManySucceededPods", "Too many succeeded pods running after completion count reached");
            }
            self.event(job, EventType::Normal, "Completed", "Job completed");
            tracing::info!(job = %job.name_any(), namespace = ?job.metadata.namespace, "job completed");
        } else {
            let reason = fc.reason.clone().unwrap_or_default();
            self.event(job, EventType::Warning, &reason, fc.message.clone().unwrap_or_default());
            tracing::info!(job = %job.name_any(), namespace = ?job.metadata.namespace, reason = %reason, "job failed");
        }
    }

    async fn update_status(&self, job: &Job) -> Result<Job, Error> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), job.metadata.namespace.as_deref().unwrap_or_default());
        let mut body = job.clone();
        body.metadata.managed_fields = None;
        body.status = Some(normalized(job.status.as_ref()));
        api.replace_status(&job.name_any(), &PostParams::default(), &body).await.map_err(api_err("updating job status"))
    }
}

/// The status as upstream serializes it (`omitempty`): zero counters, empty
/// lists and strings left out, so comparisons do not depend on how the
/// server stores them.
fn normalized(st: Option<&JobStatus>) -> JobStatus {
    let mut st = st.cloned().unwrap_or_default();
    for n in [&mut st.active, &mut st.succeeded, &mut st.failed] {
        if *n == Some(0) {
            *n = None;
        }
    }
    for s in [&mut st.completed_indexes, &mut st.failed_indexes] {
        if s.as_deref() == Some("") {
            *s = None;
        }
    }
    if st.conditions.as_ref().map(Vec::is_empty).unwrap_or(false) {
        st.conditions = None;
    }
    if let Some(u) = st.uncounted_terminated_pods.as_mut() {
        for l in [&mut u.succeeded, &mut u.failed] {
            if l.as_ref().map(Vec::is_empty).unwrap_or(false) {
                *l = None;
            }
        }
    }
    st
}

/// Upstream's `cleanUncountedPodsWithoutFinalizers`: uids whose pods no
/// longer have the finalizer move from the uncounted lists to the counters.
fn clean_uncounted(st: &mut JobStatus, succeeded: &mut Vec<String>, failed: &mut Vec<String>, with_finalizer: &HashSet<String>) {
    let before = succeeded.len();
    succeeded.retain(|u| with_finalizer.contains(u));
    let moved = before - succeeded.len();
    if moved > 0 {
        st.succeeded = Some(st.succeeded.unwrap_or(0) + moved as i32);
    }
    let before = failed.len();
    failed.retain(|u| with_finalizer.contains(u));
    let moved = before - failed.len();
    if moved > 0 {
        st.failed = Some(st.failed.unwrap_or(0) + moved as i32);
    }
    st.uncounted_terminated_pods = Some(UncountedTerminatedPods { succeeded: Some(succeeded.clone()), failed: Some(failed.clone()) });
}

/// Upstream's `pastBackoffLimitOnFailure`: with `restartPolicy: OnFailure`
/// restarts of running pods count against the backoff limit.
fn past_backoff_limit_on_failure(job: &Job, pods: &[Arc<Pod>]) -> bool {
    let s = spec(job);
    if s.template.spec.as_ref().and_then(|p| p.restart_policy.as_deref()) != Some("OnFailure") {
        return false;
    }
    let mut restarts = 0;
    for p in pods {
        if matches!(phase(p), "Running" | "Pending") {
            let st = p.status.clone().unwrap_or_default();
            for cs in st.init_container_statuses.iter().flatten().chain(st.container_statuses.iter().flatten()) {
                restarts += cs.restart_count;
            }
        }
    }
    let limit = s.backoff_limit.unwrap_or(6);
    if limit == 0 { restarts > 0 } else { restarts >= limit }
}

/// Upstream's `pastActiveDeadline`.
fn past_active_deadline(job: &Job, now: Timestamp) -> bool {
    let Some(ads) = job.spec.as_ref().and_then(|s| s.active_deadline_seconds) else { return false };
    let Some(start) = job.status.as_ref().and_then(|s| s.start_time.as_ref()) else { return false };
    if is_suspended(job) {
        return false;
    }
    now.duration_since(start.0) >= SignedDuration::from_secs(ads)
}

/// Time left before a finished Job's TTL expires (zero: now), or `None`
/// if it has none or is not finished or already being deleted.
pub fn ttl_left(job: &Job, now: Timestamp) -> Option<Duration> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished_at = finished_condition(job)?.last_transition_time.as_ref()?.0;
    Some(kit::until(now, finished_at + SignedDuration::from_secs(ttl as i64)))
}

/// Upstream's `matchSuccessPolicy`: the message of the first rule met.
fn match_success_policy(s: &k8s_openapi::api::batch::v1::JobSpec, completions: i32, succeeded: &BTreeSet<i32>) -> Option<String> {
    let policy = s.success_policy.as_ref()?;
    for (i, rule) in policy.rules.iter().enumerate() {
        let matched = match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(ix), count) => {
                let wanted = indexes::parse(ix, completions);
                let n = wanted.intersection(succeeded).count() as i32;
                match count {
                    Some(c) => n >= c,
                    None => n == wanted.len() as i32,
                }
            }
            (None, Some(c)) => succeeded.len() as i32 >= c,
            (None, None) => false,
        };
        if matched {
            return Some(format!("Matched rules at index {i}"));
        }
    }
    None
}

/// Upstream's `activePodsForRemoval`: for Indexed Jobs pods with invalid or
/// duplicated indexes first, then the least far along.
fn active_pods_for_removal(job: &Job, active: &[Arc<Pod>], rm_at_least: usize) -> Vec<Arc<Pod>> {
    let mut rm: Vec<Arc<Pod>> = Vec::new();
    let mut left: Vec<Arc<Pod>> = Vec::new();
    if is_indexed(job) {
        let completions = job.spec.as_ref().and_then(|s| s.completions).unwrap_or(0);
        let mut by_index: BTreeMap<i32, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in active {
            match completion_index(p).filter(|i| *i < completions) {
                Some(ix) => by_index.entry(ix).or_default().push(p.clone()),
                None => rm.push(p.clone()),
            }
        }
        for (_, mut same) in by_index {
            same.sort_by(|a, b| pods::deletion_order(a, b));
            let keep = same.pop().expect("not empty");
            rm.extend(same);
            left.push(keep);
        }
    } else {
        left = active.to_vec();
    }
    if rm.len() < rm_at_least {
        left.sort_by(|a, b| pods::deletion_order(a, b));
        let n = rm_at_least - rm.len();
        rm.extend(left.into_iter().take(n));
    }
    rm
}

/// Upstream's `firstPendingIndexes`: the lowest indexes neither succeeded
/// nor being worked on.
fn first_pending_indexes(ctx: &SyncCtx, count: usize, completions: i32) -> Vec<i32> {
    let mut busy = ctx.succeeded_indexes.clone();
    for p in &ctx.active_pods {
        if let Some(ix) = completion_index(p) {
            busy.insert(ix);
        }
    }
    (0..completions).filter(|i| !busy.contains(i)).take(count).collect()
}

/// Upstream's `podGenerateNameWithIndex`: `<job>-<index>-`, the job name
/// shortened so the generated name fits.
fn generate_name_with_index(job: &str, index: i32) -> String {
    const MAX_GENERATED_NAME_LENGTH: usize = 58;
    let suffix = format!("-{index}-");
    let mut prefix = format!("{job}{suffix}");
    if prefix.len() > MAX_GENERATED_NAME_LENGTH {
        let keep = MAX_GENERATED_NAME_LENGTH.saturating_sub(suffix.len());
        prefix = format!("{}{suffix}", &job[..keep.min(job.len())]);
    }
    prefix
}

/// Upstream's `addCompletionIndexEnvVariables`: `JOB_COMPLETION_INDEX` from
/// the index label (PodIndexLabel, on since 1.28) in every container.
fn add_completion_index_env(template: &mut k8s_openapi::api::core::v1::PodTemplateSpec) {
    let Some(spec) = template.spec.as_mut() else { return };
    let env = EnvVar {
        name: COMPLETION_INDEX_ENV.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { api_version: None, field_path: format!("metadata.labels['{COMPLETION_INDEX_ANNOTATION}']") }),
            ..Default::default()
        }),
    };
    for c in spec.init_containers.iter_mut().flatten().chain(spec.containers.iter_mut()) {
        let vars = c.env.get_or_insert_with(Vec::new);
        if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
            vars.push(env.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_six_minutes() {
        let now = Timestamp::now();
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(360);
        let r = |n| BackoffRecord { failures_after_last_success: n, last_failure: Some(now) };
        assert_eq!(r(0).remaining(now, base, max), Duration::ZERO);
        assert_eq!(r(1).remaining(now, base, max), Duration::from_secs(10));
        assert_eq!(r(2).remaining(now, base, max), Duration::from_secs(20));
        assert_eq!(r(4).remaining(now, base, max), Duration::from_secs(80));
        assert_eq!(r(10).remaining(now, base, max), max);
        let later = now + SignedDuration::from_secs(7);
        assert_eq!(r(1).remaining(later, base, max), Duration::from_secs(3));
    }

    #[test]
    fn backoff_record_resets_on_success() {
        let t = |s: i64| (Timestamp::UNIX_EPOCH + SignedDuration::from_secs(s)).to_string();
        let finished = |p: &str, at: i64| {
            pod(json!({"metadata": {"name": "x", "creationTimestamp": t(0)}, "status": {"phase": p,
                "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 1, "finishedAt": t(at)}}}]}}))
        };
        let r = BackoffRecord::default().next(&[], &[finished("Failed", 10), finished("Failed", 20)]);
        assert_eq!(r.failures_after_last_success, 2);
        assert_eq!(r.last_failure, Some(Timestamp::UNIX_EPOCH + SignedDuration::from_secs(20)));
        let r = r.next(&[finished("Succeeded", 30)], &[finished("Failed", 40), finished("Failed", 25)]);
        assert_eq!(r.failures_after_last_success, 1, "only failures after the last success count");
        assert_eq!(r.last_failure, Some(Timestamp::UNIX_EPOCH + SignedDuration::from_secs(40)));
    }

    #[test]
    fn generated_selector_matches_upstream() {
        let job: Job = serde_json::from_value(json!({"metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"template": {"metadata": {"labels": {"app": "pi"}}, "spec": {"containers": []}}}})).unwrap();
        let j = with_generated_selector(&job);
        let s = j.spec.unwrap();
        assert_eq!(serde_json::to_value(&s.selector).unwrap(), json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}}));
        let labels = s.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels.get("app").map(String::as_str), Some("pi"));
        assert_eq!(labels.get("batch.kubernetes.io/job-name").map(String::as_str), Some("pi"));
        assert_eq!(labels.get("job-name").map(String::as_str), Some("pi"));
        assert_eq!(labels.get("controller-uid").map(String::as_str), Some("u-1"));
        assert_eq!(labels.get("batch.kubernetes.io/controller-uid").map(String::as_str), Some("u-1"));
    }

    #[test]
    fn indexed_removal_drops_duplicates_and_out_of_range_first() {
        let job: Job = serde_json::from_value(json!({"metadata": {"name": "j"}, "spec": {"completionMode": "Indexed", "completions": 3,
            "template": {"spec": {"containers": []}}}})).unwrap();
        let p = |name: &str, ix: &str| pod(json!({"metadata": {"name": name, "annotations": {"batch.kubernetes.io/job-completion-index": ix}}, "status": {"phase": "Pending"}}));
        let active = vec![p("a", "0"), p("b", "0"), p("c", "1"), p("d", "7")];
        let rm: Vec<String> = active_pods_for_removal(&job, &active, 0).iter().map(|p| p.name_any()).collect();
        assert_eq!(rm.len(), 2);
        assert!(rm.contains(&"d".to_string()), "{rm:?}");
        assert!(rm.contains(&"a".to_string()) || rm.contains(&"b".to_string()));
    }

    #[test]
    fn generate_name_with_index_fits() {
        assert_eq!(generate_name_with_index("pi", 3), "pi-3-");
        let long = "x".repeat(70);
        let g = generate_name_with_index(&long, 12);
        assert_eq!(g.len(), 58);
        assert!(g.ends_with("-12-"));
    }

    #[test]
    fn success_policy_rules() {
        let s: k8s_openapi::api::batch::v1::JobSpec = serde_json::from_value(json!({"template": {"spec": {"containers": []}},
            "successPolicy": {"rules": [{"succeededIndexes": "0-2", "succeededCount": 2}, {"succeededCount": 4}]}})).unwrap();
        let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
        assert_eq!(match_success_policy(&s, 10, &set(&[0])), None);
        assert_eq!(match_success_policy(&s, 10, &set(&[0, 2])).as_deref(), Some("Matched rules at index 0"));
        assert_eq!(match_success_policy(&s, 10, &set(&[5, 6, 7, 8])).as_deref(), Some("Matched rules at index 1"));
    }

    #[test]
    fn ttl_counts_from_the_finish() {
        let now = Timestamp::now();
        let at = (now - SignedDuration::from_secs(3)).to_string();
        let job: Job = serde_json::from_value(json!({"metadata": {"name": "j"}, "spec": {"ttlSecondsAfterFinished": 5, "template": {"spec": {"containers": []}}},
            "status": {"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": at}]}})).unwrap();
        let left = ttl_left(&job, now).unwrap();
        assert!(left <= Duration::from_secs(2) && left >= Duration::from_secs(1), "{left:?}");
        assert_eq!(ttl_left(&job, now + SignedDuration::from_secs(10)), Some(Duration::ZERO));
    }
}
