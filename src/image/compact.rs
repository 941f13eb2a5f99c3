//! Copying between images: `compact` rewrites a tree into a fresh canonical
//! image, `copy_subtree` copies part of one image's tree into another's.
//!
//! A canonical image depends only on what its tree holds, not on how the
//! tree got there: the reachable inodes are renumbered in the writer's
//! breadth-first order and their file data copied in that order, so two
//! histories that end with the same files give byte-identical images.

use std::collections::HashMap;
use std::fs::File;

use super::erofs::ImageWriter;
use super::error::ErofsError;
use super::tree::{self, lossy, Inode, InodeId, Kind, Meta, Tree, TreeError};

/// What failed while copying a subtree between images.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("source {path:?}: no such file or directory")]
    SourceMissing { path: String },
    #[error("cannot copy {path:?}")]
    Tree {
        path: String,
        #[source]
        source: TreeError,
    },
    #[error("cannot copy the data of {path:?}")]
    Data {
        path: String,
        #[source]
        source: ErofsError,
    },
    #[error("the source tree is invalid: {0}")]
    InvalidSource(String),
}

fn tree_err(path: &[u8]) -> impl FnOnce(TreeError) -> CopyError {
    let path = lossy(path);
    move |source| CopyError::Tree { path, source }
}

/// Writes a canonical image of `tree` into `to` (truncated first), with file
/// data read from `from`, the image `tree` describes (a different file).
/// Returns the renumbered tree, whose file data points into `to`.
pub fn compact(tree: &Tree, from: &File, to: &File) -> Result<Tree, ErofsError> {
    compact_with_progress(tree, from, to, u64::MAX, &|_| {})
}

/// [`compact`] into at most `limit` bytes, telling `progress` how many
/// bytes of file data each copy took.
pub fn compact_with_progress(
    tree: &Tree,
    from: &File,
    to: &File,
    limit: u64,
    progress: &dyn Fn(u64),
) -> Result<Tree, ErofsError> {
    let order = tree.reachable()?;
    let mut new_id = vec![0; tree.inodes.len()];
    for (new, &old) in order.iter().enumerate() {
        new_id[old] = new;
    }
    let mut writer = ImageWriter::new(to)?.with_limit(limit);
    let mut inodes = Vec::with_capacity(order.len());
    for &old in &order {
        let inode = &tree.inodes[old];
        let kind = match &inode.kind {
            Kind::File(f) => {
                let data = writer.write_file_range(from, f.range())?;
                progress(data.size);
                Kind::File(data)
            }
            Kind::Dir(entries) => Kind::Dir(
                entries
                    .iter()
                    .map(|(name, &id)| (name.clone(), new_id[id]))
                    .collect(),
            ),
            other => other.clone(),
        };
        let mut meta = inode.meta.clone();
        meta.xattrs.sort();
        inodes.push(Inode { meta, kind });
    }
    let mut out = Tree::from_inodes(inodes);
    out.set_max_inodes(tree.max_inodes());
    writer.finish(&out)?;
    Ok(out)
}

/// Copies what is at `source_path` of `src` (whose image is `src_file`) to
/// `dest_path` of `dst`, writing file data through `writer`: a directory
/// with everything in it, merged into a directory already at `dest_path`
/// (so "/" to "/x" copies the root's contents into /x); anything else
/// replaces what is there. Hard links inside the copied subtree stay hard
/// links. Missing parents of `dest_path` are created 0755 root:root.
pub fn copy_subtree(
    dst: &mut Tree,
    writer: &mut ImageWriter<'_>,
    src: &Tree,
    src_file: &File,
    source_path: &[u8],
    dest_path: &[u8],
) -> Result<(), CopyError> {
    tree::components(source_path).map_err(tree_err(source_path))?;
    let top = src
        .lookup(source_path)
        .ok_or_else(|| CopyError::SourceMissing {
            path: lossy(source_path),
        })?;
    let mut copy = Copier {
        writer,
        src,
        src_file,
        files: HashMap::new(),
        dirs_seen: vec![false; src.inodes.len()],
    };
    let dest_names = tree::components(dest_path).map_err(tree_err(dest_path))?;
    let dest = tree::join(&dest_names);
    let inode = copy.inode(top, &dest)?;
    let id = dst
        .insert(&dest, inode, &Meta::implicit_dir())
        .map_err(tree_err(&dest))?;
    copy.note(top, id);
    // Each directory still to copy is a place: its name and parent place,
    // so that a path is built only for a message.
    let mut places = vec![Place {
        parent: None,
        name: &dest,
        depth: dest_names.len(),
        len: dest.len(),
    }];
    let mut stack = vec![(top, id, 0)];
    while let Some((from_dir, to_dir, at)) = stack.pop() {
        let Some(entries) = src.entries(from_dir) else {
            continue;
        };
        let here = places[at];
        for (name, &child) in entries {
            let child_at = Place {
                parent: Some(at),
                name,
                depth: here.depth + 1,
                len: here.len + usize::from(here.len > 0) + name.len(),
            };
            let child_path = || child_at.path(&places);
            let done = copy.files.get(&child).copied();
            let put = match tree::check_path(child_at.depth, child_at.len) {
                Err(kind) => Err(kind),
                Ok(()) => match done {
                    Some(id) => dst
                        .put_link(to_dir, name, id)
                        .map(|()| id)
                        .ok_or(tree::TreeErrorKind::NotDir),
                    None => {
                        let inode = copy.inode(child, &child_path())?;
                        dst.put(to_dir, name, inode).map_err(|kind| match kind {
                            tree::TreeErrorKind::NotFound => tree::TreeErrorKind::NotDir,
                            kind => kind,
                        })
                    }
                },
            };
            let id = match put {
                Ok(id) => id,
                Err(kind) => {
                    return Err(CopyError::Tree {
                        path: tree::shown(&child_path()),
                        source: TreeError::new(&here.path(&places), kind),
                    })
                }
            };
            copy.note(child, id);
            if src.entries(child).is_some() {
                places.push(child_at);
                stack.push((child, id, places.len() - 1));
            }
        }
    }
    Ok(())
}

/// A directory of the destination being copied: its name under its
/// parent's place, and its path's depth and length.
#[derive(Clone, Copy)]
struct Place<'n> {
    parent: Option<usize>,
    name: &'n [u8],
    depth: usize,
    len: usize,
}

impl Place<'_> {
    /// The whole path, from the places before it.
    fn path(&self, places: &[Place<'_>]) -> Vec<u8> {
        let mut names = vec![self.name];
        let mut next = self.parent;
        while let Some(at) = next {
            names.push(places[at].name);
            next = places[at].parent;
        }
        names.retain(|n| !n.is_empty());
        names.reverse();
        tree::join(&names)
    }
}

struct Copier<'a, 'w> {
    writer: &'a mut ImageWriter<'w>,
    src: &'a Tree,
    src_file: &'a File,
    /// Non-directories copied so far: source id → destination id.
    files: HashMap<InodeId, InodeId>,
    dirs_seen: Vec<bool>,
}

impl Copier<'_, '_> {
    /// A copy of source inode `id` for the destination (a directory empty,
    /// its entries copied later); `path` is for error messages.
    fn inode(&mut self, id: InodeId, path: &[u8]) -> Result<Inode, CopyError> {
        let Some(inode) = self.src.inodes.get(id) else {
            return Err(CopyError::InvalidSource(format!(
                "{:?} refers to missing inode {id}",
                lossy(path)
            )));
        };
        let kind = match &inode.kind {
            Kind::File(f) => {
                let data = self
                    .writer
                    .write_file_range(self.src_file, f.range())
                    .map_err(|source| CopyError::Data {
                        path: lossy(path),
                        source,
                    })?;
                Kind::File(data)
            }
            Kind::Dir(_) => {
                if std::mem::replace(&mut self.dirs_seen[id], true) {
                    return Err(CopyError::InvalidSource(format!(
                        "directory inode {id} is linked twice"
                    )));
                }
                Kind::Dir(Default::default())
            }
            other => other.clone(),
        };
        Ok(Inode {
            meta: inode.meta.clone(),
            kind,
        })
    }

    /// Records that source inode `from` became destination inode `to`.
    fn note(&mut self, from: InodeId, to: InodeId) {
        if self.src.entries(from).is_none() {
            self.files.insert(from, to);
        }
    }
}
