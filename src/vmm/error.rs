//! `VmError`: what can fail while building, starting, pausing or
//! restoring a VM. Apart from mod.rs so that the parts of the VMM (boot,
//! mptable, vcpu) can return it without importing the module that uses them.

use std::path::PathBuf;

use super::state::StateError;
use crate::devices::bus::OverlapError;

/// What can fail while building, starting, pausing or restoring a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM ioctl failed")]
    Kvm(#[source] kvm_ioctls::Error),
    #[error("cannot allocate {0} MiB of guest memory")]
    Memory(u32, #[source] vm_memory::mmap::FromRangesError),
    #[error("cannot map the snapshot's guest memory")]
    MapSnapshot(#[source] vm_memory::mmap::MmapRegionError),
    #[error("{0} MiB of guest memory is more than the {1} MiB supported")]
    MemoryTooLarge(u32, u64),
    #[error("guest memory access failed")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
    #[error("cannot open kernel {0}")]
    OpenKernel(PathBuf, #[source] std::io::Error),
    #[error("cannot load the kernel")]
    KernelLoad(#[source] linux_loader::loader::Error),
    #[error("the kernel has no PVH entry point (build it with CONFIG_PVH=y)")]
    NoPvhEntry,
    #[error("bad kernel command line")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    #[error("kernel command line is {0} bytes, the limit is 2047")]
    CmdlineTooLong(usize),
    #[error("initramfs of {0} bytes does not fit in guest memory")]
    InitramfsTooBig(usize),
    #[error("cannot write PVH boot tables")]
    BootParams(#[source] linux_loader::configurator::Error),
    #[error("cannot insert the disk image")]
    OpenDisk(#[source] std::io::Error),
    #[error("{0} vCPUs do not fit in the MP table")]
    TooManyCpus(u8),
    #[error("the VM has no drive {0}")]
    NoDrive(usize),
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("cannot install the vCPU kick signal handler")]
    Signal(#[source] std::io::Error),
    #[error("device layout")]
    Bus(#[source] OverlapError),
    #[error("cannot start a vCPU thread")]
    Thread(#[source] std::io::Error),
    #[error("the snapshot does not fit this VM: {0}")]
    SnapshotShape(String),
    #[error("cannot read the VM's state")]
    SaveState(#[source] StateError),
    #[error("cannot restore the VM's state")]
    RestoreState(#[source] StateError),
    #[error("vCPU {0} stopped before it could be paused")]
    VcpuGone(usize),
}
