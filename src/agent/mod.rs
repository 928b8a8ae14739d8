//! The agent: wires watch → settle → journal → uploader → after-upload.
//!
//! One loop owns the settle state and the set of uploads in flight; uploads
//! and sha256 checks run as tasks whose results come back to the loop, so no
//! state is shared. Events and scans only say "look at this path"; settle
//! says when a file is finished; the journal says whether it needs uploading
//! and holds the durable queue. Shutdown stops watching, cancels in-flight
//! transfers (their sessions and finished parts are already recorded, so the
//! next start resumes them) and flushes the journal.
//!
//! Rooms: this file holds the loop; `intake` turns hints and scans into
//! settled files and asks the journal about each (and the start-from-now
//! policies); `dispatch` turns due files into upload tasks (order, priority,
//! the small files' lane) and each outcome into one journal transition;
//! `outage` the key check and the service-wide pauses; `steer` the user's
//! pause, schedules, reloads and events; `sets` upload sets; `health` what
//! `/healthz` and `status` see.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::ApiError;
use crate::clock::Clock;
use crate::config::{RootId, Settings, WatchSettings};
use crate::fileid::Fingerprint;
use crate::journal::{DoneRecord, FileRow, Journal, JournalError, State, Verdict};
use crate::mapping;
use crate::scan::{self, Rejected};
use crate::settle::{Decision, Fs, Settler};
use crate::upload::{Job, Observer, Outcome, Transfer, UploadError};
use crate::watch::{self, Hint, WatchError, WatchMode};

#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Scan, upload what is pending, exit.
    pub once: bool,
    /// Log what would be uploaded; send nothing, record nothing.
    pub dry_run: bool,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub uploaded: usize,
    /// Found in the workspace already (no journal record) and recorded, not sent.
    pub adopted: usize,
    pub failed: usize,
    pub skipped: usize,
    pub would_upload: usize,
    /// Upload sets not complete when a `--once` run ends: each one's folder
    /// (root-relative) and why it waits.
    pub sets_waiting: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("the API key was rejected: {0}")]
    Auth(String),
    /// Another agent watches a folder of this one's.
    #[error("{0}")]
    Shared(String),
}

/// Why uploads are held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// The API key was rejected.
    Auth,
    /// No answer from the service (unix ms since when).
    Unreachable { since_ms: i64 },
}

/// How often an unreachable service is asked again.
const OUTAGE_RECHECK: Duration = Duration::from_secs(15);

/// A new folder is scanned again this long after it appeared.
const NEW_FOLDER_RESCAN: Duration = Duration::from_secs(1);

/// Heartbeats (seconds) between progress lines on a terminal.
const PROGRESS_EVERY: u64 = 5;

/// How long uploads pause after the key is rejected before checking again.
const AUTH_RECHECK: Duration = Duration::from_secs(60);

mod dispatch;
mod flights;
mod gate;
mod health;
mod intake;
mod marker;
mod observer;
mod outage;
mod reporter;
mod roots;
mod rule;
mod run;
mod sets;
mod steer;
#[cfg(test)]
mod tests;

use dispatch::TaskResult;
pub use flights::FlightView;
use flights::Flights;
pub use observer::{JournalObserver, usable};

pub struct Agent {
    settings: Arc<Settings>,
    transfer: Arc<dyn Transfer>,
    journal: Journal,
    opts: RunOptions,
    clock: Clock,
    /// The roots' keys, folder identities, watch modes and problems.
    roots: roots::Roots,
    /// Files settling, walks under way, files put off.
    intake: intake::Intake,
    tasks: JoinSet<TaskResult>,
    inflight: HashSet<i64>,
    /// Upload sets' judgements and manifests under way.
    sets: sets::Sets,
    /// Those of `inflight` in the small files' lane.
    lane: HashSet<i64>,
    /// How the queue is served (order, priorities), from the settings.
    serving: crate::journal::Serving,
    /// `--once`: files already tried in this run (not tried twice).
    /// Shared with the journal's queue query without copying (copied on
    /// write only if a query still holds it), so a run of 100,000 files
    /// does not rebuild this set for every upload started.
    attempted: Arc<HashSet<i64>>,
    /// Queued files whose watch root is no longer configured.
    orphans: HashSet<i64>,
    /// Counters, health, events and the run's report.
    reporter: reporter::Reporter,
    queue_dirty: bool,
    /// The last heartbeat's (instant, wall ms): a wall clock that fell
    /// behind the instant's advance was stepped back.
    wall_seen: Option<(Instant, i64)>,
    /// Uploads in flight and their progress.
    flights: Flights,
    /// Where the settings in force are published (a reload swaps them).
    current: Option<tokio::sync::watch::Sender<Arc<crate::config::Settings>>>,
    /// Requests from the control plane.
    commands: Option<mpsc::Receiver<crate::control::Command>>,
    /// Whether uploads may start: the service's, the user's and the
    /// schedule's pauses.
    gate: gate::Gate,
}

impl Agent {
    /// An agent over `settings`' roots, sending with `transfer` and
    /// recording in `journal`; every time it reads comes from `clock`.
    pub fn new(
        settings: Arc<Settings>,
        transfer: Arc<dyn Transfer>,
        journal: Journal,
        opts: RunOptions,
        clock: Clock,
    ) -> Agent {
        let serving = serving_of(&settings);
        Agent {
            roots: roots::Roots::new(&settings),
            settings,
            transfer,
            journal,
            opts,
            clock,
            intake: intake::Intake::new(),
            tasks: JoinSet::new(),
            inflight: HashSet::new(),
            lane: HashSet::new(),
            sets: sets::Sets::default(),
            serving,
            attempted: Arc::new(HashSet::new()),
            orphans: HashSet::new(),
            reporter: reporter::Reporter::default(),
            queue_dirty: true,
            wall_seen: None,
            flights: Flights::default(),
            commands: None,
            current: None,
            gate: gate::Gate::new(),
        }
    }

    /// Reports counters and health into `live` (the control plane's view).
    pub fn with_live(mut self, live: Arc<crate::control::Live>) -> Agent {
        self.reporter.set_live(live);
        self
    }

    /// Takes pause, resume and reload requests from `commands`.
    pub fn with_commands(mut self, commands: mpsc::Receiver<crate::control::Command>) -> Agent {
        self.commands = Some(commands);
        self
    }

    /// Reads schedules in `tz` instead of the system's time zone.
    #[cfg(test)]
    pub fn with_time_zone(mut self, tz: jiff::tz::TimeZone) -> Agent {
        self.gate.set_tz(tz);
        self
    }

    /// Publishes each config it switches to in `current`.
    pub fn with_current(
        mut self,
        current: tokio::sync::watch::Sender<Arc<crate::config::Settings>>,
    ) -> Agent {
        self.current = Some(current);
        self
    }

    /// Root `id`'s journal key.
    fn key(&self, id: RootId) -> String {
        self.roots.key(id)
    }

    /// The configured root a journal record belongs to (None: no longer watched).
    fn root_of(&self, row: &FileRow) -> Option<RootId> {
        self.roots.of(row)
    }
}

/// How the queue is served under `settings`: its order, and each root
/// whose priority is not 0.
fn serving_of(settings: &Settings) -> crate::journal::Serving {
    crate::journal::Serving {
        order: settings.agent.order,
        priorities: settings
            .watches
            .iter()
            .filter(|w| w.priority != 0)
            .map(|w| (w.key(), w.priority))
            .collect(),
        max_size: None,
    }
}

impl Agent {
    /// Refuses to watch a folder another live agent watches (each would
    /// upload every file), then marks each folder as this agent's. Not in
    /// a fleet (its nodes share folders by design) nor in a dry run.
    fn claim_roots(&self) -> Result<Option<marker::Mark>, AgentError> {
        if self.settings.fleet.is_some() || self.opts.dry_run {
            return Ok(None);
        }
        let now = self.clock.wall_ms();
        let me = marker::Mark::me(&self.settings.agent.state_dir, now);
        for w in &self.settings.watches {
            if let Some(other) = marker::other_agent(&w.path, &me, now) {
                return Err(AgentError::Shared(format!(
                    "{} is already watched by {}; two agents on one folder upload every file twice. Stop that \
                     agent, give each agent its own folders, or share the work with [fleet]",
                    w.path.display(),
                    other.describe()
                )));
            }
        }
        for w in &self.settings.watches {
            marker::write(&w.path, &me);
        }
        Ok(Some(me))
    }

    /// Keeps this agent's markers fresh (and marks roots added by a
    /// reload); another live agent's marker found meanwhile is said loudly.
    fn refresh_marks(&mut self, mark: &mut Option<marker::Mark>) {
        let Some(me) = mark else {
            return;
        };
        me.at_ms = self.clock.wall_ms();
        for w in &self.settings.watches {
            match marker::other_agent(&w.path, me, me.at_ms) {
                Some(other) => tracing::warn!(
                    "{} is also watched by {}; two agents on one folder upload every file twice: stop one",
                    w.path.display(),
                    other.describe()
                ),
                None => marker::write(&w.path, me),
            }
        }
    }
}
