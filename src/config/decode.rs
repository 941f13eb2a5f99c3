//! Node tree → typed model, checking fields, tags, types and references,
//! and blaming each error on a position and a field path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::checks::{
    check_aliases, check_init_commands, check_prerequisites, check_references, Reference,
};
use super::error::{ConfigError, Location, Pos};
use super::model::{included_file, Config, Container, EnvironFile, BUILTIN_COMMANDS};
use super::scalars;
use super::yaml::{Node, Value};

const TOP_FIELDS: &[&str] = &["containers", "commands", "minimum-vagga", "mixins"];
const CONTAINER_FIELDS: &[&str] = &[
    "setup",
    "environ",
    "volumes",
    "environ-file",
    "hostname",
    "build-network",
];

pub(super) use super::error::join;

/// "!Tar" or "one of !Command, !Supervise".
pub(super) fn tag_list(tags: &[&str]) -> String {
    let list: Vec<String> = tags.iter().map(|t| format!("!{t}")).collect();
    match list.as_slice() {
        [one] => one.clone(),
        _ => format!("one of {}", list.join(", ")),
    }
}

/// A mapping entry after merge keys are applied.
pub(super) struct Entry<'n> {
    pub key: String,
    pub key_pos: Pos,
    pub value: &'n Node,
}

/// The entries of a mapping that has a fixed set of fields.
pub(super) struct Fields<'n> {
    pub path: String,
    pub pos: Pos,
    entries: Vec<Entry<'n>>,
}

impl<'n> Fields<'n> {
    pub fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries.iter().find(|e| e.key == name).map(|e| e.value)
    }

    /// The field path of the field `name`.
    pub fn path_of(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// Where the key of the field `name` is, when it is there.
    pub fn key_pos(&self, name: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|e| e.key == name)
            .map(|e| e.key_pos)
    }
}

impl Decoder<'_> {
    /// Whether the file is a vagga.yaml, whose defaults are vagga's
    /// where cella's differ (`prefix` of a `!Supervise`).
    pub(super) fn is_vagga(&self) -> bool {
        self.vagga
    }
}

pub(super) struct Decoder<'a> {
    pub file: &'a Path,
    pub project_dir: &'a Path,
    /// The project directory held open: project files named by steps are
    /// checked beneath it.
    pub project: Result<crate::hostfs::Dir, crate::hostfs::FsError>,
    /// The first unusable project file of the container being decoded.
    pub deferred: std::cell::RefCell<Option<super::model::InputProblem>>,
    /// The project's config is a vagga.yaml (its mixins too).
    pub vagga: bool,
    /// What a config file may hold (limits.config).
    pub max_bytes: u64,
    /// The files the config included, for positions in them.
    pub includes: &'a std::cell::RefCell<super::include::Table>,
}

impl Decoder<'_> {
    pub(super) fn at(&self, pos: Pos, field: &str) -> Location {
        let table = self.includes.borrow();
        Location {
            file: included_file(&table.files, pos)
                .unwrap_or(self.file)
                .to_path_buf(),
            pos,
            field: field.to_owned(),
        }
    }

    pub(super) fn wrong_type(
        &self,
        node: &Node,
        path: &str,
        expected: &'static str,
    ) -> ConfigError {
        ConfigError::WrongType {
            at: self.at(node.pos, path),
            expected,
            found: node.kind_name(),
        }
    }

    pub(super) fn untagged(&self, node: &Node, path: &str) -> Result<(), ConfigError> {
        match &node.tag {
            None => Ok(()),
            Some(tag) => Err(ConfigError::UnexpectedTag {
                at: self.at(node.pos, path),
                tag: tag.clone(),
            }),
        }
    }

    /// The tag of a node that must have one of `tags`.
    pub(super) fn variant<'n>(
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
    pub(super) fn entries<'n>(
        &self,
        node: &'n Node,
        path: &str,
    ) -> Result<Vec<Entry<'n>>, ConfigError> {
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
    pub(super) fn fields<'n>(
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

    pub(super) fn required<'n>(
        &self,
        fields: &Fields<'n>,
        name: &str,
    ) -> Result<&'n Node, ConfigError> {
        fields.get(name).ok_or_else(|| ConfigError::MissingField {
            at: self.at(fields.pos, &join(&fields.path, name)),
        })
    }

    pub(super) fn string(&self, node: &Node, path: &str) -> Result<String, ConfigError> {
        self.untagged(node, path)?;
        match &node.value {
            Value::Scalar { text, .. } => Ok(text.clone()),
            _ => Err(self.wrong_type(node, path, "a string")),
        }
    }

    pub(super) fn optional_string(
        &self,
        node: Option<&Node>,
        path: &str,
    ) -> Result<Option<String>, ConfigError> {
        match node {
            Some(node) if node.value != Value::Null => self.string(node, path).map(Some),
            _ => Ok(None),
        }
    }

    /// Where the value of the field `name` is, when it is there.
    pub(super) fn field_at(&self, fields: &Fields<'_>, name: &str) -> Option<Location> {
        let node = fields.get(name)?;
        Some(self.at(node.pos, &fields.path_of(name)))
    }

    pub(super) fn invalid(&self, pos: Pos, path: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            at: self.at(pos, path),
            message,
        }
    }

    /// The text of a scalar whose tag was already read (`!Sh "script"`).
    pub(super) fn tagged_string(&self, node: &Node, path: &str) -> Result<String, ConfigError> {
        match &node.value {
            Value::Scalar { text, .. } => Ok(text.clone()),
            _ => Err(self.wrong_type(node, path, "a string")),
        }
    }

    /// A scalar whose tag was already read (`!EnsureDir /path`): an
    /// absolute path in the container, normalised.
    pub(super) fn tagged_container_path(
        &self,
        node: &Node,
        path: &str,
    ) -> Result<String, ConfigError> {
        let text = self.tagged_string(node, path)?;
        scalars::container_path(&text).map_err(|message| self.invalid(node.pos, path, message))
    }

    /// An untagged scalar, parsed by `parse` (one of `scalars`); its
    /// error is blamed on the node.
    pub(super) fn parsed<T>(
        &self,
        node: &Node,
        path: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let text = self.string(node, path)?;
        parse(&text).map_err(|message| self.invalid(node.pos, path, message))
    }

    /// The field `name`, parsed by `parse`, when it is there and not null.
    pub(super) fn optional<T>(
        &self,
        fields: &Fields<'_>,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match fields.get(name) {
            Some(node) if node.value != Value::Null => {
                self.parsed(node, &fields.path_of(name), parse).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// A boolean field under any of its spellings, else `default`.
    pub(super) fn flag(
        &self,
        fields: &Fields<'_>,
        names: &[&str],
        default: bool,
    ) -> Result<bool, ConfigError> {
        for name in names {
            if let Some(v) = self.optional(fields, name, super::scalars::boolean)? {
                return Ok(v);
            }
        }
        Ok(default)
    }

    /// A name of a container or command: not empty, not reserved, and
    /// printable (cella prints names in its own messages).
    pub(super) fn name(&self, entry: &Entry<'_>, path: &str) -> Result<String, ConfigError> {
        let at = self.at(entry.key_pos, path);
        if entry.key.is_empty() {
            return Err(ConfigError::EmptyName { at });
        }
        if crate::text::escape(&entry.key) != entry.key.as_str() {
            return Err(self.invalid(
                entry.key_pos,
                path,
                format!(
                    "a name must not contain control characters, found \"{}\"",
                    crate::text::escape(&entry.key)
                ),
            ));
        }
        Ok(entry.key.clone())
    }

    /// A command's name: as [`Self::name`], and not one of cella's own
    /// commands, which `cella NAME` would run instead. Other names that
    /// start with `_` are allowed (vagga projects use them for internal
    /// commands and YAML anchors) and hidden from the list.
    pub(super) fn command_name(
        &self,
        entry: &Entry<'_>,
        path: &str,
    ) -> Result<String, ConfigError> {
        let name = self.name(entry, path)?;
        if BUILTIN_COMMANDS.contains(&name.as_str()) {
            return Err(ConfigError::ReservedName {
                at: self.at(entry.key_pos, path),
                name,
            });
        }
        Ok(name)
    }

    /// The field `environ-file` of a container or command: a file of the
    /// project, and where it is written.
    pub(super) fn environ_file(
        &self,
        fields: &Fields<'_>,
    ) -> Result<Option<EnvironFile>, ConfigError> {
        match fields.get("environ-file") {
            Some(node) if node.value != Value::Null => {
                let path = fields.path_of("environ-file");
                Ok(Some(EnvironFile {
                    path: self.parsed(node, &path, scalars::project_file)?,
                    at: self.at(node.pos, &path),
                }))
            }
            _ => Ok(None),
        }
    }

    /// The field `environ`: untagged, a mapping of variables to strings.
    pub(super) fn environ(
        &self,
        node: Option<&Node>,
        path: &str,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        match node {
            None => Ok(BTreeMap::new()),
            Some(node) => {
                self.untagged(node, path)?;
                self.variables(node, path)
            }
        }
    }

    /// A mapping of environment variables to strings (its tag unchecked).
    pub(super) fn variables(
        &self,
        node: &Node,
        path: &str,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut environ = BTreeMap::new();
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

    /// A decoder of the mixin at `path`: the same project, its own file.
    fn for_mixin<'m>(&'m self, path: &'m Path) -> Decoder<'m> {
        Decoder {
            file: path,
            project_dir: self.project_dir,
            project: match &self.project {
                Ok(dir) => dir.try_clone(),
                Err(_) => crate::hostfs::Dir::open(self.project_dir),
            },
            deferred: Default::default(),
            vagga: self.vagga,
            max_bytes: self.max_bytes,
            includes: self.includes,
        }
    }

    /// The whole document; `None` (an empty file) is an empty config.
    /// Its mixins join it (see `mixins`): the main file's entries first,
    /// then each mixin's, a name already taken never replaced.
    pub fn config(&self, root: Option<&Node>, path: PathBuf) -> Result<Config, ConfigError> {
        let mut config = Config {
            path,
            project_dir: self.project_dir.to_path_buf(),
            containers: BTreeMap::new(),
            commands: BTreeMap::new(),
            aliases: BTreeMap::new(),
            includes: Vec::new(),
        };
        if let Some(root) = root {
            self.untagged(root, "")?;
            self.fields(root, "", TOP_FIELDS)?;
        }
        let main = super::mixins::Main {
            file: self.file,
            project_dir: self.project_dir,
            project: &self.project,
            vagga: self.vagga,
            max_bytes: self.max_bytes,
            includes: self.includes,
        };
        let mixins = super::mixins::collect(&main, root);
        let decoders: Vec<Decoder<'_>> = mixins.iter().map(|m| self.for_mixin(&m.path)).collect();
        // The documents in the order their names are taken; a mixin that
        // fails to decode is dropped whole, with a warning.
        let mut docs: Vec<(&Decoder<'_>, &Node, bool)> = Vec::new();
        if let Some(root) = root {
            docs.push((self, root, true));
        }
        docs.extend(
            decoders
                .iter()
                .zip(&mixins)
                .map(|(d, m)| (d, &m.root, false)),
        );
        // Containers may name containers defined later, or in another
        // file: check the names once all are known.
        let mut refs = Vec::new();
        let mut usable = Vec::new();
        for (decoder, root, main) in docs {
            let mut doc_refs = Vec::new();
            match decoder.containers(root, &mut doc_refs) {
                Ok(containers) => {
                    let mut taken = Vec::new();
                    for (name, container) in containers {
                        if let std::collections::btree_map::Entry::Vacant(slot) =
                            config.containers.entry(name)
                        {
                            taken.push(slot.key().clone());
                            slot.insert(container);
                        }
                    }
                    // Only the references of the definitions that count.
                    refs.extend(doc_refs.into_iter().filter(|r| taken.contains(&r.from)));
                    usable.push((decoder, root, main));
                }
                Err(e) if main => return Err(e),
                Err(e) => super::mixins::warn(decoder.file, &e.to_string()),
            }
        }
        check_references(&config, &refs)?;
        for (decoder, root, main) in usable {
            match decoder.commands(&config, root) {
                Ok(commands) => {
                    for (name, command) in commands {
                        config.commands.entry(name).or_insert(command);
                    }
                }
                Err(e) if main => return Err(e),
                Err(e) => super::mixins::warn(decoder.file, &e.to_string()),
            }
        }
        config.includes = self.includes.borrow().files.clone();
        check_aliases(&mut config)?;
        check_init_commands(&config)?;
        check_prerequisites(&config)?;
        Ok(config)
    }

    /// The containers of a document (its top-level fields checked).
    fn containers(
        &self,
        root: &Node,
        refs: &mut Vec<Reference>,
    ) -> Result<Vec<(String, Container)>, ConfigError> {
        self.untagged(root, "")?;
        let top = self.fields(root, "", TOP_FIELDS)?;
        let mut out = Vec::new();
        if let Some(node) = top.get("containers") {
            self.untagged(node, "containers")?;
            for entry in self.entries(node, "containers")? {
                let path = join("containers", &entry.key);
                let name = self.name(&entry, &path)?;
                let container =
                    self.container(name.clone(), entry.key_pos, entry.value, &path, refs)?;
                out.push((name, container));
            }
        }
        Ok(out)
    }

    /// The commands of a document, their containers looked up in `config`.
    fn commands(
        &self,
        config: &Config,
        root: &Node,
    ) -> Result<Vec<(String, super::model::Command)>, ConfigError> {
        let top = self.fields(root, "", TOP_FIELDS)?;
        let mut out = Vec::new();
        if let Some(node) = top.get("commands") {
            self.untagged(node, "commands")?;
            for entry in self.entries(node, "commands")? {
                let path = join("commands", &entry.key);
                let name = self.command_name(&entry, &path)?;
                let command =
                    self.command(config, name.clone(), entry.key_pos, entry.value, &path)?;
                out.push((name, command));
            }
        }
        Ok(out)
    }

    fn container(
        &self,
        name: String,
        pos: Pos,
        node: &Node,
        path: &str,
        refs: &mut Vec<Reference>,
    ) -> Result<Container, ConfigError> {
        self.untagged(node, path)?;
        let fields = self.fields(node, path, CONTAINER_FIELDS)?;
        self.deferred.take();
        let setup = self.setup(fields.get("setup"), &fields.path_of("setup"), &name, refs)?;
        let input_problem = self.deferred.take();
        let environ = self.environ(fields.get("environ"), &fields.path_of("environ"))?;
        let volumes = self.volumes(
            fields.get("volumes"),
            &fields.path_of("volumes"),
            &name,
            refs,
        )?;
        Ok(Container {
            file: self.file.to_path_buf(),
            name,
            setup,
            environ,
            volumes,
            environ_file: self.environ_file(&fields)?,
            hostname: self.optional(&fields, "hostname", scalars::hostname)?,
            build_network: self
                .optional(&fields, "build-network", scalars::network)?
                .unwrap_or_default(),
            build_network_at: self.field_at(&fields, "build-network"),
            pos,
            input_problem,
        })
    }
}
