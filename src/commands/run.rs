//! `cella CMD` and `cella _run CONTAINER PROG`: a command's prerequisites,
//! the persistent volumes it needs, then the command itself, launched in a
//! VM of its own.

use std::collections::HashSet;

use guest_init::{RunSpec, WinSize};

use super::error::CommandError;
use super::netcheck;
use super::options::RunOptions;
use super::program::{self, prepare};
use super::project::Project;
use super::supervise;
use super::volumes;
use crate::config::{CommandKind, Config, SimpleCommand};
use crate::launch::{self, fs_server};

/// `cella NAME ARGS...`: the command's prerequisites, then the command.
pub fn command(
    config: &Config,
    name: &str,
    args: &[String],
    opts: &RunOptions,
) -> Result<i32, CommandError> {
    lookup(config, name)?;
    netcheck::command(config, name, opts)?;
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
        CommandKind::Supervise(group) => {
            let selected = supervise::select(name, group, args)?;
            for child in &selected {
                init_volumes(config, &child.command, opts)?;
            }
            supervise::run(config, name, group, selected, opts)
        }
    }
}

/// Creates the persistent volumes `command` mounts that do not exist yet,
/// running their init commands (each a `cella NAME` of its own).
fn init_volumes(
    config: &Config,
    command: &SimpleCommand,
    opts: &RunOptions,
) -> Result<(), CommandError> {
    let cont = program::container(config, command)?;
    let project = Project::open(config)?;
    let volumes = volumes::merged(&cont.volumes, Some(&command.volumes));
    volumes::ensure_persistent(&project, &volumes, opts, &mut |opts, name| {
        self::command(config, name, &[], opts)
    })
}

/// Runs `command` (a `!Command`, or `_run`'s) with `args` appended.
pub fn simple_command(
    config: &Config,
    command: &SimpleCommand,
    args: &[String],
    opts: &RunOptions,
) -> Result<i32, CommandError> {
    netcheck::body(config, command, opts)?;
    init_volumes(config, command, opts)?;
    let program = prepare(config, command, args, opts)?;
    let mut spec = RunSpec::new(program.argv, program.env);
    spec.cwd = program.cwd;
    spec.uid = program.uid;
    spec.gid = program.gid;
    spec.hostname = program.hostname;
    spec.mounts = program.mounts;
    spec.read_only_root = program.read_only_root;
    spec.tty = terminal();
    let server = fs_server(program.shares, &opts.limits)?;
    let machine = opts.machine(command.resources, command.network, &command.ports);
    let disk = program.image.open_rootfs()?;
    Ok(launch::launch(
        vec![disk],
        spec,
        Some(server),
        machine,
        &opts.launch(),
        None,
    )?)
}

/// The host terminal's size when cella runs interactively: stdin and
/// stdout both terminals. Output redirected to a file keeps separate
/// stdout and stderr streams, and no carriage returns.
fn terminal() -> Option<WinSize> {
    use crate::launch::terminal::{is_terminal, window_size};
    if !(is_terminal(libc::STDIN_FILENO) && is_terminal(libc::STDOUT_FILENO)) {
        return None;
    }
    let (rows, cols) = window_size(libc::STDOUT_FILENO).unwrap_or((24, 80));
    Some(WinSize { rows, cols })
}
