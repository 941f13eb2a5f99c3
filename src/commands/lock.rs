//! cella.lock on the command line: recorded after every build or image
//! lookup that builds may do, enforced by `_build --locked`, and checked
//! by `cella _verify`, which rebuilds from scratch in a store of its own.

use super::builder::{build_error as build_err, build_in, check_inputs, container, versions};
use super::error::CommandError;
use super::options::RunOptions;
use super::project::Project;
use crate::config::Config;
use crate::image::lock::{self, Lock, Locked, LOCK_FILE};
use crate::image::store::{BuiltWith, Store};
use crate::image::version::Versions;
use crate::text::error_chain;

/// `name` and every container it builds on, each after those it uses.
pub fn closure(config: &Config, name: &str) -> Vec<String> {
    fn visit(config: &Config, name: &str, out: &mut Vec<String>) {
        if out.iter().any(|n| n == name) {
            return;
        }
        if let Some(c) = config.containers.get(name) {
            for used in c.setup.iter().filter_map(|s| s.step.uses()) {
                visit(config, used, out);
            }
        }
        out.push(name.to_owned());
    }
    let mut out = Vec::new();
    visit(config, name, &mut out);
    out
}

/// Records the images of `name` and those it builds on in cella.lock,
/// once they are in the store; `create`: makes the lock if the project
/// has none. Best effort: a lock that cannot be read or written costs a
/// warning, never the run.
pub fn record(
    config: &Config,
    project: &Project,
    versions: &mut Versions<'_>,
    name: &str,
    create: bool,
) {
    if let Err(e) = try_record(config, project, versions, name, create) {
        eprintln!(
            "cella: warning: {LOCK_FILE} not updated: {}",
            error_chain(&e, ": ")
        );
    }
}

fn try_record(
    config: &Config,
    project: &Project,
    versions: &mut Versions<'_>,
    name: &str,
    create: bool,
) -> Result<(), CommandError> {
    let existing = lock::read(&project.dir)?;
    if existing.is_none() && !create {
        return Ok(());
    }
    let mut lock = match existing.clone() {
        Some(lock) if lock.format_problem().is_none() => lock,
        Some(lock) => {
            eprintln!(
                "cella: {}; writing a new one",
                lock.format_problem().unwrap_or_default()
            );
            Lock::new()
        }
        None => Lock::new(),
    };
    for c in closure(config, name) {
        let inputs = versions.inputs(&c).map_err(build_err)?;
        let Some(image) = project.store.get(&inputs.id) else {
            continue;
        };
        // An unchanged image keeps its entry (an older cella's image.json
        // may know less than the lock does).
        let same = lock
            .containers
            .get(&c)
            .is_some_and(|l| l.image == inputs.id && l.sha256 == image.info.digest);
        if !same {
            lock.containers.insert(c, Locked::new(&inputs, &image.info));
        }
    }
    lock.containers
        .retain(|n, _| config.containers.contains_key(n));
    if existing.as_ref() != Some(&lock) {
        lock::write(&project.dir, &lock)?;
        if existing.is_none() {
            eprintln!(
                "cella: wrote {LOCK_FILE}: what the images were built from; commit it, and `cella _build --locked` checks a build against it"
            );
        }
    }
    Ok(())
}

/// The project's lock, which `--locked` and `_verify` need, of this
/// cella's image format.
fn required(project: &Project, what: &str) -> Result<Lock, CommandError> {
    let lock = lock::read(&project.dir)?.ok_or_else(|| {
        CommandError::Locked(format!(
            "{what} needs {}, and there is none; a build without --locked writes it",
            project
                .dir
                .display(std::path::Path::new(LOCK_FILE))
                .display()
        ))
    })?;
    match lock.format_problem() {
        Some(problem) => Err(CommandError::Locked(problem)),
        None => Ok(lock),
    }
}

/// The entry of `name`, checked against its current inputs: an error
/// naming the first step (with its place in cella.yaml) that differs.
fn matching<'l>(
    config: &Config,
    lock: &'l Lock,
    versions: &mut Versions<'_>,
    name: &str,
) -> Result<&'l Locked, CommandError> {
    let locked = lock.containers.get(name).ok_or_else(|| {
        CommandError::Locked(format!(
            "{LOCK_FILE} has no entry for container \"{name}\"; a build without --locked records it"
        ))
    })?;
    let inputs = versions.inputs(name).map_err(build_err)?;
    match lock::difference(locked, &inputs) {
        None => Ok(locked),
        Some(d) => {
            let at = match (d.step, config.containers.get(name)) {
                (Some(i), Some(c)) => {
                    let pos = c.setup.get(i).map(|s| s.pos).unwrap_or_default();
                    format!(
                        "containers.{name}.setup[{i}] ({}:{pos})",
                        config.file_of(&c.file, pos).display(),
                    )
                }
                _ => format!("containers.{name}"),
            };
            Err(CommandError::Locked(format!(
                "{LOCK_FILE} does not match {at}: {}; build without --locked to update the lock",
                d.what
            )))
        }
    }
}

/// The programs builds run on now, hashed once.
struct Tools<'o> {
    opts: &'o RunOptions,
    now: Option<BuiltWith>,
}

impl Tools<'_> {
    fn get(&mut self) -> Result<&BuiltWith, CommandError> {
        let now = match self.now.take() {
            Some(now) => now,
            None => crate::launch::built_with(&self.opts.launch())?,
        };
        Ok(self.now.insert(now))
    }
}

/// `_build --locked NAME`: refuses, before building, inputs that differ
/// from the lock and a build on other programs than the lock's; after it,
/// an image whose bytes differ from the lock's. Writes no lock.
pub fn build_locked<'c>(
    config: &'c Config,
    project: &'c Project,
    versions: &mut Versions<'c>,
    name: &str,
    opts: &RunOptions,
) -> Result<crate::image::store::Image, CommandError> {
    let lock = required(project, "--locked")?;
    let mut tools = Tools { opts, now: None };
    let names = closure(config, name);
    for c in &names {
        let locked = matching(config, &lock, versions, c)?;
        if project.store.get(&locked.image).is_some() {
            continue;
        }
        if let Some(was) = &locked.built_with {
            if let Some(why) = lock::tools_difference(was, tools.get()?) {
                return Err(CommandError::Locked(format!(
                    "container \"{c}\" would be built on other programs than {LOCK_FILE} records: {why}; its bytes may differ (build without --locked to rebuild it and update the lock)"
                )));
            }
        }
    }
    let image = build_in(config, &project.store, versions, name, false, opts)?;
    for c in &names {
        let locked = matching(config, &lock, versions, c)?;
        let Some(built) = project.store.get(&locked.image) else {
            continue;
        };
        // The image file's own bytes: image.json only claims them.
        let digest = built.current_digest()?;
        if digest != locked.sha256 {
            let packages = lock::packages_difference(&locked.packages, &built.info.packages)
                .map(|p| format!(" (packages: {p})"))
                .unwrap_or_default();
            return Err(CommandError::Locked(format!(
                "the image of container \"{c}\" has sha256 {digest}, and {LOCK_FILE} says {}{packages}",
                locked.sha256
            )));
        }
    }
    Ok(image)
}

/// `cella _verify [CONTAINER]`: rebuilds the container (every container
/// of the lock without one) and all it builds on from scratch, in a store
/// of its own, and compares the bytes with the lock and with the
/// project's images. Prints one line per container; status 1 when any
/// differs.
pub fn verify(config: &Config, name: Option<&str>, opts: &RunOptions) -> Result<i32, CommandError> {
    let targets: Vec<String> = match name {
        Some(name) => {
            container(config, name)?;
            vec![name.to_owned()]
        }
        None => Vec::new(),
    };
    let project = Project::open(config)?;
    let lock = required(&project, "_verify")?;
    let targets = if targets.is_empty() {
        let mut all: Vec<String> = lock.containers.keys().cloned().collect();
        all.retain(|n| {
            let known = config.containers.contains_key(n);
            if !known {
                println!("{n}: skipped: {LOCK_FILE} has it, cella.yaml does not");
            }
            known
        });
        all
    } else {
        targets
    };
    let mut names = Vec::new();
    for t in &targets {
        check_inputs(config, t)?;
        for c in closure(config, t) {
            if !names.contains(&c) {
                names.push(c);
            }
        }
    }
    let scratch = project.store.scratch().map_err(build_err)?;
    // No digest cache: every input is read again.
    let mut versions = versions(config, &project, opts, false)?;
    let mut failed = false;
    for c in &names {
        match verify_one(
            config,
            &project,
            &scratch.store,
            &lock,
            &mut versions,
            c,
            opts,
        ) {
            Ok(line) => println!("{c}: {line}"),
            Err(Verdict::Differs(line)) => {
                failed = true;
                println!("{c}: {line}");
            }
            Err(Verdict::Error(e)) => return Err(e),
        }
    }
    Ok(if failed { 1 } else { 0 })
}

enum Verdict {
    /// The container does not verify: why, one line.
    Differs(String),
    Error(CommandError),
}

impl From<CommandError> for Verdict {
    fn from(e: CommandError) -> Self {
        Verdict::Error(e)
    }
}

fn verify_one<'c>(
    config: &'c Config,
    project: &Project,
    scratch: &'c Store,
    lock: &Lock,
    versions: &mut Versions<'c>,
    name: &str,
    opts: &RunOptions,
) -> Result<String, Verdict> {
    let locked = match matching(config, lock, versions, name) {
        Ok(locked) => locked,
        Err(CommandError::Locked(why)) => return Err(Verdict::Differs(format!("DIFFERS: {why}"))),
        Err(e) => return Err(e.into()),
    };
    let rebuilt = build_in(config, scratch, versions, name, false, opts)?;
    let digest = rebuilt.info.digest.clone();
    if digest != locked.sha256 {
        let mut why = Vec::new();
        if let Some(p) = lock::packages_difference(&locked.packages, &rebuilt.info.packages) {
            why.push(format!("packages: {p}"));
        }
        if let (Some(was), Some(now)) = (&locked.built_with, &rebuilt.info.built_with) {
            why.extend(lock::tools_difference(was, now));
        }
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({})", why.join("; "))
        };
        return Err(Verdict::Differs(format!(
            "DIFFERS: rebuilt from scratch, sha256 {digest}; {LOCK_FILE} says {}{why}",
            locked.sha256
        )));
    }
    let store = match project.store.get(&locked.image) {
        None => "not in .cella/ (nothing to compare)".to_owned(),
        Some(image) => {
            let current = image.current_digest().map_err(CommandError::from)?;
            if current != locked.sha256 {
                return Err(Verdict::Differs(format!(
                    "TAMPERED: .cella/images/{}/rootfs.erofs has sha256 {current}, not the {} a rebuild from scratch gives and {LOCK_FILE} records",
                    lock::short(&locked.image),
                    locked.sha256
                )));
            }
            "the same as .cella/'s image".to_owned()
        }
    };
    Ok(format!(
        "ok: rebuilt from scratch, sha256 {digest} as {LOCK_FILE} says, {store}"
    ))
}
