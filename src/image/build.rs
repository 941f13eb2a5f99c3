//! Runs a container's setup steps into an image. File steps edit the image
//! tree on the host; consecutive `!Sh`/`!Cmd` steps run as one batch in a
//! build VM whose root is the image so far under a writable overlay, and
//! the overlay's changes come back as an export stream. The image is then
//! packed canonically and committed to the store whole.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use guest_init::{Build, BuildStep};
use ipnet::Ipv4Net;

use super::compact::{compact_with_progress, copy_subtree};
use super::erofs::ImageWriter;
use super::export::apply_export;
pub use super::fileio::HashingReader;

mod copy;
mod fetch;
use super::progress::Progress;
use super::shell::shell_words;
use super::store::{BuildDir, BuiltWith, Image, ImageConfig, ImageInfo, Store, ROOTFS, TREE};
use super::tree::{Inode, Kind, Meta, Tree};
use super::version::Versions;
use super::{apt, debian};
use crate::config::netpolicy::AddressGuard;
use crate::config::{Config, Container, Limits, Network, Step};

pub use super::build_error::{BuildError, StepError, StepFailure};

/// PATH and HOME of build steps, before `!Env`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a batch of program steps ended in its build VM.
pub struct BatchOutcome {
    /// 0 when every step succeeded; else the failing step's status (as
    /// cella would exit with it, a [`guest_init::ExitCode`]).
    pub status: i32,
    /// Index in the batch of the step that ran last.
    pub step: Option<u32>,
}

/// Boots build VMs: `disk` is the image so far, `export` receives the
/// root's changes when every step succeeds.
pub trait ProgramRunner {
    fn run(
        &mut self,
        disk: &File,
        build: Build,
        needs: BatchNeeds,
        export: &mut dyn Write,
    ) -> Result<BatchOutcome, Box<dyn std::error::Error + Send + Sync>>;

    /// What the build VMs run on (cella, kernel, guest-init), for the
    /// image's record and `cella.lock`.
    fn built_with(&mut self) -> Result<BuiltWith, Box<dyn std::error::Error + Send + Sync>>;
}

/// What a batch's build VM needs besides its root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchNeeds {
    /// A NIC (`!Install`, or `build-network: user`).
    pub network: bool,
    /// The shared apt cache mounted (`!Install`).
    pub apt_cache: bool,
    /// `!CacheDirs`: guest path → the project's cache directory name.
    pub caches: Vec<(String, String)>,
}

/// What a build needs besides the container.
pub struct BuildCtx<'c, 'v> {
    pub config: &'c Config,
    pub store: &'c Store,
    pub versions: &'v mut Versions<'c>,
    pub runner: &'v mut dyn ProgramRunner,
    /// Non-public addresses the user lets cella fetch from for the project
    /// (a `!Debian` mirror, an `!Install`'s apt sources).
    pub allow_addresses: &'v [Ipv4Net],
    /// The settings' bounds: `image` (the image file and each export
    /// stream) and `inodes` (its tree) apply here.
    pub limits: Limits,
    /// The user's cache directory (`~/.cache/cella`), where the shared apt
    /// cache of `!Debian` and `!Install` lives; `None` if there is none.
    pub cache_dir: Option<PathBuf>,
    /// A variable every program step gets before `!Env`: what build VMs
    /// need on this host (`vmm::emulated_host_env`), if anything.
    pub emulated_host_env: Option<(&'static str, &'static str)>,
}

impl BuildCtx<'_, '_> {
    /// The image of container `name`, built first if missing (or if
    /// `force`), with the images it uses built before it.
    pub fn ensure(&mut self, name: &str, force: bool) -> Result<Image, BuildError> {
        let id = self.versions.id(name)?;
        if !force {
            if let Some(image) = self.store.get(&id) {
                // Another container with the same setup may have built it.
                self.store.note_latest(name, &id);
                return Ok(image);
            }
        }
        let Some(container) = self.config.containers.get(name) else {
            return Err(BuildError::UnknownContainer(name.to_owned()));
        };
        for step in &container.setup {
            if let Some(used) = step.step.uses() {
                self.ensure(used, false)?;
            }
        }
        let lock = self.store.lock(&id)?;
        if !force {
            // Another cella may have built it while we waited for the lock.
            if let Some(image) = self.store.get(&id) {
                self.store.note_latest(name, &id);
                return Ok(image);
            }
        }
        let started = Instant::now();
        eprintln!("cella: building container {name} (image {})", short(&id));
        let dir = self.store.start(&id, &lock)?;
        let work = match dir.dir.create_new(Path::new(Builder::WORK), 0o600) {
            Ok(work) => work,
            Err(e) => {
                self.store.discard(dir);
                return Err(BuildError::Store(e.into()));
            }
        };
        let mut builder = Builder::new(self, container, dir, work);
        let built = builder.run_steps().and_then(|()| builder.pack());
        let dir = builder.into_dir();
        let (info, size) = match built {
            Ok(packed) => (
                ImageInfo {
                    container: name.to_owned(),
                    id: id.clone(),
                    digest: packed.digest,
                    size: packed.size,
                    built_with: packed.built_with,
                    packages: packed.packages,
                    config: packed.config,
                },
                packed.size,
            ),
            Err(e) => {
                self.store.discard(dir);
                return Err(e);
            }
        };
        let image = self.store.commit(dir, &info)?;
        eprintln!(
            "cella: built {name} in {:.1} s: {:.1} MiB, sha256 {}",
            started.elapsed().as_secs_f64(),
            size as f64 / (1024.0 * 1024.0),
            info.digest
        );
        Ok(image)
    }
}

/// The first 12 hex digits of an id, for messages.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// One container's build in progress.
struct Builder<'a, 'c, 'v> {
    ctx: &'a mut BuildCtx<'c, 'v>,
    container: &'c Container,
    /// The build's directory in `.cella/tmp/`.
    build: BuildDir,
    /// The image being built: file data, and the metadata of the last
    /// batch's image (dead space once more is appended; packing drops it).
    work: File,
    tree: Tree,
    /// `!Env` so far.
    env: BTreeMap<String, String>,
    epoch: i64,
    limits: Limits,
    /// What the build VMs ran on, once one ran.
    built_with: Option<BuiltWith>,
    /// The OCI config of an `!Image` base (or of the `!Container` it starts from).
    config: Option<ImageConfig>,
    /// `!Build`'s temporary mounts: where, and the empty directory's
    /// metadata when one was there before.
    temporary: Vec<(String, Option<Meta>)>,
}

/// A packed image: what image.json records of it.
struct Packed {
    digest: String,
    size: u64,
    built_with: Option<BuiltWith>,
    packages: Vec<String>,
    config: Option<ImageConfig>,
}

impl<'a, 'c, 'v> Builder<'a, 'c, 'v> {
    /// The image being built, in the build directory.
    const WORK: &'static str = "work.erofs";

    fn new(
        ctx: &'a mut BuildCtx<'c, 'v>,
        container: &'c Container,
        build: BuildDir,
        work: File,
    ) -> Self {
        let epoch = ctx.versions.epoch();
        let limits = ctx.limits;
        let mut tree = Tree::new();
        tree.set_max_inodes(max_inodes(&limits));
        Builder {
            ctx,
            container,
            build,
            work,
            tree,
            env: BTreeMap::new(),
            epoch,
            limits,
            built_with: None,
            config: None,
            temporary: Vec::new(),
        }
    }

    fn into_dir(self) -> BuildDir {
        self.build
    }

    fn run_steps(&mut self) -> Result<(), BuildError> {
        let setup = &self.container.setup;
        let mut i = 0;
        while i < setup.len() {
            if is_program(&setup[i].step) {
                // An `!Install` starts a batch of its own: the host resolves
                // it against the image as the steps before it left it.
                let end = (i + 1..setup.len())
                    .find(|&j| {
                        !is_program(&setup[j].step) || matches!(setup[j].step, Step::Install(_))
                    })
                    .unwrap_or(setup.len());
                self.batch(i, end)?;
                i = end;
            } else {
                eprintln!("{}", self.banner(i));
                self.host_step(i).map_err(|e| self.step_error(i, e))?;
                i += 1;
            }
            // What the step replaced or removed goes, so that it does not
            // count against limits.inodes in the steps after it.
            self.tree
                .prune()
                .map_err(|e| self.step_error(i - 1, StepFailure::Image(e)))?;
        }
        // `!Build`'s temporary mounts end with the build: what they
        // brought goes (an empty directory that was there before stays).
        let last = setup.len().saturating_sub(1);
        for (path, before) in std::mem::take(&mut self.temporary) {
            let parents = self.meta(0o755, 0, 0);
            let result = self
                .tree
                .remove(path.as_bytes())
                .and_then(|_| match before {
                    Some(meta) => self
                        .tree
                        .insert(path.as_bytes(), Inode::empty_dir(meta), &parents)
                        .map(drop),
                    None => Ok(()),
                });
            result.map_err(|e| self.step_error(last, StepFailure::Tree(e)))?;
        }
        self.tree
            .prune()
            .map_err(|e| self.step_error(setup.len().saturating_sub(1), StepFailure::Image(e)))?;
        Ok(())
    }

    /// `cella: base [2/5] !Sh echo hi > /etc/motd`.
    fn banner(&self, i: usize) -> String {
        let step = &self.container.setup[i].step;
        let summary = match step {
            Step::Tar { url, path, .. } if path == "/" => url.clone(),
            Step::Tar { url, path, .. } => format!("{url} at {path}"),
            Step::Download { url, path, .. } => format!("{url} to {path}"),
            Step::Git(git) => format!("{} to {}", git.url, git.path),
            Step::Package { summary, .. } => summary.clone(),
            Step::Image(image) => image.reference.clone(),
            Step::Container(name) => name.clone(),
            Step::Sh(script) => script.clone(),
            Step::Cmd(argv) => argv.join(" "),
            Step::Text(files) => files.keys().cloned().collect::<Vec<_>>().join(" "),
            Step::Copy(c) => format!("{} to {}", c.source, c.path),
            Step::EnsureDir(p) | Step::EmptyDir(p) | Step::Remove(p) => p.clone(),
            Step::Env(vars) => vars.keys().cloned().collect::<Vec<_>>().join(" "),
            Step::CacheDirs(dirs) => dirs
                .iter()
                .map(|(path, name)| format!("{path}={name}"))
                .collect::<Vec<_>>()
                .join(" "),
            Step::Depends { path, .. } => path.clone(),
            Step::Build {
                container,
                source,
                path,
                temporary,
            } => match temporary {
                true => format!("{container}:{source} at {path}, for the build"),
                false => format!("{container}:{source} to {path}"),
            },
            Step::Debian(d) => format!("{} {}", d.suite, d.variant),
            Step::Install(packages) => packages.join(" "),
        };
        // cella.yaml's text, shown as cella's own: control characters escaped.
        let summary = crate::text::escape_keeping_lines(&summary).into_owned();
        let mut line = summary.lines().next().unwrap_or("").to_owned();
        if line.chars().count() > 72 {
            line = line.chars().take(71).collect::<String>() + "…";
        } else if summary.lines().nth(1).is_some() {
            line.push_str(" …");
        }
        format!(
            "cella: {} [{}/{}] !{} {line}",
            self.container.name,
            i + 1,
            self.container.setup.len(),
            step.tag()
        )
    }

    fn step_error(&self, i: usize, source: StepFailure) -> BuildError {
        let step = &self.container.setup[i];
        BuildError::Step(Box::new(StepError {
            container: self.container.name.clone(),
            number: i + 1,
            total: self.container.setup.len(),
            tag: step.step.tag(),
            at: format!(
                "{}:{}",
                self.ctx
                    .config
                    .file_of(&self.container.file, step.pos)
                    .display(),
                step.pos
            ),
            source,
        }))
    }

    fn meta(&self, perm: u16, uid: u32, gid: u32) -> Meta {
        Meta {
            perm,
            uid,
            gid,
            mtime: self.epoch,
            ..Meta::default()
        }
    }

    fn host_step(&mut self, i: usize) -> Result<(), StepFailure> {
        let step = &self.container.setup[i].step;
        match step {
            Step::Tar {
                url,
                rel,
                path,
                sha256,
                subdir,
            } => self.tar_step(
                url,
                rel.as_deref(),
                path,
                sha256.as_deref(),
                subdir.as_deref(),
            ),
            Step::Download {
                url,
                path,
                mode,
                sha256,
            } => self.download(url, path, *mode, sha256.as_deref()),
            Step::Git(git) => self.git(git, i),
            Step::Container(name) => self.start_from(name),
            Step::Image(image) => self.image(image),
            Step::Text(files) => {
                let (meta, parents) = (self.meta(0o644, 0, 0), self.meta(0o755, 0, 0));
                let mut writer = writer(&self.work, &self.limits)?;
                for (path, content) in files {
                    let data = writer
                        .write_file_data(&mut content.as_bytes())
                        .map_err(StepFailure::Image)?;
                    let inode = Inode {
                        meta: meta.clone(),
                        kind: Kind::File(data),
                    };
                    self.tree.insert(path.as_bytes(), inode, &parents)?;
                }
                Ok(())
            }
            Step::Copy(copy) => self.copy(copy),
            Step::EnsureDir(path) => {
                let meta = self.meta(0o755, 0, 0);
                self.tree.ensure_dir(path.as_bytes(), &meta)?;
                Ok(())
            }
            Step::EmptyDir(path) => {
                let meta = self.meta(0o755, 0, 0);
                let id = self.tree.ensure_dir(path.as_bytes(), &meta)?;
                let names: Vec<Vec<u8>> = self
                    .tree
                    .entries(id)
                    .map(|e| e.keys().cloned().collect())
                    .unwrap_or_default();
                for name in names {
                    let mut child = path.as_bytes().to_vec();
                    child.push(b'/');
                    child.extend_from_slice(&name);
                    self.tree.remove(&child)?;
                }
                Ok(())
            }
            Step::Remove(path) => {
                self.tree.remove(path.as_bytes())?;
                Ok(())
            }
            Step::Env(vars) => {
                self.env.extend(vars.clone());
                Ok(())
            }
            Step::Depends { .. } | Step::CacheDirs(_) => Ok(()),
            Step::Build {
                container,
                source,
                path,
                temporary,
            } => {
                if *temporary {
                    // Like vagga's mount, it must not take away what is
                    // there: only a new or an empty directory.
                    let before = match self.tree.lookup(path.as_bytes()) {
                        None => None,
                        Some(id) if self.tree.entries(id).is_some_and(|e| e.is_empty()) => {
                            Some(self.tree.inodes[id].meta.clone())
                        }
                        Some(_) => {
                            return Err(StepFailure::Other(
                                format!(
                                    "temporary-mount {path}: it is there already and not an \
                                     empty directory; mount on a new directory"
                                )
                                .into(),
                            ))
                        }
                    };
                    self.temporary.push((path.clone(), before));
                }
                self.build_from(container, source, path)
            }
            Step::Debian(debian) => self.debian(debian),
            Step::Sh(_) | Step::Cmd(_) | Step::Install(_) | Step::Package { .. } => Ok(()),
        }
    }

    /// `!Container NAME`: a copy of that image's data and tree to build on.
    fn start_from(&mut self, name: &str) -> Result<(), StepFailure> {
        let image = self.image_of(name)?;
        let mut from = image.open_rootfs()?;
        let work_path = self.build.dir.display(Path::new(Self::WORK));
        self.work
            .set_len(0)
            .map_err(|e| StepFailure::io("write", &work_path, e))?;
        io::copy(&mut from, &mut &self.work).map_err(|e| StepFailure::io("copy", &work_path, e))?;
        self.tree = load_tree(&image)?;
        self.tree.set_max_inodes(max_inodes(&self.limits));
        self.config = image.info.config.clone();
        Ok(())
    }

    fn build_from(&mut self, name: &str, source: &str, dest: &str) -> Result<(), StepFailure> {
        let image = self.image_of(name)?;
        let from = image.open_rootfs()?;
        let from_tree = load_tree(&image)?;
        let mut writer = writer(&self.work, &self.limits)?;
        copy_subtree(
            &mut self.tree,
            &mut writer,
            &from_tree,
            &from,
            source.as_bytes(),
            dest.as_bytes(),
        )?;
        Ok(())
    }

    fn image_of(&mut self, name: &str) -> Result<Image, StepFailure> {
        let id = self
            .ctx
            .versions
            .id(name)
            .map_err(|e| StepFailure::Other(e.into()))?;
        self.ctx
            .store
            .get(&id)
            .ok_or_else(|| StepFailure::NotBuilt(name.to_owned()))
    }

    /// Runs setup steps `start..end` (all `!Sh`/`!Cmd`) in one build VM.
    fn batch(&mut self, start: usize, end: usize) -> Result<(), BuildError> {
        let fail = |this: &Self, i: usize, e: StepFailure| this.step_error(i, e);
        let mut env = BTreeMap::from([
            ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
            ("SOURCE_DATE_EPOCH".to_owned(), self.epoch.to_string()),
        ]);
        if let Some((name, value)) = self.ctx.emulated_host_env {
            env.insert(name.into(), value.into());
        }
        env.extend(self.env.clone());
        let setup = &self.container.setup[start..end];
        let installs = setup.iter().any(|s| matches!(s.step, Step::Install(_)));
        // A language package manager downloads in the VM.
        let packages = setup.iter().any(|s| matches!(s.step, Step::Package { .. }));
        // The cache directories of the `!CacheDirs` before the batch.
        let caches = self.container.setup[..start]
            .iter()
            .filter_map(|s| match &s.step {
                Step::CacheDirs(dirs) => Some(dirs.clone()),
                _ => None,
            })
            .flatten()
            .collect::<BTreeMap<String, String>>();
        let needs = BatchNeeds {
            network: installs || packages || self.container.build_network == Network::User,
            apt_cache: installs,
            caches: caches.into_iter().collect(),
        };
        let mut steps: Vec<BuildStep> = (start..end)
            .map(|i| BuildStep {
                banner: self.banner(i),
                argv: program_argv(&self.container.setup[i].step),
                env: env.clone().into_iter().collect(),
                // vagga's builds run in the project.
                cwd: "/work".to_owned(),
            })
            .collect();
        if let Step::Install(packages) = &self.container.setup[start].step {
            let ops = self
                .resolve_install(packages)
                .map_err(|e| fail(self, start, e))?;
            steps[0].argv = debian::install_argv(&ops, packages);
        }
        {
            let mut writer = writer(&self.work, &self.limits).map_err(|e| fail(self, start, e))?;
            writer
                .finish(&self.tree)
                .map_err(|e| fail(self, start, StepFailure::Image(e)))?;
        }
        let export_rel = Path::new("export");
        let export_path = self.build.dir.display(export_rel);
        let mut export = self
            .build
            .dir
            .create_new(export_rel, 0o600)
            .map_err(|e| fail(self, start, e.into()))?;
        if self.built_with.is_none() {
            let tools = self.ctx.runner.built_with();
            self.built_with = Some(tools.map_err(|e| fail(self, start, StepFailure::Vm(e)))?);
        }
        let outcome = {
            let mut bounded = Bounded {
                inner: &mut export,
                left: self.limits.image,
                limit: self.limits.image,
            };
            let mut sink = io::BufWriter::with_capacity(1 << 20, &mut bounded);
            let outcome = self
                .ctx
                .runner
                .run(
                    &self.work,
                    Build {
                        steps: steps.clone(),
                    },
                    needs,
                    &mut sink,
                )
                .map_err(|e| fail(self, start, StepFailure::Vm(e)))?;
            sink.flush()
                .map_err(|e| fail(self, start, StepFailure::io("write", &export_path, e)))?;
            outcome
        };
        let failed = start + outcome.step.map_or(0, |s| s as usize).min(end - start - 1);
        if outcome.status != 0 {
            let command = match &self.container.setup[failed].step {
                Step::Install(packages) => format!("apt-get install {}", packages.join(" ")),
                _ => shell_words(&steps[failed - start].argv),
            };
            return Err(fail(
                self,
                failed,
                StepFailure::Failed {
                    command,
                    status: outcome.status,
                },
            ));
        }
        let file = self
            .build
            .dir
            .open_file(export_rel)
            .map_err(|e| fail(self, end - 1, e.into()))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let epoch = self.epoch;
        let result = writer(&self.work, &self.limits)
            .and_then(|mut w| Ok(apply_export(&mut self.tree, &mut w, &mut reader, epoch)?));
        result.map_err(|e| fail(self, end - 1, e))?;
        let _ = self.build.dir.remove_file(export_rel);
        Ok(())
    }

    /// `!Install`'s host half: what dpkg must do to the image so far, as
    /// the host's apt resolved it, with the .debs downloaded (see `apt`).
    fn resolve_install(&self, packages: &[String]) -> Result<Vec<apt::DpkgOp>, StepFailure> {
        let root = self.build.path.join("apt-root");
        let _ = self.build.dir.remove_tree(Path::new("apt-root"));
        let cache = self
            .ctx
            .cache_dir
            .as_deref()
            .map(apt::AptCache::in_cache_dir)
            .ok_or(debian::DebianError::NoCache)
            .map_err(|e| StepFailure::Other(e.into()))?;
        let started = Instant::now();
        let guard = AddressGuard::new(self.ctx.allow_addresses);
        let ops = apt::export_root(&self.tree, &self.work, &root, &guard)
            .and_then(|apt| apt::resolve(&apt, &cache, packages))
            .map_err(|e| StepFailure::Other(e.into()));
        let _ = self.build.dir.remove_tree(Path::new("apt-root"));
        let ops = ops?;
        let debs: usize = ops
            .iter()
            .map(|op| match op {
                apt::DpkgOp::Unpack(debs) => debs.len(),
                _ => 0,
            })
            .sum();
        eprintln!(
            "cella: the host's apt-get resolved {} in {:.1} s: {debs} .debs to install",
            packages.join(" "),
            started.elapsed().as_secs_f64(),
        );
        Ok(ops)
    }

    /// Writes the canonical image and its tree; returns its sha256 and
    /// size, and the packages its dpkg status lists.
    fn pack(&mut self) -> Result<Packed, BuildError> {
        let last = self.container.setup.len().saturating_sub(1);
        let dir = &self.build.dir;
        let rootfs = Path::new(ROOTFS);
        let io_err = |what, rel: &Path, e| StepFailure::io(what, &dir.display(rel), e);
        let run = || -> Result<Packed, StepFailure> {
            let packages = apt::dpkg_status(&self.tree, &self.work)
                .map_err(|e| StepFailure::Other(e.into()))?
                .map(|status| debian::installed(&status))
                .unwrap_or_default();
            let out = dir.create_new(rootfs, 0o644)?;
            let total = self.work.metadata().map_or(0, |m| m.len());
            let progress = Progress::new("packing", total);
            let tree =
                compact_with_progress(&self.tree, &self.work, &out, self.limits.image, &|n| {
                    progress.add(n)
                })
                .map_err(StepFailure::Image)?;
            progress.finish();
            let json = tree.to_json().map_err(|e| StepFailure::Other(e.into()))?;
            let tree_rel = Path::new(TREE);
            dir.create_new(tree_rel, 0o644)?
                .write_all(&json)
                .map_err(|e| io_err("write", tree_rel, e))?;
            let _ = dir.remove_file(Path::new(Self::WORK));
            let mut hasher = HashingReader::new(dir.open_file(rootfs)?);
            let size =
                io::copy(&mut hasher, &mut io::sink()).map_err(|e| io_err("read", rootfs, e))?;
            Ok(Packed {
                digest: hasher.finish(),
                size,
                built_with: self.built_with.clone(),
                packages,
                config: self.config.clone(),
            })
        };
        run().map_err(|e| self.step_error(last, e))
    }
}

/// A writer that appends to the image being built, up to `limits.image`.
fn writer<'w>(work: &'w File, limits: &Limits) -> Result<ImageWriter<'w>, StepFailure> {
    ImageWriter::append_to(work)
        .map(|w| w.with_limit(limits.image))
        .map_err(StepFailure::Image)
}

/// `limits.inodes` as a tree's cap.
fn max_inodes(limits: &Limits) -> usize {
    usize::try_from(limits.inodes).unwrap_or(usize::MAX)
}

fn load_tree(image: &Image) -> Result<Tree, StepFailure> {
    let json = image.read_tree()?;
    Tree::from_json(&json).map_err(|e| StepFailure::Other(e.into()))
}

fn is_program(step: &Step) -> bool {
    matches!(
        step,
        Step::Sh(_) | Step::Cmd(_) | Step::Install(_) | Step::Package { .. }
    )
}

fn program_argv(step: &Step) -> Vec<String> {
    match step {
        Step::Sh(script) | Step::Package { script, .. } => {
            vec!["/bin/sh".into(), "-exc".into(), script.clone()]
        }
        Step::Cmd(argv) => argv.clone(),
        // `!Install`'s comes from the host's apt: see `Builder::batch`.
        _ => Vec::new(),
    }
}

/// A build VM's export stream on its way to a file: refused past
/// `limits.image`, before the disk fills.
struct Bounded<W> {
    inner: W,
    left: u64,
    limit: u64,
}

impl<W: Write> Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::other(format!(
                "the build VM sent more than {} of changes",
                super::error::limit_text(self.limit)
            )));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_streams_stop_at_the_image_limit() {
        let mut out = Vec::new();
        let mut b = Bounded {
            inner: &mut out,
            left: 10,
            limit: 10,
        };
        b.write_all(b"12345678").expect("fits");
        let e = b.write_all(b"901").expect_err("past the limit");
        assert!(
            e.to_string()
                .starts_with("the build VM sent more than 10 (limits.image in "),
            "{e}"
        );
        assert_eq!(out, b"12345678");
    }
}
