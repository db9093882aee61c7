//! The client side of gRPC probes: one call of the standard health checking
//! protocol, `grpc.health.v1.Health/Check`, as upstream's kubelet makes it
//! (pkg/probe/grpc): plaintext HTTP/2 to `podIP:port`, the probe's
//! `service` (empty when unset) in the request, connecting and calling
//! within the probe's timeout, success only for `SERVING`, and upstream's
//! failure messages, which end up in the container's events.
//!
//! It is a module of its own because nothing else in the kubelet speaks
//! this protocol, and because the two messages are declared here by hand
//! (`prost` derives) rather than generated: no build script or `protoc` for
//! a two-field protocol. The codec is `tonic_prost::ProstCodec`, the one the
//! generated CRI client uses.

use std::time::Duration;

use http::uri::PathAndQuery;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Endpoint;
use tonic_prost::ProstCodec;

/// The method every health server implements.
pub(crate) const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// How long to wait before dialing again after a failed connection attempt
/// (upstream keeps dialing until the deadline too).
const REDIAL_DELAY: Duration = Duration::from_millis(100);

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HealthCheckResponse {
    #[prost(enumeration = "ServingStatus", tag = "1")]
    pub status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum ServingStatus {
    Unknown = 0,
    Serving = 1,
    NotServing = 2,
    /// Only used by the streaming `Watch` method.
    ServiceUnknown = 3,
}

/// The status as the protobuf enum's value name (a number for values the
/// protocol does not define, like Go's generated `String()`).
fn status_name(status: i32) -> String {
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Unknown) => "UNKNOWN".into(),
        Ok(ServingStatus::Serving) => "SERVING".into(),
        Ok(ServingStatus::NotServing) => "NOT_SERVING".into(),
        Ok(ServingStatus::ServiceUnknown) => "SERVICE_UNKNOWN".into(),
        Err(_) => status.to_string(),
    }
}

/// Checks the health of `service` at `host:port`; `Err` carries upstream's
/// probe failure message.
pub(crate) async fn check(
    host: &str,
    port: u16,
    service: &str,
    timeout: Duration,
    user_agent: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let addr = join_host_port(host, port);
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .and_then(|e| e.user_agent(user_agent))
        .map_err(|e| format!("error: failed to connect service at {addr:?}: {e}"))?;

    // Like grpc-go's blocking dial: keep dialing until connected or out of time.
    let channel = loop {
        match tokio::time::timeout_at(deadline, endpoint.connect()).await {
            Ok(Ok(channel)) => break channel,
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %error_chain(&e), "gRPC probe: connection failed");
                let retry = (Instant::now() + REDIAL_DELAY).min(deadline);
                tokio::time::sleep_until(retry).await;
                if retry < deadline {
                    continue;
                }
            }
            Err(_) => {}
        }
        return Err(format!(
            "timeout: failed to connect service {addr:?} within {}: context deadline exceeded",
            go_duration(timeout)
        ));
    };

    let mut grpc = tonic::client::Grpc::new(channel);
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    // The server learns the deadline from the grpc-timeout header.
    req.set_timeout(deadline.saturating_duration_since(Instant::now()));
    let call = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(error_chain(&e)))?;
        grpc.unary(
            req,
            PathAndQuery::from_static(CHECK_PATH),
            ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
        )
        .await
    };
    let rpc_timeout = || format!("timeout: health rpc did not complete within {}", go_duration(timeout));
    let resp = match tokio::time::timeout_at(deadline, call).await {
        Ok(Ok(resp)) => resp.into_inner(),
        Ok(Err(s)) if s.code() == Code::Unimplemented => {
            return Err(format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                s.message()
            ));
        }
        // tonic enforces the grpc-timeout it sends by cancelling the call
        // ("Timeout expired"); grpc-go calls that DeadlineExceeded.
        Ok(Err(s))
            if s.code() == Code::DeadlineExceeded
                || (s.code() == Code::Cancelled && Instant::now() >= deadline) =>
        {
            return Err(rpc_timeout());
        }
        Ok(Err(s)) => {
            return Err(format!(
                "error: health rpc probe failed: rpc error: code = {} desc = {}",
                go_code_name(s.code()),
                s.message()
            ));
        }
        Err(_) => return Err(rpc_timeout()),
    };
    if resp.status != ServingStatus::Serving as i32 {
        return Err(format!(
            "service unhealthy (responded with {:?})",
            status_name(resp.status)
        ));
    }
    Ok(())
}

/// Go's `net.JoinHostPort`: IPv6 addresses in brackets.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An error with its sources (tonic's transport errors say little on their own).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// A status code as grpc-go names it (`codes.Code.String()`).
fn go_code_name(code: Code) -> String {
    match code {
        Code::Ok => "OK".into(),
        Code::Cancelled => "Canceled".into(),
        other => format!("{other:?}"),
    }
}

/// A duration as Go's `time.Duration.String()` prints it: `1s`, `1m30s`,
/// `2m0s`, `1h0m0s`, `1.5s`, `500ms`.
fn go_duration(d: Duration) -> String {
    fn decimal(v: u128, unit: u128) -> String {
        let (int, frac) = (v / unit, v % unit);
        if frac == 0 {
            return int.to_string();
        }
        let width = unit.ilog10() as usize;
        let digits = format!("{frac:0width$}");
        format!("{int}.{}", digits.trim_end_matches('0'))
    }
    let ns = d.as_nanos();
    match ns {
        0 => "0s".into(),
        1..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}µs", decimal(ns, 1_000)),
        1_000_000..1_000_000_000 => format!("{}ms", decimal(ns, 1_000_000)),
        _ => {
            let secs = d.as_secs();
            let (h, m) = (secs / 3600, secs / 60 % 60);
            let s = decimal(u128::from(secs % 60) * 1_000_000_000 + u128::from(d.subsec_nanos()), 1_000_000_000);
            if h > 0 {
                format!("{h}h{m}m{s}s")
            } else if m > 0 {
                format!("{m}m{s}s")
            } else {
                format!("{s}s")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use k8s_openapi::api::core::v1::{Container, Probe};
    use tonic::Status;
    use tonic::body::Body;
    use tonic::server::NamedService;

    use crate::cri::Cri;
    use crate::probes::{PROBE_USER_AGENT, Target};

    /// A health server written against tonic's server API (what generated
    /// code does): SERVING for "" and "ok", NOT_SERVING for "down",
    /// NOT_FOUND for any other service; with `implemented` false, every
    /// call is UNIMPLEMENTED, like a gRPC server without the health service.
    #[derive(Clone)]
    struct HealthServer {
        implemented: bool,
        user_agents: Arc<Mutex<Vec<String>>>,
    }

    impl NamedService for HealthServer {
        const NAME: &'static str = "grpc.health.v1.Health";
    }

    impl tower::Service<http::Request<Body>> for HealthServer {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<Body>) -> Self::Future {
            let this = self.clone();
            Box::pin(async move {
                if let Some(ua) = req.headers().get(http::header::USER_AGENT) {
                    this.user_agents
                        .lock()
                        .unwrap()
                        .push(ua.to_str().unwrap_or_default().to_string());
                }
                if !this.implemented || req.uri().path() != CHECK_PATH {
                    return Ok(Status::unimplemented("unknown service grpc.health.v1.Health").into_http());
                }
                let mut grpc =
                    tonic::server::Grpc::new(ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default());
                Ok(grpc.unary(tower::service_fn(answer), req).await)
            })
        }
    }

    async fn answer(
        req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        let status = match req.get_ref().service.as_str() {
            "" | "ok" => ServingStatus::Serving,
            "down" => ServingStatus::NotServing,
            other => return Err(Status::not_found(format!("unknown service {other}"))),
        };
        Ok(tonic::Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    /// Starts a health server on 127.0.0.1; its port and the user agents it saw.
    async fn serve(implemented: bool) -> (u16, Arc<Mutex<Vec<String>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let user_agents = Arc::<Mutex<Vec<String>>>::default();
        let svc = HealthServer {
            implemented,
            user_agents: user_agents.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l)),
        );
        (port, user_agents)
    }

    /// Runs a gRPC probe against 127.0.0.1 through the prober's `check`.
    async fn probe(port: u16, service: Option<&str>) -> Result<(), String> {
        let p: Probe = serde_json::from_value(serde_json::json!({
            "grpc": {"port": port, "service": service}
        }))
        .unwrap();
        let c: Container = serde_json::from_value(serde_json::json!({"name": "c"})).unwrap();
        let t = Target {
            // Never called by a gRPC probe (the client connects lazily).
            cri: Cri::new("unix:///nonexistent/cri.sock").unwrap(),
            container_id: "c1".into(),
            pod_ip: "127.0.0.1".into(),
        };
        crate::probes::check(&p, &c, &t, Duration::from_secs(1)).await
    }

    #[tokio::test]
    async fn serving_statuses() {
        let (port, user_agents) = serve(true).await;
        assert_eq!(probe(port, None).await, Ok(()));
        assert_eq!(probe(port, Some("")).await, Ok(()));
        assert_eq!(probe(port, Some("ok")).await, Ok(()));
        assert_eq!(
            probe(port, Some("down")).await,
            Err(r#"service unhealthy (responded with "NOT_SERVING")"#.to_string())
        );
        assert_eq!(
            probe(port, Some("other")).await,
            Err("error: health rpc probe failed: rpc error: code = NotFound desc = unknown service other".to_string())
        );
        let seen = user_agents.lock().unwrap().clone();
        assert_eq!(seen.len(), 5);
        assert!(
            seen.iter().all(|ua| ua.starts_with(PROBE_USER_AGENT)),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn server_without_health_service() {
        let (port, _) = serve(false).await;
        assert_eq!(
            probe(port, None).await,
            Err("error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service grpc.health.v1.Health".to_string())
        );
    }

    #[tokio::test]
    async fn closed_port() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let start = std::time::Instant::now();
        assert_eq!(
            probe(port, None).await,
            Err(format!(
                "timeout: failed to connect service \"127.0.0.1:{port}\" within 1s: context deadline exceeded"
            ))
        );
        // Dialed again until the deadline, and no longer.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn server_that_never_answers() {
        // Accepts connections, reads everything, never writes a byte.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
                });
            }
        });
        let start = std::time::Instant::now();
        let err = probe(port, None).await.unwrap_err();
        assert!(
            err == "timeout: health rpc did not complete within 1s"
                || err == format!("timeout: failed to connect service \"127.0.0.1:{port}\" within 1s: context deadline exceeded"),
            "{err}"
        );
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
    }

    #[test]
    fn helpers() {
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(120)), "2m0s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(join_host_port("fd00::1", 80), "[fd00::1]:80");
        assert_eq!(status_name(2), "NOT_SERVING");
        assert_eq!(status_name(7), "7");
        assert_eq!(go_code_name(Code::Cancelled), "Canceled");
        assert_eq!(go_code_name(Code::NotFound), "NotFound");
    }
}
