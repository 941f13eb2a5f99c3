//! The write quota of a run (`limits.write`): what the guest may add to its
//! shares, whatever it deletes meanwhile.
//!
//! A file is charged for every byte its size grows by (WRITE past the end,
//! SETATTR to a larger size, FALLOCATE that extends it or, with KEEP_SIZE,
//! reserves blocks past it, INSERT_RANGE), holes included: blocks inside a
//! file's size are then always paid for, so overwriting, filling a hole or
//! punching one costs nothing more. Every new name costs a little
//! (`NAME_COST`, `DIR_COST` for a directory) plus its length, a symlink
//! its target too, and an extended attribute its name and value. Nothing
//! is given back: a deleted file's blocks may live on in an open handle,
//! another hard link or a node the guest still holds, so the quota bounds
//! what a run writes, not what it keeps. COPY_FILE_RANGE and TMPFILE are
//! not served (ENOSYS), so nothing else adds data.

use super::sys::SysResult;

/// What a new file, fifo, socket, symlink or hard link costs besides its name.
pub const NAME_COST: u64 = 512;
/// What a new directory costs besides its name: a block.
pub const DIR_COST: u64 = 4096;

/// Bytes a run may still add to its shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    limit: u64,
    used: u64,
}

impl Quota {
    pub fn new(limit: u64) -> Quota {
        Quota { limit, used: 0 }
    }

    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Ok when `n` more bytes fit; ENOSPC when they don't.
    pub fn check(&self, n: u64) -> SysResult<()> {
        if n > self.remaining() {
            return Err(libc::ENOSPC);
        }
        Ok(())
    }

    /// Counts `n` bytes added (checked with `check` first).
    pub fn charge(&mut self, n: u64) {
        self.used = self.used.saturating_add(n);
    }
}

/// How much a file of `size` bytes grows when its size becomes at least
/// `end`.
pub fn growth(size: u64, end: u64) -> u64 {
    end.saturating_sub(size)
}

/// FALLOCATE's flags (linux/falloc.h).
pub const FALLOC_KEEP_SIZE: u32 = 0x01;
pub const FALLOC_PUNCH_HOLE: u32 = 0x02;
pub const FALLOC_COLLAPSE_RANGE: u32 = 0x08;
pub const FALLOC_ZERO_RANGE: u32 = 0x10;
pub const FALLOC_INSERT_RANGE: u32 = 0x20;

/// What FALLOCATE of `len` bytes at `offset` with `mode` adds to a file of
/// `size` bytes: the growth of its size, or with KEEP_SIZE the blocks it
/// reserves past the end; INSERT_RANGE grows it by `len`; punching and
/// collapsing add nothing.
pub fn fallocate_growth(mode: u32, size: u64, offset: u64, len: u64) -> u64 {
    let end = offset.saturating_add(len);
    if mode & (FALLOC_PUNCH_HOLE | FALLOC_COLLAPSE_RANGE) != 0 {
        0
    } else if mode & FALLOC_INSERT_RANGE != 0 {
        len
    } else if mode & FALLOC_KEEP_SIZE != 0 {
        growth(size.max(offset), end)
    } else {
        growth(size, end)
    }
}

/// What a new name costs: `kind` is S_IFDIR or another S_IFMT.
pub fn name_cost(kind: u32, name_len: usize) -> u64 {
    let base = if kind == libc::S_IFDIR {
        DIR_COST
    } else {
        NAME_COST
    };
    base + name_len as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallocate_modes() {
        // A 100-byte file.
        assert_eq!(fallocate_growth(0, 100, 0, 50), 0);
        assert_eq!(fallocate_growth(0, 100, 50, 100), 50);
        // The hole between the end and the offset is charged too.
        assert_eq!(fallocate_growth(0, 100, 200, 100), 200);
        assert_eq!(fallocate_growth(FALLOC_ZERO_RANGE, 100, 200, 100), 200);
        // KEEP_SIZE: only the blocks past the end.
        assert_eq!(fallocate_growth(FALLOC_KEEP_SIZE, 100, 200, 100), 100);
        assert_eq!(fallocate_growth(FALLOC_KEEP_SIZE, 100, 50, 100), 50);
        assert_eq!(
            fallocate_growth(FALLOC_KEEP_SIZE | FALLOC_PUNCH_HOLE, 100, 0, 1 << 40),
            0
        );
        assert_eq!(fallocate_growth(FALLOC_COLLAPSE_RANGE, 8192, 0, 4096), 0);
        assert_eq!(fallocate_growth(FALLOC_INSERT_RANGE, 8192, 0, 4096), 4096);
        assert_eq!(fallocate_growth(0, 0, u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn check_and_charge() {
        let mut q = Quota::new(1000);
        assert_eq!(q.check(1000), Ok(()));
        q.charge(600);
        assert_eq!(q.check(401), Err(libc::ENOSPC));
        assert_eq!(q.remaining(), 400);
        q.charge(u64::MAX);
        assert_eq!(q.remaining(), 0);
        assert_eq!(name_cost(libc::S_IFDIR, 3), 4099);
        assert_eq!(name_cost(libc::S_IFREG, 3), 515);
    }
}
