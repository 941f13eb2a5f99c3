//! virtio-blk: a read-only disk backed by a host file (the rootfs image).
//!
//! A device can start empty (zero sectors) and get its disk later, with a
//! configuration-change interrupt: a VM restored from a snapshot has its
//! devices already probed, and each run inserts its own image.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use virtio_queue::{DescriptorChain, Queue};
use virtio_queue::{Reader, Writer};
use vm_memory::{ByteValued, GuestMemoryMmap};

use super::{drain_queue, read_config_bytes, Interrupt, VirtioDevice};

pub const TYPE_BLOCK: u32 = 2;
const QUEUE_SIZE: u16 = 256;
const SECTOR: u64 = 512;

const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// Segments per request the driver may use (the queue size minus the
/// header and status descriptors, as other VMMs offer).
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;

/// Largest single request we serve; Linux splits far below this.
const MAX_REQUEST: usize = 16 << 20;

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct RequestHeader {
    kind: u32,
    ioprio: u32,
    sector: u64,
}

// SAFETY: RequestHeader is repr(C), made of plain integers with no padding,
// so any byte pattern is a valid value.
unsafe impl ByteValued for RequestHeader {}

/// The disk image a block device reads.
pub struct Disk {
    file: File,
    sectors: u64,
    id: String,
}

impl Disk {
    pub fn new(file: File, id: &str) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Disk {
            file,
            sectors: len / SECTOR,
            id: id.to_string(),
        })
    }
}

pub struct Block {
    disk: Option<Disk>,
    config: [u8; 24],
    generation: u32,
    live: Option<(GuestMemoryMmap, Queue, Interrupt)>,
}

impl Block {
    /// A drive, empty until [`Block::insert`] when `disk` is None.
    pub fn new(disk: Option<Disk>) -> Self {
        let mut config = [0u8; 24];
        // seg_max at offset 12: without it Linux sends one 4 KiB segment
        // per request, and every request is emulated guest kernel work.
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        // blk_size at offset 20
        config[20..24].copy_from_slice(&4096u32.to_le_bytes());
        let mut block = Block {
            disk: None,
            config,
            generation: 0,
            live: None,
        };
        if let Some(disk) = disk {
            block.set_disk(disk);
        }
        block
    }

    fn set_disk(&mut self, disk: Disk) {
        self.config[..8].copy_from_slice(&disk.sectors.to_le_bytes());
        self.disk = Some(disk);
        self.generation = self.generation.wrapping_add(1);
    }

    /// Puts `disk` in the drive and tells a live driver its new size.
    pub fn insert(&mut self, disk: Disk) {
        self.set_disk(disk);
        if let Some((_, _, interrupt)) = &self.live {
            interrupt.signal_config();
        }
    }

    fn process(&mut self) {
        let Some((mem, queue, interrupt)) = self.live.as_mut() else {
            return;
        };
        let disk = &self.disk;
        drain_queue(mem, queue, interrupt, |chain| match disk {
            Some(disk) => handle_request(mem, chain, disk),
            None => fail_request(mem, chain),
        });
    }
}

/// Serves one request and returns how many bytes were written to the guest.
fn handle_request(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    disk: &Disk,
) -> u32 {
    let (Ok(mut reader), Ok(mut writer)) =
        (Reader::new(mem, chain.clone()), Writer::new(mem, chain))
    else {
        return 0;
    };
    let Some(data_len) = writer.available_bytes().checked_sub(1) else {
        return 0; // no room even for the status byte
    };
    let Ok(mut status_writer) = writer.split_at(data_len) else {
        return 0;
    };
    let status = match reader.read_obj::<RequestHeader>() {
        Ok(header) => execute(header, &mut writer, disk),
        Err(_) => S_IOERR,
    };
    if status_writer.write_all(&[status]).is_err() {
        return 0;
    }
    (writer.bytes_written() + 1) as u32
}

/// Answers a request to an empty drive with an I/O error.
fn fail_request(mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> u32 {
    let Ok(mut writer) = Writer::new(mem, chain) else {
        return 0;
    };
    let Some(data_len) = writer.available_bytes().checked_sub(1) else {
        return 0;
    };
    match writer.split_at(data_len) {
        Ok(mut status) => status.write_all(&[S_IOERR]).map_or(0, |()| 1),
        Err(_) => 0,
    }
}

fn execute(header: RequestHeader, data: &mut Writer<'_>, disk: &Disk) -> u8 {
    match header.kind {
        T_IN => {
            let len = data.available_bytes();
            let end = header
                .sector
                .checked_mul(SECTOR)
                .and_then(|start| start.checked_add(len as u64));
            match end {
                Some(end) if end <= disk.sectors * SECTOR && len <= MAX_REQUEST => {
                    let mut buf = vec![0u8; len];
                    let ok = disk
                        .file
                        .read_exact_at(&mut buf, header.sector * SECTOR)
                        .is_ok()
                        && data.write_all(&buf).is_ok();
                    if ok {
                        S_OK
                    } else {
                        S_IOERR
                    }
                }
                _ => S_IOERR,
            }
        }
        T_OUT => S_IOERR, // the device is read-only (VIRTIO_BLK_F_RO)
        T_FLUSH => S_OK,
        T_GET_ID => {
            let mut id = [0u8; 20];
            let n = disk.id.len().min(20);
            id[..n].copy_from_slice(&disk.id.as_bytes()[..n]);
            let n = id.len().min(data.available_bytes());
            match data.write_all(&id[..n]) {
                Ok(()) => S_OK,
                Err(_) => S_IOERR,
            }
        }
        _ => S_UNSUPP,
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        F_SEG_MAX | F_RO | F_BLK_SIZE | F_FLUSH
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn activate(&mut self, mem: GuestMemoryMmap, mut queues: Vec<Queue>, interrupt: Interrupt) {
        if let Some(queue) = queues.pop() {
            self.live = Some((mem, queue, interrupt));
        }
    }
    fn queue_notify(&mut self, _queue: usize) {
        self.process();
    }
    fn reset(&mut self) {
        // The disk stays in the drive; only the driver's queue goes.
        self.live = None;
    }
    fn config_generation(&self) -> u32 {
        self.generation
    }
    fn queues(&self) -> Vec<&Queue> {
        self.live.iter().map(|(_, q, _)| q).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;

    fn disk() -> Disk {
        let mut f = tempfile::tempfile().expect("tempfile");
        let data: Vec<u8> = (0..8 * 512u32).map(|i| (i / 512) as u8).collect();
        f.write_all(&data).expect("write");
        Disk::new(f, "cella-rootfs").expect("disk")
    }

    fn desc(addr: u64, len: u32, flags: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
    }

    /// Builds a request chain (header, data, status) and serves it.
    fn run(kind: u32, sector: u64, data_len: u32) -> (GuestMemoryMmap, u32, u8) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20000)]).expect("mem");
        let header = RequestHeader {
            kind,
            ioprio: 0,
            sector,
        };
        mem.write_obj(header, GuestAddress(0x8000)).expect("header");
        let q = MockSplitQueue::new(&mem, 16);
        let mut descs = vec![desc(0x8000, 16, F_NEXT)];
        if data_len > 0 {
            descs.push(desc(0x9000, data_len, F_NEXT | F_WRITE));
        }
        descs.push(desc(0xa000, 1, F_WRITE));
        mem.write_obj(0xffu8, GuestAddress(0xa000)).expect("status");
        let chain = q.build_desc_chain(&descs).expect("chain");
        let used = handle_request(&mem, chain, &disk());
        let status: u8 = mem.read_obj(GuestAddress(0xa000)).expect("status");
        (mem, used, status)
    }

    #[test]
    fn an_empty_drive_fails_reads_until_a_disk_is_inserted() {
        let mut block = Block::new(None);
        let capacity = |b: &Block| {
            let mut c = [0u8; 8];
            b.read_config(0, &mut c);
            u64::from_le_bytes(c)
        };
        assert_eq!(capacity(&block), 0);
        let mut seg_max = [0u8; 4];
        block.read_config(12, &mut seg_max);
        assert_eq!(u32::from_le_bytes(seg_max), SEG_MAX);
        let generation = block.config_generation();

        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20000)]).expect("mem");
        let q = MockSplitQueue::new(&mem, 16);
        mem.write_obj(0xffu8, GuestAddress(0xa000)).expect("status");
        let chain = q
            .build_desc_chain(&[
                desc(0x8000, 16, F_NEXT),
                desc(0x9000, 512, F_NEXT | F_WRITE),
                desc(0xa000, 1, F_WRITE),
            ])
            .expect("chain");
        assert_eq!(fail_request(&mem, chain), 1);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0xa000)).expect("status"),
            S_IOERR
        );

        block.insert(disk());
        assert_eq!(capacity(&block), 8);
        assert_ne!(
            block.config_generation(),
            generation,
            "the driver must re-read"
        );
    }

    #[test]
    fn read_returns_the_sectors_asked_for() {
        let (mem, used, status) = run(T_IN, 3, 1024);
        assert_eq!((used, status), (1025, S_OK));
        let mut buf = [0u8; 1024];
        mem.read_slice(&mut buf, GuestAddress(0x9000))
            .expect("read");
        assert!(buf[..512].iter().all(|&b| b == 3) && buf[512..].iter().all(|&b| b == 4));
    }

    #[test]
    fn read_past_the_end_is_an_io_error() {
        assert_eq!(run(T_IN, 7, 1024).2, S_IOERR);
        assert_eq!(run(T_IN, u64::MAX / 256, 512).2, S_IOERR);
    }

    #[test]
    fn writes_fail_flush_succeeds_unknown_is_unsupported() {
        assert_eq!(run(T_OUT, 0, 512).2, S_IOERR);
        assert_eq!(run(T_FLUSH, 0, 0).2, S_OK);
        assert_eq!(run(99, 0, 0).2, S_UNSUPP);
    }

    #[test]
    fn get_id_names_the_disk() {
        let (mem, used, status) = run(T_GET_ID, 0, 20);
        assert_eq!((used, status), (21, S_OK));
        let mut id = [0u8; 12];
        mem.read_slice(&mut id, GuestAddress(0x9000)).expect("read");
        assert_eq!(&id, b"cella-rootfs");
    }

    /// A driver reset drops the queue: kicks touch guest memory no more,
    /// and a new driver's queue works once activated.
    #[test]
    fn reset_then_activate_again() {
        use virtio_queue::QueueT;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x40000)]).expect("mem");
        let irq = || Interrupt::new(vmm_sys_util::eventfd::EventFd::new(0).expect("eventfd"));
        let header = RequestHeader {
            kind: T_IN,
            ioprio: 0,
            sector: 2,
        };
        mem.write_obj(header, GuestAddress(0x8000)).expect("header");
        let linked = |addr, len, flags, next| {
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
        };
        let request = [
            linked(0x8000, 16, F_NEXT, 1),
            linked(0x9000, 512, F_NEXT | F_WRITE, 2),
            linked(0xa000, 1, F_WRITE, 0),
        ];
        let mut block = Block::new(Some(disk()));
        let old = MockSplitQueue::create(&mem, GuestAddress(0x10000), 16);
        block.activate(mem.clone(), vec![old.create_queue().expect("queue")], irq());
        block.reset();
        assert!(block.queues().is_empty());
        old.add_desc_chains(&request, 0).expect("chain");
        block.queue_notify(0);
        assert_eq!(
            old.used().idx().load(),
            0,
            "a reset device served a request"
        );

        let new = MockSplitQueue::create(&mem, GuestAddress(0x20000), 16);
        new.add_desc_chains(&request, 0).expect("chain");
        let queue: Queue = new.create_queue().expect("queue");
        assert!(queue.ready());
        block.activate(mem.clone(), vec![queue], irq());
        block.queue_notify(0);
        assert_eq!(new.used().idx().load(), 1);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0xa000)).expect("status"),
            S_OK
        );
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x9000)).expect("data"), 2);
    }

    #[test]
    fn chain_without_status_byte_uses_nothing() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20000)]).expect("mem");
        let q = MockSplitQueue::new(&mem, 16);
        let chain = q.build_desc_chain(&[desc(0x8000, 16, 0)]).expect("chain");
        assert_eq!(handle_request(&mem, chain, &disk()), 0);
    }
}
