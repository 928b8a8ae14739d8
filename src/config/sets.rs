//! The rules of a `[[watch]]`'s upload sets (`sets = "folder"` and the
//! `set_*`, `sequence_gaps`, `upload_last` keys).

use super::walker::Item;
use super::*;

/// What a gap in a frame sequence does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gaps {
    Ignore,
    /// Reported; the set goes anyway.
    Warn,
    /// The set waits until the gap is filled.
    Hold,
}

/// What a set does with a card's ASC MHL history (`set_mhl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mhl {
    /// The `ascmhl/` folder is files like any other.
    Off,
    /// Every file is checked against the history before the set goes; a
    /// mismatch or a listed file missing holds the set (the default).
    Verify,
    /// Also: our generation is added to the card's history when the set is
    /// complete, and the history is uploaded with the set.
    Write,
}

/// A root's upload sets: every folder `depth` levels below the root is one.
#[derive(Debug, Clone)]
pub struct SetRules {
    pub depth: usize,
    /// A set is ready once a file matching this (relative to the set) exists.
    pub trigger: Option<GlobSet>,
    pub trigger_pattern: Option<String>,
    /// Without a trigger: ready when nothing in the set changed for this long.
    pub quiet: Duration,
    /// Not ready after this long: a `stuck` event.
    pub timeout: Duration,
    pub gaps: Gaps,
    /// Sent after every other file of the set (before the trigger).
    pub last: GlobSet,
    pub last_patterns: Vec<String>,
    /// The JSON manifest (`set_manifest = true`, "json" or "mhl").
    pub manifest: bool,
    /// `set_manifest = "mhl"`: a set without an ASC MHL history gets one
    /// (written in the state dir, uploaded as the set's `ascmhl/`).
    pub mhl_new: bool,
    pub mhl: Mhl,
}

/// Where a file stands in its set's order.
pub const PHASE_FILES: i64 = 0;
pub const PHASE_LAST: i64 = 1;
pub const PHASE_TRIGGER: i64 = 2;

impl SetRules {
    /// The set a root-relative path belongs to ("shots/sh010"), and the
    /// path inside it; None for files above the set depth.
    pub fn place<'a>(&self, rel: &'a str) -> Option<(&'a str, &'a str)> {
        let mut cut = 0;
        for _ in 0..self.depth {
            let next = rel[cut..].find('/')?;
            cut += next + 1;
        }
        Some((&rel[..cut - 1], &rel[cut..]))
    }

    /// The phase of a file (its path inside the set): trigger last, then
    /// `upload_last`, then everything else first. A pattern matches the
    /// path inside the set, or (as in .gitignore) a pattern without `/`
    /// matches the file's name in any subfolder: `*.mhl` is every .mhl.
    pub fn phase(&self, inner: &str) -> i64 {
        let name = inner.rsplit('/').next().unwrap_or(inner);
        let matches = |g: &GlobSet| g.is_match(inner) || g.is_match(name);
        if self.trigger.as_ref().is_some_and(matches) {
            PHASE_TRIGGER
        } else if matches(&self.last) {
            PHASE_LAST
        } else {
            PHASE_FILES
        }
    }
}

pub(super) const SET_KEYS: &[&str] = &[
    "sets",
    "set_depth",
    "set_trigger",
    "set_quiet",
    "set_timeout",
    "sequence_gaps",
    "upload_last",
    "set_manifest",
    "set_mhl",
];

impl Walker<'_> {
    /// The set rules of a `[[watch]]` (None with `sets = "off"`); keys that
    /// only mean something with sets are refused without them.
    pub(super) fn sets(&mut self, f: &HashMap<String, Item>, key: &str) -> Option<SetRules> {
        let k = |name: &str| format!("{key}.{name}");
        let on = match self.string(f, "sets", &k("sets")) {
            None => false,
            Some((t, _)) if t == "off" => false,
            Some((t, _)) if t == "folder" => true,
            Some((t, span)) => {
                self.err(
                    &k("sets"),
                    Some(span),
                    format!("\"{t}\" is not a choice; use \"folder\" or \"off\""),
                );
                false
            }
        };
        if !on {
            for name in &SET_KEYS[1..] {
                if let Some(item) = f.get(*name) {
                    self.err(
                        &k(name),
                        Some(item.span()),
                        "only means something with sets = \"folder\"; add that or remove this key",
                    );
                }
            }
            return None;
        }
        let depth = self.integer(f, "set_depth", &k("set_depth"), 1).unwrap_or(1) as usize;
        let (trigger, trigger_pattern) = match self.string(f, "set_trigger", &k("set_trigger")) {
            Some((p, span)) => match globset::GlobBuilder::new(&p).literal_separator(true).build() {
                Ok(g) => {
                    let mut b = GlobSetBuilder::new();
                    b.add(g);
                    (b.build().ok(), Some(p))
                }
                Err(e) => {
                    self.err(
                        &k("set_trigger"),
                        Some(span),
                        format!("invalid glob \"{p}\": {}", e.kind()),
                    );
                    (None, None)
                }
            },
            None => (None, None),
        };
        let quiet = self
            .duration(f, "set_quiet", &k("set_quiet"))
            .unwrap_or(Duration::from_secs(60));
        let timeout = self
            .duration(f, "set_timeout", &k("set_timeout"))
            .unwrap_or(Duration::from_secs(6 * 3600));
        let gaps = match self.string(f, "sequence_gaps", &k("sequence_gaps")) {
            None => Gaps::Warn,
            Some((t, span)) => match t.as_str() {
                "ignore" => Gaps::Ignore,
                "warn" => Gaps::Warn,
                "hold" => Gaps::Hold,
                _ => {
                    self.err(
                        &k("sequence_gaps"),
                        Some(span),
                        format!("\"{t}\" is not a choice; use \"ignore\", \"warn\" or \"hold\""),
                    );
                    Gaps::Warn
                }
            },
        };
        let (last, last_patterns) = self.globs(f, "upload_last", &k("upload_last"), &[]);
        let (manifest, mhl_new) = match f.get("set_manifest").map(|i| (i.get_ref(), i.span())) {
            None => (false, false),
            Some((toml::de::DeValue::Boolean(b), _)) => (*b, false),
            Some((toml::de::DeValue::String(s), _)) if s == "json" => (true, false),
            Some((toml::de::DeValue::String(s), _)) if s == "mhl" => (true, true),
            Some((other, span)) => {
                self.err(
                    &k("set_manifest"),
                    Some(span),
                    format!(
                        "{} is not a choice; use true or \"json\" (our JSON manifest), \"mhl\" (also an ASC MHL history for sets without one) or false",
                        match other {
                            toml::de::DeValue::String(s) => format!("\"{s}\""),
                            o => o.type_str().to_string(),
                        }
                    ),
                );
                (false, false)
            }
        };
        let mhl = match self.string(f, "set_mhl", &k("set_mhl")) {
            None => Mhl::Verify,
            Some((t, span)) => match t.as_str() {
                "off" => Mhl::Off,
                "verify" => Mhl::Verify,
                "write" => Mhl::Write,
                _ => {
                    self.err(
                        &k("set_mhl"),
                        Some(span),
                        format!("\"{t}\" is not a choice; use \"verify\" (check a card's ASC MHL history before it goes), \"write\" (also add our generation) or \"off\""),
                    );
                    Mhl::Verify
                }
            },
        };
        Some(SetRules {
            depth,
            trigger,
            trigger_pattern,
            quiet,
            timeout,
            gaps,
            last,
            last_patterns,
            manifest,
            mhl_new,
            mhl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_placed_in_the_set_at_its_depth_with_its_phase() {
        let rules = |depth| {
            let s = Settings::parse(
                &format!(
                    "[[watch]]\npath = \"/\"\nremote_folder = \"r\"\nsets = \"folder\"\nset_depth = {depth}\n\
                     set_trigger = \"_DONE\"\nupload_last = [\"*.mhl\", \"*.json\"]\n"
                ),
                "t.toml",
                None,
            )
            .unwrap();
            s.watches[0].sets.clone().unwrap()
        };
        let one = rules(1);
        assert_eq!(one.place("sh010/f.0001.exr"), Some(("sh010", "f.0001.exr")));
        assert_eq!(one.place("sh010/sub/f.exr"), Some(("sh010", "sub/f.exr")));
        assert_eq!(one.place("loose.txt"), None);
        let two = rules(2);
        assert_eq!(two.place("job/sh010/f.exr"), Some(("job/sh010", "f.exr")));
        assert_eq!(two.place("job/f.exr"), None);
        assert_eq!(one.phase("f.0001.exr"), PHASE_FILES);
        assert_eq!(one.phase("card.mhl"), PHASE_LAST);
        assert_eq!(one.phase("_DONE"), PHASE_TRIGGER);
        assert_eq!(
            one.phase("sub/_DONE"),
            PHASE_TRIGGER,
            "a name pattern matches in subfolders"
        );
        assert_eq!(one.phase("A001/A001.mhl"), PHASE_LAST);
        assert_eq!(one.phase("sub/f.0001.exr"), PHASE_FILES);
    }
}
