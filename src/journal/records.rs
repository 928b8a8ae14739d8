//! What the journal records about a file and its upload.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::api::Session;
use crate::fileid::{FileId, Fingerprint};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Settling,
    Pending,
    Uploading,
    /// A complete or direct upload was sent without a plain answer; the
    /// workspace is being asked whether it holds the file.
    Reconciling,
    Done,
    Failed,
    Gone,
    /// Left out by policy (`existing = "skip"`, `max_age`): never uploaded
    /// unless it changes.
    Skipped,
    /// Settled, in an upload set that is not ready yet (or whose earlier
    /// files are still going).
    Held,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Settling => "settling",
            State::Pending => "pending",
            State::Uploading => "uploading",
            State::Reconciling => "reconciling",
            State::Done => "done",
            State::Failed => "failed",
            State::Gone => "gone",
            State::Skipped => "skipped",
            State::Held => "held",
        }
    }
    pub(super) fn parse(s: &str) -> State {
        match s {
            "settling" => State::Settling,
            "pending" => State::Pending,
            "uploading" => State::Uploading,
            "reconciling" => State::Reconciling,
            "done" => State::Done,
            "failed" => State::Failed,
            "skipped" => State::Skipped,
            "held" => State::Held,
            _ => State::Gone,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FileRow {
    pub id: i64,
    pub root: String,
    pub rel: String,
    pub state: State,
    pub size: i64,
    pub mtime_ns: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_at: i64,
    pub done_size: Option<i64>,
    pub done_mtime_ns: Option<i64>,
    pub done_sha256: Option<String>,
    /// (device, inode, ctime) of the uploaded version; None in rows from
    /// before v5 and for files recorded without reading them here.
    pub done_node: Option<(u64, u64, i128)>,
    pub file_no: Option<String>,
    pub url: Option<String>,
    pub remote_path: Option<String>,
    /// No record existed when it was queued: check the workspace first.
    pub adopt: bool,
    /// The name the service gave the file (done files).
    pub remote_name: Option<String>,
    /// A held file's hash, taken while its set waited, and the version it
    /// is of (see [`Journal::record_prehash`]).
    #[serde(skip)]
    pub pre: Option<(FileId, String)>,
}

impl FileRow {
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            size: self.size as u64,
            mtime_ns: self.mtime_ns as i128,
        }
    }
    pub fn local_path(&self) -> PathBuf {
        Path::new(&self.root).join(&self.rel)
    }

    /// Uploaded, and `now` is that very version (size, mtime, device,
    /// inode, ctime: the one identity rule).
    pub fn is_uploaded_version(&self, now: &FileId) -> bool {
        self.state == State::Done && uploaded_version(self.done_size, self.done_mtime_ns, self.done_node, now)
    }
}

/// The journal's word on a finished (stable) file version: whether it
/// needs uploading. One rule for the agent's two ways of finding a file (a
/// scan checks a folder's records at once, an event asks for one file).
#[derive(Debug, Clone)]
pub enum Verdict {
    /// This very version (size, mtime, device, inode and ctime) is
    /// uploaded, or left out by policy: nothing to do.
    Unchanged,
    /// Uploaded with the same size, but it may be another version: another
    /// mtime (a `touch`), another inode (renamed over, restored, a new
    /// volume) or ctime (a `chmod`, or rewritten with its mtime put back).
    /// Hash it first: the same content only refreshes the record (see
    /// [`Journal::refresh_done_identity`]), other content is queued.
    HashFirst(Box<FileRow>),
    /// This version is already queued, in flight or failed: nothing new.
    Queued,
    /// New or changed: queue it ([`Journal::enqueue`]).
    Upload,
}

impl Verdict {
    /// The rule, given the file's record (if any) and the file now.
    pub fn of(row: Option<&FileRow>, now: &FileId) -> Verdict {
        let Some(row) = row else {
            return Verdict::Upload;
        };
        let fp = now.fingerprint();
        match row.state {
            State::Done if uploaded_version(row.done_size, row.done_mtime_ns, row.done_node, now) => {
                Verdict::Unchanged
            }
            // Left out by policy: its size and mtime are all that was recorded.
            State::Skipped
                if row.done_size == Some(fp.size as i64) && row.done_mtime_ns == Some(fp.mtime_ns as i64) =>
            {
                Verdict::Unchanged
            }
            State::Done if row.done_size == Some(fp.size as i64) => Verdict::HashFirst(Box::new(row.clone())),
            State::Pending | State::Uploading | State::Failed | State::Held if row.fingerprint() == fp => {
                Verdict::Queued
            }
            _ => Verdict::Upload,
        }
    }
}

/// Is `now` the version recorded as uploaded? Size, mtime, device, inode
/// and ctime all the same: a copied mtime fakes the first two only. A
/// record without the identity (older journals, files another fleet node
/// sent) is never taken as proof: the file is hashed once.
pub(super) fn uploaded_version(
    done_size: Option<i64>,
    done_mtime_ns: Option<i64>,
    done_node: Option<(u64, u64, i128)>,
    now: &FileId,
) -> bool {
    done_size == Some(now.size as i64)
        && done_mtime_ns == Some(now.mtime_ns as i64)
        && done_node == Some((now.dev, now.ino, now.ctime_ns))
}

/// One file's uploaded version, as a scan checks it.
#[derive(Debug, Clone, Copy)]
pub(super) struct DoneVersion {
    pub size: i64,
    pub mtime_ns: i64,
    pub node: Option<(u64, u64, i128)>,
    /// Left out by policy (size and mtime are the whole record).
    pub skipped: bool,
}

/// The uploaded versions of the files in one folder, for a scan to skip
/// unchanged files without asking about each one.
#[derive(Debug, Default)]
pub struct FolderDone(pub(super) std::collections::HashMap<String, DoneVersion>);

impl FolderDone {
    /// Is `now` the uploaded version of `rel`? (The rule of [`Verdict::Unchanged`].)
    pub fn unchanged(&self, rel: &str, now: &FileId) -> bool {
        self.0.get(rel).is_some_and(|d| {
            if d.skipped {
                d.size == now.size as i64 && d.mtime_ns == now.mtime_ns as i64
            } else {
                uploaded_version(Some(d.size), Some(d.mtime_ns), d.node, now)
            }
        })
    }
}

/// What `retry` did: how many failed files went back to the queue, and
/// which of the paths named held no failed file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Retried {
    pub requeued: usize,
    pub not_failed: Vec<PathBuf>,
}

pub(super) const FILE_COLS: &str = "id, root, rel, state, size, mtime_ns, attempts, last_error, next_attempt_at, \
    done_size, done_mtime_ns, done_sha256, file_no, url, remote_path, adopt, remote_name, \
    pre_sha256, pre_dev, pre_ino, pre_ctime_ns, done_dev, done_ino, done_ctime_ns";

pub(super) fn file_row(r: &rusqlite::Row) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get(0)?,
        root: r.get(1)?,
        rel: r.get(2)?,
        state: State::parse(&r.get::<_, String>(3)?),
        size: r.get(4)?,
        mtime_ns: r.get(5)?,
        attempts: r.get(6)?,
        last_error: r.get(7)?,
        next_attempt_at: r.get(8)?,
        done_size: r.get(9)?,
        done_mtime_ns: r.get(10)?,
        done_sha256: r.get(11)?,
        file_no: r.get(12)?,
        url: r.get(13)?,
        remote_path: r.get(14)?,
        adopt: r.get::<_, i64>(15)? != 0,
        remote_name: r.get(16)?,
        pre: match (
            r.get::<_, Option<String>>(17)?,
            r.get::<_, Option<i64>>(18)?,
            r.get::<_, Option<i64>>(19)?,
            r.get::<_, Option<i64>>(20)?,
        ) {
            (Some(sha), Some(dev), Some(ino), Some(ctime)) => Some((
                FileId {
                    dev: dev as u64,
                    ino: ino as u64,
                    size: r.get::<_, i64>(4)? as u64,
                    mtime_ns: r.get::<_, i64>(5)? as i128,
                    ctime_ns: ctime as i128,
                },
                sha,
            )),
            _ => None,
        },
        done_node: match (
            r.get::<_, Option<i64>>(21)?,
            r.get::<_, Option<i64>>(22)?,
            r.get::<_, Option<i64>>(23)?,
        ) {
            (Some(dev), Some(ino), Some(ctime)) => Some((dev as u64, ino as u64, ctime as i128)),
            _ => None,
        },
    })
}

/// A multipart session saved for resuming.
#[derive(Debug, Clone)]
pub struct SavedSession {
    pub session: Session,
    pub done: Vec<bool>,
    pub fingerprint: Fingerprint,
    pub sha256: String,
    pub completing: bool,
    /// A direct upload in flight (no parts; only its start time).
    pub direct: bool,
    /// The version being sent (None in journals from before v3).
    pub file_id: Option<FileId>,
}

/// What a finished upload recorded.
#[derive(Debug, Clone)]
pub struct DoneRecord {
    pub fingerprint: Fingerprint,
    /// The descriptor the upload read (None where none was read here).
    pub identity: Option<FileId>,
    pub sha256: String,
    pub remote_folder: String,
    pub remote_name: String,
    pub file_no: String,
    pub url: Option<String>,
    /// Recorded by adoption (how it was proven the same), not uploaded.
    pub adopted: Option<String>,
    /// The record of the path this file was renamed from locally (its
    /// remote file renamed to this one): dropped in the same transaction.
    pub retire: Option<i64>,
}

/// A done version the journal knows under another path of the same root:
/// the same device, inode, size and sha256 (a local rename or move).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenameSource {
    pub id: i64,
    pub rel: String,
    pub file_no: String,
    pub remote_folder: String,
    pub remote_name: String,
}

/// How the queue is served: which due file starts next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Serving {
    pub order: crate::config::Order,
    /// Roots (journal keys) whose `priority` is not 0, with it: higher first.
    pub priorities: Vec<(String, i64)>,
    /// Only files up to this many bytes (the small files' lane).
    pub max_size: Option<u64>,
}

impl Serving {
    /// Fifo, no priorities (any size or the small files' lane): the index
    /// walk serves it.
    pub(super) fn is_plain(&self) -> bool {
        self.order == crate::config::Order::Fifo && self.priorities.is_empty()
    }

    /// The query for the due files at `now` in this order, and its values.
    pub(super) fn query(&self, now: i64) -> (String, Vec<rusqlite::types::Value>) {
        use crate::config::Order;
        use rusqlite::types::Value;
        let mut values = vec![Value::Integer(now)];
        let mut sql = format!(
            "SELECT {FILE_COLS} FROM files WHERE {} AND next_attempt_at <= ?1",
            super::schema::QUEUED
        );
        if let Some(max) = self.max_size {
            values.push(Value::Integer(max.min(i64::MAX as u64) as i64));
            sql.push_str(&format!(" AND size <= ?{}", values.len()));
        }
        sql.push_str(" ORDER BY ");
        if !self.priorities.is_empty() {
            sql.push_str("CASE root");
            for (root, p) in &self.priorities {
                values.push(Value::Text(root.clone()));
                sql.push_str(&format!(" WHEN ?{} THEN {p}", values.len()));
            }
            sql.push_str(" ELSE 0 END DESC, ");
        }
        sql.push_str(match self.order {
            Order::Fifo => "next_attempt_at, id",
            Order::Oldest => "mtime_ns, id",
            Order::Newest => "mtime_ns DESC, id",
            Order::Smallest => "size, id",
            Order::Largest => "size DESC, id",
            Order::Name => "root, rel",
        });
        (sql, values)
    }
}
