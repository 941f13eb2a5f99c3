//! Thin wrappers over the few libc calls guest-init makes, returning `io::Result`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;

/// A path or string as a C string; an interior NUL is an invalid-input error.
pub fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

/// Turns a libc return value into a `Result`, reading errno on -1.
pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Retries a call while it fails with EINTR.
pub fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The plain C text for an errno, without Rust's " (os error N)" suffix.
pub fn strerror(errno: i32) -> String {
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: buf is writable for its full length and the XSI/GNU strerror_r
    // exposed by libc writes a NUL-terminated string into it.
    let ret = unsafe { libc::strerror_r(errno, buf.as_mut_ptr(), buf.len()) };
    if ret != 0 {
        return format!("error {errno}");
    }
    // SAFETY: strerror_r succeeded, so buf holds a NUL-terminated string.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// An `io::Error`'s text: plain strerror text for an OS error, else its own.
pub fn error_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => strerror(errno),
        None => e.to_string(),
    }
}

/// An `io::Error` as "what: text", using plain strerror text for OS errors.
pub fn describe(what: &str, e: &io::Error) -> String {
    format!("{what}: {}", error_text(e))
}

pub fn open(path: &str, flags: libc::c_int) -> io::Result<RawFd> {
    let c = cstring(path)?;
    // SAFETY: c is a valid NUL-terminated path; open has no other memory effects.
    retry(|| check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o666) }))
}

pub fn close(fd: RawFd) {
    // SAFETY: closing an fd we own; errors are of no use here.
    unsafe { libc::close(fd) };
}

pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    retry(|| {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}

/// Writes all of `buf`; EINTR is retried unless `interruptible` (then it is returned).
pub fn write_all(fd: RawFd, mut buf: &[u8], interruptible: bool) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for reads of buf.len() bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted && !interruptible {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads a small file (sysfs attributes) into a string.
pub fn read_small_file(path: &str) -> io::Result<String> {
    let fd = open(path, libc::O_RDONLY)?;
    let mut buf = [0u8; 256];
    let n = read(fd, &mut buf);
    close(fd);
    Ok(String::from_utf8_lossy(&buf[..n?]).into_owned())
}

/// Moves `fd` to a number above 2 so dup2 onto 0..=2 in the child can't clobber it.
pub fn above_stdio(fd: RawFd) -> io::Result<RawFd> {
    if fd > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC only creates a new descriptor.
    let new = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    close(fd);
    Ok(new)
}

pub fn mkdir(path: &str, mode: libc::mode_t) -> io::Result<()> {
    let c = cstring(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    match check(unsafe { libc::mkdir(c.as_ptr(), mode) }) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other.map(drop),
    }
}

pub fn mount(
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = cstring(source)?;
    let target = cstring(target)?;
    let fstype = fstype.map(cstring).transpose()?;
    let data = data.map(cstring).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a valid NUL-terminated string
    // that outlives the call.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    })
    .map(drop)
}

pub fn chdir(path: &str) -> io::Result<()> {
    let c = cstring(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    check(unsafe { libc::chdir(c.as_ptr()) }).map(drop)
}

pub fn fchdir(fd: RawFd) -> io::Result<()> {
    // SAFETY: fchdir takes any fd; a bad one is an error.
    check(unsafe { libc::fchdir(fd) }).map(drop)
}

pub fn chroot(path: &str) -> io::Result<()> {
    let c = cstring(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    check(unsafe { libc::chroot(c.as_ptr()) }).map(drop)
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe name's bytes; no NUL needed.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

pub fn sleep_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// Opens /dev/null on whichever of fds 0..=2 the kernel left closed (it
/// does when the initramfs has no /dev/console), so later pipes and ports
/// never take those numbers and get clobbered by the child's dup2.
pub fn fill_stdio() -> io::Result<()> {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only queries the descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            let c = cstring("/dev/null")?;
            // SAFETY: c is a valid NUL-terminated path. open returns the lowest
            // free number, which is `fd` as all lower ones are open.
            check(unsafe { libc::open(c.as_ptr(), libc::O_RDWR) })?;
        }
    }
    Ok(())
}

/// Reads a whole (proc) file of at most 64 KiB into a string.
pub fn read_text(path: &str) -> io::Result<String> {
    let fd = open(path, libc::O_RDONLY)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let result = loop {
        match read(fd, &mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) if out.len() + n <= 64 * 1024 => out.extend_from_slice(&buf[..n]),
            Ok(_) => break Err(io::Error::other(format!("{path} is too long"))),
            Err(e) => break Err(e),
        }
    };
    close(fd);
    result.map(|()| String::from_utf8_lossy(&out).into_owned())
}

/// Brings the network interface `name` up (`lo`, so programs of a run
/// reach each other on 127.0.0.1; `eth0` once it has its address).
pub fn link_up(name: &[u8]) -> io::Result<()> {
    // SAFETY: socket has no memory effects.
    let sock =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own;
    // reading the flags member of the union after the kernel filled it.
    let result = unsafe {
        check(libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req)).and_then(|_| {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            check(libc::ioctl(sock, libc::SIOCSIFFLAGS, &req))
        })
    };
    close(sock);
    result.map(drop)
}
