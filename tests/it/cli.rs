//! Config validation through `check`, `init`, and the small commands.

use crate::harness::*;

#[test]
fn check_lists_every_config_mistake_with_key_and_line() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::new(&emu, "");
    std::fs::write(
        &sb.config,
        r#"[api]
endpont = "https://upload.autorender.io"
request_timeout = "soon"

[agent]
concurrent_parts = 0
bandwidth_limit = "fast"

[[watch]]
path = "/definitely/not/here"
remote_folder = "renders"
"#,
    )
    .unwrap();
    let mut cmd = sb.cmd();
    cmd.args(["check", "--offline"]);
    let out = run(cmd);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("5 problems"), "{}", out.stderr);
    for (line, key) in [
        (2, "api.endpont"),
        (3, "api.request_timeout"),
        (6, "agent.concurrent_parts"),
        (7, "agent.bandwidth_limit"),
        (10, "watch[0].path"),
    ] {
        let needle = format!("config.toml:{line}: `{key}`");
        assert!(
            out.stderr.contains(&needle),
            "missing {needle} in:\n{}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("did you mean `api.endpoint`"));
    assert!(!out.stderr.contains("panicked"));
}

#[test]
fn check_with_a_good_config_reports_key_source_but_not_the_key() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::new(&emu, "");
    let root = sb.path("drop");
    std::fs::create_dir(&root).unwrap();
    let extra = format!(
        "[[watch]]\npath = \"{}\"\nremote_folder = \"uploads/drop\"\n",
        root.display()
    );
    let text = std::fs::read_to_string(&sb.config).unwrap() + &extra;
    std::fs::write(&sb.config, text).unwrap();
    let mut cmd = sb.cmd();
    cmd.arg("check");
    let out = run(cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("environment variable AUTORENDER_API_KEY"));
    assert!(out.stdout.contains("accepted"));
    assert!(out.stdout.contains("uploads/drop"));
    assert!(!out.stdout.contains(KEY));
}

#[test]
fn key_file_is_used_and_a_loose_mode_warns() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::new(&emu, "");
    let key_file = sb.path("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let text = std::fs::read_to_string(&sb.config).unwrap().replace(
        "[api]\n",
        &format!("[api]\napi_key_file = \"{}\"\n", key_file.display()),
    );
    std::fs::write(&sb.config, text).unwrap();
    let mut cmd = sb.cmd();
    cmd.env_remove("AUTORENDER_API_KEY").arg("check");
    let out = run(cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("key file"));
    #[cfg(unix)]
    assert!(out.stderr.contains("chmod 600"), "{}", out.stderr);
}

#[test]
fn init_writes_a_config_that_checks_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/config.toml");
    let init = |force: bool| {
        let mut c = std::process::Command::new(bin());
        c.arg("--config").arg(&path).arg("init").env("HOME", dir.path());
        if force {
            c.arg("--force");
        }
        run(c)
    };
    assert_eq!(init(false).code, 0);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        include_str!("../../example-config.toml")
    );
    let again = init(false);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("--force"));
    assert_eq!(init(true).code, 0);
    let mut check = std::process::Command::new(bin());
    check
        .arg("--config")
        .arg(&path)
        .args(["check", "--offline"])
        .env("AUTORENDER_API_KEY", "k")
        .env("HOME", dir.path());
    let out = run(check);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn explicit_missing_config_is_exit_2() {
    let mut c = std::process::Command::new(bin());
    c.args(["--config", "/no/such/config.toml", "check", "--offline"]);
    let out = run(c);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("autorender-sync init"), "{}", out.stderr);
}

#[test]
fn usage_errors_exit_2_and_completions_work() {
    let out = run({
        let mut c = std::process::Command::new(bin());
        c.arg("upload");
        c
    });
    assert_eq!(out.code, 2);
    let out = run({
        let mut c = std::process::Command::new(bin());
        c.args(["completions", "bash"]);
        c
    });
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("autorender-sync"));
}
