//! Adoption and release (upstream's `ControllerRefManager.ClaimObject`):
//! an owner claims the objects its selector matches. Objects controlled by
//! it but no longer matching are released (its reference removed); orphans
//! that match are adopted (a controller reference added), once a fresh
//! read confirms the owner is not being deleted. Objects controlled by
//! another owner are never touched.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::pod_control::{controller_of, controller_ref, is_not_found};
use super::selector::Selector;

/// Claims `candidates` (objects in the owner's namespace) for `owner`.
/// `extra` further restricts what may be claimed (e.g. a StatefulSet's
/// pods must be named after it). Returns the claimed objects, adopted ones
/// as patched; errors of individual adoptions are returned after the rest
/// were processed. `finalizer`, if given, is added to adopted objects (the
/// Job controller's tracking finalizer).
pub async fn claim<O, C>(
    client: &Client,
    owner: &O,
    selector: &Selector,
    candidates: Vec<Arc<C>>,
    extra: impl Fn(&C) -> bool,
    finalizer: Option<&str>,
) -> Result<Vec<Arc<C>>, kube::Error>
where
    O: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    C: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Serialize + Debug,
{
    let om = owner.meta();
    let owner_uid = om.uid.clone().unwrap_or_default();
    let owner_deleting = om.deletion_timestamp.is_some();
    let ns = om.namespace.clone().unwrap_or_default();
    let api: Api<C> = Api::namespaced(client.clone(), &ns);
    let mut claimed = Vec::new();
    let mut first_err = None;
    let mut can_adopt: Option<bool> = None;
    for c in candidates {
        let cm = c.meta();
        if cm.namespace.as_deref() != Some(ns.as_str()) {
            continue;
        }
        let matches = selector.matches(cm.labels.as_ref()) && extra(&c);
        match controller_of(cm) {
            Some(r) if r.uid != owner_uid => continue,
            Some(_) => {
                if matches {
                    claimed.push(c);
                } else if !owner_deleting
                    && let Err(e) = release(&api, &c, &owner_uid).await {
                        first_err.get_or_insert(e);
                    }
            }
            None => {
                if owner_deleting || !matches || cm.deletion_timestamp.is_some() {
                    continue;
                }
                if can_adopt.is_none() {
                    can_adopt = Some(recheck_owner(client, owner).await?);
                }
                if can_adopt != Some(true) {
                    continue;
                }
                match adopt(&api, &c, controller_ref(owner), finalizer).await {
                    Ok(Some(adopted)) => claimed.push(Arc::new(adopted)),
                    Ok(None) => {}
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(claimed),
    }
}

/// Upstream's `RecheckDeletionTimestamp`: the owner, read fresh, is the
/// same object and not being deleted.
async fn recheck_owner<O>(client: &Client, owner: &O) -> Result<bool, kube::Error>
where
    O: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let m = owner.meta();
    let api: Api<O> = Api::namespaced(client.clone(), m.namespace.as_deref().unwrap_or_default());
    let fresh = api.get_opt(m.name.as_deref().unwrap_or_default()).await?;
    Ok(match fresh {
        Some(f) => f.meta().uid == m.uid && f.meta().deletion_timestamp.is_none(),
        None => false,
    })
}

/// Upstream's adoption patch: a strategic merge adding the controller
/// reference (and the finalizer), with the uid as a precondition.
async fn adopt<C>(
    api: &Api<C>,
    c: &C,
    reference: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    finalizer: Option<&str>,
) -> Result<Option<C>, kube::Error>
where
    C: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let cm = c.meta();
    let mut patch = json!({"metadata": {"ownerReferences": [reference], "uid": cm.uid}});
    if let Some(f) = finalizer
        && !cm.finalizers.as_deref().unwrap_or(&[]).iter().any(|x| x == f) {
            patch["metadata"]["finalizers"] = json!([f]);
        }
    let name = cm.name.clone().unwrap_or_default();
    tracing::debug!(object = %name, "adopting orphan");
    match api.patch(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Upstream's release patch: deletes the owner's reference by uid.
async fn release<C>(api: &Api<C>, c: &C, owner_uid: &str) -> Result<(), kube::Error>
where
    C: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let cm = c.meta();
    let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}], "uid": cm.uid}});
    let name = cm.name.clone().unwrap_or_default();
    tracing::debug!(object = %name, "releasing object that no longer matches its owner's selector");
    match api.patch(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}
