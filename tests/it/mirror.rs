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
