//! virtio devices behind the virtio-mmio transport (virtio 1.x, split rings).

pub mod block;
pub mod console;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod net_filter;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// VIRTIO_F_VERSION_1: the device speaks virtio 1.x, not the legacy layout.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// The guest-visible interrupt line of one virtio-mmio device: a status word
/// the guest reads and acknowledges, and an irqfd that raises the GSI.
#[derive(Clone)]
pub struct Interrupt {
    status: Arc<AtomicU32>,
    irqfd: Arc<EventFd>,
}

/// Interrupt status bit: a queue has new used buffers.
pub const INT_VRING: u32 = 1;
/// Interrupt status bit: the device's configuration space changed.
pub const INT_CONFIG: u32 = 2;

impl Interrupt {
    pub fn new(irqfd: EventFd) -> Self {
        Interrupt {
            status: Arc::new(AtomicU32::new(0)),
            irqfd: Arc::new(irqfd),
        }
    }

    /// Tells the guest that some queue has used buffers.
    pub fn signal_used_queue(&self) {
        self.status.fetch_or(INT_VRING, Ordering::SeqCst);
        // A failed write means the counter is saturated: the interrupt is
        // already pending.
        let _ = self.irqfd.write(1);
    }

    /// Tells the guest that the device configuration changed.
    pub fn signal_config(&self) {
        self.status.fetch_or(INT_CONFIG, Ordering::SeqCst);
        let _ = self.irqfd.write(1);
    }

    /// Puts back a saved status and, if anything is pending, raises the
    /// line again: an edge in flight when the snapshot was taken is lost.
    pub fn restore(&self, status: u32) {
        self.status.store(status, Ordering::SeqCst);
        if status != 0 {
            let _ = self.irqfd.write(1);
        }
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// The device side of a virtio device; the transport owns the registers.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    fn features(&self) -> u64;
    fn read_config(&self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK: the queues are configured and live.
    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>, interrupt: Interrupt);
    /// The guest kicked queue `queue` (through its ioeventfd).
    fn queue_notify(&mut self, queue: usize);
    /// The driver reset the device (status 0 after activation): drop the
    /// queues and whatever belongs to that driver's session, touch guest
    /// memory no more, and be ready for `activate` again.
    fn reset(&mut self);
    /// Bumped whenever the configuration space changes under the driver.
    fn config_generation(&self) -> u32 {
        0
    }
    /// The live queues (empty before activation), for a snapshot.
    fn queues(&self) -> Vec<&Queue>;
    /// Device state beyond the queues, for a snapshot.
    fn save_state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Puts back what [`VirtioDevice::save_state`] returned; called before
    /// `activate` on a restored device.
    fn restore_state(&mut self, _state: serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}

/// Writes `bytes` at `offset` of a config space `config` into `data`,
/// leaving out-of-range bytes zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let start = offset as usize;
    if start < config.len() {
        let n = data.len().min(config.len() - start);
        data[..n].copy_from_slice(&config[start..start + n]);
    }
}

/// Serves every available chain of `queue` with `serve` (which returns the
/// bytes it wrote to the guest), then interrupts the guest if it wants to
/// know. Notifications are re-enabled before the last look, so no kick
/// is lost between the last chain and going idle.
///
/// At most as many chains as the queue holds are served per call: a guest
/// that keeps refilling it from another vCPU must not hold the event loop.
/// What it adds meanwhile comes with kicks of its own.
pub fn drain_queue(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    interrupt: &Interrupt,
    mut serve: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
) {
    let mut used_any = false;
    for _ in 0..queue.size() {
        let chain = match queue.iter(mem) {
            Ok(mut it) => it.next(),
            Err(_) => None,
        };
        let Some(chain) = chain else {
            match queue.enable_notification(mem) {
                Ok(true) => continue,
                _ => break,
            }
        };
        let head = chain.head_index();
        let used = serve(chain);
        // A failure means the used ring is outside guest memory: the
        // driver broke the device and there is nobody to tell.
        let _ = queue.add_used(mem, head, used);
        used_any = true;
    }
    if used_any && queue.needs_notification(mem).unwrap_or(true) {
        interrupt.signal_used_queue();
    }
}
