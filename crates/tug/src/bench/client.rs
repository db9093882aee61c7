//! The benchmark's HTTPS client: the admin client certificate from the
//! server's kubeconfig, TLS with tokio-rustls, and HTTP/2 connections from
//! hyper. Each connection multiplexes many concurrent requests (as client-go
//! does with its single HTTP/2 connection per client); the bench opens a few
//! and spreads its tasks over them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Deserialize)]
struct Kubeconfig {
    clusters: Vec<NamedCluster>,
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct NamedCluster {
    cluster: ClusterInfo,
}

#[derive(Deserialize)]
struct ClusterInfo {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    ca: String,
}

#[derive(Deserialize)]
struct NamedUser {
    user: UserInfo,
}

#[derive(Deserialize)]
struct UserInfo {
    #[serde(rename = "client-certificate-data")]
    cert: String,
    #[serde(rename = "client-key-data")]
    key: String,
}

/// Everything needed to open authenticated connections to one server.
#[derive(Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    /// `https://host:port`, the prefix of every request URI (HTTP/2 needs
    /// absolute URIs for `:scheme` and `:authority`).
    pub base: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
}

impl Endpoint {
    /// Reads the first cluster and user of a kubeconfig written by `tug server`.
    pub fn from_kubeconfig(path: &Path) -> anyhow::Result<Endpoint> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let kc: Kubeconfig =
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let cluster = &kc
            .clusters
            .first()
            .context("kubeconfig has no cluster")?
            .cluster;
        let user = &kc.users.first().context("kubeconfig has no user")?.user;
        let decode = |what: &str, s: &str| {
            STANDARD
                .decode(s.trim())
                .with_context(|| format!("decoding {what}"))
        };
        let ca = decode("certificate-authority-data", &cluster.ca)?;
        let cert = decode("client-certificate-data", &user.cert)?;
        let key = decode("client-key-data", &user.key)?;

        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots
                .add(c.context("CA certificate PEM")?)
                .context("adding the CA certificate")?;
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<_, _>>()
            .context("client certificate PEM")?;
        let key = PrivateKeyDer::from_pem_slice(&key).context("client key PEM")?;
        let mut tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("client certificate")?;
        tls.alpn_protocols = vec![b"h2".to_vec()];

        let base = cluster.server.trim_end_matches('/').to_string();
        let hostport = base
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("server {base} is not https"))?;
        let addr: SocketAddr = hostport
            .parse()
            .with_context(|| format!("server address {hostport}"))?;
        let server_name = ServerName::IpAddress(addr.ip().into());
        Ok(Endpoint {
            addr,
            base,
            server_name,
            tls: Arc::new(tls),
        })
    }

    /// Opens one TLS connection speaking HTTP/2.
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .context("TLS handshake")?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            bail!("server did not negotiate HTTP/2");
        }
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .adaptive_window(true)
            .max_frame_size(1 << 20)
            .handshake(TokioIo::new(tls))
            .await
            .context("HTTP/2 handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            send,
            base: self.base.clone(),
        })
    }
}

/// One HTTP/2 connection; clones share it (multiplexed streams).
#[derive(Clone)]
pub struct Conn {
    send: SendRequest<Full<Bytes>>,
    base: String,
}

impl Conn {
    /// Sends a request and returns the response with its body unread.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Response<Incoming>> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        let req = b.body(Full::new(body.unwrap_or_default()))?;
        self.send.ready().await.context("connection closed")?;
        Ok(self.send.send_request(req).await?)
    }

    /// Sends a request and reads the whole response body.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let resp = self.request(method, path, body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("reading the response body")?
            .to_bytes();
        Ok((status, bytes))
    }

    /// Like [`Conn::call`], but fails unless the status is `want`.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        want: StatusCode,
    ) -> anyhow::Result<Bytes> {
        let (status, bytes) = self.call(method.clone(), path, body).await?;
        if status != want {
            bail!(
                "{method} {path}: {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(400)])
            );
        }
        Ok(bytes)
    }
}
