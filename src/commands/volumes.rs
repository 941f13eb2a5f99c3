//! What a run mounts: the project at /work, the container's and the
//! command's volumes, and the host directories shared for them; and the
//! directory the workload starts in.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use guest_init::Mount;

use super::options::{RunOptions, VolumeInit};
use super::project::Project;
use crate::config::{Bind, Config, HostDir, Location, Volume};
use crate::devices::virtio::fs::server::ShareSpec;
use crate::hostfs::{Dir, FsError, Kind, Shown};
use crate::image::store::{Store, STATE_DIR};

/// Where the project is in every guest.
pub const WORK: &str = "/work";
/// A `!Tmpfs` without `size`, as in vagga.
const DEFAULT_TMPFS_SIZE: u64 = 100 << 20;
const DEFAULT_TMPFS_MODE: u32 = 0o1777;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "{at}: host path {} is outside the project; allow it with \
         --allow-host-path {} or in {}",
        Shown(.path), Shown(.path), .settings
    )]
    NotAllowed {
        at: Location,
        path: PathBuf,
        settings: String,
    },
    #[error("{at}: {} is cella's own state, which no guest may see", Shown(.path))]
    CellaState { at: Location, path: PathBuf },
    #[error("{at}: {} is not a directory", Shown(.path))]
    NotADirectory { at: Location, path: PathBuf },
    #[error("{at}: cannot share it with the guest")]
    Host {
        at: Location,
        #[source]
        source: Box<FsError>,
    },
    #[error("volume {target}: a run mounts at most {MAX_VOLUME_IMAGES} other containers")]
    TooManyImages { target: String },
    #[error("cache directory \"{name}\"")]
    CacheDir {
        name: String,
        #[source]
        source: Box<FsError>,
    },
    #[error("persistent volume \"{name}\"")]
    Persistent {
        name: String,
        #[source]
        source: Box<FsError>,
    },
    #[error(
        "persistent volume \"{name}\": its init command \"{command}\" exited with status {status}"
    )]
    InitFailed {
        name: String,
        command: String,
        status: i32,
    },
    #[error("work-dir {} is not a directory of the project", Shown(.0))]
    WorkDir(PathBuf),
    #[error("cannot find the current directory")]
    Cwd(#[source] io::Error),
    #[error(transparent)]
    Store(#[from] crate::image::store::StoreError),
    #[error("cannot share the project directory with the guest")]
    Project(#[source] FsError),
}

/// The mounts and shares of one run.
#[derive(Debug)]
pub struct Plan {
    /// In mount order: a parent before what is mounted inside it.
    pub mounts: Vec<Mount>,
    /// The host directories, indexed as `Mount::Share::share`.
    pub shares: Vec<ShareSpec>,
    /// The containers whose images are mounted (`!Container`,
    /// `!Snapshot { container }`): `Mount::Image::drive` n is the n-th
    /// (from 1; drive 0 is the run's own root).
    pub images: Vec<String>,
    /// The project directory's device and inode: its share hides `.cella`.
    project: (u64, u64),
}

/// The most other containers one run mounts: with its own root, a VM
/// has at most 8 drives.
pub const MAX_VOLUME_IMAGES: usize = 7;

impl Plan {
    /// The drive of container `name`'s image, from 1, added if new.
    fn image(&mut self, name: &str, target: &str) -> Result<u32, VolumeError> {
        let index = match self.images.iter().position(|n| n == name) {
            Some(i) => i,
            None if self.images.len() >= MAX_VOLUME_IMAGES => {
                return Err(VolumeError::TooManyImages {
                    target: target.to_owned(),
                })
            }
            None => {
                self.images.push(name.to_owned());
                self.images.len() - 1
            }
        };
        Ok(u32::try_from(index + 1).unwrap_or(u32::MAX))
    }
}

/// The volumes of a run: the container's, then the command's over them.
pub fn merged(
    container: &BTreeMap<String, Volume>,
    command: Option<&BTreeMap<String, Volume>>,
) -> BTreeMap<String, Volume> {
    let mut all = container.clone();
    if let Some(command) = command {
        all.extend(command.clone());
    }
    all
}

/// The mounts for `volumes` plus /work (unless a volume replaces it).
pub fn plan(
    project: &Project,
    volumes: &BTreeMap<String, Volume>,
    opts: &RunOptions,
) -> Result<Plan, VolumeError> {
    let meta = project.dir.meta().map_err(VolumeError::Project)?;
    let mut plan = Plan {
        mounts: Vec::new(),
        shares: Vec::new(),
        images: Vec::new(),
        project: (meta.dev, meta.ino),
    };
    if !volumes.contains_key(WORK) {
        let dir = project.dir.try_clone().map_err(VolumeError::Project)?;
        let share = plan.share(dir, false).map_err(VolumeError::Project)?;
        plan.mounts.push(Mount::Share {
            target: WORK.into(),
            share,
            read_only: false,
        });
    }
    let mut volumes: BTreeMap<String, Volume> = volumes.clone();
    if let Some(init) = &opts.volume_init {
        let present = volumes.values().any(|v| is_persistent(v, &init.name));
        if !present {
            volumes.insert(
                init.target.clone(),
                Volume::Persistent {
                    name: init.name.clone(),
                    init_command: None,
                },
            );
        }
    }
    for (target, volume) in &volumes {
        let mount = match volume {
            Volume::Tmpfs {
                size,
                mode,
                subdirs,
                files,
            } => Mount::Tmpfs {
                target: target.clone(),
                size: Some(size.unwrap_or(DEFAULT_TMPFS_SIZE)),
                mode: mode.unwrap_or(DEFAULT_TMPFS_MODE),
                subdirs: subdirs
                    .iter()
                    .map(|(name, mode)| (name.clone(), mode.unwrap_or(0o755)))
                    .collect(),
                files: files.clone().into_iter().collect(),
            },
            Volume::BindRW(bind) | Volume::BindRO(bind) => {
                let read_only = matches!(volume, Volume::BindRO(_));
                let dir = bind_dir(project, bind, opts)?;
                let share = plan
                    .share(dir, read_only)
                    .map_err(|source| VolumeError::Host {
                        at: bind.at.clone(),
                        source: Box::new(source),
                    })?;
                Mount::Share {
                    target: target.clone(),
                    share,
                    read_only,
                }
            }
            Volume::Empty => Mount::Empty {
                target: target.clone(),
            },
            Volume::Persistent { name, .. } => {
                let dir_name = match &opts.volume_init {
                    Some(init) if &init.name == name => init.dir.clone(),
                    _ => name.clone(),
                };
                store_share(project, &mut plan, VOLUMES, &dir_name, false, target).map_err(
                    |source| VolumeError::Persistent {
                        name: name.clone(),
                        source: Box::new(source),
                    },
                )?
            }
            Volume::CacheDir(name) => store_share(project, &mut plan, CACHES, name, true, target)
                .map_err(|source| VolumeError::CacheDir {
                name: name.clone(),
                source: Box::new(source),
            })?,
            Volume::Snapshot {
                size,
                owner_uid,
                owner_gid,
                container,
            } => {
                let owner = (owner_uid.is_some() || owner_gid.is_some())
                    .then(|| (owner_uid.unwrap_or(0), owner_gid.unwrap_or(0)));
                match container {
                    Some(name) => Mount::Image {
                        target: target.clone(),
                        drive: plan.image(name, target)?,
                        writable: true,
                        size: *size,
                        owner,
                    },
                    None => Mount::Snapshot {
                        target: target.clone(),
                        size: *size,
                        owner,
                    },
                }
            }
            Volume::Container(name) => Mount::Image {
                target: target.clone(),
                drive: plan.image(name, target)?,
                writable: false,
                size: None,
                owner: None,
            },
        };
        plan.mounts.push(mount);
    }
    // Parents first: compare paths component by component.
    plan.mounts.sort_by(|a, b| {
        let parts = |m: &Mount| {
            m.target()
                .split('/')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        parts(a).cmp(&parts(b))
    });
    Ok(plan)
}

impl Plan {
    /// The index of the share of `dir`, added if new.
    fn share(&mut self, dir: Dir, read_only: bool) -> Result<u32, FsError> {
        let mut spec = ShareSpec::new(dir, read_only, Vec::new())?;
        // The guest never sees cella's own state: images, snapshots,
        // other volumes; however the project is shared.
        if spec.id == self.project {
            spec.hidden.push(STATE_DIR.into());
        }
        Ok(intern(&mut self.shares, spec) as u32)
    }
}

/// The index of `item` in `list`, added at the end if it isn't there:
/// each share (or image) is served once however many mounts name it.
pub fn intern<T: PartialEq>(list: &mut Vec<T>, item: T) -> usize {
    match list.iter().position(|x| *x == item) {
        Some(index) => index,
        None => {
            list.push(item);
            list.len() - 1
        }
    }
}

fn is_persistent(volume: &Volume, wanted: &str) -> bool {
    matches!(volume, Volume::Persistent { name, .. } if name == wanted)
}

/// The directory of a persistent volume in `.cella/`.
/// A writable share of the directory `name` in `.cella/SUBDIR/` (made
/// first if `create`), checked to be the user's, mounted at `target`.
fn store_share(
    project: &Project,
    plan: &mut Plan,
    subdir: &str,
    name: &str,
    create: bool,
    target: &str,
) -> Result<Mount, FsError> {
    let dir = store_dir(&project.store, subdir, name, create)?;
    Ok(Mount::Share {
        target: target.to_owned(),
        share: plan.share(dir, false)?,
        read_only: false,
    })
}

/// `.cella/SUBDIR/NAME` of `store`, made first if `create`: reached
/// without following a link, and refused unless it is the user's own.
pub(super) fn store_dir(
    store: &Store,
    subdir: &str,
    name: &str,
    create: bool,
) -> Result<Dir, FsError> {
    let parent = store.subdir(subdir).map_err(|e| e.0)?;
    if create {
        parent.mkdir(Path::new(name), 0o700)?;
    }
    let dir = parent.open_dir(Path::new(name))?;
    dir.check_owner()?;
    Ok(dir)
}

const VOLUMES: &str = "volumes";
/// Where `!CacheDir` volumes live in `.cella/`.
pub const CACHES: &str = "cache";

/// The host directory of a bind, opened: in the project, or under a
/// directory the user allowed, reached beneath it without following any
/// symlink (so a link in the project cannot lead a bind out of it), never
/// cella's own `.cella/`.
fn bind_dir(project: &Project, bind: &Bind, opts: &RunOptions) -> Result<Dir, VolumeError> {
    let at = || bind.at.clone();
    let host = |source| VolumeError::Host {
        at: at(),
        source: Box::new(source),
    };
    let (base, rel) = match &bind.host {
        HostDir::Project(rel) => (project.dir.try_clone().map_err(host)?, rel.clone()),
        HostDir::Absolute(abs) => {
            let project_path = project.dir.path();
            let canonical = project_path.canonicalize().ok();
            let in_project = std::iter::once(project_path.to_path_buf())
                .chain(canonical)
                .find_map(|p| abs.strip_prefix(&p).ok().map(Path::to_path_buf));
            match in_project {
                Some(rel) => (project.dir.try_clone().map_err(host)?, rel),
                None => {
                    let allowed = opts.allow_host_paths.iter().find_map(|allowed| {
                        let canonical = allowed.canonicalize().ok();
                        std::iter::once(allowed.clone())
                            .chain(canonical)
                            .find_map(|a| {
                                Some((a.clone(), abs.strip_prefix(&a).ok()?.to_path_buf()))
                            })
                    });
                    let Some((allowed, rel)) = allowed else {
                        return Err(VolumeError::NotAllowed {
                            at: at(),
                            path: abs.clone(),
                            settings: crate::config::settings::describe("allow-host-paths"),
                        });
                    };
                    // The user's own directory: links in its path are the user's.
                    (Dir::open(&allowed).map_err(host)?, rel)
                }
            }
        }
    };
    let shown = base.display(&rel);
    if base.path() == project.dir.path() && rel.starts_with(STATE_DIR) {
        return Err(VolumeError::CellaState {
            at: at(),
            path: shown,
        });
    }
    match base.lstat(&rel).map_err(host)? {
        Some(meta) if meta.kind == Kind::Dir => {}
        Some(meta) if meta.kind == Kind::Symlink => {
            return Err(host(FsError::Symlink(shown)));
        }
        Some(_) => {
            return Err(VolumeError::NotADirectory {
                at: at(),
                path: shown,
            })
        }
        None => {
            return Err(host(FsError::Io {
                what: "open directory",
                path: shown,
                source: io::ErrorKind::NotFound.into(),
            }))
        }
    }
    let dir = base.open_dir(&rel).map_err(host)?;
    // An allowed directory may hold the project: its .cella stays hidden.
    let state = project.store.root().meta().map_err(host)?;
    let meta = dir.meta().map_err(host)?;
    if (meta.dev, meta.ino) == (state.dev, state.ino) {
        return Err(VolumeError::CellaState {
            at: at(),
            path: shown,
        });
    }
    Ok(dir)
}

/// Creates every persistent volume `volumes` names that does not exist
/// yet; one with an `init-command` is filled by running that command with
/// `run_init` (once: concurrent cellas wait for the first) before it
/// appears. `run_init` gets the options of the init run and the command's
/// name, and returns its exit status.
pub fn ensure_persistent<E: From<VolumeError>>(
    project: &Project,
    volumes: &BTreeMap<String, Volume>,
    opts: &RunOptions,
    run_init: &mut dyn FnMut(&RunOptions, &str) -> Result<i32, E>,
) -> Result<(), E> {
    for (target, volume) in volumes {
        let Volume::Persistent { name, init_command } = volume else {
            continue;
        };
        if opts.volume_init.as_ref().is_some_and(|i| &i.name == name) {
            continue;
        }
        let fail = |source| VolumeError::Persistent {
            name: name.clone(),
            source: Box::new(source),
        };
        let dir = project.store.subdir(VOLUMES).map_err(|e| fail(e.0))?;
        let exists = |dir: &Dir| -> Result<bool, VolumeError> {
            match dir.lstat(Path::new(name)).map_err(fail)? {
                None => Ok(false),
                Some(meta) if meta.kind == Kind::Dir => Ok(true),
                Some(_) => Err(fail(FsError::WrongType {
                    path: dir.display(Path::new(name)),
                    expected: "directory",
                })),
            }
        };
        if exists(&dir)? {
            continue;
        }
        let _lock = project
            .store
            .lock(&format!("volume-{name}"))
            .map_err(VolumeError::Store)?;
        if exists(&dir)? {
            continue; // another cella made it meanwhile
        }
        let Some(init) = init_command else {
            dir.mkdir(Path::new(name), 0o755).map_err(fail)?;
            continue;
        };
        let work = format!(".{name}.init");
        dir.remove_tree(Path::new(&work)).map_err(fail)?;
        dir.mkdir(Path::new(&work), 0o755).map_err(fail)?;
        eprintln!(
            "cella: initialising volume \"{name}\" with `cella {}`",
            init.name
        );
        let mut init_opts = opts.clone();
        init_opts.volume_init = Some(VolumeInit {
            name: name.clone(),
            target: target.clone(),
            dir: work.clone(),
        });
        let status = run_init(&init_opts, &init.name)?;
        if status != 0 {
            let _ = dir.remove_tree(Path::new(&work));
            return Err(VolumeError::InitFailed {
                name: name.clone(),
                command: init.name.clone(),
                status,
            }
            .into());
        }
        dir.rename(Path::new(&work), &dir, Path::new(name))
            .map_err(fail)?;
    }
    Ok(())
}

/// The guest directory a run starts in: the command's `work-dir`, else
/// the user's directory relative to the project, under /work.
pub fn guest_cwd(
    config: &Config,
    project: &Project,
    work_dir: Option<&Path>,
) -> Result<String, VolumeError> {
    let rel = match work_dir {
        Some(rel) => {
            let is_dir = project
                .dir
                .lstat(rel)
                .ok()
                .flatten()
                .is_some_and(|m| m.kind == Kind::Dir);
            if !is_dir {
                return Err(VolumeError::WorkDir(rel.to_path_buf()));
            }
            rel.to_path_buf()
        }
        None => {
            let cwd = std::env::current_dir().map_err(VolumeError::Cwd)?;
            let project = config
                .project_dir
                .canonicalize()
                .unwrap_or_else(|_| config.project_dir.clone());
            let cwd = cwd.canonicalize().unwrap_or(cwd);
            match cwd.strip_prefix(&project) {
                // Inside .cella the guest sees nothing: start at the top.
                Ok(rel) if !rel.starts_with(STATE_DIR) => rel.to_path_buf(),
                _ => PathBuf::new(),
            }
        }
    };
    let mut cwd = String::from(WORK);
    for part in rel.components() {
        cwd.push('/');
        cwd.push_str(&part.as_os_str().to_string_lossy());
    }
    Ok(cwd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(volumes: &str) -> (tempfile::TempDir, Config, Project) {
        let dir = tempfile::tempdir().unwrap();
        for d in ["data", "ro", "out", ".cella/volumes/v"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let yaml = format!(
            "containers:\n  c:\n    setup: []\n    volumes:\n{volumes}commands:\n  init: !Command\n    container: c\n    run: [true]\n"
        );
        std::fs::write(dir.path().join("cella.yaml"), yaml).unwrap();
        let config = crate::config::load(&dir.path().join("cella.yaml"), 1 << 20).unwrap();
        let project = Project::open(&config).unwrap();
        (dir, config, project)
    }

    fn targets(plan: &Plan) -> Vec<&str> {
        plan.mounts.iter().map(Mount::target).collect()
    }

    #[test]
    fn plan_orders_parents_first_and_shares_each_directory_once() {
        let (dir, config, project) = setup(
            "      /work/sub: !Tmpfs {}\n      /a.b: !Empty\n      /a/b: !BindRO ro\n      /a: !BindRW /work/data\n      /v: !Persistent { name: v, init-command: init }\n      /z: !BindRO ro\n",
        );
        let volumes = &config.containers["c"].volumes;
        let plan = plan(&project, volumes, &RunOptions::default()).unwrap();
        assert_eq!(
            targets(&plan),
            ["/a", "/a/b", "/a.b", "/v", "/work", "/work/sub", "/z"]
        );
        let p = dir.path();
        let shares: Vec<_> = plan
            .shares
            .iter()
            .map(|s| (s.path.clone(), s.read_only, s.hidden.len()))
            .collect();
        assert_eq!(
            shares,
            [
                (p.to_path_buf(), false, 1),
                (p.join("data"), false, 0),
                (p.join("ro"), true, 0),
                (p.join(".cella/volumes/v"), false, 0),
            ]
        );
        match &plan.mounts[6] {
            Mount::Share {
                share, read_only, ..
            } => assert_eq!((*share, *read_only), (2, true)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_containers_get_a_drive_each() {
        // `c` itself is the one other container this config has.
        let (_dir, config, project) = setup(
            "      /a: !Container c\n      /b: !Snapshot { container: c, size: 1Mi }\n      /c: !Snapshot {}\n",
        );
        let plan = plan(
            &project,
            &config.containers["c"].volumes,
            &RunOptions::default(),
        )
        .unwrap();
        assert_eq!(plan.images, ["c"]);
        let drives: Vec<_> = plan
            .mounts
            .iter()
            .filter_map(|m| match m {
                Mount::Image {
                    target,
                    drive,
                    writable,
                    size,
                    ..
                } => Some((target.as_str(), *drive, *writable, *size)),
                _ => None,
            })
            .collect();
        assert_eq!(
            drives,
            [("/a", 1, false, None), ("/b", 1, true, Some(1 << 20))]
        );
        assert!(matches!(&plan.mounts[2], Mount::Snapshot { target, .. } if target == "/c"));

        // A project cannot make a VM of a thousand drives.
        let many: BTreeMap<String, Volume> = (0..=MAX_VOLUME_IMAGES)
            .map(|i| (format!("/v{i}"), Volume::Container(format!("c{i}"))))
            .collect();
        let err = super::plan(&project, &many, &RunOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "volume /v7: a run mounts at most 7 other containers"
        );
    }

    #[test]
    fn the_project_shared_by_a_bind_still_hides_cella() {
        let (_dir, config, project) = setup("      /work: !BindRO .\n");
        let plan = plan(
            &project,
            &config.containers["c"].volumes,
            &RunOptions::default(),
        )
        .unwrap();
        assert_eq!(targets(&plan), ["/work"]);
        assert_eq!(plan.shares[0].hidden, [std::ffi::OsString::from(".cella")]);
        assert!(plan.shares[0].read_only);
    }

    #[test]
    fn binds_follow_no_symlink_and_never_reach_cella() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("sub")).unwrap();
        let (dir, config, project) = setup("      /x: !BindRO link\n");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let volumes = &config.containers["c"].volumes;
        let err = plan(&project, volumes, &RunOptions::default()).unwrap_err();
        assert!(format!("{:?}", err).contains("Symlink"), "{err:?}");
        // Allowing where the link points does not make the link followed.
        let opts = RunOptions {
            allow_host_paths: vec![outside.path().to_path_buf()],
            ..Default::default()
        };
        assert!(plan(&project, volumes, &opts).is_err());
        // An allowed directory is reached beneath, without links either.
        let (_d, config, project) = config_with_abs(outside.path(), "sub");
        let volumes = &config.containers["c"].volumes;
        let err = plan(&project, volumes, &RunOptions::default()).unwrap_err();
        assert!(err.to_string().contains("is outside the project"), "{err}");
        let plan = plan(&project, volumes, &opts).unwrap();
        assert_eq!(plan.shares[1].path, outside.path().join("sub"));
        std::os::unix::fs::symlink("/etc", outside.path().join("etc")).unwrap();
        let (_d, config, project) = config_with_abs(outside.path(), "etc");
        let volumes = &config.containers["c"].volumes;
        assert!(super::plan(&project, volumes, &opts).is_err());
        // .cella is never shared, by any name.
        let (_d, config, project) = setup("      /x: !BindRO .cella/volumes\n");
        let volumes = &config.containers["c"].volumes;
        let err = super::plan(&project, volumes, &opts).unwrap_err();
        assert!(err.to_string().contains("cella's own state"), "{err}");
    }

    fn config_with_abs(base: &Path, name: &str) -> (tempfile::TempDir, Config, Project) {
        setup(&format!(
            "      /x: !BindRO {}\n",
            base.join(name).display()
        ))
    }
}
