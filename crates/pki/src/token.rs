//! The node join token (k3s's "secure" token format).
//!
//! `tug server` keeps one token in `<data-dir>/server/node-token`:
//! `K10<sha256 of the CA certificate PEM, hex>::node:<password>`. An agent
//! given the token fetches `/cacerts` without verifying the server, accepts
//! the CA only if its hash is the token's, then proves it holds the password
//! to get a kubelet client certificate. A bare password (no `K10<hash>::`)
//! is accepted too, as by k3s, but then the CA cannot be checked.

use std::fmt;
use std::path::Path;

use anyhow::{Context, bail};
use ring::rand::SecureRandom;

/// The prefix of a secure token (k3s's `K10`).
pub const TOKEN_PREFIX: &str = "K10";
/// The user name of node tokens (HTTP Basic `node:<password>`).
pub const NODE_TOKEN_USER: &str = "node";

/// The hex SHA-256 of a CA bundle, exactly as served by `/cacerts` (the
/// hash in a secure token).
pub fn ca_hash(ca_pem: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, ca_pem.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A parsed join token. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeToken {
    ca_hash: Option<String>,
    user: String,
    password: String,
}

impl fmt::Debug for NodeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeToken")
            .field("ca_hash", &self.ca_hash)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl NodeToken {
    /// A new token for the CA `ca_pem` with a random 128-bit password
    /// (32 hex digits, as k3s generates them).
    pub fn generate(ca_pem: &str) -> anyhow::Result<NodeToken> {
        let mut buf = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut buf)
            .map_err(|_| anyhow::anyhow!("no system randomness for the node token"))?;
        Ok(NodeToken {
            ca_hash: Some(ca_hash(ca_pem)),
            user: NODE_TOKEN_USER.to_string(),
            password: hex(&buf),
        })
    }

    /// Parses `K10<hash>::<user>:<password>`, `K10<hash>::<password>` or a
    /// bare `<password>` (surrounding whitespace ignored).
    pub fn parse(s: &str) -> anyhow::Result<NodeToken> {
        let s = s.trim();
        if s.is_empty() {
            bail!("the token is empty");
        }
        let (ca_hash, creds) = match s.strip_prefix(TOKEN_PREFIX).and_then(|r| r.split_once("::")) {
            Some((hash, creds)) => {
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("the token's CA hash is not a hex SHA-256 (K10<64 hex digits>::...)");
                }
                (Some(hash.to_ascii_lowercase()), creds)
            }
            None => (None, s),
        };
        let (user, password) = match creds.split_once(':') {
            Some((u, p)) if ca_hash.is_some() => (u.to_string(), p.to_string()),
            _ => (NODE_TOKEN_USER.to_string(), creds.to_string()),
        };
        if password.is_empty() {
            bail!("the token has no password");
        }
        Ok(NodeToken { ca_hash, user, password })
    }

    /// Reads the token at `path`, or creates one for `ca_pem` there (mode
    /// 0600). The password is kept across restarts; if the CA changed since
    /// the file was written, the file is rewritten with the new CA's hash
    /// and the same password.
    pub fn load_or_create(path: &Path, ca_pem: &str) -> anyhow::Result<NodeToken> {
        let want = ca_hash(ca_pem);
        let token = match std::fs::read_to_string(path) {
            Ok(s) => {
                let t = NodeToken::parse(&s).with_context(|| format!("parsing {}", path.display()))?;
                if t.ca_hash.as_deref() == Some(want.as_str()) && t.user == NODE_TOKEN_USER {
                    return Ok(t);
                }
                NodeToken { ca_hash: Some(want), user: NODE_TOKEN_USER.to_string(), password: t.password }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => NodeToken::generate(ca_pem)?,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        crate::kubeconfig::write_private(path, format!("{}\n", token.secret()).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(token)
    }

    /// The CA hash the token pins, if it is a secure token.
    pub fn ca_hash(&self) -> Option<&str> {
        self.ca_hash.as_deref()
    }

    /// The user name to present with the password (`node`).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The token as written in the file and given to agents.
    pub fn secret(&self) -> String {
        match &self.ca_hash {
            Some(h) => format!("{TOKEN_PREFIX}{h}::{}:{}", self.user, self.password),
            None => self.password.clone(),
        }
    }

    /// Whether `ca_pem` is the CA this token pins (`true` for a token
    /// without a hash: nothing to check).
    pub fn matches_ca(&self, ca_pem: &str) -> bool {
        self.ca_hash.as_deref().is_none_or(|h| h == ca_hash(ca_pem))
    }

    /// Whether `given` is the password, in time independent of where they
    /// differ (both are hashed first, so not of their lengths either).
    pub fn verify_password(&self, given: &str) -> bool {
        let a = ring::digest::digest(&ring::digest::SHA256, self.password.as_bytes());
        let b = ring::digest::digest(&ring::digest::SHA256, given.as_bytes());
        let diff = a.as_ref().iter().zip(b.as_ref()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(diff) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_format_round_trips() {
        let t = NodeToken::generate("-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n").unwrap();
        let s = t.secret();
        assert!(s.starts_with("K10"), "{s}");
        let (hash, creds) = s[3..].split_once("::").unwrap();
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, ca_hash("-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"));
        let (user, password) = creds.split_once(':').unwrap();
        assert_eq!(user, "node");
        assert_eq!(password.len(), 32);
        assert!(password.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(NodeToken::parse(&format!("  {s}\n")).unwrap(), t);
        assert_ne!(NodeToken::generate("x").unwrap().password(), t.password());
        assert!(!format!("{t:?}").contains(password), "Debug must not show the password");
    }

    #[test]
    fn parsing() {
        let h = ca_hash("ca");
        let t = NodeToken::parse(&format!("K10{h}::node:secret")).unwrap();
        assert_eq!((t.ca_hash(), t.user(), t.password()), (Some(h.as_str()), "node", "secret"));
        let t = NodeToken::parse(&format!("K10{h}::secret")).unwrap();
        assert_eq!((t.user(), t.password()), ("node", "secret"));
        let t = NodeToken::parse("just-a-password").unwrap();
        assert_eq!((t.ca_hash(), t.password()), (None, "just-a-password"));
        assert!(t.matches_ca("anything"));
        // A bare password may contain colons.
        assert_eq!(NodeToken::parse("a:b").unwrap().password(), "a:b");
        assert!(NodeToken::parse("K10abc::node:x").is_err(), "short hash");
        assert!(NodeToken::parse(&format!("K10{h}::node:")).is_err(), "no password");
        assert!(NodeToken::parse("  ").is_err());
        let upper = NodeToken::parse(&format!("K10{}::node:p", h.to_uppercase())).unwrap();
        assert!(upper.matches_ca("ca"));
        assert!(!upper.matches_ca("other ca"));
    }

    #[test]
    fn password_check() {
        // "K10" without "::" is a bare password, not a secure token.
        let t = NodeToken::parse("K10").unwrap();
        assert_eq!(t.ca_hash(), None);
        assert!(t.verify_password("K10"));
        let t = NodeToken::generate("ca").unwrap();
        assert!(t.verify_password(&t.password().to_string()));
        assert!(!t.verify_password(""));
        assert!(!t.verify_password(&format!("{}x", t.password())));
        assert!(!t.verify_password(&t.password()[1..]));
    }

    #[test]
    fn load_or_create_keeps_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server/node-token");
        let t = NodeToken::load_or_create(&path, "ca-1").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), t.secret());
        assert_eq!(NodeToken::load_or_create(&path, "ca-1").unwrap(), t, "kept across restarts");
        let t2 = NodeToken::load_or_create(&path, "ca-2").unwrap();
        assert_eq!(t2.password(), t.password());
        assert_eq!(t2.ca_hash(), Some(ca_hash("ca-2").as_str()));
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), t2.secret());
    }
}
