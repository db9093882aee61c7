//! The API server's side of the kubelets: `pods/log`, `pods/exec`,
//! `pods/attach` and `pods/portforward` proxied to the kubelet of the pod's
//! node, and the signing of kubelet serving certificates (joining agents
//! get their client certificates from `join.rs`).
//!
//! The kubelet is found as upstream's `GetConnectionInfo` finds it: the
//! pod's `spec.nodeName`, that Node's address (InternalIP, else ExternalIP,
//! else Hostname) and `status.daemonEndpoints.kubeletEndpoint.Port` (10250
//! when unset). The connection is TLS with the API server's own client
//! certificate (`kube-apiserver-kubelet-client`, `system:masters`), and the
//! kubelet's serving certificate must chain to the cluster CA and cover the
//! address dialled: nothing is ever streamed to an unverified kubelet
//! (upstream's `insecureSkipTLSVerifyBackend` is ignored).
//!
//! Logs are relayed as a streamed body (so `kubectl logs -f` sees lines as
//! the container writes them). Exec, attach and port-forward are HTTP/1.1
//! upgrades proxied byte for byte ([`tug_httpstream::proxy_upgrade`]):
//! the client and the container runtime's streaming server negotiate SPDY
//! or WebSocket between themselves, as with upstream's API server when its
//! WebSocket translation (`TranslateStreamCloseWebsocketRequests`,
//! `PortForwardWebsockets`) is off. containerd 1.6 refuses kubectl 1.30+'s
//! first attempt (WebSocket `v5.channel.k8s.io`, or
//! `SPDY/3.1+portforward.k8s.io` for port-forward) with a non-101 answer,
//! which client-go turns into an `UpgradeFailureError`, and kubectl's
//! fallback executor/dialer then retries over SPDY/3.1.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use rustls_pki_types::ServerName;
use serde_json::{json, Value};
use tug_api::status::Cause;
use tug_api::ApiError;
use tug_httpstream::{encode_query, is_upgrade_request, parse_bool, proxy_upgrade, query_pairs};
use tug_pki::{ClusterPki, KubeletSigner, PeerIdentity};

use crate::http::error_response;
use crate::request::ResourceRequest;
use crate::rest::Ctx;

/// How long dialling a kubelet (TCP and TLS) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The kubelet port when the Node does not report one (upstream's `--kubelet-port`).
const DEFAULT_KUBELET_PORT: u16 = 10250;

/// What the API server needs to reach kubelets and to sign their certificates.
pub struct Kubelets {
    tls: Arc<rustls::ClientConfig>,
    signer: KubeletSigner,
    /// `/cacerts` and kubelet client certificates for agents holding the
    /// node token (`join.rs`).
    pub(crate) join: crate::join::Join,
}

impl Kubelets {
    pub fn new(pki: &ClusterPki, node_token: Option<tug_pki::NodeToken>) -> anyhow::Result<Kubelets> {
        Ok(Kubelets {
            tls: pki.kubelet_client_tls_config()?,
            signer: pki.kubelet_signer(),
            join: crate::join::Join::new(pki.kubelet_signer(), node_token),
        })
    }
}

/// A kubelet's address: where to dial and the name its certificate must cover.
struct Endpoint {
    host: String,
    port: u16,
    name: ServerName<'static>,
}

impl Endpoint {
    fn authority(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// The kubelet of node `node_name` (upstream's `GetConnectionInfo`).
async fn endpoint(ctx: &Ctx, node_name: &str) -> Result<Endpoint, ApiError> {
    let rt = tug_api::resources::find("", "v1", "nodes").ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let node = match ctx.cache.get(&rt.key(None, node_name)).await {
        Some(n) => n.object,
        None => return Err(ApiError::not_found("", "nodes", node_name)),
    };
    let addresses = node.pointer("/status/addresses").and_then(Value::as_array).cloned().unwrap_or_default();
    let address = ["InternalIP", "ExternalIP", "Hostname"].iter().find_map(|t| {
        addresses
            .iter()
            .find(|a| a["type"] == *t)
            .and_then(|a| a["address"].as_str())
            .filter(|a| !a.is_empty())
            .map(String::from)
    });
    let Some(host) = address else {
        return Err(ApiError::new(
            503,
            "ServiceUnavailable",
            format!("no preferred addresses found; known addresses: {}", Value::Array(addresses)),
        ));
    };
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    let name = ServerName::try_from(host.clone())
        .map_err(|_| ApiError::internal(format!("node {node_name} has an address that is neither an IP nor a DNS name: {host:?}")))?;
    Ok(Endpoint { host, port, name })
}

/// A verified TLS connection to a kubelet.
async fn dial(kubelets: &Kubelets, ep: &Endpoint) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ApiError> {
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port)).await?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(kubelets.tls.clone()).connect(ep.name.clone(), tcp).await
    };
    match tokio::time::timeout(DIAL_TIMEOUT, connect).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(ApiError::internal(format!("error dialing backend: dial tcp {}: {e}", ep.authority()))),
        Err(_) => Err(ApiError::internal(format!("error dialing backend: dial tcp {}: i/o timeout", ep.authority()))),
    }
}

/// The container a request is for (upstream's `validateContainer`): the
/// named one, which must exist, or the only one.
fn validate_container(pod: &Value, container: Option<&str>, pod_name: &str) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map(|cs| cs.iter().filter_map(|c| c["name"].as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let containers = names("containers");
    let all: Vec<String> = names("initContainers").into_iter().chain(containers.clone()).chain(names("ephemeralContainers")).collect();
    match container.filter(|c| !c.is_empty()) {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {pod_name}"))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None if containers.is_empty() => Err(ApiError::bad_request(format!("a container name must be specified for pod {pod_name}"))),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            all.join(" ")
        ))),
    }
}

/// `pods/log`, `pods/exec`, `pods/attach`, `pods/portforward`.
pub async fn pod_subresource(ctx: &Ctx, kubelets: &Kubelets, rr: &ResourceRequest, req: Request<Body>) -> Response<Body> {
    match proxy(ctx, kubelets, rr, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn proxy(ctx: &Ctx, kubelets: &Kubelets, rr: &ResourceRequest, req: Request<Body>) -> Result<Response<Body>, ApiError> {
    let sub = rr.subresource.as_deref().unwrap_or("");
    let allowed = match sub {
        "log" => req.method() == Method::GET,
        _ => req.method() == Method::GET || req.method() == Method::POST,
    };
    if !allowed {
        return Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource"));
    }
    let (Some(ns), Some(name)) = (rr.namespace.as_deref(), rr.name.as_deref()) else {
        return Err(crate::request::not_found());
    };
    let q = query_pairs(req.uri().query());
    let get = |k: &str| q.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let flag = |k: &str| -> Result<bool, ApiError> {
        match get(k) {
            None => Ok(false),
            Some(v) => parse_bool(v).ok_or_else(|| ApiError::bad_request(format!("{k}: invalid boolean value {v:?}"))),
        }
    };
    let log_opts = if sub == "log" { Some(log_params(&q, name)?) } else { None };
    let mut stream_flags = Vec::new();
    if sub == "exec" || sub == "attach" {
        for k in ["stdin", "stdout", "stderr", "tty"] {
            if flag(k)? {
                stream_flags.push((k, "1"));
            }
        }
    }

    let pod_rr = ResourceRequest { rt: rr.rt, namespace: rr.namespace.clone(), name: rr.name.clone(), subresource: None };
    let pod = ctx.get(&pod_rr, name).await?.body;
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string();
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("").to_string();
    let container = match sub {
        "log" | "exec" | "attach" => Some(validate_container(&pod, get("container"), name)?),
        _ => None,
    };

    if let (Some(params), Some(container)) = (log_opts, container.as_deref()) {
        if node.is_empty() {
            // Upstream answers an unscheduled pod's log with an empty body.
            return Ok(text_response(StatusCode::OK, Body::empty()));
        }
        let ep = endpoint(ctx, &node).await?;
        let mut path = format!("/containerLogs/{ns}/{name}/{container}");
        if !params.is_empty() {
            path = format!("{path}?{}", encode_query(&params));
        }
        return logs(kubelets, &ep, &path).await;
    }

    if node.is_empty() {
        return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
    }
    if !is_upgrade_request(req.headers()) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let mut params: Vec<(&str, &str)> = Vec::new();
    let path = match (sub, container.as_deref()) {
        ("exec" | "attach", Some(c)) => {
            params.extend(stream_flags);
            if sub == "exec" {
                params.extend(q.iter().filter(|(k, _)| k == "command").map(|(_, v)| ("command", v.as_str())));
            }
            format!("/{sub}/{ns}/{name}/{uid}/{c}")
        }
        _ => {
            params.extend(q.iter().filter(|(k, _)| k == "ports").map(|(_, v)| ("port", v.as_str())));
            format!("/portForward/{ns}/{name}/{uid}")
        }
    };
    let path = if params.is_empty() { path } else { format!("{path}?{}", encode_query(&params)) };
    let ep = endpoint(ctx, &node).await?;
    let tls = dial(kubelets, &ep).await?;
    let resp = proxy_upgrade(req, tls, &ep.authority(), &path)
        .await
        .map_err(|e| ApiError::internal(format!("proxying to the kubelet at {}: {e}", ep.authority())))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        tracing::debug!(code = resp.status().as_u16(), %path, "the kubelet refused the upgrade");
    }
    Ok(resp.map(Body::new))
}

/// The kubelet's query for a log request, after upstream's
/// `ValidatePodLogOptions` (422) and parameter decoding (400).
fn log_params(q: &[(String, String)], name: &str) -> Result<Vec<(&'static str, String)>, ApiError> {
    let get = |k: &str| q.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let int = |k: &str| -> Result<Option<i64>, ApiError> {
        get(k).map(|v| v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("{k}: invalid integer value {v:?}")))).transpose()
    };
    let mut out = Vec::new();
    for k in ["follow", "previous", "timestamps"] {
        if let Some(v) = get(k) {
            match parse_bool(v) {
                Some(true) => out.push((k, "true".to_string())),
                Some(false) => {}
                None => return Err(ApiError::bad_request(format!("{k}: invalid boolean value {v:?}"))),
            }
        }
    }
    let mut causes = Vec::new();
    let (since_seconds, tail, limit) = (int("sinceSeconds")?, int("tailLines")?, int("limitBytes")?);
    let since_time = get("sinceTime");
    if let Some(t) = since_time {
        t.parse::<k8s_openapi::jiff::Timestamp>().map_err(|e| ApiError::bad_request(format!("sinceTime: {e}")))?;
    }
    if let Some(t) = tail {
        if t < 0 {
            causes.push(Cause::invalid("tailLines", &json!(t), "must be greater than or equal to 0"));
        }
        out.push(("tailLines", t.to_string()));
    }
    if let Some(l) = limit {
        if l < 1 {
            causes.push(Cause::invalid("limitBytes", &json!(l), "must be greater than 0"));
        }
        out.push(("limitBytes", l.to_string()));
    }
    match (since_seconds, since_time) {
        (Some(_), Some(_)) => causes.push(Cause::forbidden("", "at most one of `sinceTime` or `sinceSeconds` may be specified")),
        (Some(s), None) => {
            if s < 1 {
                causes.push(Cause::invalid("sinceSeconds", &json!(s), "must be greater than 0"));
            }
            out.push(("sinceSeconds", s.to_string()));
        }
        (None, Some(t)) => out.push(("sinceTime", t.to_string())),
        (None, None) => {}
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "PodLogOptions", name, causes));
    }
    Ok(out)
}

fn text_response(status: StatusCode, body: Body) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body)
        .expect("a status and a header make a valid response")
}

/// A log stream from the kubelet, relayed as it comes; a refusal becomes a Status.
async fn logs(kubelets: &Kubelets, ep: &Endpoint, path: &str) -> Result<Response<Body>, ApiError> {
    let tls = dial(kubelets, ep).await?;
    let req = Request::get(path)
        .header(header::HOST, ep.authority())
        .body(tug_httpstream::empty())
        .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
    let resp = tug_httpstream::send(tls, req)
        .await
        .map_err(|e| ApiError::internal(format!("the kubelet at {}: {e}", ep.authority())))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(text_response(status, Body::new(resp.into_body())));
    }
    // The kubelet's error: its Status as is, or its text in one.
    let body = Limited::new(resp.into_body(), 64 * 1024).collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    if parsed.as_ref().is_some_and(|v| v["kind"] == "Status") {
        return Ok(Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("a status and a header make a valid response"));
    }
    let reason = match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        _ => "InternalError",
    };
    Err(ApiError::new(status.as_u16(), reason, String::from_utf8_lossy(&body).trim().to_string()))
}

/// How long a read of a kubelet's resource usage may take in all.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of a kubelet's `/stats/summary` read.
const STATS_LIMIT: usize = 16 * 1024 * 1024;

/// `GET /stats/summary` of node `node_name`'s kubelet, parsed (what
/// metrics-server reads for `metrics.k8s.io`).
pub async fn stats_summary(ctx: &Ctx, kubelets: &Kubelets, node_name: &str) -> Result<Value, ApiError> {
    let read = async {
        let ep = endpoint(ctx, node_name).await?;
        let tls = dial(kubelets, &ep).await?;
        let req = Request::get("/stats/summary")
            .header(header::HOST, ep.authority())
            .body(tug_httpstream::empty())
            .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
        let resp = tug_httpstream::send(tls, req).await.map_err(|e| ApiError::internal(format!("the kubelet at {}: {e}", ep.authority())))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), STATS_LIMIT)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| ApiError::internal(format!("reading the kubelet's summary: {e}")))?;
        if !status.is_success() {
            return Err(ApiError::internal(format!("the kubelet of {node_name} answered {status}: {}", String::from_utf8_lossy(&body).trim())));
        }
        serde_json::from_slice(&body).map_err(|e| ApiError::internal(format!("the kubelet of {node_name} sent an unreadable summary: {e}")))
    };
    match tokio::time::timeout(STATS_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::internal(format!("the kubelet of {node_name} did not answer within {STATS_TIMEOUT:?}"))),
    }
}

/// `POST /v1-tugboat/serving-kubelet.crt`: signs a kubelet's serving
/// certificate request. Allowed to `system:masters` and to the node itself
/// (`system:node:<name>` in `system:nodes`).
pub async fn serving_cert(kubelets: &Kubelets, user: &PeerIdentity, req: Request<Body>) -> Response<Body> {
    match sign(kubelets, user, req).await {
        Ok(v) => Response::builder()
            .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Body::from(serde_json::to_vec(&v).unwrap_or_default()))
            .expect("a header makes a valid response"),
        Err(e) => error_response(&e),
    }
}

async fn sign(kubelets: &Kubelets, user: &PeerIdentity, req: Request<Body>) -> Result<Value, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::method_not_allowed("only POST is allowed here"));
    }
    let body: Bytes = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
    let r: Value = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the request body is not JSON: {e}")))?;
    let (Some(node), Some(csr)) = (r["nodeName"].as_str(), r["csr"].as_str()) else {
        return Err(ApiError::bad_request("nodeName and csr are required"));
    };
    let admin = user.groups.iter().any(|g| g == tug_pki::ADMIN_GROUP);
    let the_node = user.groups.iter().any(|g| g == tug_pki::NODES_GROUP) && user.user == format!("{}{node}", tug_pki::NODE_USER_PREFIX);
    if !(admin || the_node) {
        return Err(ApiError::forbidden(format!("User \"{}\" cannot sign a serving certificate for node \"{node}\"", user.user)));
    }
    let cert = kubelets.signer.sign_kubelet_serving(csr, node).map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    tracing::info!(node, user = %user.user, "signed a kubelet serving certificate");
    Ok(json!({"certificate": cert, "ca": kubelets.signer.ca_cert_pem()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "a"}, {"name": "b"}]}})
    }

    #[test]
    fn containers() {
        let p = pod();
        assert_eq!(validate_container(&p, Some("b"), "p").unwrap(), "b");
        assert_eq!(validate_container(&p, Some("init"), "p").unwrap(), "init");
        assert_eq!(
            validate_container(&p, None, "p").unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [init a b]"
        );
        let e = validate_container(&p, Some("zz"), "p").unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (400, "container zz is not valid for pod p"));
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(validate_container(&one, Some(""), "p").unwrap(), "only");
        assert!(validate_container(&json!({"spec": {}}), None, "p").is_err());
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn log_options() {
        let p = log_params(&q(&[("follow", "true"), ("tailLines", "2"), ("container", "c"), ("previous", "false")]), "p").unwrap();
        assert_eq!(p, vec![("follow", "true".to_string()), ("tailLines", "2".to_string())]);
        let e = log_params(&q(&[("tailLines", "-2"), ("limitBytes", "0")]), "p").unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "PodLogOptions \"p\" is invalid: [tailLines: Invalid value: -2: must be greater than or equal to 0, limitBytes: Invalid value: 0: must be greater than 0]"
        );
        let e = log_params(&q(&[("sinceSeconds", "5"), ("sinceTime", "2024-01-01T00:00:00Z")]), "p").unwrap_err();
        assert!(e.message.contains("at most one of `sinceTime` or `sinceSeconds` may be specified"), "{}", e.message);
        assert_eq!(log_params(&q(&[("tailLines", "x")]), "p").unwrap_err().code, 400);
        assert_eq!(log_params(&q(&[("follow", "maybe")]), "p").unwrap_err().code, 400);
        assert_eq!(log_params(&q(&[("sinceTime", "noon")]), "p").unwrap_err().code, 400);
    }
}
