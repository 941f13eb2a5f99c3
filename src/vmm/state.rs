//! The KVM-side state of a running VM, read and written back for snapshots:
//! each vCPU's registers, MSRs, LAPIC and FPU, and the VM's interrupt
//! controllers, PIT and clock.

use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

/// What a state ioctl failed on, with KVM's error.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct StateError {
    pub what: String,
    #[source]
    pub source: kvm_ioctls::Error,
}

fn ctx<T>(what: &str, r: Result<T, kvm_ioctls::Error>) -> Result<T, StateError> {
    r.map_err(|source| StateError {
        what: what.to_string(),
        source,
    })
}

/// One vCPU, as KVM reports it.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    /// None where KVM has no XCRs (no XSAVE on the host).
    pub xcrs: Option<kvm_xcrs>,
    pub debug_regs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub msrs: Vec<(u32, u64)>,
    pub events: kvm_vcpu_events,
    pub tsc_khz: Option<u32>,
}

/// The VM-wide devices KVM emulates.
#[derive(Serialize, Deserialize)]
pub struct VmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

/// The MSRs worth saving: every one KVM lists for this host.
pub fn msr_list(kvm: &Kvm) -> Result<Vec<u32>, StateError> {
    Ok(ctx("KVM_GET_MSR_INDEX_LIST", kvm.get_msr_index_list())?
        .as_slice()
        .to_vec())
}

/// Reads every MSR of `indices` that this vCPU can report. KVM stops at
/// the first MSR it cannot read: skip it and go on from the next.
fn read_msrs(vcpu: &VcpuFd, indices: &[u32]) -> Result<Vec<(u32, u64)>, StateError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> = rest
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| StateError {
            what: format!("{} MSRs are too many for one KVM_GET_MSRS", entries.len()),
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        let read = ctx("KVM_GET_MSRS", vcpu.get_msrs(&mut msrs))?;
        out.extend(msrs.as_slice()[..read].iter().map(|e| (e.index, e.data)));
        rest = &rest[(read + 1).min(rest.len())..];
    }
    Ok(out)
}

/// Reads the state of a vCPU that is out of KVM_RUN.
pub fn save_vcpu(vcpu: &VcpuFd, msr_indices: &[u32]) -> Result<VcpuState, StateError> {
    // KVM_GET_MP_STATE first: it folds pending LAPIC events into the state
    // the other calls then report.
    let mp_state = ctx("KVM_GET_MP_STATE", vcpu.get_mp_state())?;
    Ok(VcpuState {
        mp_state,
        regs: ctx("KVM_GET_REGS", vcpu.get_regs())?,
        sregs: ctx("KVM_GET_SREGS", vcpu.get_sregs())?,
        xsave: ctx("KVM_GET_XSAVE", vcpu.get_xsave())?,
        xcrs: vcpu.get_xcrs().ok(),
        debug_regs: ctx("KVM_GET_DEBUGREGS", vcpu.get_debug_regs())?,
        lapic: ctx("KVM_GET_LAPIC", vcpu.get_lapic())?,
        msrs: read_msrs(vcpu, msr_indices)?,
        events: ctx("KVM_GET_VCPU_EVENTS", vcpu.get_vcpu_events())?,
        tsc_khz: vcpu.get_tsc_khz().ok(),
    })
}

/// Writes a saved state into a fresh vCPU whose CPUID is already set, in
/// the order KVM needs: LAPIC before the MSRs that depend on it (TSC
/// deadline), events last.
pub fn restore_vcpu(vcpu: &VcpuFd, s: &VcpuState) -> Result<(), StateError> {
    if let Some(khz) = s.tsc_khz {
        // A host with another TSC rate scales the guest's; where KVM can't,
        // the guest still runs, with its clock recalibrated by kvmclock.
        let _ = vcpu.set_tsc_khz(khz);
    }
    ctx("KVM_SET_MP_STATE", vcpu.set_mp_state(s.mp_state))?;
    ctx("KVM_SET_REGS", vcpu.set_regs(&s.regs))?;
    ctx("KVM_SET_SREGS", vcpu.set_sregs(&s.sregs))?;
    // SAFETY: `s.xsave` is a whole kvm_xsave, the size KVM_SET_XSAVE reads.
    ctx("KVM_SET_XSAVE", unsafe { vcpu.set_xsave(&s.xsave) })?;
    if let Some(xcrs) = &s.xcrs {
        ctx("KVM_SET_XCRS", vcpu.set_xcrs(xcrs))?;
    }
    ctx("KVM_SET_DEBUGREGS", vcpu.set_debug_regs(&s.debug_regs))?;
    ctx("KVM_SET_LAPIC", vcpu.set_lapic(&s.lapic))?;
    let entries: Vec<kvm_msr_entry> = s
        .msrs
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|_| StateError {
        what: format!("{} MSRs are too many for one KVM_SET_MSRS", entries.len()),
        source: kvm_ioctls::Error::new(libc::E2BIG),
    })?;
    let written = ctx("KVM_SET_MSRS", vcpu.set_msrs(&msrs))?;
    if written != entries.len() {
        return Err(StateError {
            what: format!("KVM_SET_MSRS refused MSR {:#x}", entries[written].index),
            source: kvm_ioctls::Error::new(libc::EINVAL),
        });
    }
    ctx("KVM_SET_VCPU_EVENTS", vcpu.set_vcpu_events(&s.events))?;
    Ok(())
}

fn irqchip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, StateError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    ctx("KVM_GET_IRQCHIP", vm.get_irqchip(&mut chip))?;
    Ok(chip)
}

/// Reads the VM-wide state; the vCPUs must be paused.
pub fn save_vm(vm: &VmFd) -> Result<VmState, StateError> {
    let mut clock = ctx("KVM_GET_CLOCK", vm.get_clock())?;
    // Only the clock value goes back in: the flags describe this host.
    clock.flags = 0;
    Ok(VmState {
        pic_master: irqchip(vm, KVM_IRQCHIP_PIC_MASTER)?,
        pic_slave: irqchip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
        ioapic: irqchip(vm, KVM_IRQCHIP_IOAPIC)?,
        pit: ctx("KVM_GET_PIT2", vm.get_pit2())?,
        clock,
    })
}

/// Writes the VM-wide state into a VM with its irqchip and PIT created,
/// before any vCPU runs.
pub fn restore_vm(vm: &VmFd, s: &VmState) -> Result<(), StateError> {
    ctx("KVM_SET_PIT2", vm.set_pit2(&s.pit))?;
    ctx("KVM_SET_CLOCK", vm.set_clock(&s.clock))?;
    for chip in [&s.pic_master, &s.pic_slave, &s.ioapic] {
        ctx("KVM_SET_IRQCHIP", vm.set_irqchip(chip))?;
    }
    Ok(())
}
