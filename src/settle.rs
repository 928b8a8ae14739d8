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

use tokio::time::Instant;

use crate::config::RootId;

/// What a stat saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    File { size: u64, mtime_ns: i128 },
    Missing,
    NotAFile,
}

/// The stat function, injected so tests control what the "disk" says.
pub trait Stat {
    fn stat(&self, path: &Path) -> Seen;
}

/// The real thing: `lstat` (symlinks are not followed).
pub struct Fs;

impl Stat for Fs {
    fn stat(&self, path: &Path) -> Seen {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_file() => Seen::File {
                size: m.len(),
                mtime_ns: crate::fileid::mtime_ns(&m),
            },
            Ok(_) => Seen::NotAFile,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Seen::Missing,
            // Permission problems and the like: treat as not-a-file for now;
            // the next event or rescan will look again.
            Err(_) => Seen::NotAFile,
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
    },
    /// Vanished before it settled.
    Gone { root: RootId, path: PathBuf },
}

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
    entries: HashMap<PathBuf, Entry>,
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
                    Entry {
                        root,
                        settle,
                        first_seen: now,
                        last_event: now,
                        first_stat: None,
                        changed: false,
                        last_seen: None,
                    },
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
        self.entries.values().map(Self::due).min()
    }

    fn due(e: &Entry) -> Instant {
        match e.first_stat {
            // Take the first stat right away; the second `settle` later.
            None => e.last_event,
            Some((_, t)) => (t + e.settle).max(e.last_event + e.settle),
        }
    }

    /// Takes the stats that are due and returns what was decided.
    pub fn poll(&mut self, now: Instant, fs: &dyn Stat) -> Vec<Decision> {
        let mut out = Vec::new();
        let due: Vec<PathBuf> = self
            .entries
            .iter()
            .filter(|(_, e)| Self::due(e) <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for path in due {
            let seen = fs.stat(&path);
            let e = self.entries.get_mut(&path).expect("due entry exists");
            let root = e.root;
            match seen {
                Seen::Missing => {
                    self.entries.remove(&path);
                    out.push(Decision::Gone { root, path });
                }
                Seen::NotAFile => {
                    self.entries.remove(&path);
                }
                Seen::File { size, mtime_ns } => {
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
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct FakeFs(RefCell<HashMap<PathBuf, Seen>>);
    impl FakeFs {
        fn new() -> Self {
            FakeFs(RefCell::new(HashMap::new()))
        }
        fn set(&self, p: &str, size: u64, mtime: i128) {
            self.0.borrow_mut().insert(
                PathBuf::from(p),
                Seen::File {
                    size,
                    mtime_ns: mtime,
                },
            );
        }
        fn put(&self, p: &str, s: Seen) {
            self.0.borrow_mut().insert(PathBuf::from(p), s);
        }
    }
    impl Stat for FakeFs {
        fn stat(&self, path: &Path) -> Seen {
            self.0.borrow().get(path).copied().unwrap_or(Seen::Missing)
        }
    }

    const S: Duration = Duration::from_secs(2);
    const R: RootId = RootId(0);

    #[test]
    fn stable_after_quiet_time_and_two_agreeing_stats() {
        let fs = FakeFs::new();
        let mut st = Settler::new();
        let t0 = Instant::now();
        fs.set("/r/a", 10, 1);
        st.touch(R, Path::new("/r/a"), S, t0);
        assert!(st.poll(t0, &fs).is_empty(), "first stat only");
        assert_eq!(st.next_deadline(), Some(t0 + S));
        assert!(st.poll(t0 + S - Duration::from_millis(1), &fs).is_empty());
        let d = st.poll(t0 + S, &fs);
        assert_eq!(
            d,
            vec![Decision::Stable {
                root: R,
                path: "/r/a".into(),
                size: 10,
                mtime_ns: 1
            }]
        );
        assert!(st.is_empty());
    }

    #[test]
    fn an_event_restarts_the_wait() {
        let fs = FakeFs::new();
        let mut st = Settler::new();
        let t0 = Instant::now();
        fs.set("/r/a", 10, 1);
        st.touch(R, Path::new("/r/a"), S, t0);
        st.poll(t0, &fs);
        let t1 = t0 + Duration::from_secs(1);
        st.touch(R, Path::new("/r/a"), S, t1);
        assert!(
            st.poll(t1, &fs).is_empty(),
            "the event invalidated the first stat"
        );
        assert!(
            st.poll(t0 + S, &fs).is_empty(),
            "quiet time restarted at the event"
        );
        assert!(st.poll(t1 + S - Duration::from_millis(1), &fs).is_empty());
        assert_eq!(st.poll(t1 + S, &fs).len(), 1);
    }

    #[test]
    fn a_file_that_keeps_growing_is_growing_and_never_stable() {
        let fs = FakeFs::new();
        let mut st = Settler::new();
        let t0 = Instant::now();
        st.touch(R, Path::new("/r/a"), S, t0);
        for i in 0..10u64 {
            // Grows without producing events (e.g. a network share).
            fs.set("/r/a", 100 * (i + 1), i as i128);
            let now = t0 + S * i as u32;
            assert!(st.poll(now, &fs).is_empty(), "round {i}");
        }
        assert_eq!(st.counts_under(R, t0 + S * 10), (0, 1));
        // It stops growing (last change at 9 windows): stable one window later.
        assert_eq!(st.poll(t0 + S * 10, &fs).len(), 1);
    }

    #[test]
    fn a_file_written_with_events_every_second_is_growing() {
        // A writer appending each second, each write an event: the first
        // stat is always invalidated, yet the file is growing, not settling.
        let fs = FakeFs::new();
        let mut st = Settler::new();
        let t0 = Instant::now();
        for i in 0..6u32 {
            let now = t0 + Duration::from_secs(i as u64);
            fs.set("/r/a", 100 * (i as u64 + 1), i as i128);
            st.touch(R, Path::new("/r/a"), S, now);
            assert!(st.poll(now, &fs).is_empty());
        }
        assert_eq!(
            st.counts_under(R, t0 + Duration::from_secs(3)),
            (1, 0),
            "not yet two windows"
        );
        assert_eq!(st.counts_under(R, t0 + Duration::from_secs(5)), (0, 1));
        // A path with one event and no stat yet is settling, however long.
        st.touch(R, Path::new("/r/b"), S, t0);
        assert_eq!(st.counts_under(R, t0 + Duration::from_secs(5)), (1, 1));
    }

    #[test]
    fn vanished_and_non_files() {
        let fs = FakeFs::new();
        let mut st = Settler::new();
        let t0 = Instant::now();
        st.touch(R, Path::new("/r/gone"), S, t0);
        fs.put("/r/fifo", Seen::NotAFile);
        st.touch(R, Path::new("/r/fifo"), S, t0);
        let d = st.poll(t0, &fs);
        assert_eq!(
            d,
            vec![Decision::Gone {
                root: R,
                path: "/r/gone".into()
            }]
        );
        assert!(st.is_empty(), "non-files are dropped");
    }

    #[test]
    fn the_next_deadline_is_a_settle_after_the_first_stat() {
        let fs = FakeFs::new();
        let mut st = Settler::new();
        let t0 = Instant::now();
        fs.set("/r/a", 1, 1);
        st.touch(R, Path::new("/r/a"), S, t0);
        assert_eq!(st.next_deadline(), Some(t0), "the first stat is taken at once");
        let t1 = t0 + Duration::from_secs(1);
        st.poll(t1, &fs);
        assert_eq!(st.next_deadline(), Some(t1 + S));
        // Before the deadline nothing is looked at; at it, the file is stable.
        assert!(st.poll(t1 + S / 2, &fs).is_empty());
        assert_eq!(st.poll(t1 + S, &fs).len(), 1);
    }

    #[test]
    fn counts_tell_growing_from_settling_per_root() {
        let fs = FakeFs::new();
        let mut st = Settler::new();
        let t0 = Instant::now();
        fs.set("/r/still", 1, 1);
        fs.set("/r/growing", 1, 1);
        for p in ["/r/still", "/r/growing"] {
            st.offer(R, Path::new(p), S, t0);
        }
        st.poll(t0, &fs);
        fs.set("/r/growing", 2, 2);
        fs.set("/r/still", 1, 1);
        st.touch(R, Path::new("/r/still"), S, t0 + S);
        st.poll(t0 + S, &fs);
        // Growing means seen changing and settling for over two windows.
        assert_eq!(st.counts_under(R, t0 + S + S / 2), (2, 0));
        assert_eq!(st.counts_under(R, t0 + 2 * S), (2, 0));
        assert_eq!(st.counts_under(R, t0 + 3 * S), (1, 1));
        assert_eq!(st.counts_under(RootId(1), t0 + 3 * S), (0, 0));
    }

    #[test]
    fn only_paths_seen_changing_are_given_up_on() {
        let fs = FakeFs::new();
        let mut st = Settler::new();
        let t0 = Instant::now();
        fs.set("/r/still", 1, 1);
        fs.set("/r/growing", 1, 1);
        st.offer(R, Path::new("/r/still"), S, t0);
        st.offer(R, Path::new("/r/growing"), S, t0);
        st.poll(t0, &fs);
        fs.set("/r/growing", 2, 2);
        // Long past the limit, and neither has had its second stat yet.
        let late = t0 + 10 * S;
        assert!(st.changing_longer_than(late, S).is_empty());
        let decided = st.poll(t0 + S, &fs);
        assert_eq!(decided.len(), 1, "{decided:?}");
        assert_eq!(
            st.changing_longer_than(late, S),
            vec![PathBuf::from("/r/growing")]
        );
        // Not at the limit itself, only past it.
        assert!(st.changing_longer_than(t0 + 2 * S, 2 * S).is_empty());
        assert_eq!(st.changing_longer_than(t0 + 2 * S, S).len(), 1);
    }

    #[test]
    fn offer_adds_a_new_path_and_forget_drops_one() {
        let fs = FakeFs::new();
        let mut st = Settler::new();
        let t0 = Instant::now();
        assert!(st.is_empty());
        fs.set("/r/a", 1, 1);
        fs.set("/r/b", 1, 1);
        st.offer(R, Path::new("/r/a"), S, t0);
        st.offer(R, Path::new("/r/b"), S, t0);
        assert!(!st.is_empty());
        assert_eq!(st.len(), 2);
        st.forget(Path::new("/r/b"));
        st.poll(t0, &fs);
        assert_eq!(
            st.poll(t0 + S, &fs),
            vec![Decision::Stable {
                root: R,
                path: "/r/a".into(),
                size: 1,
                mtime_ns: 1
            }]
        );
        assert!(st.is_empty());
    }

    #[test]
    fn the_real_stat_tells_files_from_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        let mtime_ns = crate::fileid::mtime_ns(&std::fs::metadata(&file).unwrap());
        assert_eq!(Fs.stat(&file), Seen::File { size: 5, mtime_ns });
        assert_eq!(Fs.stat(dir.path()), Seen::NotAFile);
        assert_eq!(Fs.stat(&dir.path().join("absent")), Seen::Missing);
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&file, &link).unwrap();
            assert_eq!(Fs.stat(&link), Seen::NotAFile, "symlinks are not followed");
            // Under a file, a path is an error other than "not found".
            assert_eq!(Fs.stat(&file.join("x")), Seen::NotAFile);
        }
    }

    #[test]
    fn offer_does_not_restart_a_settling_path() {
        let fs = FakeFs::new();
        let mut st = Settler::new();
        let t0 = Instant::now();
        fs.set("/r/a", 1, 1);
        st.touch(R, Path::new("/r/a"), S, t0);
        st.poll(t0, &fs);
        st.offer(R, Path::new("/r/a"), S, t0 + Duration::from_secs(1));
        assert_eq!(st.poll(t0 + S, &fs).len(), 1);
    }

    /// Property: whatever the sequence of events and stats, a path is never
    /// declared stable with a size/mtime that changed within `settle` before
    /// the decision.
    #[test]
    fn never_stable_while_changing_randomised() {
        let mut seed: u64 = 0x1234_5678;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _case in 0..300 {
            let fs = FakeFs::new();
            let mut st = Settler::new();
            let t0 = Instant::now();
            let mut now = t0;
            let mut last_change = t0;
            let mut size = 0u64;
            fs.set("/r/a", size, 0);
            st.touch(R, Path::new("/r/a"), S, now);
            for _ in 0..60 {
                now += Duration::from_millis(rnd() % 1500);
                match rnd() % 4 {
                    0 => {
                        size += 1;
                        fs.set("/r/a", size, size as i128);
                        last_change = now;
                        if rnd() % 2 == 0 {
                            st.touch(R, Path::new("/r/a"), S, now);
                        }
                    }
                    1 => st.touch(R, Path::new("/r/a"), S, now),
                    _ => {}
                }
                for d in st.poll(now, &fs) {
                    if let Decision::Stable { size: s, .. } = d {
                        assert_eq!(s, size, "stable with a stale size");
                        assert!(now.duration_since(last_change) >= S, "changed within settle");
                        st.touch(R, Path::new("/r/a"), S, now);
                    }
                }
            }
        }
    }
}
