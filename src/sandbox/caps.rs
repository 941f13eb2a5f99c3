//! A VM's process gives up privilege before the guest runs: where it is
//! root it moves into namespaces of its own (mount, IPC, UTS, network,
//! cgroup; not PID: a process whose next child would be in another PID
//! namespace cannot start threads), then it drops every capability of every
//! set, locks root out of getting them back, and sets no-new-privs.
//!
//! The VM needs none of it: its disks, shares and passt's socket are
//! open before the fork, /dev/kvm is opened through its mode bits, and
//! the cache files it writes are its user's. The price, under root: the
//! virtio-fs server then has only the permission bits a file gives root
//! as its owner, group or other (no `CAP_DAC_OVERRIDE`), so a project
//! owned by another user is read and written as that user allows root.

use caps::CapSet;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot move the VM's process into namespaces of its own")]
    Unshare(#[source] std::io::Error),
    #[error("cannot drop the VM process's capabilities ({0})")]
    Caps(String),
    #[error("cannot set no-new-privs")]
    NoNewPrivs(#[source] std::io::Error),
}

/// The securebits that keep a uid-0 process from regaining capabilities
/// through execve or a uid change, each locked.
pub(super) const LOCKED_NOROOT: libc::c_ulong = 0x3f;

/// Drops what a VM's process does not need; once, in its only thread,
/// before any other thread starts (capabilities are per thread, and a new
/// thread inherits its creator's).
pub fn drop_privileges() -> Result<(), PrivilegeError> {
    let root =
        caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap_or(false);
    if root {
        let flags = libc::CLONE_NEWNS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWCGROUP;
        // SAFETY: unshare takes flags and touches no memory of ours.
        if unsafe { libc::unshare(flags) } != 0 {
            return Err(PrivilegeError::Unshare(std::io::Error::last_os_error()));
        }
    }
    let setpcap =
        caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false);
    if setpcap {
        // SAFETY: prctl(PR_SET_SECUREBITS) takes an integer.
        if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, LOCKED_NOROOT) } != 0 {
            return Err(PrivilegeError::Caps(format!(
                "securebits: {}",
                std::io::Error::last_os_error()
            )));
        }
        caps::clear(None, CapSet::Bounding).map_err(|e| PrivilegeError::Caps(e.to_string()))?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| PrivilegeError::Caps(e.to_string()))?;
    }
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) takes integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(PrivilegeError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line of /proc/self/status, such as "CapEff".
    fn status(field: &str) -> String {
        let text = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .unwrap()
            .trim()
            .to_owned()
    }

    #[test]
    fn a_vm_process_keeps_no_capability_and_no_way_back() {
        let seen: Vec<String> = super::super::in_child(&[], || {
            drop_privileges().map_err(|e| super::super::ChainError::of(&e))?;
            Ok(["CapEff", "CapPrm", "CapInh", "CapAmb", "NoNewPrivs"]
                .iter()
                .map(|f| status(f))
                .collect())
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                "0000000000000000",
                "0000000000000000",
                "0000000000000000",
                "0000000000000000",
                "1"
            ]
        );
    }
}
