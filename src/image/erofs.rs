//! erofs writer: an in-memory tree (`tree`) plus streamed file data → an
//! uncompressed erofs image.
//!
//! The on-disk format follows the Linux kernel's fs/erofs/erofs_fs.h: 4 KiB
//! blocks, 64-byte extended inodes, FLAT_PLAIN data in contiguous blocks, and
//! FLAT_INLINE (data right after the inode) for directories and symlinks that
//! fit in one block. The image is laid out as:
//!
//! ```text
//! block 0            superblock at byte 1024, root inode right after it (nid 36)
//! blocks 1..F        regular file data, written while the tar is read
//! blocks F..M        directory and symlink data too large to inline
//! blocks M..end      every other inode (nid = byte offset / 32, meta_blkaddr = 0)
//! ```
//!
//! The root inode comes first so its nid fits the superblock's 16-bit field;
//! the other nids are 64-bit in dirents and may be large. Nothing depends on
//! the clock or on hash-map order, so the same input gives the same bytes.
//!
//! A writer can `finish` more than once: later file data goes after the
//! metadata just written, and the next `finish` writes a complete new image
//! (block 0 rewritten, the older metadata left behind as dead space), so an
//! image can grow in steps without copying: blocks 1..F then hold file data
//! and dead metadata interleaved. `compact` rewrites it canonically.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;

use super::error::ErofsError;
use super::fileio::copy_range;
use super::tree::{walk, FileData, Inode, InodeId, Kind, Tree, Xattr, BLOCK_SIZE};

/// log2 of the block size, `BLOCK_SIZE`.
const BLKSZBITS: u8 = 12;
const _: () = assert!(1 << BLKSZBITS == BLOCK_SIZE);
const BLOCK: usize = BLOCK_SIZE as usize;
const MAGIC: u32 = 0xE0F5_E1E2;
const SUPER_OFFSET: usize = 1024;
const SUPER_SIZE: usize = 128;
/// The root inode sits right after the superblock: nid 1152 / 32 = 36.
const ROOT_OFFSET: usize = SUPER_OFFSET + SUPER_SIZE;
const INODE_SIZE: usize = 64;
const NID_ALIGN: usize = 32;
const DIRENT_SIZE: usize = 12;
const XATTR_HEADER_SIZE: usize = 12;
const XATTR_ENTRY_HEADER: usize = 4;
/// i_format: bit 0 = extended inode, bits 1-3 = data layout.
const FORMAT_EXTENDED_PLAIN: u16 = 1;
const FORMAT_EXTENDED_INLINE: u16 = 1 | (2 << 1);

/// Our limit on one inode's inline xattr area, so that any inode with its
/// xattrs fits in one block (the root shares block 0 with the superblock).
pub const MAX_XATTR_IBODY: usize = 2048;

impl Xattr {
    fn entry_size(&self) -> usize {
        round_up(XATTR_ENTRY_HEADER + self.suffix.len() + self.value.len(), 4)
    }
}

/// Size of the inline xattr area ("ibody") for these xattrs; 0 when there are none.
pub fn xattr_ibody_size(xattrs: &[Xattr]) -> usize {
    if xattrs.is_empty() {
        return 0;
    }
    XATTR_HEADER_SIZE + xattrs.iter().map(Xattr::entry_size).sum::<usize>()
}

fn xattr_ibody(xattrs: &[Xattr]) -> Vec<u8> {
    let mut sorted: Vec<&Xattr> = xattrs.iter().collect();
    sorted.sort();
    let mut out = Vec::with_capacity(xattr_ibody_size(xattrs));
    if sorted.is_empty() {
        return out;
    }
    // h_name_filter 0 ("may be present"; only read with the XATTR_FILTER
    // feature, which we don't set), no shared xattrs.
    out.resize(XATTR_HEADER_SIZE, 0);
    for x in sorted {
        let start = out.len();
        out.push(x.suffix.len() as u8); // checked in Xattr::new
        out.push(x.index);
        out.extend_from_slice(&(x.value.len() as u16).to_le_bytes());
        out.extend_from_slice(&x.suffix);
        out.extend_from_slice(&x.value);
        out.resize(start + x.entry_size(), 0);
    }
    out
}

/// Writes an image into a file: file data first (`write_file_data`, in any
/// order), then the tree's metadata (`finish`); then possibly more data and
/// another `finish`. Data always goes at the end of the file, so the padding
/// after it is zeros whatever the file held before.
pub struct ImageWriter<'a> {
    out: &'a File,
    next_blk: u64,
    /// The copy buffer of `write_file_data`, allocated on first use.
    buf: Vec<u8>,
    /// The most bytes the image file may take (`limits.image`).
    limit: u64,
}

/// What an image may take when no limit is set: erofs's own.
const MAX_IMAGE: u64 = (1 << 32) * BLOCK_SIZE;

impl<'a> ImageWriter<'a> {
    /// Truncates `out`: stale bytes in padding would make the output depend on
    /// what the file held before.
    pub fn new(out: &'a File) -> Result<Self, ErofsError> {
        out.set_len(0).map_err(ErofsError::Write)?;
        Ok(ImageWriter {
            out,
            next_blk: 1,
            buf: Vec::new(),
            limit: MAX_IMAGE,
        })
    }

    /// Refuses to grow the image file past `bytes` (`limits.image`): data
    /// and metadata that would pass it fail with `OverLimit`, before they
    /// are written.
    pub fn with_limit(mut self, bytes: u64) -> Self {
        self.limit = bytes.min(MAX_IMAGE);
        self
    }

    /// Whether `size` more bytes of file data fit within the limit: for
    /// a file whose size is known before its data is read.
    pub fn reserve(&self, size: u64) -> Result<(), ErofsError> {
        let end = self
            .next_blk
            .saturating_add(size.div_ceil(BLOCK_SIZE))
            .saturating_mul(BLOCK_SIZE);
        if end > self.limit {
            return Err(ErofsError::OverLimit(self.limit));
        }
        Ok(())
    }

    /// Continues an existing image (a copy of one, usually): new data goes
    /// after everything in `out`, and the old image's metadata becomes dead
    /// space at the next `finish`.
    pub fn append_to(out: &'a File) -> Result<Self, ErofsError> {
        let len = out.metadata().map_err(ErofsError::Write)?.len();
        let next_blk = len.div_ceil(BLOCK_SIZE).max(1);
        if next_blk > u64::from(u32::MAX) {
            return Err(ErofsError::TooLarge);
        }
        Ok(ImageWriter {
            out,
            next_blk,
            buf: Vec::new(),
            limit: MAX_IMAGE,
        })
    }

    /// The block the next file data will start at.
    pub fn next_block(&self) -> u64 {
        self.next_blk
    }

    /// Copies `data` into the next free blocks and says where it went.
    pub fn write_file_data(&mut self, data: &mut dyn Read) -> Result<FileData, ErofsError> {
        let blkaddr = u32::try_from(self.next_blk).map_err(|_| ErofsError::TooLarge)?;
        let start = self.next_blk * BLOCK_SIZE;
        if self.buf.is_empty() {
            self.buf = vec![0u8; 256 * 1024];
        }
        let mut size: u64 = 0;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.discard(start, ErofsError::ReadData(e))),
            };
            if start + size + n as u64 > self.limit {
                return Err(self.discard(start, ErofsError::OverLimit(self.limit)));
            }
            if let Err(e) = self.out.write_all_at(&self.buf[..n], start + size) {
                return Err(self.discard(start, ErofsError::Write(e)));
            }
            size += n as u64;
        }
        self.advance(blkaddr, size)
    }

    /// Copies bytes `range` of `src` (another image, usually) into the next
    /// free blocks, with copy_file_range where the filesystems allow it.
    pub fn write_file_range(
        &mut self,
        src: &File,
        range: Range<u64>,
    ) -> Result<FileData, ErofsError> {
        let blkaddr = u32::try_from(self.next_blk).map_err(|_| ErofsError::TooLarge)?;
        let start = self.next_blk * BLOCK_SIZE;
        let size = range.end.saturating_sub(range.start);
        self.reserve(size)?;
        if let Err(e) = copy_range(src, range.start, self.out, start, size) {
            return Err(self.discard(start, e));
        }
        self.advance(blkaddr, size)
    }

    fn advance(&mut self, blkaddr: u32, size: u64) -> Result<FileData, ErofsError> {
        self.next_blk += size.div_ceil(BLOCK_SIZE);
        if self.next_blk > u64::from(u32::MAX) {
            return Err(ErofsError::TooLarge);
        }
        Ok(FileData { blkaddr, size })
    }

    /// Drops what a failed write left at the end of the file, so that the
    /// next data's padding is zeros again. Nothing lies after `start`.
    fn discard(&self, start: u64, err: ErofsError) -> ErofsError {
        match self.out.set_len(start) {
            Ok(()) => err,
            Err(e) => ErofsError::Write(e),
        }
    }

    /// Lays out and writes directories, symlinks, inodes and the superblock.
    /// The writer stays usable: more data goes after this metadata, and the
    /// next `finish` writes a complete image again.
    pub fn finish(&mut self, tree: &Tree) -> Result<(), ErofsError> {
        let walk = walk(tree)?;
        let mut placed = Vec::with_capacity(walk.order.len());
        let mut next_blk = self.next_blk;
        for (i, &id) in walk.order.iter().enumerate() {
            let inode = &tree.inodes[id];
            let ibody = xattr_ibody(&inode.meta.xattrs);
            if ibody.len() > MAX_XATTR_IBODY {
                return Err(ErofsError::InvalidTree(format!(
                    "inode {id} has {} bytes of xattrs (at most {MAX_XATTR_IBODY})",
                    ibody.len()
                )));
            }
            if let Kind::File(f) = &inode.kind {
                let end = u64::from(f.blkaddr) + f.size.div_ceil(BLOCK_SIZE);
                if (f.blkaddr == 0 && f.size > 0) || end > self.next_blk {
                    return Err(ErofsError::InvalidTree(format!(
                        "the data of inode {id} lies outside the data written"
                    )));
                }
            }
            let size = match &inode.kind {
                Kind::File(f) => f.size,
                Kind::Dir(entries) => dir_size(&dir_names(entries)) as u64,
                Kind::Symlink(target) => target.len() as u64,
                _ => 0,
            };
            let room = if i == 0 { BLOCK - ROOT_OFFSET } else { BLOCK };
            let layout = match &inode.kind {
                Kind::File(f) => Layout::Plain(f.blkaddr),
                Kind::Dir(_) | Kind::Symlink(_) => {
                    if (INODE_SIZE + ibody.len()) as u64 + size <= room as u64 {
                        Layout::Inline
                    } else {
                        let blkaddr = u32::try_from(next_blk).map_err(|_| ErofsError::TooLarge)?;
                        next_blk += size.div_ceil(BLOCK_SIZE);
                        Layout::Plain(blkaddr)
                    }
                }
                _ => Layout::Plain(0),
            };
            placed.push(Placed {
                id,
                offset: 0,
                ibody,
                layout,
                size,
            });
        }

        // Inode offsets: the root in block 0, the rest from block `next_blk`
        // on, 32-byte aligned, no inode (with its xattrs and inline data)
        // straddling a block boundary.
        let meta_start = next_blk * BLOCK_SIZE;
        let mut cursor = meta_start;
        for (i, p) in placed.iter_mut().enumerate() {
            let len = p.record_len() as u64;
            if i == 0 {
                p.offset = ROOT_OFFSET as u64;
                continue;
            }
            if cursor % BLOCK_SIZE + len > BLOCK_SIZE {
                cursor = cursor.next_multiple_of(BLOCK_SIZE);
            }
            p.offset = cursor;
            cursor = (cursor + len).next_multiple_of(NID_ALIGN as u64);
        }
        let total_blocks = cursor.div_ceil(BLOCK_SIZE).max(1);
        if total_blocks.saturating_mul(BLOCK_SIZE) > self.limit {
            return Err(ErofsError::OverLimit(self.limit));
        }
        let total_blocks = u32::try_from(total_blocks).map_err(|_| ErofsError::TooLarge)?;
        let mut nids = vec![0u64; tree.inodes.len()];
        for p in &placed {
            nids[p.id] = p.offset / NID_ALIGN as u64;
        }

        let mut block0 = vec![0u8; BLOCK];
        let mut meta = vec![0u8; (u64::from(total_blocks) * BLOCK_SIZE - meta_start) as usize];
        for (ino, p) in placed.iter().enumerate() {
            let inode = &tree.inodes[p.id];
            let data: Vec<u8> = match &inode.kind {
                Kind::Dir(entries) => dir_bytes(tree, entries, &nids, p.id, walk.parent[p.id]),
                Kind::Symlink(target) => target.clone(),
                _ => Vec::new(),
            };
            let mut record = inode_bytes(inode, p, walk.nlink[p.id], ino as u32 + 1);
            record.extend_from_slice(&p.ibody);
            match p.layout {
                Layout::Inline => record.extend_from_slice(&data),
                Layout::Plain(blkaddr) if !data.is_empty() => self
                    .out
                    .write_all_at(&data, u64::from(blkaddr) * BLOCK_SIZE)
                    .map_err(ErofsError::Write)?,
                Layout::Plain(_) => {}
            }
            let (buf, at) = if p.offset < BLOCK_SIZE {
                (&mut block0, p.offset as usize)
            } else {
                (&mut meta, (p.offset - meta_start) as usize)
            };
            buf[at..at + record.len()].copy_from_slice(&record);
        }
        block0[SUPER_OFFSET..SUPER_OFFSET + SUPER_SIZE]
            .copy_from_slice(&superblock(placed.len() as u64, total_blocks));
        let w = |buf: &[u8], at: u64| self.out.write_all_at(buf, at).map_err(ErofsError::Write);
        w(&meta, meta_start)?;
        w(&block0, 0)?;
        self.out
            .set_len(u64::from(total_blocks) * BLOCK_SIZE)
            .map_err(ErofsError::Write)?;
        self.next_blk = u64::from(total_blocks);
        Ok(())
    }
}

enum Layout {
    /// Data in whole blocks from this block address.
    Plain(u32),
    /// Data right after the inode and its xattrs.
    Inline,
}

struct Placed {
    id: InodeId,
    offset: u64,
    ibody: Vec<u8>,
    layout: Layout,
    size: u64,
}

impl Placed {
    fn record_len(&self) -> usize {
        let inline = match self.layout {
            Layout::Inline => self.size as usize,
            Layout::Plain(_) => 0,
        };
        INODE_SIZE + self.ibody.len() + inline
    }
}

/// A directory's names in on-disk order: sorted bytes, "." and ".." included.
fn dir_names(entries: &BTreeMap<Vec<u8>, InodeId>) -> Vec<&[u8]> {
    let mut names: Vec<&[u8]> = entries.keys().map(Vec::as_slice).collect();
    names.push(b".");
    names.push(b"..");
    names.sort_unstable();
    names
}

/// Splits sorted names into directory blocks: the number of names in each.
fn dir_chunks(names: &[&[u8]]) -> Vec<usize> {
    let mut chunks = Vec::new();
    let (mut count, mut used) = (0, 0);
    for name in names {
        let need = DIRENT_SIZE + name.len();
        if used + need > BLOCK {
            chunks.push(count);
            (count, used) = (0, 0);
        }
        count += 1;
        used += need;
    }
    if count > 0 {
        chunks.push(count);
    }
    chunks
}

/// i_size of a directory: full blocks, then what the last block uses.
fn dir_size(names: &[&[u8]]) -> usize {
    let chunks = dir_chunks(names);
    let last: usize = names[names.len() - chunks.last().copied().unwrap_or(0)..]
        .iter()
        .map(|n| DIRENT_SIZE + n.len())
        .sum();
    (chunks.len().saturating_sub(1)) * BLOCK + last
}

fn dir_bytes(
    tree: &Tree,
    entries: &BTreeMap<Vec<u8>, InodeId>,
    nids: &[u64],
    this: InodeId,
    parent: InodeId,
) -> Vec<u8> {
    let names = dir_names(entries);
    let target = |name: &[u8]| match name {
        b"." => this,
        b".." => parent,
        _ => entries.get(name).copied().unwrap_or(this),
    };
    let mut out = Vec::new();
    let mut rest = &names[..];
    for count in dir_chunks(&names) {
        if !out.is_empty() {
            out.resize(out.len().next_multiple_of(BLOCK), 0);
        }
        let block_start = out.len();
        let (chunk, tail) = rest.split_at(count);
        rest = tail;
        let mut nameoff = DIRENT_SIZE * count;
        for name in chunk {
            let id = target(name);
            out.extend_from_slice(&nids[id].to_le_bytes());
            out.extend_from_slice(&(nameoff as u16).to_le_bytes());
            out.push(file_type(&tree.inodes[id].kind));
            out.push(0);
            nameoff += name.len();
        }
        for name in chunk {
            out.extend_from_slice(name);
        }
        debug_assert!(out.len() - block_start <= BLOCK);
    }
    out
}

/// The kernel's FT_* values.
fn file_type(kind: &Kind) -> u8 {
    match kind {
        Kind::File(_) => 1,
        Kind::Dir(_) => 2,
        Kind::CharDevice { .. } => 3,
        Kind::BlockDevice { .. } => 4,
        Kind::Fifo => 5,
        Kind::Socket => 6,
        Kind::Symlink(_) => 7,
    }
}

/// The kernel's new_encode_dev(); the importer checks major < 2^12, minor < 2^20.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn inode_bytes(inode: &Inode, p: &Placed, nlink: u32, ino: u32) -> Vec<u8> {
    let (ifmt, i_u) = match &inode.kind {
        Kind::File(_) => (0o100000, 0),
        Kind::Dir(_) => (0o040000, 0),
        Kind::Symlink(_) => (0o120000, 0),
        Kind::CharDevice { major, minor } => (0o020000, encode_dev(*major, *minor)),
        Kind::BlockDevice { major, minor } => (0o060000, encode_dev(*major, *minor)),
        Kind::Fifo => (0o010000, 0),
        Kind::Socket => (0o140000, 0),
    };
    let (format, i_u) = match p.layout {
        Layout::Inline => (FORMAT_EXTENDED_INLINE, i_u),
        Layout::Plain(blkaddr)
            if matches!(inode.kind, Kind::File(_) | Kind::Dir(_) | Kind::Symlink(_)) =>
        {
            (FORMAT_EXTENDED_PLAIN, blkaddr)
        }
        Layout::Plain(_) => (FORMAT_EXTENDED_PLAIN, i_u),
    };
    let icount = match p.ibody.len() {
        0 => 0,
        n => 1 + (n - XATTR_HEADER_SIZE) / 4,
    };
    let m = &inode.meta;
    let mut b = Vec::with_capacity(INODE_SIZE);
    b.extend_from_slice(&format.to_le_bytes());
    b.extend_from_slice(&(icount as u16).to_le_bytes());
    b.extend_from_slice(&(ifmt | (m.perm & 0o7777)).to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&p.size.to_le_bytes());
    b.extend_from_slice(&i_u.to_le_bytes());
    b.extend_from_slice(&ino.to_le_bytes());
    b.extend_from_slice(&m.uid.to_le_bytes());
    b.extend_from_slice(&m.gid.to_le_bytes());
    b.extend_from_slice(&m.mtime.to_le_bytes());
    b.extend_from_slice(&m.mtime_nsec.to_le_bytes());
    b.extend_from_slice(&nlink.to_le_bytes());
    b.resize(INODE_SIZE, 0);
    b
}

fn superblock(inos: u64, blocks: u32) -> [u8; SUPER_SIZE] {
    let mut sb = [0u8; SUPER_SIZE];
    sb[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    // checksum 0 and feature_compat 0: no superblock checksum.
    sb[12] = BLKSZBITS;
    sb[14..16].copy_from_slice(&((ROOT_OFFSET / NID_ALIGN) as u16).to_le_bytes());
    sb[16..24].copy_from_slice(&inos.to_le_bytes());
    // build_time 0: every inode is extended and carries its own mtime.
    sb[36..40].copy_from_slice(&blocks.to_le_bytes());
    // meta_blkaddr 0 (nids count from the start of the image), no shared
    // xattrs, zero uuid and volume name, feature_incompat 0.
    sb
}

fn round_up(n: usize, to: usize) -> usize {
    n.next_multiple_of(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_blocks_never_straddle() {
        let names: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("entry-{i:04}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let chunks = dir_chunks(&refs);
        assert!(chunks.len() > 1);
        assert_eq!(chunks.iter().sum::<usize>(), 1000);
        // 22 bytes per entry: 186 fit in a block.
        assert_eq!(chunks[0], 4096 / 22);
        let size = dir_size(&refs);
        assert_eq!(
            size,
            (chunks.len() - 1) * 4096 + chunks[chunks.len() - 1] * 22
        );
    }

    #[test]
    fn dev_encoding_matches_the_kernel() {
        assert_eq!(encode_dev(1, 3), 0x103);
        assert_eq!(encode_dev(259, 0x12345), 0x1231_0345);
    }

    #[test]
    fn xattr_names() {
        assert_eq!(
            Xattr::new(b"security.capability", b"x").map(|x| x.index),
            Some(6)
        );
        assert_eq!(
            Xattr::new(b"system.posix_acl_access", b"x").map(|x| x.index),
            Some(2)
        );
        assert!(Xattr::new(b"system.other", b"x").is_none());
        assert!(Xattr::new(b"user.", b"x").is_none());
        let x = [Xattr::new(b"user.a", b"bc").expect("valid")];
        // 12 header + 4 entry header + 1 name + 2 value → 20.
        assert_eq!(xattr_ibody_size(&x), 20);
        assert_eq!(xattr_ibody(&x).len(), 20);
    }
}
