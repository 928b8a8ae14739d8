//! When is a file finished? A pure state machine over path events, a clock
//! and a stat function (injected), so it is tested without a filesystem.
//!
//! Rule (SPEC §4 "Settling"): a path is *stable* once no event has touched it
//! for its `settle` time **and** two stats taken `settle` apart agree on size
//! and mtime. Any event invalidates the first stat. A file still changing after
//! two settle windows is reported as *growing*; it is never declared stable
//! while it changes. A path that vanishes is reported gone; one that is not a
//! regular file (directory, FIFO, socket, symlink) is dropped without ever
//! being opened.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The clock's instant (tokio's, so a paused test clock moves settle too).
pub use tokio::time::Instant;

use crate::config::RootId;

/// What a stat saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// `node` is (device, inode): a file renamed over the path is another file.
    File {
        size: u64,
        mtime_ns: i128,
        node: (u64, u64),
        /// Status change time: a `chmod` or an in-place rewrite with the
        /// mtime put back shows here.
        ctime_ns: i128,
    },
    Missing,
    NotAFile,
}

/// The stat function, injected so tests control what the "disk" says.
pub trait Stat {
    fn stat(&self, root: RootId, path: &Path) -> Seen;
}

/// The real thing: an `lstat` anchored at the path's watched root
/// ([`crate::anchor`]): a symlink, at the path or on the way to it, is not
/// a file to settle.
pub struct Fs<'a> {
    /// Each root's path, by [`RootId`].
    pub roots: Vec<&'a Path>,
}

impl Stat for Fs<'_> {
    fn stat(&self, root: RootId, path: &Path) -> Seen {
        let Some(root) = self.roots.get(root.0) else {
            return Seen::NotAFile;
        };
        match crate::anchor::stat(root, path) {
            Ok(crate::anchor::Kind::File(id)) => Seen::File {
                size: id.size,
                mtime_ns: id.mtime_ns,
                node: (id.dev, id.ino),
                ctime_ns: id.ctime_ns,
            },
            Ok(_) => Seen::NotAFile,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Seen::Missing,
            Err(e) => {
                if crate::anchor::Refusal::of(&e) == Some(crate::anchor::Refusal::Symlink) {
                    tracing::warn!(
                        "skipping {}: {}",
                        crate::text::shown(&path.display().to_string()),
                        crate::anchor::Refusal::Symlink
                    );
                }
                // Permission problems and the like: treat as not-a-file for now;
                // the next event or rescan will look again.
                Seen::NotAFile
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Finished: size and mtime as given.
    Stable {
        root: RootId,
        path: PathBuf,
        size: u64,
        mtime_ns: i128,
        /// (device, inode) of the version that settled.
        node: (u64, u64),
        ctime_ns: i128,
    },
    /// Vanished before it settled.
    Gone { root: RootId, path: PathBuf },
    /// No longer a regular file reached without a symlink (a FIFO, a
    /// folder or a symlink took its place, or a folder on its way became a
    /// symlink): never opened; a record waiting for it is ended.
    NotAFile { root: RootId, path: PathBuf },
}

/// The most paths one [`Settler::poll`] stats.
pub const POLL_BATCH: usize = 2048;

#[derive(Debug)]
struct Entry {
    root: RootId,
    settle: Duration,
    first_seen: Instant,
    last_event: Instant,
    /// The first of the two agreeing stats, and when it was taken.
    first_stat: Option<(Seen, Instant)>,
    /// Seen changing since it was first seen: two stats that differ, even
    /// with events in between (a writer's events keep restarting the wait).
    changed: bool,
    /// The last stat taken, whether or not an event invalidated it since.
    last_seen: Option<Seen>,
}

#[derive(Debug, Default)]
pub struct Settler {
    /// Boxed: a folder of 50,000 new files is 50,000 entries at once, and
    /// the map's table (and its doubling on growth) then holds pointers,
    /// not ~200-byte entries.
    entries: HashMap<PathBuf, Box<Entry>>,
}

impl Settler {
    pub fn new() -> Settler {
        Settler::default()
    }

    /// Something touched `path` (an event or a scan). Restarts its quiet time.
    pub fn touch(&mut self, root: RootId, path: &Path, settle: Duration, now: Instant) {
        match self.entries.get_mut(path) {
            Some(e) => {
                e.root = root;
                e.last_event = now;
                e.first_stat = None;
                e.settle = settle;
            }
            None => {
                self.entries.insert(
                    path.to_path_buf(),
                    Box::new(Entry {
                        root,
                        settle,
                        first_seen: now,
                        last_event: now,
                        first_stat: None,
                        changed: false,
                        last_seen: None,
                    }),
                );
            }
        }
    }

    /// Offers a path found by a scan: like [`touch`](Self::touch) for a new
    /// path, but it does not restart the wait of a path already settling.
    pub fn offer(&mut self, root: RootId, path: &Path, settle: Duration, now: Instant) {
        if !self.entries.contains_key(path) {
            self.touch(root, path, settle, now);
        }
    }

    pub fn forget(&mut self, path: &Path) {
        self.entries.remove(path);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many paths are settling.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The earliest instant at which [`poll`](Self::poll) may decide something.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.values().map(|e| Self::due(e)).min()
    }

    fn due(e: &Entry) -> Instant {
        match e.first_stat {
            // Take the first stat right away; the second `settle` later.
            None => e.last_event,
            Some((_, t)) => (t + e.settle).max(e.last_event + e.settle),
        }
    }

    /// Takes the stats that are due, at most [`POLL_BATCH`] of them (the
    /// rest stay due, so the next poll comes at once), and returns what was
    /// decided: a folder of 50,000 files found at once is stat-ed and
    /// handed on a batch at a time, not in one 50,000-path burst.
    pub fn poll(&mut self, now: Instant, fs: &dyn Stat) -> Vec<Decision> {
        let mut out = Vec::new();
        let due: Vec<PathBuf> = self
            .entries
            .iter()
            .filter(|(_, e)| Self::due(e) <= now)
            .take(POLL_BATCH)
            .map(|(p, _)| p.clone())
            .collect();
        for path in due {
            let root = self.entries[&path].root;
            let seen = fs.stat(root, &path);
            let e = self.entries.get_mut(&path).expect("due entry exists");
            match seen {
                Seen::Missing => {
                    self.entries.remove(&path);
                    out.push(Decision::Gone { root, path });
                }
                Seen::NotAFile => {
                    self.entries.remove(&path);
                    out.push(Decision::NotAFile { root, path });
                }
                Seen::File {
                    size,
                    mtime_ns,
                    node,
                    ctime_ns,
                } => {
                    if e.last_seen.is_some_and(|last| last != seen) {
                        e.changed = true;
                    }
                    e.last_seen = Some(seen);
                    match e.first_stat {
                        Some((first, at))
                            if first == seen && now >= at + e.settle && now >= e.last_event + e.settle =>
                        {
                            self.entries.remove(&path);
                            out.push(Decision::Stable {
                                root,
                                path,
                                size,
                                mtime_ns,
                                node,
                                ctime_ns,
                            });
                        }
                        _ => e.first_stat = Some((seen, now)),
                    }
                }
            }
        }
        out
    }

    /// (settling, growing): growing = seen changing and watched for more than
    /// two settle windows.
    pub fn counts_under(&self, root: RootId, now: Instant) -> (usize, usize) {
        let mut settling = 0;
        let mut growing = 0;
        for e in self.entries.values() {
            if e.root != root {
                continue;
            }
            if e.changed && now.duration_since(e.first_seen) > e.settle * 2 {
                growing += 1;
            } else {
                settling += 1;
            }
        }
        (settling, growing)
    }

    /// Is anything under `dir` still settling?
    pub fn any_under(&self, dir: &Path) -> bool {
        self.entries.keys().any(|p| p.starts_with(dir))
    }

    /// Paths seen changing and still settling after `limit`: for `run
    /// --once`, which gives up on files that never stop changing (they wait
    /// for the next run). A path merely waiting for its second stat (a slow
    /// disk, thousands of files found at once) is never given up on.
    pub fn changing_longer_than(&self, now: Instant, limit: Duration) -> Vec<PathBuf> {
        self.entries
            .iter()
            .filter(|(_, e)| e.changed && now.duration_since(e.first_seen) > limit)
            .map(|(p, _)| p.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests;
