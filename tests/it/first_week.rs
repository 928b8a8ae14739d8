//! The first week, round two (issue 27): what a pipeline TD coming from
//! rclone tripped on, each through the real binary.

use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::Value;

use crate::control::Receiver;
use crate::harness::*;

/// The only upload in flight, as `status --json` shows it.
fn in_flight(sb: &Sandbox) -> Option<Value> {
    sb.status()["in_flight"].as_array()?.first().cloned()
}

#[test]
fn a_stalled_upload_says_so_in_status_health_an_event_and_the_log_and_recovers() {
    let emu = Emulator::start(&[]);
    let hooks = Receiver::start(true);
    let sb = Sandbox::watching(
        &emu,
        &format!(
            "settle = \"200ms\"\nstall_after = \"5s\"\nbandwidth_limit = \"2MiB/s\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\n\
             [[notify]]\nurl = \"{}/hook\"\nevents = [\"stalled\"]\n",
            hooks.url
        ),
        "",
    );
    let mut agent = sb.running_agent(&[]);
    let (url, _) = sb.control();
    let take = sb.drop_dir().join("take.mov");
    write_file(&take, 24 * 1024 * 1024, 7);
    assert!(
        wait_until(Duration::from_secs(60), || in_flight(&sb)
            .is_some_and(|f| f["sent"].as_u64().unwrap_or(0) > 0)),
        "the upload never started sending: {}",
        agent.log_text()
    );

    // The network takes no bytes: the rate now falls to 0, time left is
    // unknown, and past stall_after the upload is stalled everywhere.
    emu.freeze();
    assert!(
        wait_until(Duration::from_secs(60), || in_flight(&sb)
            .is_some_and(|f| f["stalled_s"].as_u64().is_some_and(|s| s >= 5))),
        "{:?}\n{}",
        in_flight(&sb),
        agent.log_text()
    );
    let f = in_flight(&sb).unwrap();
    assert_eq!(f["rate"], 0, "{f}");
    assert!(f["eta_s"].is_null(), "{f}");
    let health = Client::new().get(format!("{url}/healthz")).send().unwrap();
    assert_eq!(health.status().as_u16(), 503);
    let why = health.text().unwrap();
    assert!(why.contains("take.mov is stalled: nothing sent for"), "{why}");
    let out = {
        let mut c = sb.cmd();
        c.arg("status");
        run(c)
    };
    assert!(
        out.stdout.contains("take.mov: ") && out.stdout.contains("stalled: nothing sent for"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("uploading now: 1 upload(s): ") && out.stdout.contains("time left unknown"),
        "{}",
        out.stdout
    );
    assert!(
        wait_until(Duration::from_secs(30), || !hooks.events("/hook").is_empty()),
        "no stalled event"
    );
    let e = &hooks.events("/hook")[0];
    assert_eq!(e["event"], "stalled", "{e}");
    assert!(e["path"].as_str().unwrap().ends_with("take.mov"), "{e}");
    assert!(
        agent.log_text().contains("take.mov: nothing sent for"),
        "{}",
        agent.log_text()
    );

    // The network comes back: it is sent, once, and the stall is over.
    emu.thaw();
    assert!(
        wait_until(Duration::from_secs(120), || emu.ledger().len() == 1),
        "{}",
        agent.log_text()
    );
    assert_eq!(
        sha256_file(&take),
        emu.ledger()[0]["sha256"].as_str().unwrap_or("")
    );
    assert!(
        wait_until(Duration::from_secs(20), || Client::new()
            .get(format!("{url}/healthz"))
            .send()
            .is_ok_and(|r| r.status().as_u16() == 200)),
        "still unhealthy after the stall ended"
    );
    assert_eq!(hooks.events("/hook").len(), 1, "one event per stall");
    assert_eq!(agent.stop().code, 0);
}

#[test]
fn min_size_and_max_size_leave_out_files_outside_the_bounds_as_rclone_does() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        "min_size = \"100B\"\nmax_size = \"10KB\"\n",
    );
    let drop = sb.drop_dir();
    write_file(&drop.join("tiny.txt"), 10, 1);
    write_file(&drop.join("right.mov"), 1000, 2);
    write_file(&drop.join("huge.mov"), 100_000, 3);
    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let names: Vec<String> = emu
        .ledger()
        .iter()
        .map(|e| e["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["right.mov"]);
    assert!(
        out.stderr.contains("left out: smaller than 100 B (min_size)")
            && out.stderr.contains("left out: larger than 9.8 KiB (max_size)"),
        "{}",
        out.stderr
    );
    assert_eq!(sb.status()["roots"][0]["skipped"], 2);
    // Bounds that leave nothing are refused, naming the key.
    let bad = Sandbox::watching(&emu, "", "min_size = \"1MB\"\nmax_size = \"1KB\"\n");
    let mut c = bad.cmd();
    c.args(["check", "--offline"]);
    let out = run(c);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("max_size") && out.stderr.contains("smaller than min_size"),
        "{}",
        out.stderr
    );
}

#[test]
fn exclude_from_reads_gitignore_style_lines_and_names_a_bad_one_by_its_line() {
    let emu = Emulator::start(&[]);
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rules.path(), "# kept local\n*.tmp.exr\ncache/\n").unwrap();
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        &format!("exclude_from = \"{}\"\n", rules.path().display()),
    );
    let drop = sb.drop_dir();
    std::fs::create_dir_all(drop.join("shots/cache")).unwrap();
    write_file(&drop.join("shots/a.tmp.exr"), 100, 1);
    write_file(&drop.join("shots/cache/b.exr"), 100, 2);
    write_file(&drop.join("shots/c.exr"), 100, 3);
    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let names: Vec<String> = emu
        .ledger()
        .iter()
        .map(|e| e["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["c.exr"]);
    // A pattern the file cannot hold is named with its line.
    std::fs::write(rules.path(), "ok.exr\n{unclosed\n").unwrap();
    let mut c = sb.cmd();
    c.args(["check", "--offline"]);
    let out = run(c);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("exclude_from") && out.stderr.contains("line 2"),
        "{}",
        out.stderr
    );
}

#[test]
fn ls_lists_a_workspace_folder_its_subfolders_then_its_files() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let drop = sb.drop_dir();
    std::fs::create_dir_all(drop.join("sub")).unwrap();
    write_file(&drop.join("a.mov"), 1000, 1);
    write_file(&drop.join("sub/b.exr"), 2048, 2);
    assert_eq!(sb.run_once().code, 0);
    let ls = |args: &[&str]| {
        let mut c = sb.cmd();
        c.arg("ls").args(args);
        run(c)
    };
    let out = ls(&["uploads"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.lines().any(|l| l.ends_with(" drop/")),
        "{}",
        out.stdout
    );
    let out = ls(&["uploads/drop"]);
    let a = emu.ledger().into_iter().find(|e| e["name"] == "a.mov").unwrap();
    let line = out
        .stdout
        .lines()
        .find(|l| l.ends_with(" a.mov"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        line.contains("1000 B") && line.contains(a["file_no"].as_str().unwrap()) && line.contains(" 20"),
        "{line}"
    );
    assert!(
        out.stdout.lines().next().unwrap().ends_with(" sub/"),
        "{}",
        out.stdout
    );
    let out = ls(&["--json", "uploads/drop"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["folders"], serde_json::json!(["sub"]));
    assert_eq!(v["files"][0]["name"], "a.mov");
    assert_eq!(v["files"][0]["size"], 1000);
    assert_eq!(v["files"][0]["file_no"], a["file_no"]);
    let out = ls(&["uploads/nope"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("no folder \"uploads/nope\""),
        "{}",
        out.stderr
    );
}

#[test]
fn a_dry_run_says_new_or_changed_with_human_sizes_and_max_transfer_stops_starting_files() {
    let emu = Emulator::start(&[]);
    // Smallest first, so which files fit under the limit is known.
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\nconcurrent_files = 1\norder = \"smallest\"\n",
        "",
    );
    let drop = sb.drop_dir();
    write_file(&drop.join("a.mov"), 1000, 1);
    assert_eq!(sb.run_once().code, 0);
    write_file(&drop.join("a.mov"), 2000, 2);
    write_file(&drop.join("b.mov"), 3 * 1024 * 1024, 3);
    let mut c = sb.cmd();
    c.args(["run", "--once", "--dry-run"]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("would upload (changed) ")
            && out.stderr.contains("a.mov → uploads/drop/a.mov (2.0 KiB)")
            && out.stderr.contains("would upload (new) ")
            && out.stderr.contains("b.mov → uploads/drop/b.mov (3.0 MiB)")
            && out
                .stderr
                .contains("2 file(s) would be uploaded (1 new, 1 changed; 3.0 MiB)"),
        "{}",
        out.stderr
    );
    assert_eq!(emu.ledger().len(), 1, "a dry run sends nothing");

    // --max-transfer: a file starts while less than the limit has started.
    write_file(&drop.join("c.mov"), 1000, 4);
    let mut c = sb.cmd();
    c.args(["run", "--once", "--max-transfer", "2500B"]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // c (1000 B) and a (2000 B) start; then 3000 B have started: b waits.
    assert_eq!(emu.ledger().len(), 3, "two more, then the limit: {}", out.stderr);
    assert!(!emu.ledger().iter().any(|e| e["name"] == "b.mov"));
    assert!(
        out.stderr.contains("--max-transfer was reached"),
        "{}",
        out.stderr
    );
    // The next run takes the rest.
    assert_eq!(sb.run_once().code, 0);
    assert_eq!(emu.ledger().len(), 4);
    // Without --once it is refused.
    let mut c = sb.cmd();
    c.args(["run", "--max-transfer", "1GiB"]);
    let out = run(c);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn an_immutable_folder_reports_a_changed_file_and_never_sends_it_again_until_retry() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "immutable = true\n");
    let take = sb.drop_dir().join("take.mov");
    write_file(&take, 1000, 1);
    assert_eq!(sb.run_once().code, 0);
    write_file(&take, 1000, 2);
    let out = sb.run_once();
    assert_eq!(
        out.code, 1,
        "a file that could not go is a failure: {}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("take.mov: changed after it was uploaded; immutable = true"),
        "{}",
        out.stderr
    );
    assert_eq!(emu.ledger().len(), 1, "not sent again");
    let st = sb.status();
    assert_eq!(st["roots"][0]["failed"], 1, "{st}");
    // Seen again, it is not reported again; `retry` sends it.
    let out = sb.run_once();
    assert!(
        !out.stderr.contains("changed after it was uploaded"),
        "{}",
        out.stderr
    );
    assert_eq!(emu.ledger().len(), 1);
    let mut c = sb.cmd();
    c.arg("retry").arg(&take);
    assert_eq!(run(c).code, 0);
    assert_eq!(sb.run_once().code, 0);
    assert_eq!(emu.ledger().len(), 2);
    assert_eq!(emu.ledger()[1]["sha256"], sha256_file(&take).as_str());
}

#[cfg(target_os = "linux")]
#[test]
fn autostart_status_says_which_agent_runs_one_from_a_terminal_is_not_autostarts() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let mut agent = sb.running_agent(&[]);
    // "running" comes from the lock; the pid from the first heartbeat.
    let mut pid = 0;
    assert!(wait_until(Duration::from_secs(30), || {
        pid = sb.status()["agent"]["pid"].as_u64().unwrap_or(0);
        pid != 0
    }));
    let mut c = sb.cmd();
    c.args(["autostart", "status"]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "agent: running (pid {pid}), not started by autostart: started by "
        )) && out.stdout.contains(&format!("(pid {})", std::process::id())),
        "{}",
        out.stdout
    );
    let mut c = sb.cmd();
    c.args(["autostart", "status", "--json"]);
    let v: Value = serde_json::from_str(&run(c).stdout).unwrap();
    assert_eq!(v["agent_pid"], pid);
    assert!(v["agent_started_by"].as_str().is_some(), "{v}");
    assert_eq!(agent.stop().code, 0);
}

#[test]
fn people_read_local_times_with_their_offset_and_json_keeps_utc() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    write_file(&sb.drop_dir().join("a.mov"), 100, 1);
    assert_eq!(sb.run_once().code, 0);
    // A POSIX zone string: five and a half hours east of UTC.
    let tz = [("TZ", "<+0530>-5:30")];
    let mut c = sb.cmd();
    c.envs(tz).arg("history");
    let out = run(c);
    assert!(out.stdout.contains(" +05:30  "), "{}", out.stdout);
    let mut c = sb.cmd();
    c.envs(tz).args(["history", "--json"]);
    let v: Value = serde_json::from_str(&run(c).stdout).unwrap();
    let at = v[0]["at"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(at.ends_with('Z'), "{at}");
}

#[test]
fn each_deletion_and_move_is_logged_and_history_says_where_the_local_file_went() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "after_upload = \"delete\"\n");
    let gone = sb.drop_dir().join("gone.mov");
    write_file(&gone, 100, 1);
    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!gone.exists());
    assert!(
        out.stderr.contains("gone.mov: deleted (after_upload)"),
        "{}",
        out.stderr
    );
    let mut c = sb.cmd();
    c.arg("history");
    let text = run(c).stdout;
    assert!(text.contains("    local file: deleted"), "{text}");
    let mut c = sb.cmd();
    c.args(["history", "--json"]);
    let v: Value = serde_json::from_str(&run(c).stdout).unwrap();
    assert_eq!(v[0]["after"], "deleted", "{v}");

    // Moved: the history names where to.
    let archive = sb.path("archive");
    std::fs::create_dir(&archive).unwrap();
    let moved = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        &format!("after_upload = \"move\"\nmove_to = \"{}\"\n", archive.display()),
    );
    write_file(&moved.drop_dir().join("kept.mov"), 100, 2);
    let out = moved.run_once();
    assert!(out.stderr.contains("kept.mov: moved to "), "{}", out.stderr);
    let mut c = moved.cmd();
    c.args(["history", "--json"]);
    let v: Value = serde_json::from_str(&run(c).stdout).unwrap();
    let after = v[0]["after"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(
        after.starts_with("moved to ") && after.ends_with("kept.mov"),
        "{after}"
    );
}

#[test]
fn release_lets_a_held_set_go_as_it_is_and_names_a_path_where_no_set_waits() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n[control]\nlisten = \"127.0.0.1:0\"\n",
        "sets = \"folder\"\nset_trigger = \"_DONE\"\nset_manifest = true\n",
    );
    let mut agent = sb.running_agent(&[]);
    let shot = sb.drop_dir().join("sh020");
    std::fs::create_dir(&shot).unwrap();
    for i in 1..=5u64 {
        write_file(&shot.join(format!("sh020.{i:04}.exr")), 1000, i);
    }
    let set = || {
        sb.status()["sets"]
            .as_array()
            .and_then(|s| s.iter().find(|x| x["set"] == "sh020").cloned())
            .unwrap_or(Value::Null)
    };
    assert!(
        wait_until(Duration::from_secs(30), || set()["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no trigger"))),
        "{}\n{}",
        sb.status(),
        agent.log_text()
    );
    assert!(
        agent.log_text().contains("sh020 is held: no trigger (_DONE) yet"),
        "{}",
        agent.log_text()
    );
    assert!(emu.ledger().is_empty());
    // The API (the dashboard's button) refuses what is not a waiting set.
    let (url, token) = sb.control();
    let post = |body: Value| {
        Client::new()
            .post(format!("{url}/api/release"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .unwrap()
    };
    assert_eq!(
        post(serde_json::json!({"set": "relative/sh020"}))
            .status()
            .as_u16(),
        400
    );
    let r = post(serde_json::json!({"set": sb.path("elsewhere")}));
    assert_eq!(r.status().as_u16(), 404);
    // The render farm will never write _DONE: the user lets it go.
    let mut c = sb.cmd();
    c.arg("release").arg(&shot);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("released "), "{}", out.stdout);
    assert!(
        wait_until(Duration::from_secs(30), || set()["state"] == "complete"),
        "{}\n{}",
        set(),
        agent.log_text()
    );
    let names: Vec<String> = emu
        .ledger()
        .iter()
        .map(|e| e["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names.len(), 6, "five frames and the manifest: {names:?}");
    assert!(names.contains(&"sh020.manifest.json".to_string()), "{names:?}");
    // The history says which set each file came in.
    let mut c = sb.cmd();
    c.args(["history", "--json"]);
    let rows: Value = serde_json::from_str(&run(c).stdout).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["set"] == "sh020")
            .count()
            >= 5,
        "{rows}"
    );
    let mut c = sb.cmd();
    c.arg("history");
    let text = run(c).stdout;
    assert!(text.contains("    in upload set: sh020"), "{text}");
    // Nothing waits there any more, nor at a plain folder: said, exit 1.
    let mut c = sb.cmd();
    c.arg("release").arg(&shot).arg(sb.path("elsewhere"));
    let out = run(c);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.matches("no set waits there").count(),
        2,
        "{}",
        out.stderr
    );
    assert_eq!(agent.stop().code, 0);
}

#[test]
fn upload_on_a_terminal_clears_each_bar_and_leaves_none_after_its_summary() {
    let emu = Emulator::start(&[]);
    // Slow enough that bars are drawn several times.
    let sb = Sandbox::new(&emu, "bandwidth_limit = \"2MiB/s\"\n");
    let dir = sb.path("takes");
    std::fs::create_dir(&dir).unwrap();
    write_file(&dir.join("first.mov"), 2 * 1024 * 1024, 1);
    write_file(&dir.join("second.mov"), 1024 * 1024, 2);
    let mut inner = sb.cmd();
    inner
        .arg("upload")
        .arg(dir.join("first.mov"))
        .arg(dir.join("second.mov"));
    let out = run(on_a_terminal(&inner));
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains('█'), "bars were drawn: {}", out.stdout);
    // Everything after the first result line is the summary: no bar is
    // drawn again below it.
    let at = out
        .stdout
        .find("→ first.mov")
        .unwrap_or_else(|| panic!("{}", out.stdout));
    let after = &out.stdout[at..];
    assert!(
        !after.contains('█') && !after.contains("MiB/s"),
        "a bar after the summary: {after:?}"
    );
    assert!(after.contains("→ second.mov"), "{after:?}");
}

#[test]
fn status_says_what_is_queued_in_files_and_bytes() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n[control]\nlisten = \"127.0.0.1:0\"\n",
        "",
    );
    let mut agent = sb.running_agent(&[]);
    let mut c = sb.cmd();
    c.arg("pause");
    assert_eq!(run(c).code, 0);
    for i in 0..3u64 {
        write_file(&sb.drop_dir().join(format!("q{i}.mov")), 1000, i);
    }
    assert!(
        wait_until(Duration::from_secs(30), || sb.status()["roots"][0]["pending"]
            == 3),
        "{}",
        sb.status()
    );
    assert_eq!(sb.status()["roots"][0]["pending_bytes"], 3000);
    let mut c = sb.cmd();
    c.arg("status");
    let text = run(c).stdout;
    assert!(text.contains("queued: 3 file(s), 2.9 KiB"), "{text}");
    agent.stop();
}

#[test]
fn a_held_set_goes_once_its_files_settle_after_a_reload_changed_its_gaps_rule() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"2s\"\n[control]\nlisten = \"127.0.0.1:0\"\n",
        "sets = \"folder\"\nset_trigger = \"_DONE\"\nsequence_gaps = \"hold\"\n",
    );
    let mut agent = sb.running_agent(&[]);
    let shot = sb.drop_dir().join("sh030");
    std::fs::create_dir(&shot).unwrap();
    for i in (1..=20u64).filter(|i| *i != 7) {
        write_file(&shot.join(format!("sh030.{i:04}.exr")), 500, i);
    }
    std::fs::write(shot.join("_DONE"), "").unwrap();
    let set = || {
        sb.status()["sets"]
            .as_array()
            .and_then(|s| s.iter().find(|x| x["set"] == "sh030").cloned())
            .unwrap_or(Value::Null)
    };
    assert!(
        wait_until(Duration::from_secs(30), || set()["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("gap at 7"))),
        "{}",
        set()
    );
    let text = std::fs::read_to_string(&sb.config).unwrap();
    std::fs::write(
        &sb.config,
        text.replace("sequence_gaps = \"hold\"", "sequence_gaps = \"warn\""),
    )
    .unwrap();
    let mut c = sb.cmd();
    c.arg("reload");
    assert_eq!(run(c).code, 0);
    // The reload re-offers its files for one settle window; once they have
    // settled the set goes (it is not left saying "still settling" for the
    // half minute a waiting set's judgement was kept).
    assert!(
        wait_until(Duration::from_secs(22), || set()["state"] == "complete"),
        "{}\n{}",
        set(),
        agent.log_text()
    );
    assert_eq!(emu.ledger().len(), 20, "nineteen frames and the trigger");
    agent.stop();
}

#[test]
fn a_file_retrying_its_parts_takes_the_reloaded_settings_after_its_current_parts() {
    // Every part PUT fails; a one-request upload does not.
    let emu = Emulator::start(&["--fail-parts", "1.0"]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\ndirect_upload_max = \"0\"\n[control]\nlisten = \"127.0.0.1:0\"\n",
        "",
    );
    let mut agent = sb.running_agent(&[]);
    write_file(&sb.drop_dir().join("small.mov"), 3000, 1);
    // Its parts keep failing: the upload retries them, in flight.
    assert!(
        wait_until(Duration::from_secs(60), || emu.stat("faults_injected") >= 3),
        "{}\n{}",
        sb.status(),
        agent.log_text()
    );
    assert_eq!(sb.status()["roots"][0]["uploading"], 1);
    let text = std::fs::read_to_string(&sb.config).unwrap();
    std::fs::write(
        &sb.config,
        text.replace("direct_upload_max = \"0\"", "direct_upload_max = \"8MiB\""),
    )
    .unwrap();
    let mut c = sb.cmd();
    c.arg("reload");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("agent.direct_upload_max: \"0\" → \"8MiB\""),
        "{}",
        out.stdout
    );
    // It stops after its current parts and goes on in one request, as the
    // reloaded config says (a session begun carries its parts; this one has
    // none stored).
    assert!(
        wait_until(Duration::from_secs(90), || emu.ledger().len() == 1),
        "{}\n{}",
        sb.status(),
        agent.log_text()
    );
    assert_eq!(emu.ledger()[0]["kind"], "direct", "{:?}", emu.ledger());
    agent.stop();
}
