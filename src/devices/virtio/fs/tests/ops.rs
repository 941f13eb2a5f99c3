//! Tests of the FUSE operations working as a file system: the handshake,
//! the synthetic root, and round trips of every supported operation.

use std::os::unix::fs::MetadataExt;

use super::super::fuse::{self, Wire, ROOT_ID};
use super::{cat, cs, Fixture, RO, ROOM, RW};

#[test]
fn init_negotiates() {
    let mut f = Fixture::uninit(&[RW], true);
    // Nothing is served before INIT.
    assert_eq!(f.lookup(ROOT_ID, "0").unwrap_err(), libc::EIO);
    let offered = fuse::ASYNC_READ
        | fuse::POSIX_LOCKS
        | fuse::FLOCK_LOCKS
        | fuse::DO_READDIRPLUS
        | fuse::WRITEBACK_CACHE
        | fuse::MAX_PAGES
        | fuse::INIT_EXT
        | fuse::SECURITY_CTX
        | fuse::DIRECT_IO_ALLOW_MMAP;
    let out = f.init_with(41, offered).unwrap();
    assert_eq!((out.major, out.minor), (7, 38));
    assert_eq!(out.max_readahead, 128 << 10);
    assert_eq!(out.max_write, 1 << 20);
    assert_eq!(out.max_pages, 256);
    assert_eq!(out.time_gran, 1);
    let agreed = out.flags as u64 | (out.flags2 as u64) << 32;
    assert_eq!(
        agreed,
        fuse::ASYNC_READ
            | fuse::DO_READDIRPLUS
            | fuse::MAX_PAGES
            | fuse::INIT_EXT
            | fuse::DIRECT_IO_ALLOW_MMAP
    );
    assert_eq!(f.share(0), f.share(0));

    // Without direct I/O, no mmap flag; an old minor gets its old reply.
    let mut f = Fixture::uninit(&[RW], false);
    let out = f.init_with(41, offered).unwrap();
    assert_eq!(out.flags2, 0);
    let reply = f
        .call(
            fuse::INIT,
            0,
            &fuse::InitInCompat {
                major: 7,
                minor: 22,
                max_readahead: 0,
                flags: 0,
            }
            .to_bytes(),
        )
        .unwrap();
    assert_eq!(reply.len(), 24);
    assert_eq!(&reply[4..8], &22u32.to_le_bytes());
    let old = fuse::InitInCompat {
        major: 6,
        minor: 40,
        max_readahead: 0,
        flags: 0,
    };
    assert_eq!(f.call(fuse::INIT, 0, &old.to_bytes()), Err(libc::EPROTO));
    let short = &old.to_bytes()[..12];
    assert_eq!(f.call(fuse::INIT, 0, short), Err(libc::EINVAL));
}

#[test]
fn root_is_synthetic_and_read_only() {
    let mut f = Fixture::new(&[RW, RO]);
    let attr = f.getattr(ROOT_ID).unwrap();
    assert_eq!(attr.mode, libc::S_IFDIR | 0o555);
    assert_eq!((attr.uid, attr.gid, attr.nlink), (0, 0, 4));
    let top = f.lookup(ROOT_ID, "1").unwrap();
    assert_eq!(top.attr.mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(
        top.attr.ino,
        std::fs::metadata(f.path(1, "")).unwrap().ino()
    );
    for bad in ["2", "00", "01", "+1", "-0", "x", "99999999999999999999"] {
        assert_eq!(f.lookup(ROOT_ID, bad).unwrap_err(), libc::ENOENT, "{bad}");
    }
    assert_eq!(f.mkdir(ROOT_ID, "2", 0o755).unwrap_err(), libc::EPERM);
    assert_eq!(f.create(ROOT_ID, "x", 2, 0o644).unwrap_err(), libc::EPERM);
    assert_eq!(f.symlink(ROOT_ID, "x", "0").unwrap_err(), libc::EPERM);
    assert_eq!(
        f.rename(ROOT_ID, "0", ROOT_ID, "5").unwrap_err(),
        libc::EPERM
    );
    assert_eq!(f.call(fuse::UNLINK, ROOT_ID, &cs("0")), Err(libc::EPERM));
    assert_eq!(f.call(fuse::RMDIR, ROOT_ID, &cs("1")), Err(libc::EPERM));
    assert_eq!(f.open(ROOT_ID, libc::O_RDONLY).unwrap_err(), libc::EISDIR);
    let chmod = fuse::SetattrIn {
        valid: fuse::FATTR_MODE,
        mode: 0o777,
        ..Default::default()
    };
    assert_eq!(f.setattr(ROOT_ID, chmod).unwrap_err(), libc::EPERM);
    let listing = f.list(ROOT_ID, false, 4096).unwrap();
    let names: Vec<&str> = listing.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [".", "..", "0", "1"]);
    // READDIRPLUS of the root: the shares' nodes, one entry per request.
    let plus = f.list(ROOT_ID, true, 160).unwrap();
    assert_eq!(plus.len(), 4);
    assert_eq!(plus[0].1, 0);
    assert_eq!(plus[3].1, top.nodeid);
    let w = fuse::AccessIn {
        mask: libc::W_OK as u32,
        padding: 0,
    };
    assert_eq!(
        f.call(fuse::ACCESS, ROOT_ID, &w.to_bytes()),
        Err(libc::EROFS)
    );
    assert!(f.call(fuse::STATFS, ROOT_ID, &[]).is_ok());
}

#[test]
fn create_write_read_list_round_trip() {
    let mut f = Fixture::new(&[RW]);
    let top = f.share(0);
    let dir = f.mkdir(top, "d", 0o755).unwrap();
    assert_eq!(dir.attr.mode, libc::S_IFDIR | 0o755);
    assert!(f.path(0, "d").is_dir());
    let (file, open) = f.create(dir.nodeid, "f", libc::O_RDWR, 0o644).unwrap();
    assert_eq!(
        open.open_flags & fuse::FOPEN_DIRECT_IO,
        fuse::FOPEN_DIRECT_IO
    );
    assert_eq!(f.write(open.fh, 0, b"hello world").unwrap(), 11);
    assert_eq!(f.write(open.fh, 6, b"there").unwrap(), 5);
    assert_eq!(f.read(open.fh, 0, 100).unwrap(), b"hello there");
    assert_eq!(f.read(open.fh, 6, 3).unwrap(), b"the");
    assert_eq!(f.read(open.fh, 50, 3).unwrap(), b"");
    assert_eq!(std::fs::read(f.path(0, "d/f")).unwrap(), b"hello there");
    f.release(open.fh).unwrap();
    assert_eq!(f.read(open.fh, 0, 1).unwrap_err(), libc::EBADF);
    assert_eq!(f.release(open.fh).unwrap_err(), libc::EBADF);

    let attr = f.getattr(file.nodeid).unwrap();
    assert_eq!((attr.size, attr.mode), (11, libc::S_IFREG | 0o644));
    assert_eq!((attr.uid, attr.gid, attr.blksize), (0, 0, 4096));
    let looked = f.lookup(dir.nodeid, "f").unwrap();
    assert_eq!(looked.nodeid, file.nodeid);
    assert_eq!(
        looked.attr.ino,
        std::fs::metadata(f.path(0, "d/f")).unwrap().ino()
    );

    let fh = f.open(file.nodeid, libc::O_RDONLY).unwrap();
    assert_eq!(f.read(fh, 0, 5).unwrap(), b"hello");
    // Reads are bounded by the guest's room as well as by `size`.
    let a = fuse::ReadIn {
        fh,
        size: 100,
        ..Default::default()
    };
    assert_eq!(
        f.call_with(fuse::READ, 0, &a.to_bytes(), 16 + 4).unwrap(),
        b"hell"
    );
    assert_eq!(f.write(fh, 0, b"x").unwrap_err(), libc::EBADF);
    // O_APPEND and O_TRUNC on open.
    let fh = f
        .open(file.nodeid, libc::O_WRONLY | libc::O_APPEND)
        .unwrap();
    f.write(fh, 0, b"!").unwrap();
    assert_eq!(std::fs::read(f.path(0, "d/f")).unwrap(), b"hello there!");
    f.open(file.nodeid, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    assert_eq!(std::fs::metadata(f.path(0, "d/f")).unwrap().len(), 0);

    // A name with a newline, and a directory listed in small pieces.
    f.create(top, "new\nline", libc::O_WRONLY, 0o600).unwrap();
    assert!(f.path(0, "new\nline").is_file());
    assert_eq!(f.names(top), ["d", "new\nline"]);
    for i in 0..40 {
        let name = format!("file-with-a-longish-name-{i:03}");
        std::fs::write(f.path(0, &format!("d/{name}")), b"").unwrap();
    }
    for plus in [false, true] {
        let listed = f.list(dir.nodeid, plus, 300).unwrap();
        let mut names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        assert_eq!(names.len(), 43, "{names:?}");
        assert_eq!(names[..3], [".", "..", "f"]);
        if plus {
            let f_node = listed.iter().find(|(n, _)| n == "f").unwrap().1;
            assert_eq!(f_node, file.nodeid);
            let dot = listed.iter().find(|(n, _)| n == "..").unwrap().1;
            assert_eq!(dot, 0);
        }
    }
    // A buffer too small for even one record.
    let fh = f.opendir(dir.nodeid).unwrap();
    let a = fuse::ReadIn {
        fh,
        size: 20,
        ..Default::default()
    };
    assert_eq!(f.call(fuse::READDIR, 0, &a.to_bytes()), Err(libc::EINVAL));
    assert_eq!(f.opendir(file.nodeid).unwrap_err(), libc::ENOTDIR);
}

#[test]
fn rename_and_rename2() {
    let mut f = Fixture::new(&[RW]);
    let top = f.share(0);
    std::fs::write(f.path(0, "a"), b"A").unwrap();
    std::fs::write(f.path(0, "b"), b"B").unwrap();
    std::fs::create_dir(f.path(0, "sub")).unwrap();
    let sub = f.lookup(top, "sub").unwrap().nodeid;
    f.rename(top, "a", sub, "a2").unwrap();
    assert_eq!(std::fs::read(f.path(0, "sub/a2")).unwrap(), b"A");
    assert!(!f.path(0, "a").exists());
    assert_eq!(
        f.rename2(sub, "a2", top, "b", fuse::RENAME_NOREPLACE),
        Err(libc::EEXIST)
    );
    f.rename2(sub, "a2", top, "b", fuse::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(std::fs::read(f.path(0, "b")).unwrap(), b"A");
    assert_eq!(std::fs::read(f.path(0, "sub/a2")).unwrap(), b"B");
    f.rename2(sub, "a2", top, "c", fuse::RENAME_NOREPLACE)
        .unwrap();
    assert_eq!(std::fs::read(f.path(0, "c")).unwrap(), b"B");
    assert_eq!(
        f.rename2(top, "c", top, "d", fuse::RENAME_WHITEOUT),
        Err(libc::EINVAL)
    );
    assert_eq!(f.rename2(top, "c", top, "d", 1 << 7), Err(libc::EINVAL));
    assert_eq!(f.rename(top, "missing", top, "d"), Err(libc::ENOENT));
    assert_eq!(f.rename(top, "c", 12345, "d"), Err(libc::ENOENT));
}

#[test]
fn link_unlink_rmdir() {
    let mut f = Fixture::new(&[RW]);
    let top = f.share(0);
    let (file, open) = f.create(top, "f", libc::O_WRONLY, 0o644).unwrap();
    f.release(open.fh).unwrap();
    let linked = f.link(file.nodeid, top, "g").unwrap();
    // One inode, one node: the same ID, one more lookup.
    assert_eq!(linked.nodeid, file.nodeid);
    assert_eq!(linked.attr.nlink, 2);
    assert_eq!(f.lookup(top, "g").unwrap().nodeid, file.nodeid);
    assert_eq!(f.link(file.nodeid, top, "g").unwrap_err(), libc::EEXIST);
    assert_eq!(f.link(ROOT_ID, top, "h").unwrap_err(), libc::EPERM);
    assert_eq!(f.link(top, top, "h").unwrap_err(), libc::EPERM);
    f.call(fuse::UNLINK, top, &cs("f")).unwrap();
    assert!(!f.path(0, "f").exists());
    assert_eq!(f.getattr(file.nodeid).unwrap().nlink, 1);
    assert_eq!(f.call(fuse::UNLINK, top, &cs("f")), Err(libc::ENOENT));
    let d = f.mkdir(top, "d", 0o700).unwrap();
    f.mkdir(d.nodeid, "e", 0o700).unwrap();
    assert_eq!(f.call(fuse::RMDIR, top, &cs("d")), Err(libc::ENOTEMPTY));
    assert_eq!(f.call(fuse::UNLINK, top, &cs("d")), Err(libc::EISDIR));
    f.call(fuse::RMDIR, d.nodeid, &cs("e")).unwrap();
    f.call(fuse::RMDIR, top, &cs("d")).unwrap();
    assert!(!f.path(0, "d").exists());
}

#[test]
fn symlink_and_readlink() {
    let mut f = Fixture::new(&[RW]);
    let top = f.share(0);
    let link = f.symlink(top, "l", "some/where").unwrap();
    assert_eq!(link.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(
        std::fs::read_link(f.path(0, "l")).unwrap().to_str(),
        Some("some/where")
    );
    assert_eq!(
        f.call(fuse::READLINK, link.nodeid, &[]).unwrap(),
        b"some/where"
    );
    assert_eq!(f.call(fuse::READLINK, top, &[]), Err(libc::EINVAL));
    assert_eq!(f.symlink(top, "l", "x").unwrap_err(), libc::EEXIST);
    // The target must be NUL-terminated too.
    assert_eq!(
        f.call(fuse::SYMLINK, top, &cat(&[&cs("m"), b"x"])),
        Err(libc::EINVAL)
    );
    // A symlink's times change on the link itself; its mode never does.
    let times = fuse::SetattrIn {
        valid: fuse::FATTR_MTIME,
        mtime: 1_000_000,
        ..Default::default()
    };
    assert_eq!(f.setattr(link.nodeid, times).unwrap().mtime, 1_000_000);
    let chmod = fuse::SetattrIn {
        valid: fuse::FATTR_MODE,
        mode: 0o600,
        ..Default::default()
    };
    assert_eq!(f.setattr(link.nodeid, chmod).unwrap_err(), libc::EOPNOTSUPP);
}

#[test]
fn setattr_and_friends() {
    let mut f = Fixture::new(&[RW]);
    let top = f.share(0);
    let (file, open) = f.create(top, "f", libc::O_RDWR, 0o644).unwrap();
    f.write(open.fh, 0, b"0123456789").unwrap();
    let by_path = fuse::SetattrIn {
        valid: fuse::FATTR_SIZE,
        size: 4,
        ..Default::default()
    };
    assert_eq!(f.setattr(file.nodeid, by_path).unwrap().size, 4);
    let by_fh = fuse::SetattrIn {
        valid: fuse::FATTR_SIZE | fuse::FATTR_FH,
        fh: open.fh,
        size: 2,
        ..Default::default()
    };
    assert_eq!(f.setattr(file.nodeid, by_fh).unwrap().size, 2);
    assert_eq!(std::fs::read(f.path(0, "f")).unwrap(), b"01");
    let dir_size = fuse::SetattrIn {
        valid: fuse::FATTR_SIZE,
        ..Default::default()
    };
    assert_eq!(f.setattr(top, dir_size).unwrap_err(), libc::EISDIR);
    let times = fuse::SetattrIn {
        valid: fuse::FATTR_ATIME | fuse::FATTR_MTIME,
        atime: 1000,
        atimensec: 5,
        mtime: 2000,
        mtimensec: 7,
        ..Default::default()
    };
    let attr = f.setattr(file.nodeid, times).unwrap();
    assert_eq!(
        (attr.atime, attr.atimensec, attr.mtime, attr.mtimensec),
        (1000, 5, 2000, 7)
    );
    let now = fuse::SetattrIn {
        valid: fuse::FATTR_MTIME | fuse::FATTR_MTIME_NOW,
        ..Default::default()
    };
    assert!(f.setattr(file.nodeid, now).unwrap().mtime > 2000);
    let bad_nsec = fuse::SetattrIn {
        valid: fuse::FATTR_MTIME,
        mtimensec: 2_000_000_000,
        ..Default::default()
    };
    assert_eq!(f.setattr(file.nodeid, bad_nsec).unwrap_err(), libc::EINVAL);
    // Guest root owns what this process owns.
    let chown = fuse::SetattrIn {
        valid: fuse::FATTR_UID | fuse::FATTR_GID,
        ..Default::default()
    };
    let attr = f.setattr(file.nodeid, chown).unwrap();
    assert_eq!((attr.uid, attr.gid), (0, 0));
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    let meta = std::fs::metadata(f.path(0, "f")).unwrap();
    assert_eq!(meta.uid(), euid);
    let other = fuse::SetattrIn {
        valid: fuse::FATTR_UID,
        uid: 1234,
        ..Default::default()
    };
    if euid == 0 {
        assert_eq!(f.setattr(file.nodeid, other).unwrap().uid, 1234);
        assert_eq!(std::fs::metadata(f.path(0, "f")).unwrap().uid(), 1234);
    } else {
        assert_eq!(f.setattr(file.nodeid, other).unwrap_err(), libc::EPERM);
    }

    // GETATTR with a handle, FSYNC, FLUSH, FALLOCATE, LSEEK, STATFS.
    let with_fh = fuse::GetattrIn {
        getattr_flags: fuse::GETATTR_FH,
        dummy: 0,
        fh: open.fh,
    };
    assert!(f
        .call(fuse::GETATTR, file.nodeid, &with_fh.to_bytes())
        .is_ok());
    for flags in [0, fuse::FSYNC_FDATASYNC] {
        let a = fuse::FsyncIn {
            fh: open.fh,
            fsync_flags: flags,
            padding: 0,
        };
        f.call(fuse::FSYNC, file.nodeid, &a.to_bytes()).unwrap();
    }
    let flush = fuse::FlushIn {
        fh: open.fh,
        ..Default::default()
    };
    assert_eq!(
        f.call(fuse::FLUSH, file.nodeid, &flush.to_bytes())
            .unwrap_err(),
        libc::ENOSYS,
        "FLUSH is refused once so the guest stops sending it"
    );
    let grow = fuse::FallocateIn {
        fh: open.fh,
        offset: 0,
        length: 1 << 20,
        mode: 0,
        padding: 0,
    };
    f.call(fuse::FALLOCATE, file.nodeid, &grow.to_bytes())
        .unwrap();
    assert_eq!(std::fs::metadata(f.path(0, "f")).unwrap().len(), 1 << 20);
    let seek = fuse::LseekIn {
        fh: open.fh,
        offset: 0,
        whence: libc::SEEK_DATA as u32,
        padding: 0,
    };
    let out = f.call(fuse::LSEEK, file.nodeid, &seek.to_bytes()).unwrap();
    assert_eq!(fuse::LseekOut::decode(&out).unwrap().offset, 0);
    let bad_seek = fuse::LseekIn { whence: 9, ..seek };
    assert_eq!(
        f.call(fuse::LSEEK, file.nodeid, &bad_seek.to_bytes()),
        Err(libc::EINVAL)
    );
    let out = f.call(fuse::STATFS, file.nodeid, &[]).unwrap();
    let st = fuse::StatfsOut::decode(&out).unwrap().st;
    assert!(st.blocks > 0 && st.bsize > 0 && st.namelen >= 255);
    let fsyncdir = fuse::FsyncIn::default();
    let fh = f.opendir(top).unwrap();
    let a = fuse::FsyncIn { fh, ..fsyncdir };
    f.call(fuse::FSYNCDIR, top, &a.to_bytes()).unwrap();
    let r = fuse::AccessIn {
        mask: libc::R_OK as u32,
        padding: 0,
    };
    f.call(fuse::ACCESS, file.nodeid, &r.to_bytes()).unwrap();
    // Locks, ioctls and the like are left to the guest.
    for op in [
        fuse::GETLK,
        fuse::SETLK,
        fuse::IOCTL,
        fuse::POLL,
        fuse::COPY_FILE_RANGE,
        9999,
    ] {
        assert_eq!(f.call(op, file.nodeid, &[0; 64]), Err(libc::ENOSYS));
    }
}

#[test]
fn extended_attributes() {
    let mut f = Fixture::new(&[RW]);
    let top = f.share(0);
    let (file, _) = f.create(top, "f", libc::O_RDWR, 0o644).unwrap();
    let set = |name: &str, value: &[u8]| {
        let a = fuse::SetxattrIn {
            size: value.len() as u32,
            flags: 0,
        };
        cat(&[&a.to_bytes(), &cs(name), value])
    };
    match f.call(fuse::SETXATTR, file.nodeid, &set("user.k", b"v1")) {
        Err(libc::EOPNOTSUPP) => return, // the host file system has none
        r => r.unwrap(),
    };
    assert_eq!(
        f.call(fuse::SETXATTR, file.nodeid, &set("trusted.k", b"v")),
        Err(libc::EPERM)
    );
    assert_eq!(
        f.call(
            fuse::SETXATTR,
            file.nodeid,
            &set("security.capability", b"v")
        ),
        Err(libc::EPERM)
    );
    let get = |size: u32, name: &str| {
        cat(&[&fuse::GetxattrIn { size, padding: 0 }.to_bytes(), &cs(name)])
    };
    let size = f
        .call(fuse::GETXATTR, file.nodeid, &get(0, "user.k"))
        .unwrap();
    assert_eq!(fuse::GetxattrOut::decode(&size).unwrap().size, 2);
    assert_eq!(
        f.call(fuse::GETXATTR, file.nodeid, &get(64, "user.k"))
            .unwrap(),
        b"v1"
    );
    assert_eq!(
        f.call(fuse::GETXATTR, file.nodeid, &get(1, "user.k")),
        Err(libc::ERANGE)
    );
    assert_eq!(
        f.call(fuse::GETXATTR, file.nodeid, &get(64, "user.none")),
        Err(libc::ENODATA)
    );
    let list = fuse::GetxattrIn {
        size: 256,
        padding: 0,
    };
    let names = f
        .call(fuse::LISTXATTR, file.nodeid, &list.to_bytes())
        .unwrap();
    assert!(names.windows(7).any(|w| w == b"user.k\0"));
    f.call(fuse::REMOVEXATTR, file.nodeid, &cs("user.k"))
        .unwrap();
    assert_eq!(
        f.call(fuse::GETXATTR, file.nodeid, &get(64, "user.k")),
        Err(libc::ENODATA)
    );
    // Symlinks and the root have none.
    let link = f.symlink(top, "l", "f").unwrap();
    assert_eq!(
        f.call(fuse::GETXATTR, link.nodeid, &get(64, "user.k")),
        Err(libc::ENODATA)
    );
    assert_eq!(
        f.call(fuse::LISTXATTR, link.nodeid, &list.to_bytes())
            .unwrap(),
        b""
    );
    assert_eq!(
        f.call(fuse::GETXATTR, ROOT_ID, &get(64, "user.k")),
        Err(libc::ENODATA)
    );
    assert_eq!(
        f.call(fuse::SETXATTR, ROOT_ID, &set("user.k", b"v")),
        Err(libc::EPERM)
    );
}

#[test]
fn forget_and_destroy_drop_nodes() {
    let mut f = Fixture::new(&[RW]);
    let top = f.share(0);
    std::fs::write(f.path(0, "a"), b"").unwrap();
    std::fs::write(f.path(0, "b"), b"").unwrap();
    let a = f.lookup(top, "a").unwrap().nodeid;
    assert_eq!(f.lookup(top, "a").unwrap().nodeid, a);
    let nodes = f.server.nodes.len();
    f.forget(a, 1);
    assert!(f.getattr(a).is_ok());
    f.forget(a, 1);
    assert_eq!(f.getattr(a).unwrap_err(), libc::ENOENT);
    assert_eq!(f.server.nodes.len(), nodes - 1);
    // Forgetting what does not exist, or too much, is harmless.
    f.forget(a, 5);
    f.forget(ROOT_ID, 1);
    f.forget(0, u64::MAX);
    let b = f.lookup(top, "b").unwrap().nodeid;
    assert_ne!(b, a, "node IDs are never reused");
    let a = f.lookup(top, "a").unwrap().nodeid;
    let mut batch = fuse::BatchForgetIn { count: 3, dummy: 0 }.to_bytes();
    for (nodeid, nlookup) in [(a, 1), (b, 1), (777, 1)] {
        batch.extend(fuse::ForgetOne { nodeid, nlookup }.to_bytes());
    }
    f.send(fuse::BATCH_FORGET, 0, &batch);
    assert_eq!(f.getattr(a).unwrap_err(), libc::ENOENT);
    assert_eq!(f.getattr(b).unwrap_err(), libc::ENOENT);
    // A count beyond the items sent stops at the items.
    let lie = fuse::BatchForgetIn {
        count: u32::MAX,
        dummy: 0,
    };
    f.send(fuse::BATCH_FORGET, 0, &lie.to_bytes());
    assert!(f.getattr(top).is_ok());
    f.send(fuse::INTERRUPT, 0, &7u64.to_le_bytes());

    let fh = f.opendir(top).unwrap();
    f.call(fuse::DESTROY, 0, &[]).unwrap();
    // Only the pinned share tops stay.
    assert_eq!(f.server.nodes.len(), 1);
    assert_eq!(f.server.handles.len(), 0);
    f.init();
    assert!(f.getattr(top).is_ok());
    assert_eq!(f.getattr(a).unwrap_err(), libc::ENOENT);
    let a = fuse::FsyncIn {
        fh,
        ..Default::default()
    };
    assert_eq!(f.call(fuse::FSYNCDIR, 0, &a.to_bytes()), Err(libc::EBADF));
    assert!(f.getattr(ROOT_ID).is_ok());
}

#[test]
fn caps_and_small_reply_room() {
    let mut f = Fixture::new(&[RW]);
    let top = f.share(0);
    for n in ["a", "b", "c"] {
        std::fs::write(f.path(0, n), b"").unwrap();
    }
    f.server.nodes.max = 2;
    f.lookup(top, "a").unwrap();
    assert_eq!(f.lookup(top, "b").unwrap_err(), libc::ENFILE);
    assert!(f.lookup(top, "a").is_ok(), "known nodes still count");
    f.server.handles.max = 0;
    assert_eq!(f.opendir(top).unwrap_err(), libc::ENFILE);
    f.server.nodes.max = 1 << 20;
    f.server.handles.max = 1 << 16;
    // A reply that cannot fit is an error, decided before acting.
    let mkdir = fuse::MkdirIn {
        mode: 0o755,
        umask: 0,
    };
    assert_eq!(
        f.call_with(fuse::MKDIR, top, &cat(&[&mkdir.to_bytes(), &cs("x")]), 100),
        Err(libc::EIO)
    );
    assert!(!f.path(0, "x").exists());
    assert!(
        f.server
            .handle(&super::request(fuse::GETATTR, 1, 1, &[0; 16]), 15)
            == Some(Vec::new())
    );
    let big = f.call_with(fuse::GETATTR, 1, &[0; 16], ROOM).unwrap();
    assert_eq!(big.len(), fuse::AttrOut::SIZE);
}

#[test]
fn share_tops_keep_their_ids_across_servers_and_nothing_else_does() {
    // A guest restored from a warm snapshot holds the IDs an earlier
    // server gave: a share's top is 2 + its index in every server, and
    // no other ID of one server names anything in the next.
    let mut one = Fixture::new(&[RW, RW]);
    let mut two = Fixture::new(&[RW, RW]);
    for (i, f) in [&mut one, &mut two].into_iter().enumerate() {
        assert_eq!(f.share(0), 2, "server {i}");
        assert_eq!(f.share(1), 3, "server {i}");
    }
    std::fs::write(one.path(0, "a"), b"").unwrap();
    std::fs::write(two.path(0, "a"), b"").unwrap();
    let a = one.lookup(2, "a").unwrap().nodeid;
    let b = two.lookup(2, "a").unwrap().nodeid;
    assert!(a > 1 << 40 && b > 1 << 40, "{a} {b}");
    assert_ne!(a, b);
    assert_eq!(two.getattr(a).unwrap_err(), libc::ENOENT);
    // Forgotten however often, a top stays.
    one.forget(2, u64::MAX);
    assert!(one.getattr(2).is_ok());
}

#[test]
fn the_server_tells_when_the_guest_reached_beneath_a_share_top() {
    // What a warm snapshot that holds a run ready may carry: the root and
    // the share tops, nothing looked up beneath them.
    let mut f = Fixture::new(&[RW]);
    let flag = f.server.beyond_tops();
    std::fs::write(f.path(0, "a"), b"").unwrap();
    let top = f.share(0);
    assert!(f.getattr(top).is_ok());
    assert!(f.getattr(ROOT_ID).is_ok());
    f.forget(top, 1);
    assert!(!flag.load(std::sync::atomic::Ordering::Relaxed));
    let _ = f.lookup(top, "missing");
    assert!(flag.load(std::sync::atomic::Ordering::Relaxed));
    let mut g = Fixture::new(&[RW]);
    let flag = g.server.beyond_tops();
    let top = g.share(0);
    let _ = g.opendir(top);
    assert!(
        flag.load(std::sync::atomic::Ordering::Relaxed),
        "a readdir of /work"
    );
}
