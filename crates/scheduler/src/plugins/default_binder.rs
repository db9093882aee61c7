//! DefaultBinder: POST `pods/{name}/binding` with a Binding to the node.

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{Api, PostParams};
use kube::Client;

use crate::framework::{BindPlugin, Plugin, Status};
use crate::helpers;

pub const NAME: &str = "DefaultBinder";

pub struct DefaultBinder {
    client: Client,
}

impl DefaultBinder {
    pub fn new(client: Client) -> DefaultBinder {
        DefaultBinder { client }
    }
}

impl Plugin for DefaultBinder {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// The Binding object upstream's binder posts.
pub fn binding_for(pod: &Pod, node_name: &str) -> Binding {
    Binding {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference { kind: Some("Node".into()), name: Some(node_name.to_string()), ..Default::default() },
    }
}

#[async_trait::async_trait]
impl BindPlugin for DefaultBinder {
    async fn bind(&self, pod: &Pod, node_name: &str) -> Status {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), helpers::pod_namespace(pod));
        let binding = binding_for(pod, node_name);
        match api.create_subresource::<_, serde_json::Value>("binding", helpers::pod_name(pod), &PostParams::default(), &binding).await {
            Ok(_) => Status::success(),
            Err(e) => Status::error(format!("binding rejected: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::PodBuilder;

    #[test]
    fn binding_targets_the_node_and_carries_the_pod_uid() {
        let pod = PodBuilder::new("p").namespace("ns").build();
        let b = binding_for(&pod, "n1");
        assert_eq!(b.metadata.name.as_deref(), Some("p"));
        assert_eq!(b.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(b.metadata.uid.as_deref(), Some("uid-p"));
        assert_eq!(b.target.kind.as_deref(), Some("Node"));
        assert_eq!(b.target.name.as_deref(), Some("n1"));
    }
}
