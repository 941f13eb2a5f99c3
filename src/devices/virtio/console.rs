//! virtio-console with MULTIPORT: one port per stream (control, stdin,
//! stdout, stderr), so each stays separate and binary-clean, with EOF.
//!
//! The event loop feeds host data in with [`Console::send`], ends a stream
//! with [`Console::close`] and collects what the guest wrote with
//! [`Console::take_output`].
//!
//! The guest chooses every descriptor, so everything the device holds is
//! bounded: at most [`ConsoleLimits::buffer`] bytes are read of one chain,
//! a port's output stops being taken from the guest while
//! [`TX_HIGH_WATER`] bytes of it wait for the host (the guest's writers
//! block until the host catches up), control messages for the guest are
//! capped at [`ConsoleLimits::control_queue`] bytes, and no call serves
//! more chains than its queue holds, however fast the guest refills it.

use std::collections::VecDeque;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::{read_config_bytes, Interrupt, VirtioDevice};

pub const TYPE_CONSOLE: u32 = 3;
const F_MULTIPORT: u64 = 1 << 1;
const QUEUE_SIZE: u16 = 256;

const CONTROL_RX: usize = 2;
const CONTROL_TX: usize = 3;

// Control events (struct virtio_console_control.event).
const DEVICE_READY: u16 = 0;
const PORT_ADD: u16 = 1;
const PORT_READY: u16 = 3;
const PORT_OPEN: u16 = 6;
const PORT_NAME: u16 = 7;

/// Don't take more host input for a port while this much is still queued.
pub const RX_HIGH_WATER: usize = 1 << 20;

/// Don't take more of a port's output from the guest while this much of
/// it waits for the host.
pub const TX_HIGH_WATER: usize = 1 << 20;

/// Bounds on what a guest can make the console hold (the settings file's
/// `limits.console_buffer` and `limits.control_queue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleLimits {
    /// Bytes read of one buffer (descriptor chain) the guest hands the
    /// device; the rest of it is dropped.
    pub buffer: usize,
    /// Bytes of control messages queued for the guest driver.
    pub control_queue: usize,
}

/// The receive queue (host → guest) of a port.
fn rx_queue(port: usize) -> usize {
    if port == 0 {
        0
    } else {
        2 + 2 * port
    }
}

/// The port a queue belongs to and whether it is the port's transmit queue.
fn port_of_queue(queue: usize) -> Option<(usize, bool)> {
    match queue {
        0 | 1 => Some((0, queue == 1)),
        CONTROL_RX | CONTROL_TX => None,
        q => Some(((q - 2) / 2, q % 2 == 1)),
    }
}

fn control_msg(id: u32, event: u16, value: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(8);
    m.extend_from_slice(&id.to_le_bytes());
    m.extend_from_slice(&event.to_le_bytes());
    m.extend_from_slice(&value.to_le_bytes());
    m
}

#[derive(Default, Serialize, Deserialize)]
struct Port {
    name: String,
    /// Host data not yet placed in guest buffers.
    rx: VecDeque<u8>,
    /// The guest driver has set the port up (PORT_READY).
    ready: bool,
    /// A guest process has the port open. The guest driver drops data that
    /// arrives on a port nobody has open, so host data waits for this.
    guest_open: bool,
    /// We told the guest the host end is open.
    host_open: bool,
    /// The host end should close once `rx` drains.
    closing: bool,
    closed: bool,
}

/// What a snapshot keeps of the console besides its queues.
#[derive(Serialize, Deserialize)]
struct Saved {
    ports: Vec<Port>,
    control_out: VecDeque<Vec<u8>>,
}

#[derive(Serialize)]
struct SavedRef<'a> {
    ports: &'a [Port],
    control_out: &'a VecDeque<Vec<u8>>,
}

struct Live {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Interrupt,
}

pub struct Console {
    config: [u8; 12],
    queue_sizes: Vec<u16>,
    ports: Vec<Port>,
    control_out: VecDeque<Vec<u8>>,
    /// Bytes in `control_out`.
    control_bytes: usize,
    limits: ConsoleLimits,
    /// What the guest wrote and the host has not taken, by port, in order.
    output: VecDeque<(usize, Vec<u8>)>,
    /// Bytes of `output` per port.
    held: Vec<usize>,
    /// Ports whose transmit queue may hold buffers not taken yet.
    paused: Vec<bool>,
    /// The size of the first buffer cut to `limits.buffer`, until reported.
    oversized: Option<u64>,
    reported_oversized: bool,
    live: Option<Live>,
}

impl Console {
    /// A console with one port per name, in order (port ids 0, 1, …).
    pub fn new(names: &[&str], limits: ConsoleLimits) -> Self {
        let mut config = [0u8; 12];
        config[4..8].copy_from_slice(&(names.len() as u32).to_le_bytes());
        Console {
            config,
            queue_sizes: vec![QUEUE_SIZE; 2 * (names.len() + 1)],
            ports: names
                .iter()
                .map(|n| Port {
                    name: n.to_string(),
                    ..Port::default()
                })
                .collect(),
            control_out: VecDeque::new(),
            control_bytes: 0,
            limits,
            output: VecDeque::new(),
            held: vec![0; names.len()],
            paused: vec![false; names.len()],
            oversized: None,
            reported_oversized: false,
            live: None,
        }
    }

    /// Queues host data for the guest on `port`.
    pub fn send(&mut self, port: usize, data: &[u8]) {
        if let Some(p) = self.ports.get_mut(port) {
            if !p.closing {
                p.rx.extend(data);
            }
        }
        self.flush_rx(port);
    }

    /// Ends the host side of `port`: the guest reads EOF once the data
    /// already sent is consumed.
    pub fn close(&mut self, port: usize) {
        if let Some(p) = self.ports.get_mut(port) {
            p.closing = true;
        }
        self.flush_rx(port);
    }

    /// Bytes sent to `port` that the guest has not taken yet.
    pub fn pending(&self, port: usize) -> usize {
        self.ports.get(port).map_or(0, |p| p.rx.len())
    }

    /// Up to `budget` bytes of what the guest wrote, by port, in order;
    /// then takes more from ports that stopped at their high-water mark.
    pub fn take_output(&mut self, budget: usize) -> Vec<(usize, Vec<u8>)> {
        let mut taken = Vec::new();
        let mut left = budget;
        while left > 0 {
            let Some((port, mut data)) = self.output.pop_front() else {
                break;
            };
            if data.len() > left {
                let rest = data.split_off(left);
                self.output.push_front((port, rest));
            }
            left -= data.len();
            self.held[port] -= data.len();
            taken.push((port, data));
        }
        for port in 0..self.ports.len() {
            if self.paused[port] && self.held[port] < TX_HIGH_WATER {
                self.drain_tx(port);
            }
        }
        taken
    }

    /// Whether the guest wrote something the host has not taken yet.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Takes the guest's queued output buffers on every port, as far as
    /// the high-water mark lets it.
    pub fn drain_all(&mut self) {
        for port in 0..self.ports.len() {
            self.drain_tx(port);
        }
    }

    /// The size of a buffer the guest handed the console that was larger
    /// than [`ConsoleLimits::buffer`], the first time only.
    pub fn oversized_buffer(&mut self) -> Option<(u64, usize)> {
        if self.reported_oversized {
            return None;
        }
        let size = self.oversized?;
        self.reported_oversized = true;
        Some((size, self.limits.buffer))
    }

    /// Queues a control message for the guest driver, unless the queue is
    /// full: only a driver that never takes them fills it.
    fn queue_control(&mut self, msg: Vec<u8>) {
        if self.control_bytes + msg.len() <= self.limits.control_queue {
            self.control_bytes += msg.len();
            self.control_out.push_back(msg);
        }
    }

    fn signal(&self) {
        if let Some(live) = &self.live {
            live.interrupt.signal_used_queue();
        }
    }

    /// Moves pending host data into the guest's receive buffers.
    fn flush_rx(&mut self, port: usize) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let Some(p) = self.ports.get_mut(port) else {
            return;
        };
        if !p.ready || !p.guest_open {
            return;
        }
        let queue = &mut live.queues[rx_queue(port)];
        let mut used = false;
        // No more chains than the queue holds: a guest refilling it with
        // buffers too small to take anything must not keep us here.
        for _ in 0..queue.size() {
            if p.rx.is_empty() {
                break;
            }
            let Some(chain) = queue.pop_descriptor_chain(&live.mem) else {
                break;
            };
            let head = chain.head_index();
            let written = match Writer::new(&live.mem, chain) {
                Ok(mut w) => {
                    let n = w.available_bytes().min(p.rx.len());
                    let (a, b) = p.rx.as_slices();
                    let chunk: Vec<u8> = a.iter().chain(b).take(n).copied().collect();
                    match w.write_all(&chunk) {
                        Ok(()) => {
                            p.rx.drain(..n);
                            n
                        }
                        Err(_) => 0,
                    }
                }
                Err(_) => 0,
            };
            // An error means the used ring left guest memory; nothing to report to.
            let _ = queue.add_used(&live.mem, head, written as u32);
            used = true;
        }
        if used {
            self.signal();
        }
        self.maybe_close(port);
    }

    fn maybe_close(&mut self, port: usize) {
        let Some(p) = self.ports.get_mut(port) else {
            return;
        };
        if p.closing && !p.closed && p.ready && p.rx.is_empty() {
            p.closed = true;
            if p.host_open {
                p.host_open = false;
                self.queue_control(control_msg(port as u32, PORT_OPEN, 0));
                self.flush_control();
            }
        }
    }

    /// Takes the guest's output buffers of `port` while less than
    /// [`TX_HIGH_WATER`] of its output waits for the host.
    fn drain_tx(&mut self, port: usize) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let Some(queue) = live.queues.get_mut(rx_queue(port) + 1) else {
            return;
        };
        let mut used = false;
        // Until the ring is empty, unless the high-water mark or the
        // queue's size stops us first: then more may be waiting.
        self.paused[port] = true;
        for _ in 0..queue.size() {
            if self.held[port] >= TX_HIGH_WATER {
                break;
            }
            let Some(chain) = queue.pop_descriptor_chain(&live.mem) else {
                self.paused[port] = false;
                break;
            };
            let head = chain.head_index();
            let (data, size) = read_chain(&live.mem, chain, self.limits.buffer);
            if size > data.len() as u64 && self.oversized.is_none() {
                self.oversized = Some(size);
            }
            let _ = queue.add_used(&live.mem, head, 0);
            used = true;
            if !data.is_empty() {
                self.held[port] += data.len();
                match self.output.back_mut() {
                    Some((p, buf)) if *p == port => buf.extend_from_slice(&data),
                    _ => self.output.push_back((port, data)),
                }
            }
        }
        if used {
            self.signal();
        }
    }

    /// Handles the guest driver's control messages.
    fn handle_control(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let queue = &mut live.queues[CONTROL_TX];
        let mut msgs = Vec::new();
        for _ in 0..queue.size() {
            let Some(chain) = queue.pop_descriptor_chain(&live.mem) else {
                break;
            };
            let head = chain.head_index();
            let mut buf = [0u8; 8];
            if let Ok(mut r) = Reader::new(&live.mem, chain) {
                if r.read_exact(&mut buf).is_ok() {
                    msgs.push(buf);
                }
            }
            let _ = queue.add_used(&live.mem, head, 0);
        }
        if !msgs.is_empty() {
            self.signal();
        }
        for m in msgs {
            let id = u32::from_le_bytes([m[0], m[1], m[2], m[3]]) as usize;
            let event = u16::from_le_bytes([m[4], m[5]]);
            let value = u16::from_le_bytes([m[6], m[7]]);
            match event {
                DEVICE_READY if value == 1 => {
                    for port in 0..self.ports.len() {
                        self.queue_control(control_msg(port as u32, PORT_ADD, 0));
                    }
                }
                PORT_READY if value == 1 => self.port_ready(id),
                PORT_OPEN => {
                    if let Some(p) = self.ports.get_mut(id) {
                        p.guest_open = value == 1;
                    }
                    self.flush_rx(id);
                }
                _ => {}
            }
        }
        self.flush_control();
    }

    fn port_ready(&mut self, id: usize) {
        let Some(p) = self.ports.get_mut(id) else {
            return;
        };
        if p.ready {
            return;
        }
        p.ready = true;
        let mut name = control_msg(id as u32, PORT_NAME, 1);
        name.extend_from_slice(p.name.as_bytes());
        // A port whose host end already ended with nothing to read is never
        // opened: the guest sees EOF at once.
        let open = !(p.closing && p.rx.is_empty());
        p.host_open = open;
        self.queue_control(name);
        if open {
            self.queue_control(control_msg(id as u32, PORT_OPEN, 1));
        }
        self.flush_control();
        self.flush_rx(id);
    }

    /// Sends queued control messages into the guest's control buffers.
    fn flush_control(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let queue = &mut live.queues[CONTROL_RX];
        let mut used = false;
        for _ in 0..queue.size() {
            let Some(msg) = self.control_out.front() else {
                break;
            };
            let Some(chain) = queue.pop_descriptor_chain(&live.mem) else {
                break;
            };
            let head = chain.head_index();
            let written = match Writer::new(&live.mem, chain) {
                Ok(mut w) if w.available_bytes() >= msg.len() => {
                    w.write_all(msg).map_or(0, |()| msg.len())
                }
                _ => 0,
            };
            let _ = queue.add_used(&live.mem, head, written as u32);
            used = true;
            if written > 0 {
                self.control_bytes -= written;
                self.control_out.pop_front();
            }
        }
        if used {
            self.signal();
        }
    }
}

/// The first `max` bytes of a chain's readable buffers, and the size of
/// them all; an unreadable chain (outside guest memory) reads as empty.
fn read_chain(
    mem: &GuestMemoryMmap,
    chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
    max: usize,
) -> (Vec<u8>, u64) {
    let Ok(mut r) = Reader::new(mem, chain) else {
        return (Vec::new(), 0);
    };
    let size = r.available_bytes();
    let mut data = vec![0u8; size.min(max)];
    let n = r.read(&mut data).unwrap_or(0);
    data.truncate(n);
    (data, size as u64)
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        TYPE_CONSOLE
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        F_MULTIPORT
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>, interrupt: Interrupt) {
        self.live = Some(Live {
            mem,
            queues,
            interrupt,
        });
        // A restored device's rings may hold output whose kick was served
        // by the VM the snapshot was taken of: look at them on the next take.
        self.paused.fill(true);
    }
    fn queues(&self) -> Vec<&Queue> {
        self.live.iter().flat_map(|l| l.queues.iter()).collect()
    }
    fn save_state(&self) -> serde_json::Value {
        let saved = SavedRef {
            ports: &self.ports,
            control_out: &self.control_out,
        };
        serde_json::to_value(saved).unwrap_or(serde_json::Value::Null)
    }
    fn restore_state(&mut self, state: serde_json::Value) -> Result<(), String> {
        let saved: Saved =
            serde_json::from_value(state).map_err(|e| format!("console state: {e}"))?;
        let names = |ports: &[Port]| ports.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        if names(&saved.ports) != names(&self.ports) {
            return Err(format!(
                "console ports {:?} where the VM has {:?}",
                names(&saved.ports),
                names(&self.ports)
            ));
        }
        self.ports = saved.ports;
        self.control_out.clear();
        self.control_bytes = 0;
        for msg in saved.control_out {
            self.queue_control(msg);
        }
        Ok(())
    }
    fn reset(&mut self) {
        // What the guest queued before the reset is its output still: a
        // kernel going down resets its devices (virtio_dev_shutdown) right
        // after guest-init's final message was queued, maybe before this
        // host thread took it. Within the usual high-water bound.
        self.drain_all();
        // The driver starts over: it sets its ports up again and is told
        // their names and state anew. Host data not delivered yet and
        // guest output not taken yet stay.
        self.live = None;
        self.control_out.clear();
        self.control_bytes = 0;
        self.paused.fill(false);
        for p in &mut self.ports {
            p.ready = false;
            p.guest_open = false;
            p.host_open = false;
            p.closed = false;
        }
    }
    fn queue_notify(&mut self, queue: usize) {
        match (queue, port_of_queue(queue)) {
            (CONTROL_RX, _) => self.flush_control(),
            (CONTROL_TX, _) => self.handle_control(),
            (_, Some((port, true))) => self.drain_tx(port),
            (_, Some((port, false))) => self.flush_rx(port),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
