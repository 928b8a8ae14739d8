//! The emulator is the test double for everything else, so its strictness is
//! tested directly: each rule object storage or the service enforces.

use std::io::Read;
use std::time::Duration;

use reqwest::blocking::{Body, Client};
use serde_json::{Value, json};

use crate::harness::*;

fn start_session(emu: &Emulator, size: u64) -> Value {
    let resp = Client::new()
        .post(format!("{}/api/v1/multipart/start", emu.url))
        .bearer_auth(KEY)
        .json(
            &json!({"file_name": "a.bin", "size": size, "format": "application/octet-stream", "folder": "x"}),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().unwrap()
}

fn part_url(s: &Value, i: usize) -> String {
    s["parts"][i].as_str().unwrap().to_string()
}

#[test]
fn api_rejects_bad_keys_and_bad_bodies() {
    let emu = Emulator::start(&[]);
    let c = Client::new();
    let start = format!("{}/api/v1/multipart/start", emu.url);
    let body = json!({"file_name": "a.bin", "size": 3, "format": "text/plain"});
    let r = c.post(&start).json(&body).send().unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().unwrap();
    assert_eq!(v["success"], false);
    assert_eq!(
        c.post(&start)
            .bearer_auth("nope")
            .json(&body)
            .send()
            .unwrap()
            .status(),
        401
    );
    // x-api-key is accepted as an alternative.
    assert_eq!(
        c.post(&start)
            .header("x-api-key", KEY)
            .json(&body)
            .send()
            .unwrap()
            .status(),
        200
    );
    for bad in [
        json!({"size": 3, "format": "text/plain"}),
        json!({"file_name": "a", "size": -3, "format": "text/plain"}),
        json!({"file_name": "a", "size": 3}),
        json!("not an object"),
    ] {
        let r = c.post(&start).bearer_auth(KEY).json(&bad).send().unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = c
        .get(format!("{}/api/v1/files?limit=1", emu.url))
        .bearer_auth(KEY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn part_puts_are_checked_like_object_storage() {
    // The answers below are read in the docs' shape (shapes.rs covers the SDKs').
    let emu = Emulator::start(&["--part-size", "4", "--answers", "docs"]);
    let s = start_session(&emu, 10);
    assert_eq!(s["part_size"], 4);
    assert_eq!(s["parts"].as_array().unwrap().len(), 3);
    let c = Client::new();
    let url = part_url(&s, 0);

    let r = c.put(&url).bearer_auth(KEY).body("abcd").send().unwrap();
    assert_eq!(r.status(), 400, "credentials on a part PUT");
    assert!(r.text().unwrap().contains("<Error>"), "S3-style XML");
    let r = c.put(&url).header("x-api-key", KEY).body("abcd").send().unwrap();
    assert_eq!(r.status(), 400);

    let chunked = Body::new(std::io::Cursor::new(b"abcd".to_vec()).take(4));
    let r = c.put(&url).body(chunked).send().unwrap();
    assert_eq!(r.status(), 501, "chunked transfer encoding");

    assert_eq!(
        c.put(&url).body("abc").send().unwrap().status(),
        400,
        "wrong length"
    );
    let tampered = url.replace("signature=", "signature=0");
    assert_eq!(c.put(&tampered).body("abcd").send().unwrap().status(), 403);
    let other_part = url.replace("/0?", "/1?");
    assert_eq!(
        c.put(&other_part).body("abcd").send().unwrap().status(),
        403,
        "signature is per part"
    );

    let complete = format!("{}/api/v1/multipart/complete", emu.url);
    let body = json!({"session_id": s["session_id"], "uuid": s["uuid"]});
    assert_eq!(c.put(&url).body("abcd").send().unwrap().status(), 200);
    let r = c.post(&complete).bearer_auth(KEY).json(&body).send().unwrap();
    assert_eq!(r.status(), 400, "complete with parts missing");
    assert_eq!(c.put(part_url(&s, 1)).body("efgh").send().unwrap().status(), 200);
    assert_eq!(c.put(part_url(&s, 2)).body("ij").send().unwrap().status(), 200);
    let complete_now = || -> Value {
        c.post(&complete)
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let first = complete_now();
    assert_eq!(first["success"], true);
    assert_eq!(first["data"]["path"], "x");
    assert_eq!(first["data"]["file_size"], 10);
    let again = complete_now();
    assert_eq!(first, again, "complete is idempotent");
    assert_eq!(emu.ledger().len(), 1);
    assert_eq!(
        std::fs::read(emu.store.path().join("x/a.bin")).unwrap(),
        b"abcdefghij"
    );
}

#[test]
fn part_urls_expire() {
    let emu = Emulator::start(&["--url-ttl", "1"]);
    let s = start_session(&emu, 3);
    let expire_at = s["expire_at"].as_i64().unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    assert!(wait_until(Duration::from_secs(5), || now() >= expire_at));
    let r = Client::new().put(part_url(&s, 0)).body("abc").send().unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().unwrap().contains("Request has expired"));
}

/// `--seed` makes the injected faults reproducible: the same requests to two
/// emulators with the same seed meet the same faults, and another seed differs.
#[test]
fn the_same_seed_gives_the_same_faults() {
    let pattern = |seed: &str| -> Vec<u16> {
        let emu = Emulator::start(&[
            "--part-size",
            "4",
            "--fail-parts",
            "0.5",
            "--throttle-start",
            "0.3",
            "--seed",
            seed,
        ]);
        let c = Client::new();
        let mut seen = Vec::new();
        for _ in 0..8 {
            let resp = c
                .post(format!("{}/api/v1/multipart/start", emu.url))
                .bearer_auth(KEY)
                .json(&json!({"file_name": "a.bin", "size": 12, "format": "application/octet-stream"}))
                .send()
                .unwrap();
            seen.push(resp.status().as_u16());
            if resp.status() != 200 {
                continue;
            }
            let s: Value = resp.json().unwrap();
            for i in 0..3 {
                // A dropped connection shows as a body that breaks off: 0.
                let code = match c.put(part_url(&s, i)).body("abcd").send() {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        if r.bytes().is_err() { 0 } else { status }
                    }
                    Err(_) => 0,
                };
                seen.push(code);
            }
        }
        seen
    };
    let a = pattern("7");
    assert!(a.iter().any(|c| *c != 200), "faults fired: {a:?}");
    assert_eq!(a, pattern("7"), "same seed, same faults");
    assert_ne!(a, pattern("8"), "another seed, other faults");
}

/// Uploads a 2 MiB file in parts of 256 KiB, `streams` at a time; how long it took.
fn timed_upload(emu: &Emulator, streams: usize) -> Duration {
    let sb = Sandbox::new(
        emu,
        &format!("concurrent_parts = {streams}\ndirect_upload_max = \"0\"\n"),
    );
    let f = sb.path(&format!("f{streams}.bin"));
    write_file(&f, 2 * 1024 * 1024, streams as u64);
    let mut c = sb.cmd();
    c.arg("upload").arg(&f);
    let began = std::time::Instant::now();
    let out = run(c);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    began.elapsed()
}

#[test]
fn a_simulated_long_fat_pipe_caps_each_stream_and_the_link_and_the_link_can_change() {
    // 512 KiB/s a stream, 1 MiB/s the link: one stream takes ≥ 4 s for
    // 2 MiB, eight streams ≥ 2 s (the link), never less.
    let emu = Emulator::start(&[
        "--part-size",
        "256KiB",
        "--stream-rate",
        "512KiB",
        "--link-rate",
        "1MiB",
        "--stalls",
        "1",
        "--stall-ms",
        "10",
    ]);
    let one = timed_upload(&emu, 1);
    assert!(one >= Duration::from_millis(3900), "one stream: {one:?}");
    let eight = timed_upload(&emu, 8);
    assert!(
        eight >= Duration::from_millis(1900),
        "eight streams, link-bound: {eight:?}"
    );
    assert!(
        emu.stat("pipe_stalls") >= 16,
        "every body stalled once: {}",
        emu.stat("pipe_stalls")
    );
    // The link doubled while it runs: eight streams now need only ≥ 1 s.
    let (code, body) = emu.api(reqwest::Method::POST, "/_emulator/link?rate=2097152");
    assert_eq!((code, body["link_rate"].as_u64()), (200, Some(2097152)));
    let faster = timed_upload(&emu, 8);
    assert!(faster >= Duration::from_millis(900), "{faster:?}");
    let (code, _) = emu.api(reqwest::Method::POST, "/_emulator/link?rate=fast");
    assert_eq!(code, 400, "a rate that is not a number is refused");
}
