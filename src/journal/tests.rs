//! Journal tests: real SQLite in temp dirs.

use super::schema::{DUE_FROM, DUE_SMALL_FROM, FOLDER_OF_REL};
use super::*;

fn fp(size: u64, m: i128) -> Fingerprint {
    Fingerprint { size, mtime_ns: m }
}

/// Version `fp` of the file at inode 2 (device 1), ctime 3.
fn id(fp: Fingerprint) -> FileId {
    FileId {
        dev: 1,
        ino: 2,
        size: fp.size,
        mtime_ns: fp.mtime_ns,
        ctime_ns: 3,
    }
}

/// The result of uploading version `fp` (sha256 "s", file_no "1").
fn uploaded(fp: Fingerprint) -> DoneRecord {
    DoneRecord {
        fingerprint: fp,
        identity: Some(id(fp)),
        sha256: "s".into(),
        remote_folder: "f".into(),
        remote_name: "n".into(),
        file_no: "1".into(),
        url: None,
        adopted: None,
        retire: None,
    }
}

/// The record of `rel` under root "/r" (which must exist).
async fn record(j: &Journal, rel: &str) -> FileRow {
    j.lookup("/r".into(), rel.into()).await.unwrap().unwrap()
}

/// The rows due now, at most `n` (none skipped, the default order).
async fn due_now(j: &Journal, n: usize) -> Vec<FileRow> {
    j.due(now_ms(), n, vec![], None, Serving::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn queue_session_and_done_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.enqueue("/r".into(), "a.mp4".into(), fp(10, 5), None, None)
        .await
        .unwrap();
    let due = due_now(&j, 10).await;
    assert_eq!(due.len(), 1);
    let id = due[0].id;
    let s = Session {
        session_id: "s1".into(),
        uuid: Some("u".into()),
        part_size: 4,
        parts: (0..3)
            .map(|i| url::Url::parse(&format!("https://x/{i}")).unwrap())
            .collect(),
        expire_at: Some(99),
        began_at_ms: 1_000,
    };
    let file = FileId {
        dev: 1,
        ino: 2,
        size: 10,
        mtime_ns: 5,
        ctime_ns: 6,
    };
    j.save_session(id, s.clone(), file, "abc".into()).await.unwrap();
    j.part_done(id, 1);
    j.completing(id).await.unwrap();
    let saved = j.session(id).await.unwrap().unwrap();
    assert_eq!(saved.session, s);
    assert_eq!(saved.done, vec![false, true, false]);
    assert_eq!(saved.file_id, Some(file));
    assert_eq!(saved.fingerprint, fp(10, 5));
    assert!(saved.completing);
    j.record_done(
        id,
        DoneRecord {
            fingerprint: fp(10, 5),
            identity: Some(file),
            sha256: "abc".into(),
            remote_folder: "x".into(),
            remote_name: "a.mp4".into(),
            file_no: "7".into(),
            url: None,
            adopted: None,
            retire: None,
        },
    )
    .await
    .unwrap();
    let row = record(&j, "a.mp4").await;
    assert_eq!(row.state, State::Done);
    assert_eq!(row.done_size, Some(10));
    assert!(j.session(id).await.unwrap().is_none());
    let reader = Reader::open(dir.path()).unwrap().unwrap();
    let h = reader.history(10, false).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].file_no.as_deref(), Some("7"));
}

#[tokio::test]
async fn failures_back_off_then_fail_until_retry() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    j.enqueue("/r".into(), "a".into(), fp(1, 1), None, None)
        .await
        .unwrap();
    let id = due_now(&j, 1).await[0].id;
    assert_eq!(
        j.record_failure(id, "boom".into(), 2, now_ms() + 60_000)
            .await
            .unwrap(),
        State::Pending
    );
    assert!(due_now(&j, 1).await.is_empty(), "backing off");
    assert_eq!(
        j.record_failure(id, "boom".into(), 2, 0).await.unwrap(),
        State::Failed
    );
    assert!(due_now(&j, 1).await.is_empty());
    assert_eq!(j.retry(vec![]).await.unwrap().requeued, 1);
    assert_eq!(due_now(&j, 1).await.len(), 1);
}

#[tokio::test]
async fn the_queue_is_read_in_index_order_without_a_sort() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    // Every file, and the small files' lane (asked at each free slot of a
    // one-folder ingest: a sort there made 50,000 files quadratic).
    for (from, values) in [(DUE_FROM, vec![5]), (DUE_SMALL_FROM, vec![5, 8 << 20])] {
        let plan: Vec<String> = j
            .sqlite()
            .call(move |c| {
                let mut s = c.prepare(&format!("EXPLAIN QUERY PLAN SELECT id {from}"))?;
                s.query_map(rusqlite::params_from_iter(values), |r| r.get::<_, String>(3))?
                    .collect()
            })
            .await
            .unwrap();
        assert!(plan.iter().any(|p| p.contains("files_due")), "{plan:?}");
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
    }
}

#[tokio::test]
async fn done_in_a_folder_is_only_that_folder_and_uses_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    for rel in [
        "a/b/x.mov",
        "a/b/y/z.mov",
        "a/b.mov",
        "a/bc/x.mov",
        "a/b0.mov",
        "top.mov",
    ] {
        let d = uploaded(fp(1, 2));
        j.record_upload("/r".into(), rel.into(), d).await.unwrap();
    }
    let keys = |m: FolderDone| {
        let mut k: Vec<String> = m.0.into_keys().collect();
        k.sort();
        k
    };
    let done_in = |folder: &str| j.done_in("/r".into(), folder.into());
    assert_eq!(keys(done_in("a/b/").await.unwrap()), vec!["a/b/x.mov"]);
    assert_eq!(keys(done_in("a/").await.unwrap()), vec!["a/b.mov", "a/b0.mov"]);
    assert_eq!(keys(done_in("").await.unwrap()), vec!["top.mov"]);
    assert_eq!(keys(done_in("a/b/y/").await.unwrap()), vec!["a/b/y/z.mov"]);
    assert!(j.done_in("/other".into(), "".into()).await.unwrap().0.is_empty());
    let top = done_in("").await.unwrap();
    assert!(top.unchanged("top.mov", &id(fp(1, 2))));
    assert!(!top.unchanged("top.mov", &id(fp(1, 3))), "another mtime");
    assert!(!top.unchanged("top.mov", &id(fp(2, 2))), "another size");
    assert!(!top.unchanged("new.mov", &id(fp(1, 2))), "no record");
    let renamed_over = FileId {
        ino: 9,
        ..id(fp(1, 2))
    };
    assert!(
        !top.unchanged("top.mov", &renamed_over),
        "another inode, same size and mtime"
    );
    let chmodded = FileId {
        ctime_ns: 4,
        ..id(fp(1, 2))
    };
    assert!(
        !top.unchanged("top.mov", &chmodded),
        "another ctime, same size and mtime"
    );
    // The query reads the folder index, not the whole table.
    let plan: Vec<String> = j
        .sqlite()
        .call(|c| {
            let mut s = c.prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT rel FROM files WHERE root = 'r' AND {FOLDER_OF_REL} = '' AND state = 'done'"
            ))?;
            s.query_map([], |r| r.get::<_, String>(3))?.collect()
        })
        .await
        .unwrap();
    assert!(plan.iter().any(|p| p.contains("files_folder")), "{plan:?}");
}

#[test]
fn second_agent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _a = lock_agent(dir.path()).unwrap();
    assert!(matches!(lock_agent(dir.path()), Err(JournalError::Locked { .. })));
    assert!(agent_running(dir.path()));
}

/// `status` polled while the agent starts must never make it refuse to
/// start: the probe holds the lock for an instant, the agent waits it out.
#[test]
fn a_status_probe_never_stops_an_agent_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    drop(lock_agent(dir.path()).unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probes = {
        let (dir, stop) = (dir.path().to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                agent_running(&dir);
                n += 1;
            }
            n
        })
    };
    for i in 0..300 {
        match lock_agent(dir.path()) {
            Ok(lock) => drop(lock),
            Err(e) => panic!("start {i} was refused while only a probe ran: {e}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(probes.join().unwrap() > 0);
}

#[tokio::test]
async fn the_verdict_follows_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    let verdict = |rel: &str, f: FileId| j.verdict("/r".into(), rel.into(), f);
    assert!(
        matches!(verdict("a", id(fp(1, 2))).await.unwrap(), Verdict::Upload),
        "no record"
    );
    j.enqueue("/r".into(), "a".into(), fp(1, 2), None, None)
        .await
        .unwrap();
    assert!(
        matches!(verdict("a", id(fp(1, 2))).await.unwrap(), Verdict::Queued),
        "queued, same version"
    );
    assert!(
        matches!(verdict("a", id(fp(1, 3))).await.unwrap(), Verdict::Upload),
        "queued, changed since"
    );
    let d = uploaded(fp(1, 2));
    j.record_upload("/r".into(), "a".into(), d).await.unwrap();
    assert!(matches!(
        verdict("a", id(fp(1, 2))).await.unwrap(),
        Verdict::Unchanged
    ));
    match verdict("a", id(fp(1, 9))).await.unwrap() {
        Verdict::HashFirst(row) => assert_eq!(row.done_sha256.as_deref(), Some("s")),
        other => panic!("same size, new mtime must be hashed first: {other:?}"),
    }
    // A look-alike: same size and mtime, another inode (renamed over) or
    // ctime (rewritten in place, mtime put back): hashed, never trusted.
    for (what, look_alike) in [
        (
            "another inode",
            FileId {
                ino: 7,
                ..id(fp(1, 2))
            },
        ),
        (
            "another ctime",
            FileId {
                ctime_ns: 8,
                ..id(fp(1, 2))
            },
        ),
    ] {
        assert!(
            matches!(verdict("a", look_alike).await.unwrap(), Verdict::HashFirst(_)),
            "{what}: hash first"
        );
    }
    // Hashed and found the same: the record takes the new identity.
    let row = record(&j, "a").await;
    let restored = FileId {
        ino: 7,
        ctime_ns: 8,
        ..id(fp(1, 2))
    };
    j.refresh_done_identity(row.id, restored).await.unwrap();
    assert!(matches!(
        verdict("a", restored).await.unwrap(),
        Verdict::Unchanged
    ));
    assert!(matches!(
        verdict("a", id(fp(1, 2))).await.unwrap(),
        Verdict::HashFirst(_)
    ));
    assert!(
        matches!(verdict("a", id(fp(2, 2))).await.unwrap(), Verdict::Upload),
        "another size"
    );
    // Recorded without an identity (older journals, another fleet node):
    // the same size and mtime are hashed once, not trusted.
    let mut d = uploaded(fp(5, 5));
    d.identity = None;
    j.record_upload("/r".into(), "b".into(), d).await.unwrap();
    assert!(matches!(
        verdict("b", id(fp(5, 5))).await.unwrap(),
        Verdict::HashFirst(_)
    ));
}

#[tokio::test]
async fn the_users_pause_and_the_outbox_outlive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.user_pause().await.unwrap(), None);
        let p = UserPause {
            since_ms: 10,
            until_ms: Some(20),
        };
        j.set_user_pause(Some(p)).await.unwrap();
        let item = |target: i64, event: &str| OutboxItem {
            target,
            event: event.into(),
            body: format!("{{\"event\":\"{event}\"}}"),
        };
        j.outbox_push(vec![item(0, "failed"), item(1, "uploaded")], 100)
            .await
            .unwrap();
        j.checkpoint().await.unwrap();
    }
    let j = Journal::open(dir.path()).unwrap();
    assert_eq!(
        j.user_pause().await.unwrap(),
        Some(UserPause {
            since_ms: 10,
            until_ms: Some(20)
        })
    );
    let forever = UserPause {
        since_ms: 30,
        until_ms: None,
    };
    j.set_user_pause(Some(forever)).await.unwrap();
    assert_eq!(j.user_pause().await.unwrap(), Some(forever));
    j.set_user_pause(None).await.unwrap();
    assert_eq!(j.user_pause().await.unwrap(), None);

    assert!(
        j.outbox_due(99, 10).await.unwrap().is_empty(),
        "not due before it was pushed"
    );
    let due = j.outbox_due(100, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|r| r.event.as_str()).collect::<Vec<_>>(),
        ["failed", "uploaded"]
    );
    // A failed delivery waits; a delivered one is gone.
    j.outbox_retry(due[0].id, 5_000, "HTTP 503".into()).await.unwrap();
    j.outbox_delivered(due[1].id).await.unwrap();
    assert!(j.outbox_due(4_999, 10).await.unwrap().is_empty());
    assert_eq!(j.outbox_next().await.unwrap(), Some(5_000));
    let again = j.outbox_due(5_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    j.outbox_delivered(again[0].id).await.unwrap();
    assert_eq!(j.outbox_next().await.unwrap(), None);
}

#[tokio::test]
async fn a_held_files_hash_is_kept_for_its_version_only() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    let set = Some(("sh010".to_string(), 0));
    j.enqueue("/r".into(), "sh010/f.exr".into(), fp(10, 5), None, set.clone())
        .await
        .unwrap();
    let id = |size, mtime| FileId {
        dev: 1,
        ino: 2,
        size,
        mtime_ns: mtime,
        ctime_ns: 7,
    };
    // A hash of another version (the file changed while it was hashed) is not kept.
    j.record_prehash("/r".into(), "sh010/f.exr".into(), id(11, 5), "other".into())
        .await
        .unwrap();
    let row = record(&j, "sh010/f.exr").await;
    assert_eq!(row.state, State::Held);
    assert!(row.pre.is_none());
    j.record_prehash("/r".into(), "sh010/f.exr".into(), id(10, 5), "abc".into())
        .await
        .unwrap();
    let row = record(&j, "sh010/f.exr").await;
    assert_eq!(row.pre, Some((id(10, 5), "abc".to_string())));
    // A new version forgets it.
    j.enqueue("/r".into(), "sh010/f.exr".into(), fp(12, 6), None, set)
        .await
        .unwrap();
    let row = record(&j, "sh010/f.exr").await;
    assert!(row.pre.is_none());
}

#[tokio::test]
async fn stray_copies_are_counted_per_file_version_and_outlive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    assert_eq!(j.stray_copies(1, "aa".into()).await.unwrap(), 0);
    assert_eq!(j.note_stray_copy(1, "aa".into(), "F1".into()).await.unwrap(), 1);
    assert_eq!(j.note_stray_copy(1, "aa".into(), "F2".into()).await.unwrap(), 2);
    assert_eq!(
        j.stray_copies(1, "bb".into()).await.unwrap(),
        0,
        "another version"
    );
    drop(j);
    let j = Journal::open(dir.path()).unwrap();
    assert_eq!(j.stray_copies(1, "aa".into()).await.unwrap(), 2);
}

#[tokio::test]
async fn missing_files_wait_their_grace_then_go_once_counted_and_a_shared_remote_file_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    // Three uploaded files; b and c share one remote file (c adopted it).
    let mut ids = Vec::new();
    for (rel, no) in [("a", "1"), ("b", "2"), ("c", "2")] {
        j.enqueue("/r".into(), rel.into(), fp(10, 5), None, None)
            .await
            .unwrap();
        let row = record(&j, rel).await;
        j.record_done(
            row.id,
            DoneRecord {
                file_no: no.into(),
                ..uploaded(fp(10, 5))
            },
        )
        .await
        .unwrap();
        ids.push(row.id);
    }
    let page = j.done_page("/r".into(), 0, 2).await.unwrap();
    assert_eq!(page.len(), 2, "paged");
    let rest = j.done_page("/r".into(), page[1].id, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(page[0].dev, Some(1));
    // a and b go missing at t=1000; a comes back before its grace is over.
    j.note_missing(vec![ids[0], ids[1]], vec![], 1000).await.unwrap();
    j.note_missing(vec![ids[1]], vec![], 5000).await.unwrap();
    assert_eq!(j.deletes_waiting("/r".into()).await.unwrap(), 2);
    assert!(
        j.deletes_due("/r".into(), 999).await.unwrap().is_empty(),
        "not before the grace"
    );
    j.note_missing(vec![], vec![ids[0]], 2000).await.unwrap();
    let due = j.deletes_due("/r".into(), 1000).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].rel.as_str(), due[0].gone_at),
        ("b", 1000),
        "the first sighting counts"
    );
    assert!(j.remote_shared(ids[1]).await.unwrap(), "c still uses file_no 2");
    assert!(!j.remote_shared(ids[0]).await.unwrap());
    // Sent, then a crash: still due whatever the clock says, until recorded.
    j.delete_sending(ids[1], 3000).await.unwrap();
    j.note_missing(vec![], vec![ids[1]], 3500).await.unwrap();
    assert!(j.deletes_due("/r".into(), 0).await.unwrap()[0].sending);
    j.deleted_remote(ids[1], true, "deleted".into(), 4000)
        .await
        .unwrap();
    assert!(
        j.lookup("/r".into(), "b".into()).await.unwrap().is_none(),
        "the record goes"
    );
    assert_eq!(j.deletes_waiting("/r".into()).await.unwrap(), 0);
    assert_eq!(j.deleted_since("/r".into(), 3999).await.unwrap(), 1);
    assert_eq!(j.deleted_since("/r".into(), 4000).await.unwrap(), 0);
    // A released delete is not counted toward the brake.
    assert_eq!(j.deletes_released("/r".into()).await.unwrap(), 0);
    j.note_missing(vec![ids[0]], vec![], 6000).await.unwrap();
    assert_eq!(j.release_deletes("/r".into(), 7000).await.unwrap(), 1);
    assert_eq!(j.deletes_released("/r".into()).await.unwrap(), 7000);
    j.deleted_remote(ids[0], false, "deleted".into(), 8000)
        .await
        .unwrap();
    assert_eq!(j.deleted_since("/r".into(), 0).await.unwrap(), 1);
    // The deletes are history, not uploads (min_interval ignores them).
    assert!(j.recent_uploads("/r".into(), "b".into(), 5).await.unwrap().len() == 1);
}

#[tokio::test]
async fn a_folder_rename_is_journaled_before_it_is_sent_and_the_files_below_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    for rel in ["A/x", "A/sub/y", "AB/z", "B/w"] {
        j.enqueue("/r".into(), rel.into(), fp(10, 5), None, None)
            .await
            .unwrap();
        let row = record(&j, rel).await;
        j.record_done(row.id, uploaded(fp(10, 5))).await.unwrap();
    }
    let id = record(&j, "A/x").await.id;
    let mut below: Vec<String> = j
        .done_below(id, "A".into(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.rel)
        .collect();
    below.sort();
    assert_eq!(below, ["A/sub/y", "A/x"], "not AB/z: a folder is a whole name");
    assert_eq!(
        j.done_below(id, "A".into(), 1).await.unwrap().len(),
        2,
        "limit + 1: too many"
    );
    let pair = || ("up/A".to_string(), "up/C".to_string());
    assert_eq!(j.folder_rename_of(id, pair().0, pair().1).await.unwrap(), None);
    let rename = j
        .folder_rename_begin(
            id,
            FolderRenameAsk {
                old_rel: "A".into(),
                new_rel: "C".into(),
                old_remote: pair().0,
                new_remote: pair().1,
                folder_no: "f9".into(),
            },
            1,
        )
        .await
        .unwrap();
    let asked = j.folder_rename_of(id, pair().0, pair().1).await.unwrap().unwrap();
    assert_eq!(
        (asked.folder_no.as_str(), asked.state.as_str()),
        ("f9", "sending")
    );
    j.folder_rename_end(rename, "done".into()).await.unwrap();
    let asked = j.folder_rename_of(id, pair().0, pair().1).await.unwrap().unwrap();
    assert_eq!(asked.state, "done");
}
