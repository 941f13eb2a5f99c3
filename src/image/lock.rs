//! `cella.lock`, beside cella.yaml: written by builds and meant to be
//! committed, so that "the same bytes years later" can be checked. Per
//! container it records the image id and the image's sha256, everything
//! the id hashes (each setup step with the digests of the files it reads
//! and the ids of the images it uses, the build epoch), the Debian
//! packages installed, and what build VMs ran on (cella, kernel and
//! guest-init sha256). `_build --locked` and `_verify` compare with it.
//!
//! Plain JSON with serde rather than a format of our own: the file is
//! read by people in reviews and diffs, and by cella strictly (unknown
//! fields refused). It is the project's, so hostile: read beneath the
//! project's directory without following a link, bounded before it is
//! read, and written through a temporary file renamed over it, so a link
//! planted in its place is replaced, never followed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::host::write_replace_mode;
use super::store::{BuiltWith, ImageInfo};
use super::version::{image_format, Inputs};
use crate::hostfs::{Dir, FsError};

/// The lock's name, in the project directory.
pub const LOCK_FILE: &str = "cella.lock";
/// The lock format this cella reads and writes.
const LOCK_VERSION: u32 = 1;
/// The largest lock read: a project's is a few KiB per container, most of
/// it the package lists (tens of KiB for a Debian image).
const MAX_LOCK: u64 = 4 << 20;
/// The longest name, package or version string a lock may hold.
const MAX_WORD: usize = 512;
/// Packages listed in a difference, at most.
const SHOWN_PACKAGES: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {field}")]
    Field { path: String, field: String },
    #[error("{path}: cella-lock: {found} is a lock format this cella does not read (it reads {LOCK_VERSION}); a newer cella wrote it")]
    Version { path: String, found: String },
}

/// The whole lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Lock {
    /// The lock file's format.
    pub cella_lock: u32,
    /// What the ids are ids of (`version::image_format`).
    pub image_format: String,
    pub containers: BTreeMap<String, Locked>,
}

/// One container's image and what it was built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Locked {
    /// The image id.
    pub image: String,
    /// The sha256 of the image file.
    pub sha256: String,
    pub epoch: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub build_network_user: bool,
    /// The steps as the id hashes them.
    pub setup: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_with: Option<BuiltWith>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
}

impl Lock {
    /// An empty lock of this cella's formats.
    pub fn new() -> Lock {
        Lock {
            cella_lock: LOCK_VERSION,
            image_format: image_format(),
            containers: BTreeMap::new(),
        }
    }

    /// The first value that is not what cella writes there, as
    /// `containers.base.sha256: not a sha256`: everything a message may
    /// quote from the lock is checked to be plain text first.
    fn check(&self) -> Result<(), String> {
        let word = |at: &str, s: &str| {
            if s.is_empty() || s.len() > MAX_WORD || s.chars().any(char::is_control) {
                Err(format!("{at}: not a name cella writes"))
            } else {
                Ok(())
            }
        };
        let digest = |at: &str, s: &str| {
            if is_digest(s) {
                Ok(())
            } else {
                Err(format!("{at}: not a sha256 (64 hex digits)"))
            }
        };
        word("image-format", &self.image_format)?;
        for (name, c) in &self.containers {
            word("containers", name)?;
            let at = |field: &str| format!("containers.{name}.{field}");
            digest(&at("image"), &c.image)?;
            digest(&at("sha256"), &c.sha256)?;
            if let Some(b) = &c.built_with {
                word(&at("built-with.cella"), &b.cella)?;
                digest(&at("built-with.kernel"), &b.kernel)?;
                digest(&at("built-with.guest-init"), &b.guest_init)?;
            }
            for p in &c.packages {
                word(&at("packages"), p)?;
            }
        }
        Ok(())
    }

    /// Why this lock's ids cannot be this cella's, if they cannot.
    pub fn format_problem(&self) -> Option<String> {
        (self.image_format != image_format()).then(|| {
            format!(
                "{LOCK_FILE} was written for images of format {:?}; this cella {} builds {:?}, whose ids and bytes differ",
                self.image_format,
                env!("CARGO_PKG_VERSION"),
                image_format()
            )
        })
    }
}

impl Default for Lock {
    fn default() -> Self {
        Lock::new()
    }
}

impl Locked {
    /// The entry of an image built from `inputs`.
    pub fn new(inputs: &Inputs, info: &ImageInfo) -> Locked {
        Locked {
            image: inputs.id.clone(),
            sha256: info.digest.clone(),
            epoch: inputs.epoch,
            build_network_user: inputs.build_network,
            setup: inputs.setup.clone(),
            built_with: info.built_with.clone(),
            packages: info.packages.clone(),
        }
    }
}

/// The project's lock, None if it has none. A link, a directory, a file
/// past 32 MiB, bad JSON and unknown fields are errors naming the file.
pub fn read(project: &Dir) -> Result<Option<Lock>, LockError> {
    let rel = Path::new(LOCK_FILE);
    if project.lstat(rel)?.is_none() {
        return Ok(None);
    }
    let bytes = project.read(rel, MAX_LOCK)?;
    parse(&project.display(rel).display().to_string(), &bytes).map(Some)
}

/// `bytes` as a lock; `path` names it in errors.
pub fn parse(path: &str, bytes: &[u8]) -> Result<Lock, LockError> {
    let error = |e: serde_json::Error| LockError::Parse {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    };
    /// The version alone, the rest skipped unread: a newer lock's fields
    /// are not this cella's to judge.
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "cella-lock")]
        version: Option<u64>,
    }
    if let Ok(Header {
        version: Some(found),
    }) = serde_json::from_slice::<Header>(bytes)
    {
        if found != u64::from(LOCK_VERSION) {
            return Err(LockError::Version {
                path: path.to_owned(),
                found: found.to_string(),
            });
        }
    }
    let lock: Lock = serde_json::from_slice(bytes).map_err(error)?;
    lock.check().map_err(|field| LockError::Field {
        path: path.to_owned(),
        field,
    })?;
    Ok(lock)
}

/// Writes `lock` to the project's cella.lock (0644, replaced whole).
pub fn write(project: &Dir, lock: &Lock) -> Result<(), LockError> {
    let rel = Path::new(LOCK_FILE);
    let mut bytes = serde_json::to_vec_pretty(lock).map_err(|e| FsError::Io {
        what: "write",
        path: project.display(rel),
        source: std::io::Error::other(e),
    })?;
    bytes.push(b'\n');
    write_replace_mode(project, rel, &bytes, 0o644)?;
    Ok(())
}

/// The first way `now` differs from what `locked` recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The setup step, if the difference is in one.
    pub step: Option<usize>,
    /// `content is 1f9f0c5e6b7a… in cella.lock, 3a4b5c6d7e8f… now`.
    pub what: String,
}

/// How `now` differs from `locked`, or None when the id is the same.
pub fn difference(locked: &Locked, now: &Inputs) -> Option<Difference> {
    if locked.image == now.id {
        return None;
    }
    let whole = |what: String| Some(Difference { step: None, what });
    if locked.epoch != now.epoch {
        return whole(format!(
            "the build epoch (SOURCE_DATE_EPOCH) is {} in {LOCK_FILE}, {} now",
            locked.epoch, now.epoch
        ));
    }
    if locked.build_network_user != now.build_network {
        return whole(format!(
            "build-network is {} in {LOCK_FILE}, {} now",
            network(locked.build_network_user),
            network(now.build_network)
        ));
    }
    for (i, (was, is)) in locked.setup.iter().zip(&now.setup).enumerate() {
        if was != is {
            let mut path = String::new();
            let (a, b) = first_change(was, is, &mut path);
            let field = if path.is_empty() {
                String::new()
            } else {
                format!("{} ", path.trim_start_matches('.'))
            };
            return Some(Difference {
                step: Some(i),
                what: format!(
                    "{}: {field}is {} in {LOCK_FILE}, {} now",
                    step_name(is),
                    shown(a),
                    shown(b)
                ),
            });
        }
    }
    if locked.setup.len() != now.setup.len() {
        return whole(format!(
            "the setup has {} steps in {LOCK_FILE}, {} now",
            locked.setup.len(),
            now.setup.len()
        ));
    }
    // The same steps and a different id: an older format's id.
    whole(format!(
        "the image id is {} in {LOCK_FILE}, {} now",
        short(&locked.image),
        short(&now.id)
    ))
}

fn network(user: bool) -> &'static str {
    if user {
        "user"
    } else {
        "none"
    }
}

/// `!Tar` for `{"Tar": {…}}`.
fn step_name(step: &Value) -> String {
    match step.as_object().and_then(|o| o.keys().next()) {
        Some(kind) => format!("!{kind}"),
        None => "the step".to_owned(),
    }
}

/// The first leaves where `a` and `b` differ, and the path to them
/// (`.content`, `.files[2]`), below the step's kind.
fn first_change<'v>(a: &'v Value, b: &'v Value, path: &mut String) -> (&'v Value, &'v Value) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => {
            for (key, value) in x {
                match y.get(key) {
                    Some(other) if other == value => {}
                    Some(other) => {
                        // The step's kind is already named.
                        if !(x.len() == 1 && path.is_empty()) {
                            path.push('.');
                            path.push_str(key);
                        }
                        return first_change(value, other, path);
                    }
                    None => return (a, b),
                }
            }
            (a, b)
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (value, other)) in x.iter().zip(y).enumerate() {
                if value != other {
                    path.push_str(&format!("[{i}]"));
                    return first_change(value, other, path);
                }
            }
            (a, b)
        }
        _ => (a, b),
    }
}

/// A value for a one-line message: digests shortened, long text cut.
fn shown(value: &Value) -> String {
    let text = match value {
        Value::String(s) if is_digest(s) => return format!("{}…", short(s)),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The first 12 characters, for messages.
pub fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// The packages removed (`-`) and added (`+`) from `locked` to `now`,
/// the first few of each: `-libc6=2.36-9 +libc6=2.36-9+deb12u4`.
pub fn packages_difference(locked: &[String], now: &[String]) -> Option<String> {
    let gone: Vec<&String> = locked.iter().filter(|p| !now.contains(p)).collect();
    let new: Vec<&String> = now.iter().filter(|p| !locked.contains(p)).collect();
    if gone.is_empty() && new.is_empty() {
        return None;
    }
    let mut words: Vec<String> = gone.iter().map(|p| format!("-{p}")).collect();
    words.extend(new.iter().map(|p| format!("+{p}")));
    let more = words.len().saturating_sub(SHOWN_PACKAGES);
    words.truncate(SHOWN_PACKAGES);
    if more > 0 {
        words.push(format!("and {more} more"));
    }
    Some(words.join(" "))
}

/// How the programs `now` would run builds on differ from those that
/// built the locked image, if they do (cella's own version aside: a new
/// cella with the same kernel and guest-init builds the same bytes).
pub fn tools_difference(locked: &BuiltWith, now: &BuiltWith) -> Option<String> {
    let mut what = Vec::new();
    if locked.kernel != now.kernel {
        what.push(format!(
            "kernel sha256 {}… (this cella's: {}…)",
            short(&locked.kernel),
            short(&now.kernel)
        ));
    }
    if locked.guest_init != now.guest_init {
        what.push(format!(
            "guest-init sha256 {}… (this cella's: {}…)",
            short(&locked.guest_init),
            short(&now.guest_init)
        ));
    }
    (!what.is_empty()).then(|| {
        format!(
            "it was built by cella {} with {}",
            locked.cella,
            what.join(" and ")
        )
    })
}

#[cfg(test)]
#[path = "lock_tests.rs"]
mod tests;
