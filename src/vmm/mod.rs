//! The KVM virtual machine: memory, kernel loading, vCPU threads, buses and
//! devices, built in one linear function from a plain-data [`VmSpec`].

pub mod boot;
mod error;
pub mod mptable;
pub mod state;
pub mod vcpu;

use std::fs::File;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use serde::{Deserialize, Serialize};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::bus::lock;
use crate::devices::legacy::{ConsoleLog, Serial, I8042};
use crate::devices::virtio::block::{Block, Disk};
use crate::devices::virtio::console::{Console, ConsoleLimits};
use crate::devices::virtio::fs::device::Fs;
use crate::devices::virtio::fs::server::Server;
use crate::devices::virtio::mmio::{MmioTransport, TransportSnapshot, MMIO_SIZE, NOTIFY_OFFSET};
use crate::devices::virtio::net::{self, Net};
use crate::devices::virtio::{Interrupt, VirtioDevice};
use state::{VcpuState, VmState};
use vcpu::{Buses, Pause, VcpuStop};

pub use error::VmError;

/// Where virtio-mmio devices start in guest physical memory, and their IRQs.
const MMIO_BASE: u64 = 0xd000_0000;
const FIRST_IRQ: u32 = 5;
const SERIAL_PORT: u64 = 0x3f8;
const I8042_PORT: u64 = 0x60;
const TSS_ADDR: usize = 0xfffb_d000;

/// Everything that shapes a VM, as plain data.
#[derive(Debug, Clone, Serialize)]
pub struct VmSpec {
    pub kernel: PathBuf,
    #[serde(skip)]
    pub initramfs: Vec<u8>,
    /// Kernel parameters beyond the ones the VMM adds for its own devices.
    pub cmdline: String,
    /// Read-only drives (/dev/vda, /dev/vdb, …), empty at boot: each run
    /// inserts its disks with [`Vm::insert_disk`].
    pub drives: usize,
    pub vcpus: u8,
    pub mem_mib: u32,
    /// Copy the kernel log to stderr.
    pub verbose: bool,
    /// Names of the console ports (stream channels), in port-id order.
    pub ports: Vec<String>,
    /// A virtio-net NIC, after virtio-fs; its backend comes with the run.
    pub net: bool,
    /// What the console holds of the guest's at most. Host policy the
    /// guest never sees, so not part of the snapshot's key.
    #[serde(skip)]
    pub console_limits: ConsoleLimits,
}

/// The state of a paused VM, everything but its memory.
#[derive(Serialize, Deserialize)]
pub struct VmSnapshot {
    pub mem_size: u64,
    pub vm: VmState,
    pub vcpus: Vec<VcpuState>,
    pub devices: Vec<TransportSnapshot>,
}

/// Guest memory to start from: a snapshot's, mapped copy-on-write.
pub struct Restore<'a> {
    pub state: &'a VmSnapshot,
    pub file: File,
    /// Where guest memory starts in `file`.
    pub offset: u64,
}

/// A device together with the eventfds that carry its queue kicks.
pub struct QueueKick {
    pub device: usize,
    pub queue: usize,
    pub evt: EventFd,
}

struct VcpuHandle {
    thread: JoinHandle<()>,
    pause: Arc<Pause>,
}

/// A built VM, ready to run.
pub struct Vm {
    pub console: Arc<Mutex<MmioTransport<Console>>>,
    drives: Vec<Arc<Mutex<MmioTransport<Block>>>>,
    fs: Arc<Mutex<MmioTransport<Fs>>>,
    net: Option<Arc<Mutex<MmioTransport<Net>>>>,
    /// Every virtio device, indexed as `QueueKick::device`.
    pub virtio: Vec<Arc<Mutex<dyn VirtioSlot>>>,
    pub kicks: Vec<QueueKick>,
    /// Written when the guest powers off through the i8042 reset line.
    pub power_off: EventFd,
    /// Written when a vCPU thread stops; the reason is in `stop`.
    pub vcpu_stopped: EventFd,
    pub stop: Arc<Mutex<Option<VcpuStop>>>,
    pub log: Arc<Mutex<ConsoleLog>>,
    /// Host address of guest RAM, for memory accounting.
    guest_ram_host: u64,
    mem_size: u64,
    kvm: Kvm,
    vm: VmFd,
    mem: GuestMemoryMmap,
    vcpus: Vec<VcpuHandle>,
}

/// What the VM needs of a virtio device whatever its type: queue kicks
/// and snapshots.
pub trait VirtioSlot: Send {
    fn notify(&mut self, queue: usize);
    fn snapshot(&self) -> TransportSnapshot;
    fn restore(&mut self, state: &TransportSnapshot) -> Result<(), String>;
}

impl<D: VirtioDevice> VirtioSlot for MmioTransport<D> {
    fn notify(&mut self, queue: usize) {
        MmioTransport::notify(self, queue)
    }
    fn snapshot(&self) -> TransportSnapshot {
        MmioTransport::snapshot(self)
    }
    fn restore(&mut self, state: &TransportSnapshot) -> Result<(), String> {
        MmioTransport::restore(self, state)
    }
}

/// Places virtio-mmio devices: an MMIO window, an IRQ wired to an irqfd,
/// an ioeventfd per queue, and the kernel parameter that announces it.
struct Slots<'a> {
    vm: &'a VmFd,
    mem: &'a GuestMemoryMmap,
    buses: &'a mut Buses,
    cmdline: String,
    virtio: Vec<Arc<Mutex<dyn VirtioSlot>>>,
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

/// On an emulating host, the environment every guest program starts with
/// (under anything the config sets). CPUID runs natively there, so glibc
/// sees AVX and picks AVX2 string functions, but the guest kernel runs
/// with `noxsave` (XSAVE/XRSTOR can't be emulated) and saves only the
/// XMM halves of the vector registers when it switches processes: two
/// processes using YMM registers corrupt each other (zlib and liblzma
/// reported bad checksums on good archives under apt). glibc's SSE2
/// variants need no more than FXSAVE keeps.
pub fn emulated_host_env() -> Option<(&'static str, &'static str)> {
    host_is_emulating().then_some((
        "GLIBC_TUNABLES",
        "glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512VL,-AVX_Fast_Unaligned_Load",
    ))
}

/// Whether this host's KVM runs guest kernel code through its instruction
/// emulator (nested "PVM" KVM), which needs the kernel's workarounds.
pub fn host_is_emulating() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// Guest RAM: fresh anonymous memory, or a snapshot's file mapped
/// privately so that every VM restored from it shares its pages until
/// it writes to them.
fn guest_memory(spec: &VmSpec, restore: Option<&Restore>) -> Result<GuestMemoryMmap, VmError> {
    let mem_size = u64::from(spec.mem_mib.max(64)) << 20;
    if mem_size > MMIO_BASE {
        return Err(VmError::MemoryTooLarge(spec.mem_mib, MMIO_BASE >> 20));
    }
    let Some(restore) = restore else {
        return GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size as usize)])
            .map_err(|e| VmError::Memory(spec.mem_mib, e));
    };
    if restore.state.mem_size != mem_size {
        return Err(VmError::SnapshotShape(format!(
            "{} MiB of memory where the VM has {}",
            restore.state.mem_size >> 20,
            mem_size >> 20
        )));
    }
    let file = restore.file.try_clone().map_err(VmError::EventFd)?;
    let region = MmapRegionBuilder::new(mem_size as usize)
        .with_file_offset(FileOffset::new(file, restore.offset))
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
        .build()
        .map_err(VmError::MapSnapshot)?;
    let region = GuestRegionMmap::new(region, GuestAddress(0))
        .ok_or_else(|| VmError::SnapshotShape("memory region does not fit".into()))?;
    GuestMemoryMmap::from_regions(vec![region])
        .map_err(|e| VmError::SnapshotShape(format!("guest memory: {e}")))
}

/// Where vCPUs start: the kernel's entry point, or a snapshot's state.
enum VcpuStart<'a> {
    Boot(boot::BootEntry),
    Saved(&'a [VcpuState]),
}

/// Builds the VM described by `spec` and starts its vCPUs: booting the
/// kernel, or resuming a snapshot taken of a VM with the same spec.
pub fn build_and_start(spec: &VmSpec, restore: Option<Restore>) -> Result<Vm, VmError> {
    vcpu::init_kick_signal()?;
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
    let mem = guest_memory(spec, restore.as_ref())?;
    let mut guest_ram_host = 0;
    let mut mem_size = 0;
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
        mem_size += region.len();
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

    // virtio devices: the console first, then the drives in order, then virtio-fs.
    let mut slots = Slots {
        vm: &vm,
        mem: &mem,
        buses: &mut buses,
        cmdline: spec.cmdline.clone(),
        virtio: Vec::new(),
        kicks: Vec::new(),
    };
    let names: Vec<&str> = spec.ports.iter().map(String::as_str).collect();
    let console = slots.attach(Console::new(&names, spec.console_limits))?;
    let drives = (0..spec.drives)
        .map(|_| slots.attach(Block::new(None)))
        .collect::<Result<Vec<_>, _>>()?;
    let fs = slots.attach(Fs::new(guest_init::FS_TAG))?;
    let net = match spec.net {
        true => Some(slots.attach(Net::new(net::MAC, net::MTU))?),
        false => None,
    };
    let Slots {
        cmdline,
        virtio,
        kicks,
        ..
    } = slots;

    // Where the vCPUs start: the kernel's entry point, or the saved state.
    let start = match &restore {
        None => {
            let mut kernel = File::open(&spec.kernel)
                .map_err(|e| VmError::OpenKernel(spec.kernel.clone(), e))?;
            mptable::write(&mem, spec.vcpus)?;
            VcpuStart::Boot(boot::load(
                &mem,
                mem_size,
                &mut kernel,
                &cmdline,
                &spec.initramfs,
            )?)
        }
        Some(r) => {
            if r.state.devices.len() != virtio.len()
                || r.state.vcpus.len() != usize::from(spec.vcpus.max(1))
            {
                return Err(VmError::SnapshotShape(format!(
                    "{} devices and {} vCPUs where the VM has {} and {}",
                    r.state.devices.len(),
                    r.state.vcpus.len(),
                    virtio.len(),
                    spec.vcpus
                )));
            }
            state::restore_vm(&vm, &r.state.vm).map_err(VmError::RestoreState)?;
            for (device, saved) in virtio.iter().zip(&r.state.devices) {
                lock(device)
                    .restore(saved)
                    .map_err(VmError::SnapshotShape)?;
            }
            VcpuStart::Saved(&r.state.vcpus)
        }
    };

    // vCPUs.
    let buses = Arc::new(buses);
    let stop = Arc::new(Mutex::new(None));
    let vcpu_stopped = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
    // Every vCPU is set up before any runs, so a state KVM refuses leaves
    // no thread behind.
    let mut vcpu_fds = Vec::new();
    for id in 0..spec.vcpus.max(1) {
        let vcpu = vm.create_vcpu(u64::from(id)).map_err(VmError::Kvm)?;
        match &start {
            VcpuStart::Boot(entry) => vcpu::configure(&kvm, &vcpu, id, entry)?,
            VcpuStart::Saved(saved) => {
                vcpu.set_cpuid2(&vcpu::cpuid(&kvm, id)?)
                    .map_err(VmError::Kvm)?;
                state::restore_vcpu(&vcpu, &saved[usize::from(id)])
                    .map_err(VmError::RestoreState)?;
            }
        }
        vcpu_fds.push(vcpu);
    }
    let mut vcpus = Vec::new();
    for (id, vcpu) in vcpu_fds.into_iter().enumerate() {
        let pause = Arc::new(Pause::default());
        let (buses, stop, p) = (buses.clone(), stop.clone(), pause.clone());
        let stopped = vcpu_stopped.try_clone().map_err(VmError::EventFd)?;
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || vcpu::run(vcpu, buses, p, stop, stopped))
            .map_err(VmError::Thread)?;
        vcpus.push(VcpuHandle { thread, pause });
    }

    Ok(Vm {
        console,
        drives,
        fs,
        net,
        virtio,
        kicks,
        power_off,
        vcpu_stopped,
        stop,
        log,
        guest_ram_host,
        mem_size,
        kvm,
        vm,
        mem,
        vcpus,
    })
}

impl Vm {
    /// Puts `path` into drive `index`, telling the guest its new size.
    pub fn insert_disk(&self, index: usize, file: File) -> Result<(), VmError> {
        let drive = self.drives.get(index).ok_or(VmError::NoDrive(index))?;
        let disk = Disk::new(file, "cella").map_err(VmError::OpenDisk)?;
        lock(drive).device.insert(disk);
        Ok(())
    }

    /// Gives the virtio-fs device the host directories of this run.
    pub fn set_fs_server(&self, server: Server) {
        lock(&self.fs).device.set_server(server);
    }

    /// Connects the NIC to its backend (passt's end of a socket pair)
    /// through `filter`; the fd to watch for [`Vm::net_ready`],
    /// edge-triggered.
    pub fn set_net_backend(
        &self,
        stream: std::os::unix::net::UnixStream,
        filter: crate::devices::virtio::net_filter::Filter,
    ) -> Option<RawFd> {
        let net = self.net.as_ref()?;
        let mut net = lock(net);
        net.device.set_backend(stream, filter);
        net.device.backend_fd()
    }

    /// The NIC's backend has frames (or hung up): hands them to the guest.
    /// Whether the backend is still there.
    pub fn net_ready(&self) -> bool {
        match &self.net {
            Some(net) => {
                let mut net = lock(net);
                net.device.backend_ready();
                !net.device.backend_gone()
            }
            None => false,
        }
    }

    /// Stops every vCPU and reads the VM's state. The VM stays paused,
    /// with its memory as the state describes it, until [`Vm::resume`].
    pub fn pause(&self) -> Result<VmSnapshot, VmError> {
        let msrs = Arc::new(state::msr_list(&self.kvm).map_err(VmError::SaveState)?);
        let mut vcpus = Vec::new();
        for (i, v) in self.vcpus.iter().enumerate() {
            match v.pause.pause(&v.thread, msrs.clone()) {
                Some(state) => vcpus.push(*state.map_err(VmError::SaveState)?),
                None => return Err(VmError::VcpuGone(i)),
            }
        }
        // Kicks the guest made just before it stopped: serve them now, or
        // a restored guest would wait for them forever.
        for kick in &self.kicks {
            if kick.evt.read().is_ok() {
                lock(&self.virtio[kick.device]).notify(kick.queue);
            }
        }
        Ok(VmSnapshot {
            mem_size: self.mem_size,
            vm: state::save_vm(&self.vm).map_err(VmError::SaveState)?,
            vcpus,
            devices: self.virtio.iter().map(|d| lock(d).snapshot()).collect(),
        })
    }

    /// Lets the vCPUs run again after [`Vm::pause`].
    pub fn resume(&self) {
        for v in &self.vcpus {
            v.pause.resume();
        }
    }

    /// Guest RAM, for saving it while the VM is paused.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

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
