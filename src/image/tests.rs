//! Tests of the whole path tar → erofs: fsck.erofs, dump.erofs and a loop mount when possible.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::test_reader::{fsck, have, run};
use super::*;

pub(super) const MTIME: u64 = 1_700_000_000;
/// A version 2 file capability: cap_net_raw, effective.
const CAP: &[u8] =
    b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

/// A tar archive written with raw headers, so tests can put "../" in names.
pub(super) struct Tar(pub(super) tar::Builder<Vec<u8>>);

impl Tar {
    pub(super) fn new() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }

    pub(super) fn entry(
        &mut self,
        kind: tar::EntryType,
        path: &str,
        mode: u32,
        link: &str,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        let name = &mut h.as_old_mut().name;
        assert!(path.len() < name.len(), "test path too long: {path}");
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            h.set_link_name(link).expect("link name");
        }
        h.set_cksum();
        self.0.append(&h, data).expect("append");
    }

    pub(super) fn owned(&mut self, path: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).expect("path");
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(MTIME + 1);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).expect("append");
    }

    pub(super) fn dir(&mut self, path: &str, mode: u32) {
        self.entry(tar::EntryType::Directory, path, mode, "", b"");
    }
    pub(super) fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.entry(tar::EntryType::Regular, path, mode, "", data);
    }
    pub(super) fn symlink(&mut self, path: &str, target: &str) {
        self.entry(tar::EntryType::Symlink, path, 0o777, target, b"");
    }
    pub(super) fn hardlink(&mut self, path: &str, target: &str) {
        self.entry(tar::EntryType::Link, path, 0o644, target, b"");
    }
    pub(super) fn device(&mut self, kind: tar::EntryType, path: &str, major: u32, minor: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).expect("path");
        h.set_entry_type(kind);
        h.set_mode(0o620);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        h.set_cksum();
        self.0.append(&h, &b""[..]).expect("append");
    }
    /// A PAX header applying to the next entry.
    pub(super) fn pax(&mut self, records: &[(&str, &[u8])]) {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = [b" ", key.as_bytes(), b"=", value, b"\n"].concat();
            let mut len = body.len() + 1;
            while (len.to_string().len() + body.len()) != len {
                len = len.to_string().len() + body.len();
            }
            data.extend_from_slice(len.to_string().as_bytes());
            data.extend_from_slice(&body);
        }
        self.entry(tar::EntryType::XHeader, "PaxHeader", 0o644, "", &data);
    }

    pub(super) fn write(self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, self.0.into_inner().expect("finish tar")).expect("write tar");
        path
    }
}

fn build(tarball: &Path) -> Result<PathBuf, ImageError> {
    let out = tarball.with_extension("erofs");
    let mut file = File::create(&out).expect("create image");
    write_erofs_from_tar(tarball, &mut file)?;
    Ok(out)
}

/// The value of xattr `name` of `path` (not following symlinks), if it has one.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let name = std::ffi::CString::new(name).expect("name");
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated and `buf` is valid for `buf.len()` bytes.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    buf.truncate(usize::try_from(n).ok()?);
    Some(buf)
}

/// A read-only loop mount, unmounted on drop.
pub(super) struct Mount(pub(super) PathBuf);

impl Mount {
    /// `None` (with a note) unless we are root and the kernel mounts erofs.
    pub(super) fn new(image: &Path) -> Option<Mount> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("note: not root, skipping the loop mount of {image:?}");
            return None;
        }
        let dir = image.with_extension("mnt");
        fs::create_dir_all(&dir).expect("mkdir mnt");
        let out = Command::new("mount")
            .args(["-t", "erofs", "-o", "loop,ro"])
            .arg(image)
            .arg(&dir)
            .output()
            .expect("spawn mount");
        if !out.status.success() {
            eprintln!(
                "note: cannot mount erofs here, skipping: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Mount(dir))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

pub(super) fn sample(dir: &Path) -> PathBuf {
    let mut t = Tar::new();
    t.dir("./", 0o755);
    t.dir("./etc/", 0o755);
    t.file("./etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    t.owned("etc/shadow", 0o640, 0, 42, b"root:*:1::::::\n");
    t.owned("home/user/big", 0o4755, 1000, 1000, &big());
    t.file("./empty", 0o600, b"");
    t.dir("./tmp/", 0o1777);
    t.symlink("./bin/sh", "/bin/busybox");
    t.symlink("./usr/bin/up", "../../etc/passwd");
    t.file("./bin/busybox", 0o755, b"\x7fELF fake");
    t.hardlink("./bin/ash", "./bin/busybox");
    t.hardlink("bin/hush", "bin/busybox");
    t.device(tar::EntryType::Char, "dev/null", 1, 3);
    t.device(tar::EntryType::Block, "dev/vdb", 259, 0x12345);
    t.entry(tar::EntryType::Fifo, "./dev/fifo", 0o600, "", b"");
    t.pax(&[
        ("SCHILY.xattr.security.capability", CAP),
        ("SCHILY.xattr.user.note", b"hello"),
        ("mtime", b"1600000000.25"),
    ]);
    t.file("./bin/ping", 0o755, b"ping");
    for i in 0..1000 {
        t.file(
            &format!("./many/file-{i:04}"),
            0o644,
            format!("{i}\n").as_bytes(),
        );
    }
    // Overrides: a file replaced by a symlink, a directory's metadata updated.
    t.file("./etc/motd", 0o644, b"old");
    t.symlink("./etc/motd", "passwd");
    t.dir("./etc", 0o750);
    t.write(dir, "sample.tar")
}

fn big() -> Vec<u8> {
    (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect()
}

#[test]
fn sample_passes_fsck_and_mounts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = build(&sample(dir.path())).expect("build");
    assert_eq!(fs::metadata(&image).expect("stat").len() % 4096, 0);
    fsck(&image);
    if have("dump.erofs") {
        let sb = run(Command::new("dump.erofs").arg("-s").arg(&image));
        assert!(sb.contains("Filesystem inode count"), "{sb}");
        let bin = run(Command::new("dump.erofs")
            .arg("--path=/bin/busybox")
            .arg(&image));
        assert!(bin.contains("Links: 3"), "{bin}");
    }
    let Some(mnt) = Mount::new(&image) else {
        return;
    };
    let m = |p: &str| mnt.0.join(p);
    let meta = |p: &str| fs::symlink_metadata(m(p)).expect(p);

    assert_eq!(
        fs::read(m("etc/passwd")).expect("read"),
        b"root:x:0:0:root:/root:/bin/sh\n"
    );
    assert_eq!(fs::read(m("home/user/big")).expect("read"), big());
    assert_eq!(meta("home/user/big").mode() & 0o7777, 0o4755);
    assert_eq!(
        (meta("home/user/big").uid(), meta("home/user/big").gid()),
        (1000, 1000)
    );
    assert_eq!(meta("home/user").mode() & 0o7777, 0o755);
    assert_eq!(
        (meta("etc/shadow").gid(), meta("etc/shadow").mode() & 0o777),
        (42, 0o640)
    );
    assert_eq!(meta("etc/passwd").mtime(), MTIME as i64);
    assert_eq!(meta("empty").len(), 0);
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(meta("etc").mode() & 0o7777, 0o750);
    assert_eq!(
        fs::read_link(m("bin/sh")).expect("link"),
        Path::new("/bin/busybox")
    );
    assert_eq!(fs::read_to_string(m("usr/bin/up")).expect("up").len(), 30);
    assert_eq!(
        fs::read_link(m("etc/motd")).expect("motd"),
        Path::new("passwd")
    );
    let (bb, ash) = (meta("bin/busybox"), meta("bin/ash"));
    assert_eq!((bb.ino(), bb.nlink()), (ash.ino(), 3));
    assert_eq!(meta("bin/hush").ino(), bb.ino());
    assert!(meta("dev/null").file_type().is_char_device());
    assert_eq!(meta("dev/null").rdev(), libc::makedev(1, 3));
    assert!(meta("dev/vdb").file_type().is_block_device());
    assert_eq!(meta("dev/vdb").rdev(), libc::makedev(259, 0x12345));
    assert!(meta("dev/fifo").file_type().is_fifo());
    assert_eq!(meta("bin/ping").mtime(), 1_600_000_000);
    assert_eq!(meta("bin/ping").mtime_nsec(), 250_000_000);
    assert_eq!(meta("etc").nlink(), 2);
    assert_eq!(meta("").nlink(), 2 + 7); // bin dev etc home many tmp usr
    let many: Vec<_> = fs::read_dir(m("many")).expect("many").collect();
    assert_eq!(many.len(), 1000);
    assert_eq!(
        fs::read_to_string(m("many/file-0999")).expect("read"),
        "999\n"
    );
    assert_eq!(
        fs::read_to_string(m("many/file-0000")).expect("read"),
        "0\n"
    );
    assert_eq!(
        xattr(&m("bin/ping"), "user.note").as_deref(),
        Some(&b"hello"[..])
    );
    let cap = xattr(&m("bin/ping"), "security.capability");
    assert_eq!(cap.as_deref(), Some(CAP));
    assert_eq!(xattr(&m("etc/passwd"), "user.note"), None);
}

#[test]
fn output_is_reproducible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tarball = sample(dir.path());
    let a = fs::read(build(&tarball).expect("build")).expect("read");
    // Writing over an existing, larger file gives the same bytes too.
    let out = dir.path().join("again.erofs");
    fs::write(&out, vec![0xAAu8; a.len() + 10_000]).expect("prefill");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&out)
        .expect("open");
    write_erofs_from_tar(&tarball, &mut file).expect("build again");
    assert!(a == fs::read(&out).expect("read"), "two builds differ");
}

fn rejected(build_tar: impl FnOnce(&mut Tar), expect: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = Tar::new();
    build_tar(&mut t);
    let tarball = t.write(dir.path(), "bad.tar");
    let err = build(&tarball).expect_err("should be rejected");
    let text = err.to_string();
    assert!(text.contains(expect), "{text:?} lacks {expect:?}");
    assert!(text.contains("bad.tar"), "{text:?} lacks the tarball");
    assert!(!text.contains('\n'));
}

#[test]
fn bad_archives_are_rejected() {
    rejected(
        |t| t.file("../evil", 0o644, b"x"),
        "\"../evil\": the path has a \"..\"",
    );
    rejected(|t| t.file("a/../../b", 0o644, b"x"), "\"a/../../b\"");
    rejected(|t| t.symlink("a/b", "../../etc"), "climbs above the root");
    rejected(|t| t.symlink("lnk", "/../x"), "climbs above the root");
    rejected(
        |t| t.hardlink("lnk", "missing"),
        "not a regular file earlier",
    );
    rejected(
        |t| t.hardlink("lnk", "../outside"),
        "hard link target \"../outside\"",
    );
    rejected(
        |t| {
            t.dir("d/", 0o755);
            t.hardlink("lnk", "d");
        },
        "not a regular file earlier",
    );
    rejected(
        |t| {
            t.file("f", 0o644, b"x");
            t.file("f/g", 0o644, b"y");
        },
        "parent \"f\" is not a directory",
    );
    rejected(|t| t.file("./", 0o644, b"x"), "root of the archive");
    rejected(
        |t| t.entry(tar::EntryType::new(b'V'), "vol", 0o644, "", b""),
        "unsupported entry type",
    );
    rejected(
        |t| {
            t.pax(&[("SCHILY.xattr.system.nfs4_acl", b"x")]);
            t.file("f", 0o644, b"x");
        },
        "cannot be stored in erofs",
    );
}

#[test]
fn errors_name_the_tarball() {
    let mut out = tempfile::tempfile().expect("tempfile");
    let err =
        write_erofs_from_tar(Path::new("/nonexistent/rootfs.tar"), &mut out).expect_err("missing");
    assert_eq!(
        err.to_string(),
        "cannot open tarball /nonexistent/rootfs.tar"
    );
}

#[test]
fn large_root_and_long_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = Tar::new();
    // Too many names for the root to sit inline in block 0.
    for i in 0..300 {
        t.file(&format!("root-entry-{i:03}"), 0o644, b"x");
    }
    let long = "n".repeat(255);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(4);
    t.0.append_data(&mut h, format!("d/{long}"), &b"long"[..])
        .expect("long name");
    let tarball = t.write(dir.path(), "root.tar");
    let image = build(&tarball).expect("build");
    fsck(&image);
    let Some(mnt) = Mount::new(&image) else {
        return;
    };
    assert_eq!(fs::read_dir(&mnt.0).expect("ls").count(), 301);
    assert_eq!(
        fs::read(mnt.0.join("d").join(&long)).expect("read"),
        b"long"
    );

    let mut t = Tar::new();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    t.0.append_data(&mut h, "n".repeat(256), &b""[..])
        .expect("longer name");
    let err = build(&t.write(dir.path(), "long.tar")).expect_err("256-byte name");
    assert!(err.to_string().contains("longer than 255 bytes"), "{err}");
}
