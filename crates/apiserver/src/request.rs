//! Request parsing: what a URL path and query ask for, as upstream's
//! RequestInfo resolver sees it.

use std::collections::HashMap;

use tug_api::resources::{self, ResourceType};
use tug_api::ApiError;

/// What a path names.
#[derive(Debug)]
pub enum Route {
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`
    ResourceList { group: String, version: String },
    /// A resource request.
    Resource(ResourceRequest),
}

#[derive(Debug)]
pub struct ResourceRequest {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Splits a path under `/api` or `/apis` into a [`Route`].
pub fn parse_path(path: &str) -> Result<Route, ApiError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["apis", g] => return Ok(Route::Group(g.to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    if !resources::serves(group, version) {
        return Err(not_found());
    }
    if rest.is_empty() {
        return Ok(Route::ResourceList { group: group.into(), version: version.into() });
    }
    // `namespaces/{ns}/{resource}/...` scopes a namespaced resource, except
    // `namespaces/{name}[/{sub}]`, which is the namespace object itself.
    let (namespace, rest): (Option<String>, &[&str]) = match rest {
        ["namespaces", ns, resource, tail @ ..] if group.is_empty() && (*resource == "status" || *resource == "finalize") && tail.is_empty() => {
            let rt = resources::find("", version, "namespaces").ok_or_else(not_found)?;
            return Ok(Route::Resource(ResourceRequest {
                rt,
                namespace: None,
                name: Some(ns.to_string()),
                subresource: Some(resource.to_string()),
            }));
        }
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(n.to_string()), None),
        [r, n, s] => (*r, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(not_found()),
    };
    let rt = resources::find(group, version, plural).ok_or_else(not_found)?;
    if namespace.is_some() && !rt.namespaced {
        return Err(not_found());
    }
    if let Some(s) = &sub {
        if !rt.has_subresource(s) {
            return Err(not_found());
        }
    }
    Ok(Route::Resource(ResourceRequest { rt, namespace, name, subresource: sub }))
}

pub fn not_found() -> ApiError {
    ApiError::new(404, "NotFound", "the server could not find the requested resource")
}

/// Query parameters, decoded.
pub fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Some(q) = query else { return out };
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        match parse_path("/api/v1/namespaces/default/pods/web/log").unwrap() {
            Route::Resource(r) => {
                assert_eq!(r.rt.plural, "pods");
                assert_eq!(r.namespace.as_deref(), Some("default"));
                assert_eq!(r.name.as_deref(), Some("web"));
                assert_eq!(r.subresource.as_deref(), Some("log"));
            }
            other => panic!("{other:?}"),
        }
        match parse_path("/api/v1/namespaces/kube-system").unwrap() {
            Route::Resource(r) => {
                assert_eq!(r.rt.plural, "namespaces");
                assert_eq!(r.name.as_deref(), Some("kube-system"));
                assert!(r.namespace.is_none());
            }
            other => panic!("{other:?}"),
        }
        match parse_path("/api/v1/namespaces/x/finalize").unwrap() {
            Route::Resource(r) => assert_eq!(r.subresource.as_deref(), Some("finalize")),
            other => panic!("{other:?}"),
        }
        assert!(parse_path("/apis/apps/v1/namespaces/d/deployments").is_ok());
        assert!(parse_path("/apis/apps/v9/deployments").is_err());
        assert!(parse_path("/api/v1/namespaces/d/nodes").is_err());
        assert!(parse_path("/api/v1/pods/x/bogus").is_err());
    }

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1"));
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["watch"], "1");
    }
}
