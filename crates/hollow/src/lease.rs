//! Node leases (`coordination.k8s.io/v1`, namespace `kube-node-lease`):
//! the heartbeat the node controller watches, as upstream's kubelet lease
//! controller writes it.
//!
//! Like upstream, a renewal is an optimistic UPDATE of the last lease this
//! process wrote (one request, no GET); only a conflict or a missing lease
//! costs a read or a create.

use std::sync::Arc;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::mpsc;

use crate::pace::{self, Outcome};
use crate::{FIELD_MANAGER, LEASE_NAMESPACE, Shared, api_code, bounded, bump, heartbeat_timeout};

/// Renews every node's lease once per `renew_interval`, forever.
pub(crate) async fn run(client: Client, shared: Arc<Shared>, leases: Vec<Option<Lease>>, kick: mpsc::UnboundedReceiver<usize>) {
    let api: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let (interval, concurrency) = (shared.config.renew_interval, shared.config.lease_concurrency);
    let s = shared.clone();
    pace::run("lease", shared, interval, concurrency, leases, kick, move |i, cached| {
        let (api, shared) = (api.clone(), s.clone());
        async move {
            match renew(&api, &shared, i, cached).await {
                Ok(lease) => {
                    bump(&shared.stats.lease_renewals);
                    (Some(lease), Outcome::Done)
                }
                Err((cached, e)) => {
                    bump(&shared.stats.lease_failures);
                    tracing::warn!(node = %shared.nodes[i].name, error = %e, "lease renewal failed");
                    (cached, Outcome::Failed)
                }
            }
        }
    })
    .await
}

fn params() -> PostParams {
    PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.into()) }
}

fn fill(shared: &Shared, i: usize, lease: &mut Lease, now: Timestamp) {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(shared.nodes[i].name.clone());
    spec.lease_duration_seconds = Some(shared.config.lease_duration_seconds);
    spec.renew_time = Some(MicroTime(now));
}

fn new_lease(shared: &Shared, i: usize, now: Timestamp) -> Lease {
    let node = &shared.nodes[i];
    // Owned by the Node, as upstream's kubelet does, so the garbage
    // collector removes the lease with the node.
    let owner_references = node.uid().map(|uid| {
        vec![OwnerReference { api_version: "v1".into(), kind: "Node".into(), name: node.name.clone(), uid, ..Default::default() }]
    });
    let mut lease = Lease {
        metadata: ObjectMeta { name: Some(node.name.clone()), namespace: Some(LEASE_NAMESPACE.into()), owner_references, ..Default::default() },
        spec: None,
    };
    fill(shared, i, &mut lease, now);
    lease
}

/// The copy kept for the next renewal, without managedFields: thousands of
/// them stay in memory, and an update that omits managedFields keeps the
/// stored ones.
fn slim(mut lease: Lease) -> Lease {
    lease.metadata.managed_fields = None;
    lease
}

/// Writes a fresh renewTime, creating the lease if it is missing. On
/// failure returns what to retry with next time.
pub(crate) async fn renew(api: &Api<Lease>, shared: &Shared, i: usize, cached: Option<Lease>) -> Result<Lease, (Option<Lease>, kube::Error)> {
    let name = shared.nodes[i].name.as_str();
    let limit = heartbeat_timeout(&shared.config);
    let mut current = cached;
    let mut last_err = None;
    for _ in 0..3 {
        let now = Timestamp::now();
        match current.take() {
            Some(mut lease) => {
                fill(shared, i, &mut lease, now);
                match bounded(limit, api.replace(name, &params(), &lease)).await {
                    Ok(l) => return Ok(slim(l)),
                    // Someone else wrote it (or our copy is stale after a
                    // restart): read and try again.
                    Err(e) if api_code(&e) == Some(409) => last_err = Some(e),
                    // Deleted (e.g. with the node, by the GC): recreate.
                    Err(e) if api_code(&e) == Some(404) => last_err = Some(e),
                    Err(e) => return Err((Some(lease), e)),
                }
            }
            None => match bounded(limit, api.get_opt(name)).await {
                Ok(Some(l)) => current = Some(l),
                Ok(None) => match bounded(limit, api.create(&params(), &new_lease(shared, i, now))).await {
                    Ok(l) => return Ok(slim(l)),
                    Err(e) if api_code(&e) == Some(409) => last_err = Some(e),
                    Err(e) => return Err((None, e)),
                },
                Err(e) => return Err((None, e)),
            },
        }
    }
    Err((current, last_err.expect("the loop only ends after an error")))
}
