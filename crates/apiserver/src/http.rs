//! The HTTP front: authentication, routing to discovery, OpenAPI and REST,
//! response encoding, and request metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Value};
use tug_api::patch::PatchType;
use tug_api::ApiError;
use tug_pki::PeerIdentity;

use crate::authz::{Attributes, Authorizer, Decision};
use crate::discovery;
use crate::metrics::Metrics;
use crate::openapi;
use crate::output::Output;
use crate::request::{self, parse_path, parse_query, ResourceRequest, Route};
use crate::rest::{self, Ctx, Reply};
use crate::watch::{self, WatchRequest};

pub struct Server {
    pub ctx: Ctx,
    pub authorizer: Box<dyn Authorizer>,
    pub server_address: String,
    pub metrics: Metrics,
    /// Reaching kubelets (logs, exec, attach, port-forward) and signing
    /// their serving certificates.
    pub kubelets: crate::kubelet::Kubelets,
    /// When each node's resource usage was last read (`metrics.k8s.io`).
    pub metric_reads: crate::metrics_api::ReadTimes,
}

pub(crate) fn json_response(status: StatusCode, content_type: &str, body: &impl serde::Serialize) -> Response<Body> {
    // Most replies are one object of a few KB: start there rather than
    // grow from empty through a dozen reallocations.
    let mut bytes = Vec::with_capacity(4096);
    serde_json::to_writer(&mut bytes, body).expect("serializable");
    bytes_response(status, content_type, bytes)
}

pub(crate) fn bytes_response(status: StatusCode, content_type: &str, bytes: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(bytes))
        .expect("valid response")
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "application/json", &e.to_status());
    if let Some(s) = e.retry_after_seconds {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(body))
        .expect("valid response")
}

fn header_str<'a>(headers: &'a HeaderMap, name: header::HeaderName) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": concat!("v1.32.0+tugboat-", env!("CARGO_PKG_VERSION")),
        "gitCommit": "tugboat",
        "gitTreeState": "clean",
        "buildDate": "2026-11-26T00:00:00Z",
        "goVersion": "rustc",
        "compiler": "rustc",
        "platform": "linux/amd64"
    })
}

impl Server {
    /// Serves one request. `user` is `None` for anonymous clients.
    pub async fn handle(self: Arc<Self>, user: Option<PeerIdentity>, req: Request<Body>) -> Response<Body> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let (resp, verb, resource) = self.route(user, req).await;
        let code = resp.status().as_u16();
        self.metrics.observe(&verb, &resource, code, started.elapsed());
        tracing::debug!(%method, %path, code, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "request");
        resp
    }

    async fn route(&self, user: Option<PeerIdentity>, req: Request<Body>) -> (Response<Body>, String, String) {
        let path = req.uri().path().to_string();
        let none = || (String::new(), String::new());
        match path.as_str() {
            "/healthz" | "/livez" | "/readyz" => return (text(StatusCode::OK, "ok"), "get".into(), "health".into()),
            "/version" | "/version/" => return (json_response(StatusCode::OK, "application/json", &version_info()), "get".into(), "version".into()),
            _ => {}
        }
        if path.starts_with("/healthz/") || path.starts_with("/livez/") || path.starts_with("/readyz/") {
            return (text(StatusCode::OK, "ok"), "get".into(), "health".into());
        }
        if crate::join::serves(&path) {
            return crate::join::serve(&self.kubelets.join, req).await;
        }
        let Some(user) = user else {
            let (v, r) = none();
            return (error_response(&ApiError::unauthorized()), v, r);
        };
        let accept = header_str(req.headers(), header::ACCEPT).to_string();
        if path == tug_pki::KUBELET_SERVING_CERT_PATH {
            return (crate::kubelet::serving_cert(&self.kubelets, &user, req).await, "create".into(), "kubeletcertificates".into());
        }
        if path == "/metrics" {
            let body = self.metrics.encode(&self.ctx).await;
            let r = Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Body::from(body))
                .expect("valid response");
            return (r, "get".into(), "metrics".into());
        }
        if path == "/openapi/v2" {
            if !accept.is_empty() && !accept.contains("json") && !accept.contains("*/*") {
                return (error_response(&ApiError::not_acceptable("only application/json is supported for /openapi/v2")), "get".into(), "openapi".into());
            }
            let r = Response::builder().header(header::CONTENT_TYPE, "application/json").body(Body::from(openapi::docs().v2.clone())).expect("valid");
            return (r, "get".into(), "openapi".into());
        }
        if path == "/openapi/v3" || path == "/openapi/v3/" {
            return (json_response(StatusCode::OK, "application/json", &openapi::docs().index), "get".into(), "openapi".into());
        }
        if let Some(gv) = path.strip_prefix("/openapi/v3/") {
            return match openapi::docs().group_versions.get(gv) {
                Some((hash, bytes)) => {
                    let r = Response::builder()
                        .header(header::CONTENT_TYPE, "application/json")
                        .header(header::ETAG, format!("\"{hash}\""))
                        .header(header::CACHE_CONTROL, "public, immutable")
                        .body(Body::from(bytes.clone()))
                        .expect("valid");
                    (r, "get".into(), "openapi".into())
                }
                None => (error_response(&request::not_found()), "get".into(), "openapi".into()),
            };
        }
        if let Some(rest) = path.strip_prefix("/apis/metrics.k8s.io").filter(|r| r.is_empty() || r.starts_with('/')) {
            let query = tug_httpstream::query_pairs(req.uri().query());
            let (r, verb, resource) = crate::metrics_api::serve(&self.ctx, &self.kubelets, &self.metric_reads, req.method(), rest, &query).await;
            return (r, verb.into(), resource.into());
        }
        let route = match parse_path(&path) {
            Ok(r) => r,
            Err(e) => return (error_response(&e), String::new(), String::new()),
        };
        match route {
            Route::CoreVersions | Route::Groups => {
                let core = matches!(route, Route::CoreVersions);
                let r = match discovery::wants_aggregated(&accept) {
                    Some(media) => json_response(StatusCode::OK, media, &discovery::aggregated(core)),
                    None if core => json_response(StatusCode::OK, "application/json", &discovery::core_versions(&self.server_address)),
                    None => json_response(StatusCode::OK, "application/json", &discovery::group_list()),
                };
                (r, "get".into(), "discovery".into())
            }
            Route::Group(g) => match discovery::group(&g) {
                Some(doc) => (json_response(StatusCode::OK, "application/json", &doc), "get".into(), "discovery".into()),
                None => (error_response(&request::not_found()), "get".into(), "discovery".into()),
            },
            Route::ResourceList { group, version } => {
                (json_response(StatusCode::OK, "application/json", &discovery::resource_list(&group, &version)), "get".into(), "discovery".into())
            }
            Route::Resource(rr) => {
                let resource = match &rr.subresource {
                    Some(s) => format!("{}/{}", rr.rt.plural, s),
                    None => rr.rt.plural.to_string(),
                };
                let (resp, verb) = self.resource(&user, rr, req, &accept).await;
                (resp, verb, resource)
            }
        }
    }

    async fn resource(&self, user: &PeerIdentity, rr: ResourceRequest, req: Request<Body>, accept: &str) -> (Response<Body>, String) {
        let q = parse_query(req.uri().query());
        let output = Output::negotiate(accept, q.get("includeObject").map(String::as_str));
        let method = req.method().clone();
        let headers = req.headers().clone();
        let is_watch = q.get("watch").map(|w| w == "1" || w == "true").unwrap_or(false);
        let verb = match (&method, rr.name.is_some(), is_watch) {
            (&Method::GET, _, true) => "watch",
            (&Method::GET, true, _) => "get",
            (&Method::GET, false, _) => "list",
            (&Method::POST, _, _) => "create",
            (&Method::PUT, _, _) => "update",
            (&Method::PATCH, _, _) => "patch",
            (&Method::DELETE, true, _) => "delete",
            (&Method::DELETE, false, _) => "deletecollection",
            _ => "unknown",
        }
        .to_string();
        let attrs = Attributes {
            user,
            verb: &verb,
            group: rr.rt.group,
            resource: rr.rt.plural,
            subresource: rr.subresource.as_deref(),
            namespace: rr.namespace.as_deref(),
            name: rr.name.as_deref(),
        };
        if let Decision::Deny(reason) = self.authorizer.authorize(&attrs) {
            let e = ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\"{}: {reason}",
                rr.rt.plural,
                rr.name.as_deref().unwrap_or(""),
                user.user,
                verb,
                rr.rt.plural,
                rr.rt.group,
                rr.namespace.as_deref().map(|n| format!(" in the namespace \"{n}\"")).unwrap_or_default(),
            ));
            return (error_response(&e), verb);
        }
        if is_watch && method == Method::GET {
            return (self.watch(rr, &q, output).await, verb);
        }
        if rr.rt.group.is_empty() && rr.rt.plural == "pods" && matches!(rr.subresource.as_deref(), Some("log" | "exec" | "attach" | "portforward")) {
            return (crate::kubelet::pod_subresource(&self.ctx, &self.kubelets, &rr, req).await, verb);
        }
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(e) => return (error_response(&e), verb),
        };
        let result = self.dispatch(&rr, &method, &headers, &q, body).await;
        let resp = match result {
            Ok(reply) => {
                let mut r = if let Some(list) = reply.list {
                    let ct = output.content_type(true);
                    match output {
                        Output::Json => bytes_response(reply.status, ct, list.to_json()),
                        _ => json_response(reply.status, ct, &output.list(rr.rt, list)),
                    }
                } else {
                    let is_status = reply.body.get("kind").and_then(Value::as_str) == Some("Status");
                    let plain = is_status || rr.subresource.as_deref() == Some("scale");
                    let ct = if plain { "application/json" } else { output.content_type(false) };
                    if plain || output == Output::Json {
                        json_response(reply.status, ct, &reply.body)
                    } else {
                        json_response(reply.status, ct, &output.object(rr.rt, &reply.body))
                    }
                };
                for w in reply.warnings {
                    if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\""))) {
                        r.headers_mut().append(header::WARNING, v);
                    }
                }
                r
            }
            Err(e) => error_response(&e),
        };
        (resp, verb)
    }

    async fn dispatch(&self, rr: &ResourceRequest, method: &Method, headers: &HeaderMap, q: &std::collections::HashMap<String, String>, body: Bytes) -> Result<Reply, ApiError> {
        let ctx = &self.ctx;
        let ct = header_str(headers, header::CONTENT_TYPE).to_string();
        let manager = rest::field_manager(q, headers);
        let sub = rr.subresource.as_deref();
        match (method, rr.name.as_deref(), sub) {
            (&Method::GET, None, None) => ctx.list(rr, q).await,
            (&Method::GET, Some(n), None | Some("status")) => ctx.get(rr, n).await,
            (&Method::GET, Some(n), Some("scale")) => ctx.get_scale(rr, n).await,
            (&Method::POST, None, None) => ctx.create(rr, rest::decode_body(&body, &ct)?, q, &manager).await,
            (&Method::POST, Some(n), Some("binding")) => ctx.bind(rr, n, rest::decode_body(&body, &ct)?).await,
            (&Method::POST, Some(n), Some("eviction")) => ctx.evict(rr, n, rest::decode_body(&body, &ct)?, q).await,
            (&Method::PUT, Some(n), None | Some("status") | Some("finalize")) => ctx.update(rr, n, rest::decode_body(&body, &ct)?, q, &manager).await,
            (&Method::PUT, Some(n), Some("scale")) => ctx.put_scale(rr, n, rest::decode_body(&body, &ct)?, q, &manager).await,
            (&Method::PATCH, Some(n), None | Some("status") | Some("scale")) => {
                let pt = PatchType::from_content_type(&ct).ok_or_else(|| ApiError::unsupported_media_type(&ct))?;
                ctx.patch(rr, n, pt, &body, q, &manager).await
            }
            (&Method::DELETE, Some(n), None) => {
                let options = if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { rest::decode_body(&body, &ct)? };
                ctx.delete(rr, n, &options, q).await
            }
            (&Method::DELETE, None, None) => {
                let options = if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { rest::decode_body(&body, &ct)? };
                ctx.delete_collection(rr, &options, q).await
            }
            (_, _, Some("proxy")) => Err(ApiError::new(503, "ServiceUnavailable", "the proxy subresource is not supported yet")),
            _ => Err(ApiError::method_not_allowed(format!("the server does not allow this method on the requested resource"))),
        }
    }

    async fn watch(&self, rr: ResourceRequest, q: &std::collections::HashMap<String, String>, output: Output) -> Response<Body> {
        let prefix = match (&rr.namespace, rr.rt.namespaced) {
            (Some(ns), true) => format!("{}{}/", rr.rt.key_prefix(), ns),
            _ => rr.rt.key_prefix(),
        };
        // A watch on one name is a watch with a metadata.name field selector.
        let mut q = q.clone();
        if let Some(name) = &rr.name {
            let fs = q.get("fieldSelector").cloned().unwrap_or_default();
            let extra = format!("metadata.name={name}");
            q.insert("fieldSelector".into(), if fs.is_empty() { extra } else { format!("{fs},{extra}") });
        }
        let wr = match WatchRequest::from_query(rr.rt, prefix, &q, output) {
            Ok(w) => w,
            Err(e) => return error_response(&e),
        };
        match watch::stream(self.ctx.cache.clone(), wr).await {
            Ok(s) => {
                let ct = if output.is_table() { crate::output::TABLE_MEDIA } else { "application/json" };
                Response::builder()
                    .header(header::CONTENT_TYPE, ct)
                    .header(header::TRANSFER_ENCODING, "chunked")
                    .body(Body::from_stream(s))
                    .expect("valid response")
            }
            Err(e) => error_response(&e),
        }
    }
}

async fn read_body(req: Request<Body>) -> Result<Bytes, ApiError> {
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()) {
        if len > rest::MAX_BODY {
            return Err(ApiError::too_large("the server has received too large of a request body"));
        }
    }
    match Limited::new(req.into_body(), rest::MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Err(ApiError::too_large("the server has received too large of a request body"))
            } else {
                Err(ApiError::bad_request(format!("reading the request body: {e}")))
            }
        }
    }
}
