//! The FUSE request server behind virtio-fs: a passthrough file system over
//! host directories ("shares"), confined for an untrusted guest.
//!
//! The FUSE root (node 1) is a synthetic read-only directory whose entries
//! "0", "1", ... are the shares' top directories. Every other node holds an
//! `O_PATH|O_NOFOLLOW` fd of its host inode; every host call is relative to
//! such an fd with one validated name component (or goes through
//! /proc/self/fd to the inode itself), so no host path is ever built from
//! guest bytes and no host symlink is ever followed.

use std::ffi::{CStr, CString, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::fuse::{self, Attr, AttrOut, EntryOut, InHeader, InitInCompat, InitOut, OutHeader};
use super::fuse::{Reader, Wire, ROOT_ID};
use super::inodes::{Handles, InodeKey, Node, Nodes};
use super::quota::Quota;
use super::sys::{self, SysResult};

/// The largest WRITE we take and READ we serve (max_write).
pub const MAX_IO: usize = 1 << 20;
/// max_pages offered at INIT (MAX_IO in 4 KiB pages).
const MAX_PAGES: u16 = 256;
/// blksize reported for every inode.
const BLKSIZE: u32 = 4096;
/// The id reported for host users and groups the guest cannot name.
const NOBODY: u32 = 65534;
/// The longest name component.
const NAME_MAX: usize = 255;

/// One host directory served to the guest: already open, reached beneath
/// the project (or a directory the user allowed) without following a
/// symlink, so no path is looked up again when the server starts.
#[derive(Debug, Clone)]
pub struct ShareSpec {
    /// The directory (an O_PATH|O_DIRECTORY descriptor).
    pub root: Arc<OwnedFd>,
    /// Its device and inode: which directory it is.
    pub id: (u64, u64),
    /// The host path it was reached by, for messages.
    pub path: PathBuf,
    pub read_only: bool,
    /// Names hidden at this share's top directory only (e.g. ".cella").
    pub hidden: Vec<OsString>,
}

impl ShareSpec {
    /// A share of the directory `dir`.
    pub fn new(
        dir: crate::hostfs::Dir,
        read_only: bool,
        hidden: Vec<OsString>,
    ) -> Result<ShareSpec, crate::hostfs::FsError> {
        let meta = dir.meta()?;
        let path = dir.path().to_path_buf();
        Ok(ShareSpec {
            root: Arc::new(dir.into_fd()),
            id: (meta.dev, meta.ino),
            path,
            read_only,
            hidden,
        })
    }
}

/// The same directory, shared the same way.
impl PartialEq for ShareSpec {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.read_only == other.read_only && self.hidden == other.hidden
    }
}

impl Eq for ShareSpec {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    /// FOPEN_DIRECT_IO on every regular-file OPEN/CREATE reply (and
    /// FUSE_DIRECT_IO_ALLOW_MMAP at INIT when the guest offers it).
    pub direct_io: bool,
    /// Entry and attribute validity in replies.
    pub timeout: Duration,
    /// Bytes the guest may add to the shares (`limits.write`; see
    /// quota.rs); past it, ENOSPC.
    pub write_quota: u64,
}

/// An opened share.
pub(super) struct Share {
    pub root: OwnedFd,
    pub read_only: bool,
    pub hidden: Vec<Vec<u8>>,
    pub dev: u64,
    pub ino: u64,
}

/// The FUSE server: the shares, the nodes and handles the guest holds, and
/// the negotiated protocol state.
pub struct Server {
    pub(super) shares: Vec<Share>,
    pub(super) options: ServerOptions,
    pub(super) nodes: Nodes,
    pub(super) handles: Handles,
    /// /proc, to reach a node's inode from its O_PATH fd through
    /// "self/fd/N".
    pub(super) proc_fd: OwnedFd,
    pub(super) euid: u32,
    pub(super) egid: u32,
    /// What the guest may still add; DESTROY does not reset it.
    pub(super) quota: Quota,
    initialized: bool,
    created: (u64, u32),
    /// Set by the first request that reaches beyond the root and the
    /// shares' top directories ([`Server::beyond_tops`]).
    beyond: Arc<AtomicBool>,
}

/// Whether the request expects no reply.
fn no_reply(opcode: u32) -> bool {
    matches!(
        opcode,
        fuse::FORGET | fuse::BATCH_FORGET | fuse::INTERRUPT | fuse::NOTIFY_REPLY
    )
}

/// The reply to `request` when it cannot be served at all (no server yet):
/// `errno`, or nothing for the opcodes that take no reply.
pub fn refusal(request: &[u8], errno: i32) -> Option<Vec<u8>> {
    let h = InHeader::decode(request)?;
    (!no_reply(h.opcode)).then(|| reply(h.unique, -errno, &[]))
}

/// The payload size of a successful reply of fixed size, checked against
/// the guest's room before anything is done.
fn fixed_reply_size(opcode: u32) -> usize {
    match opcode {
        fuse::LOOKUP | fuse::MKNOD | fuse::MKDIR | fuse::SYMLINK | fuse::LINK => EntryOut::SIZE,
        fuse::CREATE => EntryOut::SIZE + fuse::OpenOut::SIZE,
        fuse::GETATTR | fuse::SETATTR => AttrOut::SIZE,
        fuse::OPEN | fuse::OPENDIR => fuse::OpenOut::SIZE,
        fuse::WRITE => fuse::WriteOut::SIZE,
        fuse::STATFS => fuse::StatfsOut::SIZE,
        fuse::LSEEK => fuse::LseekOut::SIZE,
        fuse::INIT => fuse::COMPAT_22_INIT_OUT_SIZE,
        _ => 0,
    }
}

/// A complete reply: the header and `payload`.
fn reply(unique: u64, error: i32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(OutHeader::SIZE + payload.len());
    OutHeader {
        len: (OutHeader::SIZE + payload.len()) as u32,
        error,
        unique,
    }
    .encode(&mut out);
    out.extend_from_slice(payload);
    out
}

/// Validates one name component from the guest: NUL-terminated, not empty,
/// not "." or "..", no '/', at most NAME_MAX bytes.
pub(super) fn parse_name(r: &mut Reader<'_>) -> SysResult<CString> {
    let name = r.cstr().ok_or(libc::EINVAL)?;
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(libc::EINVAL);
    }
    if name.len() > NAME_MAX {
        return Err(libc::ENAMETOOLONG);
    }
    CString::new(name).map_err(|_| libc::EINVAL)
}

/// The fixed argument struct of a request.
pub(super) fn arg<T: Wire>(r: &mut Reader<'_>) -> SysResult<T> {
    r.read::<T>().ok_or(libc::EINVAL)
}

/// A host dev_t in the kernel's 32-bit "new" encoding, as fuse_attr.rdev.
fn encode_rdev(dev: u64) -> u32 {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)) as u32
}

impl Server {
    /// Opens every share root; the error names the path. Needs /proc (to
    /// reopen nodes through /proc/self/fd), and raises the soft limit on
    /// open fds to the hard one: each node the guest holds is an open fd.
    pub fn new(shares: Vec<ShareSpec>, options: ServerOptions) -> std::io::Result<Server> {
        let open_dir = |path: &std::path::Path| -> std::io::Result<OwnedFd> {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(path)
                .map(OwnedFd::from)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        let mut opened = Vec::with_capacity(shares.len());
        for spec in shares {
            let shown = || crate::hostfs::Shown(&spec.path).to_string();
            let root = spec
                .root
                .try_clone()
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", shown())))?;
            let st = sys::fstat(root.as_fd()).map_err(|e| {
                let err = std::io::Error::from_raw_os_error(e);
                std::io::Error::new(err.kind(), format!("{}: {err}", shown()))
            })?;
            opened.push(Share {
                root,
                read_only: spec.read_only,
                hidden: spec.hidden.into_iter().map(OsString::into_vec).collect(),
                dev: st.st_dev,
                ino: st.st_ino,
            });
        }
        let proc_fd = open_dir(std::path::Path::new("/proc"))?;
        sys::raise_fd_limit();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // SAFETY: geteuid and getegid cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut nodes = Nodes::new();
        for (index, share) in opened.iter().enumerate() {
            let key = InodeKey {
                share: index,
                dev: share.dev,
                ino: share.ino,
            };
            let fd = share
                .root
                .try_clone()
                .map_err(|e| std::io::Error::new(e.kind(), format!("share {index}: {e}")))?;
            nodes.pin(key, fd);
        }
        nodes.start_ids_randomly()?;
        let mut handles = Handles::new();
        handles.start_randomly()?;
        Ok(Server {
            shares: opened,
            options,
            nodes,
            handles,
            proc_fd,
            euid,
            egid,
            quota: Quota::new(options.write_quota),
            initialized: false,
            created: (now.as_secs(), now.subsec_nanos()),
            beyond: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A flag that turns true once the guest has asked for anything
    /// beneath a share's top directory (a lookup in it, an open, a node
    /// below it): what a warm snapshot that holds a run ready must not
    /// carry, since the next server knows none of those nodes, and what
    /// the guest found there was this run's /work, not the next one's.
    /// The guest's own checks are a string match; this sees every request.
    pub fn beyond_tops(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.beyond)
    }

    /// Each share's directory, as the server reaches it.
    pub fn share_roots(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        self.shares.iter().map(|s| s.root.as_fd()).collect()
    }

    /// The host identity (device, inode) of each share's directory.
    pub fn share_identities(&self) -> Vec<(u64, u64)> {
        self.shares.iter().map(|s| (s.dev, s.ino)).collect()
    }

    /// Notes a request that reaches beyond the root and the share tops.
    fn note_reach(&self, h: &InHeader) {
        let is_top = |id: u64| id == ROOT_ID || self.nodes.get(id).is_some_and(|n| n.pinned);
        let reach = match h.opcode {
            fuse::INIT | fuse::DESTROY | fuse::INTERRUPT | fuse::BATCH_FORGET | fuse::STATFS => {
                false
            }
            fuse::LOOKUP => h.nodeid != ROOT_ID,
            fuse::GETATTR | fuse::FORGET => !is_top(h.nodeid),
            _ => true,
        };
        if reach {
            self.beyond.store(true, Ordering::Relaxed);
        }
    }

    /// Serves one FUSE request (in header + its arguments, exactly the bytes
    /// the guest put in the device-readable descriptors). Returns the
    /// complete reply (fuse_out_header + payload) to copy into the
    /// device-writable descriptors, or None when the opcode takes no reply
    /// (FORGET, BATCH_FORGET, INTERRUPT, NOTIFY_REPLY). Never returns more
    /// than `max_reply` bytes: when even a header does not fit, the reply
    /// is empty. Never panics on any input.
    pub fn handle(&mut self, request: &[u8], max_reply: usize) -> Option<Vec<u8>> {
        let header = InHeader::decode(request);
        if let Some(h) = &header {
            self.note_reach(h);
            if no_reply(h.opcode) {
                if let Some(body) = self.body(h, request) {
                    self.no_reply_op(h, body);
                }
                return None;
            }
        }
        if max_reply < OutHeader::SIZE {
            return Some(Vec::new());
        }
        let Some(h) = header else {
            let unique = request.get(8..16).and_then(u64::decode).unwrap_or(0);
            return Some(reply(unique, -libc::EINVAL, &[]));
        };
        let room = max_reply - OutHeader::SIZE;
        let result = match self.body(&h, request) {
            None => Err(libc::EINVAL),
            Some(_) if fixed_reply_size(h.opcode) > room => Err(libc::EIO),
            Some(_) if !self.initialized && h.opcode != fuse::INIT => Err(libc::EIO),
            Some(body) => self.dispatch(&h, &mut Reader::new(body), room),
        };
        Some(match result {
            Ok(payload) if payload.len() <= room => reply(h.unique, 0, &payload),
            Ok(_) => reply(h.unique, -libc::EIO, &[]),
            Err(e) => reply(h.unique, -e.abs(), &[]),
        })
    }

    /// The argument bytes of a request: after the header, up to its `len`,
    /// without the trailing extensions.
    fn body<'a>(&self, h: &InHeader, request: &'a [u8]) -> Option<&'a [u8]> {
        let len = h.len as usize;
        let body = request.get(InHeader::SIZE..len)?;
        let ext = h.total_extlen as usize * 8;
        body.get(..body.len().checked_sub(ext)?)
    }

    fn no_reply_op(&mut self, h: &InHeader, body: &[u8]) {
        let mut r = Reader::new(body);
        match h.opcode {
            fuse::FORGET => {
                if let Some(f) = r.read::<fuse::ForgetIn>() {
                    self.nodes.forget(h.nodeid, f.nlookup);
                }
            }
            fuse::BATCH_FORGET => {
                let Some(b) = r.read::<fuse::BatchForgetIn>() else {
                    return;
                };
                for _ in 0..b.count {
                    let Some(one) = r.read::<fuse::ForgetOne>() else {
                        break;
                    };
                    self.nodes.forget(one.nodeid, one.nlookup);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, h: &InHeader, r: &mut Reader<'_>, room: usize) -> SysResult<Vec<u8>> {
        let id = h.nodeid;
        match h.opcode {
            fuse::INIT => self.init(r),
            fuse::DESTROY => {
                self.nodes.clear();
                self.handles.clear();
                self.initialized = false;
                Ok(Vec::new())
            }
            fuse::LOOKUP => {
                let name = parse_name(r)?;
                match self.lookup_entry(id, &name) {
                    // A missing name is cached by the guest for the entry
                    // timeout (nodeid 0): every request is costly guest
                    // kernel work, and PATH searches repeat misses.
                    Err(libc::ENOENT) if id != ROOT_ID => {
                        let (secs, nsecs) = self.validity();
                        Ok(EntryOut {
                            entry_valid: secs,
                            entry_valid_nsec: nsecs,
                            ..EntryOut::default()
                        }
                        .to_bytes())
                    }
                    other => Ok(other?.to_bytes()),
                }
            }
            fuse::GETATTR => self.getattr(id, r),
            fuse::SETATTR => self.setattr(id, r),
            fuse::READLINK => self.readlink(id, room),
            fuse::SYMLINK => self.symlink(id, r),
            fuse::MKNOD => self.mknod(id, r),
            fuse::MKDIR => self.mkdir(id, r),
            fuse::UNLINK => self.remove(id, r, 0),
            fuse::RMDIR => self.remove(id, r, libc::AT_REMOVEDIR),
            fuse::RENAME => {
                let a: fuse::RenameIn = arg(r)?;
                self.rename(id, a.newdir, 0, r)
            }
            fuse::RENAME2 => {
                let a: fuse::Rename2In = arg(r)?;
                self.rename(id, a.newdir, a.flags, r)
            }
            fuse::LINK => self.link(id, r),
            fuse::OPEN => self.open(id, r),
            fuse::READ => self.read(r, room),
            fuse::WRITE => self.write(r),
            fuse::STATFS => self.statfs(id),
            fuse::RELEASE | fuse::RELEASEDIR => {
                let a: fuse::ReleaseIn = arg(r)?;
                self.handles.remove(a.fh).map(|_| Vec::new())
            }
            fuse::FSYNC | fuse::FSYNCDIR => self.fsync(r),
            // Nothing to do on close: ENOSYS tells the guest never to send
            // FLUSH again, saving a round trip per close.
            fuse::FLUSH => Err(libc::ENOSYS),
            fuse::SETXATTR => self.setxattr(id, r),
            fuse::GETXATTR => self.getxattr(id, r, room),
            fuse::LISTXATTR => self.listxattr(id, r, room),
            fuse::REMOVEXATTR => self.removexattr(id, r),
            fuse::OPENDIR => self.opendir(id),
            fuse::READDIR => self.readdir(r, room, false),
            fuse::READDIRPLUS => self.readdir(r, room, true),
            fuse::ACCESS => self.access(id, r),
            fuse::CREATE => self.create(id, r),
            fuse::FALLOCATE => self.fallocate(r),
            fuse::LSEEK => self.lseek(r),
            _ => Err(libc::ENOSYS),
        }
    }

    fn init(&mut self, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let init: InitInCompat = arg(r)?;
        let mut out = InitOut {
            major: fuse::KERNEL_VERSION,
            minor: fuse::KERNEL_MINOR_VERSION,
            ..Default::default()
        };
        if init.major < fuse::KERNEL_VERSION {
            return Err(libc::EPROTO);
        }
        if init.major > fuse::KERNEL_VERSION {
            // The guest retries with our major version.
            return Ok(out.to_bytes());
        }
        if init.minor < fuse::MIN_MINOR_VERSION {
            return Err(libc::EPROTO);
        }
        let mut offered = init.flags as u64;
        if offered & fuse::INIT_EXT != 0 {
            if let Some(flags2) = r.read::<u32>() {
                offered |= (flags2 as u64) << 32;
            }
        }
        let mut wanted = fuse::ASYNC_READ
            | fuse::ATOMIC_O_TRUNC
            | fuse::BIG_WRITES
            | fuse::DO_READDIRPLUS
            | fuse::READDIRPLUS_AUTO
            | fuse::PARALLEL_DIROPS
            | fuse::MAX_PAGES
            | fuse::INIT_EXT;
        if self.options.direct_io {
            wanted |= fuse::DIRECT_IO_ALLOW_MMAP;
        }
        let agreed = offered & wanted;
        out.minor = init.minor.min(fuse::KERNEL_MINOR_VERSION);
        out.max_readahead = init.max_readahead;
        out.flags = agreed as u32;
        out.flags2 = (agreed >> 32) as u32;
        out.max_background = 16;
        out.congestion_threshold = 12;
        out.max_write = MAX_IO as u32;
        out.time_gran = 1;
        out.max_pages = MAX_PAGES;
        let mut bytes = out.to_bytes();
        if out.minor < fuse::MINOR_INIT_OUT_FULL {
            bytes.truncate(fuse::COMPAT_22_INIT_OUT_SIZE);
        }
        self.initialized = true;
        Ok(bytes)
    }

    /// Takes the FUSE session as started: for a VM restored from a warm
    /// snapshot, whose guest mounted the device (and had INIT answered by
    /// the server of the run that saved it) before it was saved. What INIT
    /// agrees on is fixed by this code, so the guest's view holds. The
    /// guest holds no node but the root and the share tops, whose IDs
    /// every server gives alike (a snapshot whose guest reached further
    /// is not saved: [`Server::beyond_tops`]).
    pub fn resume_session(&mut self) {
        self.initialized = true;
    }

    /// A node of a share (never the synthetic root).
    pub(super) fn node(&self, id: u64) -> SysResult<&Node> {
        self.nodes.get(id).ok_or(libc::ENOENT)
    }

    pub(super) fn share(&self, node: &Node) -> &Share {
        &self.shares[node.share()]
    }

    /// Whether `name` is hidden in `dir`.
    pub(super) fn is_hidden(&self, dir: &Node, name: &CStr) -> bool {
        dir.is_top
            && self
                .share(dir)
                .hidden
                .iter()
                .any(|h| h.as_slice() == name.to_bytes())
    }

    /// The directory node `id` where the guest wants to create, remove or
    /// rename `name`: not the root, not read-only, `name` not hidden.
    pub(super) fn mutable_dir(&self, id: u64, name: &CStr) -> SysResult<&Node> {
        if id == ROOT_ID {
            return Err(libc::EPERM);
        }
        let dir = self.node(id)?;
        if self.share(dir).read_only {
            return Err(libc::EROFS);
        }
        if self.is_hidden(dir, name) {
            return Err(libc::EPERM);
        }
        Ok(dir)
    }

    /// A non-root node the guest wants to change.
    pub(super) fn mutable_node(&self, id: u64) -> SysResult<&Node> {
        if id == ROOT_ID {
            return Err(libc::EPERM);
        }
        let node = self.node(id)?;
        if self.share(node).read_only {
            return Err(libc::EROFS);
        }
        Ok(node)
    }

    /// Looks `name` up in directory `parent` and counts the lookup: what
    /// LOOKUP, READDIRPLUS and the creating ops reply.
    pub(super) fn lookup_entry(&mut self, parent: u64, name: &CStr) -> SysResult<EntryOut> {
        if parent == ROOT_ID {
            let index = self.share_index(name.to_bytes()).ok_or(libc::ENOENT)?;
            let fd = self.shares[index]
                .root
                .try_clone()
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
            return self.register(index, fd);
        }
        let dir = self.node(parent)?;
        if self.is_hidden(dir, name) {
            return Err(libc::ENOENT);
        }
        let share = dir.share();
        let fd = sys::openat(
            dir.fd.as_fd(),
            name,
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
        )?;
        self.register(share, fd)
    }

    /// The share a root entry name stands for: its index in decimal.
    fn share_index(&self, name: &[u8]) -> Option<usize> {
        if name.is_empty() || name.len() > 9 || !name.iter().all(u8::is_ascii_digit) {
            return None;
        }
        if name.len() > 1 && name[0] == b'0' {
            return None;
        }
        let index: usize = std::str::from_utf8(name).ok()?.parse().ok()?;
        (index < self.shares.len()).then_some(index)
    }

    /// Counts a lookup of the inode `fd` (an O_PATH fd) of `share` and
    /// returns its entry.
    pub(super) fn register(&mut self, share: usize, fd: OwnedFd) -> SysResult<EntryOut> {
        let st = sys::fstat(fd.as_fd())?;
        let key = InodeKey {
            share,
            dev: st.st_dev,
            ino: st.st_ino,
        };
        let s = &self.shares[share];
        let is_top = s.dev == st.st_dev && s.ino == st.st_ino;
        let id = self
            .nodes
            .insert_or_ref(key, st.st_mode & libc::S_IFMT, is_top, fd)?;
        Ok(self.entry(id, &st))
    }

    pub(super) fn entry(&self, nodeid: u64, st: &libc::stat) -> EntryOut {
        let (secs, nsecs) = self.validity();
        EntryOut {
            nodeid,
            generation: 0,
            entry_valid: secs,
            attr_valid: secs,
            entry_valid_nsec: nsecs,
            attr_valid_nsec: nsecs,
            attr: self.attr(st),
        }
    }

    pub(super) fn attr_out(&self, attr: Attr) -> Vec<u8> {
        let (secs, nsecs) = self.validity();
        AttrOut {
            attr_valid: secs,
            attr_valid_nsec: nsecs,
            dummy: 0,
            attr,
        }
        .to_bytes()
    }

    fn validity(&self) -> (u64, u32) {
        (
            self.options.timeout.as_secs(),
            self.options.timeout.subsec_nanos(),
        )
    }

    /// The guest's view of a host stat.
    pub(super) fn attr(&self, st: &libc::stat) -> Attr {
        Attr {
            ino: st.st_ino,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: st.st_atime as u64,
            mtime: st.st_mtime as u64,
            ctime: st.st_ctime as u64,
            atimensec: st.st_atime_nsec as u32,
            mtimensec: st.st_mtime_nsec as u32,
            ctimensec: st.st_ctime_nsec as u32,
            mode: st.st_mode,
            #[allow(clippy::useless_conversion)]
            nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
            uid: self.uid_to_guest(st.st_uid),
            gid: self.gid_to_guest(st.st_gid),
            rdev: encode_rdev(st.st_rdev),
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    /// The synthetic root directory's attributes.
    pub(super) fn root_attr(&self) -> Attr {
        let (secs, nsecs) = self.created;
        Attr {
            ino: ROOT_ID,
            size: 4096,
            blocks: 0,
            atime: secs,
            mtime: secs,
            ctime: secs,
            atimensec: nsecs,
            mtimensec: nsecs,
            ctimensec: nsecs,
            mode: libc::S_IFDIR | 0o555,
            nlink: 2u32.saturating_add(self.shares.len() as u32),
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    pub(super) fn uid_to_guest(&self, uid: u32) -> u32 {
        if uid == self.euid {
            0
        } else if self.euid == 0 {
            uid
        } else {
            NOBODY
        }
    }

    pub(super) fn gid_to_guest(&self, gid: u32) -> u32 {
        if gid == self.egid {
            0
        } else if self.euid == 0 {
            gid
        } else {
            NOBODY
        }
    }

    /// The host uid a guest uid stands for in SETATTR.
    pub(super) fn uid_to_host(&self, uid: u32) -> SysResult<u32> {
        match uid {
            0 => Ok(self.euid),
            _ if self.euid == 0 => Ok(uid),
            _ => Err(libc::EPERM),
        }
    }

    pub(super) fn gid_to_host(&self, gid: u32) -> SysResult<u32> {
        match gid {
            0 => Ok(self.egid),
            _ if self.euid == 0 => Ok(gid),
            _ => Err(libc::EPERM),
        }
    }

    /// Opens the inode behind the O_PATH fd `fd` for real, through its
    /// /proc/self/fd magic link (which resolves to the inode itself).
    pub(super) fn reopen(&self, fd: std::os::fd::BorrowedFd<'_>, flags: i32) -> SysResult<OwnedFd> {
        sys::openat(
            self.proc_fd.as_fd(),
            &sys::fd_name(fd),
            flags | libc::O_CLOEXEC,
            0,
        )
    }
}
