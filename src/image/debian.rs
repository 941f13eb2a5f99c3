//! Debian containers: `!Debian` makes the root with mmdebstrap on the host
//! (rootless, in a user namespace), and `!Install` runs apt-get in a build
//! VM. Both keep the .debs in one cache under the user's cache directory,
//! shared by every container and rebuild.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::{DebianStep, DEFAULT_DEBIAN_MIRROR};

/// Where the shared apt cache lives: `archives/` holds the .debs.
pub fn apt_cache() -> Option<AptCache> {
    let root = crate::snapshot::cache_dir()?.join("apt");
    Some(AptCache {
        archives: root.join("archives"),
    })
}

pub struct AptCache {
    pub archives: PathBuf,
}

impl AptCache {
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.archives.join("partial"))
    }
}

/// Where `!Install` finds the shared .deb cache in its build VM. The
/// package lists stay in the VM's memory: written through virtio-fs, the
/// 46 MB of bookworm's Packages took longer than the whole install, and
/// they are removed before the root is exported.
pub const GUEST_ARCHIVES: &str = "/var/cache/apt/archives";

/// Where `!Install` records what it installed, one `package=version` per
/// line, sorted: the image's package lock.
pub const PACKAGE_LOCK: &str = "/var/lib/cella/packages.lock";

/// apt-key's `verify` as gpgv alone, which is what apt does itself from
/// 2.9 on. bookworm's apt runs the apt-key shell script for every
/// signature, and its dozens of processes take minutes in an emulated
/// guest kernel. Keyrings: the ones apt names (`signed-by`), else the
/// binary ones apt trusts and the Debian archive's.
const APT_KEY_VERIFY: &str = r#"#!/bin/sh
keyrings=
while [ $# -gt 0 ]; do
    case "$1" in
    --quiet|--readonly) shift ;;
    --keyring) keyrings="$keyrings --keyring $2"; shift 2 ;;
    verify) shift; break ;;
    *) exec /usr/bin/apt-key "$@" ;;
    esac
done
if [ -z "$keyrings" ]; then
    for k in /etc/apt/trusted.gpg /etc/apt/trusted.gpg.d/*.gpg /usr/share/keyrings/debian-archive-keyring.gpg; do
        [ -f "$k" ] && keyrings="$keyrings --keyring $k"
    done
fi
exec gpgv $keyrings "$@"
"#;

/// The program of `!Install PACKAGES` in its build VM.
pub fn install_argv(packages: &[String]) -> Vec<String> {
    let script = format!(
        "export DEBIAN_FRONTEND=noninteractive
cat > /tmp/cella-apt-key <<'EOF'
{APT_KEY_VERIFY}EOF
chmod 755 /tmp/cella-apt-key
apt='apt-get -q -o APT::Sandbox::User=root -o Dir::Bin::apt-key=/tmp/cella-apt-key -o Acquire::Languages=none -o Dpkg::Use-Pty=0 -o Acquire::Retries=3'
$apt update
$apt install -y --no-install-recommends \"$@\"
mkdir -p {lock_dir}
dpkg-query -W -f '${{binary:Package}}=${{Version}}\\n' | LC_ALL=C sort > {PACKAGE_LOCK}
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin",
        lock_dir = Path::new(PACKAGE_LOCK)
            .parent()
            .map_or("/".into(), |p| p.display().to_string()),
    );
    let mut argv = vec!["/bin/sh".into(), "-ec".into(), script, "install".into()];
    argv.extend(packages.iter().cloned());
    argv
}

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("!Debian needs mmdebstrap on the host: install it with `apt-get install mmdebstrap`")]
    NoMmdebstrap,
    #[error("cannot find the user's cache directory for the package cache (set HOME or CELLA_CACHE_DIR)")]
    NoCache,
    #[error("cannot create the package cache {}", .0.display())]
    Cache(PathBuf, #[source] std::io::Error),
    #[error("cannot start mmdebstrap")]
    Spawn(#[source] std::io::Error),
    #[error("mmdebstrap failed ({status}); its last lines:\n{tail}")]
    Failed { status: String, tail: String },
}

/// Makes the root of `step` as a tarball at `out`, with mmdebstrap in a
/// user namespace, reading and filling the shared .deb cache.
pub fn bootstrap(step: &DebianStep, epoch: i64, out: &Path) -> Result<(), DebianError> {
    let cache = apt_cache().ok_or(DebianError::NoCache)?;
    cache
        .create()
        .map_err(|e| DebianError::Cache(cache.archives.clone(), e))?;
    let archives = cache.archives.display().to_string();
    let mirror = step.mirror.as_deref().unwrap_or(DEFAULT_DEBIAN_MIRROR);
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg("--mode=unshare")
        .arg(format!("--variant={}", step.variant))
        .arg("--format=tar")
        .arg("--skip=download/empty")
        .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
        .arg(format!(
            "--setup-hook=sync-in {archives} /var/cache/apt/archives/"
        ))
        .arg(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {archives}"
        ))
        .arg(&step.suite)
        .arg(out)
        .arg(mirror)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_passes_packages_as_arguments() {
        let argv = install_argv(&["python3-minimal".into(), "curl".into()]);
        assert_eq!(argv[..2], ["/bin/sh", "-ec"]);
        assert_eq!(argv[3..], ["install", "python3-minimal", "curl"]);
        assert!(argv[2].contains("install -y --no-install-recommends \"$@\""));
        assert!(argv[2].contains("${binary:Package}=${Version}\\n"));
        assert!(argv[2].contains("> /var/lib/cella/packages.lock"));
        assert!(argv[2].contains("-o Dir::Bin::apt-key=/tmp/cella-apt-key"));
        // The script and the apt-key stand-in it writes are valid sh.
        let status = std::process::Command::new("sh")
            .args(["-n", "-c", &argv[2]])
            .status()
            .expect("sh");
        assert!(status.success(), "{}", argv[2]);
        let status = std::process::Command::new("sh")
            .args(["-n", "-c", APT_KEY_VERIFY])
            .status()
            .expect("sh");
        assert!(status.success());
        println!("{}", argv[2]);
    }
}
