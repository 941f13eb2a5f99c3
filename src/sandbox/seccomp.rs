//! Seccomp filters for the threads of a VM's process, one per kind of
//! thread, each an allowlist (SECURITY.md lists every call and why it is
//! there). Each thread installs its own before it handles anything the
//! guest sent: a vCPU before its first KVM_RUN, the VMM thread before its
//! event loop, the stdin and signal threads before their first read.
//!
//! A call outside the filter traps: a SIGSYS handler names the call and
//! the thread on stderr and ends the process with [`FORBIDDEN_EXIT`],
//! which cella reports as such.
//!
//! Built with rust-vmm's seccompiler; the names of calls come from the
//! `syscalls` crate, whose lookup is a plain match (safe in a handler).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use syscalls::Sysno;

/// The exit status of a VM's process stopped by its filter.
pub const FORBIDDEN_EXIT: i32 = 128 + libc::SIGSYS;

/// What a filter does with a call outside it: [`Mode`] as a number.
static MODE: AtomicU8 = AtomicU8::new(Mode::Trap as u8);

/// What filters do (`CELLA_SECCOMP`, the user's environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Stop the VM's process at a call outside the filter (the default).
    Trap = 0,
    /// `log`: allow it and have the kernel log it, for finding what a
    /// filter lacks.
    Log = 1,
    /// `off`: install no filter (bench/ measures what they cost).
    Off = 2,
}

impl Mode {
    /// `CELLA_SECCOMP`'s value; None for a value it does not know.
    pub fn parse(value: Option<&str>) -> Option<Mode> {
        match value {
            None | Some("") | Some("on") => Some(Mode::Trap),
            Some("log") => Some(Mode::Log),
            Some("off") => Some(Mode::Off),
            Some(_) => None,
        }
    }
}

/// The kinds of threads a VM's process has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The VM process's main thread: the event loop, every virtio device's
    /// queues, the virtio-fs server, snapshots.
    Vmm,
    /// A vCPU: KVM_RUN, and the port and MMIO accesses it exits for.
    Vcpu,
    /// Reads cella's stdin for the guest.
    Stdin,
    /// Waits for the signals cella forwards.
    Signals,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the {0:?} thread's seccomp filter: {1}")]
    Build(Kind, String),
    #[error("cannot install the {0:?} thread's seccomp filter: {1}")]
    Install(Kind, String),
    #[error("cannot install the SIGSYS handler")]
    Handler(#[source] std::io::Error),
}

/// Sets what later filters do.
pub fn set_mode(mode: Mode) {
    MODE.store(mode as u8, Ordering::SeqCst);
}

/// Calls every thread makes: memory, locks, signals (a handler may run
/// in any thread: signal-hook's writes a byte to its socket), time, its
/// own end, and a message on stderr.
const COMMON: &[Sysno] = &[
    Sysno::brk,
    Sysno::mmap,
    Sysno::munmap,
    Sysno::mremap,
    Sysno::madvise,
    Sysno::mprotect,
    Sysno::futex,
    Sysno::sched_yield,
    Sysno::rt_sigreturn,
    Sysno::rt_sigprocmask,
    Sysno::sigaltstack,
    Sysno::restart_syscall,
    Sysno::clock_gettime,
    Sysno::clock_nanosleep,
    Sysno::nanosleep,
    Sysno::getrandom,
    Sysno::getpid,
    Sysno::gettid,
    Sysno::write,
    Sysno::sendto,
    Sysno::close,
    Sysno::exit,
    Sysno::exit_group,
];

/// The VMM thread's calls on files: the virtio-fs server's requests
/// (each reached beneath a share's fd), disks, snapshots in the cache.
const VMM_FILES: &[Sysno] = &[
    Sysno::read,
    Sysno::readv,
    Sysno::writev,
    Sysno::pread64,
    Sysno::pwrite64,
    Sysno::preadv,
    Sysno::pwritev,
    Sysno::lseek,
    Sysno::open,
    Sysno::openat,
    Sysno::openat2,
    Sysno::fstat,
    Sysno::newfstatat,
    Sysno::statx,
    Sysno::fstatfs,
    Sysno::statfs,
    Sysno::fsync,
    Sysno::fdatasync,
    Sysno::ftruncate,
    Sysno::fallocate,
    Sysno::getdents64,
    Sysno::mkdirat,
    Sysno::mknodat,
    Sysno::symlinkat,
    Sysno::unlinkat,
    Sysno::rename,
    Sysno::renameat,
    Sysno::renameat2,
    Sysno::linkat,
    Sysno::readlinkat,
    Sysno::fchmod,
    Sysno::fchmodat,
    Sysno::fchown,
    Sysno::fchownat,
    Sysno::utimensat,
    Sysno::getxattr,
    Sysno::lgetxattr,
    Sysno::fgetxattr,
    Sysno::listxattr,
    Sysno::llistxattr,
    Sysno::flistxattr,
    Sysno::setxattr,
    Sysno::lsetxattr,
    Sysno::fsetxattr,
    Sysno::removexattr,
    Sysno::lremovexattr,
    Sysno::fremovexattr,
    Sysno::fcntl,
    Sysno::flock,
    Sysno::dup,
    Sysno::dup3,
];

/// The VMM thread's other calls: its event loop, passt's socket, its
/// ids, signal dispositions (signal-hook acts as the default outside a
/// run), the shares' write quota.
const VMM_OTHER: &[Sysno] = &[
    Sysno::epoll_wait,
    Sysno::epoll_pwait,
    Sysno::epoll_ctl,
    Sysno::poll,
    Sysno::ppoll,
    Sysno::timerfd_settime,
    Sysno::timerfd_gettime,
    Sysno::recvfrom,
    Sysno::sendmsg,
    Sysno::recvmsg,
    Sysno::shutdown,
    Sysno::geteuid,
    Sysno::getegid,
    Sysno::getuid,
    Sysno::getgid,
    Sysno::rt_sigaction,
];

// The ioctls a running VM makes (kvm-ioctls' definitions).
vmm_sys_util::ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_bindings::kvm_regs);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_bindings::kvm_sregs);
vmm_sys_util::ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, kvm_bindings::kvm_msrs);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_FPU, KVMIO, 0x8c, kvm_bindings::kvm_fpu);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_bindings::kvm_lapic_state);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_bindings::kvm_mp_state);
vmm_sys_util::ioctl_ior_nr!(
    KVM_GET_VCPU_EVENTS,
    KVMIO,
    0x9f,
    kvm_bindings::kvm_vcpu_events
);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_DEBUGREGS, KVMIO, 0xa1, kvm_bindings::kvm_debugregs);
vmm_sys_util::ioctl_io_nr!(KVM_GET_TSC_KHZ, KVMIO, 0xa3);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_XSAVE, KVMIO, 0xa4, kvm_bindings::kvm_xsave);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_XCRS, KVMIO, 0xa6, kvm_bindings::kvm_xcrs);
vmm_sys_util::ioctl_iowr_nr!(
    KVM_GET_MSR_INDEX_LIST,
    KVMIO,
    0x02,
    kvm_bindings::kvm_msr_list
);
vmm_sys_util::ioctl_iowr_nr!(KVM_GET_IRQCHIP, KVMIO, 0x62, kvm_bindings::kvm_irqchip);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_CLOCK, KVMIO, 0x7c, kvm_bindings::kvm_clock_data);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_PIT2, KVMIO, 0x9f, kvm_bindings::kvm_pit_state2);
const KVMIO: u32 = 0xAE;

/// The ioctls of `kind`: a vCPU runs and, paused, reads its state; the
/// VMM thread reads the VM's state for a snapshot and sets its terminal.
fn ioctls(kind: Kind) -> Vec<u64> {
    match kind {
        Kind::Vcpu => vec![
            KVM_RUN(),
            KVM_GET_REGS(),
            KVM_GET_SREGS(),
            KVM_GET_MSRS(),
            KVM_GET_FPU(),
            KVM_GET_LAPIC(),
            KVM_GET_MP_STATE(),
            KVM_GET_VCPU_EVENTS(),
            KVM_GET_DEBUGREGS(),
            KVM_GET_TSC_KHZ(),
            KVM_GET_XSAVE(),
            KVM_GET_XCRS(),
        ],
        Kind::Vmm => vec![
            KVM_GET_MSR_INDEX_LIST(),
            KVM_GET_IRQCHIP(),
            KVM_GET_CLOCK(),
            KVM_GET_PIT2(),
            libc::TCGETS,
            libc::TCSETS,
            libc::TCSETSW,
            libc::TCSETSF,
            libc::TIOCGWINSZ,
        ],
        Kind::Stdin | Kind::Signals => Vec::new(),
    }
}

/// The calls of `kind` beyond [`COMMON`], each with its conditions (an
/// empty list: any arguments). `pid` is the VM's process.
fn rules(
    kind: Kind,
    pid: i32,
) -> Result<Vec<(Sysno, Vec<SeccompRule>)>, seccompiler::BackendError> {
    let any = |calls: &[Sysno]| calls.iter().map(|c| (*c, Vec::new())).collect::<Vec<_>>();
    let mut rules = match kind {
        // A device that the guest activates looks at its backend at once
        // (virtio-net reads what passt queued meanwhile).
        Kind::Vcpu => any(&[Sysno::read, Sysno::recvfrom]),
        Kind::Stdin => any(&[Sysno::read]),
        Kind::Signals => any(&[Sysno::read, Sysno::recvfrom]),
        Kind::Vmm => {
            let mut r = any(VMM_FILES);
            r.extend(any(VMM_OTHER));
            // Pausing a vCPU for a snapshot: a signal to a thread of its own.
            r.push((
                Sysno::tgkill,
                vec![SeccompRule::new(vec![arg_is(0, pid as u64)?])?],
            ));
            r
        }
    };
    if kind != Kind::Vmm {
        // Rust's debug builds (the test suite's) check that an fd is open
        // before they close it: fcntl(F_GETFD).
        rules.push((
            Sysno::fcntl,
            vec![SeccompRule::new(vec![arg_is(1, libc::F_GETFD as u64)?])?],
        ));
    }
    let requests = ioctls(kind);
    if !requests.is_empty() {
        let each = requests
            .into_iter()
            .map(|request| SeccompRule::new(vec![arg_is(1, request)?]))
            .collect::<Result<Vec<_>, _>>()?;
        rules.push((Sysno::ioctl, each));
    }
    Ok(rules)
}

/// Builds `kind`'s filter.
fn program(kind: Kind) -> Result<BpfProgram, SeccompError> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for call in COMMON {
        map.insert(call.id() as i64, Vec::new());
    }
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    let rules = rules(kind, pid).map_err(|e| SeccompError::Build(kind, e.to_string()))?;
    for (call, rules) in rules {
        map.insert(call.id() as i64, rules);
    }
    let mismatch = match MODE.load(Ordering::SeqCst) {
        m if m == Mode::Log as u8 => SeccompAction::Log,
        _ => SeccompAction::Trap,
    };
    let filter = SeccompFilter::new(map, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(|e| SeccompError::Build(kind, e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError::Build(kind, e.to_string()))
}

/// An argument equal to `value` (for ioctl's request, argument 1).
pub fn arg_is(index: u8, value: u64) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
}

thread_local! {
    /// The kind of filter this thread is under, for the SIGSYS handler.
    static THREAD_KIND: std::cell::Cell<&'static str> = const { std::cell::Cell::new("?") };
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Vmm => "vmm",
            Kind::Vcpu => "vcpu",
            Kind::Stdin => "stdin",
            Kind::Signals => "signals",
        }
    }
}

/// Puts the calling thread under `kind`'s filter, for good.
pub fn install(kind: Kind) -> Result<(), SeccompError> {
    if MODE.load(Ordering::SeqCst) == Mode::Off as u8 {
        return Ok(());
    }
    handle_sigsys()?;
    THREAD_KIND.with(|k| k.set(kind.name()));
    let program = program(kind)?;
    seccompiler::apply_filter(&program).map_err(|e| SeccompError::Install(kind, e.to_string()))
}

/// Installs, once per process, the handler that reports a forbidden call.
fn handle_sigsys() -> Result<(), SeccompError> {
    static DONE: std::sync::OnceLock<Result<(), i32>> = std::sync::OnceLock::new();
    let done = DONE.get_or_init(|| {
        // SAFETY: sigaction is a plain C struct; all-zero is a valid value
        // that the fields set below complete.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        // SAFETY: on_sigsys has the signature SA_SIGINFO asks for and only
        // makes async-signal-safe calls; `action` is a valid sigaction.
        match unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
        }
    });
    done.map_err(|e| SeccompError::Handler(std::io::Error::from_raw_os_error(e)))
}

/// The layout of siginfo_t for SIGSYS (the `_sigsys` member of its union).
#[repr(C)]
struct SigsysInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    call_addr: usize,
    syscall: i32,
    arch: u32,
}

/// Names the forbidden call and the thread, then ends the process. Only
/// async-signal-safe calls: write, exit_group.
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SIGSYS, whose
    // `_sigsys` member SigsysInfo describes.
    let nr = unsafe { (*(info as *const SigsysInfo)).syscall };
    let name = usize::try_from(nr)
        .ok()
        .and_then(Sysno::new)
        .map_or("an unknown call", |s| s.name());
    // A const-initialized thread local: no allocation, no lock.
    let kind = THREAD_KIND.with(|k| k.get());
    let mut msg = [0u8; 256];
    let mut len = 0;
    for part in [
        &b"cella: the VM's process called "[..],
        name.as_bytes(),
        b" (system call ",
        &decimal(nr)[..],
        b") in a ",
        kind.as_bytes(),
        b" thread, which that thread's seccomp filter forbids: stopping the VM\n",
    ] {
        for &b in part {
            if len < msg.len() && b != 0 {
                msg[len] = b;
                len += 1;
            }
        }
    }
    // SAFETY: write and exit_group are async-signal-safe; `msg` is live.
    unsafe {
        libc::write(libc::STDERR_FILENO, msg.as_ptr().cast(), len);
        libc::syscall(libc::SYS_exit_group, FORBIDDEN_EXIT);
    }
}

/// `n` in decimal, NUL-padded (no allocation: for the handler).
fn decimal(n: i32) -> [u8; 12] {
    let mut out = [0u8; 12];
    let mut digits = [0u8; 11];
    let mut v = i64::from(n).unsigned_abs();
    let mut i = 0;
    loop {
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        i += 1;
        if v == 0 || i == digits.len() {
            break;
        }
    }
    let mut j = 0;
    if n < 0 {
        out[0] = b'-';
        j = 1;
    }
    while i > 0 && j < out.len() {
        i -= 1;
        out[j] = digits[i];
        j += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_without_allocating() {
        assert_eq!(&decimal(0)[..2], b"0\0");
        assert_eq!(&decimal(435)[..4], b"435\0");
        assert_eq!(&decimal(-1)[..3], b"-1\0");
    }

    #[test]
    fn every_kind_has_a_filter() {
        for kind in [Kind::Vmm, Kind::Vcpu, Kind::Stdin, Kind::Signals] {
            program(kind).unwrap();
        }
    }
}
