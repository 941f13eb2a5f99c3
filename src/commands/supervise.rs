//! `cella NAME [--only CHILD...] [--exclude CHILD...]` for a `!Supervise`
//! command: every selected child in one VM, each with its container's
//! image in a drive of its own (one per distinct image) and its volumes
//! served by the VM's one virtio-fs device.

use guest_init::{ChildSpec, Mount, RunSpec};

use super::error::CommandError;
use super::options::RunOptions;
use super::program::prepare;
use super::project::Project;
use super::volumes::intern;
use crate::config::{Child, Config, Supervise, SuperviseMode};
use crate::devices::virtio::fs::server::ShareSpec;
use crate::image::store::Image;
use crate::launch::{self, fs_server, LaunchOptions};

/// Drives a supervised VM may have: one per distinct image.
pub const MAX_IMAGES: usize = 8;

/// The children `args` select (`--only A B`, `--exclude C`), in file order.
pub fn select<'s>(
    name: &str,
    group: &'s Supervise,
    args: &[String],
) -> Result<Vec<&'s Child>, CommandError> {
    let usage = |message: String| CommandError::Usage(format!("{name}: {message}"));
    let mut only = Vec::new();
    let mut exclude = Vec::new();
    let mut list: Option<&mut Vec<String>> = None;
    for arg in args {
        match arg.as_str() {
            "--only" => list = Some(&mut only),
            "--exclude" => list = Some(&mut exclude),
            _ if arg.starts_with('-') => {
                return Err(usage(format!(
                    "unknown option {arg:?}; a !Supervise command takes --only CHILD|TAG... and --exclude CHILD|TAG..."
                )))
            }
            _ => match list.as_deref_mut() {
                Some(names) => names.push(arg.clone()),
                None => {
                    return Err(usage(format!(
                        "unexpected argument {arg:?}; a !Supervise command takes --only CHILD|TAG... and --exclude CHILD|TAG..."
                    )))
                }
            },
        }
    }
    // A word names a child, or a tag of children (vagga's `tags`).
    let picks = |c: &Child, words: &[String]| {
        words.contains(&c.name) || c.command.tags.iter().any(|t| words.contains(t))
    };
    if let Some(unknown) = only.iter().chain(&exclude).find(|w| {
        !group
            .children
            .iter()
            .any(|c| picks(c, std::slice::from_ref(w)))
    }) {
        let known: Vec<&str> = group.children.iter().map(|c| c.name.as_str()).collect();
        let mut tags: Vec<&str> = group
            .children
            .iter()
            .flat_map(|c| c.command.tags.iter().map(String::as_str))
            .collect();
        tags.sort();
        tags.dedup();
        let tags = match tags.is_empty() {
            true => String::new(),
            false => format!("; tags: {}", tags.join(", ")),
        };
        return Err(usage(format!(
            "no child or tag named {unknown:?} (it has: {}{tags})",
            known.join(", ")
        )));
    }
    let selected: Vec<&Child> = group
        .children
        .iter()
        .filter(|c| only.is_empty() || picks(c, &only))
        .filter(|c| !picks(c, &exclude))
        .collect();
    if selected.is_empty() {
        return Err(usage("no child is left to run".into()));
    }
    Ok(selected)
}

/// Runs the `selected` children of `group` together in `project` (their
/// persistent volumes made already); the run's exit status.
pub fn run(
    config: &Config,
    project: &Project,
    name: &str,
    group: &Supervise,
    selected: Vec<&Child>,
    opts: &RunOptions,
) -> Result<i32, CommandError> {
    let mut images: Vec<Image> = Vec::new();
    let mut shares: Vec<ShareSpec> = Vec::new();
    let mut children = Vec::new();
    let mut hostname = None;
    let mut volume_images = false;
    for child in selected {
        let program = prepare(config, project, &child.command, &[], opts)?;
        // Each image once, in the drive of its index.
        let mut drive_of =
            |image: Image| match images.iter().position(|i| i.info.id == image.info.id) {
                Some(drive) => drive,
                None => {
                    images.push(image);
                    images.len() - 1
                }
            };
        let drive = drive_of(program.image);
        volume_images |= !program.volume_images.is_empty();
        let volume_drives: Vec<usize> = program.volume_images.into_iter().map(drive_of).collect();
        if images.len() > MAX_IMAGES {
            return Err(CommandError::Usage(format!(
                "{name}: its children use more than {MAX_IMAGES} containers"
            )));
        }
        let mounts = program
            .mounts
            .into_iter()
            .map(|m| merge_share(m, &program.shares, &mut shares))
            .map(|m| match m {
                // The child's own drive numbers (from 1) as the VM's.
                Mount::Image {
                    target,
                    drive,
                    writable,
                    size,
                    owner,
                } => Mount::Image {
                    target,
                    drive: volume_drives
                        .get((drive as usize).wrapping_sub(1))
                        .and_then(|d| u32::try_from(*d).ok())
                        .unwrap_or(u32::MAX),
                    writable,
                    size,
                    owner,
                },
                other => other,
            })
            .collect();
        hostname.get_or_insert(program.hostname);
        children.push(ChildSpec {
            name: child.name.clone(),
            argv: program.argv,
            env: program.env,
            cwd: program.cwd,
            uid: program.uid,
            gid: program.gid,
            groups: program.groups,
            rootfs_device: guest_init::drive_device(u32::try_from(drive).unwrap_or(u32::MAX)),
            mounts,
            read_only_root: program.read_only_root,
        });
    }
    let mut spec = RunSpec::new(Vec::new(), Vec::new());
    if let Some(hostname) = group.hostname.clone().or(hostname) {
        spec.hostname = hostname;
    }
    spec.supervise = Some(guest_init::Supervise {
        mode: match group.mode {
            SuperviseMode::StopOnFailure => guest_init::SuperviseMode::StopOnFailure,
            SuperviseMode::WaitAllSuccessful => guest_init::SuperviseMode::WaitAllSuccessful,
            SuperviseMode::WaitAll => guest_init::SuperviseMode::WaitAll,
        },
        kill_after_ms: u64::from(group.kill_unresponsive_after) * 1000,
        prefix: group.prefix,
        children,
    });
    let server = fs_server(shares, &opts.limits)?;
    let machine = opts.machine(group.resources, group.network, &group.ports);
    let disks = images
        .iter()
        .map(Image::open_rootfs)
        .collect::<Result<Vec<_>, _>>()?;
    let launch_opts = LaunchOptions {
        // A warm snapshot holds the children's roots only.
        warm_images: match volume_images {
            false => images
                .iter()
                .map(|i| (i.info.id.clone(), i.info.digest.clone()))
                .collect(),
            true => Vec::new(),
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

/// `mount` with its share (an index into `own`) renumbered into `all`,
/// where equal shares are served once.
fn merge_share(mount: Mount, own: &[ShareSpec], all: &mut Vec<ShareSpec>) -> Mount {
    match mount {
        Mount::Share {
            target,
            share,
            read_only,
        } => {
            let index = intern(all, own[share as usize].clone());
            Mount::Share {
                target,
                share: index as u32,
                read_only,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("r.tar"), b"").expect("tar");
        let yaml = "containers:\n  base:\n    setup: [!Tar {url: ./r.tar}]\ncommands:\n  s: !Supervise\n    children:\n      db: !Command {container: base, run: [a], tags: [service]}\n      app: !Command {container: base, run: [b]}\n      web: !Command {container: base, run: [c], tags: [service, front]}\n";
        crate::config::parse(yaml, &dir.path().join("cella.yaml")).expect("parse")
    }

    fn names(config: &Config, args: &[&str]) -> Result<Vec<String>, String> {
        let crate::config::CommandKind::Supervise(group) = &config.commands["s"].kind else {
            panic!("not a supervise");
        };
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        select("s", group, &args)
            .map(|c| c.iter().map(|c| c.name.clone()).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn only_and_exclude_select_children_in_file_order() {
        let config = group();
        assert_eq!(names(&config, &[]).expect("all"), ["db", "app", "web"]);
        assert_eq!(
            names(&config, &["--only", "web", "db"]).expect("only"),
            ["db", "web"]
        );
        assert_eq!(
            names(&config, &["--exclude", "app"]).expect("exclude"),
            ["db", "web"]
        );
        assert_eq!(
            names(&config, &["--only", "db", "app", "--exclude", "db"]).expect("both"),
            ["app"]
        );
        assert_eq!(
            names(&config, &["--only", "nope"]).expect_err("unknown"),
            "s: no child or tag named \"nope\" (it has: db, app, web; tags: front, service)"
        );
        // vagga's tags select children too.
        assert_eq!(
            names(&config, &["--only", "service"]).expect("tag"),
            ["db", "web"]
        );
        assert_eq!(
            names(&config, &["--only", "service", "app", "--exclude", "front"]).expect("tags"),
            ["db", "app"]
        );
        assert!(names(&config, &["db"])
            .expect_err("bare")
            .contains("unexpected argument"));
        assert!(names(&config, &["--all"])
            .expect_err("option")
            .contains("unknown option"));
        assert_eq!(
            names(&config, &["--exclude", "db", "app", "web"]).expect_err("none"),
            "s: no child is left to run"
        );
    }

    #[test]
    fn equal_shares_are_served_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for d in ["p", "q"] {
            std::fs::create_dir(tmp.path().join(d)).expect("mkdir");
        }
        let share = |p: &str| {
            let dir = crate::hostfs::Dir::open(&tmp.path().join(p)).expect("open");
            ShareSpec::new(dir, false, Vec::new()).expect("share")
        };
        let mut all = vec![share("p")];
        let own = vec![share("q"), share("p")];
        let m = |share| Mount::Share {
            target: "/x".into(),
            share,
            read_only: false,
        };
        assert_eq!(merge_share(m(1), &own, &mut all), m(0));
        assert_eq!(merge_share(m(0), &own, &mut all), m(1));
        assert_eq!(all.len(), 2);
    }
}
