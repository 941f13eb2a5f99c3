//! Rootfs tarballs → content-addressed, read-only erofs disk images.
//!
//! `image_from_tar` names an image by the sha256 of the tarball (and
//! `FORMAT_VERSION`), builds it into a temp file beside its final place and
//! renames it there, so a reader never sees half an image. The erofs image is
//! written by our own code straight from the tar stream (`tar_import` builds
//! the tree, `erofs` writes the bytes): no root, no extraction, and the same
//! tarball always gives the same bytes.

pub mod build;
mod build_error;
mod bytes_json;
mod compact;
mod erofs;
mod export;
pub mod host;
mod progress;
pub mod store;
mod tar_import;
#[cfg(test)]
mod test_reader;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_layers;
mod tree;
pub mod version;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use compact::{compact, copy_subtree, CopyError};
pub use erofs::{ErofsError, FileData, ImageWriter, Inode, InodeId, Kind, Meta, Tree, Xattr};
pub use export::{apply_export, ExportError, ExportStats};
pub use tree::{components, TreeError, TreeErrorKind};

/// Part of every image's hash: bump it when the output of the writer changes.
pub const FORMAT_VERSION: &str = "cella-erofs-1";

/// What failed while turning a tarball into an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot open rootfs tarball {}", .tarball.display())]
    OpenTar {
        tarball: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read rootfs tarball {}", .tarball.display())]
    ReadTar {
        tarball: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("rootfs tarball {}: entry {entry:?}: {reason}", .tarball.display())]
    BadEntry {
        tarball: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("rootfs tarball {}: entry {entry:?}: cannot copy its data into the image", .tarball.display())]
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
    #[error("rootfs tarball {} changed while its image was being built", .tarball.display())]
    Changed { tarball: PathBuf },
    #[error("cannot store an image in {}", .dir.display())]
    Store {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Builds (or reuses) the image for a rootfs tarball under `images_dir` (the project's .cella/images).
/// The image file is named by the sha256 of the tarball's content (plus a format version constant),
/// built into a temp file in the same dir and renamed into place atomically; returns its path.
pub fn image_from_tar(images_dir: &Path, tarball: &Path) -> Result<PathBuf, ImageError> {
    let digest = {
        let mut reader = HashingReader::new(open_tar(tarball)?);
        io::copy(&mut reader, &mut io::sink()).map_err(|source| ImageError::ReadTar {
            tarball: tarball.to_path_buf(),
            source,
        })?;
        reader.finish()
    };
    let path = images_dir.join(format!("{digest}.erofs"));
    if path.is_file() {
        return Ok(path);
    }
    let store = |source| ImageError::Store {
        dir: images_dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(images_dir).map_err(store)?;
    let tmp = TempFile::create(images_dir, &digest).map_err(store)?;

    let reader = HashingReader::new(open_tar(tarball)?);
    let mut reader = build(tarball, reader, &tmp.file)?;
    // The archive ends before the file does (zero blocks): hash the rest too.
    io::copy(&mut reader, &mut io::sink()).map_err(|source| ImageError::ReadTar {
        tarball: tarball.to_path_buf(),
        source,
    })?;
    if reader.finish() != digest {
        return Err(ImageError::Changed {
            tarball: tarball.to_path_buf(),
        });
    }
    tmp.file.sync_all().map_err(store)?;
    fs::rename(&tmp.path, &path).map_err(store)?;
    tmp.keep();
    Ok(path)
}

/// Lower level: writes the erofs image for `tarball` to `out`.
pub fn write_erofs_from_tar(tarball: &Path, out: &mut File) -> Result<(), ImageError> {
    build(tarball, open_tar(tarball)?, out).map(drop)
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
fn build<R: Read>(tarball: &Path, reader: R, out: &File) -> Result<R, ImageError> {
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

/// Hashes what passes through it; the hash covers `FORMAT_VERSION` first.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(FORMAT_VERSION.as_bytes());
        hasher.update([0]);
        HashingReader { inner, hasher }
    }

    fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A new file in the images dir, removed on drop unless kept.
struct TempFile {
    path: PathBuf,
    file: File,
    keep: bool,
}

impl TempFile {
    fn create(dir: &Path, digest: &str) -> io::Result<TempFile> {
        let mut attempt = 0;
        loop {
            let path = dir.join(format!(".{digest}.{}.{attempt}.tmp", std::process::id()));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file,
                        keep: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: a leftover temp file is harmless (never named like an image).
            let _ = fs::remove_file(&self.path);
        }
    }
}
