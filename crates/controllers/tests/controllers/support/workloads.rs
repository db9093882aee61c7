//! Support for the workload controllers' tests: a stand-in for the
//! kubelet (there is none yet) that moves pods through their lifecycle
//! via `pods/status`, and readers of events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// What the fake kubelet does with a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Running, every container ready.
    Ready,
    /// Running, not ready (e.g. a failing readiness probe).
    NotReady,
    /// Running, containers restarted this often and waiting in CrashLoopBackOff.
    CrashLoop(i32),
    /// Left alone (Pending).
    Leave,
}

/// Plays kubelet for the pods of one namespace: gives each new pod the
/// status its [`Fate`] says (once), and finishes graceful deletions.
/// Stops when dropped.
pub struct FakeKubelet {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The `pods/status` merge patch for a fate.
pub fn status_for(pod: &Pod, fate: Fate) -> Option<Value> {
    let now = now();
    let (ready, restarts, waiting) = match fate {
        Fate::Leave => return None,
        Fate::Ready => (true, 0, None),
        Fate::NotReady => (false, 0, None),
        Fate::CrashLoop(n) => (false, n, Some("CrashLoopBackOff")),
    };
    let flag = if ready { "True" } else { "False" };
    let containers: Vec<Value> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let state = match waiting {
                Some(reason) => json!({"waiting": {"reason": reason, "message": "back-off restarting failed container"}}),
                None => json!({"running": {"startedAt": now}}),
            };
            json!({"name": c.name, "image": c.image, "imageID": "", "ready": ready, "restartCount": restarts,
                   "started": waiting.is_none(), "state": state})
        })
        .collect();
    Some(json!({"status": {
        "phase": "Running",
        "startTime": now,
        "podIP": "10.42.0.10",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now},
        ],
        "containerStatuses": containers,
    }}))
}

impl FakeKubelet {
    /// Starts playing kubelet in `ns`, deciding each pod's fate once, when
    /// it is first seen.
    pub fn start(client: Client, ns: &str, fate: impl Fn(&Pod) -> Fate + Send + Sync + 'static) -> FakeKubelet {
        let api: Api<Pod> = Api::namespaced(client, ns);
        let fate = Arc::new(fate);
        let task = tokio::spawn(async move {
            let mut done: HashMap<String, Fate> = HashMap::new();
            loop {
                if let Ok(list) = api.list(&ListParams::default()).await {
                    for pod in list.items {
                        let uid = pod.uid().unwrap_or_default();
                        if pod.metadata.deletion_timestamp.is_some() {
                            let _ = api.delete(&pod.name_any(), &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
                            continue;
                        }
                        if done.contains_key(&uid) {
                            continue;
                        }
                        let f = fate(&pod);
                        if let Some(patch) = status_for(&pod, f)
                            && api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await.is_err()
                        {
                            continue;
                        }
                        done.insert(uid, f);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        FakeKubelet { task }
    }
}

/// (type, reason, message) of the core/v1 events about object `name` of `kind`.
pub async fn events_for(client: &Client, ns: &str, kind: &str, name: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut out: Vec<(String, String, String)> = api
        .list(&ListParams::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.kind.as_deref() == Some(kind) && e.involved_object.name.as_deref() == Some(name))
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect();
    out.sort();
    out
}

/// PATCHes an object. A patch without a resourceVersion must not conflict
/// (upstream's server retries it internally); Tugboat's server returns 409
/// when another write lands between its read and its write (reported as
/// a server bug), so the tests retry rather than fail on that.
pub async fn patch_retrying<K>(api: &Api<K>, name: &str, patch: Patch<Value>) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for _ in 0..20 {
        match api.patch(name, &PatchParams::default(), &patch).await {
            Ok(o) => return o,
            Err(kube::Error::Api(s)) if s.code == 409 => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("PATCH {name}: {e}"),
        }
    }
    panic!("PATCH {name} kept conflicting");
}
