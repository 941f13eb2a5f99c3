//! Applies a build VM's export stream (its overlay's upper directory, see
//! `guest_init::ExportRecord`) to a tree, streaming file data into its image.
//!
//! overlayfs semantics: a whiteout deletes, an opaque directory replaces what
//! was at its path, any other directory over a directory only updates its
//! metadata. Every mtime is clamped to the build's epoch (SOURCE_DATE_EPOCH),
//! so a build's output does not depend on when it ran.

use std::collections::HashSet;
use std::io::{self, BufRead, Read};

use guest_init::{ExportEntry, ExportKind, ExportRecord, MAX_LINE};

use super::erofs::{self, ImageWriter};
use super::error::ErofsError;
use super::tree::{self, lossy, Inode, InodeId, Kind, Meta, Tree, TreeError, Xattr};

/// What a stream changed, for the build's output line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Entries applied, whiteouts included.
    pub entries: u64,
    /// Regular files written, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Whiteouts that removed something.
    pub removed: u64,
}

/// What failed while applying an export stream.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read the export stream")]
    Read(#[source] io::Error),
    #[error("an export record is longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("malformed export record")]
    Json(#[source] serde_json::Error),
    #[error("the export stream ended before its End record")]
    Truncated,
    #[error("export entry {path:?}: {reason}")]
    BadEntry { path: String, reason: String },
    #[error("export entry {path:?}: cannot write the file's {size} bytes into the image")]
    FileData {
        path: String,
        size: u64,
        #[source]
        source: ErofsError,
    },
    #[error("export entry {:?}: {}", .0.path, .0.kind)]
    Tree(TreeError),
}

/// Applies the stream read from `reader` up to and including its `End`
/// record; file data goes through `writer`. mtimes after `epoch` become
/// `epoch` (with 0 ns).
pub fn apply_export(
    tree: &mut Tree,
    writer: &mut ImageWriter<'_>,
    reader: &mut impl BufRead,
    epoch: i64,
) -> Result<ExportStats, ExportError> {
    let mut apply = Apply {
        tree,
        stats: ExportStats::default(),
        files: HashSet::new(),
    };
    let mut line = Vec::new();
    loop {
        match read_record(reader, &mut line)? {
            ExportRecord::End => return Ok(apply.stats),
            ExportRecord::Entry(entry) => apply.entry(entry, writer, reader, epoch)?,
        }
    }
}

/// Reads one JSON line into `line` (cleared first) and decodes it.
fn read_record(reader: &mut impl BufRead, line: &mut Vec<u8>) -> Result<ExportRecord, ExportError> {
    line.clear();
    let limit = MAX_LINE as u64 + 1;
    Read::take(&mut *reader, limit)
        .read_until(b'\n', line)
        .map_err(ExportError::Read)?;
    match line.last() {
        Some(b'\n') => {}
        _ if line.len() > MAX_LINE => return Err(ExportError::TooLong),
        _ => return Err(ExportError::Truncated),
    }
    serde_json::from_slice(&line[..line.len() - 1]).map_err(ExportError::Json)
}

struct Apply<'t> {
    tree: &'t mut Tree,
    stats: ExportStats,
    /// Regular files this stream wrote: what hard links may point at.
    /// (Ids, not paths: a path may take 4 KiB.)
    files: HashSet<InodeId>,
}

impl Apply<'_> {
    fn entry(
        &mut self,
        e: ExportEntry,
        writer: &mut ImageWriter<'_>,
        reader: &mut impl BufRead,
        epoch: i64,
    ) -> Result<(), ExportError> {
        let bad = |reason: String| ExportError::BadEntry {
            path: tree::shown(&e.path),
            reason,
        };
        let path = tree::join(&tree::components(&e.path).map_err(ExportError::Tree)?);
        let parents = Meta::implicit_dir();
        self.stats.entries += 1;
        let entry_meta = || meta(&e, epoch).map_err(bad);
        let kind = match &e.kind {
            ExportKind::Whiteout => {
                if path.is_empty() {
                    return Err(bad("the root cannot be deleted".into()));
                }
                if self.tree.remove(&path).map_err(ExportError::Tree)? {
                    self.stats.removed += 1;
                }
                return Ok(());
            }
            ExportKind::HardLink { target } => {
                let target = tree::components(target)
                    .map(|c| tree::join(&c))
                    .map_err(ExportError::Tree)?;
                let found = self
                    .tree
                    .lookup(&target)
                    .filter(|id| self.files.contains(id));
                let Some(id) = found else {
                    return Err(bad(format!(
                        "hard link target {:?} is not a file earlier in the stream",
                        tree::shown(&target)
                    )));
                };
                return self
                    .tree
                    .link(&path, id, &parents)
                    .map_err(ExportError::Tree);
            }
            ExportKind::Dir { opaque } => {
                if *opaque {
                    self.tree.remove(&path).map_err(ExportError::Tree)?;
                }
                Kind::Dir(Default::default())
            }
            ExportKind::File { size } => {
                let meta = entry_meta()?;
                let file_data = |source| ExportError::FileData {
                    path: tree::shown(&e.path),
                    size: *size,
                    source,
                };
                writer.reserve(*size).map_err(file_data)?;
                let data = writer
                    .write_file_data(&mut Read::take(&mut *reader, *size))
                    .map_err(file_data)?;
                if data.size != *size {
                    return Err(bad(format!(
                        "the stream ended after {} of the file's {size} bytes",
                        data.size
                    )));
                }
                self.stats.files += 1;
                self.stats.bytes += size;
                let id = self
                    .tree
                    .insert(
                        &path,
                        Inode {
                            meta,
                            kind: Kind::File(data),
                        },
                        &parents,
                    )
                    .map_err(ExportError::Tree)?;
                self.files.insert(id);
                return Ok(());
            }
            ExportKind::Symlink { target } => {
                tree::check_link_target(target).map_err(bad)?;
                Kind::Symlink(target.clone())
            }
            &ExportKind::CharDevice { major, minor } => {
                tree::check_dev(major, minor).map_err(bad)?;
                Kind::CharDevice { major, minor }
            }
            &ExportKind::BlockDevice { major, minor } => {
                tree::check_dev(major, minor).map_err(bad)?;
                Kind::BlockDevice { major, minor }
            }
            ExportKind::Fifo => Kind::Fifo,
            ExportKind::Socket => Kind::Socket,
        };
        let inode = Inode {
            meta: entry_meta()?,
            kind,
        };
        self.tree
            .insert(&path, inode, &parents)
            .map_err(ExportError::Tree)?;
        Ok(())
    }
}

/// An entry's metadata: mtime clamped to `epoch`, xattrs in erofs's form.
fn meta(e: &ExportEntry, epoch: i64) -> Result<Meta, String> {
    let (mtime, mtime_nsec) = if (e.mtime, e.mtime_nsec) > (epoch, 0) {
        (epoch, 0)
    } else {
        (e.mtime, e.mtime_nsec)
    };
    let mut xattrs = Vec::with_capacity(e.xattrs.len());
    for (name, value) in &e.xattrs {
        let x = Xattr::new(name, value).ok_or_else(|| {
            format!(
                "xattr {:?} cannot be stored in erofs (namespace or size)",
                lossy(name)
            )
        })?;
        xattrs.push(x);
    }
    if erofs::xattr_ibody_size(&xattrs) > erofs::MAX_XATTR_IBODY {
        return Err(format!(
            "xattrs take more than {} bytes",
            erofs::MAX_XATTR_IBODY
        ));
    }
    Ok(Meta {
        perm: (e.mode & 0o7777) as u16,
        uid: e.uid,
        gid: e.gid,
        mtime,
        mtime_nsec,
        xattrs,
    })
}
