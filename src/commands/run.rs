//! `cella CMD` and `cella _run CONTAINER PROG`: resolve the image, boot a
//! VM for it and run the workload there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use guest_init::RunSpec;

use super::volumes::{self, VolumeInit};
use super::{start, CommandError};
use crate::config::{CommandKind, Config, Volume, WriteMode};
use crate::devices::virtio::fs::server::{Server, ServerOptions};
use crate::guest::GuestError;
use crate::image::build::BuildError;
use crate::vmm::VmError;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Build(#[from] BuildError),
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
    #[error("{0} disks for a VM with {1} drives")]
    TooManyDisks(usize, usize),
    #[error("cannot start the VM")]
    Vm(#[from] VmError),
    #[error("cannot share a host directory with the guest")]
    Share(#[source] std::io::Error),
    #[error(transparent)]
    Guest(#[from] GuestError),
}

/// Options from the command line that shape a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub verbose: bool,
    /// Boot the kernel instead of restoring a snapshot.
    pub cold_boot: bool,
    /// Run in the last image built for the container, never build.
    pub no_build: bool,
    /// Host directories outside the project that binds may name (from
    /// `--allow-host-path` and the settings file).
    pub allow_host_paths: Vec<PathBuf>,
    /// Set while a persistent volume's init command fills it.
    pub volume_init: Option<VolumeInit>,
}

/// What a run needs beyond its argv and environment.
#[derive(Debug, Default)]
pub struct RunShape<'a> {
    pub volumes: Option<&'a BTreeMap<String, Volume>>,
    pub work_dir: Option<&'a Path>,
    pub write_mode: WriteMode,
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
    let shape = RunShape {
        volumes: Some(&simple.volumes),
        work_dir: simple.work_dir.as_deref(),
        write_mode: simple.write_mode,
    };
    in_container(
        config,
        &simple.container,
        argv,
        &simple.environ,
        &shape,
        opts,
    )
}

/// Runs `argv` in `container` with `environ` over the container's own.
pub fn in_container(
    config: &Config,
    container: &str,
    argv: Vec<String>,
    environ: &BTreeMap<String, String>,
    shape: &RunShape<'_>,
    opts: &RunOptions,
) -> Result<i32, CommandError> {
    let Some(cont) = config.containers.get(container) else {
        return Err(CommandError::UnknownContainer {
            name: container.to_string(),
            config: config.path.clone(),
            known: config.containers.keys().cloned().collect(),
        });
    };
    let volumes = volumes::merged(&cont.volumes, shape.volumes);
    volumes::ensure_persistent(config, &volumes, opts)?;
    let plan = volumes::plan(config, &volumes, opts)?;
    let cwd = volumes::guest_cwd(config, shape.work_dir)?;
    let image = super::build::image_for_run(config, container, opts)?.rootfs();

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.insert("HOME".into(), "/root".into());
    if let Ok(term) = std::env::var("TERM") {
        env.insert("TERM".into(), term);
    }
    env.extend(cont.environ.clone());
    env.extend(environ.clone());
    let mut spec = run_spec(argv, env.into_iter().collect(), None);
    spec.cwd = cwd;
    spec.mounts = plan.mounts;
    spec.read_only_root = shape.write_mode == WriteMode::ReadOnly;
    let options = ServerOptions {
        direct_io: true,
        timeout: Duration::from_secs(1),
    };
    let server = Server::new(plan.shares, options).map_err(RunError::Share)?;
    Ok(start::boot_and_run(
        vec![image],
        spec,
        Some(server),
        opts,
        None,
    )?)
}

/// The spec of a run (or, with `build`, of a build VM's batch) as root in
/// `/` on the image in the first drive; the clock and entropy are filled
/// in when it is sent.
pub(super) fn run_spec(
    argv: Vec<String>,
    env: Vec<(String, String)>,
    build: Option<guest_init::Build>,
) -> RunSpec {
    RunSpec {
        argv,
        env,
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        hostname: "cella".into(),
        rootfs_device: "/dev/vda".into(),
        realtime_ns: 0,
        entropy: Vec::new(),
        build,
        mounts: Vec::new(),
        read_only_root: false,
    }
}
