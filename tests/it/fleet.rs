//! Fleet mode: several agents (separate processes and state dirs, each on
//! its own mount path of one folder) share a queue in a throwaway
//! PostgreSQL cluster; every file is uploaded once, a dead or paused node's
//! upload is taken over, and a database outage loses nothing.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

use autorender_test_support::postgres::Postgres;

/// One shared folder and each node's own path to it: a bind mount where
/// this machine allows one (as root), else a symlink.
struct Share {
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
    bound: Vec<PathBuf>,
}

impl Share {
    fn new(nodes: usize) -> Share {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("share")).expect("share dir");
        let mut share = Share {
            dir,
            mounts: Vec::new(),
            bound: Vec::new(),
        };
        for i in 0..nodes {
            let node_dir = share.dir.path().join(format!("node{i}"));
            std::fs::create_dir(&node_dir).expect("node dir");
            let mnt = node_dir.join("renders");
            std::fs::create_dir(&mnt).expect("mount point");
            let bound = is_root()
                && Command::new("mount")
                    .arg("--bind")
                    .arg(share.path())
                    .arg(&mnt)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
            if bound {
                share.bound.push(mnt.clone());
            } else {
                std::fs::remove_dir(&mnt).expect("rmdir");
                #[cfg(unix)]
                std::os::unix::fs::symlink(share.path(), &mnt).expect("symlink");
                eprintln!("note: no bind mount here; node {i} reaches the share through a symlink");
            }
            share.mounts.push(mnt);
        }
        share
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("share")
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        for m in &self.bound {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// Node `i`'s sandbox: its own state dir and config, watching its mount.
fn node(emu: &Emulator, pg: &Postgres, share: &Share, i: usize, agent: &str, lease: &str) -> Sandbox {
    let sb = Sandbox::new(emu, agent);
    let text = std::fs::read_to_string(&sb.config).expect("read config")
        + &format!(
            "[fleet]\ndatabase = \"{}\"\nnode = \"node-{i}\"\nlease = \"{lease}\"\n\
             [[watch]]\npath = \"{}\"\nremote_folder = \"renders\"\nshare = \"renders\"\n",
            pg.url(),
            share.mounts[i].display()
        );
    std::fs::write(&sb.config, text).expect("write config");
    sb
}

fn fleet_status(sb: &Sandbox) -> Value {
    let mut c = sb.cmd();
    c.args(["fleet", "status", "--json"]);
    let out = run(c);
    assert_eq!(out.code, 0, "fleet status failed: {}", out.stderr);
    serde_json::from_str(&out.stdout).expect("fleet status --json is JSON")
}

/// The node holding the lease on `file` right now, if one does.
fn holder(sb: &Sandbox, file: &str) -> Option<String> {
    let leased = format!("renders/{file}");
    fleet_status(sb)["nodes"]
        .as_array()?
        .iter()
        .find(|n| {
            n["leases"].as_i64().unwrap_or(0) > 0
                && n["leased_files"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| *f == leased))
        })
        .and_then(|n| n["node"].as_str().map(str::to_string))
}

/// Every agent's log, one after the other.
fn logs<'a>(agents: impl IntoIterator<Item = &'a AgentProcess>) -> String {
    agents
        .into_iter()
        .map(|a| a.log_text())
        .collect::<Vec<_>>()
        .join("\n----\n")
}

/// The node that holds the lease on `file` (waiting a little for one to),
/// and its number.
fn holder_of(sb: &Sandbox, file: &str) -> (String, usize) {
    let mut who = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            who = holder(sb, file);
            who.is_some()
        }),
        "no node holds {file}: {}",
        fleet_status(sb)
    );
    let who = who.expect("holder");
    let i = who.trim_start_matches("node-").parse().expect("node number");
    (who, i)
}

/// How many parts of `file`'s first session the emulator has stored.
fn parts_stored(emu: &Emulator, file: &str) -> u64 {
    emu.sessions_of(file)
        .first()
        .and_then(|s| s["parts_received"].as_u64())
        .unwrap_or(0)
}

/// Every ledger entry's name, each once (or panics), with its sha256.
fn stored_once(emu: &Emulator) -> std::collections::HashMap<String, String> {
    let ledger = emu.ledger();
    unique_names(&ledger);
    ledger
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e["sha256"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn three_agents_on_one_share_upload_each_of_500_files_once_and_share_the_work() {
    let Some(pg) = Postgres::start() else { return };
    let emu = Emulator::start(&[]);
    let share = Share::new(3);
    let agent = "settle = \"500ms\"\nconcurrent_files = 3\nrescan_interval = \"0s\"\n";
    let nodes: Vec<Sandbox> = (0..3).map(|i| node(&emu, &pg, &share, i, agent, "5s")).collect();
    let mut agents: Vec<AgentProcess> = nodes.iter().map(|sb| sb.running_agent(&[])).collect();
    // Mixed sizes: mostly small files, every 25th a multi-part one (up to 24 MiB).
    let mut expected = std::collections::HashMap::new();
    for i in 0..500u64 {
        let size = if i.is_multiple_of(25) {
            (11 + (i % 14)) as usize * 1024 * 1024
        } else {
            1 + ((i * 7919) % 300_000) as usize
        };
        let sub = share.path().join(format!("shot{:02}", i % 10));
        std::fs::create_dir_all(&sub).expect("subdir");
        let path = sub.join(format!("f{i:03}.exr"));
        write_file(&path, size, i);
        expected.insert(format!("f{i:03}.exr"), sha256_file(&path));
    }
    assert!(
        wait_until(Duration::from_secs(240), || emu.ledger().len() >= 500),
        "not every file arrived: {} of 500\n{}",
        emu.ledger().len(),
        logs(&agents)
    );
    // Nothing more comes: every node's local queue drains.
    for sb in &nodes {
        assert!(
            wait_until(Duration::from_secs(60), || {
                let s = sb.status();
                s["roots"][0]["done"].as_u64() == Some(500)
            }),
            "a node did not record all 500 files: {}\n{}",
            sb.status(),
            logs(&agents)
        );
    }
    let stored = stored_once(&emu);
    assert_eq!(stored.len(), 500);
    for (name, sha) in &expected {
        assert_eq!(stored.get(name), Some(sha), "{name} is not stored byte-exact");
    }
    let status = fleet_status(&nodes[0]);
    let per_node: Vec<u64> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["total"]["files"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(per_node.len(), 3, "three nodes: {status}");
    assert_eq!(per_node.iter().sum::<u64>(), 500, "{status}");
    assert!(
        per_node.iter().all(|n| *n >= 25),
        "the work was not spread: {per_node:?}"
    );
    assert_eq!(status["files"]["done"]["files"], 500, "{status}");
    // `status` shows the fleet as the node last read it (every 15 s).
    assert!(
        wait_until(Duration::from_secs(40), || {
            let s = nodes[0].status();
            s["fleet"]["node"] == "node-0" && s["fleet"]["nodes"].as_array().is_some_and(|n| n.len() == 3)
        }),
        "{}",
        nodes[0].status()
    );
    let mut c = nodes[2].cmd();
    c.arg("check");
    let checked = run(c);
    assert_eq!(checked.code, 0, "{}", checked.stderr);
    assert!(
        checked.stdout.contains("fleet: node \"node-2\"")
            && checked.stdout.contains("fleet database: reachable"),
        "{}",
        checked.stdout
    );
    let mut c = nodes[1].cmd();
    c.args(["fleet", "status"]);
    let human = run(c);
    assert!(
        human.stdout.contains("node-2") && human.stdout.contains("done"),
        "{}",
        human.stdout
    );
    for a in &mut agents {
        let out = a.stop();
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
}

#[test]
fn a_killed_nodes_300_mib_upload_is_finished_by_another_resending_only_parts_in_flight() {
    let Some(pg) = Postgres::start() else { return };
    let emu = Emulator::start(&[]);
    let share = Share::new(2);
    let agent = "settle = \"300ms\"\nconcurrent_parts = 4\nbandwidth_limit = \"40MiB/s\"\n";
    let nodes: Vec<Sandbox> = (0..2).map(|i| node(&emu, &pg, &share, i, agent, "4s")).collect();
    let mut agents: Vec<Option<AgentProcess>> = nodes.iter().map(|sb| Some(sb.running_agent(&[]))).collect();
    let path = share.path().join("master.mov");
    write_file(&path, 300 * 1024 * 1024, 7);
    let sha = sha256_file(&path);
    // About half the parts stored: the uploading node dies.
    assert!(
        wait_until(Duration::from_secs(120), || parts_stored(&emu, "master.mov")
            >= 15),
        "the upload did not get halfway:\n{}",
        logs(agents.iter().flatten())
    );
    let (who, i) = holder_of(&nodes[0], "master.mov");
    agents[i].take().expect("running").crash();
    let other = 1 - i;
    assert!(
        wait_until(Duration::from_secs(120), || emu.ledger().len() == 1),
        "the other node did not finish it:\n{}",
        agents[other].as_ref().expect("running").log_text()
    );
    let log = agents[other].as_ref().expect("running").log_text();
    assert!(log.contains("taking over") && log.contains(&who), "{log}");
    let stored = stored_once(&emu);
    assert_eq!(stored.get("master.mov"), Some(&sha));
    // One session, resumed: each part sent once, but for those in flight
    // when the node died (at most `concurrent_parts`, and a mark that had
    // not reached the database yet).
    let sessions = emu.sessions_of("master.mov");
    assert_eq!(sessions.len(), 1, "a second session was started: {sessions:?}");
    let puts: Vec<u64> = sessions[0]["puts"]
        .as_array()
        .expect("puts")
        .iter()
        .map(|p| p.as_u64().unwrap_or(0))
        .collect();
    let resent: u64 = puts.iter().map(|p| p.saturating_sub(1)).sum();
    assert!(puts.iter().all(|p| (1..=2).contains(p)), "{puts:?}");
    assert!(resent <= 5, "{resent} parts sent again: {puts:?}");
    assert_eq!(emu.stat("complete_ok"), 1);
}

#[test]
fn a_node_paused_past_its_lease_does_not_complete_what_another_took_over() {
    let Some(pg) = Postgres::start() else { return };
    let emu = Emulator::start(&[]);
    let share = Share::new(2);
    let agent = "settle = \"300ms\"\nconcurrent_parts = 2\nbandwidth_limit = \"12MiB/s\"\n";
    let nodes: Vec<Sandbox> = (0..2).map(|i| node(&emu, &pg, &share, i, agent, "3s")).collect();
    let mut agents: Vec<AgentProcess> = nodes.iter().map(|sb| sb.running_agent(&[])).collect();
    let path = share.path().join("plate.dpx");
    write_file(&path, 60 * 1024 * 1024, 11);
    let sha = sha256_file(&path);
    assert!(
        wait_until(Duration::from_secs(60), || parts_stored(&emu, "plate.dpx") >= 1),
        "the upload did not start"
    );
    let (_, i) = holder_of(&nodes[0], "plate.dpx");
    agents[i].signal("STOP");
    let other = 1 - i;
    assert!(
        wait_until(Duration::from_secs(90), || emu.ledger().len() == 1),
        "the other node did not take it over:\n{}",
        agents[other].log_text()
    );
    agents[i].signal("CONT");
    // The paused node wakes up holding a claim that is no longer its own:
    // it notices (lease renewal, or the fence before complete) and stops.
    assert!(
        wait_until(Duration::from_secs(30), || agents[i]
            .log_text()
            .contains("lease on it lapsed")),
        "the paused node did not notice it lost the file:\n{}",
        agents[i].log_text()
    );
    // And it records the file as uploaded by the other node, without sending it.
    assert!(
        wait_until(Duration::from_secs(30), || nodes[i].status()["roots"][0]["done"]
            .as_u64()
            == Some(1)),
        "{}",
        agents[i].log_text()
    );
    let stored = stored_once(&emu);
    assert_eq!(stored.get("plate.dpx"), Some(&sha));
    assert_eq!(emu.ledger().len(), 1);
    assert_eq!(emu.stat("complete_ok"), 1, "a second complete succeeded");
    if std::env::var_os("FLEET_TEST_LOGS").is_some() {
        eprintln!("{}\n----\n{}", agents[0].log_text(), agents[1].log_text());
    }
    for a in &mut agents {
        assert_eq!(a.stop().code, 0);
    }
}

#[test]
fn postgres_down_for_30s_mid_run_loses_nothing_and_says_so_once_each_way() {
    let Some(mut pg) = Postgres::start() else { return };
    let emu = Emulator::start(&[]);
    let share = Share::new(2);
    let agent = "settle = \"300ms\"\nbandwidth_limit = \"8MiB/s\"\n";
    let nodes: Vec<Sandbox> = (0..2).map(|i| node(&emu, &pg, &share, i, agent, "3s")).collect();
    let mut agents: Vec<AgentProcess> = nodes.iter().map(|sb| sb.running_agent(&[])).collect();
    let mut n = 0u64;
    let mut write = |count: u64| {
        for _ in 0..count {
            let size = if n.is_multiple_of(5) {
                12 * 1024 * 1024
            } else {
                200_000 + n as usize
            };
            write_file(&share.path().join(format!("clip{n:03}.mov")), size, n);
            n += 1;
        }
    };
    write(30);
    assert!(
        wait_until(Duration::from_secs(60), || emu.ledger().len() >= 8),
        "uploads did not begin"
    );
    pg.down();
    // Files keep arriving while the database is away.
    write(20);
    let mut c = nodes[0].cmd();
    c.args(["fleet", "status"]);
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("the fleet database is unreachable"),
        "{}",
        out.stderr
    );
    let solo = Sandbox::new(&emu, "");
    let mut c = solo.cmd();
    c.args(["fleet", "status"]);
    let out = run(c);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("no [fleet] table"), "{}", out.stderr);
    std::thread::sleep(Duration::from_secs(30)); // the outage itself, not a wait for a condition
    pg.up();
    assert!(
        wait_until(Duration::from_secs(180), || emu.ledger().len() >= 50),
        "not every file arrived after the outage: {}\n{}",
        emu.ledger().len(),
        logs(&agents)
    );
    assert_eq!(stored_once(&emu).len(), 50);
    for a in &mut agents {
        assert!(
            !a.has_exited(),
            "an agent stopped during the outage:\n{}",
            a.log_text()
        );
        // A node in its backoff (up to 15 s) may not have asked again yet:
        // the other node can have sent every file meanwhile.
        wait_until(Duration::from_secs(40), || {
            a.log_text().contains("the fleet database is reachable again")
        });
        let log = a.log_text();
        assert_eq!(
            log.matches("the fleet database is unreachable (").count(),
            1,
            "one line when it goes:\n{log}"
        );
        assert_eq!(
            log.matches("the fleet database is reachable again").count(),
            1,
            "one line when it is back:\n{log}"
        );
        assert!(!log.contains("panicked"), "{log}");
    }
    for a in &mut agents {
        assert_eq!(a.stop().code, 0);
    }
    // The workspace loses a file: `verify --requeue` on one node puts it
    // back for the whole fleet, and `run --once` there sends it once more.
    let victim = emu
        .ledger()
        .into_iter()
        .find(|e| e["name"] == "clip003.mov")
        .expect("clip003");
    let file_no = victim["file_no"].as_str().expect("file_no").to_string();
    let (status, _) = emu.api(reqwest::Method::DELETE, &format!("/api/v1/files/{file_no}"));
    assert_eq!(status, 200);
    let mut c = nodes[1].cmd();
    c.args(["verify", "--requeue"]);
    let out = run(c);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("1 queued again"), "{}", out.stdout);
    let before = emu.stored();
    let out = nodes[1].run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        emu.stored(),
        before + 1,
        "only the lost file went again:\n{}",
        out.stderr
    );
    let ledger = emu.ledger();
    assert_eq!(
        ledger.iter().filter(|e| e["name"] == "clip003.mov").count(),
        2,
        "the deleted copy and the new one"
    );
    assert_eq!(ledger.len(), 51);
}

#[test]
fn a_takeover_never_resumes_a_session_with_other_bytes_of_the_same_size_and_mtime() {
    let Some(pg) = Postgres::start() else { return };
    let emu = Emulator::start(&[]);
    let share = Share::new(2);
    let agent = "settle = \"300ms\"\nconcurrent_parts = 2\nbandwidth_limit = \"16MiB/s\"\n";
    let nodes: Vec<Sandbox> = (0..2).map(|i| node(&emu, &pg, &share, i, agent, "4s")).collect();
    let mut agents: Vec<Option<AgentProcess>> = nodes.iter().map(|sb| Some(sb.running_agent(&[]))).collect();
    let path = share.path().join("comp.exr");
    let size = 64 * 1024 * 1024;
    write_file(&path, size, 21);
    let mtime = std::fs::metadata(&path).expect("stat").modified().expect("mtime");
    assert!(
        wait_until(Duration::from_secs(60), || parts_stored(&emu, "comp.exr") >= 2),
        "the upload did not start:\n{}",
        logs(agents.iter().flatten())
    );
    let (_, i) = holder_of(&nodes[0], "comp.exr");
    agents[i].take().expect("running").crash();
    // A re-render lands in place before the lease lapses: other bytes, the
    // same size, and (copied with its times kept) the same mtime.
    write_file(&path, size, 22);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(mtime))
        .expect("keep the mtime");
    let sha = sha256_file(&path);
    let other = 1 - i;
    assert!(
        wait_until(Duration::from_secs(120), || emu.ledger().len() == 1),
        "the other node did not send it:\n{}",
        agents[other].as_ref().expect("running").log_text()
    );
    let stored = stored_once(&emu);
    assert_eq!(
        stored.get("comp.exr"),
        Some(&sha),
        "the stored file is not the file on disk (a session resumed with other bytes mixes two versions):\n{}",
        agents[other].as_ref().expect("running").log_text()
    );
    let log = agents[other].as_ref().expect("running").log_text();
    assert!(
        log.contains("its content changed since the recorded upload began"),
        "{log}"
    );
}

#[test]
fn run_once_on_a_fleet_node_leaves_what_another_node_is_sending_to_it() {
    let Some(pg) = Postgres::start() else { return };
    let emu = Emulator::start(&[]);
    let share = Share::new(2);
    // One slot, busy with the master: the proxy is the cron'd node's to send.
    let slow = "settle = \"300ms\"\nconcurrent_files = 1\nbandwidth_limit = \"2MiB/s\"\n";
    let busy = node(&emu, &pg, &share, 0, slow, "5s");
    let cron = node(&emu, &pg, &share, 1, "settle = \"300ms\"\n", "5s");
    let mut agent = busy.running_agent(&[]);
    write_file(&share.path().join("master.mov"), 24 * 1024 * 1024, 3);
    assert!(
        wait_until(Duration::from_secs(60), || !emu
            .sessions_of("master.mov")
            .is_empty()),
        "the upload did not start:\n{}",
        agent.log_text()
    );
    write_file(&share.path().join("proxy.mp4"), 300_000, 4);
    // The cron'd node sends what nobody holds and leaves the rest.
    let out = cron.run_once();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("1 file(s) left to the other fleet nodes"),
        "{}",
        out.stderr
    );
    assert!(
        wait_until(Duration::from_secs(90), || emu.ledger().len() == 2),
        "{}",
        agent.log_text()
    );
    let stored = stored_once(&emu);
    assert!(stored.contains_key("master.mov") && stored.contains_key("proxy.mp4"));
    assert_eq!(
        emu.sessions_of("master.mov").len(),
        1,
        "sent once, by the node that held it"
    );
    assert_eq!(agent.stop().code, 0);
}
