//! The rules of a `[[watch]]` entry: its path, remote folder, globs,
//! metadata, after-upload action, and no two roots overlapping.

use super::walker::{Item, Span, to_json};
use super::*;

pub(super) const WATCH_KEYS: &[&str] = &[
    "path",
    "remote_folder",
    "include",
    "exclude",
    "recursive",
    "subfolders",
    "tags",
    "metadata",
    "random_prefix",
    "after_upload",
    "move_to",
    "settle",
    "priority",
    "existing",
    "max_age",
    "min_size",
    "max_size",
    "exclude_from",
    "immutable",
    "mirror_renames",
    "mirror_deletes",
    "delete_after",
    "max_delete",
    "min_interval",
    "share",
    "on_uploaded",
    "on_set_complete",
    "hook_timeout",
];

/// `min_interval` default: a file that keeps changing goes at most this often.
const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(600);

impl<'s> Walker<'s> {
    pub(super) fn watch(
        &mut self,
        t: &DeTable,
        key: &str,
        span: Span,
        default_settle: Duration,
    ) -> (Option<(PathBuf, Span)>, Option<WatchSettings>) {
        // A watch's own keys and its upload-set keys (`sets.rs`).
        let f = self.fields(t, key, &[WATCH_KEYS, super::sets::SET_KEYS].concat());
        let k = |name: &str| format!("{key}.{name}");
        let before = self.errors.len();

        let mut path_span = span.clone();
        let path = match self.string(&f, "path", &k("path")) {
            Some((text, pspan)) => {
                path_span = pspan.clone();
                self.path(&text, &pspan, &k("path"))
                    .and_then(|p| match std::fs::metadata(&p) {
                        Ok(m) if m.is_dir() => match p.canonicalize() {
                            Ok(c) => Some(c),
                            Err(e) => {
                                self.err(
                                    &k("path"),
                                    Some(pspan),
                                    format!("cannot resolve {}: {e}", p.display()),
                                );
                                None
                            }
                        },
                        Ok(_) => {
                            self.err(
                                &k("path"),
                                Some(pspan),
                                format!("{} is not a folder", p.display()),
                            );
                            None
                        }
                        Err(e) => {
                            self.err(
                                &k("path"),
                                Some(pspan),
                                format!(
                                    "folder {} cannot be used ({e}); create it or fix the path",
                                    p.display()
                                ),
                            );
                            None
                        }
                    })
            }
            None => {
                if !f.contains_key("path") {
                    self.err(
                        &k("path"),
                        Some(span.clone()),
                        "missing; every [[watch]] needs the local folder to watch",
                    );
                }
                None
            }
        };
        let remote_folder = match self.string(&f, "remote_folder", &k("remote_folder")) {
            Some((text, rspan)) => match normalise_remote_folder(&text) {
                Ok(folder) => folder,
                Err(e) => {
                    self.err(&k("remote_folder"), Some(rspan), e);
                    String::new()
                }
            },
            None => {
                if !f.contains_key("remote_folder") {
                    self.err(
                        &k("remote_folder"),
                        Some(span.clone()),
                        "missing; set the workspace folder files go to, e.g. \"uploads/renders\"",
                    );
                }
                String::new()
            }
        };
        let (include, include_patterns) = self.globs(&f, "include", &k("include"), &["**/*"]);
        let (exclude, exclude_patterns) = self.globs(&f, "exclude", &k("exclude"), &[]);
        let exclude_from = self
            .string(&f, "exclude_from", &k("exclude_from"))
            .and_then(|(text, span)| self.read_exclude_file(&text, &span, &k("exclude_from")));
        let recursive = self.boolean(&f, "recursive", &k("recursive")).unwrap_or(true);
        let subfolders = match self.string(&f, "subfolders", &k("subfolders")) {
            Some((v, s)) => match v.as_str() {
                "preserve" => Subfolders::Preserve,
                "flatten" => Subfolders::Flatten,
                _ => {
                    self.err(
                        &k("subfolders"),
                        Some(s),
                        format!("\"{v}\" is not one of \"preserve\", \"flatten\""),
                    );
                    Subfolders::Preserve
                }
            },
            None => Subfolders::Preserve,
        };
        let tags = self
            .strings(&f, "tags", &k("tags"))
            .map(|v| v.into_iter().map(|(s, _)| s).collect())
            .unwrap_or_default();
        let metadata = match f.get("metadata") {
            Some(item) => match item.get_ref() {
                DeValue::Table(t) => self.metadata(t, &k("metadata")),
                other => {
                    self.err(
                        &k("metadata"),
                        Some(item.span()),
                        format!(
                            "expected a table like {{ source = \"farm-01\" }}, found {}",
                            other.type_str()
                        ),
                    );
                    serde_json::Map::new()
                }
            },
            None => serde_json::Map::new(),
        };
        let random_prefix = self
            .boolean(&f, "random_prefix", &k("random_prefix"))
            .unwrap_or(false);
        let move_to = self
            .string(&f, "move_to", &k("move_to"))
            .and_then(|(text, s)| self.path(&text, &s, &k("move_to")).map(|p| (p, s)));
        let after_upload = match self.string(&f, "after_upload", &k("after_upload")) {
            Some((v, s)) => {
                match v.as_str() {
                    "keep" => AfterUpload::Keep,
                    "delete" => AfterUpload::Delete,
                    "move" => match &move_to {
                        Some((p, _)) => AfterUpload::Move(p.clone()),
                        None => {
                            if !f.contains_key("move_to") {
                                self.err(&k("after_upload"), Some(s), "\"move\" needs `move_to = \"…\"`: the folder uploaded files are moved into");
                            }
                            AfterUpload::Keep
                        }
                    },
                    _ => {
                        self.err(
                            &k("after_upload"),
                            Some(s),
                            format!("\"{v}\" is not one of \"keep\", \"delete\", \"move\""),
                        );
                        AfterUpload::Keep
                    }
                }
            }
            None => AfterUpload::Keep,
        };
        let asked_move = f
            .get("after_upload")
            .is_some_and(|v| v.get_ref().as_str() == Some("move"));
        if let Some((_, s)) = &move_to
            && !asked_move
        {
            self.err(
                &k("move_to"),
                Some(s.clone()),
                "only used with after_upload = \"move\"; remove it or set after_upload = \"move\"",
            );
        }
        if let (Some(root), AfterUpload::Move(dest)) = (&path, &after_upload) {
            let dest_abs = dest.canonicalize().unwrap_or_else(|_| dest.clone());
            if dest_abs.starts_with(root) {
                let s = move_to.as_ref().map(|(_, s)| s.clone());
                self.err(&k("move_to"), s, "is inside the watched folder, so moved files would be seen again; choose a folder outside it");
            }
        }
        let settle = if f.contains_key("settle") {
            self.settle(&f, &k("settle")).unwrap_or(default_settle)
        } else {
            default_settle
        };
        let priority = self
            .integer(&f, "priority", &k("priority"), -1_000_000)
            .unwrap_or(0);
        let existing = match self.string(&f, "existing", &k("existing")) {
            None => Existing::Upload,
            Some((t, _)) if t == "upload" => Existing::Upload,
            Some((t, _)) if t == "skip" => Existing::Skip,
            Some((t, span)) => {
                self.err(
                    &k("existing"),
                    Some(span),
                    format!(
                        "\"{t}\" is not a choice; \"upload\" sends what is already there, \"skip\" starts from now"
                    ),
                );
                Existing::Upload
            }
        };
        let max_age = self
            .optional_duration(&f, "max_age", &k("max_age"))
            .unwrap_or(None);
        let immutable = self.boolean(&f, "immutable", &k("immutable")).unwrap_or(false);
        let mirror_renames = self
            .boolean(&f, "mirror_renames", &k("mirror_renames"))
            .unwrap_or(true);
        let mirror_deletes = self.mirror_deletes(&f, key, &after_upload);
        let min_size = self.size(&f, "min_size", &k("min_size"));
        let max_size = self.size(&f, "max_size", &k("max_size"));
        if let (Some(lo), Some(hi)) = (min_size, max_size)
            && lo > hi
        {
            self.err(
                &k("max_size"),
                f.get("max_size").map(|i| i.span()),
                format!(
                    "is smaller than min_size ({} < {}): no file could be uploaded; swap them or drop one",
                    crate::units::format_bytes(hi),
                    crate::units::format_bytes(lo)
                ),
            );
        }
        let min_interval = self
            .optional_duration(&f, "min_interval", &k("min_interval"))
            .unwrap_or(Some(DEFAULT_MIN_INTERVAL));
        let sets = self.sets(&f, key);
        let share = self.share(&f, &k("share"));
        let hooks = self.hooks(&f, key, sets.is_some());
        if self.errors.len() != before {
            return (path.map(|p| (p, path_span)), None);
        }
        let Some(root) = path.clone() else {
            return (None, None);
        };
        let settings = WatchSettings {
            path: root,
            remote_folder,
            include,
            include_patterns,
            exclude,
            exclude_patterns,
            exclude_from,
            recursive,
            subfolders,
            tags,
            metadata,
            random_prefix,
            after_upload,
            settle,
            priority,
            existing,
            max_age,
            immutable,
            mirror_renames,
            mirror_deletes,
            min_size,
            max_size,
            min_interval,
            sets,
            share,
            hooks,
        };
        (path.map(|p| (p, path_span)), Some(settings))
    }

    /// `mirror_deletes` with `delete_after` and `max_delete` (only with it,
    /// and only where the agent leaves local files where they are).
    fn mirror_deletes(
        &mut self,
        f: &HashMap<String, Item>,
        key: &str,
        after_upload: &AfterUpload,
    ) -> Option<MirrorDeletes> {
        let k = |name: &str| format!("{key}.{name}");
        let on = self
            .boolean(f, "mirror_deletes", &k("mirror_deletes"))
            .unwrap_or(false);
        if !on {
            for extra in ["delete_after", "max_delete"] {
                if let Some(item) = f.get(extra) {
                    self.err(
                        &k(extra),
                        Some(item.span()),
                        "only used with mirror_deletes = true; remove it or turn mirror_deletes on",
                    );
                }
            }
            return None;
        }
        if *after_upload != AfterUpload::Keep {
            self.err(
                &k("mirror_deletes"),
                f.get("mirror_deletes").map(|i| i.span()),
                "cannot be used with after_upload = \"delete\" or \"move\": the agent's own removal of each \
                 uploaded file would delete its remote copy; use after_upload = \"keep\" or turn mirror_deletes off",
            );
            return None;
        }
        let after = if f.contains_key("delete_after") {
            self.duration(f, "delete_after", &k("delete_after"))?
        } else {
            DEFAULT_DELETE_AFTER
        };
        let max_per_hour = match self.integer(f, "max_delete", &k("max_delete"), 1) {
            Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
            None if f.contains_key("max_delete") => return None,
            None => DEFAULT_MAX_DELETE,
        };
        Some(MirrorDeletes { after, max_per_hour })
    }

    pub(super) fn globs(
        &mut self,
        f: &HashMap<String, Item>,
        name: &str,
        key: &str,
        default: &[&str],
    ) -> (GlobSet, Vec<String>) {
        let patterns: Vec<(String, Option<Span>)> = match self.strings(f, name, key) {
            Some(list) => {
                if list.is_empty() && name == "include" {
                    self.err(key, f.get(name).map(|i| i.span()), "is empty, so nothing would ever be uploaded; remove it to include everything (\"**/*\")");
                }
                list.into_iter().map(|(s, sp)| (s, Some(sp))).collect()
            }
            None => default.iter().map(|s| (s.to_string(), None)).collect(),
        };
        let mut builder = GlobSetBuilder::new();
        for (pattern, span) in &patterns {
            match globset::GlobBuilder::new(pattern).literal_separator(true).build() {
                Ok(g) => {
                    builder.add(g);
                }
                Err(e) => self.err(
                    key,
                    span.clone(),
                    format!("invalid glob \"{pattern}\": {}", e.kind()),
                ),
            }
        }
        let set = builder
            .build()
            .unwrap_or_else(|_| GlobSetBuilder::new().build().expect("empty glob set builds"));
        (set, patterns.into_iter().map(|(p, _)| p).collect())
    }

    pub(super) fn metadata(&mut self, t: &DeTable, key: &str) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (k, v) in t.iter() {
            let name: &str = k.get_ref();
            if name == "sha256" {
                self.err(
                    &format!("{key}.sha256"),
                    Some(k.span()),
                    "is reserved: the agent sends the file's own sha256 there",
                );
                continue;
            }
            match to_json(v.get_ref()) {
                Some(j) => {
                    out.insert(name.to_string(), j);
                }
                None => self.err(
                    &format!("{key}.{name}"),
                    Some(v.span()),
                    "metadata values must be strings, numbers, booleans, or lists/tables of them",
                ),
            }
        }
        out
    }

    /// A `move_to` inside another watched root would have every moved file
    /// seen there and uploaded a second time.
    pub(super) fn check_move_targets(&mut self, roots: &[(usize, PathBuf, Span)], watches: &[WatchSettings]) {
        for w in watches {
            let AfterUpload::Move(dest) = &w.after_upload else {
                continue;
            };
            let dest_abs = dest.canonicalize().unwrap_or_else(|_| dest.clone());
            let Some((i, _, span)) = roots.iter().find(|(_, r, _)| *r == w.path) else {
                continue;
            };
            for (j, other, _) in roots {
                if *other != w.path && dest_abs.starts_with(other) {
                    self.err(
                        &format!("watch[{i}].move_to"),
                        Some(span.clone()),
                        format!(
                            "is inside watch[{j}]'s folder {}, so every moved file would be uploaded again from there; \
                             choose a folder no watch covers",
                            other.display()
                        ),
                    );
                }
            }
        }
    }

    /// Roots are compared even for entries with other mistakes, so every
    /// problem shows up in one `check`.
    pub(super) fn check_overlaps(&mut self, roots: &[(usize, PathBuf, Span)]) {
        for (n, (i, a, _)) in roots.iter().enumerate() {
            for (j, b, span) in roots.iter().skip(n + 1) {
                let msg = if a == b {
                    format!(
                        "watches the same folder as watch[{i}] ({}); merge the two entries",
                        a.display()
                    )
                } else if b.starts_with(a) || a.starts_with(b) {
                    format!(
                        "{} and watch[{i}]'s {} overlap, so files would be uploaded twice; use one root with include/exclude instead",
                        b.display(),
                        a.display()
                    )
                } else {
                    continue;
                };
                self.err(&format!("watch[{j}].path"), Some(span.clone()), msg);
            }
        }
    }
}
