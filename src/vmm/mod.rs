//! The KVM virtual machine: memory, kernel loading, vCPU threads, buses and
//! devices, built in one linear function from a plain-data [`VmSpec`].

pub mod boot;
pub mod vcpu;

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::bus::OverlapError;
use crate::devices::legacy::{ConsoleLog, Serial, I8042};
use crate::devices::virtio::block::{Block, Disk};
use crate::devices::virtio::console::Console;
use crate::devices::virtio::mmio::{MmioTransport, MMIO_SIZE, NOTIFY_OFFSET};
use crate::devices::virtio::{Interrupt, VirtioDevice};
use vcpu::{Buses, VcpuStop};

/// Where virtio-mmio devices start in guest physical memory, and their IRQs.
const MMIO_BASE: u64 = 0xd000_0000;
const FIRST_IRQ: u32 = 5;
const SERIAL_PORT: u64 = 0x3f8;
const I8042_PORT: u64 = 0x60;
const TSS_ADDR: usize = 0xfffb_d000;

/// Everything that shapes a VM, as plain data.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub kernel: PathBuf,
    pub initramfs: Vec<u8>,
    /// Kernel parameters beyond the ones the VMM adds for its own devices.
    pub cmdline: String,
    /// Read-only disks, in order: /dev/vda, /dev/vdb, …
    pub disks: Vec<PathBuf>,
    pub vcpus: u8,
    pub mem_mib: u32,
    /// Copy the kernel log to stderr.
    pub verbose: bool,
    /// Names of the console ports (stream channels), in port-id order.
    pub ports: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM ioctl failed")]
    Kvm(#[source] kvm_ioctls::Error),
    #[error("cannot allocate {0} MiB of guest memory")]
    Memory(u32, #[source] vm_memory::mmap::FromRangesError),
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
    #[error("cannot open disk image {0}")]
    OpenDisk(PathBuf, #[source] std::io::Error),
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("device layout")]
    Bus(#[source] OverlapError),
    #[error("cannot start a vCPU thread")]
    Thread(#[source] std::io::Error),
}

/// A device together with the eventfds that carry its queue kicks.
pub struct QueueKick {
    pub device: usize,
    pub queue: usize,
    pub evt: EventFd,
}

/// A built VM, ready to run.
pub struct Vm {
    pub console: Arc<Mutex<MmioTransport<Console>>>,
    /// Every virtio device, indexed as `QueueKick::device`.
    pub virtio: Vec<Arc<Mutex<dyn Notify>>>,
    pub kicks: Vec<QueueKick>,
    /// Written when the guest powers off through the i8042 reset line.
    pub power_off: EventFd,
    /// Written when a vCPU thread stops; the reason is in `stop`.
    pub vcpu_stopped: EventFd,
    pub stop: Arc<Mutex<Option<VcpuStop>>>,
    pub log: Arc<Mutex<ConsoleLog>>,
    /// Host address of guest RAM, for memory accounting.
    guest_ram_host: u64,
    // Held so the VM and its memory outlive the vCPU threads' use of them.
    _vm: VmFd,
    _mem: GuestMemoryMmap,
    _threads: Vec<JoinHandle<()>>,
}

/// Queue kicks reach a transport through this, whatever the device type.
pub trait Notify: Send {
    fn notify(&mut self, queue: usize);
}

impl<D: VirtioDevice> Notify for MmioTransport<D> {
    fn notify(&mut self, queue: usize) {
        MmioTransport::notify(self, queue)
    }
}

/// Places virtio-mmio devices: an MMIO window, an IRQ wired to an irqfd,
/// an ioeventfd per queue, and the kernel parameter that announces it.
struct Slots<'a> {
    vm: &'a VmFd,
    mem: &'a GuestMemoryMmap,
    buses: &'a mut Buses,
    cmdline: String,
    virtio: Vec<Arc<Mutex<dyn Notify>>>,
    kicks: Vec<QueueKick>,
}

impl Slots<'_> {
    fn attach<D: VirtioDevice + 'static>(
        &mut self,
        device: D,
    ) -> Result<Arc<Mutex<MmioTransport<D>>>, VmError> {
        let index = self.virtio.len();
        let base = MMIO_BASE + index as u64 * MMIO_SIZE;
        let irq = FIRST_IRQ + index as u32;
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
        self.vm.register_irqfd(&irqfd, irq).map_err(VmError::Kvm)?;
        for queue in 0..device.queue_max_sizes().len() {
            let evt = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
            self.vm
                .register_ioevent(
                    &evt,
                    &IoEventAddress::Mmio(base + NOTIFY_OFFSET),
                    queue as u32,
                )
                .map_err(VmError::Kvm)?;
            self.kicks.push(QueueKick {
                device: index,
                queue,
                evt,
            });
        }
        let transport = Arc::new(Mutex::new(MmioTransport::new(
            device,
            self.mem.clone(),
            Interrupt::new(irqfd),
        )));
        self.buses
            .mmio
            .insert(base, MMIO_SIZE, transport.clone())
            .map_err(VmError::Bus)?;
        self.virtio.push(transport.clone());
        self.cmdline
            .push_str(&format!(" virtio_mmio.device=4K@{base:#x}:{irq}"));
        Ok(transport)
    }
}

/// Whether this host's KVM runs guest kernel code through its instruction
/// emulator (nested "PVM" KVM), which needs the kernel's workarounds.
pub fn host_is_emulating() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// Builds the VM described by `spec` and starts its vCPUs.
pub fn build_and_start(spec: &VmSpec) -> Result<Vm, VmError> {
    let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
    let vm = kvm.create_vm().map_err(VmError::Kvm)?;
    vm.set_tss_address(TSS_ADDR).map_err(VmError::Kvm)?;
    vm.create_irq_chip().map_err(VmError::Kvm)?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(VmError::Kvm)?;

    // Memory: one region below the MMIO window (no high memory yet).
    let mem_size = u64::from(spec.mem_mib.max(64)) << 20;
    if mem_size > MMIO_BASE {
        return Err(VmError::MemoryTooLarge(spec.mem_mib, MMIO_BASE >> 20));
    }
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size as usize)])
        .map_err(|e| VmError::Memory(spec.mem_mib, e))?;
    let mut guest_ram_host = 0;
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(VmError::GuestMemory)?;
        let region_desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        if slot == 0 {
            guest_ram_host = host as u64;
        }
        // SAFETY: the region is a live mmap owned by `mem`, which the returned
        // Vm keeps alive for as long as the VM (and its vCPUs) can run.
        unsafe { vm.set_user_memory_region(region_desc) }.map_err(VmError::Kvm)?;
    }

    // Legacy devices.
    let log = ConsoleLog::new(spec.verbose);
    let power_off = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
    let mut buses = Buses {
        pio: Default::default(),
        mmio: Default::default(),
    };
    buses
        .pio
        .insert(
            SERIAL_PORT,
            8,
            Arc::new(Mutex::new(Serial::new(log.clone()))),
        )
        .map_err(VmError::Bus)?;
    let i8042 = I8042::new(power_off.try_clone().map_err(VmError::EventFd)?);
    buses
        .pio
        .insert(I8042_PORT, 5, Arc::new(Mutex::new(i8042)))
        .map_err(VmError::Bus)?;

    // virtio devices: the console first, then the disks in order.
    let mut slots = Slots {
        vm: &vm,
        mem: &mem,
        buses: &mut buses,
        cmdline: spec.cmdline.clone(),
        virtio: Vec::new(),
        kicks: Vec::new(),
    };
    let names: Vec<&str> = spec.ports.iter().map(String::as_str).collect();
    let console = slots.attach(Console::new(&names))?;
    for path in &spec.disks {
        let file = File::open(path).map_err(|e| VmError::OpenDisk(path.clone(), e))?;
        let disk = Disk::new(file, "cella").map_err(|e| VmError::OpenDisk(path.clone(), e))?;
        slots.attach(Block::new(disk))?;
    }
    let Slots {
        cmdline,
        virtio,
        kicks,
        ..
    } = slots;

    // Kernel.
    let mut kernel =
        File::open(&spec.kernel).map_err(|e| VmError::OpenKernel(spec.kernel.clone(), e))?;
    let entry = boot::load(&mem, mem_size, &mut kernel, &cmdline, &spec.initramfs)?;

    // vCPUs.
    let buses = Arc::new(buses);
    let stop = Arc::new(Mutex::new(None));
    let vcpu_stopped = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
    let mut threads = Vec::new();
    for id in 0..spec.vcpus.max(1) {
        let vcpu = vm.create_vcpu(u64::from(id)).map_err(VmError::Kvm)?;
        vcpu::configure(&kvm, &vcpu, id, &entry)?;
        let (buses, stop) = (buses.clone(), stop.clone());
        let stopped = vcpu_stopped.try_clone().map_err(VmError::EventFd)?;
        let t = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || vcpu::run(vcpu, buses, stop, stopped))
            .map_err(VmError::Thread)?;
        threads.push(t);
    }

    Ok(Vm {
        console,
        virtio,
        kicks,
        power_off,
        vcpu_stopped,
        stop,
        log,
        guest_ram_host,
        _vm: vm,
        _mem: mem,
        _threads: threads,
    })
}

impl Vm {
    /// The process's peak RSS and how much of it is guest RAM the guest
    /// touched, in KiB (from /proc/self/status and /proc/self/smaps).
    pub fn memory_stats(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let peak = kib_field(&status, "VmHWM:")?;
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let start = format!("{:x}-", self.guest_ram_host);
        let mapping = smaps.split_once(&format!("\n{start}")).map(|(_, m)| m)?;
        let guest = kib_field(mapping, "Rss:")?;
        Some((peak, guest))
    }
}

/// The number after `name` on its line, in a /proc file that counts in kB.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}
