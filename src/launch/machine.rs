//! What a launch is given besides its run spec: the VM's size and network
//! ([`Machine`]), the host-side options of the run ([`LaunchOptions`]), and
//! the virtio-fs server that serves its shares.

use std::time::Duration;

use super::error::LaunchError;
use super::passt::NetPlan;
use crate::config::{Knobs, Limits, Resources};
use crate::devices::virtio::fs::server::{Server, ServerOptions, ShareSpec};

/// The VM when neither the command nor the command line says otherwise.
pub const DEFAULT_CPUS: u32 = 1;
pub const DEFAULT_MEMORY: u64 = 256 << 20;

/// The size of a VM, and its network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub vcpus: u8,
    pub mem_mib: u32,
    /// A NIC backed by passt (`network: user`), or only loopback.
    pub network: Option<NetPlan>,
}

impl Machine {
    /// The command line's choice, else the command's, else the default.
    pub fn resolve(cli: Resources, command: Resources) -> Machine {
        let cpus = cli.cpus.or(command.cpus).unwrap_or(DEFAULT_CPUS);
        let memory = cli.memory.or(command.memory).unwrap_or(DEFAULT_MEMORY);
        Machine {
            vcpus: cpus.clamp(1, u32::from(u8::MAX)) as u8,
            mem_mib: memory.div_ceil(1 << 20).min(u64::from(u32::MAX)) as u32,
            network: None,
        }
    }
}

impl Default for Machine {
    fn default() -> Machine {
        Machine::resolve(Resources::default(), Resources::default())
    }
}

/// How the host side of a launch behaves: from the command line, the
/// settings file and the environment.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// `-v`: the kernel's log and cella's own notes on stderr.
    pub verbose: bool,
    /// `--cold-boot`: boot the kernel instead of restoring a snapshot.
    pub cold_boot: bool,
    /// `--timeout`: how long the workload may run.
    pub timeout: Option<Duration>,
    /// The settings file's `limits`.
    pub limits: Limits,
    pub knobs: Knobs,
    /// The id and digest of the image in each drive, for a run that may
    /// use a warm snapshot (a plain run, or a `!Supervise`; no build).
    pub warm_images: Vec<(String, String)>,
    /// Whether a warm snapshot may hold this run ready (not when its
    /// environment has values from the host).
    pub hold_ready: bool,
}

/// The virtio-fs server of a run: no page cache in the guest (see README),
/// and at most `limits.write` bytes added to the shares.
pub fn fs_server(shares: Vec<ShareSpec>, limits: &Limits) -> Result<Server, LaunchError> {
    let options = ServerOptions {
        direct_io: true,
        timeout: Duration::from_secs(1),
        write_quota: limits.write,
    };
    Server::new(shares, options).map_err(LaunchError::Share)
}
