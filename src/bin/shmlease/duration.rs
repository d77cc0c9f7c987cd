//! Durations as people type them (`250ms`, `5s`, `1m30s`) and as the tool prints them.

use std::time::Duration;

/// The TTLs the library accepts.
pub const MIN_TTL: Duration = Duration::from_nanos(shmlease::protocol::MIN_TTL_NS);
/// See [`MIN_TTL`].
pub const MAX_TTL: Duration = Duration::from_nanos(shmlease::protocol::MAX_TTL_NS);

/// Parses `250ms`, `5s`, `1m30s`, `1.5h`, `0`: one or more numbers, each with a unit
/// (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, `d`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write it like 250ms, 5s or 1m30s".into());
    }
    // Options taking a duration accept values that start with '-' (clap would otherwise
    // take `-1s` for an option and advise `-- -1s`), so they are told apart here.
    if let Some(rest) = s.strip_prefix('-') {
        return Err(if rest.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
            format!("{text:?} is negative: a duration is 0 or more, like 250ms or 5s")
        } else {
            format!("{text:?} is not a duration (an option?): write one like 250ms, 5s or 1m30s")
        });
    }
    if s.bytes().all(|b| b == b'0') {
        return Ok(Duration::ZERO);
    }
    let mut total: u128 = 0; // nanoseconds
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() {
            return Err(format!(
                "{text:?} is not a duration: expected a number at {after:?}; write it like 250ms, 5s or 1m30s"
            ));
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "" => {
                return Err(format!(
                    "{text:?} has no unit; write {num}s, {num}ms or {num}m (units: ns, us, ms, s, m, h, d)"
                ))
            }
            other => {
                return Err(format!(
                    "{text:?} has an unknown unit {other:?}; use ns, us, ms, s, m, h or d (e.g. 1m30s)"
                ))
            }
        };
        total = total.saturating_add(
            scaled(num, scale)
                .ok_or_else(|| format!("{text:?} is not a duration: {num:?} is not a number"))?,
        );
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| format!("{text:?} is too long a duration"))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Parses a TTL: a duration in the library's range, [`MIN_TTL`] to [`MAX_TTL`]. Out of
/// range, the error gives the range (clap quotes the value as the user wrote it).
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    if (MIN_TTL..=MAX_TTL).contains(&d) {
        Ok(d)
    } else {
        Err(format!("a TTL is {} to {}", exact(MIN_TTL), exact(MAX_TTL)))
    }
}

/// `d` in the largest unit that writes it exactly, as [`parse`] reads it back: `365d`,
/// `90s`, `1500ms`, `1µs`, `0`.
pub fn exact(d: Duration) -> String {
    const UNITS: [(&str, u128); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("µs", 1_000),
        ("ns", 1),
    ];
    let ns = d.as_nanos();
    if ns == 0 {
        return "0".into();
    }
    let (unit, scale) = UNITS.iter().find(|(_, scale)| ns % scale == 0).expect("ns divides");
    format!("{}{unit}", ns / scale)
}

/// `num` (digits with an optional fraction) times `scale` nanoseconds.
fn scaled(num: &str, scale: u128) -> Option<u128> {
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut value = whole.checked_mul(scale)?;
    let mut unit = scale;
    for digit in frac.bytes() {
        unit /= 10;
        value = value.checked_add(u128::from(digit - b'0') * unit)?;
    }
    Some(value)
}

/// Short human form: `250ms`, `9.8s`, `3m12s`, `2h05m`, `3d04h`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_people_write() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1h1ms"), Ok(Duration::from_millis(3_600_001)));
        assert_eq!(parse("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn refuses_with_a_hint() {
        assert!(parse("5").unwrap_err().contains("no unit"));
        assert!(parse("5x").unwrap_err().contains("unknown unit"));
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
        assert!(parse("1..2s").is_err());
        assert!(parse("-1s").unwrap_err().contains("negative"));
        assert!(parse("--json").unwrap_err().contains("an option?"));
    }

    #[test]
    fn ttls_in_the_librarys_range() {
        assert_eq!(parse_ttl("1us"), Ok(Duration::from_micros(1)));
        assert_eq!(parse_ttl("365d"), Ok(Duration::from_secs(365 * 86_400)));
        for out in ["0", "999ns", "366d", "365d1ns"] {
            assert_eq!(parse_ttl(out), Err("a TTL is 1µs to 365d".into()), "{out}");
        }
    }

    #[test]
    fn exact_forms_read_back() {
        for (d, text) in [
            (Duration::ZERO, "0"),
            (Duration::from_secs(365 * 86_400), "365d"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_micros(1), "1µs"),
            (Duration::from_nanos(1), "1ns"),
        ] {
            assert_eq!(exact(d), text);
            assert_eq!(parse(text), Ok(d));
        }
    }

    #[test]
    fn prints_short_forms() {
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_millis(9_840)), "9.8s");
        assert_eq!(human(Duration::from_secs(192)), "3m12s");
        assert_eq!(human(Duration::from_secs(7_500)), "2h05m");
    }
}
