//! cella.yaml → typed model, with errors at `file:line:col: field`.
//!
//! The YAML is read into a tree of nodes that keep their positions
//! (`yaml`), then decoded into plain data (`decode`, `model`; commands in
//! `commands`, setup steps in `steps`, volumes in `volumes`, scalar
//! text in `scalars`, the checks of the whole config in `checks`).
//! Nothing outside this module sees YAML types.

mod checks;
mod commands;
mod copy;
mod decode;
pub mod docopt;
mod error;
mod git;
mod include;
#[cfg(test)]
mod include_tests;
pub mod knobs;
#[cfg(test)]
mod mixin_tests;
mod mixins;
mod model;
pub mod netpolicy;
mod packages;
mod refs;
mod scalars;
pub mod settings;
mod steps;
mod volumes;
mod yaml;

#[cfg(test)]
mod command_tests;
#[cfg(test)]
mod copy_tests;
#[cfg(test)]
mod net_tests;
#[cfg(test)]
mod package_tests;
#[cfg(test)]
mod step_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::hostfs::{Dir, FsError, Kind};

pub use error::{ConfigError, Location, Pos};
pub use git::{is_commit_id, GitScheme, GitUrl};
pub use knobs::Knobs;
pub use model::{
    Bind, Child, Command, CommandInfo, CommandKind, Config, Container, CopyStep, DebianStep,
    EnvironFile, GitStep, HostDir, ImageSource, ImageStep, NameRef, Network, Pid1Mode, PortMap,
    RegistryRef, Resources, Selection, SetupStep, SimpleCommand, Step, Supervise, SuperviseMode,
    Volume, WriteMode, BUILTIN_COMMANDS, DEFAULT_DEBIAN_MIRROR,
};
pub use settings::{Limits, NetworkPolicy, Registries, Settings, SettingsError};

/// A `docker://[HOST[:PORT]/]NAME[:TAG]` reference given on the command
/// line (`_push_image`'s destination), as `!Image` takes one.
pub fn parse_registry_ref(text: &str) -> Result<RegistryRef, String> {
    let rest = text
        .strip_prefix("docker://")
        .ok_or_else(|| format!("expected docker://[HOST[:PORT]/]NAME[:TAG], found {text:?}"))?;
    match refs::registry_ref(rest)? {
        (r, None) => Ok(r),
        (_, Some(_)) => Err(format!("a push names a tag, not a digest: {text:?}")),
    }
}

/// `--network` on the command line: as `network` in cella.yaml.
pub fn parse_network(text: &str) -> Result<Network, String> {
    scalars::network(text)
}

/// `--cpus` on the command line: as `cpus` in cella.yaml.
pub fn parse_cpus(text: &str) -> Result<u32, String> {
    scalars::cpus(text)
}

/// `--memory` on the command line: as `memory` in cella.yaml, in bytes.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    scalars::memory(text)
}

/// Config file names, in order of preference within one directory.
pub const FILE_NAMES: [&str; 2] = ["cella.yaml", "vagga.yaml"];

/// Finds the config for `start`: the first directory from `start` up
/// through its parents holding `cella.yaml`, else `vagga.yaml`. A config
/// file that is a symlink is refused, not followed.
pub fn find_config(start: &Path) -> Result<PathBuf, ConfigError> {
    let start = std::path::absolute(start).map_err(|source| ConfigError::Read {
        path: start.to_path_buf(),
        source,
    })?;
    for dir in start.ancestors() {
        let Ok(held) = Dir::open(dir) else {
            continue;
        };
        for name in FILE_NAMES {
            match held.lstat(Path::new(name)) {
                Ok(Some(meta)) if meta.kind == Kind::File => return Ok(dir.join(name)),
                Ok(Some(meta)) if meta.kind == Kind::Symlink => {
                    return Err(FsError::Symlink(dir.join(name)).into())
                }
                _ => {}
            }
        }
    }
    Err(ConfigError::NotFound { dir: start })
}

/// Reads, parses and validates the config file at `path`, reading at most
/// `max_bytes` (`limits.config`) of it, which also bound its text once
/// aliases are expanded. The file is opened beneath its directory without
/// following a symlink.
pub fn load(path: &Path, max_bytes: u64) -> Result<Config, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let path = std::path::absolute(path).map_err(read_error)?;
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => (dir, name),
        _ => return Err(read_error(std::io::ErrorKind::InvalidInput.into())),
    };
    let as_read_error = |e: FsError| match e {
        FsError::Io { source, .. } => read_error(source),
        other => other.into(),
    };
    let file = Dir::open(dir)
        .and_then(|dir| dir.open_file(Path::new(name)))
        .map_err(as_read_error)?;
    let text = read_limited(file, &path, max_bytes)?;
    parse_limited(&text, &path, max_bytes)
}

/// The text of `file` (at `path`, for errors), refused past `max_bytes`
/// without reading more than one byte beyond them.
fn read_limited(file: std::fs::File, path: &Path, max_bytes: u64) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > max_bytes {
        let head = &bytes[..max_bytes as usize];
        let line = head.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = head.len() - head.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
        return Err(ConfigError::Syntax {
            at: Location {
                file: path.to_path_buf(),
                pos: Pos::new(line, column),
                field: String::new(),
            },
            message: format!(
                "the file is larger than {}",
                settings::limit_text("config", max_bytes)
            ),
        });
    }
    String::from_utf8(bytes)
        .map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// Parses and validates config text as if read from `path`: errors name
/// `path`, and relative paths in it resolve against its directory. Its
/// text may expand to `Limits::default().config` bytes.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_limited(text, path, Limits::default().config)
}

/// [`parse`], with at most `max_bytes` of text once aliases are expanded.
pub fn parse_limited(text: &str, path: &Path, max_bytes: u64) -> Result<Config, ConfigError> {
    let project_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let root = yaml::parse(text, max_bytes).map_err(|e| ConfigError::Syntax {
        at: Location {
            file: path.to_path_buf(),
            pos: e.pos,
            field: String::new(),
        },
        message: match e.over_bound {
            true => format!("{} ({})", e.message, settings::limit_source("config")),
            false => e.message,
        },
    })?;
    let includes = std::cell::RefCell::new(include::Table::default());
    let project = Dir::open(&project_dir);
    let root = match root {
        Some(root) => Some(
            include::Includer {
                project: &project,
                project_dir: &project_dir,
                file: path,
                table: &includes,
                max_bytes,
            }
            .expand(root, Path::new(""))?,
        ),
        None => None,
    };
    let decoder = decode::Decoder {
        file: path,
        project_dir: &project_dir,
        project,
        deferred: Default::default(),
        vagga: path.file_name().is_some_and(|n| n == "vagga.yaml"),
        max_bytes,
        includes: &includes,
    };
    decoder.config(root.as_ref(), path.to_path_buf())
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use std::fs;

    #[test]
    fn load_reads_no_more_than_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cella.yaml");
        let text = format!("commands: {{}}\n{}", "# padding\n".repeat(9));
        fs::write(&path, &text).unwrap();
        assert!(load(&path, text.len() as u64).is_ok());
        // 13 bytes, then 10 a line: the 101st byte is line 10, column 8.
        let err = load(&path, 100).unwrap_err().to_string();
        assert!(
            err.contains(
                "cella.yaml:10:8: invalid YAML: the file is larger than 100 (limits.config in "
            ),
            "{err}"
        );
        // An alias bomb of 100 bytes: refused with a position, by bytes.
        fs::write(
            &path,
            "a: &a 0123456789\nb: [*a, *a, *a, *a, *a, *a, *a, *a]\n",
        )
        .unwrap();
        let err = load(&path, 64).unwrap_err().to_string();
        assert!(err.contains("cella.yaml:2:"), "{err}");
        assert!(
            err.contains("of text after expanding aliases (limits.config in "),
            "{err}"
        );
    }
}
