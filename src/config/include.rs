//! rust-quire's includes, as vagga reads a vagga.yaml (and cella a
//! cella.yaml), expanded after parsing and before decoding:
//!
//! - `!*Include FILE`: the node becomes FILE's document;
//! - `!*IncludeSeq GLOB`: a list of the documents of the files GLOB
//!   matches, in the order of their paths (`<<: !*IncludeSeq "c/*.yaml"`
//!   merges them all, as any list of mappings);
//! - `!*IncludeMap PATTERN`: a mapping from the parenthesized part of each
//!   match (`"fruits/(*).yaml"`) to its document;
//! - `!*Unpack [[a, b], [c]]` as an item of a list: the items of those
//!   lists, in its place.
//!
//! In a pattern `*` and `?` match within a name and `**/` any number of
//! directories. File names are relative to the file that holds the tag.
//! Included files are project files: reached beneath the project
//! directory without following a link, never above it; at most
//! [`MAX_INCLUDES`] files for the whole config, nested at most
//! [`MAX_DEPTH`] deep, each within `limits.config`, and their nodes
//! together within what one config file may hold. The `glob` crate is
//! not used: it follows links, by path; matching is a regex (the `regex`
//! crate) over a walk through directory fds.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use regex::Regex;

use super::error::{join, ConfigError, Location, Pos};
use super::model::included_file;
use super::settings;
use super::yaml::{self, Node, Value};
use crate::hostfs::{walk, Dir, EntryKind, Filter, FsError, Kind};

/// The most files one config includes, mixins' includes with it.
pub const MAX_INCLUDES: usize = 64;

/// The deepest an included file may include another.
pub const MAX_DEPTH: usize = 8;

/// The included files of one config, shared by the main file and its
/// mixins: a node read from `files[n - 1]` has `Pos::file` n.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub files: Vec<PathBuf>,
    /// Nodes included so far, against `yaml::MAX_NODES`.
    nodes: usize,
}

/// Expands the includes of one document.
pub(super) struct Includer<'a> {
    pub project: &'a Result<Dir, FsError>,
    pub project_dir: &'a Path,
    /// The document being expanded (absolute), for positions of file 0.
    pub file: &'a Path,
    pub table: &'a RefCell<Table>,
    pub max_bytes: u64,
}

/// Where in the documents the walk is.
#[derive(Clone)]
struct At<'p> {
    /// The directory of the file holding the node, relative to the project.
    base: &'p Path,
    field: String,
    depth: usize,
}

impl Includer<'_> {
    /// `root` (of the document at `file`, `base` its directory in the
    /// project) with every include expanded.
    pub fn expand(&self, root: Node, base: &Path) -> Result<Node, ConfigError> {
        let at = At {
            base,
            field: String::new(),
            depth: 0,
        };
        self.node(root, &at)
    }

    fn node(&self, node: Node, at: &At<'_>) -> Result<Node, ConfigError> {
        match node.tag.as_deref() {
            Some("*Include") => {
                let rel = self.name(&node, at)?;
                self.include(&rel, node.pos, at)
            }
            Some("*IncludeSeq") => {
                let pattern = self.pattern(&node, at, false)?;
                let mut items = Vec::new();
                for (rel, _) in self.matches(&pattern, node.pos, at)? {
                    items.push(self.include(&rel, node.pos, at)?);
                }
                Ok(Node {
                    pos: node.pos,
                    tag: None,
                    value: Value::Seq(items),
                })
            }
            Some("*IncludeMap") => {
                let pattern = self.pattern(&node, at, true)?;
                let mut entries = Vec::new();
                for (rel, key) in self.matches(&pattern, node.pos, at)? {
                    let key = Node {
                        pos: node.pos,
                        tag: None,
                        value: Value::Scalar {
                            text: key,
                            plain: false,
                        },
                    };
                    entries.push((key, self.include(&rel, node.pos, at)?));
                }
                Ok(Node {
                    pos: node.pos,
                    tag: None,
                    value: Value::Map(entries),
                })
            }
            Some("*Unpack") => Err(self.invalid(
                node.pos,
                at,
                "!*Unpack belongs in a list, as an item: `- !*Unpack [[a], [b]]`".into(),
            )),
            _ => {
                let Node { pos, tag, value } = node;
                let value = match value {
                    Value::Seq(items) => Value::Seq(self.items(items, at)?),
                    Value::Map(entries) => {
                        let mut out = Vec::with_capacity(entries.len());
                        for (key, value) in entries {
                            let field = match &key.value {
                                Value::Scalar { text, .. } => join(&at.field, text),
                                _ => at.field.clone(),
                            };
                            let value = self.node(
                                value,
                                &At {
                                    field,
                                    ..at.clone()
                                },
                            )?;
                            out.push((key, value));
                        }
                        Value::Map(out)
                    }
                    other => other,
                };
                Ok(Node { pos, tag, value })
            }
        }
    }

    /// A list's items, with `!*Unpack` items replaced by theirs.
    fn items(&self, items: Vec<Node>, at: &At<'_>) -> Result<Vec<Node>, ConfigError> {
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let at = At {
                field: format!("{}[{i}]", at.field),
                ..at.clone()
            };
            if item.tag.as_deref() != Some("*Unpack") {
                out.push(self.node(item, &at)?);
                continue;
            }
            let pos = item.pos;
            // Its own includes first: `!*Unpack [!*Include list.yaml]`.
            let untagged = Node { tag: None, ..item };
            let Value::Seq(lists) = self.node(untagged, &at)?.value else {
                return Err(self.invalid(pos, &at, "!*Unpack takes a list of lists".into()));
            };
            for list in lists {
                match list.value {
                    Value::Seq(inner) => out.extend(inner),
                    Value::Null => {}
                    _ => {
                        return Err(self.invalid(
                            list.pos,
                            &at,
                            "!*Unpack takes a list of lists: this item is not a list".into(),
                        ))
                    }
                }
            }
        }
        Ok(out)
    }

    /// The file an `!*Include` names, relative to the project.
    fn name(&self, node: &Node, at: &At<'_>) -> Result<PathBuf, ConfigError> {
        let Value::Scalar { text, .. } = &node.value else {
            return Err(self.invalid(node.pos, at, "an include takes a file name".into()));
        };
        super::scalars::project_path(&at.base.join(text).to_string_lossy())
            .map_err(|e| self.invalid(node.pos, at, e))
    }

    /// The pattern of an `!*IncludeSeq`/`!*IncludeMap` as an anchored
    /// regex over paths relative to the project, and the literal
    /// directory its matches are under.
    fn pattern(&self, node: &Node, at: &At<'_>, capture: bool) -> Result<Pattern, ConfigError> {
        let Value::Scalar { text, .. } = &node.value else {
            return Err(self.invalid(node.pos, at, "an include takes a file pattern".into()));
        };
        let pattern = glob_pattern(text, capture)
            .map_err(|e| self.invalid(node.pos, at, format!("{text:?}: {e}")))?;
        let joined = at.base.join(&pattern.dir);
        let dir = match joined.as_os_str().is_empty() {
            true => PathBuf::new(),
            false => super::scalars::project_path(&joined.to_string_lossy())
                .map_err(|e| self.invalid(node.pos, at, e))?,
        };
        Ok(Pattern { dir, ..pattern })
    }

    /// The files `pattern` matches, sorted, each with its captured key.
    fn matches(
        &self,
        pattern: &Pattern,
        pos: Pos,
        at: &At<'_>,
    ) -> Result<Vec<(PathBuf, String)>, ConfigError> {
        let project = self.held_project(pos, at)?;
        let fs_error = |e: FsError| self.invalid(pos, at, crate::text::error_chain(&e, ": "));
        match project.lstat(&pattern.dir).map_err(fs_error)? {
            None => return Ok(Vec::new()),
            Some(meta) if meta.kind == Kind::Symlink => {
                let path = self.project_dir.join(&pattern.dir);
                return Err(fs_error(FsError::Symlink(path)));
            }
            Some(meta) if meta.kind != Kind::Dir => return Ok(Vec::new()),
            Some(_) => {}
        }
        // A pattern without `**` goes no deeper than its names.
        let prune = (!pattern.deep).then(|| format!("^(?:[^/]*/){{{}}}", pattern.names));
        let filter = Filter::new(None, prune.as_deref())
            .map_err(|e| self.invalid(pos, at, e.to_string()))?;
        let mut found = Vec::new();
        for entry in walk(project, &pattern.dir, &filter).map_err(fs_error)? {
            if entry.rel.is_empty() || entry.kind == EntryKind::Dir {
                continue;
            }
            let Ok(rel) = std::str::from_utf8(&entry.rel) else {
                continue;
            };
            let Some(caps) = pattern.regex.captures(rel) else {
                continue;
            };
            let key = caps.get(1).map_or("", |m| m.as_str()).to_owned();
            if let EntryKind::Symlink(_) = entry.kind {
                return Err(fs_error(FsError::Symlink(
                    self.project_dir.join(entry.path(&pattern.dir)),
                )));
            }
            found.push((entry.path(&pattern.dir), key));
            if found.len() > MAX_INCLUDES {
                break;
            }
        }
        found.sort();
        Ok(found)
    }

    /// The project directory, held open.
    fn held_project(&self, pos: Pos, at: &At<'_>) -> Result<&Dir, ConfigError> {
        self.project.as_ref().map_err(|e| {
            self.invalid(
                pos,
                at,
                format!(
                    "cannot open the project directory: {}",
                    crate::text::error_chain(e, ": ")
                ),
            )
        })
    }

    /// The document of project file `rel`, its own includes expanded.
    fn include(&self, rel: &Path, pos: Pos, at: &At<'_>) -> Result<Node, ConfigError> {
        if at.depth >= MAX_DEPTH {
            return Err(self.invalid(
                pos,
                at,
                format!("includes nested more than {MAX_DEPTH} deep"),
            ));
        }
        let path = self.project_dir.join(rel);
        // The error reads the table: no borrow of it may be held then.
        if self.table.borrow().files.len() >= MAX_INCLUDES {
            return Err(self.invalid(
                pos,
                at,
                format!("more than {MAX_INCLUDES} included files in all"),
            ));
        }
        let index = {
            let mut table = self.table.borrow_mut();
            table.files.push(path.clone());
            table.files.len()
        };
        let project = self.held_project(pos, at)?;
        let bytes = project
            .read(rel, self.max_bytes)
            .map_err(|e| self.invalid(pos, at, crate::text::error_chain(&e, ": ")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| self.invalid(pos, at, format!("{} is not UTF-8 text", path.display())))?;
        let syntax = |pos: Pos, message: String| ConfigError::Syntax {
            at: Location {
                file: path.clone(),
                pos,
                field: String::new(),
            },
            message,
        };
        let root = yaml::parse(&text, self.max_bytes).map_err(|e| {
            let message = match e.over_bound {
                true => format!("{} ({})", e.message, settings::limit_source("config")),
                false => e.message,
            };
            syntax(e.pos, message)
        })?;
        let mut root = root.unwrap_or(Node {
            pos: Pos::default(),
            tag: None,
            value: Value::Null,
        });
        let nodes = root.nodes();
        {
            let mut table = self.table.borrow_mut();
            table.nodes = table.nodes.saturating_add(nodes);
            if table.nodes > yaml::MAX_NODES {
                return Err(syntax(
                    root.pos,
                    format!(
                        "the included files hold more than {} nodes in all",
                        yaml::MAX_NODES
                    ),
                ));
            }
        }
        let file = u16::try_from(index).unwrap_or(u16::MAX);
        mark(&mut root, file);
        let base = rel.parent().unwrap_or(Path::new(""));
        self.node(
            root,
            &At {
                base,
                field: at.field.clone(),
                depth: at.depth + 1,
            },
        )
    }

    fn invalid(&self, pos: Pos, at: &At<'_>, message: String) -> ConfigError {
        let file = included_file(&self.table.borrow().files, pos)
            .unwrap_or(self.file)
            .to_path_buf();
        ConfigError::Invalid {
            at: Location {
                file,
                pos,
                field: at.field.clone(),
            },
            message,
        }
    }
}

/// Sets the file of every position in `node` (a freshly read document).
fn mark(node: &mut Node, file: u16) {
    node.pos.file = file;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| mark(n, file)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            mark(k, file);
            mark(v, file);
        }),
        Value::Null | Value::Scalar { .. } => {}
    }
}

/// A file pattern, compiled.
#[derive(Debug)]
struct Pattern {
    /// The leading directories without a wildcard, walked from.
    dir: PathBuf,
    /// Matches paths relative to `dir`; group 1 is the key.
    regex: Regex,
    /// How many names a match has below `dir` (without `**`).
    names: usize,
    /// Whether `**` lets matches be any depth.
    deep: bool,
}

/// `text` as a [`Pattern`]: `*` and `?` within a name, `**/` (or a
/// trailing `**`) across names; with `capture`, exactly one `( )` group.
fn glob_pattern(text: &str, capture: bool) -> Result<Pattern, String> {
    if text.is_empty() || text.starts_with('/') {
        return Err("a pattern is a path relative to the file that holds it".into());
    }
    let names: Vec<&str> = text.split('/').collect();
    let special = |name: &str| name.contains(['*', '?', '[', '(', ')']);
    let literal = names.iter().take_while(|n| !special(n)).count();
    if literal == names.len() {
        return Err("a pattern needs a wildcard (`*`, `?` or `**`)".into());
    }
    let dir: PathBuf = names[..literal].iter().collect();
    let rest = names[literal..].join("/");
    let mut regex = String::from("^");
    let mut groups = 0;
    let mut open = false;
    let mut chars = rest.chars().peekable();
    let mut deep = false;
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                deep = true;
                if chars.peek() == Some(&'/') {
                    chars.next();
                    regex.push_str("(?:[^/]*/)*");
                } else {
                    regex.push_str(".*");
                }
            }
            '*' => regex.push_str("[^/]*"),
            '?' => regex.push_str("[^/]"),
            '(' if capture && !open && groups == 0 => {
                open = true;
                groups += 1;
                regex.push('(');
            }
            ')' if capture && open => {
                open = false;
                regex.push(')');
            }
            '(' | ')' if capture => return Err("a pattern takes one `( )` group".into()),
            '[' | ']' => return Err("`[...]` classes are not supported: use `*` or `?`".into()),
            c => regex.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    if capture && (groups != 1 || open) {
        return Err("!*IncludeMap needs one `( )` group, the key: \"dir/(*).yaml\"".into());
    }
    regex.push('$');
    let regex = Regex::new(&regex).map_err(|e| e.to_string())?;
    Ok(Pattern {
        dir,
        regex,
        names: names.len() - literal,
        deep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_globs() {
        let p = glob_pattern("fruits/*.yaml", false).unwrap();
        assert_eq!(p.dir, Path::new("fruits"));
        assert!(p.regex.is_match("apple.yaml"));
        assert!(!p.regex.is_match("a/apple.yaml"));
        assert_eq!(p.names, 1);
        let p = glob_pattern("c/**/*.yaml", false).unwrap();
        assert!(p.deep);
        assert!(p.regex.is_match("x.yaml"));
        assert!(p.regex.is_match("a/b/x.yaml"));
        let p = glob_pattern("(*).yaml", true).unwrap();
        assert_eq!(p.dir, Path::new(""));
        let caps = p.regex.captures("apple.yaml").unwrap();
        assert_eq!(&caps[1], "apple");
        assert!(glob_pattern("fruits/a.yaml", false).is_err());
        assert!(glob_pattern("*.yaml", true).is_err());
        assert!(glob_pattern("(*)/(*).yaml", true).is_err());
        assert!(glob_pattern("[ab].yaml", false).is_err());
        assert!(glob_pattern("/etc/*", false).is_err());
        // A dot is literal.
        assert!(!glob_pattern("*.yaml", false)
            .unwrap()
            .regex
            .is_match("ayaml"));
    }
}
