//! The agent (`run`) end to end: writers of every kind, restarts, crashes,
//! resume, polling, bursts, and the status/history/retry commands.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

fn ledger_has(emu: &Emulator, n: usize) -> bool {
    emu.ledger().len() >= n
}

fn root_counts(status: &Value) -> Value {
    status["roots"][0].clone()
}

/// Waits until the running agent reports everything done and nothing else in
/// flight, so "exactly once" can be asserted without sleeping.
fn wait_idle(sb: &Sandbox, done: i64) -> bool {
    wait_until(Duration::from_secs(60), || {
        let c = root_counts(&sb.status());
        c["done"] == done
            && c["pending"] == 0
            && c["uploading"] == 0
            && c["settling"] == 0
            && c["growing"] == 0
    })
}

#[test]
fn cp_rsync_slow_writer_and_mv_each_upload_once_and_never_half_written() {
    let emu = Emulator::start(&["--part-size", "256KiB"]);
    let sb = Sandbox::watching(&emu, "settle = \"2s\"\n", "");
    let mut agent = sb.running_agent(&[]);
    let outside = sb.path("outside");
    std::fs::create_dir(&outside).unwrap();
    let drop = sb.drop_dir();

    // cp: a plain copy into the folder.
    write_file(&outside.join("copied.mov"), 700_000, 1);
    std::fs::copy(outside.join("copied.mov"), drop.join("copied.mov")).unwrap();
    // rsync: writes `.name.XXXXXX`, then renames it into place.
    write_file(&drop.join(".synced.exr.Ab12Cd"), 900_000, 2);
    std::fs::rename(drop.join(".synced.exr.Ab12Cd"), drop.join("synced.exr")).unwrap();
    // mv: a finished file, and a folder with a file in it, moved in.
    write_file(&outside.join("moved.mp4"), 300_000, 3);
    std::fs::rename(outside.join("moved.mp4"), drop.join("moved.mp4")).unwrap();
    std::fs::create_dir_all(outside.join("shoot/day1")).unwrap();
    write_file(&outside.join("shoot/day1/clip.mxf"), 400_000, 4);
    std::fs::rename(outside.join("shoot"), drop.join("shoot")).unwrap();
    // A slow writer: appends every 100 ms for 5 s (well inside `settle`).
    let slow = drop.join("recording.mov");
    {
        let mut f = std::fs::File::create(&slow).unwrap();
        for i in 0..50u8 {
            f.write_all(&[i; 20_000]).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(wait_idle(&sb, 5), "status: {}", sb.status());
    let out = agent.stop();
    assert_eq!(out.code, 0, "clean stop: {}", out.stderr);

    let ledger = emu.ledger();
    let names = unique_names(&ledger);
    assert_eq!(names.len(), 5, "{names:?}");
    for (rel, folder) in [
        ("copied.mov", "uploads/drop"),
        ("synced.exr", "uploads/drop"),
        ("moved.mp4", "uploads/drop"),
        ("shoot/day1/clip.mxf", "uploads/drop/shoot/day1"),
        ("recording.mov", "uploads/drop"),
    ] {
        let name = rel.rsplit('/').next().unwrap();
        let e = ledger
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{rel} missing"));
        assert_eq!(e["folder"], folder);
        assert_eq!(
            e["sha256"],
            sha256_file(&drop.join(rel)).as_str(),
            "{rel} complete, not half-written"
        );
    }
}

#[test]
fn restart_touch_and_change() {
    let emu = Emulator::start(&["--part-size", "64KiB"]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    for i in 0..3 {
        write_file(&sb.drop_dir().join(format!("f{i}.bin")), 100_000 + i, i as u64);
    }
    let once = || sb.run_once();
    let out = once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.ledger().len(), 3);
    let requests = |emu: &Emulator| {
        [
            "start",
            "part_put",
            "complete",
            "direct",
            "list_files",
            "list_folders",
        ]
        .iter()
        .map(|s| emu.stat(s))
        .sum::<u64>()
    };
    let before = requests(&emu);

    // Restart with nothing changed: no request about any file; only the
    // one key check every start makes (one listing of one file).
    let out = once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        requests(&emu),
        before + 1,
        "restart sent requests beyond the key check"
    );
    let before = before + 1;

    // Touch (new mtime, same bytes): hashed, not uploaded.
    let f0 = sb.drop_dir().join("f0.bin");
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&f0)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let out = once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        requests(&emu),
        before + 1,
        "a touch must not upload (one key check)"
    );

    // Change: exactly one new upload.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f0)
        .unwrap()
        .write_all(b"new take")
        .unwrap();
    let out = once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.stored(), 4);
    let ledger = emu.ledger();
    assert_eq!(ledger.len(), 4);
    assert_eq!(ledger[3]["name"], "f0.bin");
    assert_eq!(ledger[3]["sha256"], sha256_file(&f0).as_str());
    let out = once();
    assert_eq!(out.code, 0);
    assert_eq!(emu.stored(), 4, "and only once");
}

#[test]
fn crash_test_sigkill_ten_times_loses_and_duplicates_nothing() {
    crash_test(&[
        "--part-size",
        "1MiB",
        "--latency",
        "10",
        "--complete-delay",
        "300",
    ]);
}

/// The SDKs' reading, with a complete that takes its time and is forgotten
/// once done: a kill during complete must be reconciled, never re-sent blind.
#[test]
fn crash_test_with_slow_forgetful_completes_in_the_sdk_reading() {
    crash_test(&[
        "--part-size",
        "1MiB",
        "--latency",
        "10",
        "--answers",
        "sdk",
        "--forget-sessions",
        "--complete-delay",
        "500",
    ]);
}

/// What the emulator had open at the instant of a kill.
#[derive(Debug, Default)]
struct Interrupted {
    open_session: bool,
    complete: bool,
}

fn in_flight(emu: &Emulator) -> Interrupted {
    let sessions = emu.get("/_emulator/sessions");
    let list = sessions.as_array().cloned().unwrap_or_default();
    Interrupted {
        open_session: list.iter().any(|s| s["completed"] == false),
        complete: list.iter().any(|s| s["completing"] == true),
    }
}

/// SIGKILL ten times, each at a moment chosen by condition, not by clock:
/// while parts of a session are being sent, or while a complete is in
/// flight. 200 files of 1 KiB–30 MiB arrive in batches, one per kill, so
/// there is always work to interrupt.
fn crash_test(emulator_args: &[&str]) {
    let emu = Emulator::start(emulator_args);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"300ms\"\nconcurrent_files = 4\ndirect_upload_max = \"1MiB\"\n",
        "",
    );
    let drop = sb.drop_dir();
    let mut seed: u64 = 0xC0FFEE;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let sizes: Vec<usize> = (0..200)
        .map(|_| {
            let x = (rnd() % 10_000) as f64 / 10_000.0;
            (1024.0 * (30.0f64 * 1024.0).powf(x)) as usize
        })
        .collect();
    let mut kills = Vec::new();
    for round in 0..10 {
        for (i, size) in sizes.iter().enumerate().skip(round * 20).take(20) {
            write_file(&drop.join(format!("take-{i:03}.bin")), *size, i as u64 + 7);
        }
        let want_complete = round % 3 == 1;
        let mut agent = sb.spawn_agent(&[]);
        let hit = wait_until(Duration::from_secs(60), || {
            let now = in_flight(&emu);
            if want_complete {
                now.complete
            } else {
                now.open_session && !now.complete
            }
        });
        let at = in_flight(&emu);
        agent.crash();
        kills.push((want_complete, hit, at));
    }
    let open = kills.iter().filter(|k| k.2.open_session).count();
    let completes = kills.iter().filter(|k| k.2.complete).count();
    eprintln!("crash test: {open} of 10 kills interrupted an open session, {completes} a complete in flight");
    assert!(open >= 8, "kills that hit an open session: {kills:?}");
    assert!(completes >= 2, "kills that hit a complete: {kills:?}");

    let mut agent = sb.spawn_agent(&[]);
    assert!(
        wait_until(Duration::from_secs(240), || ledger_has(&emu, 200)),
        "only {} of 200 arrived",
        emu.ledger().len()
    );
    assert!(wait_idle(&sb, 200), "{}", sb.status());
    assert_eq!(agent.stop().code, 0);

    let ledger = emu.ledger();
    assert_eq!(unique_names(&ledger).len(), 200);
    assert_eq!(ledger.len(), 200, "none twice");
    for (i, _) in sizes.iter().enumerate() {
        let name = format!("take-{i:03}.bin");
        let e = ledger.iter().find(|e| e["name"] == name.as_str()).unwrap();
        assert_eq!(
            e["sha256"],
            sha256_file(&drop.join(&name)).as_str(),
            "{name} byte-exact"
        );
    }
    let conn = rusqlite::Connection::open(sb.state_dir().join("journal.sqlite3")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn interrupted_large_upload_resumes_without_resending_parts() {
    let emu = Emulator::start(&["--part-size", "8MiB"]);
    // A fixed count of parts in flight, so the bound on parts sent again
    // below (those in flight at the kill) says something.
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\nbandwidth_limit = \"40MiB/s\"\nconcurrent_parts = 4\n",
        "",
    );
    let file = sb.drop_dir().join("big.mov");
    write_file(&file, 200 * 1024 * 1024, 11);
    let mut agent = sb.spawn_agent(&["--once"]);
    assert!(
        wait_until(Duration::from_secs(60), || emu.stat("part_ok") >= 8),
        "parts started arriving"
    );
    agent.crash();
    let done_before = emu.stat("part_ok");
    let out = run({
        let mut c = sb.cmd();
        c.args(["run", "--once"]);
        c
    });
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("resuming"), "{}", out.stderr);
    let ledger = emu.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["sha256"], sha256_file(&file).as_str());
    assert_eq!(emu.stat("start_ok"), 1, "the same session was resumed");
    let session = emu.get(&format!(
        "/_emulator/sessions/{}",
        ledger[0]["session"].as_str().unwrap()
    ));
    let puts: Vec<u64> = session["puts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(puts.len(), 25);
    let resent = puts.iter().filter(|n| **n > 1).count() as u64;
    // Only parts in flight at the kill go again: at most concurrent_parts
    // (4) being sent, plus in each slot the part that had just finished but
    // whose mark was not yet durable (marks are group-committed, not awaited
    // before the slot's next part; seen once in CI under load: 5).
    assert!(resent <= 2 * 4, "{resent} parts re-sent: {puts:?}");
    assert!(resent < done_before, "finished parts were not re-sent");
}

#[test]
fn polling_and_watch_limit_fallback_still_pick_files_up() {
    let emu = Emulator::start(&[]);
    let polled = Sandbox::watching(&emu, "settle = \"200ms\"\npoll_interval = \"300ms\"\n", "");
    let _a = polled.running_agent(&[]);
    write_file(&polled.drop_dir().join("polled.bin"), 5000, 1);
    assert!(wait_until(Duration::from_secs(30), || emu
        .ledger()
        .iter()
        .any(|e| e["name"] == "polled.bin")));
    let mode = polled.status()["roots"][0]["watch"].clone();
    assert!(
        mode.as_str().is_some_and(|m| m.contains("poll")),
        "polling was used: {mode}"
    );

    let limited = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let mut agent = limited.running_agent_env(&[], &[("AUTORENDER_SYNC_SIMULATE_WATCH_LIMIT", "1")]);
    write_file(&limited.drop_dir().join("fallback.bin"), 5000, 2);
    assert!(wait_until(Duration::from_secs(30), || emu
        .ledger()
        .iter()
        .any(|e| e["name"] == "fallback.bin")));
    let out = agent.stop();
    assert!(
        out.stderr.contains("max_user_watches"),
        "the warning says how to raise the limit: {}",
        out.stderr
    );
}

/// Drops `n` small files into a watched folder at once; every one must be
/// uploaded exactly once. With `frozen`, the agent is stopped (SIGSTOP)
/// while they are written, so the kernel's event queue overflows for sure.
/// Returns the agent's log and how it watched the folder.
pub fn burst(n: usize, frozen: bool) -> (String, String) {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"300ms\"\nconcurrent_files = 8\n", "");
    let mut agent = sb.running_agent(&[]);
    let mode = sb.status()["roots"][0]["watch"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if frozen {
        agent.signal("STOP");
    }
    for i in 0..n {
        std::fs::write(sb.drop_dir().join(format!("s{i:05}.txt")), format!("file {i}\n")).unwrap();
    }
    if frozen {
        agent.signal("CONT");
    }
    assert!(
        wait_until(Duration::from_secs(600), || ledger_has(&emu, n)),
        "{} of {n}",
        emu.ledger().len()
    );
    assert!(wait_idle(&sb, n as i64));
    let out = agent.stop();
    assert_eq!(out.code, 0);
    let ledger = emu.ledger();
    assert_eq!(unique_names(&ledger).len(), n);
    assert_eq!(ledger.len(), n);
    (out.stderr, mode)
}

#[test]
fn burst_of_2000_small_files_all_uploaded_once() {
    burst(2000, false);
}

#[test]
fn failures_show_in_status_and_history_and_retry_requeues() {
    let emu = Emulator::start(&["--max-size", "1000"]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\nmax_attempts = 1\n", "");
    write_file(&sb.drop_dir().join("too-big.bin"), 5000, 1);
    write_file(&sb.drop_dir().join("ok.bin"), 10, 2);
    let once = || sb.run_once();
    let out = once();
    assert_eq!(out.code, 1, "a failed file → exit 1: {}", out.stderr);
    assert!(out.stderr.contains("retry"), "{}", out.stderr);
    let st = sb.status();
    let c = root_counts(&st);
    assert_eq!(
        (c["done"].as_i64(), c["failed"].as_i64()),
        (Some(1), Some(1)),
        "{st}"
    );
    assert!(c["failures"][0][1].as_str().unwrap().contains("413"), "{st}");
    assert_eq!(st["agent"]["running"], false);

    let mut h = sb.cmd();
    h.args(["history", "--failed", "--json"]);
    let out = run(h);
    let rows: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0]["local_path"].as_str().unwrap().ends_with("too-big.bin"));

    let mut r = sb.cmd();
    r.args(["retry", "--all", "--json"]);
    let out = run(r);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let answer: Value = serde_json::from_str(&out.stdout).expect("retry --json is JSON");
    assert_eq!(answer["requeued"], 1, "{}", out.stdout);
    assert_eq!(root_counts(&sb.status())["pending"], 1);
    let starts = emu.stat("start") + emu.stat("direct");
    assert_eq!(once().code, 1);
    assert!(emu.stat("start") + emu.stat("direct") > starts, "retried");
}

#[test]
fn second_agent_refuses_and_dry_run_sends_nothing() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    write_file(&sb.drop_dir().join("a.bin"), 100, 1);
    let mut dry = sb.cmd();
    dry.env_remove("AUTORENDER_API_KEY")
        .args(["run", "--once", "--dry-run"]);
    let out = run(dry);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("would upload"), "{}", out.stderr);
    assert_eq!(emu.stat("start") + emu.stat("direct"), 0);
    let recorded: i64 = rusqlite::Connection::open(sb.state_dir().join("journal.sqlite3"))
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM files", [], |r| r.get(0)))
        .unwrap_or(0);
    assert_eq!(recorded, 0, "a dry run records nothing");

    let mut agent = sb.running_agent(&[]);
    let mut second = sb.cmd();
    second.arg("run");
    let out = run(second);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("already running"), "{}", out.stderr);
    assert_eq!(agent.stop().code, 0);
}

#[test]
fn upload_command_is_recorded_so_the_agent_does_not_send_it_again() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let file = sb.drop_dir().join("manual.mov");
    write_file(&file, 3000, 5);
    let mut up = sb.cmd();
    up.args(["upload", "--folder", "uploads/drop"]).arg(&file);
    assert_eq!(run(up).code, 0);
    let mut once = sb.cmd();
    once.args(["run", "--once"]);
    let out = run(once);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.stored(), 1, "the agent skipped the file `upload` sent");
    let mut h = sb.cmd();
    h.args(["history", "--json"]);
    let rows: Vec<Value> = serde_json::from_str(&run(h).stdout).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["remote_name"], "manual.mov");
    assert_eq!(rows[0]["file_no"], emu.ledger()[0]["file_no"]);
}

#[test]
fn after_upload_move_and_delete_act_only_after_the_upload_is_recorded() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::new(&emu, "settle = \"200ms\"\n");
    let (moved_root, deleted_root, done) = (sb.path("moving"), sb.path("deleting"), sb.path("done"));
    for d in [&moved_root, &deleted_root, &done] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::create_dir_all(moved_root.join("day1")).unwrap();
    std::fs::create_dir_all(done.join("day1")).unwrap();
    std::fs::write(done.join("day1/clip.mov"), b"an older clip with the same name").unwrap();
    let text = std::fs::read_to_string(&sb.config).unwrap()
        + &format!(
            "[[watch]]\npath = \"{}\"\nremote_folder = \"m\"\nafter_upload = \"move\"\nmove_to = \"{}\"\n\
             [[watch]]\npath = \"{}\"\nremote_folder = \"d\"\nafter_upload = \"delete\"\n",
            moved_root.display(),
            done.display(),
            deleted_root.display()
        );
    std::fs::write(&sb.config, text).unwrap();
    write_file(&moved_root.join("day1/clip.mov"), 5000, 1);
    let sha = sha256_file(&moved_root.join("day1/clip.mov"));
    write_file(&deleted_root.join("gone.mov"), 100, 2);
    let mut once = sb.cmd();
    once.args(["run", "--once"]);
    let out = run(once);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.ledger().len(), 2);
    assert!(!moved_root.join("day1/clip.mov").exists(), "moved away");
    assert_eq!(
        sha256_file(&done.join("day1/clip (1).mov")),
        sha,
        "kept its sub-path, no overwrite"
    );
    assert_eq!(
        std::fs::read(done.join("day1/clip.mov")).unwrap(),
        b"an older clip with the same name"
    );
    assert!(!deleted_root.join("gone.mov").exists(), "deleted");
    // Seen again later, nothing is re-uploaded.
    let mut again = sb.cmd();
    again.args(["run", "--once"]);
    assert_eq!(run(again).code, 0);
    assert_eq!(emu.stored(), 2);
}

#[test]
fn a_rejected_key_pauses_uploads_without_a_hot_loop() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    write_file(&sb.drop_dir().join("a.mov"), 100, 1);
    let mut agent = sb.running_agent_env(&[], &[("AUTORENDER_API_KEY", "wrong-key")]);
    assert!(wait_until(
        Duration::from_secs(30),
        || sb.status()["agent"]["paused"] == true
    ));
    // Let several heartbeats pass, then count: a hot loop would hammer the service.
    let beat = sb.status()["agent"]["heartbeat_at_ms"].as_i64().unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        sb.status()["agent"]["heartbeat_at_ms"]
            .as_i64()
            .is_some_and(|b| b >= beat + 3000)
    }));
    assert!(
        emu.stat("unauthorized") <= 2,
        "{} rejected calls",
        emu.stat("unauthorized")
    );
    assert_eq!(sb.status()["roots"][0]["pending"], 1, "the file stays pending");
    // The key becomes valid (here: the service now takes it); the slow
    // re-check (every 60 s) notices and uploads resume by themselves.
    let addr = emu.url.trim_start_matches("http://").to_string();
    drop(emu);
    let emu = Emulator::start(&["--listen", &addr, "--api-key", "wrong-key"]);
    assert!(
        wait_until(Duration::from_secs(90), || emu.stored() == 1),
        "resumed after the re-check"
    );
    let out = agent.stop();
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stderr.matches("API key was rejected").count(),
        1,
        "one clear line: {}",
        out.stderr
    );
    assert!(out.stderr.contains("accepted again"), "{}", out.stderr);
}
