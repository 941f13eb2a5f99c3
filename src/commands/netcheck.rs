//! The settings' `network.allow: false` (the CI setting), applied before
//! anything builds or boots: a project that asks for a network (a
//! command's `network: user` and `ports`, a container's `build-network:
//! user` or language package step) anywhere a run would reach fails, naming the place in
//! cella.yaml. `--network user` on the command line is the user's own
//! grant and wins; `--network none` overrides the commands' (not the
//! builds') network, so they are not asked.

use std::collections::{BTreeMap, HashSet};

use super::error::CommandError;
use super::options::RunOptions;
use crate::config::{CommandKind, Config, Location, Network, SimpleCommand, Step, Volume};

/// Checks command `name`, its prerequisites, the init commands of its
/// volumes and every container they build.
pub fn command(config: &Config, name: &str, opts: &RunOptions) -> Result<(), CommandError> {
    match Walk::new(config, opts) {
        Some(mut walk) => walk.command(name),
        None => Ok(()),
    }
}

/// Checks one `!Command` body (or `_run`'s) and what it builds.
pub fn body(config: &Config, body: &SimpleCommand, opts: &RunOptions) -> Result<(), CommandError> {
    match Walk::new(config, opts) {
        Some(mut walk) => walk.body(body, None),
        None => Ok(()),
    }
}

/// Checks container `name` and the containers it is built from.
pub fn container(config: &Config, name: &str, opts: &RunOptions) -> Result<(), CommandError> {
    match Walk::new(config, opts) {
        Some(mut walk) => walk.container(name),
        None => Ok(()),
    }
}

struct Walk<'c> {
    config: &'c Config,
    /// False under `--network none`: the commands get no network anyway.
    commands_network: bool,
    seen_commands: HashSet<&'c str>,
    seen_containers: HashSet<&'c str>,
}

impl<'c> Walk<'c> {
    /// None when nothing is forbidden.
    fn new(config: &'c Config, opts: &RunOptions) -> Option<Walk<'c>> {
        if opts.network_policy.allow || opts.network == Some(Network::User) {
            return None;
        }
        Some(Walk {
            config,
            commands_network: opts.network.is_none(),
            seen_commands: HashSet::new(),
            seen_containers: HashSet::new(),
        })
    }

    fn forbidden(
        &self,
        at: Option<&Location>,
        fallback: Location,
        what: &'static str,
    ) -> CommandError {
        CommandError::NetworkForbidden {
            at: at.cloned().unwrap_or(fallback),
            what,
            setting: crate::config::settings::describe("network.allow: false"),
        }
    }

    fn command(&mut self, name: &'c str) -> Result<(), CommandError> {
        let config = self.config;
        let Some((name, cmd)) = config.commands.get_key_value(name) else {
            return Ok(());
        };
        if !self.seen_commands.insert(name) {
            return Ok(());
        }
        let fallback = Location {
            file: config.file_of(&config.path, cmd.pos).to_path_buf(),
            pos: cmd.pos,
            field: format!("commands.{name}"),
        };
        if let CommandKind::Supervise(group) = &cmd.kind {
            if self.commands_network && group.network == Network::User {
                let what = asks(!group.ports.is_empty());
                return Err(self.forbidden(group.network_at.as_ref(), fallback, what));
            }
        }
        for body in cmd.kind.bodies() {
            self.body(body, Some(&fallback))?;
        }
        for pre in cmd.kind.prerequisites() {
            self.command(&pre.name)?;
        }
        Ok(())
    }

    fn body(
        &mut self,
        body: &'c SimpleCommand,
        fallback: Option<&Location>,
    ) -> Result<(), CommandError> {
        if self.commands_network && body.network == Network::User {
            let fallback = fallback.cloned().unwrap_or_else(|| Location {
                file: self.config.path.clone(),
                pos: Default::default(),
                field: String::new(),
            });
            let what = asks(!body.ports.is_empty());
            return Err(self.forbidden(body.network_at.as_ref(), fallback, what));
        }
        self.volumes(&body.volumes)?;
        self.container(&body.container)
    }

    fn container(&mut self, name: &str) -> Result<(), CommandError> {
        let config = self.config;
        let Some((name, cont)) = config.containers.get_key_value(name) else {
            return Ok(());
        };
        if !self.seen_containers.insert(name) {
            return Ok(());
        }
        if cont.build_network == Network::User {
            let fallback = Location {
                file: config.file_of(&cont.file, cont.pos).to_path_buf(),
                pos: cont.pos,
                field: format!("containers.{name}"),
            };
            let what = "asks for a network in its build (`build-network: user`)";
            return Err(self.forbidden(cont.build_network_at.as_ref(), fallback, what));
        }
        if let Some(step) = cont
            .setup
            .iter()
            .find(|s| matches!(s.step, Step::Package { .. }))
        {
            let at = Location {
                file: config.file_of(&cont.file, step.pos).to_path_buf(),
                pos: step.pos,
                field: format!("containers.{name}.setup"),
            };
            let what = "runs a language package manager in its build, which downloads \
                        (`!Py3Install`, `!NpmInstall`, `!GemInstall` and the like)";
            return Err(self.forbidden(Some(&at), at.clone(), what));
        }
        for step in &cont.setup {
            if let Some(used) = step.step.uses() {
                self.container(used)?;
            }
        }
        self.volumes(&cont.volumes)
    }

    fn volumes(&mut self, volumes: &'c BTreeMap<String, Volume>) -> Result<(), CommandError> {
        for volume in volumes.values() {
            match volume {
                Volume::Persistent {
                    init_command: Some(init),
                    ..
                } => self.command(&init.name)?,
                Volume::Snapshot {
                    container: Some(name),
                    ..
                }
                | Volume::Container(name) => self.container(name)?,
                _ => {}
            }
        }
        Ok(())
    }
}

fn asks(ports: bool) -> &'static str {
    if ports {
        "asks for a network and published ports (`network: user`, `ports`)"
    } else {
        "asks for a network (`network: user`)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetworkPolicy;

    const YAML: &str = "\
containers:
  base:
    setup: [!Tar {url: ./r.tar}]
  builder:
    build-network: user
    setup: [!Tar {url: ./r.tar}]
  derived:
    setup: [!Container builder]
commands:
  plain: !Command {container: base, run: [a]}
  online: !Command
    container: base
    network: user
    run: [a]
  serve: !Command
    container: base
    network: user
    ports: {8080: 80}
    run: [a]
  after: !Command {container: base, run: [a], prerequisites: [online]}
  builds: !Command {container: derived, run: [a]}
  group: !Supervise
    network: user
    children:
      a: !Command {container: base, run: [a]}
  init: !Command
    container: base
    run: [a]
    volumes:
      /v: !Persistent {name: v, init-command: online}
";

    fn config() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("r.tar"), b"").expect("tar");
        let path = dir.path().join("cella.yaml");
        let config = crate::config::parse(YAML, &path).expect("parse");
        (dir, config)
    }

    fn opts(allow: bool, network: Option<Network>) -> RunOptions {
        RunOptions {
            network_policy: NetworkPolicy {
                allow,
                allow_addresses: Vec::new(),
            },
            network,
            ..RunOptions::default()
        }
    }

    /// The error's text from its `line:col: field` on.
    fn error(config: &Config, name: &str, opts: &RunOptions) -> Option<String> {
        let e = command(config, name, opts).err()?.to_string();
        let prefix = format!("{}:", config.path.display());
        Some(e.strip_prefix(&prefix).unwrap_or(&e).to_owned())
    }

    #[test]
    fn a_forbidden_network_is_named_where_it_is_asked_for() {
        let (_dir, config) = config();
        let ci = opts(false, None);
        assert_eq!(error(&config, "plain", &ci), None);
        let e = error(&config, "online", &ci).expect("online");
        assert!(
            e.starts_with(
                "13:14: commands.online.network: asks for a network (`network: user`), which "
            ),
            "{e}"
        );
        assert!(e.contains("(network.allow: false) forbids"), "{e}");
        assert!(
            e.ends_with("`--network user` on the command line grants it"),
            "{e}"
        );
        let e = error(&config, "serve", &ci).expect("serve");
        assert!(
            e.starts_with("17:14: commands.serve.network: asks for a network and published ports"),
            "{e}"
        );
        let e = error(&config, "after", &ci).expect("prerequisite");
        assert!(e.starts_with("13:14: commands.online.network"), "{e}");
        let e = error(&config, "builds", &ci).expect("build-network");
        assert!(
            e.starts_with(
                "5:20: containers.builder.build-network: asks for a network in its build"
            ),
            "{e}"
        );
        let e = error(&config, "group", &ci).expect("supervise");
        assert!(e.starts_with("23:14: commands.group.network"), "{e}");
        let e = error(&config, "init", &ci).expect("init-command");
        assert!(e.starts_with("13:14: commands.online.network"), "{e}");
        assert!(container(&config, "derived", &ci).is_err());
        assert!(container(&config, "base", &ci).is_ok());
    }

    #[test]
    fn the_settings_and_the_command_line_decide() {
        let (_dir, config) = config();
        for name in ["online", "serve", "builds", "group", "init"] {
            assert_eq!(error(&config, name, &opts(true, None)), None, "{name}");
            let cli_grant = opts(false, Some(Network::User));
            assert_eq!(error(&config, name, &cli_grant), None, "{name}");
        }
        // --network none: the commands get none; a build still asks.
        let none = opts(false, Some(Network::None));
        assert_eq!(error(&config, "online", &none), None);
        assert_eq!(error(&config, "serve", &none), None);
        assert!(error(&config, "builds", &none).is_some());
    }

    #[test]
    fn the_machine_gets_a_nic_only_when_granted() {
        use crate::config::PortMap;
        let ports = [PortMap {
            host: 8080,
            guest: 80,
        }];
        let nic = |opts: &RunOptions, network| {
            opts.machine(Default::default(), network, &ports)
                .network
                .map(|plan| (plan.ports.len(), plan.allow.len()))
        };
        let mut open = opts(true, None);
        open.network_policy.allow_addresses = vec!["127.0.0.1/32".parse().expect("net")];
        assert_eq!(nic(&open, Network::User), Some((1, 1)));
        assert_eq!(nic(&open, Network::None), None);
        // The backstop under the CI setting, and the command line's grant.
        assert_eq!(nic(&opts(false, None), Network::User), None);
        assert_eq!(
            nic(&opts(false, Some(Network::User)), Network::None),
            Some((1, 0))
        );
        assert_eq!(nic(&opts(true, Some(Network::None)), Network::User), None);
    }
}
