//! Setup steps → content-hashed, read-only erofs disk images.
//!
//! `build` runs a container's steps into an image tree (`tree`) whose file
//! data goes straight into the image file (`erofs`): tarballs are read
//! without extracting them (`tar_import`), file steps edit the tree, build
//! VMs send their changes back (`export`), and packing writes the result
//! canonically (`compact`). `version` names images by the hash of their
//! steps and inputs (`host`), `store` keeps them under `.cella/`.

pub mod apt;
mod apt_sources;
pub mod build;
mod build_error;
mod bytes_json;
mod compact;
pub mod debian;
pub mod decompress;
pub mod download;
mod erofs;
mod error;
mod export;
mod fileio;
pub mod git;
pub mod host;
mod http;
pub mod lock;
pub mod oci;
pub mod pack;
#[cfg(test)]
mod pack_tests;
mod progress;
mod shell;
pub mod store;
pub mod tar_import;
#[cfg(test)]
mod test_reader;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_layers;
#[cfg(test)]
mod tests_limits;
mod tree;
pub mod version;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

pub use compact::{compact, copy_subtree, CopyError};
pub use erofs::ImageWriter;
pub use error::{ErofsError, ImageError};
pub use export::{apply_export, ExportError, ExportStats};
pub use tree::{
    components, FileData, Inode, InodeId, Kind, Meta, Tree, TreeError, TreeErrorKind, Xattr,
};

/// Part of every image's hash: bump it when the output of the writer changes.
pub const FORMAT_VERSION: &str = "cella-erofs-1";

/// Writes the erofs image of `tarball` alone to `out` (for tests and tools).
pub fn write_erofs_from_tar(tarball: &Path, out: &mut File) -> Result<(), ImageError> {
    tar_to_image(tarball, open_tar(tarball)?, out).map(drop)
}

fn open_tar(tarball: &Path) -> Result<BufReader<File>, ImageError> {
    let file = File::open(tarball).map_err(|source| ImageError::OpenTar {
        tarball: tarball.to_path_buf(),
        source,
    })?;
    Ok(BufReader::with_capacity(256 * 1024, file))
}

/// Imports the archive read from `reader` and writes its image to `out`;
/// returns the reader, positioned after the end-of-archive marker.
fn tar_to_image<R: BufRead>(tarball: &Path, reader: R, out: &File) -> Result<R, ImageError> {
    let write = |source| ImageError::Write {
        tarball: tarball.to_path_buf(),
        source,
    };
    let mut writer = erofs::ImageWriter::new(out).map_err(write)?;
    let mut tree = Tree::new();
    let reader = tar_import::import(tarball, reader, &mut tree, b"/", &mut writer)?;
    writer.finish(&tree).map_err(write)?;
    Ok(reader)
}
