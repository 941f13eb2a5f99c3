//! The FUSE operations that create, remove, rename or link names in a
//! directory (SYMLINK, MKNOD, MKDIR, CREATE, UNLINK, RMDIR, RENAME(2),
//! LINK) and READLINK.

use std::ffi::{CStr, CString};
use std::os::fd::AsFd;

use super::fuse::{self, Reader, Wire, ROOT_ID};
use super::inodes::{Handle, HandleKind};
use super::quota;
use super::server::{arg, parse_name, Server};
use super::sys::{self, SysResult};

/// Set-user-ID and set-group-ID: never given to a regular file.
const SETID: u32 = libc::S_ISUID | libc::S_ISGID;

/// The host open flags for a guest's OPEN or CREATE flags: its access mode
/// and the flags that only change how the file is used. O_DIRECT is left
/// out: host O_DIRECT needs aligned buffers the guest does not promise (and
/// tmpfs refuses it). O_CREAT, O_EXCL, O_NOFOLLOW, O_PATH, O_DIRECTORY,
/// O_NOCTTY and unknown bits never pass.
pub(super) fn open_flags(guest: u32) -> SysResult<i32> {
    let guest = guest as i32;
    let access = guest & libc::O_ACCMODE;
    if access == libc::O_ACCMODE {
        return Err(libc::EINVAL);
    }
    let kept = libc::O_APPEND | libc::O_TRUNC | libc::O_NONBLOCK | libc::O_SYNC | libc::O_DSYNC;
    Ok(access | (guest & kept))
}

/// Whether host open flags can change the file.
pub(super) fn opens_for_writing(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_TRUNC | libc::O_APPEND) != 0
}

impl Server {
    pub(super) fn symlink(&mut self, parent: u64, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let name = parse_name(r)?;
        let target = r.cstr().ok_or(libc::EINVAL)?;
        if target.len() >= libc::PATH_MAX as usize {
            return Err(libc::ENAMETOOLONG);
        }
        let target = CString::new(target).map_err(|_| libc::EINVAL)?;
        let dir = self.mutable_dir(parent, &name)?;
        let cost =
            quota::name_cost(libc::S_IFLNK, name.as_bytes().len()) + target.as_bytes().len() as u64;
        self.quota.check(cost)?;
        sys::symlinkat(&target, dir.fd.as_fd(), &name)?;
        self.quota.charge(cost);
        self.created_entry(parent, &name)
    }

    pub(super) fn mknod(&mut self, parent: u64, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let a: fuse::MknodIn = arg(r)?;
        let name = parse_name(r)?;
        let kind = a.mode & libc::S_IFMT;
        match kind {
            libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK => {}
            libc::S_IFCHR | libc::S_IFBLK => return Err(libc::EPERM),
            _ => return Err(libc::EINVAL),
        }
        let mode = kind | (a.mode & 0o7777 & !a.umask & !SETID);
        let dir = self.mutable_dir(parent, &name)?;
        let cost = quota::name_cost(kind, name.as_bytes().len());
        self.quota.check(cost)?;
        sys::mknodat(dir.fd.as_fd(), &name, mode)?;
        self.quota.charge(cost);
        self.created_entry(parent, &name)
    }

    pub(super) fn mkdir(&mut self, parent: u64, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let a: fuse::MkdirIn = arg(r)?;
        let name = parse_name(r)?;
        let dir = self.mutable_dir(parent, &name)?;
        let cost = quota::name_cost(libc::S_IFDIR, name.as_bytes().len());
        self.quota.check(cost)?;
        sys::mkdirat(dir.fd.as_fd(), &name, a.mode & 0o7777 & !a.umask)?;
        self.quota.charge(cost);
        self.created_entry(parent, &name)
    }

    /// The entry of a name just made in `parent`.
    fn created_entry(&mut self, parent: u64, name: &CStr) -> SysResult<Vec<u8>> {
        Ok(self.lookup_entry(parent, name)?.to_bytes())
    }

    pub(super) fn create(&mut self, parent: u64, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let a: fuse::CreateIn = arg(r)?;
        let name = parse_name(r)?;
        let flags = open_flags(a.flags)?;
        let mode = a.mode & 0o7777 & !a.umask & !SETID;
        let dir = self.mutable_dir(parent, &name)?;
        let share = dir.share();
        let cost = quota::name_cost(libc::S_IFREG, name.as_bytes().len());
        let fits = self.quota.check(cost);
        // Always O_EXCL first: opening an existing name here could open a
        // fifo (blocking the VMM) or a device node. Without room for a new
        // name, only an existing file can be opened.
        let opened = match fits {
            Ok(()) => sys::openat(
                dir.fd.as_fd(),
                &name,
                flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode,
            ),
            Err(_) => Err(libc::EEXIST),
        };
        let (file, created) = match opened {
            Ok(file) => (file, true),
            Err(libc::EEXIST) if a.flags as i32 & libc::O_EXCL == 0 => {
                let path = match sys::openat(
                    dir.fd.as_fd(),
                    &name,
                    libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0,
                ) {
                    Err(libc::ENOENT) => return Err(fits.err().unwrap_or(libc::ENOENT)),
                    other => other?,
                };
                match sys::fstat(path.as_fd())?.st_mode & libc::S_IFMT {
                    libc::S_IFREG => (self.reopen(path.as_fd(), flags)?, false),
                    libc::S_IFDIR => return Err(libc::EISDIR),
                    _ => return Err(libc::EACCES),
                }
            }
            Err(e) => return Err(fits.err().unwrap_or(e)),
        };
        if created {
            self.quota.charge(cost);
        }
        // The node's O_PATH fd, of exactly the inode just opened.
        let path = self.reopen(file.as_fd(), libc::O_PATH)?;
        let fh = self.handles.insert(Handle {
            share: Some(share),
            kind: HandleKind::File(file),
            append: flags & libc::O_APPEND != 0,
        })?;
        let entry = match self.register(share, path) {
            Ok(entry) => entry,
            Err(e) => {
                let _ = self.handles.remove(fh);
                return Err(e);
            }
        };
        let mut out = entry.to_bytes();
        fuse::OpenOut {
            fh,
            open_flags: self.file_open_flags(),
            padding: 0,
        }
        .encode(&mut out);
        Ok(out)
    }

    /// fuse_open_out.open_flags for a regular file.
    pub(super) fn file_open_flags(&self) -> u32 {
        if self.options.direct_io {
            fuse::FOPEN_DIRECT_IO
        } else {
            0
        }
    }

    /// UNLINK (`flags` 0) and RMDIR (`flags` AT_REMOVEDIR).
    pub(super) fn remove(
        &mut self,
        parent: u64,
        r: &mut Reader<'_>,
        flags: i32,
    ) -> SysResult<Vec<u8>> {
        let name = parse_name(r)?;
        let dir = match self.mutable_dir(parent, &name) {
            // A hidden name does not exist for the guest.
            Err(libc::EPERM) if parent != ROOT_ID => return Err(libc::ENOENT),
            other => other?,
        };
        sys::unlinkat(dir.fd.as_fd(), &name, flags)?;
        Ok(Vec::new())
    }

    /// RENAME (`flags` 0) and RENAME2; the names follow in `r`.
    pub(super) fn rename(
        &mut self,
        parent: u64,
        newdir: u64,
        flags: u32,
        r: &mut Reader<'_>,
    ) -> SysResult<Vec<u8>> {
        let old = parse_name(r)?;
        let new = parse_name(r)?;
        if flags & !(fuse::RENAME_NOREPLACE | fuse::RENAME_EXCHANGE) != 0 {
            return Err(libc::EINVAL);
        }
        if parent == ROOT_ID || newdir == ROOT_ID {
            return Err(libc::EPERM);
        }
        if self.node(parent)?.share() != self.node(newdir)?.share() {
            return Err(libc::EXDEV);
        }
        let from = self.mutable_dir(parent, &old)?;
        let to = self.mutable_dir(newdir, &new)?;
        sys::renameat2(from.fd.as_fd(), &old, to.fd.as_fd(), &new, flags)?;
        Ok(Vec::new())
    }

    pub(super) fn link(&mut self, newparent: u64, r: &mut Reader<'_>) -> SysResult<Vec<u8>> {
        let a: fuse::LinkIn = arg(r)?;
        let name = parse_name(r)?;
        if a.oldnodeid == ROOT_ID || newparent == ROOT_ID {
            return Err(libc::EPERM);
        }
        let old = self.node(a.oldnodeid)?;
        if old.share() != self.node(newparent)?.share() {
            return Err(libc::EXDEV);
        }
        let dir = self.mutable_dir(newparent, &name)?;
        let cost = quota::name_cost(old.kind, name.as_bytes().len());
        self.quota.check(cost)?;
        // The magic link resolves to the inode itself (even a symlink's),
        // and linkat needs no privilege this way, unlike AT_EMPTY_PATH.
        sys::linkat(
            self.proc_fd.as_fd(),
            &sys::fd_name(old.fd.as_fd()),
            dir.fd.as_fd(),
            &name,
            libc::AT_SYMLINK_FOLLOW,
        )?;
        let st = sys::fstat(old.fd.as_fd())?;
        self.quota.charge(cost);
        self.nodes.add_ref(a.oldnodeid);
        Ok(self.entry(a.oldnodeid, &st).to_bytes())
    }

    pub(super) fn readlink(&mut self, id: u64, room: usize) -> SysResult<Vec<u8>> {
        if id == ROOT_ID {
            return Err(libc::EINVAL);
        }
        let node = self.node(id)?;
        if node.kind != libc::S_IFLNK {
            return Err(libc::EINVAL);
        }
        let target = sys::readlink_fd(node.fd.as_fd())?;
        if target.len() > room {
            return Err(libc::ENAMETOOLONG);
        }
        Ok(target)
    }
}
