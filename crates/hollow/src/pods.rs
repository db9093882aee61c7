//! The pod side of every hollow kubelet: one watch over all bound pods,
//! dispatched by `spec.nodeName`, and one state machine per pod.
//!
//! A single task owns all state (no locks): watch events, write results,
//! timers and resume requests all arrive here. Writes run as separate
//! tasks, at most `pod_concurrency` at a time, one per pod at a time; a pod
//! that needs a write while one is in flight is looked at again when it
//! returns, with the newest state, so bursts of events coalesce.
//!
//! The state machine is a function of what the API shows (`decide`), so a
//! restarted process adopts pods where their status left them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tug_client::LeanPod;

use crate::ipam::NodeIpam;
use crate::podstatus::{self, PodView, RunState};
use crate::{FIELD_MANAGER, HollowConfig, NodeShared, POD_WRITE_TIMEOUT, PodControl, Shared, api_code, bounded, bump};

/// Page size of the pod watch's initial list: a page is parsed at once,
/// and that transient peak, not the steady state, sets the RSS (150k pods
/// are 1,500 pages; the server serves them from its watch cache).
const LIST_PAGE_SIZE: u32 = 100;

/// What a pod needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Set Running with IPs and container statuses.
    Start,
    /// The simulated command exited.
    Exit,
    /// Crash-loop back-off over: run again.
    Restart,
    /// Running, but someone else set the pod's Ready condition `False`
    /// (the node controller, while the node was unreachable): say it is
    /// ready again, as a kubelet's status manager does.
    Ready,
    /// Final delete of a terminating pod.
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Nothing,
    At(Timestamp),
    Write(Action),
}

#[derive(Debug)]
pub(crate) struct Record {
    pub view: PodView,
    /// The address we hold for it in its node's allocator.
    pub ip: Option<Ipv4Addr>,
    pub deletion_seen: Option<Timestamp>,
    pub delete_requested: bool,
    pub retry_at: Option<Timestamp>,
    pub failures: u32,
    inflight: bool,
    queued: bool,
    wake_at: Option<Instant>,
    epoch: u64,
}

impl Record {
    pub fn new(view: PodView) -> Record {
        Record { view, ip: None, deletion_seen: None, delete_requested: false, retry_at: None, failures: 0, inflight: false, queued: false, wake_at: None, epoch: 0 }
    }
}

/// The next step for a pod, from its last known state alone.
pub(crate) fn decide(cfg: &HollowConfig, node: &NodeShared, rec: &Record, now: Timestamp) -> Decision {
    if node.is_paused() || rec.delete_requested {
        return Decision::Nothing;
    }
    if let Some(r) = rec.retry_at.filter(|r| *r > now) {
        return Decision::At(r);
    }
    let v = &rec.view;
    if let Some(grace) = v.deletion_grace {
        // A kubelet stops the containers (up to the grace period), then
        // deletes for good; nothing runs here, so only a token wait.
        let wait = Duration::from_secs(grace.max(0) as u64).min(cfg.deletion_grace_cap);
        let due = rec.deletion_seen.unwrap_or(now) + wait;
        return if now >= due { Decision::Write(Action::Delete) } else { Decision::At(due) };
    }
    if v.phase.terminal() {
        return Decision::Nothing;
    }
    if !v.started() {
        return Decision::Write(Action::Start);
    }
    match v.run {
        RunState::Running { since } => match v.exit.map(|exit| since + exit.run) {
            Some(end) if now >= end => Decision::Write(Action::Exit),
            // The containers run and are ready: if the pod's conditions say
            // otherwise, someone else wrote them (a kubelet reconciles its
            // status with the API's, e.g. after the node was unreachable).
            _ if !(v.ready && v.containers_ready) => Decision::Write(Action::Ready),
            Some(end) => Decision::At(end),
            None => Decision::Nothing,
        },
        RunState::Waiting { .. } if v.exit.is_none() => Decision::Nothing,
        RunState::Waiting { last_finished, .. } => {
            let at = last_finished + podstatus::backoff(cfg.restart_backoff, v.restart_count);
            if now >= at { Decision::Write(Action::Restart) } else { Decision::At(at) }
        }
        RunState::NotStarted | RunState::Terminated => Decision::Nothing,
    }
}

/// Result of one write, back to the manager.
struct Done {
    key: String,
    uid: String,
    action: Action,
    result: Result<Option<Pod>, kube::Error>,
}

struct Manager {
    shared: Arc<Shared>,
    client: Client,
    records: HashMap<String, Record>,
    ipam: Vec<NodeIpam>,
    queue: VecDeque<String>,
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    inflight: usize,
    done_tx: mpsc::UnboundedSender<Done>,
    epoch: u64,
}

fn without_wrapper(ev: Event<LeanPod>) -> Event<Pod> {
    match ev {
        Event::Init => Event::Init,
        Event::InitApply(p) => Event::InitApply(p.0),
        Event::Apply(p) => Event::Apply(p.0),
        Event::Delete(p) => Event::Delete(p.0),
        Event::InitDone => Event::InitDone,
    }
}

fn key_of(pod: &Pod) -> Option<String> {
    Some(format!("{}/{}", pod.metadata.namespace.as_deref()?, pod.metadata.name.as_deref()?))
}

fn to_instant(t: Timestamp) -> Instant {
    let d = t.duration_since(Timestamp::now());
    Instant::now() + Duration::try_from(d).unwrap_or(Duration::ZERO)
}

fn older(new: Option<u64>, old: Option<u64>) -> bool {
    matches!((new, old), (Some(n), Some(o)) if n < o)
}

impl Manager {
    fn node_of(&self, pod: &Pod) -> Option<usize> {
        let name = pod.spec.as_ref()?.node_name.as_deref()?;
        self.shared.by_name.get(name).copied()
    }

    fn release(ipam: &mut [NodeIpam], rec: &mut Record) {
        if let Some(ip) = rec.ip.take() {
            ipam[rec.view.node].release(ip);
        }
    }

    /// A pod as the API shows it (watch event, or the reply to our write).
    fn apply(&mut self, pod: Pod) {
        let Some(node) = self.node_of(&pod) else { return };
        let Some(key) = key_of(&pod) else { return };
        let view = PodView::from_pod(&pod, node);
        let now = Timestamp::now();
        let rec = match self.records.get_mut(&key) {
            Some(rec) if rec.view.uid == view.uid => {
                // A watch event older than the reply to our own write.
                if older(view.resource_version, rec.view.resource_version) {
                    return;
                }
                rec.view = view;
                rec
            }
            Some(rec) => {
                // Deleted and recreated under the same name while we missed
                // the deletion. A write for the old pod may still be in
                // flight: keep it counted so the new pod waits for it.
                Self::release(&mut self.ipam, rec);
                let (inflight, queued) = (rec.inflight, rec.queued);
                *rec = Record::new(view);
                rec.inflight = inflight;
                rec.queued = queued;
                rec
            }
            None => self.records.entry(key.clone()).or_insert_with(|| Record::new(view)),
        };
        rec.epoch = self.epoch;
        if rec.view.deletion_grace.is_some() && rec.deletion_seen.is_none() {
            rec.deletion_seen = Some(now);
        }
        if rec.view.phase.terminal() {
            // Sandbox gone: the address goes back to the pool (the pod's
            // status keeps showing it, as upstream).
            Self::release(&mut self.ipam, rec);
        } else if rec.ip.is_none()
            && !rec.view.host_network
            && let Some(ip) = rec.view.pod_ip.filter(|_| rec.view.started())
        {
            // Adopted after a restart: keep the address it has.
            self.ipam[rec.view.node].reserve(ip);
            rec.ip = Some(ip);
        }
        self.shared.stats.pods_tracked.store(self.records.len() as u64, Ordering::Relaxed);
        self.evaluate(&key);
    }

    fn remove(&mut self, key: &str, uid: Option<&str>) {
        let Some(rec) = self.records.get_mut(key) else { return };
        if uid.is_some_and(|u| u != rec.view.uid) {
            return;
        }
        Self::release(&mut self.ipam, rec);
        self.records.remove(key);
        self.shared.stats.pods_tracked.store(self.records.len() as u64, Ordering::Relaxed);
    }

    fn on_event(&mut self, ev: Event<Pod>) {
        match ev {
            Event::Init => self.epoch += 1,
            Event::InitApply(pod) | Event::Apply(pod) => self.apply(pod),
            Event::Delete(pod) => {
                if let Some(key) = key_of(&pod) {
                    self.remove(&key, pod.metadata.uid.as_deref());
                }
            }
            Event::InitDone => {
                // Re-listed after a watch gap: what was not listed is gone.
                let stale: Vec<String> = self.records.iter().filter(|(_, r)| r.epoch != self.epoch).map(|(k, _)| k.clone()).collect();
                for key in stale {
                    self.remove(&key, None);
                }
                tracing::info!(pods = self.records.len(), "pod watch (re)listed");
            }
        }
        self.pump();
    }

    fn schedule(&mut self, key: &str, at: Timestamp) {
        let Some(rec) = self.records.get_mut(key) else { return };
        let when = to_instant(at);
        if rec.wake_at.is_none_or(|w| when < w) {
            rec.wake_at = Some(when);
            self.timers.push(Reverse((when, key.to_string())));
        }
    }

    /// Looks at a pod that is not being written: queue a write or a wakeup.
    fn evaluate(&mut self, key: &str) {
        let Some(rec) = self.records.get_mut(key) else { return };
        if rec.inflight || rec.queued {
            return;
        }
        let node = &self.shared.nodes[rec.view.node];
        match decide(&self.shared.config, node, rec, Timestamp::now()) {
            Decision::Nothing => {}
            Decision::At(t) => self.schedule(key, t),
            Decision::Write(_) => {
                rec.queued = true;
                self.queue.push_back(key.to_string());
            }
        }
    }

    /// Starts queued writes while there is room.
    fn pump(&mut self) {
        while self.inflight < self.shared.config.pod_concurrency.max(1) {
            let Some(key) = self.queue.pop_front() else { break };
            let Some(rec) = self.records.get_mut(&key) else { continue };
            rec.queued = false;
            if rec.inflight {
                continue;
            }
            let node = &self.shared.nodes[rec.view.node];
            // Decide again: the pod may have moved on while queued.
            match decide(&self.shared.config, node, rec, Timestamp::now()) {
                Decision::Nothing => {}
                Decision::At(t) => self.schedule(&key, t),
                Decision::Write(action) => self.spawn_write(key, action),
            }
        }
    }

    fn spawn_write(&mut self, key: String, action: Action) {
        let shared = self.shared.clone();
        let Some(rec) = self.records.get_mut(&key) else { return };
        let node = &shared.nodes[rec.view.node];
        let now = Timestamp::now();
        let v = &rec.view;
        let body = match action {
            Action::Delete => None,
            Action::Start => {
                let ip = if v.host_network {
                    node.internal_ip
                } else if let Some(ip) = rec.ip {
                    ip
                } else if let Some(ip) = v.pod_ip {
                    // Had an address but an incomplete status: keep it.
                    self.ipam[v.node].reserve(ip);
                    rec.ip = Some(ip);
                    ip
                } else {
                    let cidr = node.pod_cidr();
                    match self.ipam[v.node].allocate(cidr) {
                        Some(ip) => {
                            rec.ip = Some(ip);
                            ip
                        }
                        None => {
                            // As a real CNI would: fail the sandbox, retry later.
                            tracing::warn!(node = %node.name, pod = %key, %cidr, in_use = self.ipam[v.node].in_use(), "no free pod address; retrying in 5s");
                            rec.retry_at = Some(now + Duration::from_secs(5));
                            self.evaluate(&key);
                            return;
                        }
                    }
                };
                Some(podstatus::start_patch(v, node.internal_ip, ip, now))
            }
            Action::Exit => {
                let (Some(exit), RunState::Running { since }) = (v.exit, v.run) else { return };
                if v.exit_is_terminal(exit.code) {
                    Some(podstatus::finish_patch(v, exit.code, since, now))
                } else {
                    let b = podstatus::backoff(shared.config.restart_backoff, v.restart_count + 1);
                    Some(podstatus::crash_patch(v, exit.code, since, now, b))
                }
            }
            Action::Restart => {
                let (Some(exit), RunState::Waiting { last_started, last_finished }) = (v.exit, v.run) else { return };
                Some(podstatus::restart_patch(v, exit.code, last_started, last_finished, now))
            }
            Action::Ready => Some(podstatus::ready_patch(v, now)),
        };
        rec.inflight = true;
        self.inflight += 1;
        let (ns, name, uid) = (v.namespace.clone(), v.name.clone(), v.uid.clone());
        tracing::debug!(node = %node.name, pod = %key, ?action, "writing");
        let api: Api<LeanPod> = Api::namespaced(self.client.clone(), &ns);
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let result = match body {
                None => {
                    // Upstream kubelet: delete with grace 0 once stopped, only
                    // this incarnation of the pod (uid precondition).
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
                        ..Default::default()
                    };
                    bounded(POD_WRITE_TIMEOUT, api.delete(&name, &dp)).await.map(|_| None)
                }
                Some(body) => {
                    let pp = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
                    bounded(POD_WRITE_TIMEOUT, api.patch_status(&name, &pp, &Patch::Strategic(body))).await.map(|p| Some(p.into_inner()))
                }
            };
            let _ = tx.send(Done { key, uid, action, result });
        });
    }

    fn on_done(&mut self, d: Done) {
        self.inflight -= 1;
        let stats = &self.shared.stats;
        if d.result.is_ok() {
            match d.action {
                Action::Start | Action::Restart => bump(&stats.pods_started),
                Action::Exit => bump(&stats.pods_exited),
                Action::Delete => bump(&stats.pods_deleted),
                Action::Ready => {}
            }
        }
        let mut reply = None;
        if let Some(rec) = self.records.get_mut(&d.key) {
            rec.inflight = false;
            let now = Timestamp::now();
            let same_pod = rec.view.uid == d.uid;
            match d.result {
                Ok(Some(pod)) => {
                    rec.failures = 0;
                    rec.retry_at = None;
                    if same_pod {
                        reply = Some(pod);
                    }
                }
                Ok(None) => {
                    if same_pod {
                        rec.delete_requested = true;
                    }
                }
                // Gone, or replaced by a pod with another uid: the watch will
                // tell; don't spin on it meanwhile.
                Err(e) if matches!(api_code(&e), Some(404 | 409)) => {
                    if same_pod && d.action == Action::Delete && api_code(&e) == Some(404) {
                        rec.delete_requested = true;
                    } else {
                        rec.retry_at = Some(now + Duration::from_secs(1));
                    }
                    tracing::debug!(pod = %d.key, error = %e, action = ?d.action, "pod changed under us");
                }
                Err(e) => {
                    bump(&stats.pod_write_failures);
                    rec.failures = rec.failures.saturating_add(1);
                    let backoff = Duration::from_millis(200).saturating_mul(1 << rec.failures.min(8)).min(Duration::from_secs(30));
                    rec.retry_at = Some(now + backoff);
                    tracing::warn!(pod = %d.key, error = %e, action = ?d.action, retry_ms = backoff.as_millis() as u64, "pod write failed");
                }
            }
            match reply {
                // The reply is the pod's newest state: no need to wait for
                // the watch to echo it (and no duplicate write meanwhile).
                Some(pod) => self.apply(pod),
                None => self.evaluate(&d.key),
            }
        }
        self.pump();
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((t, _))) = self.timers.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((t, key))) = self.timers.pop() else { break };
            let Some(rec) = self.records.get_mut(&key) else { continue };
            if rec.wake_at != Some(t) {
                continue; // superseded by an earlier wakeup
            }
            rec.wake_at = None;
            self.evaluate(&key);
        }
        self.pump();
    }

    fn on_control(&mut self, c: PodControl) {
        match c {
            PodControl::Resume(i) => {
                let keys: Vec<String> = self.records.iter().filter(|(_, r)| r.view.node == i).map(|(k, _)| k.clone()).collect();
                tracing::info!(node = %self.shared.nodes[i].name, pods = keys.len(), "catching up on pods");
                for k in keys {
                    self.evaluate(&k);
                }
                self.pump();
            }
        }
    }
}

/// Runs the pod side of all hollow nodes, forever.
pub(crate) async fn run(client: Client, shared: Arc<Shared>, mut control: mpsc::UnboundedReceiver<PodControl>) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let ipam = (0..shared.nodes.len()).map(|_| NodeIpam::default()).collect();
    let mut m = Manager {
        shared,
        client: client.clone(),
        records: HashMap::new(),
        ipam,
        queue: VecDeque::new(),
        timers: BinaryHeap::new(),
        inflight: 0,
        done_tx,
        epoch: 0,
    };
    // One watch for every bound pod; a kubelet's own would select
    // `spec.nodeName=<node>`, one watch per node.
    // Decoded without managedFields: a kubelet reads none of them, and
    // they were the larger part of each pod's decoding.
    let api: Api<LeanPod> = Api::all(client);
    let stream = watcher::watcher(api, watcher::Config::default().fields("spec.nodeName!=").page_size(LIST_PAGE_SIZE)).default_backoff();
    futures::pin_mut!(stream);
    loop {
        let next_timer = m.timers.peek().map(|Reverse((t, _))| *t);
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(ev)) => m.on_event(without_wrapper(ev)),
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                None => return,
            },
            Some(d) = done_rx.recv() => m.on_done(d),
            Some(c) = control.recv() => m.on_control(c),
            _ = async { tokio::time::sleep_until(next_timer.expect("guarded")).await }, if next_timer.is_some() => m.on_timers(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    fn node() -> NodeShared {
        NodeShared {
            name: "n".into(),
            internal_ip: crate::ipam::node_ip(0),
            fallback_cidr: crate::ipam::fallback_pod_cidr(0),
            paused: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            conditions_overridden: AtomicBool::new(false),
            pod_cidr: Mutex::new(None),
            uid: Mutex::new(None),
        }
    }

    fn view(extra: serde_json::Value) -> PodView {
        let mut p = json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"nodeName": "n", "restartPolicy": "Never", "containers": [{"name": "a", "image": "x"}]},
        });
        json_merge(&mut p, extra);
        PodView::from_pod(&serde_json::from_value(p).unwrap(), 0)
    }

    fn json_merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    json_merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn running(since: &str) -> serde_json::Value {
        json!({"status": {"phase": "Running", "podIP": "10.201.0.2",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
            "containerStatuses": [{"name": "a", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
                                   "state": {"running": {"startedAt": since}}}]}})
    }

    #[test]
    fn bound_pod_is_started_then_left_alone() {
        let cfg = HollowConfig::default();
        let n = node();
        let now = Timestamp::now();
        assert_eq!(decide(&cfg, &n, &Record::new(view(json!({}))), now), Decision::Write(Action::Start));
        assert_eq!(decide(&cfg, &n, &Record::new(view(running("2024-01-01T00:00:00Z"))), now), Decision::Nothing);
    }

    #[test]
    fn running_pod_marked_not_ready_by_someone_else_is_made_ready_again() {
        let cfg = HollowConfig::default();
        let n = node();
        let now = Timestamp::now();
        let mut p = running("2024-01-01T00:00:00Z");
        p["status"]["conditions"][0]["status"] = json!("False");
        let rec = Record::new(view(p));
        assert_eq!(decide(&cfg, &n, &rec, now), Decision::Write(Action::Ready));
        // Not while the kubelet is hung: on resume.
        n.paused.store(true, Ordering::Relaxed);
        assert_eq!(decide(&cfg, &n, &rec, now), Decision::Nothing);
        n.paused.store(false, Ordering::Relaxed);
        // A crash-looping pod is not ready, rightly: left alone.
        let mut v = view(json!({"status": {"phase": "Running", "podIP": "10.201.0.2",
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}],
            "containerStatuses": [{"name": "a", "image": "x", "imageID": "", "ready": false, "restartCount": 1,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "startedAt": "2024-01-01T00:00:00Z", "finishedAt": "2024-01-01T00:00:01Z"}}}]}}));
        assert!(matches!(v.run, RunState::Waiting { .. }), "{v:?}");
        assert_eq!(decide(&cfg, &n, &Record::new(v.clone()), now), Decision::Nothing);
        v.exit = Some(podstatus::Exit { code: 1, run: Duration::ZERO });
        assert_eq!(decide(&cfg, &n, &Record::new(v), now), Decision::Write(Action::Restart));
        // An exit that is due comes first.
        let mut v = rec.view.clone();
        v.exit = Some(podstatus::Exit { code: 0, run: Duration::ZERO });
        assert_eq!(decide(&cfg, &n, &Record::new(v), now), Decision::Write(Action::Exit));
    }

    #[test]
    fn paused_node_does_nothing() {
        let cfg = HollowConfig::default();
        let n = node();
        n.paused.store(true, Ordering::Relaxed);
        assert_eq!(decide(&cfg, &n, &Record::new(view(json!({}))), Timestamp::now()), Decision::Nothing);
    }

    #[test]
    fn exit_annotation_waits_for_the_run_time() {
        let cfg = HollowConfig::default();
        let n = node();
        let since = Timestamp::now();
        let mut v = view(running(&crate::time_string(since)));
        v.exit = Some(podstatus::Exit { code: 0, run: Duration::from_secs(30) });
        let rec = Record::new(v);
        match decide(&cfg, &n, &rec, since) {
            Decision::At(t) => assert!(t > since + Duration::from_secs(28), "{t}"),
            d => panic!("{d:?}"),
        }
        assert_eq!(decide(&cfg, &n, &rec, since + Duration::from_secs(31)), Decision::Write(Action::Exit));
    }

    #[test]
    fn terminating_pod_is_deleted_after_the_capped_grace() {
        let cfg = HollowConfig::default();
        let n = node();
        let mut rec = Record::new(view(json!({"metadata": {"deletionTimestamp": "2030-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30}})));
        let seen = Timestamp::now();
        rec.deletion_seen = Some(seen);
        assert_eq!(decide(&cfg, &n, &rec, seen), Decision::At(seen + Duration::from_secs(1)));
        assert_eq!(decide(&cfg, &n, &rec, seen + Duration::from_secs(1)), Decision::Write(Action::Delete));
        rec.delete_requested = true;
        assert_eq!(decide(&cfg, &n, &rec, seen + Duration::from_secs(2)), Decision::Nothing);
    }

    #[test]
    fn terminal_pods_need_nothing() {
        let cfg = HollowConfig::default();
        let n = node();
        let rec = Record::new(view(json!({"status": {"phase": "Succeeded"}})));
        assert_eq!(decide(&cfg, &n, &rec, Timestamp::now()), Decision::Nothing);
    }
}
