//! The virtio-fs device: FUSE requests from the guest's virtqueues, served
//! by [`Server`] in cella's own process (no vhost-user daemon).
//!
//! The device exists from boot so that a snapshot's guest has it probed,
//! but serves nothing until a run gives it its shares with
//! [`Fs::set_server`]: guest-init mounts it only after the run spec.

use std::io::{Read, Write};

use virtio_queue::{DescriptorChain, Queue};
use virtio_queue::{Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::server::{self, Server};
use crate::devices::virtio::{drain_queue, read_config_bytes, Interrupt, VirtioDevice};

pub const TYPE_FS: u32 = 26;
/// Linux caps a request at (queue size - 4) pages: 1024 lets a READ or
/// WRITE reach the server's 1 MiB limit with room for a few in flight.
const QUEUE_SIZE: u16 = 1024;
/// Queue 0 is the high-priority queue (FORGET), queue 1 the requests.
const NUM_QUEUES: usize = 2;
/// The largest request we read: a WRITE of max_write bytes plus headers.
const MAX_REQUEST: usize = (1 << 20) + 4096;
/// Config space: a 36-byte tag and num_request_queues.
const CONFIG_LEN: usize = 40;

pub struct Fs {
    config: [u8; CONFIG_LEN],
    server: Option<Server>,
    live: Option<(GuestMemoryMmap, Vec<Queue>, Interrupt)>,
}

impl Fs {
    pub fn new(tag: &str) -> Self {
        let mut config = [0u8; CONFIG_LEN];
        let n = tag.len().min(36);
        config[..n].copy_from_slice(&tag.as_bytes()[..n]);
        config[36..40].copy_from_slice(&1u32.to_le_bytes());
        Fs {
            config,
            server: None,
            live: None,
        }
    }

    /// Serves the shares of `server` from now on.
    pub fn set_server(&mut self, server: Server) {
        self.server = Some(server);
    }

    fn process(&mut self, index: usize) {
        let Some((mem, queues, interrupt)) = self.live.as_mut() else {
            return;
        };
        let Some(queue) = queues.get_mut(index) else {
            return;
        };
        let server = &mut self.server;
        drain_queue(mem, queue, interrupt, |chain| {
            serve(mem, chain, server.as_mut())
        });
    }
}

/// Serves one request chain; returns the bytes written to the guest.
fn serve(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    server: Option<&mut Server>,
) -> u32 {
    let (Ok(mut reader), Ok(mut writer)) =
        (Reader::new(mem, chain.clone()), Writer::new(mem, chain))
    else {
        return 0;
    };
    let len = reader.available_bytes().min(MAX_REQUEST);
    let mut request = vec![0u8; len];
    if reader.read_exact(&mut request).is_err() {
        return 0;
    }
    let room = writer.available_bytes();
    let reply = match server {
        Some(server) => server.handle(&request, room),
        None => server::refusal(&request, libc::ENODEV),
    };
    match reply {
        Some(reply) if reply.len() <= room && writer.write_all(&reply).is_ok() => {
            reply.len() as u32
        }
        _ => 0,
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        TYPE_FS
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }
    fn features(&self) -> u64 {
        0
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>, interrupt: Interrupt) {
        self.live = Some((mem, queues, interrupt));
    }
    fn queue_notify(&mut self, queue: usize) {
        self.process(queue);
    }
    fn reset(&mut self) {
        // The shares stay: a driver that starts over sends FUSE_INIT again.
        self.live = None;
    }
    fn queues(&self) -> Vec<&Queue> {
        self.live
            .iter()
            .flat_map(|(_, queues, _)| queues.iter())
            .collect()
    }
}
