//! Leader election on a coordination.k8s.io Lease, as client-go's
//! `leaderelection` with a `LeaseLock`: acquire when the lease is free or
//! its holder has not renewed for `lease_duration` (measured on our clock
//! from when we last saw the record change), renew every `retry_period`,
//! and give up after `renew_deadline` without a successful renewal. Every
//! write is a compare-and-swap on the lease's resourceVersion.
//!
//! Used by the scheduler (`kube-system/tug-scheduler`) and the controller
//! manager (`kube-system/kube-controller-manager`): [`LeaderElector`] is one
//! candidate, [`run_elected`] runs some work only while it leads.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This candidate's identity (unique per process).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// The Lease `kube-system/<name>` with upstream's defaults: 15s lease,
    /// 10s renew deadline, 2s retry.
    pub fn new(name: &str, identity: &str) -> LeaderElectionConfig {
        LeaderElectionConfig {
            namespace: "kube-system".into(),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A per-process identity as upstream's components make it: the host name,
/// `_`, and a random UUID (so two processes on one host never share it).
pub fn default_identity() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "tug".to_string());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// The parts of the lease record whose change resets the expiry clock.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: String,
    lease_duration_seconds: i32,
    acquire_time: Option<MicroTime>,
    renew_time: Option<MicroTime>,
    transitions: i32,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let s = lease.spec.clone().unwrap_or_default();
        Record {
            holder: s.holder_identity.unwrap_or_default(),
            lease_duration_seconds: s.lease_duration_seconds.unwrap_or(0),
            acquire_time: s.acquire_time,
            renew_time: s.renew_time,
            transitions: s.lease_transitions.unwrap_or(0),
        }
    }
}

/// One candidate for one lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    observed: Option<Record>,
    observed_time: Instant,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease (acquired or renewed).
    Leader,
    /// Someone else holds a live lease.
    HeldBy(String),
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaderElectionConfig) -> LeaderElector {
        LeaderElector { api: Api::namespaced(client, &config.namespace), config, observed: None, observed_time: Instant::now() }
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    pub fn config(&self) -> &LeaderElectionConfig {
        &self.config
    }

    fn spec(&self, acquire: Option<MicroTime>, transitions: i32, holder: Option<String>, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder,
            lease_duration_seconds: Some(duration),
            acquire_time: acquire,
            renew_time: Some(MicroTime(Timestamp::now())),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One `tryAcquireOrRenew`.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let duration_secs = self.config.lease_duration.as_secs() as i32;
        let now = MicroTime(Timestamp::now());
        let existing = match self.api.get_opt(&self.config.name).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(Some(now), 0, Some(self.config.identity.clone()), duration_secs)),
                };
                let created = self.api.create(&PostParams::default(), &lease).await?;
                self.observed = Some(Record::of(&created));
                self.observed_time = Instant::now();
                return Ok(Attempt::Leader);
            }
        };
        let record = Record::of(&existing);
        if self.observed.as_ref() != Some(&record) {
            self.observed = Some(record.clone());
            self.observed_time = Instant::now();
        }
        let held_by_other = !record.holder.is_empty() && record.holder != self.config.identity;
        let record_duration = Duration::from_secs(record.lease_duration_seconds.max(0) as u64);
        if held_by_other && self.observed_time + record_duration > Instant::now() {
            return Ok(Attempt::HeldBy(record.holder));
        }
        let (acquire, transitions) = if record.holder == self.config.identity {
            (record.acquire_time.clone().or(Some(now.clone())), record.transitions)
        } else {
            (Some(now.clone()), record.transitions + 1)
        };
        let mut lease = existing;
        lease.spec = Some(self.spec(acquire, transitions, Some(self.config.identity.clone()), duration_secs));
        // replace() sends the resourceVersion we read: a concurrent writer makes it fail with 409.
        let updated = self.api.replace(&self.config.name, &PostParams::default(), &lease).await?;
        self.observed = Some(Record::of(&updated));
        self.observed_time = Instant::now();
        Ok(Attempt::Leader)
    }

    /// Blocks until this candidate holds the lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leader) => {
                    tracing::info!(identity = %self.config.identity, lease = %self.config.name, "acquired the lease");
                    return;
                }
                Ok(Attempt::HeldBy(h)) => tracing::debug!(lease = %self.config.name, holder = %h, "the lease is held by another instance"),
                Err(e) => tracing::debug!(lease = %self.config.name, error = %e, "could not acquire the lease"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews every retry period; returns when the lease is lost (no
    /// successful renewal within the renew deadline, or another holder).
    pub async fn renew_until_lost(&mut self) {
        let mut last_renew = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let attempt = tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(Attempt::Leader)) => last_renew = Instant::now(),
                Ok(Ok(Attempt::HeldBy(h))) => {
                    tracing::warn!(lease = %self.config.name, holder = %h, "the lease was taken over by another instance");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(lease = %self.config.name, error = %e, "renewing the lease failed"),
                Err(_) => tracing::warn!(lease = %self.config.name, "renewing the lease timed out"),
            }
            if last_renew.elapsed() >= self.config.renew_deadline {
                tracing::warn!(identity = %self.config.identity, lease = %self.config.name, "lost the lease");
                return;
            }
        }
    }

    /// Gives the lease up (on shutdown) so another instance can take over at once.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else { return };
        if Record::of(&lease).holder != self.config.identity {
            return;
        }
        let transitions = Record::of(&lease).transitions;
        let now = MicroTime(Timestamp::now());
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        });
        if let Err(e) = self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            tracing::warn!(lease = %self.config.name, error = %e, "releasing the lease failed");
        }
    }
}

/// Runs `work` only while this candidate holds the lease, until `shutdown`
/// completes.
///
/// Campaigns until it leads, then starts `work()`. Losing the lease drops
/// the running work (which must stop everything it started when dropped)
/// and campaigns again, so that two instances never act at once; upstream's
/// components exit instead, which a process hosting other components
/// cannot. On shutdown the work is dropped and the lease released for the
/// next candidate. If the work ends by itself, the lease is released and
/// its result returned (`Ok` becomes an error: the work was meant to run
/// until stopped).
pub async fn run_elected<S, F, Fut>(client: Client, config: LeaderElectionConfig, shutdown: S, mut work: F) -> anyhow::Result<()>
where
    S: Future,
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    tokio::pin!(shutdown);
    let name = config.name.clone();
    let identity = config.identity.clone();
    let mut elector = LeaderElector::new(client, config);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = elector.acquire() => {}
        }
        enum Outcome {
            Shutdown,
            Lost,
            Ended(anyhow::Result<()>),
        }
        let outcome = {
            let running = work();
            tokio::pin!(running);
            tokio::select! {
                _ = &mut shutdown => Outcome::Shutdown,
                _ = elector.renew_until_lost() => Outcome::Lost,
                r = &mut running => Outcome::Ended(r),
            }
            // `running` is dropped here, before the lease is given up.
        };
        match outcome {
            Outcome::Shutdown => {
                elector.release().await;
                return Ok(());
            }
            Outcome::Lost => tracing::warn!(lease = %name, %identity, "leader election lost; stopped until the lease is won again"),
            Outcome::Ended(r) => {
                elector.release().await;
                return r.and_then(|()| Err(anyhow::anyhow!("{name}: the elected work stopped on its own")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_per_process_and_defaults_are_upstreams() {
        let (a, b) = (default_identity(), default_identity());
        assert_ne!(a, b, "a random suffix tells two processes on one host apart");
        assert!(a.contains('_') && !a.starts_with('_'), "{a}");
        let c = LeaderElectionConfig::new("kube-controller-manager", &a);
        assert_eq!((c.namespace.as_str(), c.name.as_str()), ("kube-system", "kube-controller-manager"));
        assert_eq!((c.lease_duration, c.renew_deadline, c.retry_period), (Duration::from_secs(15), Duration::from_secs(10), Duration::from_secs(2)));
    }
}
