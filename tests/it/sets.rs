//! Upload sets (issue 15): a render folder goes when `_DONE` arrives, its
//! sidecars and trigger last, then its manifest; sequence gaps hold it;
//! quiet-time sets; stuck sets; a crash in the middle of a set.

use std::time::Duration;

use serde_json::Value;

use crate::control::Receiver;
use crate::harness::*;

fn names(emu: &Emulator) -> Vec<String> {
    emu.ledger()
        .iter()
        .map(|e| e["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn set_of(sb: &Sandbox, name: &str) -> Value {
    sb.status()["sets"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["set"] == name).cloned())
        .unwrap_or(Value::Null)
}

const RENDER: &str = "sets = \"folder\"\nset_trigger = \"_DONE\"\nupload_last = [\"*.mhl\", \"*.json\"]\n";

#[test]
fn a_render_folder_goes_when_done_arrives_sidecars_and_trigger_last_then_the_manifest() {
    let emu = Emulator::start(&[]);
    let hooks = Receiver::start(true);
    let sb = Sandbox::watching(
        &emu,
        &format!(
            "settle = \"200ms\"\n[[notify]]\nurl = \"{}/hook\"\nevents = [\"set_complete\"]\n",
            hooks.url
        ),
        &format!("{RENDER}set_manifest = true\n"),
    );
    let mut agent = sb.running_agent(&[]);
    let shot = sb.drop_dir().join("sh010");
    std::fs::create_dir(&shot).unwrap();
    // 120 frames over about 10 s, as a render node writes them.
    for i in 1..=120u64 {
        write_file(&shot.join(format!("sh010.{i:04}.exr")), 2000 + i as usize, i);
        std::thread::sleep(Duration::from_millis(80));
        assert!(emu.ledger().is_empty(), "frame {i}: nothing goes before _DONE");
    }
    write_file(&shot.join("sh010.mhl"), 300, 500);
    write_file(&shot.join("render.json"), 200, 501);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let s = set_of(&sb, "sh010");
            s["state"] == "waiting"
                && s["reason"].as_str().unwrap_or("").contains("no trigger")
                && sb.status()["roots"][0]["held"] == 122
        }),
        "{}",
        sb.status()
    );
    assert!(emu.ledger().is_empty());
    let mut c = sb.cmd();
    c.arg("status");
    let text = run(c).stdout;
    assert!(
        text.contains("set sh010: waiting (no trigger (_DONE) yet)"),
        "{text}"
    );

    write_file(&shot.join("_DONE"), 0, 0);
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger().len() == 124),
        "{:?}\n{}",
        names(&emu),
        agent.log_text()
    );
    let order = names(&emu);
    let at = |n: &str| {
        order
            .iter()
            .position(|x| x == n)
            .unwrap_or_else(|| panic!("{n} not sent"))
    };
    let last_frame = order.iter().rposition(|n| n.ends_with(".exr")).unwrap();
    assert!(
        at("sh010.mhl") > last_frame && at("render.json") > last_frame,
        "{order:?}"
    );
    assert!(
        at("_DONE") > at("sh010.mhl") && at("_DONE") > at("render.json"),
        "{order:?}"
    );
    assert_eq!(at("sh010.manifest.json"), 123, "the manifest is last: {order:?}");
    assert_eq!(unique_names(&emu.ledger()).len(), 124, "each file once");

    // The manifest names every file with its sha256 and file_no.
    let entry = emu.ledger()[123].clone();
    let url = format!(
        "{}/files/{}/sh010.manifest.json",
        emu.url,
        entry["file_no"].as_str().unwrap()
    );
    let m: Value = reqwest::blocking::get(&url)
        .unwrap()
        .json()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 123, "{m}");
    for f in files {
        let local = shot.join(f["path"].as_str().unwrap());
        assert_eq!(f["sha256"], sha256_file(&local).as_str(), "{f}");
        assert!(f["file_no"].is_string(), "{f}");
    }
    assert!(
        wait_until(Duration::from_secs(20), || hooks.events("/hook").len() == 1),
        "{:?}",
        hooks.events("/hook")
    );
    assert_eq!(hooks.events("/hook")[0]["event"], "set_complete");
    assert_eq!(set_of(&sb, "sh010")["state"], "complete");

    // A frame re-rendered after completion starts a new round: only it goes.
    write_file(&shot.join("sh010.0007.exr"), 999, 7777);
    assert!(
        wait_until(Duration::from_secs(30), || set_of(&sb, "sh010")["round"] == 2
            && set_of(&sb, "sh010")["state"] == "complete"),
        "{}",
        sb.status()
    );
    let after = names(&emu);
    assert_eq!(
        after.iter().filter(|n| *n == "sh010.0007.exr").count(),
        2,
        "{after:?}"
    );
    // The second round's manifest has a name of its own, and the local copy
    // sits under the root's own path in the state dir.
    assert!(
        wait_until(Duration::from_secs(30), || names(&emu)
            .contains(&"sh010.manifest.r2.json".to_string())),
        "{:?}",
        names(&emu)
    );
    assert_eq!(
        names(&emu).iter().filter(|n| *n == "sh010.manifest.json").count(),
        1
    );
    let local = sb
        .state_dir()
        .join("manifests")
        .join(sb.drop_dir().strip_prefix("/").unwrap())
        .join("sh010/sh010.manifest.r2.json");
    assert!(local.is_file(), "{}", local.display());
    assert_eq!(hooks.events("/hook").len(), 2);
    assert_eq!(agent.stop().code, 0);
}

fn frames(dir: &std::path::Path, range: impl Iterator<Item = u64>) {
    for i in range {
        write_file(&dir.join(format!("plate.{i:04}.dpx")), 500, i);
    }
}

#[test]
fn a_gap_in_the_frames_holds_the_set_until_it_is_filled_or_is_reported() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        &format!("{RENDER}sequence_gaps = \"hold\"\n"),
    );
    let mut agent = sb.running_agent(&[]);
    let shot = sb.drop_dir().join("pl01");
    std::fs::create_dir(&shot).unwrap();
    frames(&shot, (1..=100).filter(|i| *i != 57));
    write_file(&shot.join("_DONE"), 0, 0);
    assert!(
        wait_until(Duration::from_secs(30), || set_of(&sb, "pl01")["reason"]
            .as_str()
            .is_some_and(|r| r.contains("gap at 57"))),
        "{}",
        sb.status()
    );
    assert!(emu.ledger().is_empty());
    frames(&shot, 57..=57);
    assert!(
        wait_until(Duration::from_secs(30), || set_of(&sb, "pl01")["state"]
            == "complete"),
        "{}",
        sb.status()
    );
    assert_eq!(emu.ledger().len(), 101);
    assert_eq!(agent.stop().code, 0);

    // With "warn": the set goes, and the gap is named in the log.
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        &format!("{RENDER}sequence_gaps = \"warn\"\n"),
    );
    let shot = sb.drop_dir().join("pl02");
    std::fs::create_dir(&shot).unwrap();
    frames(
        &shot,
        (1001..=1050).filter(|i| ![1017, 1018, 1019, 1044].contains(i)),
    );
    write_file(&shot.join("_DONE"), 0, 0);
    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.ledger().len(), 47);
    assert!(out.stderr.contains("gap at 1017-1019, 1044"), "{}", out.stderr);
}

#[test]
fn a_quiet_set_goes_after_its_quiet_time_and_a_set_that_never_completes_is_stuck() {
    let emu = Emulator::start(&[]);
    let hooks = Receiver::start(true);
    let sb = Sandbox::watching(
        &emu,
        &format!(
            "settle = \"200ms\"\n[[notify]]\nurl = \"{}/hook\"\nevents = [\"stuck\", \"set_complete\"]\n",
            hooks.url
        ),
        "sets = \"folder\"\nset_quiet = \"2s\"\nset_timeout = \"4s\"\nsequence_gaps = \"hold\"\n",
    );
    let mut agent = sb.running_agent(&[]);
    let card = sb.drop_dir().join("A001");
    std::fs::create_dir(&card).unwrap();
    for i in 1..=5u64 {
        write_file(&card.join(format!("A001_C00{i}.mov")), 1000, i);
    }
    assert!(
        wait_until(Duration::from_secs(30), || set_of(&sb, "A001")["state"]
            == "complete"),
        "{}",
        sb.status()
    );
    assert_eq!(emu.ledger().len(), 5);
    // A set whose gap never closes is reported stuck once, after set_timeout.
    let plate = sb.drop_dir().join("plate");
    std::fs::create_dir(&plate).unwrap();
    frames(&plate, [1, 2, 4].into_iter());
    assert!(
        wait_until(Duration::from_secs(30), || hooks
            .events("/hook")
            .iter()
            .any(|e| e["event"] == "stuck")),
        "{:?}\n{}",
        hooks.events("/hook"),
        agent.log_text()
    );
    let stuck: Vec<Value> = hooks
        .events("/hook")
        .into_iter()
        .filter(|e| e["event"] == "stuck")
        .collect();
    assert_eq!(stuck.len(), 1);
    assert!(
        stuck[0]["error"].as_str().unwrap().contains("gap at 3"),
        "{}",
        stuck[0]
    );
    assert!(
        stuck[0]["path"].as_str().unwrap().ends_with("plate"),
        "{}",
        stuck[0]
    );
    assert_eq!(set_of(&sb, "plate")["stuck"], true);
    assert_eq!(emu.ledger().len(), 5);
    assert_eq!(agent.stop().code, 0);
}

#[test]
fn a_crash_in_the_middle_of_a_set_finishes_each_file_once_with_the_trigger_last() {
    let emu = Emulator::start(&["--latency", "100"]);
    // A fixed count: with the adaptive budget eight or more frames go at once, the
    // crash cuts some mid-send, and each of those rightly waits out the
    // 120 s bound on an unclear outcome before it goes again (tested in
    // round3.rs); this test is about the set's order across a crash.
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\nconcurrent_files = 2\nconcurrent_parts = 4\n",
        RENDER,
    );
    let shot = sb.drop_dir().join("sh020");
    std::fs::create_dir(&shot).unwrap();
    for i in 1..=40u64 {
        write_file(&shot.join(format!("sh020.{i:04}.exr")), 200_000, i);
    }
    write_file(&shot.join("_DONE"), 0, 0);
    let mut agent = sb.spawn_agent(&[]);
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger().len() >= 8),
        "{}",
        agent.log_text()
    );
    agent.crash();
    assert!(emu.ledger().len() < 41, "the crash came mid-set");
    let mut agent = sb.running_agent(&[]);
    assert!(
        wait_until(Duration::from_secs(60), || set_of(&sb, "sh020")["state"]
            == "complete"),
        "{}\n{}",
        sb.status(),
        agent.log_text()
    );
    let order = names(&emu);
    assert_eq!(order.len(), 41, "each file once: {order:?}");
    assert_eq!(unique_names(&emu.ledger()).len(), 41);
    assert_eq!(order.last().map(String::as_str), Some("_DONE"), "{order:?}");
    assert_eq!(agent.stop().code, 0);
}
