//! vCPU setup and the thread that runs it, dispatching I/O exits to the buses.

use std::sync::{Arc, Mutex};

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

use super::boot::{self, BootEntry};
use super::VmError;
use crate::devices::bus::{lock, Bus};

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

/// Sets the boot state of vCPU `id` (CPUID, registers, FPU, LAPIC).
pub fn configure(kvm: &Kvm, vcpu: &VcpuFd, id: u8, entry: &BootEntry) -> Result<(), VmError> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(VmError::Kvm)?;
    patch_cpuid(&mut cpuid, id);
    vcpu.set_cpuid2(&cpuid).map_err(VmError::Kvm)?;

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

/// Runs the vCPU until the guest stops it; records why and signals `stopped`.
pub fn run(
    mut vcpu: VcpuFd,
    buses: Arc<Buses>,
    stop: Arc<Mutex<Option<VcpuStop>>>,
    stopped: EventFd,
) {
    let reason = loop {
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
