//! The first week of a real user (issue 13): each rough edge a newcomer
//! hit, through the real binary where the user would see it.

use std::time::Duration;

use crate::harness::*;

#[test]
fn a_file_the_service_refuses_fails_at_once_and_retry_still_works() {
    // 413 from start (multipart) and from the direct upload alike.
    let emu = Emulator::start(&["--max-size", "4000", "--direct-max", "4000"]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\ndirect_upload_max = \"2KiB\"\n", "");
    write_file(&sb.drop_dir().join("big.mov"), 5000, 1);
    write_file(&sb.drop_dir().join("small.mov"), 3000, 2);
    let mut agent = sb.spawn_agent(&[]);
    assert!(
        wait_until(Duration::from_secs(30), || sb.status()["roots"][0]["failed"] == 1),
        "the refused multipart upload fails: {}",
        sb.status()
    );
    let status = sb.status();
    let failures = status["roots"][0]["failures"].to_string();
    assert!(
        failures.contains("big.mov") && failures.contains("413"),
        "{failures}"
    );
    let log = agent.log_text();
    assert!(!log.contains("retrying in"), "a refusal is not retried:\n{log}");
    assert!(log.contains("is not retried"), "{log}");
    let out = run({
        let mut c = sb.cmd();
        c.arg("status");
        c
    });
    assert!(out.stdout.contains("big.mov"), "{}", out.stdout);
    assert_eq!(agent.stop().code, 1, "a run with a failed file exits 1");

    // A small file refused both ways (413 for the direct upload, then for
    // the multipart start it falls back to) fails at once too: --once, exit 1.
    let emu_small = Emulator::start(&["--direct-max", "500", "--max-size", "500"]);
    let sb2 = Sandbox::watching(&emu_small, "settle = \"200ms\"\n", "");
    write_file(&sb2.drop_dir().join("direct.mov"), 1000, 3);
    let once = sb2.run_once();
    assert_eq!(once.code, 1, "{}", once.stderr);
    assert!(
        once.stderr.contains("refused by the service (413)"),
        "{}",
        once.stderr
    );
    assert!(!once.stderr.contains("retrying in"), "{}", once.stderr);

    // `retry` queues it again; with the limit lifted it goes through.
    let mut c = sb2.cmd();
    c.args(["retry", "--all"]);
    assert_eq!(run(c).code, 0);
    let lifted = Emulator::start(&[]);
    let text = std::fs::read_to_string(&sb2.config)
        .unwrap()
        .replace(&emu_small.url, &lifted.url);
    std::fs::write(&sb2.config, text).unwrap();
    let again = sb2.run_once();
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(lifted.ledger().len(), 1);
}

#[test]
fn sighup_reloads_a_running_agent_stops_it_when_its_terminal_closes_and_nohup_ignores_it() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    // No terminal (a service): SIGHUP re-reads the config and goes on.
    let mut agent = sb.running_agent(&[]);
    agent.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(20), || agent
            .log_text()
            .contains("config reloaded")),
        "{}",
        agent.log_text()
    );
    write_file(&sb.drop_dir().join("after-reload.mov"), 100, 3);
    assert!(wait_until(Duration::from_secs(30), || emu.ledger().len() == 1));
    assert!(!agent.has_exited());
    assert_eq!(agent.stop().code, 0);

    // Started on a terminal that then closes: a clean stop, as before.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok()
    {
        let log = sb.path("tty.log");
        let mut inner = sb.cmd();
        inner.arg("run").arg("--log-file").arg(&log);
        let mut term = on_a_terminal(&inner);
        term.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut script = term.spawn().expect("spawn script");
        assert!(
            wait_until(Duration::from_secs(20), || sb.status()["agent"]["running"]
                == true),
            "the agent did not start on a terminal"
        );
        // Killing `script` closes the terminal's master side: a hangup.
        script.kill().unwrap();
        script.wait().unwrap();
        assert!(
            wait_until(Duration::from_secs(30), || sb.status()["agent"]["running"]
                == false),
            "the agent kept running after its terminal closed"
        );
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(text.contains("stopping:"), "{text}");
    } else {
        skip_or_fail("`script` (util-linux) is not installed");
    }

    // Under nohup, SIGHUP stays ignored: the agent goes on working.
    let mut agent = sb.spawn_wrapped(&["nohup"]);
    assert!(
        wait_until(Duration::from_secs(20), || sb.status()["agent"]["running"]
            == true),
        "the agent did not start under nohup"
    );
    agent.signal("HUP");
    write_file(&sb.drop_dir().join("after-hup.mov"), 100, 4);
    assert!(
        wait_until(Duration::from_secs(30), || emu.ledger().len() == 2),
        "the agent kept working after an ignored SIGHUP:\n{}",
        agent.log_text()
    );
    assert!(!agent.log_text().contains("config reloaded"));
    assert!(!agent.has_exited());
    assert_eq!(agent.stop().code, 0);
}

/// Runs `cmd` with its stdout a pipe whose reading end is already closed,
/// so every write fails with EPIPE.
fn with_closed_stdout(mut cmd: std::process::Command) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    cmd.stdout(writer);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run binary");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_closed_pipe_ends_every_printing_command_quietly() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    write_file(&sb.drop_dir().join("a.mov"), 100, 1);
    assert_eq!(sb.run_once().code, 0);
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["history"],
        &["history", "--json"],
        &["completions", "bash"],
        &["completions", "zsh"],
        &["man"],
        &["check"],
    ] {
        // `completions` and `man` take no --config.
        let mut c = if matches!(args[0], "completions" | "man") {
            std::process::Command::new(bin())
        } else {
            sb.cmd()
        };
        c.args(args);
        let out = with_closed_stdout(c);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(
            !out.stderr.contains("panicked") && !out.stderr.contains("Broken pipe"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn read_only_commands_on_a_fresh_home_create_nothing() {
    let home = tempfile::tempdir().unwrap();
    for args in [&["status"][..], &["history"], &["status", "--json"]] {
        let mut c = std::process::Command::new(bin());
        c.args(args)
            .env("HOME", home.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("AUTORENDER_SYNC_CONFIG");
        let out = run(c);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }
    let mut c = std::process::Command::new(bin());
    c.arg("status")
        .env("HOME", home.path())
        .env_remove("XDG_DATA_HOME");
    assert!(run(c).stdout.contains("has not run yet"));
    let left: Vec<_> = walk(home.path());
    assert!(left.is_empty(), "status/history wrote {left:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        out.push(e.path());
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

#[test]
fn status_shows_interrupted_uploads_and_keeps_upload_out_of_the_roots() {
    // Slow requests keep an upload of 12 parts in flight when the agent is stopped.
    let emu = Emulator::start(&["--part-size", "1MiB", "--latency", "1000"]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\ndirect_upload_max = \"0\"\nconcurrent_parts = 1\n",
        "",
    );
    write_file(&sb.drop_dir().join("big.mov"), 12 * 1024 * 1024, 1);
    let mut agent = sb.spawn_agent(&[]);
    assert!(
        wait_until(Duration::from_secs(30), || sb.status()["roots"][0]["uploading"]
            == 1),
        "the upload is in flight: {}",
        sb.status()
    );
    // Live progress: bytes sent of the file in flight, its rate and time left.
    assert!(
        wait_until(Duration::from_secs(30), || {
            sb.status()["in_flight"][0]["sent"]
                .as_u64()
                .is_some_and(|n| n > 0)
        }),
        "{}",
        sb.status()
    );
    let st = sb.status();
    assert_eq!(st["in_flight"][0]["size"], 12 * 1024 * 1024, "{st}");
    assert!(st["in_flight"][0]["path"].as_str().unwrap().ends_with("big.mov"));
    let mut c = sb.cmd();
    c.arg("status");
    let text = run(c).stdout;
    assert!(
        text.contains("uploading now:") && text.contains("big.mov: "),
        "{text}"
    );
    assert!(text.contains("% of 12.0 MiB"), "{text}");
    assert_eq!(agent.stop().code, 0);
    let st = sb.status();
    assert_eq!(st["roots"][0]["uploading"], 0, "{st}");
    assert_eq!(st["roots"][0]["interrupted"], 1, "{st}");
    let mut c = sb.cmd();
    c.arg("status");
    let text = run(c).stdout;
    assert!(text.contains("1 interrupted"), "{text}");

    // `upload` from a folder nobody watches: counted apart, not as a root,
    // and named the same way in `upload`'s output and in `history`.
    let outside = sb.path("outside");
    std::fs::create_dir(&outside).unwrap();
    write_file(&outside.join("small.txt"), 10, 2);
    let mut c = sb.cmd();
    c.current_dir(&outside).args(["upload", "small.txt"]);
    let up = run(c);
    assert_eq!(up.code, 0, "{}", up.stderr);
    assert!(up.stdout.contains("→ small.txt "), "{}", up.stdout);
    let st = sb.status();
    assert_eq!(st["roots"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st["elsewhere"]["done"], 1, "{st}");
    let mut c = sb.cmd();
    c.arg("history");
    let hist = run(c).stdout;
    assert!(hist.contains("→ small.txt "), "{hist}");
    assert!(!hist.contains("→ /small.txt"), "{hist}");
}

#[test]
fn messages_name_what_is_wrong() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    // `history --failed` with none.
    let mut c = sb.cmd();
    c.args(["history", "--failed"]);
    assert!(run(c).stdout.contains("no failed uploads"));
    // `retry` of a path that is not a failed file: named, exit 1.
    let mut c = sb.cmd();
    c.args(["retry", "nothere.bin"]);
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("nothere.bin: no failed file there"),
        "{}",
        out.stderr
    );
    // A second agent is told who holds the state dir.
    let mut first = sb.running_agent(&[]);
    assert!(
        wait_until(Duration::from_secs(10), || sb.status()["agent"]["pid"].is_i64()),
        "heartbeat"
    );
    let pid = sb.status()["agent"]["pid"].as_i64().unwrap();
    let mut c = sb.cmd();
    c.args(["run", "--once"]);
    let out = run(c);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("pid {pid}, running since ")),
        "{}",
        out.stderr
    );
    assert_eq!(first.stop().code, 0);
    // No config file at the default place: say so, and how to make one.
    let home = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new(bin());
    c.arg("run")
        .env("HOME", home.path())
        .env("AUTORENDER_API_KEY", "k")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("AUTORENDER_SYNC_CONFIG");
    let out = run(c);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("there is no config file") && out.stderr.contains("autorender-sync init"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("example-config.toml"), "{}", out.stderr);
}

#[test]
fn upload_resumes_after_ctrl_c_from_the_parts_already_stored() {
    // 8 parts of 1 MiB, one at a time, each request slowed down, so Ctrl-C
    // lands mid-upload.
    let emu = Emulator::start(&["--part-size", "1MiB", "--latency", "300"]);
    let sb = Sandbox::new(&emu, "concurrent_parts = 1\ndirect_upload_max = \"0\"\n");
    let file = sb.path("take.mov");
    write_file(&file, 8 * 1024 * 1024, 7);
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut c = sb.cmd();
    c.arg("upload")
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap());
    let mut child = c.spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || {
            emu.sessions_of("take.mov")
                .iter()
                .any(|s| s["parts_received"].as_u64() >= Some(3))
        }),
        "three parts stored"
    );
    assert!(child.try_wait().unwrap().is_none(), "still uploading");
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_with_deadline(&mut child, Duration::from_secs(60));
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(text.contains("resumes"), "{text}");
    let stored_before: u64 = emu.sessions_of("take.mov")[0]["parts_received"].as_u64().unwrap();

    // The same command again: the same session, only the missing parts.
    let mut c = sb.cmd();
    c.arg("upload").arg(&file);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("resuming the upload"), "{}", out.stderr);
    let sessions = emu.sessions_of("take.mov");
    assert_eq!(sessions.len(), 1, "no new session: {sessions:?}");
    let puts: u64 = sessions[0]["puts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap_or(0))
        .sum();
    // Every part once, plus at most the one in flight at Ctrl-C.
    assert!(
        puts <= 9,
        "{puts} part PUTs for 8 parts ({stored_before} stored before)"
    );
    assert_eq!(emu.ledger().len(), 1);
    assert_eq!(
        emu.ledger()[0]["sha256"].as_str(),
        Some(sha256_file(&file).as_str())
    );
}

#[test]
fn a_file_being_written_shows_as_growing() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"1s\"\n", "");
    let mut agent = sb.running_agent(&[]);
    let path = sb.drop_dir().join("render.mov");
    // A writer appending every 300 ms, until the test has seen "growing".
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::File::create(&path).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(&[7u8; 4096]).unwrap();
                f.sync_data().unwrap();
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let seen = wait_until(Duration::from_secs(30), || {
        sb.status()["roots"][0]["growing"] == 1
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(seen, "never shown as growing: {}", sb.status());
    // Once it stops changing, it is uploaded (once).
    assert!(wait_until(Duration::from_secs(30), || emu.ledger().len() == 1));
    assert_eq!(
        emu.ledger()[0]["sha256"].as_str(),
        Some(sha256_file(&path).as_str())
    );
    assert_eq!(agent.stop().code, 0);
}

#[test]
fn a_refused_connection_fails_upload_and_once_in_seconds_saying_why() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let drop = dir.path().join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::write(
        &config,
        format!(
            "[api]\nendpoint = \"http://127.0.0.1:{port}\"\n[agent]\nstate_dir = \"{}\"\nsettle = \"200ms\"\n\
             [[watch]]\npath = \"{}\"\nremote_folder = \"in\"\n",
            dir.path().join("state").display(),
            drop.display()
        ),
    )
    .unwrap();
    write_file(&drop.join("a.mov"), 100, 1);
    write_file(&drop.join("b.mov"), 3 * 1024 * 1024, 2);
    for args in [&["upload", "a.mov", "b.mov"][..], &["run", "--once"]] {
        let mut c = std::process::Command::new(bin());
        c.arg("--config")
            .arg(&config)
            .args(args)
            .current_dir(&drop)
            .env("AUTORENDER_API_KEY", "k")
            .env("NO_COLOR", "1");
        let began = std::time::Instant::now();
        let out = run(c);
        let took = began.elapsed();
        assert_ne!(out.code, 0, "{args:?}");
        assert!(
            out.stderr.to_lowercase().contains("connection refused"),
            "{args:?}: the cause is named:\n{}",
            out.stderr
        );
        assert!(!out.stderr.contains("retrying in"), "{args:?}:\n{}", out.stderr);
        // It used to take 63-88 s of silent retries.
        assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
    }
}

#[test]
fn upload_takes_a_folder_recursively_and_dry_run_sends_nothing() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::new(&emu, "");
    let dir = sb.path("shoot");
    std::fs::create_dir_all(dir.join("day1/cam a")).unwrap();
    write_file(&dir.join("top.mov"), 100, 1);
    write_file(&dir.join("day1/cam a/c1.mov"), 200, 2);
    write_file(&dir.join("day1/c2.mov.part"), 50, 3);
    write_file(&dir.join("day1/.DS_Store"), 10, 4);

    let mut c = sb.cmd();
    c.args(["upload", "--dry-run", "--folder", "jobs/42"]).arg(&dir);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("→ jobs/42/top.mov"), "{}", out.stdout);
    assert!(
        out.stdout.contains("→ jobs/42/day1/cam a/c1.mov"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("c2.mov.part") && !out.stdout.contains("DS_Store"),
        "{}",
        out.stdout
    );
    assert!(emu.ledger().is_empty(), "a dry run sends nothing");
    assert!(
        !sb.state_dir().join("journal.sqlite3").exists(),
        "and records nothing"
    );

    let mut c = sb.cmd();
    c.args(["upload", "--json", "--folder", "jobs/42"]).arg(&dir);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut stored: Vec<String> = emu
        .ledger()
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["folder"].as_str().unwrap_or(""),
                e["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    stored.sort();
    assert_eq!(stored, vec!["jobs/42/day1/cam a/c1.mov", "jobs/42/top.mov"]);
}

#[test]
fn run_can_log_to_a_rotating_file_from_the_flag_or_the_config() {
    let emu = Emulator::start(&[]);
    let log = tempfile::tempdir().unwrap();
    let from_config = log.path().join("state/agent.log");
    let sb = Sandbox::watching(
        &emu,
        &format!("settle = \"200ms\"\nlog_file = \"{}\"\n", from_config.display()),
        "",
    );
    write_file(&sb.drop_dir().join("a.mov"), 100, 1);
    let out = sb.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stderr.contains("uploaded"),
        "logs went to the file, not stderr: {}",
        out.stderr
    );
    let text = std::fs::read_to_string(&from_config).unwrap();
    assert!(text.contains("uploaded") && text.contains("a.mov"), "{text}");
    // --log-file wins over the config; errors that end the run are logged too.
    let flag = log.path().join("flag.log");
    let mut c = sb.cmd();
    c.args(["run", "--once", "--log-file"]).arg(&flag);
    c.env_remove("AUTORENDER_API_KEY");
    let out = run(c);
    assert_eq!(out.code, 2);
    let text = std::fs::read_to_string(&flag).unwrap();
    assert!(text.contains("no API key found"), "{text}");
    // A log file that cannot be opened is a clear usage error.
    let mut c = sb.cmd();
    c.args(["status", "--log-file", "/proc/no/such/dir/x.log"]);
    let out = run(c);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("cannot open the log file"), "{}", out.stderr);
}

#[test]
fn color_man_pages_and_global_options() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    write_file(&sb.drop_dir().join("a.mov"), 100, 1);
    // --color always beats NO_COLOR (set by the sandbox); auto off a terminal: none.
    let mut c = sb.cmd();
    c.args(["--color", "always", "run", "--once"]);
    let out = run(c);
    assert!(out.stderr.contains("\u{1b}["), "{}", out.stderr);
    let mut c = sb.cmd();
    c.args(["run", "--once"]);
    assert!(!run(c).stderr.contains("\u{1b}["));
    // Global options are listed apart in each command's help.
    let mut c = sb.cmd();
    c.args(["run", "--help"]);
    let help = run(c).stdout;
    assert!(
        help.contains("Global options:") && help.contains("--config"),
        "{help}"
    );
    // Commands that read no config refuse --config instead of ignoring it.
    let mut c = std::process::Command::new(bin());
    c.args(["--config", "/x.toml", "completions", "bash"]);
    let out = run(c);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--config has no effect"), "{}", out.stderr);
    // One page per command.
    let dir = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new(bin());
    c.args(["man", "--out-dir"]).arg(dir.path());
    assert_eq!(run(c).code, 0);
    for page in [
        "autorender-sync.1",
        "autorender-sync-run.1",
        "autorender-sync-upload.1",
        "autorender-sync-autostart-status.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains("EXIT STATUS"), "{page}");
    }
}

#[test]
fn one_json_schema_for_files_and_structured_json_logs() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    write_file(&sb.drop_dir().join("a.mov"), 100, 1);
    let mut c = sb.cmd();
    c.args(["--log-format", "json", "run", "--once"]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The upload's log line carries its facts as fields.
    let line: serde_json::Value = out
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("uploaded "))
        })
        .unwrap_or_else(|| panic!("no uploaded line: {}", out.stderr));
    assert!(
        line["fields"]["path"].as_str().unwrap().ends_with("a.mov"),
        "{line}"
    );
    assert_eq!(line["fields"]["remote"], "uploads/drop/a.mov", "{line}");
    assert_eq!(line["fields"]["file_no"], emu.ledger()[0]["file_no"], "{line}");
    // ... with its size, how long it took and its sha256, and every line
    // names the module that logged it (as the README says).
    assert_eq!(line["fields"]["size"], 100, "{line}");
    assert!(line["fields"]["duration_ms"].is_u64(), "{line}");
    assert_eq!(
        line["fields"]["sha256"].as_str(),
        Some(sha256_file(&sb.drop_dir().join("a.mov")).as_str()),
        "{line}"
    );
    assert!(
        line["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("autorender_sync")),
        "{line}"
    );
    assert!(
        line["fields"]["message"].as_str().unwrap().contains("100 B in "),
        "{line}"
    );
    // Text logs say it once, in the message (no trailing path=… duplicate).
    write_file(&sb.drop_dir().join("b.mov"), 100, 2);
    let text = sb.run_once().stderr;
    // `run --once` ends with the bytes, the time and the rate.
    assert!(text.contains("1 uploaded (100 B in "), "{text}");
    let uploaded = text.lines().find(|l| l.contains("uploaded ")).unwrap();
    assert!(
        !uploaded.contains("path=") && !uploaded.contains("file_no=1"),
        "{uploaded}"
    );

    let other = sb.path("c.mov");
    write_file(&other, 10, 3);
    let mut c = sb.cmd();
    c.args(["upload", "--json"]).arg(&other);
    let up: serde_json::Value = serde_json::from_str(&run(c).stdout).unwrap();
    let mut c = sb.cmd();
    c.args(["history", "--json"]);
    let hist: serde_json::Value = serde_json::from_str(&run(c).stdout).unwrap();
    let st = sb.status();
    for (what, v) in [
        ("upload", &up[0]),
        ("history", &hist[0]),
        ("status", &st["last_uploads"][0]),
    ] {
        for key in [
            "local_path",
            "ok",
            "remote_folder",
            "remote_name",
            "remote_path",
            "file_no",
            "url",
            "size",
            "sha256",
            "at",
            "at_ms",
        ] {
            assert!(v.get(key).is_some(), "{what} --json lacks {key}: {v}");
        }
        let at = v["at"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: at is RFC 3339 text: {v}"));
        assert!(
            at.len() >= 20 && at.ends_with('Z') && at.contains('T'),
            "{what}: {at}"
        );
    }
    assert_eq!(hist[0]["remote_path"], "c.mov");
    assert_eq!(up[0]["remote_path"], "c.mov");
    assert!(
        st["agent"]["started_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{st}"
    );
    assert!(st["agent"]["started_at_ms"].is_i64(), "{st}");
}

#[test]
fn run_on_a_terminal_shows_progress_and_printed_urls_work() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_or_fail("`script` (util-linux) is not installed");
        return;
    }
    // Ten 1 MiB parts, one at a time, each request slowed to 700 ms: at
    // least 7 s, so the 5 s progress line comes mid-upload.
    let emu = Emulator::start(&["--part-size", "1MiB", "--latency", "700"]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\nconcurrent_parts = 1\ndirect_upload_max = \"0\"\n",
        "",
    );
    write_file(&sb.drop_dir().join("big clip.mov"), 10 * 1024 * 1024, 1);
    let mut inner = sb.cmd();
    inner.args(["run", "--once"]);
    let out = run(on_a_terminal(&inner));
    assert!(
        out.stdout.contains("big clip.mov: ") && out.stdout.contains("% of 10.0 MiB"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("left"), "{}", out.stdout);

    // The URL `history` prints is percent-encoded and serves the file.
    let mut c = sb.cmd();
    c.arg("history");
    let hist = run(c).stdout;
    let url = hist
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap_or_else(|| panic!("no URL in {hist}"));
    assert!(url.ends_with("big%20clip.mov"), "{url}");
    let body = reqwest::blocking::get(url).unwrap();
    assert_eq!(body.status().as_u16(), 200, "{url}");
    assert_eq!(body.bytes().unwrap().len(), 10 * 1024 * 1024);
}
