//! Human-friendly durations ("500ms", "2s", "15m", "1h") and sizes/rates
//! ("40MiB/s", "10MB", "off"). Pure parsing; every error says what form is
//! expected so config messages can be read without the docs.

use std::time::Duration;

/// A duration, size or rate that could not be read: the text, what is
/// wrong with it, and (in the message) the form expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", describe(.text, .problem))]
pub struct UnitError {
    pub text: String,
    pub problem: Problem,
}

/// What is wrong with a duration, size or rate.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    EmptyDuration,
    NotADuration,
    MalformedNumber,
    /// A number without a unit (the number, to suggest "<n>s").
    NoUnit(f64),
    UnknownDurationUnit(String),
    TooLong,
    NotASize,
    UnknownSizeUnit(String),
    TooLarge,
    NotARate,
    ZeroRate,
}

fn describe(text: &str, problem: &Problem) -> String {
    match problem {
        Problem::EmptyDuration => "empty duration; write e.g. \"500ms\", \"2s\", \"15m\" or \"1h\"".into(),
        Problem::NotADuration => format!(
            "\"{text}\" is not a duration; write a number then a unit, e.g. \"500ms\", \"2s\", \"15m\", \"1h\""
        ),
        Problem::MalformedNumber => format!("\"{text}\" has a malformed number"),
        Problem::NoUnit(number) => {
            format!("\"{text}\" has no unit; add one of ms, s, m, h (e.g. \"{number}s\")")
        }
        Problem::UnknownDurationUnit(unit) => {
            format!("\"{text}\" has an unknown unit \"{unit}\"; use ms, s, m, h or d")
        }
        Problem::TooLong => format!("\"{text}\" is too long a duration"),
        Problem::NotASize => format!("\"{text}\" is not a size; write e.g. \"512KiB\", \"40MiB\" or \"1GB\""),
        Problem::UnknownSizeUnit(unit) => {
            format!("\"{text}\" has an unknown size unit \"{unit}\"; use B, KB, KiB, MB, MiB, GB or GiB")
        }
        Problem::TooLarge => format!("\"{text}\" is too large"),
        Problem::NotARate => format!("\"{text}\" is not a rate; write e.g. \"40MiB/s\" or \"off\""),
        Problem::ZeroRate => format!("\"{text}\" would never send anything; use \"off\" for no limit"),
    }
}

/// `text` is wrong in this way.
fn bad<T>(text: &str, problem: Problem) -> Result<T, UnitError> {
    Err(UnitError {
        text: text.to_string(),
        problem,
    })
}

/// Parses `500ms`, `2s`, `1.5s`, `15m`, `1h`, `1d`, or a combination like `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let s = text.trim();
    if s.is_empty() {
        return bad(text, Problem::EmptyDuration);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return bad(text, Problem::NotADuration);
        }
        let Ok(number) = rest[..num_len].parse::<f64>() else {
            return bad(text, Problem::MalformedNumber);
        };
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let scale = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" => 86400.0,
            "" => return bad(text, Problem::NoUnit(number)),
            other => return bad(text, Problem::UnknownDurationUnit(other.to_string())),
        };
        total += number * scale;
    }
    if !total.is_finite() || total > 1e10 {
        return bad(text, Problem::TooLong);
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses a byte size: `1024`, `64KiB`, `10MB`, `1.5GiB`.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let s = text.trim();
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    if num_len == 0 {
        return bad(text, Problem::NotASize);
    }
    let Ok(number) = s[..num_len].parse::<f64>() else {
        return bad(text, Problem::MalformedNumber);
    };
    let scale: f64 = match s[num_len..].trim() {
        "" | "B" => 1.0,
        "K" | "KB" | "kB" => 1e3,
        "KiB" => 1024.0,
        "M" | "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        "G" | "GB" => 1e9,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TB" => 1e12,
        "TiB" => 1024f64.powi(4),
        other => return bad(text, Problem::UnknownSizeUnit(other.to_string())),
    };
    let bytes = number * scale;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return bad(text, Problem::TooLarge);
    }
    Ok(bytes.round() as u64)
}

/// Parses a rate like `40MiB/s` (bytes per second); `off` means unlimited (None).
pub fn parse_rate(text: &str) -> Result<Option<u64>, UnitError> {
    let s = text.trim();
    if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let Some(size) = s.strip_suffix("/s") else {
        return bad(text, Problem::NotARate);
    };
    let bytes = parse_size(size)?;
    if bytes == 0 {
        return bad(text, Problem::ZeroRate);
    }
    Ok(Some(bytes))
}

/// How long a transfer of `bytes` took, with its rate: "4.1 s, 3.0 MiB/s"
/// ("0.0 s" with no rate for an instant one).
pub fn format_took(bytes: u64, took: std::time::Duration) -> String {
    let secs = took.as_secs_f64();
    if secs < 0.05 {
        return format!("{secs:.1} s");
    }
    format!("{secs:.1} s, {}/s", format_bytes((bytes as f64 / secs) as u64))
}

/// Formats bytes the way users write them back in the config (`1.5 MiB`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An exact byte count with thousands separated: `1,794 B`.
pub fn bytes_exact(bytes: u64) -> String {
    let digits = bytes.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out + " B"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_bytes_have_separated_thousands() {
        assert_eq!(bytes_exact(0), "0 B");
        assert_eq!(bytes_exact(999), "999 B");
        assert_eq!(bytes_exact(1794), "1,794 B");
        assert_eq!(bytes_exact(1_000_000), "1,000,000 B");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("5").unwrap_err().problem, Problem::NoUnit(5.0));
        assert!(parse_duration("5").unwrap_err().to_string().contains("no unit"));
        assert_eq!(
            parse_duration("5 weeks").unwrap_err().problem,
            Problem::UnknownDurationUnit("weeks".into())
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn sizes_and_rates() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_rate("40MiB/s").unwrap(), Some(40 * 1024 * 1024));
        assert_eq!(parse_rate("off").unwrap(), None);
        assert!(parse_rate("40MiB").is_err());
        assert_eq!(parse_rate("0B/s").unwrap_err().problem, Problem::ZeroRate);
        assert!(parse_size("3 furlongs").is_err());
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(12), "12 B");
    }

    #[test]
    fn every_size_unit_and_the_limits() {
        let gib = 1024u64 * 1024 * 1024;
        for (text, bytes) in [
            ("1B", 1),
            ("2K", 2_000),
            ("2kB", 2_000),
            ("3MiB", 3 * 1024 * 1024),
            ("3M", 3_000_000),
            ("1.5GiB", gib + gib / 2),
            ("2GB", 2_000_000_000),
            ("1TiB", 1024 * gib),
            ("1T", 1_000_000_000_000),
        ] {
            assert_eq!(parse_size(text).unwrap(), bytes, "{text}");
        }
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
        assert!(parse_size("1e400").is_err());
        assert!(
            parse_size("1.2.3MB")
                .unwrap_err()
                .to_string()
                .contains("malformed")
        );
    }

    #[test]
    fn durations_have_an_upper_bound() {
        assert_eq!(
            parse_duration("115740d").unwrap(),
            Duration::from_secs(115_740 * 86_400)
        );
        assert!(
            parse_duration("115741d")
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
        assert_eq!(
            parse_duration("10000000000s").unwrap(),
            Duration::from_secs(10_000_000_000)
        );
        assert!(
            parse_duration("10000000001s")
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
    }

    #[test]
    fn bytes_format_at_each_unit_boundary() {
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(1024 * 1024), "1.0 MiB");
        assert_eq!(format_bytes(5 * 1024u64.pow(4)), "5.0 TiB");
        assert_eq!(format_bytes(2048 * 1024u64.pow(4)), "2048.0 TiB");
    }
}
