//! PrioritySort: the active queue's order, higher `spec.priority` first,
//! then the earlier queue timestamp.

use crate::framework::{Plugin, QueueSortPlugin, QueuedPodInfo};

pub const NAME: &str = "PrioritySort";

#[derive(Debug, Default)]
pub struct PrioritySort;

impl Plugin for PrioritySort {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl QueueSortPlugin for PrioritySort {
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool {
        let (p1, p2) = (a.pod_info.priority, b.pod_info.priority);
        p1 > p2 || (p1 == p2 && (a.timestamp, a.seq) < (b.timestamp, b.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::PodBuilder;
    use std::time::{Duration, Instant};

    #[test]
    fn higher_priority_first_then_older() {
        let now = Instant::now();
        let q = |name: &str, prio: i32, at: Duration| QueuedPodInfo::new(PodBuilder::new(name).priority(prio).info(), now + at);
        let low_old = q("a", 0, Duration::ZERO);
        let high_new = q("b", 100, Duration::from_secs(5));
        let low_new = q("c", 0, Duration::from_secs(1));
        let s = PrioritySort;
        assert!(s.less(&high_new, &low_old));
        assert!(!s.less(&low_old, &high_new));
        assert!(s.less(&low_old, &low_new));
        assert!(!s.less(&low_new, &low_old));
    }
}
