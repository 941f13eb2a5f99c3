//! The FUSE operations on one node or one open file: GETATTR, SETATTR,
//! OPEN, READ, WRITE, FSYNC, FALLOCATE, LSEEK, STATFS, ACCESS and the
//! extended attributes.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd};

use super::fuse::{self, Reader, Wire, ROOT_ID};
use super::inodes::{Handle, HandleKind, Node};
use super::names::{open_flags, opens_for_writing};
use super::quota;
use super::server::{arg, Server, MAX_IO};
use super::sys::{self, SysResult};

/// The largest extended attribute value or name list (XATTR_SIZE_MAX).
const XATTR_MAX: usize = 64 << 10;

/// fallocate modes passed through: KEEP_SIZE, PUNCH_HOLE, COLLAPSE_RANGE,
/// ZERO_RANGE, INSERT_RANGE. Not UNSHARE_RANGE: it allocates blocks inside
/// a file's size (of reflinked files), which the quota does not see.
const FALLOC_MODES: u32 = quota::FALLOC_KEEP_SIZE
    | quota::FALLOC_PUNCH_HOLE
    | quota::FALLOC_COLLAPSE_RANGE
    | quota::FALLOC_ZERO_RANGE
    | quota::FALLOC_INSERT_RANGE;

fn to_offset(v: u64) -> SysResult<i64> {
    i64::try_from(v).map_err(|_| libc::EINVAL)
}

impl Server {
    pub(super) fn getattr(&mut self, id: u64, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let _: fuse::GetattrIn = arg(r)?;
        if id == ROOT_ID {
            return Ok(self.attr_out(self.root_attr()));
        }
        let st = sys::fstat(self.node(id)?.fd.as_fd())?;
        Ok(self.attr_out(self.attr(&st)))
    }

    /// The open regular file `fh`.
    fn file(&self, fh: u64) -> SysResult<(BorrowedFd<'_>, &Handle)> {
        let h = self.handles.get(fh)?;
        match &h.kind {
            HandleKind::File(fd) => Ok((fd.as_fd(), h)),
            _ => Err(libc::EBADF),
        }
    }

    /// The open regular file `fh`, which the guest wants to change.
    fn writable_file(&self, fh: u64) -> SysResult<BorrowedFd<'_>> {
        let (fd, h) = self.file(fh)?;
        match h.share {
            Some(s) if self.shares[s].read_only => Err(libc::EROFS),
            _ => Ok(fd),
        }
    }

    /// The size of the file behind `fd`.
    fn size_of(fd: BorrowedFd<'_>) -> SysResult<u64> {
        Ok(sys::fstat(fd)?.st_size.max(0) as u64)
    }

    /// SETATTR: mode, owner, size and times in that order. Set-id bits are
    /// dropped from regular files. A symlink's mode cannot change
    /// (EOPNOTSUPP, as fchmodat(AT_SYMLINK_NOFOLLOW)); its times are set on
    /// the link itself. ctime is ignored (the host sets it).
    pub(super) fn setattr(&mut self, id: u64, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let a: fuse::SetattrIn = arg(r)?;
        let node = self.mutable_node(id)?;
        let fd = node.fd.as_fd();
        // A size that grows the file must fit the quota; checked before
        // anything changes.
        let growth = if a.valid & fuse::FATTR_SIZE != 0 && node.kind == libc::S_IFREG {
            quota::growth(Self::size_of(fd)?, a.size)
        } else {
            0
        };
        self.quota.check(growth)?;
        // Check the owner first so a refused chown changes nothing.
        let uid = match a.valid & fuse::FATTR_UID {
            0 => u32::MAX,
            _ => self.uid_to_host(a.uid)?,
        };
        let gid = match a.valid & fuse::FATTR_GID {
            0 => u32::MAX,
            _ => self.gid_to_host(a.gid)?,
        };
        if a.valid & fuse::FATTR_MODE != 0 {
            let mut mode = a.mode & 0o7777;
            match node.kind {
                libc::S_IFLNK => return Err(libc::EOPNOTSUPP),
                libc::S_IFREG => mode &= !(libc::S_ISUID | libc::S_ISGID),
                _ => {}
            }
            sys::fchmodat(self.proc_fd.as_fd(), &sys::fd_name(fd), mode)?;
        }
        if uid != u32::MAX || gid != u32::MAX {
            sys::fchown_fd(fd, uid, gid)?;
        }
        if a.valid & fuse::FATTR_SIZE != 0 {
            self.truncate(node, &a)?;
        }
        self.set_times(node, &a)?;
        let st = sys::fstat(fd)?;
        self.quota.charge(growth);
        Ok(self.attr_out(self.attr(&st)))
    }

    fn truncate(&self, node: &Node, a: &fuse::SetattrIn) -> SysResult<()> {
        let size = to_offset(a.size)?;
        if a.valid & fuse::FATTR_FH != 0 && self.file(a.fh).is_ok() {
            return sys::ftruncate(self.writable_file(a.fh)?, size);
        }
        match node.kind {
            libc::S_IFREG => {}
            libc::S_IFDIR => return Err(libc::EISDIR),
            _ => return Err(libc::EINVAL),
        }
        let file = self.reopen(node.fd.as_fd(), libc::O_WRONLY)?;
        sys::ftruncate(file.as_fd(), size)
    }

    fn set_times(&self, node: &Node, a: &fuse::SetattrIn) -> SysResult<()> {
        let time = |set: u32, now: u32, secs: u64, nsecs: u32| -> SysResult<libc::timespec> {
            Ok(if a.valid & now != 0 {
                libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_NOW,
                }
            } else if a.valid & set != 0 {
                if nsecs >= 1_000_000_000 {
                    return Err(libc::EINVAL);
                }
                libc::timespec {
                    tv_sec: secs as i64,
                    tv_nsec: nsecs as i64,
                }
            } else {
                libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                }
            })
        };
        let times = [
            time(
                fuse::FATTR_ATIME,
                fuse::FATTR_ATIME_NOW,
                a.atime,
                a.atimensec,
            )?,
            time(
                fuse::FATTR_MTIME,
                fuse::FATTR_MTIME_NOW,
                a.mtime,
                a.mtimensec,
            )?,
        ];
        if times.iter().all(|t| t.tv_nsec == libc::UTIME_OMIT) {
            return Ok(());
        }
        let fd = node.fd.as_fd();
        if node.kind == libc::S_IFLNK {
            sys::utimensat(
                fd,
                c"",
                &times,
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )
        } else {
            sys::utimensat(self.proc_fd.as_fd(), &sys::fd_name(fd), &times, 0)
        }
    }

    /// OPEN: regular files only; fifos, sockets, devices and symlinks get
    /// EACCES (opening them would block the VMM or reach host hardware).
    pub(super) fn open(&mut self, id: u64, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let a: fuse::OpenIn = arg(r)?;
        if id == ROOT_ID {
            return Err(libc::EISDIR);
        }
        let flags = open_flags(a.flags)?;
        let node = self.node(id)?;
        match node.kind {
            libc::S_IFREG => {}
            libc::S_IFDIR => return Err(libc::EISDIR),
            _ => return Err(libc::EACCES),
        }
        let share = node.share();
        if opens_for_writing(flags) && self.shares[share].read_only {
            return Err(libc::EROFS);
        }
        let file = self.reopen(node.fd.as_fd(), flags)?;
        let fh = self.handles.insert(Handle {
            share: Some(share),
            kind: HandleKind::File(file),
            append: flags & libc::O_APPEND != 0,
        })?;
        Ok(fuse::OpenOut {
            fh,
            open_flags: self.file_open_flags(),
            padding: 0,
        }
        .to_bytes())
    }

    pub(super) fn read(&mut self, r: &mut Reader<'_>, room: usize) -> SysResult<Vec<u8>> {
        let a: fuse::ReadIn = arg(r)?;
        let (fd, _) = self.file(a.fh)?;
        let mut offset = to_offset(a.offset)?;
        let len = (a.size as usize).min(MAX_IO).min(room);
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            match sys::pread(fd, &mut buf[done..], offset) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    offset = offset.saturating_add(n as i64);
                }
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// WRITE: what would grow the file past the quota is cut off, as on
    /// a full disk: a short write, then ENOSPC.
    pub(super) fn write(&mut self, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let a: fuse::WriteIn = arg(r)?;
        let mut data = r.rest();
        if data.len() != a.size as usize {
            return Err(libc::EINVAL);
        }
        let fd = self.writable_file(a.fh)?;
        let append = self.handles.get(a.fh)?.append;
        let size = Self::size_of(fd)?;
        // With O_APPEND the host writes at the end, whatever the offset.
        let start = if append { size } else { a.offset };
        let room = size.saturating_add(self.quota.remaining());
        let end = start.saturating_add(data.len() as u64);
        if end > room && !data.is_empty() {
            if start >= room {
                return Err(libc::ENOSPC);
            }
            data = &data[..(room - start) as usize];
        }
        let mut offset = to_offset(a.offset)?;
        let mut done = 0;
        while done < data.len() {
            match sys::pwrite(fd, &data[done..], offset) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    offset = offset.saturating_add(n as i64);
                }
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        self.quota
            .charge(quota::growth(size, start.saturating_add(done as u64)));
        Ok(fuse::WriteOut {
            size: done as u32,
            padding: 0,
        }
        .to_bytes())
    }

    /// FSYNC and FSYNCDIR.
    pub(super) fn fsync(&mut self, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let a: fuse::FsyncIn = arg(r)?;
        let datasync = a.fsync_flags & fuse::FSYNC_FDATASYNC != 0;
        match &self.handles.get(a.fh)?.kind {
            HandleKind::File(fd) | HandleKind::Dir { fd, .. } => sys::fsync(fd.as_fd(), datasync)?,
            HandleKind::Root => {}
        }
        Ok(Vec::new())
    }

    pub(super) fn fallocate(&mut self, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let a: fuse::FallocateIn = arg(r)?;
        let fd = self.writable_file(a.fh)?;
        if a.mode & !FALLOC_MODES != 0 {
            return Err(libc::EOPNOTSUPP);
        }
        let growth = quota::fallocate_growth(a.mode, Self::size_of(fd)?, a.offset, a.length);
        self.quota.check(growth)?;
        sys::fallocate(
            fd,
            a.mode as i32,
            to_offset(a.offset)?,
            to_offset(a.length)?,
        )?;
        self.quota.charge(growth);
        Ok(Vec::new())
    }

    pub(super) fn lseek(&mut self, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let a: fuse::LseekIn = arg(r)?;
        let (fd, _) = self.file(a.fh)?;
        let whence = a.whence as i32;
        if ![
            libc::SEEK_SET,
            libc::SEEK_CUR,
            libc::SEEK_END,
            libc::SEEK_DATA,
            libc::SEEK_HOLE,
        ]
        .contains(&whence)
        {
            return Err(libc::EINVAL);
        }
        let offset = sys::lseek(fd, a.offset as i64, whence)?;
        Ok(fuse::LseekOut {
            offset: offset as u64,
        }
        .to_bytes())
    }

    /// STATFS of the node's file system; the root answers for share 0.
    pub(super) fn statfs(&mut self, id: u64) -> SysResult<Vec<u8>> {
        let st = if id == ROOT_ID {
            match self.shares.first() {
                Some(share) => Some(sys::fstatvfs(share.root.as_fd())?),
                None => None,
            }
        } else {
            Some(sys::fstatvfs(self.node(id)?.fd.as_fd())?)
        };
        let mut out = fuse::Kstatfs {
            bsize: 4096,
            frsize: 4096,
            namelen: 255,
            ..Default::default()
        };
        if let Some(st) = st {
            // What the quota leaves, if less than the host has free.
            let left = self.quota.remaining() / st.f_frsize.max(1);
            out.blocks = st.f_blocks;
            out.bfree = st.f_bfree.min(left);
            out.bavail = st.f_bavail.min(left);
            out.files = st.f_files;
            out.ffree = st.f_ffree;
            out.bsize = st.f_bsize as u32;
            out.frsize = st.f_frsize as u32;
            out.namelen = st.f_namemax as u32;
        }
        Ok(fuse::StatfsOut { st: out }.to_bytes())
    }

    /// ACCESS: the guest checks permissions itself from the mode bits; here
    /// only writing to something read-only is refused.
    pub(super) fn access(&mut self, id: u64, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let a: fuse::AccessIn = arg(r)?;
        let read_only = if id == ROOT_ID {
            true
        } else {
            self.share(self.node(id)?).read_only
        };
        if a.mask & libc::W_OK as u32 != 0 && read_only {
            return Err(libc::EROFS);
        }
        Ok(Vec::new())
    }

    /// The /proc path of a node whose extended attributes can be reached
    /// (regular files and directories); None for the root and the other
    /// types.
    fn xattr_path(&self, id: u64) -> SysResult<Option<CString>> {
        if id == ROOT_ID {
            return Ok(None);
        }
        let node = self.node(id)?;
        Ok(match node.kind {
            libc::S_IFREG | libc::S_IFDIR => Some(sys::fd_path(node.fd.as_fd())),
            _ => None,
        })
    }

    /// The node and name of a SETXATTR or REMOVEXATTR: only "user." names,
    /// on regular files and directories of writable shares.
    fn xattr_change(&self, id: u64, name: &[u8]) -> SysResult<(CString, CString)> {
        self.mutable_node(id)?;
        if !name.starts_with(b"user.") {
            return Err(libc::EPERM);
        }
        let name = CString::new(name).map_err(|_| libc::EINVAL)?;
        let path = self.xattr_path(id)?.ok_or(libc::EPERM)?;
        Ok((path, name))
    }

    pub(super) fn getxattr(
        &mut self,
        id: u64,
        r: &mut Reader<'_>,
        room: usize,
    ) -> SysResult<Vec<u8>> {
        let a: fuse::GetxattrIn = arg(r)?;
        let name = r.cstr().ok_or(libc::EINVAL)?;
        let name = CString::new(name).map_err(|_| libc::EINVAL)?;
        let path = self.xattr_path(id)?.ok_or(libc::ENODATA)?;
        if a.size == 0 {
            let n = sys::getxattr(&path, &name, &mut [])?;
            return Ok(size_reply(n));
        }
        let mut buf = vec![0u8; (a.size as usize).min(XATTR_MAX).min(room)];
        let n = sys::getxattr(&path, &name, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    pub(super) fn listxattr(
        &mut self,
        id: u64,
        r: &mut Reader<'_>,
        room: usize,
    ) -> SysResult<Vec<u8>> {
        let a: fuse::GetxattrIn = arg(r)?;
        let Some(path) = self.xattr_path(id)? else {
            return Ok(if a.size == 0 {
                size_reply(0)
            } else {
                Vec::new()
            });
        };
        if a.size == 0 {
            let n = sys::listxattr(&path, &mut [])?;
            return Ok(size_reply(n));
        }
        let mut buf = vec![0u8; (a.size as usize).min(XATTR_MAX).min(room)];
        let n = sys::listxattr(&path, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    pub(super) fn setxattr(&mut self, id: u64, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let a: fuse::SetxattrIn = arg(r)?;
        let name = r.cstr().ok_or(libc::EINVAL)?;
        let value = r.rest();
        if value.len() != a.size as usize || value.len() > XATTR_MAX {
            return Err(libc::EINVAL);
        }
        let (path, name) = self.xattr_change(id, name)?;
        let flags = a.flags as i32 & (libc::XATTR_CREATE | libc::XATTR_REPLACE);
        let cost = (name.as_bytes().len() + value.len()) as u64;
        self.quota.check(cost)?;
        sys::setxattr(&path, &name, value, flags)?;
        self.quota.charge(cost);
        Ok(Vec::new())
    }

    pub(super) fn removexattr(&mut self, id: u64, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let name = r.cstr().ok_or(libc::EINVAL)?;
        let (path, name) = self.xattr_change(id, name)?;
        sys::removexattr(&path, &name)?;
        Ok(Vec::new())
    }
}

fn size_reply(n: usize) -> Vec<u8> {
    fuse::GetxattrOut {
        size: n as u32,
        padding: 0,
    }
    .to_bytes()
}
