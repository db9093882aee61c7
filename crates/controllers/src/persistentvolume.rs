//! The PersistentVolume binder (upstream's
//! `pkg/controller/volume/persistentvolume`, `persistentvolume-binder`),
//! for statically provisioned volumes.
//!
//! - A Pending claim without `spec.volumeName` is bound to the smallest
//!   Available volume that fits (upstream's `FindMatchingVolume`): same
//!   `storageClassName` (both empty is equal), access modes including all
//!   the claim's, capacity ≥ `resources.requests.storage`, labels matching
//!   the claim's `selector`, same `volumeMode`, not being deleted. A volume
//!   pre-bound to the claim (`claimRef` naming it) wins if it fits.
//! - A claim naming a volume in `spec.volumeName` binds to exactly that one
//!   if it fits (a `VolumeMismatch` warning otherwise) and is not bound to
//!   another claim.
//! - Binding writes, in upstream's order: the volume's `spec.claimRef`
//!   (+ `pv.kubernetes.io/bound-by-controller` when the controller chose
//!   it), its `status.phase=Bound`, the claim's `spec.volumeName` with
//!   `pv.kubernetes.io/bind-completed` (and `bound-by-controller` when the
//!   controller chose the volume), then the claim's status (`Bound`, the
//!   volume's capacity and access modes). Each write carries the
//!   resourceVersion read, so two claims never both get one volume: the
//!   loser's volume update conflicts and its claim is retried.
//! - A bound volume whose claim is gone becomes `Released`. Whatever its
//!   reclaim policy, nothing more happens: Retain is upstream's behaviour;
//!   Delete and Recycle would need a volume plugin (upstream's hostPath
//!   deleter only exists behind `--enable-hostpath-provisioner`), so such
//!   volumes stay Released too, for an admin to clean up.
//! - A bound claim whose volume is gone (or bound elsewhere) becomes `Lost`.
//!
//! StorageClasses (`storage.k8s.io`) are not served yet, so there is no
//! dynamic provisioning and no `WaitForFirstConsumer`: every claim is bound
//! immediately, and one with a class that no volume fits stays Pending with
//! a `ProvisioningFailed` event, as upstream when the class does not exist.
//!
//! One worker syncs claims and volumes (upstream runs one each); every
//! claim and volume is resynced every 15 s (upstream's `--pvclaimbinder-sync-period`),
//! and a volume added or changed requeues the Pending claims.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus, PersistentVolumeStatus};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tokio::task::JoinSet;
use tug_api::quota::Amount;

use crate::informer::{Change, SharedInformers};
use crate::kit::{self, Key};
use crate::pod_control::{EventRecorder, EventType, error_message, is_not_found, object_ref};
use crate::queue::{self, Backoff, Queue};

/// The controller's name (upstream's, in kube-controller-manager's
/// `--controllers` list and as its event source).
pub const NAME: &str = "persistentvolume-binder";

pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";

#[derive(Clone, Debug)]
pub struct Config {
    /// Every claim and volume is resynced this often.
    pub sync_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config { sync_period: Duration::from_secs(15) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Api(&'static str, String),
}

fn api_err(what: &'static str) -> impl Fn(kube::Error) -> Error {
    move |e| Error::Api(what, error_message(&e))
}

/// A queue item: a claim (`namespace/name`) or a volume.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Item {
    Claim(Key),
    Volume(String),
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Claim(k) => write!(f, "claim {k}"),
            Item::Volume(n) => write!(f, "volume {n}"),
        }
    }
}

struct Controller {
    client: Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    queue: Queue<Item>,
    recorder: EventRecorder,
}

/// Runs the binder with the default [`Config`] until its informers stop.
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_shared(client.clone(), Config::default(), SharedInformers::new(client)).await
}

/// [`run`] on the process's shared informers.
pub async fn run_shared(client: Client, config: Config, informers: SharedInformers) -> anyhow::Result<()> {
    let (queue, workers) = queue::queue::<Item>(Backoff::CONTROLLER);
    let pvc_inf = informers.get::<PersistentVolumeClaim>();
    let pv_inf = informers.get::<PersistentVolume>();
    let recorder = EventRecorder::new(client.clone(), NAME);
    let ctl = Arc::new(Controller { client, claims: pvc_inf.store(), volumes: pv_inf.store(), queue: queue.clone(), recorder });
    let mut tasks = JoinSet::new();
    let c = ctl.clone();
    tasks.spawn(pvc_inf.run("persistentvolumeclaims", move |change| match change {
        Change::Added(pvc) | Change::Updated(_, pvc) => c.queue.add(Item::Claim(Key::of(&*pvc))),
        Change::Deleted(pvc) => {
            // Its volume is released.
            if let Some(v) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty()) {
                c.queue.add(Item::Volume(v));
            }
        }
    }));
    let c = ctl.clone();
    tasks.spawn(pv_inf.run("persistentvolumes", move |change| match change {
        Change::Added(pv) | Change::Updated(_, pv) => {
            c.queue.add(Item::Volume(pv.name_any()));
            // A new or changed volume may fit a waiting claim.
            c.enqueue_pending_claims();
        }
        Change::Deleted(pv) => {
            if let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                c.queue.add(Item::Claim(Key::new(r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default())));
            }
        }
    }));
    let _ = tokio::join!(ctl.claims.wait_until_ready(), ctl.volumes.wait_until_ready());
    tracing::info!("persistentvolume binder synced");
    let c = ctl.clone();
    tasks.spawn(async move {
        loop {
            tokio::time::sleep(config.sync_period).await;
            for pvc in c.claims.state() {
                c.queue.add(Item::Claim(Key::of(&*pvc)));
            }
            for pv in c.volumes.state() {
                c.queue.add(Item::Volume(pv.name_any()));
            }
        }
    });
    let c = ctl.clone();
    tasks.spawn(kit::run_workers(NAME, queue, workers, 1, move |item: Item| {
        let c = c.clone();
        async move {
            match item {
                Item::Claim(k) => c.sync_claim(&k).await,
                Item::Volume(n) => c.sync_volume(&n).await,
            }
        }
    }));
    let _ = tasks.join_next().await;
    anyhow::bail!("persistentvolume binder stopped")
}

// ---------------------------------------------------------------------------
// Matching (upstream's `pkg/controller/volume/persistentvolume/util`)

fn claim_class(pvc: &PersistentVolumeClaim) -> &str {
    pvc.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

fn volume_class(pv: &PersistentVolume) -> &str {
    pv.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

fn claim_request(pvc: &PersistentVolumeClaim) -> Amount {
    pvc.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(Amount::of)
        .unwrap_or_else(Amount::zero)
}

fn volume_capacity(pv: &PersistentVolume) -> Amount {
    pv.spec.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage")).and_then(Amount::of).unwrap_or_else(Amount::zero)
}

fn claim_mode(pvc: &PersistentVolumeClaim) -> &str {
    pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref()).unwrap_or("Filesystem")
}

fn volume_mode(pv: &PersistentVolume) -> &str {
    pv.spec.as_ref().and_then(|s| s.volume_mode.as_deref()).unwrap_or("Filesystem")
}

fn volume_phase(pv: &PersistentVolume) -> &str {
    pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn claim_phase(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn claim_volume_name(pvc: &PersistentVolumeClaim) -> &str {
    pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()).unwrap_or("")
}

fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
}

fn has_annotation(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &str) -> bool {
    meta.annotations.as_ref().is_some_and(|a| a.contains_key(key))
}

/// The volume's access modes include all of the claim's.
pub fn access_modes_fit(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let have = pv.spec.as_ref().and_then(|s| s.access_modes.as_ref());
    let want = pvc.spec.as_ref().and_then(|s| s.access_modes.as_ref());
    want.into_iter().flatten().all(|m| have.is_some_and(|h| h.contains(m)))
}

/// The claim's `selector` matches the volume's labels (no selector: any).
pub fn selector_matches(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let Some(sel) = pvc.spec.as_ref().and_then(|s| s.selector.as_ref()) else { return true };
    match kit::selector::Selector::parse(Some(sel)) {
        Ok(s) => s.matches(pv.metadata.labels.as_ref()),
        Err(_) => false,
    }
}

/// Upstream's `IsVolumeBoundToClaim`: the volume's claimRef names the claim
/// (and has its uid, or none yet).
pub fn is_volume_bound_to_claim(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let Some(r) = claim_ref(pv) else { return false };
    r.name.as_deref() == pvc.metadata.name.as_deref()
        && r.namespace.as_deref() == pvc.metadata.namespace.as_deref()
        && r.uid.as_deref().is_none_or(|u| u.is_empty() || Some(u) == pvc.metadata.uid.as_deref())
}

/// Upstream's `checkVolumeSatisfyClaim`, for a claim naming a volume.
pub fn check_volume_satisfies_claim(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> Result<(), String> {
    let (req, cap) = (claim_request(pvc), volume_capacity(pv));
    if cap < req {
        return Err("requested PV is too small".into());
    }
    if volume_class(pv) != claim_class(pvc) {
        return Err("storageClassName does not match".into());
    }
    if volume_mode(pv) != claim_mode(pvc) {
        return Err("incompatible volumeMode".into());
    }
    if !access_modes_fit(pvc, pv) {
        return Err("incompatible accessMode".into());
    }
    Ok(())
}

/// Upstream's `FindMatchingVolume` (without a node: immediate binding):
/// a volume pre-bound to the claim if it fits, else the smallest Available
/// volume that fits.
pub fn find_matching_volume<'a>(pvc: &PersistentVolumeClaim, volumes: &'a [Arc<PersistentVolume>]) -> Option<&'a Arc<PersistentVolume>> {
    let req = claim_request(pvc);
    let mut best: Option<(&Arc<PersistentVolume>, Amount)> = None;
    for pv in volumes {
        let cap = volume_capacity(pv);
        if cap < req || volume_mode(pv) != claim_mode(pvc) || pv.metadata.deletion_timestamp.is_some() || !access_modes_fit(pvc, pv) {
            continue;
        }
        if is_volume_bound_to_claim(pv, pvc) {
            return Some(pv);
        }
        if volume_phase(pv) != "Available" || claim_ref(pv).is_some() || !selector_matches(pvc, pv) || volume_class(pv) != claim_class(pvc) {
            continue;
        }
        if best.as_ref().is_none_or(|(_, b)| cap < *b) {
            best = Some((pv, cap));
        }
    }
    best.map(|(pv, _)| pv)
}

// ---------------------------------------------------------------------------
// Syncing

impl Controller {
    fn enqueue_pending_claims(&self) {
        for pvc in self.claims.state() {
            if claim_volume_name(&pvc).is_empty() || claim_phase(&pvc) == "Pending" {
                self.queue.add(Item::Claim(Key::of(&*pvc)));
            }
        }
    }

    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.volumes.get(&ObjectRef::new(name))
    }

    fn pv_api(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    fn pvc_api(&self, ns: &str) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Upstream's `syncClaim`.
    async fn sync_claim(&self, key: &Key) -> Result<Option<Duration>, Error> {
        let Some(pvc) = self.claims.get(&key.obj_ref()) else { return Ok(None) };
        if pvc.metadata.deletion_timestamp.is_some() && claim_volume_name(&pvc).is_empty() {
            return Ok(None);
        }
        if has_annotation(&pvc.metadata, ANN_BIND_COMPLETED) { self.sync_bound_claim(&pvc).await } else { self.sync_unbound_claim(&pvc).await }
    }

    async fn sync_unbound_claim(&self, pvc: &PersistentVolumeClaim) -> Result<Option<Duration>, Error> {
        let wanted = claim_volume_name(pvc);
        if wanted.is_empty() {
            let volumes = self.volumes.state();
            match find_matching_volume(pvc, &volumes) {
                Some(pv) => self.bind(pv, pvc).await,
                None => {
                    let class = claim_class(pvc);
                    if class.is_empty() {
                        self.recorder.event(object_ref(pvc), EventType::Normal, "FailedBinding", "no persistent volumes available for this claim and no storage class is set");
                    } else {
                        self.recorder.event(
                            object_ref(pvc),
                            EventType::Warning,
                            "ProvisioningFailed",
                            format!("storageclass.storage.k8s.io \"{class}\" not found"),
                        );
                    }
                    self.set_claim_phase(pvc, "Pending", None).await
                }
            }
        } else {
            let Some(pv) = self.volume(wanted) else {
                // Upstream waits (no event) for the volume to appear.
                return self.set_claim_phase(pvc, "Pending", None).await;
            };
            if claim_ref(&pv).is_none() {
                if let Err(why) = check_volume_satisfies_claim(&pv, pvc) {
                    self.recorder.event(object_ref(pvc), EventType::Warning, "VolumeMismatch", format!("Cannot bind to requested volume \"{wanted}\": {why}"));
                    return self.set_claim_phase(pvc, "Pending", None).await;
                }
                self.bind(&pv, pvc).await
            } else if is_volume_bound_to_claim(&pv, pvc) {
                self.bind(&pv, pvc).await
            } else {
                if !has_annotation(&pvc.metadata, ANN_BOUND_BY_CONTROLLER) {
                    self.recorder.event(object_ref(pvc), EventType::Warning, "FailedBinding", "volume is already bound to a different claim.");
                }
                self.set_claim_phase(pvc, "Pending", None).await
            }
        }
    }

    async fn sync_bound_claim(&self, pvc: &PersistentVolumeClaim) -> Result<Option<Duration>, Error> {
        let name = claim_volume_name(pvc);
        if name.is_empty() {
            return self.set_claim_phase(pvc, "Lost", Some(("ClaimLost", "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!"))).await;
        }
        let Some(pv) = self.volume(name) else {
            return self.set_claim_phase(pvc, "Lost", Some(("ClaimLost", "Bound claim has lost its PersistentVolume. Data on the volume is lost!"))).await;
        };
        match claim_ref(&pv) {
            // The volume's side was never saved (or was undone): redo it.
            None => self.bind(&pv, pvc).await,
            Some(r) if r.uid.as_deref() == pvc.metadata.uid.as_deref() => self.bind(&pv, pvc).await,
            Some(_) => self.set_claim_phase(pvc, "Lost", Some(("ClaimMisbound", "Two claims are bound to the same volume, this one is bound incorrectly"))).await,
        }
    }

    /// Sets a claim's phase (and records `event` when it changes).
    async fn set_claim_phase(&self, pvc: &PersistentVolumeClaim, phase: &str, event: Option<(&str, &str)>) -> Result<Option<Duration>, Error> {
        if claim_phase(pvc) == phase {
            return Ok(None);
        }
        let mut updated = pvc.clone();
        let status = updated.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.to_string());
        if phase == "Lost" || phase == "Pending" {
            status.capacity = None;
            status.access_modes = None;
        }
        match self.pvc_api(&pvc.namespace().unwrap_or_default()).replace_status(&pvc.name_any(), &PostParams::default(), &updated).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(api_err("updating claim status")(e)),
        }
        if let Some((reason, message)) = event {
            self.recorder.event(object_ref(pvc), EventType::Warning, reason, message);
        }
        Ok(None)
    }

    /// Upstream's `bind`: volume → claim reference, volume phase, claim →
    /// volume name, claim status. Each step is skipped when done already.
    async fn bind(&self, pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> Result<Option<Duration>, Error> {
        let pv_api = self.pv_api();
        let pvc_api = self.pvc_api(&pvc.namespace().unwrap_or_default());
        let pv_name = pv.name_any();

        // 1. The volume's claimRef (upstream's `bindVolumeToClaim`).
        let mut pv = pv.clone();
        let want_ref = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            name: pvc.metadata.name.clone(),
            namespace: pvc.metadata.namespace.clone(),
            uid: pvc.metadata.uid.clone(),
            resource_version: pvc.metadata.resource_version.clone(),
            field_path: None,
        };
        let cur = claim_ref(&pv);
        let ref_done = cur.is_some_and(|r| r.uid == want_ref.uid && r.name == want_ref.name && r.namespace == want_ref.namespace);
        if !ref_done {
            let pre_bound = cur.is_some();
            let mut updated = pv.clone();
            let spec = updated.spec.get_or_insert_with(Default::default);
            spec.claim_ref = Some(want_ref);
            if !pre_bound {
                updated.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
            }
            // A conflict (another claim got the volume first) retries the
            // claim against a fresher cache.
            pv = pv_api.replace(&pv_name, &PostParams::default(), &updated).await.map_err(api_err("binding volume to claim"))?;
            tracing::debug!(volume = %pv_name, claim = %Key::of(pvc), "volume bound to claim");
        }

        // 2. The volume's phase.
        if volume_phase(&pv) != "Bound" {
            let mut updated = pv.clone();
            updated.status = Some(PersistentVolumeStatus { phase: Some("Bound".into()), ..updated.status.unwrap_or_default() });
            updated.status.as_mut().unwrap().message = None;
            updated.status.as_mut().unwrap().reason = None;
            pv_api.replace_status(&pv_name, &PostParams::default(), &updated).await.map_err(api_err("updating volume phase"))?;
        }

        // 3. The claim's volumeName and annotations (`bindClaimToVolume`).
        let mut pvc = pvc.clone();
        let ann = pvc.metadata.annotations.clone().unwrap_or_default();
        let chosen_by_us = claim_volume_name(&pvc).is_empty();
        if claim_volume_name(&pvc) != pv_name || !ann.contains_key(ANN_BIND_COMPLETED) {
            let mut updated = pvc.clone();
            updated.spec.get_or_insert_with(Default::default).volume_name = Some(pv_name.clone());
            let a = updated.metadata.annotations.get_or_insert_with(BTreeMap::new);
            a.insert(ANN_BIND_COMPLETED.into(), "yes".into());
            if chosen_by_us {
                a.insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
            }
            pvc = pvc_api.replace(&pvc.name_any(), &PostParams::default(), &updated).await.map_err(api_err("binding claim to volume"))?;
        }

        // 4. The claim's status (`updateClaimStatus`).
        let spec = pv.spec.clone().unwrap_or_default();
        let want = PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            access_modes: spec.access_modes.clone(),
            capacity: spec.capacity.clone(),
            ..pvc.status.clone().unwrap_or_default()
        };
        if pvc.status.as_ref() != Some(&want) {
            let mut updated = pvc.clone();
            updated.status = Some(want);
            pvc_api.replace_status(&pvc.name_any(), &PostParams::default(), &updated).await.map_err(api_err("updating claim status"))?;
            tracing::info!(volume = %pv_name, claim = %Key::of(&pvc), "claim bound");
        }
        Ok(None)
    }

    /// Upstream's `syncVolume`.
    async fn sync_volume(&self, name: &str) -> Result<Option<Duration>, Error> {
        let Some(pv) = self.volume(name) else { return Ok(None) };
        let Some(r) = claim_ref(&pv) else {
            // Unused.
            return self.set_volume_phase(&pv, "Available").await;
        };
        if r.uid.as_deref().is_none_or(str::is_empty) {
            // Pre-bound by a user to a claim the claim sync will bind.
            return self.set_volume_phase(&pv, "Available").await;
        }
        let (ns, claim_name) = (r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default());
        let mut claim = self.claims.get(&ObjectRef::new(&claim_name).within(&ns));
        if claim.is_none() {
            // The cache may be behind: ask the API server before releasing.
            claim = match self.pvc_api(&ns).get_opt(&claim_name).await {
                Ok(c) => c.map(Arc::new),
                Err(e) => return Err(api_err("getting claim")(e)),
            };
        }
        let claim = claim.filter(|c| c.metadata.uid == r.uid);
        let Some(claim) = claim else {
            // The claim is gone: release the volume (see the module docs on
            // reclaim policies).
            let phase = volume_phase(&pv);
            if phase != "Released" && phase != "Failed" {
                self.set_volume_phase(&pv, "Released").await?;
                let policy = pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Retain");
                tracing::info!(volume = name, claim = %format!("{ns}/{claim_name}"), policy, "claim deleted: volume released");
            }
            return Ok(None);
        };
        let bound_to = claim_volume_name(&claim);
        if bound_to.is_empty() {
            // Binding in progress (or undone by a user): the claim sync
            // completes it.
            self.queue.add(Item::Claim(Key::of(&*claim)));
            Ok(None)
        } else if bound_to == name {
            self.set_volume_phase(&pv, "Bound").await
        } else {
            // The claim is bound to another volume: upstream's `unbindVolume`.
            let mut updated = (*pv).clone();
            if has_annotation(&pv.metadata, ANN_BOUND_BY_CONTROLLER) {
                updated.spec.get_or_insert_with(Default::default).claim_ref = None;
                if let Some(a) = updated.metadata.annotations.as_mut() {
                    a.remove(ANN_BOUND_BY_CONTROLLER);
                }
            } else if let Some(r) = updated.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
                r.uid = None;
            }
            let pv = self.pv_api().replace(name, &PostParams::default(), &updated).await.map_err(api_err("unbinding volume"))?;
            self.set_volume_phase(&pv, "Available").await
        }
    }

    async fn set_volume_phase(&self, pv: &PersistentVolume, phase: &str) -> Result<Option<Duration>, Error> {
        if volume_phase(pv) == phase {
            return Ok(None);
        }
        let mut updated = pv.clone();
        let status = updated.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.to_string());
        status.message = None;
        status.reason = None;
        match self.pv_api().replace_status(&pv.name_any(), &PostParams::default(), &updated).await {
            Ok(_) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api_err("updating volume phase")(e)),
        }
    }
}
