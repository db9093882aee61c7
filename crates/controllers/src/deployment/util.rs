//! Upstream's `pkg/controller/deployment/util`: the arithmetic of a
//! rollout (surge and unavailability fenceposts, proportional scaling),
//! revisions and the annotations that carry them, the pod template hash,
//! status and conditions. Pure functions, unit-tested here.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
pub const ROLLBACK_TO_ANNOTATION: &str = "deprecated.deployment.rollback.to";
/// The label the Deployment adds to its ReplicaSets' selectors and templates.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Tugboat's automatic rollback: opt in with `"true"`.
pub const AUTO_ROLLBACK_ANNOTATION: &str = "tugboat.io/auto-rollback";
/// Restarts of a new pod's container that count as a failed rollout (default 3).
pub const AUTO_ROLLBACK_RESTARTS_ANNOTATION: &str = "tugboat.io/auto-rollback-restarts";
/// The last revision whose rollout completed (kept by the controller).
pub const LAST_GOOD_REVISION_ANNOTATION: &str = "tugboat.io/last-good-revision";
/// The revision last rolled back from (kept by the controller), so that a
/// failed revision is rolled back once.
pub const ROLLED_BACK_FROM_ANNOTATION: &str = "tugboat.io/rolled-back-from";
pub const DEFAULT_AUTO_ROLLBACK_RESTARTS: i32 = 3;

// Condition reasons, as upstream.
pub const NEW_RS_NEW_REASON: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS_REASON: &str = "FoundNewReplicaSet";
pub const RS_UPDATED_REASON: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE_REASON: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";
pub const PAUSED_REASON: &str = "DeploymentPaused";
pub const RESUMED_REASON: &str = "DeploymentResumed";
pub const MIN_AVAILABLE_REASON: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE_REASON: &str = "MinimumReplicasUnavailable";
pub const FAILED_RS_CREATE_REASON: &str = "ReplicaSetCreateError";

/// Upstream's history annotation limit (`maxRevHistoryLengthInChars`).
pub const MAX_REV_HISTORY_CHARS: usize = 2000;

/// Annotations not copied from a Deployment to its ReplicaSets. Tugboat's
/// bookkeeping stays on the Deployment.
pub fn skip_copy_annotation(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED_ANNOTATION
            | REVISION_ANNOTATION
            | REVISION_HISTORY_ANNOTATION
            | DESIRED_REPLICAS_ANNOTATION
            | MAX_REPLICAS_ANNOTATION
            | ROLLBACK_TO_ANNOTATION
            | LAST_GOOD_REVISION_ANNOTATION
            | ROLLED_BACK_FROM_ANNOTATION
    )
}

// ---------------------------------------------------------------------------
// Accessors

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// The available replicas an RS can be counted on for when deciding how
/// far to scale down: its reported `availableReplicas`, but never more
/// than its `spec.replicas`. An RS just scaled down still reports the pods
/// its controller is deleting (its status is written from the pods it had
/// before it saw them go), so right after a scale-down from 3 to 2 it can
/// report 3 available; its controller deletes not-ready pods first, so once
/// it has acted at most `spec.replicas` of them remain available. Counting
/// the reported 3 lets the next pass scale down once more for pods that are
/// already going, below `replicas - maxUnavailable`. (Upstream refuses such
/// an RS in `cleanupUnhealthyReplicas`, as an invalid scale "down" to a
/// larger size, which ends that pass without scaling down.)
pub fn rs_available_within_spec(rs: &ReplicaSet) -> i32 {
    rs_available(rs).min(rs_replicas(rs)).max(0)
}

pub fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0)
}

pub fn set_rs_replicas(rs: &mut ReplicaSet, n: i32) {
    rs.spec.get_or_insert_with(Default::default).replicas = Some(n);
}

pub fn is_rolling_update(d: &Deployment) -> bool {
    strategy_type(d) == "RollingUpdate"
}

pub fn strategy_type(d: &Deployment) -> String {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.clone()).unwrap_or_else(|| "RollingUpdate".into())
}

pub fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

pub fn min_ready_seconds(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

/// `None`: no deadline (unset, or upstream's MaxInt32 sentinel).
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).filter(|s| *s != i32::MAX)
}

pub fn has_progress_deadline(d: &Deployment) -> bool {
    progress_deadline(d).is_some()
}

pub fn revision_history_limit(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.revision_history_limit).filter(|l| *l != i32::MAX)
}

pub fn annotation<'a>(meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

// ---------------------------------------------------------------------------
// Fenceposts

/// Upstream's `GetScaledValueFromIntOrPercent`: an int, or a percentage of
/// `total` rounded up or down.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let Some(p) = s.strip_suffix('%') else {
                return Err(format!("invalid value for IntOrString: invalid type: string is not a percentage: {s:?}"));
            };
            let p: i64 = p.parse().map_err(|_| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let x = p as f64 * total as f64 / 100.0;
            Ok(if round_up { x.ceil() } else { x.floor() } as i32)
        }
    }
}

/// Upstream's `ResolveFenceposts`: (maxSurge, maxUnavailable) for
/// `desired` replicas; surge rounds up, unavailability down, and if both
/// come to zero unavailability is 1.
pub fn resolve_fenceposts(max_surge: Option<&IntOrString>, max_unavailable: Option<&IntOrString>, desired: i32) -> (i32, i32) {
    let zero = IntOrString::Int(0);
    let surge = scaled_value(max_surge.unwrap_or(&zero), desired, true).unwrap_or(0);
    let mut unavailable = scaled_value(max_unavailable.unwrap_or(&zero), desired, false).unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    resolve_fenceposts(ru.and_then(|r| r.max_surge.as_ref()), ru.and_then(|r| r.max_unavailable.as_ref()), replicas(d))
}

pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    fenceposts(d).0
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling_update(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

// ---------------------------------------------------------------------------
// Pod template hash

/// FNV-1a, 32 bits (Go's `hash/fnv` New32a).
pub fn fnv32a(data: &[u8], mut h: u32) -> u32 {
    for b in data {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}
pub const FNV32_OFFSET: u32 = 0x811c_9dc5;

/// Upstream's `rand.SafeEncodeString`: digits mapped onto consonants and
/// digits that cannot spell words (or look like each other).
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes().map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char).collect()
}

/// Upstream's `controller.ComputeHash`: a 32-bit FNV-1a hash of the
/// template (upstream hashes Go's printed struct; Tugboat hashes its
/// JSON, equally stable), plus the collision count, as a short safe string.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut h = fnv32a(&json, FNV32_OFFSET);
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(c as u32).to_le_bytes());
        h = fnv32a(&bytes, h);
    }
    safe_encode(&h.to_string())
}

/// Drops nulls and empty lists and maps (upstream's semantic equality
/// treats empty and nil alike).
fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for x in m.values_mut() {
                normalize(x);
            }
            m.retain(|_, x| !(x.is_null() || x.as_array().is_some_and(|a| a.is_empty()) || x.as_object().is_some_and(|o| o.is_empty())));
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn template_without_hash(t: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(labels) = v.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    normalize(&mut v);
    v
}

/// Upstream's `EqualIgnoreHash`: templates equal but for the hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    template_without_hash(a) == template_without_hash(b)
}

/// `template` without the hash label (what `kubectl rollout undo` copies
/// back into the Deployment).
pub fn strip_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    t
}

// ---------------------------------------------------------------------------
// ReplicaSet lists

pub fn creation(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Oldest first, then by name (upstream's `ReplicaSetsByCreationTimestamp`).
pub fn sort_by_creation(rss: &mut [ReplicaSet]) {
    rss.sort_by(|a, b| creation(a).cmp(&creation(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name)));
}

/// Revision from the annotation (0 if absent or invalid).
pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION_ANNOTATION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

pub fn max_revision(rss: &[ReplicaSet]) -> i64 {
    rss.iter().map(revision).max().unwrap_or(0)
}

/// Revisions an RS had before its current one (`revision-history`).
pub fn revision_history(rs: &ReplicaSet) -> Vec<i64> {
    annotation(&rs.metadata, REVISION_HISTORY_ANNOTATION)
        .map(|h| h.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Upstream's `FindNewReplicaSet`: the oldest RS whose template equals the
/// Deployment's (ignoring the hash label).
pub fn find_new_rs<'a>(d: &Deployment, rss: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let template = &d.spec.as_ref()?.template;
    let mut sorted: Vec<&ReplicaSet> = rss.iter().collect();
    sorted.sort_by(|a, b| creation(a).cmp(&creation(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name)));
    sorted.into_iter().find(|rs| rs.spec.as_ref().and_then(|s| s.template.as_ref()).map(|t| equal_ignore_hash(t, template)).unwrap_or(false))
}

/// Replica sets with replicas (upstream's `FilterActiveReplicaSets`).
pub fn filter_active(rss: &[ReplicaSet]) -> Vec<ReplicaSet> {
    rss.iter().filter(|rs| rs_replicas(rs) > 0).cloned().collect()
}

pub fn replica_count(rss: &[ReplicaSet]) -> i32 {
    rss.iter().map(rs_replicas).sum()
}

pub fn actual_replica_count(rss: &[ReplicaSet]) -> i32 {
    rss.iter().map(rs_status_replicas).sum()
}

pub fn available_count(rss: &[ReplicaSet]) -> i32 {
    rss.iter().map(rs_available).sum()
}

/// [`available_count`] with each RS's [`rs_available_within_spec`]: what
/// scale-down decisions read.
pub fn available_count_within_spec(rss: &[ReplicaSet]) -> i32 {
    rss.iter().map(rs_available_within_spec).sum()
}

pub fn ready_count(rss: &[ReplicaSet]) -> i32 {
    rss.iter().map(rs_ready).sum()
}

/// Upstream's `FindActiveOrLatest`: the only active RS, or if none is
/// active the new one (else the newest old one); `None` with several active.
pub fn find_active_or_latest(new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Option<ReplicaSet> {
    if new_rs.is_none() && old.is_empty() {
        return None;
    }
    let mut old_sorted = old.to_vec();
    sort_by_creation(&mut old_sorted);
    old_sorted.reverse();
    let mut all: Vec<ReplicaSet> = old_sorted.clone();
    if let Some(n) = new_rs {
        all.push(n.clone());
    }
    let active = filter_active(&all);
    match active.len() {
        0 => new_rs.cloned().or_else(|| old_sorted.first().cloned()),
        1 => Some(active[0].clone()),
        _ => None,
    }
}

/// Upstream's `IsSaturated`: the new RS runs all replicas, available.
pub fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else { return false };
    let Some(desired) = annotation(&rs.metadata, DESIRED_REPLICAS_ANNOTATION).and_then(|v| v.parse::<i32>().ok()) else {
        return false;
    };
    rs_replicas(rs) == replicas(d) && desired == replicas(d) && rs_available(rs) == replicas(d)
}

/// Upstream's `NewRSNewReplicas`: how far the new RS may scale up now.
pub fn new_rs_new_replicas(d: &Deployment, all: &[ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    if is_rolling_update(d) {
        let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
        let surge = ru
            .and_then(|r| r.max_surge.as_ref())
            .map(|v| scaled_value(v, replicas(d), true).unwrap_or(0))
            .unwrap_or(0);
        let current = replica_count(all);
        let max_total = replicas(d) + surge;
        if current >= max_total {
            return rs_replicas(new_rs);
        }
        let up = (max_total - current).min(replicas(d) - rs_replicas(new_rs));
        rs_replicas(new_rs) + up
    } else {
        replicas(d)
    }
}

// ---------------------------------------------------------------------------
// Rolling update: scaling old ReplicaSets down (upstream's
// `reconcileOldReplicaSets`), the decisions without the writes.

/// How many old replicas `reconcileOldReplicaSets` may remove now: all
/// replicas, less the minimum available (`replicas - maxUnavailable`),
/// less the new RS's unavailable ones.
pub fn max_old_scale_down(d: &Deployment, all: &[ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    let min_available = replicas(d) - max_unavailable(d);
    let new_unavailable = rs_replicas(new_rs) - rs_available_within_spec(new_rs);
    replica_count(all) - min_available - new_unavailable
}

/// Upstream's `cleanupUnhealthyReplicas` decision: the size of each old RS
/// (`old` sorted oldest first) after removing up to `max_cleanup`
/// unavailable replicas, and how many that removes. An RS reporting at
/// least `spec.replicas` available has nothing unhealthy to remove (see
/// [`rs_available_within_spec`] for why it can report more).
pub fn unhealthy_cleanup_sizes(old: &[ReplicaSet], max_cleanup: i32) -> (Vec<i32>, i32) {
    let mut total = 0;
    let sizes = old
        .iter()
        .map(|rs| {
            let (r, avail) = (rs_replicas(rs), rs_available_within_spec(rs));
            if total >= max_cleanup || r == 0 || avail >= r {
                return r;
            }
            let down = (max_cleanup - total).min(r - avail);
            total += down;
            r - down
        })
        .collect();
    (sizes, total)
}

/// Upstream's `scaleDownOldReplicaSetsForRollingUpdate` decision: the size
/// of each old RS (`old` sorted oldest first, `all` = `old` and the new RS)
/// once the replicas available beyond `replicas - maxUnavailable` are
/// removed, oldest RS first, and how many that removes. Availability is
/// counted within each RS's size ([`rs_available_within_spec`]): pods an RS
/// is already deleting are not there to be removed again.
pub fn rolling_scale_down_sizes(d: &Deployment, all: &[ReplicaSet], old: &[ReplicaSet]) -> (Vec<i32>, i32) {
    let min_available = replicas(d) - max_unavailable(d);
    let available = available_count_within_spec(all);
    let to_scale_down = (available - min_available).max(0);
    let mut total = 0;
    let sizes = old
        .iter()
        .map(|rs| {
            let r = rs_replicas(rs);
            if total >= to_scale_down || r == 0 {
                return r;
            }
            let down = r.min(to_scale_down - total);
            total += down;
            r - down
        })
        .collect();
    (sizes, total)
}

/// Upstream's `GetProportion` for proportional scaling.
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = rs_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 { fraction.min(allowed) } else { fraction.max(allowed) }
}

fn rs_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    if replicas(d) == 0 {
        return -rs_replicas(rs);
    }
    let max_now = replicas(d) + max_surge(d);
    let mut before = annotation(&rs.metadata, MAX_REPLICAS_ANNOTATION).and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
    if before == 0 {
        before = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        if before == 0 {
            return 0;
        }
    }
    let size = (rs_replicas(rs) as f64 * max_now as f64) / before as f64;
    size.round() as i32 - rs_replicas(rs)
}

/// Upstream's `SetReplicasAnnotations`: true if they changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS_ANNOTATION, desired), (MAX_REPLICAS_ANNOTATION, max)] {
        if a.get(k).map(String::as_str) != Some(v.to_string().as_str()) {
            a.insert(k.to_string(), v.to_string());
            changed = true;
        }
    }
    changed
}

pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    annotation(&rs.metadata, DESIRED_REPLICAS_ANNOTATION) != Some(desired.to_string().as_str())
        || annotation(&rs.metadata, MAX_REPLICAS_ANNOTATION) != Some(max.to_string().as_str())
}

/// Upstream's `SetNewReplicaSetAnnotations`: copies the Deployment's
/// annotations, raises the revision (keeping the old one in
/// `revision-history`), and for a new RS sets the replica annotations.
/// True if anything changed.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64, exists: bool) -> bool {
    let mut changed = false;
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy_annotation(k) || a.get(k) == Some(v) {
            continue;
        }
        a.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = a.get(REVISION_ANNOTATION).cloned();
    let old_int = match &old {
        None => 0,
        Some(s) if s.is_empty() => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return false,
        },
    };
    if old_int < new_revision {
        a.insert(REVISION_ANNOTATION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = a.get(REVISION_HISTORY_ANNOTATION).cloned().unwrap_or_default();
            if history.is_empty() {
                a.insert(REVISION_HISTORY_ANNOTATION.into(), old);
            } else {
                let mut parts: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REV_HISTORY_CHARS && start < parts.len() {
                    total -= parts[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REV_HISTORY_CHARS {
                    parts = parts.split_off(start);
                    parts.push(&old);
                    a.insert(REVISION_HISTORY_ANNOTATION.into(), parts.join(","));
                }
            }
        }
    }
    if !exists && set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

// ---------------------------------------------------------------------------
// Conditions and status

/// Now, to the second (what the API keeps of a time).
pub fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now()))
}

pub fn new_condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let t = now();
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(t.clone()),
        last_transition_time: Some(t),
    }
}

pub fn get_condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// Upstream's `SetDeploymentCondition`: no change for the same status and
/// reason; the transition time is kept while the status stays.
pub fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(cur) = get_condition(status, &cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    let conds = status.conditions.get_or_insert_with(Vec::new);
    conds.retain(|c| c.type_ != cond.type_);
    conds.push(cond);
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_ != type_);
        if c.is_empty() {
            status.conditions = None;
        }
    }
}

fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// The counts of a status, zeros and absent fields alike.
pub fn counts(s: &DeploymentStatus) -> [i64; 7] {
    [
        s.observed_generation.unwrap_or(0),
        s.replicas.unwrap_or(0) as i64,
        s.updated_replicas.unwrap_or(0) as i64,
        s.ready_replicas.unwrap_or(0) as i64,
        s.available_replicas.unwrap_or(0) as i64,
        s.unavailable_replicas.unwrap_or(0) as i64,
        s.collision_count.map(|c| c as i64 + 1).unwrap_or(0),
    ]
}

/// Statuses equal as upstream compares them (zero and absent alike).
pub fn status_equal(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    counts(a) == counts(b) && a.conditions.clone().unwrap_or_default() == b.conditions.clone().unwrap_or_default()
}

/// Upstream's `calculateStatus`, with the `Available` condition.
pub fn calculate_status(all: &[ReplicaSet], new_rs: Option<&ReplicaSet>, d: &Deployment) -> DeploymentStatus {
    let available = available_count(all);
    let total = replica_count(all);
    let unavailable = (total - available).max(0);
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation.filter(|g| *g != 0),
        replicas: nonzero(actual_replica_count(all)),
        updated_replicas: nonzero(new_rs.map(rs_status_replicas).unwrap_or(0)),
        ready_replicas: nonzero(ready_count(all)),
        available_replicas: nonzero(available),
        unavailable_replicas: nonzero(unavailable),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: None,
    };
    if available >= replicas(d) - max_unavailable(d) {
        set_condition(&mut status, new_condition("Available", "True", MIN_AVAILABLE_REASON, "Deployment has minimum availability.".into()));
    } else {
        set_condition(
            &mut status,
            new_condition("Available", "False", MIN_UNAVAILABLE_REASON, "Deployment does not have minimum availability.".into()),
        );
    }
    status
}

/// Upstream's `DeploymentComplete`.
pub fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = replicas(d);
    s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Upstream's `DeploymentProgressing`: more updated, ready or available
/// replicas, or fewer old ones, than the last status.
pub fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let g = |v: Option<i32>| v.unwrap_or(0);
    let old_old = g(old.replicas) - g(old.updated_replicas);
    let new_old = g(new.replicas) - g(new.updated_replicas);
    g(new.updated_replicas) > g(old.updated_replicas)
        || new_old < old_old
        || g(new.ready_replicas) > g(old.ready_replicas)
        || g(new.available_replicas) > g(old.available_replicas)
}

/// Upstream's `DeploymentTimedOut`: no progress reported for longer than
/// `progressDeadlineSeconds`.
pub fn deployment_timed_out(d: &Deployment, new: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else { return false };
    let Some(cond) = get_condition(new, "Progressing") else { return false };
    match cond.reason.as_deref() {
        Some(NEW_RS_AVAILABLE_REASON) => return false,
        Some(TIMED_OUT_REASON) => return true,
        _ => {}
    }
    let Some(from) = cond.last_update_time.as_ref() else { return false };
    from.0 + std::time::Duration::from_secs(deadline.max(0) as u64) < now
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(replicas: i32, surge: Value, unavailable: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}
        }))
        .unwrap()
    }

    fn rs(name: &str, replicas: i32, available: i32, annotations: Value) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": replicas, "availableReplicas": available}
        }))
        .unwrap()
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        assert_eq!(resolve_fenceposts(Some(&IntOrString::String("25%".into())), Some(&IntOrString::String("25%".into())), 10), (3, 2));
        assert_eq!(resolve_fenceposts(Some(&IntOrString::String("25%".into())), Some(&IntOrString::String("25%".into())), 1), (1, 0));
        assert_eq!(resolve_fenceposts(Some(&IntOrString::Int(0)), Some(&IntOrString::String("10%".into())), 5), (0, 1), "both zero: unavailable becomes 1");
        assert_eq!(resolve_fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(1)), 4), (2, 1));
        assert!(scaled_value(&IntOrString::String("5".into()), 10, true).is_err());
        let d = deploy(4, json!(10), json!(10));
        assert_eq!(max_unavailable(&d), 4, "capped at the replicas");
        assert_eq!(max_surge(&d), 10);
    }

    #[test]
    fn hash_is_stable_short_and_changes_with_template_and_collisions() {
        let d = deploy(3, json!(1), json!(0));
        let t = d.spec.as_ref().unwrap().template.clone();
        let h = compute_hash(&t, None);
        assert_eq!(h, compute_hash(&t.clone(), None));
        assert!(h.len() <= 10 && !h.is_empty(), "{h}");
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)), "{h}");
        assert_ne!(h, compute_hash(&t, Some(1)));
        let mut t2 = t.clone();
        t2.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
        assert_ne!(h, compute_hash(&t2, None));
        // Go's fnv32a of "" and "a".
        assert_eq!(fnv32a(b"", FNV32_OFFSET), 0x811c9dc5);
        assert_eq!(fnv32a(b"a", FNV32_OFFSET), 0xe40c292c);
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn templates_compare_without_the_hash_label_and_empty_fields() {
        let d = deploy(3, json!(1), json!(0));
        let t = d.spec.as_ref().unwrap().template.clone();
        let mut with_hash = t.clone();
        with_hash.metadata.as_mut().unwrap().labels.as_mut().unwrap().insert(POD_TEMPLATE_HASH_LABEL.into(), "abc".into());
        with_hash.metadata.as_mut().unwrap().annotations = Some(BTreeMap::new());
        assert!(equal_ignore_hash(&t, &with_hash));
        let mut other = t.clone();
        other.spec.as_mut().unwrap().containers[0].image = Some("x".into());
        assert!(!equal_ignore_hash(&t, &other));
    }

    #[test]
    fn revisions_move_to_history_when_an_old_rs_becomes_new() {
        let d = deploy(3, json!(1), json!(0));
        let mut r = rs("a", 0, 0, json!({REVISION_ANNOTATION: "1"}));
        assert!(set_new_rs_annotations(&d, &mut r, 3, true));
        assert_eq!(annotation(&r.metadata, REVISION_ANNOTATION), Some("3"));
        assert_eq!(annotation(&r.metadata, REVISION_HISTORY_ANNOTATION), Some("1"));
        assert!(set_new_rs_annotations(&d, &mut r, 5, true));
        assert_eq!(annotation(&r.metadata, REVISION_HISTORY_ANNOTATION), Some("1,3"));
        assert!(!set_new_rs_annotations(&d, &mut r, 4, true), "a lower revision changes nothing");
        assert_eq!(revision_history(&r), vec![1, 3]);
        let mut fresh = rs("b", 0, 0, json!({}));
        assert!(set_new_rs_annotations(&d, &mut fresh, 1, false));
        assert_eq!(annotation(&fresh.metadata, DESIRED_REPLICAS_ANNOTATION), Some("3"));
        assert_eq!(annotation(&fresh.metadata, MAX_REPLICAS_ANNOTATION), Some("4"));
    }

    #[test]
    fn new_rs_scales_up_within_surge() {
        let d = deploy(10, json!("30%"), json!(0));
        let old = rs("old", 10, 10, json!({}));
        let new = rs("new", 0, 0, json!({}));
        let all = vec![old.clone(), new.clone()];
        assert_eq!(new_rs_new_replicas(&d, &all, &new), 3);
        let new3 = rs("new", 3, 0, json!({}));
        assert_eq!(new_rs_new_replicas(&d, &[old, new3.clone()], &new3), 3, "at maxSurge: no more");
    }

    #[test]
    fn proportional_scaling_uses_the_max_replicas_annotation() {
        // 10 replicas, surge 3: max 13. Scaled to 20 (max 23): an RS of 6 out of 13 gets round(6*23/13)=11.
        let d = deploy(20, json!(3), json!(2));
        let r = rs("a", 6, 6, json!({MAX_REPLICAS_ANNOTATION: "13"}));
        assert_eq!(proportion(&r, &d, 10, 0), 5);
        assert_eq!(proportion(&r, &d, 3, 0), 3, "never more than allowed");
    }

    #[test]
    fn conditions_keep_transition_time_and_ignore_same_reason() {
        let mut s = DeploymentStatus::default();
        let mut c = new_condition("Progressing", "True", NEW_RS_NEW_REASON, "Created new replica set \"x\"".into());
        c.last_transition_time = Some(Time(Timestamp::from_second(100).unwrap()));
        set_condition(&mut s, c);
        set_condition(&mut s, new_condition("Progressing", "True", NEW_RS_NEW_REASON, "other".into()));
        assert_eq!(get_condition(&s, "Progressing").unwrap().message.as_deref(), Some("Created new replica set \"x\""));
        set_condition(&mut s, new_condition("Progressing", "True", NEW_RS_AVAILABLE_REASON, "done".into()));
        let c = get_condition(&s, "Progressing").unwrap();
        assert_eq!(c.reason.as_deref(), Some(NEW_RS_AVAILABLE_REASON));
        assert_eq!(c.last_transition_time.as_ref().unwrap().0.as_second(), 100);
    }

    /// An RS of `spec` replicas whose status reports `status` pods, of
    /// which `available` are available.
    fn rs_with_status(name: &str, spec: i32, status: i32, available: i32) -> ReplicaSet {
        let mut r = rs(name, spec, available, json!({}));
        r.status.as_mut().unwrap().replicas = status;
        r
    }

    /// The old RSs' sizes after one pass of `reconcileOldReplicaSets`, as
    /// the controller composes the decisions: the bound, the unhealthy
    /// cleanup, then the scale-down with the cleaned-up sizes.
    fn old_sizes_after_pass(d: &Deployment, old: &[ReplicaSet], new: &ReplicaSet) -> Vec<i32> {
        let mut all = old.to_vec();
        all.push(new.clone());
        let max = max_old_scale_down(d, &all, new);
        if max <= 0 {
            return old.iter().map(rs_replicas).collect();
        }
        let (sizes, _) = unhealthy_cleanup_sizes(old, max);
        let mut old = old.to_vec();
        for (rs, size) in old.iter_mut().zip(sizes) {
            set_rs_replicas(rs, size);
        }
        let mut all = old.clone();
        all.push(new.clone());
        rolling_scale_down_sizes(d, &all, &old).0
    }

    #[test]
    fn old_rs_scale_down_keeps_min_available() {
        // 4 replicas, maxSurge 1, maxUnavailable 1: at least 3 available.
        let d = deploy(4, json!(1), json!(1));
        // Steady state: old 3 (all available), new 2 (1 available): 4
        // available, one old replica may go.
        let old = rs_with_status("old", 3, 3, 3);
        let new = rs_with_status("new", 2, 2, 1);
        assert_eq!(old_sizes_after_pass(&d, &[old], &new), [2]);
        // Unhealthy old replicas go first, and cost no availability: old 4
        // (2 available), new 1 (none): the bound is 5 - 3 - 1 = 1.
        let old = rs_with_status("old", 4, 4, 2);
        let new = rs_with_status("new", 1, 1, 0);
        assert_eq!(unhealthy_cleanup_sizes(std::slice::from_ref(&old), 1), (vec![3], 1));
        assert_eq!(old_sizes_after_pass(&d, &[old], &new), [3]);
    }

    #[test]
    fn old_rs_scale_down_does_not_count_pods_already_being_deleted() {
        let d = deploy(4, json!(1), json!(1));
        // The old RS was just scaled from 3 to 2; its status still counts
        // the pod its controller is deleting (3 available). The new RS has
        // 3, 2 of them available. Really available once the old RS's pod
        // is gone: 2 + 2 = 4, so one more old replica may go (old 1 → 3
        // available). Counting the reported 3 gives 5 and scales the old
        // RS to 0, leaving 2 available: below 4 - 1.
        let old = rs_with_status("old", 2, 3, 3);
        let new = rs_with_status("new", 3, 3, 2);
        assert_eq!(old_sizes_after_pass(&d, &[old.clone()], &new), [1]);
        assert_eq!(rs_available_within_spec(&old), 2);
        // Earlier in the same rollout: old just scaled from 4 to 3 (status
        // 4 available), new 2 with 1 available: 3 + 1 = 4, one may go.
        let old = rs_with_status("old", 3, 4, 4);
        let new = rs_with_status("new", 2, 2, 1);
        assert_eq!(old_sizes_after_pass(&d, &[old], &new), [2]);
        // Two old RSs, the older one just scaled down from 2 to 1.
        let older = rs_with_status("older", 1, 2, 2);
        let old = rs_with_status("old", 2, 2, 2);
        let new = rs_with_status("new", 2, 2, 1);
        assert_eq!(old_sizes_after_pass(&d, &[older, old], &new), [0, 2], "1 + 2 + 1 available: one may go");
    }

    #[test]
    fn status_counts_and_availability() {
        let d = deploy(4, json!(1), json!(1));
        let old = rs("old", 1, 1, json!({}));
        let new = rs("new", 4, 2, json!({}));
        let s = calculate_status(&[old, new.clone()], Some(&new), &d);
        assert_eq!(s.replicas, Some(5));
        assert_eq!(s.updated_replicas, Some(4));
        assert_eq!(s.available_replicas, Some(3));
        assert_eq!(s.unavailable_replicas, Some(2));
        assert_eq!(get_condition(&s, "Available").unwrap().status, "True", "3 >= 4 - 1");
        assert!(!deployment_complete(&d, &s));
    }
}
