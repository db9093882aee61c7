//! Service cluster IP and node port allocation.
//!
//! Each allocation is a key in the store created with create-if-absent, so
//! that two API servers sharing one etcd can never hand out the same IP or
//! port: the store's compare-and-swap is the lock.

use std::net::Ipv4Addr;
use std::sync::Arc;

use tug_store::{Store, StoreError};

const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";
pub const NODE_PORT_MIN: u16 = 30000;
pub const NODE_PORT_MAX: u16 = 32767;

pub struct Allocator {
    store: Arc<dyn Store>,
    base: u32,
    size: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("provided IP {0} is not in the valid range. The range of valid IPs is {1}")]
    OutOfRange(String, String),
    #[error("provided IP is already allocated")]
    IpTaken,
    #[error("provided port is already allocated")]
    PortTaken,
    #[error("provided port is not in the valid range. The range of valid ports is 30000-32767")]
    PortOutOfRange,
    #[error("range is full")]
    Full,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Allocator {
    /// `cidr` is the service range, e.g. `10.43.0.0/16`.
    pub fn new(store: Arc<dyn Store>, cidr: &str) -> anyhow::Result<Allocator> {
        let (addr, len) = cidr.split_once('/').ok_or_else(|| anyhow::anyhow!("bad CIDR {cidr}"))?;
        let addr: Ipv4Addr = addr.parse()?;
        let len: u32 = len.parse()?;
        anyhow::ensure!((8..=30).contains(&len), "service CIDR prefix must be between /8 and /30");
        let mask = u32::MAX << (32 - len);
        Ok(Allocator { store, base: u32::from(addr) & mask, size: 1 << (32 - len) })
    }

    pub fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), 32 - self.size.trailing_zeros())
    }

    /// The first usable address (the `kubernetes` Service's).
    pub fn first_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    /// Claims `ip` (when given) or the next free one, for `owner` (`ns/name`).
    pub async fn allocate_ip(&self, ip: Option<&str>, owner: &str) -> Result<String, AllocError> {
        if let Some(ip) = ip {
            let parsed: Ipv4Addr = ip.parse().map_err(|_| AllocError::OutOfRange(ip.into(), self.cidr()))?;
            let n = u32::from(parsed);
            if n <= self.base || n >= self.base + self.size - 1 {
                return Err(AllocError::OutOfRange(ip.into(), self.cidr()));
            }
            return match self.store.create(&format!("{IP_PREFIX}{ip}"), owner.as_bytes().to_vec()).await {
                Ok(_) => Ok(ip.to_string()),
                Err(StoreError::AlreadyExists(_)) => Err(AllocError::IpTaken),
                Err(e) => Err(e.into()),
            };
        }
        // Start at a random offset so concurrent servers rarely collide; skip
        // the network, the first address (reserved for `kubernetes`) and broadcast.
        let usable = self.size - 3;
        let start = rand::random::<u32>() % usable;
        for i in 0..usable {
            let n = self.base + 2 + (start + i) % usable;
            let candidate = Ipv4Addr::from(n).to_string();
            match self.store.create(&format!("{IP_PREFIX}{candidate}"), owner.as_bytes().to_vec()).await {
                Ok(_) => return Ok(candidate),
                Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AllocError::Full)
    }

    pub async fn release_ip(&self, ip: &str) {
        let _ = self.store.delete(&format!("{IP_PREFIX}{ip}"), None).await;
    }

    pub async fn allocate_port(&self, port: Option<u16>, owner: &str) -> Result<u16, AllocError> {
        if let Some(p) = port {
            if !(NODE_PORT_MIN..=NODE_PORT_MAX).contains(&p) {
                return Err(AllocError::PortOutOfRange);
            }
            return match self.store.create(&format!("{PORT_PREFIX}{p}"), owner.as_bytes().to_vec()).await {
                Ok(_) => Ok(p),
                Err(StoreError::AlreadyExists(_)) => Err(AllocError::PortTaken),
                Err(e) => Err(e.into()),
            };
        }
        let span = (NODE_PORT_MAX - NODE_PORT_MIN + 1) as u32;
        let start = rand::random::<u32>() % span;
        for i in 0..span {
            let p = NODE_PORT_MIN + ((start + i) % span) as u16;
            match self.store.create(&format!("{PORT_PREFIX}{p}"), owner.as_bytes().to_vec()).await {
                Ok(_) => return Ok(p),
                Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AllocError::Full)
    }

    pub async fn release_port(&self, port: u16) {
        let _ = self.store.delete(&format!("{PORT_PREFIX}{port}"), None).await;
    }
}
