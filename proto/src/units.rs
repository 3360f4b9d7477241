//! Parsing what users type for durations and byte counts (`100ms`, `1MiB`): shared
//! by `ncu-send` and `ncu-recv` so that both accept exactly the same forms.

use std::time::Duration;

/// Parses a duration: a number with a unit (`ns`, `us`, `ms`, `s`, `m`, `h`), such as
/// `100ms`, `1.5s` or `2m`; `0` needs no unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && !number.starts_with('.') && !number.ends_with('.'))
        .ok_or_else(|| "expected a duration such as 100ms, 1s or 0".to_owned())?;
    let scale = match unit {
        "" if value == 0.0 => 0.0,
        "" => return Err("needs a unit: ns, us, ms, s, m or h (e.g. 100ms)".to_owned()),
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown unit {unit:?} (use ns, us, ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| "out of range".to_owned())
}

/// Parses a byte count: a whole number with an optional binary suffix (`K`/`KiB`,
/// `M`/`MiB`, `G`/`GiB`).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| "expected a byte count such as 65536, 64KiB or 1MiB".to_owned())?;
    let scale: usize = match unit {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return Err(format!("unknown suffix {unit:?} (use KiB, MiB or GiB)")),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| "out of range".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("0", Duration::ZERO),
            ("100ms", Duration::from_millis(100)),
            ("1s", Duration::from_secs(1)),
            ("1.5s", Duration::from_millis(1500)),
            ("250us", Duration::from_micros(250)),
            ("2m", Duration::from_secs(120)),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in [
            "", "5", "ms", "1x", "-1s", "1.s", ".5s", "1e3ms", "1 s s", "nan",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1400"), Ok(1400));
        for bad in ["", "MiB", "1.5MiB", "1MB", "-1", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
