//! What the dashboard draws (`GET /api/charts`): throughput over the last
//! hour (10 s buckets, with the limit in force and whether the service was
//! out or uploads paused), the bandwidth schedule's week (15 min slots in
//! local time), and a frame strip per upload set (each frame done, waiting
//! or missing). The page draws them itself (inline SVG); tests read the
//! same data back from the drawing.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};

/// Seconds per throughput bucket, and how many are kept (an hour).
pub const BUCKET_S: i64 = 10;
const BUCKETS: usize = 360;

/// Slots per day in the schedule's week.
const SLOT_MIN: u32 = 15;

/// Sets given a frame strip at most (open ones, then those complete in
/// the last day).
pub const MAX_STRIP_SETS: usize = 50;

/// Frames of one set drawn at most (a strip of more says how many were left out).
const MAX_FRAMES: usize = 5000;

/// How uploading stood during a bucket, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    Ok,
    /// Paused by the user or the schedule.
    Paused,
    /// The service unreachable or the key refused.
    Outage,
}

#[derive(Debug, Clone)]
struct Bucket {
    /// Unix ms at its start.
    at: i64,
    bytes: u64,
    /// Seconds sampled in it.
    secs: u32,
    /// The limit in force at its last sample (B/s; None: none).
    limit: Option<u64>,
    standing: Standing,
}

/// Bytes sent per second, sampled once a second by the agent.
#[derive(Debug, Default)]
pub struct Throughput {
    buckets: VecDeque<Bucket>,
    last_total: Option<u64>,
}

impl Throughput {
    /// One sample: `total` bytes sent so far by every upload (a counter
    /// that only grows), the limit and how uploading stood at `now_ms`.
    pub fn sample(&mut self, now_ms: i64, total: u64, limit: Option<u64>, standing: Standing) {
        let delta = self.last_total.map_or(0, |t| total.saturating_sub(t));
        self.last_total = Some(total);
        let at = now_ms - now_ms.rem_euclid(BUCKET_S * 1000);
        match self.buckets.back_mut() {
            Some(b) if b.at == at => {
                b.bytes += delta;
                b.secs += 1;
                b.limit = limit;
                b.standing = b.standing.max(standing);
            }
            _ => {
                self.buckets.push_back(Bucket {
                    at,
                    bytes: delta,
                    secs: 1,
                    limit,
                    standing,
                });
                while self.buckets.len() > BUCKETS {
                    self.buckets.pop_front();
                }
            }
        }
    }

    /// `{bucket_s, points: [{t, rate, limit, standing}]}`; `rate` in B/s.
    pub fn view(&self) -> Value {
        let points: Vec<Value> = self
            .buckets
            .iter()
            .map(|b| {
                json!({
                    "t": b.at,
                    "rate": b.bytes / u64::from(b.secs.max(1)),
                    "limit": b.limit,
                    "standing": b.standing,
                })
            })
            .collect();
        json!({ "bucket_s": BUCKET_S, "points": points })
    }
}

/// The bandwidth schedule over a week in local time: for each day (Monday
/// first) the limit of each 15 min slot (`null`: no limit, `0`: paused,
/// else B/s), and where now is.
pub fn week(settings: &crate::config::Settings, now_ms: i64, tz: &jiff::tz::TimeZone) -> Value {
    use crate::config::Limit;
    let windows = &settings.agent.schedule;
    let base = settings.agent.bandwidth_limit;
    let slots = 24 * 60 / SLOT_MIN;
    let days: Vec<Vec<Option<u64>>> = (0..7)
        .map(|day| {
            (0..slots)
                .map(|slot| {
                    let window = crate::schedule::in_force_at(windows, day, slot * SLOT_MIN * 60);
                    match crate::schedule::limit(windows, window, base) {
                        Limit::Rate(r) => Some(r),
                        Limit::Unlimited => None,
                        Limit::Paused => Some(0),
                    }
                })
                .collect()
        })
        .collect();
    let now = crate::schedule::local(now_ms, tz)
        .map(|(day, secs)| json!({ "day": day, "slot": secs / 60 / SLOT_MIN }));
    json!({
        "slot_min": SLOT_MIN,
        "scheduled": !windows.is_empty(),
        "base_limit": base,
        "days": days,
        "now": now,
    })
}

/// One set's frame sequences: `{pattern, first, last, frames: "…"}` where
/// `frames` has one letter per number from first to last: `d` done, `w`
/// waiting (held, settling, uploading), `f` failed, `-` missing (a gap).
pub fn frame_strips(files: &[(String, String)]) -> Vec<Value> {
    let mut seqs: BTreeMap<String, BTreeMap<u64, char>> = BTreeMap::new();
    for (rel, state) in files {
        if let Some((pattern, n)) = crate::sequence::frame(rel) {
            let mark = match state.as_str() {
                "done" => 'd',
                "failed" => 'f',
                _ => 'w',
            };
            seqs.entry(pattern).or_default().insert(n, mark);
        }
    }
    seqs.into_iter()
        .filter(|(_, frames)| frames.len() >= 2)
        .map(|(pattern, frames)| {
            let first = *frames.keys().next().unwrap_or(&0);
            let last = *frames.keys().next_back().unwrap_or(&0);
            let span = (last - first + 1) as usize;
            let shown = span.min(MAX_FRAMES);
            let strip: String = (first..first + shown as u64)
                .map(|n| frames.get(&n).copied().unwrap_or('-'))
                .collect();
            json!({
                "pattern": pattern,
                "first": first,
                "last": last,
                "frames": strip,
                "left_out": span - shown,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_fold_into_ten_second_buckets_with_their_worst_standing() {
        let mut t = Throughput::default();
        t.sample(100_000, 0, Some(1000), Standing::Ok);
        for s in 1..10 {
            t.sample(100_000 + s * 1000, s as u64 * 1000, Some(1000), Standing::Ok);
        }
        t.sample(110_000, 9000, Some(1000), Standing::Outage);
        t.sample(111_000, 9000, None, Standing::Paused);
        let v = t.view();
        let p = v["points"].as_array().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0]["rate"], 900, "{v}");
        assert_eq!(p[0]["standing"], "ok");
        assert_eq!(p[1]["rate"], 0);
        assert_eq!(p[1]["standing"], "outage", "the worst of the bucket");
        assert!(p[1]["limit"].is_null(), "the limit at its last sample");
        for s in 0..(BUCKETS as i64 + 5) {
            t.sample(200_000 + s * 10_000, 9000, None, Standing::Ok);
        }
        assert_eq!(t.view()["points"].as_array().unwrap().len(), BUCKETS);
    }

    #[test]
    fn a_strip_marks_done_waiting_failed_and_missing_frames() {
        let files: Vec<(String, String)> = [
            ("a/sh.0001.exr", "done"),
            ("a/sh.0002.exr", "held"),
            ("a/sh.0004.exr", "failed"),
            ("a/sh.0005.exr", "done"),
            ("a/notes.txt", "done"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let s = frame_strips(&files);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0]["pattern"], "a/sh.####.exr");
        assert_eq!(s[0]["frames"], "dw-fd");
        assert_eq!(
            (s[0]["first"].as_u64(), s[0]["last"].as_u64()),
            (Some(1), Some(5))
        );
    }
}
