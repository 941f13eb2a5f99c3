//! `cella CMD` and `cella _run CONTAINER PROG`: resolve the image, boot a
//! VM for it and run the workload there.

use std::collections::BTreeMap;
use std::path::PathBuf;

use guest_init::RunSpec;

use super::{start, state_dir, CommandError};
use crate::config::{CommandKind, Config, Container, Step};
use crate::guest::GuestError;
use crate::image::{self, ImageError};
use crate::vmm::VmError;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
    #[error("{0} disks for a VM with {1} drives")]
    TooManyDisks(usize, usize),
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
    /// Boot the kernel instead of restoring a snapshot.
    pub cold_boot: bool,
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
        realtime_ns: 0,
        entropy: Vec::new(),
        build: None,
    };
    Ok(start::boot_and_run(vec![image], spec, opts)?)
}

/// The image of a container, built from its tarball if missing.
/// Only a single `!Tar` step exists so far, so the image is its tarball's.
fn container_image(config: &Config, cont: &Container) -> Result<PathBuf, RunError> {
    let Some((Step::Tar { resolved: path, .. }, pos)) =
        cont.setup.first().map(|s| (&s.step, s.pos))
    else {
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
