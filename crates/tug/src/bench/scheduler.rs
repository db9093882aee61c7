//! `tug bench scheduler`: pods scheduled per second, end to end through the
//! API server, as upstream's scheduler_perf `SchedulingBasic` workload.
//!
//! For every (nodes, pods) pair: a fresh `tug server` (embedded SQLite in a
//! temp dir, the scheduler in-process, controllers off unless asked for —
//! scheduler_perf runs only an API server and the scheduler) and a `tug
//! hollow` process with the nodes. Once every node is Ready, the init pods
//! are created and bound (not measured, as upstream's `initPods`), then the
//! measured pods are created by many concurrent clients while one watch on
//! their namespace records when each gets `spec.nodeName`. The figure is
//! pods / (last bound − first create request). Pods are upstream's
//! `pod-default.yaml`: one pause container, 100m CPU and 500Mi requests
//! (= limits).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::{Method, StatusCode};

use super::calibrate;
use super::client::Conn;
use super::cluster::{self, Cluster, HOLLOW_PODS_PER_NODE, RssSampler};
use super::procs;
use super::{Throughput, collect_throughput, fmt_count, fmt_mb, fmt_rate, fmt_us, loadavg, percentile};

/// Upstream's scheduler_perf thresholds (SchedulingBasic, pods/s) at 5,000
/// nodes: the CI fails below them.
const UPSTREAM_FLOOR: &[(usize, usize, f64)] = &[(5_000, 10_000, 680.0), (5_000, 50_000, 810.0)];
const GOAL: f64 = 1_000.0;

#[derive(clap::Args)]
pub struct SchedulerBenchArgs {
    /// Hollow node counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    pub nodes: Vec<usize>,
    /// Measured pod counts, comma-separated; each runs with each node count
    /// (pairs whose pods cannot fit at 110 pods per node are skipped).
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    pub pods: Vec<usize>,
    /// Pods created and bound before the measured ones, not measured
    /// (upstream: 1,000 before 10,000 and 5,000 before 50,000). Default: a
    /// tenth of the measured pods.
    #[arg(long)]
    pub init_pods: Option<usize>,
    /// Concurrent creating clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// HTTP/2 connections the creating clients are spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// CPU request (= limit) of each pod.
    #[arg(long, default_value = "100m")]
    pub pod_cpu: String,
    /// Memory request (= limit) of each pod.
    #[arg(long, default_value = "500Mi")]
    pub pod_memory: String,
    /// Also run the controllers in the server (scheduler_perf does not).
    #[arg(long)]
    pub controllers: bool,
    /// Stop a pair (and report what was reached) when the server and the
    /// hollow process together hold more than this much memory.
    #[arg(long, default_value_t = 12.0)]
    pub max_rss_gib: f64,
    /// Give up on a pair when its pods are not all bound after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
    /// Where the temporary data dirs go (default: the system temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// One (nodes, pods) pair's figures.
#[derive(Default)]
struct Run {
    nodes: usize,
    pods: usize,
    init_pods: usize,
    node_cpu: String,
    node_memory: String,
    nodes_ready: Option<Duration>,
    init_rate: Option<f64>,
    creates: Option<Throughput>,
    bound: usize,
    /// First create request sent → last pod bound.
    span: Option<Duration>,
    /// Sorted, microseconds: create request sent → bound event received.
    to_bound_us: Vec<u64>,
    /// The most pods bound in any 5 s window, per second.
    peak_5s: Option<f64>,
    /// CPU used during the measured pods (first create → last bound) by
    /// the server, the hollow process and the bench itself, per pod.
    cpu_per_pod: Option<[Duration; 3]>,
    rss_server_idle: Option<u64>,
    rss_server_end: Option<u64>,
    rss_hollow_end: Option<u64>,
    rss_server_peak: Option<u64>,
    rss_hollow_peak: Option<u64>,
    rss_total_peak: Option<u64>,
    load: String,
    /// [`calibrate::measure`] just before the pair's server started.
    machine_speed: String,
    seconds: f64,
    error: Option<String>,
    skipped: Option<String>,
}

impl Run {
    fn rate(&self) -> Option<f64> {
        self.span.map(|s| self.bound as f64 / s.as_secs_f64().max(1e-9))
    }
}

pub async fn run(a: SchedulerBenchArgs) -> anyhow::Result<()> {
    if a.nodes.is_empty() || a.pods.is_empty() {
        bail!("--nodes and --pods must not be empty");
    }
    cluster::cpu_millis(&a.pod_cpu)?;
    cluster::memory_bytes(&a.pod_memory)?;
    let work_dir = a.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let started = Instant::now();
    let load_start = loadavg();
    let mut runs = Vec::new();
    for &pods in &a.pods {
        for &nodes in &a.nodes {
            let t0 = Instant::now();
            let mut r = Run { nodes, pods, machine_speed: calibrate::measure().await, ..Default::default() };
            let l0 = loadavg();
            eprintln!("== {} nodes, {} pods ==", fmt_count(nodes), fmt_count(pods));
            if let Err(e) = run_pair(&a, &work_dir, &mut r).await {
                eprintln!("!! {} nodes / {} pods failed: {e:#}", nodes, pods);
                r.error = Some(format!("{e:#}"));
            }
            r.seconds = t0.elapsed().as_secs_f64();
            r.load = format!("{l0} → {}", loadavg());
            eprintln!("== done in {:.0} s ==", r.seconds);
            runs.push(r);
        }
    }
    print_report(&a, &runs, started.elapsed(), &load_start);
    if runs.iter().all(|r| r.error.is_some() || r.skipped.is_some()) {
        bail!("no pair completed");
    }
    Ok(())
}

async fn run_pair(a: &SchedulerBenchArgs, work_dir: &std::path::Path, r: &mut Run) -> anyhow::Result<()> {
    let capacity = r.nodes * HOLLOW_PODS_PER_NODE;
    if r.pods > capacity {
        let why = format!("{} pods do not fit on {} nodes of {HOLLOW_PODS_PER_NODE} pods", r.pods, r.nodes);
        eprintln!("skipped: {why}");
        r.skipped = Some(why);
        return Ok(());
    }
    r.init_pods = a.init_pods.unwrap_or(r.pods / 10).min(capacity - r.pods);
    let per_node = (r.init_pods + r.pods).div_ceil(r.nodes);
    // Upstream's node-default.yaml (4 CPU, 32Gi), larger when the pods need it.
    let (cpu, memory) = cluster::node_size(per_node, &a.pod_cpu, &a.pod_memory, ("4", "32Gi"))?;
    r.node_cpu = cpu.clone();
    r.node_memory = memory.clone();

    let server_args: Vec<String> =
        if a.controllers { vec![] } else { vec!["--disable-controller-manager".into()] };
    let mut c = Cluster::start(work_dir, "tug-bench-sched-", &server_args, false, r.nodes, &cpu, &memory).await?;
    let sampler = RssSampler::start(c.pids(), Duration::from_secs(1));
    let mut admin = c.server.endpoint.connect().await?;
    r.rss_server_idle = Some(c.server.guard.rss()?.current);
    let ready_timeout = Duration::from_secs(120 + r.nodes as u64 / 10);
    r.nodes_ready = Some(c.wait_nodes_ready(&mut admin, ready_timeout).await?);
    eprintln!("  {} nodes Ready after {:.1} s", r.nodes, r.nodes_ready.unwrap().as_secs_f64());

    let mut conns = Vec::new();
    for _ in 0..a.connections.max(1) {
        conns.push(c.server.endpoint.connect().await?);
    }
    let timeout = Duration::from_secs(a.timeout_secs);
    if r.init_pods > 0 {
        cluster::create_namespace(&mut admin, "bench-init").await?;
        eprintln!("init: {} pods (not measured)", fmt_count(r.init_pods));
        let b = batch(&mut c, &mut admin, &conns, "bench-init", r.init_pods, a, timeout).await?;
        r.init_rate = Some(b.bound as f64 / b.span.as_secs_f64().max(1e-9));
        if b.bound < r.init_pods {
            bail!("only {} of {} init pods were bound: {}", b.bound, r.init_pods, b.stop.unwrap_or_default());
        }
    }
    cluster::create_namespace(&mut admin, "bench").await?;
    eprintln!("measured: {} pods, {} clients over {} connections", fmt_count(r.pods), a.clients, conns.len());
    // Server, hollow process, this process (0).
    let (server, hollow) = (c.server.guard.pid(), c.hollow.pid());
    let cpu = || -> anyhow::Result<[Duration; 3]> { Ok([procs::cpu_time(server)?, procs::cpu_time(hollow)?, procs::cpu_time(0)?]) };
    let cpu_before = cpu()?;
    let b = batch(&mut c, &mut admin, &conns, "bench", r.pods, a, timeout).await?;
    let cpu_after = cpu()?;
    if b.bound > 0 {
        r.cpu_per_pod = Some(std::array::from_fn(|i| (cpu_after[i] - cpu_before[i]) / b.bound as u32));
    }
    r.bound = b.bound;
    r.span = Some(b.span);
    r.to_bound_us = b.to_bound_us;
    r.peak_5s = b.peak_5s;
    r.creates = Some(b.creates);
    if r.bound < r.pods {
        r.error = Some(format!("only {} of {} pods bound: {}", r.bound, r.pods, b.stop.unwrap_or_default()));
    }
    eprintln!(
        "  {} (first create → last bound {:.1} s), create→bound p50 {} p99 {}",
        r.rate().map(fmt_rate).unwrap_or_default(),
        b.span.as_secs_f64(),
        fmt_us(percentile(&r.to_bound_us, 0.5)),
        fmt_us(percentile(&r.to_bound_us, 0.99)),
    );
    c.check_alive()?;
    let rss = c.rss()?;
    let (s, h) = (rss[0].1, rss[1].1);
    r.rss_server_end = Some(s.current);
    r.rss_hollow_end = Some(h.current);
    r.rss_server_peak = Some(s.peak);
    r.rss_hollow_peak = Some(h.peak);
    r.rss_total_peak = Some(sampler.peaks().total);
    drop(sampler);
    drop(conns);
    drop(admin);
    drop(c);
    Ok(())
}

struct Batch {
    creates: Throughput,
    bound: usize,
    span: Duration,
    to_bound_us: Vec<u64>,
    peak_5s: Option<f64>,
    /// Why the batch stopped before every pod was bound.
    stop: Option<String>,
}

fn pod_body(name: &str, cpu: &str, memory: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"containers":[{{"name":"pause","image":"registry.k8s.io/pause:3.10","ports":[{{"containerPort":80}}],"resources":{{"limits":{{"cpu":"{cpu}","memory":"{memory}"}},"requests":{{"cpu":"{cpu}","memory":"{memory}"}}}}}}]}}}}"#
    ))
}

fn pod_index(name: &str) -> Option<usize> {
    name.strip_prefix("pod-")?.parse().ok()
}

/// Creates `n` pods in `ns` (clients in parallel) while watching the
/// namespace; returns when all are bound or at `timeout`.
async fn batch(
    c: &mut Cluster,
    admin: &mut Conn,
    conns: &[Conn],
    ns: &str,
    n: usize,
    a: &SchedulerBenchArgs,
    timeout: Duration,
) -> anyhow::Result<Batch> {
    let collection = format!("/api/v1/namespaces/{ns}/pods");
    let rv = cluster::collection_rv(admin, &collection, "").await?;
    let (mut events, watch, watch_stats) =
        cluster::spawn_pod_watch(c.server.endpoint.clone(), collection.clone(), String::new(), rv);
    let base = Instant::now();
    // Microseconds after `base` + 1 at which each create request went out (0: not yet).
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let created = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..a.clients.max(1) {
        let mut conn = conns[i % conns.len()].clone();
        let (sent, next, created) = (sent.clone(), next.clone(), created.clone());
        let path = collection.clone();
        let (cpu, memory) = (a.pod_cpu.clone(), a.pod_memory.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let body = pod_body(&format!("pod-{i:06}"), &cpu, &memory);
                let start = Instant::now();
                sent[i].store(start.duration_since(base).as_micros() as u64 + 1, Ordering::Relaxed);
                match conn.call(Method::POST, &path, Some(body)).await {
                    Ok((StatusCode::CREATED, _)) => {
                        lat.push(start.elapsed().as_micros() as u64);
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, body)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| {
                            format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]))
                        });
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let creating = tokio::spawn(collect_throughput(base, tasks));

    let mut bound_at: Vec<u64> = vec![0; n];
    let mut bound = 0usize;
    let mut last_bound = base;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    let mut last_report = (Instant::now(), 0usize);
    let mut stop = None;
    while bound < n {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else {
                    let r = watch.await.context("pod watch panicked")?;
                    r?;
                    bail!("the pod watch ended");
                };
                if !ev.bound || ev.deleted {
                    continue;
                }
                let Some(i) = pod_index(&ev.name).filter(|i| *i < n) else { continue };
                if bound_at[i] == 0 {
                    bound_at[i] = ev.at.duration_since(base).as_micros() as u64 + 1;
                    bound += 1;
                    last_bound = last_bound.max(ev.at);
                }
            }
            _ = tick.tick() => {
                c.check_alive()?;
                if let Err(e) = c.check_rss((a.max_rss_gib * (1u64 << 30) as f64) as u64) {
                    eprintln!("  {e:#}");
                    stop = Some(format!("{e:#}"));
                    break;
                }
                let now = Instant::now();
                let rate = (bound - last_report.1) as f64 / now.duration_since(last_report.0).as_secs_f64();
                eprintln!(
                    "  {:>4.0} s: created {}/{n}, bound {bound}/{n} ({rate:.0}/s over the last 5 s)",
                    base.elapsed().as_secs_f64(),
                    created.load(Ordering::Relaxed),
                );
                last_report = (now, bound);
            }
            _ = tokio::time::sleep_until(deadline) => {
                eprintln!("  timed out with {bound}/{n} bound");
                stop = Some(format!("timed out after {timeout:?}"));
                break;
            }
        }
    }
    let creates = creating.await.context("the creating clients panicked")??;
    eprintln!("  pod watch: {}", watch_stats.summary());
    drop(events);
    watch.abort();
    let first_sent = sent.iter().map(|s| s.load(Ordering::Relaxed)).filter(|&s| s > 0).min().unwrap_or(1) - 1;
    let span = last_bound.duration_since(base).saturating_sub(Duration::from_micros(first_sent));
    let mut to_bound_us: Vec<u64> = bound_at
        .iter()
        .zip(sent.iter())
        .filter(|(b, s)| **b > 0 && s.load(Ordering::Relaxed) > 0)
        .map(|(b, s)| b.saturating_sub(s.load(Ordering::Relaxed)))
        .collect();
    to_bound_us.sort_unstable();
    let peak_5s = peak_rate(&bound_at, 5_000_000);
    Ok(Batch { creates, bound, span, to_bound_us, peak_5s, stop })
}

/// The most events in any window of `window_us` (times in microseconds, 0 =
/// none), per second; `None` when they span less than one window.
fn peak_rate(times: &[u64], window_us: u64) -> Option<f64> {
    let mut t: Vec<u64> = times.iter().copied().filter(|&t| t > 0).collect();
    t.sort_unstable();
    if t.last()? - t[0] < window_us {
        return None;
    }
    let mut best = 0;
    let mut j = 0;
    for i in 0..t.len() {
        while j < t.len() && t[j] - t[i] < window_us {
            j += 1;
        }
        best = best.max(j - i);
    }
    (!t.is_empty()).then(|| best as f64 / (window_us as f64 / 1e6))
}

fn print_report(a: &SchedulerBenchArgs, runs: &[Run], total: Duration, load_start: &str) {
    let na = || "–".to_string();
    let mut header = vec!["metric".to_string(), "goal".to_string()];
    for r in runs {
        header.push(format!("{} nodes, {} pods", fmt_count(r.nodes), fmt_count(r.pods)));
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut add = |metric: &str, goal: &str, f: &dyn Fn(&Run) -> String| {
        let mut row = vec![metric.to_string(), goal.to_string()];
        row.extend(runs.iter().map(|r| if r.skipped.is_some() { "skipped".into() } else { f(r) }));
        rows.push(row);
    };
    add("**pods scheduled/s** (first create → last bound)", "≥ 1,000/s", &|r| {
        r.rate()
            .map(|x| {
                let verdict = if x >= GOAL { "PASS" } else { "FAIL" };
                format!("**{}** {verdict}", fmt_rate(x))
            })
            .unwrap_or_else(na)
    });
    add("  vs upstream scheduler_perf floor (5,000 nodes)", "", &|r| {
        let floor = UPSTREAM_FLOOR.iter().find(|(n, p, _)| *n == r.nodes && *p == r.pods);
        match (floor, r.rate()) {
            (Some((_, _, f)), Some(x)) => format!("{:.2}x of {}", x / f, fmt_rate(*f)),
            _ => na(),
        }
    });
    add("  best 5 s window", "", &|r| r.peak_5s.map(fmt_rate).unwrap_or_else(na));
    add("CPU per pod: server / hollow / bench client", "", &|r| {
        r.cpu_per_pod
            .map(|[s, h, b]| format!("{:.2} / {:.2} / {:.2} ms", s.as_secs_f64() * 1e3, h.as_secs_f64() * 1e3, b.as_secs_f64() * 1e3))
            .unwrap_or_else(na)
    });
    add("  pods bound / measured", "", &|r| format!("{} / {}", fmt_count(r.bound), fmt_count(r.pods)));
    add("  first create → last bound", "", &|r| {
        r.span.map(|s| format!("{:.1} s", s.as_secs_f64())).unwrap_or_else(na)
    });
    add("create → bound p50 / p99", "", &|r| {
        if r.to_bound_us.is_empty() {
            return na();
        }
        format!("{} / {}", fmt_us(percentile(&r.to_bound_us, 0.5)), fmt_us(percentile(&r.to_bound_us, 0.99)))
    });
    add("pod creates/s (API, measured pods)", "", &|r| r.creates.as_ref().map(|t| fmt_rate(t.rate())).unwrap_or_else(na));
    add("create request p50 / p99", "", &|r| {
        r.creates
            .as_ref()
            .map(|t| {
                let mut s = format!("{} / {}", fmt_us(t.p(0.5)), fmt_us(t.p(0.99)));
                if t.errors > 0 {
                    s.push_str(&format!(" ({} errors)", t.errors));
                }
                s
            })
            .unwrap_or_else(na)
    });
    add("init pods (not measured), their rate", "", &|r| {
        format!("{} at {}", fmt_count(r.init_pods), r.init_rate.map(fmt_rate).unwrap_or_else(na))
    });
    add("hollow node size (CPU / memory, 110 pods)", "", &|r| format!("{} / {}", r.node_cpu, r.node_memory));
    add("nodes registered → all Ready", "", &|r| {
        r.nodes_ready.map(|d| format!("{:.1} s", d.as_secs_f64())).unwrap_or_else(na)
    });
    add("server RSS idle (before nodes)", "", &|r| r.rss_server_idle.map(fmt_mb).unwrap_or_else(na));
    add("server RSS end / peak", "", &|r| match (r.rss_server_end, r.rss_server_peak) {
        (Some(e), Some(p)) => format!("{} / {}", fmt_mb(e), fmt_mb(p)),
        _ => na(),
    });
    add("hollow RSS end / peak", "", &|r| match (r.rss_hollow_end, r.rss_hollow_peak) {
        (Some(e), Some(p)) => format!("{} / {}", fmt_mb(e), fmt_mb(p)),
        _ => na(),
    });
    add("server + hollow RSS, peak of the sum (1 s samples)", "", &|r| r.rss_total_peak.map(fmt_mb).unwrap_or_else(na));
    add("1-min load average, start → end", "", &|r| r.load.clone());
    add("machine speed: a pod's JSON round trip (lower is faster)", "", &|r| r.machine_speed.clone());
    add("wall time of the pair", "", &|r| format!("{:.0} s", r.seconds));
    cluster::print_table(&header, &rows);
    println!();
    println!(
        "* Machine: {} cores shared by the bench client, `tug server` (API server + scheduler{}, SQLite) and `tug hollow`; the hollow kubelets renew a Lease per node every 10 s, post node status every 5 minutes (upstream's nodeStatusReportFrequency) and set every bound pod Running while the pods are being scheduled.",
        cluster::cores(),
        if a.controllers { " + controllers" } else { "" }
    );
    println!(
        "* Pods: upstream's pod-default.yaml (pause container, port 80, requests = limits = {} CPU / {} memory), created by {} clients over {} HTTP/2 connections, named pod-NNNNNN in one namespace; init pods (upstream's initPods) in another namespace first.",
        a.pod_cpu, a.pod_memory, a.clients, a.connections
    );
    println!("* Rate: measured pods / (last bound event on the bench's watch − first create request). Upstream's scheduler_perf reports the mean of 1 s samples of its scheduler's own counter, with an in-process API server and no kubelets; its CI floors are 680 pods/s (5,000 nodes, 10,000 pods) and 810 pods/s (5,000 nodes, 50,000 pods).");
    println!("{}", calibrate::FOOTNOTE);
    println!("* create → bound: from just before each create request to the watch event carrying spec.nodeName. RSS: VmRSS / VmHWM from /proc.");
    println!("* CPU per pod: user + system time each process used from the first create to the last bound event (/proc/PID/stat), over the pods bound. It is what the work costs rather than how the 2 shared cores happened to be split, but it moves too (2.5-3.4 ms for the server in back-to-back runs of one binary): compare binaries in alternating runs. The hollow process still has Running updates to send after the last bind.");
    println!(
        "* Total bench time {:.0} s; 1-minute load average {load_start} at the start, {} at the end.",
        total.as_secs_f64(),
        loadavg()
    );
    for r in runs {
        let name = format!("{} nodes / {} pods", fmt_count(r.nodes), fmt_count(r.pods));
        if let Some(s) = &r.skipped {
            println!("* {name}: skipped ({s}).");
        }
        if let Some(e) = &r.error {
            println!("* {name} FAILED (figures are those measured before): {}", e.lines().next().unwrap_or(""));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rate_finds_the_busiest_window() {
        // 0 = not bound; 3 events within 1 s, then one more 10 s later.
        let t = [0, 1_000_000, 1_500_000, 1_900_000, 12_000_000];
        assert_eq!(peak_rate(&t, 1_000_000), Some(3.0));
        assert_eq!(peak_rate(&t, 5_000_000), Some(0.6));
        assert_eq!(peak_rate(&t, 20_000_000), None, "shorter than the window");
        assert_eq!(peak_rate(&[0, 0], 5_000_000), None);
        assert_eq!(pod_index("pod-000042"), Some(42));
        assert_eq!(pod_index("other"), None);
    }
}
