//! Watches (kube-runtime watchers: one LIST, then WATCH, re-listing only
//! when the watch is lost) on Nodes, Pods, Namespaces, and the
//! PersistentVolumeClaims and PersistentVolumes VolumeBinding reads, turned into cache
//! updates and queue moves, as upstream's `eventhandlers.go`.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use tokio::sync::oneshot;
use tug_client::LeanPod;

use crate::framework::{action, ClusterEvent, EventResource, EVENT_ASSIGNED_POD_ADD, EVENT_ASSIGNED_POD_DELETE, EVENT_NODE_ADD};
use crate::helpers;
use crate::resources;
use crate::scheduler::Shared;

/// A pod the cache accounts for: bound and not finished.
fn in_cache(pod: &Pod) -> bool {
    helpers::is_assigned(pod) && !helpers::is_terminal(pod)
}

impl Shared {
    fn responsible_for(&self, pod: &Pod) -> bool {
        helpers::scheduler_name(pod) == self.config.scheduler_name
    }

    pub(crate) fn on_pod_apply(&self, mut pod: Pod) {
        helpers::trim_for_scheduling(&mut pod);
        let pod = Arc::new(pod);
        let key = helpers::pod_key(&pod);
        let old = self.pods.lock().unwrap_or_else(|e| e.into_inner()).insert(key, pod.clone());
        match old {
            Some(o) if helpers::pod_uid(&o) != helpers::pod_uid(&pod) => {
                self.handle_pod_removed(&o);
                self.handle_pod(None, pod);
            }
            o => self.handle_pod(o, pod),
        }
    }

    pub(crate) fn on_pod_delete(&self, pod: &Pod) {
        let key = helpers::pod_key(pod);
        {
            let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
            if pods.get(&key).map(|p| helpers::pod_uid(p) == helpers::pod_uid(pod)).unwrap_or(false) {
                pods.remove(&key);
            }
        }
        self.handle_pod_removed(pod);
    }

    fn handle_pod_removed(&self, pod: &Pod) {
        let uid = helpers::pod_uid(pod);
        self.queue.delete(&uid);
        let removed = self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove_pod(&uid);
        if removed.is_some() {
            self.queue.move_all_to_active_or_backoff(EVENT_ASSIGNED_POD_DELETE);
        }
    }

    fn handle_pod(&self, old: Option<Arc<Pod>>, new: Arc<Pod>) {
        let uid = helpers::pod_uid(&new);
        let old_in_cache = old.as_deref().map(in_cache).unwrap_or(false);
        if in_cache(&new) {
            self.queue.delete(&uid);
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let known = cache.get_pod(&uid).is_some() && !cache.is_assumed(&uid);
            cache.add_pod(new.clone());
            drop(cache);
            if old_in_cache || known {
                if let Some(old) = old {
                    let mut flags = 0;
                    if old.metadata.labels != new.metadata.labels {
                        flags |= action::UPDATE_POD_LABEL;
                    }
                    let (o, n) = (resources::pod_requests(&old, false), resources::pod_requests(&new, false));
                    if n.milli_cpu < o.milli_cpu || n.memory < o.memory || n.ephemeral_storage < o.ephemeral_storage {
                        flags |= action::UPDATE_POD_SCALE_DOWN;
                    }
                    if flags != 0 {
                        self.queue.move_all_to_active_or_backoff(ClusterEvent::new(EventResource::AssignedPod, flags, "AssignedPodUpdate"));
                    }
                }
            } else {
                self.queue.move_all_to_active_or_backoff(EVENT_ASSIGNED_POD_ADD);
            }
            return;
        }
        if old_in_cache {
            // Finished (Succeeded/Failed): its resources are free.
            if self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove_pod(&uid).is_some() {
                self.queue.move_all_to_active_or_backoff(EVENT_ASSIGNED_POD_DELETE);
            }
        }
        if helpers::is_assigned(&new) {
            self.queue.delete(&uid);
            return;
        }
        if self.responsible_for(&new) && !helpers::is_terminating(&new) && !helpers::is_terminal(&new) {
            if self.cache.lock().unwrap_or_else(|e| e.into_inner()).is_assumed(&uid) {
                // Being bound by us: the binding's update will follow.
                return;
            }
            match old {
                Some(o) if !helpers::is_assigned(&o) && self.responsible_for(&o) => self.queue.update(Some(&o), new),
                _ => self.queue.add(new),
            }
        } else {
            self.queue.delete(&uid);
        }
    }

    pub(crate) fn on_node_apply(&self, node: Node) {
        let node = Arc::new(node);
        let old = self.cache.lock().unwrap_or_else(|e| e.into_inner()).add_or_update_node(node.clone());
        let event = match old {
            None => EVENT_NODE_ADD,
            Some(o) => {
                let flags = node_update_flags(&o, &node);
                if flags == 0 {
                    return;
                }
                ClusterEvent::new(EventResource::Node, flags, "NodeUpdate")
            }
        };
        self.queue.move_all_to_active_or_backoff(event);
    }

    pub(crate) fn on_node_delete(&self, name: &str) {
        if self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove_node(name).is_some() {
            self.queue.move_all_to_active_or_backoff(ClusterEvent::new(EventResource::Node, action::DELETE, "NodeDelete"));
        }
    }
}

/// Which scheduling-relevant parts of a node changed.
pub fn node_update_flags(old: &Node, new: &Node) -> u32 {
    let mut flags = 0;
    let alloc = |n: &Node| n.status.as_ref().and_then(|s| s.allocatable.clone());
    if alloc(old) != alloc(new) {
        flags |= action::UPDATE_NODE_ALLOCATABLE;
    }
    if old.metadata.labels != new.metadata.labels {
        flags |= action::UPDATE_NODE_LABEL;
    }
    if helpers::node_taints(old) != helpers::node_taints(new) {
        flags |= action::UPDATE_NODE_TAINT;
    }
    if helpers::node_unschedulable(old) != helpers::node_unschedulable(new) {
        flags |= action::UPDATE_NODE_UNSCHEDULABLE;
    }
    let conds = |n: &Node| -> Vec<(String, String)> {
        n.status.as_ref().and_then(|s| s.conditions.as_ref()).map(|cs| cs.iter().map(|c| (c.type_.clone(), c.status.clone())).collect()).unwrap_or_default()
    };
    if conds(old) != conds(new) {
        flags |= action::UPDATE_NODE_CONDITION;
    }
    flags
}

/// Feeds one watcher's events to `apply`/`delete`; after a (re-)list,
/// objects that were not listed are deleted. Signals `synced` after the
/// first complete list.
async fn drive<K, A, D, R>(api: Api<K>, mut apply: A, mut delete: D, mut known: R, synced: oneshot::Sender<()>, what: &'static str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    A: FnMut(K),
    D: FnMut(K),
    R: FnMut() -> Vec<(String, Option<K>)>,
{
    let key_of = |o: &K| match o.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", o.name_any()),
        None => o.name_any(),
    };
    let mut synced = Some(synced);
    let mut seen: HashSet<String> = HashSet::new();
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitApply(o)) => {
                seen.insert(key_of(&o));
                apply(o);
            }
            Ok(Event::InitDone) => {
                for (key, obj) in known() {
                    if !seen.contains(&key)
                        && let Some(o) = obj {
                            delete(o);
                        }
                }
                seen.clear();
                if let Some(s) = synced.take() {
                    let _ = s.send(());
                }
                tracing::debug!(what, "watch cache synced");
            }
            Ok(Event::Apply(o)) => apply(o),
            Ok(Event::Delete(o)) => delete(o),
            Err(e) => tracing::warn!(what, error = %e, "watch failed; retrying"),
        }
    }
}

pub(crate) async fn watch_nodes(shared: Arc<Shared>, synced: oneshot::Sender<()>) {
    let api: Api<Node> = Api::all(shared.client.clone());
    let (s1, s2, s3) = (shared.clone(), shared.clone(), shared.clone());
    drive(
        api,
        move |mut n: Node| {
            n.metadata.managed_fields = None;
            s1.on_node_apply(n)
        },
        move |n: Node| s2.on_node_delete(&n.name_any()),
        move || {
            let names = s3.cache.lock().unwrap_or_else(|e| e.into_inner()).node_names();
            names
                .into_iter()
                .map(|n| {
                    let obj = Node { metadata: kube::api::ObjectMeta { name: Some(n.clone()), ..Default::default() }, ..Default::default() };
                    (n, Some(obj))
                })
                .collect()
        },
        synced,
        "nodes",
    )
    .await
}

pub(crate) async fn watch_pods(shared: Arc<Shared>, synced: oneshot::Sender<()>) {
    // Decoded without managedFields (upstream's informer drops them after
    // decoding): the scheduler reads none of them.
    let api: Api<LeanPod> = Api::all(shared.client.clone());
    let (s1, s2, s3) = (shared.clone(), shared.clone(), shared.clone());
    drive(
        api,
        move |p: LeanPod| s1.on_pod_apply(p.into_inner()),
        move |p: LeanPod| s2.on_pod_delete(&p.0),
        move || {
            let pods = s3.pods.lock().unwrap_or_else(|e| e.into_inner());
            pods.iter().map(|(k, p)| (k.clone(), Some(LeanPod((**p).clone())))).collect()
        },
        synced,
        "pods",
    )
    .await
}

pub(crate) async fn watch_namespaces(shared: Arc<Shared>, synced: oneshot::Sender<()>) {
    let api: Api<Namespace> = Api::all(shared.client.clone());
    let (s1, s2, s3) = (shared.clone(), shared.clone(), shared.clone());
    drive(
        api,
        move |n: Namespace| {
            let labels = n.metadata.labels.clone().unwrap_or_default();
            s1.cache.lock().unwrap_or_else(|e| e.into_inner()).set_namespace(&n.name_any(), labels)
        },
        move |n: Namespace| s2.cache.lock().unwrap_or_else(|e| e.into_inner()).remove_namespace(&n.name_any()),
        move || {
            let names = s3.cache.lock().unwrap_or_else(|e| e.into_inner()).namespace_names();
            names
                .into_iter()
                .map(|n| {
                    let obj = Namespace { metadata: kube::api::ObjectMeta { name: Some(n.clone()), ..Default::default() }, ..Default::default() };
                    (n, Some(obj))
                })
                .collect()
        },
        synced,
        "namespaces",
    )
    .await
}

pub(crate) async fn watch_claims(shared: Arc<Shared>, synced: oneshot::Sender<()>) {
    use crate::plugins::volume_binding::EVENT_PVC_CHANGE;
    let api: Api<PersistentVolumeClaim> = Api::all(shared.client.clone());
    let (s1, s2, s3) = (shared.clone(), shared.clone(), shared.clone());
    drive(
        api,
        move |mut c: PersistentVolumeClaim| {
            c.metadata.managed_fields = None;
            s1.volumes.set_claim(c);
            s1.queue.move_all_to_active_or_backoff(EVENT_PVC_CHANGE);
        },
        move |c: PersistentVolumeClaim| s2.volumes.remove_claim(&format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any())),
        move || {
            s3.volumes
                .claim_keys()
                .into_iter()
                .map(|k| {
                    let (ns, name) = k.split_once('/').unwrap_or(("", k.as_str()));
                    let obj = PersistentVolumeClaim {
                        metadata: kube::api::ObjectMeta { name: Some(name.to_string()), namespace: Some(ns.to_string()), ..Default::default() },
                        ..Default::default()
                    };
                    (k.clone(), Some(obj))
                })
                .collect()
        },
        synced,
        "persistentvolumeclaims",
    )
    .await
}

pub(crate) async fn watch_volumes(shared: Arc<Shared>, synced: oneshot::Sender<()>) {
    use crate::plugins::volume_binding::EVENT_PV_CHANGE;
    let api: Api<PersistentVolume> = Api::all(shared.client.clone());
    let (s1, s2, s3) = (shared.clone(), shared.clone(), shared.clone());
    drive(
        api,
        move |mut v: PersistentVolume| {
            v.metadata.managed_fields = None;
            s1.volumes.set_volume(v);
            s1.queue.move_all_to_active_or_backoff(EVENT_PV_CHANGE);
        },
        move |v: PersistentVolume| s2.volumes.remove_volume(&v.name_any()),
        move || {
            s3.volumes
                .volume_names()
                .into_iter()
                .map(|n| {
                    let obj = PersistentVolume { metadata: kube::api::ObjectMeta { name: Some(n.clone()), ..Default::default() }, ..Default::default() };
                    (n, Some(obj))
                })
                .collect()
        },
        synced,
        "persistentvolumes",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::NodeBuilder;

    #[test]
    fn node_update_flags_ignore_heartbeats() {
        let base = NodeBuilder::new("n").build();
        let mut heartbeat = base.clone();
        heartbeat.metadata.resource_version = Some("42".into());
        assert_eq!(node_update_flags(&base, &heartbeat), 0);
        let relabeled = NodeBuilder::new("n").labels(&[("zone", "a")]).build();
        assert_eq!(node_update_flags(&base, &relabeled), action::UPDATE_NODE_LABEL);
        let tainted = NodeBuilder::new("n").taint("k", "v", "NoSchedule").build();
        assert_eq!(node_update_flags(&base, &tainted), action::UPDATE_NODE_TAINT);
        let cordoned = NodeBuilder::new("n").unschedulable().build();
        assert_eq!(node_update_flags(&base, &cordoned), action::UPDATE_NODE_UNSCHEDULABLE);
        let bigger = NodeBuilder::new("n").allocatable(&[("cpu", "8")]).build();
        assert_eq!(node_update_flags(&base, &bigger), action::UPDATE_NODE_ALLOCATABLE);
    }
}
