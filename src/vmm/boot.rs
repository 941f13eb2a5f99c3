//! Guest memory layout and the PVH boot protocol: where the kernel, its
//! command line, the initramfs and the start-of-day tables go, and the
//! register state the vCPU starts in.

use std::fs::File;

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, Cmdline, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::error::VmError;

const GDT_ADDR: u64 = 0x500;
const IDT_ADDR: u64 = 0x520;
const START_INFO_ADDR: u64 = 0x6000;
const MODLIST_ADDR: u64 = 0x6040;
const MEMMAP_ADDR: u64 = 0x7000;
const CMDLINE_ADDR: u64 = 0x20000;
/// The x86 kernel's COMMAND_LINE_SIZE.
pub const CMDLINE_MAX: usize = 2048;
/// End of conventional memory: the EBDA and BIOS area above it are not RAM.
const LOW_RAM_END: u64 = 0x9fc00;
const HIGH_RAM_START: u64 = 0x10_0000;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;

/// Where the vCPU starts: the kernel's PVH entry with %ebx at the start info.
pub struct BootEntry {
    pub entry: GuestAddress,
}

/// Loads the kernel, command line and initramfs and writes the PVH tables.
pub fn load(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &mut File,
    cmdline: &str,
    initramfs: &[u8],
) -> Result<BootEntry, VmError> {
    let loaded = Elf::load(mem, None, kernel, Some(GuestAddress(HIGH_RAM_START)))
        .map_err(VmError::KernelLoad)?;
    let entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => entry,
        _ => return Err(VmError::NoPvhEntry),
    };

    if cmdline.len() >= CMDLINE_MAX {
        return Err(VmError::CmdlineTooLong(cmdline.len()));
    }
    let mut cl = Cmdline::new(CMDLINE_MAX).map_err(VmError::Cmdline)?;
    cl.insert_str(cmdline).map_err(VmError::Cmdline)?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cl).map_err(VmError::KernelLoad)?;

    // The initramfs goes at the top of RAM, page aligned, clear of the kernel.
    let initrd_addr = mem_size
        .checked_sub(initramfs.len() as u64)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= loaded.kernel_end)
        .ok_or(VmError::InitramfsTooBig(initramfs.len()))?;
    mem.write_slice(initramfs, GuestAddress(initrd_addr))
        .map_err(VmError::GuestMemory)?;

    let memmap = [
        hvm_memmap_table_entry {
            addr: 0,
            size: LOW_RAM_END,
            type_: E820_RAM,
            reserved: 0,
        },
        hvm_memmap_table_entry {
            addr: HIGH_RAM_START,
            size: mem_size - HIGH_RAM_START,
            type_: E820_RAM,
            reserved: 0,
        },
    ];
    let module = hvm_modlist_entry {
        paddr: initrd_addr,
        size: initramfs.len() as u64,
        ..Default::default()
    };
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        nr_modules: 1,
        modlist_paddr: MODLIST_ADDR,
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new(&start_info, GuestAddress(START_INFO_ADDR));
    params.set_sections(&memmap, GuestAddress(MEMMAP_ADDR));
    params.set_modules(&[module], GuestAddress(MODLIST_ADDR));
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(VmError::BootParams)?;

    write_gdt(mem)?;
    Ok(BootEntry { entry })
}

/// Flat 32-bit code and data segments and a TSS, as PVH asks for.
const GDT: [u64; 4] = [
    0,
    gdt_entry(0xc09b, 0, 0xfffff), // code
    gdt_entry(0xc093, 0, 0xfffff), // data
    gdt_entry(0x808b, 0, 0xfffff), // TSS
];

const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0x0000_f0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

fn segment(index: u16) -> kvm_segment {
    let e = GDT[index as usize];
    let base = ((e >> 16) & 0xff_ffff) | ((e >> 32) & 0xff00_0000);
    let limit = (e & 0xffff) | ((e >> 32) & 0xf_0000);
    let g = ((e >> 55) & 1) as u8;
    kvm_segment {
        base,
        limit: if g == 1 {
            ((limit << 12) | 0xfff) as u32
        } else {
            limit as u32
        },
        selector: index * 8,
        type_: ((e >> 40) & 0xf) as u8,
        present: ((e >> 47) & 1) as u8,
        dpl: ((e >> 45) & 3) as u8,
        db: ((e >> 54) & 1) as u8,
        s: ((e >> 44) & 1) as u8,
        l: ((e >> 53) & 1) as u8,
        g,
        avl: ((e >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

fn write_gdt(mem: &GuestMemoryMmap) -> Result<(), VmError> {
    for (i, entry) in GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR).unchecked_add(i as u64 * 8))
            .map_err(VmError::GuestMemory)?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(VmError::GuestMemory)
}

/// Protected mode, paging off, flat segments: the PVH entry state.
pub fn sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = segment(1);
    let data = segment(2);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(3);
    sregs.cr0 = 0x1 | 0x10; // PE, ET
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

pub fn regs(entry: &BootEntry) -> kvm_regs {
    kvm_regs {
        rip: entry.entry.raw_value(),
        rbx: START_INFO_ADDR,
        rflags: 0x2,
        ..Default::default()
    }
}

pub fn fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_segments_are_flat_4g() {
        let cs = segment(1);
        assert_eq!((cs.base, cs.limit, cs.selector), (0, 0xffff_ffff, 8));
        assert_eq!(
            (cs.type_, cs.present, cs.s, cs.db, cs.g, cs.l),
            (0xb, 1, 1, 1, 1, 0)
        );
        let ds = segment(2);
        assert_eq!((ds.type_, ds.selector), (0x3, 0x10));
        let tr = segment(3);
        assert_eq!((tr.type_, tr.s), (0xb, 0));
    }
}
