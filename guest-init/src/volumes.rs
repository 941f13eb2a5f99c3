//! The run's mounts over the workload's root: host shares from the
//! virtio-fs device (/work, binds, persistent volumes), tmpfs volumes,
//! empty and snapshot directories; then the root goes read-only.
//!
//! The virtio-fs device is mounted in the initramfs (reached through its
//! fd, so also after the root has moved, as in a warm snapshot), and each
//! share is kept as an `O_PATH` fd; everything else happens after the
//! chroot, so that a symlink in the image resolves inside the container's
//! root.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use guest_init::{Mount, FS_TAG};

use crate::mounts::{ctx, mkdir};
use crate::sys;

/// Where the virtio-fs device is mounted, relative to the initramfs's root.
const FS_DIR: &str = "mnt/fs";
/// A directory made (and removed again) in the root for a snapshot's tmpfs.
const STAGE: &str = "/.cella-stage";

const NOSUID_NODEV: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;

/// The host shares `mounts` use, opened by index: `None` where unused.
pub struct Shares(Vec<Option<RawFd>>);

impl Drop for Shares {
    fn drop(&mut self) {
        for fd in self.0.iter().flatten() {
            sys::close(*fd);
        }
    }
}

/// Whether the virtio-fs device is mounted (a warm snapshot's may be).
static MOUNTED: AtomicBool = AtomicBool::new(false);

/// Mounts the virtio-fs device in the initramfs, once. A warm snapshot is
/// saved with it mounted: its FUSE session's start (INIT) is then done,
/// and a run restored from it only looks its shares up.
pub fn mount_device() -> io::Result<()> {
    in_initramfs(|| Ok(()))
}

/// Runs `f` with the initramfs's root as the current directory and the
/// virtio-fs device mounted there; the current directory is / again after.
fn in_initramfs<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    sys::fchdir(crate::mounts::initramfs()).map_err(|e| ctx("chdir to the initramfs", e))?;
    let result = mount_here().and_then(|()| f());
    sys::chdir("/").map_err(|e| ctx("chdir /", e))?;
    result
}

/// Mounts the device at [`FS_DIR`] under the current directory unless it is.
fn mount_here() -> io::Result<()> {
    if MOUNTED.load(Ordering::Relaxed) {
        return Ok(());
    }
    mkdir(FS_DIR, 0o755)?;
    sys::mount(FS_TAG, FS_DIR, Some("virtiofs"), NOSUID_NODEV, None)
        .map_err(|e| ctx(&format!("mount virtiofs {FS_TAG} on {FS_DIR}"), e))?;
    MOUNTED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Mounts the virtio-fs device if needed and opens the shares `mounts`
/// name, through the initramfs's root. The current directory is / when it
/// returns.
pub fn open_shares(mounts: &[Mount]) -> io::Result<Shares> {
    let mut shares = Shares(Vec::new());
    let wanted: Vec<u32> = mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Share { share, .. } => Some(*share),
            _ => None,
        })
        .collect();
    if wanted.is_empty() {
        return Ok(shares);
    }
    in_initramfs(|| open_each(&mut shares, wanted))?;
    Ok(shares)
}

/// Opens the shares `wanted` into `shares`, relative to the initramfs's root.
fn open_each(shares: &mut Shares, wanted: Vec<u32>) -> io::Result<()> {
    for share in wanted {
        let index = share as usize;
        if shares.0.len() <= index {
            shares.0.resize(index + 1, None);
        }
        if shares.0[index].is_none() {
            let path = format!("{FS_DIR}/{share}");
            let fd = sys::open(&path, libc::O_PATH | libc::O_DIRECTORY)
                .map_err(|e| ctx(&format!("open share {path}"), e))?;
            shares.0[index] = Some(fd);
        }
    }
    Ok(())
}

/// Makes `path` and its missing parents (mode 0755), resolving inside the
/// current root.
fn mkdir_p(path: &str) -> io::Result<()> {
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        mkdir(&at, 0o755)?;
    }
    Ok(())
}

fn remount(target: &str, flags: libc::c_ulong) -> io::Result<()> {
    sys::mount(
        "none",
        target,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | flags,
        None,
    )
    .map_err(|e| ctx(&format!("remount {target}"), e))
}

fn tmpfs(target: &str, flags: libc::c_ulong, mode: u32, size: Option<u64>) -> io::Result<()> {
    let mut data = format!("mode={mode:o}");
    if let Some(size) = size {
        data.push_str(&format!(",size={size}"));
    }
    sys::mount("tmpfs", target, Some("tmpfs"), flags, Some(&data))
        .map_err(|e| ctx(&format!("mount tmpfs on {target}"), e))
}

fn chmod(path: &str, mode: u32) -> io::Result<()> {
    let c = sys::cstring(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    sys::check(unsafe { libc::chmod(c.as_ptr(), mode) })
        .map(drop)
        .map_err(|e| ctx(&format!("chmod {path}"), e))
}

fn chown(path: &str, uid: u32, gid: u32) -> io::Result<()> {
    let c = sys::cstring(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    sys::check(unsafe { libc::chown(c.as_ptr(), uid, gid) })
        .map(drop)
        .map_err(|e| ctx(&format!("chown {path}"), e))
}

fn write_file(path: &str, content: &[u8]) -> io::Result<()> {
    let fd = sys::open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)
        .map_err(|e| ctx(&format!("create {path}"), e))?;
    let written = sys::write_all(fd, content, false);
    sys::close(fd);
    written.map_err(|e| ctx(&format!("write {path}"), e))
}

fn umount_detach(target: &str) -> io::Result<()> {
    let c = sys::cstring(target)?;
    // SAFETY: c is a valid NUL-terminated path.
    sys::check(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) })
        .map(drop)
        .map_err(|e| ctx(&format!("umount {target}"), e))
}

fn rmdir(path: &str) -> io::Result<()> {
    let c = sys::cstring(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    sys::check(unsafe { libc::rmdir(c.as_ptr()) })
        .map(drop)
        .map_err(|e| ctx(&format!("rmdir {path}"), e))
}

/// Mounts everything in `mounts` in order (parents first), inside the
/// current root, then makes the root read-only if asked.
pub fn mount_all(mounts: &[Mount], shares: &Shares, read_only_root: bool) -> io::Result<()> {
    for (index, mount) in mounts.iter().enumerate() {
        let target = mount.target();
        mkdir_p(target)?;
        match mount {
            Mount::Share {
                share, read_only, ..
            } => {
                let fd = shares
                    .0
                    .get(*share as usize)
                    .copied()
                    .flatten()
                    .ok_or_else(|| io::Error::other(format!("share {share} was not opened")))?;
                let source = format!("/proc/self/fd/{fd}");
                sys::mount(&source, target, None, libc::MS_BIND, None)
                    .map_err(|e| ctx(&format!("bind share {share} on {target}"), e))?;
                if *read_only {
                    remount(target, NOSUID_NODEV | libc::MS_RDONLY)?;
                }
            }
            Mount::Tmpfs {
                size,
                mode,
                subdirs,
                files,
                ..
            } => {
                tmpfs(target, NOSUID_NODEV, *mode, *size)?;
                for (name, mode) in subdirs {
                    let path = format!("{target}/{name}");
                    mkdir_p(&path)?;
                    chmod(&path, *mode)?;
                }
                for (name, content) in files {
                    let path = format!("{target}/{name}");
                    write_file(&path, content.as_bytes())?;
                    chmod(&path, 0o644)?;
                }
            }
            Mount::Empty { .. } => {
                tmpfs(target, NOSUID_NODEV | libc::MS_RDONLY, 0o755, Some(4096))?;
            }
            Mount::Snapshot { size, owner, .. } => snapshot(target, index, *size, *owner)?,
            Mount::Image {
                drive,
                writable,
                size,
                owner,
                ..
            } => {
                crate::mounts::mount_lower(&guest_init::drive_device(*drive), target)?;
                remount(target, NOSUID_NODEV | libc::MS_RDONLY)?;
                if *writable {
                    snapshot(target, index, *size, *owner)?;
                }
            }
        }
    }
    if read_only_root {
        remount("/", libc::MS_RDONLY)?;
    }
    Ok(())
}

/// An overlay over the directory at `target`, its writes in a new tmpfs.
fn snapshot(
    target: &str,
    index: usize,
    size: Option<u64>,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let stage = format!("{STAGE}{index}");
    mkdir(&stage, 0o700)?;
    tmpfs(&stage, NOSUID_NODEV, 0o755, size)?;
    for dir in ["upper", "work"] {
        mkdir(&format!("{stage}/{dir}"), 0o755)?;
    }
    let opts = format!("lowerdir={target},upperdir={stage}/upper,workdir={stage}/work");
    sys::mount(
        "overlay",
        target,
        Some("overlay"),
        NOSUID_NODEV,
        Some(&opts),
    )
    .map_err(|e| ctx(&format!("mount snapshot overlay on {target}"), e))?;
    // The overlay holds its own reference to the upper layer.
    umount_detach(&stage)?;
    rmdir(&stage)?;
    if let Some((uid, gid)) = owner {
        chown(target, uid, gid)?;
    }
    Ok(())
}
