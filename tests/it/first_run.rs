//! First-run experience: `autostart` for real in a temp XDG_CONFIG_HOME,
//! `demo`, the man page and completions.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// A home with a valid config whose path has spaces and a quote in it.
struct Home {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Home {
    fn new() -> Home {
        let dir = tempfile::tempdir().unwrap();
        let cfg_dir = dir.path().join("My Configs/take \"2\"");
        std::fs::create_dir_all(&cfg_dir).unwrap();
        std::fs::create_dir(dir.path().join("drop")).unwrap();
        let config = cfg_dir.join("agent config.toml");
        std::fs::write(
            &config,
            format!(
                "[[watch]]\npath = \"{}\"\nremote_folder = \"x\"\n",
                dir.path().join("drop").display()
            ),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("runtime")).unwrap();
        Home { dir, config }
    }

    fn xdg(&self) -> PathBuf {
        self.dir.path().join("xdg")
    }

    /// The binary, cut off from any real user session (no bus, own runtime dir).
    fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config")
            .arg(&self.config)
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.xdg())
            .env("XDG_RUNTIME_DIR", self.dir.path().join("runtime"))
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("AUTORENDER_SYNC_CONFIG")
            .env("AUTORENDER_API_KEY", KEY);
        c
    }

    fn files(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    out.push(e.path());
                    walk(&e.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.xdg(), &mut out);
        out
    }
}

#[test]
fn autostart_systemd_unit_quotes_paths_is_idempotent_and_uninstalls_cleanly() {
    let home = Home::new();
    let unit = home.xdg().join("systemd/user/autorender-sync.service");

    let mut print = home.cmd();
    print.args(["autostart", "install", "--method", "systemd", "--print"]);
    let out = run(print);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(&unit.display().to_string()));
    assert!(out.stdout.contains("ExecStart="));
    assert!(!out.stdout.contains(KEY), "the key never appears");
    assert!(home.files().is_empty(), "--print touches nothing");

    for _ in 0..2 {
        let mut install = home.cmd();
        install.args(["autostart", "install", "--method", "systemd", "--store-key"]);
        let out = run(install);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let text = std::fs::read_to_string(&unit).unwrap();
    let exe = bin().canonicalize().unwrap();
    let expected = format!(
        "ExecStart=\"{}\" \"run\" \"--config\" \"{}\"",
        exe.display(),
        home.config
            .canonicalize()
            .unwrap()
            .display()
            .to_string()
            .replace('"', "\\\"")
    );
    assert!(text.contains(&expected), "{text}\nexpected: {expected}");
    assert!(text.contains("Restart=on-failure"));
    assert!(text.contains("enable-linger"));

    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => {
            let out = Command::new("systemd-analyze")
                .args(["--user", "verify"])
                .arg(&unit)
                .env("XDG_RUNTIME_DIR", home.dir.path().join("runtime"))
                .env("HOME", home.dir.path())
                .env_remove("DBUS_SESSION_BUS_ADDRESS")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "systemd-analyze rejected the unit: {stderr}"
            );
            assert!(
                !stderr.contains("autorender-sync.service:"),
                "warnings about our unit: {stderr}"
            );
        }
        _ => crate::harness::skip_or_fail("systemd-analyze is not installed (Debian package systemd)"),
    }

    let mut status = home.cmd();
    status.args(["autostart", "status"]);
    let out = run(status);
    assert!(out.stdout.contains("systemd user unit"), "{}", out.stdout);

    let mut uninstall = home.cmd();
    uninstall.args(["autostart", "uninstall"]);
    let out = run(uninstall);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(home.files().is_empty(), "uninstall left {:?}", home.files());
}

#[test]
fn autostart_makes_sure_the_service_can_find_the_key() {
    let home = Home::new();
    // The key only in this shell's environment: a service would not see it.
    let mut print = home.cmd();
    print.args(["autostart", "install", "--method", "systemd", "--print"]);
    let out = run(print);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("note: a service started at login"),
        "{}",
        out.stdout
    );
    // With --store-key, --print shows the key file and the config change
    // it would make (not the key), and still changes nothing.
    let mut print = home.cmd();
    print.args([
        "autostart",
        "install",
        "--method",
        "systemd",
        "--print",
        "--store-key",
    ]);
    let out = run(print);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let key_file = home
        .config
        .canonicalize()
        .unwrap()
        .parent()
        .unwrap()
        .join("api-key");
    assert!(
        out.stdout
            .contains(&format!("--- write {} (mode 0600) ---", key_file.display()))
            && out.stdout.contains("api_key_file = ")
            && !out.stdout.contains(KEY),
        "{}",
        out.stdout
    );
    assert!(!key_file.exists(), "--print writes nothing");
    let mut install = home.cmd();
    install.args(["autostart", "install", "--method", "systemd"]);
    let out = run(install);
    assert_eq!(out.code, 2, "refused: {}", out.stderr);
    assert!(
        out.stderr.contains("does not inherit this shell's environment")
            && out.stderr.contains("--store-key"),
        "{}",
        out.stderr
    );
    assert!(home.files().is_empty(), "nothing installed: {:?}", home.files());
    let mut status = home.cmd();
    status.args(["autostart", "status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&run(status).stdout).unwrap();
    assert_eq!(st["service_key"]["found"], false, "{st}");

    // --store-key: a 0600 file beside the config, referenced from it.
    let mut install = home.cmd();
    install.args(["autostart", "install", "--method", "systemd", "--store-key"]);
    let out = run(install);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let key_file = home.config.parent().unwrap().join("api-key");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), KEY);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(
        !out.stdout.contains(KEY) && !out.stderr.contains(KEY),
        "the key is never printed"
    );
    // What the service will see: no key in the environment, the config as written.
    let mut check = home.cmd();
    check
        .env_remove("AUTORENDER_API_KEY")
        .args(["check", "--offline"]);
    let out = run(check);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("key file"), "{}", out.stdout);
    let mut status = home.cmd();
    status
        .env_remove("AUTORENDER_API_KEY")
        .args(["autostart", "status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&run(status).stdout).unwrap();
    assert_eq!(st["service_key"]["found"], true, "{st}");
    let mut uninstall = home.cmd();
    uninstall.args(["autostart", "uninstall"]);
    assert_eq!(run(uninstall).code, 0);
}

#[test]
fn autostart_xdg_entry_and_foreign_files_are_left_alone() {
    let home = Home::new();
    let mut install = home.cmd();
    install.args(["autostart", "install", "--method", "xdg", "--store-key"]);
    let out = run(install);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let desktop = home.xdg().join("autostart/autorender-sync.desktop");
    let text = std::fs::read_to_string(&desktop).unwrap();
    assert!(text.contains("Exec=\""), "{text}");
    assert!(
        text.contains("take \\\\\"2\\\\\""),
        "quote escaped per the Desktop Entry spec: {text}"
    );
    let mut uninstall = home.cmd();
    uninstall.args(["autostart", "uninstall"]);
    assert_eq!(run(uninstall).code, 0);
    assert!(home.files().is_empty());

    // A unit someone else wrote at our path is never removed.
    let unit = home.xdg().join("systemd/user/autorender-sync.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::write(&unit, "[Service]\nExecStart=/bin/true\n").unwrap();
    let mut uninstall = home.cmd();
    uninstall.args(["autostart", "uninstall"]);
    let out = run(uninstall);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("not written by autorender-sync"),
        "{}",
        out.stderr
    );
    assert!(unit.exists());
}

#[test]
fn autostart_refuses_a_config_that_does_not_exist() {
    let mut home = Home::new();
    home.config = PathBuf::from("/no/such.toml");
    let mut c = home.cmd();
    c.args(["autostart", "install"]);
    let out = run(c);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("autorender-sync init"), "{}", out.stderr);
}

#[test]
fn demo_uploads_what_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .args(["demo", "--dir"])
        .arg(dir.path())
        .env_remove("AUTORENDER_SYNC_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let drop_dir = dir.path().canonicalize().unwrap().join("drop");
    let mut said = String::new();
    let ready = wait_until(Duration::from_secs(30), || {
        while let Ok(l) = rx.try_recv() {
            said.push_str(&l);
            said.push('\n');
        }
        said.contains("They appear in") && said.contains(" status\n")
    });
    assert!(ready, "demo printed its instructions: {said}");
    assert!(said.contains(&drop_dir.display().to_string()), "{said}");
    // The banner names the config other commands need; with it, `status`
    // finds the demo's agent.
    let config = said
        .lines()
        .find_map(|l| l.strip_prefix("Watch it from another terminal: autorender-sync --config "))
        .and_then(|l| l.strip_suffix(" status"))
        .unwrap_or_else(|| panic!("no status hint: {said}"))
        .to_string();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let out = run({
                let mut c = Command::new(bin());
                c.args(["--config", &config, "status"]);
                c
            });
            out.code == 0 && out.stdout.contains("agent: running")
        }),
        "status with the demo's config did not see its agent"
    );
    write_file(&drop_dir.join("hello.mov"), 70_000, 3);
    let landed = dir
        .path()
        .canonicalize()
        .unwrap()
        .join("store/uploads/demo/hello.mov");
    assert!(
        wait_until(Duration::from_secs(30), || landed.exists()),
        "the file landed in store/uploads/demo"
    );
    assert_eq!(sha256_file(&landed), sha256_file(&drop_dir.join("hello.mov")));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(crate::harness::wait_with_deadline(&mut child, Duration::from_secs(60)).success());
}

#[test]
fn man_page_and_every_completion_shell() {
    let out = run({
        let mut c = Command::new(bin());
        c.arg("man");
        c
    });
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains(".TH autorender-sync"),
        "{}",
        &out.stdout[..200.min(out.stdout.len())]
    );
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = run({
            let mut c = Command::new(bin());
            c.args(["completions", shell]);
            c
        });
        assert_eq!(out.code, 0, "{shell}");
        assert!(
            out.stdout.contains("autostart"),
            "{shell} completions know the commands"
        );
    }
}

/// Completes `line` (up to the cursor) with `shell`'s completion script as
/// `completions` writes it, in the shell itself: the words it offers.
fn complete(shell: &str, line: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let script = run({
        let mut c = Command::new(bin());
        c.args(["completions", shell]);
        c
    })
    .stdout;
    let out = match shell {
        "bash" => {
            let path = dir.path().join("autorender-sync.bash");
            std::fs::write(&path, script).unwrap();
            let words: Vec<&str> = line.split(' ').collect();
            let (cur, prev) = (words[words.len() - 1], words[words.len() - 2]);
            run({
                let mut c = Command::new("bash");
                c.arg("-c").arg(format!(
                    "source {}; COMP_WORDS=({line}); COMP_CWORD={}; COMP_LINE='{line}'; \
                     _autorender__sync autorender-sync '{cur}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                    path.display(),
                    words.len() - 1
                ));
                c
            })
        }
        "fish" => {
            let path = dir.path().join("autorender-sync.fish");
            std::fs::write(&path, script).unwrap();
            run({
                let mut c = Command::new("fish");
                c.args(["--no-config", "-c"])
                    .arg(format!("source {}; complete -C '{line}'", path.display()));
                c
            })
        }
        _ => {
            std::fs::write(dir.path().join("_autorender-sync"), script).unwrap();
            let driver = dir.path().join("complete.zsh");
            std::fs::write(&driver, ZSH_COMPLETE).unwrap();
            run({
                let mut c = Command::new("zsh");
                c.arg("-f").arg(&driver).arg(dir.path()).arg(line);
                c
            })
        }
    };
    assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
    out.stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap_or("").to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// zsh completes only in its line editor: an interactive zsh on a
/// pseudo-terminal (zpty) gets the line and a TAB, with `compadd` wrapped
/// to print each match; it waits (10 s at most) for the first, then ends
/// the line and prints the matches.
const ZSH_COMPLETE: &str = r#"zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT=''"
zpty -w z "fpath=($1 \$fpath)"
zpty -w z "autoload -U compinit; compinit -u -D"
zpty -w z 'compadd() { local -a __m; builtin compadd -O __m "$@"; (( ${#__m} )) && print -rl -- "MATCH:"${^__m} }'
zpty -w z "print READY-''-FOR-TAB"
while zpty -r z line '*'$'\n'; do [[ $line == READY--FOR-TAB* ]] && break; done
zpty -w -n z "$2"$'\t'
# The first match (deadline 10 s), then the line is killed and a marker
# printed: every match is out by then.
integer deadline=$(( SECONDS + 10 ))
typeset -a seen
while (( SECONDS < deadline )); do
  if zpty -r -t z line '*'$'\n'; then
    [[ $line == MATCH:* ]] && { seen+=(${${line#MATCH:}%%[$'\r\n']*}); break; }
  else
    sleep 0.05
  fi
done
zpty -w z $'\x15print END-OF''-MATCHES'
while zpty -r z line '*'$'\n'; do
  [[ $line == END-OF-MATCHES* ]] && break
  [[ $line == MATCH:* ]] && seen+=(${${line#MATCH:}%%[$'\r\n']*})
done
zpty -d z
print -rl -- ${(u)seen}
"#;

#[test]
fn a_subcommands_flags_complete_in_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        if Command::new(shell).arg("-c").arg("true").status().is_err() {
            skip_or_fail(&format!("{shell} is not installed (apt-get install {shell})"));
            continue;
        }
        // The first word, a subcommand's flag, and a nested subcommand's.
        assert!(
            complete(shell, "autorender-sync sta").contains(&"status".to_string()),
            "{shell}"
        );
        assert_eq!(
            complete(shell, "autorender-sync upload --fo"),
            ["--folder"],
            "{shell}"
        );
        assert_eq!(
            complete(shell, "autorender-sync autostart install --pr"),
            ["--print"],
            "{shell}"
        );
    }
}

#[cfg(unix)]
#[test]
fn autostart_keeps_the_path_as_invoked_so_an_upgrade_that_moves_the_target_is_followed() {
    let home = Home::new();
    // A package manager's link on PATH to a versioned install.
    let cellar = home.dir.path().join("Cellar/autorender-sync/0.1.0/bin");
    let on_path = home.dir.path().join("brew/bin");
    std::fs::create_dir_all(&cellar).unwrap();
    std::fs::create_dir_all(&on_path).unwrap();
    std::fs::copy(bin(), cellar.join("autorender-sync")).unwrap();
    std::os::unix::fs::symlink(cellar.join("autorender-sync"), on_path.join("autorender-sync")).unwrap();
    let plan = |program: &str, path_var: &std::ffi::OsStr| {
        let inner = home.cmd();
        let mut c = Command::new(program);
        c.args(inner.get_args()).env("PATH", path_var);
        copy_env(&inner, &mut c);
        c.args(["autostart", "install", "--method", "systemd", "--print"]);
        run(c)
    };
    let mut path_var = std::ffi::OsString::from(&on_path);
    path_var.push(":");
    path_var.push(std::env::var_os("PATH").unwrap_or_default());
    // Found by name on PATH, and named by its path: the link either way.
    for program in [
        "autorender-sync".to_string(),
        on_path.join("autorender-sync").display().to_string(),
    ] {
        let out = plan(&program, &path_var);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let link = on_path.join("autorender-sync").display().to_string();
        assert!(
            out.stdout.contains(&format!("ExecStart=\"{link}\"")),
            "{program}: {}",
            out.stdout
        );
    }
}
