//! Uploads in flight, as the user sees them: bytes sent of each file, the
//! rate now (over the last few seconds, not since the start: an outage
//! shows as 0 B/s, not as a slowly falling average), how long it has left
//! at that rate (unknown while nothing moves), and how long it has sent
//! nothing. Upload tasks count bytes into their [`Flight`]; the loop reads
//! them for the heartbeat snapshot (`status`), the dashboard and, on a
//! terminal, a progress line every few seconds.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::units::format_bytes;
use crate::upload::Observer;

/// The rate now is measured over about this long.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// One upload in flight (a progress observer for its transfer).
pub struct Flight {
    pub path: PathBuf,
    pub size: u64,
    began: Instant,
    sent: AtomicI64,
    /// The most ever counted: a part sent again after a failure is not
    /// progress lost, so the percentage never goes backwards.
    most: AtomicU64,
    /// Milliseconds after `began` when bytes last went out (or sending
    /// began: the file was hashed).
    moved_ms: AtomicU64,
    /// Hashed, so sending: before that a long read is not a stall.
    sending: AtomicBool,
    /// (when, bytes sent) a second or more apart, the last few seconds:
    /// what the rate now is measured over.
    samples: Mutex<VecDeque<(Instant, u64)>>,
    /// Bytes sent by every upload so far (the dashboard's throughput).
    total: Arc<AtomicU64>,
}

impl Observer for Flight {
    fn hashed(&self, _id: crate::fileid::FileId, _sha256: &str) {
        self.moved();
        self.sending.store(true, Ordering::Relaxed);
    }
    fn bytes(&self, delta: i64) {
        let now = self.sent.fetch_add(delta, Ordering::Relaxed) + delta;
        if delta > 0 {
            self.total.fetch_add(delta as u64, Ordering::Relaxed);
            self.most.fetch_max(now.max(0) as u64, Ordering::Relaxed);
            self.moved();
        }
    }
}

impl Flight {
    fn moved(&self) {
        let at = Instant::now().saturating_duration_since(self.began).as_millis() as u64;
        self.moved_ms.fetch_max(at, Ordering::Relaxed);
    }

    /// What `status` shows of it at `now`.
    fn view(&self, now: Instant, stall_after: Duration) -> FlightView {
        // Never more than the file (a session started over rewinds what it
        // had counted; this guards any slip).
        let sent = (self.sent.load(Ordering::Relaxed).max(0) as u64).min(self.size);
        let shown = self.most.load(Ordering::Relaxed).clamp(sent, self.size);
        let age = now
            .saturating_duration_since(self.began)
            .max(Duration::from_millis(1));
        let avg_rate = (sent as f64 / age.as_secs_f64()) as u64;
        // The rate now: over the samples of the last few seconds (since
        // the start while there are none that old).
        let rate = {
            let mut samples = self.samples.lock().expect("samples lock");
            if samples
                .back()
                .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= Duration::from_secs(1))
            {
                samples.push_back((now, sent));
            }
            while samples.len() > 2 && samples[1].0 + RATE_WINDOW <= now {
                samples.pop_front();
            }
            match samples.front() {
                Some(&(at, then)) if now.saturating_duration_since(at) >= Duration::from_secs(1) => {
                    (sent.saturating_sub(then) as f64 / now.saturating_duration_since(at).as_secs_f64())
                        as u64
                }
                _ => avg_rate,
            }
        };
        let moved = self.began + Duration::from_millis(self.moved_ms.load(Ordering::Relaxed));
        let quiet = now.saturating_duration_since(moved);
        // Nothing for a whole window: nothing is moving now (the samples
        // may still straddle the last bytes).
        let rate = if quiet >= RATE_WINDOW { 0 } else { rate };
        // Hashing, or every byte sent and the service assembling the file,
        // is not a stall.
        let sending = self.sending.load(Ordering::Relaxed) && sent < self.size;
        let stalled_s = (sending && quiet >= stall_after).then_some(quiet.as_secs());
        let eta_s = (rate > 0 && stalled_s.is_none()).then(|| self.size.saturating_sub(sent).div_ceil(rate));
        FlightView {
            path: self.path.clone(),
            size: self.size,
            sent: shown,
            rate,
            avg_rate,
            eta_s,
            stalled_s,
        }
    }
}

/// What `status` shows of one upload in flight.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FlightView {
    pub path: PathBuf,
    pub size: u64,
    /// The most sent so far (a part sent again does not count twice).
    pub sent: u64,
    /// Bytes per second over the last few seconds.
    pub rate: u64,
    /// Bytes per second since the upload (this attempt) began.
    #[serde(default)]
    pub avg_rate: u64,
    /// Seconds left at the rate now (None: unknown, nothing moves).
    pub eta_s: Option<u64>,
    /// Seconds without a byte sent, once that is `stall_after` or more.
    #[serde(default)]
    pub stalled_s: Option<u64>,
}

impl FlightView {
    /// "take.mov: 45% of 1.2 GiB, 38.0 MiB/s, 20 s left", or "…, stalled:
    /// nothing sent for 45 s, time left unknown".
    pub fn line(&self) -> String {
        let pct = (self.sent * 100).checked_div(self.size).unwrap_or(100);
        let name = self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let size = format_bytes(self.size);
        match (self.stalled_s, self.eta_s) {
            (Some(s), _) => format!(
                "{name}: {pct}% of {size}, stalled: nothing sent for {}, time left unknown",
                human_secs(s)
            ),
            (None, Some(s)) => format!(
                "{name}: {pct}% of {size}, {}/s, {} left",
                format_bytes(self.rate),
                human_secs(s)
            ),
            (None, None) if self.sent == 0 => format!("{name}: {pct}% of {size}, starting"),
            (None, None) => format!("{name}: {pct}% of {size}, 0 B/s, time left unknown"),
        }
    }
}

/// One line for every upload in flight: "3 uploads: 45% of 1.2 GiB,
/// 38.0 MiB/s, about 20 s left" (the longest of their times left; unknown
/// while any sends nothing). None when nothing is in flight.
pub fn total_line(views: &[FlightView]) -> Option<String> {
    if views.is_empty() {
        return None;
    }
    let size: u64 = views.iter().map(|v| v.size).sum();
    let sent: u64 = views.iter().map(|v| v.sent).sum();
    let rate: u64 = views.iter().map(|v| v.rate).sum();
    let pct = (sent * 100).checked_div(size).unwrap_or(100);
    let left = if views.iter().any(|v| v.eta_s.is_none()) {
        "time left unknown".to_string()
    } else {
        let most = views.iter().filter_map(|v| v.eta_s).max().unwrap_or(0);
        format!("about {} left", human_secs(most))
    };
    Some(format!(
        "{} upload(s): {pct}% of {}, {}/s, {left}",
        views.len(),
        format_bytes(size),
        format_bytes(rate)
    ))
}

fn human_secs(s: u64) -> String {
    match s {
        0..=99 => format!("{s} s"),
        100..=5999 => format!("{} min", s.div_ceil(60)),
        _ => format!("{:.1} h", s as f64 / 3600.0),
    }
}

/// Every upload in flight, by journal id.
#[derive(Default, Clone)]
pub struct Flights(Arc<Mutex<HashMap<i64, Arc<Flight>>>>, Arc<AtomicU64>);

impl Flights {
    /// Starts counting file `id`'s upload; the returned flight is its
    /// progress observer.
    pub fn begin(&self, id: i64, path: PathBuf, size: u64, now: Instant) -> Arc<Flight> {
        let flight = Arc::new(Flight {
            path,
            size,
            began: now,
            sent: AtomicI64::new(0),
            most: AtomicU64::new(0),
            moved_ms: AtomicU64::new(0),
            sending: AtomicBool::new(false),
            samples: Mutex::new(VecDeque::new()),
            total: self.1.clone(),
        });
        self.0.lock().expect("flights lock").insert(id, flight.clone());
        flight
    }

    /// Bytes sent by every upload since the agent started (parts sent
    /// again count again: what went over the wire).
    pub fn total_sent(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }

    /// Stops counting file `id`'s upload; returns when it began.
    pub fn end(&self, id: i64) -> Option<Instant> {
        self.0.lock().expect("flights lock").remove(&id).map(|f| f.began)
    }

    /// Each upload in flight at `now`, in path order; one that has sent
    /// nothing for `stall_after` is stalled.
    pub fn views(&self, now: Instant, stall_after: Duration) -> Vec<FlightView> {
        let map = self.0.lock().expect("flights lock");
        let mut out: Vec<FlightView> = map.values().map(|f| f.view(now, stall_after)).collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_and_time_left_follow_the_bytes_sent() {
        let flights = Flights::default();
        let t0 = Instant::now();
        let f = flights.begin(1, "/d/take.mov".into(), 100 * 1024 * 1024, t0);
        assert_eq!(flights.views(t0, STALL)[0].eta_s, None, "nothing sent yet");
        tokio::time::advance(Duration::from_secs(6)).await;
        f.bytes(40 * 1024 * 1024);
        f.bytes(-(10 * 1024 * 1024)); // a failed part rewound
        tokio::time::advance(Duration::from_secs(4)).await;
        let v = &flights.views(t0 + Duration::from_secs(10), STALL)[0];
        // The percentage keeps the most sent; the rate and time left count
        // what is really through.
        assert_eq!(v.sent, 40 * 1024 * 1024);
        assert_eq!(v.rate, 3 * 1024 * 1024);
        assert_eq!(v.eta_s, Some(24));
        assert_eq!(v.line(), "take.mov: 40% of 100.0 MiB, 3.0 MiB/s, 24 s left");
        flights.end(1);
        assert!(flights.views(t0, STALL).is_empty());
    }

    const STALL: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_sends_nothing_shows_0_b_s_then_stalled_with_no_time_left() {
        let flights = Flights::default();
        let t0 = Instant::now();
        let f = flights.begin(1, "/d/take.mov".into(), 100 * 1024 * 1024, t0);
        // A long hash is not a stall.
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(flights.views(Instant::now(), STALL)[0].stalled_s, None);
        let id = crate::fileid::FileId {
            dev: 1,
            ino: 2,
            size: 100 * 1024 * 1024,
            mtime_ns: 3,
            ctime_ns: 4,
        };
        f.hashed(id, "abc");
        for _ in 0..10 {
            f.bytes(1024 * 1024);
            tokio::time::advance(Duration::from_secs(1)).await;
            flights.views(Instant::now(), STALL);
        }
        let v = &flights.views(Instant::now(), STALL)[0];
        assert_eq!((v.rate, v.stalled_s), (1024 * 1024, None));
        // The network goes quiet: the rate now falls to 0 within the
        // window (the average would still say ~80 KiB/s), time left is
        // unknown, and past `stall_after` it is stalled.
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(1)).await;
            flights.views(Instant::now(), STALL);
        }
        let v = &flights.views(Instant::now(), STALL)[0];
        assert_eq!((v.rate, v.eta_s, v.stalled_s), (0, None, None));
        assert!(v.avg_rate > 0);
        assert_eq!(v.line(), "take.mov: 10% of 100.0 MiB, 0 B/s, time left unknown");
        tokio::time::advance(Duration::from_secs(49)).await;
        let v = &flights.views(Instant::now(), STALL)[0];
        assert_eq!(v.stalled_s, Some(60));
        assert_eq!(
            v.line(),
            "take.mov: 10% of 100.0 MiB, stalled: nothing sent for 60 s, time left unknown"
        );
        // Bytes again: not stalled any more.
        f.bytes(1);
        assert_eq!(flights.views(Instant::now(), STALL)[0].stalled_s, None);
    }

    #[test]
    fn one_line_sums_every_upload_and_says_unknown_while_one_is_stalled() {
        let v = |sent: u64, rate: u64, eta_s: Option<u64>| FlightView {
            path: "/d/x".into(),
            size: 100 * 1024 * 1024,
            sent,
            rate,
            avg_rate: rate,
            eta_s,
            stalled_s: None,
        };
        assert_eq!(total_line(&[]), None);
        let two = [v(50 * 1024 * 1024, 1024 * 1024, Some(50)), v(0, 0, Some(200))];
        assert_eq!(
            total_line(&two).unwrap(),
            "2 upload(s): 25% of 200.0 MiB, 1.0 MiB/s, about 4 min left"
        );
        let stalled = [v(50 * 1024 * 1024, 0, None), v(0, 0, Some(200))];
        assert!(total_line(&stalled).unwrap().ends_with("time left unknown"));
    }
}
