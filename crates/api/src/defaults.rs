//! Defaulting: the fields upstream fills in on create and update, so that
//! what kubectl reads back matches a real cluster.

use serde_json::{json, Map, Value};

/// Fills upstream defaults into `obj` of `kind` (group is needed where kinds share names).
pub fn apply_defaults(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Pod") => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
            }
            if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
                link_singular_and_plural_ips(status, "podIP", "podIPs");
                link_singular_and_plural_ips(status, "hostIP", "hostIPs");
            }
        }
        ("", "PodTemplate") => default_template(obj.get_mut("template")),
        ("", "ReplicationController") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "minReadySeconds", json!(0));
            if spec.get("selector").is_none() {
                if let Some(labels) = spec.get("template").and_then(|t| t.pointer("/metadata/labels")).cloned() {
                    spec.insert("selector".into(), labels);
                }
            }
            default_template(obj.pointer_mut("/spec/template"));
        }
        ("", "Service") => default_service(obj),
        ("", "Namespace") => {
            let name = crate::meta::name(obj).to_string();
            let meta = crate::meta::metadata_mut(obj);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "finalizers", json!(["kubernetes"]));
            let status = ensure_obj(obj, "status");
            set_default(status, "phase", json!("Active"));
        }
        ("", "Secret") => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "type", json!("Opaque"));
                // `stringData` is write-only: it is merged into `data` (base64) and dropped.
                if let Some(Value::Object(string_data)) = m.remove("stringData") {
                    use base64::Engine;
                    let data = m.entry("data").or_insert_with(|| json!({}));
                    if let Some(data) = data.as_object_mut() {
                        for (k, v) in string_data {
                            let raw = v.as_str().unwrap_or_default();
                            data.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(raw)));
                        }
                    }
                }
            }
        }
        ("", "PersistentVolume") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            set_default(spec, "volumeMode", json!("Filesystem"));
            let status = ensure_obj(obj, "status");
            set_default(status, "phase", json!("Pending"));
        }
        ("", "PersistentVolumeClaim") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "volumeMode", json!("Filesystem"));
            let status = ensure_obj(obj, "status");
            set_default(status, "phase", json!("Pending"));
        }
        ("apps", "Deployment") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
            if let Some(s) = strategy.as_object_mut() {
                set_default(s, "type", json!("RollingUpdate"));
                if s.get("type") == Some(&json!("RollingUpdate")) {
                    let ru = s.entry("rollingUpdate").or_insert_with(|| json!({}));
                    if let Some(ru) = ru.as_object_mut() {
                        set_default(ru, "maxUnavailable", json!("25%"));
                        set_default(ru, "maxSurge", json!("25%"));
                    }
                }
            }
            default_template(obj.pointer_mut("/spec/template"));
        }
        ("apps", "ReplicaSet") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "replicas", json!(1));
            default_template(obj.pointer_mut("/spec/template"));
        }
        ("apps", "DaemonSet") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "revisionHistoryLimit", json!(10));
            let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
            if let Some(s) = strategy.as_object_mut() {
                set_default(s, "type", json!("RollingUpdate"));
                if s.get("type") == Some(&json!("RollingUpdate")) {
                    let ru = s.entry("rollingUpdate").or_insert_with(|| json!({}));
                    if let Some(ru) = ru.as_object_mut() {
                        set_default(ru, "maxUnavailable", json!(1));
                        set_default(ru, "maxSurge", json!(0));
                    }
                }
            }
            default_template(obj.pointer_mut("/spec/template"));
        }
        ("apps", "StatefulSet") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(spec, "revisionHistoryLimit", json!(10));
            let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
            if let Some(s) = strategy.as_object_mut() {
                set_default(s, "type", json!("RollingUpdate"));
                if s.get("type") == Some(&json!("RollingUpdate")) {
                    let ru = s.entry("rollingUpdate").or_insert_with(|| json!({}));
                    if let Some(ru) = ru.as_object_mut() {
                        set_default(ru, "partition", json!(0));
                    }
                }
            }
            set_default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            default_template(obj.pointer_mut("/spec/template"));
        }
        ("batch", "Job") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "parallelism", json!(1));
            if spec.get("completions").is_none() && spec.get("parallelism") == Some(&json!(1)) {
                spec.insert("completions".into(), json!(1));
            }
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "manualSelector", json!(false));
            set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            default_template(obj.pointer_mut("/spec/template"));
        }
        ("batch", "CronJob") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            default_template(obj.pointer_mut("/spec/jobTemplate/spec/template"));
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "minReplicas", json!(1));
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            let spec = ensure_obj(obj, "spec");
            if spec.get("policyTypes").is_none() {
                let mut types = vec![json!("Ingress")];
                if spec.get("egress").is_some() {
                    types.push(json!("Egress"));
                }
                spec.insert("policyTypes".into(), Value::Array(types));
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "preemptionPolicy", json!("PreemptLowerPriority"));
            }
        }
        _ => {}
    }
}

/// Upstream's v1 `PodStatus` conversion for a singular IP field and its
/// plural (`podIP`/`podIPs`, `hostIP`/`hostIPs`): a singular without a
/// plural becomes the plural's only entry, and the plural's first entry
/// fills a missing singular.
fn link_singular_and_plural_ips(status: &mut Map<String, Value>, singular: &str, plural: &str) {
    let one = status.get(singular).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let first = status.get(plural).and_then(|p| p.pointer("/0/ip")).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let plural_empty = status.get(plural).and_then(Value::as_array).map(Vec::is_empty).unwrap_or(true);
    match (one, first) {
        (Some(ip), _) if plural_empty => {
            status.insert(plural.into(), json!([{"ip": ip}]));
        }
        (None, Some(ip)) => {
            status.insert(singular.into(), json!(ip));
        }
        _ => {}
    }
}

fn ensure_obj<'a>(obj: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    if !obj.get(field).map(Value::is_object).unwrap_or(false) {
        obj[field] = json!({});
    }
    obj[field].as_object_mut().expect("just made an object")
}

fn set_default(m: &mut Map<String, Value>, field: &str, value: Value) {
    if m.get(field).map(Value::is_null).unwrap_or(true) {
        m.insert(field.into(), value);
    }
}

fn default_template(template: Option<&mut Value>) {
    if let Some(spec) = template.and_then(|t| t.get_mut("spec")) {
        default_pod_spec(spec);
    }
}

/// PodSpec defaults, including every container's.
pub fn default_pod_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else { return };
    set_default(m, "restartPolicy", json!("Always"));
    set_default(m, "dnsPolicy", json!("ClusterFirst"));
    set_default(m, "terminationGracePeriodSeconds", json!(30));
    set_default(m, "schedulerName", json!("default-scheduler"));
    set_default(m, "securityContext", json!({}));
    for field in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(Value::Array(containers)) = m.get_mut(field) {
            for c in containers {
                default_container(c);
            }
        }
    }
    if let Some(Value::Array(volumes)) = m.get_mut("volumes") {
        for v in volumes {
            for (source, mode_field) in [("configMap", "defaultMode"), ("secret", "defaultMode"), ("downwardAPI", "defaultMode"), ("projected", "defaultMode")] {
                if let Some(s) = v.get_mut(source).and_then(Value::as_object_mut) {
                    set_default(s, mode_field, json!(420));
                }
            }
            if let Some(s) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
                set_default(s, "type", json!(""));
            }
        }
    }
}

fn default_container(c: &mut Value) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(m) = c.as_object_mut() else { return };
    set_default(m, "imagePullPolicy", json!(default_pull_policy(&image)));
    set_default(m, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(m, "terminationMessagePolicy", json!("File"));
    set_default(m, "resources", json!({}));
    if let Some(Value::Array(ports)) = m.get_mut("ports") {
        for p in ports {
            if let Some(p) = p.as_object_mut() {
                set_default(p, "protocol", json!("TCP"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe).and_then(Value::as_object_mut) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                set_default(h, "path", json!("/"));
                set_default(h, "scheme", json!("HTTP"));
            }
        }
    }
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn default_service(obj: &mut Value) {
    let spec = ensure_obj(obj, "spec");
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let svc_type = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if svc_type != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "ipFamilies", json!(["IPv4"]));
    }
    if svc_type == "NodePort" || svc_type == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if svc_type == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports {
            if let Some(p) = p.as_object_mut() {
                set_default(p, "protocol", json!("TCP"));
                if let Some(port) = p.get("port").cloned() {
                    set_default(p, "targetPort", port);
                }
            }
        }
    }
    let status = ensure_obj(obj, "status");
    set_default(status, "loadBalancer", json!({}));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults() {
        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "busybox"}, {"name": "d", "image": "busybox:1.36", "ports": [{"containerPort": 80}]}]}});
        apply_defaults("", "Pod", &mut p);
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(p["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(p["spec"]["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(p["spec"]["containers"][1]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn pod_status_ips_fill_their_singular_or_plural() {
        let mut p = json!({"spec": {"containers": []}, "status": {"podIP": "10.42.0.5", "hostIP": "192.168.1.10"}});
        apply_defaults("", "Pod", &mut p);
        assert_eq!(p["status"]["podIPs"], json!([{"ip": "10.42.0.5"}]));
        assert_eq!(p["status"]["hostIPs"], json!([{"ip": "192.168.1.10"}]));

        let mut p = json!({"status": {"podIPs": [{"ip": "10.42.0.6"}, {"ip": "fd00::6"}], "hostIPs": [{"ip": "192.168.1.11"}]}});
        apply_defaults("", "Pod", &mut p);
        assert_eq!(p["status"]["podIP"], "10.42.0.6");
        assert_eq!(p["status"]["hostIP"], "192.168.1.11");
        assert_eq!(p["status"]["podIPs"], json!([{"ip": "10.42.0.6"}, {"ip": "fd00::6"}]), "the plural is kept as is");

        // An empty plural counts as missing; nothing is invented from nothing.
        let mut p = json!({"status": {"podIP": "10.42.0.7", "podIPs": [], "phase": "Pending"}});
        apply_defaults("", "Pod", &mut p);
        assert_eq!(p["status"]["podIPs"], json!([{"ip": "10.42.0.7"}]));
        assert!(p["status"].get("hostIP").is_none() && p["status"].get("hostIPs").is_none(), "{p}");

        // Both set: left as they are.
        let both = json!({"status": {"podIP": "10.42.0.8", "podIPs": [{"ip": "10.42.0.8"}, {"ip": "fd00::8"}]}});
        let mut p = both.clone();
        apply_defaults("", "Pod", &mut p);
        assert_eq!(p, both);
    }

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
        apply_defaults("apps", "Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn service_target_port_defaults_to_port() {
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply_defaults("", "Service", &mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["type"], "ClusterIP");
    }

    #[test]
    fn pull_policy() {
        assert_eq!(default_pull_policy("127.0.0.1:5000/busybox"), "Always");
        assert_eq!(default_pull_policy("127.0.0.1:5000/busybox:1"), "IfNotPresent");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
    }
}
