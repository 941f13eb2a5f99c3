//! `ConfigError` and the source locations (`file:line:col: field`) it names.

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// A 1-based position in the config file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
    /// 0: the file of the container or command that holds it; n: the
    /// n-th file the config included (`Config::file_of`).
    pub file: u16,
}

impl Pos {
    /// Lines and columns past `u32::MAX` (a config file is far smaller)
    /// are shown as `u32::MAX`.
    pub fn new(line: usize, column: usize) -> Pos {
        Pos {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
            file: 0,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// `path.key`, quoting keys that would make the path ambiguous.
pub(super) fn join(path: &str, key: &str) -> String {
    let key = if key.is_empty() || key.contains(['.', ' ', '[', '"']) {
        format!("{key:?}")
    } else {
        key.to_owned()
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// Where an error is: the file, the position in it and the field path
/// (`commands.test.container`, `containers.base.setup[0].url`); the field
/// is empty for errors outside any field, such as malformed YAML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub pos: Pos,
    pub field: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A field path holds cella.yaml's own keys: shown escaped.
        write!(f, "{}:{}", crate::hostfs::Shown(&self.file), self.pos)?;
        if !self.field.is_empty() {
            write!(f, ": {}", crate::text::Escaped(&self.field))?;
        }
        Ok(())
    }
}

/// Why cella.yaml could not be found, read or accepted.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("no cella.yaml or vagga.yaml in {} or any parent", dir.display())]
    NotFound { dir: PathBuf },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The config file could not be reached safely (a symlink, too large).
    #[error(transparent)]
    Host(#[from] crate::hostfs::FsError),
    #[error("{at}: invalid YAML: {message}")]
    Syntax { at: Location, message: String },
    #[error("{at}: unknown tag !{tag}, expected {expected}")]
    UnknownTag {
        at: Location,
        tag: String,
        expected: String,
    },
    #[error("{at}: missing tag, expected {expected}")]
    MissingTag { at: Location, expected: String },
    #[error("{at}: unexpected tag !{tag}")]
    UnexpectedTag { at: Location, tag: String },
    #[error("{at}: unknown field, expected one of: {expected}")]
    UnknownField { at: Location, expected: String },
    #[error("{at}: missing required field")]
    MissingField { at: Location },
    #[error("{at}: duplicate key")]
    DuplicateKey { at: Location },
    #[error("{at}: expected {expected}, found {found}")]
    WrongType {
        at: Location,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{at}: unknown container \"{name}\"")]
    UnknownContainer { at: Location, name: String },
    #[error("{at}: no such file: {}", crate::hostfs::Shown(path))]
    MissingFile { at: Location, path: PathBuf },
    #[error("{at}: not a regular file: {}", crate::hostfs::Shown(path))]
    NotAFile { at: Location, path: PathBuf },
    #[error("{at}: command must not be empty")]
    EmptyRun { at: Location },
    #[error("{at}: name must not be empty")]
    EmptyName { at: Location },
    #[error("{at}: name \"{name}\" is reserved: `cella {name}` is one of cella's own commands")]
    ReservedName { at: Location, name: String },
    #[error("{at}: containers form a cycle: {cycle}")]
    Cycle { at: Location, cycle: String },
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
}

impl ConfigError {
    /// The location the error points at, when it has one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::NotFound { .. } | ConfigError::Read { .. } | ConfigError::Host(_) => None,
            ConfigError::Syntax { at, .. }
            | ConfigError::UnknownTag { at, .. }
            | ConfigError::MissingTag { at, .. }
            | ConfigError::UnexpectedTag { at, .. }
            | ConfigError::UnknownField { at, .. }
            | ConfigError::MissingField { at }
            | ConfigError::DuplicateKey { at }
            | ConfigError::WrongType { at, .. }
            | ConfigError::UnknownContainer { at, .. }
            | ConfigError::MissingFile { at, .. }
            | ConfigError::NotAFile { at, .. }
            | ConfigError::EmptyRun { at }
            | ConfigError::EmptyName { at }
            | ConfigError::ReservedName { at, .. }
            | ConfigError::Cycle { at, .. }
            | ConfigError::Invalid { at, .. } => Some(at),
        }
    }
}
