//! The emulator's disk layout, under `<store>/.emulator/`:
//! `sessions/<id>` is a sparse file every part is written into at its offset;
//! complete renames it to `objects/<file_no>` (immutable from then on) and
//! hard-links that to `<store>/<folder>/<name>`, replacing an older file of
//! the same name. The scratch area is wiped at startup.

use std::path::{Path, PathBuf};

pub struct Storage {
    store: PathBuf,
    sessions: PathBuf,
    objects: PathBuf,
}

/// Writes one part at its offset. Writes go straight to the page cache with
/// positioned writes: far cheaper than a blocking-pool hop per chunk, and
/// short enough not to stall the async workers.
pub struct PartWriter {
    file: std::fs::File,
    offset: u64,
}

impl PartWriter {
    pub async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        write_at(&self.file, data, self.offset)?;
        self.offset += data.len() as u64;
        Ok(())
    }
    pub async fn finish(self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(unix)]
fn write_at(file: &std::fs::File, data: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data, offset)
}

#[cfg(windows)]
fn write_at(file: &std::fs::File, mut data: &[u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !data.is_empty() {
        let n = file.seek_write(data, offset)?;
        data = &data[n..];
        offset += n as u64;
    }
    Ok(())
}

impl Storage {
    pub fn open(store: &Path) -> std::io::Result<Storage> {
        let scratch = store.join(".emulator");
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch)?;
        }
        let sessions = scratch.join("sessions");
        let objects = scratch.join("objects");
        std::fs::create_dir_all(&sessions)?;
        std::fs::create_dir_all(&objects)?;
        Ok(Storage {
            store: store.to_path_buf(),
            sessions,
            objects,
        })
    }

    pub fn create_session(&self, id: &str, size: u64) -> std::io::Result<()> {
        let f = std::fs::File::create(self.sessions.join(id))?;
        f.set_len(size)
    }

    pub async fn part_writer(&self, id: &str, offset: u64) -> std::io::Result<PartWriter> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(self.sessions.join(id))?;
        Ok(PartWriter { file, offset })
    }

    pub fn finish(&self, id: &str, file_no: &str, folder: &str, name: &str) -> std::io::Result<()> {
        let object = self.objects.join(file_no);
        std::fs::rename(self.sessions.join(id), &object)?;
        let dir = if folder.is_empty() {
            self.store.clone()
        } else {
            self.store.join(folder)
        };
        std::fs::create_dir_all(&dir)?;
        let dest = dir.join(name);
        // Not derived from `name`: a 255-byte name plus a suffix would exceed NAME_MAX.
        let tmp = dir.join(format!(".ar-emulator-{file_no}.tmp"));
        if std::fs::hard_link(&object, &tmp).is_err() {
            std::fs::copy(&object, &tmp)?;
        }
        std::fs::rename(&tmp, &dest)
    }

    pub fn unlink(&self, folder: &str, name: &str, file_no: &str) {
        let dest = if folder.is_empty() {
            self.store.join(name)
        } else {
            self.store.join(folder).join(name)
        };
        if same_file(&dest, &self.objects.join(file_no)) {
            let _ = std::fs::remove_file(dest);
        }
    }

    /// Moves a stored file's name (a rename in the workspace): the new
    /// link made from the object, then the old one dropped.
    pub fn relink(&self, folder: &str, name: &str, to_folder: &str, to_name: &str, file_no: &str) {
        let dir = if to_folder.is_empty() {
            self.store.clone()
        } else {
            self.store.join(to_folder)
        };
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        let object = self.objects.join(file_no);
        let tmp = dir.join(format!(".ar-emulator-{file_no}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        if std::fs::hard_link(&object, &tmp).is_err() && std::fs::copy(&object, &tmp).is_err() {
            return;
        }
        if std::fs::rename(&tmp, dir.join(to_name)).is_ok() && (folder, name) != (to_folder, to_name) {
            self.unlink(folder, name, file_no);
        }
    }

    pub fn object_path(&self, file_no: &str) -> PathBuf {
        self.objects.join(file_no)
    }

    /// The object's sha256, read on the blocking pool.
    pub async fn object_sha256(&self, file_no: &str) -> std::io::Result<String> {
        let path = self.objects.join(file_no);
        tokio::task::spawn_blocking(move || {
            use sha2::Digest;
            use std::io::Read;
            let mut file = std::fs::File::open(path)?;
            let mut digest = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match file.read(&mut buf)? {
                    0 => break,
                    n => digest.update(&buf[..n]),
                }
            }
            Ok(hex::encode(digest.finalize()))
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.ino() == y.ino() && x.dev() == y.dev(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(a: &Path, _b: &Path) -> bool {
    a.exists()
}
