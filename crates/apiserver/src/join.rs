//! Joining agents with the node token (k3s's supervisor endpoints, the part
//! a kubelet needs).
//!
//! - `GET /cacerts`, without authentication: the cluster CA certificate,
//!   byte for byte the PEM whose SHA-256 is in the token
//!   (`K10<hash>::node:<password>`), so an agent that fetched it over an
//!   unverified connection can tell it is the right one.
//! - `POST /v1-tugboat/client-kubelet.crt`, authenticated by the token's
//!   password (HTTP Basic `node:<password>` as k3s, or `Bearer <password>`),
//!   for the node named in the `Tugboat-Node-Name` header: a fresh client
//!   certificate for `CN=system:node:<name>, O=system:nodes` signed by the
//!   cluster CA, then its private key (PEM). With it the agent is a client
//!   like any other (client-certificate authentication).
//!
//! Both are reached before the HTTP front's authentication: a joining agent
//! has no client certificate yet (the TLS layer lets such clients in, with
//! no identity).

use axum::body::Body;
use base64::Engine;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tug_api::ApiError;
use tug_pki::{KubeletSigner, NodeToken, CACERTS_PATH, KUBELET_CLIENT_CERT_PATH, NODE_NAME_HEADER};

use crate::http::error_response;

/// The CA to serve and the token whose password buys a kubelet certificate.
pub struct Join {
    signer: KubeletSigner,
    /// `None`: no token configured, every certificate request is refused.
    token: Option<NodeToken>,
}

impl Join {
    pub fn new(signer: KubeletSigner, token: Option<NodeToken>) -> Join {
        Join { signer, token }
    }
}

/// Whether `path` is one of the join endpoints (served without a client identity).
pub fn serves(path: &str) -> bool {
    path == CACERTS_PATH || path == KUBELET_CLIENT_CERT_PATH
}

/// Serves a join endpoint; returns the response, and the verb and resource
/// for the request metrics.
pub async fn serve<B>(join: &Join, req: Request<B>) -> (Response<Body>, String, String) {
    if req.uri().path() == CACERTS_PATH {
        let r = if req.method() == Method::GET || req.method() == Method::HEAD {
            pem_response(join.signer.ca_cert_pem().to_string())
        } else {
            error_response(&ApiError::method_not_allowed("only GET is allowed here"))
        };
        return (r, "get".into(), "cacerts".into());
    }
    let r = match client_cert(join, &req) {
        Ok(pem) => pem_response(pem),
        Err(e) => {
            let mut r = error_response(&e);
            if e.code == 401 {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"tugboat\""));
            }
            r
        }
    };
    (r, "create".into(), "kubeletclientcertificates".into())
}

fn pem_response(pem: String) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(pem))
        .expect("valid response")
}

fn client_cert<B>(join: &Join, req: &Request<B>) -> Result<String, ApiError> {
    let Some(token) = &join.token else {
        return Err(ApiError::unauthorized());
    };
    let password = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| password(token, v));
    if !password.is_some_and(|p| token.verify_password(&p)) {
        tracing::info!("refused a kubelet client certificate request: wrong or missing node token password");
        return Err(ApiError::unauthorized());
    }
    if req.method() != Method::POST {
        return Err(ApiError::method_not_allowed("only POST is allowed here"));
    }
    let node = req.headers().get(NODE_NAME_HEADER).map(|v| v.to_str().unwrap_or("\u{fffd}")).unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!("the {NODE_NAME_HEADER} header (the node's name) is required")));
    }
    if let Err(e) = tug_api::meta::is_dns1123_subdomain(node) {
        return Err(ApiError::bad_request(format!("invalid node name {node:?}: {e}")));
    }
    let (cert, key) = join.signer.issue_kubelet_client(node).map_err(|e| ApiError::internal(format!("{e:#}")))?;
    tracing::info!(node, "issued a kubelet client certificate to a node holding the join token");
    Ok(format!("{cert}{key}"))
}

/// The password in an `Authorization` value: `Basic` with the token's user
/// name, or `Bearer`.
fn password(token: &NodeToken, authorization: &str) -> Option<String> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (user == token.user()).then(|| password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn join() -> (Join, NodeToken, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let sans = tug_pki::ServingSans::for_host("10.43.0.1".parse().unwrap(), "cluster.local", &[]);
        let pki = tug_pki::ClusterPki::load_or_create(dir.path(), &sans).unwrap();
        let token = NodeToken::generate(pki.ca_cert_pem()).unwrap();
        (Join::new(pki.kubelet_signer(), Some(token.clone())), token, dir)
    }

    fn req(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    async fn run(j: &Join, r: Request<()>) -> (u16, Option<String>, String) {
        let (resp, _, _) = serve(j, r).await;
        let code = resp.status().as_u16();
        let www = resp.headers().get(header::WWW_AUTHENTICATE).map(|v| v.to_str().unwrap().to_string());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (code, www, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn authorization_values() {
        let t = NodeToken::parse(&format!("K10{}::node:pw", tug_pki::ca_hash("x"))).unwrap();
        let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert_eq!(password(&t, &basic("node:pw")).as_deref(), Some("pw"));
        assert_eq!(password(&t, &basic("node:a:b")).as_deref(), Some("a:b"));
        assert_eq!(password(&t, &basic("server:pw")), None);
        assert_eq!(password(&t, "Bearer pw").as_deref(), Some("pw"));
        assert_eq!(password(&t, "bearer  pw ").as_deref(), Some("pw"));
        assert_eq!(password(&t, "Digest x"), None);
        assert_eq!(password(&t, "Basic !!!"), None);
        assert_eq!(password(&t, "pw"), None);
    }

    #[tokio::test]
    async fn endpoints() {
        let (j, token, _dir) = join();
        assert!(serves("/cacerts") && serves("/v1-tugboat/client-kubelet.crt") && !serves("/api"));
        let (code, _, body) = run(&j, req(Method::GET, "/cacerts", &[])).await;
        assert_eq!(code, 200);
        assert_eq!(body, j.signer.ca_cert_pem());
        assert!(token.matches_ca(&body));
        assert_eq!(run(&j, req(Method::POST, "/cacerts", &[])).await.0, 405);

        let path = "/v1-tugboat/client-kubelet.crt";
        let bearer = format!("Bearer {}", token.password());
        let (code, _, body) = run(&j, req(Method::POST, path, &[("authorization", &bearer), ("tugboat-node-name", "n1")])).await;
        assert_eq!(code, 200, "{body}");
        let cert_end = body.find("-----END CERTIFICATE-----").unwrap();
        assert!(body[cert_end..].contains("PRIVATE KEY-----"), "certificate then key: {body}");
        let (code, www, body) = run(&j, req(Method::POST, path, &[("authorization", "Bearer nope"), ("tugboat-node-name", "n1")])).await;
        assert_eq!((code, www.as_deref()), (401, Some("Basic realm=\"tugboat\"")));
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!((status["kind"].as_str(), status["reason"].as_str()), (Some("Status"), Some("Unauthorized")));
        assert_eq!(run(&j, req(Method::POST, path, &[("tugboat-node-name", "n1")])).await.0, 401);
        assert_eq!(run(&j, req(Method::GET, path, &[("authorization", &bearer), ("tugboat-node-name", "n1")])).await.0, 405);
        for bad in ["", "Node_1", "-x", "a..b"] {
            let (code, _, body) = run(&j, req(Method::POST, path, &[("authorization", &bearer), ("tugboat-node-name", bad)])).await;
            assert_eq!(code, 400, "{bad:?}: {body}");
        }
        // Without a configured token nothing is issued.
        let none = Join::new(j.signer.clone(), None);
        assert_eq!(run(&none, req(Method::POST, path, &[("authorization", &bearer), ("tugboat-node-name", "n1")])).await.0, 401);
    }
}
