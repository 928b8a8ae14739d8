//! macOS: a LaunchAgent plist in `~/Library/LaunchAgents/`, loaded with
//! `launchctl bootstrap gui/<uid>`; logs go to `~/Library/Logs/autorender-sync/`.

use std::path::PathBuf;

use super::{Context, FileToWrite, Installed, Plan, remove_ours};

pub const LABEL: &str = "io.autorender.sync";
const TEMPLATE: &str = include_str!("../../packaging/io.autorender.sync.plist");

pub fn plist_path(ctx: &Context) -> PathBuf {
    ctx.home
        .join("Library/LaunchAgents")
        .join(format!("{LABEL}.plist"))
}

/// The agent's log (`--log-file`, rotated by size).
pub fn log_path(ctx: &Context) -> PathBuf {
    ctx.home.join("Library/Logs/autorender-sync/agent.log")
}

/// What launchd itself captures (only what is written before logging
/// starts, or a crash): apart, so rotating the log never strands it.
pub fn stderr_path(ctx: &Context) -> PathBuf {
    ctx.home.join("Library/Logs/autorender-sync/agent.stderr.log")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn plist_text(ctx: &Context) -> String {
    let args = ctx
        .argv_logging_to(&log_path(ctx))
        .iter()
        .map(|a| format!("\t\t<string>{}</string>", xml_escape(a)))
        .collect::<Vec<_>>()
        .join("\n");
    TEMPLATE
        .replace("{{PROGRAM_ARGUMENTS}}", &args)
        .replace("{{LOG}}", &xml_escape(&stderr_path(ctx).to_string_lossy()))
}

pub fn plan(ctx: &Context, uid: &str) -> Plan {
    let plist = plist_path(ctx);
    Plan {
        method: "LaunchAgent".into(),
        files: vec![FileToWrite {
            path: plist.clone(),
            contents: plist_text(ctx),
        }],
        commands: vec![
            // launchd does not create the log folder itself.
            vec![
                "mkdir".into(),
                "-p".into(),
                log_path(ctx)
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ],
            // Unload an older copy first so a re-install picks up changes (failure is fine).
            vec!["launchctl".into(), "bootout".into(), format!("gui/{uid}/{LABEL}")],
            vec![
                "launchctl".into(),
                "bootstrap".into(),
                format!("gui/{uid}"),
                plist.to_string_lossy().into_owned(),
            ],
        ],
        notes: vec![format!("logs: {}", log_path(ctx).display())],
    }
}

pub fn uninstall(ctx: &Context, uid: &str) -> Result<Vec<String>, super::AutostartError> {
    let mut done = super::run_commands(&[vec![
        "launchctl".into(),
        "bootout".into(),
        format!("gui/{uid}/{LABEL}"),
    ]]);
    if remove_ours(&plist_path(ctx))? {
        done.push(format!("removed {}", plist_path(ctx).display()));
    }
    Ok(done)
}

pub fn installed(ctx: &Context) -> Vec<Installed> {
    let p = plist_path(ctx);
    if p.exists() {
        vec![Installed {
            method: "LaunchAgent".into(),
            path: p,
        }]
    } else {
        Vec::new()
    }
}
