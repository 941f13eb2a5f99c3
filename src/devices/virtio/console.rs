//! virtio-console with MULTIPORT: one port per stream (control, stdin,
//! stdout, stderr), so each stays separate and binary-clean, with EOF.
//!
//! The event loop feeds host data in with [`Console::send`], ends a stream
//! with [`Console::close`] and collects what the guest wrote with
//! [`Console::take_output`].

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
    output: Vec<(usize, Vec<u8>)>,
    live: Option<Live>,
}

impl Console {
    /// A console with one port per name, in order (port ids 0, 1, …).
    pub fn new(names: &[&str]) -> Self {
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
            output: Vec::new(),
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

    /// What the guest wrote since the last call, by port, in order.
    pub fn take_output(&mut self) -> Vec<(usize, Vec<u8>)> {
        std::mem::take(&mut self.output)
    }

    /// Collects everything the guest has queued on every port.
    pub fn drain_all(&mut self) {
        for port in 0..self.ports.len() {
            self.drain_tx(port);
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
        while !p.rx.is_empty() {
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
                self.control_out
                    .push_back(control_msg(port as u32, PORT_OPEN, 0));
                self.flush_control();
            }
        }
    }

    /// Takes the guest's output buffers of `port`.
    fn drain_tx(&mut self, port: usize) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let queue = &mut live.queues[rx_queue(port) + 1];
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(&live.mem) {
            let head = chain.head_index();
            let mut data = Vec::new();
            if let Ok(mut r) = Reader::new(&live.mem, chain) {
                // A short read means a descriptor outside guest memory: keep what was read.
                let _ = r.read_to_end(&mut data);
            }
            let _ = queue.add_used(&live.mem, head, 0);
            used = true;
            if !data.is_empty() {
                match self.output.last_mut() {
                    Some((p, buf)) if *p == port => buf.extend_from_slice(&data),
                    _ => self.output.push((port, data)),
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
        while let Some(chain) = queue.pop_descriptor_chain(&live.mem) {
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
                        self.control_out
                            .push_back(control_msg(port as u32, PORT_ADD, 0));
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
        self.control_out.push_back(name);
        // A port whose host end already ended with nothing to read is never
        // opened: the guest sees EOF at once.
        if !(p.closing && p.rx.is_empty()) {
            p.host_open = true;
            self.control_out
                .push_back(control_msg(id as u32, PORT_OPEN, 1));
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
        while let Some(msg) = self.control_out.front() {
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
                self.control_out.pop_front();
            }
        }
        if used {
            self.signal();
        }
    }
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
        self.control_out = saved.control_out;
        Ok(())
    }
    fn reset(&mut self) {
        // The driver starts over: it sets its ports up again and is told
        // their names and state anew. Host data not delivered yet and
        // guest output not taken yet stay.
        self.live = None;
        self.control_out.clear();
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
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

    const WRITE: u16 = 2;
    const SIZE: u16 = 16;

    /// Plays the guest driver's side of the queues.
    struct Guest<'a> {
        mem: &'a GuestMemoryMmap,
        queues: Vec<MockSplitQueue<'a, GuestMemoryMmap>>,
        posted: Vec<u16>,
        seen: Vec<u16>,
        next_buf: u64,
    }

    impl<'a> Guest<'a> {
        fn new(mem: &'a GuestMemoryMmap, n: usize) -> Self {
            let queues = (0..n)
                .map(|i| MockSplitQueue::create(mem, GuestAddress(0x10000 * (i as u64 + 1)), SIZE))
                .collect();
            Guest {
                mem,
                queues,
                posted: vec![0; n],
                seen: vec![0; n],
                next_buf: 0x100000,
            }
        }

        /// Posts a buffer: device-writable (rx) of `len`, or readable holding `data`.
        fn post(&mut self, q: usize, len: u32, data: Option<&[u8]>) {
            let addr = self.next_buf;
            self.next_buf += 0x1000;
            let flags = match data {
                Some(d) => {
                    self.mem.write_slice(d, GuestAddress(addr)).expect("write");
                    0
                }
                None => WRITE,
            };
            let len = data.map_or(len, |d| d.len() as u32);
            let mq = &self.queues[q];
            let slot = self.posted[q] % SIZE;
            let desc = RawDescriptor::from(Descriptor::new(addr, len, flags, 0));
            mq.desc_table().store(slot, desc).expect("desc");
            mq.avail()
                .ring()
                .ref_at(slot as usize)
                .expect("ring")
                .store(slot);
            self.posted[q] += 1;
            mq.avail().idx().store(self.posted[q]);
        }

        /// Buffers the device has returned on `q` since the last call.
        fn used(&mut self, q: usize) -> Vec<Vec<u8>> {
            let mq = &self.queues[q];
            let idx = mq.used().idx().load();
            let mut out = Vec::new();
            while self.seen[q] != idx {
                let elem = mq
                    .used()
                    .ring()
                    .ref_at((self.seen[q] % SIZE) as usize)
                    .expect("ring")
                    .load();
                let desc = Descriptor::from(mq.desc_table().load(elem.id() as u16).expect("desc"));
                let mut buf = vec![0u8; elem.len() as usize];
                self.mem.read_slice(&mut buf, desc.addr()).expect("read");
                out.push(buf);
                self.seen[q] += 1;
            }
            out
        }
    }

    fn ctrl(id: u32, event: u16, value: u16) -> Vec<u8> {
        control_msg(id, event, value)
    }

    #[test]
    fn port_state_survives_a_snapshot_and_needs_the_same_ports() {
        let mut dev = Console::new(&["ctl", "in"]);
        dev.ports[0].ready = true;
        dev.ports[0].guest_open = true;
        dev.ports[1].rx.extend(b"held");
        dev.control_out.push_back(vec![1, 2, 3]);
        let saved = dev.save_state();

        let mut fresh = Console::new(&["ctl", "in"]);
        fresh.restore_state(saved.clone()).expect("restore");
        assert!(fresh.ports[0].ready && fresh.ports[0].guest_open);
        assert_eq!(fresh.pending(1), 4);
        assert_eq!(fresh.control_out, [vec![1, 2, 3]]);
        assert_eq!(fresh.save_state(), saved);

        let mut other = Console::new(&["ctl", "out"]);
        assert!(other.restore_state(saved).is_err());
    }

    #[test]
    fn multiport_handshake_data_eof_and_output() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x200000)]).expect("mem");
        let mut dev = Console::new(&["ctl", "in", "out"]);
        let n = dev.queue_max_sizes().len();
        assert_eq!(n, 8);
        let mut g = Guest::new(&mem, n);
        let queues = g
            .queues
            .iter()
            .map(|q| q.create_queue::<Queue>().expect("queue"))
            .collect();
        dev.activate(
            mem.clone(),
            queues,
            Interrupt::new(EventFd::new(0).expect("eventfd")),
        );

        // Host data can arrive before the guest is ready; it waits.
        dev.send(1, b"early ");
        for _ in 0..8 {
            g.post(CONTROL_RX, 64, None);
        }
        g.post(CONTROL_TX, 0, Some(&ctrl(u32::MAX, DEVICE_READY, 1)));
        dev.queue_notify(CONTROL_TX);
        assert_eq!(
            g.used(CONTROL_RX),
            vec![
                ctrl(0, PORT_ADD, 0),
                ctrl(1, PORT_ADD, 0),
                ctrl(2, PORT_ADD, 0)
            ]
        );

        // Port 1 gets receive buffers, then says it is ready.
        g.post(rx_queue(1), 4, None);
        g.post(rx_queue(1), 4, None);
        g.post(CONTROL_TX, 0, Some(&ctrl(1, PORT_READY, 1)));
        dev.queue_notify(CONTROL_TX);
        let mut name = ctrl(1, PORT_NAME, 1);
        name.extend_from_slice(b"in");
        assert_eq!(g.used(CONTROL_RX), vec![name, ctrl(1, PORT_OPEN, 1)]);
        // Data waits until a guest process opens the port: the driver
        // would drop it before.
        assert!(g.used(rx_queue(1)).is_empty());
        g.post(CONTROL_TX, 0, Some(&ctrl(1, PORT_OPEN, 1)));
        dev.queue_notify(CONTROL_TX);
        assert_eq!(g.used(rx_queue(1)), vec![b"earl".to_vec(), b"y ".to_vec()]);

        // More data waits for buffers; EOF is only sent once it is all taken.
        dev.send(1, b"late");
        dev.close(1);
        assert!(
            g.used(CONTROL_RX).is_empty(),
            "EOF before the data was read"
        );
        assert_eq!(dev.pending(1), 4);
        g.post(rx_queue(1), 64, None);
        dev.queue_notify(rx_queue(1));
        assert_eq!(g.used(rx_queue(1)), vec![b"late".to_vec()]);
        assert_eq!(g.used(CONTROL_RX), vec![ctrl(1, PORT_OPEN, 0)]);

        // Guest output is collected per port, in order.
        g.post(rx_queue(2) + 1, 0, Some(b"out-1 "));
        g.post(rx_queue(2) + 1, 0, Some(b"out-2"));
        g.post(1, 0, Some(b"{\"Hello\"}"));
        dev.drain_all();
        assert_eq!(
            dev.take_output(),
            vec![(0, b"{\"Hello\"}".to_vec()), (2, b"out-1 out-2".to_vec())]
        );
        assert!(dev.take_output().is_empty());
    }
}
