//! The path module against symlinks, `..`, absolute links and races.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use super::*;

fn project() -> (tempfile::TempDir, Dir) {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("p/sub/deeper")).unwrap();
    fs::write(tmp.path().join("p/file"), b"inside").unwrap();
    fs::write(tmp.path().join("p/sub/deeper/f"), b"deep").unwrap();
    fs::write(tmp.path().join("secret"), b"outside").unwrap();
    let dir = Dir::open(&tmp.path().join("p")).unwrap();
    (tmp, dir)
}

fn read(dir: &Dir, rel: &str) -> Result<Vec<u8>, FsError> {
    dir.read(Path::new(rel), 1 << 20)
}

fn is_symlink_error(e: &FsError, ends_with: &str) -> bool {
    matches!(e, FsError::Symlink(p) if p.ends_with(ends_with))
}

#[test]
fn plain_paths_open_and_dot_components_are_dropped() {
    let (_tmp, dir) = project();
    assert_eq!(read(&dir, "file").unwrap(), b"inside");
    assert_eq!(read(&dir, "./sub/./deeper/f").unwrap(), b"deep");
    assert_eq!(
        dir.open_dir(Path::new("")).unwrap().names().unwrap().len(),
        2
    );
}

#[test]
fn dot_dot_and_absolute_paths_are_refused_before_any_lookup() {
    let (_tmp, dir) = project();
    for rel in ["../secret", "sub/../../secret", "/etc/passwd", "sub/.."] {
        let e = read(&dir, rel).unwrap_err();
        assert!(matches!(e, FsError::Outside { .. }), "{rel}: {e}");
    }
}

#[test]
fn no_symlink_is_followed_anywhere_in_a_path() {
    let (tmp, dir) = project();
    let p = tmp.path().join("p");
    symlink(tmp.path().join("secret"), p.join("abs")).unwrap();
    symlink("../secret", p.join("up")).unwrap();
    symlink("file", p.join("inside")).unwrap();
    symlink(tmp.path(), p.join("dirlink")).unwrap();
    symlink("sub", p.join("sublink")).unwrap();
    symlink("/proc/self/root/etc/passwd", p.join("magic")).unwrap();
    for (rel, link) in [
        ("abs", "abs"),
        ("up", "up"),
        ("inside", "inside"),
        ("dirlink/secret", "dirlink"),
        ("sublink/deeper/f", "sublink"),
        ("magic", "magic"),
    ] {
        let e = read(&dir, rel).unwrap_err();
        assert!(is_symlink_error(&e, link), "{rel}: {e}");
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
    }
    // Directories too, and writes, and creation through a linked parent.
    assert!(is_symlink_error(
        &dir.open_dir(Path::new("sublink")).unwrap_err(),
        "sublink"
    ));
    let e = dir
        .open_with(Path::new("abs"), OFlags::WRONLY | OFlags::TRUNC, 0)
        .unwrap_err();
    assert!(is_symlink_error(&e, "abs"), "{e}");
    let e = dir.create_new(Path::new("dirlink/new"), 0o600).unwrap_err();
    assert!(is_symlink_error(&e, "dirlink"), "{e}");
    assert!(!tmp.path().join("new").exists());
    assert_eq!(fs::read(tmp.path().join("secret")).unwrap(), b"outside");
    // lstat reports a final link as one, and fails on a link on the way.
    let meta = dir.lstat(Path::new("abs")).unwrap().unwrap();
    assert_eq!(meta.kind, Kind::Symlink);
    assert!(is_symlink_error(
        &dir.lstat(Path::new("dirlink/secret")).unwrap_err(),
        "dirlink"
    ));
    assert!(dir.lstat(Path::new("missing/x")).unwrap().is_none());
}

#[test]
fn the_component_walk_refuses_the_same_links() {
    let (tmp, dir) = project();
    let p = tmp.path().join("p");
    symlink(tmp.path(), p.join("dirlink")).unwrap();
    symlink(tmp.path().join("secret"), p.join("abs")).unwrap();
    let parts = |s: &'static str| s.split('/').map(std::ffi::OsStr::new).collect::<Vec<_>>();
    let open = |s: &'static str, flags: OFlags| {
        dir.resolve_by_parts(
            "open",
            &parts(s),
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    assert!(open("sub/deeper/f", OFlags::RDONLY).is_ok());
    let e = open("dirlink/secret", OFlags::RDONLY).unwrap_err();
    assert!(is_symlink_error(&e, "dirlink"), "{e}");
    let e = open("abs", OFlags::RDONLY).unwrap_err();
    assert!(is_symlink_error(&e, "abs"), "{e}");
    let e = open("abs", OFlags::PATH).unwrap_err();
    assert!(is_symlink_error(&e, "abs"), "{e}");
}

#[test]
fn a_directory_swapped_for_a_link_between_calls() {
    let (tmp, dir) = project();
    let p = tmp.path().join("p");
    let sub = dir.open_dir(Path::new("sub")).unwrap();
    // The guest (or anyone) swaps the directory for a link to elsewhere.
    fs::rename(p.join("sub"), p.join("moved")).unwrap();
    symlink(tmp.path(), p.join("sub")).unwrap();
    // What was opened stays the directory it was.
    assert_eq!(read(&sub, "deeper/f").unwrap(), b"deep");
    // A new lookup through the name meets the link and stops.
    let e = read(&dir, "sub/secret").unwrap_err();
    assert!(is_symlink_error(&e, "sub"), "{e}");
    let e = dir.remove_tree(Path::new("sub/deeper")).unwrap_err();
    assert!(is_symlink_error(&e, "sub"), "{e}");
    // Removing the link removes the link, not what it points at.
    assert!(dir.remove_tree(Path::new("sub")).unwrap());
    assert_eq!(fs::read(tmp.path().join("secret")).unwrap(), b"outside");
    assert!(p.join("moved/deeper/f").exists());
}

#[test]
fn remove_tree_never_follows_links_inside() {
    let (tmp, dir) = project();
    let p = tmp.path().join("p");
    fs::create_dir(tmp.path().join("victim")).unwrap();
    fs::write(tmp.path().join("victim/keep"), b"k").unwrap();
    symlink(tmp.path().join("victim"), p.join("sub/deeper/link")).unwrap();
    assert!(dir.remove_tree(Path::new("sub")).unwrap());
    assert!(!p.join("sub").exists());
    assert!(tmp.path().join("victim/keep").exists());
    assert!(!dir.remove_tree(Path::new("sub")).unwrap(), "already gone");
}

#[test]
fn special_files_and_sizes() {
    let (tmp, dir) = project();
    let fifo = std::ffi::CString::new(tmp.path().join("p/fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: `fifo` is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    // A fifo is refused at once instead of blocking the open.
    let e = read(&dir, "fifo").unwrap_err();
    assert!(matches!(e, FsError::WrongType { .. }), "{e}");
    let e = read(&dir, "sub").unwrap_err();
    assert!(matches!(e, FsError::WrongType { .. }), "{e}");
    let e = dir.read(Path::new("file"), 3).unwrap_err();
    assert!(matches!(e, FsError::TooLarge { limit: 3, .. }), "{e}");
}

#[test]
fn ensure_dir_rename_and_private_dirs() {
    let (tmp, dir) = project();
    let made = dir.ensure_dir(Path::new("a/b/c"), 0o700).unwrap();
    assert_eq!(made.meta().unwrap().kind, Kind::Dir);
    symlink(tmp.path(), tmp.path().join("p/a/l")).unwrap();
    let e = dir.ensure_dir(Path::new("a/l/x"), 0o700).unwrap_err();
    assert!(is_symlink_error(&e, "a/l"), "{e}");
    assert!(!tmp.path().join("x").exists());
    dir.rename(Path::new("file"), &made, Path::new("moved"))
        .unwrap();
    assert_eq!(read(&dir, "a/b/c/moved").unwrap(), b"inside");
    fs::set_permissions(tmp.path().join("p/a"), fs::Permissions::from_mode(0o755)).unwrap();
    let a = dir.open_dir(Path::new("a")).unwrap();
    a.make_private().unwrap();
    let mode = fs::metadata(tmp.path().join("p/a"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn control_characters_in_names_are_escaped_in_messages() {
    let (tmp, dir) = project();
    let name = "x\u{1b}]0;pwned\u{7}";
    symlink("/etc", tmp.path().join("p").join(name)).unwrap();
    let e = read(&dir, name).unwrap_err().to_string();
    assert!(!e.contains('\u{1b}') && !e.contains('\u{7}'), "{e:?}");
    assert!(e.contains("x\\e]0;pwned\\x07"), "{e}");
}

#[test]
fn walk_lists_in_order_and_never_follows() {
    let (tmp, dir) = project();
    let p = tmp.path().join("p");
    symlink(tmp.path(), p.join("link")).unwrap();
    fs::write(p.join("a.b"), b"x").unwrap();
    let entries = walk(&dir, Path::new(""), &Filter::default()).unwrap();
    let names: Vec<String> = entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.rel).into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "",
            "a.b",
            "file",
            "link",
            "sub",
            "sub/deeper",
            "sub/deeper/f"
        ]
    );
    assert_eq!(
        entries[3].kind,
        EntryKind::Symlink(tmp.path().as_os_str().as_bytes().to_vec())
    );
    assert_eq!(entries[2].kind, EntryKind::File { size: 6 });
    // A source reached through a link is refused.
    let e = walk(&dir, Path::new("link/p"), &Filter::default()).unwrap_err();
    assert!(is_symlink_error(&e, "link"), "{e}");
    // A single file as the source: itself, unfiltered.
    let one = walk(
        &dir,
        Path::new("file"),
        &Filter::new(Some("^x$"), None).unwrap(),
    )
    .unwrap();
    assert_eq!((one.len(), one[0].rel.as_slice()), (1, &b""[..]));
    let e = walk(&dir, Path::new("nope"), &Filter::default()).unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains("nope"), "{e}");
}

#[test]
fn walk_filters_as_vagga() {
    let tmp = tempfile::tempdir().unwrap();
    for f in [
        "Cargo.toml",
        "docs/readme.md",
        "src/lib.rs",
        "src/main.rs",
        "src/sub/x.rs",
        "target/debug/y.rs",
    ] {
        let path = tmp.path().join(f);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, f).unwrap();
    }
    let dir = Dir::open(tmp.path()).unwrap();
    let rels = |include: Option<&str>, exclude: Option<&str>| {
        let filter = Filter::new(include, exclude).unwrap();
        walk(&dir, Path::new(""), &filter)
            .unwrap()
            .into_iter()
            .map(|e| {
                if e.rel.is_empty() {
                    ".".to_owned()
                } else {
                    String::from_utf8(e.rel).unwrap()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let all = ". Cargo.toml docs docs/readme.md src src/lib.rs src/main.rs src/sub src/sub/x.rs";
    assert_eq!(rels(None, Some("^target$")), all);
    let rs =
        ". src src/lib.rs src/main.rs src/sub src/sub/x.rs target target/debug target/debug/y.rs";
    assert_eq!(rels(Some(r"\.rs$"), None), rs);
    assert_eq!(
        rels(Some(r"\.rs$"), Some("^target|main")),
        ". src src/lib.rs src/sub src/sub/x.rs"
    );
    assert_eq!(rels(Some("^docs$"), None), ". docs");
    assert_eq!(rels(Some("^docs/"), None), ". docs docs/readme.md");
}
