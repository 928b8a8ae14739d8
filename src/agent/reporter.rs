//! What the agent tells: the control plane's counters and health (`Live`),
//! the dashboard's event stream, the healthcheck pings owed, and the run's
//! [`Report`]. The agent calls one method per fact; the atomics and the
//! report's fields stay here.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::Report;
use crate::control::{Event, Live};

#[derive(Default)]
pub(super) struct Reporter {
    live: Arc<Live>,
    report: Report,
    /// Unix ms of the last file event seen (for the heartbeat record).
    last_event_at: Option<i64>,
}

impl Reporter {
    /// Reports into `live` (the control plane's view) from now on.
    pub fn set_live(&mut self, live: Arc<Live>) {
        self.live = live;
    }

    /// Whether anyone follows the event stream (progress events are sent
    /// only then).
    pub fn listened(&self) -> bool {
        self.live.hub.listened()
    }

    /// An event for the dashboard's stream only.
    pub fn send(&self, event: &Event) {
        self.live.hub.send(event);
    }

    /// A second's throughput sample for the dashboard's chart.
    pub fn throughput(
        &self,
        at_ms: i64,
        total_sent: u64,
        limit: Option<u64>,
        standing: crate::control::charts::Standing,
    ) {
        self.live
            .throughput
            .lock()
            .expect("throughput lock")
            .sample(at_ms, total_sent, limit, standing);
    }

    /// The notification outbox has something new.
    pub fn outbox_changed(&self) {
        self.live.outbox.notify_one();
    }

    /// A file event was seen at `at_ms`.
    pub fn file_event(&mut self, at_ms: i64) {
        self.last_event_at = Some(at_ms);
    }

    pub fn last_event_at(&self) -> Option<i64> {
        self.last_event_at
    }

    /// An upload ended after `secs` (for the duration histogram).
    pub fn took(&self, secs: f64) {
        self.live.observe_duration(secs);
    }

    /// A file was uploaded at `at_ms` (counted before its event is sent,
    /// so whoever sees the event sees the count).
    pub fn uploaded(&mut self, size: u64, at_ms: i64) {
        self.report.uploaded += 1;
        self.report.bytes_uploaded += size;
        self.live.files_uploaded.fetch_add(1, Relaxed);
        self.live.bytes_uploaded.fetch_add(size, Relaxed);
        self.live.last_success_ms.store(at_ms.max(0) as u64, Relaxed);
    }

    /// A healthcheck ping is owed: a success (unless a failure already is),
    /// or a failure.
    pub fn ping_owed(&self, failure: bool) {
        if failure {
            self.live.ping.store(2, Relaxed);
        } else {
            self.live.ping.fetch_max(1, Relaxed);
        }
        self.outbox_changed();
    }

    /// A file was found in the workspace already and recorded, not sent.
    pub fn adopted(&mut self) {
        self.report.adopted += 1;
        self.live.reconciliations.fetch_add(1, Relaxed);
    }

    /// An attempt failed, for `kind`'s reason; `for_good`: the file is now
    /// failed, else it is retried.
    pub fn attempt_failed(&self, kind: &'static str, for_good: bool) {
        self.live.count_failure(kind);
        if for_good {
            self.live.files_failed.fetch_add(1, Relaxed);
        } else {
            self.live.retries.fetch_add(1, Relaxed);
        }
    }

    /// Counts a file this run did not upload (failed, or left for the next run).
    pub fn not_uploaded(&mut self) {
        self.report.failed += 1;
    }

    /// Counts a file already up to date (or left out by policy).
    pub fn skipped(&mut self) {
        self.report.skipped += 1;
    }

    /// Counts a file a dry run would upload.
    /// `--max-transfer` was reached.
    pub fn transfer_limit_reached(&mut self) {
        self.report.transfer_limit_reached = true;
    }

    pub fn would_upload(&mut self, changed: bool, size: u64) {
        self.report.would_upload += 1;
        self.report.would_upload_changed += usize::from(changed);
        self.report.would_upload_bytes += size;
    }

    /// Counts a remote copy a dry run would delete (`mirror_deletes`).
    pub fn would_delete(&mut self) {
        self.report.would_delete += 1;
    }

    /// Counts a remote copy deleted (`mirror_deletes`).
    pub fn deleted(&mut self) {
        self.report.deleted += 1;
    }

    /// Whether uploads are held back, and why the agent is not healthy.
    pub fn health(&self, paused: bool, problems: Vec<String>) {
        self.live.paused.store(paused, Relaxed);
        *self
            .live
            .problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = problems;
    }

    /// The problems last reported.
    pub fn problems(&self) -> Vec<String> {
        self.live
            .problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The run's report, with the sets a `--once` run leaves open.
    pub fn finish(self, sets_waiting: Vec<(String, String)>) -> Report {
        Report {
            sets_waiting,
            ..self.report
        }
    }
}
