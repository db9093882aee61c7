//! One conformance suite for every `Store` backend.
//!
//! The generic tests live in `suite`; the `conformance!` macro instantiates
//! them per backend (`sqlite::*`, `etcd::*`). The etcd ones run against a
//! real etcd (Debian's `etcd-server`): one shared server per test binary for
//! tests that only touch their own key prefix, and a server of their own for
//! tests that compact (compaction is global) or restart it. Backend-specific
//! tests follow in `sqlite_only` and `misc`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tug_store::{EventKind, EventStream, KeyValue, ListOptions, Revision, Store, StoreError};

/// Waits this long for an expected watch event before failing.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long "no further event" is watched for.
const QUIET: Duration = Duration::from_millis(300);

async fn next_event(w: &mut EventStream) -> tug_store::Event {
    match tokio::time::timeout(EVENT_TIMEOUT, w.next()).await {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended unexpectedly"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

async fn assert_quiet(w: &mut EventStream) {
    if let Ok(item) = tokio::time::timeout(QUIET, w.next()).await {
        panic!("expected no more watch events, got {item:?}");
    }
}

fn kv(key: &str, value: &str, create_revision: Revision, mod_revision: Revision) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
        create_revision,
        mod_revision,
    }
}

fn at(revision: Revision) -> ListOptions {
    ListOptions {
        revision: Some(revision),
        ..Default::default()
    }
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

mod suite {
    use super::support::Fixture;
    use super::*;

    pub async fn ordering(s: Arc<dyn Store>, p: &str) {
        let (a, b, c, d) = (
            format!("{p}a"),
            format!("{p}b"),
            format!("{p}c"),
            format!("{p}d"),
        );
        let r_c = s.create(&c, b"c1".to_vec()).await.unwrap();
        let r_a = s.create(&a, b"a1".to_vec()).await.unwrap();
        let r_b = s.create(&b, b"b1".to_vec()).await.unwrap();
        assert!(
            r_c < r_a && r_a < r_b,
            "revisions must increase: {r_c} {r_a} {r_b}"
        );
        assert!(s.current_revision().await.unwrap() >= r_b);

        let now = s.list(p, ListOptions::default()).await.unwrap();
        assert_eq!(
            now.items,
            vec![
                kv(&a, "a1", r_a, r_a),
                kv(&b, "b1", r_b, r_b),
                kv(&c, "c1", r_c, r_c)
            ],
            "list is in key order with revisions"
        );
        assert!(now.revision >= r_b);
        assert!(!now.more);

        let r_a2 = s.update(&a, b"a2".to_vec(), r_a).await.unwrap();
        assert!(r_a2 > r_b);
        let (r_del, deleted) = s.delete(&b, Some(r_b)).await.unwrap();
        assert!(r_del > r_a2);
        assert_eq!(deleted, kv(&b, "b1", r_b, r_b));
        let r_d = s.create(&d, b"d1".to_vec()).await.unwrap();
        assert!(r_d > r_del);

        assert_eq!(s.get(&a).await.unwrap(), Some(kv(&a, "a2", r_a, r_a2)));
        assert_eq!(s.get(&b).await.unwrap(), None);
        let now = s.list(p, ListOptions::default()).await.unwrap();
        assert_eq!(
            now.items,
            vec![
                kv(&a, "a2", r_a, r_a2),
                kv(&c, "c1", r_c, r_c),
                kv(&d, "d1", r_d, r_d)
            ]
        );

        // The past, as it was.
        let past = s.list(p, at(r_b)).await.unwrap();
        assert_eq!(past.revision, r_b);
        assert_eq!(
            past.items,
            vec![
                kv(&a, "a1", r_a, r_a),
                kv(&b, "b1", r_b, r_b),
                kv(&c, "c1", r_c, r_c)
            ]
        );
        let past = s.list(p, at(r_a2)).await.unwrap();
        assert_eq!(past.revision, r_a2);
        assert_eq!(
            past.items,
            vec![
                kv(&a, "a2", r_a, r_a2),
                kv(&b, "b1", r_b, r_b),
                kv(&c, "c1", r_c, r_c)
            ]
        );
        let past = s.list(p, at(r_del)).await.unwrap();
        assert_eq!(keys(&past.items), vec![a.as_str(), c.as_str()]);
        let past = s.list(p, at(r_c)).await.unwrap();
        assert_eq!(past.items, vec![kv(&c, "c1", r_c, r_c)]);

        let future = s.current_revision().await.unwrap() + 1_000_000;
        match s.list(p, at(future)).await {
            Err(StoreError::FutureRevision(r)) => assert_eq!(r, future),
            other => panic!("list at a future revision: {other:?}"),
        }
    }

    pub async fn create_if_absent(s: Arc<dyn Store>, p: &str) {
        let k = format!("{p}key");
        let r1 = s.create(&k, b"one".to_vec()).await.unwrap();
        match s.create(&k, b"two".to_vec()).await {
            Err(StoreError::AlreadyExists(key)) => assert_eq!(key, k),
            other => panic!("second create: {other:?}"),
        }
        assert_eq!(s.get(&k).await.unwrap(), Some(kv(&k, "one", r1, r1)));

        let (r_del, _) = s.delete(&k, None).await.unwrap();
        assert_eq!(s.get(&k).await.unwrap(), None);
        let r2 = s.create(&k, b"three".to_vec()).await.unwrap();
        assert!(r2 > r_del);
        assert_eq!(
            s.get(&k).await.unwrap(),
            Some(kv(&k, "three", r2, r2)),
            "a re-created key has a new create revision"
        );
    }

    pub async fn cas_conflicts_and_not_found(s: Arc<dyn Store>, p: &str) {
        let k = format!("{p}key");
        let missing = format!("{p}missing");
        let r1 = s.create(&k, b"v1".to_vec()).await.unwrap();
        let r2 = s.update(&k, b"v2".to_vec(), r1).await.unwrap();
        assert!(r2 > r1);
        let current = kv(&k, "v2", r1, r2);

        match s.update(&k, b"v3".to_vec(), r1).await {
            Err(StoreError::Conflict {
                key,
                expected,
                current: cur,
            }) => {
                assert_eq!((key.as_str(), expected), (k.as_str(), r1));
                assert_eq!(
                    cur,
                    Some(current.clone()),
                    "conflict returns the stored value"
                );
            }
            other => panic!("stale update: {other:?}"),
        }
        match s.delete(&k, Some(r1)).await {
            Err(StoreError::Conflict {
                expected,
                current: cur,
                ..
            }) => {
                assert_eq!(expected, r1);
                assert_eq!(cur, Some(current.clone()));
            }
            other => panic!("stale delete: {other:?}"),
        }
        assert_eq!(
            s.get(&k).await.unwrap(),
            Some(current.clone()),
            "nothing changed"
        );

        // Missing keys.
        assert_eq!(s.get(&missing).await.unwrap(), None);
        for expected in [0, r2] {
            match s.update(&missing, b"x".to_vec(), expected).await {
                Err(StoreError::NotFound(key)) => assert_eq!(key, missing),
                other => panic!("update of a missing key (expected {expected}): {other:?}"),
            }
        }
        assert_eq!(
            s.get(&missing).await.unwrap(),
            None,
            "update must not create"
        );
        for expected in [None, Some(r2)] {
            match s.delete(&missing, expected).await {
                Err(StoreError::NotFound(key)) => assert_eq!(key, missing),
                other => panic!("delete of a missing key: {other:?}"),
            }
        }

        let (r3, deleted) = s.delete(&k, Some(r2)).await.unwrap();
        assert!(r3 > r2);
        assert_eq!(deleted, current);
        assert!(matches!(
            s.update(&k, b"v4".to_vec(), r2).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.delete(&k, None).await,
            Err(StoreError::NotFound(_))
        ));
    }

    pub async fn list_paging(s: Arc<dyn Store>, p: &str) {
        let prefix = format!("{p}items/");
        // Created out of order; neighbours that share a string prefix.
        let mut order: Vec<usize> = (0..25).collect();
        order.reverse();
        order.swap(3, 17);
        for i in order {
            s.create(
                &format!("{prefix}item-{i:02}"),
                format!("v{i}").into_bytes(),
            )
            .await
            .unwrap();
        }
        for other in ["items", "items-other/x", "itemsz", "item/x"] {
            s.create(&format!("{p}{other}"), b"other".to_vec())
                .await
                .unwrap();
        }
        let full = s.list(&prefix, ListOptions::default()).await.unwrap();
        let expected: Vec<String> = (0..25).map(|i| format!("{prefix}item-{i:02}")).collect();
        assert_eq!(
            keys(&full.items),
            expected.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert!(!full.more);

        // Page at a fixed revision while the data changes underneath.
        let first = s
            .list(
                &prefix,
                ListOptions {
                    limit: Some(10),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(first.items.len(), 10);
        assert!(first.more);
        let rev = first.revision;
        s.create(&format!("{prefix}item-05a"), b"new".to_vec())
            .await
            .unwrap();
        s.create(&format!("{prefix}item-99"), b"new".to_vec())
            .await
            .unwrap();
        let stale = full.items[20].clone();
        s.update(&stale.key, b"changed".to_vec(), stale.mod_revision)
            .await
            .unwrap();

        let mut pages = vec![first];
        while pages.last().unwrap().more {
            let last_key = pages.last().unwrap().items.last().unwrap().key.clone();
            let page = s
                .list(
                    &prefix,
                    ListOptions {
                        revision: Some(rev),
                        limit: Some(10),
                        start_after: Some(last_key),
                    },
                )
                .await
                .unwrap();
            assert_eq!(page.revision, rev);
            pages.push(page);
            assert!(pages.len() < 10, "paging does not terminate");
        }
        let sizes: Vec<usize> = pages.iter().map(|p| p.items.len()).collect();
        assert_eq!(sizes, vec![10, 10, 5]);
        let paged: Vec<KeyValue> = pages.into_iter().flat_map(|p| p.items).collect();
        assert_eq!(
            paged, full.items,
            "pages at a fixed revision add up to the list"
        );

        // `more` is exact at the boundary.
        let exact = s
            .list(
                &prefix,
                ListOptions {
                    revision: Some(rev),
                    limit: Some(25),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(exact.items.len(), 25);
        assert!(!exact.more);
        let short = s
            .list(
                &prefix,
                ListOptions {
                    revision: Some(rev),
                    limit: Some(24),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(short.more);

        // The newest state includes the new keys, in order.
        let now = s.list(&prefix, ListOptions::default()).await.unwrap();
        assert_eq!(now.items.len(), 27);
        assert_eq!(now.items[6].key, format!("{prefix}item-05a"));
        assert_eq!(now.items[26].key, format!("{prefix}item-99"));

        // start_after past the end, and before the prefix.
        let none = s
            .list(
                &prefix,
                ListOptions {
                    start_after: Some(format!("{prefix}zzz")),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(none.items.is_empty() && !none.more);
        let beyond = s
            .list(
                &prefix,
                ListOptions {
                    start_after: Some(format!("{p}zzz")),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(beyond.items.is_empty());
        let all = s
            .list(
                &prefix,
                ListOptions {
                    start_after: Some("/".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(all.items.len(), 27);
    }

    pub async fn watch_replay_then_live(s: Arc<dyn Store>, p: &str) {
        let (x, y) = (format!("{p}x"), format!("{p}y"));
        let r0 = s.create(&x, b"x1".to_vec()).await.unwrap();
        let r1 = s.update(&x, b"x2".to_vec(), r0).await.unwrap();
        let r2 = s.create(&y, b"y1".to_vec()).await.unwrap();
        let (r3, _) = s.delete(&x, Some(r1)).await.unwrap();
        let r4 = s.create(&x, b"x3".to_vec()).await.unwrap();
        let r5 = s.update(&y, b"y2".to_vec(), r2).await.unwrap();

        let mut w = s.watch(p, r0).await.unwrap();
        let e = next_event(&mut w).await;
        assert_eq!(e.kind, EventKind::Put);
        assert_eq!(e.kv, kv(&x, "x2", r0, r1));
        assert_eq!(e.prev, Some(kv(&x, "x1", r0, r0)));
        let e = next_event(&mut w).await;
        assert_eq!(
            (e.kind, e.kv, e.prev),
            (EventKind::Put, kv(&y, "y1", r2, r2), None)
        );
        let e = next_event(&mut w).await;
        assert_eq!(e.kind, EventKind::Delete);
        assert_eq!(e.kv.key, x);
        assert_eq!(e.kv.mod_revision, r3);
        assert_eq!(
            e.kv.value, b"x2",
            "a delete event carries the deleted value"
        );
        assert_eq!(e.prev, Some(kv(&x, "x2", r0, r1)));
        let e = next_event(&mut w).await;
        assert_eq!(
            (e.kind, e.kv, e.prev),
            (EventKind::Put, kv(&x, "x3", r4, r4), None)
        );
        let e = next_event(&mut w).await;
        assert_eq!(e.kv, kv(&y, "y2", r2, r5));
        assert_eq!(e.prev, Some(kv(&y, "y1", r2, r2)));

        // Live from here on.
        let r6 = s.update(&x, b"x4".to_vec(), r4).await.unwrap();
        let e = next_event(&mut w).await;
        assert_eq!(e.kv, kv(&x, "x4", r4, r6));
        assert_eq!(e.prev, Some(kv(&x, "x3", r4, r4)));
        let (r7, _) = s.delete(&y, None).await.unwrap();
        let e = next_event(&mut w).await;
        assert_eq!(
            (e.kind, e.kv.key.as_str(), e.kv.mod_revision),
            (EventKind::Delete, y.as_str(), r7)
        );
        assert_eq!(e.kv.value, b"y2");
        assert_quiet(&mut w).await;

        // A later starting point replays exactly the changes after it.
        let mut w = s.watch(p, r3).await.unwrap();
        let revs = [r4, r5, r6, r7];
        for r in revs {
            assert_eq!(next_event(&mut w).await.kv.mod_revision, r);
        }
        assert_quiet(&mut w).await;
        // And from the newest revision: nothing until the next change.
        let mut w = s.watch(p, r7).await.unwrap();
        assert_quiet(&mut w).await;
        let r8 = s.create(&y, b"y3".to_vec()).await.unwrap();
        assert_eq!(next_event(&mut w).await.kv, kv(&y, "y3", r8, r8));
    }

    /// A watch started while a writer is busy must deliver every change
    /// exactly once, in order: the replay/live hand-over has no gap and no
    /// duplicate.
    pub async fn watch_races_with_writer(s: Arc<dyn Store>, p: &str) {
        const N: usize = 200;
        let k = format!("{p}counter");
        let r0 = s.create(&k, b"0".to_vec()).await.unwrap();
        let progress = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = {
            let (s, k, progress) = (s.clone(), k.clone(), progress.clone());
            tokio::spawn(async move {
                let mut revs = Vec::with_capacity(N);
                let mut rev = r0;
                for i in 1..=N {
                    rev = s.update(&k, i.to_string().into_bytes(), rev).await.unwrap();
                    revs.push(rev);
                    progress.store(i, std::sync::atomic::Ordering::SeqCst);
                }
                revs
            })
        };
        while progress.load(std::sync::atomic::Ordering::SeqCst) < N / 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut w = s.watch(p, r0).await.unwrap();
        let mut seen = Vec::with_capacity(N);
        for i in 1..=N {
            let e = next_event(&mut w).await;
            assert_eq!(
                e.kv.value,
                i.to_string().into_bytes(),
                "event {i} out of order"
            );
            assert_eq!(
                e.prev.map(|p| p.value),
                Some((i - 1).to_string().into_bytes())
            );
            seen.push(e.kv.mod_revision);
        }
        let revs = writer.await.unwrap();
        assert_eq!(seen, revs);
        assert_quiet(&mut w).await;
    }

    pub async fn watch_prefix_isolation(s: Arc<dyn Store>, p: &str) {
        let prefix = format!("{p}a/");
        let start = s.current_revision().await.unwrap();
        let mut w = s.watch(&prefix, start).await.unwrap();
        for key in ["a/1", "ab", "b/1", "a", "a/2", "/a/3"] {
            s.create(&format!("{p}{key}"), key.as_bytes().to_vec())
                .await
                .unwrap();
        }
        assert_eq!(next_event(&mut w).await.kv.key, format!("{p}a/1"));
        assert_eq!(next_event(&mut w).await.kv.key, format!("{p}a/2"));
        assert_quiet(&mut w).await;
    }

    /// Needs a store of its own: compaction is global.
    pub async fn compaction(s: Arc<dyn Store>, p: &str) {
        let (k1, k2, k3) = (format!("{p}k1"), format!("{p}k2"), format!("{p}k3"));
        let r1 = s.create(&k1, b"v1".to_vec()).await.unwrap();
        let r2 = s.update(&k1, b"v2".to_vec(), r1).await.unwrap();
        let r3 = s.create(&k2, b"gone".to_vec()).await.unwrap();
        let (r4, _) = s.delete(&k2, Some(r3)).await.unwrap();
        let r5 = s.create(&k3, b"v1".to_vec()).await.unwrap();
        let r6 = s.update(&k3, b"v2".to_vec(), r5).await.unwrap();
        assert_eq!(s.compacted_revision().await.unwrap(), 0);

        s.compact(r5).await.unwrap();
        assert_eq!(s.compacted_revision().await.unwrap(), r5);

        match s.list(p, at(r4)).await {
            Err(StoreError::Compacted {
                requested,
                compacted,
            }) => assert_eq!((requested, compacted), (r4, r5)),
            other => panic!("list below the compaction point: {other:?}"),
        }
        for after in [0, r1, r4] {
            match s.watch(p, after).await {
                Err(StoreError::Compacted {
                    requested,
                    compacted,
                }) => assert_eq!((requested, compacted), (after, r5)),
                Err(e) => panic!("watch after {after}: {e}"),
                Ok(_) => panic!("watch after {after} below the compaction point succeeded"),
            }
        }
        // The state at the compaction point is intact...
        let at_point = s.list(p, at(r5)).await.unwrap();
        assert_eq!(
            at_point.items,
            vec![kv(&k1, "v2", r1, r2), kv(&k3, "v1", r5, r5)]
        );
        // ...and so is the newest state; live keys keep their revisions.
        let now = s.list(p, ListOptions::default()).await.unwrap();
        assert_eq!(
            now.items,
            vec![kv(&k1, "v2", r1, r2), kv(&k3, "v2", r5, r6)]
        );
        assert_eq!(s.get(&k1).await.unwrap(), Some(kv(&k1, "v2", r1, r2)));
        assert_eq!(s.get(&k2).await.unwrap(), None);
        // Watching from the compaction point replays what came after.
        let mut w = s.watch(p, r5).await.unwrap();
        let e = next_event(&mut w).await;
        assert_eq!(e.kv, kv(&k3, "v2", r5, r6));
        assert_eq!(e.prev, Some(kv(&k3, "v1", r5, r5)));
        assert_quiet(&mut w).await;

        // Compacting to an older point is a no-op; to the future, an error.
        s.compact(r3).await.unwrap();
        assert_eq!(s.compacted_revision().await.unwrap(), r5);
        let future = s.current_revision().await.unwrap() + 1000;
        assert!(matches!(
            s.compact(future).await,
            Err(StoreError::FutureRevision(_))
        ));
        // Writes go on; live watchers see them.
        let r7 = s.update(&k1, b"v3".to_vec(), r2).await.unwrap();
        assert!(r7 > r6);
        assert_eq!(next_event(&mut w).await.kv, kv(&k1, "v3", r1, r7));
        // Compact everything: the deleted key's history is gone, live keys stay.
        s.compact(r7).await.unwrap();
        assert_eq!(s.compacted_revision().await.unwrap(), r7);
        let now = s.list(p, ListOptions::default()).await.unwrap();
        assert_eq!(
            now.items,
            vec![kv(&k1, "v3", r1, r7), kv(&k3, "v2", r5, r6)]
        );
        let r8 = s.create(&k2, b"back".to_vec()).await.unwrap();
        assert_eq!(s.get(&k2).await.unwrap(), Some(kv(&k2, "back", r8, r8)));
    }

    /// Needs a store of its own: compaction is global.
    pub async fn periodic_compaction(s: Arc<dyn Store>, p: &str) {
        let k = format!("{p}k");
        let mut rev = s.create(&k, b"0".to_vec()).await.unwrap();
        for i in 1..30 {
            rev = s.update(&k, i.to_string().into_bytes(), rev).await.unwrap();
        }
        let handle = tug_store::spawn_compactor(&s, Duration::from_millis(50), 5);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let compacted = loop {
            let c = s.compacted_revision().await.unwrap();
            if c > 0 {
                break c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "compactor never ran"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        drop(handle);
        assert_eq!(compacted, s.current_revision().await.unwrap() - 5);
        assert!(matches!(
            s.list(p, at(compacted - 1)).await,
            Err(StoreError::Compacted { .. })
        ));
        assert_eq!(s.get(&k).await.unwrap().unwrap().value, b"29");
        // Nothing new to compact: the next run leaves the point alone.
        assert_eq!(tug_store::compact_once(s.as_ref(), 5).await.unwrap(), None);

        // A floor (the watch cache's read position) holds compaction back
        // even when the retention window would allow more.
        for i in 0..20 {
            s.update(&k, format!("{}", 30 + i).into_bytes(), s.get(&k).await.unwrap().unwrap().mod_revision).await.unwrap();
        }
        let current = s.current_revision().await.unwrap();
        let floor = compacted + 3;
        assert_eq!(tug_store::compact_once_below(s.as_ref(), 5, floor).await.unwrap(), Some(floor));
        assert_eq!(s.compacted_revision().await.unwrap(), floor);
        assert!(s.watch(p, floor).await.is_ok(), "history after the floor is still there");
        assert!(current - 5 > floor, "the window alone would have compacted further");
        // Without the floor in the way, the window applies again.
        assert_eq!(tug_store::compact_once_below(s.as_ref(), 5, current).await.unwrap(), Some(current - 5));
    }

    pub async fn concurrent_cas_counter(s: Arc<dyn Store>, p: &str) {
        const TASKS: usize = 16;
        const INCREMENTS: usize = 100;
        let k = format!("{p}counter");
        s.create(&k, b"0".to_vec()).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let (s, k) = (s.clone(), k.clone());
            tasks.push(tokio::spawn(async move {
                let mut revs = Vec::new();
                let mut current = s.get(&k).await.unwrap().unwrap();
                for _ in 0..INCREMENTS {
                    loop {
                        let n: u64 = std::str::from_utf8(&current.value)
                            .unwrap()
                            .parse()
                            .unwrap();
                        let value = (n + 1).to_string().into_bytes();
                        match s.update(&k, value.clone(), current.mod_revision).await {
                            Ok(rev) => {
                                revs.push(rev);
                                current = KeyValue {
                                    value,
                                    mod_revision: rev,
                                    ..current
                                };
                                break;
                            }
                            Err(StoreError::Conflict {
                                expected,
                                current: Some(now),
                                ..
                            }) => {
                                assert!(now.mod_revision > expected);
                                current = now;
                            }
                            Err(e) => panic!("increment failed: {e}"),
                        }
                    }
                }
                revs
            }));
        }
        let mut revs = Vec::new();
        for t in tasks {
            revs.extend(t.await.unwrap());
        }
        let total = TASKS * INCREMENTS;
        let last = s.get(&k).await.unwrap().unwrap();
        assert_eq!(last.value, total.to_string().into_bytes(), "lost updates");
        revs.sort_unstable();
        revs.dedup();
        assert_eq!(revs.len(), total, "every increment has its own revision");
        assert_eq!(last.mod_revision, *revs.last().unwrap());
    }

    pub async fn concurrent_creates(s: Arc<dyn Store>, p: &str) {
        const TASKS: usize = 64;
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let s = s.clone();
            let k = format!("{p}k{i:02}");
            tasks.push(tokio::spawn(async move {
                let rev = s.create(&k, i.to_string().into_bytes()).await.unwrap();
                (k, rev)
            }));
        }
        let mut created = Vec::new();
        for t in tasks {
            created.push(t.await.unwrap());
        }
        let mut revs: Vec<Revision> = created.iter().map(|(_, r)| *r).collect();
        revs.sort_unstable();
        revs.dedup();
        assert_eq!(revs.len(), TASKS, "revisions must be distinct");
        let list = s.list(p, ListOptions::default()).await.unwrap();
        assert_eq!(list.items.len(), TASKS);
        created.sort();
        for ((k, rev), item) in created.iter().zip(&list.items) {
            assert_eq!(
                (&item.key, item.mod_revision, item.create_revision),
                (k, *rev, *rev)
            );
        }
    }

    pub async fn restart<F: Fixture>(f: &F, p: &str) {
        let s = f.open().await;
        let a = format!("{p}a");
        let first = s.create(&a, b"1".to_vec()).await.unwrap();
        let second = s.update(&a, b"2".to_vec(), first).await.unwrap();
        s.create(&format!("{p}b"), b"b".to_vec()).await.unwrap();
        let (_, _) = s.delete(&format!("{p}b"), None).await.unwrap();
        s.create(&format!("{p}c"), b"c".to_vec()).await.unwrap();
        let before = s.list(p, ListOptions::default()).await.unwrap();
        let rev = s.current_revision().await.unwrap();
        drop(s);

        f.restart().await;
        let s = f.open().await;
        assert_eq!(
            s.current_revision().await.unwrap(),
            rev,
            "revision preserved"
        );
        let after = s.list(p, ListOptions::default()).await.unwrap();
        assert_eq!(after.items, before.items, "data preserved");
        let past = s.list(p, at(first)).await.unwrap();
        assert_eq!(
            past.items,
            vec![kv(&a, "1", first, first)],
            "history preserved"
        );
        let next = s.update(&a, b"3".to_vec(), second).await.unwrap();
        assert!(next > rev, "revision keeps increasing: {next} <= {rev}");
        // History from before the restart is watchable.
        let mut w = s.watch(p, first).await.unwrap();
        assert_eq!(next_event(&mut w).await.kv.mod_revision, second);
    }
}

/// Instantiates the suite for one backend. `$shared` builds a fixture whose
/// store may be shared with other tests (each test uses its own prefix);
/// `$isolated` one with a store of its own.
macro_rules! conformance {
    ($backend:ident, shared: $shared:expr, isolated: $isolated:expr) => {
        mod $backend {
            use super::suite;
            #[allow(unused_imports)]
            use super::support::{self, Fixture};

            fn prefix(test: &str) -> String {
                format!("/conformance/{}/{}/", stringify!($backend), test)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ordering_and_past_revisions() {
                let f = $shared;
                suite::ordering(f.open().await, &prefix("ordering")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn create_if_absent() {
                let f = $shared;
                suite::create_if_absent(f.open().await, &prefix("create")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cas_conflicts_and_not_found() {
                let f = $shared;
                suite::cas_conflicts_and_not_found(f.open().await, &prefix("cas")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn list_paging() {
                let f = $shared;
                suite::list_paging(f.open().await, &prefix("paging")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_replay_then_live() {
                let f = $shared;
                suite::watch_replay_then_live(f.open().await, &prefix("watch")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_races_with_writer() {
                let f = $shared;
                suite::watch_races_with_writer(f.open().await, &prefix("watch-race")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_prefix_isolation() {
                let f = $shared;
                suite::watch_prefix_isolation(f.open().await, &prefix("watch-prefix")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_cas_counter() {
                let f = $shared;
                suite::concurrent_cas_counter(f.open().await, &prefix("counter")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_creates() {
                let f = $shared;
                suite::concurrent_creates(f.open().await, &prefix("creates")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn compaction() {
                let f = $isolated;
                suite::compaction(f.open().await, &prefix("compaction")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn periodic_compaction() {
                let f = $isolated;
                suite::periodic_compaction(f.open().await, &prefix("periodic")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn restart_preserves_data_and_revision() {
                let f = $isolated;
                suite::restart(&f, &prefix("restart")).await;
            }
        }
    };
}

conformance!(sqlite,
    shared: support::SqliteFixture::new(),
    isolated: support::SqliteFixture::new());
conformance!(etcd,
    shared: support::EtcdSharedFixture::new(),
    isolated: support::EtcdIsolatedFixture::new());

mod sqlite_only {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    use tug_store::sqlite::{SqliteOptions, SqliteStore};

    use super::*;

    fn wal_size(db: &std::path::Path) -> u64 {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wal_is_truncated_after_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let store = SqliteStore::open(&db).unwrap();
        let s: Arc<dyn Store> = Arc::new(store.clone());
        // ~12 MB of history on 8 keys, written by 8 concurrent writers.
        let mut tasks = Vec::new();
        for t in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let k = format!("/wal/{t}");
                let mut rev = s.create(&k, vec![0; 4096]).await.unwrap();
                for i in 1..375u32 {
                    let mut v = vec![0u8; 4096];
                    v[..4].copy_from_slice(&i.to_le_bytes());
                    rev = s.update(&k, v, rev).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let wal_before = wal_size(&db);
        let db_before = std::fs::metadata(&db).unwrap().len();
        assert!(
            wal_before > 1 << 20,
            "WAL should have grown, is {wal_before} bytes"
        );

        s.compact(s.current_revision().await.unwrap())
            .await
            .unwrap();
        assert_eq!(
            wal_size(&db),
            0,
            "WAL not truncated after compaction (was {wal_before})"
        );
        let db_after = std::fs::metadata(&db).unwrap().len();
        assert!(
            db_after < db_before / 4,
            "free pages not returned: {db_before} -> {db_after} bytes"
        );
        let now = s.list("/wal/", ListOptions::default()).await.unwrap();
        assert_eq!(now.items.len(), 8);
        for item in &now.items {
            assert_eq!(&item.value[..4], &374u32.to_le_bytes());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_batches_concurrent_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("state.db")).unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(128));
        let mut tasks = Vec::new();
        for i in 0..128 {
            let (store, barrier) = (store.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store.create(&format!("/gc/{i}"), vec![1]).await.unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let stats = store.writer_stats();
        assert_eq!(stats.writes, 128);
        assert!(
            stats.commits < stats.writes && stats.max_batch >= 2,
            "concurrent writes were not grouped: {stats:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lagging_watcher_ends_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteOptions {
            watch_buffer: 16,
            ..Default::default()
        };
        let store = SqliteStore::open_with(dir.path().join("state.db"), opts).unwrap();
        let start = store.current_revision().await.unwrap();
        let mut w = store.watch("/lag/", start).await.unwrap();
        for i in 0..100 {
            store.create(&format!("/lag/{i:03}"), vec![]).await.unwrap();
        }
        // Whatever is delivered is gap-free; then the stream fails and ends.
        let mut expected = start + 1;
        loop {
            match tokio::time::timeout(EVENT_TIMEOUT, w.next()).await.unwrap() {
                Some(Ok(e)) => {
                    assert_eq!(e.kv.mod_revision, expected);
                    expected += 1;
                }
                Some(Err(StoreError::Backend(msg))) => {
                    assert!(msg.contains("fell behind"), "{msg}");
                    break;
                }
                other => panic!("expected a lag error, got {other:?}"),
            }
        }
        assert!(expected < start + 100, "the watcher cannot have kept up");
        assert!(w.next().await.is_none(), "stream ends after the error");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_point_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let store = SqliteStore::open(&db).unwrap();
        let r1 = store.create("/c/a", b"1".to_vec()).await.unwrap();
        let r2 = store.update("/c/a", b"2".to_vec(), r1).await.unwrap();
        let (r3, _) = store.delete("/c/a", None).await.unwrap();
        store.compact(r3).await.unwrap();
        drop(store);
        let store = SqliteStore::open(&db).unwrap();
        assert_eq!(store.compacted_revision().await.unwrap(), r3);
        assert_eq!(
            store.current_revision().await.unwrap(),
            r3,
            "revision survives the removal of its row"
        );
        assert!(matches!(
            store.list("/c/", at(r2)).await,
            Err(StoreError::Compacted { .. })
        ));
        let r4 = store.create("/c/a", b"3".to_vec()).await.unwrap();
        assert_eq!(r4, r3 + 1, "revisions are never reused");
    }

    const CHILD_ENV: &str = "TUG_STORE_DURABILITY_CHILD_DB";

    /// The child half: concurrent writers that print each acknowledged key.
    /// Runs until killed (or, as a safety net, for 60 s).
    fn durability_child(db: &str) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = SqliteStore::open(db).unwrap();
            let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
            let mut tasks = Vec::new();
            for t in 0..8 {
                let (store, out) = (store.clone(), out.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0.. {
                        let key = format!("/durable/{t}/{i}");
                        let rev = store.create(&key, key.clone().into_bytes()).await.unwrap();
                        let mut out = out.lock().unwrap();
                        // Printed only once the write is acknowledged.
                        writeln!(out, "ACK {key} {rev}").unwrap();
                        out.flush().unwrap();
                    }
                }));
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        panic!("durability child was not killed");
    }

    /// Acknowledged writes survive `kill -9`: a child process writes with
    /// concurrent writers and reports every acknowledged key; it is killed
    /// mid-stream, then every reported key must be in the reopened database.
    #[test]
    fn acknowledged_writes_survive_kill_9() {
        if let Ok(db) = std::env::var(CHILD_ENV) {
            durability_child(&db);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sqlite_only::acknowledged_writes_survive_kill_9",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &db)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut acked: Vec<(String, Revision)> = Vec::new();
        let mut killed = false;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("ACK ") else {
                continue;
            };
            let (key, rev) = rest.split_once(' ').unwrap();
            acked.push((key.to_owned(), rev.parse().unwrap()));
            if acked.len() == 400 && !killed {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        assert!(killed, "child ended before it was killed: {status:?}");
        assert!(!status.success());
        assert!(acked.len() >= 400);

        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = SqliteStore::open(&db).unwrap();
            for (key, rev) in &acked {
                let got = store.get(key).await.unwrap();
                let got = got.unwrap_or_else(|| panic!("acknowledged {key} (rev {rev}) lost"));
                assert_eq!(got.mod_revision, *rev);
                assert_eq!(got.value, key.as_bytes());
            }
            let max = acked.iter().map(|(_, r)| *r).max().unwrap();
            assert!(store.current_revision().await.unwrap() >= max);
        });
    }
}

mod misc {
    use super::support::{self, Fixture};
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_picks_the_backend_from_the_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let s = tug_store::open("", dir.path()).await.unwrap();
        let r = s.create("/open/sqlite", b"x".to_vec()).await.unwrap();
        assert!(dir.path().join("db").join("state.db").is_file());
        drop(s);
        let s = tug_store::open("", dir.path()).await.unwrap();
        assert_eq!(
            s.get("/open/sqlite").await.unwrap().unwrap().mod_revision,
            r
        );
        drop(s);

        let etcd = support::EtcdSharedFixture::new();
        let endpoints = format!("{} , {}", etcd.url(), etcd.url());
        let s = tug_store::open(&endpoints, dir.path()).await.unwrap();
        let r = s.create("/open/etcd", b"y".to_vec()).await.unwrap();
        let direct = etcd.open().await;
        assert_eq!(
            direct
                .get("/open/etcd")
                .await
                .unwrap()
                .unwrap()
                .mod_revision,
            r
        );

        for bad in ["ftp://x", "https://127.0.0.1:2379", "127.0.0.1:2379"] {
            match tug_store::open(bad, dir.path()).await {
                Err(StoreError::Backend(msg)) => {
                    assert!(msg.contains(bad.split(',').next().unwrap()), "{msg}")
                }
                Err(e) => panic!("{bad}: unexpected error {e}"),
                Ok(_) => panic!("{bad}: accepted"),
            }
        }
    }
}
