//! Tar stream → entries of an erofs `Tree`, with file data streamed straight
//! into the image.
//!
//! Entries land under a destination directory of the tree (vagga's `!Tar
//! {path}`), "/" for a whole rootfs. Extraction semantics (`Tree::insert`):
//! later entries replace earlier ones at the same path (a directory over a
//! directory only updates its metadata), and missing parent directories are
//! created as 0755 root:root with mtime 0.
//!
//! Paths: a leading "/" and "." components are dropped (so "/etc", "./etc"
//! and "etc" are the same entry); a ".." component anywhere is rejected.
//! Symlink targets are stored as written; absolute ones resolve inside the
//! guest's rootfs, but a target that climbs above the root with ".." (resolved
//! lexically from the link's own directory) is rejected. Hard links must point
//! at a regular file already in the tree (earlier in the archive, usually).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Read};
use std::path::Path;

use super::decompress::{Decoded, TarGuard};
use super::erofs::{self, ImageWriter};
use super::error::ImageError;
use super::tree::{self, lossy, Inode, Kind, Meta, Tree, TreeError, TreeErrorKind, Xattr};

const PAX_XATTR: &str = "SCHILY.xattr.";

/// Reads the whole archive from `reader`, compressed or not (told by its
/// first bytes) and followed by a [`TarGuard`], into `tree` under `dest`,
/// writing file data through `writer`. Returns the compressed stream,
/// positioned after what the decoder read (for a plain archive: after
/// the end-of-archive marker).
pub(super) fn import<R: BufRead>(
    tarball: &Path,
    reader: R,
    tree: &mut Tree,
    dest: &[u8],
    writer: &mut ImageWriter<'_>,
) -> Result<R, ImageError> {
    import_with(tarball, reader, tree, dest, None, writer, None)
}

/// [`import`] of only the directory `subdir` of the archive (vagga's
/// `!Tar {subdir}`), its content unpacked at `dest`; entries elsewhere are
/// skipped, and a hard link into them refused.
pub fn import_subdir<R: BufRead>(
    tarball: &Path,
    reader: R,
    tree: &mut Tree,
    dest: &[u8],
    subdir: Option<&[u8]>,
    writer: &mut ImageWriter<'_>,
) -> Result<R, ImageError> {
    import_with(tarball, reader, tree, dest, subdir, writer, None)
}

/// [`import`] of an OCI image layer over the layers before it, at "/":
/// `.wh.NAME` entries delete NAME and `.wh..wh..opq` empties its
/// directory, of what the earlier layers put there only (the image
/// spec's rule: a whiteout never hides an entry of its own layer).
pub fn import_layer<R: BufRead>(
    tarball: &Path,
    reader: R,
    tree: &mut Tree,
    writer: &mut ImageWriter<'_>,
) -> Result<R, ImageError> {
    let mut added = HashSet::new();
    import_with(tarball, reader, tree, b"/", None, writer, Some(&mut added))
}

/// The paths a layer put in the tree so far (joined by "/").
type Added = HashSet<Vec<u8>>;

fn import_with<R: BufRead>(
    tarball: &Path,
    reader: R,
    tree: &mut Tree,
    dest: &[u8],
    subdir: Option<&[u8]>,
    writer: &mut ImageWriter<'_>,
    mut layer: Option<&mut Added>,
) -> Result<R, ImageError> {
    let dest_err = |e: TreeError| ImageError::BadEntry {
        tarball: tarball.to_path_buf(),
        entry: e.path.clone(),
        reason: format!("cannot unpack into it: {}", e.kind),
    };
    let dest = tree::components(dest).map_err(dest_err)?;
    let strip = match subdir {
        Some(subdir) => tree::components(subdir).map_err(dest_err)?,
        None => Vec::new(),
    };
    tree.ensure_dir(&tree::join(&dest), &Meta::implicit_dir())
        .map_err(dest_err)?;
    let read_err = |source| ImageError::ReadTar {
        tarball: tarball.to_path_buf(),
        source,
    };
    let decoded = Decoded::new(reader).map_err(read_err)?;
    let mut archive = tar::Archive::new(TarGuard::new(decoded));
    for entry in archive.entries().map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let at = Where {
            dest: &dest,
            strip: &strip,
        };
        add(tree, &at, tarball, entry, writer, layer.as_deref_mut())?;
    }
    Ok(archive.into_inner().into_inner().into_inner())
}

/// An entry being imported, for error messages.
struct Ctx<'a> {
    tarball: &'a Path,
    entry: String,
}

impl Ctx<'_> {
    fn reject(&self, reason: impl Into<String>) -> ImageError {
        ImageError::BadEntry {
            tarball: self.tarball.to_path_buf(),
            entry: self.entry.clone(),
            reason: reason.into(),
        }
    }

    /// A tree error, described without the path (the entry names it).
    fn tree(&self, e: TreeError) -> ImageError {
        match e.kind {
            TreeErrorKind::RootNotDir => self.reject("the root of the archive must be a directory"),
            kind => self.reject(kind.to_string()),
        }
    }
}

/// Where an archive's entries land: `dest`, without the leading `strip`
/// components (`!Tar`'s `subdir`) their paths must have.
struct Where<'a> {
    dest: &'a [&'a [u8]],
    strip: &'a [&'a [u8]],
}

impl Where<'_> {
    /// An archive path's place in the tree; `None` when it is not under
    /// `strip`.
    fn place<'p>(&self, comps: Vec<&'p [u8]>) -> Option<Vec<&'p [u8]>>
    where
        Self: 'p,
    {
        let rest = comps.strip_prefix(self.strip)?;
        let mut path: Vec<&[u8]> = self.dest.to_vec();
        path.extend_from_slice(rest);
        Some(path)
    }
}

fn add<R: Read>(
    tree: &mut Tree,
    at: &Where<'_>,
    tarball: &Path,
    mut entry: tar::Entry<'_, R>,
    writer: &mut ImageWriter<'_>,
    layer: Option<&mut Added>,
) -> Result<(), ImageError> {
    let raw_path = entry.path_bytes().into_owned();
    let cx = Ctx {
        tarball,
        entry: tree::shown(&raw_path),
    };
    let entry_type = entry.header().entry_type();
    if entry_type.is_pax_global_extensions() {
        // Global PAX headers (e.g. git archive's comment) describe no file.
        return Ok(());
    }
    let comps = tree::components(&raw_path).map_err(|e| cx.tree(e))?;
    let Some(path) = at.place(comps) else {
        return Ok(());
    };
    tree::check_names(&path).map_err(|kind| cx.reject(kind.to_string()))?;
    if let Some(added) = layer {
        if let Some((name, dir)) = path.split_last() {
            if let Some(hidden) = name.strip_prefix(b".wh.") {
                if hidden == b"." || hidden == b".." {
                    return Err(cx.reject("a whiteout of \".\" or \"..\""));
                }
                return whiteout(tree, added, dir, hidden).map_err(|e| cx.tree(e));
            }
        }
        // The directories on the way are this layer's too: an opaque
        // marker after `a/b/c` keeps `a/b`.
        for end in 1..=path.len() {
            added.insert(tree::join(&path[..end]));
        }
    }
    let meta = entry_meta(&cx, &mut entry)?;
    let link_name = entry
        .link_name_bytes()
        .map(|l| l.into_owned())
        .unwrap_or_default();

    use tar::EntryType as T;
    let kind = match entry_type {
        T::Regular | T::Continuous | T::GNUSparse => {
            // A sparse entry reads as its whole size, holes as zeros, and
            // is stored so: refused at once if that would not fit.
            let size = entry.size();
            if let Err(e) = writer.reserve(size) {
                let sparse = if entry_type == T::GNUSparse {
                    format!(
                        "a sparse file of {size} bytes ({} in the archive), stored whole: ",
                        entry.header().entry_size().unwrap_or(0)
                    )
                } else {
                    format!("a file of {size} bytes: ")
                };
                return Err(cx.reject(format!("{sparse}{e}")));
            }
            let data =
                writer
                    .write_file_data(&mut entry)
                    .map_err(|source| ImageError::FileData {
                        tarball: tarball.to_path_buf(),
                        entry: cx.entry.clone(),
                        source,
                    })?;
            Kind::File(data)
        }
        T::Directory => Kind::Dir(BTreeMap::new()),
        T::Symlink => {
            check_symlink(&path, &link_name).map_err(|e| cx.reject(e))?;
            Kind::Symlink(link_name)
        }
        T::Char | T::Block => {
            let (major, minor) = device_numbers(&cx, &entry)?;
            if entry_type == T::Char {
                Kind::CharDevice { major, minor }
            } else {
                Kind::BlockDevice { major, minor }
            }
        }
        T::Fifo => Kind::Fifo,
        T::Link => return add_hard_link(tree, &cx, at, &path, &link_name),
        other => {
            return Err(cx.reject(format!(
                "unsupported entry type {:?} ({:?})",
                other.as_byte() as char,
                other
            )))
        }
    };
    tree.insert(
        &tree::join(&path),
        Inode { meta, kind },
        &Meta::implicit_dir(),
    )
    .map_err(|e| cx.tree(e))?;
    Ok(())
}

/// The whiteout `.wh.HIDDEN` in directory `dir`: HIDDEN goes, or with
/// `.wh..opq` everything in `dir`, unless this layer (`added`) put it
/// there. Other `.wh..wh.` names (aufs's bookkeeping) mean nothing here.
fn whiteout(tree: &mut Tree, added: &Added, dir: &[&[u8]], hidden: &[u8]) -> Result<(), TreeError> {
    let prefix = |name: &[u8]| {
        let mut path = dir.to_vec();
        path.push(name);
        tree::join(&path)
    };
    if hidden == b".wh..opq" {
        hide_lower(tree, added, tree::join(dir))?;
    } else if !hidden.is_empty() && !hidden.starts_with(b".wh.") {
        let path = prefix(hidden);
        if !added.contains(&path) {
            tree.remove(&path)?;
        }
    }
    Ok(())
}

/// Removes from directory `dir` (joined path) everything this layer did
/// not put there, through its own subdirectories too: an opaque
/// directory shows only the layer's entries.
fn hide_lower(tree: &mut Tree, added: &Added, dir: Vec<u8>) -> Result<(), TreeError> {
    let mut pending = vec![dir];
    while let Some(dir) = pending.pop() {
        let Some(names) = tree
            .lookup(&dir)
            .and_then(|id| tree.entries(id))
            .map(|e| e.keys().cloned().collect::<Vec<_>>())
        else {
            continue;
        };
        for name in names {
            let path = match dir.is_empty() {
                true => name,
                false => [&dir[..], b"/", &name[..]].concat(),
            };
            if !added.contains(&path) {
                tree.remove(&path)?;
            } else if tree.lookup(&path).and_then(|id| tree.entries(id)).is_some() {
                pending.push(path);
            }
        }
    }
    Ok(())
}

fn add_hard_link(
    tree: &mut Tree,
    cx: &Ctx<'_>,
    at: &Where<'_>,
    path: &[&[u8]],
    target: &[u8],
) -> Result<(), ImageError> {
    let dest = at.dest;
    let comps = tree::components(target)
        .map_err(|e| cx.reject(format!("hard link target {:?}: {}", e.path, e.kind)))?;
    let target_path = at.place(comps).ok_or_else(|| {
        cx.reject(format!(
            "hard link target {:?} is outside the subdir unpacked",
            tree::shown(target)
        ))
    })?;
    let not_file = || {
        cx.reject(format!(
            "hard link target {:?} is not a regular file earlier in the archive",
            tree::shown(target)
        ))
    };
    let id = tree
        .lookup(&tree::join(&target_path))
        .ok_or_else(not_file)?;
    if !matches!(tree.inodes[id].kind, Kind::File(_)) {
        return Err(not_file());
    }
    if path.len() == dest.len() {
        return Err(cx.reject("a hard link cannot replace the root of the archive"));
    }
    tree.link(&tree::join(path), id, &Meta::implicit_dir())
        .map_err(|e| cx.tree(e))
}

/// Rejects empty, overlong or escaping symlink targets. `link` is the link's
/// own path; a relative target resolves from its directory.
pub(super) fn check_symlink(link: &[&[u8]], target: &[u8]) -> Result<(), String> {
    tree::check_link_target(target)?;
    let mut depth = if target.starts_with(b"/") {
        0
    } else {
        link.len().saturating_sub(1)
    };
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." if depth == 0 => {
                return Err(format!(
                    "the symlink target {:?} climbs above the root",
                    lossy(target)
                ))
            }
            b".." => depth -= 1,
            _ => depth += 1,
        }
    }
    Ok(())
}

fn entry_meta<R: Read>(cx: &Ctx<'_>, entry: &mut tar::Entry<'_, R>) -> Result<Meta, ImageError> {
    let header = entry.header();
    let field = |what: &str, r: std::io::Result<u64>| {
        r.map_err(|e| cx.reject(format!("bad {what} field: {e}")))
    };
    let perm = (field("mode", header.mode().map(u64::from))? & 0o7777) as u16;
    let uid = field("uid", header.uid())?;
    let gid = field("gid", header.gid())?;
    let uid =
        u32::try_from(uid).map_err(|_| cx.reject(format!("uid {uid} does not fit 32 bits")))?;
    let gid =
        u32::try_from(gid).map_err(|_| cx.reject(format!("gid {gid} does not fit 32 bits")))?;
    let mtime = field("mtime", header.mtime())?;
    let mut mtime = (i64::try_from(mtime).unwrap_or(i64::MAX), 0);
    let mut xattrs = Vec::new();
    let pax = entry
        .pax_extensions()
        .map_err(|e| cx.reject(format!("bad PAX header: {e}")))?;
    for ext in pax.into_iter().flatten() {
        let ext = ext.map_err(|e| cx.reject(format!("bad PAX header: {e}")))?;
        let Ok(key) = ext.key() else { continue };
        if key == "mtime" {
            let value = ext.value().unwrap_or("");
            mtime = parse_pax_time(value)
                .ok_or_else(|| cx.reject(format!("bad PAX mtime {value:?}")))?;
        } else if let Some(name) = key.strip_prefix(PAX_XATTR) {
            let x = Xattr::new(name.as_bytes(), ext.value_bytes()).ok_or_else(|| {
                cx.reject(format!(
                    "xattr {name:?} cannot be stored in erofs (namespace or size)"
                ))
            })?;
            xattrs.push(x);
        }
    }
    if erofs::xattr_ibody_size(&xattrs) > erofs::MAX_XATTR_IBODY {
        return Err(cx.reject(format!(
            "xattrs take more than {} bytes",
            erofs::MAX_XATTR_IBODY
        )));
    }
    Ok(Meta {
        perm,
        uid,
        gid,
        mtime: mtime.0,
        mtime_nsec: mtime.1,
        xattrs,
    })
}

/// Parses a PAX time, "[-]seconds[.fraction]", into seconds and nanoseconds.
fn parse_pax_time(s: &str) -> Option<(i64, u32)> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let negative = int.starts_with('-');
    let secs: i64 = int.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nsec: u32 = digits.parse().ok()?;
    if negative && nsec > 0 {
        // -1.5 is 1.5 s before the epoch: -2 s + 0.5 s.
        Some((secs - 1, 1_000_000_000 - nsec))
    } else {
        Some((secs, nsec))
    }
}

fn device_numbers<R: Read>(
    cx: &Ctx<'_>,
    entry: &tar::Entry<'_, R>,
) -> Result<(u32, u32), ImageError> {
    let header = entry.header();
    let num = |r: std::io::Result<Option<u32>>| {
        r.map_err(|e| cx.reject(format!("bad device number: {e}")))
            .map(Option::unwrap_or_default)
    };
    let major = num(header.device_major())?;
    let minor = num(header.device_minor())?;
    tree::check_dev(major, minor).map_err(|e| cx.reject(e))?;
    Ok((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(p: &str) -> Vec<&[u8]> {
        tree::components(p.as_bytes()).expect("valid path")
    }

    #[test]
    fn symlink_escapes() {
        let link = comps("usr/bin/sh");
        assert!(check_symlink(&link, b"/bin/busybox").is_ok());
        assert!(check_symlink(&link, b"../../bin/busybox").is_ok());
        assert!(check_symlink(&link, b"../../../etc/shadow").is_err());
        assert!(check_symlink(&link, b"/../etc").is_err());
        assert!(check_symlink(&link, b"a/../../..").is_ok());
        assert!(check_symlink(&link, b"a/../../../..").is_err());
        assert!(check_symlink(&comps("x"), b"..").is_err());
        assert!(check_symlink(&comps("x"), b"").is_err());
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time("12"), Some((12, 0)));
        assert_eq!(parse_pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
