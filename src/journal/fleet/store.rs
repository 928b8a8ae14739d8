//! The fleet's side of the journal interface. Each operation is listed
//! once: `own` where the fleet changes it (the claim, the fenced writes,
//! the shared result), `local` where this node's SQLite journal answers
//! alone. An operation added to [`Store`] does not compile here until it is
//! put in one of the two lists.

use std::future::Future;
use std::path::PathBuf;

use super::*;

/// Operations the fleet writes itself (its inherent method of that name).
macro_rules! own {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {$(
        fn $name(&self $(, $arg: $ty)*) -> impl Future<Output = Result<$ret, JournalError>> + Send {
            Fleet::$name(self $(, $arg)*)
        }
    )*};
}

/// Operations this node's own journal answers.
macro_rules! local {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {$(
        fn $name(&self $(, $arg: $ty)*) -> impl Future<Output = Result<$ret, JournalError>> + Send {
            Store::$name(&self.local $(, $arg)*)
        }
    )*};
}

impl Store for Fleet {
    own! {
        fn due(
            &self,
            now: i64,
            limit: usize,
            skip: Vec<i64>,
            tried: Option<Arc<std::collections::HashSet<i64>>>,
            serving: Serving
        ) -> Vec<FileRow>;
        fn set_state(&self, id: i64, state: State) -> ();
        fn record_done(&self, id: i64, d: DoneRecord) -> ();
        fn record_failure(&self, id: i64, error: String, max_attempts: u32, retry_at: i64) -> State;
        fn mark_gone(&self, root: String, rel: String) -> ();
        fn session(&self, id: i64) -> Option<SavedSession>;
        fn save_session(&self, id: i64, s: Session, file: FileId, sha256: String) -> ();
        fn direct_sending(&self, id: i64, began_at_ms: i64, file: FileId, sha256: String) -> ();
        fn completing(&self, id: i64) -> ();
        fn drop_session(&self, id: i64) -> ();
        fn checkpoint(&self) -> ();
    }

    fn part_done(&self, id: i64, index: usize) {
        Fleet::part_done(self, id, index)
    }

    local! {
        // What this node has seen and how it decides about it.
        fn lookup(&self, root: String, rel: String) -> Option<FileRow>;
        fn verdict(&self, root: String, rel: String, now: FileId) -> Verdict;
        fn enqueue(
            &self,
            root: String,
            rel: String,
            fp: Fingerprint,
            remote_key: Option<String>,
            set: Option<(String, i64)>
        ) -> Option<String>;
        fn refresh_done_identity(&self, id: i64, now: FileId) -> ();
        fn next_due(&self) -> Option<i64>;
        fn postpone(&self, ids: Vec<i64>, at: i64) -> ();
        fn rebase_backoff(&self, now: i64) -> usize;
        fn done_in(&self, root: String, folder: String) -> FolderDone;
        fn done_files(&self, paths: Vec<PathBuf>) -> Vec<FileRow>;
        fn requeue(&self, ids: Vec<i64>) -> usize;
        // `upload` of one file runs outside the fleet's queue.
        fn upload_slot(&self, root: String, rel: String, fp: Fingerprint) -> (i64, Option<SavedSession>);
        fn record_upload(&self, root: String, rel: String, d: DoneRecord) -> ();
        fn record_prehash(&self, root: String, rel: String, file: FileId, sha256: String) -> ();
        // Fleet nodes' done records are the fleet's: renames are not
        // mirrored there (nothing here matches).
        fn renamed_from(&self, id: i64, sha256: String, file: FileId) -> Option<RenameSource>;
        fn record_skipped(&self, root: String, rel: String, fp: Fingerprint) -> ();
        fn first_watched(&self, root: String, now: i64) -> i64;
        fn recent_uploads(&self, root: String, rel: String, limit: usize) -> Vec<i64>;
        fn clamp_first_watched(&self, at: i64) -> usize;
        fn retry(&self, paths: Vec<PathBuf>) -> Retried;
        // Reconciling asks the service; what it found is this node's.
        fn reconciling(&self, id: i64) -> ();
        fn note_stray_copy(&self, id: i64, sha256: String, file_no: String) -> u32;
        fn stray_copies(&self, id: i64, sha256: String) -> u32;
        fn note_after(&self, root: String, rel: String, what: String) -> ();
        fn release_set(&self, root: String, set_rel: String, now: i64) -> bool;
        // This node's heartbeat, sets, pause and notifications.
        fn heartbeat(&self, pid: u32, started_at: i64, last_event_at: Option<i64>, snapshot: String) -> ();
        fn open_sets(&self, root: String) -> Vec<SetRow>;
        fn set_files(&self, root: String, set_rel: String) -> Vec<SetFile>;
        fn step_set(&self, root: String, set_rel: String, step: SetStep, now: i64) -> ();
        fn user_pause(&self) -> Option<UserPause>;
        fn set_user_pause(&self, pause: Option<UserPause>) -> ();
        fn outbox_push(&self, items: Vec<OutboxItem>, now: i64) -> ();
        fn outbox_due(&self, now: i64, limit: usize) -> Vec<OutboxRow>;
        fn outbox_next(&self) -> Option<i64>;
        fn outbox_delivered(&self, id: i64) -> ();
        fn outbox_retry(&self, id: i64, next_at: i64, error: String) -> ();
        fn flush(&self) -> ();
        // Renames are not mirrored in a fleet (the job says so): never asked.
        fn folder_rename_of(&self, id: i64, old_remote: String, new_remote: String) -> Option<FolderRename>;
        fn folder_rename_begin(&self, id: i64, ask: FolderRenameAsk, now: i64) -> i64;
        fn folder_rename_end(&self, rename: i64, state: String) -> ();
        fn done_below(&self, id: i64, prefix: String, limit: usize) -> Vec<DoneBelow>;
        // `mirror_deletes` is refused with [fleet] (config): these are
        // never asked there, and would only see this node's records.
        fn done_page(&self, root: String, after_id: i64, limit: usize) -> Vec<DoneEntry>;
        fn remote_shared(&self, id: i64) -> bool;
        fn moved_to(&self, id: i64) -> Option<MovedTo>;
        fn note_missing(&self, missing: Vec<i64>, present: Vec<i64>, now: i64) -> ();
        fn deletes_due(&self, root: String, gone_before: i64) -> Vec<PendingDelete>;
        fn deletes_waiting(&self, root: String) -> usize;
        fn delete_sending(&self, id: i64, now: i64) -> ();
        fn deleted_remote(&self, id: i64, counted: bool, what: String, now: i64) -> ();
        fn deleted_since(&self, root: String, since: i64) -> usize;
        fn deletes_released(&self, root: String) -> i64;
        fn release_deletes(&self, root: String, now: i64) -> usize;
    }
}
