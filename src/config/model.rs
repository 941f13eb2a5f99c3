//! The typed config model: plain data, no YAML types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::error::{ConfigError, Location, Pos};
use crate::hostfs::Filter;

/// A loaded and validated cella.yaml (or vagga.yaml).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The config file, made absolute (symlinks are not resolved).
    pub path: PathBuf,
    /// The directory holding the config file; relative paths resolve here.
    pub project_dir: PathBuf,
    pub containers: BTreeMap<String, Container>,
    pub commands: BTreeMap<String, Command>,
    /// `aliases` of the commands: each other name, and the command's.
    pub aliases: BTreeMap<String, String>,
    /// The files `!*Include` and its kin read (absolute): a position with
    /// `file` n was read from the n-th.
    pub includes: Vec<PathBuf>,
}

impl Config {
    /// The file `pos` is in: an included file, or `holder` (the file of
    /// the container or command it belongs to).
    pub fn file_of<'a>(&'a self, holder: &'a std::path::Path, pos: Pos) -> &'a std::path::Path {
        included_file(&self.includes, pos).unwrap_or(holder)
    }
}

/// The included file `pos` is in, of those `files` lists (`Pos::file` n
/// is the n-th); None for a position in the file holding it (0).
pub(super) fn included_file(files: &[PathBuf], pos: Pos) -> Option<&std::path::Path> {
    usize::from(pos.file)
        .checked_sub(1)
        .and_then(|i| files.get(i))
        .map(PathBuf::as_path)
}

/// A container: a root filesystem built from its setup steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub setup: Vec<SetupStep>,
    /// Environment for every command run in this container.
    pub environ: BTreeMap<String, String>,
    /// Volumes by their absolute path in the guest.
    pub volumes: BTreeMap<String, Volume>,
    /// `environ-file`: read at run time, below `environ`.
    pub environ_file: Option<EnvironFile>,
    /// `hostname` of the VMs running this container's commands.
    pub hostname: Option<String>,
    /// `build-network`: whether the build's `!Sh`/`!Cmd` steps get a NIC
    /// (`!Install` always does).
    pub build_network: Network,
    /// Where `build-network` is written, if it is.
    pub build_network_at: Option<Location>,
    /// Where the container's name is in the file.
    /// The config file that defines it: cella.yaml, or a mixin.
    pub file: PathBuf,
    pub pos: Pos,
    /// The first project file its setup names that is missing or not
    /// usable: reported when the container is built or versioned, not
    /// when cella.yaml is loaded, so `cella` lists commands without
    /// touching any input file (as vagga does).
    pub input_problem: Option<InputProblem>,
}

/// A project file a setup step names that cannot be used, and where the
/// step names it; becomes the [`super::ConfigError`] it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputProblem {
    Missing { at: Location, path: PathBuf },
    NotAFile { at: Location, path: PathBuf },
    Invalid { at: Location, message: String },
}

impl From<InputProblem> for ConfigError {
    fn from(p: InputProblem) -> ConfigError {
        match p {
            InputProblem::Missing { at, path } => ConfigError::MissingFile { at, path },
            InputProblem::NotAFile { at, path } => ConfigError::NotAFile { at, path },
            InputProblem::Invalid { at, message } => ConfigError::Invalid { at, message },
        }
    }
}

/// One step of a container's setup, and where it is in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupStep {
    pub step: Step,
    /// The position of the step's tag.
    pub pos: Pos,
}

/// What a setup step does; the YAML tag names the variant. Paths inside
/// the container (`path`, `EnsureDir`, `Remove`, `Text` keys, `Build`'s
/// `source` and `path`) are absolute and have no `..` component (checked).
/// Host paths are relative to the project directory and stay inside it
/// (`rel`: normalised, no `..`, no leading `/`); cella reaches them beneath
/// the project directory without following any symlink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `!Tar {url, path?, sha256?, subdir?}`: unpack a tarball (a project
    /// file, or an http(s) URL downloaded once into the user's cache) at
    /// `path` (default `/`).
    Tar {
        /// The `url` as written.
        url: String,
        /// A project file: `url` relative to the project directory (a
        /// regular file when loaded); none for an http(s) URL.
        rel: Option<PathBuf>,
        /// Where to unpack, absolute, default `/`.
        path: String,
        /// The expected sha256 of the file, lowercase hex (checked: 64 hex digits).
        sha256: Option<String>,
        /// Only this directory of the archive, unpacked as its root
        /// (relative, normalised, no `..`); none: the whole archive.
        subdir: Option<String>,
    },
    /// `!Download {url, path, mode?, sha256?}`: an http(s) file, downloaded
    /// once into the user's cache, put at `path`.
    Download {
        url: String,
        /// Absolute, the file's own path.
        path: String,
        /// Default 0o644.
        mode: u32,
        sha256: Option<String>,
    },
    /// `!Image REF` or `!Image {ref, digest?}`: start from an OCI image.
    /// Only as the first step (checked).
    Image(ImageStep),
    /// `!Container NAME`: start from another container's image. Only as
    /// the first step (checked); the container exists and no cycle (checked).
    Container(String),
    /// `!Sh "script"`: `sh -exc script` in the container being built.
    Sh(String),
    /// `!Cmd [argv]`: a program in the container being built; never empty.
    Cmd(Vec<String>),
    /// `!Text {path: content}`: write files (mode 0644).
    Text(BTreeMap<String, String>),
    /// `!Copy {...}`: copy from the project directory.
    Copy(CopyStep),
    /// `!EmptyDir /path`: the directory emptied (made if missing), as vagga.
    EmptyDir(String),
    /// `!EnsureDir path`: make the directory and its parents (mode 0755).
    EnsureDir(String),
    /// `!Remove path`: remove a file or a tree, if present.
    Remove(String),
    /// `!Env {K: V}`: environment for the later build steps of this container.
    Env(BTreeMap<String, String>),
    /// `!CacheDirs {/guest/path: NAME}`: for the later program steps of
    /// this container, the project's cache directory NAME
    /// (`.cella/cache/NAME`, the one a `!CacheDir NAME` volume mounts)
    /// at each path, kept between builds, as vagga's.
    CacheDirs(BTreeMap<String, String>),
    /// `!Depends path`: the content of a project file or directory joins the image id.
    Depends {
        /// As written.
        path: String,
        /// Relative to the project directory; it existed when loaded.
        rel: PathBuf,
        /// Which files under a directory count.
        select: Selection,
    },
    /// `!Debian {suite, variant?, mirror?}`: a Debian root made by
    /// mmdebstrap on the host. Only as the first step (checked).
    Debian(DebianStep),
    /// `!Install [packages]`: apt-get install in a build VM with a NIC,
    /// the .debs cached in the user's cache directory; never empty.
    Install(Vec<String>),
    /// A language package manager run in a build VM with the build's
    /// network: what vagga's `!Py3Install`, `!NpmInstall`, `!GemInstall`
    /// and the like stand for after their `!Install` and `!CacheDirs`
    /// (see `config::packages`); `script` by `sh -exc`.
    Package {
        /// The vagga step's tag, for messages.
        tag: &'static str,
        /// What it installs, for the build's output.
        summary: String,
        script: String,
    },
    /// `!Git {url, revision?, branch?, path}`: a repository's tree at
    /// `path`, fetched on the host (see `config::git`).
    Git(GitStep),
    /// `!Build {container, source?, path? | temporary-mount?}`: copy
    /// `source` (default `/`) out of another container's image to `path`
    /// (default: `source`); with `temporary-mount`, there only until the
    /// end of this container's build (vagga's read-only mount).
    Build {
        container: String,
        source: String,
        path: String,
        /// `temporary-mount`: gone from the finished image.
        temporary: bool,
    },
}

/// The body of `!Git`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitStep {
    /// As written; parses as a [`super::git::GitUrl`] (checked), and is
    /// https unless `revision` is a full commit id (checked).
    pub url: String,
    /// A branch, tag or commit id (checked: no option, range or `..`).
    pub revision: Option<String>,
    /// A branch (checked as `revision`).
    pub branch: Option<String>,
    /// Where the tree goes, absolute.
    pub path: String,
}

/// The body of `!Debian`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebianStep {
    /// A Debian suite or codename (`bookworm`, `stable`).
    pub suite: String,
    /// mmdebstrap's variant; default `minbase`.
    pub variant: String,
    /// An http(s) URL; default deb.debian.org.
    pub mirror: Option<String>,
}

/// The mirror of a `!Debian` without one.
/// cella's own commands (`cella _run …`): no command of a project may be
/// called so, as `cella NAME` would never reach it. main's tests hold
/// this list to the command line's.
pub const BUILTIN_COMMANDS: &[&str] = &[
    "_build",
    "_cache",
    "_clean",
    "_list",
    "_pack_image",
    "_push_image",
    "_run",
    "_verify",
    "_version_hash",
];

pub const DEFAULT_DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// The body of `!Image`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageStep {
    /// `ref` as written (skopeo's spelling), for messages.
    pub reference: String,
    pub source: ImageSource,
    /// `digest`: `sha256:HEX` (checked) that the image's manifest must
    /// have (for a docker-archive, which has none: its config).
    pub digest: Option<String>,
}

/// Where an `!Image` comes from. Paths are project files, as for `!Tar`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// `oci:DIR[:TAG]`: an OCI image layout directory.
    Layout { rel: PathBuf, tag: Option<String> },
    /// `oci-archive:FILE[:TAG]`: an OCI image layout in a tarball.
    OciArchive { rel: PathBuf, tag: Option<String> },
    /// `docker-archive:FILE`: what `docker save` writes (its first image).
    DockerArchive { rel: PathBuf },
    /// `docker://[HOST[:PORT]/]NAME[:TAG][@DIGEST]`: from a registry.
    Registry(RegistryRef),
}

/// An image in a registry, as `docker://` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryRef {
    /// `HOST[:PORT]`, lowercase; none: the settings' default registry.
    pub registry: Option<String>,
    /// The repository path (`library/debian`, `team/app`), checked.
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest is given.
    pub tag: String,
}

/// The body of `!Copy`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyStep {
    /// As written: relative to the project directory, absolute under
    /// `/work`, or another absolute path (in the image being built).
    pub source: String,
    /// `source` relative to the project directory (`/work/x` → `x`); it
    /// existed when loaded. None when `source` is a path in the image
    /// being built (vagga's copy inside the container).
    pub rel: Option<PathBuf>,
    /// Destination in the container, absolute.
    pub path: String,
    /// Which files under `source` are copied.
    pub select: Selection,
    /// Owner of the copies; default 0.
    pub owner_uid: Option<u32>,
    pub owner_gid: Option<u32>,
    /// Bits cleared from vagga's modes (0o777 for directories and files
    /// their owner may run, 0o666 for other files); default 0o002.
    pub umask: u32,
    /// vagga's `preserve-permissions`: the source's mode bits (all
    /// 0o7777 of them) instead, and no umask.
    pub preserve_permissions: bool,
    /// vagga's `preserve-times`: the source's mtimes instead of the
    /// build epoch (they then join the image id).
    pub preserve_times: bool,
}

/// Which files under a project path `!Copy` and `!Depends` take: vagga's
/// regexes or its glob `rules` (never both).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only paths (relative to the source, `/`-separated) matching this are taken.
    pub include_regex: Option<String>,
    /// Paths matching this are skipped.
    pub exclude_regex: Option<String>,
    /// vagga's `rules`, its default ones first unless `no-default-rules`.
    pub rules: Option<Vec<String>>,
}

impl Selection {
    /// The walk filter (the rules and regexes were checked when loaded).
    pub fn filter(&self) -> Result<Filter, String> {
        match &self.rules {
            Some(rules) => Filter::rules(rules),
            None => Filter::new(self.include_regex.as_deref(), self.exclude_regex.as_deref())
                .map_err(|e| e.to_string()),
        }
    }

    /// `rules` holds no rule that takes files (vagga warns: nothing is copied).
    pub fn takes_nothing(&self) -> bool {
        self.rules
            .as_ref()
            .is_some_and(|rules| rules.iter().all(|r| r.starts_with('!')))
    }
}

impl Step {
    /// The YAML tags of all setup steps, for messages.
    pub const TAGS: &'static [&'static str] = &[
        "Tar",
        "Download",
        "Image",
        "Container",
        "Sh",
        "Cmd",
        "Text",
        "Copy",
        "EnsureDir",
        "EmptyDir",
        "Remove",
        "Env",
        "CacheDirs",
        "Depends",
        "Build",
        "Debian",
        "Install",
        "TarInstall",
        "Git",
        "GitInstall",
        "Py3Install",
        "Py3Requirements",
        "PipConfig",
        "NpmInstall",
        "NpmDependencies",
        "NpmConfig",
        "GemInstall",
        "GemBundle",
        "GemConfig",
    ];

    /// The step's YAML tag without the `!`.
    pub fn tag(&self) -> &'static str {
        match self {
            Step::Tar { .. } => "Tar",
            Step::Download { .. } => "Download",
            Step::Image(_) => "Image",
            Step::Container(_) => "Container",
            Step::Sh(_) => "Sh",
            Step::Cmd(_) => "Cmd",
            Step::Text(_) => "Text",
            Step::Copy(_) => "Copy",
            Step::EnsureDir(_) => "EnsureDir",
            Step::EmptyDir(_) => "EmptyDir",
            Step::Remove(_) => "Remove",
            Step::Env(_) => "Env",
            Step::CacheDirs(_) => "CacheDirs",
            Step::Depends { .. } => "Depends",
            Step::Build { .. } => "Build",
            Step::Debian(_) => "Debian",
            Step::Install(_) => "Install",
            Step::Git(_) => "Git",
            Step::Package { tag, .. } => tag,
        }
    }

    /// The containers this step needs built first.
    pub fn uses(&self) -> Option<&str> {
        match self {
            Step::Container(name)
            | Step::Build {
                container: name, ..
            } => Some(name),
            _ => None,
        }
    }
}

/// A volume kind; the YAML tag names the variant (as in vagga).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Volume {
    /// `!Tmpfs {size?, mode?, subdirs?, files?}`.
    Tmpfs {
        /// Bytes; YAML takes a number or a size like `100Mi`, `1G`.
        size: Option<u64>,
        /// Default 0o1777 for `/tmp`-like use; as in vagga.
        mode: Option<u32>,
        /// Directory name → its mode.
        subdirs: BTreeMap<String, Option<u32>>,
        /// File name → its content (null is empty).
        files: BTreeMap<String, String>,
    },
    /// `!BindRW path`: a host directory, writable.
    BindRW(Bind),
    /// `!BindRO path`: a host directory the guest cannot change.
    BindRO(Bind),
    /// `!Empty`.
    Empty,
    /// `!Persistent {name, init-command?}` (or `!Persistent NAME`).
    Persistent {
        name: String,
        /// A command of the same config (checked), run once to fill the
        /// volume when it is created.
        init_command: Option<NameRef>,
    },
    /// `!CacheDir NAME`: a directory of the project's `.cella/cache/`,
    /// writable, kept between runs and shared by every command naming it.
    CacheDir(String),
    /// `!Container NAME`: the root of another container's image,
    /// read-only.
    Container(String),
    /// `!Snapshot {size?, owner-uid?, owner-gid?, container?}`: with
    /// `container`, that container's root rather than the directory.
    Snapshot {
        size: Option<u64>,
        owner_uid: Option<u32>,
        owner_gid: Option<u32>,
        container: Option<String>,
    },
}

/// The host directory of a `!BindRW`/`!BindRO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// As written.
    pub path: String,
    pub host: HostDir,
    /// Where the path is in the file, for errors found at run time.
    pub at: Location,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostDir {
    /// Relative to the project directory (`x`, `./x` or `/work/x`),
    /// normalised, never climbing out.
    Project(PathBuf),
    /// Any other absolute host path, normalised: a run needs the user's
    /// permission for it (`--allow-host-path` or the settings file).
    Absolute(PathBuf),
}

/// A name of something else in the config, and where it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameRef {
    pub name: String,
    pub at: Location,
}

impl Volume {
    pub const TAGS: &'static [&'static str] = &[
        "Tmpfs",
        "BindRW",
        "BindRO",
        "Empty",
        "Persistent",
        "CacheDir",
        "Snapshot",
        "Container",
    ];
}

/// A user-facing command: `cella NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub name: String,
    /// Shown by `cella` when it lists the commands.
    pub description: Option<String>,
    pub kind: CommandKind,
    /// Where the command's name is in the file.
    pub pos: Pos,
    pub info: CommandInfo,
}

/// vagga's parameters of a top-level command about how it is listed,
/// named and announced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandInfo {
    /// `group`: the header `cella` lists the command under.
    pub group: Option<String>,
    /// `aliases`: other names `cella NAME` runs it by.
    pub aliases: Vec<NameRef>,
    /// `banner`: printed on stderr `banner-delay` seconds after the run
    /// starts, unless it has ended by then.
    pub banner: Option<String>,
    pub banner_delay: u32,
    /// `epilog`: printed on stderr after a run that exits with status 0.
    pub epilog: Option<String>,
    /// `options`: the whole docopt text (see `docopt::text`) that parses
    /// the command's arguments into `VAGGAOPT_*`/`VAGGACLI_*` variables.
    pub options: Option<String>,
}

/// `pid1mode` of a command: what guest-init, the VM's PID 1, waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pid1Mode {
    /// `wait` (the default): the run ends when the program exits; what it
    /// left running ends with the VM.
    #[default]
    Wait,
    /// `wait-all-children`: the run ends when every process has exited;
    /// the status is the program's.
    WaitAllChildren,
}

/// What kind of command it is; the YAML tag names the variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandKind {
    /// `!Command`: run one program in one container.
    Command(Box<SimpleCommand>),
    /// `!Supervise`: run several commands together in one VM.
    Supervise(Supervise),
}

impl CommandKind {
    /// The YAML tags of all command kinds, for messages.
    pub const TAGS: &'static [&'static str] = &["Command", "Supervise"];

    /// The kind's YAML tag without the `!`.
    pub fn tag(&self) -> &'static str {
        match self {
            CommandKind::Command(_) => "Command",
            CommandKind::Supervise(_) => "Supervise",
        }
    }

    /// The commands to run first, in order, as written.
    pub fn prerequisites(&self) -> &[NameRef] {
        match self {
            CommandKind::Command(c) => &c.prerequisites,
            CommandKind::Supervise(s) => &s.prerequisites,
        }
    }

    /// Every `!Command` body of this command: itself, or each child.
    pub fn bodies(&self) -> Vec<&SimpleCommand> {
        match self {
            CommandKind::Command(c) => vec![c],
            CommandKind::Supervise(s) => s.children.iter().map(|c| &c.command).collect(),
        }
    }
}

/// What the VM of a command gets: `cpus` and `memory` (bytes), each
/// `None` for the default (or the command line's override).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpus: Option<u32>,
    pub memory: Option<u64>,
}

/// A project file of environment variables (`environ-file`): one
/// `NAME=value` per line; blank lines and lines starting with `#` are skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvironFile {
    /// Relative to the project directory, normalised, never climbing out.
    pub path: PathBuf,
    /// Where the field is in cella.yaml.
    pub at: Location,
}

/// The body of a `!Supervise`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Supervise {
    pub mode: SuperviseMode,
    /// The children in file order; names are unique.
    pub children: Vec<Child>,
    /// Seconds between SIGTERM and SIGKILL when children are stopped (default 2).
    pub kill_unresponsive_after: u32,
    /// `prefix`: each line a child writes starts with its name (default true).
    pub prefix: bool,
    pub prerequisites: Vec<NameRef>,
    pub resources: Resources,
    /// `hostname` of the VM, all children share it.
    pub hostname: Option<String>,
    /// `network` and `ports` of the VM, all children share them.
    pub network: Network,
    /// Where `network` is written, if it is.
    pub network_at: Option<Location>,
    pub ports: Vec<PortMap>,
}

/// `network` of a command (`build-network` of a container).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// `none` (the default): the VM has only loopback.
    #[default]
    None,
    /// `user`: a NIC backed by passt, user-mode networking on the host.
    User,
}

/// One entry of `ports`: a host port published to a guest port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMap {
    pub host: u16,
    pub guest: u16,
}

/// A child of a `!Supervise`: a `!Command` (with no prerequisites nor
/// resources of its own: the VM is shared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    pub name: String,
    pub command: SimpleCommand,
    pub pos: Pos,
}

/// `mode` of a `!Supervise`: when the children are stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SuperviseMode {
    /// `stop-on-failure` (the default): the first child to exit stops the others.
    #[default]
    StopOnFailure,
    /// `wait-all-successful`: one failing stops the others; otherwise wait for all.
    WaitAllSuccessful,
    /// `wait-all`: wait for every child, whatever its status.
    WaitAll,
}

/// The body of a `!Command`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleCommand {
    /// The name of a container of the same config (checked).
    pub container: String,
    /// The argv, never empty; `run: "STRING"` becomes `["/bin/sh", "-c", STRING]`.
    pub run: Vec<String>,
    /// Environment for this command, over the container's.
    pub environ: BTreeMap<String, String>,
    /// Volumes of this command, over the container's.
    pub volumes: BTreeMap<String, Volume>,
    /// `work-dir`: where the command starts, relative to the project
    /// directory (normalised); by default the user's own directory.
    pub work_dir: Option<PathBuf>,
    pub write_mode: WriteMode,
    /// `environ-file`: read at run time, below `environ`.
    pub environ_file: Option<EnvironFile>,
    /// `user-id` and `group-id` the program runs as (default 0).
    pub user_id: Option<u32>,
    pub group_id: Option<u32>,
    /// `hostname` of the VM, over the container's; default `cella`.
    pub hostname: Option<String>,
    pub prerequisites: Vec<NameRef>,
    pub resources: Resources,
    /// `network`: `none` unless asked for.
    pub network: Network,
    /// Where `network` is written, if it is.
    pub network_at: Option<Location>,
    /// `ports`: published on the host (only with `network: user`, checked).
    pub ports: Vec<PortMap>,
    /// `run` was a string, run by `/bin/sh -c`.
    pub shell: bool,
    /// `accepts-arguments`: whether `cella NAME ARGS…` may pass arguments
    /// (vagga's default: not to a shell string, which gets them as `$1…`).
    pub accepts_arguments: bool,
    /// `tags`: what `--only`/`--exclude` select a `!Supervise` child by,
    /// besides its name.
    pub tags: Vec<String>,
    pub pid1mode: Pid1Mode,
    /// `supplementary-gids` of the program, besides `group-id`.
    pub supplementary_gids: Vec<u32>,
}

impl SimpleCommand {
    /// `cella _run CONTAINER ARGV...`: a command with nothing but its argv.
    pub fn adhoc(container: String, run: Vec<String>, write_mode: WriteMode) -> SimpleCommand {
        SimpleCommand {
            container,
            run,
            environ: BTreeMap::new(),
            volumes: BTreeMap::new(),
            work_dir: None,
            write_mode,
            environ_file: None,
            user_id: None,
            group_id: None,
            hostname: None,
            prerequisites: Vec::new(),
            resources: Resources::default(),
            network: Network::None,
            network_at: None,
            ports: Vec::new(),
            shell: false,
            accepts_arguments: true,
            tags: Vec::new(),
            pid1mode: Pid1Mode::Wait,
            supplementary_gids: Vec::new(),
        }
    }
}

/// `write-mode` of a command: what happens to writes to the container's root.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// `read-only` (the default, as in vagga): writes fail with EROFS.
    #[default]
    ReadOnly,
    /// `transient-overlay`: writes succeed and vanish with the VM.
    TransientOverlay,
}
