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
