//! Faults, round three (issue 25): each test stages the fault the trial
//! found and shows the promise of SPEC §4 holding through it.

use std::io::{Seek, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// Writes new pseudo-random content over `path` without truncating it
/// (the same inode, the same size): a program saving in place.
fn overwrite_in_place(path: &Path, size: usize, seed: u64) {
    let tmp = path.with_extension("seed");
    write_file(&tmp, size, seed);
    let data = std::fs::read(&tmp).unwrap();
    std::fs::remove_file(&tmp).unwrap();
    let mut f = std::fs::File::options().write(true).open(path).unwrap();
    f.rewind().unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
}

/// Objects the service still holds (not deleted through the API).
fn live(emu: &Emulator) -> Vec<Value> {
    emu.ledger()
        .into_iter()
        .filter(|e| e["deleted"] != true)
        .collect()
}

/// Every object still stored holds the bytes its metadata sha256 names.
fn assert_no_mixed_object(emu: &Emulator, log: &str) {
    for e in live(emu) {
        let stored = emu
            .store
            .path()
            .join(e["folder"].as_str().unwrap())
            .join(e["name"].as_str().unwrap());
        assert_eq!(
            Some(sha256_file(&stored).as_str()),
            e["sha256"].as_str(),
            "{} is stored with bytes its sha256 does not name (a mixed file): {log}",
            e["name"]
        );
    }
}

/// Item 1: a small file overwritten in place while its one request
/// streams (bandwidth-limited) is never left stored mixed: the bytes sent
/// are hashed as they go; a body that is not the version that settled is
/// deleted from the workspace and the file is uploaded again.
#[test]
fn a_direct_upload_overwritten_in_place_while_it_streams_is_never_stored_mixed() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\nbandwidth_limit = \"512KiB/s\"\n", "");
    let file = sb.drop_dir().join("small.mov");
    let size = 2 * 1024 * 1024;
    write_file(&file, size, 31);
    let mut agent = sb.running_agent(&[]);
    assert!(
        wait_until(Duration::from_secs(30), || emu.stat("direct_bytes") >= 256 * 1024),
        "no direct upload began"
    );
    overwrite_in_place(&file, size, 32);
    let last = sha256_file(&file);
    let sent = || {
        live(&emu)
            .iter()
            .any(|e| e["sha256"].as_str() == Some(last.as_str()))
    };
    assert!(
        wait_until(Duration::from_secs(60), sent),
        "the new version was not uploaded: {:?}\n{}",
        emu.ledger(),
        agent.log_text()
    );
    let out = agent.stop();
    assert_no_mixed_object(&emu, &out.stderr);
    let shas: Vec<String> = live(&emu)
        .iter()
        .filter_map(|e| e["sha256"].as_str().map(str::to_string))
        .collect();
    assert_eq!(shas, vec![last], "the new version, once: {}", out.stderr);
}
