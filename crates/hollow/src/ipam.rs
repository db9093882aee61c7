//! Fake addresses for hollow nodes and their pods.
//!
//! Nothing ever connects to these addresses: they only have to look like a
//! real cluster's (unique per node and per live pod, inside the node's pod
//! CIDR when it has one) so that endpoints, services and the scheduler see
//! realistic objects.

use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Node InternalIPs live in 10.200.0.0/16; pod fallback ranges start at
/// 10.201.0.0/24, one /24 per node, up to 10.255.255.0/24.
const NODE_NET: u32 = 0x0AC8_0000; // 10.200.0.0
const POD_FALLBACK_FIRST_OCTET2: u32 = 201;

/// The number of node indices that get a distinct fallback pod /24
/// (10.201.0.0/24 ..= 10.255.255.0/24).
pub const MAX_NODE_INDEX: usize = (256 - POD_FALLBACK_FIRST_OCTET2 as usize) * 256;

/// The InternalIP of the node with global index `index` (10.200.x.y, never .0).
pub fn node_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::from(NODE_NET + (index as u32 + 1))
}

/// The pod range used when the Node has no `spec.podCIDR`.
pub fn fallback_pod_cidr(index: usize) -> Cidr {
    let i = index as u32;
    let base = (10 << 24) | ((POD_FALLBACK_FIRST_OCTET2 + i / 256) << 16) | ((i % 256) << 8);
    Cidr { base, prefix: 24 }
}

/// An IPv4 CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`; `None` for IPv6 or malformed input (the caller
    /// falls back to the fake range, as a pod IP is only cosmetic here).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, len) = s.trim().split_once('/')?;
        let ip: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = len.parse().ok()?;
        if prefix > 32 {
            return None;
        }
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        Some(Cidr { base: u32::from(ip) & mask, prefix })
    }

    fn size(&self) -> u64 {
        1u64 << (32 - self.prefix as u32)
    }

    /// Usable pod addresses: not the network address, not `.1` (by
    /// convention the node's bridge/gateway, as host-local IPAM leaves it),
    /// not the broadcast address.
    fn host_range(&self) -> Option<(u32, u32)> {
        let size = self.size();
        if size < 4 {
            return None;
        }
        let first = self.base + 2;
        let last = (self.base as u64 + size - 2) as u32;
        Some((first, last))
    }

    #[cfg(test)]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip) as u64;
        v >= self.base as u64 && v < self.base as u64 + self.size()
    }

    /// How many pod addresses the range holds.
    pub fn capacity(&self) -> u64 {
        self.host_range().map(|(a, b)| (b - a) as u64 + 1).unwrap_or(0)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// One node's pod address allocator. Keyed by address rather than by range
/// so that a pod CIDR assigned after some pods started (node IPAM runs
/// after registration) does not confuse releases.
#[derive(Default, Debug)]
pub struct NodeIpam {
    used: HashSet<Ipv4Addr>,
    /// Round-robin cursor, as host-local IPAM does: a just-released address
    /// is not handed out again at once, so a stale endpoint never points at
    /// a new pod right away.
    cursor: u32,
}

impl NodeIpam {
    pub fn allocate(&mut self, cidr: Cidr) -> Option<Ipv4Addr> {
        let (first, last) = cidr.host_range()?;
        let span = last - first + 1;
        let start = if self.cursor >= first && self.cursor <= last { self.cursor } else { first };
        for k in 0..span {
            let v = first + ((start - first + k) % span);
            let ip = Ipv4Addr::from(v);
            if self.used.insert(ip) {
                self.cursor = if v == last { first } else { v + 1 };
                return Some(ip);
            }
        }
        None
    }

    /// Marks an address found on an existing pod (adoption after a restart).
    pub fn reserve(&mut self, ip: Ipv4Addr) {
        self.used.insert(ip);
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_and_fallback_ranges_are_distinct_per_index() {
        assert_eq!(node_ip(0), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(node_ip(255), Ipv4Addr::new(10, 200, 1, 0));
        assert_eq!(fallback_pod_cidr(0).to_string(), "10.201.0.0/24");
        assert_eq!(fallback_pod_cidr(257).to_string(), "10.202.1.0/24");
        assert_eq!(fallback_pod_cidr(MAX_NODE_INDEX - 1).to_string(), "10.255.255.0/24");
        let mut seen = HashSet::new();
        for i in 0..MAX_NODE_INDEX {
            assert!(seen.insert(fallback_pod_cidr(i).to_string()));
        }
    }

    #[test]
    fn parse_rejects_ipv6_and_garbage() {
        assert_eq!(Cidr::parse("10.42.3.0/24").unwrap().to_string(), "10.42.3.0/24");
        assert_eq!(Cidr::parse("10.42.3.7/24").unwrap().to_string(), "10.42.3.0/24");
        assert!(Cidr::parse("fd00::/64").is_none());
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("10.0.0.0").is_none());
    }

    #[test]
    fn allocates_inside_the_range_without_duplicates_until_full() {
        let cidr = Cidr::parse("10.42.7.0/24").unwrap();
        assert_eq!(cidr.capacity(), 253);
        let mut ipam = NodeIpam::default();
        let mut got = HashSet::new();
        for _ in 0..253 {
            let ip = ipam.allocate(cidr).expect("an address");
            assert!(cidr.contains(ip), "{ip} outside {cidr}");
            assert_ne!(ip, Ipv4Addr::new(10, 42, 7, 0));
            assert_ne!(ip, Ipv4Addr::new(10, 42, 7, 1));
            assert_ne!(ip, Ipv4Addr::new(10, 42, 7, 255));
            assert!(got.insert(ip), "{ip} handed out twice");
        }
        assert_eq!(ipam.allocate(cidr), None, "the range is full");
        ipam.release(Ipv4Addr::new(10, 42, 7, 100));
        assert_eq!(ipam.allocate(cidr), Some(Ipv4Addr::new(10, 42, 7, 100)));
    }

    #[test]
    fn released_address_is_not_reused_immediately() {
        let cidr = Cidr::parse("10.42.7.0/24").unwrap();
        let mut ipam = NodeIpam::default();
        let a = ipam.allocate(cidr).unwrap();
        ipam.release(a);
        let b = ipam.allocate(cidr).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn reserve_skips_adopted_addresses() {
        let cidr = Cidr::parse("10.42.7.0/30").unwrap(); // hosts .2 only
        let mut ipam = NodeIpam::default();
        ipam.reserve(Ipv4Addr::new(10, 42, 7, 2));
        assert_eq!(ipam.allocate(cidr), None);
    }
}
