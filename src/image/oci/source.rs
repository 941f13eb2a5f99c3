//! Where an image's blobs are read from: an OCI layout directory of the
//! project, reached beneath its fd without following links, or a tarball
//! (an OCI archive or a docker-archive) indexed once and read in place by
//! offset, never unpacked.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::OciError;
use crate::hostfs::{Dir, Kind};

/// The most entries an image archive may hold: an image with hundreds of
/// layers has a few thousand.
const MAX_ENTRIES: usize = 100_000;

/// A file among the blobs: its size, and a reader of it.
pub(super) type Opened<'a> = (u64, Box<dyn Read + 'a>);

/// A layout directory or an indexed archive.
pub(super) enum Blobs {
    Dir { dir: Dir, shown: PathBuf },
    Archive(Archive),
}

pub(super) struct Archive {
    file: File,
    shown: PathBuf,
    /// Regular files by name (without "./"): offset of their data, size.
    entries: HashMap<String, (u64, u64)>,
}

impl Blobs {
    /// The layout directory `rel` of `project`.
    pub(super) fn dir(project: &Dir, rel: &Path) -> Result<Blobs, OciError> {
        let shown = project.display(rel);
        let dir = project
            .open_dir(rel)
            .map_err(|e| OciError::source(&shown, e))?;
        Ok(Blobs::Dir { dir, shown })
    }

    /// The archive `rel` of `project`, its entries indexed.
    pub(super) fn archive(project: &Dir, rel: &Path) -> Result<Blobs, OciError> {
        let shown = project.display(rel);
        let file = project
            .open_file(rel)
            .map_err(|e| OciError::source(&shown, e))?;
        let entries = index(&file).map_err(|e| OciError::Archive {
            path: shown.clone(),
            source: e,
        })?;
        Ok(Blobs::Archive(Archive {
            file,
            shown,
            entries,
        }))
    }

    /// The file or directory the blobs are in, for messages.
    pub(super) fn shown(&self) -> &Path {
        match self {
            Blobs::Dir { shown, .. } => shown,
            Blobs::Archive(a) => &a.shown,
        }
    }

    /// The file `name` (`blobs/sha256/HEX`, `index.json`), its size, and
    /// a reader of it; `None` when there is no such file.
    pub(super) fn open(&self, name: &str) -> Result<Option<Opened<'_>>, OciError> {
        let err = |source| OciError::Read {
            path: self.shown().join(name),
            source,
        };
        match self {
            Blobs::Dir { dir, shown } => {
                let rel = Path::new(name);
                match dir.lstat(rel) {
                    Ok(Some(meta)) if meta.kind == Kind::File => {}
                    Ok(Some(meta)) => {
                        return Err(OciError::NotFile {
                            path: shown.join(name),
                            kind: meta.kind.name(),
                        })
                    }
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(OciError::source(&shown.join(name), e)),
                }
                let file = dir
                    .open_file(rel)
                    .map_err(|e| OciError::source(&shown.join(name), e))?;
                let size = file.metadata().map_err(err)?.len();
                Ok(Some((
                    size,
                    Box::new(BufReader::with_capacity(256 << 10, file)),
                )))
            }
            Blobs::Archive(a) => {
                let Some(&(start, size)) = a.entries.get(name) else {
                    return Ok(None);
                };
                let at = At {
                    file: &a.file,
                    pos: start,
                    end: start + size,
                };
                Ok(Some((
                    size,
                    Box::new(BufReader::with_capacity(256 << 10, at)),
                )))
            }
        }
    }

    /// The whole file `name`, refused past `max` bytes before it is read.
    pub(super) fn read_small(&self, name: &str, max: u64) -> Result<Vec<u8>, OciError> {
        let path = self.shown().join(name);
        let (size, mut reader) = self
            .open(name)?
            .ok_or_else(|| OciError::Missing { path: path.clone() })?;
        if size > max {
            return Err(OciError::TooLarge { path, size, max });
        }
        let mut buf = Vec::with_capacity(size as usize);
        reader
            .by_ref()
            .take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|source| OciError::Read {
                path: path.clone(),
                source,
            })?;
        if buf.len() as u64 > max {
            return Err(OciError::TooLarge {
                path,
                size: buf.len() as u64,
                max,
            });
        }
        Ok(buf)
    }
}

/// The regular files of the tar `file` by name: where their data starts
/// and how long it is. Names are taken without a leading "./" or "/".
fn index(file: &File) -> io::Result<HashMap<String, (u64, u64)>> {
    let mut archive = tar::Archive::new(BufReader::with_capacity(64 << 10, file));
    let mut entries = HashMap::new();
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        if entries.len() >= MAX_ENTRIES {
            return Err(io::Error::other(format!(
                "it holds more than {MAX_ENTRIES} files"
            )));
        }
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = name
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_owned();
        let start = entry.raw_file_position();
        let size = entry.size();
        if entries.insert(name.clone(), (start, size)).is_some() {
            return Err(io::Error::other(format!("it holds {name:?} twice")));
        }
    }
    Ok(entries)
}

/// Reads `file` from `pos` to `end` by offset, so several readers of one
/// archive never share a file position.
struct At<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside this file",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}
