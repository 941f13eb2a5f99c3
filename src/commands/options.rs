//! The command line's options that shape a run ([`RunOptions`]), with the
//! settings file's and the environment's values folded in by `main`, and
//! what they make of a VM: its size and network, and the host side of its
//! launch.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use super::environ::CliEnviron;
use crate::config::{Knobs, Limits, Network, NetworkPolicy, PortMap, Registries, Resources};
use crate::launch::passt::NetPlan;
use crate::launch::{LaunchOptions, Machine};

/// Options from the command line that shape a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub verbose: bool,
    /// Boot the kernel instead of restoring a snapshot.
    pub cold_boot: bool,
    /// Run in the last image built for the container, never build.
    pub no_build: bool,
    /// Host directories outside the project that binds may name (from
    /// `--allow-host-path` and the settings file).
    pub allow_host_paths: Vec<PathBuf>,
    /// Set while a persistent volume's init command fills it.
    pub volume_init: Option<VolumeInit>,
    /// `-e` and `-E`.
    pub environ: CliEnviron,
    /// `--timeout`: how long the command may run in its VM.
    pub timeout: Option<Duration>,
    /// `--cpus` and `--memory`, over the command's.
    pub resources: Resources,
    pub no_prerequisites: bool,
    /// `--network`, over the command's.
    pub network: Option<Network>,
    /// `--publish-address`: where `ports` are published (default 127.0.0.1).
    pub publish_address: Option<Ipv4Addr>,
    /// The settings file's `network`, with `--allow-address` added.
    pub network_policy: NetworkPolicy,
    /// The settings file's `limits`.
    pub limits: Limits,
    /// The settings file's `registries`.
    pub registries: Registries,
    /// `_build --pull`: resolve registry tags again.
    pub pull: bool,
    /// The environment's `CELLA_*` knobs, read once at start.
    pub knobs: Knobs,
}

/// A persistent volume being filled by its init command: the command's
/// run mounts `.cella/volumes/<dir>` wherever the volume `name` is wanted.
#[derive(Debug, Clone)]
pub struct VolumeInit {
    pub name: String,
    pub target: String,
    /// The name of the directory being filled, in `.cella/volumes/`.
    pub dir: String,
}

impl RunOptions {
    /// The host side of a launch under these options.
    pub fn launch(&self) -> LaunchOptions {
        LaunchOptions {
            verbose: self.verbose,
            cold_boot: self.cold_boot,
            timeout: self.timeout,
            limits: self.limits,
            knobs: self.knobs.clone(),
            warm_images: Vec::new(),
            hold_ready: !super::environ::passes_host_values(
                &self.environ,
                &super::environ::host_environment(),
            ),
        }
    }

    /// The VM of a command that asks for `resources` and `network`,
    /// publishing `ports`.
    pub fn machine(&self, resources: Resources, network: Network, ports: &[PortMap]) -> Machine {
        Machine {
            network: self.net_plan(network, ports),
            ..Machine::resolve(self.resources, resources)
        }
    }

    /// The network a command that asks for `network` gets, unless
    /// `--network` says otherwise; none if the settings forbid it
    /// (`netcheck` has refused such a command already: this is the
    /// backstop).
    pub fn net_plan(&self, network: Network, ports: &[PortMap]) -> Option<NetPlan> {
        let user = match self.network {
            Some(cli) => cli == Network::User,
            None => network == Network::User && self.network_policy.allow,
        };
        user.then(|| NetPlan {
            // `--network none` over a command with ports: nothing to publish to.
            ports: ports.to_vec(),
            publish: self.publish_address.unwrap_or(Ipv4Addr::LOCALHOST),
            allow: self.network_policy.allow_addresses.clone(),
        })
    }
}
