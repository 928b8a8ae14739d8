//! The one rule for "the same file": [`Fingerprint`] (size and mtime, what
//! the journal compares across runs) and [`FileId`] (device, inode, size,
//! mtime and ctime, what an upload in progress compares: `cp -p`, `rsync -t`
//! and `touch -r` can copy an mtime but not a ctime, and a rename puts a new
//! inode behind the same path). Plus the content hash, read from an open file.
//!
//! Invariants: mtimes are nanoseconds since the Unix epoch, negative before
//! 1970 (never clamped), the same in settle, upload, after-upload and the
//! journal; hashing stops within one buffer once its future is dropped (a
//! stopping agent does not wait for a 20 GiB hash).

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the epoch, negative before it.
fn epoch_ns(t: std::io::Result<SystemTime>) -> i128 {
    match t.map(|t| t.duration_since(UNIX_EPOCH)) {
        Ok(Ok(d)) => d.as_nanos() as i128,
        Ok(Err(e)) => -(e.duration().as_nanos() as i128),
        Err(_) => 0,
    }
}

/// A file's modification time by the one rule.
pub fn mtime_ns(m: &Metadata) -> i128 {
    epoch_ns(m.modified())
}

/// Size and mtime: what "unchanged" means before hashing again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub size: u64,
    pub mtime_ns: i128,
}

impl Fingerprint {
    pub fn of(path: &Path) -> std::io::Result<Fingerprint> {
        FileId::of_path(path).map(|id| id.fingerprint())
    }
}

/// Which file, and which version of it, an upload is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileId {
    /// The regular file at `path` now (following symlinks, as opening does).
    pub fn of_path(path: &Path) -> std::io::Result<FileId> {
        Self::of_meta(&std::fs::metadata(path)?)
    }

    /// The file behind an open descriptor now.
    pub fn of_file(file: &File) -> std::io::Result<FileId> {
        Self::of_meta(&file.metadata()?)
    }

    fn of_meta(m: &Metadata) -> std::io::Result<FileId> {
        if !m.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        #[cfg(unix)]
        let (dev, ino, ctime_ns) = {
            use std::os::unix::fs::MetadataExt;
            (
                m.dev(),
                m.ino(),
                m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            )
        };
        #[cfg(not(unix))]
        let (dev, ino, ctime_ns) = (0, 0, epoch_ns(m.created()));
        Ok(FileId {
            dev,
            ino,
            size: m.len(),
            mtime_ns: mtime_ns(m),
            ctime_ns,
        })
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            size: self.size,
            mtime_ns: self.mtime_ns,
        }
    }

    /// What differs between `self` (before) and `now`, for the log.
    /// The same inode, size and mtime, only the ctime moved: a `chmod`, a
    /// new hard link, `touch -a` … or a rewrite with the mtime put back.
    /// A question for the content, not a verdict.
    pub fn same_but_ctime(&self, now: &FileId) -> bool {
        (self.dev, self.ino, self.size, self.mtime_ns) == (now.dev, now.ino, now.size, now.mtime_ns)
    }

    pub fn describe_change(&self, now: &FileId) -> String {
        if (self.dev, self.ino) != (now.dev, now.ino) {
            "replaced by another file (a new inode at the same path)".into()
        } else if self.size != now.size {
            format!("size {} → {}", self.size, now.size)
        } else if self.mtime_ns != now.mtime_ns {
            "modification time changed".into()
        } else {
            "rewritten in place with its modification time put back (ctime changed)".into()
        }
    }
}

/// sha256 of the file at `path`, computed in the blocking pool.
#[cfg(test)]
pub async fn hash_file(path: &Path) -> std::io::Result<String> {
    hash_open(File::open(path)?).await
}

/// sha256 of an open file from its current offset, in the blocking pool.
/// Dropping the future stops the read within one buffer.
pub async fn hash_open(file: File) -> std::io::Result<String> {
    Ok(hash_open_with(file, &[]).await?.sha256)
}

/// The sha256 and the ASC MHL `formats` of an open file, in one read.
pub async fn hash_open_with(
    file: File,
    formats: &[crate::mhl::Format],
) -> std::io::Result<crate::mhl::Digests> {
    let formats = formats.to_vec();
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let _guard = StopOnDrop(stop.clone());
    tokio::task::spawn_blocking(move || hash_blocking(file, &stop, &formats))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

const HASH_BUF: usize = 1024 * 1024;
/// The read buffer of a file hashed inline (under 4 MiB).
const SMALL_HASH_BUF: usize = 64 * 1024;

fn stopped() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Interrupted, "hashing stopped")
}

/// SHA-256 runs at the CPU's limit (~1.6–1.8 GB/s with SHA-NI) and `start`
/// needs the digest before the first part can go, so for a large file the
/// read (the copy out of the page cache, or the wait on the disk) runs on a
/// second thread, overlapping the hashing. Three 1 MiB buffers circulate
/// between the two threads; small files are hashed inline.
fn hash_blocking(
    mut f: File,
    stop: &AtomicBool,
    formats: &[crate::mhl::Format],
) -> std::io::Result<crate::mhl::Digests> {
    let len = f.metadata()?.len();
    if len < 4 * HASH_BUF as u64 {
        let mut h = crate::mhl::MultiHasher::new(formats);
        // Sized to the file, at most 64 KiB: a 1 MiB buffer per small file
        // raised glibc's mmap threshold, so every blocking thread's arena
        // kept ~2 MiB (a one-folder ingest of 50,000 files peaked 24 MiB
        // higher for it).
        let mut buf = vec![0u8; (len as usize).saturating_add(1).clamp(4096, SMALL_HASH_BUF)];
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(stopped());
            }
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        return Ok(h.finish());
    }
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(3);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(3);
    for _ in 0..3 {
        // Cannot fail: the channel has room for all three and its receiver is alive.
        let _ = empty_tx.send(vec![0u8; HASH_BUF]);
    }
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut h = crate::mhl::MultiHasher::new(formats);
            for (buf, n) in full_rx {
                h.update(&buf[..n]);
                // The reader may already have stopped; then the buffer is simply dropped.
                let _ = empty_tx.send(buf);
            }
            h.finish()
        });
        let mut read = || -> std::io::Result<()> {
            while let Ok(mut buf) = empty_rx.recv() {
                if stop.load(Ordering::Relaxed) {
                    return Err(stopped());
                }
                let n = f.read(&mut buf)?;
                if n == 0 || full_tx.send((buf, n)).is_err() {
                    break;
                }
            }
            Ok(())
        };
        let read_result = read();
        drop(full_tx);
        let digest = hasher
            .join()
            .map_err(|_| std::io::Error::other("the hashing thread panicked"))?;
        read_result?;
        Ok(digest)
    })
}

/// Reads `buf.len()` bytes at `offset` (fewer only at the end of the file),
/// without moving the file's offset: parts in flight share one descriptor.
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(file, &mut buf[done..], offset + done as u64);
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_read(file, &mut buf[done..], offset + done as u64);
        match n {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(len: usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Not a repeating pattern, so a lost or reordered buffer changes the digest.
        let data: Vec<u8> = (0..len as u64)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let never = AtomicBool::new(false);
        assert_eq!(
            hash_blocking(File::open(&path).unwrap(), &never, &[])
                .unwrap()
                .sha256,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data)),
            "len {len}"
        );
    }

    #[test]
    fn hashing_matches_a_one_shot_digest_below_and_above_the_threaded_size() {
        for len in [
            0,
            1,
            HASH_BUF - 1,
            4 * HASH_BUF - 1,
            4 * HASH_BUF,
            7 * HASH_BUF + 12_345,
        ] {
            check(len);
        }
    }

    #[tokio::test]
    async fn hashing_a_missing_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(hash_file(&dir.path().join("absent")).await.is_err());
    }

    #[test]
    fn a_stopped_hash_ends_with_interrupted_at_any_size() {
        let dir = tempfile::tempdir().unwrap();
        for len in [10, 8 * HASH_BUF] {
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, vec![1u8; len]).unwrap();
            let stop = AtomicBool::new(true);
            let err = hash_blocking(File::open(&path).unwrap(), &stop, &[]).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::Interrupted);
        }
    }

    #[test]
    fn times_before_1970_are_negative_not_clamped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old");
        let f = File::create(&path).unwrap();
        let t = UNIX_EPOCH - std::time::Duration::from_secs(5 * 365 * 86400);
        f.set_modified(t).unwrap();
        let id = FileId::of_path(&path).unwrap();
        assert_eq!(id.mtime_ns, -(5 * 365 * 86400 * 1_000_000_000i128));
        assert_eq!(Fingerprint::of(&path).unwrap(), id.fingerprint());
    }

    #[test]
    fn a_fresh_write_has_equal_ctime_and_mtime_to_the_nanosecond() {
        // A write sets both times to one instant, so the two conversions
        // (mtime through SystemTime, ctime from its seconds and nanoseconds)
        // must agree exactly.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let id = FileId::of_path(&path).unwrap();
        #[cfg(unix)]
        assert_eq!(id.ctime_ns, id.mtime_ns);
        assert!(id.mtime_ns > 1_600_000_000 * 1_000_000_000, "{}", id.mtime_ns);
    }

    #[tokio::test]
    async fn hash_file_gives_the_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            hash_file(&path).await.unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// Dropping the future stops the read: the reading thread gives up its
    /// end of a pipe (so the writer sees a broken pipe) instead of reading on.
    #[cfg(unix)]
    #[tokio::test]
    async fn dropping_a_hash_stops_its_reading_thread() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        crate::sys::mkfifo(&fifo);
        // Read-write opens of a FIFO do not block; the writer is a second one.
        let reader = File::options().read(true).write(true).open(&fifo).unwrap();
        let mut writer = File::options().write(true).open(&fifo).unwrap();
        let hashing = hash_open(reader);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), hashing)
                .await
                .is_err()
        );
        // The thread is blocked in read(); wake it: it must see the stop and
        // close the pipe, after which writes fail.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match writer.write(b"more") {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                Err(e) => panic!("{e}"),
                Ok(_) => {}
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the hash kept reading after it was dropped"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn read_at_reads_whole_buffers_and_stops_short_only_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..100u8).collect();
        std::fs::write(&path, &data).unwrap();
        let f = File::open(&path).unwrap();
        let mut buf = [0u8; 10];
        assert_eq!(read_at(&f, &mut buf, 20).unwrap(), 10);
        assert_eq!(buf, data[20..30]);
        // Near the end: fewer bytes, and only the file's.
        let mut buf = [0u8; 20];
        assert_eq!(read_at(&f, &mut buf, 95).unwrap(), 5);
        assert_eq!(buf[..5], data[95..]);
        let mut buf = [0u8; 20];
        assert_eq!(read_at(&f, &mut buf, 1).unwrap(), 20);
        assert_eq!(buf, data[1..21]);
        let mut buf = [0u8; 200];
        assert_eq!(read_at(&f, &mut buf, 1).unwrap(), 99);
        assert_eq!(buf[..99], data[1..]);
        assert_eq!(read_at(&f, &mut buf, 100).unwrap(), 0);
        // A read error is returned, not retried.
        let d = File::open(dir.path()).unwrap();
        assert!(read_at(&d, &mut buf, 0).is_err());
    }

    #[test]
    fn a_copied_mtime_still_shows_as_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"version one").unwrap();
        let before = FileId::of_path(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"version two").unwrap();
        let f = File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(before.mtime_ns as u64))
            .unwrap();
        let now = FileId::of_path(&path).unwrap();
        assert_eq!(
            before.fingerprint(),
            now.fingerprint(),
            "size and mtime alone cannot tell"
        );
        assert_ne!(before, now);
        assert!(before.describe_change(&now).contains("ctime"));
    }
}
