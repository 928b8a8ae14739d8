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

use crate::config::WatchSettings;

/// Poll interval when falling back from native events without a configured one.
pub const FALLBACK_POLL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// Look at this path (root index, path).
    Path(usize, PathBuf),
    /// A folder appeared: scan it (files may predate its watch).
    Dir(usize, PathBuf),
    /// Events may have been lost: scan the whole root.
    Rescan(usize),
}

/// Held only so the watcher keeps running; never read.
#[allow(dead_code)]
enum AnyWatcher {
    Native(RecommendedWatcher),
    Poll(PollWatcher),
}

/// Keeps the watchers alive; dropping it stops watching.
pub struct Watchers {
    _watchers: Vec<AnyWatcher>,
    /// Per root: set when a hint could not be queued (then rescan).
    pub overflowed: Vec<Arc<AtomicBool>>,
    /// Human-readable mode per root ("native" or "polling every 10s").
    pub modes: Vec<String>,
}

fn handler(
    root: usize,
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
    root: usize,
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
) -> Result<Watchers, String> {
    let mut out = Watchers {
        _watchers: Vec::new(),
        overflowed: Vec::new(),
        modes: Vec::new(),
    };
    let simulate_limit = std::env::var_os("AUTORENDER_SYNC_SIMULATE_WATCH_LIMIT").is_some();
    for (i, w) in watches.iter().enumerate() {
        let overflow = Arc::new(AtomicBool::new(false));
        let mode = if w.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        let watcher = match force_poll {
            Some(every) => {
                out.modes.push(format!("polling every {every:?}"));
                AnyWatcher::Poll(
                    start_poll(i, &w.path, mode, every, &tx, &overflow)
                        .map_err(|e| format!("cannot watch {}: {e}", w.path.display()))?,
                )
            }
            None => {
                let native = if simulate_limit {
                    Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch))
                } else {
                    RecommendedWatcher::new(
                        handler(i, tx.clone(), overflow.clone()),
                        Config::default().with_follow_symlinks(false),
                    )
                    .and_then(|mut n| n.watch(&w.path, mode).map(|_| n))
                };
                match native {
                    Ok(n) => {
                        out.modes.push("native".into());
                        AnyWatcher::Native(n)
                    }
                    Err(e) if is_watch_limit(&e) => {
                        tracing::warn!(
                            "the OS limit on watched folders was reached while watching {}; polling it every {:?} instead. \
                             Raise the limit to get instant events: `sudo sysctl fs.inotify.max_user_watches=524288` \
                             (make it permanent in /etc/sysctl.d/)",
                            w.path.display(),
                            FALLBACK_POLL
                        );
                        out.modes
                            .push(format!("polling every {FALLBACK_POLL:?} (watch limit reached)"));
                        AnyWatcher::Poll(
                            start_poll(i, &w.path, mode, FALLBACK_POLL, &tx, &overflow)
                                .map_err(|e| format!("cannot watch {}: {e}", w.path.display()))?,
                        )
                    }
                    Err(e) => return Err(format!("cannot watch {}: {e}", w.path.display())),
                }
            }
        };
        out._watchers.push(watcher);
        out.overflowed.push(overflow);
    }
    Ok(out)
}
