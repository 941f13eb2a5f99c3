//! `cella _build`, `_version_hash` and `_clean`, and the image lookup of
//! every run: build the container if its setup changed, reuse it if not.

pub use super::builder::container;
use super::builder::{build_error, build_in, check_inputs, versions};
use super::error::CommandError;
use super::lock;
use super::netcheck;
use super::options::RunOptions;
use super::project::Project;
use crate::config::Config;
use crate::image::store::Image;

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
    ensure(config, project, name, false, Locking::Update, opts)
}

/// What a build does with cella.lock.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Locking {
    /// Records the images in it if there is one (runs: a project that
    /// has no lock gets none, and a run leaves nothing behind).
    Update,
    /// Records the images, making the lock if missing (`_build`).
    Create,
    /// Checks the build against it and writes nothing (`_build --locked`).
    Check,
}

/// The image of `name`, built if its setup has none, and cella.lock as
/// `locking` says.
fn ensure(
    config: &Config,
    project: &Project,
    name: &str,
    force: bool,
    locking: Locking,
    opts: &RunOptions,
) -> Result<Image, CommandError> {
    check_inputs(config, name)?;
    let mut versions = versions(config, project, opts, true)?;
    let result = if locking == Locking::Check {
        lock::build_locked(config, project, &mut versions, name, opts)
    } else {
        let result = build_in(config, &project.store, &mut versions, name, force, opts);
        if result.is_ok() {
            let create = locking == Locking::Create;
            lock::record(config, project, &mut versions, name, create);
        }
        result
    };
    versions.save_cache();
    result
}

/// `cella _build NAME [--force] [--locked] [--print-digest]`.
pub fn build(
    config: &Config,
    name: &str,
    force: bool,
    locked: bool,
    print_digest: bool,
    opts: &RunOptions,
) -> Result<i32, CommandError> {
    container(config, name)?;
    netcheck::container(config, name, opts)?;
    let project = Project::open(config)?;
    let locking = if locked {
        Locking::Check
    } else {
        Locking::Create
    };
    let image = ensure(config, &project, name, force, locking, opts)?;
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
    let mut versions = versions(config, &project, opts, true)?;
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
        let mut versions = versions(config, &project, opts, true)?;
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
