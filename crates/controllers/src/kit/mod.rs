//! Building blocks of the Job, CronJob, DaemonSet and StatefulSet
//! controllers that [`crate::pod_control`] and [`crate::informer`] (shared
//! with the ReplicaSet and Deployment controllers) do not provide:
//!
//! - [`run_workers`]: the worker loop on the crate's [`queue`](crate::queue),
//!   with requeue-after timers and upstream's requeue-on-error backoff;
//! - [`Key`], a `namespace/name` queue key, and an injectable [`Clock`];
//! - [`selector`]: label selectors with upstream's nil/empty semantics,
//!   node selectors and affinity, taints and tolerations;
//! - [`claim`]: adoption and release of matching objects
//!   (`ControllerRefManager`), for any child kind;
//! - [`pods`]: pod phase helpers and upstream's `ActivePods` order.

pub mod claim;
pub mod pods;
pub mod selector;

use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use crate::queue::{Queue, Workers};

/// Runs `sync` for each key the queue hands out, `concurrency` at a time.
/// `Ok(Some(d))` requeues the key after `d` (a timer the controller needs,
/// e.g. a deadline), `Ok(None)` is done, `Err` retries with the key's
/// exponential backoff (upstream's `handleErr` / `AddRateLimited`).
pub async fn run_workers<K, F, Fut, E>(controller: &'static str, queue: Queue<K>, workers: Workers<K>, concurrency: usize, sync: F)
where
    K: Clone + Eq + Hash + Unpin + Send + std::fmt::Display + 'static,
    F: Fn(K) -> Fut,
    Fut: Future<Output = Result<Option<Duration>, E>>,
    E: std::fmt::Display,
{
    let q = queue.clone();
    drop(queue);
    workers
        .run(concurrency, move |key: K| {
            let q = q.clone();
            let fut = sync(key.clone());
            async move {
                match fut.await {
                    Ok(requeue) => {
                        q.forget(&key);
                        if let Some(d) = requeue {
                            q.add_after(key, d);
                        }
                    }
                    Err(e) => {
                        let n = q.failures(&key);
                        if n < 5 {
                            tracing::debug!(controller, key = %key, error = %e, "sync failed; retrying");
                        } else {
                            tracing::warn!(controller, key = %key, error = %e, failures = n, "sync failed; retrying");
                        }
                        q.add_rate_limited(key);
                    }
                }
            }
        })
        .await
}

/// A namespaced object's queue key, `namespace/name` (upstream's
/// `MetaNamespaceKeyFunc`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Key {
        Key { namespace: namespace.into(), name: name.into() }
    }

    pub fn of<K: kube::Resource>(obj: &K) -> Key {
        let m = obj.meta();
        Key { namespace: m.namespace.clone().unwrap_or_default(), name: m.name.clone().unwrap_or_default() }
    }

    /// The reflector store's key for this object.
    pub fn obj_ref<K: kube::runtime::reflector::Lookup<DynamicType = ()>>(&self) -> kube::runtime::reflector::ObjectRef<K> {
        kube::runtime::reflector::ObjectRef::new(&self.name).within(&self.namespace)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The current time, as the controllers read it (injectable in tests).
pub type Clock = std::sync::Arc<dyn Fn() -> k8s_openapi::jiff::Timestamp + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    std::sync::Arc::new(k8s_openapi::jiff::Timestamp::now)
}

/// Time until `at` from `now` (zero if past).
pub fn until(now: k8s_openapi::jiff::Timestamp, at: k8s_openapi::jiff::Timestamp) -> Duration {
    let d = at.duration_since(now);
    if d.is_negative() { Duration::ZERO } else { d.unsigned_abs() }
}
