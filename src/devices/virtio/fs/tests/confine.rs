//! Tests of the confinement rules: names, symlinks, hidden names,
//! read-only shares, cross-share operations, special files and set-id bits.

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::super::fuse::{self, Wire};
use super::{cat, cs, Fixture, RO, RW};

/// Every way a guest can send a bad name.
const BAD_NAMES: &[(&[u8], i32)] = &[
    (b"..\0", libc::EINVAL),
    (b".\0", libc::EINVAL),
    (b"\0", libc::EINVAL),
    (b"a/b\0", libc::EINVAL),
    (b"/\0", libc::EINVAL),
    (b"../outside.txt\0", libc::EINVAL),
    (b"no-nul", libc::EINVAL),
    (b"", libc::EINVAL),
];

#[test]
fn bad_names_are_refused_everywhere() {
    let mut f = Fixture::new(&[RW]);
    let top = f.share(0);
    std::fs::write(f.path(0, "file"), b"").unwrap();
    let file = f.lookup(top, "file").unwrap().nodeid;
    let mut long = vec![b'x'; 256];
    long.push(0);
    let mkdir = fuse::MkdirIn {
        mode: 0o755,
        umask: 0,
    }
    .to_bytes();
    let mknod = fuse::MknodIn {
        mode: libc::S_IFREG | 0o644,
        ..Default::default()
    }
    .to_bytes();
    let create = fuse::CreateIn {
        flags: libc::O_RDWR as u32,
        mode: 0o644,
        ..Default::default()
    }
    .to_bytes();
    let link = fuse::LinkIn { oldnodeid: file }.to_bytes();
    let rename = fuse::RenameIn { newdir: top }.to_bytes();
    let mut cases: Vec<(&[u8], i32)> = BAD_NAMES.to_vec();
    cases.push((&long, libc::ENAMETOOLONG));
    for (name, errno) in cases {
        let requests: Vec<(u32, Vec<u8>)> = vec![
            (fuse::LOOKUP, name.to_vec()),
            (fuse::MKDIR, cat(&[&mkdir, name])),
            (fuse::MKNOD, cat(&[&mknod, name])),
            (fuse::CREATE, cat(&[&create, name])),
            (fuse::SYMLINK, cat(&[name, &cs("target")])),
            (fuse::LINK, cat(&[&link, name])),
            (fuse::UNLINK, name.to_vec()),
            (fuse::RMDIR, name.to_vec()),
            (fuse::RENAME, cat(&[&rename, name, &cs("file2")])),
            (fuse::RENAME, cat(&[&rename, &cs("file"), name])),
        ];
        for (op, args) in requests {
            assert_eq!(
                f.call(op, top, &args),
                Err(errno),
                "op {op} name {:?}",
                String::from_utf8_lossy(name)
            );
        }
    }
    assert!(f.path(0, "file").exists());
    assert_eq!(
        std::fs::read(f.base.path().join("outside.txt")).unwrap(),
        b"outside"
    );
}

#[test]
fn symlinks_are_never_followed() {
    let mut f = Fixture::new(&[RW]);
    let top = f.share(0);
    let passwd_before = std::fs::symlink_metadata("/etc/passwd").map(|m| m.mtime());
    let up = f.symlink(top, "up", "..").unwrap().nodeid;
    let etc = f.symlink(top, "etc", "/etc").unwrap().nodeid;
    let out = f.symlink(top, "out", "../outside.txt").unwrap().nodeid;
    assert_eq!(
        std::fs::read_link(f.path(0, "etc")).unwrap().to_str(),
        Some("/etc")
    );
    for link in [up, etc] {
        assert_eq!(f.lookup(link, "passwd").unwrap_err(), libc::ENOTDIR);
        assert_eq!(f.lookup(link, "outside.txt").unwrap_err(), libc::ENOTDIR);
        assert_eq!(f.mkdir(link, "x", 0o755).unwrap_err(), libc::ENOTDIR);
        assert_eq!(
            f.create(link, "x", libc::O_WRONLY, 0o644).unwrap_err(),
            libc::ENOTDIR
        );
        assert_eq!(f.opendir(link).unwrap_err(), libc::ENOTDIR);
        assert_eq!(
            f.call(fuse::UNLINK, link, &cs("passwd")),
            Err(libc::ENOTDIR)
        );
    }
    for link in [up, etc, out] {
        assert_eq!(f.open(link, libc::O_RDONLY).unwrap_err(), libc::EACCES);
        assert_eq!(f.open(link, libc::O_WRONLY).unwrap_err(), libc::EACCES);
        let truncate = fuse::SetattrIn {
            valid: fuse::FATTR_SIZE,
            ..Default::default()
        };
        assert_eq!(f.setattr(link, truncate).unwrap_err(), libc::EINVAL);
        let attr = f.getattr(link).unwrap();
        assert_eq!(attr.mode & libc::S_IFMT, libc::S_IFLNK);
    }
    // CREATE over an existing symlink neither follows nor replaces it.
    for flags in [libc::O_WRONLY, libc::O_WRONLY | libc::O_TRUNC] {
        assert!(f.create(top, "out", flags, 0o644).is_err());
    }
    // A hard link to a symlink is a link to the symlink itself.
    let hard = f.link(out, top, "out2").unwrap();
    assert_eq!(hard.nodeid, out);
    assert!(std::fs::symlink_metadata(f.path(0, "out2"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read(f.base.path().join("outside.txt")).unwrap(),
        b"outside"
    );
    let passwd_after = std::fs::symlink_metadata("/etc/passwd").map(|m| m.mtime());
    assert_eq!(passwd_before.ok(), passwd_after.ok());
}

#[test]
fn hidden_names_are_invisible_and_uncreatable() {
    let mut f = Fixture::new(&[RW]);
    let top = f.share(0);
    std::fs::create_dir(f.path(0, ".cella")).unwrap();
    std::fs::write(f.path(0, ".cella/secret"), b"s").unwrap();
    std::fs::write(f.path(0, "visible"), b"v").unwrap();
    assert_eq!(f.lookup(top, ".cella").unwrap_err(), libc::ENOENT);
    assert_eq!(f.names(top), ["visible"]);
    let plus = f.list(top, true, 4096).unwrap();
    assert!(plus.iter().all(|(n, _)| n != ".cella"));
    assert_eq!(f.mkdir(top, ".cella", 0o755).unwrap_err(), libc::EPERM);
    assert_eq!(
        f.create(top, ".cella", libc::O_WRONLY, 0o644).unwrap_err(),
        libc::EPERM
    );
    assert_eq!(
        f.mknod(top, ".cella", libc::S_IFIFO | 0o644).unwrap_err(),
        libc::EPERM
    );
    assert_eq!(f.symlink(top, ".cella", "x").unwrap_err(), libc::EPERM);
    let visible = f.lookup(top, "visible").unwrap().nodeid;
    assert_eq!(f.link(visible, top, ".cella").unwrap_err(), libc::EPERM);
    assert_eq!(f.rename(top, "visible", top, ".cella"), Err(libc::EPERM));
    assert_eq!(f.rename(top, ".cella", top, "stolen"), Err(libc::EPERM));
    assert_eq!(
        f.rename2(top, "visible", top, ".cella", fuse::RENAME_EXCHANGE),
        Err(libc::EPERM)
    );
    assert_eq!(f.call(fuse::UNLINK, top, &cs(".cella")), Err(libc::ENOENT));
    assert_eq!(f.call(fuse::RMDIR, top, &cs(".cella")), Err(libc::ENOENT));
    assert_eq!(std::fs::read(f.path(0, ".cella/secret")).unwrap(), b"s");
    // Only at the top: deeper down the name is ordinary.
    let sub = f.mkdir(top, "sub", 0o755).unwrap().nodeid;
    let deep = f.mkdir(sub, ".cella", 0o755).unwrap().nodeid;
    assert_eq!(f.lookup(sub, ".cella").unwrap().nodeid, deep);
    assert_eq!(f.names(sub), [".cella"]);
}

#[test]
fn read_only_shares_refuse_every_change() {
    let mut f = Fixture::new(&[RO]);
    std::fs::write(f.path(0, "file"), b"data").unwrap();
    std::fs::create_dir(f.path(0, "dir")).unwrap();
    let top = f.share(0);
    let file = f.lookup(top, "file").unwrap().nodeid;
    let dir = f.lookup(top, "dir").unwrap().nodeid;
    let rofs = Err(libc::EROFS);
    assert_eq!(f.mkdir(top, "x", 0o755).map(|_| ()), rofs);
    assert_eq!(f.mknod(top, "x", libc::S_IFREG | 0o644).map(|_| ()), rofs);
    assert_eq!(f.create(top, "x", libc::O_WRONLY, 0o644).map(|_| ()), rofs);
    assert_eq!(
        f.create(top, "file", libc::O_RDONLY, 0o644).map(|_| ()),
        rofs
    );
    assert_eq!(f.symlink(top, "x", "y").map(|_| ()), rofs);
    assert_eq!(f.link(file, top, "x").map(|_| ()), rofs);
    assert_eq!(f.call(fuse::UNLINK, top, &cs("file")).map(|_| ()), rofs);
    assert_eq!(f.call(fuse::RMDIR, top, &cs("dir")).map(|_| ()), rofs);
    assert_eq!(f.rename(top, "file", dir, "file").map(|_| ()), rofs);
    assert_eq!(f.rename2(top, "file", top, "dir", 2).map(|_| ()), rofs);
    for valid in [
        fuse::FATTR_MODE,
        fuse::FATTR_UID,
        fuse::FATTR_SIZE,
        fuse::FATTR_MTIME,
    ] {
        let a = fuse::SetattrIn {
            valid,
            mode: 0o777,
            ..Default::default()
        };
        assert_eq!(f.setattr(file, a).map(|_| ()), rofs);
        assert_eq!(f.setattr(top, a).map(|_| ()), rofs);
    }
    for flags in [
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_RDONLY | libc::O_TRUNC,
        libc::O_RDONLY | libc::O_APPEND,
    ] {
        assert_eq!(f.open(file, flags).map(|_| ()), rofs);
    }
    let fh = f.open(file, libc::O_RDONLY).unwrap();
    assert_eq!(f.read(fh, 0, 10).unwrap(), b"data");
    assert_eq!(f.write(fh, 0, b"x").map(|_| ()), rofs);
    let grow = fuse::FallocateIn {
        fh,
        length: 10,
        ..Default::default()
    };
    assert_eq!(
        f.call(fuse::FALLOCATE, file, &grow.to_bytes()).map(|_| ()),
        rofs
    );
    let a = fuse::SetxattrIn { size: 1, flags: 0 };
    let set = cat(&[&a.to_bytes(), &cs("user.k"), b"v"]);
    assert_eq!(f.call(fuse::SETXATTR, file, &set).map(|_| ()), rofs);
    assert_eq!(
        f.call(fuse::REMOVEXATTR, file, &cs("user.k")).map(|_| ()),
        rofs
    );
    let w = fuse::AccessIn {
        mask: libc::W_OK as u32,
        padding: 0,
    };
    assert_eq!(f.call(fuse::ACCESS, file, &w.to_bytes()).map(|_| ()), rofs);
    assert_eq!(std::fs::read(f.path(0, "file")).unwrap(), b"data");
    assert!(f.path(0, "dir").is_dir());
    assert_eq!(f.names(top), ["dir", "file"]);
}

#[test]
fn cross_share_rename_and_link_are_exdev() {
    let mut f = Fixture::new(&[RW, RW]);
    let a = f.share(0);
    let b = f.share(1);
    std::fs::write(f.path(0, "f"), b"").unwrap();
    let file = f.lookup(a, "f").unwrap().nodeid;
    assert_eq!(f.rename(a, "f", b, "f"), Err(libc::EXDEV));
    assert_eq!(
        f.rename2(a, "f", b, "f", fuse::RENAME_NOREPLACE),
        Err(libc::EXDEV)
    );
    assert_eq!(f.link(file, b, "f").unwrap_err(), libc::EXDEV);
    assert!(!f.path(1, "f").exists());
}

#[test]
fn special_files_are_never_opened() {
    let mut f = Fixture::new(&[RW]);
    let top = f.share(0);
    assert_eq!(
        f.mknod(top, "chr", libc::S_IFCHR | 0o666).unwrap_err(),
        libc::EPERM
    );
    assert_eq!(
        f.mknod(top, "blk", libc::S_IFBLK | 0o666).unwrap_err(),
        libc::EPERM
    );
    assert_eq!(
        f.mknod(top, "dir", libc::S_IFDIR | 0o755).unwrap_err(),
        libc::EINVAL
    );
    assert!(!f.path(0, "chr").exists() && !f.path(0, "blk").exists());
    let sock = f.mknod(top, "sock", libc::S_IFSOCK | 0o644).unwrap();
    assert_eq!(sock.attr.mode & libc::S_IFMT, libc::S_IFSOCK);
    assert_eq!(f.open(sock.nodeid, libc::O_RDWR).unwrap_err(), libc::EACCES);
    let made = f.mknod(top, "fifo2", libc::S_IFIFO | 0o644).unwrap();
    assert_eq!(
        f.open(made.nodeid, libc::O_RDONLY).unwrap_err(),
        libc::EACCES
    );
    // A fifo made on the host: lookup works, open is refused, and CREATE
    // over it neither opens nor blocks.
    let path = CString::new(f.path(0, "fifo").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid C string path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
    let fifo = f.lookup(top, "fifo").unwrap();
    assert_eq!(fifo.attr.mode & libc::S_IFMT, libc::S_IFIFO);
    for flags in [
        libc::O_RDONLY,
        libc::O_WRONLY,
        libc::O_RDWR | libc::O_NONBLOCK,
    ] {
        assert_eq!(f.open(fifo.nodeid, flags).unwrap_err(), libc::EACCES);
    }
    assert_eq!(
        f.create(top, "fifo", libc::O_RDONLY, 0o644).unwrap_err(),
        libc::EACCES
    );
    assert_eq!(
        f.create(top, "fifo", libc::O_RDONLY | libc::O_EXCL, 0o644)
            .unwrap_err(),
        libc::EEXIST
    );
    // A device node already on the host (as root, we can make one).
    let null = f.path(0, "null");
    let cnull = CString::new(null.into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid C string path.
    if unsafe { libc::mknod(cnull.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) } == 0 {
        let dev = f.lookup(top, "null").unwrap();
        assert_eq!(dev.attr.rdev, 0x103);
        assert_eq!(f.open(dev.nodeid, libc::O_RDWR).unwrap_err(), libc::EACCES);
        assert_eq!(
            f.create(top, "null", libc::O_RDWR, 0o644).unwrap_err(),
            libc::EACCES
        );
    }
    // Directories open only with OPENDIR.
    assert_eq!(f.open(top, libc::O_RDONLY).unwrap_err(), libc::EISDIR);
}

#[test]
fn setid_bits_are_stripped_from_files() {
    let mut f = Fixture::new(&[RW]);
    let top = f.share(0);
    let mode = |f: &Fixture, rel: &str| std::fs::metadata(f.path(0, rel)).unwrap().mode() & 0o7777;
    let (created, _) = f.create(top, "c", libc::O_WRONLY, 0o6755).unwrap();
    assert_eq!(created.attr.mode & 0o7777, 0o755);
    assert_eq!(mode(&f, "c"), 0o755);
    let made = f.mknod(top, "m", libc::S_IFREG | 0o6755).unwrap();
    assert_eq!(made.attr.mode & 0o7777, 0o755);
    assert_eq!(mode(&f, "m"), 0o755);
    let chmod = fuse::SetattrIn {
        valid: fuse::FATTR_MODE,
        mode: 0o6777,
        ..Default::default()
    };
    assert_eq!(
        f.setattr(created.nodeid, chmod).unwrap().mode & 0o7777,
        0o777
    );
    assert_eq!(mode(&f, "c"), 0o777);
    // Directories keep set-group-ID (inheritance of the group).
    let dir = f.mkdir(top, "d", 0o755).unwrap().nodeid;
    let chmod = fuse::SetattrIn {
        valid: fuse::FATTR_MODE,
        mode: 0o2775,
        ..Default::default()
    };
    assert_eq!(f.setattr(dir, chmod).unwrap().mode & 0o7777, 0o2775);
    assert_eq!(
        std::fs::metadata(f.path(0, "d"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o2775
    );
    // CREATE never chowns: the file is this process's.
    // SAFETY: geteuid cannot fail.
    assert_eq!(std::fs::metadata(f.path(0, "c")).unwrap().uid(), unsafe {
        libc::geteuid()
    });
}

#[test]
fn malformed_requests_are_einval() {
    let mut f = Fixture::new(&[RW]);
    let top = f.share(0);
    let (_, open) = f.create(top, "f", libc::O_RDWR, 0o644).unwrap();
    // Data shorter or longer than the WRITE's size.
    let w = fuse::WriteIn {
        fh: open.fh,
        size: 4,
        ..Default::default()
    };
    assert_eq!(
        f.call(fuse::WRITE, 0, &cat(&[&w.to_bytes(), b"abc"])),
        Err(libc::EINVAL)
    );
    assert_eq!(
        f.call(fuse::WRITE, 0, &cat(&[&w.to_bytes(), b"abcde"])),
        Err(libc::EINVAL)
    );
    // Fixed arguments cut short.
    let setattr = fuse::SetattrIn::default().to_bytes();
    assert_eq!(
        f.call(fuse::SETATTR, top, &setattr[..80]),
        Err(libc::EINVAL)
    );
    assert_eq!(f.call(fuse::READ, 0, &[0; 39]), Err(libc::EINVAL));
    assert_eq!(f.call(fuse::MKDIR, top, &[0; 4]), Err(libc::EINVAL));
    assert_eq!(
        f.call(fuse::RENAME, top, &cat(&[&[0; 8], &cs("f")])),
        Err(libc::EINVAL)
    );
    // A header whose lengths lie.
    let mut req = super::request(fuse::GETATTR, top, 77, &[0; 16]);
    req[0..4].copy_from_slice(&100u32.to_le_bytes());
    let out = f.server.handle(&req, 4096).unwrap();
    assert_eq!(&out[4..8], &(-libc::EINVAL).to_le_bytes());
    assert_eq!(&out[8..16], &77u64.to_le_bytes());
    req[0..4].copy_from_slice(&56u32.to_le_bytes());
    req[36..38].copy_from_slice(&3u16.to_le_bytes()); // 24 bytes of extensions
    let out = f.server.handle(&req, 4096).unwrap();
    assert_eq!(&out[4..8], &(-libc::EINVAL).to_le_bytes());
    let out = f.server.handle(&req[..20], 4096).unwrap();
    assert_eq!(out.len(), 16);
    assert_eq!(&out[4..8], &(-libc::EINVAL).to_le_bytes());
    // Unknown nodes and handles.
    assert_eq!(f.getattr(999).unwrap_err(), libc::ENOENT);
    assert_eq!(f.getattr(0).unwrap_err(), libc::ENOENT);
    assert_eq!(f.read(999, 0, 10).unwrap_err(), libc::EBADF);
    let dir_fh = f.opendir(top).unwrap();
    assert_eq!(f.read(dir_fh, 0, 10).unwrap_err(), libc::EBADF);
    let r = fuse::ReadIn {
        fh: open.fh,
        size: 4096,
        ..Default::default()
    };
    assert_eq!(
        f.call(fuse::READDIR, top, &r.to_bytes()),
        Err(libc::ENOTDIR)
    );
}

#[test]
fn ownership_is_mapped() {
    let mut f = Fixture::new(&[RW]);
    // SAFETY: geteuid and getegid cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let top = f.share(0);
    let (file, _) = f.create(top, "f", libc::O_RDWR, 0o644).unwrap();
    assert_eq!((file.attr.uid, file.attr.gid), (0, 0));
    if euid != 0 {
        return; // the rest plays a non-root server as root
    }
    std::os::unix::fs::chown(f.path(0, "f"), Some(4321), Some(4322)).unwrap();
    assert_eq!(f.getattr(file.nodeid).unwrap().uid, 4321);
    // As a server running as 1000:1000, the guest sees those as root and
    // everything else as nobody, and can only give files to root.
    f.server.euid = 1000;
    f.server.egid = 1000;
    let attr = f.getattr(file.nodeid).unwrap();
    assert_eq!((attr.uid, attr.gid), (65534, 65534));
    let chown = |uid, gid| fuse::SetattrIn {
        valid: fuse::FATTR_UID | fuse::FATTR_GID,
        uid,
        gid,
        ..Default::default()
    };
    assert_eq!(
        f.setattr(file.nodeid, chown(5, 0)).unwrap_err(),
        libc::EPERM
    );
    assert_eq!(
        f.setattr(file.nodeid, chown(0, 5)).unwrap_err(),
        libc::EPERM
    );
    assert_eq!(std::fs::metadata(f.path(0, "f")).unwrap().uid(), 4321);
    let attr = f.setattr(file.nodeid, chown(0, 0)).unwrap();
    assert_eq!((attr.uid, attr.gid), (0, 0));
    let meta = std::fs::metadata(f.path(0, "f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    f.server.euid = euid;
    f.server.egid = egid;
}
