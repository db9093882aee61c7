//! Child processes of the benchmark (the server under test, etcd): started
//! on free loopback ports with their output in a log file, killed when their
//! guard is dropped (also on error, panic unwinding and Ctrl-C).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::{Method, StatusCode};

use super::client::{Conn, Endpoint};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A running child, killed (SIGKILL) and reaped on drop.
pub struct ChildGuard {
    pub name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> anyhow::Result<ChildGuard> {
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(ChildGuard { name, child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the child has exited, with the end of its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); last lines of its log:\n{}",
                self.name,
                self.log_tail(30)
            );
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `VmRSS` (current) and `VmHWM` (peak) in bytes.
    pub fn rss(&self) -> anyhow::Result<Rss> {
        read_rss(self.pid())
    }

    /// SIGTERM, then SIGKILL if it has not exited after `timeout` (for
    /// children that clean up on SIGTERM, such as `tug agent` stopping its
    /// containerd).
    pub fn terminate(&mut self, timeout: Duration) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Rss {
    pub current: u64,
    pub peak: u64,
}

pub fn read_rss(pid: u32) -> anyhow::Result<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading /proc/PID/status")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("parsing {line}"))?;
        Ok(kb * 1024)
    };
    Ok(Rss {
        current: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

/// CPU time (user + system) a process has used so far, from
/// `/proc/PID/stat` (`pid` 0: this process).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = if pid == 0 { "/proc/self/stat".to_string() } else { format!("/proc/{pid}/stat") };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces: count from after its ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).with_context(|| format!("parsing {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields.get(i).with_context(|| format!("short {path}"))?.parse::<u64>().with_context(|| format!("parsing {path}"))
    };
    // In USER_HZ, which Linux fixes at 100 for /proc on every architecture we run on.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// A single-member etcd on loopback ports with its data in `dir`.
pub struct Etcd {
    pub guard: ChildGuard,
    pub endpoint: String,
}

pub async fn start_etcd(bin: &Path, dir: &Path) -> anyhow::Result<Etcd> {
    let client = free_port()?;
    let peer = free_port()?;
    let data = dir.join("data");
    let curl = format!("http://127.0.0.1:{client}");
    let purl = format!("http://127.0.0.1:{peer}");
    let mut cmd = Command::new(bin);
    cmd.arg("--name")
        .arg("bench")
        .arg("--data-dir")
        .arg(&data)
        .arg("--listen-client-urls")
        .arg(&curl)
        .arg("--advertise-client-urls")
        .arg(&curl)
        .arg("--listen-peer-urls")
        .arg(&purl)
        .arg("--initial-advertise-peer-urls")
        .arg(&purl)
        .arg("--initial-cluster")
        .arg(format!("bench={purl}"))
        .arg("--quota-backend-bytes")
        .arg((8u64 << 30).to_string());
    let mut guard = ChildGuard::spawn("etcd", cmd, dir.join("etcd.log"))?;
    // Ready when a store client can read the revision.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        guard.check_alive()?;
        let attempt = tokio::time::timeout(Duration::from_secs(2), async {
            let store = tug_store::open(&curl, dir).await?;
            store.current_revision().await
        })
        .await;
        if let Ok(Ok(_)) = attempt {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "etcd did not become ready in 30 s; last lines of its log:\n{}",
                guard.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Etcd {
        guard,
        endpoint: curl,
    })
}

/// `tug server` under test, with an admin connection.
pub struct Server {
    pub guard: ChildGuard,
    pub endpoint: Endpoint,
}

pub async fn start_server(dir: &Path, datastore: Option<&str>) -> anyhow::Result<Server> {
    start_server_with(dir, datastore, &[]).await
}

/// [`start_server`] with extra `tug server` flags (say `--disable-controller-manager`).
pub async fn start_server_with(
    dir: &Path,
    datastore: Option<&str>,
    extra: &[String],
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let data_dir = dir.join("server");
    let mut cmd = Command::new(tug_exe()?);
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--https-listen-port")
        .arg(port.to_string())
        .arg("--bind-address")
        .arg("127.0.0.1")
        .arg("--disable-agent")
        .args(extra);
    if let Some(ep) = datastore {
        cmd.arg("--datastore-endpoint").arg(ep);
    }
    let mut guard = ChildGuard::spawn("tug server", cmd, dir.join("server.log"))?;
    let kubeconfig = data_dir.join("kubeconfig.yaml");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kubeconfig.exists() {
        guard.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "tug server wrote no kubeconfig in 60 s; last lines of its log:\n{}",
                guard.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let endpoint = Endpoint::from_kubeconfig(&kubeconfig)?;
    loop {
        guard.check_alive()?;
        let ready = async {
            let mut c: Conn = endpoint.connect().await?;
            c.expect(Method::GET, "/readyz", None, StatusCode::OK).await
        };
        if tokio::time::timeout(Duration::from_secs(2), ready)
            .await
            .is_ok_and(|r| r.is_ok())
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "tug server not ready in 60 s; last lines of its log:\n{}",
                guard.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Server { guard, endpoint })
}

/// This binary (`tug`), which the bench runs as the server and the hollow nodes.
fn tug_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("finding the tug binary")
}

/// `tug hollow`: `nodes` simulated kubelets of `cpu`/`memory` capacity each,
/// in a process of their own, joining the cluster of `kubeconfig`. Its log
/// goes to `dir/hollow.log`. Returns at once; the nodes register in the
/// background (wait for them through the API).
pub fn start_hollow(
    dir: &Path,
    kubeconfig: &Path,
    nodes: usize,
    cpu: &str,
    memory: &str,
) -> anyhow::Result<ChildGuard> {
    let mut cmd = Command::new(tug_exe()?);
    cmd.arg("hollow")
        .arg("--nodes")
        .arg(nodes.to_string())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cpu")
        .arg(cpu)
        .arg("--memory")
        .arg(memory);
    ChildGuard::spawn("tug hollow", cmd, dir.join("hollow.log"))
}

/// `tug controller-manager` or `tug scheduler` in a process of its own (so
/// that its memory shows apart from the server's), against the cluster of
/// `kubeconfig`; its log goes to `dir/<component>.log`.
pub fn start_component(
    dir: &Path,
    component: &'static str,
    kubeconfig: &Path,
) -> anyhow::Result<ChildGuard> {
    let mut cmd = Command::new(tug_exe()?);
    cmd.arg(component).arg("--kubeconfig").arg(kubeconfig);
    ChildGuard::spawn(component, cmd, dir.join(format!("{component}.log")))
}

/// The node agent in a process of its own (so that its memory shows
/// apart): `tug-agent ARGS` when that binary sits next to `tug` and
/// `full_binary` is false, else `tug agent ARGS`. Its log goes to
/// `dir/agent.log`. Returns the guard and the command's name.
pub fn start_agent(dir: &Path, args: &[String], full_binary: bool) -> anyhow::Result<(ChildGuard, &'static str)> {
    let tug = tug_exe()?;
    let agent_only = tug.with_file_name("tug-agent");
    let (mut cmd, name) = if !full_binary && agent_only.exists() {
        (Command::new(agent_only), "tug-agent")
    } else {
        let mut cmd = Command::new(tug);
        cmd.arg("agent");
        (cmd, "tug agent")
    };
    cmd.args(args);
    Ok((ChildGuard::spawn(name, cmd, dir.join("agent.log"))?, name))
}
