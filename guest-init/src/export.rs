//! Sends a build VM's changes to the host: the overlay's upper directory,
//! walked in pre-order with sorted names, as the export stream of lib.rs.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use guest_init::{encode, ExportEntry, ExportKind, ExportRecord};

use crate::error::{Errno, ExportError};
use crate::sys;

/// overlayfs's own attributes on its upper directory: not the image's.
const OVERLAY_XATTRS: &[u8] = b"trusted.overlay.";
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
/// Bytes gathered before a write to the port: every syscall is emulated work.
const BUFFER: usize = 256 * 1024;
/// The longest path and the most names an image takes (the host's bounds,
/// src/image/tree.rs): refused here first, with a clear error.
const MAX_PATH_LEN: usize = 4094;
const MAX_DEPTH: usize = 256;
/// How much of a refused path the error shows.
const SHOWN: usize = 200;

/// A writer that batches small records into large port writes.
struct Out {
    fd: RawFd,
    buf: Vec<u8>,
}

impl Out {
    fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.buf.len() + bytes.len() > BUFFER {
            self.flush()?;
        }
        if bytes.len() >= BUFFER {
            return sys::write_all(self.fd, bytes, false);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            sys::write_all(self.fd, &self.buf, false)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Exports everything under `upper` (a path that reaches the upper
/// directory, such as /proc/self/fd/N) to the port `fd`.
pub fn export(upper: &Path, fd: RawFd) -> Result<(), ExportError> {
    let mut walker = Walker {
        out: Out {
            fd,
            buf: Vec::with_capacity(BUFFER),
        },
        links: HashMap::new(),
        data: vec![0u8; BUFFER],
    };
    walker
        .dir(upper, b"", 0)
        .map_err(|(path, e)| ExportError::Entry {
            path,
            source: Errno(e),
        })?;
    walker
        .out
        .push(&encode(&ExportRecord::End))
        .and_then(|()| walker.out.flush())
        .map_err(|e| ExportError::End {
            upper: upper.to_path_buf(),
            source: Errno(e),
        })
}

struct Walker {
    out: Out,
    /// Hard-linked files already sent, by inode: their export path.
    links: HashMap<(u64, u64), Vec<u8>>,
    data: Vec<u8>,
}

type WalkError = (PathBuf, io::Error);

impl Walker {
    /// Sends the entries of directory `dir`, whose export path is `prefix`,
    /// `depth` names deep.
    fn dir(&mut self, dir: &Path, prefix: &[u8], depth: usize) -> Result<(), WalkError> {
        let at = |e| (dir.to_path_buf(), e);
        let mut names: Vec<Vec<u8>> = fs::read_dir(dir)
            .map_err(at)?
            .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
            .collect::<io::Result<_>>()
            .map_err(at)?;
        names.sort_unstable();
        for name in names {
            let host = dir.join(OsStr::from_bytes(&name));
            let mut path = prefix.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            check_bounds(&path, depth + 1)?;
            let is_dir = self
                .entry(&host, path.clone())
                .map_err(|e| (host.clone(), e))?;
            if is_dir {
                self.dir(&host, &path, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Sends one entry (with a file's content); true for a directory.
    fn entry(&mut self, host: &Path, path: Vec<u8>) -> io::Result<bool> {
        let meta = fs::symlink_metadata(host)?;
        let ft = meta.file_type();
        let mut xattrs = xattrs(host)?;
        let opaque = xattrs
            .iter()
            .any(|(name, value)| name == OPAQUE_XATTR && value == b"y");
        xattrs.retain(|(name, _)| !name.starts_with(OVERLAY_XATTRS));
        let rdev = meta.rdev();
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        let kind = if ft.is_dir() {
            ExportKind::Dir { opaque }
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            match self.links.get(&key) {
                Some(target) if meta.nlink() > 1 => ExportKind::HardLink {
                    target: target.clone(),
                },
                _ => {
                    if meta.nlink() > 1 {
                        self.links.insert(key, path.clone());
                    }
                    ExportKind::File { size: meta.len() }
                }
            }
        } else if ft.is_symlink() {
            ExportKind::Symlink {
                target: fs::read_link(host)?.as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_char_device() && rdev == 0 {
            ExportKind::Whiteout
        } else if ft.is_char_device() {
            ExportKind::CharDevice { major, minor }
        } else if ft.is_block_device() {
            ExportKind::BlockDevice { major, minor }
        } else if ft.is_fifo() {
            ExportKind::Fifo
        } else {
            ExportKind::Socket
        };
        let size = match kind {
            ExportKind::File { size } => Some(size),
            _ => None,
        };
        let entry = ExportEntry {
            path,
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec() as u32,
            xattrs,
        };
        self.out.push(&encode(&ExportRecord::Entry(entry)))?;
        if let Some(size) = size {
            self.content(host, size)?;
        }
        Ok(ft.is_dir())
    }

    /// Exactly `size` bytes of the file: the stream's framing depends on it,
    /// so a file that shrank is padded (nothing runs that could change it).
    fn content(&mut self, host: &Path, size: u64) -> io::Result<()> {
        let mut file = File::open(host)?.take(size);
        let mut sent = 0u64;
        loop {
            let n = match file.read(&mut self.data) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.push(&self.data[..n])?;
            sent += n as u64;
        }
        let zeros = [0u8; 4096];
        while sent < size {
            let n = (size - sent).min(zeros.len() as u64) as usize;
            self.out.push(&zeros[..n])?;
            sent += n as u64;
        }
        Ok(())
    }
}

/// Refuses an export path longer or deeper than an image takes, naming
/// (the start of) it.
fn check_bounds(path: &[u8], depth: usize) -> Result<(), WalkError> {
    let why = if path.len() > MAX_PATH_LEN {
        format!("the path is longer than {MAX_PATH_LEN} bytes, the most an image takes")
    } else if depth > MAX_DEPTH {
        format!("the path is more than {MAX_DEPTH} directories deep, the most an image takes")
    } else {
        return Ok(());
    };
    let mut shown = String::from_utf8_lossy(&path[..path.len().min(SHOWN)]).into_owned();
    if path.len() > SHOWN {
        shown.push_str(&format!("… ({} bytes)", path.len()));
    }
    Err((
        PathBuf::from(shown),
        io::Error::new(io::ErrorKind::InvalidInput, why),
    ))
}

/// The extended attributes of `path` itself (not a symlink's target).
fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let names = read_sized(|buf, len| {
        // SAFETY: buf is valid for len bytes (or null with len 0); c is NUL-terminated.
        unsafe { libc::llistxattr(c.as_ptr(), buf.cast(), len) }
    })?;
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad xattr name"))?;
        let value = read_sized(|buf, len| {
            // SAFETY: as above; cname is NUL-terminated.
            unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), buf.cast(), len) }
        });
        match value {
            Ok(value) => out.push((name.to_vec(), value)),
            // Removed meanwhile, or a namespace we may not read.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Calls a size-probing syscall (`f(null, 0)` gives the length) until the
/// buffer is large enough.
fn read_sized(f: impl Fn(*mut u8, usize) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    loop {
        let len = f(std::ptr::null_mut(), 0);
        if len < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                return Ok(Vec::new());
            }
            return Err(e);
        }
        let mut buf = vec![0u8; len as usize];
        let got = f(buf.as_mut_ptr(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_init::Decoder;

    #[test]
    fn exports_a_tree_in_order_with_links_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("b")).unwrap();
        fs::write(root.join("b/f"), b"hello").unwrap();
        fs::hard_link(root.join("b/f"), root.join("b/g")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("a")).unwrap();
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd;
        let reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            (&r).read_to_end(&mut bytes).unwrap();
            bytes
        });
        export(root, w.as_raw_fd()).unwrap();
        drop(w);
        let bytes = reader.join().unwrap();
        let mut d = Decoder::default();
        // "hello" follows the File entry; split it out by hand.
        let at = bytes.windows(5).position(|w| w == b"hello").unwrap();
        d.push(&bytes[..at]).unwrap();
        d.push(&bytes[at + 5..]).unwrap();
        let mut paths = Vec::new();
        while let Some(rec) = d.next::<ExportRecord>().unwrap() {
            match rec {
                ExportRecord::Entry(e) => paths.push((String::from_utf8(e.path).unwrap(), e.kind)),
                ExportRecord::End => paths.push(("END".into(), ExportKind::Fifo)),
            }
        }
        assert_eq!(
            paths,
            vec![
                (
                    "a".into(),
                    ExportKind::Symlink {
                        target: b"/etc".to_vec()
                    }
                ),
                ("b".into(), ExportKind::Dir { opaque: false }),
                ("b/f".into(), ExportKind::File { size: 5 }),
                (
                    "b/g".into(),
                    ExportKind::HardLink {
                        target: b"b/f".to_vec()
                    }
                ),
                ("END".into(), ExportKind::Fifo),
            ]
        );
    }

    #[test]
    fn paths_past_the_image_bounds_are_refused_with_their_start() {
        let dir = tempfile::tempdir().unwrap();
        let name = "n".repeat(255);
        // 16 names of 255 bytes: 4095 bytes, one past the bound. Made
        // relative to the last one, as a guest would.
        let mut made = dir.path().to_path_buf();
        for _ in 0..15 {
            made.push(&name);
            fs::create_dir(&made).unwrap();
        }
        let fd = File::open(&made).unwrap();
        use std::os::fd::AsRawFd;
        let c = CString::new(name.as_str()).unwrap();
        // SAFETY: fd is an open directory and c a NUL-terminated name.
        let made_it = unsafe { libc::mkdirat(fd.as_raw_fd(), c.as_ptr(), 0o755) };
        assert_eq!(made_it, 0);
        let (_r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        w.set_nonblocking(false).unwrap();
        let err = crate::error::chain(&export(dir.path(), w.as_raw_fd()).unwrap_err());
        assert!(
            err.contains("the path is longer than 4094 bytes, the most an image takes"),
            "{err}"
        );
        assert!(err.contains("… (4095 bytes)"), "{err}");
        assert!(err.len() < 400, "{err}");
        assert!(check_bounds(&[b'd'; 10], MAX_DEPTH + 1).is_err());
        assert!(check_bounds(&[b'd'; 10], MAX_DEPTH).is_ok());
    }
}
