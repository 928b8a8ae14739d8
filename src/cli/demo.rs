//! `demo`: no account needed. Starts the built-in emulator on a free loopback
//! port and an agent watching `<dir>/drop`, and says where uploads land
//! (`<dir>/store/uploads/demo`). Ctrl-C stops both.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::{CliError, CliResult};
use crate::agent::RunOptions;
use crate::config::Settings;
use crate::emulator;
use crate::journal::{self, Journal};
use crate::secrets::ApiKey;

const DEMO_KEY: &str = "demo-key";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Working folder for drop/, store/ and the demo's journal [default: a new temp folder]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub async fn run(args: &Args) -> CliResult {
    let (dir, _temp) = match &args.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("autorender-demo-")
                .tempdir()
                .map_err(|e| CliError::Failed(format!("cannot create a temp folder: {e}")))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let fail =
        |e: std::io::Error| CliError::Usage(format!("cannot set up the demo in {}: {e}", dir.display()));
    for sub in ["drop", "store", "state"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(fail)?;
    }
    let dir = dir.canonicalize().map_err(fail)?;
    let (drop, store) = (dir.join("drop"), dir.join("store"));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(fail)?;
    let addr = listener.local_addr().map_err(fail)?;
    let token = CancellationToken::new();
    let server = tokio::spawn(emulator::serve(
        emulator::Options::new(DEMO_KEY, store.clone()),
        listener,
        token.clone().cancelled_owned(),
    ));

    let config_path = dir.join("config.toml");
    let text = format!(
        "# The demo's config: the built-in emulator and one watched folder.\n\
         [api]\nendpoint = \"http://{addr}\"\n\n[agent]\nstate_dir = \"{}\"\nsettle = \"1s\"\n\n\
         [[watch]]\npath = \"{}\"\nremote_folder = \"uploads/demo\"\n",
        dir.join("state").display(),
        drop.display()
    );
    std::fs::write(&config_path, &text).map_err(fail)?;
    let settings = Settings::parse(&text, &config_path.display().to_string(), Some(&config_path))?;
    let uploader = super::uploader(&settings, ApiKey::new(DEMO_KEY))?;
    let _lock = journal::lock_agent(&settings.agent.state_dir).map_err(super::run::journal_error)?;
    let journal = Journal::open(&settings.agent.state_dir).map_err(super::run::journal_error)?;

    outln!("autorender-sync demo: a local AutoRender emulator is running at http://{addr}");
    outln!("Copy files into   {}", drop.display());
    outln!("They appear in    {}", store.join("uploads/demo").display());
    outln!("(config used: {}; press Ctrl-C to stop)", config_path.display());
    // Other commands read the default config unless told: name this one.
    outln!(
        "Watch it from another terminal: autorender-sync --config {} status",
        crate::text::shown(&config_path.display().to_string())
    );
    if _temp.is_some() {
        outln!("This folder is temporary and is removed when the demo stops; use --dir to keep it.");
    }

    tokio::spawn(super::signals::stop_on_signals(
        super::signals::StopSignals::install(),
        token.clone(),
        None,
    ));
    let report = crate::app::run(
        settings,
        uploader,
        journal,
        RunOptions::default(),
        token.clone(),
        None,
    )
    .await
    .map_err(super::run::agent_error)?;
    token.cancel();
    let _ = server.await;
    outln!("demo stopped: {} file(s) uploaded", report.uploaded);
    Ok(ExitCode::SUCCESS)
}
