//! The write quota: what a guest adds to its shares is bounded, overwrites
//! cost nothing, and past the quota the guest gets ENOSPC (a short write
//! first) with nothing more written on the host.

use std::os::unix::fs::MetadataExt;

use super::{cat, cs, Fixture, RW};
use crate::devices::virtio::fs::fuse::{self, Wire};
use crate::devices::virtio::fs::quota::{DIR_COST, NAME_COST};

const KIB: u64 = 1024;

fn fallocate(f: &mut Fixture, fh: u64, mode: u32, offset: u64, length: u64) -> Result<(), i32> {
    let a = fuse::FallocateIn {
        fh,
        offset,
        length,
        mode,
        padding: 0,
    };
    f.call(fuse::FALLOCATE, 0, &a.to_bytes()).map(|_| ())
}

fn truncate(f: &mut Fixture, node: u64, size: u64) -> Result<u64, i32> {
    let a = fuse::SetattrIn {
        valid: fuse::FATTR_SIZE,
        size,
        ..Default::default()
    };
    f.setattr(node, a).map(|attr| attr.size)
}

/// Bytes the host allocated under share 0.
fn allocated(f: &Fixture) -> u64 {
    let mut total = 0;
    let mut stack = vec![f.path(0, "")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

#[test]
fn writes_past_the_quota_get_enospc() {
    let quota = 64 * KIB;
    let mut f = Fixture::with_quota(&[RW], quota);
    let top = f.share(0);
    let (_, open) = f.create(top, "f", libc::O_RDWR, 0o644).unwrap();
    let used = f.server.quota.used();
    assert_eq!(used, NAME_COST + 1);
    // 32 KiB, then overwritten ten times: it costs 32 KiB once.
    let block = vec![7u8; 32 << 10];
    for _ in 0..10 {
        assert_eq!(f.write(open.fh, 0, &block), Ok(32 << 10));
    }
    assert_eq!(f.server.quota.used(), used + 32 * KIB);
    // The next 64 KiB only fit in part: a short write, then ENOSPC.
    let left = quota - f.server.quota.used();
    let big = vec![1u8; 64 << 10];
    assert_eq!(f.write(open.fh, 32 * KIB, &big), Ok(left as u32));
    assert_eq!(f.write(open.fh, 32 * KIB + left, b"x"), Err(libc::ENOSPC));
    // A write far past the end pays for the hole: refused whole.
    assert_eq!(f.write(open.fh, 1 << 30, b"x"), Err(libc::ENOSPC));
    // Overwriting inside the file still works.
    assert_eq!(f.write(open.fh, 0, b"still"), Ok(5));
    assert_eq!(f.write(open.fh, 0, b""), Ok(0));
    let size = std::fs::metadata(f.path(0, "f")).unwrap().len();
    assert_eq!(size, 32 * KIB + left);
    assert!(allocated(&f) <= quota + 8 * KIB, "{}", allocated(&f));
    assert_eq!(f.server.quota.remaining(), 0);
    // statfs shows the quota as the free space.
    let out = f.call(fuse::STATFS, top, &[]).unwrap();
    let st = fuse::StatfsOut::decode(&out).unwrap().st;
    assert_eq!((st.bavail, st.bfree), (0, 0));
}

#[test]
fn fallocate_and_truncate_count_what_they_add() {
    let mut f = Fixture::with_quota(&[RW], 1 << 20);
    let top = f.share(0);
    let (file, open) = f.create(top, "f", libc::O_RDWR, 0o644).unwrap();
    let base = f.server.quota.used();
    // The issue's `fallocate -l 5G`: refused, nothing allocated.
    assert_eq!(fallocate(&mut f, open.fh, 0, 0, 5 << 30), Err(libc::ENOSPC));
    assert_eq!(std::fs::metadata(f.path(0, "f")).unwrap().len(), 0);
    // KEEP_SIZE past the end counts too, though the size stays 0.
    let keep = crate::devices::virtio::fs::quota::FALLOC_KEEP_SIZE;
    assert_eq!(
        fallocate(&mut f, open.fh, keep, 0, 2 << 20),
        Err(libc::ENOSPC)
    );
    match fallocate(&mut f, open.fh, 0, 0, 256 * KIB) {
        Err(libc::EOPNOTSUPP) => return, // the host file system has none
        r => r.unwrap(),
    }
    assert_eq!(f.server.quota.used(), base + 256 * KIB);
    // Punching a hole and filling it again costs nothing.
    let punch = crate::devices::virtio::fs::quota::FALLOC_PUNCH_HOLE;
    fallocate(&mut f, open.fh, keep | punch, 0, 128 * KIB).unwrap();
    fallocate(&mut f, open.fh, 0, 0, 128 * KIB).unwrap();
    assert_eq!(f.server.quota.used(), base + 256 * KIB);
    // Shrinking is free, growing again is paid again: nothing comes back.
    assert_eq!(truncate(&mut f, file.nodeid, 0), Ok(0));
    assert_eq!(truncate(&mut f, file.nodeid, 512 * KIB), Ok(512 * KIB));
    assert_eq!(f.server.quota.used(), base + 768 * KIB);
    assert_eq!(truncate(&mut f, file.nodeid, 1 << 30), Err(libc::ENOSPC));
    assert_eq!(
        std::fs::metadata(f.path(0, "f")).unwrap().len(),
        512 * KIB,
        "a refused truncate changes nothing"
    );
    // UNSHARE_RANGE allocates inside a file unseen: not passed through.
    assert_eq!(
        fallocate(&mut f, open.fh, 0x40, 0, 4096),
        Err(libc::EOPNOTSUPP)
    );
}

#[test]
fn names_cost_and_deletions_give_nothing_back() {
    let quota = 16 * KIB;
    let mut f = Fixture::with_quota(&[RW], quota);
    let top = f.share(0);
    let mut made = 0;
    loop {
        match f.create(top, &format!("f{made:03}"), libc::O_WRONLY, 0o644) {
            Ok((_, open)) => {
                f.release(open.fh).unwrap();
                made += 1;
            }
            Err(e) => {
                assert_eq!(e, libc::ENOSPC);
                break;
            }
        }
    }
    assert_eq!(made, quota / (NAME_COST + 4));
    let files = std::fs::read_dir(f.path(0, "")).unwrap().count() as u64;
    assert_eq!(files, made);
    // An existing file can still be opened (and truncated) by CREATE.
    let (_, open) = f
        .create(top, "f000", libc::O_WRONLY | libc::O_TRUNC, 0o644)
        .unwrap();
    f.release(open.fh).unwrap();
    assert_eq!(
        f.create(top, "f000", libc::O_WRONLY | libc::O_EXCL, 0o644)
            .map(|_| ()),
        Err(libc::ENOSPC)
    );
    // Every other way to make a name is refused too.
    assert_eq!(f.mkdir(top, "d", 0o755).map(|_| ()), Err(libc::ENOSPC));
    assert_eq!(f.symlink(top, "l", "t").map(|_| ()), Err(libc::ENOSPC));
    assert_eq!(
        f.mknod(top, "p", libc::S_IFIFO | 0o644).map(|_| ()),
        Err(libc::ENOSPC)
    );
    let node = f.lookup(top, "f000").unwrap().nodeid;
    assert_eq!(f.link(node, top, "hl").map(|_| ()), Err(libc::ENOSPC));
    // Deleting gives nothing back.
    for i in 0..made {
        f.call(fuse::UNLINK, top, &cs(&format!("f{i:03}"))).unwrap();
    }
    assert_eq!(
        f.create(top, "again", libc::O_WRONLY, 0o644).map(|_| ()),
        Err(libc::ENOSPC)
    );
    // DESTROY and a new INIT do not reset it.
    f.call(fuse::DESTROY, 0, &[]).unwrap();
    f.init();
    let top = f.share(0);
    assert_eq!(f.mkdir(top, "d", 0o755).map(|_| ()), Err(libc::ENOSPC));
}

#[test]
fn directories_symlinks_xattrs_and_appends_are_counted() {
    let mut f = Fixture::with_quota(&[RW], 1 << 20);
    let top = f.share(0);
    f.mkdir(top, "dir", 0o755).unwrap();
    assert_eq!(f.server.quota.used(), DIR_COST + 3);
    f.symlink(top, "ln", "target").unwrap();
    assert_eq!(f.server.quota.used(), DIR_COST + 3 + NAME_COST + 2 + 6);
    let (file, open) = f
        .create(top, "log", libc::O_WRONLY | libc::O_APPEND, 0o644)
        .unwrap();
    let before = f.server.quota.used();
    // O_APPEND writes land at the end whatever their offset: each is paid.
    for _ in 0..4 {
        assert_eq!(f.write(open.fh, 0, b"0123456789"), Ok(10));
    }
    assert_eq!(f.server.quota.used(), before + 40);
    assert_eq!(std::fs::read(f.path(0, "log")).unwrap().len(), 40);
    let a = fuse::SetxattrIn { size: 5, flags: 0 };
    let set = cat(&[&a.to_bytes(), &cs("user.k"), b"value"]);
    match f.call(fuse::SETXATTR, file.nodeid, &set) {
        Err(libc::EOPNOTSUPP) => {} // the host file system has none
        r => {
            r.unwrap();
            assert_eq!(f.server.quota.used(), before + 40 + 6 + 5);
        }
    }
}
