//! The initramfs mounts and the workload's root: erofs below, tmpfs-backed overlay on top.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::sys;

const LOWER: &str = "/mnt/lower";
const RW: &str = "/mnt/rw";
const ROOT: &str = "/mnt/root";
/// How long to wait for the root block device's node to appear in devtmpfs.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(5);

/// Adds what failed to an error, keeping its kind.
pub fn ctx(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), sys::describe(what, &e))
}

pub fn mkdir(path: &str, mode: libc::mode_t) -> io::Result<()> {
    sys::mkdir(path, mode).map_err(|e| ctx(&format!("mkdir {path}"), e))
}

/// Mounts `fstype` at `target`; EBUSY (already mounted by the kernel) is fine.
fn mount_fs(
    fstype: &str,
    target: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    match sys::mount(fstype, target, Some(fstype), flags, data) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        other => other.map_err(|e| ctx(&format!("mount {fstype} on {target}"), e)),
    }
}

fn move_mount(from: &str, to: &str) -> io::Result<()> {
    sys::mount(from, to, None, libc::MS_MOVE, None)
        .map_err(|e| ctx(&format!("move mount {from} to {to}"), e))
}

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// A filesystem mounted inside the workload's root.
struct RootMount {
    fstype: &'static str,
    dir: &'static str,
    flags: libc::c_ulong,
    data: &'static str,
    /// Skipped when the kernel lacks it.
    optional: bool,
}

const ROOT_MOUNTS: [RootMount; 4] = [
    RootMount {
        fstype: "proc",
        dir: "/proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        optional: false,
    },
    RootMount {
        fstype: "tmpfs",
        dir: "/tmp",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
        optional: false,
    },
    RootMount {
        fstype: "tmpfs",
        dir: "/dev/shm",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
        optional: false,
    },
    RootMount {
        fstype: "devpts",
        dir: "/dev/pts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: "gid=5,mode=620,ptmxmode=666",
        optional: true,
    },
];

/// What guest-init itself needs in the initramfs: sysfs to find the ports
/// and devtmpfs to open them. /proc and /tmp come with the workload's root.
pub fn early() -> io::Result<()> {
    mkdir("/sys", 0o755)?;
    mount_fs("sysfs", "/sys", NOSUID_NODEV_NOEXEC, None)?;
    mkdir("/dev", 0o755)?;
    mount_fs("devtmpfs", "/dev", libc::MS_NOSUID, Some("mode=0755"))
}

/// Waits until the host has put a disk into `device`'s drive: a restored
/// VM's drives were probed empty, and the resize arrives as a config
/// interrupt handled by a kernel worker.
fn wait_for_media(device: &str, deadline: Instant) -> io::Result<()> {
    let name = device.rsplit('/').next().unwrap_or(device);
    let size_file = format!("/sys/class/block/{name}/size");
    loop {
        let sectors = sys::read_small_file(&size_file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if sectors.is_some_and(|n| n > 0) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let what = match sectors {
                Some(_) => format!("{device} is still empty"),
                None => format!("{size_file} is missing"),
            };
            return Err(io::Error::new(io::ErrorKind::NotFound, what));
        }
        sys::sleep_ms(1);
    }
}

/// Mounts the root device read-only at `lower`, waiting briefly for its
/// device node (also another container's root, as a volume).
pub fn mount_lower(device: &str, lower: &str) -> io::Result<()> {
    let deadline = Instant::now() + DEVICE_TIMEOUT;
    wait_for_media(device, deadline)?;
    loop {
        match sys::mount(device, lower, Some("erofs"), libc::MS_RDONLY, None) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && Instant::now() < deadline => {
                sys::sleep_ms(5)
            }
            other => return other.map_err(|e| ctx(&format!("mount erofs {device} on {lower}"), e)),
        }
    }
}

/// The initramfs's root directory, opened before anything covers it.
static INITRAMFS: AtomicI32 = AtomicI32::new(-1);

/// An `O_PATH` fd of the initramfs's root: guest-init reaches its /mnt
/// through it even after the workload's root has replaced it at /.
pub fn initramfs() -> RawFd {
    INITRAMFS.load(Ordering::Relaxed)
}

/// What the root needs that does not depend on the run: the mount points
/// and the overlay's writable tmpfs. Done before the hello, so a VM
/// restored from a snapshot has it done already.
pub fn prepare() -> io::Result<()> {
    for dir in ["/mnt", LOWER, RW, ROOT] {
        mkdir(dir, 0o755)?;
    }
    let fd = sys::open("/", libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .map_err(|e| ctx("open /", e))?;
    INITRAMFS.store(fd, Ordering::Relaxed);
    mount_fs(
        "tmpfs",
        RW,
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )?;
    mkdir(&format!("{RW}/upper"), 0o755)?;
    mkdir(&format!("{RW}/work"), 0o755)
}

/// An fd of the overlay's upper directory (where a run's writes land).
pub fn open_upper() -> io::Result<std::os::fd::RawFd> {
    sys::open(
        &format!("{RW}/upper"),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
    )
}

/// An overlay at `root` of `lower` under the writable `upper` and `work`.
fn overlay(lower: &str, upper: &str, work: &str, root: &str) -> io::Result<()> {
    let opts = format!("lowerdir={lower},upperdir={upper},workdir={work}");
    sys::mount("overlay", root, Some("overlay"), 0, Some(&opts))
        .map_err(|e| ctx(&format!("mount overlay on {root}"), e))
}

/// Mounts /proc, /tmp, /dev/shm and /dev/pts in `root`, whose /sys and
/// /dev are already there.
fn root_mounts(root: &str) -> io::Result<()> {
    for m in ROOT_MOUNTS {
        let target = format!("{root}{}", m.dir);
        if m.dir.starts_with("/dev/") {
            mkdir(&target, 0o755)?;
        }
        match sys::mount(m.fstype, &target, Some(m.fstype), m.flags, Some(m.data)) {
            // A kernel without UNIX98 ptys: the workload just gets none.
            Err(e) if m.optional && e.raw_os_error() == Some(libc::ENODEV) => {}
            other => other.map_err(|e| ctx(&format!("mount {} on {target}", m.fstype), e))?,
        }
    }
    Ok(())
}

/// Builds the overlay root from `device` over what [`prepare`] made, moves
/// /sys and /dev into it, and makes it the root of guest-init (and so of
/// the workload).
pub fn switch_root(device: &str, hostname: &str) -> io::Result<()> {
    enter_root(device)?;
    set_hostname(hostname)
}

/// [`switch_root`] without the hostname: what a warm snapshot holds.
pub fn enter_root(device: &str) -> io::Result<()> {
    mount_lower(device, LOWER)?;
    overlay(LOWER, &format!("{RW}/upper"), &format!("{RW}/work"), ROOT)?;
    for dir in ["proc", "sys", "dev", "tmp"] {
        mkdir(&format!("{ROOT}/{dir}"), 0o755)?;
    }
    move_mount("/sys", &format!("{ROOT}/sys"))?;
    move_mount("/dev", &format!("{ROOT}/dev"))?;
    root_mounts(ROOT)?;

    // As switch_root does: the new root replaces the initramfs at /.
    sys::chdir(ROOT).map_err(|e| ctx(&format!("chdir {ROOT}"), e))?;
    move_mount(".", "/")?;
    sys::chroot(".").map_err(|e| ctx("chroot", e))?;
    sys::chdir("/").map_err(|e| ctx("chdir /", e))
}

pub fn set_hostname(hostname: &str) -> io::Result<()> {
    if !hostname.is_empty() {
        sys::sethostname(hostname).map_err(|e| ctx(&format!("sethostname {hostname:?}"), e))?;
    }
    Ok(())
}

/// A root of its own for the supervised child `index`, at the returned
/// path in the initramfs: an overlay of `device` (mounted once per device
/// and shared read-only between children) with its own writable layer,
/// and the initramfs's /sys and /dev bound into it. guest-init stays in
/// the initramfs and each child chroots into its root.
pub fn child_root(index: usize, device: &str) -> io::Result<String> {
    let name = device.rsplit('/').next().unwrap_or(device);
    let lower = format!("/mnt/lower-{name}");
    if !std::path::Path::new(&lower).exists() {
        mkdir(&lower, 0o755)?;
        mount_lower(device, &lower)?;
    }
    let rw = format!("{RW}/child{index}");
    let root = format!("/mnt/child{index}");
    for dir in [
        rw.clone(),
        format!("{rw}/upper"),
        format!("{rw}/work"),
        root.clone(),
    ] {
        mkdir(&dir, 0o755)?;
    }
    overlay(&lower, &format!("{rw}/upper"), &format!("{rw}/work"), &root)?;
    for dir in ["proc", "sys", "dev", "tmp"] {
        mkdir(&format!("{root}/{dir}"), 0o755)?;
    }
    for dir in ["/sys", "/dev"] {
        let target = format!("{root}{dir}");
        sys::mount(dir, &target, None, libc::MS_BIND | libc::MS_REC, None)
            .map_err(|e| ctx(&format!("bind {dir} on {target}"), e))?;
    }
    root_mounts(&root)?;
    Ok(root)
}

/// /proc in the initramfs, for guest-init itself while children run in roots of their own.
pub fn initramfs_proc() -> io::Result<()> {
    mkdir("/proc", 0o555)?;
    mount_fs("proc", "/proc", NOSUID_NODEV_NOEXEC, None)
}
