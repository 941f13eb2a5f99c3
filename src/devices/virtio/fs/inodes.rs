//! The tables behind FUSE node IDs and file handles: each node is one host
//! inode of one share, held open as an O_PATH fd, with the kernel's lookup
//! count; each handle is one really opened host file or directory.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use super::sys::SysResult;

/// Default cap on live nodes (each holds a host fd).
pub const MAX_NODES: usize = 1 << 20;
/// Default cap on open handles.
pub const MAX_HANDLES: usize = 1 << 16;

/// What identifies a host inode within one share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub share: usize,
    pub dev: u64,
    pub ino: u64,
}

/// One host inode the guest knows by a node ID.
pub struct Node {
    /// O_PATH|O_NOFOLLOW fd of the inode itself.
    pub fd: OwnedFd,
    pub key: InodeKey,
    /// The S_IFMT bits; an inode never changes type.
    pub kind: u32,
    /// The share's top directory (where hidden names apply).
    pub is_top: bool,
    /// The kernel's lookup count.
    pub refs: u64,
    /// A share's top directory, known by the same ID from the server's
    /// start to its end, whatever the lookup count ([`Nodes::pin`]).
    pub pinned: bool,
}

impl Node {
    pub fn share(&self) -> usize {
        self.key.share
    }
}

/// Nodes by ID and by inode.
pub struct Nodes {
    by_id: HashMap<u64, Node>,
    by_key: HashMap<InodeKey, u64>,
    next_id: u64,
    pub max: usize,
}

impl Nodes {
    pub fn new() -> Self {
        Nodes {
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            // 1 is the synthetic root, never in the table.
            next_id: 2,
            max: MAX_NODES,
        }
    }

    /// Gives the nodes added from now on IDs from a random point above
    /// 2^40, once the shares are pinned: a guest restored from a warm
    /// snapshot may still hold IDs another server gave, which must name
    /// nothing here rather than whatever this server gave the same ID.
    pub fn start_ids_randomly(&mut self) -> std::io::Result<()> {
        self.next_id = self.next_id.max((1 << 40) + random_offset()?);
        Ok(())
    }

    pub fn get(&self, id: u64) -> Option<&Node> {
        self.by_id.get(&id)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Counts one more lookup of `key`: the existing node (and `fd` is
    /// dropped) or a new one holding `fd`. Returns its ID.
    pub fn insert_or_ref(
        &mut self,
        key: InodeKey,
        kind: u32,
        is_top: bool,
        fd: OwnedFd,
    ) -> SysResult<u64> {
        if let Some(&id) = self.by_key.get(&key) {
            if let Some(node) = self.by_id.get_mut(&id) {
                node.refs = node.refs.saturating_add(1);
                return Ok(id);
            }
        }
        if self.by_id.len() >= self.max {
            return Err(libc::ENFILE);
        }
        Ok(self.add(Node {
            fd,
            key,
            kind,
            is_top,
            refs: 1,
            pinned: false,
        }))
    }

    /// Adds `node` with the next ID.
    fn add(&mut self, node: Node) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.by_key.insert(node.key, id);
        self.by_id.insert(id, node);
        id
    }

    /// Adds a share's top directory with the next ID and no lookups, for
    /// good: a guest restored from a warm snapshot holds the top
    /// directories it looked up under another server, by these IDs
    /// (the shares are pinned in order, so share `i` is `2 + i`).
    pub fn pin(&mut self, key: InodeKey, fd: OwnedFd) -> u64 {
        self.add(Node {
            fd,
            key,
            kind: libc::S_IFDIR,
            is_top: true,
            refs: 0,
            pinned: true,
        })
    }

    /// Counts one more lookup of an existing node.
    pub fn add_ref(&mut self, id: u64) {
        if let Some(node) = self.by_id.get_mut(&id) {
            node.refs = node.refs.saturating_add(1);
        }
    }

    /// Drops `n` lookups of `id`; the node and its fd go at zero. Unknown
    /// IDs are ignored (FORGET has no reply to carry an error).
    pub fn forget(&mut self, id: u64, n: u64) {
        let Some(node) = self.by_id.get_mut(&id) else {
            return;
        };
        node.refs = node.refs.saturating_sub(n);
        if node.refs == 0 && !node.pinned {
            let key = node.key;
            self.by_id.remove(&id);
            self.by_key.remove(&key);
        }
    }

    /// Forgets every node but the pinned ones.
    pub fn clear(&mut self) {
        self.by_id.retain(|_, node| node.pinned);
        let by_id = &self.by_id;
        self.by_key.retain(|_, id| by_id.contains_key(id));
    }
}

/// A random number below 2^40.
fn random_offset() -> std::io::Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: bytes is valid for writes of its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::from_ne_bytes(bytes) >> 24)
}

/// What an open handle refers to.
pub enum HandleKind {
    /// A regular file opened for I/O.
    File(OwnedFd),
    /// A directory opened O_RDONLY for getdents64; `is_top` when it is a
    /// share's top directory.
    Dir { fd: OwnedFd, is_top: bool },
    /// The synthetic root directory.
    Root,
}

pub struct Handle {
    /// The share of the opened inode (None for the synthetic root).
    pub share: Option<usize>,
    pub kind: HandleKind,
    /// Opened O_APPEND: every write goes to the end, whatever its offset.
    pub append: bool,
}

/// Open handles by fh.
pub struct Handles {
    map: HashMap<u64, Handle>,
    next: u64,
    pub max: usize,
}

impl Handles {
    pub fn new() -> Self {
        Handles {
            map: HashMap::new(),
            next: 1,
            max: MAX_HANDLES,
        }
    }

    /// Gives the handles opened from now on numbers from a random point
    /// above 2^40, as [`Nodes::start_ids_randomly`] does for nodes.
    pub fn start_randomly(&mut self) -> std::io::Result<()> {
        self.next = self.next.max((1 << 40) + random_offset()?);
        Ok(())
    }

    pub fn insert(&mut self, handle: Handle) -> SysResult<u64> {
        if self.map.len() >= self.max {
            return Err(libc::ENFILE);
        }
        let fh = self.next;
        self.next += 1;
        self.map.insert(fh, handle);
        Ok(fh)
    }

    pub fn get(&self, fh: u64) -> SysResult<&Handle> {
        self.map.get(&fh).ok_or(libc::EBADF)
    }

    pub fn remove(&mut self, fh: u64) -> SysResult<Handle> {
        self.map.remove(&fh).ok_or(libc::EBADF)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }
}
