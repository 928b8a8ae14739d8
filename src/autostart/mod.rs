//! Start `run` at user login, the way each platform expects, behind one
//! interface: a [`Plan`] of files to write and commands to run, built by the
//! platform module, then applied (or just printed with `--print`).
//!
//! Every platform's text is generated on every platform (only the choice of
//! which one applies is `cfg`), so golden tests check all three on Linux.
//! Uninstall removes only files carrying our marker line, i.e. files that
//! install wrote.

pub mod linux;
pub mod macos;
pub mod windows;

use std::path::{Path, PathBuf};

/// The line every file we write carries, so uninstall never removes a file
/// it did not write.
pub const MARKER: &str = "Written by autorender-sync autostart";

/// Why install or uninstall could not do its part.
#[derive(Debug, thiserror::Error)]
pub enum AutostartError {
    #[error("no home directory is known; set HOME")]
    NoHome,
    #[error("{} has no parent folder", .0.display())]
    NoParent(PathBuf),
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// "create", "write", "read", "remove".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Uninstall found a file at our path that install did not write.
    #[error("{} was not written by autorender-sync; leaving it alone", .0.display())]
    NotOurs(PathBuf),
}

impl AutostartError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AutostartError {
        let path = path.to_path_buf();
        move |source| AutostartError::Io { action, path, source }
    }
}

/// What install needs to know, gathered once (and injectable for tests).
#[derive(Debug, Clone)]
pub struct Context {
    /// Absolute path of the binary to start.
    pub exe: PathBuf,
    /// Absolute path of the config it runs with.
    pub config: PathBuf,
    pub home: PathBuf,
    /// `$XDG_CONFIG_HOME` (Linux), default `~/.config`.
    pub xdg_config: PathBuf,
}

impl Context {
    pub fn from_env(exe: PathBuf, config: PathBuf) -> Result<Context, AutostartError> {
        let home = directories::BaseDirs::new()
            .map(|b| b.home_dir().to_path_buf())
            .ok_or(AutostartError::NoHome)?;
        let xdg_config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| home.join(".config"));
        Ok(Context {
            exe,
            config,
            home,
            xdg_config,
        })
    }

    /// The command line autostart runs: `<exe> run --config <config>`.
    pub fn argv(&self) -> Vec<String> {
        vec![
            self.exe.to_string_lossy().into_owned(),
            "run".into(),
            "--config".into(),
            self.config.to_string_lossy().into_owned(),
        ]
    }

    /// The same, logging to `log` (rotated) where no journald collects
    /// stderr (XDG autostart, LaunchAgent).
    pub fn argv_logging_to(&self, log: &std::path::Path) -> Vec<String> {
        let mut argv = self.argv();
        argv.push("--log-file".into());
        argv.push(log.to_string_lossy().into_owned());
        argv
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileToWrite {
    pub path: PathBuf,
    pub contents: String,
}

/// Everything an install does, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub method: String,
    pub files: Vec<FileToWrite>,
    /// Commands run after the files are written (failures are reported, not fatal).
    pub commands: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Plan {
    /// Human-readable: exactly what would be written and run.
    pub fn describe(&self) -> String {
        let mut out = format!("method: {}\n", self.method);
        for f in &self.files {
            out.push_str(&format!("\n--- write {} ---\n{}", f.path.display(), f.contents));
            if !f.contents.ends_with('\n') {
                out.push('\n');
            }
        }
        for c in &self.commands {
            out.push_str(&format!("\n--- run ---\n{}\n", shell_words(c)));
        }
        for n in &self.notes {
            out.push_str(&format!("\nnote: {n}\n"));
        }
        out
    }

    /// Writes the files (atomically: temp file then rename) and runs the commands.
    pub fn apply(&self) -> Result<Vec<String>, AutostartError> {
        for f in &self.files {
            write_atomic(&f.path, &f.contents)?;
        }
        Ok(run_commands(&self.commands))
    }
}

/// Runs commands, returning one warning line per failure.
pub fn run_commands(commands: &[Vec<String>]) -> Vec<String> {
    let mut warnings = Vec::new();
    for c in commands {
        let Some((prog, args)) = c.split_first() else {
            continue;
        };
        match std::process::Command::new(prog).args(args).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => warnings.push(format!(
                "`{}` failed: {}",
                shell_words(c),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => warnings.push(format!("cannot run `{}`: {e}", shell_words(c))),
        }
    }
    warnings
}

pub fn write_atomic(path: &Path, contents: &str) -> Result<(), AutostartError> {
    let dir = path
        .parent()
        .ok_or_else(|| AutostartError::NoParent(path.to_path_buf()))?;
    std::fs::create_dir_all(dir).map_err(AutostartError::io("create", dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    ));
    std::fs::write(&tmp, contents).map_err(AutostartError::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(AutostartError::io("write", path))
}

/// Removes `path` if it exists and carries [`MARKER`], then the folders
/// install created for it if they are now empty. Returns whether it removed it.
pub fn remove_ours(path: &Path) -> Result<bool, AutostartError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.contains(MARKER) => {
            std::fs::remove_file(path).map_err(AutostartError::io("remove", path))?;
            // Only empty folders go (remove_dir refuses others): never anyone else's files.
            let mut dir = path.parent();
            for _ in 0..2 {
                match dir {
                    Some(d) if std::fs::remove_dir(d).is_ok() => dir = d.parent(),
                    _ => break,
                }
            }
            Ok(true)
        }
        Ok(_) => Err(AutostartError::NotOurs(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(AutostartError::io("read", path)(e)),
    }
}

/// POSIX-shell rendering of a command, for display only.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `autostart status` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Installed {
    pub method: String,
    pub path: PathBuf,
}

#[cfg(test)]
mod golden {
    //! The generated text for every platform, checked on every platform.
    use super::*;

    fn unix_ctx() -> Context {
        Context {
            exe: "/opt/autorender sync/bin/autorender-sync".into(),
            config: "/home/ana/My Configs/50% \"final\"/config.toml".into(),
            home: "/home/ana".into(),
            xdg_config: "/home/ana/.config".into(),
        }
    }

    fn check(name: &str, actual: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        // UPDATE_GOLDEN rewrites a file that differs and then fails the
        // test, so an update is always looked at and never passes as a
        // comparison of a file with itself; CI refuses it outright.
        let unchanged = std::fs::read_to_string(&path).is_ok_and(|e| e == actual);
        if std::env::var_os("UPDATE_GOLDEN").is_some() && !unchanged {
            assert!(
                std::env::var("CI").is_err(),
                "UPDATE_GOLDEN is for a developer's machine, not CI"
            );
            std::fs::write(&path, actual).unwrap();
            panic!(
                "{name} rewritten from the current output; review `git diff tests/golden` and run again without UPDATE_GOLDEN"
            );
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("missing golden file {}", path.display()));
        assert_eq!(
            actual, expected,
            "{name} differs from its golden file (UPDATE_GOLDEN=1 to rewrite it, then review the diff)"
        );
    }

    #[test]
    fn linux_unit_and_desktop() {
        check("autorender-sync.service", &linux::unit_text(&unix_ctx().argv()));
        check(
            "autorender-sync.desktop",
            &linux::desktop_text(&unix_ctx().argv_logging_to(std::path::Path::new(
                "/home/ana/.local/state/autorender-sync/agent.log",
            ))),
        );
    }

    #[test]
    fn macos_plist() {
        let ctx = Context {
            exe: "/Applications/autorender-sync/autorender-sync".into(),
            config: "/Users/ana/Library/Application Support/io.autorender.autorender-sync/config.toml".into(),
            home: "/Users/ana".into(),
            xdg_config: "/Users/ana/.config".into(),
        };
        check("io.autorender.sync.plist", &macos::plist_text(&ctx));
        check("macos-plan.txt", &macos::plan(&ctx, "501").describe());
    }

    #[test]
    fn windows_run_value() {
        let ctx = Context {
            exe: r"C:\Program Files\autorender-sync\autorender-sync.exe".into(),
            config: r"C:\Users\Ana\AppData\Roaming\autorender\autorender-sync\config\config.toml".into(),
            home: r"C:\Users\Ana".into(),
            xdg_config: r"C:\Users\Ana\AppData\Roaming".into(),
        };
        check("windows-plan.txt", &windows::plan(&ctx).describe());
    }
}
