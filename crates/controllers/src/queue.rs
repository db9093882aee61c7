//! A work queue with client-go's semantics, built on kube-runtime's
//! [`scheduler`]: an item added several times before a worker takes it is
//! processed once; an item is never processed by two workers at once (an
//! add while it is in flight runs it again afterwards); failures are retried
//! after a per-item exponential backoff that [`Queue::forget`] resets.
//!
//! kube-runtime's `Controller` is this plus one reflector for one resource
//! type. The garbage collector's keys span every resource type and its
//! state is a graph rather than one store, so it drives this queue directly.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use kube::runtime::scheduler::{ScheduleRequest, scheduler};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream_compat::UnboundedReceiverStream;

/// Per-item exponential backoff: `base * 2^failures`, at most `max`
/// (upstream's `ItemExponentialFailureRateLimiter`).
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Upstream's default controller rate limiter: 5ms doubling up to 1000s.
    pub const CONTROLLER: Backoff = Backoff { base: Duration::from_millis(5), max: Duration::from_secs(1000) };

    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.checked_pow(failures.min(31)).unwrap_or(u32::MAX);
        self.base.checked_mul(factor).map(|d| d.min(self.max)).unwrap_or(self.max)
    }
}

/// The producer side of a queue; cheap to clone.
pub struct Queue<T> {
    tx: mpsc::UnboundedSender<ScheduleRequest<T>>,
    failures: Arc<Mutex<HashMap<T, u32>>>,
    backoff: Backoff,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { tx: self.tx.clone(), failures: self.failures.clone(), backoff: self.backoff }
    }
}

/// The consumer side: run it with [`Workers::run`].
pub struct Workers<T> {
    rx: mpsc::UnboundedReceiver<ScheduleRequest<T>>,
}

/// A new queue.
pub fn queue<T: Clone + Eq + Hash>(backoff: Backoff) -> (Queue<T>, Workers<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Queue { tx, failures: Arc::new(Mutex::new(HashMap::new())), backoff }, Workers { rx })
}

impl<T: Clone + Eq + Hash> Queue<T> {
    /// Processes `item` as soon as a worker is free.
    pub fn add(&self, item: T) {
        self.add_after(item, Duration::ZERO);
    }

    /// Processes `item` after `delay` (or earlier if it is added again sooner).
    pub fn add_after(&self, item: T, delay: Duration) {
        // Sending fails only once the workers are gone, when nothing is left to do.
        let _ = self.tx.send(ScheduleRequest { message: item, run_at: Instant::now() + delay });
    }

    /// Retries `item` after its backoff, which grows with each call until
    /// [`Queue::forget`].
    pub fn add_rate_limited(&self, item: T) {
        let failures = {
            let mut f = self.failures.lock().expect("queue lock");
            let n = f.entry(item.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        self.add_after(item, self.backoff.delay(failures));
    }

    /// Resets `item`'s backoff (after it succeeded).
    pub fn forget(&self, item: &T) {
        self.failures.lock().expect("queue lock").remove(item);
    }

    /// How many times `item` failed since it was last forgotten.
    pub fn failures(&self, item: &T) -> u32 {
        self.failures.lock().expect("queue lock").get(item).copied().unwrap_or(0)
    }
}

impl<T: Clone + Eq + Hash + Unpin + Send + 'static> Workers<T> {
    /// Takes items as they come due and runs `handler` on up to
    /// `concurrency` of them at once, never two with the same key. Runs until
    /// every [`Queue`] handle is dropped and nothing is left due.
    pub async fn run<F, Fut>(self, concurrency: usize, handler: F)
    where
        F: Fn(T) -> Fut,
        Fut: Future<Output = ()>,
    {
        let concurrency = concurrency.max(1);
        let mut sched = std::pin::pin!(scheduler(UnboundedReceiverStream::new(self.rx)));
        let mut in_flight: HashSet<T> = HashSet::new();
        let mut running = FuturesUnordered::new();
        enum Next<T> {
            Finished(T),
            Start(T),
            Closed,
        }
        loop {
            let next = futures::future::poll_fn(|cx| {
                if let Poll::Ready(Some(done)) = running.poll_next_unpin(cx) {
                    return Poll::Ready(Next::Finished(done));
                }
                if running.len() < concurrency {
                    // Items in flight stay pending in the scheduler until they finish.
                    match sched.as_mut().hold_unless(|item| !in_flight.contains(item)).poll_next_unpin(cx) {
                        Poll::Ready(Some(item)) => return Poll::Ready(Next::Start(item)),
                        Poll::Ready(None) if running.is_empty() => return Poll::Ready(Next::Closed),
                        Poll::Ready(None) | Poll::Pending => {}
                    }
                }
                Poll::Pending
            })
            .await;
            match next {
                Next::Finished(item) => {
                    in_flight.remove(&item);
                }
                Next::Start(item) => {
                    in_flight.insert(item.clone());
                    running.push(handler(item.clone()).map(move |()| item));
                }
                Next::Closed => return,
            }
        }
    }
}

/// `tokio_stream::wrappers::UnboundedReceiverStream`, without the dependency.
mod tokio_stream_compat {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::sync::mpsc;

    pub struct UnboundedReceiverStream<T>(mpsc::UnboundedReceiver<T>);

    impl<T> UnboundedReceiverStream<T> {
        pub fn new(rx: mpsc::UnboundedReceiver<T>) -> Self {
            UnboundedReceiverStream(rx)
        }
    }

    impl<T> futures::Stream for UnboundedReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn backoff_doubles_up_to_max() {
        let b = Backoff { base: Duration::from_millis(5), max: Duration::from_secs(1) };
        assert_eq!(b.delay(0), Duration::from_millis(5));
        assert_eq!(b.delay(3), Duration::from_millis(40));
        assert_eq!(b.delay(20), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn deduplicates_and_never_runs_a_key_twice_at_once() {
        let (q, workers) = queue::<u32>(Backoff::CONTROLLER);
        let runs = Arc::new(AtomicUsize::new(0));
        let concurrent = Arc::new(Mutex::new(HashSet::new()));
        let overlap = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            q.add(1);
        }
        q.add(2);
        let q2 = q.clone();
        let (r, c, o) = (runs.clone(), concurrent.clone(), overlap.clone());
        let task = tokio::spawn(workers.run(4, move |item| {
            let (r, c, o, q2) = (r.clone(), c.clone(), o.clone(), q2.clone());
            async move {
                if !c.lock().unwrap().insert(item) {
                    o.fetch_add(1, Ordering::SeqCst);
                }
                let n = r.fetch_add(1, Ordering::SeqCst);
                if item == 1 && n < 3 {
                    // Re-adding while in flight runs it again, later.
                    q2.add(1);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                c.lock().unwrap().remove(&item);
            }
        }));
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(q);
        let total = runs.load(Ordering::SeqCst);
        assert!((3..=5).contains(&total), "five adds of 1 collapse into one run plus the re-adds: {total}");
        assert_eq!(overlap.load(Ordering::SeqCst), 0, "one key never runs twice at once");
        task.abort();
    }

    #[tokio::test]
    async fn rate_limited_items_wait_and_forget_resets() {
        let (q, workers) = queue::<&'static str>(Backoff { base: Duration::from_millis(100), max: Duration::from_secs(10) });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let start = Instant::now();
        let task = tokio::spawn(workers.run(1, move |item| {
            let s = s.clone();
            async move { s.lock().unwrap().push((item, start.elapsed())) }
        }));
        q.add_rate_limited("a");
        q.add_rate_limited("b");
        q.add_rate_limited("b");
        assert_eq!(q.failures(&"b"), 2);
        q.forget(&"b");
        assert_eq!(q.failures(&"b"), 0);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        for (_, at) in &seen {
            assert!(*at >= Duration::from_millis(90), "a rate-limited add waits for its backoff: {seen:?}");
        }
        task.abort();
    }
}
