//! A program ready to go into a VM: a `!Command`, `_run`'s argv, or a
//! child of a `!Supervise`, with its image (built if needed), its mounts
//! and shares, directory and environment resolved.

use guest_init::Mount;

use super::build::{container, image_for_run};
use super::environ;
use super::error::CommandError;
use super::options::RunOptions;
use super::project::Project;
use super::volumes;
use crate::config::{Config, SimpleCommand, WriteMode};
use crate::devices::virtio::fs::server::ShareSpec;
use crate::image::store::Image;

/// Hostname when neither the command nor its container names one.
const DEFAULT_HOSTNAME: &str = "cella";

/// A program ready to go into a VM.
pub struct Program {
    pub image: Image,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// `supplementary-gids`.
    pub groups: Vec<u32>,
    pub hostname: String,
    pub mounts: Vec<Mount>,
    pub read_only_root: bool,
    /// The host directories `mounts` name, by index.
    pub shares: Vec<ShareSpec>,
}

/// Resolves everything `command` needs in `project`: its image (built if
/// needed), its volumes, directory and environment. Its persistent
/// volumes must exist already (`run::init_volumes`).
pub fn prepare(
    config: &Config,
    project: &Project,
    command: &SimpleCommand,
    args: &[String],
    opts: &RunOptions,
) -> Result<Program, CommandError> {
    let cont = container(config, &command.container)?;
    let volumes = volumes::merged(&cont.volumes, Some(&command.volumes));
    let plan = volumes::plan(project, &volumes, opts)?;
    let cwd = volumes::guest_cwd(config, project, command.work_dir.as_deref())?;
    let env = environ::environment(
        &project.dir,
        cont,
        command,
        &opts.environ,
        &environ::host_environment(),
    )?;
    let image = image_for_run(config, project, &command.container, opts)?;
    let mut argv = command.run.clone();
    argv.extend_from_slice(args);
    Ok(Program {
        image,
        argv,
        env,
        cwd,
        uid: command.user_id.unwrap_or(0),
        gid: command.group_id.unwrap_or(0),
        groups: command.supplementary_gids.clone(),
        hostname: command
            .hostname
            .clone()
            .or_else(|| cont.hostname.clone())
            .unwrap_or_else(|| DEFAULT_HOSTNAME.into()),
        mounts: plan.mounts,
        read_only_root: command.write_mode == WriteMode::ReadOnly,
        shares: plan.shares,
    })
}
