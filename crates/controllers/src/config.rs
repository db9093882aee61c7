//! [`ControllerConfig`]: the settings of the controller manager that are
//! not per-object (upstream's kube-controller-manager flags), shared by
//! [`crate::run_all_with`] and the controllers that need them.

use std::time::Duration;

/// kube-controller-manager's flags, as far as Tugboat's controllers read
/// them. [`ControllerConfig::default`] has upstream's defaults, except the
/// cluster CIDR, which is Tugboat's (`tug server --cluster-cidr`).
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Pod addresses of the cluster (`--cluster-cidr`), IPv4. Node IPAM
    /// hands each Node a subnet of it; empty disables node IPAM (upstream's
    /// `--allocate-node-cidrs=false`).
    pub cluster_cidr: String,
    /// Prefix length of each Node's subnet (`--node-cidr-mask-size-ipv4`: 24).
    pub node_cidr_mask_size: u8,
    /// How often the node lifecycle controller looks at every Node
    /// (`--node-monitor-period`: 5s).
    pub node_monitor_period: Duration,
    /// How long a Node may go without a Lease renewal or a status
    /// heartbeat before its conditions become Unknown
    /// (`--node-monitor-grace-period`: 40s).
    pub node_monitor_grace_period: Duration,
    /// The same for a Node that never posted a Ready condition, counted
    /// from its creation (`--node-startup-grace-period`: 60s).
    pub node_startup_grace_period: Duration,
    /// Terminated (Succeeded or Failed) pods kept before the oldest are
    /// deleted (`--terminated-pod-gc-threshold`: 12500; 0 keeps them all).
    pub terminated_pod_gc_threshold: usize,
    /// How often pod GC runs (upstream's `gcCheckPeriod`: 20s).
    pub pod_gc_period: Duration,
    /// How long a Node must stay missing before pod GC deletes the pods
    /// bound to it (upstream's `quarantineTime`: 40s).
    pub pod_gc_orphan_quarantine: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            cluster_cidr: "10.42.0.0/16".into(),
            node_cidr_mask_size: 24,
            node_monitor_period: Duration::from_secs(5),
            node_monitor_grace_period: Duration::from_secs(40),
            node_startup_grace_period: Duration::from_secs(60),
            terminated_pod_gc_threshold: 12500,
            pod_gc_period: Duration::from_secs(20),
            pod_gc_orphan_quarantine: Duration::from_secs(40),
        }
    }
}

/// Parses a duration as Go's `time.ParseDuration` writes the common ones
/// (`40s`, `500ms`, `2m`, `1m30s`, `1h`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return duration_of(secs, s);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    duration_of(total, s)
}

fn duration_of(secs: f64, s: &str) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_writes_them() {
        assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-3s").is_err());
    }
}
