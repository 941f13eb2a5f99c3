//! Errors of writing image files: `ErofsError`, from the erofs writer, the
//! tree walk it relies on and the copies between images, and `ImageError`,
//! from turning a tarball into an image. Kept apart from the writer and
//! the importer so that the tree model, the file helpers and both of them
//! can use them without importing each other.

use std::io;
use std::path::PathBuf;

/// What can fail while writing an image.
#[derive(Debug, thiserror::Error)]
pub enum ErofsError {
    #[error("cannot write the image")]
    Write(#[source] io::Error),
    #[error("cannot read the file data")]
    ReadData(#[source] io::Error),
    #[error("cannot copy file data between images")]
    Copy(#[source] io::Error),
    #[error("the image would exceed erofs's limit of 2^32 blocks of 4 KiB")]
    TooLarge,
    #[error("the image would be larger than {}", limit_text(*.0))]
    OverLimit(u64),
    #[error("invalid filesystem tree: {0}")]
    InvalidTree(String),
}

/// `limits.image` as messages show it: "16Gi (limits.image in PATH)".
pub fn limit_text(limit: u64) -> String {
    crate::config::settings::limit_text("image", limit)
}

/// What failed while turning a tarball into an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot open tarball {}", .tarball.display())]
    OpenTar {
        tarball: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read tarball {}", .tarball.display())]
    ReadTar {
        tarball: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("tarball {}: entry {entry:?}: {reason}", .tarball.display())]
    BadEntry {
        tarball: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("tarball {}: entry {entry:?}: cannot copy its data into the image", .tarball.display())]
    FileData {
        tarball: PathBuf,
        entry: String,
        #[source]
        source: ErofsError,
    },
    #[error("cannot write the erofs image for {}", .tarball.display())]
    Write {
        tarball: PathBuf,
        #[source]
        source: ErofsError,
    },
}
