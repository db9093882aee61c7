//! client-go's shared informer, as far as the controllers need it: a
//! watcher (LIST + WATCH, retried with backoff) feeding a reflector store,
//! and a handler called with each change **after** the store has it, with
//! the previous state of updated objects (upstream's `OnAdd`/`OnUpdate`/
//! `OnDelete`). A relist after a watch restart reports what changed while
//! the watch was down: additions, updates, and deletions of objects that
//! are not listed any more.
//!
//! Handlers are synchronous and cheap: they update expectations and add
//! keys to work queues; the reconcilers read the stores.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use serde::de::DeserializeOwned;

/// One change seen by an informer.
pub enum Change<K> {
    Added(Arc<K>),
    /// The previous and the new state.
    Updated(Arc<K>, Arc<K>),
    /// The last state seen.
    Deleted(Arc<K>),
}

/// A store kept up to date by [`Informer::run`].
pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    reader: Store<K>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    pub fn new(api: Api<K>, config: watcher::Config) -> Self {
        let (reader, writer) = reflector::store();
        Informer { api, config, writer, reader }
    }

    /// The store (cheap to clone); empty until the first list completes
    /// ([`Store::wait_until_ready`]).
    pub fn store(&self) -> Store<K> {
        self.reader.clone()
    }

    /// Watches until dropped, calling `handler` with every change once the
    /// store reflects it. Watch failures are logged and retried with backoff.
    pub async fn run(self, what: &'static str, mut handler: impl FnMut(Change<K>) + Send) {
        let Informer { api, config, mut writer, reader } = self;
        let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
        let mut listed: Vec<K> = Vec::new();
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(resource = what, error = %e, "watch failed; retrying with backoff");
                    continue;
                }
            };
            match &event {
                Event::Apply(obj) => {
                    let old = reader.get(&ObjectRef::from_obj(obj));
                    writer.apply_watcher_event(&event);
                    let new = Arc::new(obj.clone());
                    handler(match old {
                        Some(old) => Change::Updated(old, new),
                        None => Change::Added(new),
                    });
                }
                Event::Delete(obj) => {
                    writer.apply_watcher_event(&event);
                    handler(Change::Deleted(Arc::new(obj.clone())));
                }
                Event::Init => {
                    listed.clear();
                    writer.apply_watcher_event(&event);
                }
                Event::InitApply(obj) => {
                    writer.apply_watcher_event(&event);
                    listed.push(obj.clone());
                }
                Event::InitDone => {
                    let mut before: HashMap<ObjectRef<K>, Arc<K>> =
                        reader.state().into_iter().map(|o| (ObjectRef::from_obj(&*o), o)).collect();
                    writer.apply_watcher_event(&event);
                    for obj in listed.drain(..) {
                        let new = Arc::new(obj);
                        match before.remove(&ObjectRef::from_obj(&*new)) {
                            Some(old) if old.meta().resource_version == new.meta().resource_version => {}
                            Some(old) => handler(Change::Updated(old, new)),
                            None => handler(Change::Added(new)),
                        }
                    }
                    for (_, gone) in before {
                        handler(Change::Deleted(gone));
                    }
                }
            }
        }
    }
}

/// `namespace/name`, upstream's queue key.
pub fn key_of<K: Resource>(obj: &K) -> String {
    let m = obj.meta();
    match &m.namespace {
        Some(ns) => format!("{ns}/{}", m.name.as_deref().unwrap_or_default()),
        None => m.name.clone().unwrap_or_default(),
    }
}

/// The store entry for `namespace/name`.
pub fn get<K>(store: &Store<K>, key: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let (ns, name) = split_key(key);
    let mut r = ObjectRef::new(name);
    if let Some(ns) = ns {
        r = r.within(ns);
    }
    store.get(&r)
}

/// `namespace/name` → (namespace, name).
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}
