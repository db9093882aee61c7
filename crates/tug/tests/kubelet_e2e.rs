//! End to end: real containers. The busybox test image in a local registry
//! (scripts/test-image.sh), the real `tug server` on SQLite, the real
//! `tug agent` with its own containerd, runc and CNI bridge in a temp data
//! dir, and the real kubectl:
//! - a busybox httpd pod becomes Running and Ready and answers HTTP on its
//!   pod IP from the host; its env vars carry their values; its memory
//!   limit is in its cgroup;
//! - a restarted agent adopts the running pod instead of recreating it;
//! - init containers run in order before the app container;
//! - a missing image gives ErrImagePull, then ImagePullBackOff, with events;
//! - a crashing container reaches CrashLoopBackOff with restartCount > 0;
//! - a memory hog over its limit is OOMKilled;
//! - deleting pods removes their containers, network namespaces and cgroups.
//!
//! Needs root and the packages of scripts/setup.sh (containerd, runc, CNI
//! plugins, docker-registry, skopeo, umoci, busybox-static); skipped with a
//! message where they are missing. Everything the test caused (containerd,
//! shims, mounts, the bridge `tugbr-<pid>`, masquerade rules, cgroups under
//! `/tug-e2e-<pid>`) is removed on drop, also when it fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tug_testkit::node::{NodeCleanup, TestRegistry, containers_available, leftover_cgroups};
use tug_testkit::{Backend, TugServer};

const WAIT: Duration = Duration::from_secs(90);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The node agent process, stopped (SIGTERM) on drop.
struct Agent {
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
}

impl Agent {
    fn start(args: Vec<String>, log: PathBuf) -> Agent {
        let mut a = Agent {
            child: None,
            args,
            log,
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let child = Command::new(env!("CARGO_BIN_EXE_tug"))
            .arg("agent")
            .args(&self.args)
            .env(
                "TUG_LOG",
                std::env::var("TUG_LOG").unwrap_or_else(|_| "info,tug_kubelet=debug".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning tug agent");
        self.child = Some(child);
    }

    /// SIGTERM, as a service manager stops it; waits for the exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The whole node under test. Field order is drop order: the agent stops
/// first, then the cleanup guard removes what is left on the machine, then
/// the registry and the server go.
struct Node {
    agent: Agent,
    _cleanup: NodeCleanup,
    registry: TestRegistry,
    server: TugServer,
    name: String,
    cgroup_root: String,
    state_dir: PathBuf,
    containerd_socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let pid = std::process::id();
        let dir = tempfile::Builder::new()
            .prefix("tug-kubelet-e2e-")
            .tempdir()
            .expect("temp dir");
        let bridge = format!("tugbr-{pid}");
        let cgroup_root = format!("/tug-e2e-{pid}");
        let cleanup = NodeCleanup {
            root: dir.path().to_path_buf(),
            bridge: bridge.clone(),
            cgroup_root: cgroup_root.clone(),
        };
        let registry = TestRegistry::start();
        // A cluster CIDR of our own, so that concurrent runs never share routes.
        let cluster_cidr = format!("10.{}.0.0/16", 150 + pid % 50);
        let server = TugServer::start_with_args(
            Path::new(env!("CARGO_BIN_EXE_tug")),
            Backend::Sqlite,
            &["--cluster-cidr", &cluster_cidr],
        );
        // The registry as k3s configures a plain-HTTP mirror.
        let registries = dir.path().join("registries.yaml");
        std::fs::write(
            &registries,
            format!(
                "mirrors:\n  \"{0}\":\n    endpoint:\n      - \"http://{0}\"\n",
                registry.addr
            ),
        )
        .unwrap();
        let data_dir = dir.path().join("node");
        let name = format!("tug-e2e-{pid}");
        let args: Vec<String> = [
            "--kubeconfig",
            &server.kubeconfig.to_string_lossy(),
            "--server",
            &format!("https://127.0.0.1:{}", server.port),
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--node-name",
            &name,
            "--node-ip",
            "127.0.0.1",
            "--pause-image",
            &registry.pause(),
            "--private-registry",
            &registries.to_string_lossy(),
            "--cni-bridge",
            &bridge,
            "--kubelet-arg",
            &format!("cgroup-root={cgroup_root}"),
            // The test must not depend on how full the shared disk is.
            "--kubelet-arg",
            "eviction-hard=memory.available<1Mi,nodefs.available<1Mi",
            "--kubelet-arg",
            &format!("pod-cidr=10.{}.255.0/24", 150 + pid % 50),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let agent = Agent::start(args, dir.path().join("agent.log"));
        let agent_dir = data_dir.join("agent");
        Node {
            agent,
            _cleanup: cleanup,
            registry,
            server,
            name,
            cgroup_root,
            state_dir: agent_dir.join("containerd/state"),
            containerd_socket: agent_dir.join("containerd/containerd.sock"),
            _dir: dir,
        }
    }

    fn logs(&self) -> String {
        let pods = text(&self.server.kubectl(&["get", "pods", "-o", "wide"]).stdout);
        let node = text(
            &self
                .server
                .kubectl(&["get", "node", &self.name, "-o", "yaml"])
                .stdout,
        );
        let events = text(&self.server.kubectl(&["get", "events", "-A"]).stdout);
        let agent = self.agent.log();
        let tail: Vec<&str> = agent
            .lines()
            .rev()
            .take(80)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!(
            "--- pods ---\n{pods}\n--- node ---\n{node}\n--- events ---\n{events}\n--- agent log (tail) ---\n{}\n--- server log ---\n{}",
            tail.join("\n"),
            self.server.log()
        )
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = self.server.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr),
            self.logs()
        );
        text(&out.stdout)
    }

    fn apply(&self, yaml: &str) {
        let mut child = self
            .server
            .kubectl_cmd(&["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{}",
            text(&out.stderr),
            self.logs()
        );
    }

    fn pod(&self, name: &str) -> Value {
        serde_json::from_str(&self.kubectl(&["get", "pod", name, "-o", "json"])).expect("pod JSON")
    }

    /// Polls `f` until it returns `Some`, panicking with `what` and the logs on timeout.
    fn wait_for<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = f() {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Containers and sandboxes of the runtime (through containerd's own CLI).
    fn runtime_objects(&self) -> Vec<String> {
        let sock = self.containerd_socket.to_string_lossy().into_owned();
        let mut out = Vec::new();
        for what in ["containers", "tasks"] {
            let o = Command::new("ctr")
                .args(["-a", &sock, "-n", "k8s.io", what, "ls", "-q"])
                .output()
                .expect("ctr");
            out.extend(
                text(&o.stdout)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| format!("{what}: {l}")),
            );
        }
        out
    }

    fn netns(&self) -> Vec<String> {
        std::fs::read_dir(self.state_dir.join("io.containerd.grpc.v1.cri/netns"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s =
        TcpStream::connect_timeout(&addr.parse().expect("address"), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

fn condition(pod: &Value, t: &str) -> Option<String> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .and_then(|c| c["status"].as_str())
        .map(String::from)
}

#[test]
fn pods_run_in_real_containers() {
    if let Err(why) = containers_available() {
        eprintln!("skipping the kubelet end-to-end test: {why}");
        return;
    }
    let mut node = Node::start();
    let image = node.registry.busybox();

    // The node registers and becomes Ready once its network is configured.
    node.wait_for("the node to be Ready", WAIT, || {
        let out = node
            .server
            .kubectl(&["get", "node", &node.name, "-o", "json"]);
        let n: Value = serde_json::from_slice(&out.stdout).ok()?;
        let ready = n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(n)
    });
    let n: Value =
        serde_json::from_str(&node.kubectl(&["get", "node", &node.name, "-o", "json"])).unwrap();
    assert!(
        n["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("containerd://"),
        "{n}"
    );
    assert_eq!(n["status"]["capacity"]["pods"], "110");
    for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert!(
            n["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == t),
            "{t} missing: {n}"
        );
    }
    let lease = node.kubectl(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        &node.name,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(lease, node.name);

    node.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: httpd
    image: {image}
    command: ["sh", "-c", "env > /var/www/env.txt; exec httpd -f -p 8080 -h /var/www"]
    env:
    - {{name: GREETING, value: hello}}
    - {{name: GREETING_TWICE, value: "$(GREETING) $(GREETING)"}}
    - {{name: MY_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: MY_NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
    - {{name: MY_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: MEM_LIMIT_MI, valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}}}
    resources:
      limits: {{memory: 64Mi, cpu: 250m}}
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /index.html, port: http}}, periodSeconds: 1}}
    livenessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 2}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: site}}
data: {{page.txt: "from a configmap", MODE: fast}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{password: s3cret}}
---
apiVersion: v1
kind: Pod
metadata: {{name: vols}}
spec:
  terminationGracePeriodSeconds: 0
  volumes:
  - {{name: shared, emptyDir: {{}}}}
  - {{name: www, emptyDir: {{medium: Memory}}}}
  - {{name: site, configMap: {{name: site}}}}
  - {{name: creds, secret: {{secretName: creds}}}}
  containers:
  - name: writer
    image: {image}
    command: ["sh", "-c", "echo written-by-writer > /shared/f.txt; exec sleep 3600"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: web
    image: {image}
    command: ["sh", "-c", "echo $MODE $PASSWORD > /www/env.txt; exec httpd -f -p 8080 -h /www"]
    env:
    - {{name: MODE, valueFrom: {{configMapKeyRef: {{name: site, key: MODE}}}}}}
    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
    volumeMounts:
    - {{name: www, mountPath: /www}}
    - {{name: shared, mountPath: /www/shared}}
    - {{name: site, mountPath: /www/site}}
    - {{name: creds, mountPath: /www/creds}}
---
apiVersion: v1
kind: Pod
metadata: {{name: ready-later}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {image}
    command: ["sh", "-c", "sleep 8; touch /tmp/ready; exec sleep 3600"]
    readinessProbe: {{exec: {{command: ["cat", "/tmp/ready"]}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: unhealthy}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {image}
    command: ["httpd", "-f", "-p", "8080", "-h", "/var/www"]
    livenessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1, failureThreshold: 2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: init}}
spec:
  terminationGracePeriodSeconds: 0
  initContainers:
  - {{name: first, image: {image}, command: ["sh", "-c", "sleep 1"]}}
  - {{name: second, image: {image}, command: ["true"]}}
  containers:
  - {{name: app, image: {image}, command: ["sleep", "3600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: noimage}}
spec:
  containers:
  - {{name: c, image: "{registry}/does-not-exist:1"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: crash}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: c, image: {image}, command: ["sh", "-c", "echo crashing; exit 3"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hog}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {image}
    command: ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"]
    resources:
      limits: {{memory: 24Mi}}
"#,
        registry = node.registry.addr
    ));

    // The httpd pod: Running, Ready, answering on its pod IP.
    let web = node.wait_for("web to be Running and Ready", WAIT, || {
        let p = node.pod("web");
        (p["status"]["phase"] == "Running" && condition(&p, "Ready").as_deref() == Some("True"))
            .then_some(p)
    });
    let ip = web["status"]["podIP"].as_str().expect("podIP").to_string();
    assert_eq!(web["status"]["hostIP"], "127.0.0.1");
    assert_eq!(web["status"]["qosClass"], "Guaranteed");
    assert!(web["status"]["startTime"].is_string());
    for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(condition(&web, t).as_deref(), Some("True"), "{t}: {web}");
    }
    let cs = container_status(&web, "httpd").expect("httpd status");
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["restartCount"], 0);
    let container_id = cs["containerID"].as_str().unwrap().to_string();
    assert!(container_id.starts_with("containerd://"));
    let addr = format!("{ip}:8080");
    let body = node.wait_for("httpd to answer", Duration::from_secs(20), || {
        http_get(&addr, "/index.html").ok()
    });
    assert!(
        body.starts_with("HTTP/1.") && body.contains("200") && body.contains("tugboat test image"),
        "{body}"
    );

    // Its environment.
    let env = http_get(&addr, "/env.txt").expect("env.txt");
    for want in [
        "GREETING=hello",
        "GREETING_TWICE=hello hello",
        "MY_NAME=web",
        "MY_NAMESPACE=default",
        &format!("MY_IP={ip}"),
        "MEM_LIMIT_MI=64",
    ] {
        assert!(
            env.lines().any(|l| l == want),
            "{want} missing from the container's environment:\n{env}"
        );
    }

    // The API server's Service, as Docker-link variables (in-cluster clients read them).
    let k8s_ip = node.kubectl(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    for want in [
        format!("KUBERNETES_SERVICE_HOST={k8s_ip}"),
        "KUBERNETES_SERVICE_PORT=443".to_string(),
    ] {
        assert!(
            env.lines().any(|l| l == want),
            "{want} missing from the container's environment:\n{env}"
        );
    }

    // Its memory limit reached the cgroup.
    let uid = web["metadata"]["uid"].as_str().unwrap();
    let cid = container_id.trim_start_matches("containerd://");
    let limit = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory{}/pod{uid}/{cid}/memory.limit_in_bytes",
        node.cgroup_root
    ))
    .expect("the container's memory cgroup");
    assert_eq!(limit.trim(), (64u64 << 20).to_string());

    // Init containers ran in order, then the app container.
    let init = node.wait_for("init to be Running", WAIT, || {
        let p = node.pod("init");
        (p["status"]["phase"] == "Running" && condition(&p, "Ready").as_deref() == Some("True"))
            .then_some(p)
    });
    assert_eq!(condition(&init, "Initialized").as_deref(), Some("True"));
    let inits = init["status"]["initContainerStatuses"]
        .as_array()
        .expect("initContainerStatuses");
    assert_eq!(inits.len(), 2);
    for i in inits {
        assert_eq!(i["state"]["terminated"]["reason"], "Completed", "{i}");
    }
    let finished_first = inits[0]["state"]["terminated"]["finishedAt"]
        .as_str()
        .unwrap();
    let started_second = inits[1]["state"]["terminated"]["startedAt"]
        .as_str()
        .unwrap();
    assert!(
        finished_first <= started_second,
        "init containers overlapped: {inits:?}"
    );

    // Volumes: an emptyDir shared by two containers, a memory-backed
    // emptyDir, configMap and secret volumes and env vars.
    let vols = node.wait_for("vols to be Running and Ready", WAIT, || {
        let p = node.pod("vols");
        (condition(&p, "Ready").as_deref() == Some("True")).then_some(p)
    });
    let vaddr = format!("{}:8080", vols["status"]["podIP"].as_str().unwrap());
    let get_body = |path: &str| -> Option<String> {
        let r = http_get(&vaddr, path).ok()?;
        r.contains(" 200 ").then(|| {
            r.split("\r\n\r\n")
                .nth(1)
                .unwrap_or_default()
                .trim()
                .to_string()
        })
    };
    let shared = node.wait_for(
        "the writer's file through the shared emptyDir",
        Duration::from_secs(20),
        || get_body("/shared/f.txt"),
    );
    assert_eq!(shared, "written-by-writer");
    assert_eq!(
        get_body("/site/page.txt").as_deref(),
        Some("from a configmap")
    );
    assert_eq!(get_body("/creds/password").as_deref(), Some("s3cret"));
    assert_eq!(get_body("/env.txt").as_deref(), Some("fast s3cret"));
    let vols_uid = vols["metadata"]["uid"].as_str().unwrap().to_string();
    let tmpfs_mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.contains(&format!("/pods/{vols_uid}/volumes/empty-dir/www"))
                    && l.contains("tmpfs")
            })
    };
    assert!(tmpfs_mounted(), "the memory-backed emptyDir is not a tmpfs");

    // A readiness probe gates Ready: Running but not Ready until it passes.
    let p = node.wait_for("ready-later to be Running", WAIT, || {
        let p = node.pod("ready-later");
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(
        condition(&p, "Ready").as_deref(),
        Some("False"),
        "Ready before the probe passed: {p}"
    );
    assert_eq!(container_status(&p, "c").unwrap()["ready"], false);
    node.wait_for("ready-later to become Ready", WAIT, || {
        let p = node.pod("ready-later");
        (condition(&p, "Ready").as_deref() == Some("True")).then_some(())
    });

    // A failing liveness probe restarts the container.
    node.wait_for("unhealthy to be restarted", WAIT, || {
        let p = node.pod("unhealthy");
        (container_status(&p, "c")?["restartCount"].as_i64()? >= 1).then_some(())
    });
    node.wait_for("liveness events", Duration::from_secs(30), || {
        let ev = node.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=unhealthy",
            "-o",
            "json",
        ]);
        (ev.contains("Liveness probe failed")
            && ev.contains("failed liveness probe, will be restarted"))
        .then_some(())
    });

    // A new image in the spec restarts the container with it.
    let old_id = container_status(&init, "app").unwrap()["containerID"]
        .as_str()
        .unwrap()
        .to_string();
    let pause = node.registry.pause();
    node.kubectl(&["set", "image", "pod/init", &format!("app={pause}")]);
    node.wait_for("init's app container to run the new image", WAIT, || {
        let p = node.pod("init");
        let c = container_status(&p, "app")?;
        let ok = c["image"] == pause.as_str()
            && c["state"]["running"].is_object()
            && c["restartCount"] == 1
            && c["containerID"].as_str() != Some(old_id.as_str());
        ok.then_some(())
    });

    // A missing image: ErrImagePull, then ImagePullBackOff, with events.
    node.wait_for("noimage to show ImagePullBackOff", WAIT, || {
        let p = node.pod("noimage");
        let reason = container_status(&p, "c")?["state"]["waiting"]["reason"]
            .as_str()?
            .to_string();
        assert!(
            reason == "ErrImagePull" || reason == "ImagePullBackOff",
            "unexpected reason {reason}: {p}"
        );
        assert_eq!(p["status"]["phase"], "Pending");
        (reason == "ImagePullBackOff").then_some(())
    });
    node.wait_for("pull failure events", Duration::from_secs(30), || {
        let ev = node.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=noimage",
            "-o",
            "json",
        ]);
        (ev.contains("Failed to pull image") && ev.contains("Back-off pulling image")).then_some(())
    });

    // A crashing container: CrashLoopBackOff with restarts and its exit code.
    node.wait_for("crash to reach CrashLoopBackOff", WAIT, || {
        let p = node.pod("crash");
        let c = container_status(&p, "c")?;
        let in_backoff = c["state"]["waiting"]["reason"] == "CrashLoopBackOff";
        (in_backoff
            && c["restartCount"].as_i64()? > 0
            && c["lastState"]["terminated"]["exitCode"] == 3)
            .then_some(())
    });

    // A memory hog over its limit.
    let hog = node.wait_for("hog to be OOMKilled", WAIT, || {
        let p = node.pod("hog");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    let t = &container_status(&hog, "c").expect("hog status")["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{hog}");
    assert_eq!(t["exitCode"], 137, "{hog}");

    // A restarted agent adopts the running pod: same container, no restart.
    node.agent.restart();
    std::thread::sleep(Duration::from_secs(3));
    node.wait_for("the agent to be back (lease renewed)", WAIT, || {
        node.agent
            .log()
            .matches("node registered")
            .nth(1)
            .map(|_| ())
    });
    std::thread::sleep(Duration::from_secs(3));
    let web = node.pod("web");
    let cs = container_status(&web, "httpd").expect("httpd status");
    assert_eq!(
        cs["containerID"].as_str(),
        Some(container_id.as_str()),
        "the restarted agent recreated the container"
    );
    assert_eq!(cs["restartCount"], 0);
    assert!(
        http_get(&addr, "/index.html")
            .expect("httpd after the agent restart")
            .contains("tugboat test image")
    );

    // Deleting a pod stops and removes its containers, sandbox, network
    // namespace and cgroup, then the pod object.
    let netns_before = node.netns().len();
    let t0 = Instant::now();
    node.kubectl(&["delete", "pod", "web", "--timeout=60s"]);
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "deletion took {:?}",
        t0.elapsed()
    );
    assert!(
        http_get(&addr, "/index.html").is_err(),
        "httpd still answers after deletion"
    );
    assert_eq!(
        node.netns().len(),
        netns_before - 1,
        "network namespace of web left behind"
    );
    assert!(
        !Path::new(&format!(
            "/sys/fs/cgroup/memory{}/pod{uid}",
            node.cgroup_root
        ))
        .exists(),
        "the pod's cgroup was left behind"
    );

    // All pods gone: nothing left in the runtime.
    node.kubectl(&[
        "delete",
        "pod",
        "--all",
        "--grace-period=1",
        "--timeout=90s",
    ]);
    node.wait_for("the runtime to be empty", Duration::from_secs(30), || {
        (node.runtime_objects().is_empty() && node.netns().is_empty()).then_some(())
    });
    assert!(
        !tmpfs_mounted(),
        "the memory-backed emptyDir is still mounted"
    );
    let cgroups: Vec<PathBuf> = leftover_cgroups(&node.cgroup_root)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/pod"))
        .collect();
    assert!(cgroups.is_empty(), "pod cgroups left: {cgroups:?}");
}
