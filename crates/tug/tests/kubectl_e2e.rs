//! End to end: the real `tug server` binary driven by the real kubectl,
//! on the embedded store and on a real etcd. Every test runs against both.

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tug_testkit::{Backend, TugServer};

fn server(backend: Backend) -> TugServer {
    TugServer::start(env!("CARGO_BIN_EXE_tug").as_ref(), backend)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs kubectl, asserts success, returns stdout.
fn ok(s: &TugServer, args: &[&str]) -> String {
    let out = s.kubectl(args);
    assert!(out.status.success(), "kubectl {args:?} failed:\nstdout: {}\nstderr: {}\nserver log:\n{}", text(&out.stdout), text(&out.stderr), s.log());
    text(&out.stdout)
}

/// Runs kubectl, asserts failure, returns stderr.
fn fails(s: &TugServer, args: &[&str]) -> String {
    let out = s.kubectl(args);
    assert!(!out.status.success(), "kubectl {args:?} should have failed:\n{}", text(&out.stdout));
    text(&out.stderr)
}

/// Runs kubectl with `input` on stdin.
fn with_stdin(s: &TugServer, args: &[&str], input: &str) -> Output {
    let mut child = s.kubectl_cmd(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("kubectl");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("kubectl output")
}

fn apply(s: &TugServer, yaml: &str, extra: &[&str]) -> String {
    let mut args = vec!["apply", "-f", "-"];
    args.extend_from_slice(extra);
    let out = with_stdin(s, &args, yaml);
    assert!(out.status.success(), "apply failed: {}\n{}", text(&out.stderr), s.log());
    text(&out.stdout)
}

fn json(s: &TugServer, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&ok(s, &a)).expect("kubectl printed JSON")
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: main
        image: busybox:1.36
        ports: [{containerPort: 80}]
      - name: sidecar
        image: busybox:1.36
"#;

fn configmap(name: &str, data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: \"{data}\"\n")
}

fn create_and_get_in_every_format(s: &TugServer) {
    apply(s, DEPLOYMENT, &[]);
    let wide = ok(s, &["get", "deploy", "web", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]);
    assert!(wide.contains("main,sidecar"), "{wide}");
    assert!(wide.contains("app=web"), "{wide}");
    let yaml = ok(s, &["get", "deploy", "web", "-o", "yaml"]);
    assert!(yaml.contains("revisionHistoryLimit: 10"), "defaults are filled: {yaml}");
    assert!(yaml.contains("maxSurge: 25%"), "{yaml}");
    let jp = ok(s, &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}/{.metadata.generation}/{.spec.template.spec.containers[0].imagePullPolicy}"]);
    assert_eq!(jp, "2/1/IfNotPresent");
    let describe = ok(s, &["describe", "deploy", "web"]);
    assert!(describe.contains("Replicas:") && describe.contains("2 desired"), "{describe}");
    assert!(describe.contains("RollingUpdateStrategy:  25% max unavailable, 25% max surge"), "{describe}");
    ok(s, &["run", "p1", "--image=busybox", "--", "sleep", "100"]);
    let pods = ok(s, &["get", "pods", "-A", "-o", "wide"]);
    let header: Vec<&str> = pods.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]);
    assert!(pods.lines().any(|l| l.starts_with("default") && l.contains("p1") && l.contains("0/1") && l.contains("Pending")), "{pods}");
    let pod = json(s, &["get", "pod", "p1"]);
    assert_eq!(pod["spec"]["restartPolicy"], "Always");
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    let svc = ok(s, &["get", "svc", "kubernetes", "-n", "default"]);
    assert!(svc.contains("ClusterIP") && svc.contains("10.43.0.1") && svc.contains("443/TCP"), "{svc}");
}

fn label_and_annotate(s: &TugServer) {
    apply(s, &configmap("a", "1"), &[]);
    apply(s, &configmap("b", "2"), &[]);
    ok(s, &["label", "cm", "a", "tier=front", "env=prod"]);
    ok(s, &["label", "cm", "b", "tier=back"]);
    ok(s, &["annotate", "cm", "a", "note=hello"]);
    let err = fails(s, &["label", "cm", "a", "tier=other"]);
    assert!(err.contains("already has a value"), "{err}");
    ok(s, &["label", "cm", "a", "tier=other", "--overwrite"]);
    let names = ok(s, &["get", "cm", "-l", "tier in (other,back)", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(names, "a b");
    let names = ok(s, &["get", "cm", "-l", "tier!=back,env", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(names, "a");
    let by_field = ok(s, &["get", "cm", "--field-selector", "metadata.name=b", "-o", "name"]);
    assert_eq!(by_field.trim(), "configmap/b");
    let note = ok(s, &["get", "cm", "a", "-o", "jsonpath={.metadata.annotations.note}"]);
    assert_eq!(note, "hello");
    ok(s, &["label", "cm", "a", "env-"]);
    let labels = json(s, &["get", "cm", "a"])["metadata"]["labels"].clone();
    assert_eq!(labels, serde_json::json!({"tier": "other"}));
}

fn apply_reapply_and_server_side(s: &TugServer) {
    assert!(apply(s, DEPLOYMENT, &[]).contains("created"));
    let changed = DEPLOYMENT.replace("replicas: 2", "replicas: 3").replace("name: sidecar\n        image: busybox:1.36", "name: sidecar\n        image: busybox:1.37");
    assert!(apply(s, &changed, &[]).contains("configured"));
    let d = json(s, &["get", "deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][1]["image"], "busybox:1.37");
    assert_eq!(d["metadata"]["generation"], 2, "a spec change bumps generation");
    assert!(d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].is_string());
    // An unchanged re-apply writes nothing (a ConfigMap: no controller writes its status).
    assert!(apply(s, &changed, &[]).contains("unchanged"));
    apply(s, &configmap("steady", "1"), &[]);
    let rv = json(s, &["get", "cm", "steady"])["metadata"]["resourceVersion"].clone();
    assert!(apply(s, &configmap("steady", "1"), &[]).contains("unchanged"));
    assert_eq!(json(s, &["get", "cm", "steady"])["metadata"]["resourceVersion"], rv);
    // Server-side apply: another manager (kubectl scale) owns replicas now.
    ok(s, &["scale", "deploy", "web", "--replicas=5"]);
    let ssa = changed.replace("replicas: 3", "replicas: 4");
    let out = with_stdin(s, &["apply", "--server-side", "-f", "-"], &ssa);
    assert!(!out.status.success(), "a conflicting server-side apply must fail");
    let err = text(&out.stderr);
    assert!(err.contains("conflict") && err.contains(".spec.replicas"), "{err}");
    assert!(apply(s, &ssa, &["--server-side", "--force-conflicts"]).contains("serverside-applied"));
    let d = json(s, &["get", "deploy", "web", "--show-managed-fields"]);
    assert_eq!(d["spec"]["replicas"], 4);
    let managers: Vec<&str> = d["metadata"]["managedFields"].as_array().unwrap().iter().filter_map(|m| m["manager"].as_str()).collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");
}

fn patch_of_each_type(s: &TugServer) {
    apply(s, DEPLOYMENT, &[]);
    // Strategic: containers merge by name, the other container stays.
    ok(s, &["patch", "deploy", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:2"}]}}}}"#]);
    let d = json(s, &["get", "deploy", "web"]);
    let containers = d["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["image"], "busybox:1.36");
    assert_eq!(containers[1]["image"], "busybox:2");
    // Merge: lists are replaced.
    ok(s, &["patch", "deploy", "web", "--type=merge", "-p", r#"{"metadata":{"labels":{"patched":"yes"}},"spec":{"replicas":6}}"#]);
    let d = json(s, &["get", "deploy", "web"]);
    assert_eq!(d["metadata"]["labels"]["patched"], "yes");
    assert_eq!(d["spec"]["replicas"], 6);
    // JSON patch, and a failing test operation.
    ok(s, &["patch", "deploy", "web", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/replicas","value":1}]"#]);
    assert_eq!(json(s, &["get", "deploy", "web"])["spec"]["replicas"], 1);
    let err = fails(s, &["patch", "deploy", "web", "--type=json", "-p", r#"[{"op":"test","path":"/spec/replicas","value":9}]"#]);
    assert!(!err.is_empty());
    assert_eq!(json(s, &["get", "deploy", "web"])["spec"]["replicas"], 1, "a failed patch writes nothing");
    // Patches that make the object invalid are refused whole.
    let err = fails(s, &["patch", "deploy", "web", "--type=merge", "-p", r#"{"spec":{"replicas":-1}}"#]);
    assert!(err.contains("spec.replicas"), "{err}");
}

fn edit_with_an_editor_script(s: &TugServer) {
    apply(s, &configmap("edited", "before"), &[]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("editor.sh");
    std::fs::write(&script, "#!/bin/sh\nsed -i 's/before/after/' \"$1\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = s.kubectl_cmd(&["edit", "cm", "edited"]).env("EDITOR", &script).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(ok(s, &["get", "cm", "edited", "-o", "jsonpath={.data.key}"]), "after");
}

fn scale(s: &TugServer) {
    apply(s, DEPLOYMENT, &[]);
    assert!(ok(s, &["scale", "deploy", "web", "--replicas=7"]).contains("scaled"));
    assert_eq!(ok(s, &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "7");
    let err = fails(s, &["scale", "deploy", "web", "--replicas=3", "--current-replicas=2"]);
    assert!(err.contains("Expected replicas to be 2"), "{err}");
    let scale: Value = serde_json::from_str(&ok(s, &["get", "--raw", "/apis/apps/v1/namespaces/default/deployments/web/scale"])).unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 7);
    assert_eq!(scale["status"]["selector"], "app=web");
}

fn delete(s: &TugServer) {
    apply(s, &configmap("gone", "x"), &[]);
    assert!(ok(s, &["delete", "cm", "gone"]).contains("deleted"));
    assert!(fails(s, &["get", "cm", "gone"]).contains("NotFound"));
    // A pod not bound to a node goes at once, grace period or not.
    ok(s, &["run", "p2", "--image=busybox"]);
    ok(s, &["delete", "pod", "p2", "--wait=true"]);
    assert!(fails(s, &["get", "pod", "p2"]).contains("not found"));
    // Finalizers hold an object until they are removed.
    apply(s, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n", &[]);
    ok(s, &["delete", "cm", "held", "--wait=false"]);
    let held = json(s, &["get", "cm", "held"]);
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    ok(s, &["patch", "cm", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    assert!(fails(s, &["get", "cm", "held"]).contains("not found"));
    // Cascade flags: the garbage collector (run by `tug server`) honours them.
    for (flag, dependent_survives) in [("--cascade=orphan", true), ("--cascade=background", false), ("--cascade=foreground", false)] {
        apply(s, DEPLOYMENT, &[]);
        let uid = ok(s, &["get", "deploy", "web", "-o", "jsonpath={.metadata.uid}"]);
        let rs = format!(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-1\n  labels: {{app: web}}\n  ownerReferences:\n  - {{apiVersion: apps/v1, kind: Deployment, name: web, uid: {uid}, controller: true, blockOwnerDeletion: true}}\nspec:\n  replicas: 0\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: c, image: busybox}}]\n"
        );
        apply(s, &rs, &[]);
        ok(s, &["delete", "deploy", "web", flag, "--timeout=30s"]);
        assert!(fails(s, &["get", "deploy", "web"]).contains("not found"), "{flag}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = s.kubectl(&["get", "rs", "web-1", "-o", "json"]);
            let present = out.status.success();
            if dependent_survives {
                assert!(present, "{flag}: the ReplicaSet must survive");
                let rs: Value = serde_json::from_slice(&out.stdout).unwrap();
                if rs["metadata"]["ownerReferences"].as_array().map(|a| a.is_empty()).unwrap_or(true) {
                    ok(s, &["delete", "rs", "web-1"]);
                    break;
                }
            } else if !present {
                break;
            }
            assert!(Instant::now() < deadline, "{flag}: dependent not handled in 30s:\n{}", text(&out.stdout));
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // dry run deletes nothing
    apply(s, &configmap("kept", "x"), &[]);
    ok(s, &["delete", "cm", "kept", "--dry-run=server"]);
    ok(s, &["get", "cm", "kept"]);
    // delete by label selector (a collection)
    ok(s, &["label", "cm", "kept", "sel=yes"]);
    assert!(ok(s, &["delete", "cm", "-l", "sel=yes"]).contains("kept"));
    assert!(fails(s, &["get", "cm", "kept"]).contains("not found"));
}

fn watch_sees_events(s: &TugServer) {
    let mut child = s
        .kubectl_cmd(&["get", "cm", "-w", "--output-watch-events", "-o", "json", "--request-timeout=30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Reads watch events until the DELETED one arrives.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for ev in serde_json::Deserializer::from_reader(stdout).into_iter::<Value>().map_while(Result::ok) {
            let name = ev["object"]["metadata"]["name"].as_str().unwrap_or("").to_string();
            if name != "watched" {
                continue;
            }
            let kind = ev["type"].as_str().unwrap_or("").to_string();
            seen.push(format!("{kind} {}", ev["object"]["data"]["key"].as_str().unwrap_or("")));
            if kind == "DELETED" {
                break;
            }
        }
        seen
    });
    std::thread::sleep(Duration::from_millis(800));
    apply(s, &configmap("watched", "v1"), &[]);
    apply(s, &configmap("watched", "v2"), &[]);
    ok(s, &["delete", "cm", "watched"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let events = reader.join().unwrap();
    assert_eq!(events, ["ADDED v1", "MODIFIED v2", "DELETED v2"]);
}

fn namespaces(s: &TugServer) {
    let ns = ok(s, &["get", "ns", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(ns, "default kube-node-lease kube-public kube-system");
    ok(s, &["create", "namespace", "team-a"]);
    let phase = ok(s, &["get", "ns", "team-a", "-o", "jsonpath={.status.phase}/{.metadata.labels.kubernetes\\.io/metadata\\.name}"]);
    assert_eq!(phase, "Active/team-a");
    let out = with_stdin(s, &["apply", "-n", "team-a", "-f", "-"], &configmap("in-a", "1"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(ok(s, &["get", "cm", "-n", "team-a"]).contains("in-a"));
    assert!(!ok(s, &["get", "cm"]).contains("in-a"), "namespaces isolate");
    assert!(ok(s, &["get", "cm", "-A"]).contains("team-a"));
    let out = with_stdin(s, &["apply", "-n", "nowhere", "-f", "-"], &configmap("x", "1"));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("namespaces \"nowhere\" not found"), "{}", text(&out.stderr));
    let err = fails(s, &["create", "namespace", "Bad_NS"]);
    assert!(err.contains("metadata.name") && err.contains("RFC 1123"), "{err}");
    // Deletion marks the namespace Terminating: nothing new may be created
    // in it, its controller empties it, and then it is gone.
    ok(s, &["create", "namespace", "team-b"]);
    let out = with_stdin(s, &["apply", "-n", "team-b", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    ok(s, &["delete", "ns", "team-b", "--wait=false"]);
    assert_eq!(ok(s, &["get", "ns", "team-b", "-o", "jsonpath={.status.phase}"]), "Terminating");
    let out = with_stdin(s, &["apply", "-n", "team-b", "-f", "-"], &configmap("late", "1"));
    assert!(text(&out.stderr).contains("because it is being terminated"), "{}", text(&out.stderr));
    ok(s, &["patch", "cm", "held", "-n", "team-b", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    ok(s, &["delete", "ns", "team-a", "--timeout=60s"]);
    ok(s, &["wait", "--for=delete", "ns/team-b", "--timeout=60s"]);
    assert!(fails(s, &["get", "ns", "team-a"]).contains("not found"));
    assert!(fails(s, &["get", "cm", "in-a", "-n", "team-a"]).contains("not found"));
}

fn configmaps_and_secrets(s: &TugServer) {
    apply(s, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s1\nstringData:\n  password: hunter2\n", &[]);
    let secret = json(s, &["get", "secret", "s1"]);
    assert_eq!(secret["type"], "Opaque");
    let data = ok(s, &["get", "secret", "s1", "-o", "jsonpath={.data.password}"]);
    assert_eq!(data, "aHVudGVyMg==", "stringData is merged into data as base64");
    apply(s, &configmap("c1", "v"), &[]);
    let table = ok(s, &["get", "cm", "c1"]);
    assert!(table.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>()[1] == "1", "{table}");
    let table = ok(s, &["get", "secrets"]);
    assert!(table.contains("s1") && table.contains("Opaque"), "{table}");
}

/// kubectl's typed create commands send protobuf bodies.
fn typed_creates_send_protobuf(s: &TugServer) {
    ok(s, &["create", "deployment", "api", "--image=busybox:1.36", "--replicas=3", "--port=8080"]);
    let d = json(s, &["get", "deploy", "api"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "api");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 8080);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    ok(s, &["create", "deployment", "zero", "--image=busybox", "--replicas=0"]);
    assert_eq!(json(s, &["get", "deploy", "zero"])["spec"]["replicas"], 0, "an explicit zero survives");
    ok(s, &["create", "secret", "generic", "creds", "--from-literal=user=admin"]);
    assert_eq!(ok(s, &["get", "secret", "creds", "-o", "jsonpath={.data.user}"]), "YWRtaW4=");
    ok(s, &["create", "service", "nodeport", "np", "--tcp=80:8080"]);
    let svc = json(s, &["get", "svc", "np"]);
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&node_port), "{svc}");
    assert!(svc["spec"]["clusterIP"].as_str().unwrap().starts_with("10.43."), "{svc}");
    ok(s, &["create", "job", "once", "--image=busybox", "--", "true"]);
    let job = json(s, &["get", "job", "once"]);
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    let uid = job["metadata"]["uid"].as_str().unwrap();
    assert_eq!(job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], uid, "selector generated from the uid");
    assert_eq!(job["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"], "once");
    // A running Job's template and completions are immutable.
    let err = fails(s, &["patch", "job", "once", "--type=merge", "-p", r#"{"spec":{"completions":4}}"#]);
    assert!(err.contains("spec.completions") && err.contains("field is immutable"), "{err}");
    let out = with_stdin(s, &["apply", "-f", "-"], "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: bad\nspec:\n  schedule: \"99 * * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: c, image: busybox}]\n");
    assert!(text(&out.stderr).contains("end of range (99) above maximum (59)"), "{}", text(&out.stderr));
    ok(s, &["create", "priorityclass", "high", "--value=1000"]);
    ok(s, &["create", "quota", "q", "--hard=pods=3"]);
    assert_eq!(ok(s, &["get", "quota", "q", "-o", "jsonpath={.spec.hard.pods}"]), "3");
}

/// Resources served in two versions share one storage, as upstream.
fn versions_share_storage(s: &TugServer) {
    apply(s, "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: web\nspec:\n  minReplicas: 1\n  maxReplicas: 4\n  targetCPUUtilizationPercentage: 60\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n", &[]);
    let v2 = json(s, &["get", "horizontalpodautoscalers.v2.autoscaling", "web"]);
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 60);
    let v1: Value = serde_json::from_str(&ok(s, &["get", "--raw", "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web"])).unwrap();
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
    apply(s, "apiVersion: v1\nkind: Event\nmetadata:\n  name: e1\ninvolvedObject: {kind: Pod, name: p, namespace: default}\nreason: Tested\nmessage: hello\ntype: Normal\n", &[]);
    let new = json(s, &["get", "events.v1.events.k8s.io", "e1"]);
    assert_eq!(new["note"], "hello");
    assert_eq!(new["regarding"]["name"], "p");
    let core = ok(s, &["get", "events", "--field-selector", "involvedObject.name=p", "-o", "jsonpath={.items[*].message}"]);
    assert_eq!(core, "hello");
}

fn explain(s: &TugServer) {
    let out = ok(s, &["explain", "pod.spec"]);
    assert!(out.contains("KIND:       Pod") || out.contains("KIND:     Pod"), "{out}");
    assert!(out.contains("containers") && out.contains("<[]Container>"), "{out}");
    let out = ok(s, &["explain", "deployment.spec.strategy"]);
    assert!(out.contains("rollingUpdate"), "{out}");
}

fn error_cases(s: &TugServer) {
    let err = fails(s, &["get", "deploy", "nope"]);
    assert!(err.contains("Error from server (NotFound): deployments.apps \"nope\" not found"), "{err}");
    apply(s, &configmap("dup", "1"), &[]);
    let out = with_stdin(s, &["create", "-f", "-"], &configmap("dup", "1"));
    assert!(text(&out.stderr).contains("AlreadyExists") && text(&out.stderr).contains("configmaps \"dup\" already exists"), "{}", text(&out.stderr));
    // Unknown fields: kubectl asks for strict validation.
    let out = with_stdin(s, &["apply", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: strict\nbogus: 1\n");
    assert!(text(&out.stderr).contains("unknown field \"bogus\""), "{}", text(&out.stderr));
    let out = with_stdin(s, &["apply", "--validate=false", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lax\nbogus: 1\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(json(s, &["get", "cm", "lax"]).get("bogus").is_none(), "unknown fields are dropped");
    // Malformed input.
    let out = with_stdin(s, &["apply", "-f", "-"], "{ not: [valid");
    assert!(!out.status.success());
    let out = s.kubectl(&["create", "--raw", "/api/v1/namespaces/default/configmaps", "-f", "/dev/null"]);
    assert!(!out.status.success());
    // Invalid objects: 422 with field paths.
    let out = with_stdin(s, &["apply", "-f", "-"], "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nocontainers\nspec:\n  containers: []\n");
    let err = text(&out.stderr);
    assert!(err.contains("is invalid") && err.contains("spec.containers: Required value"), "{err}");
    // A stale resourceVersion is a conflict.
    let mut cm = json(s, &["get", "cm", "dup"]);
    ok(s, &["label", "cm", "dup", "x=y"]);
    cm["data"]["key"] = "stale".into();
    let out = with_stdin(s, &["replace", "-f", "-"], &cm.to_string());
    let err = text(&out.stderr);
    assert!(err.contains("Conflict") && err.contains("the object has been modified"), "{err}");
    // The uid never changes: a patch that tries is invalid, a PUT with another uid a failed precondition.
    let err = fails(s, &["patch", "cm", "dup", "--type=merge", "-p", r#"{"metadata":{"uid":"00000000-0000-0000-0000-000000000000"}}"#]);
    assert!(err.contains("metadata.uid") && err.contains("field is immutable"), "{err}");
    // So is a status write with another uid: it is how a kubelet's status
    // for a pod misses a pod recreated under the same name.
    let err = fails(s, &["patch", "ns", "default", "--subresource=status", "--type=merge", "-p", r#"{"metadata":{"uid":"00000000-0000-0000-0000-000000000000"},"status":{"phase":"Active"}}"#]);
    assert!(err.contains("metadata.uid") && err.contains("field is immutable"), "{err}");
    let mut cm = json(s, &["get", "cm", "dup"]);
    cm["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000".into();
    let out = with_stdin(s, &["replace", "-f", "-"], &cm.to_string());
    assert!(text(&out.stderr).contains("Precondition failed: UID in precondition"), "{}", text(&out.stderr));
    // Bodies over 3 MiB: 413.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    let payload = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": "a".repeat(3 * 1024 * 1024 + 10)}});
    std::fs::write(&big, payload.to_string()).unwrap();
    let out = s.kubectl(&["create", "--raw", "/api/v1/namespaces/default/configmaps", "-f", big.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && (err.contains("413") || err.contains("too large")), "{err}");
    assert!(fails(s, &["get", "cm", "big"]).contains("not found"), "nothing half-written");
    // Anonymous requests are refused, health endpoints are open.
    let url = format!("https://127.0.0.1:{}", s.port);
    let anon = std::process::Command::new(tug_testkit::kubectl_binary())
        .env("KUBECONFIG", "/nonexistent")
        .args(["--server", &url, "--insecure-skip-tls-verify", "--token=not-a-token", "get", "ns"])
        .output()
        .unwrap();
    let anon_err = text(&anon.stderr);
    assert!(!anon.status.success() && anon_err.contains("the server has asked for the client to provide credentials"), "{anon_err}");
    // kubectl prompts for a password when a server wants credentials and it
    // has none, so the anonymous health check goes through curl.
    let health = std::process::Command::new("curl").args(["-sk", &format!("{url}/readyz")]).output().expect("curl");
    assert_eq!(text(&health.stdout), "ok");
}

fn api_resources_and_versions(s: &TugServer) {
    let out = ok(s, &["api-resources"]);
    for line in [
        ("pods", "po", "v1", "true", "Pod"),
        ("deployments", "deploy", "apps/v1", "true", "Deployment"),
        ("namespaces", "ns", "v1", "false", "Namespace"),
        ("horizontalpodautoscalers", "hpa", "autoscaling/v2", "true", "HorizontalPodAutoscaler"),
        ("leases", "", "coordination.k8s.io/v1", "true", "Lease"),
    ] {
        let found = out.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&line.0) && f.contains(&line.2) && f.contains(&line.3) && f.last() == Some(&line.4) && (line.1.is_empty() || f.contains(&line.1))
        });
        assert!(found, "{line:?} missing from:\n{out}");
    }
    let versions = ok(s, &["api-versions"]);
    for v in ["apps/v1", "batch/v1", "autoscaling/v1", "autoscaling/v2", "policy/v1", "v1"] {
        assert!(versions.lines().any(|l| l == v), "{v} missing: {versions}");
    }
    let version = ok(s, &["version", "-o", "json"]);
    let v: Value = serde_json::from_str(&version).unwrap();
    assert_eq!(v["serverVersion"]["major"], "1");
}

/// Acknowledged writes survive SIGKILL of the server: concurrent writers
/// record every create kubectl reported done, the server is killed in the
/// middle, and after a restart every recorded object is there.
fn acknowledged_writes_survive_kill(s: &mut TugServer) {
    use std::sync::{Arc, Mutex};
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let kubeconfig = s.kubeconfig.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        writers.push(std::thread::spawn(move || {
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let name = format!("w{w}-{i}");
                let out = std::process::Command::new(tug_testkit::kubectl_binary())
                    .env("KUBECONFIG", &kubeconfig)
                    .args(["create", "configmap", &name, "--from-literal=k=v", "--request-timeout=5s"])
                    .output()
                    .unwrap();
                if out.status.success() {
                    acked.lock().unwrap().push(name);
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    s.kill_and_restart();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 40, "only {} writes were acknowledged", acked.len());
    let listed = ok(s, &["get", "cm", "-o", "jsonpath={.items[*].metadata.name}"]);
    let present: std::collections::HashSet<&str> = listed.split_whitespace().collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !present.contains(n.as_str())).collect();
    assert!(lost.is_empty(), "acknowledged writes lost after kill -9: {lost:?}");
    // The restarted server keeps serving writes with newer revisions.
    apply(s, &configmap("after-restart", "1"), &[]);
}

/// The JSON objects of a watch response, in order.
fn watch_events(body: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(body).into_iter::<Value>().map(|v| v.expect("watch event JSON")).collect()
}

/// LIST paging and WATCH resourceVersion semantics, through `kubectl get --raw`.
fn list_and_watch_semantics(s: &mut TugServer) {
    for i in 0..5 {
        apply(s, &configmap(&format!("page-{i}"), "x"), &[]);
    }
    let base = "/api/v1/namespaces/default/configmaps";
    // limit/continue walks the whole list at one revision.
    let first: Value = serde_json::from_str(&ok(s, &["get", "--raw", &format!("{base}?limit=2")])).unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let mut token = first["metadata"]["continue"].as_str().expect("a continue token").to_string();
    let mut names: Vec<String> = first["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()).collect();
    while !token.is_empty() {
        let page: Value = serde_json::from_str(&ok(s, &["get", "--raw", &format!("{base}?limit=2&continue={token}")])).unwrap();
        assert_eq!(page["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"]);
        names.extend(page["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()));
        token = page["metadata"]["continue"].as_str().unwrap_or("").to_string();
    }
    assert_eq!(names, ["page-0", "page-1", "page-2", "page-3", "page-4"]);
    // A watch from a revision replays exactly what came after it.
    let rv = first["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    ok(s, &["label", "cm", "page-0", "step=1"]);
    ok(s, &["label", "cm", "page-1", "step=2"]);
    let body = ok(s, &["get", "--raw", &format!("{base}?watch=1&resourceVersion={rv}&timeoutSeconds=1")]);
    let events: Vec<(String, String)> = watch_events(&body).iter().map(|e| (e["type"].as_str().unwrap().into(), e["object"]["metadata"]["name"].as_str().unwrap().into())).collect();
    assert_eq!(events, [("MODIFIED".to_string(), "page-0".to_string()), ("MODIFIED".into(), "page-1".into())]);
    // With a label selector, an object that stops matching is DELETED for that watcher.
    let body = ok(s, &["get", "--raw", &format!("{base}?watch=1&resourceVersion={rv}&timeoutSeconds=1&labelSelector=step%3D1")]);
    let types: Vec<String> = watch_events(&body).iter().map(|e| e["type"].as_str().unwrap().into()).collect();
    assert_eq!(types, ["ADDED"]);
    // Streaming lists: initial ADDED events, then a bookmark that marks their end.
    let body = ok(s, &["get", "--raw", &format!("{base}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1")]);
    let events = watch_events(&body);
    assert_eq!(events.iter().filter(|e| e["type"] == "ADDED").count(), 5);
    let bookmark = events.iter().find(|e| e["type"] == "BOOKMARK").expect("a bookmark");
    assert_eq!(bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    // A revision from the future: 504 after a short wait, as upstream.
    // (curl, because client-go retries what carries Retry-After.)
    let tls = s.data_dir.join("tls");
    let out = std::process::Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}", "--cert"])
        .arg(tls.join("admin.crt"))
        .arg("--key")
        .arg(tls.join("admin.key"))
        .arg(format!("https://127.0.0.1:{}{base}?resourceVersion=999999999", s.port))
        .output()
        .expect("curl");
    let body = text(&out.stdout);
    assert!(body.ends_with("504") && body.contains("Too large resource version"), "{body}");
    // After a restart the old history is gone: the watch gets 410 Gone.
    s.kill_and_restart();
    let body = ok(s, &["get", "--raw", &format!("{base}?watch=1&resourceVersion={rv}&timeoutSeconds=1")]);
    let events = watch_events(&body);
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&super::server(tug_testkit::Backend::Sqlite)); } )*
            #[test] fn acknowledged_writes_survive_kill() { super::acknowledged_writes_survive_kill(&mut super::server(tug_testkit::Backend::Sqlite)); }
            #[test] fn list_and_watch_semantics() { super::list_and_watch_semantics(&mut super::server(tug_testkit::Backend::Sqlite)); }
        }
        mod etcd {
            $( #[test] fn $name() { super::$name(&super::server(tug_testkit::Backend::Etcd)); } )*
            #[test] fn acknowledged_writes_survive_kill() { super::acknowledged_writes_survive_kill(&mut super::server(tug_testkit::Backend::Etcd)); }
            #[test] fn list_and_watch_semantics() { super::list_and_watch_semantics(&mut super::server(tug_testkit::Backend::Etcd)); }
        }
    };
}

on_both_backends!(
    create_and_get_in_every_format,
    label_and_annotate,
    apply_reapply_and_server_side,
    patch_of_each_type,
    edit_with_an_editor_script,
    scale,
    delete,
    watch_sees_events,
    namespaces,
    configmaps_and_secrets,
    versions_share_storage,
    typed_creates_send_protobuf,
    explain,
    error_cases,
    api_resources_and_versions,
);
