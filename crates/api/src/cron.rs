//! Validation of CronJob schedules, with the errors upstream's cron parser
//! (robfig/cron's standard parser) gives.

const DESCRIPTORS: &[&str] = &["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"];
const MONTHS: &[&str] = &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// `Ok` for a schedule upstream accepts, else its parser's message.
pub fn validate_schedule(schedule: &str) -> Result<(), String> {
    let s = schedule.trim();
    if s.starts_with("TZ=") || s.starts_with("CRON_TZ=") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    if let Some(rest) = s.strip_prefix('@') {
        if DESCRIPTORS.contains(&s) {
            return Ok(());
        }
        if let Some(d) = rest.strip_prefix("every ") {
            return parse_go_duration(d.trim()).map(|_| ()).map_err(|_| format!("failed to parse duration {s}: time: invalid duration \"{}\"", d.trim()));
        }
        return Err(format!("unrecognized descriptor: {s}"));
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: [{}]", fields.len(), fields.join(" ")));
    }
    let bounds: [(u32, u32, &[&str]); 5] = [(0, 59, &[]), (0, 23, &[]), (1, 31, &[]), (1, 12, MONTHS), (0, 6, DAYS)];
    for (field, (min, max, names)) in fields.iter().zip(bounds) {
        for part in field.split(',') {
            validate_range(part, min, max, names)?;
        }
    }
    Ok(())
}

fn value(token: &str, names: &[&str], month_names: bool) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(token)) {
        return Ok(i as u32 + u32::from(month_names));
    }
    token.parse::<u32>().map_err(|_| format!("failed to parse int from {token}: strconv.Atoi: parsing \"{token}\": invalid syntax"))
}

fn validate_range(expr: &str, min: u32, max: u32, names: &[&str]) -> Result<(), String> {
    let month_names = names.len() == 12;
    let (range, step) = match expr.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (expr, None),
    };
    let (start, end) = if range == "*" || range == "?" {
        (min, max)
    } else {
        match range.split_once('-') {
            Some((a, b)) => (value(a, names, month_names)?, value(b, names, month_names)?),
            None => {
                let v = value(range, names, month_names)?;
                (v, if step.is_some() { max } else { v })
            }
        }
    };
    if let Some(st) = step {
        let n: u32 = st.parse().map_err(|_| format!("failed to parse int from {st}: strconv.Atoi: parsing \"{st}\": invalid syntax"))?;
        if n == 0 {
            return Err(format!("step of range should be a positive number: {expr}"));
        }
    }
    if start < min {
        return Err(format!("beginning of range ({start}) below minimum ({min}): {expr}"));
    }
    if end > max {
        return Err(format!("end of range ({end}) above maximum ({max}): {expr}"));
    }
    if start > end {
        return Err(format!("beginning of range ({start}) beyond end of range ({end}): {expr}"));
    }
    Ok(())
}

/// Go's `time.ParseDuration` grammar: `1h30m`, `90s`, `1.5h`.
fn parse_go_duration(s: &str) -> Result<f64, ()> {
    if s.is_empty() {
        return Err(());
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or(())?;
        if num_len == 0 {
            return Err(());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| ())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_upstream_schedules() {
        for s in ["* * * * *", "*/5 0-6 1,15 jan-jun mon-fri", "0 0 * * 0", "@hourly", "@every 1h30m", "30 2 */2 DEC SUN"] {
            assert!(validate_schedule(s).is_ok(), "{s}: {:?}", validate_schedule(s));
        }
    }

    #[test]
    fn rejects_with_upstream_messages() {
        assert_eq!(validate_schedule("99 * * * *").unwrap_err(), "end of range (99) above maximum (59): 99");
        assert!(validate_schedule("a b c d e").unwrap_err().starts_with("failed to parse int from a"));
        assert_eq!(validate_schedule("@bogus").unwrap_err(), "unrecognized descriptor: @bogus");
        assert_eq!(validate_schedule("CRON_TZ=UTC 0 * * * *").unwrap_err(), "cannot use TZ or CRON_TZ in schedule, use timeZone field instead");
        assert!(validate_schedule("* * * *").unwrap_err().starts_with("expected exactly 5 fields, found 4"));
        assert!(validate_schedule("*/0 * * * *").is_err());
        assert!(validate_schedule("0 0 0 * *").unwrap_err().contains("below minimum (1)"));
    }
}
