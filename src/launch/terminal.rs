//! The host's terminal for interactive runs: whether a descriptor is a
//! tty, its window size, and a guard that holds it in raw mode.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};

/// The terminal state saved by the outermost live [`RawMode`], so that a
/// caller about to leave through `std::process::exit` (which runs no
/// destructors) can still put the terminal back with [`restore_saved`].
static SAVED: Mutex<Option<(RawFd, libc::termios)>> = Mutex::new(None);

fn saved() -> MutexGuard<'static, Option<(RawFd, libc::termios)>> {
    // The data is plain old data and stays consistent even if a holder
    // panicked, so a poisoned lock is still usable.
    SAVED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `fd` refers to a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor number; an invalid or
    // closed descriptor makes it return 0 (EBADF) and touches no memory.
    unsafe { libc::isatty(fd) == 1 }
}

/// The terminal's window size as (rows, cols), or None when `fd` is not a
/// terminal or its size is unknown (a zero row or column count, as on a
/// fresh pty nobody has sized).
pub fn window_size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: winsize is a plain C struct of integers; all-zero is valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which
    // points to a live, writable `winsize`; a bad fd only yields an error.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) };
    if rc != 0 || ws.ws_row == 0 || ws.ws_col == 0 {
        return None;
    }
    Some((ws.ws_row, ws.ws_col))
}

fn get_termios(fd: RawFd) -> io::Result<libc::termios> {
    // SAFETY: termios is a plain C struct of integers and arrays; all-zero
    // is a valid value, and tcgetattr overwrites it anyway.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a live, writable termios; a bad fd only yields an error.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(t)
}

fn set_termios(fd: RawFd, t: &libc::termios) -> io::Result<()> {
    // SAFETY: `t` points to a valid termios that tcsetattr only reads; a bad
    // fd only yields an error.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts the terminal back as the outermost live [`RawMode`] found it, if
/// one is live. For callers about to call `std::process::exit`, which
/// skips destructors. Errors are ignored: there is nothing left to do
/// about them on the way out. Not async-signal-safe (it takes a lock), so
/// don't call it from a signal handler.
pub fn restore_saved() {
    if let Some((fd, t)) = *saved() {
        let _ = set_termios(fd, &t);
    }
}

/// A terminal's settings as they were, to put back after a VM's process
/// that may have left the terminal raw died without restoring it.
pub struct Saved(RawFd, libc::termios);

impl Saved {
    /// `fd`'s settings now, if it is a terminal.
    pub fn of(fd: RawFd) -> Option<Saved> {
        is_terminal(fd)
            .then(|| get_termios(fd).ok())
            .flatten()
            .map(|t| Saved(fd, t))
    }

    pub fn put_back(&self) {
        let _ = set_termios(self.0, &self.1);
    }
}

/// Raw mode on a terminal for as long as the guard lives: input arrives
/// byte by byte, unechoed, with no signal keys or line editing, and output
/// is passed through untranslated (as `cfmakeraw` sets it). Dropping the
/// guard restores the settings found by [`RawMode::enter`].
///
/// The guard does not own `fd`: the caller keeps it open meanwhile.
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
    /// Whether this guard's state is the one in [`SAVED`] (it is the
    /// outermost live guard), so that dropping it should clear that.
    global: bool,
}

impl RawMode {
    /// Saves `fd`'s terminal settings and switches it to raw mode, at once
    /// (TCSANOW) so input typed ahead is kept for the reader.
    pub fn enter(fd: RawFd) -> io::Result<RawMode> {
        let saved_termios = get_termios(fd)?;
        let mut raw = saved_termios;
        // SAFETY: `raw` is a live, initialized termios that cfmakeraw only
        // modifies in place.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Hold the lock across the switch so restore_saved never sees raw
        // mode applied without the state to undo it.
        let mut global = saved();
        set_termios(fd, &raw)?;
        let is_outermost = global.is_none();
        if is_outermost {
            *global = Some((fd, saved_termios));
        }
        Ok(RawMode {
            fd,
            saved: saved_termios,
            global: is_outermost,
        })
    }

    /// Restores the saved settings now, keeping the guard (which restores
    /// them again when dropped).
    pub fn restore(&self) -> io::Result<()> {
        set_termios(self.fd, &self.saved)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let mut global = saved();
        let _ = self.restore();
        if self.global {
            *global = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// RawMode tests share the process-global SAVED; run them one at a time.
    static LOCK: Mutex<()> = Mutex::new(());

    /// A fresh pty pair (master, slave), not sized.
    fn pty() -> (OwnedFd, OwnedFd) {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: both out-pointers point to live c_ints; the name, termios
        // and winsize pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
        // SAFETY: openpty succeeded, so both are fresh descriptors owned by
        // nobody else.
        unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
    }

    #[test]
    fn raw_mode_is_entered_and_restored() {
        let _l = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let (_master, slave) = pty();
        let fd = slave.as_raw_fd();
        let before = get_termios(fd).unwrap();
        assert_ne!(before.c_lflag & libc::ICANON, 0);
        assert_ne!(before.c_lflag & libc::ECHO, 0);

        let raw = RawMode::enter(fd).unwrap();
        let t = get_termios(fd).unwrap();
        assert_eq!(t.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG), 0);
        assert_eq!(saved().map(|(f, _)| f), Some(fd));

        raw.restore().unwrap();
        assert_eq!(get_termios(fd).unwrap().c_lflag, before.c_lflag);
        set_termios(fd, &t).unwrap();

        // As if the caller were about to exit without dropping the guard.
        restore_saved();
        assert_eq!(get_termios(fd).unwrap().c_lflag, before.c_lflag);
        set_termios(fd, &t).unwrap();

        drop(raw);
        let after = get_termios(fd).unwrap();
        assert_eq!(after.c_lflag, before.c_lflag);
        assert_eq!(after.c_iflag, before.c_iflag);
        assert_eq!(after.c_oflag, before.c_oflag);
        assert_eq!(after.c_cflag, before.c_cflag);
        assert!(saved().is_none());
        // Nothing saved: restore_saved is a no-op.
        restore_saved();
    }

    #[test]
    fn nested_raw_mode_keeps_outermost_saved_state() {
        let _l = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let (_master, slave) = pty();
        let fd = slave.as_raw_fd();
        let before = get_termios(fd).unwrap();
        let outer = RawMode::enter(fd).unwrap();
        let inner = RawMode::enter(fd).unwrap();
        drop(inner);
        // The inner guard restored what it found: still raw.
        assert_eq!(get_termios(fd).unwrap().c_lflag & libc::ICANON, 0);
        assert_eq!(saved().map(|(_, t)| t.c_lflag), Some(before.c_lflag));
        drop(outer);
        assert_eq!(get_termios(fd).unwrap().c_lflag, before.c_lflag);
        assert!(saved().is_none());
    }

    #[test]
    fn raw_mode_fails_on_a_non_terminal() {
        let _l = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let (r, _w) = std::io::pipe().unwrap();
        assert!(RawMode::enter(r.as_raw_fd()).is_err());
        assert!(saved().is_none());
    }

    #[test]
    fn window_size_reads_what_the_master_set() {
        let (master, slave) = pty();
        assert_eq!(window_size(slave.as_raw_fd()), None, "unsized pty");
        let ws = libc::winsize {
            ws_row: 33,
            ws_col: 121,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize through a pointer to a live one.
        let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", io::Error::last_os_error());
        assert_eq!(window_size(slave.as_raw_fd()), Some((33, 121)));
        assert_eq!(window_size(master.as_raw_fd()), Some((33, 121)));
    }

    #[test]
    fn pipes_are_not_terminals() {
        let (r, w) = std::io::pipe().unwrap();
        assert!(!is_terminal(r.as_raw_fd()));
        assert!(!is_terminal(w.as_raw_fd()));
        assert_eq!(window_size(r.as_raw_fd()), None);
        let (master, slave) = pty();
        assert!(is_terminal(slave.as_raw_fd()));
        assert!(is_terminal(master.as_raw_fd()));
        assert!(!is_terminal(-1));
    }
}
