//! Uploads in flight, as the user sees them: bytes sent of each file, its
//! rate and how long it has left. Upload tasks count bytes into their
//! [`Flight`]; the loop reads them for the heartbeat snapshot (`status`)
//! and, on a terminal, for a progress line every few seconds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::units::format_bytes;
use crate::upload::Observer;

/// One upload in flight (a progress observer for its transfer).
pub struct Flight {
    pub path: PathBuf,
    pub size: u64,
    began: Instant,
    sent: AtomicI64,
}

impl Observer for Flight {
    fn bytes(&self, delta: i64) {
        self.sent.fetch_add(delta, Ordering::Relaxed);
    }
}

/// What `status` shows of one upload in flight.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FlightView {
    pub path: PathBuf,
    pub size: u64,
    pub sent: u64,
    /// Bytes per second since the upload (this attempt) began.
    pub rate: u64,
    /// Seconds left at that rate (None until anything was sent).
    pub eta_s: Option<u64>,
}

impl FlightView {
    /// "take.mov: 45% of 1.2 GiB, 38.0 MiB/s, 20 s left".
    pub fn line(&self) -> String {
        let pct = (self.sent * 100).checked_div(self.size).unwrap_or(100);
        let name = self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let eta = self
            .eta_s
            .map_or_else(|| "starting".to_string(), |s| format!("{} left", human_secs(s)));
        format!(
            "{name}: {pct}% of {}, {}/s, {eta}",
            format_bytes(self.size),
            format_bytes(self.rate)
        )
    }
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
pub struct Flights(Arc<Mutex<HashMap<i64, Arc<Flight>>>>);

impl Flights {
    /// Starts counting file `id`'s upload; the returned flight is its
    /// progress observer.
    pub fn begin(&self, id: i64, path: PathBuf, size: u64, now: Instant) -> Arc<Flight> {
        let flight = Arc::new(Flight {
            path,
            size,
            began: now,
            sent: AtomicI64::new(0),
        });
        self.0.lock().expect("flights lock").insert(id, flight.clone());
        flight
    }

    /// Stops counting file `id`'s upload; returns when it began.
    pub fn end(&self, id: i64) -> Option<Instant> {
        self.0.lock().expect("flights lock").remove(&id).map(|f| f.began)
    }

    /// Each upload in flight at `now`, in path order.
    pub fn views(&self, now: Instant) -> Vec<FlightView> {
        let map = self.0.lock().expect("flights lock");
        let mut out: Vec<FlightView> = map
            .values()
            .map(|f| {
                // Never more than the file (a session started over rewinds
                // what it had counted; this guards any slip).
                let sent = (f.sent.load(Ordering::Relaxed).max(0) as u64).min(f.size);
                let secs = now
                    .duration_since(f.began)
                    .max(Duration::from_millis(1))
                    .as_secs_f64();
                let rate = (sent as f64 / secs) as u64;
                let eta_s = (rate > 0).then(|| f.size.saturating_sub(sent).div_ceil(rate));
                FlightView {
                    path: f.path.clone(),
                    size: f.size,
                    sent,
                    rate,
                    eta_s,
                }
            })
            .collect();
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
        assert_eq!(flights.views(t0)[0].eta_s, None, "nothing sent yet");
        f.bytes(40 * 1024 * 1024);
        f.bytes(-(10 * 1024 * 1024)); // a failed part rewound
        let v = &flights.views(t0 + Duration::from_secs(10))[0];
        assert_eq!(v.sent, 30 * 1024 * 1024);
        assert_eq!(v.rate, 3 * 1024 * 1024);
        assert_eq!(v.eta_s, Some(24));
        assert_eq!(v.line(), "take.mov: 30% of 100.0 MiB, 3.0 MiB/s, 24 s left");
        flights.end(1);
        assert!(flights.views(t0).is_empty());
    }
}
