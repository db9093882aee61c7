//! What the API server serves, as the controllers need it: which resources
//! to watch or empty, and which resource an `ownerReference`'s
//! `apiVersion`/`kind` names (upstream's RESTMapper).
//!
//! Built from kube's [`Discovery`] (aggregated discovery first: two requests
//! instead of one per group version), and rebuilt periodically by its users
//! so resources added later are picked up.

use kube::Client;
use kube::core::discovery::{Scope, verbs};
use kube::discovery::{ApiResource, Discovery};

/// One served resource at one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedResource {
    pub ar: ApiResource,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    /// Served at its group's preferred version. Upstream's controllers act
    /// on preferred versions only, so that one object served at several
    /// versions (e.g. autoscaling v1 and v2) is seen once.
    pub preferred: bool,
}

impl ServedResource {
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// `plural.group` (`deployments.apps`, `configmaps`), upstream's
    /// GroupResource string, for logs and conditions.
    pub fn group_resource(&self) -> String {
        if self.ar.group.is_empty() { self.ar.plural.clone() } else { format!("{}.{}", self.ar.plural, self.ar.group) }
    }
}

/// A snapshot of discovery.
#[derive(Clone, Debug, Default)]
pub struct ResourceMap {
    resources: Vec<ServedResource>,
}

/// `apps/v1` → `apps`; `v1` → ``.
pub fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}

impl ResourceMap {
    /// Asks the API server what it serves.
    pub async fn discover(client: &Client) -> Result<ResourceMap, kube::Error> {
        let discovery = match Discovery::new(client.clone()).run_aggregated().await {
            Ok(d) => d,
            Err(e) => {
                // Older servers lack aggregated discovery; the per-group walk works everywhere.
                tracing::debug!(error = %e, "aggregated discovery failed; falling back to per-group discovery");
                Discovery::new(client.clone()).run().await?
            }
        };
        let mut resources = Vec::new();
        for group in discovery.groups() {
            let preferred = group.preferred_version_or_latest().to_string();
            for version in group.versions() {
                for (ar, caps) in group.versioned_resources(version) {
                    resources.push(ServedResource {
                        ar,
                        namespaced: caps.scope == Scope::Namespaced,
                        verbs: caps.operations.clone(),
                        preferred: version == preferred,
                    });
                }
            }
        }
        Ok(ResourceMap { resources })
    }

    /// A map from a fixed list (tests).
    pub fn from_resources(resources: Vec<ServedResource>) -> ResourceMap {
        ResourceMap { resources }
    }

    pub fn all(&self) -> &[ServedResource] {
        &self.resources
    }

    /// Preferred-version resources that support every verb in `needed`.
    pub fn preferred_with(&self, needed: &[&str]) -> impl Iterator<Item = &ServedResource> {
        self.resources.iter().filter(move |r| r.preferred && needed.iter().all(|v| r.supports(v)))
    }

    /// What the garbage collector watches: everything it can list, watch
    /// and delete (upstream's `GetDeletableResources`).
    pub fn deletable(&self) -> impl Iterator<Item = &ServedResource> {
        self.preferred_with(&[verbs::LIST, verbs::WATCH, verbs::DELETE])
    }

    /// The resource an object reference names. The exact group/version/kind
    /// wins; failing that the same group and kind at the preferred (then any)
    /// version, since an owner reference may name a version that is not
    /// served any more while its object still exists.
    pub fn resolve(&self, api_version: &str, kind: &str) -> Option<&ServedResource> {
        let group = group_of(api_version);
        let same_kind = |r: &&ServedResource| r.ar.group == group && r.ar.kind == kind;
        self.resources
            .iter()
            .find(|r| r.ar.api_version == api_version && r.ar.kind == kind)
            .or_else(|| self.resources.iter().filter(same_kind).find(|r| r.preferred))
            .or_else(|| self.resources.iter().find(same_kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool, preferred: bool) -> ServedResource {
        let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        ServedResource {
            ar: ApiResource { group: group.into(), version: version.into(), api_version, kind: kind.into(), plural: plural.into() },
            namespaced,
            verbs: ["list", "watch", "delete", "get"].iter().map(|s| s.to_string()).collect(),
            preferred,
        }
    }

    #[test]
    fn resolves_exact_then_preferred_version() {
        let map = ResourceMap::from_resources(vec![
            res("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, true),
            res("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, false),
            res("", "v1", "ConfigMap", "configmaps", true, true),
        ]);
        assert_eq!(map.resolve("autoscaling/v1", "HorizontalPodAutoscaler").unwrap().ar.version, "v1");
        assert_eq!(map.resolve("autoscaling/v2beta2", "HorizontalPodAutoscaler").unwrap().ar.version, "v2");
        assert_eq!(map.resolve("v1", "ConfigMap").unwrap().ar.plural, "configmaps");
        assert!(map.resolve("v1", "Secret").is_none());
        assert!(map.resolve("apps/v1", "ConfigMap").is_none(), "the group must match");
        assert_eq!(map.deletable().count(), 2, "non-preferred versions are not watched twice");
    }
}
