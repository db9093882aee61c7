//! One task driving a periodic per-node chore (lease renewal, node status
//! heartbeat) for every hollow node.
//!
//! Why not a task (or a timer) per node: with thousands of nodes that is
//! thousands of wakeups in lockstep, and bursts of requests every interval.
//! Here each node has a due time, spread evenly over the interval at start,
//! kept in one heap; at most `concurrency` requests are in flight, so the
//! load on the API server is a steady trickle of N/interval requests per
//! second and the number of connections the client opens stays bounded
//! (kube's client speaks HTTP/1.1: one connection per concurrent request).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::Shared;

/// How one attempt went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Try again soon (with per-node exponential backoff), not after a full interval.
    Failed,
}

/// First retry after a failure; doubles per consecutive failure up to the interval.
const RETRY_BASE: Duration = Duration::from_millis(200);

/// Runs `work(index, state)` for every node once per `interval`, forever.
///
/// Paused nodes (a hung kubelet) and nodes deleted from the API are
/// skipped. An index sent on `urgent` runs as soon as a slot is free (a
/// node resumed, or the node controller marked it not ready): a real
/// kubelet notices such things within its 10s status loop, not a full
/// report interval later.
pub async fn run<S, F, Fut>(
    what: &'static str,
    shared: Arc<Shared>,
    interval: Duration,
    concurrency: usize,
    states: Vec<S>,
    mut urgent: mpsc::UnboundedReceiver<usize>,
    work: F,
) where
    S: Send + 'static,
    F: Fn(usize, S) -> Fut,
    Fut: Future<Output = (S, Outcome)> + Send + 'static,
{
    let n = states.len();
    if n == 0 {
        return;
    }
    let concurrency = concurrency.max(1);
    let mut states: Vec<Option<S>> = states.into_iter().map(Some).collect();
    // Each node has at most one live heap entry: entries carry the node's
    // generation and stale ones are dropped when popped.
    let mut generation = vec![0u64; n];
    let mut due = vec![Instant::now(); n];
    let mut failures: Vec<u32> = vec![0; n];
    let mut urgent_pending = vec![false; n];
    let mut heap: BinaryHeap<Reverse<(Instant, usize, u64)>> = BinaryHeap::with_capacity(n);
    let start = Instant::now();
    for (i, d) in due.iter_mut().enumerate() {
        // Spread the first round over the interval (registration just did
        // the work, so nothing is late).
        *d = start + interval.mul_f64((i + 1) as f64 / n as f64);
        heap.push(Reverse((*d, i, 0)));
    }
    let mut inflight: FuturesUnordered<BoxFuture<'static, (usize, S, Outcome)>> = FuturesUnordered::new();
    let mut lag_warned = Instant::now() - Duration::from_secs(3600);

    loop {
        let next_due = heap.peek().map(|Reverse((t, _, _))| *t);
        let can_start = inflight.len() < concurrency;
        tokio::select! {
            Some((i, s, outcome)) = inflight.next(), if !inflight.is_empty() => {
                states[i] = Some(s);
                let now = Instant::now();
                let next = match outcome {
                    Outcome::Done => {
                        failures[i] = 0;
                        // Keep the node's phase in the interval; if we fell
                        // behind by more than a whole interval, re-spread from
                        // now instead of firing everything at once.
                        let mut next = due[i] + interval;
                        if next < now {
                            next = now + interval.mul_f64((i + 1) as f64 / n as f64);
                        }
                        next
                    }
                    Outcome::Failed => {
                        failures[i] = failures[i].saturating_add(1);
                        let backoff = RETRY_BASE.saturating_mul(1u32 << failures[i].min(16)).min(interval);
                        now + backoff
                    }
                };
                generation[i] += 1;
                if std::mem::take(&mut urgent_pending[i]) {
                    due[i] = now;
                    heap.push(Reverse((now, i, generation[i])));
                } else {
                    due[i] = next;
                    heap.push(Reverse((next, i, generation[i])));
                }
            }
            Some(i) = urgent.recv() => {
                if i >= n {
                    continue;
                }
                if states[i].is_none() {
                    urgent_pending[i] = true;
                } else {
                    generation[i] += 1;
                    due[i] = Instant::now();
                    heap.push(Reverse((due[i], i, generation[i])));
                }
            }
            _ = sleep_until_opt(next_due), if can_start && next_due.is_some() => {
                let now = Instant::now();
                while inflight.len() < concurrency {
                    let Some(Reverse((t, i, g))) = heap.peek().copied() else { break };
                    if t > now {
                        break;
                    }
                    heap.pop();
                    if g != generation[i] || states[i].is_none() {
                        continue;
                    }
                    let lag = now.saturating_duration_since(t);
                    if lag > interval / 2 && now.duration_since(lag_warned) > Duration::from_secs(10) {
                        lag_warned = now;
                        tracing::warn!(what, lag_ms = lag.as_millis() as u64, concurrency, "falling behind: raise the concurrency or the interval");
                    }
                    let node = &shared.nodes[i];
                    if node.is_paused() || node.is_gone() {
                        // Not done, just not due: look again next interval
                        // (resume sends an urgent kick).
                        generation[i] += 1;
                        due[i] = t + interval;
                        heap.push(Reverse((due[i].max(now), i, generation[i])));
                        continue;
                    }
                    let s = states[i].take().expect("state present when not in flight");
                    let fut = work(i, s);
                    inflight.push(Box::pin(async move {
                        let (s, o) = fut.await;
                        (i, s, o)
                    }));
                }
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
