//! Each virtio device (block, console, net, fs) behind its virtio-mmio
//! transport, driven as a hostile guest kernel would: any register
//! program (queue sizes and ring addresses, status, features, resets,
//! config space) and queue kicks, over 64 KiB of guest memory whose
//! rings, descriptors and buffers the fuzzer writes (see
//! `cella_fuzz::virtq`). Host-side events (a disk inserted, console
//! output taken, frames from the network backend) come in between.
//!
//! Anything a device writes goes to guest memory, a temporary disk file,
//! a socket pair or a temporary share.

#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use cella::config::netpolicy::AddressGuard;
use cella::devices::bus::BusDevice;
use cella::devices::virtio::block::{Block, Disk};
use cella::devices::virtio::console::{Console, ConsoleLimits};
use cella::devices::virtio::fs::device::Fs;
use cella::devices::virtio::fs::server::{Server, ServerOptions, ShareSpec};
use cella::devices::virtio::mmio::MmioTransport;
use cella::devices::virtio::net::Net;
use cella::devices::virtio::net_filter::{Filter, FilterSpec};
use cella::devices::virtio::{Interrupt, VirtioDevice};
use cella::hostfs::Dir;
use cella_fuzz::virtq::{self, Op};
use libfuzzer_sys::fuzz_target;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

fuzz_target!(|data: &[u8]| {
    let Some(input) = virtq::decode(data) else {
        return;
    };
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), virtq::MEM_SIZE)])
        .expect("guest memory");
    mem.write_slice(input.memory, GuestAddress(0))
        .expect("memory image");
    let interrupt = Interrupt::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
    let ops = &input.ops;
    match input.device {
        0 => {
            let mut t = MmioTransport::new(Block::new(Some(disk())), mem.clone(), interrupt);
            run(&mut t, ops, |block, op| match op.arg % 2 {
                0 => block.insert(disk()),
                _ => {
                    let mut config = [0u8; 8];
                    block.read_config(u64::from(op.value % 64), &mut config);
                }
            });
        }
        1 => {
            let limits = ConsoleLimits {
                buffer: 4096,
                control_queue: 4096,
            };
            let mut t = MmioTransport::new(
                Console::new(&guest_init::PORT_NAMES, limits),
                mem.clone(),
                interrupt,
            );
            let ports = guest_init::PORT_NAMES.len();
            run(&mut t, ops, |console, op| {
                let port = op.value as usize % ports;
                match op.arg % 6 {
                    0 => console.send(port, &op.value.to_le_bytes().repeat(op.arg as usize)),
                    1 => {
                        let _ = console.take_output(op.value as usize);
                    }
                    2 => console.close(port),
                    3 => console.drain_all(),
                    4 => {
                        let _ = console.oversized_buffer();
                    }
                    _ => {
                        let _ = (console.pending(port), console.has_output());
                    }
                }
            });
        }
        2 => {
            let (ours, mut peer) = UnixStream::pair().expect("socket pair");
            peer.set_nonblocking(true).expect("nonblocking");
            let mut net = Net::new([0x52, 0x54, 0, 0x12, 0x34, 0x56], 1500);
            // Memory's first byte: the user allows every address, or none.
            let allow: Vec<ipnet::Ipv4Net> = match input.memory.first() {
                Some(b) if b & 1 == 1 => vec![ipnet::Ipv4Net::default()],
                _ => Vec::new(),
            };
            let filter = Filter::new(FilterSpec {
                guest: [10, 0, 2, 15].into(),
                gateway: [10, 0, 2, 2].into(),
                nameserver: [10, 0, 2, 3].into(),
                guard: AddressGuard::new(&allow),
                published: vec![8080],
            });
            net.set_backend(ours, filter);
            let mut t = MmioTransport::new(net, mem.clone(), interrupt);
            let memory = input.memory;
            run(&mut t, ops, |net, op| {
                match op.arg % 3 {
                    // Frames from the backend (passt's framing: a 4-byte
                    // big-endian length, then the frame), cut from memory:
                    // value's low half is where, its high half how long.
                    0 => {
                        let at = (op.value & 0xffff) as usize;
                        let len = (op.value >> 16) as usize;
                        let bytes = memory.get(at..(at + len).min(memory.len()));
                        let _ = peer.write(bytes.unwrap_or_default());
                        net.backend_ready();
                    }
                    1 => net.backend_ready(),
                    _ => {
                        let _ = (net.dropped(), net.backend_gone(), net.backend_fd());
                    }
                }
                drain(&mut peer);
            });
            drain(&mut peer);
        }
        _ => {
            let base = tempfile::tempdir().expect("tempdir");
            let share = base.path().join("share");
            std::fs::create_dir(&share).expect("share");
            std::fs::write(share.join("file"), b"data").expect("file");
            let spec = ShareSpec::new(Dir::open(&share).expect("dir"), false, Vec::new())
                .expect("share spec");
            let options = ServerOptions {
                direct_io: true,
                timeout: Duration::from_secs(1),
                write_quota: 1 << 20,
            };
            let mut fs = Fs::new(guest_init::FS_TAG);
            fs.set_server(Server::new(vec![spec], options).expect("server"));
            let mut t = MmioTransport::new(fs, mem.clone(), interrupt);
            run(&mut t, ops, |fs, op| {
                let mut config = [0u8; 4];
                fs.read_config(u64::from(op.value % 48), &mut config);
            });
        }
    }
});

/// Plays the ops on the transport; `host` is the device's host side.
fn run<D: VirtioDevice>(t: &mut MmioTransport<D>, ops: &[Op], mut host: impl FnMut(&mut D, Op)) {
    for &op in ops {
        let offset = u64::from(op.arg) * 4;
        match op.kind {
            virtq::WRITE => t.write(offset, &op.value.to_le_bytes()),
            virtq::READ => {
                let mut v = [0u8; 4];
                t.read(offset, &mut v);
            }
            virtq::KICK => t.notify(op.value as usize % 16),
            _ => host(&mut t.device, op),
        }
    }
    // CELLA_FUZZ_DEBUG=1 when replaying an input: how far each queue got.
    if std::env::var_os("CELLA_FUZZ_DEBUG").is_some() {
        let used: Vec<_> = t.device.queues().iter().map(|q| q.next_used()).collect();
        let mut status = [0u8; 4];
        t.read(0x70, &mut status);
        eprintln!("status {status:?}, used per queue {used:?}");
    }
}

/// A read-only disk of 8 sectors, each filled with its number.
fn disk() -> Disk {
    let mut f = tempfile::tempfile().expect("tempfile");
    let data: Vec<u8> = (0..8 * 512u32).map(|i| (i / 512) as u8).collect();
    f.write_all(&data).expect("disk data");
    Disk::new(f, "cella-rootfs").expect("disk")
}

/// Reads whatever the device sent the backend, so its writes never stall.
fn drain(peer: &mut UnixStream) {
    let mut buf = [0u8; 1 << 16];
    while let Ok(n) = peer.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}
