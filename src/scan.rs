//! Which paths belong to which watch, and walking a root. The same filters
//! serve events and scans: built-in temp-file excludes on every path
//! component, then the watch's include/exclude globs on the root-relative path
//! (with `/` separators). Symlinks are never followed.

use std::path::{Component, Path, PathBuf};

use crate::config::WatchSettings;

/// Built-in excludes (SPEC §4): editor, browser and rsync temp files, OS litter.
pub fn is_builtin_excluded(name: &str) -> bool {
    const SUFFIXES: [&str; 8] = [
        ".tmp",
        ".temp",
        ".part",
        ".partial",
        ".crdownload",
        ".download",
        ".swp",
        "~",
    ];
    const NAMES: [&str; 3] = [".ds_store", "thumbs.db", "desktop.ini"];
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.starts_with("~$")
        || SUFFIXES.iter().any(|s| lower.ends_with(s))
        || NAMES.contains(&lower.as_str())
}

/// Why a path under a root is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    OutsideRoot,
    Filtered,
    /// Not valid UTF-8: cannot be named remotely (reported once, skipped).
    NotUtf8(PathBuf),
}

/// The root-relative path (with `/`) if `path` is a candidate of `watch`.
pub fn relative(watch: &WatchSettings, path: &Path) -> Result<String, Rejected> {
    let rel = path
        .strip_prefix(&watch.path)
        .map_err(|_| Rejected::OutsideRoot)?;
    let mut parts = Vec::new();
    for c in rel.components() {
        let Component::Normal(os) = c else {
            return Err(Rejected::OutsideRoot);
        };
        let Some(s) = os.to_str() else {
            return Err(Rejected::NotUtf8(path.to_path_buf()));
        };
        if is_builtin_excluded(s) {
            return Err(Rejected::Filtered);
        }
        parts.push(s);
    }
    if parts.is_empty() || (!watch.recursive && parts.len() > 1) {
        return Err(Rejected::Filtered);
    }
    let rel = parts.join("/");
    if watch.matches(&rel) {
        Ok(rel)
    } else {
        Err(Rejected::Filtered)
    }
}

/// A candidate file found by a walk, with what `lstat` said of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    /// Root-relative, with `/`.
    pub rel: String,
    pub size: u64,
    pub mtime_ns: i128,
    /// Everything `lstat` said of the version found (device, inode, ctime).
    pub id: crate::fileid::FileId,
}

/// One folder's candidate files (not those of its subfolders).
#[derive(Debug, Default)]
pub struct Folder {
    /// The folder, root-relative with a trailing `/` (empty for the root).
    pub prefix: String,
    pub files: Vec<Found>,
}

/// Walks `dir` (a root or a folder under it) one folder at a time, depth
/// first, and hands each folder's candidate files to `each`; the walk stops
/// when `each` returns false. At most one folder's files are held at once
/// (plus the names of the folders still to visit), so walking a million
/// files costs the memory of the largest folder, not of the tree. Folders
/// that cannot be read are logged and skipped; the next rescan tries again.
/// Symlinks are never followed, and hidden or temp folders not entered.
pub fn walk_folders(watch: &WatchSettings, dir: &Path, mut each: impl FnMut(Folder) -> bool) {
    if !dir.starts_with(&watch.path) {
        return;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        // Listed through a handle opened beneath the root with no symlink
        // on the way: a folder swapped for a symlink is not entered.
        let entries = match crate::anchor::list(&watch.path, &folder) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("cannot read {}: {e}", crate::text::path(&folder));
                continue;
            }
        };
        let mut found = Folder {
            prefix: folder_prefix(watch, &folder),
            files: Vec::new(),
        };
        for entry in entries {
            let path = folder.join(&entry.name);
            let id = match entry.kind {
                crate::anchor::Kind::Dir => {
                    let hidden = entry.name.to_str().is_some_and(is_builtin_excluded);
                    if watch.recursive && !hidden {
                        stack.push(path);
                    }
                    continue;
                }
                crate::anchor::Kind::File(id) => id,
                _ => continue,
            };
            match relative(watch, &path) {
                Ok(rel) => found.files.push(Found {
                    path,
                    rel,
                    size: id.size,
                    mtime_ns: id.mtime_ns,
                    id,
                }),
                Err(Rejected::NotUtf8(p)) => tracing::warn!(
                    "skipping {}: its name is not valid UTF-8; rename it to upload it",
                    crate::text::path(&p)
                ),
                Err(_) => {}
            }
        }
        if !each(found) {
            return;
        }
    }
}

/// `folder`'s root-relative path with a trailing `/` (empty for the root).
fn folder_prefix(watch: &WatchSettings, folder: &Path) -> String {
    let parts: Vec<String> = folder
        .strip_prefix(&watch.path)
        .map(|p| {
            p.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if parts.is_empty() {
        String::new()
    } else {
        format!("{}/", parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn watch(dir: &Path, extra: &str) -> WatchSettings {
        let text = format!(
            "[[watch]]\npath = \"{}\"\nremote_folder = \"r\"\n{extra}",
            dir.display()
        );
        Settings::parse(&text, "t", None).unwrap().watches.remove(0)
    }

    #[test]
    fn builtin_excludes() {
        for n in [
            ".hidden",
            ".a.mp4.X1b2c3",
            "~$doc.docx",
            "a.tmp",
            "b.PART",
            "c.crdownload",
            "x.swp",
            "y~",
            ".DS_Store",
            "Thumbs.db",
            "desktop.ini",
        ] {
            assert!(is_builtin_excluded(n), "{n}");
        }
        for n in ["a.mp4", "part.mov", "tmp", "download.exr"] {
            assert!(!is_builtin_excluded(n), "{n}");
        }
    }

    #[test]
    fn relative_paths_and_filters() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        let w = watch(&root, "include = [\"**/*.mp4\"]\nexclude = [\"**/cache/**\"]\n");
        assert_eq!(relative(&w, &root.join("a/b.mp4")), Ok("a/b.mp4".into()));
        assert_eq!(relative(&w, &root.join("b.mp4")), Ok("b.mp4".into()));
        assert_eq!(relative(&w, &root.join("a/cache/b.mp4")), Err(Rejected::Filtered));
        assert_eq!(relative(&w, &root.join(".git/b.mp4")), Err(Rejected::Filtered));
        assert_eq!(relative(&w, &root.join("b.mov")), Err(Rejected::Filtered));
        assert_eq!(
            relative(&w, Path::new("/elsewhere/b.mp4")),
            Err(Rejected::OutsideRoot)
        );
        let flat = watch(&root, "recursive = false\n");
        assert_eq!(relative(&flat, &root.join("a/b.mp4")), Err(Rejected::Filtered));
    }

    #[test]
    fn walk_skips_hidden_dirs_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("sub/.cache")).unwrap();
        std::fs::write(root.join("a.mp4"), b"1").unwrap();
        std::fs::write(root.join("sub/b.mp4"), b"1").unwrap();
        std::fs::write(root.join("sub/.cache/c.mp4"), b"1").unwrap();
        std::fs::write(root.join("sub/d.tmp"), b"1").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("a.mp4"), root.join("link.mp4")).unwrap();
        let w = watch(&root, "");
        let walk = |dir: &Path| {
            let mut folders = Vec::new();
            walk_folders(&w, dir, |f| {
                let mut rels: Vec<String> = f.files.iter().map(|x| x.rel.clone()).collect();
                rels.sort();
                folders.push((f.prefix, rels));
                true
            });
            folders.sort();
            folders
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            walk(&root),
            vec![("".into(), s(&["a.mp4"])), ("sub/".into(), s(&["sub/b.mp4"]))]
        );
        assert_eq!(walk(&root.join("sub")), vec![("sub/".into(), s(&["sub/b.mp4"]))]);
        // Not recursive: the root's own files only.
        let flat = watch(&root, "recursive = false\n");
        let mut n = 0;
        walk_folders(&flat, &root, |f| {
            assert_eq!(f.prefix, "");
            n += f.files.len();
            true
        });
        assert_eq!(n, 1);
        // `each` returning false stops the walk.
        let mut calls = 0;
        walk_folders(&w, &root, |_| {
            calls += 1;
            false
        });
        assert_eq!(calls, 1);
    }
}
