//! Units for people: parsing durations (`30s`, `5m`, `1h`, `250ms`) and sizes (`4096`, `64K`,
//! `4MiB`) typed by users, and writing durations, sizes and rounded figures back.
use std::time::Duration;

/// A duration: a number with an optional unit (ms, s, m, h, d); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (examples: 30s, 5m, 1h, 250ms)"))?;
    let mult = match unit.trim() {
        "ms" => 0.001,
        "" | "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        u => {
            return Err(format!(
                "invalid duration unit {u:?} in {s:?} (use ms, s, m, h or d)"
            ));
        }
    };
    let secs = v * mult;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("duration {s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A size in bytes: a number with an optional K/M/G (powers of 1024, `KiB` and `KB` alike).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (examples: 4096, 64K, 4M, 1G)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        u => return Err(format!("invalid size unit {u:?} in {s:?} (use K, M or G)")),
    };
    v.checked_mul(1u64 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("size {s:?} is out of range"))
}

/// Rounds to 3 decimal places (milliseconds of a figure in seconds), as verdict evidence keeps
/// its figures.
pub fn round_millis(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Rounds to 3 significant digits, half up.
fn round_sig3(v: u64) -> u64 {
    let mut scale = 1u64;
    while v / scale >= 1000 {
        scale *= 10;
    }
    if scale == 1 {
        return v;
    }
    (v / scale + u64::from(v % scale >= scale / 2)).saturating_mul(scale)
}

/// A duration in nanoseconds, 3 significant digits: `750ns`, `1.5µs`, `12.3ms`, `2s`, `4.5min`,
/// `26h`.
pub fn human_ns(ns: u64) -> String {
    let v = round_sig3(ns);
    let (div, unit) = match v {
        0..1_000 => (1u64, "ns"),
        1_000..1_000_000 => (1_000, "µs"),
        1_000_000..1_000_000_000 => (1_000_000, "ms"),
        1_000_000_000..60_000_000_000 => (1_000_000_000, "s"),
        60_000_000_000..3_600_000_000_000 => (60_000_000_000, "min"),
        _ => (3_600_000_000_000, "h"),
    };
    let x = v as f64 / div as f64;
    let s = if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{unit}")
}

/// Seconds as `45s`, `12m 3s`, `10m`, `3h 20m`, `4d 10h`; below a second in milliseconds; `?`
/// for a negative or non-finite figure.
pub fn human_secs(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "?".to_string();
    }
    if s < 1.0 {
        return format!("{:.0}ms", s * 1000.0);
    }
    if s < 60.0 {
        return format!("{:.0}s", s.floor());
    }
    let t = s.round() as u64;
    let (d, h, m, sec) = (t / 86_400, t % 86_400 / 3600, t % 3600 / 60, t % 60);
    let (big, small) = if d > 0 {
        ((d, 'd'), (h, 'h'))
    } else if h > 0 {
        ((h, 'h'), (m, 'm'))
    } else {
        ((m, 'm'), (sec, 's'))
    };
    if small.0 == 0 {
        format!("{}{}", big.0, big.1)
    } else {
        format!("{}{} {}{}", big.0, big.1, small.0, small.1)
    }
}

/// `total (part, part, …)`, or `total` alone when there are no parts: a count and what it is
/// made of (`5 (memcg 3, none 2)`).
pub fn total_and_parts(total: u64, parts: impl IntoIterator<Item = String>) -> String {
    let parts: Vec<String> = parts.into_iter().collect();
    if parts.is_empty() {
        total.to_string()
    } else {
        format!("{total} ({})", parts.join(", "))
    }
}

/// Bytes as `512 B`, `4.0 KiB`, `200.0 MiB`, `1.5 GiB` (up to PiB).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        for bad in ["", "x", "5y", "-1s", "0", "1e99s", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        for bad in ["", "4X", "-1", "0", "99999999999999999999G", "1.5M"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn human_units() {
        assert_eq!(human_secs(0.0042), "4ms");
        assert_eq!(human_secs(45.7), "45s");
        assert_eq!(human_secs(600.0), "10m");
        assert_eq!(human_secs(723.0), "12m 3s");
        assert_eq!(human_secs(7200.0), "2h");
        assert_eq!(human_secs(382_350.0), "4d 10h");
        assert_eq!(human_secs(f64::NAN), "?");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(200 << 20), "200.0 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(4096 << 10), "4.0 MiB");
        assert_eq!(total_and_parts(3, Vec::new()), "3");
        assert_eq!(
            total_and_parts(3, ["memcg 2".to_string(), "none 1".to_string()]),
            "3 (memcg 2, none 1)"
        );
        assert_eq!(human_ns(0), "0ns");
        assert_eq!(human_ns(512), "512ns");
        assert_eq!(human_ns(1_500), "1.5µs");
        assert_eq!(human_ns(999_600), "1ms");
        assert_eq!(human_ns(12_345_678), "12.3ms");
        assert_eq!(human_ns(500_000_000), "500ms");
        assert_eq!(human_ns(1_000_400_000), "1s");
        assert_eq!(human_ns(59_960_000_000), "1min");
        assert_eq!(human_ns(270_000_000_000), "4.5min");
        assert_eq!(human_ns(3_600_000_000_000), "1h");
        assert_eq!(human_ns(26 * 3_600_000_000_000), "26h");
        assert!(human_ns(u64::MAX).ends_with('h'));
    }

    #[test]
    fn rounding() {
        // Evidence figures: 3 decimal places.
        assert_eq!(round_millis(0.0054999), 0.005);
        assert_eq!(round_millis(1234.5678), 1234.568);
        // Durations for people: 3 significant digits, half up.
        assert_eq!(round_sig3(999), 999);
        assert_eq!(round_sig3(12_345), 12_300);
        assert_eq!(round_sig3(12_350), 12_400);
        assert_eq!(round_sig3(u64::MAX) % 10, 0);
    }
}
