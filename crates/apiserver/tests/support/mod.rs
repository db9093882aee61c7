//! An API server on a temporary directory, for the loopback tests and the
//! request_path bench (which includes this file by path).

use std::sync::Arc;

use tug_pki::PeerIdentity;

/// A server on the embedded store in `dir`.
pub async fn start(dir: &std::path::Path) -> tug_apiserver::ApiServer {
    start_on(dir, tug_store::open("", dir).await.expect("store")).await
}

/// A server on `store`, its certificates in `dir`.
pub async fn start_on(dir: &std::path::Path, store: Arc<dyn tug_store::Store>) -> tug_apiserver::ApiServer {
    let sans = tug_pki::ServingSans::for_host("10.43.0.1".parse().unwrap(), "cluster.local", &[]);
    let pki = tug_pki::ClusterPki::load_or_create(&dir.join("tls"), &sans).expect("pki");
    let config = tug_apiserver::Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        service_cidr: "10.43.0.0/16".into(),
        cluster_cidr: "10.42.0.0/16".into(),
        cluster_domain: "cluster.local".into(),
        advertise_address: "127.0.0.1:6443".into(),
        node_token: None,
    };
    tug_apiserver::ApiServer::start(config, store, &pki).await.expect("server")
}

/// The cluster admin, as in-process components call over `Loopback`.
pub fn admin() -> PeerIdentity {
    PeerIdentity { user: tug_pki::ADMIN_USER.into(), groups: vec![tug_pki::ADMIN_GROUP.into()] }
}
