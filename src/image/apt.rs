//! `!Install`'s host half. The host's apt resolves the packages against
//! the image's sources, keys, pins and dpkg status and downloads what is
//! missing into the shared .deb cache; the build VM then installs exactly
//! those .debs with dpkg.
//!
//! Nothing of the image configures or runs the host's apt: cella reads the
//! sources (parsed and checked by `apt_sources`), the keyrings they name,
//! plain pin data and the dpkg status out of the image tree, bounded in
//! size and count, and writes them as new regular files into a scratch
//! root, with an apt.conf of its own whose every `Dir` points there. No
//! apt.conf.d, hook, option or auth file of the image or of the host is
//! read. Each source's host must not be, nor resolve to, an address the
//! user did not grant (loopback, private, link-local…), and apt follows no
//! redirect.
//!
//! Why not `apt-get update` in the guest: under an emulating KVM the guest
//! kernel made apt spend about 4 minutes fetching bookworm's lists and 6
//! more reading them (50 MB of Packages) before it installed anything. The
//! host does both in about 2 seconds, and the lists are cached too.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::apt_sources::{self, SignedBy, Sources, SourcesError};
use super::tree::{InodeId, Kind, Tree};
use crate::config::netpolicy::AddressGuard;
use crate::sandbox::helper;
use crate::text::escape;

/// A sources, preferences or keyring file read out of the image.
const MAX_TEXT: u64 = 1 << 20;
/// dpkg's status (bookworm's standard system: about 2 MB) and apt's
/// extended_states.
const MAX_STATUS: u64 = 64 << 20;
/// Files read from one directory of the image.
const MAX_FILES: usize = 64;
/// Symlinks followed resolving one path in the image.
const MAX_LINKS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum AptError {
    #[error("!Install needs apt-get on the host: it resolves and downloads the packages")]
    NoApt,
    #[error("cannot start apt-get on the host")]
    Spawn(#[source] io::Error),
    #[error(
        "`apt-get {what}` on the host, for the image's sources, failed; its last lines:\n{tail}"
    )]
    Failed { what: &'static str, tail: String },
    #[error("the image has no {0}: !Install needs a Debian-like root (start with !Debian)")]
    NotDebian(&'static str),
    #[error(
        "the image names no apt source (deb lines in /etc/apt/sources.list or sources.list.d)"
    )]
    NoSources,
    #[error(transparent)]
    Sources(#[from] SourcesError),
    #[error("an apt source of the image is refused: {0}")]
    Refused(String),
    #[error("the image's {path} is larger than {max} bytes")]
    TooLarge { path: String, max: u64 },
    #[error("the image's {path} holds more than {MAX_FILES} files")]
    TooMany { path: String },
    #[error("the image's keyring {path} (named by signed-by) is not a file in the image")]
    NoKeyring { path: String },
    #[error("cannot wall in apt-get on the host")]
    Jail(#[source] crate::sandbox::jail::JailError),
    #[error("apt planned a package file with an unexpected name: {0}")]
    BadPlan(String),
    #[error("apt-get did not leave {} in the package cache", .0.display())]
    Missing(PathBuf),
    #[error("cannot {what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> AptError + 'p {
    move |source| AptError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The image tree and the file its data is in.
struct Image<'a> {
    tree: &'a Tree,
    work: &'a File,
}

impl Image<'_> {
    /// The inode at `path`, following symlinks in every component the way
    /// the guest would, never leaving the image.
    fn resolve(&self, path: &str) -> Option<InodeId> {
        let mut pending: Vec<Vec<u8>> = path
            .split('/')
            .rev()
            .map(|c| c.as_bytes().to_vec())
            .collect();
        let mut at: Vec<InodeId> = vec![0];
        let mut links = 0;
        while let Some(name) = pending.pop() {
            match name.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if at.len() > 1 {
                        at.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let dir = *at.last()?;
            let id = *self.tree.entries(dir)?.get(&name)?;
            match &self.tree.inodes.get(id)?.kind {
                Kind::Symlink(target) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return None;
                    }
                    if target.starts_with(b"/") {
                        at.truncate(1);
                    }
                    pending.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
                }
                _ => at.push(id),
            }
        }
        at.last().copied()
    }

    /// The content of the regular file at `path` (None if there is none),
    /// refused past `max` bytes before anything is read.
    fn read(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, AptError> {
        let Some(id) = self.resolve(path) else {
            return Ok(None);
        };
        let Kind::File(data) = &self.tree.inodes[id].kind else {
            return Ok(None);
        };
        if data.size > max {
            return Err(AptError::TooLarge {
                path: escape(path).into_owned(),
                max,
            });
        }
        let mut buf = vec![0u8; data.size as usize];
        self.work
            .read_exact_at(&mut buf, data.range().start)
            .map_err(io_err("read the image's copy of", Path::new(path)))?;
        Ok(Some(buf))
    }

    /// The text of `path`, invalid UTF-8 replaced.
    fn text(&self, path: &str) -> Result<Option<String>, AptError> {
        Ok(self
            .read(path, MAX_TEXT)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The names in directory `dir` that apt would read (letters, digits,
    /// `_.-`) ending in one of `exts` (`""`: no extension), sorted.
    fn names(&self, dir: &str, exts: &[&str]) -> Result<Vec<String>, AptError> {
        let Some(entries) = self.resolve(dir).and_then(|id| self.tree.entries(id)) else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        for name in entries.keys() {
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            let plain = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            let ext_ok = exts.iter().any(|ext| match *ext {
                "" => !name.contains('.'),
                ext => name.ends_with(ext),
            });
            if plain && ext_ok {
                names.push(name.to_owned());
            }
        }
        if names.len() > MAX_FILES {
            return Err(AptError::TooMany {
                path: dir.to_owned(),
            });
        }
        Ok(names)
    }
}

/// A scratch apt root cella wrote, ready for [`resolve`].
pub struct AptRoot {
    root: PathBuf,
    /// Names the package lists of these sources and keys in the cache.
    key: String,
}

/// Makes a directory of cella's own under the scratch root.
fn mkdir(path: &Path) -> Result<(), AptError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(io_err("create", path))
}

/// Writes a new regular file; never through a link, never over a file.
fn write_new(path: &Path, data: &[u8]) -> Result<(), AptError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(io_err("write", path))
}

/// Writes into `root` (which must not exist) the apt configuration, sources,
/// keyrings, pins and dpkg status cella derives from the image tree (data
/// in `work`); every source's host is checked against `guard`.
pub fn export_root(
    tree: &Tree,
    work: &File,
    root: &Path,
    guard: &AddressGuard,
) -> Result<AptRoot, AptError> {
    let image = Image { tree, work };
    for needed in ["/var/lib/dpkg/status", "/etc/apt"] {
        if image.resolve(needed).is_none() {
            return Err(AptError::NotDebian(needed));
        }
    }
    let mut sources = Sources::default();
    if let Some(text) = image.text("/etc/apt/sources.list")? {
        sources.one_line("etc/apt/sources.list", &text)?;
    }
    for name in image.names("/etc/apt/sources.list.d", &[".list", ".sources"])? {
        let path = format!("/etc/apt/sources.list.d/{name}");
        let Some(text) = image.text(&path)? else {
            continue;
        };
        match name.ends_with(".sources") {
            true => sources.deb822(&path[1..], &text)?,
            false => sources.one_line(&path[1..], &text)?,
        }
    }
    if sources.list.is_empty() {
        return Err(AptError::NoSources);
    }
    for source in &sources.list {
        source
            .uri
            .check_reachable(guard)
            .map_err(AptError::Refused)?;
    }
    for dir in [
        "",
        "etc",
        "etc/apt.conf.d",
        "etc/sources.list.d",
        "etc/trusted.gpg.d",
    ]
    .into_iter()
    .chain(["etc/preferences.d", "keyrings", "state", "cache", "log"])
    {
        mkdir(&root.join(dir))?;
    }
    let mut hasher = Sha256::new();
    // The keys signed-by names, each in a file of its own.
    let keyring = |i: usize, j: usize, armored: bool| {
        format!("{i}-{j}.{}", if armored { "asc" } else { "gpg" })
    };
    for (i, source) in sources.list.iter().enumerate() {
        for (j, key) in source.signed_by.iter().enumerate() {
            let (data, armored) = match key {
                SignedBy::Fingerprint(_) => continue,
                SignedBy::Inline(text) => (text.clone().into_bytes(), true),
                SignedBy::Path(path) => match image.read(path, MAX_TEXT)? {
                    Some(data) => (data, path.ends_with(".asc")),
                    None => {
                        return Err(AptError::NoKeyring {
                            path: escape(path).into_owned(),
                        })
                    }
                },
            };
            let name = keyring(i, j, armored);
            hasher.update(format!("{name} {}\n", data.len()));
            hasher.update(&data);
            write_new(&root.join("keyrings").join(&name), &data)?;
        }
    }
    let keyrings = root.join("keyrings");
    let rendered = apt_sources::render(&sources.list, |i, j| {
        let armored = matches!(sources.list[i].signed_by[j], SignedBy::Inline(_))
            || matches!(&sources.list[i].signed_by[j], SignedBy::Path(p) if p.ends_with(".asc"));
        keyrings.join(keyring(i, j, armored)).display().to_string()
    });
    let canonical = apt_sources::render(&sources.list, |i, j| format!("keyring:{i}-{j}"));
    hasher.update(canonical.as_bytes());
    write_new(
        &root.join("etc/sources.list.d/cella.sources"),
        rendered.as_bytes(),
    )?;
    // The keyrings sources without signed-by (and fingerprints) rely on.
    let mut trusted = Vec::new();
    if let Some(data) = image.read("/etc/apt/trusted.gpg", MAX_TEXT)? {
        trusted.push(("legacy.gpg".to_owned(), data));
    }
    for name in image.names("/etc/apt/trusted.gpg.d", &[".gpg", ".asc"])? {
        if let Some(data) = image.read(&format!("/etc/apt/trusted.gpg.d/{name}"), MAX_TEXT)? {
            let ext = if name.ends_with(".asc") { "asc" } else { "gpg" };
            trusted.push((format!("{}.{ext}", trusted.len()), data));
        }
    }
    for (name, data) in &trusted {
        hasher.update(format!("trusted {name} {}\n", data.len()));
        hasher.update(data);
        write_new(&root.join("etc/trusted.gpg.d").join(name), data)?;
    }
    let mut pins = String::new();
    let mut notes = std::mem::take(&mut sources.notes);
    if let Some(text) = image.text("/etc/apt/preferences")? {
        pins.push_str(&apt_sources::preferences(
            "etc/apt/preferences",
            &text,
            &mut notes,
        ));
    }
    for name in image.names("/etc/apt/preferences.d", &["", ".pref"])? {
        let path = format!("/etc/apt/preferences.d/{name}");
        if let Some(text) = image.text(&path)? {
            pins.push_str(&apt_sources::preferences(&path[1..], &text, &mut notes));
        }
    }
    hasher.update(pins.as_bytes());
    write_new(&root.join("etc/preferences.d/cella.pref"), pins.as_bytes())?;
    for note in notes {
        eprintln!("cella: !Install: {note}");
    }
    let status = image.read("/var/lib/dpkg/status", MAX_STATUS)?;
    write_new(&root.join("status"), &status.unwrap_or_default())?;
    let extended = image.read("/var/lib/apt/extended_states", MAX_STATUS)?;
    write_new(&root.join("extended_states"), &extended.unwrap_or_default())?;
    Ok(AptRoot {
        root: root.to_path_buf(),
        key: hex::encode(&hasher.finalize()[..8]),
    })
}

/// The dpkg status of the image `tree` (data in `work`), if it has one,
/// refused past 64 MiB.
pub fn dpkg_status(tree: &Tree, work: &File) -> Result<Option<Vec<u8>>, AptError> {
    Image { tree, work }.read("/var/lib/dpkg/status", MAX_STATUS)
}

/// The text of the regular file at `path` in an image being built (found
/// as the guest would, links followed inside the image), invalid UTF-8
/// replaced; `None` if there is none.
pub fn text_file(tree: &Tree, work: &File, path: &str) -> Result<Option<String>, AptError> {
    Image { tree, work }.text(path)
}

/// What dpkg does in the build VM, in apt's order: `apt-get install
/// --simulate`'s `Inst`, `Conf` and `Remv` lines, consecutive ones of a
/// kind together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DpkgOp {
    /// .deb file names in the shared cache.
    Unpack(Vec<String>),
    /// Package names.
    Configure(Vec<String>),
    Remove(Vec<String>),
}

/// The shared apt cache, in the user's cache directory: `archives/` holds
/// the .debs (`!Debian`'s and `!Install`'s), and `lists/` the package
/// lists the host's apt resolves `!Install` with.
pub struct AptCache {
    pub archives: PathBuf,
    pub lists: PathBuf,
}

impl AptCache {
    /// Where the shared apt cache lives under the user's cache directory
    /// `cache_dir` (`~/.cache/cella`, say): in `apt/`.
    pub fn in_cache_dir(cache_dir: &Path) -> AptCache {
        let root = cache_dir.join("apt");
        AptCache {
            archives: root.join("archives"),
            lists: root.join("lists"),
        }
    }

    /// Makes the cache's directories (0700: the user's alone).
    pub fn create(&self) -> std::io::Result<()> {
        let private = |dir: &std::path::Path| {
            crate::hostfs::Dir::create_private(dir)
                .map(drop)
                .map_err(|e| std::io::Error::other(e.to_string()))
        };
        if let Some(apt) = self.archives.parent() {
            private(apt)?;
        }
        private(&self.archives.join("partial"))?;
        private(&self.lists)
    }
}

/// Resolves `packages` for the image whose apt files are under `root`,
/// downloads what the cache lacks, and returns what dpkg must do in the
/// image: nothing when everything is installed already.
pub fn resolve(
    apt: &AptRoot,
    cache: &AptCache,
    packages: &[String],
) -> Result<Vec<DpkgOp>, AptError> {
    // Lists per set of sources and keys: apt-get update drops lists no
    // source names.
    let lists = cache.lists.join(&apt.key);
    for dir in [lists.join("partial"), cache.archives.join("partial")] {
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    }
    let conf = apt.root.join("apt.conf");
    write_new(
        &conf,
        apt_conf(&apt.root, &lists, &cache.archives).as_bytes(),
    )?;
    // apt's temporary files (gpgv's) stay in the scratch root, where the
    // wall lets it write.
    let tmp = apt.root.join("tmp");
    mkdir(&tmp)?;
    let write = [
        apt.root.as_path(),
        lists.as_path(),
        cache.archives.as_path(),
    ];
    let run = |what, args: &[&str]| apt_get(&apt.root, &conf, &write, what, args);
    run("update", &["update"])?;
    let mut install = vec!["install", "--no-install-recommends", "-y"];
    let mut simulate = install.clone();
    simulate.push("--simulate");
    // Packages are checked by the config; after `--` none is an option.
    let names: Vec<&str> = std::iter::once("--")
        .chain(packages.iter().map(String::as_str))
        .collect();
    simulate.extend(&names);
    let ops = plan_ops(&run("install --simulate", &simulate)?)?;
    if ops.iter().any(|op| matches!(op, DpkgOp::Unpack(_))) {
        install.push("--download-only");
        install.extend(&names);
        run("install --download-only", &install)?;
    }
    for op in &ops {
        if let DpkgOp::Unpack(debs) = op {
            for deb in debs {
                let path = cache.archives.join(deb);
                if !path.is_file() {
                    return Err(AptError::Missing(path));
                }
            }
        }
    }
    Ok(ops)
}

/// apt's whole view of the world, written by cella: every directory it
/// reads is in the scratch `root` (or the shared lists and .deb cache),
/// so neither the host's nor the image's apt.conf.d, auth.conf or keys
/// are read; no hook is set; redirects are not followed (a source could
/// otherwise send apt to an address the user did not grant).
fn apt_conf(root: &Path, lists: &Path, archives: &Path) -> String {
    let r = root.display();
    format!(
        "Dir \"{r}/\";
Dir::Etc \"{r}/etc/\";
Dir::Etc::Main \"apt.conf\";
Dir::Etc::Parts \"apt.conf.d\";
Dir::Etc::SourceList \"sources.list\";
Dir::Etc::SourceParts \"sources.list.d\";
Dir::Etc::Trusted \"trusted.gpg\";
Dir::Etc::TrustedParts \"trusted.gpg.d\";
Dir::Etc::Preferences \"preferences\";
Dir::Etc::PreferencesParts \"preferences.d\";
Dir::Etc::Netrc \"auth.conf\";
Dir::Etc::NetrcParts \"auth.conf.d\";
Dir::State \"{r}/state/\";
Dir::State::Status \"{r}/status\";
Dir::State::extended_states \"{r}/extended_states\";
Dir::State::Lists \"{lists}/\";
Dir::Cache \"{r}/cache/\";
Dir::Cache::Archives \"{archives}/\";
Dir::Log \"{r}/log/\";
Dir::Bin::Methods \"/usr/lib/apt/methods/\";
APT::Architecture \"amd64\";
APT::Architectures {{ \"amd64\"; }};
APT::Sandbox::User \"root\";
Debug::NoLocking \"true\";
Acquire::Languages \"none\";
Acquire::Retries \"3\";
Acquire::http::AllowRedirect \"false\";
Acquire::https::AllowRedirect \"false\";
",
        lists = lists.display(),
        archives = archives.display(),
    )
}

/// Runs the host's apt-get with `conf`, in `root`, behind the helpers'
/// wall (`sandbox::helper`), writing only beneath `write`; its stdout, or
/// its last lines in the error.
fn apt_get(
    root: &Path,
    conf: &Path,
    write: &[&Path],
    what: &'static str,
    args: &[&str],
) -> Result<String, AptError> {
    let mut cmd = Command::new("apt-get");
    helper::confine(&mut cmd, helper::Program::AptGet, write).map_err(AptError::Jail)?;
    let out = cmd
        .arg("-q")
        .args(args)
        .current_dir(root)
        .env("APT_CONFIG", conf)
        .env("TMPDIR", root.join("tmp"))
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => AptError::NoApt,
            _ => AptError::Spawn(e),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    Err(AptError::Failed {
        what,
        tail: lines[lines.len().saturating_sub(6)..]
            .iter()
            .map(|l| escape(l))
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// The dpkg operations of `apt-get install --simulate`'s output:
/// `Inst NAME [OLD] (VERSION ARCHIVE [ARCH])` unpacks `NAME_VERSION_ARCH.deb`
/// (`:` in the version written `%3a`, as apt names its downloads),
/// `Conf NAME (…)` configures and `Remv NAME […]` removes.
fn plan_ops(plan: &str) -> Result<Vec<DpkgOp>, AptError> {
    let mut ops: Vec<DpkgOp> = Vec::new();
    for line in plan.lines() {
        let Some((kind, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some(name) = rest.split_whitespace().next() else {
            continue;
        };
        let name = name.split(':').next().unwrap_or(name).to_owned();
        let op = match kind {
            "Inst" => {
                let Some(deb) = deb_name(&name, rest) else {
                    continue;
                };
                DpkgOp::Unpack(vec![deb])
            }
            "Conf" => DpkgOp::Configure(vec![name]),
            "Remv" => DpkgOp::Remove(vec![name]),
            _ => continue,
        };
        // The names come from the sources' package lists: they become host
        // paths in the cache and words of the build VM's dpkg command.
        let words = match &op {
            DpkgOp::Unpack(w) | DpkgOp::Configure(w) | DpkgOp::Remove(w) => w,
        };
        if let Some(bad) = words.iter().find(|w| !plain_word(w)) {
            return Err(AptError::BadPlan(escape(bad).into_owned()));
        }
        match (ops.last_mut(), op) {
            (Some(DpkgOp::Unpack(a)), DpkgOp::Unpack(b))
            | (Some(DpkgOp::Configure(a)), DpkgOp::Configure(b))
            | (Some(DpkgOp::Remove(a)), DpkgOp::Remove(b)) => a.extend(b),
            (_, op) => ops.push(op),
        }
    }
    Ok(ops)
}

/// A package name or .deb file name as Debian makes them: letters,
/// digits and `.+~%_-`, not starting with `.` or `-`.
fn plain_word(word: &str) -> bool {
    !word.is_empty()
        && word.len() <= 255
        && !word.starts_with(['.', '-'])
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~%_-".contains(&b))
}

fn deb_name(name: &str, rest: &str) -> Option<String> {
    let inner = &rest[rest.find('(')? + 1..rest.rfind(')')?];
    let version = inner.split_whitespace().next()?;
    let arch = inner.rsplit('[').next()?.strip_suffix(']')?;
    Some(format!("{name}_{}_{arch}.deb", version.replace(':', "%3a")))
}

#[cfg(test)]
#[path = "apt_tests.rs"]
mod tests;
