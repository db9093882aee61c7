//! Leader election on a coordination.k8s.io Lease, as client-go's
//! `leaderelection` with a `LeaseLock`: acquire when the lease is free or
//! its holder has not renewed for `lease_duration` (measured on our clock
//! from when we last saw the record change), renew every `retry_period`,
//! and give up after `renew_deadline` without a successful renewal. Every
//! write is a compare-and-swap on the lease's resourceVersion.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate's identity (unique per process).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// Upstream's defaults: 15s lease, 10s renew deadline, 2s retry.
    pub fn new(identity: &str) -> LeaderElectionConfig {
        LeaderElectionConfig {
            namespace: "kube-system".into(),
            name: "tug-scheduler".into(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
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

    fn spec(&self, acquire: Option<MicroTime>, transitions: i32, holder: Option<String>, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder,
            lease_duration_seconds: Some(duration),
            acquire_time: acquire,
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One `tryAcquireOrRenew`.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let duration_secs = self.config.lease_duration.as_secs() as i32;
        let now = MicroTime(jiff::Timestamp::now());
        let existing = match self.api.get_opt(&self.config.name).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.config.name.clone()), namespace: Some(self.config.namespace.clone()), ..Default::default() },
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
                    tracing::info!(identity = %self.config.identity, lease = %self.config.name, "acquired the scheduler lease");
                    return;
                }
                Ok(Attempt::HeldBy(h)) => tracing::debug!(holder = %h, "scheduler lease is held by another instance"),
                Err(e) => tracing::debug!(error = %e, "could not acquire the scheduler lease"),
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
                    tracing::warn!(holder = %h, "scheduler lease taken over by another instance");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the scheduler lease failed"),
                Err(_) => tracing::warn!("renewing the scheduler lease timed out"),
            }
            if last_renew.elapsed() >= self.config.renew_deadline {
                tracing::warn!(identity = %self.config.identity, "lost the scheduler lease");
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
        let now = MicroTime(jiff::Timestamp::now());
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        });
        if let Err(e) = self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            tracing::warn!(error = %e, "releasing the scheduler lease failed");
        }
    }
}
