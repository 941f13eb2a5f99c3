//! Starts the workload: a vfork-style child (sharing guest-init's memory
//! until it execs, so no page tables are copied: on an emulating host
//! that saved most of a second per run) sets up its session, stdio, credentials
//! and directory (and root, for a supervised child), then execs with a
//! PATH search over the workload's own env. A close-on-exec pipe carries
//! the child's failure (stage and errno) back.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

use guest_init::{ExitCode, GuestMsg, RunSpec, SpawnFailure};

use crate::ports::Ports;
use crate::sys;

pub use guest_init::search_path;

/// Where in the child a failure happened, sent as the first word on the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
enum Stage {
    Stdio = 1,
    Credentials = 2,
    Chdir = 3,
    Exec = 4,
    Chroot = 5,
}

impl Stage {
    fn from_i32(v: i32) -> Option<Stage> {
        [
            Stage::Stdio,
            Stage::Credentials,
            Stage::Chdir,
            Stage::Exec,
            Stage::Chroot,
        ]
        .into_iter()
        .find(|s| *s as i32 == v)
    }
}

/// The files to try for `prog`, in order: `prog` itself when it has a `/`,
/// else each PATH entry joined with it (an empty entry is the current directory).
pub fn candidates(prog: &str, path: &str) -> Vec<String> {
    if prog.is_empty() {
        return Vec::new();
    }
    if prog.contains('/') {
        return vec![prog.to_string()];
    }
    path.split(':')
        .map(|dir| match dir {
            "" => prog.to_string(),
            dir => format!("{}/{prog}", dir.trim_end_matches('/')),
        })
        .collect()
}

/// How an exec errno is reported to the host.
pub fn failure_kind(errno: i32) -> SpawnFailure {
    match errno {
        libc::ENOENT | libc::ENOTDIR => SpawnFailure::NotFound,
        _ => SpawnFailure::NotExecutable,
    }
}

/// Whether a PATH search goes on to the next entry after this exec errno
/// (as glibc's execvp: a missing or unreadable entry is skipped).
fn search_continues(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOENT | libc::ENOTDIR | libc::EACCES | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT
    )
}

/// One program to start and how.
#[derive(Debug, Clone, Copy)]
pub struct Program<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub cwd: &'a str,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, besides `gid`.
    pub groups: &'a [u32],
    /// Chroot into this directory first: a supervised child's own root.
    pub root: Option<&'a str>,
}

impl<'a> Program<'a> {
    pub fn of(spec: &'a RunSpec) -> Program<'a> {
        Program {
            argv: &spec.argv,
            env: &spec.env,
            cwd: &spec.cwd,
            uid: spec.uid,
            gid: spec.gid,
            groups: &spec.groups,
            root: None,
        }
    }
}

/// The program's stdin, stdout and stderr.
#[derive(Debug, Clone, Copy)]
pub enum Stdio<'a> {
    /// These fds, in order.
    Fds([RawFd; 3]),
    /// The pty slave at this path, which becomes the controlling terminal
    /// of the program's new session.
    Tty(&'a str),
}

impl Stdio<'_> {
    /// The workload's stdio ports.
    pub fn ports(ports: &Ports) -> Stdio<'static> {
        Stdio::Fds([ports.stdin, ports.stdout, ports.stderr])
    }
}

/// The final message for a child that failed at `stage` with `errno`.
fn failure_message(stage: Stage, errno: i32, spec: &Program<'_>, prog: &str) -> GuestMsg {
    let text = sys::strerror(errno);
    match stage {
        Stage::Exec => GuestMsg::SpawnFailed {
            kind: failure_kind(errno),
            message: format!("{prog}: {text}"),
        },
        Stage::Chdir => GuestMsg::Error {
            message: format!("chdir {}: {text}", spec.cwd),
        },
        Stage::Credentials => GuestMsg::Error {
            message: format!("setting uid {} gid {}: {text}", spec.uid, spec.gid),
        },
        Stage::Chroot => GuestMsg::Error {
            message: format!("chroot {}: {text}", spec.root.unwrap_or("/")),
        },
        Stage::Stdio => GuestMsg::Error {
            message: format!("setting up the workload's stdio: {text}"),
        },
    }
}

/// The child's stack: it only makes a few libc calls before exec.
const CHILD_STACK: usize = 256 * 1024;

/// Everything the child needs, allocated before the clone (the child must not allocate).
struct Prepared {
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    env_ptrs: Vec<*const libc::c_char>,
    files: Vec<CString>,
    cwd: CString,
    root: Option<CString>,
    tty: Option<CString>,
    uid: libc::uid_t,
    gid: libc::gid_t,
    /// `gid` and then the supplementary groups: setgroups' list, made
    /// before the fork (the child allocates nothing).
    groups: Vec<libc::gid_t>,
    /// PTRACE_TRACEME before the exec ([`spawn_stopped`]).
    trace: bool,
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain([std::ptr::null()])
        .collect()
}

impl Prepared {
    fn new(spec: &Program<'_>, stdio: Stdio<'_>) -> io::Result<Prepared> {
        let prog = spec.argv.first().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the run spec has an empty argv",
            )
        })?;
        let argv = spec
            .argv
            .iter()
            .map(|a| sys::cstring(a))
            .collect::<io::Result<Vec<_>>>()?;
        let env = spec
            .env
            .iter()
            .map(|(k, v)| {
                if k.is_empty() || k.contains('=') {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("invalid environment variable name {k:?}"),
                    ));
                }
                sys::cstring(&format!("{k}={v}"))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let files = candidates(prog, search_path(spec.env))
            .iter()
            .map(|f| sys::cstring(f))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Prepared {
            argv_ptrs: null_terminated(&argv),
            _argv: argv,
            env_ptrs: null_terminated(&env),
            _env: env,
            files,
            cwd: sys::cstring(spec.cwd)?,
            root: spec.root.map(sys::cstring).transpose()?,
            tty: match stdio {
                Stdio::Tty(path) => Some(sys::cstring(path)?),
                Stdio::Fds(_) => None,
            },
            uid: spec.uid,
            gid: spec.gid,
            groups: [spec.gid].iter().chain(spec.groups).copied().collect(),
            trace: false,
        })
    }
}

/// Starts a program. On success the pid; on failure the final message
/// for the host (the failed child is already reaped).
pub fn spawn(spec: &Program<'_>, stdio: Stdio<'_>) -> Result<libc::pid_t, GuestMsg> {
    spawn_with(spec, stdio, false)
}

/// Starts a program traced by this process and stopped before its first
/// instruction (the SIGTRAP after its exec): [`crate::forked`] lets it go.
/// On success the pid; on failure the final message for the host.
pub fn spawn_stopped(spec: &Program<'_>, stdio: Stdio<'_>) -> Result<libc::pid_t, GuestMsg> {
    let pid = spawn_with(spec, stdio, true)?;
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child; status is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r == pid && libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == libc::SIGTRAP {
            return Ok(pid);
        }
        let interrupted = r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
        if !interrupted {
            kill(pid);
            return Err(GuestMsg::Error {
                message: format!("the workload did not stop after its exec (status {status:#x})"),
            });
        }
    }
}

fn spawn_with(spec: &Program<'_>, stdio: Stdio<'_>, trace: bool) -> Result<libc::pid_t, GuestMsg> {
    let error = |what: &str, e: io::Error| GuestMsg::Error {
        message: sys::describe(what, &e),
    };
    let mut prepared = Prepared::new(spec, stdio).map_err(|e| GuestMsg::Error {
        message: e.to_string(),
    })?;
    prepared.trace = trace;
    let prog = spec.argv.first().map_or("", String::as_str);

    let mut pipe = [0; 2];
    // SAFETY: pipe writes two fds into the array we pass.
    sys::check(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) })
        .map_err(|e| error("pipe", e))?;
    let [read_end, write_end] = pipe;

    let fds = match stdio {
        Stdio::Fds(fds) => fds,
        Stdio::Tty(_) => [-1; 3],
    };
    let args = ChildArgs {
        prepared: &prepared,
        fds,
        report: write_end,
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: the stack grows down from its 16-byte aligned top, inside
    // `stack`, which outlives the child's use of it: with CLONE_VFORK this
    // thread is suspended until the child has exec'd or exited. `args`
    // lives as long. The child only makes async-signal-safe calls.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(CHILD_STACK) as usize & !15;
        libc::clone(
            child_entry,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
        )
    };
    drop(stack);
    sys::close(write_end);
    if pid < 0 {
        sys::close(read_end);
        return Err(error("clone", io::Error::last_os_error()));
    }

    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        match sys::read(read_end, &mut report[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    sys::close(read_end);
    if got == 0 {
        return Ok(pid); // exec succeeded: the pipe closed with no report
    }
    reap(pid);
    let word =
        |i: usize| i32::from_ne_bytes([report[i], report[i + 1], report[i + 2], report[i + 3]]);
    match (got, Stage::from_i32(word(0))) {
        (8, Some(stage)) => Err(failure_message(stage, word(4), spec, prog)),
        _ => Err(GuestMsg::Error {
            message: "the workload's child process failed to report".into(),
        }),
    }
}

/// Kills and reaps our own child `pid` (stopped or not).
pub fn kill(pid: libc::pid_t) {
    // SAFETY: kill on our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid);
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child; status is a valid out-pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
}

struct ChildArgs<'a> {
    prepared: &'a Prepared,
    /// stdin, stdout, stderr; unused with a tty.
    fds: [RawFd; 3],
    report: RawFd,
}

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildArgs that spawn() passed to clone and keeps
    // alive while the child runs; the child is what child() expects.
    unsafe {
        let args = &*(arg as *const ChildArgs);
        child(args.prepared, args.fds, args.report)
    }
}

/// The cloned child: never returns.
///
/// # Safety
/// Must only be called in the child of a CLONE_VM|CLONE_VFORK clone; it
/// shares the parent's memory, so it makes only async-signal-safe calls,
/// does not allocate, and changes no memory but its own stack (and errno).
unsafe fn child(p: &Prepared, fds: [RawFd; 3], report: RawFd) -> ! {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    let fail = |stage: Stage, errno: i32| -> ! {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&(stage as i32).to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: msg is valid for 8 bytes; _exit skips the parent's atexit
        // handlers and destructors, as a forked child must. The status is a
        // shell's for a failed exec; the parent goes by the report.
        unsafe {
            libc::write(report, msg.as_ptr().cast(), msg.len());
            libc::_exit(ExitCode::NotFound.code())
        }
    };

    // SAFETY: plain syscalls on values we own; sigset is initialised by sigemptyset.
    unsafe {
        // guest-init blocks SIGCHLD; Rust's runtime, where it ran (tests), ignores SIGPIPE.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);

        if libc::setsid() < 0 {
            fail(Stage::Stdio, errno());
        }
        // Stopped by the kernel after its exec, until guest-init detaches.
        if p.trace && libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) < 0 {
            fail(Stage::Stdio, errno());
        }
        // A session leader with no controlling terminal gets the first
        // tty it opens without O_NOCTTY.
        let fds = match &p.tty {
            Some(path) => {
                let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
                if fd < 0 {
                    fail(Stage::Stdio, errno());
                }
                [fd; 3]
            }
            None => fds,
        };
        // The fds are above 2 and close-on-exec; dup2 clears that flag on the copies.
        for (fd, target) in fds.into_iter().zip(0..) {
            if libc::dup2(fd, target) < 0 {
                fail(Stage::Stdio, errno());
            }
        }
        if let Some(root) = &p.root {
            if libc::chroot(root.as_ptr()) < 0 {
                fail(Stage::Chroot, errno());
            }
        }
        // Raw syscalls: glibc's wrappers would try to broadcast the change
        // to the threads of the process whose memory this child shares.
        let switch_user = p.uid != 0 || p.gid != 0 || p.groups.len() > 1;
        if switch_user
            && (libc::syscall(libc::SYS_setgroups, p.groups.len(), p.groups.as_ptr()) < 0
                || libc::syscall(libc::SYS_setgid, p.gid) < 0
                || libc::syscall(libc::SYS_setuid, p.uid) < 0)
        {
            fail(Stage::Credentials, errno());
        }
        if libc::chdir(p.cwd.as_ptr()) < 0 {
            fail(Stage::Chdir, errno());
        }

        let mut result = libc::ENOENT;
        let mut saw_eacces = false;
        for file in &p.files {
            libc::execve(file.as_ptr(), p.argv_ptrs.as_ptr(), p.env_ptrs.as_ptr());
            result = errno();
            if !search_continues(result) {
                break;
            }
            saw_eacces |= result == libc::EACCES;
        }
        if saw_eacces && search_continues(result) {
            result = libc::EACCES;
        }
        fail(Stage::Exec, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_init::DEFAULT_PATH;

    fn spec(argv: &[&str]) -> RunSpec {
        RunSpec {
            cwd: "/work".into(),
            uid: 1000,
            gid: 100,
            hostname: "h".into(),
            ..RunSpec::new(argv.iter().map(|s| s.to_string()).collect(), vec![])
        }
    }

    #[test]
    fn path_search_candidates() {
        assert_eq!(
            candidates("sh", "/bin:/usr/bin/"),
            vec!["/bin/sh", "/usr/bin/sh"]
        );
        assert_eq!(candidates("./x", "/bin"), vec!["./x"]);
        assert_eq!(candidates("/bin/sh", "/nope"), vec!["/bin/sh"]);
        assert_eq!(candidates("t", "/a::/b"), vec!["/a/t", "t", "/b/t"]);
        assert!(candidates("", "/bin").is_empty());
    }

    #[test]
    fn path_comes_from_the_workload_env() {
        let env = vec![
            ("HOME".to_string(), "/".to_string()),
            ("PATH".to_string(), "/opt".to_string()),
        ];
        assert_eq!(search_path(&env), "/opt");
        assert_eq!(search_path(&[]), DEFAULT_PATH);
    }

    #[test]
    fn errno_maps_to_failure() {
        assert_eq!(failure_kind(libc::ENOENT), SpawnFailure::NotFound);
        assert_eq!(failure_kind(libc::ENOTDIR), SpawnFailure::NotFound);
        for e in [libc::EACCES, libc::ENOEXEC, libc::EISDIR, libc::ETXTBSY] {
            assert_eq!(failure_kind(e), SpawnFailure::NotExecutable);
        }
    }

    #[test]
    fn failure_messages() {
        let s = spec(&["nope", "x"]);
        let s = Program::of(&s);
        assert_eq!(
            failure_message(Stage::Exec, libc::ENOENT, &s, "nope"),
            GuestMsg::SpawnFailed {
                kind: SpawnFailure::NotFound,
                message: "nope: No such file or directory".into()
            }
        );
        assert_eq!(
            failure_message(Stage::Chdir, libc::ENOENT, &s, "nope"),
            GuestMsg::Error {
                message: "chdir /work: No such file or directory".into()
            }
        );
        assert!(Stage::from_i32(Stage::Exec as i32) == Some(Stage::Exec));
        assert!(Stage::from_i32(0).is_none());
    }

    #[test]
    fn bad_specs_are_rejected_before_fork() {
        let fds = Stdio::Fds([0, 1, 2]);
        let prepare = |s: &RunSpec| Prepared::new(&Program::of(s), fds);
        assert!(prepare(&spec(&[])).is_err());
        assert!(prepare(&spec(&["a\0b"])).is_err());
        let mut s = spec(&["sh"]);
        s.env = vec![("A=B".into(), "c".into())];
        assert!(prepare(&s).is_err());
        s.env = vec![("A".into(), "b=c".into())];
        let p = prepare(&s).expect("valid spec");
        assert_eq!(p.argv_ptrs.len(), 2);
        assert_eq!(p.env_ptrs.len(), 2);
        assert_eq!(p.files.len(), DEFAULT_PATH.split(':').count());
    }
}

/// Forks real children on the host: the workload side of spawn without a VM.
#[cfg(test)]
mod host_tests {
    use super::*;
    use crate::supervise::outcome;

    fn pipe() -> (RawFd, RawFd) {
        let mut p = [0; 2];
        // SAFETY: pipe2 writes two fds into p.
        sys::check(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }).expect("pipe");
        (p[0], p[1])
    }

    fn read_to_end(fd: RawFd) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = sys::read(fd, &mut buf) {
            out.extend_from_slice(&buf[..n]);
        }
        sys::close(fd);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Runs `argv` with `cwd`; its status (or the failure message), stdout and stderr.
    fn run(argv: &[&str], cwd: &str) -> (GuestMsg, String, String) {
        let env = vec![
            ("PATH".into(), "/nonexistent:/usr/bin:/bin".into()),
            ("X".into(), "y z".into()),
        ];
        let spec = RunSpec {
            cwd: cwd.into(),
            hostname: "h".into(),
            ..RunSpec::new(argv.iter().map(|s| s.to_string()).collect(), env)
        };
        let (stdin_r, stdin_w) = pipe();
        let (out_r, out_w) = pipe();
        let (err_r, err_w) = pipe();
        let ports = Ports {
            control: -1,
            stdin: stdin_r,
            stdout: out_w,
            stderr: err_w,
            export: -1,
        };
        let result = spawn(&Program::of(&spec), Stdio::ports(&ports));
        for fd in [stdin_r, stdin_w, out_w, err_w] {
            sys::close(fd);
        }
        let (out, err) = (read_to_end(out_r), read_to_end(err_r));
        let msg = match result {
            Ok(pid) => {
                let mut status = 0;
                // SAFETY: waiting for our own child; status is a valid out-pointer.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                outcome(status)
            }
            Err(msg) => msg,
        };
        (msg, out, err)
    }

    #[test]
    fn runs_with_separate_streams_env_and_cwd() {
        let (msg, out, err) = run(
            &[
                "sh",
                "-c",
                "echo \"$X $(pwd)\"; echo oops >&2; read l; exit 3",
            ],
            "/tmp",
        );
        assert_eq!(msg, GuestMsg::Exited { code: 3 });
        assert_eq!(out, "y z /tmp\n");
        assert_eq!(err, "oops\n");
    }

    #[test]
    fn signals_and_missing_programs() {
        assert_eq!(
            run(&["sh", "-c", "kill -9 $$"], "/").0,
            GuestMsg::Killed { signal: 9 }
        );
        assert_eq!(
            run(&["no-such-program"], "/").0,
            GuestMsg::SpawnFailed {
                kind: SpawnFailure::NotFound,
                message: "no-such-program: No such file or directory".into()
            }
        );
        assert!(matches!(
            run(&["/etc"], "/").0,
            GuestMsg::SpawnFailed {
                kind: SpawnFailure::NotExecutable,
                ..
            }
        ));
        assert_eq!(
            run(&["sh"], "/no/such/dir").0,
            GuestMsg::Error {
                message: "chdir /no/such/dir: No such file or directory".into()
            }
        );
    }
}
