//! The scheduling loop (upstream's `scheduleOne`): pop a pod, run the
//! algorithm on a fresh snapshot, assume the pod on the chosen node and
//! bind it in the background; on failure run preemption, requeue the pod,
//! record FailedScheduling and set its PodScheduled condition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::algorithm::{self, ScheduleError, NO_NODES_AVAILABLE_MSG};
use crate::cache::Cache;
use crate::events::{self, EventRecorder, SchedulingCondition};
use crate::framework::{CycleState, Framework, PodInfo, PostFilterResult, QueuedPodInfo, Snapshot, Status, EVENT_ASSIGNED_POD_DELETE};
use crate::helpers;
use crate::plugins::volume_binding::VolumeListers;
use crate::queue::{QueueConfig, SchedulingQueue};
use crate::{informers, Metrics, SchedulerConfig};

/// State shared by the watchers, the scheduling loop and the binders.
pub(crate) struct Shared {
    pub client: Client,
    pub config: SchedulerConfig,
    pub framework: Arc<Framework>,
    pub cache: Mutex<Cache>,
    pub queue: SchedulingQueue,
    /// Every pod by `namespace/name` (upstream's pod lister).
    pub pods: Mutex<HashMap<String, Arc<Pod>>>,
    /// Claims and volumes, for VolumeBinding.
    pub volumes: Arc<VolumeListers>,
    pub events: Arc<EventRecorder>,
    pub metrics: Arc<Metrics>,
}

/// One running scheduler (watchers, loop, binders); stopping it aborts all.
pub(crate) struct Instance {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl Instance {
    pub fn start(client: Client, config: SchedulerConfig, identity: &str) -> Instance {
        let volumes = Arc::new(VolumeListers::default());
        let mut fwk = crate::plugins::default_framework_with(client.clone(), config.percentage_of_nodes_to_score, volumes.clone());
        fwk.profile_name = config.scheduler_name.clone();
        if config.disable_preemption {
            fwk.post_filter.clear();
        }
        let queue = SchedulingQueue::new(
            &fwk,
            QueueConfig { initial_backoff: config.pod_initial_backoff, max_backoff: config.pod_max_backoff, max_in_unschedulable: config.pod_max_in_unschedulable },
        );
        let shared = Arc::new(Shared {
            events: Arc::new(EventRecorder::new(client.clone(), &config.scheduler_name, identity)),
            client,
            metrics: config.metrics.clone(),
            framework: Arc::new(fwk),
            cache: Mutex::new(Cache::new(config.assumed_pod_ttl)),
            queue,
            pods: Mutex::new(HashMap::new()),
            volumes,
            config,
        });
        let mut tasks = JoinSet::new();
        let (nodes_tx, nodes_rx) = oneshot::channel();
        let (pods_tx, pods_rx) = oneshot::channel();
        let (ns_tx, ns_rx) = oneshot::channel();
        let (pvc_tx, pvc_rx) = oneshot::channel();
        let (pv_tx, pv_rx) = oneshot::channel();
        tasks.spawn(informers::watch_nodes(shared.clone(), nodes_tx));
        tasks.spawn(informers::watch_pods(shared.clone(), pods_tx));
        tasks.spawn(informers::watch_namespaces(shared.clone(), ns_tx));
        tasks.spawn(informers::watch_claims(shared.clone(), pvc_tx));
        tasks.spawn(informers::watch_volumes(shared.clone(), pv_tx));
        let s = shared.clone();
        tasks.spawn(async move {
            // Upstream's WaitForCacheSync before the first cycle.
            let _ = nodes_rx.await;
            let _ = pods_rx.await;
            let _ = ns_rx.await;
            let _ = pvc_rx.await;
            let _ = pv_rx.await;
            tracing::info!(scheduler = %s.config.scheduler_name, "caches synced; scheduling");
            scheduling_loop(s).await
        });
        let s = shared.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                n += 1;
                let now = Instant::now();
                s.queue.flush_backoff_completed(now);
                if n.is_multiple_of(30) {
                    s.queue.flush_unschedulable_left_over(now);
                }
                let expired = s.cache.lock().unwrap_or_else(|e| e.into_inner()).cleanup_assumed_pods(now);
                for uid in expired {
                    tracing::warn!(%uid, "assumed pod expired without a confirmed binding");
                }
                let (a, b, u) = s.queue.lens();
                s.metrics.set_pending(a, b, u);
            }
        });
        Instance { shared, tasks }
    }

    /// Runs until every task ends (they do not, unless they panic).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = r
                && e.is_panic() {
                    anyhow::bail!("scheduler task panicked: {e}");
                }
        }
        Ok(())
    }

    pub async fn stop(mut self) {
        self.shared.queue.close();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn scheduling_loop(shared: Arc<Shared>) {
    let mut next_start = 0usize;
    let mut binders: JoinSet<()> = JoinSet::new();
    let mut snapshot = Snapshot::default();
    loop {
        let next = match futures::FutureExt::now_or_never(shared.queue.pop()) {
            Some(next) => next,
            None => {
                // Nothing to schedule: let the snapshot go. An idle
                // scheduler's cache keeps changing (pods start, finish), and
                // a held snapshot would keep every NodeInfo replaced since,
                // and the old pod versions in them, alive: 750 MB more
                // scheduler RSS at 150,000 pods. (`pop` is cancel-safe: it
                // takes a pod only when it returns it.)
                snapshot = Snapshot::default();
                shared.queue.pop().await
            }
        };
        let Some(q) = next else { break };
        schedule_one(&shared, q, &mut snapshot, &mut next_start, &mut binders).await;
        // Reap finished binders.
        while binders.try_join_next().is_some() {}
    }
}

async fn schedule_one(shared: &Arc<Shared>, mut q: QueuedPodInfo, snapshot: &mut Snapshot, next_start: &mut usize, binders: &mut JoinSet<()>) {
    let pod = q.pod_info.clone();
    let uid = pod.uid.clone();
    if helpers::is_terminating(&pod.pod) || shared.cache.lock().unwrap_or_else(|e| e.into_inner()).is_assumed(&uid) {
        shared.queue.done(&uid);
        return;
    }
    let cycle = shared.queue.scheduling_cycle();
    shared.cache.lock().unwrap_or_else(|e| e.into_inner()).update_snapshot(snapshot);
    let snapshot = &*snapshot;
    let nominated = shared.queue.nominated_pods();
    let fwk = shared.framework.clone();
    let mut state = CycleState::new();
    let started = Instant::now();
    let result = algorithm::schedule_pod(&fwk, &mut state, &pod, snapshot, &nominated, next_start);
    shared.metrics.observe_cycle(started.elapsed());
    match result {
        Ok(r) => {
            let mut assumed = (*pod.pod).clone();
            assumed.spec.get_or_insert_with(Default::default).node_name = Some(r.suggested_host.clone());
            let assumed_info = Arc::new(PodInfo::new(Arc::new(assumed)));
            let assumed_result = shared.cache.lock().unwrap_or_else(|e| e.into_inner()).assume_pod(assumed_info.clone());
            if let Err(e) = assumed_result {
                handle_failure(shared, q, Status::error(e.to_string()), None, cycle).await;
                return;
            }
            shared.queue.done(&uid);
            shared.queue.delete_nomination(&uid);
            tracing::debug!(pod = %pod.key(), node = %r.suggested_host, evaluated = r.evaluated_nodes, feasible = r.feasible_nodes, "scheduled");
            let s = shared.clone();
            binders.spawn(async move { binding_cycle(s, q, assumed_info, r.suggested_host, cycle).await });
        }
        Err(ScheduleError::NoNodesAvailable) => {
            handle_failure(shared, q, Status::unresolvable(NO_NODES_AVAILABLE_MSG), Some(String::new()), cycle).await;
        }
        Err(ScheduleError::Fit(mut fe)) => {
            let mut nominating = None;
            if !fwk.post_filter.is_empty() {
                let (r, s) = fwk.run_post_filter(snapshot, &nominated, &state, &pod, &fe.diagnosis.node_to_status);
                if s.code == crate::framework::Code::Error {
                    tracing::warn!(pod = %pod.key(), status = %s, "PostFilter failed");
                }
                fe.diagnosis.post_filter_msg = s.message();
                if let Some(r) = r {
                    nominating = r.nominated_node_name.clone();
                    if r.nominated_node_name.as_deref().map(|n| !n.is_empty()).unwrap_or(false)
                        && let Err(e) = prepare_candidate(shared, &pod, &r).await {
                            tracing::warn!(pod = %pod.key(), error = %e, "preemption failed");
                            nominating = None;
                        }
                }
            }
            q.unschedulable_plugins = fe.diagnosis.unschedulable_plugins.clone();
            let msg = fe.to_string();
            tracing::debug!(pod = %pod.key(), %msg, "unschedulable");
            handle_failure(shared, q, Status::unschedulable(msg), nominating, cycle).await;
        }
        Err(ScheduleError::Internal(s)) => {
            tracing::warn!(pod = %pod.key(), status = %s, "scheduling error");
            handle_failure(shared, q, Status::error(s.message()), None, cycle).await;
        }
    }
}

/// Deletes the victims and clears lower-priority nominations on the node.
async fn prepare_candidate(shared: &Arc<Shared>, pod: &Arc<PodInfo>, r: &PostFilterResult) -> Result<(), kube::Error> {
    let node = r.nominated_node_name.clone().unwrap_or_default();
    shared.metrics.preemption_attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile = shared.framework.profile_name.clone();
    let mut deletions = Vec::new();
    for v in &r.victims {
        let msg = format!("Preempted by pod {} on node {}", pod.uid, node);
        shared.events.record(&v.pod, "Normal", "Preempted", "Preempting", &msg);
        let client = shared.client.clone();
        let victim = v.pod.clone();
        let profile = profile.clone();
        deletions.push(async move { events::preempt_victim(&client, &victim, &profile).await });
    }
    for res in futures::future::join_all(deletions).await {
        res?;
    }
    shared.metrics.preemption_victims.fetch_add(r.victims.len() as u64, std::sync::atomic::Ordering::Relaxed);
    for p in &r.nominations_to_clear {
        shared.queue.delete_nomination(&p.uid);
        if let Err(e) = events::clear_nominated_node_name(&shared.client, &p.pod).await {
            tracing::warn!(pod = %p.key(), error = %e, "could not clear nominatedNodeName");
        }
    }
    tracing::info!(preemptor = %pod.key(), %node, victims = r.victims.len(), "preempting");
    Ok(())
}

async fn binding_cycle(shared: Arc<Shared>, q: QueuedPodInfo, assumed: Arc<PodInfo>, node: String, cycle: u64) {
    let status = shared.framework.run_bind(&assumed.pod, &node).await;
    if status.is_success() {
        shared.cache.lock().unwrap_or_else(|e| e.into_inner()).finish_binding(&assumed.uid);
        shared.metrics.scheduled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let msg = format!("Successfully assigned {} to {}", assumed.key(), node);
        shared.events.record(&q.pod_info.pod, "Normal", "Scheduled", "Binding", &msg);
        return;
    }
    tracing::warn!(pod = %assumed.key(), %node, status = %status, "binding failed");
    let _ = shared.cache.lock().unwrap_or_else(|e| e.into_inner()).forget_pod(&assumed.uid);
    // The room the pod took is free again for others.
    shared.queue.move_all_to_active_or_backoff(EVENT_ASSIGNED_POD_DELETE);
    handle_failure(&shared, q, status, None, cycle).await;
}

/// Upstream's `handleSchedulingFailure`: requeue (unless the pod is gone
/// or bound), nominate, record FailedScheduling, set PodScheduled=False.
async fn handle_failure(shared: &Arc<Shared>, mut q: QueuedPodInfo, status: Status, nominating: Option<String>, cycle: u64) {
    let reason = if status.is_rejected() { "Unschedulable" } else { "SchedulerError" };
    if status.is_rejected() {
        shared.metrics.unschedulable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    } else {
        shared.metrics.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        q.unschedulable_plugins.clear();
    }
    let key = q.pod_info.key();
    let latest = shared.pods.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
    let Some(latest) = latest.filter(|p| helpers::pod_uid(p) == q.pod_info.uid) else {
        shared.queue.done(&q.pod_info.uid);
        tracing::debug!(pod = %key, "pod no longer exists; not requeued");
        return;
    };
    if helpers::is_assigned(&latest) {
        shared.queue.done(&q.pod_info.uid);
        return;
    }
    let latest_info = Arc::new(PodInfo::new(latest.clone()));
    q.pod_info = latest_info.clone();
    if helpers::is_terminating(&latest) {
        shared.queue.done(&latest_info.uid);
        return;
    }
    shared.queue.add_unschedulable_if_not_present(q, cycle);
    if let Some(n) = &nominating {
        shared.queue.nominate(latest_info.clone(), n);
    }
    let msg = status.message();
    shared.events.record(&latest, "Warning", "FailedScheduling", "Scheduling", &msg);
    let cond = SchedulingCondition { status: "False".into(), reason: reason.into(), message: msg };
    let client = shared.client.clone();
    tokio::spawn(async move {
        if let Err(e) = events::update_pod_status(&client, &latest, &cond, nominating.as_deref()).await {
            tracing::warn!(pod = %helpers::pod_key(&latest), error = %e, "could not update the pod's status");
        }
    });
}
