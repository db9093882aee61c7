//! WATCH: a stream of `{"type": ..., "object": ...}` lines served from the
//! watch cache, with upstream's resourceVersion semantics, bookmarks,
//! `sendInitialEvents`, `timeoutSeconds`, and 410 Gone as an ERROR event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tug_api::resources::ResourceType;
use tug_api::ApiError;

use crate::cache::{CacheEvent, Entry, WatchCache, WatchEventType};
use crate::output::Output;
use crate::rest::Filter;

const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);
/// Upstream ends watches after a random 30-60 minutes; so do we, at most.
const MAX_TIMEOUT: Duration = Duration::from_secs(1800);

pub struct WatchRequest {
    pub rt: &'static ResourceType,
    pub prefix: String,
    pub filter: Filter,
    pub output: Output,
    pub resource_version: String,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Duration,
    /// How often an idle watch asking for bookmarks gets one.
    pub bookmark_interval: Duration,
}

impl WatchRequest {
    pub fn from_query(rt: &'static ResourceType, prefix: String, q: &HashMap<String, String>, output: Output) -> Result<WatchRequest, ApiError> {
        let filter = Filter::from_query(rt, q)?;
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(MAX_TIMEOUT)
            .min(MAX_TIMEOUT);
        let send_initial_events = q.get("sendInitialEvents").map(|v| v == "true").unwrap_or(false);
        if send_initial_events && q.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") {
            return Err(ApiError::invalid("meta.k8s.io", "ListOptions", "", vec![tug_api::status::Cause::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            )]));
        }
        Ok(WatchRequest {
            rt,
            prefix,
            filter,
            output,
            resource_version: q.get("resourceVersion").cloned().unwrap_or_default(),
            bookmarks: q.get("allowWatchBookmarks").map(|v| v == "true").unwrap_or(false),
            send_initial_events,
            timeout,
            bookmark_interval: BOOKMARK_INTERVAL,
        })
    }
}

/// The event line for `object` (in storage form) as this watcher sees it.
fn event(req: &WatchRequest, kind: &str, object: &Value) -> Bytes {
    if tug_api::convert::converts(req.rt) {
        let converted = tug_api::convert::from_storage(req.rt, object.clone());
        return frame(kind, &req.output.watch_object(req.rt, &converted));
    }
    frame(kind, &req.output.watch_object(req.rt, object))
}

/// An event for a cached object: its JSON text copied as is when this
/// watcher wants plain JSON (no parse, no encode), parsed otherwise.
/// `partial` is the object's shared metadata-only encoding, when there is one.
fn entry_event(req: &WatchRequest, kind: &str, entry: &Entry, partial: Option<&Bytes>) -> Bytes {
    let encoded: &[u8] = match req.output {
        _ if tug_api::convert::converts(req.rt) => return event(req, kind, &entry.value()),
        Output::Json => entry.bytes(),
        Output::PartialMetadata => match partial {
            Some(p) => p,
            None => return event(req, kind, &entry.value()),
        },
        Output::Table(_) => return event(req, kind, &entry.value()),
    };
    let mut line = Vec::with_capacity(encoded.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(encoded);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// An event of the shared cache (its metadata-only encoding is shared by
/// every metadata-only watcher).
fn cached_event(req: &WatchRequest, kind: &str, ev: &CacheEvent) -> Bytes {
    let partial = (req.output == Output::PartialMetadata && !tug_api::convert::converts(req.rt)).then(|| ev.encoded_partial());
    entry_event(req, kind, &ev.object, partial)
}

fn frame(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("serializable");
    line.push(b'\n');
    Bytes::from(line)
}

/// The bytes of a watch response.
pub async fn stream(cache: Arc<WatchCache>, req: WatchRequest) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>>, ApiError> {
    let rv = req.resource_version.clone();
    let (initial, start_rev, mut rx, replay) = if rv.is_empty() || rv == "0" || req.send_initial_events {
        let (objs, rev, rx) = cache.snapshot_and_subscribe(&req.prefix).await;
        let objs: Vec<Arc<Entry>> = objs.into_iter().filter(|o| req.filter.matches_entry(o)).collect();
        // A watch from "now" without initial events skips the snapshot.
        let objs = if !rv.is_empty() && rv != "0" && !req.send_initial_events { Vec::new() } else { objs };
        (objs, rev, rx, Vec::new())
    } else {
        let from: i64 = rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        match cache.watch_from(&req.prefix, from).await {
            Ok((replay, rx)) => (Vec::new(), from, rx, replay),
            Err(oldest) => {
                // Upstream answers an expired watch with 200 and an ERROR event.
                let status = ApiError::gone(format!("too old resource version: {from} ({oldest})")).to_status();
                let s = async_stream_once(frame("ERROR", &status));
                return Ok(futures::future::Either::Left(s));
            }
        }
    };
    let s = async_stream::stream! {
        let deadline = tokio::time::Instant::now() + req.timeout;
        let mut last_rev = start_rev;
        for obj in &initial {
            yield Ok(entry_event(&req, "ADDED", obj, None));
        }
        if req.send_initial_events {
            let mut bookmark = json!({"kind": req.rt.kind, "apiVersion": req.rt.api_version(),
                "metadata": {"resourceVersion": start_rev.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
            if req.output.is_table() { bookmark = req.output.watch_object(req.rt, &bookmark); }
            yield Ok(frame("BOOKMARK", &bookmark));
        }
        for ev in replay {
            if let Some(t) = filter_event(&req, &ev) {
                last_rev = ev.revision;
                yield Ok(cached_event(&req, t, &ev));
            }
        }
        let mut bookmark_at = tokio::time::Instant::now() + req.bookmark_interval;
        loop {
            let next = tokio::select! {
                r = rx.recv() => Some(r),
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tokio::time::sleep_until(bookmark_at) => None,
            };
            match next {
                None => {
                    bookmark_at = tokio::time::Instant::now() + req.bookmark_interval;
                    if req.bookmarks {
                        // A bookmark may only claim what this watcher has
                        // drained: events still queued in `rx` are older than
                        // `cache.revision()`, and announcing past them would
                        // make the loop below drop them as already sent. The
                        // cache sends each event before it publishes its
                        // revision, so reading the revision first and then
                        // finding the queue empty proves nothing is pending.
                        let current = cache.revision();
                        if rx.is_empty() {
                            last_rev = last_rev.max(current);
                        }
                        let b = json!({"kind": req.rt.kind, "apiVersion": req.rt.api_version(), "metadata": {"resourceVersion": last_rev.to_string()}});
                        yield Ok(frame("BOOKMARK", &b));
                    }
                }
                Some(Ok(ev)) => {
                    if ev.revision <= last_rev {
                        continue;
                    }
                    if !ev.key.starts_with(&req.prefix) {
                        continue;
                    }
                    last_rev = ev.revision;
                    if let Some(t) = filter_event(&req, &ev) {
                        yield Ok(cached_event(&req, t, &ev));
                    }
                }
                Some(Err(RecvError::Lagged(_))) => {
                    let status = ApiError::gone("watch fell behind; restart the watch").to_status();
                    yield Ok(frame("ERROR", &status));
                    break;
                }
                Some(Err(RecvError::Closed)) => {
                    // The cache started over (or the server is stopping):
                    // what this watch followed is gone; the client relists.
                    let status = ApiError::gone("the watch cache was reloaded; restart the watch").to_status();
                    yield Ok(frame("ERROR", &status));
                    break;
                }
            }
        }
    };
    Ok(futures::future::Either::Right(s))
}

fn async_stream_once(b: Bytes) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::once(async move { Ok(b) })
}

/// The event as this watcher sees it: selectors turn updates that cross the
/// selector boundary into ADDED or DELETED, as upstream does.
fn filter_event(req: &WatchRequest, ev: &CacheEvent) -> Option<&'static str> {
    if !ev.key.starts_with(&req.prefix) {
        return None;
    }
    let now = req.filter.matches_entry(&ev.object);
    let before = ev.prev.as_ref().map(|p| req.filter.matches_entry(p)).unwrap_or(false);
    match ev.kind {
        WatchEventType::Added => now.then_some("ADDED"),
        WatchEventType::Deleted => (now || before).then_some("DELETED"),
        WatchEventType::Modified => match (before, now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tug_store::Store;

    /// When the cache starts over (history it had not read was compacted),
    /// every watch ends with 410 Gone so that its client relists: carrying
    /// on would silently skip whatever the cache never saw.
    #[tokio::test]
    async fn a_cache_reload_ends_watches_with_gone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(tug_store::sqlite::SqliteStore::open(dir.path().join("state.db")).expect("store"));
        let cache = WatchCache::start(store.clone()).await.expect("cache");
        let rt = tug_api::resources::find("", "v1", "configmaps").expect("configmaps are served");
        let req = WatchRequest {
            rt,
            prefix: rt.key_prefix(),
            filter: Filter::from_query(rt, &HashMap::new()).expect("no selectors"),
            output: Output::Json,
            resource_version: cache.revision().to_string(),
            bookmarks: false,
            send_initial_events: false,
            timeout: Duration::from_secs(30),
            bookmark_interval: Duration::from_secs(60),
        };
        let mut s = Box::pin(stream(cache.clone(), req).await.expect("watch"));
        assert!(tokio::time::timeout(Duration::from_millis(20), s.next()).await.is_err(), "nothing yet");
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default"}});
        store.create(&rt.key(Some("default"), "a"), serde_json::to_vec(&body).unwrap()).await.expect("create");
        cache.reload(&store).await.expect("reload");
        let mut seen = Vec::new();
        while let Some(line) = tokio::time::timeout(Duration::from_secs(5), s.next()).await.expect("the watch ends") {
            seen.push(serde_json::from_slice::<Value>(&line.expect("bytes")).expect("json line"));
        }
        let last = seen.last().expect("an event");
        assert_eq!(last["type"], "ERROR", "{seen:?}");
        assert_eq!(last["object"]["code"], 410, "{seen:?}");
        // The reloaded cache has the object, and a new watch from the old
        // revision is told to relist.
        assert!(cache.get(&rt.key(Some("default"), "a")).await.is_some());
    }

    /// A bookmark that fires while a watcher lags must not skip the events
    /// still queued for it. (It used to announce the cache's newest revision
    /// and then drop everything older as already sent.)
    #[tokio::test]
    async fn bookmark_while_lagging_loses_no_events() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(tug_store::sqlite::SqliteStore::open(dir.path().join("state.db")).expect("store"));
        let cache = WatchCache::start(store.clone()).await.expect("cache");
        let rt = tug_api::resources::find("", "v1", "configmaps").expect("configmaps are served");
        const EVENTS: usize = 100;
        // The select in the stream picks a ready branch at random, so one
        // round loses events with probability 1/2 when the bug is there.
        for round in 0..12 {
            let from = cache.revision();
            let req = WatchRequest {
                rt,
                prefix: rt.key_prefix(),
                filter: Filter::from_query(rt, &HashMap::new()).expect("no selectors"),
                output: Output::Json,
                resource_version: from.to_string(),
                bookmarks: true,
                send_initial_events: false,
                // Short, so that a lost event fails the test at the stream's end.
                timeout: Duration::from_secs(5),
                bookmark_interval: Duration::from_millis(20),
            };
            let mut s = Box::pin(stream(cache.clone(), req).await.expect("watch"));
            // Poll once so that the stream starts and its bookmark timer runs
            // (on a loaded machine the timer may already fire here).
            let mut bookmarks = Vec::new();
            if let Ok(first) = tokio::time::timeout(Duration::from_millis(5), s.next()).await {
                let ev: Value = serde_json::from_slice(&first.expect("stream open").expect("bytes")).expect("json line");
                assert_eq!(ev["type"], "BOOKMARK", "nothing but a bookmark to send yet: {ev}");
                bookmarks.push(ev["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse::<i64>().unwrap());
            }
            for i in 0..EVENTS {
                let name = format!("r{round}-{i}");
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}});
                store.create(&rt.key(Some("default"), &name), serde_json::to_vec(&body).unwrap()).await.expect("create");
            }
            let last = store.current_revision().await.expect("revision");
            assert!(cache.wait_for(last, Duration::from_secs(5)).await, "cache caught up");
            // The watcher has read nothing yet; let its bookmark timer expire.
            tokio::time::sleep(Duration::from_millis(60)).await;
            let mut added = 0;
            while added < EVENTS {
                let line = tokio::time::timeout(Duration::from_secs(2), s.next())
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: only {added} of {EVENTS} ADDED events arrived; bookmarks {bookmarks:?}"))
                    .unwrap_or_else(|| panic!("round {round}: the watch ended after {added} of {EVENTS} ADDED events; bookmarks {bookmarks:?}"))
                    .expect("bytes");
                let ev: Value = serde_json::from_slice(&line).expect("json line");
                match ev["type"].as_str() {
                    Some("ADDED") => {
                        let rv: i64 = ev["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
                        assert!(bookmarks.iter().all(|b| *b < rv), "round {round}: event {rv} after bookmark {bookmarks:?}");
                        added += 1;
                    }
                    Some("BOOKMARK") => {
                        let rv: i64 = ev["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
                        bookmarks.push(rv);
                    }
                    other => panic!("unexpected event {other:?}"),
                }
            }
            assert_eq!(added, EVENTS);
        }
    }
}
