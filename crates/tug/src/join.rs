//! `tug agent --server URL --token T`: joining a cluster with the node
//! token, as k3s agents do.
//!
//! 1. `GET /cacerts` over TLS that does not verify the server (the agent has
//!    no CA yet). The answer is trusted only if its SHA-256 is the hash in the
//!    token (`K10<hash>::node:<password>`); a token without the hash skips
//!    the check, with a warning, as k3s does.
//! 2. `POST /v1-tugboat/client-kubelet.crt`, now over TLS verified against
//!    that CA, with HTTP Basic `node:<password>` and the node's name in
//!    `Tugboat-Node-Name`: the answer is a client certificate for
//!    `system:node:<name>` and its key.
//! 3. Writes `<data-dir>/agent/kubelet.kubeconfig` (CA, certificate, key,
//!    server URL; mode 0600), which the kubelet then uses like any
//!    kubeconfig. On the next start it is reused while its certificate is
//!    good for another 90 days and it is for the same server, node and CA.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt, Limited};
use hyper::{Method, Request, StatusCode, Uri, header};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tug_pki::NodeToken;

/// Where the agent keeps the kubeconfig it got by joining, under its data dir.
pub fn kubeconfig_path(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("kubelet.kubeconfig")
}

/// A kubeconfig is reissued on start once its certificate has less than this left.
const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// How long one request to the server (connect, TLS, answer) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read from the join endpoints.
const MAX_BODY: usize = 1 << 20;

/// What [`bootstrap`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// The kubeconfig already there was still good.
    Reused,
    /// A new certificate was issued and the kubeconfig (re)written.
    Issued,
}

/// Why joining failed.
#[derive(Debug)]
pub enum JoinError {
    /// The server could not be reached, or failed (5xx): worth retrying.
    Unavailable(anyhow::Error),
    /// The token is wrong for this server (CA hash mismatch, password
    /// refused) or the request is: retrying will not help.
    Rejected(anyhow::Error),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Unavailable(e) | JoinError::Rejected(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for JoinError {}

/// Makes sure `kubeconfig` holds credentials for node `node_name` at
/// `server` (an `https://` URL), joining with `token` unless the file
/// already there can be reused (same server, same node, a certificate the
/// token's CA issued that is good for another 90 days).
pub async fn bootstrap(server: &str, token: &str, node_name: &str, kubeconfig: &Path) -> Result<Credentials, JoinError> {
    let token = NodeToken::parse(token).context("parsing the token").map_err(JoinError::Rejected)?;
    match reusable(kubeconfig, server, &token, node_name) {
        Ok(()) => {
            tracing::info!(kubeconfig = %kubeconfig.display(), "reusing the agent's kubeconfig");
            return Ok(Credentials::Reused);
        }
        Err(why) if kubeconfig.exists() => {
            tracing::info!(kubeconfig = %kubeconfig.display(), reason = format!("{why:#}"), "requesting new agent credentials");
        }
        Err(_) => {}
    }
    let endpoint = Endpoint::parse(server).map_err(JoinError::Rejected)?;
    let ca = fetch_ca(&endpoint, &token).await?;
    let (cert, key) = fetch_client_cert(&endpoint, &ca, &token, node_name).await?;
    let contents = tug_pki::render_kubeconfig(server, "default", &ca, &cert, &key);
    tug_pki::write_kubeconfig(kubeconfig, &contents).map_err(JoinError::Rejected)?;
    tracing::info!(kubeconfig = %kubeconfig.display(), node = node_name, "joined the cluster: wrote the agent's kubeconfig");
    Ok(Credentials::Issued)
}

/// `Ok` if the kubeconfig at `path` can be used as it is.
fn reusable(path: &Path, server: &str, token: &NodeToken, node_name: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: serde_json::Value = serde_saphyr::from_str(&text).context("parsing the kubeconfig")?;
    let data = |pointer: &str| -> anyhow::Result<String> {
        let b64 = doc.pointer(pointer).and_then(|v| v.as_str()).with_context(|| format!("no {pointer}"))?;
        String::from_utf8(STANDARD.decode(b64.trim())?).with_context(|| format!("{pointer} is not text"))
    };
    let url = doc.pointer("/clusters/0/cluster/server").and_then(|v| v.as_str()).unwrap_or("");
    if url.trim_end_matches('/') != server.trim_end_matches('/') {
        anyhow::bail!("it is for server {url:?}");
    }
    let ca = data("/clusters/0/cluster/certificate-authority-data")?;
    if !token.matches_ca(&ca) {
        anyhow::bail!("its CA is not the one the token names");
    }
    let info = tug_pki::check_client_cert(
        &ca,
        &data("/users/0/user/client-certificate-data")?,
        &data("/users/0/user/client-key-data")?,
    )?;
    let want = format!("{}{node_name}", tug_pki::NODE_USER_PREFIX);
    if info.identity.user != want || !info.identity.groups.iter().any(|g| g == tug_pki::NODES_GROUP) {
        anyhow::bail!("its certificate is for {:?}, not {want:?}", info.identity.user);
    }
    if info.not_after < SystemTime::now() + RENEW_BEFORE {
        anyhow::bail!("its certificate expires within 90 days");
    }
    Ok(())
}

/// The server's address, from its URL.
struct Endpoint {
    /// For TCP (no brackets around an IPv6 address).
    host: String,
    port: u16,
    /// For the `Host` header.
    authority: String,
    name: ServerName<'static>,
}

impl Endpoint {
    fn parse(server: &str) -> anyhow::Result<Endpoint> {
        let uri: Uri = server.parse().with_context(|| format!("--server {server:?} is not a URL"))?;
        if uri.scheme_str() != Some("https") {
            anyhow::bail!("--server {server:?} must be an https:// URL");
        }
        let host = uri.host().with_context(|| format!("--server {server:?} has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(443);
        let name = ServerName::try_from(host.clone()).with_context(|| format!("--server {server:?}: bad host"))?;
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_else(|| host.clone());
        Ok(Endpoint { host, port, authority, name })
    }
}

/// `GET /cacerts` without verifying the server, checked against the token.
async fn fetch_ca(ep: &Endpoint, token: &NodeToken) -> Result<String, JoinError> {
    // Any certificate: the answer is checked against the token's hash instead.
    let tls = tls_config(Arc::new(tug_pki::AcceptAnyServer::new()));
    let (status, body) = request(ep, tls, Method::GET, tug_pki::CACERTS_PATH, &[]).await?;
    if !status.is_success() {
        return Err(refusal(status, &body, tug_pki::CACERTS_PATH));
    }
    let ca = String::from_utf8(body).map_err(|_| JoinError::Rejected(anyhow!("the server's /cacerts is not text")))?;
    let certs = CertificateDer::pem_slice_iter(ca.as_bytes()).collect::<Result<Vec<_>, _>>();
    if !certs.is_ok_and(|c| !c.is_empty()) {
        return Err(JoinError::Rejected(anyhow!("the server's /cacerts holds no PEM certificate")));
    }
    match token.ca_hash() {
        Some(want) if !token.matches_ca(&ca) => {
            return Err(JoinError::Rejected(anyhow!(
                "the cluster CA served by https://{} has SHA-256 {}, but the token is for a CA with SHA-256 {want}: \
                 the token is for another cluster (or the connection is intercepted); refusing to join",
                ep.authority,
                tug_pki::ca_hash(&ca),
            )));
        }
        Some(_) => {}
        None => tracing::warn!(
            "the token has no CA hash (K10<hash>::...): trusting the cluster CA served by https://{} without checking it; \
             use the full token from the server's node-token file",
            ep.authority
        ),
    }
    Ok(ca)
}

/// `POST /v1-tugboat/client-kubelet.crt` over TLS verified against `ca`.
/// Returns `(cert_pem, key_pem)`, checked: issued by `ca` to the node.
async fn fetch_client_cert(ep: &Endpoint, ca: &str, token: &NodeToken, node_name: &str) -> Result<(String, String), JoinError> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()).flatten() {
        roots.add(c).map_err(|e| JoinError::Rejected(anyhow!("the cluster CA: {e}")))?;
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), tug_pki::crypto_provider())
        .build()
        .map_err(|e| JoinError::Rejected(anyhow!("the cluster CA: {e}")))?;
    let basic = format!("Basic {}", STANDARD.encode(format!("{}:{}", token.user(), token.password())));
    let headers = [(header::AUTHORIZATION.as_str(), basic.as_str()), (tug_pki::NODE_NAME_HEADER, node_name)];
    let path = tug_pki::KUBELET_CLIENT_CERT_PATH;
    let (status, body) = request(ep, tls_config(verifier), Method::POST, path, &headers).await?;
    if status == StatusCode::UNAUTHORIZED {
        return Err(JoinError::Rejected(anyhow!("the server at https://{} refused the token's password (401 Unauthorized)", ep.authority)));
    }
    if !status.is_success() {
        return Err(refusal(status, &body, path));
    }
    let pem = String::from_utf8(body).map_err(|_| JoinError::Rejected(anyhow!("the client certificate is not text")))?;
    let (cert, key) = split_cert_and_key(&pem).ok_or_else(|| JoinError::Rejected(anyhow!("the answer holds no certificate and key")))?;
    let info = tug_pki::check_client_cert(ca, &cert, &key).map_err(|e| JoinError::Rejected(e.context("the issued client certificate")))?;
    let want = format!("{}{node_name}", tug_pki::NODE_USER_PREFIX);
    if info.identity.user != want {
        return Err(JoinError::Rejected(anyhow!("the server issued a certificate for {:?}, not {want:?}", info.identity.user)));
    }
    Ok((cert, key))
}

/// Splits "certificate(s) then private key" PEM at the key's first line.
fn split_cert_and_key(pem: &str) -> Option<(String, String)> {
    let mut offset = 0;
    for line in pem.split_inclusive('\n') {
        let l = line.trim();
        if l.starts_with("-----BEGIN ") && l.ends_with("PRIVATE KEY-----") {
            let (cert, key) = pem.split_at(offset);
            return (cert.contains("-----BEGIN CERTIFICATE-----")).then(|| (cert.to_string(), key.to_string()));
        }
        offset += line.len();
    }
    None
}

/// A failed answer: retried if the server failed (5xx), else final; the
/// message of a `Status` body if there is one.
fn refusal(status: StatusCode, body: &[u8], path: &str) -> JoinError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().chars().take(200).collect());
    let e = anyhow!("{path}: the server answered {status}: {message}");
    if status.is_server_error() { JoinError::Unavailable(e) } else { JoinError::Rejected(e) }
}

fn tls_config(verifier: Arc<dyn ServerCertVerifier>) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(tug_pki::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One request on a fresh connection; the answer's status and body.
async fn request(
    ep: &Endpoint,
    tls: Arc<ClientConfig>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, Vec<u8>), JoinError> {
    let url = format!("https://{}{path}", ep.authority);
    let mut req = Request::builder().method(method).uri(path).header(header::HOST, &ep.authority);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(tug_httpstream::empty()).map_err(|e| JoinError::Rejected(anyhow!("{url}: {e}")))?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port)).await.context("connecting")?;
        let stream = tokio_rustls::TlsConnector::from(tls).connect(ep.name.clone(), tcp).await.context("TLS handshake")?;
        let resp = tug_httpstream::send(stream, req).await.context("sending the request")?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the answer: {e}"))?
            .to_bytes();
        anyhow::Ok((status, body.to_vec()))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(r)) => Ok(r),
        // A server whose certificate the CA did not sign is not ours: final.
        Ok(Err(e)) if is_certificate_error(&e) => Err(JoinError::Rejected(e.context(url))),
        Ok(Err(e)) => Err(JoinError::Unavailable(e.context(url))),
        Err(_) => Err(JoinError::Unavailable(anyhow!("{url}: no answer within {REQUEST_TIMEOUT:?}"))),
    }
}

fn is_certificate_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_certificate_and_key() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n";
        let (c, k) = split_cert_and_key(pem).unwrap();
        assert_eq!(c, "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n");
        assert_eq!(k, "-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n");
        assert!(split_cert_and_key("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n").is_none());
        assert!(split_cert_and_key("-----BEGIN EC PRIVATE KEY-----\nBBB\n-----END EC PRIVATE KEY-----\n").is_none());
    }

    #[test]
    fn server_urls() {
        let e = Endpoint::parse("https://10.0.0.1:6443").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.authority.as_str()), ("10.0.0.1", 6443, "10.0.0.1:6443"));
        let e = Endpoint::parse("https://[::1]:6443/").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.authority.as_str()), ("::1", 6443, "[::1]:6443"));
        let e = Endpoint::parse("https://server.example").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("server.example", 443));
        assert!(Endpoint::parse("http://10.0.0.1:6443").is_err());
        assert!(Endpoint::parse("10.0.0.1:6443").is_err());
    }
}
