//! `tug bench pod-startup`: how fast the node agent starts real pods.
//!
//! A fresh `tug server` (embedded SQLite in a temp dir) and the node agent
//! in a process of its own (`tug-agent`, or `tug agent` with
//! `--full-binary`; its own containerd, runc, CNI bridge and cgroup root),
//! the busybox test image already present (a warm-up pod pulls it and the
//! pause image). Through a pod watch the bench times each pod from its
//! create request to the watch event showing it Running:
//! - 50 pods one after another (each created once the previous one runs);
//! - 30 pods created at once;
//!
//! and, in the same run against the same containerd, the floor of the same
//! work done by containerd alone: `ctr run --rm IMAGE ID true`, 50 times one
//! after another, timed from spawn to exit (create, start, exit, delete: no
//! sandbox, no CNI, no API server), and the same pods' CRI calls made
//! straight to containerd, one after another and 30 at once. The pods one
//! after another and both floors' runs are interleaved (a pod, a `ctr run`,
//! a CRI run, in rotating order), so the ratios compare like with like on a
//! machine whose load drifts. The agent's RSS is read with the 30 pods
//! running. Progress goes to stderr; the table to stdout.
//!
//! Needs root, containerd, runc, the CNI plugins and `ctr`; the image comes
//! from the test registry (`scripts/test-image.sh`, started if it is not
//! answering) unless `--image` names one the node can pull.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::{Method, StatusCode};
use serde::Deserialize;

use super::client::Conn;
use super::cluster::{self, Phase, PodEvent};
use super::procs::{self, ChildGuard, Rss};
use super::{fmt_mb, fmt_us, loadavg, percentile};

const GOAL_P99_US: u64 = 1_000_000;
const GOAL_RATIO: f64 = 1.5;
const GOAL_RSS: u64 = 30 << 20;
const LABEL: &str = "tugboat.io/bench";
const LABEL_VALUE: &str = "pod-startup";

#[derive(clap::Args)]
pub struct PodStartupBenchArgs {
    /// Pods created one after another.
    #[arg(long, default_value_t = 50)]
    pub sequential: usize,
    /// Pods created at once (the agent's RSS is read with these running).
    #[arg(long, default_value_t = 30)]
    pub burst: usize,
    /// `ctr run --rm` runs for containerd's floor.
    #[arg(long, default_value_t = 50)]
    pub floor_runs: usize,
    /// The pods' image (default: busybox from the test registry).
    #[arg(long)]
    pub image: Option<String>,
    /// The sandbox image (default: busybox:pause from the test registry).
    #[arg(long)]
    pub pause_image: Option<String>,
    /// Port of the test registry (scripts/test-image.sh --port).
    #[arg(long, default_value_t = 5000)]
    pub registry_port: u16,
    /// Give up on a pod that is not Running after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub pod_timeout_secs: u64,
    /// Where the temporary data dir goes (default: the system temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the data dir (server and agent logs) instead of removing it.
    #[arg(long)]
    pub keep_dir: bool,
    /// Run the agent as `tug agent` (the whole binary) instead of
    /// `tug-agent` (the agent-only binary, used when it sits next to `tug`).
    #[arg(long)]
    pub full_binary: bool,
}

#[derive(Default)]
struct Outcome {
    /// Sorted, microseconds: create request → Running on the watch.
    sequential_us: Vec<u64>,
    burst_us: Vec<u64>,
    /// Create request of the first burst pod → the last one Running.
    burst_all: Option<Duration>,
    /// Sorted, microseconds: `ctr run --rm` wall time.
    floor_us: Vec<u64>,
    /// Sorted, microseconds: RunPodSandbox + CreateContainer +
    /// StartContainer straight to the CRI, the agent's own configurations.
    cri_floor_us: Vec<u64>,
    /// Sorted, microseconds: the same, `burst` pods at once, each timed
    /// from the common start.
    cri_burst_us: Vec<u64>,
    agent_rss: Option<Rss>,
    /// The agent's memory split with the burst pods running.
    agent_mem: Option<MemSplit>,
    /// The same once every pod is gone again.
    agent_mem_after: Option<MemSplit>,
    containerd_rss: Option<Rss>,
    agent_rss_idle: Option<u64>,
    /// How the agent ran: `tug-agent` or `tug agent`.
    agent_cmd: &'static str,
    error: Option<String>,
}

pub async fn run(a: PodStartupBenchArgs) -> anyhow::Result<()> {
    if a.sequential == 0 && a.burst == 0 {
        bail!("--sequential and --burst are both 0: nothing to measure");
    }
    preflight()?;
    let started = Instant::now();
    let load_start = loadavg();
    let mut r = Outcome::default();
    eprintln!(
        "tug bench pod-startup: {} pods one after another, {} at once, {} `ctr run --rm` for the floor",
        a.sequential, a.burst, a.floor_runs
    );
    let work_dir = a.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("tug-bench-pod-startup-")
        .tempdir_in(&work_dir)
        .with_context(|| format!("creating a temp dir in {}", work_dir.display()))?;
    let result = {
        let mut node = BenchNode::new(tmp.path());
        let res = run_bench(&a, &mut node, &mut r).await;
        node.shutdown().await;
        res
    };
    if let Err(e) = result {
        eprintln!("!! pod-startup failed: {e:#}");
        r.error = Some(format!("{e:#}"));
    }
    print_report(&a, &r, started.elapsed(), &load_start);
    if a.keep_dir {
        let kept = tmp.keep();
        eprintln!("data dir kept: {}", kept.display());
    } else {
        drop(tmp);
    }
    if r.error.is_some() {
        bail!("the benchmark did not complete");
    }
    Ok(())
}

fn on_path(bin: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|d| d.join(bin).is_file())
}

fn preflight() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        bail!("pod-startup runs real containers: it needs root");
    }
    for bin in ["containerd", "runc", "ctr", "ip"] {
        if !on_path(bin) {
            bail!("{bin} is not installed (scripts/setup.sh installs it)");
        }
    }
    if !Path::new("/usr/lib/cni/bridge").exists() {
        bail!("the CNI plugins are not in /usr/lib/cni (containernetworking-plugins)");
    }
    Ok(())
}

/// The test registry answering on `port`, started with scripts/test-image.sh if not.
fn ensure_registry(port: u16) -> anyhow::Result<String> {
    let addr = format!("127.0.0.1:{port}");
    let answers = || {
        std::net::TcpStream::connect_timeout(&addr.parse().expect("address"), Duration::from_secs(1)).is_ok()
    };
    if answers() {
        return Ok(addr);
    }
    let mut candidates = vec![std::env::current_dir()?];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().map(Path::to_path_buf));
    }
    let script = candidates
        .iter()
        .map(|d| d.join("scripts/test-image.sh"))
        .find(|p| p.is_file())
        .context("no registry on 127.0.0.1 and scripts/test-image.sh not found: run it, or pass --image")?;
    eprintln!("starting the test registry: {} --port {port}", script.display());
    let out = Command::new("bash")
        .arg(&script)
        .args(["--port", &port.to_string()])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(addr)
}

/// The agent and everything it puts on the machine, removed on shutdown
/// (or drop): pods deleted through the API, the agent stopped (it stops its
/// containerd), then leftover shims, mounts, the bridge and the cgroups.
struct BenchNode {
    root: PathBuf,
    bridge: String,
    cgroup_root: String,
    agent: Option<ChildGuard>,
    server: Option<procs::Server>,
}

impl BenchNode {
    fn new(root: &Path) -> BenchNode {
        let pid = std::process::id();
        BenchNode {
            root: root.to_path_buf(),
            bridge: format!("tugbn-{pid}"),
            cgroup_root: format!("/tug-bench-{pid}"),
            agent: None,
            server: None,
        }
    }

    fn containerd_socket(&self) -> PathBuf {
        self.root.join("node/agent/containerd/containerd.sock")
    }

    fn containerd_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.root.join("node/agent/containerd/containerd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    async fn shutdown(&mut self) {
        if let (Some(server), Some(_)) = (&self.server, &self.agent)
            && let Ok(mut conn) = server.endpoint.connect().await
        {
            let _ = delete_all(&mut conn, Duration::from_secs(60)).await;
        }
        if let Some(mut a) = self.agent.take() {
            a.terminate(Duration::from_secs(20));
        }
        self.clean();
        self.server = None;
    }

    fn clean(&self) {
        let root = self.root.to_string_lossy().into_owned();
        // containerd and shims started under our root.
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains(&root) && cmdline.contains("containerd") {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
            }
        }
        // Processes left in the pods' cgroups.
        for d in cgroup_dirs(&self.cgroup_root) {
            for pid in std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines() {
                let _ = Command::new("kill").args(["-9", pid.trim()]).stderr(Stdio::null()).status();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(4))
                .filter(|m| m.starts_with(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for m in points {
                let _ = Command::new("umount").args(["-l", m]).stderr(Stdio::null()).status();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let _ = tug_kubelet::cni::remove_masquerade(&self.bridge);
        for d in cgroup_dirs(&self.cgroup_root).iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.terminate(Duration::from_secs(20));
        }
        self.clean();
    }
}

fn cgroup_dirs(cgroup_root: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let rel = cgroup_root.trim_matches('/');
    if rel.is_empty() {
        return out;
    }
    for e in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let p = e.path().join(rel);
        if !p.is_dir() {
            continue;
        }
        let mut dirs = vec![p];
        let mut i = 0;
        while i < dirs.len() {
            for s in std::fs::read_dir(&dirs[i]).into_iter().flatten().flatten() {
                if s.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    dirs.push(s.path());
                }
            }
            i += 1;
        }
        out.extend(dirs);
    }
    out
}

/// What a process's resident memory is made of (bytes): its own heap and
/// stacks (`RssAnon`), pages of mapped files, mostly the `tug` binary's
/// code (`RssFile`), and its proportional share (`Pss`: file pages shared
/// with other processes mapping the same binary, the server here, counted
/// in part).
#[derive(Clone, Copy, Debug)]
struct MemSplit {
    anon: u64,
    file: u64,
    pss: u64,
}

fn mem_split(pid: u32) -> Option<MemSplit> {
    let field = |text: &str, name: &str| -> Option<u64> {
        let l = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = l[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(MemSplit {
        anon: field(&status, "RssAnon:")?,
        file: field(&status, "RssFile:")?,
        pss: field(&rollup, "Pss:")?,
    })
}

/// Waits until the agent's containerd holds no container (the API shows a
/// pod deleted with grace period 0 gone before the node has torn it down;
/// the next phase must not share the machine with that teardown).
async fn wait_runtime_empty(sock: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = tokio::process::Command::new("ctr")
            .arg("-a")
            .arg(sock)
            .args(["-n", "k8s.io", "containers", "ls", "-q"])
            .stdin(Stdio::null())
            .output()
            .await
            .context("running ctr")?;
        let left = String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count();
        if out.status.success() && left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} containers still in the runtime after {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn pod_body(name: &str, image: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {LABEL: LABEL_VALUE}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "c",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
            }],
        },
    })
    .to_string()
}

const PODS: &str = "/api/v1/namespaces/default/pods";

/// Deletes every bench pod and waits until none is left.
async fn delete_all(conn: &mut Conn, timeout: Duration) -> anyhow::Result<()> {
    let sel = format!("labelSelector={LABEL}%3D{LABEL_VALUE}");
    conn.expect(Method::DELETE, &format!("{PODS}?{sel}"), None, StatusCode::OK)
        .await
        .context("deleting the bench pods")?;
    let deadline = Instant::now() + timeout;
    loop {
        #[derive(Deserialize)]
        struct List {
            items: Vec<serde_json::Value>,
        }
        let body = conn.expect(Method::GET, &format!("{PODS}?{sel}"), None, StatusCode::OK).await?;
        let l: List = serde_json::from_slice(&body)?;
        if l.items.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} bench pods still there after {} s", l.items.len(), timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits on the watch until `name` is Running; returns when the event came.
async fn wait_running(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<PodEvent>,
    pending: &mut std::collections::HashMap<String, Instant>,
    done: &mut Vec<(String, Instant)>,
    until: impl Fn(&[(String, Instant)]) -> bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !until(done) {
        let ev = tokio::select! {
            ev = events.recv() => ev.context("the pod watch ended")?,
            _ = tokio::time::sleep_until(deadline) => {
                bail!("pods not Running after {} s: {:?}", timeout.as_secs(), pending.keys().collect::<Vec<_>>())
            }
        };
        if !ev.deleted
            && ev.phase == Phase::Running
            && let Some(t) = pending.remove(&ev.name)
        {
            let _ = t;
            done.push((ev.name.clone(), ev.at));
        }
        if ev.phase == Phase::Failed && pending.contains_key(&ev.name) {
            bail!("pod {} failed", ev.name);
        }
    }
    Ok(())
}

async fn wait_node_ready(conn: &mut Conn, name: &str, agent: &mut ChildGuard) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        agent.check_alive()?;
        let (status, body) = conn.call(Method::GET, &format!("/api/v1/nodes/{name}"), None).await?;
        if status == StatusCode::OK {
            let n: serde_json::Value = serde_json::from_slice(&body)?;
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if ready {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("node {name} not Ready after 120 s; agent log:\n{}", agent.log_tail(30));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn run_bench(a: &PodStartupBenchArgs, node: &mut BenchNode, r: &mut Outcome) -> anyhow::Result<()> {
    let (image, pause) = match (&a.image, &a.pause_image) {
        (Some(i), Some(p)) => (i.clone(), p.clone()),
        (i, p) => {
            let addr = ensure_registry(a.registry_port)?;
            (
                i.clone().unwrap_or_else(|| format!("{addr}/busybox:latest")),
                p.clone().unwrap_or_else(|| format!("{addr}/busybox:pause")),
            )
        }
    };
    let pid = std::process::id();
    let net = 200 + pid % 50;
    eprintln!("starting tug server");
    let server = procs::start_server_with(
        &node.root,
        None,
        &["--cluster-cidr".into(), format!("10.{net}.0.0/16")],
    )
    .await?;
    let kubeconfig = node.root.join("server/kubeconfig.yaml");
    let server_url = server.endpoint.base.clone();
    node.server = Some(server);
    let node_name = format!("bench-node-{pid}");
    let args: Vec<String> = [
        "--kubeconfig",
        &kubeconfig.to_string_lossy(),
        "--server",
        &server_url,
        "--data-dir",
        &node.root.join("node").to_string_lossy(),
        "--node-name",
        &node_name,
        "--node-ip",
        "127.0.0.1",
        "--pause-image",
        &pause,
        "--cni-bridge",
        &node.bridge,
        "--kubelet-arg",
        &format!("cgroup-root={}", node.cgroup_root),
        "--kubelet-arg",
        "eviction-hard=memory.available<1Mi,nodefs.available<1Mi",
        "--kubelet-arg",
        &format!("pod-cidr=10.{net}.255.0/24"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (agent, agent_cmd) = procs::start_agent(&node.root, &args, a.full_binary)?;
    eprintln!("started {agent_cmd} --node-name {node_name}");
    r.agent_cmd = agent_cmd;
    node.agent = Some(agent);
    let endpoint = node.server.as_ref().expect("server").endpoint.clone();
    let mut conn = endpoint.connect().await?;
    wait_node_ready(&mut conn, &node_name, node.agent.as_mut().expect("agent")).await?;
    r.agent_rss_idle = node.agent.as_ref().and_then(|g| g.rss().ok()).map(|x| x.current);
    eprintln!("  node Ready; agent RSS {}", r.agent_rss_idle.map(fmt_mb).unwrap_or_default());

    // The watch first, so that no pod is missed.
    let sel = format!("labelSelector={LABEL}%3D{LABEL_VALUE}");
    let rv = cluster::collection_rv(&mut conn, PODS, &format!("?{sel}")).await?;
    let (mut events, watch, _stats) = cluster::spawn_pod_watch(endpoint.clone(), PODS.into(), sel, rv);
    let timeout = Duration::from_secs(a.pod_timeout_secs);
    let mut pending = std::collections::HashMap::new();
    let mut done = Vec::new();

    // Warm-up: pulls the image and the pause image (not measured).
    eprintln!("  warm-up pod (pulls {image})");
    conn.expect(Method::POST, PODS, Some(pod_body("warmup", &image).into()), StatusCode::CREATED).await?;
    pending.insert("warmup".to_string(), Instant::now());
    wait_running(&mut events, &mut pending, &mut done, |d| !d.is_empty(), Duration::from_secs(300)).await?;
    delete_all(&mut conn, Duration::from_secs(60)).await?;
    wait_runtime_empty(&node.containerd_socket(), Duration::from_secs(120)).await?;
    done.clear();

    // containerd alone, same image, same containerd: one warm-up of each
    // floor (as the warm-up pod is for the agent), not counted.
    let sock = node.containerd_socket();
    let floor = CriFloor::new(node, &image).await?;
    if a.floor_runs > 0 {
        ctr_run(&sock, &image, &format!("tug-bench-floor-{pid}-warmup")).await?;
        floor.once("cri-floor-warmup").await?;
    }

    // One after another, interleaved with the two floors: round i times a
    // pod, a `ctr run --rm` and the CRI calls alone, in an order that
    // rotates, so that all three see the same machine (load drifts over a
    // run) and the same number of running pods, and each follows each of
    // the others equally often.
    let rounds = a.sequential.max(a.floor_runs);
    for i in 0..rounds {
        for step in 0..3 {
            match (step + i) % 3 {
                0 if i < a.sequential => {
                    let name = format!("seq-{i}");
                    let t = Instant::now();
                    conn.expect(Method::POST, PODS, Some(pod_body(&name, &image).into()), StatusCode::CREATED)
                        .await?;
                    pending.insert(name.clone(), t);
                    wait_running(&mut events, &mut pending, &mut done, |d| d.iter().any(|(n, _)| *n == name), timeout)
                        .await?;
                    let at = done.last().expect("one done").1;
                    r.sequential_us.push(at.duration_since(t).as_micros() as u64);
                }
                1 if i < a.floor_runs => {
                    r.floor_us.push(ctr_run(&sock, &image, &format!("tug-bench-floor-{pid}-{i}")).await?);
                }
                2 if i < a.floor_runs => r.cri_floor_us.push(floor.once(&format!("cri-floor-{i}")).await?),
                _ => {}
            }
        }
        if (i + 1) % 10 == 0 {
            eprintln!(
                "  round {}/{rounds}: last pod {}, ctr run {}, CRI alone {}; load {}",
                i + 1,
                fmt_us(r.sequential_us.last().copied()),
                fmt_us(r.floor_us.last().copied()),
                fmt_us(r.cri_floor_us.last().copied()),
                loadavg()
            );
        }
    }
    r.floor_us.sort_unstable();
    r.cri_floor_us.sort_unstable();
    if a.floor_runs > 0 {
        eprintln!(
            "  containerd floor: ctr run --rm p50 {} p99 {}; CRI floor: sandbox + container p50 {} p99 {}",
            fmt_us(percentile(&r.floor_us, 0.5)),
            fmt_us(percentile(&r.floor_us, 0.99)),
            fmt_us(percentile(&r.cri_floor_us, 0.5)),
            fmt_us(percentile(&r.cri_floor_us, 0.99))
        );
    }
    r.sequential_us.sort_unstable();
    if a.sequential > 0 {
        eprintln!("  deleting the sequential pods");
        delete_all(&mut conn, Duration::from_secs(120)).await?;
        wait_runtime_empty(&sock, Duration::from_secs(120)).await?;
    }
    done.clear();

    // All at once: the creates go out back to back on one HTTP/2 connection.
    if a.burst > 0 {
        let mut started = Vec::new();
        let t0 = Instant::now();
        let creates = (0..a.burst).map(|i| {
            let mut c = conn.clone();
            let name = format!("burst-{i}");
            let body = pod_body(&name, &image);
            async move {
                let t = Instant::now();
                c.expect(Method::POST, PODS, Some(body.into()), StatusCode::CREATED).await?;
                anyhow::Ok((name, t))
            }
        });
        for res in futures::future::join_all(creates).await {
            let (name, t) = res?;
            started.push((name.clone(), t));
            pending.insert(name, t);
        }
        let n = a.burst;
        wait_running(&mut events, &mut pending, &mut done, |d| d.len() >= n, timeout).await?;
        for (name, at) in &done {
            if let Some((_, t)) = started.iter().find(|(n, _)| n == name) {
                r.burst_us.push(at.duration_since(*t).as_micros() as u64);
            }
        }
        r.burst_all = done.iter().map(|(_, at)| at.duration_since(t0)).max();
        r.burst_us.sort_unstable();
        eprintln!(
            "  burst: {n} Running, the last {:.2} s after the first create",
            r.burst_all.unwrap_or_default().as_secs_f64()
        );
        // Let the agent settle (status writes, relists), then read its memory.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let agent = node.agent.as_mut().expect("agent");
        agent.check_alive()?;
        r.agent_rss = Some(agent.rss()?);
        r.agent_mem = mem_split(agent.pid());
        r.containerd_rss = node.containerd_pid().and_then(|p| procs::read_rss(p).ok());
        eprintln!(
            "  RSS with {n} pods: agent {}, containerd {}",
            r.agent_rss.map(|x| fmt_mb(x.current)).unwrap_or_default(),
            r.containerd_rss.map(|x| fmt_mb(x.current)).unwrap_or_default()
        );
        delete_all(&mut conn, Duration::from_secs(120)).await?;
        wait_runtime_empty(&sock, Duration::from_secs(120)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        r.agent_mem_after = node.agent.as_ref().and_then(|g| mem_split(g.pid()));
    }
    drop(events);
    watch.abort();

    if a.burst > 0 {
        r.cri_burst_us = floor.burst(a.burst).await?;
        eprintln!(
            "  CRI floor, {} at once: p50 {} p99 {}",
            a.burst,
            fmt_us(percentile(&r.cri_burst_us, 0.5)),
            fmt_us(percentile(&r.cri_burst_us, 0.99))
        );
    }
    Ok(())
}

/// A pod's sandbox and container configurations, as the agent builds them.
type PodConfigs = (tug_kubelet::cri::v1::PodSandboxConfig, tug_kubelet::cri::v1::ContainerConfig);

/// The pod's runtime work without the agent and the API server: the same
/// CRI calls with the configurations the agent builds (sandbox with CNI,
/// then the container), straight to the agent's containerd.
struct CriFloor {
    cri: tug_kubelet::cri::Cri,
    cfg: tug_kubelet::AgentConfig,
    image: String,
    image_ref: String,
}

impl CriFloor {
    async fn new(node: &BenchNode, image: &str) -> anyhow::Result<CriFloor> {
        let cri = tug_kubelet::cri::Cri::new(&format!("unix://{}", node.containerd_socket().display()))?;
        let image_ref = cri
            .image_status(image)
            .await?
            .map(|i| i.id)
            .with_context(|| format!("{image} is not in the runtime"))?;
        let mut cfg = tug_kubelet::AgentConfig::new(node.root.join("cri-floor"), "cri-floor");
        cfg.cgroup_root = node.cgroup_root.clone();
        cfg.pod_log_dir = node.root.join("cri-floor/logs");
        Ok(CriFloor { cri, cfg, image: image.to_string(), image_ref })
    }

    /// The sandbox and container configurations of a pod `name` (and its
    /// log directory): prepared before the clock starts, as the agent has
    /// them ready before it calls the runtime.
    fn configs(&self, name: &str) -> anyhow::Result<PodConfigs> {
        use tug_kubelet::spec;
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("tug-bench-{}-{name}", std::process::id())},
            "spec": {"containers": [{"name": "c", "image": self.image, "command": ["sleep", "3600"]}]},
        }))?;
        let sandbox = spec::sandbox_config(&self.cfg, &pod, 0);
        std::fs::create_dir_all(&sandbox.log_directory)?;
        let container = pod.spec.as_ref().map(|s| s.containers[0].clone()).context("pod spec")?;
        let config = spec::container_config(spec::ContainerInput {
            pod: &pod,
            container: &container,
            attempt: 0,
            image_ref: &self.image_ref,
            env: Vec::new(),
            mounts: Vec::new(),
            node_memory: tug_kubelet::machine::memory_total() as i64,
        })
        .map_err(|e| anyhow::anyhow!("container config: {e}"))?;
        Ok((sandbox, config))
    }

    /// RunPodSandbox, CreateContainer and StartContainer; returns the
    /// sandbox and container ids.
    async fn start(&self, (sandbox, config): PodConfigs) -> anyhow::Result<(String, String)> {
        let sid = self.cri.run_pod_sandbox(sandbox.clone()).await?;
        let cid = self.cri.create_container(&sid, config, sandbox).await?;
        self.cri.start_container(&cid).await?;
        Ok((sid, cid))
    }

    async fn remove(&self, (sid, cid): &(String, String)) -> anyhow::Result<()> {
        let _ = self.cri.stop_container(cid, Duration::ZERO).await;
        let _ = self.cri.remove_container(cid).await;
        let _ = self.cri.stop_pod_sandbox(sid).await;
        self.cri.remove_pod_sandbox(sid).await
    }

    /// One pod's CRI calls, timed from RunPodSandbox to StartContainer's
    /// return; the pod is removed (untimed) before it returns. Microseconds.
    async fn once(&self, name: &str) -> anyhow::Result<u64> {
        let configs = self.configs(name)?;
        let t = Instant::now();
        let ids = self.start(configs).await?;
        let us = t.elapsed().as_micros() as u64;
        self.remove(&ids).await?;
        Ok(us)
    }

    /// `n` pods started at once (as the burst pods are), each timed from the
    /// common start to its StartContainer's return; all removed after.
    /// Sorted microseconds.
    async fn burst(&self, n: usize) -> anyhow::Result<Vec<u64>> {
        let configs = (0..n).map(|i| self.configs(&format!("cri-burst-{i}"))).collect::<anyhow::Result<Vec<_>>>()?;
        let t0 = Instant::now();
        let results = futures::future::join_all(configs.into_iter().map(|c| async move {
            let r = self.start(c).await;
            (r, t0.elapsed().as_micros() as u64)
        }))
        .await;
        // Every started pod is removed, even after a failure.
        let mut out = Vec::new();
        let mut first_error = None;
        for (r, us) in results {
            match r {
                Ok(ids) => {
                    out.push(us);
                    if let Err(e) = self.remove(&ids).await {
                        first_error = first_error.or(Some(e));
                    }
                }
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        if let Some(e) = first_error {
            return Err(e.context("starting the CRI burst"));
        }
        out.sort_unstable();
        Ok(out)
    }
}

/// `ctr run --rm IMAGE ID true` on the agent's containerd, timed from
/// spawn to exit; microseconds.
async fn ctr_run(sock: &Path, image: &str, id: &str) -> anyhow::Result<u64> {
    let t = Instant::now();
    let out = tokio::process::Command::new("ctr")
        .arg("-a")
        .arg(sock)
        .args(["-n", "k8s.io", "run", "--rm", image, id, "true"])
        .stdin(Stdio::null())
        .output()
        .await
        .context("running ctr")?;
    let us = t.elapsed().as_micros() as u64;
    if !out.status.success() {
        bail!("ctr run failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(us)
}

fn ratio(a: Option<u64>, b: Option<u64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0 => Some(a as f64 / b as f64),
        _ => None,
    }
}

fn print_report(a: &PodStartupBenchArgs, r: &Outcome, total: Duration, load_start: &str) {
    let header: Vec<String> = ["metric", "goal", "result", "pass/fail"].iter().map(|s| s.to_string()).collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut add = |m: String, goal: &str, v: String, ok: Option<Option<bool>>| {
        rows.push(vec![m, goal.into(), v, ok.map(super::verdict).unwrap_or("").into()]);
    };
    let pair = |v: &[u64]| format!("{} / {}", fmt_us(percentile(v, 0.5)), fmt_us(percentile(v, 0.99)));
    let p99_ok = |v: &[u64]| percentile(v, 0.99).map(|p| p < GOAL_P99_US);
    add(
        format!("create → Running p50 / p99, {} pods one after another", r.sequential_us.len()),
        "p99 < 1 s",
        pair(&r.sequential_us),
        Some(p99_ok(&r.sequential_us)),
    );
    add(
        format!("create → Running p50 / p99, {} pods at once", r.burst_us.len()),
        "p99 < 1 s",
        pair(&r.burst_us),
        Some(p99_ok(&r.burst_us)),
    );
    add(
        "  first create → last of them Running".into(),
        "",
        r.burst_all.map(|d| format!("{:.2} s", d.as_secs_f64())).unwrap_or_else(|| "–".into()),
        None,
    );
    add(
        format!("containerd alone: `ctr run --rm` p50 / p99, {} one after another", r.floor_us.len()),
        "",
        pair(&r.floor_us),
        None,
    );
    add(
        format!(
            "CRI alone: sandbox (CNI) + container, agent's configs, p50 / p99, {} one after another",
            r.cri_floor_us.len()
        ),
        "",
        pair(&r.cri_floor_us),
        None,
    );
    add(
        format!("CRI alone, {} at once (each from the common start), p50 / p99", r.cri_burst_us.len()),
        "",
        pair(&r.cri_burst_us),
        None,
    );
    let fmt_ratio = |x: Option<f64>| x.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "–".into());
    for (what, floor) in [("`ctr run --rm`", &r.floor_us), ("CRI alone", &r.cri_floor_us)] {
        let rp50 = ratio(percentile(&r.sequential_us, 0.5), percentile(floor, 0.5));
        let rp99 = ratio(percentile(&r.sequential_us, 0.99), percentile(floor, 0.99));
        add(
            format!("pod (one after another) / {what}, p50 / p99"),
            "≤ 1.5x",
            format!("{} / {}", fmt_ratio(rp50), fmt_ratio(rp99)),
            Some(match (rp50, rp99) {
                (Some(x), Some(y)) => Some(x <= GOAL_RATIO && y <= GOAL_RATIO),
                _ => None,
            }),
        );
    }
    // The burst against the same burst straight to the CRI: what the agent
    // and the API server add when the runtime is the bottleneck (no goal:
    // the ratio is against `ctr run`, one after another).
    let bp50 = ratio(percentile(&r.burst_us, 0.5), percentile(&r.cri_burst_us, 0.5));
    let bp99 = ratio(percentile(&r.burst_us, 0.99), percentile(&r.cri_burst_us, 0.99));
    add(
        "pods at once / CRI alone at once, p50 / p99".into(),
        "",
        format!("{} / {}", fmt_ratio(bp50), fmt_ratio(bp99)),
        None,
    );
    add(
        format!("`{}` RSS, node Ready, no pods", r.agent_cmd),
        "",
        r.agent_rss_idle.map(fmt_mb).unwrap_or_else(|| "–".into()),
        None,
    );
    add(
        format!("**`{}` RSS with {} pods** (VmRSS; VmHWM)", r.agent_cmd, a.burst),
        "< 30 MB",
        r.agent_rss.map(|x| format!("{} ({})", fmt_mb(x.current), fmt_mb(x.peak))).unwrap_or_else(|| "–".into()),
        Some(r.agent_rss.map(|x| x.current < GOAL_RSS)),
    );
    let split = |m: Option<MemSplit>| {
        m.map(|m| format!("{} / {} / {}", fmt_mb(m.anon), fmt_mb(m.file), fmt_mb(m.pss)))
            .unwrap_or_else(|| "–".into())
    };
    add(
        "  of which heap (RssAnon) / mapped binary (RssFile) / PSS".into(),
        "",
        split(r.agent_mem),
        None,
    );
    add("  the same once the pods are deleted".into(), "", split(r.agent_mem_after), None);
    add(
        format!("containerd RSS with {} pods (for reference)", a.burst),
        "",
        r.containerd_rss.map(|x| fmt_mb(x.current)).unwrap_or_else(|| "–".into()),
        None,
    );
    add("wall time".into(), "", format!("{:.0} s", total.as_secs_f64()), None);
    cluster::print_table(&header, &rows);
    println!();
    println!(
        "* Machine: {} cores shared by the bench, `tug server` (SQLite, scheduler and controllers in-process), `{}` (its own containerd 1.6, runc, CNI bridge) and whatever else runs here.",
        cluster::cores(),
        r.agent_cmd
    );
    println!(
        "* Pods: busybox `sleep 3600`, image present (imagePullPolicy IfNotPresent), timed from the create request to the pod watch event showing Running: scheduling, sandbox (pause container + CNI), container create and start, and the status write all included."
    );
    println!(
        "* Floor: `ctr run --rm IMAGE ID true` on the agent's containerd, timed from spawn to exit: the ctr process, container create, task start, exit, task and container delete (no sandbox, no CNI, no API server). Its runs and the CRI-alone runs are interleaved with the pods one after another (rotating order), with the earlier pods still running."
    );
    println!(
        "* CRI alone: RunPodSandbox (pause container, network namespace, CNI bridge + host-local + portmap), CreateContainer, StartContainer with the configurations the agent builds, straight to the agent's containerd (no API server, no agent), timed to StartContainer's return; and the same for {} pods started at once, each timed from the common start: the runtime's own floor for the burst on this machine.",
        a.burst
    );
    println!(
        "* 1-minute load average {load_start} at the start, {} at the end.",
        loadavg()
    );
    if let Some(e) = &r.error {
        println!("* FAILED (figures are those measured before): {}", e.lines().next().unwrap_or(""));
    }
}
