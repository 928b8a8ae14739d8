//! The rules of `[[agent.schedule]]`: bandwidth windows by weekday and
//! local time of day.

use super::walker::Item;
use super::*;

const SCHEDULE_KEYS: &[&str] = &["days", "from", "to", "bandwidth_limit"];
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// What a window does to uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Bytes per second.
    Rate(u64),
    Unlimited,
    /// Start no new upload; parts in flight finish.
    Paused,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Rate(r) => write!(f, "{}/s", crate::units::format_bytes(*r)),
            Limit::Unlimited => f.write_str("unlimited"),
            Limit::Paused => f.write_str("paused"),
        }
    }
}

/// One `[[agent.schedule]]` window. It starts on each of `days` at `from`
/// (seconds after local midnight) and ends at `to`; when `to` ≤ `from` it
/// ends the next day (a window across midnight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Monday first.
    pub days: [bool; 7],
    pub from: u32,
    pub to: u32,
    pub limit: Limit,
}

impl Window {
    /// "mon-fri 09:00–18:00: 5.0 MiB/s".
    pub fn describe(&self) -> String {
        let days: Vec<&str> = DAY_NAMES
            .iter()
            .zip(self.days)
            .filter(|(_, on)| *on)
            .map(|(d, _)| *d)
            .collect();
        let days = if days.len() == 7 {
            "every day".to_string()
        } else {
            days.join(",")
        };
        format!(
            "{days} {}–{}: {}",
            clock_text(self.from),
            clock_text(self.to),
            self.limit
        )
    }
}

fn clock_text(s: u32) -> String {
    if s.is_multiple_of(60) {
        format!("{:02}:{:02}", s / 3600, s / 60 % 60)
    } else {
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }
}

/// "HH:MM" or "HH:MM:SS" (24:00 allowed), as seconds after midnight.
fn parse_clock(text: &str) -> Option<u32> {
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    let n: Vec<u32> = parts.iter().map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let (h, m, s) = (n[0], n[1], n.get(2).copied().unwrap_or(0));
    let total = h * 3600 + m * 60 + s;
    (m < 60 && s < 60 && total <= 86_400).then_some(total)
}

impl Walker<'_> {
    pub(super) fn schedule(&mut self, item: &Item) -> Vec<Window> {
        let DeValue::Array(list) = item.get_ref() else {
            self.err(
                "agent.schedule",
                Some(item.span()),
                "expected [[agent.schedule]] entries (an array of tables)",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            let key = format!("agent.schedule[{i}]");
            let Some(t) = self.table(entry, &key) else {
                continue;
            };
            let f = self.fields(t, &key, SCHEDULE_KEYS);
            let before = self.errors.len();
            let mut days = [true; 7];
            if let Some(list) = self.strings(&f, "days", &format!("{key}.days")) {
                days = [false; 7];
                for (d, span) in list {
                    match DAY_NAMES.iter().position(|n| n.eq_ignore_ascii_case(&d)) {
                        Some(i) => days[i] = true,
                        None => self.err(
                            &format!("{key}.days"),
                            Some(span),
                            format!("\"{d}\" is not a day; use mon, tue, wed, thu, fri, sat, sun"),
                        ),
                    }
                }
            }
            let mut clock = |name: &str| -> Option<u32> {
                let k = format!("{key}.{name}");
                let Some((text, span)) = self.string(&f, name, &k) else {
                    self.err(
                        &key,
                        Some(entry.span()),
                        format!("needs `{name}` (local time, e.g. \"09:00\")"),
                    );
                    return None;
                };
                let parsed = parse_clock(&text);
                if parsed.is_none() {
                    self.err(
                        &k,
                        Some(span),
                        format!("\"{text}\" is not a time of day; write e.g. \"09:00\" or \"18:30\""),
                    );
                }
                parsed
            };
            let (from, to) = (clock("from"), clock("to"));
            let limit = match self.string(&f, "bandwidth_limit", &format!("{key}.bandwidth_limit")) {
                Some((t, _)) if t.eq_ignore_ascii_case("paused") => Limit::Paused,
                Some((t, span)) => match parse_rate(&t) {
                    Ok(Some(r)) => Limit::Rate(r),
                    Ok(None) => Limit::Unlimited,
                    Err(e) => {
                        self.err(
                            &format!("{key}.bandwidth_limit"),
                            Some(span),
                            format!("{e}, or \"paused\""),
                        );
                        Limit::Unlimited
                    }
                },
                None => {
                    self.err(
                        &key,
                        Some(entry.span()),
                        "needs `bandwidth_limit` (a rate like \"5MiB/s\", \"off\", or \"paused\")",
                    );
                    Limit::Unlimited
                }
            };
            if let (Some(a), Some(b)) = (from, to)
                && a == b
            {
                self.err(
                    &format!("{key}.to"),
                    f.get("to").map(|i| i.span()),
                    "is the same time as `from`, so the window is empty; for all day write from = \"00:00\", to = \"24:00\"",
                );
            }
            if let (Some(from), Some(to)) = (from, to)
                && self.errors.len() == before
            {
                out.push(Window {
                    days,
                    from,
                    to,
                    limit,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_times() {
        assert_eq!(parse_clock("09:00"), Some(9 * 3600));
        assert_eq!(parse_clock("23:59:30"), Some(86_370));
        assert_eq!(parse_clock("24:00"), Some(86_400));
        for bad in ["9:00", "24:01", "12:60", "noon", "12", "12:00:00:00"] {
            assert_eq!(parse_clock(bad), None, "{bad}");
        }
    }
}
