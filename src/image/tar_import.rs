//! Tar stream → erofs `Tree`, with file data streamed straight into the image.
//!
//! Extraction semantics: later entries replace earlier ones at the same path
//! (a directory over a directory only updates its metadata), and missing
//! parent directories are created as 0755 root:root with mtime 0.
//!
//! Paths: a leading "/" and "." components are dropped (so "/etc", "./etc"
//! and "etc" are the same entry); a ".." component anywhere is rejected.
//! Symlink targets are stored as written; absolute ones resolve inside the
//! guest's rootfs, but a target that climbs above the root with ".." (resolved
//! lexically from the link's own directory) is rejected. Hard links must point
//! at a regular file that is already in the archive.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::erofs::{self, ImageWriter, Inode, InodeId, Kind, Meta, Tree, Xattr};
use super::ImageError;

const PAX_XATTR: &str = "SCHILY.xattr.";

/// Reads the whole archive from `reader`, writing file data through `writer`.
/// Returns the tree and the reader (positioned after the end-of-archive marker).
pub(super) fn import<R: Read>(
    tarball: &Path,
    reader: R,
    writer: &mut ImageWriter<'_>,
) -> Result<(Tree, R), ImageError> {
    let mut archive = tar::Archive::new(reader);
    let mut builder = TreeBuilder::new();
    let read_err = |source| ImageError::ReadTar {
        tarball: tarball.to_path_buf(),
        source,
    };
    for entry in archive.entries().map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        builder.add(tarball, entry, writer)?;
    }
    Ok((builder.tree, archive.into_inner()))
}

struct TreeBuilder {
    tree: Tree,
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
}

impl TreeBuilder {
    fn new() -> Self {
        let root = Inode {
            meta: implicit_dir_meta(),
            kind: Kind::Dir(BTreeMap::new()),
        };
        TreeBuilder {
            tree: Tree { inodes: vec![root] },
        }
    }

    fn add<R: Read>(
        &mut self,
        tarball: &Path,
        mut entry: tar::Entry<'_, R>,
        writer: &mut ImageWriter<'_>,
    ) -> Result<(), ImageError> {
        let raw_path = entry.path_bytes().into_owned();
        let cx = Ctx {
            tarball,
            entry: String::from_utf8_lossy(&raw_path).into_owned(),
        };
        let entry_type = entry.header().entry_type();
        if entry_type.is_pax_global_extensions() {
            // Global PAX headers (e.g. git archive's comment) describe no file.
            return Ok(());
        }
        let path = components(&raw_path).map_err(|e| cx.reject(e))?;
        let meta = entry_meta(&cx, &mut entry)?;
        let link_name = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();

        use tar::EntryType as T;
        let kind = match entry_type {
            T::Regular | T::Continuous | T::GNUSparse => {
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
            T::Link => return self.add_hard_link(&cx, &path, &link_name),
            other => {
                return Err(cx.reject(format!(
                    "unsupported entry type {:?} ({:?})",
                    other.as_byte() as char,
                    other
                )))
            }
        };
        self.insert(&cx, &path, Inode { meta, kind })
    }

    /// Puts `inode` at `path`, replacing what was there (a directory over a
    /// directory keeps its entries and takes the new metadata).
    fn insert(&mut self, cx: &Ctx<'_>, path: &[Vec<u8>], inode: Inode) -> Result<(), ImageError> {
        let Some((name, parents)) = path.split_last() else {
            return match inode.kind {
                Kind::Dir(_) => {
                    self.tree.inodes[0].meta = inode.meta;
                    Ok(())
                }
                _ => Err(cx.reject("the root of the archive must be a directory")),
            };
        };
        let dir = self.make_parents(cx, parents)?;
        let existing = self.entries(cx, dir)?.get(name).copied();
        if let (Some(id), Kind::Dir(_)) = (existing, &inode.kind) {
            if let Kind::Dir(_) = self.tree.inodes[id].kind {
                self.tree.inodes[id].meta = inode.meta;
                return Ok(());
            }
        }
        let id = self.tree.inodes.len();
        self.tree.inodes.push(inode);
        self.entries(cx, dir)?.insert(name.clone(), id);
        Ok(())
    }

    fn add_hard_link(
        &mut self,
        cx: &Ctx<'_>,
        path: &[Vec<u8>],
        target: &[u8],
    ) -> Result<(), ImageError> {
        let target_path = components(target)
            .map_err(|e| cx.reject(format!("hard link target {:?}: {e}", lossy(target))))?;
        let not_file = || {
            cx.reject(format!(
                "hard link target {:?} is not a regular file earlier in the archive",
                lossy(target)
            ))
        };
        let id = self.lookup(&target_path).ok_or_else(not_file)?;
        if !matches!(self.tree.inodes[id].kind, Kind::File(_)) {
            return Err(not_file());
        }
        let Some((name, parents)) = path.split_last() else {
            return Err(cx.reject("a hard link cannot replace the root"));
        };
        let dir = self.make_parents(cx, parents)?;
        self.entries(cx, dir)?.insert(name.clone(), id);
        Ok(())
    }

    /// Walks `parents` from the root, creating missing directories.
    fn make_parents(&mut self, cx: &Ctx<'_>, parents: &[Vec<u8>]) -> Result<InodeId, ImageError> {
        let mut dir = 0;
        for (i, name) in parents.iter().enumerate() {
            dir = match self.entries(cx, dir)?.get(name).copied() {
                Some(id) if matches!(self.tree.inodes[id].kind, Kind::Dir(_)) => id,
                Some(_) => {
                    let parent = parents[..=i]
                        .iter()
                        .map(|c| lossy(c))
                        .collect::<Vec<_>>()
                        .join("/");
                    return Err(cx.reject(format!("parent {parent:?} is not a directory")));
                }
                None => {
                    let id = self.tree.inodes.len();
                    self.tree.inodes.push(Inode {
                        meta: implicit_dir_meta(),
                        kind: Kind::Dir(BTreeMap::new()),
                    });
                    self.entries(cx, dir)?.insert(name.clone(), id);
                    id
                }
            };
        }
        Ok(dir)
    }

    fn lookup(&self, path: &[Vec<u8>]) -> Option<InodeId> {
        let mut id = 0;
        for name in path {
            let Kind::Dir(entries) = &self.tree.inodes[id].kind else {
                return None;
            };
            id = *entries.get(name)?;
        }
        Some(id)
    }

    /// The entries of directory `dir` (callers only pass directories).
    fn entries(
        &mut self,
        cx: &Ctx<'_>,
        dir: InodeId,
    ) -> Result<&mut BTreeMap<Vec<u8>, InodeId>, ImageError> {
        match &mut self.tree.inodes[dir].kind {
            Kind::Dir(entries) => Ok(entries),
            _ => Err(cx.reject(format!("internal error: inode {dir} is not a directory"))),
        }
    }
}

fn implicit_dir_meta() -> Meta {
    Meta {
        perm: 0o755,
        ..Meta::default()
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Splits an archive path into its names: "/" and "." components dropped,
/// ".." rejected, each name at most 255 bytes.
fn components(path: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("the path has a \"..\" component".into()),
            _ if c.len() > erofs::MAX_NAME_LEN => {
                return Err(format!(
                    "a name is longer than {} bytes",
                    erofs::MAX_NAME_LEN
                ))
            }
            _ => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Rejects empty, overlong or escaping symlink targets. `link` is the link's
/// own path; a relative target resolves from its directory.
fn check_symlink(link: &[Vec<u8>], target: &[u8]) -> Result<(), String> {
    if target.is_empty() {
        return Err("the symlink target is empty".into());
    }
    if target.len() >= 4096 || target.contains(&0) {
        return Err("the symlink target is longer than PATH_MAX or has a NUL byte".into());
    }
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
    if major >= 1 << 12 || minor >= 1 << 20 {
        return Err(cx.reject(format!(
            "device number {major}:{minor} is too large for Linux's dev_t"
        )));
    }
    Ok((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(p: &str) -> Vec<Vec<u8>> {
        components(p.as_bytes()).expect("valid path")
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(comps("./etc/passwd"), comps("/etc//passwd"));
        assert_eq!(comps("./"), Vec::<Vec<u8>>::new());
        assert!(components(b"a/../b").is_err());
        assert!(components(b"../etc").is_err());
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
