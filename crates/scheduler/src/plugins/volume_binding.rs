//! VolumeBinding, the part of upstream's plugin that statically provisioned
//! volumes need: a pod's `persistentVolumeClaim` volumes must name claims
//! that exist and are bound (StorageClasses are not served, so every claim
//! binds immediately: there is no `WaitForFirstConsumer` binding for the
//! scheduler to do), and a bound PersistentVolume's `spec.nodeAffinity`
//! (local volumes) restricts the pod to the nodes it selects.
//!
//! The claims and volumes come from the scheduler's own PVC and PV watches
//! ([`VolumeListers`], filled by the informers), as upstream's listers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim};

use crate::framework::{action, ClusterEvent, CycleState, EventResource, FilterPlugin, NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult, Snapshot, Status};
use crate::helpers;

pub const NAME: &str = "VolumeBinding";
pub const ERR_REASON_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
pub const ERR_REASON_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const ERR_REASON_PV_NOT_EXIST: &str = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
pub const ERR_REASON_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";

const PRE_FILTER_KEY: &str = "PreFilterVolumeBinding";

/// The claims (by `namespace/name`) and volumes (by name) the scheduler
/// has seen; shared between its watches and the plugin.
#[derive(Debug, Default)]
pub struct VolumeListers {
    claims: RwLock<HashMap<String, Arc<PersistentVolumeClaim>>>,
    volumes: RwLock<HashMap<String, Arc<PersistentVolume>>>,
}

impl VolumeListers {
    pub fn set_claim(&self, pvc: PersistentVolumeClaim) {
        let key = format!("{}/{}", pvc.metadata.namespace.as_deref().unwrap_or(""), pvc.metadata.name.as_deref().unwrap_or(""));
        self.claims.write().unwrap_or_else(|e| e.into_inner()).insert(key, Arc::new(pvc));
    }
    pub fn remove_claim(&self, key: &str) {
        self.claims.write().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
    pub fn claim_keys(&self) -> Vec<String> {
        self.claims.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }
    pub fn claim(&self, ns: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims.read().unwrap_or_else(|e| e.into_inner()).get(&format!("{ns}/{name}")).cloned()
    }
    pub fn set_volume(&self, pv: PersistentVolume) {
        let key = pv.metadata.name.clone().unwrap_or_default();
        self.volumes.write().unwrap_or_else(|e| e.into_inner()).insert(key, Arc::new(pv));
    }
    pub fn remove_volume(&self, name: &str) {
        self.volumes.write().unwrap_or_else(|e| e.into_inner()).remove(name);
    }
    pub fn volume_names(&self) -> Vec<String> {
        self.volumes.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }
    pub fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.volumes.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }
}

/// What Filter checks: the required node affinity of each bound volume.
#[derive(Clone, Debug, Default)]
struct PreFilterState {
    affinities: Vec<Vec<NodeSelectorTerm>>,
}

#[derive(Debug, Default)]
pub struct VolumeBinding {
    pub listers: Arc<VolumeListers>,
}

impl VolumeBinding {
    pub fn new(listers: Arc<VolumeListers>) -> VolumeBinding {
        VolumeBinding { listers }
    }
}

pub const EVENT_PVC_CHANGE: ClusterEvent = ClusterEvent::new(EventResource::PersistentVolumeClaim, action::ADD | action::UPDATE, "PersistentVolumeClaimChange");
pub const EVENT_PV_CHANGE: ClusterEvent = ClusterEvent::new(EventResource::PersistentVolume, action::ADD | action::UPDATE, "PersistentVolumeChange");

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            EVENT_PVC_CHANGE,
            EVENT_PV_CHANGE,
            ClusterEvent::new(EventResource::Node, action::ADD | action::UPDATE_NODE_LABEL, "Node"),
        ]
    }
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, _snapshot: &Snapshot) -> (Option<PreFilterResult>, Status) {
        let ns = pod.pod.metadata.namespace.as_deref().unwrap_or("default");
        let claims: Vec<&str> = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.as_str()))
            .collect();
        if claims.is_empty() {
            return (None, Status::skip());
        }
        let mut st = PreFilterState::default();
        let mut unbound = false;
        for name in claims {
            let Some(pvc) = self.listers.claim(ns, name) else {
                return (None, Status::unresolvable(format!("persistentvolumeclaim \"{name}\" not found")));
            };
            if pvc.metadata.deletion_timestamp.is_some() {
                return (None, Status::unresolvable(format!("persistentvolumeclaim \"{name}\" is being deleted")));
            }
            let pv_name = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()).unwrap_or("");
            let bound = !pv_name.is_empty() && pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            if !bound {
                unbound = true;
                continue;
            }
            let Some(pv) = self.listers.volume(pv_name) else {
                return (None, Status::unresolvable(ERR_REASON_PV_NOT_EXIST));
            };
            if let Some(terms) = pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref()).map(|r| r.node_selector_terms.clone()) {
                st.affinities.push(terms);
            }
        }
        if unbound {
            // Immediate binding is the controller's job: wait for it.
            return (None, Status::unresolvable(ERR_REASON_UNBOUND_IMMEDIATE));
        }
        state.write(PRE_FILTER_KEY, st);
        (None, Status::success())
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(st) = state.read::<PreFilterState>(PRE_FILTER_KEY) else { return Status::success() };
        for terms in &st.affinities {
            if !helpers::node_selector_terms_match(terms, node.node()) {
                return Status::unresolvable(ERR_REASON_NODE_CONFLICT);
            }
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::{NodeBuilder, PodBuilder};
    use serde_json::json;

    fn pod_with_claims(claims: &[&str]) -> Arc<PodInfo> {
        let mut v = PodBuilder::new("p").json();
        v["spec"]["volumes"] = json!(claims.iter().enumerate().map(|(i, c)| json!({"name": format!("v{i}"), "persistentVolumeClaim": {"claimName": c}})).collect::<Vec<_>>());
        Arc::new(PodInfo::new(Arc::new(serde_json::from_value(v).unwrap())))
    }

    fn claim(name: &str, volume: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"volumeName": volume, "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": if volume.is_some() { "Bound" } else { "Pending" }},
        }))
        .unwrap()
    }

    fn volume(name: &str, zone: Option<&str>) -> PersistentVolume {
        let mut v = json!({"metadata": {"name": name}, "spec": {"capacity": {"storage": "1Gi"}, "local": {"path": "/mnt/x"}}});
        if let Some(z) = zone {
            v["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": [z]}]}]}});
        }
        serde_json::from_value(v).unwrap()
    }

    fn run(pl: &VolumeBinding, pod: &PodInfo, node: &NodeInfo) -> Status {
        let mut s = CycleState::new();
        let (_, st) = pl.pre_filter(&mut s, pod, &Snapshot::default());
        if st.is_skip() {
            return Status::success();
        }
        if !st.is_success() {
            return st;
        }
        pl.filter(&s, pod, node)
    }

    #[test]
    fn claims_must_exist_and_be_bound_and_volume_affinity_must_match() {
        let pl = VolumeBinding::default();
        let a = NodeBuilder::new("a").labels(&[("zone", "a")]).info();
        let b = NodeBuilder::new("b").labels(&[("zone", "b")]).info();

        // No claims: skipped.
        let mut s = CycleState::new();
        let (_, st) = pl.pre_filter(&mut s, &PodBuilder::new("plain").info(), &Snapshot::default());
        assert!(st.is_skip());

        let pod = pod_with_claims(&["data"]);
        let st = run(&pl, &pod, &a);
        assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(st.reasons, vec!["persistentvolumeclaim \"data\" not found"]);

        pl.listers.set_claim(claim("data", None));
        let st = run(&pl, &pod, &a);
        assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(st.reasons, vec![ERR_REASON_UNBOUND_IMMEDIATE]);

        // Bound to a volume the scheduler has not seen.
        pl.listers.set_claim(claim("data", Some("pv-a")));
        assert_eq!(run(&pl, &pod, &a).reasons, vec![ERR_REASON_PV_NOT_EXIST]);

        // A local volume in zone a: only nodes in zone a.
        pl.listers.set_volume(volume("pv-a", Some("a")));
        assert!(run(&pl, &pod, &a).is_success());
        let st = run(&pl, &pod, &b);
        assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(st.reasons, vec![ERR_REASON_NODE_CONFLICT]);

        // A volume without node affinity: anywhere.
        pl.listers.set_volume(volume("pv-a", None));
        assert!(run(&pl, &pod, &b).is_success());

        // Every claim counts: a second, missing one rejects the pod.
        let two = pod_with_claims(&["data", "logs"]);
        assert_eq!(run(&pl, &two, &a).reasons, vec!["persistentvolumeclaim \"logs\" not found"]);

        // Claims are looked up in the pod's namespace.
        let mut other = PodBuilder::new("q").namespace("other").json();
        other["spec"]["volumes"] = json!([{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]);
        let other = Arc::new(PodInfo::new(Arc::new(serde_json::from_value(other).unwrap())));
        assert_eq!(run(&pl, &other, &a).reasons, vec!["persistentvolumeclaim \"data\" not found"]);
    }
}
