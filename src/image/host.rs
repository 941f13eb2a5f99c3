//! Host files that go into images: a filtered, ordered walk of a project dir and content digests.
//!
//! `!Copy`, `!Depends` and `!Tar` steps name their image by what they read
//! from the host. [`walk`] lists those files in a stable order, [`tree_digest`]
//! hashes the list (names, kinds, modes, link targets and contents, never
//! times or owners), and [`DigestCache`] remembers content hashes across runs
//! so an unchanged tree is not read again.

use std::collections::HashMap;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use regex::bytes::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The longest file name an image can hold (erofs and Linux's NAME_MAX).
pub const MAX_NAME_LEN: usize = 255;

/// One file found by [`walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// Path relative to the walked source, '/'-joined; empty for the source itself.
    pub rel: Vec<u8>,
    /// Where it is on the host.
    pub path: PathBuf,
    pub kind: HostKind,
    /// `st_mode & 0o7777`.
    pub perm: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    Dir,
    File {
        size: u64,
    },
    /// The link's target as stored in it; never followed.
    Symlink(Vec<u8>),
    Fifo,
}

/// What failed while reading host files; each names the host path.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot stat {}", .path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list directory {}", .path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read symlink {}", .path.display())]
    ReadLink {
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
    #[error("{}: file name is longer than {MAX_NAME_LEN} bytes", .path.display())]
    NameTooLong { path: PathBuf },
    #[error("{}: device nodes cannot be copied into an image", .path.display())]
    Device { path: PathBuf },
    #[error("{} changed while it was being read", .path.display())]
    Changed { path: PathBuf },
}

/// Which paths under the source [`walk`] returns (vagga's `include-regex` / `exclude-regex`).
///
/// Both regexes are searched (unanchored, like vagga: use `^`/`$`) in the path
/// relative to the source, '/'-joined, without a leading slash (`src/main.rs`);
/// they work on bytes, so non-UTF-8 names can match too. The source itself
/// (empty relative path) is never filtered. For every other path:
/// - `exclude` wins: a matching path is left out, and a matching directory is
///   not descended into, so nothing under it is returned either;
/// - with `include` set, a non-directory is returned only if its own path
///   matches; a directory is always descended into, and is returned if its own
///   path matches or anything under it is returned. A matching directory does
///   not bring in its contents: each one is matched on its own path (so
///   `^docs/` takes the tree, `^docs$` only the directory);
/// - without `include`, everything not excluded is returned.
///
/// Nothing else is skipped: no implicit `.git` or `.cella` exclusion (vagga
/// has none either), exclude those explicitly.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    include: Option<Regex>,
    exclude: Option<Regex>,
}

impl Filter {
    pub fn new(include: Option<&str>, exclude: Option<&str>) -> Result<Filter, regex::Error> {
        Ok(Filter {
            include: include.map(Regex::new).transpose()?,
            exclude: exclude.map(Regex::new).transpose()?,
        })
    }

    fn excluded(&self, rel: &[u8]) -> bool {
        self.exclude.as_ref().is_some_and(|re| re.is_match(rel))
    }

    fn included(&self, rel: &[u8]) -> bool {
        self.include.as_ref().is_none_or(|re| re.is_match(rel))
    }
}

/// Lists `source` (a directory, or a single file or symlink) and what is under it.
///
/// Order is pre-order (a directory before its contents), siblings sorted by
/// the bytes of their names. Nothing is followed: `source` and everything
/// under it are `lstat`ed, and a symlink is returned as one. Sockets are
/// skipped silently (editors and dev servers leave them in project dirs);
/// block and character devices are an error, and so is a name longer than
/// [`MAX_NAME_LEN`] bytes. See [`Filter`] for what the regexes select.
pub fn walk(source: &Path, filter: &Filter) -> Result<Vec<HostEntry>, HostError> {
    let mut out = Vec::new();
    let meta = lstat(source)?;
    let is_dir = meta.is_dir();
    if !push_entry(&mut out, Vec::new(), source.to_path_buf(), &meta)? {
        return Ok(out);
    }
    if is_dir {
        walk_dir(source, &[], filter, &mut out)?;
    }
    Ok(out)
}

fn walk_dir(
    dir: &Path,
    rel: &[u8],
    filter: &Filter,
    out: &mut Vec<HostEntry>,
) -> Result<(), HostError> {
    let read_dir = |source| HostError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir)? {
        names.push(entry.map_err(read_dir)?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let path = dir.join(&name);
        if name.len() > MAX_NAME_LEN {
            return Err(HostError::NameTooLong { path });
        }
        let mut child_rel = rel.to_vec();
        if !child_rel.is_empty() {
            child_rel.push(b'/');
        }
        child_rel.extend_from_slice(name.as_bytes());
        if filter.excluded(&child_rel) {
            continue;
        }
        let meta = lstat(&path)?;
        if meta.is_dir() {
            let at = out.len();
            let own_match = filter.included(&child_rel);
            push_entry(out, child_rel.clone(), path.clone(), &meta)?;
            walk_dir(&path, &child_rel, filter, out)?;
            if !own_match && out.len() == at + 1 {
                out.truncate(at);
            }
        } else if filter.included(&child_rel) {
            push_entry(out, child_rel, path, &meta)?;
        }
    }
    Ok(())
}

/// Appends the entry for `path`; false if it is a socket (skipped).
fn push_entry(
    out: &mut Vec<HostEntry>,
    rel: Vec<u8>,
    path: PathBuf,
    meta: &Metadata,
) -> Result<bool, HostError> {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        HostKind::Dir
    } else if ft.is_file() {
        HostKind::File { size: meta.len() }
    } else if ft.is_symlink() {
        let target = fs::read_link(&path).map_err(|source| HostError::ReadLink {
            path: path.clone(),
            source,
        })?;
        HostKind::Symlink(target.into_os_string().into_vec())
    } else if ft.is_fifo() {
        HostKind::Fifo
    } else if ft.is_socket() {
        return Ok(false);
    } else {
        return Err(HostError::Device { path });
    };
    let perm = meta.mode() & 0o7777;
    out.push(HostEntry {
        rel,
        path,
        kind,
        perm,
    });
    Ok(true)
}

fn lstat(path: &Path) -> Result<Metadata, HostError> {
    fs::symlink_metadata(path).map_err(|source| HostError::Stat {
        path: path.to_path_buf(),
        source,
    })
}

/// Bumped when the framing of [`tree_digest`] changes.
const TREE_DIGEST_VERSION: &[u8] = b"cella-host-tree-1";

/// The sha256 of a walked tree: for each entry in order its relative path,
/// kind, permission bits, and its symlink target or file size and content
/// sha256, each variable-length field prefixed by its length (u64 LE). Times,
/// owners and inode numbers are not covered. Each file is `lstat`ed again; a
/// file whose size is no longer the one [`walk`] saw is [`HostError::Changed`].
pub fn tree_digest(entries: &[HostEntry], cache: &mut DigestCache) -> Result<[u8; 32], HostError> {
    let mut h = Sha256::new();
    h.update(TREE_DIGEST_VERSION);
    h.update((entries.len() as u64).to_le_bytes());
    for entry in entries {
        h.update((entry.rel.len() as u64).to_le_bytes());
        h.update(&entry.rel);
        h.update(entry.perm.to_le_bytes());
        match &entry.kind {
            HostKind::Dir => h.update(b"d"),
            HostKind::Fifo => h.update(b"p"),
            HostKind::Symlink(target) => {
                h.update(b"l");
                h.update((target.len() as u64).to_le_bytes());
                h.update(target);
            }
            HostKind::File { size } => {
                let meta = lstat(&entry.path)?;
                if !meta.is_file() || meta.len() != *size {
                    return Err(HostError::Changed {
                        path: entry.path.clone(),
                    });
                }
                let digest =
                    cache
                        .file_digest(&entry.path, &meta)
                        .map_err(|source| HostError::Read {
                            path: entry.path.clone(),
                            source,
                        })?;
                h.update(b"f");
                h.update(size.to_le_bytes());
                h.update(digest);
            }
        }
    }
    Ok(h.finalize().into())
}

/// The sha256 of one file's content, in hex (for `!Tar` tarballs): symlinks
/// in `path` are resolved, the file is streamed, and the cache is used.
pub fn file_digest_hex(path: &Path, cache: &mut DigestCache) -> Result<String, HostError> {
    let real = fs::canonicalize(path).map_err(|source| HostError::Stat {
        path: path.to_path_buf(),
        source,
    })?;
    let meta = lstat(&real)?;
    let digest = cache
        .file_digest(&real, &meta)
        .map_err(|source| HostError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(hex::encode(digest))
}

/// Bumped when the cache file's layout changes; another version is ignored.
const CACHE_VERSION: u32 = 1;
/// Entries not looked up for this long are dropped on save.
const CACHE_MAX_AGE_SECS: u64 = 30 * 24 * 3600;
/// At most this many entries are saved (the most recently used ones).
const CACHE_MAX_ENTRIES: usize = 100_000;
/// A file changed this recently may change again within the same timestamp
/// tick without its mtime or ctime moving: its digest is not cached.
const RACY_NS: i64 = 2_000_000_000;
/// A hit refreshes an entry's last-use time only if it is older than this, so
/// a run that changed nothing does not rewrite the cache file.
const TOUCH_SECS: u64 = 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl StatKey {
    fn of(meta: &Metadata) -> StatKey {
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        StatKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    key: StatKey,
    sha256: String,
    /// Unix seconds of the last lookup (refreshed at most daily).
    used: u64,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    entries: HashMap<String, CacheEntry>,
}

/// Content sha256s of host files, kept across runs in a JSON file.
///
/// An entry is keyed by the file's absolute path (as given, not resolved;
/// paths that are not UTF-8 are never cached) and is valid while dev, inode,
/// size, mtime and ctime are all unchanged. ctime is set by the kernel on
/// every write, chmod or `touch`, and cannot be set back by a user, so putting
/// back an old mtime after an edit still invalidates the entry. Against the
/// racy-timestamp problem (an edit within the same timestamp tick as the
/// hashing), a file whose mtime or ctime is less than 2 seconds before now
/// (or in the future) is hashed but not cached.
#[derive(Debug)]
pub struct DigestCache {
    path: PathBuf,
    entries: HashMap<String, CacheEntry>,
    dirty: bool,
}

impl DigestCache {
    /// Reads the cache at `path`; a missing, unreadable or corrupt file gives an empty cache.
    pub fn load(path: &Path) -> DigestCache {
        let entries = fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
            .filter(|file| file.version == CACHE_VERSION)
            .map(|file| file.entries)
            .unwrap_or_default();
        DigestCache {
            path: path.to_path_buf(),
            entries,
            dirty: false,
        }
    }

    /// The sha256 of the regular file at `path`, whose `lstat` is `meta`: from
    /// the cache when its key still matches, else read (streamed) and cached.
    /// The file is opened without following a symlink, and is hashed but not
    /// cached if it turns out not to be the file `meta` describes.
    pub fn file_digest(&mut self, path: &Path, meta: &Metadata) -> io::Result<[u8; 32]> {
        let key = StatKey::of(meta);
        let name = std::path::absolute(path)?.to_str().map(str::to_owned);
        let now = now_ns();
        if let Some(entry) = name.as_ref().and_then(|n| self.entries.get_mut(n)) {
            if entry.key == key {
                if let Some(digest) = parse_digest(&entry.sha256) {
                    let secs = secs_of(now);
                    if secs.saturating_sub(entry.used) > TOUCH_SECS {
                        entry.used = secs;
                        self.dirty = true;
                    }
                    return Ok(digest);
                }
            }
        }
        let (digest, opened) = hash_file(path)?;
        let newest = key.mtime_ns.max(key.ctime_ns);
        if let Some(name) = name {
            if opened == Some(key) && newest.saturating_add(RACY_NS) <= now {
                let entry = CacheEntry {
                    key,
                    sha256: hex::encode(digest),
                    used: secs_of(now),
                };
                self.entries.insert(name, entry);
                self.dirty = true;
            } else if self.entries.remove(&name).is_some() {
                self.dirty = true;
            }
        }
        Ok(digest)
    }

    /// Writes the cache back if anything changed: to a temp file in the same
    /// directory (created if missing), then renamed over the old one. Entries
    /// unused for 30 days are dropped, and only the 100,000 most recently used kept.
    pub fn save(&self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let oldest = secs_of(now_ns()).saturating_sub(CACHE_MAX_AGE_SECS);
        let mut kept: Vec<(&String, &CacheEntry)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.used >= oldest)
            .collect();
        if kept.len() > CACHE_MAX_ENTRIES {
            kept.sort_by_key(|(_, e)| std::cmp::Reverse(e.used));
            kept.truncate(CACHE_MAX_ENTRIES);
        }
        let file = CacheFile {
            version: CACHE_VERSION,
            entries: kept
                .into_iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let bytes = serde_json::to_vec(&file).map_err(io::Error::other)?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir)?;
        let file_name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let result = File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes))
            .and_then(|()| fs::rename(&tmp, &self.path));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// Streams the file at `path` (not following a final symlink, not blocking
/// on a fifo) through sha256; also returns the opened file's stat key, or
/// None if it changed while being read.
fn hash_file(path: &Path) -> io::Result<([u8; 32], Option<StatKey>)> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Stat again after reading: a write during the read moves mtime/ctime.
    let after = StatKey::of(&file.metadata()?);
    let stable = (after == StatKey::of(&meta)).then_some(after);
    Ok((h.finalize().into(), stable))
}

fn parse_digest(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn secs_of(ns: i64) -> u64 {
    u64::try_from(ns / 1_000_000_000).unwrap_or(0)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            if let Some(stripped) = f.strip_suffix('/') {
                fs::create_dir_all(dir.path().join(stripped)).unwrap();
            } else {
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, f.as_bytes()).unwrap();
            }
        }
        dir
    }

    /// The relative paths `walk` returns, space-separated ("." for the source).
    fn rels(src: &Path, include: Option<&str>, exclude: Option<&str>) -> String {
        let filter = Filter::new(include, exclude).unwrap();
        let rel = |e: HostEntry| match e.rel.is_empty() {
            true => ".".to_owned(),
            false => String::from_utf8(e.rel).unwrap(),
        };
        let names: Vec<_> = walk(src, &filter).unwrap().into_iter().map(rel).collect();
        names.join(" ")
    }

    /// Sets mtime (and atime) to `secs` since the epoch.
    fn set_mtime(path: &Path, secs: i64) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        let t = libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        let times = [t, t];
        // SAFETY: `c` is a NUL-terminated path and `times` holds two timespecs, as utimensat expects.
        let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    }

    fn digest(src: &Path) -> [u8; 32] {
        let entries = walk(src, &Filter::default()).unwrap();
        let mut cache = DigestCache::load(&src.join("no-such-dir/cache.json"));
        tree_digest(&entries, &mut cache).unwrap()
    }

    #[test]
    fn preorder_sorted_by_name_bytes() {
        let d = tree(&["b", "a.b", "a/c", "a/B", "Z", "empty/"]);
        assert_eq!(rels(d.path(), None, None), ". Z a a/B a/c a.b b empty");
        let entries = walk(d.path(), &Filter::default()).unwrap();
        assert_eq!(
            (&entries[0].kind, &*entries[0].path),
            (&HostKind::Dir, d.path())
        );
        assert_eq!(entries[1].kind, HostKind::File { size: 1 });
        assert_eq!(entries[1].path, d.path().join("Z"));
        // A single file as the source: itself, unfiltered.
        let entries = walk(
            &d.path().join("b"),
            &Filter::new(Some("^x$"), None).unwrap(),
        );
        let entries = entries.unwrap();
        assert_eq!((entries.len(), &*entries[0].rel), (1, &b""[..]));
    }

    #[test]
    fn include_exclude() {
        let files = [
            "Cargo.toml",
            "docs/readme.md",
            "src/lib.rs",
            "src/main.rs",
            "src/sub/x.rs",
        ];
        let d = tree(&[&files[..], &["target/debug/y.rs"]].concat());
        let p = d.path();
        // An excluded dir is not descended into, even if its contents don't match.
        let all =
            ". Cargo.toml docs docs/readme.md src src/lib.rs src/main.rs src/sub src/sub/x.rs";
        assert_eq!(rels(p, None, Some("^target$")), all);
        // Include: dirs are descended into and kept only for what matched inside.
        let rs = ". src src/lib.rs src/main.rs src/sub src/sub/x.rs";
        let target = " target target/debug target/debug/y.rs";
        assert_eq!(rels(p, Some(r"\.rs$"), None), format!("{rs}{target}"));
        // Exclude wins over include.
        let got = rels(p, Some(r"\.rs$"), Some("^target|main"));
        assert_eq!(got, ". src src/lib.rs src/sub src/sub/x.rs");
        // A dir matching include is kept, but its contents are matched on their own.
        assert_eq!(rels(p, Some("^docs$"), None), ". docs");
        assert_eq!(rels(p, Some("^docs/"), None), ". docs docs/readme.md");
        assert_eq!(
            rels(p, Some("^src/sub/x"), None),
            ". src src/sub src/sub/x.rs"
        );
        assert!(Filter::new(Some("("), None).is_err());
    }

    #[test]
    fn symlinks_not_followed_and_special_files() {
        let outside = tree(&["secret/a", "secret/b"]);
        let d = tree(&["f"]);
        symlink(outside.path().join("secret"), d.path().join("link")).unwrap();
        let fifo = CString::new(d.path().join("pipe").as_os_str().as_bytes()).unwrap();
        // SAFETY: `fifo` is a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
        let _sock = std::os::unix::net::UnixListener::bind(d.path().join("sock")).unwrap();
        let entries = walk(d.path(), &Filter::default()).unwrap();
        let got: Vec<_> = entries
            .iter()
            .map(|e| (e.rel.clone(), e.kind.clone()))
            .collect();
        let target = outside.path().join("secret").into_os_string().into_vec();
        assert_eq!(
            got,
            [
                (b"".to_vec(), HostKind::Dir),
                (b"f".to_vec(), HostKind::File { size: 1 }),
                (b"link".to_vec(), HostKind::Symlink(target.clone())),
                (b"pipe".to_vec(), HostKind::Fifo),
            ]
        );
        fs::set_permissions(d.path().join("pipe"), fs::Permissions::from_mode(0o4640)).unwrap();
        let entries = walk(d.path(), &Filter::default()).unwrap();
        assert_eq!(entries[3].perm, 0o4640);
        // The source itself is lstat'ed too.
        let entries = walk(&d.path().join("link"), &Filter::default()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].kind, HostKind::Symlink(target));
        // A missing source names its path.
        let err = walk(&d.path().join("nope"), &Filter::default()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn tree_digest_covers_content_mode_and_names_not_times() {
        let d = tree(&["a/x", "b"]);
        let p = d.path();
        let base = digest(p);
        assert_eq!(digest(p), base);

        set_mtime(&p.join("a/x"), 1_000_000);
        set_mtime(&p.join("a"), 1_000_000);
        assert_eq!(digest(p), base, "mtime must not count");

        fs::write(p.join("b"), b"c").unwrap(); // same size, other content
        let content = digest(p);
        assert_ne!(content, base);

        fs::set_permissions(p.join("b"), fs::Permissions::from_mode(0o755)).unwrap();
        let mode = digest(p);
        assert_ne!(mode, content);

        fs::rename(p.join("b"), p.join("c")).unwrap();
        assert_ne!(digest(p), mode);
        fs::rename(p.join("c"), p.join("b")).unwrap();
        assert_eq!(digest(p), mode);

        // Moving a file between dirs with the same bytes elsewhere changes it too.
        fs::rename(p.join("a/x"), p.join("ax")).unwrap();
        assert_ne!(digest(p), mode);
    }

    #[test]
    fn tree_digest_detects_change_after_walk() {
        let d = tree(&["f"]);
        let entries = walk(d.path(), &Filter::default()).unwrap();
        fs::write(d.path().join("f"), b"longer").unwrap();
        let mut cache = DigestCache::load(&d.path().join("c.json"));
        let err = tree_digest(&entries, &mut cache).unwrap_err();
        assert!(matches!(err, HostError::Changed { .. }), "{err}");
    }

    #[test]
    fn cache_hit_skips_reading_and_stale_key_rehashes() {
        let d = tree(&["f"]);
        let f = d.path().join("f");
        let cache_path = d.path().join(".cella/digests.json");
        let mut cache = DigestCache::load(&cache_path);

        // Just written: too recent to be cached.
        let fresh = cache.file_digest(&f, &fs::metadata(&f).unwrap()).unwrap();
        assert_eq!(fresh, <[u8; 32]>::from(Sha256::digest(b"f")));
        assert!(cache.entries.is_empty());
        cache.save().unwrap();
        assert!(!cache_path.exists(), "nothing changed, nothing saved");

        // Put in an entry for the file's current key with a digest that
        // reading could never give: a hit must return it.
        let meta = fs::metadata(&f).unwrap();
        let name = std::path::absolute(&f).unwrap();
        let name = name.to_str().unwrap().to_owned();
        let bogus = [7u8; 32];
        cache.entries.insert(
            name.clone(),
            CacheEntry {
                key: StatKey::of(&meta),
                sha256: hex::encode(bogus),
                used: 0,
            },
        );
        // A hit returns the stored digest without reading the file.
        assert_eq!(cache.file_digest(&f, &meta).unwrap(), bogus);
        assert!(cache.dirty, "an old `used` is refreshed");
        cache.save().unwrap();
        let mut loaded = DigestCache::load(&cache_path);
        assert_eq!(loaded.file_digest(&f, &meta).unwrap(), bogus);

        // Same size, mtime put back: ctime moved, so it is hashed again.
        let old = meta.mtime();
        fs::write(&f, b"g").unwrap();
        set_mtime(&f, old);
        let meta2 = fs::metadata(&f).unwrap();
        assert_eq!(meta2.len(), meta.len());
        let again = loaded.file_digest(&f, &meta2).unwrap();
        assert_eq!(again, <[u8; 32]>::from(Sha256::digest(b"g")));
        assert!(
            !loaded.entries.contains_key(&name),
            "racy result not cached"
        );
    }

    #[test]
    fn corrupt_cache_ignored_and_unused_entries_pruned() {
        let d = tree(&["f"]);
        let f = d.path().join("f");
        let cache_path = d.path().join("digests.json");
        fs::write(&cache_path, b"{not json").unwrap();
        let mut cache = DigestCache::load(&cache_path);
        assert!(cache.entries.is_empty());
        let hex = file_digest_hex(&f, &mut cache).unwrap();
        assert_eq!(hex, hex::encode(Sha256::digest(b"f")));

        let key = StatKey::of(&fs::metadata(&f).unwrap());
        for (name, used) in [("/old", 1), ("/recent", secs_of(now_ns()))] {
            let sha256 = hex.clone();
            cache
                .entries
                .insert(name.into(), CacheEntry { key, sha256, used });
        }
        cache.dirty = true;
        cache.save().unwrap();
        let loaded = DigestCache::load(&cache_path);
        let mut names: Vec<_> = loaded.entries.keys().collect();
        names.sort();
        assert_eq!(names, ["/recent"], "unused for 30 days: dropped");
    }

    #[test]
    fn old_unchanged_file_is_cached_and_saved() {
        let d = tree(&["f"]);
        let f = d.path().join("f");
        // Wait out the racy window rather than faking it.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let cache_path = d.path().join("sub/digests.json");
        let mut cache = DigestCache::load(&cache_path);
        let hex = file_digest_hex(&f, &mut cache).unwrap();
        assert_eq!(hex, hex::encode(Sha256::digest(b"f")));
        cache.save().unwrap();
        let loaded = DigestCache::load(&cache_path);
        assert_eq!(loaded.entries.len(), 1);
        let entry = loaded.entries.values().next().unwrap();
        assert_eq!(entry.sha256, hex);
        assert_eq!(entry.key, StatKey::of(&fs::metadata(&f).unwrap()));
    }
}
