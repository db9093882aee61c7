//! Completion index sets, as `status.completedIndexes` writes them:
//! ascending and comma-separated, with runs of three or more consecutive
//! indexes as `first-last` (upstream's `orderedIntervals.String`).

use std::collections::BTreeSet;

/// Parses `1,3-5,7` (ignoring malformed parts and indexes `>= limit`, as
/// upstream's `parseIndexesFromString`).
pub fn parse(s: &str, limit: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        let (Ok(first), Ok(last)) = (first, last) else { continue };
        for i in first.max(0)..=last.min(limit - 1) {
            out.insert(i);
        }
    }
    out
}

/// Formats a set: consecutive runs of three or more as `a-b`.
pub fn format(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last = iter.next().expect("peeked");
        }
        parts.push(match last - first {
            0 => first.to_string(),
            1 => format!("{first},{last}"),
            _ => format!("{first}-{last}"),
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_upstream_format() {
        let s = parse("0,2-4,6,7", 10);
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), vec![0, 2, 3, 4, 6, 7]);
        assert_eq!(format(&s), "0,2-4,6,7");
        assert_eq!(format(&parse("", 3)), "");
        assert_eq!(format(&parse("1-5,x,9", 4)), "1-3", "out-of-range and malformed parts are dropped");
    }
}
