//! Tugboat's scheduler: upstream kube-scheduler's scheduling framework,
//! talking to the cluster only through the API server (kube-rs).
//!
//! - [`framework`]: plugin interfaces, `CycleState`, `NodeInfo`, `Snapshot`,
//!   and the `Framework` running the plugins at each extension point.
//! - [`plugins`]: the default plugins, a file each.
//! - [`cache`]: nodes and assigned pods from watches, with assumed pods.
//! - [`queue`]: active/backoff/unschedulable queues and the nominator.
//! - [`algorithm`]: one scheduling decision on a snapshot.
//! - [`leader`]: Lease-based leader election (the `tug-leader` crate,
//!   shared with the controller manager).
//!
//! Entry point: [`run`].

pub mod algorithm;
pub mod cache;
pub mod events;
pub mod framework;
pub mod helpers;
mod informers;
pub mod plugins;
pub mod queue;
pub mod resources;
mod scheduler;
#[cfg(test)]
pub(crate) mod testing;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use tug_leader as leader;
pub use tug_leader::LeaderElectionConfig;

/// The scheduler's Lease in `kube-system`.
pub const LEASE_NAME: &str = "tug-scheduler";

/// The default scheduler name pods ask for.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Pods with this `spec.schedulerName` are ours.
    pub scheduler_name: String,
    /// `percentageOfNodesToScore`; `None` (or 0) is upstream's adaptive rule.
    pub percentage_of_nodes_to_score: Option<u32>,
    /// Backoff of a pod after its first failed attempt (doubles per attempt).
    pub pod_initial_backoff: Duration,
    pub pod_max_backoff: Duration,
    /// Unschedulable pods are retried at least this often.
    pub pod_max_in_unschedulable: Duration,
    /// How long an assumed pod may wait for its binding to show up in the
    /// watch after the binding call returned (`None`: forever, upstream's default).
    pub assumed_pod_ttl: Option<Duration>,
    /// Turn off the PostFilter (preemption).
    pub disable_preemption: bool,
    /// Leader election; `None` schedules unconditionally (a single scheduler).
    pub leader_election: Option<LeaderElectionConfig>,
    /// Counters; share an `Arc` to read them from outside.
    pub metrics: Arc<Metrics>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
            percentage_of_nodes_to_score: None,
            pod_initial_backoff: Duration::from_secs(1),
            pod_max_backoff: Duration::from_secs(10),
            pod_max_in_unschedulable: Duration::from_secs(300),
            assumed_pod_ttl: None,
            disable_preemption: false,
            leader_election: None,
            metrics: Arc::new(Metrics::default()),
        }
    }
}

impl SchedulerConfig {
    /// The defaults with leader election on the `kube-system/tug-scheduler`
    /// Lease under `identity`.
    pub fn with_leader_election(identity: &str) -> SchedulerConfig {
        SchedulerConfig { leader_election: Some(LeaderElectionConfig::new(LEASE_NAME, identity)), ..Default::default() }
    }
}

/// Prometheus-style counters of one scheduler process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Pods bound.
    pub scheduled: AtomicU64,
    /// Attempts that found no node.
    pub unschedulable: AtomicU64,
    /// Attempts that failed on an error (including bind failures).
    pub errors: AtomicU64,
    pub preemption_attempts: AtomicU64,
    pub preemption_victims: AtomicU64,
    /// 1 while this process holds the lease (or runs without election).
    pub is_leader: AtomicU64,
    pub cycles: AtomicU64,
    pub cycle_micros_total: AtomicU64,
    pub pending_active: AtomicU64,
    pub pending_backoff: AtomicU64,
    pub pending_unschedulable: AtomicU64,
}

impl Metrics {
    fn observe_cycle(&self, d: Duration) {
        self.cycles.fetch_add(1, Ordering::Relaxed);
        self.cycle_micros_total.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn set_pending(&self, active: usize, backoff: usize, unschedulable: usize) {
        self.pending_active.store(active as u64, Ordering::Relaxed);
        self.pending_backoff.store(backoff as u64, Ordering::Relaxed);
        self.pending_unschedulable.store(unschedulable as u64, Ordering::Relaxed);
    }

    /// The counters in the Prometheus text format.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        s.push_str("# TYPE scheduler_schedule_attempts_total counter\n");
        s.push_str(&format!("scheduler_schedule_attempts_total{{result=\"scheduled\"}} {}\n", g(&self.scheduled)));
        s.push_str(&format!("scheduler_schedule_attempts_total{{result=\"unschedulable\"}} {}\n", g(&self.unschedulable)));
        s.push_str(&format!("scheduler_schedule_attempts_total{{result=\"error\"}} {}\n", g(&self.errors)));
        s.push_str("# TYPE scheduler_preemption_attempts_total counter\n");
        s.push_str(&format!("scheduler_preemption_attempts_total {}\n", g(&self.preemption_attempts)));
        s.push_str("# TYPE scheduler_preemption_victims_total counter\n");
        s.push_str(&format!("scheduler_preemption_victims_total {}\n", g(&self.preemption_victims)));
        s.push_str("# TYPE scheduler_scheduling_algorithm_duration_seconds summary\n");
        s.push_str(&format!("scheduler_scheduling_algorithm_duration_seconds_sum {}\n", g(&self.cycle_micros_total) as f64 / 1e6));
        s.push_str(&format!("scheduler_scheduling_algorithm_duration_seconds_count {}\n", g(&self.cycles)));
        s.push_str("# TYPE scheduler_pending_pods gauge\n");
        s.push_str(&format!("scheduler_pending_pods{{queue=\"active\"}} {}\n", g(&self.pending_active)));
        s.push_str(&format!("scheduler_pending_pods{{queue=\"backoff\"}} {}\n", g(&self.pending_backoff)));
        s.push_str(&format!("scheduler_pending_pods{{queue=\"unschedulable\"}} {}\n", g(&self.pending_unschedulable)));
        s.push_str("# TYPE leader_election_master_status gauge\n");
        s.push_str(&format!("leader_election_master_status{{name=\"tug-scheduler\"}} {}\n", g(&self.is_leader)));
        s
    }
}

/// Runs the scheduler until `shutdown` completes. With leader election,
/// schedules only while holding the lease: losing it stops every watcher,
/// the loop and in-flight bindings, and the instance goes back to
/// campaigning; on shutdown the lease is released.
pub async fn run<F: Future>(client: kube::Client, config: SchedulerConfig, shutdown: F) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let metrics = config.metrics.clone();
    let Some(le) = config.leader_election.clone() else {
        metrics.is_leader.store(1, Ordering::Relaxed);
        let mut instance = scheduler::Instance::start(client, config, &hostname_identity());
        let r = tokio::select! {
            _ = &mut shutdown => Ok(()),
            r = instance.wait() => r,
        };
        instance.stop().await;
        metrics.is_leader.store(0, Ordering::Relaxed);
        return r;
    };
    let identity = le.identity.clone();
    let mut elector = leader::LeaderElector::new(client.clone(), le);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = elector.acquire() => {}
        }
        metrics.is_leader.store(1, Ordering::Relaxed);
        let mut instance = scheduler::Instance::start(client.clone(), config.clone(), &identity);
        enum Outcome {
            Shutdown,
            Lost,
            Failed(anyhow::Error),
        }
        let outcome = tokio::select! {
            _ = &mut shutdown => Outcome::Shutdown,
            _ = elector.renew_until_lost() => Outcome::Lost,
            r = instance.wait() => match r { Ok(()) => Outcome::Failed(anyhow::anyhow!("scheduler stopped")), Err(e) => Outcome::Failed(e) },
        };
        instance.stop().await;
        metrics.is_leader.store(0, Ordering::Relaxed);
        match outcome {
            Outcome::Shutdown => {
                elector.release().await;
                return Ok(());
            }
            Outcome::Lost => tracing::warn!(%identity, "leader election lost; scheduling stopped"),
            Outcome::Failed(e) => {
                elector.release().await;
                return Err(e);
            }
        }
    }
}

fn hostname_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
    let host = if host.is_empty() { "tug".to_string() } else { host };
    format!("{host}_{}", std::process::id())
}
