//! The typed config model: plain data, no YAML types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::error::Pos;

/// A loaded and validated cella.yaml (or vagga.yaml).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The config file, made absolute (symlinks are not resolved).
    pub path: PathBuf,
    /// The directory holding the config file; relative paths resolve here.
    pub project_dir: PathBuf,
    pub containers: BTreeMap<String, Container>,
    pub commands: BTreeMap<String, Command>,
}

/// A container: a root filesystem built from its setup steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub setup: Vec<SetupStep>,
    /// Environment for every command run in this container.
    pub environ: BTreeMap<String, String>,
    /// Where the container's name is in the file.
    pub pos: Pos,
}

/// One step of a container's setup; the YAML tag names the variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetupStep {
    /// `!Tar { url: ./images/busybox.tar }`: unpack a local tarball at `/`.
    Tar {
        /// The `url` as written.
        url: String,
        /// `url` resolved against the project directory; it exists.
        path: PathBuf,
        pos: Pos,
    },
}

impl SetupStep {
    /// The YAML tags of all setup steps, for messages.
    pub const TAGS: &'static [&'static str] = &["Tar"];

    /// The step's YAML tag without the `!`.
    pub fn tag(&self) -> &'static str {
        match self {
            SetupStep::Tar { .. } => "Tar",
        }
    }

    /// Where the step is in the file.
    pub fn pos(&self) -> Pos {
        match self {
            SetupStep::Tar { pos, .. } => *pos,
        }
    }
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
}

/// What kind of command it is; the YAML tag names the variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandKind {
    /// `!Command`: run one program in one container.
    Command(SimpleCommand),
}

impl CommandKind {
    /// The YAML tags of all command kinds, for messages.
    pub const TAGS: &'static [&'static str] = &["Command"];

    /// The kind's YAML tag without the `!`.
    pub fn tag(&self) -> &'static str {
        match self {
            CommandKind::Command(_) => "Command",
        }
    }
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
}
