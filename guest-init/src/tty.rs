//! An interactive workload's terminal: a pty whose slave is the
//! workload's controlling terminal, and the relay that copies the stdin
//! port into the master and the master's output to the stdout port.

use std::io;
use std::os::fd::RawFd;

use guest_init::WinSize;

use crate::mounts::ctx;
use crate::sys;

/// Input queued for the master while the workload is not reading; the
/// stdin port is not read while this much is pending.
const MAX_PENDING: usize = 64 * 1024;

/// The master side of the workload's pty.
#[derive(Debug)]
pub struct Pty {
    master: RawFd,
    /// `/dev/pts/N`, opened by the workload.
    pub slave: String,
}

impl Pty {
    /// A new pty of `size`, from the root's devpts.
    pub fn open(size: WinSize) -> io::Result<Pty> {
        let master = sys::open(
            "/dev/pts/ptmx",
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
        .map_err(|e| ctx("open /dev/pts/ptmx", e))?;
        // Owned from here: closed on every error path below.
        let mut pty = Pty {
            master,
            slave: String::new(),
        };
        let unlock: libc::c_int = 0;
        let mut number: libc::c_uint = 0;
        // SAFETY: TIOCSPTLCK reads an int and TIOCGPTN writes an unsigned
        // int, both through pointers to locals that outlive the calls.
        unsafe {
            sys::check(libc::ioctl(master, libc::TIOCSPTLCK, &unlock))
                .map_err(|e| ctx("unlocking the pty", e))?;
            sys::check(libc::ioctl(master, libc::TIOCGPTN, &mut number))
                .map_err(|e| ctx("naming the pty", e))?;
        }
        pty.resize(size)?;
        pty.slave = format!("/dev/pts/{number}");
        Ok(pty)
    }

    /// Sets the window size; the kernel sends SIGWINCH to the foreground job.
    pub fn resize(&self, size: WinSize) -> io::Result<()> {
        let ws = libc::winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize through a pointer to a local.
        sys::check(unsafe { libc::ioctl(self.master, libc::TIOCSWINSZ, &ws) })
            .map(drop)
            .map_err(|e| ctx("setting the window size", e))
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        sys::close(self.master);
    }
}

/// Copies between the host's ports and a pty master.
#[derive(Debug)]
pub struct Relay {
    pub pty: Pty,
    stdin: RawFd,
    stdout: RawFd,
    pending: Vec<u8>,
    stdin_open: bool,
    /// The master reported EIO: no process has the slave open any more.
    pub hung_up: bool,
}

impl Relay {
    pub fn new(pty: Pty, stdin: RawFd, stdout: RawFd) -> Relay {
        Relay {
            pty,
            stdin,
            stdout,
            pending: Vec::new(),
            stdin_open: true,
            hung_up: false,
        }
    }

    /// The fds to poll and for what, as (fd, events); -1 where nothing is wanted.
    pub fn interest(&self) -> [(RawFd, libc::c_short); 2] {
        let stdin = if self.stdin_open && self.pending.len() < MAX_PENDING {
            self.stdin
        } else {
            -1
        };
        let mut master = 0;
        if !self.hung_up {
            master |= libc::POLLIN;
            if !self.pending.is_empty() {
                master |= libc::POLLOUT;
            }
        }
        [
            (stdin, libc::POLLIN),
            (if master == 0 { -1 } else { self.pty.master }, master),
        ]
    }

    /// Moves what is ready, given the poll results for [`Relay::interest`].
    pub fn pump(&mut self, stdin_events: libc::c_short, master_events: libc::c_short) {
        if stdin_events != 0 {
            let mut buf = [0u8; 4096];
            match sys::read(self.stdin, &mut buf) {
                Ok(0) | Err(_) => self.stdin_open = false,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
        if master_events & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            self.drain_output();
        }
        if !self.pending.is_empty() && !self.hung_up {
            self.write_input();
        }
    }

    fn write_input(&mut self) {
        // SAFETY: writes from a live buffer of the given length.
        let n = unsafe {
            libc::write(
                self.pty.master,
                self.pending.as_ptr().cast(),
                self.pending.len(),
            )
        };
        if n > 0 {
            self.pending.drain(..n as usize);
        } else if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EIO) {
            self.hung_up = true;
        }
    }

    /// Copies everything the master has now to the stdout port.
    pub fn drain_output(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match sys::read(self.pty.master, &mut buf) {
                Ok(0) => {
                    self.hung_up = true;
                    return;
                }
                Ok(n) => {
                    // The host reads the port as long as the run lasts;
                    // if it has gone, the output has nowhere to go anyway.
                    if sys::write_all(self.stdout, &buf[..n], false).is_err() {
                        return;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    self.hung_up = true;
                    return;
                }
                Err(_) => return, // EAGAIN: nothing more for now
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slave_size(slave: &str) -> (u16, u16) {
        let fd = sys::open(slave, libc::O_RDWR | libc::O_NOCTTY).expect("open the slave");
        // SAFETY: winsize is plain data; TIOCGWINSZ fills it.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize through a pointer to a local.
        sys::check(unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) }).expect("size");
        sys::close(fd);
        (ws.ws_row, ws.ws_col)
    }

    #[test]
    fn the_slave_exists_with_the_size_asked() {
        let pty = Pty::open(WinSize {
            rows: 30,
            cols: 100,
        })
        .expect("pty");
        assert_eq!(slave_size(&pty.slave), (30, 100));
        pty.resize(WinSize {
            rows: 40,
            cols: 120,
        })
        .expect("resize");
        assert_eq!(slave_size(&pty.slave), (40, 120));
    }
}
