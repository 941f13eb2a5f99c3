//! `!Copy`: files from the project, or from elsewhere in the image being
//! built, into it, with vagga's modes, owners and times.

use super::{writer, Builder, StepFailure};
use crate::config::CopyStep;
use crate::hostfs::{walk, Decision, EntryKind, Filter};
use crate::image::tree::{self, Inode, InodeId, Kind, Meta, Tree, TreeError};

impl Builder<'_, '_, '_> {
    pub(super) fn copy(&mut self, copy: &CopyStep) -> Result<(), StepFailure> {
        let filter = copy
            .select
            .filter()
            .map_err(|e| StepFailure::Other(e.into()))?;
        if copy.select.takes_nothing() {
            // As vagga: a warning, and nothing but the source itself copied.
            eprintln!(
                "cella: warning: !Copy {}: every rule leaves files out, so nothing \
                 under it is copied (add \"/\" to take all that is not left out)",
                crate::text::escape(&copy.source)
            );
        }
        let Some(rel) = &copy.rel else {
            return self.copy_in_image(copy, &filter);
        };
        let project = self.ctx.versions.project();
        let entries = walk(project, rel, &filter)?;
        let (uid, gid) = (copy.owner_uid.unwrap_or(0), copy.owner_gid.unwrap_or(0));
        let parents = self.meta(0o755, 0, 0);
        let mut writer = writer(&self.work, &self.limits)?;
        for entry in entries {
            let mut meta = self.meta(
                copy_mode(copy, entry.perm, mode_kind(&entry.kind)),
                uid,
                gid,
            );
            if copy.preserve_times {
                meta.mtime = entry.mtime_ns.div_euclid(1_000_000_000);
                meta.mtime_nsec = entry.mtime_ns.rem_euclid(1_000_000_000) as u32;
            }
            let kind = match &entry.kind {
                EntryKind::Dir => Kind::Dir(Default::default()),
                EntryKind::File { .. } => {
                    let mut file = project.open_file(&entry.path(rel))?;
                    Kind::File(
                        writer
                            .write_file_data(&mut file)
                            .map_err(StepFailure::Image)?,
                    )
                }
                EntryKind::Symlink(target) => Kind::Symlink(target.clone()),
                EntryKind::Fifo => Kind::Fifo,
            };
            let dest = dest_path(&copy.path, &entry.rel);
            self.tree.insert(&dest, Inode { meta, kind }, &parents)?;
        }
        Ok(())
    }

    /// vagga's `!Copy` of a path inside the container: what the steps
    /// before made at `source`, copied (data too) to `path`. Owners stay
    /// unless `owner-uid`/`owner-gid`; modes and times as from the project.
    fn copy_in_image(&mut self, copy: &CopyStep, filter: &Filter) -> Result<(), StepFailure> {
        let top = self.tree.lookup(copy.source.as_bytes()).ok_or_else(|| {
            StepFailure::Other(
                format!(
                    "{}: no such file or directory in the image",
                    crate::text::escape(&copy.source)
                )
                .into(),
            )
        })?;
        // All of it is listed (metadata and all) before anything is
        // written, so a copy into itself (`/a` to `/a/b`) ends and copies
        // what was there. Each entry keeps its name and its parent's
        // index, not its path: the list is bounded by `limits.inodes`.
        let dest = tree::components(copy.path.as_bytes())?;
        let mut walk = ImageWalk {
            tree: &self.tree,
            filter,
            copy,
            epoch: self.epoch,
            at: (dest.len(), tree::join(&dest).len()),
            items: Vec::new(),
        };
        walk.item(usize::MAX, Vec::new(), top)?;
        if self.tree.entries(top).is_some() {
            walk.dir(top, 0, &mut Vec::new(), 0)?;
        }
        let items = walk.items;
        let parents = self.meta(0o755, 0, 0);
        let mut writer = writer(&self.work, &self.limits)?;
        let mut ids: Vec<InodeId> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let kind = match &item.kind {
                Kind::File(data) => Kind::File(
                    writer
                        .write_file_range(&self.work, data.range())
                        .map_err(StepFailure::Image)?,
                ),
                other => other.clone(),
            };
            let inode = Inode {
                meta: item.meta.clone(),
                kind,
            };
            let id = match ids.get(item.parent).copied() {
                None => self.tree.insert(copy.path.as_bytes(), inode, &parents)?,
                Some(dir) => self
                    .tree
                    .put(dir, &item.name, inode)
                    .map_err(|kind| TreeError::new(&item_path(copy, &items, i), kind))?,
            };
            ids.push(id);
        }
        Ok(())
    }
}

/// Deeper than this, a walk of the image stops with an error.
const MAX_DEPTH: usize = 1024;

/// One entry `!Copy` takes from the image: what to put where.
struct Item {
    /// The index of its directory's item; `usize::MAX` for the source.
    parent: usize,
    name: Vec<u8>,
    meta: Meta,
    /// A file's data is where the source's is (copied when put); a
    /// directory is empty (its entries are items of their own).
    kind: Kind,
}

/// The walk of the image under a `!Copy` source.
struct ImageWalk<'a> {
    tree: &'a Tree,
    filter: &'a Filter,
    copy: &'a CopyStep,
    epoch: i64,
    /// The destination's depth and length.
    at: (usize, usize),
    items: Vec<Item>,
}

impl ImageWalk<'_> {
    /// Lists inode `id` as an item under `parent`, with the metadata it
    /// will have; the tree's bounds are checked here, before any copy.
    fn item(&mut self, parent: usize, name: Vec<u8>, id: InodeId) -> Result<(), StepFailure> {
        if self.items.len() >= self.tree.max_inodes() {
            return Err(StepFailure::Other(
                format!(
                    "the copy would hold more than {} files (limits.inodes)",
                    self.tree.max_inodes()
                )
                .into(),
            ));
        }
        // Never missing in a tree cella made; an error rather than a
        // skip, which would give the items after it the wrong parent.
        let Some(source) = self.tree.inodes.get(id) else {
            return Err(StepFailure::Other(
                format!("the image's tree names inode {id}, which it does not hold").into(),
            ));
        };
        let (copy, from) = (self.copy, &source.meta);
        let mode = match source.kind {
            Kind::Dir(_) => ModeKind::Dir,
            Kind::Symlink(_) => ModeKind::Link,
            _ => ModeKind::Other,
        };
        let (mtime, mtime_nsec) = match copy.preserve_times {
            true => (from.mtime, from.mtime_nsec),
            false => (self.epoch, 0),
        };
        let meta = Meta {
            perm: copy_mode(copy, u32::from(from.perm), mode),
            uid: copy.owner_uid.unwrap_or(from.uid),
            gid: copy.owner_gid.unwrap_or(from.gid),
            mtime,
            mtime_nsec,
            ..Meta::default()
        };
        let kind = match &source.kind {
            Kind::Dir(_) => Kind::Dir(Default::default()),
            other => other.clone(),
        };
        self.items.push(Item {
            parent,
            name,
            meta,
            kind,
        });
        Ok(())
    }

    /// The entries under directory `dir` (item `index`, at `rel`) that the
    /// filter takes, as the project's walk picks them: pre-order, by
    /// name, a directory kept when taken itself or when something under
    /// it is.
    fn dir(
        &mut self,
        dir: InodeId,
        index: usize,
        rel: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), StepFailure> {
        if depth >= MAX_DEPTH {
            return Err(StepFailure::Other(
                format!("more than {MAX_DEPTH} levels of directories").into(),
            ));
        }
        let Some(entries) = self.tree.entries(dir) else {
            return Ok(());
        };
        for (name, &child) in entries {
            let len = rel.len();
            if len > 0 {
                rel.push(b'/');
            }
            rel.extend_from_slice(name);
            let (at_depth, at_len) = self.at;
            tree::check_path(at_depth + depth + 1, at_len + 1 + rel.len())
                .map_err(|kind| TreeError::new(rel, kind))?;
            let is_dir = self.tree.entries(child).is_some();
            match self.filter.decide(rel, is_dir) {
                Decision::Skip => {}
                Decision::Take => self.item(index, name.clone(), child)?,
                Decision::Enter { own } => {
                    let at = self.items.len();
                    self.item(index, name.clone(), child)?;
                    self.dir(child, at, rel, depth + 1)?;
                    if !own && self.items.len() == at + 1 {
                        self.items.truncate(at);
                    }
                }
            }
            rel.truncate(len);
        }
        Ok(())
    }
}

/// The destination of item `i`, for a message.
fn item_path(copy: &CopyStep, items: &[Item], i: usize) -> Vec<u8> {
    let mut names = Vec::new();
    let mut at = i;
    while let Some(item) = items.get(at) {
        names.push(item.name.as_slice());
        at = item.parent;
    }
    names.reverse();
    dest_path(&copy.path, &names.join(&b'/'))
}

/// `path` joined with `rel` (nothing for the source itself).
fn dest_path(path: &str, rel: &[u8]) -> Vec<u8> {
    let mut dest = path.trim_end_matches('/').as_bytes().to_vec();
    if !rel.is_empty() {
        dest.push(b'/');
        dest.extend_from_slice(rel);
    }
    dest
}

#[derive(Clone, Copy)]
enum ModeKind {
    Dir,
    Link,
    Other,
}

fn mode_kind(kind: &EntryKind) -> ModeKind {
    match kind {
        EntryKind::Dir => ModeKind::Dir,
        EntryKind::Symlink(_) => ModeKind::Link,
        _ => ModeKind::Other,
    }
}

/// The mode `!Copy` gives a file of mode `perm`, as vagga's: the
/// source's bits with `preserve-permissions`; else 0o777 for a directory
/// or a file its owner may run, 0o666 for another file, less the umask.
/// A link's is 0o777.
fn copy_mode(copy: &CopyStep, perm: u32, kind: ModeKind) -> u16 {
    let mode = match kind {
        ModeKind::Link => 0o777,
        _ if copy.preserve_permissions => perm & 0o7777,
        ModeKind::Dir => 0o777 & !copy.umask,
        ModeKind::Other if perm & 0o100 != 0 => 0o777 & !copy.umask,
        ModeKind::Other => 0o666 & !copy.umask,
    };
    mode as u16
}
