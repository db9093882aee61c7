//! Validation: name rules, typed decoding, and the per-kind checks upstream
//! makes, reported as `Invalid` causes with field paths.

use serde_json::Value;

use crate::meta;
use crate::resources::ResourceType;
use crate::selectors::LabelSelector;
use crate::status::{ApiError, Cause};

/// The name rule of a kind.
pub fn validate_name(rt: &ResourceType, name: &str) -> Result<(), String> {
    meta::is_valid_path_segment_name(name)?;
    match (rt.group, rt.kind) {
        ("", "Namespace") => meta::is_dns1123_label(name),
        ("", "Service") => meta::is_dns1035_label(name),
        ("rbac.authorization.k8s.io", _) => Ok(()),
        _ => meta::is_dns1123_subdomain(name),
    }
}

/// Everything upstream checks before storing `obj` (after defaulting).
/// `Err` is a 400 (undecodable) or 422 (invalid) `Status`.
pub fn validate(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    decode(rt, obj)?;
    let name = meta::name(obj);
    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push(Cause::required_msg("metadata.name", "name or generateName is required"));
    } else if let Err(e) = validate_name(rt, name) {
        causes.push(Cause::invalid("metadata.name", &Value::String(name.into()), &e));
    }
    if let Some(m) = obj.get("metadata").and_then(Value::as_object) {
        causes.extend(meta::validate_object_meta(m));
    }
    causes.extend(validate_kind(rt, obj));
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(rt.group, rt.kind, name, causes))
    }
}

/// [`validate`] for a write through the `status` subresource. Everything
/// but the status is the stored object's (valid when it was written; only
/// managedFields and the resourceVersion are the server's own), so only the
/// status is decoded against its type: not the spec and managedFields again
/// on each of a kubelet's writes.
pub fn validate_status(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let mut only_status = serde_json::Map::new();
    for k in ["apiVersion", "kind", "status"] {
        if let Some(v) = obj.get(k) {
            only_status.insert(k.into(), v.clone());
        }
    }
    decode(rt, &Value::Object(only_status))
}

/// Decodes `obj` as the kind's type: upstream's refusal of a body its
/// decoder cannot take (a 400, not a 422).
fn decode(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    (rt.decode)(obj).map_err(|e| {
        ApiError::bad_request(format!("{kind} in version \"{v}\" cannot be handled as a {kind}: {e}", kind = rt.kind, v = rt.version))
    })
}

fn validate_kind(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    match (rt.group, rt.kind) {
        ("", "Pod") => match obj.get("spec") {
            Some(spec) => validate_pod_spec(spec, "spec", &mut c),
            None => c.push(Cause::required("spec")),
        },
        ("", "PodTemplate") => validate_template(obj.get("template"), "template", None, &mut c),
        ("", "ReplicationController") => {
            let spec = obj.get("spec");
            validate_replicas(spec, &mut c);
            let selector = spec.and_then(|s| s.get("selector")).and_then(Value::as_object);
            let sel = selector.map(|m| {
                LabelSelector::from_label_selector_json(&serde_json::json!({"matchLabels": m})).ok()
            });
            validate_template(spec.and_then(|s| s.get("template")), "spec.template", sel.flatten().as_ref(), &mut c);
        }
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet") => {
            let spec = obj.get("spec");
            if rt.kind != "DaemonSet" {
                validate_replicas(spec, &mut c);
            }
            let selector = match spec.and_then(|s| s.get("selector")) {
                None | Some(Value::Null) => {
                    c.push(Cause::required("spec.selector"));
                    None
                }
                Some(sel) => match LabelSelector::from_label_selector_json(sel) {
                    Ok(s) if s.is_empty() => {
                        c.push(Cause::invalid("spec.selector", sel, "empty selector is invalid for deployment"));
                        None
                    }
                    Ok(s) => Some(s),
                    Err(e) => {
                        c.push(Cause::invalid("spec.selector", sel, &e));
                        None
                    }
                },
            };
            validate_template(spec.and_then(|s| s.get("template")), "spec.template", selector.as_ref(), &mut c);
        }
        ("batch", "Job") => {
            let template = obj.pointer("/spec/template");
            validate_template(template, "spec.template", None, &mut c);
            validate_job_restart_policy(template, "spec.template.spec.restartPolicy", &mut c);
        }
        ("batch", "CronJob") => {
            match obj.pointer("/spec/schedule").and_then(Value::as_str) {
                None | Some("") => c.push(Cause::required("spec.schedule")),
                Some(s) => {
                    if let Err(e) = crate::cron::validate_schedule(s) {
                        c.push(Cause::invalid("spec.schedule", &Value::String(s.into()), &e));
                    }
                }
            }
            if let Some(tz) = obj.pointer("/spec/timeZone").and_then(Value::as_str) {
                if jiff::tz::db().get(tz).is_err() {
                    c.push(Cause::invalid("spec.timeZone", &Value::String(tz.into()), &format!("unknown time zone {tz}")));
                }
            }
            let template = obj.pointer("/spec/jobTemplate/spec/template");
            validate_template(template, "spec.jobTemplate.spec.template", None, &mut c);
            validate_job_restart_policy(template, "spec.jobTemplate.spec.template.spec.restartPolicy", &mut c);
        }
        ("", "Service") => validate_service(obj, &mut c),
        ("", "PersistentVolumeClaim") => {
            if obj.pointer("/spec/resources/requests/storage").is_none() && obj.pointer("/spec/dataSourceRef").is_none() {
                c.push(Cause::required("spec.resources[storage]"));
            }
        }
        ("", "ConfigMap" | "Secret") => {
            for field in ["data", "binaryData", "stringData"] {
                if let Some(m) = obj.get(field).and_then(Value::as_object) {
                    for k in m.keys() {
                        let ok = !k.is_empty()
                            && k.len() <= 253
                            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
                            && k != "."
                            && k != "..";
                        if !ok {
                            c.push(Cause::invalid(
                                &format!("{field}[{k}]"),
                                &Value::String(k.clone()),
                                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                            ));
                        }
                    }
                }
            }
        }
        _ => {}
    }
    c
}

fn validate_replicas(spec: Option<&Value>, c: &mut Vec<Cause>) {
    if let Some(r) = spec.and_then(|s| s.get("replicas")).and_then(Value::as_i64) {
        if r < 0 {
            c.push(Cause::invalid("spec.replicas", &Value::from(r), "must be greater than or equal to 0"));
        }
    }
}

fn validate_job_restart_policy(template: Option<&Value>, path: &str, c: &mut Vec<Cause>) {
    let policy = template
        .and_then(|t| t.pointer("/spec/restartPolicy"))
        .cloned()
        .unwrap_or(Value::Null);
    if policy != "OnFailure" && policy != "Never" {
        c.push(Cause::not_supported(path, &policy, &["OnFailure", "Never"]));
    }
}

fn validate_template(template: Option<&Value>, path: &str, selector: Option<&LabelSelector>, c: &mut Vec<Cause>) {
    let Some(template) = template else {
        c.push(Cause::required(path));
        return;
    };
    if let Some(sel) = selector {
        let labels = template.pointer("/metadata/labels").and_then(Value::as_object);
        if !sel.matches(labels) {
            let shown = template.pointer("/metadata/labels").cloned().unwrap_or(Value::Null);
            c.push(Cause::invalid(
                &format!("{path}.metadata.labels"),
                &shown,
                "`selector` does not match template `labels`",
            ));
        }
    }
    match template.get("spec") {
        Some(spec) => validate_pod_spec(spec, &format!("{path}.spec"), c),
        None => c.push(Cause::required(&format!("{path}.spec"))),
    }
}

/// PodSpec checks: containers present, names unique labels, images set,
/// restart policy and ports in range.
pub fn validate_pod_spec(spec: &Value, path: &str, c: &mut Vec<Cause>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => c.push(Cause::required(&format!("{path}.containers"))),
        Some(list) if list.is_empty() => c.push(Cause::required(&format!("{path}.containers"))),
        Some(_) => {}
    }
    let mut seen = std::collections::HashSet::new();
    for field in ["initContainers", "containers"] {
        let Some(list) = spec.get(field).and_then(Value::as_array) else { continue };
        for (i, container) in list.iter().enumerate() {
            let cpath = format!("{path}.{field}[{i}]");
            match container.get("name").and_then(Value::as_str) {
                None | Some("") => c.push(Cause::required(&format!("{cpath}.name"))),
                Some(n) => {
                    if let Err(e) = meta::is_dns1123_label(n) {
                        c.push(Cause::invalid(&format!("{cpath}.name"), &Value::String(n.into()), &e));
                    }
                    if !seen.insert(n.to_string()) {
                        c.push(Cause::duplicate(&format!("{cpath}.name"), &Value::String(n.into())));
                    }
                }
            }
            match container.get("image").and_then(Value::as_str) {
                None | Some("") => c.push(Cause::required(&format!("{cpath}.image"))),
                Some(img) if img.trim() != img => {
                    c.push(Cause::invalid(&format!("{cpath}.image"), &Value::String(img.into()), "must not have leading or trailing whitespace"))
                }
                _ => {}
            }
            if let Some(ports) = container.get("ports").and_then(Value::as_array) {
                for (j, p) in ports.iter().enumerate() {
                    let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                    if !(1..=65535).contains(&port) {
                        c.push(Cause::invalid(
                            &format!("{cpath}.ports[{j}].containerPort"),
                            &Value::from(port),
                            "must be between 1 and 65535, inclusive",
                        ));
                    }
                }
            }
            if let Some(policy) = container.get("imagePullPolicy") {
                if !matches!(policy.as_str(), Some("Always" | "IfNotPresent" | "Never")) {
                    c.push(Cause::not_supported(&format!("{cpath}.imagePullPolicy"), policy, &["Always", "IfNotPresent", "Never"]));
                }
            }
        }
    }
    if let Some(policy) = spec.get("restartPolicy") {
        if !matches!(policy.as_str(), Some("Always" | "OnFailure" | "Never")) {
            c.push(Cause::not_supported(&format!("{path}.restartPolicy"), policy, &["Always", "OnFailure", "Never"]));
        }
    }
    if let Some(policy) = spec.get("dnsPolicy") {
        if !matches!(policy.as_str(), Some("ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None")) {
            c.push(Cause::not_supported(&format!("{path}.dnsPolicy"), policy, &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]));
        }
    }
}

fn validate_service(obj: &Value, c: &mut Vec<Cause>) {
    let spec = obj.get("spec");
    let svc_type = spec.and_then(|s| s.get("type")).and_then(Value::as_str).unwrap_or("ClusterIP");
    if !matches!(svc_type, "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName") {
        c.push(Cause::not_supported("spec.type", &Value::String(svc_type.into()), &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]));
    }
    let ports = spec.and_then(|s| s.get("ports")).and_then(Value::as_array);
    let headless = spec.and_then(|s| s.get("clusterIP")).and_then(Value::as_str) == Some("None");
    if svc_type == "ExternalName" {
        if spec.and_then(|s| s.get("externalName")).and_then(Value::as_str).unwrap_or("").is_empty() {
            c.push(Cause::required("spec.externalName"));
        }
        return;
    }
    match ports {
        None if !headless => c.push(Cause::required("spec.ports")),
        Some(p) if p.is_empty() && !headless => c.push(Cause::required("spec.ports")),
        _ => {}
    }
    let Some(ports) = ports else { return };
    let mut names = std::collections::HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            c.push(Cause::invalid(&format!("spec.ports[{i}].port"), &Value::from(port), "must be between 1 and 65535, inclusive"));
        }
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            c.push(Cause::required(&format!("spec.ports[{i}].name")));
        }
        if !name.is_empty() && !names.insert(name.to_string()) {
            c.push(Cause::duplicate(&format!("spec.ports[{i}].name"), &Value::String(name.into())));
        }
        if let Some(proto) = p.get("protocol") {
            if !matches!(proto.as_str(), Some("TCP" | "UDP" | "SCTP")) {
                c.push(Cause::not_supported(&format!("spec.ports[{i}].protocol"), proto, &["SCTP", "TCP", "UDP"]));
            }
        }
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
            if svc_type == "ClusterIP" && np != 0 {
                c.push(Cause::forbidden(&format!("spec.ports[{i}].nodePort"), "may not be used when `type` is 'ClusterIP'"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    #[test]
    fn pod_without_containers_is_invalid_with_field_path() {
        let rt = find("", "v1", "pods").unwrap();
        let e = validate(rt, &json!({"metadata": {"name": "p"}, "spec": {"containers": []}})).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(e.causes[0].field, "spec.containers");
    }

    #[test]
    fn type_errors_are_bad_requests() {
        let rt = find("", "v1", "pods").unwrap();
        let e = validate(rt, &json!({"metadata": {"name": "p"}, "spec": {"containers": "nope"}})).unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn status_writes_decode_the_status() {
        let rt = find("", "v1", "pods").unwrap();
        let pod = |status: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": status});
        validate_status(rt, &pod(json!({"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}]}))).unwrap();
        let e = validate_status(rt, &pod(json!({"phase": "Running", "podIPs": "10.0.0.1"}))).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("Pod in version \"v1\" cannot be handled as a Pod"), "{}", e.message);
        // The same refusal as the whole object's.
        assert_eq!(validate(rt, &pod(json!({"podIPs": "10.0.0.1"}))).unwrap_err().message, e.message);
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let rt = find("apps", "v1", "deployments").unwrap();
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let e = validate(rt, &d).unwrap_err();
        assert_eq!(e.causes[0].field, "spec.template.metadata.labels");
    }

    #[test]
    fn cronjob_schedules_and_zones_are_parsed() {
        let rt = find("batch", "v1", "cronjobs").unwrap();
        let cj = |schedule: &str, tz: Option<&str>| {
            let mut v = json!({"metadata": {"name": "c"}, "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}}});
            if let Some(tz) = tz {
                v["spec"]["timeZone"] = json!(tz);
            }
            v
        };
        assert!(validate(rt, &cj("*/5 * * * *", Some("Europe/Berlin"))).is_ok());
        let e = validate(rt, &cj("99 * * * *", None)).unwrap_err();
        assert_eq!(e.causes[0].field, "spec.schedule");
        assert!(e.causes[0].message.contains("end of range (99) above maximum (59)"));
        let e = validate(rt, &cj("* * * * *", Some("Mars/Olympus"))).unwrap_err();
        assert!(e.causes[0].message.contains("unknown time zone Mars/Olympus"));
    }

    #[test]
    fn claims_need_a_storage_request() {
        let rt = find("", "v1", "persistentvolumeclaims").unwrap();
        let e = validate(rt, &json!({"metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteOnce"]}})).unwrap_err();
        assert_eq!(e.causes[0].field, "spec.resources[storage]");
        assert!(validate(rt, &json!({"metadata": {"name": "c"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}})).is_ok());
    }

    #[test]
    fn bad_names() {
        let ns = find("", "v1", "namespaces").unwrap();
        assert!(validate(ns, &json!({"metadata": {"name": "Bad_Name"}})).is_err());
        let svc = find("", "v1", "services").unwrap();
        assert!(validate_name(svc, "1svc").is_err());
        let cm = find("", "v1", "configmaps").unwrap();
        assert!(validate(cm, &json!({"metadata": {"name": "a.b"}, "data": {"ok": "1"}})).is_ok());
        assert!(validate(cm, &json!({"metadata": {"name": "a"}, "data": {"bad key": "1"}})).is_err());
    }
}
