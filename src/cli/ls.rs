//! `ls [REMOTE]`: what a workspace folder holds, as rclone's `ls`/`lsl`
//! show a remote: its subfolders, then each file's size, creation time,
//! file number and name. Reads only; `--json` for machines.

use std::process::ExitCode;

use clap::Parser;
use serde_json::json;

use super::{Cli, CliError, CliResult};
use crate::control::status::{json_time, local_time};

#[derive(Debug, Parser)]
pub struct Args {
    /// The workspace folder, e.g. uploads/renders [default: the workspace root]
    #[arg(value_name = "REMOTE", default_value = "")]
    pub folder: String,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let settings = super::load_settings(cli)?;
    let folder = crate::config::normalise_remote_folder(&args.folder)
        .map_err(|e| CliError::Usage(format!("REMOTE {:?}: {e}", args.folder)))?;
    let (uploader, _) = crate::upload::Uploader::connect(&settings).map_err(CliError::Usage)?;
    let Some((folders, mut files)) = uploader
        .workspace
        .ls(&folder)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?
    else {
        return Err(CliError::Usage(format!(
            "the workspace has no folder \"{}\"; `autorender-sync ls` lists the root",
            crate::text::shown(&folder)
        )));
    };
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let mut names: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    if args.json {
        super::output::print_json(&json!({
            "folder": folder,
            "folders": names,
            "files": files.iter().map(|f| json!({
                "name": f.name,
                "size": f.size,
                "file_no": f.file_no,
                "created": json_time(f.created_at_ms),
                "created_ms": f.created_at_ms,
                "url": f.url,
                "sha256": f.sha256,
            })).collect::<Vec<_>>(),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    for n in &names {
        outln!("{:>10}  {:<25}  {:<10}  {}/", "-", "", "", crate::text::shown(n));
    }
    for f in &files {
        outln!(
            "{:>10}  {:<25}  {:<10}  {}",
            f.size.map_or_else(|| "?".to_string(), crate::units::format_bytes),
            f.created_at_ms.map(local_time).unwrap_or_default(),
            crate::text::shown(&f.file_no),
            crate::text::shown(&f.name)
        );
    }
    if names.is_empty() && files.is_empty() && !cli.quiet {
        eprintln!(
            "{} is empty",
            if folder.is_empty() {
                "the workspace root"
            } else {
                &folder
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
