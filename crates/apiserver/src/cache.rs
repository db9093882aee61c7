//! The watch cache: every object of the cluster in memory, fed by one store
//! watch, so that LIST and WATCH never touch the store.
//!
//! Like upstream's cacher, it keeps the newest version of each key and a ring
//! of recent events. A watch from revision N replays the ring after N and then
//! follows live events; when N fell off the ring, it gets 410 Gone. Pods are
//! also indexed by `spec.nodeName`, because every kubelet lists and watches
//! only its own pods.
//!
//! Objects are kept compact, as an [`Entry`]: the JSON as served plus what
//! selectors read. A pod is about 4 KB of JSON but 34 KB as a
//! `serde_json::Value` (measured: 8.7x, in 328 allocations), and the cache
//! holds every object plus up to 100,000 superseded versions in the ring, so
//! Values cost the server about 100 KB per pod at 50,000 pods. Readers that
//! need a Value (GET, writes, tables, conversions) parse one; LIST and WATCH
//! in plain JSON copy the bytes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch, RwLock};
use tug_store::{EventKind, ListOptions, Revision, Store};

/// How many recent events the ring keeps for watch resumption.
const RING_CAPACITY: usize = 100_000;
/// Most store events applied under one write lock.
const APPLY_BATCH: usize = 256;

/// A store event decoded for the cache (see [`WatchCache::prepare`]).
struct Prepared {
    ev: tug_store::Event,
    kind: &'static str,
    put: Option<Arc<Entry>>,
}

/// Live event fan-out buffer per resource; a watcher that falls this far
/// behind is ended (the client re-watches from the ring or re-lists), never
/// silently skipped past.
const BROADCAST_CAPACITY: usize = 16_384;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
}

impl WatchEventType {
    pub fn as_str(&self) -> &'static str {
        match self {
            WatchEventType::Added => "ADDED",
            WatchEventType::Modified => "MODIFIED",
            WatchEventType::Deleted => "DELETED",
        }
    }
}

/// What label and field selectors read from one object, extracted once so
/// that filtering never parses the object.
#[derive(Debug, Default, PartialEq)]
pub struct Selectable {
    labels: Option<Map<String, Value>>,
    /// The kind's selectable fields that have a non-empty value.
    fields: Box<[(&'static str, Box<str>)]>,
}

impl Selectable {
    pub fn of(kind: &str, obj: &Value) -> Selectable {
        let labels = tug_api::meta::labels(obj).filter(|l| !l.is_empty()).cloned();
        let fields = tug_api::selectors::selectable_field_names(kind)
            .iter()
            .filter_map(|f| {
                let v = tug_api::selectors::field_value(kind, obj, f)?;
                (!v.is_empty()).then(|| (*f, v.into_boxed_str()))
            })
            .collect();
        Selectable { labels, fields }
    }

    pub fn labels(&self) -> Option<&Map<String, Value>> {
        self.labels.as_ref()
    }

    /// The field's value as a field selector compares it ("" when unset).
    pub fn field(&self, name: &str) -> String {
        self.fields.iter().find(|(f, _)| *f == name).map(|(_, v)| v.to_string()).unwrap_or_default()
    }
}

/// The members of a JSON object in order, their values unparsed.
struct RawMembers<'a>(Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for RawMembers<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = RawMembers<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(k) = map.next_key::<Key<'de>>()? {
                    members.push((k.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(RawMembers(members))
            }
        }
        d.deserialize_map(Members)
    }
}

/// An object key, borrowed unless it has escapes.
struct Key<'a>(std::borrow::Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// What field selectors can read of one top-level member (`spec`,
/// `status`, ...): its scalar members, and the arrays or objects a
/// selectable field names (`status.podIPs`). Everything else (a pod's
/// containers, volumes, conditions) is skipped unparsed: the selectors'
/// paths end at the second level, apart from the first entry of a named
/// list.
fn selectable_part(fields: &[&str], member: &str, raw: &RawValue) -> Option<Value> {
    if !raw.get().starts_with('{') {
        return serde_json::from_str(raw.get()).ok();
    }
    let inner: RawMembers = serde_json::from_str(raw.get()).ok()?;
    let mut part = Map::new();
    for (k, v) in &inner.0 {
        let text = v.get();
        let scalar = !(text.starts_with('{') || text.starts_with('['));
        let named = fields.iter().any(|f| f.split_once('.') == Some((member, k.as_ref())));
        if scalar || named {
            part.insert(k.to_string(), serde_json::from_str(text).ok()?);
        }
    }
    Some(Value::Object(part))
}

/// One version of one object: its JSON as served (resourceVersion set) and
/// its selectable fields.
#[derive(Debug)]
pub struct Entry {
    pub revision: Revision,
    /// Valid JSON, by construction: encoded here, or stored text that
    /// parsed with a member spliced in (so not validated again, which
    /// `RawValue` would do on every write).
    json: Box<str>,
    pub selectable: Selectable,
}

impl Entry {
    pub fn new(kind: &str, obj: &Value, revision: Revision) -> Entry {
        let json = serde_json::to_string(obj).expect("JSON values serialize").into_boxed_str();
        Entry { revision, json, selectable: Selectable::of(kind, obj) }
    }

    /// The entry of an object as the store holds it (no resourceVersion),
    /// served at `revision`. The same as [`Entry::new`] of
    /// [`decode_stored`], without parsing the whole object and encoding it
    /// again: the JSON text is the stored text with the resourceVersion
    /// spliced into its metadata, and the selectable fields come from the
    /// parts of the object that can hold them (not managedFields, not a
    /// Node's status, not a ConfigMap's data). Every write of every
    /// resource passes through here.
    pub fn from_stored(kind: &str, stored: &[u8], revision: Revision) -> Option<Entry> {
        let text = std::str::from_utf8(stored).ok()?;
        let top: RawMembers = serde_json::from_str(text).ok()?;
        let fields = tug_api::selectors::selectable_field_names(kind);
        let mut skeleton = Map::new();
        // Where the resourceVersion goes: just inside metadata's brace.
        let mut splice: Option<(usize, bool)> = None;
        for (k, raw) in &top.0 {
            if k == "metadata" && raw.get().starts_with('{') {
                let meta: RawMembers = serde_json::from_str(raw.get()).ok()?;
                if meta.0.iter().any(|(mk, _)| mk == "resourceVersion") {
                    // Not how objects are stored; take the long way.
                    return Self::rebuilt(kind, text, revision);
                }
                let mut meta_skeleton = Map::new();
                for (mk, mv) in &meta.0 {
                    if matches!(mk.as_ref(), "name" | "namespace" | "labels") {
                        meta_skeleton.insert(mk.to_string(), serde_json::from_str(mv.get()).ok()?);
                    }
                }
                skeleton.insert("metadata".into(), Value::Object(meta_skeleton));
                // The member's text is a slice of `text`: its offset is where it starts.
                let at = raw.get().as_ptr() as usize - text.as_ptr() as usize + 1;
                splice = Some((at, !meta.0.is_empty()));
                continue;
            }
            // Events are small and their fields have aliases across members.
            if kind == "Event" {
                skeleton.insert(k.to_string(), serde_json::from_str(raw.get()).ok()?);
            } else if fields.iter().any(|f| f.split('.').next() == Some(k.as_ref())) {
                skeleton.insert(k.to_string(), selectable_part(fields, k, raw)?);
            }
        }
        let rv = revision.to_string();
        let json = match splice {
            Some((at, non_empty)) => {
                let mut json = String::with_capacity(text.len() + rv.len() + 24);
                json.push_str(&text[..at]);
                json.push_str("\"resourceVersion\":\"");
                json.push_str(&rv);
                json.push('"');
                if non_empty {
                    json.push(',');
                }
                json.push_str(&text[at..]);
                json
            }
            // No metadata object: the served form gains one, at the front.
            None => return Self::rebuilt(kind, text, revision),
        };
        Some(Entry { revision, json: json.into_boxed_str(), selectable: Selectable::of(kind, &Value::Object(skeleton)) })
    }

    /// [`Entry::from_stored`] for the odd stored object (no metadata object,
    /// or one that carries a resourceVersion): parsed whole.
    fn rebuilt(kind: &str, text: &str, revision: Revision) -> Option<Entry> {
        Some(Entry::new(kind, &decode_stored(text.as_bytes(), revision)?, revision))
    }

    /// The object as JSON text.
    pub fn bytes(&self) -> &[u8] {
        self.json.as_bytes()
    }

    /// The object, parsed.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.json).expect("the cache's own encoding parses")
    }

    /// The parts of the object `T` declares, parsed; the rest is skipped
    /// without building values (admission reads one or two fields of a
    /// namespace or a PriorityClass on every create).
    pub fn parse<'a, T: serde::Deserialize<'a>>(&'a self) -> Option<T> {
        serde_json::from_str(&self.json).ok()
    }
}

/// One change, with the object as served (resourceVersion filled in).
#[derive(Debug)]
pub struct CacheEvent {
    pub kind: WatchEventType,
    pub key: String,
    pub revision: Revision,
    pub object: Arc<Entry>,
    /// The version this change replaced (for selectors: an update that
    /// leaves a watcher's selection is a DELETED for it).
    pub prev: Option<Arc<Entry>>,
    /// The object as metadata only, encoded once for every metadata-only
    /// watcher (the garbage collector watches every resource this way).
    pub encoded_partial: std::sync::OnceLock<bytes::Bytes>,
}

impl CacheEvent {
    pub fn encoded_partial(&self) -> &bytes::Bytes {
        self.encoded_partial.get_or_init(|| {
            let obj = self.object.value();
            let partial = serde_json::json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata"),
            });
            bytes::Bytes::from(serde_json::to_vec(&partial).expect("JSON values serialize"))
        })
    }
}

#[derive(Clone)]
pub struct CachedObject {
    pub revision: Revision,
    pub object: Arc<Value>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Arc<Entry>>,
    ring: VecDeque<Arc<CacheEvent>>,
    /// Pods by `spec.nodeName` ("" for unbound): key sets.
    pods_by_node: HashMap<String, HashSet<String>>,
    revision: Revision,
    /// The live fan-out. Part of the state so that a reload replaces it:
    /// dropping the old senders ends every watch that was following the
    /// state the reload threw away.
    channels: Channels,
}

/// One fan-out channel per resource (by storage key prefix), so that an
/// event wakes only the watchers of its resource: with the garbage
/// collector watching every resource, a single channel would wake dozens
/// of watchers per write.
struct Channels {
    by_prefix: Vec<(String, broadcast::Sender<Arc<CacheEvent>>)>,
    /// Keys that belong to no served resource.
    other: broadcast::Sender<Arc<CacheEvent>>,
}

impl Default for Channels {
    fn default() -> Channels {
        let mut prefixes: Vec<String> = tug_api::RESOURCES.iter().map(|r| r.key_prefix()).collect();
        prefixes.sort();
        prefixes.dedup();
        let by_prefix = prefixes.into_iter().map(|p| (p, broadcast::channel(BROADCAST_CAPACITY).0)).collect();
        Channels { by_prefix, other: broadcast::channel(BROADCAST_CAPACITY).0 }
    }
}

impl Channels {
    /// The channel of the resource a key (or a watcher's key prefix) belongs to.
    fn of(&self, key: &str) -> &broadcast::Sender<Arc<CacheEvent>> {
        self.by_prefix.iter().find(|(p, _)| key.starts_with(p.as_str())).map(|(_, c)| c).unwrap_or(&self.other)
    }
}

impl State {
    /// The objects whose keys start with `prefix`, in key order.
    fn under(&self, prefix: &str) -> Vec<Arc<Entry>> {
        self.objects.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v.clone()).collect()
    }
}

pub struct WatchCache {
    state: RwLock<State>,
    /// The kind stored under each resource's key prefix (for its selectable
    /// fields).
    kinds: Vec<(String, &'static str)>,
    revision_tx: watch::Sender<Revision>,
}

/// Decodes a stored value into the served object with its resourceVersion.
pub fn decode_stored(value: &[u8], revision: Revision) -> Option<Value> {
    let mut obj: Value = serde_json::from_slice(value).ok()?;
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(revision.to_string()));
    }
    Some(obj)
}

/// Allocation bookkeeping (`/registry/ranges/`) lives beside objects but is not one.
fn is_object_key(key: &str) -> bool {
    !key.starts_with("/registry/ranges/")
}

fn is_pod_key(key: &str) -> bool {
    key.starts_with("/registry/pods/")
}

fn node_of(entry: &Entry) -> String {
    entry.selectable.field("spec.nodeName")
}

impl WatchCache {
    /// Lists everything under `/registry/` and starts following the store.
    pub async fn start(store: Arc<dyn Store>) -> anyhow::Result<Arc<WatchCache>> {
        let kinds = tug_api::RESOURCES.iter().map(|r| (r.key_prefix(), r.kind)).collect();
        let (revision_tx, _) = watch::channel(0);
        let cache = Arc::new(WatchCache { state: RwLock::new(State::default()), kinds, revision_tx });
        let start = cache.load(&store).await?;
        let follower = cache.clone();
        // Its own thread: on a busy server the follower would be one task
        // among thousands of request tasks, and a cache that falls behind
        // the writers stalls every consistent read and watch. A thread
        // competes with the runtime's workers as an equal.
        std::thread::Builder::new()
            .name("watch-cache".into())
            .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(follower.follow(store, start)),
                Err(e) => tracing::error!(error = %e, "watch cache: cannot start its runtime"),
            })
            .context("starting the watch cache thread")?;
        Ok(cache)
    }

    async fn load(&self, store: &Arc<dyn Store>) -> anyhow::Result<Revision> {
        let mut state = self.state.write().await;
        // Under the lock for the whole load: a reload drops the old objects,
        // ring and channels (ending their watches) and nobody reads between.
        *state = State::default();
        let mut start_after = None;
        let mut revision = None;
        loop {
            let page = store
                .list("/registry/", ListOptions { revision, limit: Some(10_000), start_after: start_after.clone() })
                .await?;
            revision = Some(page.revision);
            for kv in page.items.iter().filter(|kv| is_object_key(&kv.key)) {
                if let Some(entry) = Entry::from_stored(self.kind_of(&kv.key), &kv.value, kv.mod_revision) {
                    if is_pod_key(&kv.key) {
                        state.pods_by_node.entry(node_of(&entry)).or_default().insert(kv.key.clone());
                    }
                    state.objects.insert(kv.key.clone(), Arc::new(entry));
                }
            }
            start_after = page.items.last().map(|kv| kv.key.clone());
            if !page.more {
                break;
            }
        }
        let rev = revision.unwrap_or(0);
        state.revision = rev;
        self.revision_tx.send_replace(rev);
        Ok(rev)
    }

    /// Follows the store forever; on a broken watch, resumes from the last
    /// revision seen (or reloads everything when that was compacted).
    async fn follow(self: Arc<Self>, store: Arc<dyn Store>, mut from: Revision) {
        use futures::FutureExt;
        loop {
            match store.watch("/registry/", from).await {
                Ok(mut stream) => {
                    while let Some(first) = stream.next().await {
                        // Take whatever else is ready too, and apply it under
                        // one lock: under load the cache must outpace the
                        // writers, or it lags further and further.
                        let mut batch = vec![first];
                        while batch.len() < APPLY_BATCH {
                            match stream.next().now_or_never() {
                                Some(Some(item)) => batch.push(item),
                                _ => break,
                            }
                        }
                        let mut failed = None;
                        let mut prepared = Vec::with_capacity(batch.len());
                        for item in batch {
                            match item {
                                Ok(ev) => {
                                    from = ev.kv.mod_revision;
                                    prepared.push(self.prepare(ev));
                                }
                                Err(e) => {
                                    failed = Some(e);
                                    break;
                                }
                            }
                        }
                        self.apply(prepared).await;
                        if let Some(e) = failed {
                            tracing::warn!(error = %e, "watch cache: store watch failed");
                            break;
                        }
                    }
                }
                Err(tug_store::StoreError::Compacted { .. }) => {
                    tracing::warn!("watch cache fell behind compaction; reloading");
                    match self.reload(&store).await {
                        Ok(rev) => from = rev,
                        Err(e) => tracing::error!(error = %e, "watch cache reload failed"),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watch cache: cannot watch store"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts over from a fresh LIST (the store compacted history the cache
    /// had not read). Every current watch ends, with 410 Gone, because the
    /// events it missed are gone; readers never see a half-loaded state.
    pub(crate) async fn reload(&self, store: &Arc<dyn Store>) -> anyhow::Result<Revision> {
        self.load(store).await
    }

    /// Decodes and encodes a store event, outside the lock (readers wait on it).
    fn prepare(&self, ev: tug_store::Event) -> Prepared {
        let revision = ev.kv.mod_revision;
        let kind = self.kind_of(&ev.kv.key);
        let put = match ev.kind {
            EventKind::Put if is_object_key(&ev.kv.key) => match Entry::from_stored(kind, &ev.kv.value, revision) {
                Some(entry) => Some(Arc::new(entry)),
                None => {
                    tracing::error!(key = %ev.kv.key, "undecodable object in store");
                    None
                }
            },
            _ => None,
        };
        Prepared { ev, kind, put }
    }

    async fn apply(&self, batch: Vec<Prepared>) {
        let mut state = self.state.write().await;
        for p in batch {
            self.apply_one(&mut state, p);
        }
        self.revision_tx.send_replace(state.revision);
    }

    fn apply_one(&self, state: &mut State, p: Prepared) {
        let Prepared { ev, kind, put } = p;
        let revision = ev.kv.mod_revision;
        let key = ev.kv.key.clone();
        if revision <= state.revision {
            return;
        }
        let skip = !is_object_key(&key) || (ev.kind == EventKind::Put && put.is_none());
        if skip {
            state.revision = revision;
            return;
        }
        let prev = state.objects.get(&key).cloned();
        if is_pod_key(&key) {
            if let Some(p) = &prev {
                if let Some(set) = state.pods_by_node.get_mut(&node_of(p)) {
                    set.remove(&key);
                }
            }
        }
        let event = match put {
            Some(obj) => {
                if is_pod_key(&key) {
                    state.pods_by_node.entry(node_of(&obj)).or_default().insert(key.clone());
                }
                state.objects.insert(key.clone(), obj.clone());
                let kind = if prev.is_some() { WatchEventType::Modified } else { WatchEventType::Added };
                CacheEvent { kind, key, revision, object: obj, prev, encoded_partial: Default::default() }
            }
            None => {
                state.objects.remove(&key);
                // The deleted object is served with the deletion's revision.
                let last = prev.as_ref().map(|p| p.value()).or_else(|| decode_stored(&ev.kv.value, revision));
                let mut obj = last.unwrap_or(Value::Null);
                if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("resourceVersion".into(), Value::String(revision.to_string()));
                }
                let object = Arc::new(Entry::new(kind, &obj, revision));
                CacheEvent { kind: WatchEventType::Deleted, key, revision, object, prev, encoded_partial: Default::default() }
            }
        };
        let event = Arc::new(event);
        if state.ring.len() >= RING_CAPACITY {
            state.ring.pop_front();
        }
        state.ring.push_back(event.clone());
        state.revision = revision;
        // Send while holding the lock so that subscribers that read the ring
        // under the lock see each event exactly once.
        let _ = state.channels.of(&event.key).send(event);
    }

    /// The kind stored under a key ("" for keys of no served resource).
    fn kind_of(&self, key: &str) -> &'static str {
        self.kinds.iter().find(|(p, _)| key.starts_with(p.as_str())).map(|(_, k)| *k).unwrap_or("")
    }


    pub fn revision(&self) -> Revision {
        *self.revision_tx.borrow()
    }

    /// Waits until the cache has seen `revision` (read-your-writes).
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.revision_tx.subscribe();
        let wait = rx.wait_for(|r| *r >= revision);
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(_)))
    }

    /// The object under `key`, parsed.
    pub async fn get(&self, key: &str) -> Option<CachedObject> {
        let entry = self.state.read().await.objects.get(key).cloned()?;
        Some(CachedObject { revision: entry.revision, object: Arc::new(entry.value()) })
    }

    /// The newest version of one object, unparsed.
    pub async fn entry(&self, key: &str) -> Option<Arc<Entry>> {
        self.state.read().await.objects.get(key).cloned()
    }

    /// Objects under `prefix` in key order, parsed, and the cache revision.
    /// For small collections (quota, priority classes, budgets); LIST uses
    /// [`entries`](Self::entries).
    pub async fn list(&self, prefix: &str) -> (Vec<Arc<Value>>, Revision) {
        let (entries, rev) = self.entries(prefix).await;
        (entries.iter().map(|e| Arc::new(e.value())).collect(), rev)
    }

    /// Objects under `prefix` in key order, as cached, and the cache revision.
    pub async fn entries(&self, prefix: &str) -> (Vec<Arc<Entry>>, Revision) {
        let state = self.state.read().await;
        (state.under(prefix), state.revision)
    }

    /// Pods bound to `node` (or unbound, for ""), through the index.
    pub async fn pods_on_node(&self, prefix: &str, node: &str) -> (Vec<Arc<Entry>>, Revision) {
        let state = self.state.read().await;
        let mut keys: Vec<&String> = state
            .pods_by_node
            .get(node)
            .map(|s| s.iter().filter(|k| k.starts_with(prefix)).collect())
            .unwrap_or_default();
        keys.sort();
        let items = keys.iter().filter_map(|k| state.objects.get(*k)).cloned().collect();
        (items, state.revision)
    }

    pub async fn count(&self, prefix: &str) -> usize {
        let state = self.state.read().await;
        state.objects.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)).count()
    }

    /// Events after `revision` from the ring plus a live receiver, with no
    /// gap and no duplicate. `Err(oldest)` when `revision` is older than the ring.
    pub async fn watch_from(
        &self,
        prefix: &str,
        revision: Revision,
    ) -> Result<(Vec<Arc<CacheEvent>>, broadcast::Receiver<Arc<CacheEvent>>), Revision> {
        let state = self.state.read().await;
        let rx = state.channels.of(prefix).subscribe();
        let oldest = state.ring.front().map(|e| e.revision).unwrap_or(state.revision + 1);
        if revision < state.revision && revision + 1 < oldest {
            return Err(oldest - 1);
        }
        let replay = state.ring.iter().filter(|e| e.revision > revision && e.key.starts_with(prefix)).cloned().collect();
        Ok((replay, rx))
    }

    /// A snapshot of current objects under `prefix` plus a live receiver from that point.
    pub async fn snapshot_and_subscribe(
        &self,
        prefix: &str,
    ) -> (Vec<Arc<Entry>>, Revision, broadcast::Receiver<Arc<CacheEvent>>) {
        let state = self.state.read().await;
        let rx = state.channels.of(prefix).subscribe();
        (state.under(prefix), state.revision, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The entry built from the stored text equals the one built by parsing
    /// the whole object: same JSON (as a value), same selectable fields.
    #[test]
    fn entries_from_stored_text_match_parsed_entries() {
        let objects = [
            ("Pod", json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "web", "we\"ird": "x"},
                             "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
                "spec": {"nodeName": "n1", "restartPolicy": "Always", "serviceAccount": "sa", "hostNetwork": true},
                "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]}})),
            ("Pod", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q", "namespace": "ns", "resourceVersion": "3"}, "spec": {}})),
            // What the selectors skip (containers, conditions) and what they
            // read below the second level (the first pod IP), an escaped key.
            ("Pod", json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "r", "namespace": "ns", "annotations": {"a\\b\"c": "\u{e9}"}},
                "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}],
                         "serviceAccountName": "", "serviceAccount": "legacy", "schedulerName": "s", "hostNetwork": false,
                         "tolerations": [{"key": "k", "operator": "Exists"}], "affinity": {"nodeAffinity": {}}},
                "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
                           "podIPs": [{"ip": "10.1.0.9"}, {"ip": "fd00::9"}], "nominatedNodeName": "n2"}})),
            ("Pod", json!({"metadata": {}, "kind": "Pod", "spec": {"nodeName": "n3"}})),
            ("Pod", json!({"kind": "Pod", "spec": {"nodeName": "n3"}, "metadata": {"name": "late"}})),
            ("Service", json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "d"},
                "spec": {"clusterIP": "10.43.0.10", "type": "ClusterIP", "ports": [{"port": 53}]}})),
            ("Node", json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {}},
                "spec": {"unschedulable": true}, "status": {"capacity": {"cpu": "4"}}})),
            ("ConfigMap", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}, "data": {"k": "v"}})),
            ("Secret", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "d"}, "type": "Opaque"})),
            ("Event", json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "d"},
                "involvedObject": {"kind": "Pod", "name": "p", "namespace": "d"}, "reason": "Scheduled",
                "source": {"component": "default-scheduler"}, "type": "Normal"})),
            ("ReplicaSet", json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r", "namespace": "d"}, "status": {"replicas": 3}})),
            ("Job", json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "d"}, "status": {"succeeded": 1}})),
            ("ConfigMap", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": "not an object"})),
            ("ConfigMap", json!({"apiVersion": "v1", "kind": "ConfigMap"})),
        ];
        for (kind, obj) in objects {
            let stored = serde_json::to_vec(&obj).unwrap();
            let parsed = Entry::new(kind, &decode_stored(&stored, 42).unwrap(), 42);
            let fast = Entry::from_stored(kind, &stored, 42).expect("stored JSON decodes");
            assert_eq!(fast.value(), parsed.value(), "{obj}");
            assert_eq!(fast.selectable, parsed.selectable, "{obj}");
            assert_eq!(fast.revision, 42);
        }
        assert!(Entry::from_stored("Pod", b"{not json", 1).is_none());
        assert!(decode_stored(b"{not json", 1).is_none());
    }
}
