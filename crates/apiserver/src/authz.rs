//! Authorization: the one interface RBAC will sit behind.
//!
//! Every resource request is checked with the authenticated user, the verb
//! and the resource before it reaches storage. Today the only authorizer
//! allows every authenticated user (as upstream's `AlwaysAllow` mode); the
//! RBAC objects are stored but not yet enforced.

use tug_pki::PeerIdentity;

/// What a request wants to do, as upstream's authorizer attributes.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub user: &'a PeerIdentity,
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

pub trait Authorizer: Send + Sync {
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision;
}

/// Allows everything an authenticated user asks.
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _attrs: &Attributes<'_>) -> Decision {
        Decision::Allow
    }
}
