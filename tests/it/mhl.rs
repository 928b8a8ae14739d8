//! Camera cards with an ASC MHL history (issue 28): checked against it
//! before anything of them goes, with the reference tool (`ascmhl`) making
//! the cards and judging what the agent wrote.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const CARD_SETS: &str = "sets = \"folder\"\nset_quiet = \"1s\"\n";

/// Three clips and a sidecar, then the reference tool's first generation
/// with `format`. Made outside the drop folder; `into` moves it in whole.
fn make_card(tools: &Path, dir: &Path, format: &str, seed: u64) {
    std::fs::create_dir_all(dir.join("Clips")).unwrap();
    for (i, size) in [(1u64, 300_000usize), (2, 70_000), (3, 5_000)] {
        write_file(&dir.join(format!("Clips/A001C00{i}.mov")), size, seed * 10 + i);
    }
    write_file(&dir.join("A001.xml"), 900, seed * 10 + 9);
    reference(tools, &["create", "-h", format, dir.to_str().unwrap()]);
}

fn reference(tools: &Path, args: &[&str]) -> String {
    let (ok, text) = tool(tools, "ascmhl", args);
    assert!(ok, "ascmhl {args:?}: {text}");
    text
}

fn tool(tools: &Path, name: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tools.join(name)).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn set_of(sb: &Sandbox, name: &str) -> Value {
    set_in(&sb.status(), name)
}

fn set_in(status: &Value, name: &str) -> Value {
    status["sets"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["set"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// Why the set `name` is held ("" when it is not).
fn reason_of(status: &Value, name: &str) -> String {
    set_in(status, name)["reason"].as_str().unwrap_or("").to_string()
}

/// Waits (up to `secs`) until `done` holds of the agent's status; fails
/// with the status and the agent's log otherwise.
fn wait_status(sb: &Sandbox, agent: &AgentProcess, secs: u64, done: impl Fn(&Value) -> bool) {
    assert!(
        wait_until(Duration::from_secs(secs), || done(&sb.status())),
        "{}\n{}",
        sb.status(),
        agent.log_text()
    );
}

/// The first set is complete.
fn first_complete(status: &Value) -> bool {
    status["sets"][0]["state"] == "complete"
}

fn staging(sb: &Sandbox) -> PathBuf {
    let d = sb.drop_dir().parent().unwrap().join("staging");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x01;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn cards_hashed_by_the_reference_tool_in_xxh64_md5_and_xxh128_go_once_they_match() {
    let Some(tools) = ascmhl_tools() else { return };
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", CARD_SETS);
    let stage = staging(&sb);
    for (i, format) in ["xxh64", "md5", "xxh128"].iter().enumerate() {
        make_card(&tools, &stage.join(format!("A00{}", i + 1)), format, i as u64 + 1);
    }
    let mut agent = sb.running_agent(&[]);
    for i in 1..=3 {
        std::fs::rename(
            stage.join(format!("A00{i}")),
            sb.drop_dir().join(format!("A00{i}")),
        )
        .unwrap();
    }
    // Each card: 3 clips, the sidecar, its generation and its chain.
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger().len() == 18),
        "{}\n{}",
        sb.status(),
        agent.log_text()
    );
    let log = agent.log_text();
    assert_eq!(
        log.matches("4 file(s) match the ASC MHL history (latest: generation 1 (ascmhl")
            .count(),
        3,
        "{log}"
    );
    assert!(!log.contains("is refused"), "{log}");
    // The check's read gave each file's sha256: the upload did not hash it again.
    for e in emu.ledger() {
        assert!(e["sha256"].as_str().is_some_and(|s| s.len() == 64), "{e}");
    }
    agent.stop();
}

#[test]
fn a_card_with_one_flipped_byte_or_a_missing_clip_is_refused_before_anything_of_it_goes() {
    let Some(tools) = ascmhl_tools() else { return };
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", CARD_SETS);
    let stage = staging(&sb);
    make_card(&tools, &stage.join("A001"), "xxh64", 1);
    make_card(&tools, &stage.join("A002"), "md5", 2);
    // One bit of one clip, after the copy was hashed (size and name kept).
    flip_byte(&stage.join("A001/Clips/A001C002.mov"), 4096);
    // A clip lost on the way.
    std::fs::remove_file(stage.join("A002/Clips/A001C003.mov")).unwrap();
    let mut agent = sb.running_agent(&[]);
    std::fs::rename(stage.join("A001"), sb.drop_dir().join("A001")).unwrap();
    std::fs::rename(stage.join("A002"), sb.drop_dir().join("A002")).unwrap();
    wait_status(&sb, &agent, 60, |st| {
        ["A001", "A002"]
            .iter()
            .all(|set| reason_of(st, set).contains("ASC MHL check failed"))
    });
    let a = set_of(&sb, "A001");
    let reason = a["reason"].as_str().unwrap();
    assert!(
        reason.contains("Clips/A001C002.mov: xxh64 differs from generation 1 (ascmhl 1.2, "),
        "{reason}"
    );
    let b = set_of(&sb, "A002");
    let reason = b["reason"].as_str().unwrap();
    assert!(
        reason.contains("1 listed but missing (Clips/A001C003.mov)"),
        "{reason}"
    );
    assert_eq!(a["state"], "waiting", "{a}");
    // Nothing of either card was sent.
    let log = agent.log_text();
    assert!(
        log.contains("set ") && log.contains("is refused; nothing of it is sent"),
        "{log}"
    );
    assert!(emu.ledger().is_empty(), "{:?}", emu.ledger());
    let s = sb.status();
    assert_eq!(s["roots"][0]["done"], 0, "{s}");
    agent.stop();
}

fn xsd(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ascmhl")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Both files the agent wrote are valid against the ASC's schemas.
fn assert_schema_valid(tools: &Path, history: &Path) {
    let mut generations = 0;
    for e in std::fs::read_dir(history).unwrap() {
        let p = e.unwrap().path();
        let s = p.to_str().unwrap();
        if s.ends_with(".mhl") {
            generations += 1;
            let (ok, text) = tool(
                tools,
                "ascmhl-debug",
                &["xsd-schema-check", "-xsd", &xsd("ASCMHL.xsd"), s],
            );
            assert!(ok, "{s}: {text}\n{}", std::fs::read_to_string(&p).unwrap());
        }
    }
    assert!(generations > 0);
    let chain = history.join("ascmhl_chain.xml");
    let (ok, text) = tool(
        tools,
        "ascmhl-debug",
        &[
            "xsd-schema-check",
            "-df",
            "-xsd",
            &xsd("ASCMHLDirectory.xsd"),
            chain.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}\n{}", std::fs::read_to_string(&chain).unwrap());
}

#[test]
fn set_mhl_write_extends_the_cards_chain_and_the_reference_tool_accepts_it() {
    let Some(tools) = ascmhl_tools() else { return };
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        &format!("{CARD_SETS}set_mhl = \"write\"\nset_manifest = true\n"),
    );
    let stage = staging(&sb);
    make_card(&tools, &stage.join("A001"), "xxh64", 1);
    let mut agent = sb.running_agent(&[]);
    std::fs::rename(stage.join("A001"), sb.drop_dir().join("A001")).unwrap();
    // 4 files, then the history (the reference tool's generation, ours,
    // the chain), then the JSON manifest.
    wait_status(&sb, &agent, 60, first_complete);
    let ledger = emu.ledger();
    let names: Vec<String> = ledger
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["folder"].as_str().unwrap(),
                e["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(ledger.len(), 8, "{names:?}");
    let card = sb.drop_dir().join("A001");
    let history = card.join("ascmhl");
    let mut local: Vec<String> = std::fs::read_dir(&history)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    local.sort();
    assert_eq!(local.len(), 3, "{local:?}");
    assert!(local[1].starts_with("0002_A001_"), "{local:?}");
    for name in &local {
        assert!(
            names.contains(&format!("uploads/drop/A001/ascmhl/{name}")),
            "{name} not uploaded: {names:?}"
        );
    }
    // The chain as uploaded is the chain on the card.
    let chain = ledger.iter().find(|e| e["name"] == "ascmhl_chain.xml").unwrap();
    assert_eq!(
        chain["sha256"].as_str().unwrap(),
        sha256_file(&history.join("ascmhl_chain.xml"))
    );
    assert_schema_valid(&tools, &history);
    // The reference tool reads our generation…
    let info = reference(&tools, &["info", "-v", card.to_str().unwrap()]);
    assert!(
        info.contains("Generation 2") && info.contains("autorender-sync"),
        "{info}"
    );
    assert!(info.contains("transfer"), "{info}");
    // …and checks the card against the history we extended (it compares
    // every file with the latest generation, ours, and adds a third).
    agent.stop();
    let next = reference(&tools, &["create", "-h", "xxh64", card.to_str().unwrap()]);
    assert!(!next.to_lowercase().contains("error"), "{next}");
    assert_eq!(
        history.read_dir().unwrap().count(),
        4,
        "the reference tool added generation 3"
    );
}

#[test]
fn set_manifest_mhl_gives_a_card_without_history_one_the_reference_tool_accepts() {
    let Some(tools) = ascmhl_tools() else { return };
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        &format!("{CARD_SETS}set_manifest = \"mhl\"\n"),
    );
    let stage = staging(&sb);
    let card = stage.join("B001");
    std::fs::create_dir_all(card.join("Clips")).unwrap();
    for i in 1..=3u64 {
        write_file(
            &card.join(format!("Clips/B001C00{i}.mov")),
            40_000 * i as usize,
            70 + i,
        );
    }
    let mut agent = sb.running_agent(&[]);
    std::fs::rename(&card, sb.drop_dir().join("B001")).unwrap();
    wait_status(&sb, &agent, 60, first_complete);
    // 3 clips, a new history (generation 1 and the chain), the JSON manifest.
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
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(
        names.contains(&"uploads/drop/B001/ascmhl/ascmhl_chain.xml".to_string()),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("uploads/drop/B001/ascmhl/0001_B001_") && n.ends_with(".mhl")),
        "{names:?}"
    );
    // The card itself was not written to.
    assert!(!sb.drop_dir().join("B001/ascmhl").exists());
    agent.stop();
    // The history (kept in the state dir) put beside a copy of the card:
    // the reference tool checks every clip against it.
    let kept = walk(&sb.state_dir())
        .into_iter()
        .find(|p| p.ends_with("B001/ascmhl/ascmhl_chain.xml"));
    let kept = kept
        .expect("the new history is kept in the state dir")
        .parent()
        .unwrap()
        .to_path_buf();
    assert_schema_valid(&tools, &kept);
    let copy = staging(&sb).join("B001-copy");
    std::fs::create_dir_all(copy.join("ascmhl")).unwrap();
    std::fs::create_dir_all(copy.join("Clips")).unwrap();
    for e in std::fs::read_dir(sb.drop_dir().join("B001/Clips")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join("Clips").join(e.file_name())).unwrap();
    }
    for e in std::fs::read_dir(&kept).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join("ascmhl").join(e.file_name())).unwrap();
    }
    let out = reference(&tools, &["create", "-h", "xxh128", copy.to_str().unwrap()]);
    assert!(!out.to_lowercase().contains("error"), "{out}");
    // A flipped byte in the copy is caught by the reference tool against our hashes.
    flip_byte(&copy.join("Clips/B001C002.mov"), 10);
    let (ok, text) = tool(
        &tools,
        "ascmhl",
        &["create", "-h", "xxh128", copy.to_str().unwrap()],
    );
    assert!(!ok, "{text}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_history_edited_after_it_was_written_or_a_symlinked_ascmhl_is_refused() {
    let Some(tools) = ascmhl_tools() else { return };
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", CARD_SETS);
    let stage = staging(&sb);
    // A001: someone "fixed" a hash in the generation to match a damaged clip.
    make_card(&tools, &stage.join("A001"), "xxh64", 1);
    let generation = std::fs::read_dir(stage.join("A001/ascmhl"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "mhl"))
        .unwrap();
    let text = std::fs::read_to_string(&generation).unwrap();
    let at = text.find("action=\"original\"").unwrap();
    let value = text[at..].find('>').unwrap() + at + 1;
    let mut edited = text.clone().into_bytes();
    edited[value] = if edited[value] == b'0' { b'1' } else { b'0' };
    std::fs::write(&generation, edited).unwrap();
    // A002: its ascmhl/ is a link to another card's (valid) history.
    make_card(&tools, &stage.join("other"), "xxh64", 2);
    make_card(&tools, &stage.join("A002"), "xxh64", 2);
    std::fs::remove_dir_all(stage.join("A002/ascmhl")).unwrap();
    std::os::unix::fs::symlink(stage.join("other/ascmhl"), stage.join("A002/ascmhl")).unwrap();
    let mut agent = sb.running_agent(&[]);
    std::fs::rename(stage.join("A001"), sb.drop_dir().join("A001")).unwrap();
    std::fs::rename(stage.join("A002"), sb.drop_dir().join("A002")).unwrap();
    let reason = |set: &str| reason_of(&sb.status(), set);
    wait_status(&sb, &agent, 60, |st| {
        reason_of(st, "A001").contains("history was altered")
            && reason_of(st, "A002").contains("symbolic link")
    });
    assert!(
        reason("A001").starts_with("ASC MHL history unusable: "),
        "{}",
        reason("A001")
    );
    assert!(emu.ledger().is_empty(), "{:?}", emu.ledger());
    agent.stop();
}

#[test]
fn a_crash_after_our_generation_is_written_neither_writes_another_nor_sends_twice() {
    let Some(tools) = ascmhl_tools() else { return };
    // Every request takes a while: the crash lands while the history goes.
    let emu = Emulator::start(&["--latency", "300"]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        &format!("{CARD_SETS}set_mhl = \"write\"\nset_manifest = true\n"),
    );
    let stage = staging(&sb);
    make_card(&tools, &stage.join("A001"), "md5", 1);
    let mut agent = sb.running_agent(&[]);
    std::fs::rename(stage.join("A001"), sb.drop_dir().join("A001")).unwrap();
    assert!(
        wait_until(Duration::from_secs(90), || agent
            .log_text()
            .contains("ASC MHL generation")),
        "{}\n{}",
        sb.status(),
        agent.log_text()
    );
    agent.crash();
    assert!(
        emu.ledger().len() < 8,
        "the crash came after everything was sent: {:?}",
        emu.ledger()
    );
    let history = sb.drop_dir().join("A001/ascmhl");
    let count = || std::fs::read_dir(&history).unwrap().count();
    assert_eq!(count(), 3, "generation 1, ours, the chain");
    let mut agent = sb.running_agent(&[]);
    wait_status(&sb, &agent, 90, first_complete);
    assert_eq!(count(), 3, "no second generation of ours");
    let mut names: Vec<String> = emu
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
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "each file once: {names:?}");
    assert_eq!(names.len(), 8, "{names:?}");
    agent.stop();
    // The reference tool accepts the card after it all.
    reference(
        &tools,
        &[
            "create",
            "-h",
            "md5",
            sb.drop_dir().join("A001").to_str().unwrap(),
        ],
    );
}

#[test]
fn a_card_still_being_copied_is_checked_as_it_lands_without_a_false_alarm() {
    let Some(tools) = ascmhl_tools() else { return };
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        "sets = \"folder\"\nset_quiet = \"3s\"\n",
    );
    let stage = staging(&sb);
    make_card(&tools, &stage.join("A001"), "xxh64", 1);
    let mut agent = sb.running_agent(&[]);
    // The history first, then each clip well after the one before (each
    // settles; the card is checked early and found incomplete meanwhile).
    let card = sb.drop_dir().join("A001");
    std::fs::create_dir_all(card.join("Clips")).unwrap();
    std::fs::rename(stage.join("A001/ascmhl"), card.join("ascmhl")).unwrap();
    std::fs::rename(stage.join("A001/A001.xml"), card.join("A001.xml")).unwrap();
    for i in 1..=3 {
        std::thread::sleep(Duration::from_millis(900));
        let name = format!("Clips/A001C00{i}.mov");
        std::fs::rename(stage.join("A001").join(&name), card.join(&name)).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger().len() == 6),
        "{}\n{}",
        sb.status(),
        agent.log_text()
    );
    let log = agent.log_text();
    assert!(
        !log.contains("is refused") && !log.contains("mhl_failed"),
        "{log}"
    );
    assert!(log.contains("4 file(s) match the ASC MHL history"), "{log}");
    agent.stop();
}
