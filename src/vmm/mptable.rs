//! The Intel MultiProcessor table: how a guest without ACPI learns about
//! its CPUs' local APICs and the I/O APIC. Without it Linux runs on the
//! legacy PIC and PIT; with it, on the LAPIC timer and the I/O APIC, and
//! it can start more than one vCPU.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::error::VmError;

/// Where the table goes: the last KiB of conventional memory, one of the
/// places Linux scans, left out of the e820 RAM map.
pub const MPTABLE_START: u64 = 0x9fc00;
const APIC_ADDR: u32 = 0xfee0_0000;
const IO_APIC_ADDR: u32 = 0xfec0_0000;
const APIC_VERSION: u8 = 0x14;
const IO_APIC_VERSION: u8 = 0x11;
/// Pins of KVM's I/O APIC; ISA IRQ n is wired to pin n.
const IO_APIC_PINS: u8 = 24;

const ENTRY_CPU: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
const IRQ_INT: u8 = 0;
const IRQ_NMI: u8 = 1;
const IRQ_EXTINT: u8 = 3;
/// CPU signature (family 6) and features (FPU, APIC) in the CPU entries.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;

/// Makes the bytes of a structure sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// The MP configuration table (header and entries) for `cpus` CPUs.
fn config_table(cpus: u8) -> Vec<u8> {
    let ioapic_id = cpus;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        entries.extend_from_slice(&[ENTRY_CPU, id, APIC_VERSION]);
        entries.push(CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 });
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IO_APIC_VERSION, 1]);
    entries.extend_from_slice(&IO_APIC_ADDR.to_le_bytes());
    count += 2;
    for pin in 0..IO_APIC_PINS {
        // Bus default polarity and trigger (edge, active high) for ISA.
        entries.extend_from_slice(&[ENTRY_INTSRC, IRQ_INT, 0, 0, 0, pin, ioapic_id, pin]);
        count += 1;
    }
    // The virtual wire a BIOS sets up: the PIC on LINT0, NMIs on LINT1.
    entries.extend_from_slice(&[ENTRY_LINTSRC, IRQ_EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[ENTRY_LINTSRC, IRQ_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let len = 44 + entries.len();
    let mut table = Vec::with_capacity(len);
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&(len as u16).to_le_bytes());
    table.extend_from_slice(&[4, 0]); // spec 1.4, checksum below
    table.extend_from_slice(b"CELLA   ");
    table.extend_from_slice(b"CELLA-VM    ");
    table.extend_from_slice(&[0; 6]); // no OEM table
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&APIC_ADDR.to_le_bytes());
    table.extend_from_slice(&[0; 4]); // no extended table
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);
    table
}

/// The floating pointer structure and the table after it, as placed at
/// [`MPTABLE_START`].
pub fn build(cpus: u8) -> Vec<u8> {
    let table_addr = MPTABLE_START as u32 + 16;
    let mut mp = Vec::with_capacity(16);
    mp.extend_from_slice(b"_MP_");
    mp.extend_from_slice(&table_addr.to_le_bytes());
    mp.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // 16 bytes, spec 1.4
    mp[10] = checksum(&mp);
    mp.extend_from_slice(&config_table(cpus));
    mp
}

/// Writes the MP table for `cpus` CPUs into guest memory.
pub fn write(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), VmError> {
    let bytes = build(cpus.max(1));
    if MPTABLE_START + bytes.len() as u64 > 0xa0000 {
        return Err(VmError::TooManyCpus(cpus));
    }
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(VmError::GuestMemory)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    #[test]
    fn structures_checksum_to_zero_and_point_at_each_other() {
        let t = build(2);
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0);
        let table_addr = u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as u64;
        assert_eq!(table_addr, MPTABLE_START + 16);
        let table = &t[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(sum(table), 0);
        // 2 CPUs, bus, I/O APIC, 24 interrupt sources, 2 local ones.
        assert_eq!(u16::from_le_bytes([table[34], table[35]]), 2 + 2 + 24 + 2);
        assert_eq!(len, 44 + 2 * 20 + 8 * (2 + 24 + 2));
        // The boot CPU is flagged, the second is not.
        assert_eq!(table[44 + 3], CPU_ENABLED | CPU_BSP);
        assert_eq!(table[64 + 3], CPU_ENABLED);
    }

    #[test]
    fn fits_below_the_bios_area_for_many_cpus() {
        assert!(MPTABLE_START + build(32).len() as u64 <= 0xa0000);
    }
}
