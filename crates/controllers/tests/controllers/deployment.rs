//! The Deployment controller (with the ReplicaSet controller under it)
//! against the real `tug server` binary (build it first: `cargo build -p
//! tug`), with a fake kubelet making pods run, and the real kubectl's
//! `rollout` commands. Each test has its own server.

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::workloads::{Fate, FakeKubelet, events_for, patch_retrying};
use support::{Cluster, eventually, obj};

const WAIT: Duration = Duration::from_secs(40);
const REVISION: &str = "deployment.kubernetes.io/revision";

async fn namespace(client: &Client, name: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(&PostParams::default(), &obj(json!({"metadata": {"name": name}}))).await.unwrap();
}

/// A Deployment of `replicas` pods running `image`, with `extra` merged
/// into its spec and `annotations` on it.
fn deployment(name: &str, replicas: i32, image: &str, extra: Value, annotations: Value) -> Deployment {
    let mut d = json!({"metadata": {"name": name, "annotations": annotations}, "spec": {"replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": image}]}}}});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            d["spec"][k] = v;
        }
    }
    obj(d)
}

fn image_of(d: &Deployment) -> String {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].image.clone().unwrap_or_default()
}

fn rs_image(rs: &ReplicaSet) -> String {
    rs.spec.as_ref().unwrap().template.as_ref().unwrap().spec.as_ref().unwrap().containers[0].image.clone().unwrap_or_default()
}

fn ann<'a>(meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn condition(d: &Deployment, type_: &str) -> Option<DeploymentCondition> {
    d.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_).cloned()
}

async fn set_image(api: &Api<Deployment>, name: &str, image: &str) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    patch_deployment(api, name, Patch::Strategic(patch)).await;
}

/// PATCHes a Deployment (retrying conflicts, see [`patch_retrying`]).
async fn patch_deployment(api: &Api<Deployment>, name: &str, patch: Patch<Value>) {
    patch_retrying(api, name, patch).await;
}

/// The ReplicaSets controlled by the Deployment, oldest first (roughly).
async fn replica_sets(client: &Client, d: &Deployment) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), d.metadata.namespace.as_deref().unwrap());
    let uid = d.uid().unwrap();
    let mut rss: Vec<ReplicaSet> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|rs| rs.owner_references().iter().any(|r| r.uid == uid && r.controller == Some(true)))
        .collect();
    // Creation times are to the second: ties are broken by revision.
    rss.sort_by_key(|rs| (rs.metadata.creation_timestamp.clone().map(|t| t.0), ann(&rs.metadata, REVISION).and_then(|r| r.parse::<i64>().ok())));
    rss
}

/// Waits until the rollout of the Deployment's current template is complete.
async fn complete(api: &Api<Deployment>, name: &str) -> Deployment {
    eventually(&format!("deployment {name} completes its rollout"), WAIT, || async {
        let d = api.get(name).await.unwrap();
        let s = d.status.clone().unwrap_or_default();
        let want = d.spec.as_ref().unwrap().replicas.unwrap_or(1);
        let progressing = condition(&d, "Progressing");
        let done = s.observed_generation >= d.metadata.generation
            && s.updated_replicas == Some(want)
            && s.replicas == Some(want)
            && s.available_replicas == Some(want)
            && progressing.and_then(|c| c.reason).as_deref() == Some("NewReplicaSetAvailable");
        done.then_some(d)
    })
    .await
}

/// Runs the real kubectl against the server, off the async threads.
/// Retries kubectl's own PATCHes that fail with a conflict (see
/// [`patch_deployment`]).
async fn kubectl(c: &Cluster, args: &[&str]) -> std::process::Output {
    for _ in 0..10 {
        let mut cmd = c.server.kubectl_cmd(args);
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("running kubectl")).await.unwrap();
        if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("the object has been modified") {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("kubectl {args:?} kept conflicting");
}

/// A new RS's name, and the other RSs' (name, spec, status replicas) when
/// it appeared.
type Appeared = (String, Vec<(String, i32, i32)>);

/// Records, after every ReplicaSet event in `ns`, the sum of the
/// `spec.replicas` of the RSs whose name starts with `prefix`, and after
/// every pod event the number of ready pods (not being deleted).
#[derive(Clone, Default)]
struct Recorder {
    rs_sums: Arc<Mutex<Vec<i32>>>,
    ready_pods: Arc<Mutex<Vec<usize>>>,
    rs_appeared: Arc<Mutex<Vec<Appeared>>>,
    /// pod-template-hash values of active pods, after every pod event
    pod_hashes: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Recorder {
    fn start(client: &Client, ns: &str, prefix: &str) -> (Recorder, Vec<tokio::task::JoinHandle<()>>) {
        let rec = Recorder::default();
        let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
        let pod_api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let prefix = format!("{prefix}-");
        let r = rec.clone();
        let p = prefix.clone();
        let rs_task = tokio::spawn(async move {
            let mut seen: BTreeMap<String, (i32, i32)> = BTreeMap::new();
            let mut initial: Vec<String> = Vec::new();
            let mut stream = std::pin::pin!(watcher::watcher(rs_api, watcher::Config::default()));
            let mut synced = false;
            while let Some(Ok(ev)) = stream.next().await {
                match ev {
                    Event::Apply(rs) | Event::InitApply(rs) => {
                        if !rs.name_any().starts_with(&p) {
                            continue;
                        }
                        let spec = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                        let status = rs.status.as_ref().map(|s| s.replicas).unwrap_or(0);
                        if synced && !seen.contains_key(&rs.name_any()) && !initial.contains(&rs.name_any()) {
                            let others = seen.iter().map(|(n, (a, b))| (n.clone(), *a, *b)).collect();
                            r.rs_appeared.lock().unwrap().push((rs.name_any(), others));
                        }
                        if !synced {
                            initial.push(rs.name_any());
                        }
                        seen.insert(rs.name_any(), (spec, status));
                    }
                    Event::Delete(rs) => {
                        seen.remove(&rs.name_any());
                    }
                    Event::InitDone => synced = true,
                    Event::Init => {}
                }
                if synced {
                    r.rs_sums.lock().unwrap().push(seen.values().map(|(s, _)| *s).sum());
                }
            }
        });
        let r = rec.clone();
        let pod_task = tokio::spawn(async move {
            let mut pods: HashMap<String, Pod> = HashMap::new();
            let mut stream = std::pin::pin!(watcher::watcher(pod_api, watcher::Config::default()));
            let mut synced = false;
            while let Some(Ok(ev)) = stream.next().await {
                match ev {
                    Event::Apply(pod) | Event::InitApply(pod) => {
                        if pod.name_any().starts_with(&prefix) {
                            pods.insert(pod.name_any(), pod);
                        }
                    }
                    Event::Delete(pod) => {
                        pods.remove(&pod.name_any());
                    }
                    Event::InitDone => synced = true,
                    Event::Init => {}
                }
                if synced {
                    let active: Vec<&Pod> = pods.values().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
                    let ready = active
                        .iter()
                        .filter(|p| {
                            p.status.as_ref().and_then(|s| s.conditions.as_ref()).map(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")).unwrap_or(false)
                        })
                        .count();
                    r.ready_pods.lock().unwrap().push(ready);
                    let mut hashes: Vec<String> = active.iter().filter_map(|p| p.labels().get("pod-template-hash").cloned()).collect();
                    hashes.sort();
                    hashes.dedup();
                    r.pod_hashes.lock().unwrap().push(hashes);
                }
            }
        });
        (rec, vec![rs_task, pod_task])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_respects_surge_and_unavailability_and_reuses_old_replica_sets() {
    let c = Cluster::start().await;
    namespace(&c.client, "roll").await;
    let _kubelet = FakeKubelet::start(c.client.clone(), "roll", |_| Fate::Ready);
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), "roll");
    let strategy = json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}});
    api.create(&PostParams::default(), &deployment("web", 4, "nginx:1", strategy, json!({}))).await.unwrap();
    let d = complete(&api, "web").await;

    // One ReplicaSet named after the template hash, which also labels its
    // selector, its template and its pods.
    let rss = replica_sets(&c.client, &d).await;
    assert_eq!(rss.len(), 1, "{rss:#?}");
    let rs1 = rss[0].clone();
    let hash1 = rs1.labels().get("pod-template-hash").cloned().expect("the RS has the pod-template-hash label");
    assert_eq!(rs1.name_any(), format!("web-{hash1}"));
    let rs_spec = rs1.spec.as_ref().unwrap();
    assert_eq!(rs_spec.selector.match_labels.as_ref().unwrap().get("pod-template-hash"), Some(&hash1));
    assert_eq!(rs_spec.template.as_ref().unwrap().metadata.as_ref().unwrap().labels.as_ref().unwrap().get("pod-template-hash"), Some(&hash1));
    assert_eq!(ann(&rs1.metadata, REVISION), Some("1"));
    assert_eq!(ann(&rs1.metadata, "deployment.kubernetes.io/desired-replicas"), Some("4"));
    assert_eq!(ann(&rs1.metadata, "deployment.kubernetes.io/max-replicas"), Some("5"));
    assert_eq!(ann(&d.metadata, REVISION), Some("1"));
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "roll");
    let listed = pods.list(&ListParams::default().labels(&format!("pod-template-hash={hash1}"))).await.unwrap().items;
    assert_eq!(listed.len(), 4);

    // Status and conditions as upstream writes them.
    let s = d.status.clone().unwrap();
    assert_eq!((s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas), (Some(4), Some(4), Some(4), Some(4)));
    assert_eq!(s.unavailable_replicas.unwrap_or(0), 0);
    assert_eq!(s.observed_generation, d.metadata.generation);
    let available = condition(&d, "Available").unwrap();
    assert_eq!((available.status.as_str(), available.reason.as_deref()), ("True", Some("MinimumReplicasAvailable")));
    assert_eq!(available.message.as_deref(), Some("Deployment has minimum availability."));
    let progressing = condition(&d, "Progressing").unwrap();
    assert_eq!(progressing.status, "True");
    assert_eq!(progressing.message, Some(format!("ReplicaSet \"web-{hash1}\" has successfully progressed.")));

    // A new image: a rolling update within maxSurge 1 / maxUnavailable 1.
    let (rec, tasks) = Recorder::start(&c.client, "roll", "web");
    tokio::time::sleep(Duration::from_millis(300)).await;
    set_image(&api, "web", "nginx:2").await;
    let d = complete(&api, "web").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tasks.iter().for_each(|t| t.abort());
    let rss = replica_sets(&c.client, &d).await;
    assert_eq!(rss.len(), 2);
    let rs2 = rss.iter().find(|rs| rs.name_any() != rs1.name_any()).unwrap().clone();
    assert_eq!(rs_image(&rs2), "nginx:2");
    assert_eq!(ann(&rs2.metadata, REVISION), Some("2"));
    assert_eq!(ann(&d.metadata, REVISION), Some("2"));
    let old = rss.iter().find(|rs| rs.name_any() == rs1.name_any()).unwrap();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));
    assert_eq!(ann(&old.metadata, REVISION), Some("1"));
    let sums = rec.rs_sums.lock().unwrap().clone();
    let ready = rec.ready_pods.lock().unwrap().clone();
    assert!(!sums.is_empty() && !ready.is_empty());
    assert!(sums.iter().all(|s| *s <= 5), "replicas never exceed 4 + maxSurge 1: {sums:?}");
    assert!(sums.contains(&5), "the surge was used: {sums:?}");
    assert!(ready.iter().all(|r| *r >= 3), "ready pods never below 4 - maxUnavailable 1: {ready:?}");
    let events = events_for(&c.client, "roll", "Deployment", "web").await;
    let scaled: Vec<&str> = events.iter().filter(|(t, r, _)| t == "Normal" && r == "ScalingReplicaSet").map(|(_, _, m)| m.as_str()).collect();
    assert!(scaled.contains(&format!("Scaled up replica set web-{hash1} from 0 to 4").as_str()), "{scaled:#?}");
    assert!(scaled.iter().any(|m| m.starts_with(&format!("Scaled up replica set {} from 0 to", rs2.name_any()))), "{scaled:#?}");
    assert!(scaled.iter().any(|m| m.starts_with(&format!("Scaled down replica set web-{hash1} from 4 to"))), "{scaled:#?}");

    // kubectl agrees the rollout is done.
    let out = kubectl(&c, &["-n", "roll", "rollout", "status", "deploy/web", "--timeout=60s"]).await;
    assert!(out.status.success(), "kubectl rollout status: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployment \"web\" successfully rolled out"), "{out:?}");

    // The first template again: the first RS is reused as revision 3.
    set_image(&api, "web", "nginx:1").await;
    let d = complete(&api, "web").await;
    let rss = replica_sets(&c.client, &d).await;
    assert_eq!(rss.len(), 2, "no new RS for a template seen before: {rss:#?}");
    let reused = rss.iter().find(|rs| rs.name_any() == rs1.name_any()).unwrap();
    assert_eq!(reused.spec.as_ref().unwrap().replicas, Some(4));
    assert_eq!(ann(&reused.metadata, REVISION), Some("3"));
    assert_eq!(ann(&reused.metadata, "deployment.kubernetes.io/revision-history"), Some("1"));
    assert_eq!(ann(&d.metadata, REVISION), Some("3"));

    // kubectl rollout history lists the revisions; undo goes back to 2,
    // and rollout status waits for it to finish.
    let out = kubectl(&c, &["-n", "roll", "rollout", "history", "deploy/web"]).await;
    let history = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    let revisions: Vec<&str> = history.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    let out = kubectl(&c, &["-n", "roll", "rollout", "undo", "deploy/web"]).await;
    assert!(out.status.success(), "kubectl rollout undo: {out:?}");
    let out = kubectl(&c, &["-n", "roll", "rollout", "status", "deploy/web", "--timeout=60s"]).await;
    assert!(out.status.success(), "kubectl rollout status after undo: {out:?}");
    let d = complete(&api, "web").await;
    assert_eq!(image_of(&d), "nginx:2");
    let rss = replica_sets(&c.client, &d).await;
    assert_eq!(rss.len(), 2);
    let back = rss.iter().find(|rs| rs.name_any() == rs2.name_any()).unwrap();
    assert_eq!(ann(&back.metadata, REVISION), Some("4"));
    assert_eq!(ann(&back.metadata, "deployment.kubernetes.io/revision-history"), Some("2"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_removes_old_pods_before_creating_new_ones_and_scaling_mid_rollout_is_proportional() {
    let c = Cluster::start().await;
    namespace(&c.client, "re").await;
    let _kubelet = FakeKubelet::start(c.client.clone(), "re", |pod| {
        if pod.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("hang") { Fate::NotReady } else { Fate::Ready }
    });
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), "re");
    api.create(&PostParams::default(), &deployment("db", 3, "db:1", json!({"strategy": {"type": "Recreate"}}), json!({}))).await.unwrap();
    let d = complete(&api, "db").await;
    let rs1 = replica_sets(&c.client, &d).await[0].clone();
    let (rec, tasks) = Recorder::start(&c.client, "re", "db");
    tokio::time::sleep(Duration::from_millis(300)).await;
    set_image(&api, "db", "db:2").await;
    let d = complete(&api, "db").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tasks.iter().for_each(|t| t.abort());
    let rss = replica_sets(&c.client, &d).await;
    assert_eq!(rss.len(), 2);
    let rs2 = rss.iter().find(|rs| rs.name_any() != rs1.name_any()).unwrap();
    let appeared = rec.rs_appeared.lock().unwrap().clone();
    assert_eq!(appeared.len(), 1, "{appeared:?}");
    assert_eq!(appeared[0].0, rs2.name_any());
    assert_eq!(appeared[0].1, vec![(rs1.name_any(), 0, 0)], "the new RS is created once the old one has no pods");
    let hashes = rec.pod_hashes.lock().unwrap().clone();
    assert!(hashes.iter().all(|h| h.len() <= 1), "old and new pods never run together: {hashes:?}");
    assert!(hashes.iter().any(|h| h.is_empty()), "there was a moment without pods: {hashes:?}");
    let events = events_for(&c.client, "re", "Deployment", "db").await;
    let msgs: Vec<&str> = events.iter().map(|(_, _, m)| m.as_str()).collect();
    assert!(msgs.contains(&format!("Scaled down replica set {} from 3 to 0", rs1.name_any()).as_str()), "{msgs:#?}");
    assert!(msgs.contains(&format!("Scaled up replica set {} from 0 to 3", rs2.name_any()).as_str()), "{msgs:#?}");

    // A rolling update stuck on pods that never get ready (old 4, new 1 =
    // 4 + maxSurge 1), then scaled to 8: both RSs grow in proportion to
    // their sizes, to 8 + 1 in total (upstream: old round(4*9/5)=7, new
    // 1 + the rest = 2).
    let strategy = json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}});
    api.create(&PostParams::default(), &deployment("prop", 4, "v1", strategy, json!({}))).await.unwrap();
    let d = complete(&api, "prop").await;
    let old_rs = replica_sets(&c.client, &d).await[0].name_any();
    set_image(&api, "prop", "hang").await;
    let sizes = |rss: &[ReplicaSet]| -> Vec<(String, i32)> {
        rss.iter().map(|rs| (rs_image(rs), rs.spec.as_ref().unwrap().replicas.unwrap_or(0))).collect()
    };
    eventually("the rollout is stuck at old 4 + new 1", WAIT, || async {
        let rss = replica_sets(&c.client, &d).await;
        let mut s = sizes(&rss);
        s.sort();
        (s == [("hang".to_string(), 1), ("v1".to_string(), 4)]).then_some(())
    })
    .await;
    patch_deployment(&api, "prop", Patch::Merge(json!({"spec": {"replicas": 8}}))).await;
    let rss = eventually("both RSs are scaled proportionally", WAIT, || async {
        let rss = replica_sets(&c.client, &d).await;
        let mut s = sizes(&rss);
        s.sort();
        (s == [("hang".to_string(), 2), ("v1".to_string(), 7)]).then_some(rss)
    })
    .await;
    for rs in &rss {
        assert_eq!(ann(&rs.metadata, "deployment.kubernetes.io/desired-replicas"), Some("8"), "{}", rs.name_any());
        assert_eq!(ann(&rs.metadata, "deployment.kubernetes.io/max-replicas"), Some("9"), "{}", rs.name_any());
    }
    let events = events_for(&c.client, "re", "Deployment", "prop").await;
    assert!(events.iter().any(|(_, _, m)| m == &format!("Scaled up replica set {old_rs} from 4 to 7")), "{events:#?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_restart_scaling_and_revision_history_limit() {
    let c = Cluster::start().await;
    namespace(&c.client, "pz").await;
    let _kubelet = FakeKubelet::start(c.client.clone(), "pz", |_| Fate::Ready);
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), "pz");
    let extra = json!({"revisionHistoryLimit": 1, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}});
    api.create(&PostParams::default(), &deployment("app", 2, "app:1", extra, json!({}))).await.unwrap();
    let d = complete(&api, "app").await;
    let rs1 = replica_sets(&c.client, &d).await[0].clone();

    let out = kubectl(&c, &["-n", "pz", "rollout", "pause", "deploy/app"]).await;
    assert!(out.status.success(), "{out:?}");
    let d = eventually("the Progressing condition says paused", WAIT, || async {
        let d = api.get("app").await.unwrap();
        (condition(&d, "Progressing").and_then(|c| c.reason).as_deref() == Some("DeploymentPaused")).then_some(d)
    })
    .await;
    let p = condition(&d, "Progressing").unwrap();
    assert_eq!((p.status.as_str(), p.message.as_deref()), ("Unknown", Some("Deployment is paused")));

    // Paused: a new template does not roll out, but scaling works.
    set_image(&api, "app", "app:2").await;
    patch_deployment(&api, "app", Patch::Merge(json!({"spec": {"replicas": 3}}))).await;
    eventually("the paused deployment scales its current RS", WAIT, || async {
        let d = api.get("app").await.unwrap();
        let s = d.status.clone().unwrap_or_default();
        (s.observed_generation == d.metadata.generation && s.available_replicas == Some(3)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = replica_sets(&c.client, &d).await;
    assert_eq!(rss.len(), 1, "no rollout while paused: {rss:#?}");
    assert_eq!(rss[0].spec.as_ref().unwrap().replicas, Some(3));

    let out = kubectl(&c, &["-n", "pz", "rollout", "resume", "deploy/app"]).await;
    assert!(out.status.success(), "{out:?}");
    let d = complete(&api, "app").await;
    assert_eq!(image_of(&d), "app:2");
    let rss = replica_sets(&c.client, &d).await;
    assert_eq!(rss.len(), 2);
    assert_eq!(ann(&d.metadata, REVISION), Some("2"));

    // kubectl rollout restart: a template annotation, so a new revision;
    // with revisionHistoryLimit 1 only one old RS stays.
    let out = kubectl(&c, &["-n", "pz", "rollout", "restart", "deploy/app"]).await;
    assert!(out.status.success(), "{out:?}");
    let d = eventually("the restart rolls out", WAIT, || async {
        let d = complete(&api, "app").await;
        (ann(&d.metadata, REVISION) == Some("3")).then_some(d)
    })
    .await;
    assert!(d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap().contains_key("kubectl.kubernetes.io/restartedAt"));
    let rss = eventually("the oldest RS is pruned", WAIT, || async {
        let rss = replica_sets(&c.client, &d).await;
        (rss.len() == 2).then_some(rss)
    })
    .await;
    assert!(rss.iter().all(|rs| rs.name_any() != rs1.name_any()), "revision 1 was deleted: {rss:#?}");
    let mut revisions: Vec<&str> = rss.iter().filter_map(|rs| ann(&rs.metadata, REVISION)).collect();
    revisions.sort();
    assert_eq!(revisions, ["2", "3"]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deadline_exceeded_when_pods_never_become_ready() {
    let c = Cluster::start().await;
    namespace(&c.client, "pd").await;
    let _kubelet = FakeKubelet::start(c.client.clone(), "pd", |_| Fate::NotReady);
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), "pd");
    api.create(&PostParams::default(), &deployment("slow", 2, "slow:1", json!({"progressDeadlineSeconds": 5}), json!({}))).await.unwrap();
    let d = eventually("Progressing turns False with ProgressDeadlineExceeded", WAIT, || async {
        let d = api.get("slow").await.unwrap();
        let c = condition(&d, "Progressing")?;
        (c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")).then_some(d)
    })
    .await;
    let rs = replica_sets(&c.client, &d).await[0].clone();
    let p = condition(&d, "Progressing").unwrap();
    assert_eq!(p.message, Some(format!("ReplicaSet \"{}\" has timed out progressing.", rs.name_any())));
    let a = condition(&d, "Available").unwrap();
    assert_eq!((a.status.as_str(), a.reason.as_deref()), ("False", Some("MinimumReplicasUnavailable")));
    assert_eq!(a.message.as_deref(), Some("Deployment does not have minimum availability."));
    let s = d.status.clone().unwrap();
    assert_eq!((s.replicas, s.updated_replicas, s.available_replicas.unwrap_or(0), s.unavailable_replicas), (Some(2), Some(2), 0, Some(2)));
    let out = kubectl(&c, &["-n", "pd", "rollout", "status", "deploy/slow", "--timeout=30s"]).await;
    assert!(!out.status.success(), "kubectl rollout status must fail: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("deployment \"slow\" exceeded its progress deadline"), "{out:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rollback_restores_the_last_good_revision() {
    let c = Cluster::start().await;
    namespace(&c.client, "ar").await;
    let _kubelet = FakeKubelet::start(c.client.clone(), "ar", |pod| {
        match pod.spec.as_ref().unwrap().containers[0].image.as_deref() {
            Some("crash") => Fate::CrashLoop(3),
            Some("hang") => Fate::NotReady,
            _ => Fate::Ready,
        }
    });
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), "ar");
    let pp = PostParams::default();
    let auto = json!({"tugboat.io/auto-rollback": "true"});
    // a: crash loops; b: never ready, caught by its deadline; c: crash loops without opting in.
    api.create(&pp, &deployment("a", 2, "v1", json!({}), auto.clone())).await.unwrap();
    api.create(&pp, &deployment("b", 2, "v1", json!({"progressDeadlineSeconds": 5}), auto.clone())).await.unwrap();
    api.create(&pp, &deployment("c", 2, "v1", json!({}), json!({}))).await.unwrap();
    for name in ["a", "b", "c"] {
        complete(&api, name).await;
    }
    for name in ["a", "b"] {
        eventually("the completed revision is recorded as the last good one", WAIT, || async {
            let d = api.get(name).await.unwrap();
            (ann(&d.metadata, "tugboat.io/last-good-revision") == Some("1")).then_some(())
        })
        .await;
    }
    set_image(&api, "a", "crash").await;
    set_image(&api, "b", "hang").await;
    set_image(&api, "c", "crash").await;

    for (name, why) in [("a", "crash-looping"), ("b", "progress deadline exceeded")] {
        let d = eventually(&format!("{name} is rolled back to v1"), WAIT, || async {
            let d = api.get(name).await.unwrap();
            (image_of(&d) == "v1").then_some(d)
        })
        .await;
        assert_eq!(ann(&d.metadata, "tugboat.io/rolled-back-from"), Some("2"));
        let d = complete(&api, name).await;
        assert_eq!(ann(&d.metadata, REVISION), Some("3"), "the good RS is reused as the next revision");
        let rss = replica_sets(&c.client, &d).await;
        assert_eq!(rss.len(), 2);
        let good = rss.iter().find(|rs| rs_image(rs) == "v1").unwrap();
        let bad = rss.iter().find(|rs| rs_image(rs) != "v1").unwrap();
        assert_eq!(ann(&good.metadata, REVISION), Some("3"));
        assert_eq!(ann(&good.metadata, "deployment.kubernetes.io/revision-history"), Some("1"));
        assert_eq!(bad.spec.as_ref().unwrap().replicas, Some(0), "the failed revision is scaled down");
        let events = events_for(&c.client, "ar", "Deployment", name).await;
        let rollbacks: Vec<&(String, String, String)> = events.iter().filter(|(_, r, _)| r == "AutoRollback").collect();
        assert_eq!(rollbacks.len(), 1, "{events:#?}");
        assert_eq!(rollbacks[0].0, "Warning");
        assert!(rollbacks[0].2.starts_with("Rolled back from revision 2 to revision 1"), "{rollbacks:?}");
        assert!(rollbacks[0].2.contains(why), "{rollbacks:?}");
        eventually("the rolled-back revision is the last good one", WAIT, || async {
            let d = api.get(name).await.unwrap();
            (ann(&d.metadata, "tugboat.io/last-good-revision") == Some("3")).then_some(())
        })
        .await;
    }
    // Without the annotation nothing is rolled back.
    let d = api.get("c").await.unwrap();
    assert_eq!(image_of(&d), "crash");
    assert!(events_for(&c.client, "ar", "Deployment", "c").await.iter().all(|(_, r, _)| r != "AutoRollback"));
    c.shutdown().await;
}
