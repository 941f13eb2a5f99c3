//! One module per user-facing command; this one holds what they share.

pub mod build;
pub mod environ;
pub mod list;
pub mod netcheck;
pub mod run;
pub mod start;
pub mod supervise;
pub mod volumes;

use std::path::{Path, PathBuf};

use crate::config::{self, Config, ConfigError, Location};
use crate::hostfs::Dir;
use crate::image::store::Store;

/// Why a command could not be carried out (exit status 125,
/// [`guest_init::ExitCode::Cella`]).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot find the current directory")]
    Cwd(#[source] std::io::Error),
    #[error("unknown command \"{name}\" in {}; run `cella` to list them", .config.display())]
    UnknownCommand { name: String, config: PathBuf },
    #[error("unknown container \"{name}\" in {}{}", .config.display(), list_known(.known))]
    UnknownContainer {
        name: String,
        config: PathBuf,
        known: Vec<String>,
    },
    #[error(transparent)]
    Run(#[from] run::RunError),
    #[error("container \"{0}\" was never built; run `cella _build {0}` or drop --no-build")]
    NotBuilt(String),
    #[error("{0}")]
    Epoch(String),
    #[error(transparent)]
    Volume(#[from] volumes::VolumeError),
    #[error(transparent)]
    Settings(#[from] crate::config::SettingsError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Environ(#[from] environ::EnvironError),
    #[error(transparent)]
    Host(crate::hostfs::FsError),
    #[error(
        "{at}: {what}, which {setting} forbids; `--network user` on the command line grants it"
    )]
    NetworkForbidden {
        at: Location,
        what: &'static str,
        setting: String,
    },
}

fn list_known(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (it defines: {})", names.join(", "))
    }
}

/// Finds and loads the project's cella.yaml from the current directory up.
pub fn load_config(limits: &config::Limits) -> Result<Config, CommandError> {
    let cwd = std::env::current_dir().map_err(CommandError::Cwd)?;
    let path = config::find_config(&cwd)?;
    Ok(config::load(&path, limits.config)?)
}

/// The project directory and its `.cella/` store, held open for one
/// command: every project and state file is reached beneath them.
pub struct Project {
    pub dir: Dir,
    pub store: Store,
}

impl Project {
    pub fn open(config: &Config) -> Result<Project, CommandError> {
        let dir = Dir::open(&config.project_dir).map_err(CommandError::Host)?;
        let store = Store::open(&dir).map_err(|e| CommandError::Host(e.0))?;
        Ok(Project { dir, store })
    }
}

/// Where an asset shipped beside the binary is: `$ENV`, else next to the
/// `cella` executable.
pub fn find_asset(env: &str, file_name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent().map(|d: &Path| d.join(file_name))?;
    candidate.exists().then_some(candidate)
}
