//! Content digests of the host files that go into images.
//!
//! `!Copy`, `!Depends` and `!Tar` steps name their image by what they read
//! from the project. [`crate::hostfs::walk`] lists those files in a stable
//! order without following links, [`tree_digest`] hashes the list (names,
//! kinds, modes, link targets and contents, never times or owners), and
//! [`DigestCache`] remembers content hashes across runs so an unchanged
//! tree is not read again. Every file is opened beneath the project
//! directory's descriptor, never through a symlink.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hostfs::{Dir, Entry, EntryKind, FsError, Kind, Meta, Shown};

/// What failed while reading host files; each names the host path.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("cannot read {}", Shown(.path))]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} changed while it was being read", Shown(.path))]
    Changed { path: PathBuf },
}

/// Bumped when the framing of [`tree_digest`] changes.
const TREE_DIGEST_VERSION: &[u8] = b"cella-host-tree-1";

/// The sha256 of a walked tree: for each entry in order its relative path,
/// kind, permission bits, and its symlink target or file size and content
/// sha256, each variable-length field prefixed by its length (u64 LE). Times,
/// owners and inode numbers are not covered. Each file is `lstat`ed again; a
/// file whose size is no longer the one [`walk`] saw is [`HostError::Changed`].
pub fn tree_digest(
    base: &Dir,
    source: &Path,
    entries: &[Entry],
    cache: &mut DigestCache,
) -> Result<[u8; 32], HostError> {
    let mut h = Sha256::new();
    h.update(TREE_DIGEST_VERSION);
    h.update((entries.len() as u64).to_le_bytes());
    for entry in entries {
        h.update((entry.rel.len() as u64).to_le_bytes());
        h.update(&entry.rel);
        h.update(entry.perm.to_le_bytes());
        match &entry.kind {
            EntryKind::Dir => h.update(b"d"),
            EntryKind::Fifo => h.update(b"p"),
            EntryKind::Symlink(target) => {
                h.update(b"l");
                h.update((target.len() as u64).to_le_bytes());
                h.update(target);
            }
            EntryKind::File { size } => {
                let rel = entry.path(source);
                let changed = || HostError::Changed {
                    path: base.display(&rel),
                };
                let meta = base.lstat(&rel)?.ok_or_else(changed)?;
                if meta.kind != Kind::File || meta.size != *size {
                    return Err(changed());
                }
                let digest = cache.file_digest(base, &rel, &meta)?;
                h.update(b"f");
                h.update(size.to_le_bytes());
                h.update(digest);
            }
        }
    }
    Ok(h.finalize().into())
}

/// The sha256 of the project file `rel`'s content, in hex (for `!Tar`
/// tarballs): streamed, and the cache is used. A symlink is refused.
pub fn file_digest_hex(
    base: &Dir,
    rel: &Path,
    cache: &mut DigestCache,
) -> Result<String, HostError> {
    let meta = base.lstat(rel)?.ok_or_else(|| FsError::Io {
        what: "read",
        path: base.display(rel),
        source: io::ErrorKind::NotFound.into(),
    })?;
    Ok(hex::encode(cache.file_digest(base, rel, &meta)?))
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
    fn of(meta: &Meta) -> StatKey {
        StatKey {
            dev: meta.dev,
            ino: meta.ino,
            size: meta.size,
            mtime_ns: meta.mtime_ns,
            ctime_ns: meta.ctime_ns,
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
    entries: HashMap<String, CacheEntry>,
    dirty: bool,
}

/// The cache's file in the project's `.cella/`.
pub const CACHE_FILE: &str = "digests.json";
/// A cache file larger than this is not read (it is the project's to ship).
const CACHE_MAX_BYTES: u64 = 64 << 20;

impl DigestCache {
    /// Reads the cache in `state` (the project's `.cella/`); a missing,
    /// unreadable, oversized or corrupt file gives an empty cache.
    pub fn load(state: &Dir) -> DigestCache {
        let entries = state
            .read(Path::new(CACHE_FILE), CACHE_MAX_BYTES)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
            .filter(|file| file.version == CACHE_VERSION)
            .map(|file| file.entries)
            .unwrap_or_default();
        DigestCache {
            entries,
            dirty: false,
        }
    }

    /// An empty cache that is never saved anywhere.
    pub fn empty() -> DigestCache {
        DigestCache {
            entries: HashMap::new(),
            dirty: false,
        }
    }

    /// The sha256 of the regular file `rel` beneath `base`, whose `lstat`
    /// is `meta`: from the cache when its key still matches, else read
    /// (streamed) and cached. The file is opened beneath `base` without
    /// following a symlink, and is hashed but not cached if it turns out not
    /// to be the file `meta` describes.
    pub fn file_digest(
        &mut self,
        base: &Dir,
        rel: &Path,
        meta: &Meta,
    ) -> Result<[u8; 32], HostError> {
        let key = StatKey::of(meta);
        let shown = base.display(rel);
        let name = std::path::absolute(&shown)
            .ok()
            .and_then(|p| p.to_str().map(str::to_owned));
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
        let file = base.open_file(rel)?;
        let (digest, opened) = hash_file(file).map_err(|source| HostError::Read {
            path: shown.clone(),
            source,
        })?;
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

    /// Writes the cache back into `state` if anything changed: to a temp
    /// file (0600), then renamed over the old one. Entries unused for 30
    /// days are dropped, and only the 100,000 most recently used kept.
    pub fn save(&self, state: &Dir) -> Result<(), FsError> {
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
        let bytes = serde_json::to_vec(&file).map_err(|e| FsError::Io {
            what: "write",
            path: state.display(Path::new(CACHE_FILE)),
            source: io::Error::other(e),
        })?;
        write_replace(state, Path::new(CACHE_FILE), &bytes)
    }
}

/// Writes `bytes` to `rel` beneath `dir` through a temporary file (0600,
/// created new) renamed over it: readers see the old or the new file whole.
pub fn write_replace(dir: &Dir, rel: &Path, bytes: &[u8]) -> Result<(), FsError> {
    write_replace_mode(dir, rel, bytes, 0o600)
}

/// [`write_replace`] with the file's mode (before the umask).
pub fn write_replace_mode(dir: &Dir, rel: &Path, bytes: &[u8], mode: u32) -> Result<(), FsError> {
    let name = rel.file_name().unwrap_or_default().to_string_lossy();
    let tmp = rel.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = dir.remove_file(&tmp);
    let mut file = dir.create_new(&tmp, mode)?;
    let result = file
        .write_all(bytes)
        .map_err(|source| FsError::Io {
            what: "write",
            path: dir.display(&tmp),
            source,
        })
        .and_then(|()| dir.rename(&tmp, dir, rel));
    if result.is_err() {
        let _ = dir.remove_file(&tmp);
    }
    result
}

/// The sha256 of an open file's content, streamed; None if the file
/// changed while it was read.
pub fn stable_digest(file: std::fs::File) -> io::Result<Option<[u8; 32]>> {
    hash_file(file).map(|(digest, stable)| stable.map(|_| digest))
}

/// Streams `file` through sha256; also returns the file's stat key, or
/// None if it changed while being read.
fn hash_file(mut file: std::fs::File) -> io::Result<([u8; 32], Option<StatKey>)> {
    let meta = Meta::of_fd(&file)?;
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
    let after = StatKey::of(&Meta::of_fd(&file)?);
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
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    use crate::hostfs::{walk, Filter};

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
        let base = Dir::open(src).unwrap();
        let entries = walk(&base, Path::new(""), &Filter::default()).unwrap();
        tree_digest(&base, Path::new(""), &entries, &mut DigestCache::empty()).unwrap()
    }

    fn meta(base: &Dir, rel: &str) -> Meta {
        base.lstat(Path::new(rel)).unwrap().unwrap()
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
        let base = Dir::open(d.path()).unwrap();
        let entries = walk(&base, Path::new(""), &Filter::default()).unwrap();
        fs::write(d.path().join("f"), b"longer").unwrap();
        let err =
            tree_digest(&base, Path::new(""), &entries, &mut DigestCache::empty()).unwrap_err();
        assert!(matches!(err, HostError::Changed { .. }), "{err}");
        // A file swapped for a link since the walk is refused, not followed.
        fs::remove_file(d.path().join("f")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("f")).unwrap();
        let err =
            tree_digest(&base, Path::new(""), &entries, &mut DigestCache::empty()).unwrap_err();
        assert!(matches!(err, HostError::Changed { .. }), "{err}");
        let err = file_digest_hex(&base, Path::new("f"), &mut DigestCache::empty()).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn cache_hit_skips_reading_and_stale_key_rehashes() {
        let d = tree(&["f", ".cella/"]);
        let base = Dir::open(d.path()).unwrap();
        let state = base.open_dir(Path::new(".cella")).unwrap();
        let f = Path::new("f");
        let mut cache = DigestCache::load(&state);

        // Just written: too recent to be cached.
        let fresh = cache.file_digest(&base, f, &meta(&base, "f")).unwrap();
        assert_eq!(fresh, <[u8; 32]>::from(Sha256::digest(b"f")));
        assert!(cache.entries.is_empty());
        cache.save(&state).unwrap();
        assert!(
            !d.path().join(".cella/digests.json").exists(),
            "nothing changed, nothing saved"
        );

        // Put in an entry for the file's current key with a digest that
        // reading could never give: a hit must return it.
        let m = meta(&base, "f");
        let name = d.path().join("f").to_str().unwrap().to_owned();
        let bogus = [7u8; 32];
        cache.entries.insert(
            name.clone(),
            CacheEntry {
                key: StatKey::of(&m),
                sha256: hex::encode(bogus),
                used: 0,
            },
        );
        assert_eq!(cache.file_digest(&base, f, &m).unwrap(), bogus);
        assert!(cache.dirty, "an old `used` is refreshed");
        cache.save(&state).unwrap();
        let saved = fs::metadata(d.path().join(".cella/digests.json")).unwrap();
        assert_eq!(saved.permissions().mode() & 0o777, 0o600);
        let mut loaded = DigestCache::load(&state);
        assert_eq!(loaded.file_digest(&base, f, &m).unwrap(), bogus);

        // Same size, mtime put back: ctime moved, so it is hashed again.
        fs::write(d.path().join("f"), b"g").unwrap();
        set_mtime(&d.path().join("f"), m.mtime_ns / 1_000_000_000);
        let m2 = meta(&base, "f");
        assert_eq!(m2.size, m.size);
        let again = loaded.file_digest(&base, f, &m2).unwrap();
        assert_eq!(again, <[u8; 32]>::from(Sha256::digest(b"g")));
        assert!(
            !loaded.entries.contains_key(&name),
            "racy result not cached"
        );
    }

    #[test]
    fn corrupt_cache_ignored_and_unused_entries_pruned() {
        let d = tree(&["f", ".cella/"]);
        let base = Dir::open(d.path()).unwrap();
        let state = base.open_dir(Path::new(".cella")).unwrap();
        fs::write(d.path().join(".cella/digests.json"), b"{not json").unwrap();
        let mut cache = DigestCache::load(&state);
        assert!(cache.entries.is_empty());
        let hex = file_digest_hex(&base, Path::new("f"), &mut cache).unwrap();
        assert_eq!(hex, hex::encode(Sha256::digest(b"f")));

        let key = StatKey::of(&meta(&base, "f"));
        for (name, used) in [("/old", 1), ("/recent", secs_of(now_ns()))] {
            let sha256 = hex.clone();
            cache
                .entries
                .insert(name.into(), CacheEntry { key, sha256, used });
        }
        cache.dirty = true;
        cache.save(&state).unwrap();
        let loaded = DigestCache::load(&state);
        let mut names: Vec<_> = loaded.entries.keys().collect();
        names.sort();
        assert_eq!(names, ["/recent"], "unused for 30 days: dropped");
    }

    #[test]
    fn old_unchanged_file_is_cached_and_saved() {
        let d = tree(&["f", ".cella/"]);
        let base = Dir::open(d.path()).unwrap();
        let state = base.open_dir(Path::new(".cella")).unwrap();
        // Wait out the racy window rather than faking it.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let mut cache = DigestCache::load(&state);
        let hex = file_digest_hex(&base, Path::new("f"), &mut cache).unwrap();
        assert_eq!(hex, hex::encode(Sha256::digest(b"f")));
        cache.save(&state).unwrap();
        let loaded = DigestCache::load(&state);
        assert_eq!(loaded.entries.len(), 1);
        let entry = loaded.entries.values().next().unwrap();
        assert_eq!(entry.sha256, hex);
        assert_eq!(entry.key, StatKey::of(&meta(&base, "f")));
    }
}
