//! The Node: registration (capacity from the machine, addresses, node info
//! with the runtime's version), status with the four conditions a kubelet
//! owns, the Lease in `kube-node-lease`, and the node's podCIDR.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::{Agent, FIELD_MANAGER, KUBELET_VERSION, api_code, machine, time_string};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";

fn pp() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn labels(agent: &Agent) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = agent.config.node_labels.clone();
    let arch = machine::arch();
    l.insert(
        "kubernetes.io/hostname".into(),
        agent.config.node_name.clone(),
    );
    l.insert("kubernetes.io/os".into(), "linux".into());
    l.insert("kubernetes.io/arch".into(), arch.into());
    l.insert("beta.kubernetes.io/os".into(), "linux".into());
    l.insert("beta.kubernetes.io/arch".into(), arch.into());
    l
}

fn resources(agent: &Agent) -> (Value, Value) {
    let mem = machine::memory_total();
    let disk = machine::disk(&agent.config.data_dir)
        .map(|(t, _)| t)
        .unwrap_or(0);
    let cpu = machine::cpus();
    let capacity = json!({
        "cpu": cpu.to_string(),
        "memory": format!("{}Ki", mem / 1024),
        "ephemeral-storage": format!("{}Ki", disk / 1024),
        "pods": agent.config.max_pods.to_string(),
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
    });
    // Upstream keeps the hard eviction threshold (100Mi memory, 10% disk)
    // out of allocatable.
    let allocatable = json!({
        "cpu": cpu.to_string(),
        "memory": format!("{}Ki", mem.saturating_sub(agent.config.eviction_hard.memory.bytes_of(mem)) / 1024),
        "ephemeral-storage": format!("{}", disk / 10 * 9),
        "pods": agent.config.max_pods.to_string(),
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
    });
    (capacity, allocatable)
}

/// The conditions as (type, status, reason, message).
pub fn conditions(
    agent: &Agent,
    runtime_ready: Result<(), String>,
) -> Vec<(&'static str, bool, &'static str, String)> {
    let eviction = &agent.config.eviction_hard;
    let mem_pressure =
        machine::memory_available() < eviction.memory.bytes_of(machine::memory_total());
    let disk_pressure = machine::disk(&agent.config.data_dir)
        .is_some_and(|(t, a)| t > 0 && a < eviction.nodefs.bytes_of(t));
    let (procs, max) = machine::pids();
    let pid_pressure = procs * 10 > max * 9;
    let network = agent.pod_cidr.lock().expect("pod cidr lock").is_some();
    let ready = match (&runtime_ready, network) {
        (Ok(()), true) => Ok(()),
        (Err(e), _) => Err(format!("container runtime is down: {e}")),
        (Ok(()), false) => Err("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:no podCIDR yet".into()),
    };
    vec![
        if mem_pressure {
            (
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available".into(),
            )
        } else {
            (
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available".into(),
            )
        },
        if disk_pressure {
            (
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                "kubelet has disk pressure".into(),
            )
        } else {
            (
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure".into(),
            )
        },
        if pid_pressure {
            (
                "PIDPressure",
                true,
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available".into(),
            )
        } else {
            (
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available".into(),
            )
        },
        match ready {
            Ok(()) => (
                "Ready",
                true,
                "KubeletReady",
                "kubelet is posting ready status".into(),
            ),
            Err(m) => ("Ready", false, "KubeletNotReady", m),
        },
    ]
}

/// Remembers when each condition last changed.
#[derive(Default)]
struct Transitions(BTreeMap<&'static str, (bool, String)>);

impl Transitions {
    fn render(&mut self, conds: &[(&'static str, bool, &'static str, String)], now: &str) -> Value {
        Value::Array(
            conds
                .iter()
                .map(|(t, s, reason, message)| {
                    let e = self.0.entry(t).or_insert_with(|| (*s, now.to_string()));
                    if e.0 != *s {
                        *e = (*s, now.to_string());
                    }
                    json!({
                        "type": t, "status": if *s { "True" } else { "False" }, "reason": reason, "message": message,
                        "lastHeartbeatTime": now, "lastTransitionTime": e.1,
                    })
                })
                .collect(),
        )
    }
}

fn full_status(agent: &Agent, conds: Value) -> Value {
    let (capacity, allocatable) = resources(agent);
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "conditions": conds,
        "addresses": [
            {"type": "InternalIP", "address": agent.node_ip.to_string()},
            {"type": "Hostname", "address": machine::hostname()},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": agent.config.kubelet_port}},
        "nodeInfo": {
            "machineID": machine::machine_id(),
            "systemUUID": machine::system_uuid(),
            "bootID": machine::boot_id(),
            "kernelVersion": machine::kernel_version(),
            "osImage": machine::os_image(),
            "containerRuntimeVersion": agent.runtime_version,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": machine::arch(),
        },
    })
}

async fn runtime_ready(agent: &Agent) -> Result<(), String> {
    match agent.cri.status().await {
        Ok(s) => {
            let conds = s.status.map(|s| s.conditions).unwrap_or_default();
            match conds.iter().find(|c| c.r#type == "RuntimeReady") {
                Some(c) if !c.status => Err(format!("{}: {}", c.reason, c.message)),
                _ => Ok(()),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Creates the Node (or adopts an existing one), posts its full status,
/// and returns its uid.
pub async fn register(agent: &Arc<Agent>) -> anyhow::Result<String> {
    let api: Api<Node> = Api::all(agent.client.clone());
    let name = agent.config.node_name.as_str();
    let mut delay = Duration::from_millis(250);
    loop {
        match try_register(agent, &api, name).await {
            Ok(uid) => {
                tracing::info!(node = name, ip = %agent.node_ip, "node registered");
                return Ok(uid);
            }
            Err(e) if matches!(api_code(&e), Some(400 | 403 | 422)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(node = name, error = %e, "node registration failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn try_register(agent: &Agent, api: &Api<Node>, name: &str) -> Result<String, kube::Error> {
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels(agent)),
            annotations: Some(BTreeMap::from([
                ("node.alpha.kubernetes.io/ttl".to_string(), "0".to_string()),
                (
                    "volumes.kubernetes.io/controller-managed-attach-detach".to_string(),
                    "true".to_string(),
                ),
            ])),
            ..Default::default()
        },
        ..Default::default()
    };
    let node = match api
        .create(
            &PostParams {
                dry_run: false,
                field_manager: Some(FIELD_MANAGER.into()),
            },
            &node,
        )
        .await
    {
        Ok(n) => n,
        Err(e) if api_code(&e) == Some(409) => {
            // A restart: keep the Node, make sure it carries our labels.
            api.patch(
                name,
                &pp(),
                &Patch::Merge(json!({"metadata": {"labels": labels(agent)}})),
            )
            .await?
        }
        Err(e) => return Err(e),
    };
    let now = time_string(Timestamp::now());
    let conds = Transitions::default().render(&conditions(agent, runtime_ready(agent).await), &now);
    api.patch_status(
        name,
        &pp(),
        &Patch::Strategic(json!({"status": full_status(agent, conds)})),
    )
    .await?;
    Ok(node.metadata.uid.unwrap_or_default())
}

static STATUS_KICK: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Asks the status loop to post the node status now (the network came up).
pub fn kick_status() {
    STATUS_KICK.notify_one();
}

/// Posts the node status every 10 s when a condition changed, and at least
/// every `node_status_report_interval` (upstream's nodeStatusReportFrequency).
pub async fn run_status(agent: Arc<Agent>) {
    let api: Api<Node> = Api::all(agent.client.clone());
    let name = agent.config.node_name.clone();
    let mut transitions = Transitions::default();
    let mut last: Option<Vec<(&'static str, bool)>> = None;
    let mut last_post = tokio::time::Instant::now();
    loop {
        let conds = conditions(&agent, runtime_ready(&agent).await);
        let key: Vec<(&'static str, bool)> = conds.iter().map(|(t, s, _, _)| (*t, *s)).collect();
        let due = last.as_ref() != Some(&key)
            || last_post.elapsed() >= agent.config.node_status_report_interval;
        if due {
            let now = time_string(Timestamp::now());
            let status = full_status(&agent, transitions.render(&conds, &now));
            match api
                .patch_status(&name, &pp(), &Patch::Strategic(json!({"status": status})))
                .await
            {
                Ok(_) => {
                    last = Some(key);
                    last_post = tokio::time::Instant::now();
                }
                Err(e) => tracing::warn!(node = %name, error = %e, "node status update failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = STATUS_KICK.notified() => {}
        }
    }
}

/// Renews the node's Lease every `lease_renew_interval`, creating it when missing.
pub async fn run_lease(agent: Arc<Agent>, node_uid: String) {
    let api: Api<Lease> = Api::namespaced(agent.client.clone(), LEASE_NAMESPACE);
    let name = agent.config.node_name.clone();
    loop {
        if let Err(e) = renew(&agent, &api, &name, &node_uid).await {
            tracing::warn!(node = %name, error = %e, "lease renewal failed");
        }
        tokio::time::sleep(agent.config.lease_renew_interval).await;
    }
}

async fn renew(
    agent: &Agent,
    api: &Api<Lease>,
    name: &str,
    node_uid: &str,
) -> Result<(), kube::Error> {
    let fill = |lease: &mut Lease| {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(name.to_string());
        spec.lease_duration_seconds = Some(agent.config.lease_duration_seconds);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
    };
    let params = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    match api.get_opt(name).await? {
        Some(mut lease) => {
            fill(&mut lease);
            lease.metadata.managed_fields = None;
            api.replace(name, &params, &lease).await?;
        }
        None => {
            // Owned by the Node, so the garbage collector removes it with the Node.
            let owner = (!node_uid.is_empty()).then(|| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.into(),
                    uid: node_uid.into(),
                    ..Default::default()
                }]
            });
            let mut lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    owner_references: owner,
                    ..Default::default()
                },
                spec: None,
            };
            fill(&mut lease);
            api.create(&params, &lease).await?;
        }
    }
    Ok(())
}

fn pod_cidr_of(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs
        .iter()
        .flatten()
        .find(|c| c.contains('.'))
        .cloned()
        .or_else(|| spec.pod_cidr.clone())
}

/// The node's podCIDR: `spec.podCIDR` once the node IPAM controller set it;
/// after `pod_cidr_wait` without one, the configured fallback (if any);
/// without a fallback, keeps waiting.
pub async fn wait_pod_cidr(agent: &Agent) -> anyhow::Result<String> {
    let api: Api<Node> = Api::all(agent.client.clone());
    let start = tokio::time::Instant::now();
    let mut warned = false;
    loop {
        match api.get(&agent.config.node_name).await {
            Ok(node) => {
                if let Some(c) = pod_cidr_of(&node) {
                    return Ok(c);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the node for its podCIDR failed"),
        }
        if start.elapsed() >= agent.config.pod_cidr_wait {
            if let Some(c) = &agent.config.pod_cidr {
                tracing::info!(pod_cidr = %c, "the node has no spec.podCIDR; using the configured one");
                return Ok(c.clone());
            }
            if !warned {
                tracing::warn!(
                    "the node has no spec.podCIDR yet and no --pod-cidr fallback is set; waiting"
                );
                warned = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
