//! A run's program held ready in a warm snapshot ([`guest_init::Prepare`]
//! with a run): the run's shares and volumes mounted, its hostname set,
//! and its program forked, exec'd and stopped by ptrace before its first
//! instruction. A run of the same spec restored from the snapshot neither
//! mounts, forks nor execs: on an emulating host those are most of a run
//! of `true`.
//!
//! What the program sees of the world at its start must still be the
//! run's own. The clock and the kernel's random pool are refreshed before
//! it goes, as for any run; its `AT_RANDOM` bytes (the seed of libc's
//! stack protector and pointer guard, read by its first instructions) are
//! rewritten with fresh ones; the shares' top directories keep their node
//! IDs across restores (the host's server pins them), and their cached
//! attributes are fetched again. Nothing beneath a share may be looked
//! up before the snapshot, so that /work is the host's of now: the spec
//! is checked first ([`guest_init::RunSpec::can_fork_ahead`]), the
//! program's mappings here, and the host's FUSE server, which sees every
//! request, does not save a snapshot whose guest reached further. Its
//! address-space layout is the snapshot's: runs restored from one
//! snapshot share it (the host keys them by project).

use std::io;

use guest_init::{GuestMsg, Mount, RunSpec};

use crate::error::Error;
use crate::ports::Ports;
use crate::spawn;
use crate::sys;
use crate::{mounts, volumes};

/// auxv's type of the address of the 16 random bytes.
const AT_RANDOM: u64 = 25;

/// A run readied ahead: its mounts in place and, unless that failed, its
/// program stopped before its first instruction.
pub struct Ready {
    /// The spec it was readied for, as [`RunSpec::fresh`] gives it.
    pub spec: RunSpec,
    pub child: Option<Child>,
}

pub struct Child {
    pub pid: libc::pid_t,
    /// Where its `AT_RANDOM` bytes are in its memory.
    random_at: u64,
}

/// Mounts what `spec` mounts over the entered root, sets its hostname and
/// starts its program stopped. A program that cannot be started (or
/// maps a file from a share) is left to the run, which starts it itself.
pub fn ready(spec: &RunSpec, ports: &Ports) -> Result<Ready, Error> {
    let shares = volumes::open_shares(&spec.mounts)
        .map_err(|e| Error::setup("mounting the host shares", e))?;
    mounts::set_hostname(&spec.hostname)
        .map_err(|e| Error::setup("preparing the root filesystem", e))?;
    volumes::mount_all(&spec.mounts, &shares, spec.read_only_root)
        .map_err(|e| Error::setup("mounting volumes", e))?;
    drop(shares);
    let child = start(
        &spawn::Program::of(spec),
        spawn::Stdio::ports(ports),
        &spec.mounts,
        "",
    );
    Ok(Ready {
        spec: spec.fresh(),
        child,
    })
}

/// Starts `program` stopped before its first instruction, its pages
/// faulted in; `None` if it cannot be started, or maps a file from one of
/// `mounts`' shares (`root` is where its root is, seen from here).
pub fn start(
    program: &spawn::Program<'_>,
    stdio: spawn::Stdio<'_>,
    mounts: &[Mount],
    root: &str,
) -> Option<Child> {
    let pid = spawn::spawn_stopped(program, stdio).ok()?;
    let maps = sys::read_text(&format!("/proc/{pid}/maps")).ok();
    match maps.and_then(|maps| checked(pid, &maps, mounts, root).map(|at| (at, maps))) {
        Some((random_at, maps)) => {
            prefault(pid, &maps);
            Some(Child { pid, random_at })
        }
        None => {
            spawn::kill(pid);
            None
        }
    }
}

/// The share targets of `mounts` as seen from here, under `root`.
pub fn share_paths(mounts: &[Mount], root: &str) -> Vec<String> {
    mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Share { target, .. } => Some(format!("{root}{target}")),
            _ => None,
        })
        .collect()
}

/// Where the stopped `pid`, whose /proc/PID/maps is `maps`, keeps its
/// AT_RANDOM bytes, if it maps no file from a share.
fn checked(pid: libc::pid_t, maps: &str, mounts: &[Mount], root: &str) -> Option<u64> {
    let targets = share_paths(mounts, root);
    let shared = maps.lines().any(|line| {
        // The path is the rest of the line from its first " /" (the
        // fields before it hold no slash; the path may hold spaces).
        line.find(" /").is_some_and(|at| {
            targets
                .iter()
                .any(|t| guest_init::within(&line[at + 1..], t))
        })
    });
    if shared {
        return None;
    }
    random_address(&read_bytes(&format!("/proc/{pid}/auxv"))?)
}

/// Most bytes of the stopped program's mappings faulted in ahead.
const MAX_PREFAULT: u64 = 16 << 20;
const PAGE: u64 = 4096;

/// Faults the stopped `pid`'s mapped pages (its /proc/PID/maps is
/// `maps`) in, as the tracer: read through /proc/PID/mem, and written
/// back where the mapping is private and writable (its copy made), so
/// that the run takes no fault for them. A page that cannot be reached
/// is left to fault in the run.
fn prefault(pid: libc::pid_t, maps: &str) {
    let Ok(mem) = sys::open(&format!("/proc/{pid}/mem"), libc::O_RDWR | libc::O_CLOEXEC) else {
        return;
    };
    let mut budget = MAX_PREFAULT / PAGE;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let name = fields.nth(3).unwrap_or("");
        if name.starts_with("[v") || !perms.starts_with('r') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let write =
            perms.as_bytes().get(1) == Some(&b'w') && perms.as_bytes().get(3) == Some(&b'p');
        // One byte a page: what is copied is emulated work too.
        let mut at = start;
        while at < end && budget > 0 {
            let mut byte = 0u8;
            let offset = at as libc::off_t;
            // SAFETY: byte is valid for a write of one byte.
            if unsafe { libc::pread(mem, (&mut byte as *mut u8).cast(), 1, offset) } != 1 {
                break;
            }
            if write {
                // SAFETY: byte holds the byte just read.
                unsafe { libc::pwrite(mem, (&byte as *const u8).cast(), 1, offset) };
            }
            at += PAGE;
            budget -= 1;
        }
    }
    sys::close(mem);
}

fn read_bytes(path: &str) -> Option<Vec<u8>> {
    let fd = sys::open(path, libc::O_RDONLY | libc::O_CLOEXEC).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = sys::read(fd, &mut buf);
    sys::close(fd);
    buf.truncate(n.ok()?);
    Some(buf)
}

/// AT_RANDOM's value in an auxv of native u64 pairs.
fn random_address(auxv: &[u8]) -> Option<u64> {
    auxv.chunks_exact(16).find_map(|pair| {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&pair[i..i + 8]);
            u64::from_ne_bytes(w)
        };
        (word(0) == AT_RANDOM).then(|| word(8))
    })
}

/// Lets a readied program go, once the run's clock and entropy are set:
/// fresh AT_RANDOM bytes, the attributes of its `shares` (their targets as
/// seen from here) fetched again, then detached. Its pid; on failure the final message.
pub fn release(child: &Child, shares: &[String]) -> Result<libc::pid_t, GuestMsg> {
    let failed = |what: &str, e: io::Error| {
        spawn::kill(child.pid);
        GuestMsg::Error {
            message: sys::describe(what, &e),
        }
    };
    let mut random = [0u8; 16];
    // SAFETY: random is valid for writes of its length.
    let n = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    if n != random.len() as isize {
        return Err(failed("getrandom", io::Error::last_os_error()));
    }
    // Two words, poked as the tracer (the kernel has no process_vm_writev).
    for (i, word) in random.chunks_exact(8).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let at = child.random_at + 8 * i as u64;
        // SAFETY: PTRACE_POKEDATA writes one word into the stopped
        // tracee's memory; the kernel checks the address against it.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_POKEDATA,
                child.pid,
                at as *mut libc::c_void,
                u64::from_ne_bytes(w) as *mut libc::c_void,
            )
        };
        if r < 0 {
            return Err(failed(
                "writing the workload's AT_RANDOM",
                io::Error::last_os_error(),
            ));
        }
    }
    for target in shares {
        // The attributes the snapshot cached are another run's.
        refetch(target).map_err(|e| failed(&format!("stat {target}"), e))?;
    }
    // SAFETY: detaching our own stopped tracee; no memory is passed.
    let r = unsafe { libc::ptrace(libc::PTRACE_DETACH, child.pid, 0, 0) };
    if r < 0 {
        return Err(failed(
            "letting the workload go",
            io::Error::last_os_error(),
        ));
    }
    Ok(child.pid)
}

/// Asks the filesystem for `path`'s attributes instead of the cache.
fn refetch(path: &str) -> io::Result<()> {
    let c = sys::cstring(path)?;
    // SAFETY: an all-zero statx is a valid value for statx to fill in.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and st is a valid statx to write.
    sys::check(unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_FORCE_SYNC,
            libc::STATX_BASIC_STATS,
            &mut st,
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program held stopped runs nothing until released, and its
    /// AT_RANDOM is found; released, it runs to its end. (The bytes
    /// being fresh is the e2e's to show: warm.rs reads them in the guest.)
    #[test]
    fn a_stopped_program_runs_only_once_released() {
        let spec = RunSpec::new(
            vec!["/bin/sh".into(), "-c".into(), "echo go".into()],
            vec![("PATH".into(), "/usr/bin:/bin".into())],
        );
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let stdio = spawn::Stdio::Fds([fds[1], fds[1], 2]);
        let pid = spawn::spawn_stopped(&spawn::Program::of(&spec), stdio).expect("spawned");
        sys::close(fds[1]);
        let status = sys::read_text(&format!("/proc/{pid}/status")).expect("status");
        assert!(status.contains("(tracing stop)"), "{status}");
        let auxv = read_bytes(&format!("/proc/{pid}/auxv")).expect("auxv");
        let random_at = random_address(&auxv).expect("AT_RANDOM");
        let child = Child { pid, random_at };
        assert_eq!(release(&child, &[]).ok(), Some(pid));
        let mut buf = [0u8; 64];
        let n = sys::read(fds[0], &mut buf).expect("read");
        assert_eq!(&buf[..n], b"go\n");
        let mut status = 0;
        // SAFETY: waiting for our own child; status is a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        sys::close(fds[0]);
    }

    #[test]
    fn at_random_is_found_in_auxv() {
        let mut auxv = Vec::new();
        for (k, v) in [(6u64, 4096u64), (AT_RANDOM, 0x7ffd_1234), (0, 0)] {
            auxv.extend_from_slice(&k.to_ne_bytes());
            auxv.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(random_address(&auxv), Some(0x7ffd_1234));
        assert_eq!(random_address(&auxv[..16]), None);
        assert_eq!(random_address(&auxv[..20]), None);
    }
}
