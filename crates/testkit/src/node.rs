//! Test support for the node agent: the busybox test image served from a
//! local registry ([`TestRegistry`]), whether containers can run here
//! ([`containers_available`]), and a guard that removes everything an agent
//! and its containerd left on the machine ([`NodeCleanup`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `scripts/test-image.sh` of this workspace.
pub fn test_image_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-image.sh")
}

fn on_path(bin: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|d| d.join(bin).is_file())
}

/// Whether this machine can run the agent's tests: root, containerd, runc,
/// the CNI plugins and the test-image tools. `Err` says what is missing.
pub fn containers_available() -> Result<(), String> {
    if unsafe_geteuid() != 0 {
        return Err("not root".into());
    }
    for bin in [
        "containerd",
        "runc",
        "umoci",
        "skopeo",
        "docker-registry",
        "busybox",
        "iptables",
        "ip",
    ] {
        if !on_path(bin) {
            return Err(format!(
                "{bin} is not installed (scripts/setup.sh installs it)"
            ));
        }
    }
    if !Path::new("/usr/lib/cni/bridge").exists() {
        return Err("the CNI plugins are not in /usr/lib/cni (containernetworking-plugins)".into());
    }
    Ok(())
}

fn unsafe_geteuid() -> u32 {
    // Avoids a libc dependency: the effective uid is in /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|u| u.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// The busybox test image in a registry of its own on a loopback port,
/// built and started by `scripts/test-image.sh`, stopped on drop.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        let dir = tempfile::Builder::new()
            .prefix("tug-registry-")
            .tempdir()
            .expect("temp dir");
        let port = crate::free_port();
        let out = Command::new("bash")
            .arg(test_image_script())
            .args([
                "--dir",
                &dir.path().to_string_lossy(),
                "--port",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .output()
            .expect("running scripts/test-image.sh");
        assert!(
            out.status.success(),
            "scripts/test-image.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let addr = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        assert_eq!(addr, format!("127.0.0.1:{port}"));
        TestRegistry { addr, port, dir }
    }

    /// `ADDR/busybox:latest`.
    pub fn busybox(&self) -> String {
        format!("{}/busybox:latest", self.addr)
    }

    /// `ADDR/busybox:pause` (cmd `sleep infinity`).
    pub fn pause(&self) -> String {
        format!("{}/busybox:pause", self.addr)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(test_image_script())
            .args([
                "--dir",
                &self.dir.path().to_string_lossy(),
                "--port",
                &self.port.to_string(),
                "--stop",
            ])
            .stdin(Stdio::null())
            .output();
    }
}

fn run_quiet(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes what an agent under `root` (its data dir's parent) may leave
/// behind, also when a test fails half-way: container shims and
/// containerd, mounts under `root`, network namespaces under it, the CNI
/// bridge and its masquerade rules, and the pods' cgroups.
pub struct NodeCleanup {
    pub root: PathBuf,
    pub bridge: String,
    /// The agent's cgroup root (`/tug-test-<pid>`), removed from every hierarchy.
    pub cgroup_root: String,
    /// The agent's nftables masquerade table for the bridge
    /// (`tug_kubelet::cni::masquerade_table`), deleted.
    pub masquerade_table: String,
}

impl NodeCleanup {
    pub fn clean(&self) {
        let root = self.root.to_string_lossy().into_owned();
        // Processes started from under the root (containerd, shims with
        // `-address <root>/...`, containers' processes are killed with
        // their shims' cgroups below).
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains(&root)
                    && (cmdline.starts_with("containerd")
                        || cmdline.contains("containerd-shim")
                        || cmdline.contains("/containerd "))
                {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
            }
        }
        // Container processes still in the pods' cgroups.
        for pid in cgroup_procs(&self.cgroup_root) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        // Mounts under the root, deepest first (rootfs overlays, shm, netns).
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut points: Vec<String> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(4).map(|s| s.replace("\\040", " ")))
                .filter(|m| m.starts_with(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for m in points {
                let _ = Command::new("umount")
                    .args(["-l", &m])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // The agent's masquerade table for the bridge.
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.masquerade_table])
            .stderr(Stdio::null())
            .status();
        // The masquerade rules the bridge plugin added for this network
        // (older agents enabled its per-pod ipMasq).
        let network = format!("tugboat-{}", self.bridge);
        if let Some(rules) = run_quiet("iptables", &["-t", "nat", "-S", "POSTROUTING"]) {
            for rule in rules
                .lines()
                .filter(|r| r.contains(&format!("name: \\\"{network}\\\"")) || r.contains(&network))
            {
                let args: Vec<String> = shell_split(rule.trim_start_matches("-A ").trim());
                let mut del = vec!["-t".to_string(), "nat".into(), "-D".into()];
                del.extend(args);
                let del: Vec<&str> = del.iter().map(String::as_str).collect();
                let _ = Command::new("iptables")
                    .args(&del)
                    .stderr(Stdio::null())
                    .status();
                // The per-container chain it jumps to.
                if let Some(i) = del.iter().position(|a| *a == "-j")
                    && let Some(chain) = del.get(i + 1)
                    && chain.starts_with("CNI-")
                {
                    let _ = Command::new("iptables")
                        .args(["-t", "nat", "-F", chain])
                        .stderr(Stdio::null())
                        .status();
                    let _ = Command::new("iptables")
                        .args(["-t", "nat", "-X", chain])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        // runc's state of our containers (kept under /run whatever the root).
        for dir in walk_named(&self.root, "io.containerd.runtime.v2.task") {
            for ns in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                for task in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                    let state = Path::new("/run/containerd/runc")
                        .join(ns.file_name())
                        .join(task.file_name());
                    let _ = std::fs::remove_dir_all(state);
                }
            }
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
        remove_cgroup_tree(&self.cgroup_root);
    }
}

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        self.clean();
    }
}

/// Directories named `name` under `root` (at most 8 levels deep).
fn walk_named(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            if e.file_name() == name {
                out.push(e.path());
            } else if depth < 8 {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    out
}

/// Splits an `iptables -S` rule into arguments (double quotes group).
fn shell_split(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn cgroup_dirs(cgroup_root: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path().join(cgroup_root.trim_start_matches('/'));
        if cgroup_root.trim_matches('/').is_empty() || !p.is_dir() {
            continue;
        }
        let mut dirs = vec![p];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(sub) = std::fs::read_dir(&dirs[i]) {
                for s in sub.flatten() {
                    if s.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        dirs.push(s.path());
                    }
                }
            }
            i += 1;
        }
        out.extend(dirs);
    }
    out
}

fn cgroup_procs(cgroup_root: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = cgroup_dirs(cgroup_root)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort();
    pids.dedup();
    pids
}

fn remove_cgroup_tree(cgroup_root: &str) {
    for d in cgroup_dirs(cgroup_root).iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

/// What is left of an agent's cgroups (for asserting cleanliness).
pub fn leftover_cgroups(cgroup_root: &str) -> Vec<PathBuf> {
    cgroup_dirs(cgroup_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_iptables_rules() {
        let r = r#"POSTROUTING -s 10.1.0.2/32 -m comment --comment "name: \"tugboat-x\" id: \"abc\"" -j CNI-123"#;
        let a = shell_split(r);
        assert_eq!(a[0], "POSTROUTING");
        assert_eq!(a[6], r#"name: "tugboat-x" id: "abc""#);
        assert_eq!(a[8], "CNI-123");
    }
}
