//! The two readings of the service (SPEC §1) and what the agent does when it
//! lacks an answer: uploads report what the service stored in either shape,
//! a lost state_dir re-uploads nothing (adoption), `verify` finds what the
//! workspace lost, and small files go in one request.

use reqwest::Method;
use serde_json::Value;

use crate::harness::{Emulator, Sandbox, run, sha256_file, unique_names, write_file};

const SHAPES: [&[&str]; 2] = [&["--answers", "docs"], &["--answers", "sdk", "--forget-sessions"]];

fn upload_json(sb: &Sandbox, files: &[std::path::PathBuf], extra: &[&str]) -> (i32, Value, String) {
    let mut c = sb.cmd();
    c.args(["upload", "--json", "--folder", "uploads/videos"])
        .args(extra)
        .args(files);
    let out = run(c);
    let v = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    (out.code, v, out.stderr)
}

#[test]
fn uploads_report_what_the_service_stored_in_both_answer_shapes() {
    for shape in SHAPES {
        let emu = Emulator::start(&[&["--part-size", "64KiB"], shape].concat());
        let sb = Sandbox::new(&emu, "direct_upload_max = \"100KiB\"");
        let small = sb.path("small.mp4");
        let big = sb.path("big.mp4");
        write_file(&small, 10_000, 1);
        write_file(&big, 300_000, 2);
        let (code, out, err) = upload_json(&sb, &[small.clone(), big.clone()], &[]);
        assert_eq!(code, 0, "{shape:?}: {err}");
        for (i, f) in [&small, &big].iter().enumerate() {
            assert_eq!(out[i]["ok"], true, "{shape:?}: {out}");
            assert_eq!(
                out[i]["path"], "uploads/videos",
                "{shape:?}: the folder, derived from either path"
            );
            assert_eq!(out[i]["size"], std::fs::metadata(f).unwrap().len());
            assert!(out[i]["file_no"].as_str().is_some_and(|n| !n.is_empty()));
        }
        let ledger = emu.ledger();
        assert_eq!(ledger.len(), 2, "{shape:?}: each file stored once");
        let kind = |name: &str| ledger.iter().find(|e| e["name"] == name).unwrap()["kind"].clone();
        assert_eq!(kind("small.mp4"), "direct", "small files go in one request");
        assert_eq!(kind("big.mp4"), "multipart");
        for e in &ledger {
            let local = sb.path(e["name"].as_str().unwrap());
            assert_eq!(e["sha256"], sha256_file(&local).as_str());
            assert_eq!(
                e["metadata"]["sha256"],
                sha256_file(&local).as_str(),
                "sha256 sent as metadata"
            );
        }
        assert_eq!(emu.stat("start_ok"), 1, "{shape:?}: never a second session");
    }
}

#[test]
fn a_tag_with_a_comma_forces_multipart() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::new(&emu, "");
    let f = sb.path("a.txt");
    write_file(&f, 100, 3);
    let (code, _, err) = upload_json(&sb, std::slice::from_ref(&f), &["--tag", "a,b", "--tag", "c"]);
    assert_eq!(code, 0, "{err}");
    let ledger = emu.ledger();
    assert_eq!(ledger[0]["kind"], "multipart");
    assert_eq!(ledger[0]["tags"], serde_json::json!(["a,b", "c"]));
}

/// A complete whose answer is lost, or that is still assembling when asked
/// again, is reconciled: each file lands once, and `upload` says so.
#[test]
fn lost_and_slow_completes_are_reconciled_not_sent_again() {
    for shape in SHAPES {
        let emu = Emulator::start(
            &[
                &[
                    "--part-size",
                    "64KiB",
                    "--fail-complete",
                    "0.6",
                    "--seed",
                    "11",
                    "--complete-delay",
                    "300",
                ],
                shape,
            ]
            .concat(),
        );
        let sb = Sandbox::new(&emu, "direct_upload_max = \"0\"");
        let files: Vec<_> = (0..6)
            .map(|i| {
                let p = sb.path(&format!("clip{i}.mov"));
                write_file(&p, 100_000 + i * 1000, i as u64);
                p
            })
            .collect();
        let (code, out, err) = upload_json(&sb, &files, &[]);
        assert_eq!(code, 0, "{shape:?}: {err}\n{out}");
        assert!(emu.stat("faults_injected") > 0, "faults fired");
        let ledger = emu.ledger();
        assert_eq!(unique_names(&ledger).len(), 6);
        assert_eq!(ledger.len(), 6, "{shape:?}: none twice");
    }
}

fn state_loss(shape: &[&str]) {
    let emu = Emulator::start(shape);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\nconcurrent_files = 8\n", "");
    let drop = sb.drop_dir();
    for i in 0..300 {
        let sub = drop.join(format!("shot{}", i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        write_file(&sub.join(format!("f{i:03}.exr")), 2_000 + (i % 7) * 100, i as u64);
    }
    let once = || sb.run_once();
    let out = once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.stored(), 300);
    std::fs::remove_dir_all(sb.state_dir()).unwrap();

    let out = once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        emu.stored(),
        300,
        "{shape:?}: nothing sent again after the state dir was lost"
    );
    let status = sb.status();
    assert_eq!(status["roots"][0]["done"], 300, "{status}");
    assert!(
        // Per folder one listing, plus the one key check of each start.
        emu.stat("list_files") <= 3 * 3 + 3 + 3,
        "one listing per folder, not a request per file: {}",
        emu.stat("list_files")
    );

    // Three changed in place with the same size: exactly those three go.
    for i in [5usize, 150, 299] {
        let p = drop.join(format!("shot{}", i % 3)).join(format!("f{i:03}.exr"));
        let len = std::fs::metadata(&p).unwrap().len() as usize;
        write_file(&p, len, 9_999 + i as u64);
    }
    std::fs::remove_dir_all(sb.state_dir()).unwrap();
    let out = once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.stored(), 303, "{shape:?}: exactly the three changed files");
    let ledger = emu.ledger();
    for i in [5usize, 150, 299] {
        let name = format!("f{i:03}.exr");
        let p = drop.join(format!("shot{}", i % 3)).join(&name);
        let newest = ledger.iter().rev().find(|e| e["name"] == name.as_str()).unwrap();
        assert_eq!(newest["sha256"], sha256_file(&p).as_str());
    }
}

#[test]
fn a_lost_state_dir_adopts_instead_of_uploading_again_sdk_listings() {
    state_loss(&["--answers", "sdk"]);
}

#[test]
fn a_lost_state_dir_adopts_instead_of_uploading_again_docs_listings_without_filters() {
    // No metadata in listings: the bytes behind each file's url are hashed.
    state_loss(&["--answers", "docs", "--ignore-list-filters"]);
}

#[test]
fn verify_finds_a_deleted_file_and_requeue_restores_it() {
    for shape in SHAPES {
        let emu = Emulator::start(shape);
        let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
        for i in 0..5 {
            write_file(&sb.drop_dir().join(format!("v{i}.mov")), 5_000, i);
        }
        let once = || sb.run_once();
        assert_eq!(once().code, 0);
        let verify = |extra: &[&str]| {
            let mut c = sb.cmd();
            c.arg("verify").args(extra);
            run(c)
        };
        let out = verify(&[]);
        assert_eq!(out.code, 0, "{shape:?}: {}{}", out.stdout, out.stderr);
        let victim = emu.ledger().into_iter().find(|e| e["name"] == "v3.mov").unwrap();
        let file_no = victim["file_no"].as_str().unwrap().to_string();
        let (status, _) = emu.api(Method::DELETE, &format!("/api/v1/files/{file_no}"));
        assert_eq!(status, 200);

        let out = verify(&[]);
        assert_eq!(out.code, 1, "{shape:?}: {}", out.stdout);
        assert!(
            out.stdout.contains("missing") && out.stdout.contains("v3.mov"),
            "{}",
            out.stdout
        );
        assert!(!out.stdout.contains("v2.mov"), "{}", out.stdout);
        let out = verify(&["--json"]);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["problems"].as_array().unwrap().len(), 1);

        let out = verify(&["--requeue"]);
        assert_eq!(out.code, 1);
        assert!(out.stdout.contains("1 queued again"), "{}", out.stdout);
        assert_eq!(once().code, 0);
        assert_eq!(emu.stored(), 6, "only the deleted file went again");
        let out = verify(&[]);
        assert_eq!(out.code, 0, "{shape:?}: {}", out.stdout);
    }
}

#[test]
fn the_emulator_speaks_both_readings_of_listing_and_details() {
    let docs = Emulator::start(&["--answers", "docs"]);
    let sdk = Emulator::start(&["--answers", "sdk", "--forget-sessions"]);
    for (emu, reading) in [(&docs, "docs"), (&sdk, "sdk")] {
        let sb = Sandbox::new(emu, "");
        let f = sb.path("x.png");
        write_file(&f, 1234, 5);
        let (code, out, err) = upload_json(&sb, std::slice::from_ref(&f), &[]);
        assert_eq!(code, 0, "{err}");
        let no = out[0]["file_no"].as_str().unwrap().to_string();
        let (_, folders) = emu.api(Method::GET, "/api/v1/folders");
        assert_eq!(folders["folders"][0]["name"], "uploads");
        let (_, list) = emu.api(Method::GET, "/api/v1/files?limit=10");
        let item = &list["files"][0];
        assert_eq!(list["meta"]["total"], 1);
        let (_, details) = emu.api(Method::GET, &format!("/api/v1/files/{no}"));
        assert_eq!(details["success"], true);
        if reading == "docs" {
            assert_eq!(item["file_size"], 1234);
            assert_eq!(item["path"], "uploads/videos");
            assert!(item.get("metadata").is_none());
            assert!(details["data"].get("metadata").is_none());
        } else {
            assert_eq!(item["size"], 1234);
            assert_eq!(item["path"], "uploads/videos/x.png");
            assert_eq!(item["metadata"]["sha256"], sha256_file(&f).as_str());
            let (status, err) = emu.api(Method::POST, "/api/v1/multipart/complete");
            assert_eq!(status, 400);
            assert!(err["code"].is_string(), "string error codes: {err}");
        }
        let url = item["url"].as_str().unwrap();
        let bytes = reqwest::blocking::get(url).unwrap().bytes().unwrap();
        assert_eq!(bytes.len(), 1234, "the url serves the file's bytes");
        let (status, _) = emu.api(Method::DELETE, &format!("/api/v1/files/{no}"));
        assert_eq!(status, 200);
        let (status, _) = emu.api(Method::GET, &format!("/api/v1/files/{no}"));
        assert_eq!(status, 404);
    }
}

/// A complete that takes longer than `request_timeout` (a large file on a
/// slow service): the timeout is not a failure to act on blindly; the file
/// is stored once.
#[test]
fn a_complete_slower_than_the_request_timeout_is_not_doubled() {
    for shape in SHAPES {
        let emu = Emulator::start(&[&["--part-size", "64KiB", "--complete-delay", "2500"], shape].concat());
        let sb = Sandbox::new(&emu, "direct_upload_max = \"0\"");
        let text = std::fs::read_to_string(&sb.config)
            .unwrap()
            .replace("[agent]", "request_timeout = \"1s\"\n[agent]");
        std::fs::write(&sb.config, text).unwrap();
        let f = sb.path("master.mov");
        write_file(&f, 200_000, 4);
        let (code, out, err) = upload_json(&sb, std::slice::from_ref(&f), &[]);
        assert_eq!(code, 0, "{shape:?}: {err}\n{out}");
        assert_eq!(emu.ledger().len(), 1, "{shape:?}: stored once");
        assert_eq!(emu.stat("start_ok"), 1, "{shape:?}: no second session");
        assert!(
            emu.stat("complete") >= 2,
            "the slow complete was asked about again"
        );
    }
}
