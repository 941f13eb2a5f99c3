//! `!Install`'s host half. apt on the host resolves the packages against
//! the image's own sources, keys, preferences and dpkg status (copied out
//! of the image tree into a scratch apt root) and downloads what is missing
//! into the shared .deb cache; the build VM then installs exactly those
//! .debs with its own apt-get.
//!
//! Why not `apt-get update` in the guest: under an emulating KVM the guest
//! kernel made apt spend about 4 minutes fetching bookworm's lists and 6
//! more reading them (50 MB of Packages) before it installed anything. The
//! host does both in about 2 seconds, and the lists are cached too.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::debian::AptCache;
use super::erofs::{Kind, Tree};
use super::tree::components;

/// What of the image apt needs: its configuration, sources and keys, the
/// keyrings `signed-by` usually names, and what dpkg has installed.
const APT_ROOT_PATHS: &[&str] = &[
    "etc/apt",
    "usr/share/keyrings",
    "var/lib/dpkg/status",
    "var/lib/apt/extended_states",
];

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

/// Copies the files apt needs out of the image tree (data in `work`) to
/// `root`, following symlinks inside the image.
pub fn export_root(tree: &Tree, work: &File, root: &Path) -> Result<(), AptError> {
    for needed in ["/var/lib/dpkg/status", "/etc/apt"] {
        if lookup(tree, needed.as_bytes()).is_none() {
            return Err(AptError::NotDebian(needed));
        }
    }
    for path in APT_ROOT_PATHS {
        copy_out(
            tree,
            work,
            format!("/{path}").as_bytes(),
            &root.join(path),
            0,
        )?;
    }
    Ok(())
}

/// The inode at `path`, following a symlink in its last component the way
/// the guest would, within the image.
fn lookup(tree: &Tree, path: &[u8]) -> Option<usize> {
    let mut path = path.to_vec();
    for _ in 0..16 {
        let id = tree.lookup(&path)?;
        let Kind::Symlink(target) = &tree.inodes[id].kind else {
            return Some(id);
        };
        path = if target.starts_with(b"/") {
            target.clone()
        } else {
            let parts = components(&path).ok()?;
            let mut base = Vec::new();
            for part in &parts[..parts.len().saturating_sub(1)] {
                base.push(b'/');
                base.extend_from_slice(part);
            }
            base.push(b'/');
            base.extend_from_slice(target);
            base
        };
    }
    None
}

/// Copies the image's `path` (a file, or a directory tree) to `dest`;
/// what is missing, special or nested too deep is left out.
fn copy_out(
    tree: &Tree,
    work: &File,
    path: &[u8],
    dest: &Path,
    depth: u32,
) -> Result<(), AptError> {
    let Some(id) = lookup(tree, path) else {
        return Ok(());
    };
    match &tree.inodes[id].kind {
        Kind::File(data) => {
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(io_err("create", parent))?;
            }
            let mut buf = vec![0u8; data.size as usize];
            work.read_exact_at(&mut buf, data.range().start)
                .map_err(io_err("read the image's copy of", dest))?;
            fs::write(dest, buf).map_err(io_err("write", dest))
        }
        Kind::Dir(entries) if depth < 8 => {
            fs::create_dir_all(dest).map_err(io_err("create", dest))?;
            for name in entries.keys() {
                let mut child = path.to_vec();
                child.push(b'/');
                child.extend_from_slice(name);
                let child_dest = dest.join(OsStr::from_bytes(name));
                copy_out(tree, work, &child, &child_dest, depth + 1)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
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

/// Resolves `packages` for the image whose apt files are under `root`,
/// downloads what the cache lacks, and returns what dpkg must do in the
/// image: nothing when everything is installed already.
pub fn resolve(
    root: &Path,
    cache: &AptCache,
    packages: &[String],
) -> Result<Vec<DpkgOp>, AptError> {
    let sources = point_signed_by_into(root)?;
    // Lists per set of sources: apt-get update drops lists no source names.
    let key = hex::encode(&Sha256::digest(sources.as_bytes())[..8]);
    let lists = cache.lists.join(key);
    for dir in [lists.join("partial"), cache.archives.join("partial")] {
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    }
    for dir in ["var/cache/apt", "var/lib/apt", "var/log/apt"] {
        let dir = root.join(dir);
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    }
    let conf = root.join("apt.conf");
    fs::write(&conf, apt_conf(root, &lists, &cache.archives)).map_err(io_err("write", &conf))?;
    apt_get(&conf, "update", &["update"])?;
    let mut install = vec!["install", "--no-install-recommends", "-y"];
    install.extend(packages.iter().map(String::as_str));
    let mut simulate = install.clone();
    simulate.push("--simulate");
    let ops = plan_ops(&apt_get(&conf, "install --simulate", &simulate)?);
    if ops.iter().any(|op| matches!(op, DpkgOp::Unpack(_))) {
        install.push("--download-only");
        apt_get(&conf, "install --download-only", &install)?;
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

/// apt reads `signed-by` paths as host paths: point those that name a file
/// of the image at its copy under `root`. Returns all the sources' text.
fn point_signed_by_into(root: &Path) -> Result<String, AptError> {
    let mut files = vec![root.join("etc/apt/sources.list")];
    let dir = root.join("etc/apt/sources.list.d");
    if let Ok(entries) = fs::read_dir(&dir) {
        let mut more: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    let prefix = root.display().to_string();
    let mut all = String::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        all.push_str(&text);
        let moved = text
            .replace("signed-by=/", &format!("signed-by={prefix}/"))
            .replace("Signed-By: /", &format!("Signed-By: {prefix}/"));
        if moved != text {
            fs::write(&file, moved).map_err(io_err("write", &file))?;
        }
    }
    Ok(all)
}

/// apt's whole view of the world: the image's files under `root`, and the
/// shared lists and .deb cache.
fn apt_conf(root: &Path, lists: &Path, archives: &Path) -> String {
    let r = root.display();
    format!(
        "Dir \"{r}/\";
Dir::Etc \"{r}/etc/apt/\";
Dir::State \"{r}/var/lib/apt/\";
Dir::State::Status \"{r}/var/lib/dpkg/status\";
Dir::State::Lists \"{lists}/\";
Dir::Cache \"{r}/var/cache/apt/\";
Dir::Cache::Archives \"{archives}/\";
Dir::Log \"{r}/var/log/apt/\";
APT::Architecture \"amd64\";
APT::Architectures {{ \"amd64\"; }};
APT::Sandbox::User \"root\";
Debug::NoLocking \"true\";
Acquire::Languages \"none\";
Acquire::Retries \"3\";
",
        lists = lists.display(),
        archives = archives.display(),
    )
}

/// Runs the host's apt-get with `conf`; its stdout, or its last lines in
/// the error.
fn apt_get(conf: &Path, what: &'static str, args: &[&str]) -> Result<String, AptError> {
    let out = Command::new("apt-get")
        .arg("-q")
        .args(args)
        .env("APT_CONFIG", conf)
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
        tail: lines[lines.len().saturating_sub(6)..].join("\n"),
    })
}

/// The dpkg operations of `apt-get install --simulate`'s output:
/// `Inst NAME [OLD] (VERSION ARCHIVE [ARCH])` unpacks `NAME_VERSION_ARCH.deb`
/// (`:` in the version written `%3a`, as apt names its downloads),
/// `Conf NAME (…)` configures and `Remv NAME […]` removes.
fn plan_ops(plan: &str) -> Vec<DpkgOp> {
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
        match (ops.last_mut(), op) {
            (Some(DpkgOp::Unpack(a)), DpkgOp::Unpack(b))
            | (Some(DpkgOp::Configure(a)), DpkgOp::Configure(b))
            | (Some(DpkgOp::Remove(a)), DpkgOp::Remove(b)) => a.extend(b),
            (_, op) => ops.push(op),
        }
    }
    ops
}

fn deb_name(name: &str, rest: &str) -> Option<String> {
    let inner = &rest[rest.find('(')? + 1..rest.rfind(')')?];
    let version = inner.split_whitespace().next()?;
    let arch = inner.rsplit('[').next()?.strip_suffix(']')?;
    Some(format!("{name}_{}_{arch}.deb", version.replace(':', "%3a")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_plan_becomes_dpkg_steps_in_apts_order() {
        let plan = "NOTE: This is only a simulation!
Inst libssl3 (3.0.22-1~deb12u2 Debian-Security:12/oldstable-security [amd64])
Inst passwd [1:4.13+dfsg1-1] (1:4.13+dfsg1-1+deb12u2 Debian:12.15/oldstable [amd64])
Conf libssl3 (3.0.22-1~deb12u2 Debian-Security:12/oldstable-security [amd64])
Conf passwd (1:4.13+dfsg1-1+deb12u2 Debian:12.15/oldstable [amd64])
Remv old-thing [1.0]
Inst tzdata (2026b-0+deb12u1 Debian:12.15/oldstable [all])
Conf tzdata (2026b-0+deb12u1 Debian:12.15/oldstable [all])
";
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            plan_ops(plan),
            [
                DpkgOp::Unpack(strings(&[
                    "libssl3_3.0.22-1~deb12u2_amd64.deb",
                    "passwd_1%3a4.13+dfsg1-1+deb12u2_amd64.deb"
                ])),
                DpkgOp::Configure(strings(&["libssl3", "passwd"])),
                DpkgOp::Remove(strings(&["old-thing"])),
                DpkgOp::Unpack(strings(&["tzdata_2026b-0+deb12u1_all.deb"])),
                DpkgOp::Configure(strings(&["tzdata"])),
            ]
        );
    }

    #[test]
    fn signed_by_paths_point_into_the_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("etc/apt/sources.list.d")).expect("mkdir");
        fs::write(
            root.join("etc/apt/sources.list.d/x.list"),
            "deb [signed-by=/usr/share/keyrings/x.gpg] http://x/ y main\n",
        )
        .expect("write");
        fs::write(
            root.join("etc/apt/sources.list.d/z.sources"),
            "Types: deb\nSigned-By: /usr/share/keyrings/z.gpg\n",
        )
        .expect("write");
        let all = point_signed_by_into(root).expect("rewrite");
        assert!(all.contains("signed-by=/usr/share/keyrings/x.gpg"));
        let x = fs::read_to_string(root.join("etc/apt/sources.list.d/x.list")).expect("read");
        assert!(x.contains(&format!(
            "signed-by={}/usr/share/keyrings/x.gpg",
            root.display()
        )));
        let z = fs::read_to_string(root.join("etc/apt/sources.list.d/z.sources")).expect("read");
        assert!(z.contains(&format!(
            "Signed-By: {}/usr/share/keyrings/z.gpg",
            root.display()
        )));
    }
}
