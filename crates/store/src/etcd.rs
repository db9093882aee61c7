//! The etcd v3 backend, over gRPC with the `etcd-client` crate.
//!
//! Every [`Store`] operation is one etcd request; the preconditions are etcd
//! transactions, exactly as Kubernetes' own etcd3 storage does it:
//!
//! * create: `txn(create_revision(key) == 0 → put)`
//! * update: `txn(mod_revision(key) == expected ∧ create_revision(key) > 0 → put, else get)`
//! * delete: `txn([mod_revision(key) == expected ∧] create_revision(key) > 0 → delete(prev_kv), else get)`
//!
//! (The `create_revision > 0` guard keeps an update with `expected == 0` from
//! creating a missing key, since a missing key's mod revision is 0.) On a failed
//! precondition the `else` branch's read returns the current value atomically,
//! so a conflict carries what is stored now without a second round trip.
//!
//! # Compacted revision
//!
//! etcd does not expose its compaction point through the API; it only
//! answers "required revision has been compacted" for reads below it. So
//! [`Store::compacted_revision`] *probes*: a range request at revision `r`
//! fails exactly when `r` is below the compaction point, so the point is the
//! smallest readable revision, found by binary search between a known lower
//! bound and the current revision. The lower bound is the highest compaction
//! this client performed or observed (kept in memory), so the usual answer
//! costs two small requests; after a reconnect or a compaction by someone
//! else it costs O(log(revision)) of them. A compaction to revision 1 is
//! reported as 0 (nothing before revision 1 exists in etcd anyway).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse, WatchStream,
};
use tracing::{debug, info, warn};

use crate::{
    Event, EventKind, EventStream, KeyValue, ListOptions, ListResult, Result, Revision, Store,
    StoreError, prefix_end,
};

/// A [`Store`] on an etcd v3 cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// A lower bound of etcd's compaction point (see the module docs).
    compacted_floor: std::sync::Arc<AtomicI64>,
}

fn backend(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("etcd {context}: {e}"))
}

/// What an etcd error means to us.
enum ErrKind {
    Compacted,
    Future,
    Other,
}

fn classify(e: &etcd_client::Error) -> ErrKind {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let msg = status.message();
            if msg.contains("required revision has been compacted") {
                ErrKind::Compacted
            } else if msg.contains("required revision is a future revision") {
                ErrKind::Future
            } else {
                ErrKind::Other
            }
        }
        _ => ErrKind::Other,
    }
}

/// The range `[start, end)` of keys under `prefix` after `start_after`, as
/// etcd wants it (an empty key is not allowed; `end == "\0"` means "no end").
fn key_range(prefix: &str, start_after: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let mut start = prefix.as_bytes().to_vec();
    if let Some(after) = start_after {
        let mut past = after.as_bytes().to_vec();
        past.push(0);
        if past > start {
            start = past;
        }
    }
    if start.is_empty() {
        start = vec![0];
    }
    let end = prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0]);
    (start, end)
}

fn convert_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|e| backend("non-UTF-8 key", e))?
            .to_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn convert_event(e: &etcd_client::Event) -> Result<Event> {
    let kv = e
        .kv()
        .ok_or_else(|| StoreError::Backend("etcd watch event without kv".into()))?;
    let prev = e.prev_kv().map(convert_kv).transpose()?;
    match e.event_type() {
        EventType::Put => Ok(Event {
            kind: EventKind::Put,
            kv: convert_kv(kv)?,
            prev,
        }),
        EventType::Delete => {
            // etcd's delete event has only the key and the deletion's
            // revision; the deleted value comes from prev_kv (absent only if
            // it was compacted away).
            let key = kv
                .key_str()
                .map_err(|e| backend("non-UTF-8 key", e))?
                .to_owned();
            let (value, create_revision) = prev
                .as_ref()
                .map(|p| (p.value.clone(), p.create_revision))
                .unwrap_or_default();
            Ok(Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision: kv.mod_revision(),
                },
                prev,
            })
        }
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Backend("etcd response without header".into()))
}

/// The value read by a transaction's `else` branch (`get(key)`), if any.
fn else_branch_kv(resp: &etcd_client::TxnResponse) -> Result<Option<KeyValue>> {
    for op in resp.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            return get.kvs().first().map(convert_kv).transpose();
        }
    }
    Ok(None)
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`http://host:port`) and
    /// checks that it answers.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(StoreError::Backend("etcd: no endpoints given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| backend("connect", e))?;
        let store = Self {
            client,
            compacted_floor: Default::default(),
        };
        let revision = store.current_revision().await?;
        info!(?endpoints, revision, "connected to etcd");
        Ok(store)
    }

    /// The underlying client, for callers that need raw etcd access.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether a read at `revision` is still possible (not compacted).
    async fn readable(&self, revision: Revision) -> Result<bool> {
        let mut kv = self.client.kv_client();
        let opts = GetOptions::new().with_revision(revision).with_count_only();
        match kv.get(vec![0u8], Some(opts)).await {
            Ok(_) => Ok(true),
            Err(e) => match classify(&e) {
                ErrKind::Compacted => Ok(false),
                ErrKind::Future => Ok(true),
                ErrKind::Other => Err(backend("range", e)),
            },
        }
    }

    /// Maps an error of a read at `requested` into our terms.
    async fn revision_error(&self, e: etcd_client::Error, requested: Revision) -> StoreError {
        match classify(&e) {
            ErrKind::Compacted => match self.compacted_revision().await {
                Ok(compacted) => StoreError::Compacted {
                    requested,
                    compacted,
                },
                Err(probe) => probe,
            },
            ErrKind::Future => StoreError::FutureRevision(requested),
            ErrKind::Other => backend("request", e),
        }
    }

    async fn first_watch_response(ws: &mut WatchStream) -> Result<WatchResponse> {
        match ws.message().await {
            Ok(Some(resp)) => Ok(resp),
            Ok(None) => Err(StoreError::Backend(
                "etcd closed the watch stream before creating the watch".into(),
            )),
            Err(e) => Err(backend("watch", e)),
        }
    }
}

struct EtcdWatch {
    stream: WatchStream,
    queue: VecDeque<Event>,
    requested: Revision,
    done: bool,
}

impl EtcdWatch {
    /// Queues the events of `resp`; an error means the watch is over.
    fn absorb(&mut self, resp: WatchResponse) -> Result<()> {
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                return Err(StoreError::Compacted {
                    requested: self.requested,
                    compacted: resp.compact_revision(),
                });
            }
            return Err(StoreError::Backend(format!(
                "etcd canceled the watch: {}",
                resp.cancel_reason()
            )));
        }
        for e in resp.events() {
            self.queue.push_back(convert_event(e)?);
        }
        Ok(())
    }

    async fn step(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            let next = match self.stream.message().await {
                Ok(Some(resp)) => self.absorb(resp),
                Ok(None) => Err(StoreError::Backend("etcd watch stream ended".into())),
                Err(e) => Err(backend("watch", e)),
            };
            if let Err(e) = next {
                self.done = true;
                self.queue.clear();
                return Some(Err(e));
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut kv = self.client.kv_client();
        let resp = kv.get(key, None).await.map_err(|e| backend("get", e))?;
        resp.kvs().first().map(convert_kv).transpose()
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let (start, end) = key_range(prefix, opts.start_after.as_deref());
        let revision = opts.revision.filter(|r| *r > 0);
        let mut get = GetOptions::new().with_range(end.clone());
        if let Some(limit) = opts.limit.filter(|l| *l > 0) {
            get = get.with_limit(limit as i64);
        }
        if let Some(r) = revision {
            get = get.with_revision(r);
        }
        if end != [0] && start >= end {
            // `start_after` is past the prefix: nothing to list, but still
            // validate the revision like a real read would.
            get = get.with_count_only();
        }
        let mut kv = self.client.kv_client();
        let resp = match kv.get(start.clone(), Some(get)).await {
            Ok(resp) => resp,
            Err(e) => return Err(self.revision_error(e, revision.unwrap_or(0)).await),
        };
        let read_at = match revision {
            Some(r) => r,
            None => header_revision(resp.header())?,
        };
        let items = if end != [0] && start >= end {
            Vec::new()
        } else {
            resp.kvs().iter().map(convert_kv).collect::<Result<_>>()?
        };
        Ok(ListResult {
            items,
            revision: read_at,
            more: resp.more(),
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let mut kv = self.client.kv_client();
        let resp = kv.txn(txn).await.map_err(|e| backend("create", e))?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists(key.to_owned()));
        }
        header_revision(resp.header())
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        let txn = Txn::new()
            .when([
                Compare::mod_revision(key, CompareOp::Equal, expected),
                Compare::create_revision(key, CompareOp::Greater, 0),
            ])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        let mut kv = self.client.kv_client();
        let resp = kv.txn(txn).await.map_err(|e| backend("update", e))?;
        if resp.succeeded() {
            return header_revision(resp.header());
        }
        match else_branch_kv(&resp)? {
            None => Err(StoreError::NotFound(key.to_owned())),
            Some(current) => Err(StoreError::Conflict {
                key: key.to_owned(),
                expected,
                current: Some(current),
            }),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let mut when = vec![Compare::create_revision(key, CompareOp::Greater, 0)];
        if let Some(expected) = expected {
            when.push(Compare::mod_revision(key, CompareOp::Equal, expected));
        }
        let txn = Txn::new()
            .when(when)
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let mut kv = self.client.kv_client();
        let resp = kv.txn(txn).await.map_err(|e| backend("delete", e))?;
        if resp.succeeded() {
            let revision = header_revision(resp.header())?;
            for op in resp.op_responses() {
                if let TxnOpResponse::Delete(del) = op
                    && let Some(prev) = del.prev_kvs().first()
                {
                    return Ok((revision, convert_kv(prev)?));
                }
            }
            return Err(StoreError::Backend(
                "etcd delete succeeded without returning the deleted value".into(),
            ));
        }
        match else_branch_kv(&resp)? {
            None => Err(StoreError::NotFound(key.to_owned())),
            Some(current) => Err(StoreError::Conflict {
                key: key.to_owned(),
                expected: expected.unwrap_or(0),
                current: Some(current),
            }),
        }
    }

    /// An etcd watch from `after + 1` with previous values.
    ///
    /// etcd reports a compacted start revision asynchronously (a `canceled`
    /// response carrying `compact_revision`), so that is mapped to a
    /// [`StoreError::Compacted`] item on the stream; to fail the call itself
    /// as the trait promises, a cheap read at `after` is tried first, which
    /// etcd rejects exactly when `after` is below its compaction point.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<EventStream> {
        let after = after.max(0);
        if !self.readable(after.max(1)).await? {
            let compacted = self.compacted_revision().await?;
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let (start, end) = key_range(prefix, None);
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(after + 1)
            .with_prev_key();
        let mut client = self.client.watch_client();
        let mut stream = client
            .watch(start, Some(options))
            .await
            .map_err(|e| backend("watch", e))?;
        // Wait for the "created" response so errors surface here.
        let first = Self::first_watch_response(&mut stream).await?;
        let mut watch = EtcdWatch {
            stream,
            queue: VecDeque::new(),
            requested: after,
            done: false,
        };
        if let Err(e) = watch.absorb(first) {
            if let StoreError::Compacted { compacted, .. } = &e {
                self.compacted_floor
                    .fetch_max(*compacted, Ordering::Relaxed);
            }
            return Err(e);
        }
        debug!(prefix, after, "etcd watch created");
        let stream = futures::stream::unfold(watch, |mut w| async move {
            let item = w.step().await?;
            Some((item, w))
        });
        Ok(Box::pin(stream))
    }

    async fn current_revision(&self) -> Result<Revision> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(vec![0u8], Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| backend("range", e))?;
        header_revision(resp.header())
    }

    /// etcd's compaction (physical: returns once the history is gone).
    /// Compacting to a revision at or below the current compaction point is
    /// a no-op, like on the SQLite backend.
    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut kv = self.client.kv_client();
        match kv
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
        {
            Ok(_) => {
                self.compacted_floor.fetch_max(revision, Ordering::Relaxed);
                info!(revision, "compacted etcd");
                Ok(())
            }
            Err(e) => match classify(&e) {
                ErrKind::Compacted => {
                    debug!(revision, "etcd already compacted past this revision");
                    Ok(())
                }
                ErrKind::Future => Err(StoreError::FutureRevision(revision)),
                ErrKind::Other => {
                    warn!(revision, error = %e, "etcd compaction failed");
                    Err(backend("compact", e))
                }
            },
        }
    }

    /// Probed by binary search; see the module docs.
    async fn compacted_revision(&self) -> Result<Revision> {
        let floor = self.compacted_floor.load(Ordering::Relaxed);
        let low = floor.max(1);
        if self.readable(low).await? {
            // The point is at most `low` and at least `floor`.
            return Ok(floor);
        }
        // Invariant: `lo` is not readable, `hi` is.
        let (mut lo, mut hi) = (low, self.current_revision().await?);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.readable(mid).await? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        self.compacted_floor.fetch_max(hi, Ordering::Relaxed);
        Ok(hi)
    }
}
