//! Writes the seed corpus of every fuzz target (fuzz/corpus/NAME/) from
//! cella's own encoders: FUSE structs, guest-init's messages and export
//! records, a driver's virtqueues (virtio-queue's MockSplitQueue), tar
//! archives, snapshot state, OCI documents and the YAML of the README.
//! The files are committed; run this again when an input format changes:
//!
//!     cd fuzz && cargo run --release --features seeds --bin seeds -- corpus
//!
//! (after scripts/fuzz.sh 0, with its RUSTFLAGS and --target, to reuse
//! its build and Cargo.lock).

use std::io::Write;
use std::path::{Path, PathBuf};

use cella::devices::virtio::fs::fuse::{self, InHeader, Wire};
use cella_fuzz::virtq::{self, Op};
use cella_fuzz::{fuse_input, oci_docs};
use guest_init::{encode, ExportEntry, ExportKind, ExportRecord, GuestMsg};
use sha2::{Digest, Sha256};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

// Links libFuzzer's coverage callbacks, which the instrumented code calls
// (libFuzzer's own main is not linked: this file has one).
use libfuzzer_sys as _;

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let readme = std::fs::read_to_string("../README.md").expect("README.md");
    let config = std::fs::read_to_string("../cella.yaml").expect("cella.yaml");
    let targets: [(&str, Vec<Vec<u8>>); 9] = [
        ("fuse_server", fuse_seeds()),
        ("virtqueue", virtqueue_seeds()),
        ("control_protocol", control_seeds()),
        ("build_export", export_seeds()),
        ("tar_import", tar_seeds()),
        ("config_yaml", yaml_seeds(&readme, &config)),
        ("snapshot_load", snapshot_seeds()),
        ("oci_image", oci_seeds()),
        ("project_state", project_state_seeds()),
    ];
    for (name, seeds) in targets {
        let dir = out.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for (i, seed) in seeds.iter().enumerate() {
            write(&dir, i, seed);
        }
        println!("{name}: {} seeds", seeds.len());
    }
}

fn write(dir: &Path, i: usize, bytes: &[u8]) {
    let hash = hex::encode(&Sha256::digest(bytes)[..8]);
    std::fs::write(dir.join(format!("seed-{i:02}-{hash}")), bytes).expect("seed");
}

/// A NUL-terminated name.
fn cs(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn init_in() -> Vec<u8> {
    fuse::InitIn {
        major: 7,
        minor: 38,
        max_readahead: 128 << 10,
        flags: !(1 << 30),
        flags2: 0,
        unused: [0; 11],
    }
    .to_bytes()
}

fn fuse_seeds() -> Vec<Vec<u8>> {
    let open = fuse::OpenIn {
        flags: libc::O_RDWR as u32,
        open_flags: 0,
    }
    .to_bytes();
    let read = |fh, size| {
        fuse::ReadIn {
            fh,
            size,
            ..Default::default()
        }
        .to_bytes()
    };
    let release = |fh| fuse::ReleaseIn {
        fh,
        ..Default::default()
    };
    let write = fuse::WriteIn {
        fh: 0,
        size: 5,
        ..Default::default()
    };
    let setattr = fuse::SetattrIn {
        valid: 1 | 8, // FATTR_MODE | FATTR_SIZE
        size: 3,
        mode: 0o600,
        ..Default::default()
    };
    let cat = |parts: &[&[u8]]| parts.concat();
    // Nodes: 1 the root, 2 share 0's top; L the last node a reply gave,
    // L1 the one before. Patches put the last file handle (FH) or node
    // (NODE) into the args (see cella_fuzz::fuse_input).
    const L: u8 = fuse_input::SEEN;
    const L1: u8 = fuse_input::SEEN + 1;
    use fuse_input::{PATCH_FH as FH, PATCH_NODE as NODE};
    type Req = (u32, u8, u8, Vec<u8>);
    let sessions: Vec<Vec<Req>> = vec![
        vec![(fuse::INIT, 0, 0, init_in())],
        vec![
            (fuse::INIT, 0, 0, init_in()),
            (fuse::LOOKUP, 1, 0, cs("0")),
            (fuse::LOOKUP, 2, 0, cs("file")),
            (fuse::GETATTR, L, 0, fuse::GetattrIn::default().to_bytes()),
            (fuse::OPEN, L, 0, open.clone()),
            (fuse::READ, L, FH, read(0, 4096)),
            (
                fuse::LSEEK,
                L,
                FH,
                [0u64.to_le_bytes(), 0u64.to_le_bytes(), 3u64.to_le_bytes()].concat(),
            ),
            (fuse::FLUSH, L, FH, fuse::FlushIn::default().to_bytes()),
            (fuse::RELEASE, L, FH, release(0).to_bytes()),
        ],
        vec![
            (fuse::INIT, 0, 0, init_in()),
            (fuse::LOOKUP, 1, 0, cs("0")),
            (
                fuse::MKDIR,
                2,
                0,
                cat(&[
                    &fuse::MkdirIn {
                        mode: 0o755,
                        umask: 0o22,
                    }
                    .to_bytes(),
                    &cs("made"),
                ]),
            ),
            (
                fuse::CREATE,
                L,
                0,
                cat(&[
                    &fuse::CreateIn {
                        flags: libc::O_RDWR as u32,
                        mode: 0o644,
                        ..Default::default()
                    }
                    .to_bytes(),
                    &cs("new"),
                ]),
            ),
            (fuse::WRITE, L, FH, cat(&[&write.to_bytes(), b"hello"])),
            (fuse::SETATTR, L, 0, setattr.to_bytes()),
            (fuse::FSYNC, L, FH, fuse::FsyncIn::default().to_bytes()),
            (
                fuse::FALLOCATE,
                L,
                FH,
                [
                    0u64.to_le_bytes(),
                    0u64.to_le_bytes(),
                    4096u64.to_le_bytes(),
                    0u64.to_le_bytes(),
                ]
                .concat(),
            ),
            (fuse::READ, L, FH, read(0, 4096)),
            (fuse::RELEASE, L, FH, release(0).to_bytes()),
            (fuse::UNLINK, L1, 0, cs("new")),
            (fuse::RMDIR, 2, 0, cs("made")),
        ],
        vec![
            (fuse::INIT, 0, 0, init_in()),
            (fuse::LOOKUP, 1, 0, cs("0")),
            (fuse::OPENDIR, 2, 0, fuse::OpenIn::default().to_bytes()),
            (fuse::READDIRPLUS, 2, FH, read(0, 4096)),
            (fuse::READDIR, 2, FH, read(0, 4096)),
            (fuse::RELEASEDIR, 2, FH, release(0).to_bytes()),
            (fuse::STATFS, 2, 0, Vec::new()),
            (
                fuse::ACCESS,
                2,
                0,
                [4u32.to_le_bytes(), 0u32.to_le_bytes()].concat(),
            ),
            (fuse::LOOKUP, 1, 0, cs("1")),
            (fuse::LOOKUP, L, 0, cs("file")),
            (fuse::OPENDIR, 1, 0, fuse::OpenIn::default().to_bytes()),
            (fuse::READDIRPLUS, 1, FH, read(0, 4096)),
        ],
        vec![
            (fuse::INIT, 0, 0, init_in()),
            (fuse::LOOKUP, 1, 0, cs("0")),
            (fuse::SYMLINK, 2, 0, cat(&[&cs("sl"), &cs("file")])),
            (fuse::READLINK, L, 0, Vec::new()),
            (fuse::LOOKUP, 2, 0, cs("file")),
            (
                fuse::LINK,
                2,
                NODE,
                cat(&[&fuse::LinkIn { oldnodeid: 0 }.to_bytes(), &cs("hard")]),
            ),
            (
                fuse::RENAME,
                2,
                0,
                cat(&[
                    &fuse::RenameIn { newdir: 2 }.to_bytes(),
                    &cs("hard"),
                    &cs("moved"),
                ]),
            ),
            (
                fuse::RENAME2,
                2,
                0,
                cat(&[
                    &fuse::Rename2In {
                        newdir: 2,
                        flags: 2,
                        padding: 0,
                    }
                    .to_bytes(),
                    &cs("moved"),
                    &cs("sl"),
                ]),
            ),
            (
                fuse::SETXATTR,
                L,
                0,
                cat(&[
                    &fuse::SetxattrIn { size: 3, flags: 0 }.to_bytes(),
                    &cs("user.k"),
                    b"val",
                ]),
            ),
            (
                fuse::GETXATTR,
                L,
                0,
                cat(&[
                    &fuse::GetxattrIn {
                        size: 64,
                        padding: 0,
                    }
                    .to_bytes(),
                    &cs("user.k"),
                ]),
            ),
            (
                fuse::LISTXATTR,
                L,
                0,
                fuse::GetxattrIn {
                    size: 64,
                    padding: 0,
                }
                .to_bytes(),
            ),
            (fuse::REMOVEXATTR, L, 0, cs("user.k")),
            (
                fuse::MKNOD,
                2,
                0,
                cat(&[
                    &fuse::MknodIn {
                        mode: libc::S_IFIFO | 0o644,
                        ..Default::default()
                    }
                    .to_bytes(),
                    &cs("fifo"),
                ]),
            ),
            (fuse::LOOKUP, 2, 0, cs(".cella")),
            (fuse::LOOKUP, 2, 0, cs("link")),
            (
                fuse::FORGET,
                L1,
                0,
                fuse::ForgetIn { nlookup: 1 }.to_bytes(),
            ),
            (
                fuse::BATCH_FORGET,
                0,
                0,
                cat(&[
                    &fuse::BatchForgetIn { count: 1, dummy: 0 }.to_bytes(),
                    &fuse::ForgetOne {
                        nodeid: 5,
                        nlookup: 2,
                    }
                    .to_bytes(),
                ]),
            ),
            (fuse::DESTROY, 0, 0, Vec::new()),
        ],
    ];
    sessions
        .into_iter()
        .enumerate()
        .map(|(i, reqs)| {
            let mut out = vec![i as u8 & 1];
            for (op, node, patch, args) in reqs {
                fuse_input::encode(&mut out, op, node, patch, &args);
            }
            out
        })
        .collect()
}

/// One whole FUSE request, as the guest puts it in a descriptor.
fn fuse_request(opcode: u32, nodeid: u64, unique: u64, args: &[u8]) -> Vec<u8> {
    let mut v = InHeader {
        len: (InHeader::SIZE + args.len()) as u32,
        opcode,
        unique,
        nodeid,
        uid: 0,
        gid: 0,
        pid: 1,
        total_extlen: 0,
        padding: 0,
    }
    .to_bytes();
    v.extend_from_slice(args);
    v
}

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// A guest driver over the fuzz target's guest memory: queues laid out
/// by MockSplitQueue, buffers after them.
struct Driver {
    mem: GuestMemoryMmap,
    ops: Vec<Op>,
    next_buf: u64,
    queues: Vec<(u32, u64)>,
}

const QSIZE: u16 = 16;
const QSTRIDE: u64 = 0x200;
const BUFS: u64 = 0x2000;

impl Driver {
    fn new() -> Driver {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), virtq::MEM_SIZE)])
            .expect("memory");
        Driver {
            mem,
            ops: virtq::features(),
            next_buf: BUFS,
            queues: Vec::new(),
        }
    }

    fn queue(&mut self, q: u32) {
        let base = GuestAddress(u64::from(q) * QSTRIDE);
        let mq = MockSplitQueue::create(&self.mem, base, QSIZE);
        self.ops.extend(virtq::setup_queue(
            q,
            QSIZE,
            mq.desc_table_addr().0,
            mq.avail_addr().0,
            mq.used_addr().0,
        ));
        self.queues.push((q, 0));
    }

    /// A chain on queue `q`: `Ok(bytes)` a readable buffer, `Err(len)` a
    /// writable one.
    fn chain(&mut self, q: u32, bufs: &[Result<&[u8], u32>]) {
        let base = GuestAddress(u64::from(q) * QSTRIDE);
        // MockSplitQueue::create zeroes the avail ring's index: keep it.
        let avail_idx = base.0 + 16 * u64::from(QSIZE) + 2;
        let posted: u16 = self
            .mem
            .read_obj(GuestAddress(avail_idx))
            .expect("avail idx");
        let mq = MockSplitQueue::create(&self.mem, base, QSIZE);
        self.mem
            .write_obj(posted, GuestAddress(avail_idx))
            .expect("avail idx");
        let slot = self
            .queues
            .iter_mut()
            .find(|(n, _)| *n == q)
            .expect("queue set up");
        let head = slot.1;
        let mut descs = Vec::new();
        for (i, b) in bufs.iter().enumerate() {
            let addr = self.next_buf;
            let (len, mut flags) = match b {
                Ok(d) => {
                    self.mem.write_slice(d, GuestAddress(addr)).expect("buffer");
                    (d.len() as u32, 0)
                }
                Err(n) => (*n, F_WRITE),
            };
            self.next_buf += u64::from(len.max(1)).div_ceil(16) * 16;
            if i + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            let next = (head + i as u64 + 1) as u16 % QSIZE;
            descs.push(RawDescriptor::from(Descriptor::new(addr, len, flags, next)));
        }
        mq.add_desc_chains(&descs, head as u16).expect("chain");
        slot.1 += bufs.len() as u64;
    }

    fn op(&mut self, kind: u8, arg: u8, value: u32) {
        self.ops.push(Op { kind, arg, value });
    }

    fn finish(mut self, device: u8) -> Vec<u8> {
        let end = self.next_buf as usize;
        let mut memory = vec![0u8; end];
        self.mem
            .read_slice(&mut memory, GuestAddress(0))
            .expect("memory");
        self.ops.truncate(virtq::OPS);
        virtq::encode(device, &self.ops, &memory)
    }
}

fn virtqueue_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    // Block: a read, an id, a flush and a refused write.
    for (kind, data) in [(0u32, 1024u32), (8, 20), (4, 0), (1, 512)] {
        let mut d = Driver::new();
        d.queue(0);
        d.ops.push(virtq::driver_ok());
        let mut header = kind.to_le_bytes().to_vec();
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&1u64.to_le_bytes());
        let bufs: Vec<Result<&[u8], u32>> = match (kind, data) {
            (_, 0) => vec![Ok(&header), Err(1)],
            (1, _) => vec![Ok(&header), Ok(&[7u8; 512]), Err(1)],
            _ => vec![Ok(&header), Err(data), Err(1)],
        };
        d.chain(0, &bufs);
        d.op(virtq::KICK, 0, 0);
        d.op(virtq::HOST, 0, 0);
        d.op(virtq::READ, 0x60 / 4, 0);
        d.op(virtq::WRITE, 0x64 / 4, 1);
        d.op(virtq::READ, 0x40, 0); // config space
        seeds.push(d.finish(0));
    }
    // Console: the control handshake, output on stdout, input on stdin.
    {
        let mut d = Driver::new();
        for q in 0..12 {
            d.queue(q);
        }
        d.ops.push(virtq::driver_ok());
        let ctl = |id: u32, event: u16, value: u16| {
            let mut m = id.to_le_bytes().to_vec();
            m.extend_from_slice(&event.to_le_bytes());
            m.extend_from_slice(&value.to_le_bytes());
            m
        };
        d.chain(2, &[Err(64)]);
        d.chain(2, &[Err(64)]);
        d.chain(3, &[Ok(&ctl(0, 0, 1))]); // DEVICE_READY
        d.chain(3, &[Ok(&ctl(2, 3, 1))]); // PORT_READY stdout
        d.chain(3, &[Ok(&ctl(1, 6, 1))]); // PORT_OPEN stdin
        d.chain(5, &[Ok(b"hello from stdin port")]);
        d.chain(7, &[Ok(b"to stdout\n"), Ok(b" more")]);
        d.chain(4, &[Err(128)]);
        for q in [3, 2, 7, 5] {
            d.op(virtq::KICK, 0, q);
        }
        d.op(virtq::HOST, 0, 1); // send to stdin
        d.op(virtq::KICK, 0, 4);
        d.op(virtq::HOST, 1, 4096); // take output
        d.op(virtq::HOST, 2, 1); // close
        d.op(virtq::KICK, 0, 2);
        seeds.push(d.finish(1));
    }
    // Net: a DNS query out, a frame in.
    {
        let mut d = Driver::new();
        d.queue(0);
        d.queue(1);
        d.ops.push(virtq::driver_ok());
        let frame = udp_frame();
        let mut tx = vec![0u8; 12]; // virtio_net_hdr_v1
        tx.extend_from_slice(&frame);
        d.chain(0, &[Err(1526)]);
        d.chain(0, &[Err(1526)]);
        d.chain(1, &[Ok(&tx)]);
        d.chain(1, &[Ok(&[0u8; 12]), Ok(&frame)]);
        // A frame from the backend, in passt's framing, for HOST op 0.
        let at = d.next_buf;
        let mut framed = (frame.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&frame);
        d.mem.write_slice(&framed, GuestAddress(at)).expect("frame");
        d.next_buf += framed.len() as u64;
        d.op(virtq::KICK, 0, 1);
        d.op(virtq::HOST, 0, (framed.len() as u32) << 16 | at as u32);
        d.op(virtq::KICK, 0, 0);
        seeds.push(d.finish(2));
    }
    // Fs: INIT, then LOOKUP and GETATTR on the request queue.
    {
        let mut d = Driver::new();
        d.queue(0);
        d.queue(1);
        d.ops.push(virtq::driver_ok());
        d.chain(
            1,
            &[Ok(&fuse_request(fuse::INIT, 0, 1, &init_in())), Err(256)],
        );
        d.chain(
            1,
            &[Ok(&fuse_request(fuse::LOOKUP, 1, 2, &cs("0"))), Err(256)],
        );
        let getattr = fuse_request(fuse::GETATTR, 2, 3, &fuse::GetattrIn::default().to_bytes());
        d.chain(
            1,
            &[Ok(&getattr[..20]), Ok(&getattr[20..]), Err(16), Err(240)],
        );
        let forget = fuse_request(
            fuse::FORGET,
            2,
            4,
            &fuse::ForgetIn { nlookup: 1 }.to_bytes(),
        );
        d.chain(0, &[Ok(&forget)]);
        d.op(virtq::KICK, 0, 1);
        d.op(virtq::KICK, 0, 0);
        d.op(virtq::READ, 0x40, 0); // config space
        seeds.push(d.finish(3));
    }
    seeds
}

/// Ethernet, IPv4, UDP: the guest asks the nameserver.
fn udp_frame() -> Vec<u8> {
    let payload =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";
    let mut f = vec![
        0x52, 0x55, 10, 0, 2, 2, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 8, 0,
    ];
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 2, 15, 10, 0, 2, 3]);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn control_seeds() -> Vec<Vec<u8>> {
    let hello = GuestMsg::Hello {
        version: guest_init::PROTOCOL_VERSION,
    };
    let msgs = |kind: u8, chunk: u8, list: &[GuestMsg]| {
        let mut out = vec![kind, chunk];
        for m in list {
            out.extend(encode(m));
        }
        out
    };
    vec![
        msgs(
            0,
            255,
            &[
                hello.clone(),
                GuestMsg::Started,
                GuestMsg::Exited { code: 3 },
            ],
        ),
        msgs(
            1 | 4,
            7,
            &[
                hello.clone(),
                GuestMsg::Started,
                GuestMsg::Step { index: 0 },
                GuestMsg::Step { index: 1 },
                GuestMsg::Exited { code: 0 },
            ],
        ),
        msgs(
            2 | 12,
            64,
            &[
                hello.clone(),
                GuestMsg::Started,
                GuestMsg::ChildEnded {
                    name: "web".into(),
                    status: 0,
                    stopped: true,
                    message: None,
                },
                GuestMsg::ChildEnded {
                    name: "db".into(),
                    status: 137,
                    stopped: false,
                    message: Some("killed".into()),
                },
                GuestMsg::Exited { code: 1 },
            ],
        ),
        msgs(
            16 | 32,
            13,
            &[
                hello.clone(),
                GuestMsg::Prepared,
                GuestMsg::Started,
                GuestMsg::OutOfMemory {
                    kills: 2,
                    victims: vec!["cc1".into(), "ld\u{1b}[2J".into()],
                },
                GuestMsg::Phases {
                    marks: vec![("mount".into(), 120), ("exec".into(), 900)],
                },
                GuestMsg::Killed { signal: 9 },
            ],
        ),
        msgs(
            0,
            3,
            &[
                hello,
                GuestMsg::SpawnFailed {
                    kind: guest_init::SpawnFailure::NotFound,
                    message: "no such file".into(),
                },
            ],
        ),
    ]
}

fn entry(path: &str, kind: ExportKind, mode: u32) -> ExportRecord {
    ExportRecord::Entry(ExportEntry {
        path: path.as_bytes().to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: 1_600_000_000,
        mtime_nsec: 5,
        xattrs: Vec::new(),
    })
}

fn export_seeds() -> Vec<Vec<u8>> {
    let stream = |records: &[(ExportRecord, &[u8])]| {
        let mut out = Vec::new();
        for (r, data) in records {
            out.extend(encode(r));
            out.extend_from_slice(data);
        }
        out.extend(encode(&ExportRecord::End));
        out
    };
    let file = |path: &str, data: &'static [u8]| {
        (
            entry(
                path,
                ExportKind::File {
                    size: data.len() as u64,
                },
                0o644,
            ),
            data,
        )
    };
    let mut with_xattr = entry("usr/bin/ping", ExportKind::File { size: 4 }, 0o755);
    if let ExportRecord::Entry(e) = &mut with_xattr {
        e.xattrs = vec![(
            b"security.capability".to_vec(),
            vec![1, 0, 0, 2, 0, 32, 0, 0],
        )];
    }
    vec![
        stream(&[]),
        stream(&[
            (entry("etc", ExportKind::Dir { opaque: false }, 0o755), b""),
            file("etc/hostname", b"cella\n"),
            (entry("etc/passwd", ExportKind::Whiteout, 0), b""),
            (
                entry(
                    "etc/hosts",
                    ExportKind::HardLink {
                        target: b"etc/hostname".to_vec(),
                    },
                    0o644,
                ),
                b"",
            ),
            (
                entry(
                    "etc/localtime",
                    ExportKind::Symlink {
                        target: b"/usr/share/zoneinfo/UTC".to_vec(),
                    },
                    0o777,
                ),
                b"",
            ),
        ]),
        stream(&[
            (entry("usr", ExportKind::Dir { opaque: true }, 0o755), b""),
            (
                entry("usr/bin", ExportKind::Dir { opaque: false }, 0o755),
                b"",
            ),
            (with_xattr, b"\x7fELF"),
            (
                entry(
                    "dev-null",
                    ExportKind::CharDevice { major: 1, minor: 3 },
                    0o666,
                ),
                b"",
            ),
            (
                entry(
                    "loop0",
                    ExportKind::BlockDevice { major: 7, minor: 0 },
                    0o660,
                ),
                b"",
            ),
            (entry("fifo", ExportKind::Fifo, 0o644), b""),
            (entry("sock", ExportKind::Socket, 0o755), b""),
            (entry("bin", ExportKind::Whiteout, 0), b""),
        ]),
    ]
}

fn tar_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(if *kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        if *kind == tar::EntryType::Char {
            h.set_device_major(1).expect("major");
            h.set_device_minor(3).expect("minor");
        }
        if let Some(link) = link {
            h.set_link_name(link).expect("link name");
        }
        b.append_data(&mut h, name, *data).expect("entry");
    }
    b.into_inner().expect("tar")
}

fn tar_seeds() -> Vec<Vec<u8>> {
    use tar::EntryType as E;
    let rootfs = tar_of(&[
        ("etc/", E::Directory, b"", None),
        (
            "etc/passwd",
            E::Regular,
            b"root:x:0:0:root:/root:/bin/sh\n",
            None,
        ),
        ("bin/", E::Directory, b"", None),
        ("bin/sh", E::Regular, b"#!sh\n", None),
        ("bin/ash", E::Link, b"", Some("bin/sh")),
        ("usr/bin", E::Symlink, b"", Some("../bin")),
        ("dev/null", E::Char, b"", None),
        ("run/fifo", E::Fifo, b"", None),
    ]);
    let sub = tar_of(&[
        ("./sub/", E::Directory, b"", None),
        ("./sub/a.txt", E::Regular, b"a\n", None),
        ("./other/b.txt", E::Regular, b"b\n", None),
        ("./sub/link", E::Symlink, b"", Some("a.txt")),
    ]);
    let layer = tar_of(&[
        ("etc/.wh.passwd", E::Regular, b"", None),
        ("usr/lib/.wh..wh..opq", E::Regular, b"", None),
        ("usr/lib/libc.so", E::Regular, b"ELF", None),
    ]);
    let mut pax = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(4);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    h.set_entry_type(E::Regular);
    pax.append_pax_extensions([
        ("SCHILY.xattr.security.capability", &b"\x01\x00\x00\x02"[..]),
        ("path", b"usr/bin/a-long-pax-name"),
    ])
    .expect("pax");
    pax.append_data(&mut h, "x", &b"\x7fELF"[..])
        .expect("entry");
    let pax = pax.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&rootfs).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let with = |mode: u8, archive: &[u8]| [&[mode][..], archive].concat();
    vec![
        with(0, &rootfs),
        with(1 | 4, &sub),
        with(8, &layer),
        with(2, &pax),
        with(0, &gz),
    ]
}

/// The repository's cella.yaml and every YAML block of the README.
fn yaml_seeds(readme: &str, config: &str) -> Vec<Vec<u8>> {
    let mut seeds = vec![config.as_bytes().to_vec()];
    let mut block: Option<String> = None;
    for line in readme.lines() {
        match (&mut block, line.trim_start()) {
            (None, l) if l.starts_with("```yaml") => block = Some(String::new()),
            (Some(b), l) if l.starts_with("```") => {
                if b.len() < 4096 {
                    seeds.push(b.clone().into_bytes());
                }
                block = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    seeds.push(
        b"x: &a [1, 2]\ny: *a\ncontainers:\n  c:\n    setup:\n    - !Tar { url: ./t.tar, path: /opt }\n    - !Sh \"true\"\n    environ: { A: b }\ncommands:\n  t: !Command { container: c, run: [sh] }\n"
            .to_vec(),
    );
    // vagga's !Copy and !Depends selections: glob rules, classes, braces, escapes.
    seeds.push(
        b"containers:\n  c:\n    setup:\n    - !Copy { source: inc, path: /a, rules: ['/*.yaml', '!c/', '/{a,b}/**/x[0-9]?', '!\\!y'] }\n    - !Copy { source: /a, path: /b, no-default-rules: true, rules: ['/'], preserve-permissions: true, preserve-times: true, umask: 0o022 }\n    - !Depends { path: inc, rules: ['/c/'] }\n"
            .to_vec(),
    );
    seeds
}

fn snapshot_seeds() -> Vec<Vec<u8>> {
    use cella::vmm::state::{VcpuState, VmState};
    use cella::vmm::VmSnapshot;
    let state = |mem_size: u64, vcpus: usize| VmSnapshot {
        mem_size,
        vm: VmState {
            pic_master: Default::default(),
            pic_slave: Default::default(),
            ioapic: Default::default(),
            pit: Default::default(),
            clock: Default::default(),
        },
        vcpus: (0..vcpus)
            .map(|_| VcpuState {
                mp_state: Default::default(),
                regs: Default::default(),
                sregs: Default::default(),
                xsave: Default::default(),
                xcrs: Some(Default::default()),
                debug_regs: Default::default(),
                lapic: Default::default(),
                msrs: vec![(0x10, 1234)],
                events: Default::default(),
                tsc_khz: Some(2_000_000),
            })
            .collect(),
        devices: Vec::new(),
    };
    let json = |s: &VmSnapshot| serde_json::to_vec(s).expect("json");
    let small = json(&state(0, 0));
    // A whole file, for mode 0: header, state at 4096, no memory.
    let mut raw = b"CELLASNP".to_vec();
    raw.extend_from_slice(&1u32.to_le_bytes());
    let offset = (4096 + small.len() as u64).div_ceil(4096) * 4096;
    for v in [small.len() as u64, offset, 0] {
        raw.extend_from_slice(&v.to_le_bytes());
    }
    raw.extend_from_slice(&Sha256::digest(&small));
    raw.resize(4096, 0);
    raw.extend_from_slice(&small);
    raw.resize(offset as usize, 0);
    vec![
        [&[1u8][..], &small].concat(),
        [&[2u8][..], &json(&state(4096, 0))].concat(),
        [&[1u8][..], &json(&state(0, 1))].concat(),
        [&[0u8][..], &raw].concat(),
    ]
}

fn oci_seeds() -> Vec<Vec<u8>> {
    use tar::EntryType as E;
    let layer = tar_of(&[
        ("etc/", E::Directory, b"", None),
        (
            "etc/passwd",
            E::Regular,
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            None,
        ),
        (
            "etc/group",
            E::Regular,
            b"root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
            None,
        ),
        ("etc/motd", E::Regular, b"hi\n", None),
    ]);
    let layer2 = tar_of(&[
        ("etc/.wh.motd", E::Regular, b"", None),
        ("home/app/", E::Directory, b"", None),
    ]);
    let config = br#"{"architecture":"amd64","os":"linux","config":{"User":"app:wheel","Env":["PATH=/usr/bin:/bin"],"Cmd":["sh"],"WorkingDir":"/home/app"},"rootfs":{"type":"layers","diff_ids":["@D3","@D4"]}}"#;
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"@D2","size":@S2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"@D3","size":@S3},{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"@D4","size":@S4}]}"#;
    let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"@D1","size":@S1,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}"#;
    let layout = [&index[..], manifest, config, &layer, &layer2];
    // An index naming an index, which names the manifest.
    let outer = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"@D1","size":@S1,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}"#;
    let inner = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"@D2","size":@S2,"platform":{"architecture":"arm64","os":"linux"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"@D2","size":@S2,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
    let shift = |doc: &[u8]| {
        // The manifest's references, one document further on.
        String::from_utf8_lossy(doc)
            .replace("@D4", "@D5")
            .replace("@S4", "@S5")
            .replace("@D3", "@D4")
            .replace("@S3", "@S4")
            .replace("@D2", "@D3")
            .replace("@S2", "@S3")
            .into_bytes()
    };
    let (m2, c2) = (shift(manifest), shift(config));
    let nested = [&outer[..], inner, &m2, &c2, &layer, &layer2];
    let docker_manifest = br#"[{"Config":"b1","RepoTags":["app:latest"],"Layers":["b2","b3"]}]"#;
    let docker_config = br#"{"architecture":"amd64","os":"linux","config":{"User":"1000"},"rootfs":{"type":"layers","diff_ids":["@D2","@D3"]}}"#;
    let docker = [&docker_manifest[..], docker_config, &layer, &layer2];
    // Mode 3: an OCI archive made by hand, digests already resolved.
    let resolved = oci_docs::resolve(layout.iter().map(|d| d.to_vec()).collect());
    let mut files = vec![
        (
            "oci-layout".to_owned(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_owned(), resolved[0].clone()),
    ];
    for d in &resolved[1..] {
        let hex = oci_docs::digest(d)["sha256:".len()..].to_owned();
        files.push((format!("blobs/sha256/{hex}"), d.clone()));
    }
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in &files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        b.append_data(&mut h, name, &data[..]).expect("entry");
    }
    let archive = b.into_inner().expect("tar");
    vec![
        oci_docs::encode(0, &layout),
        oci_docs::encode(1 | 4, &layout),
        oci_docs::encode(8, &layout),
        oci_docs::encode(4, &nested),
        oci_docs::encode(2, &docker),
        oci_docs::encode(3, &[&archive]),
    ]
}

fn project_state_seeds() -> Vec<Vec<u8>> {
    use cella::image::lock::{Lock, Locked};
    use cella::image::store::BuiltWith;
    use cella::image::{ImageWriter, Inode, Kind, Meta, Tree};
    let mut lock = Lock::new();
    let hex = |b: &[u8]| hex::encode(Sha256::digest(b));
    lock.containers.insert(
        "base".into(),
        Locked {
            image: hex(b"image"),
            sha256: hex(b"file"),
            epoch: 1_600_000_000,
            build_network_user: true,
            setup: vec![
                serde_json::json!({"Tar": {"url": "./images/busybox.tar", "sha256": hex(b"tar")}}),
            ],
            built_with: Some(BuiltWith {
                cella: "0.1.0".into(),
                kernel: hex(b"kernel"),
                guest_init: hex(b"init"),
            }),
            packages: vec!["busybox=1:1.35.0-4+b3".into()],
        },
    );
    let empty = serde_json::to_vec_pretty(&Lock::new()).expect("lock");
    let full = serde_json::to_vec_pretty(&lock).expect("lock");

    let image = tempfile::tempfile().expect("image");
    let mut writer = ImageWriter::new(&image).expect("writer");
    let mut tree = Tree::new();
    let dir = Meta::implicit_dir();
    let data = writer.write_file_data(&mut &b"hello"[..]).expect("data");
    let file = Inode {
        meta: Meta {
            perm: 0o644,
            ..dir.clone()
        },
        kind: Kind::File(data),
    };
    tree.insert(b"/etc/motd", file, &dir).expect("insert");
    let link = Inode {
        meta: dir.clone(),
        kind: Kind::Symlink(b"/etc/motd".to_vec()),
    };
    tree.insert(b"/motd", link, &dir).expect("insert");
    let dev = Inode {
        meta: dir.clone(),
        kind: Kind::CharDevice { major: 1, minor: 3 },
    };
    tree.insert(b"/dev/null", dev, &dir).expect("insert");
    let json = tree.to_json().expect("tree json");
    vec![
        [&[0u8][..], &empty].concat(),
        [&[0u8][..], &full].concat(),
        [&[1u8][..], &Tree::new().to_json().expect("json")].concat(),
        [&[1u8][..], &json].concat(),
    ]
}
