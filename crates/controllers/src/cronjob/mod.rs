//! The CronJob controller (upstream's `pkg/controller/cronjob`, the v2
//! controller of 1.21+).
//!
//! At each scheduled time it creates a Job from `spec.jobTemplate`, named
//! `<cronjob>-<scheduled time in minutes since the epoch>` (the name is the
//! lock that keeps a time from running twice) and annotated with
//! `batch.kubernetes.io/cronjob-scheduled-timestamp`, then records it in
//! `status.active` and `status.lastScheduleTime`. Finished Jobs leave
//! `status.active` (and set `status.lastSuccessfulTime`); the oldest
//! finished ones beyond `successfulJobsHistoryLimit` /
//! `failedJobsHistoryLimit` are deleted.
//!
//! - `spec.schedule`: robfig/cron's standard syntax ([`schedule`]); a
//!   `TZ=`/`CRON_TZ=` prefix still works for old objects but draws an
//!   UnsupportedSchedule warning, as upstream (the API rejects it in new
//!   ones).
//! - `spec.timeZone`: an IANA zone from the system tzdb; unknown zones
//!   stop scheduling with an UnknownTimeZone warning. Without it, the
//!   controller's local zone, as upstream.
//! - `startingDeadlineSeconds`: a run more than that late is skipped
//!   (MissSchedule); only the most recent missed time is ever run.
//! - `concurrencyPolicy`: Allow; Forbid skips a run while one is active
//!   (JobAlreadyActive); Replace deletes the active ones first.
//! - `suspend`: no new runs.
//!
//! It sleeps until the next scheduled time (plus 100ms, as upstream)
//! instead of polling; Job changes wake it at once. The clock is
//! injectable ([`Config::clock`]) so tests can make a minute pass quickly.

pub mod schedule;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::task::JoinSet;

use crate::informer::{Change, SharedInformers};
use crate::kit::{self, Clock, Key};
use crate::pod_control::{EventRecorder, EventType, controller_of, controller_ref, error_message, is_namespace_terminating, is_not_found, object_ref};
use crate::queue::{self, Backoff, Queue};
use schedule::Schedule;

/// The annotation with the Job's scheduled time (RFC 3339, in the
/// CronJob's time zone).
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream's `nextScheduleDelta`: wake this long after the scheduled time.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct Config {
    /// CronJobs synced at once (upstream `--concurrent-cron-job-syncs`: 5).
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
    #[error("could not replace job {0}")]
    Replace(String),
}

struct Controller {
    client: Client,
    config: Config,
    cronjobs: Store<CronJob>,
    jobs: Store<Job>,
    recorder: EventRecorder,
}

/// Runs the CronJob controller with the default [`Config`].
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with(client, Config::default()).await
}

/// Runs the CronJob controller until its informers stop.
pub async fn run_with(client: Client, config: Config) -> anyhow::Result<()> {
    run_shared(client.clone(), config, SharedInformers::new(client)).await
}

/// [`run_with`] on the process's shared informers.
pub async fn run_shared(client: Client, config: Config, informers: SharedInformers) -> anyhow::Result<()> {
    let (queue, workers) = queue::queue::<Key>(Backoff::CONTROLLER);
    let cj_informer = informers.get::<CronJob>();
    let job_informer = informers.get::<Job>();
    let (cronjobs, jobs) = (cj_informer.store(), job_informer.store());
    let ctl = Arc::new(Controller {
        recorder: EventRecorder::new(client.clone(), "cronjob-controller"),
        client,
        config,
        cronjobs: cronjobs.clone(),
        jobs: jobs.clone(),
    });
    let mut tasks = JoinSet::new();
    let q = queue.clone();
    tasks.spawn(cj_informer.run("cronjobs", move |ch| on_cronjob(&q, ch)));
    let q = queue.clone();
    tasks.spawn(job_informer.run("jobs", move |ch| on_job(&q, ch)));
    let (_, _) = tokio::join!(cronjobs.wait_until_ready(), jobs.wait_until_ready());
    tracing::info!("cronjob controller synced");
    for cj in cronjobs.state() {
        queue.add(Key::of(&*cj));
    }
    let workers_n = ctl.config.workers;
    let c = ctl.clone();
    tasks.spawn(kit::run_workers("cronjob", queue, workers, workers_n, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    }));
    let _ = tasks.join_next().await;
    anyhow::bail!("cronjob controller stopped")
}

fn on_cronjob(queue: &Queue<Key>, change: Change<CronJob>) {
    match change {
        Change::Added(cj) | Change::Updated(_, cj) | Change::Deleted(cj) => queue.add(Key::of(&*cj)),
    }
}

fn cronjob_of(job: &Job) -> Option<Key> {
    let r = controller_of(&job.metadata)?;
    (r.kind == "CronJob" && r.api_version == "batch/v1").then(|| Key::new(job.namespace().unwrap_or_default(), &r.name))
}

fn on_job(queue: &Queue<Key>, change: Change<Job>) {
    match change {
        Change::Added(j) | Change::Deleted(j) => {
            if let Some(k) = cronjob_of(&j) {
                queue.add(k);
            }
        }
        Change::Updated(old, new) => {
            let (o, n) = (cronjob_of(&old), cronjob_of(&new));
            if let Some(o) = o.clone().filter(|o| Some(o) != n.as_ref()) {
                queue.add(o);
            }
            if let Some(n) = n {
                queue.add(n);
            }
        }
    }
}

/// The Job's finished condition type (`Complete` or `Failed`), if any.
fn finished(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

fn active_list(cj: &mut CronJob) -> &mut Vec<ObjectReference> {
    cj.status.get_or_insert_with(Default::default).active.get_or_insert_with(Vec::new)
}

fn in_active_list(cj: &CronJob, uid: &str) -> bool {
    cj.status.as_ref().and_then(|s| s.active.as_ref()).map(|a| a.iter().any(|r| r.uid.as_deref() == Some(uid))).unwrap_or(false)
}

fn in_active_list_by_name(cj: &CronJob, name: &str) -> bool {
    cj.status.as_ref().and_then(|s| s.active.as_ref()).map(|a| a.iter().any(|r| r.name.as_deref() == Some(name))).unwrap_or(false)
}

fn delete_from_active_list(cj: &mut CronJob, uid: &str) {
    active_list(cj).retain(|r| r.uid.as_deref() != Some(uid));
}

/// Upstream's `getJobName`: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cj_name: &str, scheduled: Timestamp) -> String {
    format!("{cj_name}-{}", scheduled.as_second().div_euclid(60))
}

/// Go's RFC 3339 (`Z` for UTC, else `±hh:mm`).
pub fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    let off = z.offset().seconds();
    let base = z.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    if off == 0 {
        format!("{base}Z")
    } else {
        let sign = if off < 0 { '-' } else { '+' };
        let a = off.abs();
        format!("{base}{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
    }
}

/// Upstream's `getJobFromTemplate2`.
pub fn job_from_template(cj: &CronJob, scheduled: Timestamp) -> Job {
    let spec = cj.spec.clone().unwrap_or_default();
    let tm = spec.job_template.metadata.clone().unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    // The annotation's zone: spec.timeZone, or UTC (Go's LoadLocation("")).
    let tz = schedule::load_location(spec.time_zone.as_deref().unwrap_or("")).unwrap_or(TimeZone::UTC);
    annotations.insert(SCHEDULED_TIMESTAMP_ANNOTATION.into(), rfc3339_in(scheduled, &tz));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&cj.name_any(), scheduled)),
            labels: tm.labels.or_else(|| Some(BTreeMap::new())).filter(|l| !l.is_empty()),
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: spec.job_template.spec.clone(),
        status: None,
    }
}

/// How many scheduled times were missed (upstream's `missedSchedulesType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    Many,
}

/// Upstream's `mostRecentScheduleTime`: the earliest time considered, the
/// most recent scheduled time in `(earliest, now]` if any, and how many
/// were missed. `earliest` is the last schedule time (or the creation),
/// moved up to `now - startingDeadlineSeconds` if `include_deadline`.
pub fn most_recent_schedule_time(
    cj: &CronJob,
    now: Timestamp,
    sched: &Schedule,
    tz: &TimeZone,
    include_deadline: bool,
) -> Result<(Timestamp, Option<Timestamp>, Missed), String> {
    let mut earliest = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .or(cj.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    if include_deadline
        && let Some(sds) = cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds) {
            let deadline = now - SignedDuration::from_secs(sds);
            if deadline > earliest {
                earliest = deadline;
            }
        }
    let Some(t1) = sched.next(earliest, tz) else { return Ok((earliest, None, Missed::None)) };
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    let Some(t2) = sched.next(t1, tz) else { return Ok((earliest, Some(t1), Missed::None)) };
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    // A rough count: how many schedule intervals fit between t1 and now.
    let between = (t2.duration_since(t1).as_millis() as i64 + 500).div_euclid(1000);
    if between < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    let elapsed = now.duration_since(t1).as_secs();
    let missed = elapsed / between + 1;
    let potential_earliest = t1 + SignedDuration::from_secs((missed - 2) * between);
    let mut most_recent = None;
    let mut t = sched.next(potential_earliest, tz);
    while let Some(x) = t.filter(|x| *x <= now) {
        most_recent = Some(x);
        t = sched.next(x, tz);
    }
    let kind = if missed > 100 { Missed::Many } else if missed > 0 { Missed::Few } else { Missed::None };
    Ok((earliest, most_recent, kind))
}

/// Upstream's `nextScheduleTimeDuration`: how long until the next
/// scheduled time after the most recent one (plus 100ms). `None` if the
/// schedule never fires again.
pub fn next_schedule_duration(cj: &CronJob, now: Timestamp, sched: &Schedule, tz: &TimeZone) -> Option<Duration> {
    let most_recent = match most_recent_schedule_time(cj, now, sched, tz, false) {
        Err(_) => now,
        Ok((earliest, None, _)) => earliest,
        Ok((_, Some(t), _)) => t,
    };
    let next = sched.next(most_recent, tz)?;
    Some(kit::until(now, next) + NEXT_SCHEDULE_DELTA)
}

/// Upstream's `byJobStartTime`: started before not started, earlier first,
/// then by name.
fn by_start_time(a: &Job, b: &Job) -> std::cmp::Ordering {
    let st = |j: &Job| j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
    match (st(a), st(b)) {
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (x, y) if x == y => a.name_any().cmp(&b.name_any()),
        (x, y) => x.cmp(&y),
    }
}

fn job_ref(job: &Job) -> ObjectReference {
    object_ref(job)
}

impl Controller {
    fn now(&self) -> Timestamp {
        (self.config.clock)()
    }

    fn event(&self, cj: &CronJob, type_: EventType, reason: &str, message: impl Into<String>) {
        self.recorder.event(object_ref(cj), type_, reason, message);
    }

    fn jobs_api(&self, ns: &str) -> Api<Job> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn sync(&self, key: &Key) -> Result<Option<Duration>, Error> {
        let Some(cj) = self.cronjobs.get(&key.obj_ref()) else { return Ok(None) };
        let uid = cj.uid().unwrap_or_default();
        let jobs: Vec<Arc<Job>> = self
            .jobs
            .state()
            .into_iter()
            .filter(|j| j.metadata.namespace.as_deref() == Some(key.namespace.as_str()))
            .filter(|j| controller_of(&j.metadata).map(|r| r.uid == uid).unwrap_or(false))
            .collect();
        let mut cj = (*cj).clone();
        let cleaned = self.cleanup_finished_jobs(&mut cj, &jobs).await;
        let (requeue, synced, err) = self.sync_cronjob(&mut cj, &jobs).await;
        if let Some(e) = &err {
            tracing::debug!(cronjob = %key, error = %e, "error syncing cronjob");
        }
        if cleaned || synced {
            let api: Api<CronJob> = Api::namespaced(self.client.clone(), &key.namespace);
            cj.metadata.managed_fields = None;
            api.replace_status(&key.name, &PostParams::default(), &cj).await.map_err(|e| Error::Api("updating cronjob status", e))?;
        }
        match (requeue, err) {
            (Some(d), _) => Ok(Some(d)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }

    /// Upstream's `cleanupFinishedJobs`: the finished Jobs beyond the
    /// history limits go, oldest first. Returns whether the status changed.
    async fn cleanup_finished_jobs(&self, cj: &mut CronJob, jobs: &[Arc<Job>]) -> bool {
        let spec = cj.spec.clone().unwrap_or_default();
        if spec.failed_jobs_history_limit.is_none() && spec.successful_jobs_history_limit.is_none() {
            return false;
        }
        let mut succeeded: Vec<&Job> = jobs.iter().filter(|j| finished(j) == Some("Complete")).map(|j| &**j).collect();
        let mut failed: Vec<&Job> = jobs.iter().filter(|j| finished(j) == Some("Failed")).map(|j| &**j).collect();
        let mut changed = false;
        for (list, limit) in [(&mut succeeded, spec.successful_jobs_history_limit), (&mut failed, spec.failed_jobs_history_limit)] {
            let Some(limit) = limit else { continue };
            let to_delete = list.len() as i64 - limit.max(0) as i64;
            if to_delete <= 0 {
                continue;
            }
            list.sort_by(|a, b| by_start_time(a, b));
            for j in list.iter().take(to_delete as usize) {
                tracing::debug!(cronjob = %cj.name_any(), job = %j.name_any(), "removing job beyond the history limit");
                if self.delete_job(cj, j).await {
                    changed = true;
                }
            }
        }
        changed
    }

    /// Upstream's `deleteJob`: deletes the Job (Background propagation)
    /// and its entry in `status.active`.
    async fn delete_job(&self, cj: &mut CronJob, job: &Job) -> bool {
        let ns = job.namespace().unwrap_or_default();
        match self.jobs_api(&ns).delete(&job.name_any(), &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                self.event(cj, EventType::Warning, "FailedDelete", format!("Deleted job: {}", error_message(&e)));
                return false;
            }
        }
        delete_from_active_list(cj, job.metadata.uid.as_deref().unwrap_or(""));
        self.event(cj, EventType::Normal, "SuccessfulDelete", format!("Deleted job {}", job.name_any()));
        true
    }

    /// Upstream's `syncCronJob`: (requeue after, status changed, error).
    async fn sync_cronjob(&self, cj: &mut CronJob, jobs: &[Arc<Job>]) -> (Option<Duration>, bool, Option<Error>) {
        let now = self.now();
        let mut changed = false;
        let ns = cj.namespace().unwrap_or_default();
        let mut children = std::collections::HashSet::new();
        for j in jobs {
            let juid = j.uid().unwrap_or_default();
            children.insert(juid.clone());
            let found = in_active_list(cj, &juid);
            let fin = finished(j);
            if !found && fin.is_none() {
                // Perhaps our status is stale: check a fresh CronJob first.
                let api: Api<CronJob> = Api::namespaced(self.client.clone(), &ns);
                match api.get_opt(&cj.name_any()).await {
                    Ok(Some(fresh)) if in_active_list(&fresh, &juid) => {
                        *cj = fresh;
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => return (None, changed, Some(Error::Api("reading cronjob", e))),
                }
                self.event(cj, EventType::Warning, "UnexpectedJob", format!("Saw a job that the controller did not create or forgot: {}", j.name_any()));
                // Upstream does not adopt it into status.active either.
            } else if found && fin.is_some() {
                delete_from_active_list(cj, &juid);
                self.event(cj, EventType::Normal, "SawCompletedJob", format!("Saw completed job: {}, condition: {}", j.name_any(), fin.unwrap_or_default()));
                changed = true;
            } else if fin == Some("Complete") {
                let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
                let st = cj.status.get_or_insert_with(Default::default);
                match (&st.last_successful_time, &done) {
                    (None, _)
                        if done.is_some() => {
                            st.last_successful_time = done;
                            changed = true;
                        }
                    (Some(last), Some(d)) if d.0 > last.0 => {
                        st.last_successful_time = done;
                        changed = true;
                    }
                    _ => {}
                }
            }
        }
        // Active Jobs that are gone (checked with a fresh read).
        let active: Vec<ObjectReference> = cj.status.as_ref().and_then(|s| s.active.clone()).unwrap_or_default();
        for r in active {
            let ruid = r.uid.clone().unwrap_or_default();
            if children.contains(&ruid) {
                continue;
            }
            let name = r.name.clone().unwrap_or_default();
            match self.jobs_api(r.namespace.as_deref().unwrap_or(&ns)).get_opt(&name).await {
                Ok(None) => {
                    self.event(cj, EventType::Normal, "MissingJob", format!("Active job went missing: {name}"));
                    delete_from_active_list(cj, &ruid);
                    changed = true;
                }
                Ok(Some(_)) => {}
                Err(e) => return (None, changed, Some(Error::Api("reading job", e))),
            }
        }
        if cj.metadata.deletion_timestamp.is_some() {
            return (None, changed, None);
        }
        let spec = cj.spec.clone().unwrap_or_default();
        let tz = match &spec.time_zone {
            Some(name) => match schedule::load_location(name) {
                Ok(tz) => tz,
                Err(e) => {
                    tracing::debug!(cronjob = %cj.name_any(), time_zone = %name, "not starting job: invalid time zone");
                    self.event(cj, EventType::Warning, "UnknownTimeZone", format!("invalid timeZone: {name:?}: {e}"));
                    return (None, changed, None);
                }
            },
            None => TimeZone::system(),
        };
        if spec.suspend == Some(true) {
            tracing::debug!(cronjob = %cj.name_any(), "not starting job: the cronjob is suspended");
            return (None, changed, None);
        }
        if spec.schedule.contains("TZ") {
            self.event(
                cj,
                EventType::Warning,
                "UnsupportedSchedule",
                format!(
                    "CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
                    spec.schedule
                ),
            );
        }
        let sched = match schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                self.event(cj, EventType::Warning, "UnparseableSchedule", format!("unparseable schedule: {:?} : {e}", spec.schedule));
                return (None, changed, None);
            }
        };
        let scheduled = match most_recent_schedule_time(cj, now, &sched, &tz, true) {
            Err(e) => {
                self.event(cj, EventType::Warning, "InvalidSchedule", format!("invalid schedule: {} : {e}", spec.schedule));
                return (None, changed, None);
            }
            Ok((_, None, _)) => {
                // Nothing due (the queue wakes us at the scheduled time).
                return (next_schedule_duration(cj, now, &sched, &tz), changed, None);
            }
            Ok((_, Some(t), missed)) => {
                if missed == Missed::Many {
                    self.event(
                        cj,
                        EventType::Warning,
                        "TooManyMissedTimes",
                        "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
                    );
                }
                t
            }
        };
        let requeue = next_schedule_duration(cj, now, &sched, &tz);
        if let Some(sds) = spec.starting_deadline_seconds
            && scheduled + SignedDuration::from_secs(sds) < now {
                let when = scheduled.to_zoned(TimeZone::UTC).strftime("%a, %d %b %Y %H:%M:%S %z").to_string();
                self.event(cj, EventType::Warning, "MissSchedule", format!("Missed scheduled time to start a job: {when}"));
                return (requeue, changed, None);
            }
        let name = job_name(&cj.name_any(), scheduled);
        let last = cj.status.as_ref().and_then(|s| s.last_schedule_time.as_ref()).map(|t| t.0);
        if in_active_list_by_name(cj, &name) || last == Some(scheduled) {
            tracing::debug!(cronjob = %cj.name_any(), %scheduled, "not starting job: the scheduled time is already processed");
            return (requeue, changed, None);
        }
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        let active_now = cj.status.as_ref().and_then(|s| s.active.as_ref()).map(|a| a.len()).unwrap_or(0);
        if policy == "Forbid" && active_now > 0 {
            tracing::debug!(cronjob = %cj.name_any(), "not starting job: prior execution still running and concurrency policy is Forbid");
            self.event(cj, EventType::Normal, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid");
            return (requeue, changed, None);
        }
        if policy == "Replace" {
            let active: Vec<ObjectReference> = cj.status.as_ref().and_then(|s| s.active.clone()).unwrap_or_default();
            for r in active {
                let jname = r.name.clone().unwrap_or_default();
                let job = match self.jobs_api(r.namespace.as_deref().unwrap_or(&ns)).get(&jname).await {
                    Ok(j) => j,
                    Err(e) => {
                        self.event(cj, EventType::Warning, "FailedGet", format!("Get job: {}", error_message(&e)));
                        return (None, changed, Some(Error::Api("reading job to replace", e)));
                    }
                };
                if !self.delete_job(cj, &job).await {
                    return (None, changed, Some(Error::Replace(format!("{ns}/{jname}"))));
                }
                changed = true;
            }
        }
        let req = job_from_template(cj, scheduled);
        let created = match self.jobs_api(&ns).create(&PostParams::default(), &req).await {
            Ok(j) => {
                tracing::info!(cronjob = %cj.name_any(), job = %j.name_any(), %scheduled, "created job");
                self.event(cj, EventType::Normal, "SuccessfulCreate", format!("Created job {}", j.name_any()));
                j
            }
            Err(e) if is_namespace_terminating(&e) => return (None, changed, Some(Error::Api("creating job", e))),
            Err(e) if crate::pod_control::status_code(&e) == Some(409) => {
                // Created before, but the status update that followed was lost?
                let existing = match self.jobs_api(&ns).get(&name).await {
                    Ok(j) => j,
                    Err(e) => return (None, changed, Some(Error::Api("reading existing job", e))),
                };
                if !controller_of(&existing.metadata).map(|r| Some(&r.uid) == cj.metadata.uid.as_ref()).unwrap_or(false) {
                    return (None, changed, None);
                }
                if in_active_list(cj, existing.metadata.uid.as_deref().unwrap_or("")) {
                    return (None, changed, None);
                }
                tracing::info!(cronjob = %cj.name_any(), job = %name, "job already exists");
                existing
            }
            Err(e) => {
                self.event(cj, EventType::Warning, "FailedCreate", format!("Error creating job: {}", error_message(&e)));
                return (None, changed, Some(Error::Api("creating job", e)));
            }
        };
        active_list(cj).push(job_ref(&created));
        cj.status.get_or_insert_with(Default::default).last_schedule_time = Some(Time(scheduled));
        (requeue, true, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cronjob(created: &str, last: Option<&str>, sds: Option<i64>) -> CronJob {
        let mut v = json!({"metadata": {"name": "cj", "namespace": "default", "uid": "u", "creationTimestamp": created},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
        if let Some(l) = last {
            v["status"] = json!({"lastScheduleTime": l});
        }
        if let Some(s) = sds {
            v["spec"]["startingDeadlineSeconds"] = json!(s);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn most_recent_time_and_missed_runs() {
        let s = schedule::parse("*/5 * * * *").unwrap();
        let utc = TimeZone::UTC;
        // Nothing due yet.
        let cj = cronjob("2024-01-01T10:01:00Z", None, None);
        assert_eq!(most_recent_schedule_time(&cj, ts("2024-01-01T10:04:00Z"), &s, &utc, true).unwrap().1, None);
        // One due.
        let r = most_recent_schedule_time(&cj, ts("2024-01-01T10:06:00Z"), &s, &utc, true).unwrap();
        assert_eq!((r.1, r.2), (Some(ts("2024-01-01T10:05:00Z")), Missed::None));
        // Several missed: only the most recent runs.
        let r = most_recent_schedule_time(&cj, ts("2024-01-01T10:31:00Z"), &s, &utc, true).unwrap();
        assert_eq!((r.1, r.2), (Some(ts("2024-01-01T10:30:00Z")), Missed::Few));
        // The last schedule time is the start once set.
        let cj = cronjob("2024-01-01T10:01:00Z", Some("2024-01-01T10:30:00Z"), None);
        assert_eq!(most_recent_schedule_time(&cj, ts("2024-01-01T10:33:00Z"), &s, &utc, true).unwrap().1, None);
        // Days later: too many missed.
        let r = most_recent_schedule_time(&cj, ts("2024-01-03T10:33:00Z"), &s, &utc, true).unwrap();
        assert_eq!((r.1, r.2), (Some(ts("2024-01-03T10:30:00Z")), Missed::Many));
        // A starting deadline moves the window: with 60s, 10:30 at 10:33 is out.
        let cj = cronjob("2024-01-01T10:01:00Z", None, Some(60));
        let r = most_recent_schedule_time(&cj, ts("2024-01-01T10:33:00Z"), &s, &utc, true).unwrap();
        assert_eq!(r.1, None);
        let r = most_recent_schedule_time(&cj, ts("2024-01-01T10:33:00Z"), &s, &utc, false).unwrap();
        assert_eq!(r.1, Some(ts("2024-01-01T10:30:00Z")));
    }

    #[test]
    fn requeues_at_the_next_time() {
        let s = schedule::parse("*/5 * * * *").unwrap();
        let cj = cronjob("2024-01-01T10:01:00Z", Some("2024-01-01T10:05:00Z"), None);
        let d = next_schedule_duration(&cj, ts("2024-01-01T10:07:30Z"), &s, &TimeZone::UTC).unwrap();
        assert_eq!(d, Duration::from_millis(150_100));
        let never = schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(next_schedule_duration(&cj, ts("2024-01-01T10:07:30Z"), &never, &TimeZone::UTC), None);
    }

    #[test]
    fn job_names_and_annotations() {
        let t = ts("2024-01-01T10:05:00Z");
        assert_eq!(job_name("hello", t), format!("hello-{}", t.as_second() / 60));
        assert_eq!(job_name("hello", t), "hello-28401725");
        let mut cj = cronjob("2024-01-01T10:01:00Z", None, None);
        let job = job_from_template(&cj, t);
        assert_eq!(job.annotations().get(SCHEDULED_TIMESTAMP_ANNOTATION).map(String::as_str), Some("2024-01-01T10:05:00Z"));
        assert_eq!(job.owner_references()[0].kind, "CronJob");
        cj.spec.as_mut().unwrap().time_zone = Some("Asia/Kolkata".into());
        let job = job_from_template(&cj, t);
        assert_eq!(job.annotations().get(SCHEDULED_TIMESTAMP_ANNOTATION).map(String::as_str), Some("2024-01-01T15:35:00+05:30"));
    }
}
