//! Readying a VM to be saved as a warm snapshot ([`guest_init::Prepare`]):
//! the run's root mounted and entered, the virtio-fs device mounted (its
//! FUSE session started), and the files its program reads first in the
//! page cache. A run restored from the snapshot then neither
//! mounts the image nor reads the program from the disk; on an emulating
//! host those took about half of a 3 s run of `true`.
//!
//! The image is the project's, so it may be hostile: what is read of it
//! here (a `#!` line, an ELF header) is bounded, and a file that cannot be
//! warmed is skipped; the run finds the same fault when it execs.

use std::io;

use guest_init::Prepare;

use crate::mounts;
use crate::spawn::candidates;
use crate::sys;
use crate::volumes;

/// Largest file read ahead: the page cache of a warm snapshot is guest
/// memory, and every run restored from it maps the file it is saved in.
const MAX_WARM_FILE: u64 = 64 << 20;
/// Bytes read of a file to find its interpreter.
const HEAD: usize = 4096;

/// Enters the root of `prepare`, mounts the virtio-fs device and reads
/// the program ahead.
pub fn prepare(prepare: &Prepare) -> io::Result<()> {
    mounts::enter_root(&prepare.rootfs_device)?;
    // Without it (a VM with no shares) a run mounts it itself.
    let _ = volumes::mount_device();
    let Some(program) = find(&prepare.program, &prepare.path) else {
        return Ok(());
    };
    let interpreter = interpreter(&program);
    for file in std::iter::once(program).chain(interpreter) {
        // Warming is an optimisation: a file that cannot be read is the
        // run's to report, when it execs it.
        let _ = read_ahead(&file);
    }
    Ok(())
}

/// The file `program` names, found as exec would: the first candidate
/// that is a regular file with an execute bit.
fn find(program: &str, path: &str) -> Option<String> {
    candidates(program, path).into_iter().find(|file| {
        stat(file)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0)
    })
}

fn stat(path: &str) -> io::Result<libc::stat> {
    let c = sys::cstring(path)?;
    // SAFETY: an all-zero stat is a valid value for stat to fill in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and st is a valid stat to write.
    sys::check(unsafe { libc::stat(c.as_ptr(), &mut st) })?;
    Ok(st)
}

/// The interpreter the kernel loads for `file`: a `#!` line's program, or
/// an ELF's `PT_INTERP` (the dynamic loader).
fn interpreter(file: &str) -> Option<String> {
    let fd = sys::open(file, libc::O_RDONLY | libc::O_CLOEXEC).ok()?;
    let mut head = vec![0u8; HEAD];
    let n = pread(fd, &mut head, 0);
    let found = n.ok().and_then(|n| {
        head.truncate(n);
        match head.get(..2) {
            Some(b"#!") => shebang(&head),
            _ => elf_interp(&head, |buf, at| pread(fd, buf, at).ok()),
        }
    });
    sys::close(fd);
    found
}

fn pread(fd: i32, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let at = libc::off_t::try_from(at).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), at) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The program of a `#!` line at the start of `head`.
fn shebang(head: &[u8]) -> Option<String> {
    let line = head.get(2..)?.split(|&b| b == b'\n').next()?;
    let word = line
        .split(|b| b.is_ascii_whitespace())
        .find(|w| !w.is_empty())?;
    String::from_utf8(word.to_vec()).ok()
}

/// The `PT_INTERP` path of a 64-bit little-endian ELF whose first bytes
/// are `head`; `read(buf, offset)` reads further.
fn elf_interp(head: &[u8], read: impl Fn(&mut [u8], u64) -> Option<usize>) -> Option<String> {
    const PT_INTERP: u32 = 3;
    const PHENT: usize = 56;
    const MAX_PHDRS: u64 = 256;
    const MAX_INTERP: u64 = 4096;
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]);
    let u64_at = |b: &[u8], o: usize| {
        b.get(o..o + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let (phoff, phentsize, phnum) = (u64_at(head, 32)?, u16_at(54), u64::from(u16_at(56)));
    if usize::from(phentsize) != PHENT || phnum > MAX_PHDRS {
        return None;
    }
    let mut phdrs = vec![0u8; PHENT * phnum as usize];
    if read(&mut phdrs, phoff)? != phdrs.len() {
        return None;
    }
    let interp = phdrs
        .chunks_exact(PHENT)
        .find(|ph| u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == PT_INTERP)?;
    let (offset, size) = (u64_at(interp, 8)?, u64_at(interp, 32)?);
    if size == 0 || size > MAX_INTERP {
        return None;
    }
    let mut path = vec![0u8; size as usize];
    let n = read(&mut path, offset)?;
    path.truncate(n);
    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
    path.truncate(end);
    String::from_utf8(path).ok().filter(|p| !p.is_empty())
}

/// Puts `file`'s pages in the page cache, waiting until they are read
/// (no request may be in flight when the VM is saved): sent to /dev/null,
/// which takes the page cache's pages without copying them.
fn read_ahead(file: &str) -> io::Result<()> {
    let fd = sys::open(file, libc::O_RDONLY | libc::O_CLOEXEC)?;
    let result = sys::open("/dev/null", libc::O_WRONLY | libc::O_CLOEXEC).and_then(|null| {
        let sent = send_all(fd, null);
        sys::close(null);
        sent
    });
    sys::close(fd);
    result
}

fn send_all(fd: i32, null: i32) -> io::Result<()> {
    // SAFETY: an all-zero stat is a valid value for fstat to fill in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid stat to write.
    sys::check(unsafe { libc::fstat(fd, &mut st) })?;
    let len = st.st_size as u64;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || len > MAX_WARM_FILE {
        return Ok(());
    }
    let mut offset: libc::off_t = 0;
    while (offset as u64) < len {
        let left = (len - offset as u64) as usize;
        // SAFETY: offset is a valid off_t for sendfile to advance.
        let n = unsafe { libc::sendfile(null, fd, &mut offset, left) };
        match n {
            0 => break,
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shebang_names_its_program() {
        assert_eq!(shebang(b"#!/bin/sh -e\necho"), Some("/bin/sh".into()));
        assert_eq!(
            shebang(b"#!  /usr/bin/env python3\n"),
            Some("/usr/bin/env".into())
        );
        assert_eq!(shebang(b"#!\n"), None);
    }

    #[test]
    fn the_elf_interpreter_is_read_within_bounds() {
        // A minimal ELF64 header with one PT_INTERP program header.
        let mut file = vec![0u8; 64 + 56 + 32];
        file[..6].copy_from_slice(b"\x7fELF\x02\x01");
        file[32..40].copy_from_slice(&64u64.to_le_bytes());
        file[54..56].copy_from_slice(&56u16.to_le_bytes());
        file[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        file[ph..ph + 4].copy_from_slice(&3u32.to_le_bytes());
        file[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
        file[ph + 32..ph + 40].copy_from_slice(&28u64.to_le_bytes());
        file[120..148].copy_from_slice(b"/lib64/ld-linux-x86-64.so.2\0");
        let read = |buf: &mut [u8], at: u64| {
            let at = at as usize;
            let n = buf.len().min(file.len().saturating_sub(at));
            buf[..n].copy_from_slice(&file[at..at + n]);
            Some(n)
        };
        assert_eq!(
            elf_interp(&file, read),
            Some("/lib64/ld-linux-x86-64.so.2".into())
        );
        // A header that claims more program headers than allowed.
        let mut huge = file.clone();
        huge[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(elf_interp(&huge, read), None);
        // An interpreter past the end of the file.
        let mut past = file.clone();
        past[ph + 8..ph + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(elf_interp(&past, |_, _| Some(0)), None);
        assert_eq!(elf_interp(b"#!/bin/sh", read), None);
    }
}
