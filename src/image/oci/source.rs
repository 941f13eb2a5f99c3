//! Where an image's blobs are read from: an OCI layout directory of the
//! project, reached beneath its fd without following links; a tarball
//! (an OCI archive or a docker-archive) indexed once and read in place by
//! offset, never unpacked; or a registry, through the user's blob cache
//! (`<cache>/oci/blobs/sha256/HEX`, shared by every project), which a
//! blob enters only whole and verified.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::OciError;
use super::registry::Client;
use crate::hostfs::{Dir, Kind};
use crate::image::fileio::{copy_hashed, HashedCopyError};
use crate::image::progress::{Progress, ProgressReader};

/// The most entries an image archive may hold: an image with hundreds of
/// layers has a few thousand.
const MAX_ENTRIES: usize = 100_000;

/// A file among the blobs: its size, and a reader of it.
pub(super) type Opened<'a> = (u64, Box<dyn Read + 'a>);

/// A layout directory or an indexed archive.
pub(super) enum Blobs {
    Dir {
        dir: Dir,
        shown: PathBuf,
    },
    Archive(Archive),
    /// The blob cache, filled from the registry on a miss.
    Registry {
        cache: Dir,
        client: Box<Client>,
        shown: PathBuf,
        /// sha256 of `HOST/REPOSITORY`: `repos/<repo>/<manifest hex>`
        /// marks the manifests this repository served.
        repo: String,
    },
}

/// Which registry endpoint serves a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Manifests,
    Blobs,
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

    /// The registry `client` talks to, through the blob cache in
    /// `cache_dir` (the user's cache directory).
    pub(super) fn registry(cache_dir: &Path, client: Client) -> Result<Blobs, OciError> {
        let root = cache_dir.join("oci");
        let shown = PathBuf::from(format!("docker://{}", client.shown()));
        let repo = hex::encode(Sha256::digest(client.shown().as_bytes()));
        // Private: layers of images pulled with the user's credentials.
        let cache = Dir::create_private(&root).map_err(|e| OciError::source(&root, e))?;
        for sub in ["blobs/sha256", "repos"] {
            cache
                .ensure_dir(Path::new(sub), 0o700)
                .map_err(|e| OciError::source(&root.join(sub), e))?;
        }
        Ok(Blobs::Registry {
            cache,
            client: Box::new(client),
            shown,
            repo,
        })
    }

    /// The file or directory the blobs are in, for messages.
    pub(super) fn shown(&self) -> &Path {
        match self {
            Blobs::Dir { shown, .. } | Blobs::Registry { shown, .. } => shown,
            Blobs::Archive(a) => &a.shown,
        }
    }

    /// Makes sure the blob `digest` (`sha256:HEX`) is there to be read:
    /// for a registry, fetched into the cache on a miss, read no further
    /// than `size` (when declared) or `max`, and kept only when it hashes
    /// to its digest. Layouts and archives have what they have.
    pub(super) fn ensure(
        &self,
        digest: &str,
        size: Option<u64>,
        max: u64,
        endpoint: Endpoint,
        item: &str,
    ) -> Result<(), OciError> {
        let Blobs::Registry {
            cache,
            client,
            repo,
            ..
        } = self
        else {
            return Ok(());
        };
        let bad = move |message: String| OciError::Blob {
            path: self.shown().to_path_buf(),
            digest: digest.to_owned(),
            message,
        };
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| bad("only sha256 digests are supported".into()))?;
        let name = format!("blobs/sha256/{hex}");
        // The cache is shared by every project: a manifest another
        // repository served (perhaps a private one, with the user's
        // credentials) is taken only once this repository served it too.
        // What a verified manifest names (configs, layers) is shared.
        let marker = format!("repos/{repo}/{hex}");
        let marked = endpoint == Endpoint::Blobs
            || matches!(cache.lstat(Path::new(&marker)), Ok(Some(m)) if m.kind == Kind::File);
        if let Ok(Some(meta)) = cache.lstat(Path::new(&name)) {
            if marked && meta.kind == Kind::File && size.is_none_or(|s| s == meta.size) {
                return Ok(());
            }
        }
        let limit = size.unwrap_or(max);
        if limit > max {
            return Err(bad(format!(
                "its descriptor says {limit} bytes, more than the {max} cella reads"
            )));
        }
        let (kind, accept) = match endpoint {
            Endpoint::Manifests => ("manifests", super::registry::MANIFEST_ACCEPT),
            Endpoint::Blobs => ("blobs", "*/*"),
        };
        let fetched = client
            .get(kind, digest, accept)
            .map_err(|e| bad(crate::text::error_chain(&e, ": ")))?;
        let progress = Progress::item("pulling", size.unwrap_or(0), item.to_owned());
        let result = self.store(hex, fetched.reader, size, limit, &progress, &bad);
        progress.finish();
        result?;
        if endpoint == Endpoint::Manifests {
            self.mark(hex);
        }
        Ok(())
    }

    /// Notes that this repository served manifest `hex` (a failure only
    /// costs asking the registry again next time).
    fn mark(&self, hex: &str) {
        if let Blobs::Registry { cache, repo, .. } = self {
            if let Ok(dir) = cache.ensure_dir(&Path::new("repos").join(repo), 0o700) {
                let _ = dir.remove_file(Path::new(hex));
                let _ = dir.create_new(Path::new(hex), 0o600);
            }
        }
    }

    /// What a tag of the registry's repository names now: its manifest,
    /// kept in the cache; returns the manifest's digest.
    pub(super) fn tag_digest(&self, tag: &str, max: u64) -> Result<String, OciError> {
        let Blobs::Registry { client, .. } = self else {
            return Err(OciError::Bad {
                path: self.shown().to_path_buf(),
                message: "tags are resolved only in registries".to_owned(),
            });
        };
        let bad = |message: String| OciError::Bad {
            path: PathBuf::from(format!("{}:{tag}", self.shown().display())),
            message,
        };
        let fetched = client
            .get("manifests", tag, super::registry::MANIFEST_ACCEPT)
            .map_err(|e| bad(crate::text::error_chain(&e, ": ")))?;
        let mut bytes = Vec::new();
        fetched
            .reader
            .take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("the download failed: {e}")))?;
        if bytes.len() as u64 > max {
            return Err(bad(format!(
                "its manifest is more than the {max} bytes cella reads"
            )));
        }
        let hex = hex::encode(Sha256::digest(&bytes));
        let digest = format!("sha256:{hex}");
        let progress = Progress::new("pulling", 0);
        let blob_bad = |message: String| OciError::Blob {
            path: self.shown().to_path_buf(),
            digest: digest.clone(),
            message,
        };
        self.store(
            &hex,
            Box::new(io::Cursor::new(bytes)),
            None,
            max,
            &progress,
            &blob_bad,
        )?;
        self.mark(&hex);
        Ok(digest)
    }

    /// Streams `reader` into the cache as blob `hex`: at most `limit`
    /// bytes (exactly `size` when declared), hashed, renamed into place
    /// only when it is what its name says.
    fn store(
        &self,
        hex: &str,
        reader: Box<dyn Read + Send>,
        size: Option<u64>,
        limit: u64,
        progress: &Progress,
        bad: &dyn Fn(String) -> OciError,
    ) -> Result<(), OciError> {
        let Blobs::Registry { cache, .. } = self else {
            return Ok(());
        };
        let digest = format!("sha256:{hex}");
        let name = format!("blobs/sha256/{hex}");
        let tmp = format!("blobs/sha256/.{hex}.{}.tmp", std::process::id());
        let tmp_path = Path::new(&tmp);
        let _ = cache.remove_file(tmp_path);
        let mut file = cache
            .create_new(tmp_path, 0o600)
            .map_err(|e| OciError::source(&cache.display(tmp_path), e))?;
        let result = (|| {
            let reader = ProgressReader::new(reader, progress);
            let (total, actual) = copy_hashed(reader, &mut file, limit).map_err(|e| match e {
                HashedCopyError::TooLong => {
                    bad(format!("the registry sent more than {limit} bytes"))
                }
                HashedCopyError::Read(e) => bad(format!("the download failed: {e}")),
                HashedCopyError::Write(source) => OciError::Read {
                    path: cache.display(tmp_path),
                    source,
                },
            })?;
            if let Some(size) = size {
                if total != size {
                    return Err(bad(format!(
                        "the registry sent {total} bytes, its descriptor says {size}"
                    )));
                }
            }
            let actual = format!("sha256:{actual}");
            if actual != digest {
                return Err(bad(format!("what the registry sent hashes to {actual}")));
            }
            file.sync_all().map_err(|source| OciError::Read {
                path: cache.display(tmp_path),
                source,
            })?;
            cache
                .rename(tmp_path, cache, Path::new(&name))
                .map_err(|e| OciError::source(&cache.display(Path::new(&name)), e))
        })();
        if result.is_err() {
            let _ = cache.remove_file(tmp_path);
        }
        result
    }

    /// The file `name` (`blobs/sha256/HEX`, `index.json`), its size, and
    /// a reader of it; `None` when there is no such file.
    pub(super) fn open(&self, name: &str) -> Result<Option<Opened<'_>>, OciError> {
        let err = |source| OciError::Read {
            path: self.shown().join(name),
            source,
        };
        match self {
            Blobs::Dir { dir, shown }
            | Blobs::Registry {
                cache: dir, shown, ..
            } => {
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
