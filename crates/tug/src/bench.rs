//! `tug bench ...`: benchmarks that print a table.
//!
//! `tug bench api` starts the real server (this binary, `tug server`) as a
//! child process once per store backend — the embedded SQLite store and a
//! real etcd that the bench starts itself from `/usr/bin/etcd` — and drives it
//! over HTTPS (HTTP/2, client-certificate auth with the admin cert from the
//! server's kubeconfig). It measures create throughput and latency, LIST
//! latency, watch fan-out latency and server memory, plus a raw-store
//! baseline (the `tug-store` crate called directly, no API server) so the API
//! overhead shows as a ratio. Progress goes to stderr; the table to stdout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};

mod calibrate;
mod client;
mod cluster;
mod density;
mod pod_startup;
mod procs;
mod scheduler;

use client::{Conn, Endpoint};

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Which,
}

#[derive(clap::Subcommand)]
pub enum Which {
    /// API server throughput and latency on both store backends.
    Api(ApiBenchArgs),
    /// Pods scheduled per second through the API server, with hollow nodes
    /// (upstream's scheduler_perf SchedulingBasic).
    Scheduler(scheduler::SchedulerBenchArgs),
    /// Many hollow nodes and pods made by Deployments: time to all Running,
    /// API latency meanwhile, peak memory (upstream's density test).
    Density(density::DensityBenchArgs),
    /// Real pods on the node agent (containerd, runc, CNI): create → Running
    /// one after another and all at once, beside containerd's own floor,
    /// and the agent's memory.
    PodStartup(pod_startup::PodStartupBenchArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The embedded SQLite store (the server's default).
    Sqlite,
    /// A single-member etcd started by the bench on loopback ports.
    Etcd,
}

impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite (embedded)",
            Backend::Etcd => "etcd",
        }
    }
}

#[derive(clap::Args)]
pub struct ApiBenchArgs {
    /// Store backends to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,etcd")]
    pub backends: Vec<Backend>,
    /// ConfigMaps in the namespace for the large LIST (and the RSS "loaded"
    /// figure). Default 100000 (5000 with --quick).
    #[arg(long)]
    pub objects: Option<usize>,
    /// ConfigMaps for the small LIST; the 1-, 16- and 64-client create runs
    /// fill it (10%, 30% and 60% of it). Default 10000 (1000 with --quick).
    #[arg(long)]
    pub list_small: Option<usize>,
    /// Concurrent watchers for the watch-delivery measurement. Default 1000 (100 with --quick).
    #[arg(long)]
    pub watchers: Option<usize>,
    /// Objects created while the watchers watch. Default 200 (40 with --quick).
    #[arg(long)]
    pub watch_events: Option<usize>,
    /// Pause between those creates, in milliseconds (one creating client).
    #[arg(long, default_value_t = 50)]
    pub watch_interval_ms: u64,
    /// Watch streams per HTTP/2 connection (the server allows 200).
    #[arg(long, default_value_t = 100)]
    pub watch_streams_per_conn: usize,
    /// Timed LIST runs per size (the p50 is reported). Default 5 (3 with --quick).
    #[arg(long)]
    pub list_runs: Option<usize>,
    /// Objects written by the raw-store baseline (64 tasks). Default 20000 (3000 with --quick).
    #[arg(long)]
    pub baseline_objects: Option<usize>,
    /// HTTP/2 connections the create clients are spread over (round robin).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd_bin: PathBuf,
    /// Where the temporary data dirs go (default: the system temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// A fast smoke run with small sizes.
    #[arg(long)]
    pub quick: bool,
}

/// The sizes of one run, after defaults.
#[derive(Clone, Debug)]
struct Plan {
    backends: Vec<Backend>,
    objects: usize,
    list_small: usize,
    watchers: usize,
    watch_events: usize,
    watch_interval: Duration,
    watch_streams_per_conn: usize,
    list_runs: usize,
    baseline_objects: usize,
    connections: usize,
    etcd_bin: PathBuf,
    work_dir: PathBuf,
}

impl Plan {
    fn from_args(a: ApiBenchArgs) -> anyhow::Result<Plan> {
        let q = a.quick;
        let pick =
            |v: Option<usize>, full: usize, quick: usize| v.unwrap_or(if q { quick } else { full });
        let mut backends = Vec::new();
        for b in a.backends {
            if !backends.contains(&b) {
                backends.push(b);
            }
        }
        let plan = Plan {
            backends,
            objects: pick(a.objects, 100_000, 5_000),
            list_small: pick(a.list_small, 10_000, 1_000),
            watchers: pick(a.watchers, 1_000, 100),
            watch_events: pick(a.watch_events, 200, 40),
            watch_interval: Duration::from_millis(a.watch_interval_ms),
            watch_streams_per_conn: a.watch_streams_per_conn.max(1),
            list_runs: pick(a.list_runs, 5, 3).max(1),
            baseline_objects: pick(a.baseline_objects, 20_000, 3_000),
            connections: a.connections.max(1),
            etcd_bin: a.etcd_bin,
            work_dir: a.work_dir.unwrap_or_else(std::env::temp_dir),
        };
        if plan.backends.is_empty() {
            bail!("--backends is empty");
        }
        if plan.list_small < 10 {
            bail!("--list-small must be at least 10");
        }
        if plan.objects < plan.list_small {
            bail!(
                "--objects ({}) must be at least --list-small ({})",
                plan.objects,
                plan.list_small
            );
        }
        Ok(plan)
    }

    /// Objects created by the 1-, 16- and 64-client runs (they fill the small LIST).
    fn phase_counts(&self) -> [(usize, usize); 3] {
        let c1 = self.list_small / 10;
        let c16 = self.list_small * 3 / 10;
        [(1, c1), (16, c16), (64, self.list_small - c1 - c16)]
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        Which::Api(a) => {
            let plan = Plan::from_args(a)?;
            // Dropping the bench future on Ctrl-C drops the child guards and
            // temp dirs, so nothing is left behind.
            tokio::select! {
                r = api_bench(plan) => r,
                _ = tokio::signal::ctrl_c() => bail!("interrupted; children killed and temp dirs removed"),
            }
        }
        Which::Scheduler(a) => tokio::select! {
            r = scheduler::run(a) => r,
            _ = cluster::interrupted() => bail!("interrupted; children killed and temp dirs removed"),
        },
        Which::Density(a) => tokio::select! {
            r = density::run(a) => r,
            _ = cluster::interrupted() => bail!("interrupted; children killed and temp dirs removed"),
        },
        Which::PodStartup(a) => tokio::select! {
            r = pod_startup::run(a) => r,
            _ = cluster::interrupted() => bail!("interrupted; children killed, node cleaned and temp dirs removed"),
        },
    }
}

// ---------------------------------------------------------------------------
// Results

/// One throughput run: how many objects, how long, each request's latency.
#[derive(Clone, Debug)]
struct Throughput {
    ok: usize,
    errors: usize,
    elapsed: Duration,
    /// Sorted latencies in microseconds.
    lat_us: Vec<u64>,
}

impl Throughput {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn p(&self, q: f64) -> Option<u64> {
        percentile(&self.lat_us, q)
    }
}

#[derive(Clone, Debug)]
struct ListTiming {
    items: usize,
    bytes: usize,
    p50: Duration,
    min: Duration,
    max: Duration,
}

#[derive(Clone, Debug)]
struct WatchResult {
    watchers: usize,
    events: usize,
    delivered: usize,
    errors: usize,
    /// Sorted, microseconds: receive time minus the time just before the create request.
    from_send_us: Vec<u64>,
    /// Sorted, microseconds: receive time minus the time the create was
    /// acknowledged; negative when the event reached the watcher before the
    /// create's response reached the creator.
    from_ack_us: Vec<i64>,
    /// Creates whose event reached a watcher before the create's response did.
    before_ack: usize,
}

#[derive(Default, Debug)]
struct BackendResult {
    raw1: Option<Throughput>,
    raw64: Option<Throughput>,
    api: Vec<Throughput>,
    sustained: Option<Throughput>,
    list_small: Option<ListTiming>,
    list_large: Option<ListTiming>,
    watch: Option<WatchResult>,
    rss_idle: Option<u64>,
    rss_loaded: Option<u64>,
    rss_peak: Option<u64>,
    etcd_rss_loaded: Option<u64>,
    seconds: f64,
    error: Option<String>,
}

fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

// ---------------------------------------------------------------------------
// The run

async fn api_bench(plan: Plan) -> anyhow::Result<()> {
    let started = Instant::now();
    let load_before = loadavg();
    eprintln!(
        "tug bench api: backends {:?}, {} objects (small LIST {}), {} watchers x {} events, {} create connections",
        plan.backends,
        plan.objects,
        plan.list_small,
        plan.watchers,
        plan.watch_events,
        plan.connections
    );
    let mut results = Vec::new();
    for &backend in &plan.backends {
        let t0 = Instant::now();
        let mut r = BackendResult::default();
        eprintln!("== {} ==", backend.label());
        if let Err(e) = run_backend(&plan, backend, &mut r).await {
            eprintln!("!! {} failed: {e:#}", backend.label());
            r.error = Some(format!("{e:#}"));
        }
        r.seconds = t0.elapsed().as_secs_f64();
        eprintln!("== {} done in {:.0} s ==", backend.label(), r.seconds);
        results.push((backend, r));
    }
    let load = format!("{} at start, {} at end", load_before, loadavg());
    print_table(&plan, &results, started.elapsed(), &load);
    if results.iter().all(|(_, r)| r.error.is_some()) {
        bail!("every backend failed");
    }
    Ok(())
}

async fn run_backend(plan: &Plan, backend: Backend, r: &mut BackendResult) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!(
            "tug-bench-{}-",
            format!("{backend:?}").to_lowercase()
        ))
        .tempdir_in(&plan.work_dir)
        .with_context(|| format!("creating a temp dir in {}", plan.work_dir.display()))?;
    let counts = plan.phase_counts();

    // 1. Baseline: the store crate called directly with 1 and 64 tasks, on a
    //    store of its own (a fresh SQLite file or a fresh etcd).
    {
        let dir = tmp.path().join("raw");
        std::fs::create_dir_all(&dir)?;
        let etcd = match backend {
            Backend::Etcd => Some(procs::start_etcd(&plan.etcd_bin, &dir).await?),
            Backend::Sqlite => None,
        };
        let endpoint = etcd
            .as_ref()
            .map(|e| e.endpoint.clone())
            .unwrap_or_default();
        let store = tug_store::open(&endpoint, &dir)
            .await
            .context("opening the raw store")?;
        let n1 = counts[0].1;
        eprintln!("raw store: {n1} creates, 1 task");
        let t = raw_store_creates(&store, 0..n1, 1).await?;
        eprintln!("  {:.0}/s", t.rate());
        r.raw1 = Some(t);
        let n64 = plan.baseline_objects;
        eprintln!("raw store: {n64} creates, 64 tasks");
        let t = raw_store_creates(&store, n1..n1 + n64, 64).await?;
        eprintln!("  {:.0}/s", t.rate());
        r.raw64 = Some(t);
        drop(store); // joins the SQLite writer before its dir goes
        drop(etcd);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // 2. The server, on a fresh store.
    let etcd = match backend {
        Backend::Etcd => {
            let dir = tmp.path().join("etcd");
            std::fs::create_dir_all(&dir)?;
            eprintln!("starting etcd");
            Some(procs::start_etcd(&plan.etcd_bin, &dir).await?)
        }
        Backend::Sqlite => None,
    };
    eprintln!("starting tug server");
    let mut server =
        procs::start_server(tmp.path(), etcd.as_ref().map(|e| e.endpoint.as_str())).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.guard.check_alive()?;
    let idle = server.guard.rss()?.current;
    eprintln!("server RSS idle: {}", fmt_mb(idle));
    r.rss_idle = Some(idle);

    let mut conns = Vec::new();
    for _ in 0..plan.connections {
        conns.push(server.endpoint.connect().await?);
    }
    let mut admin = conns[0].clone();
    for ns in ["bench-list", "bench-watch"] {
        let body =
            format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{ns}"}}}}"#);
        admin
            .expect(
                Method::POST,
                "/api/v1/namespaces",
                Some(body.into()),
                StatusCode::CREATED,
            )
            .await?;
    }

    // 3. Creates with 1, 16 and 64 clients: together they fill the small LIST.
    let mut next = 0;
    for (clients, n) in counts {
        eprintln!("API creates: {n} ConfigMaps, {clients} client(s)");
        let t = api_creates(&conns, "bench-list", next..next + n, clients).await?;
        eprintln!(
            "  {:.0}/s, p50 {} p99 {}",
            t.rate(),
            fmt_us(t.p(0.5)),
            fmt_us(t.p(0.99))
        );
        next += n;
        r.api.push(t);
    }
    server.guard.check_alive()?;
    eprintln!("LIST {} ConfigMaps x {}", plan.list_small, plan.list_runs);
    let l = list_timing(&mut admin, "bench-list", plan.list_small, plan.list_runs).await?;
    eprintln!(
        "  p50 {:.1} ms ({} items, {} bytes)",
        l.p50.as_secs_f64() * 1e3,
        l.items,
        l.bytes
    );
    r.list_small = Some(l);

    // 4. Load up to `objects` with 64 clients (the sustained figure).
    if plan.objects > next {
        let n = plan.objects - next;
        eprintln!("API creates: loading {n} more ConfigMaps, 64 clients");
        let t = api_creates(&conns, "bench-list", next..plan.objects, 64).await?;
        eprintln!(
            "  {:.0}/s, p50 {} p99 {}",
            t.rate(),
            fmt_us(t.p(0.5)),
            fmt_us(t.p(0.99))
        );
        r.sustained = Some(t);
    }
    server.guard.check_alive()?;
    let loaded = server.guard.rss()?.current;
    eprintln!(
        "server RSS with {} objects: {}",
        plan.objects,
        fmt_mb(loaded)
    );
    r.rss_loaded = Some(loaded);
    if let Some(e) = &etcd {
        r.etcd_rss_loaded = Some(e.guard.rss()?.current);
    }
    if plan.objects > plan.list_small {
        eprintln!("LIST {} ConfigMaps x {}", plan.objects, plan.list_runs);
        let l = list_timing(&mut admin, "bench-list", plan.objects, plan.list_runs).await?;
        eprintln!(
            "  p50 {:.1} ms ({} items, {} bytes)",
            l.p50.as_secs_f64() * 1e3,
            l.items,
            l.bytes
        );
        r.list_large = Some(l);
    }

    // 5. Watch fan-out.
    eprintln!(
        "watch: {} watchers, {} creates every {:?}",
        plan.watchers, plan.watch_events, plan.watch_interval
    );
    let w = watch_delivery(&server.endpoint, admin.clone(), "bench-watch", plan).await?;
    eprintln!(
        "  delivered {}/{}, p50 {} p99 {} (from before the create request)",
        w.delivered,
        w.watchers * w.events,
        fmt_us(percentile(&w.from_send_us, 0.5)),
        fmt_us(percentile(&w.from_send_us, 0.99))
    );
    r.watch = Some(w);
    server.guard.check_alive()?;
    r.rss_peak = Some(server.guard.rss()?.peak);

    drop(conns);
    drop(admin);
    drop(server); // kill the server before its store
    drop(etcd);
    drop(tmp);
    Ok(())
}

// ---------------------------------------------------------------------------
// Workloads

/// A small ConfigMap as a client would send it (~170 bytes).
fn configmap_body(name: &str, data: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{data}}}"#
    ))
}

fn small_data(i: usize) -> String {
    format!(
        r#"{{"key":"value-{i:07}","other":"0123456789abcdef0123456789abcdef0123456789abcdef"}}"#
    )
}

fn cm_name(i: usize) -> String {
    format!("cm-{i:07}")
}

/// `clients` tasks create objects `range` as fast as they can, spread round
/// robin over the HTTP/2 connections.
async fn api_creates(
    conns: &[Conn],
    ns: &str,
    range: std::ops::Range<usize>,
    clients: usize,
) -> anyhow::Result<Throughput> {
    let path: Arc<str> = format!("/api/v1/namespaces/{ns}/configmaps").into();
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut conn = conns[c % conns.len()].clone();
        let next = next.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let body = configmap_body(&cm_name(i), &small_data(i));
                let start = Instant::now();
                match conn.call(Method::POST, &path, Some(body)).await {
                    Ok((StatusCode::CREATED, _)) => lat.push(start.elapsed().as_micros() as u64),
                    Ok((status, body)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| {
                            format!(
                                "{status}: {}",
                                String::from_utf8_lossy(&body[..body.len().min(300)])
                            )
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
    collect_throughput(t0, tasks).await
}

/// The baseline: `tug_store::Store::create` called directly, no API server.
/// The value is shaped like what the API server stores for these ConfigMaps.
async fn raw_store_creates(
    store: &Arc<dyn tug_store::Store>,
    range: std::ops::Range<usize>,
    clients: usize,
) -> anyhow::Result<Throughput> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let store = store.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let name = cm_name(i);
                let value = format!(
                    r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","namespace":"bench-raw","uid":"6f1c2a34-3e0b-4b8e-9d6f-{i:012}","creationTimestamp":"2026-01-01T00:00:00Z","managedFields":[{{"manager":"tug-bench","operation":"Update","apiVersion":"v1","time":"2026-01-01T00:00:00Z","fieldsType":"FieldsV1","fieldsV1":{{"f:data":{{".":{{}},"f:key":{{}},"f:other":{{}}}}}}}}]}},"data":{}}}"#,
                    small_data(i)
                );
                let key = format!("/registry/configmaps/bench-raw/{name}");
                let start = Instant::now();
                match store.create(&key, value.into_bytes()).await {
                    Ok(_) => lat.push(start.elapsed().as_micros() as u64),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    collect_throughput(t0, tasks).await
}

type TaskOutcome = (Vec<u64>, usize, Option<String>);

async fn collect_throughput(
    t0: Instant,
    tasks: Vec<tokio::task::JoinHandle<TaskOutcome>>,
) -> anyhow::Result<Throughput> {
    let mut lat_us = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (l, e, fe) = t.await.context("a client task panicked")?;
        lat_us.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
    }
    let elapsed = t0.elapsed();
    lat_us.sort_unstable();
    if let Some(fe) = &first_error {
        eprintln!("  {errors} requests failed; first: {fe}");
    }
    if lat_us.is_empty() && errors > 0 {
        bail!(
            "every request failed; first: {}",
            first_error.unwrap_or_default()
        );
    }
    Ok(Throughput {
        ok: lat_us.len(),
        errors,
        elapsed,
        lat_us,
    })
}

/// Full LISTs of a namespace (no limit, resourceVersion unset, i.e. a
/// consistent read), timed until the last body byte arrives.
async fn list_timing(
    conn: &mut Conn,
    ns: &str,
    expect: usize,
    runs: usize,
) -> anyhow::Result<ListTiming> {
    #[derive(serde::Deserialize)]
    struct List {
        items: Vec<serde::de::IgnoredAny>,
    }
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let mut times = Vec::new();
    let mut items = 0;
    let mut bytes = 0;
    for run in 0..runs + 1 {
        let start = Instant::now();
        let body = conn
            .expect(Method::GET, &path, None, StatusCode::OK)
            .await?;
        let took = start.elapsed();
        if run == 0 {
            // Untimed warm-up run, also used to check the count.
            let l: List = serde_json::from_slice(&body).context("parsing the LIST response")?;
            items = l.items.len();
            bytes = body.len();
            if items != expect {
                eprintln!("  warning: LIST returned {items} items, expected {expect}");
            }
            continue;
        }
        times.push(took);
    }
    times.sort_unstable();
    let p50 = times[(times.len() - 1) / 2];
    Ok(ListTiming {
        items,
        bytes,
        p50,
        min: times[0],
        max: *times.last().expect("runs >= 1"),
    })
}

/// `watchers` real HTTPS watches on one namespace (many streams per HTTP/2
/// connection), then `watch_events` creates from one client at a fixed pace,
/// each carrying its index; every watcher records when each event arrives.
async fn watch_delivery(
    ep: &Endpoint,
    mut creator: Conn,
    ns: &str,
    plan: &Plan,
) -> anyhow::Result<WatchResult> {
    let watchers = plan.watchers;
    let events = plan.watch_events;
    // Start from the namespace's current resourceVersion, as an informer does after its LIST.
    let list = creator
        .expect(
            Method::GET,
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            None,
            StatusCode::OK,
        )
        .await?;
    let list: serde_json::Value = serde_json::from_slice(&list)?;
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(|v| v.as_str())
        .context("LIST without resourceVersion")?
        .to_string();

    let nconns = watchers.div_ceil(plan.watch_streams_per_conn).max(1);
    let mut conns = Vec::new();
    for _ in 0..nconns {
        conns.push(ep.connect().await?);
    }
    let base = Instant::now();
    // Long enough for every event to be created and then some.
    let deadline = tokio::time::Instant::now()
        + plan.watch_interval * events as u32
        + Duration::from_secs(60 + watchers as u64 / 20);
    let path = format!("/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={rv}");
    let opened = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(watchers);
    for w in 0..watchers {
        let mut conn = conns[w % nconns].clone();
        let path = path.clone();
        let ready_tx = ready_tx.clone();
        let opened = opened.clone();
        tasks.push(tokio::spawn(async move {
            let mut got: Vec<(u32, u64)> = Vec::with_capacity(events);
            let mut errors = 0usize;
            let resp = match conn.request(Method::GET, &path, None).await {
                Ok(r) if r.status() == StatusCode::OK => r,
                Ok(r) => {
                    let _ = ready_tx
                        .send(Err(anyhow::anyhow!("watch answered {}", r.status())))
                        .await;
                    return (got, 1);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e)).await;
                    return (got, 1);
                }
            };
            opened.fetch_add(1, Ordering::Relaxed);
            let _ = ready_tx.send(Ok(())).await;
            drop(ready_tx);
            let mut body = resp.into_body();
            let mut buf: Vec<u8> = Vec::new();
            let marker = b"\"bench-idx\":\"";
            while got.len() < events {
                let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                    Ok(Some(Ok(f))) => f,
                    Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                        errors += 1;
                        break;
                    }
                };
                let now = base.elapsed().as_micros() as u64;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    if let Some(pos) = find(&line, marker) {
                        let rest = &line[pos + marker.len()..];
                        let end = rest.iter().position(|&b| b == b'"').unwrap_or(0);
                        if let Some(idx) = std::str::from_utf8(&rest[..end])
                            .ok()
                            .and_then(|s| s.parse::<u32>().ok())
                        {
                            got.push((idx, now));
                        }
                    } else if find(&line, b"\"type\":\"ERROR\"").is_some() {
                        errors += 1;
                    }
                }
            }
            (got, errors)
        }));
    }
    drop(ready_tx);
    let mut open_errors = 0;
    let mut first_open_error = None;
    for _ in 0..watchers {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                open_errors += 1;
                first_open_error.get_or_insert(e);
            }
            None => break,
        }
    }
    if let Some(e) = first_open_error {
        eprintln!("  {open_errors} watches failed to open; first: {e:#}");
    }
    let opened = opened.load(Ordering::Relaxed);
    if opened == 0 {
        bail!("no watch could be opened");
    }
    eprintln!(
        "  {opened} watches open after {:.1} s; creating",
        base.elapsed().as_secs_f64()
    );

    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let mut sent = vec![0u64; events];
    let mut acked = vec![0u64; events];
    let pace_start = tokio::time::Instant::now();
    for i in 0..events {
        tokio::time::sleep_until(pace_start + plan.watch_interval * i as u32).await;
        let data = format!(r#"{{"bench-idx":"{i}","payload":"0123456789abcdef0123456789abcdef"}}"#);
        sent[i] = base.elapsed().as_micros() as u64;
        creator
            .expect(
                Method::POST,
                &path,
                Some(configmap_body(&format!("w-{i:05}"), &data)),
                StatusCode::CREATED,
            )
            .await?;
        acked[i] = base.elapsed().as_micros() as u64;
    }
    let mut from_send_us = Vec::with_capacity(watchers * events);
    let mut from_ack_us = Vec::with_capacity(watchers * events);
    let mut before_ack = 0;
    let mut errors = open_errors;
    for t in tasks {
        let (got, e) = t.await.context("a watcher panicked")?;
        errors += e;
        for (idx, at) in got {
            let Some(&s) = sent.get(idx as usize) else {
                continue;
            };
            let a = acked[idx as usize];
            from_send_us.push(at.saturating_sub(s));
            from_ack_us.push(at as i64 - a as i64);
            if at < a {
                before_ack += 1;
            }
        }
    }
    from_send_us.sort_unstable();
    from_ack_us.sort_unstable();
    Ok(WatchResult {
        watchers,
        events,
        delivered: from_send_us.len(),
        errors,
        from_send_us,
        from_ack_us,
        before_ack,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Output

/// A goal's cell: met, missed, or not measured.
fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "n/a",
    }
}

fn fmt_us(us: Option<u64>) -> String {
    match us {
        None => "–".into(),
        Some(us) if us < 10_000 => format!("{:.2} ms", us as f64 / 1e3),
        Some(us) => format!("{:.1} ms", us as f64 / 1e3),
    }
}

fn fmt_signed_us(us: Option<i64>) -> String {
    match us {
        Some(us) if us < 0 => format!("−{}", fmt_us(Some(us.unsigned_abs()))),
        other => fmt_us(other.map(|u| u as u64)),
    }
}

fn fmt_dur(d: Duration) -> String {
    fmt_us(Some(d.as_micros() as u64))
}

fn fmt_mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
}

fn fmt_rate(r: f64) -> String {
    let n = r.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out}/s")
}

fn fmt_count(n: usize) -> String {
    let s = fmt_rate(n as f64);
    s.trim_end_matches("/s").to_string()
}

fn throughput_cell(t: &Throughput) -> String {
    let mut s = fmt_rate(t.rate());
    if t.errors > 0 {
        s.push_str(&format!(" ({} errors)", t.errors));
    }
    s
}

/// A goal check on one backend's figure: `Some(true)` pass, `Some(false)` fail, `None` not measured.
type Check = fn(&BackendResult) -> Option<bool>;

struct Row {
    metric: String,
    goal: &'static str,
    cell: Box<dyn Fn(&BackendResult) -> String>,
    /// The goal check and which backends it applies to.
    check: Option<(Check, &'static [Backend])>,
}

fn row(metric: impl Into<String>, cell: impl Fn(&BackendResult) -> String + 'static) -> Row {
    Row {
        metric: metric.into(),
        goal: "",
        cell: Box::new(cell),
        check: None,
    }
}

fn goal_row(
    metric: impl Into<String>,
    goal: &'static str,
    applies: &'static [Backend],
    check: Check,
    cell: impl Fn(&BackendResult) -> String + 'static,
) -> Row {
    Row {
        metric: metric.into(),
        goal,
        cell: Box::new(cell),
        check: Some((check, applies)),
    }
}

const BOTH: &[Backend] = &[Backend::Sqlite, Backend::Etcd];
const EMBEDDED: &[Backend] = &[Backend::Sqlite];
const GOAL_CREATES: f64 = 10_000.0;
const GOAL_P99_US: u64 = 50_000;
const GOAL_IDLE_RSS: u64 = 100 * 1024 * 1024;

fn print_table(plan: &Plan, results: &[(Backend, BackendResult)], total: Duration, load: &str) {
    use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets};

    let counts = plan.phase_counts();
    let small = fmt_count(plan.list_small);
    let large = fmt_count(plan.objects);
    let na = || "–".to_string();
    let mut rows: Vec<Row> = Vec::new();
    rows.push(row(
        "raw store creates/s, 1 task (tug-store direct, baseline)",
        move |r| r.raw1.as_ref().map(throughput_cell).unwrap_or_else(na),
    ));
    rows.push(row(
        "raw store creates/s, 64 tasks (tug-store direct, baseline)",
        move |r| r.raw64.as_ref().map(throughput_cell).unwrap_or_else(na),
    ));
    for (i, (clients, n)) in counts.iter().enumerate() {
        let metric = format!(
            "API creates/s, {clients} client{} ({} objects)",
            if *clients == 1 { "" } else { "s" },
            fmt_count(*n)
        );
        if *clients == 64 {
            rows.push(goal_row(
                metric,
                "≥ 10,000/s (embedded)",
                EMBEDDED,
                |r| r.api.get(2).map(|t| t.rate() >= GOAL_CREATES),
                move |r| r.api.get(i).map(throughput_cell).unwrap_or_else(na),
            ));
        } else {
            rows.push(row(metric, move |r| {
                r.api.get(i).map(throughput_cell).unwrap_or_else(na)
            }));
        }
    }
    rows.push(row("  API / raw store, 1 client", |r| {
        match (r.api.first(), &r.raw1) {
            (Some(a), Some(b)) => format!("{:.2}x", a.rate() / b.rate()),
            _ => "–".into(),
        }
    }));
    rows.push(row("  API / raw store, 64 clients", |r| {
        match (r.api.get(2), &r.raw64) {
            (Some(a), Some(b)) => format!("{:.2}x", a.rate() / b.rate()),
            _ => "–".into(),
        }
    }));
    rows.push(goal_row(
        "create latency p50 / p99, 64 clients",
        "p99 < 50 ms",
        BOTH,
        |r| {
            r.api
                .get(2)
                .and_then(|t| t.p(0.99))
                .map(|p| p < GOAL_P99_US)
        },
        |r| {
            r.api
                .get(2)
                .map(|t| format!("{} / {}", fmt_us(t.p(0.5)), fmt_us(t.p(0.99))))
                .unwrap_or_else(|| "–".into())
        },
    ));
    if plan.objects > plan.list_small {
        rows.push(goal_row(
            format!("API creates/s, 64 clients, sustained ({small} → {large} objects)"),
            "≥ 10,000/s (embedded)",
            EMBEDDED,
            |r| r.sustained.as_ref().map(|t| t.rate() >= GOAL_CREATES),
            move |r| r.sustained.as_ref().map(throughput_cell).unwrap_or_else(na),
        ));
        rows.push(goal_row(
            "create latency p50 / p99, 64 clients, sustained",
            "p99 < 50 ms",
            BOTH,
            |r| {
                r.sustained
                    .as_ref()
                    .and_then(|t| t.p(0.99))
                    .map(|p| p < GOAL_P99_US)
            },
            |r| {
                r.sustained
                    .as_ref()
                    .map(|t| format!("{} / {}", fmt_us(t.p(0.5)), fmt_us(t.p(0.99))))
                    .unwrap_or_else(|| "–".into())
            },
        ));
    }
    let list_cell = |l: Option<&ListTiming>| {
        l.map(|l| {
            format!(
                "{} (min {}, max {}; {:.1} MB)",
                fmt_dur(l.p50),
                fmt_dur(l.min),
                fmt_dur(l.max),
                l.bytes as f64 / (1024.0 * 1024.0)
            )
        })
        .unwrap_or_else(|| "–".into())
    };
    rows.push(row(
        format!(
            "LIST {small} ConfigMaps, p50 of {} (consistent read)",
            plan.list_runs
        ),
        move |r| list_cell(r.list_small.as_ref()),
    ));
    if plan.objects > plan.list_small {
        rows.push(row(
            format!(
                "LIST {large} ConfigMaps, p50 of {} (consistent read)",
                plan.list_runs
            ),
            move |r| list_cell(r.list_large.as_ref()),
        ));
    }
    let watchers = fmt_count(plan.watchers);
    rows.push(row(
        format!("watch delivery p50 / p99, {watchers} watchers (from before create request)"),
        |r| {
            r.watch
                .as_ref()
                .map(|w| {
                    format!(
                        "{} / {}",
                        fmt_us(percentile(&w.from_send_us, 0.5)),
                        fmt_us(percentile(&w.from_send_us, 0.99))
                    )
                })
                .unwrap_or_else(|| "–".into())
        },
    ));
    rows.push(row(
        "  same, measured from the create's response (ack)".to_string(),
        |r| {
            r.watch
                .as_ref()
                .map(|w| {
                    format!(
                        "{} / {}",
                        fmt_signed_us(percentile(&w.from_ack_us, 0.5)),
                        fmt_signed_us(percentile(&w.from_ack_us, 0.99))
                    )
                })
                .unwrap_or_else(|| "–".into())
        },
    ));
    rows.push(row("  watch events delivered (errors)", |r| {
        r.watch
            .as_ref()
            .map(|w| {
                format!(
                    "{} / {} ({})",
                    fmt_count(w.delivered),
                    fmt_count(w.watchers * w.events),
                    w.errors
                )
            })
            .unwrap_or_else(|| "–".into())
    }));
    rows.push(goal_row(
        "server RSS, idle after start",
        "< 100 MB",
        BOTH,
        |r| r.rss_idle.map(|v| v < GOAL_IDLE_RSS),
        |r| r.rss_idle.map(fmt_mb).unwrap_or_else(|| "–".into()),
    ));
    rows.push(row(format!("server RSS, {large} objects loaded"), |r| {
        r.rss_loaded.map(fmt_mb).unwrap_or_else(|| "–".into())
    }));
    rows.push(row("server peak RSS (VmHWM, end of run)", |r| {
        r.rss_peak.map(fmt_mb).unwrap_or_else(|| "–".into())
    }));
    if results.iter().any(|(b, _)| *b == Backend::Etcd) {
        rows.push(row(format!("etcd RSS, {large} objects loaded"), |r| {
            r.etcd_rss_loaded.map(fmt_mb).unwrap_or_else(|| "–".into())
        }));
    }
    rows.push(row("wall time of this backend's run", |r| {
        format!("{:.0} s", r.seconds)
    }));

    let mut table = Table::new();
    table
        .load_preset(presets::ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Disabled);
    let mut header = vec![Cell::new("metric"), Cell::new("goal")];
    for (b, _) in results {
        header.push(Cell::new(b.label()));
    }
    header.push(Cell::new("pass/fail"));
    table.set_header(header);
    for row in &rows {
        let mut cells = vec![Cell::new(&row.metric), Cell::new(row.goal)];
        for (_, r) in results {
            cells.push(Cell::new((row.cell)(r)).set_alignment(CellAlignment::Right));
        }
        let pass_fail = match &row.check {
            None => String::new(),
            Some((check, applies)) => {
                let parts: Vec<(Backend, Option<bool>)> = results
                    .iter()
                    .filter(|(b, _)| applies.contains(b))
                    .map(|(b, r)| (*b, check(r)))
                    .collect();
                match parts.as_slice() {
                    [] => "n/a".into(),
                    [(_, v)] if applies.len() == 1 => verdict(*v).into(),
                    _ => parts
                        .iter()
                        .map(|(b, v)| format!("{}: {}", format!("{b:?}").to_lowercase(), verdict(*v)))
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            }
        };
        cells.push(Cell::new(pass_fail));
        table.add_row(cells);
    }
    println!("{table}");
    println!();
    for note in footnotes(plan, results, total, load) {
        println!("{note}");
    }
}

fn footnotes(
    plan: &Plan,
    results: &[(Backend, BackendResult)],
    total: Duration,
    load: &str,
) -> Vec<String> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut n = vec![
        format!(
            "* Machine: {cores} CPU cores shared by the bench client, the server{} — client TLS/JSON work competes with the server, so these figures understate a server on its own cores.",
            if plan.backends.contains(&Backend::Etcd) { " and etcd" } else { "" }
        ),
        format!(
            "* Client: HTTP/2 over TLS 1.3 with the admin client certificate from the server's kubeconfig (hyper + tokio-rustls). Creates: N concurrent tasks, each sending one request at a time, spread round robin over {} HTTP/2 connection(s) (multiplexed streams). Watches: {} streams per HTTP/2 connection ({} connection(s)).",
            plan.connections,
            plan.watch_streams_per_conn,
            plan.watchers.div_ceil(plan.watch_streams_per_conn).max(1)
        ),
        "* Creates are durable: a 201 means committed (SQLite synchronous=FULL with group commit; etcd fsyncs its WAL). Objects are small ConfigMaps (~170-byte request bodies). The 1/16/64-client runs together fill the small LIST namespace; the sustained run loads the rest.".into(),
        "* Raw store baseline: tug_store::open + Store::create called directly in this process on a fresh store (SQLite file / fresh etcd), values shaped like the API server's stored ConfigMaps; the ratio rows are API creates/s divided by it.".into(),
        format!(
            "* LIST: GET /api/v1/namespaces/bench-list/configmaps, no limit, resourceVersion unset (consistent read), application/json; timed until the last body byte; one untimed warm-up run first. Watch: {} watchers (GET ...?watch=true&resourceVersion=<LIST rv>) on an empty namespace, then {} creates from one client every {:?}; latency is the time from just before the create request to each watcher receiving the event line (second row: from the creator receiving the 201; negative = the watcher had the event first).",
            plan.watchers, plan.watch_events, plan.watch_interval
        ),
        format!("* RSS: VmRSS / VmHWM of the server process from /proc/PID/status; idle = 2 s after /readyz. Data dirs under {} ({}).", plan.work_dir.display(), fs_type(&plan.work_dir)),
        format!(
            "* Total bench time {:.0} s. 1-minute load average {load} (anything else running on the machine skews these figures).",
            total.as_secs_f64()
        ),
    ];
    for (b, r) in results {
        if let Some(e) = &r.error {
            n.push(format!(
                "* {} FAILED (figures above are those measured before the failure): {}",
                b.label(),
                e.lines().next().unwrap_or("")
            ));
        }
        if let Some(w) = &r.watch
            && w.before_ack > 0
        {
            n.push(format!(
                "* {}: {} of {} watch deliveries arrived before the create's response reached the creator (negative 'from create ack' values).",
                b.label(),
                fmt_count(w.before_ack),
                fmt_count(w.delivered)
            ));
        }
    }
    n
}

/// The filesystem type holding `path`, from /proc/mounts (longest matching mount point).
fn fs_type(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(_dev), Some(mnt), Some(ty)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if path.starts_with(mnt) && best.as_ref().is_none_or(|(len, _)| mnt.len() > *len) {
            best = Some((mnt.len(), ty.to_string()));
        }
    }
    best.map(|(_, t)| t).unwrap_or_else(|| "unknown fs".into())
}

/// The 1-minute load average from /proc/loadavg.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
