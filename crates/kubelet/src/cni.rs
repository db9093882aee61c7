//! The node's CNI configuration: a bridge (gateway on the node, masquerade
//! for traffic leaving the pod network, hairpin mode so a pod reaches its
//! own Service) with host-local IPAM over the node's podCIDR, plus portmap
//! for hostPort. The runtime (containerd's CRI plugin) calls the plugins;
//! it brings up each sandbox's loopback itself with the `loopback` plugin,
//! which is also written as a conf of its own for runtimes that do not.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

/// The network name: `tugboat-<bridge>` (host-local keeps its leases under
/// `<dataDir>/<name>`; the masquerade rules carry it in their comments).
pub fn network_name(bridge: &str) -> String {
    format!("tugboat-{bridge}")
}
/// The file the runtime loads (first in lexical order).
pub const CONFLIST_FILE: &str = "10-tugboat.conflist";

#[derive(Clone, Debug)]
pub struct CniConfig {
    /// Linux bridge name (at most 15 bytes).
    pub bridge: String,
    /// The node's podCIDR (`10.42.3.0/24`).
    pub pod_cidr: String,
    /// host-local's lease directory.
    pub ipam_data_dir: PathBuf,
    /// Interface MTU (0: the plugin's default).
    pub mtu: u32,
}

/// The bridge + host-local + portmap conflist.
pub fn conflist(c: &CniConfig) -> Value {
    let mut bridge = json!({
        "type": "bridge",
        "bridge": c.bridge,
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": c.pod_cidr}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": c.ipam_data_dir,
        },
    });
    if c.mtu > 0 {
        bridge["mtu"] = json!(c.mtu);
    }
    json!({
        "cniVersion": "1.0.0",
        "name": network_name(&c.bridge),
        "plugins": [
            bridge,
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
        ],
    })
}

/// The loopback network (containerd adds it itself; CRI-O reads this file).
pub fn loopback_conf() -> Value {
    json!({"cniVersion": "1.0.0", "name": "loopback", "type": "loopback"})
}

/// Writes the configuration into `conf_dir` (atomically: the runtime
/// watches the directory and must never read half a file).
pub fn write(conf_dir: &Path, c: &CniConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(conf_dir)
        .with_context(|| format!("creating {}", conf_dir.display()))?;
    std::fs::create_dir_all(&c.ipam_data_dir)?;
    write_atomic(&conf_dir.join(CONFLIST_FILE), &conflist(c))?;
    write_atomic(&conf_dir.join("99-loopback.conf"), &loopback_conf())?;
    Ok(())
}

fn write_atomic(path: &Path, v: &Value) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(v)?)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The gateway (first host) address of an IPv4 CIDR: the bridge's address.
pub fn gateway(cidr: &str) -> Option<std::net::Ipv4Addr> {
    let (addr, len) = cidr.split_once('/')?;
    let ip: std::net::Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    if len > 30 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some(std::net::Ipv4Addr::from((u32::from(ip) & mask) + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_shape() {
        let c = CniConfig {
            bridge: "tugbr-1".into(),
            pod_cidr: "10.42.3.0/24".into(),
            ipam_data_dir: "/d/ipam".into(),
            mtu: 0,
        };
        let v = conflist(&c);
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(v["plugins"][0]["bridge"], "tugbr-1");
        assert_eq!(v["plugins"][0]["hairpinMode"], true);
        assert_eq!(v["plugins"][0]["isGateway"], true);
        assert_eq!(v["plugins"][0]["ipMasq"], true);
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.3.0/24"
        );
        assert_eq!(v["plugins"][1]["type"], "portmap");
        assert_eq!(gateway("10.42.3.0/24"), Some("10.42.3.1".parse().unwrap()));
        assert_eq!(gateway("10.42.3.7/24"), Some("10.42.3.1".parse().unwrap()));
    }
}
