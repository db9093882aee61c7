//! The namespace controller (upstream's `pkg/controller/namespace`).
//!
//! A Namespace being deleted (deletionTimestamp set, phase Terminating)
//! keeps the `kubernetes` entry in `spec.finalizers` until this controller
//! has emptied it: it deletes everything in every namespaced resource the
//! server serves (a DELETE collection, or one DELETE per object where
//! that is not supported), and checks again until nothing is left; objects
//! with finalizers may take a while. Then it removes `kubernetes` through
//! `PUT /api/v1/namespaces/{name}/finalize`, after which the API server
//! deletes the Namespace (once `metadata.finalizers` is empty too).
//!
//! The progress shows, as upstream, in the Namespace's status conditions
//! (`NamespaceDeletionDiscoveryFailure`, `NamespaceDeletionContentFailure`,
//! `NamespaceContentRemaining`, `NamespaceFinalizersRemaining`, ...).
//!
//! It is a kube-runtime [`Controller`] over Namespaces: watcher → reflector
//! → reconcile one Namespace at a time, requeued with backoff.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::discovery::verbs;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::discovery::{ResourceMap, ServedResource};

/// The finalizer this controller owns in `spec.finalizers`.
pub const FINALIZER_KUBERNETES: &str = "kubernetes";

/// Requeue delays while a Namespace waits for content to go or after an
/// error: doubling from `BASE` up to `MAX`. Upstream rechecks remaining
/// content after about a second, and backs off errors up to a minute; one
/// doubling delay covers both without polling lingering objects every second.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("discovery failed: {0}")]
    Discovery(#[source] kube::Error),
    #[error("failed to delete all resource types, {count} remaining: {errors}")]
    ContentDeletion { count: usize, errors: String },
    #[error("finalizing namespace {0}: {1}")]
    Finalize(String, #[source] kube::Error),
    #[error("finalizing namespace {0}: still conflicting after retries")]
    FinalizeConflict(String),
}

struct Context {
    client: Client,
    /// Consecutive requeues per Namespace, for the backoff.
    attempts: Mutex<HashMap<String, u32>>,
}

impl Context {
    fn next_delay(&self, name: &str) -> Duration {
        let mut attempts = self.attempts.lock().expect("attempts lock");
        let n = attempts.entry(name.to_string()).or_insert(0);
        let d = BACKOFF_BASE.checked_mul(2u32.saturating_pow((*n).min(16))).unwrap_or(BACKOFF_MAX).min(BACKOFF_MAX);
        *n += 1;
        d
    }

    fn forget(&self, name: &str) {
        self.attempts.lock().expect("attempts lock").remove(name);
    }
}

/// Runs the namespace controller until its watch stream ends (it does not
/// on its own: watch failures are retried with backoff).
pub async fn run(client: Client) -> anyhow::Result<()> {
    let api = Api::<Namespace>::all(client.clone());
    let ctx = Arc::new(Context { client, attempts: Mutex::new(HashMap::new()) });
    Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((ns, action)) => tracing::trace!(namespace = %ns.name, ?action, "namespace reconciled"),
                // A reconcile queued for a Namespace that is gone since: expected.
                Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                    tracing::trace!(namespace = %obj.name, "namespace gone before its reconcile")
                }
                Err(e) => tracing::warn!(error = %e, "namespace controller"),
            }
        })
        .await;
    anyhow::bail!("namespace controller stream ended")
}

fn error_policy(ns: Arc<Namespace>, err: &Error, ctx: Arc<Context>) -> Action {
    let name = ns.name_any();
    let delay = ctx.next_delay(&name);
    tracing::warn!(namespace = %name, error = %err, retry_in = ?delay, "namespace deletion failed; will retry");
    Action::requeue(delay)
}

fn has_kubernetes_finalizer(ns: &Namespace) -> bool {
    ns.spec.as_ref().and_then(|s| s.finalizers.as_ref()).map(|f| f.iter().any(|x| x == FINALIZER_KUBERNETES)).unwrap_or(false)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = ns.name_any();
    if ns.metadata.deletion_timestamp.is_none() || !has_kubernetes_finalizer(&ns) {
        ctx.forget(&name);
        return Ok(Action::await_change());
    }
    tracing::debug!(namespace = %name, "namespace is terminating; deleting its content");
    let report = match ResourceMap::discover(&ctx.client).await {
        Ok(map) => delete_content(&ctx.client, &name, &map).await,
        Err(e) => {
            update_conditions(&ctx.client, &ns, &Report { discovery_error: Some(e.to_string()), ..Report::default() }).await;
            return Err(Error::Discovery(e));
        }
    };
    update_conditions(&ctx.client, &ns, &report).await;
    if !report.errors.is_empty() {
        return Err(Error::ContentDeletion { count: report.errors.len(), errors: report.errors.join("; ") });
    }
    if !report.remaining.is_empty() {
        let delay = ctx.next_delay(&name);
        tracing::info!(namespace = %name, remaining = ?report.remaining, finalizers = ?report.finalizers, retry_in = ?delay, "namespace content remains; waiting");
        return Ok(Action::requeue(delay));
    }
    finalize(&ctx.client, &name).await?;
    ctx.forget(&name);
    tracing::info!(namespace = %name, "namespace emptied and finalized");
    Ok(Action::await_change())
}

/// What one deletion pass found.
#[derive(Debug, Default)]
struct Report {
    discovery_error: Option<String>,
    /// One entry per resource that could not be emptied or listed.
    errors: Vec<String>,
    /// `plural.group` → objects still there.
    remaining: BTreeMap<String, usize>,
    /// Finalizer → objects still carrying it.
    finalizers: BTreeMap<String, usize>,
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Deletes everything in namespace `ns`, then counts what is left.
async fn delete_content(client: &Client, ns: &str, map: &ResourceMap) -> Report {
    let mut report = Report::default();
    let resources: Vec<&ServedResource> = map.preferred_with(&[verbs::LIST, verbs::DELETE]).filter(|r| r.namespaced).collect();
    for r in resources {
        let gr = r.group_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &r.ar);
        if let Err(e) = delete_all(&api, r).await {
            report.errors.push(format!("{gr}: {e}"));
            continue;
        }
        match api.list_metadata(&ListParams::default()).await {
            Ok(list) if !list.items.is_empty() => {
                report.remaining.insert(gr, list.items.len());
                for item in &list.items {
                    for f in item.metadata.finalizers.iter().flatten() {
                        *report.finalizers.entry(f.clone()).or_insert(0) += 1;
                    }
                }
            }
            Ok(_) => {}
            // The resource stopped being served meanwhile: nothing of it is left.
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => report.errors.push(format!("{gr}: listing remaining objects: {e}")),
        }
    }
    report
}

/// Deletes every object of one resource in the Api's namespace. Background
/// propagation, as upstream: without it, kinds whose default is to orphan
/// would get an `orphan` finalizer and the namespace would wait on the
/// garbage collector for nothing.
async fn delete_all(api: &Api<DynamicObject>, r: &ServedResource) -> Result<(), kube::Error> {
    let dp = DeleteParams::background();
    if r.supports(verbs::DELETE_COLLECTION) {
        match api.delete_collection(&dp, &ListParams::default()).await {
            Ok(_) => return Ok(()),
            Err(e) if status_code(&e) == Some(404) => return Ok(()),
            // Discovery said yes but the server says no: fall back to one by one.
            Err(e) if status_code(&e) == Some(405) => {
                tracing::debug!(resource = %r.group_resource(), "deletecollection not allowed; deleting one by one");
            }
            Err(e) => return Err(e),
        }
    }
    let items = match api.list_metadata(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) if status_code(&e) == Some(404) => return Ok(()),
        Err(e) => return Err(e),
    };
    for item in items {
        let name = item.name_any();
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes `kubernetes` from `spec.finalizers` through the `finalize`
/// subresource, re-reading on conflicts.
async fn finalize(client: &Client, name: &str) -> Result<(), Error> {
    let api = Api::<Namespace>::all(client.clone());
    for _ in 0..5 {
        let mut ns = match api.get_opt(name).await {
            Ok(Some(ns)) => ns,
            Ok(None) => return Ok(()),
            Err(e) => return Err(Error::Finalize(name.into(), e)),
        };
        if !has_kubernetes_finalizer(&ns) {
            return Ok(());
        }
        let spec = ns.spec.get_or_insert_with(Default::default);
        let kept: Vec<String> = spec.finalizers.take().unwrap_or_default().into_iter().filter(|f| f != FINALIZER_KUBERNETES).collect();
        spec.finalizers = Some(kept);
        match api.replace_subresource("finalize", name, &PostParams::default(), &ns).await {
            Ok(_) => return Ok(()),
            Err(e) if status_code(&e) == Some(409) => continue,
            Err(e) if status_code(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(Error::Finalize(name.into(), e)),
        }
    }
    Err(Error::FinalizeConflict(name.into()))
}

/// The deletion conditions upstream sets on a terminating Namespace.
fn conditions_for(report: &Report) -> Vec<(&'static str, bool, &'static str, Option<String>)> {
    let mut out = Vec::new();
    match &report.discovery_error {
        Some(e) => out.push(("NamespaceDeletionDiscoveryFailure", true, "DiscoveryFailed", Some(format!("Discovery failed for some groups: {e}")))),
        None => out.push(("NamespaceDeletionDiscoveryFailure", false, "ResourcesDiscovered", Some("All resources successfully discovered".to_string()))),
    }
    out.push(("NamespaceDeletionGroupVersionParsingFailure", false, "ParsedGroupVersions", Some("All legacy kube types successfully parsed".to_string())));
    if report.discovery_error.is_some() {
        return out;
    }
    if report.errors.is_empty() {
        out.push(("NamespaceDeletionContentFailure", false, "ContentDeleted", Some("All content successfully deleted, may be waiting on finalization".to_string())));
    } else {
        out.push((
            "NamespaceDeletionContentFailure",
            true,
            "ContentDeletionFailed",
            Some(format!("Failed to delete all resource types, {} remaining: {}", report.errors.len(), report.errors.join(", "))),
        ));
    }
    if report.remaining.is_empty() {
        out.push(("NamespaceContentRemaining", false, "ContentRemoved", Some("All content successfully removed".to_string())));
    } else {
        // Upstream's wording, including its `resource.group` (`configmaps.` for the core group).
        let parts: Vec<String> = report
            .remaining
            .iter()
            .map(|(gr, n)| {
                let gr = if gr.contains('.') { gr.clone() } else { format!("{gr}.") };
                format!("{gr} has {n} resource instances")
            })
            .collect();
        out.push(("NamespaceContentRemaining", true, "SomeResourcesRemain", Some(format!("Some resources are remaining: {}", parts.join(", ")))));
    }
    if report.finalizers.is_empty() {
        out.push(("NamespaceFinalizersRemaining", false, "ContentHasNoFinalizers", Some("All content-preserving finalizers finished".to_string())));
    } else {
        let parts: Vec<String> = report.finalizers.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
        out.push((
            "NamespaceFinalizersRemaining",
            true,
            "SomeFinalizersRemain",
            Some(format!("Some content in the namespace has finalizers remaining: {}", parts.join(", "))),
        ));
    }
    out
}

/// Writes the deletion conditions to the Namespace's status if they
/// changed. Best effort: progress does not depend on it, and a conflict
/// means a newer Namespace, which is reconciled again anyway.
async fn update_conditions(client: &Client, ns: &Namespace, report: &Report) {
    let existing = ns.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let mut conditions = existing.clone();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    for (ctype, is_true, reason, message) in conditions_for(report) {
        let status = if is_true { "True" } else { "False" }.to_string();
        match conditions.iter_mut().find(|c| c.type_ == ctype) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(now.clone());
                }
                c.status = status;
                c.reason = Some(reason.to_string());
                c.message = message;
            }
            None => conditions.push(NamespaceCondition {
                type_: ctype.to_string(),
                status,
                reason: Some(reason.to_string()),
                message,
                last_transition_time: Some(now.clone()),
            }),
        }
    }
    if conditions == existing {
        return;
    }
    let mut updated = ns.clone();
    updated.metadata.managed_fields = None;
    let status = updated.status.get_or_insert_with(NamespaceStatus::default);
    status.conditions = Some(conditions);
    let api = Api::<Namespace>::all(client.clone());
    if let Err(e) = api.replace_status(&ns.name_any(), &PostParams::default(), &updated).await {
        tracing::debug!(namespace = %ns.name_any(), error = %e, "could not update namespace conditions");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_follow_upstream_wording() {
        let mut r = Report::default();
        r.remaining.insert("configmaps".into(), 2);
        r.remaining.insert("deployments.apps".into(), 1);
        r.finalizers.insert("example.com/hold".into(), 2);
        let c = conditions_for(&r);
        let remaining = c.iter().find(|c| c.0 == "NamespaceContentRemaining").unwrap();
        assert!(remaining.1);
        assert_eq!(remaining.3.as_deref(), Some("Some resources are remaining: configmaps. has 2 resource instances, deployments.apps has 1 resource instances"));
        let fins = c.iter().find(|c| c.0 == "NamespaceFinalizersRemaining").unwrap();
        assert_eq!(fins.3.as_deref(), Some("Some content in the namespace has finalizers remaining: example.com/hold in 2 resource instances"));
        let failure = c.iter().find(|c| c.0 == "NamespaceDeletionContentFailure").unwrap();
        assert!(!failure.1);
    }

    #[tokio::test]
    async fn backoff_doubles_and_resets() {
        let ctx = Context { client: dummy_client(), attempts: Mutex::new(HashMap::new()) };
        assert_eq!(ctx.next_delay("a"), BACKOFF_BASE);
        assert_eq!(ctx.next_delay("a"), BACKOFF_BASE * 2);
        for _ in 0..20 {
            ctx.next_delay("a");
        }
        assert_eq!(ctx.next_delay("a"), BACKOFF_MAX);
        ctx.forget("a");
        assert_eq!(ctx.next_delay("a"), BACKOFF_BASE);
    }

    fn dummy_client() -> Client {
        // Never used for requests in these tests.
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        Client::try_from(config).unwrap()
    }
}
