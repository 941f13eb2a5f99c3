//! The second wall: every VM runs in a process of its own, forked from
//! cella for that VM alone, which gives up what the VM does not need
//! before the guest runs (SECURITY.md, "The second wall").
//!
//! Why a process and not a thread: seccomp filters, capabilities and
//! Landlock are per thread, but memory is not. A guest that took over a
//! device thread could rewrite the stack of an unfiltered thread of the
//! same process; so the filtered threads are the only threads of theirs.
//! cella itself (the parent) keeps what builds and later runs need (host
//! tools, the image store), holds no guest-facing code while a VM runs,
//! and reads back only a bounded, checked reply.
//!
//! Why fork and not exec: the VM's whole setup (open disks, the virtio-fs
//! server's open shares, the run spec) is already in memory and fds; a
//! fork hands it over without a protocol of its own. The parent forks
//! while it runs no other thread that matters (see [`in_child`]).

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod caps;
pub mod helper;
pub mod jail;
pub mod seccomp;

/// The most a VM process may reply: a status and an error chain.
const REPLY_LIMIT: u64 = 1 << 20;

/// The VM process a signal sent to cella goes on to, or 0.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// Set in a VM process: the parent's forwarding does nothing there.
static IN_CHILD: AtomicBool = AtomicBool::new(false);
/// The parent of a VM process, as it was when the process started.
static PARENT: AtomicI32 = AtomicI32::new(0);
/// Set in a VM process once it handles the forwarded signals itself;
/// until then they act as by default there.
static TAKEN_OVER: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot start the VM's process")]
    Fork(#[source] std::io::Error),
    #[error("cannot wait for the VM's process")]
    Wait(#[source] std::io::Error),
    #[error("the VM's process was killed by signal {0} ({1}){2}")]
    Killed(i32, &'static str, &'static str),
    #[error("the VM's process made a system call its seccomp filter forbids (named above) and was stopped")]
    Forbidden,
    #[error("the VM's process ended without a reply (exit status {0})")]
    NoReply(i32),
    #[error("the VM's process sent a bad reply: {0}")]
    BadReply(String),
    /// The VM's own error, passed on as its chain of messages.
    #[error(transparent)]
    Chain(ChainError),
}

/// An error chain carried from the VM's process: each message, outermost
/// first. Shown like the error it came from (`text::error_chain`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainError {
    message: String,
    source: Option<Box<ChainError>>,
}

impl ChainError {
    pub fn of(e: &dyn std::error::Error) -> ChainError {
        ChainError {
            message: e.to_string(),
            source: e.source().map(|s| Box::new(ChainError::of(s))),
        }
    }

    fn depth(&self) -> usize {
        1 + self.source.as_ref().map_or(0, |s| s.depth())
    }
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ChainError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// Whether this process is a VM's process.
pub fn in_vm_process() -> bool {
    IN_CHILD.load(Ordering::SeqCst)
}

/// Called by a VM's process that now handles the forwarded signals
/// itself (their default action stays its own business).
pub fn signals_taken_over() {
    TAKEN_OVER.store(true, Ordering::SeqCst);
}

/// The pid of cella, in a VM's process; else None.
pub fn parent_pid() -> Option<i32> {
    in_vm_process().then(|| PARENT.load(Ordering::SeqCst))
}

/// Runs `run` in a new process and returns its reply. Meanwhile `signals`
/// sent to this process by another one (`kill`, not a terminal's keys,
/// which reach both processes) go on to the VM's process, which takes
/// signals from cella and the kernel only, so none arrives twice.
///
/// The caller must have no thread that holds a lock the child needs:
/// cella forks before a VM's own threads exist; the threads it may have
/// (a banner's timer, passt's stderr relay) take no lock the VM uses.
pub fn in_child<T, F>(signals: &[i32], run: F) -> Result<T, SandboxError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, ChainError>,
{
    forward(signals)?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SandboxError::Fork(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded: both fds are new and ours.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // What the parent buffered must not come out twice.
    let _ = std::io::stdout().flush();
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork has no memory-safety preconditions; the child only
    // uses state it owns (see this function's comment).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SandboxError::Fork(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(read);
        child(parent, write, run);
    }
    drop(write);
    CHILD.store(pid, Ordering::SeqCst);
    let reply = read_reply(read);
    let status = wait(pid);
    CHILD.store(0, Ordering::SeqCst);
    let status = status?;
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let why = match sig {
            libc::SIGKILL => ": it was killed from outside, or ran out of memory",
            _ => "",
        };
        return Err(SandboxError::Killed(sig, signal_name(sig), why));
    }
    let code = libc::WEXITSTATUS(status);
    let bytes = match reply {
        Ok(bytes) if !bytes.is_empty() => bytes,
        _ if code == seccomp::FORBIDDEN_EXIT => return Err(SandboxError::Forbidden),
        _ => return Err(SandboxError::NoReply(code)),
    };
    let reply: Result<T, ChainError> =
        serde_json::from_slice(&bytes).map_err(|e| SandboxError::BadReply(e.to_string()))?;
    match reply {
        Ok(v) => Ok(v),
        Err(e) if e.depth() > 64 => Err(SandboxError::BadReply("an error chain too deep".into())),
        Err(e) => Err(SandboxError::Chain(e)),
    }
}

/// The VM's process: runs `run`, writes its reply and exits without
/// running the parent's exit handlers or destructors.
fn child<T, F>(parent: i32, reply: OwnedFd, run: F) -> !
where
    T: Serialize,
    F: FnOnce() -> Result<T, ChainError>,
{
    IN_CHILD.store(true, Ordering::SeqCst);
    PARENT.store(parent, Ordering::SeqCst);
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number; getppid
    // cannot fail. If cella died before the prctl, the VM goes too.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    let result = run();
    let bytes = serde_json::to_vec(&result).unwrap_or_default();
    let mut file = std::fs::File::from(reply);
    let _ = file.write_all(&bytes);
    drop(file);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process; nothing runs after it.
    unsafe { libc::_exit(0) }
}

/// The reply, read to its end (the child's exit closes it) and bounded.
fn read_reply(read: OwnedFd) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::from(read)
        .take(REPLY_LIMIT + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > REPLY_LIMIT {
        bytes.clear();
    }
    Ok(bytes)
}

fn wait(pid: i32) -> Result<i32, SandboxError> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status of our own child into `status`.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(SandboxError::Wait(e));
        }
    }
}

/// Installs, once, the handler that passes `signals` on to the VM's
/// process while there is one; outside a VM they act as by default.
fn forward(signals: &[i32]) -> Result<(), SandboxError> {
    static REGISTERED: OnceLock<Result<(), i32>> = OnceLock::new();
    let result = REGISTERED.get_or_init(|| {
        for &sig in signals {
            let action = move |info: &libc::siginfo_t| {
                if IN_CHILD.load(Ordering::SeqCst) {
                    // A VM's process that does not handle it yet (a cold
                    // boot, Ctrl-C) ends as the signal says.
                    if !TAKEN_OVER.load(Ordering::SeqCst) {
                        let _ = signal_hook::low_level::emulate_default_handler(sig);
                    }
                    return;
                }
                let child = CHILD.load(Ordering::SeqCst);
                if child == 0 {
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                } else if info.si_code <= 0 {
                    // Sent by a process (si_code SI_USER, SI_QUEUE,
                    // SI_TKILL): only cella got it. A terminal's (the
                    // kernel's) reached the VM's process too.
                    // SAFETY: kill is async-signal-safe.
                    unsafe { libc::kill(child, sig) };
                }
            };
            // SAFETY: the action only reads atomics and calls kill or
            // emulate_default_handler, all async-signal-safe.
            unsafe { signal_hook_registry::register_sigaction(sig, action) }
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EINVAL))?;
        }
        Ok(())
    });
    result
        .map_err(|e| SandboxError::Fork(std::io::Error::from_raw_os_error(e)))
        .map(|_| ())
}

/// The name of the signals cella reports.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSYS => "SIGSYS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_replies_with_its_value_or_its_error_chain() {
        let v: u32 = in_child(&[], || Ok(7)).unwrap();
        assert_eq!(v, 7);
        let e = in_child::<u32, _>(&[], || {
            let inner = std::io::Error::other("inner");
            Err(ChainError {
                message: "outer".into(),
                source: Some(Box::new(ChainError::of(&inner))),
            })
        })
        .unwrap_err();
        assert_eq!(crate::text::error_chain(&e, ": "), "outer: inner");
    }

    #[test]
    fn a_child_killed_by_a_signal_is_reported_as_such() {
        let e = in_child::<u32, _>(&[], || {
            // SAFETY: the test's child kills itself.
            unsafe { libc::raise(libc::SIGABRT) };
            Ok(1)
        })
        .unwrap_err();
        assert!(e.to_string().contains("signal 6 (SIGABRT)"), "{e}");
    }

    #[test]
    fn the_child_runs_in_another_process() {
        let me = std::process::id();
        let there: u32 = in_child(&[], || Ok(std::process::id())).unwrap();
        assert_ne!(me, there);
    }

    #[test]
    fn a_thread_under_its_filter_is_stopped_at_a_forbidden_call_which_is_named() {
        // In a child process: the filter is for good, and it ends the process.
        let e = in_child::<u32, _>(&[], || {
            seccomp::install(seccomp::Kind::Stdin).map_err(|e| ChainError::of(&e))?;
            // SAFETY: a harmless call the Stdin filter forbids.
            unsafe { libc::getppid() };
            Ok(0)
        })
        .unwrap_err();
        assert!(matches!(e, SandboxError::Forbidden), "{e}");
    }

    #[test]
    fn a_confined_process_opens_only_what_its_jail_holds() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("in");
        let outside = dir.path().join("out");
        std::fs::create_dir(&inside).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        let share = tempfile::tempdir().unwrap();
        let (i, o, s) = (inside.clone(), outside.clone(), share.path().to_owned());
        let seen: Vec<bool> = in_child(&[], move || {
            let share_fd = std::fs::File::open(&s).unwrap();
            let confined = jail::confine(&jail::Jail {
                read: Vec::new(),
                write: vec![i.clone()],
                shares: vec![std::os::fd::AsFd::as_fd(&share_fd)],
            })
            .map_err(|e| ChainError::of(&e))?;
            Ok(vec![
                confined == jail::Confined::Fully,
                std::fs::write(i.join("f"), "x").is_ok(),
                std::fs::write(s.join("f"), "x").is_ok(),
                std::fs::read(o.join("secret")).is_ok(),
                std::fs::write(o.join("new"), "x").is_ok(),
                std::fs::read("/etc/passwd").is_ok(),
                std::fs::read("/proc/self/status").is_ok(),
                !std::path::Path::new("/dev/kvm").exists()
                    || std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open("/dev/kvm")
                        .is_ok(),
            ])
        })
        .unwrap();
        assert_eq!(seen, [true, true, true, false, false, false, true, true]);
        assert!(!outside.join("new").exists());
    }
}
