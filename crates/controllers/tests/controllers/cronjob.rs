//! The CronJob controller against the real `tug server` binary (build it
//! first: `cargo build -p tug`), with the Job controller, and a clock that
//! runs ahead of the real one so that "the next minute" comes in seconds.
//! The scheduling math itself is unit-tested in the crate.

use crate::support;
use crate::workloads;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{Cluster, eventually, obj};
use tug_controllers::cronjob;
use workloads::{events_for, mark_terminated, pods};

const WAIT: Duration = Duration::from_secs(30);

/// A bare server with the Job controller and a CronJob controller whose
/// clock is `offset` seconds ahead of the real one.
struct Setup {
    _server: support::Server,
    client: Client,
    offset: Arc<AtomicI64>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn setup() -> Setup {
    let (server, client) = Cluster::bare().await;
    let offset = Arc::new(AtomicI64::new(0));
    let o = offset.clone();
    let clock: tug_controllers::kit::Clock = Arc::new(move || Timestamp::now() + SignedDuration::from_secs(o.load(Ordering::SeqCst)));
    let tasks = vec![
        tokio::spawn(tug_controllers::job::run(server.client().await)),
        tokio::spawn(cronjob::run_with(server.client().await, cronjob::Config { clock, ..Default::default() })),
    ];
    Setup { _server: server, client, offset, tasks }
}

fn cronjob(name: &str, schedule: &str, extra: serde_json::Value) -> CronJob {
    let mut spec = json!({"schedule": schedule, "jobTemplate": {"metadata": {"labels": {"team": "t"}}, "spec": {"template": {
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    obj(json!({"metadata": {"name": name}, "spec": spec}))
}

async fn create(client: &Client, cj: CronJob) -> CronJob {
    Api::<CronJob>::namespaced(client.clone(), "default").create(&PostParams::default(), &cj).await.expect("creating cronjob")
}

async fn jobs_of(client: &Client, cj: &str) -> Vec<Job> {
    let api: Api<Job> = Api::namespaced(client.clone(), "default");
    let mut v: Vec<Job> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|j| j.owner_references().iter().any(|r| r.kind == "CronJob" && r.name == cj))
        .collect();
    v.sort_by_key(|j| j.name_any());
    v
}

fn minute_of(t: Timestamp) -> i64 {
    t.as_second().div_euclid(60)
}

/// Succeeds the (single) pod of `job`.
async fn complete(client: &Client, job: &str) {
    let p = eventually(&format!("the pod of {job}"), WAIT, || async {
        pods(client, "default", &format!("batch.kubernetes.io/job-name={job}")).await.into_iter().next()
    })
    .await;
    mark_terminated(client, "default", &p.name_any(), true).await;
}

/// Waits until `cj`'s status lists `job` as active.
async fn active_recorded(client: &Client, cj: &str, job: &str) -> k8s_openapi::api::batch::v1::CronJobStatus {
    eventually(&format!("{cj} records {job} as active"), WAIT, || async {
        let c = Api::<CronJob>::namespaced(client.clone(), "default").get(cj).await.unwrap();
        let st = c.status.unwrap_or_default();
        st.active.as_ref().map(|a| a.iter().any(|r| r.name.as_deref() == Some(job))).unwrap_or(false).then_some(st)
    })
    .await
}

/// Makes the controller look at `name` again (after the test moved the clock).
async fn poke(client: &Client, name: &str, n: u32) {
    let api: Api<CronJob> = Api::namespaced(client.clone(), "default");
    api.patch(name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"test/poke": n.to_string()}}}))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_schedule_wakes_itself_and_prunes_history() {
    let s = setup().await;
    let created = create(&s.client, cronjob("tick", "* * * * *", json!({"successfulJobsHistoryLimit": 1}))).await;
    let t0 = created.metadata.creation_timestamp.clone().unwrap().0;
    // The first scheduled time after creation, and a clock 2s before the one after it.
    let first = (minute_of(t0) + 1) * 60;
    s.offset.store(first + 58 - Timestamp::now().as_second(), Ordering::SeqCst);
    poke(&s.client, "tick", 1).await;

    let first_name = format!("tick-{}", first / 60);
    let j = eventually("the job of the first (missed) scheduled time", WAIT, || async { jobs_of(&s.client, "tick").await.into_iter().next() }).await;
    assert_eq!(j.name_any(), first_name);
    let when = Timestamp::from_second(first).unwrap();
    assert_eq!(j.annotations().get("batch.kubernetes.io/cronjob-scheduled-timestamp"), Some(&when.to_string()), "RFC 3339, in UTC without spec.timeZone");
    assert_eq!(j.labels().get("team").map(String::as_str), Some("t"), "the job template's labels");
    assert_eq!(j.owner_references()[0].controller, Some(true));
    let st = active_recorded(&s.client, "tick", &first_name).await;
    assert_eq!(st.last_schedule_time.unwrap().0, when);
    assert_eq!(st.active.unwrap().iter().map(|r| r.name.clone().unwrap()).collect::<Vec<_>>(), [first_name.as_str()]);

    // The next minute comes 2s later (in the controller's time): it wakes
    // up by itself, without any change to the cronjob.
    let second_name = format!("tick-{}", first / 60 + 1);
    let jobs = eventually("the next minute's job, without a poke", Duration::from_secs(10), || async {
        let js = jobs_of(&s.client, "tick").await;
        (js.len() == 2).then_some(js)
    })
    .await;
    assert_eq!(jobs[1].name_any(), second_name);

    complete(&s.client, &first_name).await;
    complete(&s.client, &second_name).await;
    let cj = eventually("no job active, last success recorded", WAIT, || async {
        let cj = Api::<CronJob>::namespaced(s.client.clone(), "default").get("tick").await.unwrap();
        let st = cj.status.clone().unwrap_or_default();
        (st.active.unwrap_or_default().is_empty() && st.last_successful_time.is_some()).then_some(cj)
    })
    .await;
    assert!(cj.status.unwrap().last_schedule_time.is_some());
    // successfulJobsHistoryLimit 1: the older successful job is deleted.
    let left = eventually("the older job pruned", WAIT, || async {
        let js = jobs_of(&s.client, "tick").await;
        (js.len() == 1).then_some(js)
    })
    .await;
    assert_eq!(left[0].name_any(), second_name);
    let events = eventually("the events", WAIT, || async {
        let ev = events_for(&s.client, "default", "tick").await;
        (ev.iter().any(|(r, _)| r == "SuccessfulDelete") && ev.iter().any(|(r, m)| r == "SawCompletedJob" && m.contains(&second_name))).then_some(ev)
    })
    .await;
    assert!(events.contains(&("SuccessfulCreate".into(), format!("Created job {first_name}"))), "{events:?}");
    assert!(events.contains(&("SuccessfulDelete".into(), format!("Deleted job {first_name}"))), "{events:?}");
    assert!(events.iter().any(|(r, m)| r == "SawCompletedJob" && m.starts_with(&format!("Saw completed job: {second_name}"))), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_skips_while_active_and_replace_replaces() {
    let s = setup().await;
    let forbid = create(&s.client, cronjob("forbid", "* * * * *", json!({"concurrencyPolicy": "Forbid"}))).await;
    let replace = create(&s.client, cronjob("replace", "* * * * *", json!({"concurrencyPolicy": "Replace"}))).await;
    let created = |cj: &CronJob| minute_of(cj.metadata.creation_timestamp.clone().unwrap().0);
    let m1 = created(&forbid).max(created(&replace)) + 1;
    // Just after the first scheduled time.
    s.offset.store(m1 * 60 + 1 - Timestamp::now().as_second(), Ordering::SeqCst);
    poke(&s.client, "forbid", 1).await;
    poke(&s.client, "replace", 1).await;
    for cj in ["forbid", "replace"] {
        eventually(&format!("{cj}'s first job"), WAIT, || async {
            let js = jobs_of(&s.client, cj).await;
            (js.iter().map(|j| j.name_any()).collect::<Vec<_>>() == [format!("{cj}-{m1}")]).then_some(())
        })
        .await;
    }

    // The controller has recorded them before the clock moves on.
    for cj in ["forbid", "replace"] {
        active_recorded(&s.client, cj, &format!("{cj}-{m1}")).await;
    }
    // A minute later, the first jobs still running.
    s.offset.fetch_add(60, Ordering::SeqCst);
    poke(&s.client, "forbid", 2).await;
    poke(&s.client, "replace", 2).await;
    // Replace: the running job is deleted, the new one takes its place.
    let m2 = m1 + 1;
    eventually("replace runs the new job instead of the old one", WAIT, || async {
        let js = jobs_of(&s.client, "replace").await;
        (js.iter().map(|j| j.name_any()).collect::<Vec<_>>() == [format!("replace-{m2}")]).then_some(())
    })
    .await;
    let st = active_recorded(&s.client, "replace", &format!("replace-{m2}")).await;
    let active: Vec<String> = st.active.unwrap_or_default().into_iter().filter_map(|r| r.name).collect();
    assert_eq!(active, [format!("replace-{m2}")], "only the new job is active");
    // Forbid: skipped, with an event.
    eventually("JobAlreadyActive", WAIT, || async {
        let ev = events_for(&s.client, "default", "forbid").await;
        ev.contains(&(
            "JobAlreadyActive".to_string(),
            "Not starting job because prior execution is running and concurrency policy is Forbid".to_string(),
        ))
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(jobs_of(&s.client, "forbid").await.len(), 1, "Forbid starts nothing while a job is active");

    // Once the first one finishes, the skipped time runs (it is still the most recent).
    complete(&s.client, &format!("forbid-{m1}")).await;
    eventually("forbid runs the skipped time once the first job finished", WAIT, || async {
        let js = jobs_of(&s.client, "forbid").await;
        js.iter().any(|j| j.name_any() == format!("forbid-{m2}")).then_some(())
    })
    .await;
}
