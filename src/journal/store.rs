//! The journal's interface: every operation the agent and the commands
//! ask of it, written once in the `journal_interface!` list below, which
//! makes of it
//!
//! - the trait [`Store`], which each backend implements: SQLite (`sqlite.rs`
//!   and the rooms beside it) and the fleet (`fleet/store.rs`), where each
//!   operation says whether it is the fleet's own or the local journal's, so
//!   a new operation does not compile until the fleet decides;
//! - [`Journal`]'s methods, which dispatch to the backend it holds (an enum:
//!   static dispatch, no boxed futures).

use std::future::Future;
use std::path::PathBuf;

use super::*;

/// Writes each operation of the interface once: its signature and what it
/// promises, as a method of [`Store`], SQLite's implementation (its inherent
/// method of the same name) and [`Journal`]'s dispatch.
macro_rules! journal_interface {
    ($($(#[$doc:meta])* async fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        /// The journal's operations, implemented by each backend.
        pub trait Store: Clone + Send + Sync + 'static {
            $(
                $(#[$doc])*
                fn $name(&self $(, $arg: $ty)*)
                    -> impl Future<Output = Result<$ret, JournalError>> + Send;
            )*
            /// Marks part `index` of file `id`'s session stored, without
            /// waiting (a lost mark only re-sends a part).
            fn part_done(&self, id: i64, index: usize);
        }

        impl Store for Sqlite {
            $(
                fn $name(&self $(, $arg: $ty)*)
                    -> impl Future<Output = Result<$ret, JournalError>> + Send {
                    Sqlite::$name(self $(, $arg)*)
                }
            )*
            fn part_done(&self, id: i64, index: usize) {
                Sqlite::part_done(self, id, index)
            }
        }

        impl Journal {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, JournalError> {
                    match &self.backend {
                        Backend::Sqlite(b) => Store::$name(b $(, $arg)*).await,
                        Backend::Fleet(b) => Store::$name(b $(, $arg)*).await,
                    }
                }
            )*

            /// Marks part `index` of file `id`'s session stored, without
            /// waiting (a lost mark only re-sends a part).
            pub fn part_done(&self, id: i64, index: usize) {
                match &self.backend {
                    Backend::Sqlite(b) => Store::part_done(b, id, index),
                    Backend::Fleet(b) => Store::part_done(b, id, index),
                }
            }
        }
    };
}

journal_interface! {
    /// A file's record, if it has one.
    async fn lookup(&self, root: String, rel: String) -> Option<FileRow>;
    /// Whether a finished file version needs uploading ([`Verdict`]).
    async fn verdict(&self, root: String, rel: String, now: FileId) -> Verdict;
    /// Queues a stable file (in an upload set, `(set, phase)`: held until
    /// the set is ready); with a remote key another live file holds, fails
    /// it instead and returns that file's local path.
    async fn enqueue(
        &self,
        root: String,
        rel: String,
        fp: Fingerprint,
        remote_key: Option<String>,
        set: Option<(String, i64)>
    ) -> Option<String>;
    /// A touched, chmod-ed, restored or moved-in but identical file: its
    /// mtime, inode and ctime now, so it is not hashed again.
    async fn refresh_done_identity(&self, id: i64, now: FileId) -> ();
    /// Up to `limit` queued files due at `now` (unix ms), in the order
    /// `serving` says, leaving out `skip` and `tried`.
    async fn due(
        &self,
        now: i64,
        limit: usize,
        skip: Vec<i64>,
        tried: Option<std::sync::Arc<std::collections::HashSet<i64>>>,
        serving: Serving
    ) -> Vec<FileRow>;
    /// When the next queued file is due (unix ms).
    async fn next_due(&self) -> Option<i64>;
    /// Queued files wait until `at` (unix ms), no attempt spent.
    async fn postpone(&self, ids: Vec<i64>, at: i64) -> ();
    /// Backoff set under a wall clock that has since been stepped back is
    /// counted from `now` instead (how many files moved).
    async fn rebase_backoff(&self, now: i64) -> usize;
    async fn set_state(&self, id: i64, state: State) -> ();
    /// The uploaded versions of the files directly in one folder of a root.
    async fn done_in(&self, root: String, folder: String) -> FolderDone;
    /// Files recorded as done (all, or under `paths`), for `verify`.
    async fn done_files(&self, paths: Vec<PathBuf>) -> Vec<FileRow>;
    /// `verify --requeue`: done files the workspace lost go back to the queue.
    async fn requeue(&self, ids: Vec<i64>) -> usize;
    /// A done version of `id`'s root with this identity and content under
    /// another path (a local rename), if the journal has one.
    async fn renamed_from(&self, id: i64, sha256: String, file: FileId) -> Option<RenameSource>;
    /// The rename of remote folder `old_remote` to `new_remote` in file
    /// `id`'s root, if one was asked.
    async fn folder_rename_of(&self, id: i64, old_remote: String, new_remote: String) -> Option<FolderRename>;
    /// A folder rename is about to be sent (file `id`'s root); its id.
    async fn folder_rename_begin(&self, id: i64, ask: FolderRenameAsk, now: i64) -> i64;
    /// How folder rename `rename` ended ("done" or "failed").
    async fn folder_rename_end(&self, rename: i64, state: String) -> ();
    /// The uploaded files of file `id`'s root below the folder `prefix`.
    async fn done_below(&self, id: i64, prefix: String, limit: usize) -> Vec<DoneBelow>;
    /// `mirror_deletes`: up to `limit` uploaded files of `root` after record
    /// `after_id` (a sweep for missing files, page by page).
    async fn done_page(&self, root: String, after_id: i64, limit: usize) -> Vec<DoneEntry>;
    /// Whether another record still uses file `id`'s remote file.
    async fn remote_shared(&self, id: i64) -> bool;
    /// The done record file `id` lives on as, if it was moved.
    async fn moved_to(&self, id: i64) -> Option<MovedTo>;
    /// A sweep's findings: `missing` files wait from `now`, `present` ones
    /// stop waiting.
    async fn note_missing(&self, missing: Vec<i64>, present: Vec<i64>, now: i64) -> ();
    /// Remote copies of `root` due for deletion (missing since `gone_before`).
    async fn deletes_due(&self, root: String, gone_before: i64) -> Vec<PendingDelete>;
    /// How many uploaded files of `root` are missing and wait.
    async fn deletes_waiting(&self, root: String) -> usize;
    /// The DELETE of file `id`'s remote copy is about to be sent.
    async fn delete_sending(&self, id: i64, now: i64) -> ();
    /// File `id`'s remote copy is deleted: history, and its record goes.
    async fn deleted_remote(&self, id: i64, counted: bool, what: String, now: i64) -> ();
    /// Remote deletes of `root` counted toward `max_delete` after `since`.
    async fn deleted_since(&self, root: String, since: i64) -> usize;
    /// When `release --deletes` last let `root`'s waiting deletes go.
    async fn deletes_released(&self, root: String) -> i64;
    /// `release --deletes`: `root`'s waiting deletes go beyond the brake.
    async fn release_deletes(&self, root: String, now: i64) -> usize;
    /// A queued file is uploaded: its result, its session dropped, history.
    async fn record_done(&self, id: i64, d: DoneRecord) -> ();
    /// `upload` of one file: its record id (created if none) and the session
    /// left by an interrupted upload of it, if any.
    async fn upload_slot(&self, root: String, rel: String, fp: Fingerprint) -> (i64, Option<SavedSession>);
    /// A file uploaded outside the queue (`upload`): recorded as done.
    async fn record_upload(&self, root: String, rel: String, d: DoneRecord) -> ();
    /// A failed attempt: retried at `retry_at`, or failed after `max_attempts`.
    async fn record_failure(&self, id: i64, error: String, max_attempts: u32, retry_at: i64) -> State;
    /// A held file's hash and the version it is of (the upload skips hashing
    /// it again if the file is still that version).
    async fn record_prehash(&self, root: String, rel: String, file: FileId, sha256: String) -> ();
    /// A file left out by policy (`existing = "skip"`, `max_age`), until it changes.
    async fn record_skipped(&self, root: String, rel: String, fp: Fingerprint) -> ();
    /// When `root` was first watched with `existing = "skip"` (now, if never).
    async fn first_watched(&self, root: String, now: i64) -> i64;
    /// When the file was last uploaded, newest first (up to `limit`).
    async fn recent_uploads(&self, root: String, rel: String, limit: usize) -> Vec<i64>;
    /// First-watch times later than `at` (set under a clock that stood
    /// ahead) become `at` (how many roots moved).
    async fn clamp_first_watched(&self, at: i64) -> usize;
    /// The file vanished.
    async fn mark_gone(&self, root: String, rel: String) -> ();
    /// `retry`: failed files (all, or under `paths`) go back to the queue.
    async fn retry(&self, paths: Vec<PathBuf>) -> Retried;
    /// The upload in flight for file `id`, as recorded.
    async fn session(&self, id: i64) -> Option<SavedSession>;
    /// A multipart session began for this file version.
    async fn save_session(&self, id: i64, s: Session, file: FileId, sha256: String) -> ();
    /// A direct upload of this file version is about to be sent.
    async fn direct_sending(&self, id: i64, began_at_ms: i64, file: FileId, sha256: String) -> ();
    /// The outcome of a sent complete or direct upload is being looked up.
    async fn reconciling(&self, id: i64) -> ();
    /// The service stored something other than this version's bytes for
    /// it (`file_no`): counted per file and content; the count so far.
    async fn note_stray_copy(&self, id: i64, sha256: String, file_no: String) -> u32;
    /// How many such objects this version (by content) has so far.
    async fn stray_copies(&self, id: i64, sha256: String) -> u32;
    /// Releases a waiting set (it goes without trigger, quiet or gaps);
    /// false when no such set waits.
    async fn release_set(&self, root: String, set_rel: String, now: i64) -> bool;
    /// What `after_upload` did with the local file of the latest upload of
    /// `rel` in the history ("deleted", "moved to …").
    async fn note_after(&self, root: String, rel: String, what: String) -> ();
    /// Complete is about to be sent (every part mark before it is recorded).
    async fn completing(&self, id: i64) -> ();
    async fn drop_session(&self, id: i64) -> ();
    /// The running agent's heartbeat and live snapshot (for `status`).
    async fn heartbeat(&self, pid: u32, started_at: i64, last_event_at: Option<i64>, snapshot: String) -> ();
    /// The upload sets of `root` not complete yet.
    async fn open_sets(&self, root: String) -> Vec<SetRow>;
    /// The files of one set (not gone), by path.
    async fn set_files(&self, root: String, set_rel: String) -> Vec<SetFile>;
    /// What the agent decided for a set: wait (and why), release a phase,
    /// send the manifest, or complete.
    async fn step_set(&self, root: String, set_rel: String, step: SetStep, now: i64) -> ();
    /// The pause the user set (`pause`), if one holds.
    async fn user_pause(&self) -> Option<UserPause>;
    /// Sets (or, with None, lifts) the user's pause; it outlives a restart.
    async fn set_user_pause(&self, pause: Option<UserPause>) -> ();
    /// Notifications to deliver, kept until their receiver takes them.
    async fn outbox_push(&self, items: Vec<OutboxItem>, now: i64) -> ();
    /// Up to `limit` notifications due at `now`, oldest first.
    async fn outbox_due(&self, now: i64, limit: usize) -> Vec<OutboxRow>;
    /// When the next notification is due (unix ms), if any waits.
    async fn outbox_next(&self) -> Option<i64>;
    async fn outbox_delivered(&self, id: i64) -> ();
    /// A delivery failed: tried again at `next_at`.
    async fn outbox_retry(&self, id: i64, next_at: i64, error: String) -> ();
    /// Waits until every earlier call is durable.
    async fn flush(&self) -> ();
    /// After a clean stop: everything durable and tidy.
    async fn checkpoint(&self) -> ();
}
