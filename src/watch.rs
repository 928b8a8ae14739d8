//! File-system watching: one notify watcher per `[[watch]]` root, native
//! (inotify/FSEvents/ReadDirectoryChangesW) or polling, behind one enum.
//!
//! Events are only hints ("look at this path"); the scan is the truth. So any
//! sign that events were lost (a notify rescan flag, a watcher error, our own
//! channel filling up) turns into a rescan of that root, never into a guess.
//! When the OS watch limit is hit, that root falls back to polling with a
//! warning that says how to raise the limit. Symlinks are not followed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::{Config, Event, EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{RootId, WatchSettings};

/// Poll interval when falling back from native events without a configured one.
pub const FALLBACK_POLL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// Look at this path.
    Path(RootId, PathBuf),
    /// A folder appeared: scan it (files may predate its watch).
    Dir(RootId, PathBuf),
    /// Events may have been lost: scan the whole root.
    Rescan(RootId),
}

/// How a root is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// The OS's change events (inotify, FSEvents, ReadDirectoryChangesW).
    Native,
    /// Looking at the folder every `every` (`poll_interval`, or the
    /// fallback when the OS limit on watches was reached).
    Polling { every: Duration, limit_reached: bool },
}

impl std::fmt::Display for WatchMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchMode::Native => f.write_str("native"),
            WatchMode::Polling {
                every,
                limit_reached: false,
            } => write!(f, "polling every {every:?}"),
            WatchMode::Polling {
                every,
                limit_reached: true,
            } => write!(f, "polling every {every:?} (watch limit reached)"),
        }
    }
}

/// A root that cannot be watched, with what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot watch {}: {reason}; {}", path.display(), self.hint())]
pub struct WatchError {
    pub path: PathBuf,
    pub reason: String,
    pub kind: WatchErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchErrorKind {
    /// The folder is not there.
    Missing,
    /// The agent's user may not read it.
    Denied,
    Other,
}

impl WatchError {
    fn new(path: &Path, e: notify::Error) -> WatchError {
        let kind = match &e.kind {
            notify::ErrorKind::PathNotFound => WatchErrorKind::Missing,
            notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound => WatchErrorKind::Missing,
            notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                WatchErrorKind::Denied
            }
            _ => WatchErrorKind::Other,
        };
        WatchError {
            path: path.to_path_buf(),
            reason: e.to_string(),
            kind,
        }
    }

    /// The fix-it hint shown with the error.
    pub fn hint(&self) -> &'static str {
        match self.kind {
            WatchErrorKind::Missing => "create the folder, or correct `path` in its [[watch]] table",
            WatchErrorKind::Denied => {
                "give the agent's user read and execute permission on it, or run the agent as a user who has them"
            }
            WatchErrorKind::Other => {
                "check that it is a folder the agent's user can read; `poll_interval` in [agent] watches by polling instead"
            }
        }
    }
}

/// Held only so the watcher keeps running; never read.
#[allow(dead_code)]
enum AnyWatcher {
    Native(RecommendedWatcher),
    Poll(PollWatcher),
}

/// Keeps the watchers alive; dropping it stops watching.
pub struct Watchers {
    /// None while a root's folder is missing.
    watchers: Vec<Option<AnyWatcher>>,
    /// Per root: set when a hint could not be queued (then rescan).
    pub overflowed: Vec<Arc<AtomicBool>>,
    /// How each root is watched.
    pub modes: Vec<WatchMode>,
}

fn handler(
    root: RootId,
    tx: mpsc::Sender<Hint>,
    overflow: Arc<AtomicBool>,
) -> impl Fn(notify::Result<Event>) + Send + 'static {
    move |res: notify::Result<Event>| {
        let hints: Vec<Hint> = match res {
            Err(e) => {
                tracing::debug!("watcher error on root {root}: {e}; rescanning");
                vec![Hint::Rescan(root)]
            }
            Ok(ev) if ev.need_rescan() => vec![Hint::Rescan(root)],
            Ok(ev) => match ev.kind {
                EventKind::Access(notify::event::AccessKind::Close(notify::event::AccessMode::Write))
                | EventKind::Create(_)
                | EventKind::Modify(_)
                | EventKind::Remove(_)
                | EventKind::Any
                | EventKind::Other => ev
                    .paths
                    .into_iter()
                    .map(|p| match ev.kind {
                        EventKind::Create(notify::event::CreateKind::Folder) => Hint::Dir(root, p),
                        // A rename may bring a whole folder in: let the agent check.
                        _ => Hint::Path(root, p),
                    })
                    .collect(),
                EventKind::Access(_) => Vec::new(),
            },
        };
        for h in hints {
            if tx.try_send(h).is_err() {
                overflow.store(true, Ordering::Relaxed);
            }
        }
    }
}

fn is_watch_limit(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => true,
        notify::ErrorKind::Io(io) => io.raw_os_error() == Some(28), // ENOSPC from inotify_add_watch
        _ => false,
    }
}

fn start_poll(
    root: RootId,
    path: &Path,
    mode: RecursiveMode,
    every: Duration,
    tx: &mpsc::Sender<Hint>,
    overflow: &Arc<AtomicBool>,
) -> notify::Result<PollWatcher> {
    let cfg = Config::default()
        .with_poll_interval(every)
        .with_follow_symlinks(false);
    let mut w = PollWatcher::new(handler(root, tx.clone(), overflow.clone()), cfg)?;
    w.watch(path, mode)?;
    Ok(w)
}

/// Starts one watcher per root. `force_poll` (from `poll_interval`) selects
/// polling everywhere. The environment variable
/// `AUTORENDER_SYNC_SIMULATE_WATCH_LIMIT` makes native watching fail as if the
/// OS limit were reached, so the fallback can be exercised without root.
pub fn start(
    watches: &[WatchSettings],
    force_poll: Option<Duration>,
    tx: mpsc::Sender<Hint>,
) -> Result<Watchers, WatchError> {
    let mut out = Watchers {
        watchers: Vec::new(),
        overflowed: Vec::new(),
        modes: Vec::new(),
    };
    for (i, w) in watches.iter().enumerate() {
        let overflow = Arc::new(AtomicBool::new(false));
        let (watcher, mode) = start_one(RootId(i), w, force_poll, &tx, &overflow)?;
        out.watchers.push(Some(watcher));
        out.overflowed.push(overflow);
        out.modes.push(mode);
    }
    Ok(out)
}

impl Watchers {
    /// Drops root `id`'s watcher (its folder is gone).
    pub fn stop(&mut self, id: RootId) {
        self.watchers[id.0] = None;
    }

    /// Watches root `i` again, e.g. after its folder was deleted and recreated
    /// (the old watch died with the old folder).
    pub fn restart(
        &mut self,
        id: RootId,
        w: &WatchSettings,
        force_poll: Option<Duration>,
        tx: &mpsc::Sender<Hint>,
    ) -> Result<(), WatchError> {
        self.watchers[id.0] = None;
        let (watcher, mode) = start_one(id, w, force_poll, tx, &self.overflowed[id.0])?;
        self.watchers[id.0] = Some(watcher);
        self.modes[id.0] = mode;
        Ok(())
    }
}

fn start_one(
    i: RootId,
    w: &WatchSettings,
    force_poll: Option<Duration>,
    tx: &mpsc::Sender<Hint>,
    overflow: &Arc<AtomicBool>,
) -> Result<(AnyWatcher, WatchMode), WatchError> {
    let mode = if w.recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    let cannot = |e: notify::Error| WatchError::new(&w.path, e);
    if let Some(every) = force_poll {
        let p = start_poll(i, &w.path, mode, every, tx, overflow).map_err(cannot)?;
        return Ok((
            AnyWatcher::Poll(p),
            WatchMode::Polling {
                every,
                limit_reached: false,
            },
        ));
    }
    let native = if std::env::var_os("AUTORENDER_SYNC_SIMULATE_WATCH_LIMIT").is_some() {
        Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch))
    } else {
        RecommendedWatcher::new(
            handler(i, tx.clone(), overflow.clone()),
            Config::default().with_follow_symlinks(false),
        )
        .and_then(|mut n| n.watch(&w.path, mode).map(|_| n))
    };
    match native {
        Ok(n) => Ok((AnyWatcher::Native(n), WatchMode::Native)),
        Err(e) if is_watch_limit(&e) => {
            tracing::warn!(
                "the OS limit on watched folders was reached while watching {}; polling it every {:?} instead. \
                 Raise the limit to get instant events: `sudo sysctl fs.inotify.max_user_watches=524288` \
                 (make it permanent in /etc/sysctl.d/)",
                w.path.display(),
                FALLBACK_POLL
            );
            let p = start_poll(i, &w.path, mode, FALLBACK_POLL, tx, overflow).map_err(cannot)?;
            Ok((
                AnyWatcher::Poll(p),
                WatchMode::Polling {
                    every: FALLBACK_POLL,
                    limit_reached: true,
                },
            ))
        }
        Err(e) => Err(cannot(e)),
    }
}
