//! Debian containers: `!Debian` makes the root with mmdebstrap on the host
//! (rootless, in a user namespace); `!Install` has the host's apt resolve
//! and download (`apt`) and dpkg install in a build VM. Both keep the .debs
//! in one cache under the user's cache directory, shared by every
//! container and rebuild. The mirror cella.yaml names is a strict URL
//! (checked by the config), its host an address the user grants, and
//! every value reaches mmdebstrap's argv after `--` or as a checked option.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::os::unix::fs::DirBuilderExt;

use super::apt::{AptCache, DpkgOp};
use super::shell::shell_words;
use crate::config::netpolicy::{AddressGuard, HttpUrl};
use crate::config::{DebianStep, DEFAULT_DEBIAN_MIRROR};
use crate::sandbox::helper;

/// Where `!Install`'s build VM finds the shared .deb cache.
pub const GUEST_ARCHIVES: &str = "/var/cache/apt/archives";

/// Where `!Install` records what it installed, one `package=version` per
/// line, sorted: the image's package lock.
pub const PACKAGE_LOCK: &str = "/var/lib/cella/packages.lock";

/// Files that hold the time of the install, not what was installed:
/// removed after `!Install` as mmdebstrap does after a bootstrap, so that
/// rebuilding gives the same image.
const UNREPRODUCIBLE: &[&str] = &[
    "/var/log/dpkg.log",
    "/var/log/apt/history.log",
    "/var/log/apt/term.log",
    "/var/log/alternatives.log",
    "/var/cache/ldconfig/aux-cache",
    "/var/log/apt/eipp.log.xz",
];

/// The program of `!Install` in its build VM: dpkg does what the host's
/// apt planned (`ops`, see `apt`) with the .debs of the shared cache, in
/// one dpkg run per step of the plan: a process costs seconds in an
/// emulated guest, and apt-get itself (plus debconf's Perl preconfigure
/// hook) took minutes there before dpkg started. The packages apt pulled
/// in are marked automatically installed, as apt-get would; then the lock
/// is written and what changes with the clock removed.
pub fn install_argv(ops: &[DpkgOp], requested: &[String]) -> Vec<String> {
    let mut script = String::from("export DEBIAN_FRONTEND=noninteractive\n");
    script.push_str(&format!("cd {GUEST_ARCHIVES}\n"));
    let mut auto = Vec::new();
    match ops {
        // The usual plan: one dpkg run unpacks and configures.
        [DpkgOp::Unpack(debs), DpkgOp::Configure(_)] => {
            script.push_str(&format!(
                "dpkg --force-unsafe-io -i {}\n",
                shell_words(debs)
            ));
        }
        _ => {
            for op in ops {
                let (action, words) = match op {
                    DpkgOp::Unpack(debs) => ("--unpack", debs),
                    DpkgOp::Configure(names) => ("--configure", names),
                    DpkgOp::Remove(names) => ("--remove", names),
                };
                script.push_str(&format!(
                    "dpkg --force-unsafe-io {action} {}\n",
                    shell_words(words)
                ));
            }
        }
    }
    let wanted: Vec<&str> = requested
        .iter()
        .map(|p| p.split(['=', '/', ':']).next().unwrap_or(p))
        .collect();
    for op in ops {
        if let DpkgOp::Unpack(debs) = op {
            for deb in debs {
                let name = deb.split('_').next().unwrap_or(deb);
                if !wanted.contains(&name) {
                    auto.push(name);
                }
            }
        }
    }
    if !auto.is_empty() {
        script.push_str("mkdir -p /var/lib/apt\ncat >> /var/lib/apt/extended_states <<'EOF'\n");
        for name in auto {
            script.push_str(&format!(
                "Package: {name}\nArchitecture: amd64\nAuto-Installed: 1\n\n"
            ));
        }
        script.push_str("EOF\n");
    }
    let lock_dir = Path::new(PACKAGE_LOCK)
        .parent()
        .map_or("/".into(), |p| p.display().to_string());
    script.push_str(&format!(
        "mkdir -p {lock_dir}
dpkg-query -W -f '${{binary:Package}}=${{Version}}\\n' | LC_ALL=C sort > {PACKAGE_LOCK}
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin {}
",
        UNREPRODUCIBLE.join(" ")
    ));
    vec!["/bin/sh".into(), "-ec".into(), script]
}

/// The most package names [`installed`] returns, in bytes: a real
/// image's list is tens of KiB, and it goes into image.json and cella.lock.
const MAX_PACKAGES_LEN: usize = 2 << 20;

/// The packages a dpkg status file says are installed, as dpkg-query's
/// `${binary:Package}=${Version}` (arch-qualified when Multi-Arch: same or
/// of another architecture), sorted. An image's status is the image's
/// word: a list longer than 2 MiB ends with a `…` entry.
pub fn installed(status: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(status);
    let mut out = Vec::new();
    let mut len = 0;
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(str::trim)
            })
        };
        let (Some(name), Some(version), Some(status)) =
            (field("Package"), field("Version"), field("Status"))
        else {
            continue;
        };
        if status.split_whitespace().nth(2) != Some("installed") {
            continue;
        }
        let arch = field("Architecture").unwrap_or("all");
        let qualified = field("Multi-Arch") == Some("same") || !["all", "amd64"].contains(&arch);
        let entry = if qualified {
            format!("{name}:{arch}={version}")
        } else {
            format!("{name}={version}")
        };
        len += entry.len() + 4;
        if len > MAX_PACKAGES_LEN {
            out.sort();
            out.push("…".to_owned());
            return out;
        }
        out.push(entry);
    }
    out.sort();
    out
}

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("!Debian needs mmdebstrap on the host: install it with `apt-get install mmdebstrap`")]
    NoMmdebstrap,
    #[error("cannot find the user's cache directory for the package cache (set HOME or CELLA_CACHE_DIR)")]
    NoCache,
    #[error("cannot create the package cache {}", .0.display())]
    Cache(PathBuf, #[source] std::io::Error),
    #[error("cannot create mmdebstrap's scratch directory {}", .0.display())]
    Scratch(PathBuf, #[source] std::io::Error),
    #[error("cannot start mmdebstrap")]
    Spawn(#[source] std::io::Error),
    #[error("cannot wall in mmdebstrap on the host")]
    Jail(#[source] crate::sandbox::jail::JailError),
    #[error("mmdebstrap failed ({status}); its last lines:\n{tail}")]
    Failed { status: String, tail: String },
    #[error("the !Debian mirror is refused: {0}")]
    Mirror(String),
}

/// Makes the root of `step` as a tarball at `out`, with mmdebstrap in a
/// user namespace, reading and filling the shared .deb cache under the
/// user's cache directory `cache_dir`. The mirror's host must be an
/// address `guard` permits.
pub fn bootstrap(
    step: &DebianStep,
    epoch: i64,
    out: &Path,
    guard: &AddressGuard,
    cache_dir: Option<&Path>,
) -> Result<(), DebianError> {
    let mirror = step.mirror.as_deref().unwrap_or(DEFAULT_DEBIAN_MIRROR);
    HttpUrl::parse(mirror)
        .and_then(|url| url.check_reachable(guard))
        .map_err(DebianError::Mirror)?;
    let cache = cache_dir
        .map(AptCache::in_cache_dir)
        .ok_or(DebianError::NoCache)?;
    cache
        .create()
        .map_err(|e| DebianError::Cache(cache.archives.clone(), e))?;
    // Its chroot is made in a directory of ours beside the tarball, where
    // the wall lets it write.
    let scratch = out.parent().unwrap_or(Path::new("."));
    let tmp = scratch.join("mmdebstrap-tmp");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(|e| DebianError::Scratch(tmp.clone(), e))?;
    let mut cmd = mmdebstrap(step, mirror, out, &cache.archives);
    cmd.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("TMPDIR", &tmp);
    helper::confine(
        &mut cmd,
        helper::Program::Mmdebstrap,
        &[scratch, cache.archives.as_path()],
    )
    .map_err(DebianError::Jail)?;
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DebianError::NoMmdebstrap,
        _ => DebianError::Spawn(e),
    })?;
    // Its progress goes to our stderr as it comes; the tail stays for an error.
    let mut tail = Vec::new();
    if let Some(mut err) = child.stderr.take() {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            eprint!("{}", String::from_utf8_lossy(&buf[..n]));
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 8192 {
                tail.drain(..tail.len() - 4096);
            }
        }
    }
    let status = child.wait().map_err(DebianError::Spawn)?;
    let _ = std::fs::remove_dir(&tmp);
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<&str> = text.lines().collect();
    Err(DebianError::Failed {
        status: status.to_string(),
        tail: lines[lines.len().saturating_sub(5)..].join("\n"),
    })
}

/// mmdebstrap's command line for `step`, with the .deb cache at
/// `archives`: the variant is one of a fixed list and the suite a checked
/// name, and the suite, the target and the mirror come after `--`. apt in
/// mmdebstrap follows no redirect, which could lead it to an address the
/// user did not grant. The hooks are cella's; the cache is the user's.
fn mmdebstrap(step: &DebianStep, mirror: &str, out: &Path, archives: &Path) -> Command {
    let archives = archives.display();
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg("--mode=unshare")
        .arg(format!("--variant={}", step.variant))
        .arg("--format=tar")
        // Landlock forbids mounts (see `sandbox::helper`); the essential
        // packages' scripts need none (minbase: the same bytes, checked).
        .arg("--skip=chroot/mount")
        .arg("--aptopt=Acquire::http::AllowRedirect \"false\"")
        .arg("--aptopt=Acquire::https::AllowRedirect \"false\"")
        // sync-in fills the archive directory before the download, and
        // the essential .debs are kept there (mmdebstrap deletes them after
        // installing otherwise) for sync-out to put into the cache.
        .arg("--skip=download/empty")
        .arg("--skip=essential/unlink")
        .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
        .arg(format!(
            "--setup-hook=sync-in {archives} /var/cache/apt/archives/"
        ))
        // apt in the root gives partial/ to its _apt user: copied out, it
        // would be another user's directory in the user's cache.
        .arg("--customize-hook=rm -rf \"$1\"/var/cache/apt/archives/partial")
        .arg(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {archives}"
        ))
        .arg("--")
        .arg(&step.suite)
        .arg(out)
        .arg(mirror)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_lists_what_dpkg_query_would() {
        let status = b"Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nMulti-Arch: same\nVersion: 1:1.2.13\n\n\
Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\n\
Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\n\n\
Package: no-version\nStatus: install ok installed\n";
        assert_eq!(
            installed(status),
            ["base-files=12.4+deb12u5", "zlib1g:amd64=1:1.2.13"]
        );
        let mut many = Vec::new();
        for i in 0..100_000 {
            many.extend_from_slice(
                format!("Package: p{i:0>40}\nStatus: install ok installed\nVersion: 1\n\n")
                    .as_bytes(),
            );
        }
        let list = installed(&many);
        assert_eq!(list.last().map(String::as_str), Some("…"));
        assert!(list.iter().map(|p| p.len() + 4).sum::<usize>() <= MAX_PACKAGES_LEN + 8);
    }

    #[test]
    fn mmdebstrap_gets_values_after_the_options() {
        let step = DebianStep {
            suite: "bookworm".into(),
            variant: "minbase".into(),
            mirror: None,
        };
        let cmd = mmdebstrap(
            &step,
            DEFAULT_DEBIAN_MIRROR,
            Path::new("/o/debian.tar"),
            Path::new("/cache"),
        );
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let dashes = args.iter().position(|a| a == "--").expect("--");
        assert_eq!(
            args[dashes + 1..],
            ["bookworm", "/o/debian.tar", "http://deb.debian.org/debian"]
        );
        assert!(
            args[..dashes].iter().all(|a| a.starts_with("--")),
            "{args:?}"
        );
        assert!(args.contains(&"--aptopt=Acquire::http::AllowRedirect \"false\"".to_owned()));
    }

    #[test]
    fn a_mirror_the_user_did_not_grant_is_refused_before_mmdebstrap() {
        let step = DebianStep {
            suite: "bookworm".into(),
            variant: "minbase".into(),
            mirror: Some("http://127.0.0.1:3142/debian".into()),
        };
        let guard = AddressGuard::with_host_addresses(&[], Vec::new());
        let e = bootstrap(&step, 0, Path::new("/nonexistent/x.tar"), &guard, None).unwrap_err();
        assert!(matches!(e, DebianError::Mirror(_)), "{e}");
        assert!(
            e.to_string().contains("127.0.0.1 is a loopback address"),
            "{e}"
        );
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn valid_sh(script: &str) {
        let status = std::process::Command::new("sh")
            .args(["-n", "-c", script])
            .status()
            .expect("sh");
        assert!(status.success(), "{script}");
    }

    #[test]
    fn install_runs_dpkg_once_for_a_plain_plan() {
        let ops = [
            DpkgOp::Unpack(strings(&["hello_2.10-3_amd64.deb", "libx_1%3a2_amd64.deb"])),
            DpkgOp::Configure(strings(&["hello", "libx"])),
        ];
        let argv = install_argv(&ops, &strings(&["hello"]));
        assert_eq!(argv[..2], ["/bin/sh", "-ec"]);
        let script = &argv[2];
        assert!(script.contains(
            "cd /var/cache/apt/archives\ndpkg --force-unsafe-io -i hello_2.10-3_amd64.deb libx_1%3a2_amd64.deb\n"
        ));
        assert_eq!(script.matches("dpkg --force").count(), 1);
        // Only what apt pulled in is marked automatic.
        assert!(script.contains("Package: libx\nArchitecture: amd64\nAuto-Installed: 1\n"));
        assert!(!script.contains("Package: hello"));
        assert!(script.contains("${binary:Package}=${Version}\\n"));
        assert!(script.contains("> /var/lib/cella/packages.lock"));
        assert!(script.contains("/var/log/dpkg.log"));
        valid_sh(script);
    }

    #[test]
    fn install_follows_a_staged_plan_and_nothing_to_do_writes_the_lock() {
        let ops = [
            DpkgOp::Unpack(strings(&["a_1_amd64.deb"])),
            DpkgOp::Configure(strings(&["a"])),
            DpkgOp::Remove(strings(&["old"])),
            DpkgOp::Unpack(strings(&["b_1_all.deb"])),
            DpkgOp::Configure(strings(&["b"])),
        ];
        let script = &install_argv(&ops, &strings(&["b=1"]))[2];
        let dpkg: Vec<&str> = script
            .lines()
            .filter(|l| l.starts_with("dpkg --"))
            .collect();
        assert_eq!(
            dpkg,
            [
                "dpkg --force-unsafe-io --unpack a_1_amd64.deb",
                "dpkg --force-unsafe-io --configure a",
                "dpkg --force-unsafe-io --remove old",
                "dpkg --force-unsafe-io --unpack b_1_all.deb",
                "dpkg --force-unsafe-io --configure b",
            ]
        );
        assert!(script.contains("Package: a\n") && !script.contains("Package: b\n"));
        valid_sh(script);
        let nothing = &install_argv(&[], &strings(&["a"]))[2];
        assert!(!nothing.contains("dpkg --force") && !nothing.contains("extended_states"));
        assert!(nothing.contains("packages.lock"));
        valid_sh(nothing);
    }
}
