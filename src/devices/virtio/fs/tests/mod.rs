//! Unit tests of the FUSE server: raw request bytes in, reply bytes out,
//! against shares in temporary directories.

mod confine;
mod fuzz;
mod ops;
mod quota;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use super::fuse::{self, Attr, EntryOut, InHeader, OutHeader, Wire};
use super::server::{Server, ServerOptions, ShareSpec};

/// Room for every reply in these tests.
pub const ROOM: usize = 2 << 20;

/// A NUL-terminated name.
pub fn cs(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The bytes of one request.
pub fn request(opcode: u32, nodeid: u64, unique: u64, args: &[u8]) -> Vec<u8> {
    let mut v = InHeader {
        len: (InHeader::SIZE + args.len()) as u32,
        opcode,
        unique,
        nodeid,
        uid: 0,
        gid: 0,
        pid: 1,
        total_extlen: 0,
        padding: 0,
    }
    .to_bytes();
    v.extend_from_slice(args);
    v
}

/// Shares under one temporary directory, which also holds "outside.txt",
/// a file no guest may reach.
pub struct Fixture {
    pub server: Server,
    pub base: TempDir,
    unique: u64,
}

/// Share `i` of a fixture is `base/share{i}`.
pub struct Spec {
    pub read_only: bool,
    pub hidden: &'static [&'static str],
}

pub const RW: Spec = Spec {
    read_only: false,
    hidden: &[".cella"],
};
pub const RO: Spec = Spec {
    read_only: true,
    hidden: &[],
};

impl Fixture {
    /// Initialised, with direct I/O.
    pub fn new(specs: &[Spec]) -> Fixture {
        let mut f = Fixture::uninit(specs, true);
        f.init();
        f
    }

    /// Initialised, with direct I/O and a write quota of `quota` bytes.
    pub fn with_quota(specs: &[Spec], quota: u64) -> Fixture {
        let mut f = Fixture::build(specs, true, quota);
        f.init();
        f
    }

    pub fn uninit(specs: &[Spec], direct_io: bool) -> Fixture {
        Fixture::build(specs, direct_io, u64::MAX)
    }

    fn build(specs: &[Spec], direct_io: bool, write_quota: u64) -> Fixture {
        let base = tempfile::tempdir().unwrap();
        std::fs::write(base.path().join("outside.txt"), b"outside").unwrap();
        let mut shares = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let dir = base.path().join(format!("share{i}"));
            std::fs::create_dir(&dir).unwrap();
            shares.push(
                ShareSpec::new(
                    crate::hostfs::Dir::open(&dir).unwrap(),
                    spec.read_only,
                    spec.hidden.iter().map(Into::into).collect(),
                )
                .unwrap(),
            );
        }
        let options = ServerOptions {
            direct_io,
            timeout: Duration::from_secs(1),
            write_quota,
        };
        Fixture {
            server: Server::new(shares, options).unwrap(),
            base,
            unique: 0,
        }
    }

    /// The host path of `rel` in share `i`.
    pub fn path(&self, i: usize, rel: &str) -> PathBuf {
        let p = self.base.path().join(format!("share{i}"));
        if rel.is_empty() {
            p
        } else {
            p.join(rel)
        }
    }

    /// Sends a request; the payload of a success or the errno of a failure.
    pub fn call_with(
        &mut self,
        opcode: u32,
        nodeid: u64,
        args: &[u8],
        max_reply: usize,
    ) -> Result<Vec<u8>, i32> {
        self.unique += 1;
        let out = self
            .server
            .handle(&request(opcode, nodeid, self.unique, args), max_reply)
            .expect("a reply");
        assert!(out.len() <= max_reply);
        let h = OutHeader::decode(&out).expect("a reply header");
        assert_eq!(h.len as usize, out.len());
        assert_eq!(h.unique, self.unique);
        if h.error != 0 {
            assert!(h.error < 0);
            assert_eq!(out.len(), OutHeader::SIZE);
            Err(-h.error)
        } else {
            Ok(out[OutHeader::SIZE..].to_vec())
        }
    }

    pub fn call(&mut self, opcode: u32, nodeid: u64, args: &[u8]) -> Result<Vec<u8>, i32> {
        self.call_with(opcode, nodeid, args, ROOM)
    }

    /// Sends a request that takes no reply.
    pub fn send(&mut self, opcode: u32, nodeid: u64, args: &[u8]) {
        self.unique += 1;
        let out = self
            .server
            .handle(&request(opcode, nodeid, self.unique, args), ROOM);
        assert!(out.is_none());
    }

    pub fn init_with(&mut self, minor: u32, flags: u64) -> Result<fuse::InitOut, i32> {
        let init = fuse::InitIn {
            major: 7,
            minor,
            max_readahead: 128 << 10,
            flags: flags as u32,
            flags2: (flags >> 32) as u32,
            unused: [0; 11],
        };
        let out = self.call(fuse::INIT, 0, &init.to_bytes())?;
        if out.len() < fuse::InitOut::SIZE {
            let mut full = out.clone();
            full.resize(fuse::InitOut::SIZE, 0);
            return Ok(fuse::InitOut::decode(&full).unwrap());
        }
        Ok(fuse::InitOut::decode(&out).unwrap())
    }

    pub fn init(&mut self) {
        let all = !(fuse::SECURITY_CTX | fuse::CREATE_SUPP_GROUP);
        self.init_with(41, all).unwrap();
    }

    /// LOOKUP as the guest kernel sees it: a reply with node 0 is a
    /// missing name whose absence may be cached.
    pub fn lookup(&mut self, parent: u64, name: &str) -> Result<EntryOut, i32> {
        let entry = self
            .call(fuse::LOOKUP, parent, &cs(name))
            .map(|b| EntryOut::decode(&b).unwrap())?;
        if entry.nodeid == 0 {
            assert!(entry.entry_valid > 0, "a negative entry without a timeout");
            return Err(libc::ENOENT);
        }
        Ok(entry)
    }

    /// The node of share `i`'s top directory.
    pub fn share(&mut self, i: usize) -> u64 {
        self.lookup(fuse::ROOT_ID, &i.to_string()).unwrap().nodeid
    }

    pub fn getattr(&mut self, node: u64) -> Result<Attr, i32> {
        let out = self.call(fuse::GETATTR, node, &fuse::GetattrIn::default().to_bytes())?;
        Ok(fuse::AttrOut::decode(&out).unwrap().attr)
    }

    pub fn mkdir(&mut self, parent: u64, name: &str, mode: u32) -> Result<EntryOut, i32> {
        let a = fuse::MkdirIn { mode, umask: 0o022 };
        self.call(fuse::MKDIR, parent, &cat(&[&a.to_bytes(), &cs(name)]))
            .map(|b| EntryOut::decode(&b).unwrap())
    }

    pub fn mknod(&mut self, parent: u64, name: &str, mode: u32) -> Result<EntryOut, i32> {
        let a = fuse::MknodIn {
            mode,
            rdev: 0x0101,
            umask: 0,
            padding: 0,
        };
        self.call(fuse::MKNOD, parent, &cat(&[&a.to_bytes(), &cs(name)]))
            .map(|b| EntryOut::decode(&b).unwrap())
    }

    /// CREATE: the entry and the handle.
    pub fn create(
        &mut self,
        parent: u64,
        name: &str,
        flags: i32,
        mode: u32,
    ) -> Result<(EntryOut, fuse::OpenOut), i32> {
        let a = fuse::CreateIn {
            flags: flags as u32,
            mode: libc::S_IFREG | mode,
            umask: 0,
            open_flags: 0,
        };
        let out = self.call(fuse::CREATE, parent, &cat(&[&a.to_bytes(), &cs(name)]))?;
        assert_eq!(out.len(), EntryOut::SIZE + fuse::OpenOut::SIZE);
        Ok((
            EntryOut::decode(&out).unwrap(),
            fuse::OpenOut::decode(&out[EntryOut::SIZE..]).unwrap(),
        ))
    }

    pub fn symlink(&mut self, parent: u64, name: &str, target: &str) -> Result<EntryOut, i32> {
        self.call(fuse::SYMLINK, parent, &cat(&[&cs(name), &cs(target)]))
            .map(|b| EntryOut::decode(&b).unwrap())
    }

    pub fn open(&mut self, node: u64, flags: i32) -> Result<u64, i32> {
        let a = fuse::OpenIn {
            flags: flags as u32,
            open_flags: 0,
        };
        let out = self.call(fuse::OPEN, node, &a.to_bytes())?;
        Ok(fuse::OpenOut::decode(&out).unwrap().fh)
    }

    pub fn release(&mut self, fh: u64) -> Result<Vec<u8>, i32> {
        let a = fuse::ReleaseIn {
            fh,
            ..Default::default()
        };
        self.call(fuse::RELEASE, 0, &a.to_bytes())
    }

    pub fn write(&mut self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, i32> {
        let a = fuse::WriteIn {
            fh,
            offset,
            size: data.len() as u32,
            ..Default::default()
        };
        let out = self.call(fuse::WRITE, 0, &cat(&[&a.to_bytes(), data]))?;
        Ok(fuse::WriteOut::decode(&out).unwrap().size)
    }

    pub fn read(&mut self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, i32> {
        let a = fuse::ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        self.call(fuse::READ, 0, &a.to_bytes())
    }

    pub fn opendir(&mut self, node: u64) -> Result<u64, i32> {
        let out = self.call(fuse::OPENDIR, node, &fuse::OpenIn::default().to_bytes())?;
        Ok(fuse::OpenOut::decode(&out).unwrap().fh)
    }

    /// The whole listing of `node`, `size` bytes per request: each name
    /// with its nodeid (READDIRPLUS) or 0.
    pub fn list(&mut self, node: u64, plus: bool, size: u32) -> Result<Vec<(String, u64)>, i32> {
        let fh = self.opendir(node)?;
        let mut offset = 0;
        let mut names = Vec::new();
        loop {
            let a = fuse::ReadIn {
                fh,
                offset,
                size,
                ..Default::default()
            };
            let op = if plus {
                fuse::READDIRPLUS
            } else {
                fuse::READDIR
            };
            let out = self.call(op, node, &a.to_bytes())?;
            assert!(out.len() <= size as usize);
            if out.is_empty() {
                break;
            }
            let mut at = 0;
            while at < out.len() {
                let nodeid = if plus {
                    let e = EntryOut::decode(&out[at..]).unwrap();
                    at += EntryOut::SIZE;
                    e.nodeid
                } else {
                    0
                };
                let d = fuse::Dirent::decode(&out[at..]).unwrap();
                let name = &out[at + fuse::Dirent::SIZE..][..d.namelen as usize];
                names.push((String::from_utf8(name.to_vec()).unwrap(), nodeid));
                at += fuse::dirent_size(name.len());
                offset = d.off;
            }
            assert_eq!(at, out.len());
        }
        let release = fuse::ReleaseIn {
            fh,
            ..Default::default()
        };
        self.call(fuse::RELEASEDIR, node, &release.to_bytes())
            .unwrap();
        Ok(names)
    }

    /// The names `node` lists, sorted, without "." and "..".
    pub fn names(&mut self, node: u64) -> Vec<String> {
        let mut names: Vec<String> = self
            .list(node, false, 4096)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n != "." && n != "..")
            .collect();
        names.sort();
        names
    }

    pub fn forget(&mut self, node: u64, n: u64) {
        self.send(
            fuse::FORGET,
            node,
            &fuse::ForgetIn { nlookup: n }.to_bytes(),
        );
    }

    pub fn setattr(&mut self, node: u64, a: fuse::SetattrIn) -> Result<Attr, i32> {
        let out = self.call(fuse::SETATTR, node, &a.to_bytes())?;
        Ok(fuse::AttrOut::decode(&out).unwrap().attr)
    }

    pub fn rename2(
        &mut self,
        dir: u64,
        old: &str,
        newdir: u64,
        new: &str,
        flags: u32,
    ) -> Result<Vec<u8>, i32> {
        let a = fuse::Rename2In {
            newdir,
            flags,
            padding: 0,
        };
        self.call(
            fuse::RENAME2,
            dir,
            &cat(&[&a.to_bytes(), &cs(old), &cs(new)]),
        )
    }

    pub fn rename(&mut self, dir: u64, old: &str, newdir: u64, new: &str) -> Result<Vec<u8>, i32> {
        let a = fuse::RenameIn { newdir };
        self.call(
            fuse::RENAME,
            dir,
            &cat(&[&a.to_bytes(), &cs(old), &cs(new)]),
        )
    }

    pub fn link(&mut self, node: u64, newdir: u64, name: &str) -> Result<EntryOut, i32> {
        let a = fuse::LinkIn { oldnodeid: node };
        self.call(fuse::LINK, newdir, &cat(&[&a.to_bytes(), &cs(name)]))
            .map(|b| EntryOut::decode(&b).unwrap())
    }
}
