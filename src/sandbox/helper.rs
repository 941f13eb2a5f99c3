//! The wall around the host programs a build starts: apt-get, which
//! reads the package lists and .debs of a source the image names (with a
//! key the image brings), mmdebstrap, which makes a `!Debian` root, and
//! git, which fetches a pack from a server the project names (`!Git`).
//! Their parsers are not ours, so they get what the VM's process gets,
//! as far as each can work with it, set up between fork and exec:
//!
//! - under root, mount, IPC, UTS and cgroup namespaces of their own (not
//!   the network: they download);
//! - apt-get and git: no capability in any set, root locked out of
//!   getting them back through exec (securebits), no-new-privs;
//! - mmdebstrap under root: only the ten capabilities its unshare mode
//!   uses to make a root owned by root (chown, set-id bits, device nodes,
//!   chroot, its own mount namespace), found by removing each and
//!   comparing the tarball's bytes; no `CAP_SYS_PTRACE`, `CAP_KILL`,
//!   `CAP_DAC_READ_SEARCH`, `CAP_NET_ADMIN`, `CAP_SYS_MODULE`, ...;
//! - Landlock: the system's programs and libraries, /etc without its
//!   secrets, /proc and /sys to read; /dev/null and its kin to read and
//!   write; the directories the call names (its scratch root, the shared
//!   .deb cache) to read and write beneath; nothing else, so not the
//!   project, the home directories or /tmp. Landlock also forbids mounts,
//!   which is why mmdebstrap runs with `--skip=chroot/mount` (the same
//!   bytes, checked: its maintainer scripts need none of them).
//!
//! The hook between fork and exec makes system calls only (no allocation,
//! no lock): the Landlock ruleset is built before the fork and its fd
//! handed to the hook.
//!
//! What is not possible: without root, mmdebstrap maps its user namespace
//! with the set-uid `newuidmap`, which no-new-privs would disarm, and
//! Landlock needs no-new-privs from a process without `CAP_SYS_ADMIN`;
//! so a non-root mmdebstrap gets no Landlock (apt-get still does).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use caps::{CapSet, Capability};
use landlock::{
    Access, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    Scope,
};

use super::caps::LOCKED_NOROOT;
use super::jail::{Confined, JailError, WANTED};

/// Read beneath: programs, libraries, data, the kernel's views.
const SYSTEM: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/sys",
    "/var/lib/dpkg",
];

/// What /etc holds that no build helper reads: passwords and keys.
const SECRETS: &[&str] = &[
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "ssh",
    "sudoers",
    "sudoers.d",
    "security",
    "ssl",
    "krb5.keytab",
    "credstore",
    "credstore.encrypted",
];

/// Within /etc/ssl, the certificates apt's TLS checks servers against.
const SSL_PUBLIC: &[&str] = &["/etc/ssl/certs", "/etc/ssl/openssl.cnf"];

/// Devices a helper may read and write.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// Which host program, for what it may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// apt-get: needs nothing of root's.
    AptGet,
    /// mmdebstrap in its unshare mode.
    Mmdebstrap,
    /// git, fetching and archiving `!Git`'s commit: needs nothing of root's.
    Git,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::AptGet => "apt-get",
            Program::Mmdebstrap => "mmdebstrap",
            Program::Git => "git",
        }
    }
}

/// The capabilities mmdebstrap keeps under root.
const MMDEBSTRAP_CAPS: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_MKNOD,
    Capability::CAP_SETFCAP,
];

/// Sets `cmd` up to run `program` behind the wall, with `write` the
/// directories (made already) it may change beneath. Says how far
/// Landlock holds it.
pub fn confine(
    cmd: &mut Command,
    program: Program,
    write: &[&Path],
) -> Result<Confined, JailError> {
    let root = has(Capability::CAP_SYS_ADMIN);
    let setpcap = has(Capability::CAP_SETPCAP);
    let keep: u64 = match program {
        Program::AptGet | Program::Git => 0,
        Program::Mmdebstrap => MMDEBSTRAP_CAPS
            .iter()
            .fold(0, |mask, c| mask | 1 << c.index()),
    };
    // Without root, no-new-privs would disarm mmdebstrap's newuidmap, and
    // Landlock needs one or the other.
    let nnp = root || program != Program::Mmdebstrap;
    let ruleset = if nnp { ruleset(write)? } else { None };
    let confined = match (&ruleset, abi_version()) {
        (None, _) => Confined::Not,
        (Some(_), v) if v >= WANTED as i64 => Confined::Fully,
        (Some(_), _) => Confined::Partly,
    };
    say(program, confined);
    let hook = Hook {
        root,
        setpcap,
        keep,
        nnp,
        ruleset,
    };
    // SAFETY: the hook makes system calls only; it allocates nothing and
    // takes no lock, as a hook between fork and exec must.
    unsafe { cmd.pre_exec(move || hook.run()) };
    Ok(confined)
}

/// Bounds what `cmd`'s program may take: each file it writes to
/// `max_file` bytes (RLIMIT_FSIZE: past it, the write fails and SIGXFSZ
/// stops the program), its heap and private mappings to `max_data`
/// (RLIMIT_DATA: an allocation past it fails). It runs in a process group
/// of its own, so that [`kill_group`] stops what it started too.
pub fn limit_resources(cmd: &mut Command, max_file: u64, max_data: u64) {
    let limit = |n: u64| libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    let (file, data) = (limit(max_file), limit(max_data));
    cmd.process_group(0);
    // SAFETY: setrlimit reads the structs on the stack of the closure,
    // which outlive the calls; system calls only, as a hook between fork
    // and exec must make.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_FSIZE, &file) < 0
                || libc::setrlimit(libc::RLIMIT_DATA, &data) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// Kills the process group `pid` leads (see [`limit_resources`]).
pub fn kill_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid > 0 {
        // SAFETY: killpg takes integers; `pid` is a child's that has not
        // been reaped, so its group is still ours to signal.
        unsafe { libc::killpg(pid, libc::SIGKILL) };
    }
}

/// Set under `-v`: cella then says once when a helper runs less walled
/// in than it could be.
static VERBOSE: AtomicBool = AtomicBool::new(false);

pub fn set_verbose(verbose: bool) {
    VERBOSE.store(verbose, Ordering::SeqCst);
}

fn say(program: Program, confined: Confined) {
    static SAID: AtomicBool = AtomicBool::new(false);
    let how = match confined {
        Confined::Fully => return,
        Confined::Partly => "only in part (the kernel is older than Landlock ABI 6)",
        Confined::Not if program == Program::Mmdebstrap && !has(Capability::CAP_SYS_ADMIN) => {
            "not at all (without root, mmdebstrap needs the set-uid newuidmap)"
        }
        Confined::Not => "not at all (this kernel has no Landlock, or it is off)",
    };
    if VERBOSE.load(Ordering::SeqCst) && !SAID.swap(true, Ordering::SeqCst) {
        eprintln!("cella: Landlock confines the host's {} {how}: it can open more host files than it needs", program.name());
    }
}

fn has(cap: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
}

/// The newest Landlock ABI this kernel has, 0 without.
fn abi_version() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute and size 0, the call reads no memory
    // and returns the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0)
}

/// The helper's Landlock rules, as a ruleset fd to restrict itself with;
/// None where the kernel has no Landlock.
fn ruleset(write: &[&Path]) -> Result<Option<OwnedFd>, JailError> {
    let all = AccessFs::from_all(WANTED);
    let read = AccessFs::from_read(WANTED);
    let device: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::WriteFile;
    let mut rules: Vec<(PathBuf, BitFlags<AccessFs>)> = Vec::new();
    let existing = |path: &Path| path.symlink_metadata().is_ok();
    for dir in SYSTEM.iter().chain(SSL_PUBLIC).map(Path::new) {
        if existing(dir) {
            rules.push((dir.to_owned(), read));
        }
    }
    // /etc is the host's own (trusted), listed to leave its secrets out.
    if let Ok(entries) = std::fs::read_dir("/etc") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !SECRETS.iter().any(|s| name == *s) {
                rules.push((entry.path(), read));
            }
        }
    }
    for dev in DEVICES.iter().map(Path::new) {
        if existing(dev) {
            rules.push((dev.to_owned(), device));
        }
    }
    for dir in write {
        rules.push((dir.to_path_buf(), all));
    }
    let mut created = Ruleset::default()
        .handle_access(all)
        .and_then(|r| r.scope(Scope::Signal))
        .and_then(|r| r.create())
        .map_err(JailError::Ruleset)?;
    for (path, access) in rules {
        let fd = match PathFd::new(&path) {
            Ok(fd) => fd,
            // A dangling link in /etc, a file gone since the listing.
            Err(_) if !write.contains(&path.as_path()) => continue,
            Err(e) => return Err(JailError::Open(path, e)),
        };
        // A file takes only a file's rights; asked of the fd just opened,
        // not of the path again.
        let dir = rustix::fs::fstat(&fd)
            .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir());
        let access = if dir {
            access
        } else {
            access & AccessFs::from_file(WANTED)
        };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(JailError::Ruleset)?;
    }
    Ok(created.into())
}

/// What the child does between fork and exec.
struct Hook {
    root: bool,
    setpcap: bool,
    /// Capabilities kept through exec, by bit.
    keep: u64,
    nnp: bool,
    ruleset: Option<OwnedFd>,
}

impl Hook {
    fn run(&self) -> io::Result<()> {
        let check = |r: libc::c_long| {
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: unshare, prctl and syscall below take integers, or
        // pointers to the stack structs beside them, which outlive them.
        unsafe {
            if self.root {
                let flags = libc::CLONE_NEWNS
                    | libc::CLONE_NEWIPC
                    | libc::CLONE_NEWUTS
                    | libc::CLONE_NEWCGROUP;
                check(libc::unshare(flags).into())?;
            }
            if self.setpcap {
                if self.keep == 0 {
                    check(libc::prctl(libc::PR_SET_SECUREBITS, LOCKED_NOROOT).into())?;
                }
                for cap in 0..64 {
                    if self.keep & (1 << cap) == 0 {
                        // EINVAL past the kernel's last capability.
                        libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong);
                    }
                }
            }
            check(
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                    0,
                    0,
                    0,
                )
                .into(),
            )?;
            // The inheritable set outlives the bounding set through a
            // root exec: clear it, and keep effective and permitted as
            // the bounding set limits them.
            let mut header = CapHeader {
                version: LINUX_CAPABILITY_VERSION_3,
                pid: 0,
            };
            let mut data = [CapData::default(); 2];
            check(libc::syscall(
                libc::SYS_capget,
                &mut header as *mut CapHeader,
                data.as_mut_ptr(),
            ))?;
            for (i, d) in data.iter_mut().enumerate() {
                let kept = (self.keep >> (32 * i)) as u32;
                d.inheritable = 0;
                d.permitted &= kept;
                d.effective &= kept;
            }
            check(libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            ))?;
            if self.nnp {
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into())?;
            }
            if let Some(fd) = &self.ruleset {
                check(libc::syscall(
                    libc::SYS_landlock_restrict_self,
                    fd.as_raw_fd(),
                    0,
                ))?;
            }
        }
        Ok(())
    }
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(status: &'a str, name: &str) -> &'a str {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap()
            .trim()
    }

    /// A helper writes only beneath what it is given, reads no file of
    /// the user's outside it, and keeps no capability: apt-get and git.
    #[test]
    fn apt_get_and_git_are_walled_in() {
        walled_in(Program::AptGet);
        walled_in(Program::Git);
    }

    /// A file past the bound stops the program with SIGXFSZ.
    #[test]
    fn file_size_is_bounded() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "head -c 5000 /dev/zero > big"])
            .current_dir(dir.path());
        limit_resources(&mut cmd, 4096, 1 << 30);
        let status = cmd.status().unwrap();
        assert!(!status.success());
        let len = std::fs::metadata(dir.path().join("big")).unwrap().len();
        assert_eq!(len, 4096, "{status:?}");
        // head is stopped by the signal; sh reports it as 128 + SIGXFSZ.
        assert!(
            status.signal() == Some(libc::SIGXFSZ) || status.code() == Some(128 + libc::SIGXFSZ),
            "{status:?}"
        );
    }

    fn walled_in(program: Program) {
        let inside = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let script = format!(
            "cat /proc/self/status > {i}/status
             echo in > {i}/new && echo wrote-inside
             cat {o}/secret && echo read-outside
             echo out > {o}/new && echo wrote-outside
             ls /etc/passwd >/dev/null && echo etc-readable
             cat /etc/shadow >/dev/null 2>&1 && echo shadow-readable
             true",
            i = inside.path().display(),
            o = outside.path().display(),
        );
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", &script]);
        let confined = confine(&mut cmd, program, &[inside.path()]).unwrap();
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        let status = std::fs::read_to_string(inside.path().join("status")).unwrap();
        assert_eq!(field(&status, "CapEff"), "0000000000000000");
        assert_eq!(field(&status, "CapPrm"), "0000000000000000");
        if has(Capability::CAP_SETPCAP) {
            assert_eq!(field(&status, "CapBnd"), "0000000000000000");
        }
        assert_eq!(field(&status, "NoNewPrivs"), "1");
        assert!(stdout.contains("wrote-inside"), "{stdout}");
        assert!(stdout.contains("etc-readable"), "{stdout}");
        if confined != Confined::Not {
            assert!(!stdout.contains("shadow-readable"), "{stdout}");
            assert!(!stdout.contains("read-outside"), "{stdout}");
            assert!(!stdout.contains("wrote-outside"), "{stdout}");
            assert!(!outside.path().join("new").exists());
        }
    }

    /// Under root, mmdebstrap keeps its ten capabilities and no other.
    #[test]
    fn mmdebstrap_keeps_only_what_it_uses() {
        if !has(Capability::CAP_SETPCAP) {
            return;
        }
        let inside = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            &format!("cat /proc/self/status > {}/status", inside.path().display()),
        ]);
        confine(&mut cmd, Program::Mmdebstrap, &[inside.path()]).unwrap();
        assert!(cmd.status().unwrap().success());
        let status = std::fs::read_to_string(inside.path().join("status")).unwrap();
        let want = MMDEBSTRAP_CAPS
            .iter()
            .fold(0u64, |mask, c| mask | 1 << c.index());
        for name in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(
                u64::from_str_radix(field(&status, name), 16).unwrap(),
                want,
                "{name}"
            );
        }
        assert_eq!(field(&status, "CapInh"), "0000000000000000");
        assert_eq!(field(&status, "NoNewPrivs"), "1");
    }
}
