//! guest-init: PID 1 of a cella microVM. Finds the host's ports, says hello,
//! takes a `RunSpec`, builds the workload's root, runs it, reports how it
//! ended and powers off. It never exits: PID 1 exiting panics the kernel.

// std's runtime setup (lang_start) is skipped on purpose: it aborts when
// fds 0..=2 are closed and /dev/null cannot be opened, which is exactly how
// the kernel starts PID 1 from an initramfs without /dev/console.
#![cfg_attr(not(test), no_main)]

mod build;
mod control;
mod error;
mod eth0;
mod export;
mod forked;
mod group;
mod mounts;
mod oom;
mod ports;
mod refresh;
mod spawn;
mod stats;
mod supervise;
mod sys;
mod tty;
mod volumes;
mod warm;

use guest_init::{GuestMsg, HostMsg, RunSpec, PROTOCOL_VERSION};

use control::Control;
use error::Error;
use supervise::ChildSignals;

/// The C entry point, called by glibc's startup code.
#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    pid1()
}

/// Unused: the test harness brings its own main.
#[cfg(test)]
fn main() {
    pid1()
}

fn pid1() -> ! {
    // A panic's message goes to the console; the run ends with an Error below.
    std::panic::set_hook(Box::new(|info| console(&info.to_string())));
    let mut control = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut control)))
        .unwrap_or(Err(Error::Panicked));
    let msg = outcome.unwrap_or_else(|e| {
        let message = error::chain(&e);
        console(&message);
        GuestMsg::Error { message }
    });
    if let Some(control) = &control {
        if let Some(report) = stats::report() {
            // Only for CELLA_STATS: a lost report is no reason to fail.
            let _ = control.send(&report);
        }
        if let Err(e) = control.send_final(&msg) {
            console(&sys::describe("sending the final message", &e));
        }
    }
    power_off()
}

/// Everything up to the run's final message; `Err` is a failure of guest-init itself.
fn run(control_slot: &mut Option<Control>) -> Result<GuestMsg, Error> {
    mounts::early().map_err(|e| Error::setup("early mounts", e))?;
    mounts::prepare().map_err(|e| Error::setup("preparing the root", e))?;
    sys::fill_stdio().map_err(|e| Error::sys("opening /dev/null", e))?;
    sys::link_up(b"lo").map_err(|e| Error::sys("bringing up lo", e))?;
    let ports = ports::open_all().map_err(Error::Io)?;
    // Before the hello, so that a snapshot holds them made.
    refresh::open_random().map_err(|e| Error::sys("opening /dev/urandom", e))?;
    let signals = ChildSignals::new().map_err(|e| Error::sys("signalfd", e))?;
    let control = control_slot.insert(Control::new(ports.control));
    control
        .send(&GuestMsg::Hello {
            version: PROTOCOL_VERSION,
        })
        .map_err(|e| Error::sys("sending hello", e))?;
    let (spec, warm) = wait_for_run(control, &ports)?;
    stats::start(spec.stats);
    if let Some(warm) = &warm {
        // A warm VM runs only the kind of spec it was readied for.
        let fits = match warm {
            Warm::Root(device) => {
                spec.build.is_none() && spec.supervise.is_none() && *device == spec.rootfs_device
            }
            Warm::Run(ready) => ready.spec == spec.fresh(),
            Warm::Group(readied, _) => **readied == spec.fresh(),
        };
        if !fits {
            return Err(Error::Io(std::io::Error::other(
                "the run spec does not match what this warm VM has readied",
            )));
        }
    }
    refresh::set_clock(spec.realtime_ns).map_err(|e| Error::sys("setting the clock", e))?;
    refresh::add_entropy(&spec.entropy).map_err(|e| Error::sys("seeding /dev/urandom", e))?;
    stats::mark("clock and entropy set");
    if let Some(net) = &spec.network {
        eth0::configure(net).map_err(|e| Error::setup("configuring the network", e))?;
        stats::mark("eth0 configured");
    }

    // The upper directory is out of reach once the root has moved: a
    // build keeps an fd of it to export the steps' changes.
    let upper = match spec.build {
        Some(_) => Some(mounts::open_upper().map_err(|e| Error::sys("opening the upper dir", e))?),
        None => None,
    };
    if let Some(group) = &spec.supervise {
        sys::close(ports.export);
        let prepared = match warm {
            Some(Warm::Group(_, prepared)) => Some(*prepared),
            _ => None,
        };
        return group::run(
            group,
            (&spec.hostname, spec.network.as_ref()),
            &ports,
            control,
            &signals,
            prepared,
        );
    }
    let warm_root = matches!(warm, Some(Warm::Root(_)));
    let (mut ready, mounted) = match warm {
        Some(Warm::Run(ready)) => (ready.child, true),
        Some(Warm::Root(_) | Warm::Group(..)) | None => (None, false),
    };
    let mut resolv = None;
    if !mounted {
        let shares = volumes::open_shares(&spec.mounts)
            .map_err(|e| Error::setup("mounting the host shares", e))?;
        stats::mark("shares mounted");
        match warm_root {
            true => mounts::set_hostname(&spec.hostname),
            false => mounts::switch_root(&spec.rootfs_device, &spec.hostname),
        }
        .map_err(|e| Error::setup("preparing the root filesystem", e))?;
        stats::mark("root switched");
        resolv = match &spec.network {
            Some(net) => Some(
                eth0::write_resolv("", net)
                    .map_err(|e| Error::sys("writing /etc/resolv.conf", e))?,
            ),
            None => None,
        };
        volumes::mount_all(&spec.mounts, &shares, spec.read_only_root)
            .map_err(|e| Error::setup("mounting volumes", e))?;
        drop(shares);
        stats::mark("volumes mounted");
    }
    if let (Some(build), Some(upper)) = (&spec.build, upper) {
        let restore = || match resolv {
            Some(previous) => eth0::restore_resolv("", previous)
                .map_err(|e| Error::sys("restoring /etc/resolv.conf", e)),
            None => Ok(()),
        };
        return build::run(build, &spec, &ports, control, &signals, upper, restore);
    }
    sys::close(ports.export);
    let mut watchdog = oom::Watchdog::new();
    let pty = match spec.tty {
        Some(size) => Some(tty::Pty::open(size).map_err(Error::Io)?),
        None => None,
    };
    let stdio = match &pty {
        Some(pty) => spawn::Stdio::Tty(&pty.slave),
        None => spawn::Stdio::ports(&ports),
    };
    let started = match ready.take() {
        Some(child) => forked::release(&child, &forked::share_paths(&spec.mounts, ""))
            .inspect(|_| stats::mark("workload released")),
        None => spawn::spawn(&spawn::Program::of(&spec), stdio)
            .inspect(|_| stats::mark("workload spawned")),
    };
    let pid = match started {
        Ok(pid) => pid,
        Err(msg) => return Ok(msg),
    };
    // The workload holds the stdio ports now; the host sees them close
    // with it. A terminal's relay keeps stdin and stdout.
    let mut relay = pty.map(|pty| tty::Relay::new(pty, ports.stdin, ports.stdout));
    if relay.is_none() {
        sys::close(ports.stdin);
        sys::close(ports.stdout);
    }
    sys::close(ports.stderr);
    control
        .send(&GuestMsg::Started)
        .map_err(|e| Error::sys("reporting the start", e))?;
    let outcome = supervise::supervise(
        pid,
        spec.wait_all_children,
        control,
        &signals,
        relay.as_mut(),
        Some(&mut watchdog),
    )?;
    stats::mark("workload reaped");
    if let Some(report) = watchdog.report() {
        // The final message follows; a lost warning is no reason to fail.
        let _ = control.send(&report);
    }
    Ok(outcome)
}

/// What a warm VM readied before its run spec came.
enum Warm {
    /// The root on this device entered, the program read ahead.
    Root(String),
    /// The whole run readied ([`forked`]).
    Run(Box<forked::Ready>),
    /// A `!Supervise` run readied, for this spec ([`RunSpec::fresh`]).
    Group(Box<RunSpec>, Box<group::Prepared>),
}

/// Reads control messages until the host says what to run; readies the
/// VM for a warm snapshot first if asked.
fn wait_for_run(
    control: &mut Control,
    ports: &ports::Ports,
) -> Result<(RunSpec, Option<Warm>), Error> {
    let mut warm = None;
    loop {
        match control.recv()? {
            HostMsg::Run(spec) => return Ok((*spec, warm)),
            HostMsg::Prepare(prepare) if warm.is_none() => {
                if let Some(run) = prepare.run.as_ref().filter(|r| r.can_fork_ahead()) {
                    if let Some(group) = &run.supervise {
                        // Each child has a root of its own; guest-init
                        // stays in the initramfs.
                        let prepared = group::prepare(group, &run.hostname, None, true)?;
                        warm = Some(Warm::Group(Box::new(run.fresh()), Box::new(prepared)));
                        control
                            .send(&GuestMsg::Prepared)
                            .map_err(|e| Error::sys("reporting the root ready", e))?;
                        continue;
                    }
                }
                warm::prepare(&prepare)
                    .map_err(|e| Error::setup("preparing the root filesystem", e))?;
                warm = Some(match &prepare.run {
                    Some(run)
                        if run.can_fork_ahead() && run.rootfs_device == prepare.rootfs_device =>
                    {
                        Warm::Run(Box::new(forked::ready(run, ports)?))
                    }
                    _ => Warm::Root(prepare.rootfs_device),
                });
                control
                    .send(&GuestMsg::Prepared)
                    .map_err(|e| Error::sys("reporting the root ready", e))?;
            }
            HostMsg::Prepare(_) => {}
            // Nothing runs yet that a signal could reach.
            HostMsg::Signal(_) | HostMsg::Resize(_) => {}
        }
    }
}

/// Prints a fatal error to the kernel console (the serial port): only for
/// failures, every byte there is a VM exit.
fn console(message: &str) {
    let line = format!("cella guest-init: {message}\n");
    for path in ["/dev/console", "/dev/kmsg"] {
        if let Ok(fd) = sys::open(path, libc::O_WRONLY | libc::O_NOCTTY) {
            let written = sys::write_all(fd, line.as_bytes(), false);
            sys::close(fd);
            if written.is_ok() {
                return;
            }
        }
    }
}

/// Powers the VM off. With `reboot=k` the kernel's restart writes 0xFE to
/// port 0x64, which the VMM treats as power-off.
fn power_off() -> ! {
    // SAFETY: reboot has no memory effects; PID 1 has CAP_SYS_BOOT.
    unsafe {
        libc::reboot(libc::RB_AUTOBOOT);
        // Only reached if the restart failed: halt instead of exiting.
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        // SAFETY: pause just sleeps until a signal arrives.
        unsafe { libc::pause() };
    }
}
