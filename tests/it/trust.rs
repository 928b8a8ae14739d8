//! A shared drop folder is a trust boundary: the agent runs as its owner,
//! the attacker as another local user (`nobody`, through `setpriv`; CI is
//! root) who can write in the drop folder. Nothing outside the root may be
//! read, uploaded, deleted or moved, whatever is swapped in between two
//! system calls; the agent's own state is private; what it prints cannot
//! drive a terminal.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// Runs `script` in bash as `nobody`, in `dir`. None where that cannot be
/// done (not root, no setpriv): the caller skips (loudly; CI fails).
fn attacker(dir: &Path, script: &str) -> Option<Command> {
    if !is_root() {
        skip_or_fail("the attacker runs as another user through setpriv, which needs root");
        return None;
    }
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        "bash",
        "-c",
        script,
    ])
    .current_dir(dir)
    .stdin(Stdio::null());
    Some(c)
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The owner's secrets the attacker aims at, and a drop folder anyone can
/// write (0777, no sticky bit, so the kernel's protected_symlinks does not
/// step in: the agent alone must refuse).
struct Shared {
    sb: Sandbox,
    secrets: PathBuf,
    /// sha256 of each secret file.
    digests: Vec<String>,
}

fn shared(emu: &Emulator, watch_extra: &str) -> Shared {
    let sb = Sandbox::watching(emu, &format!("settle = \"200ms\"\n{CONTROL}"), watch_extra);
    // `move_to` goes to the owner's own archive beside the drop folder.
    let text = std::fs::read_to_string(&sb.config)
        .unwrap()
        .replace("ARCHIVE", &sb.path("archive").display().to_string());
    std::fs::write(&sb.config, text).unwrap();
    chmod(sb.dir.path(), 0o711);
    chmod(&sb.drop_dir(), 0o777);
    let secrets = sb.path("owner/.ssh");
    std::fs::create_dir_all(&secrets).unwrap();
    chmod(&secrets, 0o700);
    let mut digests = Vec::new();
    for (i, name) in ["id_rsa", "id_ed25519", "config"].iter().enumerate() {
        let p = secrets.join(name);
        write_file(&p, 700 + i * 100, 900 + i as u64);
        chmod(&p, 0o600);
        digests.push(sha256_file(&p));
    }
    Shared { sb, secrets, digests }
}

const CONTROL: &str = "[control]\nlisten = \"127.0.0.1:0\"\n";

impl Shared {
    /// Nothing of the owner's was uploaded, deleted or moved.
    fn assert_untouched(&self, emu: &Emulator) {
        for e in emu.ledger() {
            let sha = e["sha256"].as_str().unwrap_or("");
            assert!(
                !self.digests.iter().any(|d| d == sha),
                "a secret file was uploaded as {}/{}",
                e["folder"],
                e["name"]
            );
        }
        for (name, digest) in ["id_rsa", "id_ed25519", "config"].iter().zip(&self.digests) {
            let p = self.secrets.join(name);
            assert!(p.exists(), "{name} was deleted or moved");
            assert_eq!(&sha256_file(&p), digest, "{name} was changed");
        }
        let archive = self.sb.path("archive");
        if archive.exists() {
            for f in walk(&archive) {
                assert!(
                    !self.digests.contains(&sha256_file(&f)),
                    "a secret was moved into the archive as {}",
                    f.display()
                );
            }
        }
    }

    /// Writes a last file and waits until it is uploaded and nothing is
    /// settling, queued or in flight: every earlier file has been judged.
    fn settle_all(&self, emu: &Emulator, marker: &str) {
        write_file(&self.sb.drop_dir().join(marker), 321, 77);
        assert!(
            wait_until(Duration::from_secs(90), || emu
                .ledger()
                .iter()
                .any(|e| e["name"] == marker)),
            "the agent stopped uploading"
        );
        let mut quiet = 0;
        assert!(
            wait_until(Duration::from_secs(60), || {
                let st = self.sb.status();
                let r = &st["roots"][0];
                let busy = r["settling"].as_i64().unwrap_or(0)
                    + r["pending"].as_i64().unwrap_or(0)
                    + r["uploading"].as_i64().unwrap_or(0)
                    + st["in_flight"].as_array().map_or(0, |a| a.len() as i64);
                quiet = if busy == 0 { quiet + 1 } else { 0 };
                quiet >= 3
            }),
            "the agent did not come to rest"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        } else if e.file_type().unwrap().is_file() {
            out.push(p);
        }
    }
    out
}

/// The attacker's loop: a decoy folder with files named like the owner's,
/// then, after a random moment around the settle time, the folder renamed
/// away and a symlink to the owner's folder put in its place. Tried many
/// times against the running agent, with plain files in between that must
/// still be uploaded.
fn parent_swap_race(after: &str, rounds: u32) {
    let emu = Emulator::start(&[]);
    let s = shared(&emu, after);
    let mut agent = s.sb.running_agent(&[]);
    let script = format!(
        r#"set -u
for i in $(seq 1 {rounds}); do
  mkdir -p x$i
  for n in id_rsa id_ed25519 config; do head -c $((RANDOM % 900 + 100)) /dev/urandom > x$i/$n; done
  head -c 500 /dev/urandom > plain$i.bin
  sleep 0.$((RANDOM % 5))$((RANDOM % 10))
  mv x$i gone$i && ln -s {secrets} x$i
done
"#,
        secrets = s.secrets.display()
    );
    let Some(mut c) = attacker(&s.sb.drop_dir(), &script) else {
        return;
    };
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.settle_all(&emu, "last.bin");
    s.assert_untouched(&emu);
    // The plain files all went (nothing stalled), each once.
    let names = unique_names(&emu.ledger());
    for i in 1..=rounds {
        assert!(
            names.contains(&format!("uploads/drop/plain{i}.bin")),
            "plain{i}.bin was not uploaded; log:\n{}",
            agent.log_text()
        );
    }
    let log = agent.stop();
    assert!(
        log.stderr.contains("symbolic link"),
        "no swap was caught in {rounds} rounds (the race never hit?):\n{}",
        log.stderr
    );
}

#[test]
fn a_parent_folder_swapped_for_a_symlink_never_uploads_the_owners_files() {
    parent_swap_race("", 25);
}

#[test]
fn a_parent_folder_swap_never_deletes_the_owners_files() {
    parent_swap_race("after_upload = \"delete\"\n", 25);
}

#[test]
fn a_parent_folder_swap_never_moves_the_owners_files() {
    parent_swap_race("after_upload = \"move\"\nmove_to = \"ARCHIVE\"\n", 25);
}

/// A decoy waits in the queue (uploads paused), is replaced by a symlink to
/// the owner's file of the same size, and the queue moves on.
#[test]
fn a_queued_decoy_replaced_by_a_symlink_uploads_nothing_of_the_owners() {
    let emu = Emulator::start(&[]);
    let s = shared(&emu, "after_upload = \"delete\"\n");
    let _agent = s.sb.running_agent(&[]);
    let steer = |args: &[&str]| {
        let mut c = s.sb.cmd();
        c.args(args);
        let out = run(c);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    };
    steer(&["pause"]);
    let size = std::fs::metadata(s.secrets.join("id_rsa")).unwrap().len();
    // Same size and mtime as the owner's file (`stat` alone tells both).
    let mtime = std::fs::metadata(s.secrets.join("id_rsa"))
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let script = format!("head -c {size} /dev/urandom > decoy.key && touch -d @{mtime} decoy.key");
    let Some(mut c) = attacker(&s.sb.drop_dir(), &script) else {
        return;
    };
    assert!(c.status().unwrap().success());
    assert!(
        wait_until(Duration::from_secs(30), || s.sb.status()["roots"][0]["pending"]
            == 1),
        "the decoy was not queued"
    );
    let script = format!(
        "rm decoy.key && ln -s {} decoy.key",
        s.secrets.join("id_rsa").display()
    );
    let Some(mut c) = attacker(&s.sb.drop_dir(), &script) else {
        return;
    };
    assert!(c.status().unwrap().success());
    steer(&["resume"]);
    s.settle_all(&emu, "after.bin");
    s.assert_untouched(&emu);
    assert!(!emu.ledger().iter().any(|e| e["name"] == "decoy.key"));
}

/// A FIFO where a settled file was: the agent neither hangs nor stops
/// uploading, and a SIGTERM still ends it within 2 s.
#[test]
fn a_fifo_raced_into_place_never_hangs_the_agent() {
    let emu = Emulator::start(&[]);
    let s = shared(&emu, "");
    let mut agent = s.sb.running_agent(&[]);
    let script = r#"for i in $(seq 1 20); do
  head -c 300 /dev/urandom > f$i.bin
  sleep 0.$((RANDOM % 4))$((RANDOM % 10))
  rm f$i.bin && mkfifo f$i.bin
  head -c 200 /dev/urandom > ok$i.bin
done"#;
    let Some(mut c) = attacker(&s.sb.drop_dir(), script) else {
        return;
    };
    assert!(c.status().unwrap().success());
    s.settle_all(&emu, "after.bin");
    for i in 1..=20 {
        assert!(
            emu.ledger().iter().any(|e| e["name"] == format!("ok{i}.bin")),
            "ok{i}.bin was not uploaded"
        );
    }
    // The healthz endpoint still answers (no worker stuck in open()).
    assert!(s.sb.status()["agent"]["running"] == true);
    let began = std::time::Instant::now();
    agent.signal("TERM");
    let out = agent.wait_exit(Duration::from_secs(10));
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "SIGTERM took {:?}: {}",
        began.elapsed(),
        out.stderr
    );
}

/// Under the usual umask 022 the state dir is 0700 and nothing in it can be
/// read by others; a state dir others can write is refused with the fix; a
/// symlink planted there (before it was made private) is never followed.
#[test]
fn the_state_dir_is_private_and_a_shared_one_is_refused() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(
        &emu,
        &format!("settle = \"200ms\"\nlog_file = \"{}\"\n{CONTROL}", "LOG"),
        "",
    );
    let log = sb.state_dir().join("agent.log");
    let text = std::fs::read_to_string(&sb.config)
        .unwrap()
        .replace("LOG", &log.display().to_string());
    std::fs::write(&sb.config, text).unwrap();
    let mut inner = sb.cmd();
    inner.arg("run");
    let mut c = wrapped(&["sh", "-c", "umask 022 && exec \"$0\" \"$@\""], &inner);
    let mut agent = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || sb
        .state_dir()
        .join("control.json")
        .exists()));
    write_file(&sb.drop_dir().join("a.bin"), 2000, 1);
    assert!(wait_until(Duration::from_secs(30), || !emu.ledger().is_empty()));
    assert_eq!(mode(&sb.state_dir()), 0o700);
    let mut seen = Vec::new();
    for f in walk(&sb.state_dir()) {
        let m = mode(&f);
        assert_eq!(m & 0o077, 0, "{} has mode {m:o}", f.display());
        seen.push(f.file_name().unwrap().to_string_lossy().into_owned());
    }
    for want in ["control.json", "control.token", "agent.log"] {
        assert!(seen.iter().any(|s| s == want), "{want} not in {seen:?}");
    }
    assert!(seen.iter().any(|s| s.ends_with("-wal")), "no WAL in {seen:?}");
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let _ = agent.wait();

    // Shared-writable: refused, naming the fix, before anything is opened.
    chmod(&sb.state_dir(), 0o777);
    let out = sb.run_once();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("chmod 700"), "{}", out.stderr);

    // Links planted while it was shared are replaced, never followed.
    let victim = sb.path("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    chmod(&victim, 0o644);
    for name in ["control.json", "control.token"] {
        let p = sb.state_dir().join(name);
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(&victim, &p).unwrap();
    }
    chmod(&sb.state_dir(), 0o700);
    let agent = sb.running_agent(&[]);
    assert!(wait_until(Duration::from_secs(20), || !sb
        .state_dir()
        .join("control.json")
        .is_symlink()));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(mode(&victim), 0o644);
    drop(agent);
}

/// `dashboard` opens a browser without the login code on any process's
/// command line: the test's xdg-open stays running while every
/// /proc/*/cmdline is read for the code.
#[test]
fn the_dashboard_login_code_is_on_no_command_line() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, &format!("settle = \"200ms\"\n{CONTROL}"), "");
    let _agent = sb.running_agent(&[]);
    let bin = sb.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let args = sb.path("xdg-open.args");
    let done = sb.path("xdg-open.done");
    std::fs::write(
        bin.join("xdg-open"),
        format!(
            "#!/bin/sh\nprintf '%s' \"$1\" > {args}.tmp && mv {args}.tmp {args}\n\
             i=0; while [ ! -e {done} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n",
            args = args.display(),
            done = done.display()
        ),
    )
    .unwrap();
    chmod(&bin.join("xdg-open"), 0o755);
    let mut c = sb.cmd();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    c.args(["dashboard"]).env("PATH", path).env("DISPLAY", ":99");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let link = out.stdout.lines().next().unwrap().to_string();
    let code = link
        .split("code=")
        .nth(1)
        .expect("a code in the link")
        .to_string();
    assert!(
        wait_until(Duration::from_secs(20), || args.exists()),
        "xdg-open was not run"
    );
    // xdg-open is still running: read every process's command line now.
    let mut read = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            read += 1;
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(&code),
                "the login code is on the command line of pid {:?}",
                e.file_name()
            );
        }
    }
    assert!(read > 3);
    std::fs::write(&done, "").unwrap();
    // What the browser was given: a file of this user's only, that leads
    // to the link, which logs in once.
    let opened = std::fs::read_to_string(&args).unwrap();
    let file = opened.strip_prefix("file://").expect("a file URL");
    assert_eq!(mode(Path::new(file)) & 0o077, 0);
    let page = std::fs::read_to_string(file).unwrap();
    assert!(page.contains(&code), "{page}");
    let plain = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    assert_eq!(plain.get(&link).send().unwrap().status().as_u16(), 303);
    assert_eq!(plain.get(&link).send().unwrap().status().as_u16(), 401);
}

/// A name with ESC (an OSC title sequence) and U+202E reaches people
/// escaped, in `run`'s log, `status` and `history`; `--json` keeps it exact.
#[test]
fn names_with_escapes_and_bidi_overrides_are_shown_escaped() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let mut agent = sb.running_agent(&["-v"]);
    let name = "evil\u{1b}]0;pwned\u{7}\u{202e}vom.exe";
    write_file(&sb.drop_dir().join(name), 500, 3);
    assert!(wait_until(Duration::from_secs(30), || emu
        .ledger()
        .iter()
        .any(|e| e["name"] == name)));
    let shown = "evil\\u{1b}]0;pwned\\u{7}\\u{202e}vom.exe";
    let text = |args: &[&str]| {
        let mut c = sb.cmd();
        c.args(args);
        let out = run(c);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        out.stdout
    };
    for (what, out) in [("status", text(&["status"])), ("history", text(&["history"]))] {
        assert!(out.contains(shown), "{what}:\n{out}");
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{202e}'),
            "{what} printed the raw name"
        );
    }
    let json = text(&["history", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|r| r.to_string().contains("\\u001b]0;pwned\\u0007\u{202e}vom.exe")),
        "{json}"
    );
    let log = agent.stop();
    assert!(log.stderr.contains(shown), "{}", log.stderr);
    assert!(!log.stderr.contains('\u{1b}') && !log.stderr.contains('\u{202e}'));
}

/// A config or key file that is a device or a FIFO is an error naming the
/// problem, not a read until memory runs out or a hang.
#[test]
fn a_config_or_key_file_that_is_no_regular_file_is_refused() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::new(&emu, "");
    let mut c = Command::new(bin());
    c.args(["--config", "/dev/zero", "check"])
        .env("HOME", sb.dir.path());
    let out = run(c);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
    let fifo = sb.path("key.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let text = std::fs::read_to_string(&sb.config).unwrap().replacen(
        "[api]\n",
        &format!("[api]\napi_key_file = \"{}\"\n", fifo.display()),
        1,
    );
    std::fs::write(&sb.config, text).unwrap();
    let mut c = sb.cmd();
    c.env_remove("AUTORENDER_API_KEY").arg("check");
    let began = std::time::Instant::now();
    let out = run(c);
    assert!(began.elapsed() < Duration::from_secs(20));
    assert_ne!(out.code, 0);
    assert!(
        out.stdout.contains("not a regular file") || out.stderr.contains("not a regular file"),
        "{}{}",
        out.stdout,
        out.stderr
    );
}
