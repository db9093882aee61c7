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
//! - deleting pods removes their containers, network namespaces and cgroups;
//! - (`hooks_pull_secrets_and_volume_updates`) postStart hooks (exec,
//!   httpGet) run and a failing one restarts the container; preStop hooks
//!   (exec, httpGet, sleep) run on deletion within the grace period, then
//!   SIGTERM and SIGKILL at its end (2 s after an overrunning hook);
//!   imagePullSecrets (dockerconfigjson from the pod, legacy dockercfg from
//!   its ServiceAccount) pull from a registry with basic auth, which refuses
//!   a pod without them; a configMap volume is updated in the running container;
//! - (`streaming_through_the_api_server`) `kubectl top pod` and `top node`
//!   (the kubelet's /stats/summary through metrics.k8s.io); `kubectl logs` (-c, --tail,
//!   --timestamps, --limit-bytes, --previous, -f), `exec` (exit codes,
//!   stdin), `attach -i` and `port-forward`, with kubectl 1.32 and 1.29,
//!   through the API server and the kubelet's HTTPS server, and their errors.
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

/// The node tests share names derived from the process id (bridge, cgroup
/// root, pod CIDR): they run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

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
    /// The kubelet server's port (`--kubelet-arg port=`).
    kubelet_port: u16,
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
            masquerade_table: tug_kubelet::cni::masquerade_table(&bridge),
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
        let kubelet_port = tug_testkit::free_port();
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
            "--kubelet-arg",
            &format!("port={kubelet_port}"),
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
            kubelet_port,
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
        let (_, stderr, code) = run_with_input(self.server.kubectl_cmd(&["apply", "-f", "-"]), yaml);
        assert!(code == Some(0), "kubectl apply failed: {stderr}\n{}", self.logs());
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

/// A memory quantity as metrics.k8s.io writes it ("1234Ki", "5Mi", "1000") in bytes.
fn quantity_bytes(q: &str) -> u64 {
    let units = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)];
    match units.iter().find(|(s, _)| q.ends_with(s)) {
        Some((s, unit)) => q.trim_end_matches(s).parse::<u64>().unwrap_or(0) * unit,
        None => q.parse().unwrap_or(0),
    }
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
    let _serial = serial();
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

    // A readiness probe gates Ready: the container runs for 8 s before the
    // probe can pass, so Ready turns True at least 7 s (the timestamps have
    // one-second resolution) after the container started. Judged from the
    // timestamps, because on a loaded machine the earlier steps can take
    // longer than 8 s and the pod is already Ready when first looked at.
    let p = node.wait_for("ready-later to become Ready", WAIT, || {
        let p = node.pod("ready-later");
        (condition(&p, "Ready").as_deref() == Some("True")).then_some(p)
    });
    let ts = |v: &Value| v.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()).unwrap_or_else(|| panic!("timestamp {v}: {p}"));
    let started = ts(&container_status(&p, "c").unwrap()["state"]["running"]["startedAt"]);
    let ready_at = p["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").map(|c| ts(&c["lastTransitionTime"])).unwrap();
    assert!(
        ready_at.duration_since(started) >= jiff::SignedDuration::from_secs(7),
        "Ready {ready_at} only {:?} after the container started {started}, before the probe could pass: {p}",
        ready_at.duration_since(started)
    );

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

/// A docker-registry with htpasswd basic auth (user `puller`, password
/// `tug-secret`) on a loopback port, killed on drop.
struct AuthRegistry {
    addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// bcrypt of `tug-secret` (docker-registry's htpasswd takes bcrypt only).
const PULLER_HTPASSWD: &str = "puller:$2b$05$vCbIns5ItnQnUZRRy1zmOOWvoRtX5D5OBfSxvwoCZPHQotLa4nb1m";

impl AuthRegistry {
    /// Starts it and copies `source` (an image of the open test registry)
    /// into it as `private/busybox:v1`.
    fn start(source: &str) -> AuthRegistry {
        let dir = tempfile::Builder::new()
            .prefix("tug-auth-registry-")
            .tempdir()
            .expect("temp dir");
        let addr = format!("127.0.0.1:{}", tug_testkit::free_port());
        std::fs::write(dir.path().join("htpasswd"), format!("{PULLER_HTPASSWD}\n")).unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {0}/data\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: tug-test\n    path: {0}/htpasswd\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry");
        let r = AuthRegistry {
            addr,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        // Up when /v2/ answers (401 without credentials).
        while http_get(&r.addr, "/v2/").is_err() {
            assert!(Instant::now() < deadline, "the auth registry did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let unauth = http_get(&r.addr, "/v2/").unwrap();
        assert!(unauth.contains(" 401 "), "the registry does not ask for auth: {unauth}");
        let out = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--insecure-policy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                "--dest-creds",
                "puller:tug-secret",
                &format!("docker://{source}"),
                &format!("docker://{}", r.image()),
            ])
            .output()
            .expect("skopeo");
        assert!(
            out.status.success(),
            "pushing to the auth registry failed: {}",
            text(&out.stderr)
        );
        r
    }

    fn image(&self) -> String {
        format!("{}/private/busybox:v1", self.addr)
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Request paths received on a loopback port (what httpGet hooks hit).
fn hook_listener() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 1024];
            let n = c.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            if let Some(path) = req.split_whitespace().nth(1) {
                s2.lock().unwrap().push(path.to_string());
            }
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, seen)
}

fn events_of(node: &Node, pod: &str) -> String {
    node.kubectl(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "json",
    ])
}

/// Lifecycle hooks (postStart and preStop: exec, httpGet, sleep; the grace
/// period accounting), imagePullSecrets against a registry with basic auth
/// (from the pod and from its ServiceAccount), and a configMap volume
/// updated in a running container.
#[test]
fn hooks_pull_secrets_and_volume_updates() {
    if let Err(why) = containers_available() {
        eprintln!("skipping the kubelet end-to-end test: {why}");
        return;
    }
    let _serial = serial();
    let node = Node::start();
    let image = node.registry.busybox();
    let auth = AuthRegistry::start(&image);
    let private = auth.image();
    let host_dir = tempfile::Builder::new()
        .prefix("tug-hooks-")
        .tempdir()
        .expect("temp dir");
    let hooks = host_dir.path().to_string_lossy().into_owned();
    // The directory of a hostPath PersistentVolume, removed on drop.
    let pv_dir = tempfile::Builder::new()
        .prefix("tug-pv-")
        .tempdir()
        .expect("temp dir");
    let pv_path = pv_dir.path().to_string_lossy().into_owned();
    let (hook_port, hook_requests) = hook_listener();
    let read = |f: &str| std::fs::read_to_string(host_dir.path().join(f)).unwrap_or_default();

    node.wait_for("the node to be Ready", WAIT, || {
        let n: Value = serde_json::from_slice(
            &node.server.kubectl(&["get", "node", &node.name, "-o", "json"]).stdout,
        )
        .ok()?;
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(())
    });

    node.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hooks}}
spec:
  terminationGracePeriodSeconds: 5
  volumes: [{{name: hooks, hostPath: {{path: "{hooks}", type: DirectoryOrCreate}}}}]
  containers:
  - name: c
    image: {image}
    command: ["sh", "-c", "trap 'echo term >> /hooks/log' TERM; echo main >> /hooks/log; while true; do sleep 1; done"]
    volumeMounts: [{{name: hooks, mountPath: /hooks}}]
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "echo poststart >> /hooks/log"]}}}}
      preStop: {{exec: {{command: ["sh", "-c", "echo prestop-begin >> /hooks/log; sleep 3; echo prestop-end >> /hooks/log"]}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hooks-overrun}}
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{{name: hooks, hostPath: {{path: "{hooks}"}}}}]
  containers:
  - name: c
    image: {image}
    command: ["sh", "-c", "trap 'echo term >> /hooks/overrun' TERM; while true; do sleep 1; done"]
    volumeMounts: [{{name: hooks, mountPath: /hooks}}]
    lifecycle:
      preStop: {{sleep: {{seconds: 60}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hooks-http}}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: c
    image: {image}
    command: ["sleep", "3600"]
    lifecycle:
      postStart: {{httpGet: {{host: 127.0.0.1, port: {hook_port}, path: /post-start}}}}
      preStop: {{httpGet: {{host: 127.0.0.1, port: {hook_port}, path: /pre-stop}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: poststart-fails}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {image}
    command: ["sleep", "3600"]
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "exit 7"]}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: live}}
data: {{greeting: v1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: cm-live}}
spec:
  terminationGracePeriodSeconds: 0
  volumes:
  - {{name: cfg, configMap: {{name: live}}}}
  - {{name: out, hostPath: {{path: "{hooks}"}}}}
  containers:
  - name: c
    image: {image}
    command: ["sh", "-c", "while true; do cat /cfg/greeting > /out/cm.tmp; mv /out/cm.tmp /out/cm-seen; sleep 0.5; done"]
    volumeMounts: [{{name: cfg, mountPath: /cfg}}, {{name: out, mountPath: /out}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: regcred}}
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{{"auths": {{"{registry}": {{"username": "puller", "password": "tug-secret"}}}}}}'
---
apiVersion: v1
kind: Secret
metadata: {{name: legacy-regcred}}
type: kubernetes.io/dockercfg
stringData:
  .dockercfg: '{{"http://{registry}": {{"auth": "cHVsbGVyOnR1Zy1zZWNyZXQ=", "email": "x@example.com"}}}}'
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: puller}}
imagePullSecrets: [{{name: legacy-regcred}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: private-nosecret}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: c, image: "{private}", imagePullPolicy: Always, command: ["sleep", "3600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: private}}
spec:
  terminationGracePeriodSeconds: 0
  imagePullSecrets: [{{name: regcred}}]
  containers:
  - {{name: c, image: "{private}", imagePullPolicy: Always, command: ["sleep", "3600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: private-sa}}
spec:
  terminationGracePeriodSeconds: 0
  serviceAccountName: puller
  containers:
  - {{name: c, image: "{private}", imagePullPolicy: Always, command: ["sleep", "3600"]}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: e2e-pv}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  hostPath: {{path: "{pv_path}"}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: e2e-claim}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 500Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: pvc-writer}}
spec:
  terminationGracePeriodSeconds: 0
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: e2e-claim}}}}
  - {{name: ro, persistentVolumeClaim: {{claimName: e2e-claim, readOnly: true}}}}
  containers:
  - name: c
    image: {image}
    command: ["sh", "-c", "echo through-claim > /data/hello; if touch /ro/probe 2>/dev/null; then echo writable > /data/ro; else echo readonly > /data/ro; fi; sleep 3600"]
    volumeMounts: [{{name: data, mountPath: /data}}, {{name: ro, mountPath: /ro}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: pvc-missing}}
spec:
  terminationGracePeriodSeconds: 0
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: nonexistent}}}}]
  containers:
  - {{name: c, image: {image}, command: ["sleep", "3600"], volumeMounts: [{{name: data, mountPath: /data}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: pvc-missing-bound}}
spec:
  terminationGracePeriodSeconds: 0
  nodeName: {node_name}
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: nonexistent}}}}]
  containers:
  - {{name: c, image: {image}, command: ["sleep", "3600"], volumeMounts: [{{name: data, mountPath: /data}}]}}
"#,
        registry = auth.addr,
        node_name = node.name
    ));
    let running = |name: &str| {
        node.wait_for(&format!("{name} to be Running"), WAIT, || {
            let p = node.pod(name);
            (p["status"]["phase"] == "Running"
                && container_status(&p, "c")?["state"]["running"].is_object())
            .then_some(p)
        })
    };

    // postStart: exec (its line in the log) and httpGet (seen by our listener).
    running("hooks");
    node.wait_for("the exec postStart hook's effect", Duration::from_secs(20), || {
        read("log").lines().any(|l| l == "poststart").then_some(())
    });
    assert!(read("log").lines().any(|l| l == "main"), "{}", read("log"));
    running("hooks-http");
    node.wait_for("the httpGet postStart hook", Duration::from_secs(20), || {
        hook_requests
            .lock()
            .unwrap()
            .iter()
            .any(|p| p == "/post-start")
            .then_some(())
    });
    assert!(
        !hook_requests.lock().unwrap().iter().any(|p| p == "/pre-stop"),
        "preStop ran before deletion"
    );
    running("hooks-overrun");

    // A failing postStart kills the container, which restarts.
    node.wait_for("poststart-fails to be restarted", WAIT, || {
        let p = node.pod("poststart-fails");
        (container_status(&p, "c")?["restartCount"].as_i64()? >= 1).then_some(())
    });
    let ev = events_of(&node, "poststart-fails");
    assert!(ev.contains("FailedPostStartHook"), "{ev}");
    assert!(ev.contains("Killing"), "{ev}");

    // imagePullSecrets: without them the pull is refused; with them (from
    // the pod or from its ServiceAccount) the pod runs.
    running("private");
    running("private-sa");
    node.wait_for("private-nosecret to fail its pull", WAIT, || {
        let p = node.pod("private-nosecret");
        let c = container_status(&p, "c")?;
        let reason = c["state"]["waiting"]["reason"].as_str()?;
        assert_eq!(p["status"]["phase"], "Pending", "{p}");
        (reason == "ErrImagePull" || reason == "ImagePullBackOff").then_some(())
    });
    let ev = events_of(&node, "private-nosecret");
    assert!(ev.contains("Failed to pull image"), "{ev}");

    // A configMap volume follows its object in the running container.
    node.wait_for("the configMap's first value in the container", WAIT, || {
        (read("cm-seen").trim() == "v1").then_some(())
    });
    let cm_pod = node.pod("cm-live");
    let t0 = Instant::now();
    node.kubectl(&["patch", "configmap", "live", "-p", r#"{"data":{"greeting":"v2"}}"#]);
    node.wait_for("the configMap update in the container", Duration::from_secs(45), || {
        (read("cm-seen").trim() == "v2").then_some(())
    });
    eprintln!("configMap update seen in the container after {:?}", t0.elapsed());
    let after = node.pod("cm-live");
    assert_eq!(
        container_status(&cm_pod, "c").unwrap()["containerID"],
        container_status(&after, "c").unwrap()["containerID"],
        "the container was restarted instead of updated in place"
    );

    // A persistentVolumeClaim volume: the claim is bound to the hostPath
    // PV, the pod scheduled and started, and what it writes through the
    // claim lands in the PV's directory on the host; `readOnly` holds.
    running("pvc-writer");
    let pv_read = |f: &str| std::fs::read_to_string(pv_dir.path().join(f)).unwrap_or_default();
    node.wait_for("the file written through the claim", WAIT, || {
        (pv_read("hello").trim() == "through-claim" && !pv_read("ro").is_empty()).then_some(())
    });
    assert_eq!(pv_read("ro").trim(), "readonly", "a readOnly claim mount was writable");
    let claim: Value = serde_json::from_str(&node.kubectl(&["get", "pvc", "e2e-claim", "-o", "json"])).unwrap();
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    assert_eq!(claim["spec"]["volumeName"], "e2e-pv", "{claim}");
    // A claim that does not exist: the scheduler keeps the pod Pending; a
    // pod bound to the node anyway does not start (FailedMount, retried).
    node.wait_for("pvc-missing to be unschedulable", WAIT, || {
        events_of(&node, "pvc-missing")
            .contains(r#"persistentvolumeclaim \"nonexistent\" not found"#)
            .then_some(())
    });
    assert!(node.pod("pvc-missing")["spec"]["nodeName"].is_null());
    node.wait_for("pvc-missing-bound's FailedMount", WAIT, || {
        let ev = events_of(&node, "pvc-missing-bound");
        (ev.contains("FailedMount") && ev.contains("Unable to attach or mount volumes") && ev.contains(r#"persistentvolumeclaims \"nonexistent\" not found"#))
            .then_some(())
    });
    assert_eq!(node.pod("pvc-missing-bound")["status"]["phase"], "Pending");

    // preStop on deletion, within the grace period.
    let pods = ["hooks", "hooks-overrun", "hooks-http"];
    let t0 = Instant::now();
    let mut args = vec!["delete", "pod", "--wait=false"];
    args.extend(pods);
    node.kubectl(&args);
    let mut gone: std::collections::HashMap<&str, Duration> = Default::default();
    while gone.len() < pods.len() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "pods not deleted: {gone:?}\n{}",
            node.logs()
        );
        let list: Value = serde_json::from_str(&node.kubectl(&["get", "pods", "-o", "json"])).unwrap();
        for p in pods {
            let present = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["metadata"]["name"] == p);
            if !present {
                gone.entry(p).or_insert_with(|| t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("deleted after: {gone:?}");
    // hooks: a 3 s preStop out of 5 s, then 2 s from SIGTERM (ignored) to SIGKILL.
    let log = read("log");
    let lines: Vec<&str> = log.lines().collect();
    let pos = |w: &str| lines.iter().position(|l| *l == w);
    let (b, e, t) = (pos("prestop-begin"), pos("prestop-end"), pos("term"));
    assert!(
        b.is_some() && e.is_some() && t.is_some() && b < e && e < t,
        "expected prestop-begin, prestop-end, then SIGTERM: {log}"
    );
    let d = gone["hooks"];
    assert!(
        d >= Duration::from_millis(4500) && d <= Duration::from_millis(7500),
        "hooks: killed {d:?} after the delete; the grace period is 5 s, preStop included"
    );
    // hooks-overrun: the 60 s preStop is cut at the 2 s grace period, then
    // SIGTERM and 2 s more (upstream's minimum) before SIGKILL.
    let d = gone["hooks-overrun"];
    assert!(
        d >= Duration::from_millis(3500) && d <= Duration::from_millis(6500),
        "hooks-overrun: killed {d:?} after the delete, expected about 4 s"
    );
    assert!(read("overrun").contains("term"), "hooks-overrun never got SIGTERM");
    // hooks-http: the httpGet preStop reached us; `sleep` ignores SIGTERM,
    // so SIGKILL came at the 3 s grace period.
    assert!(
        hook_requests.lock().unwrap().iter().any(|p| p == "/pre-stop"),
        "the httpGet preStop hook never came"
    );
    let d = gone["hooks-http"];
    assert!(
        d >= Duration::from_millis(2500) && d <= Duration::from_millis(5500),
        "hooks-http: killed {d:?} after the delete, expected about 3 s"
    );
    let ev = events_of(&node, "hooks");
    assert!(ev.contains("Stopping container c"), "{ev}");
}

/// Runs `cmd` with `input` on its stdin; returns (stdout, stderr, exit code).
fn run_with_input(mut cmd: Command, input: &str) -> (String, String, Option<i32>) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (text(&out.stdout), text(&out.stderr), out.status.code())
}

/// A long-running command whose stdout lines arrive on a channel; killed on drop.
struct Streaming {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Streaming {
    fn spawn(mut cmd: Command) -> Streaming {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning kubectl");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Streaming { child, lines }
    }

    /// The first line (read within `timeout`) for which `f` gives `Some`.
    fn find<T>(&self, timeout: Duration, mut f: impl FnMut(&str) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(t) = f(&l) {
                        return Some(t);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `tick-N` number of a log line.
fn tick(line: &str) -> Option<u64> {
    line.trim().strip_prefix("tick-")?.parse().ok()
}

/// Streams through the API server and the kubelet's HTTPS server down to
/// containerd's streaming server, with the real kubectl (1.32: WebSocket
/// first, falling back to SPDY; and an older one speaking SPDY only):
/// `kubectl logs` (a container, --tail, --timestamps, --limit-bytes,
/// --previous, -f receiving a line written after it started), `kubectl
/// exec` (stdout, stderr, the exit code, stdin), `kubectl attach` with
/// stdin, `kubectl port-forward` carrying HTTP; upstream's errors (no
/// container name, unknown pod, unknown container, unscheduled pod, a
/// container not started yet, invalid log options); and the kubelet's TLS
/// (a CA-signed serving certificate, client certificates required).
#[test]
fn streaming_through_the_api_server() {
    if let Err(why) = containers_available() {
        eprintln!("skipping the kubelet end-to-end test: {why}");
        return;
    }
    let _serial = serial();
    let node = Node::start();
    let image = node.registry.busybox();
    node.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: talker}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: ticker
    image: {image}
    command: ["sh", "-c", "echo first; echo to-stderr >&2; i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done"]
  - name: echo
    image: {image}
    stdin: true
    command: ["sh", "-c", "httpd -p 8080 -h /var/www; while read l; do echo echo:$l; done"]
---
apiVersion: v1
kind: Pod
metadata: {{name: restarted}}
spec:
  terminationGracePeriodSeconds: 0
  volumes: [{{name: d, emptyDir: {{}}}}]
  containers:
  - name: c
    image: {image}
    volumeMounts: [{{name: d, mountPath: /d}}]
    command: ["sh", "-c", "n=$(ls /d | wc -l); echo run-$n; touch /d/$n; [ $n -ge 1 ] || exit 1; exec sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: pending}}
spec:
  nodeSelector: {{no-such-label: x}}
  containers: [{{name: c, image: {image}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: noimage}}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{{name: c, image: "{registry}/does-not-exist:1"}}]
"#,
        registry = node.registry.addr
    ));
    node.wait_for("talker to be Ready", WAIT, || {
        let p = node.pod("talker");
        (condition(&p, "Ready").as_deref() == Some("True")).then_some(())
    });
    // Resource usage: the kubelet's /stats/summary, read by the API server
    // for metrics.k8s.io, as `kubectl top` shows it.
    let resources = node.kubectl(&["api-resources", "--api-group=metrics.k8s.io", "--no-headers"]);
    assert!(resources.contains("PodMetrics") && resources.contains("NodeMetrics"), "{resources}");
    let top = node.wait_for("kubectl top pod talker", WAIT, || {
        let out = node.server.kubectl(&["top", "pod", "talker", "--containers", "--no-headers"]);
        let t = text(&out.stdout);
        (out.status.success() && t.contains("ticker") && t.contains("echo")).then_some(t)
    });
    assert_eq!(top.lines().count(), 2, "one line per container: {top}");
    let metrics: Value = serde_json::from_str(&node.kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/talker"])).expect("PodMetrics JSON");
    assert_eq!(metrics["kind"], "PodMetrics", "{metrics}");
    for c in metrics["containers"].as_array().expect("containers") {
        let memory = quantity_bytes(c["usage"]["memory"].as_str().unwrap_or(""));
        // A shell and busybox httpd: some hundreds of KiB to a few MiB.
        assert!(memory > 50_000 && memory < 100_000_000, "working set of {}: {c}", c["name"]);
        assert!(c["usage"]["cpu"].as_str().is_some_and(|q| !q.is_empty()), "{c}");
    }
    let node_top = node.kubectl(&["top", "node", &node.name, "--no-headers"]);
    assert!(node_top.starts_with(&node.name) && node_top.contains('%'), "{node_top}");
    let node_metrics: Value = serde_json::from_str(&node.kubectl(&["get", "--raw", &format!("/apis/metrics.k8s.io/v1beta1/nodes/{}", node.name)])).expect("NodeMetrics JSON");
    assert!(quantity_bytes(node_metrics["usage"]["memory"].as_str().unwrap_or("")) > 10_000_000, "{node_metrics}");
    let missing = node.server.kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/no-such-pod"]);
    assert!(!missing.status.success() && text(&missing.stderr).contains("NotFound"), "{}", text(&missing.stderr));

    let fails = |args: &[&str]| -> String {
        let out = node.server.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} succeeded: {}",
            text(&out.stdout)
        );
        text(&out.stderr)
    };

    // The Node reports the kubelet's port; the kubelet serves HTTPS with a
    // certificate of the cluster CA for the node's address and wants a
    // CA-signed client certificate.
    let port = node.kubectl(&[
        "get",
        "node",
        &node.name,
        "-o",
        "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    assert_eq!(port, node.kubelet_port.to_string());
    let tls = node.server.data_dir.join("tls");
    let kubelet_url = format!("https://127.0.0.1:{}/pods", node.kubelet_port);
    let curl = |with_cert: bool| {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "10", "--cacert"])
            .arg(tls.join("ca.crt"));
        if with_cert {
            c.arg("--cert")
                .arg(tls.join("admin.crt"))
                .arg("--key")
                .arg(tls.join("admin.key"));
        }
        c.arg(&kubelet_url).output().expect("curl")
    };
    let out = curl(true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pods: Value = serde_json::from_slice(&out.stdout).expect("a PodList");
    assert_eq!(pods["kind"], "PodList");
    assert!(
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["metadata"]["name"] == "talker"),
        "{pods}"
    );
    let out = curl(false);
    assert!(
        !out.status.success(),
        "the kubelet answered a client without a certificate: {}",
        text(&out.stdout)
    );

    // Logs: one container, both streams (stdout and stderr interleave as
    // the runtime read its two pipes).
    let logs = node.wait_for("talker to tick thrice", WAIT, || {
        let l = node.kubectl(&["logs", "talker", "-c", "ticker"]);
        l.contains("tick-2\n").then_some(l)
    });
    // Within one stream the order holds; across stdout and stderr it is
    // whichever pipe the runtime read first.
    let stdout_order: Vec<&str> = logs.lines().filter(|l| *l != "to-stderr").take(3).collect();
    assert_eq!(stdout_order, ["first", "tick-0", "tick-1"], "{logs:?}");
    assert!(logs.lines().any(|l| l == "to-stderr"), "stderr missing: {logs:?}");
    let tail = node.kubectl(&["logs", "talker", "-c", "ticker", "--tail=2"]);
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 2, "{tail:?}");
    assert!(lines.iter().all(|l| tick(l).is_some()), "{tail:?}");
    let stamped = node.kubectl(&["logs", "talker", "-c", "ticker", "--timestamps", "--tail=1"]);
    let (ts, rest) = stamped.trim().split_once(' ').expect("a timestamp");
    assert!(
        ts.len() > 20 && ts.as_bytes()[4] == b'-' && ts.as_bytes()[10] == b'T',
        "{stamped:?}"
    );
    assert!(tick(rest).is_some(), "{stamped:?}");
    // The first three bytes of the log (stdout's "first" or stderr's
    // "to-stderr", whichever pipe the runtime read first).
    assert_eq!(
        node.kubectl(&["logs", "talker", "-c", "ticker", "--limit-bytes=3"]),
        logs[..3]
    );

    // logs -f: a line written after kubectl started arrives while it runs.
    let last_before = tick(
        node.kubectl(&["logs", "talker", "-c", "ticker", "--tail=1"])
            .trim(),
    )
    .expect("a tick");
    let follow = Streaming::spawn(node.server.kubectl_cmd(&[
        "logs", "-f", "talker", "-c", "ticker", "--tail=1",
    ]));
    let later = follow.find(Duration::from_secs(15), |l| {
        tick(l).filter(|n| *n >= last_before + 2)
    });
    assert!(
        later.is_some(),
        "kubectl logs -f did not stream a line newer than tick-{last_before}"
    );
    drop(follow);

    // --since: by the runtime's timestamps.
    let since = node.kubectl(&["logs", "talker", "-c", "ticker", "--since=1h"]);
    assert!(since.starts_with(&logs[..logs.find('\n').unwrap() + 1]), "everything of the last hour, from the first line: {since:?}");
    let future = node.kubectl(&[
        "logs",
        "talker",
        "-c",
        "ticker",
        "--since-time=2099-01-01T00:00:00Z",
    ]);
    assert_eq!(future, "");

    // logs -f ends when the container does, with everything it wrote.
    node.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: short}}\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: c, image: {image}, command: [sh, -c, 'echo one; sleep 5; echo two']}}\n"
    ));
    node.wait_for("short to run", WAIT, || {
        (node.pod("short")["status"]["phase"] != "Pending").then_some(())
    });
    let started = Instant::now();
    let mut follow = node
        .server
        .kubectl_cmd(&["logs", "-f", "short"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    let exited = loop {
        if let Some(status) = follow.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = follow.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut followed = String::new();
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed)
        .unwrap();
    assert!(
        exited.is_some_and(|s| s.success()),
        "kubectl logs -f did not end with the container ({exited:?}): {followed:?}"
    );
    assert_eq!(followed, "one\ntwo\n");

    // --previous: the instance before the restart.
    node.wait_for("restarted to run its second instance", WAIT, || {
        let p = node.pod("restarted");
        let c = container_status(&p, "c")?;
        (c["state"]["running"].is_object() && c["restartCount"] == 1).then_some(())
    });
    assert_eq!(node.kubectl(&["logs", "restarted"]), "run-1\n");
    assert_eq!(node.kubectl(&["logs", "restarted", "--previous"]), "run-0\n");
    let e = fails(&["logs", "talker", "-c", "ticker", "--previous"]);
    assert!(
        e.contains("previous terminated container \"ticker\" in pod \"talker\" not found"),
        "{e}"
    );

    // Errors, in upstream's words.
    let e = fails(&["get", "--raw", "/api/v1/namespaces/default/pods/talker/log"]);
    assert!(
        e.contains("a container name must be specified for pod talker, choose one of: [ticker echo]"),
        "{e}"
    );
    let e = fails(&["logs", "no-such-pod"]);
    assert!(e.contains("pods \"no-such-pod\" not found"), "{e}");
    let e = fails(&["get", "--raw", "/api/v1/namespaces/default/pods/talker/log?container=nope"]);
    assert!(e.contains("container nope is not valid for pod talker"), "{e}");
    let e = fails(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/talker/log?container=ticker&tailLines=-3",
    ]);
    assert!(e.contains("must be greater than or equal to 0"), "{e}");
    let e = fails(&["exec", "pending", "--", "true"]);
    assert!(e.contains("pod pending does not have a host assigned"), "{e}");
    node.wait_for("noimage to fail pulling", WAIT, || {
        let p = node.pod("noimage");
        container_status(&p, "c")?["state"]["waiting"]["reason"]
            .as_str()
            .filter(|r| r.contains("Image"))
            .map(|_| ())
    });
    let e = fails(&["logs", "noimage"]);
    assert!(
        e.contains("container \"c\" in pod \"noimage\" is waiting to start"),
        "{e}"
    );
    let e = fails(&["exec", "noimage", "--", "true"]);
    assert!(e.contains("container not found (\"c\")"), "{e}");

    // exec: stdout and stderr apart, the exit code, stdin to EOF.
    let kubectls: Vec<(String, PathBuf)> = {
        let mut k = vec![("kubectl".to_string(), tug_testkit::kubectl_binary())];
        let old = PathBuf::from("/usr/lib/google-cloud-sdk/bin/kubectl.1.29");
        if old.exists() {
            k.push(("kubectl 1.29".to_string(), old));
        } else {
            eprintln!("{} is missing: only the default kubectl is tested", old.display());
        }
        k
    };
    let kubectl = |bin: &Path, args: &[&str]| {
        let mut c = Command::new(bin);
        c.env("KUBECONFIG", &node.server.kubeconfig)
            .env("HOME", node.server.data_dir.parent().unwrap())
            .args(args);
        c
    };
    for (which, bin) in &kubectls {
        let (out, err, code) = run_with_input(
            kubectl(bin, &["exec", "talker", "-c", "ticker", "--", "sh", "-c", "echo hi; echo oops >&2; exit 3"]),
            "",
        );
        assert_eq!((out.as_str(), code), ("hi\n", Some(3)), "{which}: {err}");
        assert!(err.contains("oops"), "{which}: {err}");
        let (out, err, code) = run_with_input(
            kubectl(bin, &["exec", "-i", "talker", "-c", "ticker", "--", "tr", "a-z", "A-Z"]),
            "hello stdin\nsecond line\n",
        );
        assert_eq!(
            (out.as_str(), code),
            ("HELLO STDIN\nSECOND LINE\n", Some(0)),
            "{which}: {err}"
        );

        // port-forward: HTTP to the pod's port 8080 through a local port.
        let pf = Streaming::spawn(kubectl(bin, &["port-forward", "pod/talker", ":8080"]));
        let local = pf
            .find(Duration::from_secs(20), |l| {
                l.strip_prefix("Forwarding from 127.0.0.1:")?
                    .split_once(' ')
                    .map(|(p, _)| p.to_string())
            })
            .unwrap_or_else(|| panic!("{which}: kubectl port-forward never listened\n{}", node.logs()));
        for _ in 0..2 {
            let body = http_get(&format!("127.0.0.1:{local}"), "/index.html")
                .unwrap_or_else(|e| panic!("{which}: GET through port-forward: {e}"));
            assert!(
                body.starts_with("HTTP/1.") && body.contains("tugboat test image"),
                "{which}: {body}"
            );
        }
    }

    // kubectl cp: tar over exec, binary data both ways.
    let scratch = tempfile::tempdir().unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(scratch.path().join("in.bin"), &payload).unwrap();
    let src = scratch.path().join("in.bin").to_string_lossy().into_owned();
    let back = scratch.path().join("back.bin").to_string_lossy().into_owned();
    node.kubectl(&["cp", &src, "talker:/tmp/in.bin", "-c", "ticker"]);
    node.kubectl(&["cp", "talker:/tmp/in.bin", &back, "-c", "ticker"]);
    assert!(
        std::fs::read(&back).unwrap() == payload,
        "kubectl cp did not carry the file both ways unchanged"
    );

    // A WebSocket client that offers v4.channel.k8s.io besides v5 (kube-rs)
    // gets it from containerd through the same proxies: the upgrade is not
    // ours to negotiate.
    let (out, status) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use tokio::io::AsyncReadExt;
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(node.server.client().await, "default");
        let ap = kube::api::AttachParams::default()
            .container("ticker")
            .stderr(false);
        let mut p = pods
            .exec("talker", ["sh", "-c", "echo over-websocket; exit 5"], &ap)
            .await
            .expect("exec over WebSocket");
        let mut out = String::new();
        p.stdout()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        (out, p.take_status().unwrap().await)
    });
    assert_eq!(out, "over-websocket\n");
    let status = status.expect("the exec's Status");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"), "{status:?}");
    let code = status
        .details
        .and_then(|d| d.causes)
        .and_then(|c| c.into_iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message);
    assert_eq!(code.as_deref(), Some("5"));

    // attach with stdin: what is typed reaches the container's process,
    // and its output comes back.
    let mut cmd = node
        .server
        .kubectl_cmd(&["attach", "-i", "talker", "-c", "echo"]);
    cmd.stdin(Stdio::piped());
    let mut attach = Streaming::spawn(cmd);
    let mut input = attach.child.stdin.take().unwrap();
    input.write_all(b"ahoy\n").unwrap();
    input.flush().unwrap();
    let echoed = attach.find(Duration::from_secs(20), |l| {
        (l.trim() == "echo:ahoy").then_some(())
    });
    assert!(echoed.is_some(), "kubectl attach never echoed\n{}", node.logs());
    drop(input);
}
