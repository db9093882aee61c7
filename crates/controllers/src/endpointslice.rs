//! The EndpointSlice controller (upstream's `pkg/controller/endpointslice`
//! and its reconciler in `k8s.io/endpointslice`), run by
//! [`crate::endpoints::run`] next to the Endpoints controller, sharing its
//! pod and Service watches.
//!
//! For every Service with a selector (not ExternalName), `discovery.k8s.io/v1`
//! EndpointSlices list the selected pods that have an IP and are not
//! finished, one slice per address type of the Service's IP families and
//! per distinct set of resolved ports (pods lacking a named target port land
//! in a slice with fewer ports), at most `maxEndpointsPerSlice` (100)
//! endpoints per slice. Each endpoint has the pod's addresses of the slice's
//! type, conditions `ready` (serving and not terminating, or always with
//! `publishNotReadyAddresses`), `serving` (the pod's Ready condition) and
//! `terminating` (being deleted: such pods stay listed), `nodeName`, `zone`
//! (the node's `topology.kubernetes.io/zone`), a `targetRef` to the pod, and
//! `hostname` when the pod's `subdomain` names the Service. A pod whose node
//! does not exist is left out (and the Service retried) unless the Service
//! publishes not-ready addresses, as upstream.
//!
//! Slices are named `<service>-<random>` (`generateName`), carry the
//! Service's labels plus `kubernetes.io/service-name`,
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`
//! and `service.kubernetes.io/headless` for headless Services, a controller
//! ownerReference to the Service (the garbage collector deletes them with
//! it), and `endpoints.kubernetes.io/last-change-trigger-time`. A Service
//! with no endpoints keeps one empty placeholder slice.
//!
//! Changes follow upstream's reconciler, which keeps writes few: endpoints
//! that did not change stay in their slice; slices that lost endpoints are
//! updated (or deleted when empty) and filled up with new endpoints, fullest
//! first; the rest go to an unchanged slice they fit in best, or to new
//! slices; a slice that would be deleted while another is created is
//! rewritten instead. Slices of another Service object of the same name
//! (an older uid) or of an address type the Service lost are deleted.
//!
//! Upstream tracks the `metadata.generation` of the slices it wrote, so it
//! neither acts on a stale cache (which would duplicate slices) nor resyncs
//! after its own writes. Tugboat's API server does not bump the generation
//! of EndpointSlices, so the tracker here records resourceVersions (store
//! revisions, compared as numbers) instead, with the same rules.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::endpoints::{
    HEADLESS_LABEL, LAST_CHANGE_TRIGGER_TIME, TriggerTimeTracker, cluster_ip, find_port, format_trigger_time, is_external_name, is_ipv6,
    is_service_ip_set, pod_hostname, pod_ips, pod_node_name, pod_ref, pods_for_service, publishes_not_ready, service_ports, service_selector,
    should_pod_be_in_endpoints, should_set_hostname,
};
use crate::informer::{Change, IndexedStore};
use crate::kit::Key;
use crate::pod_control::{EventRecorder, EventType, controller_ref, error_message, is_namespace_terminating, is_not_found, is_pod_ready, object_ref};
use crate::queue::{self, Backoff, Queue, Workers};

/// The `endpointslice.kubernetes.io/managed-by` value of this controller's slices.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// The label naming a slice's Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming the controller managing a slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// The node label an endpoint's zone comes from.
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
/// Upstream's `endpointSliceChangeMinSyncDelay`: a slice change is acted on
/// after this long, so that a burst of them makes one sync.
const SLICE_CHANGE_MIN_SYNC_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("EndpointSlice informer cache is out of date")]
    StaleCache,
    #[error("{0}")]
    Sync(String),
}

pub struct Controller {
    client: Client,
    services: Store<Service>,
    pods: IndexedStore<Pod>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    queue: Queue<Key>,
    max_endpoints_per_slice: usize,
    triggers: TriggerTimeTracker,
    tracker: SliceTracker,
    recorder: EventRecorder,
}

impl Controller {
    /// A controller over these stores (kept by the caller's informers), its
    /// queue and the workers side of it (for [`crate::kit::run_workers`]).
    pub fn new(
        client: Client,
        services: Store<Service>,
        pods: IndexedStore<Pod>,
        slices: Store<EndpointSlice>,
        nodes: Store<Node>,
        max_endpoints_per_slice: usize,
    ) -> (Arc<Controller>, Queue<Key>, Workers<Key>) {
        let (queue, workers) = queue::queue::<Key>(Backoff::CONTROLLER);
        let ctl = Controller {
            recorder: EventRecorder::new(client.clone(), "endpointslice-controller"),
            client,
            services,
            pods,
            slices,
            nodes,
            queue: queue.clone(),
            max_endpoints_per_slice: max_endpoints_per_slice.max(1),
            triggers: TriggerTimeTracker::default(),
            tracker: SliceTracker::default(),
        };
        (Arc::new(ctl), queue, workers)
    }

    /// Queues a Service (after a change of it or of its pods).
    pub fn queue_service(&self, key: Key) {
        self.queue.add(key);
    }

    fn queue_for_slice(&self, slice: &EndpointSlice) {
        match slice.labels().get(LABEL_SERVICE_NAME).filter(|n| !n.is_empty()) {
            Some(name) => self.queue.add_after(Key::new(slice.namespace().unwrap_or_default(), name.clone()), SLICE_CHANGE_MIN_SYNC_DELAY),
            None => tracing::debug!(slice = %slice.name_any(), "endpointslice without a {LABEL_SERVICE_NAME} label"),
        }
    }

    /// The slice handlers: a change this controller did not make itself
    /// (or a deletion it did not expect) syncs the slice's Service.
    pub fn on_slice(&self, change: &Change<EndpointSlice>) {
        match change {
            Change::Added(s) => {
                if is_managed(s) && self.tracker.should_sync(s) {
                    self.queue_for_slice(s);
                }
            }
            Change::Updated(old, new) => {
                // Users may relabel a slice: both Services then.
                if old.labels().get(LABEL_SERVICE_NAME) != new.labels().get(LABEL_SERVICE_NAME) {
                    self.queue_for_slice(new);
                    self.queue_for_slice(old);
                    return;
                }
                if is_managed(old) != is_managed(new) || (is_managed(new) && self.tracker.should_sync(new)) {
                    self.queue_for_slice(new);
                }
            }
            Change::Deleted(s) => {
                if is_managed(s) && self.tracker.has(s) && !self.tracker.handle_deletion(s) {
                    self.queue_for_slice(s);
                }
            }
        }
    }

    /// Upstream's `syncService`.
    pub async fn sync(&self, key: &Key) -> Result<Option<Duration>, Error> {
        let Some(svc) = self.services.get(&key.obj_ref()) else {
            // The garbage collector deletes the slices (owner references).
            self.triggers.delete_service(key);
            self.tracker.delete_service(key);
            return Ok(None);
        };
        if is_external_name(&svc) {
            return Ok(None);
        }
        let Some(selector) = service_selector(&svc) else { return Ok(None) };
        let pods = pods_for_service(&self.pods, &svc, selector);
        let mut slices: Vec<Arc<EndpointSlice>> = self
            .slices
            .state()
            .into_iter()
            .filter(|s| {
                let l = s.labels();
                s.metadata.namespace.as_deref() == Some(key.namespace.as_str())
                    && l.get(LABEL_SERVICE_NAME) == Some(&key.name)
                    && l.get(LABEL_MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME)
                    // Slices being deleted are as good as gone.
                    && s.metadata.deletion_timestamp.is_none()
            })
            .collect();
        slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        if self.tracker.stale(key, &slices) {
            return Err(Error::StaleCache);
        }
        // Computed on every sync, so that the tracker follows even no-op syncs.
        let trigger = self.triggers.compute(key, &svc, &pods);
        if let Err(e) = self.reconcile(&svc, &pods, slices, trigger).await {
            self.recorder.event(
                object_ref(&*svc),
                EventType::Warning,
                "FailedToUpdateEndpointSlices",
                format!("Error updating Endpoint Slices for Service {key}: {e}"),
            );
            return Err(Error::Sync(e));
        }
        Ok(None)
    }

    /// Upstream's `Reconciler.Reconcile`: per address type of the Service;
    /// slices of other address types are deleted.
    async fn reconcile(&self, svc: &Service, pods: &[Arc<Pod>], existing: Vec<Arc<EndpointSlice>>, trigger: Option<Timestamp>) -> Result<(), String> {
        let types = address_types(svc);
        let mut by_type: BTreeMap<String, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        let mut other_types = Vec::new();
        for s in existing {
            if types.contains(s.address_type.as_str()) {
                by_type.entry(s.address_type.clone()).or_default().push(s);
            } else {
                other_types.push(s);
            }
        }
        let mut errs = Vec::new();
        for t in &types {
            if let Err(e) = self.reconcile_by_address_type(svc, pods, by_type.remove(*t).unwrap_or_default(), trigger, t).await {
                errs.push(e);
            }
        }
        for s in other_types {
            if let Err(e) = self.delete_slice(s.as_ref()).await {
                errs.push(format!("error deleting {} EndpointSlice for Service {}: {e}", s.name_any(), Key::of(svc)));
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs.join("; ")) }
    }

    async fn reconcile_by_address_type(
        &self,
        svc: &Service,
        pods: &[Arc<Pod>],
        existing: Vec<Arc<EndpointSlice>>,
        trigger: Option<Timestamp>,
        address_type: &str,
    ) -> Result<(), String> {
        let key = Key::of(svc);
        let mut to_create: Vec<EndpointSlice> = Vec::new();
        let mut to_update: Vec<EndpointSlice> = Vec::new();
        let mut to_delete: Vec<Arc<EndpointSlice>> = Vec::new();
        let mut existing_by_ports: BTreeMap<PortsKey, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        for s in &existing {
            if owned_by(s, svc) {
                existing_by_ports.entry(ports_key(s.ports.as_deref().unwrap_or(&[]))).or_default().push(s.clone());
            } else {
                to_delete.push(s.clone());
            }
        }

        let publish = publishes_not_ready(svc);
        let mut desired: BTreeMap<PortsKey, (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>)> = BTreeMap::new();
        let mut errs = Vec::new();
        for pod in pods {
            if !should_pod_be_in_endpoints(pod, true) {
                continue;
            }
            let ports = endpoint_ports(svc, pod);
            let set = &mut desired.entry(ports_key(&ports)).or_insert_with(|| (ports, BTreeMap::new())).1;
            let node_name = pod_node_name(pod);
            let node = (!node_name.is_empty()).then(|| self.nodes.get(&ObjectRef::new(node_name))).flatten();
            if node.is_none() && !publish {
                // Retried later; meanwhile the slices go on without this pod.
                errs.push(format!("skipping Pod {} for Service {key}: Node {node_name} Not Found", pod.name_any()));
                continue;
            }
            let ep = pod_to_endpoint(pod, node.as_deref(), svc, address_type);
            if !ep.addresses.is_empty() {
                set.insert(endpoint_key(&ep), ep);
            }
        }

        for (pk, (ports, set)) in desired.iter_mut() {
            let existing = existing_by_ports.get(pk).map(Vec::as_slice).unwrap_or(&[]);
            let (c, u, d) = self.reconcile_by_port_mapping(svc, existing, std::mem::take(set), ports, address_type);
            to_create.extend(c);
            to_update.extend(u);
            to_delete.extend(d);
        }
        // Port sets no longer wanted.
        for (pk, slices) in existing_by_ports {
            if !desired.contains_key(&pk) {
                to_delete.extend(slices);
            }
        }
        // A Service without endpoints keeps one empty placeholder slice.
        if existing.len() == to_delete.len() && to_create.is_empty() {
            let placeholder = new_slice(svc, Vec::new(), address_type);
            if to_delete.len() == 1 && placeholder_equal(&to_delete[0], &placeholder) {
                to_delete.clear();
            } else {
                to_create.push(placeholder);
            }
        }
        if let Err(e) = self.finalize(svc, to_create, to_update, to_delete, trigger).await {
            errs.push(e);
        }
        if errs.is_empty() { Ok(()) } else { Err(errs.join("; ")) }
    }

    /// Upstream's `reconcileByPortMapping`: (to create, to update, to delete).
    fn reconcile_by_port_mapping(
        &self,
        svc: &Service,
        existing: &[Arc<EndpointSlice>],
        mut desired: BTreeMap<EndpointKey, Endpoint>,
        ports: &[EndpointPort],
        address_type: &str,
    ) -> (Vec<EndpointSlice>, Vec<EndpointSlice>, Vec<Arc<EndpointSlice>>) {
        let max = self.max_endpoints_per_slice;
        let mut by_name: BTreeMap<String, EndpointSlice> = BTreeMap::new();
        let mut unchanged: BTreeSet<String> = BTreeSet::new();
        let mut to_update: BTreeSet<String> = BTreeSet::new();
        let mut to_delete = Vec::new();

        // 1. Drop endpoints no longer wanted, refresh those that changed.
        for s in existing {
            let name = s.name_any();
            let mut kept = Vec::new();
            let mut changed = false;
            for ep in &s.endpoints {
                if let Some(want) = desired.remove(&endpoint_key(ep)) {
                    if !endpoints_equal_beyond_key(&want, ep) {
                        changed = true;
                    }
                    kept.push(want);
                }
            }
            let (labels, labels_changed) = slice_labels(s.metadata.labels.as_ref(), svc);
            if changed || kept.len() != s.endpoints.len() {
                if kept.is_empty() {
                    to_delete.push(s.clone());
                } else {
                    let mut copy = (**s).clone();
                    copy.endpoints = kept;
                    copy.metadata.labels = Some(labels);
                    by_name.insert(name.clone(), copy);
                    to_update.insert(name);
                }
            } else if labels_changed {
                let mut copy = (**s).clone();
                copy.metadata.labels = Some(labels);
                by_name.insert(name.clone(), copy);
                to_update.insert(name);
            } else {
                by_name.insert(name.clone(), (**s).clone());
                unchanged.insert(name);
            }
        }

        // 2. Fill the slices being updated anyway, fullest first.
        if !desired.is_empty() && !to_update.is_empty() {
            let mut names: Vec<&String> = to_update.iter().collect();
            names.sort_by_key(|n| std::cmp::Reverse(by_name[*n].endpoints.len()));
            for n in names {
                let s = by_name.get_mut(n).expect("a slice to update");
                while s.endpoints.len() < max
                    && let Some((_, ep)) = desired.pop_first()
                {
                    s.endpoints.push(ep);
                }
            }
        }

        // 3. The rest: into the unchanged slice they fit best, or new slices.
        let mut to_create = Vec::new();
        while !desired.is_empty() {
            let fill = if desired.len() < max {
                slice_to_fill(unchanged.iter().map(|n| (n.as_str(), by_name[n].endpoints.len())), desired.len(), max).map(str::to_string)
            } else {
                None
            };
            let mut slice = match &fill {
                Some(n) => by_name.remove(n).expect("an unchanged slice"),
                None => new_slice(svc, ports.to_vec(), address_type),
            };
            while slice.endpoints.len() < max
                && let Some((_, ep)) = desired.pop_first()
            {
                slice.endpoints.push(ep);
            }
            match fill {
                Some(n) => {
                    unchanged.remove(&n);
                    to_update.insert(n.clone());
                    by_name.insert(n, slice);
                }
                None => to_create.push(slice),
            }
        }
        let updates = to_update.iter().map(|n| by_name.remove(n).expect("a slice to update")).collect();
        (to_create, updates, to_delete)
    }

    /// Upstream's `finalize`: creates become rewrites of slices that would
    /// be deleted; no creates for a Service being deleted (the garbage
    /// collector is at work); then updates, then deletes.
    async fn finalize(
        &self,
        svc: &Service,
        mut to_create: Vec<EndpointSlice>,
        mut to_update: Vec<EndpointSlice>,
        mut to_delete: Vec<Arc<EndpointSlice>>,
        trigger: Option<Timestamp>,
    ) -> Result<(), String> {
        let key = Key::of(svc);
        let mut i = 0;
        while i < to_delete.len() && !to_create.is_empty() {
            let old = &to_delete[i];
            let last = to_create.last().expect("a slice to create");
            // Only our own slices of the same (immutable) address type.
            if old.address_type == last.address_type && owned_by(old, svc) {
                let mut s = to_create.pop().expect("a slice to create");
                s.metadata.name = old.metadata.name.clone();
                s.metadata.resource_version = old.metadata.resource_version.clone();
                to_update.push(s);
                to_delete.remove(i);
            } else {
                i += 1;
            }
        }
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.namespace);
        let pp = PostParams::default();
        if svc.metadata.deletion_timestamp.is_none() {
            for mut s in to_create {
                set_trigger_time(&mut s, trigger);
                match api.create(&pp, &s).await {
                    Ok(created) => {
                        tracing::debug!(service = %key, slice = %created.name_any(), endpoints = created.endpoints.len(), "created endpointslice");
                        self.tracker.update(&created);
                    }
                    // Creates keep failing in a namespace being deleted: drop the key.
                    Err(e) if is_namespace_terminating(&e) => return Ok(()),
                    Err(e) => return Err(format!("failed to create EndpointSlice for Service {key}: {}", error_message(&e))),
                }
            }
        }
        for mut s in to_update {
            set_trigger_time(&mut s, trigger);
            let name = s.name_any();
            match api.replace(&name, &pp, &s).await {
                Ok(updated) => {
                    tracing::debug!(service = %key, slice = %name, endpoints = updated.endpoints.len(), "updated endpointslice");
                    self.tracker.update(&updated);
                }
                Err(e) => return Err(format!("failed to update {name} EndpointSlice for Service {key}: {}", error_message(&e))),
            }
        }
        for s in to_delete {
            self.delete_slice(s.as_ref()).await.map_err(|e| format!("failed to delete {} EndpointSlice for Service {key}: {e}", s.name_any()))?;
        }
        Ok(())
    }

    /// Deletes a slice (already gone is fine) and expects its deletion.
    async fn delete_slice(&self, s: &EndpointSlice) -> Result<(), String> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &s.namespace().unwrap_or_default());
        match api.delete(&s.name_any(), &DeleteParams::default()).await {
            Ok(_) => {
                tracing::debug!(slice = %s.name_any(), "deleted endpointslice");
                self.tracker.expect_deletion(s);
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(error_message(&e)),
        }
    }
}

fn is_managed(s: &EndpointSlice) -> bool {
    s.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME)
}

/// Upstream's `getAddressTypesForService`: from the Service's IP families;
/// without them, the cluster IP's family, or both for a headless Service.
pub fn address_types(svc: &Service) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    for f in svc.spec.as_ref().and_then(|s| s.ip_families.as_deref()).unwrap_or(&[]) {
        match f.as_str() {
            "IPv4" => out.insert("IPv4"),
            "IPv6" => out.insert("IPv6"),
            _ => false,
        };
    }
    if !out.is_empty() {
        return out;
    }
    if is_service_ip_set(svc) {
        out.insert(if is_ipv6(cluster_ip(svc)) { "IPv6" } else { "IPv4" });
    } else {
        out.insert("IPv4");
        out.insert("IPv6");
    }
    out
}

/// Upstream's `getEndpointPorts`: one per service port the pod serves
/// (headless Services may have none).
pub fn endpoint_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    service_ports(svc)
        .iter()
        .filter_map(|sp| {
            let port = find_port(pod, sp)?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// The pod's addresses of an address type, normalized as upstream's
/// `ParseIPSloppy(...).String()` does.
fn endpoint_addresses(pod: &Pod, address_type: &str) -> Vec<String> {
    pod_ips(pod)
        .into_iter()
        .filter_map(|ip| {
            let (v6, text) = match ip.parse::<IpAddr>() {
                Ok(a) => (a.is_ipv6(), a.to_string()),
                Err(_) => (false, ip),
            };
            ((v6 && address_type == "IPv6") || (!v6 && address_type == "IPv4")).then_some(text)
        })
        .collect()
}

/// Upstream's `podToEndpoint`.
pub fn pod_to_endpoint(pod: &Pod, node: Option<&Node>, svc: &Service, address_type: &str) -> Endpoint {
    let serving = is_pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    // Never ready while terminating, unless the Service publishes not-ready pods.
    let ready = publishes_not_ready(svc) || (serving && !terminating);
    let node_name = pod_node_name(pod);
    Endpoint {
        addresses: endpoint_addresses(pod, address_type),
        conditions: Some(EndpointConditions { ready: Some(ready), serving: Some(serving), terminating: Some(terminating) }),
        target_ref: Some(pod_ref(pod)),
        node_name: (!node_name.is_empty()).then(|| node_name.to_string()),
        zone: node.and_then(|n| n.labels().get(LABEL_TOPOLOGY_ZONE).filter(|z| !z.is_empty()).cloned()),
        hostname: if should_set_hostname(pod, svc) { pod_hostname(pod) } else { None },
        ..Default::default()
    }
}

/// A slice's port set, order-independent (upstream's `PortMapKey`).
type PortsKey = Vec<(String, i32, String, String)>;

fn ports_key(ports: &[EndpointPort]) -> PortsKey {
    let mut k: PortsKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    k.sort();
    k
}

/// What identifies an endpoint across syncs (upstream's `hashEndpoint`):
/// its addresses, hostname and pod.
type EndpointKey = (Vec<String>, String, String, String);

fn endpoint_key(ep: &Endpoint) -> EndpointKey {
    let mut addresses = ep.addresses.clone();
    addresses.sort();
    let r = ep.target_ref.as_ref();
    (
        addresses,
        ep.hostname.clone().unwrap_or_default(),
        r.and_then(|r| r.namespace.clone()).unwrap_or_default(),
        r.and_then(|r| r.name.clone()).unwrap_or_default(),
    )
}

/// Upstream's `EndpointsEqualBeyondHash`: node, zone, conditions and pod
/// reference (ignoring its resourceVersion).
fn endpoints_equal_beyond_key(a: &Endpoint, b: &Endpoint) -> bool {
    let conditions = |e: &Endpoint| e.conditions.as_ref().map(|c| (c.ready, c.serving, c.terminating)).unwrap_or_default();
    let target = |e: &Endpoint| {
        e.target_ref.clone().map(|mut r| {
            r.resource_version = None;
            r
        })
    };
    a.node_name == b.node_name && a.zone == b.zone && conditions(a) == conditions(b) && target(a) == target(b)
}

/// Upstream's `getSliceToFill`: the slice closest to full once `n` more
/// endpoints are added, among those they fit in.
fn slice_to_fill<'a>(slices: impl Iterator<Item = (&'a str, usize)>, n: usize, max: usize) -> Option<&'a str> {
    let mut best: Option<(&str, usize)> = None;
    for (name, len) in slices {
        if n + len > max {
            continue;
        }
        let diff = max - (n + len);
        if best.is_none_or(|(_, d)| diff < d) {
            best = Some((name, diff));
            if diff == 0 {
                break;
            }
        }
    }
    best.map(|(name, _)| name)
}

fn is_reserved_label(k: &str) -> bool {
    k == LABEL_SERVICE_NAME || k == LABEL_MANAGED_BY || k == HEADLESS_LABEL
}

/// Upstream's `setEndpointSliceLabels`: the Service's labels (but the
/// reserved ones) plus the reserved ones; and whether the Service's labels
/// differ from the slice's.
fn slice_labels(current: Option<&BTreeMap<String, String>>, svc: &Service) -> (BTreeMap<String, String>, bool) {
    let mine: BTreeMap<String, String> =
        current.into_iter().flatten().filter(|(k, _)| !is_reserved_label(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut labels: BTreeMap<String, String> =
        svc.labels().iter().filter(|(k, _)| !is_reserved_label(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let changed = mine != labels;
    if !is_service_ip_set(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(LABEL_SERVICE_NAME.into(), svc.name_any());
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    (labels, changed)
}

/// Upstream's `newEndpointSlice`.
fn new_slice(svc: &Service, ports: Vec<EndpointPort>, address_type: &str) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(slice_prefix(&svc.name_any())),
            namespace: svc.namespace(),
            owner_references: Some(vec![controller_ref(svc)]),
            labels: Some(slice_labels(None, svc).0),
            ..Default::default()
        },
        address_type: address_type.to_string(),
        endpoints: Vec::new(),
        ports: (!ports.is_empty()).then_some(ports),
    }
}

/// `<service>-`, unless that is too long to be a name prefix.
fn slice_prefix(service: &str) -> String {
    let prefix = format!("{service}-");
    if prefix.len() <= 253 { prefix } else { service.to_string() }
}

/// Upstream's `ownedBy`.
fn owned_by(s: &EndpointSlice, svc: &Service) -> bool {
    let uid = svc.metadata.uid.as_deref().unwrap_or_default();
    s.owner_references().iter().any(|o| o.uid == uid && o.kind == "Service" && o.api_version == "v1")
}

/// Upstream's `placeholderSliceCompare`: namespace, owner references,
/// labels, address type, and no ports or endpoints.
fn placeholder_equal(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    let owners = |s: &EndpointSlice| -> Vec<OwnerReference> { s.metadata.owner_references.clone().unwrap_or_default() };
    a.metadata.namespace == b.metadata.namespace
        && owners(a) == owners(b)
        && a.labels() == b.labels()
        && a.address_type == b.address_type
        && a.endpoints.is_empty()
        && b.endpoints.is_empty()
        && a.ports.as_ref().is_none_or(Vec::is_empty)
        && b.ports.as_ref().is_none_or(Vec::is_empty)
}

/// Upstream's `addTriggerTimeAnnotation`.
fn set_trigger_time(s: &mut EndpointSlice, trigger: Option<Timestamp>) {
    let annotations = s.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match trigger {
        Some(t) => annotations.insert(LAST_CHANGE_TRIGGER_TIME.into(), format_trigger_time(t)),
        None => annotations.remove(LAST_CHANGE_TRIGGER_TIME),
    };
    if annotations.is_empty() {
        s.metadata.annotations = None;
    }
}

// ---------------------------------------------------------------------------
// Upstream's `EndpointSliceTracker`, by resourceVersion.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Written by this controller at this version (unknown if not numeric).
    Written(Option<u64>),
    Deletion,
}

/// What this controller last did to each of its slices, per Service.
#[derive(Default)]
struct SliceTracker {
    by_service: Mutex<HashMap<Key, HashMap<String, Expect>>>,
}

fn service_key_of(s: &EndpointSlice) -> Key {
    Key::new(s.namespace().unwrap_or_default(), s.labels().get(LABEL_SERVICE_NAME).cloned().unwrap_or_default())
}

fn version(s: &EndpointSlice) -> Option<u64> {
    s.metadata.resource_version.as_deref()?.parse().ok()
}

fn uid(s: &EndpointSlice) -> String {
    s.metadata.uid.clone().unwrap_or_default()
}

impl SliceTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, HashMap<String, Expect>>> {
        self.by_service.lock().expect("endpointslice tracker lock")
    }

    fn has(&self, s: &EndpointSlice) -> bool {
        self.lock().get(&service_key_of(s)).is_some_and(|m| m.contains_key(&uid(s)))
    }

    /// Whether a slice event is news: not a slice this controller just wrote.
    fn should_sync(&self, s: &EndpointSlice) -> bool {
        match self.lock().get(&service_key_of(s)).and_then(|m| m.get(&uid(s)).copied()) {
            Some(Expect::Written(Some(v))) => version(s).is_none_or(|r| r > v),
            _ => true,
        }
    }

    /// Whether the cache is behind this controller's own writes: a slice
    /// older than written, still there though deleted, or missing though
    /// written.
    fn stale(&self, key: &Key, slices: &[Arc<EndpointSlice>]) -> bool {
        let by_service = self.lock();
        let Some(m) = by_service.get(key) else { return false };
        let mut present = HashSet::new();
        for s in slices {
            let u = uid(s);
            match m.get(&u) {
                Some(Expect::Deletion) => return true,
                Some(Expect::Written(Some(v))) if version(s).is_some_and(|r| r < *v) => return true,
                _ => {}
            }
            present.insert(u);
        }
        m.iter().any(|(u, e)| *e != Expect::Deletion && !present.contains(u))
    }

    fn update(&self, s: &EndpointSlice) {
        self.lock().entry(service_key_of(s)).or_default().insert(uid(s), Expect::Written(version(s)));
    }

    fn expect_deletion(&self, s: &EndpointSlice) {
        self.lock().entry(service_key_of(s)).or_default().insert(uid(s), Expect::Deletion);
    }

    /// Forgets a deleted slice; `false` if its deletion was not expected.
    fn handle_deletion(&self, s: &EndpointSlice) -> bool {
        let mut by_service = self.lock();
        if let Some(m) = by_service.get_mut(&service_key_of(s))
            && let Some(Expect::Written(_)) = m.remove(&uid(s))
        {
            return false;
        }
        true
    }

    fn delete_service(&self, key: &Key) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc() -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"app": "web", LABEL_SERVICE_NAME: "x"}},
            "spec": {"clusterIP": "10.0.0.1", "ipFamilies": ["IPv4"], "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}))
        .unwrap()
    }

    fn endpoint(name: &str, ip: &str) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions { ready: Some(true), serving: Some(true), terminating: Some(false) }),
            target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some("ns".into()),
                name: Some(name.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn labels_copy_the_service_but_reserved_ones() {
        let (labels, changed) = slice_labels(None, &svc());
        assert!(changed);
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(labels.get(LABEL_SERVICE_NAME).map(String::as_str), Some("web"), "the reserved label is the controller's");
        assert_eq!(labels.get(LABEL_MANAGED_BY).map(String::as_str), Some(CONTROLLER_NAME));
        assert!(!labels.contains_key(HEADLESS_LABEL));
        let (_, changed) = slice_labels(Some(&labels), &svc());
        assert!(!changed);
    }

    #[test]
    fn slice_to_fill_picks_the_closest_fit() {
        let slices = [("a", 90), ("b", 50), ("c", 97)];
        assert_eq!(slice_to_fill(slices.iter().copied(), 5, 100), Some("a"));
        assert_eq!(slice_to_fill(slices.iter().copied(), 3, 100), Some("c"));
        assert_eq!(slice_to_fill(slices.iter().copied(), 60, 100), None);
    }

    #[test]
    fn endpoint_keys_ignore_conditions_and_order() {
        let a = endpoint("p", "10.0.0.1");
        let mut b = a.clone();
        b.conditions.as_mut().unwrap().ready = Some(false);
        assert_eq!(endpoint_key(&a), endpoint_key(&b));
        assert!(!endpoints_equal_beyond_key(&a, &b));
        let mut c = a.clone();
        c.target_ref.as_mut().unwrap().resource_version = Some("12".into());
        assert!(endpoints_equal_beyond_key(&a, &c), "the pod's resourceVersion does not count");
        let p = |v: serde_json::Value| serde_json::from_value::<EndpointPort>(v).unwrap();
        assert_eq!(
            ports_key(&[p(json!({"name": "a", "port": 1})), p(json!({"name": "b", "port": 2}))]),
            ports_key(&[p(json!({"name": "b", "port": 2})), p(json!({"name": "a", "port": 1}))])
        );
    }

    #[test]
    fn address_types_from_families_or_cluster_ip() {
        assert_eq!(address_types(&svc()).into_iter().collect::<Vec<_>>(), ["IPv4"]);
        let headless: Service = serde_json::from_value(json!({"spec": {"clusterIP": "None"}})).unwrap();
        assert_eq!(address_types(&headless).into_iter().collect::<Vec<_>>(), ["IPv4", "IPv6"]);
        let v6: Service = serde_json::from_value(json!({"spec": {"clusterIP": "fd00::1"}})).unwrap();
        assert_eq!(address_types(&v6).into_iter().collect::<Vec<_>>(), ["IPv6"]);
    }

    #[test]
    fn tracker_detects_stale_caches() {
        let t = SliceTracker::default();
        let key = Key::new("ns", "web");
        let slice = |uid: &str, rv: &str| -> Arc<EndpointSlice> {
            Arc::new(
                serde_json::from_value(json!({"metadata": {"name": uid, "namespace": "ns", "uid": uid, "resourceVersion": rv,
                "labels": {LABEL_SERVICE_NAME: "web", LABEL_MANAGED_BY: CONTROLLER_NAME}}, "addressType": "IPv4", "endpoints": []}))
                .unwrap(),
            )
        };
        assert!(!t.stale(&key, &[]));
        t.update(&slice("a", "10"));
        assert!(t.stale(&key, &[]), "written but not in the cache yet");
        assert!(t.stale(&key, &[slice("a", "9")]), "an older version in the cache");
        assert!(!t.stale(&key, &[slice("a", "10")]));
        assert!(!t.should_sync(&slice("a", "10")), "our own write");
        assert!(t.should_sync(&slice("a", "11")), "someone else's");
        t.expect_deletion(&slice("a", "10"));
        assert!(t.stale(&key, &[slice("a", "10")]), "deleted but still in the cache");
        assert!(!t.stale(&key, &[]));
        assert!(t.handle_deletion(&slice("a", "10")), "an expected deletion");
        t.update(&slice("b", "12"));
        assert!(!t.handle_deletion(&slice("b", "12")), "an unexpected deletion");
    }

    #[test]
    fn placeholder_matches_a_fresh_one() {
        let s = svc();
        let a = new_slice(&s, Vec::new(), "IPv4");
        let mut b = a.clone();
        b.metadata.name = Some("web-abcde".into());
        assert!(placeholder_equal(&b, &a));
        b.endpoints.push(endpoint("p", "10.0.0.1"));
        assert!(!placeholder_equal(&b, &a));
    }
}
