//! `release SET`: let a held upload set go now, as it is, without its
//! trigger, its quiet time or the frames it misses (files still being
//! written are still waited for). Safe while an agent runs: it judges the
//! set again at its next heartbeat.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Cli, CliError, CliResult};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The set's folder (e.g. renders/sh010)
    #[arg(value_name = "SET", required = true)]
    pub sets: Vec<PathBuf>,
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let settings = super::load_settings(cli)?;
    let journal = super::open_journal(&settings)?;
    let mut missing = 0;
    for path in super::absolute_paths(&args.sets) {
        let shown = crate::text::path(&path);
        // The watched root with sets that holds it, and the set's name there.
        let place = settings.watches.iter().find_map(|w| w.set_at(&path));
        let released = match place {
            Some((root, set_rel)) => journal
                .release_set(root, set_rel, crate::clock::system_ms())
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?,
            None => false,
        };
        if released {
            outln!("released {shown}: it goes as it is (files still being written are waited for)");
        } else {
            missing += 1;
            eprintln!(
                "error: {shown}: no set waits there (`autorender-sync status` lists the sets and why each waits)"
            );
        }
    }
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
