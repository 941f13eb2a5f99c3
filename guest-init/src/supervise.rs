//! PID 1's main loop while the workload runs: forward the host's signals,
//! reap every child (orphans included), and report how the workload ended.

use std::io;
use std::os::fd::RawFd;

use guest_init::{GuestMsg, HostMsg};

use crate::control::Control;
use crate::error::Error;
use crate::oom::{self, Watchdog};
use crate::sys;
use crate::tty::Relay;

/// SIGCHLD, blocked and read from a signalfd so it can be polled with the control port.
#[derive(Debug)]
pub struct ChildSignals {
    pub fd: RawFd,
}

impl ChildSignals {
    /// Blocks SIGCHLD (the child unblocks it before exec) and opens the signalfd.
    pub fn new() -> io::Result<ChildSignals> {
        // SAFETY: the sigset is initialised by sigemptyset before use; the
        // calls only change this process's signal mask and make an fd.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            sys::check(libc::sigprocmask(
                libc::SIG_BLOCK,
                &set,
                std::ptr::null_mut(),
            ))?;
            let fd = sys::check(libc::signalfd(
                -1,
                &set,
                libc::SFD_CLOEXEC | libc::SFD_NONBLOCK,
            ))?;
            Ok(ChildSignals { fd })
        }
    }

    /// Empties the signalfd (the queued SIGCHLDs carry nothing waitpid won't tell).
    pub fn drain(&self) {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>() * 4];
        while matches!(sys::read(self.fd, &mut info), Ok(n) if n > 0) {}
    }
}

/// The final message for a wait status.
pub fn outcome(status: libc::c_int) -> GuestMsg {
    if libc::WIFSIGNALED(status) {
        GuestMsg::Killed {
            signal: libc::WTERMSIG(status),
        }
    } else {
        GuestMsg::Exited {
            code: libc::WEXITSTATUS(status),
        }
    }
}

/// Reaps every child that has exited, orphans included, calling `exited`
/// with each pid and wait status; whether any child is left.
pub fn reap_each(mut exited: impl FnMut(libc::pid_t, libc::c_int)) -> bool {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return pid == 0; // 0: children left but none exited; -1: ECHILD
        }
        exited(pid, status);
    }
}

/// Reaps every child that has exited: the workload's status if it was
/// among them, and whether any process is left.
fn reap_all(workload: libc::pid_t) -> (Option<libc::c_int>, bool) {
    let mut found = None;
    let left = reap_each(|pid, status| {
        if pid == workload {
            found = Some(status);
        }
    });
    (found, left)
}

/// Handles a host message; signals go to `target` (the workload, or -1:
/// every process but guest-init once the workload is gone).
fn handle(msg: HostMsg, target: libc::pid_t, relay: Option<&Relay>) {
    match msg {
        HostMsg::Signal(signal) => {
            // SAFETY: kill has no memory effects; a bad signal number is just EINVAL.
            unsafe { libc::kill(target, signal) };
        }
        HostMsg::Resize(size) => {
            if let Some(relay) = relay {
                // A failed resize leaves the old size: nothing to report.
                let _ = relay.pty.resize(size);
            }
        }
        // A second run request makes no sense while one runs; ignore it.
        HostMsg::Run(_) | HostMsg::Prepare(_) => {}
    }
}

/// Polls `fds`, retrying when interrupted.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> Result<(), Error> {
    loop {
        // SAFETY: fds is a valid array of fds.len() pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(Error::sys("poll", e));
        }
    }
}

pub fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// The control port's pollfd; a negative fd (skipped by poll) once the host hung up.
pub fn control_pollfd(control: &Control) -> libc::pollfd {
    pollfd(
        if control.is_closed() {
            -1
        } else {
            control.fd()
        },
        libc::POLLIN,
    )
}

/// Runs until the workload exits (with `wait_all`: until every process
/// has); the message that reports how the workload did. With a `relay`,
/// the workload's terminal is copied to and from the host meanwhile; with
/// a `watchdog`, memory is watched.
pub fn supervise(
    workload: libc::pid_t,
    wait_all: bool,
    control: &mut Control,
    signals: &ChildSignals,
    mut relay: Option<&mut Relay>,
    mut watchdog: Option<&mut Watchdog>,
) -> Result<GuestMsg, Error> {
    let mut exited = None;
    loop {
        if let Some(watchdog) = watchdog.as_deref_mut() {
            watchdog.check();
        }
        while let Some(msg) = control.buffered()? {
            let target = if exited.is_some() { -1 } else { workload };
            handle(msg, target, relay.as_deref());
        }
        let mut fds = vec![pollfd(signals.fd, libc::POLLIN), control_pollfd(control)];
        if let Some(relay) = &relay {
            fds.extend(relay.interest().map(|(fd, events)| pollfd(fd, events)));
        }
        poll(&mut fds, if watchdog.is_some() { oom::POLL_MS } else { -1 })?;
        if let Some(relay) = relay.as_deref_mut() {
            relay.pump(fds[2].revents, fds[3].revents);
        }
        if fds[0].revents != 0 {
            signals.drain();
            let (status, left) = reap_all(workload);
            exited = exited.or(status);
            if let Some(status) = exited {
                if !(wait_all && left) {
                    if let Some(relay) = relay.as_deref_mut() {
                        relay.drain_output();
                    }
                    return Ok(outcome(status));
                }
            }
        }
        if fds[1].revents != 0 {
            control.fill()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_map_to_messages() {
        assert_eq!(outcome(3 << 8), GuestMsg::Exited { code: 3 });
        assert_eq!(outcome(0), GuestMsg::Exited { code: 0 });
        assert_eq!(outcome(libc::SIGKILL), GuestMsg::Killed { signal: 9 });
        assert_eq!(
            outcome(libc::SIGSEGV | 0x80),
            GuestMsg::Killed { signal: 11 }
        );
    }
}
