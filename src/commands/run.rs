//! `cella CMD` and `cella _run CONTAINER PROG`: a command's prerequisites,
//! the persistent volumes it needs, then the command itself, launched in a
//! VM of its own.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use guest_init::{RunSpec, WinSize};

use super::build::container;
use super::error::CommandError;
use super::netcheck;
use super::options::RunOptions;
use super::program::prepare;
use super::project::Project;
use super::supervise;
use super::volumes;
use crate::config::docopt::{self, Parsed};
use crate::config::{CommandKind, Config, Pid1Mode, SimpleCommand};
use crate::launch::{self, fs_server, LaunchOptions};
use crate::text::escape_keeping_lines;

/// `cella NAME ARGS...`: the command's prerequisites, then the command.
pub fn command(
    config: &Config,
    name: &str,
    args: &[String],
    opts: &RunOptions,
) -> Result<i32, CommandError> {
    // vagga's `aliases`: other names of a command.
    let name = config.aliases.get(name).map_or(name, String::as_str);
    lookup(config, name)?;
    let info = &config.commands[name].info;
    // vagga's `options`: the arguments become variables, before anything
    // runs (`--help` runs nothing).
    let mut with_options;
    let (args, run_opts) = match &info.options {
        None => (args, opts),
        Some(text) => match docopt::parse(text, name, args) {
            Ok(Parsed::Help(help)) => {
                println!("{}", escape_keeping_lines(&help));
                return Ok(0);
            }
            Ok(Parsed::Vars(vars)) => {
                with_options = opts.clone();
                with_options.environ.set.extend(vars);
                (&[][..], &with_options)
            }
            Err(e) => return Err(CommandError::Usage(format!("{name}: {e}"))),
        },
    };
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
    let banner = Banner::show(info.banner.as_deref(), info.banner_delay);
    let status = run_one(config, name, args, run_opts);
    banner.stop();
    if let (Ok(0), Some(epilog)) = (&status, &info.epilog) {
        eprintln!("{}", escape_keeping_lines(epilog));
    }
    status
}

/// vagga's `banner`: printed on stderr (stdout is the command's) as the
/// run starts, or `delay` seconds later unless the run ended by then.
struct Banner {
    ended: Option<Arc<AtomicBool>>,
}

impl Banner {
    fn show(text: Option<&str>, delay: u32) -> Banner {
        let Some(text) = text else {
            return Banner { ended: None };
        };
        let text = escape_keeping_lines(text).into_owned();
        if delay == 0 {
            eprintln!("{text}");
            return Banner { ended: None };
        }
        let ended = Arc::new(AtomicBool::new(false));
        let flag = ended.clone();
        // Detached: a run that ends first leaves it asleep, and the
        // process exits without waiting for it.
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(u64::from(delay)));
            if !flag.load(Ordering::SeqCst) {
                eprintln!("{text}");
            }
        });
        Banner { ended: Some(ended) }
    }

    fn stop(self) {
        if let Some(ended) = self.ended {
            ended.store(true, Ordering::SeqCst);
        }
    }
}

/// An error unless `name` is a command of cella.yaml, or an alias of one.
pub fn check_name(config: &Config, name: &str) -> Result<(), CommandError> {
    let name = config.aliases.get(name).map_or(name, String::as_str);
    lookup(config, name).map(|_| ())
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
        CommandKind::Command(simple) => {
            let args = command_args(name, simple, args)?;
            simple_command(config, simple, &args, opts)
        }
        CommandKind::Supervise(group) => {
            let selected = supervise::select(name, group, args)?;
            for child in &selected {
                container(config, &child.command.container)?;
            }
            let project = Project::open(config)?;
            for child in &selected {
                init_volumes(config, &project, &child.command, opts)?;
            }
            supervise::run(config, &project, name, group, selected, opts)
        }
    }
}

/// What `cella NAME ARGS…` appends to the command's argv, as vagga does:
/// nothing new for a list; for a shell string, NAME as `$0` and the
/// arguments as `$1…`; and no arguments at all to a command that does not
/// accept them.
fn command_args(
    name: &str,
    command: &SimpleCommand,
    args: &[String],
) -> Result<Vec<String>, CommandError> {
    if args.is_empty() {
        return Ok(Vec::new());
    }
    if !command.accepts_arguments {
        let why = match command.shell {
            true => "its `run` is a shell string; `accepts-arguments: true` passes them as $1, $2…",
            false => "it has `accepts-arguments: false`",
        };
        return Err(CommandError::Usage(format!(
            "command \"{name}\" takes no arguments: {why}"
        )));
    }
    let mut out = Vec::with_capacity(args.len() + 1);
    if command.shell {
        out.push(name.to_owned());
    }
    out.extend_from_slice(args);
    Ok(out)
}

/// Creates the persistent volumes `command` mounts in `project` that do
/// not exist yet, running their init commands (each a `cella NAME` of its
/// own).
fn init_volumes(
    config: &Config,
    project: &Project,
    command: &SimpleCommand,
    opts: &RunOptions,
) -> Result<(), CommandError> {
    let cont = container(config, &command.container)?;
    let volumes = volumes::merged(&cont.volumes, Some(&command.volumes));
    volumes::ensure_persistent(project, &volumes, opts, &mut |opts, name| {
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
    container(config, &command.container)?;
    let project = Project::open(config)?;
    init_volumes(config, &project, command, opts)?;
    let program = prepare(config, &project, command, args, opts)?;
    let mut spec = RunSpec::new(program.argv, program.env);
    spec.cwd = program.cwd;
    spec.uid = program.uid;
    spec.gid = program.gid;
    spec.groups = program.groups;
    spec.wait_all_children = command.pid1mode == Pid1Mode::WaitAllChildren;
    spec.hostname = program.hostname;
    spec.mounts = program.mounts;
    spec.read_only_root = program.read_only_root;
    spec.tty = terminal();
    let server = fs_server(program.shares, &opts.limits)?;
    let machine = opts.machine(command.resources, command.network, &command.ports);
    let mut disks = vec![program.image.open_rootfs()?];
    for image in &program.volume_images {
        disks.push(image.open_rootfs()?);
    }
    let info = &program.image.info;
    let launch_opts = LaunchOptions {
        // A warm snapshot holds only a run's own root: with other images
        // mounted the run restores the plain one.
        warm_images: match program.volume_images.is_empty() {
            true => vec![(info.id.clone(), info.digest.clone())],
            false => Vec::new(),
        },
        ..opts.launch()
    };
    Ok(launch::launch(
        disks,
        spec,
        Some(server),
        machine,
        &launch_opts,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WriteMode;

    #[test]
    fn arguments_as_vagga_passes_them() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut list = SimpleCommand::adhoc("c".into(), args(&["echo"]), WriteMode::ReadOnly);
        assert_eq!(
            command_args("t", &list, &args(&["a", "b"])).unwrap(),
            args(&["a", "b"])
        );
        let mut shell = list.clone();
        shell.run = args(&["/bin/sh", "-c", "echo $1"]);
        shell.shell = true;
        shell.accepts_arguments = false;
        assert!(command_args("t", &shell, &[]).unwrap().is_empty());
        let e = command_args("t", &shell, &args(&["a"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("command \"t\" takes no arguments: its `run` is a shell string"),
            "{e}"
        );
        shell.accepts_arguments = true;
        assert_eq!(
            command_args("t", &shell, &args(&["a"])).unwrap(),
            args(&["t", "a"])
        );
        list.accepts_arguments = false;
        let e = command_args("t", &list, &args(&["a"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("accepts-arguments: false"), "{e}");
    }
}
