//! The scheduling queue (upstream's `PriorityQueue`): an active heap in
//! QueueSort order, a backoff heap (1s doubling to 10s per attempt), and
//! the unschedulable pods, moved back when a cluster event one of the
//! plugins that rejected them cares about happens (or after 5 minutes).
//! Also the nominator: pods nominated to nodes by preemption.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;

use crate::framework::{ClusterEvent, Framework, NominatedPods, PodInfo, QueuedPodInfo, EVENT_UNSCHEDULABLE_TIMEOUT};
use crate::helpers;

type LessFn = Arc<dyn Fn(&QueuedPodInfo, &QueuedPodInfo) -> bool + Send + Sync>;

/// A binary heap with removal and update by key (upstream's `heap.Heap`).
struct KeyedHeap {
    items: Vec<QueuedPodInfo>,
    index: HashMap<String, usize>,
    less: LessFn,
}

impl KeyedHeap {
    fn new(less: LessFn) -> KeyedHeap {
        KeyedHeap { items: Vec::new(), index: HashMap::new(), less }
    }

    fn key(q: &QueuedPodInfo) -> &str {
        &q.pod_info.uid
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    fn get_mut_and_fix(&mut self, key: &str, f: impl FnOnce(&mut QueuedPodInfo)) -> bool {
        let Some(&i) = self.index.get(key) else { return false };
        f(&mut self.items[i]);
        self.fix(i);
        true
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.items.swap(i, j);
        self.index.insert(Self::key(&self.items[i]).to_string(), i);
        self.index.insert(Self::key(&self.items[j]).to_string(), j);
    }

    fn up(&mut self, mut i: usize) -> bool {
        let start = i;
        while i > 0 {
            let parent = (i - 1) / 2;
            if !(self.less)(&self.items[i], &self.items[parent]) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
        i != start
    }

    fn down(&mut self, mut i: usize) {
        let n = self.items.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let mut smallest = l;
            let r = l + 1;
            if r < n && (self.less)(&self.items[r], &self.items[l]) {
                smallest = r;
            }
            if !(self.less)(&self.items[smallest], &self.items[i]) {
                break;
            }
            self.swap(i, smallest);
            i = smallest;
        }
    }

    fn fix(&mut self, i: usize) {
        if !self.up(i) {
            self.down(i);
        }
    }

    /// Adds, or replaces the entry with the same key.
    fn push(&mut self, q: QueuedPodInfo) {
        let key = Self::key(&q).to_string();
        if let Some(&i) = self.index.get(&key) {
            self.items[i] = q;
            self.fix(i);
            return;
        }
        self.items.push(q);
        let i = self.items.len() - 1;
        self.index.insert(key, i);
        self.up(i);
    }

    fn peek(&self) -> Option<&QueuedPodInfo> {
        self.items.first()
    }

    fn pop(&mut self) -> Option<QueuedPodInfo> {
        if self.items.is_empty() {
            return None;
        }
        let last = self.items.len() - 1;
        self.swap(0, last);
        let q = self.items.pop().expect("non-empty");
        self.index.remove(Self::key(&q));
        if !self.items.is_empty() {
            self.down(0);
        }
        Some(q)
    }

    fn remove(&mut self, key: &str) -> Option<QueuedPodInfo> {
        let i = self.index.get(key).copied()?;
        let last = self.items.len() - 1;
        if i != last {
            self.swap(i, last);
        }
        let q = self.items.pop().expect("non-empty");
        self.index.remove(key);
        if i < self.items.len() {
            self.fix(i);
        }
        Some(q)
    }
}

/// Pods nominated to nodes (upstream's `nominator`).
#[derive(Default)]
struct Nominator {
    by_node: HashMap<String, Vec<Arc<PodInfo>>>,
    pod_to_node: HashMap<String, String>,
}

impl Nominator {
    fn delete(&mut self, uid: &str) {
        if let Some(node) = self.pod_to_node.remove(uid)
            && let Some(v) = self.by_node.get_mut(&node) {
                v.retain(|p| p.uid != uid);
                if v.is_empty() {
                    self.by_node.remove(&node);
                }
            }
    }

    /// Nominates `pi` to `node_override`, else to its `status.nominatedNodeName`.
    fn add(&mut self, pi: Arc<PodInfo>, node_override: Option<&str>) {
        self.delete(&pi.uid);
        let node = node_override.unwrap_or_else(|| helpers::nominated_node_name(&pi.pod)).to_string();
        if node.is_empty() {
            return;
        }
        self.pod_to_node.insert(pi.uid.clone(), node.clone());
        self.by_node.entry(node).or_default().push(pi);
    }

    /// Keeps a nomination made by this scheduler when an update carries none.
    fn update(&mut self, old: Option<&Pod>, pi: Arc<PodInfo>) {
        let mut keep: Option<String> = None;
        if old.map(helpers::nominated_node_name).unwrap_or("").is_empty() && helpers::nominated_node_name(&pi.pod).is_empty() {
            keep = self.pod_to_node.get(&pi.uid).cloned();
        }
        self.add(pi, keep.as_deref());
    }
}

#[derive(Default)]
struct InFlight {
    latest: Option<Arc<Pod>>,
    deleted: bool,
}

struct Inner {
    active: KeyedHeap,
    backoff: KeyedHeap,
    unschedulable: HashMap<String, QueuedPodInfo>,
    in_flight: HashMap<String, InFlight>,
    scheduling_cycle: u64,
    move_request_cycle: u64,
    nominator: Nominator,
    seq: u64,
    closed: bool,
}

/// Tunables of the queue.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_in_unschedulable: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { initial_backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(10), max_in_unschedulable: Duration::from_secs(300) }
    }
}

pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    config: QueueConfig,
    events: HashMap<&'static str, Vec<ClusterEvent>>,
}

/// Upstream's `calculateBackoffDuration`.
pub fn backoff_duration(attempts: u32, initial: Duration, max: Duration) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let mut d = initial;
    for _ in 1..attempts {
        if d > max.saturating_sub(d) {
            return max;
        }
        d += d;
    }
    d.min(max)
}

fn is_gated(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.scheduling_gates.as_ref()).map(|g| !g.is_empty()).unwrap_or(false)
}

/// Upstream's `isPodUpdated`: anything but status, resourceVersion,
/// generation, managedFields and finalizers changed.
pub fn is_pod_updated(old: &Pod, new: &Pod) -> bool {
    let strip = |p: &Pod| {
        let mut m = p.metadata.clone();
        m.resource_version = None;
        m.generation = None;
        m.managed_fields = None;
        m.finalizers = None;
        (m, p.spec.clone())
    };
    strip(old) != strip(new)
}

impl SchedulingQueue {
    pub fn new(fwk: &Framework, config: QueueConfig) -> SchedulingQueue {
        let sort = fwk.queue_sort.clone();
        let less: LessFn = Arc::new(move |a, b| sort.less(a, b));
        let (ib, mb) = (config.initial_backoff, config.max_backoff);
        let backoff_less: LessFn = Arc::new(move |a: &QueuedPodInfo, b: &QueuedPodInfo| {
            a.timestamp + backoff_duration(a.attempts, ib, mb) < b.timestamp + backoff_duration(b.attempts, ib, mb)
        });
        SchedulingQueue {
            inner: Mutex::new(Inner {
                active: KeyedHeap::new(less),
                backoff: KeyedHeap::new(backoff_less),
                unschedulable: HashMap::new(),
                in_flight: HashMap::new(),
                scheduling_cycle: 0,
                move_request_cycle: 0,
                nominator: Nominator::default(),
                seq: 0,
                closed: false,
            }),
            notify: Notify::new(),
            config,
            events: fwk.events.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn backoff_expiry(&self, q: &QueuedPodInfo) -> Instant {
        q.timestamp + backoff_duration(q.attempts, self.config.initial_backoff, self.config.max_backoff)
    }

    fn is_backing_off(&self, q: &QueuedPodInfo, now: Instant) -> bool {
        self.backoff_expiry(q) > now
    }

    fn new_queued(&self, inner: &mut Inner, pod_info: Arc<PodInfo>, now: Instant) -> QueuedPodInfo {
        inner.seq += 1;
        let mut q = QueuedPodInfo::new(pod_info, now);
        q.seq = inner.seq;
        q
    }

    /// A new unassigned pod this scheduler is responsible for.
    pub fn add(&self, pod: Arc<Pod>) {
        let now = Instant::now();
        let pi = Arc::new(PodInfo::new(pod));
        let mut inner = self.lock();
        let uid = pi.uid.clone();
        inner.nominator.add(pi.clone(), None);
        if inner.in_flight.contains_key(&uid) || inner.active.contains(&uid) {
            return;
        }
        inner.backoff.remove(&uid);
        inner.unschedulable.remove(&uid);
        let mut q = self.new_queued(&mut inner, pi, now);
        if is_gated(&q.pod_info.pod) {
            q.gated = true;
            inner.unschedulable.insert(uid, q);
            return;
        }
        inner.active.push(q);
        drop(inner);
        self.notify.notify_one();
    }

    /// An unassigned pod changed.
    pub fn update(&self, old: Option<&Pod>, new: Arc<Pod>) {
        let now = Instant::now();
        let pi = Arc::new(PodInfo::new(new.clone()));
        let uid = pi.uid.clone();
        let mut inner = self.lock();
        inner.nominator.update(old, pi.clone());
        if let Some(f) = inner.in_flight.get_mut(&uid) {
            f.latest = Some(new);
            return;
        }
        if inner.active.get_mut_and_fix(&uid, |q| q.pod_info = pi.clone()) {
            return;
        }
        if inner.backoff.get_mut_and_fix(&uid, |q| q.pod_info = pi.clone()) {
            return;
        }
        if let Some(mut q) = inner.unschedulable.remove(&uid) {
            let updated = old.map(|o| is_pod_updated(o, &new)).unwrap_or(true);
            q.pod_info = pi;
            if q.gated {
                if is_gated(&new) {
                    inner.unschedulable.insert(uid, q);
                    return;
                }
                q.gated = false;
                inner.active.push(q);
            } else if updated {
                q.unschedulable_plugins.clear();
                if self.is_backing_off(&q, now) {
                    inner.backoff.push(q);
                    return;
                }
                inner.active.push(q);
            } else {
                inner.unschedulable.insert(uid, q);
                return;
            }
            drop(inner);
            self.notify.notify_one();
            return;
        }
        drop(inner);
        self.add(new);
    }

    /// The pod is gone, bound elsewhere, or no longer ours.
    pub fn delete(&self, uid: &str) {
        let mut inner = self.lock();
        inner.nominator.delete(uid);
        inner.active.remove(uid);
        inner.backoff.remove(uid);
        inner.unschedulable.remove(uid);
        if let Some(f) = inner.in_flight.get_mut(uid) {
            f.deleted = true;
        }
    }

    /// Waits for the next pod to schedule; `None` once closed.
    pub async fn pop(&self) -> Option<QueuedPodInfo> {
        loop {
            {
                let mut inner = self.lock();
                if inner.closed {
                    return None;
                }
                if let Some(mut q) = inner.active.pop() {
                    q.attempts += 1;
                    if q.initial_attempt_timestamp.is_none() {
                        q.initial_attempt_timestamp = Some(Instant::now());
                    }
                    inner.scheduling_cycle += 1;
                    inner.in_flight.insert(q.pod_info.uid.clone(), InFlight::default());
                    return Some(q);
                }
            }
            self.notify.notified().await;
        }
    }

    /// The number of the current scheduling cycle (bumped by every pop).
    pub fn scheduling_cycle(&self) -> u64 {
        self.lock().scheduling_cycle
    }

    /// The popped pod was assumed (or dropped): it is no longer in flight.
    pub fn done(&self, uid: &str) {
        self.lock().in_flight.remove(uid);
    }

    /// A pod that failed in cycle `cycle` goes back: to the backoff queue
    /// if the cluster changed meanwhile (or it failed on an error), else to
    /// the unschedulable pods.
    pub fn add_unschedulable_if_not_present(&self, mut q: QueuedPodInfo, cycle: u64) {
        let now = Instant::now();
        let mut inner = self.lock();
        let uid = q.pod_info.uid.clone();
        let flight = inner.in_flight.remove(&uid).unwrap_or_default();
        if flight.deleted {
            return;
        }
        let mut changed_in_flight = false;
        if let Some(latest) = flight.latest {
            changed_in_flight = is_pod_updated(&q.pod_info.pod, &latest);
            q.pod_info = Arc::new(PodInfo::new(latest));
        }
        if inner.active.contains(&uid) || inner.backoff.contains(&uid) || inner.unschedulable.contains_key(&uid) {
            return;
        }
        q.timestamp = now;
        if changed_in_flight || inner.move_request_cycle >= cycle || q.unschedulable_plugins.is_empty() {
            inner.backoff.push(q);
        } else {
            inner.unschedulable.insert(uid, q);
        }
    }

    fn pod_matches_event(&self, q: &QueuedPodInfo, event: &ClusterEvent) -> bool {
        if event.resource == crate::framework::EventResource::WildCard || q.unschedulable_plugins.is_empty() {
            return true;
        }
        q.unschedulable_plugins.iter().any(|p| self.events.get(p).map(|evs| evs.iter().any(|e| event.matches(e))).unwrap_or(false))
    }

    /// A cluster event: unschedulable pods rejected by a plugin interested
    /// in it move to the active (or, still backing off, backoff) queue.
    pub fn move_all_to_active_or_backoff(&self, event: ClusterEvent) -> usize {
        self.move_matching(event, Instant::now(), |_| true)
    }

    fn move_matching(&self, event: ClusterEvent, now: Instant, pre: impl Fn(&QueuedPodInfo) -> bool) -> usize {
        let mut inner = self.lock();
        let keys: Vec<String> = inner
            .unschedulable
            .iter()
            .filter(|(_, q)| !q.gated && pre(q) && self.pod_matches_event(q, &event))
            .map(|(k, _)| k.clone())
            .collect();
        let mut activated = false;
        for k in &keys {
            let mut q = inner.unschedulable.remove(k).expect("listed");
            q.unschedulable_plugins = BTreeSet::new();
            if self.is_backing_off(&q, now) {
                inner.backoff.push(q);
            } else {
                inner.active.push(q);
                activated = true;
            }
        }
        inner.move_request_cycle = inner.scheduling_cycle;
        drop(inner);
        if activated {
            self.notify.notify_one();
        }
        if !keys.is_empty() {
            tracing::debug!(event = event.label, moved = keys.len(), "moved unschedulable pods");
        }
        keys.len()
    }

    /// Moves pods whose backoff expired to the active queue.
    pub fn flush_backoff_completed(&self, now: Instant) {
        let mut inner = self.lock();
        let mut moved = false;
        while let Some(q) = inner.backoff.peek() {
            if self.backoff_expiry(q) > now {
                break;
            }
            let q = inner.backoff.pop().expect("peeked");
            inner.active.push(q);
            moved = true;
        }
        drop(inner);
        if moved {
            self.notify.notify_one();
        }
    }

    /// Unschedulable pods waiting longer than the limit get another try.
    pub fn flush_unschedulable_left_over(&self, now: Instant) {
        let max = self.config.max_in_unschedulable;
        self.move_matching(EVENT_UNSCHEDULABLE_TIMEOUT, now, |q| now.duration_since(q.timestamp) > max);
    }

    /// Nominates the pod to `node` ("" clears it).
    pub fn nominate(&self, pi: Arc<PodInfo>, node: &str) {
        let mut inner = self.lock();
        if node.is_empty() {
            inner.nominator.delete(&pi.uid);
        } else {
            inner.nominator.add(pi, Some(node));
        }
    }

    pub fn delete_nomination(&self, uid: &str) {
        self.lock().nominator.delete(uid);
    }

    pub fn nominated_pods(&self) -> NominatedPods {
        NominatedPods { by_node: self.lock().nominator.by_node.clone() }
    }

    /// (active, backoff, unschedulable) lengths.
    pub fn lens(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        (inner.active.len(), inner.backoff.len(), inner.unschedulable.len())
    }

    /// Whether the pod is waiting in any of the queues (not in flight).
    pub fn contains(&self, uid: &str) -> bool {
        let inner = self.lock();
        inner.active.contains(uid) || inner.backoff.contains(uid) || inner.unschedulable.contains_key(uid)
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{EVENT_ASSIGNED_POD_DELETE, EVENT_NODE_ADD};
    use crate::plugins::default_framework_without_binder;
    use crate::testing::PodBuilder;

    fn queue() -> SchedulingQueue {
        SchedulingQueue::new(&default_framework_without_binder(None), QueueConfig::default())
    }

    fn pod(name: &str, prio: i32) -> Arc<Pod> {
        Arc::new(PodBuilder::new(name).priority(prio).build())
    }

    async fn pop_name(q: &SchedulingQueue) -> String {
        let p = tokio::time::timeout(Duration::from_secs(1), q.pop()).await.expect("a pod").expect("open");
        p.pod_info.pod.metadata.name.clone().unwrap()
    }

    #[test]
    fn backoff_doubles_to_the_max() {
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(10));
        let d: Vec<u64> = (0..7).map(|a| backoff_duration(a, i, m).as_secs()).collect();
        assert_eq!(d, vec![0, 1, 2, 4, 8, 10, 10]);
    }

    #[tokio::test]
    async fn pops_by_priority_then_fifo() {
        let q = queue();
        q.add(pod("low1", 0));
        q.add(pod("high", 100));
        q.add(pod("low2", 0));
        q.add(pod("mid", 50));
        assert_eq!(pop_name(&q).await, "high");
        assert_eq!(pop_name(&q).await, "mid");
        assert_eq!(pop_name(&q).await, "low1");
        assert_eq!(pop_name(&q).await, "low2");
    }

    #[tokio::test]
    async fn unschedulable_pods_move_on_matching_events_only() {
        let q = queue();
        q.add(pod("p", 0));
        let mut p = q.pop().await.unwrap();
        let cycle = q.scheduling_cycle();
        p.unschedulable_plugins.insert("NodeResourcesFit");
        q.add_unschedulable_if_not_present(p, cycle);
        assert_eq!(q.lens(), (0, 0, 1));
        // An event NodeResourcesFit does not register (NodeUnschedulable's
        // unschedulable flag change) does not move it.
        let irrelevant = ClusterEvent::new(crate::framework::EventResource::Node, crate::framework::action::UPDATE_NODE_TAINT, "NodeTaint");
        assert_eq!(q.move_all_to_active_or_backoff(irrelevant), 0);
        assert_eq!(q.lens(), (0, 0, 1));
        // A deleted pod frees resources: it moves (to backoff, it failed just now).
        assert_eq!(q.move_all_to_active_or_backoff(EVENT_ASSIGNED_POD_DELETE), 1);
        assert_eq!(q.lens(), (0, 1, 0));
        q.flush_backoff_completed(Instant::now() + Duration::from_secs(2));
        assert_eq!(q.lens(), (1, 0, 0));
        assert_eq!(pop_name(&q).await, "p");
    }

    #[tokio::test]
    async fn a_move_during_the_cycle_sends_the_pod_to_backoff() {
        let q = queue();
        q.add(pod("p", 0));
        let mut p = q.pop().await.unwrap();
        let cycle = q.scheduling_cycle();
        // A node appears while the pod is being scheduled.
        q.move_all_to_active_or_backoff(EVENT_NODE_ADD);
        p.unschedulable_plugins.insert("NodeResourcesFit");
        q.add_unschedulable_if_not_present(p, cycle);
        assert_eq!(q.lens(), (0, 1, 0));
    }

    #[tokio::test]
    async fn leftover_unschedulable_pods_are_retried() {
        let q = queue();
        q.add(pod("p", 0));
        let mut p = q.pop().await.unwrap();
        let cycle = q.scheduling_cycle();
        p.unschedulable_plugins.insert("TaintToleration");
        q.add_unschedulable_if_not_present(p, cycle);
        q.flush_unschedulable_left_over(Instant::now());
        assert_eq!(q.lens(), (0, 0, 1));
        q.flush_unschedulable_left_over(Instant::now() + Duration::from_secs(301));
        assert_eq!(q.lens(), (1, 0, 0));
    }

    #[tokio::test]
    async fn spec_updates_requeue_unschedulable_pods_but_status_updates_do_not() {
        let q = queue();
        let original = pod("p", 0);
        q.add(original.clone());
        let mut p = q.pop().await.unwrap();
        let cycle = q.scheduling_cycle();
        p.unschedulable_plugins.insert("NodeAffinity");
        q.add_unschedulable_if_not_present(p, cycle);
        let mut status_only = (*original).clone();
        status_only.status.as_mut().unwrap().conditions = Some(vec![]);
        q.update(Some(&original), Arc::new(status_only.clone()));
        assert_eq!(q.lens(), (0, 0, 1));
        let mut relabeled = status_only.clone();
        relabeled.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        q.update(Some(&status_only), Arc::new(relabeled));
        assert_eq!(q.lens().2, 0);
    }

    #[tokio::test]
    async fn deleted_pods_leave_every_queue_and_in_flight_ones_are_not_readded() {
        let q = queue();
        q.add(pod("a", 0));
        q.add(pod("b", 0));
        q.delete("uid-a");
        assert_eq!(pop_name(&q).await, "b");
        let p = PodBuilder::new("b").build();
        let _ = p;
        q.delete("uid-b");
        let qpi = QueuedPodInfo::new(PodBuilder::new("b").info(), Instant::now());
        q.add_unschedulable_if_not_present(qpi, 1);
        assert_eq!(q.lens(), (0, 0, 0));
    }

    #[tokio::test]
    async fn gated_pods_wait_for_their_gates() {
        let q = queue();
        let gated = Arc::new(PodBuilder::new("g").scheduling_gate("example.com/wait").build());
        q.add(gated.clone());
        assert_eq!(q.lens(), (0, 0, 1));
        assert_eq!(q.move_all_to_active_or_backoff(EVENT_NODE_ADD), 0);
        let mut open = (*gated).clone();
        open.spec.as_mut().unwrap().scheduling_gates = None;
        q.update(Some(&gated), Arc::new(open));
        assert_eq!(pop_name(&q).await, "g");
    }

    #[tokio::test]
    async fn nominator_keeps_scheduler_nominations() {
        let q = queue();
        let p = pod("p", 10);
        q.add(p.clone());
        let pi = Arc::new(PodInfo::new(p.clone()));
        q.nominate(pi, "n1");
        assert_eq!(q.nominated_pods().for_node("n1").len(), 1);
        // An update without a nominatedNodeName keeps it.
        q.update(Some(&p), p.clone());
        assert_eq!(q.nominated_pods().for_node("n1").len(), 1);
        q.delete("uid-p");
        assert!(q.nominated_pods().by_node.is_empty());
    }

    #[tokio::test]
    async fn heap_removal_keeps_order() {
        let q = queue();
        for (i, p) in [5, 1, 9, 3, 7, 2, 8].iter().enumerate() {
            q.add(pod(&format!("p{i}"), *p));
        }
        q.delete("uid-p2"); // priority 9
        q.delete("uid-p5"); // priority 2
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(pop_name(&q).await);
        }
        assert_eq!(got, vec!["p6", "p4", "p0", "p3", "p1"]);
    }
}
