//! Why a VM could not be launched or its run not carried to the end.

use std::path::PathBuf;

use super::control::GuestError;
use super::passt::NetError;
use crate::vmm::VmError;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Net(#[from] NetError),
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
    #[error("cannot make the cache directory {}", .0.display())]
    CacheDir(PathBuf, #[source] std::io::Error),
    #[error("cannot share a host directory with the guest")]
    Share(#[source] std::io::Error),
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error(transparent)]
    Process(#[from] crate::sandbox::SandboxError),
    #[error("{0}")]
    Knob(String),
    #[error(transparent)]
    Jail(#[from] crate::sandbox::jail::JailError),
}
