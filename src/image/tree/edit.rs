//! Editing a `Tree` by path: lookup, insert with extraction semantics, hard
//! links, removal and mkdir -p.
//!
//! Paths are byte strings: a leading "/", empty and "." components are
//! dropped (so "/etc", "./etc" and "etc" are the same entry), ".." is
//! rejected, and "" or "/" is the root. Nothing here follows symlinks: a path
//! names entries of directories, as in a tar archive or an overlay's upper
//! directory. Replaced and removed inodes stay in `Tree::inodes`, unreachable
//! (until `prune`).
//!
//! Whatever feeds a tree (a tarball, a build VM's export stream, the
//! project's files) is untrusted, so paths are bounded in length
//! (`MAX_PATH_LEN`) and depth (`MAX_DEPTH`), and a tree in inodes
//! (`Tree::max_inodes`, `limits.inodes`), each checked before anything is
//! allocated: one directory per component of deep paths made a 20 MB
//! stream take gigabytes.

use std::collections::BTreeMap;

use super::{Inode, InodeId, Kind, Meta, Tree, MAX_NAME_LEN};

/// The longest path a tree takes, normalised ("usr/bin/env"): what fits
/// PATH_MAX (4096 bytes) once the guest puts "/" before it and a NUL after.
pub const MAX_PATH_LEN: usize = 4094;
/// The most names a path may have below the root. Debian's deepest paths
/// have about 15; nothing real comes near this, and it bounds what one
/// entry can make a tree allocate.
pub const MAX_DEPTH: usize = 256;
/// How much of a path an error message shows.
const SHOWN: usize = 200;

/// A path operation that failed, and the path it was given.
#[derive(Debug, thiserror::Error)]
#[error("{path:?}: {kind}")]
pub struct TreeError {
    pub path: String,
    pub kind: TreeErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeErrorKind {
    #[error("the path has a \"..\" component")]
    DotDot,
    #[error("a name is longer than {MAX_NAME_LEN} bytes")]
    NameTooLong,
    #[error("parent {0:?} is not a directory")]
    ParentNotDir(String),
    #[error("it exists and is not a directory")]
    NotDir,
    #[error("the root can only be replaced by a directory")]
    RootNotDir,
    #[error("a hard link cannot replace the root")]
    LinkOverRoot,
    #[error("a hard link cannot point at a directory")]
    LinkToDir,
    #[error("inode {0} does not exist")]
    NoInode(InodeId),
    #[error("no such file or directory")]
    NotFound,
    #[error("the path is longer than {MAX_PATH_LEN} bytes")]
    PathTooLong,
    #[error("the path is more than {MAX_DEPTH} directories deep")]
    TooDeep,
    #[error("the image would hold more than {0} inodes (limits.inodes in the settings file)")]
    TooManyInodes(usize),
}

impl TreeError {
    pub(in crate::image) fn new(path: &[u8], kind: TreeErrorKind) -> TreeError {
        TreeError {
            path: shown(path),
            kind,
        }
    }
}

pub(in crate::image) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A path for a message: its first `SHOWN` bytes and how long it is.
pub(in crate::image) fn shown(path: &[u8]) -> String {
    if path.len() <= SHOWN {
        return lossy(path);
    }
    format!("{}… ({} bytes)", lossy(&path[..SHOWN]), path.len())
}

/// Splits a path into its names (see the module's doc), each at most 255
/// bytes, at most `MAX_DEPTH` of them, at most `MAX_PATH_LEN` bytes joined.
pub fn components(path: &[u8]) -> Result<Vec<&[u8]>, TreeError> {
    let mut out = Vec::new();
    let mut len = 0;
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(TreeError::new(path, TreeErrorKind::DotDot)),
            _ if c.len() > MAX_NAME_LEN => {
                return Err(TreeError::new(path, TreeErrorKind::NameTooLong))
            }
            _ => {
                len += usize::from(!out.is_empty()) + c.len();
                check_path(out.len() + 1, len).map_err(|kind| TreeError::new(path, kind))?;
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// Whether a path of `depth` names, `len` bytes joined, is within bounds.
pub fn check_path(depth: usize, len: usize) -> Result<(), TreeErrorKind> {
    if len > MAX_PATH_LEN {
        return Err(TreeErrorKind::PathTooLong);
    }
    if depth > MAX_DEPTH {
        return Err(TreeErrorKind::TooDeep);
    }
    Ok(())
}

/// Whether `names` (a prefix and a path joined, say) are within bounds.
pub fn check_names(names: &[&[u8]]) -> Result<(), TreeErrorKind> {
    let len = names.iter().map(|n| n.len()).sum::<usize>() + names.len().saturating_sub(1);
    check_path(names.len(), len)
}

/// A symlink target an image can hold: not empty, shorter than PATH_MAX,
/// no NUL byte. Whether it may climb out of the root is the caller's call.
pub(in crate::image) fn check_link_target(target: &[u8]) -> Result<(), String> {
    if target.is_empty() {
        return Err("the symlink target is empty".into());
    }
    if target.len() >= 4096 || target.contains(&0) {
        return Err("the symlink target is longer than PATH_MAX or has a NUL byte".into());
    }
    Ok(())
}

/// A device number Linux's dev_t can hold (12-bit major, 20-bit minor).
pub(in crate::image) fn check_dev(major: u32, minor: u32) -> Result<(), String> {
    if major >= 1 << 12 || minor >= 1 << 20 {
        return Err(format!(
            "device number {major}:{minor} is too large for Linux's dev_t"
        ));
    }
    Ok(())
}

/// Names joined by "/", without a leading one: the form error messages use.
pub(in crate::image) fn join(names: &[&[u8]]) -> Vec<u8> {
    names.join(&b'/')
}

impl Tree {
    /// The inode at `path`; `None` when there is none or the path is invalid.
    pub fn lookup(&self, path: &[u8]) -> Option<InodeId> {
        let mut id = 0;
        for name in components(path).ok()? {
            id = *self.entries(id)?.get(name)?;
        }
        self.inodes.get(id).map(|_| id)
    }

    /// The entries of directory `id`; `None` if it is not a directory.
    pub fn entries(&self, id: InodeId) -> Option<&BTreeMap<Vec<u8>, InodeId>> {
        match &self.inodes.get(id)?.kind {
            Kind::Dir(entries) => Some(entries),
            _ => None,
        }
    }

    /// Puts `inode` at `path` and returns its id. Whatever was there is
    /// replaced, except that a directory over a directory only takes the new
    /// metadata and keeps its entries (and its id). Missing parent
    /// directories are created with `parents` as their metadata.
    pub fn insert(
        &mut self,
        path: &[u8],
        inode: Inode,
        parents: &Meta,
    ) -> Result<InodeId, TreeError> {
        let names = components(path)?;
        let Some((name, dirs)) = names.split_last() else {
            return match inode.kind {
                Kind::Dir(_) => match self.inodes.first_mut() {
                    Some(root) => {
                        root.meta = inode.meta;
                        Ok(0)
                    }
                    None => Err(TreeError::new(path, TreeErrorKind::NotFound)),
                },
                _ => Err(TreeError::new(path, TreeErrorKind::RootNotDir)),
            };
        };
        let dir = self.walk_dirs(path, dirs, parents)?;
        self.put(dir, name, inode)
            .map_err(|kind| TreeError::new(path, kind))
    }

    /// Makes `path` another name of inode `target` (not a directory),
    /// replacing what was there; missing parents are created as in `insert`.
    pub fn link(&mut self, path: &[u8], target: InodeId, parents: &Meta) -> Result<(), TreeError> {
        match self.inodes.get(target).map(|i| &i.kind) {
            None => return Err(TreeError::new(path, TreeErrorKind::NoInode(target))),
            Some(Kind::Dir(_)) => return Err(TreeError::new(path, TreeErrorKind::LinkToDir)),
            Some(_) => {}
        }
        let names = components(path)?;
        let Some((name, dirs)) = names.split_last() else {
            return Err(TreeError::new(path, TreeErrorKind::LinkOverRoot));
        };
        let dir = self.walk_dirs(path, dirs, parents)?;
        self.put_link(dir, name, target)
            .ok_or_else(|| TreeError::new(path, TreeErrorKind::NotFound))
    }

    /// Removes the entry at `path` (a directory with everything in it);
    /// false if there was none. Removing the root empties it.
    pub fn remove(&mut self, path: &[u8]) -> Result<bool, TreeError> {
        let names = components(path)?;
        let Some((name, dirs)) = names.split_last() else {
            return Ok(match self.inodes.first_mut().map(|i| &mut i.kind) {
                Some(Kind::Dir(entries)) => {
                    entries.clear();
                    true
                }
                _ => false,
            });
        };
        let mut dir = 0;
        for d in dirs {
            match self.entries(dir).and_then(|e| e.get(*d)) {
                Some(&id) => dir = id,
                None => return Ok(false),
            }
        }
        Ok(match self.inodes.get_mut(dir).map(|i| &mut i.kind) {
            Some(Kind::Dir(entries)) => entries.remove(*name).is_some(),
            _ => false,
        })
    }

    /// mkdir -p: existing directories stay as they are, missing ones are
    /// created with `meta`, anything else in the way is an error.
    pub fn ensure_dir(&mut self, path: &[u8], meta: &Meta) -> Result<InodeId, TreeError> {
        let names = components(path)?;
        match self.walk_dirs(path, &names, meta) {
            Err(TreeError {
                kind: TreeErrorKind::ParentNotDir(p),
                ..
            }) if p.as_bytes() == join(&names).as_slice() => {
                Err(TreeError::new(path, TreeErrorKind::NotDir))
            }
            r => r,
        }
    }

    /// Walks `names` from the root, each a directory; missing ones are
    /// created with metadata `create`.
    fn walk_dirs(
        &mut self,
        path: &[u8],
        names: &[&[u8]],
        create: &Meta,
    ) -> Result<InodeId, TreeError> {
        let mut dir = 0;
        for (i, name) in names.iter().enumerate() {
            let found = self.entries(dir).and_then(|e| e.get(*name)).copied();
            dir = match found {
                Some(id) if self.entries(id).is_some() => id,
                Some(_) => {
                    let parent = lossy(&join(&names[..=i]));
                    return Err(TreeError::new(path, TreeErrorKind::ParentNotDir(parent)));
                }
                None => self
                    .put(dir, name, Inode::empty_dir(create.clone()))
                    .map_err(|kind| TreeError::new(path, kind))?,
            };
        }
        Ok(dir)
    }

    /// Puts `inode` in directory `dir` under `name` with `insert`'s
    /// semantics; `NotFound` if `dir` is not a directory, `TooManyInodes`
    /// (before anything changes) if the tree is full.
    pub(in crate::image) fn put(
        &mut self,
        dir: InodeId,
        name: &[u8],
        inode: Inode,
    ) -> Result<InodeId, TreeErrorKind> {
        let existing = self
            .entries(dir)
            .ok_or(TreeErrorKind::NotFound)?
            .get(name)
            .copied();
        if let (Some(id), Kind::Dir(_)) = (existing, &inode.kind) {
            if self.entries(id).is_some() {
                self.inodes[id].meta = inode.meta;
                return Ok(id);
            }
        }
        if self.inodes.len() >= self.max_inodes {
            return Err(TreeErrorKind::TooManyInodes(self.max_inodes));
        }
        let id = self.inodes.len();
        self.inodes.push(inode);
        self.put_link(dir, name, id)
            .ok_or(TreeErrorKind::NotFound)?;
        Ok(id)
    }

    /// Points `name` in directory `dir` at inode `id`.
    pub(in crate::image) fn put_link(
        &mut self,
        dir: InodeId,
        name: &[u8],
        id: InodeId,
    ) -> Option<()> {
        match &mut self.inodes.get_mut(dir)?.kind {
            Kind::Dir(entries) => {
                entries.insert(name.to_vec(), id);
                Some(())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tree::FileData;

    fn meta(perm: u16) -> Meta {
        Meta {
            perm,
            mtime: 5,
            ..Meta::default()
        }
    }

    fn symlink(target: &str) -> Inode {
        Inode {
            meta: meta(0o777),
            kind: Kind::Symlink(target.as_bytes().to_vec()),
        }
    }

    fn names(tree: &Tree, path: &str) -> Vec<String> {
        let id = tree.lookup(path.as_bytes()).expect(path);
        tree.entries(id)
            .expect("dir")
            .keys()
            .map(|k| lossy(k))
            .collect()
    }

    #[test]
    fn paths_are_normalised() {
        let c = |p: &str| components(p.as_bytes()).expect("valid").concat();
        assert_eq!(c("./etc/passwd"), c("/etc//passwd"));
        assert!(components(b"./").expect("root").is_empty());
        assert!(components(b"/").expect("root").is_empty());
        let err = components(b"a/../b").expect_err("..");
        assert_eq!(
            err.to_string(),
            "\"a/../b\": the path has a \"..\" component"
        );
        assert!(components(b"../etc").is_err());
        assert!(components(&[b'x'; 256]).is_err());
    }

    #[test]
    fn insert_replaces_and_merges() {
        let mut t = Tree::new();
        let parents = meta(0o700);
        let a = t.insert(b"/a/b/c", symlink("x"), &parents).expect("insert");
        assert_eq!(t.lookup(b"a/b/c"), Some(a));
        let b = t.lookup(b"a/b").expect("parent made");
        assert_eq!(t.inodes[b].meta, parents);
        // A directory over a directory keeps its entries and id.
        let b2 = t
            .insert(b"a/b", Inode::empty_dir(meta(0o751)), &parents)
            .expect("dir");
        assert_eq!(b2, b);
        assert_eq!(t.inodes[b].meta.perm, 0o751);
        assert_eq!(names(&t, "a/b"), ["c"]);
        // Anything else replaces.
        t.insert(b"a/b", symlink("y"), &parents).expect("replace");
        assert_eq!(t.lookup(b"a/b/c"), None);
        let err = t
            .insert(b"a/b/d", symlink("z"), &parents)
            .expect_err("not a dir");
        assert_eq!(
            err.to_string(),
            "\"a/b/d\": parent \"a/b\" is not a directory"
        );
        // The root takes a directory's metadata only.
        assert_eq!(
            t.insert(b"/", Inode::empty_dir(meta(0o711)), &parents).ok(),
            Some(0)
        );
        assert_eq!(t.inodes[0].meta.perm, 0o711);
        assert_eq!(names(&t, ""), ["a"]);
        let err = t.insert(b".", symlink("x"), &parents).expect_err("root");
        assert_eq!(err.kind, TreeErrorKind::RootNotDir);
    }

    #[test]
    fn links_and_removal() {
        let mut t = Tree::new();
        let p = Meta::implicit_dir();
        let file = Inode {
            meta: meta(0o644),
            kind: Kind::File(FileData::default()),
        };
        let f = t.insert(b"bin/busybox", file, &p).expect("file");
        t.link(b"bin/sh", f, &p).expect("link");
        t.link(b"sbin/init", f, &p).expect("link with parents");
        assert_eq!(t.lookup(b"sbin/init"), Some(f));
        assert_eq!(t.lookup(b"bin/sh"), Some(f));
        let dir = t.lookup(b"bin").expect("bin");
        assert_eq!(
            t.link(b"x", dir, &p).expect_err("dir").kind,
            TreeErrorKind::LinkToDir
        );
        assert_eq!(
            t.link(b"/", f, &p).expect_err("root").kind,
            TreeErrorKind::LinkOverRoot
        );
        assert_eq!(
            t.link(b"x", 999, &p).expect_err("missing").kind,
            TreeErrorKind::NoInode(999)
        );

        assert!(t.remove(b"bin/sh").expect("rm"));
        assert!(!t.remove(b"bin/sh").expect("rm again"));
        assert!(!t.remove(b"bin/busybox/x").expect("under a file"));
        assert!(!t.remove(b"nope/x").expect("missing parent"));
        assert!(t.remove(b"bin").expect("rm -r"));
        assert_eq!(t.lookup(b"bin/busybox"), None);
        assert!(t.remove(b"/a/../b").is_err());
        assert!(t.remove(b"/").expect("empty the root"));
        assert!(names(&t, "/").is_empty());
        assert_eq!(t.lookup(b"/"), Some(0));
    }

    #[test]
    fn ensure_dir_is_mkdir_p() {
        let mut t = Tree::new();
        let p = Meta::implicit_dir();
        let a = t
            .insert(b"a", Inode::empty_dir(meta(0o700)), &p)
            .expect("a");
        let c = t.ensure_dir(b"a/b/c", &meta(0o750)).expect("mkdir -p");
        assert_eq!(t.inodes[a].meta.perm, 0o700, "existing dirs untouched");
        let b = t.lookup(b"a/b").expect("b");
        assert_eq!(
            (t.inodes[b].meta.perm, t.inodes[c].meta.perm),
            (0o750, 0o750)
        );
        assert_eq!(t.ensure_dir(b"/a/b/c/", &p).ok(), Some(c));
        assert_eq!(t.ensure_dir(b"", &p).ok(), Some(0));
        t.insert(b"a/f", symlink("x"), &p).expect("f");
        let err = t.ensure_dir(b"a/f", &p).expect_err("file");
        assert_eq!(err.to_string(), "\"a/f\": it exists and is not a directory");
        let err = t.ensure_dir(b"a/f/g", &p).expect_err("file parent");
        assert_eq!(err.kind, TreeErrorKind::ParentNotDir("a/f".into()));
    }
}
