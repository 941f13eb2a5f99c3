//! Input formats of the fuzz targets that need more structure than raw
//! bytes, shared by the targets (which decode them) and the seed corpus
//! writer (which encodes them), so the committed seeds always mean what
//! the targets read.
//!
//! Only shapes the fuzzer could not find alone live here: a FUSE request
//! sequence (lengths and uniques kept consistent), the guest's MMIO
//! register program and memory image, and OCI blobs named by digests the
//! fuzzer cannot compute. Everything else a target takes is the raw bytes
//! a guest or project would hand cella.

use sha2::{Digest, Sha256};

/// A little reader over the fuzzer's bytes: each getter returns None
/// once the bytes run out.
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take_up_to(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        Some(self.take_up_to(n))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// fuse_server: a sequence of requests, each
/// `[opcode u8][node u8][flags u8][args_len u16 LE][args]`.
///
/// The server names nodes and open files by numbers the guest cannot
/// guess, so a request may refer to ones earlier replies gave: `node`
/// below [`fuse_input::SEEN`] is the node id itself (1 is the root, 2 and
/// 3 the shares' tops), from it on the id of the n-th last node a reply
/// gave (LOOKUP, MKDIR, CREATE...).
///
/// flags: bits 0-2 pick the reply room from [`fuse_input::ROOMS`]; bit 3
/// makes the header's `len` lie (args_len instead of the true length);
/// bit 4 sends as uid/gid 1000 instead of root; bit 5 shifts the node id
/// left by 32 (far outside the table); bits 6-7 patch a u64 of the args
/// with an earlier reply's number, args[0] picking the n-th last one:
/// 1, a file handle at offset 0 (READ, WRITE, RELEASE, ...), 2, a file
/// handle at offset 8 (GETATTR, SETATTR), 3, a node id at offset 0
/// (LINK's old node, RENAME's new directory).
pub mod fuse_input {
    pub const ROOMS: [usize; 8] = [2 << 20, 0, 8, 16, 24, 80, 4096, 1 << 16];
    pub const SEEN: u8 = 8;

    pub const PATCH_NONE: u8 = 0;
    pub const PATCH_FH: u8 = 1;
    pub const PATCH_FH_AT_8: u8 = 2;
    pub const PATCH_NODE: u8 = 3;

    pub struct Request<'a> {
        pub opcode: u32,
        pub node: u8,
        pub far: bool,
        pub room: usize,
        pub lying_len: bool,
        pub user: bool,
        pub patch: u8,
        pub args: &'a [u8],
    }

    pub fn decode<'a>(b: &mut super::Bytes<'a>) -> Option<Request<'a>> {
        let opcode = u32::from(b.u8()?);
        let node = b.u8()?;
        let flags = b.u8()?;
        let len = usize::from(b.u16()?);
        let args = b.take_up_to(len);
        Some(Request {
            opcode,
            node,
            far: flags & 32 != 0,
            room: ROOMS[usize::from(flags & 7)],
            lying_len: flags & 8 != 0,
            user: flags & 16 != 0,
            patch: flags >> 6,
            args,
        })
    }

    /// One request with the largest room, as root; `patch` as in flags.
    pub fn encode(out: &mut Vec<u8>, opcode: u32, node: u8, patch: u8, args: &[u8]) {
        out.push(opcode as u8);
        out.push(node);
        out.push(patch << 6);
        out.extend_from_slice(&(args.len() as u16).to_le_bytes());
        out.extend_from_slice(args);
    }

    /// The n-th last of `seen`, if any.
    pub fn nth_last(seen: &[u64], n: usize) -> Option<u64> {
        let len = seen.len();
        (len > 0).then(|| seen[len - 1 - n % len])
    }
}

/// virtqueue: one virtio device behind its MMIO transport, programmed
/// like a guest driver would, over guest memory the fuzzer fills.
///
/// `[device u8][op count u8][ops: OPS × 6 bytes][memory image]`; an op is
/// `[kind u8][arg u8][value u32 LE]`:
/// kind % 4 = 0: register write at `arg * 4` (0x100 and up: config space),
/// 1: register read at `arg * 4`, 2: queue kick of queue `value`,
/// 3: a host-side event of the device (`arg` says which; see the target).
pub mod virtq {
    pub const MEM_SIZE: usize = 0x10000;
    pub const OPS: usize = 128;
    pub const HEADER: usize = 2 + OPS * 6;
    pub const DEVICES: u8 = 4;

    pub const WRITE: u8 = 0;
    pub const READ: u8 = 1;
    pub const KICK: u8 = 2;
    pub const HOST: u8 = 3;

    #[derive(Debug, Clone, Copy)]
    pub struct Op {
        pub kind: u8,
        pub arg: u8,
        pub value: u32,
    }

    pub struct Input<'a> {
        pub device: u8,
        pub ops: Vec<Op>,
        pub memory: &'a [u8],
    }

    pub fn decode(data: &[u8]) -> Option<Input<'_>> {
        if data.len() < HEADER {
            return None;
        }
        let (header, memory) = data.split_at(HEADER);
        let count = usize::from(header[1]).min(OPS);
        let ops = header[2..]
            .chunks_exact(6)
            .take(count)
            .map(|c| Op {
                kind: c[0] % 4,
                arg: c[1],
                value: u32::from_le_bytes([c[2], c[3], c[4], c[5]]),
            })
            .collect();
        Some(Input {
            device: header[0] % DEVICES,
            ops,
            memory: &memory[..memory.len().min(MEM_SIZE)],
        })
    }

    pub fn encode(device: u8, ops: &[Op], memory: &[u8]) -> Vec<u8> {
        assert!(ops.len() <= OPS);
        let mut out = vec![device, ops.len() as u8];
        for op in ops {
            out.push(op.kind);
            out.push(op.arg);
            out.extend_from_slice(&op.value.to_le_bytes());
        }
        out.resize(HEADER, 0);
        out.extend_from_slice(memory);
        out
    }

    /// The register writes of a driver that sets up queue `q` (size, rings
    /// at these guest addresses) and marks it ready.
    pub fn setup_queue(q: u32, size: u16, desc: u64, avail: u64, used: u64) -> Vec<Op> {
        let w = write;
        vec![
            w(0x30, q),
            w(0x38, u32::from(size)),
            w(0x80, desc as u32),
            w(0x84, (desc >> 32) as u32),
            w(0x90, avail as u32),
            w(0x94, (avail >> 32) as u32),
            w(0xa0, used as u32),
            w(0xa4, (used >> 32) as u32),
            w(0x44, 1),
        ]
    }

    fn write(reg: u8, value: u32) -> Op {
        Op {
            kind: WRITE,
            arg: reg / 4,
            value,
        }
    }

    /// ACKNOWLEDGE, DRIVER and feature negotiation (VERSION_1 only).
    pub fn features() -> Vec<Op> {
        vec![
            write(0x70, 1 | 2),
            write(0x24, 1),
            write(0x20, 1),
            write(0x70, 1 | 2 | 8),
        ]
    }

    /// DRIVER_OK: the device goes live with the queues set up so far.
    pub fn driver_ok() -> Op {
        write(0x70, 1 | 2 | 8 | 4)
    }
}

/// oci_image: an image's files, and the digests that name them.
///
/// `[mode u8]` then documents, each `[len u16 LE][bytes]`. Document 0 is
/// the top file (`index.json`, or a docker-archive's `manifest.json`);
/// documents 1.. are blobs. Before anything is written, `@D<i>` in a
/// document becomes `sha256:<hex of document i>` and `@S<i>` its size,
/// for i above the document's own index (so the last is resolved first):
/// the fuzzer cannot compute a digest, the harness does.
pub mod oci_docs {
    use super::*;

    pub fn decode(data: &[u8]) -> Option<(u8, Vec<Vec<u8>>)> {
        let mut b = Bytes(data);
        let mode = b.u8()?;
        let mut docs = Vec::new();
        while !b.is_empty() && docs.len() < 16 {
            let len = usize::from(b.u16().unwrap_or(0));
            docs.push(b.take_up_to(len).to_vec());
        }
        Some((mode, resolve(docs)))
    }

    pub fn encode(mode: u8, docs: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![mode];
        for d in docs {
            out.extend_from_slice(&(d.len() as u16).to_le_bytes());
            out.extend_from_slice(d);
        }
        out
    }

    pub fn digest(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    /// Replaces the placeholders, last document first.
    pub fn resolve(mut docs: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        for i in (0..docs.len()).rev() {
            let mut doc = std::mem::take(&mut docs[i]);
            for (j, later) in docs.iter().enumerate().skip(i + 1) {
                doc = replace(&doc, format!("@D{j}").as_bytes(), digest(later).as_bytes());
                doc = replace(
                    &doc,
                    format!("@S{j}").as_bytes(),
                    later.len().to_string().as_bytes(),
                );
            }
            docs[i] = doc;
        }
        docs
    }

    fn replace(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(hay.len());
        let mut i = 0;
        while i < hay.len() {
            // Not followed by another digit: @D1 must not match @D12.
            let hit = hay[i..].starts_with(needle)
                && !hay
                    .get(i + needle.len())
                    .is_some_and(|c| c.is_ascii_digit());
            if hit {
                out.extend_from_slice(with);
                i += needle.len();
            } else {
                out.push(hay[i]);
                i += 1;
            }
        }
        out
    }
}
