//! Node IPAM against the real `tug server` binary (build it first:
//! `cargo build -p tug`): pod CIDRs handed out once each, kept across a
//! restart of the controller, freed when a Node goes.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{Cluster, eventually, obj};
use tug_controllers::ControllerConfig;
use tug_controllers::node_ipam::Ipv4Net;

const WAIT: Duration = Duration::from_secs(30);

/// A /22: room for four /24s.
fn config() -> ControllerConfig {
    ControllerConfig {
        cluster_cidr: "10.42.0.0/22".into(),
        node_cidr_mask_size: 24,
        ..Default::default()
    }
}

struct Ipam(tokio::task::JoinHandle<anyhow::Result<()>>);

impl Drop for Ipam {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start(client: &Client) -> Ipam {
    Ipam(tokio::spawn(tug_controllers::node_ipam::run(
        client.clone(),
        config(),
    )))
}

async fn create_node(client: &Client, name: &str, pod_cidr: Option<&str>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let spec = match pod_cidr {
        Some(c) => json!({"podCIDR": c, "podCIDRs": [c]}),
        None => json!({}),
    };
    nodes
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": name}, "spec": spec})),
        )
        .await
        .unwrap();
}

/// name → (podCIDR, podCIDRs, resourceVersion) of every Node.
async fn cidrs(client: &Client) -> BTreeMap<String, (Option<String>, Vec<String>, String)> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| {
            let spec = n.spec.clone().unwrap_or_default();
            (
                n.name_any(),
                (
                    spec.pod_cidr,
                    spec.pod_cidrs.unwrap_or_default(),
                    n.resource_version().unwrap_or_default(),
                ),
            )
        })
        .collect()
}

async fn wait_assigned(
    client: &Client,
    names: &[&str],
) -> BTreeMap<String, (Option<String>, Vec<String>, String)> {
    eventually(&format!("pod CIDRs for {names:?}"), WAIT, || async {
        let all = cidrs(client).await;
        names
            .iter()
            .all(|n| all.get(*n).is_some_and(|(c, _, _)| c.is_some()))
            .then_some(all)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_cidrs_are_unique_survive_restarts_and_are_freed() {
    let (_server, client) = Cluster::bare().await;
    let cluster = Ipv4Net::parse("10.42.0.0/22").unwrap();
    // One Node already has a CIDR (an earlier run, or set by hand).
    create_node(&client, "pre", Some("10.42.0.0/24")).await;
    create_node(&client, "a", None).await;
    create_node(&client, "b", None).await;

    let ipam = start(&client);
    let first = wait_assigned(&client, &["a", "b"]).await;
    let mut seen = std::collections::BTreeSet::new();
    for (name, (cidr, list, _)) in &first {
        let cidr = cidr.clone().unwrap();
        assert_eq!(
            list,
            &vec![cidr.clone()],
            "{name}: podCIDRs carries the same CIDR"
        );
        let net = Ipv4Net::parse(&cidr).unwrap();
        assert_eq!(net.prefix(), 24, "{name}: {cidr}");
        assert_eq!(net.to_string(), cidr, "{name}: a network address");
        assert!(
            cluster.contains_net(&net),
            "{name}: {cidr} inside {cluster}"
        );
        assert!(
            seen.insert(cidr.clone()),
            "{cidr} handed out twice: {first:?}"
        );
    }
    assert_eq!(
        first["pre"].0.as_deref(),
        Some("10.42.0.0/24"),
        "an existing CIDR is kept"
    );

    // Restart the controller with a Node created while it was down: the
    // used subnets are rebuilt from the Nodes, so the newcomer gets the
    // only free one and nobody is reassigned.
    drop(ipam);
    create_node(&client, "c", None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cidrs(&client).await["c"].0,
        None,
        "nothing assigns while the controller is down"
    );
    let ipam = start(&client);
    let second = wait_assigned(&client, &["c"]).await;
    assert_eq!(second["c"].0.as_deref(), Some("10.42.3.0/24"), "{second:?}");
    for n in ["pre", "a", "b"] {
        assert_eq!(
            second[n], first[n],
            "{n} is left alone (same CIDR, same resourceVersion)"
        );
    }

    // The range is full: the next Node waits, with an event; deleting a
    // Node frees its subnet for it.
    create_node(&client, "d", None).await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("a CIDRNotAvailable event for d", WAIT, || async {
        let list = events.list(&ListParams::default()).await.unwrap().items;
        list.iter()
            .any(|e| {
                e.involved_object.name.as_deref() == Some("d")
                    && e.reason.as_deref() == Some("CIDRNotAvailable")
                    && e.message.as_deref() == Some("Node d status is now: CIDRNotAvailable")
            })
            .then_some(())
    })
    .await;
    assert_eq!(cidrs(&client).await["d"].0, None);
    let freed = second["b"].0.clone().unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.delete("b", &DeleteParams::default()).await.unwrap();
    let third = wait_assigned(&client, &["d"]).await;
    assert_eq!(
        third["d"].0.as_deref(),
        Some(freed.as_str()),
        "d gets the subnet b freed"
    );
    drop(ipam);
}
