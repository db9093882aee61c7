//! Builders for pods and nodes in unit tests.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};

use crate::framework::{NodeInfo, PodInfo};

pub struct PodBuilder {
    v: Value,
}

fn pairs(p: &[(&str, &str)]) -> Value {
    Value::Object(p.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
}

impl PodBuilder {
    pub fn new(name: &str) -> PodBuilder {
        PodBuilder {
            v: json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
                "spec": {"containers": [], "schedulerName": "default-scheduler"},
                "status": {"phase": "Pending"}
            }),
        }
    }
    fn spec(&mut self) -> &mut serde_json::Map<String, Value> {
        self.v["spec"].as_object_mut().unwrap()
    }
    pub fn namespace(mut self, ns: &str) -> Self {
        self.v["metadata"]["namespace"] = json!(ns);
        self
    }
    #[allow(dead_code)]
    pub fn uid(mut self, uid: &str) -> Self {
        self.v["metadata"]["uid"] = json!(uid);
        self
    }
    pub fn labels(mut self, l: &[(&str, &str)]) -> Self {
        self.v["metadata"]["labels"] = pairs(l);
        self
    }
    pub fn priority(mut self, p: i32) -> Self {
        self.spec().insert("priority".into(), json!(p));
        self
    }
    pub fn node(mut self, n: &str) -> Self {
        self.spec().insert("nodeName".into(), json!(n));
        self
    }
    pub fn nominated(mut self, n: &str) -> Self {
        self.v["status"]["nominatedNodeName"] = json!(n);
        self
    }
    pub fn container_req(mut self, reqs: &[(&str, &str)]) -> Self {
        let n = self.v["spec"]["containers"].as_array().unwrap().len();
        let c = json!({"name": format!("c{n}"), "image": "busybox", "resources": {"requests": pairs(reqs)}});
        self.v["spec"]["containers"].as_array_mut().unwrap().push(c);
        self
    }
    /// A container without requests.
    pub fn container(self) -> Self {
        self.container_req(&[])
    }
    pub fn init_container_req(mut self, reqs: &[(&str, &str)], restartable: bool) -> Self {
        let list = self.spec().entry("initContainers").or_insert(json!([]));
        let n = list.as_array().unwrap().len();
        let mut c = json!({"name": format!("i{n}"), "image": "busybox", "resources": {"requests": pairs(reqs)}});
        if restartable {
            c["restartPolicy"] = json!("Always");
        }
        list.as_array_mut().unwrap().push(c);
        self
    }
    pub fn overhead(mut self, o: &[(&str, &str)]) -> Self {
        self.spec().insert("overhead".into(), pairs(o));
        self
    }
    pub fn host_port(mut self, port: i32, protocol: &str, ip: &str) -> Self {
        if self.v["spec"]["containers"].as_array().unwrap().is_empty() {
            self = self.container();
        }
        let c = &mut self.v["spec"]["containers"][0];
        let ports = c.as_object_mut().unwrap().entry("ports").or_insert(json!([]));
        let mut p = json!({"containerPort": port, "hostPort": port, "protocol": protocol});
        if !ip.is_empty() {
            p["hostIP"] = json!(ip);
        }
        ports.as_array_mut().unwrap().push(p);
        self
    }
    pub fn node_selector(mut self, s: &[(&str, &str)]) -> Self {
        self.spec().insert("nodeSelector".into(), pairs(s));
        self
    }
    /// Required node affinity: terms (ORed) of (key, operator, values) expressions.
    pub fn node_affinity_in(mut self, terms: &[&[(&str, &str, &[&str])]]) -> Self {
        let terms: Vec<Value> = terms
            .iter()
            .map(|exprs| json!({"matchExpressions": exprs.iter().map(|(k, op, vals)| json!({"key": k, "operator": op, "values": vals})).collect::<Vec<_>>()}))
            .collect();
        self.v["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({"nodeSelectorTerms": terms});
        self
    }
    pub fn node_affinity_preferred(mut self, prefs: &[(i32, &str, &str, &[&str])]) -> Self {
        let p: Vec<Value> = prefs
            .iter()
            .map(|(w, k, op, vals)| json!({"weight": w, "preference": {"matchExpressions": [{"key": k, "operator": op, "values": vals}]}}))
            .collect();
        self.v["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] = json!(p);
        self
    }
    pub fn toleration(mut self, key: &str, op: &str, value: &str, effect: &str) -> Self {
        let list = self.spec().entry("tolerations").or_insert(json!([]));
        let mut t = json!({"operator": op});
        if !key.is_empty() {
            t["key"] = json!(key);
        }
        if !value.is_empty() {
            t["value"] = json!(value);
        }
        if !effect.is_empty() {
            t["effect"] = json!(effect);
        }
        list.as_array_mut().unwrap().push(t);
        self
    }
    fn affinity_term(labels: &[(&str, &str)], topology_key: &str) -> Value {
        json!({"labelSelector": {"matchLabels": pairs(labels)}, "topologyKey": topology_key})
    }
    pub fn pod_affinity(mut self, labels: &[(&str, &str)], topology_key: &str) -> Self {
        let list = self.v["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"].take();
        let mut list = if list.is_null() { json!([]) } else { list };
        list.as_array_mut().unwrap().push(Self::affinity_term(labels, topology_key));
        self.v["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = list;
        self
    }
    pub fn pod_anti_affinity(mut self, labels: &[(&str, &str)], topology_key: &str) -> Self {
        let list = self.v["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"].take();
        let mut list = if list.is_null() { json!([]) } else { list };
        list.as_array_mut().unwrap().push(Self::affinity_term(labels, topology_key));
        self.v["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = list;
        self
    }
    pub fn preferred_pod_affinity(mut self, weight: i32, labels: &[(&str, &str)], topology_key: &str) -> Self {
        let list = self.v["spec"]["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"].take();
        let mut list = if list.is_null() { json!([]) } else { list };
        list.as_array_mut().unwrap().push(json!({"weight": weight, "podAffinityTerm": Self::affinity_term(labels, topology_key)}));
        self.v["spec"]["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] = list;
        self
    }
    pub fn preferred_pod_anti_affinity(mut self, weight: i32, labels: &[(&str, &str)], topology_key: &str) -> Self {
        let list = self.v["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"].take();
        let mut list = if list.is_null() { json!([]) } else { list };
        list.as_array_mut().unwrap().push(json!({"weight": weight, "podAffinityTerm": Self::affinity_term(labels, topology_key)}));
        self.v["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] = list;
        self
    }
    pub fn spread(mut self, max_skew: i32, topology_key: &str, when: &str, labels: &[(&str, &str)]) -> Self {
        let list = self.spec().entry("topologySpreadConstraints").or_insert(json!([]));
        list.as_array_mut().unwrap().push(json!({
            "maxSkew": max_skew, "topologyKey": topology_key, "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": pairs(labels)}
        }));
        self
    }
    pub fn min_domains(mut self, n: i32) -> Self {
        let list = self.v["spec"]["topologySpreadConstraints"].as_array_mut().unwrap();
        list.last_mut().unwrap()["minDomains"] = json!(n);
        self
    }
    pub fn terminating(mut self) -> Self {
        self.v["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        self
    }
    pub fn preempted(mut self) -> Self {
        self.v["status"]["conditions"] = json!([{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]);
        self.terminating()
    }
    pub fn start_time(mut self, t: &str) -> Self {
        self.v["status"]["startTime"] = json!(t);
        self
    }
    pub fn preemption_policy(mut self, p: &str) -> Self {
        self.spec().insert("preemptionPolicy".into(), json!(p));
        self
    }
    pub fn scheduling_gate(mut self, name: &str) -> Self {
        let list = self.spec().entry("schedulingGates").or_insert(json!([]));
        list.as_array_mut().unwrap().push(json!({"name": name}));
        self
    }
    pub fn json(self) -> Value {
        self.v
    }
    pub fn build(self) -> Pod {
        serde_json::from_value(self.v).expect("a valid pod")
    }
    pub fn info(self) -> Arc<PodInfo> {
        PodInfo::from_pod(self.build())
    }
}

pub struct NodeBuilder {
    v: Value,
}

impl NodeBuilder {
    /// A node with allocatable cpu 4, memory 8Gi, pods 110 unless changed.
    pub fn new(name: &str) -> NodeBuilder {
        NodeBuilder {
            v: json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": {},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
            }),
        }
    }
    pub fn labels(mut self, l: &[(&str, &str)]) -> Self {
        for (k, v) in l {
            self.v["metadata"]["labels"][*k] = json!(v);
        }
        self
    }
    pub fn allocatable(mut self, a: &[(&str, &str)]) -> Self {
        self.v["status"]["allocatable"] = pairs(a);
        self
    }
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        let list = self.v["spec"].as_object_mut().unwrap().entry("taints").or_insert(json!([]));
        let mut t = json!({"key": key, "effect": effect});
        if !value.is_empty() {
            t["value"] = json!(value);
        }
        list.as_array_mut().unwrap().push(t);
        self
    }
    pub fn unschedulable(mut self) -> Self {
        self.v["spec"]["unschedulable"] = json!(true);
        self
    }
    pub fn build(self) -> Node {
        serde_json::from_value(self.v).expect("a valid node")
    }
    pub fn info(self) -> NodeInfo {
        NodeInfo::new(Arc::new(self.build()))
    }
    /// A NodeInfo with these pods on it.
    pub fn with_pods(self, pods: &[Arc<PodInfo>]) -> NodeInfo {
        let mut ni = self.info();
        for p in pods {
            ni.add_pod(p.clone());
        }
        ni
    }
}
