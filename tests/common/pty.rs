//! A minimal expect-like harness: run a program on a fresh pseudo-terminal
//! as its controlling terminal, read what it prints, type at it, resize it.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long `wait` keeps reading after the child exits, for output that
/// is still on its way or that a leftover descendant keeps the terminal
/// open for, before giving up on seeing the end of it.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// A child process on a pty: the harness holds the master side.
pub struct Pty {
    master: OwnedFd,
    child: Child,
    /// Output read but not yet consumed by `expect`.
    buf: Vec<u8>,
    /// Everything read so far, for diagnostics.
    all: Vec<u8>,
    /// The slave side was closed by everyone (reads give EIO): no more output.
    eof: bool,
}

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn set_flags(fd: RawFd, get: libc::c_int, set: libc::c_int, flag: libc::c_int) {
    // SAFETY: F_GETFD/F_GETFL take no argument and only read the
    // descriptor's flags; `fd` is open (owned by the caller).
    let flags = unsafe { libc::fcntl(fd, get) };
    assert!(flags >= 0, "fcntl: {}", io::Error::last_os_error());
    // SAFETY: F_SETFD/F_SETFL take an int argument and only change the
    // descriptor's flags.
    let rc = unsafe { libc::fcntl(fd, set, flags | flag) };
    assert_eq!(rc, 0, "fcntl: {}", io::Error::last_os_error());
}

/// Polls `fd` for `events`, at most `timeout`; true if any came.
fn poll(fd: RawFd, events: libc::c_short, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfd` is one live pollfd and we pass a count of 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll: {e}");
        return false;
    }
    rc > 0
}

impl Pty {
    /// Starts `cmd` on a new pty of `rows`x`cols`, as the leader of a new
    /// session whose controlling terminal is the pty. Its stdin, stdout
    /// and stderr are all the pty, whatever `cmd` had set.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> Pty {
        let (mut master, mut slave) = (-1, -1);
        let ws = winsize(rows, cols);
        // SAFETY: both out-pointers point to live c_ints; the name and
        // termios pointers may be null and `ws` is a live winsize that
        // openpty only reads.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
        // SAFETY: openpty succeeded, so both are fresh descriptors that
        // nothing else owns.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        // Neither side may leak into the child (or into children other
        // tests spawn meanwhile): a stray slave would hide the end of
        // output, and a stray master would keep the pty alive.
        set_flags(
            master.as_raw_fd(),
            libc::F_GETFD,
            libc::F_SETFD,
            libc::FD_CLOEXEC,
        );
        set_flags(
            slave.as_raw_fd(),
            libc::F_GETFD,
            libc::F_SETFD,
            libc::FD_CLOEXEC,
        );
        set_flags(
            master.as_raw_fd(),
            libc::F_GETFL,
            libc::F_SETFL,
            libc::O_NONBLOCK,
        );

        let dup = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup pty slave"));
        cmd.stdin(dup(&slave))
            .stdout(dup(&slave))
            .stderr(Stdio::from(slave));
        // SAFETY: the closure runs in the forked child before exec and only
        // calls setsid and ioctl, which are async-signal-safe, and
        // io::Error::last_os_error, which reads errno and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                // fd 0 is the pty slave by now; make it the new session's
                // controlling terminal.
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn child on pty");
        // The Command holds the parent's slave copies: close them, so that
        // the child's exit shows as EIO on the master.
        drop(cmd);
        Pty {
            master,
            child,
            buf: Vec::new(),
            all: Vec::new(),
            eof: false,
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Reads whatever the master has without blocking; notes EIO or end of
    /// file as the end of output.
    fn read_available(&mut self) {
        let mut chunk = [0u8; 4096];
        while !self.eof {
            // SAFETY: `chunk` is a live, writable buffer of chunk.len() bytes.
            let n = unsafe {
                libc::read(
                    self.master.as_raw_fd(),
                    chunk.as_mut_ptr().cast(),
                    chunk.len(),
                )
            };
            if n > 0 {
                let got = &chunk[..n as usize];
                self.buf.extend_from_slice(got);
                self.all.extend_from_slice(got);
                continue;
            }
            if n == 0 {
                self.eof = true;
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => break,
                Some(libc::EINTR) => continue,
                // Every slave descriptor is closed: nothing more will come.
                Some(libc::EIO) => self.eof = true,
                _ => panic!("read pty master: {e}"),
            }
        }
    }

    /// Waits at most `timeout` for output, then reads what there is.
    fn read_for(&mut self, timeout: Duration) {
        if !self.eof {
            poll(self.master.as_raw_fd(), libc::POLLIN, timeout);
            self.read_available();
        }
    }

    /// Reads until the output not yet consumed contains `needle`, then
    /// returns it up to and including the needle, keeping the rest for the
    /// next call. On timeout, or if the output ends first, Err describes
    /// that and holds all the output seen so far.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let n = needle.as_bytes();
        loop {
            if let Some(at) = self.buf.windows(n.len().max(1)).position(|w| w == n) {
                let rest = self.buf.split_off(at + n.len());
                let got = std::mem::replace(&mut self.buf, rest);
                return Ok(String::from_utf8_lossy(&got).into_owned());
            }
            if self.eof {
                return Err(format!(
                    "output ended before {needle:?}; output so far:\n{}",
                    self.output()
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {needle:?}; output so far:\n{}",
                    self.output()
                ));
            }
            self.read_for(deadline - now);
        }
    }

    /// Types `bytes` at the child, as a user would (the terminal's line
    /// discipline applies: a newline or carriage return ends a line, ^C
    /// interrupts, echo happens). Reads meanwhile if the pty is full, so a
    /// child echoing back never deadlocks against us.
    pub fn send(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            // SAFETY: `rest` is a live buffer of rest.len() readable bytes.
            let n =
                unsafe { libc::write(self.master.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n >= 0 {
                rest = &rest[n as usize..];
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => {
                    self.read_available();
                    poll(
                        self.master.as_raw_fd(),
                        libc::POLLIN | libc::POLLOUT,
                        Duration::from_millis(50),
                    );
                }
                _ => panic!("write pty master: {e}; output so far:\n{}", self.output()),
            }
        }
    }

    /// Sets the terminal's size, as a terminal emulator does when its
    /// window is resized: the kernel sends SIGWINCH to the terminal's
    /// foreground process group.
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ reads one winsize through a pointer to a live one.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", io::Error::last_os_error());
    }

    /// Waits at most `timeout` for the child to exit, reading its output
    /// meanwhile (so it never blocks on a full terminal) and after it
    /// exits until the output ends. On timeout, kills the child and
    /// returns None.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            self.read_available();
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Collect the rest of the output: until EIO, or until it
                // has been quiet a while (a descendant still holds the
                // terminal).
                let drain_until = Instant::now() + DRAIN_GRACE;
                while !self.eof {
                    let now = Instant::now();
                    if now >= drain_until {
                        break;
                    }
                    let before = self.all.len();
                    self.read_for(drain_until - now);
                    if self.all.len() == before && !self.eof {
                        break;
                    }
                }
                return Some(status);
            }
            let now = Instant::now();
            if now >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.read_available();
                return None;
            }
            self.read_for((deadline - now).min(Duration::from_millis(20)));
        }
    }

    /// Everything the child printed so far (consumed or not), lossily
    /// decoded, for diagnostics.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.all).into_owned()
    }

    /// The terminal's settings as a program on it would see them now: read
    /// through a slave descriptor opened for the purpose (without making it
    /// anyone's controlling terminal), so this works too after the child
    /// has exited, e.g. to check that it restored the mode it changed. The
    /// pty's settings outlive the last close of the slave while the
    /// harness holds the master.
    pub fn slave_termios(&self) -> libc::termios {
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: `name` is a live, writable buffer of name.len() chars;
        // ptsname_r NUL-terminates what it writes or fails.
        let rc = unsafe { libc::ptsname_r(self.master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
        assert_eq!(rc, 0, "ptsname_r: {}", io::Error::from_raw_os_error(rc));
        // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated
        // string within its bounds.
        let path = unsafe { CStr::from_ptr(name.as_ptr()) };
        // SAFETY: `path` is NUL-terminated; open only reads it.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        assert!(fd >= 0, "open {path:?}: {}", io::Error::last_os_error());
        // SAFETY: open succeeded, so `fd` is a fresh descriptor we own.
        let slave = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: termios is plain integers and arrays; all-zero is valid
        // and tcgetattr overwrites it anyway.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a live, writable termios and `slave` is open.
        let rc = unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut t) };
        assert_eq!(rc, 0, "tcgetattr: {}", io::Error::last_os_error());
        t
    }

    /// The terminal's local modes (ICANON, ECHO, ISIG, ...) now; see
    /// [`Pty::slave_termios`].
    pub fn slave_termios_lflag(&self) -> libc::tcflag_t {
        self.slave_termios().c_lflag
    }
}

impl Drop for Pty {
    /// Never leave the child behind, e.g. when a test fails mid-way.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
