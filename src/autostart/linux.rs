//! Linux: a systemd user unit in `$XDG_CONFIG_HOME/systemd/user/` (enabled
//! and started when a user systemd is reachable), or, where systemd is
//! absent, an XDG autostart `.desktop` file in `$XDG_CONFIG_HOME/autostart/`.

use std::path::PathBuf;

use super::{Context, FileToWrite, Installed, Plan, remove_ours};

pub const UNIT_NAME: &str = "autorender-sync.service";
pub const DESKTOP_NAME: &str = "autorender-sync.desktop";
const UNIT_TEMPLATE: &str = include_str!("../../packaging/autorender-sync.service");
const DESKTOP_TEMPLATE: &str = include_str!("../../packaging/autorender-sync.desktop");

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Systemd,
    Xdg,
}

pub fn unit_path(ctx: &Context) -> PathBuf {
    ctx.xdg_config.join("systemd/user").join(UNIT_NAME)
}

pub fn desktop_path(ctx: &Context) -> PathBuf {
    ctx.xdg_config.join("autostart").join(DESKTOP_NAME)
}

/// Quotes one argument for systemd's `ExecStart=`: double quotes with
/// C-style escapes, `%` doubled (specifiers) and `$` doubled (variables).
pub fn systemd_quote(arg: &str) -> String {
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Quotes one argument for a `.desktop` `Exec=` key (Desktop Entry spec):
/// inside double quotes, `"` `` ` `` `$` `\` get a backslash, and since the
/// string-value escape rule applies first, each backslash is then doubled;
/// `%` is doubled (field codes).
pub fn desktop_quote(arg: &str) -> String {
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '"' | '`' | '$' => {
                out.push_str("\\\\");
                out.push(c);
            }
            '\\' => out.push_str("\\\\\\\\"),
            '%' => out.push_str("%%"),
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn unit_text(argv: &[String]) -> String {
    let exec = argv
        .iter()
        .map(|a| systemd_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    UNIT_TEMPLATE.replace("{{EXEC_START}}", &exec)
}

pub fn desktop_text(argv: &[String]) -> String {
    let exec = argv
        .iter()
        .map(|a| desktop_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    DESKTOP_TEMPLATE.replace("{{EXEC}}", &exec)
}

/// Is `systemctl --user` talking to a running user manager?
pub fn user_systemd_reachable() -> bool {
    std::process::Command::new("systemctl")
        .args(["--user", "show-environment"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn systemd_installed() -> bool {
    ["/usr/bin/systemctl", "/bin/systemctl"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
}

/// The agent's log under an XDG autostart entry: `$XDG_STATE_HOME`
/// (default `~/.local/state`)`/autorender-sync/agent.log`.
pub fn xdg_log_path(ctx: &Context) -> std::path::PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| ctx.home.join(".local/state"))
        .join("autorender-sync/agent.log")
}

/// Picks the method: asked for, else systemd where it exists, else XDG.
pub fn choose(method: Option<Method>) -> Method {
    method.unwrap_or(if systemd_installed() {
        Method::Systemd
    } else {
        Method::Xdg
    })
}

pub fn plan(ctx: &Context, method: Method, reachable: bool) -> Plan {
    let argv = ctx.argv();
    match method {
        Method::Systemd => {
            let mut plan = Plan {
                method: "systemd user unit".into(),
                files: vec![FileToWrite {
                    path: unit_path(ctx),
                    contents: unit_text(&argv),
                }],
                ..Plan::default()
            };
            if reachable {
                plan.commands = vec![
                    vec!["systemctl".into(), "--user".into(), "daemon-reload".into()],
                    vec![
                        "systemctl".into(),
                        "--user".into(),
                        "enable".into(),
                        "--now".into(),
                        UNIT_NAME.into(),
                    ],
                ];
            } else {
                plan.notes.push(format!(
                    "no user systemd is reachable from here; after logging in run `systemctl --user daemon-reload && systemctl --user enable --now {UNIT_NAME}`"
                ));
            }
            plan.notes.push(
                "on a headless render node, run `loginctl enable-linger $USER` so the agent starts at boot and keeps running after logout".into(),
            );
            plan
        }
        Method::Xdg => Plan {
            method: "XDG autostart entry".into(),
            files: vec![FileToWrite {
                path: desktop_path(ctx),
                // No journald behind a desktop entry: the agent logs to a file.
                contents: desktop_text(&ctx.argv_logging_to(&xdg_log_path(ctx))),
            }],
            commands: Vec::new(),
            notes: vec!["the agent starts at your next graphical login".into()],
        },
    }
}

/// Undoes install: stops and disables the unit (if reachable), removes our files.
pub fn uninstall(ctx: &Context, reachable: bool) -> Result<Vec<String>, super::AutostartError> {
    let mut done = Vec::new();
    if unit_path(ctx).exists() && reachable {
        let warnings = super::run_commands(&[vec![
            "systemctl".into(),
            "--user".into(),
            "disable".into(),
            "--now".into(),
            UNIT_NAME.into(),
        ]]);
        done.extend(warnings);
    }
    for p in [unit_path(ctx), desktop_path(ctx)] {
        if remove_ours(&p)? {
            done.push(format!("removed {}", p.display()));
        }
    }
    if reachable {
        done.extend(super::run_commands(&[vec![
            "systemctl".into(),
            "--user".into(),
            "daemon-reload".into(),
        ]]));
    }
    Ok(done)
}

pub fn installed(ctx: &Context) -> Vec<Installed> {
    let mut out = Vec::new();
    if unit_path(ctx).exists() {
        out.push(Installed {
            method: "systemd user unit".into(),
            path: unit_path(ctx),
        });
    }
    if desktop_path(ctx).exists() {
        out.push(Installed {
            method: "XDG autostart entry".into(),
            path: desktop_path(ctx),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(systemd_quote("/a b/c"), "\"/a b/c\"");
        assert_eq!(systemd_quote("50%$x\"y\\"), "\"50%%$$x\\\"y\\\\\"");
        assert_eq!(desktop_quote("/a b/c"), "\"/a b/c\"");
        assert_eq!(desktop_quote("a\"$`b%"), "\"a\\\\\"\\\\$\\\\`b%%\"");
    }
}
