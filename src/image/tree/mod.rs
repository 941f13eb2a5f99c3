//! The image tree: the model of a filesystem an image holds (`Tree`, its
//! `Inode`s, their `Kind` and `Meta`, where file data lies in the image
//! file) and the walk that orders it. `edit` changes a tree by path, the
//! `erofs` writer encodes one, `compact` copies between trees.

mod edit;

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::bytes_json;
use super::error::ErofsError;

pub(super) use edit::{check_dev, check_link_target, join, lossy, shown};
pub use edit::{check_names, check_path, components, TreeError, TreeErrorKind};
#[cfg(test)]
pub use edit::{MAX_DEPTH, MAX_PATH_LEN};

/// Block size of the image file that `FileData` points into.
pub const BLOCK_SIZE: u64 = 4096;

/// Longest name of a directory entry (EROFS_NAME_LEN).
pub const MAX_NAME_LEN: usize = 255;
/// How many inodes a tree may hold unless `limits.inodes` says otherwise:
/// ten times a full Debian image, at about 100 to 500 bytes of memory each.
pub const MAX_INODES: usize = 1 << 20;

/// Index of an inode in `Tree::inodes`.
pub type InodeId = usize;

/// A filesystem tree; `inodes[0]` is the root directory. Edits may leave
/// unreachable inodes behind; the writer skips them. Stored beside an image
/// as JSON (`to_json`), its `FileData` pointing into that image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub inodes: Vec<Inode>,
    /// The most `inodes` may hold (see `edit`); not stored.
    #[serde(skip, default = "default_max_inodes")]
    pub(super) max_inodes: usize,
}

fn default_max_inodes() -> usize {
    MAX_INODES
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub meta: Meta,
    pub kind: Kind,
}

/// Ownership, permissions (the low 12 bits of st_mode), mtime and xattrs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtime_nsec: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File(FileData),
    /// Entries by name (never "." or ".."), sorted by bytes as erofs requires.
    Dir(#[serde(with = "bytes_json::entries")] BTreeMap<Vec<u8>, InodeId>),
    Symlink(#[serde(with = "bytes_json")] Vec<u8>),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    /// From a build VM's export (tar can't hold sockets).
    Socket,
}

/// Where `ImageWriter::write_file_data` put a file's content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileData {
    pub(super) blkaddr: u32,
    pub size: u64,
}

impl FileData {
    /// The content's byte offsets in the image file.
    pub fn range(&self) -> Range<u64> {
        let start = u64::from(self.blkaddr) * BLOCK_SIZE;
        start..start + self.size
    }
}

impl Tree {
    /// The reachable inodes in the writer's order: breadth-first from the
    /// root, each directory's entries by name, each inode once.
    pub fn reachable(&self) -> Result<Vec<InodeId>, ErofsError> {
        walk(self).map(|w| w.order)
    }
}

/// erofs's xattr name prefixes (EROFS_XATTR_INDEX_*) and their indexes.
const XATTR_PREFIXES: [(&[u8], u8); 5] = [
    (b"user.", 1),
    (b"system.posix_acl_access", 2),
    (b"system.posix_acl_default", 3),
    (b"trusted.", 4),
    (b"security.", 6),
];

/// One extended attribute, its name split into erofs's prefix index and suffix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Xattr {
    pub(super) index: u8,
    #[serde(with = "bytes_json")]
    pub(super) suffix: Vec<u8>,
    #[serde(with = "bytes_json")]
    pub(super) value: Vec<u8>,
}

impl Xattr {
    /// Maps a full name ("security.capability") to erofs's encoding; `None`
    /// for namespaces erofs can't store or names and values that are too long.
    pub fn new(name: &[u8], value: &[u8]) -> Option<Xattr> {
        let (prefix, index) = XATTR_PREFIXES.iter().find(|(p, _)| name.starts_with(p))?;
        let suffix = &name[prefix.len()..];
        let acl = *index == 2 || *index == 3;
        if (acl && !suffix.is_empty()) || (!acl && suffix.is_empty()) {
            return None;
        }
        if suffix.len() > usize::from(u8::MAX) || value.len() > usize::from(u16::MAX) {
            return None;
        }
        Some(Xattr {
            index: *index,
            suffix: suffix.to_vec(),
            value: value.to_vec(),
        })
    }

    /// The full name ("security.capability"), as `new` took it; an index
    /// erofs does not know (none of ours) gives the suffix alone.
    pub(super) fn name(&self) -> Vec<u8> {
        let prefix = XATTR_PREFIXES
            .iter()
            .find(|(_, i)| *i == self.index)
            .map_or(&b""[..], |(p, _)| p);
        [prefix, &self.suffix[..]].concat()
    }
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Meta {
    /// What directories created on the way to a path get: 0755 root:root, mtime 0.
    pub fn implicit_dir() -> Meta {
        Meta {
            perm: 0o755,
            ..Meta::default()
        }
    }
}

impl Inode {
    pub fn empty_dir(meta: Meta) -> Inode {
        Inode {
            meta,
            kind: Kind::Dir(BTreeMap::new()),
        }
    }
}

impl Tree {
    /// The JSON form stored beside an image.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses and checks a stored tree: the root is a directory, every
    /// entry refers to an inode, no directory has two names.
    pub fn from_json(json: &[u8]) -> Result<Tree, serde_json::Error> {
        let tree: Tree = serde_json::from_slice(json)?;
        tree.reachable()
            .map_err(|e| <serde_json::Error as serde::de::Error>::custom(e.to_string()))?;
        Ok(tree)
    }

    /// Just an empty root directory, 0755 root:root, mtime 0.
    pub fn new() -> Tree {
        Tree::from_inodes(vec![Inode::empty_dir(Meta::implicit_dir())])
    }

    /// A tree of these inodes (the root first), capped at `MAX_INODES`.
    pub fn from_inodes(inodes: Vec<Inode>) -> Tree {
        Tree {
            inodes,
            max_inodes: MAX_INODES,
        }
    }

    /// Caps the inodes the tree may hold (`limits.inodes`); those it holds
    /// already stay.
    pub fn set_max_inodes(&mut self, max: usize) {
        self.max_inodes = max;
    }

    pub fn max_inodes(&self) -> usize {
        self.max_inodes
    }

    /// Drops the unreachable inodes and renumbers the others in the
    /// writer's order (ids held from before are stale).
    pub fn prune(&mut self) -> Result<(), ErofsError> {
        let order = self.reachable()?;
        if order.len() == self.inodes.len() {
            return Ok(());
        }
        let mut new_id = vec![0; self.inodes.len()];
        for (new, &old) in order.iter().enumerate() {
            new_id[old] = new;
        }
        let mut old: Vec<Option<Inode>> = std::mem::take(&mut self.inodes)
            .into_iter()
            .map(Some)
            .collect();
        let mut inodes = Vec::with_capacity(order.len());
        for id in order {
            let Some(mut inode) = old[id].take() else {
                continue;
            };
            if let Kind::Dir(entries) = &mut inode.kind {
                for child in entries.values_mut() {
                    *child = new_id[*child];
                }
            }
            inodes.push(inode);
        }
        self.inodes = inodes;
        Ok(())
    }
}

/// The reachable inodes in breadth-first order (root first), with each
/// directory's parent and each inode's link count.
pub(super) struct Walk {
    pub(super) order: Vec<InodeId>,
    pub(super) parent: Vec<InodeId>,
    pub(super) nlink: Vec<u32>,
}

/// Walks the tree from the root, checking each entry's name and inode:
/// the writer's order, and what it needs to write directories and inodes.
pub(super) fn walk(tree: &Tree) -> Result<Walk, ErofsError> {
    let bad = |s: String| Err(ErofsError::InvalidTree(s));
    let n = tree.inodes.len();
    if !matches!(tree.inodes.first().map(|i| &i.kind), Some(Kind::Dir(_))) {
        return bad("the root is not a directory".into());
    }
    let mut w = Walk {
        order: vec![0],
        parent: vec![0; n],
        nlink: vec![0; n],
    };
    let mut seen = vec![false; n];
    seen[0] = true;
    w.nlink[0] = 2;
    let mut queue = VecDeque::from([0]);
    while let Some(dir) = queue.pop_front() {
        let Kind::Dir(entries) = &tree.inodes[dir].kind else {
            continue;
        };
        for (name, &child) in entries {
            if name.is_empty()
                || name.len() > MAX_NAME_LEN
                || name.contains(&b'/')
                || name.contains(&0)
                || name == b"."
                || name == b".."
            {
                return bad(format!("bad name {:?}", String::from_utf8_lossy(name)));
            }
            let Some(inode) = tree.inodes.get(child) else {
                return bad(format!("entry refers to missing inode {child}"));
            };
            if matches!(inode.kind, Kind::Dir(_)) {
                if seen[child] {
                    return bad(format!("directory inode {child} is linked twice"));
                }
                w.nlink[dir] += 1;
                w.nlink[child] = 2;
                w.parent[child] = dir;
                queue.push_back(child);
            } else {
                w.nlink[child] += 1;
            }
            if !seen[child] {
                seen[child] = true;
                w.order.push(child);
            }
        }
    }
    Ok(w)
}
