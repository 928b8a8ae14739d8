//! The rules of `[[watch]] on_uploaded`, `on_set_complete` and
//! `hook_timeout`: a program and its arguments (no shell), found now, not
//! at the first upload.

use super::walker::{Item, Span};
use super::*;

/// `hook_timeout` when the watch does not say.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// A post-upload hook as configured: the program and its arguments, and
/// how long it may run before it is stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The program (an absolute path, or a name looked up on `PATH`) and
    /// its arguments, as written.
    pub argv: Vec<String>,
    pub timeout: Duration,
}

/// A watch's hooks (both None: no hooks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub on_uploaded: Option<Hook>,
    pub on_set_complete: Option<Hook>,
}

impl Walker<'_> {
    pub(super) fn hooks(&mut self, f: &HashMap<String, Item>, key: &str, has_sets: bool) -> Hooks {
        let k = |n: &str| walker::join_key(key, n);
        let timeout = match self.duration(f, "hook_timeout", &k("hook_timeout")) {
            Some(d) if d.is_zero() => {
                self.err(
                    &k("hook_timeout"),
                    f.get("hook_timeout").map(|i| i.span()),
                    "must be longer than 0s: a hook needs time to run (the default is \"5m\")",
                );
                DEFAULT_HOOK_TIMEOUT
            }
            Some(d) => d,
            None => DEFAULT_HOOK_TIMEOUT,
        };
        let on_uploaded = self.hook(f, "on_uploaded", &k("on_uploaded"), timeout);
        let on_set_complete = self.hook(f, "on_set_complete", &k("on_set_complete"), timeout);
        if on_set_complete.is_some() && !has_sets {
            self.err(
                &k("on_set_complete"),
                f.get("on_set_complete").map(|i| i.span()),
                "only runs for upload sets; add `sets = \"folder\"` to this watch, or use on_uploaded",
            );
        }
        if f.contains_key("hook_timeout")
            && !f.contains_key("on_uploaded")
            && !f.contains_key("on_set_complete")
        {
            self.err(
                &k("hook_timeout"),
                f.get("hook_timeout").map(|i| i.span()),
                "no hook to time: add on_uploaded or on_set_complete, or remove it",
            );
        }
        Hooks {
            on_uploaded,
            on_set_complete,
        }
    }

    fn hook(&mut self, f: &HashMap<String, Item>, name: &str, key: &str, timeout: Duration) -> Option<Hook> {
        let span = f.get(name)?.span();
        let argv = self.strings(f, name, key)?;
        let Some((program, pspan)) = argv.first() else {
            self.err(
                key,
                Some(span),
                "is empty; write the program and its arguments, e.g. [\"/usr/local/bin/notify-render\", \"--quiet\"]",
            );
            return None;
        };
        let program = self.hook_program(program, pspan, key)?;
        let mut argv: Vec<String> = argv.into_iter().map(|(s, _)| s).collect();
        argv[0] = program;
        Some(Hook { argv, timeout })
    }

    /// The program as it will be started: an absolute (or `~/`) path to
    /// an executable file, or a bare name found on `PATH` now.
    fn hook_program(&mut self, text: &str, span: &Span, key: &str) -> Option<String> {
        if text.trim().is_empty() {
            self.err(key, Some(span.clone()), "the program (first item) is empty");
            return None;
        }
        if !text.contains('/') && !text.contains(std::path::MAIN_SEPARATOR) {
            return match which(text) {
                Some(_) => Some(text.to_string()),
                None => {
                    self.err(
                        key,
                        Some(span.clone()),
                        format!(
                            "\"{text}\" is not found on PATH; write its absolute path (the agent started at login may have another PATH than this shell)"
                        ),
                    );
                    None
                }
            };
        }
        let path = self.path(text, span, key)?;
        if let Err(why) = executable(&path) {
            self.err(key, Some(span.clone()), format!("{}: {why}", path.display()));
            return None;
        }
        Some(path.to_string_lossy().into_owned())
    }
}

/// The first executable called `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| executable(p).is_ok())
}

/// Whether `path` is a file this user may run, and if not why.
fn executable(path: &Path) -> Result<(), &'static str> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist; install it or fix the path",
        _ => "cannot be read; check its permissions",
    })?;
    if !meta.is_file() {
        return Err("is not a file; name the program to run");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err("is not executable; chmod +x it");
        }
    }
    Ok(())
}
