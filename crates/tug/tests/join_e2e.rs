//! End to end: agents join with the node token, as k3s agents do. The real
//! `tug server` writes `<data-dir>/server/node-token`; `/cacerts` serves the
//! CA it pins to anyone; its password buys a kubelet client certificate that
//! kube-rs and the real kubectl then use; the agent's bootstrap
//! (`tug::join::bootstrap`) and the real `tug agent --server --token` write
//! a working kubeconfig, reuse it on restart, and refuse a token whose CA
//! hash does not match.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tug::join::{Credentials, JoinError};
use tug_testkit::{Backend, TugServer};

/// The hex SHA-256 of `data`, by coreutils (not by the code under test).
fn sha256sum(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("running sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// One HTTPS request to the server, verified against its CA, without a
/// client certificate. Returns the status, the `WWW-Authenticate` header
/// and the body.
async fn https(port: u16, ca_pem: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Option<String>, String) {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS to the API server without a client certificate");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header("host", format!("127.0.0.1:{port}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender.send_request(req.body(Full::new(bytes::Bytes::new())).unwrap()).await.unwrap();
    let status = resp.status();
    let www = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, www, String::from_utf8(body.to_vec()).unwrap())
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn assert_unauthorized_status(code: StatusCode, body: &str) {
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    let status: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not a Status ({e}): {body}"));
    assert_eq!(status["kind"], "Status", "{body}");
    assert_eq!(status["apiVersion"], "v1", "{body}");
    assert_eq!(status["status"], "Failure", "{body}");
    assert_eq!(status["reason"], "Unauthorized", "{body}");
    assert_eq!(status["code"], 401, "{body}");
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new(tug_testkit::kubectl_binary())
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", kubeconfig.parent().unwrap())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What a node's credentials must allow: the version, and creating and
/// reading its Node, through kube-rs and through the real kubectl.
async fn works_as_node(kubeconfig: &Path, node: &str) {
    let c = client(kubeconfig).await;
    let v = c.apiserver_version().await.expect("GET /version with the node's certificate");
    assert!(v.git_version.contains("tugboat"), "{v:?}");
    let nodes: Api<Node> = Api::all(c);
    let mut n = Node::default();
    n.metadata.name = Some(node.to_string());
    nodes.create(&PostParams::default(), &n).await.unwrap_or_else(|e| panic!("creating Node {node}: {e}"));
    assert_eq!(nodes.get(node).await.unwrap().metadata.name.as_deref(), Some(node));
    let version: Value = serde_json::from_str(&kubectl(kubeconfig, &["get", "--raw", "/version"])).unwrap();
    assert_eq!(version["major"], "1");
    assert_eq!(kubectl(kubeconfig, &["get", "node", node, "-o", "name"]).trim(), format!("node/{node}"));
}

/// The kubeconfig's client certificate and CA (PEM).
fn kubeconfig_credentials(path: &Path) -> (String, String, String) {
    let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let data = |p: &str| String::from_utf8(base64::engine::general_purpose::STANDARD.decode(doc.pointer(p).unwrap().as_str().unwrap()).unwrap()).unwrap();
    (
        data("/clusters/0/cluster/certificate-authority-data"),
        data("/users/0/user/client-certificate-data"),
        data("/users/0/user/client-key-data"),
    )
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_join_with_the_node_token() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut s = tokio::task::spawn_blocking(|| TugServer::start(env!("CARGO_BIN_EXE_tug").as_ref(), Backend::Sqlite))
        .await
        .unwrap();
    let token_path = s.data_dir.join("server/node-token");
    let token = std::fs::read_to_string(&token_path).expect("tug server writes server/node-token").trim().to_string();
    assert_eq!(mode(&token_path), 0o600);
    // K10<sha256 of the CA PEM>::node:<password>
    let (hash, creds) = token.strip_prefix("K10").and_then(|t| t.split_once("::")).unwrap_or_else(|| panic!("not a secure token: {token}"));
    let (user, password) = creds.split_once(':').unwrap();
    assert_eq!(user, "node");
    assert!(password.len() >= 32 && password.bytes().all(|b| b.is_ascii_alphanumeric()), "{password}");
    let ca = std::fs::read_to_string(s.data_dir.join("tls/ca.crt")).unwrap();
    assert_eq!(hash, sha256sum(ca.as_bytes()), "the token pins the cluster CA");
    let port = s.port;
    let url = format!("https://127.0.0.1:{port}");

    // (a) /cacerts, without a client certificate: the CA the token pins.
    let (code, _, body) = https(port, &ca, "GET", "/cacerts", &[]).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body, ca);
    assert_eq!(sha256sum(body.as_bytes()), hash);
    // Everything else still needs credentials.
    let (code, _, body) = https(port, &ca, "GET", "/api/v1/nodes", &[]).await;
    assert_unauthorized_status(code, &body);

    // (c) A wrong or missing password: 401 with a Status.
    let path = "/v1-tugboat/client-kubelet.crt";
    for auth in [basic("node", "wrong"), basic("node", ""), basic("server", password), format!("Bearer {password}x"), String::new()] {
        let mut headers = vec![("Tugboat-Node-Name", "joiner")];
        if !auth.is_empty() {
            headers.push(("Authorization", auth.as_str()));
        }
        let (code, www, body) = https(port, &ca, "POST", path, &headers).await;
        assert_unauthorized_status(code, &body);
        assert_eq!(www.as_deref(), Some("Basic realm=\"tugboat\""));
    }
    // The right password but no node name, or one that is not a DNS-1123 subdomain: 400.
    let right = basic("node", password);
    for name in [None, Some("Bad_Name"), Some("-x"), Some("a..b")] {
        let mut headers = vec![("Authorization", right.as_str())];
        if let Some(n) = name {
            headers.push(("Tugboat-Node-Name", n));
        }
        let (code, _, body) = https(port, &ca, "POST", path, &headers).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{name:?}: {body}");
        let status: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((status["kind"].as_str(), status["reason"].as_str()), (Some("Status"), Some("BadRequest")), "{body}");
    }

    // (b) The right password (Basic as k3s, or Bearer): a certificate for
    // system:node:<name> in system:nodes, then its key, that works.
    let dir = tempfile::tempdir().unwrap();
    for (auth, node) in [(right.clone(), "joiner-basic"), (format!("Bearer {password}"), "joiner-bearer")] {
        let (code, _, body) = https(port, &ca, "POST", path, &[("Authorization", &auth), ("Tugboat-Node-Name", node)]).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let key_at = body.find("-----BEGIN PRIVATE KEY-----").unwrap_or_else(|| panic!("no key: {body}"));
        let (cert, key) = body.split_at(key_at);
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{body}");
        let info = tug_pki::check_client_cert(&ca, cert, key).expect("a certificate the cluster CA issued, matching the key");
        assert_eq!(info.identity.user, format!("system:node:{node}"));
        assert_eq!(info.identity.groups, ["system:nodes"]);
        let kubeconfig = dir.path().join(format!("{node}.kubeconfig"));
        std::fs::write(&kubeconfig, tug_pki::render_kubeconfig(&url, "default", &ca, cert, key)).unwrap();
        works_as_node(&kubeconfig, node).await;
    }

    // (d) The agent's bootstrap: a working kubeconfig, reused while good.
    let agent_dir = tempfile::tempdir().unwrap();
    let kc = tug::join::kubeconfig_path(agent_dir.path());
    assert_eq!(kc, agent_dir.path().join("agent/kubelet.kubeconfig"));
    assert_eq!(tug::join::bootstrap(&url, &token, "joined-1", &kc).await.unwrap(), Credentials::Issued);
    assert_eq!(mode(&kc), 0o600);
    let (kc_ca, cert, _) = kubeconfig_credentials(&kc);
    assert_eq!(kc_ca, ca);
    assert_eq!(tug_pki::identity_from_cert(CertificateDer::from_pem_slice(cert.as_bytes()).unwrap().as_ref()).unwrap().user, "system:node:joined-1");
    works_as_node(&kc, "joined-1").await;
    let written = std::fs::read_to_string(&kc).unwrap();
    assert_eq!(tug::join::bootstrap(&url, &token, "joined-1", &kc).await.unwrap(), Credentials::Reused);
    assert_eq!(std::fs::read_to_string(&kc).unwrap(), written, "a reused kubeconfig is not rewritten");
    // Another node name or another server: new credentials.
    assert_eq!(tug::join::bootstrap(&url, &token, "joined-2", &kc).await.unwrap(), Credentials::Issued);
    let (_, cert2, _) = kubeconfig_credentials(&kc);
    assert_eq!(tug_pki::identity_from_cert(CertificateDer::from_pem_slice(cert2.as_bytes()).unwrap().as_ref()).unwrap().user, "system:node:joined-2");
    let localhost = format!("https://localhost:{port}");
    assert_eq!(tug::join::bootstrap(&localhost, &token, "joined-2", &kc).await.unwrap(), Credentials::Issued);
    assert_eq!(tug::join::bootstrap(&localhost, &token, "joined-2", &kc).await.unwrap(), Credentials::Reused);

    // A token whose CA hash is not this cluster's: refused, nothing written,
    // and a kubeconfig already there is not reused with it either.
    let other_hash = sha256sum(b"another cluster's CA");
    let foreign = format!("K10{other_hash}::node:{password}");
    let fresh = agent_dir.path().join("fresh/kubelet.kubeconfig");
    let err = tug::join::bootstrap(&url, &foreign, "joined-3", &fresh).await.unwrap_err();
    assert!(matches!(err, JoinError::Rejected(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&other_hash) && msg.contains(hash) && msg.contains("refusing to join"), "{msg}");
    assert!(!fresh.exists());
    let before = std::fs::read_to_string(&kc).unwrap();
    assert!(matches!(tug::join::bootstrap(&localhost, &foreign, "joined-2", &kc).await, Err(JoinError::Rejected(_))));
    assert_eq!(std::fs::read_to_string(&kc).unwrap(), before);
    // The right CA hash with a wrong password: refused (401).
    let wrong_pw = format!("K10{hash}::node:not-the-password");
    let err = tug::join::bootstrap(&url, &wrong_pw, "joined-3", &fresh).await.unwrap_err();
    assert!(matches!(err, JoinError::Rejected(_)) && err.to_string().contains("401"), "{err:?}");
    assert!(!fresh.exists());
    // A bare password (no K10<hash>::): joins without checking the CA, as k3s.
    assert_eq!(tug::join::bootstrap(&url, password, "joined-3", &fresh).await.unwrap(), Credentials::Issued);
    works_as_node(&fresh, "joined-3").await;
    // No server there: worth retrying, not final.
    let closed = format!("https://127.0.0.1:{}", tug_testkit::free_port());
    let err = tug::join::bootstrap(&closed, &token, "joined-4", &agent_dir.path().join("x/kubelet.kubeconfig")).await.unwrap_err();
    assert!(matches!(err, JoinError::Unavailable(_)), "{err:?}");

    // The real `tug agent`: joins with --server and --token (here from
    // TUG_URL and TUG_TOKEN, with a stray KUBECONFIG it must ignore), writes
    // its kubeconfig before it needs a container runtime (there is none
    // here), and reuses it when restarted, also as `tug-agent` (the
    // agent-only binary, which parses its own command line).
    let cli_dir = tempfile::tempdir().unwrap();
    let cli_kc = cli_dir.path().join("agent/kubelet.kubeconfig");
    #[derive(Clone, Copy)]
    enum Bin {
        TugAgent,
        AgentOnly,
    }
    let agent = |bin: Bin, env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = match bin {
            Bin::TugAgent => {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_tug"));
                cmd.arg("agent");
                cmd
            }
            Bin::AgentOnly => Command::new(env!("CARGO_BIN_EXE_tug-agent")),
        };
        cmd.arg("--data-dir")
            .arg(cli_dir.path())
            .args(["--node-name", "cli-node", "--container-runtime-endpoint", "unix:///nonexistent/tug-join-test.sock"])
            .args(args)
            .env_remove("TUG_URL")
            .env_remove("TUG_TOKEN")
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .env("TUG_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    };
    // Runs an agent until its kubeconfig is there (or it exits); returns its log.
    let run_until_joined = |mut cmd: Command| {
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap();
        while !cli_kc.exists() && child.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < Duration::from_secs(60), "tug agent did not join");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let log = run_until_joined(agent(Bin::TugAgent, &[("TUG_URL", &url), ("TUG_TOKEN", &token)], &[]));
    assert!(cli_kc.exists(), "tug agent wrote no kubeconfig:\n{log}");
    assert!(log.contains("joined the cluster"), "{log}");
    assert!(!log.contains(password), "the agent must not log the password:\n{log}");
    works_as_node(&cli_kc, "cli-node").await;
    let written = std::fs::read_to_string(&cli_kc).unwrap();
    for bin in [Bin::TugAgent, Bin::AgentOnly] {
        let log = run_until_joined(agent(bin, &[], &["--server", &url, "--token", &token]));
        assert!(log.contains("reusing the agent's kubeconfig"), "{log}");
        assert_eq!(std::fs::read_to_string(&cli_kc).unwrap(), written);
        // Refusals: a token for another CA, --token without --server, and
        // --token with --kubeconfig.
        let out = agent(bin, &[], &["--server", &url, "--token", &foreign]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("refusing to join"), "{err}");
        let out = agent(bin, &[], &["--token", &token]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("--server"), "{err}");
        let out = agent(bin, &[], &["--server", &url, "--token", &token, "--kubeconfig", "/tmp/x"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("alternatives"), "{err}");
    }

    // The token survives a server restart unchanged.
    tokio::task::spawn_blocking(move || {
        s.kill_and_restart();
        s
    })
    .await
    .map(|s| {
        let again = std::fs::read_to_string(s.data_dir.join("server/node-token")).unwrap();
        assert_eq!(again.trim(), token, "the node token is kept across restarts");
    })
    .unwrap();
}
