//! The resource quota controller (upstream's `pkg/controller/resourcequota`):
//! keeps each ResourceQuota's `status.hard` equal to `spec.hard` and
//! `status.used` equal to what the namespace consumes of each limited
//! resource, counted with [`tug_api::quota`] (the accounting the API
//! server's quota admission charges with).
//!
//! Usage is computed from watches: pods, Services and PVCs (whose usage
//! depends on their content) always; any other resource a quota counts
//! (`configmaps`, `secrets`, `replicationcontrollers`, `count/<resource>
//! [.<group>]`) through a metadata watch started the first time a quota
//! names it (upstream's quota monitors), the resource found by discovery.
//! Terminal pods consume only `count/pods`. Scoped quotas count only the
//! pods in every scope (and none of the other resources, as upstream).
//!
//! A quota is recounted when it is created or its `spec.hard` changes,
//! when an object it may count is deleted or changes what it consumes (a
//! pod finishing, a Service changing type, a PVC growing), and every five
//! minutes (upstream's `--resource-quota-sync-period`). Creations are not
//! recounted: admission charged them already, and a recount racing with a
//! create the watch has not delivered yet would undo that charge.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota, ResourceQuotaStatus, Secret, Service};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::PartialObjectMeta;
use kube::discovery::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::Store;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use tokio::task::JoinSet;
use tug_api::quota::{self, Amount, Usage};

use crate::discovery::ResourceMap;
use crate::informer::{Change, IndexedStore, SharedInformers};
use crate::kit::{self, Clock, Key};
use crate::pod_control::{error_message, is_conflict, is_not_found};
use crate::queue::{self, Backoff, Queue};

#[derive(Clone)]
pub struct Config {
    /// Quotas synced at once (upstream `--concurrent-resource-quota-syncs`: 5).
    pub workers: usize,
    /// Every quota is recounted this often (`--resource-quota-sync-period`: 5m).
    pub resync: Duration,
    /// Discovery is rerun at most this often for a resource no served
    /// resource matches yet (upstream's discovery period: 30s).
    pub discovery_period: Duration,
    pub clock: Clock,
}

impl Default for Config {
    fn default() -> Self {
        Config { workers: 5, resync: Duration::from_secs(300), discovery_period: Duration::from_secs(30), clock: kit::system_clock() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Api(String, bool),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Api(error_message(&e), is_conflict(&e))
    }
}

/// (group, resource).
type GroupResource = (String, String);

/// Object names per namespace of one counted resource, from its watch.
#[derive(Default)]
struct Counted {
    synced: bool,
    by_namespace: HashMap<String, BTreeSet<String>>,
}

struct Monitor {
    state: Arc<Mutex<Counted>>,
}

struct Controller {
    client: Client,
    config: Config,
    quotas: Store<ResourceQuota>,
    pods: IndexedStore<Pod>,
    services: Store<Service>,
    pvcs: Store<PersistentVolumeClaim>,
    queue: Queue<Key>,
    monitors: Mutex<HashMap<GroupResource, Monitor>>,
    /// The monitors' watches; dropped (aborted) with the controller.
    monitor_tasks: Mutex<JoinSet<()>>,
    discovery: Mutex<(Option<Arc<ResourceMap>>, Option<Instant>)>,
}

/// Runs the resource quota controller with the default [`Config`].
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with(client, Config::default()).await
}

/// Runs the resource quota controller until its informers stop.
pub async fn run_with(client: Client, config: Config) -> anyhow::Result<()> {
    run_shared(client.clone(), config, SharedInformers::new(client)).await
}

/// [`run_with`] on the process's shared informers (the counted resources
/// other than pods, Services and PVCs are watched by the controller's own
/// metadata monitors).
pub async fn run_shared(client: Client, config: Config, informers: SharedInformers) -> anyhow::Result<()> {
    let (queue, workers) = queue::queue::<Key>(Backoff::CONTROLLER);
    let quota_inf = informers.get::<ResourceQuota>();
    let pod_inf = informers.get::<Pod>();
    let svc_inf = informers.get::<Service>();
    let pvc_inf = informers.get::<PersistentVolumeClaim>();
    let ctl = Arc::new(Controller {
        client,
        config,
        quotas: quota_inf.store(),
        pods: pod_inf.indexed(),
        services: svc_inf.store(),
        pvcs: pvc_inf.store(),
        queue: queue.clone(),
        monitors: Mutex::new(HashMap::new()),
        monitor_tasks: Mutex::new(JoinSet::new()),
        discovery: Mutex::new((None, None)),
    });
    let mut tasks = JoinSet::new();
    let c = ctl.clone();
    tasks.spawn(quota_inf.run("resourcequotas", move |ch| c.on_quota(ch)));
    let c = ctl.clone();
    tasks.spawn(pod_inf.run("pods", move |ch| {
        let now = (c.config.clock)();
        c.on_object(ch, |p: &Pod| quota::pod_usage(p, now))
    }));
    let c = ctl.clone();
    tasks.spawn(svc_inf.run("services", move |ch| c.on_object(ch, quota::service_usage)));
    let c = ctl.clone();
    tasks.spawn(pvc_inf.run("persistentvolumeclaims", move |ch| c.on_object(ch, quota::pvc_usage)));
    let _ = tokio::join!(ctl.quotas.wait_until_ready(), ctl.pods.wait_until_ready(), ctl.services.wait_until_ready(), ctl.pvcs.wait_until_ready());
    tracing::info!("resource quota controller synced");
    {
        // The full resync (upstream's enqueueAll every sync period).
        let c = ctl.clone();
        tasks.spawn(async move {
            loop {
                for q in c.quotas.state() {
                    c.queue.add(Key::of(&*q));
                }
                tokio::time::sleep(c.config.resync).await;
            }
        });
    }
    let n = ctl.config.workers;
    let c = ctl.clone();
    tasks.spawn(kit::run_workers("resourcequota", queue, workers, n, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    }));
    let _ = tasks.join_next().await;
    anyhow::bail!("resource quota controller stopped")
}

/// Queues every quota in `ns` (upstream's replenishment).
fn enqueue_namespace(quotas: &Store<ResourceQuota>, queue: &Queue<Key>, ns: &str) {
    for q in quotas.state().into_iter().filter(|q| q.metadata.namespace.as_deref() == Some(ns)) {
        queue.add(Key::of(&*q));
    }
}

/// The resources a quota counts by number through a monitor: legacy
/// aliases and `count/` names whose usage is not content-based.
fn counted_resources(hard: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Vec<(GroupResource, String)> {
    let mut out = Vec::new();
    for name in hard.keys() {
        let gr = match name.as_str() {
            "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => Some((String::new(), name.clone())),
            n => quota::parse_object_count_name(n),
        };
        if let Some(gr) = gr
            && !quota::is_content_evaluated(&gr.0, &gr.1)
        {
            out.push((gr, name.clone()));
        }
    }
    out
}

/// The resources counted by number that need no discovery.
fn builtin_resource(gr: &GroupResource) -> Option<ApiResource> {
    if !gr.0.is_empty() {
        return None;
    }
    Some(match gr.1.as_str() {
        "configmaps" => ApiResource::erase::<ConfigMap>(&()),
        "secrets" => ApiResource::erase::<Secret>(&()),
        "replicationcontrollers" => ApiResource::erase::<ReplicationController>(&()),
        _ => return None,
    })
}

impl Controller {
    fn on_quota(&self, change: Change<ResourceQuota>) {
        match change {
            Change::Added(q) => self.queue.add(Key::of(&*q)),
            // Only a change of the limits is worth a recount; status writes
            // (ours and admission's) are not.
            Change::Updated(old, cur) => {
                let hard = |q: &ResourceQuota| quota::usage_of(q.spec.as_ref().and_then(|s| s.hard.as_ref()));
                if !quota::equals(&hard(&old), &hard(&cur)) {
                    self.queue.add(Key::of(&*cur));
                }
            }
            Change::Deleted(_) => {}
        }
    }

    /// Replenishment: deletions, and updates that change what an object
    /// consumes, in namespaces that have quotas.
    fn on_object<K: kube::Resource>(&self, change: Change<K>, usage: impl Fn(&K) -> Usage) {
        let obj = match &change {
            Change::Added(_) => return,
            Change::Deleted(o) | Change::Updated(_, o) => o,
        };
        let Some(ns) = obj.meta().namespace.as_deref() else { return };
        if !self.quotas.state().iter().any(|q| q.metadata.namespace.as_deref() == Some(ns)) {
            return;
        }
        if let Change::Updated(old, cur) = &change
            && quota::equals(&usage(old), &usage(cur))
        {
            return;
        }
        enqueue_namespace(&self.quotas, &self.queue, ns);
    }

    /// Discovery, rerun when `refresh` asks and the last run is older than
    /// the discovery period.
    async fn resource_map(&self, refresh: bool) -> Option<Arc<ResourceMap>> {
        let (cached, at) = self.discovery.lock().expect("discovery lock").clone();
        let may_run = at.map(|t| t.elapsed() >= self.config.discovery_period).unwrap_or(true);
        if !may_run || (cached.is_some() && !refresh) {
            return cached;
        }
        let found = match ResourceMap::discover(&self.client).await {
            Ok(m) => Some(Arc::new(m)),
            Err(e) => {
                tracing::warn!(error = %e, "resource quota: discovery failed");
                cached
            }
        };
        *self.discovery.lock().expect("discovery lock") = (found.clone(), Some(Instant::now()));
        found
    }

    /// The served resource for `gr`, if any.
    async fn api_resource(&self, gr: &GroupResource) -> Option<ApiResource> {
        if let Some(ar) = builtin_resource(gr) {
            return Some(ar);
        }
        let find =
            |m: &ResourceMap| m.all().iter().find(|r| r.preferred && r.namespaced && r.ar.group == gr.0 && r.ar.plural == gr.1).map(|r| r.ar.clone());
        if let Some(ar) = self.resource_map(false).await.as_deref().and_then(find) {
            return Some(ar);
        }
        // Maybe served since the last discovery (a new CRD).
        self.resource_map(true).await.as_deref().and_then(find)
    }

    /// The count of `gr` objects in `ns`: `Some` once its monitor has
    /// listed; `None` while it is starting; `Some(None)` if no served
    /// resource matches (nothing to count).
    async fn count(&self, gr: &GroupResource, ns: &str) -> Option<Option<i64>> {
        if gr.0.is_empty() && gr.1 == "resourcequotas" {
            return Some(Some(self.quotas.state().iter().filter(|q| q.metadata.namespace.as_deref() == Some(ns)).count() as i64));
        }
        let existing = self.monitors.lock().expect("monitors lock").get(gr).map(|m| m.state.clone());
        let state = match existing {
            Some(s) => s,
            None => {
                let Some(ar) = self.api_resource(gr).await else { return Some(None) };
                let mut monitors = self.monitors.lock().expect("monitors lock");
                monitors
                    .entry(gr.clone())
                    .or_insert_with(|| {
                        tracing::debug!(resource = %format!("{}.{}", gr.1, gr.0), "resource quota: starting monitor");
                        let state = Arc::new(Mutex::new(Counted::default()));
                        let task = monitor(self.client.clone(), ar, state.clone(), self.quotas.clone(), self.queue.clone());
                        self.monitor_tasks.lock().expect("monitor tasks lock").spawn(task);
                        Monitor { state }
                    })
                    .state
                    .clone()
            }
        };
        let s = state.lock().expect("monitor lock");
        s.synced.then(|| Some(s.by_namespace.get(ns).map(|n| n.len() as i64).unwrap_or(0)))
    }

    /// Upstream's `syncResourceQuota`.
    async fn sync(&self, key: &Key) -> Result<Option<Duration>, Error> {
        let Some(rq) = self.quotas.get(&key.obj_ref()) else { return Ok(None) };
        let ns = key.namespace.as_str();
        let spec_hard = rq.spec.as_ref().and_then(|s| s.hard.clone()).unwrap_or_default();
        let hard = quota::usage_of(Some(&spec_hard));
        let scopes = quota::scope_selectors(&rq);
        let now = (self.config.clock)();

        // Upstream's CalculateUsage, evaluator by evaluator.
        let mut new_usage = Usage::new();
        let mut tracked: BTreeSet<String> = BTreeSet::new();
        let mut content = |group: &str, resource: &str, items: Vec<Usage>, scoped_in: &dyn Fn(usize) -> bool| {
            let names = quota::matching_resources(group, resource, hard.keys());
            if names.is_empty() {
                return;
            }
            let mut sum: Usage = names.iter().map(|n| (n.clone(), Amount::zero())).collect();
            for (i, u) in items.iter().enumerate() {
                if scoped_in(i) {
                    sum = quota::add(&sum, u);
                }
            }
            new_usage.extend(quota::mask(&sum, &names));
            tracked.extend(names);
        };
        let pods: Vec<Arc<Pod>> = self.pods.in_namespace(ns);
        let pod_usages: Vec<Usage> = pods.iter().map(|p| quota::pod_usage(p, now)).collect();
        content("", "pods", pod_usages, &|i| scopes.iter().all(|s| quota::pod_matches_scope(s, &pods[i])));
        // Only pods have scopes: a scoped quota counts nothing else.
        let unscoped = scopes.is_empty();
        let svcs: Vec<Usage> =
            self.services.state().iter().filter(|s| s.metadata.namespace.as_deref() == Some(ns)).map(|s| quota::service_usage(s)).collect();
        content("", "services", svcs, &|_| unscoped);
        let pvcs: Vec<Usage> =
            self.pvcs.state().iter().filter(|p| p.metadata.namespace.as_deref() == Some(ns)).map(|p| quota::pvc_usage(p)).collect();
        content("", "persistentvolumeclaims", pvcs, &|_| unscoped);
        for (gr, name) in counted_resources(&spec_hard) {
            match self.count(&gr, ns).await {
                // Its monitor is still listing: look again shortly.
                None => return Ok(Some(Duration::from_millis(200))),
                // Not served: nothing to count, as upstream (no evaluator).
                Some(None) => {}
                Some(Some(n)) => {
                    new_usage.insert(name.clone(), if unscoped { Amount::count(n) } else { Amount::zero() });
                    tracked.insert(name);
                }
            }
        }

        // Keep past observations of what could not be counted; report only
        // what is limited.
        let old_status = rq.status.clone().unwrap_or_default();
        let old_used = quota::usage_of(old_status.used.as_ref());
        let mut used = old_used.clone();
        for (k, v) in quota::mask(&new_usage, &tracked) {
            used.insert(k, v);
        }
        let used = quota::mask(&used, hard.keys());
        let dirty = old_status.hard.is_none()
            || old_status.used.is_none()
            || !quota::equals(&quota::usage_of(old_status.hard.as_ref()), &hard)
            || !quota::equals(&used, &old_used);
        if !dirty {
            return Ok(None);
        }
        let mut obj = (*rq).clone();
        obj.status = Some(ResourceQuotaStatus { hard: Some(quota::to_list(&hard)), used: Some(quota::to_list(&used)) });
        let api: Api<ResourceQuota> = Api::namespaced(self.client.clone(), ns);
        // Conditioned on the cached resourceVersion: admission charging the
        // quota meanwhile makes this conflict, and the recount is redone.
        match api.replace_status(&rq.name_any(), &PostParams::default(), &obj).await {
            Ok(_) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// A metadata watch on one counted resource: keeps the names per namespace,
/// and queues the namespace's quotas when an object goes away (also one
/// found gone by a relist).
async fn monitor(client: Client, ar: ApiResource, state: Arc<Mutex<Counted>>, quotas: Store<ResourceQuota>, queue: Queue<Key>) {
    let resource = format!("{}/{}", ar.api_version, ar.plural);
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client, &ar);
    let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    let mut relist: Option<HashMap<String, BTreeSet<String>>> = None;
    let ns_name = |o: &PartialObjectMeta<DynamicObject>| (o.metadata.namespace.clone().unwrap_or_default(), o.name_any());
    while let Some(ev) = events.next().await {
        match ev {
            Ok(Event::Init) => relist = Some(HashMap::new()),
            Ok(Event::InitApply(o)) => {
                let (ns, name) = ns_name(&o);
                if let Some(r) = relist.as_mut() {
                    r.entry(ns).or_default().insert(name);
                }
            }
            Ok(Event::InitDone) => {
                let Some(listed) = relist.take() else { continue };
                let mut s = state.lock().expect("monitor lock");
                let shrunk: Vec<String> = s
                    .by_namespace
                    .iter()
                    .filter(|(ns, names)| listed.get(*ns).map(|l| names.iter().any(|n| !l.contains(n))).unwrap_or(!names.is_empty()))
                    .map(|(ns, _)| ns.clone())
                    .collect();
                s.by_namespace = listed;
                s.synced = true;
                drop(s);
                for ns in shrunk {
                    enqueue_namespace(&quotas, &queue, &ns);
                }
            }
            Ok(Event::Apply(o)) => {
                let (ns, name) = ns_name(&o);
                state.lock().expect("monitor lock").by_namespace.entry(ns).or_default().insert(name);
            }
            Ok(Event::Delete(o)) => {
                let (ns, name) = ns_name(&o);
                if let Some(names) = state.lock().expect("monitor lock").by_namespace.get_mut(&ns) {
                    names.remove(&name);
                }
                enqueue_namespace(&quotas, &queue, &ns);
            }
            Err(e) => tracing::warn!(%resource, error = %e, "resource quota monitor: watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_resources_skip_content_evaluated_ones() {
        let hard: BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity> =
            ["pods", "count/pods", "configmaps", "count/deployments.apps", "requests.cpu", "count/secrets"]
                .iter()
                .map(|n| (n.to_string(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into())))
                .collect();
        let got: Vec<(GroupResource, String)> = counted_resources(&hard);
        let names: Vec<&str> = got.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["configmaps", "count/deployments.apps", "count/secrets"]);
        assert_eq!(got[1].0, ("apps".to_string(), "deployments".to_string()));
    }
}
