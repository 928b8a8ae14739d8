//! The agent's life as a service: periodic rescans find what no event
//! reported, a second stop signal quits at once, a folder the service placed
//! elsewhere is warned about, and colour follows the terminal and NO_COLOR.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A file changed through a hard link outside the watched folder raises no
/// event there (inotify reports a write to the watch on the folder of the
/// path written through, the way a file changed by another NFS client is
/// never reported): only the periodic rescan can see it. With rescans off
/// (`rescan_interval = "1h"`) the same change went unseen for 8 s.
#[test]
fn periodic_rescans_find_changes_no_event_reported() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\nrescan_interval = \"2s\"\n", "");
    let file = sb.drop_dir().join("A001.mov");
    write_file(&file, 4096, 1);
    let mut agent = sb.running_agent(&[]);
    assert!(
        wait_until(Duration::from_secs(30), || emu.stored() == 1),
        "{}",
        agent.log_text()
    );
    let outside = sb.path("outside");
    std::fs::create_dir(&outside).unwrap();
    let link = outside.join("A001.mov");
    std::fs::hard_link(&file, &link).unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&link).unwrap();
        f.write_all(b"a second take appended").unwrap();
    }
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || emu.stored() == 2),
        "the rescan never found the change: {}",
        agent.log_text()
    );
    eprintln!("found by the periodic rescan after {:?}", t0.elapsed());
    let ledger = emu.ledger();
    let newest = ledger
        .iter()
        .find(|e| e["size"] == 4096 + 22)
        .expect("the new version");
    assert_eq!(newest["sha256"], sha256_file(&file).as_str(), "{ledger:?}");
    let out = agent.stop();
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// The first SIGTERM stops cleanly, which waits for the journal; a second
/// one quits at once (exit 130) even while that wait lasts. Another process
/// holding the journal's write lock keeps the clean stop waiting.
#[test]
fn a_second_signal_quits_at_once() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let mut agent = sb.running_agent(&[]);
    // "watching" is logged once the journal is open (and in its place).
    assert!(wait_until(Duration::from_secs(20), || agent
        .log_text()
        .contains("watching")));
    let db = rusqlite::Connection::open_with_flags(
        sb.state_dir().join("journal.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
    )
    .unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    agent.signal("TERM");
    assert!(
        wait_until(Duration::from_secs(10), || agent.log_text().contains("stopping")),
        "the first signal was not taken: {}",
        agent.log_text()
    );
    assert!(
        !agent.has_exited(),
        "the clean stop should be waiting for the journal: {}",
        agent.log_text()
    );
    let t0 = Instant::now();
    agent.signal("TERM");
    let out = agent.wait_exit(Duration::from_secs(5));
    let took = t0.elapsed();
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(out.stderr.contains("quitting at once"), "{}", out.stderr);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);
    // Quitting mid-stop leaves a journal the next run opens as usual.
    write_file(&sb.drop_dir().join("after.bin"), 100, 3);
    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.stored(), 1);
}

/// SPEC §4: the folder the service answers with is recorded, and one other
/// than the folder sent is a warning, not a failure.
#[test]
fn a_folder_the_service_moved_is_warned_about_and_recorded() {
    let emu = Emulator::start(&["--folder-root", "intake"]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    write_file(&sb.drop_dir().join("shot.mov"), 2048, 5);
    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "asked for folder \"uploads/drop\" but the service placed it in \"intake/uploads/drop\""
        ),
        "{}",
        out.stderr
    );
    let mut h = sb.cmd();
    h.args(["history", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&run(h).stdout).unwrap();
    assert_eq!(rows[0]["remote_folder"], "intake/uploads/drop", "{rows}");
    // Recorded as done: a second run sends nothing.
    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.stored(), 1);
}

/// Colour on a terminal, none with NO_COLOR set (https://no-color.org), none
/// into a pipe. `script` (util-linux) gives the binary a terminal.
#[test]
fn colour_follows_the_terminal_and_no_color() {
    if Command::new("script").arg("--version").output().is_err() {
        skip_or_fail("`script` (util-linux) is not installed");
        return;
    }
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let on_a_terminal = |no_color: Option<&str>| {
        let mut inner = sb.cmd();
        inner.args(["run", "--once"]);
        let mut c = on_a_terminal(&inner);
        c.env_remove("NO_COLOR");
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        run(c)
    };
    let coloured = on_a_terminal(None);
    assert!(coloured.stdout.contains("\x1b["), "{:?}", coloured.stdout);
    let plain = on_a_terminal(Some("1"));
    assert!(!plain.stdout.contains("\x1b["), "{:?}", plain.stdout);
    assert!(plain.stdout.contains("watching"), "{:?}", plain.stdout);
    let mut piped = sb.cmd();
    piped.env_remove("NO_COLOR").args(["run", "--once"]);
    let out = run(piped);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("watching"), "{}", out.stderr);
    assert!(!out.stderr.contains("\x1b[") && !out.stdout.contains("\x1b["));
}

/// Part URLs that expire mid-upload are renewed: the agent is frozen
/// (SIGSTOP) after its first part until the service's URLs have expired,
/// then thawed. Its next PUT is refused as expired, it starts one new
/// session, and the file is stored once, whole.
#[test]
fn part_urls_that_expire_mid_upload_are_renewed_with_a_new_session() {
    let emu = Emulator::start(&["--part-size", "64KiB", "--url-ttl", "2", "--latency", "30"]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\nconcurrent_parts = 1\ndirect_upload_max = \"64KiB\"\n",
        "",
    );
    let mut agent = sb.running_agent(&[]);
    let file = sb.drop_dir().join("long.mov");
    write_file(&file, 32 * 64 * 1024, 9);
    assert!(
        wait_until(Duration::from_secs(30), || emu
            .sessions_of("long.mov")
            .first()
            .is_some_and(|s| s["parts_received"].as_u64() >= Some(1))),
        "no part arrived: {}",
        agent.log_text()
    );
    agent.signal("STOP");
    let first = emu.sessions_of("long.mov");
    assert_eq!(first.len(), 1);
    assert!(
        first[0]["parts_received"].as_u64() < Some(32),
        "frozen mid-upload"
    );
    let expire_at = first[0]["expire_at"].as_u64().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                > expire_at
        }),
        "the URLs never expired"
    );
    agent.signal("CONT");
    assert!(
        wait_until(Duration::from_secs(60), || emu.stored() == 1),
        "not stored after the URLs expired: {}",
        agent.log_text()
    );
    assert!(
        emu.stat("part_rejected_expired") >= 1,
        "no PUT was refused as expired"
    );
    let sessions = emu.sessions_of("long.mov");
    assert_eq!(sessions.len(), 2, "one renewal: {sessions:?}");
    let completed: Vec<&serde_json::Value> = sessions.iter().filter(|s| s["completed"] == true).collect();
    assert_eq!(completed.len(), 1, "{sessions:?}");
    assert_ne!(
        completed[0]["session"], first[0]["session"],
        "the new session completed"
    );
    let log = agent.log_text();
    assert!(log.contains("the part URLs stopped working"), "{log}");
    assert!(log.contains("starting a new session"), "{log}");
    let ledger = emu.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["sha256"], sha256_file(&file).as_str(), "{ledger:?}");
    let out = agent.stop();
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// SPEC §4: expiry is storage's to judge, not the agent's clock. With the
/// agent's clock two hours ahead of the service (libfaketime), a multipart
/// upload still sends its parts and completes in one session.
#[test]
fn an_agent_clock_hours_ahead_still_uploads_in_one_session() {
    if Command::new("faketime").arg("--version").output().is_err() {
        skip_or_fail("`faketime` (Debian: faketime) is not installed");
        return;
    }
    let emu = Emulator::start(&["--part-size", "64KiB"]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\ndirect_upload_max = \"64KiB\"\n", "");
    let file = sb.drop_dir().join("skewed.mov");
    write_file(&file, 8 * 64 * 1024 + 5, 4);
    let mut inner = sb.cmd();
    inner.args(["run", "--once"]);
    let out = run(wrapped(&["faketime", "-f", "+2h"], &inner));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The wrapper really moved the agent's clock: its log lines are 2 h ahead.
    let stamp = out.stderr.split_whitespace().next().unwrap_or_default();
    let logged =
        humantime::parse_rfc3339_weak(stamp).unwrap_or_else(|e| panic!("no timestamp ({e}): {}", out.stderr));
    let ahead = logged
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        ahead > Duration::from_secs(5400),
        "the clock was not shifted: {stamp}"
    );
    let sessions = emu.sessions_of("skewed.mov");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["completed"], true);
    assert_eq!(emu.stat("part_rejected_expired"), 0);
    assert_eq!(emu.ledger()[0]["sha256"], sha256_file(&file).as_str());
}

/// `run --once` does not wait forever for a file that never stops growing:
/// after five settle windows of change it leaves that file for the next run
/// (saying so) and ends, having stored the files that were finished.
#[test]
fn run_once_leaves_a_file_that_keeps_growing_for_the_next_run() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    write_file(&sb.drop_dir().join("done.mov"), 1000, 1);
    let growing = sb.drop_dir().join("recording.mov");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut f = std::fs::File::create(&growing).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&[7u8; 512]).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = sb.run_once();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("recording.mov is still changing; leaving it for the next run"),
        "{}",
        out.stderr
    );
    let ledger = emu.ledger();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0]["name"], "done.mov");
    // Once it has stopped growing, the next run takes it.
    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.stored(), 2);
}

/// More new files than may settle at once (5,000): the scan waits for room
/// and `run --once` still stores every file, each once.
#[test]
fn run_once_over_more_files_than_settle_at_once_stores_them_all() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"100ms\"\nconcurrent_files = 16\n", "");
    for d in 0..6 {
        let dir = sb.drop_dir().join(format!("reel{d}"));
        std::fs::create_dir(&dir).unwrap();
        for i in 0..1000 {
            std::fs::write(dir.join(format!("f{i:04}.exr")), format!("{d}/{i}")).unwrap();
        }
    }
    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("still changing"), "{}", out.stderr);
    assert_eq!(emu.stored(), 6000);
    assert_eq!(unique_names(&emu.ledger()).len(), 6000);
}
