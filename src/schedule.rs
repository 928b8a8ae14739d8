//! Which `[[agent.schedule]]` window is in force at a moment, and when that
//! next changes, in a given time zone (the system's; tests pass their own).

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use crate::config::{Limit, Window};

/// The weekday (Monday = 0) and seconds after midnight of `ms` in `tz`.
pub fn local(ms: i64, tz: &TimeZone) -> Option<(usize, u32)> {
    let z = Timestamp::from_millisecond(ms)
        .ok()?
        .to_zoned_datetime(tz.clone());
    let t = z.time();
    let day = z.weekday().to_monday_zero_offset() as usize;
    Some((
        day,
        t.hour() as u32 * 3600 + t.minute() as u32 * 60 + t.second() as u32,
    ))
}

/// The first window in force on weekday `day` at `secs` after midnight.
pub fn in_force_at(windows: &[Window], day: usize, secs: u32) -> Option<usize> {
    windows.iter().position(|w| {
        if w.from < w.to {
            w.days[day] && secs >= w.from && secs < w.to
        } else {
            // Across midnight: the evening of a listed day, or the morning after one.
            (w.days[day] && secs >= w.from) || (w.days[(day + 6) % 7] && secs < w.to)
        }
    })
}

/// The window in force at `ms` (unix ms) in `tz`.
pub fn in_force(windows: &[Window], ms: i64, tz: &TimeZone) -> Option<usize> {
    let (day, secs) = local(ms, tz)?;
    in_force_at(windows, day, secs)
}

/// When (unix ms) the window in force next changes, if it ever does.
pub fn next_change(windows: &[Window], ms: i64, tz: &TimeZone) -> Option<i64> {
    if windows.is_empty() {
        return None;
    }
    let now = in_force(windows, ms, tz);
    let today = Timestamp::from_millisecond(ms)
        .ok()?
        .to_zoned_datetime(tz.clone())
        .date();
    let mut edges: Vec<i64> = Vec::new();
    for offset in 0..=8i64 {
        let Ok(date) = today.checked_add(Span::new().days(offset)) else {
            continue;
        };
        let midnight = date.to_datetime(jiff::civil::Time::midnight());
        for w in windows {
            for secs in [w.from, w.to] {
                let Ok(dt) = midnight.checked_add(Span::new().seconds(i64::from(secs))) else {
                    continue;
                };
                if let Ok(z) = dt.to_zoned_datetime(tz.clone()) {
                    let t = z.timestamp().as_millisecond();
                    if t > ms {
                        edges.push(t);
                    }
                }
            }
        }
    }
    edges.sort_unstable();
    edges.dedup();
    edges.into_iter().find(|t| in_force(windows, *t, tz) != now)
}

/// The limit in force: the window's, else `base` (`agent.bandwidth_limit`).
pub fn limit(windows: &[Window], window: Option<usize>, base: Option<u64>) -> Limit {
    match window {
        Some(i) => windows[i].limit,
        None => base.map_or(Limit::Unlimited, Limit::Rate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(days: &[usize], from: u32, to: u32, limit: Limit) -> Window {
        let mut d = [false; 7];
        for i in days {
            d[*i] = true;
        }
        Window {
            days: d,
            from: from * 3600,
            to: to * 3600,
            limit,
        }
    }

    /// 2026-11-23 was a Monday; `h` hours into that week, UTC, as unix ms.
    fn monday_plus(h: i64) -> i64 {
        1_795_392_000_000 + h * 3_600_000
    }

    #[test]
    fn office_hours_and_a_window_across_midnight() {
        let utc = TimeZone::UTC;
        assert_eq!(local(monday_plus(0), &utc), Some((0, 0)));
        let windows = vec![
            w(&[0, 1, 2, 3, 4], 9, 18, Limit::Rate(5 << 20)),
            w(&[4], 22, 6, Limit::Paused),
        ];
        assert_eq!(in_force(&windows, monday_plus(8), &utc), None);
        assert_eq!(in_force(&windows, monday_plus(9), &utc), Some(0));
        assert_eq!(in_force(&windows, monday_plus(17), &utc), Some(0));
        assert_eq!(in_force(&windows, monday_plus(18), &utc), None);
        // Friday 23:00 and Saturday 05:00 are in the night window; Saturday 06:00 is not.
        assert_eq!(in_force(&windows, monday_plus(4 * 24 + 23), &utc), Some(1));
        assert_eq!(in_force(&windows, monday_plus(5 * 24 + 5), &utc), Some(1));
        assert_eq!(in_force(&windows, monday_plus(5 * 24 + 6), &utc), None);
        // Thursday night is not (the window starts on Fridays only).
        assert_eq!(in_force(&windows, monday_plus(3 * 24 + 23), &utc), None);
        assert_eq!(next_change(&windows, monday_plus(8), &utc), Some(monday_plus(9)));
        assert_eq!(
            next_change(&windows, monday_plus(10), &utc),
            Some(monday_plus(18))
        );
        // Friday evening: the office window ends at 18:00, the night one begins at 22:00.
        assert_eq!(
            next_change(&windows, monday_plus(4 * 24 + 18), &utc),
            Some(monday_plus(4 * 24 + 22))
        );
        // Saturday after 06:00: nothing until Monday 09:00.
        assert_eq!(
            next_change(&windows, monday_plus(5 * 24 + 7), &utc),
            Some(monday_plus(7 * 24 + 9))
        );
        assert_eq!(limit(&windows, None, Some(7)), Limit::Rate(7));
        assert_eq!(limit(&windows, Some(1), Some(7)), Limit::Paused);
        assert_eq!(next_change(&[], 0, &utc), None);
    }
}
