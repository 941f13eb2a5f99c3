//! vCPU setup and the thread that runs it, dispatching I/O exits to the buses.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal;

use super::boot::{self, BootEntry};
use super::error::VmError;
use super::state::{self, StateError, VcpuState};
use crate::devices::bus::{lock, Bus};
use crate::sandbox::seccomp;

/// Why a vCPU stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuStop {
    /// The guest halted with nothing left to wake it.
    Halted,
    /// Triple fault or a reset request.
    Shutdown,
    /// KVM could not emulate an instruction (KVM_EXIT_INTERNAL_ERROR).
    InternalError {
        suberror: u32,
    },
    FailEntry {
        reason: u64,
    },
    /// KVM_RUN itself failed.
    RunError(String),
}

impl std::fmt::Display for VcpuStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VcpuStop::Halted => write!(f, "the guest CPU halted"),
            VcpuStop::Shutdown => write!(f, "the guest reset (triple fault)"),
            VcpuStop::InternalError { suberror } => write!(
                f,
                "KVM internal error, suberror {suberror} (an instruction KVM could not emulate)"
            ),
            VcpuStop::FailEntry { reason } => {
                write!(f, "KVM failed to enter the guest (reason {reason:#x})")
            }
            VcpuStop::RunError(e) => write!(f, "KVM_RUN failed: {e}"),
        }
    }
}

/// The two buses a vCPU's exits are dispatched to.
pub struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

/// The CPUID a vCPU gets: what KVM supports on this host, with the vCPU's
/// APIC id and the hypervisor bit.
pub fn cpuid(kvm: &Kvm, id: u8) -> Result<CpuId, VmError> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(VmError::Kvm)?;
    patch_cpuid(&mut cpuid, id);
    Ok(cpuid)
}

/// Sets the boot state of vCPU `id` (CPUID, registers, FPU, LAPIC).
pub fn configure(kvm: &Kvm, vcpu: &VcpuFd, id: u8, entry: &BootEntry) -> Result<(), VmError> {
    vcpu.set_cpuid2(&cpuid(kvm, id)?).map_err(VmError::Kvm)?;

    let sregs = vcpu.get_sregs().map_err(VmError::Kvm)?;
    vcpu.set_sregs(&boot::sregs(sregs)).map_err(VmError::Kvm)?;
    vcpu.set_regs(&boot::regs(entry)).map_err(VmError::Kvm)?;
    vcpu.set_fpu(&boot::fpu()).map_err(VmError::Kvm)?;

    // LINT0 delivers the PIC's ExtINT, LINT1 NMIs: the virtual-wire setup
    // a BIOS would leave behind.
    let mut lapic = vcpu.get_lapic().map_err(VmError::Kvm)?;
    set_lvt(&mut lapic.regs, 0x350, 0x7);
    set_lvt(&mut lapic.regs, 0x360, 0x4);
    vcpu.set_lapic(&lapic).map_err(VmError::Kvm)?;
    Ok(())
}

fn set_lvt(regs: &mut [std::os::raw::c_char], offset: usize, mode: u32) {
    let mut bytes = [0u8; 4];
    for (b, r) in bytes.iter_mut().zip(&regs[offset..offset + 4]) {
        *b = *r as u8;
    }
    let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
    for (r, b) in regs[offset..offset + 4].iter_mut().zip(value.to_le_bytes()) {
        *r = b as std::os::raw::c_char;
    }
}

fn patch_cpuid(cpuid: &mut CpuId, id: u8) {
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x00ff_ffff) | (u32::from(id) << 24);
                e.ecx |= 1 << 31; // running under a hypervisor
            }
            0xb | 0x1f => e.edx = u32::from(id),
            _ => {}
        }
    }
}

/// Lets the main thread take a vCPU out of KVM_RUN, read its state and
/// let it go on: how a snapshot is taken of a running guest.
#[derive(Default)]
pub struct Pause {
    state: Mutex<PauseState>,
    changed: Condvar,
    /// Mirrors `state == Requested` so the run loop checks without locking.
    requested: AtomicBool,
}

#[derive(Default)]
enum PauseState {
    #[default]
    Running,
    Requested(Arc<Vec<u32>>),
    Paused(Option<Result<Box<VcpuState>, StateError>>),
}

/// The real-time signal that interrupts KVM_RUN; its handler does nothing.
fn kick_signal() -> i32 {
    signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the kick signal's handler (once per process).
pub fn init_kick_signal() -> Result<(), VmError> {
    static INIT: OnceLock<Result<(), i32>> = OnceLock::new();
    INIT.get_or_init(|| {
        signal::register_signal_handler(kick_signal(), on_kick).map_err(|e| e.errno())
    })
    .map_err(|errno| VmError::Signal(std::io::Error::from_raw_os_error(errno)))
}

impl Pause {
    /// Stops the vCPU running on `thread` and returns its state (read with
    /// `msrs`); the vCPU stays out of the guest until [`Pause::resume`].
    /// None if the thread is gone.
    pub fn pause(
        &self,
        thread: &JoinHandle<()>,
        msrs: Arc<Vec<u32>>,
    ) -> Option<Result<Box<VcpuState>, StateError>> {
        *lock(&self.state) = PauseState::Requested(msrs);
        self.requested.store(true, Ordering::SeqCst);
        let mut state = lock(&self.state);
        loop {
            if let PauseState::Paused(saved) = &mut *state {
                return saved.take();
            }
            if thread.is_finished() {
                *state = PauseState::Running;
                self.requested.store(false, Ordering::SeqCst);
                return None;
            }
            // A kick that lands between the run loop's check and its next
            // KVM_RUN is lost, so kick until the thread answers.
            // SAFETY: pthread_kill on a live thread of this process with a
            // signal whose handler is installed and does nothing.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), kick_signal()) };
            state = match self.changed.wait_timeout(state, Duration::from_millis(5)) {
                Ok((s, _)) => s,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Lets a paused vCPU run again.
    pub fn resume(&self) {
        *lock(&self.state) = PauseState::Running;
        self.requested.store(false, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Called by the vCPU thread between runs: parks it while a pause is on.
    fn check(&self, vcpu: &VcpuFd) {
        if !self.requested.load(Ordering::SeqCst) {
            return;
        }
        let mut state = lock(&self.state);
        if let PauseState::Requested(msrs) = &*state {
            let saved = state::save_vcpu(vcpu, msrs).map(Box::new);
            *state = PauseState::Paused(Some(saved));
            self.changed.notify_all();
        }
        while matches!(*state, PauseState::Paused(_)) {
            state = match self.changed.wait(state) {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
        }
    }
}

/// The scheduler slice asked for vCPU threads: switching between the vCPUs
/// of different VMs is costly (on this development host, whose KVM keeps
/// shadow page tables, four VMs on two cores spent twice the CPU of two
/// VMs per run with the default 3 ms slices, and 1.2x with 50 ms ones).
const VCPU_SLICE_NS: u64 = 50_000_000;

/// struct sched_attr (include/uapi/linux/sched/types.h).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// Asks for [`VCPU_SLICE_NS`] slices for the calling thread (EEVDF's
/// custom slice, Linux 6.12+; older kernels ignore it), keeping its policy
/// and nice value. Best effort.
fn set_long_slice() {
    let size = std::mem::size_of::<SchedAttr>() as u32;
    let mut attr = SchedAttr {
        size,
        policy: 0,
        flags: 0,
        nice: 0,
        priority: 0,
        runtime: 0,
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: sched_getattr writes at most `size` bytes into `attr`, a
    // sched_attr of that size, for the calling thread (pid 0).
    let got = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            size,
            0,
        )
    };
    let fair = [libc::SCHED_OTHER as u32, libc::SCHED_BATCH as u32];
    if got != 0 || !fair.contains(&attr.policy) {
        return;
    }
    attr.size = size;
    attr.runtime = VCPU_SLICE_NS;
    // SAFETY: sched_setattr only reads `attr`, whose size field matches
    // its layout, for the calling thread.
    unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
}

/// Runs the vCPU until the guest stops it; records why and signals `stopped`.
pub fn run(
    mut vcpu: VcpuFd,
    buses: Arc<Buses>,
    pause: Arc<Pause>,
    stop: Arc<Mutex<Option<VcpuStop>>>,
    stopped: EventFd,
) {
    set_long_slice();
    // Before the guest runs a single instruction on this vCPU.
    if let Err(e) = seccomp::install(seccomp::Kind::Vcpu) {
        *lock(&stop) = Some(VcpuStop::RunError(crate::text::error_chain(&e, ": ")));
        let _ = stopped.write(1);
        return;
    }
    let reason = loop {
        pause.check(&vcpu);
        match vcpu.run() {
            Ok(VcpuExit::IoIn(port, data)) => buses.pio.read(u64::from(port), data),
            Ok(VcpuExit::IoOut(port, data)) => buses.pio.write(u64::from(port), data),
            Ok(VcpuExit::MmioRead(addr, data)) => buses.mmio.read(addr, data),
            Ok(VcpuExit::MmioWrite(addr, data)) => buses.mmio.write(addr, data),
            Ok(VcpuExit::Hlt) => break VcpuStop::Halted,
            Ok(VcpuExit::Shutdown) => break VcpuStop::Shutdown,
            Ok(VcpuExit::SystemEvent(..)) => break VcpuStop::Shutdown,
            Ok(VcpuExit::InternalError) => {
                // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so the
                // `internal` member of the kvm_run union is the one KVM filled.
                let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                break VcpuStop::InternalError { suberror };
            }
            Ok(VcpuExit::FailEntry(reason, _)) => break VcpuStop::FailEntry { reason },
            Ok(_) => {}
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => break VcpuStop::RunError(e.to_string()),
        }
    };
    *lock(&stop) = Some(reason);
    // A failed write means the counter is saturated: already signalled.
    let _ = stopped.write(1);
}
