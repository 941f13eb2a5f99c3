//! Building images from the command line: the build VMs (`VmRunner`),
//! building a container into a store, and the checks before it. Used by
//! `build` (images for runs, `_build`) and `lock` (`--locked`, `_verify`).

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;

use guest_init::{Build, Mount, RunSpec};

use super::error::CommandError;
use super::options::RunOptions;
use super::project::Project;
use super::volumes::{store_dir, CACHES, WORK};
use crate::config::{Config, Container, Network};
use crate::devices::virtio::fs::server::ShareSpec;
use crate::hostfs::Dir;
use crate::image::build::{BatchNeeds, BatchOutcome, BuildCtx, BuildError, ProgramRunner};
use crate::image::oci::FetchCtx;
use crate::image::store::{BuiltWith, Image, Store, STATE_DIR};
use crate::image::version::{self, Versions};
use crate::image::{apt, debian};
use crate::launch::passt::NetPlan;
use crate::launch::{self, fs_server, BuildIo, Machine};

/// Boots build VMs with the run's options (verbose, cold boot).
struct VmRunner<'a> {
    opts: &'a RunOptions,
    /// The project directory, shared at /work as vagga's builds see it.
    project: &'a std::path::Path,
    /// The project's store (`.cella/`), for `!CacheDirs`.
    store: &'a Store,
    /// What the VMs boot, hashed on first use.
    tools: Option<BuiltWith>,
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
        // The project at /work, read-write, as vagga's builds see it (and
        // as commands do): `!Sh "make -C /work"` works; the guest never
        // sees cella's own state in .cella/. It is a mount, so nothing
        // written there lands in the image.
        let mut project = ShareSpec::new(Dir::open(self.project)?, false, Vec::new())?;
        project.hidden.push(STATE_DIR.into());
        let mut shares = vec![project];
        spec.mounts.push(Mount::Share {
            target: WORK.to_owned(),
            share: 0,
            read_only: false,
        });
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
            shares.push(ShareSpec::new(archives, true, Vec::new())?);
            spec.mounts.push(Mount::Share {
                target: debian::GUEST_ARCHIVES.to_owned(),
                share: 1,
                read_only: true,
            });
        }
        // `!CacheDirs`: the project's cache directories (those `!CacheDir`
        // volumes mount), writable, kept between builds; never through a
        // link, and only the user's own.
        for (target, name) in &needs.caches {
            let dir = store_dir(self.store, CACHES, name, true)?;
            spec.mounts.push(Mount::Share {
                target: target.clone(),
                share: u32::try_from(shares.len()).unwrap_or(u32::MAX),
                read_only: false,
            });
            shares.push(ShareSpec::new(dir, false, Vec::new())?);
        }
        // Parents before children, so that a cache at /var/cache does not
        // cover the .deb cache mounted beneath it (stable: equal depths
        // keep their order).
        spec.mounts
            .sort_by_key(|m| m.target().split('/').filter(|c| !c.is_empty()).count());
        let server = Some(fs_server(shares, &self.opts.limits)?);
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

    fn built_with(&mut self) -> Result<BuiltWith, Box<dyn std::error::Error + Send + Sync>> {
        if let Some(tools) = &self.tools {
            return Ok(tools.clone());
        }
        let tools = launch::built_with(&self.opts.launch())?;
        self.tools = Some(tools.clone());
        Ok(tools)
    }
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

/// The first unusable input file of `name`'s setup or of the containers
/// it builds on, as the error cella.yaml's loading used to give: loading
/// leaves it for the build, so that listing commands reads no input.
pub fn check_inputs(config: &Config, name: &str) -> Result<(), CommandError> {
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

/// The image of `name` in `store`, built (with those it uses) if missing
/// or if `force`.
pub fn build_in<'c>(
    config: &'c Config,
    store: &'c Store,
    versions: &mut Versions<'c>,
    name: &str,
    force: bool,
    opts: &RunOptions,
) -> Result<Image, CommandError> {
    let mut runner = VmRunner {
        opts,
        project: &config.project_dir,
        store,
        tools: None,
    };
    BuildCtx {
        config,
        store,
        versions,
        runner: &mut runner,
        allow_addresses: &opts.network_policy.allow_addresses,
        limits: opts.limits,
        cache_dir: opts.knobs.cache_dir.clone(),
        emulated_host_env: crate::vmm::emulated_host_env(),
    }
    .ensure(name, force)
    .map_err(build_error)
}

/// A build, version or store error as the command's error.
pub fn build_error(e: impl Into<BuildError>) -> CommandError {
    CommandError::Build(e.into())
}

/// The ids of `config`'s containers, their inputs read beneath the
/// project; `cached`: file digests from (and to) `.cella/digests.json`,
/// else every input is read again.
pub fn versions<'c>(
    config: &'c Config,
    project: &'c Project,
    opts: &RunOptions,
    cached: bool,
) -> Result<Versions<'c>, CommandError> {
    let epoch =
        version::epoch(opts.knobs.source_date_epoch.as_deref()).map_err(CommandError::Epoch)?;
    let state = cached.then(|| project.store.root());
    Ok(Versions::new(config, &project.dir, state, epoch).with_registry(fetch_ctx(opts), opts.pull))
}

/// What cella's fetches (and pushes) for a project may do, from the
/// settings, the command line and the environment.
pub fn fetch_ctx(opts: &RunOptions) -> FetchCtx {
    FetchCtx {
        default: opts.registries.default.clone(),
        insecure: opts.registries.insecure.clone(),
        allow: opts.network_policy.allow_addresses.clone(),
        cache: opts.knobs.cache_dir.clone(),
        max_download: opts.limits.image,
        keep_downloads: opts.limits.downloads,
    }
}
