//! Local path → remote (folder, file name, MIME type). Pure: no I/O.
//!
//! Remote names are Unicode NFC (macOS writes NFD, and the same name must map
//! to the same remote file whichever OS wrote it); a name that is not valid
//! UTF-8 cannot be named remotely and is refused with a clear error.

use std::path::Path;

use unicode_normalization::UnicodeNormalization;

use crate::config::Subfolders;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub folder: String,
    pub name: String,
    pub format: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("{0} has a name that is not valid UTF-8; rename it to upload it")]
    NotUtf8(String),
    #[error("{0} has no file name")]
    NoName(String),
}

impl Remote {
    /// What makes two local files one remote file: the folder and the NFC
    /// name, compared without case when the service ignores it.
    pub fn key(&self, case_insensitive: bool) -> String {
        let key = format!("{}/{}", self.folder, self.name);
        if case_insensitive { key.to_lowercase() } else { key }
    }
}

/// MIME type from the extension, `application/octet-stream` when unknown.
pub fn mime_for(name: &str) -> String {
    mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_string()
}

/// Maps a file to its remote place. `relative` is the path below the watch
/// root (for `upload FILE`, just the file name).
pub fn map(relative: &Path, remote_folder: &str, subfolders: Subfolders) -> Result<Remote, MappingError> {
    let shown = relative.to_string_lossy().into_owned();
    let mut parts = Vec::new();
    for c in relative.components() {
        match c {
            std::path::Component::Normal(s) => {
                let s = s.to_str().ok_or_else(|| MappingError::NotUtf8(shown.clone()))?;
                parts.push(s.nfc().collect::<String>());
            }
            _ => continue,
        }
    }
    let name = parts.pop().ok_or_else(|| MappingError::NoName(shown.clone()))?;
    let mut folder: Vec<&str> = remote_folder.split('/').filter(|s| !s.is_empty()).collect();
    if subfolders == Subfolders::Preserve {
        folder.extend(parts.iter().map(String::as_str));
    }
    Ok(Remote {
        folder: folder.join("/"),
        format: mime_for(&name),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preserve_and_flatten() {
        let r = map(Path::new("a/b/c.mp4"), "uploads/renders", Subfolders::Preserve).unwrap();
        assert_eq!(
            r,
            Remote {
                folder: "uploads/renders/a/b".into(),
                name: "c.mp4".into(),
                format: "video/mp4".into()
            }
        );
        let r = map(Path::new("a/b/c.mp4"), "uploads/renders", Subfolders::Flatten).unwrap();
        assert_eq!(r.folder, "uploads/renders");
        let r = map(Path::new("c.bin"), "", Subfolders::Preserve).unwrap();
        assert_eq!(
            (r.folder.as_str(), r.format.as_str()),
            ("", "application/octet-stream")
        );
    }

    #[test]
    fn names_are_nfc() {
        let nfd = "Cafe\u{301}.mov";
        let r = map(Path::new(nfd), "x", Subfolders::Preserve).unwrap();
        assert_eq!(r.name, "Caf\u{e9}.mov");
    }

    #[test]
    fn the_remote_key_is_folder_and_nfc_name_and_folds_case_only_when_asked() {
        let nfc = map(Path::new("a/Caf\u{e9}.MOV"), "up", Subfolders::Preserve).unwrap();
        let nfd = map(Path::new("a/Cafe\u{301}.MOV"), "up", Subfolders::Preserve).unwrap();
        assert_eq!(nfc.key(false), "up/a/Caf\u{e9}.MOV");
        assert_eq!(nfc.key(false), nfd.key(false));
        let lower = map(Path::new("a/caf\u{e9}.mov"), "up", Subfolders::Preserve).unwrap();
        assert_ne!(nfc.key(false), lower.key(false));
        assert_eq!(nfc.key(true), lower.key(true));
        let elsewhere = map(Path::new("b/Caf\u{e9}.MOV"), "up", Subfolders::Preserve).unwrap();
        assert_ne!(nfc.key(true), elsewhere.key(true));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_is_refused() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"bad\xff.mp4"));
        assert!(matches!(
            map(p, "x", Subfolders::Preserve),
            Err(MappingError::NotUtf8(_))
        ));
    }
}

/// How a remote file is named to the user: `folder/name`, or `name` at the
/// workspace root (never `/name`).
pub fn remote_path(folder: &str, name: &str) -> String {
    let folder = folder.trim_matches('/');
    if folder.is_empty() {
        name.to_string()
    } else {
        format!("{folder}/{name}")
    }
}

#[cfg(test)]
mod remote_path_tests {
    use super::remote_path;

    #[test]
    fn the_workspace_root_has_no_leading_slash() {
        assert_eq!(remote_path("", "small.txt"), "small.txt");
        assert_eq!(remote_path("uploads/videos", "a.mov"), "uploads/videos/a.mov");
        assert_eq!(remote_path("/uploads/", "a.mov"), "uploads/a.mov");
    }
}
