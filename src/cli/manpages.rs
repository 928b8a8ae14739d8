//! `man`: the manual pages, generated from the same clap definitions as
//! `--help` (so they cannot drift): `autorender-sync(1)` with FILES,
//! ENVIRONMENT, EXIT STATUS and the reference config, and one page per
//! subcommand (`autorender-sync-run(1)`, `autorender-sync-autostart-install(1)`,
//! …), which the main page's COMMANDS section refers to.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use super::{Cli, CliError};
use crate::config::EXAMPLE_CONFIG;

const FILES: &str = r#".SH FILES
.TP
\fI~/.config/autorender-sync/config.toml\fR
The config (macOS: \fI~/Library/Application Support/io.autorender.autorender-sync/config.toml\fR;
Windows: \fI%APPDATA%\\autorender\\autorender-sync\\config\\config.toml\fR), unless
\fB\-\-config\fR or \fBAUTORENDER_SYNC_CONFIG\fR names another. \fBinit\fR writes it.
.TP
\fI~/.local/share/autorender-sync/journal.sqlite3\fR
The journal in \fBstate_dir\fR: every file's state, sessions in flight, history.
Safe to read (\fBstatus\fR, \fBhistory\fR) while an agent runs.
.TP
\fI~/.local/share/autorender-sync/agent.lock\fR
Held by the running agent: one agent per \fBstate_dir\fR.
.TP
\fI~/.local/share/autorender-sync/control.json\fR, \fIcontrol.token\fR
While \fBrun\fR serves its control API (\fB[control] listen\fR): its address,
and the token every \fI/api/*\fR request needs (mode 0600). Removed at a clean stop.
.TP
\fIapi\-key\fR (beside the config)
The API key, mode 0600, when \fBautostart install \-\-store\-key\fR saved it.
.TP
\fI~/.config/systemd/user/autorender\-sync.service\fR, \fI~/.config/autostart/autorender\-sync.desktop\fR, \fI~/Library/LaunchAgents/io.autorender.sync.plist\fR
What \fBautostart install\fR writes (Linux systemd, Linux XDG, macOS).
"#;

const ENVIRONMENT: &str = r#".SH ENVIRONMENT
.TP
\fBAUTORENDER_API_KEY\fR
The API key (the variable's name is \fBapi_key_env\fR in [api]). A service started
at login does not inherit a shell's environment: use \fBapi_key_file\fR there.
.TP
\fBCREDENTIALS_DIRECTORY\fR
Set by systemd for \fBLoadCredential=\fR; the key is read from its \fIautorender\-api\-key\fR.
.TP
\fBDBUS_SESSION_BUS_ADDRESS\fR
The session bus where the Secret Service answers, with \fBapi_key_source = "keyring"\fR
(Linux); the key is the entry with service \fIautorender\-sync\fR and account \fBkeyring_account\fR.
.TP
\fBAUTORENDER_SYNC_CONFIG\fR
The config file, when \fB\-\-config\fR is not given.
.TP
\fBAUTORENDER_SYNC_LOG\fR
A log filter (tracing EnvFilter syntax, e.g. \fIautorender_sync=debug\fR).
.TP
\fBNO_COLOR\fR
When set and not empty, no colour in logs (as \fB\-\-color never\fR).
.TP
\fBAUTORENDER_PATH\fR, \fBAUTORENDER_FILE_NO\fR, \fBAUTORENDER_SET\fR, ...
Given to the programs a watch's \fBon_uploaded\fR and \fBon_set_complete\fR run
(no shell; the API key's variable withheld); the README lists them all.
"#;

const SECURITY: &str = r#".SH SECURITY
Watched folders are often shared. Symbolic links are never followed below a
watched root, at any step of a path: files are opened relative to a handle on
the root (\fBopenat2\fR with \fBRESOLVE_BENEATH\fR and
\fBRESOLVE_NO_SYMLINKS\fR), non\-blocking, and only regular files are read.
\fBafter_upload\fR deletes or moves a name only while it is still the file
that was uploaded. The state dir is created mode 0700 and its files 0600; one
that other users can write, or that another user owns, is refused. Names are
shown with control characters and bidi overrides escaped (\fB\\u{1b}\fR);
\fB\-\-json\fR keeps them exact.
"#;

const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success.
.TP
\fB1\fR
Some work failed (a file could not be uploaded, \fBverify\fR found files missing,
\fBretry\fR was given a path holding no failed file).
.TP
\fB2\fR
Usage or config error (every config problem is listed with its key and line).
.TP
\fB3\fR
The API key was rejected (401/403).
.TP
\fB130\fR
\fBupload\fR was stopped by Ctrl\-C (run it again to resume), or a second stop
signal ended \fBrun\fR at once.
"#;

/// Text as a roff literal block line: no escapes, no control lines.
fn literal(line: &str) -> String {
    let line = line.replace('\\', "\\e");
    if line.starts_with('.') || line.starts_with('\'') {
        format!("\\&{line}")
    } else {
        line
    }
}

/// The reference config (what `init` writes), as the CONFIGURATION section.
fn configuration() -> String {
    let mut out = String::from(
        ".SH CONFIGURATION\nEvery key, its default and meaning: the commented starter config that \
         \\fBinit\\fR writes.\n.PP\n.nf\n.ft CR\n",
    );
    for line in EXAMPLE_CONFIG.lines() {
        out.push_str(&literal(line));
        out.push('\n');
    }
    out.push_str(".ft R\n.fi\n");
    out
}

/// One page: clap's sections, then ours.
fn page(cmd: &clap::Command, top: bool) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out)?;
    }
    // The top page's closing help (symlinks, exit codes) is said in full
    // by SECURITY and EXIT STATUS below; a subcommand's is its own.
    if !top && (cmd.get_after_help().is_some() || cmd.get_after_long_help().is_some()) {
        man.render_extra_section(&mut out)?;
    }
    if top {
        out.write_all(FILES.as_bytes())?;
        out.write_all(ENVIRONMENT.as_bytes())?;
        out.write_all(SECURITY.as_bytes())?;
        out.write_all(EXIT_STATUS.as_bytes())?;
        out.write_all(configuration().as_bytes())?;
    } else {
        out.write_all(EXIT_STATUS.as_bytes())?;
        out.write_all(b".SH \"SEE ALSO\"\n\\fBautorender\\-sync\\fR(1)\n")?;
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    Ok(out)
}

/// Every page: (file name, roff), the main page first.
pub fn pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    fn walk(cmd: &clap::Command, top: bool, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        let name = cmd
            .get_display_name()
            .unwrap_or_else(|| cmd.get_name())
            .to_string();
        out.push((format!("{name}.1"), page(cmd, top)?));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, false, out)?;
        }
        Ok(())
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, true, &mut out)?;
    Ok(out)
}

/// `man`: the main page on stdout, or with `out_dir` every page written there.
pub fn run(out_dir: Option<&Path>) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::Failed(format!("cannot write the man pages: {e}"));
    let pages = pages().map_err(fail)?;
    match out_dir {
        None => super::write_stdout(&pages[0].1),
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(fail)?;
            for (name, text) in &pages {
                std::fs::write(dir.join(name), text).map_err(fail)?;
            }
            outln!("wrote {} man pages to {}", pages.len(), dir.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_the_main_page_names_is_generated() {
        let pages = pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"autorender-sync.1"));
        assert!(names.contains(&"autorender-sync-run.1"));
        assert!(names.contains(&"autorender-sync-autostart-install.1"));
        for (name, text) in &pages {
            let text = String::from_utf8_lossy(text);
            // References look like `autorender\-sync\-run(1)` in roff.
            for r in text.split("autorender\\-sync\\-").skip(1) {
                let end = r
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '-' || c == '\\'))
                    .unwrap_or(r.len());
                if !r[end..].starts_with("(1)") {
                    continue;
                }
                let page = format!("autorender-sync-{}.1", r[..end].replace("\\-", "-"));
                assert!(
                    names.contains(&page.as_str()),
                    "{name} refers to {page}, which is not generated"
                );
            }
        }
        let main = String::from_utf8_lossy(&pages[0].1);
        for section in [
            ".SH FILES",
            ".SH ENVIRONMENT",
            ".SH \"EXIT STATUS\"",
            ".SH CONFIGURATION",
        ] {
            assert!(main.contains(section), "{section}");
        }
        assert!(!main.contains(".SH EXTRA"), "the exit codes are said once");
        assert_eq!(main.matches(".SH \"EXIT STATUS\"").count(), 1);
        assert!(main.contains("concurrent_parts"), "the config keys are listed");
    }

    #[test]
    fn literal_lines_cannot_become_roff_requests() {
        assert_eq!(literal(".hidden"), "\\&.hidden");
        assert_eq!(literal("a\\b"), "a\\eb");
    }
}
