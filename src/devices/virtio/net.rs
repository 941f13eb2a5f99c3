//! virtio-net over a stream socket in passt's / QEMU's "stream" framing:
//! each Ethernet frame is preceded by its length (4 bytes, big-endian).
//! Guest checksum offload is finished here; one queue pair, no GSO.
//! Every frame the guest sends passes the backend's [`Filter`] first.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::net_filter::{fold, ones_sum, Filter, Verdict};
use super::{drain_queue, read_config_bytes, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};

pub const TYPE_NET: u32 = 1;
/// The MAC address of the guest's NIC.
pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The guest NIC's MTU: passt's default, the largest 802.3 frame, so bulk
/// TCP moves in 64 KiB frames and the guest needs no segmentation offloads.
pub const MTU: u16 = 65520;
const QUEUE_SIZE: u16 = 256;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;

const F_CSUM: u64 = 1 << 0;
const F_GUEST_CSUM: u64 = 1 << 1;
const F_MTU: u64 = 1 << 3;
const F_MAC: u64 = 1 << 5;

/// struct virtio_net_hdr_v1 (with num_buffers, as VERSION_1 requires).
const HDR_LEN: usize = 12;
const HDR_F_NEEDS_CSUM: u8 = 1;
const HDR_F_DATA_VALID: u8 = 2;

/// Largest frame either side may send: a 64 KiB IP packet, its Ethernet
/// header and some slack. A longer length on the wire is a protocol error.
const MAX_FRAME: usize = 65550 + 14;
/// Host bytes we buffer; always room for a whole frame and its length.
const RX_BUF: usize = 256 << 10;
/// Guest frames gathered before one write to the socket.
const TX_FLUSH: usize = 256 << 10;
/// How long (ms) a write waits for room in the socket before dropping.
const TX_TIMEOUT_MS: libc::c_int = 1000;
/// The filter's answers (resets) waiting for guest buffers; more are dropped.
const MAX_ANSWERS: usize = 64;

/// Host bytes read from the socket, `data[start..end]` not yet given to
/// the guest. Allocated on first use.
#[derive(Default)]
struct RxBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl RxBuf {
    /// The length prefix at the front, once it has arrived.
    fn next_len(&self) -> Option<usize> {
        let prefix = self.data[self.start..self.end].first_chunk::<4>()?;
        Some(u32::from_be_bytes(*prefix) as usize)
    }

    /// The frame of length `len` at the front, if all of it has arrived.
    fn frame(&self, len: usize) -> Option<&[u8]> {
        self.data[self.start..self.end].get(4..4 + len)
    }

    /// Reads what the socket has into the free space (which always holds
    /// a whole frame: the frames before were taken first).
    fn read_from(&mut self, mut stream: &UnixStream) -> io::Result<usize> {
        if self.data.is_empty() {
            self.data = vec![0; RX_BUF];
        }
        self.data.copy_within(self.start..self.end, 0);
        (self.end, self.start) = (self.end - self.start, 0);
        let n = stream.read(&mut self.data[self.end..])?;
        self.end += n;
        Ok(n)
    }
}

#[derive(Default)]
struct Backend {
    stream: Option<UnixStream>,
    gone: bool,
    rx: RxBuf,
    /// Frames dropped (host to guest, guest to host).
    dropped: (u64, u64),
    /// Guest frames in wire format, and where each one ends.
    tx: Vec<u8>,
    tx_ends: Vec<usize>,
    /// What the guest may send; closed until a backend is attached.
    filter: Filter,
    /// Frames the filter answered with, for the guest, before the host's.
    answers: VecDeque<Vec<u8>>,
}

impl Backend {
    /// The socket hung up or broke the protocol: close it.
    fn fail(&mut self) {
        self.stream = None;
        self.gone = true;
        self.rx = RxBuf::default();
    }

    /// Appends the frame of a transmit chain to the batch; false if dropped.
    fn push(&mut self, mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> bool {
        let Ok(mut reader) = Reader::new(mem, chain) else {
            return false;
        };
        let len = reader.available_bytes().saturating_sub(HDR_LEN);
        let mut hdr = [0u8; HDR_LEN];
        if len == 0 || len > MAX_FRAME || reader.read_exact(&mut hdr).is_err() {
            return false;
        }
        let start = self.tx.len();
        self.tx.extend_from_slice(&(len as u32).to_be_bytes());
        self.tx.resize(start + 4 + len, 0);
        let frame = &mut self.tx[start + 4..];
        let mut ok = reader.read_exact(frame).is_ok();
        if ok && hdr[0] & HDR_F_NEEDS_CSUM != 0 {
            let csum_start = u16::from_le_bytes([hdr[6], hdr[7]]) as usize;
            let csum_offset = u16::from_le_bytes([hdr[8], hdr[9]]) as usize;
            ok = fill_checksum(frame, csum_start, csum_offset);
        }
        ok = ok
            && match self.filter.outbound(frame) {
                Verdict::Pass => true,
                Verdict::Drop => false,
                Verdict::Refuse(answer) => {
                    if self.answers.len() < MAX_ANSWERS {
                        self.answers.push_back(answer);
                    }
                    false
                }
            };
        if ok {
            self.tx_ends.push(self.tx.len());
        } else {
            self.tx.truncate(start);
        }
        ok
    }

    /// Writes the batch, waiting a bounded time for room; on failure the
    /// frames not written are dropped.
    fn send(&mut self) {
        if let (Some(stream), false) = (&self.stream, self.tx.is_empty()) {
            let (written, result) = send_all(stream.as_raw_fd(), &self.tx);
            if let Err(e) = result {
                let sent = self.tx_ends.iter().filter(|&&end| end <= written).count();
                self.dropped.1 += (self.tx_ends.len() - sent) as u64;
                // Half a frame on the wire breaks the framing for good.
                let at_boundary = written == 0 || self.tx_ends.contains(&written);
                if e.kind() != io::ErrorKind::TimedOut || !at_boundary {
                    self.fail();
                }
            }
        }
        self.tx.clear();
        self.tx_ends.clear();
    }
}

/// Finishes a partial checksum as the driver asked: the field holds the
/// pseudo-header sum, the rest of the frame from `start` is added to it.
fn fill_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let at = start + offset;
    if start > frame.len() || at + 2 > frame.len() {
        return false;
    }
    // 0 and 0xffff are the same in ones' complement; 0 means "none" in UDP.
    let csum = match !fold(ones_sum(&frame[start..], 0)) {
        0 => 0xffff,
        c => c,
    };
    frame[at..at + 2].copy_from_slice(&csum.to_be_bytes());
    true
}

/// Writes all of `buf` to the non-blocking socket `fd`, waiting a bounded
/// time whenever it is full. Returns how much was written.
fn send_all(fd: RawFd, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut done = 0;
    while done < buf.len() {
        let rest = &buf[done..];
        // SAFETY: `rest` is valid for reads of `rest.len()` bytes for the
        // whole call, and send() does not keep the pointer. MSG_NOSIGNAL
        // turns a hung-up peer into EPIPE instead of SIGPIPE.
        let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
        if n > 0 {
            done += n as usize;
            continue;
        }
        if n == 0 {
            return (done, Err(io::ErrorKind::WriteZero.into()));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => match wait_writable(fd) {
                Err(e) if e.kind() != io::ErrorKind::Interrupted => return (done, Err(e)),
                _ => {}
            },
            _ => return (done, Err(err)),
        }
    }
    (done, Ok(()))
}

/// Waits until `fd` is writable (or has an error the next send reports).
fn wait_writable(fd: RawFd) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd that outlives the call.
    match unsafe { libc::poll(&mut pfd, 1, TX_TIMEOUT_MS) } {
        0 => Err(io::ErrorKind::TimedOut.into()),
        r if r < 0 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

struct Live {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Interrupt,
}

pub struct Net {
    config: [u8; 12],
    backend: Backend,
    live: Option<Live>,
}

impl Net {
    /// A NIC with this MAC address and MTU (offered with VIRTIO_NET_F_MTU),
    /// and no backend yet.
    pub fn new(mac: [u8; 6], mtu: u16) -> Self {
        let mut config = [0u8; 12];
        config[..6].copy_from_slice(&mac);
        // status at 6 stays zero: VIRTIO_NET_F_STATUS is not offered.
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&mtu.to_le_bytes());
        Net {
            config,
            backend: Backend::default(),
            live: None,
        }
    }

    /// Attaches the backend socket, and the filter of what the guest may
    /// send through it. Frames the guest sent before are dropped, as on
    /// an unplugged cable.
    pub fn set_backend(&mut self, stream: UnixStream, filter: Filter) {
        // A blocking socket would hang the event loop; the caller should
        // already have made it non-blocking, and failing here changes nothing.
        let _ = stream.set_nonblocking(true);
        let dropped = self.backend.dropped;
        self.backend = Backend {
            stream: Some(stream),
            dropped,
            filter,
            ..Backend::default()
        };
        self.process_rx();
    }

    /// The backend fd, for the caller's epoll (edge-triggered, EPOLLIN).
    pub fn backend_fd(&self) -> Option<RawFd> {
        self.backend.stream.as_ref().map(|s| s.as_raw_fd())
    }

    /// The backend became readable (or hung up): moves whole frames into
    /// the guest's receive buffers until the socket would block or the
    /// guest has no buffers left (its next rx kick resumes).
    pub fn backend_ready(&mut self) {
        self.process_rx();
    }

    /// Whether the backend hung up or broke the protocol; it is closed.
    pub fn backend_gone(&self) -> bool {
        self.backend.gone
    }

    /// Frames dropped so far: host to guest (no room in the guest's
    /// buffer), and guest to host (no backend, bad header, stuck socket).
    pub fn dropped(&self) -> (u64, u64) {
        self.backend.dropped
    }

    /// Delivers buffered host frames and reads more from the socket, until
    /// it would block or the guest runs out of receive buffers.
    fn process_rx(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let Some(queue) = live.queues.get_mut(RX_QUEUE).filter(|q| q.ready()) else {
            return;
        };
        let (mem, b) = (&live.mem, &mut self.backend);
        let (mut used_any, mut rearmed) = (false, false);
        loop {
            let len = match b.answers.front() {
                Some(answer) => answer.len(),
                None => match b.rx.next_len() {
                    Some(len) if len == 0 || len > MAX_FRAME => {
                        b.fail();
                        break;
                    }
                    Some(len) if b.rx.frame(len).is_some() => len,
                    _ => {
                        let Some(stream) = &b.stream else {
                            break;
                        };
                        match b.rx.read_from(stream) {
                            Ok(n) if n > 0 => continue,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            _ => b.fail(), // EOF, or a broken socket
                        }
                        break;
                    }
                },
            };
            let Some(chain) = queue.iter(mem).ok().and_then(|mut avail| avail.next()) else {
                // Out of buffers: the guest kicks when it adds some, unless
                // it added them before it could see that we want a kick.
                match queue.enable_notification(mem) {
                    Ok(true) if !rearmed => {
                        rearmed = true;
                        continue;
                    }
                    _ => break,
                }
            };
            rearmed = false;
            let head = chain.head_index();
            let answer = b.answers.pop_front();
            let frame: &[u8] = match &answer {
                Some(answer) => answer,
                None => {
                    let at = b.rx.start + 4;
                    b.rx.start = at + len;
                    let frame = b.rx.data.get(at..at + len).unwrap_or_default();
                    b.filter.inbound(frame);
                    frame
                }
            };
            let written = match Writer::new(mem, chain) {
                Ok(mut w) if w.available_bytes() >= HDR_LEN + len => {
                    let mut hdr = [0u8; HDR_LEN];
                    hdr[0] = HDR_F_DATA_VALID;
                    hdr[10] = 1; // num_buffers
                    let r = w.write_all(&hdr).and_then(|()| w.write_all(frame));
                    r.map_or(0, |()| HDR_LEN + len)
                }
                Ok(_) => {
                    // Too big for the buffer: drop it, keep the buffer.
                    b.dropped.0 += 1;
                    queue.go_to_previous_position();
                    continue;
                }
                Err(_) => 0,
            };
            b.dropped.0 += u64::from(written == 0);
            // An error means the used ring left guest memory; nobody to tell.
            let _ = queue.add_used(mem, head, written as u32);
            used_any = true;
        }
        if used_any && queue.needs_notification(mem).unwrap_or(true) {
            live.interrupt.signal_used_queue();
        }
    }

    /// Sends every frame the guest queued, in one write per batch.
    fn process_tx(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let Some(queue) = live.queues.get_mut(TX_QUEUE).filter(|q| q.ready()) else {
            return;
        };
        let (mem, b) = (&live.mem, &mut self.backend);
        drain_queue(mem, queue, &live.interrupt, |chain| {
            if b.stream.is_none() || !b.push(mem, chain) {
                b.dropped.1 += 1;
            } else if b.tx.len() >= TX_FLUSH {
                b.send();
            }
            0
        });
        b.send();
        if !self.backend.answers.is_empty() {
            self.process_rx();
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | F_MAC | F_MTU | F_CSUM | F_GUEST_CSUM
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
        // The socket may have become readable while there was no guest.
        self.process_rx();
    }
    fn queue_notify(&mut self, queue: usize) {
        match queue {
            RX_QUEUE => self.process_rx(),
            TX_QUEUE => self.process_tx(),
            _ => {}
        }
    }
    fn reset(&mut self) {
        // The backend stays connected; frames for the guest wait in it.
        self.live = None;
    }
    fn queues(&self) -> Vec<&Queue> {
        self.live.iter().flat_map(|l| l.queues.iter()).collect()
    }
    fn restore_state(&mut self, state: serde_json::Value) -> Result<(), String> {
        match state {
            serde_json::Value::Null => Ok(()),
            other => Err(format!("virtio-net keeps no state, got {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    const SIZE: u16 = 16;
    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// Plays the driver: `Ok(bytes)` is a device-readable buffer holding
    /// them, `Err(len)` a device-writable buffer of `len` bytes.
    struct Guest<'a> {
        mem: &'a GuestMemoryMmap,
        queues: Vec<MockSplitQueue<'a, GuestMemoryMmap>>,
        posted: [u16; 2],
        seen: [u16; 2],
        next_buf: u64,
    }

    impl<'a> Guest<'a> {
        fn new(mem: &'a GuestMemoryMmap) -> Self {
            let queues = (1..=2)
                .map(|i| MockSplitQueue::create(mem, GuestAddress(0x10000 * i), SIZE))
                .collect();
            let (posted, seen, next_buf) = ([0; 2], [0; 2], 0x100000);
            Guest {
                mem,
                queues,
                posted,
                seen,
                next_buf,
            }
        }

        /// Makes a chain of `bufs` available on queue `q` (one chain per
        /// 4 descriptor slots).
        fn post(&mut self, q: usize, bufs: &[Result<&[u8], u32>]) {
            let mq = &self.queues[q];
            let head = (self.posted[q] * 4) % SIZE;
            for (i, b) in bufs.iter().enumerate() {
                let addr = self.next_buf;
                self.next_buf += 0x1000;
                let (len, mut flags) = match b {
                    Ok(d) => (
                        self.mem
                            .write_slice(d, GuestAddress(addr))
                            .map(|_| d.len() as u32),
                        0,
                    ),
                    Err(n) => (Ok(*n), 2),
                };
                flags |= if i + 1 < bufs.len() { 1 } else { 0 };
                let desc = Descriptor::new(addr, len.expect("write"), flags, head + i as u16 + 1);
                let raw = RawDescriptor::from(desc);
                mq.desc_table().store(head + i as u16, raw).expect("desc");
            }
            let slot = (self.posted[q] % SIZE) as usize;
            mq.avail().ring().ref_at(slot).expect("ring").store(head);
            self.posted[q] += 1;
            mq.avail().idx().store(self.posted[q]);
        }

        /// The used length and head-buffer bytes of each chain returned on `q`.
        fn used(&mut self, q: usize) -> Vec<(u32, Vec<u8>)> {
            let mq = &self.queues[q];
            let mut out = Vec::new();
            while self.seen[q] != mq.used().idx().load() {
                let slot = (self.seen[q] % SIZE) as usize;
                let elem = mq.used().ring().ref_at(slot).expect("ring").load();
                let desc = Descriptor::from(mq.desc_table().load(elem.id() as u16).expect("desc"));
                let mut buf = vec![0u8; elem.len().min(desc.len()) as usize];
                self.mem.read_slice(&mut buf, desc.addr()).expect("read");
                out.push((elem.len(), buf));
                self.seen[q] += 1;
            }
            out
        }
    }

    /// Guest memory for a [`Guest`].
    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x200000)]).expect("mem")
    }

    /// An active NIC with a socket backend; returns the peer end and the irqfd.
    fn start(g: &Guest) -> (Net, UnixStream, EventFd) {
        let queues = g
            .queues
            .iter()
            .map(|q| q.create_queue::<Queue>().expect("queue"));
        let irq = EventFd::new(EFD_NONBLOCK).expect("eventfd");
        let mut net = Net::new(MAC, 1500);
        let interrupt = Interrupt::new(irq.try_clone().expect("clone"));
        net.activate(g.mem.clone(), queues.collect(), interrupt);
        let (ours, peer) = UnixStream::pair().expect("pair");
        peer.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        net.set_backend(ours, Filter::pass_all());
        (net, peer, irq)
    }

    fn tx_header(flags: u8, csum_start: u16, csum_offset: u16) -> Vec<u8> {
        let mut h = vec![flags, 0, 0, 0, 0, 0];
        h.extend_from_slice(&csum_start.to_le_bytes());
        h.extend_from_slice(&csum_offset.to_le_bytes());
        h.extend_from_slice(&[0, 0]);
        h
    }

    fn wire(frame: &[u8]) -> Vec<u8> {
        [&(frame.len() as u32).to_be_bytes()[..], frame].concat()
    }

    fn read_frame(mut peer: &UnixStream) -> Vec<u8> {
        let mut len = [0u8; 4];
        peer.read_exact(&mut len).expect("length");
        let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
        peer.read_exact(&mut frame).expect("frame");
        frame
    }

    #[test]
    fn config_space_has_mac_mtu_and_one_queue_pair() {
        let net = Net::new(MAC, 9000);
        let mut config = [0u8; 12];
        net.read_config(0, &mut config);
        assert_eq!(
            config,
            [0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0, 1, 0, 0x28, 0x23]
        );
        assert_eq!(net.features(), VIRTIO_F_VERSION_1 | 0x2b);
        assert_eq!(net.queue_max_sizes(), &[256, 256]);
        assert!(net.backend_fd().is_none() && !net.backend_gone());
    }

    #[test]
    fn a_transmitted_frame_reaches_the_socket_length_prefixed() {
        let mem = memory();
        let mut g = Guest::new(&mem);
        let (mut net, peer, irq) = start(&g);
        let frame: Vec<u8> = (0..60u8).collect();
        let first = [&tx_header(0, 0, 0)[..], &frame[..5]].concat();
        g.post(TX_QUEUE, &[Ok(&first), Ok(&frame[5..])]);
        net.queue_notify(TX_QUEUE);
        assert_eq!(read_frame(&peer), frame);
        assert_eq!(g.used(TX_QUEUE), [(0, vec![])]);
        assert!(irq.read().is_ok(), "the guest is told");
    }

    #[test]
    fn a_partial_checksum_is_finished_and_a_bad_offset_drops_the_frame() {
        let (src, dst, udp_len) = ([10, 0, 2, 15], [10, 0, 2, 2], 19u16);
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[
            8,
            0,
            0x45,
            0,
            0,
            20 + udp_len as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
        ]);
        f.extend_from_slice(&[src, dst].concat());
        f.extend_from_slice(&[4, 0xd2, 0, 53, 0, udp_len as u8]);
        // As Linux leaves it: the pseudo-header sum, not inverted.
        let pseudo = ones_sum(&src, ones_sum(&dst, 17 + u64::from(udp_len)));
        f.extend_from_slice(&fold(pseudo).to_be_bytes());
        f.extend_from_slice(b"hello, net!");
        assert_eq!(f.len(), 34 + udp_len as usize);

        let mem = memory();
        let mut g = Guest::new(&mem);
        let (mut net, peer, _irq) = start(&g);
        let bad = tx_header(HDR_F_NEEDS_CSUM, 34, f.len() as u16);
        g.post(TX_QUEUE, &[Ok(&bad), Ok(&f)]);
        g.post(TX_QUEUE, &[Ok(&tx_header(HDR_F_NEEDS_CSUM, 34, 6)), Ok(&f)]);
        net.queue_notify(TX_QUEUE);
        let sent = read_frame(&peer);
        assert_eq!((&sent[..40], &sent[42..]), (&f[..40], &f[42..]));
        assert_eq!(fold(ones_sum(&sent[34..], pseudo)), 0xffff, "{sent:x?}");
        assert_eq!(
            g.used(TX_QUEUE).len(),
            2,
            "the dropped chain is returned too"
        );
        assert_eq!(net.dropped(), (0, 1));
        peer.set_nonblocking(true).expect("nonblocking");
        assert!(
            (&peer).read(&mut [0u8; 1]).is_err(),
            "nothing else was sent"
        );
    }

    #[test]
    fn a_received_frame_lands_after_the_header() {
        let mem = memory();
        let mut g = Guest::new(&mem);
        let (mut net, mut peer, irq) = start(&g);
        g.post(RX_QUEUE, &[Err(2048)]);
        net.queue_notify(RX_QUEUE);
        let frame: Vec<u8> = (0..100u8).collect();
        peer.write_all(&wire(&frame)).expect("write");
        net.backend_ready();
        let header = [HDR_F_DATA_VALID, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(g.used(RX_QUEUE), [(112, [&header[..], &frame].concat())]);
        assert!(irq.read().is_ok());
    }

    #[test]
    fn frames_wait_for_rx_buffers_and_a_kick_resumes_reading() {
        let mem = memory();
        let mut g = Guest::new(&mem);
        let (mut net, mut peer, _irq) = start(&g);
        peer.write_all(&wire(b"first frame")).expect("write");
        net.backend_ready();
        assert!(g.used(RX_QUEUE).is_empty());
        // No new edge for this one: the kick must read it.
        peer.write_all(&wire(b"second frame")).expect("write");
        g.post(RX_QUEUE, &[Err(2048)]);
        g.post(RX_QUEUE, &[Err(2048)]);
        net.queue_notify(RX_QUEUE);
        let used: Vec<_> = g
            .used(RX_QUEUE)
            .into_iter()
            .map(|(_, b)| b[HDR_LEN..].to_vec())
            .collect();
        assert_eq!(used, [&b"first frame"[..], b"second frame"]);
    }

    #[test]
    fn a_frame_split_across_writes_is_reassembled() {
        let mem = memory();
        let mut g = Guest::new(&mem);
        let (mut net, mut peer, _irq) = start(&g);
        g.post(RX_QUEUE, &[Err(2048)]);
        let w = wire(b"split in two");
        for part in [&w[..4], &w[4..7]] {
            peer.write_all(part).expect("write");
            net.backend_ready();
            assert!(g.used(RX_QUEUE).is_empty());
        }
        peer.write_all(&w[7..]).expect("write");
        net.backend_ready();
        assert_eq!(g.used(RX_QUEUE)[0].1[HDR_LEN..], b"split in two"[..]);
    }

    #[test]
    fn an_oversized_frame_is_dropped_and_its_buffer_reused() {
        let mem = memory();
        let mut g = Guest::new(&mem);
        let (mut net, mut peer, _irq) = start(&g);
        g.post(RX_QUEUE, &[Err(100)]);
        peer.write_all(&[wire(&[7; 200]), wire(&[9; 50])].concat())
            .expect("write");
        net.backend_ready();
        let used = g.used(RX_QUEUE);
        assert_eq!((used.len(), used[0].0, net.dropped()), (1, 62, (1, 0)));
    }

    #[test]
    fn eof_and_bad_lengths_close_the_backend() {
        for bytes in [None, Some(0u32), Some(MAX_FRAME as u32 + 1)] {
            let mem = memory();
            let mut g = Guest::new(&mem);
            let (mut net, mut peer, _irq) = start(&g);
            g.post(RX_QUEUE, &[Err(2048)]);
            peer.write_all(&wire(b"delivered first")).expect("write");
            match bytes {
                None => drop(peer),
                Some(len) => peer.write_all(&len.to_be_bytes()).expect("write"),
            }
            net.backend_ready();
            assert!(
                net.backend_gone() && net.backend_fd().is_none(),
                "{bytes:?}"
            );
            assert_eq!(g.used(RX_QUEUE).len(), 1);
            // With no backend the guest's frames are consumed and dropped.
            g.post(TX_QUEUE, &[Ok(&tx_header(0, 0, 0)), Ok(&[1; 60])]);
            net.queue_notify(TX_QUEUE);
            assert_eq!((g.used(TX_QUEUE).len(), net.dropped()), (1, (0, 1)));
        }
    }

    #[test]
    fn a_stuck_peer_costs_a_bounded_wait_and_the_frames() {
        let mem = memory();
        let mut g = Guest::new(&mem);
        let (mut net, _peer, _irq) = start(&g);
        let mut ours = net.backend.stream.as_ref().expect("stream");
        while ours.write(&[0; 4096]).is_ok() {}
        g.post(TX_QUEUE, &[Ok(&tx_header(0, 0, 0)), Ok(&[1; 60])]);
        let started = Instant::now();
        net.queue_notify(TX_QUEUE);
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!((g.used(TX_QUEUE).len(), net.dropped()), (1, (0, 1)));
        assert!(!net.backend_gone(), "no half frame was written");
    }

    #[test]
    fn a_refused_frame_stays_here_and_its_reset_reaches_the_guest() {
        use crate::config::netpolicy::AddressGuard;
        let mem = memory();
        let mut g = Guest::new(&mem);
        let (mut net, peer, _irq) = start(&g);
        net.backend.filter = Filter::new(super::super::net_filter::FilterSpec {
            guest: [10, 0, 2, 15].into(),
            gateway: [10, 0, 2, 2].into(),
            nameserver: [10, 0, 2, 3].into(),
            guard: AddressGuard::default(),
            published: Vec::new(),
        });
        // A SYN from 10.0.2.15:40000 to the gateway (the host's loopback):8000.
        let mut syn = vec![0u8; 12];
        syn.extend_from_slice(&[8, 0, 0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]);
        syn.extend_from_slice(&[10, 0, 2, 15, 10, 0, 2, 2, 0x9c, 0x40, 0x1f, 0x40]);
        syn.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 2, 0xff, 0xff, 0, 0, 0, 0]);
        g.post(RX_QUEUE, &[Err(2048)]);
        g.post(TX_QUEUE, &[Ok(&tx_header(0, 0, 0)), Ok(&syn)]);
        net.queue_notify(TX_QUEUE);
        assert_eq!(net.dropped(), (0, 1));
        peer.set_nonblocking(true).expect("nonblocking");
        assert!(
            (&peer).read(&mut [0u8; 1]).is_err(),
            "nothing reached passt"
        );
        let rx = g.used(RX_QUEUE);
        let rst = &rx[0].1[HDR_LEN..];
        assert_eq!((rst.len(), rst[47]), (54, 0x14), "RST|ACK: {rst:x?}");
    }

    #[test]
    fn snapshots_keep_nothing_but_the_queues() {
        let mut net = Net::new(MAC, 1500);
        assert_eq!(net.save_state(), serde_json::Value::Null);
        assert!(net.restore_state(serde_json::Value::Null).is_ok());
        assert!(net.queues().is_empty());
    }
}
