use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde_json::json;

use super::names::{self, POINTER_FIELDS, Registry, norm};
use super::table::{MESSAGES, Ty};
use super::*;

/// Wraps an encoded object in the `k8s\0` + runtime.Unknown envelope.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn time(seconds: i64) -> Option<meta::Time> {
    Some(meta::Time {
        seconds: Some(seconds),
        nanos: Some(0),
    })
}

fn int_or_string_int(i: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(i),
        str_val: Some(String::new()),
    })
}

fn int_or_string_str(v: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(1),
        int_val: Some(0),
        str_val: s(v),
    })
}

fn quantity(v: &str) -> Quantity {
    Quantity { string: s(v) }
}

/// Real request bodies captured from kubectl 1.32 (`kubectl create ...`),
/// each next to what `kubectl create ... --dry-run=client -o json` prints for
/// the same command: the JSON API carries exactly that object.
#[test]
fn kubectl_bodies_decode_to_kubectl_json() {
    macro_rules! fixture {
        ($name:literal) => {
            (
                $name,
                include_bytes!(concat!("testdata/", $name, ".pb")).as_slice(),
                include_str!(concat!("testdata/", $name, ".json")),
            )
        };
    }
    let fixtures = [
        fixture!("deployment"),
        fixture!("deployment-zero"),
        fixture!("secret"),
        fixture!("secret-docker"),
        fixture!("configmap"),
        fixture!("job"),
        fixture!("cronjob"),
        fixture!("service-clusterip"),
        fixture!("service-nodeport"),
        fixture!("namespace"),
        fixture!("quota"),
        fixture!("priorityclass"),
        fixture!("priorityclass-zero"),
        fixture!("pdb-min"),
        fixture!("pdb-max"),
        fixture!("rolebinding"),
        fixture!("clusterrolebinding"),
        fixture!("ingress"),
        fixture!("serviceaccount"),
    ];
    for (name, pb, expected) in fixtures {
        let got = decode(pb).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected: Value = serde_json::from_str(expected).unwrap();
        assert_eq!(
            got,
            expected,
            "{name}:\n{}",
            serde_json::to_string_pretty(&got).unwrap()
        );
        // Field order follows the message: apiVersion and kind first.
        let keys: Vec<&String> = got.as_object().unwrap().keys().take(3).collect();
        assert_eq!(keys, ["apiVersion", "kind", "metadata"], "{name}");
        // And the typed decoder of the served kind accepts it.
        let (api_version, kind) = (
            got["apiVersion"].as_str().unwrap(),
            got["kind"].as_str().unwrap(),
        );
        let r = crate::resources::find_kind(api_version, kind).unwrap();
        (r.decode)(&got).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn kubectl_token_request() {
    // `kubectl create token default --duration=10m`.
    let got = decode(include_bytes!("testdata/tokenrequest.pb")).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"creationTimestamp": null},
            "spec": {"expirationSeconds": 600},
            "status": {"token": "", "expirationTimestamp": null}
        })
    );
}

#[test]
fn pod_names_times_quantities_and_nesting() {
    let pod = core::Pod {
        metadata: Some(meta::ObjectMeta {
            name: s("web-1"),
            namespace: s("default"),
            uid: s(""),
            generation: Some(0),
            creation_timestamp: time(1_767_323_045), // 2026-01-02T03:04:05Z
            labels: labels(&[("app", "web")]),
            annotations: labels(&[("note", "")]),
            owner_references: vec![meta::OwnerReference {
                api_version: s("apps/v1"),
                kind: s("ReplicaSet"),
                name: s("web"),
                uid: s("123"),
                controller: Some(true),
                block_owner_deletion: Some(false),
            }],
            ..Default::default()
        }),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: s("main"),
                image: s("busybox"),
                command: vec!["sh".into(), "-c".into()],
                working_dir: s(""),
                ports: vec![core::ContainerPort {
                    name: s("http"),
                    container_port: Some(8080),
                    host_port: Some(0),
                    protocol: s("TCP"),
                    host_ip: s("127.0.0.1"),
                }],
                env: vec![core::EnvVar {
                    name: s("FROM_CM"),
                    value: s(""),
                    value_from: Some(core::EnvVarSource {
                        config_map_key_ref: Some(core::ConfigMapKeySelector {
                            local_object_reference: Some(core::LocalObjectReference {
                                name: s("cm"),
                            }),
                            key: s("k"),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    }),
                }],
                resources: Some(core::ResourceRequirements {
                    limits: [
                        ("cpu".to_string(), quantity("500m")),
                        ("memory".to_string(), quantity("1Gi")),
                    ]
                    .into_iter()
                    .collect(),
                    requests: [("cpu".to_string(), quantity("100m"))]
                        .into_iter()
                        .collect(),
                    claims: vec![],
                }),
                readiness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        http_get: Some(core::HttpGetAction {
                            path: s("/healthz"),
                            port: int_or_string_str("http"),
                            host: s(""),
                            scheme: s("HTTP"),
                            http_headers: vec![],
                        }),
                        ..Default::default()
                    }),
                    initial_delay_seconds: Some(0),
                    period_seconds: Some(5),
                    ..Default::default()
                }),
                stdin: Some(false),
                tty: Some(false),
                ..Default::default()
            }],
            volumes: vec![core::Volume {
                name: s("data"),
                volume_source: Some(core::VolumeSource {
                    empty_dir: Some(core::EmptyDirVolumeSource {
                        medium: s(""),
                        size_limit: Some(quantity("1Gi")),
                    }),
                    ..Default::default()
                }),
            }],
            termination_grace_period_seconds: Some(0),
            automount_service_account_token: Some(false),
            host_network: Some(false),
            node_selector: labels(&[("disk", "ssd")]),
            ..Default::default()
        }),
        status: Some(core::PodStatus {
            phase: s("Running"),
            host_ip: s("10.0.0.1"),
            host_ips: vec![core::HostIp { ip: s("10.0.0.1") }],
            pod_ip: s("10.1.0.5"),
            pod_ips: vec![
                core::PodIp { ip: s("10.1.0.5") },
                core::PodIp { ip: s("fd00::5") },
            ],
            start_time: time(1_767_323_045),
            conditions: vec![core::PodCondition {
                r#type: s("Ready"),
                status: s("True"),
                last_probe_time: Some(meta::Time::default()),
                last_transition_time: time(1_767_323_045),
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    let got = decode(&envelope("v1", "Pod", pod.encode_to_vec())).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-1",
                "namespace": "default",
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "labels": {"app": "web"},
                "annotations": {"note": ""},
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "123",
                    "controller": true, "blockOwnerDeletion": false
                }]
            },
            "spec": {
                "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}],
                "containers": [{
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c"],
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP", "hostIP": "127.0.0.1"}],
                    "env": [{"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k", "optional": false}}}],
                    "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "100m"}},
                    "readinessProbe": {
                        "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                        "periodSeconds": 5
                    }
                }],
                "terminationGracePeriodSeconds": 0,
                "nodeSelector": {"disk": "ssd"},
                "automountServiceAccountToken": false
            },
            "status": {
                "phase": "Running",
                "conditions": [{
                    "type": "Ready", "status": "True",
                    "lastProbeTime": null, "lastTransitionTime": "2026-01-02T03:04:05Z"
                }],
                "hostIP": "10.0.0.1",
                "podIP": "10.1.0.5",
                "startTime": "2026-01-02T03:04:05Z",
                "podIPs": [{"ip": "10.1.0.5"}, {"ip": "fd00::5"}],
                "hostIPs": [{"ip": "10.0.0.1"}]
            }
        })
    );
    crate::resources::find_kind("v1", "Pod")
        .map(|r| (r.decode)(&got).unwrap())
        .unwrap();
}

#[test]
fn deployment_int_or_string_and_replicas() {
    let deployment = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            revision_history_limit: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: labels(&[("app", "web")]),
                match_expressions: vec![meta::LabelSelectorRequirement {
                    key: s("tier"),
                    operator: s("In"),
                    values: vec!["a".into(), "b".into()],
                }],
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: int_or_string_int(1),
                    max_surge: int_or_string_str("25%"),
                }),
            }),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    let got = decode(&envelope(
        "apps/v1",
        "Deployment",
        deployment.encode_to_vec(),
    ))
    .unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 0,
                "selector": {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]
                },
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}},
                "revisionHistoryLimit": 0
            },
            "status": {}
        })
    );
}

#[test]
fn service_names_and_target_ports() {
    let service = core::Service {
        metadata: Some(meta::ObjectMeta {
            name: s("s"),
            ..Default::default()
        }),
        spec: Some(core::ServiceSpec {
            ports: vec![
                core::ServicePort {
                    name: s("a"),
                    protocol: s("TCP"),
                    port: Some(80),
                    target_port: int_or_string_int(8080),
                    node_port: Some(0),
                    ..Default::default()
                },
                core::ServicePort {
                    port: Some(443),
                    target_port: Some(IntOrString::default()),
                    ..Default::default()
                },
            ],
            cluster_ip: s("10.96.0.10"),
            cluster_ips: vec!["10.96.0.10".into(), "fd00::a".into()],
            r#type: s("ClusterIP"),
            external_ips: vec!["1.2.3.4".into()],
            ip_families: vec!["IPv4".into()],
            session_affinity_config: Some(core::SessionAffinityConfig {
                client_ip: Some(core::ClientIpConfig {
                    timeout_seconds: Some(10800),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let got = decode(&envelope("v1", "Service", service.encode_to_vec())).unwrap();
    assert_eq!(
        got["spec"],
        json!({
            "ports": [
                {"name": "a", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"port": 443, "targetPort": 0}
            ],
            "clusterIP": "10.96.0.10",
            "type": "ClusterIP",
            "externalIPs": ["1.2.3.4"],
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
            "clusterIPs": ["10.96.0.10", "fd00::a"],
            "ipFamilies": ["IPv4"]
        })
    );
    assert!(got.get("status").is_none());
}

#[test]
fn secret_bytes_are_base64() {
    let secret = core::Secret {
        metadata: Some(meta::ObjectMeta {
            name: s("s"),
            ..Default::default()
        }),
        data: [
            ("a".to_string(), b"b".to_vec()),
            ("bin".to_string(), vec![0, 1, 2, 255]),
            ("empty".to_string(), vec![]),
        ]
        .into_iter()
        .collect(),
        string_data: labels(&[("plain", "text")]),
        r#type: s("Opaque"),
        immutable: Some(false),
    };
    let got = decode(&envelope("v1", "Secret", secret.encode_to_vec())).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s"},
            "data": {"a": "Yg==", "bin": "AAEC/w==", "empty": ""},
            "type": "Opaque",
            "stringData": {"plain": "text"},
            "immutable": false
        })
    );
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: s("c"),
            ..Default::default()
        }),
        data: labels(&[("x", "y")]),
        binary_data: [("b".to_string(), vec![0xde, 0xad])].into_iter().collect(),
        immutable: None,
    };
    let got = decode(&envelope("v1", "ConfigMap", cm.encode_to_vec())).unwrap();
    assert_eq!(got["data"], json!({"x": "y"}));
    assert_eq!(got["binaryData"], json!({"b": "3q0="}));
}

#[test]
fn micro_time_raw_extension_and_lease() {
    let lease = k8s_pb::api::coordination::v1::Lease {
        metadata: Some(meta::ObjectMeta {
            name: s("l"),
            ..Default::default()
        }),
        spec: Some(k8s_pb::api::coordination::v1::LeaseSpec {
            holder_identity: s("node-1"),
            lease_duration_seconds: Some(40),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_767_323_045),
                nanos: Some(123_456_789),
            }),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    let got = decode(&envelope(
        "coordination.k8s.io/v1",
        "Lease",
        lease.encode_to_vec(),
    ))
    .unwrap();
    assert_eq!(
        got["spec"],
        json!({
            "holderIdentity": "node-1",
            "leaseDurationSeconds": 40,
            "renewTime": "2026-01-02T03:04:05.123456Z",
            "leaseTransitions": 0
        })
    );

    let revision = apps::ControllerRevision {
        metadata: Some(meta::ObjectMeta {
            name: s("r"),
            ..Default::default()
        }),
        data: Some(k8s_pb::apimachinery::pkg::runtime::RawExtension {
            raw: Some(br#"{"spec":{"template":{"metadata":{"labels":{"a":"b"}}}}}"#.to_vec()),
        }),
        revision: Some(3),
    };
    let got = decode(&envelope(
        "apps/v1",
        "ControllerRevision",
        revision.encode_to_vec(),
    ))
    .unwrap();
    assert_eq!(
        got["data"],
        json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}})
    );
    assert_eq!(got["revision"], json!(3));

    let event = k8s_pb::api::events::v1::Event {
        metadata: Some(meta::ObjectMeta {
            name: s("e"),
            ..Default::default()
        }),
        event_time: Some(meta::MicroTime {
            seconds: Some(0),
            nanos: Some(5_000),
        }),
        reporting_controller: s("c"),
        deprecated_first_timestamp: Some(meta::Time::default()),
        ..Default::default()
    };
    let got = decode(&envelope(
        "events.k8s.io/v1",
        "Event",
        event.encode_to_vec(),
    ))
    .unwrap();
    assert_eq!(got["eventTime"], json!("1970-01-01T00:00:00.000005Z"));
    assert_eq!(got["deprecatedFirstTimestamp"], Value::Null);
    assert_eq!(got["reportingController"], json!("c"));
}

#[test]
fn subresource_and_option_kinds() {
    // kubectl drain: policy/v1 Eviction with delete options.
    let eviction = k8s_pb::api::policy::v1::Eviction {
        metadata: Some(meta::ObjectMeta {
            name: s("p"),
            namespace: s("default"),
            ..Default::default()
        }),
        delete_options: Some(meta::DeleteOptions {
            grace_period_seconds: Some(0),
            propagation_policy: s("Background"),
            dry_run: vec!["All".into()],
            ..Default::default()
        }),
    };
    let got = decode(&envelope("policy/v1", "Eviction", eviction.encode_to_vec())).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "p", "namespace": "default"},
            "deleteOptions": {"gracePeriodSeconds": 0, "propagationPolicy": "Background", "dryRun": ["All"]}
        })
    );

    // DeleteOptions is registered in every group version.
    let options = meta::DeleteOptions {
        grace_period_seconds: Some(30),
        preconditions: Some(meta::Preconditions {
            uid: s("u1"),
            resource_version: None,
        }),
        orphan_dependents: Some(false),
        ..Default::default()
    };
    for api_version in ["v1", "meta.k8s.io/v1", "apps/v1", "batch/v1"] {
        let got = decode(&envelope(
            api_version,
            "DeleteOptions",
            options.encode_to_vec(),
        ))
        .unwrap();
        assert_eq!(
            got,
            json!({
                "apiVersion": api_version, "kind": "DeleteOptions",
                "gracePeriodSeconds": 30, "preconditions": {"uid": "u1"}, "orphanDependents": false
            })
        );
    }

    let scale = k8s_pb::api::autoscaling::v1::Scale {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            resource_version: s("7"),
            ..Default::default()
        }),
        spec: Some(k8s_pb::api::autoscaling::v1::ScaleSpec { replicas: Some(5) }),
        status: Some(k8s_pb::api::autoscaling::v1::ScaleStatus {
            replicas: Some(2),
            selector: s("app=web"),
        }),
    };
    let got = decode(&envelope("autoscaling/v1", "Scale", scale.encode_to_vec())).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "web", "resourceVersion": "7"},
            "spec": {"replicas": 5},
            "status": {"replicas": 2, "selector": "app=web"}
        })
    );

    let binding = core::Binding {
        metadata: Some(meta::ObjectMeta {
            name: s("p"),
            ..Default::default()
        }),
        target: Some(core::ObjectReference {
            kind: s("Node"),
            name: s("n1"),
            ..Default::default()
        }),
    };
    let got = decode(&envelope("v1", "Binding", binding.encode_to_vec())).unwrap();
    assert_eq!(got["target"], json!({"kind": "Node", "name": "n1"}));

    let token = k8s_pb::api::authentication::v1::TokenRequest {
        metadata: None,
        spec: Some(k8s_pb::api::authentication::v1::TokenRequestSpec {
            audiences: vec!["https://kubernetes.default.svc".into()],
            expiration_seconds: Some(3600),
            bound_object_ref: Some(k8s_pb::api::authentication::v1::BoundObjectReference {
                kind: s("Pod"),
                api_version: s("v1"),
                name: s("p"),
                u_id: s("u"),
            }),
        }),
        status: None,
    };
    let got = decode(&envelope(
        "authentication.k8s.io/v1",
        "TokenRequest",
        token.encode_to_vec(),
    ))
    .unwrap();
    assert_eq!(
        got["spec"],
        json!({
            "audiences": ["https://kubernetes.default.svc"],
            "expirationSeconds": 3600,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u"}
        })
    );
}

#[test]
fn custom_resource_definition_schemas() {
    use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    let string_prop = ext::JsonSchemaProps {
        r#type: s("string"),
        ..Default::default()
    };
    let schema = ext::JsonSchemaProps {
        r#type: s("object"),
        properties: [
            ("name".to_string(), string_prop.clone()),
            (
                "tags".to_string(),
                ext::JsonSchemaProps {
                    r#type: s("array"),
                    items: Some(Box::new(ext::JsonSchemaPropsOrArray {
                        schema: Some(Box::new(string_prop.clone())),
                        j_son_schemas: vec![],
                    })),
                    max_items: Some(0),
                    ..Default::default()
                },
            ),
            (
                "extra".to_string(),
                ext::JsonSchemaProps {
                    r#type: s("object"),
                    additional_properties: Some(Box::new(ext::JsonSchemaPropsOrBool {
                        allows: Some(true),
                        schema: None,
                    })),
                    x_kubernetes_preserve_unknown_fields: Some(true),
                    default: Some(ext::Json {
                        raw: Some(br#"{"a":1}"#.to_vec()),
                    }),
                    ..Default::default()
                },
            ),
        ]
        .into_iter()
        .collect(),
        required: vec!["name".into()],
        ..Default::default()
    };
    let crd = ext::CustomResourceDefinition {
        metadata: Some(meta::ObjectMeta {
            name: s("widgets.example.com"),
            ..Default::default()
        }),
        spec: Some(ext::CustomResourceDefinitionSpec {
            group: s("example.com"),
            names: Some(ext::CustomResourceDefinitionNames {
                plural: s("widgets"),
                kind: s("Widget"),
                ..Default::default()
            }),
            scope: s("Namespaced"),
            versions: vec![ext::CustomResourceDefinitionVersion {
                name: s("v1"),
                served: Some(true),
                storage: Some(true),
                schema: Some(ext::CustomResourceValidation {
                    open_apiv3_schema: Some(schema),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    let got = decode(&envelope(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        crd.encode_to_vec(),
    ))
    .unwrap();
    assert_eq!(
        got["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "extra": {
                    "type": "object", "default": {"a": 1}, "additionalProperties": true,
                    "x-kubernetes-preserve-unknown-fields": true
                },
                "name": {"type": "string"},
                "tags": {"type": "array", "maxItems": 0, "items": {"type": "string"}}
            }
        })
    );
    assert_eq!(got["spec"]["versions"][0]["served"], json!(true));
}

#[test]
fn every_served_kind_has_a_message_and_round_trips() {
    let registry = Registry::get();
    for r in crate::resources::RESOURCES {
        let api_version = r.api_version();
        let idx = registry
            .message_for_kind(&api_version, r.kind)
            .unwrap_or_else(|| panic!("no message for {api_version} {}", r.kind));
        assert_eq!(norm(MESSAGES[idx].name()), norm(r.kind));
        // metadata {name: "x"} (field 1 of every kind) decodes and type-checks.
        let meta = meta::ObjectMeta {
            name: s("x"),
            ..Default::default()
        }
        .encode_to_vec();
        let mut raw = vec![0x0a, meta.len() as u8];
        raw.extend(meta);
        let got = decode(&envelope(&api_version, r.kind, raw)).unwrap();
        assert_eq!(got["metadata"], json!({"name": "x"}), "{}", r.kind);
    }
    for (api_version, kind) in [
        ("policy/v1", "Eviction"),
        ("v1", "DeleteOptions"),
        ("autoscaling/v1", "Scale"),
        ("v1", "Binding"),
        ("authentication.k8s.io/v1", "TokenRequest"),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
        ("storage.k8s.io/v1", "StorageClass"),
        ("storage.k8s.io/v1", "CSIDriver"),
        ("certificates.k8s.io/v1", "CertificateSigningRequest"),
        ("apiregistration.k8s.io/v1", "APIService"),
        ("v1", "Status"),
    ] {
        assert!(
            registry.message_for_kind(api_version, kind).is_some(),
            "{api_version} {kind}"
        );
    }
}

/// Every OpenAPI property of every definition that has a message is produced
/// by some field of it (directly or through an embedded struct): the JSON
/// names match.
#[test]
fn json_names_cover_the_openapi_properties() {
    let definitions = names::definitions();
    let registry = Registry::get();
    let mut checked = 0;
    for (name, def) in &definitions {
        let Some(idx) = registry.message(name.trim_start_matches("io.k8s.")) else {
            continue;
        };
        let Some(props) = def.get("properties").and_then(Value::as_object) else {
            continue;
        };
        let mut produced = Vec::new();
        let mut stack = vec![idx];
        while let Some(i) = stack.pop() {
            for (j, f) in MESSAGES[i].fields.iter().enumerate() {
                let info = &registry.fields[i][j];
                match (info.inline, f.ty) {
                    (true, Ty::Message(child)) => stack.push(child),
                    _ => produced.push(info.json.clone()),
                }
            }
        }
        for p in props.keys() {
            if p == "apiVersion" || p == "kind" {
                continue;
            }
            assert!(
                produced.contains(p),
                "{name}: no field for property {p} (fields: {produced:?})"
            );
            checked += 1;
        }
    }
    assert!(checked > 1500, "only {checked} properties checked");
}

#[test]
fn every_message_type_is_resolved() {
    for m in MESSAGES {
        for f in m.fields {
            assert_ne!(f.ty, Ty::Unknown, "{}.{}", m.path, f.name);
        }
    }
    assert!(MESSAGES.len() > 1000);
}

#[test]
fn pointer_fields_exist() {
    let registry = Registry::get();
    for (path, fields) in POINTER_FIELDS {
        let idx = registry
            .message(path)
            .unwrap_or_else(|| panic!("no message {path}"));
        for f in *fields {
            let info = registry.fields[idx].iter().find(|i| i.json == *f);
            assert!(info.is_some_and(|i| i.keep_zero), "{path}.{f}");
        }
    }
}

#[test]
fn go_durations() {
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(1), "1ns");
    assert_eq!(go_duration(1_500), "1.5µs");
    assert_eq!(go_duration(150_000_000), "150ms");
    assert_eq!(go_duration(1_000_000_000), "1s");
    assert_eq!(go_duration(90_500_000_000), "1m30.5s");
    assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    assert_eq!(go_duration(-2_000_000_000), "-2s");
}

#[test]
fn malformed_bodies_are_rejected() {
    assert!(decode(b"{}").unwrap_err().contains("k8s"));
    assert!(decode(b"k8s\0\x0a\x05\x0a\x02v1").is_err()); // truncated type meta
    let unknown_kind = envelope("example.com/v1", "Gizmo", vec![]);
    assert!(decode(&unknown_kind).unwrap_err().contains("Gizmo"));
    let no_kind = envelope("v1", "", vec![]);
    assert!(decode(&no_kind).is_err());
    // A string field (name) given as a varint.
    let bad = envelope("v1", "ConfigMap", vec![0x0a, 0x02, 0x08, 0x01]);
    assert!(decode(&bad).unwrap_err().contains("ObjectMeta.name"));
    // Deeply nested JSONSchemaProps do not overflow the stack.
    let props_idx = Registry::get()
        .message("apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaProps")
        .unwrap();
    let not_tag = MESSAGES[props_idx]
        .fields
        .iter()
        .find(|f| f.name == "not")
        .unwrap()
        .tag;
    let mut nested = Vec::new();
    for _ in 0..500 {
        // JSONSchemaProps.not wrapping the previous level.
        let key = (not_tag << 3) | 2;
        let mut next = vec![(key as u8 & 0x7f) | 0x80, (key >> 7) as u8];
        let mut len = nested.len();
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                next.push(b);
                break;
            }
            next.push(b | 0x80);
        }
        next.extend(nested);
        nested = next;
    }
    let err = Decoder {
        registry: Registry::get(),
    }
    .message(props_idx, &nested, 0)
    .unwrap_err();
    assert!(err.contains("nested"), "{err}");
}

#[test]
fn embedded_json_content_type_is_accepted() {
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: s("v1"),
            kind: s("ConfigMap"),
        }),
        raw: Some(br#"{"metadata":{"name":"c"},"data":{"a":"b"}}"#.to_vec()),
        content_encoding: None,
        content_type: s("application/json"),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    assert_eq!(
        decode(&body).unwrap(),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}})
    );
}
