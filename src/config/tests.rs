//! Config tests: whole documents through `Settings::parse`.

use super::*;

fn parse(text: &str) -> Result<Settings, ConfigErrors> {
    Settings::parse(text, "test.toml", None)
}

#[test]
fn example_config_parses() {
    let s = parse(EXAMPLE_CONFIG).expect("example-config.toml must parse");
    assert_eq!(s.api.endpoint.as_str(), "https://upload.autorender.io/");
    assert_eq!(s.agent.concurrent_parts, None, "adaptive unless fixed");
    assert_eq!(s.agent.max_concurrent_parts, 32);
}

#[test]
fn concurrency_is_adaptive_unless_fixed_and_its_ceiling_is_checked() {
    let s = parse("[agent]\nconcurrent_parts = 8\n").unwrap();
    assert_eq!(s.agent.concurrent_parts, Some(8));
    let s = parse("[agent]\nmax_concurrent_parts = 64\n").unwrap();
    assert_eq!(
        (s.agent.concurrent_parts, s.agent.max_concurrent_parts),
        (None, 64)
    );
    for (text, says) in [
        ("[agent]\nmax_concurrent_parts = 500\n", "at most 128"),
        (
            "[agent]\nmax_concurrent_parts = 1\n",
            "agent.max_concurrent_parts",
        ),
        (
            "[agent]\nconcurrent_parts = 4\nmax_concurrent_parts = 64\n",
            "remove one of the two",
        ),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(
            e.contains(says) && e.contains("max_concurrent_parts"),
            "{text}: {e}"
        );
    }
}

#[test]
fn defaults() {
    let s = parse("").unwrap();
    assert_eq!(s.api.api_key_env, "AUTORENDER_API_KEY");
    assert_eq!(s.api.request_timeout, Duration::from_secs(60));
    assert_eq!(s.api.url_ttl, Duration::from_secs(3600));
    assert_eq!(s.agent.settle, Duration::from_secs(2));
    assert_eq!(s.agent.rescan_interval, Some(Duration::from_secs(900)));
    assert_eq!(s.agent.concurrent_files, 2);
    assert_eq!(s.agent.bandwidth_limit, None);
    assert_eq!(s.agent.max_attempts, 10);
    assert_eq!(s.agent.poll_interval, None);
    assert!(s.watches.is_empty());
}

#[test]
fn full_watch() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[agent]
settle = "3s"
bandwidth_limit = "40MiB/s"
[[watch]]
path = "{}"
remote_folder = "/uploads//renders/"
include = ["**/*.exr", "*.mp4"]
exclude = ["**/cache/**"]
subfolders = "flatten"
tags = ["render"]
metadata = {{ source = "farm-01", n = 3 }}
after_upload = "move"
move_to = "{}"
"#,
        dir.path().display(),
        out.path().display()
    );
    let s = parse(&text).unwrap();
    let w = &s.watches[0];
    assert_eq!(w.remote_folder, "uploads/renders");
    assert_eq!(w.settle, Duration::from_secs(3));
    assert!(w.matches("a/b/c.exr"));
    assert!(w.matches("x.mp4"));
    assert!(!w.matches("a/x.mp4"), "* must not cross /");
    assert!(!w.matches("cache/c.exr"));
    assert_eq!(w.subfolders, Subfolders::Flatten);
    assert_eq!(w.metadata["n"], 3);
    assert!(matches!(w.after_upload, AfterUpload::Move(_)));
    assert_eq!(s.agent.bandwidth_limit, Some(40 * 1024 * 1024));
}

#[test]
fn every_problem_is_listed_with_key_and_line() {
    let text = r#"[api]
endpont = "https://x"
request_timeout = 5
[agent]
settle = "2 weeks"
concurrent_parts = 0
[[watch]]
path = "relative/dir"
remote_folder = "a/../b"
"#;
    let errs = parse(text).unwrap_err().0;
    let keys: Vec<_> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        keys,
        vec![
            ("api.endpont", Some(2)),
            ("api.request_timeout", Some(3)),
            ("agent.settle", Some(5)),
            ("agent.concurrent_parts", Some(6)),
            ("watch[0].path", Some(8)),
            ("watch[0].remote_folder", Some(9)),
        ]
    );
    assert!(errs[0].message.contains("did you mean `api.endpoint`"));
}

#[test]
fn overlapping_and_move_rules() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let text = format!(
        "[[watch]]\npath = \"{0}\"\nremote_folder = \"a\"\nafter_upload = \"move\"\nmove_to = \"{1}\"\n[[watch]]\npath = \"{1}\"\nremote_folder = \"b\"\n[[watch]]\npath = \"{0}\"\nremote_folder = \"c\"\nafter_upload = \"move\"\n",
        dir.path().display(),
        sub.display()
    );
    let errs = parse(&text).unwrap_err().0;
    let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("watch[0].move_to") && m.contains("inside the watched folder")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("watch[2].after_upload") && m.contains("move_to")),
        "{msgs:?}"
    );
    assert!(msgs.iter().any(|m| m.contains("overlap")), "{msgs:?}");
}

#[test]
fn endpoint_transport_rules() {
    assert!(check_endpoint("http://127.0.0.1:8787").is_ok());
    assert!(check_endpoint("http://localhost:1").is_ok());
    assert!(check_endpoint("http://[::1]:1").is_ok());
    assert!(check_endpoint("https://upload.autorender.io").is_ok());
    assert!(
        check_endpoint("http://example.com")
            .unwrap_err()
            .contains("unencrypted")
    );
    assert!(check_endpoint("ftp://x").is_err());
    assert!(check_endpoint("not a url").is_err());
}

#[test]
fn bad_toml_names_line() {
    let errs = parse("[api]\nendpoint = \n").unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, Some(2));
    assert!(errs[0].message.contains("not valid TOML"));
}

#[test]
fn remote_folder_normalisation() {
    assert_eq!(normalise_remote_folder("/a//b/").unwrap(), "a/b");
    assert_eq!(normalise_remote_folder("").unwrap(), "");
    assert!(normalise_remote_folder("a/../b").is_err());
}

#[test]
fn notify_entries_and_the_healthcheck_are_checked_each_problem_named() {
    let s = parse(
        r#"
[agent]
healthcheck_url = "https://hc-ping.com/abc"
[[notify]]
url = "https://hooks.example.com/T/B/X"
[[notify]]
url = "http://127.0.0.1:9/hook"
format = "slack"
events = ["uploaded", "paused"]
"#,
    )
    .unwrap();
    assert_eq!(s.notify.len(), 2);
    assert_eq!(s.notify[0].format, NotifyFormat::Json);
    assert_eq!(s.notify[0].events, DEFAULT_EVENTS);
    assert!(s.notify[1].wants("uploaded") && !s.notify[1].wants("failed"));
    assert_eq!(
        s.agent.healthcheck_url.unwrap().as_str(),
        "https://hc-ping.com/abc"
    );
    assert_eq!(
        redact_url(&s.notify[0].url),
        "https://hooks.example.com/…",
        "the secret path is not shown"
    );

    let errs = parse(
        r#"
[agent]
healthcheck_url = "http://example.com/ping"
[[notify]]
format = "xml"
events = ["uploded"]
[[notify]]
url = "not a url"
"#,
    )
    .unwrap_err();
    let text = errs.to_string();
    for needle in [
        "agent.healthcheck_url",
        "notify[0]",
        "\"xml\" is not a format",
        "\"uploded\" is not an event",
        "notify[1].url",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
}

#[test]
fn the_readmes_render_farm_config_is_valid() {
    let readme = include_str!("../../README.md");
    let section = &readme[readme
        .find("## Render farms and camera cards")
        .expect("the section")..];
    let start = section.find("```toml\n").expect("a toml block") + 8;
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let (farm, cards) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let text = block
        .replace("/mnt/farm/out", farm.path().to_str().unwrap())
        .replace("~/Cards", cards.path().to_str().unwrap());
    let s = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(s.agent.schedule.len(), 2);
    let render = s.watches[0].sets.as_ref().unwrap();
    assert_eq!(
        (render.depth, render.gaps, render.manifest),
        (2, Gaps::Hold, true)
    );
    assert_eq!(s.watches[0].priority, 10);
    assert_eq!(s.watches[1].existing, Existing::Skip);
}

#[test]
fn fleet_settings_and_their_problems() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let watch = |dir: &tempfile::TempDir, share: &str| {
        format!(
            "[[watch]]\npath = \"{}\"\nremote_folder = \"r\"\n{share}\n",
            dir.path().display()
        )
    };
    // A loopback server, a node name, a lease; direct uploads are off in a fleet.
    let ok = format!(
        "[fleet]\ndatabase = \"postgres://sync@127.0.0.1:5432/ar\"\nnode = \"render-07\"\nlease = \"10s\"\n{}",
        watch(&a, "share = \"renders\"")
    );
    let s = parse(&ok).unwrap();
    let f = s.fleet.as_ref().unwrap();
    assert_eq!(f.node, "render-07");
    assert_eq!(f.lease, Duration::from_secs(10));
    assert_eq!(s.agent.direct_upload_max, 0);
    assert_eq!(s.shares().values().next().map(String::as_str), Some("renders"));
    assert!(!format!("{f:?}").contains("sync@"), "the address is not printed");
    // Defaults: the host name, a 30 s lease.
    let d = parse(&format!(
        "[fleet]\ndatabase_env = \"FLEET_DB\"\n{}",
        watch(&a, "share = \"x\"")
    ))
    .unwrap();
    assert_eq!(d.fleet.as_ref().unwrap().lease, DEFAULT_LEASE);
    assert!(!d.fleet.as_ref().unwrap().node.is_empty());

    let problems = |text: &str| parse(text).unwrap_err().to_string();
    // Deletes are not mirrored by a fleet (a node's late mount would
    // delete for all).
    let e = problems(&format!(
        "[fleet]\ndatabase_env = \"FLEET_DB\"\n{}",
        watch(&a, "share = \"x\"\nmirror_deletes = true")
    ));
    assert!(
        e.contains("watch[0].mirror_deletes") && e.contains("[fleet]"),
        "{e}"
    );
    // A server off the machine without TLS.
    let e = problems(&format!(
        "[fleet]\ndatabase = \"postgres://sync:pw@db.studio.lan/ar\"\n{}",
        watch(&a, "share = \"r\"")
    ));
    assert!(
        e.contains("fleet.database") && e.contains("sslmode=require"),
        "{e}"
    );
    assert!(!e.contains("pw@"), "the password is not echoed: {e}");
    // Both sources, no source, a bad lease, a bad address.
    let e = problems("[fleet]\ndatabase = \"postgres://127.0.0.1/a\"\ndatabase_env = \"X\"\n");
    assert!(e.contains("not both"), "{e}");
    assert!(problems("[fleet]\nnode = \"n\"\n").contains("needs `database"));
    assert!(
        problems("[fleet]\ndatabase = \"postgres://127.0.0.1/a\"\nlease = \"1s\"\n")
            .contains("between 2s and 1h")
    );
    assert!(problems("[fleet]\ndatabase = \"mysql:://x\"\n").contains("not a PostgreSQL address"));
    assert!(
        problems("[fleet]\ndatabase = \"postgres://127.0.0.1/a\"\nleese = \"3s\"\n")
            .contains("did you mean `fleet.lease`")
    );
    assert!(
        problems("[fleet]\ndatabase = \"postgres://127.0.0.1/a\"\nca_file = \"/nonexistent/ca.pem\"\n")
            .contains("is not a file")
    );
    // Every root needs its own share.
    let e = problems(&format!(
        "[fleet]\ndatabase = \"postgres://127.0.0.1/a\"\n{}{}",
        watch(&a, ""),
        watch(&b, "")
    ));
    assert!(
        e.contains("watch[0].share") && e.contains("watch[1].share"),
        "{e}"
    );
    let e = problems(&format!(
        "[fleet]\ndatabase = \"postgres://127.0.0.1/a\"\n{}{}",
        watch(&a, "share = \"s\""),
        watch(&b, "share = \"s\"")
    ));
    assert!(e.contains("already the share of watch[0]"), "{e}");
    // A set manifest would be sent by each node: refused in a fleet for now.
    let e = problems(&format!(
        "[fleet]\ndatabase = \"postgres://127.0.0.1/a\"\n{}",
        watch(&a, "share = \"s\"\nsets = \"folder\"\nset_manifest = true")
    ));
    assert!(
        e.contains("set_manifest") && e.contains("not available with [fleet]"),
        "{e}"
    );
}

#[test]
fn move_to_inside_another_watched_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(b.join("archive")).unwrap();
    std::fs::create_dir(&a).unwrap();
    let text = format!(
        "[[watch]]\npath = \"{0}\"\nremote_folder = \"a\"\nafter_upload = \"move\"\nmove_to = \"{1}\"\n[[watch]]\npath = \"{2}\"\nremote_folder = \"b\"\n",
        a.display(),
        b.join("archive").display(),
        b.display()
    );
    let errs = parse(&text).unwrap_err().0;
    let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        msgs.iter().any(|m| m.contains("watch[0].move_to")
            && m.contains("watch[1]'s folder")
            && m.contains("uploaded again")),
        "{msgs:?}"
    );
}

#[test]
fn mirror_deletes_and_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    let watch = |extra: &str| {
        format!(
            "[[watch]]\npath = \"{}\"\nremote_folder = \"r\"\n{extra}\n",
            dir.path().display()
        )
    };
    // Off by default.
    let s = parse(&watch("")).unwrap();
    assert_eq!(s.watches[0].mirror_deletes, None);
    // On: an hour's grace and 100 an hour unless said.
    let s = parse(&watch("mirror_deletes = true")).unwrap();
    assert_eq!(
        s.watches[0].mirror_deletes,
        Some(MirrorDeletes {
            after: Duration::from_secs(3600),
            max_per_hour: 100
        })
    );
    let s = parse(&watch(
        "mirror_deletes = true\ndelete_after = \"10m\"\nmax_delete = 5",
    ))
    .unwrap();
    assert_eq!(
        s.watches[0].mirror_deletes,
        Some(MirrorDeletes {
            after: Duration::from_secs(600),
            max_per_hour: 5
        })
    );
    let problem = |extra: &str| -> String {
        let errs = parse(&watch(extra)).unwrap_err().0;
        errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
    };
    let m = problem("delete_after = \"1h\"");
    assert!(
        m.contains("watch[0].delete_after") && m.contains("only used with mirror_deletes"),
        "{m}"
    );
    let m = problem("mirror_deletes = true\nmax_delete = 0");
    assert!(m.contains("watch[0].max_delete") && m.contains("≥ 1"), "{m}");
    let m = problem("mirror_deletes = true\ndelete_after = \"soon\"");
    assert!(m.contains("watch[0].delete_after"), "{m}");
    // The agent's own removal after upload would delete every remote copy.
    let m = problem("mirror_deletes = true\nafter_upload = \"delete\"");
    assert!(
        m.contains("watch[0].mirror_deletes") && m.contains("after_upload"),
        "{m}"
    );
}
