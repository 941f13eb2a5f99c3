//! `!Copy`: files from the project, or from elsewhere in the image being
//! built, into it, with vagga's modes, owners and times.

use super::{writer, Builder, StepFailure};
use crate::config::CopyStep;
use crate::hostfs::{walk, Decision, EntryKind, Filter};
use crate::image::tree::{Inode, InodeId, Kind, Tree};

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
        // All of it is listed before anything is written, so a copy into
        // itself (`/a` to `/a/b`) ends.
        let mut entries = vec![(Vec::new(), top)];
        if self.tree.entries(top).is_some() {
            image_walk(&self.tree, top, &[], filter, &mut entries, 0)?;
        }
        let parents = self.meta(0o755, 0, 0);
        let mut writer = writer(&self.work, &self.limits)?;
        for (rel, id) in entries {
            let Some(source) = self.tree.inodes.get(id) else {
                continue;
            };
            let from = &source.meta;
            let mode = match source.kind {
                Kind::Dir(_) => ModeKind::Dir,
                Kind::Symlink(_) => ModeKind::Link,
                _ => ModeKind::Other,
            };
            let mut meta = self.meta(
                copy_mode(copy, u32::from(from.perm), mode),
                copy.owner_uid.unwrap_or(from.uid),
                copy.owner_gid.unwrap_or(from.gid),
            );
            if copy.preserve_times {
                meta.mtime = from.mtime;
                meta.mtime_nsec = from.mtime_nsec;
            }
            let kind = match &source.kind {
                Kind::Dir(_) => Kind::Dir(Default::default()),
                Kind::File(data) => Kind::File(
                    writer
                        .write_file_range(&self.work, data.range())
                        .map_err(StepFailure::Image)?,
                ),
                other => other.clone(),
            };
            let dest = dest_path(&copy.path, &rel);
            self.tree.insert(&dest, Inode { meta, kind }, &parents)?;
        }
        Ok(())
    }
}

/// Deeper than this, a walk of the image stops with an error.
const MAX_DEPTH: usize = 1024;

/// The entries under directory `dir` (at `rel`) that `filter` takes, as
/// the project's walk picks them: pre-order, by name, a directory kept
/// when taken itself or when something under it is.
fn image_walk(
    tree: &Tree,
    dir: InodeId,
    rel: &[u8],
    filter: &Filter,
    out: &mut Vec<(Vec<u8>, InodeId)>,
    depth: usize,
) -> Result<(), StepFailure> {
    if depth >= MAX_DEPTH {
        return Err(StepFailure::Other(
            format!("more than {MAX_DEPTH} levels of directories").into(),
        ));
    }
    let Some(entries) = tree.entries(dir) else {
        return Ok(());
    };
    for (name, &child) in entries {
        let mut child_rel = rel.to_vec();
        if !child_rel.is_empty() {
            child_rel.push(b'/');
        }
        child_rel.extend_from_slice(name);
        let is_dir = tree.entries(child).is_some();
        match filter.decide(&child_rel, is_dir) {
            Decision::Skip => {}
            Decision::Take => out.push((child_rel, child)),
            Decision::Enter { own } => {
                let at = out.len();
                out.push((child_rel.clone(), child));
                image_walk(tree, child, &child_rel, filter, out, depth + 1)?;
                if !own && out.len() == at + 1 {
                    out.truncate(at);
                }
            }
        }
    }
    Ok(())
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
