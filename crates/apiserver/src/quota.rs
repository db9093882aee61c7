//! ResourceQuota admission (upstream's `plugin/resourcequota`), on create.
//!
//! For each quota in the object's namespace whose `status.hard` limits
//! something the object consumes (and whose scopes it is in): the pod
//! constraints are checked (`failed quota: q: must specify ...`), the quota
//! must have been counted (`status unknown for quota: ...`), and
//! `status.used` plus the object's usage must stay within `status.hard`,
//! else 403 `exceeded quota: q, requested: pods=1, used: pods=2, limited:
//! pods=2`. Then, before the object is written, the new `status.used` is
//! written to every such quota by compare-and-swap on its revision, as
//! upstream's admission updates the quota status in the same request: of
//! two racing creates, the second's write conflicts, and it is evaluated
//! again against the fresh quota from the store. A quota the controller has
//! not processed yet (no `status.hard`) limits nothing, as upstream.
//!
//! The accounting itself (what an object consumes, scopes, quantities) is
//! [`tug_api::quota`], shared with the resource quota controller. Not done
//! here (as upstream does): charging updates (a pod's resize, a Service
//! becoming a NodePort, a PVC expansion, PUTs that create), and the
//! admission configuration's limited resources.

use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tug_api::quota::{self, Usage};
use tug_api::resources::ResourceType;
use tug_api::{ApiError, meta};
use tug_store::{Revision, StoreError};

use crate::rest::Ctx;

/// How often a quota write that conflicted is evaluated again (upstream
/// retries three times per batch of waiting requests; without batching,
/// concurrent creates in one namespace conflict more often).
const RETRIES: usize = 16;

const QUOTA_PREFIX: &str = "/registry/resourcequotas/";

/// One quota as read, with the revision its write is conditioned on.
struct Read {
    name: String,
    revision: Revision,
    object: Value,
    typed: ResourceQuota,
}

fn typed(object: &Value) -> Option<ResourceQuota> {
    serde_json::from_value(object.clone()).ok()
}

fn revision_of(object: &Value) -> Revision {
    meta::resource_version(object).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// `pods "web" is forbidden: <reason>` (upstream's `admission.NewForbidden`).
fn forbidden(rt: &ResourceType, name: &str, reason: String) -> ApiError {
    let resource = if rt.group.is_empty() { rt.plural.to_string() } else { format!("{}.{}", rt.plural, rt.group) };
    let message =
        if name.is_empty() { format!("{resource} is forbidden: {reason}") } else { format!("{resource} \"{name}\" is forbidden: {reason}") };
    let mut e = ApiError::forbidden(message);
    e.group = rt.group.to_string();
    e.kind = rt.plural.to_string();
    e.name = name.to_string();
    e
}

/// Admits the creation of `obj` (already defaulted and validated) in `ns`
/// against the namespace's quotas, charging them unless `dry_run`.
pub async fn admit_create(ctx: &Ctx, rt: &ResourceType, ns: Option<&str>, obj: &Value, dry_run: bool) -> Result<(), ApiError> {
    let Some(ns) = ns.filter(|_| rt.namespaced) else { return Ok(()) };
    let prefix = format!("{QUOTA_PREFIX}{ns}/");
    let (cached, _) = ctx.cache.list(&prefix).await;
    if cached.is_empty() {
        return Ok(());
    }
    let (group, resource) = (rt.group, rt.plural);
    let name = meta::name(obj).to_string();
    let pod: Option<Pod> = if group.is_empty() && resource == "pods" { serde_json::from_value(obj.clone()).ok() } else { None };
    let usage = quota::usage(group, resource, obj, Timestamp::now()).map_err(|e| ApiError::internal(format!("computing quota usage: {e}")))?;

    let mut pending: Vec<Read> = cached
        .iter()
        .filter_map(|o| Some(Read { name: meta::name(o).to_string(), revision: revision_of(o), object: (**o).clone(), typed: typed(o)? }))
        .collect();
    let mut checked_usage = false;
    for _ in 0..RETRIES {
        // Which quotas apply, and are they usable?
        let mut interesting = Vec::new();
        for q in pending {
            let hard = q.typed.status.as_ref().and_then(|s| s.hard.clone()).unwrap_or_default();
            if !quota::quota_matches(&q.typed, &hard, group, resource, pod.as_ref()) {
                continue;
            }
            let restricted = quota::matching_resources(group, resource, hard.keys());
            if let Some(p) = &pod
                && let Err(e) = quota::pod_constraints(&restricted, p)
            {
                return Err(forbidden(rt, &name, format!("failed quota: {}: {e}", q.name)));
            }
            let used = q.typed.status.as_ref().and_then(|s| s.used.as_ref());
            let mut unknown: Vec<&String> = restricted.iter().filter(|r| !used.map(|u| u.contains_key(*r)).unwrap_or(false)).collect();
            if !unknown.is_empty() {
                unknown.sort();
                let names: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
                return Err(forbidden(rt, &name, format!("status unknown for quota: {}, resources: {}", q.name, names.join(","))));
            }
            interesting.push(q);
        }
        if !checked_usage {
            let negative: Vec<&str> = usage.iter().filter(|(_, v)| v.is_negative()).map(|(k, _)| k.as_str()).collect();
            if !negative.is_empty() {
                return Err(forbidden(rt, &name, format!("quota usage is negative for resource(s): {}", negative.join(","))));
            }
            checked_usage = true;
        }
        if usage.values().all(|v| v.is_zero()) || interesting.is_empty() {
            return Ok(());
        }

        // Would the object fit, and what would each quota read then?
        let mut updates: Vec<(Read, Usage)> = Vec::new();
        for q in interesting {
            let status = q.typed.status.clone().unwrap_or_default();
            let hard = quota::usage_of(status.hard.as_ref());
            let used = quota::usage_of(status.used.as_ref());
            let requested = quota::mask(&usage, hard.keys());
            let new_used = quota::add(&used, &requested);
            let masked = quota::mask(&new_used, requested.keys());
            let (fits, exceeded) = quota::less_than_or_equal(&masked, &hard);
            if !fits {
                return Err(forbidden(
                    rt,
                    &name,
                    format!(
                        "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                        q.name,
                        quota::pretty_print(&quota::mask(&requested, &exceeded)),
                        quota::pretty_print(&quota::mask(&used, &exceeded)),
                        quota::pretty_print(&quota::mask(&hard, &exceeded)),
                    ),
                ));
            }
            if !quota::equals(&new_used, &used) {
                updates.push((q, new_used));
            }
        }
        if dry_run || updates.is_empty() {
            return Ok(());
        }

        // Charge them; the ones whose write conflicted are read again and
        // evaluated anew (the others are charged already).
        let mut conflicted = Vec::new();
        for (q, new_used) in updates {
            let mut object = q.object.clone();
            object["status"]["used"] = json!(quota::to_list(&new_used));
            if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let key = format!("{prefix}{}", q.name);
            let bytes = serde_json::to_vec(&object).expect("JSON values serialize");
            match ctx.store.update(&key, bytes, q.revision).await {
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) => conflicted.push(q.name),
                // Deleted meanwhile: it limits nothing any more.
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(ApiError::internal(format!("updating resource quota {}: {e}", q.name))),
            }
        }
        if conflicted.is_empty() {
            return Ok(());
        }
        pending = fresh(ctx, &prefix, &conflicted).await?;
    }
    Err(ApiError::conflict("", "resourcequotas", "", "the quota kept changing while this request was charged to it; please try again"))
}

/// The named quotas as stored now (the cache may not have the write that
/// made ours conflict yet).
async fn fresh(ctx: &Ctx, prefix: &str, names: &[String]) -> Result<Vec<Read>, ApiError> {
    let mut out = Vec::new();
    for n in names {
        let key = format!("{prefix}{n}");
        let kv = ctx.store.get(&key).await.map_err(|e| ApiError::internal(format!("reading resource quota {n}: {e}")))?;
        let Some(kv) = kv else { continue };
        let Some(object) = crate::cache::decode_stored(&kv.value, kv.mod_revision) else { continue };
        let Some(t) = typed(&object) else { continue };
        out.push(Read { name: n.clone(), revision: kv.mod_revision, object, typed: t });
    }
    Ok(out)
}
