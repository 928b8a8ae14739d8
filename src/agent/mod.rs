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
//! Rooms: `run` holds the loop, one call per `select!` arm; `intake` turns
//! hints and scans into settled files and asks the journal about each (and
//! the start-from-now policies); `dispatch` turns due files into upload
//! tasks (order, priority, the small files' lane) and each outcome, by the
//! pure rule in `rule`, into one journal transition; `gate` says whether
//! uploads may start, `outage` asks the service whether a pause ends;
//! `steer` the user's pause, schedules, reloads and events; `sets` upload
//! sets; `roots` the watched folders' keys and identities; `reporter` the
//! counters and events; `health` what `/healthz` and `status` see.
//!
//! The `Agent` holds what it was given and one owner per room: an owner's
//! fields are private to its room, so another room asks it through a method
//! and a reload resets each owner with one call.

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
use crate::journal::{FileRow, Journal, JournalError, State, Verdict};
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
    /// `--once`: no new upload starts once this many bytes have been
    /// started (rclone's `--max-transfer`, soft cutoff).
    pub max_transfer: Option<u64>,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub uploaded: usize,
    /// The bytes of the files uploaded (adopted ones not counted).
    pub bytes_uploaded: u64,
    /// Found in the workspace already (no journal record) and recorded, not sent.
    pub adopted: usize,
    pub failed: usize,
    pub skipped: usize,
    pub would_upload: usize,
    /// Of those, files the journal knows (a changed version; the rest are new).
    pub would_upload_changed: usize,
    /// Their bytes.
    pub would_upload_bytes: u64,
    /// Remote copies deleted (`mirror_deletes`), and those a dry run would delete.
    pub deleted: usize,
    pub would_delete: usize,
    /// `--max-transfer` stopped new uploads; files are left for the next run.
    pub transfer_limit_reached: bool,
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
    /// The control API's configured address is taken.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
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

mod clock_step;
mod deletes;
mod dispatch;
mod flights;
mod gate;
mod health;
mod hooks;
mod intake;
mod marker;
mod mhl;
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
use flights::Flights;
pub use flights::{FlightView, total_line};
pub use observer::{JournalObserver, done_record, usable};

pub struct Agent {
    // What it was given (a reload swaps the settings and the transfer).
    settings: Arc<Settings>,
    transfer: Arc<dyn Transfer>,
    journal: Journal,
    opts: RunOptions,
    clock: Clock,
    /// Where the settings in force are published (a reload swaps them).
    current: Option<tokio::sync::watch::Sender<Arc<crate::config::Settings>>>,
    /// Requests from the control plane (the loop takes them at start).
    commands: Option<mpsc::Receiver<crate::control::Command>>,
    // Its owners, each with private fields and methods.
    /// The roots' keys, folder identities, watch modes and problems.
    roots: roots::Roots,
    /// Files settling, walks under way, files put off.
    intake: intake::Intake,
    /// Uploads in flight, the small files' lane, how the queue is served.
    dispatch: dispatch::Dispatch,
    /// Whether uploads may start: the service's, the user's and the
    /// schedule's pauses.
    gate: gate::Gate,
    /// Upload sets' judgements and manifests under way.
    sets: sets::Sets,
    /// Counters, health, events and the run's report.
    reporter: reporter::Reporter,
    /// Notices a wall clock set back.
    wall: clock_step::WallWatch,
    /// Uploads, hashes and manifests running; their results come back to
    /// the loop ([`dispatch::TaskResult`]).
    tasks: JoinSet<TaskResult>,
    /// Post-upload hooks' turns (a few at a time, beside the uploads).
    hook_runner: crate::hooks::Runner,
    /// `mirror_deletes`: each root's rounds, brakes and holds.
    deletes: deletes::Deletes,
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
        Agent {
            roots: roots::Roots::new(&settings),
            dispatch: dispatch::Dispatch::new(&settings),
            settings,
            transfer,
            journal,
            opts,
            clock,
            intake: intake::Intake::new(),
            tasks: JoinSet::new(),
            sets: sets::Sets::default(),
            reporter: reporter::Reporter::default(),
            wall: clock_step::WallWatch::default(),
            commands: None,
            current: None,
            gate: gate::Gate::new(),
            hook_runner: crate::hooks::Runner::default(),
            deletes: deletes::Deletes::default(),
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
