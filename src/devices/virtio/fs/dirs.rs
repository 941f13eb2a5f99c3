//! The FUSE directory listing operations: OPENDIR, READDIR and READDIRPLUS,
//! over getdents64 on a directory fd the handle keeps, and the listing of
//! the synthetic root.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use super::fuse::{self, EntryOut, Reader, Wire, ROOT_ID};
use super::inodes::{Handle, HandleKind};
use super::server::{arg, Server, MAX_IO};
use super::sys::{self, SysResult};

/// Bytes asked of getdents64 at a time.
const GETDENTS_BUF: usize = 32 << 10;

/// One entry chosen for a listing.
struct Listed {
    ino: u64,
    off: u64,
    typ: u32,
    name: Vec<u8>,
    /// For READDIRPLUS: how to reach the entry (None for "." and "..").
    target: Option<Target>,
}

enum Target {
    /// The O_PATH fd of a child in `share`, or the errno opening it failed with.
    Child(usize, SysResult<OwnedFd>),
    /// A share's top directory, listed in the root.
    Share(CString),
}

fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

impl Server {
    pub(super) fn opendir(&mut self, id: u64) -> SysResult<Vec<u8>> {
        let handle = if id == ROOT_ID {
            Handle {
                share: None,
                kind: HandleKind::Root,
                append: false,
            }
        } else {
            let node = self.node(id)?;
            if node.kind != libc::S_IFDIR {
                return Err(libc::ENOTDIR);
            }
            let fd = sys::openat(
                node.fd.as_fd(),
                c".",
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                0,
            )?;
            Handle {
                share: Some(node.share()),
                kind: HandleKind::Dir {
                    fd,
                    is_top: node.is_top,
                },
                append: false,
            }
        };
        let fh = self.handles.insert(handle)?;
        Ok(fuse::OpenOut {
            fh,
            open_flags: 0,
            padding: 0,
        }
        .to_bytes())
    }

    /// READDIR and READDIRPLUS: the entries after `offset` (the `off` of
    /// the last entry the guest got, 0 at first), whole records only.
    pub(super) fn readdir(
        &mut self,
        r: &mut Reader<'_>,
        room: usize,
        plus: bool,
    ) -> SysResult<Vec<u8>> {
        let a: fuse::ReadIn = arg(r)?;
        let limit = (a.size as usize).min(room).min(MAX_IO);
        let record = |namelen: usize| {
            if plus {
                fuse::direntplus_size(namelen)
            } else {
                fuse::dirent_size(namelen)
            }
        };
        let listed = match &self.handles.get(a.fh)?.kind {
            HandleKind::File(_) => return Err(libc::ENOTDIR),
            HandleKind::Root => self.list_root(a.offset, limit, plus, &record),
            HandleKind::Dir { fd, is_top } => {
                let share = self.handles.get(a.fh)?.share.unwrap_or(0);
                let hidden: &[Vec<u8>] = if *is_top {
                    &self.shares[share].hidden
                } else {
                    &[]
                };
                list_dir(fd, share, hidden, a.offset, limit, plus, &record)?
            }
        };
        if listed.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(limit);
        for item in listed {
            if plus {
                let entry = match item.target {
                    None => EntryOut::default(),
                    Some(Target::Share(name)) => {
                        self.lookup_entry(ROOT_ID, &name).unwrap_or_default()
                    }
                    // Gone or unreachable since listed: the record goes
                    // without attributes (node 0) and the guest looks it
                    // up if it cares.
                    Some(Target::Child(_, Err(_))) => EntryOut::default(),
                    Some(Target::Child(share, Ok(fd))) => {
                        self.register(share, fd).unwrap_or_default()
                    }
                };
                entry.encode(&mut out);
            }
            fuse::push_dirent(&mut out, item.ino, item.off, item.typ, &item.name);
        }
        Ok(out)
    }

    /// The synthetic root: ".", "..", then one directory per share.
    fn list_root(
        &self,
        offset: u64,
        limit: usize,
        plus: bool,
        record: &dyn Fn(usize) -> usize,
    ) -> Vec<Listed> {
        let mut names: Vec<(Vec<u8>, u64)> =
            vec![(b".".to_vec(), ROOT_ID), (b"..".to_vec(), ROOT_ID)];
        for (i, share) in self.shares.iter().enumerate() {
            names.push((i.to_string().into_bytes(), share.ino));
        }
        let mut used = 0;
        let mut out = Vec::new();
        for (i, (name, ino)) in names.into_iter().enumerate() {
            let off = i as u64 + 1;
            if off <= offset {
                continue;
            }
            used += record(name.len());
            if used > limit {
                break;
            }
            let target = (plus && !is_dot(&name))
                .then(|| CString::new(name.clone()).ok().map(Target::Share))
                .flatten();
            out.push(Listed {
                ino,
                off,
                typ: libc::DT_DIR as u32,
                name,
                target,
            });
        }
        out
    }
}

/// Lists the directory `fd` from `offset`, leaving out `hidden` names,
/// until `limit` bytes of records; for READDIRPLUS also opens each child.
fn list_dir(
    fd: &OwnedFd,
    share: usize,
    hidden: &[Vec<u8>],
    offset: u64,
    limit: usize,
    plus: bool,
    record: &dyn Fn(usize) -> usize,
) -> SysResult<Vec<Listed>> {
    let fd = fd.as_fd();
    sys::lseek(fd, offset as i64, libc::SEEK_SET)?;
    let mut buf = vec![0u8; GETDENTS_BUF];
    let mut used = 0;
    let mut out = Vec::new();
    'fill: loop {
        let n = match sys::getdents64(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        };
        let entries = sys::parse_dirents(&buf[..n]);
        if entries.is_empty() {
            break;
        }
        for e in entries {
            if hidden.iter().any(|h| h.as_slice() == e.name) || e.name.contains(&b'/') {
                continue;
            }
            let size = record(e.name.len());
            if used + size > limit {
                if out.is_empty() {
                    // Not even one record fits the guest's buffer.
                    return Err(libc::EINVAL);
                }
                break 'fill;
            }
            used += size;
            let target = (plus && !is_dot(e.name)).then(|| {
                let child = CString::new(e.name)
                    .map_err(|_| libc::EINVAL)
                    .and_then(|name| {
                        sys::openat(
                            fd,
                            &name,
                            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                            0,
                        )
                    });
                Target::Child(share, child)
            });
            out.push(Listed {
                ino: e.ino,
                off: e.off,
                typ: e.typ as u32,
                name: e.name.to_vec(),
                target,
            });
        }
    }
    Ok(out)
}
