//! The garbage collector (upstream's `pkg/controller/garbagecollector`).
//!
//! - **Background cascade**: an object whose every `ownerReference` points
//!   at an owner that is gone (absent, or present under that name with
//!   another uid) is deleted, with the propagation its own finalizers ask
//!   for (Background by default).
//! - **`orphan` finalizer**: an owner being deleted with it loses its
//!   dependents' references to it, then the finalizer; the API server then
//!   deletes it.
//! - **`foregroundDeletion` finalizer**: an owner being deleted with it has
//!   its dependents deleted; once those with `blockOwnerDeletion: true` are
//!   gone the finalizer is removed.
//!
//! How: discovery finds every resource that supports list, watch and
//! delete; one metadata-only watcher per resource (the monitors, each with
//! its own reflector of what it has seen, so a relist reports what vanished
//! meanwhile) feeds the [`graph`] of owners and dependents by uid; the graph
//! turns changes into [`Work`] on a deduplicating queue; workers check owners
//! with single GETs (never a LIST per event), then patch or delete. Discovery
//! is rerun periodically so resources served later are watched too.

pub mod graph;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::core::PartialObjectMeta;
use kube::core::params::Preconditions;
use kube::discovery::ApiResource;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use crate::discovery::ResourceMap;
use crate::queue::{self, Backoff, Queue};
use graph::{Change, FINALIZER_FOREGROUND, FINALIZER_ORPHAN, Graph, Identity, Node, Observed, Work};

/// Tunables; [`Config::default`] matches upstream where upstream has a number.
#[derive(Clone, Debug)]
pub struct Config {
    /// Work items processed at once (upstream `--concurrent-gc-syncs`: 20).
    pub workers: usize,
    /// How often discovery is rerun to watch newly served resources (upstream: 30s).
    pub resync: Duration,
    /// How long to wait for every monitor's first list before starting the
    /// workers anyway. Upstream waits forever; a bound keeps one broken
    /// resource from stopping all collection (owners are always re-checked
    /// with the API server, so an unsynced graph costs requests, not
    /// correctness).
    pub sync_timeout: Duration,
    /// Monitors that dependents never need: events are the bulk of all
    /// objects and never own anything (upstream's ignored resources).
    pub ignored: Vec<(String, String)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 20,
            resync: Duration::from_secs(30),
            sync_timeout: Duration::from_secs(60),
            ignored: vec![("".into(), "events".into()), ("events.k8s.io".into(), "events".into())],
        }
    }
}

/// Runs the garbage collector with the default [`Config`] until it fails.
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with(client, Config::default()).await
}

/// Runs the garbage collector until it fails. It retries API errors by
/// itself; it returns only if one of its own tasks dies.
pub async fn run_with(client: Client, config: Config) -> anyhow::Result<()> {
    let (changes_tx, mut changes_rx) = mpsc::unbounded_channel::<Change>();
    let (queue, workers) = queue::queue::<Work>(Backoff::CONTROLLER);
    let gc = Arc::new(Collector {
        client,
        graph: Mutex::new(Graph::new()),
        resources: RwLock::new(Arc::new(ResourceMap::default())),
        changes: changes_tx,
        queue: queue.clone(),
    });
    // Dropping this set (on return, or when the caller drops us) aborts
    // every task: the graph builder, the workers and all monitors.
    let mut core = JoinSet::new();
    {
        let gc = gc.clone();
        // The graph builder: the only writer of the graph, in watch order.
        core.spawn(async move {
            while let Some(change) = changes_rx.recv().await {
                let fx = gc.graph.lock().expect("graph lock").apply(change);
                for w in fx.now {
                    gc.queue.add(w);
                }
                for w in fx.rate_limited {
                    gc.queue.add_rate_limited(w);
                }
            }
        });
    }
    let mut monitors = Monitors::default();

    let mut delay = Duration::from_millis(500);
    let map = loop {
        match ResourceMap::discover(&gc.client).await {
            Ok(m) => break m,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "garbage collector: discovery failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    gc.set_resources(map);
    monitors.sync(&gc, &config);

    // Start collecting once the graph holds what exists (or the wait is over).
    let deadline = tokio::time::Instant::now() + config.sync_timeout;
    loop {
        let unsynced = monitors.unsynced();
        if unsynced.is_empty() {
            tracing::info!(resources = monitors.len(), objects = gc.graph.lock().expect("graph lock").len(), "garbage collector: all monitors synced");
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(?unsynced, "garbage collector: starting before these monitors synced");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let gc = gc.clone();
        let n = config.workers;
        core.spawn(async move {
            workers
                .run(n, move |w| {
                    let gc = gc.clone();
                    async move { gc.process(w).await }
                })
                .await
        });
    }

    let mut tick = tokio::time::interval(config.resync);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match ResourceMap::discover(&gc.client).await {
                    Ok(m) => {
                        gc.set_resources(m);
                        monitors.sync(&gc, &config);
                    }
                    Err(e) => tracing::warn!(error = %e, "garbage collector: discovery failed; keeping the current monitors"),
                }
            }
            ended = core.join_next() => {
                // The graph builder and the workers run forever.
                anyhow::bail!("garbage collector task ended unexpectedly: {ended:?}");
            }
        }
    }
}

/// One metadata watch per deletable resource.
#[derive(Default)]
struct Monitors {
    by_resource: HashMap<String, Monitor>,
    tasks: JoinSet<()>,
}

struct Monitor {
    abort: AbortHandle,
    synced: Arc<AtomicBool>,
}

fn monitor_key(ar: &ApiResource) -> String {
    format!("{}/{}", ar.api_version, ar.plural)
}

impl Monitors {
    fn len(&self) -> usize {
        self.by_resource.len()
    }

    fn unsynced(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_resource.iter().filter(|(_, m)| !m.synced.load(Ordering::Relaxed)).map(|(k, _)| k.clone()).collect();
        v.sort();
        v
    }

    /// Starts monitors for newly served resources (and restarts any that
    /// died), stops those no longer served.
    fn sync(&mut self, gc: &Arc<Collector>, config: &Config) {
        let map = gc.resources();
        let wanted: Vec<_> = map
            .deletable()
            .filter(|r| !config.ignored.iter().any(|(g, p)| *g == r.ar.group && *p == r.ar.plural))
            .cloned()
            .collect();
        let keys: HashSet<String> = wanted.iter().map(|r| monitor_key(&r.ar)).collect();
        self.by_resource.retain(|k, m| {
            let keep = keys.contains(k) && !m.abort.is_finished();
            if !keep {
                tracing::info!(resource = %k, "garbage collector: stopping monitor");
                m.abort.abort();
            }
            keep
        });
        for r in wanted {
            let key = monitor_key(&r.ar);
            if self.by_resource.contains_key(&key) {
                continue;
            }
            tracing::debug!(resource = %key, "garbage collector: starting monitor");
            let synced = Arc::new(AtomicBool::new(false));
            let abort = self.tasks.spawn(monitor(gc.client.clone(), r.ar.clone(), r.namespaced, gc.changes.clone(), synced.clone()));
            self.by_resource.insert(key, Monitor { abort, synced });
        }
        // Reap finished tasks so the set does not grow.
        while self.tasks.try_join_next().is_some() {}
    }
}

fn observed(ar: &ApiResource, namespaced: bool, meta: &ObjectMeta) -> Observed {
    Observed {
        identity: Identity {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
            namespace: if namespaced { meta.namespace.clone() } else { None },
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        },
        owners: meta.owner_references.clone().unwrap_or_default(),
        being_deleted: meta.deletion_timestamp.is_some(),
        finalizers: meta.finalizers.clone().unwrap_or_default(),
    }
}

/// Watches one resource's metadata and reports changes to the graph. Keeps
/// what it reported (its reflector), so that after a relist it can report
/// the objects deleted while it was not watching, and skip updates that
/// change nothing the graph cares about (status writes, labels...).
async fn monitor(client: Client, ar: ApiResource, namespaced: bool, changes: mpsc::UnboundedSender<Change>, synced: Arc<AtomicBool>) {
    let resource = monitor_key(&ar);
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client, &ar);
    let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    let mut known: HashMap<String, Observed> = HashMap::new();
    let mut relist: Option<HashSet<String>> = None;
    let upsert = |known: &mut HashMap<String, Observed>, obj: Observed| {
        if obj.identity.uid.is_empty() || known.get(&obj.identity.uid) == Some(&obj) {
            return;
        }
        known.insert(obj.identity.uid.clone(), obj.clone());
        let _ = changes.send(Change::Upsert(obj));
    };
    while let Some(ev) = events.next().await {
        match ev {
            Ok(Event::Init) => relist = Some(HashSet::new()),
            Ok(Event::InitApply(o)) => {
                let obj = observed(&ar, namespaced, &o.metadata);
                if let Some(seen) = relist.as_mut() {
                    seen.insert(obj.identity.uid.clone());
                }
                upsert(&mut known, obj);
            }
            Ok(Event::InitDone) => {
                if let Some(seen) = relist.take() {
                    let gone: Vec<String> = known.keys().filter(|uid| !seen.contains(*uid)).cloned().collect();
                    for uid in gone {
                        if let Some(obj) = known.remove(&uid) {
                            let _ = changes.send(Change::Delete(obj));
                        }
                    }
                }
                if !synced.swap(true, Ordering::Relaxed) {
                    tracing::debug!(%resource, objects = known.len(), "garbage collector: monitor synced");
                }
            }
            Ok(Event::Apply(o)) => upsert(&mut known, observed(&ar, namespaced, &o.metadata)),
            Ok(Event::Delete(o)) => {
                let obj = observed(&ar, namespaced, &o.metadata);
                let reported = known.remove(&obj.identity.uid);
                let _ = changes.send(Change::Delete(reported.unwrap_or(obj)));
            }
            // The watcher retries by itself, after a backoff.
            Err(e) => tracing::warn!(%resource, error = %e, "garbage collector: watch failed; retrying"),
        }
    }
}

/// Why a work item failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("the API server serves no resource for {api_version} {kind}")]
    UnknownKind { api_version: String, kind: String },
    #[error("cluster-scoped {item} names a namespaced owner ({owner_kind} {owner_name}); the reference can never resolve and is ignored")]
    NamespacedOwnerOfClusterScoped { item: Box<Identity>, owner_kind: String, owner_name: String },
    #[error("{0} kept changing under us (409 Conflict after retries)")]
    Conflict(Box<Identity>),
    #[error(transparent)]
    Api(#[from] kube::Error),
}

enum Outcome {
    Done,
    /// The item exists but no watch has reported it yet: check again later
    /// (a virtual node must not linger when its object came and went
    /// between two watches).
    NotObservedYet,
}

fn api_status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

const CONFLICT_RETRIES: usize = 5;

struct Collector {
    client: Client,
    graph: Mutex<Graph>,
    resources: RwLock<Arc<ResourceMap>>,
    changes: mpsc::UnboundedSender<Change>,
    queue: Queue<Work>,
}

impl Collector {
    fn resources(&self) -> Arc<ResourceMap> {
        self.resources.read().expect("resources lock").clone()
    }

    fn set_resources(&self, map: ResourceMap) {
        *self.resources.write().expect("resources lock") = Arc::new(map);
    }

    fn node(&self, uid: &str) -> Option<Node> {
        self.graph.lock().expect("graph lock").node(uid).cloned()
    }

    async fn process(&self, work: Work) {
        let result = match &work {
            Work::Delete(uid) => self.attempt_to_delete(uid).await,
            Work::Orphan(uid) => self.attempt_to_orphan(uid).await,
        };
        match result {
            Ok(Outcome::Done) => self.queue.forget(&work),
            Ok(Outcome::NotObservedYet) => self.queue.add_rate_limited(work),
            Err(e @ GcError::NamespacedOwnerOfClusterScoped { .. }) => {
                // Retrying cannot help; upstream records an event and drops it.
                tracing::warn!(?work, error = %e, "garbage collector: invalid owner reference");
                self.queue.forget(&work);
            }
            Err(e) => {
                let failures = self.queue.failures(&work);
                if matches!(e, GcError::UnknownKind { .. }) {
                    // Often transient: a kind served after the next discovery.
                    tracing::debug!(?work, error = %e, failures, "garbage collector: will retry");
                } else {
                    tracing::warn!(?work, error = %e, failures, "garbage collector: will retry");
                }
                self.queue.add_rate_limited(work);
            }
        }
    }

    /// An API handle for `id`'s resource; `None` if `id` cannot exist (a
    /// namespaced kind without a namespace).
    fn api(&self, id: &Identity) -> Result<Option<Api<DynamicObject>>, GcError> {
        let map = self.resources();
        let r = map
            .resolve(&id.api_version, &id.kind)
            .ok_or_else(|| GcError::UnknownKind { api_version: id.api_version.clone(), kind: id.kind.clone() })?;
        Ok(match (r.namespaced, &id.namespace) {
            (true, Some(ns)) => Some(Api::namespaced_with(self.client.clone(), ns, &r.ar)),
            (true, None) => None,
            (false, _) => Some(Api::all_with(self.client.clone(), &r.ar)),
        })
    }

    /// The live metadata of the object at `id`'s coordinates (whatever its uid).
    async fn get(&self, id: &Identity) -> Result<Option<ObjectMeta>, GcError> {
        let Some(api) = self.api(id)? else { return Ok(None) };
        Ok(api.get_metadata_opt(&id.name).await?.map(|p| p.metadata))
    }

    /// Deletes exactly the object `id` (uid precondition) with `policy`.
    async fn delete(&self, id: &Identity, policy: PropagationPolicy) -> Result<(), GcError> {
        let Some(api) = self.api(id)? else { return Ok(()) };
        tracing::info!(item = %id, ?policy, "garbage collector: deleting object");
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions { uid: Some(id.uid.clone()), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&id.name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if api_status(&e) == Some(404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Read-modify-write of `id`'s metadata: `change` returns the metadata
    /// fields to merge-patch, or `None` when nothing needs to change. The
    /// patch carries the resourceVersion it was computed from, so a
    /// concurrent write makes it fail with 409 and it is recomputed.
    async fn patch_metadata(&self, id: &Identity, change: impl Fn(&ObjectMeta) -> Option<serde_json::Value>) -> Result<(), GcError> {
        let Some(api) = self.api(id)? else { return Ok(()) };
        for _ in 0..CONFLICT_RETRIES {
            let Some(meta) = api.get_metadata_opt(&id.name).await?.map(|p| p.metadata) else { return Ok(()) };
            if meta.uid.as_deref() != Some(id.uid.as_str()) {
                // Our object is gone; another one has its name now.
                return Ok(());
            }
            let Some(mut fields) = change(&meta) else { return Ok(()) };
            fields["resourceVersion"] = json!(meta.resource_version);
            match api.patch_metadata(&id.name, &PatchParams::default(), &Patch::Merge(json!({ "metadata": fields }))).await {
                Ok(_) => return Ok(()),
                Err(e) if api_status(&e) == Some(409) => continue,
                Err(e) if api_status(&e) == Some(404) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Err(GcError::Conflict(Box::new(id.clone())))
    }

    /// Removes the references to `owner_uids` from `id`'s ownerReferences.
    async fn remove_owner_references(&self, id: &Identity, owner_uids: &[String]) -> Result<(), GcError> {
        tracing::info!(item = %id, owners = ?owner_uids, "garbage collector: removing owner references");
        self.patch_metadata(id, |meta| {
            let refs = meta.owner_references.clone().unwrap_or_default();
            let kept: Vec<OwnerReference> = refs.iter().filter(|r| !owner_uids.contains(&r.uid)).cloned().collect();
            if kept.len() == refs.len() {
                return None;
            }
            // An empty list is sent as null: merge patch then drops the field.
            Some(json!({ "ownerReferences": if kept.is_empty() { json!(null) } else { json!(kept) } }))
        })
        .await
    }

    /// Makes every reference of `id` to its owners non-blocking.
    async fn unblock_owner_references(&self, id: &Identity) -> Result<(), GcError> {
        self.patch_metadata(id, |meta| {
            let refs = meta.owner_references.clone().unwrap_or_default();
            if !refs.iter().any(|r| r.block_owner_deletion == Some(true)) {
                return None;
            }
            let unblocked: Vec<OwnerReference> = refs.into_iter().map(|r| OwnerReference { block_owner_deletion: Some(false), ..r }).collect();
            Some(json!({ "ownerReferences": unblocked }))
        })
        .await
    }

    async fn remove_finalizer(&self, id: &Identity, finalizer: &str) -> Result<(), GcError> {
        tracing::info!(item = %id, finalizer, "garbage collector: removing finalizer");
        self.patch_metadata(id, |meta| {
            let fs = meta.finalizers.clone().unwrap_or_default();
            if !fs.iter().any(|f| f == finalizer) {
                return None;
            }
            let kept: Vec<&String> = fs.iter().filter(|f| *f != finalizer).collect();
            Some(json!({ "finalizers": if kept.is_empty() { json!(null) } else { json!(kept) } }))
        })
        .await
    }

    /// Whether `reference`, as seen from `item`, points at an owner that is
    /// gone; if not, the owner's live metadata.
    async fn owner_of(&self, item: &Identity, reference: &OwnerReference) -> Result<Option<ObjectMeta>, GcError> {
        let as_cluster = Identity::of_owner(reference, None);
        let as_namespaced = Identity::of_owner(reference, item.namespace.clone());
        {
            let g = self.graph.lock().expect("graph lock");
            if g.is_absent(&as_cluster) || g.is_absent(&as_namespaced) {
                return Ok(None);
            }
        }
        let map = self.resources();
        let r = map
            .resolve(&reference.api_version, &reference.kind)
            .ok_or_else(|| GcError::UnknownKind { api_version: reference.api_version.clone(), kind: reference.kind.clone() })?;
        if item.namespace.is_none() && r.namespaced {
            return Err(GcError::NamespacedOwnerOfClusterScoped {
                item: Box::new(item.clone()),
                owner_kind: reference.kind.clone(),
                owner_name: reference.name.clone(),
            });
        }
        // A namespaced owner is looked up in its dependent's namespace; a
        // cluster-scoped one cluster-wide.
        let owner = if r.namespaced { as_namespaced } else { as_cluster };
        match self.get(&owner).await? {
            Some(meta) if meta.uid.as_deref() == Some(reference.uid.as_str()) => Ok(Some(meta)),
            _ => {
                self.graph.lock().expect("graph lock").mark_absent(owner);
                Ok(None)
            }
        }
    }

    /// Upstream's `attemptToDeleteItem`.
    async fn attempt_to_delete(&self, uid: &str) -> Result<Outcome, GcError> {
        let Some(item) = self.node(uid) else { return Ok(Outcome::Done) };
        if item.being_deleted && !item.deleting_dependents {
            // Deletion is under way; its dependents are handled when it is gone.
            return Ok(Outcome::Done);
        }
        let latest = match self.get(&item.identity).await? {
            Some(m) if m.uid.as_deref() == Some(uid) => m,
            _ => {
                // Not there (or another object under that name): it was
                // only ever known as an owner, or it went between watches.
                tracing::debug!(item = %item.identity, "garbage collector: item not found; removing it from the graph");
                let _ = self.changes.send(Change::VirtualDelete(item.identity.clone()));
                return Ok(Outcome::Done);
            }
        };
        if item.deleting_dependents {
            self.process_deleting_dependents(&item).await?;
            return Ok(Outcome::Done);
        }
        let references = latest.owner_references.clone().unwrap_or_default();
        if references.is_empty() {
            return Ok(if item.observed { Outcome::Done } else { Outcome::NotObservedYet });
        }

        let (mut solid, mut dangling, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
        for r in &references {
            match self.owner_of(&item.identity, r).await? {
                None => dangling.push(r.uid.clone()),
                Some(owner) => {
                    let fg = owner.finalizers.as_ref().map(|f| f.iter().any(|x| x == FINALIZER_FOREGROUND)).unwrap_or(false);
                    if owner.deletion_timestamp.is_some() && fg {
                        waiting.push(r.uid.clone());
                    } else {
                        solid.push(r.uid.clone());
                    }
                }
            }
        }
        tracing::debug!(item = %item.identity, ?solid, ?dangling, ?waiting, "garbage collector: classified owner references");

        if !solid.is_empty() {
            // Kept alive by a live owner. References to owners that are gone,
            // or that wait for their dependents to go, are dropped (else
            // those owners would wait for this object forever).
            if !dangling.is_empty() || !waiting.is_empty() {
                let uids: Vec<String> = dangling.into_iter().chain(waiting).collect();
                self.remove_owner_references(&item.identity, &uids).await?;
            }
        } else if !waiting.is_empty() && !item.dependents.is_empty() {
            // An owner deletes in the foreground and this object owns
            // others: cascade the foreground deletion through it. If one of
            // its dependents waits on its own dependents too, unblock first
            // to avoid a cycle of objects waiting on each other.
            let deps = self.graph.lock().expect("graph lock").dependents(uid);
            if deps.iter().any(|d| d.deleting_dependents) {
                self.unblock_owner_references(&item.identity).await?;
            }
            self.delete(&item.identity, PropagationPolicy::Foreground).await?;
        } else {
            // Every owner is gone or deleting in the foreground: collect it,
            // honouring a deletion mode its own finalizers already ask for.
            let has = |f: &str| latest.finalizers.as_ref().map(|fs| fs.iter().any(|x| x == f)).unwrap_or(false);
            let policy = if has(FINALIZER_ORPHAN) {
                PropagationPolicy::Orphan
            } else if has(FINALIZER_FOREGROUND) {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            };
            self.delete(&item.identity, policy).await?;
        }
        Ok(if item.observed { Outcome::Done } else { Outcome::NotObservedYet })
    }

    /// An owner deleting in the foreground: done when no dependent blocks it.
    async fn process_deleting_dependents(&self, item: &Node) -> Result<(), GcError> {
        let blocking = self.graph.lock().expect("graph lock").blocking_dependents(&item.identity.uid);
        if blocking.is_empty() {
            return self.remove_finalizer(&item.identity, FINALIZER_FOREGROUND).await;
        }
        tracing::debug!(item = %item.identity, blocking = blocking.len(), "garbage collector: waiting for blocking dependents");
        for d in blocking.iter().filter(|d| !d.deleting_dependents) {
            self.queue.add(Work::Delete(d.identity.uid.clone()));
        }
        Ok(())
    }

    /// Upstream's `attemptToOrphanWorker`.
    async fn attempt_to_orphan(&self, uid: &str) -> Result<Outcome, GcError> {
        let Some(owner) = self.node(uid) else { return Ok(Outcome::Done) };
        let dependents = self.graph.lock().expect("graph lock").dependents(uid);
        tracing::info!(owner = %owner.identity, dependents = dependents.len(), "garbage collector: orphaning dependents");
        let owner_uid = [uid.to_string()];
        // A few at a time: one GET and one PATCH each.
        let patches: Vec<_> = dependents.iter().map(|d| self.remove_owner_references(&d.identity, &owner_uid)).collect();
        let results: Vec<Result<(), GcError>> = futures::stream::iter(patches).buffer_unordered(8).collect().await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return Err(e);
        }
        self.remove_finalizer(&owner.identity, FINALIZER_ORPHAN).await?;
        Ok(Outcome::Done)
    }
}
