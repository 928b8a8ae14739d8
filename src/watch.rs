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
    /// None while a root's folder is missing.
    watchers: Vec<Option<AnyWatcher>>,
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
        watchers: Vec::new(),
        overflowed: Vec::new(),
        modes: Vec::new(),
    };
    for (i, w) in watches.iter().enumerate() {
        let overflow = Arc::new(AtomicBool::new(false));
        let (watcher, mode) = start_one(i, w, force_poll, &tx, &overflow)?;
        out.watchers.push(Some(watcher));
        out.overflowed.push(overflow);
        out.modes.push(mode);
    }
    Ok(out)
}

impl Watchers {
    /// Drops root `i`'s watcher (its folder is gone).
    pub fn stop(&mut self, i: usize) {
        self.watchers[i] = None;
    }

    /// Watches root `i` again, e.g. after its folder was deleted and recreated
    /// (the old watch died with the old folder).
    pub fn restart(
        &mut self,
        i: usize,
        w: &WatchSettings,
        force_poll: Option<Duration>,
        tx: &mpsc::Sender<Hint>,
    ) -> Result<(), String> {
        self.watchers[i] = None;
        let (watcher, mode) = start_one(i, w, force_poll, tx, &self.overflowed[i])?;
        self.watchers[i] = Some(watcher);
        self.modes[i] = mode;
        Ok(())
    }
}

fn start_one(
    i: usize,
    w: &WatchSettings,
    force_poll: Option<Duration>,
    tx: &mpsc::Sender<Hint>,
    overflow: &Arc<AtomicBool>,
) -> Result<(AnyWatcher, String), String> {
    let mode = if w.recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    let cannot = |e: notify::Error| format!("cannot watch {}: {e}", w.path.display());
    if let Some(every) = force_poll {
        let p = start_poll(i, &w.path, mode, every, tx, overflow).map_err(cannot)?;
        return Ok((AnyWatcher::Poll(p), format!("polling every {every:?}")));
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
        Ok(n) => Ok((AnyWatcher::Native(n), "native".into())),
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
                format!("polling every {FALLBACK_POLL:?} (watch limit reached)"),
            ))
        }
        Err(e) => Err(cannot(e)),
    }
}
