//! The kubelet's HTTPS server (upstream's port 10250): what the API server
//! calls for `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`.
//!
//! TLS: the serving certificate is signed by the cluster CA. The agent
//! makes a key, sends a certificate request to the API server
//! ([`tug_pki::KUBELET_SERVING_CERT_PATH`], with its own credentials) and
//! serves with what comes back; a fresh one on every start. Every client
//! must present a certificate signed by the cluster CA (the handshake fails
//! otherwise) and be in `system:masters` (the API server's
//! `kube-apiserver-kubelet-client` is), else 403.
//!
//! Endpoints (upstream's paths):
//! - `GET /healthz`;
//! - `GET /pods`: a PodList of the pods bound to this node;
//! - `GET /stats/summary` and `GET /metrics/resource`: resource usage
//!   ([`crate::stats`]);
//! - `GET /containerLogs/{ns}/{pod}/{container}` ([`crate::logs`]);
//! - `/exec/{ns}/{pod}[/{uid}]/{container}`, `/attach/...` and
//!   `/portForward/{ns}/{pod}[/{uid}]`: the runtime is asked (CRI Exec,
//!   Attach, PortForward) for a one-time URL on its streaming server, and
//!   the client's upgrade request is proxied there untouched
//!   ([`tug_httpstream::proxy_upgrade`]): SPDY/3.1 or WebSocket is
//!   negotiated between the client and the runtime. containerd 1.6 speaks
//!   SPDY (`v4.channel.k8s.io` down to `channel.k8s.io`,
//!   `portforward.k8s.io`) and WebSocket `v4.channel.k8s.io` and older; it
//!   refuses a WebSocket asking only for `v5.channel.k8s.io` or
//!   `SPDY/3.1+portforward.k8s.io` (403), which makes kubectl 1.30+ fall
//!   back to SPDY.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use hyper::header;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tug_httpstream::{Body, full, is_upgrade_request, parse_bool, proxy_upgrade, query_pairs};
use tug_pki::PeerIdentity;

use crate::cri::{self, CONTAINER_NAME_LABEL, uid_filter, v1 as c};
use crate::{Agent, AgentConfig, logs, machine};

/// An error answered as a `metav1.Status` (the API server relays it).
#[derive(Debug)]
pub struct HttpError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl HttpError {
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError { code: 400, reason: "BadRequest", message: message.into() }
    }
    pub fn not_found(message: impl Into<String>) -> HttpError {
        HttpError { code: 404, reason: "NotFound", message: message.into() }
    }
    pub fn internal(message: impl Into<String>) -> HttpError {
        HttpError { code: 500, reason: "InternalError", message: message.into() }
    }
    fn forbidden(message: impl Into<String>) -> HttpError {
        HttpError { code: 403, reason: "Forbidden", message: message.into() }
    }

    pub fn response(&self) -> Response<Body> {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        });
        Response::builder()
            .status(StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(serde_json::to_vec(&status).unwrap_or_default()))
            .expect("a status code and a header make a valid response")
    }
}

/// Binds the server's port (`--kubelet-arg port=`, `address=`); failing to
/// is fatal for the agent, as for upstream's kubelet.
pub async fn bind(config: &AgentConfig) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::new(config.kubelet_address, config.kubelet_port);
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} for the kubelet server"))
}

/// Gets a serving certificate (retrying until the API server signs one),
/// then serves HTTPS on `listener` forever.
pub async fn run(agent: Arc<Agent>, listener: TcpListener) {
    let mut delay = Duration::from_millis(500);
    let tls = loop {
        match serving_tls(&agent).await {
            Ok(t) => break t,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "getting the kubelet serving certificate failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "kubelet server listening");
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "kubelet server: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let agent = agent.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "kubelet server: TLS handshake failed");
                    return;
                }
            };
            // The verifier admitted only certificates chaining to the CA.
            let who = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|c| tug_pki::identity_from_cert(c.as_ref()));
            let svc = service_fn(move |req| {
                let agent = agent.clone();
                let who = who.clone();
                async move { Ok::<_, Infallible>(handle(agent, who, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "kubelet server: connection ended with an error");
            }
        });
    }
}

/// A key made here, the certificate signed by the API server.
async fn serving_tls(agent: &Agent) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut sans = tug_pki::ServingSans::default();
    sans.push_ip(agent.node_ip);
    // Names only where they are valid DNS names (an odd hostname must not
    // keep the server from starting: the address is what the API server dials).
    for name in [machine::hostname(), agent.config.node_name.clone()] {
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            sans.push(&name);
        }
    }
    let (csr, key) = tug_pki::kubelet_serving_request(&agent.config.node_name, &sans)?;
    let body = serde_json::to_vec(&json!({"nodeName": agent.config.node_name, "csr": csr}))?;
    let req = http::Request::post(tug_pki::KUBELET_SERVING_CERT_PATH)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)?;
    let text = agent.client.request_text(req).await.context("asking the API server to sign")?;
    let reply: Value = serde_json::from_str(&text).context("the API server's answer")?;
    let (Some(cert), Some(ca)) = (reply["certificate"].as_str(), reply["ca"].as_str()) else {
        anyhow::bail!("the API server's answer lacks the certificate or the CA");
    };
    tug_pki::mutual_tls_server_config(ca, cert, &key)
}

async fn handle(agent: Arc<Agent>, who: Option<PeerIdentity>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = match route(&agent, who, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    };
    tracing::debug!(%method, %path, code = resp.status().as_u16(), "kubelet request");
    resp
}

async fn route(agent: &Arc<Agent>, who: Option<PeerIdentity>, req: Request<Incoming>) -> Result<Response<Body>, HttpError> {
    let Some(who) = who else {
        return Err(HttpError { code: 401, reason: "Unauthorized", message: "Unauthorized".into() });
    };
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let resource = segments.first().copied().unwrap_or("");
    if !who.groups.iter().any(|g| g == tug_pki::ADMIN_GROUP) {
        let verb = if req.method() == Method::GET { "get" } else { "create" };
        return Err(HttpError::forbidden(format!(
            "Forbidden (user={}, verb={verb}, resource=nodes, subresource={})",
            who.user,
            if resource == "healthz" { "healthz" } else { "proxy" }
        )));
    }
    let get = req.method() == Method::GET;
    match segments.as_slice() {
        ["healthz"] if get => Ok(Response::new(full("ok"))),
        ["pods"] if get => pods(agent).await,
        ["stats", "summary"] if get => {
            let summary = crate::stats::summary(agent).await.map_err(|e| HttpError::internal(format!("reading resource usage: {e:#}")))?;
            Ok(json_body(&summary))
        }
        ["metrics", "resource"] if get => {
            let text = crate::stats::resource_metrics(agent).await.map_err(|e| HttpError::internal(format!("reading resource usage: {e:#}")))?;
            Ok(Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(full(text))
                .expect("a header makes a valid response"))
        }
        ["containerLogs", ns, pod, container] if get => {
            logs::serve(agent.clone(), ns, pod, container, &query_pairs(req.uri().query())).await
        }
        ["exec", ns, pod, container] => stream(agent, Kind::Exec, req, &[*ns, *pod], None, container).await,
        ["exec", ns, pod, uid, container] => stream(agent, Kind::Exec, req, &[*ns, *pod], Some(uid), container).await,
        ["attach", ns, pod, container] => stream(agent, Kind::Attach, req, &[*ns, *pod], None, container).await,
        ["attach", ns, pod, uid, container] => stream(agent, Kind::Attach, req, &[*ns, *pod], Some(uid), container).await,
        ["portForward", ns, pod] => stream(agent, Kind::PortForward, req, &[*ns, *pod], None, "").await,
        ["portForward", ns, pod, uid] => stream(agent, Kind::PortForward, req, &[*ns, *pod], Some(uid), "").await,
        _ => Err(HttpError::not_found(format!("the kubelet does not serve {} {path}", req.method()))),
    }
}

/// The pods bound to this node, as the API has them.
async fn pods(agent: &Agent) -> Result<Response<Body>, HttpError> {
    let api: Api<Pod> = Api::all(agent.client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={}", agent.config.node_name));
    let list = api.list(&lp).await.map_err(|e| HttpError::internal(format!("listing pods: {e}")))?;
    let items: Vec<Value> = list.items.iter().filter_map(|p| serde_json::to_value(p).ok()).collect();
    Ok(json_body(&json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})))
}

fn json_body(v: &Value) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(serde_json::to_vec(v).unwrap_or_default()))
        .expect("a header makes a valid response")
}

/// A pod bound to this node, by namespace and name (upstream's
/// `GetPodByName` on the pod manager; here a read from the API server).
pub(crate) async fn node_pod(agent: &Agent, ns: &str, name: &str) -> Result<Pod, HttpError> {
    let api: Api<Pod> = Api::namespaced(agent.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(p)) if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(agent.config.node_name.as_str()) => Ok(p),
        Ok(_) => Err(HttpError::not_found(format!("pod {name:?} does not exist"))),
        Err(e) => Err(HttpError::internal(format!("getting pod {ns}/{name}: {e}"))),
    }
}

/// Whether the pod's spec has a container (init, app or ephemeral) named `name`.
pub(crate) fn has_container(pod: &Pod, name: &str) -> bool {
    let Some(s) = pod.spec.as_ref() else { return false };
    s.containers.iter().any(|c| c.name == name)
        || s.init_containers.iter().flatten().any(|c| c.name == name)
        || s.ephemeral_containers.iter().flatten().any(|c| c.name == name)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Exec,
    Attach,
    PortForward,
}

/// Exec, attach or port-forward: the runtime's streaming URL, then the
/// client's upgrade request proxied there.
async fn stream(
    agent: &Agent,
    kind: Kind,
    req: Request<Incoming>,
    ns_pod: &[&str; 2],
    uid: Option<&str>,
    container: &str,
) -> Result<Response<Body>, HttpError> {
    let [ns, pod_name] = *ns_pod;
    if !is_upgrade_request(req.headers()) {
        return Err(HttpError::bad_request("Upgrade request required"));
    }
    let q = query_pairs(req.uri().query());
    let flag = |k: &str| q.iter().any(|(n, v)| n == k && parse_bool(v) == Some(true));
    let command: Vec<String> = q.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
    let (stdin, stdout, tty) = (flag("stdin"), flag("stdout"), flag("tty"));
    // A TTY merges stderr into stdout (upstream drops stderr too).
    let stderr = flag("stderr") && !tty;
    if kind != Kind::PortForward && !(stdin || stdout || stderr) {
        return Err(HttpError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
    }
    if kind == Kind::Exec && command.is_empty() {
        return Err(HttpError::bad_request("you must specify at least one command for the container"));
    }
    let pod = node_pod(agent, ns, pod_name).await?;
    let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
    if uid.is_some_and(|u| u != pod_uid) {
        return Err(HttpError::not_found(format!("pod {pod_name:?} with UID {:?} does not exist", uid.unwrap_or(""))));
    }
    let cri_err = |e: anyhow::Error| {
        if cri::is_not_found(&e) {
            HttpError::not_found(e.to_string())
        } else {
            HttpError::internal(e.to_string())
        }
    };
    let url = match kind {
        Kind::Exec | Kind::Attach => {
            if !has_container(&pod, container) {
                return Err(HttpError::not_found(format!("container {container:?} not found in pod {pod_name:?}")));
            }
            let id = running_container(agent, &pod_uid, container).await?;
            if kind == Kind::Exec {
                let r = c::ExecRequest { container_id: id, cmd: command, tty, stdin, stdout, stderr };
                agent.cri.exec(r).await.map_err(cri_err)?
            } else {
                let r = c::AttachRequest { container_id: id, stdin, tty, stdout, stderr };
                agent.cri.attach(r).await.map_err(cri_err)?
            }
        }
        Kind::PortForward => {
            let sandbox = ready_sandbox(agent, &pod_uid).await?;
            let ports = q.iter().filter(|(k, _)| k == "port" || k == "ports").filter_map(|(_, v)| v.parse().ok()).collect();
            agent.cri.port_forward(&sandbox, ports).await.map_err(cri_err)?
        }
    };
    let uri: http::Uri = url.parse().map_err(|e| HttpError::internal(format!("the runtime's streaming URL {url:?}: {e}")))?;
    let (Some(authority), Some(path)) = (uri.authority(), uri.path_and_query()) else {
        return Err(HttpError::internal(format!("the runtime's streaming URL {url:?} has no host or path")));
    };
    if uri.scheme_str() != Some("http") {
        return Err(HttpError::internal(format!("the runtime's streaming URL {url:?} is not plain HTTP")));
    }
    let backend = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| HttpError::internal(format!("connecting to the runtime's streaming server at {authority}: {e}")))?;
    let _ = backend.set_nodelay(true);
    let resp = proxy_upgrade(req, backend, authority.as_str(), path.as_str())
        .await
        .map_err(|e| HttpError::internal(format!("the runtime's streaming server: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // A WebSocket subprotocol the runtime lacks ends here (403); the
        // client sees the refusal and may fall back to SPDY.
        tracing::debug!(?kind, code = resp.status().as_u16(), "the runtime refused the upgrade");
    }
    Ok(resp)
}

/// The running instance of container `name` of pod `uid`.
async fn running_container(agent: &Agent, uid: &str, name: &str) -> Result<String, HttpError> {
    let mut labels = uid_filter(uid);
    labels.insert(CONTAINER_NAME_LABEL.to_string(), name.to_string());
    let all = agent.cri.list_containers(labels).await.map_err(|e| HttpError::internal(e.to_string()))?;
    all.into_iter()
        .filter(|c| c.state == c::ContainerState::ContainerRunning as i32)
        .max_by_key(|c| (c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0), c.created_at))
        .map(|c| c.id)
        .ok_or_else(|| HttpError::not_found(format!("container not found ({name:?})")))
}

/// The pod's ready sandbox.
async fn ready_sandbox(agent: &Agent, uid: &str) -> Result<String, HttpError> {
    let all = agent.cri.list_pod_sandboxes(uid_filter(uid)).await.map_err(|e| HttpError::internal(e.to_string()))?;
    all.into_iter()
        .filter(|s| s.state == c::PodSandboxState::SandboxReady as i32)
        .max_by_key(|s| s.created_at)
        .map(|s| s.id)
        .ok_or_else(|| HttpError::not_found("pod sandbox not found (the pod is not running)".to_string()))
}
