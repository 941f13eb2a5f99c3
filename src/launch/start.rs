//! Getting a VM to the point where guest-init waits for its run spec:
//! restored from the snapshot of a VM of the same shape, or booted from
//! scratch (then snapshotted for the next runs), and running the spec.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use guest_init::{ExitCode, RunSpec, PORT_NAMES};

use super::control::{self, BuildIo, GuestError, Limits, Outcome};
use super::error::LaunchError;
use super::machine::{LaunchOptions, Machine};
use super::passt::{self, Passt};
use super::snapshot::{self, CreateLock, SnapshotError};
use super::warm::{self, WarmPlan};
use super::{initramfs, stats, terminal};
use crate::devices::virtio::console::ConsoleLimits;
use crate::devices::virtio::fs::server::Server;
use crate::devices::virtio::net_filter::Filter;
use crate::image::host::stable_digest;
use crate::image::store::BuiltWith;
use crate::sandbox::jail::Confined;
use crate::sandbox::{self, ChainError};
use crate::text::error_chain;
use crate::vmm::{self, Restore, Vm, VmSpec};

/// Features this host's emulating KVM can't run, and our kernel's switch
/// for its workarounds (kernel-config/README.md says why each is there).
/// `erms,fsrm` are not broken, only slow: without them the kernel copies
/// and clears memory 8 bytes per emulated iteration instead of 1, which
/// made guest → host streaming 3x faster here.
const EMULATED_HOST_PARAMS: &str = "cella_pvm noxsave \
    clearcpuid=popcnt,cx16,rdrand,rdseed,smap,fsgsbase,pcid,invpcid,movbe,avx,aes,pclmulqdq,sha_ni,gfni,vaes,vpclmulqdq,erms,fsrm";

/// How long guest-init may take to report the workload started:
/// `CELLA_BOOT_TIMEOUT`, else a default for this host.
fn boot_timeout(opts: &LaunchOptions) -> Duration {
    let default = if vmm::host_is_emulating() { 600 } else { 30 };
    opts.knobs
        .boot_timeout
        .unwrap_or(Duration::from_secs(default))
}

/// Where an asset shipped beside the binary is: the knob's path, else
/// next to the `cella` executable.
fn find_asset(knob: Option<&PathBuf>, file_name: &str) -> Option<PathBuf> {
    if let Some(p) = knob {
        return Some(p.clone());
    }
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent().map(|d: &Path| d.join(file_name))?;
    candidate.exists().then_some(candidate)
}

/// The guest kernel and guest-init a run boots.
fn assets(opts: &LaunchOptions) -> Result<(PathBuf, PathBuf), LaunchError> {
    let kernel = find_asset(opts.knobs.kernel.as_ref(), "cella-vmlinux").ok_or(
        LaunchError::MissingAsset {
            what: "kernel",
            env: "CELLA_KERNEL",
            file: "cella-vmlinux",
        },
    )?;
    std::fs::metadata(&kernel).map_err(|e| LaunchError::ReadAsset(kernel.clone(), e))?;
    let init = find_asset(opts.knobs.guest_init.as_ref(), "cella-guest-init").ok_or(
        LaunchError::MissingAsset {
            what: "init",
            env: "CELLA_GUEST_INIT",
            file: "cella-guest-init",
        },
    )?;
    Ok((kernel, init))
}

/// What a run with `opts` boots: cella's version and the sha256 of the
/// kernel and guest-init (about 50 ms of hashing; for builds' records).
pub fn built_with(opts: &LaunchOptions) -> Result<BuiltWith, LaunchError> {
    let (kernel, init) = assets(opts)?;
    let digest = |path: PathBuf| {
        let read = |e| LaunchError::ReadAsset(path.clone(), e);
        let file = std::fs::File::open(&path).map_err(read)?;
        stable_digest(file)
            .map_err(read)?
            .map(hex::encode)
            .ok_or_else(|| read(std::io::Error::other("it changed while it was read")))
    };
    Ok(BuiltWith {
        cella: env!("CARGO_PKG_VERSION").to_owned(),
        kernel: digest(kernel)?,
        guest_init: digest(init)?,
    })
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
    /// Resumed from a warm snapshot: the root is mounted too.
    Warm,
    /// Booted to make the snapshot at `path` once the guest is ready;
    /// other cellas wait on `lock` meanwhile.
    Template(PathBuf, CreateLock),
}

/// A warm snapshot this run makes once the guest has readied it; no
/// other cella makes the same one meanwhile.
struct WarmSave {
    plan: WarmPlan,
    _lock: CreateLock,
}

/// Runs `spec` in a VM of `machine`'s size with `disks` in its drives (one
/// drive per disk, at least one: the drives and the size are the VM's
/// shape, and each shape has a snapshot of its own); the exit status.
///
/// The VM runs in a process of its own (`sandbox`), which drops every
/// privilege before the guest runs; passt, a program of the host, is
/// started here first.
pub fn launch(
    disks: Vec<std::fs::File>,
    spec: RunSpec,
    fs: Option<Server>,
    machine: Machine,
    opts: &LaunchOptions,
    build: Option<&mut BuildIo<'_>>,
) -> Result<i32, LaunchError> {
    if opts.knobs.stats {
        stats::enable();
    }
    stats::mark("start");
    let (kernel, init) = assets(opts)?;
    let seccomp = opts.knobs.seccomp.as_deref();
    let mode = sandbox::seccomp::Mode::parse(seccomp).ok_or_else(|| {
        LaunchError::Knob(format!(
            "CELLA_SECCOMP={:?}: it takes on, log or off",
            seccomp.unwrap_or_default()
        ))
    })?;
    if mode == sandbox::seccomp::Mode::Off {
        eprintln!(
            "cella: warning: CELLA_SECCOMP=off: the VM's threads run without seccomp filters"
        );
    }
    // passt first: a published port that is taken fails before the boot.
    let (passt, backend) = match &machine.network {
        Some(plan) => {
            let (passt, stream) = Passt::start(plan, opts.knobs.passt_log.as_deref())?;
            (Some(passt), Some((stream, passt::filter(plan))))
        }
        None => (None, None),
    };
    let terminal = terminal::Saved::of(libc::STDIN_FILENO);
    let mut build = build;
    let ended = sandbox::in_child(&control::FORWARDED_SIGNALS, || {
        sandbox::caps::drop_privileges().map_err(|e| ChainError::of(&e))?;
        let confined = jail((&kernel, &init), fs.as_ref(), opts).map_err(|e| ChainError::of(&e))?;
        sandbox::seccomp::set_mode(mode);
        let mut io = build.as_deref_mut();
        let (status, interrupted) = run_vm(
            (kernel, init),
            disks,
            spec,
            fs,
            machine,
            opts,
            backend,
            io.as_deref_mut(),
        )
        .map_err(|e| ChainError::of(&e))?;
        let export_error = io.and_then(|io| {
            let flushed = io.export.flush().err();
            io.error.take().or(flushed).map(|e| e.to_string())
        });
        Ok(Ended {
            status,
            interrupted,
            step: build.as_ref().and_then(|io| io.step),
            export_error,
            confined,
        })
    });
    drop(passt);
    let ended = match ended {
        Ok(ended) => ended,
        Err(e) => {
            if let sandbox::SandboxError::Killed(sig, ..) = &e {
                // A process that died may have left the terminal raw.
                if let Some(t) = &terminal {
                    t.put_back();
                }
                // Stopped by a signal cella passes on (Ctrl-C during a
                // boot): cella ends by it too, as a single process would.
                if control::FORWARDED_SIGNALS.contains(sig) {
                    let _ = signal_hook::low_level::emulate_default_handler(*sig);
                }
            }
            return Err(e.into());
        }
    };
    if let Some(io) = build {
        io.step = ended.step;
        io.error = ended.export_error.map(std::io::Error::other);
    }
    if let Some(sig) = ended.interrupted {
        // Not a step's status: the build stops here (an error of this
        // process, so that cella exits as the signal says).
        return Err(LaunchError::Interrupted(sig));
    }
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let how = match ended.confined {
        Confined::Fully => None,
        Confined::Partly => Some("only in part (it is older than Landlock ABI 6)"),
        Confined::Not => Some("not at all (this kernel has no Landlock, or it is off)"),
    };
    if let (true, Some(how)) = (opts.verbose, how) {
        if !SAID.swap(true, Ordering::SeqCst) {
            eprintln!("cella: this kernel's Landlock confines the VM's process {how}: it can open more host files than it needs");
        }
    }
    Ok(ended.status)
}

/// Confines the VM's process (its one thread, before the VM's threads
/// start) to what a run opens: the kernel and guest-init, the cache's
/// snapshot directories (made here first) and the shares; how far this
/// kernel confines it.
fn jail(
    (kernel, init): (&Path, &Path),
    fs: Option<&Server>,
    opts: &LaunchOptions,
) -> Result<Confined, LaunchError> {
    let mut write = Vec::new();
    if let Some(cache) = &opts.knobs.cache_dir {
        for dir in [cache.join("snapshots"), warm::dir(cache)] {
            snapshot::private_dir(&dir).map_err(|e| LaunchError::CacheDir(dir.clone(), e))?;
            write.push(dir);
        }
    }
    Ok(sandbox::jail::confine(&sandbox::jail::Jail {
        read: vec![kernel.to_path_buf(), init.to_path_buf()],
        write,
        shares: fs.map(Server::share_roots).unwrap_or_default(),
    })?)
}

/// What a VM's process reports back: the exit status and, for a build,
/// the step it reached and a failure to write its export stream.
#[derive(serde::Serialize, serde::Deserialize)]
struct Ended {
    status: i32,
    /// A build VM stopped by this stop signal cella got.
    #[serde(default)]
    interrupted: Option<i32>,
    step: Option<u32>,
    export_error: Option<String>,
    /// How far Landlock confined the process.
    confined: Confined,
}

/// [`launch`]'s part in the VM's process.
#[allow(clippy::too_many_arguments)]
fn run_vm(
    (kernel, init): (PathBuf, PathBuf),
    disks: Vec<std::fs::File>,
    spec: RunSpec,
    fs: Option<Server>,
    machine: Machine,
    opts: &LaunchOptions,
    backend: Option<(std::os::unix::net::UnixStream, Filter)>,
    build: Option<&mut BuildIo<'_>>,
) -> Result<(i32, Option<i32>), LaunchError> {
    let drives = disks.len().max(1);
    let mut vm_spec = VmSpec {
        kernel,
        initramfs: Vec::new(),
        // CELLA_KERNEL_ARGS, a debugging aid, goes last so it wins.
        cmdline: kernel_cmdline(
            opts.verbose,
            vmm::host_is_emulating(),
            opts.knobs.kernel_args.as_deref(),
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
    let mut spec = spec;
    spec.stats = opts.knobs.stats;
    if machine.network.is_some() {
        spec.network = Some(passt::guest_config());
    }
    let cold_boot = opts.cold_boot || opts.knobs.cold_boot;
    let snapshots = opts.knobs.cache_dir.as_ref().filter(|_| !cold_boot);
    // A plain run or a `!Supervise` whose images are known may start
    // from, or make, a warm snapshot.
    let beyond_tops = fs.as_ref().map(Server::beyond_tops);
    let want_warm = (!opts.knobs.no_warm
        && spec.build.is_none()
        && !disks.is_empty()
        && opts.warm_images.len() == disks.len())
    .then(|| WantWarm {
        images: opts
            .warm_images
            .iter()
            .map(|(id, digest)| (id.as_str(), digest.as_str()))
            .collect(),
        disks: disks.as_slice(),
        spec: &spec,
        // Held ready only for this project's shares (a run restored from
        // it has the layout of the run that made it), and never with
        // values from the host in its environment.
        shares: opts.hold_ready.then(|| {
            fs.as_ref()
                .map(Server::share_identities)
                .unwrap_or_default()
        }),
    });
    let (vm, start, warm_save) = start_vm(&mut vm_spec, &init, snapshots, want_warm)?;
    let restored = matches!(start, Start::Restored | Start::Warm);
    let warm_restored = matches!(start, Start::Warm);
    stats::mark(match start {
        Start::Warm => "restored warm",
        Start::Restored => "restored",
        _ => "booting",
    });
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
        if let Some(mut server) = fs.take() {
            if warm_restored {
                server.resume_session();
            }
            vm.set_fs_server(server);
        }
        Ok(())
    };
    let warm_limit = opts.limits.warm_snapshots;
    let mut save_warm = |vm: &Vm| -> Result<(), GuestError> {
        let Some(save) = &warm_save else {
            return Ok(());
        };
        let reached = beyond_tops
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed));
        if save.plan.prepare.run.is_some() && reached {
            // The guest looked beneath a share while it readied the run
            // (a link into /work, a script there): not for another run.
            warm::mark_unfit(&save.plan);
            if verbose {
                eprintln!("cella: this run cannot be held ready in a warm snapshot: it reads /work before it starts");
            }
            return Ok(());
        }
        save_warm_snapshot(vm, &save.plan, warm_limit, verbose);
        Ok(())
    };
    let ready = control::Ready {
        on_ready: &mut on_ready,
        warm: warm_save.as_ref().map(|s| {
            (
                s.plan.prepare.clone(),
                &mut save_warm as &mut control::OnReady,
            )
        }),
    };
    let limits = Limits {
        boot: boot_timeout(opts),
        run: opts.timeout,
        mem_mib: machine.mem_mib,
        control_queue: bytes(opts.limits.control_queue),
        export: opts.limits.image,
    };
    let net_fd = backend.and_then(|(stream, filter)| vm.set_net_backend(stream, filter));
    let is_build = build.is_some();
    let outcome = control::run(&vm, spec, limits, restored, ready, build, net_fd)?;
    // For bench/: how much host memory the VMM itself costs.
    if stats::enabled() {
        if let Some((peak, guest)) = vm.memory_stats() {
            eprintln!(
                "cella-stats: peak_rss_kib={peak} guest_touched_kib={guest} restored={restored}"
            );
        }
    }
    let code = match outcome {
        Outcome::Status(status) => status,
        Outcome::Interrupted(sig) if is_build => {
            return Ok((ExitCode::Signal(sig).code(), Some(sig)))
        }
        Outcome::Interrupted(sig) => ExitCode::Signal(sig).code(),
        Outcome::TimedOut => ExitCode::Timeout.code(),
    };
    Ok((code, None))
}

/// What a run that may use a warm snapshot brings.
struct WantWarm<'a> {
    /// The id and digest of the image in each drive.
    images: Vec<(&'a str, &'a str)>,
    /// The image files.
    disks: &'a [std::fs::File],
    spec: &'a RunSpec,
    /// The identities of the run's shares when it may be held ready.
    shares: Option<Vec<(u64, u64)>>,
}

/// A VM whose guest-init is, or will soon be, waiting for its run spec;
/// restored from or saved to a snapshot under `cache_dir` if given. With
/// `want_warm`, from the run's warm snapshot if there is one; else the
/// warm snapshot this run is to make, unless another cella is making it.
fn start_vm(
    spec: &mut VmSpec,
    init: &Path,
    cache_dir: Option<&PathBuf>,
    want_warm: Option<WantWarm<'_>>,
) -> Result<(Vm, Start, Option<WarmSave>), LaunchError> {
    let Some(cache) = cache_dir else {
        return Ok((cold_boot(spec, init)?, Start::Cold, None));
    };
    let dir = cache.join("snapshots");
    let key = match snapshot::key(spec, &spec.kernel, init) {
        Ok(key) => key,
        Err(e) => {
            warn(&e, "booting without a snapshot");
            return Ok((cold_boot(spec, init)?, Start::Cold, None));
        }
    };
    let mut warm_save = None;
    if let Some(want) = want_warm {
        let all_verified = want
            .images
            .iter()
            .zip(want.disks)
            .try_fold(true, |ok, (image, disk)| {
                Ok::<_, SnapshotError>(ok && warm::verified(cache, disk, image.1)?)
            });
        match all_verified {
            // An image file that is not what its store says: no warm start.
            Ok(false) => {}
            Ok(true) => {
                // The best that exists; else the best asked for before
                // (a first ask is noted, and the next one is looked at).
                // Once another cella makes one, later ones are only restored.
                let mut may_make = true;
                let plans =
                    warm::plans(cache, &key, &want.images, want.spec, want.shares.as_deref());
                for plan in plans {
                    if let Some(vm) = restore(spec, &plan.path) {
                        warm::touch(&plan.path);
                        return Ok((vm, Start::Warm, None));
                    }
                    if !may_make || warm::unfit(&plan) {
                        continue;
                    }
                    match warm::asked_before(&plan)
                        .then(|| snapshot::try_lock(&plan.dir, &plan.name))
                    {
                        None => continue,
                        // Made by another cella while this one looked?
                        Some(Ok(Some(lock))) => match restore(spec, &plan.path) {
                            Some(vm) => return Ok((vm, Start::Warm, None)),
                            None => {
                                warm_save = Some(WarmSave { plan, _lock: lock });
                                break;
                            }
                        },
                        // Another cella is making it: this run makes none.
                        Some(Ok(None)) => may_make = false,
                        Some(Err(e)) => {
                            warn(&e, "running without a warm snapshot");
                            may_make = false;
                        }
                    }
                }
            }
            Err(e) => warn(&e, "running without a warm snapshot"),
        }
    }
    let path = snapshot::path(&dir, &key);
    if let Some(vm) = restore(spec, &path) {
        return Ok((vm, Start::Restored, warm_save));
    }
    match snapshot::lock(&dir, &key) {
        Ok(lock) => {
            // Another cella may have made it while we waited.
            if let Some(vm) = restore(spec, &path) {
                return Ok((vm, Start::Restored, warm_save));
            }
            let vm = cold_boot(spec, init)?;
            Ok((vm, Start::Template(path, lock), warm_save))
        }
        Err(e) => {
            warn(&e, "booting without a snapshot");
            Ok((cold_boot(spec, init)?, Start::Cold, warm_save))
        }
    }
}

/// Saves the warm snapshot `plan` of `vm`, whose guest has readied it, and
/// keeps the warm snapshots within `limit` bytes. A failure costs only
/// the speed of later runs: it is a warning.
fn save_warm_snapshot(vm: &Vm, plan: &WarmPlan, limit: u64, verbose: bool) {
    match snapshot::save(vm, &plan.path) {
        Ok(()) => {
            stats::mark("warm snapshot saved");
            if verbose {
                eprintln!("cella: saved warm snapshot {}", plan.path.display());
            }
            for gone in warm::bound(&plan.dir, &plan.path, limit) {
                if verbose {
                    eprintln!(
                        "cella: removed warm snapshot {} (limits.warm-snapshots)",
                        gone.path.display()
                    );
                }
            }
        }
        Err(e) => warn(&e, "cannot save a warm snapshot; the next run starts cold"),
    }
}

fn cold_boot(spec: &mut VmSpec, init: &Path) -> Result<Vm, LaunchError> {
    let init = std::fs::read(init).map_err(|e| LaunchError::ReadAsset(init.to_path_buf(), e))?;
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
    let action = crate::text::escape_keeping_lines(action);
    eprintln!("cella: warning: {action}: {}", error_chain(e, ": "));
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
