//! A filtered, ordered walk of a project directory through file
//! descriptors: what `!Copy` and `!Depends` read, never following a link.

use std::path::{Path, PathBuf};

use regex::bytes::Regex;

use super::rules::{Decision, Rules};
use super::{Dir, FsError, Kind, Meta};
use std::os::unix::ffi::OsStrExt;

/// The longest file name an image can hold (erofs and Linux's NAME_MAX).
pub const MAX_NAME_LEN: usize = 255;
/// Deeper than this, a walk stops with an error.
const MAX_DEPTH: usize = 1024;
/// More entries than this, or more bytes of paths than this, a walk
/// stops with an error (a project cannot make cella hold an unbounded
/// list: deep trees have long paths).
const MAX_ENTRIES: usize = 2_000_000;
const MAX_PATH_BYTES: usize = 256 << 20;

/// One file found by [`walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the walked source, '/'-joined; empty for the source itself.
    pub rel: Vec<u8>,
    pub kind: EntryKind,
    /// `st_mode & 0o7777`.
    pub perm: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

impl Entry {
    /// Where the entry is relative to the directory the walk started
    /// from: `source` joined with `rel`.
    pub fn path(&self, source: &Path) -> PathBuf {
        if self.rel.is_empty() {
            source.to_path_buf()
        } else {
            source.join(std::ffi::OsStr::from_bytes(&self.rel))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File {
        size: u64,
    },
    /// The link's target as stored in it; never followed.
    Symlink(Vec<u8>),
    Fifo,
}

/// Which paths under the source [`walk`] returns: vagga's
/// `include-regex` / `exclude-regex`, or its glob `rules` (see
/// [`super::rules`]). The source itself (empty relative path) is never
/// filtered.
///
/// Both regexes are searched (unanchored, like vagga: use `^`/`$`) in the path
/// relative to the source, '/'-joined, without a leading slash (`src/main.rs`);
/// they work on bytes, so non-UTF-8 names can match too. For every other path:
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
#[derive(Debug, Default)]
pub struct Filter {
    include: Option<Regex>,
    exclude: Option<Regex>,
    rules: Option<Rules>,
}

impl Filter {
    pub fn new(include: Option<&str>, exclude: Option<&str>) -> Result<Filter, regex::Error> {
        Ok(Filter {
            include: include.map(Regex::new).transpose()?,
            exclude: exclude.map(Regex::new).transpose()?,
            rules: None,
        })
    }

    /// vagga's `rules` (defaults included by the caller); the error names the rule.
    pub fn rules<S: AsRef<str>>(rules: &[S]) -> Result<Filter, String> {
        Ok(Filter {
            include: None,
            exclude: None,
            rules: Some(Rules::new(rules)?),
        })
    }

    /// What to do with `rel` (relative to the source, not empty), a
    /// directory if `is_dir`; for walks of other trees than the host's.
    pub fn decide(&self, rel: &[u8], is_dir: bool) -> Decision {
        if let Some(rules) = &self.rules {
            return rules.decide(rel, is_dir);
        }
        if self.exclude.as_ref().is_some_and(|re| re.is_match(rel)) {
            return Decision::Skip;
        }
        let included = self.include.as_ref().is_none_or(|re| re.is_match(rel));
        match (is_dir, included) {
            (true, own) => Decision::Enter { own },
            (false, true) => Decision::Take,
            (false, false) => Decision::Skip,
        }
    }
}

/// Lists `source` beneath `base` (a directory, or a single file or
/// symlink) and what is under it.
///
/// Order is pre-order (a directory before its contents), siblings sorted by
/// the bytes of their names. Nothing is followed: `source` and everything
/// under it are `lstat`ed through the descriptor of their directory, and a
/// symlink is returned as one (a symlink on the way to `source` is an
/// error). Sockets are skipped silently (editors and dev servers leave them
/// in project dirs); block and character devices are an error, and so is a
/// name longer than [`MAX_NAME_LEN`] bytes. See [`Filter`] for what the
/// regexes select.
pub fn walk(base: &Dir, source: &Path, filter: &Filter) -> Result<Vec<Entry>, FsError> {
    let mut out = Vec::new();
    let Some(meta) = base.lstat(source)? else {
        return Err(FsError::Io {
            what: "read",
            path: base.display(source),
            source: std::io::ErrorKind::NotFound.into(),
        });
    };
    if !push_entry(base, source, &mut out, Vec::new(), &meta)? {
        return Ok(out);
    }
    if meta.kind == Kind::Dir {
        let dir = base.open_dir(source)?;
        walk_dir(&dir, &[], filter, &mut out, &mut 0, 0)?;
    }
    Ok(out)
}

fn walk_dir(
    dir: &Dir,
    rel: &[u8],
    filter: &Filter,
    out: &mut Vec<Entry>,
    path_bytes: &mut usize,
    depth: usize,
) -> Result<(), FsError> {
    if depth >= MAX_DEPTH {
        return Err(too_many(dir, "levels of directories", MAX_DEPTH));
    }
    let mut names = dir.names()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let name_path = Path::new(&name);
        if name.len() > MAX_NAME_LEN {
            return Err(FsError::Io {
                what: "copy",
                path: dir.display(name_path),
                source: std::io::Error::other(format!(
                    "file name is longer than {MAX_NAME_LEN} bytes"
                )),
            });
        }
        let mut child_rel = rel.to_vec();
        if !child_rel.is_empty() {
            child_rel.push(b'/');
        }
        child_rel.extend_from_slice(name.as_bytes());
        let child_rel_len = child_rel.len();
        // Gone since the listing: skip it, as if listed a moment later.
        let Some(meta) = dir.lstat(name_path)? else {
            continue;
        };
        match filter.decide(&child_rel, meta.kind == Kind::Dir) {
            Decision::Skip => {}
            Decision::Take => {
                *path_bytes += child_rel_len;
                push_entry(dir, name_path, out, child_rel, &meta)?;
            }
            Decision::Enter { own } => {
                *path_bytes += child_rel_len;
                let at = out.len();
                push_entry(dir, name_path, out, child_rel.clone(), &meta)?;
                let child = dir.open_dir(name_path)?;
                walk_dir(&child, &child_rel, filter, out, path_bytes, depth + 1)?;
                if !own && out.len() == at + 1 {
                    out.truncate(at);
                }
            }
        }
        if out.len() > MAX_ENTRIES {
            return Err(too_many(dir, "files", MAX_ENTRIES));
        }
        if *path_bytes > MAX_PATH_BYTES {
            return Err(too_many(dir, "bytes of paths", MAX_PATH_BYTES));
        }
    }
    Ok(())
}

fn too_many(dir: &Dir, what: &str, limit: usize) -> FsError {
    FsError::Io {
        what: "walk",
        path: dir.path().to_path_buf(),
        source: std::io::Error::other(format!("more than {limit} {what}")),
    }
}

/// Appends the entry for `name` in `dir`; false if it is a socket (skipped).
fn push_entry(
    dir: &Dir,
    name: &Path,
    out: &mut Vec<Entry>,
    rel: Vec<u8>,
    meta: &Meta,
) -> Result<bool, FsError> {
    let kind = match meta.kind {
        Kind::Dir => EntryKind::Dir,
        Kind::File => EntryKind::File { size: meta.size },
        Kind::Symlink => EntryKind::Symlink(dir.read_link(name)?),
        Kind::Fifo => EntryKind::Fifo,
        Kind::Socket => return Ok(false),
        Kind::CharDevice | Kind::BlockDevice => {
            return Err(FsError::WrongType {
                path: dir.display(name),
                expected:
                    "file, directory, symlink or fifo (device nodes cannot be copied into an image)",
            })
        }
    };
    out.push(Entry {
        rel,
        kind,
        perm: meta.perm,
        mtime_ns: meta.mtime_ns,
    });
    Ok(true)
}
