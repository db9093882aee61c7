//! The pod workers: one task per pod bound to this node, driven by the pod
//! watch (`spec.nodeName=<node>`) and by a relist of the runtime every
//! second (upstream's PLEG), each doing what upstream's `SyncPod` does:
//!
//! 1. images (pull policy Always / IfNotPresent / Never; ErrImagePull, then
//!    ImagePullBackOff with back-off, with events);
//! 2. the sandbox (RunPodSandbox, with the CNI network), recreated if it dies;
//! 3. init containers in order, then app containers, restarted according to
//!    restartPolicy with the crash-loop back-off (10 s doubling to 5 min);
//! 4. the status, through the status subresource;
//! 5. on deletion: each container's preStop hook, then StopContainer with
//!    what is left of the grace period ([`hooks::kill_container`]),
//!    StopPodSandbox and RemovePodSandbox, then the final delete
//!    (gracePeriodSeconds=0);
//! 6. postStart hooks right after a container starts (a failure kills it);
//!    pull credentials from imagePullSecrets ([`credentials`]); configMap,
//!    secret, downwardAPI and projected volumes rewritten every
//!    [`VOLUME_RESYNC`] so that running containers see updates.
//!
//! Nothing is remembered across restarts but what the runtime holds:
//! sandboxes and containers are found by their pod UID label, so a
//! restarted agent adopts running pods instead of recreating them.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::EventType;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use crate::cri::{self, CONTAINER_NAME_LABEL, POD_UID_LABEL, uid_filter, v1 as c};
use crate::hooks::{self, EventSink, HookTarget};
use crate::podstatus::{self, ContainerView, Instance, Observed, RunState};
use crate::probes::{self, Kind, Verdict};
use crate::spec::{self, meta, pod_spec};
use crate::volumes;
use crate::{Agent, FIELD_MANAGER, api_code, containerd, credentials, quantity};

/// How often the files of a running pod's configMap, secret, downwardAPI
/// and projected volumes are brought up to date (upstream: every pod sync,
/// about a minute; a changed object shows in the container within this).
pub const VOLUME_RESYNC: Duration = Duration::from_secs(10);

/// What a worker is told about its pod.
struct WorkerShared {
    /// The newest pod object; `None` once it is gone from the API.
    pod: watch::Sender<Option<Pod>>,
    kick: Arc<Notify>,
}

type Workers = Arc<Mutex<HashMap<String, Arc<WorkerShared>>>>;

/// Runs the pod workers for this node, forever.
pub async fn run(agent: Arc<Agent>) {
    let workers: Workers = Arc::default();
    tokio::spawn(relist(agent.clone(), workers.clone()));
    let api: Api<Pod> = Api::all(agent.client.clone());
    let selector = format!("spec.nodeName={}", agent.config.node_name);
    let stream =
        watcher::watcher(api, watcher::Config::default().fields(&selector)).default_backoff();
    futures::pin_mut!(stream);
    let mut listed: HashSet<String> = HashSet::new();
    let mut gc = tokio::time::interval(Duration::from_secs(60));
    gc.tick().await;
    let mut synced = false;
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { break };
                match ev {
                    Ok(Event::Init) => listed.clear(),
                    Ok(Event::InitApply(pod)) => {
                        if let Some(uid) = pod.metadata.uid.clone() {
                            listed.insert(uid);
                        }
                        apply(&agent, &workers, pod);
                    }
                    Ok(Event::InitDone) => {
                        // Pods that vanished while we were not watching.
                        let gone: Vec<Arc<WorkerShared>> = workers
                            .lock()
                            .expect("workers lock")
                            .iter()
                            .filter(|(uid, _)| !listed.contains(*uid))
                            .map(|(_, w)| w.clone())
                            .collect();
                        for w in gone {
                            let _ = w.pod.send(None);
                        }
                        if !synced {
                            synced = true;
                            collect_orphans(&agent, &workers).await;
                        }
                    }
                    Ok(Event::Apply(pod)) => apply(&agent, &workers, pod),
                    Ok(Event::Delete(pod)) => {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        let w = workers.lock().expect("workers lock").get(&uid).cloned();
                        if let Some(w) = w {
                            let _ = w.pod.send(None);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                }
            }
            _ = gc.tick(), if synced => collect_orphans(&agent, &workers).await,
        }
    }
}

fn apply(agent: &Arc<Agent>, workers: &Workers, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let mut map = workers.lock().expect("workers lock");
    if let Some(w) = map.get(&uid) {
        let _ = w.pod.send(Some(pod));
        return;
    }
    let (tx, rx) = watch::channel(Some(pod.clone()));
    let shared = Arc::new(WorkerShared {
        pod: tx,
        kick: Arc::new(Notify::new()),
    });
    map.insert(uid.clone(), shared.clone());
    let worker = Worker::new(agent.clone(), pod, shared);
    let workers = workers.clone();
    tokio::spawn(async move {
        worker.run(rx).await;
        workers.lock().expect("workers lock").remove(&uid);
    });
}

/// Sandboxes of pods this node no longer has: stopped and removed.
async fn collect_orphans(agent: &Agent, workers: &Workers) {
    let sandboxes = match agent.cri.list_pod_sandboxes(HashMap::new()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "listing sandboxes for garbage collection failed");
            return;
        }
    };
    let known: HashSet<String> = workers
        .lock()
        .expect("workers lock")
        .keys()
        .cloned()
        .collect();
    let orphans: HashSet<String> = sandboxes
        .iter()
        .filter_map(|s| s.labels.get(POD_UID_LABEL))
        .filter(|uid| !known.contains(*uid))
        .cloned()
        .collect();
    for uid in orphans {
        tracing::info!(%uid, "removing the sandbox of a pod this node no longer runs");
        if let Err(e) = teardown(agent, &uid, Duration::from_secs(0)).await {
            tracing::warn!(%uid, error = %e, "removing an orphaned sandbox failed");
        }
    }
}

/// Relists the runtime every `relist_interval` and wakes the workers whose
/// sandboxes or containers changed state.
async fn relist(agent: Arc<Agent>, workers: Workers) {
    let mut last: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::time::sleep(agent.config.relist_interval).await;
        let (sandboxes, containers) = match tokio::try_join!(
            agent.cri.list_pod_sandboxes(HashMap::new()),
            agent.cri.list_containers(HashMap::new())
        ) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "relist failed");
                continue;
            }
        };
        let mut now: HashMap<String, Vec<(String, i32)>> = HashMap::new();
        for s in &sandboxes {
            if let Some(uid) = s.labels.get(POD_UID_LABEL) {
                now.entry(uid.clone())
                    .or_default()
                    .push((s.id.clone(), s.state + 100));
            }
        }
        for ct in &containers {
            if let Some(uid) = ct.labels.get(POD_UID_LABEL) {
                now.entry(uid.clone())
                    .or_default()
                    .push((ct.id.clone(), ct.state));
            }
        }
        let mut fingerprints: HashMap<String, u64> = HashMap::new();
        for (uid, mut items) in now {
            items.sort();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            items.hash(&mut h);
            fingerprints.insert(uid, h.finish());
        }
        let changed: Vec<&String> = fingerprints
            .iter()
            .filter(|(uid, f)| last.get(*uid) != Some(f))
            .map(|(u, _)| u)
            .chain(last.keys().filter(|u| !fingerprints.contains_key(*u)))
            .collect();
        if !changed.is_empty() {
            let map = workers.lock().expect("workers lock");
            for uid in changed {
                if let Some(w) = map.get(uid) {
                    w.kick.notify_one();
                }
            }
        }
        last = fingerprints;
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Upstream's per-item exponential back-off (flowcontrol.Backoff).
#[derive(Clone, Copy, Debug)]
struct Backoff {
    delay: Duration,
    /// When the back-off was last extended (ns since the epoch).
    last: i64,
}

fn in_backoff(
    map: &HashMap<String, Backoff>,
    key: &str,
    since_ns: i64,
    max: Duration,
) -> Option<Duration> {
    let b = map.get(key)?;
    // An entry not touched for twice the maximum has expired.
    if since_ns - b.last > 2 * max.as_nanos() as i64 {
        return None;
    }
    let elapsed = Duration::from_nanos((now_ns() - since_ns).max(0) as u64);
    (elapsed < b.delay).then(|| b.delay - elapsed)
}

fn next_backoff(
    map: &mut HashMap<String, Backoff>,
    key: &str,
    at_ns: i64,
    base: Duration,
    max: Duration,
) {
    let delay = match map.get(key) {
        Some(b) if at_ns - b.last <= 2 * max.as_nanos() as i64 => (b.delay * 2).min(max),
        _ => base,
    };
    map.insert(key.to_string(), Backoff { delay, last: at_ns });
}

enum Next {
    /// Sync again on a pod update, a runtime change, or after this long.
    Wait(Option<Duration>),
    /// The pod is finished with; the worker ends.
    Done,
}

struct Worker {
    agent: Arc<Agent>,
    uid: String,
    pod: Pod,
    gone: bool,
    shared: Arc<WorkerShared>,
    crash_backoff: HashMap<String, Backoff>,
    image_backoff: HashMap<String, Backoff>,
    sandbox_backoff: Option<Backoff>,
    /// Waiting reasons the worker knows (image and configuration errors).
    waiting: HashMap<String, (String, String)>,
    /// Exited instances never change: their status is asked once.
    exited: HashMap<String, Instance>,
    /// Highest attempt seen per container name (restart counts survive a
    /// sandbox being recreated).
    max_attempt: HashMap<String, u32>,
    last_status: Option<Value>,
    /// Containers and sandbox stopped after the pod finished.
    stopped_terminal: bool,
    prober: probes::Prober,
    /// Containers being stopped after a failed liveness or startup probe.
    killing: HashSet<String>,
    /// Containers stopped because their image changed in the spec.
    spec_changed: HashSet<String>,
    /// When the pod's volumes were last written.
    last_volume_sync: Option<std::time::Instant>,
    /// The Docker-link Services fetched along with a new sandbox, for the
    /// containers started in the same sync.
    link_services: Option<Vec<Service>>,
}

impl Worker {
    fn new(agent: Arc<Agent>, pod: Pod, shared: Arc<WorkerShared>) -> Worker {
        let kick = shared.kick.clone();
        Worker {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            agent,
            pod,
            gone: false,
            shared,
            crash_backoff: HashMap::new(),
            image_backoff: HashMap::new(),
            sandbox_backoff: None,
            waiting: HashMap::new(),
            exited: HashMap::new(),
            max_attempt: HashMap::new(),
            last_status: None,
            stopped_terminal: false,
            prober: probes::Prober::new(kick),
            killing: HashSet::new(),
            spec_changed: HashSet::new(),
            last_volume_sync: None,
            link_services: None,
        }
    }

    /// Where kills of this pod's containers record their events.
    fn sink(&self) -> EventSink {
        EventSink {
            events: self.agent.events.clone(),
            pod: self.pod.object_ref(&()),
        }
    }

    /// The pod's terminationGracePeriodSeconds (default 30).
    fn termination_grace(&self) -> i64 {
        pod_spec(&self.pod)
            .termination_grace_period_seconds
            .unwrap_or(30)
    }

    fn key(&self) -> String {
        let (ns, name, _) = meta(&self.pod);
        format!("{ns}/{name}")
    }

    async fn run(mut self, mut rx: watch::Receiver<Option<Pod>>) {
        tracing::debug!(pod = %self.key(), uid = %self.uid, "pod worker started");
        let mut failures = 0u32;
        loop {
            let next = match self.sync().await {
                Ok(n) => {
                    failures = 0;
                    n
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(pod = %self.key(), error = %format!("{e:#}"), "pod sync failed; retrying");
                    Next::Wait(Some(Duration::from_millis(500) * failures.min(10)))
                }
            };
            let wait = match next {
                Next::Done => break,
                Next::Wait(d) => d.unwrap_or(Duration::from_secs(60)),
            };
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        self.gone = true;
                    } else {
                        match rx.borrow_and_update().clone() {
                            Some(p) => self.pod = p,
                            None => self.gone = true,
                        }
                    }
                }
                _ = self.shared.kick.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::debug!(pod = %self.key(), "pod worker finished");
    }

    fn event(&self, type_: EventType, reason: &str, note: String) {
        self.sink().publish(type_, reason, note);
    }

    async fn sync(&mut self) -> anyhow::Result<Next> {
        let cri = self.agent.cri.clone();
        // Services fetched by an earlier sync that failed halfway are stale.
        self.link_services = None;
        if self.gone {
            // Deleted from the API (force-deleted, or by us): nothing to report.
            teardown(&self.agent, &self.uid, Duration::from_secs(0)).await?;
            return Ok(Next::Done);
        }
        if self.pod.metadata.deletion_timestamp.is_some() {
            return self.terminate().await;
        }
        let phase = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            if !self.stopped_terminal {
                self.stop_all(false).await?;
                self.stopped_terminal = true;
            }
            return Ok(Next::Wait(None));
        }

        let filter = uid_filter(&self.uid);
        let sandboxes = cri.list_pod_sandboxes(filter.clone()).await?;
        let containers = cri.list_containers(filter).await?;
        for ct in &containers {
            if let Some(m) = &ct.metadata {
                let e = self.max_attempt.entry(m.name.clone()).or_insert(m.attempt);
                *e = (*e).max(m.attempt);
            }
        }
        let spec = pod_spec(&self.pod).clone();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let mut ready: Vec<&c::PodSandbox> = sandboxes.iter().filter(|s| s.state == 0).collect();
        ready.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        let mut wake: Option<Duration> = None;
        let mut wake_in = |d: Duration| wake = Some(wake.map_or(d, |w: Duration| w.min(d)));

        // The sandbox.
        let current: Option<c::PodSandbox> = match ready.first() {
            Some(s) => Some((*s).clone()),
            None => {
                let ran_all = spec
                    .containers
                    .iter()
                    .all(|ct| self.max_attempt.contains_key(&ct.name));
                if !sandboxes.is_empty() && policy == "Never" && ran_all {
                    // The sandbox is gone after every container ran once:
                    // nothing restarts; the status below says how they ended.
                    None
                } else if let Some(wait) = self.sandbox_backoff.and_then(|b| {
                    let elapsed = Duration::from_nanos((now_ns() - b.last).max(0) as u64);
                    (elapsed < b.delay).then(|| b.delay - elapsed)
                }) {
                    wake_in(wait);
                    None
                } else {
                    // First start, or the sandbox died: everything starts over
                    // in a new one, as upstream does.
                    for ct in containers
                        .iter()
                        .filter(|ct| ct.state == 1 || ct.state == 0)
                    {
                        let _ = cri.stop_container(&ct.id, Duration::from_secs(0)).await;
                    }
                    let attempt = sandboxes
                        .iter()
                        .filter_map(|s| s.metadata.as_ref())
                        .map(|m| m.attempt + 1)
                        .max()
                        .unwrap_or(0);
                    // The Services for the containers' environment are
                    // fetched while the runtime builds the sandbox: they
                    // do not depend on it, and the first start waits on both.
                    let (started, services) = tokio::join!(self.run_sandbox(attempt), self.link_services());
                    self.link_services = Some(services);
                    match started {
                        Ok(id) => {
                            self.sandbox_backoff = None;
                            let listed = cri.list_pod_sandboxes(uid_filter(&self.uid)).await?;
                            listed.into_iter().find(|s| s.id == id)
                        }
                        Err(e) => {
                            let delay = self
                                .sandbox_backoff
                                .map(|b| (b.delay * 2).min(Duration::from_secs(60)))
                                .unwrap_or(Duration::from_secs(2));
                            self.sandbox_backoff = Some(Backoff {
                                delay,
                                last: now_ns(),
                            });
                            self.event(
                                EventType::Warning,
                                "FailedCreatePodSandBox",
                                format!("Failed to create pod sandbox: {e:#}"),
                            );
                            wake_in(delay);
                            None
                        }
                    }
                }
            }
        };
        // Sandboxes other than the current one are dead: remove them and
        // their containers.
        for s in sandboxes
            .iter()
            .filter(|s| Some(&s.id) != current.as_ref().map(|c| &c.id))
        {
            if current.is_some() {
                remove_sandbox(&cri, s, &containers).await;
            }
        }
        let (sandbox_id, pod_ip) = match &current {
            Some(s) => {
                let st = cri.pod_sandbox_status(&s.id).await?;
                (
                    Some(s.id.clone()),
                    st.network.map(|n| n.ip).filter(|ip| !ip.is_empty()),
                )
            }
            None => (None, None),
        };
        let host_network = spec.host_network.unwrap_or(false);
        let pod_ip = if host_network {
            Some(self.agent.node_ip.to_string())
        } else {
            pod_ip
        };
        let sandbox_config = current.as_ref().map(|s| {
            spec::sandbox_config(
                &self.agent.config,
                &self.pod,
                s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
            )
        });
        if let Some(ip) = &pod_ip
            && !host_network
        {
            let hosts = self.agent.config.pod_dir(&self.uid).join("etc-hosts");
            let text = spec::hosts_file(&self.pod, ip);
            if std::fs::read_to_string(&hosts).ok().as_deref() != Some(text.as_str()) {
                spec::write_file(&hosts, &text)?;
            }
        }

        // Containers of the current sandbox, newest first per name.
        let mut by_name: HashMap<String, Vec<&c::Container>> = HashMap::new();
        for ct in containers
            .iter()
            .filter(|ct| Some(&ct.pod_sandbox_id) == sandbox_id.as_ref())
        {
            let name = ct
                .labels
                .get(CONTAINER_NAME_LABEL)
                .cloned()
                .or_else(|| ct.metadata.as_ref().map(|m| m.name.clone()))
                .unwrap_or_default();
            by_name.entry(name).or_default().push(ct);
        }
        for v in by_name.values_mut() {
            v.sort_by_key(|ct| {
                std::cmp::Reverse((
                    ct.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
                    ct.created_at,
                ))
            });
        }

        let mut observed = Observed {
            host_ip: self.agent.node_ip.to_string(),
            pod_ip: pod_ip.clone(),
            sandbox_ready: current.is_some(),
            ..Default::default()
        };

        // Init containers, in order.
        let mut init_done = true;
        for ic in spec.init_containers.iter().flatten() {
            let sidecar = ic.restart_policy.as_deref() == Some("Always");
            let (cur, prev) = self.instances(&by_name, &ic.name).await;
            let mut view = ContainerView {
                name: ic.name.clone(),
                image: ic.image.clone().unwrap_or_default(),
                current: cur.clone(),
                previous: prev,
                waiting: None,
                ..Default::default()
            };
            if !init_done || sandbox_id.is_none() {
                view.waiting = self.waiting.get(&ic.name).cloned();
                observed.init.push(view);
                continue;
            }
            match cur.as_ref().map(|i| (i.state, i.exit_code)) {
                None => {
                    let attempt = self.next_attempt(&ic.name, None);
                    self.start(
                        ic,
                        attempt,
                        sandbox_id.as_deref(),
                        sandbox_config.as_ref(),
                        pod_ip.as_deref(),
                        &mut wake_in,
                    )
                    .await;
                    view.waiting = self.waiting.get(&ic.name).cloned();
                    init_done = sidecar && view.waiting.is_none();
                }
                Some((RunState::Running, _)) => init_done = sidecar,
                Some((RunState::Created | RunState::Unknown, _)) => init_done = false,
                Some((RunState::Exited, 0)) if !sidecar => {}
                Some((RunState::Exited, _)) if policy == "Never" && !sidecar => {
                    observed.init_failed = true;
                    init_done = false;
                }
                Some((RunState::Exited, _)) => {
                    let i = cur.as_ref().expect("matched Some");
                    view.waiting = self
                        .restart_or_back_off(
                            ic,
                            i,
                            sandbox_id.as_deref(),
                            sandbox_config.as_ref(),
                            pod_ip.as_deref(),
                            &mut wake_in,
                        )
                        .await;
                    init_done = sidecar && view.waiting.is_none();
                }
            }
            observed.init.push(view);
        }

        // App containers.
        for ct in &spec.containers {
            let (cur, prev) = self.instances(&by_name, &ct.name).await;
            let mut view = ContainerView {
                name: ct.name.clone(),
                image: ct.image.clone().unwrap_or_default(),
                current: cur.clone(),
                previous: prev,
                waiting: None,
                ..Default::default()
            };
            if init_done
                && !observed.init_failed
                && let Some(sid) = sandbox_id.as_deref()
            {
                match cur.as_ref().map(|i| i.state) {
                    None => {
                        let attempt = self.next_attempt(&ct.name, None);
                        self.start(
                            ct,
                            attempt,
                            Some(sid),
                            sandbox_config.as_ref(),
                            pod_ip.as_deref(),
                            &mut wake_in,
                        )
                        .await;
                        view.waiting = self.waiting.get(&ct.name).cloned();
                    }
                    Some(RunState::Exited) if self.spec_changed.remove(&ct.name) => {
                        // Stopped for a new definition: starts again now,
                        // whatever the restart policy, without back-off.
                        let attempt = self.next_attempt(&ct.name, cur.as_ref().map(|i| i.attempt));
                        self.start(
                            ct,
                            attempt,
                            Some(sid),
                            sandbox_config.as_ref(),
                            pod_ip.as_deref(),
                            &mut wake_in,
                        )
                        .await;
                        view.waiting = self.waiting.get(&ct.name).cloned();
                    }
                    Some(RunState::Running)
                        if cur
                            .as_ref()
                            .and_then(|i| i.spec_image.as_deref())
                            .is_some_and(|img| Some(img) != ct.image.as_deref()) =>
                    {
                        let id = cur.as_ref().expect("matched Some").id.clone();
                        if self.killing.insert(id.clone()) {
                            self.spec_changed.insert(ct.name.clone());
                            self.spawn_kill(
                                ct,
                                id,
                                pod_ip.as_deref(),
                                self.termination_grace(),
                                format!(
                                    "Container {} definition changed, will be restarted",
                                    ct.name
                                ),
                            );
                        }
                    }
                    Some(RunState::Exited) => {
                        let i = cur.as_ref().expect("matched Some");
                        let restart = match policy.as_str() {
                            "Never" => false,
                            "OnFailure" => i.exit_code != 0,
                            _ => true,
                        };
                        if restart {
                            view.waiting = self
                                .restart_or_back_off(
                                    ct,
                                    i,
                                    Some(sid),
                                    sandbox_config.as_ref(),
                                    pod_ip.as_deref(),
                                    &mut wake_in,
                                )
                                .await;
                        }
                    }
                    _ => {}
                }
            } else {
                view.waiting = self.waiting.get(&ct.name).cloned();
            }
            observed.containers.push(view);
        }

        // What was started just now shows in the next relist; report what
        // is known, reading the fresh state once more for accuracy.
        let started_now = observed
            .containers
            .iter()
            .chain(observed.init.iter())
            .any(|v| {
                v.waiting.is_none()
                    && v.current
                        .as_ref()
                        .is_none_or(|i| i.state == RunState::Exited)
            });
        if started_now {
            let containers = cri.list_containers(uid_filter(&self.uid)).await?;
            let mut by_name: HashMap<String, Vec<&c::Container>> = HashMap::new();
            for ct in containers
                .iter()
                .filter(|ct| Some(&ct.pod_sandbox_id) == sandbox_id.as_ref())
            {
                let name = ct
                    .labels
                    .get(CONTAINER_NAME_LABEL)
                    .cloned()
                    .unwrap_or_default();
                by_name.entry(name).or_default().push(ct);
            }
            for v in by_name.values_mut() {
                v.sort_by_key(|ct| {
                    std::cmp::Reverse((
                        ct.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
                        ct.created_at,
                    ))
                });
            }
            for view in observed
                .init
                .iter_mut()
                .chain(observed.containers.iter_mut())
            {
                if view.waiting.is_none() {
                    let (cur, prev) = self.instances(&by_name, &view.name).await;
                    view.current = cur;
                    view.previous = prev;
                }
            }
        }

        // Volumes of running pods follow their objects.
        let refreshable = spec.volumes.iter().flatten().any(|v| {
            v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some()
        });
        if refreshable && sandbox_id.is_some() {
            let due = self
                .last_volume_sync
                .is_none_or(|t| t.elapsed() >= VOLUME_RESYNC);
            if due {
                let pod_dir = self.agent.config.pod_dir(&self.uid);
                if let Err(e) = volumes::prepare(&self.agent.client, &self.pod, &pod_dir).await {
                    tracing::debug!(pod = %self.key(), error = %e, "updating volumes failed; keeping their files");
                }
                self.last_volume_sync = Some(std::time::Instant::now());
            }
            let since = self
                .last_volume_sync
                .map(|t| t.elapsed())
                .unwrap_or_default();
            wake_in(VOLUME_RESYNC.saturating_sub(since).max(Duration::from_millis(100)));
        }

        self.link_services = None;
        self.apply_probes(&mut observed, &spec, pod_ip.as_deref())
            .await;
        let status = podstatus::pod_status(&self.pod, &observed, Timestamp::now());
        self.write_status(status.clone()).await?;
        let phase = status["phase"].as_str().unwrap_or("");
        if phase == "Succeeded" || phase == "Failed" {
            tracing::info!(pod = %self.key(), phase, "pod finished");
            self.stop_all(false).await?;
            self.stopped_terminal = true;
            return Ok(Next::Wait(None));
        }
        Ok(Next::Wait(wake))
    }

    /// Starts the probes of running containers and applies their verdicts:
    /// readiness and startup to the status, a failed liveness or startup
    /// probe kills the container (which then restarts by its policy).
    async fn apply_probes(
        &mut self,
        observed: &mut Observed,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        pod_ip: Option<&str>,
    ) {
        let mut running = Vec::new();
        let specs: Vec<&Container> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .collect();
        for view in observed
            .init
            .iter_mut()
            .chain(observed.containers.iter_mut())
        {
            let Some(ct) = specs.iter().find(|c| c.name == view.name) else {
                continue;
            };
            let Some(inst) = view
                .current
                .as_ref()
                .filter(|i| i.state == RunState::Running)
            else {
                continue;
            };
            let id = inst.id.clone();
            running.push(id.clone());
            if ct.liveness_probe.is_none()
                && ct.readiness_probe.is_none()
                && ct.startup_probe.is_none()
            {
                continue;
            }
            self.prober.ensure(
                ct,
                probes::Target {
                    cri: self.agent.cri.clone(),
                    container_id: id.clone(),
                    pod_ip: pod_ip.unwrap_or_default().to_string(),
                },
            );
            let startup = ct
                .startup_probe
                .as_ref()
                .map(|_| self.prober.verdict(&id, Kind::Startup));
            view.started = startup.as_ref().map(|v| *v == Verdict::Success);
            if ct.readiness_probe.is_some() {
                let v = self.prober.verdict(&id, Kind::Readiness);
                let was_ready = self.last_status.as_ref().is_some_and(|s| {
                    s["containerStatuses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["name"] == ct.name && c["ready"] == true)
                });
                if let Verdict::Failure(msg) = &v
                    && was_ready
                {
                    self.event(
                        EventType::Warning,
                        "Unhealthy",
                        format!("Readiness probe failed: {msg}"),
                    );
                }
                view.ready = Some(v == Verdict::Success);
            }
            let failed = [
                (Kind::Startup, startup),
                (
                    Kind::Liveness,
                    ct.liveness_probe
                        .as_ref()
                        .map(|_| self.prober.verdict(&id, Kind::Liveness)),
                ),
            ]
            .into_iter()
            .find_map(|(k, v)| match v {
                Some(Verdict::Failure(m)) => Some((k, m)),
                _ => None,
            });
            if let Some((kind, msg)) = failed
                && self.killing.insert(id.clone())
            {
                self.event(
                    EventType::Warning,
                    "Unhealthy",
                    format!("{} probe failed: {msg}", kind.name()),
                );
                // A probe's own terminationGracePeriodSeconds wins (upstream).
                let probe = match kind {
                    Kind::Startup => ct.startup_probe.as_ref(),
                    _ => ct.liveness_probe.as_ref(),
                };
                let grace = probe
                    .and_then(|p| p.termination_grace_period_seconds)
                    .or(spec.termination_grace_period_seconds)
                    .unwrap_or(30);
                self.spawn_kill(
                    ct,
                    id.clone(),
                    pod_ip,
                    grace,
                    format!(
                        "Container {} failed {} probe, will be restarted",
                        ct.name,
                        kind.name().to_lowercase()
                    ),
                );
            }
        }
        self.killing.retain(|id| running.contains(id));
        self.prober.retain(&running);
    }

    /// Kills a container in the background (preStop, then StopContainer
    /// with the rest of `grace`); the relist wakes the worker when it exits.
    fn spawn_kill(
        &self,
        ct: &Container,
        id: String,
        pod_ip: Option<&str>,
        grace: i64,
        message: String,
    ) {
        let target = HookTarget {
            cri: self.agent.cri.clone(),
            container_id: id,
            pod_ip: pod_ip.unwrap_or_default().to_string(),
        };
        let (ct, sink) = (ct.clone(), self.sink());
        tokio::spawn(async move {
            if let Err(e) = hooks::kill_container(&target, Some(&ct), grace, message, &sink).await {
                tracing::warn!(container = %target.container_id, error = %e, "killing a container failed");
            }
        });
    }

    fn next_attempt(&mut self, name: &str, after: Option<u32>) -> u32 {
        let n = match (self.max_attempt.get(name), after) {
            (Some(m), _) => m + 1,
            (None, Some(a)) => a + 1,
            (None, None) => 0,
        };
        self.max_attempt.insert(name.to_string(), n);
        n
    }

    /// The newest instance of a container and the one before it, with
    /// their status from the runtime.
    async fn instances(
        &mut self,
        by_name: &HashMap<String, Vec<&c::Container>>,
        name: &str,
    ) -> (Option<Instance>, Option<Instance>) {
        let Some(list) = by_name.get(name) else {
            return (None, None);
        };
        let mut out = Vec::new();
        for ct in list.iter().take(2) {
            out.push(self.instance(ct).await);
        }
        let mut it = out.into_iter();
        (it.next().flatten(), it.next().flatten())
    }

    async fn instance(&mut self, ct: &c::Container) -> Option<Instance> {
        if let Some(i) = self.exited.get(&ct.id) {
            return Some(i.clone());
        }
        let st = match self.agent.cri.container_status(&ct.id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(id = %ct.id, error = %e, "container status failed");
                return None;
            }
        };
        let name = st
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let attempt = st.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
        let mut message = st.message.clone();
        let state = RunState::from_cri(st.state);
        if state == RunState::Exited && message.is_empty() {
            let path = self
                .agent
                .config
                .pod_dir(&self.uid)
                .join("containers")
                .join(&name)
                .join(format!("{attempt}.termlog"));
            if let Ok(text) = std::fs::read_to_string(path) {
                message = text.chars().take(4096).collect();
            }
        }
        let i = Instance {
            id: st.id.clone(),
            attempt,
            state,
            exit_code: st.exit_code,
            reason: st.reason.clone(),
            message,
            created_at: st.created_at,
            started_at: st.started_at,
            finished_at: st.finished_at,
            image_ref: if st.image_ref.is_empty() {
                st.image.map(|i| i.image).unwrap_or_default()
            } else {
                st.image_ref
            },
            spec_image: st.annotations.get(spec::SPEC_IMAGE_ANNOTATION).cloned(),
        };
        if state == RunState::Exited {
            self.exited.insert(ct.id.clone(), i.clone());
        }
        Some(i)
    }

    /// An exited container that should run again: restarted now, or a
    /// CrashLoopBackOff waiting reason while its back-off lasts.
    async fn restart_or_back_off(
        &mut self,
        ct: &Container,
        last: &Instance,
        sandbox_id: Option<&str>,
        sandbox_config: Option<&c::PodSandboxConfig>,
        pod_ip: Option<&str>,
        wake_in: &mut impl FnMut(Duration),
    ) -> Option<(String, String)> {
        let (base, max) = (
            self.agent.config.backoff_base,
            self.agent.config.backoff_max,
        );
        let finished = if last.finished_at > 0 {
            last.finished_at
        } else {
            now_ns()
        };
        if let Some(left) = in_backoff(&self.crash_backoff, &ct.name, finished, max) {
            wake_in(left);
            let delay = self.crash_backoff[&ct.name].delay;
            let (ns, name, uid) = meta(&self.pod);
            let msg = format!(
                "back-off {} restarting failed container={} pod={name}_{ns}({uid})",
                fmt_duration(delay),
                ct.name
            );
            if self.waiting.get(&ct.name).map(|w| w.0.as_str()) != Some("CrashLoopBackOff") {
                self.event(
                    EventType::Warning,
                    "BackOff",
                    "Back-off restarting failed container".to_string()
                        + &format!(" {} in pod {name}_{ns}({uid})", ct.name),
                );
            }
            self.waiting
                .insert(ct.name.clone(), ("CrashLoopBackOff".into(), msg.clone()));
            return Some(("CrashLoopBackOff".into(), msg));
        }
        next_backoff(&mut self.crash_backoff, &ct.name, finished, base, max);
        let attempt = self.next_attempt(&ct.name, Some(last.attempt));
        self.start(ct, attempt, sandbox_id, sandbox_config, pod_ip, wake_in)
            .await;
        self.waiting.get(&ct.name).cloned()
    }

    async fn run_sandbox(&self, attempt: u32) -> anyhow::Result<String> {
        let config = spec::sandbox_config(&self.agent.config, &self.pod, attempt);
        std::fs::create_dir_all(&config.log_directory)?;
        std::fs::create_dir_all(self.agent.config.pod_dir(&self.uid))?;
        let t = std::time::Instant::now();
        let id = self.agent.cri.run_pod_sandbox(config).await?;
        tracing::info!(pod = %self.key(), sandbox = %&id[..12.min(id.len())], attempt, ms = t.elapsed().as_millis() as u64, "sandbox started");
        Ok(id)
    }

    /// Pulls the image as the pull policy says. `Err` is the waiting
    /// reason and message.
    async fn ensure_image(
        &mut self,
        ct: &Container,
        sandbox_config: Option<&c::PodSandboxConfig>,
    ) -> Result<String, (String, String)> {
        let image = ct.image.clone().unwrap_or_default();
        if image.is_empty() {
            return Err((
                "InvalidImageName".into(),
                "the container has no image".into(),
            ));
        }
        let latest = !image.contains('@')
            && image
                .rsplit_once(':')
                .is_none_or(|(_, tag)| tag.contains('/') || tag == "latest");
        let policy = ct.image_pull_policy.clone().unwrap_or_else(|| {
            if latest {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let cri = self.agent.cri.clone();
        let present = match cri.image_status(&image).await {
            Ok(i) => i.map(|i| i.id),
            Err(e) => return Err(("ErrImagePull".into(), format!("{e:#}"))),
        };
        if policy == "Never" {
            return present.ok_or_else(|| {
                (
                    "ErrImageNeverPull".into(),
                    format!("Container image \"{image}\" is not present with pull policy of Never"),
                )
            });
        }
        if policy == "IfNotPresent"
            && let Some(id) = present
        {
            return Ok(id);
        }
        let max = self.agent.config.backoff_max;
        if let Some(left) = in_backoff(
            &self.image_backoff,
            &image,
            self.image_backoff.get(&image).map(|b| b.last).unwrap_or(0),
            max,
        ) {
            let msg = format!("Back-off pulling image \"{image}\"");
            if self.waiting.get(&ct.name).map(|w| w.0.as_str()) != Some("ImagePullBackOff") {
                self.event(EventType::Normal, "BackOff", msg.clone());
            }
            let _ = left;
            return Err(("ImagePullBackOff".into(), msg));
        }
        self.event(
            EventType::Normal,
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        let host = containerd::registry_host(&image);
        self.ensure_loopback_registry(host);
        // The pod's pull secrets first, then the node's registries.yaml.
        let mut auths = self.pull_credentials(&image).await;
        if let Some(a) = self.agent.registries.auth_for(host) {
            auths.push(c::AuthConfig {
                username: a.username.clone().unwrap_or_default(),
                password: a.password.clone().unwrap_or_default(),
                auth: a.auth.clone().unwrap_or_default(),
                identity_token: a.identity_token.clone().unwrap_or_default(),
                server_address: credentials::server_address(host),
                ..Default::default()
            });
        }
        let t = std::time::Instant::now();
        // Each credential in turn until one works (anonymous when none).
        let mut result = Err(anyhow::anyhow!("no pull attempted"));
        let attempts: Vec<Option<c::AuthConfig>> = if auths.is_empty() {
            vec![None]
        } else {
            auths.into_iter().map(Some).collect()
        };
        for auth in attempts {
            result = cri.pull_image(&image, auth, sandbox_config.cloned()).await;
            if result.is_ok() {
                break;
            }
        }
        match result {
            Ok(r) => {
                self.image_backoff.remove(&image);
                self.event(
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        t.elapsed().as_secs_f64()
                    ),
                );
                Ok(r)
            }
            Err(e) => {
                let (base, max) = (
                    self.agent.config.backoff_base,
                    self.agent.config.backoff_max,
                );
                next_backoff(&mut self.image_backoff, &image, now_ns(), base, max);
                let msg = format!("Failed to pull image \"{image}\": {e:#}");
                self.event(EventType::Warning, "Failed", msg.clone());
                self.event(EventType::Warning, "Failed", "Error: ErrImagePull".into());
                Err(("ErrImagePull".into(), msg))
            }
        }
    }

    /// Pull credentials for `image` from the pod's imagePullSecrets (or,
    /// when it names none, its ServiceAccount's). A secret that cannot be
    /// read is a `FailedToRetrieveImagePullSecret` event, as upstream.
    async fn pull_credentials(&self, image: &str) -> Vec<c::AuthConfig> {
        let spec = pod_spec(&self.pod);
        let ns = meta(&self.pod).0.to_string();
        let secret_names = |refs: &Option<Vec<k8s_openapi::api::core::v1::LocalObjectReference>>| -> Vec<String> {
            refs.iter().flatten().map(|r| r.name.clone()).filter(|n| !n.is_empty()).collect()
        };
        let mut names = secret_names(&spec.image_pull_secrets);
        if names.is_empty() {
            let sa = spec
                .service_account_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into());
            let api: Api<ServiceAccount> = Api::namespaced(self.agent.client.clone(), &ns);
            if let Ok(Some(sa)) = api.get_opt(&sa).await {
                names = secret_names(&sa.image_pull_secrets);
            }
        }
        if names.is_empty() {
            return Vec::new();
        }
        let api: Api<Secret> = Api::namespaced(self.agent.client.clone(), &ns);
        let mut entries = Vec::new();
        let mut missing = Vec::new();
        for n in &names {
            match api.get_opt(n).await {
                Ok(Some(s)) => match credentials::secret_entries(&s) {
                    Ok(e) => entries.extend(e),
                    Err(msg) => {
                        tracing::warn!(pod = %self.key(), secret = %n, error = %msg, "unusable image pull secret");
                        missing.push(n.clone());
                    }
                },
                Ok(None) => missing.push(n.clone()),
                Err(e) => {
                    tracing::warn!(pod = %self.key(), secret = %n, error = %e, "reading an image pull secret failed");
                    missing.push(n.clone());
                }
            }
        }
        if !missing.is_empty() {
            self.event(
                EventType::Warning,
                "FailedToRetrieveImagePullSecret",
                format!(
                    "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                    missing.join(", ")
                ),
            );
        }
        credentials::lookup(&entries, image)
    }

    /// A registry on a loopback address is plain HTTP (as Docker treats
    /// 127.0.0.0/8): its `hosts.toml` is written the first time an image
    /// is pulled from it, when the agent runs its own containerd (which
    /// reads the hosts directory at every pull).
    fn ensure_loopback_registry(&self, host: &str) {
        if self.agent.config.container_runtime_endpoint.is_some() {
            return;
        }
        let paths = containerd::ContainerdPaths::under(&self.agent.config.agent_dir());
        let file = paths.certs_d.join(host).join("hosts.toml");
        if file.exists() {
            return;
        }
        if let Some(text) = containerd::hosts_files(&self.agent.registries, &[host]).remove(host)
        {
            let r = std::fs::create_dir_all(file.parent().unwrap_or(&paths.certs_d))
                .and_then(|_| std::fs::write(&file, text));
            match r {
                Ok(()) => tracing::info!(registry = host, "plain-HTTP loopback registry configured"),
                Err(e) => tracing::warn!(registry = host, error = %e, "writing hosts.toml failed"),
            }
        }
    }

    /// Fetches the ConfigMaps and Secrets the environment reads; the
    /// Docker-link Services are those fetched with the sandbox, if any.
    async fn lookups(&self, ct: &Container) -> spec::Lookups {
        let (cms, secrets) = spec::env_refs(ct);
        let ns = meta(&self.pod).0.to_string();
        let mut lk = spec::Lookups::default();
        let cm_api: Api<ConfigMap> = Api::namespaced(self.agent.client.clone(), &ns);
        for n in cms {
            if let Ok(Some(cm)) = cm_api.get_opt(&n).await {
                lk.config_maps.insert(n, cm);
            }
        }
        let s_api: Api<Secret> = Api::namespaced(self.agent.client.clone(), &ns);
        for n in secrets {
            if let Ok(Some(s)) = s_api.get_opt(&n).await {
                lk.secrets.insert(n, s);
            }
        }
        lk.services = match &self.link_services {
            Some(s) => s.clone(),
            None => self.link_services().await,
        };
        lk
    }

    /// The Services whose Docker-link variables the containers get: the
    /// namespace's (unless enableServiceLinks is false) and the API
    /// server's `kubernetes`.
    async fn link_services(&self) -> Vec<Service> {
        let ns = meta(&self.pod).0.to_string();
        let mut services = Vec::new();
        let svc_api: Api<Service> = Api::namespaced(self.agent.client.clone(), &ns);
        if pod_spec(&self.pod).enable_service_links.unwrap_or(true)
            && let Ok(list) = svc_api.list(&Default::default()).await
        {
            services.extend(list.items);
        }
        if ns != "default" || !pod_spec(&self.pod).enable_service_links.unwrap_or(true) {
            let default: Api<Service> = Api::namespaced(self.agent.client.clone(), "default");
            if let Ok(Some(k)) = default.get_opt("kubernetes").await {
                services.push(k);
            }
        }
        services
    }

    /// Pulls, creates and starts one container; failures become its waiting
    /// reason (and a back-off for image pulls).
    async fn start(
        &mut self,
        ct: &Container,
        attempt: u32,
        sandbox_id: Option<&str>,
        sandbox_config: Option<&c::PodSandboxConfig>,
        pod_ip: Option<&str>,
        wake_in: &mut impl FnMut(Duration),
    ) {
        let (Some(sandbox_id), Some(sandbox_config)) = (sandbox_id, sandbox_config) else {
            return;
        };
        let r = self
            .try_start(
                ct,
                attempt,
                sandbox_id,
                sandbox_config,
                pod_ip.unwrap_or(""),
            )
            .await;
        match r {
            Ok(()) => {
                self.waiting.remove(&ct.name);
            }
            Err((reason, message)) => {
                if reason == "ErrImagePull" || reason == "ImagePullBackOff" {
                    let image = ct.image.clone().unwrap_or_default();
                    if let Some(b) = self.image_backoff.get(&image) {
                        let elapsed = Duration::from_nanos((now_ns() - b.last).max(0) as u64);
                        wake_in(
                            b.delay
                                .saturating_sub(elapsed)
                                .max(Duration::from_millis(100)),
                        );
                    }
                } else {
                    wake_in(self.agent.config.backoff_base);
                }
                // The attempt number was not used.
                if let Some(m) = self.max_attempt.get_mut(&ct.name) {
                    if *m == attempt && attempt > 0 {
                        *m -= 1;
                    } else if *m == attempt {
                        self.max_attempt.remove(&ct.name);
                    }
                }
                self.waiting.insert(ct.name.clone(), (reason, message));
            }
        }
    }

    async fn try_start(
        &mut self,
        ct: &Container,
        attempt: u32,
        sandbox_id: &str,
        sandbox_config: &c::PodSandboxConfig,
        pod_ip: &str,
    ) -> Result<(), (String, String)> {
        let image_ref = self.ensure_image(ct, Some(sandbox_config)).await?;
        let lk = self.lookups(ct).await;
        let node_mem = crate::machine::memory_total() as i64;
        let cx = spec::EnvContext {
            pod_ip,
            host_ip: &self.agent.node_ip.to_string(),
            node_allocatable_cpu_milli: crate::machine::cpus() as i64 * 1000,
            node_allocatable_memory: node_mem,
        };
        let env = spec::environment(&self.pod, ct, &cx, &lk)
            .map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
        let pod_dir = self.agent.config.pod_dir(&self.uid);
        let vols = match volumes::prepare(&self.agent.client, &self.pod, &pod_dir).await {
            Ok(v) => {
                self.last_volume_sync = Some(std::time::Instant::now());
                v
            }
            Err(m) => {
                // Claims that cannot be resolved carry upstream's own
                // "Unable to attach or mount volumes" wording already.
                let msg = if m.starts_with("Unable to attach or mount volumes") {
                    m.clone()
                } else {
                    format!("MountVolume.SetUp failed: {m}")
                };
                self.event(EventType::Warning, "FailedMount", msg);
                return Err(("ContainerCreating".to_string(), m));
            }
        };
        let mut mounts = volumes::mounts(&self.pod, ct, &vols)
            .map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
        if !pod_spec(&self.pod).host_network.unwrap_or(false) {
            mounts.push((
                pod_dir.join("etc-hosts").to_string_lossy().into_owned(),
                "/etc/hosts".to_string(),
                false,
            ));
        }
        let term = pod_dir
            .join("containers")
            .join(&ct.name)
            .join(format!("{attempt}.termlog"));
        if spec::write_file(&term, "").is_ok() {
            let path = ct
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into());
            mounts.push((term.to_string_lossy().into_owned(), path, false));
        }
        let config = spec::container_config(spec::ContainerInput {
            pod: &self.pod,
            container: ct,
            attempt,
            image_ref: &image_ref,
            env,
            mounts,
            node_memory: node_mem,
        })
        .map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
        let cri = self.agent.cri.clone();
        let id = match cri
            .create_container(sandbox_id, config, sandbox_config.clone())
            .await
        {
            Ok(id) => id,
            Err(e) => {
                let msg = format!("{e:#}");
                self.event(EventType::Warning, "Failed", format!("Error: {msg}"));
                return Err(("CreateContainerError".into(), msg));
            }
        };
        self.event(
            EventType::Normal,
            "Created",
            format!("Created container {}", ct.name),
        );
        if let Err(e) = cri.start_container(&id).await {
            let msg = format!("{e:#}");
            self.event(EventType::Warning, "Failed", format!("Error: {msg}"));
            // The container exists (exited, code 128): the restart logic
            // treats it like a crash from here on.
            return Ok(());
        }
        self.event(
            EventType::Normal,
            "Started",
            format!("Started container {}", ct.name),
        );
        if let Some(post) = ct.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let target = HookTarget {
                cri: cri.clone(),
                container_id: id.clone(),
                pod_ip: pod_ip.to_string(),
            };
            let r = tokio::time::timeout(
                hooks::POST_START_TIMEOUT,
                hooks::run_handler(post, ct, &target),
            )
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the postStart hook did not finish in {} s",
                    hooks::POST_START_TIMEOUT.as_secs()
                ))
            });
            if let Err(msg) = r {
                tracing::warn!(pod = %self.key(), container = %ct.name, error = %msg, "postStart hook failed");
                // Upstream keeps the message out of the event (it may hold secrets).
                self.event(
                    EventType::Warning,
                    "FailedPostStartHook",
                    "PostStartHook failed".into(),
                );
                if let Err(e) = hooks::kill_container(
                    &target,
                    Some(ct),
                    self.termination_grace(),
                    "FailedPostStartHook".into(),
                    &self.sink(),
                )
                .await
                {
                    tracing::warn!(pod = %self.key(), container = %ct.name, error = %e, "killing the container failed");
                }
                // Exited now: it restarts by its policy, with back-off.
            }
        }
        // Keep the newest two instances of this container (the current one
        // and the one lastState shows); remove older ones.
        if attempt >= 2
            && let Ok(list) = cri.list_containers(uid_filter(&self.uid)).await
        {
            for old in list.iter().filter(|o| {
                o.labels.get(CONTAINER_NAME_LABEL) == Some(&ct.name)
                    && o.metadata.as_ref().is_some_and(|m| m.attempt + 1 < attempt)
                    && o.state == 2
            }) {
                let _ = cri.remove_container(&old.id).await;
                self.exited.remove(&old.id);
            }
        }
        Ok(())
    }

    async fn write_status(&mut self, status: Value) -> anyhow::Result<()> {
        if self.last_status.as_ref() == Some(&status) {
            return Ok(());
        }
        let (ns, name, uid) = meta(&self.pod);
        let api: Api<Pod> = Api::namespaced(self.agent.client.clone(), ns);
        // The uid makes the patch apply to this pod only, not to a pod
        // recreated under the same name (upstream's status manager does too).
        let patch = json!({"metadata": {"uid": uid}, "status": status});
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.patch_status(name, &pp, &Patch::Merge(&patch)).await {
            Ok(p) => {
                self.pod.status = p.status;
                self.last_status = Some(status);
                Ok(())
            }
            Err(e) if matches!(api_code(&e), Some(404 | 409)) => {
                tracing::debug!(pod = %self.key(), error = %e, "pod gone while writing its status");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Stops every container (with the pod's grace period) and the sandbox;
    /// `remove` also removes them.
    async fn stop_all(&mut self, remove: bool) -> anyhow::Result<()> {
        let grace = pod_spec(&self.pod)
            .termination_grace_period_seconds
            .unwrap_or(30)
            .max(0) as u64;
        stop_containers(&self.agent.cri, &self.uid, Duration::from_secs(grace)).await?;
        if remove {
            teardown(&self.agent, &self.uid, Duration::from_secs(0)).await?;
        } else {
            for s in self
                .agent
                .cri
                .list_pod_sandboxes(uid_filter(&self.uid))
                .await?
            {
                if s.state == 0 {
                    self.agent.cri.stop_pod_sandbox(&s.id).await?;
                }
            }
        }
        Ok(())
    }

    /// Graceful deletion: stop the containers within the grace period, report
    /// their final state, remove the sandbox, then delete the pod for good.
    async fn terminate(&mut self) -> anyhow::Result<Next> {
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or(30)
            .max(0) as u64;
        tracing::info!(pod = %self.key(), grace, "stopping the pod");
        // Every running container at once, each with its preStop hook and
        // the rest of the grace period (upstream's killContainersWithSyncResult).
        let spec = pod_spec(&self.pod);
        let specs: Vec<Container> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .cloned()
            .collect();
        let pod_ip = if spec.host_network.unwrap_or(false) {
            self.agent.node_ip.to_string()
        } else {
            self.pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default()
        };
        let sink = self.sink();
        let live: Vec<c::Container> = self
            .agent
            .cri
            .list_containers(uid_filter(&self.uid))
            .await?
            .into_iter()
            .filter(|c| c.state == 0 || c.state == 1)
            .collect();
        let kills = live.iter().map(|ct| {
            let name = ct
                .labels
                .get(CONTAINER_NAME_LABEL)
                .cloned()
                .unwrap_or_default();
            let spec = specs.iter().find(|s| s.name == name);
            let target = HookTarget {
                cri: self.agent.cri.clone(),
                container_id: ct.id.clone(),
                pod_ip: pod_ip.clone(),
            };
            let sink = &sink;
            async move {
                hooks::kill_container(
                    &target,
                    spec,
                    grace as i64,
                    format!("Stopping container {name}"),
                    sink,
                )
                .await
            }
        });
        for r in futures::future::join_all(kills).await {
            r?;
        }
        teardown(&self.agent, &self.uid, Duration::from_secs(0)).await?;
        let (ns, name, uid) = meta(&self.pod);
        let api: Api<Pod> = Api::namespaced(self.agent.client.clone(), ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => tracing::info!(pod = %self.key(), "pod deleted"),
            Err(e) if matches!(api_code(&e), Some(404 | 409)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Next::Done)
    }
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Stops a pod's running containers in parallel, each with `grace`.
async fn stop_containers(cri: &cri::Cri, uid: &str, grace: Duration) -> anyhow::Result<()> {
    let list = cri.list_containers(uid_filter(uid)).await?;
    let stops = list
        .iter()
        .filter(|c| c.state == 0 || c.state == 1)
        .map(|c| cri.stop_container(&c.id, grace));
    for r in futures::future::join_all(stops).await {
        if let Err(e) = r
            && !cri::is_not_found(&e)
        {
            return Err(e);
        }
    }
    Ok(())
}

async fn remove_sandbox(cri: &cri::Cri, s: &c::PodSandbox, containers: &[c::Container]) {
    for ct in containers.iter().filter(|c| c.pod_sandbox_id == s.id) {
        let _ = cri.stop_container(&ct.id, Duration::from_secs(0)).await;
        let _ = cri.remove_container(&ct.id).await;
    }
    let _ = cri.stop_pod_sandbox(&s.id).await;
    if let Err(e) = cri.remove_pod_sandbox(&s.id).await {
        tracing::warn!(sandbox = %s.id, error = %e, "removing a sandbox failed");
    }
}

/// Everything of pod `uid` leaves the node: containers (killed after
/// `grace`), sandboxes (and with them the network namespace and the IP),
/// the pod's directories and cgroups.
pub async fn teardown(agent: &Agent, uid: &str, grace: Duration) -> anyhow::Result<()> {
    let cri = &agent.cri;
    stop_containers(cri, uid, grace).await?;
    let containers = cri.list_containers(uid_filter(uid)).await?;
    for ct in &containers {
        if let Err(e) = cri.remove_container(&ct.id).await
            && !cri::is_not_found(&e)
        {
            return Err(e);
        }
    }
    for s in cri.list_pod_sandboxes(uid_filter(uid)).await? {
        cri.stop_pod_sandbox(&s.id).await?;
        if let Err(e) = cri.remove_pod_sandbox(&s.id).await
            && !cri::is_not_found(&e)
        {
            return Err(e);
        }
    }
    volumes::unmount_under(&agent.config.pod_dir(uid));
    crate::remove_dir(&agent.config.pod_dir(uid));
    if let Ok(entries) = std::fs::read_dir(&agent.config.pod_log_dir) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .ends_with(&format!("_{uid}"))
            {
                crate::remove_dir(&e.path());
            }
        }
    }
    remove_cgroups(&spec::cgroup_parent(&agent.config, uid));
    Ok(())
}

/// Removes a (now empty) cgroup from every v1 hierarchy and the v2 mount.
pub fn remove_cgroups(path: &str) {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path().join(path.trim_start_matches('/'));
        if p.is_dir() {
            // Leaf cgroups first (runc removes its own; leftovers are empty).
            let mut dirs = vec![p.clone()];
            let mut i = 0;
            while i < dirs.len() {
                if let Ok(sub) = std::fs::read_dir(&dirs[i]) {
                    for s in sub.flatten() {
                        if s.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            dirs.push(s.path());
                        }
                    }
                }
                i += 1;
            }
            for d in dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// A memory limit in bytes from a quantity string (for callers outside).
pub fn memory_bytes(q: &str) -> Option<i64> {
    quantity::value(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(300));
        let mut m = HashMap::new();
        let t = now_ns();
        assert!(in_backoff(&m, "a", t, max).is_none());
        next_backoff(&mut m, "a", t, base, max);
        assert_eq!(m["a"].delay, base);
        assert!(in_backoff(&m, "a", t, max).is_some());
        for _ in 0..10 {
            next_backoff(&mut m, "a", t, base, max);
        }
        assert_eq!(m["a"].delay, max);
        // Long ago: not in back-off any more.
        assert!(in_backoff(&m, "a", t - 400_000_000_000, max).is_none());
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_secs(10)), "10s");
        assert_eq!(fmt_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(fmt_duration(Duration::from_secs(80)), "1m20s");
    }
}
