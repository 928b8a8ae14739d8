//! The control plane of a running agent (issue 14, first part): the guards
//! (token, Host, Origin), status, retry, metrics and health.

use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::Value;

use crate::harness::*;

#[test]
fn the_control_api_guards_serves_status_retry_metrics_and_health() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n[control]\nlisten = \"127.0.0.1:0\"\n",
        "",
    );
    let mut agent = sb.running_agent(&[]);
    let (url, token) = sb.control();
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
fn a_configured_address_that_is_taken_stops_the_agent_naming_the_holder() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        &format!("settle = \"200ms\"\n[control]\nlisten = \"127.0.0.1:{port}\"\n"),
        "",
    );
    // A scrape of that address would reach this test, not the agent: the
    // agent refuses to start, and names who holds it.
    let mut c = sb.cmd();
    c.arg("run");
    let out = run(c);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let me = format!("pid {}", std::process::id());
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}\" is taken by")) && out.stderr.contains(&me),
        "{}",
        out.stderr
    );
    assert!(!sb.state_dir().join("control.json").exists());
    // `check` says what is configured.
    let out = cli(&sb, &["check", "--offline"]);
    assert!(
        out.stdout
            .contains(&format!("control API: http://127.0.0.1:{port}\n")),
        "{}",
        out.stdout
    );
}

#[test]
fn a_taken_default_address_falls_back_loudly_and_status_says_where_and_off_means_off() {
    // The default address (moved, for tests, to a port this test holds).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let default = held.local_addr().unwrap().to_string();
    let env = [("AUTORENDER_TEST_CONTROL_LISTEN", default.as_str())];
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let mut agent = sb.running_agent_env(&[], &env);
    let (url, _) = sb.control();
    assert!(!url.ends_with(&default), "{url}");
    let r = Client::new().get(format!("{url}/healthz")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let log = agent.log_text();
    assert!(
        log.contains(&format!("default address {default} is taken by"))
            && log.contains(&format!("pid {}", std::process::id()))
            && log.contains(&format!("listens on {url} instead")),
        "{log}"
    );
    // status (text and JSON) and check say where it listens.
    assert_eq!(sb.status()["agent"]["control"], url.as_str());
    let out = cli(&sb, &["status"]);
    assert!(
        out.stdout.contains(&format!("control API: {url}")),
        "{}",
        out.stdout
    );
    let mut c = sb.cmd();
    c.envs(env).args(["check", "--offline"]);
    let out = run(c);
    assert!(
        out.stdout.contains(&format!("{default} (the default)"))
            && out
                .stdout
                .contains(&format!("the running agent listens on {url}")),
        "{}",
        out.stdout
    );
    assert_eq!(agent.stop().code, 0);
    drop(held);

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
    // A bare number is told its unit once, with the fix.
    let out = cli(&sb, &["pause", "--for", "90"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("(e.g. \"90s\")"), "{}", out.stderr);
    assert_eq!(out.stderr.matches("e.g.").count(), 1, "{}", out.stderr);

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
    let (url, token) = sb.control();
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
    // It says what changed in the config, in the config's words.
    assert!(
        out.stdout.contains("  changed: watch[1]: added\n"),
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
        wait_until(Duration::from_secs(20), || agent.log_text().contains(
            "1 folder(s) watched, 0 added, 1 removed; changed: watch[1]: removed"
        )),
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

/// A webhook receiver on loopback: records each request (method, path,
/// body) and answers 200 while `up`, 503 while not.
pub(crate) struct Receiver {
    pub(crate) url: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    got: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
}

impl Receiver {
    pub(crate) fn start(up: bool) -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(up));
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (f, g) = (flag.clone(), got.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                );
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                let status = if f.load(Ordering::SeqCst) {
                    g.lock()
                        .unwrap()
                        .push((method, path, String::from_utf8_lossy(&body).into_owned()));
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver { url, up: flag, got }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
    }

    /// The JSON bodies POSTed to `path`.
    pub(crate) fn events(&self, path: &str) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "POST" && p == path)
            .map(|(_, _, b)| serde_json::from_str(b).unwrap_or(Value::Null))
            .collect()
    }

    fn gets(&self, path: &str) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "GET" && p == path)
            .count()
    }
}

fn kinds(events: &[Value]) -> std::collections::BTreeSet<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn notifications_reach_each_receiver_as_configured_even_after_it_was_down_across_a_restart() {
    let emu = Emulator::start(&["--max-size", "5000"]);
    let hooks = Receiver::start(false);
    let agent_keys = format!(
        "settle = \"200ms\"\nhealthcheck_url = \"{0}/ping\"\n{CONTROL}\
         [[notify]]\nurl = \"{0}/hook\"\nevents = [\"failed\", \"uploaded\", \"auth_rejected\"]\n\
         [[notify]]\nurl = \"{0}/slack\"\nformat = \"slack\"\n",
        hooks.url
    );
    let sb = Sandbox::watching(&emu, &agent_keys, "");
    let mut agent = sb.running_agent(&[]);
    write_file(&sb.drop_dir().join("ok.mov"), 1000, 1);
    write_file(&sb.drop_dir().join("too-big.mov"), 10_000, 2);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let st = sb.status();
            st["roots"][0]["done"] == 1 && st["roots"][0]["failed"] == 1
        }),
        "{}",
        sb.status()
    );
    // The receiver is down: its events wait in the outbox, across a stop.
    assert!(
        wait_until(Duration::from_secs(20), || agent
            .log_text()
            .contains("not delivered")),
        "{}",
        agent.log_text()
    );
    let out = agent.stop();
    assert_eq!(
        out.code, 1,
        "a clean stop of a run in which a file failed: {}",
        out.stderr
    );
    let log = agent.log_text();
    assert!(
        !log.contains("/hook") && !log.contains("/slack"),
        "a webhook URL leaked: {log}"
    );

    // Back up, and a start with a rejected key adds auth_rejected.
    hooks.set_up(true);
    let mut agent = sb.spawn_agent_env(&[], &[("AUTORENDER_API_KEY", "wrong-key")]);
    assert!(
        wait_until(Duration::from_secs(60), || kinds(&hooks.events("/hook")).len()
            == 3),
        "got {:?}\n{}",
        hooks.events("/hook"),
        agent.log_text()
    );
    let hook = hooks.events("/hook");
    assert_eq!(
        kinds(&hook),
        ["auth_rejected", "failed", "uploaded"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let up = hook.iter().find(|e| e["event"] == "uploaded").unwrap();
    assert_eq!(up["name"], "ok.mov", "{up}");
    assert_eq!(up["remote_folder"], "uploads/drop", "{up}");
    assert_eq!(up["size"], 1000, "{up}");
    assert!(
        up["file_no"].is_string() && up["host"].is_string() && up["time"].is_string(),
        "{up}"
    );
    assert!(up["path"].as_str().unwrap().ends_with("ok.mov"), "{up}");
    let failed = hook.iter().find(|e| e["event"] == "failed").unwrap();
    assert!(
        failed["path"].as_str().unwrap().ends_with("too-big.mov"),
        "{failed}"
    );
    assert!(failed["error"].as_str().unwrap().contains("413"), "{failed}");
    // The Slack receiver asked for the defaults (no `uploaded`), as text.
    assert!(
        wait_until(Duration::from_secs(30), || hooks.events("/slack").len() >= 2),
        "{:?}",
        hooks.events("/slack")
    );
    let slack = hooks.events("/slack");
    assert!(slack.iter().all(|b| b["text"].is_string()), "{slack:?}");
    assert!(
        slack
            .iter()
            .any(|b| b["text"].as_str().unwrap().contains("upload failed")),
        "{slack:?}"
    );
    assert!(
        slack
            .iter()
            .any(|b| b["text"].as_str().unwrap().contains("rejected")),
        "{slack:?}"
    );
    assert!(
        !slack
            .iter()
            .any(|b| b["text"].as_str().unwrap().contains("uploaded ")),
        "{slack:?}"
    );
    assert_eq!(agent.stop().code, 0);

    // With the key right again, an upload pings the healthcheck.
    let mut agent = sb.running_agent(&[]);
    write_file(&sb.drop_dir().join("next.mov"), 1000, 3);
    assert!(
        wait_until(Duration::from_secs(30), || hooks.gets("/ping") >= 1),
        "{:?}\n{}",
        hooks.got.lock().unwrap(),
        agent.log_text()
    );
    assert_eq!(agent.stop().code, 0);
}

#[test]
fn metrics_pass_promtool_and_their_counters_match_the_emulators_ledger() {
    let emu = Emulator::start(&["--max-size", "3000000", "--part-size", "1MiB"]);
    let sb = Sandbox::watching(
        &emu,
        &format!("settle = \"200ms\"\ndirect_upload_max = \"100KiB\"\n{CONTROL}"),
        "",
    );
    let mut agent = sb.running_agent(&[]);
    let (url, _) = sb.control();
    for (i, size) in [1000usize, 50_000, 2_500_000, 1_200_000].iter().enumerate() {
        write_file(&sb.drop_dir().join(format!("f{i}.mov")), *size, i as u64);
    }
    write_file(&sb.drop_dir().join("too-big.mov"), 4_000_000, 9);
    assert!(
        wait_until(Duration::from_secs(60), || {
            let st = sb.status();
            st["roots"][0]["done"] == 4 && st["roots"][0]["failed"] == 1
        }),
        "{}",
        sb.status()
    );
    let text = Client::new()
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.rsplit_once(' '))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let ledger = emu.ledger();
    let bytes: u64 = ledger.iter().map(|e| e["size"].as_u64().unwrap()).sum();
    assert_eq!(value("autorender_sync_files_uploaded_total"), ledger.len() as f64);
    assert_eq!(value("autorender_sync_bytes_uploaded_total"), bytes as f64);
    assert_eq!(value("autorender_sync_files_failed_total"), 1.0);
    assert_eq!(value("autorender_sync_upload_duration_seconds_count"), 4.0);
    assert!(
        text.contains("autorender_sync_failures_total{reason=\"refused\"} 1"),
        "{text}"
    );
    assert!(value("autorender_sync_last_success_timestamp_seconds") > 1.7e9);

    // promtool (Debian package `prometheus`) reads it as valid and lint-clean.
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => skip_or_fail("promtool (Debian package `prometheus`) is not installed"),
    }
    assert_eq!(agent.stop().code, 1, "a file failed in this run");
}

/// Reads Server-Sent Events from `resp` on a thread; each `data:` line's JSON.
fn sse_lines(resp: reqwest::blocking::Response) -> std::sync::mpsc::Receiver<Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(resp).lines() {
            let Ok(line) = line else { break };
            if let Some(data) = line.strip_prefix("data:")
                && tx
                    .send(serde_json::from_str(data.trim()).unwrap_or(Value::Null))
                    .is_err()
            {
                break;
            }
        }
    });
    rx
}

#[test]
fn the_dashboard_logs_in_once_per_code_and_the_event_stream_tells_each_step() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, &format!("settle = \"200ms\"\n{CONTROL}"), "");
    let mut agent = sb.running_agent(&[]);
    let (url, token) = sb.control();
    let plain = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Without a session: a page that says how to log in.
    let r = plain.get(format!("{url}/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().unwrap().contains("autorender-sync dashboard"));
    // `dashboard` prints a one-time link.
    let out = cli(&sb, &["dashboard", "--no-open"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let link = out.stdout.lines().next().unwrap().to_string();
    assert!(link.starts_with(&format!("{url}/?code=")), "{link}");
    // The long-lived token is no login in a URL (it would land in history).
    for param in ["token", "code"] {
        let r = plain.get(format!("{url}/?{param}={token}")).send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "?{param}=<control token>");
    }
    let r = plain.get(&link).send().unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(&token), "the session is not the token");
    let session = cookie.split(';').next().unwrap().to_string();
    // The code works once.
    assert_eq!(plain.get(&link).send().unwrap().status().as_u16(), 401);
    // The session opens the page (self-contained) and the API.
    let r = plain
        .get(format!("{url}/"))
        .header("Cookie", &session)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let page = r.text().unwrap();
    // Nothing fetched from elsewhere: the only address in the page is the
    // SVG namespace's name, which is an identifier, never loaded.
    let addresses = page.replace("\"http://www.w3.org/2000/svg\"", "");
    assert!(
        page.contains("EventSource") && !addresses.contains("http://") && !addresses.contains("https://")
    );
    let r = plain
        .get(format!("{url}/api/status"))
        .header("Cookie", &session)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = plain
        .get(format!("{url}/api/status"))
        .header("Cookie", "autorender_sync_1=forged")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // The stream: settled, started, uploaded for a dropped file; paused and
    // resumed for the buttons.
    let stream = Client::builder().timeout(None).build().unwrap();
    let events = sse_lines(
        stream
            .get(format!("{url}/api/events"))
            .header("Cookie", &session)
            .send()
            .unwrap(),
    );
    assert_eq!(
        events.recv_timeout(Duration::from_secs(10)).unwrap()["event"],
        "hello"
    );
    write_file(&sb.drop_dir().join("seen.mov"), 1000, 1);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains(&"uploaded".to_string()) && std::time::Instant::now() < deadline {
        if let Ok(e) = events.recv_timeout(Duration::from_millis(500)) {
            assert!(e["path"].as_str().unwrap_or("").ends_with("seen.mov"), "{e}");
            seen.push(e["event"].as_str().unwrap().to_string());
        }
    }
    let order: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|e| *e != "progress")
        .collect();
    assert_eq!(order, ["settled", "started", "uploaded"], "{seen:?}");
    for (path, kind) in [("/api/pause", "paused"), ("/api/resume", "resumed")] {
        let r = plain
            .post(format!("{url}{path}"))
            .header("Cookie", &session)
            .header("Origin", &url)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let e = events.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(e["event"], kind, "{e}");
    }
    // History over the API is what `history --json` says.
    let h: Value = plain
        .get(format!("{url}/api/history?limit=5"))
        .header("Cookie", &session)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(h[0]["remote_path"], "uploads/drop/seen.mov", "{h}");
    // A stop ends the stream (the agent does not wait on its readers).
    assert_eq!(agent.stop().code, 0);
}

#[cfg(unix)]
#[test]
fn healthz_says_when_the_journal_cannot_be_written() {
    use std::os::unix::fs::PermissionsExt;
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, &format!("settle = \"200ms\"\n{CONTROL}"), "");
    // Unprivileged (root writes anywhere): as root, the agent runs as nobody.
    let mut agent = sb.spawn_agent_unprivileged();
    let (url, _) = sb.control();
    let health = || {
        let r = Client::new().get(format!("{url}/healthz")).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert!(
        wait_until(Duration::from_secs(20), || health().0 == 200),
        "{:?}",
        health()
    );
    let state = sb.state_dir();
    let mode = std::fs::metadata(&state).unwrap().permissions().mode();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o555)).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || health().0 == 503),
        "{:?}",
        health()
    );
    assert!(health().1.contains("journal is not writable"), "{:?}", health());
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || health().0 == 200),
        "{:?}",
        health()
    );
    assert_eq!(agent.stop().code, 0);
}
