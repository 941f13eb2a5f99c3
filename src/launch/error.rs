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
    /// A build VM stopped because cella was told to stop (the build is
    /// thrown away; cella exits as the signal's 128 + N).
    #[error("interrupted by {}", crate::sandbox::signal_name(*.0))]
    Interrupted(i32),
}

/// The signal that interrupted a build, if that is what `e` comes down to.
pub fn interrupted_by(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(LaunchError::Interrupted(sig)) = err.downcast_ref::<LaunchError>() {
            return Some(*sig);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{interrupted_by, LaunchError};

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Box<dyn std::error::Error + Send + Sync>);

    #[test]
    fn an_interruption_is_found_through_boxes_and_sources() {
        let e = Outer(Box::new(LaunchError::Interrupted(libc::SIGTERM)));
        assert_eq!(interrupted_by(&e), Some(libc::SIGTERM));
        let e = LaunchError::Interrupted(libc::SIGINT);
        assert_eq!(interrupted_by(&e), Some(libc::SIGINT));
        let e = Outer(Box::new(LaunchError::Knob("x".into())));
        assert_eq!(interrupted_by(&e), None);
        assert_eq!(e.0.to_string(), "x");
    }
}
