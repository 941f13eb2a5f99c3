//! `!Tar` and `!Download` URLs, as vagga has them: fetched once into the
//! user's cache and reused (a new version of a file is expected to have a
//! new URL), through the guarded client of `http`.
//!
//! `<cache>/downloads/sha256/HEX` holds a file by its content, renamed
//! into place only once the whole file is in (and, when the step gives a
//! `sha256`, matches it), so a killed download leaves nothing that passes
//! for one; `downloads/urls/KEY` names the content a URL gave. A download
//! is bounded by `limits.image`, and all of them together by
//! `limits.downloads` (least recently used removed first); redirects are
//! followed by hand (https only, or http when the step pins the content
//! with a `sha256`).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::fileio::{copy_hashed, HashedCopyError};
use super::http;
use super::progress::{Progress, ProgressReader};
use crate::config::netpolicy::AddressGuard;
use crate::hostfs::{Dir, FsError, Kind};

/// Redirects followed.
const MAX_REDIRECTS: usize = 5;

/// What fetching a URL needs: the user's cache and allowed addresses.
pub struct Fetcher<'a> {
    /// The user's cache directory.
    pub cache: Option<&'a Path>,
    pub guard: AddressGuard,
    /// The most bytes a download may have.
    pub max: u64,
    /// The most bytes the downloaded files may take together.
    pub keep: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("there is no cache directory to download {url} into: set CELLA_CACHE_DIR or HOME")]
    NoCache { url: String },
    #[error("cannot use the download cache")]
    Cache(#[source] FsError),
    #[error("GET {url}")]
    Http {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("GET {url}: {message}")]
    Refused { url: String, message: String },
    #[error("GET {url}: reading the body")]
    Body {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("writing {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A downloaded file, opened, and its sha256 (hex).
pub struct Downloaded {
    pub file: File,
    pub sha256: String,
}

impl Fetcher<'_> {
    /// The file at `url`, from the cache or downloaded into it; with
    /// `sha256`, a download must have that digest.
    ///
    /// Files are kept by content (`downloads/sha256/HEX`, renamed into
    /// place once hashed), and `downloads/urls/KEY` names the content a
    /// URL gave; KEY hashes the URL with the addresses the user allowed,
    /// so what one run fetched from a private address is not served to
    /// a run without that leave.
    pub fn fetch(&self, url: &str, sha256: Option<&str>) -> Result<Downloaded, DownloadError> {
        let cache = self.cache.ok_or_else(|| DownloadError::NoCache {
            url: url.to_owned(),
        })?;
        let root = cache.join("downloads");
        let dir = Dir::create_private(&root).map_err(DownloadError::Cache)?;
        let blobs = dir
            .ensure_dir(Path::new("sha256"), 0o700)
            .map_err(DownloadError::Cache)?;
        let urls = dir
            .ensure_dir(Path::new("urls"), 0o700)
            .map_err(DownloadError::Cache)?;
        let mut hasher = Sha256::new();
        hasher.update(url.as_bytes());
        hasher.update(format!("\n{:?}", self.guard.allowed()).as_bytes());
        let key = PathBuf::from(hex::encode(hasher.finalize()));
        let recorded = urls
            .read(&key, 128)
            .ok()
            .map(|t| String::from_utf8_lossy(&t).trim().to_owned())
            .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
            .filter(|d| sha256.is_none_or(|want| want == d));
        if let Some(digest) = recorded {
            let data = PathBuf::from(&digest);
            if matches!(blobs.lstat(&data), Ok(Some(m)) if m.kind == Kind::File) {
                let file = blobs.open_file(&data).map_err(DownloadError::Cache)?;
                // Used now: the last to go when the cache is bounded.
                let _ = file.set_modified(std::time::SystemTime::now());
                return Ok(Downloaded {
                    file,
                    sha256: digest,
                });
            }
        }
        let digest = self.download(url, &blobs, sha256)?;
        bound(&blobs, &digest, self.keep);
        let tmp = PathBuf::from(format!(".{}.{}.tmp", key.display(), std::process::id()));
        let write = || -> Result<(), FsError> {
            let _ = urls.remove_file(&tmp);
            let mut f = urls.create_new(&tmp, 0o600)?;
            f.write_all(digest.as_bytes())
                .map_err(|source| FsError::Io {
                    what: "write",
                    path: urls.display(&tmp),
                    source,
                })?;
            urls.rename(&tmp, &urls, &key)
        };
        write().map_err(DownloadError::Cache)?;
        let data = PathBuf::from(&digest);
        let file = blobs.open_file(&data).map_err(DownloadError::Cache)?;
        Ok(Downloaded {
            file,
            sha256: digest,
        })
    }

    /// GETs `url` into `dir` (through a temporary file), named by its
    /// sha256, which it returns.
    fn download(
        &self,
        url: &str,
        dir: &Dir,
        sha256: Option<&str>,
    ) -> Result<String, DownloadError> {
        let agent = http::agent(self.guard.clone());
        let mut at = url.to_owned();
        let mut response = None;
        for _ in 0..=MAX_REDIRECTS {
            let refused = |message: String| DownloadError::Refused {
                url: at.clone(),
                message,
            };
            match at.split_once("://").map(|(scheme, _)| scheme) {
                Some("https") => {}
                Some("http") if sha256.is_some() => {}
                Some("http") => {
                    return Err(refused(
                        "plain http needs the step's `sha256`, which pins what may come".into(),
                    ))
                }
                _ => return Err(refused("only http and https URLs are fetched".into())),
            }
            let r = agent
                .get(&at)
                .call()
                .map_err(|source| DownloadError::Http {
                    url: at.clone(),
                    source,
                })?;
            let status = r.status().as_u16();
            if r.status().is_redirection() {
                let location = r
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                at = absolute(&at, &location).ok_or_else(|| {
                    refused(format!(
                        "a redirect to {:?}",
                        crate::text::escape(&location)
                    ))
                })?;
                continue;
            }
            if status != 200 {
                return Err(refused(format!("the server answered {status}")));
            }
            response = Some(r);
            break;
        }
        let Some(response) = response else {
            return Err(DownloadError::Refused {
                url: at,
                message: format!("more than {MAX_REDIRECTS} redirects"),
            });
        };
        let total = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        if total > self.max {
            return Err(DownloadError::Refused {
                url: at,
                message: format!(
                    "it is {total} bytes, more than the {} allowed (limits.image)",
                    self.max
                ),
            });
        }
        let tmp = PathBuf::from(format!(".download.{}.tmp", std::process::id()));
        let _ = dir.remove_file(&tmp);
        let mut file = dir.create_new(&tmp, 0o600).map_err(DownloadError::Cache)?;
        let progress = Progress::new("downloading", total);
        let result = (|| {
            let body = response.into_body().into_reader();
            let reader = ProgressReader::new(body, &progress);
            let (_, digest) = copy_hashed(reader, &mut file, self.max).map_err(|e| match e {
                HashedCopyError::TooLong => DownloadError::Refused {
                    url: at.clone(),
                    message: format!(
                        "it is more than the {} bytes allowed (limits.image)",
                        self.max
                    ),
                },
                HashedCopyError::Read(source) => DownloadError::Body {
                    url: at.clone(),
                    source,
                },
                HashedCopyError::Write(source) => DownloadError::Write {
                    path: dir.display(&tmp),
                    source,
                },
            })?;
            if let Some(want) = sha256 {
                if want != digest {
                    return Err(DownloadError::Refused {
                        url: at.clone(),
                        message: format!("its sha256 is {digest}, not the {want} the step gives"),
                    });
                }
            }
            file.sync_all().map_err(|source| DownloadError::Write {
                path: dir.display(&tmp),
                source,
            })?;
            dir.rename(&tmp, dir, Path::new(&digest))
                .map_err(DownloadError::Cache)?;
            Ok(digest)
        })();
        progress.finish();
        if result.is_err() {
            let _ = dir.remove_file(&tmp);
        }
        result
    }
}

/// A redirect's Location made absolute against the URL that gave it.
/// Removes the least recently used files in `blobs` (named by their
/// sha256), never `keep`, until they take at most `limit` bytes together
/// (`limits.downloads`). A file a run has open stays readable to it.
fn bound(blobs: &Dir, keep: &str, limit: u64) {
    let Ok(names) = blobs.names() else {
        return;
    };
    let mut files: Vec<(i64, u64, PathBuf)> = names
        .into_iter()
        .filter_map(|name| {
            let name = PathBuf::from(name);
            let hex = name.to_str()?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            match blobs.lstat(&name) {
                Ok(Some(m)) if m.kind == Kind::File => Some((m.mtime_ns, m.size, name)),
                _ => None,
            }
        })
        .collect();
    let mut total: u64 = files.iter().map(|(_, size, _)| *size).sum();
    files.sort();
    for (_, size, name) in files {
        if total <= limit {
            break;
        }
        if name.as_os_str() != keep && blobs.remove_file(&name).unwrap_or(false) {
            total = total.saturating_sub(size);
        }
    }
}

fn absolute(from: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_owned());
    }
    if location.starts_with('/') && !location.starts_with("//") {
        let (scheme, rest) = from.split_once("://")?;
        let host = rest.split('/').next()?;
        return Some(format!("{scheme}://{host}{location}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_against_the_url() {
        assert_eq!(
            absolute("https://a.example/x/y", "/z").as_deref(),
            Some("https://a.example/z")
        );
        assert_eq!(absolute("https://a.example/x", "//evil/z"), None);
        assert_eq!(
            absolute("https://a.example/x", "http://b.example/").as_deref(),
            Some("http://b.example/")
        );
    }

    #[test]
    fn the_least_recently_used_downloads_go_first_but_never_the_new_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let now = std::time::SystemTime::now();
        let names: Vec<String> = (0..4).map(|i| format!("{i}").repeat(64)).collect();
        for (i, name) in names.iter().enumerate() {
            let path = tmp.path().join(name);
            std::fs::write(&path, vec![0u8; 1000]).expect("write");
            let f = File::options().write(true).open(&path).expect("open");
            // names[0] is the oldest, names[3] the newest.
            let at = now - std::time::Duration::from_secs(100 - 10 * i as u64);
            f.set_modified(at).expect("mtime");
        }
        std::fs::write(tmp.path().join("not-a-digest"), vec![0u8; 5000]).expect("write");
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("f".repeat(64))).expect("ln");
        let dir = Dir::open(tmp.path()).expect("dir");
        // The oldest is the one just fetched: it stays, the next go.
        bound(&dir, &names[0], 2000);
        let left = |name: &str| tmp.path().join(name).exists();
        assert!(left(&names[0]) && left(&names[3]));
        assert!(!left(&names[1]) && !left(&names[2]));
        assert!(left("not-a-digest"), "only digests are counted and removed");
        assert!(tmp.path().join("f".repeat(64)).symlink_metadata().is_ok());
    }
}
