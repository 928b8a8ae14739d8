//! Look-alikes (issue 24): a file with the uploaded version's size and
//! mtime is not taken for it unless its inode and ctime are the same too;
//! otherwise it is hashed. Other content is uploaded, the same content
//! (a `touch`, a `chmod`, an identical copy) costs one read and no PUT.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::harness::*;

fn run_once(sb: &Sandbox) {
    let mut once = sb.cmd();
    once.args(["run", "--once"]);
    let out = run(once);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

fn set_mtime(p: &Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// The sha256 of the last object stored under `name`.
fn last_stored(emu: &Emulator, name: &str) -> String {
    emu.ledger()
        .iter()
        .rev()
        .find(|e| {
            e["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(name.trim_end_matches(".mov")))
        })
        .and_then(|e| e["sha256"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn a_same_size_copied_mtime_replacement_is_uploaded_and_a_touch_or_chmod_is_not() {
    let emu = Emulator::start(&[]);
    let sb = Sandbox::watching(&emu, "settle = \"200ms\"\n", "");
    let file = sb.drop_dir().join("a.mov");
    write_file(&file, 5000, 1);
    run_once(&sb);
    assert_eq!(emu.stored(), 1);

    // A touch (another mtime, same bytes) and a chmod (another ctime): hashed, not sent.
    set_mtime(&file, mtime(&file) + Duration::from_secs(60));
    run_once(&sb);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    run_once(&sb);
    assert_eq!(emu.stored(), 1, "a touch or a chmod is not a new version");
    // And once hashed, not hashed again: the record took the new identity.
    run_once(&sb);
    assert_eq!(emu.stored(), 1);

    // Rewritten in place with the same size and the old mtime put back
    // (`touch -r`, `cp -p` over it): other content, so uploaded.
    let was = mtime(&file);
    write_file(&file, 5000, 2);
    set_mtime(&file, was);
    let second = sha256_file(&file);
    run_once(&sb);
    assert_eq!(emu.stored(), 2, "the in-place look-alike was not uploaded");
    assert_eq!(last_stored(&emu, "a.mov"), second);

    // Written to a temp name with the same mtime and renamed over.
    let tmp = sb.path("staging.tmp");
    write_file(&tmp, 5000, 3);
    set_mtime(&tmp, mtime(&file));
    let third = sha256_file(&tmp);
    std::fs::rename(&tmp, &file).unwrap();
    run_once(&sb);
    assert_eq!(emu.stored(), 3, "the renamed-over look-alike was not uploaded");
    assert_eq!(last_stored(&emu, "a.mov"), third);

    // An identical copy renamed over (a restore, a new volume): hashed, not sent.
    let copy = sb.path("copy.tmp");
    std::fs::copy(&file, &copy).unwrap();
    set_mtime(&copy, mtime(&file));
    std::fs::rename(&copy, &file).unwrap();
    run_once(&sb);
    assert_eq!(emu.stored(), 3, "an identical copy is not a new version");
}

/// A file rewritten while its complete is in flight (same size, its mtime
/// put back), in place or renamed over: `after_upload` leaves it (it is no
/// longer the inode and ctime that were read), the new version is
/// uploaded, and only then deleted or moved. The version on disk is never
/// lost unsent.
fn rewrite_during_complete(after: &str, how: &str) {
    let emu = Emulator::start(&["--part-size", "64KiB", "--complete-delay", "1500"]);
    let sb = Sandbox::new(&emu, "settle = \"200ms\"\ndirect_upload_max = \"16KiB\"\n");
    let (root, done) = (sb.path("drop"), sb.path("done"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&done).unwrap();
    let action = match after {
        "move" => format!("after_upload = \"move\"\nmove_to = \"{}\"\n", done.display()),
        _ => "after_upload = \"delete\"\n".to_string(),
    };
    let text = std::fs::read_to_string(&sb.config).unwrap()
        + &format!(
            "[[watch]]\npath = \"{}\"\nremote_folder = \"d\"\n{action}",
            root.display()
        );
    std::fs::write(&sb.config, text).unwrap();
    let file = root.join("c.mov");
    write_file(&file, 200 * 1024, 1);
    let first = sha256_file(&file);
    let mut agent = sb.running_agent(&[]);
    let completing = || {
        emu.get("/_emulator/sessions")
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s["completing"] == true))
    };
    assert!(
        wait_until(Duration::from_secs(30), completing),
        "no complete was sent"
    );
    let was = mtime(&file);
    match how {
        // Written to a temp name, `touch -r`'d, renamed over.
        "rename" => {
            let tmp = root.join(".c.mov.partial");
            write_file(&tmp, 200 * 1024, 2);
            set_mtime(&tmp, was);
            std::fs::rename(&tmp, &file).unwrap();
        }
        // Rewritten in place with another size (mtime left as it falls).
        "size" => write_file(&file, 300 * 1024, 2),
        // Rewritten in place, then `touch -r` of the old mtime.
        _ => {
            write_file(&file, 200 * 1024, 2);
            set_mtime(&file, was);
        }
    }
    let second = sha256_file(&file);
    assert_ne!(first, second);
    let gone = || !file.exists() && emu.stored() >= 2;
    assert!(
        wait_until(Duration::from_secs(60), gone),
        "the rewritten version was not uploaded and then acted on: stored {}, on disk {}",
        emu.stored(),
        file.exists()
    );
    assert_eq!(emu.stored(), 2, "each version once");
    let shas: Vec<String> = emu
        .ledger()
        .iter()
        .filter_map(|e| e["sha256"].as_str().map(str::to_string))
        .collect();
    assert!(
        shas.contains(&first) && shas.contains(&second),
        "both versions stored: {shas:?}"
    );
    if after == "move" {
        assert_eq!(
            sha256_file(&done.join("c.mov")),
            second,
            "the moved file is the new version"
        );
    }
    assert_eq!(agent.stop().code, 0);
}

#[test]
fn a_file_rewritten_in_place_during_complete_is_uploaded_before_it_is_deleted() {
    rewrite_during_complete("delete", "in place");
}

#[test]
fn a_file_renamed_over_during_complete_is_uploaded_before_it_is_deleted() {
    rewrite_during_complete("delete", "rename");
}

#[test]
fn a_file_rewritten_in_place_during_complete_is_uploaded_before_it_is_moved() {
    rewrite_during_complete("move", "in place");
}

#[test]
fn a_file_renamed_over_during_complete_is_uploaded_before_it_is_moved() {
    rewrite_during_complete("move", "rename");
}

#[test]
fn a_file_rewritten_with_another_size_during_complete_is_uploaded_before_it_is_deleted() {
    rewrite_during_complete("delete", "size");
}

#[test]
fn a_file_rewritten_with_another_size_during_complete_is_uploaded_before_it_is_moved() {
    rewrite_during_complete("move", "size");
}

/// While a file's parts go out slowly, `chmod`s every 200 ms (only the
/// ctime moves) neither restart nor abort it: the content is hashed again
/// before complete and the one session completes. A rewrite with the
/// mtime put back (also only the ctime, to stat) is caught by that hash:
/// no object is ever stored that mixes the two versions.
fn metadata_churn_during_upload(rewrite: bool) {
    let emu = Emulator::start(&["--part-size", "64KiB"]);
    let sb = Sandbox::watching(
        &emu,
        "settle = \"200ms\"\nbandwidth_limit = \"512KiB/s\"\nconcurrent_parts = 2\ndirect_upload_max = \"0\"\n",
        "",
    );
    let file = sb.drop_dir().join("slow.mov");
    write_file(&file, 2 * 1024 * 1024, 21);
    let first = sha256_file(&file);
    let mut agent = sb.running_agent(&[]);
    let sending = || emu.stat("part_ok") >= 2;
    assert!(wait_until(Duration::from_secs(30), sending), "no part went");
    let was = mtime(&file);
    if rewrite {
        write_file(&file, 2 * 1024 * 1024, 22);
        set_mtime(&file, was);
    } else {
        for i in 0..10 {
            let mode = if i % 2 == 0 { 0o640 } else { 0o644 };
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let last = sha256_file(&file);
    let done = || {
        emu.ledger()
            .iter()
            .any(|e| e["sha256"].as_str() == Some(last.as_str()))
    };
    assert!(wait_until(Duration::from_secs(60), done), "{:?}", emu.ledger());
    let out = agent.stop();
    let shas: Vec<String> = emu
        .ledger()
        .iter()
        .filter_map(|e| e["sha256"].as_str().map(str::to_string))
        .collect();
    if rewrite {
        assert_eq!(
            shas,
            vec![last.clone()],
            "only the new version, never a mix: {}",
            out.stderr
        );
        for e in emu.ledger() {
            let stored = emu
                .store
                .path()
                .join(e["folder"].as_str().unwrap())
                .join(e["name"].as_str().unwrap());
            assert_eq!(
                sha256_file(&stored),
                last,
                "the stored bytes are the new version's"
            );
        }
    } else {
        assert_eq!(shas, vec![first], "the one version, once");
        assert_eq!(emu.stat("start"), 1, "one session, not restarted: {}", out.stderr);
        assert!(!out.stderr.contains("changed during upload"), "{}", out.stderr);
    }
}

#[test]
fn chmod_while_parts_go_neither_restarts_nor_aborts_the_upload() {
    metadata_churn_during_upload(false);
}

#[test]
fn a_rewrite_with_the_mtime_put_back_while_parts_go_is_never_completed_mixed() {
    metadata_churn_during_upload(true);
}
