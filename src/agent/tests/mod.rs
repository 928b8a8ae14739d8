//! The agent in-process, with tokio's clock paused: settle windows, per-file
//! backoff, outage and key pauses go by in milliseconds of real time, and
//! every assertion about *when* something happened reads the virtual clock,
//! so none depends on the machine's speed. The files, the watcher and the
//! journal are real (temp dirs, inotify, SQLite); only the transfer is a
//! script ([`Scripted`]), which is what makes the clock pausable: a real
//! HTTP exchange under an auto-advancing clock would see its timeouts fire.
//! The same behaviour is tested end to end through the binary in `tests/it`.
//!
//! Waiting: a condition is polled on the virtual clock, with a *real*
//! deadline, because the watcher's events arrive in real time while the
//! paused clock auto-advances.

mod fixture;

use fixture::*;

use super::*;

#[tokio::test(start_paused = true)]
async fn a_file_is_sent_once_after_settling_and_a_restart_sends_nothing() {
    let p = place("", "");
    let t = Scripted::answering(&[]);
    let written = Instant::now();
    std::fs::write(p.drop.join("a.mov"), b"frames").unwrap();
    let agent = start(&p, t.clone(), RunOptions::default());
    until("the upload", async || t.sends().len() == 1).await;
    let (path, at) = t.sends()[0].clone();
    assert_eq!(path, p.drop.join("a.mov"));
    assert!(
        at - written >= SETTLE,
        "sent {:?} after it was written",
        at - written
    );
    until("the record", async || {
        agent
            .row(&p, "a.mov")
            .await
            .is_some_and(|r| r.state == State::Done)
    })
    .await;
    // Quiet for two virtual minutes (many settle windows): nothing more is sent.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(t.sends().len(), 1);
    agent.stop().await;

    // A restart finds the file uploaded, unchanged.
    let again = start(
        &p,
        t.clone(),
        RunOptions {
            once: true,
            ..RunOptions::default()
        },
    );
    let report = again.task.await.unwrap().unwrap();
    assert_eq!((report.uploaded, report.skipped), (0, 1), "{report:?}");
    assert_eq!(t.sends().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_touch_is_hashed_not_sent_and_a_change_is_sent_after_it_settles() {
    let p = place("", "");
    let t = Scripted::answering(&[]);
    let file = p.drop.join("b.mov");
    std::fs::write(&file, b"version one").unwrap();
    let agent = start(&p, t.clone(), RunOptions::default());
    until("the first upload", async || {
        agent
            .row(&p, "b.mov")
            .await
            .is_some_and(|r| r.state == State::Done)
    })
    .await;

    // Same bytes, a new mtime: the journal learns the new mtime, nothing is sent.
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let touched = crate::fileid::Fingerprint::of(&file).unwrap();
    until("the touch to be recorded", async || {
        agent
            .row(&p, "b.mov")
            .await
            .is_some_and(|r| r.done_mtime_ns == Some(touched.mtime_ns as i64))
    })
    .await;
    assert_eq!(t.sends().len(), 1, "a touch is not a change");

    // New bytes: sent again, not before a settle window has passed.
    let changed = Instant::now();
    std::fs::write(&file, b"version two!").unwrap();
    until("the second upload", async || t.sends().len() == 2).await;
    let at = t.sends()[1].1;
    assert!(at - changed >= SETTLE, "sent {:?} after the change", at - changed);
    until("the second record", async || {
        agent
            .row(&p, "b.mov")
            .await
            .is_some_and(|r| r.state == State::Done && r.done_size == Some(12))
    })
    .await;
    let report = agent.stop().await;
    assert_eq!(report.uploaded, 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_is_retried_after_a_growing_backoff() {
    let p = place("", "");
    let t = Scripted::answering(&[Answer::Unverified, Answer::Unverified]);
    std::fs::write(p.drop.join("c.mov"), b"c").unwrap();
    let agent = start(&p, t.clone(), RunOptions::default());
    until("the third attempt", async || t.sends().len() == 3).await;
    until("the record", async || {
        agent
            .row(&p, "c.mov")
            .await
            .is_some_and(|r| r.state == State::Done)
    })
    .await;
    let at: Vec<Instant> = t.sends().iter().map(|s| s.1).collect();
    // 5 s then 10 s, each with up to a quarter more as jitter, and up to one
    // heartbeat (1 s) before the loop looks at the queue again.
    let (first, second) = (at[1] - at[0], at[2] - at[1]);
    let beat = Duration::from_millis(1100);
    assert!(
        first >= Duration::from_secs(5) && first <= Duration::from_millis(6250) + beat,
        "{first:?}"
    );
    assert!(
        second >= Duration::from_secs(10) && second <= Duration::from_millis(12500) + beat,
        "{second:?}"
    );
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn after_max_attempts_a_file_is_failed_and_left_alone() {
    let p = place("max_attempts = 3", "");
    let t = Scripted::answering(&[Answer::Unverified; 10]);
    std::fs::write(p.drop.join("d.mov"), b"d").unwrap();
    let agent = start(&p, t.clone(), RunOptions::default());
    until("the file to fail", async || {
        agent
            .row(&p, "d.mov")
            .await
            .is_some_and(|r| r.state == State::Failed)
    })
    .await;
    let row = agent.row(&p, "d.mov").await.unwrap();
    assert_eq!(row.attempts, 3);
    assert!(row.last_error.unwrap().contains("could not be verified"));
    // Ten virtual minutes later (the next backoff would have been 20 s) it
    // has not been tried again.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(t.sends().len(), 3);
    let report = agent.stop().await;
    assert_eq!(report.failed, 1);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_service_pauses_everything_without_spending_attempts() {
    let p = place("max_attempts = 1", "");
    let t = Scripted::answering(&[Answer::Unreachable]);
    // Accepted at start-up; then away for two rechecks.
    t.check_answers
        .lock()
        .unwrap()
        .extend([Answer::Store, Answer::Unreachable, Answer::Unreachable]);
    std::fs::write(p.drop.join("e.mov"), b"e").unwrap();
    let agent = start(&p, t.clone(), RunOptions::default());
    until("the upload after the outage", async || {
        agent
            .row(&p, "e.mov")
            .await
            .is_some_and(|r| r.state == State::Done)
    })
    .await;
    let sends = t.sends();
    let checks = t.checks()[1..].to_vec();
    assert_eq!(sends.len(), 2, "one attempt in the outage, one after");
    assert_eq!(checks.len(), 3, "asked every 15 s until it answered");
    assert!(checks[0] - sends[0].1 >= OUTAGE_RECHECK);
    assert!(checks[1] - checks[0] >= OUTAGE_RECHECK && checks[2] - checks[1] >= OUTAGE_RECHECK);
    assert!(
        sends[1].1 >= checks[2],
        "nothing was sent while the service was away"
    );
    // max_attempts = 1, yet the file was not failed: the outage spent no attempt.
    let report = agent.stop().await;
    assert_eq!((report.uploaded, report.failed), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_rejected_key_pauses_uploads_until_it_is_accepted() {
    // One file at a time, so the second file is still waiting when the key is refused.
    let p = place("concurrent_files = 1", "");
    let t = Scripted::answering(&[Answer::BadKey]);
    // Accepted at start-up (then revoked while the agent runs).
    t.check_answers
        .lock()
        .unwrap()
        .extend([Answer::Store, Answer::BadKey]);
    std::fs::write(p.drop.join("f.mov"), b"f").unwrap();
    std::fs::write(p.drop.join("g.mov"), b"g").unwrap();
    let agent = start(&p, t.clone(), RunOptions::default());
    until("both uploads", async || t.sends().len() == 3).await;
    let sends = t.sends();
    let checks = t.checks()[1..].to_vec();
    assert_eq!(checks.len(), 2, "checked once a minute until accepted");
    assert!(checks[0] - sends[0].1 >= AUTH_RECHECK);
    assert!(checks[1] - checks[0] >= AUTH_RECHECK);
    assert!(
        sends[1].1 >= checks[1] && sends[2].1 >= checks[1],
        "the other file waited too"
    );
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn after_upload_delete_removes_the_sent_file_only() {
    let p = place("", "after_upload = \"delete\"");
    let t = Scripted::answering(&[]);
    std::fs::write(p.drop.join("h.mov"), b"h").unwrap();
    let agent = start(&p, t.clone(), RunOptions::default());
    until("the file to be removed", async || !p.drop.join("h.mov").exists()).await;
    assert_eq!(t.sends().len(), 1);
    assert_eq!(agent.row(&p, "h.mov").await.unwrap().state, State::Done);
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rejected_key_is_reported_at_start_before_any_file_is_ready() {
    let p = place("", "");
    // `--once` stops at once with the key error (exit 3 in the CLI), before
    // anything is sent; the file stays queued for the next run.
    let t = Scripted::answering(&[]);
    t.check_answers.lock().unwrap().push_back(Answer::BadKey);
    std::fs::write(p.drop.join("j.mov"), b"j").unwrap();
    let once = start(
        &p,
        t.clone(),
        RunOptions {
            once: true,
            ..RunOptions::default()
        },
    );
    let ended = once.task.await.unwrap();
    assert!(matches!(ended, Err(AgentError::Auth(_))), "{ended:?}");
    assert!(t.sends().is_empty());
    // `run`: nothing is sent until the key is accepted (a minute later).
    let t = Scripted::answering(&[]);
    t.check_answers.lock().unwrap().push_back(Answer::BadKey);
    let agent = start(&p, t.clone(), RunOptions::default());
    let began = Instant::now();
    std::fs::write(p.drop.join("k.mov"), b"k").unwrap();
    // j.mov (never tried by the run above) and k.mov.
    until("both uploads once the key is accepted", async || {
        t.sends().len() == 2
    })
    .await;
    for (path, at) in t.sends() {
        assert!(
            at - began >= AUTH_RECHECK,
            "{} was sent before the re-check",
            path.display()
        );
    }
    // No answer at start (no network at boot) does not hold anything back.
    agent.stop().await;
    let t = Scripted::answering(&[]);
    t.check_answers.lock().unwrap().push_back(Answer::Unreachable);
    let agent = start(&p, t.clone(), RunOptions::default());
    let began = Instant::now();
    std::fs::write(p.drop.join("l.mov"), b"l").unwrap();
    until("the upload", async || t.sends().len() == 1).await;
    assert!(t.sends()[0].1 - began < Duration::from_secs(15), "not held back");
    agent.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_paused_schedule_window_starts_nothing_until_it_ends() {
    // 2026-11-23 (a Monday) 10:00 UTC; the window holds uploads until 10:02.
    let monday_10h = 1_795_392_000_000 + 10 * 3_600_000;
    let p = place(
        "[[agent.schedule]]\nfrom = \"10:00\"\nto = \"10:02\"\nbandwidth_limit = \"paused\"\n",
        "",
    );
    let t = Scripted::answering(&[]);
    let journal = Journal::open(&p.state).unwrap();
    let began = Instant::now();
    let agent = Agent::new(
        p.settings.clone(),
        t.clone(),
        journal.clone(),
        RunOptions::default(),
        Clock::following_tokio(monday_10h),
    )
    .with_time_zone(jiff::tz::TimeZone::UTC);
    let stop = CancellationToken::new();
    let task = tokio::spawn(agent.run(stop.clone()));
    std::fs::write(p.drop.join("held.mov"), b"frames").unwrap();
    until("the file queued", async || {
        journal
            .lookup(p.settings.watches[0].key(), "held.mov".into())
            .await
            .unwrap()
            .is_some_and(|r| r.state == State::Pending)
    })
    .await;
    assert!(t.sends().is_empty(), "nothing starts inside the window");
    until("the upload after the window", async || t.sends().len() == 1).await;
    let sent_after = t.sends()[0].1 - began;
    assert!(
        sent_after >= Duration::from_secs(120) && sent_after < Duration::from_secs(125),
        "sent {sent_after:?} after 10:00; the window ended at 10:02"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
}
