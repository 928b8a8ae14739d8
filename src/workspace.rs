//! Asking the workspace what it holds (SPEC §1.5, §4 "Reconcile, never
//! guess" and "Adoption"): find a folder by path, list its files page by
//! page, and filter client-side (the service's `name`/`path` filters are
//! "if supported").
//!
//! Invariants:
//! - a folder's listing for adoption is fetched at most once per run and
//!   shared (a folder of 10,000 files costs its pages, not a request per
//!   file); a lookup for reconciliation is always fresh;
//! - a folder that does not exist is never cached as missing for
//!   reconciliation: the upload being reconciled may just have created it;
//! - names are compared after Unicode NFC normalisation (macOS writes NFD).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use unicode_normalization::UnicodeNormalization;

use crate::api::{ApiError, Client, RemoteFile, RemoteFolder};

/// Items asked for per listing page (the service may give fewer).
const PAGE_LIMIT: u64 = 100;
/// The most files one folder's listing is walked through: a listing that
/// goes on past this (a service that never says "last page" and makes up
/// new items) is an error, not a walk to the end of memory.
const MAX_ITEMS: usize = 100_000;
/// The most pages walked, whatever each holds.
const MAX_PAGES: u64 = 10_000;

/// A folder's whole listing, indexed by file number and by NFC name, so
/// each lookup in it costs one hash probe, not a pass over the folder (a
/// folder of 50,000 files asked about once per file would otherwise cost
/// 50,000² name normalisations).
#[derive(Debug, Default)]
pub struct FolderListing {
    files: Vec<RemoteFile>,
    by_no: HashMap<String, usize>,
    by_name: HashMap<String, Vec<usize>>,
}

impl FolderListing {
    fn new(files: Vec<RemoteFile>) -> FolderListing {
        let mut by_no = HashMap::new();
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            by_no.entry(f.file_no.clone()).or_insert(i);
            by_name.entry(nfc(&f.name)).or_default().push(i);
        }
        FolderListing {
            files,
            by_no,
            by_name,
        }
    }

    /// The file with this number, if listed.
    pub fn by_file_no(&self, file_no: &str) -> Option<&RemoteFile> {
        self.by_no.get(file_no).map(|i| &self.files[*i])
    }

    /// The files listed under `name` (compared after NFC), newest first as
    /// the service listed them.
    pub fn named(&self, name: &str) -> impl Iterator<Item = &RemoteFile> {
        self.by_name
            .get(&nfc(name))
            .into_iter()
            .flatten()
            .map(|i| &self.files[*i])
    }
}

type Listing = Arc<FolderListing>;

pub struct Workspace {
    client: Client,
    /// Folder path → folder_no, for folders seen to exist.
    folders: Mutex<HashMap<String, String>>,
    /// Folder path → its whole listing, fetched once (adoption).
    listings: Mutex<HashMap<String, Arc<OnceCell<Listing>>>>,
    /// Held while a folder rename is judged and asked (one at a time).
    pub renames: tokio::sync::Mutex<()>,
    /// Held while a folder not in `folders` is looked up: many uploads
    /// starting at once into one new folder walk to it once, not each.
    walk: tokio::sync::Mutex<()>,
}

fn nfc(s: &str) -> String {
    s.nfc().collect()
}

impl Workspace {
    pub fn new(client: Client) -> Workspace {
        Workspace {
            client,
            folders: Mutex::new(HashMap::new()),
            listings: Mutex::new(HashMap::new()),
            renames: tokio::sync::Mutex::new(()),
            walk: tokio::sync::Mutex::new(()),
        }
    }

    /// Forgets every folder and listing seen (a folder was renamed).
    pub fn forget_folders(&self) {
        self.folders.lock().expect("folders lock").clear();
        self.listings.lock().expect("listings lock").clear();
    }

    /// The folder_no of `folder` (None: no such folder; the root has none).
    pub async fn folder_no(&self, folder: &str) -> Result<Option<String>, ApiError> {
        Ok(match self.lookup(folder).await? {
            Lookup::Found(no) => Some(no),
            _ => None,
        })
    }

    /// The file_no of every file in `folder` and the folders below it (None:
    /// more than `limit`, or no such folder).
    pub async fn files_below(&self, folder: &str, limit: usize) -> Result<Option<Vec<String>>, ApiError> {
        let mut out = Vec::new();
        let mut todo = vec![folder.to_string()];
        while let Some(f) = todo.pop() {
            let Some((folders, files)) = self.ls(&f).await? else {
                return Ok(None);
            };
            out.extend(files.into_iter().map(|x| x.file_no));
            todo.extend(folders.into_iter().map(|sub| format!("{f}/{}", sub.name)));
            if out.len() > limit || todo.len() > limit {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Where `folder` is: the root, a folder_no, or missing; found by
    /// walking down from the root one level at a time.
    async fn lookup(&self, folder: &str) -> Result<Lookup, ApiError> {
        if folder.is_empty() {
            return Ok(Lookup::Root);
        }
        if let Some(no) = self.folders.lock().expect("folders lock").get(folder) {
            return Ok(Lookup::Found(no.clone()));
        }
        let _walking = self.walk.lock().await;
        if let Some(no) = self.folders.lock().expect("folders lock").get(folder) {
            return Ok(Lookup::Found(no.clone()));
        }
        let mut parent: Option<String> = None;
        let mut path = String::new();
        for seg in folder.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(seg);
            let cached = self.folders.lock().expect("folders lock").get(&path).cloned();
            let no = match cached {
                Some(no) => no,
                None => {
                    let list = self.client.list_folders(parent.as_deref()).await?;
                    let want = nfc(seg);
                    match list.into_iter().find(|f| nfc(&f.name) == want) {
                        Some(f) => {
                            self.folders
                                .lock()
                                .expect("folders lock")
                                .insert(path.clone(), f.folder_no.clone());
                            f.folder_no
                        }
                        None => return Ok(Lookup::Missing),
                    }
                }
            };
            parent = Some(no);
        }
        Ok(parent.map(Lookup::Found).unwrap_or(Lookup::Root))
    }

    /// Every file in `folder` whose name passes `name` (sent as the
    /// service's filter too), every page followed, filtered client-side to
    /// the folder itself and to `keep` as each page comes (what is not kept
    /// costs no memory).
    ///
    /// Bounded against a service that never ends a listing: a page with no
    /// file not seen before (a repeated page or cursor) ends it, and more
    /// than [`MAX_ITEMS`] files or [`MAX_PAGES`] pages is an error.
    async fn list(
        &self,
        folder: &str,
        name: Option<&str>,
        keep: impl Fn(&RemoteFile) -> bool,
    ) -> Result<Vec<RemoteFile>, ApiError> {
        use std::hash::BuildHasher;
        let folder_no = match self.lookup(folder).await? {
            Lookup::Missing => return Ok(Vec::new()),
            Lookup::Root => None,
            Lookup::Found(no) => Some(no),
        };
        let mut out = Vec::new();
        // 8 bytes per file seen, not the file: enough to tell a new item.
        let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
        let hasher = std::collections::hash_map::RandomState::new();
        let mut page = 1;
        loop {
            let got = self
                .client
                .list_files(folder_no.as_deref(), name, page, PAGE_LIMIT)
                .await?;
            let n = got.files.len() as u64;
            let mut new = 0usize;
            for f in got.files {
                if !seen.insert(hasher.hash_one(&f.file_no)) {
                    continue;
                }
                new += 1;
                if f.in_folder(folder) && keep(&f) {
                    out.push(f);
                }
            }
            let more = match got.has_next {
                Some(more) => more,
                None => n >= PAGE_LIMIT,
            };
            if !more || n == 0 {
                break;
            }
            if new == 0 {
                tracing::warn!(
                    "the listing of folder \"{}\" repeated page {page} with nothing new; \
                     taking what came before it as the whole folder",
                    crate::text::shown(folder)
                );
                break;
            }
            if seen.len() > MAX_ITEMS || page >= MAX_PAGES {
                return Err(ApiError::Protocol(format!(
                    "the listing of folder \"{}\" went on past {} files in {page} pages without an end; \
                     the service's paging is broken (or the folder is too large to search: \
                     give this watch its own remote folder)",
                    crate::text::shown(folder),
                    seen.len()
                )));
            }
            page += 1;
        }
        Ok(out)
    }

    /// The whole listing of `folder`, fetched once per run and shared.
    pub async fn listing(&self, folder: &str) -> Result<Listing, ApiError> {
        let cell = self
            .listings
            .lock()
            .expect("listings lock")
            .entry(folder.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            self.list(folder, None, |_| true)
                .await
                .map(|files| Arc::new(FolderListing::new(files)))
        })
        .await
        .cloned()
    }

    /// What `folder` holds now: its subfolders and its files (every page).
    /// None: there is no such folder.
    pub async fn ls(&self, folder: &str) -> Result<Option<(Vec<RemoteFolder>, Vec<RemoteFile>)>, ApiError> {
        let folder_no = match self.lookup(folder).await? {
            Lookup::Missing => return Ok(None),
            Lookup::Root => None,
            Lookup::Found(no) => Some(no),
        };
        let folders = self.client.list_folders(folder_no.as_deref()).await?;
        let files = self.list(folder, None, |_| true).await?;
        Ok(Some((folders, files)))
    }

    /// Files named `name` in `folder` now (fresh, not cached), newest first
    /// as the service lists them. With `random_prefix`, names the service
    /// prefixed (`<prefix>_name`) match too.
    pub async fn find(
        &self,
        folder: &str,
        name: &str,
        random_prefix: bool,
    ) -> Result<Vec<RemoteFile>, ApiError> {
        let want = nfc(name);
        let suffix = format!("_{want}");
        self.list(folder, Some(name), |f| {
            let got = nfc(&f.name);
            got == want || (random_prefix && got.ends_with(&suffix))
        })
        .await
    }

    /// Files in the cached listing of `folder` named `name` with `size` bytes.
    pub async fn same_name_and_size(
        &self,
        folder: &str,
        name: &str,
        size: u64,
    ) -> Result<Vec<RemoteFile>, ApiError> {
        Ok(self
            .listing(folder)
            .await?
            .named(name)
            .filter(|f| f.size == Some(size))
            .cloned()
            .collect())
    }
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

enum Lookup {
    Root,
    Found(String),
    Missing,
}

/// How a remote file was shown to hold the same content as a local one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// `metadata.sha256` equals the local sha256.
    Metadata,
    /// The bytes its `url` serves hash to the local sha256.
    UrlBytes,
    /// No hash to compare: it was created after the local file was last
    /// modified (with the same name and size).
    CreatedAfterMtime,
    /// The same file renamed locally (device, inode, size and sha256 of an
    /// uploaded version): its remote file was renamed.
    Renamed,
}

impl Proof {
    pub fn describe(self) -> &'static str {
        match self {
            Proof::Metadata => "the same sha256 in its metadata",
            Proof::UrlBytes => "the same sha256 of the bytes its url serves",
            Proof::Renamed => "the same file renamed locally (its remote file renamed)",
            Proof::CreatedAfterMtime => {
                "without content proof: the same name and size, created after the local file was last \
                 modified (no hash to compare)"
            }
        }
    }

    /// Did the content itself match? Only then may the local file be
    /// deleted or moved on the strength of an adoption.
    pub fn compared_content(self) -> bool {
        !matches!(self, Proof::CreatedAfterMtime)
    }
}

/// Is `remote` (already known to have the same name and size) the same
/// content as the local file with `sha256` and mtime `mtime_ms`? `Ok(None)`:
/// not shown to be. Name and size alone never suffice.
pub async fn same_content(
    client: &Client,
    remote: &RemoteFile,
    size: u64,
    sha256: &str,
    mtime_ms: i64,
) -> Result<Option<Proof>, ApiError> {
    if let Some(remote_sha) = &remote.sha256 {
        return Ok((remote_sha == sha256).then_some(Proof::Metadata));
    }
    if let Some(url) = &remote.url {
        match client.url_sha256(url, size).await {
            Ok(Some(h)) => return Ok((h == sha256).then_some(Proof::UrlBytes)),
            Ok(None) => return Ok(None),
            Err(e @ ApiError::Auth { .. }) => return Err(e),
            Err(e) => {
                tracing::debug!(file_no = %remote.file_no, "cannot read the file's url ({e}); comparing creation times instead")
            }
        }
    }
    Ok(match remote.created_at_ms {
        Some(created) if created > mtime_ms => Some(Proof::CreatedAfterMtime),
        _ => None,
    })
}
