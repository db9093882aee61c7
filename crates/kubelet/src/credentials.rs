//! Image pull credentials from the pod's `imagePullSecrets` (upstream's
//! credentialprovider keyring): `kubernetes.io/dockerconfigjson` secrets
//! (`{"auths": {REGISTRY: {...}}}` under `.dockerconfigjson`) and legacy
//! `kubernetes.io/dockercfg` ones (`{REGISTRY: {...}}` under `.dockercfg`).
//! A key matches an image when its host (and port) equal the image's
//! registry — a `*.` label wildcard matches one label — and its path, if
//! any, is a prefix of the image's repository; `docker.io`,
//! `index.docker.io` and `https://index.docker.io/v1/` all name Docker Hub.
//! Every matching credential becomes a CRI `AuthConfig` for the image's
//! registry; the pod worker tries them in turn, as upstream does.
//!
//! When the pod names no pull secrets its ServiceAccount's are used (what
//! upstream's ServiceAccount admission copies into the pod).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

use crate::cri::v1 as c;

/// One `auths` entry of a docker config.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct DockerAuth {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// base64 of `user:password`.
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default, alias = "identitytoken")]
    pub identity_token: Option<String>,
    #[serde(default, alias = "registrytoken")]
    pub registry_token: Option<String>,
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

/// The registry entries of a pull secret; `Err` says why it is unusable.
pub fn secret_entries(s: &Secret) -> Result<Vec<(String, DockerAuth)>, String> {
    let name = s.metadata.name.as_deref().unwrap_or("");
    let data = |key: &str| -> Option<Vec<u8>> {
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .or_else(|| {
                s.string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|v| v.clone().into_bytes())
            })
    };
    let ty = s.type_.as_deref().unwrap_or("");
    let (json, legacy) = match ty {
        "kubernetes.io/dockerconfigjson" => (data(".dockerconfigjson"), false),
        "kubernetes.io/dockercfg" => (data(".dockercfg"), true),
        // Upstream reads the keys whatever the type says.
        _ => match data(".dockerconfigjson") {
            Some(d) => (Some(d), false),
            None => (data(".dockercfg"), true),
        },
    };
    let json = json.ok_or_else(|| {
        format!("secret {name:?} has no .dockerconfigjson or .dockercfg key")
    })?;
    let auths: BTreeMap<String, DockerAuth> = if legacy {
        serde_json::from_slice(&json)
    } else {
        serde_json::from_slice::<DockerConfigJson>(&json).map(|c| c.auths)
    }
    .map_err(|e| format!("secret {name:?}: invalid docker config: {e}"))?;
    Ok(auths.into_iter().collect())
}

/// `(host, path)` of a keyring key: scheme, `/v1/`-style suffixes and
/// Docker Hub's aliases normalized.
fn parse_key(key: &str) -> (String, String) {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let (host, path) = k.split_once('/').unwrap_or((k, ""));
    let mut path = path.trim_end_matches('/').to_string();
    // `index.docker.io/v1/`, `registry.example/v2/`: API versions, not repositories.
    if path == "v1" || path == "v2" {
        path.clear();
    }
    let host = host.to_ascii_lowercase();
    (normalize_host(&host), path)
}

fn normalize_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        h => h.to_string(),
    }
}

/// `(registry host, repository)` of an image reference, Docker Hub's
/// implicit `library/` included.
pub fn image_repo(image: &str) -> (String, String) {
    let host = crate::containerd::registry_host(image).to_string();
    let rest = if image.starts_with(&format!("{host}/")) {
        &image[host.len() + 1..]
    } else {
        image
    };
    // Drop the digest, then the tag (a ':' after the last '/').
    let rest = rest.split('@').next().unwrap_or(rest);
    let rest = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => &rest[..i],
        _ => rest,
    };
    let host = normalize_host(&host.to_ascii_lowercase());
    let repo = if host == "docker.io" && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest.to_string()
    };
    (host, repo)
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let split = |h: &str| -> (String, String) {
        match h.rsplit_once(':') {
            Some((n, p)) if !n.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
                (n.to_string(), p.to_string())
            }
            _ => (h.to_string(), String::new()),
        }
    };
    let (pn, pp) = split(pattern);
    let (hn, hp) = split(host);
    if pp != hp {
        return false;
    }
    let pl: Vec<&str> = pn.split('.').collect();
    let hl: Vec<&str> = hn.split('.').collect();
    pl.len() == hl.len()
        && pl
            .iter()
            .zip(&hl)
            .all(|(p, h)| *p == *h || (*p == "*" && !h.is_empty()))
}

fn path_matches(prefix: &str, repo: &str) -> bool {
    prefix.is_empty()
        || repo == prefix
        || repo.starts_with(&format!("{prefix}/"))
}

/// The CRI `server_address` for a registry host: a URL whose host is the
/// one containerd contacts (Docker Hub's is `registry-1.docker.io`).
/// containerd 1.6 parses it with `url.Parse` and sends the credentials only
/// to that host; a bare `host:port` fails to parse there ("first path
/// segment in URL cannot contain colon"), hence the scheme.
pub fn server_address(host: &str) -> String {
    if normalize_host(host) == "docker.io" {
        "https://registry-1.docker.io".into()
    } else {
        format!("https://{host}")
    }
}

/// The CRI auth of one entry for `host`.
pub fn auth_config(a: &DockerAuth, host: &str) -> c::AuthConfig {
    let (mut user, mut pass) = (
        a.username.clone().unwrap_or_default(),
        a.password.clone().unwrap_or_default(),
    );
    if user.is_empty()
        && let Some(decoded) = a.auth.as_deref().and_then(decode_basic)
    {
        (user, pass) = decoded;
    }
    c::AuthConfig {
        username: user,
        password: pass,
        auth: a.auth.clone().unwrap_or_default(),
        server_address: server_address(host),
        identity_token: a.identity_token.clone().unwrap_or_default(),
        registry_token: a.registry_token.clone().unwrap_or_default(),
    }
}

/// `user:password` from the base64 `auth` field.
fn decode_basic(b64: &str) -> Option<(String, String)> {
    let bytes = base64_decode(b64.trim())?;
    let s = String::from_utf8(bytes).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let clean: Vec<u8> = s.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            n |= val(*b)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

/// The credentials of `secrets` for `image`, most specific key first (a
/// longer path before a shorter one, as upstream's keyring sorts them),
/// secrets in the pod's order otherwise.
pub fn lookup(entries: &[(String, DockerAuth)], image: &str) -> Vec<c::AuthConfig> {
    let (host, repo) = image_repo(image);
    let mut found: Vec<(usize, usize, c::AuthConfig)> = Vec::new();
    for (i, (key, a)) in entries.iter().enumerate() {
        let (kh, kp) = parse_key(key);
        if host_matches(&kh, &host) && path_matches(&kp, &repo) {
            let cfg = auth_config(a, &host);
            if !found.iter().any(|(_, _, f)| *f == cfg) {
                found.push((kp.len(), i, cfg));
            }
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    found.into_iter().map(|(_, _, a)| a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn secret(ty: &str, key: &str, value: serde_json::Value) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("s".into()),
                ..Default::default()
            },
            type_: Some(ty.into()),
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(value.to_string().into_bytes()),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn docker_config_json_to_auth() {
        let s = secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            json!({"auths": {
                "127.0.0.1:5001": {"username": "u", "password": "p"},
                "https://index.docker.io/v1/": {"auth": "aHViOmh1YnB3"},
                "quay.io/team": {"username": "team", "password": "t"},
                "quay.io": {"username": "any", "password": "a"},
                "*.example.com": {"identitytoken": "tok"},
            }}),
        );
        let e = secret_entries(&s).unwrap();
        let a = lookup(&e, "127.0.0.1:5001/private/busybox:v1");
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].username.as_str(), a[0].password.as_str()), ("u", "p"));
        assert_eq!(a[0].server_address, "https://127.0.0.1:5001");
        // Another port is another registry.
        assert!(lookup(&e, "127.0.0.1:5000/busybox:latest").is_empty());
        assert!(lookup(&e, "127.0.0.1/busybox").is_empty());
        // Docker Hub: `auth` decoded, every spelling of the host.
        for img in ["busybox", "library/busybox:1", "docker.io/library/busybox", "index.docker.io/x/y"] {
            let a = lookup(&e, img);
            assert_eq!(a.len(), 1, "{img}");
            assert_eq!((a[0].username.as_str(), a[0].password.as_str()), ("hub", "hubpw"));
            assert_eq!(a[0].server_address, "https://registry-1.docker.io");
        }
        // Path prefixes: the more specific first, both offered.
        let a = lookup(&e, "quay.io/team/app:1");
        assert_eq!(a.iter().map(|a| a.username.as_str()).collect::<Vec<_>>(), ["team", "any"]);
        let a = lookup(&e, "quay.io/teammate/app");
        assert_eq!(a.iter().map(|a| a.username.as_str()).collect::<Vec<_>>(), ["any"]);
        // A wildcard matches one label.
        assert_eq!(lookup(&e, "r.example.com/a")[0].identity_token, "tok");
        assert!(lookup(&e, "a.b.example.com/a").is_empty());
        assert!(lookup(&e, "example.com/a").is_empty());
    }

    #[test]
    fn legacy_dockercfg_and_bad_secrets() {
        let s = secret(
            "kubernetes.io/dockercfg",
            ".dockercfg",
            json!({"http://127.0.0.1:5001": {"auth": "dTpw", "email": "x@y"}}),
        );
        let a = lookup(&secret_entries(&s).unwrap(), "127.0.0.1:5001/a/b@sha256:00");
        assert_eq!((a[0].username.as_str(), a[0].password.as_str()), ("u", "p"));
        // Missing key, broken JSON: errors, never panics.
        let mut none = s.clone();
        none.data = None;
        assert!(secret_entries(&none).is_err());
        let mut broken = s.clone();
        broken.data = Some(BTreeMap::from([(
            ".dockercfg".to_string(),
            ByteString(b"{not json".to_vec()),
        )]));
        assert!(secret_entries(&broken).is_err());
        // A bad `auth` leaves the user empty instead of failing.
        let e = vec![("h:1".to_string(), DockerAuth { auth: Some("!!".into()), ..Default::default() })];
        assert_eq!(lookup(&e, "h:1/x")[0].username, "");
    }

    #[test]
    fn image_references() {
        assert_eq!(image_repo("busybox"), ("docker.io".into(), "library/busybox".into()));
        assert_eq!(image_repo("a/b:1"), ("docker.io".into(), "a/b".into()));
        assert_eq!(
            image_repo("127.0.0.1:5001/p/busybox:v1"),
            ("127.0.0.1:5001".into(), "p/busybox".into())
        );
        assert_eq!(image_repo("quay.io/x@sha256:ab"), ("quay.io".into(), "x".into()));
        assert_eq!(base64_decode("aHViOmh1YnB3").unwrap(), b"hub:hubpw");
        assert!(base64_decode("a").is_none());
    }
}
