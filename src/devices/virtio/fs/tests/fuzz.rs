//! Robustness test: truncated, mutated and random requests always get a
//! well-formed reply within the room given (or none, for the opcodes that
//! take none), never a panic, and never change anything outside the shares.

use super::super::fuse::{self, InHeader, OutHeader, Wire};
use super::{cat, cs, request, Fixture, RO, RW};

/// A small deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Valid requests of every kind, against nodes 1..8 and handles 1..4.
fn templates() -> Vec<Vec<u8>> {
    let read = |fh| {
        fuse::ReadIn {
            fh,
            size: 4096,
            ..Default::default()
        }
        .to_bytes()
    };
    let init = fuse::InitIn {
        major: 7,
        minor: 41,
        flags: u32::MAX,
        flags2: u32::MAX,
        ..Default::default()
    };
    let mut forget = fuse::BatchForgetIn { count: 2, dummy: 0 }.to_bytes();
    forget.extend(
        fuse::ForgetOne {
            nodeid: 3,
            nlookup: 1,
        }
        .to_bytes(),
    );
    forget.extend(
        fuse::ForgetOne {
            nodeid: 4,
            nlookup: 1,
        }
        .to_bytes(),
    );
    let mkdir = fuse::MkdirIn {
        mode: 0o755,
        umask: 0,
    };
    let create = fuse::CreateIn {
        flags: libc::O_RDWR as u32,
        mode: 0o644,
        ..Default::default()
    };
    let write = fuse::WriteIn {
        fh: 1,
        size: 5,
        ..Default::default()
    };
    let setattr = fuse::SetattrIn {
        valid: fuse::FATTR_SIZE | fuse::FATTR_MODE | fuse::FATTR_MTIME_NOW,
        size: 3,
        mode: 0o644,
        ..Default::default()
    };
    let list: &[(u32, u64, Vec<u8>)] = &[
        (fuse::INIT, 0, init.to_bytes()),
        (fuse::LOOKUP, 1, cs("0")),
        (fuse::LOOKUP, 2, cs("file")),
        (fuse::LOOKUP, 2, cs("dir")),
        (fuse::GETATTR, 3, fuse::GetattrIn::default().to_bytes()),
        (fuse::SETATTR, 3, setattr.to_bytes()),
        (fuse::MKDIR, 2, cat(&[&mkdir.to_bytes(), &cs("made")])),
        (fuse::CREATE, 4, cat(&[&create.to_bytes(), &cs("new")])),
        (fuse::SYMLINK, 2, cat(&[&cs("sl"), &cs("/etc/passwd")])),
        (
            fuse::LINK,
            2,
            cat(&[&fuse::LinkIn { oldnodeid: 3 }.to_bytes(), &cs("hard")]),
        ),
        (
            fuse::RENAME,
            2,
            cat(&[&fuse::RenameIn { newdir: 4 }.to_bytes(), &cs("a"), &cs("b")]),
        ),
        (
            fuse::RENAME2,
            2,
            cat(&[
                &fuse::Rename2In {
                    newdir: 2,
                    flags: 2,
                    padding: 0,
                }
                .to_bytes(),
                &cs("file"),
                &cs("dir"),
            ]),
        ),
        (fuse::UNLINK, 2, cs("gone")),
        (fuse::RMDIR, 2, cs("gone")),
        (
            fuse::OPEN,
            3,
            fuse::OpenIn {
                flags: 2,
                open_flags: 0,
            }
            .to_bytes(),
        ),
        (fuse::READ, 3, read(1)),
        (fuse::WRITE, 3, cat(&[&write.to_bytes(), b"hello"])),
        (fuse::OPENDIR, 2, fuse::OpenIn::default().to_bytes()),
        (fuse::READDIR, 2, read(2)),
        (fuse::READDIRPLUS, 2, read(2)),
        (fuse::READDIRPLUS, 1, read(3)),
        (
            fuse::RELEASE,
            3,
            fuse::ReleaseIn {
                fh: 1,
                ..Default::default()
            }
            .to_bytes(),
        ),
        (
            fuse::FSYNC,
            3,
            fuse::FsyncIn {
                fh: 1,
                ..Default::default()
            }
            .to_bytes(),
        ),
        (
            fuse::GETXATTR,
            3,
            cat(&[
                &fuse::GetxattrIn {
                    size: 10,
                    padding: 0,
                }
                .to_bytes(),
                &cs("user.a"),
            ]),
        ),
        (
            fuse::LISTXATTR,
            3,
            fuse::GetxattrIn {
                size: 10,
                padding: 0,
            }
            .to_bytes(),
        ),
        (
            fuse::SETXATTR,
            3,
            cat(&[
                &fuse::SetxattrIn { size: 1, flags: 0 }.to_bytes(),
                &cs("user.a"),
                b"v",
            ]),
        ),
        (
            fuse::LSEEK,
            3,
            fuse::LseekIn {
                fh: 1,
                whence: 3,
                ..Default::default()
            }
            .to_bytes(),
        ),
        (fuse::STATFS, 2, Vec::new()),
        (fuse::READLINK, 5, Vec::new()),
        (fuse::FORGET, 3, fuse::ForgetIn { nlookup: 1 }.to_bytes()),
        (fuse::BATCH_FORGET, 0, forget),
        (
            fuse::MKNOD,
            2,
            cat(&[
                &fuse::MknodIn {
                    mode: libc::S_IFIFO | 0o644,
                    ..Default::default()
                }
                .to_bytes(),
                &cs("p"),
            ]),
        ),
    ];
    list.iter()
        .enumerate()
        .map(|(i, (op, node, args))| request(*op, *node, i as u64 + 1, args))
        .collect()
}

/// Sends one request and checks the shape of the answer.
fn check(f: &mut Fixture, req: &[u8], max_reply: usize) {
    let reply = f.server.handle(req, max_reply);
    let opcode = InHeader::decode(req).map(|h| h.opcode);
    let Some(reply) = reply else {
        assert!(
            matches!(
                opcode,
                Some(fuse::FORGET | fuse::BATCH_FORGET | fuse::INTERRUPT | fuse::NOTIFY_REPLY)
            ),
            "no reply to opcode {opcode:?}"
        );
        return;
    };
    assert!(reply.len() <= max_reply, "{} > {max_reply}", reply.len());
    if max_reply < OutHeader::SIZE {
        assert!(reply.is_empty());
        return;
    }
    let h = OutHeader::decode(&reply).expect("a header");
    assert_eq!(h.len as usize, reply.len());
    assert!(h.error <= 0);
    if h.error != 0 {
        assert_eq!(reply.len(), OutHeader::SIZE);
    }
}

#[test]
fn garbage_never_panics() {
    // The write quota keeps a random FALLOCATE or WRITE from filling the
    // test disk.
    let mut f = Fixture::with_quota(&[RW, RO], 64 << 20);
    for i in 0..2 {
        std::fs::write(f.path(i, "file"), b"content").unwrap();
        std::fs::create_dir(f.path(i, "dir")).unwrap();
        std::os::unix::fs::symlink("../../outside.txt", f.path(i, "link")).unwrap();
    }
    // Give the templates' node and handle numbers something to hit.
    let top = f.share(0);
    let file = f.lookup(top, "file").unwrap().nodeid;
    f.lookup(top, "dir").unwrap();
    f.lookup(top, "link").unwrap();
    f.open(file, libc::O_RDWR).unwrap();
    f.opendir(top).unwrap();
    f.share(1);

    let templates = templates();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let rooms = [0usize, 8, 16, 17, 40, 100, 143, 144, 160, 4096, 1 << 21];
    for t in &templates {
        for cut in 0..t.len() {
            // Cut short with the header's length unchanged...
            check(&mut f, &t[..cut], 4096);
            // ...and with the header's length telling the truth.
            let mut fixed = t[..cut].to_vec();
            if fixed.len() >= 4 {
                fixed[..4].copy_from_slice(&(cut as u32).to_le_bytes());
            }
            check(&mut f, &fixed, 4096);
        }
        for &room in &rooms {
            check(&mut f, t, room);
        }
    }
    for _ in 0..20_000 {
        let mut req = templates[rng.below(templates.len() as u64) as usize].clone();
        match rng.below(4) {
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(req.len() as u64) as usize;
                    req[at] = rng.next() as u8;
                }
            }
            1 => {
                // Fields of the header: length, opcode, node, extension size.
                let at = [0usize, 4, 16, 36][rng.below(4) as usize];
                let v = rng.next().to_le_bytes();
                req[at..at + 4].copy_from_slice(&v[..4]);
            }
            2 => {
                let len = rng.below(300) as usize;
                let mut body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if rng.below(2) == 0 {
                    body.iter_mut().for_each(|b| *b %= 8);
                }
                req = request(rng.below(60) as u32, rng.below(12), 1, &body);
            }
            _ => {
                let extra = rng.below(64) as usize;
                req.extend((0..extra).map(|_| rng.next() as u8));
            }
        }
        let room = rooms[rng.below(rooms.len() as u64) as usize];
        check(&mut f, &req, room);
    }
    // Still serving, and nothing outside the shares changed.
    f.init();
    assert!(f.getattr(fuse::ROOT_ID).is_ok());
    assert_eq!(
        std::fs::read(f.base.path().join("outside.txt")).unwrap(),
        b"outside"
    );
    let mut top: Vec<_> = std::fs::read_dir(f.base.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["outside.txt", "share0", "share1"]);
    assert_eq!(std::fs::read(f.path(1, "file")).unwrap(), b"content");
    assert!(f.server.quota.used() <= 64 << 20);
}
