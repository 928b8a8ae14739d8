//! The schema: numbered SQL steps in `migrations/` applied by
//! `user_version`, and the indexed expressions queries must spell exactly.

use rusqlite::Connection;

use super::*;

/// The folder part of `rel` with its trailing `/` ("a/b/" of "a/b/c.mov",
/// "" of "c.mov"): every character but `/` trimmed from the right. Queries
/// must spell it exactly so to use the `files_folder` index.
pub(super) const FOLDER_OF_REL: &str = "rtrim(rel, replace(rel, '/', ''))";

/// Files waiting for an upload (or its outcome). Queries must spell it
/// exactly so to use the partial `files_due` index.
macro_rules! queued {
    () => {
        "state IN ('pending', 'uploading', 'reconciling')"
    };
}
pub(super) const QUEUED: &str = queued!();

/// The queued files due at ?1, in the order they are served.
pub(super) const DUE_FROM: &str = concat!(
    "FROM files INDEXED BY files_due WHERE ",
    queued!(),
    " AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id"
);

/// The queued files due at ?1 of at most ?2 bytes (the small files' lane),
/// in the order they are served: the same index walk, never a sort of the
/// whole queue.
pub(super) const DUE_SMALL_FROM: &str = concat!(
    "FROM files INDEXED BY files_due WHERE ",
    queued!(),
    " AND next_attempt_at <= ?1 AND size <= ?2 ORDER BY next_attempt_at, id"
);

/// The schema's steps, in order: step `n` (from 1) takes a journal from
/// `user_version` n-1 to n. Never edit a released step; add one.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_reconcile_adopt.sql"),
    include_str!("migrations/0003_file_identity.sql"),
    include_str!("migrations/0004_control.sql"),
    include_str!("migrations/0005_done_identity.sql"),
    include_str!("migrations/0006_stray_copies.sql"),
    include_str!("migrations/0007_history_after.sql"),
    include_str!("migrations/0008_set_release.sql"),
    include_str!("migrations/0009_mirror_deletes.sql"),
];

/// Indexes every version creates if missing (no version step of their own).
pub(super) const INDEXES: &str = include_str!("migrations/indexes.sql");

pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    // Every step in one transaction: a reader never sees a half-migrated schema.
    let tx = conn.transaction()?;
    for step in MIGRATIONS.iter().skip(version.max(0) as usize) {
        tx.execute_batch(step)?;
    }
    tx.execute_batch(INDEXES)?;
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_version_is_the_number_of_steps() {
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as i64);
    }

    #[test]
    fn the_indexes_spell_the_queries_expressions() {
        let flat = INDEXES.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(&format!("(root, {FOLDER_OF_REL})")), "files_folder");
        assert!(flat.contains(&format!("WHERE {QUEUED};")), "files_due");
    }

    #[test]
    fn a_journal_of_every_older_version_is_brought_up_to_date() {
        for from in 0..MIGRATIONS.len() {
            let mut c = Connection::open_in_memory().unwrap();
            for step in &MIGRATIONS[..from] {
                c.execute_batch(step).unwrap();
            }
            c.pragma_update(None, "user_version", from as i64).unwrap();
            migrate(&mut c).unwrap();
            let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
            assert_eq!(v, SCHEMA_VERSION, "from v{from}");
            // The newest columns and indexes are there.
            c.execute_batch("SELECT remote_key, adopt FROM files; SELECT ctime_ns, kind FROM sessions;")
                .unwrap();
            let n: i64 = c
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name IN ('files_folder', 'files_due', 'files_remote_key')",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 3, "from v{from}");
            // Applying again changes nothing.
            migrate(&mut c).unwrap();
        }
    }
}
