//! `pause`, `resume`, `reload` and `dashboard`: requests to the running
//! agent through its control API, found by `<state_dir>/control.json` and
//! authorised by `control.token` beside it.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Cli, CliError, CliResult};
use crate::control::{INFO_FILE, TOKEN_FILE};

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// Resume by itself after this long (e.g. "30m", "2h"); without it, until `resume`
    #[arg(long = "for", value_name = "DURATION")]
    pub for_: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Only print the address; do not open a browser
    #[arg(long)]
    pub no_open: bool,
}

/// The running agent's control API: its base URL and token.
struct Agent {
    url: String,
    token: String,
    client: reqwest::Client,
    state_dir: std::path::PathBuf,
}

fn find(cli: &Cli) -> Result<Agent, CliError> {
    let settings = super::load_settings(cli)?;
    let dir = &settings.agent.state_dir;
    // An agent that is starting holds its lock a moment before it writes
    // control.json: give it that moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !dir.join(INFO_FILE).exists()
        && crate::journal::agent_running(dir)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let info = match crate::private::read_text(&dir.join(INFO_FILE)) {
        Ok(text) => text,
        Err(_) if crate::journal::agent_running(dir) => {
            return Err(CliError::Failed(format!(
                "the agent on {} runs without its control API ([control] listen = \"off\", or its port could \
                 not be opened: see its log); turn it on and restart the agent",
                dir.display()
            )));
        }
        Err(_) => {
            return Err(CliError::Failed(format!(
                "no agent is running on {}; start it with `autorender-sync run` (or `autorender-sync autostart \
                 install`), or name its config with --config",
                dir.display()
            )));
        }
    };
    let info: Value = serde_json::from_str(&info).map_err(|e| {
        CliError::Failed(format!(
            "{} is not what the agent writes ({e}); restart the agent to rewrite it",
            dir.join(INFO_FILE).display()
        ))
    })?;
    let url = info["url"]
        .as_str()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    let token = crate::private::read_text(&dir.join(TOKEN_FILE))
        .map_err(|e| {
            CliError::Failed(format!(
                "cannot read the control token {} ({e}); run this as the user the agent runs as",
                dir.join(TOKEN_FILE).display()
            ))
        })?
        .trim()
        .to_string();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    Ok(Agent {
        url,
        token,
        client,
        state_dir: dir.clone(),
    })
}

impl Agent {
    /// POSTs `body` to `path`; the answer's JSON, or its error as a CliError.
    async fn post(&self, path: &str, body: Value) -> Result<(u16, Value), CliError> {
        let answer = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                CliError::Failed(format!(
                    "no agent answers at {} ({}); is it running? (a stale control.json is left only by a crash)",
                    self.url,
                    if e.is_connect() { "connection refused" } else { "no answer" }
                ))
            })?;
        let status = answer.status().as_u16();
        let v: Value = answer.json().await.unwrap_or(Value::Null);
        if status == 401 {
            return Err(CliError::Failed(
                "the agent refused the control token; it was restarted meanwhile, so try again".into(),
            ));
        }
        Ok((status, v))
    }
}

fn failed(v: &Value) -> CliError {
    CliError::Failed(
        v["error"]
            .as_str()
            .unwrap_or("the agent refused the request")
            .to_string(),
    )
}

pub async fn pause(cli: &Cli, args: &PauseArgs) -> CliResult {
    if let Some(d) = &args.for_ {
        match crate::units::parse_duration(d) {
            Ok(d) if !d.is_zero() => {}
            Ok(_) => return Err(CliError::Usage("--for must be longer than 0s".into())),
            // The message already says the form to write (and, for "90",
            // suggests "90s"): said once.
            Err(e) => return Err(CliError::Usage(format!("--for {d}: {e}"))),
        }
    }
    let agent = find(cli)?;
    let body = match &args.for_ {
        Some(d) => json!({ "for": d }),
        None => json!({}),
    };
    let (status, v) = agent.post("/api/pause", body).await?;
    if status != 200 {
        return Err(failed(&v));
    }
    // Said in this machine's time (the API answers in UTC).
    let until = v["until"].as_str().map_or_else(
        || "until `autorender-sync resume`".to_string(),
        |u| match u.parse::<jiff::Timestamp>() {
            Ok(t) => format!("until {}", crate::control::status::local_time(t.as_millisecond())),
            Err(_) => format!("until {u}"),
        },
    );
    outln!(
        "uploads paused {until}; uploads in flight stop after the parts they are sending (recorded, they resume)"
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn resume(cli: &Cli) -> CliResult {
    let agent = find(cli)?;
    let (status, v) = agent.post("/api/resume", json!({})).await?;
    if status != 200 {
        return Err(failed(&v));
    }
    if v["was_paused"].as_bool() == Some(true) {
        outln!("uploads resumed");
    } else {
        outln!("uploads were not paused");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn reload(cli: &Cli) -> CliResult {
    // A config this command cannot read is one the agent would refuse too:
    // its problems are listed here and the agent is left as it is.
    if let Err(CliError::Config(e)) = super::load_settings(cli) {
        return Err(CliError::Usage(format!(
            "{e}\nthe running agent was not asked to reload; it goes on with the config it has"
        )));
    }
    let agent = find(cli)?;
    let (status, v) = agent.post("/api/reload", json!({})).await?;
    match status {
        200 => {
            let r = &v["report"];
            let list = |k: &str| {
                r[k].as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            };
            outln!("config reloaded: {} folder(s) watched", r["roots"]);
            match r["changed"].as_array() {
                Some(c) if !c.is_empty() => {
                    for line in c.iter().filter_map(Value::as_str) {
                        outln!("  changed: {}", crate::text::shown(line));
                    }
                }
                _ => outln!("  no setting changed"),
            }
            if !list("roots_added").is_empty() {
                outln!("  added: {}", list("roots_added"));
            }
            if !list("roots_removed").is_empty() {
                outln!("  removed: {}", list("roots_removed"));
            }
            Ok(ExitCode::SUCCESS)
        }
        422 => {
            let problems: Vec<String> = v["problems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|p| format!("  - {p}"))
                .collect();
            Err(CliError::Usage(format!(
                "the agent refused the new config and goes on with the one it has:\n{}",
                problems.join("\n")
            )))
        }
        _ => Err(failed(&v)),
    }
}

pub async fn dashboard(cli: &Cli, args: &DashboardArgs) -> CliResult {
    let agent = find(cli)?;
    let (status, v) = agent.post("/api/login", json!({})).await?;
    if status != 200 {
        return Err(failed(&v));
    }
    let url = v["url"].as_str().unwrap_or_default().to_string();
    outln!("{url}");
    outln!("(a one-time login link, good for 2 minutes; run `autorender-sync dashboard` again for another)");
    if !args.no_open && desktop_session() {
        // The browser is handed a file that redirects to the link, never the
        // link itself: any local user can read every process's command line
        // (/proc/*/cmdline), and the code in it would log them in.
        match login_redirect(&agent.state_dir, &url) {
            Ok(file) => open_browser(&file),
            Err(e) => {
                outln!("(could not prepare the browser's login page: {e}; open the link above yourself)")
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A page, readable by this user only, that sends the browser on to `url`.
fn login_redirect(state_dir: &std::path::Path, url: &str) -> std::io::Result<String> {
    let path = state_dir.join("dashboard-login.html");
    let escaped = url
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    let page = format!(
        "<!doctype html><meta charset=utf-8><meta name=referrer content=no-referrer>\
         <meta http-equiv=refresh content=\"0;url={escaped}\"><title>autorender-sync</title>\
         <a href=\"{escaped}\">Open the dashboard</a>\n"
    );
    crate::private::write(&path, page.as_bytes())?;
    Ok(format!("file://{}", path.display()))
}

/// Is there a desktop to open a browser on?
fn desktop_session() -> bool {
    if cfg!(any(target_os = "macos", windows)) {
        return true;
    }
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

fn open_browser(url: &str) {
    let mut cmd = if cfg!(target_os = "macos") {
        std::process::Command::new("open")
    } else if cfg!(windows) {
        let mut c = std::process::Command::new("cmd");
        c.args(["/C", "start", ""]);
        c
    } else {
        std::process::Command::new("xdg-open")
    };
    let started = cmd
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = started {
        tracing::debug!("could not open a browser: {e}");
    }
}
