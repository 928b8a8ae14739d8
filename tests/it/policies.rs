//! Studio policies (issue 15): serving order and per-root priority, the
//! small files' lane, and starting from now (`existing = "skip"`, `max_age`).

use std::time::{Duration, SystemTime};

use crate::harness::*;

fn cli(sb: &Sandbox, args: &[&str]) -> Output {
    let mut c = sb.cmd();
    c.args(args);
    run(c)
}

fn names(emu: &Emulator) -> Vec<String> {
    emu.ledger()
        .iter()
        .map(|e| e["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn order_and_priority_decide_which_file_starts_next() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::new(
        &emu,
        "settle = \"200ms\"\nconcurrent_files = 1\norder = \"smallest\"\n[control]\nlisten = \"127.0.0.1:0\"\n",
    );
    let (a, b) = (sb.path("a"), sb.path("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let text = std::fs::read_to_string(&sb.config).unwrap()
        + &format!(
            "[[watch]]\npath = \"{}\"\nremote_folder = \"a\"\n[[watch]]\npath = \"{}\"\nremote_folder = \"b\"\npriority = 5\n",
            a.display(),
            b.display()
        );
    std::fs::write(&sb.config, text).unwrap();
    let mut agent = sb.running_agent(&[]);
    // Held while everything is queued, so the order is the queue's, not arrival's.
    let out = cli(&sb, &["pause"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for (dir, name, size) in [
        (&a, "a5000.bin", 5000),
        (&a, "a1000.bin", 1000),
        (&a, "a3000.bin", 3000),
        (&b, "b4000.bin", 4000),
        (&b, "b2000.bin", 2000),
    ] {
        write_file(&dir.join(name), size, size as u64);
    }
    assert!(
        wait_until(Duration::from_secs(30), || {
            let st = sb.status();
            st["roots"][0]["pending"] == 3 && st["roots"][1]["pending"] == 2
        }),
        "{}",
        sb.status()
    );
    assert_eq!(cli(&sb, &["resume"]).code, 0);
    assert!(wait_until(Duration::from_secs(30), || emu.ledger().len() == 5));
    assert_eq!(
        names(&emu),
        ["b2000.bin", "b4000.bin", "a1000.bin", "a3000.bin", "a5000.bin"],
        "priority 5 first, then smallest first"
    );
    assert_eq!(agent.stop().code, 0);
}

#[test]
fn small_files_pass_a_long_upload_in_their_own_lane() {
    // Two big files would take both slots of `concurrent_files = 2`; one
    // slot is kept for files up to `direct_upload_max`. The masters take
    // about 24 s at 8 MiB/s: room for 50 proxies on a loaded CI machine
    // (at 16 MiB/s, once hashing got fast, CI saw a master finish first).
    let emu = Emulator::start(&["--part-size", "8MiB"]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\nbandwidth_limit = \"8MiB/s\"\ndirect_upload_max = \"1MiB\"\n",
        "",
    );
    let mut agent = sb.running_agent(&[]);
    write_file(&sb.drop_dir().join("master-1.mov"), 96 * 1024 * 1024, 1);
    write_file(&sb.drop_dir().join("master-2.mov"), 96 * 1024 * 1024, 2);
    assert!(
        wait_until(Duration::from_secs(30), || sb.status()["in_flight"]
            .as_array()
            .is_some_and(|f| !f.is_empty())),
        "{}",
        sb.status()
    );
    for i in 0..50 {
        write_file(&sb.drop_dir().join(format!("proxy-{i:02}.mp4")), 20_000, 100 + i);
    }
    assert!(
        wait_until(Duration::from_secs(60), || names(&emu)
            .iter()
            .filter(|n| n.starts_with("proxy-"))
            .count()
            == 50),
        "{:?}",
        names(&emu)
    );
    let done = names(&emu);
    assert!(
        !done.iter().any(|n| n.starts_with("master-")),
        "every proxy was done while the masters were still in flight: {done:?}"
    );
    assert!(wait_until(Duration::from_secs(120), || emu.ledger().len() == 52));
    assert_eq!(agent.stop().code, 0);
}

/// Sets a file's modification time `age` in the past.
fn age(path: &std::path::Path, age: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn existing_skip_and_max_age_start_from_now_and_changed_files_still_go() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        "existing = \"skip\"\nmax_age = \"7d\"\n",
    );
    let drop = sb.drop_dir();
    for i in 0..3 {
        write_file(&drop.join(format!("old-{i}.mov")), 1000, i);
    }
    // An archive elsewhere, to be copied in later with its mtime kept.
    let archive = sb.path("archive.mov");
    write_file(&archive, 1500, 9);
    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(emu.ledger().is_empty(), "what was there is not sent");
    let st = sb.status();
    assert_eq!(st["roots"][0]["skipped"], 3, "{st}");
    let mut c = sb.cmd();
    c.arg("status");
    assert!(run(c).stdout.contains("3 skipped by policy"));

    let mut agent = sb.running_agent(&[]);
    // New, a change to a skipped file, and a copy that keeps an old mtime
    // (`cp -p`): all go. A file modified 30 days ago does not (max_age).
    write_file(&drop.join("new.mov"), 1000, 20);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(drop.join("old-1.mov"))
            .unwrap();
        f.write_all(b"more").unwrap();
    }
    std::fs::copy(&archive, drop.join("copied.mov")).unwrap();
    age(&drop.join("copied.mov"), Duration::from_secs(86400));
    write_file(&drop.join("ancient.mov"), 1000, 21);
    age(&drop.join("ancient.mov"), Duration::from_secs(30 * 86400));
    assert!(
        wait_until(Duration::from_secs(30), || emu.ledger().len() == 3),
        "{:?}\n{}",
        names(&emu),
        agent.log_text()
    );
    let mut got = names(&emu);
    got.sort();
    assert_eq!(got, ["copied.mov", "new.mov", "old-1.mov"]);
    assert!(
        wait_until(Duration::from_secs(20), || sb.status()["roots"][0]["skipped"]
            == 3),
        "old-0, old-2 and ancient are skipped: {}",
        sb.status()
    );
    assert_eq!(agent.stop().code, 0);
}

/// Seconds after midnight, UTC, `delta` seconds from now, as "HH:MM:SS".
fn utc_clock(delta: i64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let s = (now + delta).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[test]
fn a_schedule_window_limits_the_rate_and_a_paused_one_holds_uploads_until_it_ends() {
    // A rate window all day: the parts of a 16 MiB upload arrive at 4 MiB/s,
    // as the service sees it (the time between the first and the last part
    // stored; hashing and the start request are not part of the rate).
    let emu = Emulator::start(&["--part-size", "2MiB"]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\ndirect_upload_max = \"0\"\nconcurrent_parts = 1\n[[agent.schedule]]\n\
         from = \"00:00\"\nto = \"24:00\"\nbandwidth_limit = \"4MiB/s\"\n",
        "",
    );
    let check = cli(&sb, &["check", "--offline"]);
    assert!(
        check
            .stdout
            .contains("schedule now: 4.0 MiB/s (every day 00:00–24:00: 4.0 MiB/s)"),
        "{}",
        check.stdout
    );
    let mut agent = sb.running_agent(&[]);
    write_file(&sb.drop_dir().join("rated.mov"), 16 * 1024 * 1024, 1);
    assert!(wait_until(Duration::from_secs(30), || emu.ledger().len() == 1));
    let session = &emu.sessions_of("rated.mov")[0];
    let mut at: Vec<i64> = session["stored_at_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    at.sort_unstable();
    // 7 parts (14 MiB) after the first one was stored.
    let secs = (at[7] - at[0]) as f64 / 1000.0;
    let rate = 14.0 / secs;
    assert!(
        (3.6..=4.4).contains(&rate),
        "measured {rate:.2} MiB/s for a 4 MiB/s window ({at:?})"
    );
    let mut c = sb.cmd();
    c.arg("status");
    let st = run(c).stdout;
    assert!(st.contains("schedule: 4.0 MiB/s (every day 00:00–24:00"), "{st}");
    assert_eq!(agent.stop().code, 0);

    // A paused window that begins while an upload is in flight (set by a
    // reload, from a second ago to 8 s from now): the upload stops after
    // its current part, nothing new starts, and both go when it ends.
    let emu = Emulator::start(&["--part-size", "1MiB", "--latency", "200"]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\nconcurrent_parts = 1\ndirect_upload_max = \"0\"\n[control]\nlisten = \"127.0.0.1:0\"\n",
        "",
    );
    let mut agent = sb.running_agent_env(&[], &[("TZ", "UTC")]);
    write_file(&sb.drop_dir().join("long.mov"), 60 * 1024 * 1024, 2);
    assert!(
        wait_until(Duration::from_secs(30), || sb.status()["in_flight"][0]["sent"]
            .as_u64()
            .is_some_and(|n| n > 0)),
        "{}",
        sb.status()
    );
    let (from, to) = (utc_clock(-1), utc_clock(8));
    let config = std::fs::read_to_string(&sb.config).unwrap();
    std::fs::write(
        &sb.config,
        config.replace(
            "[control]",
            &format!("[[agent.schedule]]\nfrom = \"{from}\"\nto = \"{to}\"\nbandwidth_limit = \"paused\"\n[control]"),
        ),
    )
    .unwrap();
    let out = cli(&sb, &["reload"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("  changed: agent.schedule: added\n"),
        "{}",
        out.stdout
    );
    assert!(
        wait_until(Duration::from_secs(20), || sb.status()["agent"]["pause_reason"]
            == "paused_by_schedule"),
        "{}",
        agent.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(20), || sb.status()["in_flight"]
            .as_array()
            .is_some_and(Vec::is_empty)),
        "the upload in flight did not stop: {}",
        sb.status()
    );
    write_file(&sb.drop_dir().join("during.mov"), 1000, 3);
    assert!(
        wait_until(Duration::from_secs(10), || sb.status()["roots"][0]["pending"]
            == 2),
        "{}",
        sb.status()
    );
    assert!(emu.ledger().is_empty(), "nothing finishes inside the window");
    let puts = || -> Vec<u64> {
        emu.sessions_of("long.mov")[0]["puts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    let sent = puts().iter().filter(|n| **n > 0).count();
    assert!(sent > 0 && sent < 60, "{:?}", puts());
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger().len() == 2),
        "{}",
        agent.log_text()
    );
    assert!(puts().iter().all(|n| *n == 1), "no part sent twice: {:?}", puts());
    assert!(agent.log_text().contains("schedule: "), "{}", agent.log_text());
    assert_eq!(agent.stop().code, 0);
}
