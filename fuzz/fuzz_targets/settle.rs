//! Random event/stat sequences: settle must never call a file stable when its
//! size or mtime changed within `settle` before the decision, nor with a stale size.
#![no_main]
use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use autorender_sync::config::RootId;
use autorender_sync::settle::{Decision, Instant, Seen, Settler, Stat};
use libfuzzer_sys::fuzz_target;

struct OneFile(Cell<Seen>);
impl Stat for OneFile {
    fn stat(&self, _: RootId, _: &Path) -> Seen {
        self.0.get()
    }
}

const SETTLE: Duration = Duration::from_millis(2000);
const ROOT: RootId = RootId(0);

fuzz_target!(|ops: &[u8]| {
    let path = Path::new("/r/a");
    let fs = OneFile(Cell::new(Seen::File {
        size: 0,
        mtime_ns: 0,
        node: (1, 1),
        ctime_ns: 0,
    }));
    let mut st = Settler::new();
    let t0 = Instant::now();
    let mut now = t0;
    let mut size = 0u64;
    let mut last_change = t0;
    st.touch(ROOT, path, SETTLE, now);
    for pair in ops.chunks(2) {
        let (op, arg) = (pair[0], *pair.get(1).unwrap_or(&0));
        now += Duration::from_millis(arg as u64 * 20);
        match op % 5 {
            0 => {
                size += 1;
                fs.0.set(Seen::File {
                    size,
                    mtime_ns: size as i128,
                    node: (1, 1),
                    ctime_ns: 0,
                });
                last_change = now;
            }
            1 => st.touch(ROOT, path, SETTLE, now),
            2 => {
                size += 1;
                fs.0.set(Seen::File {
                    size,
                    mtime_ns: size as i128,
                    node: (1, 1),
                    ctime_ns: 0,
                });
                last_change = now;
                st.touch(ROOT, path, SETTLE, now);
            }
            _ => {}
        }
        for d in st.poll(now, &fs) {
            if let Decision::Stable { size: s, .. } = d {
                assert_eq!(s, size, "stable with a stale size");
                assert!(now.duration_since(last_change) >= SETTLE, "stable while changing");
                st.touch(ROOT, path, SETTLE, now);
            }
        }
    }
});
