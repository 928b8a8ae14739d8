//! The emulator's disk layout, under `<store>/.emulator/`:
//! `sessions/<id>` is a sparse file every part is written into at its offset;
//! complete renames it to `objects/<file_no>` (immutable from then on) and
//! hard-links that to `<store>/<folder>/<name>`, replacing an older file of
//! the same name. The scratch area is wiped at startup.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncSeekExt, AsyncWriteExt};

pub struct Storage {
    store: PathBuf,
    sessions: PathBuf,
    objects: PathBuf,
}

pub struct PartWriter {
    file: tokio::fs::File,
}

impl PartWriter {
    pub async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all(data).await
    }
    pub async fn finish(mut self) -> std::io::Result<()> {
        self.file.flush().await
    }
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
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(self.sessions.join(id))
            .await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        Ok(PartWriter { file })
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
        let tmp = dir.join(format!(".{name}.{file_no}.tmp"));
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

    pub async fn object_sha256(&self, file_no: &str) -> std::io::Result<String> {
        crate::upload::hash_file(&self.objects.join(file_no)).await
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
