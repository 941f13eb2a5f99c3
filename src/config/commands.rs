//! Decoding `commands:`: `!Command` and `!Supervise` bodies (their
//! `prerequisites` are checked in `checks` once every command is known).

use super::checks::check_references;
use super::decode::{join, tag_list, Decoder, Fields};
use super::docopt;
use super::error::{ConfigError, Pos};
use super::model::{
    Child, Command, CommandInfo, CommandKind, Config, NameRef, Network, Pid1Mode, PortMap,
    Resources, SimpleCommand, Step, Supervise, SuperviseMode, WriteMode,
};
use super::scalars;
use super::yaml::{Node, Value};

const COMMAND_FIELDS: &[&str] = &[
    "description",
    "container",
    "run",
    "environ",
    "volumes",
    "work-dir",
    "write-mode",
    "environ-file",
    "user-id",
    "group-id",
    "hostname",
    "prerequisites",
    "cpus",
    "memory",
    "network",
    "ports",
    "tags",
    "pid1mode",
    "supplementary-gids",
    "accepts-arguments",
];
/// A `!Supervise` child's fields: a command's, less what only `cella
/// NAME ARGS…` uses (`accepts-arguments`, kept last for this).
const CHILD_FIELDS: &[&str] = match COMMAND_FIELDS.split_last() {
    Some((_, fields)) => fields,
    None => &[],
};
const SUPERVISE_FIELDS: &[&str] = &[
    "description",
    "mode",
    "children",
    "kill-unresponsive-after",
    "prefix",
    "prerequisites",
    "cpus",
    "memory",
    "hostname",
    "network",
    "ports",
];
/// Fields of a `!Command` that a child of a `!Supervise` must not have:
/// they are about the VM, which the children share.
const VM_FIELDS: &[&str] = &[
    "prerequisites",
    "cpus",
    "memory",
    "hostname",
    "network",
    "ports",
];
/// Fields of every top-level command, as vagga has them: how it is
/// listed, named and announced.
const INFO_FIELDS: &[&str] = &[
    "group",
    "aliases",
    "banner",
    "banner-delay",
    "epilog",
    "options",
];
/// The most `supplementary-gids` a command may have.
const MAX_GIDS: usize = 64;
const WRITE_MODES: &[&str] = &["read-only", "transient-overlay", "transient-hard-link-copy"];
const SUPERVISE_MODES: &[&str] = &["stop-on-failure", "wait-all-successful", "wait-all"];
/// `kill-unresponsive-after` when not given, in seconds.
const DEFAULT_KILL_AFTER: u32 = 2;

/// "a, b or c".
fn one_of(words: &[&str]) -> String {
    match words.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

impl Decoder<'_> {
    /// The command `name` (its containers are all decoded already).
    pub(super) fn command(
        &self,
        config: &Config,
        name: String,
        pos: Pos,
        node: &Node,
        path: &str,
    ) -> Result<Command, ConfigError> {
        let tag = self.variant(node, path, CommandKind::TAGS)?;
        let allowed = match tag {
            "Command" => COMMAND_FIELDS,
            "Supervise" => SUPERVISE_FIELDS,
            tag => {
                return Err(ConfigError::UnknownTag {
                    at: self.at(node.pos, path),
                    tag: tag.to_owned(),
                    expected: tag_list(CommandKind::TAGS),
                })
            }
        };
        if let Some(e) = self
            .entries(node, path)?
            .iter()
            .find(|e| e.key == "symlink-name")
        {
            return Err(self.invalid(
                e.key_pos,
                &join(path, "symlink-name"),
                "cella makes no links to run commands by (vagga's symlink-name): run `cella NAME`, or a script that does".to_owned(),
            ));
        }
        let fields = self.fields(node, path, &[allowed, INFO_FIELDS].concat())?;
        let description =
            self.optional_string(fields.get("description"), &fields.path_of("description"))?;
        let kind = match tag {
            "Command" => CommandKind::Command(Box::new(self.simple(config, &name, &fields)?)),
            _ => CommandKind::Supervise(self.supervise(config, &name, &fields)?),
        };
        Ok(Command {
            info: self.info(&fields, &name, description.as_deref())?,
            name,
            description,
            kind,
            pos,
        })
    }

    /// `group`, `aliases`, `banner`, `banner-delay`, `epilog` and
    /// `options` of the command `name`.
    fn info(
        &self,
        fields: &Fields<'_>,
        name: &str,
        description: Option<&str>,
    ) -> Result<CommandInfo, ConfigError> {
        let text = |name: &str| self.optional_string(fields.get(name), &fields.path_of(name));
        let aliases = self.names(fields, "aliases", "a list of command names")?;
        for alias in &aliases {
            if alias.name.is_empty() || crate::text::escape(&alias.name) != alias.name.as_str() {
                return Err(ConfigError::Invalid {
                    at: alias.at.clone(),
                    message: "an alias must be a non-empty name without control characters"
                        .to_owned(),
                });
            }
        }
        Ok(CommandInfo {
            group: text("group")?,
            aliases,
            banner: text("banner")?,
            banner_delay: self
                .optional(fields, "banner-delay", scalars::kill_after)?
                .unwrap_or(0),
            epilog: text("epilog")?,
            options: self.options(fields, name, description)?,
        })
    }

    /// The body of a `!Command`, top-level or a child of the `!Supervise` `name`.
    fn simple(
        &self,
        config: &Config,
        name: &str,
        fields: &Fields<'_>,
    ) -> Result<SimpleCommand, ConfigError> {
        let container_node = self.required(fields, "container")?;
        let container_path = join(&fields.path, "container");
        let container = self.string(container_node, &container_path)?;
        if !config.containers.contains_key(&container) {
            return Err(ConfigError::UnknownContainer {
                at: self.at(container_node.pos, &container_path),
                name: container,
            });
        }
        // Without `run`, the image's Entrypoint and Cmd run: only for a
        // container that starts from an `!Image`.
        let (run, shell) = match fields.get("run") {
            Some(run_node) => (
                self.run(run_node, &join(&fields.path, "run"))?,
                matches!(run_node.value, Value::Scalar { .. }),
            ),
            None if from_image(config, &container) => (Vec::new(), false),
            None => {
                self.required(fields, "run")?;
                (Vec::new(), false)
            }
        };
        // vagga's default: a shell string takes no arguments, a list does.
        let accepts_arguments = self
            .optional(fields, "accepts-arguments", scalars::boolean)?
            .unwrap_or(!shell);
        let environ = self.environ(fields.get("environ"), &fields.path_of("environ"))?;
        let mut refs = Vec::new();
        let volumes = self.volumes(
            fields.get("volumes"),
            &fields.path_of("volumes"),
            name,
            &mut refs,
        )?;
        check_references(config, &refs)?;
        let work_dir = self.optional(fields, "work-dir", scalars::project_path)?;
        let write_mode = match fields.get("write-mode") {
            Some(node) if node.value != Value::Null => {
                let path = fields.path_of("write-mode");
                match self.string(node, &path)?.as_str() {
                    "read-only" => WriteMode::ReadOnly,
                    // vagga's hard-link copy lets writes through, gone
                    // after the run (and, unlike here, into files the
                    // copy shares with the image): our overlay does it.
                    "transient-overlay" | "transient-hard-link-copy" => WriteMode::TransientOverlay,
                    other => {
                        return Err(self.invalid(
                            node.pos,
                            &path,
                            format!(
                                "unknown write mode {other:?}, expected {}",
                                one_of(WRITE_MODES)
                            ),
                        ))
                    }
                }
            }
            _ => WriteMode::default(),
        };
        Ok(SimpleCommand {
            container,
            run,
            environ,
            volumes,
            work_dir,
            write_mode,
            environ_file: self.environ_file(fields)?,
            user_id: self.optional(fields, "user-id", scalars::uint32)?,
            group_id: self.optional(fields, "group-id", scalars::uint32)?,
            hostname: self.optional(fields, "hostname", scalars::hostname)?,
            prerequisites: self.prerequisites(fields)?,
            resources: self.resources(fields)?,
            network: self.network(fields)?,
            network_at: self.field_at(fields, "network"),
            ports: self.ports(fields)?,
            shell,
            accepts_arguments,
            tags: self
                .names(fields, "tags", "a list of tags")?
                .into_iter()
                .map(|t| t.name)
                .collect(),
            pid1mode: self.pid1mode(fields)?,
            supplementary_gids: self.gids(fields)?,
        })
    }

    /// `options`: a docopt usage text, checked to parse; kept whole, with
    /// the description and common options vagga adds.
    fn options(
        &self,
        fields: &Fields<'_>,
        name: &str,
        description: Option<&str>,
    ) -> Result<Option<String>, ConfigError> {
        let path = fields.path_of("options");
        let Some(node) = fields.get("options").filter(|n| n.value != Value::Null) else {
            return Ok(None);
        };
        let options = self.string(node, &path)?;
        if options.len() > docopt::MAX_OPTIONS {
            return Err(self.invalid(
                node.pos,
                &path,
                format!("longer than {} bytes", docopt::MAX_OPTIONS),
            ));
        }
        let text = docopt::text(description, name, &options);
        docopt::check(&text).map_err(|message| self.invalid(node.pos, &path, message))?;
        Ok(Some(text))
    }

    /// `pid1mode`: `wait` (the default) or `wait-all-children`; vagga's
    /// `exec` is refused, as guest-init stays the VM's PID 1.
    fn pid1mode(&self, fields: &Fields<'_>) -> Result<Pid1Mode, ConfigError> {
        let Some(node) = fields.get("pid1mode").filter(|n| n.value != Value::Null) else {
            return Ok(Pid1Mode::Wait);
        };
        let path = fields.path_of("pid1mode");
        match self.string(node, &path)?.as_str() {
            "wait" => Ok(Pid1Mode::Wait),
            "wait-all-children" => Ok(Pid1Mode::WaitAllChildren),
            "exec" => Err(self.invalid(
                node.pos,
                &path,
                "pid1mode: exec cannot be: guest-init stays PID 1 of the VM, to relay signals, output and the exit status; use wait (the default) or wait-all-children".to_owned(),
            )),
            other => Err(self.invalid(
                node.pos,
                &path,
                format!("unknown pid1mode {other:?}, expected wait or wait-all-children"),
            )),
        }
    }

    /// `supplementary-gids`: a list of at most 64 group ids.
    fn gids(&self, fields: &Fields<'_>) -> Result<Vec<u32>, ConfigError> {
        let Some(node) = fields.get("supplementary-gids") else {
            return Ok(Vec::new());
        };
        let path = fields.path_of("supplementary-gids");
        self.untagged(node, &path)?;
        let items = match &node.value {
            Value::Null => return Ok(Vec::new()),
            Value::Seq(items) => items,
            _ => return Err(self.wrong_type(node, &path, "a list of group ids")),
        };
        if items.len() > MAX_GIDS {
            return Err(self.invalid(
                node.pos,
                &path,
                format!("at most {MAX_GIDS} group ids, found {}", items.len()),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.parsed(item, &format!("{path}[{i}]"), scalars::uint32))
            .collect()
    }

    /// The body of the `!Supervise` `name`.
    fn supervise(
        &self,
        config: &Config,
        name: &str,
        fields: &Fields<'_>,
    ) -> Result<Supervise, ConfigError> {
        let mode = match fields.get("mode") {
            Some(node) if node.value != Value::Null => {
                let path = fields.path_of("mode");
                match self.string(node, &path)?.as_str() {
                    "stop-on-failure" => SuperviseMode::StopOnFailure,
                    "wait-all-successful" => SuperviseMode::WaitAllSuccessful,
                    "wait-all" => SuperviseMode::WaitAll,
                    other => {
                        return Err(self.invalid(
                            node.pos,
                            &path,
                            format!(
                                "unknown mode {other:?}, expected {}",
                                one_of(SUPERVISE_MODES)
                            ),
                        ))
                    }
                }
            }
            _ => SuperviseMode::default(),
        };
        let kill_unresponsive_after = self
            .optional(fields, "kill-unresponsive-after", scalars::kill_after)?
            .unwrap_or(DEFAULT_KILL_AFTER);
        // vagga prefixes nothing; cella does unless told not to.
        let prefix = self
            .optional(fields, "prefix", scalars::boolean)?
            .unwrap_or(!self.is_vagga());
        let prerequisites = self.prerequisites(fields)?;
        let resources = self.resources(fields)?;
        let hostname = self.optional(fields, "hostname", scalars::hostname)?;
        let children_node = self.required(fields, "children")?;
        Ok(Supervise {
            mode,
            children: self.children(config, name, children_node, &fields.path_of("children"))?,
            kill_unresponsive_after,
            prefix,
            prerequisites,
            resources,
            hostname,
            network: self.network(fields)?,
            network_at: self.field_at(fields, "network"),
            ports: self.ports(fields)?,
        })
    }

    /// `children`: an untagged, non-empty mapping of names to `!Command`
    /// bodies without the fields about the VM, kept in file order.
    fn children(
        &self,
        config: &Config,
        name: &str,
        node: &Node,
        path: &str,
    ) -> Result<Vec<Child>, ConfigError> {
        self.untagged(node, path)?;
        let entries = self.entries(node, path)?;
        if entries.is_empty() {
            return Err(self.invalid(
                node.pos,
                path,
                "a !Supervise needs at least one child".to_owned(),
            ));
        }
        let mut children = Vec::with_capacity(entries.len());
        for entry in entries {
            let child_path = join(path, &entry.key);
            let child_name = self.name(&entry, &child_path)?;
            self.variant(entry.value, &child_path, &["Command"])?;
            let fields = self.fields(entry.value, &child_path, CHILD_FIELDS)?;
            for field in VM_FIELDS {
                if let Some(pos) = fields.key_pos(field) {
                    return Err(self.invalid(
                        pos,
                        &fields.path_of(field),
                        "set it on the !Supervise command: its children share one VM".to_owned(),
                    ));
                }
            }
            let command = self.simple(config, name, &fields)?;
            if command.pid1mode != Pid1Mode::Wait {
                if let Some(pos) = fields.key_pos("pid1mode") {
                    return Err(self.invalid(
                        pos,
                        &fields.path_of("pid1mode"),
                        "a !Supervise's children end with the VM: pid1mode: wait-all-children is for a !Command".to_owned(),
                    ));
                }
            }
            children.push(Child {
                name: child_name,
                command,
                pos: entry.key_pos,
            });
        }
        Ok(children)
    }

    /// `prerequisites`: an untagged list of command names (null is empty),
    /// checked once all commands are known.
    fn prerequisites(&self, fields: &Fields<'_>) -> Result<Vec<NameRef>, ConfigError> {
        self.names(fields, "prerequisites", "a list of command names")
    }

    /// The field `field`: an untagged list of strings (null is empty),
    /// each with where it is.
    fn names(
        &self,
        fields: &Fields<'_>,
        field: &str,
        expected: &'static str,
    ) -> Result<Vec<NameRef>, ConfigError> {
        let Some(node) = fields.get(field) else {
            return Ok(Vec::new());
        };
        let path = fields.path_of(field);
        self.untagged(node, &path)?;
        let items = match &node.value {
            Value::Null => return Ok(Vec::new()),
            Value::Seq(items) => items,
            _ => return Err(self.wrong_type(node, &path, expected)),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item_path = format!("{path}[{i}]");
                Ok(NameRef {
                    name: self.string(item, &item_path)?,
                    at: self.at(item.pos, &item_path),
                })
            })
            .collect()
    }

    /// `network` of the VM; default none.
    fn network(&self, fields: &Fields<'_>) -> Result<Network, ConfigError> {
        Ok(self
            .optional(fields, "network", scalars::network)?
            .unwrap_or_default())
    }

    /// `ports: {HOST: GUEST}`, which needs `network: user`.
    fn ports(&self, fields: &Fields<'_>) -> Result<Vec<PortMap>, ConfigError> {
        let Some(node) = fields.get("ports") else {
            return Ok(Vec::new());
        };
        let path = fields.path_of("ports");
        self.untagged(node, &path)?;
        let mut ports: Vec<PortMap> = Vec::new();
        for entry in self.entries(node, &path)? {
            let entry_path = join(&path, &entry.key);
            let host = scalars::port(&entry.key)
                .map_err(|message| self.invalid(entry.key_pos, &entry_path, message))?;
            let guest = self.parsed(entry.value, &entry_path, scalars::port)?;
            if ports.iter().any(|p| p.host == host) {
                return Err(ConfigError::DuplicateKey {
                    at: self.at(entry.key_pos, &entry_path),
                });
            }
            ports.push(PortMap { host, guest });
        }
        if !ports.is_empty() && self.network(fields)? != Network::User {
            return Err(self.invalid(
                node.pos,
                &path,
                "publishing ports needs `network: user` on the same command".to_owned(),
            ));
        }
        Ok(ports)
    }

    /// `cpus` and `memory` of the VM.
    fn resources(&self, fields: &Fields<'_>) -> Result<Resources, ConfigError> {
        Ok(Resources {
            cpus: self.optional(fields, "cpus", scalars::cpus)?,
            memory: self.optional(fields, "memory", scalars::memory)?,
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

/// Whether `container` starts from an `!Image`, itself or through the
/// `!Container` steps it starts with.
fn from_image(config: &Config, container: &str) -> bool {
    let mut name = container;
    for _ in 0..=config.containers.len() {
        match config.containers.get(name).and_then(|c| c.setup.first()) {
            Some(step) => match &step.step {
                Step::Image(_) => return true,
                Step::Container(parent) => name = parent,
                _ => return false,
            },
            None => return false,
        }
    }
    false
}
