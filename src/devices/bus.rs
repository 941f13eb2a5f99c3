//! An address-range bus that dispatches PIO or MMIO accesses to devices.

use std::sync::{Arc, Mutex};

/// A device reached through a range of port or memory addresses.
pub trait BusDevice: Send {
    /// `offset` is relative to the start of the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

struct Entry {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// A set of non-overlapping ranges, each served by one device.
#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
#[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
pub struct OverlapError {
    pub base: u64,
    pub len: u64,
}

impl Bus {
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), OverlapError> {
        let end = base.saturating_add(len);
        if len == 0
            || self
                .entries
                .iter()
                .any(|e| base < e.base.saturating_add(e.len) && e.base < end)
        {
            return Err(OverlapError { base, len });
        }
        self.entries.push(Entry { base, len, device });
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(&Entry, u64)> {
        self.entries
            .iter()
            .find(|e| addr >= e.base && addr - e.base < e.len)
            .map(|e| (e, addr - e.base))
    }

    /// Reads from the device at `addr`; unclaimed addresses read as all ones,
    /// like a floating bus.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((e, offset)) => lock(&e.device).read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// Writes to the device at `addr`; writes to unclaimed addresses are dropped.
    pub fn write(&self, addr: u64, data: &[u8]) {
        if let Some((e, offset)) = self.find(addr) {
            lock(&e.device).write(offset, data);
        }
    }
}

/// Locks a device, recovering it if a thread panicked while holding it:
/// device state stays usable and the VM's own checks report real faults.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reg(u8);
    impl BusDevice for Reg {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0 + offset as u8);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn dispatches_by_range_and_rejects_overlaps() {
        let mut bus = Bus::default();
        bus.insert(0x10, 4, Arc::new(Mutex::new(Reg(1))))
            .expect("insert");
        assert!(bus.insert(0x12, 4, Arc::new(Mutex::new(Reg(0)))).is_err());
        bus.insert(0x14, 4, Arc::new(Mutex::new(Reg(9))))
            .expect("adjacent");
        let mut b = [0u8; 1];
        bus.read(0x11, &mut b);
        assert_eq!(b[0], 2);
        bus.write(0x14, &[5]);
        bus.read(0x14, &mut b);
        assert_eq!(b[0], 5);
        bus.read(0x100, &mut b);
        assert_eq!(b[0], 0xff);
    }
}
