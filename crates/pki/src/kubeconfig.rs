//! Kubeconfig rendering and writing.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Renders a kubeconfig with one cluster, one user and one context, all
/// credentials inlined (`*-data`, base64 of the PEM) so the file is
/// self-contained and can be copied off the host. The context and user are
/// named `default` like k3s, so `kubectl` works without `--context`.
pub fn render_kubeconfig(
    server_url: &str,
    cluster_name: &str,
    ca_pem: &str,
    client_cert_pem: &str,
    client_key_pem: &str,
) -> String {
    // JSON strings are valid YAML double-quoted scalars, so serde_json gives
    // correct quoting for arbitrary names and URLs.
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let b64 = |s: &str| STANDARD.encode(s.as_bytes());
    let cluster = q(cluster_name);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    certificate-authority-data: {ca}
    server: {server}
users:
- name: default
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: default
  context:
    cluster: {cluster}
    user: default
current-context: default
preferences: {{}}
",
        ca = b64(ca_pem),
        server = q(server_url),
        cert = b64(client_cert_pem),
        key = b64(client_key_pem),
    )
}

/// Writes a kubeconfig with mode 0600 (it holds a private key), creating
/// parent directories. Written to a temporary file and renamed into place so
/// a concurrent `kubectl` never sees a half-written file.
pub fn write_kubeconfig(path: &Path, contents: &str) -> anyhow::Result<()> {
    write_private(path, contents.as_bytes())
        .with_context(|| format!("writing kubeconfig {}", path.display()))
}

/// Atomically writes `data` to `path` readable only by the owner.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic(path, data, 0o600)
}

pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}
