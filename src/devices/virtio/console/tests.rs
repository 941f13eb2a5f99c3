//! Tests of the console on hand-built queues: the driver's side is
//! played by [`Guest`], a hostile one included.

use super::*;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const SIZE: u16 = 16;

fn limits() -> ConsoleLimits {
    ConsoleLimits {
        buffer: 256 << 10,
        control_queue: 4 << 20,
    }
}

/// Plays the guest driver's side of the queues.
struct Guest<'a> {
    mem: &'a GuestMemoryMmap,
    queues: Vec<MockSplitQueue<'a, GuestMemoryMmap>>,
    size: u16,
    posted: Vec<u16>,
    seen: Vec<u16>,
    /// The next descriptor of each queue's table to use.
    next_desc: Vec<u16>,
    next_buf: u64,
}

impl<'a> Guest<'a> {
    fn new(mem: &'a GuestMemoryMmap, n: usize) -> Self {
        Self::with_queues(mem, n, SIZE, 0)
    }

    /// `n` queues of `size` entries, placed from `base` up.
    fn with_queues(mem: &'a GuestMemoryMmap, n: usize, size: u16, base: u64) -> Self {
        let queues = (0..n)
            .map(|i| {
                let at = base + 0x10000 * (i as u64 + 1);
                MockSplitQueue::create(mem, GuestAddress(at), size)
            })
            .collect();
        Guest {
            mem,
            queues,
            size,
            posted: vec![0; n],
            seen: vec![0; n],
            next_desc: vec![0; n],
            next_buf: base + 0x100000,
        }
    }

    /// Where the device puts queue `q`'s used ring: the mock's own one
    /// overlaps the end of its available ring when the queue has more
    /// than a few entries.
    fn used_ring(&self, q: usize) -> GuestAddress {
        GuestAddress(self.queues[q].start().0 + 0x8000)
    }

    /// The queues as the device gets them on activation.
    fn device_queues(&self) -> Vec<Queue> {
        (0..self.queues.len())
            .map(|q| {
                let mut queue = self.queues[q].create_queue::<Queue>().expect("queue");
                let used = self.used_ring(q).0;
                queue.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
                queue
            })
            .collect()
    }

    /// Posts a buffer: device-writable (rx) of `len`, or readable holding `data`.
    fn post(&mut self, q: usize, len: u32, data: Option<&[u8]>) {
        let addr = self.next_buf;
        let flags = match data {
            Some(d) => {
                self.mem.write_slice(d, GuestAddress(addr)).expect("write");
                0
            }
            None => WRITE,
        };
        let len = data.map_or(len, |d| d.len() as u32);
        self.next_buf += u64::from(len).next_multiple_of(0x1000).max(0x1000);
        self.post_chain(q, &[(addr, len, flags)]);
    }

    /// Posts one chain of descriptors (address, length, flags).
    fn post_chain(&mut self, q: usize, descs: &[(u64, u32, u16)]) {
        let mq = &self.queues[q];
        let head = self.next_desc[q];
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let index = (head + i as u16) % self.size;
            let (flags, next) = match i + 1 < descs.len() {
                true => (flags | NEXT, (index + 1) % self.size),
                false => (flags, 0),
            };
            let desc = RawDescriptor::from(Descriptor::new(addr, len, flags, next));
            mq.desc_table().store(index, desc).expect("desc");
        }
        self.next_desc[q] = (head + descs.len() as u16) % self.size;
        let slot = self.posted[q] % self.size;
        mq.avail()
            .ring()
            .ref_at(slot as usize)
            .expect("ring")
            .store(head);
        self.posted[q] = self.posted[q].wrapping_add(1);
        mq.avail().idx().store(self.posted[q]);
    }

    /// Buffers the device has returned on `q` since the last call.
    fn used(&mut self, q: usize) -> Vec<Vec<u8>> {
        let mq = &self.queues[q];
        let ring = self.used_ring(q);
        let idx: u16 = self.mem.read_obj(ring.unchecked_add(2)).expect("used idx");
        let mut out = Vec::new();
        while self.seen[q] != idx {
            let at = ring.unchecked_add(4 + 8 * u64::from(self.seen[q] % self.size));
            let id: u32 = self.mem.read_obj(at).expect("used id");
            let len: u32 = self.mem.read_obj(at.unchecked_add(4)).expect("used len");
            let desc = Descriptor::from(mq.desc_table().load(id as u16).expect("desc"));
            let mut buf = vec![0u8; len as usize];
            self.mem.read_slice(&mut buf, desc.addr()).expect("read");
            out.push(buf);
            self.seen[q] = self.seen[q].wrapping_add(1);
        }
        out
    }
}

fn interrupt() -> Interrupt {
    Interrupt::new(EventFd::new(0).expect("eventfd"))
}

fn ctrl(id: u32, event: u16, value: u16) -> Vec<u8> {
    control_msg(id, event, value)
}

#[test]
fn port_state_survives_a_snapshot_and_needs_the_same_ports() {
    let mut dev = Console::new(&["ctl", "in"], limits());
    dev.ports[0].ready = true;
    dev.ports[0].guest_open = true;
    dev.ports[1].rx.extend(b"held");
    dev.control_out.push_back(vec![1, 2, 3]);
    let saved = dev.save_state();

    let mut fresh = Console::new(&["ctl", "in"], limits());
    fresh.restore_state(saved.clone()).expect("restore");
    assert!(fresh.ports[0].ready && fresh.ports[0].guest_open);
    assert_eq!(fresh.pending(1), 4);
    assert_eq!(fresh.control_out, [vec![1, 2, 3]]);
    assert_eq!(fresh.save_state(), saved);

    let mut other = Console::new(&["ctl", "out"], limits());
    assert!(other.restore_state(saved).is_err());
}

#[test]
fn multiport_handshake_data_eof_and_output() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x200000)]).expect("mem");
    let mut dev = Console::new(&["ctl", "in", "out"], limits());
    let n = dev.queue_max_sizes().len();
    assert_eq!(n, 8);
    let mut g = Guest::new(&mem, n);
    dev.activate(mem.clone(), g.device_queues(), interrupt());

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
        dev.take_output(usize::MAX),
        vec![(0, b"{\"Hello\"}".to_vec()), (2, b"out-1 out-2".to_vec())]
    );
    assert!(dev.take_output(usize::MAX).is_empty());
}

/// Brings the console's ports up as the Linux driver does, with room for
/// `rx` bytes of host data on each port.
fn handshake(dev: &mut Console, g: &mut Guest<'_>, rx: u32) {
    for _ in 0..3 * dev.ports.len() {
        g.post(CONTROL_RX, 64, None);
    }
    g.post(CONTROL_TX, 0, Some(&ctrl(u32::MAX, DEVICE_READY, 1)));
    dev.queue_notify(CONTROL_TX);
    for port in 0..dev.ports.len() {
        g.post(rx_queue(port), rx, None);
        g.post(CONTROL_TX, 0, Some(&ctrl(port as u32, PORT_READY, 1)));
        g.post(CONTROL_TX, 0, Some(&ctrl(port as u32, PORT_OPEN, 1)));
    }
    dev.queue_notify(CONTROL_TX);
}

/// A hostile driver hands the console chains of 256 descriptors that all
/// cover the same guest memory: of 4 GiB each (virtio-queue ends a chain
/// at 4 GiB in total), and of 16 MiB each, 4 GiB in all over 16 MiB of
/// RAM. The old console read each whole chain into a Vec. This one keeps
/// `limits.buffer` bytes of each, and says so once.
#[test]
fn a_huge_aliased_chain_costs_at_most_the_buffer_limit() {
    // Guest memory large enough that every descriptor is valid; it is
    // reserved, not touched, beyond what the console reads.
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), (4 << 30) + (4 << 20))])
        .expect("mem");
    let mut dev = Console::new(&["ctl", "in", "out"], limits());
    let n = dev.queue_max_sizes().len();
    let mut g = Guest::with_queues(&mem, n, 256, 0);
    dev.activate(mem.clone(), g.device_queues(), interrupt());
    let out_tx = rx_queue(2) + 1;
    let four_gib = u32::MAX;
    let sixteen_mib = (16 << 20) - 1;
    let kept = limits().buffer;
    // (Each chain reuses the whole descriptor table: one at a time.)
    g.post_chain(out_tx, &[(0x10_0000, four_gib, 0); 256]);
    dev.queue_notify(out_tx);
    assert_eq!(dev.held[2], kept, "one buffer's limit per chain");
    g.post_chain(out_tx, &[(0x10_0000, sixteen_mib, 0); 256]);
    dev.queue_notify(out_tx);
    assert_eq!(dev.held[2], 2 * kept, "one buffer's limit per chain");
    let output = dev.take_output(usize::MAX);
    let total: usize = output.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(total, 2 * kept);
    assert_eq!(g.used(out_tx).len(), 2, "both chains are returned");
    assert_eq!(
        dev.oversized_buffer(),
        Some((u64::from(four_gib), kept)),
        "reported"
    );
    assert_eq!(dev.oversized_buffer(), None, "reported once");
}

/// A guest writing faster than the host takes its output fills the ring
/// and waits: the console holds at most the high-water mark (and one
/// buffer), and takes the rest as the host catches up, in order.
#[test]
fn output_stops_at_the_high_water_mark_and_resumes_in_order() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)]).expect("mem");
    let mut dev = Console::new(&["ctl", "in", "out"], limits());
    let n = dev.queue_max_sizes().len();
    let mut g = Guest::new(&mem, n);
    dev.activate(mem.clone(), g.device_queues(), interrupt());
    let out_tx = rx_queue(2) + 1;
    let chunk = 192 << 10;
    let written: Vec<u8> = (0..SIZE as usize * chunk)
        .map(|i| (i / 1000) as u8)
        .collect();
    for piece in written.chunks(chunk) {
        g.post(out_tx, 0, Some(piece));
    }
    dev.queue_notify(out_tx);
    assert!(dev.held[2] >= TX_HIGH_WATER && dev.held[2] < TX_HIGH_WATER + chunk);
    let taken_by_guest = g.used(out_tx).len();
    assert!(taken_by_guest < SIZE as usize, "the guest must wait");

    let mut read = Vec::new();
    for _ in 0..100 {
        for (port, data) in dev.take_output(64 << 10) {
            assert_eq!(port, 2);
            assert!(data.len() <= 64 << 10);
            read.extend_from_slice(&data);
        }
        assert!(dev.held[2] < TX_HIGH_WATER + chunk);
    }
    assert_eq!(read.len(), written.len());
    let first = read.iter().zip(&written).position(|(a, b)| a != b);
    assert!(first.is_none(), "out of order from byte {first:?}");
    assert_eq!(taken_by_guest + g.used(out_tx).len(), SIZE as usize);
    assert!(!dev.has_output());
}

/// A driver that repeats DEVICE_READY and never takes the answers makes
/// the console queue no more than `limits.control_queue` bytes for it.
#[test]
fn control_messages_for_the_guest_are_capped() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)]).expect("mem");
    let cap = ConsoleLimits {
        control_queue: 100,
        ..limits()
    };
    let mut dev = Console::new(&["ctl", "in", "out"], cap);
    let n = dev.queue_max_sizes().len();
    let mut g = Guest::new(&mem, n);
    dev.activate(mem.clone(), g.device_queues(), interrupt());
    for _ in 0..50 {
        for _ in 0..SIZE {
            g.post(CONTROL_TX, 0, Some(&ctrl(u32::MAX, DEVICE_READY, 1)));
        }
        dev.queue_notify(CONTROL_TX);
        g.used(CONTROL_TX);
    }
    let queued: usize = dev.control_out.iter().map(Vec::len).sum();
    assert_eq!(queued, dev.control_bytes);
    assert!(queued <= 100 && dev.control_out.len() == 12, "{queued}");
    // What was kept still goes out once the driver posts buffers.
    for _ in 0..SIZE {
        g.post(CONTROL_RX, 64, None);
    }
    dev.queue_notify(CONTROL_RX);
    assert_eq!(g.used(CONTROL_RX).len(), 12);
    assert_eq!(dev.control_bytes, 0);
}

/// A driver reset (status 0) stops the device: it lets go of the queues
/// and touches guest memory no more. A new driver brings it up again on
/// new queues and gets the host's data that was waiting.
#[test]
fn reset_then_activate_again() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x800000)]).expect("mem");
    let mut dev = Console::new(&["ctl", "in", "out"], limits());
    let n = dev.queue_max_sizes().len();
    let mut g = Guest::new(&mem, n);
    dev.activate(mem.clone(), g.device_queues(), interrupt());
    handshake(&mut dev, &mut g, 64);
    dev.send(1, b"first");
    assert_eq!(g.used(rx_queue(1)), vec![b"first".to_vec()]);

    // Written and queued, not yet taken by the host, when the guest's
    // kernel resets the device on its way down: still the guest's output.
    let out_tx = rx_queue(2) + 1;
    g.post(out_tx, 0, Some(b"last words"));
    dev.reset();
    assert_eq!(
        dev.take_output(usize::MAX),
        vec![(2, b"last words".to_vec())]
    );
    assert!(dev.queues().is_empty());
    assert!(dev.ports.iter().all(|p| !p.ready && !p.guest_open));
    // The old queues are not touched any more.
    g.used(out_tx);
    g.post(out_tx, 0, Some(b"after reset"));
    dev.queue_notify(out_tx);
    dev.drain_all();
    dev.send(1, b"waits");
    assert!(g.used(out_tx).is_empty() && !dev.has_output());
    assert_eq!(dev.pending(1), 5);

    // A new driver, new queues elsewhere in memory.
    let mut g2 = Guest::with_queues(&mem, n, SIZE, 0x400000);
    dev.activate(mem.clone(), g2.device_queues(), interrupt());
    handshake(&mut dev, &mut g2, 64);
    let control = g2.used(CONTROL_RX);
    assert_eq!(
        control[..3],
        [
            ctrl(0, PORT_ADD, 0),
            ctrl(1, PORT_ADD, 0),
            ctrl(2, PORT_ADD, 0)
        ]
    );
    assert_eq!(g2.used(rx_queue(1)), vec![b"waits".to_vec()]);
    g2.post(out_tx, 0, Some(b"new driver"));
    dev.queue_notify(out_tx);
    assert_eq!(
        dev.take_output(usize::MAX),
        vec![(2, b"new driver".to_vec())]
    );
}
