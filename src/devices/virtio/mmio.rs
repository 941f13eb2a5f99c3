//! The virtio-mmio transport (version 2): the register file the guest
//! driver programs, wrapping one [`VirtioDevice`].

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::devices::bus::BusDevice;

/// Size of one device's MMIO window.
pub const MMIO_SIZE: u64 = 0x1000;
/// Offset of the QueueNotify register, where ioeventfds are attached.
pub const NOTIFY_OFFSET: u64 = 0x50;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VENDOR: u32 = 0x4c4c_4543; // "CELL"

const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FAILED: u32 = 0x80;

/// One queue's registers and ring positions, as saved in a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueSnapshot {
    max_size: u16,
    size: u16,
    ready: bool,
    event_idx: bool,
    next_avail: u16,
    next_used: u16,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
}

impl From<QueueState> for QueueSnapshot {
    fn from(q: QueueState) -> Self {
        QueueSnapshot {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            event_idx: q.event_idx_enabled,
            next_avail: q.next_avail,
            next_used: q.next_used,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl TryFrom<&QueueSnapshot> for Queue {
    type Error = String;
    fn try_from(q: &QueueSnapshot) -> Result<Queue, String> {
        Queue::try_from(QueueState {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        })
        .map_err(|e| format!("bad queue: {e}"))
    }
}

/// A transport and its device, as saved in a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransportSnapshot {
    device_type: u32,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    activated: bool,
    interrupt_status: u32,
    queues: Vec<QueueSnapshot>,
    device: serde_json::Value,
}

pub struct MmioTransport<D: VirtioDevice> {
    pub device: D,
    mem: GuestMemoryMmap,
    interrupt: Interrupt,
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    activated: bool,
}

/// Fresh, unconfigured queues for `device`.
fn new_queues<D: VirtioDevice>(device: &D) -> Vec<Queue> {
    device
        .queue_max_sizes()
        .iter()
        // A queue of a power-of-two size up to 32768 is always valid.
        .filter_map(|&max| Queue::new(max).ok())
        .collect()
}

impl<D: VirtioDevice> MmioTransport<D> {
    pub fn new(device: D, mem: GuestMemoryMmap, interrupt: Interrupt) -> Self {
        let queues = new_queues(&device);
        MmioTransport {
            device,
            mem,
            interrupt,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            activated: false,
        }
    }

    /// Forwards a queue kick to the device once it is live.
    pub fn notify(&mut self, queue: usize) {
        if self.activated {
            self.device.queue_notify(queue);
        }
    }

    fn features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    /// The registers, queues and device state; the vCPUs must be paused.
    pub fn snapshot(&self) -> TransportSnapshot {
        let queues = if self.activated {
            self.device.queues()
        } else {
            self.queues.iter().collect()
        };
        TransportSnapshot {
            device_type: self.device.device_type(),
            queue_sel: self.queue_sel,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            status: self.status,
            activated: self.activated,
            interrupt_status: self.interrupt.status(),
            queues: queues.iter().map(|q| q.state().into()).collect(),
            device: self.device.save_state(),
        }
    }

    /// Puts a saved state into this freshly built transport, whose device
    /// must be of the same type and shape; a live device is activated again.
    pub fn restore(&mut self, s: &TransportSnapshot) -> Result<(), String> {
        if s.device_type != self.device.device_type()
            || s.queues.len() != self.device.queue_max_sizes().len()
        {
            return Err(format!(
                "device type {} with {} queues where the VM has type {} with {}",
                s.device_type,
                s.queues.len(),
                self.device.device_type(),
                self.device.queue_max_sizes().len()
            ));
        }
        let queues = s
            .queues
            .iter()
            .map(Queue::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        self.queue_sel = s.queue_sel;
        self.device_features_sel = s.device_features_sel;
        self.driver_features_sel = s.driver_features_sel;
        self.driver_features = s.driver_features;
        self.status = s.status;
        self.device.restore_state(s.device.clone())?;
        if s.activated {
            if !queues.iter().all(|q| !q.ready() || q.is_valid(&self.mem)) {
                return Err("a live queue lies outside guest memory".into());
            }
            self.activated = true;
            self.device
                .activate(self.mem.clone(), queues, self.interrupt.clone());
        } else {
            self.queues = queues;
        }
        self.interrupt.restore(s.interrupt_status);
        Ok(())
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// The driver wrote 0 to the status register: a live device stops
    /// (drops its queues, touches guest memory no more) and everything
    /// goes back to how it was before the driver came, so that the driver
    /// can set the queues up and activate the device again.
    fn reset(&mut self) {
        if self.activated {
            self.activated = false;
            self.device.reset();
        }
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.queues = new_queues(&self.device);
        self.interrupt.ack(u32::MAX);
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let becomes_ok = value & STATUS_DRIVER_OK != 0 && self.status & STATUS_DRIVER_OK == 0;
        self.status = value;
        if becomes_ok && !self.activated {
            if self
                .queues
                .iter()
                .all(|q| !q.ready() || q.is_valid(&self.mem))
            {
                self.activated = true;
                let queues = std::mem::take(&mut self.queues);
                self.device
                    .activate(self.mem.clone(), queues, self.interrupt.clone());
            } else {
                self.status |= STATUS_FAILED;
            }
        }
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let q = self.queues.get(self.queue_sel as usize);
        match offset {
            0x00 => MAGIC,
            0x04 => 2,
            0x08 => self.device.device_type(),
            0x0c => VENDOR,
            0x10 => match self.device_features_sel {
                0 => self.features() as u32,
                1 => (self.features() >> 32) as u32,
                _ => 0,
            },
            0x34 => q.map_or(0, |q| u32::from(q.max_size())),
            0x44 => q.map_or(0, |q| u32::from(q.ready())),
            0x60 => self.interrupt.status(),
            0x70 => self.status,
            0xfc => self.device.config_generation(),
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        // Queue layout can only change before the device is live.
        let live = self.activated;
        match offset {
            0x14 => self.device_features_sel = v,
            0x20 => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                }
                _ => {}
            },
            0x24 => self.driver_features_sel = v,
            0x30 => self.queue_sel = v,
            0x38 if !live => {
                if let Some(q) = self.selected() {
                    q.set_size(v as u16);
                }
            }
            0x44 if !live => {
                if let Some(q) = self.selected() {
                    q.set_ready(v == 1);
                }
            }
            0x64 => self.interrupt.ack(v),
            0x70 => self.set_status(v),
            0x80 | 0x84 | 0x90 | 0x94 | 0xa0 | 0xa4 if !live => {
                let (low, high) = if offset & 4 == 0 {
                    (Some(v), None)
                } else {
                    (None, Some(v))
                };
                if let Some(q) = self.selected() {
                    match offset & !4 {
                        0x80 => q.set_desc_table_address(low, high),
                        0x90 => q.set_avail_ring_address(low, high),
                        _ => q.set_used_ring_address(low, high),
                    }
                }
            }
            _ => {}
        }
    }
}

impl<D: VirtioDevice> BusDevice for MmioTransport<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= 0x100 {
            self.device.read_config(offset - 0x100, data);
        } else if data.len() == 4 {
            data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= 0x100 {
            self.device.write_config(offset - 0x100, data);
        } else if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            self.write_reg(offset, u32::from_le_bytes(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::EventFd;

    struct Dummy {
        activated: Arc<Mutex<Option<usize>>>,
        queues: Vec<Queue>,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 16]
        }
        fn features(&self) -> u64 {
            1 << 5
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[1, 2, 3, 4], offset, data);
        }
        fn activate(&mut self, _mem: GuestMemoryMmap, queues: Vec<Queue>, _i: Interrupt) {
            *self.activated.lock().expect("lock") = Some(queues.len());
            self.queues = queues;
        }
        fn queue_notify(&mut self, _queue: usize) {}
        fn reset(&mut self) {
            self.queues.clear();
        }
        fn queues(&self) -> Vec<&Queue> {
            self.queues.iter().collect()
        }
    }

    fn reg(t: &mut MmioTransport<Dummy>, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn transport(activated: &Arc<Mutex<Option<usize>>>) -> MmioTransport<Dummy> {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("mem");
        let irq = Interrupt::new(EventFd::new(0).expect("eventfd"));
        MmioTransport::new(
            Dummy {
                activated: activated.clone(),
                queues: Vec::new(),
            },
            mem,
            irq,
        )
    }

    #[test]
    fn driver_handshake_activates_device() {
        let activated = Arc::new(Mutex::new(None));
        let mut t = transport(&activated);
        assert_eq!(reg(&mut t, 0), MAGIC);
        assert_eq!(reg(&mut t, 8), 42);
        t.write(0x14, &1u32.to_le_bytes());
        assert_eq!(reg(&mut t, 0x10), 1, "VERSION_1 in the high word");
        for (q, base) in [(0u32, 0x1000u32), (1, 0x2000)] {
            t.write(0x30, &q.to_le_bytes());
            assert_eq!(reg(&mut t, 0x34), 16);
            t.write(0x38, &16u32.to_le_bytes());
            t.write(0x80, &base.to_le_bytes());
            t.write(0x90, &(base + 0x100).to_le_bytes());
            t.write(0xa0, &(base + 0x200).to_le_bytes());
            t.write(0x44, &1u32.to_le_bytes());
        }
        t.write(0x70, &(STATUS_DRIVER_OK | 3).to_le_bytes());
        assert_eq!(*activated.lock().expect("lock"), Some(2));
        let mut cfg = [0u8; 2];
        t.read(0x102, &mut cfg);
        assert_eq!(cfg, [3, 4]);

        // A snapshot restored into a fresh transport: live again, same registers.
        t.interrupt.signal_used_queue();
        let saved = t.snapshot();
        let again = Arc::new(Mutex::new(None));
        let mut r = transport(&again);
        r.restore(&saved).expect("restore");
        assert_eq!(*again.lock().expect("lock"), Some(2));
        assert_eq!(reg(&mut r, 0x70), STATUS_DRIVER_OK | 3);
        assert_eq!(reg(&mut r, 0x60), 1, "pending interrupt status kept");
        let json = |s: &TransportSnapshot| serde_json::to_value(s).expect("json");
        assert_eq!(json(&r.snapshot()), json(&saved));

        // A snapshot of another shape is refused.
        let mut other = saved.clone();
        other.queues.pop();
        assert!(transport(&again).restore(&other).is_err());
    }

    /// Sets queue `q` up at `base` and marks it ready.
    fn setup_queue(t: &mut MmioTransport<Dummy>, q: u32, base: u32) {
        t.write(0x30, &q.to_le_bytes());
        t.write(0x38, &16u32.to_le_bytes());
        t.write(0x80, &base.to_le_bytes());
        t.write(0x90, &(base + 0x100).to_le_bytes());
        t.write(0xa0, &(base + 0x200).to_le_bytes());
        t.write(0x44, &1u32.to_le_bytes());
    }

    #[test]
    fn reset_stops_the_device_and_lets_it_start_again() {
        let activated = Arc::new(Mutex::new(None));
        let mut t = transport(&activated);
        setup_queue(&mut t, 0, 0x1000);
        setup_queue(&mut t, 1, 0x2000);
        t.write(0x70, &(STATUS_DRIVER_OK | 3).to_le_bytes());
        assert!(t.activated && t.device.queues.len() == 2);
        t.interrupt.signal_used_queue();

        t.write(0x70, &0u32.to_le_bytes());
        assert!(!t.activated, "the transport forgot the device was live");
        assert!(t.device.queues.is_empty(), "the device kept its queues");
        assert_eq!((reg(&mut t, 0x70), reg(&mut t, 0x60)), (0, 0));
        // Queues are configurable again, and start unconfigured.
        t.write(0x30, &1u32.to_le_bytes());
        assert_eq!(reg(&mut t, 0x44), 0, "queue still ready after reset");
        *activated.lock().expect("lock") = None;
        setup_queue(&mut t, 0, 0x3000);
        t.write(0x70, &(STATUS_DRIVER_OK | 3).to_le_bytes());
        assert_eq!(*activated.lock().expect("lock"), Some(2));
        let addrs: Vec<bool> = t.device.queues.iter().map(|q| q.ready()).collect();
        assert_eq!(addrs, [true, false], "the new layout, not the old one");
    }
}
