//! The checks of the whole config, once every container and command is
//! decoded: each container or command that a step, a volume, an
//! `init-command` or a prerequisite names exists, and neither the
//! containers built from others nor the prerequisites form a cycle.

use std::collections::{HashMap, VecDeque};

use super::error::{ConfigError, Location};
use super::model::{Config, NameRef, Volume, BUILTIN_COMMANDS};

/// A container named in the config, checked once all containers are known.
pub(super) struct Reference {
    /// The container (or command) that names it.
    pub from: String,
    pub to: String,
    /// Where the name is.
    pub at: Location,
    /// For a step that needs `to` built first (`!Container`, `!Build`),
    /// where the step is: these references must not form a cycle.
    pub step: Option<Location>,
}

/// Checks that every container named exists and that the containers
/// built from others (`!Container`, `!Build`) form no cycle. A cycle is
/// blamed on the step, in file order, that closes it.
pub(super) fn check_references(config: &Config, refs: &[Reference]) -> Result<(), ConfigError> {
    if let Some(r) = refs.iter().find(|r| !config.containers.contains_key(&r.to)) {
        return Err(ConfigError::UnknownContainer {
            at: r.at.clone(),
            name: r.to.clone(),
        });
    }
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
    for r in refs {
        let Some(step) = &r.step else {
            continue;
        };
        if let Some(path) = find_path(&edges, &r.to, &r.from) {
            let mut cycle = vec![r.from.as_str()];
            cycle.extend(path);
            return Err(ConfigError::Cycle {
                at: step.clone(),
                cycle: cycle.join(" -> "),
            });
        }
        edges.entry(&r.from).or_default().push(&r.to);
    }
    Ok(())
}

/// Records each command's `aliases` in `config.aliases`, checking that no
/// alias is a command's name, one of cella's own or another alias.
pub(super) fn check_aliases(config: &mut Config) -> Result<(), ConfigError> {
    let mut aliases = std::collections::BTreeMap::new();
    for (name, command) in &config.commands {
        for alias in &command.info.aliases {
            let taken = if BUILTIN_COMMANDS.contains(&alias.name.as_str()) {
                Some("one of cella's own commands".to_owned())
            } else if config.commands.contains_key(&alias.name) {
                Some(format!("the name of the command \"{}\"", alias.name))
            } else {
                aliases
                    .get(&alias.name)
                    .map(|other| format!("already an alias of \"{other}\""))
            };
            if let Some(taken) = taken {
                return Err(ConfigError::Invalid {
                    at: alias.at.clone(),
                    message: format!("the alias \"{}\" is {taken}", alias.name),
                });
            }
            aliases.insert(alias.name.clone(), name.clone());
        }
    }
    config.aliases = aliases;
    Ok(())
}

/// Checks that every `init-command` of a `!Persistent` volume names a command.
pub(super) fn check_init_commands(config: &Config) -> Result<(), ConfigError> {
    let containers = config.containers.values().map(|c| &c.volumes);
    let commands = config
        .commands
        .values()
        .flat_map(|c| c.kind.bodies())
        .map(|body| &body.volumes);
    for volumes in containers.chain(commands) {
        for volume in volumes.values() {
            if let Volume::Persistent {
                init_command: Some(init),
                ..
            } = volume
            {
                if !config.commands.contains_key(&init.name) {
                    return Err(ConfigError::Invalid {
                        at: init.at.clone(),
                        message: format!("unknown command \"{}\"", init.name),
                    });
                }
            }
        }
    }
    Ok(())
}

/// A shortest path `start` → … → `goal` along `edges`, both ends included.
fn find_path<'a>(
    edges: &HashMap<&'a str, Vec<&'a str>>,
    start: &'a str,
    goal: &str,
) -> Option<Vec<&'a str>> {
    let mut previous: HashMap<&'a str, &'a str> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        if node == goal {
            let mut path = vec![node];
            let mut at = node;
            while at != start {
                at = previous.get(at).copied()?;
                path.push(at);
            }
            path.reverse();
            return Some(path);
        }
        for &next in edges.get(node).into_iter().flatten() {
            if next != start && !previous.contains_key(next) {
                previous.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// Checks that every prerequisite names a command and that no command
/// is its own prerequisite, directly or through others. Prerequisites are
/// taken in file order; a cycle is blamed on the one that closes it.
pub(super) fn check_prerequisites(config: &Config) -> Result<(), ConfigError> {
    let mut commands: Vec<_> = config.commands.values().collect();
    commands.sort_by_key(|c| c.pos);
    let prerequisites: Vec<(&str, &NameRef)> = commands
        .iter()
        .flat_map(|c| c.kind.prerequisites().iter().map(|p| (c.name.as_str(), p)))
        .collect();
    if let Some((_, p)) = prerequisites
        .iter()
        .find(|(_, p)| !config.commands.contains_key(&p.name))
    {
        return Err(ConfigError::Invalid {
            at: p.at.clone(),
            message: format!("unknown command \"{}\"", p.name),
        });
    }
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
    for (from, p) in prerequisites {
        if let Some(path) = find_path(&edges, &p.name, from) {
            let mut cycle = vec![from];
            cycle.extend(path);
            return Err(ConfigError::Invalid {
                at: p.at.clone(),
                message: format!("prerequisites form a cycle: {}", cycle.join(" -> ")),
            });
        }
        edges.entry(from).or_default().push(&p.name);
    }
    Ok(())
}
