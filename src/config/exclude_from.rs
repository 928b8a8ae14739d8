//! `[[watch]] exclude_from = "FILE"`: exclusions kept in a file of
//! gitignore-style lines, as rclone's `--exclude-from` and git's
//! `.gitignore` read them (`#` comments, `!` to take back, a leading `/`
//! anchors at the root, a trailing `/` means a folder and all below it, a
//! pattern without `/` matches a name at any depth). Read when the config
//! is (a reload reads it again).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::walker::{Span, Walker};

/// The rules of one `exclude_from` file.
#[derive(Debug, Clone)]
pub struct ExcludeFile {
    pub path: PathBuf,
    rules: Arc<Gitignore>,
}

impl ExcludeFile {
    /// Does the file exclude the root-relative path `rel` (a file), or a
    /// folder it is in?
    pub fn excludes(&self, rel: &str) -> bool {
        self.rules.matched_path_or_any_parents(rel, false).is_ignore()
    }

    /// The rules in `text` (read from `path`); each bad line is
    /// `(line number, why)`.
    pub fn parse(path: &Path, text: &str) -> Result<ExcludeFile, Vec<(usize, String)>> {
        let mut builder = GitignoreBuilder::new("/");
        let mut bad = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if let Err(e) = builder.add_line(None, line) {
                bad.push((i + 1, e.to_string()));
            }
        }
        if !bad.is_empty() {
            return Err(bad);
        }
        match builder.build() {
            Ok(rules) => Ok(ExcludeFile {
                path: path.to_path_buf(),
                rules: Arc::new(rules),
            }),
            Err(e) => Err(vec![(0, e.to_string())]),
        }
    }
}

impl Walker<'_> {
    /// Reads `exclude_from` at `text` (a path), reporting problems at `span`.
    pub(super) fn read_exclude_file(&mut self, text: &str, span: &Span, key: &str) -> Option<ExcludeFile> {
        let path = self.path(text, span, key)?;
        let body = match crate::private::read_text(&path) {
            Ok(b) => b,
            Err(e) => {
                self.err(
                    key,
                    Some(span.clone()),
                    format!(
                        "cannot read {}: {e}; create it (one gitignore-style pattern per line) or drop the key",
                        path.display()
                    ),
                );
                return None;
            }
        };
        match ExcludeFile::parse(&path, &body) {
            Ok(rules) => Some(rules),
            Err(bad) => {
                for (line, why) in bad {
                    self.err(
                        key,
                        Some(span.clone()),
                        format!("{} line {line}: {why}", path.display()),
                    );
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitignore_lines_exclude_names_folders_and_anchored_paths_and_bang_takes_back() {
        let rules = ExcludeFile::parse(
            Path::new("/x/excludes"),
            "# renders we keep locally\n*.tmp\ncache/\n/scratch.mov\n*.mov\n!final.mov\n\n",
        )
        .unwrap();
        for (rel, out) in [
            ("a.tmp", true),
            ("shots/a.tmp", true),
            ("cache/f.exr", true),
            ("shots/cache/f.exr", true),
            ("scratch.mov", true),
            ("shots/scratch.mov", true), // *.mov
            ("final.mov", false),
            ("shots/final.mov", false),
            ("a.exr", false),
            ("shots/cachefile.exr", false),
        ] {
            assert_eq!(rules.excludes(rel), out, "{rel}");
        }
        let bad = ExcludeFile::parse(Path::new("/x/excludes"), "ok\n{unclosed\n").unwrap_err();
        assert_eq!(bad[0].0, 2, "{bad:?}");
    }
}
