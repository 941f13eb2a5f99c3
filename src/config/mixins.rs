//! vagga's `mixins`: other config files whose containers and commands
//! join the config, as vagga's `read_mixins` merges them. The main file's
//! entries win; then the local mixins (`vagga.local.yaml`,
//! `.vagga.local.yaml`, `.vagga/local.yaml` beside a vagga.yaml,
//! `cella.local.yaml` and `.cella.local.yaml` beside a cella.yaml), the
//! last one listed first; then the main file's `mixins`, the last listed
//! first; each mixin's own `mixins` right after it. A name already
//! defined is never replaced. A mixin that is missing or does not parse is
//! skipped with a warning, as vagga does (so a generated mixin cannot
//! break the project).
//!
//! Mixins are project files: reached beneath the project directory
//! without following links, their paths relative to the file naming them
//! and never above the project; each is read up to the config limit, and
//! at most [`MAX_MIXINS`] are read in all.

use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::yaml::{self, Node, Value};
use crate::hostfs::{Dir, FsError};

/// The most mixin files one config reads (nesting included).
pub const MAX_MIXINS: usize = 64;

const VAGGA_LOCAL: &[&str] = &["vagga.local.yaml", ".vagga.local.yaml", ".vagga/local.yaml"];
const CELLA_LOCAL: &[&str] = &["cella.local.yaml", ".cella.local.yaml"];

/// Where the main config file is, for finding its mixins.
pub(super) struct Main<'a> {
    /// The main file (absolute).
    pub file: &'a Path,
    pub project_dir: &'a Path,
    pub project: &'a Result<Dir, FsError>,
    /// A vagga.yaml: vagga's local mixin names.
    pub vagga: bool,
    pub max_bytes: u64,
    /// The config's included files, which a mixin's includes join.
    pub includes: &'a std::cell::RefCell<super::include::Table>,
}

/// A mixin, read and parsed.
pub(super) struct Mixin {
    /// Its path for messages (absolute).
    pub path: PathBuf,
    pub root: Node,
}

/// The mixins of the main file (whose root is `main`), in the order
/// their entries are taken (first wins, after the main file's).
pub(super) fn collect(decoder: &Main<'_>, main: Option<&Node>) -> Vec<Mixin> {
    let mut state = State {
        seen: vec![rel_of(decoder)],
        out: Vec::new(),
        // All the mixins together may hold what one config file may.
        budget: decoder.max_bytes,
        warned: false,
    };
    let local = match decoder.vagga {
        true => VAGGA_LOCAL,
        false => CELLA_LOCAL,
    };
    // Local mixins are looked for; a missing one is no news.
    for name in local.iter().rev() {
        let rel = PathBuf::from(name);
        let exists = decoder
            .project
            .as_ref()
            .is_ok_and(|p| matches!(p.lstat(&rel), Ok(Some(_))));
        if exists {
            add(decoder, rel, &mut state, 0);
        }
    }
    if let Some(main) = main {
        for rel in listed(decoder, main, Path::new("")) {
            add(decoder, rel, &mut state, 0);
        }
    }
    state.out
}

/// The main file's path relative to the project directory.
fn rel_of(decoder: &Main<'_>) -> PathBuf {
    decoder
        .file
        .strip_prefix(decoder.project_dir)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| PathBuf::from(decoder.file.file_name().unwrap_or_default()))
}

/// The `mixins` a document lists, last first, as paths relative to the
/// project directory (`base`: the listing file's directory in it);
/// entries that are not strings, or climb out, are warned about.
fn listed(decoder: &Main<'_>, root: &Node, base: &Path) -> Vec<PathBuf> {
    let Value::Map(items) = &root.value else {
        return Vec::new();
    };
    let Some((_, list)) = items
        .iter()
        .find(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == "mixins"))
    else {
        return Vec::new();
    };
    let Value::Seq(entries) = &list.value else {
        warn(decoder.file, "`mixins` is not a list");
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.iter().rev() {
        let Value::Scalar { text, .. } = &entry.value else {
            warn(decoder.file, "a mixin that is not a file name");
            continue;
        };
        match super::scalars::project_path(&base.join(text).to_string_lossy()) {
            Ok(rel) => out.push(rel),
            Err(e) => warn(decoder.file, &format!("mixin {text:?}: {e}")),
        }
    }
    out
}

/// What collecting has gathered so far.
struct State {
    /// The files read or skipped (relative to the project).
    seen: Vec<PathBuf>,
    out: Vec<Mixin>,
    /// Bytes the mixins still may hold together (limits.config).
    budget: u64,
    /// The "too many" warning was given.
    warned: bool,
}

/// Reads mixin `rel` (then its own mixins) into `state`, unless it was
/// read already, a limit is reached, or it cannot be read.
fn add(decoder: &Main<'_>, rel: PathBuf, state: &mut State, depth: usize) {
    if state.seen.contains(&rel) {
        return;
    }
    let path = decoder.project_dir.join(&rel);
    if state.seen.len() > MAX_MIXINS || depth > 8 || state.budget == 0 {
        if !state.warned {
            state.warned = true;
            warn(
                &path,
                &format!(
                    "skipped, with any after it: more than {MAX_MIXINS} mixins, nested 8 \
                     deep, or more text in all than limits.config"
                ),
            );
        }
        return;
    }
    state.seen.push(rel.clone());
    let root = match read(decoder, &rel, &path, &mut state.budget) {
        Ok(Some(root)) => root,
        Ok(None) => return,
        Err(e) => {
            warn(&path, &e);
            return;
        }
    };
    let base = rel.parent().map(Path::to_path_buf).unwrap_or_default();
    let nested = listed(decoder, &root, &base);
    state.out.push(Mixin { path, root });
    for rel in nested {
        add(decoder, rel, state, depth + 1);
    }
}

fn read(
    decoder: &Main<'_>,
    rel: &Path,
    path: &Path,
    budget: &mut u64,
) -> Result<Option<Node>, String> {
    let project = decoder
        .project
        .as_ref()
        .map_err(|e| format!("cannot open the project directory: {e}"))?;
    let bytes = project
        .read(rel, *budget)
        .map_err(|e| crate::text::error_chain(&e, ": "))?;
    let max_bytes = *budget;
    *budget = budget.saturating_sub(bytes.len() as u64);
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    let root = yaml::parse(&text, max_bytes).map_err(|e| {
        ConfigError::Syntax {
            at: super::Location {
                file: path.to_path_buf(),
                pos: e.pos,
                field: String::new(),
            },
            message: e.message,
        }
        .to_string()
    })?;
    // Its includes are relative to it.
    let Some(root) = root else { return Ok(None) };
    super::include::Includer {
        project: decoder.project,
        project_dir: decoder.project_dir,
        file: path,
        table: decoder.includes,
        max_bytes: decoder.max_bytes,
    }
    .expand(root, rel.parent().unwrap_or(Path::new("")))
    .map(Some)
    .map_err(|e| e.to_string())
}

/// A skipped mixin, on stderr (control characters escaped).
pub(super) fn warn(path: &Path, why: &str) {
    eprintln!(
        "cella: warning: ignoring mixin {}: {}",
        crate::text::escape(&path.display().to_string()),
        crate::text::escape(why)
    );
}
