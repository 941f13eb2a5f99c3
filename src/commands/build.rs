//! `cella _build`, `_version_hash` and `_clean`, and the image lookup of
//! every run: build the container if its setup changed, reuse it if not.

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;

use guest_init::{Build, Mount, RunSpec};

use super::error::CommandError;
use super::netcheck;
use super::options::RunOptions;
use super::project::Project;
use crate::config::{Config, Container, Network};
use crate::devices::virtio::fs::server::ShareSpec;
use crate::hostfs::Dir;
use crate::image::build::{BatchNeeds, BatchOutcome, BuildCtx, BuildError, ProgramRunner};
use crate::image::store::Image;
use crate::image::version::{self, Versions};
use crate::image::{apt, debian};
use crate::launch::passt::NetPlan;
use crate::launch::{self, fs_server, BuildIo, Machine};

/// Boots build VMs with the run's options (verbose, cold boot).
struct VmRunner<'a> {
    opts: &'a RunOptions,
}

impl ProgramRunner for VmRunner<'_> {
    fn run(
        &mut self,
        disk: &File,
        build: Build,
        needs: BatchNeeds,
        export: &mut dyn Write,
    ) -> Result<BatchOutcome, Box<dyn std::error::Error + Send + Sync>> {
        // guest-init runs the batch's steps instead of this argv.
        let mut spec = RunSpec {
            build: Some(build),
            ..RunSpec::new(vec!["/bin/sh".into()], Vec::new())
        };
        let mut machine = Machine::default();
        // Under `network.allow: false` an `!Install` VM goes without (dpkg
        // needs none) and `build-network: user` was refused by `netcheck`.
        let granted = self.opts.network_policy.allow || self.opts.network == Some(Network::User);
        if needs.network && granted {
            machine.network = Some(NetPlan {
                ports: Vec::new(),
                publish: Ipv4Addr::LOCALHOST,
                allow: self.opts.network_policy.allow_addresses.clone(),
            });
        }
        let mut server = None;
        if needs.apt_cache {
            let cache = self
                .opts
                .knobs
                .cache_dir
                .as_ref()
                .map(|dir| apt::AptCache::in_cache_dir(dir))
                .ok_or(debian::DebianError::NoCache)?;
            cache
                .create()
                .map_err(|e| debian::DebianError::Cache(cache.archives.clone(), e))?;
            // Mounted over the root, so the cache never lands in the image;
            // read-only: dpkg only reads the .debs, and what a build VM
            // could write there the host's apt would read next.
            let archives = Dir::open(&cache.archives)?;
            let shares = vec![ShareSpec::new(archives, true, Vec::new())?];
            spec.mounts.push(Mount::Share {
                target: debian::GUEST_ARCHIVES.to_owned(),
                share: 0,
                read_only: true,
            });
            server = Some(fs_server(shares, &self.opts.limits)?);
        }
        let mut io = BuildIo::new(export);
        let status = launch::launch(
            vec![disk.try_clone()?],
            spec,
            server,
            machine,
            &self.opts.launch(),
            Some(&mut io),
        )?;
        if let Some(e) = io.error {
            return Err(Box::new(e));
        }
        Ok(BatchOutcome {
            status,
            step: io.step,
        })
    }
}

fn versions<'c>(
    config: &'c Config,
    project: &'c Project,
    opts: &RunOptions,
) -> Result<Versions<'c>, CommandError> {
    let epoch =
        version::epoch(opts.knobs.source_date_epoch.as_deref()).map_err(CommandError::Epoch)?;
    Ok(Versions::new(
        config,
        &project.dir,
        Some(project.store.root()),
        epoch,
    ))
}

/// The container `name` of cella.yaml, or an error listing those it has.
pub fn container<'c>(config: &'c Config, name: &str) -> Result<&'c Container, CommandError> {
    config
        .containers
        .get(name)
        .ok_or_else(|| CommandError::UnknownContainer {
            name: name.to_string(),
            config: config.path.clone(),
            known: config.containers.keys().cloned().collect(),
        })
}

/// The image to run `name` in: with `--no-build`, the last one built for
/// it whatever its setup says now; else built if its id has none yet.
pub fn image_for_run(
    config: &Config,
    project: &Project,
    name: &str,
    opts: &RunOptions,
) -> Result<Image, CommandError> {
    container(config, name)?;
    if opts.no_build {
        return project
            .store
            .latest(name)
            .ok_or_else(|| CommandError::NotBuilt(name.to_owned()));
    }
    ensure(config, project, name, false, opts)
}

/// The first unusable input file of `name`'s setup or of the containers
/// it builds on, as the error cella.yaml's loading used to give: loading
/// leaves it for the build, so that listing commands reads no input.
fn check_inputs(config: &Config, name: &str) -> Result<(), CommandError> {
    let mut pending = vec![name];
    let mut seen = Vec::new();
    while let Some(name) = pending.pop() {
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        let Some(c) = config.containers.get(name) else {
            continue;
        };
        if let Some(problem) = &c.input_problem {
            return Err(CommandError::Config(problem.clone().into()));
        }
        pending.extend(c.setup.iter().filter_map(|s| s.step.uses()));
    }
    Ok(())
}

fn ensure(
    config: &Config,
    project: &Project,
    name: &str,
    force: bool,
    opts: &RunOptions,
) -> Result<Image, CommandError> {
    check_inputs(config, name)?;
    let mut versions = versions(config, project, opts)?;
    let mut runner = VmRunner { opts };
    let result = BuildCtx {
        config,
        store: &project.store,
        versions: &mut versions,
        runner: &mut runner,
        allow_addresses: &opts.network_policy.allow_addresses,
        limits: opts.limits,
        cache_dir: opts.knobs.cache_dir.clone(),
        emulated_host_env: crate::vmm::emulated_host_env(),
    }
    .ensure(name, force);
    versions.save_cache();
    result.map_err(build_error)
}

/// A build, version or store error as the command's error.
fn build_error(e: impl Into<BuildError>) -> CommandError {
    CommandError::Build(e.into())
}

/// `cella _build NAME [--force] [--print-digest]`.
pub fn build(
    config: &Config,
    name: &str,
    force: bool,
    print_digest: bool,
    opts: &RunOptions,
) -> Result<i32, CommandError> {
    container(config, name)?;
    netcheck::container(config, name, opts)?;
    let project = Project::open(config)?;
    let image = ensure(config, &project, name, force, opts)?;
    if print_digest {
        println!("{}", image.info.digest);
    }
    Ok(0)
}

/// `cella _version_hash NAME`: the image id, without building anything.
pub fn version_hash(config: &Config, name: &str, opts: &RunOptions) -> Result<i32, CommandError> {
    container(config, name)?;
    check_inputs(config, name)?;
    let project = Project::open(config)?;
    let mut versions = versions(config, &project, opts)?;
    let id = versions.id(name).map_err(build_error)?;
    versions.save_cache();
    println!("{id}");
    Ok(0)
}

/// `cella _clean --unused | --all`.
pub fn clean(config: &Config, all: bool, opts: &RunOptions) -> Result<i32, CommandError> {
    let project = Project::open(config)?;
    let keep = if all {
        None
    } else {
        let mut versions = versions(config, &project, opts)?;
        let mut ids = Vec::new();
        for name in config.containers.keys() {
            check_inputs(config, name)?;
            ids.push(versions.id(name).map_err(build_error)?);
        }
        Some(ids)
    };
    let removed = project.store.clean(keep.as_deref()).map_err(build_error)?;
    for id in &removed {
        eprintln!("cella: removed image {id}");
    }
    eprintln!("cella: removed {} image(s)", removed.len());
    if let Some(cache) = &opts.knobs.cache_dir {
        let warm = crate::launch::warm::remove_images(cache, &removed);
        if warm > 0 {
            eprintln!("cella: removed {warm} warm snapshot(s) of those images");
        }
    }
    Ok(0)
}
