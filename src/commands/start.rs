//! Getting a VM to the point where guest-init waits for its run spec:
//! restored from the snapshot of a VM of the same shape, or booted from
//! scratch (then snapshotted for the next runs), and running the spec.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use guest_init::{RunSpec, PORT_NAMES};

use super::find_asset;
use super::run::{Machine, RunError, RunOptions};
use crate::devices::virtio::console::ConsoleLimits;
use crate::devices::virtio::fs::server::Server;
use crate::guest::{self, initramfs, BuildIo, GuestError, Limits, Outcome};
use crate::net::{self, Passt};
use crate::snapshot::{self, CreateLock, SnapshotError};
use crate::vmm::{self, Restore, Vm, VmSpec};

/// Features this host's emulating KVM can't run, and our kernel's switch
/// for its workarounds (kernel-config/README.md says why each is there).
/// `erms,fsrm` are not broken, only slow: without them the kernel copies
/// and clears memory 8 bytes per emulated iteration instead of 1, which
/// made guest → host streaming 3x faster here.
const EMULATED_HOST_PARAMS: &str = "cella_pvm noxsave \
    clearcpuid=popcnt,cx16,rdrand,rdseed,smap,fsgsbase,pcid,invpcid,movbe,avx,aes,pclmulqdq,sha_ni,gfni,vaes,vpclmulqdq,erms,fsrm";

fn boot_timeout() -> Duration {
    let default = if vmm::host_is_emulating() { 600 } else { 30 };
    let secs = std::env::var("CELLA_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(secs)
}

/// The kernel command line for a run.
pub fn kernel_cmdline(verbose: bool, emulating: bool, extra: Option<&str>) -> String {
    let mut cmdline = String::from("console=ttyS0 reboot=k panic=-1");
    if !verbose {
        cmdline.push_str(" quiet");
    }
    if emulating {
        cmdline.push(' ');
        cmdline.push_str(EMULATED_HOST_PARAMS);
    }
    if let Some(extra) = extra {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    cmdline
}

/// A limit from the settings as a size in memory.
fn bytes(limit: u64) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// How the VM of this run came to be.
enum Start {
    /// Booted, with snapshots off or out of reach.
    Cold,
    /// Resumed from a snapshot: guest-init already said hello.
    Restored,
    /// Booted to make the snapshot at `path` once the guest is ready;
    /// other cellas wait on `lock` meanwhile.
    Template(PathBuf, CreateLock),
}

/// Runs `spec` in a VM of `machine`'s size with `disks` in its drives (one
/// drive per disk, at least one: the drives and the size are the VM's
/// shape, and each shape has a snapshot of its own); the exit status.
pub fn boot_and_run(
    disks: Vec<std::fs::File>,
    spec: RunSpec,
    fs: Option<Server>,
    machine: Machine,
    opts: &RunOptions,
    build: Option<&mut BuildIo<'_>>,
) -> Result<i32, RunError> {
    guest::mark("start");
    let kernel = find_asset("CELLA_KERNEL", "cella-vmlinux").ok_or(RunError::MissingAsset {
        what: "kernel",
        env: "CELLA_KERNEL",
        file: "cella-vmlinux",
    })?;
    std::fs::metadata(&kernel).map_err(|e| RunError::ReadAsset(kernel.clone(), e))?;
    let init =
        find_asset("CELLA_GUEST_INIT", "cella-guest-init").ok_or(RunError::MissingAsset {
            what: "init",
            env: "CELLA_GUEST_INIT",
            file: "cella-guest-init",
        })?;
    let drives = disks.len().max(1);
    let mut vm_spec = VmSpec {
        kernel,
        initramfs: Vec::new(),
        // CELLA_KERNEL_ARGS, a debugging aid, goes last so it wins.
        cmdline: kernel_cmdline(
            opts.verbose,
            vmm::host_is_emulating(),
            std::env::var("CELLA_KERNEL_ARGS").ok().as_deref(),
        ),
        drives,
        vcpus: machine.vcpus,
        mem_mib: machine.mem_mib,
        verbose: opts.verbose,
        ports: PORT_NAMES.iter().map(|s| s.to_string()).collect(),
        net: machine.network.is_some(),
        console_limits: ConsoleLimits {
            buffer: bytes(opts.limits.console_buffer),
            control_queue: bytes(opts.limits.control_queue),
        },
    };
    // passt first: a published port that is taken fails before the boot.
    let mut spec = spec;
    let (passt, backend) = match &machine.network {
        Some(plan) => {
            spec.network = Some(net::guest_config());
            let (passt, stream) = Passt::start(plan)?;
            (Some(passt), Some((stream, net::filter(plan))))
        }
        None => (None, None),
    };
    let cold_boot = opts.cold_boot || std::env::var_os("CELLA_COLD_BOOT").is_some_and(|v| v != "0");
    let (vm, start) = start_vm(&mut vm_spec, &init, !cold_boot)?;
    let restored = matches!(start, Start::Restored);
    guest::mark(if restored { "restored" } else { "booting" });
    let mut template = match start {
        Start::Template(path, lock) => Some((path, lock)),
        _ => None,
    };
    let verbose = opts.verbose;
    let mut fs = fs;
    let mut on_ready = |vm: &Vm| -> Result<(), GuestError> {
        if let Some((path, lock)) = template.take() {
            match snapshot::save(vm, &path) {
                Ok(()) => {
                    if verbose {
                        eprintln!("cella: saved snapshot {}", path.display());
                    }
                    if let Some(dir) = path.parent() {
                        snapshot::prune(dir, &path);
                    }
                }
                Err(e) => warn(
                    &e,
                    "cannot save a snapshot; the next run boots from scratch",
                ),
            }
            drop(lock);
        }
        for (i, disk) in disks.iter().enumerate() {
            let disk = disk
                .try_clone()
                .map_err(|e| GuestError::Prepare(vmm::VmError::OpenDisk(e)))?;
            vm.insert_disk(i, disk).map_err(GuestError::Prepare)?;
        }
        if let Some(server) = fs.take() {
            vm.set_fs_server(server);
        }
        Ok(())
    };
    let limits = Limits {
        boot: boot_timeout(),
        run: opts.timeout,
        mem_mib: machine.mem_mib,
        control_queue: bytes(opts.limits.control_queue),
        export: opts.limits.image,
    };
    let net_fd = backend.and_then(|(stream, filter)| vm.set_net_backend(stream, filter));
    let outcome = guest::run(&vm, spec, limits, restored, &mut on_ready, build, net_fd)?;
    drop(passt);
    // For bench/: how much host memory the VMM itself costs.
    if std::env::var_os("CELLA_STATS").is_some() {
        if let Some((peak, guest)) = vm.memory_stats() {
            eprintln!(
                "cella-stats: peak_rss_kib={peak} guest_touched_kib={guest} restored={restored}"
            );
        }
    }
    match outcome {
        Outcome::Status(status) => Ok(status),
        Outcome::Interrupted(sig) => Ok(guest_init::ExitCode::Signal(sig).code()),
        Outcome::TimedOut => Ok(guest_init::ExitCode::Timeout.code()),
    }
}

/// A VM whose guest-init is, or will soon be, waiting for its run spec.
fn start_vm(spec: &mut VmSpec, init: &Path, snapshots: bool) -> Result<(Vm, Start), RunError> {
    let dir = snapshots
        .then(snapshot::cache_dir)
        .flatten()
        .map(|d| d.join("snapshots"));
    if let Some(dir) = dir {
        match snapshot::key(spec, &spec.kernel, init) {
            Ok(key) => {
                let path = snapshot::path(&dir, &key);
                if let Some(vm) = restore(spec, &path) {
                    return Ok((vm, Start::Restored));
                }
                match snapshot::lock(&dir, &key) {
                    Ok(lock) => {
                        // Another cella may have made it while we waited.
                        if let Some(vm) = restore(spec, &path) {
                            return Ok((vm, Start::Restored));
                        }
                        let vm = cold_boot(spec, init)?;
                        return Ok((vm, Start::Template(path, lock)));
                    }
                    Err(e) => warn(&e, "booting without a snapshot"),
                }
            }
            Err(e) => warn(&e, "booting without a snapshot"),
        }
    }
    Ok((cold_boot(spec, init)?, Start::Cold))
}

fn cold_boot(spec: &mut VmSpec, init: &Path) -> Result<Vm, RunError> {
    let init = std::fs::read(init).map_err(|e| RunError::ReadAsset(init.to_path_buf(), e))?;
    spec.initramfs = initramfs::build(&init);
    Ok(vmm::build_and_start(spec, None)?)
}

/// The VM in the snapshot at `path`, if there is a good one. A snapshot
/// that fails to load or to restore is discarded with a warning.
fn restore(spec: &VmSpec, path: &Path) -> Option<Vm> {
    let discard = |e: &dyn std::error::Error, ino: Option<u64>| {
        let action = format!(
            "discarding snapshot {} and booting from scratch",
            path.display()
        );
        warn(e, &action);
        snapshot::discard(path, ino);
    };
    let snap = match snapshot::load(path) {
        Ok(snap) => snap,
        Err(SnapshotError::Missing) => return None,
        Err(e) => {
            discard(&e, None);
            return None;
        }
    };
    let ino = snap.file.metadata().ok().map(|m| m.ino());
    let restore = Restore {
        state: &snap.state,
        file: snap.file,
        offset: snap.mem_offset,
    };
    match vmm::build_and_start(spec, Some(restore)) {
        Ok(vm) => Some(vm),
        Err(e) => {
            discard(&e, ino);
            None
        }
    }
}

/// One line on stderr: what cella does instead, then the error chain.
fn warn(e: &dyn std::error::Error, action: &str) {
    let mut line = format!("cella: warning: {action}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        line.push_str(&format!(": {s}"));
        source = s.source();
    }
    eprintln!("{}", crate::text::escape_keeping_lines(&line));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_adds_quirks_only_on_emulating_hosts() {
        let plain = kernel_cmdline(false, false, None);
        assert_eq!(plain, "console=ttyS0 reboot=k panic=-1 quiet");
        let pvm = kernel_cmdline(true, true, Some("rdinit=/x"));
        assert!(pvm.ends_with(" rdinit=/x"));
        assert!(pvm.contains("cella_pvm") && pvm.contains("clearcpuid=popcnt"));
        assert!(!pvm.contains("quiet"));
        assert!(pvm.len() < crate::vmm::boot::CMDLINE_MAX / 2);
    }
}
