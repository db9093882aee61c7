//! The agent's runtime layer against a real containerd + runc + CNI, without
//! an API server: Tugboat's own containerd (generated configuration, own
//! root/state/socket), the CRI client, the CNI bridge configuration and the
//! pod spec → CRI translation. A busybox httpd in a sandbox answers on its
//! pod IP from the host; then everything is removed.
//!
//! Needs root and the packages of scripts/setup.sh; skipped (with a
//! message) where they are missing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tug_kubelet::containerd::{Containerd, ContainerdPaths, Registries};
use tug_kubelet::cri::{Cri, uid_filter};
use tug_kubelet::{AgentConfig, cni, spec};
use tug_testkit::node::{NodeCleanup, TestRegistry, containers_available};

fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_and_httpd_container_through_cri() {
    if let Err(why) = containers_available() {
        eprintln!("skipping: {why}");
        return;
    }
    let pid = std::process::id();
    let dir = tempfile::Builder::new()
        .prefix("tug-cri-")
        .tempdir()
        .unwrap();
    let bridge = format!("tugcri-{}", pid % 100_000);
    let cgroup_root = format!("/tug-cri-{pid}");
    let _cleanup = NodeCleanup {
        root: dir.path().to_path_buf(),
        bridge: bridge.clone(),
        cgroup_root: cgroup_root.clone(),
        masquerade_table: tug_kubelet::cni::masquerade_table(&bridge),
    };
    let registry = TestRegistry::start();

    let mut config = AgentConfig::new(dir.path().join("data"), "cri-test");
    config.cgroup_root = cgroup_root.clone();
    config.pause_image = registry.pause();
    let paths = ContainerdPaths::under(&config.agent_dir());
    let containerd = Containerd::start(paths.clone(), &config.pause_image, &Registries::default())
        .await
        .expect("containerd starts");
    let cidr = format!("10.244.{}.0/24", pid % 250);
    cni::write(
        &paths.cni_conf_dir,
        &cni::CniConfig {
            bridge: bridge.clone(),
            pod_cidr: cidr.clone(),
            ipam_data_dir: config.agent_dir().join("cni/networks"),
            mtu: 0,
        },
    )
    .unwrap();
    let (cri, version) = Cri::connect(&containerd.endpoint(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(version.runtime_name, "containerd");

    // The image: pulled over plain HTTP from the loopback registry.
    let image_ref = cri
        .pull_image(&registry.busybox(), None, None)
        .await
        .expect("pull busybox");
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");

    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "uid": format!("uid-{pid}")},
        "spec": {"containers": [{"name": "httpd", "image": registry.busybox(),
            "command": ["httpd", "-f", "-p", "8080", "-h", "/var/www"],
            "resources": {"limits": {"memory": "32Mi", "cpu": "200m"}}}]},
    }))
    .unwrap();
    let sandbox_config = spec::sandbox_config(&config, &pod, 0);
    std::fs::create_dir_all(&sandbox_config.log_directory).unwrap();
    let t = Instant::now();
    let sandbox = cri
        .run_pod_sandbox(sandbox_config.clone())
        .await
        .expect("RunPodSandbox");
    eprintln!("RunPodSandbox took {:?}", t.elapsed());
    let status = cri.pod_sandbox_status(&sandbox).await.unwrap();
    let ip = status.network.unwrap().ip;
    assert!(
        ip.starts_with(&cidr[..cidr.len() - 4]),
        "pod IP {ip} not in {cidr}"
    );

    let c = &pod.spec.as_ref().unwrap().containers[0];
    let cc = spec::container_config(spec::ContainerInput {
        pod: &pod,
        container: c,
        attempt: 0,
        image_ref: &image_ref,
        env: vec![("GREETING".into(), "hello".into())],
        mounts: vec![],
        node_memory: 1 << 30,
    })
    .unwrap();
    let id = cri
        .create_container(&sandbox, cc, sandbox_config.clone())
        .await
        .expect("CreateContainer");
    cri.start_container(&id).await.expect("StartContainer");

    // The container's cgroup carries the memory limit.
    let mem_limit = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory{cgroup_root}/poduid-{pid}/{id}/memory.limit_in_bytes"
    ))
    .unwrap();
    assert_eq!(mem_limit.trim(), (32u64 << 20).to_string());
    let (code, out, _) = cri
        .exec_sync(
            &id,
            vec!["sh".into(), "-c".into(), "echo $GREETING".into()],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!((code, String::from_utf8_lossy(&out).trim()), (0, "hello"));

    let addr = format!("{ip}:8080");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        match http_get(&addr, "/index.html") {
            Ok(b) => break b,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for httpd: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("httpd on {addr}: {e}"),
        }
    };
    assert!(
        body.contains("200 OK") && body.contains("tugboat test image"),
        "{body}"
    );

    // Teardown: stop, remove; the network namespace goes with the sandbox.
    cri.stop_container(&id, Duration::from_secs(1))
        .await
        .unwrap();
    cri.remove_container(&id).await.unwrap();
    cri.stop_pod_sandbox(&sandbox).await.unwrap();
    cri.remove_pod_sandbox(&sandbox).await.unwrap();
    assert!(
        cri.list_pod_sandboxes(uid_filter(&format!("uid-{pid}")))
            .await
            .unwrap()
            .is_empty()
    );
    let netns_dir = paths.state.join("io.containerd.grpc.v1.cri/netns");
    let left: Vec<_> = std::fs::read_dir(&netns_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "network namespaces left: {left:?}");

    // The supervisor restarts a containerd that dies, and the client's
    // channel reconnects by itself.
    let pid_file = paths.pid_file.clone();
    let old_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::process::Command::new("kill")
        .args(["-9", &old_pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let new_pid: i32 = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(old_pid);
        if new_pid != old_pid && cri.version().await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "containerd was not restarted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    containerd.stop().await;
    assert!(!paths.pid_file.exists(), "the pid file outlived containerd");
}
