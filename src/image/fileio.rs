//! File I/O shared by the image writer and the copies between images:
//! copying a byte range from one image file into another; a reader that
//! hashes what passes through it.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use super::error::ErofsError;

/// Copies `len` bytes from `src` at `from` to `dst` at `to`: copy_file_range
/// (a reflink or an in-kernel copy), or pread/pwrite where it is refused.
pub(super) fn copy_range(
    src: &File,
    from: u64,
    dst: &File,
    to: u64,
    len: u64,
) -> Result<(), ErofsError> {
    let mut done = 0u64;
    while done < len {
        let chunk = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        let (Ok(mut off_in), Ok(mut off_out)) = (
            libc::loff_t::try_from(from + done),
            libc::loff_t::try_from(to + done),
        ) else {
            return Err(ErofsError::TooLarge);
        };
        // SAFETY: both fds are open for the duration of the call (borrowed
        // Files), and the offsets are valid loff_t variables the kernel
        // updates; no memory of ours is read or written otherwise.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                chunk,
                0,
            )
        };
        match n {
            0 => return Err(ErofsError::ReadData(short_source())),
            n if n > 0 => done += n as u64,
            _ => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::ENOSYS | libc::EXDEV | libc::EINVAL | libc::EOPNOTSUPP) => {
                        return copy_by_reading(src, from + done, dst, to + done, len - done)
                    }
                    _ => return Err(ErofsError::Copy(e)),
                }
            }
        }
    }
    Ok(())
}

fn copy_by_reading(src: &File, from: u64, dst: &File, to: u64, len: u64) -> Result<(), ErofsError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = match src.read_at(&mut buf[..want], from + done) {
            Ok(0) => return Err(ErofsError::ReadData(short_source())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ErofsError::ReadData(e)),
        };
        dst.write_all_at(&buf[..n], to + done)
            .map_err(ErofsError::Write)?;
        done += n as u64;
    }
    Ok(())
}

fn short_source() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the source image ends inside a file's data",
    )
}

/// Hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Why [`copy_hashed`] stopped.
#[derive(Debug)]
pub(super) enum HashedCopyError {
    /// More than the limit came.
    TooLong,
    Read(io::Error),
    Write(io::Error),
}

/// Copies `reader` into `out`, refused past `limit` bytes (reading no
/// more than one byte beyond), hashing what passes: the bytes copied and
/// their sha256 (hex). Downloads use it before renaming into a cache.
pub(super) fn copy_hashed(
    reader: impl Read,
    out: &mut impl io::Write,
    limit: u64,
) -> Result<(u64, String), HashedCopyError> {
    let mut reader = reader.take(limit.saturating_add(1));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HashedCopyError::Read(e)),
        };
        total += n as u64;
        if total > limit {
            return Err(HashedCopyError::TooLong);
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(HashedCopyError::Write)?;
    }
    Ok((total, hex::encode(hasher.finalize())))
}
