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

/// Walks `dir` (a root or a folder under it) and returns the candidate files.
/// Unreadable folders are logged and skipped; the next rescan tries again.
pub fn walk(watch: &WatchSettings, dir: &Path) -> Vec<PathBuf> {
    let depth = if watch.recursive { usize::MAX } else { 1 };
    let start_depth = dir
        .strip_prefix(&watch.path)
        .map(|r| r.components().count())
        .unwrap_or(0);
    let mut out = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .max_depth(depth.saturating_sub(start_depth))
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || e.file_name().to_str().is_none_or(|n| !is_builtin_excluded(n)));
    for entry in walker {
        match entry {
            Ok(e) if e.file_type().is_file() => match relative(watch, e.path()) {
                Ok(_) => out.push(e.into_path()),
                Err(Rejected::NotUtf8(p)) => {
                    tracing::warn!(
                        "skipping {}: its name is not valid UTF-8; rename it to upload it",
                        p.display()
                    )
                }
                Err(_) => {}
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "cannot read {}: {e}",
                e.path().map(|p| p.display().to_string()).unwrap_or_default()
            ),
        }
    }
    out
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
        let mut found: Vec<String> = walk(&w, &root).iter().map(|p| relative(&w, p).unwrap()).collect();
        found.sort();
        assert_eq!(found, vec!["a.mp4", "sub/b.mp4"]);
        let only_sub: Vec<PathBuf> = walk(&w, &root.join("sub"));
        assert_eq!(only_sub, vec![root.join("sub/b.mp4")]);
    }
}
