//! `cella`: parse the command line, run one command, print the error chain
//! and map the outcome to an exit status.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cella::commands::environ::CliEnviron;
use cella::commands::{self, build, cache, list, lock, pack, run, CommandError};
use cella::config::{Knobs, Resources, SimpleCommand, WriteMode};
use cli::{Cli, Sub};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage {
                guest_init::ExitCode::Cella
            } else {
                guest_init::ExitCode::Status(0)
            });
        }
    };
    match dispatch(cli) {
        Ok(status) => {
            // Flushing can only fail if the reader is gone: nothing to report to.
            use std::io::Write;
            let _ = std::io::stdout().flush();
            ExitCode::from(status.clamp(0, 255) as u8)
        }
        Err(e) => {
            print_chain(&e);
            // A build stopped by SIGINT/SIGTERM exits as the signal would.
            match cella::launch::interrupted_by(&e) {
                Some(sig) => ExitCode::from(guest_init::ExitCode::Signal(sig)),
                None => ExitCode::from(guest_init::ExitCode::Cella),
            }
        }
    }
}

fn dispatch(cli: Cli) -> Result<i32, CommandError> {
    cella::sandbox::helper::set_verbose(cli.verbose);
    let mut opts = commands::RunOptions {
        verbose: cli.verbose,
        cold_boot: cli.cold_boot,
        no_build: cli.no_build,
        allow_host_paths: cli.allow_host_path.clone(),
        volume_init: None,
        environ: CliEnviron {
            use_env: cli.use_env.clone(),
            set: cli.environ.clone(),
        },
        timeout: cli.timeout,
        resources: Resources {
            cpus: cli.cpus,
            memory: cli.memory,
        },
        no_prerequisites: cli.no_prerequisites,
        network: cli.network,
        publish_address: cli.publish_address,
        network_policy: Default::default(),
        limits: Default::default(),
        registries: Default::default(),
        pull: matches!(cli.command, Some(Sub::Build { pull: true, .. })),
        knobs: Knobs::from_env(),
    };
    let settings = cella::config::settings::load()?;
    opts.allow_host_paths.extend(settings.allow_host_paths);
    opts.network_policy = settings.network;
    opts.network_policy
        .allow_addresses
        .extend(cli.allow_address.iter().copied());
    opts.limits = settings.limits;
    opts.registries = settings.registries;
    // The user's cache is no project's: no cella.yaml needed.
    if let Some(Sub::Cache { drop }) = cli.command {
        return cache::cache(drop, &opts);
    }
    let config = commands::load_config(&opts.limits)?;
    if cli.run_multiple {
        let Some(Sub::External(names)) = cli.command else {
            return Err(CommandError::Usage(
                "-m takes the names of commands of cella.yaml: cella -m CMD1 CMD2…".into(),
            ));
        };
        // Every name first: a typo in the last fails before the first runs.
        for name in &names {
            run::check_name(&config, name)?;
        }
        for name in &names {
            let status = run::command(&config, name, &[], &opts)?;
            if status != 0 {
                return Ok(status);
            }
        }
        return Ok(0);
    }
    match cli.command {
        None => {
            print!("{}", list::commands(&config));
            Ok(0)
        }
        Some(Sub::List) => {
            print!("{}", list::everything(&config));
            Ok(0)
        }
        Some(Sub::Build {
            container,
            force,
            locked,
            print_digest,
            ..
        }) => build::build(&config, &container, force, locked, print_digest, &opts),
        Some(Sub::Verify { container }) => lock::verify(&config, container.as_deref(), &opts),
        Some(Sub::VersionHash { container }) => build::version_hash(&config, &container, &opts),
        Some(Sub::Clean { all, .. }) => build::clean(&config, all, &opts),
        Some(Sub::Cache { .. }) => Ok(0),
        Some(Sub::Run {
            container,
            writable,
            argv,
        }) => {
            let write_mode = if writable {
                WriteMode::TransientOverlay
            } else {
                WriteMode::ReadOnly
            };
            let command = SimpleCommand::adhoc(container, argv, write_mode);
            run::simple_command(&config, &command, &[], &opts)
        }
        Some(Sub::PackImage {
            container,
            file,
            gzip,
            bzip2,
            xz,
            format,
            tag,
        }) => {
            use cella::image::pack::{Compression, PackFormat};
            let format = match format.as_str() {
                "oci-archive" => PackFormat::OciArchive,
                "docker-archive" => PackFormat::DockerArchive,
                _ => PackFormat::Tar,
            };
            let compression = match (gzip, bzip2, xz) {
                (true, _, _) => Compression::Gzip,
                (_, true, _) => Compression::Bzip2,
                (_, _, true) => Compression::Xz,
                _ => Compression::None,
            };
            let req = pack::PackRequest {
                container: &container,
                file: file.as_deref(),
                format,
                compression,
                tag: tag.as_deref(),
            };
            pack::pack_image(&config, &req, &opts)
        }
        Some(Sub::PushImage {
            container,
            destination,
        }) => {
            let dest =
                cella::config::parse_registry_ref(&destination).map_err(CommandError::Usage)?;
            pack::push_image(&config, &container, &dest, &destination, &opts)
        }
        Some(Sub::External(args)) => {
            let (name, rest) = args
                .split_first()
                .map_or(("", &[][..]), |(n, r)| (n.as_str(), r));
            run::command(&config, name, rest, &opts)
        }
    }
}

/// `error: …` then one `caused by: …` line per source.
/// Control characters are escaped on the way out: a message may quote
/// something a guest or a project chose (a path, a parser's excerpt).
fn print_chain(e: &dyn std::error::Error) {
    eprintln!("error: {}", cella::text::error_chain(e, "\ncaused by: "));
}
