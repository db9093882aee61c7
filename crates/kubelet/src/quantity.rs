//! Kubernetes quantities (`100m`, `1.5`, `64Mi`, `1G`, `2e3`) as the
//! integers the runtime wants.

/// The value times 1000, rounded up (CPU in millicores).
pub fn milli(q: &str) -> Option<i64> {
    scaled(q, 1000.0)
}

/// The value as an integer, rounded up (memory in bytes).
pub fn value(q: &str) -> Option<i64> {
    scaled(q, 1.0)
}

fn scaled(q: &str, factor: f64) -> Option<i64> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let (num, exp): (&str, i32) = if let Some(rest) = suffix
        .strip_prefix(['e', 'E'])
        .filter(|r| !r.is_empty() && r.parse::<i32>().is_ok())
    {
        (num, rest.parse().ok()?)
    } else {
        (num, 0)
    };
    let n: f64 = num.parse().ok()?;
    let mult: f64 = if exp != 0 {
        10f64.powi(exp)
    } else {
        match suffix {
            "" => 1.0,
            "n" => 1e-9,
            "u" => 1e-6,
            "m" => 1e-3,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "P" => 1e15,
            "E" => 1e18,
            "Ki" => 1024.0,
            "Mi" => 1024f64.powi(2),
            "Gi" => 1024f64.powi(3),
            "Ti" => 1024f64.powi(4),
            "Pi" => 1024f64.powi(5),
            "Ei" => 1024f64.powi(6),
            _ => return None,
        }
    };
    let v = n * mult * factor;
    // Tolerate float noise before rounding up, as resource.Quantity rounds up.
    Some((v - 1e-6).ceil().max(if v > 0.0 { 1.0 } else { 0.0 }) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("1"), Some(1000));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("0.1"), Some(100));
        assert_eq!(value("64Mi"), Some(64 << 20));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("2e3"), Some(2000));
        assert_eq!(value("128974848"), Some(128974848));
        assert_eq!(value("1Ki"), Some(1024));
        assert_eq!(value("x"), None);
        assert_eq!(value("0"), Some(0));
    }
}
