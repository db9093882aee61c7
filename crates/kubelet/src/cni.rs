//! The node's CNI configuration: a bridge (gateway on the node, hairpin
//! mode so a pod reaches its own Service) with host-local IPAM over the
//! node's podCIDR, plus portmap for hostPort. The runtime (containerd's CRI
//! plugin) calls the plugins; it brings up each sandbox's loopback itself
//! with the `loopback` plugin, which is also written as a conf of its own
//! for runtimes that do not.
//!
//! Traffic leaving the pod network is masqueraded by one nftables rule for
//! the whole podCIDR ([`install_masquerade`]), as kubenet and flannel do,
//! not by the bridge plugin's `ipMasq`: that adds an iptables chain and
//! three rules for every sandbox, about 20 ms of each pod's start and 60 ms
//! of its teardown on these machines (measured with the plugin alone).

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
        // Masquerading is the node's one rule (install_masquerade).
        "ipMasq": false,
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

/// The nftables table holding a bridge's masquerade rule
/// (`tugboat_masq_<bridge>`, dashes made underscores).
pub fn masquerade_table(bridge: &str) -> String {
    let name: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("tugboat_masq_{name}")
}

/// The nft script that (re)creates the table in one transaction: traffic
/// from the podCIDR to anywhere outside it (multicast aside) leaves with
/// the node's address, as the bridge plugin's per-pod `ipMasq` rules did.
pub fn masquerade_script(c: &CniConfig) -> String {
    let t = masquerade_table(&c.bridge);
    let cidr = &c.pod_cidr;
    format!(
        "{}\
         table ip {t} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {cidr} ip daddr != {cidr} ip daddr != 224.0.0.0/4 masquerade\n\
         \t}}\n\
         }}\n",
        drop_table_script(&t)
    )
}

/// Deletes table `t`, creating it first so that the script does not fail
/// when it is not there (nft has no "delete if it exists" in 1.0).
fn drop_table_script(t: &str) -> String {
    format!("table ip {t} {{}}\ndelete table ip {t}\n")
}

/// Installs (or replaces) the podCIDR's masquerade rule. It outlives the
/// agent, as the pods do; [`remove_masquerade`] takes it away.
pub fn install_masquerade(c: &CniConfig) -> anyhow::Result<()> {
    nft(&masquerade_script(c)).context("installing the pod network's masquerade rule")
}

/// Removes the bridge's masquerade table, if it is there.
pub fn remove_masquerade(bridge: &str) -> anyhow::Result<()> {
    nft(&drop_table_script(&masquerade_table(bridge)))
}

fn nft(script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "nft -f failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
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
        assert_eq!(v["plugins"][0]["ipMasq"], false);
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.3.0/24"
        );
        assert_eq!(v["plugins"][1]["type"], "portmap");
        assert_eq!(gateway("10.42.3.0/24"), Some("10.42.3.1".parse().unwrap()));
        assert_eq!(gateway("10.42.3.7/24"), Some("10.42.3.1".parse().unwrap()));
    }

    #[test]
    fn masquerade_script_shape() {
        let c = CniConfig {
            bridge: "tug-br0".into(),
            pod_cidr: "10.42.3.0/24".into(),
            ipam_data_dir: "/d/ipam".into(),
            mtu: 0,
        };
        assert_eq!(masquerade_table("tug-br0"), "tugboat_masq_tug_br0");
        let s = masquerade_script(&c);
        assert!(s.starts_with("table ip tugboat_masq_tug_br0 {}\ndelete table ip tugboat_masq_tug_br0\n"), "{s}");
        assert!(s.contains("type nat hook postrouting priority srcnat;"), "{s}");
        assert!(
            s.contains("ip saddr 10.42.3.0/24 ip daddr != 10.42.3.0/24 ip daddr != 224.0.0.0/4 masquerade"),
            "{s}"
        );
    }

    /// The rule goes into the kernel and comes out again (needs root and
    /// nft, which scripts/setup.sh installs).
    #[test]
    fn masquerade_rule_is_installed_replaced_and_removed() {
        let bridge = format!("tugm{}", std::process::id() % 100_000);
        let table = masquerade_table(&bridge);
        let list = || {
            std::process::Command::new("nft")
                .args(["list", "table", "ip", &table])
                .output()
                .map(|o| (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned()))
                .unwrap()
        };
        let mut c = CniConfig {
            bridge: bridge.clone(),
            pod_cidr: "10.239.1.0/24".into(),
            ipam_data_dir: "/d/ipam".into(),
            mtu: 0,
        };
        struct Cleanup(String);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = remove_masquerade(&self.0);
            }
        }
        let _cleanup = Cleanup(bridge.clone());
        install_masquerade(&c).unwrap();
        let (ok, text) = list();
        assert!(ok && text.contains("ip saddr 10.239.1.0/24 ip daddr != 10.239.1.0/24"), "{text}");
        assert!(text.contains("masquerade"), "{text}");
        // A new podCIDR replaces the rule; it is not added beside it.
        c.pod_cidr = "10.239.2.0/24".into();
        install_masquerade(&c).unwrap();
        let (_, text) = list();
        assert!(text.contains("10.239.2.0/24") && !text.contains("10.239.1.0/24"), "{text}");
        assert_eq!(text.matches("masquerade").count(), 1, "{text}");
        remove_masquerade(&bridge).unwrap();
        assert!(!list().0, "the table is still there");
        // Removing what is not there is fine.
        remove_masquerade(&bridge).unwrap();
    }
}
