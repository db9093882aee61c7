use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use rustls::ServerConfig;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tug_pki::{ClusterPki, PeerIdentity, ServingSans, identity_from_cert, write_kubeconfig};
use x509_parser::extensions::GeneralName;

const FILES: [&str; 6] = [
    "ca.crt",
    "ca.key",
    "serving.crt",
    "serving.key",
    "admin.crt",
    "admin.key",
];

fn sans() -> ServingSans {
    ServingSans::for_host("10.43.0.1".parse().unwrap(), "cluster.local", &[])
}

fn der(pem: &str) -> Vec<u8> {
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// (DNS names, IPs) listed in a PEM certificate.
fn cert_sans(pem: &str) -> (Vec<String>, Vec<IpAddr>) {
    let der = der(pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let ext = cert
        .subject_alternative_name()
        .unwrap()
        .expect("no SAN extension");
    let (mut dns, mut ips) = (vec![], vec![]);
    for n in &ext.value.general_names {
        match n {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()))
            }
            GeneralName::IPAddress(b) if b.len() == 16 => {
                ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()))
            }
            _ => {}
        }
    }
    (dns, ips)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn created_once_then_reloaded_identically() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let a = ClusterPki::load_or_create(&tls, &sans()).unwrap();
    for f in FILES {
        assert!(tls.join(f).is_file(), "{f} missing");
    }
    for f in ["ca.key", "serving.key", "admin.key"] {
        assert_eq!(mode(&tls.join(f)), 0o600, "{f} mode");
    }
    let before: Vec<String> = FILES
        .iter()
        .map(|f| std::fs::read_to_string(tls.join(f)).unwrap())
        .collect();

    let b = ClusterPki::load_or_create(&tls, &sans()).unwrap();
    assert_eq!(a.ca_cert_pem(), b.ca_cert_pem());
    assert_eq!(a.serving_cert_pem(), b.serving_cert_pem());
    assert_eq!(a.serving_key_pem(), b.serving_key_pem());
    assert_eq!(a.admin_cert_pem(), b.admin_cert_pem());
    assert_eq!(a.admin_key_pem(), b.admin_key_pem());
    let after: Vec<String> = FILES
        .iter()
        .map(|f| std::fs::read_to_string(tls.join(f)).unwrap())
        .collect();
    assert_eq!(before, after, "files rewritten on reload");

    // The CA is self-signed tugboat-ca and a CA; leaves are issued by it.
    let ca_der = der(a.ca_cert_pem());
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert_eq!(ca.subject().to_string(), "CN=tugboat-ca");
    assert!(ca.is_ca());
    let years = (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp())
        / (365 * 86400);
    assert_eq!(years, 10);
    let serving_der = der(a.serving_cert_pem());
    let (_, serving) = x509_parser::parse_x509_certificate(&serving_der).unwrap();
    assert_eq!(serving.issuer().to_string(), "CN=tugboat-ca");
    assert!(!serving.is_ca());
}

#[test]
fn serving_cert_has_requested_sans() {
    let dir = tempfile::tempdir().unwrap();
    let mut want = sans();
    want.push("api.example.com");
    want.push("203.0.113.7");
    want.push("2001:db8::7");
    let pki = ClusterPki::load_or_create(dir.path(), &want).unwrap();
    let (dns, ips) = cert_sans(pki.serving_cert_pem());
    for d in [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "api.example.com",
    ] {
        assert!(dns.iter().any(|x| x == d), "missing DNS SAN {d}: {dns:?}");
    }
    for ip in [
        "127.0.0.1",
        "::1",
        "10.43.0.1",
        "203.0.113.7",
        "2001:db8::7",
    ] {
        assert!(
            ips.contains(&ip.parse().unwrap()),
            "missing IP SAN {ip}: {ips:?}"
        );
    }
    // Everything requested, including the discovered hostname/addresses.
    assert!(want.dns_names.iter().all(|d| dns.contains(d)));
    assert!(want.ips.iter().all(|i| ips.contains(i)));
}

#[test]
fn serving_cert_reissued_only_when_sans_grow() {
    let dir = tempfile::tempdir().unwrap();
    let base = sans();
    let a = ClusterPki::load_or_create(dir.path(), &base).unwrap();

    let mut more = base.clone();
    more.push("192.0.2.50");
    let b = ClusterPki::load_or_create(dir.path(), &more).unwrap();
    assert_eq!(a.ca_cert_pem(), b.ca_cert_pem(), "CA must be kept");
    assert_eq!(
        a.admin_cert_pem(),
        b.admin_cert_pem(),
        "admin cert must be kept"
    );
    assert_ne!(
        a.serving_cert_pem(),
        b.serving_cert_pem(),
        "serving cert must be reissued"
    );
    assert!(
        cert_sans(b.serving_cert_pem())
            .1
            .contains(&"192.0.2.50".parse().unwrap())
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("serving.crt")).unwrap(),
        b.serving_cert_pem()
    );

    // Asking for a subset of what is covered does not churn the cert.
    let c = ClusterPki::load_or_create(dir.path(), &base).unwrap();
    assert_eq!(b.serving_cert_pem(), c.serving_cert_pem());
}

#[test]
fn broken_leaf_is_reissued_but_missing_ca_key_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = ClusterPki::load_or_create(dir.path(), &sans()).unwrap();
    // A serving key that does not match its cert gets both replaced.
    std::fs::copy(dir.path().join("admin.key"), dir.path().join("serving.key")).unwrap();
    let b = ClusterPki::load_or_create(dir.path(), &sans()).unwrap();
    assert_eq!(a.ca_cert_pem(), b.ca_cert_pem());
    assert_ne!(a.serving_cert_pem(), b.serving_cert_pem());

    std::fs::remove_file(dir.path().join("ca.key")).unwrap();
    let err = ClusterPki::load_or_create(dir.path(), &sans()).unwrap_err();
    assert!(format!("{err:#}").contains("ca.key"), "{err:#}");
}

#[test]
fn admin_and_issued_client_identities() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(dir.path(), &sans()).unwrap();
    let admin = der(pki.admin_cert_pem());
    let (_, x) = x509_parser::parse_x509_certificate(&admin).unwrap();
    assert_eq!(
        x.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "system:admin"
    );
    assert_eq!(
        x.subject()
            .iter_organization()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "system:masters"
    );
    assert_eq!(
        identity_from_cert(&admin),
        Some(PeerIdentity {
            user: "system:admin".into(),
            groups: vec!["system:masters".into()]
        })
    );

    let (cert, key) = pki
        .issue_client_cert("system:node:n1", &["system:nodes"])
        .unwrap();
    assert!(key.contains("PRIVATE KEY"));
    assert_eq!(
        identity_from_cert(&der(&cert)),
        Some(PeerIdentity {
            user: "system:node:n1".into(),
            groups: vec!["system:nodes".into()]
        })
    );
    let (cert, _) = pki.issue_client_cert("system:kube-proxy", &[]).unwrap();
    assert_eq!(
        identity_from_cert(&der(&cert)),
        Some(PeerIdentity {
            user: "system:kube-proxy".into(),
            groups: vec![]
        })
    );
    assert!(pki.issue_client_cert("", &[]).is_err());
    assert!(pki.issue_client_cert("u", &["a", "b"]).is_err());
    assert_eq!(identity_from_cert(b"not a cert"), None);

    let mut s = ServingSans::default();
    s.push("node1");
    s.push("192.0.2.9");
    let (cert, _) = pki.issue_serving_cert(&s).unwrap();
    assert_eq!(
        cert_sans(&cert),
        (
            vec!["node1".to_string()],
            vec!["192.0.2.9".parse().unwrap()]
        )
    );
}

/// Runs one TLS handshake over an in-memory pipe; returns the server's view
/// (the identity from the verified client cert, if any) or the server's error.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> Result<Option<PeerIdentity>, std::io::Error> {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from("kubernetes.default.svc").unwrap();
    let (client_res, server_res) = tokio::join!(
        TlsConnector::from(client).connect(name, c),
        TlsAcceptor::from(server).accept(s)
    );
    let server_stream = server_res?;
    let (_, conn) = server_stream.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    let _client_stream = client_res.expect("client side failed although server accepted");
    Ok(conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| identity_from_cert(c)))
}

#[tokio::test]
async fn server_accepts_our_clients_and_anonymous_rejects_foreign_ca() {
    let ours_dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let ours = ClusterPki::load_or_create(ours_dir.path(), &sans()).unwrap();
    // Same CA name, different key: only the signature tells them apart.
    let other = ClusterPki::load_or_create(other_dir.path(), &sans()).unwrap();
    let server = ours.server_tls_config();

    let admin = ours
        .client_tls_config(Some((ours.admin_cert_pem(), ours.admin_key_pem())))
        .unwrap();
    assert_eq!(
        handshake(server.clone(), admin).await.unwrap(),
        Some(PeerIdentity {
            user: "system:admin".into(),
            groups: vec!["system:masters".into()]
        })
    );

    let (cert, key) = ours
        .issue_client_cert("system:node:n1", &["system:nodes"])
        .unwrap();
    let node = ours.client_tls_config(Some((&cert, &key))).unwrap();
    assert_eq!(
        handshake(server.clone(), node).await.unwrap().unwrap().user,
        "system:node:n1"
    );

    let anonymous = ours.client_tls_config(None).unwrap();
    assert_eq!(handshake(server.clone(), anonymous).await.unwrap(), None);

    // Trusts our server but presents a cert from another CA.
    let foreign = ours
        .client_tls_config(Some((other.admin_cert_pem(), other.admin_key_pem())))
        .unwrap();
    let err = handshake(server.clone(), foreign).await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("cert"),
        "unexpected error: {err}"
    );

    // And a client trusting only the other CA refuses our server.
    let distrustful = other.client_tls_config(None).unwrap();
    let (c, s) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from("localhost").unwrap();
    let (client_res, _) = tokio::join!(
        TlsConnector::from(distrustful).connect(name, c),
        TlsAcceptor::from(server).accept(s)
    );
    assert!(client_res.is_err());
}

fn parse_yaml(s: &str) -> serde_json::Value {
    serde_saphyr::from_str(s).expect("kubeconfig is not valid YAML")
}

#[test]
fn kubeconfig_has_inline_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(dir.path(), &sans()).unwrap();
    let kc = pki.admin_kubeconfig("https://127.0.0.1:6443", "tugboat: \"odd\" name");
    let v = parse_yaml(&kc);
    let b64 = |v: &serde_json::Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(v["current-context"], "default");
    assert_eq!(v["clusters"][0]["name"], "tugboat: \"odd\" name");
    assert_eq!(
        v["clusters"][0]["cluster"]["server"],
        "https://127.0.0.1:6443"
    );
    assert_eq!(
        b64(&v["clusters"][0]["cluster"]["certificate-authority-data"]),
        pki.ca_cert_pem()
    );
    assert_eq!(v["users"][0]["name"], "default");
    assert_eq!(
        b64(&v["users"][0]["user"]["client-certificate-data"]),
        pki.admin_cert_pem()
    );
    assert_eq!(
        b64(&v["users"][0]["user"]["client-key-data"]),
        pki.admin_key_pem()
    );
    assert_eq!(v["contexts"][0]["name"], "default");
    assert_eq!(
        v["contexts"][0]["context"]["cluster"],
        "tugboat: \"odd\" name"
    );
    assert_eq!(v["contexts"][0]["context"]["user"], "default");

    let path = dir.path().join("a/b/kubeconfig.yaml");
    write_kubeconfig(&path, &kc).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), kc);
    // Overwrite keeps 0600 even if the old file was more permissive.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_kubeconfig(&path, &kc).unwrap();
    assert_eq!(mode(&path), 0o600);
}

const KUBECTL: &str = "/usr/bin/kubectl";

/// kubectl itself reads the kubeconfig, trusts our CA for 127.0.0.1, and
/// presents the admin cert, which our server config verifies.
#[tokio::test]
async fn real_kubectl_uses_the_kubeconfig() {
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipping: {KUBECTL} not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(&dir.path().join("tls"), &sans()).unwrap();

    // A minimal HTTP/1.1 server echoing the verified identity. ALPN is
    // narrowed to http/1.1 only because this test server does not speak h2.
    let mut config = (*pki.server_tls_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let who = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| identity_from_cert(c))
                    .map(|i| format!("{}/{}", i.user, i.groups.join(",")))
                    .unwrap_or_else(|| "anonymous".into());
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{who}",
                    who.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });

    let kc_path = dir.path().join("kubeconfig.yaml");
    write_kubeconfig(
        &kc_path,
        &pki.admin_kubeconfig(&format!("https://127.0.0.1:{port}"), "tugboat"),
    )
    .unwrap();
    let run = |args: Vec<String>| {
        let home = dir.path().to_path_buf();
        async move {
            tokio::process::Command::new(KUBECTL)
                .args(&args)
                .env("HOME", &home)
                .env_remove("KUBECONFIG")
                .output()
                .await
                .unwrap()
        }
    };
    let kc = kc_path.to_str().unwrap().to_string();

    let out = run(vec![
        "--kubeconfig".into(),
        kc.clone(),
        "config".into(),
        "view".into(),
        "--raw".into(),
        "-o".into(),
        "json".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "kubectl config view: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["current-context"], "default");
    assert_eq!(
        v["clusters"][0]["cluster"]["server"],
        format!("https://127.0.0.1:{port}")
    );
    assert!(
        v["users"][0]["user"]["client-key-data"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );

    let out = run(vec![
        "--kubeconfig".into(),
        kc,
        "get".into(),
        "--raw".into(),
        "/whoami".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "kubectl get --raw: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "system:admin/system:masters"
    );
}

/// The API server shares one `ClusterPki` across tasks.
#[test]
fn cluster_pki_is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<ClusterPki>();
}

/// A kubelet's serving certificate: requested by the node (its key never
/// leaves it), signed by the cluster CA; the kubelet's server then requires a
/// CA-signed client certificate, and the API server's kubelet client
/// verifies the kubelet by the CA and the address it dialled.
#[tokio::test]
async fn kubelet_serving_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(dir.path(), &sans()).unwrap();
    let other = ClusterPki::load_or_create(other_dir.path(), &sans()).unwrap();
    let signer = pki.kubelet_signer();
    assert_eq!(signer.ca_cert_pem(), pki.ca_cert_pem());

    let mut node_sans = ServingSans::default();
    node_sans.push("node-1");
    node_sans.push("192.0.2.7");
    let (csr, key) = tug_pki::kubelet_serving_request("node-1", &node_sans).unwrap();
    let cert = signer.sign_kubelet_serving(&csr, "node-1").unwrap();
    assert_eq!(
        cert_sans(&cert),
        (vec!["node-1".to_string()], vec!["192.0.2.7".parse().unwrap()])
    );
    assert_eq!(
        identity_from_cert(&der(&cert)),
        Some(PeerIdentity {
            user: "system:node:node-1".into(),
            groups: vec!["system:nodes".into()]
        })
    );
    // Garbage, a tampered request and a request without names are refused.
    assert!(signer.sign_kubelet_serving("not a csr", "node-1").is_err());
    let (csr_none, _) = tug_pki::kubelet_serving_request("node-1", &ServingSans::default()).unwrap();
    assert!(signer.sign_kubelet_serving(&csr_none, "node-1").is_err());
    assert!(signer.sign_kubelet_serving(&csr, "").is_err());
    let mut tampered = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    let n = tampered.len();
    tampered[n - 5] ^= 0x55;
    let tampered_pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(&tampered)
    );
    assert!(signer.sign_kubelet_serving(&tampered_pem, "node-1").is_err());

    let server = tug_pki::mutual_tls_server_config(pki.ca_cert_pem(), &cert, &key).unwrap();
    let connect = |client: Arc<rustls::ClientConfig>, server: Arc<ServerConfig>, name: &'static str| async move {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from(name).unwrap();
        let (client_res, server_res) = tokio::join!(
            TlsConnector::from(client).connect(name, c),
            TlsAcceptor::from(server).accept(s)
        );
        match (client_res, server_res) {
            (Ok(mut c), Ok(mut s)) => {
                // A round trip proves both sides completed the handshake.
                c.write_all(b"x").await.unwrap();
                c.flush().await.unwrap();
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await.unwrap();
                let (_, conn) = s.get_ref();
                Ok(conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| identity_from_cert(c)))
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    };
    let apiserver = pki.kubelet_client_tls_config().unwrap();
    assert_eq!(apiserver.alpn_protocols, vec![b"http/1.1".to_vec()]);
    let who = connect(apiserver.clone(), server.clone(), "192.0.2.7").await.unwrap().unwrap();
    assert_eq!(who.user, "kube-apiserver-kubelet-client");
    assert_eq!(who.groups, vec!["system:masters".to_string()]);
    // The kubelet's certificate does not cover another address.
    assert!(connect(apiserver.clone(), server.clone(), "192.0.2.8").await.is_err());
    // No client certificate, or one from another CA: refused.
    assert!(connect(pki.client_tls_config(None).unwrap(), server.clone(), "192.0.2.7").await.is_err());
    let foreign = pki
        .client_tls_config(Some((other.admin_cert_pem(), other.admin_key_pem())))
        .unwrap();
    assert!(connect(foreign, server.clone(), "192.0.2.7").await.is_err());
    // A kubelet signed by another CA is not trusted by the API server.
    let (csr2, key2) = tug_pki::kubelet_serving_request("node-1", &node_sans).unwrap();
    let cert2 = other.kubelet_signer().sign_kubelet_serving(&csr2, "node-1").unwrap();
    let impostor = tug_pki::mutual_tls_server_config(pki.ca_cert_pem(), &cert2, &key2).unwrap();
    assert!(connect(apiserver, impostor, "192.0.2.7").await.is_err());
}

/// A kubelet client certificate issued for a joining node: the node's
/// identity, client authentication only (the API server's TLS accepts it),
/// and what an agent checks before reusing it.
#[tokio::test]
async fn kubelet_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(dir.path(), &sans()).unwrap();
    let other = ClusterPki::load_or_create(other_dir.path(), &sans()).unwrap();
    let (cert, key) = pki.kubelet_signer().issue_kubelet_client("node-7").unwrap();
    let node = PeerIdentity { user: "system:node:node-7".into(), groups: vec!["system:nodes".into()] };
    assert_eq!(identity_from_cert(&der(&cert)), Some(node.clone()));
    let cert_der = der(&cert);
    let (_, x) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
    let eku = x.extended_key_usage().unwrap().expect("extended key usage").value;
    assert!(eku.client_auth && !eku.server_auth, "{eku:?}");
    assert!(pki.kubelet_signer().issue_kubelet_client("").is_err());

    let info = tug_pki::check_client_cert(pki.ca_cert_pem(), &cert, &key).unwrap();
    assert_eq!(info.identity, node);
    let left = info.not_after.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left > std::time::Duration::from_secs(364 * 24 * 3600), "{left:?}");
    // Another CA, another key, garbage: refused.
    let err = tug_pki::check_client_cert(other.ca_cert_pem(), &cert, &key).unwrap_err();
    assert!(format!("{err:#}").contains("not issued by this CA"), "{err:#}");
    let (_, key2) = pki.kubelet_signer().issue_kubelet_client("node-7").unwrap();
    assert!(tug_pki::check_client_cert(pki.ca_cert_pem(), &cert, &key2).is_err());
    assert!(tug_pki::check_client_cert(pki.ca_cert_pem(), "junk", &key).is_err());

    // The API server's TLS (client certificates optional, verified by the CA)
    // identifies the node by it.
    let (c, s) = tokio::io::duplex(64 * 1024);
    let client = pki.client_tls_config(Some((&cert, &key))).unwrap();
    let (client_res, server_res) = tokio::join!(
        TlsConnector::from(client).connect(ServerName::try_from("localhost").unwrap(), c),
        TlsAcceptor::from(pki.server_tls_config()).accept(s)
    );
    let mut c = client_res.unwrap();
    let mut s = server_res.unwrap();
    c.write_all(b"x").await.unwrap();
    c.flush().await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    let peer = s.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| identity_from_cert(c));
    assert_eq!(peer, Some(node));
}
