//! The control port: JSON lines out (lib.rs `encode`) and in (lib.rs `Decoder`).

use std::io;
use std::os::fd::RawFd;

use guest_init::{encode, Decoder, GuestMsg, HostMsg};

use crate::error::Error;
use crate::sys;

/// How long the last message may wait for a host that stopped reading.
const FINAL_WRITE_TIMEOUT_S: libc::c_uint = 10;

#[derive(Debug)]
pub struct Control {
    fd: RawFd,
    decoder: Decoder,
    /// The host has closed its end: reads return end-of-file.
    closed: bool,
}

impl Control {
    pub fn new(fd: RawFd) -> Control {
        Control {
            fd,
            decoder: Decoder::default(),
            closed: false,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Sends one message; blocks until the host has taken it (or connects).
    pub fn send(&self, msg: &GuestMsg) -> io::Result<()> {
        sys::write_all(self.fd, &encode(msg), false)
    }

    /// Sends the run's last message, giving up after a while if the host
    /// has gone away: guest-init powers off next either way.
    pub fn send_final(&self, msg: &GuestMsg) -> io::Result<()> {
        extern "C" fn on_alarm(_: libc::c_int) {}
        // SAFETY: installs a handler that does nothing (async-signal-safe),
        // without SA_RESTART so the blocked write returns EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut());
            libc::alarm(FINAL_WRITE_TIMEOUT_S);
        }
        let result = sys::write_all(self.fd, &encode(msg), true);
        // SAFETY: cancels the alarm set above.
        unsafe { libc::alarm(0) };
        result
    }

    /// The next message already received, without reading.
    pub fn buffered(&mut self) -> Result<Option<HostMsg>, Error> {
        Ok(self.decoder.next()?)
    }

    /// Reads once from the port (blocking) into the decoder; notes end-of-file.
    pub fn fill(&mut self) -> Result<(), Error> {
        let mut buf = [0u8; 4096];
        match sys::read(self.fd, &mut buf) {
            Ok(0) => {
                self.closed = true;
                Ok(())
            }
            Ok(n) => Ok(self.decoder.push(&buf[..n])?),
            Err(e) => Err(Error::sys("reading the control port", e)),
        }
    }

    /// Blocks until the next message; end-of-file is an error.
    pub fn recv(&mut self) -> Result<HostMsg, Error> {
        loop {
            if let Some(msg) = self.buffered()? {
                return Ok(msg);
            }
            if self.closed {
                return Err(Error::HostClosed);
            }
            self.fill()?;
        }
    }
}
