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
    /// The images `mounts` mount (`Mount::Image::drive` n is the n-th,
    /// from 1), each built if needed.
    pub volume_images: Vec<Image>,
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
    let image = image_for_run(config, project, &command.container, opts)?;
    let volume_images = plan
        .images
        .iter()
        .map(|name| image_for_run(config, project, name, opts))
        .collect::<Result<Vec<_>, _>>()?;
    let image_config = image.info.config.clone().unwrap_or_default();
    let env = environ::environment(
        &project.dir,
        cont,
        command,
        &image_config.env,
        &opts.environ,
        &environ::host_environment(),
    )?;
    // A command without `run` runs the image's program as `podman run
    // IMAGE [ARGS…]` would: its Entrypoint with the arguments or else its
    // Cmd, in its WorkingDir, as its User; what the command sets wins.
    let own = !command.run.is_empty();
    let mut argv = command.run.clone();
    if own {
        argv.extend_from_slice(args);
    } else {
        argv.extend(image_config.entrypoint.iter().flatten().cloned());
        match args.is_empty() {
            true => argv.extend(image_config.cmd.iter().flatten().cloned()),
            false => argv.extend_from_slice(args),
        }
        if argv.is_empty() {
            return Err(CommandError::Usage(format!(
                "container \"{}\" has no Entrypoint or Cmd from an !Image to run: \
                 give the command a `run` (or `cella _run` a program)",
                command.container
            )));
        }
    }
    let cwd = match (&command.work_dir, &image_config.working_dir) {
        (None, Some(dir)) if !own => dir.clone(),
        (work_dir, _) => volumes::guest_cwd(config, project, work_dir.as_deref())?,
    };
    let (uid, gid) = match command.user_id {
        Some(uid) => (uid, command.group_id.unwrap_or(0)),
        None if !own => (
            image_config.uid.unwrap_or(0),
            command.group_id.or(image_config.gid).unwrap_or(0),
        ),
        None => (0, command.group_id.unwrap_or(0)),
    };
    Ok(Program {
        image,
        volume_images,
        argv,
        env,
        cwd,
        uid,
        gid,
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
