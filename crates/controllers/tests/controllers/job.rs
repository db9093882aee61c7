//! The Job controller against the real `tug server` binary (build it first:
//! `cargo build -p tug`). The tests play kubelet: they mark pods
//! Succeeded or Failed through `pods/status`.

use crate::support;
use crate::workloads;

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{Cluster, code, eventually, obj};
use workloads::{events_for, is_active, mark_terminated, pods};

const WAIT: Duration = Duration::from_secs(30);

fn job(name: &str, spec: serde_json::Value) -> Job {
    let mut spec = spec;
    spec["template"] = json!({"metadata": {"labels": {"app": name}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}});
    obj(json!({"metadata": {"name": name}, "spec": spec}))
}

async fn create(client: &Client, j: Job) -> Job {
    Api::<Job>::namespaced(client.clone(), "default").create(&PostParams::default(), &j).await.expect("creating job")
}

async fn get(client: &Client, name: &str) -> Job {
    Api::<Job>::namespaced(client.clone(), "default").get(name).await.expect("reading job")
}

fn condition(j: &Job, type_: &str) -> Option<(String, String)> {
    j.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

async fn job_pods(client: &Client, name: &str) -> Vec<Pod> {
    pods(client, "default", &format!("batch.kubernetes.io/job-name={name}")).await
}

async fn wait_condition(client: &Client, name: &str, type_: &str) -> Job {
    eventually(&format!("job {name} has condition {type_}=True"), WAIT, || async {
        let j = get(client, name).await;
        (condition(&j, type_).map(|c| c.0) == Some("True".into())).then_some(j)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_with_bounded_parallelism() {
    let c = Cluster::start().await;
    let created = create(&c.client, job("pi", json!({"completions": 3, "parallelism": 2}))).await;
    let uid = created.uid().unwrap();

    // The generated selector, as upstream's API strategy sets it.
    let j = eventually("the selector is generated", WAIT, || async {
        let j = get(&c.client, "pi").await;
        j.spec.as_ref().unwrap().selector.is_some().then_some(j)
    })
    .await;
    let sel = serde_json::to_value(j.spec.as_ref().unwrap().selector.as_ref().unwrap()).unwrap();
    assert_eq!(sel, json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}));

    let mut succeeded = 0;
    let mut seen = std::collections::BTreeSet::new();
    while succeeded < 3 {
        let want = (3 - succeeded).min(2);
        eventually(&format!("{want} active pods"), WAIT, || async {
            let ps: Vec<Pod> = job_pods(&c.client, "pi").await.into_iter().filter(is_active).collect();
            (ps.len() >= want).then_some(ps)
        })
        .await;
        // Give the controller time to overshoot if it would.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let active: Vec<Pod> = job_pods(&c.client, "pi").await.into_iter().filter(is_active).collect();
        assert!(active.len() <= 2, "never more than parallelism=2 active: {:?}", active.iter().map(|p| p.name_any()).collect::<Vec<_>>());
        assert_eq!(active.len(), want, "as many active as completions left, up to parallelism");
        let p = &active[0];
        assert!(seen.insert(p.name_any()));
        let labels = p.labels();
        assert_eq!(labels.get("batch.kubernetes.io/controller-uid"), Some(&uid));
        assert_eq!(labels.get("controller-uid"), Some(&uid));
        assert_eq!(labels.get("job-name").map(String::as_str), Some("pi"));
        assert!(p.finalizers().iter().any(|f| f == "batch.kubernetes.io/job-tracking"), "tracking finalizer on {}", p.name_any());
        assert!(p.name_any().starts_with("pi-"));
        mark_terminated(&c.client, "default", &p.name_any(), true).await;
        succeeded += 1;
    }
    let (ok, out) = workloads::kubectl(&c.server, &["wait", "--for=condition=complete", "job/pi", "--timeout=20s"]).await;
    assert!(ok, "kubectl wait --for=condition=complete: {out}");
    let j = wait_condition(&c.client, "pi", "Complete").await;
    let st = j.status.clone().unwrap();
    assert_eq!(st.succeeded, Some(3));
    assert_eq!(st.active.unwrap_or(0), 0);
    assert!(st.completion_time.is_some() && st.start_time.is_some());
    assert_eq!(condition(&j, "SuccessCriteriaMet"), Some(("True".into(), "CompletionsReached".into())));
    assert_eq!(condition(&j, "Complete"), Some(("True".into(), "CompletionsReached".into())));
    // Counted pods lose the finalizer; no pod was created beyond the three.
    let all = job_pods(&c.client, "pi").await;
    assert_eq!(all.len(), 3, "exactly three pods were created");
    assert!(all.iter().all(|p| !p.finalizers().iter().any(|f| f == "batch.kubernetes.io/job-tracking")));
    let events = eventually("Completed event", WAIT, || async {
        let ev = events_for(&c.client, "default", "pi").await;
        ev.iter().any(|(r, _)| r == "Completed").then_some(ev)
    })
    .await;
    assert!(events.iter().any(|(r, m)| r == "SuccessfulCreate" && m.starts_with("Created pod: pi-")), "{events:?}");
    assert!(events.contains(&("Completed".into(), "Job completed".into())), "{events:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_limit_fails_the_job_after_backing_off() {
    let c = Cluster::start().await;
    create(&c.client, job("flaky", json!({"backoffLimit": 1}))).await;
    let first = eventually("the first pod", WAIT, || async { job_pods(&c.client, "flaky").await.into_iter().next() }).await;
    mark_terminated(&c.client, "default", &first.name_any(), false).await;
    let failed_at = Instant::now();
    // Upstream waits 10s (then doubling) before replacing a failed pod.
    let second = eventually("a replacement pod", WAIT, || async {
        job_pods(&c.client, "flaky").await.into_iter().find(|p| p.name_any() != first.name_any())
    })
    .await;
    let waited = failed_at.elapsed();
    assert!(waited >= Duration::from_secs(8), "the replacement waits for the pod failure backoff (10s), came after {waited:?}");
    let j = get(&c.client, "flaky").await;
    assert_eq!(j.status.as_ref().unwrap().failed, Some(1));
    assert!(condition(&j, "Failed").is_none());
    mark_terminated(&c.client, "default", &second.name_any(), false).await;
    let j = wait_condition(&c.client, "flaky", "Failed").await;
    assert_eq!(condition(&j, "Failed").unwrap().1, "BackoffLimitExceeded");
    assert_eq!(condition(&j, "FailureTarget"), Some(("True".into(), "BackoffLimitExceeded".into())));
    assert_eq!(j.status.as_ref().unwrap().failed, Some(2));
    assert!(j.status.as_ref().unwrap().completion_time.is_none(), "a failed job has no completion time");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(job_pods(&c.client, "flaky").await.len(), 2, "no pod after the job failed");
    let events = eventually("BackoffLimitExceeded event", WAIT, || async {
        let ev = events_for(&c.client, "default", "flaky").await;
        ev.iter().any(|(r, _)| r == "BackoffLimitExceeded").then_some(ev)
    })
    .await;
    assert!(events.contains(&("BackoffLimitExceeded".into(), "Job has reached the specified backoff limit".into())), "{events:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_job_runs_every_index() {
    let c = Cluster::start().await;
    create(&c.client, job("idx", json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}))).await;
    let ps = eventually("three indexed pods", WAIT, || async {
        let ps = job_pods(&c.client, "idx").await;
        (ps.len() == 3).then_some(ps)
    })
    .await;
    let mut indexes: Vec<String> = Vec::new();
    for p in &ps {
        let ix = p.annotations().get("batch.kubernetes.io/job-completion-index").cloned().expect("index annotation");
        assert_eq!(p.labels().get("batch.kubernetes.io/job-completion-index"), Some(&ix), "index label");
        assert!(p.name_any().starts_with(&format!("idx-{ix}-")), "{}", p.name_any());
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(format!("idx-{ix}").as_str()));
        let env = spec.containers[0].env.clone().unwrap_or_default();
        let var = env.iter().find(|e| e.name == "JOB_COMPLETION_INDEX").expect("JOB_COMPLETION_INDEX");
        let path = var.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path.clone();
        assert_eq!(path, "metadata.labels['batch.kubernetes.io/job-completion-index']");
        indexes.push(ix);
    }
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    // Index 1 fails and is replaced by a pod with the same index.
    let one = ps.iter().find(|p| p.annotations().get("batch.kubernetes.io/job-completion-index").map(String::as_str) == Some("1")).unwrap();
    for p in &ps {
        if p.name_any() != one.name_any() {
            mark_terminated(&c.client, "default", &p.name_any(), true).await;
        }
    }
    let j = eventually("indexes 0 and 2 completed", WAIT, || async {
        let j = get(&c.client, "idx").await;
        (j.status.as_ref().and_then(|s| s.completed_indexes.as_deref()) == Some("0,2")).then_some(j)
    })
    .await;
    assert!(condition(&j, "Complete").is_none());
    mark_terminated(&c.client, "default", &one.name_any(), true).await;
    let j = wait_condition(&c.client, "idx", "Complete").await;
    assert_eq!(j.status.as_ref().unwrap().completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(j.status.as_ref().unwrap().succeeded, Some(3));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_deadline_fails_the_job_and_removes_its_pods() {
    let c = Cluster::start().await;
    create(&c.client, job("slow", json!({"parallelism": 2, "completions": 4, "activeDeadlineSeconds": 3}))).await;
    eventually("two pods", WAIT, || async { (job_pods(&c.client, "slow").await.len() == 2).then_some(()) }).await;
    let j = get(&c.client, "slow").await;
    assert!(condition(&j, "Failed").is_none(), "not failed before the deadline");
    let j = wait_condition(&c.client, "slow", "Failed").await;
    let started = j.status.as_ref().unwrap().start_time.clone().unwrap().0;
    let failed_at = j.status.as_ref().unwrap().conditions.as_ref().unwrap().iter().find(|c| c.type_ == "Failed").unwrap().last_transition_time.clone().unwrap().0;
    assert!(failed_at.duration_since(started) >= k8s_openapi::jiff::SignedDuration::from_secs(3), "failed only after the deadline");
    assert_eq!(condition(&j, "Failed").unwrap().1, "DeadlineExceeded");
    assert_eq!(j.status.as_ref().unwrap().active.unwrap_or(0), 0);
    // Active pods were deleted, counted as failed, and released.
    eventually("the pods are gone", WAIT, || async { job_pods(&c.client, "slow").await.is_empty().then_some(()) }).await;
    assert_eq!(get(&c.client, "slow").await.status.unwrap().failed, Some(2));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_after_finished_deletes_the_job_and_suspend_holds_pods() {
    let c = Cluster::start().await;
    create(&c.client, job("once", json!({"ttlSecondsAfterFinished": 2, "suspend": true}))).await;
    let j = wait_condition(&c.client, "once", "Suspended").await;
    assert!(j.status.as_ref().unwrap().start_time.is_none(), "a suspended job has not started");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(job_pods(&c.client, "once").await.is_empty(), "no pods while suspended");
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), "default");
    jobs.patch("once", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": false}}))).await.unwrap();
    let p = eventually("a pod once resumed", WAIT, || async { job_pods(&c.client, "once").await.into_iter().next() }).await;
    let j = eventually("Suspended=False once resumed", WAIT, || async {
        let j = get(&c.client, "once").await;
        (condition(&j, "Suspended").map(|c| c.0) == Some("False".into())).then_some(j)
    })
    .await;
    assert!(j.status.as_ref().unwrap().start_time.is_some(), "started when resumed");
    mark_terminated(&c.client, "default", &p.name_any(), true).await;
    wait_condition(&c.client, "once", "Complete").await;
    let done = Instant::now();
    eventually("the finished job is deleted after its TTL", WAIT, || async {
        match jobs.get("once").await {
            Err(e) if code(&e) == Some(404) => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(done.elapsed() >= Duration::from_secs(1), "deleted only after the TTL");
    eventually("its pods go with it", WAIT, || async { job_pods(&c.client, "once").await.is_empty().then_some(()) }).await;
    c.shutdown().await;
}

/// A Job with its own selector (and no `manualSelector`): upstream's API
/// adds the controller-uid to it; where the server keeps it immutable the
/// controller runs the Job with the selector as given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_with_its_own_selector_runs() {
    let c = Cluster::start().await;
    let mut j = job("own", json!({}));
    j.spec.as_mut().unwrap().selector = Some(obj(json!({"matchLabels": {"app": "own"}})));
    create(&c.client, j).await;
    let p = eventually("a pod", WAIT, || async { pods(&c.client, "default", "app=own").await.into_iter().next() }).await;
    assert_eq!(p.owner_references()[0].name, "own");
    mark_terminated(&c.client, "default", &p.name_any(), true).await;
    wait_condition(&c.client, "own", "Complete").await;
    c.shutdown().await;
}
