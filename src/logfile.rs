//! A log file rotated by size, for `run` where no journald collects stderr
//! (an XDG autostart entry, a LaunchAgent, a cron job): `agent.log` grows to
//! [`MAX_BYTES`], then becomes `agent.log.1` (older ones shift up to
//! `.KEEP`, the oldest is dropped) and a new `agent.log` begins. Bounded: at
//! most (KEEP + 1) × MAX_BYTES on disk, whatever runs for months.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Size at which the log is rotated.
pub const MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated files kept (`.1` newest … `.KEEP` oldest).
pub const KEEP: usize = 3;

pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    /// The open file and how many bytes it holds.
    state: Mutex<(File, u64)>,
}

impl RotatingFile {
    /// Opens (appending; creating the folder and file) the log at `path`.
    pub fn open(path: &Path) -> io::Result<RotatingFile> {
        Self::with_limits(path, MAX_BYTES, KEEP)
    }

    pub fn with_limits(path: &Path, max_bytes: u64, keep: usize) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = append(path)?;
        let len = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            state: Mutex::new((file, len)),
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// agent.log → .1 → .2 … (the oldest is overwritten), then a new agent.log.
    fn rotate(&self, state: &mut (File, u64)) -> io::Result<()> {
        state.0.flush()?;
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        if self.keep > 0 {
            std::fs::rename(&self.path, self.rotated(1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        *state = (append(&self.path)?, 0);
        Ok(())
    }
}

/// Logs name files and folders: readable by their owner only (0600), and
/// a symlink planted at the log's name is not followed.
fn append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    options.open(path)
}

impl Write for &RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.1 > 0 && state.1 + buf.len() as u64 > self.max_bytes {
            // A failed rotation (disk full, permissions) must not lose the
            // line: keep writing to the current file.
            let _ = self.rotate(&mut state);
        }
        let n = state.0.write(buf)?;
        state.1 += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/agent.log");
        let log = RotatingFile::with_limits(&path, 100, 2).unwrap();
        let line = [b'x'; 39];
        for i in 0..20u8 {
            let mut l = line.to_vec();
            l[0] = b'a' + i;
            l.push(b'\n');
            (&log).write_all(&l).unwrap();
        }
        (&log).flush().unwrap();
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(&path) <= 100 && size(&path) > 0);
        assert_eq!(size(&log.rotated(1)), 80, "two whole lines per file");
        assert_eq!(size(&log.rotated(2)), 80);
        assert!(!log.rotated(3).exists(), "only `keep` rotated files");
        // The newest lines are in the live file, the next older in .1.
        let live = std::fs::read_to_string(&path).unwrap();
        assert!(live.contains(&format!("{}{}", (b'a' + 19) as char, "x".repeat(38))));
        // Re-opened, it appends to what is there.
        drop(log);
        let again = RotatingFile::with_limits(&path, 100, 2).unwrap();
        (&again).write_all(b"more\n").unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("more\n"));
    }
}
