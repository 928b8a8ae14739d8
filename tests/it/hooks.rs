//! Post-upload hooks (`on_uploaded`, `on_set_complete`) through the real
//! binary: the facts in the environment, no key, output in the log, and
//! slow or failing hooks never holding uploads up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::control::Receiver;
use crate::harness::*;

/// A hook script in `dir`: it writes its whole environment to
/// `<out>/<AUTORENDER_NAME or SET>.env`, says one line, then waits while
/// `<out>/hold` exists (a gate the test opens), and exits with `<out>/exit`'s
/// number if that file exists.
fn hook_script(dir: &Path, out: &Path) -> PathBuf {
    let script = dir.join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             out='{out}'\n\
             name=\"${{AUTORENDER_NAME:-$AUTORENDER_SET}}\"\n\
             env > \"$out/$name.started\"\n\
             echo \"hook saw $name\"\n\
             echo \"to stderr too\" >&2\n\
             while [ -e \"$out/hold\" ]; do sleep 0.05; done\n\
             mv \"$out/$name.started\" \"$out/$name.env\"\n\
             [ -e \"$out/exit\" ] && exit \"$(cat \"$out/exit\")\"\n\
             exit 0\n",
            out = out.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    script
}

/// `NAME=value` lines into pairs.
fn env_of(file: &Path) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn on_uploaded_gets_the_facts_in_its_environment_never_the_key_and_its_output_is_logged() {
    let emu = Emulator::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let scripts = tempfile::tempdir().unwrap();
    let script = hook_script(scripts.path(), out.path());
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        &format!("on_uploaded = [\"{}\", \"--an arg\"]\n", script.display()),
    );
    let drop = sb.drop_dir();
    std::fs::create_dir_all(drop.join("shots")).unwrap();
    write_file(&drop.join("a.mov"), 3000, 1);
    write_file(&drop.join("shots/b c.exr"), 5000, 2);
    // `run --once` ends only when its hooks have.
    let run_out = sb.run_once();
    assert_eq!(run_out.code, 0, "{}", run_out.stderr);
    let ledger = emu.ledger();
    assert_eq!(ledger.len(), 2);
    for (name, local, remote_path) in [
        ("a.mov", drop.join("a.mov"), "a.mov"),
        ("b c.exr", drop.join("shots/b c.exr"), "shots/b c.exr"),
    ] {
        let env = env_of(&out.path().join(format!("{name}.env")));
        let stored = ledger.iter().find(|e| e["name"] == name).unwrap();
        assert_eq!(env["AUTORENDER_EVENT"], "on_uploaded");
        assert_eq!(env["AUTORENDER_PATH"], local.display().to_string());
        assert_eq!(env["AUTORENDER_FILE_NO"], stored["file_no"].as_str().unwrap());
        assert_eq!(env["AUTORENDER_SHA256"], sha256_file(&local));
        assert_eq!(
            env["AUTORENDER_SIZE"],
            std::fs::metadata(&local).unwrap().len().to_string()
        );
        assert!(env["AUTORENDER_REMOTE_PATH"].ends_with(remote_path), "{env:?}");
        assert_eq!(env["AUTORENDER_LOCAL"], "kept");
        assert_eq!(env["AUTORENDER_ADOPTED"], "0");
        assert!(env.contains_key("AUTORENDER_URL"), "{env:?}");
        // The key is in the agent's environment, never in the hook's.
        assert!(!env.contains_key("AUTORENDER_API_KEY"), "{env:?}");
        assert!(!env.values().any(|v| v.contains(KEY)), "{env:?}");
        assert!(
            run_out.stderr.contains(&format!("hook saw {name}")),
            "{}",
            run_out.stderr
        );
    }
    assert!(run_out.stderr.contains("to stderr too"), "{}", run_out.stderr);
    // `check` shows what runs.
    let mut c = sb.cmd();
    c.args(["check", "--offline"]);
    let checked = run(c);
    assert!(
        checked.stdout.contains(&format!(
            "on_uploaded: {} --an arg (no shell; stopped after 300s)",
            script.display()
        )),
        "{}",
        checked.stdout
    );
}

#[test]
fn a_hook_that_hangs_or_fails_never_holds_uploads_and_each_failure_is_an_event() {
    let emu = Emulator::start(&[]);
    let events = Receiver::start(true);
    let out = tempfile::tempdir().unwrap();
    let scripts = tempfile::tempdir().unwrap();
    let script = hook_script(scripts.path(), out.path());
    // Every hook waits at the gate (held closed) and then fails.
    std::fs::write(out.path().join("hold"), "").unwrap();
    std::fs::write(out.path().join("exit"), "7").unwrap();
    let sb = Sandbox::watching(
        &emu,
        &format!(
            "settle = \"200ms\"\n[[notify]]\nurl = \"{}/hook\"\nevents = [\"hook_failed\"]\n",
            events.url
        ),
        &format!(
            "on_uploaded = [\"{}\"]\nhook_timeout = \"10m\"\n",
            script.display()
        ),
    );
    let mut agent = sb.running_agent(&[]);
    for i in 0..8u64 {
        write_file(&sb.drop_dir().join(format!("f{i}.mov")), 2000, i);
    }
    // All eight go up while the hooks wait at the gate (four of them
    // started, the rest waiting their turn).
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger().len() == 8),
        "uploads were held by hooks: {}\n{}",
        emu.ledger().len(),
        agent.log_text()
    );
    let started = || {
        std::fs::read_dir(out.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "started")
            })
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || started() == 4),
        "{} hooks running",
        started()
    );
    assert_eq!(started(), 4, "at most four hooks at a time");
    std::fs::remove_file(out.path().join("hold")).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || events.events("/hook").len() == 8),
        "{:?}\n{}",
        events.events("/hook"),
        agent.log_text()
    );
    for e in events.events("/hook") {
        assert_eq!(e["event"], "hook_failed", "{e}");
        assert_eq!(e["hook"], "on_uploaded", "{e}");
        assert!(e["error"].as_str().unwrap().contains("exit status: 7"), "{e}");
    }
    assert!(
        agent.log_text().contains("on_uploaded for ") && agent.log_text().contains("failed:"),
        "{}",
        agent.log_text()
    );
    agent.stop();

    // One that outlives its timeout is stopped, and said to be.
    let slow = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        "on_uploaded = [\"/bin/sh\", \"-c\", \"sleep 600\"]\nhook_timeout = \"1s\"\n",
    );
    write_file(&slow.drop_dir().join("slow.mov"), 2000, 99);
    let run_out = slow.run_once();
    assert_eq!(run_out.code, 0, "{}", run_out.stderr);
    assert!(
        run_out
            .stderr
            .contains("ran longer than its 1s limit and was stopped"),
        "{}",
        run_out.stderr
    );
}

#[test]
fn on_set_complete_gets_the_set_and_its_manifest() {
    let emu = Emulator::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let scripts = tempfile::tempdir().unwrap();
    let script = hook_script(scripts.path(), out.path());
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\n",
        &format!(
            "sets = \"folder\"\nset_trigger = \"_DONE\"\nset_manifest = true\non_set_complete = [\"{}\"]\n",
            script.display()
        ),
    );
    let mut agent = sb.running_agent(&[]);
    let shot = sb.drop_dir().join("sh010");
    std::fs::create_dir(&shot).unwrap();
    for i in 1..=3u64 {
        write_file(&shot.join(format!("sh010.{i:04}.exr")), 1000, i);
    }
    std::fs::write(shot.join("_DONE"), "").unwrap();
    let env_file = out.path().join("sh010.env");
    assert!(
        wait_until(Duration::from_secs(60), || env_file.exists()),
        "{}",
        agent.log_text()
    );
    let env = env_of(&env_file);
    assert_eq!(env["AUTORENDER_EVENT"], "on_set_complete");
    assert_eq!(env["AUTORENDER_SET"], "sh010");
    assert_eq!(env["AUTORENDER_SET_PATH"], shot.display().to_string());
    assert_eq!(
        env["AUTORENDER_SET_FILES"], "4",
        "three frames and the trigger: {env:?}"
    );
    let manifest = PathBuf::from(&env["AUTORENDER_MANIFEST"]);
    let text: Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert!(text.to_string().contains("sh010.0003.exr"), "{text}");
    let stored: Vec<Value> = emu.ledger();
    let m = stored
        .iter()
        .find(|e| e["name"].as_str().unwrap().ends_with(".manifest.json"))
        .unwrap_or_else(|| panic!("{stored:?}"));
    assert_eq!(env["AUTORENDER_MANIFEST_FILE_NO"], m["file_no"].as_str().unwrap());
    agent.stop();
}

#[test]
fn a_hook_that_cannot_run_is_a_config_error_saying_what_to_write() {
    let emu = Emulator::start(&[]);
    for (watch, says) in [
        ("on_uploaded = []\n", "is empty; write the program"),
        (
            "on_uploaded = [\"no-such-hook-program-anywhere\"]\n",
            "is not found on PATH; write its absolute path",
        ),
        (
            "on_uploaded = [\"/nonexistent/hook\"]\n",
            "/nonexistent/hook: does not exist",
        ),
        ("on_uploaded = [\"hooks/x.sh\"]\n", "is a relative path"),
        ("on_set_complete = [\"/bin/sh\"]\n", "only runs for upload sets"),
        ("hook_timeout = \"1m\"\n", "no hook to time"),
        ("on_uploaded = \"/bin/true\"\n", "expected a list of strings"),
    ] {
        let sb = Sandbox::watching(&emu, "", watch);
        let mut c = sb.cmd();
        c.args(["check", "--offline"]);
        let out = run(c);
        assert_eq!(out.code, 2, "{watch}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{watch}: {}", out.stderr);
    }
}
