//! End to end: a node whose kubelet hangs. The real `tug server` (API
//! server, scheduler, controllers, with a short node grace period), three
//! hollow nodes run by this test (so one of them can be paused), and the
//! real kubectl: the node goes NotReady and its pods come back elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tug_testkit::{Backend, TugServer};

const WAIT: Duration = Duration::from_secs(90);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs kubectl off the async threads, with `stdin` if given.
async fn kubectl(s: &Arc<TugServer>, args: &[&str], stdin: Option<String>) -> Output {
    let mut cmd = s.kubectl_cmd(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("kubectl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("writing stdin");
        }
        child.wait_with_output().expect("kubectl output")
    })
    .await
    .expect("kubectl task")
}

/// Runs kubectl, asserts success, returns stdout.
async fn ok(s: &Arc<TugServer>, args: &[&str]) -> String {
    let out = kubectl(s, args, None).await;
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}\n{}\nserver log:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        s.log()
    );
    text(&out.stdout)
}

async fn json_of(s: &Arc<TugServer>, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&ok(s, &a).await).expect("kubectl printed JSON")
}

async fn eventually<T, F, Fut>(s: &Arc<TugServer>, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last: {last}\nserver log:\n{}",
                s.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn ready_status(node: &Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| c["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').expect("a CIDR");
    let (ip, net): (Ipv4Addr, Ipv4Addr) = (
        ip.parse().expect("an IPv4 pod IP"),
        net.parse().expect("an IPv4 network"),
    );
    let len: u32 = len.parse().expect("a prefix length");
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// The web pods: name → (node, phase, terminating, pod IP).
async fn web_pods(s: &Arc<TugServer>) -> BTreeMap<String, (String, String, bool, String)> {
    let list = json_of(s, &["get", "pods", "-l", "app=web"]).await;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                (
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                    p["status"]["phase"].as_str().unwrap_or("").to_string(),
                    !p["metadata"]["deletionTimestamp"].is_null(),
                    p["status"]["podIP"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_node_goes_not_ready_and_its_pods_are_rescheduled() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = tokio::task::spawn_blocking(|| {
        TugServer::start_with_args(
            env!("CARGO_BIN_EXE_tug").as_ref(),
            Backend::Sqlite,
            &[
                "--node-monitor-grace-period",
                "4s",
                "--node-monitor-period",
                "500ms",
            ],
        )
    })
    .await
    .expect("starting tug server");
    let s = Arc::new(server);
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("client config");
    let client = kube::Client::try_from(config).expect("client");

    // Three kubelets in this process, renewing their leases every second.
    let hollow_config = tug_hollow::HollowConfig {
        nodes: 3,
        name_prefix: "worker-".into(),
        renew_interval: Duration::from_secs(1),
        status_interval: Duration::from_secs(5),
        ..Default::default()
    };
    let hollow = tug_hollow::HollowCluster::start(client.clone(), hollow_config)
        .await
        .expect("hollow nodes");

    // Node IPAM: every node gets its own /24 of the cluster CIDR.
    let cidrs: BTreeMap<String, String> =
        eventually(&s, "three Ready nodes with pod CIDRs", || async {
            let nodes = json_of(&s, &["get", "nodes"]).await;
            let items = nodes["items"].as_array().cloned().unwrap_or_default();
            let cidrs: BTreeMap<String, String> = items
                .iter()
                .filter(|n| ready_status(n) == "True")
                .filter_map(|n| {
                    Some((
                        n["metadata"]["name"].as_str()?.to_string(),
                        n["spec"]["podCIDR"].as_str()?.to_string(),
                    ))
                })
                .collect();
            if cidrs.len() == 3 {
                Ok(cidrs)
            } else {
                Err(format!("{nodes}"))
            }
        })
        .await;
    let distinct: BTreeSet<&String> = cidrs.values().collect();
    assert_eq!(distinct.len(), 3, "{cidrs:?}");
    for c in cidrs.values() {
        assert!(
            c.ends_with("/24") && in_cidr(c.split('/').next().unwrap(), "10.42.0.0/16"),
            "{c} in the cluster CIDR"
        );
    }

    // A Deployment whose pods tolerate an unreachable node for 2s only.
    let mut deploy: Value = serde_json::from_str(
        &ok(
            &s,
            &[
                "create",
                "deployment",
                "web",
                "--image=nginx:1.25",
                "--replicas=3",
                "--dry-run=client",
                "-o",
                "json",
            ],
        )
        .await,
    )
    .unwrap();
    deploy["spec"]["template"]["spec"]["tolerations"] = json!([
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2},
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2},
    ]);
    let out = kubectl(&s, &["create", "-f", "-"], Some(deploy.to_string())).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let first = eventually(&s, "three web pods running", || async {
        let pods = web_pods(&s).await;
        let running = pods
            .values()
            .filter(|(node, phase, term, ip)| {
                !node.is_empty() && phase == "Running" && !term && !ip.is_empty()
            })
            .count();
        if running == 3 && pods.len() == 3 {
            Ok(pods)
        } else {
            Err(format!("{pods:?}"))
        }
    })
    .await;
    for (name, (node, _, _, ip)) in &first {
        assert!(
            in_cidr(ip, &cidrs[node]),
            "{name}: {ip} inside {node}'s pod CIDR {}",
            cidrs[node]
        );
    }

    // The kubelet of the node with the first pod hangs.
    let victim = first.values().next().unwrap().0.clone();
    let doomed: BTreeSet<String> = first
        .iter()
        .filter(|(_, (n, ..))| *n == victim)
        .map(|(p, _)| p.clone())
        .collect();
    assert!(hollow.pause_node(&victim));

    eventually(&s, "the node NotReady in kubectl get nodes", || async {
        let table = ok(&s, &["get", "nodes"]).await;
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(victim.as_str()))
            .unwrap_or("")
            .to_string();
        if line
            .split_whitespace()
            .nth(1)
            .is_some_and(|st| st.starts_with("NotReady"))
        {
            Ok(())
        } else {
            Err(table)
        }
    })
    .await;
    let node = json_of(&s, &["get", "node", &victim]).await;
    assert_eq!(ready_status(&node), "Unknown");
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    let taints = eventually(&s, "unreachable taints", || async {
        let node = json_of(&s, &["get", "node", &victim]).await;
        let taints: BTreeSet<String> = node["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{}:{}",
                    t["key"].as_str().unwrap_or(""),
                    t["effect"].as_str().unwrap_or("")
                )
            })
            .collect();
        if taints.contains("node.kubernetes.io/unreachable:NoExecute") {
            Ok(taints)
        } else {
            Err(format!("{taints:?}"))
        }
    })
    .await;
    assert!(
        taints.contains("node.kubernetes.io/unreachable:NoSchedule"),
        "{taints:?}"
    );

    // Its pods are evicted (Terminating: their kubelet is gone) and replaced
    // on the other nodes.
    let after = eventually(&s, "three running web pods on the other nodes", || async {
        let pods = web_pods(&s).await;
        let live: Vec<_> = pods.iter().filter(|(_, (_, _, term, _))| !term).collect();
        let ok = live.len() == 3
            && live.iter().all(|(_, (node, phase, _, ip))| {
                *node != victim && !node.is_empty() && phase == "Running" && !ip.is_empty()
            });
        let evicted = doomed
            .iter()
            .all(|p| pods.get(p).is_none_or(|(_, _, term, _)| *term));
        if ok && evicted {
            Ok(pods)
        } else {
            Err(format!("{pods:?}"))
        }
    })
    .await;
    for p in &doomed {
        if let Some((node, _, term, _)) = after.get(p) {
            assert!(*term && *node == victim, "{p} stays Terminating on {node}");
        }
    }
    eventually(&s, "the Deployment whole again", || async {
        let ready = ok(
            &s,
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ],
        )
        .await;
        if ready == "3" { Ok(()) } else { Err(ready) }
    })
    .await;

    let events = json_of(&s, &["get", "events"]).await;
    let evictions: BTreeSet<String> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == "TaintManagerEviction")
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect();
    for p in &doomed {
        assert!(
            evictions.contains(&format!("Marking for deletion Pod default/{p}")),
            "{evictions:?}"
        );
    }
    hollow.shutdown().await;
}
