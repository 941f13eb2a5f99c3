//! `!Copy`: files from the project into the image being built, with
//! vagga's modes, owners and times.

use super::{writer, Builder, StepFailure};
use crate::config::CopyStep;
use crate::hostfs::{walk, Entry, EntryKind};
use crate::image::tree::{Inode, Kind};

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
        let project = self.ctx.versions.project();
        let entries = walk(project, &copy.rel, &filter)?;
        let (uid, gid) = (copy.owner_uid.unwrap_or(0), copy.owner_gid.unwrap_or(0));
        let parents = self.meta(0o755, 0, 0);
        let mut writer = writer(&self.work, &self.limits)?;
        for entry in entries {
            let mut dest = copy.path.trim_end_matches('/').as_bytes().to_vec();
            if !entry.rel.is_empty() {
                dest.push(b'/');
                dest.extend_from_slice(&entry.rel);
            }
            let mut meta = self.meta(copy_mode(copy, &entry), uid, gid);
            if copy.preserve_times {
                meta.mtime = entry.mtime_ns.div_euclid(1_000_000_000);
                meta.mtime_nsec = entry.mtime_ns.rem_euclid(1_000_000_000) as u32;
            }
            let kind = match &entry.kind {
                EntryKind::Dir => Kind::Dir(Default::default()),
                EntryKind::File { .. } => {
                    let mut file = project.open_file(&entry.path(&copy.rel))?;
                    Kind::File(
                        writer
                            .write_file_data(&mut file)
                            .map_err(StepFailure::Image)?,
                    )
                }
                EntryKind::Symlink(target) => Kind::Symlink(target.clone()),
                EntryKind::Fifo => Kind::Fifo,
            };
            self.tree.insert(&dest, Inode { meta, kind }, &parents)?;
        }
        Ok(())
    }
}

/// The mode `!Copy` gives `entry`, as vagga's: the source's bits with
/// `preserve-permissions`; else 0o777 for a directory or a file its owner
/// may run, 0o666 for another file, less the umask. A link's is 0o777.
fn copy_mode(copy: &CopyStep, entry: &Entry) -> u16 {
    let mode = match entry.kind {
        EntryKind::Symlink(_) => 0o777,
        _ if copy.preserve_permissions => entry.perm & 0o7777,
        EntryKind::Dir => 0o777 & !copy.umask,
        _ if entry.perm & 0o100 != 0 => 0o777 & !copy.umask,
        _ => 0o666 & !copy.umask,
    };
    mode as u16
}
