//! Resource usage, as upstream's kubelet serves it: `/stats/summary`
//! (`stats/v1alpha1` Summary) and `/metrics/resource` (Prometheus text).
//! The API server's `metrics.k8s.io` reads the summary of every node, which
//! is what `kubectl top` shows.
//!
//! Containers: the runtime's counters (CRI `ListContainerStats`: cumulative
//! CPU time, memory working set), keyed by the pod labels every container
//! carries. The node: `/proc/stat` and `/proc/meminfo` (cadvisor's root
//! cgroup figures: working set = used memory minus inactive file pages).
//!
//! CPU rates (`usageNanoCores`) need two samples. Each request keeps the
//! counters it read; the next one computes the rate over the interval
//! between them, as cadvisor does between housekeeping rounds. A request
//! that finds no earlier sample for something takes a second sample after
//! [`FIRST_SAMPLE_GAP`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::cri::v1 as cri;
use crate::cri::{CONTAINER_NAME_LABEL, POD_NAMESPACE_LABEL, POD_NAME_LABEL, POD_UID_LABEL};
use crate::Agent;

/// How long to wait for a second sample when there is no earlier one.
const FIRST_SAMPLE_GAP: Duration = Duration::from_millis(250);
/// Samples closer than this reuse the previous rate (a rate over a few
/// milliseconds is noise).
const MIN_RATE_INTERVAL_NS: i64 = 1_000_000_000;
/// Linux's USER_HZ: `/proc/stat` counts in 1/100 s.
const NS_PER_JIFFY: u64 = 10_000_000;
/// Key of the node's own sample.
const NODE_KEY: &str = "/";

/// One cumulative CPU reading and the rate computed at it.
#[derive(Clone, Copy, Debug)]
struct CpuSample {
    at_ns: i64,
    core_ns: u64,
    nano_cores: Option<u64>,
}

/// The last CPU readings, for rates.
#[derive(Default)]
pub struct Sampler {
    last: Mutex<HashMap<String, CpuSample>>,
}

impl Sampler {
    /// Records a reading of `key` and returns the CPU rate in nanocores, if
    /// there is an earlier reading far enough back.
    fn rate(&self, key: &str, at_ns: i64, core_ns: u64) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let prev = last.get(key).copied();
        let nano_cores = match prev {
            Some(p) if at_ns - p.at_ns >= MIN_RATE_INTERVAL_NS || p.nano_cores.is_none() => {
                let dt = (at_ns - p.at_ns).max(1) as u128;
                // A counter that went back is a restarted container: no rate yet.
                (core_ns >= p.core_ns && at_ns > p.at_ns).then(|| ((core_ns - p.core_ns) as u128 * 1_000_000_000 / dt) as u64)
            }
            Some(p) => {
                // Too close to the last reading: keep that one (and its rate).
                return p.nano_cores;
            }
            None => None,
        };
        last.insert(key.to_string(), CpuSample { at_ns, core_ns, nano_cores });
        nano_cores
    }

    fn has(&self, key: &str) -> bool {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).contains_key(key)
    }

    /// Forgets readings of containers that are gone.
    fn retain(&self, live: &dyn Fn(&str) -> bool) {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| k == NODE_KEY || live(k));
    }
}

/// The node's counters from `/proc`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeUsage {
    pub core_ns: u64,
    pub memory_usage: u64,
    pub memory_working_set: u64,
    pub memory_available: u64,
}

/// Busy CPU time from the first line of `/proc/stat` (user, nice, system,
/// irq, softirq, steal; not idle or iowait), in nanoseconds.
pub fn parse_proc_stat(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap_or(0)).collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some((at(0) + at(1) + at(2) + at(5) + at(6) + at(7)) * NS_PER_JIFFY)
}

/// Memory figures from `/proc/meminfo`: usage is total minus free, the
/// working set is usage minus inactive file pages (what can be reclaimed
/// without writing anything), available is total minus the working set.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.split(':').next() == Some(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    let total = field("MemTotal")?;
    let usage = total.saturating_sub(field("MemFree")?);
    let working_set = usage.saturating_sub(field("Inactive(file)").unwrap_or(0));
    Some((usage, working_set, total.saturating_sub(working_set)))
}

fn node_usage() -> anyhow::Result<NodeUsage> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let mem = std::fs::read_to_string("/proc/meminfo")?;
    let core_ns = parse_proc_stat(&stat).ok_or_else(|| anyhow::anyhow!("no cpu line in /proc/stat"))?;
    let (memory_usage, memory_working_set, memory_available) =
        parse_meminfo(&mem).ok_or_else(|| anyhow::anyhow!("no MemTotal/MemFree in /proc/meminfo"))?;
    Ok(NodeUsage { core_ns, memory_usage, memory_working_set, memory_available })
}

fn now_ns() -> i64 {
    Timestamp::now().as_nanosecond() as i64
}

fn time_of(ns: i64) -> String {
    Timestamp::from_nanosecond(ns as i128).map(crate::time_string).unwrap_or_default()
}

fn value(v: &Option<cri::UInt64Value>) -> Option<u64> {
    v.as_ref().map(|v| v.value)
}

/// A pod as the summary names it: namespace, name, UID.
type PodRef = (String, String, String);

/// A pod's sums over its containers.
#[derive(Clone, Copy, Default)]
struct PodTotals {
    nano_cores: u64,
    core_ns: u64,
    working_set: u64,
    /// Whether any container had a CPU rate.
    has_rate: bool,
}

/// One running container's reading.
struct ContainerReading {
    name: String,
    pod: PodRef,
    started_ns: i64,
    at_ns: i64,
    core_ns: Option<u64>,
    nano_cores: Option<u64>,
    working_set: Option<u64>,
    usage: Option<u64>,
    rss: Option<u64>,
}

/// One read of the runtime and the node: when, the node's counters, every
/// running container's, and each ready pod sandbox's start (by pod UID).
type Reading = (i64, NodeUsage, Vec<ContainerReading>, HashMap<String, i64>);

/// Reads the runtime and the node once.
async fn read(agent: &Agent) -> anyhow::Result<Reading> {
    let containers = agent.cri.list_containers(HashMap::new()).await?;
    let stats = agent.cri.list_container_stats().await?;
    let sandboxes = agent.cri.list_pod_sandboxes(HashMap::new()).await?;
    let at_ns = now_ns();
    let node = node_usage()?;
    let running: HashMap<&str, &cri::Container> = containers
        .iter()
        .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
        .map(|c| (c.id.as_str(), c))
        .collect();
    let pod_started: HashMap<String, i64> = sandboxes
        .iter()
        .filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
        .filter_map(|s| Some((s.labels.get(POD_UID_LABEL)?.clone(), s.created_at)))
        .collect();
    let mut out = Vec::new();
    for s in &stats {
        let Some(attrs) = &s.attributes else { continue };
        let Some(c) = running.get(attrs.id.as_str()) else { continue };
        let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
        let uid = label(POD_UID_LABEL);
        if uid.is_empty() {
            continue; // not one of the kubelet's containers
        }
        let name = c.labels.get(CONTAINER_NAME_LABEL).cloned().or_else(|| c.metadata.as_ref().map(|m| m.name.clone())).unwrap_or_default();
        let cpu = s.cpu.as_ref();
        let mem = s.memory.as_ref();
        out.push(ContainerReading {
            name,
            pod: (label(POD_NAMESPACE_LABEL), label(POD_NAME_LABEL), uid),
            started_ns: c.created_at,
            at_ns: cpu.map(|c| c.timestamp).filter(|t| *t > 0).unwrap_or(at_ns),
            core_ns: cpu.and_then(|c| value(&c.usage_core_nano_seconds)),
            nano_cores: cpu.and_then(|c| value(&c.usage_nano_cores)).filter(|n| *n > 0),
            working_set: mem.and_then(|m| value(&m.working_set_bytes)),
            usage: mem.and_then(|m| value(&m.usage_bytes)),
            rss: mem.and_then(|m| value(&m.rss_bytes)),
        });
    }
    Ok((at_ns, node, out, pod_started))
}

fn cpu_json(time: &str, nano_cores: Option<u64>, core_ns: Option<u64>) -> Value {
    let mut v = json!({"time": time});
    if let Some(n) = nano_cores {
        v["usageNanoCores"] = json!(n);
    }
    if let Some(n) = core_ns {
        v["usageCoreNanoSeconds"] = json!(n);
    }
    v
}

fn memory_json(time: &str, working_set: Option<u64>, usage: Option<u64>, rss: Option<u64>, available: Option<u64>) -> Value {
    let mut v = json!({"time": time});
    for (k, x) in [("workingSetBytes", working_set), ("usageBytes", usage), ("rssBytes", rss), ("availableBytes", available)] {
        if let Some(x) = x {
            v[k] = json!(x);
        }
    }
    v
}

/// The `stats/v1alpha1` Summary: the node and every running pod's containers.
pub async fn summary(agent: &Agent) -> anyhow::Result<Value> {
    let sampler = &agent.stats;
    let (mut at_ns, mut node, mut readings, mut pod_started) = read(agent).await?;
    let unsampled = !sampler.has(NODE_KEY) || readings.iter().any(|r| r.nano_cores.is_none() && !sampler.has(&container_key(r)));
    if unsampled {
        // Nothing to take a rate against yet: read again shortly.
        sampler.rate(NODE_KEY, at_ns, node.core_ns);
        for r in &readings {
            if let Some(c) = r.core_ns {
                sampler.rate(&container_key(r), r.at_ns, c);
            }
        }
        tokio::time::sleep(FIRST_SAMPLE_GAP).await;
        (at_ns, node, readings, pod_started) = read(agent).await?;
    }
    let live: std::collections::HashSet<String> = readings.iter().map(container_key).collect();
    sampler.retain(&|k| live.contains(k));
    let now = time_of(at_ns);
    let node_rate = sampler.rate(NODE_KEY, at_ns, node.core_ns);
    let mut pods: BTreeMap<PodRef, Vec<Value>> = BTreeMap::new();
    let mut pod_totals: HashMap<PodRef, PodTotals> = HashMap::new();
    for r in &readings {
        let key = container_key(r);
        let rate = match r.core_ns {
            Some(c) => sampler.rate(&key, r.at_ns, c).or(r.nano_cores),
            None => r.nano_cores,
        };
        let time = time_of(r.at_ns);
        pods.entry(r.pod.clone()).or_default().push(json!({
            "name": r.name,
            "startTime": time_of(r.started_ns),
            "cpu": cpu_json(&time, rate, r.core_ns),
            "memory": memory_json(&time, r.working_set, r.usage, r.rss, None),
        }));
        let t = pod_totals.entry(r.pod.clone()).or_default();
        t.nano_cores += rate.unwrap_or(0);
        t.core_ns += r.core_ns.unwrap_or(0);
        t.working_set += r.working_set.unwrap_or(0);
        t.has_rate |= rate.is_some();
    }
    let pods: Vec<Value> = pods
        .into_iter()
        .map(|(pod, containers)| {
            let PodTotals { nano_cores, core_ns, working_set, has_rate } = pod_totals.get(&pod).copied().unwrap_or_default();
            let started = pod_started.get(&pod.2).copied().unwrap_or(at_ns);
            json!({
                "podRef": {"namespace": pod.0, "name": pod.1, "uid": pod.2},
                "startTime": time_of(started),
                "containers": containers,
                "cpu": cpu_json(&now, has_rate.then_some(nano_cores), Some(core_ns)),
                "memory": memory_json(&now, Some(working_set), None, None, None),
            })
        })
        .collect();
    let boot = machine_start_ns().map(time_of).unwrap_or_default();
    Ok(json!({
        "node": {
            "nodeName": agent.config.node_name,
            "startTime": boot,
            "cpu": cpu_json(&now, node_rate, Some(node.core_ns)),
            "memory": memory_json(&now, Some(node.memory_working_set), Some(node.memory_usage), None, Some(node.memory_available)),
        },
        "pods": pods,
    }))
}

/// Boot time, from `btime` in `/proc/stat`.
fn machine_start_ns() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: i64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    Some(secs * 1_000_000_000)
}

/// A sampler key per container: pod UID and container name (a restarted
/// container keeps its key and its counter starts over).
fn container_key(r: &ContainerReading) -> String {
    format!("{}/{}", r.pod.2, r.name)
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `/metrics/resource`: upstream's resource metrics (cumulative CPU
/// seconds and working set bytes of the node, pods and containers), in
/// the Prometheus text format, with sample timestamps in milliseconds.
pub async fn resource_metrics(agent: &Agent) -> anyhow::Result<String> {
    let (at_ns, node, readings, _) = read(agent).await?;
    let ms = |ns: i64| ns / 1_000_000;
    let mut s = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64, i64)>| {
        s.push_str(&format!("# HELP {name} [STABLE] {help}\n# TYPE {name} {kind}\n"));
        for (labels, v, t) in samples {
            s.push_str(&format!("{name}{labels} {v} {t}\n"));
        }
    };
    let container_labels =
        |r: &ContainerReading| format!("{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}", escape_label(&r.name), escape_label(&r.pod.0), escape_label(&r.pod.1));
    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        readings.iter().filter_map(|r| Some((container_labels(r), r.core_ns? as f64 / 1e9, ms(r.at_ns)))).collect(),
    );
    family(
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        readings.iter().filter_map(|r| Some((container_labels(r), r.working_set? as f64, ms(r.at_ns)))).collect(),
    );
    family(
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
        readings.iter().map(|r| (container_labels(r), r.started_ns as f64 / 1e9, ms(r.started_ns))).collect(),
    );
    family(
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        vec![(String::new(), node.core_ns as f64 / 1e9, ms(at_ns))],
    );
    family(
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        vec![(String::new(), node.memory_working_set as f64, ms(at_ns))],
    );
    let mut pods: BTreeMap<PodRef, (u64, u64)> = BTreeMap::new();
    for r in &readings {
        let t = pods.entry(r.pod.clone()).or_default();
        t.0 += r.core_ns.unwrap_or(0);
        t.1 += r.working_set.unwrap_or(0);
    }
    let pod_labels = |p: &PodRef| format!("{{namespace=\"{}\",pod=\"{}\"}}", escape_label(&p.0), escape_label(&p.1));
    family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        pods.iter().map(|(p, t)| (pod_labels(p), t.0 as f64 / 1e9, ms(at_ns))).collect(),
    );
    family(
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
        pods.iter().map(|(p, t)| (pod_labels(p), t.1 as f64, ms(at_ns))).collect(),
    );
    s.push_str("# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE resource_scrape_error gauge\nresource_scrape_error 0\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_figures() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nbtime 1700000000\n";
        // user + nice + system + irq + softirq + steal = 161 jiffies.
        assert_eq!(parse_proc_stat(stat), Some(161 * NS_PER_JIFFY));
        let meminfo = "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\nInactive(file):  300 kB\n";
        let (usage, ws, avail) = parse_meminfo(meminfo).unwrap();
        assert_eq!(usage, 800 * 1024);
        assert_eq!(ws, 500 * 1024);
        assert_eq!(avail, 500 * 1024);
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn rates_need_an_interval() {
        let s = Sampler::default();
        assert_eq!(s.rate("c", 0, 0), None, "no earlier reading");
        // Half a core over two seconds.
        assert_eq!(s.rate("c", 2_000_000_000, 1_000_000_000), Some(500_000_000));
        // Too soon after: the last rate again, and the reading is not replaced.
        assert_eq!(s.rate("c", 2_100_000_000, 1_900_000_000), Some(500_000_000));
        // A full core from the kept reading.
        assert_eq!(s.rate("c", 3_000_000_000, 2_000_000_000), Some(1_000_000_000));
        // A counter that went back (a restarted container): no rate.
        assert_eq!(s.rate("c", 5_000_000_000, 10), None);
        s.retain(&|k| k != "c");
        assert!(!s.has("c"));
    }
}
