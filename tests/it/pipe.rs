//! Adaptive transfer end to end: the real agent against the emulator
//! simulating a long fat pipe (each connection capped, the link shared).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

fn concurrency(sb: &Sandbox) -> Value {
    sb.status()["agent"]["concurrency"].clone()
}

/// Each connection gets 256 KiB/s of a 16 MiB/s link: 64 streams would fill
/// it, so the limit climbs past where it starts (8, and far past the old
/// fixed 4) to `max_concurrent_parts`. Then the link shrinks to 1 MiB/s
/// (4 streams fill it) and the limit follows it down within seconds, with
/// no request failing on the way.
#[test]
fn concurrency_rises_on_a_long_fat_pipe_and_falls_when_the_link_shrinks() {
    let emu = Emulator::start(&[
        "--latency",
        "50",
        "--stream-rate",
        "256KiB",
        "--link-rate",
        "16MiB",
        "--part-size",
        "256KiB",
    ]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\ndirect_upload_max = \"0\"\n", "");
    // At debug, so a part that failed and was retried shows in the log.
    let mut agent = sb.running_agent_env(&[], &[("AUTORENDER_SYNC_LOG", "autorender_sync=debug")]);
    write_file(&sb.drop_dir().join("plate.mov"), 96 << 20, 7);

    let mut seen = Value::Null;
    let rose = wait_until(Duration::from_secs(90), || {
        seen = concurrency(&sb);
        seen["limit"].as_u64().unwrap_or(0) > 16
    });
    assert!(
        rose,
        "the limit stayed at or below 16: {seen}\n{}",
        agent.log_text()
    );
    assert_eq!(seen["adaptive"], true, "{seen}");
    assert!(
        ["growing", "ceiling"].contains(&seen["reason"].as_str().unwrap_or("")),
        "{seen}"
    );
    let text = sb.cmd().arg("status").output().expect("status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("transfer:") && text.contains("adaptive"), "{text}");

    // The link shrinks to a sixteenth.
    let (code, _) = emu.api(
        reqwest::Method::POST,
        &format!("/_emulator/link?rate={}", 1 << 20),
    );
    assert_eq!(code, 200);
    let shrunk = Instant::now();
    let fell = wait_until(Duration::from_secs(60), || {
        seen = concurrency(&sb);
        seen["limit"].as_u64().unwrap_or(99) <= 8
    });
    assert!(
        fell,
        "the limit did not follow the link down: {seen}\n{}",
        agent.log_text()
    );
    let took = shrunk.elapsed();
    assert_eq!(seen["reason"], "slowed", "{seen}");
    assert_eq!(
        seen["changes"]["errors"].as_u64().unwrap_or(0),
        0,
        "no request failed on the way: {seen}"
    );
    assert!(
        took < Duration::from_secs(30),
        "followed the link {took:?} after it shrank: {seen}"
    );
    let status = sb.status();
    assert_eq!(status["roots"][0]["failed"], 0, "{status}");
    let log = agent.log_text();
    assert!(log.contains("DEBUG"), "the log is at debug: {log}");
    assert!(
        !log.contains("part failed"),
        "no part failed: {}",
        agent.log_text()
    );
    assert_eq!(agent.stop().code, 0);
}
