//! Settle tests: a fake stat and a hand-moved clock.

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
                node: (0, 0),
                ctime_ns: 0,
            },
        );
    }
    fn put(&self, p: &str, s: Seen) {
        self.0.borrow_mut().insert(PathBuf::from(p), s);
    }
}
impl Stat for FakeFs {
    fn stat(&self, _root: RootId, path: &Path) -> Seen {
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
            mtime_ns: 1,
            node: (0, 0),
            ctime_ns: 0,
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
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d.contains(&Decision::Gone {
        root: R,
        path: "/r/gone".into()
    }));
    assert!(d.contains(&Decision::NotAFile {
        root: R,
        path: "/r/fifo".into()
    }));
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
            mtime_ns: 1,
            node: (0, 0),
            ctime_ns: 0,
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
    let fs = Fs {
        roots: vec![dir.path()],
    };
    let id = crate::fileid::FileId::of_path(&file).unwrap();
    assert_eq!(
        fs.stat(R, &file),
        Seen::File {
            size: 5,
            mtime_ns,
            node: (id.dev, id.ino),
            ctime_ns: id.ctime_ns,
        }
    );
    assert_eq!(fs.stat(R, dir.path()), Seen::NotAFile);
    assert_eq!(fs.stat(R, &dir.path().join("absent")), Seen::Missing);
    #[cfg(unix)]
    {
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(fs.stat(R, &link), Seen::NotAFile, "symlinks are not followed");
        // Under a file, a path is an error other than "not found".
        assert_eq!(fs.stat(R, &file.join("x")), Seen::NotAFile);
        // A symlinked folder on the way is not followed either.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("g"), b"1").unwrap();
        std::os::unix::fs::symlink(&sub, dir.path().join("via")).unwrap();
        assert_eq!(fs.stat(R, &dir.path().join("via/g")), Seen::NotAFile);
        // Another root's path is not this root's.
        assert_eq!(fs.stat(RootId(7), &file), Seen::NotAFile);
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

#[test]
fn a_folder_found_at_once_is_stat_ed_and_decided_a_batch_at_a_time() {
    let fs = FakeFs::new();
    let mut st = Settler::new();
    let t0 = Instant::now();
    let n = POLL_BATCH * 2 + 7;
    for i in 0..n {
        let p = format!("/r/f{i}");
        fs.set(&p, 1, 1);
        st.offer(R, Path::new(&p), S, t0);
    }
    // First stats: a batch per poll, and what is left stays due at once.
    let mut polls = 0;
    while st.next_deadline().is_some_and(|d| d <= t0) {
        assert!(st.poll(t0, &fs).is_empty());
        polls += 1;
        assert!(polls <= 3, "the first stats took more polls than batches");
    }
    assert_eq!(polls, 3);
    // Decisions come a batch at a time; every path settles exactly once.
    let mut decided = std::collections::HashSet::new();
    while !st.is_empty() {
        let d = st.poll(t0 + S, &fs);
        assert!(!d.is_empty() && d.len() <= POLL_BATCH, "{}", d.len());
        for x in d {
            let Decision::Stable { path, .. } = x else {
                panic!("{x:?}")
            };
            assert!(decided.insert(path));
        }
    }
    assert_eq!(decided.len(), n);
}
