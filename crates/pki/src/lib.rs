//! Cluster PKI for Tugboat.
//!
//! One self-signed CA (`tugboat-ca`) is the root of trust for the whole
//! cluster: it signs the API server's serving certificate (so clients pinning
//! the CA can verify the server) and client certificates whose subject carries
//! the Kubernetes identity (CN = user, O = groups), exactly as kube-apiserver's
//! x509 authenticator reads them. Everything lives as PEM files in one
//! directory and is created on first start and reused afterwards, so issued
//! kubeconfigs and kubelet certificates stay valid across restarts.

mod kubeconfig;
mod sans;
mod token;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;

pub use kubeconfig::{render_kubeconfig, write_kubeconfig};
pub use sans::ServingSans;
pub use token::{NODE_TOKEN_USER, NodeToken, TOKEN_PREFIX, ca_hash};

/// The CA outlives any leaf; replacing it invalidates every issued credential.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Leaf certificates last a year, like k3s/kubeadm, and are renewed on start.
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// A leaf found on start that expires sooner than this is reissued (k3s: 90 days).
const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// `notBefore` is backdated so hosts with slightly slow clocks accept new certs.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

pub const CA_COMMON_NAME: &str = "tugboat-ca";
pub const ADMIN_USER: &str = "system:admin";
pub const ADMIN_GROUP: &str = "system:masters";
/// The group of node identities (`system:node:<name>`).
pub const NODES_GROUP: &str = "system:nodes";
/// The user name prefix of node identities.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// Where a kubelet asks the API server to sign its serving certificate
/// (POST, JSON `{"nodeName", "csr"}` → `{"certificate", "ca"}`; k3s has the
/// same kind of endpoint under `/v1-k3s/`).
pub const KUBELET_SERVING_CERT_PATH: &str = "/v1-tugboat/serving-kubelet.crt";
/// The cluster CA certificate (PEM), served without authentication (k3s's
/// `/cacerts`): an agent checks its hash against its join token.
pub const CACERTS_PATH: &str = "/cacerts";
/// Where an agent holding the join token gets its kubelet client
/// certificate (POST, HTTP Basic `node:<password>` or `Bearer <password>`,
/// the node name in [`NODE_NAME_HEADER`] → the certificate PEM then its
/// key PEM; k3s: `/v1-k3s/client-kubelet.crt`).
pub const KUBELET_CLIENT_CERT_PATH: &str = "/v1-tugboat/client-kubelet.crt";
/// The header naming the node a client certificate is for (k3s: `K3s-Node-Name`).
pub const NODE_NAME_HEADER: &str = "Tugboat-Node-Name";
/// The API server's identity towards kubelets (upstream's
/// `kube-apiserver-kubelet-client`, in `system:masters`).
pub const APISERVER_KUBELET_CLIENT: &str = "kube-apiserver-kubelet-client";

/// The Kubernetes identity carried by a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

/// Reads the identity from a DER client certificate like kube-apiserver does:
/// subject CN is the user name, every subject O is a group. Returns `None`
/// for unparsable certificates or an empty CN (Kubernetes treats those as
/// unauthenticated). Does NOT verify the certificate: only call it on certs
/// the TLS layer has already verified against the CA.
pub fn identity_from_cert(der: &[u8]) -> Option<PeerIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    // Go's pkix.Name keeps the last CN when several are present.
    let user = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .last()?;
    if user.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(PeerIdentity {
        user: user.to_string(),
        groups,
    })
}

/// Accepts any server certificate, as upstream's kubelet does for HTTPS
/// probes and lifecycle hooks (`InsecureSkipVerify`) and as an agent does
/// for `/cacerts` (whose answer it checks against the token instead).
/// Handshake signatures are still verified: the peer holds the key of the
/// certificate it showed.
#[derive(Debug)]
pub struct AcceptAnyServer(Arc<CryptoProvider>);

impl AcceptAnyServer {
    pub fn new() -> AcceptAnyServer {
        AcceptAnyServer(crypto_provider())
    }
}

impl Default for AcceptAnyServer {
    fn default() -> AcceptAnyServer {
        AcceptAnyServer::new()
    }
}

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client configuration (HTTP/1.1) that accepts any server
/// certificate ([`AcceptAnyServer`]).
pub fn insecure_client_config() -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer::new()))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The ring provider; aws-lc-rs is deliberately not used anywhere in Tugboat.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
struct CertPair {
    cert_pem: String,
    key_pem: String,
}

/// The cluster CA plus the API server's serving and admin client credentials,
/// backed by files in one directory.
pub struct ClusterPki {
    dir: PathBuf,
    ca_cert_pem: String,
    issuer: Arc<Issuer<'static, KeyPair>>,
    serving: CertPair,
    admin: CertPair,
    server_config: Arc<ServerConfig>,
}

impl fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterPki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ClusterPki {
    /// Loads the PKI from `dir`, creating whatever is missing.
    ///
    /// Files: `ca.crt`, `ca.key`, `serving.crt`, `serving.key`, `admin.crt`,
    /// `admin.key` (keys mode 0600). The CA is created only if `ca.crt` is
    /// absent; if `ca.crt` exists but its key is missing or does not match,
    /// this fails rather than silently replacing the root of trust. Leaf
    /// certificates are reissued when unreadable, not matching their key,
    /// expiring within 90 days, issued by a CA created in this call, or (for
    /// the serving certificate) not covering all of `sans`.
    pub fn load_or_create(dir: &Path, sans: &ServingSans) -> anyhow::Result<ClusterPki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = |name: &str| dir.join(name);

        let (ca_cert_pem, ca_key, new_ca) = if path("ca.crt").exists() {
            let cert = read(&path("ca.crt"))?;
            let key = read(&path("ca.key")).context("ca.crt exists but ca.key does not")?;
            let key = KeyPair::from_pem(&key).context("parsing ca.key")?;
            let der = first_cert_der(&cert).context("parsing ca.crt")?;
            let (_, x509) = x509_parser::parse_x509_certificate(&der).context("parsing ca.crt")?;
            if !key_matches(&x509, &key) {
                bail!(
                    "{} does not match {}",
                    path("ca.key").display(),
                    path("ca.crt").display()
                );
            }
            (cert, key, false)
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?.pem();
            kubeconfig::write_private(&path("ca.key"), key.serialize_pem().as_bytes())?;
            kubeconfig::write_atomic(&path("ca.crt"), cert.as_bytes(), 0o644)?;
            (cert, key, true)
        };
        // Rebuild the issuer from the certificate on disk so issued certs carry
        // its exact subject and key identifier.
        let issuer = Arc::new(Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key).context("loading CA issuer")?);

        let serving = load_or_issue(
            dir,
            "serving",
            new_ca,
            |c| sans.covered_by(c),
            || issue(&issuer, serving_params(sans)?),
        )?;
        let admin = load_or_issue(
            dir,
            "admin",
            new_ca,
            |_| true,
            || issue(&issuer, client_params(ADMIN_USER, &[ADMIN_GROUP])?),
        )?;

        let server_config = build_server_config(&ca_cert_pem, &serving)?;
        Ok(ClusterPki {
            dir: dir.to_path_buf(),
            ca_cert_pem,
            issuer,
            serving,
            admin,
            server_config,
        })
    }

    /// Issues a client certificate (CN = user, O = groups) signed by the CA,
    /// e.g. for kubelets (`system:node:<name>`, `system:nodes`) or controllers.
    /// Returns `(cert_pem, key_pem)`; nothing is written to disk.
    ///
    /// At most one organization is supported: rcgen 0.14 keeps a single value
    /// per subject attribute type, and a silently dropped group would be worse
    /// than an error.
    pub fn issue_client_cert(&self, cn: &str, orgs: &[&str]) -> anyhow::Result<(String, String)> {
        let p = issue(&self.issuer, client_params(cn, orgs)?)?;
        Ok((p.cert_pem, p.key_pem))
    }

    /// Issues a serving certificate for `sans` signed by the CA (e.g. for a
    /// kubelet's HTTPS endpoint). Returns `(cert_pem, key_pem)`.
    pub fn issue_serving_cert(&self, sans: &ServingSans) -> anyhow::Result<(String, String)> {
        let p = issue(&self.issuer, serving_params(sans)?)?;
        Ok((p.cert_pem, p.key_pem))
    }

    /// TLS config for the API server: ring provider, ALPN `h2` then
    /// `http/1.1`, and optional client-certificate auth against the CA.
    /// Anonymous clients may connect (health endpoints must work without
    /// credentials; everything else answers 401 at the HTTP layer), but a
    /// presented certificate that does not chain to the CA fails the handshake.
    /// Use [`identity_from_cert`] on the verified peer certificate.
    pub fn server_tls_config(&self) -> Arc<ServerConfig> {
        self.server_config.clone()
    }

    /// TLS config for an in-process client of the API server (controllers,
    /// tests): trusts only the cluster CA and presents `client` (cert PEM,
    /// key PEM) if given.
    pub fn client_tls_config(
        &self,
        client: Option<(&str, &str)>,
    ) -> anyhow::Result<Arc<ClientConfig>> {
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(root_store(&self.ca_cert_pem)?);
        let mut config = match client {
            Some((cert, key)) => {
                builder.with_client_auth_cert(cert_chain(cert)?, private_key(key)?)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// TLS config for the API server's connections to kubelets: trusts only
    /// the cluster CA (a kubelet must present a serving certificate the CA
    /// signed) and presents a client certificate issued now, in memory, to
    /// `kube-apiserver-kubelet-client` in `system:masters`. ALPN offers
    /// only `http/1.1`: exec, attach and port-forward are HTTP/1.1 upgrades.
    pub fn kubelet_client_tls_config(&self) -> anyhow::Result<Arc<ClientConfig>> {
        let (cert, key) = self.issue_client_cert(APISERVER_KUBELET_CLIENT, &[ADMIN_GROUP])?;
        let mut config = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(root_store(&self.ca_cert_pem)?)
            .with_client_auth_cert(cert_chain(&cert)?, private_key(&key)?)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// What signs kubelet serving certificates (a handle that can be kept
    /// by the API server).
    pub fn kubelet_signer(&self) -> KubeletSigner {
        KubeletSigner {
            issuer: self.issuer.clone(),
            ca_cert_pem: self.ca_cert_pem.clone(),
        }
    }

    /// A kubeconfig for `system:admin` that kubectl can use as-is.
    pub fn admin_kubeconfig(&self, server_url: &str, cluster_name: &str) -> String {
        render_kubeconfig(
            server_url,
            cluster_name,
            &self.ca_cert_pem,
            &self.admin.cert_pem,
            &self.admin.key_pem,
        )
    }

    /// The directory holding the PKI files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }
    pub fn serving_cert_pem(&self) -> &str {
        &self.serving.cert_pem
    }
    pub fn serving_key_pem(&self) -> &str {
        &self.serving.key_pem
    }
    pub fn admin_cert_pem(&self) -> &str {
        &self.admin.cert_pem
    }
    pub fn admin_key_pem(&self) -> &str {
        &self.admin.key_pem
    }
}

/// Signs kubelet serving certificates with the cluster CA.
#[derive(Clone)]
pub struct KubeletSigner {
    issuer: Arc<Issuer<'static, KeyPair>>,
    ca_cert_pem: String,
}

impl fmt::Debug for KubeletSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeletSigner").finish_non_exhaustive()
    }
}

impl KubeletSigner {
    /// The CA certificate (PEM) the signed certificates chain to.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// Issues a kubelet's client certificate: a fresh key and a certificate
    /// for `CN=system:node:<node_name>, O=system:nodes`, client
    /// authentication only, a year's validity. Returns `(cert_pem, key_pem)`.
    pub fn issue_kubelet_client(&self, node_name: &str) -> anyhow::Result<(String, String)> {
        if node_name.is_empty() {
            bail!("a node name is required");
        }
        let p = issue(self.issuer.as_ref(), client_params(&format!("{NODE_USER_PREFIX}{node_name}"), &[NODES_GROUP])?)?;
        Ok((p.cert_pem, p.key_pem))
    }

    /// Signs a kubelet's PKCS#10 request (PEM) for `node_name`: the request's
    /// signature is checked (the node holds the key), its DNS and IP subject
    /// alternative names are kept (at least one is needed; other kinds are
    /// refused), and everything else is set here: subject
    /// `CN=system:node:<node_name>, O=system:nodes`, server authentication
    /// only, a year's validity. Returns the certificate (PEM).
    pub fn sign_kubelet_serving(&self, csr_pem: &str, node_name: &str) -> anyhow::Result<String> {
        if node_name.is_empty() {
            bail!("a node name is required");
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| anyhow::anyhow!("invalid certificate signing request: {e}"))?;
        let mut sans = Vec::new();
        for san in &csr.params.subject_alt_names {
            match san {
                SanType::DnsName(_) | SanType::IpAddress(_) => sans.push(san.clone()),
                other => bail!("subject alternative name {other:?} is not allowed in a kubelet serving certificate"),
            }
        }
        if sans.is_empty() {
            bail!("a kubelet serving certificate needs at least one DNS name or IP address");
        }
        let mut params = leaf_params(
            CertificateParams::default(),
            &format!("{NODE_USER_PREFIX}{node_name}"),
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, NODES_GROUP);
        params.subject_alt_names = sans;
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(self.issuer.as_ref())
        .context("signing the kubelet serving certificate")?;
        Ok(signed.pem())
    }
}

/// A fresh private key and a PKCS#10 request for a kubelet serving
/// certificate covering `sans` (what a node sends to be signed by
/// [`KubeletSigner::sign_kubelet_serving`]). Returns `(csr_pem, key_pem)`.
pub fn kubelet_serving_request(node_name: &str, sans: &ServingSans) -> anyhow::Result<(String, String)> {
    let mut params =
        CertificateParams::new(sans.to_strings()).context("invalid subject alternative name")?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{NODE_USER_PREFIX}{node_name}"));
    let key = KeyPair::generate()?;
    let csr = params
        .serialize_request(&key)
        .context("creating the certificate signing request")?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// TLS config for a kubelet's HTTPS server: `cert_pem`/`key_pem` as the
/// serving certificate, and a client certificate chaining to `ca_pem`
/// required from every client (the handshake fails without one). ALPN
/// `http/1.1`.
pub fn mutual_tls_server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = crypto_provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(root_store(ca_pem)?, provider.clone())
        .build()
        .context("building client certificate verifier")?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert_chain(cert_pem)?, private_key(key_pem)?)
        .context("loading serving certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What [`check_client_cert`] found in a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertInfo {
    pub identity: PeerIdentity,
    pub not_after: SystemTime,
}

/// Checks a client certificate and key (PEM) as an agent does before
/// reusing them: the first certificate parses, was issued by a CA whose
/// certificate is `ca_pem` (signature verified), matches the key, carries an
/// identity, and is valid now. Returns its identity and expiry.
pub fn check_client_cert(ca_pem: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<ClientCertInfo> {
    let der = first_cert_der(cert_pem)?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der).context("parsing the certificate")?;
    let key = KeyPair::from_pem(key_pem).context("parsing the private key")?;
    if !key_matches(&x509, &key) {
        bail!("the certificate does not match the private key");
    }
    let ca_der = first_cert_der(ca_pem).context("parsing the CA certificate")?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).context("parsing the CA certificate")?;
    x509.verify_signature(Some(ca.public_key()))
        .map_err(|e| anyhow::anyhow!("the certificate was not issued by this CA: {e}"))?;
    if !x509.validity().is_valid() {
        bail!("the certificate is not valid now (valid {} to {})", x509.validity().not_before, x509.validity().not_after);
    }
    let identity = identity_from_cert(&der).context("the certificate has no user name (CN)")?;
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(x509.validity().not_after.timestamp()).context("expiry before 1970")?);
    Ok(ClientCertInfo { identity, not_after })
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn first_cert_der(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
    cert_chain(pem)?
        .into_iter()
        .next()
        .context("no certificate in PEM")
}

fn cert_chain(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing certificate PEM")?;
    if certs.is_empty() {
        bail!("no certificate in PEM");
    }
    Ok(certs)
}

fn private_key(pem: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).context("parsing private key PEM")
}

fn root_store(ca_pem: &str) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in cert_chain(ca_pem)? {
        roots.add(cert).context("adding CA to root store")?;
    }
    Ok(Arc::new(roots))
}

fn build_server_config(ca_pem: &str, serving: &CertPair) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = crypto_provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(root_store(ca_pem)?, provider.clone())
            .allow_unauthenticated()
            .build()
            .context("building client certificate verifier")?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            cert_chain(&serving.cert_pem)?,
            private_key(&serving.key_pem)?,
        )
        .context("loading serving certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Sets validity to [now - skew, now + `lifetime`].
fn set_validity(p: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    p.not_before = (now - CLOCK_SKEW).into();
    p.not_after = (now + lifetime).into();
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut p, CA_VALIDITY);
    p
}

fn leaf_params(
    mut p: CertificateParams,
    cn: &str,
    eku: ExtendedKeyUsagePurpose,
) -> CertificateParams {
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::ExplicitNoCa;
    // ECDSA keys only sign; key encipherment would be meaningless.
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // rustls' client verifier requires clientAuth; Go clients require serverAuth.
    p.extended_key_usages = vec![eku];
    p.use_authority_key_identifier_extension = true;
    set_validity(&mut p, LEAF_VALIDITY);
    p
}

fn client_params(cn: &str, orgs: &[&str]) -> anyhow::Result<CertificateParams> {
    if cn.is_empty() {
        bail!("client certificate needs a common name (the user name)");
    }
    if orgs.len() > 1 {
        bail!("at most one organization (group) per client certificate is supported, got {orgs:?}");
    }
    let mut p = leaf_params(
        CertificateParams::default(),
        cn,
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    if let Some(org) = orgs.first() {
        p.distinguished_name.push(DnType::OrganizationName, *org);
    }
    Ok(p)
}

fn serving_params(sans: &ServingSans) -> anyhow::Result<CertificateParams> {
    let p =
        CertificateParams::new(sans.to_strings()).context("invalid subject alternative name")?;
    let cn = sans
        .dns_names
        .first()
        .map(String::as_str)
        .unwrap_or("tugboat");
    Ok(leaf_params(p, cn, ExtendedKeyUsagePurpose::ServerAuth))
}

/// Generates a fresh key and signs `params` with the CA.
fn issue(issuer: &Issuer<'_, KeyPair>, params: CertificateParams) -> anyhow::Result<CertPair> {
    let key = KeyPair::generate()?;
    let cert = params
        .signed_by(&key, issuer)
        .context("signing certificate")?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Reuses `<name>.crt`/`<name>.key` if still good, otherwise issues and writes new ones.
fn load_or_issue(
    dir: &Path,
    name: &str,
    new_ca: bool,
    accept: impl Fn(&X509Certificate<'_>) -> bool,
    issue: impl FnOnce() -> anyhow::Result<CertPair>,
) -> anyhow::Result<CertPair> {
    let crt = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    if !new_ca && let Some(pair) = load_leaf(&crt, &key, accept) {
        return Ok(pair);
    }
    let pair = issue()?;
    kubeconfig::write_private(&key, pair.key_pem.as_bytes())
        .with_context(|| format!("writing {}", key.display()))?;
    kubeconfig::write_atomic(&crt, pair.cert_pem.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", crt.display()))?;
    Ok(pair)
}

fn load_leaf(
    crt: &Path,
    key: &Path,
    accept: impl Fn(&X509Certificate<'_>) -> bool,
) -> Option<CertPair> {
    let cert_pem = std::fs::read_to_string(crt).ok()?;
    let key_pem = std::fs::read_to_string(key).ok()?;
    let der = first_cert_der(&cert_pem).ok()?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der).ok()?;
    let keypair = KeyPair::from_pem(&key_pem).ok()?;
    let renew_at = SystemTime::now() + RENEW_BEFORE;
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(x509.validity().not_after.timestamp()).ok()?);
    let good = key_matches(&x509, &keypair) && not_after > renew_at && accept(&x509);
    good.then_some(CertPair { cert_pem, key_pem })
}

fn key_matches(cert: &X509Certificate<'_>, key: &KeyPair) -> bool {
    cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
}
