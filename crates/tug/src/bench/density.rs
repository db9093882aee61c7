//! `tug bench density`: many hollow nodes and many pods created through
//! workload controllers, as upstream's density test (30 pods per node,
//! one replicated workload per 100 nodes, each in a namespace of its own).
//!
//! A fresh `tug server` (embedded SQLite in a temp dir, scheduler and
//! controllers in-process) and a `tug hollow` process with the nodes. Once
//! every node is Ready, the bench creates the namespaces and one Deployment
//! (or ReplicaSet) in each, and watches every pod they make until all are
//! Running. Meanwhile a probe client GETs single objects and LISTs a page of
//! pods once a second (the API latency while the cluster is saturated), and
//! the RSS of both processes is sampled. Progress goes to stderr; the table
//! to stdout.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::{Method, StatusCode};

use super::calibrate;
use super::cluster::{self, Cluster, HOLLOW_PODS_PER_NODE, Phase, RssSampler};
use super::procs::Rss;
use super::{fmt_count, fmt_mb, fmt_rate, fmt_us, loadavg, percentile};

/// Total RSS goal of the server and the hollow process together.
const GOAL_RSS: u64 = 8 << 30;
/// Upstream's API call latency SLOs (p99): single-object calls 1 s,
/// namespace-scoped LISTs 5 s.
const SLO_GET_US: u64 = 1_000_000;
const SLO_LIST_US: u64 = 5_000_000;
const LABEL: &str = "tugboat.io/bench";
const LABEL_VALUE: &str = "density";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Deployment,
    Replicaset,
}

#[derive(clap::Args)]
pub struct DensityBenchArgs {
    /// Hollow nodes.
    #[arg(long, default_value_t = 5000)]
    pub nodes: usize,
    /// Pods per node (upstream's density: 30); pods = nodes × this.
    #[arg(long, default_value_t = 30)]
    pub pods_per_node: usize,
    /// Total pods instead of nodes × pods-per-node.
    #[arg(long)]
    pub pods: Option<usize>,
    /// Nodes per namespace: one workload per namespace, its replicas the
    /// namespace's share of the pods (upstream's density: 100).
    #[arg(long, default_value_t = 100)]
    pub nodes_per_namespace: usize,
    /// What creates the pods.
    #[arg(long, value_enum, default_value = "deployment")]
    pub workload: Workload,
    /// CPU request of each pod.
    #[arg(long, default_value = "10m")]
    pub pod_cpu: String,
    /// Memory request of each pod.
    #[arg(long, default_value = "10Mi")]
    pub pod_memory: String,
    /// Pause between probe rounds (a GET of a workload, a GET of a node and a
    /// LIST of 500 pods).
    #[arg(long, default_value_t = 1000)]
    pub probe_interval_ms: u64,
    /// Run the scheduler and the controllers as `tug scheduler` and `tug
    /// controller-manager` processes of their own instead of inside `tug
    /// server`, so that the memory of each shows apart.
    #[arg(long)]
    pub split: bool,
    /// Stop (and report what was reached) when the processes together hold
    /// more than this much memory.
    #[arg(long, default_value_t = 12.0)]
    pub max_rss_gib: f64,
    /// Stop when the number of Running pods has not moved for this many
    /// seconds and a LIST agrees with the watch (pods stuck for good).
    #[arg(long, default_value_t = 120)]
    pub stall_secs: u64,
    /// Give up when not every pod is Running after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout_secs: u64,
    /// Where the temporary data dir goes (default: the system temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

#[derive(Default)]
struct Probes {
    get_us: Vec<u64>,
    list_us: Vec<u64>,
    errors: usize,
    first_error: Option<String>,
}

#[derive(Default)]
struct Outcome {
    nodes_ready: Option<Duration>,
    namespaces: usize,
    workloads_created: Option<Duration>,
    all_created: Option<Duration>,
    all_bound: Option<Duration>,
    all_running: Option<Duration>,
    milestones: [Option<Duration>; 4],
    created: usize,
    bound: usize,
    running: usize,
    /// Sorted, microseconds: first seen (ADDED) → Running, per pod.
    startup_us: Vec<u64>,
    probes: Probes,
    rss_server_idle: Option<u64>,
    /// Each process's RSS at the end (`current`) and its VmHWM (`peak`).
    rss: Vec<(&'static str, Rss)>,
    /// The highest sum over the processes of the 1 s samples.
    rss_total_peak: Option<u64>,
    /// What the bench's pod watch went through.
    watch: String,
    /// [`calibrate::measure`] before the cluster started.
    machine_speed: String,
    error: Option<String>,
}

pub async fn run(a: DensityBenchArgs) -> anyhow::Result<()> {
    if a.nodes == 0 || a.nodes_per_namespace == 0 {
        bail!("--nodes and --nodes-per-namespace must be positive");
    }
    let pods = a.pods.unwrap_or(a.nodes * a.pods_per_node);
    if pods > a.nodes * HOLLOW_PODS_PER_NODE {
        bail!("{pods} pods do not fit on {} nodes of {HOLLOW_PODS_PER_NODE} pods", a.nodes);
    }
    let started = Instant::now();
    let load_start = loadavg();
    let mut r = Outcome { machine_speed: calibrate::measure().await, ..Default::default() };
    eprintln!(
        "tug bench density: {} nodes, {} pods via {:?}s, one per {} nodes",
        fmt_count(a.nodes),
        fmt_count(pods),
        a.workload,
        a.nodes_per_namespace
    );
    if let Err(e) = run_density(&a, pods, &mut r).await {
        eprintln!("!! density failed: {e:#}");
        r.error = Some(format!("{e:#}"));
    }
    print_report(&a, pods, &r, started.elapsed(), &load_start);
    if r.all_running.is_none() {
        bail!("not every pod reached Running");
    }
    Ok(())
}

fn workload_body(w: Workload, name: &str, replicas: usize, cpu: &str, memory: &str) -> String {
    let (api, kind) = match w {
        Workload::Deployment => ("apps/v1", "Deployment"),
        Workload::Replicaset => ("apps/v1", "ReplicaSet"),
    };
    format!(
        r#"{{"apiVersion":"{api}","kind":"{kind}","metadata":{{"name":"{name}","labels":{{"{LABEL}":"{LABEL_VALUE}"}}}},"spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"{name}"}}}},"template":{{"metadata":{{"labels":{{"app":"{name}","{LABEL}":"{LABEL_VALUE}"}}}},"spec":{{"containers":[{{"name":"pause","image":"registry.k8s.io/pause:3.10","resources":{{"requests":{{"cpu":"{cpu}","memory":"{memory}"}}}}}}]}}}}}}}}"#
    )
}

fn workload_path(w: Workload, ns: &str) -> String {
    match w {
        Workload::Deployment => format!("/apis/apps/v1/namespaces/{ns}/deployments"),
        Workload::Replicaset => format!("/apis/apps/v1/namespaces/{ns}/replicasets"),
    }
}

#[derive(Clone, Copy)]
struct PodState {
    bound: bool,
    running: bool,
    seen: Instant,
    rv: u64,
}

/// The pods as the watch (and, when it stalls, a LIST) shows them.
#[derive(Default)]
struct Tracker {
    t0: Option<Instant>,
    pods: usize,
    state: HashMap<String, PodState>,
    created: usize,
    bound: usize,
    running: usize,
    /// Events older than what was already applied for their pod (ignored).
    stale: usize,
    startup_us: Vec<u64>,
    all_created: Option<Duration>,
    all_bound: Option<Duration>,
    all_running: Option<Duration>,
    /// When 50 %, 90 %, 99 % and 99.9 % of the pods were Running.
    milestones: [Option<Duration>; 4],
}

const MILESTONES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

impl Tracker {
    fn apply(&mut self, ev: cluster::PodEvent) {
        let key = format!("{}/{}", ev.namespace, ev.name);
        if ev.deleted {
            if let Some(s) = self.state.remove(&key) {
                self.created -= 1;
                self.bound -= usize::from(s.bound);
                self.running -= usize::from(s.running);
            }
            return;
        }
        let s = self.state.entry(key).or_insert_with(|| {
            self.created += 1;
            PodState { bound: false, running: false, seen: ev.at, rv: 0 }
        });
        if ev.rv != 0 && ev.rv <= s.rv {
            // A LIST repeating what the watch showed, or an older event.
            self.stale += usize::from(ev.rv < s.rv);
            return;
        }
        s.rv = ev.rv;
        if ev.bound && !s.bound {
            s.bound = true;
            self.bound += 1;
        }
        let is_running = ev.phase == Phase::Running;
        if is_running && !s.running {
            self.startup_us.push(ev.at.duration_since(s.seen).as_micros() as u64);
            self.running += 1;
        } else if !is_running && s.running {
            self.running -= 1;
        }
        s.running = is_running;
        let t0 = self.t0.expect("t0 set");
        if self.created >= self.pods && self.all_created.is_none() {
            self.all_created = Some(ev.at.duration_since(t0));
        }
        if self.bound >= self.pods && self.all_bound.is_none() {
            self.all_bound = Some(ev.at.duration_since(t0));
        }
        if self.running >= self.pods && self.all_running.is_none() {
            self.all_running = Some(ev.at.duration_since(t0));
        }
        for (m, q) in self.milestones.iter_mut().zip(MILESTONES) {
            if m.is_none() && self.running as f64 >= (q * self.pods as f64).ceil() {
                *m = Some(ev.at.duration_since(t0));
            }
        }
    }
}

async fn run_density(a: &DensityBenchArgs, pods: usize, r: &mut Outcome) -> anyhow::Result<()> {
    let work_dir = a.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let per_node = pods.div_ceil(a.nodes);
    let (cpu, memory) = cluster::node_size(per_node, &a.pod_cpu, &a.pod_memory, ("4", "16Gi"))?;
    let mut c = Cluster::start(&work_dir, "tug-bench-density-", &[], a.split, a.nodes, &cpu, &memory).await?;
    let sampler = RssSampler::start(c.pids(), Duration::from_secs(1));
    let mut admin = c.server.endpoint.connect().await?;
    r.rss_server_idle = Some(c.server.guard.rss()?.current);
    let ready = c.wait_nodes_ready(&mut admin, Duration::from_secs(120 + a.nodes as u64 / 10)).await?;
    r.nodes_ready = Some(ready);
    eprintln!("  {} nodes Ready after {:.1} s", a.nodes, ready.as_secs_f64());

    // The watch first, so that no pod is missed.
    let selector = format!("labelSelector={LABEL}%3D{LABEL_VALUE}");
    let rv = cluster::collection_rv(&mut admin, "/api/v1/pods", &format!("?{selector}")).await?;
    let (mut events, watch, watch_stats) =
        cluster::spawn_pod_watch(c.server.endpoint.clone(), "/api/v1/pods".into(), selector.clone(), rv);

    // One workload per namespace, its replicas the namespace's share.
    let namespaces = a.nodes.div_ceil(a.nodes_per_namespace).min(pods).max(1);
    r.namespaces = namespaces;
    let t0 = Instant::now();
    for i in 0..namespaces {
        let ns = format!("density-{i}");
        cluster::create_namespace(&mut admin, &ns).await?;
        let replicas = pods / namespaces + usize::from(i < pods % namespaces);
        let body = workload_body(a.workload, "density", replicas, &a.pod_cpu, &a.pod_memory);
        admin
            .expect(Method::POST, &workload_path(a.workload, &ns), Some(body.into()), StatusCode::CREATED)
            .await
            .with_context(|| format!("creating the workload in {ns}"))?;
    }
    r.workloads_created = Some(t0.elapsed());
    eprintln!(
        "  {namespaces} {:?}s created in {:.1} s; waiting for {} pods to be Running",
        a.workload,
        t0.elapsed().as_secs_f64(),
        fmt_count(pods)
    );

    // The probe client.
    let probes = Arc::new(Mutex::new(Probes::default()));
    let probe = {
        let ep = c.server.endpoint.clone();
        let probes = probes.clone();
        let (w, nodes, interval) = (a.workload, a.nodes, Duration::from_millis(a.probe_interval_ms.max(10)));
        tokio::spawn(async move {
            let mut conn = ep.connect().await?;
            let mut tick = tokio::time::interval(interval);
            for round in 0usize.. {
                tick.tick().await;
                let ns = format!("density-{}", round % namespaces);
                let requests = [
                    (false, format!("{}/density", workload_path(w, &ns))),
                    (false, format!("/api/v1/nodes/hollow-node-{}", round * 7919 % nodes)),
                    (true, format!("/api/v1/namespaces/{ns}/pods?limit=500")),
                ];
                for (list, path) in requests {
                    let start = Instant::now();
                    let res = conn.call(Method::GET, &path, None).await;
                    let us = start.elapsed().as_micros() as u64;
                    let broken = {
                        let mut p = probes.lock().expect("probe lock");
                        match res {
                            Ok((StatusCode::OK, _)) => {
                                if list { p.list_us.push(us) } else { p.get_us.push(us) }
                                false
                            }
                            Ok((status, body)) => {
                                p.errors += 1;
                                p.first_error.get_or_insert_with(|| {
                                    format!("GET {path}: {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]))
                                });
                                false
                            }
                            Err(e) => {
                                p.errors += 1;
                                p.first_error.get_or_insert_with(|| format!("GET {path}: {e:#}"));
                                true
                            }
                        }
                    };
                    if broken {
                        conn = ep.connect().await?;
                    }
                }
            }
            anyhow::Ok(())
        })
    };

    let mut t = Tracker { t0: Some(t0), pods, ..Default::default() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout_secs);
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    let mut last = (Instant::now(), 0usize);
    let max_rss = (a.max_rss_gib * (1u64 << 30) as f64) as u64;
    let mut rss_tick = tokio::time::interval(Duration::from_secs(1));
    // When the watched count stops moving short of the goal, a LIST says
    // whether the cluster is stuck or the watch missed something.
    let mut last_progress = (Instant::now(), 0usize);
    let mut reconciled = 0usize;
    let mut stalled_since: Option<Instant> = None;
    while t.running < pods {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else {
                    watch.await.context("pod watch panicked")??;
                    bail!("the pod watch ended");
                };
                t.apply(ev);
            }
            _ = rss_tick.tick() => {
                if let Err(e) = c.check_rss(max_rss) {
                    eprintln!("  {e:#}");
                    r.error = Some(format!("{e:#} (with {} of {pods} pods Running, {} created)", t.running, t.created));
                    break;
                }
            }
            _ = tick.tick() => {
                c.check_alive()?;
                let now = Instant::now();
                let rate = (t.running.saturating_sub(last.1)) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, t.running);
                let peaks = sampler.peaks();
                let p99 = {
                    let p = probes.lock().expect("probe lock");
                    let mut g = p.get_us.clone();
                    let mut l = p.list_us.clone();
                    g.sort_unstable();
                    l.sort_unstable();
                    format!("GET p99 {} LIST p99 {}", fmt_us(percentile(&g, 0.99)), fmt_us(percentile(&l, 0.99)))
                };
                eprintln!(
                    "  {:>5.0} s: pods created {}, bound {}, Running {} of {pods} ({rate:.0} Running/s); {}; RSS {}; load {}",
                    t0.elapsed().as_secs_f64(),
                    t.created,
                    t.bound,
                    t.running,
                    p99,
                    peaks.fmt_last(),
                    loadavg(),
                );
                if t.running != last_progress.1 {
                    last_progress = (now, t.running);
                    stalled_since = None;
                } else if now.duration_since(last_progress.0) >= Duration::from_secs(30) {
                    let (listed, _) = cluster::list_pods(&c.server.endpoint, "/api/v1/pods", &format!("&{selector}")).await?;
                    let listed_running = listed.iter().filter(|e| e.phase == Phase::Running).count();
                    eprintln!(
                        "  no progress for 30 s: a LIST shows {} pods, {listed_running} Running; the watch showed {} and {}",
                        listed.len(),
                        t.created,
                        t.running
                    );
                    let before = t.running;
                    for ev in listed {
                        t.apply(ev);
                    }
                    reconciled += t.running.saturating_sub(before);
                    if t.running == before {
                        let since = *stalled_since.get_or_insert(last_progress.0);
                        if now.duration_since(since) >= Duration::from_secs(a.stall_secs) {
                            let why = format!(
                                "stalled: {} of {pods} pods Running ({} bound) and none more for {} s, as a LIST confirms",
                                t.running, t.bound, a.stall_secs
                            );
                            eprintln!("  {why}");
                            r.error = Some(why);
                            break;
                        }
                    }
                    last_progress = (Instant::now(), t.running);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                eprintln!("  timed out after {} s with {}/{pods} Running", a.timeout_secs, t.running);
                break;
            }
        }
    }
    r.watch = format!(
        "{}; {} older events ignored; {reconciled} Running pods found only by a LIST",
        watch_stats.summary(),
        t.stale
    );
    eprintln!("  pod watch: {}", r.watch);
    let (created, bound, running) = (t.created, t.bound, t.running);
    (r.all_created, r.all_bound, r.all_running) = (t.all_created, t.all_bound, t.all_running);
    r.milestones = t.milestones;
    let mut startup_us = t.startup_us;
    probe.abort();
    drop(events);
    watch.abort();
    r.created = created;
    r.bound = bound;
    r.running = running;
    startup_us.sort_unstable();
    r.startup_us = startup_us;
    {
        let mut p = probes.lock().expect("probe lock");
        p.get_us.sort_unstable();
        p.list_us.sort_unstable();
        r.probes = std::mem::take(&mut *p);
    }
    c.check_alive()?;
    r.rss = c.rss()?;
    r.rss_total_peak = Some(sampler.peaks().total.max(r.rss.iter().map(|(_, x)| x.current).sum()));
    if r.all_running.is_none() && r.error.is_none() {
        r.error = Some(format!("only {running} of {pods} pods Running after {} s", a.timeout_secs));
    }
    drop(sampler);
    drop(admin);
    drop(c);
    Ok(())
}

fn print_report(a: &DensityBenchArgs, pods: usize, r: &Outcome, total: Duration, load_start: &str) {
    let na = || "–".to_string();
    let secs = |d: Option<Duration>| d.map(|d| format!("{:.1} s", d.as_secs_f64())).unwrap_or_else(na);
    let header: Vec<String> = ["metric", "goal", "result", "pass/fail"].iter().map(|s| s.to_string()).collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut add = |m: &str, goal: &str, v: String, ok: Option<Option<bool>>| {
        rows.push(vec![m.into(), goal.into(), v, ok.map(super::verdict).unwrap_or("").into()]);
    };
    add("hollow nodes", "", fmt_count(a.nodes), None);
    add(
        "pods (workloads)",
        "",
        format!("{} ({} {:?}s of ~{})", fmt_count(pods), r.namespaces, a.workload, fmt_count(pods / r.namespaces.max(1))),
        None,
    );
    add("nodes registered → all Ready", "", secs(r.nodes_ready), None);
    add("**first workload create → all pods Running**", "", secs(r.all_running), None);
    let m = r.milestones.iter().map(|d| d.map(|d| format!("{:.0}", d.as_secs_f64())).unwrap_or_else(na)).collect::<Vec<_>>();
    add("  → 50 % / 90 % / 99 % / 99.9 % of the pods Running", "", format!("{} s", m.join(" / ")), None);
    add("  → all pods created (seen on the watch)", "", secs(r.all_created), None);
    add("  → all pods bound", "", secs(r.all_bound), None);
    add(
        "pods Running / created / bound at the end",
        "",
        format!("{} / {} / {}", fmt_count(r.running), fmt_count(r.created), fmt_count(r.bound)),
        None,
    );
    add(
        "mean pods Running/s",
        "",
        r.all_running.map(|d| fmt_rate(pods as f64 / d.as_secs_f64().max(1e-9))).unwrap_or_else(na),
        None,
    );
    add(
        "pod first seen → Running p50 / p99",
        "",
        if r.startup_us.is_empty() {
            na()
        } else {
            format!("{} / {}", fmt_us(percentile(&r.startup_us, 0.5)), fmt_us(percentile(&r.startup_us, 0.99)))
        },
        None,
    );
    let p = &r.probes;
    add(
        &format!("API GET (workload, node) p50 / p99 during the run ({} samples)", p.get_us.len()),
        "p99 ≤ 1 s",
        format!("{} / {}", fmt_us(percentile(&p.get_us, 0.5)), fmt_us(percentile(&p.get_us, 0.99))),
        Some(percentile(&p.get_us, 0.99).map(|v| v <= SLO_GET_US)),
    );
    add(
        &format!("API LIST 500 pods of a namespace p50 / p99 ({} samples)", p.list_us.len()),
        "p99 ≤ 5 s",
        format!("{} / {}", fmt_us(percentile(&p.list_us, 0.5)), fmt_us(percentile(&p.list_us, 0.99))),
        Some(percentile(&p.list_us, 0.99).map(|v| v <= SLO_LIST_US)),
    );
    add("  probe errors", "", p.errors.to_string(), None);
    add("server RSS idle (before nodes)", "", r.rss_server_idle.map(fmt_mb).unwrap_or_else(na), None);
    let names = r.rss.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" / ");
    let per = |f: fn(&Rss) -> u64| {
        if r.rss.is_empty() { na() } else { r.rss.iter().map(|(_, x)| fmt_mb(f(x))).collect::<Vec<_>>().join(" / ") }
    };
    add(&format!("peak RSS (VmHWM): {names}"), "", per(|x| x.peak), None);
    let hwm_sum: u64 = r.rss.iter().map(|(_, x)| x.peak).sum();
    add(
        "**peak RSS, all processes** (sum of VmHWM; peak of the 1 s sampled sum)",
        "≤ 8 GiB",
        match r.rss_total_peak {
            Some(t) if !r.rss.is_empty() => format!("{} ({})", fmt_mb(hwm_sum), fmt_mb(t)),
            _ => na(),
        },
        Some((!r.rss.is_empty()).then_some(hwm_sum <= GOAL_RSS)),
    );
    add(&format!("RSS at the end: {names}"), "", per(|x| x.current), None);
    add("wall time", "", format!("{:.0} s", total.as_secs_f64()), None);
    add("machine speed: a pod's JSON round trip (lower is faster)", "", r.machine_speed.clone(), None);
    cluster::print_table(&header, &rows);
    println!();
    println!(
        "* Machine: {} cores shared by the bench client, `tug server` ({}SQLite){} and `tug hollow` (lease renewals every 10 s and node status every 5 minutes per node, upstream's nodeStatusReportFrequency, and a status write per pod start).",
        cluster::cores(),
        if a.split { "API server only, " } else { "API server, scheduler and controllers in one process, " },
        if a.split { ", `tug scheduler`, `tug controller-manager` (all controllers)" } else { "" },
    );
    println!(
        "* Pods: one pause container requesting {} CPU / {} memory, made by {:?}s (one per namespace); the bench watches pods labelled {LABEL}={LABEL_VALUE} cluster-wide and times from the first workload create request to the watch event of the last pod reaching Running.",
        a.pod_cpu, a.pod_memory, a.workload
    );
    println!(
        "* Probe: every {} ms one client GETs the namespace's workload, GETs a node and LISTs the first 500 pods of a namespace (limit=500), round robin over the namespaces. Goals are upstream's API call latency SLOs (p99, single objects 1 s, namespaced LISTs 5 s).",
        a.probe_interval_ms
    );
    println!("{}", calibrate::FOOTNOTE);
    println!(
        "* Total {:.0} s; 1-minute load average {load_start} at the start, {} at the end.",
        total.as_secs_f64(),
        loadavg()
    );
    println!("* The bench's pod watch: {}.", r.watch);
    if let Some(e) = &p.first_error {
        println!("* First probe error: {e}");
    }
    if let Some(e) = &r.error {
        println!("* FAILED (figures are those measured before): {}", e.lines().next().unwrap_or(""));
    }
}
