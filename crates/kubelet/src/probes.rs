//! Container probes (upstream's prober): liveness, readiness and startup,
//! each an exec (CRI ExecSync), httpGet (HTTP/1.1 to the pod IP), tcpSocket
//! or grpc (the gRPC health checking protocol, `probes/grpc.rs`) check, run
//! by a task per probe and running container, with
//! initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold and
//! failureThreshold. Results are kept per container id; a change wakes the
//! pod worker, which reports readiness and restarts containers whose
//! liveness or startup probe failed. httpGet with scheme HTTPS accepts any
//! certificate, as upstream's prober does.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cri::Cri;

mod grpc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }
}

/// The current verdict of one probe of one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet (initial delay, thresholds not reached).
    Unknown,
    Success,
    /// Failed `failureThreshold` times in a row; the last failure's message.
    Failure(String),
}

type Results = Arc<Mutex<HashMap<(String, Kind), Verdict>>>;

/// The probes of one pod.
pub struct Prober {
    results: Results,
    tasks: HashMap<String, Vec<JoinHandle<()>>>,
    kick: Arc<Notify>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        for t in self.tasks.values().flatten() {
            t.abort();
        }
    }
}

/// What a probe needs to reach the container.
#[derive(Clone)]
pub struct Target {
    pub cri: Cri,
    pub container_id: String,
    pub pod_ip: String,
}

impl Prober {
    /// `kick` is notified whenever a verdict changes.
    pub fn new(kick: Arc<Notify>) -> Prober {
        Prober {
            results: Arc::default(),
            tasks: HashMap::new(),
            kick,
        }
    }

    pub fn verdict(&self, container_id: &str, kind: Kind) -> Verdict {
        self.results
            .lock()
            .expect("probe results")
            .get(&(container_id.to_string(), kind))
            .cloned()
            .unwrap_or(Verdict::Unknown)
    }

    /// Starts the probes of a running container (once per container id).
    pub fn ensure(&mut self, c: &Container, target: Target) {
        if self.tasks.contains_key(&target.container_id) {
            return;
        }
        let mut handles = Vec::new();
        let has_startup = c.startup_probe.is_some();
        for (kind, probe) in [
            (Kind::Startup, &c.startup_probe),
            (Kind::Liveness, &c.liveness_probe),
            (Kind::Readiness, &c.readiness_probe),
        ] {
            let Some(probe) = probe.clone() else { continue };
            let (results, kick, target, container) = (
                self.results.clone(),
                self.kick.clone(),
                target.clone(),
                c.clone(),
            );
            handles.push(tokio::spawn(async move {
                run_probe(kind, probe, container, target, results, kick, has_startup).await;
            }));
        }
        self.tasks.insert(target.container_id.clone(), handles);
    }

    /// Stops the probes of containers no longer running.
    pub fn retain(&mut self, running: &[String]) {
        let gone: Vec<String> = self
            .tasks
            .keys()
            .filter(|id| !running.contains(id))
            .cloned()
            .collect();
        for id in gone {
            for t in self.tasks.remove(&id).into_iter().flatten() {
                t.abort();
            }
            self.results
                .lock()
                .expect("probe results")
                .retain(|(cid, _), _| *cid != id);
        }
    }
}

async fn run_probe(
    kind: Kind,
    p: Probe,
    c: Container,
    t: Target,
    results: Results,
    kick: Arc<Notify>,
    has_startup: bool,
) {
    let delay = Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    let success_threshold = p.success_threshold.unwrap_or(1).max(1) as u32;
    let failure_threshold = p.failure_threshold.unwrap_or(3).max(1) as u32;
    let key = (t.container_id.clone(), kind);
    let startup_key = (t.container_id.clone(), Kind::Startup);
    let set = |v: Verdict| {
        let mut r = results.lock().expect("probe results");
        if r.get(&key) != Some(&v) {
            r.insert(key.clone(), v);
            kick.notify_one();
        }
    };
    tokio::time::sleep(delay).await;
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        // Liveness and readiness wait for the startup probe to succeed.
        let gated = has_startup
            && kind != Kind::Startup
            && results.lock().expect("probe results").get(&startup_key) != Some(&Verdict::Success);
        if !gated {
            match check(&p, &c, &t, timeout).await {
                Ok(()) => {
                    failures = 0;
                    successes += 1;
                    if successes >= success_threshold {
                        set(Verdict::Success);
                        if kind == Kind::Startup {
                            // A startup probe stops once it succeeded.
                            return;
                        }
                    }
                }
                Err(msg) => {
                    successes = 0;
                    failures += 1;
                    tracing::debug!(container = %c.name, probe = kind.name(), %msg, failures, "probe failed");
                    if failures >= failure_threshold {
                        set(Verdict::Failure(msg));
                        if kind != Kind::Readiness {
                            // The worker restarts the container; this task ends with it.
                            return;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

fn port_of(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("bad port {p}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

async fn tcp_check(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
        Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

async fn check(p: &Probe, c: &Container, t: &Target, timeout: Duration) -> Result<(), String> {
    if let Some(e) = &p.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match t.cri.exec_sync(&t.container_id, cmd, timeout).await {
            Ok((0, _, _)) => Ok(()),
            Ok((code, out, err)) => Err(format!(
                "command exited with {code}: {}{}",
                String::from_utf8_lossy(&out).trim(),
                String::from_utf8_lossy(&err).trim()
            )),
            Err(e) => Err(format!("{e:#}")),
        };
    }
    if let Some(h) = &p.http_get {
        let port = port_of(c, &h.port)?;
        let host = h.host.clone().unwrap_or_else(|| t.pod_ip.clone());
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> = h
            .http_headers
            .iter()
            .flatten()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect();
        let https = h.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
        let scheme = if https { "https" } else { "http" };
        return match tokio::time::timeout(timeout, http_get(&host, port, &path, &headers, PROBE_USER_AGENT, https)).await {
            Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
            Ok(Ok(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(e)) => Err(format!("Get \"{scheme}://{host}:{port}{path}\": {e}")),
            Err(_) => Err(format!(
                "Get \"{scheme}://{host}:{port}{path}\": context deadline exceeded"
            )),
        };
    }
    if let Some(s) = &p.tcp_socket {
        let port = port_of(c, &s.port)?;
        let host = s.host.clone().unwrap_or_else(|| t.pod_ip.clone());
        return tcp_check(&host, port, timeout).await;
    }
    if let Some(g) = &p.grpc {
        let port = u16::try_from(g.port).map_err(|_| format!("bad port {}", g.port))?;
        let service = g.service.as_deref().unwrap_or("");
        return grpc::check(&t.pod_ip, port, service, timeout, PROBE_USER_AGENT).await;
    }
    Err("probe has no handler".into())
}

/// The user agents upstream's kubelet sends for probes and lifecycle hooks.
pub(crate) const PROBE_USER_AGENT: &str = "kube-probe/1.33";
pub(crate) const LIFECYCLE_USER_AGENT: &str = "kube-lifecycle/1.33";

/// An HTTP/1.1 GET (probes and lifecycle hooks), over TLS when `https`
/// (any server certificate accepted, as upstream's kubelet does: a pod's
/// certificate is not the cluster's to vouch for); returns the status code.
pub(crate) async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    user_agent: &str,
    https: bool,
) -> io::Result<u16> {
    let addr = if host.contains(':') && !host.starts_with('[') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {user_agent}\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    if !https {
        return exchange(tcp, &req).await;
    }
    static TLS: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = TLS.get_or_init(tug_pki::insecure_client_config).clone();
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let name = rustls::pki_types::ServerName::try_from(bare)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("host {host:?}: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
    exchange(tls, &req).await
}

/// Sends `req` and reads the status code of the answer.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S, req: &str) -> io::Result<u16> {
    s.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 1024];
    let mut n = 0;
    while n < buf.len() {
        let r = s.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
        if buf[..n].windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP response"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[tokio::test]
    async fn http_and_tcp_checks() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let code = if req.starts_with("GET /healthz ") {
                    "200 OK"
                } else {
                    "500 Internal Server Error"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        assert_eq!(
            http_get("127.0.0.1", port, "/healthz", &[], PROBE_USER_AGENT, false).await.unwrap(),
            200
        );
        assert_eq!(
            http_get("127.0.0.1", port, "/other", &[], PROBE_USER_AGENT, false).await.unwrap(),
            500
        );
        assert!(
            tcp_check("127.0.0.1", port, Duration::from_secs(1))
                .await
                .is_ok()
        );
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "http", "containerPort": port}]
        }))
        .unwrap();
        assert_eq!(
            port_of(&c, &IntOrString::String("http".into())).unwrap(),
            port
        );
        assert!(port_of(&c, &IntOrString::String("nope".into())).is_err());
    }

    /// An HTTPS server on 127.0.0.1 with a self-signed certificate (no CA
    /// anyone trusts) that answers 200 for `/healthz` and 500 otherwise,
    /// and counts the requests it decrypted.
    pub(crate) async fn https_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let key = rcgen::generate_simple_self_signed(vec!["pod.example".to_string()]).unwrap();
        let cert = rustls::pki_types::CertificateDer::from(key.cert.der().to_vec());
        let private = rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(tug_pki::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], private)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = l.accept().await.unwrap();
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else { return };
                    let mut buf = [0u8; 512];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let code = if req.starts_with("GET /healthz ") || req.starts_with("GET /hook ") { "200 OK" } else { "500 Internal Server Error" };
                    let _ = s.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        (port, seen)
    }

    /// scheme HTTPS: TLS, and any certificate is accepted (upstream's
    /// prober skips verification); plain HTTP to a TLS port fails.
    #[tokio::test]
    async fn https_checks_accept_any_certificate() {
        let (port, seen) = https_server().await;
        assert_eq!(http_get("127.0.0.1", port, "/healthz", &[], PROBE_USER_AGENT, true).await.unwrap(), 200);
        assert_eq!(http_get("127.0.0.1", port, "/other", &[], PROBE_USER_AGENT, true).await.unwrap(), 500);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2, "both requests went over TLS");
        assert!(http_get("127.0.0.1", port, "/healthz", &[], PROBE_USER_AGENT, false).await.is_err(), "plain HTTP to a TLS server");
    }
}
