//! What a run mounts: the project at /work, the container's and the
//! command's volumes, and the host directories shared for them; and the
//! directory the workload starts in.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use guest_init::Mount;

use super::run::RunOptions;
use super::{state_dir, CommandError};
use crate::config::{Bind, Config, HostDir, Location, Volume};
use crate::devices::virtio::fs::server::ShareSpec;
use crate::image::store::Store;

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
        .path.display(), .path.display(), .settings
    )]
    NotAllowed {
        at: Location,
        path: PathBuf,
        settings: String,
    },
    #[error("{at}: {} is cella's own state, which no guest may see", .path.display())]
    CellaState { at: Location, path: PathBuf },
    #[error("{at}: {} is not a directory", .path.display())]
    NotADirectory { at: Location, path: PathBuf },
    #[error("{at}: cannot use {}", .path.display())]
    Host {
        at: Location,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("volume {target}: !Snapshot of another container (`container: {container}`) is not supported yet")]
    SnapshotContainer { target: String, container: String },
    #[error("persistent volume \"{name}\": cannot {what} {}", .path.display())]
    Persistent {
        name: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "persistent volume \"{name}\": its init command \"{command}\" exited with status {status}"
    )]
    InitFailed {
        name: String,
        command: String,
        status: i32,
    },
    #[error("work-dir {} is not a directory of the project", .0.display())]
    WorkDir(PathBuf),
    #[error(transparent)]
    Store(#[from] crate::image::store::StoreError),
}

/// The mounts and shares of one run.
#[derive(Debug)]
pub struct Plan {
    /// In mount order: a parent before what is mounted inside it.
    pub mounts: Vec<Mount>,
    /// The host directories, indexed as `Mount::Share::share`.
    pub shares: Vec<ShareSpec>,
    /// The project directory, symlinks resolved.
    project: PathBuf,
}

/// A persistent volume being filled by its init command: the command's
/// run mounts `dir` wherever the volume `name` is wanted.
#[derive(Debug, Clone)]
pub struct VolumeInit {
    pub name: String,
    pub target: String,
    pub dir: PathBuf,
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
    config: &Config,
    volumes: &BTreeMap<String, Volume>,
    opts: &RunOptions,
) -> Result<Plan, CommandError> {
    let mut plan = Plan {
        mounts: Vec::new(),
        shares: Vec::new(),
        project: canonical_project(config),
    };
    if !volumes.contains_key(WORK) {
        let project = plan.project.clone();
        let share = plan.share(&project, false);
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
                let dir = bind_dir(&plan.project, bind, opts)?;
                let share = plan.share(&dir, read_only);
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
                let dir = match &opts.volume_init {
                    Some(init) if &init.name == name => init.dir.clone(),
                    _ => persistent_dir(config, name),
                };
                let share = plan.share(&dir, false);
                Mount::Share {
                    target: target.clone(),
                    share,
                    read_only: false,
                }
            }
            Volume::Snapshot {
                size,
                owner_uid,
                owner_gid,
                container,
            } => {
                if let Some(container) = container {
                    return Err(VolumeError::SnapshotContainer {
                        target: target.clone(),
                        container: container.clone(),
                    }
                    .into());
                }
                Mount::Snapshot {
                    target: target.clone(),
                    size: *size,
                    owner: (owner_uid.is_some() || owner_gid.is_some())
                        .then(|| (owner_uid.unwrap_or(0), owner_gid.unwrap_or(0))),
                }
            }
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
    fn share(&mut self, dir: &Path, read_only: bool) -> u32 {
        let spec = ShareSpec {
            host_path: dir.to_path_buf(),
            read_only,
            // The guest never sees cella's own state: images, snapshots,
            // other volumes; however the project is shared.
            hidden: if dir == self.project {
                vec![".cella".into()]
            } else {
                Vec::new()
            },
        };
        intern(&mut self.shares, spec) as u32
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

/// The host directory of a bind, checked: a directory, and outside the
/// project only with the user's permission. Symlinks are resolved first,
/// so a link in the project cannot lead a bind out of it.
fn bind_dir(project: &Path, bind: &Bind, opts: &RunOptions) -> Result<PathBuf, VolumeError> {
    let path = match &bind.host {
        HostDir::Project(rel) => project.join(rel),
        HostDir::Absolute(abs) => abs.clone(),
    };
    let real = path.canonicalize().map_err(|source| VolumeError::Host {
        at: bind.at.clone(),
        path: path.clone(),
        source,
    })?;
    let allowed = real.starts_with(project)
        || opts.allow_host_paths.iter().any(|allowed| {
            let allowed = allowed.canonicalize().unwrap_or_else(|_| allowed.clone());
            real.starts_with(allowed)
        });
    if real.starts_with(project.join(".cella")) {
        return Err(VolumeError::CellaState {
            at: bind.at.clone(),
            path: real,
        });
    }
    if !allowed {
        return Err(VolumeError::NotAllowed {
            at: bind.at.clone(),
            path: real,
            settings: crate::config::settings::describe("allow-host-paths"),
        });
    }
    if !real.is_dir() {
        return Err(VolumeError::NotADirectory {
            at: bind.at.clone(),
            path: real,
        });
    }
    Ok(real)
}

fn canonical_project(config: &Config) -> PathBuf {
    config
        .project_dir
        .canonicalize()
        .unwrap_or_else(|_| config.project_dir.clone())
}

pub fn persistent_dir(config: &Config, name: &str) -> PathBuf {
    state_dir(config).join("volumes").join(name)
}

/// Creates every persistent volume `volumes` names that does not exist
/// yet; one with an `init-command` is filled by running that command
/// (once: concurrent cellas wait for the first) before it appears.
pub fn ensure_persistent(
    config: &Config,
    volumes: &BTreeMap<String, Volume>,
    opts: &RunOptions,
) -> Result<(), CommandError> {
    for (target, volume) in volumes {
        let Volume::Persistent { name, init_command } = volume else {
            continue;
        };
        if opts.volume_init.as_ref().is_some_and(|i| &i.name == name) {
            continue;
        }
        let dir = persistent_dir(config, name);
        if dir.is_dir() {
            continue;
        }
        let fail = |what: &'static str, path: &Path| {
            let (name, path) = (name.clone(), path.to_path_buf());
            move |source| VolumeError::Persistent {
                name,
                what,
                path,
                source,
            }
        };
        let parent = dir.parent().unwrap_or(&dir).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(fail("create", &parent))?;
        let _lock = Store::new(&state_dir(config))
            .lock(&format!("volume-{name}"))
            .map_err(VolumeError::Store)?;
        if dir.is_dir() {
            continue; // another cella made it meanwhile
        }
        let Some(init) = init_command else {
            std::fs::create_dir(&dir).map_err(fail("create", &dir))?;
            continue;
        };
        let work = parent.join(format!(".{name}.init"));
        if work.exists() {
            std::fs::remove_dir_all(&work).map_err(fail("remove", &work))?;
        }
        std::fs::create_dir(&work).map_err(fail("create", &work))?;
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
        let status = super::run::command(config, &init.name, &[], &init_opts)?;
        if status != 0 {
            let _ = std::fs::remove_dir_all(&work);
            return Err(VolumeError::InitFailed {
                name: name.clone(),
                command: init.name.clone(),
                status,
            }
            .into());
        }
        std::fs::rename(&work, &dir).map_err(fail("rename into place", &work))?;
    }
    Ok(())
}

/// The guest directory a run starts in: the command's `work-dir`, else
/// the user's directory relative to the project, under /work.
pub fn guest_cwd(config: &Config, work_dir: Option<&Path>) -> Result<String, CommandError> {
    let rel = match work_dir {
        Some(rel) => {
            if !config.project_dir.join(rel).is_dir() {
                return Err(VolumeError::WorkDir(rel.to_path_buf()).into());
            }
            rel.to_path_buf()
        }
        None => {
            let cwd = std::env::current_dir().map_err(CommandError::Cwd)?;
            let project = canonical_project(config);
            let cwd = cwd.canonicalize().unwrap_or(cwd);
            match cwd.strip_prefix(&project) {
                // Inside .cella the guest sees nothing: start at the top.
                Ok(rel) if !rel.starts_with(".cella") => rel.to_path_buf(),
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

    fn config(volumes: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        for d in ["data", "ro", "out"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let yaml = format!(
            "containers:\n  c:\n    setup: []\n    volumes:\n{volumes}commands:\n  init: !Command\n    container: c\n    run: [true]\n"
        );
        std::fs::write(dir.path().join("cella.yaml"), yaml).unwrap();
        let config = crate::config::load(&dir.path().join("cella.yaml")).unwrap();
        (dir, config)
    }

    fn targets(plan: &Plan) -> Vec<&str> {
        plan.mounts.iter().map(Mount::target).collect()
    }

    #[test]
    fn plan_orders_parents_first_and_shares_each_directory_once() {
        let (dir, config) = config(
            "      /work/sub: !Tmpfs {}\n      /a.b: !Empty\n      /a/b: !BindRO ro\n      /a: !BindRW /work/data\n      /v: !Persistent { name: v, init-command: init }\n      /z: !BindRO ro\n",
        );
        let volumes = &config.containers["c"].volumes;
        let plan = plan(&config, volumes, &RunOptions::default()).unwrap();
        assert_eq!(
            targets(&plan),
            ["/a", "/a/b", "/a.b", "/v", "/work", "/work/sub", "/z"]
        );
        let project = dir.path().canonicalize().unwrap();
        let shares: Vec<_> = plan
            .shares
            .iter()
            .map(|s| (s.host_path.clone(), s.read_only, s.hidden.len()))
            .collect();
        assert_eq!(
            shares,
            [
                (project.clone(), false, 1),
                (project.join("data"), false, 0),
                (project.join("ro"), true, 0),
                (dir.path().join(".cella/volumes/v"), false, 0),
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
    fn the_project_shared_by_a_bind_still_hides_cella() {
        let (_dir, config) = config("      /work: !BindRO .\n");
        let plan = plan(
            &config,
            &config.containers["c"].volumes,
            &RunOptions::default(),
        )
        .unwrap();
        assert_eq!(targets(&plan), ["/work"]);
        assert_eq!(plan.shares[0].hidden, [std::ffi::OsString::from(".cella")]);
        assert!(plan.shares[0].read_only);
    }

    #[test]
    fn binds_outside_the_project_need_permission_even_through_a_symlink() {
        let outside = tempfile::tempdir().unwrap();
        let (dir, config) = config("      /x: !BindRO link\n");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let volumes = &config.containers["c"].volumes;
        let err = plan(&config, volumes, &RunOptions::default()).unwrap_err();
        assert!(err.to_string().contains("is outside the project"), "{err}");
        let opts = RunOptions {
            allow_host_paths: vec![outside.path().to_path_buf()],
            ..Default::default()
        };
        let plan = plan(&config, volumes, &opts).unwrap();
        assert_eq!(
            plan.shares[1].host_path,
            outside.path().canonicalize().unwrap()
        );
    }
}
