//! The revisioned key-value store under the API server.
//!
//! One trait, [`Store`], with the semantics of etcd v3 as Kubernetes uses it:
//! a single global revision that strictly increases with every write, values
//! addressed by key, writes guarded by the key's last modification revision
//! (compare-and-swap), and watches that replay every change after a revision.
//!
//! Two backends implement it: [`sqlite::SqliteStore`] (embedded, the default)
//! and [`etcd::EtcdStore`] (a real etcd cluster). The conformance suite in
//! `tests/conformance.rs` runs against both. [`open`] picks one from a
//! configured endpoint, and [`spawn_compactor`] keeps history bounded.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;

pub mod etcd;
pub mod sqlite;

/// A global store revision. Every successful write returns a new, larger one.
pub type Revision = i64;

/// One key as stored at some revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision at which the key was (last) created.
    pub create_revision: Revision,
    /// Revision of the last write to this key. This is what the API server
    /// exposes as `metadata.resourceVersion` and what CAS compares against.
    pub mod_revision: Revision,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created (`prev` is `None`) or updated.
    Put,
    /// The key was deleted. `kv.value` holds the last value before deletion and
    /// `kv.mod_revision` is the revision of the deletion.
    Delete,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The previous value for updates and deletes, where the backend has it.
    pub prev: Option<KeyValue>,
}

#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Read at this revision; `None` means the newest.
    pub revision: Option<Revision>,
    /// At most this many keys; `None` means all.
    pub limit: Option<usize>,
    /// Only keys strictly greater than this one (for paging with `continue`).
    pub start_after: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// True when `limit` cut the list short.
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    /// The CAS precondition failed; `current` is what is stored now.
    #[error("conflict on key {key}: expected revision {expected}")]
    Conflict {
        key: String,
        expected: Revision,
        current: Option<KeyValue>,
    },
    /// The requested revision has been compacted away (HTTP 410 Gone upstream).
    #[error("required revision {requested} has been compacted (oldest available {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The requested revision is in the future.
    #[error("required revision {0} is a future revision")]
    FutureRevision(Revision),
    #[error("store backend: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The newest value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys starting with `prefix`, in key order.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult>;

    /// Create `key` if it does not exist. Returns the new revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision>;

    /// Replace `key` if its mod revision is still `expected`. Returns the new revision.
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision>;

    /// Delete `key`, guarded by `expected` when given. Returns the deletion's
    /// revision and the value that was deleted.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)>;

    /// Every change to keys under `prefix` with a revision greater than
    /// `after`, in revision order, then live changes. Fails with
    /// [`StoreError::Compacted`] when `after` is older than the compaction point.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<EventStream>;

    /// The newest revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// Drop history at and below `revision` (the newest value of each live key stays).
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The newest compacted revision (0 when nothing was compacted).
    async fn compacted_revision(&self) -> Result<Revision>;
}

/// Opens the store named by `endpoint`:
///
/// * `""` (empty): the embedded SQLite store at `data_dir/db/state.db`
///   (created with its directory when missing);
/// * `sqlite://PATH`: the embedded SQLite store at `PATH`;
/// * `http://host:2379[,http://host2:2379...]`: an etcd v3 cluster.
///
/// TLS to etcd (`https://`) is not supported yet and is rejected with a clear
/// error rather than failing later with an opaque transport error.
pub async fn open(endpoint: &str, data_dir: &Path) -> Result<Arc<dyn Store>> {
    let endpoint = endpoint.trim();
    let sqlite_path = if endpoint.is_empty() {
        Some(data_dir.join("db").join("state.db"))
    } else {
        endpoint
            .strip_prefix("sqlite://")
            .map(std::path::PathBuf::from)
    };
    if let Some(path) = sqlite_path {
        // Opening runs schema setup and fsyncs: keep it off the async workers.
        let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path))
            .await
            .map_err(|e| StoreError::Backend(format!("opening sqlite store: {e}")))??;
        return Ok(Arc::new(store));
    }
    let endpoints: Vec<String> = endpoint
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    for e in &endpoints {
        if e.starts_with("https://") {
            return Err(StoreError::Backend(format!(
                "store endpoint {e}: TLS to etcd is not supported yet"
            )));
        }
        if !e.starts_with("http://") {
            return Err(StoreError::Backend(format!(
                "unsupported store endpoint {e:?}: expected empty (embedded sqlite), \
                 sqlite://PATH or http://HOST:PORT[,http://...] (etcd)"
            )));
        }
    }
    Ok(Arc::new(etcd::EtcdStore::connect(&endpoints).await?))
}

/// Stops the background compactor started by [`spawn_compactor`] when dropped.
#[derive(Debug)]
pub struct CompactorHandle {
    task: tokio::task::JoinHandle<()>,
}

impl CompactorHandle {
    /// Stops the compactor now.
    pub fn stop(self) {}
}

impl Drop for CompactorHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Compacts `store` every `interval`, keeping the newest `retain_revisions`
/// revisions of history (what watchers that fell behind can still resume
/// from). Without this, history grows without bound.
///
/// The task holds only a weak reference: it stops by itself once the store
/// is dropped, and immediately when the returned handle is dropped.
/// Must be called inside a Tokio runtime.
pub fn spawn_compactor(
    store: &Arc<dyn Store>,
    interval: Duration,
    retain_revisions: Revision,
) -> CompactorHandle {
    let weak = Arc::downgrade(store);
    spawn_compactor_with(move || weak.upgrade(), interval, retain_revisions, || Revision::MAX)
}

/// [`spawn_compactor`], but never compacting past `floor()`: the revision
/// up to which a consumer that must not miss history (the API server's
/// watch cache) has read. A consumer that lags would otherwise find the
/// history it still needs compacted away and have to start over.
pub fn spawn_compactor_below(
    store: &Arc<dyn Store>,
    interval: Duration,
    retain_revisions: Revision,
    floor: impl Fn() -> Revision + Send + 'static,
) -> CompactorHandle {
    let weak = Arc::downgrade(store);
    spawn_compactor_with(move || weak.upgrade(), interval, retain_revisions, floor)
}

pub(crate) fn spawn_compactor_with<F>(
    upgrade: F,
    interval: Duration,
    retain_revisions: Revision,
    floor: impl Fn() -> Revision + Send + 'static,
) -> CompactorHandle
where
    F: Fn() -> Option<Arc<dyn Store>> + Send + 'static,
{
    let task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate
        loop {
            ticker.tick().await;
            let Some(store) = upgrade() else {
                tracing::debug!("store dropped; compactor exits");
                return;
            };
            if let Err(e) = compact_once_below(store.as_ref(), retain_revisions, floor()).await {
                tracing::warn!(error = %e, "periodic compaction failed");
            }
        }
    });
    CompactorHandle { task }
}

/// One step of periodic compaction: compact to `current - retain_revisions`
/// when that is newer than the last compaction. Returns the revision
/// compacted to, if any.
pub async fn compact_once(
    store: &dyn Store,
    retain_revisions: Revision,
) -> Result<Option<Revision>> {
    compact_once_below(store, retain_revisions, Revision::MAX).await
}

/// [`compact_once`], compacting to `floor` at most.
pub async fn compact_once_below(
    store: &dyn Store,
    retain_revisions: Revision,
    floor: Revision,
) -> Result<Option<Revision>> {
    let current = store.current_revision().await?;
    let target = (current - retain_revisions.max(0)).min(floor);
    if target <= 0 || target <= store.compacted_revision().await? {
        return Ok(None);
    }
    store.compact(target).await?;
    tracing::info!(revision = target, current, floor, "compacted store history");
    Ok(Some(target))
}

/// The smallest key greater than every key starting with `prefix`, or `None`
/// when there is none (empty prefix or all `0xff`): the exclusive end of a
/// prefix range, as etcd's `GetPrefixRangeEnd`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/a/"), Some(b"/a0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
