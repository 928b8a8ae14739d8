//! A real Secret Service for the OS keyring's tests: a private D-Bus
//! session bus (`dbus-daemon`) with GNOME Keyring's secrets component on
//! it, its login keyring created and unlocked, all in a temp dir and gone
//! when dropped. `secret-tool` (libsecret) writes and reads entries beside
//! the agent, as another program would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::wait_until;

pub struct SecretService {
    bus: Child,
    /// `DBUS_SESSION_BUS_ADDRESS` for the programs that use it.
    pub address: String,
    dir: tempfile::TempDir,
}

impl SecretService {
    /// Starts the bus and the keyring. None when a part is not installed
    /// (the caller skips, or fails in CI).
    pub fn start() -> Option<SecretService> {
        for tool in ["dbus-daemon", "gnome-keyring-daemon", "secret-tool"] {
            if Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| !s.success())
                .unwrap_or(true)
            {
                return None;
            }
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("bus");
        let address = format!("unix:path={}", socket.display());
        let bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        let me = SecretService { bus, address, dir };
        assert!(
            wait_until(Duration::from_secs(20), || socket.exists()),
            "the session bus never listened at {}",
            socket.display()
        );
        // `--unlock` reads the login keyring's password from stdin and
        // creates the keyring when there is none; `--daemonize` returns
        // once the daemon is on the bus.
        let mut keyring = me
            .command("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets", "--daemonize"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gnome-keyring-daemon");
        {
            use std::io::Write;
            let mut stdin = keyring.stdin.take().expect("stdin");
            stdin.write_all(b"test-login-password").expect("unlock");
        }
        let status = crate::process::wait_with_deadline(&mut keyring, Duration::from_secs(30));
        assert!(status.success(), "gnome-keyring-daemon: {status}");
        // Ready when an entry can be written and read back.
        assert!(
            wait_until(Duration::from_secs(20), || {
                me.store("autorender-sync-test", "probe", "ok")
                    && me.lookup("autorender-sync-test", "probe").as_deref() == Some("ok")
            }),
            "the keyring never answered"
        );
        Some(me)
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A command on this bus (HOME in the temp dir, for the keyring files).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        let _ = std::fs::create_dir_all(self.home());
        c.env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("HOME", self.home())
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        c
    }

    /// Puts this bus in `cmd`'s environment.
    pub fn use_in(&self, cmd: &mut Command) {
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.address);
    }

    /// `secret-tool store`: an entry written by libsecret, not by us.
    pub fn store(&self, service: &str, account: &str, secret: &str) -> bool {
        let mut c = self.command("secret-tool");
        c.args(["store", "--label=test", "service", service, "username", account])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let Ok(mut child) = c.spawn() else { return false };
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            let _ = stdin.write_all(secret.as_bytes());
        }
        crate::process::wait_with_deadline(&mut child, Duration::from_secs(20)).success()
    }

    /// `secret-tool lookup`: the entry as libsecret reads it.
    pub fn lookup(&self, service: &str, account: &str) -> Option<String> {
        let mut c = self.command("secret-tool");
        c.args(["lookup", "service", service, "username", account]);
        let out = crate::process::run(c);
        (out.code == 0).then(|| out.stdout.trim_end().to_string())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        // The keyring daemon leaves when its bus goes.
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}
