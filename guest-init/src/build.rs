//! A build VM: runs the batch's program steps one after another on the
//! writable overlay root, then exports the root's changes to the host.

use std::os::fd::RawFd;
use std::path::PathBuf;

use guest_init::{Build, GuestMsg, RunSpec};

use crate::control::Control;
use crate::error::Error;
use crate::export;
use crate::ports::Ports;
use crate::spawn;
use crate::supervise::{self, ChildSignals};
use crate::sys;

/// Runs every step while they succeed; the run's final message. `upper`
/// is an fd of the overlay's upper directory, opened before the root moved;
/// `before_export` puts back what guest-init itself changed in the root.
pub fn run(
    build: &Build,
    spec: &RunSpec,
    ports: &Ports,
    control: &mut Control,
    signals: &ChildSignals,
    upper: RawFd,
    before_export: impl FnOnce() -> Result<(), Error>,
) -> Result<GuestMsg, Error> {
    let null = sys::open("/dev/null", libc::O_RDONLY | libc::O_CLOEXEC)
        .map_err(|e| Error::sys("opening /dev/null", e))?;
    let step_ports = Ports {
        stdin: null,
        ..*ports
    };
    for (index, step) in build.steps.iter().enumerate() {
        control
            .send(&GuestMsg::Step {
                index: index as u32,
            })
            .map_err(|e| Error::sys("reporting a step", e))?;
        let banner = format!("{}\n", step.banner);
        sys::write_all(ports.stderr, banner.as_bytes(), false)
            .map_err(|e| Error::sys("writing the step's banner", e))?;
        let step_spec = RunSpec {
            argv: step.argv.clone(),
            env: step.env.clone(),
            cwd: step.cwd.clone(),
            build: None,
            mounts: Vec::new(),
            read_only_root: false,
            ..spec.clone()
        };
        let pid = match spawn::spawn(
            &spawn::Program::of(&step_spec),
            spawn::Stdio::ports(&step_ports),
        ) {
            Ok(pid) => pid,
            Err(msg) => return Ok(msg),
        };
        if index == 0 {
            control
                .send(&GuestMsg::Started)
                .map_err(|e| Error::sys("reporting the start", e))?;
        }
        let outcome = supervise::supervise(pid, false, control, signals, None, None)?;
        if outcome != (GuestMsg::Exited { code: 0 }) {
            return Ok(outcome);
        }
    }
    kill_the_rest(signals);
    before_export()?;
    for fd in [ports.stdin, ports.stdout, ports.stderr, null] {
        sys::close(fd);
    }
    let upper_path = PathBuf::from(format!("/proc/self/fd/{upper}"));
    export::export(&upper_path, ports.export)?;
    sys::close(ports.export);
    Ok(GuestMsg::Exited { code: 0 })
}

/// Kills what the steps left running (daemons, background jobs) so that
/// nothing changes the root while it is exported, and reaps them.
fn kill_the_rest(signals: &ChildSignals) {
    // SAFETY: kill(-1) signals every process but PID 1 itself; no memory effects.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break; // ECHILD: all reaped
        }
    }
    signals.drain();
}
