//! `api_key_source = "keyring"` against a real Secret Service (GNOME
//! Keyring on a private session bus), with libsecret's `secret-tool` as the
//! other program that writes and reads the same entry.

use autorender_test_support::keyring::SecretService;

use crate::harness::*;

fn service() -> Option<SecretService> {
    let s = SecretService::start();
    if s.is_none() {
        skip_or_fail(
            "dbus-daemon, gnome-keyring-daemon or secret-tool is missing (Debian: dbus gnome-keyring libsecret-tools)",
        );
    }
    s
}

/// The binary on the keyring's bus, without the key in its environment.
fn cmd(sb: &Sandbox, ss: &SecretService) -> std::process::Command {
    let mut c = sb.cmd();
    c.env_remove("AUTORENDER_API_KEY");
    ss.use_in(&mut c);
    c
}

#[test]
fn a_key_in_the_os_keyring_is_found_used_and_never_shown() {
    let Some(ss) = service() else { return };
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let text = std::fs::read_to_string(&sb.config).unwrap();
    std::fs::write(
        &sb.config,
        text.replacen("[api]\n", "[api]\napi_key_source = \"keyring\"\n", 1),
    )
    .unwrap();

    // No entry yet: the error says how to store one.
    let mut c = cmd(&sb, &ss);
    c.arg("check");
    let out = run(c);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("the OS keyring holds no API key for service \"autorender-sync\", account \"api-key\"")
            && out.stderr.contains("--store-key keyring")
            && out.stderr.contains("secret-tool store"),
        "{}",
        out.stderr
    );

    // Stored by another program (libsecret): found, checked with the
    // service, and used to upload.
    assert!(ss.store("autorender-sync", "api-key", KEY));
    let mut c = cmd(&sb, &ss);
    c.arg("check");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("API key: from the OS keyring (service \"autorender-sync\", account \"api-key\")"),
        "{}",
        out.stdout
    );
    write_file(&sb.drop_dir().join("a.mov"), 5000, 1);
    let mut c = cmd(&sb, &ss);
    c.args(["run", "--once", "-v"]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.ledger().len(), 1);
    assert!(!out.stderr.contains(KEY) && !out.stdout.contains(KEY));

    // A wrong key in the keyring is the service's refusal, said as such.
    assert!(ss.store("autorender-sync", "api-key", "not-the-key-0000"));
    let mut c = cmd(&sb, &ss);
    c.arg("check");
    let out = run(c);
    assert_eq!(out.code, 3, "{}", out.stderr);

    // No Secret Service at all: said, with what to do instead.
    let mut c = sb.cmd();
    c.env_remove("AUTORENDER_API_KEY").env(
        "DBUS_SESSION_BUS_ADDRESS",
        format!("unix:path={}/nobody", ss.path().display()),
    );
    c.args(["check", "--offline"]);
    let out = run(c);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot read the API key from the OS keyring")
            && out.stderr.contains("api_key_file"),
        "{}",
        out.stderr
    );
}

#[test]
fn autostart_store_key_keyring_moves_the_key_from_the_shell_into_the_keyring() {
    let Some(ss) = service() else { return };
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let before = std::fs::read_to_string(&sb.config).unwrap();

    // --print says what it would do, and does nothing.
    let mut c = sb.cmd();
    ss.use_in(&mut c);
    c.args([
        "autostart",
        "install",
        "--method",
        "systemd",
        "--print",
        "--store-key",
        "keyring",
    ]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("store in the OS keyring: service \"autorender-sync\", account \"api-key\"")
            && out.stdout.contains("api_key_source = \"keyring\""),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(KEY));
    assert_eq!(ss.lookup("autorender-sync", "api-key"), None);
    assert_eq!(std::fs::read_to_string(&sb.config).unwrap(), before);

    // From the shell's environment into the keyring; the config says so.
    for _ in 0..2 {
        let mut c = sb.cmd();
        ss.use_in(&mut c);
        c.args([
            "autostart",
            "install",
            "--method",
            "systemd",
            "--store-key",
            "keyring",
        ]);
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    assert_eq!(ss.lookup("autorender-sync", "api-key").as_deref(), Some(KEY));
    let after = std::fs::read_to_string(&sb.config).unwrap();
    assert_eq!(
        after.matches("api_key_source = \"keyring\"").count(),
        1,
        "{after}"
    );
    assert!(!after.contains(KEY));

    // What login starts (no key in its environment) finds it.
    let mut c = cmd(&sb, &ss);
    c.args(["autostart", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&run(c).stdout).unwrap();
    assert_eq!(v["service_key"]["found"], true, "{v}");
    assert!(
        v["service_key"]["source"]
            .as_str()
            .unwrap()
            .contains("OS keyring"),
        "{v}"
    );
    write_file(&sb.drop_dir().join("b.mov"), 3000, 2);
    let mut c = cmd(&sb, &ss);
    c.args(["run", "--once"]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emu.ledger().len(), 1);
}

#[test]
fn keyring_settings_that_contradict_are_config_errors() {
    let emu = Emulator::start(&[]);
    for (api, says) in [
        ("api_key_source = \"vault\"\n", "is not one of \"auto\""),
        (
            "api_key_source = \"keyring\"\napi_key_file = \"/tmp/k\"\n",
            "is not read when api_key_source = \"keyring\"",
        ),
        (
            "keyring_account = \"b\"\n",
            "only used with api_key_source = \"keyring\"",
        ),
    ] {
        let sb = Sandbox::watching(&emu, "", "");
        let text = std::fs::read_to_string(&sb.config).unwrap();
        std::fs::write(&sb.config, text.replacen("[api]\n", &format!("[api]\n{api}"), 1)).unwrap();
        let mut c = sb.cmd();
        c.args(["check", "--offline"]);
        let out = run(c);
        assert_eq!(out.code, 2, "{api}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{api}: {}", out.stderr);
    }
}
