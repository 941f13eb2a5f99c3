//! One module per user-facing command, each a leaf over `launch/`:
//! `run` (`cella CMD`, `_run`) and `supervise` launch workloads, `build`
//! builds images (its build VMs launched through the runner it gives the
//! image layer), `list` lists. The rest is what they share: the options
//! of a run, the project, its volumes and environment, and the network
//! check of the settings' `network.allow: false`.

pub mod build;
mod builder;
pub mod cache;
pub mod environ;
mod error;
pub mod list;
pub mod lock;
pub mod netcheck;
mod options;
pub mod pack;
mod program;
mod project;
pub mod run;
pub mod supervise;
pub mod volumes;

pub use error::CommandError;
pub use options::{RunOptions, VolumeInit};
pub use program::Program;
pub use project::Project;

use crate::config::{self, Config};

/// Finds and loads the project's cella.yaml from the current directory up.
pub fn load_config(limits: &config::Limits) -> Result<Config, CommandError> {
    let cwd = std::env::current_dir().map_err(CommandError::Cwd)?;
    let path = config::find_config(&cwd)?;
    Ok(config::load(&path, limits.config)?)
}
