//! Subject alternative names for the API server's serving certificate.
//!
//! Clients verify the API server by the name or address they dialled, so the
//! serving certificate must list every way it is reached: from the host
//! (`localhost`, loopback, hostname, host addresses) and from pods (the
//! `kubernetes` Service's DNS names and ClusterIP).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// DNS names and IP addresses the serving certificate must cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServingSans {
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl ServingSans {
    /// The SANs the API server needs on this host, like k3s does:
    /// `localhost`, `kubernetes`, `kubernetes.default`, `kubernetes.default.svc`,
    /// `kubernetes.default.svc.<cluster_domain>`, the hostname, `127.0.0.1`, `::1`,
    /// `service_ip` (the first service IP, where the `kubernetes` Service points)
    /// and the host's global unicast addresses. `extra` entries (like `--tls-san`)
    /// are IPs if they parse as one, DNS names otherwise.
    pub fn for_host(service_ip: IpAddr, cluster_domain: &str, extra: &[String]) -> Self {
        let mut sans = ServingSans::default();
        for dns in [
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            format!(
                "kubernetes.default.svc.{}",
                cluster_domain.trim_matches('.')
            ),
        ] {
            sans.push(&dns);
        }
        if let Some(host) = hostname() {
            sans.push(&host);
        }
        sans.push_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        sans.push_ip(IpAddr::V6(Ipv6Addr::LOCALHOST));
        sans.push_ip(service_ip);
        for ip in host_addresses() {
            sans.push_ip(ip);
        }
        for e in extra {
            sans.push(e);
        }
        sans
    }

    /// Adds one SAN (an IP if it parses as one, else a DNS name), skipping duplicates.
    pub fn push(&mut self, san: &str) {
        let san = san.trim();
        if san.is_empty() {
            return;
        }
        if let Ok(ip) = san.parse::<IpAddr>() {
            self.push_ip(ip);
        } else if !self.dns_names.iter().any(|d| d.eq_ignore_ascii_case(san)) {
            self.dns_names.push(san.to_string());
        }
    }

    /// Adds one IP SAN, skipping duplicates.
    pub fn push_ip(&mut self, ip: IpAddr) {
        if !self.ips.contains(&ip) {
            self.ips.push(ip);
        }
    }

    /// All SANs as strings, the form rcgen's `CertificateParams::new` takes.
    pub(crate) fn to_strings(&self) -> Vec<String> {
        self.dns_names
            .iter()
            .cloned()
            .chain(self.ips.iter().map(|ip| ip.to_string()))
            .collect()
    }

    /// Whether `cert` already lists every SAN requested here; if not, the
    /// serving certificate has to be reissued (e.g. the host got a new address).
    pub(crate) fn covered_by(&self, cert: &X509Certificate<'_>) -> bool {
        let Ok(Some(ext)) = cert.subject_alternative_name() else {
            return self.dns_names.is_empty() && self.ips.is_empty();
        };
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(*d),
                GeneralName::IPAddress(b) => {
                    if let Some(ip) = ip_from_bytes(b) {
                        ips.push(ip);
                    }
                }
                _ => {}
            }
        }
        self.dns_names
            .iter()
            .all(|want| dns.iter().any(|have| have.eq_ignore_ascii_case(want)))
            && self.ips.iter().all(|want| ips.contains(want))
    }
}

pub(crate) fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

/// The kernel's hostname; read from procfs so no libc binding is needed.
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty() && s.is_ascii())
}

/// The host's non-loopback unicast addresses, from procfs (Linux only; empty
/// elsewhere). Avoids a netlink/getifaddrs dependency for one startup lookup.
fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(s) = std::fs::read_to_string("/proc/net/fib_trie") {
        out.extend(parse_fib_trie(&s).into_iter().map(IpAddr::V4));
    }
    if let Ok(s) = std::fs::read_to_string("/proc/net/if_inet6") {
        out.extend(parse_if_inet6(&s).into_iter().map(IpAddr::V6));
    }
    out
}

/// Local IPv4 addresses in `/proc/net/fib_trie`: a `|-- <addr>` leaf followed by
/// a `/32 host LOCAL` line. Loopback is dropped; duplicates (the trie is printed
/// once per table) are removed.
pub(crate) fn parse_fib_trie(s: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in s.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("|-- ") {
            last = addr.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(ip) = last.take()
            && !ip.is_loopback()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// Global-scope IPv6 addresses in `/proc/net/if_inet6` (columns: address in
/// 32 hex digits, ifindex, prefix length, scope, flags, name). Link-local and
/// loopback addresses are useless in a certificate, so only scope 0 is kept.
pub(crate) fn parse_if_inet6(s: &str) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    for line in s.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 4 || cols[0].len() != 32 || cols[3] != "00" {
            continue;
        }
        let Ok(bits) = u128::from_str_radix(cols[0], 16) else {
            continue;
        };
        let ip = Ipv6Addr::from(bits);
        if !ip.is_loopback() && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.2
              /32 host LOCAL
           |-- 10.1.2.3
              /32 host LOCAL
";

    #[test]
    fn fib_trie_local_addresses() {
        assert_eq!(
            parse_fib_trie(FIB_TRIE),
            vec![Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(10, 1, 2, 3)]
        );
    }

    #[test]
    fn if_inet6_global_addresses() {
        let s = "00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 04 40 00 82     eth0
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
";
        assert_eq!(
            parse_if_inet6(s),
            vec!["fd00::2".parse::<Ipv6Addr>().unwrap()]
        );
    }

    #[test]
    fn for_host_has_kubernetes_names() {
        let sans = ServingSans::for_host(
            "10.43.0.1".parse().unwrap(),
            "cluster.local",
            &[
                "api.example.com".into(),
                "203.0.113.9".into(),
                "LOCALHOST".into(),
            ],
        );
        for d in [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "api.example.com",
        ] {
            assert!(
                sans.dns_names.iter().any(|x| x == d),
                "missing {d}: {sans:?}"
            );
        }
        // "LOCALHOST" is a case-insensitive duplicate of "localhost".
        assert_eq!(
            sans.dns_names
                .iter()
                .filter(|d| d.eq_ignore_ascii_case("localhost"))
                .count(),
            1
        );
        for ip in ["127.0.0.1", "::1", "10.43.0.1", "203.0.113.9"] {
            assert!(
                sans.ips.contains(&ip.parse().unwrap()),
                "missing {ip}: {sans:?}"
            );
        }
    }
}
