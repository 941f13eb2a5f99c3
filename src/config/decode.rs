//! Node tree → typed model, checking fields, tags, types and references,
//! and blaming each error on a position and a field path.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Location, Pos};
use super::model::{Command, CommandKind, Config, Container, SetupStep, SimpleCommand, Step};
use super::yaml::{Node, Value};

const TOP_FIELDS: &[&str] = &["containers", "commands", "minimum-vagga"];
const CONTAINER_FIELDS: &[&str] = &["setup", "environ"];
const TAR_FIELDS: &[&str] = &["url"];
const COMMAND_FIELDS: &[&str] = &["description", "container", "run", "environ"];

/// `path.key`, quoting keys that would make the path ambiguous.
fn join(path: &str, key: &str) -> String {
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

/// "!Tar" or "one of !Command, !Supervise".
fn tag_list(tags: &[&str]) -> String {
    let list: Vec<String> = tags.iter().map(|t| format!("!{t}")).collect();
    match list.as_slice() {
        [one] => one.clone(),
        _ => format!("one of {}", list.join(", ")),
    }
}

/// A mapping entry after merge keys are applied.
struct Entry<'n> {
    key: String,
    key_pos: Pos,
    value: &'n Node,
}

/// The entries of a mapping that has a fixed set of fields.
struct Fields<'n> {
    path: String,
    pos: Pos,
    entries: Vec<Entry<'n>>,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries.iter().find(|e| e.key == name).map(|e| e.value)
    }
}

pub(super) struct Decoder<'a> {
    pub file: &'a Path,
    pub project_dir: &'a Path,
}

impl Decoder<'_> {
    fn at(&self, pos: Pos, field: &str) -> Location {
        Location {
            file: self.file.to_path_buf(),
            pos,
            field: field.to_owned(),
        }
    }

    fn wrong_type(&self, node: &Node, path: &str, expected: &'static str) -> ConfigError {
        ConfigError::WrongType {
            at: self.at(node.pos, path),
            expected,
            found: node.kind_name(),
        }
    }

    fn untagged(&self, node: &Node, path: &str) -> Result<(), ConfigError> {
        match &node.tag {
            None => Ok(()),
            Some(tag) => Err(ConfigError::UnexpectedTag {
                at: self.at(node.pos, path),
                tag: tag.clone(),
            }),
        }
    }

    /// The tag of a node that must have one of `tags`.
    fn variant<'n>(
        &self,
        node: &'n Node,
        path: &str,
        tags: &[&str],
    ) -> Result<&'n str, ConfigError> {
        match &node.tag {
            None => Err(ConfigError::MissingTag {
                at: self.at(node.pos, path),
                expected: tag_list(tags),
            }),
            Some(tag) if tags.contains(&tag.as_str()) => Ok(tag),
            Some(tag) => Err(ConfigError::UnknownTag {
                at: self.at(node.pos, path),
                tag: tag.clone(),
                expected: tag_list(tags),
            }),
        }
    }

    /// The entries of a mapping (null is empty), with `<<` merge keys
    /// applied: explicit keys win, then earlier merged mappings.
    fn entries<'n>(&self, node: &'n Node, path: &str) -> Result<Vec<Entry<'n>>, ConfigError> {
        let items = match &node.value {
            Value::Map(items) => items,
            Value::Null => return Ok(Vec::new()),
            _ => return Err(self.wrong_type(node, path, "a mapping")),
        };
        let mut out: Vec<Entry<'n>> = Vec::new();
        let mut merged: Vec<Entry<'n>> = Vec::new();
        for (key, value) in items {
            let text = match &key.value {
                Value::Scalar { text, .. } if key.tag.is_none() => text,
                _ => return Err(self.wrong_type(key, path, "a string key")),
            };
            if matches!(key.value, Value::Scalar { plain: true, .. }) && text == "<<" {
                let sources = match &value.value {
                    Value::Seq(items) => items.iter().collect(),
                    _ => vec![value],
                };
                for source in sources {
                    if !matches!(source.value, Value::Map(_)) {
                        return Err(self.wrong_type(
                            source,
                            &join(path, "<<"),
                            "a mapping to merge",
                        ));
                    }
                    for entry in self.entries(source, path)? {
                        if !merged.iter().any(|m| m.key == entry.key) {
                            merged.push(entry);
                        }
                    }
                }
                continue;
            }
            if out.iter().any(|e| e.key == *text) {
                return Err(ConfigError::DuplicateKey {
                    at: self.at(key.pos, &join(path, text)),
                });
            }
            out.push(Entry {
                key: text.clone(),
                key_pos: key.pos,
                value,
            });
        }
        for entry in merged {
            if !out.iter().any(|e| e.key == entry.key) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// A mapping with the fields `allowed` (any other is an error).
    fn fields<'n>(
        &self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Result<Fields<'n>, ConfigError> {
        let entries = self.entries(node, path)?;
        if let Some(e) = entries.iter().find(|e| !allowed.contains(&e.key.as_str())) {
            return Err(ConfigError::UnknownField {
                at: self.at(e.key_pos, &join(path, &e.key)),
                expected: allowed.join(", "),
            });
        }
        Ok(Fields {
            path: path.to_owned(),
            pos: node.pos,
            entries,
        })
    }

    fn required<'n>(&self, fields: &Fields<'n>, name: &str) -> Result<&'n Node, ConfigError> {
        fields.get(name).ok_or_else(|| ConfigError::MissingField {
            at: self.at(fields.pos, &join(&fields.path, name)),
        })
    }

    fn string(&self, node: &Node, path: &str) -> Result<String, ConfigError> {
        self.untagged(node, path)?;
        match &node.value {
            Value::Scalar { text, .. } => Ok(text.clone()),
            _ => Err(self.wrong_type(node, path, "a string")),
        }
    }

    fn optional_string(
        &self,
        node: Option<&Node>,
        path: &str,
    ) -> Result<Option<String>, ConfigError> {
        match node {
            Some(node) if node.value != Value::Null => self.string(node, path).map(Some),
            _ => Ok(None),
        }
    }

    /// A name of a container or command: not empty, not reserved.
    fn name(&self, entry: &Entry<'_>, path: &str) -> Result<String, ConfigError> {
        let at = self.at(entry.key_pos, path);
        if entry.key.is_empty() {
            return Err(ConfigError::EmptyName { at });
        }
        if entry.key.starts_with('_') {
            return Err(ConfigError::ReservedName {
                at,
                name: entry.key.clone(),
            });
        }
        Ok(entry.key.clone())
    }

    fn environ(
        &self,
        node: Option<&Node>,
        path: &str,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut environ = BTreeMap::new();
        let Some(node) = node else {
            return Ok(environ);
        };
        self.untagged(node, path)?;
        for entry in self.entries(node, path)? {
            let var_path = join(path, &entry.key);
            if entry.key.is_empty() || entry.key.contains(['=', '\0']) {
                return Err(ConfigError::Invalid {
                    at: self.at(entry.key_pos, &var_path),
                    message: "a variable name must not be empty or contain \"=\"".to_owned(),
                });
            }
            let value = self.string(entry.value, &var_path)?;
            environ.insert(entry.key, value);
        }
        Ok(environ)
    }

    /// The whole document; `None` (an empty file) is an empty config.
    pub fn config(&self, root: Option<&Node>, path: PathBuf) -> Result<Config, ConfigError> {
        let mut config = Config {
            path,
            project_dir: self.project_dir.to_path_buf(),
            containers: BTreeMap::new(),
            commands: BTreeMap::new(),
        };
        let Some(root) = root else {
            return Ok(config);
        };
        self.untagged(root, "")?;
        let top = self.fields(root, "", TOP_FIELDS)?;
        if let Some(node) = top.get("containers") {
            self.untagged(node, "containers")?;
            for entry in self.entries(node, "containers")? {
                let path = join("containers", &entry.key);
                let name = self.name(&entry, &path)?;
                let container = self.container(name.clone(), entry.key_pos, entry.value, &path)?;
                config.containers.insert(name, container);
            }
        }
        if let Some(node) = top.get("commands") {
            self.untagged(node, "commands")?;
            for entry in self.entries(node, "commands")? {
                let path = join("commands", &entry.key);
                let name = self.name(&entry, &path)?;
                let command =
                    self.command(&config, name.clone(), entry.key_pos, entry.value, &path)?;
                config.commands.insert(name, command);
            }
        }
        Ok(config)
    }

    fn container(
        &self,
        name: String,
        pos: Pos,
        node: &Node,
        path: &str,
    ) -> Result<Container, ConfigError> {
        self.untagged(node, path)?;
        let fields = self.fields(node, path, CONTAINER_FIELDS)?;
        let mut setup = Vec::new();
        if let Some(list) = fields.get("setup") {
            let setup_path = join(path, "setup");
            self.untagged(list, &setup_path)?;
            match &list.value {
                Value::Null => {}
                Value::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        setup.push(self.setup_step(item, &format!("{setup_path}[{i}]"))?);
                    }
                }
                _ => return Err(self.wrong_type(list, &setup_path, "a list")),
            }
        }
        Ok(Container {
            name,
            setup,
            environ: self.environ(fields.get("environ"), &join(path, "environ"))?,
            volumes: Default::default(),
            pos,
        })
    }

    fn setup_step(&self, node: &Node, path: &str) -> Result<SetupStep, ConfigError> {
        match self.variant(node, path, Step::TAGS)? {
            "Tar" => self.tar(node, path),
            tag => Err(ConfigError::UnknownTag {
                at: self.at(node.pos, path),
                tag: tag.to_owned(),
                expected: tag_list(Step::TAGS),
            }),
        }
    }

    fn tar(&self, node: &Node, path: &str) -> Result<SetupStep, ConfigError> {
        let fields = self.fields(node, path, TAR_FIELDS)?;
        let url_node = self.required(&fields, "url")?;
        let url_path = join(path, "url");
        let url = self.string(url_node, &url_path)?;
        let at = self.at(url_node.pos, &url_path);
        if url.is_empty() {
            return Err(ConfigError::Invalid {
                at,
                message: "must not be empty".to_owned(),
            });
        }
        if url.contains("://") {
            return Err(ConfigError::Invalid {
                at,
                message: format!("only local paths are supported, not \"{url}\""),
            });
        }
        // `components()` drops the `.` segments, so messages show a clean path.
        let file: std::path::PathBuf = self.project_dir.join(&url).components().collect();
        match std::fs::metadata(&file) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(ConfigError::NotAFile { at, path: file }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ConfigError::MissingFile { at, path: file })
            }
            Err(e) => {
                return Err(ConfigError::Invalid {
                    at,
                    message: format!("cannot read {}: {e}", file.display()),
                })
            }
        }
        Ok(SetupStep {
            step: Step::Tar {
                url,
                resolved: file,
                path: "/".to_owned(),
                sha256: None,
            },
            pos: node.pos,
        })
    }

    fn command(
        &self,
        config: &Config,
        name: String,
        pos: Pos,
        node: &Node,
        path: &str,
    ) -> Result<Command, ConfigError> {
        let (description, kind) = match self.variant(node, path, CommandKind::TAGS)? {
            "Command" => {
                let fields = self.fields(node, path, COMMAND_FIELDS)?;
                let description =
                    self.optional_string(fields.get("description"), &join(path, "description"))?;
                (
                    description,
                    CommandKind::Command(self.simple(config, &fields)?),
                )
            }
            tag => {
                return Err(ConfigError::UnknownTag {
                    at: self.at(node.pos, path),
                    tag: tag.to_owned(),
                    expected: tag_list(CommandKind::TAGS),
                })
            }
        };
        Ok(Command {
            name,
            description,
            kind,
            pos,
        })
    }

    fn simple(&self, config: &Config, fields: &Fields<'_>) -> Result<SimpleCommand, ConfigError> {
        let container_node = self.required(fields, "container")?;
        let container_path = join(&fields.path, "container");
        let container = self.string(container_node, &container_path)?;
        if !config.containers.contains_key(&container) {
            return Err(ConfigError::UnknownContainer {
                at: self.at(container_node.pos, &container_path),
                name: container,
            });
        }
        let run_node = self.required(fields, "run")?;
        let run = self.run(run_node, &join(&fields.path, "run"))?;
        Ok(SimpleCommand {
            container,
            run,
            environ: self.environ(fields.get("environ"), &join(&fields.path, "environ"))?,
            volumes: Default::default(),
        })
    }

    /// `run`: an argv list, or a string for `/bin/sh -c`.
    fn run(&self, node: &Node, path: &str) -> Result<Vec<String>, ConfigError> {
        self.untagged(node, path)?;
        let empty = || ConfigError::EmptyRun {
            at: self.at(node.pos, path),
        };
        match &node.value {
            Value::Null => Err(empty()),
            Value::Scalar { text, .. } if text.trim().is_empty() => Err(empty()),
            Value::Scalar { text, .. } => {
                Ok(vec!["/bin/sh".to_owned(), "-c".to_owned(), text.clone()])
            }
            Value::Seq(items) if items.is_empty() => Err(empty()),
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.string(item, &format!("{path}[{i}]")))
                .collect(),
            Value::Map(_) => Err(self.wrong_type(node, path, "a list or a string")),
        }
    }
}
