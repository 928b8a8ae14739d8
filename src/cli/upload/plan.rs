//! What `upload` sends: the named files and folders expanded, each one's
//! remote folder and rules, the dry run, and which failures are tried again.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

use crate::cli::CliResult;
use crate::config::Subfolders;
use crate::mapping;
use crate::upload::{Job, UploadError};

/// What to send: each file named, and each file found under each folder
/// named, with its path relative to what was named (sub-paths are kept
/// under --folder). A path that is neither is kept so it is reported.
pub(super) fn expand(settings: &crate::config::Settings, paths: &[PathBuf]) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for path in paths {
        if !path.is_dir() {
            let rel = path.file_name().map(PathBuf::from).unwrap_or_default();
            out.push((path.clone(), rel));
            continue;
        }
        let Some(w) = folder_rules(settings, path) else {
            out.push((path.clone(), PathBuf::new()));
            continue;
        };
        let start = w.path.clone();
        let before = out.len();
        crate::scan::walk_folders(&w, &start, |folder| {
            out.extend(folder.files.into_iter().map(|f| (f.path, PathBuf::from(f.rel))));
            true
        });
        if out.len() == before {
            tracing::warn!("{}: no files to upload in this folder", path.display());
        }
    }
    out
}

/// The rules a folder's files are chosen by: a watched root's own (include,
/// exclude, recursive), else every file below it but the built-in
/// temp-file excludes.
pub(super) fn folder_rules(
    settings: &crate::config::Settings,
    dir: &Path,
) -> Option<crate::config::WatchSettings> {
    let dir = dir.canonicalize().ok()?;
    if let Some(w) = settings.watches.iter().find(|w| w.path == dir) {
        return Some(w.clone());
    }
    let text = format!(
        "[[watch]]\npath = {}\nremote_folder = \"upload\"\n",
        toml::Value::String(dir.to_string_lossy().into_owned())
    );
    crate::config::Settings::parse(&text, "(upload)", None)
        .ok()
        .and_then(|s| s.watches.into_iter().next())
}

pub(super) fn dry_run(items: &[(PathBuf, PathBuf)], folder: &str, json: bool) -> CliResult {
    let mut rows = Vec::new();
    for (path, rel) in items {
        let row = match prepare(path, rel, folder, &[]) {
            Ok(job) => {
                let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                json!({
                    "local_path": path,
                    "would_upload": true,
                    "remote_folder": job.folder,
                    "remote_name": job.file_name,
                    "remote_path": mapping::remote_path(&job.folder, &job.file_name),
                    "size": size,
                })
            }
            Err(e) => json!({"local_path": path, "would_upload": false, "error": e}),
        };
        if !json {
            match row["would_upload"].as_bool() {
                Some(true) => outln!(
                    "would upload {} → {} ({})",
                    path.display(),
                    row["remote_path"].as_str().unwrap_or(""),
                    crate::units::format_bytes(row["size"].as_u64().unwrap_or(0))
                ),
                _ => eprintln!(
                    "error: {}",
                    crate::text::shown(&format!(
                        "{}: {}",
                        path.display(),
                        row["error"].as_str().unwrap_or("")
                    ))
                ),
            }
        }
        rows.push(row);
    }
    if json {
        crate::cli::output::print_json(&serde_json::Value::Array(rows.clone()));
    }
    let bad = rows.iter().any(|r| r["would_upload"] == false);
    Ok(if bad { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The job for `path`, sent to `folder` plus the folders of `rel` (its path
/// below the folder named on the command line; just its name for a file).
pub(super) fn prepare(path: &Path, rel: &Path, folder: &str, tags: &[String]) -> Result<Job, String> {
    // Anchored at the folder named on the command line (a named file's own
    // folder): nothing below it is reached through a symlink.
    let root = path
        .ancestors()
        .nth(rel.components().count())
        .filter(|r| !r.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    use crate::anchor::Kind;
    match crate::anchor::stat(&root, path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        _ => e.to_string(),
    })? {
        Kind::File(_) => {}
        Kind::Dir => return Err("a folder that cannot be read".into()),
        Kind::Symlink => return Err(crate::anchor::Refusal::Symlink.to_string()),
        Kind::Other => return Err(crate::anchor::Refusal::NotAFile.to_string()),
    }
    let remote = mapping::map(rel, folder, Subfolders::Preserve).map_err(|e| e.to_string())?;
    Ok(Job {
        root,
        settled: None,
        path: path.to_path_buf(),
        file_name: remote.name,
        folder: remote.folder,
        format: remote.format,
        tags: tags.to_vec(),
        metadata: serde_json::Map::new(),
        random_prefix: false,
        adopt: false,
        hold: Default::default(),
        known_sha256: None,
        in_parts: false,
        renames: false,
    })
}

/// Whether `upload` tries a file again: a transient answer (not a failed
/// connection: that was retried already, and a wrong endpoint should fail
/// in seconds) or an upload the service stored altered.
pub(super) fn again(e: &UploadError) -> bool {
    match e {
        UploadError::Api(a) => a.is_transient() && !a.never_sent(),
        UploadError::Verify(_) | UploadError::Unresolved { .. } => true,
        _ => false,
    }
}
