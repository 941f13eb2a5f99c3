//! Emulated devices: the I/O buses, the legacy PC bits the kernel touches
//! (8250 UART, i8042 reset line) and the virtio-mmio devices.

pub mod bus;
pub mod legacy;
pub mod virtio;
