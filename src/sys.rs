//! The few questions this program asks the operating system beyond `std`
//! and the anchored file calls of [`crate::anchor`]: this machine's name,
//! whether a folder can be written and how much room its disk has, and
//! whether SIGHUP was ignored when we started. The only module allowed
//! `unsafe` code (one `sigaction` query, which rustix offers no safe form
//! of); the rest of the crate is `#![deny(unsafe_code)]`.
//!
//! It sits on the lowest floor: anything may call it, it calls nothing of
//! ours.

use std::path::Path;

/// This machine's name, as events, watcher markers and fleet nodes report
/// it (read once).
pub fn host_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        #[cfg(unix)]
        {
            let uname = rustix::system::uname();
            if let Ok(s) = uname.nodename().to_str()
                && !s.is_empty()
            {
                return s.to_string();
            }
        }
        std::env::var("COMPUTERNAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "localhost".to_string())
    })
}

/// Can this user create files in `dir`? (None: the platform cannot tell.)
pub fn writable(dir: &Path) -> Option<bool> {
    #[cfg(unix)]
    {
        Some(rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok())
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Bytes free for this user on the file system holding `path`. (None:
/// the platform or the path cannot tell.)
pub fn free_bytes(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let fs = rustix::fs::statvfs(path).ok()?;
        Some(fs.f_bavail.saturating_mul(fs.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Who listens on TCP `addr` on this machine, in words ("user alice (uid
/// 1001), process autorender-sync (pid 4242)"), as far as `/proc` tells
/// this user: the socket's owner always, its process only when that
/// process is readable (ours, or we are root). None elsewhere than Linux,
/// or when no listener is found.
pub fn port_holder(addr: std::net::SocketAddr) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let table = if addr.is_ipv4() {
            "/proc/net/tcp"
        } else {
            "/proc/net/tcp6"
        };
        let text = std::fs::read_to_string(table).ok()?;
        let (uid, inode) = listener_in(&text, addr)?;
        let mut who = match user_name(uid) {
            Some(name) => format!("user {name} (uid {uid})"),
            None => format!("uid {uid}"),
        };
        if let Some((pid, name)) = process_with_socket(inode) {
            who.push_str(&format!(", process {name} (pid {pid})"));
        }
        Some(who)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = addr;
        None
    }
}

/// In a `/proc/net/tcp{,6}` table: the (uid, inode) of the socket that
/// listens on `addr`'s port at `addr`'s address or at any address.
#[cfg(any(target_os = "linux", test))]
fn listener_in(table: &str, addr: std::net::SocketAddr) -> Option<(u32, u64)> {
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
        if f.len() < 10 || f[3] != "0A" {
            continue;
        }
        let Some((ip_hex, port_hex)) = f[1].split_once(':') else {
            continue;
        };
        if u16::from_str_radix(port_hex, 16).ok() != Some(addr.port()) {
            continue;
        }
        let any = ip_hex.bytes().all(|b| b == b'0');
        if any || proc_ip(ip_hex) == Some(addr.ip()) {
            return Some((f[7].parse().ok()?, f[9].parse().ok()?));
        }
    }
    None
}

/// An address as `/proc/net/tcp{,6}` writes it: the bytes of each 32-bit
/// word in the machine's order, hex.
#[cfg(any(target_os = "linux", test))]
fn proc_ip(hex: &str) -> Option<std::net::IpAddr> {
    let words: Option<Vec<[u8; 4]>> = (0..hex.len() / 8)
        .map(|i| {
            let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
            Some(w.to_ne_bytes())
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    match bytes.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// The name of user `uid` in `/etc/passwd` (None: not there).
#[cfg(target_os = "linux")]
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

/// The process holding socket `inode` open, among those whose
/// descriptors this user may read: (pid, its command name).
#[cfg(target_os = "linux")]
fn process_with_socket(inode: u64) -> Option<(u32, String)> {
    let wanted = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str()) {
                let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some((pid, name.trim().to_string()));
            }
        }
    }
    None
}

/// Who started process `pid`, in words: "its systemd user unit
/// (autorender-sync.service)" when it runs in that unit's cgroup, else its
/// parent ("bash (pid 4242)"). None elsewhere than Linux or when `/proc`
/// does not tell.
pub fn started_by(pid: u32, unit: &str) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        if cgroup.lines().any(|l| l.ends_with(&format!("/{unit}"))) {
            return Some(format!("its systemd user unit ({unit})"));
        }
        // The fields after the command's name (which may hold spaces).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = stat.rsplit_once(')')?.1;
        let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
        let name = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
        Some(format!("{} (pid {ppid})", name.trim()))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pid, unit);
        None
    }
}

/// Kills every process in the process group `pgid` (a hook started as
/// the leader of its own group, and whatever it started).
#[cfg(unix)]
pub fn kill_group(pgid: u32) {
    if let Some(pid) = i32::try_from(pgid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Was this process started with SIGHUP ignored (`nohup`)?
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn hangup_ignored() -> bool {
    // SAFETY: sigaction with a null new action only reads the current one
    // into `old`, which is a plain C struct we own.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Makes a FIFO at `path` (for tests: a file whose reader would block).
#[cfg(all(test, unix))]
pub fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_has_a_name_and_a_temp_dir_room_and_write_access() {
        assert!(!host_name().is_empty());
        let dir = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        {
            assert_eq!(writable(dir.path()), Some(true));
            assert_eq!(writable(&dir.path().join("gone")), Some(false));
            assert!(free_bytes(dir.path()).is_some_and(|b| b > 0));
            assert_eq!(free_bytes(&dir.path().join("gone")), None);
        }
    }

    #[test]
    fn a_listener_is_found_in_a_proc_table_by_port_and_address() {
        // Two sockets as /proc/net/tcp writes them (little-endian words):
        // 127.0.0.1:7780 listening (uid 1001, inode 555), and an
        // established one on the same port that must not count.
        let lo = u32::from_ne_bytes([127, 0, 0, 1]);
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {lo:08X}:1E64 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 555 1\n\
             1: {lo:08X}:1E64 {lo:08X}:9C40 01 00000000:00000000 00:00000000 00000000  1002        0 777 1\n"
        );
        let at = |a: &str| a.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(listener_in(&table, at("127.0.0.1:7780")), Some((1001, 555)));
        assert_eq!(listener_in(&table, at("127.0.0.2:7780")), None);
        assert_eq!(listener_in(&table, at("127.0.0.1:7781")), None);
        assert_eq!(proc_ip(&format!("{lo:08X}")), Some("127.0.0.1".parse().unwrap()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_named_as_the_holder_of_its_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let who = port_holder(l.local_addr().unwrap()).expect("our own listener is found");
        assert!(who.contains(&format!("pid {}", std::process::id())), "{who}");
        assert!(who.contains("uid "), "{who}");
    }
}
