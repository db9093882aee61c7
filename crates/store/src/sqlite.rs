//! The embedded backend: a revisioned key-value log in one SQLite file.
//!
//! # Layout
//!
//! Like k3s's kine, every write appends one row to the `kv` table and the
//! row's `INTEGER PRIMARY KEY AUTOINCREMENT` id *is* the global revision.
//! A key's newest row gives its value and `mod_revision`; a row with
//! `deleted = 1` is a deletion marker. `created = 1` marks the row that
//! (re)created the key, `create_revision` is copied forward on updates, and
//! `prev_revision` points at the previous row of the same key so watch replay
//! can return previous values with a join instead of storing them twice.
//! `AUTOINCREMENT` (rather than a plain rowid) guarantees that revisions are
//! never reused, even after compaction has removed the newest row.
//!
//! Keys are stored as BLOBs so comparisons are plain `memcmp`: key order and
//! prefix ranges behave exactly like etcd's byte-wise order.
//!
//! # Writes: one writer thread, group commit
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` (needed so
//! an acknowledged write survives `kill -9` and power loss) every commit costs
//! an fsync. Letting each request commit on its own serialises callers behind
//! one fsync each. Instead a single thread owns the only writing connection,
//! takes requests from a channel, and **group-commits**: it drains everything
//! queued, applies each request (with its compare-and-swap check) inside one
//! transaction — a request whose check fails, fails alone — and commits once.
//! Under load, N concurrent writers cost one fsync, not N. Only after the
//! commit are events published to watchers (in revision order) and callers
//! answered, so nobody observes a write that could still be rolled back.
//!
//! # Reads
//!
//! Reads use a small pool of separate read-only connections on blocking
//! threads. In WAL mode readers see a consistent snapshot and never wait for
//! the writer, so a long list does not stall writes and vice versa.
//!
//! # Compaction and the WAL bound
//!
//! [`Store::compact`] removes rows at or below the target that are superseded
//! by a newer row (at or below the target, so the state *at* the target stays
//! readable) plus deletion markers at or below it, and records the target in
//! the `meta` table so reads of older revisions fail with
//! [`StoreError::Compacted`]. It runs on the writer thread in chunks of a few
//! hundred rows, interleaved with normal write batches, so a large compaction
//! does not stall writers. Afterwards free pages are released
//! (`auto_vacuum=INCREMENTAL`) and the WAL is checkpointed with `TRUNCATE`.
//! A WAL file is only ever reset, never shrunk, by normal checkpoints; kine
//! left this to chance and users saw WAL files of tens to hundreds of GB. Here
//! `journal_size_limit` caps what is kept after each reset and the explicit
//! truncating checkpoint returns the file to zero bytes after compaction.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, info, warn};

use crate::{
    CompactorHandle, Event, EventKind, EventStream, KeyValue, ListOptions, ListResult, Result,
    Revision, Store, StoreError, prefix_end,
};

/// Tuning knobs for [`SqliteStore`]. The defaults suit an API server.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// Live events buffered per watcher before a watcher that does not keep up
    /// is ended with an error (it can re-watch from its last revision).
    pub watch_buffer: usize,
    /// Most write requests applied in one transaction (one fsync).
    pub max_batch: usize,
    /// Idle read connections kept open.
    pub read_pool: usize,
    /// Rows examined per compaction transaction.
    pub compact_chunk: usize,
    /// Bytes of WAL file kept after a checkpoint resets it (`journal_size_limit`).
    pub wal_size_limit: i64,
    /// How long a connection waits on a lock held by another connection.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            watch_buffer: 8192,
            max_batch: 1024,
            read_pool: 4,
            compact_chunk: 500,
            wal_size_limit: 64 << 20,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters of the writer thread, e.g. to see how well group commit batches
/// (`writes / commits`) in a benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed for write batches (each one fsync).
    pub commits: u64,
    /// Write requests processed (succeeded or failed their precondition).
    pub writes: u64,
    /// The largest number of requests applied in one commit.
    pub max_batch: u64,
}

#[derive(Default)]
struct StatCounters {
    commits: AtomicU64,
    writes: AtomicU64,
    max_batch: AtomicU64,
}

/// The embedded SQLite [`Store`]. Cloning is cheap and shares one database;
/// the writer thread stops (and the file is closed) when the last clone is
/// dropped.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    readers: Arc<ReadPool>,
    requests: Option<mpsc::Sender<Msg>>,
    /// Weak so that only the writer thread keeps the channel open: when it
    /// exits, every watcher sees the channel close and ends.
    events: broadcast::WeakSender<Arc<Event>>,
    writer: Option<JoinHandle<()>>,
    stats: Arc<StatCounters>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the request channel makes the writer finish its current
        // batch and exit; joining it guarantees the database is closed when
        // the last handle is gone (so it can be reopened right away).
        self.requests.take();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            warn!(path = %self.path.display(), "sqlite writer thread panicked");
        }
    }
}

fn backend(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("sqlite {context}: {e}"))
}

fn closed() -> StoreError {
    StoreError::Backend("sqlite store writer has stopped".into())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            BLOB    NOT NULL,
    created         INTEGER NOT NULL,
    deleted         INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision   INTEGER NOT NULL,
    value           BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS kv_name_id ON kv (name, id);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Meta key: the revision history was compacted to (reads below fail).
const META_COMPACT_REV: &str = "compact_rev";
/// Meta key: how far the row deletion for `compact_rev` got (resumed on open).
const META_COMPACT_DONE: &str = "compact_done";

fn open_connection(path: &Path, opts: &SqliteOptions) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(opts.busy_timeout)?;
    // The query planner stability guarantee: plans do not depend on bound
    // values. Without it SQLite (built with STAT4) expires a cached
    // statement such as GET_NEWEST every time a new key is bound and parses
    // and plans it again, 7 % of the server's CPU under a write load.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.pragma_update(None, "journal_size_limit", opts.wal_size_limit)?;
    // Every hot statement is cached; room for all of them with margin.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn newest_revision(conn: &Connection) -> rusqlite::Result<Revision> {
    Ok(conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'kv'")?
        .query_row([], |r| r.get::<_, i64>(0))
        .optional()?
        .unwrap_or(0))
}

fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

fn meta_set(conn: &Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn key_string(name: Vec<u8>) -> rusqlite::Result<String> {
    String::from_utf8(name).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `path`, with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (creating when missing) the database at `path`.
    pub fn open_with(path: impl AsRef<Path>, opts: SqliteOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| backend(&format!("creating {}", dir.display()), e))?;
        }
        let conn = open_connection(&path, &opts).map_err(|e| backend("open", e))?;
        // auto_vacuum only takes effect before the first table exists; on an
        // existing database this is a no-op.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(|e| backend("pragma auto_vacuum", e))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| backend("pragma journal_mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "sqlite {}: could not enable WAL mode (got {mode})",
                path.display()
            )));
        }
        // FULL: the WAL is fsynced at every commit, so an acknowledged write
        // survives a crash of the process or the machine.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| backend("pragma synchronous", e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| backend("schema", e))?;

        let compaction = (|| -> rusqlite::Result<Option<CompactJob>> {
            let target = meta_get(&conn, META_COMPACT_REV)?;
            let done = meta_get(&conn, META_COMPACT_DONE)?;
            Ok((done < target).then(|| CompactJob {
                target,
                progress: done,
                recorded: true,
                waiters: Vec::new(),
            }))
        })()
        .map_err(|e| backend("reading meta", e))?;
        if let Some(job) = &compaction {
            info!(
                target = job.target,
                progress = job.progress,
                "resuming interrupted compaction"
            );
        }

        let (events, _) = broadcast::channel(opts.watch_buffer.max(16));
        let weak_events = events.downgrade();
        let (requests, rx) = mpsc::channel();
        let stats = Arc::new(StatCounters::default());
        let writer = Writer {
            conn,
            rx,
            events,
            opts: opts.clone(),
            stats: stats.clone(),
            compaction,
        };
        let handle = std::thread::Builder::new()
            .name("tug-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| backend("spawning writer thread", e))?;
        let readers = Arc::new(ReadPool {
            path: path.clone(),
            idle: Mutex::new(Vec::new()),
            opts,
        });
        info!(path = %path.display(), "opened sqlite store");
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                readers,
                requests: Some(requests),
                events: weak_events,
                writer: Some(handle),
                stats,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Writer counters (cheap; for benchmarks and tests of group commit).
    pub fn writer_stats(&self) -> WriterStats {
        let s = &self.inner.stats;
        WriterStats {
            commits: s.commits.load(Ordering::Relaxed),
            writes: s.writes.load(Ordering::Relaxed),
            max_batch: s.max_batch.load(Ordering::Relaxed),
        }
    }

    /// Compacts every `interval`, keeping the newest `retain_revisions`
    /// revisions. See [`crate::spawn_compactor`]; this variant holds only a
    /// weak reference to this store.
    pub fn spawn_compactor(
        &self,
        interval: Duration,
        retain_revisions: Revision,
    ) -> CompactorHandle {
        let weak = Arc::downgrade(&self.inner);
        crate::spawn_compactor_with(
            move || {
                weak.upgrade()
                    .map(|inner| Arc::new(SqliteStore { inner }) as Arc<dyn Store>)
            },
            interval,
            retain_revisions,
            || Revision::MAX,
        )
    }

    fn send(&self, msg: Msg) -> Result<()> {
        self.inner
            .requests
            .as_ref()
            .ok_or_else(closed)?
            .send(msg)
            .map_err(|_| closed())
    }

    async fn write(&self, op: WriteOp) -> Result<Applied> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Write { op, reply })?;
        rx.await.map_err(|_| closed())?
    }
}

// ---------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    opts: SqliteOptions,
}

impl ReadPool {
    fn checkout(&self) -> Result<Connection> {
        if let Some(conn) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(conn);
        }
        let conn =
            open_connection(&self.path, &self.opts).map_err(|e| backend("open reader", e))?;
        conn.pragma_update(None, "query_only", true)
            .map_err(|e| backend("pragma query_only", e))?;
        Ok(conn)
    }

    fn checkin(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.opts.read_pool
        {
            idle.push(conn);
        }
    }

    /// Runs `f` in one read transaction (a consistent snapshot) on a blocking thread.
    async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.checkout()?;
            let result = match conn.transaction_with_behavior(TransactionBehavior::Deferred) {
                Ok(tx) => f(&tx),
                Err(e) => Err(backend("begin read", e)),
            };
            pool.checkin(conn);
            result
        })
        .await
        .map_err(|e| backend("read task", e))?
    }
}

/// A read-side check of a requested revision against the snapshot.
fn check_revision(tx: &Connection, requested: Revision) -> Result<()> {
    let current = newest_revision(tx).map_err(|e| backend("read revision", e))?;
    let compacted = meta_get(tx, META_COMPACT_REV).map_err(|e| backend("read meta", e))?;
    if requested > current {
        return Err(StoreError::FutureRevision(requested));
    }
    if requested < compacted {
        return Err(StoreError::Compacted {
            requested,
            compacted,
        });
    }
    Ok(())
}

/// The newest row of a key: read for every write (its CAS check).
const GET_NEWEST: &str = "SELECT id, deleted, create_revision, value FROM kv WHERE name = ?1 ORDER BY id DESC LIMIT 1";

fn get_newest(conn: &Connection, key: &[u8]) -> rusqlite::Result<Option<Row>> {
    conn.prepare_cached(GET_NEWEST)?
    .query_row(
        [key],
        |r| {
            Ok(Row {
                id: r.get(0)?,
                deleted: r.get(1)?,
                create_revision: r.get(2)?,
                value: r.get(3)?,
            })
        },
    )
    .optional()
}

fn list_at(tx: &Connection, prefix: &[u8], opts: &ListOptions) -> Result<ListResult> {
    let current = newest_revision(tx).map_err(|e| backend("read revision", e))?;
    let revision = match opts.revision {
        Some(r) if r > 0 => {
            check_revision(tx, r)?;
            r
        }
        _ => current,
    };
    // Lower bound: the prefix, or just past `start_after` when that is later.
    let mut lower = prefix.to_vec();
    if let Some(after) = &opts.start_after {
        let mut past = after.as_bytes().to_vec();
        past.push(0);
        if past > lower {
            lower = past;
        }
    }
    let upper = prefix_end(prefix);
    let limit = opts.limit.filter(|l| *l > 0);
    // LIMIT -1 is "no limit" in SQLite; ask for one more row to learn `more`.
    let sql_limit = limit.map(|l| l as i64 + 1).unwrap_or(-1);
    let sql = format!(
        "SELECT kv.name, kv.create_revision, kv.id, kv.value FROM kv
         JOIN (SELECT MAX(id) AS id FROM kv
               WHERE name >= ?1 {} AND id <= ?3 GROUP BY name) AS newest
           ON kv.id = newest.id
         WHERE kv.deleted = 0
         ORDER BY kv.name LIMIT ?4",
        if upper.is_some() {
            "AND name < ?2"
        } else {
            "AND ?2 IS NULL"
        }
    );
    let mut stmt = tx
        .prepare_cached(&sql)
        .map_err(|e| backend("prepare list", e))?;
    let rows = stmt
        .query_map(params![lower, upper, revision, sql_limit], |r| {
            Ok(KeyValue {
                key: key_string(r.get(0)?)?,
                create_revision: r.get(1)?,
                mod_revision: r.get(2)?,
                value: r.get(3)?,
            })
        })
        .map_err(|e| backend("list", e))?;
    let mut items = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| backend("list", e))?;
    let more = limit.is_some_and(|l| items.len() > l);
    if let Some(l) = limit {
        items.truncate(l);
    }
    Ok(ListResult {
        items,
        revision,
        more,
    })
}

/// Rows read per watch replay query.
const REPLAY_PAGE: usize = 500;

struct ReplayPage {
    events: Vec<(Revision, Event)>,
    /// True when the page returned every matching row up to `snapshot`.
    complete: bool,
    snapshot: Revision,
}

/// Changes under `prefix` with revisions in `(after, snapshot]`, oldest first,
/// at most [`REPLAY_PAGE`] of them, with the previous value from the row each
/// one replaced.
fn replay_page(tx: &Connection, prefix: &[u8], after: Revision) -> Result<ReplayPage> {
    let snapshot = newest_revision(tx).map_err(|e| backend("read revision", e))?;
    let compacted = meta_get(tx, META_COMPACT_REV).map_err(|e| backend("read meta", e))?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    let upper = prefix_end(prefix);
    // `+r.name` keeps SQLite from using the (name, id) index: walking the
    // rowid range after `after` is the efficient plan for replay.
    let sql = format!(
        "SELECT r.id, r.name, r.created, r.deleted, r.create_revision, r.value,
                p.id, p.deleted, p.create_revision, p.value
         FROM kv AS r LEFT JOIN kv AS p ON p.id = r.prev_revision
         WHERE r.id > ?1 AND r.id <= ?2 AND +r.name >= ?3 {}
         ORDER BY r.id LIMIT ?5",
        if upper.is_some() {
            "AND +r.name < ?4"
        } else {
            "AND ?4 IS NULL"
        }
    );
    let mut stmt = tx
        .prepare_cached(&sql)
        .map_err(|e| backend("prepare replay", e))?;
    let rows = stmt
        .query_map(
            params![after, snapshot, prefix, upper, REPLAY_PAGE as i64],
            |r| {
                let id: i64 = r.get(0)?;
                let key = key_string(r.get(1)?)?;
                let created: bool = r.get(2)?;
                let deleted: bool = r.get(3)?;
                let create_revision: i64 = r.get(4)?;
                let value: Vec<u8> = r.get(5)?;
                let prev_id: Option<i64> = r.get(6)?;
                let prev_deleted: Option<bool> = r.get(7)?;
                let prev = match (prev_id, prev_deleted) {
                    (Some(pid), Some(false)) if !created => Some(KeyValue {
                        key: key.clone(),
                        value: r.get::<_, Option<Vec<u8>>>(9)?.unwrap_or_default(),
                        create_revision: r.get::<_, Option<i64>>(8)?.unwrap_or(0),
                        mod_revision: pid,
                    }),
                    _ => None,
                };
                Ok((
                    id,
                    make_event(key, id, deleted, create_revision, value, prev),
                ))
            },
        )
        .map_err(|e| backend("replay", e))?;
    let events = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| backend("replay", e))?;
    Ok(ReplayPage {
        complete: events.len() < REPLAY_PAGE,
        events,
        snapshot,
    })
}

fn make_event(
    key: String,
    id: Revision,
    deleted: bool,
    create_revision: Revision,
    value: Vec<u8>,
    prev: Option<KeyValue>,
) -> Event {
    if deleted {
        // A deletion marker carries no value: the deleted value is the
        // previous row's (absent only if compaction already removed it).
        let (value, create_revision) = prev
            .as_ref()
            .map(|p| (p.value.clone(), p.create_revision))
            .unwrap_or((Vec::new(), create_revision));
        Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key,
                value,
                create_revision,
                mod_revision: id,
            },
            prev,
        }
    } else {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key,
                value,
                create_revision,
                mod_revision: id,
            },
            prev,
        }
    }
}

// ---------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------

enum Phase {
    /// Replaying history without a live subscription (long catch-up: a live
    /// buffer would overflow while we read).
    Replay,
    /// Subscribed to live events; replaying what was committed before.
    ReplaySubscribed(broadcast::Receiver<Arc<Event>>),
    Live(broadcast::Receiver<Arc<Event>>),
    Done,
}

struct WatchState {
    readers: Arc<ReadPool>,
    events: broadcast::WeakSender<Arc<Event>>,
    prefix: Vec<u8>,
    /// Every change up to this revision has been queued or skipped.
    cursor: Revision,
    queue: VecDeque<Event>,
    phase: Phase,
}

impl WatchState {
    fn absorb(&mut self, page: ReplayPage) {
        if let Some((last, _)) = page.events.last() {
            self.cursor = *last;
        }
        if page.complete {
            self.cursor = self.cursor.max(page.snapshot);
        }
        self.queue.extend(page.events.into_iter().map(|(_, e)| e));
    }

    async fn next_page(&mut self) -> Result<ReplayPage> {
        let prefix = self.prefix.clone();
        let after = self.cursor;
        self.readers
            .read(move |tx| replay_page(tx, &prefix, after))
            .await
    }

    /// Produces the next item; `None` ends the stream.
    async fn step(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(Ok(event));
            }
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return None,
                Phase::Replay => {
                    let page = match self.next_page().await {
                        Ok(page) => page,
                        Err(e) => return Some(Err(e)),
                    };
                    let complete = page.complete;
                    self.absorb(page);
                    self.phase = if complete {
                        // Caught up with history: subscribe, then replay once
                        // more to cover what committed while we subscribed.
                        match self.events.upgrade() {
                            Some(tx) => Phase::ReplaySubscribed(tx.subscribe()),
                            None => Phase::Done,
                        }
                    } else {
                        Phase::Replay
                    };
                }
                Phase::ReplaySubscribed(rx) => {
                    let page = match self.next_page().await {
                        Ok(page) => page,
                        Err(e) => return Some(Err(e)),
                    };
                    let complete = page.complete;
                    self.absorb(page);
                    self.phase = if complete {
                        Phase::Live(rx)
                    } else {
                        Phase::ReplaySubscribed(rx)
                    };
                }
                Phase::Live(mut rx) => match rx.recv().await {
                    Ok(event) => {
                        let revision = event.kv.mod_revision;
                        // Already replayed from the table (subscribe-before-replay
                        // overlap): skip, so nothing is delivered twice.
                        if revision > self.cursor {
                            self.cursor = revision;
                            if event.kv.key.as_bytes().starts_with(&self.prefix) {
                                self.queue.push_back(Event::clone(&event));
                            }
                        }
                        self.phase = Phase::Live(rx);
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(
                            prefix = %String::from_utf8_lossy(&self.prefix),
                            missed, cursor = self.cursor,
                            "watcher fell behind the live event buffer; ending it"
                        );
                        return Some(Err(StoreError::Backend(format!(
                            "watch fell behind by {missed} events after revision {}; \
                             re-watch from that revision",
                            self.cursor
                        ))));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The writer thread
// ---------------------------------------------------------------------------

enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

struct Applied {
    revision: Revision,
    /// For deletes: the deleted value.
    deleted: Option<KeyValue>,
}

enum Msg {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<Applied>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<()>>,
    },
}

struct Row {
    id: Revision,
    deleted: bool,
    create_revision: Revision,
    value: Vec<u8>,
}

struct CompactJob {
    target: Revision,
    /// Rows with ids up to here have been examined for `target`.
    progress: Revision,
    /// Whether `target` is already recorded in `meta` (reads below it fail).
    recorded: bool,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Msg>,
    events: broadcast::Sender<Arc<Event>>,
    opts: SqliteOptions,
    stats: Arc<StatCounters>,
    compaction: Option<CompactJob>,
}

type Pending = (WriteOp, oneshot::Sender<Result<Applied>>);

impl Writer {
    fn run(mut self) {
        debug!("sqlite writer started");
        loop {
            // Block for work only when no compaction is in progress;
            // otherwise just look, and do a compaction chunk if idle.
            let first = if self.compaction.is_some() {
                match self.rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => break,
                }
            } else {
                match self.rx.recv() {
                    Ok(msg) => Some(msg),
                    Err(_) => break,
                }
            };
            let mut batch = Vec::new();
            if let Some(msg) = first {
                self.accept(msg, &mut batch);
                // Group commit: take everything that queued up meanwhile.
                while batch.len() < self.opts.max_batch.max(1) {
                    match self.rx.try_recv() {
                        Ok(msg) => self.accept(msg, &mut batch),
                        Err(_) => break,
                    }
                }
            }
            if !batch.is_empty() {
                self.commit_batch(batch);
            }
            if self.compaction.is_some() {
                self.compact_step();
            }
        }
        debug!("sqlite writer stopped");
    }

    fn accept(&mut self, msg: Msg, batch: &mut Vec<Pending>) {
        match msg {
            Msg::Write { op, reply } => batch.push((op, reply)),
            Msg::Compact { revision, reply } => self.request_compaction(revision, reply),
        }
    }

    fn request_compaction(&mut self, revision: Revision, reply: oneshot::Sender<Result<()>>) {
        let check = (|| -> rusqlite::Result<(Revision, Revision)> {
            Ok((
                newest_revision(&self.conn)?,
                meta_get(&self.conn, META_COMPACT_REV)?,
            ))
        })();
        let (current, compacted) = match check {
            Ok(v) => v,
            Err(e) => {
                let _ = reply.send(Err(backend("compact", e)));
                return;
            }
        };
        if revision > current {
            let _ = reply.send(Err(StoreError::FutureRevision(revision)));
            return;
        }
        match &mut self.compaction {
            Some(job) if job.target >= revision => job.waiters.push(reply),
            Some(job) => {
                // A newer target: rows already examined must be looked at
                // again, since they may now be superseded.
                job.target = revision;
                job.progress = 0;
                job.recorded = false;
                job.waiters.push(reply);
            }
            None if revision <= compacted => {
                // Already compacted at least this far: nothing to do.
                let _ = reply.send(Ok(()));
            }
            None => {
                self.compaction = Some(CompactJob {
                    target: revision,
                    progress: 0,
                    recorded: false,
                    waiters: vec![reply],
                });
            }
        }
    }

    fn commit_batch(&mut self, batch: Vec<Pending>) {
        let n = batch.len();
        let (ops, replies): (Vec<WriteOp>, Vec<_>) = batch.into_iter().unzip();
        match apply_batch(&mut self.conn, &ops) {
            Ok(results) => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats.writes.fetch_add(n as u64, Ordering::Relaxed);
                self.stats.max_batch.fetch_max(n as u64, Ordering::Relaxed);
                // Publish first, in revision order, then acknowledge.
                for (_, event) in results.iter().flatten() {
                    // An error only means nobody is watching.
                    let _ = self.events.send(event.clone());
                }
                for (result, reply) in results.into_iter().zip(replies) {
                    let _ = reply.send(result.map(|(applied, _)| applied));
                }
            }
            Err(e) => {
                warn!(error = %e, batch = n, "sqlite write batch failed");
                let msg = format!("sqlite commit: {e}");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Backend(msg.clone())));
                }
            }
        }
    }

    /// One transaction's worth of compaction.
    fn compact_step(&mut self) {
        let Some(job) = self.compaction.as_mut() else {
            return;
        };
        let chunk = self.opts.compact_chunk.max(1) as i64;
        let step = (|| -> rusqlite::Result<bool> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !job.recorded {
                // Recorded before any row goes, in the same transaction: no
                // reader can see a partially compacted revision as valid.
                meta_set(&tx, META_COMPACT_REV, job.target)?;
                meta_set(&tx, META_COMPACT_DONE, 0)?;
            }
            let hi: Option<i64> = tx.query_row(
                "SELECT MAX(id) FROM (SELECT id FROM kv WHERE id > ?1 AND id <= ?2
                                      ORDER BY id LIMIT ?3)",
                params![job.progress, job.target, chunk],
                |r| r.get(0),
            )?;
            let done = match hi {
                None => {
                    meta_set(&tx, META_COMPACT_DONE, job.target)?;
                    true
                }
                Some(hi) => {
                    tx.execute(
                        "DELETE FROM kv WHERE id > ?1 AND id <= ?2 AND (
                             deleted = 1 OR EXISTS (
                                 SELECT 1 FROM kv AS newer
                                 WHERE newer.name = kv.name AND newer.id > kv.id
                                   AND newer.id <= ?3))",
                        params![job.progress, hi, job.target],
                    )?;
                    meta_set(&tx, META_COMPACT_DONE, hi)?;
                    job.progress = hi;
                    false
                }
            };
            tx.commit()?;
            job.recorded = true;
            Ok(done)
        })();
        match step {
            Ok(false) => {}
            Ok(true) => {
                let job = self.compaction.take();
                let target = job.as_ref().map(|j| j.target).unwrap_or(0);
                self.reclaim_space();
                info!(revision = target, "sqlite compaction finished");
                for waiter in job.map(|j| j.waiters).unwrap_or_default() {
                    let _ = waiter.send(Ok(()));
                }
            }
            Err(e) => {
                // Fail the callers; the recorded progress lets a later
                // compaction (or the next open) pick up where this stopped.
                warn!(error = %e, "sqlite compaction step failed");
                if let Some(job) = self.compaction.take() {
                    for waiter in job.waiters {
                        let _ = waiter.send(Err(backend("compact", &e)));
                    }
                }
            }
        }
    }

    /// After compaction: hand freed pages back to the file system and
    /// truncate the WAL, so neither the database nor its WAL grows without
    /// bound. A reader in the middle of a query can keep the checkpoint from
    /// completing; then we log it and the next compaction tries again.
    fn reclaim_space(&mut self) {
        let started = Instant::now();
        let vacuum = (|| -> rusqlite::Result<()> {
            let mut stmt = self.conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
            Ok(())
        })();
        if let Err(e) = vacuum {
            warn!(error = %e, "incremental vacuum failed");
        }
        // Do not hold up writers for long waiting on readers.
        let _ = self.conn.busy_timeout(Duration::from_millis(200));
        let checkpoint = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
        let _ = self.conn.busy_timeout(self.opts.busy_timeout);
        match checkpoint {
            Ok((0, _, _)) => debug!(elapsed = ?started.elapsed(), "WAL truncated"),
            Ok((_, log, done)) => {
                warn!(
                    log,
                    done, "WAL checkpoint blocked by readers; retried after next compaction"
                )
            }
            Err(e) => warn!(error = %e, "WAL checkpoint failed"),
        }
    }
}

type BatchResult = Vec<Result<(Applied, Arc<Event>)>>;

/// Applies `ops` in one transaction. Precondition failures fail alone; an SQL
/// error in one request rolls back only that request (savepoint); an error
/// in the transaction itself fails the whole batch.
fn apply_batch(conn: &mut Connection, ops: &[WriteOp]) -> rusqlite::Result<BatchResult> {
    // Transaction and savepoint statements go through the statement cache:
    // rusqlite's `transaction()`/`savepoint()` re-parse their SQL on every
    // call, which cost more than the inserts themselves at high write rates.
    let stmt = |sql: &str| -> rusqlite::Result<()> { conn.prepare_cached(sql)?.execute([]).map(|_| ()) };
    stmt("BEGIN IMMEDIATE")?;
    let batch = (|| -> rusqlite::Result<BatchResult> {
        let mut revision = newest_revision(conn)?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            stmt("SAVEPOINT op")?;
            match apply_one(conn, op, revision + 1) {
                Ok(Ok(applied)) => {
                    stmt("RELEASE op")?;
                    revision += 1;
                    results.push(Ok(applied));
                }
                Ok(result) => {
                    stmt("ROLLBACK TO op")?;
                    stmt("RELEASE op")?;
                    results.push(result);
                }
                Err(e) => {
                    // Rolls back this request only.
                    stmt("ROLLBACK TO op")?;
                    stmt("RELEASE op")?;
                    results.push(Err(backend("write", e)));
                }
            }
        }
        Ok(results)
    })();
    match batch {
        Ok(results) => match stmt("COMMIT") {
            Ok(()) => Ok(results),
            Err(e) => {
                let _ = stmt("ROLLBACK");
                Err(e)
            }
        },
        Err(e) => {
            let _ = stmt("ROLLBACK");
            Err(e)
        }
    }
}

fn live_kv(key: &str, row: &Row) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: row.value.clone(),
        create_revision: row.create_revision,
        mod_revision: row.id,
    }
}

#[allow(clippy::too_many_arguments)]
fn insert_row(
    conn: &Connection,
    id: Revision,
    key: &str,
    created: bool,
    deleted: bool,
    create_revision: Revision,
    prev_revision: Revision,
    value: &[u8],
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO kv (id, name, created, deleted, create_revision, prev_revision, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        id,
        key.as_bytes(),
        created,
        deleted,
        create_revision,
        prev_revision,
        value
    ])?;
    Ok(())
}

/// One request at revision `id`: the CAS check and the insert.
fn apply_one(
    conn: &Connection,
    op: &WriteOp,
    id: Revision,
) -> rusqlite::Result<Result<(Applied, Arc<Event>)>> {
    let key = match op {
        WriteOp::Create { key, .. } | WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => {
            key
        }
    };
    let newest = get_newest(conn, key.as_bytes())?;
    let prev_id = newest.as_ref().map(|r| r.id).unwrap_or(0);
    let live = newest.filter(|r| !r.deleted);
    let event = match (op, live) {
        (WriteOp::Create { .. }, Some(_)) => {
            return Ok(Err(StoreError::AlreadyExists(key.clone())));
        }
        (WriteOp::Create { value, .. }, None) => {
            insert_row(conn, id, key, true, false, id, prev_id, value)?;
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: id,
                    mod_revision: id,
                },
                prev: None,
            }
        }
        (WriteOp::Update { .. } | WriteOp::Delete { .. }, None) => {
            return Ok(Err(StoreError::NotFound(key.clone())));
        }
        (WriteOp::Update { expected, .. }, Some(row)) if row.id != *expected => {
            return Ok(Err(StoreError::Conflict {
                key: key.clone(),
                expected: *expected,
                current: Some(live_kv(key, &row)),
            }));
        }
        (WriteOp::Update { value, .. }, Some(row)) => {
            insert_row(
                conn,
                id,
                key,
                false,
                false,
                row.create_revision,
                row.id,
                value,
            )?;
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: row.create_revision,
                    mod_revision: id,
                },
                prev: Some(live_kv(key, &row)),
            }
        }
        (
            WriteOp::Delete {
                expected: Some(expected),
                ..
            },
            Some(row),
        ) if row.id != *expected => {
            return Ok(Err(StoreError::Conflict {
                key: key.clone(),
                expected: *expected,
                current: Some(live_kv(key, &row)),
            }));
        }
        (WriteOp::Delete { .. }, Some(row)) => {
            insert_row(conn, id, key, false, true, row.create_revision, row.id, &[])?;
            let prev = live_kv(key, &row);
            Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key.clone(),
                    value: row.value,
                    create_revision: row.create_revision,
                    mod_revision: id,
                },
                prev: Some(prev),
            }
        }
    };
    let deleted = (event.kind == EventKind::Delete)
        .then(|| event.prev.clone())
        .flatten();
    Ok(Ok((
        Applied {
            revision: id,
            deleted,
        },
        Arc::new(event),
    )))
}

// ---------------------------------------------------------------------------
// The trait
// ---------------------------------------------------------------------------

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.inner
            .readers
            .read(move |tx| {
                let row = get_newest(tx, key.as_bytes()).map_err(|e| backend("get", e))?;
                Ok(row.filter(|r| !r.deleted).map(|r| live_kv(&key, &r)))
            })
            .await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let prefix = prefix.as_bytes().to_vec();
        self.inner
            .readers
            .read(move |tx| list_at(tx, &prefix, &opts))
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        let op = WriteOp::Create {
            key: key.to_owned(),
            value,
        };
        Ok(self.write(op).await?.revision)
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        let op = WriteOp::Update {
            key: key.to_owned(),
            value,
            expected,
        };
        Ok(self.write(op).await?.revision)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let op = WriteOp::Delete {
            key: key.to_owned(),
            expected,
        };
        let applied = self.write(op).await?;
        let deleted = applied
            .deleted
            .ok_or_else(|| StoreError::Backend("sqlite delete returned no value".into()))?;
        Ok((applied.revision, deleted))
    }

    /// Replays history from the table, then follows live events.
    ///
    /// Gap- and duplicate-free by construction: the live subscription is
    /// taken *before* the final replay query, so every change is either in
    /// that query's snapshot or published after we subscribed (events are
    /// published only after their commit). Live events at or below the last
    /// replayed revision are then skipped. A long catch-up replays page by
    /// page without a subscription first, so the live buffer cannot overflow
    /// while history is still being read.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<EventStream> {
        let mut state = WatchState {
            readers: self.inner.readers.clone(),
            events: self.inner.events.clone(),
            prefix: prefix.as_bytes().to_vec(),
            cursor: after.max(0),
            queue: VecDeque::new(),
            phase: Phase::Done,
        };
        // Subscribe first; in the common case (little history to replay)
        // the first page is also the last and we go straight to live.
        let rx = self.inner.events.upgrade().ok_or_else(closed)?.subscribe();
        let page = state.next_page().await?;
        let complete = page.complete;
        state.absorb(page);
        state.phase = if complete {
            Phase::Live(rx)
        } else {
            Phase::Replay
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            let item = state.step().await?;
            if item.is_err() {
                state.phase = Phase::Done;
                state.queue.clear();
            }
            Some((item, state))
        });
        Ok(Box::pin(stream))
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner
            .readers
            .read(|tx| newest_revision(tx).map_err(|e| backend("read revision", e)))
            .await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Compact { revision, reply })?;
        rx.await.map_err(|_| closed())?
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.inner
            .readers
            .read(|tx| meta_get(tx, META_COMPACT_REV).map_err(|e| backend("read meta", e)))
            .await
    }
}

#[cfg(test)]
mod statement_cache_tests {
    use super::*;

    /// A cached statement must not be re-planned on every execution. Without
    /// the query planner stability guarantee, SQLite (built with STAT4)
    /// expires `name = ?1 ORDER BY id DESC LIMIT 1` whenever a new key is
    /// bound, and re-parses it: that was 7 % of the API server's CPU in the
    /// scheduler bench.
    #[test]
    fn hot_statements_are_prepared_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.db");
        let opts = SqliteOptions::default();
        let schema = open_connection(&path, &opts).expect("open");
        schema.execute_batch(SCHEMA).expect("schema");
        drop(schema);
        let mut conn = open_connection(&path, &opts).expect("open");
        for i in 0..20 {
            let key = format!("/registry/pods/default/p{i}");
            let applied = apply_batch(&mut conn, &[WriteOp::Create { key: key.clone(), value: b"{}".to_vec() }]).expect("batch");
            assert!(applied[0].is_ok(), "create {key}");
            let conflict = apply_batch(&mut conn, &[WriteOp::Update { key, value: b"{}".to_vec(), expected: 0 }]).expect("batch");
            assert!(matches!(conflict[0], Err(StoreError::Conflict { .. })), "stale update is a conflict");
        }
        let newest = conn.prepare_cached(GET_NEWEST).expect("cached");
        assert_eq!(newest.get_status(rusqlite::StatementStatus::RePrepare), 0, "get_newest was re-prepared");
    }
}
