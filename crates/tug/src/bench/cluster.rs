//! What `tug bench scheduler` and `tug bench density` share: a cluster of
//! two processes (`tug server` on a fresh embedded store, `tug hollow` with
//! the simulated kubelets), waiting for its nodes to be Ready, a pod watch
//! that reconnects where it left off, an RSS sampler for both processes,
//! quantity parsing and the table.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::client::{Conn, Endpoint};
use super::procs::{self, ChildGuard, Rss};
use super::{find, fmt_mb};

/// `tug server` plus `tug hollow` (and optionally `tug controller-manager`),
/// killed (hollow first) and their data removed on drop.
pub struct Cluster {
    // Field order is drop order: the kubelets go before the server, the
    // server before its data dir.
    pub hollow: ChildGuard,
    /// `tug scheduler` and `tug controller-manager`, when they run apart.
    pub components: Vec<ChildGuard>,
    pub server: procs::Server,
    pub nodes: usize,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts the server (its scheduler in-process; `server_args` are extra
    /// `tug server` flags) on a fresh SQLite store in a temp dir under
    /// `work_dir`, then `nodes` hollow nodes of `cpu`/`memory` each in a
    /// second process. With `split` the server runs neither scheduler nor
    /// controllers: `tug scheduler` and `tug controller-manager` run them
    /// in processes of their own. Does not wait for the nodes.
    pub async fn start(
        work_dir: &Path,
        prefix: &str,
        server_args: &[String],
        split: bool,
        nodes: usize,
        cpu: &str,
        memory: &str,
    ) -> anyhow::Result<Cluster> {
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(work_dir)
            .with_context(|| format!("creating a temp dir in {}", work_dir.display()))?;
        let mut server_args = server_args.to_vec();
        if split {
            server_args.push("--disable-scheduler".into());
            server_args.push("--disable-controller-manager".into());
        }
        eprintln!("starting tug server {}", server_args.join(" "));
        let server = procs::start_server_with(tmp.path(), None, &server_args).await?;
        let kubeconfig = tmp.path().join("server").join("kubeconfig.yaml");
        let mut components = Vec::new();
        if split {
            for c in ["scheduler", "controller-manager"] {
                eprintln!("starting tug {c}");
                components.push(procs::start_component(tmp.path(), c, &kubeconfig)?);
            }
        }
        eprintln!("starting tug hollow --nodes {nodes} --cpu {cpu} --memory {memory}");
        let hollow = procs::start_hollow(tmp.path(), &kubeconfig, nodes, cpu, memory)?;
        Ok(Cluster {
            hollow,
            components,
            server,
            nodes,
            _tmp: tmp,
        })
    }

    /// Fails when any of the processes has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.server.guard.check_alive()?;
        for c in &mut self.components {
            c.check_alive()?;
        }
        self.hollow.check_alive()
    }

    /// The processes' names and pids: server, hollow, then the scheduler
    /// and the controller manager if they run apart.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        let mut v = vec![("server", self.server.guard.pid()), ("hollow", self.hollow.pid())];
        v.extend(self.components.iter().map(|c| (c.name, c.pid())));
        v
    }

    /// Fails when the server and the hollow process together hold more than
    /// `limit` bytes: the machine is shared, and a run that would push it
    /// into swap or the OOM killer is stopped and reported instead.
    pub fn check_rss(&self, limit: u64) -> anyhow::Result<()> {
        let rss = self.rss()?;
        let total: u64 = rss.iter().map(|(_, r)| r.current).sum();
        if total > limit {
            bail!(
                "stopped: RSS {} (total {}) is over the --max-rss-gib limit of {}",
                fmt_processes(rss.iter().map(|(n, r)| (*n, r.current))),
                fmt_mb(total),
                fmt_mb(limit)
            );
        }
        Ok(())
    }

    /// Current and peak RSS of each process, in [`Cluster::pids`] order.
    pub fn rss(&self) -> anyhow::Result<Vec<(&'static str, Rss)>> {
        self.pids().into_iter().map(|(n, pid)| Ok((n, procs::read_rss(pid)?))).collect()
    }

    /// Polls the hollow nodes until `self.nodes` of them are Ready; returns
    /// how long that took. Progress on stderr.
    pub async fn wait_nodes_ready(
        &mut self,
        conn: &mut Conn,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        #[derive(Deserialize)]
        struct List {
            items: Vec<Item>,
        }
        #[derive(Deserialize)]
        struct Item {
            status: Option<Status>,
        }
        #[derive(Deserialize)]
        struct Status {
            #[serde(default)]
            conditions: Vec<Condition>,
        }
        #[derive(Deserialize)]
        struct Condition {
            #[serde(rename = "type")]
            type_: String,
            status: String,
        }
        let t0 = Instant::now();
        let mut last = usize::MAX;
        loop {
            self.check_alive()?;
            let body = conn
                .expect(
                    Method::GET,
                    &format!("/api/v1/nodes?labelSelector={}%3Dtrue", tug_hollow::HOLLOW_LABEL),
                    None,
                    StatusCode::OK,
                )
                .await?;
            let list: List = serde_json::from_slice(&body).context("parsing the node list")?;
            let ready = list
                .items
                .iter()
                .filter(|n| {
                    n.status.as_ref().is_some_and(|s| {
                        s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .count();
            if ready != last {
                eprintln!(
                    "  nodes: {} registered, {ready} Ready of {} ({:.0} s)",
                    list.items.len(),
                    self.nodes,
                    t0.elapsed().as_secs_f64()
                );
                last = ready;
            }
            if ready >= self.nodes {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > timeout {
                bail!(
                    "only {ready} of {} nodes Ready after {timeout:?}; hollow log:\n{}",
                    self.nodes,
                    self.hollow.log_tail(20)
                );
            }
            let pause = if self.nodes > 1000 { 3000 } else { 500 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (`timeout`, `kill`), so that dropping the
/// bench's future kills the children and removes the temp dirs.
pub async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Creates a namespace.
pub async fn create_namespace(conn: &mut Conn, name: &str) -> anyhow::Result<()> {
    let body = format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}"}}}}"#);
    conn.expect(Method::POST, "/api/v1/namespaces", Some(body.into()), StatusCode::CREATED)
        .await?;
    Ok(())
}

/// The resourceVersion of a (filtered) pod collection, for a watch from now.
pub async fn collection_rv(conn: &mut Conn, collection: &str, query: &str) -> anyhow::Result<String> {
    #[derive(Deserialize)]
    struct List {
        metadata: ListMeta,
    }
    #[derive(Deserialize)]
    struct ListMeta {
        #[serde(rename = "resourceVersion")]
        resource_version: String,
    }
    let sep = if query.is_empty() { "?limit=1" } else { "&limit=1" };
    let body = conn
        .expect(Method::GET, &format!("{collection}{query}{sep}"), None, StatusCode::OK)
        .await?;
    let l: List = serde_json::from_slice(&body).context("parsing a LIST")?;
    Ok(l.metadata.resource_version)
}

// ---------------------------------------------------------------------------
// Pod watch

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Other,
}

/// What the benches need of one pod watch event.
#[derive(Debug)]
pub struct PodEvent {
    /// When the frame carrying it arrived (before parsing).
    pub at: Instant,
    /// The object's resourceVersion (0 if absent or not a number).
    pub rv: u64,
    pub deleted: bool,
    pub namespace: String,
    pub name: String,
    pub bound: bool,
    pub phase: Phase,
}

#[derive(Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    object: PodLite,
}

#[derive(Deserialize)]
struct PodLite {
    metadata: MetaLite,
    spec: Option<SpecLite>,
    status: Option<StatusLite>,
}

#[derive(Deserialize)]
struct MetaLite {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
}

#[derive(Deserialize)]
struct SpecLite {
    #[serde(rename = "nodeName")]
    node_name: Option<String>,
}

#[derive(Deserialize)]
struct StatusLite {
    phase: Option<String>,
}

#[derive(Deserialize)]
struct PodListLite {
    metadata: ListMetaLite,
    items: Vec<PodLite>,
}

#[derive(Deserialize)]
struct ListMetaLite {
    #[serde(rename = "resourceVersion")]
    resource_version: String,
    #[serde(rename = "continue", default)]
    cont: Option<String>,
}

impl PodLite {
    fn event(self, at: Instant, deleted: bool) -> PodEvent {
        let phase = match self.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Pending") | None => Phase::Pending,
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            Some(_) => Phase::Other,
        };
        PodEvent {
            at,
            rv: self.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
            deleted,
            bound: self
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty()),
            phase,
            namespace: self.metadata.namespace,
            name: self.metadata.name,
        }
    }
}

/// Watches the pods of `collection` (`/api/v1/pods` or
/// `/api/v1/namespaces/NS/pods`) matching `selector` (a query fragment such
/// as `labelSelector=app%3Dx`, or empty) from resourceVersion `rv`, on a
/// connection of its own, and sends every event. A watch that ends is
/// reopened from the last resourceVersion seen;
/// after 410 Gone the collection is listed again (pages of 500, sent as
/// events) and watched from the list. Ends when the receiver is dropped.
/// The counters say how often it was reopened and whether the server ever
/// sent an event whose resourceVersion was not above the previous one's.
pub fn spawn_pod_watch(
    ep: Endpoint,
    collection: String,
    selector: String,
    rv: String,
) -> (mpsc::UnboundedReceiver<PodEvent>, tokio::task::JoinHandle<anyhow::Result<()>>, Arc<WatchStats>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(WatchStats::default());
    let st = stats.clone();
    let task = tokio::spawn(async move {
        let stats = st;
        let mut rv = rv;
        let mut failures = 0u32;
        let sel = if selector.is_empty() { String::new() } else { format!("&{selector}") };
        loop {
            if tx.is_closed() {
                return Ok(());
            }
            match watch_once(&ep, &collection, &sel, &mut rv, &tx, &stats).await {
                Ok(WatchEnd::Closed) => {
                    failures = 0;
                    let n = stats.reopened.fetch_add(1, Ordering::Relaxed) + 1;
                    if n <= 10 {
                        eprintln!("  pod watch ended by the server; reopening from resourceVersion {rv}");
                    }
                }
                Ok(WatchEnd::Gone) => {
                    eprintln!("  pod watch: 410 Gone; listing again");
                    stats.relisted.fetch_add(1, Ordering::Relaxed);
                    let (events, list_rv) = list_pods(&ep, &collection, &sel).await?;
                    for ev in events {
                        let _ = tx.send(ev);
                    }
                    rv = list_rv;
                }
                Ok(WatchEnd::ReceiverGone) => return Ok(()),
                Err(e) => {
                    failures += 1;
                    if failures > 20 {
                        return Err(e.context("the pod watch kept failing"));
                    }
                    eprintln!("  pod watch failed ({e:#}); reopening");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    (rx, task, stats)
}

/// What a [`spawn_pod_watch`] went through.
#[derive(Default, Debug)]
pub struct WatchStats {
    pub events: AtomicU64,
    /// Watches ended by the server (reopened from the last resourceVersion).
    pub reopened: AtomicU64,
    /// 410 Gone answers (the collection was listed again).
    pub relisted: AtomicU64,
    /// Events whose resourceVersion was not above the one before them on
    /// the same stream (upstream's watch is strictly ordered).
    pub out_of_order: AtomicU64,
}

impl WatchStats {
    pub fn summary(&self) -> String {
        format!(
            "{} events, reopened {} times, {} relists, {} out-of-order events",
            self.events.load(Ordering::Relaxed),
            self.reopened.load(Ordering::Relaxed),
            self.relisted.load(Ordering::Relaxed),
            self.out_of_order.load(Ordering::Relaxed)
        )
    }
}

enum WatchEnd {
    Closed,
    Gone,
    ReceiverGone,
}

async fn watch_once(
    ep: &Endpoint,
    collection: &str,
    sel: &str,
    rv: &mut String,
    tx: &mpsc::UnboundedSender<PodEvent>,
    stats: &WatchStats,
) -> anyhow::Result<WatchEnd> {
    let mut last: u64 = rv.parse().unwrap_or(0);
    let mut conn = ep.connect().await?;
    // No bookmarks: the bench's watches are short, and a reopened one resumes
    // from the last event's resourceVersion. (tug's periodic bookmark also
    // drops the events still queued for a lagging watcher; see the
    // benchmark notes in BENCHMARKS.md.)
    let path = format!("{collection}?watch=true&resourceVersion={rv}{sel}");
    let resp = conn.request(Method::GET, &path, None).await?;
    if resp.status() == StatusCode::GONE {
        return Ok(WatchEnd::Gone);
    }
    if resp.status() != StatusCode::OK {
        bail!("watch answered {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the watch")?;
        let at = Instant::now();
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + nl];
            start += nl + 1;
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Line>(line) {
                Ok(l) => {
                    if let Some(v) = &l.object.metadata.resource_version {
                        rv.clone_from(v);
                    }
                    let deleted = match l.kind.as_str() {
                        "BOOKMARK" => continue,
                        "DELETED" => true,
                        _ => false,
                    };
                    let ev = l.object.event(at, deleted);
                    stats.events.fetch_add(1, Ordering::Relaxed);
                    if ev.rv <= last {
                        let n = stats.out_of_order.fetch_add(1, Ordering::Relaxed) + 1;
                        if n <= 5 {
                            eprintln!(
                                "  pod watch: {}/{} at resourceVersion {} came after resourceVersion {last}",
                                ev.namespace, ev.name, ev.rv
                            );
                        }
                    }
                    last = last.max(ev.rv);
                    if tx.send(ev).is_err() {
                        return Ok(WatchEnd::ReceiverGone);
                    }
                }
                Err(e) => {
                    if find(line, b"\"type\":\"ERROR\"").is_some() {
                        if find(line, b"\"code\":410").is_some() {
                            return Ok(WatchEnd::Gone);
                        }
                        bail!("watch error: {}", String::from_utf8_lossy(&line[..line.len().min(300)]));
                    }
                    bail!("unparsable watch event ({e}): {}", String::from_utf8_lossy(&line[..line.len().min(300)]));
                }
            }
        }
        buf.drain(..start);
    }
    Ok(WatchEnd::Closed)
}

/// Every pod of `collection` matching `sel` (`&labelSelector=...` or
/// empty), in pages of 500, as events; and the list's resourceVersion.
pub async fn list_pods(ep: &Endpoint, collection: &str, sel: &str) -> anyhow::Result<(Vec<PodEvent>, String)> {
    let mut conn = ep.connect().await?;
    let mut cont = String::new();
    let mut events = Vec::new();
    loop {
        let mut path = format!("{collection}?limit=500{sel}");
        if !cont.is_empty() {
            path.push_str(&format!("&continue={cont}"));
        }
        let body = conn.expect(Method::GET, &path, None, StatusCode::OK).await?;
        let at = Instant::now();
        let list: PodListLite = serde_json::from_slice(&body).context("parsing a pod list")?;
        events.extend(list.items.into_iter().map(|p| p.event(at, false)));
        match list.metadata.cont.filter(|c| !c.is_empty()) {
            Some(c) => cont = c,
            None => return Ok((events, list.metadata.resource_version)),
        }
    }
}

// ---------------------------------------------------------------------------
// Memory

/// What a [`RssSampler`] saw, in bytes, per process in the order given.
#[derive(Clone, Debug, Default)]
pub struct RssPeaks {
    pub names: Vec<&'static str>,
    pub peak: Vec<u64>,
    pub last: Vec<u64>,
    /// The highest sum over the processes at one sample.
    pub total: u64,
}

impl RssPeaks {
    /// `server 1.2 GB + hollow 300 MB` of the last sample.
    pub fn fmt_last(&self) -> String {
        fmt_processes(self.names.iter().copied().zip(self.last.iter().copied()))
    }
}

/// Samples the RSS of some processes every `every`, until dropped. Each
/// process's own `VmHWM` is its exact peak; the samples give the peak of
/// the sum.
pub struct RssSampler {
    peaks: Arc<Mutex<RssPeaks>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pids: Vec<(&'static str, u32)>, every: Duration) -> RssSampler {
        let peaks = Arc::new(Mutex::new(RssPeaks {
            names: pids.iter().map(|(n, _)| *n).collect(),
            peak: vec![0; pids.len()],
            last: vec![0; pids.len()],
            total: 0,
        }));
        let p = peaks.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Ok(now) = pids.iter().map(|(_, pid)| procs::read_rss(*pid).map(|r| r.current)).collect::<anyhow::Result<Vec<u64>>>() else {
                    continue;
                };
                let mut p = p.lock().expect("rss lock");
                for (i, v) in now.iter().enumerate() {
                    p.peak[i] = p.peak[i].max(*v);
                }
                p.total = p.total.max(now.iter().sum());
                p.last = now;
            }
        });
        RssSampler { peaks, task }
    }

    pub fn peaks(&self) -> RssPeaks {
        self.peaks.lock().expect("rss lock").clone()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `server 1.2 GB + hollow 300 MB`
pub fn fmt_processes<'a>(rss: impl Iterator<Item = (&'a str, u64)>) -> String {
    rss.map(|(n, v)| format!("{n} {}", fmt_mb(v))).collect::<Vec<_>>().join(" + ")
}

// ---------------------------------------------------------------------------
// Quantities

/// Millicores of a CPU quantity (`100m`, `2`, `0.5`).
pub fn cpu_millis(q: &str) -> anyhow::Result<u64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse().with_context(|| format!("CPU quantity {q}"));
    }
    let cores: f64 = q.parse().with_context(|| format!("CPU quantity {q}"))?;
    Ok((cores * 1000.0).ceil() as u64)
}

/// Bytes of a memory quantity (`500Mi`, `32Gi`, `10M`, `1000`).
pub fn memory_bytes(q: &str) -> anyhow::Result<u64> {
    let q = q.trim();
    const UNITS: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, mult) in UNITS {
        if let Some(n) = q.strip_suffix(suffix) {
            let n: f64 = n.parse().with_context(|| format!("memory quantity {q}"))?;
            return Ok((n * *mult as f64).ceil() as u64);
        }
    }
    q.parse().with_context(|| format!("memory quantity {q}"))
}

/// Pods a hollow node holds (its `pods` capacity; see `tug_hollow::HollowConfig`).
pub const HOLLOW_PODS_PER_NODE: usize = 110;

/// Node capacity (`cpu`, `memory` for `tug hollow`) so that `per_node` pods
/// of the given requests fit with 10 % to spare, and never below `min`.
pub fn node_size(
    per_node: usize,
    pod_cpu: &str,
    pod_memory: &str,
    min: (&str, &str),
) -> anyhow::Result<(String, String)> {
    let need_cpu = (per_node as u64 * cpu_millis(pod_cpu)?) * 11 / 10;
    let need_mem = (per_node as u64 * memory_bytes(pod_memory)?) * 11 / 10;
    let cpu = cpu_millis(min.0)?.max(need_cpu).div_ceil(1000);
    let gib = memory_bytes(min.1)?.max(need_mem).div_ceil(1 << 30);
    Ok((cpu.to_string(), format!("{gib}Gi")))
}

// ---------------------------------------------------------------------------
// Output

/// Prints a Markdown table (the same style as `tug bench api`): the first
/// column left-aligned, the others right-aligned.
pub fn print_table(header: &[String], rows: &[Vec<String>]) {
    use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets};
    let mut table = Table::new();
    table
        .load_preset(presets::ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(header.iter().map(Cell::new));
    for row in rows {
        table.add_row(row.iter().enumerate().map(|(i, c)| {
            let cell = Cell::new(c);
            if i == 0 { cell } else { cell.set_alignment(CellAlignment::Right) }
        }));
    }
    println!("{table}");
}

/// Number of cores, for the footnotes.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis("100m").unwrap(), 100);
        assert_eq!(cpu_millis("2").unwrap(), 2000);
        assert_eq!(cpu_millis("0.5").unwrap(), 500);
        assert_eq!(memory_bytes("500Mi").unwrap(), 500 << 20);
        assert_eq!(memory_bytes("32Gi").unwrap(), 32 << 30);
        assert_eq!(memory_bytes("10M").unwrap(), 10_000_000);
        assert_eq!(memory_bytes("1000").unwrap(), 1000);
        assert!(memory_bytes("x").is_err());
    }

    #[test]
    fn node_sizes() {
        // Upstream's node-default (4 CPU, 32 Gi) holds 40 pods of 100m/500Mi.
        assert_eq!(node_size(20, "100m", "500Mi", ("4", "32Gi")).unwrap(), ("4".into(), "32Gi".into()));
        assert_eq!(node_size(110, "100m", "500Mi", ("4", "32Gi")).unwrap(), ("13".into(), "60Gi".into()));
    }

    #[test]
    fn pod_events_parse() {
        let line = br#"{"type":"MODIFIED","object":{"kind":"Pod","metadata":{"name":"p","namespace":"n","resourceVersion":"7"},"spec":{"nodeName":"x","containers":[]},"status":{"phase":"Running","conditions":[]}}}"#;
        let l: Line = serde_json::from_slice(line).unwrap();
        assert_eq!(l.object.metadata.resource_version.as_deref(), Some("7"));
        let e = l.object.event(Instant::now(), false);
        assert!(e.bound);
        assert_eq!(e.phase, Phase::Running);
        assert_eq!((e.namespace.as_str(), e.name.as_str()), ("n", "p"));
        let gone = br#"{"type":"ERROR","object":{"kind":"Status","status":"Failure","code":410}}"#;
        assert!(serde_json::from_slice::<Line>(gone).is_err());
    }
}
