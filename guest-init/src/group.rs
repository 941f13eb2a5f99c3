//! A `!Supervise` run: every child in a root of its own, started together,
//! its output relayed line by line (prefixed with its name if asked), and
//! stopped by the supervise mode's rule, SIGTERM first and SIGKILL after
//! the grace period.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use guest_init::{ChildSpec, ExitCode, GuestMsg, HostMsg, NetConfig, Supervise, SuperviseMode};

use crate::control::Control;
use crate::error::Error;
use crate::eth0;
use crate::forked;
use crate::mounts::{self, ctx};
use crate::oom::{self, Watchdog};
use crate::ports::Ports;
use crate::spawn::{self, Program, Stdio};
use crate::stats;
use crate::supervise::{self, control_pollfd, outcome, pollfd, ChildSignals};
use crate::sys;
use crate::volumes;

/// A partial line longer than this goes out without waiting for its end.
const MAX_LINE: usize = 4096;

/// Why the children are being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The child at this index ended (stop-on-failure) or failed (wait-all-successful).
    Child(usize),
    /// The host passed on this stop signal (Ctrl-C, SIGTERM, SIGQUIT).
    Host(i32),
}

/// Whether the exit of a child with `status` starts stopping the others.
pub fn stops_others(mode: SuperviseMode, status: i32) -> bool {
    match mode {
        SuperviseMode::StopOnFailure => true,
        SuperviseMode::WaitAllSuccessful => status != 0,
        SuperviseMode::WaitAll => false,
    }
}

/// The run's exit status once every child has ended; `exits` is (child,
/// status) in the order they ended.
pub fn final_status(stop: Option<Stop>, exits: &[(usize, i32)]) -> i32 {
    match stop {
        Some(Stop::Host(signal)) => ExitCode::Signal(signal).code(),
        // vagga's rule: the status of the child that ended first, however
        // the others ended when it stopped them.
        Some(Stop::Child(first)) => exits
            .iter()
            .find(|(child, _)| *child == first)
            .map_or(0, |(_, s)| *s),
        None => exits.iter().map(|(_, s)| *s).find(|s| *s != 0).unwrap_or(0),
    }
}

/// A pipe a child writes to, and what of it is not yet a whole line.
struct Output {
    fd: RawFd,
    port: RawFd,
    prefix: Vec<u8>,
    partial: Vec<u8>,
}

impl Output {
    /// Reads what is there; false once the pipe has closed.
    fn pump(&mut self) -> bool {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match sys::read(self.fd, &mut buf) {
                Ok(0) => {
                    self.flush();
                    return false;
                }
                Ok(n) => {
                    self.partial.extend_from_slice(&buf[..n]);
                    self.emit_lines();
                }
                Err(_) => return true, // EAGAIN
            }
        }
    }

    fn emit_lines(&mut self) {
        let mut out = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            out.extend_from_slice(&self.prefix);
            out.extend(self.partial.drain(..=end));
        }
        if self.partial.len() > MAX_LINE {
            out.extend_from_slice(&self.prefix);
            out.append(&mut self.partial);
            out.push(b'\n');
        }
        self.write(&out);
    }

    fn flush(&mut self) {
        if !self.partial.is_empty() {
            let mut out = self.prefix.clone();
            out.append(&mut self.partial);
            out.push(b'\n');
            self.write(&out);
        }
    }

    fn write(&self, data: &[u8]) {
        // The host reads the ports while the run lasts; if it has gone the
        // output has nowhere to go.
        let _ = sys::write_all(self.port, data, false);
    }
}

struct Child {
    name: String,
    pid: Option<libc::pid_t>,
}

/// What a `!Supervise` run makes before its children start: their roots
/// with their mounts, /dev/null for their stdin, an stdout and an stderr
/// pipe each; in a warm snapshot that holds the run ready, the children
/// themselves, stopped before their first instruction.
pub struct Prepared {
    roots: Vec<String>,
    null: RawFd,
    /// Per child: stdout's read and write ends, stderr's; the write ends
    /// are -1 once a started child holds them.
    pipes: Vec<[RawFd; 4]>,
    stopped: Vec<Option<forked::Child>>,
}

/// Makes the children's roots and pipes; with `ahead`, starts each child
/// stopped ([`forked::start`]; one that cannot be is started by the run).
pub fn prepare(
    group: &Supervise,
    hostname: &str,
    network: Option<&NetConfig>,
    ahead: bool,
) -> Result<Prepared, Error> {
    mounts::initramfs_proc().map_err(|e| Error::setup("mounting /proc", e))?;
    mounts::set_hostname(hostname).map_err(Error::Io)?;
    let all_mounts: Vec<_> = group
        .children
        .iter()
        .flat_map(|c| c.mounts.iter().cloned())
        .collect();
    let shares = volumes::open_shares(&all_mounts)
        .map_err(|e| Error::setup("mounting the host shares", e))?;
    let mut roots = Vec::new();
    for (index, child) in group.children.iter().enumerate() {
        let root = mounts::child_root(index, &child.rootfs_device)
            .and_then(|root| match network {
                Some(net) => eth0::write_resolv(&root, net).map(|_| root),
                None => Ok(root),
            })
            .and_then(|root| {
                in_root(&root, || {
                    volumes::mount_all(&child.mounts, &shares, child.read_only_root)
                })
                .map(|()| root)
            })
            .map_err(|source| Error::ChildRoot {
                child: child.name.clone(),
                source,
            })?;
        roots.push(root);
    }
    drop(shares);
    let null =
        sys::open("/dev/null", libc::O_RDONLY).map_err(|e| Error::sys("opening /dev/null", e))?;
    let mut pipes = Vec::new();
    let mut stopped = Vec::new();
    for (spec, root) in group.children.iter().zip(&roots) {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let child = match ahead {
            true => forked::start(
                &program(spec, root),
                Stdio::Fds([null, out_w, err_w]),
                &spec.mounts,
                root,
            ),
            false => None,
        };
        if child.is_some() {
            sys::close(out_w);
            sys::close(err_w);
            pipes.push([out_r, -1, err_r, -1]);
        } else {
            pipes.push([out_r, out_w, err_r, err_w]);
        }
        stopped.push(child);
    }
    Ok(Prepared {
        roots,
        null,
        pipes,
        stopped,
    })
}

/// Runs the children until the mode's rule says the run is over; the
/// final message. `prepared` is what a warm snapshot made ahead.
pub fn run(
    group: &Supervise,
    spec: (&str, Option<&NetConfig>),
    ports: &Ports,
    control: &mut Control,
    signals: &ChildSignals,
    prepared: Option<Prepared>,
) -> Result<GuestMsg, Error> {
    let (hostname, network) = spec;
    let Prepared {
        roots,
        null,
        pipes,
        mut stopped,
    } = match prepared {
        Some(prepared) => prepared,
        None => prepare(group, hostname, network, false)?,
    };
    let mut watchdog = Watchdog::new();

    let mut released = false;
    let mut children = Vec::new();
    let mut outputs = Vec::new();
    let mut exits = Vec::new();
    for (index, (spec, root)) in group.children.iter().zip(&roots).enumerate() {
        let prefix = if group.prefix {
            format!("[{}] ", spec.name).into_bytes()
        } else {
            Vec::new()
        };
        let [out_r, out_w, err_r, err_w] = pipes[index];
        for (fd, port) in [(out_r, ports.stdout), (err_r, ports.stderr)] {
            outputs.push(Output {
                fd,
                port,
                prefix: prefix.clone(),
                partial: Vec::new(),
            });
        }
        let started = match stopped[index].take() {
            Some(child) => {
                released = true;
                forked::release(&child, &forked::share_paths(&spec.mounts, root))
            }
            None => {
                let started = spawn::spawn(&program(spec, root), Stdio::Fds([null, out_w, err_w]));
                sys::close(out_w);
                sys::close(err_w);
                started
            }
        };
        let pid = match started {
            Ok(pid) => Some(pid),
            Err(msg) => {
                let status = msg.exit_status().unwrap_or(ExitCode::Cella.code());
                let message = match msg {
                    GuestMsg::SpawnFailed { message, .. } | GuestMsg::Error { message } => message,
                    _ => String::new(),
                };
                report(control, &spec.name, status, false, Some(message))?;
                exits.push((index, status));
                None
            }
        };
        children.push(Child {
            name: spec.name.clone(),
            pid,
        });
    }
    sys::close(null);
    stats::mark(match released {
        true => "children released",
        false => "children started",
    });
    // Children read /dev/null; the relay keeps the stdout and stderr ports.
    sys::close(ports.stdin);
    control
        .send(&GuestMsg::Started)
        .map_err(|e| Error::sys("reporting the start", e))?;

    let timer = Timer::new()?;
    let grace = Duration::from_millis(group.kill_after_ms);
    // SIGTERM to every child, SIGKILL when the grace period is over; once.
    let mut stop = None;
    let stop_all = |why: Stop, stop: &mut Option<Stop>, children: &[Child]| {
        if stop.is_some() {
            return Ok(());
        }
        *stop = Some(why);
        terminate(children, libc::SIGTERM);
        timer.arm(grace)
    };
    if let Some(&(first, status)) = exits.first() {
        if stops_others(group.mode, status) {
            stop_all(Stop::Child(first), &mut stop, &children)?;
        }
    }
    while children.iter().any(|c| c.pid.is_some()) {
        watchdog.check();
        while let Some(msg) = control.buffered()? {
            match msg {
                HostMsg::Signal(sig)
                    if [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT].contains(&sig) =>
                {
                    stop_all(Stop::Host(sig), &mut stop, &children)?;
                }
                HostMsg::Signal(sig) => terminate(&children, sig),
                HostMsg::Resize(_) | HostMsg::Run(_) | HostMsg::Prepare(_) => {}
            }
        }
        let mut fds = vec![
            pollfd(signals.fd, libc::POLLIN),
            control_pollfd(control),
            pollfd(timer.fd, libc::POLLIN),
        ];
        fds.extend(outputs.iter().map(|o| pollfd(o.fd, libc::POLLIN)));
        supervise::poll(&mut fds, oom::POLL_MS)?;
        let mut closed = Vec::new();
        for (i, output) in outputs.iter_mut().enumerate() {
            if fds[3 + i].revents != 0 && !output.pump() {
                closed.push(i);
            }
        }
        for i in closed.into_iter().rev() {
            sys::close(outputs.remove(i).fd);
        }
        if fds[2].revents != 0 {
            timer.clear();
            terminate(&children, libc::SIGKILL);
        }
        if fds[1].revents != 0 {
            control.fill()?;
        }
        if fds[0].revents != 0 {
            signals.drain();
            let mut ended = Vec::new();
            supervise::reap_each(|pid, status| {
                if let Some(index) = children.iter().position(|c| c.pid == Some(pid)) {
                    ended.push((index, status));
                }
            });
            for (index, wait_status) in ended {
                children[index].pid = None;
                let status = outcome(wait_status)
                    .exit_status()
                    .unwrap_or(ExitCode::Cella.code());
                let stopped = stop.is_some();
                report(control, &children[index].name, status, stopped, None)?;
                exits.push((index, status));
                if stops_others(group.mode, status) {
                    stop_all(Stop::Child(index), &mut stop, &children)?;
                }
            }
        }
    }
    // What the children wrote before they ended; orphans that still hold
    // a pipe are not waited for.
    for output in &mut outputs {
        output.pump();
        output.flush();
        sys::close(output.fd);
    }
    if let Some(report) = watchdog.report() {
        let _ = control.send(&report);
    }
    Ok(GuestMsg::Exited {
        code: final_status(stop, &exits),
    })
}

fn program<'a>(spec: &'a ChildSpec, root: &'a str) -> Program<'a> {
    Program {
        argv: &spec.argv,
        env: &spec.env,
        cwd: &spec.cwd,
        uid: spec.uid,
        gid: spec.gid,
        groups: &spec.groups,
        root: Some(root),
    }
}

fn report(
    control: &Control,
    name: &str,
    status: i32,
    stopped: bool,
    message: Option<String>,
) -> Result<(), Error> {
    control
        .send(&GuestMsg::ChildEnded {
            name: name.to_string(),
            status,
            stopped,
            message,
        })
        .map_err(|e| Error::sys("reporting a child's end", e))
}

/// Sends `signal` to every running child's process group (each child
/// leads a session of its own, so this reaches what it started too).
fn terminate(children: &[Child], signal: i32) {
    for pid in children.iter().filter_map(|c| c.pid) {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(-pid, signal) };
    }
}

/// Runs `f` with the current root changed to `root`, then comes back:
/// the child's volumes are mounted with paths (and symlinks) resolved
/// inside its own root.
fn in_root(root: &str, f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let top = sys::open("/", libc::O_PATH | libc::O_DIRECTORY)?;
    let result = sys::chroot(root)
        .and_then(|()| sys::chdir("/"))
        .map_err(|e| ctx(&format!("chroot {root}"), e))
        .and_then(|()| f());
    // SAFETY: fchdir to an fd we own, then chroot to it: back to the
    // initramfs root (PID 1 is root, so the chroot can be left this way).
    let back = unsafe { sys::check(libc::fchdir(top)) }.and_then(|_| sys::chroot("."));
    sys::close(top);
    back.map_err(|e| ctx("leaving a child's root", e))?;
    result
}

/// A pipe whose read end is non-blocking; both close-on-exec.
fn pipe() -> Result<(RawFd, RawFd), Error> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    sys::check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })
        .map_err(|e| Error::sys("pipe", e))?;
    set_nonblocking(fds[0]);
    Ok((fds[0], fds[1]))
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: F_GETFL/F_SETFL only change the fd's status flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// The grace period's one-shot timer.
struct Timer {
    fd: RawFd,
}

impl Timer {
    fn new() -> Result<Timer, Error> {
        // SAFETY: timerfd_create has no memory effects.
        let fd = sys::check(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            )
        })
        .map_err(|e| Error::sys("timerfd", e))?;
        Ok(Timer { fd })
    }

    fn arm(&self, after: Duration) -> Result<(), Error> {
        // A zero it_value disarms: arm at least one nanosecond.
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: spec is a valid itimerspec; the old value is not asked for.
        sys::check(unsafe { libc::timerfd_settime(self.fd, 0, &spec, std::ptr::null_mut()) })
            .map(drop)
            .map_err(|e| Error::sys("arming the grace timer", e))
    }

    fn clear(&self) {
        let mut buf = [0u8; 8];
        let _ = sys::read(self.fd, &mut buf);
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        sys::close(self.fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SuperviseMode::*;

    #[test]
    fn modes_decide_when_to_stop() {
        assert!(stops_others(StopOnFailure, 0));
        assert!(stops_others(StopOnFailure, 1));
        assert!(!stops_others(WaitAllSuccessful, 0));
        assert!(stops_others(WaitAllSuccessful, 3));
        assert!(!stops_others(WaitAll, 3));
    }

    #[test]
    fn final_statuses() {
        // The first to end failed: its status.
        assert_eq!(final_status(Some(Stop::Child(1)), &[(1, 3), (0, 143)]), 3);
        // It ended well: 0, however the others were stopped (vagga's rule).
        assert_eq!(
            final_status(Some(Stop::Child(0)), &[(0, 0), (1, 143), (2, 0)]),
            0
        );
        assert_eq!(final_status(Some(Stop::Child(0)), &[(0, 0), (1, 137)]), 0);
        // Nobody stopped anyone: the first failure, else 0.
        assert_eq!(final_status(None, &[(0, 0), (1, 4), (2, 5)]), 4);
        assert_eq!(final_status(None, &[(0, 0), (1, 0)]), 0);
        // The host's Ctrl-C.
        assert_eq!(final_status(Some(Stop::Host(libc::SIGINT)), &[(0, 0)]), 130);
    }
}
