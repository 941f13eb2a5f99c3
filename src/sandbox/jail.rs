//! The VM's process's filesystem jail, by Landlock (the `landlock` crate,
//! by Landlock's maintainers): once confined, it can open only what a run
//! needs, whatever a taken-over thread asks for.
//!
//! - the guest kernel and guest-init, to read (a cold boot);
//! - `/dev/kvm`, to read, write and ioctl;
//! - its own `/proc/self`, to read (memory figures, the pagemap a
//!   snapshot is saved with);
//! - the cache's snapshot directories, to read and write beneath;
//! - the virtio-fs shares, to read and write beneath (the server itself
//!   refuses writes to a read-only share), by the fds it serves them from.
//!
//! Fds opened before the jail (disks, passt's socket, the terminal) stay
//! usable, as Landlock leaves them alone. Landlock also keeps the process
//! from signalling any process outside it where the kernel can (ABI 6).
//! Confined once, in the process's only thread: threads started later
//! inherit the jail.

use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use landlock::{
    Access, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};

/// The newest Landlock this code asks for; older kernels give what they
/// have (best effort), and [`confine`] says how much.
pub(super) const WANTED: ABI = ABI::V6;

/// What the VM's process may open.
pub struct Jail<'a> {
    /// Files to read by path.
    pub read: Vec<PathBuf>,
    /// Directories to read and write beneath.
    pub write: Vec<PathBuf>,
    /// Open directories to read and write beneath.
    pub shares: Vec<BorrowedFd<'a>>,
}

/// How far the kernel confined the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Confined {
    Fully,
    /// Landlock is there, but older than what cella asks for.
    Partly,
    /// This kernel has no Landlock (or it is disabled).
    Not,
}

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("cannot open {} for the VM process's Landlock rules", .0.display())]
    Open(PathBuf, #[source] landlock::PathFdError),
    #[error("cannot confine the VM's process with Landlock")]
    Ruleset(#[source] landlock::RulesetError),
}

/// Confines the calling thread, and the threads it starts later, to `jail`.
pub fn confine(jail: &Jail<'_>) -> Result<Confined, JailError> {
    let all = AccessFs::from_all(WANTED);
    let read_file: BitFlags<AccessFs> = AccessFs::ReadFile.into();
    let open = |path: &PathBuf| PathFd::new(path).map_err(|e| JailError::Open(path.clone(), e));
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .and_then(|r| r.scope(Scope::Signal))
        .and_then(|r| r.create())
        .map_err(JailError::Ruleset)?;
    let mut rules: Vec<(PathFd, BitFlags<AccessFs>)> = Vec::new();
    for path in &jail.read {
        rules.push((open(path)?, read_file));
    }
    let kvm = PathBuf::from("/dev/kvm");
    if kvm.exists() {
        rules.push((
            open(&kvm)?,
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev,
        ));
    }
    rules.push((
        open(&PathBuf::from("/proc/self"))?,
        AccessFs::from_read(WANTED),
    ));
    for path in &jail.write {
        rules.push((open(path)?, all));
    }
    for (fd, access) in rules {
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(JailError::Ruleset)?;
    }
    for fd in &jail.shares {
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, all))
            .map_err(JailError::Ruleset)?;
    }
    let status = ruleset.restrict_self().map_err(JailError::Ruleset)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Confined::Fully,
        RulesetStatus::PartiallyEnforced => Confined::Partly,
        RulesetStatus::NotEnforced => Confined::Not,
    })
}
