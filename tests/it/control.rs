//! The control plane of a running agent (issue 14, first part): the guards
//! (token, Host, Origin), status, retry, metrics and health.

use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::Value;

use crate::harness::*;

/// The address and token a running agent wrote into its state dir.
fn control_of(sb: &Sandbox) -> (String, String) {
    let info = sb.state_dir().join("control.json");
    assert!(
        wait_until(Duration::from_secs(20), || info.exists()),
        "control.json was not written"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&info).unwrap()).unwrap();
    let token = std::fs::read_to_string(sb.state_dir().join("control.token")).unwrap();
    (v["url"].as_str().unwrap().to_string(), token.trim().to_string())
}

#[test]
fn the_control_api_guards_serves_status_retry_metrics_and_health() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n[control]\nlisten = \"127.0.0.1:0\"\n",
        "",
    );
    let mut agent = sb.running_agent(&[]);
    let (url, token) = control_of(&sb);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sb.state_dir().join("control.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let http = Client::new();
    // Health and metrics need no token.
    let r = http.get(format!("{url}/healthz")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().unwrap().trim(), "ok");
    // The API does.
    let r = http.get(format!("{url}/api/status")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .get(format!("{url}/api/status"))
        .bearer_auth("wrong")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .get(format!("{url}/api/status"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let st: Value = r.json().unwrap();
    assert_eq!(st["agent"]["running"], true, "{st}");
    assert_eq!(st["roots"].as_array().unwrap().len(), 1);
    // A foreign Host (DNS rebinding) is refused, token or not.
    let r = http
        .get(format!("{url}/api/status"))
        .bearer_auth(&token)
        .header("Host", "evil.example")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = http
        .get(format!("{url}/healthz"))
        .header("Host", "evil.example")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // A cross-site POST is refused; the same POST from no site works.
    let retry = |origin: Option<&str>, body: &'static str| {
        let mut req = http
            .post(format!("{url}/api/retry"))
            .bearer_auth(&token)
            .body(body);
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        req.send().unwrap()
    };
    let r = retry(Some("http://evil.example"), r#"{"all": true}"#);
    assert_eq!(r.status().as_u16(), 403);
    let r = retry(None, r#"{"all": true}"#);
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().unwrap()["requeued"], 0);
    let r = retry(None, "{}");
    assert_eq!(r.status().as_u16(), 400, "an empty request says what to send");

    // An upload shows in the metrics.
    write_file(&sb.drop_dir().join("a.mov"), 1000, 1);
    assert!(wait_until(Duration::from_secs(30), || emu.ledger().len() == 1));
    let metrics = || http.get(format!("{url}/metrics")).send().unwrap().text().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || metrics()
            .contains("autorender_sync_files_uploaded_total 1")),
        "{}",
        metrics()
    );
    let m = metrics();
    assert!(m.contains("autorender_sync_bytes_uploaded_total 1000"), "{m}");
    assert!(m.contains("autorender_sync_paused 0"), "{m}");
    assert!(m.contains("state=\"done\"} 1"), "{m}");
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line}"));
        assert!(name.starts_with("autorender_sync_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }

    // A watched folder that disappears makes the agent unhealthy, saying why.
    std::fs::remove_dir_all(sb.drop_dir()).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || {
            http.get(format!("{url}/healthz"))
                .send()
                .unwrap()
                .status()
                .as_u16()
                == 503
        }),
        "healthz stays 200 without its folder"
    );
    let why = http.get(format!("{url}/healthz")).send().unwrap().text().unwrap();
    assert!(why.contains("missing"), "{why}");
    std::fs::create_dir(sb.drop_dir()).unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        http.get(format!("{url}/healthz"))
            .send()
            .unwrap()
            .status()
            .as_u16()
            == 200
    }));

    // A clean stop leaves no stale address or token behind.
    assert_eq!(agent.stop().code, 0);
    assert!(!sb.state_dir().join("control.json").exists());
    assert!(!sb.state_dir().join("control.token").exists());
}

#[test]
fn a_taken_port_falls_back_to_a_free_one_and_off_means_off() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        &format!("settle = \"200ms\"\n[control]\nlisten = \"127.0.0.1:{port}\"\n"),
        "",
    );
    let mut agent = sb.running_agent(&[]);
    let (url, _) = control_of(&sb);
    assert!(!url.ends_with(&format!(":{port}")), "{url}");
    let r = Client::new().get(format!("{url}/healthz")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(agent.log_text().contains("is taken"), "{}", agent.log_text());
    assert_eq!(agent.stop().code, 0);

    let off = Sandbox::watching(&emu, "settle = \"200ms\"\n[control]\nlisten = \"off\"\n", "");
    let mut agent = off.running_agent(&[]);
    assert!(!off.state_dir().join("control.json").exists());
    assert_eq!(agent.stop().code, 0);
    // Only loopback is accepted.
    let bad = Sandbox::watching(&emu, "[control]\nlisten = \"0.0.0.0:7780\"\n", "");
    let mut c = bad.cmd();
    c.args(["check", "--offline"]);
    let out = run(c);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("control.listen") && out.stderr.contains("loopback"),
        "{}",
        out.stderr
    );
}

/// `autorender-sync ARGS` with the sandbox's config.
fn cli(sb: &Sandbox, args: &[&str]) -> Output {
    let mut c = sb.cmd();
    c.args(args);
    run(c)
}

/// A control-plane setting with a free port (tests run side by side).
const CONTROL: &str = "[control]\nlisten = \"127.0.0.1:0\"\n";

fn root_counts(sb: &Sandbox) -> (i64, usize) {
    let st = sb.status();
    let pending = st["roots"][0]["pending"].as_i64().unwrap_or(0);
    let flying = st["in_flight"].as_array().map_or(0, Vec::len);
    (pending, flying)
}

#[test]
fn pause_lets_parts_in_flight_finish_outlives_a_restart_and_resume_continues() {
    // 20 parts of 1 MiB, one at a time, each request slowed: several
    // seconds in flight, so the pause lands mid-upload.
    let emu = Emulator::start(&["--part-size", "1MiB", "--latency", "300"]);
    let sb = Sandbox::watching(
        &emu,
        &format!("settle = \"200ms\"\nconcurrent_parts = 1\n{CONTROL}"),
        "",
    );
    let mut agent = sb.running_agent(&[]);
    write_file(&sb.drop_dir().join("big.mov"), 20 * 1024 * 1024, 1);
    assert!(
        wait_until(Duration::from_secs(30), || sb.status()["in_flight"][0]["sent"]
            .as_u64()
            .is_some_and(|n| n > 0)),
        "the upload did not start"
    );
    let out = cli(&sb, &["pause"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("uploads paused"), "{}", out.stdout);
    // The upload stops after its current part and waits, recorded.
    assert!(
        wait_until(Duration::from_secs(30), || root_counts(&sb) == (1, 0)),
        "the upload in flight did not stop: {}",
        sb.status()
    );
    let puts = || -> Vec<u64> {
        let s = emu.sessions_of("big.mov");
        assert_eq!(s.len(), 1, "one session: {s:?}");
        s[0]["puts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    let sent_at_pause = puts().iter().filter(|n| **n > 0).count();
    assert!(sent_at_pause > 0 && sent_at_pause < 20, "{:?}", puts());
    assert!(emu.ledger().is_empty());
    // A new file settles and waits too.
    write_file(&sb.drop_dir().join("small.mov"), 1000, 2);
    assert!(
        wait_until(Duration::from_secs(30), || root_counts(&sb) == (2, 0)),
        "{}",
        sb.status()
    );
    assert!(emu.ledger().is_empty(), "nothing starts while paused");
    let st = sb.status();
    assert_eq!(st["agent"]["pause_reason"], "paused_by_user", "{st}");

    // The pause outlives a restart.
    assert_eq!(agent.stop().code, 0);
    let mut agent = sb.running_agent(&[]);
    assert!(
        wait_until(Duration::from_secs(20), || agent
            .log_text()
            .contains("uploads are paused")),
        "{}",
        agent.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(20), || sb.status()["agent"]["pause_reason"]
            == "paused_by_user"
            && root_counts(&sb) == (2, 0)),
        "{}",
        sb.status()
    );
    assert!(emu.ledger().is_empty());

    let out = cli(&sb, &["resume"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("uploads resumed"), "{}", out.stdout);
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger().len() == 2),
        "{}",
        agent.log_text()
    );
    // The big file went on in the same session: no part was sent twice.
    assert!(puts().iter().all(|n| *n == 1), "{:?}", puts());
    let out = cli(&sb, &["resume"]);
    assert!(out.stdout.contains("were not paused"), "{}", out.stdout);
    assert_eq!(agent.stop().code, 0);
}

#[test]
fn a_pause_for_a_while_ends_by_itself_and_the_cli_says_when_no_agent_runs() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, &format!("settle = \"200ms\"\n{CONTROL}"), "");
    let out = cli(&sb, &["pause"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no agent is running"), "{}", out.stderr);
    for args in [&["resume"][..], &["reload"], &["dashboard"]] {
        let out = cli(&sb, args);
        assert_eq!(out.code, 1, "{args:?}");
        assert!(
            out.stderr.contains("no agent is running"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let out = cli(&sb, &["pause", "--for", "soon"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--for"), "{}", out.stderr);

    let mut agent = sb.running_agent(&[]);
    let out = cli(&sb, &["pause", "--for", "3s"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("until 20"), "{}", out.stdout);
    write_file(&sb.drop_dir().join("later.mov"), 1000, 1);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let st = sb.status();
            st["roots"][0]["pending"] == 1 && st["agent"]["paused_until"].is_string()
        }),
        "{}",
        sb.status()
    );
    assert!(
        wait_until(Duration::from_secs(30), || emu.ledger().len() == 1),
        "the pause did not end by itself: {}",
        agent.log_text()
    );
    assert!(
        agent.log_text().contains("the pause ran out"),
        "{}",
        agent.log_text()
    );
    assert_eq!(agent.stop().code, 0);
}

#[test]
fn reload_applies_a_new_root_and_refuses_a_broken_config_keeping_the_old() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, &format!("settle = \"200ms\"\n{CONTROL}"), "");
    let mut agent = sb.running_agent(&[]);
    let (url, token) = control_of(&sb);
    let good = std::fs::read_to_string(&sb.config).unwrap();
    let second = sb.path("second");
    std::fs::create_dir(&second).unwrap();
    let with_second = format!(
        "{good}[[watch]]\npath = \"{}\"\nremote_folder = \"uploads/second\"\n",
        second.display()
    );
    std::fs::write(&sb.config, &with_second).unwrap();
    let out = cli(&sb, &["reload"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("2 folder(s) watched") && out.stdout.contains("added: "),
        "{}",
        out.stdout
    );
    write_file(&second.join("new-root.mov"), 1000, 1);
    assert!(
        wait_until(Duration::from_secs(30), || emu
            .ledger()
            .iter()
            .any(|e| e["folder"] == "uploads/second")),
        "{}",
        agent.log_text()
    );

    // Two problems: both listed, by the API and by the command; the agent
    // goes on with the config it has.
    let broken = with_second.replace("settle = \"200ms\"", "settle = \"1ms\"\nconcurrent_files = 0");
    std::fs::write(&sb.config, &broken).unwrap();
    let r = Client::new()
        .post(format!("{url}/api/reload"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let v: Value = r.json().unwrap();
    let problems: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        problems.iter().any(|p| p.contains("agent.settle"))
            && problems.iter().any(|p| p.contains("agent.concurrent_files")),
        "{v}"
    );
    let out = cli(&sb, &["reload"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("agent.settle") && out.stderr.contains("agent.concurrent_files"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("goes on with the config it has"),
        "{}",
        out.stderr
    );
    assert!(!agent.has_exited());
    write_file(&sb.drop_dir().join("still.mov"), 1000, 2);
    write_file(&second.join("still-second.mov"), 1000, 3);
    assert!(
        wait_until(Duration::from_secs(30), || emu.ledger().len() == 3),
        "{}",
        agent.log_text()
    );

    // SIGHUP reloads too: the second root is dropped.
    std::fs::write(&sb.config, &good).unwrap();
    agent.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(20), || agent
            .log_text()
            .contains("1 root(s) watched, 0 added, 1 removed")),
        "{}",
        agent.log_text()
    );
    write_file(&second.join("unwatched.mov"), 1000, 4);
    write_file(&sb.drop_dir().join("watched.mov"), 1000, 5);
    assert!(wait_until(Duration::from_secs(30), || emu
        .ledger()
        .iter()
        .any(|e| e["name"] == "watched.mov")));
    assert!(
        !emu.ledger().iter().any(|e| e["name"] == "unwatched.mov"),
        "a removed root is no longer watched"
    );
    assert_eq!(agent.stop().code, 0);
}
