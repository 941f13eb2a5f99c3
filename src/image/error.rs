//! Errors of writing image files: `ErofsError`, from the erofs writer, the
//! tree walk it relies on and the copies between images. Kept apart from
//! the writer so the tree model and the file helpers can use it too.

use std::io;

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
