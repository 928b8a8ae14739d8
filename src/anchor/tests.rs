use super::*;
use std::os::unix::fs::symlink;

#[test]
fn a_symlinked_folder_or_file_is_refused_at_every_step() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let secret = d.path().join("secret");
    std::fs::create_dir_all(root.join("real")).unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("id_rsa"), b"private").unwrap();
    std::fs::write(root.join("real/a"), b"ok").unwrap();
    symlink(&secret, root.join("x")).unwrap();
    symlink(secret.join("id_rsa"), root.join("real/link")).unwrap();
    assert!(open_file(&root, &root.join("real/a")).is_ok());
    for p in [root.join("x/id_rsa"), root.join("real/link")] {
        let e = open_file(&root, &p).unwrap_err();
        assert_eq!(Refusal::of(&e), Some(Refusal::Symlink), "{p:?}: {e}");
    }
    let e = stat(&root, &root.join("x/id_rsa")).unwrap_err();
    assert_eq!(Refusal::of(&e), Some(Refusal::Symlink));
    assert_eq!(stat(&root, &root.join("real/link")).unwrap(), Kind::Symlink);
    assert!(list(&root, &root.join("x")).is_err());
    let e = open_file(&root, &root.join("real/../x/id_rsa")).unwrap_err();
    assert_eq!(Refusal::of(&e), Some(Refusal::Outside));
    assert!(open_file(&root, &d.path().join("secret/id_rsa")).is_err());
    // Relative paths below the current folder.
    assert_eq!(names(Path::new("."), Path::new("a/b")).unwrap().len(), 2);
    assert_eq!(names(Path::new(""), Path::new("./a")).unwrap().len(), 1);
    assert!(names(Path::new("x"), Path::new("a")).is_err());
    let id = FileId::of_path(&secret.join("id_rsa")).unwrap();
    assert!(remove_if(&root, &root.join("x/id_rsa"), &id).is_err());
    assert!(
        move_if(
            &root,
            &root.join("x/id_rsa"),
            &id,
            &d.path().join("out"),
            "id_rsa"
        )
        .is_err()
    );
    assert!(secret.join("id_rsa").exists());
    // Folders are made below the root, never through a link.
    make_dirs(&root, &root.join("new/deeper")).unwrap();
    assert!(root.join("new/deeper").is_dir());
    make_dirs(&root, &root.join("new/deeper")).unwrap();
    let e = make_dirs(&root, &root.join("x/planted")).unwrap_err();
    assert_eq!(Refusal::of(&e), Some(Refusal::Symlink), "{e}");
    assert!(!secret.join("planted").exists());
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("f");
    crate::sys::mkfifo(&fifo);
    let e = open_file(d.path(), &fifo).unwrap_err();
    assert_eq!(Refusal::of(&e), Some(Refusal::NotAFile));
}

#[test]
fn the_component_walk_refuses_what_openat2_refuses() {
    // Force the fallback for this process's later calls too: both paths must agree.
    #[cfg(target_os = "linux")]
    resolve::record(false);
    a_symlinked_folder_or_file_is_refused_at_every_step();
    a_fifo_is_refused_without_blocking();
    #[cfg(target_os = "linux")]
    resolve::record(true);
}

#[test]
fn remove_and_move_act_only_on_the_inode_given() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("in");
    std::fs::create_dir_all(root.join("a")).unwrap();
    let f = root.join("a/b.mp4");
    std::fs::write(&f, b"v1").unwrap();
    let v1 = FileId::of_path(&f).unwrap();
    // Replaced by rename: same size, same mtime, another inode.
    let tmp = root.join("a/.tmp");
    std::fs::write(&tmp, b"v2").unwrap();
    File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(v1.mtime_ns as u64))
        .unwrap();
    std::fs::rename(&tmp, &f).unwrap();
    assert!(!remove_if(&root, &f, &v1).unwrap());
    assert_eq!(
        move_if(&root, &f, &v1, &d.path().join("out"), "a/b.mp4").unwrap(),
        None
    );
    assert_eq!(std::fs::read(&f).unwrap(), b"v2");
    let v2 = FileId::of_path(&f).unwrap();
    std::fs::create_dir_all(d.path().join("out/a")).unwrap();
    std::fs::write(d.path().join("out/a/b.mp4"), b"old").unwrap();
    let to = move_if(&root, &f, &v2, &d.path().join("out"), "a/b.mp4")
        .unwrap()
        .unwrap();
    assert_eq!(to, d.path().join("out/a/b (1).mp4"));
    assert_eq!(std::fs::read(&to).unwrap(), b"v2");
    assert!(!f.exists());
}
