//! Thin wrappers over the fd-relative host system calls the file server
//! uses; every error is the raw errno, ready for a FUSE reply.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A host call's result: the value or a positive errno.
pub type SysResult<T> = Result<T, i32>;

/// The calling thread's errno, EIO if it somehow has none.
pub fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(ret: libc::c_int) -> SysResult<()> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn check_size(ret: isize) -> SysResult<usize> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret as usize)
    }
}

/// An fd's magic link relative to a /proc fd: "self/fd/N". "self" is
/// resolved at each call, so it stays right after a fork.
pub fn fd_name(fd: BorrowedFd<'_>) -> CString {
    // A decimal number never contains a NUL.
    CString::new(format!("self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// An fd's /proc/self/fd path, for the calls that take no directory fd.
pub fn fd_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    // SAFETY: `name` is a valid C string; openat reads it and returns a new
    // fd or -1.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` was just returned by openat, so we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The stat of `fd` itself, never following a symlink.
pub fn fstat(fd: BorrowedFd<'_>) -> SysResult<libc::stat> {
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the path is an empty C string and `st` is a writable stat.
    let ret = unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(ret).map(|()| st)
}

pub fn fstatvfs(fd: BorrowedFd<'_>) -> SysResult<libc::statvfs> {
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a writable statvfs.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) }).map(|()| st)
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> SysResult<()> {
    // SAFETY: `name` is a valid C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> SysResult<()> {
    // SAFETY: `name` is a valid C string; rdev 0 (no device nodes).
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> SysResult<()> {
    // SAFETY: both are valid C strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> SysResult<()> {
    // SAFETY: `name` is a valid C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

pub fn renameat2(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
    flags: u32,
) -> SysResult<()> {
    // SAFETY: both names are valid C strings; renameat2 takes plain fds.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    };
    if ret < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

pub fn linkat(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
    flags: i32,
) -> SysResult<()> {
    // SAFETY: both names are valid C strings.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })
}

/// The target of the symlink `fd` (an O_PATH fd of the link itself).
pub fn readlink_fd(fd: BorrowedFd<'_>) -> SysResult<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for its full length.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = check_size(n)?;
    buf.truncate(n);
    Ok(buf)
}

pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> SysResult<()> {
    // SAFETY: `name` is a valid C string.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })
}

/// Changes the owner of `fd` itself (never a symlink's target).
pub fn fchown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> SysResult<()> {
    // SAFETY: the path is an empty C string naming `fd` itself.
    check(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub fn utimensat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    times: &[libc::timespec; 2],
    flags: i32,
) -> SysResult<()> {
    // SAFETY: `name` is a valid C string and `times` two timespecs.
    check(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), flags) })
}

pub fn ftruncate(fd: BorrowedFd<'_>, len: i64) -> SysResult<()> {
    // SAFETY: plain fd call.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: i64) -> SysResult<usize> {
    loop {
        // SAFETY: `buf` is writable for its full length.
        let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), offset) };
        match check_size(n) {
            Err(libc::EINTR) => continue,
            r => return r,
        }
    }
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: i64) -> SysResult<usize> {
    loop {
        // SAFETY: `buf` is readable for its full length.
        let n = unsafe { libc::pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), offset) };
        match check_size(n) {
            Err(libc::EINTR) => continue,
            r => return r,
        }
    }
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> SysResult<()> {
    // SAFETY: plain fd calls.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: i64, len: i64) -> SysResult<()> {
    // SAFETY: plain fd call.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset, len) })
}

pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: i32) -> SysResult<i64> {
    // SAFETY: plain fd call.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// Reads directory entries (struct linux_dirent64 records) into `buf`.
pub fn getdents64(fd: BorrowedFd<'_>, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: `buf` is writable for its full length.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    check_size(n as isize)
}

/// One record decoded from a getdents64 buffer.
pub struct DirEntry<'a> {
    pub ino: u64,
    pub off: u64,
    pub typ: u8,
    pub name: &'a [u8],
}

/// Splits a getdents64 buffer into records, stopping at anything malformed.
pub fn parse_dirents(buf: &[u8]) -> Vec<DirEntry<'_>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name + NUL.
    while let Some(head) = buf.get(at..at + 19) {
        let ino = u64::from_ne_bytes(head[0..8].try_into().unwrap_or_default());
        let off = u64::from_ne_bytes(head[8..16].try_into().unwrap_or_default());
        let reclen = u16::from_ne_bytes([head[16], head[17]]) as usize;
        let typ = head[18];
        let Some(rec) = buf.get(at..at.saturating_add(reclen)) else {
            break;
        };
        if reclen < 20 {
            break;
        }
        let name = &rec[19..];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        out.push(DirEntry {
            ino,
            off,
            typ,
            name,
        });
        at += reclen;
    }
    out
}

pub fn getxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: valid C strings; `buf` is writable for its length (a null
    // pointer with length 0 asks for the size).
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    check_size(n)
}

pub fn listxattr(path: &CStr, buf: &mut [u8]) -> SysResult<usize> {
    // SAFETY: valid C string; `buf` is writable for its length.
    let n = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    check_size(n)
}

pub fn setxattr(path: &CStr, name: &CStr, value: &[u8], flags: i32) -> SysResult<()> {
    // SAFETY: valid C strings; `value` is readable for its length.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

pub fn removexattr(path: &CStr, name: &CStr) -> SysResult<()> {
    // SAFETY: valid C strings.
    check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) })
}

/// Raises this process's soft limit on open fds to its hard limit, as every
/// node the guest holds is an open fd. Best effort.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a writable rlimit; setrlimit only reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
