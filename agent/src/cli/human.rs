//! Numbers, sizes, durations and times as the text output shows them to people. `--json`
//! keeps the exact values; these are for reading at a terminal.

use crate::config::{ChipKind, Config};

/// `637 B`, `1.5 KiB`, `64 MiB`, `1.2 GiB`: binary units, one decimal below 10.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ if v < 10.0 && v.fract() >= 0.05 => format!("{v:.1} {}", UNITS[unit]),
        _ => format!("{v:.0} {}", UNITS[unit]),
    }
}

/// `1 key`, `2 keys`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// `750ms`, `5s`, `1m 54s`, `3h 2m`, `2d 4h`.
pub fn duration_ms(ms: i64) -> String {
    crate::control::health::human_ms(ms)
}

/// A measured value with sensible precision: two decimals at most for magnitudes from 1
/// (`20.99`, `1013.25`), three significant digits below (`0.00123`), no trailing zeros.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    let decimals = if a >= 1.0 || a == 0.0 {
        2
    } else {
        // Three significant digits: 0.5 -> 3 decimals, 0.0012 -> 5.
        (2 - a.log10().floor() as i32).clamp(0, 12) as usize
    };
    let text = format!("{x:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    if text == "-0" {
        "0".into()
    } else {
        text.to_string()
    }
}

/// [`num`] with the unit when it is known: `20.99 °C`.
pub fn quantity(x: f64, unit: Option<&str>) -> String {
    match unit {
        Some(u) => format!("{} {u}", num(x)),
        None => num(x),
    }
}

/// The unit of `sensor`/`metric` when a built-in driver produces it (I2C chips, 1-Wire
/// thermometers); `None` for simulated, GPIO and MQTT sensors, whose units Weir cannot know.
pub fn unit(cfg: &Config, sensor: &str, metric: &str) -> Option<&'static str> {
    if cfg.devices.onewire.iter().any(|p| p.name == sensor) {
        return Some("°C");
    }
    let chip = &cfg.devices.i2c.iter().find(|s| s.name == sensor)?.chip;
    match (chip, metric) {
        (ChipKind::Bme280 | ChipKind::Sht3x, "temperature") => Some("°C"),
        (ChipKind::Bme280 | ChipKind::Sht3x, "humidity") => Some("%RH"),
        (ChipKind::Bme280, "pressure") => Some("hPa"),
        (ChipKind::Ads1115 { channels, .. }, m) => channels
            .iter()
            .any(|c| c.metric == m && c.scale == 1.0 && c.offset == 0.0)
            .then_some("V"),
        _ => None,
    }
}

/// Epoch milliseconds as RFC 3339 to the second in the local time zone (`TZ`, else
/// /etc/localtime): `2026-01-02T04:04:05+01:00`, `...Z` in UTC.
pub fn local_time(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t
            .with_timezone(&chrono::Local)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => format!("{ms} ms since the epoch"),
    }
}

/// Breaks `line` at spaces so that no piece is wider than `width` columns, continuing
/// with `indent`. A single word wider than that stays whole.
pub fn wrap(line: &str, width: usize, indent: &str) -> String {
    let body = line.trim_start_matches(' ');
    let mut out = line[..line.len() - body.len()].to_string();
    let mut col = out.len();
    let mut first = true;
    for word in body.split(' ') {
        let w = word.chars().count();
        if !first && col + 1 + w > width {
            out.push('\n');
            out.push_str(indent);
            col = indent.chars().count();
        } else if !first {
            out.push(' ');
            col += 1;
        }
        first = false;
        out.push_str(word);
        col += w;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units_with_a_decimal_only_when_it_says_something() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(637), "637 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(1 << 20), "1 MiB");
        assert_eq!(bytes(300 << 20), "300 MiB");
    }

    #[test]
    fn values_keep_two_decimals_or_three_significant_digits() {
        assert_eq!(num(36.24050421450998), "36.24");
        assert_eq!(num(20.0), "20");
        assert_eq!(num(1013.254), "1013.25");
        assert_eq!(num(-0.001234), "-0.00123");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(-0.001), "-0.001");
        assert_eq!(quantity(20.987, Some("°C")), "20.99 °C");
    }

    #[test]
    fn counts_are_singular_for_one() {
        assert_eq!(plural(1, "window", "windows"), "1 window");
        assert_eq!(plural(0, "window", "windows"), "0 windows");
    }

    #[test]
    fn long_lines_break_at_spaces_with_an_indent() {
        let l = "aaaa bbbb cccc dddd";
        assert_eq!(wrap(l, 10, "  "), "aaaa bbbb\n  cccc\n  dddd");
        assert_eq!(wrap("short", 10, "  "), "short");
        assert_eq!(wrap("    kept indent", 10, "  "), "    kept\n  indent");
        assert_eq!(
            wrap("averyveryverylongword x", 10, "  "),
            "averyveryverylongword\n  x"
        );
    }
}
