//! A damaged journal is damage, not a first run (SPEC §2 `run --recover`):
//! an empty, garbage or newer journal is refused with a message that names
//! the file and the way out; `--recover` moves it aside and rebuilds the
//! state from the workspace by adoption, uploading nothing again.

use crate::harness::{Emulator, Sandbox, write_file};

fn uploaded_sandbox(emu: &Emulator, n: u64) -> Sandbox {
    let sb = Sandbox::watching(emu, "settle = \"200ms\"\n", "");
    for i in 0..n {
        write_file(&sb.drop_dir().join(format!("d{i:02}.mov")), 3_000, i);
    }
    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.stored(), n);
    sb
}

#[test]
fn an_empty_journal_is_refused_and_recover_rebuilds_it_without_uploading() {
    let emu = Emulator::start(&[]);
    let sb = uploaded_sandbox(&emu, 30);
    let db = sb.state_dir().join("journal.sqlite3");
    std::fs::write(&db, b"").unwrap();
    let _ = std::fs::remove_file(sb.state_dir().join("journal.sqlite3-wal"));

    let out = sb.run_once();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&db.display().to_string()),
        "names the file: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("empty") && out.stderr.contains("--recover"),
        "{}",
        out.stderr
    );
    assert_eq!(emu.stored(), 30, "nothing uploaded again");

    let mut status = sb.cmd();
    status.arg("status");
    let out = crate::harness::run(status);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("damaged") && !out.stderr.contains("write failed"),
        "{}",
        out.stderr
    );

    let mut recover = sb.cmd();
    recover.args(["run", "--once", "--recover"]);
    let out = crate::harness::run(recover);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("moved aside to"), "{}", out.stderr);
    assert_eq!(emu.stored(), 30, "rebuilt by adoption: nothing sent again");
    assert_eq!(sb.status()["roots"][0]["done"], 30);
    let aside = std::fs::read_dir(sb.state_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("journal.sqlite3.damaged-")
        });
    assert!(aside, "the damaged file is kept");
}

#[test]
fn a_garbage_or_newer_journal_is_refused_saying_what_is_wrong() {
    let emu = Emulator::start(&[]);
    let sb = uploaded_sandbox(&emu, 2);
    let db = sb.state_dir().join("journal.sqlite3");
    let good = std::fs::read(&db).unwrap();

    let mut garbage = good.clone();
    garbage[..16].copy_from_slice(b"not a database!!");
    std::fs::write(&db, &garbage).unwrap();
    let out = sb.run_once();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("not an SQLite database"), "{}", out.stderr);
    assert!(!out.stderr.contains("free space"), "{}", out.stderr);

    std::fs::write(&db, &good).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let out = sb.run_once();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("written by a newer autorender-sync"),
        "{}",
        out.stderr
    );
    assert_eq!(emu.stored(), 2);

    // An older schema: readers say to start the agent once; the agent upgrades it.
    std::fs::write(&db, &good).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", 2).unwrap();
    // Undo every step after v2 (a new migration adds its undo here).
    conn.execute_batch(
        "ALTER TABLE sessions DROP COLUMN dev; ALTER TABLE sessions DROP COLUMN ino;
         ALTER TABLE sessions DROP COLUMN ctime_ns; DROP INDEX files_remote_key;
         ALTER TABLE files DROP COLUMN remote_key;
         DROP TABLE agent_state; DROP TABLE outbox; DROP TABLE roots; DROP TABLE sets;
         DROP INDEX files_set; ALTER TABLE files DROP COLUMN set_rel; ALTER TABLE files DROP COLUMN phase;
         ALTER TABLE files DROP COLUMN pre_sha256; ALTER TABLE files DROP COLUMN pre_dev;
         ALTER TABLE files DROP COLUMN pre_ino; ALTER TABLE files DROP COLUMN pre_ctime_ns;
         DROP INDEX files_done_ino;
         ALTER TABLE files DROP COLUMN done_dev; ALTER TABLE files DROP COLUMN done_ino;
         ALTER TABLE files DROP COLUMN done_ctime_ns; DROP TABLE stray_copies;
         ALTER TABLE history DROP COLUMN after; DROP TABLE deletes;
         ALTER TABLE history DROP COLUMN event; DROP TABLE folder_renames;",
    )
    .unwrap();
    drop(conn);
    let mut status = sb.cmd();
    status.arg("status");
    let out = crate::harness::run(status);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("older autorender-sync"), "{}", out.stderr);
    let out = sb.run_once();
    assert_eq!(out.code, 0, "the agent upgrades it: {}", out.stderr);
    assert_eq!(sb.status()["roots"][0]["done"], 2);
    assert_eq!(emu.stored(), 2);
}

/// `state_dir` deleted under a running agent: it stops with a clear error
/// instead of recording into an unlinked journal, and the next agent adopts
/// what is already uploaded instead of sending it twice.
#[test]
fn a_state_dir_deleted_under_a_running_agent_stops_it_and_nothing_is_sent_twice() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let mut agent = sb.running_agent(&[]);
    for i in 0..25 {
        write_file(&sb.drop_dir().join(format!("s{i:02}.mov")), 2_000, i);
    }
    assert!(crate::harness::wait_until(
        std::time::Duration::from_secs(30),
        || emu.stored() == 25
    ));
    std::fs::remove_dir_all(sb.state_dir()).unwrap();
    let exited = crate::harness::wait_until(std::time::Duration::from_secs(10), || agent.has_exited());
    assert!(exited, "the agent noticed within seconds");
    let out = agent.stop();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("was deleted or replaced"), "{}", out.stderr);

    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.stored(), 25, "adopted, not sent twice");
}

/// Another process holding the journal's write lock (an `sqlite3` shell
/// left in a transaction): the agent says so and who, not "free space".
#[test]
fn a_journal_locked_by_another_process_is_named_with_its_holder() {
    let emu = Emulator::start(&[]);
    let sb = uploaded_sandbox(&emu, 1);
    let db = sb.state_dir().join("journal.sqlite3");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    write_file(&sb.drop_dir().join("later.bin"), 100, 3);
    let out = sb.run_once();
    drop(conn);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("locked by another process"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("pid {}", std::process::id())),
        "names the holder: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("free space"), "{}", out.stderr);
    assert_eq!(sb.run_once().code, 0, "fine once the lock is gone");
    assert_eq!(emu.stored(), 2);
}
