//! Promises the README makes that no other test held to: the key-source
//! order (environment, systemd credential, key file), tags/metadata/
//! random_prefix end to end, `history --limit`, `retry PATH`, `-q`, and the
//! `AUTORENDER_SYNC_LOG` filter.

use serde_json::Value;

use crate::harness::{Emulator, KEY, Sandbox, run, sha256_file, write_file};

#[test]
fn the_key_is_found_in_order_environment_then_systemd_credential_then_key_file() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::new(&emu, "");
    let key_file = sb.path("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let creds = sb.path("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("autorender-api-key"), KEY).unwrap();
    let text = std::fs::read_to_string(&sb.config).unwrap().replace(
        "[api]\n",
        &format!("[api]\napi_key_file = \"{}\"\n", key_file.display()),
    );
    std::fs::write(&sb.config, text).unwrap();
    let check = |env: bool, cred: bool| {
        let mut c = sb.cmd();
        if !env {
            c.env_remove("AUTORENDER_API_KEY");
        }
        if cred {
            c.env("CREDENTIALS_DIRECTORY", &creds);
        }
        c.arg("check");
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(!out.stdout.contains(KEY), "the key itself is never shown");
        out.stdout
    };
    assert!(check(true, true).contains("environment variable AUTORENDER_API_KEY"));
    assert!(check(false, true).contains("systemd credential"));
    assert!(check(false, false).contains("key file"));
}

#[test]
fn tags_metadata_and_random_prefix_arrive_end_to_end() {
    let emu = Emulator::start(&["--part-size", "64KiB"]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\ndirect_upload_max = \"100KiB\"\n",
        "tags = [\"render\", \"farm\"]\nmetadata = { source = \"farm-01\", shot = \"010\" }\nrandom_prefix = true\n",
    );
    let small = sb.drop_dir().join("small.exr");
    let big = sb.drop_dir().join("big.exr");
    write_file(&small, 5_000, 1);
    write_file(&big, 300_000, 2);
    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ledger = emu.ledger();
    assert_eq!(ledger.len(), 2);
    for (local, kind) in [(&small, "direct"), (&big, "multipart")] {
        let base = local.file_name().unwrap().to_str().unwrap();
        let e = ledger
            .iter()
            .find(|e| e["name"].as_str().unwrap().ends_with(&format!("_{base}")))
            .unwrap_or_else(|| panic!("{base} stored under a random prefix: {ledger:?}"));
        let prefix = e["name"]
            .as_str()
            .unwrap()
            .strip_suffix(&format!("_{base}"))
            .unwrap();
        assert_eq!(prefix.len(), 8, "{prefix}");
        assert_eq!(e["kind"], kind);
        assert_eq!(e["tags"], serde_json::json!(["render", "farm"]), "{kind}");
        assert_eq!(e["metadata"]["source"], "farm-01");
        assert_eq!(e["metadata"]["shot"], "010");
        assert_eq!(e["metadata"]["sha256"], sha256_file(local).as_str());
    }
    // The journal records the name the service gave, so nothing is sent again.
    let mut h = sb.cmd();
    h.args(["history", "--json"]);
    let rows: Value = serde_json::from_str(&run(h).stdout).unwrap();
    assert!(rows.as_array().unwrap().iter().all(|r| {
        r["remote_name"]
            .as_str()
            .is_some_and(|n| n.len() > 9 && n.as_bytes()[8] == b'_')
    }));
    assert_eq!(sb.run_once().code, 0);
    assert_eq!(emu.stored(), 2);
}

#[test]
fn history_limit_retry_path_quiet_and_the_log_filter() {
    let emu = Emulator::start(&["--max-size", "1000"]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\nmax_attempts = 1\n", "");
    for i in 0..3 {
        write_file(&sb.drop_dir().join(format!("ok{i}.bin")), 10, i);
    }
    write_file(&sb.drop_dir().join("big-a.bin"), 5000, 7);
    write_file(&sb.drop_dir().join("big-b.bin"), 5000, 8);

    let mut quiet = sb.cmd();
    quiet.args(["-q", "run", "--once"]);
    let out = run(quiet);
    assert_eq!(out.code, 1, "two files fail: {}", out.stderr);
    assert!(
        !out.stderr.contains("INFO"),
        "-q shows only errors: {}",
        out.stderr
    );
    assert!(out.stderr.contains("ERROR"), "{}", out.stderr);

    let mut h = sb.cmd();
    h.args(["history", "--limit", "2", "--json"]);
    let rows: Value = serde_json::from_str(&run(h).stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");

    let mut r = sb.cmd();
    r.arg("retry").arg(sb.drop_dir().join("big-a.bin"));
    let out = run(r);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("1 "),
        "only the named file: {}",
        out.stdout
    );
    let status = sb.status();
    assert_eq!(status["roots"][0]["pending"], 1, "{status}");
    assert_eq!(status["roots"][0]["failed"], 1, "{status}");

    let mut debug = sb.cmd();
    debug
        .env("AUTORENDER_SYNC_LOG", "autorender_sync=debug")
        .args(["run", "--once"]);
    let out = run(debug);
    assert!(
        out.stderr.contains("DEBUG"),
        "the filter turns debug on: {}",
        out.stderr
    );
    assert_eq!(
        emu.stored(),
        3,
        "the retried file is still too big; nothing else went again"
    );
}

/// A failed part is retried alone: the parts that went through the first
/// time are PUT exactly once, only the failed ones again.
#[test]
fn a_failed_part_is_retried_alone() {
    let emu = Emulator::start(&["--part-size", "64KiB", "--fail-parts", "0.3", "--seed", "5"]);
    let sb = Sandbox::new(&emu, "direct_upload_max = \"0\"\n");
    let f = sb.path("parts.mov");
    write_file(&f, 64 * 1024 * 20, 9);
    let mut c = sb.cmd();
    c.args(["upload"]).arg(&f);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let sessions = emu.sessions_of("parts.mov");
    assert_eq!(sessions.len(), 1, "one session: {sessions:?}");
    let puts: Vec<u64> = sessions[0]["puts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert!(
        puts.iter().any(|p| *p >= 2),
        "some part failed and was retried: {puts:?}"
    );
    assert!(
        puts.iter().filter(|p| **p == 1).count() >= 5,
        "the others went once: {puts:?}"
    );
    assert_eq!(
        puts.iter().sum::<u64>(),
        emu.stat("part_put"),
        "every PUT is accounted for by a part"
    );
}

/// 429 with `Retry-After: 1` is honoured: the next try waits the second the
/// service asked for, not the client's own 200 ms first backoff.
#[test]
fn retry_after_is_honoured() {
    // Seed 3 throttles the first start (checked below), then lets one through.
    let emu = Emulator::start(&["--throttle-start", "0.5", "--seed", "3"]);
    let sb = Sandbox::new(&emu, "direct_upload_max = \"0\"\n");
    let f = sb.path("a.mov");
    write_file(&f, 1000, 1);
    let mut c = sb.cmd();
    c.args(["upload"]).arg(&f);
    let began = std::time::Instant::now();
    let out = run(c);
    let took = began.elapsed();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let throttled = emu.stat("fault_throttled");
    assert!(throttled >= 1, "the start was throttled");
    assert!(
        took >= std::time::Duration::from_secs(throttled),
        "waited {took:?} for {throttled} Retry-After of 1 s"
    );
}
