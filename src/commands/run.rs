//! `cella CMD` and `cella _run CONTAINER PROG`: resolve the image, boot a
//! VM for it and run the workload there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use guest_init::{RunSpec, PORT_NAMES};

use super::{find_asset, state_dir, CommandError};
use crate::config::{CommandKind, Config, Container, SetupStep};
use crate::guest::{self, initramfs, GuestError, Outcome};
use crate::image::{self, ImageError};
use crate::vmm::{self, VmError, VmSpec};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Features this host's emulating KVM can't run, and our kernel's switch
/// for its workarounds (kernel-config/README.md says why each is there).
/// `erms,fsrm` are not broken, only slow: without them the kernel copies
/// and clears memory 8 bytes per emulated iteration instead of 1, which
/// made guest → host streaming 3x faster here.
const EMULATED_HOST_PARAMS: &str = "cella_pvm noxsave \
    clearcpuid=popcnt,cx16,rdrand,rdseed,smap,fsgsbase,pcid,invpcid,movbe,avx,aes,pclmulqdq,sha_ni,gfni,vaes,vpclmulqdq,erms,fsrm";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Image(#[from] StepError),
    #[error("container \"{0}\" has no !Tar step to start from")]
    NoBase(String),
    #[error(
        "cannot find the guest {what}: set {env} or install it beside the cella binary as {file}"
    )]
    MissingAsset {
        what: &'static str,
        env: &'static str,
        file: &'static str,
    },
    #[error("cannot read {}", .0.display())]
    ReadAsset(PathBuf, #[source] std::io::Error),
    #[error("cannot start the VM")]
    Vm(#[from] VmError),
    #[error(transparent)]
    Guest(#[from] GuestError),
}

/// A setup step failed: one line naming the step's place in cella.yaml and
/// what went wrong; deeper causes follow in the chain.
#[derive(Debug)]
pub struct StepError {
    at: String,
    source: ImageError,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.source)
    }
}

impl std::error::Error for StepError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

/// Options from the command line that shape a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub verbose: bool,
}

/// `cella NAME ARGS...`: the command's `run` with ARGS appended.
pub fn command(
    config: &Config,
    name: &str,
    args: &[String],
    opts: &RunOptions,
) -> Result<i32, CommandError> {
    let cmd = config
        .commands
        .get(name)
        .ok_or_else(|| CommandError::UnknownCommand {
            name: name.to_string(),
            config: config.path.clone(),
        })?;
    let CommandKind::Command(simple) = &cmd.kind;
    let mut argv = simple.run.clone();
    argv.extend_from_slice(args);
    in_container(config, &simple.container, argv, &simple.environ, opts)
}

/// Runs `argv` in `container` with `environ` over the container's own.
pub fn in_container(
    config: &Config,
    container: &str,
    argv: Vec<String>,
    environ: &BTreeMap<String, String>,
    opts: &RunOptions,
) -> Result<i32, CommandError> {
    let Some(cont) = config.containers.get(container) else {
        return Err(CommandError::UnknownContainer {
            name: container.to_string(),
            config: config.path.clone(),
            known: config.containers.keys().cloned().collect(),
        });
    };
    let image = container_image(config, cont)?;

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.insert("HOME".into(), "/root".into());
    if let Ok(term) = std::env::var("TERM") {
        env.insert("TERM".into(), term);
    }
    env.extend(cont.environ.clone());
    env.extend(environ.clone());
    let spec = RunSpec {
        argv,
        env: env.into_iter().collect(),
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        hostname: "cella".into(),
        rootfs_device: "/dev/vda".into(),
    };
    Ok(boot_and_run(vec![image], spec, opts)?)
}

/// The image of a container, built from its tarball if missing.
/// Only a single `!Tar` step exists so far, so the image is its tarball's.
fn container_image(config: &Config, cont: &Container) -> Result<PathBuf, RunError> {
    let Some(SetupStep::Tar { path, pos, .. }) = cont.setup.first() else {
        return Err(RunError::NoBase(cont.name.clone()));
    };
    let images = state_dir(config).join("images");
    let image = image::image_from_tar(&images, path).map_err(|source| StepError {
        at: format!(
            "{}:{}: containers.{}.setup[0]",
            config.path.display(),
            pos,
            cont.name
        ),
        source,
    })?;
    Ok(image)
}

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

fn boot_and_run(disks: Vec<PathBuf>, spec: RunSpec, opts: &RunOptions) -> Result<i32, RunError> {
    let kernel = find_asset("CELLA_KERNEL", "cella-vmlinux").ok_or(RunError::MissingAsset {
        what: "kernel",
        env: "CELLA_KERNEL",
        file: "cella-vmlinux",
    })?;
    std::fs::metadata(&kernel).map_err(|e| RunError::ReadAsset(kernel.clone(), e))?;
    let init_path =
        find_asset("CELLA_GUEST_INIT", "cella-guest-init").ok_or(RunError::MissingAsset {
            what: "init",
            env: "CELLA_GUEST_INIT",
            file: "cella-guest-init",
        })?;
    let init = std::fs::read(&init_path).map_err(|e| RunError::ReadAsset(init_path, e))?;
    let vm_spec = VmSpec {
        kernel,
        initramfs: initramfs::build(&init),
        // CELLA_KERNEL_ARGS, a debugging aid, goes last so it wins.
        cmdline: kernel_cmdline(
            opts.verbose,
            vmm::host_is_emulating(),
            std::env::var("CELLA_KERNEL_ARGS").ok().as_deref(),
        ),
        disks,
        vcpus: 1,
        mem_mib: 256,
        verbose: opts.verbose,
        ports: PORT_NAMES.iter().map(|s| s.to_string()).collect(),
    };
    let vm = vmm::build_and_start(&vm_spec)?;
    let outcome = guest::run(&vm, spec, boot_timeout())?;
    // For bench/: how much host memory the VMM itself costs.
    if std::env::var_os("CELLA_STATS").is_some() {
        if let Some((peak, guest)) = vm.memory_stats() {
            eprintln!("cella-stats: peak_rss_kib={peak} guest_touched_kib={guest}");
        }
    }
    match outcome {
        Outcome::Status(status) => Ok(status),
        Outcome::Interrupted(sig) => Ok(128 + sig),
    }
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
