//! What a build can fail with: one line naming the container, the step,
//! its place in cella.yaml and what went wrong; causes follow in the chain.

use std::io;
use std::path::{Path, PathBuf};

use super::compact::CopyError;
use super::error::ErofsError;
use super::export::ExportError;
use super::host::HostError;
use super::store::StoreError;
use super::tree::TreeError;
use super::version::VersionError;
use super::ImageError;
use crate::hostfs::{FsError, Shown};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Step(Box<StepError>),
    #[error("unknown container \"{0}\"")]
    UnknownContainer(String),
}

/// Step `number` of `total` of `container`, a `!tag` at `at` (file:line:col), failed.
#[derive(Debug)]
pub struct StepError {
    pub container: String,
    pub number: usize,
    pub total: usize,
    pub tag: &'static str,
    pub at: String,
    pub source: StepFailure,
}

/// A program step's status is the heart of the message: keep it on the first line.
fn detail(failure: &StepFailure) -> String {
    match failure {
        StepFailure::Failed { command, status } => {
            format!(": `{command}` exited with status {status}")
        }
        _ => String::new(),
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "building container \"{}\": step {}/{} (!{} at {}) failed{}",
            self.container,
            self.number,
            self.total,
            self.tag,
            self.at,
            detail(&self.source)
        )
    }
}

impl std::error::Error for StepError {
    /// The cause on the chain's next line; a program's status is on the first.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.source {
            StepFailure::Failed { .. } => None,
            other => Some(other),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StepFailure {
    #[error("the program failed")]
    Failed { command: String, status: i32 },
    #[error(transparent)]
    Tar(ImageError),
    #[error(transparent)]
    Image(ErofsError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error("cannot apply the build VM's changes")]
    Export(#[from] ExportError),
    #[error("the build VM failed")]
    Vm(#[source] BoxError),
    #[error("sha256 of {} is {actual}, not {expected} as the step says", Shown(.path))]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("container \"{0}\" has no image yet")]
    NotBuilt(String),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("cannot {what} {}", Shown(.path))]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Other(BoxError),
}

impl StepFailure {
    pub fn io(what: &'static str, path: &Path, source: io::Error) -> StepFailure {
        StepFailure::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}
