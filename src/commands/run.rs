//! `cella CMD` and `cella _run CONTAINER PROG`: resolve the image, boot a
//! VM for it and run the workload there.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use guest_init::{Mount, RunSpec, WinSize};

use super::environ::{self, CliEnviron};
use super::volumes::{self, VolumeInit};
use super::{start, CommandError, Project};
use crate::config::{
    CommandKind, Config, Limits, Network, NetworkPolicy, PortMap, Resources, SimpleCommand,
    WriteMode,
};
use crate::devices::virtio::fs::server::{Server, ServerOptions, ShareSpec};
use crate::guest::GuestError;
use crate::image::build::BuildError;
use crate::image::store::Image;
use crate::net::NetPlan;
use crate::vmm::VmError;

/// The VM when neither the command nor the command line says otherwise.
pub const DEFAULT_CPUS: u32 = 1;
pub const DEFAULT_MEMORY: u64 = 256 << 20;

/// Hostname when neither the command nor its container names one.
const DEFAULT_HOSTNAME: &str = "cella";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error(
        "cannot find the guest {what}: set {env} or install it beside the cella binary as {file}"
    )]
    MissingAsset {
        what: &'static str,
        env: &'static str,
        file: &'static str,
    },
    #[error("cannot read {}", .0.display())]
    ReadAsset(PathBuf, #[source] std::io::Error),
    #[error("cannot start the VM")]
    Vm(#[from] VmError),
    #[error("cannot share a host directory with the guest")]
    Share(#[source] std::io::Error),
    #[error(transparent)]
    Guest(#[from] GuestError),
}

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
}

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

    /// With the network the command asked for, unless `--network` says
    /// otherwise; none if the settings forbid it (`netcheck` has refused
    /// such a command already: this is the backstop).
    pub fn with_network(mut self, opts: &RunOptions, network: Network, ports: &[PortMap]) -> Self {
        let user = match opts.network {
            Some(cli) => cli == Network::User,
            None => network == Network::User && opts.network_policy.allow,
        };
        self.network = user.then(|| NetPlan {
            // `--network none` over a command with ports: nothing to publish to.
            ports: ports.to_vec(),
            publish: opts.publish_address.unwrap_or(Ipv4Addr::LOCALHOST),
            allow: opts.network_policy.allow_addresses.clone(),
        });
        self
    }
}

impl Default for Machine {
    fn default() -> Machine {
        Machine::resolve(Resources::default(), Resources::default())
    }
}

/// `cella NAME ARGS...`: the command's prerequisites, then the command.
pub fn command(
    config: &Config,
    name: &str,
    args: &[String],
    opts: &RunOptions,
) -> Result<i32, CommandError> {
    lookup(config, name)?;
    super::netcheck::command(config, name, opts)?;
    if !opts.no_prerequisites {
        for pre in prerequisites(config, name) {
            let status = run_one(config, &pre, &[], opts)?;
            if status != 0 {
                eprintln!(
                    "cella: prerequisite \"{pre}\" of \"{name}\" exited with status {status}"
                );
                return Ok(status);
            }
        }
    }
    run_one(config, name, args, opts)
}

fn lookup<'c>(config: &'c Config, name: &str) -> Result<&'c CommandKind, CommandError> {
    config
        .commands
        .get(name)
        .map(|c| &c.kind)
        .ok_or_else(|| CommandError::UnknownCommand {
            name: name.to_string(),
            config: config.path.clone(),
        })
}

/// What must run before `name`, in order: each prerequisite after its own,
/// each command once, `name` itself never (cycles are refused at load).
pub fn prerequisites(config: &Config, name: &str) -> Vec<String> {
    fn visit(config: &Config, name: &str, seen: &mut HashSet<String>, out: &mut Vec<String>) {
        let Some(cmd) = config.commands.get(name) else {
            return;
        };
        for pre in cmd.kind.prerequisites() {
            if seen.insert(pre.name.clone()) {
                visit(config, &pre.name, seen, out);
                out.push(pre.name.clone());
            }
        }
    }
    let mut seen = HashSet::from([name.to_string()]);
    let mut out = Vec::new();
    visit(config, name, &mut seen, &mut out);
    out
}

/// One command, without its prerequisites.
fn run_one(
    config: &Config,
    name: &str,
    args: &[String],
    opts: &RunOptions,
) -> Result<i32, CommandError> {
    match lookup(config, name)? {
        CommandKind::Command(simple) => simple_command(config, simple, args, opts),
        CommandKind::Supervise(group) => super::supervise::run(config, name, group, args, opts),
    }
}

/// A program ready to go into a VM: a `!Command`, `_run`'s argv, or a
/// child of a `!Supervise`.
pub struct Program {
    pub image: Image,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    pub mounts: Vec<Mount>,
    pub read_only_root: bool,
    /// The host directories `mounts` name, by index.
    pub shares: Vec<ShareSpec>,
}

/// Resolves everything `command` needs: its image (built if needed), its
/// volumes (persistent ones initialised), directory and environment.
pub fn prepare(
    config: &Config,
    command: &SimpleCommand,
    args: &[String],
    opts: &RunOptions,
) -> Result<Program, CommandError> {
    let Some(cont) = config.containers.get(&command.container) else {
        return Err(CommandError::UnknownContainer {
            name: command.container.clone(),
            config: config.path.clone(),
            known: config.containers.keys().cloned().collect(),
        });
    };
    let project = Project::open(config)?;
    let volumes = volumes::merged(&cont.volumes, Some(&command.volumes));
    volumes::ensure_persistent(config, &project, &volumes, opts)?;
    let plan = volumes::plan(&project, &volumes, opts)?;
    let cwd = volumes::guest_cwd(config, &project, command.work_dir.as_deref())?;
    let env = environ::environment(
        &project.dir,
        cont,
        command,
        &opts.environ,
        &environ::host_environment(),
    )?;
    let image = super::build::image_for_run(config, &project, &command.container, opts)?;
    let mut argv = command.run.clone();
    argv.extend_from_slice(args);
    Ok(Program {
        image,
        argv,
        env,
        cwd,
        uid: command.user_id.unwrap_or(0),
        gid: command.group_id.unwrap_or(0),
        hostname: command
            .hostname
            .clone()
            .or_else(|| cont.hostname.clone())
            .unwrap_or_else(|| DEFAULT_HOSTNAME.into()),
        mounts: plan.mounts,
        read_only_root: command.write_mode == WriteMode::ReadOnly,
        shares: plan.shares,
    })
}

/// The virtio-fs server of a run: no page cache in the guest (see README),
/// and at most `limits.write` bytes added to the shares.
pub fn fs_server(shares: Vec<ShareSpec>, limits: &Limits) -> Result<Server, RunError> {
    let options = ServerOptions {
        direct_io: true,
        timeout: Duration::from_secs(1),
        write_quota: limits.write,
    };
    Server::new(shares, options).map_err(RunError::Share)
}

/// Runs `command` (a `!Command`, or `_run`'s) with `args` appended.
pub fn simple_command(
    config: &Config,
    command: &SimpleCommand,
    args: &[String],
    opts: &RunOptions,
) -> Result<i32, CommandError> {
    super::netcheck::body(config, command, opts)?;
    let program = prepare(config, command, args, opts)?;
    let mut spec = run_spec(program.argv, program.env, None);
    spec.cwd = program.cwd;
    spec.uid = program.uid;
    spec.gid = program.gid;
    spec.hostname = program.hostname;
    spec.mounts = program.mounts;
    spec.read_only_root = program.read_only_root;
    spec.tty = terminal();
    let server = fs_server(program.shares, &opts.limits)?;
    let machine = Machine::resolve(opts.resources, command.resources).with_network(
        opts,
        command.network,
        &command.ports,
    );
    let disk = program.image.open_rootfs().map_err(CommandError::Host)?;
    Ok(start::boot_and_run(
        vec![disk],
        spec,
        Some(server),
        machine,
        opts,
        None,
    )?)
}

/// The host terminal's size when cella runs interactively: stdin and
/// stdout both terminals. Output redirected to a file keeps separate
/// stdout and stderr streams, and no carriage returns.
fn terminal() -> Option<WinSize> {
    use crate::terminal::{is_terminal, window_size};
    if !(is_terminal(libc::STDIN_FILENO) && is_terminal(libc::STDOUT_FILENO)) {
        return None;
    }
    let (rows, cols) = window_size(libc::STDOUT_FILENO).unwrap_or((24, 80));
    Some(WinSize { rows, cols })
}

/// The spec of a run (or, with `build`, of a build VM's batch) as root in
/// `/` on the image in the first drive; the clock and entropy are filled
/// in when it is sent.
pub(super) fn run_spec(
    argv: Vec<String>,
    env: Vec<(String, String)>,
    build: Option<guest_init::Build>,
) -> RunSpec {
    RunSpec {
        build,
        ..RunSpec::new(argv, env)
    }
}
