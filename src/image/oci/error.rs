//! What reading an OCI image can fail on.

use std::io;
use std::path::{Path, PathBuf};

use super::super::ImageError;
use crate::hostfs::FsError;

/// What reading an image failed on; the build's step error names the
/// `!Image` step, this names the file or blob.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("cannot open {}", .path.display())]
    Source {
        path: PathBuf,
        #[source]
        source: FsError,
    },
    #[error("cannot read the archive {}", .path.display())]
    Archive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is missing", .path.display())]
    Missing { path: PathBuf },
    #[error("{} is a {kind}, not a regular file", .path.display())]
    NotFile { path: PathBuf, kind: &'static str },
    #[error("{} is {size} bytes, more than the {max} cella reads", .path.display())]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{}: {what} is not valid", .path.display())]
    Json {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {message}", .path.display())]
    Bad { path: PathBuf, message: String },
    #[error("blob {digest} in {}: {message}", .path.display())]
    Blob {
        path: PathBuf,
        digest: String,
        message: String,
    },
    #[error("layer {number}/{total} ({digest}) of {}", .path.display())]
    Layer {
        path: PathBuf,
        number: usize,
        total: usize,
        digest: String,
        #[source]
        source: Box<OciError>,
    },
    #[error(transparent)]
    Tar(#[from] ImageError),
    #[error("the image's user {user:?}: {message}")]
    User { user: String, message: String },
    #[error("cannot read the image's {path}")]
    ImageFile {
        path: &'static str,
        #[source]
        source: super::super::apt::AptError,
    },
}

impl OciError {
    pub(super) fn source(path: &Path, source: FsError) -> OciError {
        OciError::Source {
            path: path.to_path_buf(),
            source,
        }
    }
}
