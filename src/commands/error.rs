//! Why a command could not be carried out (exit status 125,
//! [`guest_init::ExitCode::Cella`]).

use std::path::PathBuf;

use super::environ::EnvironError;
use super::volumes::VolumeError;
use crate::config::{ConfigError, Location, SettingsError};
use crate::hostfs::FsError;
use crate::image::build::BuildError;
use crate::image::lock::LockError;
use crate::image::pack::PackError;
use crate::launch::LaunchError;

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
    Build(#[from] BuildError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Lock(#[from] LockError),
    /// `_build --locked` found the build would not match cella.lock.
    #[error("{0}")]
    Locked(String),
    #[error("container \"{0}\" was never built; run `cella _build {0}` or drop --no-build")]
    NotBuilt(String),
    #[error("{0}")]
    Epoch(String),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Environ(#[from] EnvironError),
    #[error(transparent)]
    Pack(Box<PackError>),
    #[error("cannot push the image")]
    Push(#[source] Box<crate::image::oci::OciError>),
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Host(#[from] FsError),
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
