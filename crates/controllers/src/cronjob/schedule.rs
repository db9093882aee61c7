//! Cron schedules as upstream parses them: `robfig/cron/v3`'s
//! `ParseStandard` (five fields: minute, hour, day of month, month, day of
//! week; `*`, `?`, lists, ranges, steps, month and weekday names; the
//! descriptors `@yearly`/`@annually`, `@monthly`, `@weekly`,
//! `@daily`/`@midnight`, `@hourly` and `@every <duration>`; a legacy
//! `TZ=`/`CRON_TZ=` prefix), and `SpecSchedule.Next`, the first activation
//! strictly after a time, computed in the schedule's time zone.
//!
//! As in robfig/cron: when both day of month and day of week are
//! restricted (neither starts with `*` or `?`), a day matching either
//! matches; otherwise both must.

use jiff::civil::date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};

const STAR_BIT: u64 = 1 << 63;

#[derive(Clone, Copy)]
struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds { min: 0, max: 59, names: &[] };
const HOURS: Bounds = Bounds { min: 0, max: 23, names: &[] };
const DOM: Bounds = Bounds { min: 1, max: 31, names: &[] };
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds { min: 0, max: 6, names: &[("sun", 0), ("mon", 1), ("tue", 2), ("wed", 3), ("thu", 4), ("fri", 5), ("sat", 6)] };

/// A parsed schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Field bitsets (bit n set: value n matches; `STAR_BIT`: written as `*`).
    Spec { minute: u64, hour: u64, dom: u64, month: u64, dow: u64, tz: Option<TimeZone> },
    /// `@every <d>`: `d` after the previous activation (whole seconds, at least one).
    Every(SignedDuration),
}

fn bits(min: u32, max: u32, step: u32) -> u64 {
    if step == 1 {
        return !(u64::MAX << (max + 1)) & (u64::MAX << min);
    }
    let mut b = 0;
    let mut i = min;
    while i <= max {
        b |= 1 << i;
        i += step;
    }
    b
}

fn all(r: Bounds) -> u64 {
    bits(r.min, r.max, 1) | STAR_BIT
}

fn must_parse_int(s: &str) -> Result<u32, String> {
    let n: i64 = s.parse().map_err(|e| format!("failed to parse int from {s}: {e}"))?;
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {s}"));
    }
    u32::try_from(n).map_err(|e| format!("failed to parse int from {s}: {e}"))
}

fn parse_int_or_name(s: &str, names: &[(&str, u32)]) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some((_, v)) = names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    must_parse_int(s)
}

/// One comma-separated part: `*`, `?`, `n`, `a-b`, each optionally `/step`.
fn range(expr: &str, r: Bounds) -> Result<u64, String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end, mut extra);
    if low_and_high[0] == "*" || low_and_high[0] == "?" {
        start = r.min;
        end = r.max;
        extra = STAR_BIT;
    } else {
        start = parse_int_or_name(low_and_high[0], r.names)?;
        end = match low_and_high.len() {
            1 => start,
            2 => parse_int_or_name(low_and_high[1], r.names)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        extra = 0;
    }
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = must_parse_int(range_and_step[1])?;
            // "N/step" means "N-max/step".
            if single {
                end = r.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < r.min {
        return Err(format!("beginning of range ({start}) below minimum ({}): {expr}", r.min));
    }
    if end > r.max {
        return Err(format!("end of range ({end}) above maximum ({}): {expr}", r.max));
    }
    if start > end {
        return Err(format!("beginning of range ({start}) beyond end of range ({end}): {expr}"));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(bits(start, end, step) | extra)
}

fn field(f: &str, r: Bounds) -> Result<u64, String> {
    let mut b = 0;
    for expr in f.split(',') {
        b |= range(expr, r)?;
    }
    Ok(b)
}

/// Go's `time.ParseDuration`, for `@every`: decimal numbers with units
/// `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, e.g. `1h30m`, `1.5h`, `90s`.
pub fn parse_go_duration(s: &str) -> Result<SignedDuration, String> {
    let orig = s;
    let err = || format!("time: invalid duration \"{orig}\"");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(SignedDuration::ZERO);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(err());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let nanos = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration \"{orig}\"")),
            u => return Err(format!("time: unknown unit \"{u}\" in duration \"{orig}\"")),
        };
        total += n * nanos;
    }
    let d = SignedDuration::from_nanos(total as i64);
    Ok(if neg { -d } else { d })
}

fn descriptor(spec: &str, tz: Option<TimeZone>) -> Result<Schedule, String> {
    let (minute, hour, dom, month, dow) = match spec {
        "@yearly" | "@annually" => (1, 1, 1 << 1, 1 << 1, all(DOW)),
        "@monthly" => (1, 1, 1 << 1, all(MONTHS), all(DOW)),
        "@weekly" => (1, 1, all(DOM), all(MONTHS), 1),
        "@daily" | "@midnight" => (1, 1, all(DOM), all(MONTHS), all(DOW)),
        "@hourly" => (1, all(HOURS), all(DOM), all(MONTHS), all(DOW)),
        _ => {
            if let Some(d) = spec.strip_prefix("@every ") {
                let d = parse_go_duration(d).map_err(|e| format!("failed to parse duration {spec}: {e}"))?;
                // robfig's Every: at least a second, whole seconds.
                let d = if d < SignedDuration::from_secs(1) { SignedDuration::from_secs(1) } else { SignedDuration::from_secs(d.as_secs()) };
                return Ok(Schedule::Every(d));
            }
            return Err(format!("unrecognized descriptor: {spec}"));
        }
    };
    Ok(Schedule::Spec { minute, hour, dom, month, dow, tz })
}

/// robfig/cron's `ParseStandard`.
pub fn parse(spec: &str) -> Result<Schedule, String> {
    if spec.is_empty() {
        return Err("empty spec string".into());
    }
    let mut spec = spec;
    let mut tz = None;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let eq = spec.find('=').expect("has =");
        let space = spec.find(' ').unwrap_or(spec.len());
        let name = &spec[eq + 1..space];
        tz = Some(load_location(name).map_err(|e| format!("provided bad location {name}: {e}"))?);
        spec = spec[space..].trim();
    }
    if spec.starts_with('@') {
        return descriptor(spec, tz);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: {:?}", fields.len(), fields));
    }
    Ok(Schedule::Spec {
        minute: field(fields[0], MINUTES)?,
        hour: field(fields[1], HOURS)?,
        dom: field(fields[2], DOM)?,
        month: field(fields[3], MONTHS)?,
        dow: field(fields[4], DOW)?,
        tz,
    })
}

/// Go's `time.LoadLocation`: `""` and `UTC` are UTC, `Local` the system
/// zone, anything else an IANA name from the system tzdb.
pub fn load_location(name: &str) -> Result<TimeZone, String> {
    match name {
        "" | "UTC" => Ok(TimeZone::UTC),
        "Local" => Ok(TimeZone::system()),
        n => TimeZone::get(n).map_err(|_| format!("unknown time zone {n}")),
    }
}

fn has(bits: u64, v: i8) -> bool {
    bits & (1u64 << (v as u32)) != 0
}

fn at(tz: &TimeZone, y: i16, m: i8, d: i8, h: i8) -> Option<Zoned> {
    date(y, m, d).at(h, 0, 0, 0).to_zoned(tz.clone()).ok()
}

impl Schedule {
    /// The first activation strictly after `t` (robfig's `Next`), in the
    /// schedule's own zone if it names one, else `tz`. `None` if there is
    /// none within five years (e.g. `0 0 30 2 *`).
    pub fn next(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let (minute, hour, dom, month, dow, own_tz) = match self {
            Schedule::Every(d) => {
                let t = t.checked_sub(SignedDuration::from_nanos(t.subsec_nanosecond() as i64)).ok()?;
                return t.checked_add(*d).ok();
            }
            Schedule::Spec { minute, hour, dom, month, dow, tz } => (*minute, *hour, *dom, *month, *dow, tz),
        };
        let tz = own_tz.clone().unwrap_or_else(|| tz.clone());
        // Start at the earliest possible time: the upcoming second.
        let t = t.checked_sub(SignedDuration::from_nanos(t.subsec_nanosecond() as i64)).ok()?;
        let mut z = t.checked_add(SignedDuration::from_secs(1)).ok()?.to_zoned(tz.clone());
        let mut added = false;
        let year_limit = z.year() + 5;
        let day_matches = |z: &Zoned| {
            let dom_match = has(dom, z.day());
            let dow_match = has(dow, z.weekday().to_sunday_zero_offset());
            if dom & STAR_BIT != 0 || dow & STAR_BIT != 0 { dom_match && dow_match } else { dom_match || dow_match }
        };
        'wrap: loop {
            if z.year() > year_limit {
                return None;
            }
            while !has(month, z.month()) {
                if !added {
                    added = true;
                    z = at(&tz, z.year(), z.month(), 1, 0)?;
                }
                z = z.checked_add(jiff::Span::new().months(1)).ok()?;
                if z.month() == 1 {
                    continue 'wrap;
                }
            }
            while !day_matches(&z) {
                if !added {
                    added = true;
                    z = at(&tz, z.year(), z.month(), z.day(), 0)?;
                }
                z = z.checked_add(jiff::Span::new().days(1)).ok()?;
                // Daylight saving time can move midnight: back to 0h.
                if z.hour() != 0 {
                    let h = z.hour() as i64;
                    z = if h > 12 {
                        z.checked_add(SignedDuration::from_hours(24 - h)).ok()?
                    } else {
                        z.checked_sub(SignedDuration::from_hours(h)).ok()?
                    };
                }
                if z.day() == 1 {
                    continue 'wrap;
                }
            }
            while !has(hour, z.hour()) {
                if !added {
                    added = true;
                    z = at(&tz, z.year(), z.month(), z.day(), z.hour())?;
                }
                z = z.checked_add(SignedDuration::from_hours(1)).ok()?;
                if z.hour() == 0 {
                    continue 'wrap;
                }
            }
            while !has(minute, z.minute()) {
                if !added {
                    added = true;
                    z = z.checked_sub(SignedDuration::from_secs(z.second() as i64)).ok()?;
                }
                z = z.checked_add(SignedDuration::from_mins(1)).ok()?;
                if z.minute() == 0 {
                    continue 'wrap;
                }
            }
            // Only second 0 matches in a five-field schedule.
            while z.second() != 0 {
                added = true;
                z = z.checked_add(SignedDuration::from_secs(1)).ok()?;
                if z.second() == 0 {
                    continue 'wrap;
                }
            }
            return Some(z.timestamp());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, after: &str) -> String {
        parse(spec).unwrap().next(ts(after), &TimeZone::UTC).map(|t| t.to_string()).unwrap_or_default()
    }

    #[test]
    fn standard_fields() {
        assert_eq!(next("* * * * *", "2024-03-10T10:05:30Z"), "2024-03-10T10:06:00Z");
        assert_eq!(next("* * * * *", "2024-03-10T10:06:00Z"), "2024-03-10T10:07:00Z", "strictly after");
        assert_eq!(next("*/15 * * * *", "2024-03-10T10:05:00Z"), "2024-03-10T10:15:00Z");
        assert_eq!(next("5/20 * * * *", "2024-03-10T10:30:00Z"), "2024-03-10T10:45:00Z", "N/step is N-max/step");
        assert_eq!(next("0 9-17/4 * * *", "2024-03-10T14:00:00Z"), "2024-03-10T17:00:00Z");
        assert_eq!(next("30 6 1,15 * *", "2024-03-10T00:00:00Z"), "2024-03-15T06:30:00Z");
        assert_eq!(next("0 0 * jan,JUL *", "2024-03-10T00:00:00Z"), "2024-07-01T00:00:00Z");
        // 2024-03-10 is a Sunday.
        assert_eq!(next("0 12 * * mon-fri", "2024-03-09T13:00:00Z"), "2024-03-11T12:00:00Z");
        assert_eq!(next("0 0 29 2 *", "2024-03-01T00:00:00Z"), "2028-02-29T00:00:00Z");
        assert_eq!(next("0 0 30 2 *", "2024-03-01T00:00:00Z"), "", "never");
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // Both restricted: either matches (the 13th, or a Friday).
        assert_eq!(next("0 0 13 * 5", "2024-03-01T12:00:00Z"), "2024-03-08T00:00:00Z");
        assert_eq!(next("0 0 13 * 5", "2024-03-09T00:00:00Z"), "2024-03-13T00:00:00Z");
        // Day of week starred: day of month only.
        assert_eq!(next("0 0 13 * *", "2024-03-01T12:00:00Z"), "2024-03-13T00:00:00Z");
        assert_eq!(next("0 0 ? * 5", "2024-03-01T12:00:00Z"), "2024-03-08T00:00:00Z");
    }

    #[test]
    fn descriptors() {
        assert_eq!(next("@hourly", "2024-03-10T10:05:00Z"), "2024-03-10T11:00:00Z");
        assert_eq!(next("@daily", "2024-03-10T10:05:00Z"), "2024-03-11T00:00:00Z");
        assert_eq!(next("@midnight", "2024-03-10T10:05:00Z"), "2024-03-11T00:00:00Z");
        assert_eq!(next("@weekly", "2024-03-10T10:05:00Z"), "2024-03-17T00:00:00Z");
        assert_eq!(next("@monthly", "2024-03-10T10:05:00Z"), "2024-04-01T00:00:00Z");
        assert_eq!(next("@yearly", "2024-03-10T10:05:00Z"), "2025-01-01T00:00:00Z");
        assert_eq!(next("@annually", "2024-03-10T10:05:00Z"), "2025-01-01T00:00:00Z");
        assert_eq!(next("@every 1h30m", "2024-03-10T10:05:00.5Z"), "2024-03-10T11:35:00Z");
        assert!(parse("@fortnightly").is_err());
    }

    #[test]
    fn errors_as_robfig() {
        assert_eq!(parse("* * * *").unwrap_err(), "expected exactly 5 fields, found 4: [\"*\", \"*\", \"*\", \"*\"]");
        assert_eq!(parse("60 * * * *").unwrap_err(), "end of range (60) above maximum (59): 60");
        assert_eq!(parse("* * 0 * *").unwrap_err(), "beginning of range (0) below minimum (1): 0");
        assert_eq!(parse("5-1 * * * *").unwrap_err(), "beginning of range (5) beyond end of range (1): 5-1");
        assert_eq!(parse("*/0 * * * *").unwrap_err(), "step of range should be a positive number: */0");
        assert!(parse("1-2-3 * * * *").unwrap_err().starts_with("too many hyphens"));
        assert!(parse("* * * * 7").is_err(), "robfig's weekdays are 0-6");
        assert!(parse("x * * * *").unwrap_err().starts_with("failed to parse int from x"));
        assert!(parse("").is_err());
    }

    #[test]
    fn time_zones() {
        // 09:00 in New York is 13:00 UTC in summer, 14:00 in winter.
        let s = parse("0 9 * * *").unwrap();
        let ny = load_location("America/New_York").expect("system tzdb");
        assert_eq!(s.next(ts("2024-07-01T00:00:00Z"), &ny).unwrap().to_string(), "2024-07-01T13:00:00Z");
        assert_eq!(s.next(ts("2024-01-01T00:00:00Z"), &ny).unwrap().to_string(), "2024-01-01T14:00:00Z");
        // A legacy TZ= prefix wins over the zone passed in.
        let s = parse("TZ=Asia/Tokyo 0 9 * * *").unwrap();
        assert_eq!(s.next(ts("2024-07-01T00:00:00Z"), &TimeZone::UTC).unwrap().to_string(), "2024-07-02T00:00:00Z");
        assert!(parse("CRON_TZ=Nowhere/Special 0 9 * * *").is_err());
        // Spring forward: 02:30 does not exist on 2024-03-10 in New York;
        // robfig/cron skips that day's run.
        let s = parse("30 2 * * *").unwrap();
        let n = s.next(ts("2024-03-10T05:00:00Z"), &ny).unwrap();
        assert_eq!(n.to_string(), "2024-03-11T06:30:00Z");
        assert!(load_location("Mars/Olympus").is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h30m").unwrap(), SignedDuration::from_mins(90));
        assert_eq!(parse_go_duration("1.5h").unwrap(), SignedDuration::from_mins(90));
        assert_eq!(parse_go_duration("300ms").unwrap(), SignedDuration::from_millis(300));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5y").is_err());
    }
}
