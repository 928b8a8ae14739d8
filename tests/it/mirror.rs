//! Mirror (issue 29): a file renamed locally after its upload has its
//! remote file renamed, nothing sent again; a move to another remote folder
//! is uploaded there; a crash during the rename neither duplicates nor
//! loses the file. Both readings of the service (the sdk profile runs this
//! module too).

use std::time::Duration;

use crate::harness::*;

const MIB: usize = 1024 * 1024;

fn sent(emu: &Emulator) -> u64 {
    emu.stat("part_bytes") + emu.stat("direct_bytes")
}

#[test]
fn a_file_renamed_after_its_upload_is_renamed_remotely_and_not_sent_again() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let mut agent = sb.running_agent(&[]);
    let v03 = sb.drop_dir().join("v03.mov");
    write_file(&v03, 200 * MIB, 3);
    assert!(
        wait_until(Duration::from_secs(120), || sb.status()["roots"][0]["done"] == 1),
        "{}\n{}",
        sb.status(),
        agent.log_text()
    );
    let before = sent(&emu);
    let file_no = emu.ledger()[0]["file_no"].as_str().unwrap().to_string();
    std::fs::rename(&v03, sb.drop_dir().join("v03_final.mov")).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger()[0]["name"]
            == "v03_final.mov"),
        "{:?}\n{}",
        emu.ledger(),
        agent.log_text()
    );
    // Named without an extension: the service keeps the old one, and the
    // name it answers is the one recorded.
    std::fs::rename(sb.drop_dir().join("v03_final.mov"), sb.drop_dir().join("v04")).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger()[0]["name"] == "v04.mov"
            && sb.status()["roots"][0]["done"] == 1
            && sb.status()["roots"][0]["pending"] == 0),
        "{:?}\n{}\n{}",
        emu.ledger(),
        sb.status(),
        agent.log_text()
    );
    assert_eq!(sent(&emu), before, "no byte sent again");
    assert_eq!(emu.ledger().len(), 1, "{:?}", emu.ledger());
    assert_eq!(emu.ledger()[0]["file_no"], file_no.as_str());
    assert_eq!(emu.stat("renames"), 2);
    let log = agent.log_text();
    assert!(log.contains("renamed ") && log.contains("nothing sent"), "{log}");
    // The journal agrees with the workspace.
    let mut c = sb.cmd();
    c.arg("verify");
    let out = run(c);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let mut c = sb.cmd();
    c.args(["history", "--json"]);
    let out = run(c);
    assert!(out.stdout.contains("renamed locally"), "{}", out.stdout);
    agent.stop();
}

#[test]
fn a_file_moved_to_another_remote_folder_is_uploaded_there_and_a_hard_link_is_not_a_rename() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let mut agent = sb.running_agent(&[]);
    write_file(&sb.drop_dir().join("a.mov"), 3 * MIB, 5);
    write_file(&sb.drop_dir().join("b.mov"), MIB, 6);
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger().len() == 2),
        "{}",
        agent.log_text()
    );
    // a.mov into a subfolder: another remote folder (the API cannot move a
    // file), so it is uploaded there; the old copy stays (no mirror_deletes).
    std::fs::create_dir(sb.drop_dir().join("sub")).unwrap();
    std::fs::rename(sb.drop_dir().join("a.mov"), sb.drop_dir().join("sub/a.mov")).unwrap();
    // b.mov gets a second name: both exist, so the new one is a new file.
    std::fs::hard_link(sb.drop_dir().join("b.mov"), sb.drop_dir().join("b2.mov")).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger().len() == 4),
        "{:?}\n{}",
        emu.ledger(),
        agent.log_text()
    );
    let names: Vec<String> = emu
        .ledger()
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["folder"].as_str().unwrap(),
                e["name"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "uploads/drop/a.mov",
        "uploads/drop/sub/a.mov",
        "uploads/drop/b.mov",
        "uploads/drop/b2.mov",
    ] {
        assert!(names.contains(&want.to_string()), "{want}: {names:?}");
    }
    assert_eq!(emu.stat("renames"), 0);
    agent.stop();
}

#[test]
fn a_crash_while_the_rename_is_asked_leaves_one_file_renamed_after_restart() {
    // Every request takes 1.5 s: the crash lands while the rename is asked.
    let emu = Emulator::start(&["--latency", "1500"]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let mut agent = sb.running_agent(&[]);
    write_file(&sb.drop_dir().join("take1.mov"), 2 * MIB, 9);
    assert!(
        wait_until(Duration::from_secs(90), || sb.status()["roots"][0]["done"] == 1),
        "{}",
        agent.log_text()
    );
    let before = sent(&emu);
    std::fs::rename(
        sb.drop_dir().join("take1.mov"),
        sb.drop_dir().join("take1_ok.mov"),
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || agent
            .log_text()
            .contains("renaming its remote file")),
        "{}",
        agent.log_text()
    );
    agent.crash();
    let mut agent = sb.running_agent(&[]);
    assert!(
        wait_until(Duration::from_secs(90), || emu.ledger()[0]["name"]
            == "take1_ok.mov"
            && sb.status()["roots"][0]["done"] == 1
            && sb.status()["roots"][0]["pending"] == 0
            && sb.status()["roots"][0]["uploading"] == 0),
        "{:?}\n{}\n{}",
        emu.ledger(),
        sb.status(),
        agent.log_text()
    );
    assert_eq!(emu.ledger().len(), 1, "{:?}", emu.ledger());
    assert_eq!(sent(&emu), before, "nothing sent again");
    let mut c = sb.cmd();
    c.arg("verify");
    let out = run(c);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    agent.stop();
}

// ---- mirror_deletes ----

const DELETES: &str = "mirror_deletes = true\ndelete_after = \"2s\"\n";

/// The ledger entry of the upload named `name` (the first one).
fn entry(emu: &Emulator, name: &str) -> serde_json::Value {
    emu.ledger()
        .into_iter()
        .find(|e| e["name"] == name)
        .unwrap_or(serde_json::Value::Null)
}

fn deleted_count(emu: &Emulator) -> usize {
    emu.ledger().iter().filter(|e| e["deleted"] == true).count()
}

/// The first root's `mirror_deletes` rounds so far (from `status`).
fn rounds(sb: &Sandbox) -> i64 {
    sb.status()["roots"][0]["deletes_rounds"].as_i64().unwrap_or(0)
}

fn journal(sb: &Sandbox) -> rusqlite::Connection {
    rusqlite::Connection::open(sb.state_dir().join("journal.sqlite3")).unwrap()
}

#[test]
fn a_file_deleted_locally_loses_its_remote_copy_after_the_grace_period_and_a_rewrite_does_not() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", DELETES);
    let mut agent = sb.running_agent(&[]);
    for (i, name) in ["a.mov", "b.mov", "c.mov"].iter().enumerate() {
        write_file(&sb.drop_dir().join(name), 64 * 1024, i as u64);
    }
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger().len() == 3
            && sb.status()["roots"][0]["done"] == 3),
        "{}",
        agent.log_text()
    );
    let gone_at = std::time::Instant::now();
    std::fs::remove_file(sb.drop_dir().join("a.mov")).unwrap();
    // A save that deletes and writes again: a new version, not a delete.
    std::fs::remove_file(sb.drop_dir().join("b.mov")).unwrap();
    write_file(&sb.drop_dir().join("b.mov"), 64 * 1024, 9);
    assert!(
        wait_until(Duration::from_secs(60), || entry(&emu, "a.mov")["deleted"]
            == true),
        "{:?}\n{}",
        emu.ledger(),
        agent.log_text()
    );
    assert!(
        gone_at.elapsed() >= Duration::from_secs(2),
        "deleted before its grace period: {:?}",
        gone_at.elapsed()
    );
    // The rewrite is uploaded, and later rounds delete nothing else.
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger().len() == 4),
        "{}",
        agent.log_text()
    );
    let r = rounds(&sb);
    assert!(
        wait_until(Duration::from_secs(60), || rounds(&sb) >= r + 3),
        "{}",
        sb.status()
    );
    assert_eq!(deleted_count(&emu), 1, "{:?}", emu.ledger());
    let log = agent.log_text();
    assert!(
        log.contains("deleted uploads/drop/a.mov") && log.contains("was deleted locally (mirror_deletes)"),
        "{log}"
    );
    // The journal agrees with the workspace; history says what went.
    let mut c = sb.cmd();
    c.arg("verify");
    let out = run(c);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let mut c = sb.cmd();
    c.arg("history");
    let out = run(c);
    assert!(
        out.stdout.contains("its remote copy deleted too"),
        "{}",
        out.stdout
    );
    // A file made again at that path is new: uploaded, not "already there".
    write_file(&sb.drop_dir().join("a.mov"), 64 * 1024, 11);
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger().len() == 5),
        "{}",
        agent.log_text()
    );
    agent.stop();
}

#[test]
fn an_emptied_or_missing_root_deletes_nothing_until_it_holds_a_file_again() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        "mirror_deletes = true\ndelete_after = \"1s\"\n",
    );
    let mut agent = sb.running_agent(&[]);
    write_file(&sb.drop_dir().join("a.mov"), 4096, 1);
    write_file(&sb.drop_dir().join("b.mov"), 4096, 2);
    assert!(
        wait_until(Duration::from_secs(60), || sb.status()["roots"][0]["done"] == 2),
        "{}",
        agent.log_text()
    );
    // Everything gone at once, as an unmounted share looks.
    std::fs::remove_file(sb.drop_dir().join("a.mov")).unwrap();
    std::fs::remove_file(sb.drop_dir().join("b.mov")).unwrap();
    let held = |sb: &Sandbox, what: &str| {
        sb.status()["roots"][0]["deletes_held"]
            .as_str()
            .is_some_and(|h| h.contains(what))
    };
    assert!(
        wait_until(Duration::from_secs(30), || held(&sb, "empty")),
        "{}\n{}",
        sb.status(),
        agent.log_text()
    );
    let r = rounds(&sb);
    assert!(wait_until(Duration::from_secs(30), || rounds(&sb) >= r + 3));
    assert_eq!(deleted_count(&emu), 0, "{:?}", emu.ledger());
    assert_eq!(
        sb.status()["roots"][0]["deletes_waiting"],
        0,
        "no grace period even starts"
    );
    // The folder itself gone: still nothing.
    let aside = sb.drop_dir().with_extension("aside");
    std::fs::rename(sb.drop_dir(), &aside).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || agent
            .log_text()
            .contains("(mirror_deletes): the folder is not there")),
        "{}",
        agent.log_text()
    );
    // Back, still empty (status reads the config, which needs the folder).
    std::fs::rename(&aside, sb.drop_dir()).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || held(&sb, "empty")),
        "{}",
        sb.status()
    );
    let r = rounds(&sb);
    assert!(wait_until(Duration::from_secs(30), || rounds(&sb) >= r + 3));
    assert_eq!(deleted_count(&emu), 0);
    assert_eq!(sb.status()["roots"][0]["deletes_waiting"], 0);
    // A file in it again: the folder is judged, and the deletes go.
    std::fs::write(sb.drop_dir().join(".keep"), b"").unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || deleted_count(&emu) == 2),
        "{}\n{}",
        sb.status(),
        agent.log_text()
    );
    agent.stop();
}

#[test]
fn five_hundred_deletes_with_max_delete_100_delete_100_then_brake_until_released() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        "mirror_deletes = true\ndelete_after = \"1s\"\nmax_delete = 100\n",
    );
    let mut agent = sb.running_agent(&[]);
    for i in 0..501 {
        std::fs::write(sb.drop_dir().join(format!("f{i:03}.txt")), format!("file {i}")).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(300), || sb.status()["roots"][0]["done"]
            == 501),
        "{}\n{}",
        sb.status(),
        agent.log_text()
    );
    for i in 0..500 {
        std::fs::remove_file(sb.drop_dir().join(format!("f{i:03}.txt"))).unwrap();
    }
    let braked = |sb: &Sandbox| {
        sb.status()["agent"]["problems"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x.as_str().is_some_and(|s| s.contains("braked"))))
    };
    assert!(
        wait_until(Duration::from_secs(120), || braked(&sb)),
        "{}\n{}",
        sb.status(),
        agent.log_text()
    );
    let r = rounds(&sb);
    assert!(wait_until(Duration::from_secs(30), || rounds(&sb) >= r + 2));
    assert_eq!(deleted_count(&emu), 100, "exactly max_delete");
    let status = sb.status();
    assert_eq!(status["roots"][0]["deletes_waiting"], 400, "{status}");
    let why = status["agent"]["problems"].to_string();
    assert!(
        why.contains("max_delete = 100") && why.contains("400 more wait"),
        "{why}"
    );
    assert!(agent.log_text().contains("are braked"));
    // The user looked: the waiting ones go.
    let mut c = sb.cmd();
    c.args(["release", "--deletes"]).arg(sb.drop_dir());
    let out = run(c);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("400 remote copies"), "{}", out.stdout);
    assert!(
        wait_until(Duration::from_secs(120), || deleted_count(&emu) == 500
            && !braked(&sb)),
        "{}\n{}",
        sb.status(),
        agent.log_text()
    );
    assert!(entry(&emu, "f500.txt")["deleted"] == false);
    agent.stop();
}

#[test]
fn a_crash_while_a_delete_is_sent_neither_loses_it_nor_deletes_twice() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", DELETES);
    let mut agent = sb.running_agent(&[]);
    write_file(&sb.drop_dir().join("a.mov"), 4096, 1);
    write_file(&sb.drop_dir().join("keep.mov"), 4096, 2);
    assert!(
        wait_until(Duration::from_secs(60), || sb.status()["roots"][0]["done"] == 2),
        "{}",
        agent.log_text()
    );
    std::fs::remove_file(sb.drop_dir().join("a.mov")).unwrap();
    // The service stops answering: the DELETE is journaled, then sent into
    // silence, and the agent is killed before any answer.
    let sending = || {
        journal(&sb)
            .query_row(
                "SELECT count(*) FROM deletes WHERE sending_at IS NOT NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0)
    };
    let waiting = || {
        journal(&sb)
            .query_row("SELECT count(*) FROM deletes", [], |r| r.get::<_, i64>(0))
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(30), || waiting() == 1),
        "{}",
        agent.log_text()
    );
    emu.freeze();
    assert!(
        wait_until(Duration::from_secs(30), || sending() == 1),
        "{}",
        agent.log_text()
    );
    agent.crash();
    emu.thaw();
    let mut agent = sb.running_agent(&[]);
    assert!(
        wait_until(Duration::from_secs(60), || waiting() == 0
            && entry(&emu, "a.mov")["deleted"] == true),
        "{:?}\n{}",
        emu.ledger(),
        agent.log_text()
    );
    assert_eq!(deleted_count(&emu), 1, "{:?}", emu.ledger());
    let history: i64 = journal(&sb)
        .query_row("SELECT count(*) FROM history WHERE event = 'deleted'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(history, 1, "recorded once");
    let mut c = sb.cmd();
    c.arg("verify");
    let out = run(c);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    agent.stop();
}

#[test]
fn a_move_to_another_root_is_one_upload_and_one_delete_and_a_dry_run_lists_deletes_first() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        "mirror_deletes = true\ndelete_after = \"5s\"\n",
    );
    let two = sb.path("two");
    std::fs::create_dir(&two).unwrap();
    let text = std::fs::read_to_string(&sb.config).unwrap()
        + &format!(
            "[[watch]]\npath = \"{}\"\nremote_folder = \"uploads/two\"\nmirror_deletes = true\ndelete_after = \"5s\"\n",
            two.display()
        );
    std::fs::write(&sb.config, text).unwrap();
    write_file(&sb.drop_dir().join("a.mov"), 3 * MIB, 1);
    write_file(&sb.drop_dir().join("keep.mov"), 4096, 2);
    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.ledger().len(), 2);

    // A dry run says which remote copy would go, and sends and records nothing.
    std::fs::rename(sb.drop_dir().join("a.mov"), two.join("a.mov")).unwrap();
    let mut c = sb.cmd();
    c.args(["run", "--once", "--dry-run"]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("would delete uploads/drop/a.mov") && said.contains("1 remote copy would be deleted"),
        "{said}"
    );
    assert!(
        said.contains("would upload (new)") && said.contains("uploads/two/a.mov"),
        "{said}"
    );
    assert_eq!(emu.ledger().len(), 2);
    assert_eq!(deleted_count(&emu), 0);
    let waiting: i64 = journal(&sb)
        .query_row("SELECT count(*) FROM deletes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(waiting, 0, "a dry run records nothing");

    // The agent: uploaded to the new place, then the old copy deleted.
    let mut agent = sb.running_agent(&[]);
    assert!(
        wait_until(Duration::from_secs(60), || entry(&emu, "a.mov")["deleted"]
            == true
            && emu.ledger().len() == 3),
        "{:?}\n{}",
        emu.ledger(),
        agent.log_text()
    );
    let ledger = emu.ledger();
    let moved: Vec<_> = ledger.iter().filter(|e| e["name"] == "a.mov").collect();
    assert_eq!(moved.len(), 2, "one upload to the new place: {ledger:?}");
    assert!(
        moved
            .iter()
            .any(|e| e["folder"] == "uploads/two" && e["deleted"] == false)
    );
    assert!(
        moved
            .iter()
            .any(|e| e["folder"] == "uploads/drop" && e["deleted"] == true)
    );
    assert_eq!(deleted_count(&emu), 1);
    let log = agent.log_text();
    assert!(
        log.contains("moved ") && log.contains("its old remote copy uploads/drop/a.mov"),
        "{log}"
    );
    let mut c = sb.cmd();
    c.arg("history");
    let out = run(c);
    assert!(
        out.stdout
            .contains(&format!("local file: moved to {}", two.join("a.mov").display())),
        "{}",
        out.stdout
    );
    agent.stop();
}

// ---- folder renames ----

fn in_folder(emu: &Emulator, folder: &str) -> usize {
    emu.ledger()
        .iter()
        .filter(|e| e["folder"] == folder && e["deleted"] == false)
        .count()
}

fn folder_of_fifty(sb: &Sandbox) -> std::path::PathBuf {
    let dir = sb.drop_dir().join("shotA");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..50 {
        write_file(&dir.join(format!("f{i:02}.exr")), 16 * 1024, i);
    }
    dir
}

#[test]
fn a_folder_of_fifty_files_renamed_is_one_folder_rename() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let mut agent = sb.running_agent(&[]);
    let dir = folder_of_fifty(&sb);
    assert!(
        wait_until(Duration::from_secs(120), || sb.status()["roots"][0]["done"] == 50),
        "{}",
        agent.log_text()
    );
    let before = sent(&emu);
    std::fs::rename(&dir, sb.drop_dir().join("shotB")).unwrap();
    assert!(
        wait_until(Duration::from_secs(120), || in_folder(&emu, "uploads/drop/shotB")
            == 50
            && sb.status()["roots"][0]["done"] == 50
            && sb.status()["roots"][0]["pending"] == 0),
        "{:?}\n{}\n{}",
        emu.ledger(),
        sb.status(),
        agent.log_text()
    );
    assert_eq!(
        emu.stat("renames"),
        1,
        "one folder rename, no file renamed one by one"
    );
    assert_eq!(sent(&emu), before, "no byte sent again");
    assert_eq!(emu.ledger().len(), 50);
    assert_eq!(in_folder(&emu, "uploads/drop/shotA"), 0);
    assert!(
        agent
            .log_text()
            .contains("renamed remote folder \"uploads/drop/shotA\" → \"uploads/drop/shotB\"")
    );
    let mut c = sb.cmd();
    c.arg("verify");
    let out = run(c);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    agent.stop();
}

#[test]
fn a_folder_holding_files_from_elsewhere_is_not_renamed_and_a_crash_mid_rename_settles_by_listing() {
    // Every request takes 1 s: the crash lands while the rename is asked.
    let emu = Emulator::start(&["--latency", "1000"]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let mut agent = sb.running_agent(&[]);
    let dir = sb.drop_dir().join("shotA");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..3 {
        write_file(&dir.join(format!("f{i}.exr")), 16 * 1024, i);
    }
    let other = sb.drop_dir().join("other");
    std::fs::create_dir(&other).unwrap();
    write_file(&other.join("x.mov"), 4096, 7);
    assert!(
        wait_until(Duration::from_secs(120), || sb.status()["roots"][0]["done"] == 4),
        "{}",
        agent.log_text()
    );
    // Someone else's file in the remote folder "other": it is not renamed
    // under them; the file goes to the new place.
    let mut c = sb.cmd();
    let stranger = sb.path("stranger.txt");
    std::fs::write(&stranger, b"not ours").unwrap();
    c.args(["upload", "--folder", "uploads/drop/other"])
        .arg(&stranger);
    let out = run(c);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    std::fs::rename(&other, sb.drop_dir().join("other2")).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || in_folder(&emu, "uploads/drop/other2")
            == 1),
        "{}",
        agent.log_text()
    );
    assert_eq!(emu.stat("renames"), 0);
    assert_eq!(
        in_folder(&emu, "uploads/drop/other"),
        2,
        "the old copy and the stranger's file stay"
    );
    assert!(
        agent
            .log_text()
            .contains("holds files this folder did not upload")
    );

    // Killed while the folder rename is asked: after a restart the folder
    // is found renamed by listing (or asked again if the request never
    // took), and each file is recorded once.
    std::fs::rename(&dir, sb.drop_dir().join("shotB")).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || agent
            .log_text()
            .contains("renaming remote folder \"uploads/drop/shotA\"")),
        "{}",
        agent.log_text()
    );
    agent.crash();
    let mut agent = sb.running_agent(&[]);
    assert!(
        wait_until(
            Duration::from_secs(120),
            || in_folder(&emu, "uploads/drop/shotB") == 3
            && sb.status()["roots"][0]["pending"] == 0
            // 3, and x.mov's two records (the old one stays without mirror_deletes).
            && sb.status()["roots"][0]["done"] == 5
        ),
        "{:?}\n{}\n{}",
        emu.ledger(),
        sb.status(),
        agent.log_text()
    );
    assert!((1..=2).contains(&emu.stat("renames")), "{}", emu.stat("renames"));
    assert_eq!(
        emu.ledger().len(),
        6,
        "3 + x.mov twice + the stranger's: nothing duplicated"
    );
    let states = || -> Vec<String> {
        journal(&sb)
            .prepare("SELECT state FROM folder_renames")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    // The rename's record is settled by the task that listed the folder,
    // which may end just after the files it let go were recorded done.
    wait_until(Duration::from_secs(30), || states() == ["done"]);
    assert_eq!(states(), ["done"], "one rename journaled, settled");
    let mut c = sb.cmd();
    c.arg("verify");
    let out = run(c);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    agent.stop();
}

/// A tmpfs mounted on `dir` for the test's length (unmounted on drop).
struct Mounted(std::path::PathBuf);

impl Mounted {
    fn tmpfs(dir: &std::path::Path) -> Option<Mounted> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "autorender-test"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mounted(dir.to_path_buf()))
    }

    fn unmount(&self) {
        let ok = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "umount {}", self.0.display());
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn an_unmounted_share_deletes_nothing_even_where_the_mount_point_holds_files() {
    if !is_root() {
        skip_or_fail("mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        "mirror_deletes = true\ndelete_after = \"1s\"\n",
    );
    // A file left in the mount point itself, hidden while the share is mounted.
    std::fs::write(sb.drop_dir().join("left-behind.txt"), b"under the mount").unwrap();
    let Some(share) = Mounted::tmpfs(&sb.drop_dir()) else {
        skip_or_fail("mount -t tmpfs failed (no CAP_SYS_ADMIN here)");
        return;
    };
    let mut agent = sb.running_agent(&[]);
    write_file(&sb.drop_dir().join("a.mov"), 4096, 1);
    write_file(&sb.drop_dir().join("b.mov"), 4096, 2);
    assert!(
        wait_until(Duration::from_secs(60), || sb.status()["roots"][0]["done"] == 2),
        "{}",
        agent.log_text()
    );
    // The share goes away: the folder is the mount point again, not empty,
    // on another device than the files were uploaded from.
    share.unmount();
    assert!(
        wait_until(Duration::from_secs(60), || sb.status()["roots"][0]["done"] == 3),
        "the mount point's own file is new: {}",
        agent.log_text()
    );
    let r = rounds(&sb);
    assert!(wait_until(Duration::from_secs(30), || rounds(&sb) >= r + 3));
    assert_eq!(deleted_count(&emu), 0, "{:?}", emu.ledger());
    assert_eq!(sb.status()["roots"][0]["deletes_waiting"], 0, "not even waiting");
    agent.stop();
}
