//! The disruption controller (upstream's `pkg/controller/disruption`):
//! keeps each PodDisruptionBudget's status current, which the API server's
//! eviction subresource reads (and decrements) to decide whether a pod may
//! be evicted.
//!
//! For a PDB, over the pods its selector picks in its namespace:
//! - `expectedPods` and `desiredHealthy`: `minAvailable` as an integer is
//!   `desiredHealthy` itself, with the number of pods expected; a
//!   percentage `minAvailable`, or any `maxUnavailable`, is scaled (rounding
//!   up) against the sum of the scales of the pods' controllers
//!   (ReplicationController, the Deployment of a ReplicaSet, ReplicaSet,
//!   StatefulSet `spec.replicas`). Pods without a controller add nothing
//!   and get an `UnmanagedPods` warning, as upstream;
//! - `currentHealthy`: ready pods not being deleted and not recorded in
//!   `disruptedPods` (evictions the API server approved) in the last two
//!   minutes; older `disruptedPods` entries are dropped (the pod was not
//!   deleted after all, `NotDeleted`), and the PDB looked at again when the
//!   youngest entry expires;
//! - `disruptionsAllowed`: `currentHealthy - desiredHealthy`, at least 0,
//!   and 0 while no pods are expected;
//! - `observedGeneration`, and the `DisruptionAllowed` condition (`True`
//!   `SufficientPods` / `False` `InsufficientPods`). When the computation
//!   fails (a pod's controller cannot be found), the status is failed safe:
//!   `disruptionsAllowed: 0`, condition `False` `SyncFailed`.
//!
//! Events as upstream: `NoPods`, `UnmanagedPods`,
//! `CalculateExpectedPodCountFailed`, `MultiplePodDisruptionBudgets`.
//! Not done: controllers found through the scale subresource of other
//! kinds (custom resources), and clearing stale `DisruptionTarget` pod
//! conditions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::task::JoinSet;

use crate::discovery::group_of;
use crate::informer::{Change, SharedInformers};
use crate::kit::selector::{Selector, selects_all};
use crate::kit::{self, Clock, Key};
use crate::pod_control::{EventRecorder, EventType, controller_of, error_message, is_conflict, is_not_found, is_pod_ready, object_ref};
use crate::queue::{self, Backoff, Queue};

/// How long an approved eviction keeps its pod out of `currentHealthy`
/// while the pod is not seen being deleted (upstream's `DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

pub const CONDITION: &str = "DisruptionAllowed";
pub const SUFFICIENT_PODS: &str = "SufficientPods";
pub const INSUFFICIENT_PODS: &str = "InsufficientPods";
pub const SYNC_FAILED: &str = "SyncFailed";

#[derive(Clone)]
pub struct Config {
    /// PDBs synced at once (upstream runs one worker).
    pub workers: usize,
    pub clock: Clock,
}

impl Default for Config {
    fn default() -> Self {
        Config { workers: 2, clock: kit::system_clock() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Api(String, bool),
    #[error("{0}")]
    Calculate(String),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Api(error_message(&e), is_conflict(&e))
    }
}

struct Controller {
    client: Client,
    config: Config,
    pdbs: Store<PodDisruptionBudget>,
    pods: Store<Pod>,
    rss: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    sets: Store<StatefulSet>,
    rcs: Store<ReplicationController>,
    queue: Queue<Key>,
    recorder: EventRecorder,
}

/// Runs the disruption controller with the default [`Config`].
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with(client, Config::default()).await
}

/// Runs the disruption controller until its informers stop.
pub async fn run_with(client: Client, config: Config) -> anyhow::Result<()> {
    run_shared(client.clone(), config, SharedInformers::new(client)).await
}

/// [`run_with`] on the process's shared informers.
pub async fn run_shared(client: Client, config: Config, informers: SharedInformers) -> anyhow::Result<()> {
    let (queue, workers) = queue::queue::<Key>(Backoff::CONTROLLER);
    let pdb_inf = informers.get::<PodDisruptionBudget>();
    let pod_inf = informers.get::<Pod>();
    let ctl = Arc::new(Controller {
        // Upstream's disruption controller records as "controllermanager".
        recorder: EventRecorder::new(client.clone(), "controllermanager"),
        client,
        config,
        pdbs: pdb_inf.store(),
        pods: pod_inf.store(),
        rss: informers.get::<ReplicaSet>().store(),
        deployments: informers.get::<Deployment>().store(),
        sets: informers.get::<StatefulSet>().store(),
        rcs: informers.get::<ReplicationController>().store(),
        queue: queue.clone(),
    });
    let mut tasks = JoinSet::new();
    let c = ctl.clone();
    tasks.spawn(pdb_inf.run("poddisruptionbudgets", move |ch| c.on_pdb(ch)));
    let c = ctl.clone();
    tasks.spawn(pod_inf.run("pods", move |ch| c.on_pod(ch)));
    let _ = tokio::join!(
        ctl.pdbs.wait_until_ready(),
        ctl.pods.wait_until_ready(),
        ctl.rss.wait_until_ready(),
        ctl.deployments.wait_until_ready(),
        ctl.sets.wait_until_ready(),
        ctl.rcs.wait_until_ready()
    );
    tracing::info!("disruption controller synced");
    for p in ctl.pdbs.state() {
        queue.add(Key::of(&*p));
    }
    let n = ctl.config.workers;
    let c = ctl.clone();
    tasks.spawn(kit::run_workers("disruption", queue, workers, n, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    }));
    let _ = tasks.join_next().await;
    anyhow::bail!("disruption controller stopped")
}

fn pdb_selector(pdb: &PodDisruptionBudget) -> Result<Selector, String> {
    Selector::parse(pdb.spec.as_ref().and_then(|s| s.selector.as_ref()))
}

impl Controller {
    fn on_pdb(&self, change: Change<PodDisruptionBudget>) {
        let pdb = match &change {
            Change::Added(p) | Change::Updated(_, p) | Change::Deleted(p) => p,
        };
        self.queue.add(Key::of(&**pdb));
    }

    /// Upstream's `getPdbForPod`: the PDBs whose (non-empty) selector picks
    /// the pod. Upstream wakes only the first of several; all are woken here.
    fn pdbs_for_pod(&self, pod: &Pod) -> Vec<Arc<PodDisruptionBudget>> {
        let ns = pod.metadata.namespace.as_deref();
        let mut out: Vec<Arc<PodDisruptionBudget>> = self
            .pdbs
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == ns)
            .filter(|p| {
                let sel = p.spec.as_ref().and_then(|s| s.selector.as_ref());
                !selects_all(sel) && pdb_selector(p).map(|s| s.matches(pod.metadata.labels.as_ref())).unwrap_or(false)
            })
            .collect();
        out.sort_by_key(|p| p.name_any());
        if out.len() > 1 {
            let msg = format!(
                "Pod \"{}\"/\"{}\" matches multiple PodDisruptionBudgets.  Chose \"{}\" arbitrarily.",
                pod.namespace().unwrap_or_default(),
                pod.name_any(),
                out[0].name_any()
            );
            self.recorder.event(object_ref(pod), EventType::Warning, "MultiplePodDisruptionBudgets", msg);
        }
        out
    }

    fn on_pod(&self, change: Change<Pod>) {
        let wake = |pod: &Pod| {
            for p in self.pdbs_for_pod(pod) {
                self.queue.add(Key::of(&*p));
            }
        };
        match &change {
            Change::Added(p) | Change::Deleted(p) => wake(p),
            Change::Updated(old, cur) => {
                wake(cur);
                if old.metadata.labels != cur.metadata.labels {
                    wake(old);
                }
            }
        }
    }

    async fn sync(&self, key: &Key) -> Result<Option<Duration>, Error> {
        let Some(pdb) = self.pdbs.get(&key.obj_ref()) else { return Ok(None) };
        match self.try_sync(&pdb).await {
            Ok(recheck) => Ok(recheck),
            Err(e @ Error::Api(_, true)) => Err(e),
            Err(e) => {
                tracing::warn!(pdb = %key, error = %e, "disruption: sync failed; failing safe");
                self.fail_safe(&pdb, &e.to_string()).await?;
                // Upstream waits for the next event; retrying with backoff
                // also recovers from a pod seen before its controller.
                Err(e)
            }
        }
    }

    /// Upstream's `trySync`.
    async fn try_sync(&self, pdb: &PodDisruptionBudget) -> Result<Option<Duration>, Error> {
        let ns = pdb.namespace().unwrap_or_default();
        let sel = pdb_selector(pdb).map_err(|e| Error::Calculate(format!("invalid selector: {e}")))?;
        let mut pods: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()) && sel.matches(p.metadata.labels.as_ref()))
            .collect();
        pods.sort_by_key(|p| p.name_any());
        if pods.is_empty() {
            self.recorder.event(object_ref(pdb), EventType::Normal, "NoPods", "No matching pods found");
        }
        let (expected, desired, unmanaged) = match expected_pod_count(pdb, &pods, |r, ns| self.controller_scale(r, ns)) {
            Ok(v) => v,
            Err(e) => {
                self.recorder.event(
                    object_ref(pdb),
                    EventType::Warning,
                    "CalculateExpectedPodCountFailed",
                    format!("Failed to calculate the number of expected pods: {e}"),
                );
                return Err(Error::Calculate(e));
            }
        };
        if !unmanaged.is_empty() {
            tracing::debug!(pdb = %pdb.name_any(), pods = ?unmanaged, "disruption: unmanaged pods");
            self.recorder.event(
                object_ref(pdb),
                EventType::Warning,
                "UnmanagedPods",
                format!(
                    "Pods selected by this PodDisruptionBudget (selector: {}) were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
                    selector_string(pdb)
                ),
            );
        }
        let now = (self.config.clock)();
        let (disrupted, recheck, not_deleted) = build_disrupted_pod_map(&pods, pdb, now);
        for pod in not_deleted {
            self.recorder.event(
                object_ref(&*pod),
                EventType::Warning,
                "NotDeleted",
                format!("Pod was expected by PDB {}/{} to be deleted but it wasn't", ns, pdb.name_any()),
            );
        }
        let healthy = count_healthy_pods(&pods, &disrupted, now);
        self.update_status(pdb, healthy, desired, expected, disrupted, now).await?;
        Ok(recheck.map(|at| kit::until(now, at)))
    }

    /// The finders of upstream's `getExpectedScale`, in its order: the
    /// controller a pod's controller reference names, and its scale.
    fn controller_scale(&self, r: &OwnerReference, ns: &str) -> Option<(String, i32)> {
        let group = group_of(&r.api_version);
        let key = Key::new(ns, &r.name);
        let same_uid = |uid: Option<&String>| uid.map(|u| *u == r.uid).unwrap_or(false);
        match (r.kind.as_str(), group) {
            ("ReplicationController", "") => {
                let rc = self.rcs.get(&key.obj_ref())?;
                same_uid(rc.metadata.uid.as_ref()).then(|| (r.uid.clone(), rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))
            }
            ("ReplicaSet", "apps" | "extensions") => {
                let rs = self.rss.get(&key.obj_ref())?;
                if !same_uid(rs.metadata.uid.as_ref()) {
                    return None;
                }
                match controller_of(&rs.metadata) {
                    // A Deployment's ReplicaSet: the Deployment's scale counts.
                    Some(d) if d.kind == "Deployment" => {
                        if !matches!(group_of(&d.api_version), "apps" | "extensions") {
                            return None;
                        }
                        let dep = self.deployments.get(&Key::new(ns, &d.name).obj_ref())?;
                        (dep.metadata.uid.as_ref() == Some(&d.uid)).then(|| (d.uid.clone(), dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))
                    }
                    _ => Some((r.uid.clone(), rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))),
                }
            }
            ("StatefulSet", "apps") => {
                let set = self.sets.get(&key.obj_ref())?;
                same_uid(set.metadata.uid.as_ref()).then(|| (r.uid.clone(), set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))
            }
            _ => None,
        }
    }

    /// Upstream's `updatePdbStatus`: writes the status if any of it changed.
    async fn update_status(
        &self,
        pdb: &PodDisruptionBudget,
        current_healthy: i32,
        desired_healthy: i32,
        expected: i32,
        disrupted: BTreeMap<String, Time>,
        now: Timestamp,
    ) -> Result<(), Error> {
        let allowed = if expected <= 0 { 0 } else { (current_healthy - desired_healthy).max(0) };
        let generation = pdb.metadata.generation.unwrap_or(0);
        let old = pdb.status.clone().unwrap_or_default();
        if old.current_healthy == current_healthy
            && old.desired_healthy == desired_healthy
            && old.expected_pods == expected
            && old.disruptions_allowed == allowed
            && old.disrupted_pods.clone().unwrap_or_default() == disrupted
            && old.observed_generation.unwrap_or(0) == generation
            && conditions_up_to_date(pdb)
        {
            return Ok(());
        }
        let mut status = PodDisruptionBudgetStatus {
            current_healthy,
            desired_healthy,
            expected_pods: expected,
            disruptions_allowed: allowed,
            disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
            observed_generation: Some(generation),
            conditions: old.conditions,
        };
        update_disruption_allowed_condition(&mut status, now);
        self.write_status(pdb, status).await
    }

    /// Upstream's `failSafe`: at least stop evictions.
    async fn fail_safe(&self, pdb: &PodDisruptionBudget, err: &str) -> Result<(), Error> {
        let mut status = pdb.status.clone().unwrap_or_default();
        status.disruptions_allowed = 0;
        let observed = status.observed_generation;
        let conds = status.conditions.get_or_insert_with(Vec::new);
        set_status_condition(
            conds,
            Condition {
                type_: CONDITION.into(),
                status: "False".into(),
                reason: SYNC_FAILED.into(),
                message: err.to_string(),
                observed_generation: observed,
                last_transition_time: Time((self.config.clock)()),
            },
        );
        self.write_status(pdb, status).await
    }

    async fn write_status(&self, pdb: &PodDisruptionBudget, status: PodDisruptionBudgetStatus) -> Result<(), Error> {
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), &pdb.namespace().unwrap_or_default());
        let mut obj = pdb.clone();
        obj.status = Some(status);
        // Conditioned on the cached resourceVersion; a conflict retries once
        // the watch brings the newer version (an eviction's, say).
        match api.replace_status(&obj.name_any(), &PostParams::default(), &obj).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn selector_string(pdb: &PodDisruptionBudget) -> String {
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else { return "nil".into() };
    let mut parts: Vec<String> = sel.match_labels.clone().unwrap_or_default().iter().map(|(k, v)| format!("{k}={v}")).collect();
    for e in sel.match_expressions.clone().unwrap_or_default() {
        parts.push(format!("{} {} ({})", e.key, e.operator.to_lowercase(), e.values.unwrap_or_default().join(",")));
    }
    parts.join(",")
}

/// Upstream's `intstr.GetScaledValueFromIntOrPercent`.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let Some(p) = s.strip_suffix('%') else {
                return Err("invalid value for IntOrString: invalid type: string is not a percentage".to_string());
            };
            let p: i64 = p.parse().map_err(|_| format!("invalid value for IntOrString: invalid value \"{s}\""))?;
            let scaled = p * i64::from(total);
            Ok(if round_up { (scaled + 99).div_euclid(100) } else { scaled.div_euclid(100) } as i32)
        }
    }
}

/// Upstream's `getExpectedPodCount`: (expectedPods, desiredHealthy, the
/// pods without a controller). `scale_of` finds a controller reference's
/// controller: its uid (the Deployment's, for a Deployment's ReplicaSet)
/// and replicas.
pub fn expected_pod_count(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    scale_of: impl Fn(&OwnerReference, &str) -> Option<(String, i32)>,
) -> Result<(i32, i32, Vec<String>), String> {
    let spec = pdb.spec.clone().unwrap_or_default();
    // Upstream's getExpectedScale: the sum of the pods' controllers' scales.
    let expected_scale = || -> Result<(i32, Vec<String>), String> {
        let mut scales: HashMap<String, i32> = HashMap::new();
        let mut unmanaged = Vec::new();
        for pod in pods {
            let Some(r) = controller_of(&pod.metadata) else {
                unmanaged.push(pod.name_any());
                continue;
            };
            if scales.contains_key(&r.uid) {
                continue;
            }
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            match scale_of(r, ns) {
                Some((uid, scale)) => {
                    scales.insert(uid, scale);
                }
                None => return Err(format!("found no controllers for pod \"{}\"", pod.name_any())),
            }
        }
        Ok((scales.values().sum(), unmanaged))
    };
    if let Some(max_unavailable) = &spec.max_unavailable {
        let (expected, unmanaged) = expected_scale()?;
        let max = scaled_value(max_unavailable, expected, true)?;
        return Ok((expected, (expected - max).max(0), unmanaged));
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => Ok((pods.len() as i32, *n, Vec::new())),
        Some(v @ IntOrString::String(_)) => {
            let (expected, unmanaged) = expected_scale()?;
            Ok((expected, scaled_value(v, expected, true)?, unmanaged))
        }
        None => Ok((0, 0, Vec::new())),
    }
}

/// Upstream's `buildDisruptedPodMap`: the `disruptedPods` entries still
/// pending (pod present, not being deleted, younger than
/// [`DELETION_TIMEOUT`]), when the youngest of them expires, and the pods
/// whose entries expired.
pub fn build_disrupted_pod_map(
    pods: &[Arc<Pod>],
    pdb: &PodDisruptionBudget,
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Timestamp>, Vec<Arc<Pod>>) {
    let mut out = BTreeMap::new();
    let mut recheck: Option<Timestamp> = None;
    let mut expired = Vec::new();
    let Some(disrupted) = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()) else { return (out, None, expired) };
    let timeout = SignedDuration::try_from(DELETION_TIMEOUT).expect("a small duration");
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(at) = disrupted.get(&pod.name_any()) else { continue };
        let expected_deletion = at.0 + timeout;
        if expected_deletion < now {
            tracing::info!(pod = %pod.name_any(), pdb = %pdb.name_any(), "pod was expected to be deleted but it wasn't; updating the PDB");
            expired.push(pod.clone());
        } else {
            if recheck.map(|r| expected_deletion < r).unwrap_or(true) {
                recheck = Some(expected_deletion);
            }
            out.insert(pod.name_any(), at.clone());
        }
    }
    (out, recheck, expired)
}

/// Upstream's `countHealthyPods`: ready, not being deleted, not about to be.
pub fn count_healthy_pods(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    let timeout = SignedDuration::try_from(DELETION_TIMEOUT).expect("a small duration");
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.get(&p.name_any()).map(|at| at.0 + timeout > now).unwrap_or(false))
        .filter(|p| is_pod_ready(p))
        .count() as i32
}

/// `apimeta.SetStatusCondition`: the transition time moves only when the
/// status does.
pub fn set_status_condition(conds: &mut Vec<Condition>, new: Condition) {
    match conds.iter_mut().find(|c| c.type_ == new.type_) {
        None => conds.push(new),
        Some(c) => {
            if c.status != new.status {
                c.status = new.status;
                c.last_transition_time = new.last_transition_time;
            }
            c.reason = new.reason;
            c.message = new.message;
            c.observed_generation = new.observed_generation;
        }
    }
}

/// Upstream's `pdbhelper.UpdateDisruptionAllowedCondition`.
pub fn update_disruption_allowed_condition(status: &mut PodDisruptionBudgetStatus, now: Timestamp) {
    let (s, reason) = if status.disruptions_allowed > 0 { ("True", SUFFICIENT_PODS) } else { ("False", INSUFFICIENT_PODS) };
    let observed = status.observed_generation;
    set_status_condition(
        status.conditions.get_or_insert_with(Vec::new),
        Condition {
            type_: CONDITION.into(),
            status: s.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: observed,
            last_transition_time: Time(now),
        },
    );
}

/// Upstream's `pdbhelper.ConditionsAreUpToDate`.
pub fn conditions_up_to_date(pdb: &PodDisruptionBudget) -> bool {
    let Some(status) = pdb.status.as_ref() else { return false };
    let Some(c) = status.conditions.as_deref().unwrap_or(&[]).iter().find(|c| c.type_ == CONDITION) else { return false };
    if status.observed_generation != pdb.metadata.generation {
        return false;
    }
    if status.disruptions_allowed > 0 {
        c.status == "True" && c.reason == SUFFICIENT_PODS
    } else {
        c.status == "False" && c.reason == INSUFFICIENT_PODS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pdb(spec: serde_json::Value, status: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(json!({"metadata": {"name": "b", "namespace": "ns", "generation": 1}, "spec": spec, "status": status})).unwrap()
    }

    fn pod(name: &str, owner_uid: Option<&str>, ready: bool) -> Arc<Pod> {
        let owners = owner_uid.map(|u| json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": u, "controller": true}]));
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns", "ownerReferences": owners},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
            .unwrap(),
        )
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled_value(&IntOrString::String("60%".into()), 4, true), Ok(3));
        assert_eq!(scaled_value(&IntOrString::String("50%".into()), 3, true), Ok(2));
        assert_eq!(scaled_value(&IntOrString::Int(2), 10, true), Ok(2));
        assert!(scaled_value(&IntOrString::String("2".into()), 10, true).is_err());
    }

    #[test]
    fn expected_counts_follow_min_available_and_max_unavailable() {
        let pods = vec![pod("a", Some("u1"), true), pod("b", Some("u1"), true), pod("c", None, true)];
        let scale = |r: &OwnerReference, _: &str| (r.uid == "u1").then(|| ("u1".to_string(), 5));
        let int = pdb(json!({"minAvailable": 2}), json!({}));
        assert_eq!(expected_pod_count(&int, &pods, scale), Ok((3, 2, vec![])), "an integer minAvailable expects the pods there are");
        let pct = pdb(json!({"minAvailable": "60%"}), json!({}));
        assert_eq!(
            expected_pod_count(&pct, &pods, scale),
            Ok((5, 3, vec!["c".to_string()])),
            "the controller's scale, once; unmanaged pods add nothing"
        );
        let max = pdb(json!({"maxUnavailable": 1}), json!({}));
        assert_eq!(expected_pod_count(&max, &pods, scale), Ok((5, 4, vec!["c".to_string()])));
        let none = |_: &OwnerReference, _: &str| None;
        assert_eq!(expected_pod_count(&max, &pods, none), Err("found no controllers for pod \"a\"".into()));
    }

    #[test]
    fn disrupted_pods_expire_after_two_minutes() {
        let now = Timestamp::now();
        let recent = (now - SignedDuration::from_secs(30)).to_string();
        let old = (now - SignedDuration::from_secs(180)).to_string();
        let b = pdb(json!({"minAvailable": 1}), json!({"disruptedPods": {"a": recent, "b": old, "gone": recent}}));
        let pods = vec![pod("a", None, true), pod("b", None, true)];
        let (map, recheck, expired) = build_disrupted_pod_map(&pods, &b, now);
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a"], "old entries and absent pods are dropped");
        assert_eq!(expired.len(), 1);
        let at = recheck.unwrap();
        assert!(at > now + SignedDuration::from_secs(80) && at < now + SignedDuration::from_secs(100), "recheck when a's entry expires");
        assert_eq!(count_healthy_pods(&pods, &map, now), 1, "a pending eviction does not count as healthy");
    }

    #[test]
    fn condition_tracks_disruptions_allowed() {
        let mut status = PodDisruptionBudgetStatus { disruptions_allowed: 1, observed_generation: Some(1), ..Default::default() };
        let t0 = Timestamp::now();
        update_disruption_allowed_condition(&mut status, t0);
        let c = &status.conditions.as_ref().unwrap()[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", SUFFICIENT_PODS));
        status.disruptions_allowed = 0;
        let t1 = t0 + SignedDuration::from_secs(5);
        update_disruption_allowed_condition(&mut status, t1);
        let c = &status.conditions.as_ref().unwrap()[0];
        assert_eq!((c.status.as_str(), c.reason.as_str(), c.last_transition_time.0), ("False", INSUFFICIENT_PODS, t1));
        let mut p = pdb(json!({}), json!({}));
        p.status = Some(status);
        assert!(conditions_up_to_date(&p));
        p.metadata.generation = Some(2);
        assert!(!conditions_up_to_date(&p), "a new generation needs a sync");
    }
}
