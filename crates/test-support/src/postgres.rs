//! A throwaway PostgreSQL cluster for tests (shared by the integration
//! tests and the fleet backend's own tests): `initdb` into a temp dir, a
//! free loopback port, run by `nobody` when the tests run as root
//! (PostgreSQL refuses root). Where PostgreSQL is not installed it skips
//! loudly, except in CI (`CI` set), where it fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        panic!("CI must be able to run this test: {why}");
    }
    eprintln!("SKIPPING (not in CI): {why}");
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// A PostgreSQL cluster of its own in a temp dir, on a free loopback port,
/// run by an unprivileged user when the tests run as root (PostgreSQL
/// refuses root).
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    /// Extra server settings (`-c name=value`), e.g. TLS.
    settings: Vec<String>,
}

fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        dirs.extend(versions.into_iter().rev());
    }
    dirs.into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
}

/// The program run as the cluster's owner (nobody, when we are root).
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Postgres {
    /// A fresh cluster, started; None (after a loud skip, or a failure in
    /// CI) where PostgreSQL is not installed.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = pg_bin() else {
            skip_or_fail("PostgreSQL (initdb, postgres) is not installed; apt-get install postgresql");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        }
        let data = dir.path().join("data");
        let out = as_owner(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "fleet", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .env("LC_ALL", "C")
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            dir,
            bin,
            port: free_port(),
            child: None,
            settings: Vec::new(),
        };
        pg.up();
        Some(pg)
    }

    /// Starts the server (again) and waits until it answers.
    pub fn up(&mut self) {
        let before = self.log().matches("ready to accept connections").count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("pg log");
        let child = as_owner(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=60",
            ])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        // Ready once the log says so (again, after a restart).
        let ready = wait_until(Duration::from_secs(30), || {
            self.log().matches("ready to accept connections").count() > before
        });
        assert!(ready, "postgres did not start: {}", self.log());
    }

    /// A fresh cluster that speaks TLS only, with a certificate for
    /// 127.0.0.1 signed by a CA of its own (made with `openssl`); returns
    /// it and the CA's PEM file. None where PostgreSQL is missing.
    pub fn start_tls() -> Option<(Postgres, PathBuf)> {
        let mut pg = Postgres::start()?;
        pg.down();
        let dir = pg.dir.path().to_path_buf();
        let data = dir.join("data");
        let ossl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("run openssl (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        ossl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=fleet test CA",
                ],
            ]
            .concat(),
        );
        ossl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        ossl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        for f in ["server.crt", "server.key"] {
            std::fs::copy(dir.join(f), data.join(f)).expect("copy cert");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let p = data.join(f);
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
                if is_root() {
                    std::os::unix::fs::chown(&p, Some(65534), Some(65534)).expect("chown");
                }
            }
        }
        pg.settings = vec![
            "ssl=on".into(),
            "ssl_cert_file=server.crt".into(),
            "ssl_key_file=server.key".into(),
        ];
        // TLS only: a plain connection is refused by the server.
        let hba = data.join("pg_hba.conf");
        std::fs::write(&hba, "local all all trust\nhostssl all all 127.0.0.1/32 trust\n").expect("hba");
        pg.up();
        Some((pg, dir.join("ca.pem")))
    }

    /// Stops the server (fast shutdown: sessions are cut off).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
            let end = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://fleet@127.0.0.1:{}/postgres", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
