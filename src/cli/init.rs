//! `init`: write the commented starter config (the same text as
//! `example-config.toml`), never clobbering an existing one without `--force`.

use std::process::ExitCode;

use super::{Cli, CliError, CliResult};
use crate::config::{EXAMPLE_CONFIG, resolve_config_path};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Overwrite an existing config file
    #[arg(long)]
    pub force: bool,
}

pub fn run(cli: &Cli, args: &Args) -> CliResult {
    let (path, _) = resolve_config_path(cli.config.as_deref()).map_err(CliError::Usage)?;
    if path.exists() && !args.force {
        return Err(CliError::Usage(format!(
            "{} already exists; edit it, or pass --force to replace it with the starter config",
            path.display()
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(&path, EXAMPLE_CONFIG)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
    outln!("Wrote a starter config to {}", path.display());
    outln!("Next: add a [[watch]] block, export AUTORENDER_API_KEY=…, then run `autorender-sync check`.");
    Ok(ExitCode::SUCCESS)
}
