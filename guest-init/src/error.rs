//! guest-init's own failures. Each says what guest-init was doing and
//! carries the cause as its source; [`chain`] makes the one line that the
//! console and the host (in `GuestMsg::Error`) get: "what: cause".

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::PathBuf;

use guest_init::DecodeError;

use crate::sys;

/// Why guest-init cannot go on with a run (the host exits 125).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// guest-init panicked; the panic's message went to the console.
    #[error("guest-init panicked")]
    Panicked,
    /// The host closed the control port while guest-init waited for a message.
    #[error("the host closed the control port")]
    HostClosed,
    /// What came on the control port is not a message (its text says why).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A system call failed: `what` names it or what it was for ("poll",
    /// "sending hello"); the cause shows as C's text for the errno.
    #[error("{what}")]
    Sys {
        what: &'static str,
        #[source]
        source: Errno,
    },
    /// A stage of setting up the VM or the workload's root failed
    /// ("mounting volumes"); the cause names the mount, file or call.
    #[error("{what}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// As [`Error::Setup`], for the root of the supervised child `child`.
    #[error("preparing the root of {child}")]
    ChildRoot {
        child: String,
        #[source]
        source: io::Error,
    },
    /// A failure whose text names what failed itself (the ports that did
    /// not appear, the pty, the hostname).
    #[error(transparent)]
    Io(io::Error),
    /// A build's changes could not go to the host.
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// Why a build's changes could not go to the host.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The entry at `path` (a host path under the upper directory, or the
    /// start of an export path past an image's bounds) could not be read
    /// or sent.
    #[error("exporting {}", .path.display())]
    Entry {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    /// The stream's end could not be sent.
    #[error("exporting the end of {}", .upper.display())]
    End {
        upper: PathBuf,
        #[source]
        source: Errno,
    },
}

impl Error {
    /// The system call (or what it was for) `what` failed with `e`.
    pub fn sys(what: &'static str, e: io::Error) -> Error {
        Error::Sys {
            what,
            source: Errno(e),
        }
    }

    /// The setup stage `what` failed with `source`.
    pub fn setup(what: &'static str, source: io::Error) -> Error {
        Error::Setup { what, source }
    }
}

/// An `io::Error` shown as guest-init shows a failed system call: C's
/// strerror text ("No such file or directory"), without Rust's
/// " (os error 2)".
#[derive(Debug)]
pub struct Errno(pub io::Error);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&sys::error_text(&self.0))
    }
}

impl StdError for Errno {
    // The io::Error itself is what Display shows: its cause comes next.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// `e` and its sources, joined by ": ".
pub fn chain(e: &dyn StdError) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_read_as_the_old_messages() {
        let enoent = || io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(
            chain(&Error::sys("opening /dev/null", enoent())),
            sys::describe("opening /dev/null", &enoent())
        );
        assert_eq!(
            chain(&Error::sys("pipe", io::Error::other("no pipes"))),
            "pipe: no pipes"
        );
        // A setup stage's cause keeps its own text, as format!("{e}") did.
        assert_eq!(
            chain(&Error::setup("mounting volumes", enoent())),
            format!("mounting volumes: {}", enoent())
        );
        let child = Error::ChildRoot {
            child: "db".into(),
            source: io::Error::other("mkdir /mnt/x: No space left on device"),
        };
        assert_eq!(
            chain(&child),
            "preparing the root of db: mkdir /mnt/x: No space left on device"
        );
        assert_eq!(chain(&Error::Io(enoent())), enoent().to_string());
        assert_eq!(
            chain(&Error::HostClosed),
            "the host closed the control port"
        );
    }
}
