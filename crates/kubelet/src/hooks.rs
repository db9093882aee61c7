//! Container lifecycle hooks (upstream's `lifecycle.handlerRunner`) and
//! the killing of a container (`killContainer`):
//! - a handler is an `exec` (CRI ExecSync in the container, failing on a
//!   non-zero exit), an `httpGet` (HTTP/1.1 GET to the pod IP or the given
//!   host, failing only when no response comes: upstream ignores the status
//!   code of hook requests) or a `sleep`;
//! - postStart runs right after StartContainer, and the pod worker waits
//!   for it; a failure is a `FailedPostStartHook` event and the container is
//!   killed (it then restarts by its policy);
//! - [`kill_container`] records `Killing`, runs preStop within the grace
//!   period (the hook's time counts against it; a hook still running at the
//!   end of the period is left behind), then calls StopContainer with what
//!   is left, but never less than [`MINIMUM_GRACE_SECONDS`] (so a hook
//!   that overruns gives the container 2 s after SIGTERM), as upstream.
//!
//! httpGet hooks with scheme HTTPS go over TLS and accept any certificate,
//! as upstream's kubelet does.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::events::EventType;

use crate::cri::Cri;

/// upstream's `minimumGracePeriodInSeconds`: the least time between SIGTERM
/// and SIGKILL whatever the grace period and the hook took.
pub const MINIMUM_GRACE_SECONDS: i64 = 2;

/// How long a postStart hook may block the pod worker (upstream: no bound
/// but the container's life; a stuck hook must not wedge the worker).
pub const POST_START_TIMEOUT: Duration = Duration::from_secs(300);

/// What a hook needs to reach its container.
#[derive(Clone)]
pub struct HookTarget {
    pub cri: Cri,
    pub container_id: String,
    /// The pod IP (the node IP for hostNetwork pods), httpGet's default host.
    pub pod_ip: String,
}

/// The StopContainer timeout left of `grace` seconds after a preStop hook
/// that ran for `hook_ran` (upstream truncates the hook's time to whole
/// seconds and gives at least [`MINIMUM_GRACE_SECONDS`]).
pub fn remaining_grace(grace: i64, hook_ran: Option<Duration>) -> i64 {
    let spent = hook_ran.map(|d| d.as_secs() as i64).unwrap_or(0);
    (grace.max(0) - spent).max(MINIMUM_GRACE_SECONDS)
}

/// `port` of an httpGet handler: a number, a numeric string, or the name of
/// one of the container's ports; an empty string is 80.
pub fn resolve_port(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(s) if s.is_empty() => Ok(80),
        IntOrString::String(s) => s
            .parse::<u16>()
            .ok()
            .or_else(|| {
                c.ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(s.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok())
            })
            .ok_or_else(|| format!("couldn't find port: {s} in container {}", c.name)),
    }
}

/// Runs one handler to its end; `Err` is the message upstream logs.
pub async fn run_handler(
    h: &LifecycleHandler,
    c: &Container,
    t: &HookTarget,
) -> Result<(), String> {
    if let Some(e) = &h.exec {
        let cmd = e.command.clone().unwrap_or_default();
        if cmd.is_empty() {
            return Err("exec hook without a command".into());
        }
        let mut r = t.cri.runtime.clone();
        // Timeout 0: no limit from the runtime (upstream's RunInContainer with 0).
        let req = k8s_cri::v1::ExecSyncRequest {
            container_id: t.container_id.clone(),
            cmd: cmd.clone(),
            timeout: 0,
        };
        return match r.exec_sync(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                if resp.exit_code == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "Exec lifecycle hook ({cmd:?}) for Container {:?} failed - error: command exited with {}, message: {:?}",
                        c.name,
                        resp.exit_code,
                        String::from_utf8_lossy(&[resp.stdout, resp.stderr].concat())
                            .trim()
                            .chars()
                            .take(1024)
                            .collect::<String>()
                    ))
                }
            }
            Err(s) => Err(format!(
                "Exec lifecycle hook ({cmd:?}) for Container {:?} failed - error: {}",
                c.name,
                s.message()
            )),
        };
    }
    if let Some(g) = &h.http_get {
        let path = g.path.clone().unwrap_or_default();
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let fail = |e: String| {
            format!(
                "HTTP lifecycle hook ({path}) for Container {:?} failed - error: {e}",
                c.name
            )
        };
        let https = g.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
        let port = resolve_port(c, &g.port).map_err(fail)?;
        let host = g
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| t.pod_ip.clone());
        if host.is_empty() {
            return Err(fail("the pod has no IP".into()));
        }
        let headers: Vec<(String, String)> = g
            .http_headers
            .iter()
            .flatten()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect();
        return crate::probes::http_get(&host, port, &path, &headers, crate::probes::LIFECYCLE_USER_AGENT, https)
            .await
            .map(|_| ())
            .map_err(|e| fail(e.to_string()));
    }
    if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
        return Ok(());
    }
    if h.tcp_socket.is_some() {
        // Deprecated and never run by upstream either.
        return Err("tcpSocket lifecycle hooks are not supported".into());
    }
    Err("invalid handler: no exec, httpGet or sleep".into())
}

/// Where the events of a kill go.
#[derive(Clone)]
pub struct EventSink {
    pub events: crate::events::EventQueue,
    pub pod: k8s_openapi::api::core::v1::ObjectReference,
}

impl EventSink {
    /// Queues the event (written in the background, in order).
    pub fn publish(&self, type_: EventType, reason: &str, note: String) {
        self.events.publish(&self.pod, type_, reason, note);
    }
}

/// What a kill did (for logs and tests).
#[derive(Debug)]
pub struct Killed {
    /// How long the preStop hook ran before StopContainer (None: no hook).
    pub hook_ran: Option<Duration>,
    /// The StopContainer timeout used.
    pub stop_timeout: i64,
}

/// upstream's `killContainer`: a `Killing` event with `message`, the
/// container's preStop hook within `grace` seconds (a failure is a
/// `FailedPreStopHook` event), then StopContainer with the rest of the
/// grace period (at least [`MINIMUM_GRACE_SECONDS`]).
pub async fn kill_container(
    target: &HookTarget,
    spec: Option<&Container>,
    grace: i64,
    message: String,
    events: &EventSink,
) -> anyhow::Result<Killed> {
    events
        .publish(EventType::Normal, "Killing", message);
    let mut hook_ran = None;
    if let Some(c) = spec
        && let Some(pre) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone())
        && grace > 0
    {
        let start = Instant::now();
        let (c2, t2, ev2) = (c.clone(), target.clone(), events.clone());
        // The hook goes on in the background when the grace period ends
        // first (it ends with the container); its failure is still reported.
        let hook = tokio::spawn(async move {
            if let Err(msg) = run_handler(&pre, &c2, &t2).await {
                tracing::warn!(container = %c2.name, error = %msg, "preStop hook failed");
                // Upstream keeps the message out of the event (it may hold secrets).
                ev2.publish(EventType::Warning, "FailedPreStopHook", "PreStopHook failed".into());
            }
        });
        if tokio::time::timeout(Duration::from_secs(grace as u64), hook)
            .await
            .is_err()
        {
            tracing::info!(container = %c.name, grace, "preStop hook not completed in the grace period");
        }
        hook_ran = Some(start.elapsed());
    }
    let stop_timeout = remaining_grace(grace, hook_ran);
    if let Err(e) = target
        .cri
        .stop_container(&target.container_id, Duration::from_secs(stop_timeout as u64))
        .await
        && !crate::cri::is_not_found(&e)
    {
        return Err(e);
    }
    Ok(Killed {
        hook_ran,
        stop_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn grace_accounting() {
        // No hook: the whole grace period, at least 2 s.
        assert_eq!(remaining_grace(30, None), 30);
        assert_eq!(remaining_grace(0, None), 2);
        assert_eq!(remaining_grace(1, None), 2);
        // The hook's whole seconds are taken off.
        assert_eq!(remaining_grace(10, Some(Duration::from_millis(3900))), 7);
        assert_eq!(remaining_grace(5, Some(Duration::from_secs(3))), 2);
        // A hook that used (or overran) the period leaves the minimum.
        assert_eq!(remaining_grace(5, Some(Duration::from_millis(5001))), 2);
        assert_eq!(remaining_grace(3, Some(Duration::from_secs(60))), 2);
        assert_eq!(remaining_grace(-4, None), 2);
    }

    #[test]
    fn ports() {
        let c: Container = serde_json::from_value(json!({
            "name": "c", "ports": [{"name": "web", "containerPort": 8080}]
        }))
        .unwrap();
        assert_eq!(resolve_port(&c, &IntOrString::Int(81)).unwrap(), 81);
        assert_eq!(resolve_port(&c, &IntOrString::String("".into())).unwrap(), 80);
        assert_eq!(resolve_port(&c, &IntOrString::String("9090".into())).unwrap(), 9090);
        assert_eq!(resolve_port(&c, &IntOrString::String("web".into())).unwrap(), 8080);
        assert!(resolve_port(&c, &IntOrString::String("nope".into())).is_err());
        assert!(resolve_port(&c, &IntOrString::Int(70000)).is_err());
    }

    #[tokio::test]
    async fn http_and_sleep_handlers() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else { return };
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).to_string());
                // A 500 is still a delivered hook (upstream ignores the code).
                let _ = s
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let c: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        let t = HookTarget {
            cri: Cri::new("/nonexistent.sock").unwrap(),
            container_id: "x".into(),
            pod_ip: "127.0.0.1".into(),
        };
        let h: LifecycleHandler = serde_json::from_value(json!({
            "httpGet": {"path": "hook", "port": port, "httpHeaders": [{"name": "X-A", "value": "b"}]}
        }))
        .unwrap();
        run_handler(&h, &c, &t).await.unwrap();
        let req = rx.recv().await.unwrap();
        assert!(req.starts_with("GET /hook HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("X-A: b\r\n") && req.contains("kube-lifecycle/"), "{req}");
        // Nobody listening: the hook fails.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap().port();
        drop(closed);
        let h: LifecycleHandler =
            serde_json::from_value(json!({"httpGet": {"port": dead}})).unwrap();
        assert!(run_handler(&h, &c, &t).await.is_err());
        // HTTPS, to a server whose certificate nobody vouches for: accepted.
        let (tls_port, seen) = crate::probes::tests::https_server().await;
        let h: LifecycleHandler =
            serde_json::from_value(json!({"httpGet": {"port": tls_port, "path": "hook", "scheme": "HTTPS"}})).unwrap();
        run_handler(&h, &c, &t).await.unwrap();
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1, "the hook went over TLS");
        let h: LifecycleHandler = serde_json::from_value(json!({"sleep": {"seconds": 1}})).unwrap();
        let start = Instant::now();
        run_handler(&h, &c, &t).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(1));
        let empty: LifecycleHandler = serde_json::from_value(json!({})).unwrap();
        assert!(run_handler(&empty, &c, &t).await.is_err());
    }
}
