//! End to end with hollow nodes: the real `tug server --hollow-nodes 3`
//! (API server, scheduler, controllers and three simulated kubelets in one
//! process) driven by the real kubectl through workload lifecycles —
//! Deployments (rollout, set image, undo, scale, delete, Tugboat's
//! automatic rollback), a DaemonSet, a StatefulSet, a Job, and a pod that
//! fits no node. One server is shared; each scenario has its own namespace.

use std::collections::BTreeSet;
use std::io::{BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tug_testkit::{Backend, TugServer};

const NODES: usize = 3;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs kubectl, asserts success, returns stdout.
fn ok(s: &TugServer, args: &[&str]) -> String {
    let out = s.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\nstdout: {}\nstderr: {}\nserver log (tail):\n{}",
        text(&out.stdout),
        text(&out.stderr),
        log_tail(s)
    );
    text(&out.stdout)
}

fn log_tail(s: &TugServer) -> String {
    let log = s.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn json(s: &TugServer, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&ok(s, &a)).expect("kubectl printed JSON")
}

fn apply(s: &TugServer, ns: &str, yaml: &str) {
    let mut child = s
        .kubectl_cmd(&["apply", "-n", ns, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child.stdin.take().expect("stdin").write_all(yaml.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("kubectl output");
    assert!(out.status.success(), "apply failed: {}\n{}", text(&out.stderr), log_tail(s));
}

/// Polls `f` until it returns `Some`, failing with `what` and the last
/// value seen after `timeout`.
fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                assert!(Instant::now() < deadline, "{what}: not reached in {timeout:?}; last seen: {last}");
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn rollout_status(s: &TugServer, ns: &str, what: &str) {
    let out = ok(s, &["rollout", "status", what, "-n", ns, "--timeout=120s"]);
    assert!(out.contains("successfully rolled out") || out.contains("roll out complete"), "{out}");
}

/// The pods of `ns` matching `selector` that are not being deleted.
fn live_pods(s: &TugServer, ns: &str, selector: &str) -> Vec<Value> {
    items(&json(s, &["get", "pods", "-n", ns, "-l", selector]))
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn node_names(s: &TugServer) -> BTreeSet<String> {
    items(&json(s, &["get", "nodes"])).iter().map(|n| n["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

fn wait_for_nodes(s: &TugServer) -> BTreeSet<String> {
    eventually("3 hollow nodes Ready", Duration::from_secs(60), || {
        let nodes = items(&json(s, &["get", "nodes"]));
        let ready = nodes.iter().filter(|n| is_ready_node(n)).count();
        if nodes.len() == NODES && ready == NODES { Ok(()) } else { Err(format!("{} nodes, {ready} Ready", nodes.len())) }
    });
    node_names(s)
}

fn is_ready_node(n: &Value) -> bool {
    n["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn images_of(pods: &[Value]) -> BTreeSet<String> {
    pods.iter().map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string()).collect()
}

/// Pods of the Deployment are `want` live ones, all Running and Ready on
/// hollow nodes, all with `image`.
fn assert_deployment_pods(s: &TugServer, ns: &str, selector: &str, want: usize, image: &str, nodes: &BTreeSet<String>) {
    eventually(&format!("{want} ready pods of {selector} with {image}"), Duration::from_secs(60), || {
        let pods = live_pods(s, ns, selector);
        let ready = pods.iter().filter(|p| p["status"]["phase"] == "Running" && is_ready(p)).count();
        let images = images_of(&pods);
        let on_nodes = pods.iter().all(|p| p["spec"]["nodeName"].as_str().is_some_and(|n| nodes.contains(n)));
        if pods.len() == want && ready == want && images.len() == 1 && images.contains(image) && on_nodes {
            Ok(())
        } else {
            Err(format!("{} pods, {ready} ready, images {images:?}, all on hollow nodes: {on_nodes}", pods.len()))
        }
    });
}

/// The ReplicaSets of the Deployment: (revision, spec.replicas, image).
fn replica_sets(s: &TugServer, ns: &str, selector: &str) -> Vec<(i64, i64, String)> {
    let mut v: Vec<(i64, i64, String)> = items(&json(s, &["get", "rs", "-n", ns, "-l", selector]))
        .iter()
        .map(|rs| {
            (
                rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"].as_str().and_then(|r| r.parse().ok()).unwrap_or(0),
                rs["spec"]["replicas"].as_i64().unwrap_or(-1),
                rs["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn deployment_lifecycle(s: &TugServer, nodes: &BTreeSet<String>) {
    let ns = "deploy";
    ok(s, &["create", "namespace", ns]);
    ok(s, &["create", "deployment", "web", "--image=busybox", "--replicas=3", "-n", ns]);
    rollout_status(s, ns, "deployment/web");
    let d = json(s, &["get", "deploy", "web", "-n", ns]);
    assert_eq!(d["status"]["readyReplicas"], 3, "{}", d["status"]);
    assert_eq!(d["status"]["updatedReplicas"], 3, "{}", d["status"]);
    assert_deployment_pods(s, ns, "app=web", 3, "busybox", nodes);
    assert_eq!(replica_sets(s, ns, "app=web"), [(1, 3, "busybox".to_string())]);

    // A new image rolls out: a second ReplicaSet takes over, the first is scaled to 0.
    ok(s, &["set", "image", "deployment/web", "busybox=busybox:1.37", "-n", ns]);
    rollout_status(s, ns, "deployment/web");
    assert_deployment_pods(s, ns, "app=web", 3, "busybox:1.37", nodes);
    assert_eq!(replica_sets(s, ns, "app=web"), [(1, 0, "busybox".to_string()), (2, 3, "busybox:1.37".to_string())]);

    // Undo goes back to the first template, which becomes revision 3.
    let out = ok(s, &["rollout", "undo", "deployment/web", "-n", ns]);
    assert!(out.contains("rolled back"), "{out}");
    rollout_status(s, ns, "deployment/web");
    let d = json(s, &["get", "deploy", "web", "-n", ns]);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "busybox");
    assert_deployment_pods(s, ns, "app=web", 3, "busybox", nodes);
    assert_eq!(replica_sets(s, ns, "app=web"), [(2, 0, "busybox:1.37".to_string()), (3, 3, "busybox".to_string())]);

    // Scale.
    ok(s, &["scale", "deployment/web", "--replicas=5", "-n", ns]);
    rollout_status(s, ns, "deployment/web");
    assert_deployment_pods(s, ns, "app=web", 5, "busybox", nodes);
    let d = json(s, &["get", "deploy", "web", "-n", ns]);
    assert_eq!(d["status"]["readyReplicas"], 5, "{}", d["status"]);
    assert_eq!(d["status"]["availableReplicas"], 5, "{}", d["status"]);

    // Deleting the Deployment removes its ReplicaSets and their pods.
    assert!(!replica_sets(s, ns, "app=web").is_empty());
    ok(s, &["delete", "deployment", "web", "-n", ns]);
    eventually("ReplicaSets and pods of the deleted Deployment gone", Duration::from_secs(90), || {
        let rs = items(&json(s, &["get", "rs", "-n", ns])).len();
        let pods = items(&json(s, &["get", "pods", "-n", ns])).len();
        if rs == 0 && pods == 0 { Ok(()) } else { Err(format!("{rs} ReplicaSets, {pods} pods")) }
    });
}

const DAEMONSET: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: busybox}]
"#;

fn daemonset_one_pod_per_node(s: &TugServer, nodes: &BTreeSet<String>) {
    let ns = "daemons";
    ok(s, &["create", "namespace", ns]);
    apply(s, ns, DAEMONSET);
    rollout_status(s, ns, "daemonset/agent");
    let pods = eventually("a Running agent pod on every node", Duration::from_secs(60), || {
        let pods = live_pods(s, ns, "app=agent");
        let running = pods.iter().filter(|p| p["status"]["phase"] == "Running").count();
        if pods.len() == NODES && running == NODES { Ok(pods) } else { Err(format!("{} pods, {running} Running", pods.len())) }
    });
    let on: Vec<String> = pods.iter().map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string()).collect();
    let distinct: BTreeSet<String> = on.iter().cloned().collect();
    assert_eq!(&distinct, nodes, "one pod per node: {on:?}");
    let ds = json(s, &["get", "ds", "agent", "-n", ns]);
    assert_eq!(ds["status"]["desiredNumberScheduled"], NODES, "{}", ds["status"]);
    assert_eq!(ds["status"]["numberReady"], NODES, "{}", ds["status"]);
}

const STATEFULSET: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: busybox}]
"#;

/// One observed watch event: (type, pod name, Ready).
type Seen = (String, String, bool);

fn statefulset_in_order(s: &TugServer) {
    let ns = "stateful";
    ok(s, &["create", "namespace", ns]);
    // Watch the pods from before the StatefulSet exists, to see the order
    // in which they are created and become Ready.
    let mut watcher = s
        .kubectl_cmd(&["get", "pods", "-n", ns, "-l", "app=db", "-w", "--output-watch-events", "-o", "json", "--request-timeout=120s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = watcher.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut seen: Vec<Seen> = Vec::new();
        let mut creation: Vec<(String, String)> = Vec::new();
        for ev in serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>().map_while(Result::ok) {
            let name = ev["object"]["metadata"]["name"].as_str().unwrap_or("").to_string();
            let kind = ev["type"].as_str().unwrap_or("").to_string();
            if kind == "ADDED" {
                creation.push((name.clone(), ev["object"]["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string()));
            }
            let ready = is_ready(&ev["object"]);
            let done = name == "web-2" && ready;
            seen.push((kind, name, ready));
            if done {
                break;
            }
        }
        (seen, creation)
    });
    std::thread::sleep(Duration::from_millis(500));
    apply(s, ns, STATEFULSET);
    rollout_status(s, ns, "statefulset/web");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    let (seen, creation) = reader.join().expect("watch reader");
    let added: Vec<&str> = seen.iter().filter(|(k, _, _)| k == "ADDED").map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(added, ["web-0", "web-1", "web-2"], "creation order; events seen: {seen:?}");
    // OrderedReady: web-N is created only once web-(N-1) is Ready.
    for i in 1..3 {
        let prev = format!("web-{}", i - 1);
        let this = format!("web-{i}");
        let prev_ready = seen.iter().position(|(_, n, r)| *n == prev && *r);
        let created = seen.iter().position(|(k, n, _)| k == "ADDED" && *n == this);
        assert!(
            matches!((prev_ready, created), (Some(r), Some(c)) if r < c),
            "{this} was created before {prev} was Ready; events seen: {seen:?}"
        );
    }
    let times: Vec<&str> = creation.iter().map(|(_, t)| t.as_str()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "creationTimestamps follow the ordinals: {creation:?}");
    let pods = live_pods(s, ns, "app=db");
    let names: BTreeSet<&str> = pods.iter().filter_map(|p| p["metadata"]["name"].as_str()).collect();
    assert_eq!(names, BTreeSet::from(["web-0", "web-1", "web-2"]));
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Running" && is_ready(p)), "all Running and Ready");
    let sts = json(s, &["get", "sts", "web", "-n", ns]);
    assert_eq!(sts["status"]["readyReplicas"], 3, "{}", sts["status"]);
}

const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: once
spec:
  completions: 2
  parallelism: 1
  template:
    metadata:
      annotations:
        tugboat.io/hollow-exit-code: "0"
        tugboat.io/hollow-run-seconds: "1"
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox, command: ["true"]}]
"#;

fn job_runs_to_completion(s: &TugServer) {
    let ns = "jobs";
    ok(s, &["create", "namespace", ns]);
    apply(s, ns, JOB);
    let out = ok(s, &["wait", "--for=condition=complete", "job/once", "-n", ns, "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");
    let job = json(s, &["get", "job", "once", "-n", ns]);
    assert_eq!(job["status"]["succeeded"], 2, "{}", job["status"]);
    assert!(job["status"]["completionTime"].is_string(), "{}", job["status"]);
    let pods = items(&json(s, &["get", "pods", "-n", ns, "-l", "batch.kubernetes.io/job-name=once"]));
    let succeeded = pods.iter().filter(|p| p["status"]["phase"] == "Succeeded").count();
    assert_eq!(succeeded, 2, "two pods ran to completion: {:?}", pods.iter().map(|p| &p["status"]["phase"]).collect::<Vec<_>>());
}

const TOO_BIG: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: too-big
spec:
  containers:
  - name: c
    image: busybox
    resources:
      requests: {cpu: "100"}
"#;

fn unschedulable_pod_stays_pending(s: &TugServer) {
    let ns = "pending";
    ok(s, &["create", "namespace", ns]);
    apply(s, ns, TOO_BIG);
    let msg = eventually("a FailedScheduling event for too-big", Duration::from_secs(60), || {
        let evs = items(&json(s, &["get", "events", "-n", ns, "--field-selector", "involvedObject.name=too-big,reason=FailedScheduling"]));
        match evs.first() {
            Some(e) => Ok(e["message"].as_str().unwrap_or("").to_string()),
            None => Err("no event".into()),
        }
    });
    assert!(msg.starts_with("0/3 nodes are available: 3 Insufficient cpu."), "{msg}");
    let ev = &items(&json(s, &["get", "events", "-n", ns, "--field-selector", "involvedObject.name=too-big,reason=FailedScheduling"]))[0];
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["involvedObject"]["kind"], "Pod");
    // Still Pending a while later, unbound, with PodScheduled=False/Unschedulable.
    std::thread::sleep(Duration::from_secs(2));
    let pod = json(s, &["get", "pod", "too-big", "-n", ns]);
    assert_eq!(pod["status"]["phase"], "Pending");
    assert!(pod["spec"]["nodeName"].is_null(), "{}", pod["spec"]["nodeName"]);
    let cond = pod["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled").cloned()).unwrap_or_default();
    assert_eq!(cond["status"], "False", "{cond}");
    assert_eq!(cond["reason"], "Unschedulable", "{cond}");
    // And `kubectl describe` shows it as upstream's does.
    let describe = ok(s, &["describe", "pod", "too-big", "-n", ns]);
    assert!(describe.contains("FailedScheduling") && describe.contains("Insufficient cpu"), "{describe}");
}

const CANARY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: canary
  annotations:
    tugboat.io/auto-rollback: "true"
spec:
  replicas: 2
  selector: {matchLabels: {app: canary}}
  template:
    metadata: {labels: {app: canary}}
    spec:
      containers: [{name: app, image: "busybox:1.36"}]
"#;

fn auto_rollback_of_a_failing_revision(s: &TugServer, nodes: &BTreeSet<String>) {
    let ns = "rollback";
    ok(s, &["create", "namespace", ns]);
    apply(s, ns, CANARY);
    rollout_status(s, ns, "deployment/canary");
    // The controller records revision 1 as the last good one.
    eventually("last-good-revision recorded", Duration::from_secs(30), || {
        let d = json(s, &["get", "deploy", "canary", "-n", ns]);
        let good = d["metadata"]["annotations"]["tugboat.io/last-good-revision"].clone();
        if good == "1" { Ok(()) } else { Err(good.to_string()) }
    });
    // Revision 2: its containers exit with 1 at once, so they crash-loop.
    ok(
        s,
        &[
            "patch",
            "deploy",
            "canary",
            "-n",
            ns,
            "-p",
            r#"{"spec":{"template":{"metadata":{"annotations":{"tugboat.io/hollow-exit-code":"1"}},"spec":{"containers":[{"name":"app","image":"busybox:broken"}]}}}}"#,
        ],
    );
    let d = eventually("the Deployment rolled back to revision 1's template", Duration::from_secs(90), || {
        let d = json(s, &["get", "deploy", "canary", "-n", ns]);
        let image = d["spec"]["template"]["spec"]["containers"][0]["image"].clone();
        if image == "busybox:1.36" && d["metadata"]["annotations"]["tugboat.io/rolled-back-from"] == "2" {
            Ok(d)
        } else {
            Err(format!("image {image}, annotations {}", d["metadata"]["annotations"]))
        }
    });
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["tugboat.io/hollow-exit-code"].is_null(),
        "the failing template's annotation is gone: {}",
        d["spec"]["template"]["metadata"]
    );
    let evs = items(&json(s, &["get", "events", "-n", ns, "--field-selector", "reason=AutoRollback"]));
    assert_eq!(evs.len(), 1, "one AutoRollback event: {evs:?}");
    let msg = evs[0]["message"].as_str().unwrap_or("");
    assert_eq!(evs[0]["type"], "Warning");
    assert!(msg.starts_with("Rolled back from revision 2 to revision 1"), "{msg}");
    // The rollback completes: the good template is revision 3, all its pods ready.
    rollout_status(s, ns, "deployment/canary");
    assert_deployment_pods(s, ns, "app=canary", 2, "busybox:1.36", nodes);
    let rs = replica_sets(s, ns, "app=canary");
    assert_eq!(rs, [(2, 0, "busybox:broken".to_string()), (3, 2, "busybox:1.36".to_string())]);
}

#[test]
fn workloads_on_hollow_nodes() {
    let started = Instant::now();
    let s = TugServer::start_with_args(env!("CARGO_BIN_EXE_tug").as_ref(), Backend::Sqlite, &["--hollow-nodes", "3"]);
    let nodes = wait_for_nodes(&s);
    assert_eq!(nodes.len(), NODES, "{nodes:?}");
    let mut timings = Vec::new();
    let mut run = |name: &str, f: &dyn Fn()| {
        let t = Instant::now();
        f();
        timings.push(format!("{name} {:.1}s", t.elapsed().as_secs_f64()));
    };
    run("deployment", &|| deployment_lifecycle(&s, &nodes));
    run("daemonset", &|| daemonset_one_pod_per_node(&s, &nodes));
    run("statefulset", &|| statefulset_in_order(&s));
    run("job", &|| job_runs_to_completion(&s));
    run("unschedulable", &|| unschedulable_pod_stays_pending(&s));
    run("auto-rollback", &|| auto_rollback_of_a_failing_revision(&s, &nodes));
    eprintln!("hollow e2e: {} (total {:.1}s)", timings.join(", "), started.elapsed().as_secs_f64());
}
