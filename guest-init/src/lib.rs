//! The host ↔ guest protocol of cella, compiled by both sides: the guest's
//! PID 1 (this crate's binary) and the `cella` VMM on the host.
//!
//! The channel is a multiport virtio-console. Each port carries one stream;
//! the control port carries newline-delimited JSON messages. The guest
//! speaks first with [`GuestMsg::Hello`] and its [`PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

mod exit_code;

pub use exit_code::ExitCode;

/// Bumped on every incompatible change to the messages below.
pub const PROTOCOL_VERSION: u32 = 9;

/// Port ids on the multiport virtio-console, in the order the host adds them.
pub const PORT_CONTROL: u32 = 0;
pub const PORT_STDIN: u32 = 1;
pub const PORT_STDOUT: u32 = 2;
pub const PORT_STDERR: u32 = 3;
/// Guest → host: a build VM's changes to the root, as an [`ExportRecord`] stream.
pub const PORT_EXPORT: u32 = 4;
pub const NUM_PORTS: u32 = 5;

/// Names the host gives the ports (guest side: /sys/class/virtio-ports/*/name).
pub const PORT_NAMES: [&str; NUM_PORTS as usize] = [
    "cella.control",
    "cella.stdin",
    "cella.stdout",
    "cella.stderr",
    "cella.export",
];

/// What the workload runs as and where: everything the guest needs to know
/// about one run, sent by the host after the guest's hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Program and arguments; `argv[0]` is looked up in `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// The complete environment of the workload.
    pub env: Vec<(String, String)>,
    /// Working directory inside the container.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    /// Guest block device holding the read-only root filesystem (erofs).
    /// It may still be empty when the spec arrives: the host inserts the
    /// image into a drive of a restored VM just before sending it.
    pub rootfs_device: String,
    /// The host's wall clock when it sent the spec, in nanoseconds since
    /// the Unix epoch: a VM restored from a snapshot wakes up with the
    /// clock of the moment the snapshot was taken.
    pub realtime_ns: u64,
    /// Fresh random bytes from the host, mixed into the guest's pool and
    /// credited, so that no two runs from one snapshot share a seed.
    pub entropy: Vec<u8>,
    /// Set for a build VM: the programs of [`Build`] run instead of `argv`.
    #[serde(default)]
    pub build: Option<Build>,
    /// Filesystems mounted over the root, parents before children.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// The root is made read-only once the mounts are in place (vagga's
    /// default write mode); otherwise writes land in the VM's tmpfs overlay.
    #[serde(default)]
    pub read_only_root: bool,
    /// Set when the host's stdin is a terminal: the workload gets a pty of
    /// this size, whose output goes to the stdout port (stderr is unused).
    #[serde(default)]
    pub tty: Option<WinSize>,
    /// Set for a `!Supervise` command: its children run instead of `argv`,
    /// each in its own root; the fields above that describe one program
    /// (argv, env, cwd, uid, gid, rootfs_device, mounts, read_only_root)
    /// are unused.
    #[serde(default)]
    pub supervise: Option<Supervise>,
    /// Set when the VM has a NIC (`network: user`): how guest-init
    /// configures eth0 and the roots' /etc/resolv.conf.
    #[serde(default)]
    pub network: Option<NetConfig>,
    /// `CELLA_STATS` on the host: guest-init sends [`GuestMsg::Phases`]
    /// before its final message.
    #[serde(default)]
    pub stats: bool,
    /// Supplementary groups of the program, besides `gid`.
    #[serde(default)]
    pub groups: Vec<u32>,
    /// `pid1mode: wait-all-children`: the run ends when every process has
    /// exited, not when the program has; the status is the program's.
    #[serde(default)]
    pub wait_all_children: bool,
}

impl RunSpec {
    /// `argv` with `env`, as root in `/` on the image in the first drive,
    /// nothing mounted, no terminal, no network; the clock and entropy are
    /// filled in when the host sends it.
    pub fn new(argv: Vec<String>, env: Vec<(String, String)>) -> RunSpec {
        RunSpec {
            argv,
            env,
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            hostname: "cella".into(),
            rootfs_device: "/dev/vda".into(),
            realtime_ns: 0,
            entropy: Vec::new(),
            build: None,
            mounts: Vec::new(),
            read_only_root: false,
            tty: None,
            supervise: None,
            network: None,
            stats: false,
            groups: Vec::new(),
            wait_all_children: false,
        }
    }
}

impl RunSpec {
    /// The spec without what each run brings fresh (the clock, the
    /// entropy, `stats`): what a warm snapshot that holds the run's
    /// program ready was readied for, and is keyed by.
    pub fn fresh(&self) -> RunSpec {
        RunSpec {
            realtime_ns: 0,
            entropy: Vec::new(),
            stats: false,
            ..self.clone()
        }
    }

    /// Whether a warm snapshot may hold this run ready: a run with no
    /// terminal, no network and no build, whose program (each child's, for
    /// a `!Supervise`) may be started ahead ([`may_start_ahead`]).
    pub fn can_fork_ahead(&self) -> bool {
        if self.build.is_some() || self.tty.is_some() || self.network.is_some() {
            return false;
        }
        match &self.supervise {
            Some(group) => {
                !group.children.is_empty()
                    && group
                        .children
                        .iter()
                        .all(|c| may_start_ahead(&c.argv, &c.env, &c.cwd, &c.mounts))
            }
            None => may_start_ahead(&self.argv, &self.env, &self.cwd, &self.mounts),
        }
    }
}

/// Whether a program may be started before its run: its program, search
/// path, working directory and other mounts do not lie inside a host
/// share (only a share's top directory keeps its identity across
/// restores: anything the guest looked up beneath it would be stale, and
/// the program found then might not be the one the share holds now).
fn may_start_ahead(argv: &[String], env: &[(String, String)], cwd: &str, mounts: &[Mount]) -> bool {
    let shares: Vec<&str> = mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Share { target, .. } => Some(target.as_str()),
            _ => None,
        })
        .collect();
    let inside = |path: &str| shares.iter().any(|t| within(path, t));
    let program = argv.first().map_or("", String::as_str);
    let searched: Vec<&str> = if program.contains('/') {
        vec![program]
    } else {
        search_path(env).split(':').collect()
    };
    let beneath = |path: &str| shares.iter().any(|t| path != *t && within(path, t));
    !program.is_empty()
        && searched.iter().all(|p| p.starts_with('/') && !inside(p))
        && cwd.starts_with('/')
        && !beneath(cwd)
        && mounts.iter().all(|m| !beneath(m.target()))
}

/// Whether `path` is `dir` or lies beneath it (both absolute); a path
/// with `.` or `..` in it counts as beneath anything.
pub fn within(path: &str, dir: &str) -> bool {
    if path.split('/').any(|c| c == "." || c == "..") {
        return true;
    }
    let dir = dir.trim_end_matches('/');
    path == dir
        || dir.is_empty()
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The guest's side of user-mode networking: a static IPv4 setup that
/// matches what the host told its passt (no DHCP client in the guest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    pub address: [u8; 4],
    pub prefix_len: u8,
    pub gateway: [u8; 4],
    pub nameserver: [u8; 4],
}

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// Several programs run together, each chrooted into its own root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supervise {
    pub mode: SuperviseMode,
    /// Between SIGTERM and SIGKILL when the children are stopped.
    pub kill_after_ms: u64,
    /// Each line a child writes is prefixed with `[name] `.
    pub prefix: bool,
    pub children: Vec<ChildSpec>,
}

/// When a supervisor stops its children (see cella's `SuperviseMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SuperviseMode {
    StopOnFailure,
    WaitAllSuccessful,
    WaitAll,
}

/// One child of a [`Supervise`]: a program with its own root built from
/// `rootfs_device` (an overlay of its own) and `mounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSpec {
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, besides `gid`.
    #[serde(default)]
    pub groups: Vec<u32>,
    pub rootfs_device: String,
    pub mounts: Vec<Mount>,
    pub read_only_root: bool,
}

/// The tag of the VM's one virtio-fs device: its root directory holds one
/// directory per host share, named by the share's index ("0", "1", …).
pub const FS_TAG: &str = "cella";

/// A filesystem mounted in the workload's root at `target` (absolute,
/// normalised), made first when missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mount {
    /// Host share `share` of the virtio-fs device; the host enforces
    /// `read_only` too.
    Share {
        target: String,
        share: u32,
        read_only: bool,
    },
    /// A fresh tmpfs; `subdirs` and `files` are relative names made in it.
    Tmpfs {
        target: String,
        size: Option<u64>,
        mode: u32,
        subdirs: Vec<(String, u32)>,
        files: Vec<(String, String)>,
    },
    /// An empty read-only directory hiding what the image has there.
    Empty { target: String },
    /// The image's directory at `target`, writable: writes go to a tmpfs
    /// of `size` and vanish with the VM. `owner` (uid, gid) is given to
    /// its top directory.
    Snapshot {
        target: String,
        size: Option<u64>,
        owner: Option<(u32, u32)>,
    },
    /// Another image (erofs) in drive `drive` (`/dev/vda` is 0), its
    /// root at `target`: read-only (vagga's `!Container` volume), or with
    /// `writable`, its writes in a tmpfs of `size` that vanish with the
    /// VM (`!Snapshot { container }`).
    Image {
        target: String,
        drive: u32,
        writable: bool,
        size: Option<u64>,
        owner: Option<(u32, u32)>,
    },
}

impl Mount {
    pub fn target(&self) -> &str {
        match self {
            Mount::Share { target, .. }
            | Mount::Tmpfs { target, .. }
            | Mount::Empty { target }
            | Mount::Snapshot { target, .. }
            | Mount::Image { target, .. } => target,
        }
    }
}

/// The device of drive `drive`: `/dev/vda`, `/dev/vdb`, ….
pub fn drive_device(drive: u32) -> String {
    let letter = u8::try_from(drive)
        .ok()
        .and_then(|d| b'a'.checked_add(d))
        .filter(|l| *l <= b'z')
        .unwrap_or(b'z');
    format!("/dev/vd{}", char::from(letter))
}

/// The build steps that run programs, as one batch in one VM: each runs
/// only if the one before exited 0, with stdin from /dev/null. When all
/// succeed, every process left is killed and the root's changes (the
/// overlay's upper directory) go to the host on [`PORT_EXPORT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    pub steps: Vec<BuildStep>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStep {
    /// Written to stderr before the step starts: the step's line of the
    /// build's output, in order with the programs' own.
    pub banner: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
}

/// One record of the export stream, a JSON line (see [`encode`]); a
/// `File` entry is followed by exactly `size` bytes of content. Entries
/// come in pre-order (a directory before what it holds), names sorted by
/// bytes; the stream ends with `End`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportRecord {
    Entry(ExportEntry),
    End,
}

/// A path of the root that a build changed, as overlayfs records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportEntry {
    /// Relative to the root, names joined by `/`, no leading `/`.
    pub path: Vec<u8>,
    pub kind: ExportKind,
    /// Permission bits (the low 12 bits of st_mode).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Full names (`security.capability`) and values; overlayfs's own
    /// `trusted.overlay.*` attributes are left out.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportKind {
    /// `opaque`: it replaces the directory below instead of merging with it.
    Dir {
        opaque: bool,
    },
    File {
        size: u64,
    },
    /// Another name for the inode of an earlier `File` entry at `target`.
    HardLink {
        target: Vec<u8>,
    },
    Symlink {
        target: Vec<u8>,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
    /// The path was deleted.
    Whiteout,
}

/// Messages from the host to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMsg {
    Run(Box<RunSpec>),
    /// Before a run spec, in a VM about to become a warm snapshot: mount
    /// the root the spec will name and read its program into the page
    /// cache, then say [`GuestMsg::Prepared`].
    Prepare(Prepare),
    /// Deliver this signal number to the workload.
    Signal(i32),
    /// The host's terminal changed size.
    Resize(WinSize),
}

/// PATH when the workload's env has none (as Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The PATH the workload's own environment sets, else the default.
pub fn search_path(env: &[(String, String)]) -> &str {
    env.iter()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str())
}

/// What a warm snapshot holds ready: the root on `rootfs_device`,
/// mounted and switched to, the virtio-fs device mounted (so the host's
/// server of a run restored from it takes the session as started), and
/// the files that running `program` (looked
/// up in `path`, a `PATH` value, when it has no `/`) reads first in the
/// page cache: the program and its interpreter (`#!` or ELF `PT_INTERP`).
///
/// With `run`, the whole run is readied as well: its shares and volumes
/// mounted, its hostname set, and its program forked, exec'd and stopped
/// before its first instruction, so that a run of exactly that spec (but
/// for [`RunSpec::fresh`]'s fields) only refreshes what must be its own
/// and lets it go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    pub rootfs_device: String,
    pub program: String,
    pub path: String,
    #[serde(default)]
    pub run: Option<Box<RunSpec>>,
}

/// Why the workload could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpawnFailure {
    /// The program does not exist ([`ExitCode::NotFound`], 127).
    NotFound,
    /// The program exists but cannot be executed ([`ExitCode::CannotExecute`], 126).
    NotExecutable,
}

/// Messages from the guest to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestMsg {
    Hello {
        version: u32,
    },
    /// The root of a [`HostMsg::Prepare`] is mounted and its program read:
    /// the VM may be saved as a warm snapshot.
    Prepared,
    /// The workload is running.
    Started,
    /// A build VM is about to start step `index` of its [`Build`].
    Step {
        index: u32,
    },
    /// The workload exited with this status.
    Exited {
        code: i32,
    },
    /// The workload was killed by this signal.
    Killed {
        signal: i32,
    },
    /// exec of the workload failed.
    SpawnFailed {
        kind: SpawnFailure,
        message: String,
    },
    /// guest-init itself failed; the run cannot go on.
    Error {
        message: String,
    },
    /// A child of a supervised run ended with this exit status (128+N for
    /// signal N, as [`ExitCode::Signal`]); `stopped` if it was told to stop
    /// (SIGTERM, then SIGKILL); `message` says why it could not start, if
    /// it could not.
    ChildEnded {
        name: String,
        status: i32,
        stopped: bool,
        message: Option<String>,
    },
    /// The guest ran out of memory during the run: `victims` (process
    /// names) were killed to free some, by guest-init or the kernel's OOM
    /// killer. Sent before the final message.
    OutOfMemory {
        kills: u64,
        victims: Vec<String>,
    },
    /// Where guest-init's time went, when the spec asked (`stats`): each
    /// phase's name and its end, in microseconds of the guest's monotonic
    /// clock since the run spec arrived. Sent before the final message.
    Phases {
        marks: Vec<(String, u64)>,
    },
}

/// Bounds on a [`GuestMsg::Phases`]: marks, and bytes of a name.
pub const MAX_PHASES: usize = 32;
pub const MAX_PHASE_NAME: usize = 32;

impl GuestMsg {
    /// The exit status `cella` returns for this final message, if it is one.
    pub fn exit_status(&self) -> Option<i32> {
        match self {
            GuestMsg::Hello { .. }
            | GuestMsg::Prepared
            | GuestMsg::Started
            | GuestMsg::Step { .. }
            | GuestMsg::ChildEnded { .. }
            | GuestMsg::OutOfMemory { .. }
            | GuestMsg::Phases { .. } => None,
            GuestMsg::Exited { code } => Some(*code),
            GuestMsg::Killed { signal } => Some(ExitCode::Signal(*signal).code()),
            GuestMsg::SpawnFailed {
                kind: SpawnFailure::NotFound,
                ..
            } => Some(ExitCode::NotFound.code()),
            GuestMsg::SpawnFailed {
                kind: SpawnFailure::NotExecutable,
                ..
            } => Some(ExitCode::CannotExecute.code()),
            GuestMsg::Error { .. } => Some(ExitCode::Cella.code()),
        }
    }
}

/// Encodes one message as a JSON line.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail: no maps with non-string
    // keys, no custom serializers.
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The most process names an [`GuestMsg::OutOfMemory`] report carries
/// (`kills` counts them all), and the longest name in it.
pub const MAX_OOM_VICTIMS: usize = 32;
pub const MAX_VICTIM_NAME: usize = 64;

/// A control line longer than this is a protocol error, not a message.
pub const MAX_LINE: usize = 1 << 20;

/// What a [`Decoder`] holds by default: a line of [`MAX_LINE`] and as much again queued.
pub const DEFAULT_DECODER_LIMIT: usize = 2 * MAX_LINE;

/// Splits a byte stream into messages; feed it whatever arrives.
///
/// Linear in the bytes fed, however they are split: each byte is scanned
/// for a newline once, and consumed lines are dropped only when they make
/// up most of the buffer, so every byte moves a bounded number of times.
/// The bytes held (a partial line and complete lines not taken yet) never
/// exceed the decoder's limit.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the bytes not taken yet start.
    start: usize,
    /// `buf[start..scanned]` holds no newline.
    scanned: usize,
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::with_limit(DEFAULT_DECODER_LIMIT)
    }
}

#[derive(Debug)]
pub enum DecodeError {
    /// A line longer than [`MAX_LINE`] (or than the decoder's limit).
    TooLong(usize),
    /// More bytes than the decoder's limit were pushed before being taken.
    Full(usize),
    Json(serde_json::Error),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLong(max) => write!(f, "control message longer than {max} bytes"),
            DecodeError::Full(limit) => write!(
                f,
                "more than {limit} bytes of control messages queued, not yet handled"
            ),
            DecodeError::Json(e) => write!(f, "malformed control message: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl Decoder {
    /// A decoder that holds at most `limit` bytes; a line may be as long
    /// as the smaller of `limit` and [`MAX_LINE`].
    pub fn with_limit(limit: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            limit,
        }
    }

    fn max_line(&self) -> usize {
        self.limit.min(MAX_LINE)
    }

    /// Bytes held: the partial line and the lines not taken yet.
    pub fn held(&self) -> usize {
        self.buf.len() - self.start
    }

    /// How many more bytes [`Decoder::push`] takes now.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.held())
    }

    /// Whether a complete line is waiting to be taken by [`Decoder::next`].
    pub fn has_line(&self) -> bool {
        self.buf[self.scanned..].contains(&b'\n')
    }

    /// Queues `bytes`; refused whole when they would not fit the limit.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        if bytes.len() > self.room() {
            return Err(DecodeError::Full(self.limit));
        }
        // Drop what was taken once it is at least half the buffer: each
        // byte moves at most once per doubling, so O(1) amortized.
        if self.start > 0 && self.start >= self.held() {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next complete message, if one has arrived.
    #[allow(clippy::should_implement_trait)] // fallible and generic: not an Iterator
    pub fn next<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, DecodeError> {
        let max = self.max_line();
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(at) => {
                let end = self.scanned + at;
                let line = self.start..end;
                self.start = end + 1;
                self.scanned = self.start;
                if line.len() > max {
                    return Err(DecodeError::TooLong(max));
                }
                serde_json::from_slice(&self.buf[line])
                    .map(Some)
                    .map_err(DecodeError::Json)
            }
            None => {
                self.scanned = self.buf.len();
                if self.held() > max {
                    return Err(DecodeError::TooLong(max));
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            argv: vec!["sh".into(), "-c".into(), "echo \"hi\"\n".into()],
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            hostname: "cella".into(),
            rootfs_device: "/dev/vda".into(),
            realtime_ns: 1_700_000_000_000_000_000,
            entropy: vec![7; 32],
            build: None,
            mounts: vec![
                Mount::Share {
                    target: "/work".into(),
                    share: 0,
                    read_only: false,
                },
                Mount::Tmpfs {
                    target: "/var/tmp".into(),
                    size: Some(1 << 20),
                    mode: 0o1777,
                    subdirs: vec![("a".into(), 0o700)],
                    files: vec![("f".into(), "x\n".into())],
                },
            ],
            read_only_root: true,
            tty: Some(WinSize { rows: 24, cols: 80 }),
            supervise: Some(Supervise {
                mode: SuperviseMode::WaitAll,
                kill_after_ms: 2000,
                prefix: true,
                children: vec![ChildSpec {
                    name: "db".into(),
                    argv: vec!["sleep".into()],
                    env: Vec::new(),
                    cwd: "/".into(),
                    uid: 1,
                    gid: 2,
                    groups: vec![3, 4],
                    rootfs_device: "/dev/vdb".into(),
                    mounts: Vec::new(),
                    read_only_root: true,
                }],
            }),
            network: Some(NetConfig {
                address: [10, 0, 2, 15],
                prefix_len: 24,
                gateway: [10, 0, 2, 2],
                nameserver: [10, 0, 2, 3],
            }),
            stats: false,
            groups: vec![5],
            wait_all_children: true,
        }
    }

    #[test]
    fn round_trip_split_anywhere() {
        let msgs = vec![
            HostMsg::Run(Box::new(spec())),
            HostMsg::Signal(15),
            HostMsg::Resize(WinSize {
                rows: 50,
                cols: 132,
            }),
        ];
        let bytes: Vec<u8> = msgs.iter().flat_map(encode).collect();
        for split in 0..bytes.len() {
            let mut d = Decoder::default();
            d.push(&bytes[..split]).expect("push");
            let mut got = Vec::new();
            while let Some(m) = d.next::<HostMsg>().expect("decode") {
                got.push(m);
            }
            d.push(&bytes[split..]).expect("push");
            while let Some(m) = d.next::<HostMsg>().expect("decode") {
                got.push(m);
            }
            assert_eq!(got, msgs);
        }
    }

    #[test]
    fn guest_messages_round_trip_and_map_to_statuses() {
        let msgs = vec![
            GuestMsg::Hello {
                version: PROTOCOL_VERSION,
            },
            GuestMsg::Started,
            GuestMsg::Exited { code: 3 },
            GuestMsg::Killed { signal: 9 },
            GuestMsg::SpawnFailed {
                kind: SpawnFailure::NotFound,
                message: "x".into(),
            },
            GuestMsg::SpawnFailed {
                kind: SpawnFailure::NotExecutable,
                message: "y".into(),
            },
        ];
        let mut d = Decoder::default();
        for m in &msgs {
            d.push(&encode(m)).expect("push");
        }
        let statuses: Vec<Option<i32>> = msgs
            .iter()
            .map(|_| d.next::<GuestMsg>().expect("decode").expect("message"))
            .map(|m| m.exit_status())
            .collect();
        assert_eq!(
            statuses,
            vec![None, None, Some(3), Some(137), Some(127), Some(126)]
        );
    }

    #[test]
    fn garbage_and_overlong_lines_are_errors() {
        let mut d = Decoder::default();
        d.push(b"{not json\n").expect("push");
        assert!(d.next::<GuestMsg>().is_err());
        d.push(&vec![b'x'; MAX_LINE + 1]).expect("push");
        assert!(matches!(d.next::<GuestMsg>(), Err(DecodeError::TooLong(_))));

        // A whole overlong line arriving at once is no better.
        let mut d = Decoder::with_limit(usize::MAX);
        let mut line = vec![b' '; MAX_LINE + 1];
        line.extend_from_slice(b"\"Started\"\n");
        d.push(&line).expect("push");
        assert!(matches!(d.next::<GuestMsg>(), Err(DecodeError::TooLong(_))));
    }

    #[test]
    fn held_bytes_are_bounded_by_the_limit() {
        let mut d = Decoder::with_limit(64);
        let started = encode(&GuestMsg::Started);
        while d.room() >= started.len() {
            d.push(&started).expect("push");
        }
        assert!(matches!(d.push(&started), Err(DecodeError::Full(64))));
        assert!(d.held() <= 64 && d.has_line());
        while let Some(m) = d.next::<GuestMsg>().expect("decode") {
            assert_eq!(m, GuestMsg::Started);
        }
        assert_eq!((d.held(), d.room()), (0, 64));
        // A partial line longer than the limit is too long, not queued.
        let mut d = Decoder::with_limit(16);
        d.push(&[b'x'; 16]).expect("push");
        assert!(matches!(d.next::<GuestMsg>(), Ok(None)));
        assert!(d.push(b"x").is_err());
    }

    /// 100k messages at once, and the same fed one byte at a time: a
    /// decoder that moved the rest of its buffer for every message would
    /// do ~10^11 byte moves here and take minutes, not milliseconds.
    #[test]
    fn decoding_is_linear() {
        let msg = GuestMsg::Step { index: 7 };
        let line = encode(&msg);
        let n = 100_000;
        let all: Vec<u8> = line.iter().copied().cycle().take(line.len() * n).collect();
        let started = std::time::Instant::now();
        let mut d = Decoder::with_limit(all.len());
        d.push(&all).expect("push");
        let mut got = 0;
        while let Some(m) = d.next::<GuestMsg>().expect("decode") {
            assert_eq!(m, msg);
            // Taking a message moves nothing: the rest stays where it is.
            assert_eq!(d.buf.len(), all.len());
            got += 1;
        }
        assert_eq!(got, n);

        let mut d = Decoder::with_limit(line.len());
        let mut got = 0;
        for b in &all {
            d.push(std::slice::from_ref(b)).expect("push");
            while let Some(m) = d.next::<GuestMsg>().expect("decode") {
                assert_eq!(m, msg);
                got += 1;
            }
        }
        assert_eq!(got, n);
        assert!(d.buf.capacity() <= 4 * line.len(), "the buffer stays small");
        let took = started.elapsed();
        assert!(took.as_secs() < 20, "200k messages took {took:?}");
    }
}
