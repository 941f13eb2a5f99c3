//! The one way cella touches host files that a project, its `.cella/`, an
//! image or a guest can influence: beneath a directory file descriptor,
//! never following a symbolic link, never climbing out with `..`.
//!
//! Everything in a checkout is untrusted, and a guest can plant symlinks
//! through /work between two runs, or swap a directory for a link while
//! cella works. So a path is never checked as a string and then opened:
//! each open resolves the whole relative path in the kernel with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`), or,
//! where the kernel has no `openat2`, one component at a time with
//! `O_NOFOLLOW`, and every later step works on the file descriptors it got.
//! A symlink anywhere in a path is an error that names it ([`FsError::Symlink`]).
//!
//! Why our own module: cap-std, the well-kept capability crate, confines
//! paths to a directory but follows the symlinks that stay inside it; cella
//! follows none (a link inside the project today can point elsewhere after
//! the guest's next write). rustix supplies the system calls.
//!
//! The starting directory of a [`Dir`] comes from a trusted path (the
//! project directory the user's shell is in, a directory of the user's
//! settings, the user's cache), opened with [`Dir::open`]; everything
//! below it is reached through the `Dir`.

mod rules;
#[cfg(test)]
mod tests;
mod walk;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

pub use rules::{Decision, MAX_RULES, MAX_RULE_LEN};
pub use walk::{walk, Entry, EntryKind, Filter, MAX_NAME_LEN};

/// What failed, on which host path (shown with control characters escaped:
/// file names in a project are the project's).
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{} is a symbolic link; cella follows none in a project or its .cella/", Shown(.0))]
    Symlink(PathBuf),
    #[error("{} climbs out of {}", Shown(.path), Shown(.base))]
    Outside { path: PathBuf, base: PathBuf },
    #[error("{} is not a {expected}", Shown(.path))]
    WrongType {
        path: PathBuf,
        expected: &'static str,
    },
    #[error(
        "{} belongs to uid {owner}, not to you (uid {you}): cella uses nothing there that another user could have made",
        Shown(.path)
    )]
    NotOwned { path: PathBuf, owner: u32, you: u32 },
    #[error("{} is larger than {limit} bytes", Shown(.path))]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("cannot {what} {}", Shown(.path))]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FsError {
    /// The path does not exist (a missing component on the way included).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FsError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FsError::Symlink(path)
            | FsError::Outside { path, .. }
            | FsError::WrongType { path, .. }
            | FsError::NotOwned { path, .. }
            | FsError::TooLarge { path, .. }
            | FsError::Io { path, .. } => path,
        }
    }
}

/// A host path for messages, control characters escaped.
pub struct Shown<'a>(pub &'a Path);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::text::escape_bytes(self.0.as_os_str().as_bytes()))
    }
}

/// What kind of file a [`Meta`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    fn of(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDevice,
            _ => Kind::BlockDevice,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "regular file",
            Kind::Dir => "directory",
            Kind::Symlink => "symbolic link",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
        }
    }
}

/// A file's `lstat`, as much of it as cella uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// `st_mode & 0o7777`.
    pub perm: u32,
    pub uid: u32,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl Meta {
    fn of(st: &rustix::fs::Stat) -> Meta {
        let ns = |s: i64, n: u64| s.saturating_mul(1_000_000_000).saturating_add(n as i64);
        Meta {
            kind: Kind::of(st.st_mode),
            perm: st.st_mode & 0o7777,
            uid: st.st_uid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            dev: st.st_dev,
            ino: st.st_ino,
            nlink: st.st_nlink,
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
        }
    }

    /// The metadata of an open file.
    pub fn of_fd(fd: impl AsFd) -> io::Result<Meta> {
        Ok(Meta::of(&rustix::fs::fstat(fd)?))
    }
}

/// A directory held open (`O_PATH`): the base of every path under it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// The host path it was reached by, for messages only.
    path: PathBuf,
}

/// Set once `openat2` turned out to be missing (before Linux 5.6, or
/// refused by a seccomp filter): then paths are walked component by component.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// The effective uid, owner of everything cella makes.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// The components of a relative path, refusing `..` and absolute paths;
/// `.` and empty components are dropped.
fn parts(rel: &Path) -> Option<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn join(parts: &[&OsStr]) -> PathBuf {
    parts.iter().collect()
}

impl Dir {
    /// Opens a directory the user chose (the project directory, a path of
    /// the settings file, the user's cache): symlinks in `path` itself are
    /// followed, as the user's shell would; nothing under it ever is.
    pub fn open(path: &Path) -> Result<Dir, FsError> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::Io {
            what: "open directory",
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Like [`Dir::open`], creating the directory and its missing parents
    /// with mode 0700 first (for the user's cache directories).
    pub fn create_private(path: &Path) -> Result<Dir, FsError> {
        let io_err = |source| FsError::Io {
            what: "create directory",
            path: path.to_path_buf(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(_) => {}
            Err(_) => {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(path)
                    .map_err(io_err)?;
            }
        }
        let dir = Dir::open(path)?;
        dir.make_private()?;
        Ok(dir)
    }

    /// The host path this directory was reached by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path()` joined with `rel`, for messages.
    pub fn display(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }

    pub fn try_clone(&self) -> Result<Dir, FsError> {
        Ok(Dir {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| self.io("open", Path::new(""), e))?,
            path: self.path.clone(),
        })
    }

    /// The fd, for a server that keeps working beneath it.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    fn io(&self, what: &'static str, rel: &Path, source: io::Error) -> FsError {
        FsError::Io {
            what,
            path: self.display(rel),
            source,
        }
    }

    /// Turns an error of a resolution of `rel` into the clearest message:
    /// ELOOP names the symlink on the way.
    fn resolve_error(&self, what: &'static str, rel: &Path, e: rustix::io::Errno) -> FsError {
        // ELOOP: a link on the way; ENOTDIR: O_DIRECTORY met a final link;
        // EXDEV: RESOLVE_BENEATH saw an escape (an absolute link).
        use rustix::io::Errno;
        if [Errno::LOOP, Errno::NOTDIR, Errno::XDEV].contains(&e) {
            if let Some(link) = self.find_symlink(rel) {
                return FsError::Symlink(self.display(&link));
            }
        }
        self.io(what, rel, e.into())
    }

    /// The first component of `rel` that is a symlink, if one is.
    fn find_symlink(&self, rel: &Path) -> Option<PathBuf> {
        let parts = parts(rel)?;
        let mut cur = self.fd.try_clone().ok()?;
        for (i, part) in parts.iter().enumerate() {
            let st = rustix::fs::statat(&cur, *part, AtFlags::SYMLINK_NOFOLLOW).ok()?;
            if Kind::of(st.st_mode) == Kind::Symlink {
                return Some(join(&parts[..=i]));
            }
            cur = rustix::fs::openat(
                &cur,
                *part,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()?;
        }
        None
    }

    /// Opens `rel` beneath this directory with `flags` (O_NOFOLLOW and
    /// O_CLOEXEC added), following no symlink on the way.
    fn resolve(
        &self,
        what: &'static str,
        rel: &Path,
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, FsError> {
        let Some(parts) = parts(rel) else {
            return Err(FsError::Outside {
                path: rel.to_path_buf(),
                base: self.path.clone(),
            });
        };
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let rel = join(&parts);
        let target: &Path = if parts.is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            // RESOLVE_BENEATH fails with EAGAIN when a rename raced the
            // lookup: try again a few times before giving up.
            let mut tries = 0;
            loop {
                match rustix::fs::openat2(&self.fd, target, flags, mode, RESOLVE) {
                    Ok(fd) => return self.not_a_link(fd, flags, &rel),
                    Err(rustix::io::Errno::AGAIN) if tries < 3 => tries += 1,
                    // No openat2 (before Linux 5.6) or a seccomp filter that
                    // refuses it: walk component by component from now on.
                    Err(rustix::io::Errno::NOSYS) => {
                        NO_OPENAT2.store(true, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => return Err(self.resolve_error(what, &rel, e)),
                }
            }
        }
        self.resolve_by_parts(what, &parts, flags, mode)
    }

    /// The walk without `openat2`: each directory on the way opened with
    /// O_PATH|O_NOFOLLOW|O_DIRECTORY from the one before.
    pub(super) fn resolve_by_parts(
        &self,
        what: &'static str,
        parts: &[&OsStr],
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, FsError> {
        let rel = join(parts);
        let Some((last, dirs)) = parts.split_last() else {
            let fd = rustix::fs::openat(&self.fd, ".", flags, mode)
                .map_err(|e| self.io(what, &rel, e.into()))?;
            return Ok(fd);
        };
        let mut cur = self
            .fd
            .try_clone()
            .map_err(|e| self.io(what, Path::new(""), e))?;
        for part in dirs {
            cur = rustix::fs::openat(
                &cur,
                *part,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP => {
                    self.resolve_error(what, &rel, rustix::io::Errno::LOOP)
                }
                e => self.io(what, &rel, e.into()),
            })?;
        }
        let fd = rustix::fs::openat(&cur, *last, flags, mode)
            .map_err(|e| self.resolve_error(what, &rel, e))?;
        self.not_a_link(fd, flags, &rel)
    }

    /// O_PATH|O_NOFOLLOW hands back a trailing symlink itself: refuse it.
    fn not_a_link(&self, fd: OwnedFd, flags: OFlags, rel: &Path) -> Result<OwnedFd, FsError> {
        if flags.contains(OFlags::PATH) && !flags.contains(OFlags::DIRECTORY) {
            let st = rustix::fs::fstat(&fd).map_err(|e| self.io("stat", rel, e.into()))?;
            if Kind::of(st.st_mode) == Kind::Symlink {
                return Err(FsError::Symlink(self.display(rel)));
            }
        }
        Ok(fd)
    }

    /// The directory `rel` beneath this one.
    pub fn open_dir(&self, rel: &Path) -> Result<Dir, FsError> {
        let fd = self.resolve(
            "open directory",
            rel,
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        )?;
        Ok(Dir {
            fd,
            path: self.display(rel),
        })
    }

    /// The regular file `rel`, opened for reading (a fifo or device is
    /// refused without blocking on it).
    pub fn open_file(&self, rel: &Path) -> Result<File, FsError> {
        let fd = self.resolve(
            "open",
            rel,
            OFlags::RDONLY | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        let file = File::from(fd);
        let meta = Meta::of_fd(&file).map_err(|e| self.io("stat", rel, e))?;
        if meta.kind != Kind::File {
            return Err(FsError::WrongType {
                path: self.display(rel),
                expected: "regular file",
            });
        }
        // Back to blocking reads (O_NONBLOCK only kept a fifo from hanging the open).
        rustix::fs::fcntl_setfl(&file, OFlags::empty())
            .map_err(|e| self.io("open", rel, e.into()))?;
        Ok(file)
    }

    /// Reads the regular file `rel` whole, refusing one larger than `limit`.
    pub fn read(&self, rel: &Path, limit: u64) -> Result<Vec<u8>, FsError> {
        let file = self.open_file(rel)?;
        let mut data = Vec::new();
        file.take(limit.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| self.io("read", rel, e))?;
        if data.len() as u64 > limit {
            return Err(FsError::TooLarge {
                path: self.display(rel),
                limit,
            });
        }
        Ok(data)
    }

    /// Opens `rel` with `flags` (read/write mode, O_CREAT, O_EXCL,
    /// O_TRUNC…) and `mode` for a file it creates; never through a symlink.
    pub fn open_with(&self, rel: &Path, flags: OFlags, mode: u32) -> Result<File, FsError> {
        let fd = self.resolve("open", rel, flags, Mode::from_raw_mode(mode))?;
        Ok(File::from(fd))
    }

    /// Creates the new regular file `rel` (it must not exist), read-write.
    pub fn create_new(&self, rel: &Path, mode: u32) -> Result<File, FsError> {
        self.open_with(rel, OFlags::RDWR | OFlags::CREATE | OFlags::EXCL, mode)
    }

    /// The parent directory of `rel` and its last component.
    fn parent<'r>(&self, rel: &'r Path) -> Result<(Dir, &'r OsStr), FsError> {
        let parts = parts(rel).ok_or_else(|| FsError::Outside {
            path: rel.to_path_buf(),
            base: self.path.clone(),
        })?;
        let Some((name, dirs)) = parts.split_last() else {
            return Err(FsError::WrongType {
                path: self.path.clone(),
                expected: "path below it",
            });
        };
        let parent = if dirs.is_empty() {
            self.try_clone()?
        } else {
            self.open_dir(&join(dirs))?
        };
        Ok((parent, name))
    }

    /// `lstat` of `rel`, None if it does not exist. A symlink is reported
    /// as one, never followed; a symlink on the way to it is an error.
    pub fn lstat(&self, rel: &Path) -> Result<Option<Meta>, FsError> {
        if parts(rel).is_some_and(|p| p.is_empty()) {
            return Meta::of_fd(&self.fd)
                .map(Some)
                .map_err(|e| self.io("stat", rel, e));
        }
        let (parent, name) = match self.parent(rel) {
            Ok(found) => found,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&parent.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Meta::of(&st))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(self.io("stat", rel, e.into())),
        }
    }

    /// This directory's own metadata.
    pub fn meta(&self) -> Result<Meta, FsError> {
        Meta::of_fd(&self.fd).map_err(|e| self.io("stat", Path::new(""), e))
    }

    /// The target of the symlink `rel`, as stored in it.
    pub fn read_link(&self, rel: &Path) -> Result<Vec<u8>, FsError> {
        let (parent, name) = self.parent(rel)?;
        rustix::fs::readlinkat(&parent.fd, name, Vec::new())
            .map(|target| target.into_bytes())
            .map_err(|e| self.io("read symlink", rel, e.into()))
    }

    /// The names in this directory (not `.` and `..`), unsorted.
    pub fn names(&self) -> Result<Vec<OsString>, FsError> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io("list", Path::new(""), e.into()))?;
        let dir = rustix::fs::Dir::new(fd).map_err(|e| self.io("list", Path::new(""), e.into()))?;
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| self.io("list", Path::new(""), e.into()))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(names)
    }

    /// Makes the directory `rel` (mode `mode`, before the umask); false if
    /// something already has that name.
    pub fn mkdir(&self, rel: &Path, mode: u32) -> Result<bool, FsError> {
        let (parent, name) = self.parent(rel)?;
        match rustix::fs::mkdirat(&parent.fd, name, Mode::from_raw_mode(mode)) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(self.io("create directory", rel, e.into())),
        }
    }

    /// The directory `rel`, made (with its missing parents, mode `mode`)
    /// if it is not there; every component must be a real directory.
    pub fn ensure_dir(&self, rel: &Path, mode: u32) -> Result<Dir, FsError> {
        let parts = parts(rel).ok_or_else(|| FsError::Outside {
            path: rel.to_path_buf(),
            base: self.path.clone(),
        })?;
        let mut dir = self.try_clone()?;
        for part in parts {
            dir.mkdir(Path::new(part), mode)?;
            dir = dir.open_dir(Path::new(part))?;
        }
        Ok(dir)
    }

    /// Checks that this directory belongs to the user running cella.
    pub fn check_owner(&self) -> Result<(), FsError> {
        self.owned_meta().map(drop)
    }

    /// This directory's metadata, once checked to be the user's.
    fn owned_meta(&self) -> Result<Meta, FsError> {
        let meta = self.meta()?;
        let you = euid();
        if meta.uid != you {
            return Err(FsError::NotOwned {
                path: self.path.clone(),
                owner: meta.uid,
                you,
            });
        }
        Ok(meta)
    }

    /// Checks the owner, then takes group and other permissions away (0700).
    pub fn make_private(&self) -> Result<(), FsError> {
        let meta = self.owned_meta()?;
        if meta.perm & 0o077 != 0 {
            let fd = self.reopen_for_chmod()?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.perm & 0o700))
                .map_err(|e| self.io("change the mode of", Path::new(""), e.into()))?;
        }
        Ok(())
    }

    /// fchmod does not take O_PATH fds: reopen the directory itself.
    fn reopen_for_chmod(&self) -> Result<OwnedFd, FsError> {
        rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io("open directory", Path::new(""), e.into()))
    }

    /// Removes the file (not directory) `rel`; false if it was not there.
    pub fn remove_file(&self, rel: &Path) -> Result<bool, FsError> {
        let (parent, name) = self.parent(rel)?;
        match rustix::fs::unlinkat(&parent.fd, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(self.io("remove", rel, e.into())),
        }
    }

    /// Removes `rel` and, if it is a directory, everything under it,
    /// through file descriptors: a symlink met on the way is removed, never
    /// followed. False if it was not there.
    pub fn remove_tree(&self, rel: &Path) -> Result<bool, FsError> {
        let (parent, name) = match self.parent(rel) {
            Ok(found) => found,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        };
        parent.remove_entry(name, 0)
    }

    /// Removes the entry `name` of this directory, a tree if it is one.
    fn remove_entry(&self, name: &OsStr, depth: usize) -> Result<bool, FsError> {
        /// Deeper than this is not something cella made: refuse.
        const MAX_DEPTH: usize = 4096;
        let rel = Path::new(name);
        let st = match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Ok(false),
            Err(e) => return Err(self.io("stat", rel, e.into())),
        };
        if Kind::of(st.st_mode) == Kind::Dir {
            if depth >= MAX_DEPTH {
                return Err(self.io("remove", rel, io::Error::other("too deep")));
            }
            let child = self.open_dir(rel)?;
            for entry in child.names()? {
                child.remove_entry(&entry, depth + 1)?;
            }
            match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(true),
                Err(e) => Err(self.io("remove", rel, e.into())),
            }
        } else {
            match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(true),
                Err(e) => Err(self.io("remove", rel, e.into())),
            }
        }
    }

    /// Renames `from` (beneath this directory) to `to` beneath `to_dir`,
    /// replacing a file or an empty directory there.
    pub fn rename(&self, from: &Path, to_dir: &Dir, to: &Path) -> Result<(), FsError> {
        let (src, src_name) = self.parent(from)?;
        let (dst, dst_name) = to_dir.parent(to)?;
        rustix::fs::renameat(&src.fd, src_name, &dst.fd, dst_name)
            .map_err(|e| self.io("rename", from, e.into()))
    }

    /// Makes the symlink `rel` → `target` (for tests and tools only: cella
    /// itself writes no symlinks on the host).
    #[cfg(test)]
    pub fn symlink(&self, target: &str, rel: &Path) -> Result<(), FsError> {
        let (parent, name) = self.parent(rel)?;
        rustix::fs::symlinkat(target, &parent.fd, name)
            .map_err(|e| self.io("create symlink", rel, e.into()))
    }

    /// Flushes the directory's entries to disk.
    pub fn sync(&self) -> Result<(), FsError> {
        let fd = self.reopen_for_chmod()?;
        rustix::fs::fsync(&fd).map_err(|e| self.io("sync", Path::new(""), e.into()))
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
