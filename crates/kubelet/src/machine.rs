//! What the node reports about the machine: CPUs, memory, disk, pids,
//! addresses and the node info strings, read from /proc, /sys and libc.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// Online CPUs.
pub fn cpus() -> u64 {
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as u64
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1)
    }
}

fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
            .map(|kib| kib * 1024)
    })
}

/// Total memory in bytes.
pub fn memory_total() -> u64 {
    meminfo("MemTotal").unwrap_or(0)
}

/// Memory available for new work, in bytes.
pub fn memory_available() -> u64 {
    meminfo("MemAvailable").unwrap_or(u64::MAX)
}

/// (total, available) bytes of the filesystem holding `path`.
pub fn disk(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let frsize = s.f_frsize as u64;
    Some((s.f_blocks as u64 * frsize, s.f_bavail as u64 * frsize))
}

/// (processes now, pid_max).
pub fn pids() -> (u64, u64) {
    let max = read_trim("/proc/sys/kernel/pid_max")
        .and_then(|s| s.parse().ok())
        .unwrap_or(32768);
    // /proc/loadavg: "0.00 0.01 0.05 1/123 4567": the 4th field is running/total.
    let now = read_trim("/proc/loadavg")
        .and_then(|s| {
            s.split_whitespace()
                .nth(3)
                .and_then(|f| f.split_once('/'))
                .and_then(|(_, t)| t.parse().ok())
        })
        .unwrap_or(0);
    (now, max)
}

pub fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn hostname() -> String {
    read_trim("/proc/sys/kernel/hostname")
        .unwrap_or_else(|| "localhost".into())
        .to_lowercase()
}

pub fn kernel_version() -> String {
    read_trim("/proc/sys/kernel/osrelease").unwrap_or_default()
}

/// `PRETTY_NAME` of /etc/os-release.
pub fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

pub fn machine_id() -> String {
    read_trim("/etc/machine-id")
        .or_else(|| read_trim("/var/lib/dbus/machine-id"))
        .unwrap_or_default()
}

pub fn system_uuid() -> String {
    read_trim("/sys/class/dmi/id/product_uuid")
        .map(|s| s.to_lowercase())
        .unwrap_or_default()
}

pub fn boot_id() -> String {
    read_trim("/proc/sys/kernel/random/boot_id").unwrap_or_default()
}

/// Kubernetes' name for this architecture.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// The first IPv4 address of an interface that is up and not loopback
/// (the node's InternalIP unless `--node-ip` says otherwise).
pub fn default_ip() -> IpAddr {
    let mut found: Option<Ipv4Addr> = None;
    unsafe {
        let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut ifap) == 0 {
            let mut cur = ifap;
            while !cur.is_null() {
                let ifa = &*cur;
                let up = ifa.ifa_flags & (libc::IFF_UP as u32) != 0;
                let lo = ifa.ifa_flags & (libc::IFF_LOOPBACK as u32) != 0;
                if up
                    && !lo
                    && !ifa.ifa_addr.is_null()
                    && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET
                {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    let name = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
                    // Skip bridges and veths made for pods.
                    if !name.starts_with("cni")
                        && !name.starts_with("tug")
                        && !name.starts_with("veth")
                    {
                        found = Some(ip);
                        break;
                    }
                }
                cur = ifa.ifa_next;
            }
            libc::freeifaddrs(ifap);
        }
    }
    IpAddr::V4(found.unwrap_or(Ipv4Addr::LOCALHOST))
}

/// The host's resolver configuration: (nameservers, search, options).
pub fn host_dns() -> (Vec<String>, Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (mut servers, mut search, mut options) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => servers.extend(f.next().map(String::from)),
            Some("search") | Some("domain") => search = f.map(String::from).collect(),
            Some("options") => options.extend(f.map(String::from)),
            _ => {}
        }
    }
    (servers, search, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_machine() {
        assert!(cpus() >= 1);
        assert!(memory_total() > 0);
        let (total, avail) = disk(Path::new("/")).unwrap();
        assert!(total >= avail && total > 0);
        let (now, max) = pids();
        assert!(now > 0 && max > now);
        assert!(!kernel_version().is_empty());
    }
}
