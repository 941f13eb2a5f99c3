//! Snapshot files: a VM paused where guest-init waits for its first run
//! spec, its state and memory in one file under the user's cache, named by
//! the hash of everything that shaped it. Runs map the memory privately
//! (copy-on-write), so concurrent runs share its pages.
//!
//! Layout: a header page (magic, format, lengths, the state's sha256), the
//! state as JSON, then guest memory from a page boundary. Pages of zeros
//! are left as holes, so the file takes the space the guest touched.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use crate::vmm::{Vm, VmError, VmSnapshot, VmSpec};

const MAGIC: &[u8; 8] = b"CELLASNP";
/// Bumped whenever the layout or the saved state changes meaning.
const FORMAT: u32 = 1;
const PAGE: u64 = 4096;
/// What is read of the header page.
const HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8 + 32;
/// Largest state section accepted: a few vCPUs' registers, far below this.
const MAX_STATE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no snapshot")]
    Missing,
    #[error("cannot read {}", .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    #[error("not a cella snapshot (bad magic)")]
    Magic,
    #[error("snapshot format {0}, this cella reads format {FORMAT}")]
    Format(u32),
    #[error("snapshot is truncated: {0} bytes, its header says {1}")]
    Truncated(u64, u64),
    #[error("snapshot state does not match its checksum")]
    Checksum,
    #[error("snapshot state is malformed")]
    State(#[source] serde_json::Error),
    #[error("cannot write snapshot {}", .0.display())]
    Write(PathBuf, #[source] std::io::Error),
    #[error("cannot take the snapshot lock {}", .0.display())]
    Lock(PathBuf, #[source] std::io::Error),
    #[error("cannot describe {}", .0.display())]
    Identity(PathBuf, #[source] std::io::Error),
    #[error("cannot pause the VM")]
    Pause(#[source] VmError),
    #[error("cannot open /dev/kvm")]
    Cpu(#[source] kvm_ioctls::Error),
    #[error("cannot ask KVM for this CPU's features")]
    Cpuid(#[source] VmError),
}

/// A snapshot read from disk, ready to restore.
pub struct Snapshot {
    pub file: File,
    pub state: VmSnapshot,
    /// Where guest memory starts in `file`.
    pub mem_offset: u64,
}

/// The name of the snapshot of a VM built from `spec` with `kernel` and
/// `init` on this host: a hash of the spec, of the files' identities, of
/// this cella and of the CPU features KVM offers here.
pub fn key(spec: &VmSpec, kernel: &Path, init: &Path) -> Result<String, SnapshotError> {
    let mut h = Sha256::new();
    h.update(b"cella-snapshot\0");
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(FORMAT.to_le_bytes());
    h.update(guest_init::PROTOCOL_VERSION.to_le_bytes());
    // Serializing a struct of strings and numbers cannot fail.
    h.update(serde_json::to_vec(spec).unwrap_or_default());
    // This cella's own build too: its device models are in the snapshot.
    let exe = std::env::current_exe().map_err(|e| SnapshotError::Identity("cella".into(), e))?;
    for path in [kernel, init, &exe] {
        h.update(file_identity(path)?);
    }
    // The CPUID the guest sees: what KVM offers on this host, with the
    // APIC ids fixed (KVM reports the id of whichever CPU asked).
    let kvm = kvm_ioctls::Kvm::new().map_err(SnapshotError::Cpu)?;
    let cpuid = crate::vmm::vcpu::cpuid(&kvm, 0).map_err(SnapshotError::Cpuid)?;
    for e in cpuid.as_slice() {
        for v in [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx] {
            h.update(v.to_le_bytes());
        }
    }
    Ok(hex::encode(&h.finalize()[..16]))
}

/// A file's identity without reading it: path, size, inode and change
/// time, which a rebuild of the kernel or guest-init always changes.
fn file_identity(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    let err = |e| SnapshotError::Identity(path.to_path_buf(), e);
    let path = path.canonicalize().map_err(err)?;
    let m = path.metadata().map_err(err)?;
    let mut id = path.as_os_str().as_encoded_bytes().to_vec();
    for v in [m.dev(), m.ino(), m.size()] {
        id.extend_from_slice(&v.to_le_bytes());
    }
    for v in [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()] {
        id.extend_from_slice(&v.to_le_bytes());
    }
    Ok(id)
}

pub fn path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.snap"))
}

/// Reads and checks a snapshot's header and state; memory is mapped later.
pub fn load(path: &Path) -> Result<Snapshot, SnapshotError> {
    let read_err = |e| SnapshotError::Read(path.to_path_buf(), e);
    let mut file = match File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SnapshotError::Missing),
        other => other.map_err(read_err)?,
    };
    let len = file.metadata().map_err(read_err)?.len();
    let mut header = [0u8; HEADER_LEN];
    if len < PAGE {
        return Err(SnapshotError::Truncated(len, PAGE));
    }
    file.read_exact(&mut header).map_err(read_err)?;
    let (magic, rest) = header.split_at(8);
    if magic != MAGIC {
        return Err(SnapshotError::Magic);
    }
    let u32_at = |o: usize| u32::from_le_bytes(rest[o..o + 4].try_into().unwrap_or_default());
    let u64_at = |o: usize| u64::from_le_bytes(rest[o..o + 8].try_into().unwrap_or_default());
    let format = u32_at(0);
    if format != FORMAT {
        return Err(SnapshotError::Format(format));
    }
    let (state_len, mem_offset, mem_len) = (u64_at(4), u64_at(12), u64_at(20));
    let checksum = &rest[28..60];
    let end = mem_offset.checked_add(mem_len);
    if state_len > MAX_STATE || mem_offset < PAGE + state_len || end != Some(len) {
        return Err(SnapshotError::Truncated(len, end.unwrap_or(u64::MAX)));
    }
    let mut state = vec![0u8; state_len as usize];
    file.read_exact_at(&mut state, PAGE).map_err(read_err)?;
    if Sha256::digest(&state).as_slice() != checksum {
        return Err(SnapshotError::Checksum);
    }
    let state: VmSnapshot = serde_json::from_slice(&state).map_err(SnapshotError::State)?;
    if state.mem_size != mem_len {
        return Err(SnapshotError::Truncated(len, mem_offset + state.mem_size));
    }
    Ok(Snapshot {
        file,
        state,
        mem_offset,
    })
}

/// Pauses `vm`, writes its snapshot to `path` and lets it go on. The file
/// appears under its name only once complete and synced.
pub fn save(vm: &Vm, path: &Path) -> Result<(), SnapshotError> {
    let state = match vm.pause() {
        Ok(state) => state,
        Err(e) => {
            // Whatever vCPUs did stop must run again.
            vm.resume();
            return Err(SnapshotError::Pause(e));
        }
    };
    let written = write(&state, path, |file, offset| write_memory(vm, file, offset));
    vm.resume();
    written
}

/// Writes a snapshot file of `state`, with `write_mem` filling in guest
/// memory at the offset it is given.
fn write(
    state: &VmSnapshot,
    path: &Path,
    write_mem: impl FnOnce(&File, u64) -> std::io::Result<()>,
) -> Result<(), SnapshotError> {
    let err = |e| SnapshotError::Write(path.to_path_buf(), e);
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir(dir).map_err(err)?;
    let json = serde_json::to_vec(state).map_err(|e| err(e.into()))?;
    let mem_offset = (PAGE + json.len() as u64).div_ceil(PAGE) * PAGE;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT.to_le_bytes());
    for v in [json.len() as u64, mem_offset, state.mem_size] {
        header.extend_from_slice(&v.to_le_bytes());
    }
    header.extend_from_slice(&Sha256::digest(&json));

    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map_or("snap".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let result = (|| {
        // Guest memory: the user's alone.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&header)?;
        file.write_all_at(&json, PAGE)?;
        write_mem(&file, mem_offset)?;
        file.set_len(mem_offset + state.mem_size)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Writes guest memory at `offset`, skipping pages of zeros (holes).
fn write_memory(vm: &Vm, file: &File, offset: u64) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 20;
    const PAGE_SIZE: usize = PAGE as usize;
    let mem = vm.memory();
    let mut buf = vec![0u8; CHUNK];
    for region in mem.iter() {
        let (start, len) = (region.start_addr().0, region.len() as usize);
        // A restored VM's memory is a snapshot file mapped privately: only
        // what it read, wrote or has data for can be other than zeros, and
        // reading the rest would fill the page cache with zeros.
        let wanted = match (
            region.file_offset(),
            region.get_host_address(MemoryRegionAddress(0)),
        ) {
            (Some(backing), Ok(host)) => Some(worth_reading(
                host as usize,
                len,
                backing.file(),
                backing.start(),
            )?),
            _ => None,
        };
        let wanted = |page: usize| wanted.as_ref().is_none_or(|w| w[page]);
        let mut page = 0;
        while page < len / PAGE_SIZE {
            if !wanted(page) {
                page += 1;
                continue;
            }
            // A run of pages worth reading, one chunk at most.
            let first = page;
            while page < len / PAGE_SIZE && wanted(page) && (page - first) * PAGE_SIZE < CHUNK {
                page += 1;
            }
            let n = (page - first) * PAGE_SIZE;
            let at = (first * PAGE_SIZE) as u64;
            mem.read_slice(&mut buf[..n], GuestAddress(start + at))
                .map_err(std::io::Error::other)?;
            write_nonzero(file, &buf[..n], offset + start + at)?;
        }
    }
    Ok(())
}

/// Writes the pages of `data` that are not all zeros at `at` in `file`,
/// runs of them in one write each.
fn write_nonzero(file: &File, data: &[u8], at: u64) -> std::io::Result<()> {
    let page = PAGE as usize;
    let is_zero = |p: usize| data[p..(p + page).min(data.len())].iter().all(|&b| b == 0);
    let mut p = 0;
    while p < data.len() {
        if is_zero(p) {
            p += page;
            continue;
        }
        let run_start = p;
        while p < data.len() && !is_zero(p) {
            p += page;
        }
        file.write_all_at(&data[run_start..p.min(data.len())], at + run_start as u64)?;
    }
    Ok(())
}

/// Which pages of `len` bytes at host address `host`, mapped privately
/// from `backing` at `backing_start`, may hold other than zeros: those the
/// process has (touched since the mapping: /proc/self/pagemap) and those
/// with data in the file (SEEK_DATA).
fn worth_reading(
    host: usize,
    len: usize,
    backing: &File,
    backing_start: u64,
) -> std::io::Result<Vec<bool>> {
    let pages = len / PAGE as usize;
    let mut wanted = vec![false; pages];
    let pagemap = File::open("/proc/self/pagemap")?;
    let mut entries = vec![0u8; 8 * pages.min(1 << 16)];
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(entries.len() / 8);
        let at = ((host / PAGE as usize + done) * 8) as u64;
        pagemap.read_exact_at(&mut entries[..n * 8], at)?;
        for (i, e) in entries[..n * 8].chunks_exact(8).enumerate() {
            let e = u64::from_le_bytes(e.try_into().unwrap_or_default());
            // Present or swapped out.
            wanted[done + i] = e & (3 << 62) != 0;
        }
        done += n;
    }
    let fd = backing.as_raw_fd();
    let end = backing_start + len as u64;
    let mut pos = backing_start;
    while pos < end {
        // SAFETY: lseek on a descriptor `backing` owns; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 || data as u64 >= end {
            break; // ENXIO: no data past pos
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            end
        } else {
            (hole as u64).min(end)
        };
        let first = (data as u64 - backing_start) / PAGE;
        let last = (hole - backing_start).div_ceil(PAGE);
        for w in &mut wanted[first as usize..(last as usize).min(pages)] {
            *w = true;
        }
        pos = hole;
    }
    Ok(wanted)
}

/// Snapshots not read for this long are removed when a new one is saved:
/// every rebuild of cella, the kernel or guest-init makes a new one.
const UNUSED_FOR: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Removes the snapshots in `dir` other than `keep` that no run has read
/// for [`UNUSED_FOR`] (by access time; a run reads its snapshot's header).
/// A run still using one keeps its mapping: unlinking never breaks it.
pub fn prune(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for e in entries.flatten() {
        let path = e.path();
        if path == keep || path.extension().is_none_or(|x| x != "snap") {
            continue;
        }
        let unused = e
            .metadata()
            .and_then(|m| m.accessed())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > UNUSED_FOR);
        if unused {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Removes a snapshot that failed to load, unless another process has
/// already replaced it with a new file.
pub fn discard(path: &Path, snapshot_ino: Option<u64>) {
    let current = std::fs::metadata(path).ok().map(|m| m.ino());
    if snapshot_ino.is_none() || current == snapshot_ino {
        let _ = std::fs::remove_file(path);
    }
}

/// Makes `dir` (the user's snapshot directory) if missing and takes group
/// and other permissions from it: the snapshots in it hold guest memory.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    crate::hostfs::Dir::create_private(dir)
        .map(drop)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Removes what writers of snapshots left when they were killed (even by
/// SIGKILL): temporaries of `key`, whose lock the caller holds, and those
/// of any key whose writer process is gone.
fn remove_stale_temporaries(dir: &Path, key: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let ours = format!(".{key}.snap.tmp");
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, pid)) = name
            .rsplit_once(".snap.tmp")
            .filter(|_| name.starts_with('.'))
        else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if name.starts_with(&ours) || !alive {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// An exclusive lock on creating one snapshot; released when dropped.
pub struct CreateLock {
    _file: File,
}

/// Waits until no other cella is creating the snapshot `key`, then holds
/// the right to create it.
pub fn lock(dir: &Path, key: &str) -> Result<CreateLock, SnapshotError> {
    take_lock(dir, key, true)?.ok_or_else(|| {
        let busy = std::io::Error::from(std::io::ErrorKind::WouldBlock);
        SnapshotError::Lock(dir.join(format!("{key}.lock")), busy)
    })
}

/// The right to create the snapshot `key` unless another cella holds it:
/// then `None`, at once.
pub fn try_lock(dir: &Path, key: &str) -> Result<Option<CreateLock>, SnapshotError> {
    take_lock(dir, key, false)
}

fn take_lock(dir: &Path, key: &str, wait: bool) -> Result<Option<CreateLock>, SnapshotError> {
    let path = dir.join(format!("{key}.lock"));
    let err = |e| SnapshotError::Lock(path.clone(), e);
    private_dir(dir).map_err(err)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock on a file descriptor this function owns.
        let ret = unsafe { libc::flock(file.as_raw_fd(), op) };
        if ret == 0 {
            remove_stale_temporaries(dir, key);
            return Ok(Some(CreateLock { _file: file }));
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::state::VmState;

    fn state(mem_size: u64) -> VmSnapshot {
        VmSnapshot {
            mem_size,
            vm: VmState {
                pic_master: Default::default(),
                pic_slave: Default::default(),
                ioapic: Default::default(),
                pit: Default::default(),
                clock: Default::default(),
            },
            vcpus: Vec::new(),
            devices: Vec::new(),
        }
    }

    fn saved(dir: &Path) -> PathBuf {
        let path = dir.join("k.snap");
        write(&state(3 * PAGE), &path, |f, off| {
            f.write_all_at(&[0xab; 100], off + PAGE)
        })
        .expect("write");
        path
    }

    fn patch(path: &Path, at: u64, bytes: &[u8]) {
        let f = OpenOptions::new().write(true).open(path).expect("open");
        f.write_all_at(bytes, at).expect("patch");
    }

    #[test]
    fn round_trip_keeps_memory_at_its_offset_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = saved(dir.path());
        let snap = load(&path).expect("load");
        assert_eq!(snap.state.mem_size, 3 * PAGE);
        assert_eq!(snap.mem_offset % PAGE, 0);
        let mut page = vec![0u8; PAGE as usize];
        snap.file
            .read_exact_at(&mut page, snap.mem_offset + PAGE)
            .expect("read");
        assert_eq!(&page[..100], &[0xab; 100][..]);
        assert!(page[100..].iter().all(|&b| b == 0));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["k.snap"]);
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        type Damage = fn(&Path);
        let cases: [(&str, Damage); 5] = [
            ("magic", |p| patch(p, 0, b"NOTASNAP")),
            ("format", |p| patch(p, 8, &99u32.to_le_bytes())),
            ("checksum", |p| patch(p, PAGE + 2, b"##")),
            ("truncated", |p| {
                let f = OpenOptions::new().write(true).open(p).expect("open");
                let len = f.metadata().expect("stat").len();
                f.set_len(len - PAGE).expect("truncate");
            }),
            ("empty", |p| std::fs::write(p, b"").expect("write")),
        ];
        for (what, damage) in cases {
            let path = saved(dir.path());
            damage(&path);
            let err = load(&path).err().map(|e| e.to_string());
            let expect = match what {
                "magic" => "bad magic",
                "format" => "format 99",
                "checksum" => "checksum",
                _ => "truncated",
            };
            assert!(
                err.as_deref().is_some_and(|e| e.contains(expect)),
                "{what}: {err:?}"
            );
        }
        assert!(matches!(
            load(&dir.path().join("none.snap")),
            Err(SnapshotError::Missing)
        ));
    }

    #[test]
    fn prune_removes_only_long_unread_snapshots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (old, recent, keep) = ("old.snap", "recent.snap", "keep.snap");
        for name in [old, recent, keep, "other.lock"] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        let long_ago = std::time::SystemTime::now() - 2 * UNUSED_FOR;
        for name in [old, keep, "other.lock"] {
            let f = File::options()
                .write(true)
                .open(dir.path().join(name))
                .expect("open");
            f.set_times(std::fs::FileTimes::new().set_accessed(long_ago))
                .expect("set atime");
        }
        prune(dir.path(), &dir.path().join(keep));
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["keep.snap", "other.lock", "recent.snap"]);
    }

    #[test]
    fn snapshots_are_private_and_killed_writers_leave_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("snapshots");
        let path = saved(&dir);
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
        // Temporaries of a writer killed by SIGKILL: of this key, and of
        // another key whose writer is gone; a live writer's stays.
        let dead = format!(".other.snap.tmp{}", u32::MAX - 1);
        let live = format!(".other.snap.tmp{}", std::process::id());
        for name in [".k.snap.tmp1", &dead, &live] {
            std::fs::write(dir.join(name), b"guest memory").expect("write");
        }
        let held = lock(&dir, "k").expect("lock");
        assert!(!dir.join(".k.snap.tmp1").exists());
        assert!(!dir.join(&dead).exists());
        assert!(dir.join(&live).exists());
        drop(held);
    }

    #[test]
    fn the_create_lock_is_exclusive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = lock(dir.path(), "k").expect("lock");
        let path = dir.path().join("k.lock");
        let f = File::open(&path).expect("open");
        // SAFETY: flock on a descriptor this test owns.
        let busy = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(busy, -1, "a second holder got the lock");
        drop(held);
        // SAFETY: as above.
        let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(free, 0);
    }
}
