//! A pod spec turned into the runtime's configurations: the sandbox
//! (`PodSandboxConfig`) and each container (`ContainerConfig`), with the
//! environment (values, `$(VAR)` expansion, fieldRef, resourceFieldRef,
//! configMap and secret keys, envFrom), resources and the QoS class, and
//! security contexts. Pure: lookups the API is needed for are passed in.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, PodSpec, Secret, Service};

use crate::AgentConfig;
use crate::cri::{
    CONTAINER_NAME_LABEL, POD_NAME_LABEL, POD_NAMESPACE_LABEL, POD_UID_LABEL, v1 as cri,
};
use crate::quantity;

/// Container annotation: the spec's image at creation.
pub const SPEC_IMAGE_ANNOTATION: &str = "tugboat.io/spec-image";

/// Namespace modes of the CRI (enum NamespaceMode).
const NS_POD: i32 = 0;
const NS_CONTAINER: i32 = 1;
const NS_NODE: i32 = 2;

/// Upstream's default masked and read-only paths for unprivileged containers.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub fn meta(pod: &Pod) -> (&str, &str, &str) {
    let m = &pod.metadata;
    (
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or(""),
    )
}

pub fn pod_spec(pod: &Pod) -> &PodSpec {
    static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
    pod.spec
        .as_ref()
        .unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
}

/// `<ns>_<name>_<uid>`: the pod's log directory name (upstream's layout).
pub fn pod_log_dir(config: &AgentConfig, pod: &Pod) -> std::path::PathBuf {
    let (ns, name, uid) = meta(pod);
    config.pod_log_dir.join(format!("{ns}_{name}_{uid}"))
}

/// The pod's cgroup parent: `<cgroup_root>/pod<uid>`.
pub fn cgroup_parent(config: &AgentConfig, uid: &str) -> String {
    format!("{}/pod{}", config.cgroup_root.trim_end_matches('/'), uid)
}

fn hostname(pod: &Pod) -> String {
    let spec = pod_spec(pod);
    let mut h = spec
        .hostname
        .clone()
        .unwrap_or_else(|| meta(pod).1.to_string());
    h.truncate(63);
    h.trim_end_matches(['-', '.']).to_string()
}

fn dns_config(config: &AgentConfig, pod: &Pod) -> cri::DnsConfig {
    let spec = pod_spec(pod);
    let (ns, _, _) = meta(pod);
    let (host_servers, host_search, host_opts) = crate::machine::host_dns();
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host_network = spec.host_network.unwrap_or(false);
    let mut d = match policy {
        "None" => cri::DnsConfig::default(),
        "ClusterFirst" | "ClusterFirstWithHostNet"
            if !config.cluster_dns.is_empty()
                && (!host_network || policy == "ClusterFirstWithHostNet") =>
        {
            let domain = &config.cluster_domain;
            let mut searches = vec![
                format!("{ns}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.clone(),
            ];
            searches.extend(host_search);
            cri::DnsConfig {
                servers: config.cluster_dns.clone(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        // Default, or ClusterFirst without a cluster DNS: the host's resolvers.
        _ => cri::DnsConfig {
            servers: host_servers,
            searches: host_search,
            options: host_opts,
        },
    };
    if let Some(pc) = &spec.dns_config {
        d.servers.extend(pc.nameservers.iter().flatten().cloned());
        d.searches.extend(pc.searches.iter().flatten().cloned());
        for o in pc.options.iter().flatten() {
            let Some(name) = &o.name else { continue };
            d.options
                .retain(|x| x.split(':').next() != Some(name.as_str()));
            d.options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            });
        }
    }
    d.servers.dedup();
    d.searches.dedup();
    d
}

fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let (ns, name, uid) = meta(pod);
    let mut l: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    l.insert(POD_NAME_LABEL.into(), name.into());
    l.insert(POD_NAMESPACE_LABEL.into(), ns.into());
    l.insert(POD_UID_LABEL.into(), uid.into());
    l
}

/// The pod's Linux namespaces for CRI: the node's with hostNetwork/hostPID/
/// hostIPC, the pod's shared ones otherwise (PID per container unless
/// shareProcessNamespace). Sandbox and containers must agree on them.
fn namespace_options(spec: &PodSpec) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: if spec.host_network.unwrap_or(false) { NS_NODE } else { NS_POD },
        pid: if spec.host_pid.unwrap_or(false) {
            NS_NODE
        } else if spec.share_process_namespace.unwrap_or(false) {
            NS_POD
        } else {
            NS_CONTAINER
        },
        ipc: if spec.host_ipc.unwrap_or(false) { NS_NODE } else { NS_POD },
        ..Default::default()
    }
}

/// The sandbox configuration; deterministic, so CreateContainer gets the
/// same one RunPodSandbox did.
pub fn sandbox_config(config: &AgentConfig, pod: &Pod, attempt: u32) -> cri::PodSandboxConfig {
    let spec = pod_spec(pod);
    let (ns, name, uid) = meta(pod);
    let psc = spec.security_context.clone().unwrap_or_default();
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    let privileged = all.clone().any(|c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false)
    });
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| cri::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => 1,
                Some("SCTP") => 2,
                _ => 0,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let namespace_options = namespace_options(spec);
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: ns.into(),
            attempt,
        }),
        hostname: if spec.host_network.unwrap_or(false) {
            String::new()
        } else {
            hostname(pod)
        },
        log_directory: pod_log_dir(config, pod).to_string_lossy().into_owned(),
        dns_config: Some(dns_config(config, pod)),
        port_mappings,
        labels: pod_labels(pod),
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(config, uid),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options),
                run_as_user: psc.run_as_user.map(|v| cri::Int64Value { value: v }),
                run_as_group: psc.run_as_group.map(|v| cri::Int64Value { value: v }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                privileged,
                ..Default::default()
            }),
            sysctls: psc
                .sysctls
                .iter()
                .flatten()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect(),
            ..Default::default()
        }),
        windows: None,
    }
}

/// Objects an environment refers to, fetched beforehand.
#[derive(Default)]
pub struct Lookups {
    pub config_maps: HashMap<String, ConfigMap>,
    pub secrets: HashMap<String, Secret>,
    /// Services whose Docker-link variables the container gets: those of
    /// the pod's namespace (with enableServiceLinks) and `default/kubernetes`.
    pub services: Vec<Service>,
}

/// Upstream's service environment variables (`WEB_SERVICE_HOST`,
/// `WEB_SERVICE_PORT`, `WEB_PORT_80_TCP_ADDR`, ...), for services with a
/// cluster IP, sorted by service name.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut services: Vec<&Service> = services
        .iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|sp| sp.cluster_ip.as_deref())
                .is_some_and(|ip| !ip.is_empty() && ip != "None")
        })
        .collect();
    services.sort_by_key(|s| s.metadata.name.clone());
    services.dedup_by_key(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()));
    let mut out = Vec::new();
    for s in services {
        let spec = s.spec.as_ref().expect("filtered");
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let prefix = s
            .metadata
            .name
            .clone()
            .unwrap_or_default()
            .to_uppercase()
            .replace('-', "_");
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!(
                        "{prefix}_SERVICE_PORT_{}",
                        n.to_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{prefix}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        ));
        for p in &ports {
            let pr = proto(p);
            let base = format!("{prefix}_PORT_{}_{}", p.port, pr.to_uppercase());
            out.push((
                base.clone(),
                format!("{}://{ip}:{}", pr.to_lowercase(), p.port),
            ));
            out.push((format!("{base}_PROTO"), pr.to_lowercase()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.clone()));
        }
    }
    out
}

/// Names of the ConfigMaps and Secrets a container's environment reads.
pub fn env_refs(c: &Container) -> (Vec<String>, Vec<String>) {
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    for e in c.env_from.iter().flatten() {
        if let Some(r) = &e.config_map_ref {
            cms.push(r.name.clone());
        }
        if let Some(r) = &e.secret_ref {
            secrets.push(r.name.clone());
        }
    }
    for e in c.env.iter().flatten() {
        let Some(from) = &e.value_from else { continue };
        if let Some(r) = &from.config_map_key_ref {
            cms.push(r.name.clone());
        }
        if let Some(r) = &from.secret_key_ref {
            secrets.push(r.name.clone());
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    (cms, secrets)
}

/// Expands `$(VAR)` from `vars` as upstream does: `$$` is a literal `$`,
/// an unknown `$(VAR)` stays as written.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'('
                && let Some(end) = s[i + 2..].find(')')
            {
                let name = &s[i + 2..i + 2 + end];
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&s[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = s[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Inputs of a container's environment that are known only at start.
pub struct EnvContext<'a> {
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    pub node_allocatable_cpu_milli: i64,
    pub node_allocatable_memory: i64,
}

fn field_ref(pod: &Pod, path: &str, cx: &EnvContext) -> Result<String, String> {
    let (ns, name, uid) = meta(pod);
    let spec = pod_spec(pod);
    let subscript = |prefix: &str, map: &Option<BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(
            map.as_ref()
                .and_then(|m| m.get(key))
                .cloned()
                .unwrap_or_default(),
        )
    };
    if let Some(v) = subscript("metadata.labels['", &pod.metadata.labels) {
        return Ok(v);
    }
    if let Some(v) = subscript("metadata.annotations['", &pod.metadata.annotations) {
        return Ok(v);
    }
    Ok(match path {
        "metadata.name" => name.into(),
        "metadata.namespace" => ns.into(),
        "metadata.uid" => uid.into(),
        "spec.nodeName" => spec.node_name.clone().unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.clone().unwrap_or_default(),
        "status.podIP" | "status.podIPs" => cx.pod_ip.into(),
        "status.hostIP" | "status.hostIPs" => cx.host_ip.into(),
        other => return Err(format!("unsupported fieldRef path {other:?}")),
    })
}

fn resource_field_ref(
    c: &Container,
    r: &k8s_openapi::api::core::v1::ResourceFieldSelector,
    cx: &EnvContext,
) -> Result<String, String> {
    let res = c.resources.clone().unwrap_or_default();
    let (kind, name) = r
        .resource
        .split_once('.')
        .ok_or_else(|| format!("bad resource {:?}", r.resource))?;
    let map = if kind == "limits" {
        &res.limits
    } else {
        &res.requests
    };
    let q = map.as_ref().and_then(|m| m.get(name)).map(|q| q.0.clone());
    let divisor = r
        .divisor
        .as_ref()
        .map(|d| d.0.clone())
        .unwrap_or_else(|| "1".into());
    Ok(match name {
        "cpu" => {
            let v = q
                .and_then(|q| quantity::milli(&q))
                .unwrap_or(if kind == "limits" {
                    cx.node_allocatable_cpu_milli
                } else {
                    0
                });
            let d = quantity::milli(&divisor).filter(|d| *d > 0).unwrap_or(1000);
            ((v + d - 1) / d).to_string()
        }
        _ => {
            let v = q.and_then(|q| quantity::value(&q)).unwrap_or(
                if kind == "limits" && name == "memory" {
                    cx.node_allocatable_memory
                } else {
                    0
                },
            );
            let d = quantity::value(&divisor).filter(|d| *d > 0).unwrap_or(1);
            ((v + d - 1) / d).to_string()
        }
    })
}

fn data_of_cm(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.data.clone().unwrap_or_default()
}

fn data_of_secret(s: &Secret) -> BTreeMap<String, String> {
    s.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// The container's environment in order (envFrom first, then env), or the
/// message of a CreateContainerConfigError.
pub fn environment(
    pod: &Pod,
    c: &Container,
    cx: &EnvContext,
    lk: &Lookups,
) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    let set = |out: &mut Vec<(String, String)>,
               vars: &mut HashMap<String, String>,
               k: String,
               v: String| {
        if let Some(slot) = out.iter_mut().find(|(kk, _)| *kk == k) {
            slot.1 = v.clone();
        } else {
            out.push((k.clone(), v.clone()));
        }
        vars.insert(k, v);
    };
    for (k, v) in service_env(&lk.services) {
        set(&mut out, &mut vars, k, v);
    }
    for e in c.env_from.iter().flatten() {
        let prefix = e.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &e.config_map_ref {
            match lk.config_maps.get(&r.name) {
                Some(cm) => data_of_cm(cm),
                None if r.optional.unwrap_or(false) => continue,
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        } else if let Some(r) = &e.secret_ref {
            match lk.secrets.get(&r.name) {
                Some(s) => data_of_secret(s),
                None if r.optional.unwrap_or(false) => continue,
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        } else {
            continue;
        };
        for (k, v) in data {
            set(&mut out, &mut vars, format!("{prefix}{k}"), v);
        }
    }
    for EnvVar {
        name,
        value,
        value_from,
    } in c.env.iter().flatten()
    {
        let v = if let Some(from) = value_from {
            if let Some(f) = &from.field_ref {
                field_ref(pod, &f.field_path, cx)?
            } else if let Some(r) = &from.resource_field_ref {
                resource_field_ref(c, r, cx)?
            } else if let Some(r) = &from.config_map_key_ref {
                match lk.config_maps.get(&r.name).map(data_of_cm) {
                    Some(d) => match d.get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional.unwrap_or(false) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {}/{}",
                                r.key,
                                meta(pod).0,
                                r.name
                            ));
                        }
                    },
                    None if r.optional.unwrap_or(false) => continue,
                    None => return Err(format!("configmap \"{}\" not found", r.name)),
                }
            } else if let Some(r) = &from.secret_key_ref {
                match lk.secrets.get(&r.name).map(data_of_secret) {
                    Some(d) => match d.get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional.unwrap_or(false) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {}/{}",
                                r.key,
                                meta(pod).0,
                                r.name
                            ));
                        }
                    },
                    None if r.optional.unwrap_or(false) => continue,
                    None => return Err(format!("secret \"{}\" not found", r.name)),
                }
            } else {
                String::new()
            }
        } else {
            expand(value.as_deref().unwrap_or(""), &vars)
        };
        set(&mut out, &mut vars, name.clone(), v);
    }
    Ok(out)
}

/// Upstream's QoS class of a pod.
pub fn qos_class(pod: &Pod) -> &'static str {
    let spec = pod_spec(pod);
    let mut any = false;
    let mut guaranteed = true;
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        let r = c.resources.clone().unwrap_or_default();
        let req = r.requests.unwrap_or_default();
        let lim = r.limits.unwrap_or_default();
        for res in ["cpu", "memory"] {
            let rq = req.get(res).map(|q| q.0.clone());
            let lm = lim.get(res).map(|q| q.0.clone());
            if rq.as_deref().and_then(quantity::milli).unwrap_or(0) > 0
                || lm.as_deref().and_then(quantity::milli).unwrap_or(0) > 0
            {
                any = true;
            }
            match (&rq, &lm) {
                (_, None) => guaranteed = false,
                (Some(a), Some(b)) if quantity::milli(a) != quantity::milli(b) => {
                    guaranteed = false
                }
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The container's CPU and memory settings for the runtime.
pub fn linux_resources(pod: &Pod, c: &Container, node_memory: i64) -> cri::LinuxContainerResources {
    let r = c.resources.clone().unwrap_or_default();
    let get =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    let cpu_limit = get(&r.limits, "cpu").and_then(|q| quantity::milli(&q));
    // A request defaults to the limit (the API server does it too).
    let cpu_request = get(&r.requests, "cpu")
        .and_then(|q| quantity::milli(&q))
        .or(cpu_limit);
    let mem_limit = get(&r.limits, "memory").and_then(|q| quantity::value(&q));
    let mem_request = get(&r.requests, "memory")
        .and_then(|q| quantity::value(&q))
        .or(mem_limit);
    let mut out = cri::LinuxContainerResources {
        cpu_shares: cpu_request.map(|m| (m * 1024 / 1000).max(2)).unwrap_or(2),
        ..Default::default()
    };
    if let Some(l) = cpu_limit {
        out.cpu_period = 100_000;
        out.cpu_quota = (l * 100).max(1000);
    }
    if let Some(l) = mem_limit {
        out.memory_limit_in_bytes = l;
    }
    // Upstream's OOM score policy, clamped at 0: a negative value needs
    // CAP_SYS_RESOURCE, which these machines lack (containerd restricts it too).
    out.oom_score_adj = match qos_class(pod) {
        "Guaranteed" => 0,
        "BestEffort" => 1000,
        _ => {
            let req = mem_request.unwrap_or(0);
            if node_memory > 0 {
                (1000 - 1000 * req / node_memory).clamp(2, 999)
            } else {
                999
            }
        }
    };
    out
}

fn security(pod: &Pod, c: &Container) -> cri::LinuxContainerSecurityContext {
    let spec = pod_spec(pod);
    let psc = spec.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged.unwrap_or(false);
    let caps = sc.capabilities.clone().unwrap_or_default();
    let namespace_options = namespace_options(spec);
    cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            add_ambient_capabilities: Vec::new(),
        }),
        privileged,
        namespace_options: Some(namespace_options),
        run_as_user: sc
            .run_as_user
            .or(psc.run_as_user)
            .map(|v| cri::Int64Value { value: v }),
        run_as_group: sc
            .run_as_group
            .or(psc.run_as_group)
            .map(|v| cri::Int64Value { value: v }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        masked_paths: if privileged {
            Vec::new()
        } else {
            MASKED_PATHS.iter().map(|s| s.to_string()).collect()
        },
        readonly_paths: if privileged {
            Vec::new()
        } else {
            READONLY_PATHS.iter().map(|s| s.to_string()).collect()
        },
        ..Default::default()
    }
}

/// Everything needed to create one container.
pub struct ContainerInput<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub attempt: u32,
    /// The image reference the runtime resolved (its id).
    pub image_ref: &'a str,
    pub env: Vec<(String, String)>,
    /// Host files mounted into the container (hosts file, termination log).
    pub mounts: Vec<(String, String, bool)>,
    pub node_memory: i64,
}

/// The container's log path, relative to the sandbox's log directory.
pub fn log_path(name: &str, attempt: u32) -> String {
    format!("{name}/{attempt}.log")
}

pub fn container_config(i: ContainerInput) -> Result<cri::ContainerConfig, String> {
    let c = i.container;
    let (ns, name, uid) = meta(i.pod);
    let vars: HashMap<String, String> = i.env.iter().cloned().collect();
    let sc = security(i.pod, c);
    let psc = pod_spec(i.pod).security_context.clone().unwrap_or_default();
    let non_root = c
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_non_root)
        .or(psc.run_as_non_root)
        .unwrap_or(false);
    if non_root && sc.run_as_user.as_ref().is_some_and(|u| u.value == 0) {
        return Err("container's runAsUser breaks non-root policy".into());
    }
    let labels = HashMap::from([
        (POD_NAME_LABEL.to_string(), name.to_string()),
        (POD_NAMESPACE_LABEL.to_string(), ns.to_string()),
        (POD_UID_LABEL.to_string(), uid.to_string()),
        (CONTAINER_NAME_LABEL.to_string(), c.name.clone()),
    ]);
    let mut annotations = HashMap::from([
        (
            SPEC_IMAGE_ANNOTATION.to_string(),
            c.image.clone().unwrap_or_default(),
        ),
        (
            "io.kubernetes.container.restartCount".to_string(),
            i.attempt.to_string(),
        ),
        (
            "io.kubernetes.container.terminationMessagePath".to_string(),
            c.termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
        ),
        (
            "io.kubernetes.pod.terminationGracePeriod".to_string(),
            pod_spec(i.pod)
                .termination_grace_period_seconds
                .unwrap_or(30)
                .to_string(),
        ),
    ]);
    if let Some(ports) = &c.ports {
        annotations.insert(
            "io.kubernetes.container.ports".into(),
            serde_json::to_string(ports).unwrap_or_default(),
        );
    }
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: i.attempt,
        }),
        image: Some(cri::ImageSpec {
            image: i.image_ref.to_string(),
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: c
            .command
            .iter()
            .flatten()
            .map(|s| expand(s, &vars))
            .collect(),
        args: c.args.iter().flatten().map(|s| expand(s, &vars)).collect(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: i
            .env
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        mounts: i
            .mounts
            .into_iter()
            .map(|(host_path, container_path, readonly)| cri::Mount {
                container_path,
                host_path,
                readonly,
                ..Default::default()
            })
            .collect(),
        labels,
        annotations,
        log_path: log_path(&c.name, i.attempt),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(linux_resources(i.pod, c, i.node_memory)),
            security_context: Some(sc),
        }),
        ..Default::default()
    })
}

/// The pod's /etc/hosts (upstream's managed hosts file).
pub fn hosts_file(pod: &Pod, pod_ip: &str) -> String {
    let spec = pod_spec(pod);
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if !pod_ip.is_empty() {
        let host = hostname(pod);
        match &spec.subdomain {
            Some(sub) => s.push_str(&format!(
                "{pod_ip}\t{host}.{sub}.{}.svc\t{host}\n",
                meta(pod).0
            )),
            None => s.push_str(&format!("{pod_ip}\t{host}\n")),
        }
    }
    for a in spec.host_aliases.iter().flatten() {
        s.push_str(&format!(
            "\n# Entries added by HostAliases.\n{}\t{}\n",
            a.ip,
            a.hostnames.clone().unwrap_or_default().join("\t")
        ));
    }
    s
}

/// Writes `text` to `path` (creating parents).
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn expansion() {
        let vars = HashMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("a$", &vars), "a$");
        assert_eq!(expand("é$(A)", &vars), "é1");
    }

    #[test]
    fn env_values_and_refs() {
        let p = pod(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                "env": [
                    {"name": "A", "value": "1"},
                    {"name": "B", "value": "$(A)-2"},
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                ],
                "envFrom": [{"secretRef": {"name": "s"}, "prefix": "S_"}]}]}
        }));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let mut lk = Lookups::default();
        lk.config_maps.insert(
            "cm".into(),
            serde_json::from_value(json!({"metadata": {"name": "cm"}, "data": {"k": "v"}}))
                .unwrap(),
        );
        lk.secrets.insert(
            "s".into(),
            serde_json::from_value(json!({"metadata": {"name": "s"}, "data": {"x": "eQ=="}}))
                .unwrap(),
        );
        let cx = EnvContext {
            pod_ip: "10.1.2.3",
            host_ip: "1.1.1.1",
            node_allocatable_cpu_milli: 2000,
            node_allocatable_memory: 1 << 30,
        };
        let env: HashMap<_, _> = environment(&p, c, &cx, &lk).unwrap().into_iter().collect();
        assert_eq!(env["B"], "1-2");
        assert_eq!(env["NAME"], "p");
        assert_eq!(env["NS"], "ns");
        assert_eq!(env["IP"], "10.1.2.3");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["MEM"], "64");
        assert_eq!(env["CPU"], "1");
        assert_eq!(env["K"], "v");
        assert_eq!(env["S_x"], "y");
        assert!(
            environment(&p, c, &cx, &Lookups::default())
                .unwrap_err()
                .contains("not found")
        );
    }

    #[test]
    fn service_links() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web-svc", "namespace": "ns"},
            "spec": {"clusterIP": "10.43.0.10", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]},
        }))
        .unwrap();
        let headless: Service =
            serde_json::from_value(json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}})).unwrap();
        let env: HashMap<_, _> = service_env(&[svc, headless]).into_iter().collect();
        assert_eq!(env["WEB_SVC_SERVICE_HOST"], "10.43.0.10");
        assert_eq!(env["WEB_SVC_SERVICE_PORT"], "80");
        assert_eq!(env["WEB_SVC_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["WEB_SVC_PORT"], "tcp://10.43.0.10:80");
        assert_eq!(env["WEB_SVC_PORT_53_UDP_PROTO"], "udp");
        assert_eq!(env["WEB_SVC_PORT_80_TCP_ADDR"], "10.43.0.10");
        assert!(!env.contains_key("H_SERVICE_HOST"));
    }

    #[test]
    fn qos_and_resources() {
        let p = pod(
            json!({"metadata": {"name": "p", "uid": "u"}, "spec": {"containers": [{"name": "c",
            "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"memory": "64Mi", "cpu": "500m"}}}]}}),
        );
        assert_eq!(qos_class(&p), "Guaranteed");
        let r = linux_resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30);
        assert_eq!(
            (
                r.cpu_quota,
                r.cpu_period,
                r.cpu_shares,
                r.memory_limit_in_bytes,
                r.oom_score_adj
            ),
            (50_000, 100_000, 512, 64 << 20, 0)
        );
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(qos_class(&p), "BestEffort");
        assert_eq!(
            linux_resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30).oom_score_adj,
            1000
        );
        let p = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"memory": "512Mi"}}}]}}),
        );
        assert_eq!(qos_class(&p), "Burstable");
        assert_eq!(
            linux_resources(&p, &p.spec.as_ref().unwrap().containers[0], 1 << 30).oom_score_adj,
            500
        );
    }

    #[test]
    fn sandbox_config_shape() {
        let p = pod(
            json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        );
        let cfg = AgentConfig::new("/tmp/d", "n1");
        let s = sandbox_config(&cfg, &p, 2);
        assert_eq!(s.metadata.as_ref().unwrap().attempt, 2);
        assert_eq!(s.hostname, "web");
        assert_eq!(s.labels[POD_UID_LABEL], "u1");
        assert_eq!(s.labels["a"], "b");
        assert_eq!(s.port_mappings[0].host_port, 8080);
        assert_eq!(s.linux.as_ref().unwrap().cgroup_parent, "/kubepods/podu1");
        assert!(s.log_directory.ends_with("ns_web_u1"));
    }
}
