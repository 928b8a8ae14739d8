//! `release SET`: let a held upload set go now, as it is, without its
//! trigger, its quiet time or the frames it misses (files still being
//! written are still waited for). Safe while an agent runs: it judges the
//! set again at its next heartbeat.
//!
//! `release --deletes FOLDER`: the remote deletes of a watched folder
//! (`mirror_deletes`) waiting now go beyond the `max_delete` brake.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Cli, CliError, CliResult};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The set's folder (e.g. renders/sh010); with --deletes, the watched folder
    #[arg(value_name = "SET", required = true)]
    pub sets: Vec<PathBuf>,
    /// Let the remote deletes waiting now in these watched folders go
    /// beyond max_delete (mirror_deletes); each still waits out delete_after
    #[arg(long)]
    pub deletes: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let settings = super::load_settings(cli)?;
    let journal = super::open_journal(&settings)?;
    if args.deletes {
        return release_deletes(&settings, &journal, args).await;
    }
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

async fn release_deletes(
    settings: &crate::config::Settings,
    journal: &crate::journal::Journal,
    args: &Args,
) -> CliResult {
    let mut missing = 0;
    for path in super::absolute_paths(&args.sets) {
        let shown = crate::text::path(&path);
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        let Some(w) = settings
            .watches
            .iter()
            .find(|w| w.path == canonical && w.mirror_deletes.is_some())
        else {
            missing += 1;
            eprintln!(
                "error: {shown} is not a watched folder with mirror_deletes = true (name the [[watch]] path itself)"
            );
            continue;
        };
        let waiting = journal
            .release_deletes(w.key(), crate::clock::system_ms())
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        outln!(
            "released the deletes of {shown}: {waiting} remote cop{} waiting go beyond max_delete (each after \
             delete_after); deletes found from now on are counted again",
            if waiting == 1 { "y" } else { "ies" }
        );
    }
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
