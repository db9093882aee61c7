//! The Endpoints controller (upstream's `pkg/controller/endpoint`), and
//! what it shares with the EndpointSlice controller ([`crate::endpointslice`]):
//! which pods back a Service, their addresses and ports, and the
//! `endpoints.kubernetes.io/last-change-trigger-time` bookkeeping.
//!
//! For every Service with a selector (not ExternalName), an Endpoints
//! object of the same name lists the selected pods that have an IP and are
//! not finished (Succeeded/Failed): ready pods under `addresses`, the others
//! under `notReadyAddresses`. Pods being deleted are left out, unless
//! `spec.publishNotReadyAddresses` is set, which also lists every pod as
//! ready. An address carries the pod IP of the Service's first IP family,
//! `nodeName`, a `targetRef` to the pod, and `hostname` when the pod's
//! `subdomain` names the Service. Ports come from each service port's
//! `targetPort`: a number as is, a name looked up among the pod's container
//! (and sidecar) ports with the same protocol; a pod without that named port
//! is left out of that port only. Headless Services without ports list
//! addresses without ports. Addresses and ports are repacked into subsets
//! as upstream's `RepackSubsets` does: one subset per distinct set of
//! addresses, carrying every port those addresses serve (an address not
//! ready for one port is not ready for all of them in its subset).
//!
//! The Endpoints carries the Service's labels, plus
//! `service.kubernetes.io/headless` for headless Services, and the
//! annotation `endpoints.kubernetes.io/last-change-trigger-time` (the
//! earliest pod readiness transition or Service creation not yet reflected).
//! Beyond 1000 addresses it is truncated (ready addresses first) and
//! annotated `endpoints.kubernetes.io/over-capacity: truncated`. Nothing is
//! written when subsets and labels are unchanged. Services without a
//! selector are left alone (their Endpoints are the user's). Deleting a
//! Service deletes its Endpoints; deleting an Endpoints recreates it; on
//! start, Endpoints whose Service is gone are deleted (upstream's
//! `checkLeftoverEndpoints`; leader-election records excepted).
//!
//! How: [`run`] starts both this controller and the EndpointSlice
//! controller over one pod watch and one Service watch (their handlers
//! queue the affected Service keys on both controllers' queues), plus an
//! Endpoints watch here and EndpointSlice and Node watches there. Each
//! controller has its own queue and workers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Node, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::task::JoinSet;

use crate::endpointslice;
use crate::informer::{Change, IndexedStore, SharedInformers};
use crate::kit::{self, Key};
use crate::pod_control::{EventRecorder, EventType, error_message, is_namespace_terminating, is_not_found, is_pod_ready, object_ref};
use crate::queue::{self, Backoff, Queue};

/// The annotation with the time of the earliest change not yet reflected.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The annotation on an Endpoints truncated to [`MAX_CAPACITY`] addresses.
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// The label on the Endpoints and EndpointSlices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Endpoints holding a leader-election record are not Services' (client-go's
/// `LeaderElectionRecordAnnotationKey`).
pub const LEADER_ELECTION_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
/// At most this many addresses in one Endpoints (upstream's `maxCapacity`).
pub const MAX_CAPACITY: usize = 1000;

#[derive(Clone, Debug)]
pub struct Config {
    /// Services synced at once by the Endpoints controller (upstream
    /// `--concurrent-endpoint-syncs`: 5).
    pub endpoints_workers: usize,
    /// Services synced at once by the EndpointSlice controller (upstream
    /// `--concurrent-service-endpoint-syncs`: 5).
    pub slice_workers: usize,
    /// Endpoints per EndpointSlice (upstream `--max-endpoints-per-slice`: 100).
    pub max_endpoints_per_slice: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { endpoints_workers: 5, slice_workers: 5, max_endpoints_per_slice: 100 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Api(String, String),
}

/// Runs the Endpoints and EndpointSlice controllers with the default [`Config`].
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with(client, Config::default()).await
}

/// Runs the Endpoints and EndpointSlice controllers until their informers stop.
pub async fn run_with(client: Client, config: Config) -> anyhow::Result<()> {
    run_shared(client.clone(), config, SharedInformers::new(client)).await
}

/// [`run_with`] on the process's shared informers.
pub async fn run_shared(client: Client, config: Config, informers: SharedInformers) -> anyhow::Result<()> {
    let pod_inf = informers.get::<Pod>();
    let svc_inf = informers.get::<Service>();
    let ep_inf = informers.get::<Endpoints>();
    let slice_inf = informers.get::<EndpointSlice>();
    let node_inf = informers.get::<Node>();

    let (ep_queue, ep_workers) = queue::queue::<Key>(Backoff::CONTROLLER);
    let ep = Arc::new(Controller {
        client: client.clone(),
        services: svc_inf.store(),
        pods: pod_inf.indexed(),
        endpoints: ep_inf.store(),
        queue: ep_queue.clone(),
        triggers: TriggerTimeTracker::default(),
        recorder: EventRecorder::new(client.clone(), "endpoint-controller"),
    });
    let (slice_store, node_store) = (slice_inf.store(), node_inf.store());
    let (slice_ctl, slice_queue, slice_workers) = endpointslice::Controller::new(
        client,
        svc_inf.store(),
        pod_inf.indexed(),
        slice_store.clone(),
        node_store.clone(),
        config.max_endpoints_per_slice,
    );

    let mut tasks = JoinSet::new();
    {
        let (ep, sl, services) = (ep.clone(), slice_ctl.clone(), svc_inf.store());
        tasks.spawn(pod_inf.run("pods", move |change| {
            let keys = match &change {
                Change::Added(p) | Change::Deleted(p) => service_memberships(&services, p),
                Change::Updated(old, cur) => services_to_update_on_pod_change(&services, old, cur),
            };
            for key in keys {
                ep.queue.add(key.clone());
                sl.queue_service(key);
            }
        }));
    }
    {
        let (ep, sl) = (ep.clone(), slice_ctl.clone());
        tasks.spawn(svc_inf.run("services", move |change| {
            let key = match &change {
                Change::Added(s) | Change::Updated(_, s) | Change::Deleted(s) => Key::of(&**s),
            };
            ep.queue.add(key.clone());
            sl.queue_service(key);
        }));
    }
    {
        let ep = ep.clone();
        tasks.spawn(ep_inf.run("endpoints", move |change| {
            // Upstream watches deletions only: a deleted Endpoints is recreated.
            if let Change::Deleted(e) = change {
                ep.queue.add(Key::of(&*e));
            }
        }));
    }
    {
        let sl = slice_ctl.clone();
        tasks.spawn(slice_inf.run("endpointslices", move |change| sl.on_slice(&change)));
    }
    tasks.spawn(node_inf.run("nodes", |_| {}));

    let _ = tokio::join!(
        ep.pods.wait_until_ready(),
        ep.services.wait_until_ready(),
        ep.endpoints.wait_until_ready(),
        slice_store.wait_until_ready(),
        node_store.wait_until_ready()
    );
    tracing::info!("endpoints and endpointslice controllers synced");
    ep.check_leftover_endpoints();

    let c = ep.clone();
    tasks.spawn(kit::run_workers("endpoint", ep_queue, ep_workers, config.endpoints_workers, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    }));
    let c = slice_ctl.clone();
    tasks.spawn(kit::run_workers("endpointslice", slice_queue, slice_workers, config.slice_workers, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    }));
    let _ = tasks.join_next().await;
    anyhow::bail!("endpoints controllers stopped")
}

// ---------------------------------------------------------------------------
// What both controllers share (upstream's `k8s.io/endpointslice/util`).

/// The Service's selector, if it selects pods: a missing or empty selector
/// means the Service's endpoints are managed by hand (upstream's nil
/// selector; an empty map does not survive upstream's storage either).
pub fn service_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())
}

fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

pub fn is_external_name(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName")
}

pub fn cluster_ip(svc: &Service) -> &str {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).unwrap_or("")
}

/// Upstream's `IsServiceIPSet`: neither headless nor without a cluster IP.
pub fn is_service_ip_set(svc: &Service) -> bool {
    let ip = cluster_ip(svc);
    !ip.is_empty() && ip != "None"
}

pub fn publishes_not_ready(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false)
}

pub fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or(&[])
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Upstream's `ShouldPodBeInEndpoints`: not finished, has an IP, and is not
/// being deleted unless `include_terminating`.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if matches!(phase(pod), "Succeeded" | "Failed") {
        return false;
    }
    if pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// Upstream's `ShouldSetHostname`: the pod's subdomain names the Service.
pub fn should_set_hostname(pod: &Pod, svc: &Service) -> bool {
    let spec = pod.spec.as_ref();
    let hostname = spec.and_then(|s| s.hostname.as_deref()).unwrap_or("");
    !hostname.is_empty()
        && spec.and_then(|s| s.subdomain.as_deref()).unwrap_or("") == svc.metadata.name.as_deref().unwrap_or("")
        && svc.metadata.namespace == pod.metadata.namespace
}

pub fn pod_hostname(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.hostname.clone())
}

pub fn pod_node_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

/// The pod's IPs, as upstream's API presents `status.podIPs`: the
/// conversion from v1 makes `podIP` authoritative when both are set and
/// differ, and fills `podIPs` from `podIP` when only that is set.
pub fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = pod.status.as_ref() else { return Vec::new() };
    let ip = status.pod_ip.as_deref().unwrap_or("");
    let ips: Vec<String> = status.pod_ips.as_deref().unwrap_or(&[]).iter().map(|p| p.ip.clone()).filter(|s| !s.is_empty()).collect();
    if !ip.is_empty() && ips.first().map(String::as_str) != Some(ip) {
        return vec![ip.to_string()];
    }
    ips
}

pub fn is_ipv6(ip: &str) -> bool {
    matches!(ip.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
}

/// Upstream's `podToEndpointAddressForService`'s choice of IP: the first pod
/// IP of the Service's first IP family (of its cluster IP, or of the pod's
/// IP for a headless Service, when the families are not set).
fn endpoint_ip_for_service(svc: &Service, pod: &Pod) -> Option<String> {
    let families = svc.spec.as_ref().and_then(|s| s.ip_families.as_deref()).unwrap_or(&[]);
    let v6 = match families.first() {
        Some(f) => f == "IPv6",
        None if is_service_ip_set(svc) => is_ipv6(cluster_ip(svc)),
        None => pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).map(is_ipv6).unwrap_or(false),
    };
    pod_ips(pod).into_iter().find(|ip| is_ipv6(ip) == v6)
}

fn protocol_of(p: Option<&str>) -> &str {
    p.filter(|p| !p.is_empty()).unwrap_or("TCP")
}

/// Upstream's `FindPort`: the container port a service port targets in
/// `pod`: a number as is; a name among the containers' ports (then the
/// sidecars', init containers with `restartPolicy: Always`) with the
/// service port's protocol. `None`: the pod has no such named port.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let proto = protocol_of(sp.protocol.as_deref());
            let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()) && protocol_of(p.protocol.as_deref()) == proto)
                .map(|p| p.container_port)
        }
    }
}

/// Keys of the Services in the pod's namespace whose selector matches it
/// (upstream's `GetPodServiceMemberships`).
pub fn service_memberships(services: &Store<Service>, pod: &Pod) -> BTreeSet<Key> {
    services
        .state()
        .into_iter()
        .filter(|s| s.metadata.namespace == pod.metadata.namespace)
        .filter(|s| service_selector(s).map(|sel| selects(sel, pod)).unwrap_or(false))
        .map(|s| Key::of(&*s))
        .collect()
}

/// Upstream's `podEndpointsChanged`: (the pod's endpoints may have changed,
/// the Services it belongs to may have changed).
fn pod_endpoints_changed(old: &Pod, new: &Pod) -> (bool, bool) {
    let hostname = |p: &Pod| p.spec.as_ref().map(|s| (s.hostname.clone(), s.subdomain.clone()));
    let labels_changed = old.metadata.labels != new.metadata.labels || hostname(old) != hostname(new);
    let changed = old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
        || is_pod_ready(old) != is_pod_ready(new)
        || pod_ips(old) != pod_ips(new)
        // Upstream relies on these being immutable once the pod has an IP;
        // a pod that finishes keeps its IP but leaves the endpoints.
        || phase(old) != phase(new)
        || pod_node_name(old) != pod_node_name(new);
    (changed, labels_changed)
}

/// Upstream's `GetServicesToUpdateOnPodChange`.
pub fn services_to_update_on_pod_change(services: &Store<Service>, old: &Pod, new: &Pod) -> BTreeSet<Key> {
    if old.metadata.resource_version == new.metadata.resource_version {
        return BTreeSet::new();
    }
    let (changed, labels_changed) = pod_endpoints_changed(old, new);
    if !changed && !labels_changed {
        return BTreeSet::new();
    }
    let now = service_memberships(services, new);
    if !labels_changed {
        return now;
    }
    let before = service_memberships(services, old);
    if changed {
        now.union(&before).cloned().collect()
    } else {
        // Only the membership changed: the Services it joined or left.
        now.symmetric_difference(&before).cloned().collect()
    }
}

/// The pods in the Service's namespace its selector matches, by name.
pub fn pods_for_service(pods: &IndexedStore<Pod>, svc: &Service, selector: &BTreeMap<String, String>) -> Vec<Arc<Pod>> {
    let mut out: Vec<Arc<Pod>> =
        pods.in_namespace(svc.metadata.namespace.as_deref().unwrap_or_default()).into_iter().filter(|p| selects(selector, p)).collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

/// A reference to the pod as endpoints carry it (no resourceVersion).
pub fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// Upstream's `TriggerTimeTracker`: computes the
/// `endpoints.kubernetes.io/last-change-trigger-time` of a Service's
/// endpoints: the earliest change (a pod's Ready transition, the Service's
/// creation) that happened since the last sync, or the Service's creation
/// on its first sync. Each controller keeps its own.
#[derive(Default)]
pub struct TriggerTimeTracker {
    states: Mutex<HashMap<Key, TriggerState>>,
}

#[derive(Default)]
struct TriggerState {
    service: Option<Timestamp>,
    pods: HashMap<String, Timestamp>,
}

fn earliest(a: Option<Timestamp>, b: Timestamp) -> Option<Timestamp> {
    Some(a.map(|a| a.min(b)).unwrap_or(b))
}

impl TriggerTimeTracker {
    pub fn compute(&self, key: &Key, svc: &Service, pods: &[Arc<Pod>]) -> Option<Timestamp> {
        let mut states = self.states.lock().expect("trigger time lock");
        let known = states.contains_key(key);
        let state = states.entry(key.clone()).or_default();
        let mut min_changed = None;
        let mut pod_times = HashMap::new();
        for pod in pods {
            let ready = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
            if let Some(t) = ready.and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0) {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if state.pods.get(&name).map(|prev| t > *prev).unwrap_or(true) {
                    min_changed = earliest(min_changed, t);
                }
                pod_times.insert(name, t);
            }
        }
        let svc_time = svc.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if let Some(t) = svc_time
            && state.service.map(|prev| t > prev).unwrap_or(true)
        {
            min_changed = earliest(min_changed, t);
        }
        state.pods = pod_times;
        state.service = svc_time;
        if !known {
            return svc_time;
        }
        min_changed
    }

    pub fn delete_service(&self, key: &Key) {
        self.states.lock().expect("trigger time lock").remove(key);
    }
}

/// RFC 3339 with nanoseconds as needed, in UTC (Go's `time.RFC3339Nano`).
pub fn format_trigger_time(t: Timestamp) -> String {
    t.to_string()
}

/// `labels` without `remove`.
fn labels_without(labels: Option<&BTreeMap<String, String>>, remove: &str) -> BTreeMap<String, String> {
    let mut l = labels.cloned().unwrap_or_default();
    l.remove(remove);
    l
}

// ---------------------------------------------------------------------------
// Subsets

type AddrKey = (String, String);
type PortKey = (String, i32, String, String);

/// A port (`None`: the "no ports" sentinel) and the addresses serving it,
/// ready or not.
type PortAddresses = (Option<EndpointPort>, BTreeMap<AddrKey, bool>);

fn addr_key(a: &EndpointAddress) -> AddrKey {
    (a.ip.clone(), a.target_ref.as_ref().and_then(|r| r.uid.clone()).unwrap_or_default())
}

fn port_key(p: &EndpointPort) -> PortKey {
    (p.name.clone().unwrap_or_default(), p.port, protocol_of(p.protocol.as_deref()).to_string(), p.app_protocol.clone().unwrap_or_default())
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// Upstream's `RepackSubsets`: `(address, ready, port)` entries (one per pod
/// and port; no port for headless Services without ports) into the fewest
/// subsets: addresses serving the same ports share a subset. An address is
/// not ready in a subset if it is not ready for any of its ports. Subsets,
/// addresses (by IP, then pod uid) and ports come out in a stable order.
pub fn repack_subsets(entries: Vec<(EndpointAddress, bool, Option<EndpointPort>)>) -> Vec<EndpointSubset> {
    let mut all: BTreeMap<AddrKey, EndpointAddress> = BTreeMap::new();
    let mut by_port: BTreeMap<Option<PortKey>, PortAddresses> = BTreeMap::new();
    for (addr, ready, port) in entries {
        let k = addr_key(&addr);
        all.entry(k.clone()).or_insert(addr);
        let entry = by_port.entry(port.as_ref().map(port_key)).or_insert_with(|| (port, BTreeMap::new()));
        // Not ready wins over ready.
        if entry.1.get(&k) != Some(&false) {
            entry.1.insert(k, ready);
        }
    }
    let mut groups: BTreeMap<Vec<(AddrKey, bool)>, Vec<EndpointPort>> = BTreeMap::new();
    for (_, (port, addrs)) in by_port {
        let ports = groups.entry(addrs.into_iter().collect()).or_default();
        ports.extend(port);
    }
    groups
        .into_iter()
        .map(|(addrs, ports)| {
            let (ready, not_ready): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|(_, r)| *r);
            let pick = |v: Vec<(AddrKey, bool)>| v.into_iter().map(|(k, _)| all[&k].clone()).collect::<Vec<_>>();
            EndpointSubset { addresses: non_empty(pick(ready)), not_ready_addresses: non_empty(pick(not_ready)), ports: non_empty(ports) }
        })
        .collect()
}

/// Subsets as compared: empty lists as absent, no pod resourceVersions,
/// empty node names and hostnames as absent.
fn normalize_subsets(subsets: Option<&[EndpointSubset]>) -> Vec<EndpointSubset> {
    let addrs = |v: &Option<Vec<EndpointAddress>>| {
        non_empty(
            v.iter()
                .flatten()
                .map(|a| {
                    let mut a = a.clone();
                    if let Some(r) = a.target_ref.as_mut() {
                        r.resource_version = None;
                    }
                    a.node_name = a.node_name.filter(|n| !n.is_empty());
                    a.hostname = a.hostname.filter(|n| !n.is_empty());
                    a
                })
                .collect(),
        )
    };
    subsets
        .unwrap_or(&[])
        .iter()
        .map(|s| EndpointSubset {
            addresses: addrs(&s.addresses),
            not_ready_addresses: addrs(&s.not_ready_addresses),
            ports: non_empty(
                s.ports
                    .iter()
                    .flatten()
                    .map(|p| EndpointPort {
                        name: p.name.clone().filter(|n| !n.is_empty()),
                        app_protocol: p.app_protocol.clone().filter(|n| !n.is_empty()),
                        ..p.clone()
                    })
                    .collect(),
            ),
        })
        .collect()
}

fn count_addresses(subsets: &[EndpointSubset]) -> (usize, usize) {
    subsets.iter().fold((0, 0), |(r, n), s| (r + s.addresses.as_ref().map_or(0, Vec::len), n + s.not_ready_addresses.as_ref().map_or(0, Vec::len)))
}

/// Upstream's `truncateEndpoints`: over [`MAX_CAPACITY`] addresses, keeps
/// ready addresses first, spread over the subsets in proportion to their
/// size. Returns whether it truncated.
pub fn truncate_subsets(subsets: &mut [EndpointSubset]) -> bool {
    let (total_ready, total_not_ready) = count_addresses(subsets);
    if total_ready + total_not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = total_ready > MAX_CAPACITY;
    let (max, num_total) = if truncate_ready { (MAX_CAPACITY, total_ready) } else { (MAX_CAPACITY - total_ready, total_not_ready) };
    let mut can_be_added = max;
    for s in subsets.iter_mut() {
        let in_subset = if truncate_ready { s.addresses.as_ref() } else { s.not_ready_addresses.as_ref() }.map_or(0, Vec::len);
        let to_add = ((in_subset as f64 / num_total as f64) * max as f64).ceil() as usize;
        let to_add = to_add.min(can_be_added);
        if truncate_ready {
            if let Some(a) = s.addresses.as_mut() {
                a.truncate(to_add);
            }
            s.not_ready_addresses = None;
            can_be_added -= s.addresses.as_ref().map_or(0, Vec::len);
        } else {
            if let Some(a) = s.not_ready_addresses.as_mut() {
                a.truncate(to_add);
            }
            can_be_added -= s.not_ready_addresses.as_ref().map_or(0, Vec::len);
        }
        if s.addresses.as_ref().is_some_and(Vec::is_empty) {
            s.addresses = None;
        }
        if s.not_ready_addresses.as_ref().is_some_and(Vec::is_empty) {
            s.not_ready_addresses = None;
        }
    }
    true
}

/// Upstream's `capacityAnnotationSetCorrectly`.
fn capacity_annotation_set_correctly(ep: &Endpoints) -> bool {
    let (r, n) = count_addresses(ep.subsets.as_deref().unwrap_or(&[]));
    if r + n > MAX_CAPACITY {
        return false;
    }
    !ep.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(OVER_CAPACITY))
}

/// The subsets of a Service's Endpoints (upstream's `syncService` loop).
pub fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let publish = publishes_not_ready(svc);
    let ports = service_ports(svc);
    let mut entries = Vec::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, publish) {
            continue;
        }
        let Some(ip) = endpoint_ip_for_service(svc, pod) else {
            tracing::debug!(service = %Key::of(svc), pod = %pod.name_any(), "no pod IP of the service's IP family");
            continue;
        };
        let node = pod_node_name(pod);
        let addr = EndpointAddress {
            ip,
            node_name: (!node.is_empty()).then(|| node.to_string()),
            target_ref: Some(pod_ref(pod)),
            hostname: if should_set_hostname(pod, svc) { pod_hostname(pod) } else { None },
        };
        let ready = publish || is_pod_ready(pod);
        if ports.is_empty() {
            // Headless Services may have no ports.
            if cluster_ip(svc) == "None" {
                entries.push((addr, ready, None));
            }
            continue;
        }
        for sp in ports {
            let Some(port) = find_port(pod, sp) else {
                tracing::trace!(service = %Key::of(svc), pod = %pod.name_any(), "pod lacks the service port's target port");
                continue;
            };
            let ep = EndpointPort {
                name: sp.name.clone().filter(|n| !n.is_empty()),
                port,
                protocol: sp.protocol.clone(),
                app_protocol: sp.app_protocol.clone(),
            };
            entries.push((addr.clone(), ready, Some(ep)));
        }
    }
    repack_subsets(entries)
}

// ---------------------------------------------------------------------------
// The Endpoints controller

struct Controller {
    client: Client,
    services: Store<Service>,
    pods: IndexedStore<Pod>,
    endpoints: Store<Endpoints>,
    queue: Queue<Key>,
    triggers: TriggerTimeTracker,
    recorder: EventRecorder,
}

impl Controller {
    /// Upstream's `checkLeftoverEndpoints`: every Endpoints is synced once,
    /// so those whose Service went away while the controller was down go too.
    fn check_leftover_endpoints(&self) {
        for ep in self.endpoints.state() {
            if ep.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(LEADER_ELECTION_ANNOTATION)) {
                continue;
            }
            self.queue.add(Key::of(&*ep));
        }
    }

    /// Upstream's `syncService`.
    async fn sync(&self, key: &Key) -> Result<Option<Duration>, Error> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.namespace);
        let Some(svc) = self.services.get(&key.obj_ref()) else {
            // The Service is gone: so are its Endpoints.
            match api.delete(&key.name, &DeleteParams::default()).await {
                Ok(_) => tracing::debug!(service = %key, "deleted the endpoints of a deleted service"),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Error::Api(format!("deleting endpoints {key}"), error_message(&e))),
            }
            self.triggers.delete_service(key);
            return Ok(None);
        };
        if is_external_name(&svc) {
            return Ok(None);
        }
        let Some(selector) = service_selector(&svc) else { return Ok(None) };
        let pods = pods_for_service(&self.pods, &svc, selector);
        // Computed on every sync, so that the tracker follows even no-op syncs.
        let trigger = self.triggers.compute(key, &svc, &pods);
        let subsets = desired_subsets(&svc, &pods);

        let current = self.endpoints.get(&key.obj_ref());
        let svc_labels = svc.metadata.labels.clone().unwrap_or_default();
        if let Some(cur) = &current
            && normalize_subsets(cur.subsets.as_deref()) == subsets
            && labels_without(cur.metadata.labels.as_ref(), HEADLESS_LABEL) == svc_labels
            && capacity_annotation_set_correctly(cur)
        {
            tracing::trace!(service = %key, "endpoints unchanged");
            return Ok(None);
        }
        let mut new = match &current {
            Some(cur) => (**cur).clone(),
            None => Endpoints {
                metadata: ObjectMeta { name: Some(key.name.clone()), namespace: Some(key.namespace.clone()), ..Default::default() },
                ..Default::default()
            },
        };
        let mut subsets = subsets;
        let truncated = truncate_subsets(&mut subsets);
        new.subsets = non_empty(subsets);
        let mut labels = svc_labels;
        if is_service_ip_set(&svc) {
            labels.remove(HEADLESS_LABEL);
        } else {
            labels.insert(HEADLESS_LABEL.into(), String::new());
        }
        new.metadata.labels = (!labels.is_empty()).then_some(labels);
        let annotations = new.metadata.annotations.get_or_insert_with(BTreeMap::new);
        match trigger {
            Some(t) => annotations.insert(LAST_CHANGE_TRIGGER_TIME.into(), format_trigger_time(t)),
            None => annotations.remove(LAST_CHANGE_TRIGGER_TIME),
        };
        if truncated {
            annotations.insert(OVER_CAPACITY.into(), "truncated".into());
        } else {
            annotations.remove(OVER_CAPACITY);
        }
        if annotations.is_empty() {
            new.metadata.annotations = None;
        }
        let (ready, not_ready) = count_addresses(new.subsets.as_deref().unwrap_or(&[]));
        tracing::debug!(service = %key, ready, not_ready, create = current.is_none(), "updating endpoints");
        let result = match &current {
            None => api.create(&PostParams::default(), &new).await,
            Some(_) => api.replace(&key.name, &PostParams::default(), &new).await,
        };
        match result {
            Ok(_) => Ok(None),
            // Creates keep failing in a namespace being deleted: drop the key.
            Err(e) if current.is_none() && is_namespace_terminating(&e) => Ok(None),
            Err(e) => {
                let (reason, message) = match &current {
                    None => ("FailedToCreateEndpoint", format!("Failed to create endpoint for service {key}: {}", error_message(&e))),
                    Some(_) => ("FailedToUpdateEndpoint", format!("Failed to update endpoint {key}: {}", error_message(&e))),
                };
                self.recorder.event(object_ref(&new), EventType::Warning, reason, message);
                Err(Error::Api(format!("writing endpoints {key}"), error_message(&e)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn running(name: &str, ip: &str, ready: bool, ports: serde_json::Value) -> Arc<Pod> {
        pod(json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
    }

    fn ips(v: &Option<Vec<EndpointAddress>>) -> Vec<String> {
        v.iter().flatten().map(|a| a.ip.clone()).collect()
    }

    #[test]
    fn named_ports_ready_and_not_ready_repack() {
        let s = svc(json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": {"clusterIP": "10.0.0.1", "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}, {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090}]}}));
        let pods = vec![
            running("a", "10.1.0.1", true, json!([{"name": "http", "containerPort": 8080}])),
            running("b", "10.1.0.2", false, json!([{"name": "http", "containerPort": 8080}])),
            // No port named http: only in the metrics port.
            running("c", "10.1.0.3", true, json!([])),
        ];
        let subsets = desired_subsets(&s, &pods);
        // Port by port, the addresses differ (c lacks "http"): two subsets.
        assert_eq!(subsets.len(), 2, "{subsets:#?}");
        let port_of = |s: &EndpointSubset| s.ports.as_ref().unwrap().iter().map(|p| (p.name.clone().unwrap(), p.port)).collect::<Vec<_>>();
        let http = subsets.iter().find(|s| port_of(s) == [("http".to_string(), 8080)]).expect("the http subset, on the named container port");
        assert_eq!(ips(&http.addresses), ["10.1.0.1"]);
        assert_eq!(ips(&http.not_ready_addresses), ["10.1.0.2"]);
        let metrics = subsets.iter().find(|s| port_of(s) == [("metrics".to_string(), 9090)]).expect("the metrics subset");
        assert_eq!(ips(&metrics.addresses), ["10.1.0.1", "10.1.0.3"]);
        assert_eq!(ips(&metrics.not_ready_addresses), ["10.1.0.2"]);
        let a = &http.addresses.as_ref().unwrap()[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(a.target_ref.as_ref().unwrap().uid.as_deref(), Some("uid-a"));
        assert_eq!(a.target_ref.as_ref().unwrap().kind.as_deref(), Some("Pod"));
        // Same addresses for both ports: one subset with both.
        let pods = vec![pods[0].clone(), pods[1].clone()];
        let subsets = desired_subsets(&s, &pods);
        assert_eq!(subsets.len(), 1, "{subsets:#?}");
        assert_eq!(port_of(&subsets[0]), [("http".to_string(), 8080), ("metrics".to_string(), 9090)]);
    }

    #[test]
    fn terminating_finished_and_ipless_pods() {
        let s = |publish: bool| {
            svc(json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": {"clusterIP": "10.0.0.1", "selector": {"app": "web"},
                "publishNotReadyAddresses": publish, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}}))
        };
        let mut deleting = (*running("d", "10.1.0.4", true, json!([]))).clone();
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()));
        let mut done = (*running("e", "10.1.0.5", false, json!([]))).clone();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let pods = vec![
            running("a", "10.1.0.1", false, json!([])),
            Arc::new(deleting),
            Arc::new(done),
            pod(
                json!({"metadata": {"name": "f", "namespace": "ns", "labels": {"app": "web"}}, "spec": {"containers": []}, "status": {"phase": "Pending"}}),
            ),
        ];
        let subsets = desired_subsets(&s(false), &pods);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), Vec::<String>::new());
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.1.0.1"], "the terminating, finished and IP-less pods are left out");
        let subsets = desired_subsets(&s(true), &pods);
        assert_eq!(ips(&subsets[0].addresses), ["10.1.0.1", "10.1.0.4"], "publishNotReadyAddresses: all ready, terminating included");
        assert!(subsets[0].not_ready_addresses.is_none());
    }

    #[test]
    fn not_ready_wins_and_headless_without_ports() {
        let addr = |ip: &str| EndpointAddress { ip: ip.into(), ..Default::default() };
        let port = |n: i32| Some(EndpointPort { port: n, protocol: Some("TCP".into()), ..Default::default() });
        let subsets = repack_subsets(vec![(addr("1.1.1.1"), true, port(80)), (addr("1.1.1.1"), false, port(80)), (addr("1.1.1.2"), true, port(80))]);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), ["1.1.1.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["1.1.1.1"]);
        let headless = repack_subsets(vec![(addr("1.1.1.2"), true, None), (addr("1.1.1.1"), true, None)]);
        assert_eq!(headless.len(), 1);
        assert_eq!(ips(&headless[0].addresses), ["1.1.1.1", "1.1.1.2"]);
        assert!(headless[0].ports.is_none());
    }

    #[test]
    fn truncation_keeps_ready_first() {
        let addrs = |n: usize, base: u32| {
            non_empty((0..n).map(|i| EndpointAddress { ip: format!("10.{base}.{}.{}", i / 256, i % 256), ..Default::default() }).collect())
        };
        let mut subsets = vec![
            EndpointSubset { addresses: addrs(600, 1), not_ready_addresses: addrs(300, 2), ports: None },
            EndpointSubset { addresses: addrs(300, 3), not_ready_addresses: addrs(300, 4), ports: None },
        ];
        assert!(truncate_subsets(&mut subsets));
        assert_eq!(count_addresses(&subsets), (900, 100));
        let mut small = vec![EndpointSubset { addresses: addrs(10, 1), not_ready_addresses: None, ports: None }];
        assert!(!truncate_subsets(&mut small));
    }

    #[test]
    fn pod_ips_follow_the_v1_conversion() {
        let p = |status: serde_json::Value| pod(json!({"metadata": {"name": "p"}, "status": status}));
        assert_eq!(pod_ips(&p(json!({"podIP": "10.0.0.1"}))), ["10.0.0.1"]);
        assert_eq!(pod_ips(&p(json!({"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}))), ["10.0.0.1", "fd00::1"]);
        assert_eq!(pod_ips(&p(json!({"podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.1"}]}))), ["10.0.0.2"]);
        assert!(pod_ips(&p(json!({}))).is_empty());
    }

    #[test]
    fn trigger_times() {
        let tracker = TriggerTimeTracker::default();
        let key = Key::new("ns", "web");
        let created = "2024-01-01T00:00:00Z";
        let s = svc(json!({"metadata": {"name": "web", "namespace": "ns", "creationTimestamp": created}}));
        let with_ready = |t: &str| {
            pod(json!({"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": t}]}}))
        };
        let first = tracker.compute(&key, &s, &[with_ready("2024-01-01T00:00:05Z")]);
        assert_eq!(first.map(|t| t.to_string()).as_deref(), Some(created), "a new service: its creation");
        assert_eq!(tracker.compute(&key, &s, &[with_ready("2024-01-01T00:00:05Z")]), None, "nothing changed");
        let t = tracker.compute(&key, &s, &[with_ready("2024-01-01T00:01:00Z")]);
        assert_eq!(t.map(|t| t.to_string()).as_deref(), Some("2024-01-01T00:01:00Z"));
    }

    #[test]
    fn find_port_by_name_and_protocol() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"}, {"name": "dns-tcp", "containerPort": 5353}]}],
            "initContainers": [{"name": "side", "restartPolicy": "Always", "ports": [{"name": "proxy", "containerPort": 15001}]},
                               {"name": "init", "ports": [{"name": "setup", "containerPort": 1}]}]}}));
        let sp = |v: serde_json::Value| serde_json::from_value::<ServicePort>(v).unwrap();
        assert_eq!(find_port(&p, &sp(json!({"port": 53, "protocol": "UDP", "targetPort": "dns"}))), Some(53));
        assert_eq!(find_port(&p, &sp(json!({"port": 53, "protocol": "TCP", "targetPort": "dns"}))), None, "protocol must match");
        assert_eq!(find_port(&p, &sp(json!({"port": 53, "targetPort": "dns-tcp"}))), Some(5353));
        assert_eq!(find_port(&p, &sp(json!({"port": 80, "targetPort": "proxy"}))), Some(15001), "sidecar ports count");
        assert_eq!(find_port(&p, &sp(json!({"port": 80, "targetPort": "setup"}))), None, "plain init containers do not");
        assert_eq!(find_port(&p, &sp(json!({"port": 80, "targetPort": 8080}))), Some(8080));
    }
}
