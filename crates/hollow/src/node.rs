//! The Node object: registration, status heartbeats, and one watch over all
//! hollow nodes (pod CIDRs, deletions, conditions overridden by the node
//! controller).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::pace::{self, Outcome};
use crate::{FIELD_MANAGER, HOLLOW_LABEL, LEASE_NAMESPACE, Shared, api_code, bounded, bump, heartbeat_timeout, ipam, lease, time_string};

pub(crate) const KUBELET_VERSION: &str = "v1.32.0-hollow";
pub(crate) const RUNTIME_VERSION: &str = "hollow://1.0";

/// Page size of the node watch's initial list.
const LIST_PAGE_SIZE: u32 = 50;

/// The conditions a kubelet owns, with the values a healthy hollow node reports.
const CONDITIONS: &[(&str, &str, &str, &str)] = &[
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
];

/// Per-node state of the heartbeat loop.
#[derive(Clone, Debug)]
pub(crate) struct HeartbeatState {
    /// `lastTransitionTime` of our conditions: kept across heartbeats (only
    /// the heartbeat time moves), renewed when someone else changed them.
    transition: String,
}

impl Default for HeartbeatState {
    fn default() -> Self {
        HeartbeatState { transition: time_string(Timestamp::now()) }
    }
}

pub(crate) struct Registered {
    pub lease: Option<Lease>,
    pub heartbeat: HeartbeatState,
}

fn labels(shared: &Shared, i: usize) -> serde_json::Map<String, Value> {
    let mut l = serde_json::Map::new();
    for (k, v) in &shared.config.extra_labels {
        l.insert(k.clone(), json!(v));
    }
    let name = &shared.nodes[i].name;
    l.insert("kubernetes.io/hostname".into(), json!(name));
    l.insert("kubernetes.io/os".into(), json!("linux"));
    l.insert("kubernetes.io/arch".into(), json!("amd64"));
    l.insert("beta.kubernetes.io/os".into(), json!("linux"));
    l.insert("beta.kubernetes.io/arch".into(), json!("amd64"));
    l.insert("node.kubernetes.io/instance-type".into(), json!("hollow"));
    l.insert(HOLLOW_LABEL.into(), json!("true"));
    l
}

/// A stable pseudo-random hex string (FNV-1a, widened): machine ids and
/// image digests only have to look plausible and stay stable.
pub(crate) fn fake_hex(seed: &str, len: usize) -> String {
    let mut out = String::with_capacity(len + 16);
    let mut round = 0u64;
    while out.len() < len {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for b in seed.as_bytes() {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
        round += 1;
    }
    out.truncate(len);
    out
}

fn conditions(transition: &str, now: &str) -> Value {
    Value::Array(
        CONDITIONS
            .iter()
            .map(|(t, s, reason, message)| {
                json!({"type": t, "status": s, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": transition})
            })
            .collect(),
    )
}

fn full_status(shared: &Shared, i: usize, transition: &str, now: &str) -> Value {
    let c = &shared.config;
    let node = &shared.nodes[i];
    let resources = json!({
        "cpu": c.cpu, "memory": c.memory, "pods": c.pods.to_string(),
        "ephemeral-storage": c.ephemeral_storage, "hugepages-1Gi": "0", "hugepages-2Mi": "0",
    });
    let machine = fake_hex(&node.name, 32);
    let system_uuid = format!("{}-{}-{}-{}-{}", &machine[0..8], &machine[8..12], &machine[12..16], &machine[16..20], &machine[20..32]);
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions(transition, now),
        // Fake and never contacted: nothing listens there.
        "addresses": [
            {"type": "InternalIP", "address": node.internal_ip.to_string()},
            {"type": "Hostname", "address": node.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": machine,
            "systemUUID": system_uuid,
            "bootID": fake_hex(&format!("{}/{}", node.name, std::process::id()), 32),
            "kernelVersion": "6.1.0-hollow",
            "osImage": "Hollow Linux (Tugboat)",
            "containerRuntimeVersion": RUNTIME_VERSION,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    })
}

fn node_object(shared: &Shared, i: usize, transition: &str, now: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": shared.nodes[i].name,
            "labels": labels(shared, i),
            // What a kubelet annotates at registration.
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {},
        "status": full_status(shared, i, transition, now),
    })
}

fn pod_cidr_of(node: &Node) -> Option<ipam::Cidr> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.iter())
        .find_map(|c| ipam::Cidr::parse(c))
}

/// Whether the Node shows every condition we own with the value we report.
fn conditions_match(node: &Node) -> bool {
    let Some(conds) = node.status.as_ref().and_then(|s| s.conditions.as_ref()) else { return false };
    CONDITIONS.iter().all(|(t, s, _, _)| conds.iter().any(|c| c.type_ == *t && c.status == *s))
}

fn ready_transition(node: &Node) -> Option<String> {
    if !conditions_match(node) {
        return None;
    }
    let conds = node.status.as_ref()?.conditions.as_ref()?;
    let ready = conds.iter().find(|c| c.type_ == "Ready")?;
    ready.last_transition_time.as_ref().map(|t| time_string(t.0))
}

fn learn(shared: &Shared, i: usize, node: &Node) {
    let n = &shared.nodes[i];
    let cidr = pod_cidr_of(node);
    let mut cur = n.pod_cidr.lock().expect("pod cidr lock");
    if *cur != cidr {
        if let Some(c) = cidr {
            tracing::debug!(node = %n.name, cidr = %c, "pod CIDR");
            if c.capacity() < shared.config.pods as u64 {
                tracing::warn!(node = %n.name, cidr = %c, pods = shared.config.pods, "pod CIDR smaller than the pod capacity");
            }
        }
        *cur = cidr;
    }
    drop(cur);
    if let Some(uid) = node.metadata.uid.clone() {
        let mut cur = n.uid.lock().expect("uid lock");
        if cur.as_deref() != Some(uid.as_str()) {
            if cur.is_some() {
                tracing::warn!(node = %n.name, %uid, "node object replaced by someone else; adopting it");
            }
            *cur = Some(uid);
            n.gone.store(false, Ordering::Relaxed);
        }
    }
}

fn pp() -> PatchParams {
    PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }
}

/// One registration attempt (four requests) at most.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors no retry can fix (our request is wrong): fail registration at once.
fn fatal(e: &kube::Error) -> bool {
    matches!(api_code(e), Some(400 | 401 | 403 | 405 | 415 | 422))
}

/// Registers node `i` (create or adopt the Node, post status through the
/// status subresource, ensure the lease), retrying transient failures.
pub(crate) async fn register_with_retries(client: &Client, shared: &Shared, i: usize) -> anyhow::Result<Registered> {
    let mut delay = Duration::from_millis(250);
    loop {
        match bounded(REGISTER_TIMEOUT, register(client, shared, i)).await {
            Ok(r) => {
                let done = shared.stats.nodes_registered.fetch_add(1, Ordering::Relaxed) + 1;
                let n = shared.nodes.len() as u64;
                if n >= 100 && done.is_multiple_of(n / 10) {
                    tracing::info!(registered = done, of = n, "registering");
                }
                return Ok(r);
            }
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(node = %shared.nodes[i].name, error = %e, retry_ms = delay.as_millis() as u64, "registration failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn register(client: &Client, shared: &Shared, i: usize) -> Result<Registered, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let name = shared.nodes[i].name.as_str();
    let now = time_string(Timestamp::now());
    let obj: Node = serde_json::from_value(node_object(shared, i, &now, &now)).expect("the node object is a valid Node");
    let node = match api.create(&PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.into()) }, &obj).await {
        Ok(n) => {
            tracing::debug!(node = name, "registered");
            n
        }
        Err(e) if api_code(&e) == Some(409) => {
            // Restarted: adopt the Node, making sure it carries our labels
            // (a kubelet reconciles a few fields of an existing Node too).
            let existing = api.get(name).await?;
            let want = labels(shared, i);
            let have = existing.metadata.labels.clone().unwrap_or_default();
            if want.iter().any(|(k, v)| have.get(k).map(String::as_str) != v.as_str()) {
                api.patch(name, &pp(), &Patch::Merge(json!({"metadata": {"labels": want}}))).await?
            } else {
                existing
            }
        }
        Err(e) => return Err(e),
    };
    learn(shared, i, &node);
    // Keep the transition time of a node that was already ready (restart);
    // a fresh or not-ready node transitions now.
    let transition = ready_transition(&node).unwrap_or_else(|| now.clone());
    // All status goes through the status subresource, as a kubelet's does;
    // the create's status is only what the kubelet sends along too.
    let node = api.patch_status(name, &pp(), &Patch::Strategic(json!({"status": full_status(shared, i, &transition, &now)}))).await?;
    learn(shared, i, &node);
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let lease = match lease::renew(&leases, shared, i, None).await {
        Ok(l) => {
            bump(&shared.stats.lease_renewals);
            Some(l)
        }
        Err((_, e)) => return Err(e),
    };
    Ok(Registered { lease, heartbeat: HeartbeatState { transition } })
}

/// Posts every node's conditions once per `status_interval`, forever.
pub(crate) async fn run_heartbeats(client: Client, shared: Arc<Shared>, states: Vec<HeartbeatState>, kick: mpsc::UnboundedReceiver<usize>) {
    let api: Api<Node> = Api::all(client);
    let (interval, concurrency) = (shared.config.status_interval, shared.config.status_concurrency);
    let s = shared.clone();
    pace::run("node status", shared, interval, concurrency, states, kick, move |i, mut state| {
        let (api, shared) = (api.clone(), s.clone());
        async move {
            let node = &shared.nodes[i];
            let now = time_string(Timestamp::now());
            let overridden = node.conditions_overridden.swap(false, Ordering::Relaxed);
            if overridden {
                state.transition = now.clone();
            }
            let patch = json!({"status": {"conditions": conditions(&state.transition, &now)}});
            match bounded(heartbeat_timeout(&shared.config), api.patch_status(&node.name, &pp(), &Patch::Strategic(patch))).await {
                Ok(_) => {
                    bump(&shared.stats.status_updates);
                    if overridden {
                        tracing::info!(node = %node.name, "node status restored to Ready");
                    }
                    (state, Outcome::Done)
                }
                Err(e) if api_code(&e) == Some(404) => {
                    node.gone.store(true, Ordering::Relaxed);
                    tracing::warn!(node = %node.name, "node deleted; like a kubelet, not re-registering until restarted");
                    (state, Outcome::Done)
                }
                Err(e) => {
                    bump(&shared.stats.status_failures);
                    tracing::warn!(node = %node.name, error = %e, "node status update failed");
                    (state, Outcome::Failed)
                }
            }
        }
    })
    .await
}

/// One watch over all hollow Nodes.
pub(crate) async fn watch_nodes(client: Client, shared: Arc<Shared>, status_kick: mpsc::UnboundedSender<usize>) {
    let api: Api<Node> = Api::all(client);
    // Small list pages: a page of full Nodes is parsed at once, and that
    // transient peak (not the steady state) is what sets this process's RSS.
    let config = watcher::Config::default().labels(&format!("{HOLLOW_LABEL}=true")).page_size(LIST_PAGE_SIZE);
    let stream = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut seen = vec![false; shared.nodes.len()];
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "node watch failed; retrying");
                continue;
            }
        };
        match ev {
            Event::Init => seen.iter_mut().for_each(|s| *s = false),
            Event::InitApply(node) | Event::Apply(node) => {
                let Some(&i) = node.metadata.name.as_ref().and_then(|n| shared.by_name.get(n)) else { continue };
                seen[i] = true;
                learn(&shared, i, &node);
                let n = &shared.nodes[i];
                if !conditions_match(&node) && !n.is_gone() {
                    // The node controller (lease gone stale while paused, say)
                    // or someone else changed our conditions: report the truth
                    // again, with a new transition time.
                    if !n.conditions_overridden.swap(true, Ordering::Relaxed) {
                        tracing::info!(node = %n.name, paused = n.is_paused(), "node conditions changed by someone else");
                    }
                    if !n.is_paused() {
                        let _ = status_kick.send(i);
                    }
                }
            }
            Event::Delete(node) => {
                let Some(&i) = node.metadata.name.as_ref().and_then(|n| shared.by_name.get(n)) else { continue };
                mark_gone(&shared, i);
            }
            Event::InitDone => {
                for (i, s) in seen.iter().enumerate() {
                    if !s {
                        mark_gone(&shared, i);
                    }
                }
            }
        }
    }
}

fn mark_gone(shared: &Shared, i: usize) {
    let n = &shared.nodes[i];
    if !n.gone.swap(true, Ordering::Relaxed) {
        tracing::warn!(node = %n.name, "node deleted; like a kubelet, not re-registering until restarted");
        *n.uid.lock().expect("uid lock") = None;
    }
}
